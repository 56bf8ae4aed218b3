// The web console: plain browser JavaScript on the server's own API, no framework, no build.
// Rules kept throughout: data is only ever put in the page with textContent (never as
// markup); the password goes only into the sign-in request's body; every error shown is
// the API's own error body.
"use strict";

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ loading the page's scripts

// A script of the page can fail to load while the network is fine: Chromium aborts every
// request in flight with ERR_NETWORK_CHANGED when an interface or address comes or goes (a
// laptop changing networks, a VPN, Docker starting a container on this machine). The browser
// then goes on without that script, and the console would break in odd places later
// ("sparkCell is not defined", a route that throws half-way). app.js is the page's first
// script: it records every later one that fails, and start-up loads those again first.
const scriptsFailed = [];
window.addEventListener("error", (ev) => {
  // A resource that failed fires a plain `error` on its element (no bubbling: seen here in
  // the capture phase); an exception thrown by a script is an ErrorEvent on the window.
  // Only the page's own <script> elements: loadScriptAgain watches its own.
  const s = ev.target;
  if (s instanceof HTMLScriptElement && s.src && !s.dataset.again) scriptsFailed.push(s.src);
}, true);

/** Requests that failed for the network's sake are tried again after these pauses (ms). */
const NETWORK_RETRIES = [250, 1000, 3000];

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Loads (runs) the script at `src` again; true once it has run. */
async function loadScriptAgain(src) {
  for (const wait of NETWORK_RETRIES) {
    await pause(wait);
    const ok = await new Promise((resolve) => {
      const s = document.createElement("script");
      s.src = src;
      s.dataset.again = "1";
      s.addEventListener("load", () => resolve(true));
      s.addEventListener("error", () => { s.remove(); resolve(false); });
      document.body.append(s);
    });
    if (ok) return true;
  }
  return false;
}

/** Loads every script that failed, in the page's order; the ones that still fail. */
async function loadFailedScripts() {
  const missing = [];
  while (scriptsFailed.length) {
    const src = scriptsFailed.shift();
    if (!(await loadScriptAgain(src))) missing.push(src);
  }
  return missing;
}

/**
 * `fetch` that tries an idempotent request (GET, HEAD; any with `always`) again when it
 * failed for the network's sake (a TypeError, the same changes as above), never when it
 * was aborted or the server answered (any HTTP status is the server's word).
 */
async function fetchRetrying(path, init, always) {
  const method = ((init && init.method) || "GET").toUpperCase();
  const retries = always || method === "GET" || method === "HEAD" ? NETWORK_RETRIES : [];
  for (let i = 0; ; i++) {
    try {
      return await fetch(path, init);
    } catch (e) {
      if (!(e instanceof TypeError) || i >= retries.length || (init && init.signal && init.signal.aborted)) throw e;
      await pause(retries[i]);
    }
  }
}

// ------------------------------------------------------------------ small helpers

/** An element with text content and attributes; children appended. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

/** The API's error body in plain words: its message (the code stays in `ApiError.code`, for
 *  the page's logic and a `data-code` attribute, never in front of the text). */
function errorText(body, status) {
  if (body && typeof body === "object" && body.message) return body.message;
  if (status === 502 || status === 503 || status === 504 || status === 0) {
    return "The server cannot be reached; try again in a moment.";
  }
  return status ? `The server answered HTTP ${status}.` : "Something went wrong.";
}

/** Shows an error in an error element: its plain text, its API code as `data-code`. */
function showError(target, e) {
  const t = typeof target === "string" ? $(target) : target;
  t.textContent = e ? (e.message || String(e)) : "";
  if (e && e.body && e.body.code) t.dataset.code = e.body.code;
  else delete t.dataset.code;
}

class ApiError extends Error {
  constructor(status, body, headers) {
    super(errorText(body, status));
    this.status = status;
    this.body = body;
    this.code = body && typeof body === "object" ? body.code : undefined;
    this.headers = headers;
  }
}

// The cookie alone authenticates nothing: browsers send it to every port of this host, a
// container's published app included. Sign-in also returns a key, kept in this origin's
// localStorage (no page on another port can read it) and sent as a header on every request;
// a WebSocket or a download link, which cannot carry a header, takes a single-use ticket.
const KEY_STORE = "cm_key";

function authHeaders(extra) {
  const key = localStorage.getItem(KEY_STORE);
  return { ...(extra || {}), ...(key ? { "x-session-key": key } : {}) };
}

/** A single-use ticket for one WebSocket or download (`?ticket=`). */
async function ticket() {
  return (await api("POST", "/session/ticket")).data.ticket;
}

function withTicket(url, t) {
  return url + (url.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(t);
}

/** Downloads `url` (a file or a folder as ZIP) the browser's way, with a ticket. */
async function download(url, name) {
  const a = el("a", { href: withTicket(url, await ticket()), download: name || "" });
  document.body.append(a);
  a.click();
  a.remove();
}

/** Calls `onLine` with each line of a streamed answer (without its `\n` or `\r\n`). */
async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
    }
  }
}

/** fetch on the API with the session cookie and key; JSON in and out; throws ApiError. */
async function api(method, path, { json, body, headers, raw, retry } = {}) {
  const init = { method, headers: authHeaders(headers), credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const r = await fetchRetrying(path, init, retry);
  if (raw && r.ok) return r;
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (r.status === 401 && path !== "/session") {
    showSignIn("Your session has ended; sign in again.");
  }
  if (!r.ok) throw new ApiError(r.status, data, r.headers);
  return { status: r.status, headers: r.headers, data };
}

function flash(text) {
  $("flash").textContent = text || "";
}

/** Splits a command line into words: spaces separate, quotes group, backslash escapes. */
function splitWords(line) {
  const words = [];
  let cur = null;
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      cur = cur ?? "";
    } else if (c === "\\" && i + 1 < line.length) {
      cur = (cur ?? "") + line[++i];
    } else if (/\s/.test(c)) {
      if (cur !== null) words.push(cur);
      cur = null;
    } else {
      cur = (cur ?? "") + c;
    }
  }
  if (quote) throw new Error("an unclosed quote in the command");
  if (cur !== null) words.push(cur);
  return words;
}

