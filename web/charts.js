// Resource charts (the detail page) and CPU sparklines (the list), drawn as inline SVG from
// `/stats` (docs/API.md §4): no library, no inline script. Loaded after app.js, whose
// helpers (el, api, authHeaders, readLines, humanSize, detail, signedIn) it uses.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

/** The points of a line through `values` scaled to `max`, in a `w` × `h` box. */
function linePoints(values, max, w, h) {
  if (!values.length) return "";
  const vs = values.length === 1 ? [values[0], values[0]] : values;
  const step = w / (vs.length - 1);
  const top = max > 0 ? max : 1;
  return vs
    .map((v, i) => {
      const y = h - Math.min(1, Math.max(0, v / top)) * (h - 2) - 1;
      return `${(i * step).toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

function pct(n) {
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}

function rateText(bytesPerSecond) {
  return `${humanSize(Math.max(0, Math.round(bytesPerSecond)))}/s`;
}

// ------------------------------------------------------------------ detail page charts

/** Samples kept per chart: two minutes at Docker's one a second. */
const CHART_POINTS = 120;
const CHART_W = 300;
const CHART_H = 60;

const charts = {
  cuid: null, abort: null, samples: [], built: false, failures: 0, retry: null,
};

/** The four figures, built once: each an SVG (hidden from screen readers) and its text. */
function chartsBuild() {
  if (charts.built) return;
  charts.built = true;
  const host = $("res-charts");
  for (const [key, title, lines] of [
    ["cpu", "CPU", ["cpu"]],
    ["memory", "Memory", ["mem"]],
    ["network", "Network", ["rx", "tx"]],
    ["pids", "Processes", ["pids"]],
  ]) {
    const svg = svgEl("svg", {
      viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none",
      "aria-hidden": "true", focusable: "false", class: "chart-svg",
    });
    svg.append(svgEl("line", { x1: 0, y1: CHART_H - 0.5, x2: CHART_W, y2: CHART_H - 0.5, class: "chart-axis" }));
    for (const l of lines) svg.append(svgEl("polyline", { class: "chart-line line-" + l, "data-line": l, points: "" }));
    const now = el("span", { class: "chart-now", "data-now": key, text: "…" });
    host.append(el("figure", { class: "chart", "data-chart": key },
      el("figcaption", {}, el("span", { class: "chart-title", text: title + ": " }), now),
      svg));
  }
}

function setLine(key, line, points) {
  const p = document.querySelector(`[data-chart="${key}"] [data-line="${line}"]`);
  if (p) p.setAttribute("points", points);
}

function setNow(key, text) {
  const e = document.querySelector(`[data-now="${key}"]`);
  if (e) e.textContent = text;
}

/** Network rates (bytes a second) between consecutive samples. */
function rates(samples, field) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const secs = (b.at - a.at) / 1000 || 1;
    // A counter that went back (a restart) starts again from zero.
    out.push(Math.max(0, b.network[field] - a.network[field]) / secs);
  }
  return out;
}

function chartsDraw() {
  const s = charts.samples;
  const last = s[s.length - 1];
  if (!last) return;
  $("res-charts").dataset.samples = String(s.length);
  // CPU: the share of one CPU; the scale is one CPU or the most seen.
  const cpu = s.map((x) => x.cpu_percent);
  setLine("cpu", "cpu", linePoints(cpu, Math.max(100, ...cpu), CHART_W, CHART_H));
  const cpus = last.online_cpus > 1 ? ` (${last.online_cpus} CPUs available)` : "";
  setNow("cpu", `${pct(last.cpu_percent)} % of one CPU${cpus}`);
  // Memory against its limit.
  const mem = s.map((x) => x.memory.used_bytes);
  const limit = last.memory.limit_bytes;
  setLine("memory", "mem", linePoints(mem, limit || Math.max(...mem), CHART_W, CHART_H));
  setNow("memory", limit
    ? `${humanSize(last.memory.used_bytes)} of ${humanSize(limit)} (${pct(last.memory.percent)} %)`
    : humanSize(last.memory.used_bytes));
  // Network: rates in and out.
  const rx = rates(s, "rx_bytes");
  const tx = rates(s, "tx_bytes");
  const top = Math.max(1024, ...rx, ...tx);
  setLine("network", "rx", linePoints(rx, top, CHART_W, CHART_H));
  setLine("network", "tx", linePoints(tx, top, CHART_W, CHART_H));
  setNow("network", rx.length
    ? `in ${rateText(rx[rx.length - 1])}, out ${rateText(tx[tx.length - 1])}`
    : "measuring…");
  // Processes against their limit.
  const pids = s.map((x) => x.pids.current);
  const plimit = last.pids.limit;
  setLine("pids", "pids", linePoints(pids, plimit || Math.max(8, ...pids), CHART_W, CHART_H));
  setNow("pids", plimit ? `${last.pids.current} of ${plimit}` : `${last.pids.current} (no limit)`);
}

function chartsStatus(text) {
  $("res-status").textContent = text;
  $("res-charts").hidden = !!text;
}

/** Stops the stream (the page is left, the container stopped, the window hidden). */
function chartsStop() {
  if (charts.abort) charts.abort.abort();
  charts.abort = null;
  clearTimeout(charts.retry);
  charts.retry = null;
}

/** Follows container `c` as renderDetail shows it: a stream while it runs, else words. */
function chartsFor(c) {
  chartsBuild();
  if (charts.cuid !== c.cuid) {
    chartsStop();
    charts.cuid = c.cuid;
    charts.samples = [];
    charts.failures = 0;
    for (const p of document.querySelectorAll("#res-charts polyline")) p.setAttribute("points", "");
    for (const n of document.querySelectorAll("#res-charts [data-now]")) n.textContent = "…";
    delete $("res-charts").dataset.samples;
  }
  if (c.status !== "running") {
    chartsStop();
    charts.samples = [];
    chartsStatus("Not running — no live figures.");
    return;
  }
  if (!charts.samples.length) chartsStatus("Waiting for the first figures…");
  if (!charts.abort && !charts.retry && !document.hidden) chartsOpen(c.cuid);
}

async function chartsOpen(cuid) {
  const abort = new AbortController();
  charts.abort = abort;
  let ended = "ended";
  try {
    const r = await fetch(`/containers/${encodeURIComponent(cuid)}/stats?stream=true`, {
      credentials: "same-origin", signal: abort.signal, headers: authHeaders(),
    });
    if (r.status === 401) {
      showSignIn("Your session has ended; sign in again.");
      return;
    }
    if (r.status === 409) {
      ended = "not running";
    } else if (r.ok) {
      charts.failures = 0;
      let ev = { event: "message", data: [] };
      await readLines(r, (line) => {
        if (line === "") {
          if (ev.event === "stats" && ev.data.length) chartsSample(cuid, JSON.parse(ev.data.join("\n")));
          ev = { event: "message", data: [] };
        } else if (line.startsWith("event:")) {
          ev.event = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          ev.data.push(line.slice(5).replace(/^ /, ""));
        }
      });
    }
  } catch (e) {
    if (e.name === "AbortError") return;
  }
  if (charts.abort !== abort) return;
  charts.abort = null;
  // The stream ended (the container stopped, or the server went away): the page's next
  // render says which; while it still says running, try again after a pause.
  const c = detail.container;
  if (c && c.cuid === cuid && c.status === "running" && !$("page-detail").hidden) {
    if (ended === "not running" && !charts.samples.length) chartsStatus("Not running — no live figures.");
    // 1 s doubling to 30 s, as the console's other reconnects.
    const ms = Math.min(30000, 1000 * 2 ** Math.min(charts.failures++, 5));
    charts.retry = setTimeout(() => {
      charts.retry = null;
      const now = detail.container;
      if (now && now.cuid === cuid && !charts.abort && !$("page-detail").hidden && !document.hidden) chartsFor(now);
    }, ms);
  }
}

function chartsSample(cuid, s) {
  if (charts.cuid !== cuid || !s.read || s.read.startsWith("0001")) return;
  s.at = Date.parse(s.read) || Date.now();
  charts.samples.push(s);
  if (charts.samples.length > CHART_POINTS) charts.samples.shift();
  chartsStatus("");
  chartsDraw();
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    chartsStop();
  } else if (!$("page-detail").hidden && detail.container && !detail.gone) {
    chartsFor(detail.container);
  }
});

// ------------------------------------------------------------------ list sparklines

/** CPU figures kept per container for its sparkline; one request for every running row
 *  of the page shown (`GET /stats?cuids=`), every SPARK_EVERY ms while the list is shown. */
const SPARK_POINTS = 20;
const SPARK_EVERY = 10000;
const SPARK_W = 60;
const SPARK_H = 16;
const spark = { hist: new Map(), busy: false, last: 0, soon: null };

/** The list's CPU cell of `c` (app.js's listRow appends it). */
function sparkCell(c) {
  const td = el("td", { class: "col-cpu", "data-spark": c.cuid });
  if (c.status !== "running") {
    td.append(el("span", { class: "muted", text: "—", title: "not running" }));
    return td;
  }
  td.dataset.running = "1";
  const hist = spark.hist.get(c.cuid) || [];
  sparkFill(td, hist);
  // A row without figures yet gets them soon; the others at the next round.
  if (!hist.length) sparkSoon();
  return td;
}

function sparkFill(td, values) {
  td.replaceChildren();
  if (!values.length) {
    td.append(el("span", { class: "muted", text: "…", title: "measuring" }));
    return;
  }
  const svg = svgEl("svg", {
    viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, width: SPARK_W, height: SPARK_H,
    preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false", class: "spark",
  });
  svg.append(svgEl("polyline", {
    points: linePoints(values, Math.max(100, ...values), SPARK_W, SPARK_H), class: "spark-line",
  }));
  const now = values[values.length - 1];
  td.append(svg, el("span", { class: "spark-now", text: ` ${pct(now)} %`, title: "CPU, share of one CPU" }));
  td.setAttribute("aria-label", `CPU ${pct(now)} % of one CPU`);
}

/** Soon (once for a burst of new rows), without polling faster than every 3 s. */
function sparkSoon() {
  if (spark.soon) return;
  const wait = Math.max(300, 3000 - (Date.now() - spark.last));
  spark.soon = setTimeout(() => { spark.soon = null; sparkPoll(); }, wait);
}

async function sparkPoll() {
  if (spark.busy || !signedIn || document.hidden || $("page-list").hidden) return;
  const cells = [...document.querySelectorAll("#list-body td[data-running]")];
  const cuids = [...new Set(cells.map((td) => td.dataset.spark))];
  if (!cuids.length) return;
  spark.busy = true;
  spark.last = Date.now();
  try {
    const r = await api("GET", "/stats?" + new URLSearchParams({ cuids: cuids.slice(0, 50).join(",") }));
    for (const s of r.data.stats) {
      const h = spark.hist.get(s.cuid) || [];
      h.push(s.cpu_percent);
      if (h.length > SPARK_POINTS) h.shift();
      spark.hist.set(s.cuid, h);
    }
    for (const cuid of r.data.not_running.concat(r.data.not_found)) spark.hist.delete(cuid);
    for (const td of document.querySelectorAll("#list-body td[data-running]")) {
      sparkFill(td, spark.hist.get(td.dataset.spark) || []);
    }
  } catch (_) {
    /* no figures this round; a 401 already showed the sign-in page */
  } finally {
    spark.busy = false;
  }
}

setInterval(sparkPoll, SPARK_EVERY);
