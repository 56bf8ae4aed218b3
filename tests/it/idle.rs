//! Idle policies (docs/API.md, idle): a container nobody uses is paused or stopped by the
//! server (`status_reason: "idle"`), traffic to it keeps it awake, and a terminal, an upload
//! or a start wakes it first (`Server-Timing: resume;dur=…`) unless `resume_on_use` is false.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A server that samples idle clocks every second.
async fn server() -> Server {
    Server::start_with(Options {
        env: vec![("IDLE_SAMPLE_INTERVAL".into(), "1".into())],
        ..Options::default()
    })
    .await
}

/// Waits until the container is `status` with `status_reason: "idle"`.
async fn until_idle(s: &Server, cuid: &str, status: &str, limit: Duration) -> Resp {
    s.wait_for(&format!("/containers/{cuid}"), limit, |r| {
        r.json["status"] == status && r.json["status_reason"] == "idle"
    })
    .await
}

/// `resume;dur=<ms>` with a number.
fn assert_resume_timing(headers: &reqwest::header::HeaderMap, what: &str) {
    let v = headers
        .get("server-timing")
        .unwrap_or_else(|| panic!("{what}: no Server-Timing header"))
        .to_str()
        .unwrap();
    let dur = v
        .strip_prefix("resume;dur=")
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(dur.parse::<f64>().is_ok_and(|d| d >= 0.0), "{what}: {v}");
}

fn sleeper_with(idle: Value) -> Value {
    json!({"image": BUSYBOX, "command": SLEEPER, "idle": idle})
}

#[tokio::test]
async fn an_idle_container_pauses_and_a_terminal_wakes_it() {
    let s = server().await;
    let cuid = s
        .create_started(&sleeper_with(json!({"after": 5, "action": "pause"})))
        .await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(
        r.json["idle"],
        json!({"after": 5, "action": "pause", "resume_on_use": true})
    );
    assert_eq!(r.json["status_reason"], Value::Null);

    let began = Instant::now();
    until_idle(&s, &cuid, "paused", Duration::from_secs(30)).await;
    assert!(
        began.elapsed() >= Duration::from_secs(4),
        "paused before its 5 s: {:?}",
        began.elapsed()
    );
    assert_eq!(
        docker_inspect(&cuid).unwrap()["State"]["Status"],
        "paused",
        "Docker has it paused"
    );
    // /events says so, with the reason.
    let c = cuid.clone();
    let ev = wait_event(&s, Duration::from_secs(10), move |v| {
        v["cuid"] == c.as_str()
            && v["container"]["status"] == "paused"
            && v["container"]["status_reason"] == "idle"
    })
    .await;
    assert_eq!(ev["container"]["desired_state"], "paused");
    // And the audit log names the idle policy as the actor.
    assert!(
        s.audit_lines()
            .iter()
            .any(|l| l["actor"] == "idle" && l["cuid"] == cuid.as_str() && l["action"] == "pause"),
        "no audit line of the idle policy"
    );

    // A terminal (an exec) on it works: it is unpaused first, the 101 says how long it took.
    let (ws, headers) = s
        .ws_with_headers(&format!(
            "/ws/{cuid}?main=false&cmd={}",
            url_encode("echo woke-$((40+2))")
        ))
        .await;
    assert_resume_timing(&headers, "terminal");
    let mut t = Term::on(ws);
    assert_eq!(t.until_exit(Duration::from_secs(30)).await, 0);
    assert!(t.out().contains("woke-42"), "{}", t.out());
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["desired_state"], "running");
    assert_eq!(r.json["status_reason"], Value::Null);

    // An open terminal keeps it awake past `after`; once closed, it goes idle again.
    let mut open = Term::open(&s, &format!("/ws/{cuid}?main=false")).await;
    open.stdin("echo ready\n").await;
    open.until(Duration::from_secs(10), "ready", |t| {
        t.out().contains("ready")
    })
    .await;
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(8) {
        let r = s.get(&format!("/containers/{cuid}")).await;
        assert_eq!(r.json["status"], "running", "paused under an open terminal");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(open);
    until_idle(&s, &cuid, "paused", Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_stopped_container_is_resumed_by_an_upload_and_by_a_start() {
    let s = server().await;
    let cuid = s
        .create_started(&sleeper_with(json!({"after": 5, "action": "stop"})))
        .await;
    until_idle(&s, &cuid, "stopped", Duration::from_secs(30)).await;

    // An upload starts it first and says how long that took.
    let zip = zip_of(&[("hello.txt", b"hi")]);
    let r = s.upload_zip(&cuid, "", zip).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_resume_timing(&r.headers, "upload");
    assert_eq!(
        std::fs::read(s.mount(&cuid).join("hello.txt")).unwrap(),
        b"hi"
    );
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["status_reason"], Value::Null);

    // Idle again; a start resumes it the same way.
    until_idle(&s, &cuid, "stopped", Duration::from_secs(30)).await;
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["status_reason"], Value::Null);
    assert_resume_timing(&r.headers, "start");

    // A client's own stop is not the policy's: no reason, and a start is a plain start.
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);
    assert_eq!(r.json["status_reason"], Value::Null);
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("server-timing").is_none(), "a plain start");
}

