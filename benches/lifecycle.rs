//! On-demand benchmark (`cargo bench --bench lifecycle`): what the control plane adds over
//! raw Docker. Drives the same kind of container through the API (create → start, stop,
//! start, pause, unpause, restart, delete, each waited) and directly with `docker compose`
//! on the compose file the server rendered, and prints the medians side by side, with how
//! many `docker compose` processes the server ran for each kind of action (read from its
//! debug log: one "running docker compose" line per process).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn compose(project: &str, file: &std::path::Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new("docker")
        .args(["compose", "-p", project, "-f"])
        .arg(file)
        .args(args)
        .output()
        .expect("docker compose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn compose_runs(s: &Server) -> usize {
    s.server_log().matches("running docker compose").count()
}

#[derive(Default)]
struct Figures {
    api: BTreeMap<&'static str, Vec<Duration>>,
    raw: BTreeMap<&'static str, Vec<Duration>>,
    /// `docker compose` processes the server ran for each kind of action, in all rounds.
    composes: BTreeMap<&'static str, usize>,
}

impl Figures {
    /// Times one waited API action, counting the compose processes it caused.
    async fn api(&mut self, s: &Server, kind: &'static str, method: reqwest::Method, path: &str) {
        let before = compose_runs(s);
        let t = Instant::now();
        let r = s.send(s.request(method, path)).await;
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{kind}: {}", r.text);
        self.api.entry(kind).or_default().push(took);
        *self.composes.entry(kind).or_default() += compose_runs(s) - before;
    }
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", 20) as usize;
    let s = Server::start().await;
    let body = json!({"image": BUSYBOX, "command": SLEEPER});
    let mut f = Figures::default();
    use reqwest::Method as M;

    for _ in 0..rounds {
        let cuid = s.create(&body).await;
        let p = format!("/containers/{cuid}");
        f.api(&s, "create+start", M::POST, &format!("{p}/start"))
            .await;
        f.api(&s, "stop", M::POST, &format!("{p}/stop")).await;
        f.api(&s, "start", M::POST, &format!("{p}/start")).await;
        f.api(&s, "pause", M::POST, &format!("{p}/pause")).await;
        f.api(&s, "unpause", M::POST, &format!("{p}/unpause")).await;
        f.api(&s, "restart", M::POST, &format!("{p}/restart")).await;

        // The same project, driven by hand: copy the rendered file under another name.
        let rendered = s
            .data_dir()
            .join("projects")
            .join(&cuid)
            .join("compose.yaml");
        let raw_name = format!("r{}", &cuid[1..]);
        let text = std::fs::read_to_string(&rendered).unwrap().replace(
            &format!("container_name: {cuid}"),
            &format!("container_name: {raw_name}"),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, text).unwrap();
        let raw = &mut f.raw;
        let mut time = |kind, args: &[&str]| {
            raw.entry(kind)
                .or_default()
                .push(compose(&raw_name, &file, args))
        };
        time("create+start", &["up", "-d", "--pull", "never"]);
        time("stop", &["stop"]);
        time("start", &["up", "-d", "--pull", "never"]);
        time("pause", &["pause"]);
        time("unpause", &["unpause"]);
        time("restart", &["restart"]);
        time("delete", &["down", "-t", "10"]);

        f.api(&s, "delete", M::DELETE, &p).await;
    }

    println!("lifecycle over {rounds} rounds: medians (ms); compose processes the server ran");
    println!(
        "{:14} {:>9} {:>11} {:>7} {:>10}",
        "action", "API", "compose", "ratio", "composes"
    );
    for kind in [
        "create+start",
        "stop",
        "start",
        "pause",
        "unpause",
        "restart",
        "delete",
    ] {
        let api = ms(percentile(&mut f.api.remove(kind).unwrap_or_default(), 0.5));
        let raw = ms(percentile(&mut f.raw.remove(kind).unwrap_or_default(), 0.5));
        println!(
            "{kind:14} {api:9.1} {raw:11.1} {:7.2} {:>10}",
            api / raw,
            f.composes.get(kind).copied().unwrap_or(0)
        );
    }
}
