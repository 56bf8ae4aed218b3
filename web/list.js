// The list page's filters and page in the URL, its empty states, its cells that never break
// inside a word, and bulk actions on a selection (issue 23). Loaded after app.js, whose
// helpers (`$`, `el`, `api`, `list`, `loadList`, `can`, `displayName`) it uses.
"use strict";

// ------------------------------------------------------------------ filters and page in the URL

/**
 * The hash route of the list with `state`'s filters and page:
 * `#/?q=team&status=running&tag=web&page=2&cursor=…` (only what is set; the first page
 * without filters is plain `#/`). The cursor is the API's opaque `next_cursor` of the page
 * before, so a reload or Back shows the same page.
 */
function listHash(state) {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.status) p.set("status", state.status);
  if (state.tag) p.set("tag", state.tag);
  const cursor = state.cursor !== undefined ? state.cursor : state.cursors && state.cursors[state.page];
  if (state.page > 0 && cursor) {
    p.set("page", String(state.page + 1));
    p.set("cursor", cursor);
  }
  const qs = p.toString();
  return "#/" + (qs ? "?" + qs : "");
}

/** Shows the list with `state` through the URL (a history entry: Back returns). */
function goList(state) {
  const target = listHash(state);
  const now = location.hash || "#/";
  if (now === target) loadList();
  else location.hash = target;
}

/** The list's route (`#/?…`): takes filters and page from the URL, then loads. */
function openList(params) {
  const q = (params.get("q") || "").trim();
  const status = (params.get("status") || "").trim();
  const tag = (params.get("tag") || "").trim();
  const page = Math.max(1, parseInt(params.get("page"), 10) || 1) - 1;
  const cursor = params.get("cursor");
  if (q !== list.q || status !== list.status || tag !== list.tag) {
    list.cursors = [null];
  }
  const samePage = q === list.q && status === list.status && tag === list.tag &&
    (page > 0 && cursor ? page === list.page && list.cursors[page] === cursor : list.page === 0);
  if (!samePage) list.selected.clear();
  list.q = q;
  list.status = status;
  list.tag = tag;
  if (page > 0 && cursor) {
    list.page = page;
    list.cursors[page] = cursor;
  } else {
    list.page = 0;
  }
  $("filter-q").value = q;
  $("filter-status").value = status;
  $("filter-tag").value = tag;
  $("bulk-confirm").hidden = true;
  loadList();
}

function filtersFromForm() {
  return {
    q: $("filter-q").value.trim(),
    status: $("filter-status").value,
    tag: $("filter-tag").value.trim(),
    page: 0,
  };
}

$("filter-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  goList(filtersFromForm());
});
// A status picked is a filter applied (the text fields wait for Enter or the button).
$("filter-status").addEventListener("change", () => goList(filtersFromForm()));
$("page-first").addEventListener("click", () => goList({ ...list, page: 0 }));
$("page-prev").addEventListener("click", () => {
  if (list.page === 0) return;
  goList({ ...list, page: list.page - 1 });
});
$("page-next").addEventListener("click", () => {
  if (!list.next) return;
  list.cursors[list.page + 1] = list.next;
  goList({ ...list, page: list.page + 1, cursor: list.next });
});
$("clear-filters").addEventListener("click", () => {
  goList({ q: "", status: "", tag: "", page: 0 });
  $("filter-q").focus();
});

/**
 * Whether `c` still matches the search `q` as the API's `?q=` does: its name, image (or the
 * image's last path part) or a tag starts with `q`, ignoring case. A live update of a row that
 * no longer matches reloads the page instead of updating the row in place.
 */
function matchesSearch(c, q) {
  if (!q) return true;
  const p = q.toLowerCase();
  const image = (c.image || "").toLowerCase();
  const words = [(c.name || "").toLowerCase(), image, image.slice(image.lastIndexOf("/") + 1)];
  for (const t of c.tags || []) words.push(t.toLowerCase());
  return words.some((w) => w.startsWith(p));
}

// ------------------------------------------------------------------ empty states

/** What the filters are, in words: `the search "team", status running and tag web`. */
function filtersText() {
  const parts = [];
  if (list.q) parts.push(`the search "${list.q}"`);
  if (list.status) parts.push(`status ${list.status}`);
  if (list.tag) parts.push(`tag ${list.tag}`);
  if (parts.length < 2) return parts.join("");
  return parts.slice(0, -1).join(", ") + " and " + parts[parts.length - 1];
}

/**
 * No rows: "No containers yet." (with Create for who may) when nothing is filtered on the
 * first page; "No container matches …" with Clear filters when filters hide them all; an
 * emptied later page offers the first page.
 */