#[tokio::test]
async fn a_start_on_a_container_paused_by_the_policy_unpauses_it() {
    let s = server().await;
    let cuid = s.create_started(&sleeper_with(json!({"after": 5}))).await;
    until_idle(&s, &cuid, "paused", Duration::from_secs(30)).await;
    // A plain `start` on a paused container is 422; on one the policy paused, it resumes.
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_resume_timing(&r.headers, "start");
}

#[tokio::test]
async fn traffic_to_a_published_port_keeps_a_container_awake() {
    traffic_keeps_awake("runc").await;
}

/// Under gVisor the counters are those of the `runsc` sandbox's network namespace: traffic
/// moves them as under runc (README, "Idle stop and pause").
#[tokio::test]
async fn traffic_keeps_a_gvisor_container_awake_too() {
    traffic_keeps_awake("gvisor").await;
}

/// Two httpd containers under `isolation`: the one polled stays up, the other goes idle;
/// left alone, the polled one goes idle too.
async fn traffic_keeps_awake(isolation: &str) {
    let s = server().await;
    let r = s.get("/healthz").await;
    assert!(
        r.json["isolations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i == isolation)),
        "{isolation} not offered (scripts/setup-gvisor.sh): {}",
        r.text
    );
    let httpd = |port: u16| {
        json!({"image": BUSYBOX, "command": ["httpd", "-f", "-p", "8000", "-h", "/app"],
               "ports": [{"host": port, "container": 8000}], "isolation": isolation,
               "idle": {"after": 5, "action": "pause"}})
    };
    let (busy_port, quiet_port) = (free_port(), free_port());
    let busy = s.create_started(&httpd(busy_port)).await;
    let quiet = s.create_started(&httpd(quiet_port)).await;
    // A new connection per poll (busybox httpd closes each one; a pooled one may be stale).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let poll = |port: u16| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // httpd answers (a 404 for the empty /app is an answer) once it listens: under gVisor
    // that takes a moment after `running`.
    let listening = Instant::now();
    while poll(busy_port).await.is_err() {
        assert!(
            listening.elapsed() < Duration::from_secs(20),
            "httpd never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Polled every half second (well under `after`), the busy one stays up while the
    // quiet one goes idle; then it stays up a further twice `after`.
    let began = Instant::now();
    let mut quiet_paused_at = None;
    loop {
        // A poll is traffic whatever its answer; httpd under gVisor (ptrace) now and then
        // drops a connection on this busy machine, so a few tries.
        let mut tries = 0;
        while let Err(e) = poll(busy_port).await {
            tries += 1;
            if tries == 5 {
                let b = s.get(&format!("/containers/{busy}")).await;
                panic!(
                    "httpd stopped answering after {:?}: {e:?}; {}",
                    began.elapsed(),
                    b.text
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let b = s.get(&format!("/containers/{busy}")).await;
        assert_eq!(b.json["status"], "running", "traffic did not keep it awake");
        if quiet_paused_at.is_none() {
            let q = s.get(&format!("/containers/{quiet}")).await;
            if q.json["status"] == "paused" {
                assert_eq!(q.json["status_reason"], "idle");
                quiet_paused_at = Some(Instant::now());
            }
            assert!(
                began.elapsed() < Duration::from_secs(40),
                "the quiet one never went idle"
            );
        }
        if quiet_paused_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Left alone, the busy one goes idle too.
    until_idle(&s, &busy, "paused", Duration::from_secs(30)).await;
}

#[tokio::test]
async fn resume_on_use_false_keeps_the_usual_answers() {
    let s = server().await;
    let cuid = s
        .create_started(&sleeper_with(
            json!({"after": 5, "action": "pause", "resume_on_use": false}),
        ))
        .await;
    until_idle(&s, &cuid, "paused", Duration::from_secs(30)).await;

    s.post(&format!("/containers/{cuid}/start"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    let mut t = Term::open(&s, &format!("/ws/{cuid}?main=false&cmd=true")).await;
    t.until_closed(Duration::from_secs(10)).await;
    assert_eq!(
        t.errors.first().map(|e| e["error"]["code"].clone()),
        Some(json!("CONTAINER_NOT_RUNNING")),
        "{:?}",
        t.errors
    );
    // Files are the host's: an upload works on the paused container and wakes nothing.
    let r = s.upload_zip(&cuid, "", zip_of(&[("a.txt", b"a")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("server-timing").is_none());
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "paused");
    assert_eq!(r.json["status_reason"], "idle");

    // The client's own unpause clears the reason.
    let r = s.post(&format!("/containers/{cuid}/unpause")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["status_reason"], Value::Null);
}

#[tokio::test]
async fn a_resume_counts_against_max_running() {
    let s = server().await;
    s.put_tenant("idleq", &json!({"max_running": 1})).await;
    let q = s.token("write", Some("idleq")).await;
    let r = q
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "start": true,
                    "idle": {"after": 5, "action": "stop"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sleepy = r.json["cuid"].as_str().unwrap().to_owned();
    until_idle(&s, &sleepy, "stopped", Duration::from_secs(30)).await;

    // Its slot is taken by another meanwhile: the resume is refused with the quota's error.
    let r = q
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let other = r.json["cuid"].as_str().unwrap().to_owned();
    let upload = || {
        q.request(
            reqwest::Method::POST,
            &format!("/containers/{sleepy}/upload-zip"),
        )
        .header("content-type", "application/zip")
        .body(zip_of(&[("x.txt", b"x")]))
    };
    let r = s.send(upload()).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_running");
    let r = s.get(&format!("/containers/{sleepy}")).await;
    assert_eq!(r.json["status"], "stopped");
    assert_eq!(r.json["status_reason"], "idle");

    // Once the slot is free again, the same upload resumes it.
    let r = q.post(&format!("/containers/{other}/stop")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.send(upload()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_resume_timing(&r.headers, "upload");
}

#[tokio::test]
async fn bad_idle_input_gets_the_contracts_errors_and_a_change_recreates_nothing() {
    let s = Server::start().await;
    let cases = [
        (json!("60"), "INVALID_IDLE", "idle"),
        (json!({}), "INVALID_IDLE_AFTER", "idle.after"),
        (json!({"after": 4}), "INVALID_IDLE_AFTER", "idle.after"),
        (
            json!({"after": 2592001}),
            "INVALID_IDLE_AFTER",
            "idle.after",
        ),
        (json!({"after": 1.5}), "INVALID_IDLE_AFTER", "idle.after"),
        (
            json!({"after": 10, "action": "sleep"}),
            "INVALID_IDLE_ACTION",
            "idle.action",
        ),
        (
            json!({"after": 10, "resume_on_use": 1}),
            "INVALID_IDLE_RESUME",
            "idle.resume_on_use",
        ),
        (
            json!({"after": 10, "when": 1}),
            "UNKNOWN_FIELD",
            "idle.when",
        ),
    ];
    for (idle, code, field) in &cases {
        let r = s
            .post_json("/containers", &json!({"image": BUSYBOX, "idle": idle}))
            .await;
        r.assert_error(400, "validation_error", code);
        assert_eq!(r.json["details"]["field"], *field, "{idle}");
    }
    assert_eq!(s.count_containers().await, 0);

    let cuid = s.running_sleeper().await;
    let before = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(before.json["idle"], Value::Null);
    let id = docker_inspect(&cuid).unwrap()["Id"].clone();
    for (idle, code, _) in &cases {
        s.patch_json(&format!("/containers/{cuid}"), &json!({"idle": idle}))
            .await
            .assert_error(400, "validation_error", code);
    }
    // A policy set, changed and removed: no new generation, the same Docker container.
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"idle": {"after": 3600, "action": "stop"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["idle"],
        json!({"after": 3600, "action": "stop", "resume_on_use": true})
    );
    assert_eq!(r.json["generation"], before.json["generation"]);
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"idle": null}))
        .await;
    assert_eq!(r.json["idle"], Value::Null);
    assert_eq!(r.json["status"], "running");
    assert_eq!(docker_inspect(&cuid).unwrap()["Id"], id, "not recreated");
}
