// The Files tab of a container's page (docs/API.md §5 and §11): the folder is part of the
// URL (`#/c/{cuid}/files/a/b`: Back goes up a folder, a reload stays), uploads of one file or
// a ZIP with progress and Cancel, new folder, rename, delete with an in-page confirmation,
// and a text preview of the start of a file (as text, never as markup).
// Loaded after app.js: uses its helpers ($, el, api, ApiError, authHeaders, showSignIn,
// showError, download, can, detail).
"use strict";

const files = { path: "", shown: null, next: null, upload: null, asked: null, previewAbort: null };

/** How much of a file the preview reads. */
const PREVIEW_BYTES = 64 * 1024;

function filesBase() {
  return "/containers/" + encodeURIComponent(detail.cuid);
}

function humanSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

function joinPath(dir, name) {
  return dir ? `${dir}/${name}` : name;
}

/** The page of `folder` ("" is /app) of this container's Files tab. */
function folderHash(folder) {
  const parts = folder.split("/").filter(Boolean).map((p) => "/" + encodeURIComponent(p));
  return "#/c/" + encodeURIComponent(detail.cuid) + "/files" + parts.join("");
}

/** Opens `folder`: through the URL, so Back comes back here. */
function goFolder(folder) {
  const hash = folderHash(folder);
  if (location.hash === hash) loadFiles(folder);
  else location.hash = hash;
}

function filesError(e) {
  showError("files-error", e);
}

function filesStatus(text) {
  $("files-status").textContent = text || "";
}

async function loadFiles(path, more) {
  const cuid = detail.cuid;
  if (path !== files.shown) {
    // Another folder (or container): what was open for the last one goes.
    closePreview();
    $("replace-ask").hidden = true;
    $("folder-form").hidden = true;
    files.asked = null;
  }
  files.shown = path;
  files.path = path;
  filesError(null);
  const q = new URLSearchParams({ path: path || "/" });
  if (more && files.next) q.set("cursor", files.next);
  renderCrumbs();
  $("zip-link").href = `${filesBase()}/download-zip?${new URLSearchParams({ path: path || "/" })}`;
  try {
    const r = await api("GET", `${filesBase()}/files?${q}`);
    // Another folder, or another container's page (both start at ""), was opened meanwhile.
    if (files.path !== path || detail.cuid !== cuid) return;
    files.next = r.data.next_cursor;
    $("files-more").hidden = !files.next;
    const body = $("files-body");
    if (!more) body.replaceChildren();
    if (!more && path) {
      const up = path.split("/").slice(0, -1).join("/");
      body.append(el("tr", { "data-up": "" },
        el("td", {}, el("button", { type: "button", class: "link", text: "..", "aria-label": "Up one folder", onclick: () => goFolder(up) })),
        el("td", { text: "dir" }), el("td"), el("td"), el("td"), el("td")));
    }
    for (const e of r.data.entries) body.append(fileRow(e));
    $("files-empty").hidden = more || r.data.entries.length > 0 || !!files.next;
  } catch (e) {
    if (files.path !== path || detail.cuid !== cuid) return;
    $("files-empty").hidden = true;
    filesError(e);
  }
}

