//! Images from real registries on 127.0.0.1 (scripts/setup-registry.sh): one open, one with
//! htpasswd auth. Each test pushes its own uniquely named copy of the busybox test image and
//! removes it from the host first, so tests never share a reference and the server really
//! has to pull.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::*;

const OPEN: &str = "127.0.0.1:5731";
const AUTHED: &str = "127.0.0.1:5732";
/// The right credentials for `AUTHED`, written by setup-registry.sh.
const DOCKER_CONFIG: &str = "/var/lib/cm-test-registry/docker-config";
const RIGHT_AUTH_FILE: &str = "/var/lib/cm-test-registry/docker-config/config.json";
fn image_on_host(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A reference pushed to `registry` only: removed from the host on drop (and before use).
struct Pushed(String);

impl Pushed {
    /// The busybox test image under a new name: the host already holds its layers, so a
    /// pull only fetches the manifest.
    fn new(registry: &str) -> Self {
        Self::push(registry, BUSYBOX)
    }

    /// An image with a layer of its own (a file with a fresh id on busybox), removed from
    /// the host after the push: a pull has to fetch a blob.
    fn with_own_layer(registry: &str) -> Self {
        let ctx = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::write(ctx.path().join("id"), &id).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {BUSYBOX}\nCOPY id /id\n"),
        )
        .unwrap();
        let local = format!("cm-it-local-{id}:t1");
        run_ok(
            Command::new("docker")
                .args(["build", "-q", "-t", &local])
                .arg(ctx.path())
                .env("DOCKER_BUILDKIT", "0"),
        );
        let pushed = Self::push(registry, &local);
        docker(&["rmi", &local]);
        pushed
    }

    fn push(registry: &str, source: &str) -> Self {
        let name = format!(
            "{registry}/cm-it-{}:t1",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let run = |args: &[&str]| {
            let out = Command::new("docker")
                .args(args)
                .env("DOCKER_CONFIG", DOCKER_CONFIG)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "docker {args:?}: {} (run scripts/setup-registry.sh)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["tag", source, &name]);
        run(&["push", &name]);
        run(&["rmi", &name]);
        assert!(!image_on_host(&name));
        Pushed(name)
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        docker(&["rmi", &self.0]);
    }
}

async fn start_container(s: &Server, image: &str) -> Resp {
    s.post_json(
        "/containers",
        &json!({"image": image, "command": SLEEPER, "start": true}),
    )
    .await
}

/// A create with `"start": true` whose start failed: the container exists, so the answer
/// is `201` with it, its `status: "error"` and its `last_error` (never an error answer, which
/// would say nothing was made). Returns its cuid.
fn failed_start(r: &Resp, code: &str) -> String {
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "error", "{}", r.text);
    assert_eq!(r.json["last_error"]["code"], code, "{}", r.text);
    r.json["cuid"].as_str().unwrap().to_owned()
}

/// Server settings: pulling on (`missing`, the default the harness turns off), plus `pairs`.
fn env(pairs: &[(&str, &str)]) -> Options {
    let mut env = vec![("IMAGE_PULL_POLICY".to_owned(), "missing".to_owned())];
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Options {
        env,
        ..Default::default()
    }
}

async fn server() -> Server {
    Server::start_with(env(&[])).await
}

#[tokio::test]
async fn a_missing_image_is_pulled_on_first_start_and_guarded_while_used() {
    let image = Pushed::new(OPEN);
    let s = server().await;
    let r = start_container(&s, &image.0).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    assert!(image_on_host(&image.0));
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["pull"],
        json!(null)
    );

    // Listed, with the container that uses it.
    let list = s.get("/images").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let entry = list.json["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tags"].as_array().unwrap().contains(&json!(image.0)))
        .unwrap_or_else(|| panic!("{} not listed: {}", image.0, list.text))
        .clone();
    assert_eq!(entry["used_by"], json!([cuid]));
    assert!(entry["id"].as_str().unwrap().starts_with("sha256:"));
    assert!(entry["size"].as_i64().unwrap() > 0);
    assert!(entry["created"].is_string());

    // Not removable while a container of this server uses it (the slashes of the
    // reference are part of the path).
    let r = s.delete(&format!("/images/{}", image.0)).await;
    r.assert_error(409, "conflict", "IMAGE_IN_USE");
    assert_eq!(r.json["details"]["used_by"], json!([cuid]));
    assert!(image_on_host(&image.0));

    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.delete(&format!("/images/{}", image.0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!image_on_host(&image.0));
    s.delete(&format!("/images/{}", image.0))
        .await
        .assert_error(404, "not_found", "IMAGE_NOT_FOUND");
    s.delete("/images/..%2F..%2Fetc")
        .await
        .assert_error(404, "not_found", "IMAGE_NOT_FOUND");
}

