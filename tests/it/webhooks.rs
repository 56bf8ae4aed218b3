//! Webhooks (docs/API.md §14): the routes and their validation, what a URL may point to,
//! signed deliveries of a container's death with its representation, a receiver that is
//! down for a while, `kill -9` between an event and its delivery, and tenant isolation. The
//! receiver is a real HTTP server in this process, on 127.0.0.1 (which the servers here
//! allow with `WEBHOOK_ALLOWLIST=127.0.0.1/32`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::*;

const SECRET: &str = "a-webhook-secret-0123456789";

/// A server whose webhooks may call the receiver on 127.0.0.1, retrying within 2 s.
async fn server() -> Server {
    Server::start_with(Options {
        env: vec![
            ("WEBHOOK_ALLOWLIST".into(), "127.0.0.1/32".into()),
            ("WEBHOOK_BACKOFF_MAX".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await
}

fn verify(r: &Received) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(r.header("x-cm-signature"), format!("sha256={want}"));
    assert_eq!(r.header("x-cm-delivery"), r.json()["delivery"]);
    assert_eq!(r.header("content-type"), "application/json");
}

/// A busybox container that runs until `/tmp/die` exists, then exits with the code written
/// in it (removing it first, so a start runs it again).
fn mortal() -> Value {
    json!({
        "image": BUSYBOX,
        "restart": "no",
        "command": ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.1; done; code=$(cat /tmp/die); rm /tmp/die; exit $code"],
    })
}

fn kill_with(cuid: &str, code: i32) {
    // As the container's own user, so that its script may remove the file.
    let out = std::process::Command::new("docker")
        .args(["exec", cuid, "sh", "-c", &format!("echo {code} > /tmp/die")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs it again after its exit (a start is a no-op while `running` is still desired).
async fn revive(s: &Server, cuid: &str) {
    let r = s.post(&format!("/containers/{cuid}/restart")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
}

async fn wait_exited(s: &Server, cuid: &str, code: i64) {
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(30),
        |r| r.json["status"] == "exited" && r.json["exit_code"] == code,
    )
    .await;
}

/// The events received about `cuid`, in order.
fn events_of(got: &[Received], cuid: &str) -> Vec<String> {
    got.iter()
        .map(Received::json)
        .filter(|b| b["cuid"] == cuid)
        .map(|b| b["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn routes_validation_and_url_rules() {
    // No allowlist: the defaults hold.
    let s = Server::start().await;
    let base = json!({"url": "http://93.184.216.34/hook", "events": ["died"], "secret": SECRET});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (url, code) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "WEBHOOK_URL_FORBIDDEN",
        ),
        ("http://127.0.0.1:9/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://[::1]/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://localhost:9/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://10.0.0.1/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://172.17.0.1/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://2130706433/", "INVALID_WEBHOOK_URL"),
        ("https://93.184.216.34/", "INVALID_WEBHOOK_URL"),
        ("http://u:p@93.184.216.34/", "INVALID_WEBHOOK_URL"),
        ("file:///etc/passwd", "INVALID_WEBHOOK_URL"),
    ] {
        let r = s.post_json("/webhooks", &with("url", json!(url))).await;
        r.assert_error(400, "validation_error", code);
        assert_eq!(r.json["details"]["field"], "url", "{url}: {}", r.text);
    }
    for (field, v, code) in [
        ("events", json!([]), "INVALID_WEBHOOK_EVENTS"),
        ("events", json!(["exploded"]), "INVALID_WEBHOOK_EVENTS"),
        ("events", json!("died"), "INVALID_WEBHOOK_EVENTS"),
        ("tags", json!(["bad tag"]), "INVALID_WEBHOOK_TAGS"),
        ("secret", json!("short"), "INVALID_WEBHOOK_SECRET"),
        ("secret", Value::Null, "INVALID_WEBHOOK_SECRET"),
        ("color", json!("red"), "UNKNOWN_FIELD"),
    ] {
        let r = s.post_json("/webhooks", &with(field, v)).await;
        r.assert_error(400, "validation_error", code);
    }

    // Every kind of the issue is accepted, and `*`.
    let all = json!([
        "died",
        "oom",
        "unhealthy",
        "healthy",
        "restarting",
        "expired",
        "deleted",
        "update_available",
        "updated",
        "*"
    ]);
    let r = s.post_json("/webhooks", &with("events", all)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    assert!(r.json.get("secret").is_none(), "the secret is write-only");
    assert!(!r.text.contains(SECRET));
    assert_eq!(r.json["tags"], Value::Null);
    assert_eq!(r.json["tenant"], Value::Null);

    let r = s.get("/webhooks").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["webhooks"].as_array().unwrap().len(), 1);
    assert!(!r.text.contains(SECRET));

    let r = s
        .patch_json(
            &format!("/webhooks/{id}"),
            &json!({"events": ["oom"], "tags": ["web"], "secret": "another-secret-0123456789"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["events"], json!(["oom"]));
    assert_eq!(r.json["tags"], json!(["web"]));
    assert!(!r.text.contains("another-secret"));
    let r = s
        .patch_json(
            &format!("/webhooks/{id}"),
            &json!({"url": "http://169.254.169.254/"}),
        )
        .await;
    r.assert_error(400, "validation_error", "WEBHOOK_URL_FORBIDDEN");
    let r = s.get(&format!("/webhooks/{id}")).await;
    assert_eq!(r.json["url"], "http://93.184.216.34/hook", "unchanged");
    assert_eq!(r.json["pending"], 0);
    let r = s.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(r.json["deliveries"], json!([]));

    assert_eq!(s.delete(&format!("/webhooks/{id}")).await.status, 204);
    s.get(&format!("/webhooks/{id}"))
        .await
        .assert_error(404, "not_found", "WEBHOOK_NOT_FOUND");
    s.delete(&format!("/webhooks/{id}"))
        .await
        .assert_error(404, "not_found", "WEBHOOK_NOT_FOUND");
}

/// A container that dies fires `died`, signed, with its representation; its deletion fires
/// `deleted`; the attempts are listed with their status and latency.
#[tokio::test]
async fn a_death_is_delivered_signed_with_the_representation() {
    let s = server().await;
    let rx = Receiver::start().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/hook?x=1"), "events": ["*"], "tags": null, "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    // Subscribed to `oom` only: a plain death is not for it.
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/oom"), "events": ["oom"], "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let cuid = s.create_started(&mortal()).await;
    kill_with(&cuid, 3);
    wait_exited(&s, &cuid, 3).await;
    let got = rx
        .wait_for(Duration::from_secs(30), "a died event", |g| !g.is_empty())
        .await;
    let first = &got[0];
    verify(first);
    assert_eq!(first.path, "/hook?x=1");
    assert_eq!(first.header("x-cm-event"), "died");
    let body = first.json();
    assert_eq!(body["event"], "died");
    assert_eq!(body["cuid"], cuid);
    assert_eq!(body["webhook"], id);
    assert!(body["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["container"]["cuid"], cuid);
    assert_eq!(body["container"]["status"], "exited");
    assert_eq!(body["container"]["exit_code"], 3);
    assert_eq!(body["container"]["oom_killed"], false);

    assert_eq!(
        s.delete(&format!("/containers/{cuid}?wait=true"))
            .await
            .status,
        200
    );
    let got = rx
        .wait_for(Duration::from_secs(30), "a deleted event", |g| g.len() >= 2)
        .await;
    assert_eq!(events_of(&got, &cuid), ["died", "deleted"]);
    verify(&got[1]);
    assert!(
        got.iter().all(|g| g.path.starts_with("/hook")),
        "nothing for the oom webhook"
    );

    let r = s
        .wait_for(
            &format!("/webhooks/{id}/deliveries"),
            Duration::from_secs(10),
            |r| {
                r.json["deliveries"]
                    .as_array()
                    .is_some_and(|d| d.len() == 2)
            },
        )
        .await;
    let d = &r.json["deliveries"][1];
    assert_eq!(d["delivery"], body["delivery"]);
    assert_eq!(d["event"], "died");
    assert_eq!(d["status_code"], 200);
    assert_eq!(d["outcome"], "delivered");
    assert_eq!(d["attempt"], 1);
    assert!(d["latency_ms"].as_i64().unwrap() >= 0);
    assert_eq!(d["error"], Value::Null);
}

/// A receiver that refuses connections for a while gets every event, in order, once back;
/// the failed attempts are listed with their error.
#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_in_order() {
    let s = server().await;
    let mut rx = Receiver::down_at_first().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/"), "events": ["died", "deleted"], "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();

    let cuid = s.create_started(&mortal()).await;
    kill_with(&cuid, 3);
    wait_exited(&s, &cuid, 3).await;
    revive(&s, &cuid).await;
    kill_with(&cuid, 4);
    wait_exited(&s, &cuid, 4).await;
    assert_eq!(
        s.delete(&format!("/containers/{cuid}?wait=true"))
            .await
            .status,
        200
    );

    s.wait_for(&format!("/webhooks/{id}"), Duration::from_secs(30), |r| {
        r.json["pending"] == 3
    })
    .await;
    let r = s
        .wait_for(
            &format!("/webhooks/{id}/deliveries"),
            Duration::from_secs(30),
            |r| {
                r.json["deliveries"]
                    .as_array()
                    .is_some_and(|d| d.len() >= 2)
            },
        )
        .await;
    for d in r.json["deliveries"].as_array().unwrap() {
        assert_eq!(d["outcome"], "retrying", "{d}");
        assert_eq!(d["event"], "died", "a later event waits for the first: {d}");
        assert_eq!(d["status_code"], Value::Null);
        assert!(d["error"].as_str().unwrap().contains("connect"), "{d}");
    }
    assert!(rx.received().is_empty());

    rx.up().await;
    let got = rx
        .wait_for(Duration::from_secs(30), "three events", |g| g.len() >= 3)
        .await;
    assert_eq!(events_of(&got, &cuid), ["died", "died", "deleted"]);
    let codes: Vec<Value> = got[..2]
        .iter()
        .map(|g| g.json()["container"]["exit_code"].clone())
        .collect();
    assert_eq!(codes, [json!(3), json!(4)]);
    got.iter().for_each(verify);
    s.wait_for(&format!("/webhooks/{id}"), Duration::from_secs(10), |r| {
        r.json["pending"] == 0
    })
    .await;
}

/// `kill -9` after an event was classified and before it could be delivered loses nothing,
/// and a death that happens while the server is down is classified when it comes back
/// (against the state stored at the last classification).
#[tokio::test]
async fn kill9_between_an_event_and_its_delivery_loses_nothing() {
    let mut s = server().await;
    let mut rx = Receiver::down_at_first().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/"), "events": ["died"], "secret": SECRET}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let cuid = s.create_started(&mortal()).await;
    kill_with(&cuid, 5);
    wait_exited(&s, &cuid, 5).await;
    let r = s
        .wait_for(
            &format!("/webhooks/{id}/deliveries"),
            Duration::from_secs(30),
            |r| {
                r.json["deliveries"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty())
            },
        )
        .await;
    let delivery = r.json["deliveries"][0]["delivery"]
        .as_str()
        .unwrap()
        .to_owned();

    s.kill9();
    rx.up().await;
    s.start_again().await;
    let got = rx
        .wait_for(
            Duration::from_secs(30),
            "the died event after the restart",
            |g| !g.is_empty(),
        )
        .await;
    assert_eq!(
        got[0].json()["delivery"],
        delivery.as_str(),
        "the same delivery"
    );
    assert_eq!(got[0].json()["container"]["exit_code"], 5);
    verify(&got[0]);

    // Dies while the server is down: classified after the restart.
    revive(&s, &cuid).await;
    s.kill9();
    kill_with(&cuid, 6);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while docker(&["inspect", "-f", "{{.State.Status}}", &cuid]).trim() != "exited" {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.start_again().await;
    let got = rx
        .wait_for(Duration::from_secs(60), "the death while down", |g| {
            g.len() >= 2
        })
        .await;
    assert_eq!(events_of(&got, &cuid), ["died", "died"]);
    assert_eq!(got[1].json()["container"]["exit_code"], 6);
}

/// A tenant's webhook gets only its tenant's events; a tenant sees and manages only its own
/// webhooks; the operator's need `admin`, and get every tenant's events.
#[tokio::test]
async fn tenants_are_isolated() {
    let s = server().await;
    let rx = Receiver::start().await;
    s.put_tenant("hook-a", &json!({})).await;
    s.put_tenant("hook-b", &json!({})).await;
    let a = s.token("write", Some("hook-a")).await;
    let b = s.token("write", Some("hook-b")).await;
    let a_read = s.token("read", Some("hook-a")).await;
    let op_write = s.token("write", None).await;

    let hook = |path: &str| json!({"url": rx.url(path), "events": ["*"], "secret": SECRET});
    let r = a.post_json("/webhooks", &hook("/a")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["tenant"], "hook-a");
    let a_id = r.json["id"].as_str().unwrap().to_owned();
    let r = b.post_json("/webhooks", &hook("/b")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b_id = r.json["id"].as_str().unwrap().to_owned();
    let r = s.post_json("/webhooks", &hook("/op")).await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Scopes: a tenant's read token and the operator's write token are refused.
    a_read
        .get("/webhooks")
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    op_write
        .post_json("/webhooks", &hook("/x"))
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    // Another tenant's webhook does not exist.
    let r = a.get("/webhooks").await;
    let ids: Vec<&str> = r.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_id.as_str()]);
    for r in [
        a.get(&format!("/webhooks/{b_id}")).await,
        a.get(&format!("/webhooks/{b_id}/deliveries")).await,
        a.patch_json(&format!("/webhooks/{b_id}"), &json!({"events": ["died"]}))
            .await,
        a.delete(&format!("/webhooks/{b_id}")).await,
    ] {
        r.assert_error(404, "not_found", "WEBHOOK_NOT_FOUND");
    }
    assert_eq!(
        s.get("/webhooks").await.json["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let mut cuids = Vec::new();
    for (who, code) in [(&a, 7), (&b, 8)] {
        let mut body = mortal();
        body["start"] = json!(true);
        let r = who.post_json("/containers", &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let cuid = r.json["cuid"].as_str().unwrap().to_owned();
        s.wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(30),
            |r| r.json["status"] == "running",
        )
        .await;
        kill_with(&cuid, code);
        wait_exited(&s, &cuid, i64::from(code)).await;
        cuids.push(cuid);
    }
    // Delivery is at least once: a receiver tells a repeat by its delivery id, and so does
    // this test (a loaded machine may time an answer out and send it again).
    let distinct = |g: &[Received]| {
        let mut ids: Vec<String> = g.iter().map(|r| r.json()["delivery"].to_string()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let got = rx
        .wait_for(Duration::from_secs(30), "four deaths", |g| distinct(g) >= 4)
        .await;
    let at = |path: &str| -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        got.iter()
            .filter(|g| g.path == path)
            .map(Received::json)
            .filter(|b| seen.insert(b["delivery"].to_string()))
            .map(|b| {
                format!(
                    "{} {}",
                    b["event"].as_str().unwrap(),
                    b["cuid"].as_str().unwrap()
                )
            })
            .collect()
    };
    let died = |cuid: &String| format!("died {cuid}");
    assert_eq!(at("/a"), [died(&cuids[0])]);
    assert_eq!(at("/b"), [died(&cuids[1])]);
    let mut op = at("/op");
    op.sort();
    let mut both: Vec<String> = cuids.iter().map(died).collect();
    both.sort();
    assert_eq!(op, both);
}

/// An OOM kill fires `died` and `oom`, and the representation says `oom_killed`.
#[tokio::test]
async fn an_oom_kill_fires_oom() {
    let s = server().await;
    let rx = Receiver::start().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/"), "events": ["died", "oom"], "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Once told to, its main process (exec'd) touches far more than its memory limit.
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX,
            "restart": "no",
            "resources": {"memory": "8m"},
            "command": ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.1; done; exec dd if=/dev/zero of=/dev/null bs=256M count=1"],
        }))
        .await;
    kill_with(&cuid, 0);
    let rep = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(30),
            |r| r.json["status"] == "exited",
        )
        .await;
    assert_eq!(rep.json["oom_killed"], true, "{}", rep.text);
    let got = rx
        .wait_for(Duration::from_secs(30), "died and oom", |g| g.len() >= 2)
        .await;
    assert_eq!(events_of(&got, &cuid), ["died", "oom"]);
    assert_eq!(got[1].json()["container"]["oom_killed"], true);
}

/// A receiver that accepts connections and never answers holds only its own webhook: another
/// webhook gets the same event at once.
#[tokio::test]
async fn a_hanging_receiver_does_not_delay_other_webhooks() {
    let s = server().await;
    let rx = Receiver::start().await;
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((sock, _)) = hang.accept().await {
            sockets.push(sock);
        }
    });
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": format!("http://127.0.0.1:{hang_port}/"), "events": ["*"], "secret": SECRET}),
        )
        .await;
    let hanging = r.json["id"].as_str().unwrap().to_owned();
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/"), "events": ["*"], "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let cuid = s.create_started(&mortal()).await;
    kill_with(&cuid, 3);
    wait_exited(&s, &cuid, 3).await;
    let started = std::time::Instant::now();
    rx.wait_for(Duration::from_secs(5), "the other webhook's event", |g| {
        !g.is_empty()
    })
    .await;
    // The hanging one is still in its first attempt (WEBHOOK_TIMEOUT is 10 s).
    let r = s.get(&format!("/webhooks/{hanging}/deliveries")).await;
    assert_eq!(r.json["deliveries"], json!([]), "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

/// A delivery that cannot be made within `WEBHOOK_MAX_AGE` is given up (`failed`) and
/// leaves the outbox.
#[tokio::test]
async fn a_delivery_is_given_up_after_the_max_age() {
    let s = Server::start_with(Options {
        env: vec![
            ("WEBHOOK_ALLOWLIST".into(), "127.0.0.1/32".into()),
            ("WEBHOOK_BACKOFF_MAX".into(), "1".into()),
            ("WEBHOOK_MAX_AGE".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    let rx = Receiver::down_at_first().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/"), "events": ["died"], "secret": SECRET}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let cuid = s.create_started(&mortal()).await;
    kill_with(&cuid, 3);
    wait_exited(&s, &cuid, 3).await;
    let r = s
        .wait_for(
            &format!("/webhooks/{id}/deliveries"),
            Duration::from_secs(30),
            |r| r.json["deliveries"][0]["outcome"] == "failed",
        )
        .await;
    assert!(
        r.json["deliveries"].as_array().unwrap().len() >= 2,
        "{}",
        r.text
    );
    assert_eq!(s.get(&format!("/webhooks/{id}")).await.json["pending"], 0);
}
