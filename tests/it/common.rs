//! The integration-test harness: a real server process on `127.0.0.1:0` with its own
//! temporary `DATA_DIR` and `LOG_DIR`, a real SQLite file, the real Docker daemon; helpers
//! for authenticated HTTP and WebSocket calls; and clean-up of every Docker object the
//! server made (by its instance label), even when the test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub const USER: &str = "admin";
pub const PASS: &str = "test-Pa55word-9f8e7d";
pub const BUSYBOX: &str = "cm-test-busybox:latest";
pub const PYTHON: &str = "cm-test-python:latest";

pub fn basic_auth(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub dir: Arc<tempfile::TempDir>,
    pub instance_id: String,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
    docker_host: Option<String>,
    child: Option<Child>,
    pub client: reqwest::Client,
}

#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Reuse the directories of an earlier server (restart on the same state).
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Run the server with this open-file limit, soft and hard (so its start-up cannot
    /// raise it), through `prlimit`.
    pub nofile: Option<u64>,
    /// Another Docker daemon (`DOCKER_HOST` of the server), where the server's containers and
    /// networks are also removed when it is dropped.
    pub docker_host: Option<String>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Server {
        let dir = opts.dir.unwrap_or_else(|| {
            Arc::new(
                tempfile::Builder::new()
                    .prefix("cm-test-")
                    .tempdir()
                    .unwrap(),
            )
        });
        let mut env: Vec<(String, String)> = vec![
            ("APP_USER".into(), USER.into()),
            ("APP_PASS".into(), PASS.into()),
            ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "LOG_DIR".into(),
                dir.path().join("logs").display().to_string(),
            ),
            ("INSTANCE_TAG".into(), "test".into()),
            // The test host reaches no public registry: a missing image is IMAGE_NOT_FOUND at
            // once, as the tests of failures expect. tests/it/images.rs turns pulling on.
            ("IMAGE_PULL_POLICY".into(), "never".into()),
            ("RUST_LOG".into(), "info,container_manager=debug".into()),
        ];
        if let Some(host) = &opts.docker_host {
            env.push(("DOCKER_HOST".into(), host.clone()));
        }
        for (k, v) in opts.env {
            env.retain(|(ek, _)| *ek != k);
            env.push((k, v));
        }
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            base: String::new(),
            dir,
            instance_id: String::new(),
            env,
            nofile: opts.nofile,
            docker_host: opts.docker_host,
            child: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                // Below the server's idle limit (HEADER_READ_TIMEOUT), so a pooled
                // connection is never reused just as the server closes it.
                .pool_idle_timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        };
        server.spawn().await;
        server
    }

    /// Starts the server process and waits for its "listening on" line.
    async fn spawn(&mut self) {
        let (child, addr) = spawn_process(&self.env, self.dir.path(), self.nofile);
        self.child = Some(child);
        self.addr = addr;
        self.base = format!("http://{addr}");
        let health = self.get("/healthz").await;
        self.instance_id = health.json["instance_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !self.instance_id.is_empty(),
            "no instance id: {}",
            health.text
        );
    }

    /// The server process's id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sets (`Some`) or removes (`None`) a variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(&mut child, Duration::from_secs(30))
    }

    /// SIGTERM; the exit status, or a panic (after a SIGKILL) if it takes longer than `limit`.
    pub fn stop_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(&mut child, limit)
    }

    /// SIGKILL: no chance to clean anything up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (cleanly) and starts again on the same directories and settings.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(status.success(), "server exited with {status}");
        }
        self.spawn().await;
    }

    /// Starts again after a `kill9`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn().await;
    }

    /// Starts again after a `kill9` on the same address, as a restarted service would be:
    /// a browser left open on the old address must find it again.
    pub async fn start_again_same_address(&mut self) {
        assert!(self.child.is_none());
        let addr = self.addr.to_string();
        self.env.retain(|(k, _)| k != "LISTEN_ADDR");
        self.env.push(("LISTEN_ADDR".into(), addr.clone()));
        self.spawn().await;
        assert_eq!(self.addr.to_string(), addr);
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.log_dir().join("actions.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}"))
            })
            .collect()
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .header("authorization", basic_auth(USER, PASS))
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        Resp::from(rb.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(reqwest::Method::PATCH, path).json(body))
            .await
    }

    /// Opens `/ws/...` with Basic auth in the upgrade request.
    pub async fn ws(
        &self,
        path_and_query: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}{}", self.addr, path_and_query)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", basic_auth(USER, PASS).parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        ws
    }

    /// Opens `/ws/...` as [`Server::ws`] does, and also returns the headers of the `101`.
    pub async fn ws_with_headers(
        &self,
        path_and_query: &str,
    ) -> (Socket, reqwest::header::HeaderMap) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}{}", self.addr, path_and_query)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", basic_auth(USER, PASS).parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in response.headers() {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.insert(n, v);
            }
        }
        (ws, headers)
    }

    /// How many containers `GET /containers` lists on its first page.
    pub async fn count_containers(&self) -> usize {
        let r = self.get("/containers?limit=500").await;
        r.json["containers"].as_array().map_or(0, Vec::len)
    }

    /// Polls `GET path` until `pred` holds, up to `limit`; returns the last answer.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        pred: impl Fn(&Resp) -> bool,
    ) -> Resp {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.get(path).await;
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {limit:?}; last: {} {}",
                r.status,
                r.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- server log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if !self.instance_id.is_empty() {
            remove_docker_objects_on(self.docker_host.as_deref(), &self.instance_id);
        }
        // Disk images (`resources.disk`) a failed test left mounted: unmounted, so the
        // temporary directory can go and no loop device stays attached.
        if Arc::strong_count(&self.dir) == 1 {
            unmount_disks(&self.data_dir().join("disks"));
        }
    }
}

