//! Health checks (issue 22): Docker's HEALTHCHECK from the spec's `health`, the observed
//! `health` in the representation, the listing filter and `/events`, `wait=healthy`, the
//! reconciler's restart of an unhealthy container, and the server's own HTTP probe in an
//! image without curl (busybox's `httpd`), under runc and under gVisor with a read-only root.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Long enough for a 1 s check to change its mind a few times on a loaded machine.
const HEALTH_LIMIT: Duration = Duration::from_secs(60);

/// A busybox app healthy while `/tmp/ok` exists; each start appends a line to `/app/starts`.
fn file_app(on_unhealthy: Value) -> Value {
    json!({
        "image": BUSYBOX,
        "command": ["sh", "-c", "echo start >> /app/starts; touch /tmp/ok; exec sleep 3600"],
        "health": {"cmd": ["test", "-f", "/tmp/ok"], "interval": 1, "timeout": 1,
                   "retries": 1, "on_unhealthy": on_unhealthy},
    })
}

/// The cuids a listing answered, compared with `[cuid]`.
fn cuids(r: &Resp) -> Vec<String> {
    r.json["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cuid"].as_str().unwrap().to_owned())
        .collect()
}

/// An app that turns unhealthy: `wait=healthy` answers once the check passes; the
/// representation, `?health=` and `/events` show it turn unhealthy and back; without
/// `on_unhealthy` nothing restarts it.
#[tokio::test]
async fn an_app_that_turns_unhealthy_is_seen_filtered_and_in_events() {
    let s = Server::start().await;
    let cuid = s.create(&file_app(Value::Null)).await;
    let created = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(created.json["health"], Value::Null);
    assert_eq!(created.json["health_check"]["interval"], 1);
    assert_eq!(created.json["health_check"]["start_period"], 0);
    assert_eq!(created.json["health_check"]["http"], Value::Null);

    let r = s
        .post(&format!("/containers/{cuid}/start?wait=healthy"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    assert_eq!(r.json["health"], "healthy", "{}", r.text);

    let healthy = s.get("/containers?health=healthy").await;
    assert_eq!(cuids(&healthy), [cuid.as_str()]);
    assert!(cuids(&s.get("/containers?health=unhealthy").await).is_empty());

    let live = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(live.json["source"], "docker", "{}", live.text);
    assert_eq!(live.json["health"], "healthy", "{}", live.text);

    let (ok, out) = sh_in(&cuid, "0", "rm /tmp/ok");
    assert!(ok, "{out}");
    let seen = s
        .wait_for(&format!("/containers/{cuid}"), HEALTH_LIMIT, |r| {
            r.json["health"] == "unhealthy"
        })
        .await;
    assert_eq!(seen.json["status"], "running");
    assert_eq!(
        cuids(&s.get("/containers?health=unhealthy").await),
        [cuid.as_str()]
    );
    assert_eq!(
        cuids(&s.get("/containers?health=starting,unhealthy").await),
        [cuid.as_str()]
    );
    assert!(cuids(&s.get("/containers?health=healthy").await).is_empty());
    let event = wait_for_event(&s, HEALTH_LIMIT, |c| {
        c["cuid"] == json!(cuid) && c["health"] == "unhealthy"
    })
    .await;
    assert_eq!(
        event["health_check"]["cmd"],
        json!(["test", "-f", "/tmp/ok"])
    );

    // Not restarted (no on_unhealthy): back to healthy only when the file is back.
    let (ok, out) = sh_in(&cuid, "0", "touch /tmp/ok");
    assert!(ok, "{out}");
    s.wait_for(&format!("/containers/{cuid}"), HEALTH_LIMIT, |r| {
        r.json["health"] == "healthy"
    })
    .await;
    let starts = std::fs::read_to_string(s.mount(&cuid).join("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "{starts}");
    wait_for_event(&s, HEALTH_LIMIT, |c| {
        c["cuid"] == json!(cuid) && c["health"] == "healthy"
    })
    .await;

    // Stopped: no health; `none` lists it.
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["health"], Value::Null, "{}", r.text);
    assert_eq!(
        cuids(&s.get("/containers?health=none").await),
        [cuid.as_str()]
    );
    s.get("/containers?health=sick").await.assert_error(
        400,
        "validation_error",
        "INVALID_HEALTH_FILTER",
    );
    s.get("/containers?health=").await.assert_error(
        400,
        "validation_error",
        "INVALID_HEALTH_FILTER",
    );
}

/// `on_unhealthy: restart`: the reconciler restarts the unhealthy app (its command runs
/// again and makes it healthy), `/events` saw it unhealthy first, and the audit log says why.
#[tokio::test]
async fn on_unhealthy_restart_restarts_the_app() {
    let s = Server::start().await;
    let mut body = file_app(json!("restart"));
    body["start"] = json!(true);
    let r = s.post_json("/containers?wait=healthy", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["health"], "healthy", "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();

    let (ok, out) = sh_in(&cuid, "0", "rm /tmp/ok");
    assert!(ok, "{out}");
    let starts = s.mount(&cuid).join("starts");
    wait_until(HEALTH_LIMIT, "a restart for unhealthiness", || {
        std::fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await;
    s.wait_for(&format!("/containers/{cuid}"), HEALTH_LIMIT, |r| {
        r.json["health"] == "healthy"
    })
    .await;
    let unhealthy = wait_for_event(&s, HEALTH_LIMIT, |c| {
        c["cuid"] == json!(cuid) && c["health"] == "unhealthy"
    })
    .await;
    assert_eq!(unhealthy["status"], "running");
    let audit = s.audit_lines();
    assert!(
        audit.iter().any(|l| l["cuid"] == json!(cuid)
            && l["action"] == "restartunhealthy"
            && l["outcome"] == "ok"),
        "{audit:?}"
    );
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["last_error"], Value::Null, "{}", r.text);
}

/// `http`: the server's static probe checks busybox's `httpd` (no curl, no wget used),
/// under runc, and under gVisor with a read-only root; a path that answers 404 is
/// unhealthy, and the probe's output says so.
#[tokio::test]
async fn the_http_probe_works_without_curl_under_runc_and_gvisor() {
    let s = Server::start().await;
    let serve =
        "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www";
    for extra in [json!({}), json!({"isolation": "gvisor", "read_only": true})] {
        let mut body = json!({
            "image": BUSYBOX,
            "command": ["sh", "-c", serve],
            "health": {"http": {"port": 8000}, "interval": 1, "timeout": 2, "retries": 2},
            "start": true,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s.post_json("/containers?wait=healthy", &body).await;
        assert_eq!(r.status, 201, "{extra}: {}", r.text);
        assert_eq!(r.json["health"], "healthy", "{extra}: {}", r.text);
        let cuid = r.json["cuid"].as_str().unwrap().to_owned();
        assert_eq!(
            r.json["health_check"]["http"],
            json!({"port": 8000, "path": "/"})
        );
        let log = r.json["health_log"].as_str().unwrap_or_default();
        assert!(log.contains("HTTP/1.1 200"), "{extra}: {}", r.text);
        // The probe is the server's, read-only in the container.
        let (ok, out) = sh_in(&cuid, "0", "echo x > /.cm-probe");
        assert!(!ok, "{extra}: the probe is writable: {out}");

        // A path the server answers 404 for: unhealthy, and the log says why.
        let r = s
            .patch_json(
                &format!("/containers/{cuid}"),
                &json!({"health": {"http": {"port": 8000, "path": "/missing"}, "interval": 1,
                                   "timeout": 2, "retries": 1}}),
            )
            .await;
        assert_eq!(r.status, 200, "{extra}: {}", r.text);
        let r = s
            .wait_for(&format!("/containers/{cuid}"), HEALTH_LIMIT, |r| {
                r.json["health"] == "unhealthy"
            })
            .await;
        let log = r.json["health_log"].as_str().unwrap_or_default();
        assert!(
            log.contains("/missing") && log.contains("404"),
            "{extra}: {}",
            r.text
        );
        let r = s.delete(&format!("/containers/{cuid}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

/// `wait=healthy` needs a health check (422, nothing started) and is only for routes that
/// start something; a check that never passes is a 408 that says so, the container running.
#[tokio::test]
async fn wait_healthy_needs_a_check_and_times_out_with_the_probe_output() {
    let s = Server::start_with(Options {
        env: vec![("ACTION_TIMEOUT".into(), "4".into())],
        ..Default::default()
    })
    .await;
    let plain = s.create_sleeper().await;
    let r = s
        .post(&format!("/containers/{plain}/start?wait=healthy"))
        .await;
    r.assert_error(422, "state_error", "NO_HEALTH_CHECK");
    let r = s.get(&format!("/containers/{plain}")).await;
    assert_eq!(r.json["desired_state"], "created", "{}", r.text);
    for route in ["stop", "update", "fork", "restore"] {
        s.post_json(
            &format!("/containers/{plain}/{route}?wait=healthy"),
            &json!({}),
        )
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    }
    s.post(&format!("/containers/{plain}/start?wait=sick"))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    s.post_json(
        "/containers?wait=healthy",
        &json!({"image": BUSYBOX, "command": SLEEPER, "start": true}),
    )
    .await
    .assert_error(422, "state_error", "NO_HEALTH_CHECK");
    // Without `start`, a create waits for nothing.
    let r = s
        .post_json("/containers?wait=healthy", &json!({"image": BUSYBOX}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.patch_json(
        &format!("/containers/{plain}?wait=healthy"),
        &json!({"tags": ["t"]}),
    )
    .await
    .assert_error(400, "validation_error", "INVALID_QUERY");

    let failing = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER,
                        "health": {"cmd": ["sh", "-c", "echo not yet; exit 1"], "interval": 1,
                                   "timeout": 1, "retries": 1}}))
        .await;
    let r = s
        .post(&format!("/containers/{failing}/start?wait=healthy"))
        .await;
    r.assert_error(408, "timeout", "ACTION_TIMEOUT");
    assert_eq!(r.json["details"]["status"], "running", "{}", r.text);
    let health = &r.json["details"]["health"];
    assert!(
        *health == "starting" || *health == "unhealthy",
        "{}",
        r.text
    );
    let r = s
        .wait_for(&format!("/containers/{failing}"), HEALTH_LIMIT, |r| {
            r.json["health"] == "unhealthy"
        })
        .await;
    assert_eq!(r.json["health_log"], "not yet", "{}", r.text);
}

/// Bad health specs get the contract's codes, on create and on patch; `null` removes it.
#[tokio::test]
async fn bad_health_specs_are_refused_with_their_codes() {
    let s = Server::start().await;
    let cases = [
        (json!("curl"), "INVALID_HEALTH"),
        (json!({}), "INVALID_HEALTH"),
        (
            json!({"cmd": ["true"], "http": {"port": 80}}),
            "INVALID_HEALTH",
        ),
        (json!({"cmd": ["true"], "url": "x"}), "UNKNOWN_FIELD"),
        (json!({"cmd": []}), "INVALID_HEALTH_CMD"),
        (json!({"cmd": "true"}), "INVALID_HEALTH_CMD"),
        (json!({"http": 8000}), "INVALID_HEALTH_HTTP"),
        (json!({"http": {"port": 0}}), "INVALID_HEALTH_PORT"),
        (json!({"http": {"path": "/"}}), "INVALID_HEALTH_PORT"),
        (
            json!({"http": {"port": 80, "path": "health"}}),
            "INVALID_HEALTH_PATH",
        ),
        (
            json!({"cmd": ["true"], "interval": 0}),
            "INVALID_HEALTH_INTERVAL",
        ),
        (
            json!({"cmd": ["true"], "timeout": 601}),
            "INVALID_HEALTH_TIMEOUT",
        ),
        (
            json!({"cmd": ["true"], "retries": 0}),
            "INVALID_HEALTH_RETRIES",
        ),
        (
            json!({"cmd": ["true"], "start_period": "5s"}),
            "INVALID_HEALTH_START_PERIOD",
        ),
        (
            json!({"cmd": ["true"], "on_unhealthy": "stop"}),
            "INVALID_ON_UNHEALTHY",
        ),
    ];
    for (health, code) in &cases {
        let r = s
            .post_json("/containers", &json!({"image": BUSYBOX, "health": health}))
            .await;
        r.assert_error(400, "validation_error", code);
    }
    assert_eq!(s.count_containers().await, 0);
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "health": {"http": {"port": 80, "path": "/a b"}}}),
        )
        .await;
    r.assert_error(400, "validation_error", "INVALID_HEALTH_PATH");
    assert_eq!(r.json["details"]["field"], "health.http.path");

    let cuid = s
        .create(&json!({"image": BUSYBOX, "health": {"cmd": ["true"]}}))
        .await;
    for (health, code) in &cases {
        let r = s
            .patch_json(&format!("/containers/{cuid}"), &json!({ "health": health }))
            .await;
        r.assert_error(400, "validation_error", code);
    }
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"health": null}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["health_check"], Value::Null);
}
