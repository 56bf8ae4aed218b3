//! `BACKEND=swarm` (README "Swarm backend") through the public API, against the three-node
//! Swarm of scripts/setup-swarm.sh (scripts/test.sh starts it; without it these tests say
//! why and pass without running).

use std::time::Duration;

use serde_json::json;

use crate::common::*;

pub(crate) const MANAGER: &str = "unix:///run/cm-swarm/1.sock";
pub(crate) const LONG: Duration = Duration::from_secs(30);

pub(crate) fn node_sock(n: u32) -> String {
    format!("unix:///run/cm-swarm/{n}.sock")
}

/// The lab's certificates (scripts/setup-swarm.sh): `client/` is what DOCKER_CERT_PATH
/// names, `rogue/` a client certificate of another CA.
const TLS: &str = "/run/cm-swarm/tls";

/// Node `n`'s Engine API over TCP with mutual TLS.
fn node_tls(n: u32) -> String {
    format!("tcp://10.231.78.1{n}:2376")
}

/// A `SWARM_CERT_PATH`: one directory per node holding a copy of `TLS/<which[n-1]>`
/// (`client`, `rogue`; `None`: no directory).
fn cert_dirs(which: [Option<&str>; 3]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (n, from) in (1..=3).zip(which) {
        let Some(from) = from else { continue };
        let to = dir.path().join(format!("cm-swarm-{n}"));
        std::fs::create_dir(&to).unwrap();
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(format!("{TLS}/{from}/{file}"), to.join(file)).unwrap();
        }
    }
    dir
}

/// The settings of a server that reaches the manager and every node through TLS, each
/// node's certificates in `certs` (see [`cert_dirs`]).
fn tls_env(certs: &std::path::Path) -> Vec<(String, String)> {
    let nodes = (1..=3)
        .map(|n| format!("cm-swarm-{n}={}", node_tls(n)))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("BACKEND", "swarm".to_owned()),
        ("DOCKER_HOST", node_tls(1)),
        ("DOCKER_TLS_VERIFY", "1".to_owned()),
        ("DOCKER_CERT_PATH", format!("{TLS}/client")),
        ("SWARM_NODES", nodes),
        ("SWARM_CERT_PATH", certs.display().to_string()),
        ("RESYNC_INTERVAL", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The lab's TLS endpoints answer (an older lab has none); prints why not.
fn tls_ready() -> bool {
    let ok = std::path::Path::new(&format!("{TLS}/client/key.pem")).exists()
        && std::process::Command::new("docker")
            .args(["-H", &node_tls(2), "--tlsverify", "version"])
            .env("DOCKER_CERT_PATH", format!("{TLS}/client"))
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: the lab has no TLS endpoints (scripts/setup-swarm.sh makes them)");
    }
    ok
}

/// The server binary's refusal within 60 s: its exit status and stderr.
fn refusal(wrapper: &[&str], env: &[(String, String)]) -> (std::process::ExitStatus, String) {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("APP_USER", "admin"), ("APP_PASS", "a-Pa55word-for-tests")]);
    let mut under = vec!["timeout", "60"];
    under.extend(wrapper);
    run_to_exit_under(&under, &env)
}

/// One swarm test at a time: the node-loss test kills a node the others would use.
pub(crate) static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lab, held for one test, if it answers as a three-node Swarm (see [`lab_ready`]).
pub(crate) async fn lab() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let held = LAB.lock().await;
    lab_ready().then_some(held)
}

/// Whether the lab answers as a three-node Swarm; prints why not.
pub(crate) fn lab_ready() -> bool {
    let nodes = docker_on(Some(MANAGER), &["node", "ls", "--format", "{{.Status}}"]);
    let ready = nodes.lines().filter(|l| l.trim() == "Ready").count();
    if ready < 3 {
        assert!(
            std::env::var_os("CM_REQUIRE_SWARM_LAB").is_none(),
            "CM_REQUIRE_SWARM_LAB is set (scripts/test.sh) but only {ready} lab nodes are ready"
        );
        eprintln!(
            "SKIPPED: the three-node Swarm of scripts/setup-swarm.sh is not running \
             ({ready} nodes ready at {MANAGER}); scripts/test.sh starts it"
        );
        return false;
    }
    true
}

/// The lab's services of one server, removed when the test ends (however it ends).
pub(crate) struct Services(String);