/// Unmounts every image mounted under `disks` (lazily: a dying container may still hold
/// one for a moment).
pub fn unmount_disks(disks: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(parent) = std::fs::metadata(disks) else {
        return;
    };
    for entry in std::fs::read_dir(disks).into_iter().flatten().flatten() {
        let mounted = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.dev() != parent.dev());
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
        }
    }
}

/// Removes every container and network labelled with this instance id.
pub fn remove_docker_objects(instance_id: &str) {
    remove_docker_objects_on(None, instance_id)
}

/// [`remove_docker_objects`] on the daemon at `host` (`None`: the default one).
pub fn remove_docker_objects_on(host: Option<&str>, instance_id: &str) {
    let docker = |args: &[&str]| docker_on(host, args);
    let label = format!("label=com.container-manager.instance={instance_id}");
    let ids = docker(&["ps", "-aq", "--filter", &label]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    let nets = docker(&["network", "ls", "-q", "--filter", &label]);
    for net in nets.split_whitespace() {
        docker(&["network", "rm", net]);
    }
    remove_firewall(instance_id);
}

/// The server's egress chains (src/reconcile/firewall.rs): forward (from `DOCKER-USER`) and
/// input (from `INPUT`).
pub fn firewall_chains(instance_id: &str) -> (String, String) {
    let short: String = instance_id.chars().take(12).collect();
    (format!("CMF-{short}"), format!("CMI-{short}"))
}

/// Runs `iptables -w …`; (success, stdout + stderr).
pub fn iptables(args: &[&str]) -> (bool, String) {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .expect("run iptables");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Unhooks and removes the server's egress chains (they outlive the server on purpose).
pub fn remove_firewall(instance_id: &str) {
    let (forward, input) = firewall_chains(instance_id);
    for (hook, chain) in [("DOCKER-USER", &forward), ("INPUT", &input)] {
        while iptables(&["-D", hook, "-j", chain]).0 {}
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
}

/// The gateway of the server's network: the host's own address on it.
pub fn network_gateway(instance_id: &str) -> String {
    docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &format!("cm-{instance_id}"),
    ])
    .trim()
    .to_owned()
}

/// Runs `sh -c script` in the container as `user`; (exit status ok, stdout + stderr).
pub fn sh_in(cuid: &str, user: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", "-u", user, cuid, "sh", "-c", script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs `docker …` and returns its stdout (empty on failure).
pub fn docker(args: &[&str]) -> String {
    docker_on(None, args)
}

/// [`docker`] against the daemon at `host` (`docker -H host …`; `None`: the default one).
pub fn docker_on(host: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]);
    }
    cmd.args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `docker inspect` of one object, as JSON.
pub fn docker_inspect(id: &str) -> Option<Value> {
    let out = docker(&["inspect", id]);
    let v: Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.first().cloned()
}

