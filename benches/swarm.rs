//! On-demand benchmark (`cargo bench --bench swarm`) of `BACKEND=swarm` against the
//! three-node Swarm of scripts/setup-swarm.sh (run it first): create→running through the API
//! vs `docker service create` of the same container (polled until its task runs, as the
//! server does), and the time from a worker's `dockerd` killed to the container running on the
//! other worker, as the API shows it; then the control plane's idle CPU with `IDLE_SERVICES`
//! (default 100) running containers: made through the API (8 at a time), then the server
//! process's CPU time (`utime + stime` of `/proc/<pid>/stat`, all its threads) over
//! `IDLE_SECONDS` (default 30) of nothing asked of it, with the resyncs (`RESYNC_INTERVAL=2`,
//! as in the tests; the default is 30) and passes it ran meanwhile from `/metrics`. Prints
//! medians side by side. Run it holding the lab lock (`flock /run/cm-lab.lock cargo bench
//! --bench swarm`): it kills and revives a node.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
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

/// CPU time (user + system, all threads) of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    // Fields after the command (which may hold spaces) in parentheses; utime, stime are the
    // 14th and 15th fields, in clock ticks.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = String::from_utf8_lossy(
        &Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .trim()
    .parse()
    .unwrap_or(100);
    Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1))
}

/// A counter of `/metrics` (summed over its labels), or 0.
async fn metric(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").await.text;
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

    // Idle with many services: all running, then nothing asked for a while.
    let count = env_or("IDLE_SERVICES", 100) as usize;
    let seconds = env_or("IDLE_SECONDS", 30);
    let t = Instant::now();
    let cuids: Vec<String> = futures_util::stream::iter(0..count)
        .map(|_| {
            let s = &s;
            async move {
                s.create_started(&json!({"image": BUSYBOX, "command": SLEEPER}))
                    .await
            }
        })
        .buffered(8)
        .collect()
        .await;
    let made = t.elapsed();
    let running = dm(&[
        "service",
        "ls",
        "--filter",
        &format!("label=com.container-manager.instance={}", s.instance_id),
        "--format",
        "{{.Replicas}}",
    ]);
    let up = running.lines().filter(|l| l.trim() == "1/1").count();
    assert_eq!(up, count, "services not all 1/1: {running}");
    // The creates' own passes and events die down first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (resyncs0, passes0) = (
        metric(&s, "cm_resync_duration_seconds_count").await,
        metric(&s, "cm_reconcile_passes_total").await,
    );
    let (cpu0, wall0) = (cpu_of(s.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu, wall) = (cpu_of(s.pid()) - cpu0, wall0.elapsed());
    let resyncs = metric(&s, "cm_resync_duration_seconds_count").await - resyncs0;
    let passes = metric(&s, "cm_reconcile_passes_total").await - passes0;
    futures_util::stream::iter(cuids)
        .for_each_concurrent(8, |cuid| {
            let s = &s;
            async move {
                let _ = s.delete(&format!("/containers/{cuid}")).await;
            }
        })
        .await;

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
    println!(
        "{count} services made and running through the API in {:.1} s (8 at a time)",
        made.as_secs_f64()
    );
    println!(
        "idle with {count} running services, {:.0} s: server CPU {:.0} ms = {:.2} % of one core; \
         {resyncs:.0} resyncs ({:.1} ms CPU each, all else included), {passes:.0} passes",
        wall.as_secs_f64(),
        ms(cpu),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        if resyncs > 0.0 {
            ms(cpu) / resyncs
        } else {
            f64::NAN
        },
    );
}
