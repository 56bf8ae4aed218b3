//! Many tenants on one server (docs/API.md §13): scoped bearer tokens, tenants that see only
//! their own containers, quotas at their limits, request rates, and who the audit log names.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::{Bearer, Options, Resp, Server, BUSYBOX, SLEEPER};

const T: Duration = Duration::from_secs(30);

fn sleeper() -> Value {
    json!({"image": BUSYBOX, "command": SLEEPER})
}

/// Creates a container with `client`'s token; asserts 201 and returns the answer.
async fn create_as(client: &Bearer<'_>, body: &Value) -> Resp {
    let r = client.post_json("/containers", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r
}

/// The status of a WebSocket upgrade to `/ws/{cuid}` with `token`.
async fn ws_status(s: &Server, cuid: &str, token: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws/{cuid}", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

fn cuids(r: &Resp) -> Vec<String> {
    r.json["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(|c| c["cuid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_scope_reaches_its_route_class_and_no_further() {
    let s = Server::start().await;
    s.put_tenant("team-a", &json!({})).await;
    let read = s.token("read", Some("team-a")).await;
    let operate = s.token("operate", Some("team-a")).await;
    let write = s.token("write", Some("team-a")).await;

    // write: create (the container is the tenant's), patch.
    let created = create_as(&write, &sleeper()).await;
    assert_eq!(created.json["tenant"], "team-a", "{}", created.text);
    let cuid = created.json["cuid"].as_str().unwrap().to_owned();
    let r = write
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["x"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // read: every GET, nothing else.
    assert_eq!(read.get("/containers").await.status, 200);
    assert_eq!(read.get(&format!("/containers/{cuid}")).await.status, 200);
    assert_eq!(
        read.get(&format!("/containers/{cuid}/files")).await.status,
        200
    );
    let r = read.post(&format!("/containers/{cuid}/stop")).await;
    r.assert_error(403, "forbidden", "SCOPE_REQUIRED");
    assert_eq!(r.json["details"]["required"], "operate");
    assert_eq!(ws_status(&s, &cuid, &read.token).await, 403);

    // operate: actions (a real start), not create or delete.
    let r = operate.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    let r = operate.post_json("/containers", &sleeper()).await;
    r.assert_error(403, "forbidden", "SCOPE_REQUIRED");
    assert_eq!(r.json["details"]["required"], "write");
    operate
        .delete(&format!("/containers/{cuid}"))
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");

    // admin routes: not for a tenant's token, whatever its scope.
    let r = write.get("/tokens").await;
    r.assert_error(403, "forbidden", "SCOPE_REQUIRED");
    assert_eq!(r.json["details"]["required"], "admin");
    write
        .post_json("/images/pull", &json!({"image": BUSYBOX}))
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    // A tenant's token cannot be admin.
    s.post_json(
        "/tokens",
        &json!({"name": "x", "scope": "admin", "tenant": "team-a"}),
    )
    .await
    .assert_error(400, "validation_error", "INVALID_SCOPE");
    // A tenant that does not exist gets no token.
    s.post_json(
        "/tokens",
        &json!({"name": "x", "scope": "read", "tenant": "nobody"}),
    )
    .await
    .assert_error(404, "not_found", "TENANT_NOT_FOUND");

    // An admin token is the operator; Basic still is, unchanged.
    let admin = s.token("admin", None).await;
    assert_eq!(admin.get("/tokens").await.status, 200);
    assert!(cuids(&s.get("/containers").await).contains(&cuid));
    let r = write.delete(&format!("/containers/{cuid}")).await;
    assert!(r.status == 200 || r.status == 202, "{}", r.text);
}

#[tokio::test]
async fn revoked_expired_and_wrong_tokens_are_refused() {
    let s = Server::start_with(Options {
        env: vec![("AUTH_MAX_FAILURES".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let reader = s.token("read", None).await;
    assert_eq!(reader.get("/containers").await.status, 200);

    // The list shows the token without its secret, and that it was used.
    let list = s.get("/tokens").await;
    let listed = list.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "read-all")
        .cloned()
        .unwrap();
    assert!(listed.get("token").is_none(), "{listed}");
    assert!(!list.text.contains(&reader.token));
    assert!(!list.text.contains("sha256"));
    assert!(listed["last_used_at"].is_string(), "{listed}");
    let id = listed["id"].as_str().unwrap();

    // Revoked: the very next request is refused.
    assert_eq!(s.delete(&format!("/tokens/{id}")).await.status, 204);
    reader
        .get("/containers")
        .await
        .assert_error(401, "auth_error", "INVALID_CREDENTIALS");
    s.delete(&format!("/tokens/{id}"))
        .await
        .assert_error(404, "not_found", "TOKEN_NOT_FOUND");

    // Expired: refused once its second has passed.
    let r = s
        .post_json(
            "/tokens",
            &json!({"name": "brief", "scope": "read", "expires_in": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["expires_at"].is_string());
    let brief = Bearer {
        server: &s,
        token: r.json["token"].as_str().unwrap().to_owned(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = brief.get("/containers").await;
        if r.status == 401 {
            r.assert_error(401, "auth_error", "INVALID_CREDENTIALS");
            break;
        }
        assert_eq!(r.status, 200);
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wrong tokens count against the throttle like wrong passwords: the expired one was the
    // first failure since the last success, two guesses make three, the next is blocked.
    let guess = Bearer {
        server: &s,
        token: "cm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    };
    for _ in 0..2 {
        guess
            .get("/containers")
            .await
            .assert_error(401, "auth_error", "INVALID_CREDENTIALS");
    }
    guess
        .get("/containers")
        .await
        .assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
}

/// Reads `GET /events` with a bearer token until an event about `stop_at` arrives; returns
/// the cuids of every container event seen.
async fn events_until(
    client: &Bearer<'_>,
    stop_at: &str,
    started: tokio::sync::oneshot::Sender<()>,
) -> Vec<String> {
    let r = client
        .request(reqwest::Method::GET, "/events")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut body = r.bytes_stream();
    let mut started = Some(started);
    let mut buf = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("no event in time")
            .expect("stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(tx) = started.take() {
            let _ = tx.send(());
        }
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let v: Value = serde_json::from_str(data.trim()).unwrap_or_default();
                    if let Some(cuid) = v["cuid"].as_str() {
                        seen.push(cuid.to_owned());
                        if cuid == stop_at {
                            return seen;
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_container() {
    let s = Server::start().await;
    s.put_tenant("a", &json!({})).await;
    s.put_tenant("b", &json!({})).await;
    let a = s.token("write", Some("a")).await;
    let b = s.token("write", Some("b")).await;
    let mut body = sleeper();
    body["start"] = json!(true);
    let theirs = create_as(&a, &body).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = create_as(&b, &sleeper()).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Listing: only its own, even when asking for the other tenant.
    assert_eq!(cuids(&b.get("/containers").await), vec![mine.clone()]);
    assert!(cuids(&b.get("/containers?tenant=a").await).is_empty());
    assert_eq!(
        cuids(&s.get("/containers?tenant=a").await),
        vec![theirs.clone()]
    );

    // Every route on the other tenant's container answers as for one that does not exist.
    let missing = "c00000000-0000-4000-8000-000000000000";
    for path in [
        "",
        "/status",
        "/logs",
        "/files",
        "/download?path=x",
        "/download-zip",
        "/stats",
    ] {
        let r = b.get(&format!("/containers/{theirs}{path}")).await;
        r.assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
        let none = b.get(&format!("/containers/{missing}{path}")).await;
        assert_eq!(none.json["code"], r.json["code"], "{path}: {}", none.text);
    }
    for action in ["stop", "restart", "pause"] {
        b.post(&format!("/containers/{theirs}/{action}"))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    }
    b.patch_json(&format!("/containers/{theirs}"), &json!({"tags": ["mine"]}))
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    b.delete(&format!("/containers/{theirs}"))
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    let zip = crate::common::zip_of(&[("x.txt", b"x")]);
    let r = s
        .send(
            b.request(
                reqwest::Method::POST,
                &format!("/containers/{theirs}/upload-zip"),
            )
            .header("content-type", "application/zip")
            .body(zip),
        )
        .await;
    r.assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    // Spelled with percent-escapes, the same container is still not b's.
    let escaped: String = theirs.bytes().map(|c| format!("%{c:02X}")).collect();
    b.get(&format!("/containers/{escaped}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );
    assert_eq!(s.get(&format!("/containers/{escaped}")).await.status, 200);
    assert_eq!(ws_status(&s, &theirs, &b.token).await, 404);
    assert_eq!(ws_status(&s, &theirs, &a.token).await, 101);
    // The same Idempotency-Key and body replays a's answer to a, never to b.
    let keyed = |client: &Bearer<'_>| {
        client
            .request(reqwest::Method::POST, "/containers")
            .header("idempotency-key", "shared-key")
            .json(&sleeper())
    };
    let first = s.send(keyed(&a)).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(s.send(keyed(&a)).await.json["cuid"], first.json["cuid"]);
    let other = s.send(keyed(&b)).await;
    assert_eq!(other.status, 201, "{}", other.text);
    assert_ne!(other.json["cuid"], first.json["cuid"]);
    assert_eq!(other.json["tenant"], "b");
    // A tenant may not create into another tenant.
    let mut other = sleeper();
    other["tenant"] = json!("a");
    b.post_json("/containers", &other).await.assert_error(
        400,
        "validation_error",
        "INVALID_TENANT",
    );

    // Images: the other tenant's container is not among an image's users.
    let images = b.get("/images").await;
    assert_eq!(images.status, 200, "{}", images.text);
    assert!(!images.text.contains(&theirs));
    assert!(s.get("/images").await.text.contains(&theirs));
    // Server-wide figures are the operator's.
    b.get("/metrics")
        .await
        .assert_error(403, "forbidden", "TENANT_FORBIDDEN");

    // Events: b's stream carries b's change and not a's, made just before it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = events_until(&b, &mine, tx);
    let writer = async {
        rx.await.unwrap();
        let r = a
            .patch_json(&format!("/containers/{theirs}"), &json!({"tags": ["a1"]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        // a's change is in the feed before b's is made.
        let admin_sees = s
            .wait_for(&format!("/containers/{theirs}"), T, |r| {
                r.json["tags"] == json!(["a1"])
            })
            .await;
        assert_eq!(admin_sees.status, 200);
        let r = b
            .patch_json(&format!("/containers/{mine}"), &json!({"tags": ["b1"]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    };
    let (seen, ()) = tokio::join!(reader, writer);
    assert!(!seen.contains(&theirs), "{seen:?}");
    assert_eq!(seen.last(), Some(&mine));
}

fn limited(cpus: f64, host_port: Option<u16>) -> Value {
    let mut body = json!({
        "image": BUSYBOX,
        "command": SLEEPER,
        "resources": {"cpus": cpus, "memory": "64m", "pids": 100},
    });
    if let Some(p) = host_port {
        body["ports"] = json!([{"host": p, "container": 80}]);
    }
    body
}

#[tokio::test]
async fn every_quota_holds_at_its_limit() {
    let s = Server::start().await;
    let r = s
        .put_tenant(
            "q",
            &json!({"max_containers": 3, "max_running": 1, "max_cpus": 1.0, "max_memory": "1g",
                    "max_pids": 250, "ports": "20000-20009"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["quotas"]["ports"], "20000-20009");
    let q = s.token("write", Some("q")).await;

    // ports: only inside the range.
    let r = q.post_json("/containers", &limited(0.1, Some(8080))).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "ports");
    assert_eq!(r.json["details"]["requested"], 8080);
    // A limit the tenant has a quota for must be set.
    q.post_json(
        "/containers",
        &json!({"image": BUSYBOX, "resources": {"cpus": 0.1}}),
    )
    .await
    .assert_error(400, "validation_error", "LIMIT_REQUIRED");

    let first = create_as(&q, &limited(0.5, Some(20000))).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create_as(&q, &limited(0.5, None)).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    // cpus: 0.5 + 0.5 is the whole quota.
    let r = q.post_json("/containers", &limited(0.1, None)).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(
        r.json["details"],
        json!({"tenant": "q", "quota": "max_cpus", "limit": 1.0, "used": 1.0, "requested": 0.1})
    );
    // pids: 100 + 100 + 100 > 250 (with CPU to spare after a patch down).
    let r = q
        .patch_json(
            &format!("/containers/{second}"),
            &json!({"resources": {"cpus": 0.2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = q.post_json("/containers", &limited(0.1, None)).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_pids");
    // A patch that grows past a quota is refused and changes nothing.
    let r = q
        .patch_json(
            &format!("/containers/{second}"),
            &json!({"resources": {"cpus": 0.9}}),
        )
        .await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_cpus");
    let r = s.get(&format!("/containers/{second}")).await;
    assert_eq!(r.json["resources"]["cpus"], 0.2);
    q.send_ports(&first, 8081)
        .await
        .assert_error(403, "forbidden", "QUOTA_EXCEEDED");

    // running: one at a time.
    let r = q.post(&format!("/containers/{first}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = q.post(&format!("/containers/{second}/start")).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_running");
    assert_eq!(
        s.get(&format!("/containers/{second}")).await.json["desired_state"],
        "created"
    );

    // Lowering a quota below usage touches nothing running and refuses growth.
    s.put_tenant("q", &json!({"max_running": 0, "max_containers": 1}))
        .await;
    let r = s.get(&format!("/containers/{first}")).await;
    assert_eq!(r.json["status"], "running");
    let r = q.post(&format!("/containers/{first}/restart")).await;
    assert_eq!(r.status, 200, "a running container restarts: {}", r.text);
    q.post(&format!("/containers/{second}/start"))
        .await
        .assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    q.post_json("/containers", &limited(0.1, None))
        .await
        .assert_error(403, "forbidden", "QUOTA_EXCEEDED");

    // Usage as the tenant list shows it; a tenant with containers cannot be deleted.
    let list = s.get("/tenants").await;
    let t = &list.json["tenants"][0];
    assert_eq!(t["name"], "q");
    assert_eq!(t["usage"]["containers"], 2);
    assert_eq!(t["usage"]["running"], 1);
    s.delete("/tenants/q")
        .await
        .assert_error(409, "conflict", "TENANT_NOT_EMPTY");
}

/// `max_disk` reserves each container's whole `resources.disk` cap; a raise counts its growth.
#[tokio::test]
async fn the_disk_quota_counts_the_caps() {
    let s = Server::start().await;
    // Sizes as `resources.disk` takes them, terabytes included.
    let r = s.put_tenant("d", &json!({"max_disk": "2t"})).await;
    assert_eq!(r.json["quotas"]["max_disk"], 2_i64 << 40, "{}", r.text);
    let r = s.put_tenant("d", &json!({"max_disk": "64m"})).await;
    assert_eq!(r.json["quotas"]["max_disk"], 64 << 20, "{}", r.text);
    let q = s.token("write", Some("d")).await;
    let capped = |disk: &str| json!({"image": BUSYBOX, "resources": {"disk": disk}});
    q.post_json("/containers", &json!({"image": BUSYBOX}))
        .await
        .assert_error(400, "validation_error", "LIMIT_REQUIRED");
    let first = create_as(&q, &capped("32m")).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let images = || {
        std::fs::read_dir(s.data_dir().join("disks"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "img")
            })
            .count()
    };
    assert_eq!(images(), 1);
    let r = q.post_json("/containers", &capped("48m")).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    // Refused before anything was made: no image came and went.
    assert_eq!(images(), 1);
    assert_eq!(
        r.json["details"],
        json!({"tenant": "d", "quota": "max_disk", "limit": 64 << 20, "used": 32 << 20, "requested": 48 << 20})
    );
    // A raise past the quota is refused, one within it allowed.
    q.patch_json(
        &format!("/containers/{first}"),
        &json!({"resources": {"disk": "80m"}}),
    )
    .await
    .assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    let r = q
        .patch_json(
            &format!("/containers/{first}"),
            &json!({"resources": {"disk": "64m"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = s.get("/tenants/d").await;
    assert_eq!(t.json["usage"]["disk"], 64 << 20, "{}", t.text);
    // A container made before the tenant had a disk quota (a cap cannot be added later)
    // stays patchable.
    s.put_tenant("e", &json!({})).await;
    let old = s.create(&json!({"image": BUSYBOX, "tenant": "e"})).await;
    s.put_tenant("e", &json!({"max_disk": "64m"})).await;
    let r = s
        .patch_json(&format!("/containers/{old}"), &json!({"tags": ["still"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.send(
        s.request(reqwest::Method::PUT, "/tenants/d")
            .json(&json!({"max_disk": "not a size"})),
    )
    .await
    .assert_error(400, "validation_error", "INVALID_QUOTA");
}

impl Bearer<'_> {
    async fn send_ports(&self, cuid: &str, host: u16) -> Resp {
        self.server
            .send(
                self.request(reqwest::Method::PATCH, &format!("/containers/{cuid}/ports"))
                    .json(&json!({"ports": [{"host": host, "container": 80}]})),
            )
            .await
    }
}

#[tokio::test]
async fn racing_creates_cannot_both_take_the_last_slot() {
    let s = Server::start().await;
    s.put_tenant("r", &json!({"max_containers": 1})).await;
    let r = s.token("write", Some("r")).await;
    let body = sleeper();
    let attempts = (0..6).map(|_| r.post_json("/containers", &body));
    let answers = futures_util::future::join_all(attempts).await;
    let won = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(
        won,
        1,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    for a in answers.iter().filter(|a| a.status != 201) {
        a.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
        assert_eq!(a.json["details"]["used"], 1);
    }
    assert_eq!(cuids(&r.get("/containers").await).len(), 1);
}

#[tokio::test]
async fn a_tenants_request_rate_is_capped_and_others_are_not() {
    let s = Server::start().await;
    s.put_tenant("slow", &json!({"requests_per_second": 2}))
        .await;
    s.put_tenant("free", &json!({})).await;
    let slow = s.token("read", Some("slow")).await;
    let free = s.token("read", Some("free")).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = slow.get("/containers").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = limited.expect("ten requests at once never hit a 2/s limit");
    r.assert_error(429, "rate_limited", "TENANT_RATE_LIMITED");
    assert!(r
        .header("retry-after")
        .is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    for _ in 0..10 {
        assert_eq!(free.get("/containers").await.status, 200);
    }
}

#[tokio::test]
async fn the_audit_log_names_the_token_and_its_tenant() {
    let s = Server::start().await;
    s.put_tenant("audited", &json!({})).await;
    let w = s.token("write", Some("audited")).await;
    let cuid = create_as(&w, &sleeper()).await.json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = s.get("/tokens").await.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "audited")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = s
        .audit_lines()
        .into_iter()
        .find(|l| l["method"] == "POST" && l["path"] == "/containers" && l["status"] == 201)
        .expect("the create's audit line");
    assert_eq!(line["user"], format!("token:{id}:write-audited"));
    assert_eq!(line["tenant"], "audited");
    let basic = s
        .audit_lines()
        .into_iter()
        .find(|l| l["method"] == "PUT")
        .unwrap();
    assert_eq!(basic["user"], crate::common::USER);
    assert!(basic["tenant"].is_null());
    assert!(!cuid.is_empty());
}