fn spawn_process(env: &[(String, String)], dir: &Path, nofile: Option<u64>) -> (Child, SocketAddr) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_container-manager");
    // prlimit execs the server: the child's pid is the server's.
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_clear()
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .stdin(Stdio::null());
    for key in ["PATH", "HOME", "DOCKER_HOST"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("server did not start; log:\n{log}");
        }
    };
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the server binary to completion (for start-up refusals).
pub fn run_to_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    run_to_exit_under(&[], env)
}

/// [`run_to_exit`] with the binary started by `wrapper` (a command that ends by running its
/// last argument, the binary: e.g. `unshare … sh -c '…; exec "$0"'`), in a temporary working
/// directory (`./data` is the default `DATA_DIR`).
pub fn run_to_exit_under(
    wrapper: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_container-manager");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_clear().current_dir(dir.path());
    if let Some(v) = std::env::var_os("PATH") {
        cmd.env("PATH", v);
    }
    cmd.env("LISTEN_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the §3 error body: kind, code, status, request id, timestamp with offset.
    pub fn assert_error(&self, status: u16, kind: &str, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        let j = &self.json;
        assert_eq!(j["error"], kind, "body: {}", self.text);
        assert_eq!(j["code"], code, "body: {}", self.text);
        assert_eq!(j["status"], status, "body: {}", self.text);
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.text
        );
        let rid = j["request_id"].as_str().expect("request_id");
        assert_eq!(Some(rid), self.header("x-request-id"));
        let ts = j["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
        assert!(j.get("details").is_some(), "body: {}", self.text);
    }
}

// ---------------------------------------------------------------- fixtures
//
// What the suites need again and again, in one place: containers made and started through
// the API, the host side of a container's `/app`, ZIP uploads, a tree listing, console
// sign-in, the server's resident memory. Each fixture asserts what every caller relied on.

/// A busybox container's command that keeps it up for an hour (`sleep` is its main process).
pub const SLEEPER: &[&str] = &["sh", "-c", "exec sleep 3600"];

impl Server {
    /// `POST /containers` with `body`; asserts 201 and returns the cuid.
    pub async fn create(&self, body: &Value) -> String {
        let r = self.post_json("/containers", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["cuid"].as_str().unwrap().to_owned()
    }

    /// `POST /containers` for every body, `parallel` requests at a time; asserts each `201`
    /// and returns the cuids in the bodies' order (the server's creation order may differ).
    pub async fn create_many(&self, bodies: Vec<Value>, parallel: usize) -> Vec<String> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(bodies)
            .map(|body| async move { self.create(&body).await })
            .buffered(parallel)
            .collect()
            .await
    }

    /// A created (not started) busybox container running [`SLEEPER`].
    pub async fn create_sleeper(&self) -> String {
        self.create(&serde_json::json!({"image": BUSYBOX, "command": SLEEPER}))
            .await
    }

    /// `POST /containers` with `body` and `"start": true`; asserts 201 and that the answer
    /// already says `running` (the start is done before the answer).
    pub async fn create_started(&self, body: &Value) -> String {
        let mut body = body.clone();
        body["start"] = Value::Bool(true);
        let r = self.post_json("/containers", &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["status"], "running", "{}", r.text);
        r.json["cuid"].as_str().unwrap().to_owned()
    }

    /// A busybox container running [`SLEEPER`], created with `"start": true` (see
    /// [`Server::create_started`]).
    pub async fn running_sleeper(&self) -> String {
        self.create_started(&serde_json::json!({"image": BUSYBOX, "command": SLEEPER}))
            .await
    }

    /// `POST /containers/{cuid}/start`; asserts 200 and `running`.
    pub async fn start_container(&self, cuid: &str) {
        let r = self.post(&format!("/containers/{cuid}/start")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["status"], "running", "{}", r.text);
    }

    /// Created, then started through the start route (see [`Server::start_container`]).
    pub async fn create_running(&self, body: &Value) -> String {
        let cuid = self.create(body).await;
        self.start_container(&cuid).await;
        cuid
    }

    /// The host directory mounted as the container's `/app`.
    pub fn mount(&self, cuid: &str) -> PathBuf {
        self.data_dir().join("mounts").join(cuid)
    }

    /// `POST /containers/{cuid}/upload-zip{query}` with a ZIP body, not yet sent.
    pub fn upload_request(
        &self,
        cuid: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        self.request(
            reqwest::Method::POST,
            &format!("/containers/{cuid}/upload-zip{query}"),
        )
        .header("content-type", "application/zip")
        .body(body)
    }

    /// Uploads a ZIP (see [`Server::upload_request`]) and returns the answer.
    pub async fn upload_zip(
        &self,
        cuid: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        self.send(self.upload_request(cuid, query, body)).await
    }
}

impl Server {
    /// `PUT /containers/{cuid}/files?path=…` with the file's bytes, not yet sent.
    pub fn put_file_request(
        &self,
        cuid: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        self.request(
            reqwest::Method::PUT,
            &format!("/containers/{cuid}/files?path={}", url_encode(path)),
        )
        .body(body)
    }

    /// Uploads one file (see [`Server::put_file_request`]) and returns the answer.
    pub async fn put_file(&self, cuid: &str, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        self.send(self.put_file_request(cuid, path, body)).await
    }

    /// `DELETE /containers/{cuid}/files?path=…{extra}`.
    pub async fn delete_file(&self, cuid: &str, path: &str, extra: &str) -> Resp {
        self.delete(&format!(
            "/containers/{cuid}/files?path={}{extra}",
            url_encode(path)
        ))
        .await
    }

    /// `POST /containers/{cuid}/files/move` `{"from", "to"}`.
    pub async fn move_file(&self, cuid: &str, from: &str, to: &str) -> Resp {
        self.post_json(
            &format!("/containers/{cuid}/files/move"),
            &serde_json::json!({"from": from, "to": to}),
        )
        .await
    }

    /// `POST /containers/{cuid}/files/mkdir` `{"path"}`.
    pub async fn make_folder(&self, cuid: &str, path: &str) -> Resp {
        self.post_json(
            &format!("/containers/{cuid}/files/mkdir"),
            &serde_json::json!({"path": path}),
        )
        .await
    }
}

/// Nothing is left in the server's staging area (`DATA_DIR/staging`).
pub fn staging_is_empty(s: &Server) -> bool {
    std::fs::read_dir(s.data_dir().join("staging"))
        .unwrap()
        .next()
        .is_none()
}

/// `GET path` as raw bytes: status, headers, body.
pub async fn get_bytes(s: &Server, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = s.request(reqwest::Method::GET, path).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

/// Every entry of a ZIP: name -> content (`None`: a directory).
pub fn unzip_all(data: &[u8]) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(data)).expect("a valid ZIP");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..a.len() {
        let mut f = a.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        if f.is_dir() {
            out.insert(name, None);
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            out.insert(name, Some(v));
        }
    }
    out
}

