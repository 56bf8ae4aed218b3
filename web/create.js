// The create/edit form's helpers and the delete dialog (issue 23), loaded after app.js and
// using its helpers ($, el, api, displayName, form). Same rules: text only via textContent.
"use strict";

// ------------------------------------------------------------------ image choices

/** The image tags on this host (`GET /images`), offered under the image input as it is
 *  typed in (a combobox: ArrowDown/ArrowUp move, Enter or a click picks, Escape closes);
 *  any other reference may still be typed. Without the list the input still works. */
const imagePick = { all: [], shown: [], active: -1 };

async function loadImageChoices() {
  imagePick.all = [];
  closeImageChoices();
  try {
    const r = await api("GET", "/images");
    const tags = new Set();
    for (const i of r.data.images || []) for (const t of i.tags || []) if (!t.includes("<none>")) tags.add(t);
    imagePick.all = [...tags].sort();
    $("f-image-choices").dataset.loaded = String(imagePick.all.length);
  } catch (_) { /* free text only */ }
}

function closeImageChoices() {
  const list = $("f-image-choices");
  list.hidden = true;
  list.replaceChildren();
  imagePick.shown = [];
  imagePick.active = -1;
  $("f-image").setAttribute("aria-expanded", "false");
  $("f-image").removeAttribute("aria-activedescendant");
}

/** Shows the images whose reference holds what is typed (all of them for an empty input). */
function openImageChoices() {
  const typed = $("f-image").value.trim().toLowerCase();
  const shown = imagePick.all.filter((t) => t.toLowerCase().includes(typed)).slice(0, 12);
  if (!shown.length || (shown.length === 1 && shown[0] === $("f-image").value.trim())) {
    closeImageChoices();
    return;
  }
  imagePick.shown = shown;
  imagePick.active = -1;
  const list = $("f-image-choices");
  list.replaceChildren(...shown.map((t, i) => el("li", {
    id: "f-image-choice-" + i, role: "option", "aria-selected": "false", "data-value": t, text: t,
    // mousedown, not click: the input keeps its focus.
    onmousedown: (ev) => { ev.preventDefault(); pickImage(t); },
  })));
  list.hidden = false;
  $("f-image").setAttribute("aria-expanded", "true");
}

function pickImage(t) {
  $("f-image").value = t;
  closeImageChoices();
  $("f-image").dispatchEvent(new Event("input", { bubbles: true }));
}

function moveImageChoice(step) {
  const n = imagePick.shown.length;
  if (!n) return;
  imagePick.active = (imagePick.active + step + n) % n;
  for (const [i, li] of [...$("f-image-choices").children].entries()) {
    li.setAttribute("aria-selected", String(i === imagePick.active));
  }
  $("f-image").setAttribute("aria-activedescendant", "f-image-choice-" + imagePick.active);
}

$("f-image").addEventListener("input", (ev) => { if (ev.isTrusted) openImageChoices(); });
$("f-image").addEventListener("focus", openImageChoices);
$("f-image").addEventListener("blur", closeImageChoices);
$("f-image").addEventListener("keydown", (ev) => {
  const open = !$("f-image-choices").hidden;
  if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    ev.preventDefault();
    if (!open) openImageChoices();
    moveImageChoice(ev.key === "ArrowDown" ? 1 : -1);
  } else if (ev.key === "Enter" && open && imagePick.active >= 0) {
    // Picks the choice; the form is not submitted by this Enter.
    ev.preventDefault();
    pickImage(imagePick.shown[imagePick.active]);
  } else if (ev.key === "Escape" && open) {
    ev.preventDefault();
    closeImageChoices();
  }
});

// ------------------------------------------------------------------ edit: what recreates it

/** The fields of a spec whose change the server applies without a new container: the name,
 *  the idle policy and auto_update (store's write_spec: no new generation). Any other change
 *  makes a new generation, which recreates a running container. */
