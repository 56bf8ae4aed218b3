//! On-demand benchmark (`cargo bench --bench disk`): what `resources.disk` costs. Creates
//! and deletes containers (not started: the figures are the server's own work, the image
//! made and mounted, unmounted and removed) with and without a cap, and a started one of
//! each (create + start, delete of a running container), and prints the medians side by
//! side. `ROUNDS` (default 10), `DISK` (default `1g`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

async fn timed(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (Duration, Resp) {
    let mut rb = s.request(method, path);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let t = Instant::now();
    let r = s.send(rb).await;
    (t.elapsed(), r)
}

/// Medians of (create, delete) over `rounds`, for `body`.
async fn round(s: &Server, rounds: usize, body: &serde_json::Value) -> (Duration, Duration) {
    let (mut creates, mut deletes) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (took, r) = timed(s, reqwest::Method::POST, "/containers", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        creates.push(took);
        let cuid = r.json["cuid"].as_str().unwrap().to_owned();
        let (took, r) = timed(
            s,
            reqwest::Method::DELETE,
            &format!("/containers/{cuid}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        deletes.push(took);
    }
    (percentile(&mut creates, 0.5), percentile(&mut deletes, 0.5))
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", 10) as usize;
    let disk = std::env::var("DISK").unwrap_or_else(|_| "1g".into());
    let s = Server::start().await;
    let plain = json!({"image": BUSYBOX, "command": SLEEPER});
    let capped = json!({"image": BUSYBOX, "command": SLEEPER, "resources": {"disk": disk}});
    let started = |b: &serde_json::Value| {
        let mut b = b.clone();
        b["start"] = json!(true);
        b
    };
    let (plain_started, capped_started) = (started(&plain), started(&capped));

    // One of each first, unmeasured (image cache, the network).
    round(&s, 1, &plain_started).await;
    round(&s, 1, &capped_started).await;

    let (pc, pd) = round(&s, rounds, &plain).await;
    let (cc, cd) = round(&s, rounds, &capped).await;
    let (psc, psd) = round(&s, rounds, &plain_started).await;
    let (csc, csd) = round(&s, rounds, &capped_started).await;

    println!("resources.disk = {disk}: medians of {rounds}");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "", "uncapped", "capped", "added"
    );
    for (what, p, c) in [
        ("create (not started)", pc, cc),
        ("delete (never started)", pd, cd),
        ("create + start (waited)", psc, csc),
        ("delete of a running one (waited)", psd, csd),
    ] {
        println!(
            "{what:<34} {:>8.1}ms {:>8.1}ms {:>+8.1}ms",
            ms(p),
            ms(c),
            ms(c) - ms(p)
        );
    }
    let left = std::fs::read_dir(s.data_dir().join("disks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "images or mount points left behind");
}