/// A ZIP (deflated) of `(name, content)`; a name ending in `/` is a directory entry.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(content).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// [`zip_of`] for owned entries.
pub fn zip_owned(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    zip_of(&refs)
}

/// One name of a [`listing`]: what it is (kind, mode, and a file's size and FNV-1a hash or a
/// link's target), its owner, and a file's whole content (compared, not printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub uid: u32,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (uid {})", self.kind, self.uid)
    }
}

/// Every name under `dir`, recursively, without following anything.
pub fn listing(dir: &Path) -> std::collections::BTreeMap<String, Node> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            let mut content = Vec::new();
            let kind = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else if ft.is_file() {
                content = std::fs::read(&p).unwrap();
                format!("file {mode:o} {} {:x}", content.len(), fnv(&content))
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                "special".into()
            };
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.insert(
                rel,
                Node {
                    kind,
                    uid: md.uid(),
                    content,
                },
            );
        }
    }
    out
}

/// FNV-1a, 64 bits: a short fingerprint of a file's content.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// What the console holds after signing in: the cookie (`Cookie` header value) and the
/// session key it sends as `X-Session-Key`.
pub struct Signed {
    pub cookie: String,
    pub key: String,
}

/// Signs in through `POST /session`; returns the answer and, when it set a cookie, the
/// cookie and key to send.
pub async fn sign_in(s: &Server, user: &str, pass: &str) -> (Resp, Option<Signed>) {
    sign_in_as(s, &serde_json::json!({"user": user, "password": pass})).await
}

/// Signs in with an API token (`{"token": …}`), as [`sign_in`] does with a password.
pub async fn sign_in_with_token(s: &Server, token: &str) -> (Resp, Option<Signed>) {
    sign_in_as(s, &serde_json::json!({"token": token})).await
}

async fn sign_in_as(s: &Server, body: &Value) -> (Resp, Option<Signed>) {
    let r = s
        .send(s.client.post(format!("{}/session", s.base)).json(body))
        .await;
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let signed = cookie.map(|cookie| Signed {
        cookie,
        key: r.json["key"].as_str().unwrap_or_default().to_owned(),
    });
    (r, signed)
}