impl Drop for Services {
    fn drop(&mut self) {
        let label = format!("label=com.container-manager.instance={}", self.0);
        let ids = docker_on(Some(MANAGER), &["service", "ls", "-q", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(ids);
            docker_on(Some(MANAGER), &args);
        }
    }
}

/// `SWARM_NODES` naming the lab's three nodes by their sockets.
pub(crate) fn lab_nodes() -> (String, String) {
    let nodes = (1..=3)
        .map(|n| format!("cm-swarm-{n}={}", node_sock(n)))
        .collect::<Vec<_>>()
        .join(",");
    ("SWARM_NODES".into(), nodes)
}

pub(crate) async fn swarm_server() -> (Server, Services) {
    swarm_server_with(vec![lab_nodes()]).await
}

/// A swarm server with `env` besides `BACKEND`, `DOCKER_HOST` and a short resync (no
/// `SWARM_NODES` unless `env` has it: [`lab_nodes`]).
pub(crate) async fn swarm_server_with(env: Vec<(String, String)>) -> (Server, Services) {
    let mut env = env;
    env.push(("BACKEND".into(), "swarm".into()));
    env.push(("RESYNC_INTERVAL".into(), "2".into()));
    let s = Server::start_with(Options {
        docker_host: Some(MANAGER.into()),
        env,
        ..Default::default()
    })
    .await;
    let services = Services(s.instance_id.clone());
    (s, services)
}

/// A lab node lost on purpose: its daemon killed (`scripts/setup-swarm.sh kill N`) or its
/// link cut (`cut N`). Restored when this is dropped, however the test ends, and waited for
/// until the three nodes are Ready again (the next test needs them).
pub(crate) struct LostNode {
    n: u32,
    undo: &'static str,
}

impl LostNode {
    pub(crate) fn kill(n: u32) -> LostNode {
        assert!(lab_script(&["kill", &n.to_string()]), "kill node {n}");
        LostNode { n, undo: "restart" }
    }