function listEmptyStates(rows, filtered) {
  const none = rows === 0;
  $("list-empty").hidden = !(none && !filtered && list.page === 0);
  $("list-nomatch").hidden = !(none && (filtered || list.page > 0));
  $("list-table").hidden = none;
  if (none && filtered) {
    $("list-nomatch-text").textContent = `No container matches ${filtersText()}.`;
    $("clear-filters").textContent = "Clear filters";
  } else if (none && list.page > 0) {
    $("list-nomatch-text").textContent = "This page is empty now (its containers were deleted).";
    $("clear-filters").textContent = "Go to the first page";
  }
}

// ------------------------------------------------------------------ cells

/** An empty cell's content: a dash (the cell is still there). */
function dash() {
  return el("span", { class: "muted", text: "—" });
}

/**
 * `text` with line-break opportunities after `/`, `:` and `@` only (an image reference such as
 * `registry:5000/team/busybox:1` may wrap between its parts, never inside a word).
 */
function breakableAt(text) {
  const frag = document.createDocumentFragment();
  for (const part of text.split(/(?<=[/:@])/)) frag.append(part, el("wbr"));
  return frag;
}

/** Labels each cell of `tr` with its column's header text (shown by the narrow-screen cards). */
function labelCells(tr) {
  const heads = $("list-table").tHead.rows[0].cells;
  [...tr.cells].forEach((td, i) => {
    if (!td.dataset.label && heads[i]) td.dataset.label = heads[i].textContent.trim();
  });
  return tr;
}

/** The select box of a row (for operate and above; hidden with the column otherwise). */
function selectCell(c) {
  const box = el("input", { type: "checkbox", class: "row-select", "data-cuid": c.cuid });
  box.checked = list.selected.has(c.cuid);
  box.addEventListener("change", () => {
    if (box.checked) list.selected.set(c.cuid, displayName(c));
    else list.selected.delete(c.cuid);
    bulkSync();
  });
  return el("td", { class: "col-select", "data-label": "Select" },
    el("label", { class: "select-box" }, box,
      el("span", { class: "visually-hidden", text: `Select ${displayName(c)}` })));
}

/** Characters of a last error shown before "…"; the rest is behind "more". */
const ERROR_SHORT = 80;

/** The start of `text`, cut at a word boundary near `n` characters, with an ellipsis. */
function shortText(text, n) {
  if (text.length <= n) return text;
  const cut = text.lastIndexOf(" ", n);
  return text.slice(0, cut > n / 2 ? cut : n).trimEnd() + "…";
}

/**
 * The last error: short ones as they are; a long one truncated, with its full text on demand
 * (a disclosure that keeps its state across live updates of the row).
 */
function errorCell(c) {
  // Not the class "error": an empty `.error` is hidden, and this cell must stay.
  const td = el("td", { class: "col-error" });
  const e = c.last_error;
  if (!e) return td;
  if (e.code) td.dataset.code = e.code;
  const msg = e.message || e.code || "";
  if (msg.length <= ERROR_SHORT) {
    td.textContent = msg;
    return td;
  }
  const more = el("details", { class: "err-more" },
    el("summary", {},
      el("span", { class: "err-short", text: shortText(msg, ERROR_SHORT) }),
      el("span", { class: "err-toggle", text: " more" }),
      el("span", { class: "err-less", text: "less" })),
    el("p", { class: "err-full", text: msg }));
  more.open = list.openErrors.has(c.cuid);
  more.addEventListener("toggle", () => {
    if (more.open) list.openErrors.add(c.cuid);
    else list.openErrors.delete(c.cuid);
  });
  td.append(more);
  return td;
}

// ------------------------------------------------------------------ bulk actions

/** Drops from the selection rows no longer shown; updates the select-all box and the toolbar. */
function bulkSync() {
  const boxes = [...document.querySelectorAll("#list-body .row-select")];
  const shown = new Set(boxes.map((b) => b.dataset.cuid));
  for (const cuid of [...list.selected.keys()]) if (!shown.has(cuid)) list.selected.delete(cuid);
  const n = list.selected.size;
  const all = $("select-page");
  all.checked = boxes.length > 0 && n === boxes.length;
  all.indeterminate = n > 0 && n < boxes.length;
  all.disabled = boxes.length === 0 || list.busy;
  $("bulk-count").textContent = n === 0 ? "None selected" : `${n} selected`;
  for (const id of ["bulk-start", "bulk-stop", "bulk-delete"]) $(id).disabled = n === 0 || list.busy;
}

$("select-page").addEventListener("change", () => {
  const on = $("select-page").checked;
  for (const box of document.querySelectorAll("#list-body .row-select")) {
    box.checked = on;
    const name = box.closest("tr").querySelector(".col-name a").textContent;
    if (on) list.selected.set(box.dataset.cuid, name);
    else list.selected.delete(box.dataset.cuid);
  }
  bulkSync();
});