/// Signs in like the console does, with the harness's credentials; asserts 200, a cookie
/// and a key.
pub async fn console_sign_in(s: &Server) -> Signed {
    let (r, signed) = sign_in(s, USER, PASS).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let signed = signed.expect("a cookie");
    r.json["key"].as_str().expect("a key");
    signed
}

/// A request carrying `cookie` alone: no Basic auth, no session key (what a browser sends to
/// any port of the host).
pub fn with_cookie(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
) -> reqwest::RequestBuilder {
    s.client
        .request(method, format!("{}{}", s.base, path))
        .header("cookie", cookie)
}

/// A request as the console sends it: the cookie and the key.
pub fn with_session(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    signed: &Signed,
) -> reqwest::RequestBuilder {
    with_cookie(s, method, path, &signed.cookie).header("x-session-key", &signed.key)
}

/// `POST /session/ticket` for `signed`: the ticket a console's WebSocket carries (asserts 200).
pub async fn session_ticket(s: &Server, signed: &Signed) -> String {
    let r = s
        .send(with_session(
            s,
            reqwest::Method::POST,
            "/session/ticket",
            signed,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["ticket"].as_str().unwrap().to_owned()
}

/// A terminal on `cuid` opened as the console opens one: the session's cookie, a fresh
/// ticket and this server's `Origin`.
pub async fn console_term(s: &Server, cuid: &str, signed: &Signed) -> Term {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ticket = session_ticket(s, signed).await;
    let mut req = format!("ws://{}/ws/{cuid}?ticket={ticket}", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", signed.cookie.parse().unwrap());
    req.headers_mut().insert("origin", s.base.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the session opens a terminal");
    Term::on(ws)
}

/// `DELETE /session`: signs the console session out (asserts 204).
pub async fn sign_out(s: &Server, signed: &Signed) {
    let r = s
        .send(with_session(s, reqwest::Method::DELETE, "/session", signed))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// Polls `pred` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` to its end and asserts it succeeded (its stderr otherwise).
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A `key:` line of `/proc/{pid}/status` in KiB (`VmRSS:`, `VmHWM:`); 0 when absent.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's `VmRSS` every `every` until stopped; its peak in KiB.
pub struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_kb(pid, "VmRSS:"));
                std::thread::sleep(every);
            }
            peak
        });
        Self { stop, handle }
    }

    /// The highest sample taken (KiB).
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

// ---------------------------------------------------------------- tenants and tokens

/// A client holding one bearer token (docs/API.md §13).
pub struct Bearer<'a> {
    pub server: &'a Server,
    pub token: String,
}

