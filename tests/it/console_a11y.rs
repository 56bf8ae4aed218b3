//! Accessibility of the console in real Chromium: axe-core (vendored for the tests only, see
//! Browser::assert_accessible) finds no serious or critical violation on any page; the detail
//! page's tabs follow the ARIA tabs pattern (arrow keys, Home, End); after a navigation the
//! focus is on the new page's heading.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

/// Navigates to `hash` and waits until `#page-<page>` shows.
async fn open(b: &Browser, s: &Server, hash: &str, page: &str) {
    b.goto(&format!("{}/ui/{hash}", s.base)).await;
    b.wait_js(
        page,
        T,
        &format!("return !document.getElementById('page-{page}').hidden;"),
    )
    .await;
}

#[tokio::test]
async fn console_pages_have_no_serious_accessibility_violations() {
    let s = Server::start().await;
    let b = Browser::start().await;

    // Sign-in, both ways (password, token), and with an error shown.
    b.open_sign_in(&s.base).await;
    b.assert_accessible("sign-in").await;
    b.type_into("#signin-user", USER).await;
    b.type_into("#signin-password", "wrong-password").await;
    b.click("#signin-submit").await;
    b.wait_js(
        "sign-in error",
        T,
        "return document.getElementById('signin-error').textContent;",
    )
    .await;
    b.assert_accessible("sign-in with an error").await;
    b.click("#signin-mode").await;
    b.wait_js(
        "token mode",
        T,
        "return !document.getElementById('signin-with-token').hidden;",
    )
    .await;
    b.assert_accessible("sign-in with a token").await;

    b.sign_in(&s.base, USER, PASS).await;
    b.wait_js(
        "empty list",
        T,
        "return !document.getElementById('list-empty').hidden;",
    )
    .await;
    b.assert_accessible("empty list").await;

    open(&b, &s, "#/new", "form").await;
    b.assert_accessible("create form").await;

    // The list with rows: a running one, a created one, one with tags and ports.
    let cuid = s
        .create_started(
            &json!({"image": BUSYBOX, "name": "a11y-run", "tags": ["web", "a11y"],
            "command": ["sh", "-c", "echo hello; exec sleep 3600"]}),
        )
        .await;
    let other = s
        .create(&json!({"image": BUSYBOX, "name": "a11y-created", "command": ["sleep", "3600"]}))
        .await;
    // A crash loop and a failing health check: their warning badges are on the pages too.
    let crashy = s
        .create(
            &json!({"image": BUSYBOX, "name": "a11y-crashy", "restart": "always",
            "command": ["sh", "-c", "echo boom; exit 3"]}),
        )
        .await;
    let r = s
        .post(&format!("/containers/{crashy}/start?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sick = s
        .create_started(
            &json!({"image": BUSYBOX, "name": "a11y-sick", "command": ["sleep", "3600"],
            "health": {"cmd": ["false"], "interval": 1, "timeout": 1, "retries": 1}}),
        )
        .await;
    s.wait_for(&format!("/containers/{sick}"), T, |r| {
        r.json["health"] == "unhealthy"
    })
    .await;
    open(&b, &s, "#/", "list").await;
    b.wait_js(
        "rows",
        T,
        &format!("return document.querySelector('tr[data-cuid=\"{cuid}\"]') && document.querySelector('tr[data-cuid=\"{other}\"]') && document.querySelector('tr[data-cuid=\"{crashy}\"] .crash');"),
    )
    .await;
    b.assert_accessible("list").await;
    open(&b, &s, &format!("#/c/{crashy}"), "detail").await;
    b.wait_js(
        "crash-loop badge",
        T,
        "return document.querySelector('#detail-health [data-crash]');",
    )
    .await;
    b.assert_accessible("detail of a crash loop").await;
    open(&b, &s, &format!("#/c/{sick}"), "detail").await;
    b.wait_js(
        "health badge",
        T,
        "return document.querySelector('#detail-health .health-unhealthy');",
    )
    .await;
    b.assert_accessible("detail of an unhealthy container")
        .await;

    // The detail page, each tab.
    open(&b, &s, &format!("#/c/{cuid}/logs"), "detail").await;
    b.wait_js(
        "logs",
        T,
        "return document.getElementById('logs-out').textContent.includes('hello');",
    )
    .await;
    b.assert_accessible("detail, logs").await;
    open(&b, &s, &format!("#/c/{cuid}/terminal"), "detail").await;
    b.wait_js(
        "terminal connected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
    b.assert_accessible("detail, terminal").await;
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("hello.txt", b"hi\n"), ("dir/a.txt", b"a")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    open(&b, &s, &format!("#/c/{cuid}/files"), "detail").await;
    b.wait_js(
        "files",
        T,
        "return !document.getElementById('panel-files').hidden && document.getElementById('files-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("detail, files").await;
    let r = s
        .post_json(
            &format!("/containers/{cuid}/snapshots"),
            &json!({"name": "first"}),
        )
        .await;
    assert!(r.status == 201 || r.status == 202, "{}", r.text);
    open(&b, &s, &format!("#/c/{cuid}/snapshots"), "detail").await;
    b.wait_js(
        "snapshots",
        T,
        "return document.getElementById('snap-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("detail, snapshots").await;
    open(&b, &s, &format!("#/c/{other}"), "detail").await;
    b.wait_js(
        "created container",
        T,
        "return document.getElementById('observed').dataset.status === 'created';",
    )
    .await;
    b.assert_accessible("detail of a created container").await;
    open(&b, &s, &format!("#/c/{cuid}/edit"), "form").await;
    b.wait_js(
        "edit form",
        T,
        "return document.getElementById('f-name').value === 'a11y-run';",
    )
    .await;
    b.assert_accessible("edit form").await;

    // Admin pages, empty and with rows.
    open(&b, &s, "#/tokens", "tokens").await;
    b.wait_js(
        "tokens",
        T,
        "return !document.getElementById('tokens-empty').hidden || document.getElementById('tokens-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("tokens").await;
    b.type_into("#t-name", "a11y").await;
    b.click("#token-create").await;
    b.wait_js(
        "token secret",
        T,
        "return !document.getElementById('token-secret').hidden && document.getElementById('tokens-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("tokens with a new secret").await;

    open(&b, &s, "#/tenants", "tenants").await;
    b.wait_js(
        "tenants",
        T,
        "return !document.getElementById('tenants-empty').hidden;",
    )
    .await;
    b.assert_accessible("tenants, empty").await;
    s.put_tenant("a11y-team", &json!({"max_containers": 5}))
        .await;
    open(&b, &s, "#/", "list").await;
    open(&b, &s, "#/tenants", "tenants").await;
    b.wait_js(
        "tenant row",
        T,
        "return document.getElementById('tenants-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("tenants").await;

    open(&b, &s, "#/webhooks", "webhooks").await;
    b.wait_js(
        "webhooks",
        T,
        "return !document.getElementById('webhooks-empty').hidden;",
    )
    .await;
    b.assert_accessible("webhooks, empty").await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": "http://93.184.216.34/hook", "events": ["died"], "secret": "a11y-secret-0123456789"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    open(&b, &s, "#/", "list").await;
    open(&b, &s, "#/webhooks", "webhooks").await;
    b.wait_js(
        "webhook row",
        T,
        "return document.getElementById('webhooks-body').children.length > 0;",
    )
    .await;
    b.assert_accessible("webhooks").await;

    // A deleted container's page.
    let r = s.delete(&format!("/containers/{other}")).await;
    assert!(
        r.status == 200 || r.status == 202 || r.status == 204,
        "{}",
        r.text
    );
    s.wait_for(&format!("/containers/{other}"), T, |r| r.status == 404)
        .await;
    open(&b, &s, &format!("#/c/{other}"), "detail").await;
    b.wait_js(
        "deleted page",
        T,
        "return !document.getElementById('detail-gone').hidden;",
    )
    .await;
    b.assert_accessible("deleted container").await;

    // A narrow window (the layout changes): the list and a detail page.
    b.set_window(480, 800).await;
    open(&b, &s, "#/", "list").await;
    b.wait_js(
        "rows",
        T,
        &format!("return document.querySelector('tr[data-cuid=\"{cuid}\"]');"),
    )
    .await;
    b.assert_accessible("list, narrow").await;
}

/// Waits until the focus is on `id`.
async fn focus_on(b: &Browser, id: &str) {
    b.wait_js(
        &format!("focus on #{id}"),
        T,
        &format!("return document.activeElement && document.activeElement.id === '{id}';"),
    )
    .await;
}

/// The tab shown: the only selected tab, the only one in the Tab order, its panel the only
/// one visible, its name in the URL (none for the first, Logs).
async fn assert_tab(b: &Browser, tab: &str) {
    b.wait_js(
        &format!("tab {tab} shown"),
        T,
        &format!(
            "const tabs = [...document.querySelectorAll('#page-detail [role=tab]')];
             const sel = tabs.filter((t) => t.getAttribute('aria-selected') === 'true').map((t) => t.dataset.tab);
             const inOrder = tabs.filter((t) => t.tabIndex === 0).map((t) => t.dataset.tab);
             const panels = [...document.querySelectorAll('#page-detail [role=tabpanel]')].filter((p) => !p.hidden).map((p) => p.id);
             return JSON.stringify([sel, inOrder, panels]) === JSON.stringify([['{tab}'], ['{tab}'], ['panel-{tab}']])
               && (location.hash.endsWith('/{tab}') || ('{tab}' === 'logs' && location.hash.split('/').length === 3))
               && document.getElementById('panel-{tab}').getAttribute('aria-labelledby') === 'tab-{tab}'
               && document.getElementById('tab-{tab}').getAttribute('aria-controls') === 'panel-{tab}';"
        ),
    )
    .await;
}

#[tokio::test]
async fn console_tabs_take_arrow_keys_and_navigation_focuses_the_heading() {
    use crate::browser::keys;
    let s = Server::start().await;
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "name": "tabs", "command": ["sleep", "3600"]}))
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    // Signed in: the list's heading has the focus.
    focus_on(&b, "list-title").await;

    // A navigation by the keyboard: the focus is on the new page's heading each time.
    b.wait_js(
        "row link",
        T,
        &format!("return document.querySelector('tr[data-cuid=\"{cuid}\"] a');"),
    )
    .await;
    b.js(
        &format!("document.querySelector('tr[data-cuid=\"{cuid}\"] a').focus();"),
        json!([]),
    )
    .await;
    b.press(keys::ENTER).await;
    b.wait_js(
        "detail page",
        T,
        "return !document.getElementById('page-detail').hidden;",
    )
    .await;
    focus_on(&b, "detail-title").await;
    assert_tab(&b, "logs").await;
    b.goto(&format!("{}/ui/#/tokens", s.base)).await;
    focus_on(&b, "tokens-title").await;
    b.goto(&format!("{}/ui/#/c/{cuid}/edit", s.base)).await;
    focus_on(&b, "form-title").await;
    // The create form, like sign-in, puts the focus in its first field.
    b.goto(&format!("{}/ui/#/new", s.base)).await;
    focus_on(&b, "f-image").await;
    b.goto(&format!("{}/ui/#/c/{cuid}", s.base)).await;
    focus_on(&b, "detail-title").await;

    // Tab reaches the selected tab; the arrows, Home and End move between tabs and show them,
    // and the focus stays on the tabs (a terminal that connects does not take it).
    b.js("document.getElementById('tab-logs').focus();", json!([]))
        .await;
    b.press(keys::RIGHT).await;
    assert_tab(&b, "terminal").await;
    focus_on(&b, "tab-terminal").await;
    b.wait_js(
        "terminal connected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
    assert_eq!(b.focused_id().await, "tab-terminal");
    b.press(keys::RIGHT).await;
    assert_tab(&b, "files").await;
    focus_on(&b, "tab-files").await;
    b.press(keys::END).await;
    assert_tab(&b, "snapshots").await;
    focus_on(&b, "tab-snapshots").await;
    b.press(keys::RIGHT).await;
    assert_tab(&b, "logs").await;
    focus_on(&b, "tab-logs").await;
    b.press(keys::LEFT).await;
    assert_tab(&b, "snapshots").await;
    b.press(keys::HOME).await;
    assert_tab(&b, "logs").await;
    focus_on(&b, "tab-logs").await;
    // A tab change is no navigation to another page: the heading did not take the focus.
    assert_eq!(b.focused_id().await, "tab-logs");
    b.assert_accessible("detail, tabs by keyboard").await;

    // Signing out ends the session's event stream on the server too: the page does not take
    // that for a lost connection (no banner), and says it signed out.
    b.js(
        "window.__banner = false; const e = document.getElementById('conn-banner');
         new MutationObserver(() => { if (!e.hidden) window.__banner = true; }).observe(e, { attributes: true });",
        json!([]),
    )
    .await;
    b.click("#sign-out").await;
    let shown = b
        .wait_js(
            "signed out",
            T,
            "return !document.getElementById('page-signin').hidden && [document.getElementById('signin-error').textContent, window.__banner, live === null];",
        )
        .await;
    assert_eq!(shown, json!(["Signed out.", false, true]));
}
