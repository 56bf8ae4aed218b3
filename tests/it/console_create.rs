//! The create and edit form and the delete dialog (issue 23): every field error at once (the
//! API's `details.errors`, then the console), the image picked from `GET /images`, "start it
//! now" without the boot-script trap, the edit's recreate warning and a 412 that keeps what
//! was typed, the in-page delete dialog, and a keyboard-only run from the list to a created
//! container to its deletion. Real Chromium against a real server and Docker.

use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::{keys, Browser};
use crate::common::*;

const T: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);

/// Waits for the form page with its image suggestions loaded (from `GET /images`).
async fn open_new_form(b: &Browser, s: &Server) {
    b.goto(&format!("{}/ui/#/new", s.base)).await;
    b.wait_js(
        "form page with image choices",
        T,
        "return !document.getElementById('page-form').hidden && Number(document.getElementById('f-image-choices').dataset.loaded) > 0;",
    )
    .await;
}

/// The cuid of the container page the browser shows.
async fn detail_cuid(b: &Browser) -> String {
    b.wait_js(
        "detail page",
        LONG,
        "const m = /^#\\/c\\/([^/]+)$/.exec(location.hash); return !document.getElementById('page-detail').hidden && m && m[1];",
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

/// How many containers carry `name` (the API's search).
async fn named(s: &Server, name: &str) -> usize {
    let r = s.get(&format!("/containers?q={name}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .count()
}

/// The API names every refused field of a body in `details.errors`; the top level is the
/// first, as before.
#[tokio::test]
async fn a_bad_body_is_answered_with_every_field_error() {
    let s = Server::start().await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "name": "-web-", "env": {"1BAD": "x"}, "tags": ["ok", "bad tag"], "resources": {"memory": "lots"}}),
        )
        .await;
    r.assert_error(400, "validation_error", "INVALID_ENV_NAME");
    assert_eq!(r.json["details"]["field"], "env.1BAD", "{}", r.text);
    let errors: Vec<(String, String)> = r.json["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("env.1BAD".to_owned(), "INVALID_ENV_NAME".to_owned()),
            ("tags[1]".to_owned(), "INVALID_TAG".to_owned()),
            ("resources.memory".to_owned(), "INVALID_MEMORY".to_owned()),
            ("name".to_owned(), "INVALID_NAME".to_owned()),
        ],
        "{}",
        r.text
    );
    assert_eq!(s.count_containers().await, 0);
    // A patch the same way.
    let cuid = s.create_sleeper().await;
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"restart": "sometimes", "user": "root"}),
        )
        .await;
    r.assert_error(400, "validation_error", "INVALID_RESTART");
    let fields: Vec<&str> = r.json["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["restart", "user"], "{}", r.text);
    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
}