impl Bearer<'_> {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.server
            .client
            .request(method, format!("{}{}", self.server.base, path))
            .bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.server
            .send(self.request(reqwest::Method::GET, path))
            .await
    }

    pub async fn post(&self, path: &str) -> Resp {
        self.server
            .send(self.request(reqwest::Method::POST, path))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.server
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.server
            .send(self.request(reqwest::Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.server
            .send(self.request(reqwest::Method::DELETE, path))
            .await
    }
}

impl Server {
    /// `PUT /tenants/{name}` with `quotas`; asserts 200 or 201.
    pub async fn put_tenant(&self, name: &str, quotas: &Value) -> Resp {
        let r = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/tenants/{name}"))
                    .json(quotas),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.text);
        r
    }

    /// `DELETE /tokens/{id}` (asserts 204): what it opened ends (docs/API.md §9).
    pub async fn revoke_token(&self, id: &str) {
        let r = self.delete(&format!("/tokens/{id}")).await;
        assert_eq!(r.status, 204, "{}", r.text);
    }

    /// `POST /tokens` for `scope` (and `tenant`); asserts 201 and returns a client holding it.
    pub async fn token(&self, scope: &str, tenant: Option<&str>) -> Bearer<'_> {
        let r = self
            .post_json(
                "/tokens",
                &serde_json::json!({"name": format!("{scope}-{}", tenant.unwrap_or("all")), "scope": scope, "tenant": tenant}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        Bearer {
            server: self,
            token: r.json["token"].as_str().unwrap().to_owned(),
        }
    }
}

/// The id of the newest event (a reader with an id from the future gets one `reset` naming it).
pub async fn newest_event_id(s: &Server) -> u64 {
    read_events(s, u64::MAX / 2, u64::MAX).await[0].0
}

/// The events about `cuid` after `after` up to the newest now, as their `container` data.
pub async fn container_events_since(s: &Server, cuid: &str, after: u64) -> Vec<Value> {
    let newest = newest_event_id(s).await;
    if newest <= after {
        return Vec::new();
    }
    read_events(s, after, newest)
        .await
        .into_iter()
        .filter(|(_, kind, data)| kind == "container" && data["cuid"] == cuid)
        .map(|(_, _, data)| data["container"].clone())
        .collect()
}

/// One `GET /events` resumed after `last_id`: the events it gets, as (id, kind, data), up to
/// the first with `id >= until` or a reset.
pub async fn read_events(s: &Server, last_id: u64, until: u64) -> Vec<(u64, String, Value)> {
    read_events_until(s, last_id, |id, _, _| id >= until).await
}

/// One `GET /events` resumed after `last_id`: the events it gets, as (id, kind, data), up to
/// the first for which `done(id, kind, data)` holds, or a reset.
pub async fn read_events_until(
    s: &Server,
    last_id: u64,
    done: impl Fn(u64, &str, &Value) -> bool,
) -> Vec<(u64, String, Value)> {
    let r = s
        .request(reqwest::Method::GET, "/events")
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut body = Box::pin(r.bytes_stream());
    let mut buf = String::new();
    let mut seen = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let (Some(id), Some(kind), Some(data)) =
                (field("id:"), field("event:"), field("data:"))
            else {
                continue; // a comment
            };
            let id: u64 = id.parse().unwrap();
            let data: Value = serde_json::from_str(&data).unwrap();
            let stop = kind == "reset" || done(id, &kind, &data);
            seen.push((id, kind, data));
            if stop {
                return seen;
            }
        }
        let next = futures_util::StreamExt::next(&mut body);
        let chunk = tokio::time::timeout(Duration::from_secs(20), next)
            .await
            .expect("no event in time")
            .expect("stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads `GET /events` from the first event kept until a `container` event's representation
/// satisfies `pred`, within `limit`; returns that representation.
pub async fn wait_for_event(s: &Server, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let data = wait_event(s, limit, |d| {
        d.get("container").is_some_and(|c| c.is_object()) && pred(&d["container"])
    })
    .await;
    data["container"].clone()
}

/// `GET /events` from the start of the feed's window until an event whose data satisfies
/// `pred` arrives (panics if none does within `limit`); returns that event's data.
pub async fn wait_event(s: &Server, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let r = s
        .request(reqwest::Method::GET, "/events")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut body = Box::pin(r.bytes_stream());
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                if pred(&v) {
                    return v;
                }
            }
        }
        let next = futures_util::StreamExt::next(&mut body);
        let chunk = tokio::time::timeout_at(deadline, next)
            .await
            .expect("no such event in time")
            .expect("stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

// ---------------------------------------------------------------- terminal sessions

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A session as a client sees it: decoded output per source and stream, errors, the exit.
pub struct Term {
    pub ws: Socket,
    pub exec_out: Vec<u8>,
    pub exec_err: Vec<u8>,
    pub main_out: Vec<u8>,
    pub main_err: Vec<u8>,
    pub encodings: Vec<String>,
    pub errors: Vec<Value>,
    pub exit: Option<i64>,
    pub closed: bool,
    /// The close frame's code, when the server sent one with a code.
    pub close_code: Option<u16>,
}

/// Output frames carry at most 64 KiB of JSON-escaped data, plus the rest of the frame.
pub fn assert_message_size(text: &str) {
    assert!(
        text.len() <= 64 * 1024 + 256,
        "a {} byte message: {}…",
        text.len(),
        text.chars().take(200).collect::<String>()
    );
}

/// The end of a long text, for failure messages.
pub fn tail_of(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(400)..].iter().collect()
}

impl Term {
    pub async fn open(s: &Server, path: &str) -> Term {
        Term::on(s.ws(path).await)
    }

    /// A terminal on a WebSocket already open.
    pub fn on(ws: Socket) -> Term {
        Term {
            ws,
            exec_out: Vec::new(),
            exec_err: Vec::new(),
            main_out: Vec::new(),
            main_err: Vec::new(),
            encodings: Vec::new(),
            errors: Vec::new(),
            exit: None,
            closed: false,
            close_code: None,
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn stdin(&mut self, text: &str) {
        self.send(json!({"type": "stdin", "data": text, "encoding": "utf8"}))
            .await;
    }

    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.exec_out).into_owned()
    }

    pub fn main(&self) -> String {
        String::from_utf8_lossy(&self.main_out).into_owned()
    }

    pub fn take(&mut self, v: Value) {
        match v["type"].as_str().unwrap_or("") {
            t @ ("stdout" | "stderr") => {
                let data = v["data"].as_str().expect("data");
                let encoding = v["encoding"].as_str().expect("encoding").to_owned();
                let bytes = match encoding.as_str() {
                    "utf8" => data.as_bytes().to_vec(),
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .expect("valid base64"),
                    e => panic!("unknown encoding {e}"),
                };
                assert!(data.len() <= 64 * 1024, "a frame over 64 KiB");
                self.encodings.push(encoding);
                let buf = match (v["source"].as_str(), t) {
                    (Some("main"), "stdout") => &mut self.main_out,
                    (Some("main"), _) => &mut self.main_err,
                    (_, "stdout") => &mut self.exec_out,
                    _ => &mut self.exec_err,
                };
                buf.extend(bytes);
            }
            "exit" => self.exit = Some(v["code"].as_i64().expect("exit code")),
            "error" => self.errors.push(v),
            other => panic!("unexpected frame type {other}: {v}"),
        }
    }

    /// Reads frames until `pred` holds or the session closes; panics after `limit`.
    pub async fn until(&mut self, limit: Duration, what: &str, pred: impl Fn(&Term) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(self) {
            assert!(
                !self.closed,
                "closed before {what}; out={:?} err={:?} main={:?} errors={:?} exit={:?}",
                tail_of(&self.exec_out),
                tail_of(&self.exec_err),
                tail_of(&self.main_out),
                &self.errors[self.errors.len().saturating_sub(3)..],
                self.exit
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; out={:?} err={:?} main={:?} errors={:?}",
                tail_of(&self.exec_out),
                tail_of(&self.exec_err),
                tail_of(&self.main_out),
                &self.errors[self.errors.len().saturating_sub(3)..]
            );
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    assert_message_size(t.as_str());
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    self.take(v);
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    self.closed = true;
                }
                Ok(None) | Ok(Some(Err(_))) => self.closed = true,
                Ok(Some(Ok(_))) => {}
                Err(_) => {}
            }
        }
    }

    pub async fn until_exit(&mut self, limit: Duration) -> i64 {
        self.until(limit, "exit", |t| t.exit.is_some()).await;
        self.exit.unwrap()
    }

    /// After `exit` the server closes the socket.
    pub async fn until_closed(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "socket not closed");
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    assert_message_size(t.as_str());
                    self.take(serde_json::from_str(t.as_str()).unwrap())
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    self.closed = true;
                }
                Ok(None) | Ok(Some(Err(_))) => self.closed = true,
                _ => {}
            }
        }
    }
}