    pub(crate) fn cut(n: u32) -> LostNode {
        assert!(lab_script(&["cut", &n.to_string()]), "cut node {n}");
        LostNode { n, undo: "uncut" }
    }
}

impl Drop for LostNode {
    fn drop(&mut self) {
        lab_script(&[self.undo, &self.n.to_string()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let nodes = docker_on(Some(MANAGER), &["node", "ls", "--format", "{{.Status}}"]);
            if nodes.lines().filter(|l| l.trim() == "Ready").count() == 3 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The next Swarm test needs the whole lab: say so here, not as its mystery.
        if !std::thread::panicking() {
            panic!("node {} is not Ready again after {}", self.n, self.undo);
        }
        eprintln!("node {} is not Ready again after {}", self.n, self.undo);
    }
}

fn lab_script(args: &[&str]) -> bool {
    let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-swarm.sh");
    std::process::Command::new("bash")
        .arg(lab)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// `cm-swarm-N` → N.
pub(crate) fn node_number(name: &str) -> u32 {
    name.trim_start_matches("cm-swarm-")
        .parse()
        .expect("a lab node")
}

/// The other worker than `name` (the lab's workers are nodes 2 and 3; 1 is the manager).
pub(crate) fn other_worker(name: &str) -> &'static str {
    match name {
        "cm-swarm-2" => "cm-swarm-3",
        "cm-swarm-3" => "cm-swarm-2",
        other => panic!("a worker-only container on {other}"),
    }
}

/// The node that runs `cuid`'s task now (from the manager).
pub(crate) fn task_node(cuid: &str) -> Option<String> {
    let out = docker_on(
        Some(MANAGER),
        &[
            "service",
            "ps",
            cuid,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ],
    );
    out.lines()
        .find(|l| l.contains("Running"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
}

#[tokio::test]
async fn health_shows_the_backend_and_the_three_nodes() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    let h = s.get("/healthz").await;
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.json["backend"], "swarm");
    let nodes = h.json["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(
        names,
        ["cm-swarm-1", "cm-swarm-2", "cm-swarm-3"],
        "{}",
        h.text
    );
    for (n, zone) in nodes.iter().zip(["a", "b", "c"]) {
        assert_eq!(n["state"], "ready", "{n}");
        assert_eq!(n["engine"], "ok", "{n}");
        assert_eq!(n["labels"]["zone"], zone, "{n}");
        // Each node saw the server's app storage at start-up.
        assert_eq!(n["storage"], "shared", "{n}");
        assert!(
            n["endpoint"]
                .as_str()
                .unwrap()
                .starts_with("unix:///run/cm-swarm/"),
            "{n}"
        );
    }
    assert_eq!(nodes[0]["role"], "manager");

    // A compose server says so, and lists no nodes.
    let plain = Server::start().await;
    let h = plain.get("/healthz").await;
    assert_eq!(h.json["backend"], "compose", "{}", h.text);
    assert!(h.json["nodes"].is_null(), "{}", h.text);
}

#[tokio::test]
async fn a_container_lives_its_whole_life_as_a_service() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    let cuid = s
        .create(&json!({
            "image": BUSYBOX,
            "command": ["sh", "-c", "echo hello-from-swarm; exec sleep 3600"],
            "resources": {"pids": 64},
        }))
        .await;
    s.start_container(&cuid).await;
    let node = task_node(&cuid).expect("a running task");
    // The representation names the node.
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["node"].as_str(), Some(node.as_str()), "{}", r.text);
    // One service, one replica, its limits as the spec says (pids included).
    let spec = docker_on(
        Some(MANAGER),
        &[
            "service",
            "inspect",
            &cuid,
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}} {{.Spec.TaskTemplate.Resources.Limits.Pids}}",
        ],
    );
    assert_eq!(spec.trim(), "1 64");

    // Files: uploaded through the API, read inside the container on its node, and back.
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("hello.txt", b"from the api")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, _, body) =
        get_bytes(&s, &format!("/containers/{cuid}/download?path=hello.txt")).await;
    assert_eq!((status, body.as_slice()), (200, b"from the api".as_slice()));

    // Exec through the node that runs the task: sees the uploaded file and writes one.
    let cmd = "cat /app/hello.txt; echo; hostname; echo written > /app/from-exec.txt";
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 0);
    assert!(t.out().contains("from the api"), "{}", t.out());
    let (status, _, body) = get_bytes(
        &s,
        &format!("/containers/{cuid}/download?path=from-exec.txt"),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, b"written\n".as_slice()));

    // Logs and stats of the task's container, on its node.
    let logs = s.get(&format!("/containers/{cuid}/logs")).await;
    assert_eq!(logs.status, 200, "{}", logs.text);
    assert!(logs.text.contains("hello-from-swarm"), "{}", logs.text);
    let stats = s.get(&format!("/containers/{cuid}/stats")).await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert!(
        stats.json["pids"]["limit"] == 64 || stats.json["pids"].is_object(),
        "{}",
        stats.text
    );

    // Pause and unpause on the node.
    let r = s.post(&format!("/containers/{cuid}/pause")).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("paused")),
        "{}",
        r.text
    );
    let paused = docker_on(
        Some(&node_sock(node_number(&node))),
        &[
            "ps",
            "--filter",
            &format!("label=com.container-manager.cuid={cuid}"),
            "--format",
            "{{.Status}}",
        ],
    );
    assert!(paused.contains("Paused"), "{paused}");
    let r = s.post(&format!("/containers/{cuid}/unpause")).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("running")),
        "{}",
        r.text
    );

    // A snapshot of the running container pauses it on its node for the copy (not on the
    // manager, where no such container is) and unpauses it after.
    // Nanoseconds: the pause/unpause just above fell within the same second.
    let now = chrono::Utc::now();
    let since = format!("{}.{:09}", now.timestamp(), now.timestamp_subsec_nanos());
    let r = s
        .post_json(
            &format!("/containers/{cuid}/snapshots"),
            &json!({"name": "on-its-node"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let events = docker_on(
        Some(&node_sock(node_number(&node))),
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            &format!("label=com.container-manager.cuid={cuid}"),
            "--format",
            "{{.Action}}",
        ],
    );
    let actions: Vec<&str> = events.lines().collect();
    assert!(
        actions.contains(&"pause") && actions.contains(&"unpause"),
        "{actions:?}"
    );
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);

    // Stop: no replica; start: one again; restart: a new task.
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("stopped")),
        "{}",
        r.text
    );
    assert_eq!(task_node(&cuid), None);
    assert!(r.json["node"].is_null(), "{}", r.text);
    s.start_container(&cuid).await;
    let before = docker_on(Some(MANAGER), &["service", "ps", "-q", &cuid]);
    let r = s.post(&format!("/containers/{cuid}/restart")).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("running")),
        "{}",
        r.text
    );
    let after = docker_on(Some(MANAGER), &["service", "ps", "-q", &cuid]);
    assert!(
        after.lines().count() > before.lines().count(),
        "no new task: {after}"
    );

    // Drift: the service removed behind the server's back is made again.
    docker_on(Some(MANAGER), &["service", "rm", &cuid]);
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| {
        r.json["status"] == "running" && task_node(&cuid).is_some()
    })
    .await;

    // Delete: the service and the files go.
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert!(matches!(r.status, 200 | 202 | 204), "{}", r.text);
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| r.status == 404)
        .await;
    let left = docker_on(
        Some(MANAGER),
        &["service", "ls", "-q", "--filter", &format!("name={cuid}")],
    );
    assert_eq!(left.trim(), "");
    assert!(!s.mount(&cuid).exists());
}