/// Several bad fields are shown at once, each next to its field in plain words with
/// `aria-invalid`; the image is picked from the host's images; "Start it now" is on, and
/// without a ZIP or a command nothing is created (no crash loop); with a ZIP holding
/// boot.py the container is created, given its code and started, and stays up.
#[tokio::test]
async fn create_form_errors_image_choice_and_no_boot_script_trap() {
    let s = Server::start().await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    open_new_form(&b, &s).await;
    assert_eq!(
        b.js(
            "return document.getElementById('f-start').checked;",
            json!([])
        )
        .await,
        true,
        "Start it now is on by default"
    );

    // Four mistakes, one submit: all four shown, each by its own field.
    b.type_into("#f-name", "-bad-name-").await;
    b.type_into("#f-image", BUSYBOX).await;
    b.type_into("#f-env", "1BAD=x\nGOOD=y").await;
    b.type_into("#f-tags", "ok, bad tag!").await;
    b.type_into("#f-memory", "lots").await;
    b.click("#form-submit").await;
    let shown = b
        .wait_js(
            "every field error",
            T,
            "const f = (id, input) => { const e = document.getElementById('e-' + id); const i = document.getElementById('f-' + input); return e.textContent && [e.textContent, e.dataset.code, i.getAttribute('aria-invalid'), i.getAttribute('aria-describedby')]; };
             const all = [f('name', 'name'), f('env', 'env'), f('tags', 'tags'), f('resources', 'memory')];
             return all.every(Boolean) && all;",
        )
        .await;
    let codes = [
        "INVALID_NAME",
        "INVALID_ENV_NAME",
        "INVALID_TAG",
        "INVALID_MEMORY",
    ];
    for (one, code) in shown.as_array().unwrap().iter().zip(codes) {
        let text = one[0].as_str().unwrap();
        assert!(
            !text.contains(code) && !text.contains('{'),
            "plain words: {one}"
        );
        assert_eq!(one[1], code, "{one}");
        assert_eq!(one[2], "true", "{one}");
        assert!(one[3].as_str().unwrap().starts_with("e-"), "{one}");
    }
    // Which variable, which tag.
    assert!(
        shown[1][0].as_str().unwrap().starts_with("1BAD: "),
        "{shown}"
    );
    assert!(
        shown[2][0].as_str().unwrap().starts_with("\"bad tag!\": "),
        "{shown}"
    );
    // Nothing on top: each error is by its field; the progress line is not the error colour.
    let top = b
        .js(
            "return [document.getElementById('form-error').textContent, getComputedStyle(document.getElementById('form-status')).color, getComputedStyle(document.getElementById('e-env')).color];",
            json!([]),
        )
        .await;
    assert_eq!(top[0], "", "{top}");
    assert_ne!(top[1], top[2], "{top}");
    b.screenshot("create-all-errors").await;
    assert_eq!(s.count_containers().await, 0);

    // Fixed; the image picked from the host's images: a prefix typed, the list shows the
    // matches, ArrowDown and Enter take the first (Enter does not submit the form).
    for id in ["#f-name", "#f-image", "#f-env", "#f-tags", "#f-memory"] {
        b.clear(id).await;
    }
    b.type_into("#f-name", "no-boot").await;
    b.click("#f-image").await;
    b.press("cm-test-bu").await;
    let offered = b
        .wait_js(
            "image choices",
            T,
            "const l = document.getElementById('f-image-choices'); return !l.hidden && document.getElementById('f-image').getAttribute('aria-expanded') === 'true' && [...l.querySelectorAll('[role=option]')].map((o) => o.textContent);",
        )
        .await;
    assert_eq!(offered, json!([BUSYBOX]), "only the matches");
    b.screenshot("create-image-choices").await;
    b.press(keys::ARROW_DOWN).await;
    b.press(keys::ENTER).await;
    let picked = b
        .js(
            "return [document.getElementById('f-image').value, document.getElementById('f-image-choices').hidden, location.hash];",
            json!([]),
        )
        .await;
    assert_eq!(
        picked,
        json!([BUSYBOX, true, "#/new"]),
        "picked, not submitted"
    );
    // A click picks too.
    b.clear("#f-image").await;
    b.click("#f-name").await;
    b.click("#f-image").await;
    b.press("cm-test-py").await;
    b.wait_js(
        "python choice",
        T,
        &format!("return document.querySelector('#f-image-choices [data-value=\"{PYTHON}\"]');"),
    )
    .await;
    b.click(&format!("#f-image-choices [data-value=\"{PYTHON}\"]"))
        .await;
    assert_eq!(
        b.js(
            "return document.getElementById('f-image').value;",
            json!([])
        )
        .await,
        PYTHON
    );
    // Start it now, no ZIP, no command: the default command would have nothing to run; the
    // form says so by the ZIP and the command, and nothing is made.
    b.click("#form-submit").await;
    let trap = b
        .wait_js(
            "boot script missing",
            T,
            "const e = document.getElementById('e-zip'); return e.textContent && [e.textContent, e.dataset.code, document.getElementById('f-zip').getAttribute('aria-invalid'), document.getElementById('e-command').textContent];",
        )
        .await;
    assert!(trap[0].as_str().unwrap().contains("boot.py"), "{trap}");
    assert_eq!(trap[1], "BOOT_SCRIPT_MISSING", "{trap}");
    assert_eq!(trap[2], "true", "{trap}");
    assert!(!trap[3].as_str().unwrap().is_empty(), "{trap}");
    assert_eq!(
        named(&s, "no-boot").await,
        0,
        "a refused create leaves nothing"
    );

    // A ZIP that is not one: the container the form made for it is deleted again (nothing
    // is left), the upload's error is by the ZIP input.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.zip");
    std::fs::write(&bad, b"not a zip at all").unwrap();
    b.type_into("#f-zip", &bad.display().to_string()).await;
    b.click("#form-submit").await;
    let e = b
        .wait_js(
            "upload refused",
            LONG,
            "const e = document.getElementById('e-zip'); return e.dataset.code && e.dataset.code !== 'BOOT_SCRIPT_MISSING' && [e.dataset.code, e.textContent, location.hash, document.getElementById('form-status').textContent];",
        )
        .await;
    assert_eq!(e[0], "INVALID_ZIP", "{e}");
    assert_eq!(e[2], "#/new", "{e}");
    assert_eq!(e[3], "", "no progress left over: {e}");
    assert_eq!(
        named(&s, "no-boot").await,
        0,
        "the failed create left nothing"
    );
    assert_eq!(s.count_containers().await, 0);

    // With a ZIP holding boot.py (the Python image picked above): created, code in /app,
    // started; it runs and has not restarted.
    let zip = dir.path().join("app.zip");
    std::fs::write(
        &zip,
        zip_of(&[(
            "boot.py",
            b"import time\nprint('booted from the zip', flush=True)\ntime.sleep(3600)\n",
        )]),
    )
    .unwrap();
    b.type_into("#f-zip", &zip.display().to_string()).await;
    b.click("#form-submit").await;
    let cuid = detail_cuid(&b).await;
    let r = s
        .wait_for(&format!("/containers/{cuid}/logs?tail=10"), LONG, |r| {
            r.text.contains("booted from the zip")
        })
        .await;
    assert_eq!(r.status, 200);
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(st.json["status"], "running", "{}", st.text);
    assert_eq!(st.json["restart_count"], 0, "{}", st.text);
    assert_eq!(named(&s, "no-boot").await, 1);
    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
}

