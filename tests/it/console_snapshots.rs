//! The console's Snapshots tab (issue 19), in a real headless Chromium: take one by name, see
//! it listed, restore it (the changed file comes back), fork from it.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn console_takes_restores_and_forks_a_snapshot() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let r = s.upload_zip(&cuid, "", zip_of(&[("a.txt", b"one")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.goto(&format!("{}/ui/#/c/{cuid}/snapshots", s.base)).await;
    b.wait_js(
        "snapshots tab",
        T,
        "return !document.getElementById('panel-snapshots').hidden;",
    )
    .await;
    b.type_into("#snap-name", "first").await;
    b.click("#snap-take").await;
    b.wait_js(
        "listed",
        T,
        "return document.getElementById('snap-body').textContent.includes('first');",
    )
    .await;
    let r = s.get(&format!("/containers/{cuid}/snapshots")).await;
    assert_eq!(r.json["snapshots"][0]["name"], "first", "{}", r.text);

    let r = s.upload_zip(&cuid, "", zip_of(&[("a.txt", b"two")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    b.js(
        "window.confirm = () => true; \
         document.querySelector('[data-snap=\"first\"]').click();",
        json!([]),
    )
    .await;
    b.wait_js(
        "restored",
        T,
        "return document.getElementById('snap-status').textContent.includes('restored first');",
    )
    .await;
    assert_eq!(std::fs::read(s.mount(&cuid).join("a.txt")).unwrap(), b"one");

    // Fork: the page moves to the new container.
    b.js(
        "[...document.querySelectorAll('[data-snap=\"first\"]')].find(x => x.textContent === 'Fork').click();",
        json!([]),
    )
    .await;
    let fork = b
        .wait_js(
            "fork's page",
            T,
            &format!(
                "const m = /^#\\/c\\/([^/]+)$/.exec(location.hash); return m && m[1] !== '{cuid}' && m[1];"
            ),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(std::fs::read(s.mount(&fork).join("a.txt")).unwrap(), b"one");
    b.screenshot("snapshots-tab").await;
}