#[tokio::test]
async fn placement_pins_containers_and_a_lost_node_moves_one_with_its_files() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    // Checked for syntax, and against the cluster's labels.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "placement": {"constraints": ["zone==b"]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("INVALID_PLACEMENT")),
        "{}",
        r.text
    );
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "placement": {"constraints": ["node.labels.zone==nowhere"]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("PLACEMENT_UNSATISFIABLE")),
        "{}",
        r.text
    );
    // What a Swarm cannot honour is refused, not ignored.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "network": {"egress": "none"}}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.json["code"].as_str(),
            r.json["details"]["field"].as_str()
        ),
        (400, Some("NOT_SUPPORTED_ON_SWARM"), Some("network.egress")),
        "{}",
        r.text
    );

    // Two containers pinned to different nodes by their labels.
    let on_b = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.labels.zone==b"]},
        }))
        .await;
    // Any worker (2 or 3, as Swarm spreads it).
    let moving = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.role==worker"]},
        }))
        .await;
    assert_eq!(task_node(&on_b).as_deref(), Some("cm-swarm-2"));
    let from = task_node(&moving).expect("running");
    let (dying, to) = (node_number(&from), other_worker(&from));
    let r = s.get(&format!("/containers/{on_b}")).await;
    assert_eq!(
        r.json["placement"]["constraints"][0], "node.labels.zone==b",
        "{}",
        r.text
    );
    let r = s
        .upload_zip(&moving, "", zip_of(&[("keep.txt", b"kept across nodes")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Its node's daemon dies: the container moves to the other worker, with its files.
    let _revive = LostNode::kill(dying);
    s.wait_for(
        &format!("/containers/{moving}"),
        Duration::from_secs(60),
        |r| {
            r.json["status"] == "running"
                && r.json["node"] == to
                && task_node(&moving).as_deref() == Some(to)
        },
    )
    .await;
    let cmd = "cat /app/keep.txt";
    let mut t = Term::open(
        &s,
        &format!("/ws/{moving}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 0);
    assert!(t.out().contains("kept across nodes"), "{}", t.out());
    let h = s.get("/healthz").await;
    let dead = &h.json["nodes"][dying as usize - 1];
    assert_eq!(dead["name"], from.as_str());
    assert_ne!(dead["state"], "ready", "{}", h.text);
    if dying == 3 {
        // The other container did not move.
        assert_eq!(task_node(&on_b).as_deref(), Some("cm-swarm-2"));
    }
}

/// Settings that cannot work are refused at start-up, one line saying why; `placement` on a
/// compose server is refused, not ignored. (No Swarm needed.)
#[tokio::test]
async fn impossible_settings_and_placement_on_compose_are_refused() {
    let base = [("APP_USER", "admin"), ("APP_PASS", "a-Pa55word-for-tests")];
    for (extra, says) in [
        (vec![("BACKEND", "kubernetes")], "BACKEND"),
        (
            vec![("SWARM_NODES", "n1=unix:///run/n1.sock")],
            "SWARM_NODES",
        ),
        (
            vec![
                ("BACKEND", "swarm"),
                ("SWARM_NODES", "n1=tcp://10.0.0.1:2376"),
                ("DOCKER_CERT_PATH", "/nonexistent/certs"),
            ],
            "cannot read /nonexistent/certs/ca.pem",
        ),
        (
            vec![("DOCKER_HOST", "tcp://10.0.0.1:2375")],
            "without DOCKER_TLS_VERIFY=1",
        ),
        // In clear, or a scheme the compose children would not take.
        (
            vec![("DOCKER_HOST", "http://10.0.0.1:2375")],
            "only unix:///path or tcp://host:port",
        ),
        (
            vec![("DOCKER_HOST", "ssh://admin@10.0.0.1")],
            "only unix:///path or tcp://host:port",
        ),
        (
            vec![("BACKEND", "swarm"), ("DEFAULT_ISOLATION", "gvisor")],
            "DEFAULT_ISOLATION",
        ),
        (
            vec![("BACKEND", "swarm"), ("DEFAULT_EGRESS", "none")],
            "DEFAULT_EGRESS",
        ),
        (vec![("SWARM_PUBLISH", "host")], "SWARM_PUBLISH"),
        (vec![("SWARM_CERT_PATH", "/etc/certs")], "SWARM_CERT_PATH"),
        (
            vec![("BACKEND", "swarm"), ("SWARM_PUBLISH", "mesh")],
            "SWARM_PUBLISH",
        ),
    ]
    .into_iter()
    // The routing mesh without IPVS (this kernel, the lab's): Swarm would run the task and
    // publish nothing, so the server refuses to start.
    .chain(
        (!std::path::Path::new("/proc/net/ip_vs").exists()).then(|| {
            (
                vec![("BACKEND", "swarm"), ("SWARM_PUBLISH", "ingress")],
                "IPVS",
            )
        }),
    ) {
        let env: Vec<(&str, &str)> = base.iter().copied().chain(extra.clone()).collect();
        let (status, stderr) = run_to_exit(&env);
        assert!(!status.success(), "{extra:?} started");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
    let s = Server::start().await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "placement": {"constraints": ["node.labels.zone==a"]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("PLACEMENT_NEEDS_SWARM")),
        "{}",
        r.text
    );
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "placement": {"constraints": "x"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("INVALID_PLACEMENT")),
        "{}",
        r.text
    );
    let cuid = s.create(&json!({"image": BUSYBOX})).await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert!(r.json["placement"].is_null(), "{}", r.text);
    assert!(r.json["node"].is_null(), "{}", r.text);
}

/// The lab's address of node `cm-swarm-N`.
fn node_ip(name: &str) -> String {
    format!("10.231.78.1{}", name.trim_start_matches("cm-swarm-"))
}

/// A busybox httpd on container port 8080 answering `marker` at `/`.
fn httpd(marker: &str, port: u16, node: &str) -> serde_json::Value {
    let script = format!(
        "mkdir -p /tmp/www && echo {marker} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    json!({
        "image": BUSYBOX,
        "command": ["sh", "-c", script],
        "ports": [{"host": port, "container": 8080}],
        "placement": {"constraints": [format!("node.hostname=={node}")]},
    })
}

/// The one endpoint a representation (or live status) lists for `port`.
fn the_endpoint(r: &Resp, node: &str, port: u16) {
    assert_eq!(
        r.json["endpoints"],
        json!([{"address": node_ip(node), "port": port, "container": 8080,
                "protocol": "tcp", "node": node}]),
        "{}",
        r.text
    );
}

/// Ports are published in host mode on the task's node: the representation and the live
/// status name the node and its address, the app answers there from outside the cluster,
/// and when the container is pinned elsewhere the endpoint follows it. Stats (one and many)
/// and the live status reach the worker that runs it.
#[tokio::test]
async fn a_published_port_answers_on_the_node_the_representation_names() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    let port = free_port();
    let cuid = s
        .create_started(&httpd("hello-from-node", port, "cm-swarm-2"))
        .await;
    assert_eq!(task_node(&cuid).as_deref(), Some("cm-swarm-2"));
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["node"], "cm-swarm-2", "{}", r.text);
    the_endpoint(&r, "cm-swarm-2", port);
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(st.status, 200, "{}", st.text);
    assert_eq!(
        (&st.json["source"], &st.json["running"], &st.json["paused"]),
        (&json!("docker"), &json!(true), &json!(false)),
        "{}",
        st.text
    );
    assert_eq!(st.json["node"], "cm-swarm-2", "{}", st.text);
    the_endpoint(&st, "cm-swarm-2", port);
    let body = http_answer(&format!("http://{}:{port}/", node_ip("cm-swarm-2")), LONG).await;
    assert_eq!(body.trim(), "hello-from-node");

    // Stats of a container on a worker: real figures, one at a time and in a batch.
    let one = s.get(&format!("/containers/{cuid}/stats")).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert!(
        one.json["memory"]["used_bytes"].as_u64() > Some(0),
        "{}",
        one.text
    );
    assert!(
        one.json["pids"]["current"].as_u64() > Some(0),
        "{}",
        one.text
    );
    let many = s.get(&format!("/stats?cuids={cuid}")).await;
    assert_eq!(many.status, 200, "{}", many.text);
    assert_eq!(many.json["not_running"], json!([]), "{}", many.text);
    assert_eq!(
        many.json["stats"][0]["cuid"],
        cuid.as_str(),
        "{}",
        many.text
    );
    assert!(
        many.json["stats"][0]["memory"]["used_bytes"].as_u64() > Some(0),
        "{}",
        many.text
    );

    // Paused on its node: the live status says so (Docker's word, from the node).
    let r = s.post(&format!("/containers/{cuid}/pause")).await;
    assert_eq!(r.json["status"], "paused", "{}", r.text);
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(
        (&st.json["source"], &st.json["running"], &st.json["paused"]),
        (&json!("docker"), &json!(false), &json!(true)),
        "{}",
        st.text
    );
    assert_eq!(st.json["docker_status"], "paused", "{}", st.text);
    let r = s.post(&format!("/containers/{cuid}/unpause")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);

    // Pinned to another node: the task moves and the endpoint with it.
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"placement": {"constraints": ["node.hostname==cm-swarm-3"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .wait_for(&format!("/containers/{cuid}"), LONG, |r| {
            r.json["status"] == "running" && r.json["node"] == "cm-swarm-3"
        })
        .await;
    the_endpoint(&r, "cm-swarm-3", port);
    assert_eq!(task_node(&cuid).as_deref(), Some("cm-swarm-3"));
    let body = http_answer(&format!("http://{}:{port}/", node_ip("cm-swarm-3")), LONG).await;
    assert_eq!(body.trim(), "hello-from-node");

    // Stopped: no endpoint.
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);
    assert_eq!(r.json["endpoints"], json!([]), "{}", r.text);
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(
        (&st.json["running"], &st.json["node"], &st.json["endpoints"]),
        (&json!(false), &json!(null), &json!([])),
        "{}",
        st.text
    );
}

/// The idle sampler reads a container's traffic from the node that runs it: a quiet one on
/// a worker is paused for idleness.
#[tokio::test]
async fn a_quiet_container_on_a_worker_goes_idle() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server_with(vec![
        lab_nodes(),
        ("IDLE_SAMPLE_INTERVAL".into(), "1".into()),
    ])
    .await;
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.hostname==cm-swarm-3"]},
            "idle": {"after": 5, "action": "pause"},
        }))
        .await;
    let r = s
        .wait_for(&format!("/containers/{cuid}"), LONG, |r| {
            r.json["status"] == "paused" && r.json["status_reason"] == "idle"
        })
        .await;
    assert_eq!(r.json["node"], "cm-swarm-3", "{}", r.text);
}

