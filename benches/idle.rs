//! On-demand benchmark (`cargo bench --bench idle`): what idle tracking costs. The issue's
//! bar: tracking 200 running containers costs under 1% of one core.
//!
//! It starts `IDLE_BENCH_CONTAINERS` (default 200) busybox containers running `sleep` (plain
//! `docker run`, each with its own network namespace on Docker's default bridge), puts as
//! many rows with an idle policy in a store of its own (marked running), then runs exactly
//! what the server's sampler runs each tick (`reconcile::idle`): the store's
//! `idle_candidates` query, `Sampler::plan` and `Sampler::due` (which reads every
//! container's `/proc/<pid>/net/dev`), every `IDLE_SAMPLE_INTERVAL` (default 2 s, the
//! server's default) for `IDLE_BENCH_SECONDS` (default 60). The CPU figure is this process's
//! own (all threads, SQLite's worker included, from `/proc/self/task/*/schedstat`, in
//! nanoseconds) over the sampling, against the wall time: the share of one core. A second
//! figure samples every second. The containers are removed at the end (and by label,
//! `cm-idle-bench`, should a run be interrupted: `docker rm -f $(docker ps -aq --filter
//! label=cm-idle-bench)`).

use std::process::Command;
use std::time::{Duration, Instant};

use container_manager::idle::Tracker;
use container_manager::lifecycle::DesiredState;
use container_manager::reconcile::idle::Sampler;
use container_manager::spec::{Idle, IdleAction, Spec};
use container_manager::store::Store;

const IMAGE: &str = "cm-test-busybox:latest";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this process so far, all threads, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts `n` sleepers, a few at a time; returns their pids.
fn start_containers(label: &str, n: usize) -> Vec<u32> {
    let names: Vec<String> = (0..n).map(|i| format!("{label}-{i}")).collect();
    for chunk in names.chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|name| {
                let name = name.clone();
                let label = label.to_owned();
                std::thread::spawn(move || {
                    docker(&[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--label",
                        &format!("cm-idle-bench={label}"),
                        "--memory",
                        "16m",
                        IMAGE,
                        "sleep",
                        "3600",
                    ])
                })
            })
            .collect();
        for h in handles {
            h.join().expect("docker run");
        }
    }
    let mut args = vec!["inspect", "-f", "{{.State.Pid}}"];
    args.extend(names.iter().map(String::as_str));
    docker(&args)
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect()
}

fn remove_containers(label: &str) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=cm-idle-bench={label}"),
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    for chunk in ids.chunks(50) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk);
        let _ = Command::new("docker").args(&args).output();
    }
}

fn spec() -> Spec {
    serde_json::from_value(serde_json::json!({
        "image": IMAGE, "env": {}, "tags": [], "ports": [], "command": null,
        "restart": "no", "user": null,
        "resources": {"cpus": null, "memory": null, "memory_bytes": null, "pids": null},
        "idle": {"after": 3600, "action": "pause", "resume_on_use": true}
    }))
    .expect("spec")
}

/// Samples for `seconds` every `every`; answers (CPU ns, wall, ticks, containers read).
async fn sample(
    store: &Store,
    pids: &std::collections::HashMap<String, u32>,
    every: Duration,
    seconds: u64,
) -> (u64, Duration, u64, usize) {
    let tracker = Tracker::default();
    let mut sampler = Sampler::default();
    let began = Instant::now();
    let cpu0 = process_cpu_ns();
    let mut ticks = 0;
    let mut read = 0;
    while began.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(every).await;
        let candidates = store.idle_candidates().await.expect("candidates");
        for cuid in sampler.plan(&candidates, Instant::now()) {
            sampler.set_pid(&cuid, pids[&cuid]);
        }
        let due = sampler.due(&candidates, Instant::now(), &tracker);
        assert!(due.is_empty(), "nothing is idle for an hour");
        read = candidates.len();
        ticks += 1;
    }
    (process_cpu_ns() - cpu0, began.elapsed(), ticks, read)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = env_or("IDLE_BENCH_CONTAINERS", 200) as usize;
    let seconds = env_or("IDLE_BENCH_SECONDS", 60);
    let every = Duration::from_secs(env_or("IDLE_SAMPLE_INTERVAL", 2).max(1));
    let label = format!("cm-idle-bench-{}", std::process::id());

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .expect("store");
    let spec = spec();
    assert_eq!(
        spec.idle,
        Some(Idle {
            after: 3600,
            action: IdleAction::Pause,
            resume_on_use: true
        })
    );
    let mut cuids = Vec::new();
    for _ in 0..n {
        let cuid = container_manager::spec::new_cuid();
        store
            .insert(&cuid, &spec, DesiredState::Running, None, |_| {
                serde_json::Value::Null
            })
            .await
            .expect("insert");
        cuids.push(cuid);
    }
    // As the reconciler would record them once started.
    sqlx::query("UPDATE containers SET status = 'running'")
        .execute(&store.pool)
        .await
        .expect("status");

    println!("starting {n} busybox containers…");
    let t = Instant::now();
    let started = std::panic::catch_unwind(|| start_containers(&label, n));
    let pids = match started {
        Ok(p) => p,
        Err(e) => {
            remove_containers(&label);
            std::panic::resume_unwind(e);
        }
    };
    println!("  started in {:.1} s", t.elapsed().as_secs_f64());
    let by_cuid: std::collections::HashMap<String, u32> =
        cuids.iter().cloned().zip(pids.iter().copied()).collect();

    // One read of one container's counters, for scale.
    let mut buf = Vec::new();
    let t = Instant::now();
    for pid in &pids {
        container_manager::idle::sent_bytes(*pid, &mut buf).expect("counters");
    }
    let per_read = t.elapsed() / n as u32;

    let mut rows = Vec::new();
    for every in [every, Duration::from_secs(1)] {
        let (cpu, wall, ticks, read) = sample(&store, &by_cuid, every, seconds).await;
        assert_eq!(read, n);
        rows.push((every, cpu, wall, ticks));
    }
    remove_containers(&label);

    println!();
    println!("idle tracking of {n} running containers, {seconds} s per row");
    println!(
        "first read of each container's /proc/<pid>/net/dev (wall time, cold, busy machine): {:.1} µs",
        per_read.as_secs_f64() * 1e6
    );
    println!(
        "{:>10} {:>7} {:>14} {:>16} {:>12}",
        "interval", "ticks", "CPU total ms", "CPU per tick ms", "% of a core"
    );
    for (every, cpu, wall, ticks) in rows {
        let pct = cpu as f64 / wall.as_nanos() as f64 * 100.0;
        println!(
            "{:>9}s {:>7} {:>14.1} {:>16.2} {:>11.3}%",
            every.as_secs(),
            ticks,
            cpu as f64 / 1e6,
            cpu as f64 / 1e6 / ticks.max(1) as f64,
            pct
        );
    }
}