/// One request a [`Receiver`] took.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A webhook receiver in the test process: an HTTP/1 server on `127.0.0.1` that records
/// every request and answers `200`. It can go down (its port then refuses connections) and
/// come back on the same port.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<std::sync::Mutex<Vec<Received>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            port: 0,
            got: Arc::default(),
            task: None,
        };
        r.up().await;
        r
    }

    /// A receiver that is down: its port refuses connections until [`Receiver::up`].
    pub async fn down_at_first() -> Receiver {
        let mut r = Self::start().await;
        r.down().await;
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Listens (again, on the same port once it has one).
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let got = self.got.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let got = got.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let got = got.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let path = req.uri().to_string();
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await?.to_bytes().to_vec();
                                got.lock().unwrap().push(Received {
                                    path,
                                    headers,
                                    body,
                                });
                                Ok::<_, hyper::Error>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops listening: connections to its port are refused from the return on.
    pub async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // The listener is closed once the aborted task is dropped.
            let _ = t.await;
        }
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err(),
            "the receiver's port still accepts"
        );
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what was received; returns it.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; received: {:?}",
                got.iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The body of the first `200` a GET of `url` answers within `limit`, a new connection per
/// try (for an app that starts listening a moment after its container runs).
pub async fn http_answer(url: &str, limit: Duration) -> String {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let got = client.get(url).timeout(Duration::from_secs(2)).send().await;
        match got {
            Ok(r) if r.status() == 200 => return r.text().await.unwrap(),
            other => assert!(
                Instant::now() < deadline,
                "{url} never answered 200: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
