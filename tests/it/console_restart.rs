//! The server restarts under an open console: the list in one window, a terminal in another.
//! Both show the connection-lost banner while it is down; when it is back on the same address
//! and data directory, the list is live again and the terminal reconnects, without a reload.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);

/// Types a line into the terminal and waits for `want` on a line of its own.
async fn shell(b: &Browser, line: &str, want: &str) {
    use crate::browser::keys;
    b.type_into_when_ready(
        ".xterm-helper-textarea",
        &format!("{line}{}", keys::ENTER),
        T,
    )
    .await;
    b.wait_js(
        &format!("{want} on the terminal"),
        T,
        &format!(
            "const b = window.__term && window.__term.buffer.active; if (!b) return false;
             for (let i = 0; i < b.length; i++) {{ if (b.getLine(i).translateToString(true).trim() === '{want}') return true; }}
             return false;"
        ),
    )
    .await;
}

#[tokio::test]
async fn console_survives_a_server_restart_with_the_list_and_a_terminal_open() {
    let mut s = Server::start().await;
    let cuid = s
        .create_started(
            &json!({"image": BUSYBOX, "name": "restart-me", "command": ["sleep", "3600"]}),
        )
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    let list = b.window().await;
    let row = format!(
        "return document.querySelector('tr[data-cuid=\"{cuid}\"] [data-status=\"running\"]');"
    );
    b.wait_js("row", T, &row).await;
    // Markers: a reload would lose them.
    b.js("window.__marker = 'same page';", json!([])).await;

    let term = b.new_window().await;
    b.switch_to(&term).await;
    b.set_window(1280, 900).await;
    b.goto(&format!("{}/ui/#/c/{cuid}/terminal", s.base)).await;
    b.wait_js(
        "terminal connected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
    b.js("window.__marker = 'same page';", json!([])).await;
    shell(&b, "echo before-$((40+2))", "before-42").await;

    // The server dies: both pages say so; the terminal says it is disconnected.
    s.kill9();
    let lost = "const e = document.getElementById('conn-banner'); return !e.hidden && e.textContent.includes('reconnecting');";
    b.wait_js("banner (terminal window)", T, lost).await;
    b.wait_js(
        "terminal disconnected",
        T,
        "return document.getElementById('term-status').textContent.startsWith('Disconnected');",
    )
    .await;
    b.assert_accessible("terminal, connection lost").await;
    // Reconnect while the server is still down: words, not a raw fetch error.
    b.click("#term-reconnect").await;
    b.wait_js(
        "reconnect refused in words",
        T,
        "return document.getElementById('term-status').textContent.includes('cannot be reached');",
    )
    .await;
    b.switch_to(&list).await;
    b.wait_js("banner (list window)", T, lost).await;
    b.assert_accessible("list, connection lost").await;

    // Back on the same address and data: the list is live again on the same page.
    s.start_again_same_address().await;
    b.wait_js(
        "list back",
        LONG,
        &format!("return document.getElementById('conn-banner').hidden && document.getElementById('live-text').textContent === 'live' && window.__marker === 'same page' && (() => {{ {row} }})();"),
    )
    .await;
    // And live: a change made elsewhere shows by itself.
    let r = s.post(&format!("/containers/{cuid}/stop?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    b.wait_js(
        "row stopped, live",
        LONG,
        &format!("return window.__marker === 'same page' && document.querySelector('tr[data-cuid=\"{cuid}\"] [data-status=\"stopped\"]');"),
    )
    .await;
    s.start_container(&cuid).await;
    b.wait_js("row running again", LONG, &row).await;

    // The terminal's Reconnect opens a new shell that works, on the same page.
    b.switch_to(&term).await;
    b.wait_js(
        "banner gone (terminal window)",
        LONG,
        "return document.getElementById('conn-banner').hidden && window.__marker === 'same page';",
    )
    .await;
    b.click("#term-reconnect").await;
    b.wait_js(
        "terminal reconnected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
    shell(&b, "echo after-$((6*7))", "after-42").await;
    b.screenshot("restart-terminal-back").await;
}