const NO_RECREATE = new Set(["name", "idle", "auto_update", "lifetime"]);

/** Words for a field of the form. */
const FIELD_WORDS = {
  name: "name", image: "image", command: "command", env: "environment", tags: "tags",
  resources: "resources", restart: "restart policy", isolation: "isolation",
  read_only: "read-only root", network: "egress", idle: "idle policy", health: "health check",
  ports: "ports",
};

/** The spec fields a save would change, from what the form holds now (null when the form
 *  cannot be read: the errors show on submit). */
function changedFields() {
  if (!form.cuid || !form.original) return null;
  let spec;
  try { spec = readForm(); } catch (_) { return null; }
  const { patch, ports } = editPatch(spec, form.original);
  const fields = Object.keys(patch);
  if (ports) fields.push("ports");
  return fields;
}

/** Whether the container runs now, so that a new generation restarts it. */
function runsNow(c) {
  return c && (c.desired_state === "running" || ["running", "paused", "restarting"].includes(c.status));
}

/** The warning under the edit form: which of the changes recreate the container. */
function updateRecreateWarning() {
  const w = $("form-warning");
  const fields = form.cuid ? changedFields() : null;
  const recreating = (fields || []).filter((f) => !NO_RECREATE.has(f));
  if (!recreating.length) {
    w.hidden = true;
    w.textContent = "";
    delete w.dataset.recreates;
    if (form.cuid) $("form-submit").textContent = "Save";
    return;
  }
  const what = recreating.map((f) => FIELD_WORDS[f] || f).join(", ");
  const running = runsNow(form.original);
  w.textContent = running
    ? `Saving recreates this container (changed: ${what}): it restarts, its processes and /tmp are lost; /app is kept.`
    : `Saving changes what the container is made from (${what}); it takes effect at the next start.`;
  w.dataset.recreates = running ? "restart" : "next-start";
  w.hidden = false;
  $("form-submit").textContent = running ? "Save and restart" : "Save";
}

/** A field the user changes after an error is no longer marked; its message goes when no
 *  other field it is about is still marked (the resources share one line). */
function unmarkEdited(input) {
  if (!input || input.getAttribute("aria-invalid") !== "true") return;
  input.removeAttribute("aria-invalid");
  const slot = input.getAttribute("aria-describedby");
  if (slot && !document.querySelector(`#spec-form [aria-invalid=true][aria-describedby="${slot}"]`)) showError(slot, null);
}

$("spec-form").addEventListener("input", (ev) => {
  if (ev.isTrusted) unmarkEdited(ev.target);
  if (form.cuid) updateRecreateWarning();
});
$("spec-form").addEventListener("change", () => { if (form.cuid) updateRecreateWarning(); });

// ------------------------------------------------------------------ edit: 412

/** Values of a container as the form shows them, per field (for "what changed"). */
function shownValues(c) {
  return {
    name: c.name || "", image: c.image, command: c.command ? joinWords(c.command) : "",
    env: Object.entries(c.env || {}).map(([k, v]) => `${k}=${v}`).join(", "),
    tags: (c.tags || []).join(", "),
    resources: ["cpus", "memory", "pids", "disk", "tmp"].filter((k) => c.resources[k] != null).map((k) => `${k} ${c.resources[k]}`).join(", "),
    ports: (c.ports || []).map(portText).join(", "), restart: c.restart, isolation: c.isolation,
    read_only: c.read_only ? "yes" : "no",
    network: c.network.egress + (c.network.allow && c.network.allow.length ? " " + c.network.allow.join(", ") : ""),
    idle: c.idle ? `${c.idle.after} s, ${c.idle.action}` : "none",
    health: c.health_check ? (c.health_check.http ? `HTTP :${c.health_check.http.port}` : joinWords(c.health_check.cmd || [])) : "none",
  };
}

/** 412: someone else saved first. What the user typed stays in the form; the page says
 *  which fields they changed (and to what); Save again applies the form over theirs. */