/// Edit: a change that recreates a running container is announced before saving (not a
/// rename); after a 412 what was typed stays and the page says what changed.
#[tokio::test]
async fn edit_warns_before_a_recreate_and_keeps_typed_values_after_412() {
    let s = Server::start().await;
    let cuid = s
        .create_started(
            &json!({"image": BUSYBOX, "command": SLEEPER, "name": "edit-me", "tags": ["a"]}),
        )
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.goto(&format!("{}/ui/#/c/{cuid}/edit", s.base)).await;
    b.wait_js(
        "edit form",
        T,
        "return document.getElementById('f-name').value === 'edit-me';",
    )
    .await;
    let warning =
        "const w = document.getElementById('form-warning'); return [w.hidden, w.textContent, document.getElementById('form-submit').textContent];";
    let w = b.js(warning, json!([])).await;
    assert_eq!(w[0], true, "nothing changed yet: {w}");
    // A rename recreates nothing: no warning.
    b.clear("#f-name").await;
    b.type_into("#f-name", "edit-me-2").await;
    let w = b.js(warning, json!([])).await;
    assert_eq!(w[0], true, "a rename: {w}");
    // An env change does, on a running container: said before Save, and on the button.
    b.type_into("#f-env", "MODE=fast").await;
    let w = b
        .wait_js(
            "recreate warning",
            T,
            "const w = document.getElementById('form-warning'); return !w.hidden && [w.textContent, document.getElementById('form-submit').textContent, w.dataset.recreates];",
        )
        .await;
    assert!(
        w[0].as_str().unwrap().contains("recreates")
            && w[0].as_str().unwrap().contains("environment"),
        "{w}"
    );
    assert_eq!(w[1], "Save and restart", "{w}");
    assert_eq!(w[2], "restart", "{w}");
    b.screenshot("edit-recreate-warning").await;

    // Someone else changes the tags meanwhile: Save is a 412; the form keeps ours.
    b.clear("#f-tags").await;
    b.type_into("#f-tags", "mine").await;
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["theirs"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    b.click("#form-submit").await;
    let c = b
        .wait_js(
            "conflict",
            T,
            "const e = document.getElementById('form-error'); return e.textContent.includes('Someone else changed') && [e.textContent, e.dataset.changed, document.getElementById('f-tags').value, document.getElementById('f-env').value, document.getElementById('f-name').value];",
        )
        .await;
    assert!(c[0].as_str().unwrap().contains("tags: now theirs"), "{c}");
    assert_eq!(c[1], "tags", "{c}");
    assert_eq!(c[2], "mine", "{c}");
    assert_eq!(c[3], "MODE=fast", "{c}");
    assert_eq!(c[4], "edit-me-2", "{c}");
    b.screenshot("edit-conflict-kept").await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(
        r.json["tags"],
        json!(["theirs"]),
        "the stale save changed nothing"
    );
    // Saved again: ours, over theirs.
    b.click("#form-submit").await;
    b.wait_js(
        "saved",
        LONG,
        &format!("return location.hash === '#/c/{cuid}';"),
    )
    .await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["tags"], json!(["mine"]), "{}", r.text);
    assert_eq!(r.json["env"]["MODE"], "fast", "{}", r.text);
    assert_eq!(r.json["name"], "edit-me-2", "{}", r.text);
    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
}