function joinWords(words) {
  return (words || [])
    .map((w) => (w === "" || /[\s"'\\]/.test(w) ? '"' + w.replace(/(["\\])/g, "\\$1") + '"' : w))
    .join(" ");
}

function portText(p) {
  return `${p.host_ip ? p.host_ip + ":" : ""}${p.host}:${p.container}${p.protocol && p.protocol !== "tcp" ? "/" + p.protocol : ""}`;
}

/** A port as people read it, "8080 → 80" ("/udp" after UDP ones); `portText` on hover. */
function portShort(p) {
  return `${p.host} → ${p.container}${p.protocol && p.protocol !== "tcp" ? "/" + p.protocol : ""}`;
}

// ------------------------------------------------------------------ session

let signedIn = false;

// Who is signed in (`GET /session`): a password is the operator (`admin`, no tenant); a
// token brings its own scope and tenant. The console shows only what that scope may use;
// the server checks every request anyway, so this is about not offering dead buttons.
const SCOPES = ["read", "operate", "write", "admin"];
let me = { user: "", scope: "read", tenant: null };

/** Whether the signed-in principal's scope covers `scope`. */
function can(scope) {
  return SCOPES.indexOf(me.scope) >= SCOPES.indexOf(scope);
}

/** The admin pages are the operator's: an admin without a tenant. */
function isOperator() {
  return can("admin") && !me.tenant;
}

/** Hides every control marked `data-needs="<scope>"` that the scope does not cover. */
function applyScope() {
  for (const e of document.querySelectorAll("[data-needs]")) {
    const needs = e.dataset.needs;
    e.hidden = needs === "admin" ? !isOperator() : !can(needs);
  }
  // A tenant's session sees its own containers only: a tenant column would say nothing.
  $("list-table").classList.toggle("no-tenant", !!me.tenant);
  // Read-only sessions have no bulk actions: no select column either.
  $("list-table").classList.toggle("no-select", !can("operate"));
  const badge = $("tenant-badge");
  badge.hidden = !me.tenant;
  badge.textContent = me.tenant ? `tenant ${me.tenant}` : "";
  // A token signs in as `token:<id>:<name>`: its name says enough.
  const m = /^token:[^:]*:(.*)$/.exec(me.user);
  const name = m ? `token ${m[1]}` : me.user;
  $("who").textContent = me.scope === "admin" ? name : `${name} (${me.scope})`;
}

function tokenMode() {
  return !$("signin-with-token").disabled;
}

/** Switches the sign-in form between user + password and an API token. */
function setTokenMode(on) {
  // A disabled fieldset's fields are neither validated nor sent.
  $("signin-with-token").disabled = !on;
  $("signin-with-token").hidden = !on;
  $("signin-with-password").disabled = on;
  $("signin-with-password").hidden = on;
  $("signin-mode").textContent = on ? "Use a user name and password" : "Use an API token";
  $("signin-error").textContent = "";
  (on ? $("signin-token") : $("signin-user")).focus();
}

$("signin-mode").addEventListener("click", () => setTokenMode(!tokenMode()));

function showSignIn(message) {
  signedIn = false;
  shownPage = null;
  closeLive();
  closeDetail();
  $("token-secret-value").value = ""; // a new token's secret never outlives the page it is on
  $("nav").hidden = true;
  showPage("signin");
  $("signin-error").textContent = message || "";
  (tokenMode() ? $("signin-token") : $("signin-user")).focus();
}

/** `GET /session`: `{user, scope, tenant}` of a live session, or null. */
async function checkSession() {
  if (!localStorage.getItem(KEY_STORE)) return null;
  const r = await fetchRetrying("/session", { credentials: "same-origin", headers: authHeaders() });
  if (!r.ok) return null;
  return r.json();
}

/** A failed sign-in in plain words. */
function signInError(e, withToken) {
  if (e.status === 401) {
    return withToken ? "That token is not valid: it is wrong, revoked or expired."
      : "Wrong user name or password.";
  }
  if (e.status === 429) {
    const wait = e.headers && e.headers.get("retry-after");
    return "Too many failed sign-ins from this address. Try again " +
      (wait ? `in ${wait} seconds.` : "later.");
  }
  if (e.status === 403) return "The server refused a sign-in from this page's address: " + e.message;
  return e.message;
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("signin-submit");
  const withToken = tokenMode();
  $("signin-error").textContent = "";
  let json;
  if (withToken) {
    const token = $("signin-token").value.trim();
    if (!token.startsWith("cm_")) {
      $("signin-error").textContent = "An API token starts with cm_ (copy all of it).";
      return;
    }
    json = { token };
  } else {
    json = { user: $("signin-user").value, password: $("signin-password").value };
  }
  button.disabled = true;
  try {
    // The password or token travels in this request's body only, and is cleared from the form.
    // Tried again if the network failed it: a sign-in that did reach the server only
    // leaves an unused session behind, which expires.
    const r = await api("POST", "/session", { json, retry: true });
    localStorage.setItem(KEY_STORE, r.data.key);
    const who = await api("GET", "/session");
    onSignedIn(who.data);
  } catch (e) {
    $("signin-error").textContent = signInError(e, withToken);
  } finally {
    $("signin-password").value = "";
    $("signin-token").value = "";
    button.disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  // The server ends this session's event stream with it: that is no lost connection.
  closeLive();
  await fetch("/session", { method: "DELETE", credentials: "same-origin", headers: authHeaders() });
  localStorage.removeItem(KEY_STORE);
  showSignIn("Signed out.");
});

function onSignedIn(who) {
  signedIn = true;
  me = { user: who.user, scope: SCOPES.includes(who.scope) ? who.scope : "read", tenant: who.tenant || null };
  applyScope();
  $("nav").hidden = false;
  openLive();
  if (!location.hash || location.hash === "#/signin") location.hash = "#/";
  else route();
}

// ------------------------------------------------------------------ pages and routing

// Which page (and which container's, or which form's) shows: a new one moves the focus.
let shownPage = null;

function showPage(name) {
  for (const p of ["signin", "list", "form", "detail", "tokens", "tenants", "webhooks"]) {
    $("page-" + p).hidden = p !== name;
  }
  // A container's page names it (renderDetail); every other page is the console's.
  document.title = "Container manager";
  // After a navigation the focus goes to the new page's heading (tabindex=-1), so that a
  // screen reader announces it and Tab starts from the top of that page. Not on a change
  // within the page (a tab of the detail page, the list's filters), and not for sign-in,
  // which focuses its first field.
  const key = name === "detail" ? `detail:${detail.cuid}` : name === "form" ? `form:${location.hash}` : name;
  if (key === shownPage) return;
  shownPage = key;
  if (name === "signin") return;
  const h = document.querySelector(`#page-${name} h1`);
  if (h) h.focus();
}

// A message for the page the next route shows (route() clears the old one first).
let nextFlash = "";

/** Leaves a page the principal may not use for the list, saying why. */
function refuse(what) {
  nextFlash = `Your sign-in (scope ${me.scope}) may not ${what}.`;
  location.hash = "#/";
}

function route() {
  if (!signedIn) return;
  flash(nextFlash);
  nextFlash = "";
  // `#/path?query`: the query is the list's filters and page (list.js).
  const [path, query] = splitOnce(location.hash.replace(/^#\/?/, ""), "?");
  const parts = path.split("/").map(decodeURIComponent);
  if (parts[0] !== "tokens") $("token-secret-value").value = "";
  if ((parts[0] === "new" || parts[2] === "edit") && !can("write")) {
    closeDetail();
    refuse("create or edit containers");
  } else if ((parts[0] === "tokens" || parts[0] === "tenants" || parts[0] === "webhooks") && !isOperator()) {
    closeDetail();
    refuse("manage tokens, tenants and webhooks");
  } else if (parts[0] === "new") {
    closeDetail();
    openForm(null);
  } else if (parts[0] === "c" && parts[1] && parts[2] === "edit") {
    closeDetail();
    openForm(parts[1]);
  } else if (parts[0] === "c" && parts[1]) {
    // `#/c/{cuid}/files/a/b`: the Files tab's folder is the rest of the path.
    openDetail(parts[1], parts[2] || "logs", parts.slice(3).filter(Boolean).join("/"));
  } else if (parts[0] === "tokens") {
    closeDetail();
    openTokens();
  } else if (parts[0] === "tenants") {
    closeDetail();
    openTenants();
  } else if (parts[0] === "webhooks") {
    closeDetail();
    openWebhooks();
  } else {
    closeDetail();
    showPage("list");
    openList(new URLSearchParams(query));
  }
}

/** `[before, after]` the first `sep` (`after` is "" without one). */
function splitOnce(text, sep) {
  const i = text.indexOf(sep);
  return i < 0 ? [text, ""] : [text.slice(0, i), text.slice(i + sep.length)];
}
window.addEventListener("hashchange", route);

// ------------------------------------------------------------------ live updates

let live = null;
const liveListeners = new Set();

/**
 * One watch of `GET /events` for the whole console; pages listen while they are shown. Read
 * with fetch, not EventSource, so that it carries the session key; it resumes where it left
 * off with `Last-Event-ID`, as EventSource would.
 */
function openLive() {
  if (live) return;
  live = { abort: new AbortController(), lastId: null };
  watchLive(live);
}

function closeLive() {
  if (live) live.abort.abort();
  live = null;
  setLive(false, false);
}

/** The live indicator (with words, not only a colour) and the connection-lost banner. */
function setLive(on, lost) {
  $("live").classList.toggle("on", on);
  $("live-text").textContent = on ? "live" : "offline";
  $("conn-banner").hidden = !lost;
}

/** Waits before the next try to reconnect: 1 s, doubling to 30 s, with some jitter. */
function backOff(attempt) {
  const ms = Math.min(30000, 1000 * 2 ** Math.min(attempt, 5));
  return new Promise((resolve) => setTimeout(resolve, ms * (0.8 + 0.4 * Math.random())));
}

function dispatchLive(l, ev) {
  if (ev.id !== null) l.lastId = ev.id;
  if (ev.event === "container") {
    const data = JSON.parse(ev.data.join("\n"));
    for (const f of liveListeners) f(data);
  } else if (ev.event === "reset") {
    // Events were missed: everyone reloads what they show.
    for (const f of liveListeners) f(null);
  }
}

async function watchLive(l) {
  let failures = 0;
  while (live === l) {
    try {
      const headers = authHeaders(l.lastId ? { "last-event-id": l.lastId } : {});
      const r = await fetch("/events", { headers, credentials: "same-origin", signal: l.abort.signal });
      if (r.status === 401) {
        showSignIn("Your session has ended; sign in again.");
        return;
      }
      if (r.ok) {
        setLive(true, false);
        // A stream that was down missed events: everyone reloads what they show.
        if (failures > 0) for (const f of liveListeners) f(null);
        failures = 0;
        let ev = { event: "message", data: [], id: null };
        await readLines(r, (line) => {
          if (line === "") {
            if (ev.data.length || ev.event !== "message") dispatchLive(l, ev);
            ev = { event: "message", data: [], id: null };
            return;
          }
          if (line.startsWith(":")) return; // a comment (keep-alive)
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let fieldValue = i < 0 ? "" : line.slice(i + 1);
          if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
          if (field === "event") ev.event = fieldValue;
          else if (field === "data") ev.data.push(fieldValue);
          else if (field === "id") ev.id = fieldValue;
        });
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    if (live !== l) return;
    // The stream ended or could not be opened (the server is down or restarting).
    setLive(false, true);
    await backOff(failures);
    failures += 1;
  }
}

// ------------------------------------------------------------------ list

/** Rows per page of the list. */
const PAGE_SIZE = 25;
// `selected`: cuid -> display name of the ticked rows (of the page shown); `openErrors`: the
// rows whose long error is expanded (kept across live re-renders).
const list = { cursors: [null], page: 0, status: "", tag: "", q: "", reloadTimer: null, next: null,
  selected: new Map(), openErrors: new Set(), busy: false, loads: 0 };

/** What people call a container: its name, else its cuid. */
function displayName(c) {
  return c.name || c.cuid;
}

async function loadList() {
  // Only the newest load renders: an older one (a live reload of the page before) that
  // answers later would show its rows under the new page's place and count.
  const seq = ++list.loads;
  const q = new URLSearchParams({ limit: String(PAGE_SIZE), total: "true" });
  if (list.status) q.set("status", list.status);
  if (list.tag) q.set("tag", list.tag);
  if (list.q) q.set("q", list.q);
  const cursor = list.cursors[list.page];
  if (cursor) q.set("cursor", cursor);
  try {
    const r = await api("GET", "/containers?" + q);
    if (seq !== list.loads) return;
    $("list-error").textContent = "";
    list.next = r.data.next_cursor;
    list.total = r.data.total;
    renderList(r.data.containers);
  } catch (e) {
    if (seq !== list.loads) return;
    if (e.code === "INVALID_CURSOR" && list.page > 0) {
      // A page link from another filter or server: start again at the first page.
      flash("That page link no longer applies; showing the first page.");
      location.replace(listHash({ ...list, page: 0 }));
      return;
    }
    showError("list-error", e);
  }
}

function renderList(containers) {
  const body = $("list-body");
  body.replaceChildren();
  for (const c of containers) body.append(listRow(c));
  const filtered = list.q || list.tag || list.status;
  listEmptyStates(containers.length, filtered);
  $("page-next").disabled = !list.next;
  $("page-first").disabled = list.page === 0;
  $("page-prev").disabled = list.page === 0 || (list.page > 1 && !list.cursors[list.page - 1]);
  bulkSync();
  const pages = Math.max(1, Math.ceil((list.total || 0) / PAGE_SIZE));
  $("page-count").textContent = list.total === undefined ? "" :
    `${list.total} container${list.total === 1 ? "" : "s"}${filtered ? " match" : ""} · page ${list.page + 1} of ${pages}`;
}

/** The observed health as a small badge (none without a health check or when not running). */
/**
 * A crash loop, in a warning colour: a non-zero last exit code on a container that is
 * restarting or has been restarted (`restarts` is `/status`'s `restart_count`, which only
 * the detail page asks for; the list goes by status and exit code).
 */
function crashBadge(c, restarts) {
  const exit = c.exit_code;
  if (exit === null || exit === undefined || exit === 0) return null;
  if (c.status !== "restarting" && !(restarts > 0)) return null;
  const text = restarts !== undefined ? `crash loop (exit ${exit}, restarts ${restarts})` : `crash loop (exit ${exit})`;
  return el("span", { class: "crash", "data-crash": "1", text });
}

function healthBadge(c) {
  if (!c.health) return null;
  return el("span", { class: "health health-" + c.health, "data-health": c.health, text: c.health });
}

/** The spec's health check as one line. */
function healthCheckText(h) {
  if (!h) return "none";
  const probe = h.http ? `HTTP GET :${h.http.port}${h.http.path}` : joinWords(h.cmd);
  return `${probe}, every ${h.interval}s, ${h.retries} failures` + (h.on_unhealthy === "restart" ? ", restarted when unhealthy" : "");
}

/**
 * One row of the list. Every column has its cell in every row (an empty one shows a dash);
 * each cell is labelled from its column's header (`data-label`), which the stacked cards of
 * narrow screens show. A new column needs only its `<th>` and its cell here.
 */
function listRow(c) {
  const tags = el("td", { class: "col-tags" });
  for (const t of c.tags || []) tags.append(el("span", { class: "tag", text: t }));
  if (!tags.childNodes.length) tags.append(dash());
  const converging = c.observed_generation !== c.generation;
  const ports = (c.ports || []).map(portShort).join(", ");
  const portsRaw = (c.ports || []).map(portText).join(", ");
  const exit = c.exit_code !== null && c.exit_code !== undefined ? ` (exit ${c.exit_code})` : "";
  return labelCells(el(
    "tr",
    { "data-cuid": c.cuid },
    selectCell(c),
    el("td", { class: "col-name" },
      el("a", { href: "#/c/" + encodeURIComponent(c.cuid), text: displayName(c), title: c.cuid }),
      c.name ? el("div", { class: "muted cuid", text: c.cuid }) : ""),
    el("td", { class: "col-tenant", text: c.tenant || "—" }),
    el("td", { class: "col-image" }, breakableAt(c.image || "")),
    tags,
    el("td", { class: "col-ports", title: portsRaw }, ports || dash()),
    el("td", { class: "col-desired", "data-desired": c.desired_state, text: c.desired_state + (converging ? ` (gen ${c.generation})` : "") }),
    el("td", { class: "col-status status status-" + c.status, "data-status": c.status },
       el("span", { class: "nowrap", text: statusText(c) + exit }),
       healthBadge(c), crashBadge(c)),
    errorCell(c),
    // charts.js draws the CPU sparkline; a list without it (the script failed to load) still works.
    typeof sparkCell === "function" ? sparkCell(c) : el("td", { class: "col-cpu" }),
  ));
}

// A change anywhere: update the row in place when shown, else reload the page (soon, once
// for a burst), so filters and pages stay right.
liveListeners.add((data) => {
  if ($("page-list").hidden) return;
  const row = data && !data.deleted &&
    [...$("list-body").children].find((r) => r.dataset.cuid === data.cuid);
  const matches = data && !data.deleted &&
    (!list.status || data.status === list.status) &&
    (!list.tag || (data.container.tags || []).includes(list.tag)) &&
    matchesSearch(data.container, list.q);
  if (row && matches) {
    row.replaceWith(listRow(data.container));
    return;
  }
  clearTimeout(list.reloadTimer);
  list.reloadTimer = setTimeout(loadList, 200);
});

// ------------------------------------------------------------------ create / edit form

const form = { cuid: null, etag: null };

function fieldErrorsClear() {
  for (const e of document.querySelectorAll("#spec-form .field-error")) showError(e, null);
  for (const e of document.querySelectorAll("#spec-form [aria-invalid]")) e.removeAttribute("aria-invalid");
  for (const e of document.querySelectorAll("#spec-form [data-theirs]")) delete e.dataset.theirs;
  showError("form-error", null);
  delete $("form-error").dataset.changed;
  $("form-status").textContent = "";
}

/** The input a field error is about ("tags[0]" → #f-tags; "resources.cpus" → #f-cpus). */
const FIELD_INPUT = { network: "allow", resources: "cpus", health: "health-kind", idle: "idle-after", lifetime: "ttl" };

/** Puts `e` (an ApiError or a client-side error) next to its field: the text below it (after
 *  any other error already there: several fields share the resources line), `aria-invalid`
 *  and `aria-describedby` on the input, focus on the first one marked. */
function markField(root, e) {
  const slotName = ["cpus", "memory", "pids", "disk", "tmp"].includes(root) ? "resources" : root;
  const slot = $("e-" + slotName);
  if (!slot) return false;
  if (slot.textContent) slot.textContent += "\n" + e.message;
  else showError(slot, e);
  const input = $("f-" + root) || $("f-" + (FIELD_INPUT[root] || root));
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", slot.id);
    if (!document.querySelector("#spec-form [aria-invalid=true]:focus")) input.focus();
  }
  return true;
}

function fillForm(c) {
  $("f-name").value = c && c.name ? c.name : "";
  $("f-image").value = c ? c.image : "";
  $("f-command").value = c && c.command ? joinWords(c.command) : "";
  $("f-env").value = c ? Object.entries(c.env || {}).map(([k, v]) => `${k}=${v}`).join("\n") : "";
  $("f-tags").value = c ? (c.tags || []).join(", ") : "";
  $("f-cpus").value = c && c.resources.cpus != null ? c.resources.cpus : "";
  $("f-memory").value = c && c.resources.memory != null ? c.resources.memory : "";
  $("f-pids").value = c && c.resources.pids != null ? c.resources.pids : "";
  $("f-ports").value = c ? (c.ports || []).map(portText).join(", ") : "";
  $("f-restart").value = c ? c.restart : "on-failure";
  $("f-disk").value = c && c.resources.disk != null ? c.resources.disk : "";
  $("f-tmp").value = c && c.resources.tmp != null ? c.resources.tmp : "";
  // A new container's defaults are the server's (DEFAULT_ISOLATION, DEFAULT_EGRESS): the
  // form sends these fields only when the user changed them from what is shown.
  $("f-isolation").value = c ? c.isolation : "runc";
  $("f-read_only").checked = !!(c && c.read_only);
  $("f-egress").value = c ? c.network.egress : "internet";
  $("f-allow").value = c ? (c.network.allow || []).join(", ") : "";
  const idle = c && c.idle;
  $("f-idle-after").value = idle ? idle.after : "";
  $("f-idle-action").value = idle ? idle.action : "pause";
  $("f-idle-resume").checked = idle ? idle.resume_on_use : true;
  const h = c && c.health_check;
  $("f-health-kind").value = h ? (h.http ? "http" : "cmd") : "";
  $("f-health-cmd").value = h && h.cmd ? joinWords(h.cmd) : "";
  $("f-health-port").value = h && h.http ? String(h.http.port) : "";
  $("f-health-path").value = h && h.http ? h.http.path : "";
  $("f-health-interval").value = h ? String(h.interval) : "";
  $("f-health-restart").checked = !!(h && h.on_unhealthy === "restart");
  form.defaults = { isolation: $("f-isolation").value, egress: $("f-egress").value };
  $("f-ttl").value = "";
  $("f-on_expiry").value = "stop";
}

/** A duration as typed: seconds, or with a unit (`90s`, `30m`, `2h`, `1d`); null if not one. */
function parseSeconds(text) {
  const m = /^(\d+)\s*([smhd]?)$/i.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2].toLowerCase()];
}

/** "1 h 2 min", "45 s": how long until a deadline. */
function durationText(ms) {
  let s = Math.max(0, Math.round(ms / 1000));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (s >= size) { parts.push(`${Math.floor(s / size)} ${unit}`); s %= size; }
  }
  if (!parts.length || (parts.length < 2 && s)) parts.push(`${s} s`);
  return parts.slice(0, 2).join(" ");
}

async function openForm(cuid) {
  showPage("form");
  fieldErrorsClear();
  form.cuid = cuid;
  form.original = null;
  $("form-title").textContent = cuid ? `Edit ${cuid}` : "New container";
  $("form-submit").textContent = cuid ? "Save" : "Create";
  $("f-start-row").hidden = !!cuid;
  // On by default: a new container is usually wanted running (issue 23).
  $("f-start").checked = true;
  // The code goes in with the create; an existing container's Files tab takes uploads.
  $("f-zip-row").hidden = !!cuid;
  $("f-zip").value = "";
  $("form-warning").hidden = true;
  loadImageChoices();
  // A lifetime is set at create; on an existing container the detail page extends it.
  $("f-lifetime-row").hidden = !!cuid;
  $("form-cancel").href = cuid ? "#/c/" + encodeURIComponent(cuid) : "#/";
  // The operator may create a container for a tenant; a tenant's own are its tenant's.
  $("f-tenant-row").hidden = !!cuid || !isOperator();
  if (!cuid) {
    fillForm(null);
    $("f-image").focus();
    if (isOperator()) loadFormTenants();
    return;
  }
  try {
    const r = await api("GET", "/containers/" + encodeURIComponent(cuid));
    form.etag = r.headers.get("etag");
    form.original = r.data;
    fillForm(r.data);
    $("form-title").textContent = `Edit ${displayName(r.data)}`;
    updateRecreateWarning();
  } catch (e) {
    $("form-error").textContent = e.message;
  }
}

/** The tenant choices of the create form (none when the list cannot be had). */
async function loadFormTenants() {
  const select = $("f-tenant");
  select.replaceChildren(el("option", { value: "", text: "none" }));
  try {
    const r = await api("GET", "/tenants");
    for (const t of r.data.tenants) select.append(el("option", { value: t.name, text: t.name }));
  } catch (_) { /* the form still creates the operator's own */ }
}

/** The form as the API's spec. What cannot be read is collected, field by field, and thrown
 *  at the end as one error whose `fields` lists them all (each `{field, message}`). */
function readForm() {
  const errors = [];
  const bad = (field, message) => { if (!errors.some((x) => x.field === field)) errors.push({ field, message }); };
  const spec = { image: $("f-image").value.trim(), name: $("f-name").value.trim() || null };
  const cmd = $("f-command").value.trim();
  spec.command = cmd ? splitWords(cmd) : null;
  spec.env = {};
  for (const line of $("f-env").value.split("\n")) {
    if (!line.trim()) continue;
    const i = line.indexOf("=");
    if (i < 1) { bad("env", `"${line}" is not NAME=value`); continue; }
    spec.env[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  spec.tags = $("f-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  spec.resources = {};
  if ($("f-cpus").value.trim()) spec.resources.cpus = Number($("f-cpus").value);
  if ($("f-memory").value.trim()) spec.resources.memory = $("f-memory").value.trim();
  if ($("f-pids").value.trim()) spec.resources.pids = Number($("f-pids").value);
  spec.ports = [];
  for (const p of $("f-ports").value.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:(.+):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(p);
    if (!m) { bad("ports", `"${p}" is not host:container[/udp]`); continue; }
    const port = { host: Number(m[2]), container: Number(m[3]), protocol: m[4] || "tcp" };
    if (m[1]) port.host_ip = m[1];
    spec.ports.push(port);
  }
  spec.restart = $("f-restart").value;
  if ($("f-disk").value.trim()) spec.resources.disk = $("f-disk").value.trim();
  if ($("f-tmp").value.trim()) spec.resources.tmp = $("f-tmp").value.trim();
  spec.isolation = $("f-isolation").value;
  spec.read_only = $("f-read_only").checked;
  const allow = $("f-allow").value.split(",").map((a) => a.trim()).filter(Boolean);
  spec.network = { egress: $("f-egress").value };
  if (allow.length) spec.network.allow = allow;
  const ttl = $("f-ttl").value.trim();
  if (ttl) {
    const seconds = parseSeconds(ttl);
    if (seconds === null) bad("lifetime", `"${ttl}" is not a duration (e.g. 3600, 30m, 2h)`);
    else spec.lifetime = { ttl: seconds, on_expiry: $("f-on_expiry").value };
  }
  const after = $("f-idle-after").value.trim();
  spec.idle = after ? {
    after: Number(after),
    action: $("f-idle-action").value,
    resume_on_use: $("f-idle-resume").checked,
  } : null;
  try {
    spec.health = readHealth();
  } catch (e) {
    bad(e.field || "health", e.message);
  }
  if (errors.length) throw Object.assign(new Error(errors[0].message), { fields: errors });
  return spec;
}

/** The health fields as the API's `health` (null: none). What the form does not show
 *  (timeout, retries, start period) is kept from the container being edited. */
function readHealth() {
  const kind = $("f-health-kind").value;
  if (!kind) return null;
  const before = (form.cuid && form.original && form.original.health_check) || {};
  const h = {};
  for (const k of ["timeout", "retries", "start_period"]) if (before[k] != null) h[k] = before[k];
  if (kind === "cmd") {
    const cmd = $("f-health-cmd").value.trim();
    if (!cmd) throw Object.assign(new Error("a command is needed"), { field: "health" });
    h.cmd = splitWords(cmd);
  } else {
    const port = $("f-health-port").value.trim();
    h.http = { port: port ? Number(port) : null, path: $("f-health-path").value.trim() || "/" };
  }
  const every = $("f-health-interval").value.trim();
  if (every) h.interval = Number(every);
  else if (before.interval != null) h.interval = before.interval;
  h.on_unhealthy = $("f-health-restart").checked ? "restart" : null;
  return h;
}

/** The form's input a `details.field` is about ("tags[0]" → tags; "resources.cpus" → cpus,
 *  "network.allow[0]" → network). */
function fieldRoot(field) {
  const parts = field ? String(field).split(/[.[]/) : [];
  return parts[0] === "resources" && parts[1] ? parts[1] : parts[0];
}

/** Puts an API error next to its fields: every one of `details.errors` (a validation error
 *  names each field refused) at once, else `details.field`; what no field shows goes on top. */
function showFieldError(e) {
  const d = (e.body && e.body.details) || {};
  const list = Array.isArray(d.errors) && d.errors.length ? d.errors : [{ field: d.field, code: e.code, message: e.message }];
  const top = [];
  for (const item of list) {
    let message = item.message || e.message;
    // Which variable or tag of the field: "1BAD: env names must …".
    const which = /^env\.(.+)$/.exec(item.field || "");
    if (which) message = `${which[1]}: ${message}`;
    else if (/^tags\[\d+\]$/.test(item.field || "") && typeof item.provided === "string") message = `"${item.provided}": ${message}`;
    const one = { message, body: { code: item.code || e.code } };
    const root = fieldRoot(item.field);
    if (!root || !markField(root, one)) top.push(one);
  }
  if (top.length) {
    showError("form-error", top[0]);
    $("form-error").textContent = top.map((t) => t.message).join("\n");
  }
}

/** `BOOT_SCRIPT_MISSING` on a create with start: nothing was made; the ZIP and the command
 *  are the two ways out, said next to both. */
function showBootScriptMissing(e) {
  markField("zip", {
    message: "Nothing to run yet: the default command runs /app/boot.py, and a new container has no files. " +
      "Choose a ZIP holding boot.py, type a command, or untick \u201cStart it now\u201d.",
    body: { code: e.code },
  });
  markField("command", { message: "Or type a command here (for example: sleep infinity).", body: { code: e.code } });
}

/** Creates the container from `spec`; with a ZIP: created stopped, the ZIP unpacked into
 *  /app, then started when asked. A failed upload deletes the container it just made
 *  (nothing is left); a failed start opens the container with the error. */
async function createFromForm(spec) {
  const zip = $("f-zip").files[0];
  const startNow = $("f-start").checked;
  if (startNow && !zip) spec.start = true;
  // Progress is a status, not an error: its own element, in the normal colour.
  $("form-status").textContent = spec.start ? "Creating and starting…" : "Creating…";
  const r = await api("POST", "/containers", { json: spec });
  const cuid = r.data.cuid;
  const path = "/containers/" + encodeURIComponent(cuid);
  if (zip) {
    $("form-status").textContent = `Uploading ${zip.name}…`;
    try {
      await api("POST", path + "/upload-zip?path=%2F", { body: zip, headers: { "content-type": "application/zip" } });
    } catch (e) {
      $("form-status").textContent = "The upload failed: removing the new container…";
      try { await api("DELETE", path); } catch (_) { /* the list shows it if it stayed */ }
      markField("zip", e);
      return;
    }
    if (startNow) {
      $("form-status").textContent = "Starting…";
      try {
        await api("POST", path + "/start");
      } catch (e) {
        nextFlash = `Created with ${zip.name}, but it did not start: ${e.message}`;
      }
    }
  }
  location.hash = "#/c/" + encodeURIComponent(cuid);
}

$("spec-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  fieldErrorsClear();
  let spec;
  try {
    spec = readForm();
  } catch (e) {
    for (const f of e.fields || [{ field: "command", message: e.message }]) markField(f.field, f);
    return;
  }
  const button = $("form-submit");
  button.disabled = true;
  try {
    if (!form.cuid) {
      if (!spec.command) delete spec.command;
      if (!spec.name) delete spec.name;
      // Untouched, the server's defaults decide (they may differ from the first option).
      if (spec.isolation === form.defaults.isolation) delete spec.isolation;
      if (spec.network.egress === form.defaults.egress && !spec.network.allow) delete spec.network;
      if (!spec.read_only) delete spec.read_only;
      if (!spec.idle) delete spec.idle;
      if (!spec.health) delete spec.health;
      if (!$("f-tenant-row").hidden && $("f-tenant").value) spec.tenant = $("f-tenant").value;
      await createFromForm(spec);
    } else {
      await saveEdit(spec);
    }
  } catch (e) {
    $("form-status").textContent = "";
    if (e.status === 412) {
      await keepTypedAfterConflict();
    } else if (e.code === "BOOT_SCRIPT_MISSING") {
      showBootScriptMissing(e);
    } else {
      showFieldError(e);
    }
  } finally {
    $("form-status").textContent = "";
    button.disabled = false;
  }
});

/** Whether the form's check is the one shown (defaults filled in on the shown one). */
function sameHealth(asked, shown) {
  if (!asked || !shown) return !asked && !shown;
  const full = { cmd: null, http: null, interval: 10, timeout: 5, retries: 3, start_period: 0, on_unhealthy: null, ...asked };
  const key = (h) => JSON.stringify(["cmd", "http", "interval", "timeout", "retries", "start_period", "on_unhealthy"].map((k) => h[k]));
  return key(full) === key(shown);
}

/** The PATCH body that takes container `o` to `spec`, and whether its ports change (they
 *  have their own route). */
function editPatch(spec, o) {
  const patch = {};
  for (const k of ["name", "image", "restart", "isolation", "read_only"]) if (spec[k] !== o[k]) patch[k] = spec[k];
  const network = { egress: spec.network.egress, allow: spec.network.allow || [] };
  if (JSON.stringify(network) !== JSON.stringify({ egress: o.network.egress, allow: o.network.allow || [] })) {
    patch.network = spec.network;
  }
  if (JSON.stringify(spec.idle) !== JSON.stringify(o.idle || null)) patch.idle = spec.idle;
  if (JSON.stringify(spec.command) !== JSON.stringify(o.command)) patch.command = spec.command;
  if (!sameHealth(spec.health, o.health_check)) patch.health = spec.health;
  if (JSON.stringify(spec.tags) !== JSON.stringify(o.tags)) patch.tags = spec.tags;
  const env = {};
  for (const k of Object.keys(o.env || {})) if (!(k in spec.env)) env[k] = null;
  for (const [k, v] of Object.entries(spec.env)) if ((o.env || {})[k] !== v) env[k] = v;
  if (Object.keys(env).length) patch.env = env;
  const res = {};
  for (const k of ["cpus", "memory", "pids", "disk", "tmp"]) {
    const now = spec.resources[k] ?? null;
    if (now !== (o.resources[k] ?? null)) res[k] = now;
  }
  if (Object.keys(res).length) patch.resources = res;
  const ports = JSON.stringify(spec.ports) !== JSON.stringify((o.ports || []).map((p) => ({ ...p })));
  return { patch, ports };
}

async function saveEdit(spec) {
  const { patch, ports } = editPatch(spec, form.original);
  const path = "/containers/" + encodeURIComponent(form.cuid);
  let etag = form.etag;
  if (Object.keys(patch).length) {
    $("form-status").textContent = "Saving…";
    const r = await api("PATCH", path, { json: patch, headers: { "if-match": etag } });
    etag = r.headers.get("etag");
    // Saved: should the ports step fail, the next Save starts from this, not from a 412
    // blaming "someone else" for the user's own change.
    form.etag = etag;
    form.original = r.data;
  }
  if (ports) {
    await api("PATCH", path + "/ports", { json: { ports: spec.ports }, headers: { "if-match": etag } });
  }
  location.hash = "#/c/" + encodeURIComponent(form.cuid);
}

// ------------------------------------------------------------------ detail, actions

const detail = { cuid: null, tab: null, container: null, logsAbort: null, term: null };

function closeDetail() {
  if (typeof chartsStop === "function") chartsStop();
  if (detail.logsAbort) detail.logsAbort.abort();
  detail.logsAbort = null;
  termClose();
  detail.cuid = null;
}

async function openDetail(cuid, tab, folder) {
  if (detail.cuid !== cuid) {
    closeDetail();
    detail.cuid = cuid;
    detail.container = null;
    detail.restarts = undefined;
    detail.startedAt = undefined;
    detail.lastExit = undefined;
    showError("action-error", null);
    $("action-status").textContent = "";
    files.path = "";
    files.shown = null; // another container: the Files tab starts afresh
  }
  if (tab === "files") files.path = folder || "";
  $("detail-gone").hidden = true;
  showPage("detail");
  $("detail-title").textContent = cuid;
  $("edit-link").href = "#/c/" + encodeURIComponent(cuid) + "/edit";
  try {
    const r = await api("GET", "/containers/" + encodeURIComponent(cuid));
    if (detail.cuid !== cuid) return; // another container was opened meanwhile
    renderDetail(r.data);
  } catch (e) {
    if (detail.cuid !== cuid) return;
    if (e.status === 404) showGone(cuid);
    else showError("action-error", e);
    return;
  }
  selectTab(tab);
}

/** `restart_count` from `GET …/status` (not in the representation): shown beside the status
 *  and in the crash-loop badge. At most one request in flight; a failure leaves it unknown. */
async function loadRestarts(c) {
  if (detail.restartsLoading) return;
  detail.restartsLoading = true;
  try {
    const r = await api("GET", "/containers/" + encodeURIComponent(c.cuid) + "/status");
    if (detail.cuid !== c.cuid || !detail.container) return;
    const changed = detail.restarts !== r.data.restart_count;
    detail.restarts = r.data.restart_count;
    detail.startedAt = r.data.running && !r.data.paused ? r.data.started_at : null;
    renderUptime();
    const cur = detail.container;
    // /status is Docker's word now. Its exit code means a real exit only when the process is
    // not running (a running one reads 0): keep the last real one across restarts.
    if (!r.data.running && r.data.exit_code !== null && r.data.exit_code !== undefined) detail.lastExit = r.data.exit_code;
    const lastExit = cur.exit_code ?? detail.lastExit;
    const shown = { ...cur, exit_code: lastExit };
    $("detail-health").replaceChildren(...[healthBadge(cur), crashBadge(shown, detail.restarts)].filter(Boolean));
    $("observed").dataset.restarts = String(detail.restarts);
    const exitDd = $("observed").querySelector('[data-k="exit code"]');
    if (exitDd && (cur.exit_code === null || cur.exit_code === undefined) && lastExit !== null && lastExit !== undefined) {
      exitDd.textContent = `${lastExit} (last exit)`;
    }
    if (changed) {
      const dd = $("observed").querySelector("[data-k=restarts]");
      if (dd) dd.textContent = String(detail.restarts);
    }
  } catch (_) {
    /* unknown; a 401 already showed the sign-in page */
  } finally {
    detail.restartsLoading = false;
  }
}

/** A container that is not (or no longer) there: the page says so, every control off. */
function showGone(cuid) {
  detail.container = null;
  detail.gone = true;
  termClose();
  if (typeof chartsStop === "function") chartsStop();
  if (detail.logsAbort) detail.logsAbort.abort();
  $("detail-gone").hidden = false;
  $("detail-gone").textContent = `This container (${cuid}) has been deleted, or never existed.`;
  for (const p of document.querySelectorAll("#page-detail [role=tabpanel]")) p.hidden = true;
  $("observed").replaceChildren();
  $("desired").replaceChildren();
  applyActionStates();
}

/**
 * The actions the API accepts in the container's state (docs/API.md §4): `pause` only a
 * running one, `unpause` only a paused one, `start` anything but a paused one (and nothing
 * to do for a running one), `stop` one that runs or should; nothing while it is being
 * deleted or once it is gone.
 */
function actionAllowed(action, c) {
  if (!c || c.status === "deleting") return false;
  const st = c.status;
  switch (action) {
    case "start": return st !== "paused" && !(st === "running" && c.desired_state === "running");
    case "stop": return !["stopped", "created", "exited"].includes(st) || c.desired_state !== "stopped";
    case "pause": return st === "running";
    case "unpause": return st === "paused";
    default: return true; // restart, update, delete
  }
}

function applyActionStates(busy) {
  const c = detail.gone ? null : detail.container;
  for (const b of document.querySelectorAll("[data-action]")) {
    b.disabled = !!busy || !actionAllowed(b.dataset.action, c);
  }
  const gone = !c;
  $("edit-link").toggleAttribute("aria-disabled", gone);
  $("edit-link").tabIndex = gone ? -1 : 0;
  $("extend-submit").disabled = gone;
  for (const t of document.querySelectorAll("#page-detail [role=tab]")) t.disabled = gone;
}

/** A definition list of `[key, value, title]`: a value is text or a node; a title (the raw
 *  value behind the words) shows on hover. */
function dl(target, pairs) {
  target.replaceChildren();
  for (const [k, v, title] of pairs) {
    const dd = typeof v === "string" ? el("dd", { text: v, "data-k": k }) : el("dd", { "data-k": k }, v);
    if (title) dd.title = title;
    target.append(el("dt", { text: k }), dd);
  }
}

/** What the container is asked to be, in words ("wants running"). */
const WANTS = { running: "wants running", stopped: "wants stopped", paused: "wants paused", created: "wants nothing yet (never started)" };
/** What it is, in words ("is running"). */
const IS = {
  created: "is created, never started", running: "is running", paused: "is paused",
  restarting: "is restarting", exited: "has exited on its own", stopped: "is stopped",
  error: "has a problem (see last error)", deleting: "is being deleted",
};

/**
 * Published ports as links (TCP; UDP as text): to the address its `endpoints` entry names
 * (on a Swarm, the node that runs the task; on one host, a port bound to one address), else
 * to the page's own host.
 */
function portLinks(ports, endpoints) {
  const span = el("span");
  (ports || []).forEach((p, i) => {
    if (i) span.append(", ");
    if ((p.protocol || "tcp") === "tcp") {
      const at = (endpoints || []).find((e) => e.port === p.host && e.protocol === "tcp" && e.address);
      const host = at ? (at.address.includes(":") ? `[${at.address}]` : at.address) : location.hostname;
      span.append(el("a", {
        href: `http://${host}:${p.host}/`, target: "_blank", rel: "noopener",
        text: portShort(p),
        title: `${portText(p)}: opens port ${p.host} of ${at ? (at.node ? "node " + at.node : at.address) : "this host"} in a new tab`,
      }));
    } else {
      span.append(el("span", { text: portShort(p), title: portText(p) }));
    }
  });
  if (!(ports || []).length) span.textContent = "none";
  return span;
}

/** "up 1 h 5 min (since 3/12/2026, 10:02:03)" while it runs (`started_at` of /status). */
function uptimeText() {
  const c = detail.container;
  if (!c || c.status !== "running") return c && c.status === "paused" ? "paused" : "not running";
  if (!detail.startedAt) return "…";
  const at = new Date(detail.startedAt);
  return `up ${durationText(Date.now() - at)} (since ${when(detail.startedAt)})`;
}

function renderUptime() {
  const dd = $("observed").querySelector('[data-k="uptime"]');
  if (dd) {
    dd.textContent = uptimeText();
    dd.title = detail.startedAt ? `started_at ${detail.startedAt}` : "";
  }
}

function resourcesText(r) {
  const parts = [];
  if (r.cpus != null) parts.push(`${r.cpus} CPUs`);
  if (r.memory != null) parts.push(`memory ${r.memory}`);
  if (r.pids != null) parts.push(`${r.pids} pids`);
  if (r.disk != null) parts.push(`disk ${r.disk}`);
  return parts.length ? parts.join(", ") : "no limits";
}

/** `/app`'s usage under `resources.disk`. Events carry no `disk_usage` (it is read when a
 *  GET is answered): the last one read is kept until the next GET. */
function diskText(c) {
  if (c.resources.disk == null) return "uncapped";
  if (c.disk_usage !== undefined) detail.diskUsage = c.disk_usage;
  const u = detail.diskUsage;
  if (!u) return `cap ${c.resources.disk} (not mounted)`;
  return `${humanSize(u.used_bytes)} used of ${humanSize(u.cap_bytes)} (${humanSize(u.available_bytes)} free)`;
}

function egressText(n) {
  if (!n || n.egress === "internet") return "internet (not the host, other containers or metadata)";
  if (n.egress === "none" || !(n.allow || []).length) return "none (published ports still answer)";
  return "only " + n.allow.join(", ");
}

/** The idle policy in words. */
function idleText(i) {
  if (!i) return "none";
  return `${i.action} after ${i.after} s without use` + (i.resume_on_use ? "; resumes on use" : "; stays until started");
}

/** `paused (idle)`: the status, and why the server itself set it. */
function statusText(c) {
  return c.status + (c.status_reason ? ` (${c.status_reason})` : "");
}

function renderDetail(c) {
  // A late answer for a container left meanwhile must not be drawn under another's page (its
  // buttons act on detail.cuid).
  if (c.cuid !== detail.cuid) return;
  detail.container = c;
  detail.gone = false;
  $("detail-title").textContent = displayName(c);
  document.title = `${displayName(c)} · Container manager`;
  dl($("desired"), [
    ["tenant", c.tenant || "none"],
    ["state", (WANTS[c.desired_state] || "wants " + c.desired_state) + (c.status_reason ? ` (set by the server: ${c.status_reason})` : ""), `desired_state: ${c.desired_state}`],
    ["spec version", String(c.generation), `generation ${c.generation}`],
    ["created", when(c.created_at), c.created_at],
    ["image", c.image],
    ["command", c.command ? joinWords(c.command) : "(image default)"],
    ["tags", (c.tags || []).join(", ")],
    ["ports", portLinks(c.ports, c.endpoints)],
    ["restart", c.restart],
    ["resources", resourcesText(c.resources)],
    ["isolation", c.isolation === "gvisor" ? "gVisor (runsc)" : "runc"],
    ["root filesystem", c.read_only ? `read-only; /tmp ${c.resources.tmp || "64m"} tmpfs` : "writable"],
    ["egress", egressText(c.network)],
    ["lifetime", c.lifetime ? `${durationText(c.lifetime.ttl * 1000)}, then ${c.lifetime.on_expiry}` : "none"],
    ["idle", idleText(c.idle)],
    ["health check", healthCheckText(c.health_check)],
    ["env", Object.keys(c.env || {}).join(", ")],
  ]);
  renderDeadline();
  const applied = c.observed_generation === c.generation ? `version ${c.generation} (up to date)`
    : `version ${c.observed_generation}; applying version ${c.generation}…`;
  dl($("observed"), [
    ["status", (IS[c.status] || "is " + c.status) + (c.status_reason ? ` (${c.status_reason})` : ""), `status: ${c.status}`],
    ["uptime", uptimeText()],
    ["spec applied", applied, `observed_generation ${c.observed_generation}, generation ${c.generation}`],
    ["exit code", c.exit_code === null || c.exit_code === undefined ? "none yet" : String(c.exit_code)],
    ["restarts", detail.restarts === undefined ? "…" : String(detail.restarts)],
    ["health", c.health ? c.health + (c.health_log ? ` — ${c.health_log}` : "") : "none"],
    ["last error", c.last_error ? `${c.last_error.message} (${c.last_error.code})` : "none"],
    ["updated", when(c.updated_at), c.updated_at],
    ["disk", diskText(c)],
    ["image digest", c.image_digest || "unknown"],
    ["update available", c.update_available ? `${c.update_available.digest} (seen ${when(c.update_available.seen_at)})` : c.updating ? "being rolled out" : "none"],
    ["last update", c.last_update ? `${c.last_update.result} ${c.last_update.to} at ${when(c.last_update.at)}${c.last_update.reason ? ": " + c.last_update.reason : ""}` : "none"],
  ]);
  renderUptime();
  if (typeof chartsFor === "function") chartsFor(c);
  $("observed").dataset.status = c.status;
  $("detail-health").replaceChildren(...[healthBadge(c), crashBadge(c, detail.restarts)].filter(Boolean));
  loadRestarts(c);
  applyActionStates(detail.busy);
}

/** The deadline of the container shown: local time and time left (ticks every second). */
function renderDeadline() {
  const c = detail.container;
  const at = c && c.expires_at ? new Date(c.expires_at) : null;
  const what = c && c.lifetime ? (c.lifetime.on_expiry === "delete" ? "deleted" : "stopped") : "";
  if (at) {
    $("expires-at").textContent = `${what} at ${at.toLocaleString()}`;
    $("expires-left").textContent = `(in ${durationText(at - Date.now())})`;
  } else {
    $("expires-at").textContent = c && c.status_reason === "expired" ? `${what} when its lifetime ran out` : "none";
    $("expires-left").textContent = "";
  }
  $("lifetime").dataset.expiresAt = c && c.expires_at ? c.expires_at : "";
}
setInterval(() => {
  if (!$("page-detail").hidden && detail.container) {
    renderDeadline();
    renderUptime();
  }
}, 1000);
// A crash loop sends no event while it stays `restarting`: its restart count is read again
// every 5 s meanwhile.
setInterval(() => {
  const c = detail.container;
  if (!$("page-detail").hidden && c && !detail.gone && c.status === "restarting") loadRestarts(c);
}, 5000);

$("lifetime").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("action-error").textContent = "";
  const seconds = parseSeconds($("extend-ttl").value);
  if (seconds === null) {
    $("action-error").textContent = "Give the time left from now: seconds, or 30m, 2h, 1d.";
    return;
  }
  const on_expiry = detail.container && detail.container.lifetime ? detail.container.lifetime.on_expiry : "stop";
  $("extend-submit").disabled = true;
  try {
    const r = await api("PATCH", "/containers/" + encodeURIComponent(detail.cuid), {
      json: { lifetime: { ttl: seconds, on_expiry } },
    });
    renderDetail(r.data);
    $("extend-ttl").value = "";
  } catch (e) {
    showError("action-error", e);
  } finally {
    $("extend-submit").disabled = false;
  }
});

liveListeners.add((data) => {
  if ($("page-detail").hidden || !detail.cuid) return;
  if (data === null) {
    api("GET", "/containers/" + encodeURIComponent(detail.cuid)).then((r) => renderDetail(r.data), () => {});
  } else if (data.cuid === detail.cuid) {
    if (data.deleted) {
      showGone(detail.cuid);
    } else {
      renderDetail(data.container);
    }
  }
});

for (const b of document.querySelectorAll("[data-action]")) {
  b.addEventListener("click", () => runAction(b.dataset.action, b));
}

async function runAction(action, button) {
  const cuid = detail.cuid;
  if (detail.container && detail.container.cuid !== cuid) return; // never act on one shown as another
  const shown = detail.container ? displayName(detail.container) : cuid;
  if (action === "delete" && !(await confirmDelete(detail.container, cuid))) return;
  showError("action-error", null);
  $("action-status").textContent = `${action}: waiting for the container to converge…`;
  detail.busy = true;
  applyActionStates(true);
  try {
    const path = "/containers/" + encodeURIComponent(cuid) + (action === "delete" ? "" : "/" + action);
    const r = await api(action === "delete" ? "DELETE" : "POST", path);
    $("action-status").textContent = `${action}: done`;
    if (action === "delete") {
      nextFlash = `${shown} deleted.`; // route() shows it on the list
      location.hash = "#/";
    } else {
      renderDetail(r.data);
    }
  } catch (e) {
    $("action-status").textContent = `${action}: failed`;
    if (e.status === 404) showGone(cuid);
    else showError("action-error", e);
  } finally {
    detail.busy = false;
    applyActionStates(false);
  }
}

// ------------------------------------------------------------------ tabs

function showTab(tab) {
  location.hash = "#/c/" + encodeURIComponent(detail.cuid) + "/" + tab;
}

for (const b of document.querySelectorAll("[data-tab]")) {
  b.addEventListener("click", () => { tabsByKey = false; showTab(b.dataset.tab); });
}

// Whether the tab last shown was reached with the arrow keys (then the focus stays on it).
let tabsByKey = false;

// The ARIA tabs pattern: one tab in the Tab order (the selected one); Left/Right move to the
// previous/next tab (wrapping), Home/End to the first/last, and the tab focused is shown.
document.querySelector("#page-detail [role=tablist]").addEventListener("keydown", (ev) => {
  const tabs = [...document.querySelectorAll("#page-detail [role=tab]")].filter((t) => !t.hidden && !t.disabled);
  const at = tabs.indexOf(document.activeElement);
  if (at < 0 || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const to = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: tabs.length - 1 }[ev.key];
  if (to === undefined) return;
  ev.preventDefault();
  const t = tabs[(to + tabs.length) % tabs.length];
  tabsByKey = true;
  t.focus();
  showTab(t.dataset.tab);
});

function selectTab(tab) {
  if (!["logs", "terminal", "files", "snapshots"].includes(tab)) tab = "logs";
  if (tab === "terminal" && !can("operate")) tab = "logs"; // a terminal needs `operate`
  for (const b of document.querySelectorAll("[data-tab]")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    b.tabIndex = b.dataset.tab === tab ? 0 : -1; // roving tabindex
  }
  for (const t of ["logs", "terminal", "files", "snapshots"]) $("panel-" + t).hidden = t !== tab;
  if (detail.tab !== tab) {
    if (detail.tab === "logs" && detail.logsAbort) detail.logsAbort.abort();
    if (detail.tab === "terminal") termClose();
  }
  detail.tab = tab;
  if (tab === "logs") loadLogs();
  if (tab === "terminal" && !detail.term) termOpen();
  if (tab === "files") loadFiles(files.path);
  if (tab === "snapshots") loadSnapshots();
}

// ------------------------------------------------------------------ snapshots

function snapBase() {
  return `/containers/${encodeURIComponent(detail.cuid)}`;
}

async function loadSnapshots() {
  $("snap-error").textContent = "";
  try {
    const r = await api("GET", `${snapBase()}/snapshots`);
    const body = $("snap-body");
    body.replaceChildren(...r.data.snapshots.map(snapRow));
    if (!r.data.snapshots.length) {
      body.append(el("tr", {}, el("td", { colspan: "5" }, "No snapshots yet.")));
    }
  } catch (e) {
    $("snap-error").textContent = e.message;
  }
}

function snapRow(s) {
  const act = (label, fn) => el("button", { type: "button", onclick: fn, "data-snap": s.name }, label);
  const actions = el("td", { "data-needs": "write" },
    act("Restore", () => restoreSnapshot(s)),
    act("Fork", () => forkSnapshot(s)),
    act("Delete", () => deleteSnapshot(s)));
  actions.hidden = !can("write");
  return el("tr", {}, el("td", {}, s.name), el("td", {}, when(s.created_at)),
    el("td", {}, String(s.files)), el("td", {}, humanSize(s.bytes)), actions);
}

async function snapAction(what, fn) {
  $("snap-error").textContent = "";
  $("snap-status").textContent = `${what}…`;
  try {
    await fn();
  } catch (e) {
    $("snap-status").textContent = `${what} failed`;
    $("snap-error").textContent = e.message;
  }
}

$("snap-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("snap-name").value.trim();
  snapAction(`taking ${name}`, async () => {
    const r = await api("POST", `${snapBase()}/snapshots`, { json: { name } });
    const skipped = r.data.skipped ? `, ${r.data.skipped} special files skipped` : "";
    $("snap-status").textContent = `took ${name}: ${r.data.files} files, ${humanSize(r.data.bytes)}${skipped}`;
    $("snap-name").value = "";
    loadSnapshots();
  });
});

function restoreSnapshot(s) {
  if (!confirm(`Replace /app with the snapshot ${s.name}? Files changed since are lost; a running container restarts.`)) return;
  snapAction(`restoring ${s.name}`, async () => {
    await api("POST", `${snapBase()}/restore`, { json: { snapshot: s.id } });
    $("snap-status").textContent = `restored ${s.name}`;
  });
}

function forkSnapshot(s) {
  snapAction(`forking ${s.name}`, async () => {
    const r = await api("POST", `${snapBase()}/fork`, { json: { snapshot: s.id, spec: {} } });
    location.hash = "#/c/" + encodeURIComponent(r.data.cuid);
  });
}

function deleteSnapshot(s) {
  if (!confirm(`Delete the snapshot ${s.name}?`)) return;
  snapAction(`deleting ${s.name}`, async () => {
    await api("DELETE", `${snapBase()}/snapshots/${encodeURIComponent(s.id)}`);
    $("snap-status").textContent = `deleted ${s.name}`;
    loadSnapshots();
  });
}

// ------------------------------------------------------------------ logs

$("logs-load").addEventListener("click", loadLogs);

function decodeData(obj) {
  if (obj.encoding === "base64") {
    const bin = atob(obj.data);
    return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  }
  return obj.data;
}

/** The logs route of the container shown, with `params`. */
function logsUrl(params) {
  return `/containers/${encodeURIComponent(detail.cuid)}/logs?${new URLSearchParams(params)}`;
}

/** Timestamps are always received (JSONL carries them); the box only shows or hides them. */
$("logs-timestamps").addEventListener("change", () => {
  $("logs-out").classList.toggle("show-ts", $("logs-timestamps").checked);
});

/** One record as a line of the output: its timestamp (local time, shown on demand) and its
 *  text, kept apart so a search marks the text only. */
function logLine(rec) {
  const text = decodeData(rec);
  const line = el("span", { class: "line " + rec.stream });
  line.logText = text;
  if (rec.timestamp) {
    const t = new Date(rec.timestamp);
    const shown = isNaN(t) ? rec.timestamp : t.toLocaleString();
    line.append(el("span", { class: "ts", text: shown + " ", title: rec.timestamp }));
  }
  line.append(el("span", { class: "text", text }));
  return line;
}

/** Shows only the lines holding the search text (any case), the text marked in them. */
function filterLine(line, needle) {
  const text = line.logText;
  const body = line.querySelector(".text");
  if (!needle) {
    line.hidden = false;
    body.textContent = text;
    return true;
  }
  const lower = text.toLowerCase();
  let i = lower.indexOf(needle);
  line.hidden = i < 0;
  if (i < 0) {
    body.textContent = text;
    return false;
  }
  const parts = [];
  let from = 0;
  while (i >= 0) {
    parts.push(text.slice(from, i), el("mark", { text: text.slice(i, i + needle.length) }));
    from = i + needle.length;
    i = lower.indexOf(needle, from);
  }
  parts.push(text.slice(from));
  body.replaceChildren(...parts);
  return true;
}

function logsNeedle() {
  return $("logs-search").value.toLowerCase();
}

/** "3 of 10 lines match" while searching; nothing otherwise. */
function logsCount() {
  const needle = logsNeedle();
  const lines = $("logs-out").children;
  if (!needle) {
    $("logs-count").textContent = "";
    return;
  }
  let shown = 0;
  for (const l of lines) if (!l.hidden) shown++;
  $("logs-count").textContent = `${shown} of ${lines.length} line${lines.length === 1 ? "" : "s"} match`;
}

$("logs-search").addEventListener("input", () => {
  const needle = logsNeedle();
  for (const l of $("logs-out").children) filterLine(l, needle);
  logsCount();
});

/** The whole log as a file (with timestamps when they are shown), the browser's way. */
$("logs-download").addEventListener("click", (ev) => {
  ev.preventDefault();
  const params = { tail: "all" };
  if ($("logs-timestamps").checked) params.timestamps = "true";
  const name = (detail.container ? displayName(detail.container) : detail.cuid) + "-logs.txt";
  download(logsUrl(params), name).catch((e) => {
    $("logs-count").textContent = e.message;
  });
});

async function loadLogs() {
  if (detail.logsAbort) detail.logsAbort.abort();
  const abort = new AbortController();
  detail.logsAbort = abort;
  const out = $("logs-out");
  out.replaceChildren();
  out.classList.toggle("show-ts", $("logs-timestamps").checked);
  $("logs-empty").hidden = true;
  $("logs-count").textContent = "";
  const params = { format: "jsonl", tail: $("logs-tail").value || "200" };
  if ($("logs-follow").checked) params.follow = "true";
  try {
    const r = await fetch(logsUrl(params), {
      credentials: "same-origin", signal: abort.signal, headers: authHeaders(),
    });
    if (r.status === 401) {
      showSignIn("Your session has ended; sign in again.");
      return;
    }
    if (!r.ok) {
      let body = await r.text();
      try { body = JSON.parse(body); } catch (_) { /* text */ }
      out.append(el("span", { class: "stderr", text: errorText(body, r.status) }));
      return;
    }
    // Until the first line comes (a follow may wait long), the page says there is none.
    $("logs-empty").hidden = false;
    await readLines(r, (line) => {
      const needle = logsNeedle();
      if (!line.trim()) return;
      const rec = JSON.parse(line);
      const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      $("logs-empty").hidden = true;
      const l = logLine(rec);
      filterLine(l, needle);
      out.append(l);
      if (needle) logsCount();
      if (stick) out.scrollTop = out.scrollHeight;
    });
  } catch (e) {
    if (e.name !== "AbortError") out.append(el("span", { class: "stderr", text: String(e) }));
  }
}

// ------------------------------------------------------------------ terminal

function termClose() {
  const t = detail.term;
  detail.term = null;
  if (!t) return;
  t.closing = true;
  window.removeEventListener("resize", t.onResize);
  try { if (t.ws) t.ws.close(); } catch (_) { /* closed */ }
  t.xterm.dispose();
}

const TERM_FONT = '"DejaVu Sans Mono", "Liberation Mono", "Noto Sans Mono", ui-monospace, Menlo, Consolas, monospace';

async function termOpen() {
  termClose();
  const host = $("term");
  host.replaceChildren();
  const xterm = new Terminal({
    convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14,
    // A font in which `_` is drawn inside the cell (headless Chromium's default monospace
    // clips it, so `foo_bar` read as `foo bar`); DejaVu comes with Debian's chromium.
    fontFamily: TERM_FONT,
  });
  // No keyboard trap: every key goes to the shell, but Escape then Tab (or Shift+Tab)
  // leaves the terminal as Tab leaves any other field. Escape itself still reaches the shell.
  let escaped = false;
  xterm.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== "keydown") return true;
    if (ev.key === "Tab" && escaped) { escaped = false; return false; } // the browser moves focus
    escaped = ev.key === "Escape";
    return true;
  });
  const fit = new FitAddon.FitAddon();
  xterm.loadAddon(fit);
  xterm.open(host);
  fit.fit();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/ws/${encodeURIComponent(detail.cuid)}?cols=${xterm.cols}&rows=${xterm.rows}`;
  const t = { xterm, fit, ws: null, closing: false, onResize: null };
  detail.term = t;
  window.__term = xterm; // for the browser tests: read what the screen shows
  const status = $("term-status");
  status.textContent = "connecting…";
  status.dataset.code = "";
  let tk;
  try {
    tk = await ticket();
  } catch (e) {
    // A fetch that failed (the server is down or restarting) throws a TypeError: say so.
    status.textContent = e instanceof ApiError ? e.message : "The server cannot be reached; press Reconnect in a moment.";
    return;
  }
  if (detail.term !== t) return; // closed meanwhile
  const ws = new WebSocket(withTicket(url, tk));
  t.ws = ws;
  const send = (obj) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); };
  ws.onopen = () => {
    status.textContent = "connected";
    // Into the shell, unless the user is moving between tabs with the arrow keys.
    if (!(tabsByKey && document.activeElement && document.activeElement.getAttribute("role") === "tab")) xterm.focus();
  };
  ws.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    if (f.type === "stdout" || f.type === "stderr") {
      if (f.encoding === "base64") {
        xterm.write(Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0)));
      } else {
        xterm.write(f.data);
      }
    } else if (f.type === "exit") {
      status.textContent = `session ended, exit code ${f.code}`;
      xterm.write(`\r\n[exit code ${f.code}]\r\n`);
    } else if (f.type === "error") {
      // In plain words, never the raw frame; a stopped container gets what to do about it.
      const notRunning = f.error && f.error.code === "CONTAINER_NOT_RUNNING";
      const text = notRunning ? "Start the container to open a shell." : errorText(f.error, "");
      status.textContent = text;
      status.dataset.code = (f.error && f.error.code) || "";
      xterm.write(`\r\n${text}\r\n`);
    }
  };
  ws.onclose = () => {
    if (!t.closing && !status.textContent.startsWith("session ended") && !status.dataset.code) {
      status.textContent = "Disconnected. Press Reconnect to open a new shell.";
    }
  };
  // Every key goes to the shell as typed: Ctrl-C is the byte 0x03, which the terminal turns
  // into SIGINT for the foreground program.
  xterm.onData((data) => send({ type: "stdin", data, encoding: "utf8" }));
  xterm.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
  t.onResize = () => { try { fit.fit(); } catch (_) { /* hidden */ } };
  window.addEventListener("resize", t.onResize);
}

$("term-reconnect").addEventListener("click", termOpen);
$("term-ctrlc").addEventListener("click", () => {
  const t = detail.term;
  if (t && t.ws && t.ws.readyState === WebSocket.OPEN) t.ws.send(JSON.stringify({ type: "signal", name: "INT" }));
  if (t) t.xterm.focus();
});

// The Files tab is web/files.js.

// ------------------------------------------------------------------ tokens (operator)

/** A timestamp as the local date and time, or a dash. */
function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function tokenState(t) {
  if (t.revoked_at) return "revoked";
  if (t.expires_at && new Date(t.expires_at) <= new Date()) return "expired";
  return "active";
}

async function openTokens() {
  showPage("tokens");
  $("token-form-error").textContent = "";
  $("token-secret").hidden = !$("token-secret-value").value;
  await Promise.all([loadTokens(), loadTenantChoices()]);
}

/** The tenant choices of the token form. */
async function loadTenantChoices() {
  const select = $("t-tenant");
  const keep = select.value;
  try {
    const r = await api("GET", "/tenants");
    select.replaceChildren(el("option", { value: "", text: "none (every container)" }));
    for (const t of r.data.tenants) select.append(el("option", { value: t.name, text: t.name }));
    select.value = keep;
    if (select.value !== keep) select.value = "";
  } catch (e) {
    $("token-form-error").textContent = e.message;
  }
}

async function loadTokens() {
  try {
    const r = await api("GET", "/tokens");
    $("tokens-error").textContent = "";
    const body = $("tokens-body");
    body.replaceChildren();
    // Live ones first, newest first within each group.
    const rows = [...r.data.tokens].sort((a, b) =>
      (tokenState(a) !== "active") - (tokenState(b) !== "active") ||
      String(b.created_at).localeCompare(String(a.created_at)));
    for (const t of rows) body.append(tokenRow(t));
    $("tokens-empty").hidden = rows.length > 0;
  } catch (e) {
    $("tokens-error").textContent = e.message;
  }
}

function tokenRow(t) {
  const state = tokenState(t);
  const revoke = state === "revoked" ? null : el("button", {
    type: "button", class: "danger", text: "Revoke", "data-revoke": t.id,
    onclick: () => revokeToken(t),
  });
  return el("tr", { "data-token": t.id, "data-name": t.name },
    el("td", { text: t.name, title: t.id }),
    el("td", { text: t.scope }),
    el("td", { text: t.tenant || "—" }),
    el("td", { text: when(t.created_at) }),
    el("td", { text: t.expires_at ? when(t.expires_at) : "never" }),
    el("td", { text: t.last_used_at ? when(t.last_used_at) : "never" }),
    el("td", { class: "token-state state-" + state, text: state }),
    el("td", {}, revoke));
}

async function revokeToken(t) {
  if (!confirm(`Revoke the token "${t.name}"? Every program using it is refused from now on. This cannot be undone.`)) return;
  try {
    await api("DELETE", "/tokens/" + encodeURIComponent(t.id));
    flash(`Token "${t.name}" revoked.`);
  } catch (e) {
    $("tokens-error").textContent = e.message;
  }
  loadTokens();
}

$("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("token-form-error").textContent = "";
  const expires = $("t-expiry").value;
  const body = {
    name: $("t-name").value.trim(),
    scope: $("t-scope").value,
    tenant: $("t-tenant").value || null,
    expires_in: expires ? Number(expires) : null,
  };
  if (body.tenant && body.scope === "admin") {
    $("token-form-error").textContent = "A tenant's token cannot be admin: choose write or less, or no tenant.";
    return;
  }
  $("token-create").disabled = true;
  try {
    const r = await api("POST", "/tokens", { json: body });
    showSecret(r.data.name, r.data.token);
    $("t-name").value = "";
    loadTokens();
  } catch (e) {
    $("token-form-error").textContent = e.message;
  } finally {
    $("token-create").disabled = false;
  }
});

/** Shows a new token's secret, this once; it is cleared when the page is left. */
function showSecret(name, secret) {
  $("token-secret-name").textContent = `"${name}"`;
  $("token-secret-value").value = secret;
  $("token-copy-status").textContent = "";
  $("token-secret").hidden = false;
  $("token-secret-value").select();
}

$("token-copy").addEventListener("click", async () => {
  const input = $("token-secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (_) {
    // No clipboard API (plain HTTP on another host): the old way, on the selected text.
    input.select();
    if (!document.execCommand("copy")) {
      $("token-copy-status").textContent = "Copying failed: select the token and copy it by hand.";
      return;
    }
  }
  $("token-copy-status").textContent = "Copied.";
});

$("token-secret-done").addEventListener("click", () => {
  $("token-secret-value").value = "";
  $("token-secret").hidden = true;
});

// ------------------------------------------------------------------ tenants (operator)

const QUOTA_FIELDS = ["max_containers", "max_running", "max_cpus", "max_memory", "max_pids", "max_disk", "ports", "requests_per_second"];
const tenants = { list: [], editing: null };

/** "used / limit", or "used / no limit". */
function against(used, limit, fmt) {
  const f = fmt || String;
  return `${f(used)} / ${limit === null || limit === undefined ? "no limit" : f(limit)}`;
}

function cpusText(n) {
  return String(Math.round(n * 100) / 100);
}

/** Bytes as the shortest size the API reads back (`8g`, `512m`), for the form. */
function sizeText(bytes) {
  for (const [unit, m] of [["g", 1 << 30], ["m", 1 << 20], ["k", 1 << 10]]) {
    if (bytes % m === 0) return `${bytes / m}${unit}`;
  }
  return String(bytes);
}

async function openTenants() {
  showPage("tenants");
  editTenant(null);
  await loadTenants();
}

async function loadTenants() {
  try {
    const r = await api("GET", "/tenants");
    $("tenants-error").textContent = "";
    tenants.list = r.data.tenants;
    const body = $("tenants-body");
    body.replaceChildren();
    for (const t of tenants.list) body.append(tenantRow(t));
    $("tenants-empty").hidden = tenants.list.length > 0;
  } catch (e) {
    $("tenants-error").textContent = e.message;
  }
}

function tenantRow(t) {
  const q = t.quotas;
  const u = t.usage;
  return el("tr", { "data-tenant": t.name },
    el("th", { scope: "row", text: t.name }),
    el("td", { "data-usage": "containers", text: against(u.containers, q.max_containers) }),
    el("td", { "data-usage": "running", text: against(u.running, q.max_running) }),
    el("td", { "data-usage": "cpus", text: against(u.cpus, q.max_cpus, cpusText) }),
    el("td", { "data-usage": "memory", text: against(u.memory, q.max_memory, humanSize) }),
    el("td", { "data-usage": "pids", text: against(u.pids, q.max_pids) }),
    el("td", { "data-usage": "disk", text: against(u.disk, q.max_disk, humanSize) }),
    el("td", { text: q.ports || "any" }),
    el("td", { text: q.requests_per_second === null ? "no limit" : String(q.requests_per_second) }),
    el("td", {},
      el("button", { type: "button", text: "Edit", onclick: () => editTenant(t) }),
      " ",
      el("button", { type: "button", class: "danger", text: "Delete", onclick: () => deleteTenant(t) })));
}

/** Fills the form with `t`'s quotas to edit them, or empties it for a new tenant. */
function editTenant(t) {
  tenants.editing = t ? t.name : null;
  $("tenant-form-error").textContent = "";
  $("tenant-form-title").textContent = t ? `Quotas of ${t.name}` : "New tenant";
  $("tenant-save").textContent = t ? "Save quotas" : "Create tenant";
  $("tenant-cancel").hidden = !t;
  $("q-name").value = t ? t.name : "";
  $("q-name").readOnly = !!t;
  for (const f of QUOTA_FIELDS) {
    const v = t ? t.quotas[f] : null;
    $("q-" + f).value = v === null || v === undefined ? "" : f === "max_memory" || f === "max_disk" ? sizeText(v) : String(v);
  }
  if (t) $("q-max_containers").focus();
}

$("tenant-cancel").addEventListener("click", () => editTenant(null));

$("tenant-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("tenant-form-error").textContent = "";
  const name = $("q-name").value.trim();
  if (!tenants.editing && tenants.list.some((t) => t.name === name)) {
    $("tenant-form-error").textContent = `There is a tenant ${name} already: use its Edit button to change its quotas.`;
    return;
  }
  const body = {};
  for (const f of QUOTA_FIELDS) {
    const v = $("q-" + f).value.trim();
    // Numbers go as numbers; anything else as typed, so the API's message says what is wrong.
    const numeric = f !== "ports" && f !== "max_memory" && f !== "max_disk" && v !== "" && !isNaN(Number(v));
    body[f] = v === "" ? null : numeric ? Number(v) : v;
  }
  $("tenant-save").disabled = true;
  try {
    const r = await api("PUT", "/tenants/" + encodeURIComponent(name), { json: body });
    flash(r.status === 201 ? `Tenant ${name} created.` : `Quotas of ${name} saved.`);
    editTenant(null);
    await loadTenants();
  } catch (e) {
    $("tenant-form-error").textContent = e.message;
  } finally {
    $("tenant-save").disabled = false;
  }
});

async function deleteTenant(t) {
  if (!confirm(`Delete the tenant ${t.name} and all its tokens?`)) return;
  try {
    await api("DELETE", "/tenants/" + encodeURIComponent(t.name));
    flash(`Tenant ${t.name} deleted.`);
  } catch (e) {
    $("tenants-error").textContent = e.body && e.body.code === "TENANT_NOT_EMPTY"
      ? `${t.name} still owns containers; delete them first.` : e.message;
  }
  await loadTenants();
}

// ------------------------------------------------------------------ start

// After every script of the page has run (list.js and others define what route() calls).
window.addEventListener("DOMContentLoaded", async () => {
  const missing = await loadFailedScripts();
  if (missing.length) {
    // Better said than a console that fails later in odd places.
    flash(`The console could not load ${missing.map((src) => new URL(src).pathname).join(", ")}; ` +
      "check the connection and reload the page.");
    return;
  }
  let who = null;
  try {
    who = await checkSession();
  } catch (_) {
    /* the server cannot be reached: sign in (which says so) */
  }
  if (who) onSignedIn(who);
  else showSignIn("");
});

// ------------------------------------------------------------------ webhooks

function listOf(text) {
  return text.split(",").map((x) => x.trim()).filter((x) => x);
}

async function openWebhooks() {
  showPage("webhooks");
  $("webhook-form-error").textContent = "";
  $("deliveries").hidden = true;
  await loadWebhooks();
}

async function loadWebhooks() {
  try {
    const r = await api("GET", "/webhooks");
    $("webhooks-error").textContent = "";
    const body = $("webhooks-body");
    body.replaceChildren();
    for (const w of r.data.webhooks) body.append(webhookRow(w));
    $("webhooks-empty").hidden = r.data.webhooks.length > 0;
  } catch (e) {
    $("webhooks-error").textContent = e.message;
  }
}

function webhookRow(w) {
  return el("tr", { "data-webhook": w.id },
    el("td", { text: w.url, title: w.id }),
    el("td", { text: w.events.join(", ") }),
    el("td", { text: w.tags ? w.tags.join(", ") : "any" }),
    el("td", { text: w.tenant || "—" }),
    el("td", { text: String(w.pending) }),
    el("td", { text: when(w.created_at) }),
    el("td", {},
      el("button", { type: "button", text: "Deliveries", onclick: () => showDeliveries(w) }),
      el("button", { type: "button", class: "danger", text: "Delete", onclick: () => deleteWebhook(w) })));
}

async function showDeliveries(w) {
  try {
    const r = await api("GET", "/webhooks/" + encodeURIComponent(w.id) + "/deliveries");
    $("deliveries-url").textContent = w.url;
    const body = $("deliveries-body");
    body.replaceChildren();
    for (const d of r.data.deliveries) {
      body.append(el("tr", {},
        el("td", { text: when(d.at) }),
        el("td", { text: d.event }),
        el("td", { text: d.cuid }),
        el("td", { text: String(d.attempt) }),
        el("td", { text: d.status_code === null ? "—" : String(d.status_code) }),
        el("td", { text: d.latency_ms + " ms" }),
        el("td", { text: d.outcome }),
        el("td", { text: d.error || "" })));
    }
    $("deliveries-empty").hidden = r.data.deliveries.length > 0;
    $("deliveries").hidden = false;
  } catch (e) {
    $("webhooks-error").textContent = e.message;
  }
}

$("deliveries-close").addEventListener("click", () => { $("deliveries").hidden = true; });

async function deleteWebhook(w) {
  if (!confirm(`Delete the webhook to ${w.url}? Its undelivered events are dropped.`)) return;
  try {
    await api("DELETE", "/webhooks/" + encodeURIComponent(w.id));
    flash("Webhook deleted.");
  } catch (e) {
    $("webhooks-error").textContent = e.message;
  }
  $("deliveries").hidden = true;
  loadWebhooks();
}

$("webhook-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("webhook-form-error").textContent = "";
  const tags = listOf($("w-tags").value);
  const body = {
    url: $("w-url").value.trim(),
    events: listOf($("w-events").value),
    tags: tags.length ? tags : null,
    secret: $("w-secret").value,
  };
  $("webhook-create").disabled = true;
  try {
    await api("POST", "/webhooks", { json: body });
    $("w-url").value = "";
    $("w-secret").value = "";
    flash("Webhook created.");
    loadWebhooks();
  } catch (e) {
    $("webhook-form-error").textContent = e.message;
  } finally {
    $("webhook-create").disabled = false;
  }
});