function fileRow(e) {
  const full = joinPath(files.path, e.name);
  let name;
  if (e.type === "dir") {
    name = el("a", {
      href: folderHash(full), class: "name", text: e.name + "/",
      onclick: (ev) => { ev.preventDefault(); goFolder(full); },
    });
  } else if (e.type === "file") {
    const href = `${filesBase()}/download?${new URLSearchParams({ path: full })}`;
    name = el("a", {
      href, download: e.name, text: e.name, class: "name",
      onclick: (ev) => {
        ev.preventDefault();
        download(href, e.name).catch(filesError);
      },
    });
  } else {
    name = el("span", { class: "name", text: e.name + (e.type === "symlink" ? ` → ${e.target ?? "?"}` : "") });
  }
  const row = el("tr", { "data-name": e.name, "data-type": e.type });
  const actions = el("td", { class: "file-actions" });
  if (e.type === "file") {
    actions.append(el("button", { type: "button", "data-op": "preview", text: "Preview", "aria-label": `Preview ${e.name}`, onclick: () => preview(full, e.name, e.size) }));
  }
  if (can("write")) {
    actions.append(
      el("button", { type: "button", "data-op": "rename", text: "Rename", "aria-label": `Rename ${e.name}`, onclick: () => askRename(row, e) }),
      el("button", { type: "button", "data-op": "delete", class: "danger", text: "Delete", "aria-label": `Delete ${e.name}`, onclick: () => askDelete(row, e) }));
  }
  row.append(
    el("td", {}, name),
    el("td", { text: e.type }),
    el("td", { text: e.type === "file" ? humanSize(e.size) : "" }),
    el("td", { text: e.mode }),
    el("td", { text: e.mtime ? when(e.mtime) : "" }),
    actions);
  return row;
}

function renderCrumbs() {
  const nav = $("crumbs");
  nav.replaceChildren();
  const crumb = (text, target, last) => el("a", {
    href: folderHash(target), text, ...(last ? { "aria-current": "page" } : {}),
    onclick: (ev) => { ev.preventDefault(); goFolder(target); },
  });
  const parts = files.path.split("/").filter(Boolean);
  nav.append(crumb("/app", "", parts.length === 0));
  let acc = "";
  parts.forEach((part, i) => {
    acc = joinPath(acc, part);
    nav.append(el("span", { text: "/", "aria-hidden": "true" }), crumb(part, acc, i === parts.length - 1));
  });
}

// ------------------------------------------------------------------ delete, rename

/** The row's actions replaced by a question and two buttons (no browser dialog). */
function askDelete(row, e) {
  const cell = row.querySelector(".file-actions");
  const before = [...cell.childNodes];
  const full = joinPath(files.path, e.name);
  const folder = e.type === "dir";
  const question = el("span", { class: "ask", role: "alert", text: folder ? `Delete the folder ${e.name} and everything in it?` : `Delete ${e.name}?` });
  const keep = () => { cell.replaceChildren(...before); before.find((b) => b.dataset.op === "delete")?.focus(); };
  const yes = el("button", {
    type: "button", class: "danger", "data-op": "confirm-delete", text: "Delete",
    onclick: async () => {
      yes.disabled = true;
      filesError(null);
      try {
        await api("DELETE", `${filesBase()}/files?${new URLSearchParams({ path: full, ...(folder ? { recursive: "true" } : {}) })}`);
        filesStatus(`deleted ${e.name}`);
        loadFiles(files.path);
      } catch (err) {
        keep();
        filesError(err);
      }
    },
  });
  const no = el("button", { type: "button", "data-op": "keep", text: "Keep it", onclick: keep });
  cell.replaceChildren(question, yes, no);
  no.focus();
}

/** The row's name becomes a text field: Enter or Save renames, Escape or Cancel does not. */
function askRename(row, e) {
  const cell = row.cells[0];
  const before = [...cell.childNodes];
  const input = el("input", { type: "text", value: e.name, "aria-label": `New name for ${e.name}`, "data-op": "new-name", maxlength: "255" });
  const cancel = () => { cell.replaceChildren(...before); row.querySelector("[data-op=rename]")?.focus(); };
  const save = async () => {
    const name = input.value.trim();
    if (!name || name === e.name) return cancel();
    if (name.includes("/") || name === "." || name === "..") {
      filesError(new Error("A name cannot contain / or be . or .."));
      input.setAttribute("aria-invalid", "true");
      return;
    }
    filesError(null);
    try {
      await api("POST", `${filesBase()}/files/move`, { json: { from: joinPath(files.path, e.name), to: joinPath(files.path, name) } });
      filesStatus(`renamed ${e.name} to ${name}`);
      loadFiles(files.path);
    } catch (err) {
      input.setAttribute("aria-invalid", "true");
      filesError(err);
      input.focus();
    }
  };
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); save(); }
    if (ev.key === "Escape") { ev.preventDefault(); cancel(); }
  });
  cell.replaceChildren(input,
    el("button", { type: "button", "data-op": "save-name", text: "Save", onclick: save }),
    el("button", { type: "button", text: "Cancel", onclick: cancel }));
  input.focus();
  input.select();
}

