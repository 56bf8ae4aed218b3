//! The foundation: start-up refusals, auth and its throttling, the error body everywhere,
//! request ids, the audit log, health, and state surviving a restart.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[test]
fn refuses_to_start_without_credentials() {
    let (status, err) = run_to_exit(&[("APP_USER", "admin")]);
    assert!(!status.success());
    assert!(err.contains("APP_PASS"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    let (status, err) = run_to_exit(&[("APP_PASS", "x")]);
    assert!(!status.success());
    assert!(err.contains("APP_USER"), "{err}");

    let (status, err) =
        run_to_exit(&[("APP_USER", "a"), ("APP_PASS", "your_secure_password_here")]);
    assert!(!status.success());
    assert!(err.contains("placeholder"), "{err}");
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let s = Server::start().await;
    let url = format!("{}/healthz", s.base);

    let r = Resp::from(s.client.get(&url).send().await.unwrap()).await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"container-manager\"")
    );

    let r = Resp::from(
        s.client
            .get(&url)
            .header("authorization", basic_auth(USER, "wrong"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(401, "auth_error", "INVALID_CREDENTIALS");

    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The default daemon does not remap user namespaces (tests/it/userns.rs: one that does).
    assert!(r.json["userns"].is_null(), "{}", r.text);

    // /livez needs nothing and says nothing else.
    let r = Resp::from(
        s.client
            .get(format!("{}/livez", s.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));

    // Unknown routes are behind auth too.
    let r = Resp::from(
        s.client
            .get(format!("{}/nope", s.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
}

/// While an address is blocked, every request from it is `429` without its credentials being
/// looked at (the right password too: a guesser must not recognise it by a `200`); another
/// address is unaffected; the block ends by itself.
#[tokio::test]
async fn a_blocked_address_is_refused_without_checking_credentials() {
    let s = Server::start_with(Options {
        env: vec![("AUTH_MAX_FAILURES".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let url = format!("{}/healthz", s.base);
    let bad = || {
        s.client
            .get(&url)
            .header("authorization", basic_auth(USER, "guess"))
    };
    for _ in 0..3 {
        assert_eq!(bad().send().await.unwrap().status(), 401);
    }
    let r = Resp::from(bad().send().await.unwrap()).await;
    r.assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");

    // The right credentials from the blocked address: 429 as well, nothing revealed.
    let r = s.get("/healthz").await;
    r.assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");

    // Another address (127.0.0.2 reaches the server on 127.0.0.1) is not affected.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let ok = other
        .get(&url)
        .header("authorization", basic_auth(USER, PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = other
        .get(&url)
        .header("authorization", basic_auth(USER, "guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The block ends by itself; then the right credentials pass and clear the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get("/healthz").await;
        if r.status == 200 {
            break;
        }
        r.assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
        assert!(
            std::time::Instant::now() < deadline,
            "the block never ended"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(bad().send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn every_error_has_the_contract_body() {
    let s = Server::start().await;

    s.get("/no/such/route")
        .await
        .assert_error(404, "not_found", "ROUTE_NOT_FOUND");
    s.send(s.request(Method::DELETE, "/healthz"))
        .await
        .assert_error(405, "method_not_allowed", "METHOD_NOT_ALLOWED");

    let r = s
        .send(
            s.request(Method::POST, "/containers")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    r.assert_error(400, "validation_error", "INVALID_JSON");
    assert!(
        r.json.get("stacktrace").is_none(),
        "no stacktrace outside development"
    );

    let r = s
        .send(
            s.request(Method::POST, "/containers")
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    r.assert_error(400, "validation_error", "UNSUPPORTED_CONTENT_TYPE");

    let big = format!("{{\"image\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = s
        .send(
            s.request(Method::POST, "/containers")
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.assert_error(413, "payload_too_large", "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn development_mode_adds_a_stacktrace() {
    let s = Server::start_with(Options {
        env: vec![("APP_ENV".into(), "development".into())],
        ..Default::default()
    })
    .await;
    let r = s.get("/no/such/route").await;
    r.assert_error(404, "not_found", "ROUTE_NOT_FOUND");
    assert!(
        r.json["stacktrace"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let s = Server::start().await;
    let r = s
        .send(
            s.request(Method::GET, "/nope")
                .header("x-request-id", "my-req-42"),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("my-req-42"));
    assert_eq!(r.json["request_id"], "my-req-42");

    let r = s
        .send(
            s.request(Method::GET, "/healthz")
                .header("x-request-id", "bad id\twith tab"),
        )
        .await;
    let rid = r.header("x-request-id").unwrap();
    assert!(
        uuid::Uuid::parse_str(rid).is_ok(),
        "fresh uuid instead of an unsafe id: {rid}"
    );
}

#[tokio::test]
async fn audit_log_has_a_line_per_request_and_no_secrets() {
    let s = Server::start().await;
    s.send(
        s.request(Method::GET, "/healthz")
            .header("x-request-id", "audit-ok"),
    )
    .await;
    let url = format!("{}/healthz", s.base);
    s.client
        .get(&url)
        .header("authorization", basic_auth(USER, "not-the-password"))
        .header("x-request-id", "audit-fail")
        .send()
        .await
        .unwrap();
    // Concurrent requests still give whole lines.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let rb = s
            .request(Method::GET, "/livez")
            .header("x-request-id", format!("burst-{i}"));
        tasks.push(tokio::spawn(
            async move { rb.send().await.unwrap().status() },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    let lines = s.audit_lines();
    let ok = lines
        .iter()
        .find(|l| l["request_id"] == "audit-ok")
        .expect("line for the request");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/healthz");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["user"], USER);
    assert!(ok["duration_ms"].as_f64().is_some());
    assert!(ok["remote"]
        .as_str()
        .is_some_and(|r| r.starts_with("127.0.0.1:")));
    chrono::DateTime::parse_from_rfc3339(ok["ts"].as_str().unwrap()).unwrap();

    let fail = lines
        .iter()
        .find(|l| l["request_id"] == "audit-fail")
        .expect("failure line");
    assert_eq!(fail["status"], 401);
    assert_eq!(fail["error"], "auth_error");
    assert_eq!(fail["code"], "INVALID_CREDENTIALS");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("burst-")))
            .count(),
        40
    );

    let raw = std::fs::read_to_string(s.log_dir().join("actions.jsonl")).unwrap();
    assert!(
        !raw.contains(PASS) && !raw.contains("not-the-password"),
        "a password leaked into the audit log"
    );
}

#[tokio::test]
async fn healthz_reports_docker_and_compose() {
    let s = Server::start().await;
    let r = s
        .wait_for("/healthz", Duration::from_secs(20), |r| {
            !r.json["compose_version"].is_null()
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ok");
    assert_eq!(r.json["database"], "ok");
    assert!(
        r.json["compose_version"]
            .as_str()
            .unwrap()
            .starts_with("2."),
        "{}",
        r.text
    );
    assert!(
        r.json["docker_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn healthz_is_degraded_quickly_with_a_dead_docker_socket() {
    let dead = tempfile::tempdir().unwrap();
    let sock = dead.path().join("docker.sock");
    let s = Server::start_with(Options {
        env: vec![("DOCKER_HOST".into(), format!("unix://{}", sock.display()))],
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let r = s.get("/healthz").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["status"], "degraded");
    assert_eq!(r.json["database"], "ok");
    assert!(r.json["docker_version"].is_null());
}

#[tokio::test]
async fn a_restart_keeps_identity_and_data() {
    let mut s = Server::start().await;
    let before = s.instance_id.clone();
    let created = s.post_json("/containers", &json!({"image": BUSYBOX})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let cuid = created.json["cuid"].as_str().unwrap().to_owned();
    s.restart().await;
    assert_eq!(
        s.instance_id, before,
        "the instance id is generated once and kept"
    );
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["image"], BUSYBOX);
    // Only the server can look into its data: the database holds env values.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.data_dir()), 0o700);
    assert_eq!(mode(s.data_dir().join("state.db")), 0o600);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut s = Server::start().await;
    let status = s.stop();
    assert!(status.success(), "exit status {status}");
}

/// Cross-site request forgery: a write whose `Origin` names another site is refused before its
/// handler runs; the server's own origin and programs (no `Origin`) pass; reads are unaffected.
#[tokio::test]
async fn writes_from_another_origin_are_refused() {
    let s = Server::start().await;
    let evil = "http://evil.example:8080";
    let own = format!("http://{}", s.addr);
    let body = json!({"image": BUSYBOX});

    let create = |origin: &str| {
        s.request(Method::POST, "/containers")
            .header("origin", origin)
            .json(&body)
    };
    s.send(create(evil))
        .await
        .assert_error(403, "forbidden", "ORIGIN_NOT_ALLOWED");
    s.send(create("null"))
        .await
        .assert_error(403, "forbidden", "ORIGIN_NOT_ALLOWED");
    assert_eq!(s.count_containers().await, 0, "nothing was created");

    let r = s.send(create(&own)).await;
    assert_eq!(r.status, 201, "{:?}", r.json);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    assert_eq!(s.post_json("/containers", &body).await.status, 201);
    assert_eq!(s.count_containers().await, 2);

    // Every kind of write: PATCH, an action, an upload, DELETE.
    let path = format!("/containers/{cuid}");
    let writes = [
        s.request(Method::PATCH, &path)
            .json(&json!({"tags": ["x"]})),
        s.request(Method::POST, &format!("{path}/stop")),
        s.request(Method::POST, &format!("{path}/upload-zip"))
            .header("content-type", "application/zip")
            .body(Vec::<u8>::new()),
        s.request(Method::DELETE, &path),
    ];
    for rb in writes {
        s.send(rb.header("origin", evil)).await.assert_error(
            403,
            "forbidden",
            "ORIGIN_NOT_ALLOWED",
        );
    }
    let r = s
        .send(s.request(Method::GET, &path).header("origin", evil))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["tags"], json!([]), "the PATCH changed nothing");
    assert_eq!(r.json["generation"], 1);
}
