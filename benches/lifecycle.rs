//! On-demand benchmark (`cargo bench --bench lifecycle`): what the control plane adds over
//! raw Docker. Starts and stops the same container through the API (create → start, waited;
//! stop, waited; delete, waited) and directly with `docker compose` on the compose file the
//! server rendered, and prints the latencies side by side.

#[path = "../tests/it/common.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const ROUNDS: usize = 10;

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 9 / 10).min(v.len() - 1)]),
    )
}

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

#[tokio::main]
async fn main() {
    let s = Server::start().await;
    let body = json!({"image": BUSYBOX, "command": ["sh", "-c", "exec sleep 3600"]});
    let (mut api_start, mut api_stop, mut api_delete) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_up, mut raw_stop, mut raw_down) = (Vec::new(), Vec::new(), Vec::new());

    for _ in 0..ROUNDS {
        let cuid = s.post_json("/containers", &body).await.json["cuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = Instant::now();
        let r = s.post(&format!("/containers/{cuid}/start")).await;
        api_start.push(t.elapsed());
        assert_eq!(r.json["status"], "running", "{}", r.text);
        let t = Instant::now();
        assert_eq!(
            s.post(&format!("/containers/{cuid}/stop")).await.json["status"],
            "stopped"
        );
        api_stop.push(t.elapsed());

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
        raw_up.push(compose(&raw_name, &file, &["up", "-d", "--pull", "never"]));
        raw_stop.push(compose(&raw_name, &file, &["stop"]));
        raw_down.push(compose(&raw_name, &file, &["down", "-t", "10"]));

        let t = Instant::now();
        assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
        api_delete.push(t.elapsed());
    }

    println!("lifecycle over {ROUNDS} rounds (p50 / p90, ms)");
    for (name, api, raw) in [
        ("start (API) vs compose up -d", api_start, raw_up),
        ("stop (API) vs compose stop", api_stop, raw_stop),
        ("delete (API) vs compose down", api_delete, raw_down),
    ] {
        let (a50, a90) = stats(api);
        let (r50, r90) = stats(raw);
        println!(
            "{name:32} {a50:8.1} / {a90:8.1}   raw {r50:8.1} / {r90:8.1}   ratio p50 {:.2}",
            a50 / r50
        );
    }
}