/// Without `SWARM_NODES` the manager's own Engine API serves only the manager's node (a
/// one-node Swarm): a container on another node is `503 DOCKER_UNAVAILABLE` naming it, not
/// a question to the manager's daemon, which has no such container.
#[tokio::test]
async fn without_swarm_nodes_only_the_managers_node_is_reached() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server_with(Vec::new()).await;
    let pinned = |node: &str| {
        json!({"image": BUSYBOX, "command": SLEEPER,
               "placement": {"constraints": [format!("node.hostname=={node}")]}})
    };
    let on_manager = s.create_started(&pinned("cm-swarm-1")).await;
    let on_worker = s.create_started(&pinned("cm-swarm-2")).await;
    let r = s.get(&format!("/containers/{on_manager}/stats")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get(&format!("/containers/{on_worker}/stats")).await;
    r.assert_error(503, "unavailable", "DOCKER_UNAVAILABLE");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("cm-swarm-2"),
        "{}",
        r.text
    );
    // In a batch, the node out of reach costs only its own container.
    let r = s
        .get(&format!("/stats?cuids={on_worker},{on_manager}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            &r.json["unreachable"],
            &r.json["stats"][0]["cuid"],
            &r.json["not_running"]
        ),
        (&json!([on_worker]), &json!(on_manager), &json!([])),
        "{}",
        r.text
    );
}

