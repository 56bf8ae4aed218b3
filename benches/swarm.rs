//! On-demand benchmark (`cargo bench --bench swarm`) of `BACKEND=swarm` against the
//! three-node Swarm of scripts/setup-swarm.sh (run it first): create→running through the API
//! vs `docker service create` of the same container (polled until its task runs, as the
//! server does), and the time from a worker's `dockerd` killed to the container running on the
//! other worker, as the API shows it. Prints medians side by side.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const MANAGER: &str = "unix:///run/cm-swarm/1.sock";
const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-swarm.sh");

fn dm(args: &[&str]) -> String {
    docker_on(Some(MANAGER), args)
}

fn running_on(service: &str) -> Option<String> {
    dm(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
    ])
    .lines()
    .find(|l| l.contains(" Running"))
    .and_then(|l| l.split_whitespace().next())
    .map(str::to_owned)
}

fn lab(args: &[&str]) {
    let ok = Command::new("bash").arg(LAB).args(args).status().unwrap();
    assert!(ok.success(), "setup-swarm.sh {args:?}");
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", 5) as usize;
    if !dm(&["node", "ls", "--format", "{{.Status}}"]).contains("Ready") {
        eprintln!("the Swarm of scripts/setup-swarm.sh is not running: run it first");
        std::process::exit(2);
    }
    let nodes = (1..=3)
        .map(|n| format!("cm-swarm-{n}=unix:///run/cm-swarm/{n}.sock"))
        .collect::<Vec<_>>()
        .join(",");
    let s = Server::start_with(Options {
        docker_host: Some(MANAGER.into()),
        env: vec![
            ("BACKEND".into(), "swarm".into()),
            ("SWARM_NODES".into(), nodes),
            ("RESYNC_INTERVAL".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;

    let (mut api, mut raw) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let t = Instant::now();
        let cuid = s
            .create_started(&json!({"image": BUSYBOX, "command": SLEEPER}))
            .await;
        api.push(t.elapsed());
        let r = s.delete(&format!("/containers/{cuid}")).await;
        assert!(r.status < 300, "{}", r.text);

        let name = format!("cm-bench-raw-{}-{i}", std::process::id());
        let t = Instant::now();
        dm(&[
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            &name,
            "--init",
            "--limit-pids",
            "4096",
            "--limit-cpu",
            "1",
            "--limit-memory",
            "1g",
            "--endpoint-mode",
            "dnsrr",
            "--restart-condition",
            "on-failure",
            BUSYBOX,
            "sh",
            "-c",
            "exec sleep 3600",
        ]);
        while running_on(&name).is_none() {
            assert!(t.elapsed() < Duration::from_secs(60), "{name} never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        raw.push(t.elapsed());
        dm(&["service", "rm", &name]);
    }

    // Node loss: a worker-only container, its node's daemon killed.
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.role==worker"]},
        }))
        .await;
    let from = running_on(&cuid).expect("running");
    let (dying, to) = if from == "cm-swarm-2" {
        ("2", "cm-swarm-3")
    } else {
        ("3", "cm-swarm-2")
    };
    let t = Instant::now();
    lab(&["kill", dying]);
    let path = format!("/containers/{cuid}");
    let mut down = None;
    loop {
        let r = s.get(&path).await;
        if down.is_none() {
            let h = s.get("/healthz").await;
            let gone = h.json["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["name"] == from && n["state"] != "ready"));
            if gone {
                down = Some(t.elapsed());
            }
        }
        if r.json["status"] == "running" && r.json["node"] == to {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "never moved: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = t.elapsed();
    lab(&["restart", dying]);
    let _ = s.delete(&path).await;

    let median = |v: &mut Vec<Duration>| ms(percentile(v, 0.5));
    println!("swarm over {rounds} rounds: medians (ms)");
    println!("{:34} {:>9} {:>11}", "", "API", "docker CLI");
    println!(
        "{:34} {:>9.0} {:>11.0}",
        "create -> running (1 replica)",
        median(&mut api),
        median(&mut raw)
    );
    println!(
        "node {from} killed -> seen down        {:>9.0}",
        down.map_or(f64::NAN, ms)
    );
    println!("node {from} killed -> running on {to} {:>9.0}", ms(moved));
}
