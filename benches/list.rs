//! On-demand benchmark (`cargo bench --bench list`): the console's list at scale. Creates
//! `LIST_ROWS` containers (default 10,000; not started, so only rows and project files)
//! through the API, `LIST_CREATORS` requests in flight (default 16), then times
//! `LIST_ROUNDS` (default 50) requests of one 25-row page, with and without `total=true`,
//! unfiltered, by status, by tag and by a `q` prefix. Prints p50/p99 of each and the count
//! query's share (target: a page with its total well under 50 ms at 10,000 rows, so the
//! console's "N containers · page X of Y" costs nothing a person notices).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::main]
async fn main() {
    let rows = env_or("LIST_ROWS", 10_000) as usize;
    let creators = env_or("LIST_CREATORS", 16) as usize;
    let rounds = env_or("LIST_ROUNDS", 50) as usize;
    let s = Server::start().await;

    let started = Instant::now();
    let bodies = (0..rows)
        .map(|i| {
            json!({
                "image": BUSYBOX,
                "command": SLEEPER,
                "name": format!("team-{}-svc-{i}", i % 40),
                "tags": [format!("group-{}", i % 10)],
            })
        })
        .collect();
    s.create_many(bodies, creators).await;
    println!(
        "created {rows} containers in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "page of 25", "p50 ms", "p99 ms", "+total", "+total"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "", "", "", "p50 ms", "p99 ms"
    );
    for (what, query) in [
        ("unfiltered", ""),
        ("status=created", "&status=created"),
        ("tag=group-3 (1 in 10)", "&tag=group-3"),
        ("q=team-7 (prefix, 1 in 40)", "&q=team-7"),
    ] {
        let mut plain = time(&s, &format!("/containers?limit=25{query}"), rounds).await;
        let mut total = time(
            &s,
            &format!("/containers?limit=25&total=true{query}"),
            rounds,
        )
        .await;
        println!(
            "{what:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            ms(percentile(&mut plain, 0.5)),
            ms(percentile(&mut plain, 0.99)),
            ms(percentile(&mut total, 0.5)),
            ms(percentile(&mut total, 0.99)),
        );
    }
}

/// `rounds` sequential GETs of `path`; each must answer 200.
async fn time(s: &Server, path: &str, rounds: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = s.get(path).await;
        samples.push(t.elapsed());
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    samples
}