/// On one host an endpoint has no node, and its address is the port's `host_ip`, or null
/// for every address of the host. (No Swarm needed.)
#[tokio::test]
async fn endpoints_on_one_host_name_the_bind_address() {
    let s = Server::start().await;
    let (any, local) = (free_port(), free_port());
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "ports": [{"host": any, "container": 8080},
                      {"host": local, "container": 9090, "protocol": "udp", "host_ip": "127.0.0.1"}],
        }))
        .await;
    let want = json!([
        {"address": null, "port": any, "container": 8080, "protocol": "tcp", "node": null},
        {"address": "127.0.0.1", "port": local, "container": 9090, "protocol": "udp", "node": null},
    ]);
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["endpoints"], want, "{}", r.text);
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(st.json["endpoints"], want, "{}", st.text);
    assert!(st.json["node"].is_null(), "{}", st.text);
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.json["endpoints"], json!([]), "{}", r.text);
    // Documented in the OpenAPI document, with the two nullable fields required.
    let doc = s.get("/openapi.json").await.json;
    let schema = &doc["components"]["schemas"]["Endpoint"];
    for field in ["address", "port", "container", "protocol", "node"] {
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == field)),
            "{field}: {schema}"
        );
    }
}

/// The manager's daemon dies and comes back: the API keeps answering from the store, what a
/// client asked meanwhile is applied once the manager is back, and drift is repaired as
/// before (issue 20: "drift repair works as today … the manager restarted").
#[tokio::test]
async fn the_manager_restarted_loses_nothing_and_drift_is_repaired_after() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.labels.zone==b"]},
        }))
        .await;
    assert_eq!(task_node(&cuid).as_deref(), Some("cm-swarm-2"));

    let revive = LostNode::kill(1);

    // No manager: reads answer from the store, a stop is taken and kept.
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post(&format!("/containers/{cuid}/stop?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["desired_state"], "stopped", "{}", r.text);

    // The manager is back: the stop is applied (no task left), then a start runs it again.
    drop(revive);
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(60),
        |r| r.json["status"] == "stopped" && task_node(&cuid).is_none(),
    )
    .await;
    // The workers report to the new manager within a few heartbeats; until then their
    // tasks count as on a node not ready: the start is taken, and converges.
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| {
        r.json["status"] == "running" && task_node(&cuid).as_deref() == Some("cm-swarm-2")
    })
    .await;

    // Drift after the restart: a service removed behind the server's back is made again.
    docker_on(Some(MANAGER), &["service", "rm", &cuid]);
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| {
        r.json["status"] == "running" && task_node(&cuid).is_some()
    })
    .await;
}

