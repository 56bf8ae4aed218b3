//! The console with tenants and tokens (docs/API.md §13), in a real headless Chromium: a
//! tenant's `read` token sees its own containers and no control it may not use; the operator
//! manages tenants and tokens from their pages.

use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

/// The visible buttons, links and labels of the page, by their text.
const VISIBLE: &str = "return [...document.querySelectorAll('button, a, label')]\
    .filter((e) => e.getClientRects().length > 0).map((e) => e.textContent.trim());";

async fn visible(b: &Browser) -> Vec<String> {
    let v = b.js(VISIBLE, json!([])).await;
    serde_json::from_value(v).unwrap()
}

fn sleeper_of(tenant: Option<&str>) -> Value {
    json!({"image": BUSYBOX, "command": SLEEPER, "tenant": tenant})
}

#[tokio::test]
async fn console_signed_in_with_a_tenants_read_token_sees_and_offers_only_that() {
    let s = Server::start().await;
    s.put_tenant("team-a", &json!({})).await;
    s.put_tenant("team-b", &json!({})).await;
    let mine = s.create(&sleeper_of(Some("team-a"))).await;
    let theirs = s.create(&sleeper_of(Some("team-b"))).await;
    let operators = s.create(&sleeper_of(None)).await;
    let read = s.token("read", Some("team-a")).await;
    let b = Browser::start().await;

    // The token form, and a wrong token said in plain words.
    b.open_sign_in(&s.base).await;
    b.click("#signin-mode").await;
    b.wait_js(
        "token field",
        T,
        "return document.getElementById('signin-token').getClientRects().length > 0 \
         && document.getElementById('signin-user').getClientRects().length === 0;",
    )
    .await;
    b.type_into("#signin-token", "cm_not-a-token").await;
    b.click("#signin-submit").await;
    let err = b
        .wait_js(
            "sign-in error",
            T,
            "return document.getElementById('signin-error').textContent;",
        )
        .await;
    assert!(err.as_str().unwrap().contains("not valid"), "{err}");

    // The right token: the tenant's container only, the tenant named in the header.
    b.type_into("#signin-token", &read.token).await;
    b.click("#signin-submit").await;
    b.wait_list().await;
    b.wait_js(
        "the tenant's row",
        T,
        &format!("return document.querySelector('tr[data-cuid=\"{mine}\"]');"),
    )
    .await;
    let rows = b
        .js(
            "return [...document.querySelectorAll('#list-body tr')].map((r) => r.dataset.cuid);",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!([mine]), "not {theirs} nor {operators}");
    let header = b
        .js(
            "return document.getElementById('tenant-badge').textContent;",
            json!([]),
        )
        .await;
    assert!(header.as_str().unwrap().contains("team-a"), "{header}");
    let shown = visible(&b).await;
    assert!(
        !shown
            .iter()
            .any(|t| t == "New container" || t == "Tokens" || t == "Tenants"),
        "{shown:?}"
    );
    let tenant_column = b
        .js(
            "return document.querySelector('#list-table th.col-tenant').getClientRects().length;",
            json!([]),
        )
        .await;
    assert_eq!(tenant_column, 0, "a tenant's list has no tenant column");
    b.screenshot("tenant-read-list").await;
    b.assert_accessible("list, a tenant's read token").await;

    // Its detail page: logs and files, no action, edit, delete, terminal or upload.
    b.goto(&format!("{}/ui/#/c/{mine}", s.base)).await;
    b.wait_js(
        "detail page",
        T,
        &format!(
            "return !document.getElementById('page-detail').hidden \
             && document.getElementById('detail-title').textContent.includes('{mine}');"
        ),
    )
    .await;
    let shown = visible(&b).await;
    for gone in [
        "Start",
        "Stop",
        "Restart",
        "Pause",
        "Unpause",
        "Update image",
        "Edit",
        "Delete",
        "Terminal",
        "Upload ZIP here",
        "Create",
    ] {
        assert!(!shown.iter().any(|t| t == gone), "{gone} shown: {shown:?}");
    }
    for there in ["Logs", "Files", "Sign out"] {
        assert!(
            shown.iter().any(|t| t == there),
            "{there} missing: {shown:?}"
        );
    }
    b.screenshot("tenant-read-detail").await;
    b.assert_accessible("detail, a tenant's read token").await;

    // A page it may not use by its address: back to the list, saying why.
    b.goto(&format!("{}/ui/#/new", s.base)).await;
    let said = b
        .wait_js(
            "refused",
            T,
            "return location.hash === '#/' && document.getElementById('flash').textContent;",
        )
        .await;
    assert!(said.as_str().unwrap().contains("may not"), "{said}");
    assert!(b
        .js(
            "return document.getElementById('page-form').hidden;",
            json!([])
        )
        .await
        .as_bool()
        .unwrap());
}

