//! The console's sandbox settings (issue 18), in a real headless Chromium: the form sends
//! isolation, a read-only root, a disk cap, an egress policy, a lifetime and an idle policy;
//! an API refusal lands next to its field; the detail page shows what the container got, and
//! its deadline is extended from there.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn console_creates_and_shows_a_sandboxed_container() {
    let s = Server::start().await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;

    b.goto(&format!("{}/ui/#/new", s.base)).await;
    b.wait_js(
        "form page",
        T,
        "return !document.getElementById('page-form').hidden;",
    )
    .await;
    b.type_into("#f-name", "sandbox-one").await;
    b.type_into("#f-image", BUSYBOX).await;
    // Made stopped (no code to run yet): "Start it now" is on by default.
    b.click("#f-start").await;
    b.type_into("#f-disk", "32m").await;
    b.type_into("#f-idle-after", "600").await;
    b.click("#f-read_only").await;
    b.js(
        "document.getElementById('f-isolation').value = 'gvisor'; \
         document.getElementById('f-egress').value = 'allowlist'; \
         document.getElementById('f-idle-action').value = 'stop'; \
         document.getElementById('f-health-kind').value = 'http';",
        json!([]),
    )
    .await;
    b.type_into("#f-health-port", "8000").await;
    // A host address with its host bits set is refused by the API, next to the field.
    b.type_into("#f-allow", "10.1.2.3/24:5432").await;
    b.click("#form-submit").await;
    let e = b
        .wait_js(
            "allow error",
            T,
            "const e = document.getElementById('e-network'); return e.textContent && e.dataset.code;",
        )
        .await;
    assert_eq!(e, "INVALID_ALLOW_CIDR");
    b.clear("#f-allow").await;
    b.type_into("#f-allow", "10.1.2.0/24:5432").await;
    // A lifetime: an hour, then deleted.
    b.type_into("#f-ttl", "1h").await;
    b.js(
        "document.getElementById('f-on_expiry').value = 'delete';",
        json!([]),
    )
    .await;
    b.click("#form-submit").await;
    let cuid = b
        .wait_js(
            "detail page",
            T,
            "const m = /^#\\/c\\/([^/]+)$/.exec(location.hash); return m && m[1];",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();

    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["isolation"], "gvisor", "{}", r.text);
    assert_eq!(r.json["read_only"], true);
    assert_eq!(r.json["resources"]["disk"], "32m");
    assert_eq!(
        r.json["network"],
        json!({"egress": "allowlist", "allow": ["10.1.2.0/24:5432"]})
    );
    assert_eq!(
        r.json["idle"],
        json!({"after": 600, "action": "stop", "resume_on_use": true})
    );
    // Issue 22: the form's health check (an HTTP probe), shown on the detail page below.
    assert_eq!(
        r.json["health_check"]["http"],
        json!({"port": 8000, "path": "/"})
    );

    // The detail page says what it got.
    let shown = b
        .wait_js(
            "sandbox rows",
            T,
            "const t = document.getElementById('desired').textContent + \
             document.getElementById('observed').textContent; \
             return t.includes('gVisor') && t.includes('read-only') && \
             t.includes('only 10.1.2.0/24:5432') && t.includes('of 32') && \
             t.includes('stop after 600 s without use; resumes on use') && \
             t.includes('HTTP GET :8000/') && t;",
        )
        .await;
    assert!(shown.as_str().unwrap().contains("/tmp 64m"), "{shown}");
    // Named in the heading and the window's title, not by its cuid.
    let title = b
        .js(
            "return document.getElementById('detail-title').textContent + '|' + document.title;",
            json!([]),
        )
        .await;
    assert_eq!(title, json!("sandbox-one|sandbox-one · Container manager"));
    assert_eq!(
        r.json["lifetime"],
        json!({"ttl": 3600, "on_expiry": "delete"})
    );
    // The deadline in local time with the time left; "Extend" moves it to now + 2 h.
    let deadline = b
        .wait_js(
            "deadline",
            T,
            "const t = document.getElementById('expires-at').textContent + ' ' + \
             document.getElementById('expires-left').textContent; \
             return t.startsWith('deleted at') && /\\(in (59 min|1 h)/.test(t) && t;",
        )
        .await;
    assert!(
        deadline.as_str().unwrap().contains("deleted at"),
        "{deadline}"
    );
    let before = r.json["expires_at"].as_str().unwrap().to_owned();
    b.type_into("#extend-ttl", "2h").await;
    b.click("#extend-submit").await;
    b.wait_js(
        "extended",
        T,
        "return /\\(in (1 h 59 min|2 h)/.test(document.getElementById('expires-left').textContent);",
    )
    .await;
    let after = s.get(&format!("/containers/{cuid}")).await;
    assert!(
        after.json["expires_at"].as_str().unwrap() > before.as_str(),
        "{}",
        after.text
    );
    assert_eq!(after.json["lifetime"]["ttl"], 7200);
    b.screenshot("sandbox-detail").await;

    // The list's search finds it by a prefix of its name; another word finds nothing.
    s.create(&json!({"image": BUSYBOX, "name": "other-box"}))
        .await;
    b.goto(&format!("{}/ui/#/", s.base)).await;
    b.type_into("#filter-q", "sandbox").await;
    b.click("#filter-form button[type=submit]").await;
    let rows = b
        .wait_js(
            "searched list",
            T,
            "const rows = [...document.querySelectorAll('#list-body tr a')].map(a => a.textContent);              return rows.length === 1 && rows.join(',');",
        )
        .await;
    assert_eq!(rows, json!("sandbox-one"));
    let count = b
        .js(
            "return document.getElementById('page-count').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(count, json!("1 container match · page 1 of 1"));
}