/// The manager and every node reached over TCP with Docker's mutual TLS (the lab's
/// certificates, one directory per node in SWARM_CERT_PATH): a container's life.
#[tokio::test]
async fn tls_endpoints_run_a_containers_life() {
    let Some(_lab) = lab().await else { return };
    if !tls_ready() {
        return;
    }
    let certs = cert_dirs([Some("client"); 3]);
    let s = Server::start_with(Options {
        env: tls_env(certs.path()),
        ..Default::default()
    })
    .await;
    let _services = Services(s.instance_id.clone());
    let h = s.get("/healthz").await;
    assert_eq!(h.status, 200, "{}", h.text);
    let nodes = h.json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{}", h.text);
    for (n, i) in nodes.iter().zip(1..) {
        assert_eq!(n["endpoint"].as_str(), Some(node_tls(i).as_str()), "{n}");
        assert_eq!(
            (&n["engine"], &n["storage"]),
            (&json!("ok"), &json!("shared")),
            "{n}"
        );
    }

    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX,
            "command": ["sh", "-c", "echo hello-over-tls; exec sleep 3600"],
        }))
        .await;
    let node = task_node(&cuid).expect("a running task");
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["node"].as_str(), Some(node.as_str()), "{}", r.text);
    // Exec and logs through the TLS endpoint of the task's node.
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode("hostname")),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 0);
    let logs = s.get(&format!("/containers/{cuid}/logs")).await;
    assert_eq!(logs.status, 200, "{}", logs.text);
    assert!(logs.text.contains("hello-over-tls"), "{}", logs.text);
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("stopped")),
        "{}",
        r.text
    );
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert!(matches!(r.status, 200 | 202 | 204), "{}", r.text);
    s.wait_for(&format!("/containers/{cuid}"), LONG, |r| r.status == 404)
        .await;
    let left = docker_on(
        Some(MANAGER),
        &["service", "ls", "-q", "--filter", &format!("name={cuid}")],
    );
    assert_eq!(left.trim(), "");
}