// Each request is sent again when the network cut it (app.js fetchRetrying): start and stop
// ask for a state, and a delete whose first try went through finds the container gone,
// which is what was asked (a 404 counts as deleted).
const BULK = {
  start: { doing: "Starting", done: "Started", call: (cuid) => api("POST", `/containers/${cuid}/start`, { retry: true }) },
  stop: { doing: "Stopping", done: "Stopped", call: (cuid) => api("POST", `/containers/${cuid}/stop`, { retry: true }) },
  delete: {
    doing: "Deleting", done: "Deleted",
    call: (cuid) => api("DELETE", `/containers/${cuid}`, { retry: true })
      .catch((e) => { if (!(e instanceof ApiError && e.status === 404)) throw e; }),
  },
};

/** How many requests of a bulk action run at once (each waits until its container converged). */
const BULK_PARALLEL = 4;

/**
 * Runs `action` on every selected container, a few at a time, saying how far it got
 * ("Stopping 3 of 7…"), then which ones failed and why, in the API's words. The ones that
 * failed stay selected, to try again.
 */
async function bulkRun(action, chosen) {
  const what = BULK[action];
  const targets = chosen || [...list.selected.entries()];
  if (!targets.length || list.busy) return;
  list.busy = true;
  $("bulk-result").replaceChildren();
  bulkSync();
  let started = 0;
  let finished = 0;
  const failed = [];
  const progress = () => {
    $("bulk-progress").textContent = `${what.doing} ${Math.min(started, targets.length)} of ${targets.length}…`;
  };
  progress();
  const queue = targets.slice();
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [cuid, name] = next;
      started += 1;
      progress();
      try {
        await what.call(encodeURIComponent(cuid));
        list.selected.delete(cuid);
      } catch (e) {
        if (action === "delete" && e.status === 404) list.selected.delete(cuid); // already gone
        else failed.push({ cuid, name, message: e.message, code: e.code });
      }
      finished += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(BULK_PARALLEL, targets.length) }, worker));
  list.busy = false;
  $("bulk-progress").textContent = "";
  const ok = finished - failed.length;
  const result = $("bulk-result");
  result.className = failed.length ? "bulk-result failed" : "bulk-result";
  result.append(el("p", { text: `${what.done} ${ok} of ${targets.length}.` +
    (failed.length ? ` ${failed.length} failed:` : "") }));
  if (failed.length) {
    const ul = el("ul", { class: "bulk-failed" });
    for (const f of failed) {
      ul.append(el("li", { "data-cuid": f.cuid, "data-code": f.code || "" },
        el("strong", { text: f.name }), `: ${f.message}`));
    }
    result.append(ul);
  }
  await loadList();
}

$("bulk-start").addEventListener("click", () => bulkRun("start"));
$("bulk-stop").addEventListener("click", () => bulkRun("stop"));
// The selection the delete prompt named (what Delete then deletes, whatever changes meanwhile).
let bulkConfirming = [];

$("bulk-delete").addEventListener("click", () => {
  // Asked in the page: how many and which, with Cancel focused first.
  bulkConfirming = [...list.selected.entries()];
  const names = bulkConfirming.map(([, name]) => name);
  if (!names.length) return;
  $("bulk-confirm-title").textContent =
    `Delete ${names.length} container${names.length === 1 ? "" : "s"}?`;
  $("bulk-confirm-names").replaceChildren(...names.map((n) => el("li", { text: n })));
  $("bulk-confirm-yes").textContent = `Delete ${names.length}`;
  // As for one container (create.js confirmDelete): running ones need a typed confirmation.
  const running = bulkConfirming.filter(([cuid]) => rowRuns(cuid)).length;
  $("bulk-confirm-running").hidden = running === 0;
  $("bulk-confirm-running-label").textContent =
    `${running} of them ${running === 1 ? "is" : "are"} running: type delete to confirm.`;
  $("bulk-confirm-typed").value = "";
  $("bulk-confirm-yes").disabled = running > 0;
  $("bulk-confirm").hidden = false;
  $("bulk-confirm-no").focus();
});
$("bulk-confirm-typed").addEventListener("input", () => {
  $("bulk-confirm-yes").disabled = $("bulk-confirm-typed").value.trim() !== "delete";
});

/** Whether the shown row of `cuid` runs (wanted running, or running, paused, restarting). */
function rowRuns(cuid) {
  const row = [...$("list-body").children].find((r) => r.dataset.cuid === cuid);
  if (!row) return true; // not shown any more: ask, to be safe
  const status = row.querySelector(".col-status")?.dataset.status;
  const desired = row.querySelector(".col-desired")?.dataset.desired;
  return desired === "running" || ["running", "paused", "restarting"].includes(status);
}
$("bulk-confirm-no").addEventListener("click", () => {
  $("bulk-confirm").hidden = true;
  $("bulk-delete").focus();
});
$("bulk-confirm").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") $("bulk-confirm-no").click();
});
$("bulk-confirm-yes").addEventListener("click", () => {
  $("bulk-confirm").hidden = true;
  bulkRun("delete", bulkConfirming);
});