async function keepTypedAfterConflict() {
  const before = form.original;
  const r = await api("GET", "/containers/" + encodeURIComponent(form.cuid));
  form.etag = r.headers.get("etag");
  form.original = r.data;
  const old = shownValues(before);
  const now = shownValues(r.data);
  const changed = Object.keys(now).filter((k) => now[k] !== old[k]);
  const list = changed.map((k) => `${FIELD_WORDS[k] || k}: now ${now[k] || "(empty)"}`);
  const box = $("form-error");
  box.textContent =
    `Someone else changed this container while you were editing (now generation ${r.data.generation}). ` +
    (list.length ? `They changed ${list.join("; ")}. ` : "") +
    "Your values are still in the form: Save again to apply them, or Cancel to keep theirs.";
  box.dataset.code = "STALE_GENERATION";
  box.dataset.changed = changed.join(" ");
  for (const k of changed) {
    const input = $("f-" + k) || $("f-" + (FIELD_INPUT[k] || k));
    if (input) input.dataset.theirs = now[k];
  }
  updateRecreateWarning();
  box.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------ delete dialog

const delDialog = { resolve: null, returnTo: null, expected: "" };

/** Asks, in the page, whether to delete `c`. A running one needs its name typed (its cuid
 *  when it has none). Resolves true for Delete; Escape or Cancel resolve false. Focus stays
 *  in the dialog while it is open and goes back where it was after. */
function confirmDelete(c, cuid) {
  const d = $("delete-dialog");
  const shown = c ? displayName(c) : cuid;
  const mustType = !!c && runsNow(c);
  delDialog.expected = mustType ? (c.name || c.cuid) : "";
  delDialog.returnTo = document.activeElement;
  $("delete-title").textContent = `Delete ${shown}?`;
  $("delete-text").textContent = mustType
    ? `${shown} is running. Deleting stops it and removes it with all its files in /app. This cannot be undone.`
    : `This removes ${shown} with all its files in /app. This cannot be undone.`;
  $("delete-typed-row").hidden = !mustType;
  $("delete-expected").textContent = delDialog.expected;
  $("delete-typed").value = "";
  $("delete-ok").disabled = mustType;
  return new Promise((resolve) => {
    delDialog.resolve = resolve;
    if (typeof d.showModal === "function") d.showModal(); else d.setAttribute("open", "");
    (mustType ? $("delete-typed") : $("delete-cancel")).focus();
  });
}

function closeDelete(answer) {
  const d = $("delete-dialog");
  if (!delDialog.resolve) return;
  const resolve = delDialog.resolve;
  delDialog.resolve = null;
  if (d.open) d.close();
  const back = delDialog.returnTo;
  if (back && document.contains(back) && typeof back.focus === "function") back.focus();
  resolve(answer);
}

$("delete-typed").addEventListener("input", () => {
  $("delete-ok").disabled = $("delete-typed").value.trim() !== delDialog.expected;
});
$("delete-cancel").addEventListener("click", () => closeDelete(false));
$("delete-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!$("delete-ok").disabled) closeDelete(true);
});
// Escape: the browser's `cancel` on a modal dialog, and our own for the fallback.
$("delete-dialog").addEventListener("cancel", (ev) => { ev.preventDefault(); closeDelete(false); });
$("delete-dialog").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") { ev.preventDefault(); closeDelete(false); return; }
  if (ev.key !== "Tab") return;
  // Focus is trapped: Tab past the last control goes to the first, Shift+Tab the other way.
  const items = [...$("delete-dialog").querySelectorAll("input, button")]
    .filter((e) => !e.disabled && !e.closest("[hidden]"));
  if (!items.length) return;
  const first = items[0];
  const last = items[items.length - 1];
  if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
  else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
  else if (!items.includes(document.activeElement)) { ev.preventDefault(); first.focus(); }
});