#[tokio::test]
async fn policy_never_does_not_pull() {
    let image = Pushed::new(OPEN);
    let s = Server::start_with(env(&[("IMAGE_PULL_POLICY", "never")])).await;
    let r = start_container(&s, &image.0).await;
    let cuid = failed_start(&r, "IMAGE_NOT_FOUND");
    assert!(!image_on_host(&image.0), "policy never pulled");
    // Recorded on the container, which is retried with back-off like any failure.
    let c = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(c.json["status"], "error");
    assert_eq!(c.json["last_error"]["code"], "IMAGE_NOT_FOUND");
}

#[tokio::test]
async fn a_missing_tag_is_image_not_found() {
    let s = server().await;
    let missing = format!(
        "{OPEN}/cm-test-busybox:no-such-tag-{}",
        uuid::Uuid::new_v4().simple()
    );
    // A client retrying the same request (its Idempotency-Key) gets the same container back:
    // one container, whatever the number of tries, each answer saying what happened.
    let body = json!({"image": missing, "command": SLEEPER, "start": true});
    let attempt = || {
        s.send(
            s.request(reqwest::Method::POST, "/containers")
                .header("idempotency-key", "mistyped-image")
                .json(&body),
        )
    };
    let first = failed_start(&attempt().await, "IMAGE_NOT_FOUND");
    let again = attempt().await;
    assert_eq!(again.json["cuid"], json!(first), "{}", again.text);
    assert_eq!(s.count_containers().await, 1);
    let r = s
        .post_json("/images/pull", &json!({"image": missing}))
        .await;
    r.assert_error(422, "state_error", "IMAGE_NOT_FOUND");
}

#[tokio::test]
async fn a_registry_that_is_down_is_unavailable() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = server().await;
    let r = start_container(&s, &format!("127.0.0.1:{port}/cm-test-busybox:latest")).await;
    let cuid = failed_start(&r, "REGISTRY_UNAVAILABLE");
    let c = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(c.json["last_error"]["code"], "REGISTRY_UNAVAILABLE");
}