/// Certificates that cannot work stop the start with one line naming the node (or
/// DOCKER_HOST) and the file or the TLS failure; plain TCP is refused.
#[tokio::test]
async fn wrong_or_missing_certificates_and_plain_tcp_are_refused_at_start_up() {
    let Some(_lab) = lab().await else { return };
    if !tls_ready() {
        return;
    }
    // Node 2's client certificate is of another CA: its daemon refuses the handshake.
    let certs = cert_dirs([Some("client"), Some("rogue"), Some("client")]);
    let (status, stderr) = refusal(&[], &tls_env(certs.path()));
    assert!(!status.success(), "started: {stderr}");
    assert!(
        stderr.contains("node cm-swarm-2 (tcp://10.231.78.12:2376): TLS failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Node 2's daemon certificate is not of the CA its ca.pem names: refused, even though
    // the system's store (SSL_CERT_FILE here) trusts the lab's CA. Only ca.pem counts.
    let certs = cert_dirs([Some("client"); 3]);
    std::fs::copy(
        format!("{TLS}/rogue-ca/ca.pem"),
        certs.path().join("cm-swarm-2/ca.pem"),
    )
    .unwrap();
    let mut env = tls_env(certs.path());
    env.push(("SSL_CERT_FILE".into(), format!("{TLS}/ca.pem")));
    let (status, stderr) = refusal(&[], &env);
    assert!(!status.success(), "started: {stderr}");
    assert!(
        stderr.contains("node cm-swarm-2 (tcp://10.231.78.12:2376): TLS failed"),
        "{stderr}"
    );

    // Node 3 has no certificate directory: the missing file is named.
    let certs = cert_dirs([Some("client"), Some("client"), None]);
    let (status, stderr) = refusal(&[], &tls_env(certs.path()));
    assert!(!status.success(), "started: {stderr}");
    let missing = certs.path().join("cm-swarm-3/ca.pem");
    assert!(
        stderr.contains("cm-swarm-3=tcp://10.231.78.13:2376")
            && stderr.contains(&format!("cannot read {}", missing.display())),
        "{stderr}"
    );

    // The manager with a certificate its daemon refuses.
    let certs = cert_dirs([Some("client"); 3]);
    let mut env = tls_env(certs.path());
    env.retain(|(k, _)| k != "DOCKER_CERT_PATH");
    env.push(("DOCKER_CERT_PATH".into(), format!("{TLS}/rogue")));
    let (status, stderr) = refusal(&[], &env);
    assert!(!status.success(), "started: {stderr}");
    assert!(
        stderr.contains("DOCKER_HOST=tcp://10.231.78.11:2376: TLS failed"),
        "{stderr}"
    );

    // Plain TCP: refused, whatever answers there.
    let mut env = tls_env(certs.path());
    env.retain(|(k, _)| k != "DOCKER_TLS_VERIFY");
    let (status, stderr) = refusal(&[], &env);
    assert!(!status.success(), "started: {stderr}");
    assert!(stderr.contains("without DOCKER_TLS_VERIFY=1"), "{stderr}");
    let (status, stderr) = refusal(
        &[],
        &[
            ("BACKEND".into(), "swarm".into()),
            ("SWARM_NODES".into(), "n1=http://10.231.78.11:2375".into()),
        ],
    );
    assert!(!status.success(), "started: {stderr}");
    assert!(stderr.contains("plain http:// is refused"), "{stderr}");
}

/// The nodes must see the server's app storage: a server whose DATA_DIR is a tmpfs of its
/// own mount namespace (the nodes' daemons see the directory below it, not its files) is
/// refused, naming each node and the path. A node that does not answer at start-up does not
/// stop it: its storage is checked when it answers.
#[tokio::test]
async fn the_app_storage_must_be_the_same_on_every_node() {
    let Some(_lab) = lab().await else { return };
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let nodes = (1..=3)
        .map(|n| format!("cm-swarm-{n}={}", node_sock(n)))
        .collect::<Vec<_>>()
        .join(",");
    let env: Vec<(String, String)> = [
        ("BACKEND", "swarm".to_owned()),
        ("DOCKER_HOST", MANAGER.to_owned()),
        ("SWARM_NODES", nodes),
        ("DATA_DIR", data_dir.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let private_tmpfs = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs cm-test-private "$DATA_DIR" && exec "$0""#,
    ];
    let (status, stderr) = refusal(&private_tmpfs, &env);
    assert!(!status.success(), "started: {stderr}");
    let mounts = data_dir.join("mounts");
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!(
                "node cm-swarm-{n} does not see this server's app storage {}",
                mounts.display()
            )),
            "{stderr}"
        );
    }
    assert!(stderr.contains("NFS"), "{stderr}");

    // Node 3 not reachable yet (its socket is not where SWARM_NODES says): the server
    // starts, says so, and checks it once it answers.
    let later = tempfile::tempdir().unwrap();
    let sock = later.path().join("3.sock");
    let nodes = format!(
        "cm-swarm-1={},cm-swarm-2={},cm-swarm-3=unix://{}",
        node_sock(1),
        node_sock(2),
        sock.display()
    );
    let s = Server::start_with(Options {
        docker_host: Some(MANAGER.into()),
        env: vec![
            ("BACKEND".into(), "swarm".into()),
            ("SWARM_NODES".into(), nodes),
        ],
        ..Default::default()
    })
    .await;
    let _services = Services(s.instance_id.clone());
    let h = s.get("/healthz").await;
    let third = &h.json["nodes"][2];
    assert_eq!(third["name"], "cm-swarm-3", "{}", h.text);
    assert!(
        third["storage"]
            .as_str()
            .is_some_and(|v| v.starts_with("unchecked: ")),
        "{}",
        h.text
    );
    assert_eq!(h.json["nodes"][0]["storage"], "shared", "{}", h.text);
    // A container an earlier check of this server left on node 3 (a check cut by its
    // timeout after the create): under the name a check with this start's token takes, and
    // with this server's label. The recheck is not fooled by it (no 409 read as "not
    // shared") and removes it.
    let label = format!("com.container-manager.storage-check={}", s.instance_id);
    let leftover = StorageCheckLeftovers(3, label.clone());
    let marker = std::fs::read_to_string(s.data_dir().join("mounts/.cm-storage-check")).unwrap();
    let token = marker.split_whitespace().last().unwrap();
    let image = docker_on(Some(&node_sock(3)), &["image", "ls", "-q"]);
    let image = image.lines().next().expect("node 3 has an image");
    let name = format!("cm-storage-check-{}", &token[..16]);
    let id = docker_on(
        Some(&node_sock(3)),
        &[
            "create",
            "--name",
            &name,
            "--label",
            &label,
            image,
            "/never-started",
        ],
    );
    assert!(!id.trim().is_empty(), "leftover not created");
    std::os::unix::fs::symlink("/run/cm-swarm/3.sock", &sock).unwrap();
    let r = s
        .wait_for("/healthz", LONG, |r| {
            !r.json["nodes"][2]["storage"]
                .as_str()
                .is_some_and(|v| v.starts_with("unchecked: "))
        })
        .await;
    assert_eq!(r.json["nodes"][2]["storage"], "shared", "{}", r.text);
    assert_eq!(leftover.ids(), "", "the leftover is still on node 3");
}

/// The storage-check containers labelled `label` on lab node N, removed when dropped.
struct StorageCheckLeftovers(u32, String);

impl StorageCheckLeftovers {
    fn ids(&self) -> String {
        let filter = format!("label={}", self.1);
        docker_on(
            Some(&node_sock(self.0)),
            &["ps", "-aq", "--filter", &filter],
        )
        .trim()
        .to_owned()
    }
}

impl Drop for StorageCheckLeftovers {
    fn drop(&mut self) {
        for id in self.ids().split_whitespace() {
            docker_on(Some(&node_sock(self.0)), &["rm", "-f", id]);
        }
    }
}