// ------------------------------------------------------------------ new folder

$("new-folder").addEventListener("click", () => {
  $("folder-form").hidden = false;
  $("folder-name").value = "";
  $("folder-name").removeAttribute("aria-invalid");
  $("folder-name").focus();
});
$("folder-cancel").addEventListener("click", () => {
  $("folder-form").hidden = true;
  $("new-folder").focus();
});
$("folder-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("folder-name").value.trim();
  filesError(null);
  try {
    await api("POST", `${filesBase()}/files/mkdir`, { json: { path: joinPath(files.path, name) } });
    $("folder-form").hidden = true;
    filesStatus(`made the folder ${name}`);
    loadFiles(files.path);
  } catch (err) {
    $("folder-name").setAttribute("aria-invalid", "true");
    filesError(err);
  }
});

// ------------------------------------------------------------------ preview

function closePreview() {
  if (files.previewAbort) files.previewAbort.abort();
  files.previewAbort = null;
  $("file-preview").hidden = true;
  $("preview-text").textContent = "";
}

/** The first PREVIEW_BYTES of the file, as text (`textContent`: never markup). */
async function preview(full, name, size) {
  closePreview();
  const abort = new AbortController();
  files.previewAbort = abort;
  $("preview-title").textContent = name;
  $("preview-note").textContent = "loading…";
  $("file-preview").hidden = false;
  $("file-preview").scrollIntoView({ block: "nearest" });
  try {
    const r = await fetch(`${filesBase()}/download?${new URLSearchParams({ path: full })}`, {
      credentials: "same-origin", headers: authHeaders(), signal: abort.signal,
    });
    if (!r.ok) {
      const text = await r.text();
      let body = text;
      try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
      if (r.status === 401) showSignIn("Your session has ended; sign in again.");
      throw new ApiError(r.status, body, r.headers);
    }
    const reader = r.body.getReader();
    const chunks = [];
    let got = 0;
    while (got < PREVIEW_BYTES) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
    }
    reader.cancel().catch(() => {});
    const bytes = new Uint8Array(Math.min(got, PREVIEW_BYTES));
    let at = 0;
    for (const c of chunks) {
      const part = c.subarray(0, bytes.length - at);
      bytes.set(part, at);
      at += part.length;
      if (at >= bytes.length) break;
    }
    if (files.previewAbort !== abort) return;
    if (bytes.includes(0)) {
      $("preview-note").textContent = "This file is binary; it is not shown. Download it instead.";
      return;
    }
    $("preview-text").textContent = new TextDecoder("utf-8").decode(bytes);
    $("preview-note").textContent = size > PREVIEW_BYTES
      ? `The first ${humanSize(PREVIEW_BYTES)} of ${humanSize(size)}.`
      : (size === 0 ? "This file is empty." : "");
  } catch (err) {
    if (err.name === "AbortError") return;
    $("preview-note").textContent = "";
    filesError(err);
  }
}

$("preview-close").addEventListener("click", closePreview);

// ------------------------------------------------------------------ uploads

/**
 * Sends `file` with XMLHttpRequest (fetch reports no upload progress): a progress bar, a
 * Cancel button that aborts it (the server keeps nothing of an upload that did not arrive
 * whole). Resolves with `{status, data}`, rejects with an ApiError or an Error named
 * AbortError.
 */