#[tokio::test]
async fn wrong_or_no_credentials_are_refused_without_echoing_them() {
    let image = Pushed::new(AUTHED);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    let secret = "wrong-Secret-4711";
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("cm-test:{secret}"),
    );
    std::fs::write(
        &file,
        json!({"auths": {AUTHED: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let s = Server::start_with(env(&[("REGISTRY_AUTH_FILE", file.to_str().unwrap())])).await;
    let r = start_container(&s, &image.0).await;
    failed_start(&r, "REGISTRY_AUTH_FAILED");
    assert!(
        !r.text.contains(secret) && !r.text.contains(&auth),
        "{}",
        r.text
    );
    assert!(
        !s.server_log().contains(secret),
        "password in the server log"
    );
    assert!(!image_on_host(&image.0));

    // No credentials for that registry at all.
    let s = server().await;
    let r = start_container(&s, &image.0).await;
    failed_start(&r, "REGISTRY_AUTH_FAILED");
}

#[tokio::test]
async fn right_credentials_pull_from_a_private_registry() {
    let image = Pushed::new(AUTHED);
    let s = Server::start_with(env(&[("REGISTRY_AUTH_FILE", RIGHT_AUTH_FILE)])).await;
    let r = start_container(&s, &image.0).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert!(image_on_host(&image.0));
}

#[tokio::test]
async fn images_can_be_pulled_ahead() {
    let s = server().await;
    for (body, code) in [
        (json!({}), "MISSING_IMAGE"),
        (json!({"image": "-rf /"}), "INVALID_IMAGE"),
        (json!({"image": 5}), "INVALID_IMAGE"),
        (json!({"image": BUSYBOX, "x": 1}), "UNKNOWN_FIELD"),
    ] {
        s.post_json("/images/pull", &body)
            .await
            .assert_error(400, "validation_error", code);
    }

    let image = Pushed::new(OPEN);
    let r = s
        .post_json("/images/pull", &json!({"image": image.0}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["tags"].as_array().unwrap().contains(&json!(image.0)),
        "{}",
        r.text
    );
    assert_eq!(r.json["used_by"], json!([]));
    assert!(image_on_host(&image.0));

    // Not waited: 202 at once, and the pull completes on its own.
    let later = Pushed::new(OPEN);
    let r = s
        .post_json("/images/pull?wait=false", &json!({"image": later.0}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["image"], json!(later.0));
    s.wait_for("/images", std::time::Duration::from_secs(30), |r| {
        r.text.contains(&later.0)
    })
    .await;
}

/// A TCP proxy in front of a registry that holds every blob request until it is opened, so
/// a test can look at a pull while it is under way.
struct Gate {
    open: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn passed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

async fn gated_proxy(upstream: &'static str) -> (u16, std::sync::Arc<Gate>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = std::sync::Arc::new(Gate {
        open: false.into(),
        notify: tokio::sync::Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = gate.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let gate = g.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(7).any(|w| w == b"/blobs/") {
                        gate.passed().await;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, gate)
}

#[tokio::test]
async fn a_start_waits_through_the_pull_and_shows_its_progress() {
    let pushed = Pushed::with_own_layer(OPEN);
    let (port, gate) = gated_proxy(OPEN).await;
    // The same repository, reached through the proxy: a reference the host does not hold.
    let image = Pushed(pushed.0.replacen(OPEN, &format!("127.0.0.1:{port}"), 1));
    assert!(!image_on_host(&image.0));
    let s = server().await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": image.0, "command": SLEEPER}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();

    let start = {
        let rb = s.request(reqwest::Method::POST, &format!("/containers/{cuid}/start"));
        tokio::spawn(async move { Resp::from(rb.send().await.unwrap()).await })
    };
    let during = s
        .wait_for(
            &format!("/containers/{cuid}"),
            std::time::Duration::from_secs(30),
            // Layers the host has are "done" at once; the image's own layer waits at the
            // gate, so a moment comes where one is known and not done.
            |r| {
                let pull = &r.json["pull"];
                matches!(
                    (pull["layers_done"].as_u64(), pull["layers_total"].as_u64()),
                    (Some(done), Some(total)) if done < total
                )
            },
        )
        .await;
    let pull = &during.json["pull"];
    assert_eq!(pull["image"], json!(image.0));
    assert_ne!(during.json["status"], "running");
    assert!(
        !start.is_finished(),
        "the start answered before its image was there"
    );

    gate.open();
    let r = start.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    let after = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(after.json["pull"], json!(null));
}

#[tokio::test]
async fn a_start_that_times_out_during_a_pull_says_so_and_the_pull_goes_on() {
    let pushed = Pushed::with_own_layer(OPEN);
    let (port, gate) = gated_proxy(OPEN).await;
    let image = Pushed(pushed.0.replacen(OPEN, &format!("127.0.0.1:{port}"), 1));
    let s = Server::start_with(env(&[("ACTION_TIMEOUT", "2")])).await;
    // Not done in time: the container exists, so it is the answer (`202`, converging), and
    // its page shows the pull that takes the time.
    let r = start_container(&s, &image.0).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let live = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(live.json["pull"]["image"], json!(image.0), "{}", live.text);

    gate.open();
    s.wait_for(
        &format!("/containers/{cuid}"),
        std::time::Duration::from_secs(30),
        |r| r.json["status"] == "running",
    )
    .await;
    assert!(image_on_host(&image.0));
}

/// A service on the host's loopback that is no registry (a database console, an admin page):
/// answers every request `404` with a body holding `secret`, which the daemon quotes in its
/// error. Counts the connections it accepts.
async fn secret_service(secret: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = format!("{secret}\n");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

#[tokio::test]
async fn a_pull_never_repeats_what_a_service_on_the_host_answered() {
    use std::sync::atomic::Ordering;
    let secret = format!("db_password=cm-{}", uuid::Uuid::new_v4().simple());
    let (open, hits) = secret_service(secret.clone()).await;
    let closed = free_port();
    let s = server().await;
    let pull = |port: u16| {
        let s = &s;
        async move {
            s.post_json(
                "/images/pull",
                &json!({"image": format!("127.0.0.1:{port}/x:1")}),
            )
            .await
        }
    };

    let from_open = pull(open).await;
    assert!(
        hits.load(Ordering::SeqCst) > 0,
        "the daemon never asked the service"
    );
    from_open.assert_error(503, "unavailable", "REGISTRY_UNAVAILABLE");
    assert!(!from_open.text.contains(&secret), "{}", from_open.text);
    // A closed port reads the same: no port-scan oracle.
    let from_closed = pull(closed).await;
    from_closed.assert_error(503, "unavailable", "REGISTRY_UNAVAILABLE");
    let message = |r: &Resp, port: u16| {
        r.json["message"]
            .as_str()
            .unwrap()
            .replace(&port.to_string(), "PORT")
    };
    assert_eq!(message(&from_open, open), message(&from_closed, closed));
    assert_eq!(
        from_open.json["details"]
            .to_string()
            .replace(&open.to_string(), "PORT"),
        from_closed.json["details"]
            .to_string()
            .replace(&closed.to_string(), "PORT")
    );

    // Nor through a container's pull and its recorded error.
    let r = start_container(&s, &format!("127.0.0.1:{open}/x:1")).await;
    let cuid = failed_start(&r, "REGISTRY_UNAVAILABLE");
    assert!(!r.text.contains(&secret), "{}", r.text);
    let c = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(c.json["last_error"]["code"], "REGISTRY_UNAVAILABLE");
    assert!(!c.text.contains(&secret), "{}", c.text);
    assert!(
        !s.server_log().contains(&secret),
        "the secret is in the server log"
    );
}

#[tokio::test]
async fn the_registry_allowlist_refuses_other_registries_without_contacting_them() {
    use std::sync::atomic::Ordering;
    let (port, hits) = secret_service("x".into()).await;
    let allowed = Pushed::new(OPEN);
    let s = Server::start_with(env(&[("REGISTRY_ALLOWLIST", OPEN)])).await;
    for image in [
        format!("{AUTHED}/cm-test-busybox:latest"),
        format!("127.0.0.1:{port}/x:1"),
        "python:3.12-slim".to_owned(),
    ] {
        s.post_json("/images/pull", &json!({"image": image}))
            .await
            .assert_error(400, "validation_error", "REGISTRY_NOT_ALLOWED");
        start_container(&s, &image).await.assert_error(
            400,
            "validation_error",
            "REGISTRY_NOT_ALLOWED",
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused registry was contacted"
    );
    assert!(!image_on_host(&format!("{AUTHED}/cm-test-busybox:latest")));

    // The allowed registry works; an image already on the host needs no pull and is kept
    // whatever registry its name names.
    let r = start_container(&s, &allowed.0).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    s.create(&json!({"image": BUSYBOX, "command": SLEEPER}))
        .await;
    // A patch to a refused registry changes nothing.
    s.patch_json(
        &format!("/containers/{cuid}"),
        &json!({"image": format!("127.0.0.1:{port}/x:1")}),
    )
    .await
    .assert_error(400, "validation_error", "REGISTRY_NOT_ALLOWED");
    let c = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(c.json["image"], json!(allowed.0));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused registry was contacted"
    );
}

/// Tags removed (and a container removed) however the test ends.
struct Leftovers {
    tags: Vec<String>,
    container: Option<String>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(id) = &self.container {
            docker(&["rm", "-f", id]);
        }
        for tag in &self.tags {
            docker(&["rmi", tag]);
        }
    }
}

#[tokio::test]
async fn a_tag_is_removed_only_when_no_container_on_the_daemon_was_made_from_it() {
    // Three extra tags of the busybox test image (which keeps its own, so the image stays).
    let base = format!(
        "cm-it-tags-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let [ours, foreign, unused] = ["a", "b", "c"].map(|t| format!("{base}:{t}"));
    let mut leftovers = Leftovers {
        tags: vec![ours.clone(), foreign.clone(), unused.clone()],
        container: None,
    };
    for tag in &leftovers.tags {
        docker(&["tag", BUSYBOX, tag]);
    }
    // A container made outside this server (labelled for the suite's sweep) from tag b.
    let id = docker(&[
        "run",
        "-d",
        "--label",
        "com.container-manager.tag=test",
        &foreign,
        "sleep",
        "3600",
    ]);
    assert!(!id.trim().is_empty(), "docker run failed");
    leftovers.container = Some(id.trim().to_owned());

    let s = Server::start().await;
    let r = s.delete(&format!("/images/{foreign}")).await;
    r.assert_error(409, "conflict", "IMAGE_IN_USE");
    assert_eq!(r.json["details"]["used_by"], json!([]));
    assert_eq!(r.json["details"]["containers"].as_array().unwrap().len(), 1);
    assert!(image_on_host(&foreign));

    // One of ours uses the image under tag a: tag c, which no container names, can go.
    let r = start_container(&s, &ours).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let r = s.delete(&format!("/images/{unused}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!image_on_host(&unused));
    assert!(image_on_host(&ours) && image_on_host(BUSYBOX));
    let r = s.delete(&format!("/images/{ours}")).await;
    r.assert_error(409, "conflict", "IMAGE_IN_USE");
    assert_eq!(r.json["details"]["used_by"], json!([cuid]));
    assert!(image_on_host(&ours));
}
