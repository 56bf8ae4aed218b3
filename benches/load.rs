//! On-demand benchmark (`cargo bench --bench load`): the control plane under saturation.
//! `LOAD_CLIENTS` clients (default 50) each drive their own containers through create, start,
//! patch (a recreate while running), stop, start, restart and delete, all waited, for
//! `LOAD_SECONDS` (default 60). Prints the answers by status, the waited actions' p50/p99, and
//! the p99/p50 ratio: a fair queue keeps every container's wait close to the others'
//! (the target: no 408, no 5xx, p99 within 3× p50).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Default)]
struct Tally {
    /// HTTP status → count, for every request.
    statuses: BTreeMap<u16, usize>,
    /// Latencies of waited actions (start, stop, restart, patch of a running container,
    /// delete).
    waited: Vec<Duration>,
    /// Per kind, for the breakdown.
    by_kind: BTreeMap<&'static str, Vec<Duration>>,
}

async fn client(s: Arc<Server>, tally: Arc<Mutex<Tally>>, deadline: Instant, id: usize) {
    let body = json!({
        "image": BUSYBOX,
        "command": SLEEPER,
        "tags": ["load"],
    });
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let created = s.post_json("/containers", &body).await;
        *tally
            .lock()
            .await
            .statuses
            .entry(created.status)
            .or_insert(0) += 1;
        let Some(cuid) = created.json["cuid"].as_str().map(str::to_owned) else {
            continue;
        };
        let path = format!("/containers/{cuid}");
        let steps: [(
            &'static str,
            reqwest::Method,
            String,
            Option<serde_json::Value>,
        ); 6] = [
            (
                "start",
                reqwest::Method::POST,
                format!("{path}/start"),
                None,
            ),
            (
                "patch",
                reqwest::Method::PATCH,
                path.clone(),
                Some(json!({"env": {"ROUND": format!("{id}-{round}")}})),
            ),
            ("stop", reqwest::Method::POST, format!("{path}/stop"), None),
            (
                "start",
                reqwest::Method::POST,
                format!("{path}/start"),
                None,
            ),
            (
                "restart",
                reqwest::Method::POST,
                format!("{path}/restart"),
                None,
            ),
            ("delete", reqwest::Method::DELETE, path.clone(), None),
        ];
        for (kind, method, url, json_body) in steps {
            let mut rb = s.request(method, &url);
            if let Some(b) = json_body {
                rb = rb.json(&b);
            }
            let t = Instant::now();
            let r = s.send(rb).await;
            let took = t.elapsed();
            let mut t = tally.lock().await;
            *t.statuses.entry(r.status).or_insert(0) += 1;
            if r.status == 200 {
                t.waited.push(took);
                t.by_kind.entry(kind).or_default().push(took);
            } else {
                eprintln!("{kind} {cuid}: {} {}", r.status, r.text);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let clients = env_or("LOAD_CLIENTS", 50) as usize;
    let seconds = env_or("LOAD_SECONDS", 60);
    let s = Arc::new(Server::start().await);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(s.clone(), tally.clone(), deadline, id)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut t = tally.lock().await;
    let requests: usize = t.statuses.values().sum();
    let timeouts = t.statuses.get(&408).copied().unwrap_or(0);
    let server_errors: usize = t
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    println!(
        "load: {clients} clients for {:.0} s, {requests} requests",
        elapsed.as_secs_f64()
    );
    println!("answers by status: {:?}", t.statuses);
    println!("408 timeouts: {timeouts}   5xx: {server_errors}");
    let (p50, p99) = (
        ms(percentile(&mut t.waited, 0.5)),
        ms(percentile(&mut t.waited, 0.99)),
    );
    println!(
        "waited actions ({}): p50 {p50:.0} ms  p99 {p99:.0} ms  p99/p50 {:.2}",
        t.waited.len(),
        p99 / p50
    );
    for (kind, v) in t.by_kind.iter_mut() {
        println!(
            "  {kind:8} ({:5}): p50 {:6.0} ms  p99 {:6.0} ms",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        );
    }
}