#[tokio::test]
async fn console_operator_manages_tenants_and_tokens_and_sees_a_secret_once() {
    let s = Server::start().await;
    s.put_tenant("team-c", &json!({"max_containers": 10, "max_memory": "1g"}))
        .await;
    let theirs = s
        .create(
            &json!({"image": BUSYBOX, "command": SLEEPER, "tenant": "team-c",
        "resources": {"cpus": 0.5, "memory": "256m"}}),
        )
        .await;
    let b = Browser::start().await;
    b.open_sign_in(&s.base).await;
    b.type_into("#signin-user", USER).await;
    b.type_into("#signin-password", PASS).await;
    b.click("#signin-submit").await;
    b.wait_list().await;
    let shown = visible(&b).await;
    for there in ["New container", "Tokens", "Tenants"] {
        assert!(
            shown.iter().any(|t| t == there),
            "{there} missing: {shown:?}"
        );
    }
    b.wait_js(
        "the tenant's container, with its tenant",
        T,
        &format!("const r = document.querySelector('tr[data-cuid=\"{theirs}\"] .col-tenant'); return r && r.textContent === 'team-c';"),
    )
    .await;

    // Tenants: usage against quotas; the form replaces a quota.
    b.click("a[href='#/tenants']").await;
    let usage = b
        .wait_js(
            "tenant row",
            T,
            "const r = document.querySelector('tr[data-tenant=\"team-c\"]'); \
             return r && [...r.querySelectorAll('[data-usage]')].map((c) => c.textContent);",
        )
        .await;
    assert_eq!(
        usage,
        json!([
            "1 / 10",
            "0 / no limit",
            "0.5 / no limit",
            "256.0 MiB / 1.0 GiB",
            "0 / no limit",
            "0 B / no limit"
        ])
    );
    b.screenshot("tenants").await;
    b.click("tr[data-tenant='team-c'] button:not(.danger)")
        .await;
    b.clear("#q-max_containers").await;
    b.type_into("#q-max_containers", "5").await;
    b.click("#tenant-save").await;
    b.wait_js(
        "saved",
        T,
        "const c = document.querySelector('tr[data-tenant=\"team-c\"] [data-usage=containers]'); \
         return c && c.textContent === '1 / 5';",
    )
    .await;
    let r = s.get("/tenants/team-c").await;
    assert_eq!(r.json["quotas"]["max_containers"], 5, "{}", r.text);
    assert_eq!(r.json["quotas"]["max_memory"], 1 << 30, "kept: {}", r.text);

    // Tokens: create one; its secret is shown once, and works.
    b.click("a[href='#/tokens']").await;
    b.wait_js(
        "tokens page",
        T,
        "return !document.getElementById('page-tokens').hidden;",
    )
    .await;
    b.type_into("#t-name", "ci-console").await;
    b.click("#t-scope option[value=operate]").await;
    b.click("#token-create").await;
    let secret = b
        .wait_js(
            "the secret",
            T,
            "const v = document.getElementById('token-secret-value').value; \
             return !document.getElementById('token-secret').hidden && v.startsWith('cm_') && v;",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let warning = b
        .js(
            "return document.getElementById('token-secret').textContent;",
            json!([]),
        )
        .await;
    assert!(warning
        .as_str()
        .unwrap()
        .contains("will not see this token again"));
    b.screenshot("token-created").await;
    let bearer = Bearer {
        server: &s,
        token: secret.clone(),
    };
    assert_eq!(bearer.get("/containers").await.status, 200);
    let row = "tr[data-name='ci-console']";
    b.wait_js(
        "token row",
        T,
        &format!("const r = document.querySelector(\"{row}\"); return r && r.textContent.includes('operate');"),
    )
    .await;

    // Away and back: the secret is gone from the page for good.
    b.click("a[href='#/']").await;
    b.wait_list().await;
    b.click("a[href='#/tokens']").await;
    b.wait_js(
        "tokens page again",
        T,
        &format!("return !document.getElementById('page-tokens').hidden && document.querySelector(\"{row}\");"),
    )
    .await;
    let gone = b
        .js(
            "return document.getElementById('token-secret').hidden \
             && document.getElementById('token-secret-value').value === '' \
             && !document.body.innerText.includes(arguments[0]) \
             && !document.documentElement.outerHTML.includes(arguments[0]);",
            json!([secret]),
        )
        .await;
    assert_eq!(gone, true, "the secret is still on the page");

    // Revoke, confirmed: the row says so and the API refuses the token.
    b.click(&format!("{row} button[data-revoke]")).await;
    b.accept_alert().await;
    b.wait_js(
        "revoked",
        T,
        &format!("const r = document.querySelector(\"{row}\"); return r && r.textContent.includes('revoked') && !r.querySelector('button');"),
    )
    .await;
    bearer
        .get("/containers")
        .await
        .assert_error(401, "auth_error", "INVALID_CREDENTIALS");

    // The create form offers the operator a tenant to create for.
    b.goto(&format!("{}/ui/#/new", s.base)).await;
    b.wait_js(
        "form with tenants",
        T,
        "return document.querySelector('#f-tenant option[value=\"team-c\"]');",
    )
    .await;
    b.type_into("#f-image", BUSYBOX).await;
    // Made stopped (no code to run yet): "Start it now" is on by default.
    b.click("#f-start").await;
    // team-c has a memory quota: its containers must set a memory limit.
    b.type_into("#f-memory", "128m").await;
    b.click("#f-tenant option[value='team-c']").await;
    b.click("#form-submit").await;
    let cuid = b
        .wait_js(
            "detail page",
            T,
            "const m = /^#\\/c\\/([^/]+)$/.exec(location.hash); return m && m[1];",
        )
        .await;
    let r = s
        .get(&format!("/containers/{}", cuid.as_str().unwrap()))
        .await;
    assert_eq!(r.json["tenant"], "team-c", "{}", r.text);
}