/// The delete dialog: in the page, naming the container; a running one needs its name
/// typed; Escape cancels and focus goes back to Delete; Tab stays in the dialog.
#[tokio::test]
async fn delete_dialog_asks_for_the_name_of_a_running_container() {
    let s = Server::start().await;
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER, "name": "doomed"}))
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.goto(&format!("{}/ui/#/c/{cuid}", s.base)).await;
    b.wait_js(
        "running",
        T,
        "return document.getElementById('observed').dataset.status === 'running' && !document.querySelector('[data-action=delete]').disabled;",
    )
    .await;
    b.click("[data-action=delete]").await;
    let d = b
        .wait_js(
            "dialog",
            T,
            "const d = document.getElementById('delete-dialog'); return d.open && [document.getElementById('delete-title').textContent, document.getElementById('delete-ok').disabled, document.activeElement.id, document.getElementById('delete-expected').textContent];",
        )
        .await;
    assert_eq!(d[0], "Delete doomed?", "{d}");
    assert_eq!(d[1], true, "Delete waits for the name: {d}");
    assert_eq!(d[2], "delete-typed", "{d}");
    assert_eq!(d[3], "doomed", "{d}");
    b.screenshot("delete-dialog").await;
    // Focus is trapped: ten Tabs, always inside.
    for _ in 0..10 {
        b.press(keys::TAB).await;
        let inside = b
            .js(
                "return document.getElementById('delete-dialog').contains(document.activeElement);",
                json!([]),
            )
            .await;
        assert_eq!(inside, true);
    }
    // A wrong name keeps Delete off; Escape cancels, focus back on Delete, nothing deleted.
    b.tab_to("#delete-typed", 5).await;
    b.press("doome").await;
    assert_eq!(
        b.js(
            "return document.getElementById('delete-ok').disabled;",
            json!([])
        )
        .await,
        true
    );
    b.press(keys::ENTER).await;
    b.press(keys::ESCAPE).await;
    let after = b
        .wait_js(
            "dialog closed",
            T,
            "return !document.getElementById('delete-dialog').open && document.activeElement.dataset.action;",
        )
        .await;
    assert_eq!(after, "delete");
    assert_eq!(s.get(&format!("/containers/{cuid}")).await.status, 200);
    // Again, with the name: deleted.
    b.click("[data-action=delete]").await;
    b.wait_js(
        "dialog again",
        T,
        "return document.getElementById('delete-dialog').open && document.getElementById('delete-typed').value === '';",
    )
    .await;
    b.type_into("#delete-typed", "doomed").await;
    b.click("#delete-ok").await;
    b.wait_list().await;
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| r.status == 404)
        .await;
}

/// Only key presses (Tab, Shift+Tab, Enter, typing): from the list to the form, a container
/// created and started, then deleted through the dialog.
#[tokio::test]
async fn keyboard_only_create_to_delete() {
    let s = Server::start().await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.tab_to("a[href='#/new']", 40).await;
    b.press(keys::ENTER).await;
    // The form opens (focus on its image input, or its heading: Tab gets there).
    b.wait_js(
        "form",
        T,
        "return !document.getElementById('page-form').hidden && document.activeElement !== document.body;",
    )
    .await;
    b.tab_to("#f-image", 10).await;
    b.press(BUSYBOX).await;
    b.press_shift_tab().await;
    let on = b.js("return document.activeElement.id;", json!([])).await;
    assert_eq!(on, "f-name");
    b.press("keyboard-run").await;
    b.tab_to("#f-command", 5).await;
    b.press("sleep 3600").await;
    // Enter in a field submits the form; "Start it now" is on.
    b.press(keys::ENTER).await;
    let cuid = detail_cuid(&b).await;
    let r = s
        .wait_for(&format!("/containers/{cuid}"), LONG, |r| {
            r.json["status"] == "running"
        })
        .await;
    assert_eq!(r.json["name"], "keyboard-run");
    b.wait_js(
        "delete enabled",
        T,
        "return document.getElementById('observed').dataset.status === 'running' && !document.querySelector('[data-action=delete]').disabled;",
    )
    .await;
    b.tab_to("[data-action=delete]", 80).await;
    b.press(keys::ENTER).await;
    b.wait_js(
        "dialog, name input focused",
        T,
        "return document.getElementById('delete-dialog').open && document.activeElement.id === 'delete-typed';",
    )
    .await;
    b.press("keyboard-run").await;
    b.press(keys::ENTER).await;
    b.wait_list().await;
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| r.status == 404)
        .await;
    let flash: Value = b
        .js(
            "return document.getElementById('flash').textContent;",
            json!([]),
        )
        .await;
    assert!(flash.as_str().unwrap().contains("keyboard-run"), "{flash}");
}