function sendWithProgress(method, url, file, headers, label) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    files.upload = xhr;
    xhr.open(method, url);
    xhr.withCredentials = true;
    for (const [k, v] of Object.entries(authHeaders(headers))) xhr.setRequestHeader(k, v);
    const bar = $("upload-bar");
    bar.value = 0;
    bar.max = file.size || 1;
    $("upload-text").textContent = `uploading ${label}: 0 of ${humanSize(file.size)}`;
    $("upload-progress").hidden = false;
    $("upload-cancel").disabled = false;
    xhr.upload.addEventListener("progress", (ev) => {
      bar.value = ev.loaded;
      $("upload-text").textContent = `uploading ${label}: ${humanSize(ev.loaded)} of ${humanSize(file.size)}`;
    });
    const done = () => {
      files.upload = null;
      $("upload-progress").hidden = true;
    };
    xhr.addEventListener("load", () => {
      done();
      let data = xhr.responseText;
      try { data = data ? JSON.parse(data) : null; } catch (_) { /* not JSON */ }
      if (xhr.status === 401) showSignIn("Your session has ended; sign in again.");
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, data });
      else reject(new ApiError(xhr.status, data, null));
    });
    xhr.addEventListener("abort", () => {
      done();
      const e = new Error("cancelled");
      e.name = "AbortError";
      reject(e);
    });
    xhr.addEventListener("error", () => {
      done();
      reject(new ApiError(0, null, null));
    });
    xhr.send(file);
  });
}

$("upload-cancel").addEventListener("click", () => {
  if (files.upload) {
    $("upload-cancel").disabled = true;
    files.upload.abort();
  }
});

function uploading() {
  if (!files.upload) return false;
  filesError(new Error("An upload is in progress; wait for it or cancel it first."));
  return true;
}

async function uploadZip(file) {
  if (!file || uploading()) return;
  filesError(null);
  filesStatus("");
  const folder = files.path;
  try {
    const q = new URLSearchParams({ path: folder || "/" });
    const r = await sendWithProgress("POST", `${filesBase()}/upload-zip?${q}`, file, { "content-type": "application/zip" }, file.name);
    filesStatus(`uploaded ${file.name}: ${r.data.files} files, ${humanSize(r.data.bytes)}`);
    if (files.path === folder) loadFiles(folder);
  } catch (e) {
    if (e.name === "AbortError") filesStatus(`upload of ${file.name} cancelled; nothing was changed`);
    else { filesStatus("upload failed"); filesError(e); }
  }
}

/** One file into the current folder; one of the same name is replaced only when asked. */
async function uploadFile(file, replace) {
  if (!file || uploading()) return;
  filesError(null);
  filesStatus("");
  $("replace-ask").hidden = true;
  const folder = files.path;
  const target = joinPath(folder, file.name);
  try {
    const q = new URLSearchParams({ path: target });
    const r = await sendWithProgress("PUT", `${filesBase()}/files?${q}`, file,
      replace ? {} : { "if-none-match": "*" }, file.name);
    filesStatus(`${r.data.replaced ? "replaced" : "uploaded"} ${file.name} (${humanSize(r.data.bytes)})`);
    if (files.path === folder) loadFiles(folder);
  } catch (e) {
    if (e.name === "AbortError") {
      filesStatus(`upload of ${file.name} cancelled; nothing was changed`);
    } else if (e.code === "FILE_EXISTS") {
      files.asked = file;
      $("replace-text").textContent = `${file.name} already exists in this folder. Replace it?`;
      $("replace-ask").hidden = false;
      $("replace-no").focus();
    } else {
      filesStatus("upload failed");
      filesError(e);
    }
  }
}

$("replace-yes").addEventListener("click", () => {
  const f = files.asked;
  files.asked = null;
  uploadFile(f, true);
});
$("replace-no").addEventListener("click", () => {
  files.asked = null;
  $("replace-ask").hidden = true;
  filesStatus("nothing was uploaded");
});

$("files-more").addEventListener("click", () => loadFiles(files.path, true));
$("zip-link").addEventListener("click", (ev) => {
  ev.preventDefault();
  download($("zip-link").href).catch(filesError);
});

$("upload-input").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  ev.target.value = "";
  uploadZip(f);
});
$("file-input").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  ev.target.value = "";
  uploadFile(f, false);
});
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  uploadZip(ev.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("upload-input").click(); }
});
