//! On-demand benchmark (`cargo bench --bench tenants`): a fair share of the reconciler.
//! Tenants B and C each run `start?wait=true` / `stop?wait=true` on a container of their own
//! in a loop, first with tenant A idle (`FAIR_IDLE_ROUNDS` rounds each, default 10), then while
//! A creates `FAIR_BURST` containers (default 2,000) in a burst, each started at once
//! (`"start": true`, `?wait=false`, `FAIR_CREATORS` requests in flight, default 16), until
//! every one of A's has settled (at most `FAIR_LIMIT_SECONDS`, default 3600). Prints B's and
//! C's p50/p99 in both phases and their ratio (target: within 3×: the queue serves the
//! tenants in turn, so A's thousands of pending passes delay B's start by one round at
//! most), the 408s (target: 0), and that A's work completed.
//!
//! A's containers run `true` and exit, so the burst is 2,000 full passes (`compose up`, then
//! a settled `exited`) without 2,000 containers left running: those would need 2,000 ports
//! on the one Linux bridge of this instance (a bridge takes 1,024) and a shim each.
//!
//! The tenants and tokens are made through the admin API (`PUT /tenants/{name}`,
//! `POST /tokens`); the tenants' requests carry their bearer tokens.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// The tag on A's containers: its listing is how the bench sees A's work settle.
const BURST_TAG: &str = "fair-burst";

/// What one tenant's requests got.
#[derive(Default)]
struct Tally {
    /// Latencies of the waited start/stop answered 200.
    waited: Vec<Duration>,
    /// HTTP status → count, for every request.
    statuses: BTreeMap<u16, usize>,
}

impl Tally {
    fn timeouts(&self) -> usize {
        self.statuses.get(&408).copied().unwrap_or(0)
    }
}

/// A tenant of the server and its `write` token.
struct Tenant {
    name: &'static str,
    token: String,
}

impl Tenant {
    /// `PUT /tenants/{name}` (no quotas) and a `write` token for it, as the admin.
    async fn make(s: &Server, name: &'static str) -> Tenant {
        let r = s
            .send(
                s.request(Method::PUT, &format!("/tenants/{name}"))
                    .json(&json!({})),
            )
            .await;
        assert!(
            matches!(r.status, 200 | 201),
            "PUT /tenants/{name}: {}",
            r.text
        );
        let r = s
            .post_json(
                "/tokens",
                &json!({"name": format!("bench-{name}"), "scope": "write", "tenant": name}),
            )
            .await;
        assert_eq!(r.status, 201, "POST /tokens: {}", r.text);
        let token = r.json["token"].as_str().expect("a token").to_owned();
        assert!(token.starts_with("cm_"), "{token}");
        Tenant { name, token }
    }

    fn request(&self, s: &Server, method: Method, path: &str) -> reqwest::RequestBuilder {
        s.client
            .request(method, format!("{}{}", s.base, path))
            .header("authorization", format!("Bearer {}", self.token))
    }

    async fn send(&self, s: &Server, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut rb = self.request(s, method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        s.send(rb).await
    }
}

/// A created (not started) sleeper of `t`'s, for its start/stop loop.
async fn sleeper(s: &Server, t: &Tenant) -> String {
    let body = json!({"image": BUSYBOX, "command": SLEEPER});
    let r = t.send(s, Method::POST, "/containers", Some(&body)).await;
    assert_eq!(r.status, 201, "{}: {}", t.name, r.text);
    r.json["cuid"].as_str().unwrap().to_owned()
}

/// Waited start then waited stop of `cuid`, `rounds` times or until `stop` is set.
async fn cycle(
    s: Arc<Server>,
    t: Arc<Tenant>,
    cuid: String,
    rounds: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut round = 0;
    while rounds.is_none_or(|n| round < n) && !stop.load(Ordering::Relaxed) {
        round += 1;
        for verb in ["start", "stop"] {
            let path = format!("/containers/{cuid}/{verb}?wait=true");
            let started = Instant::now();
            let r = t.send(&s, Method::POST, &path, None).await;
            let took = started.elapsed();
            *tally.statuses.entry(r.status).or_insert(0) += 1;
            if r.status == 200 {
                tally.waited.push(took);
            } else {
                eprintln!("{} {verb}: {} {}", t.name, r.status, r.text);
            }
        }
    }
    tally
}

/// A's burst: `n` started creates, `creators` in flight. Returns the statuses.
async fn burst(s: Arc<Server>, a: Arc<Tenant>, n: usize, creators: usize) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let body = json!({
        "image": BUSYBOX,
        "command": ["true"],
        "restart": "no",
        "tags": [BURST_TAG],
        "start": true,
    });
    let tasks: Vec<_> = (0..creators)
        .map(|_| {
            let (s, a, next, tally, body) = (
                s.clone(),
                a.clone(),
                next.clone(),
                tally.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let r = a
                        .send(&s, Method::POST, "/containers?wait=false", Some(&body))
                        .await;
                    if r.status != 202 {
                        eprintln!("a create: {} {}", r.status, r.text);
                    }
                    *tally.lock().await.statuses.entry(r.status).or_insert(0) += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(tally)
        .ok()
        .expect("creators are done")
        .into_inner()
}

/// A's burst containers by shown status, read through A's own listing.
async fn burst_statuses(s: &Server, a: &Tenant) -> BTreeMap<String, usize> {
    let mut by_status = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/containers?tag={BURST_TAG}&limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", url_encode(c)));
        }
        let r = a.send(s, Method::GET, &path, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for c in r.json["containers"].as_array().into_iter().flatten() {
            let status = c["status"].as_str().unwrap_or("?").to_owned();
            *by_status.entry(status).or_insert(0) += 1;
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return by_status,
        }
    }
}

/// Settled: nothing left for the reconciler to do with it (`exited` after `true`, or a
/// recorded failure).
fn settled(by_status: &BTreeMap<String, usize>) -> usize {
    ["exited", "error"]
        .iter()
        .filter_map(|s| by_status.get(*s))
        .sum()
}

fn quantiles(t: &mut Tally) -> (f64, f64) {
    if t.waited.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (
        ms(percentile(&mut t.waited, 0.5)),
        ms(percentile(&mut t.waited, 0.99)),
    )
}

#[tokio::main]
async fn main() {
    let n = env_or("FAIR_BURST", 2000) as usize;
    let creators = env_or("FAIR_CREATORS", 16).max(1) as usize;
    let idle_rounds = env_or("FAIR_IDLE_ROUNDS", 10).max(1) as usize;
    let limit = Duration::from_secs(env_or("FAIR_LIMIT_SECONDS", 3600));
    let s = Arc::new(Server::start().await);
    let a = Arc::new(Tenant::make(&s, "a").await);
    let b = Arc::new(Tenant::make(&s, "b").await);
    let c = Arc::new(Tenant::make(&s, "c").await);
    let b_cuid = sleeper(&s, &b).await;
    let c_cuid = sleeper(&s, &c).await;
    let never = Arc::new(AtomicBool::new(false));

    // A idle.
    let (mut b_idle, mut c_idle) = tokio::join!(
        cycle(
            s.clone(),
            b.clone(),
            b_cuid.clone(),
            Some(idle_rounds),
            never.clone()
        ),
        cycle(
            s.clone(),
            c.clone(),
            c_cuid.clone(),
            Some(idle_rounds),
            never
        ),
    );

    // A bursting: B and C keep cycling until all of A's containers settled.
    let done = Arc::new(AtomicBool::new(false));
    let b_task = tokio::spawn(cycle(s.clone(), b.clone(), b_cuid, None, done.clone()));
    let c_task = tokio::spawn(cycle(s.clone(), c.clone(), c_cuid, None, done.clone()));
    let started = Instant::now();
    let creates = burst(s.clone(), a.clone(), n, creators).await;
    let created_in = started.elapsed();
    let accepted = creates.statuses.get(&202).copied().unwrap_or(0);
    let mut by_status = burst_statuses(&s, &a).await;
    while settled(&by_status) < accepted && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(2)).await;
        by_status = burst_statuses(&s, &a).await;
    }
    let completed_in = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (mut b_burst, mut c_burst) = (b_task.await.unwrap(), c_task.await.unwrap());

    println!(
        "tenants: A bursts {n} started creates ({creators} in flight) while B and C \
         start/stop (waited) in a loop"
    );
    println!(
        "{:8} {:>6} {:>9} {:>9} {:>5}",
        "tenant", "n", "p50 ms", "p99 ms", "408"
    );
    let mut rows = Vec::new();
    for (name, idle, busy) in [
        ("B", &mut b_idle, &mut b_burst),
        ("C", &mut c_idle, &mut c_burst),
    ] {
        let (i50, i99) = quantiles(idle);
        let (b50, b99) = quantiles(busy);
        for (phase, t, p50, p99) in [("idle", &*idle, i50, i99), ("burst", &*busy, b50, b99)] {
            println!(
                "{:8} {:>6} {p50:9.0} {p99:9.0} {:>5}",
                format!("{name} {phase}"),
                t.waited.len(),
                t.timeouts()
            );
        }
        rows.push((name, b50 / i50, b99 / i99));
    }
    for (name, r50, r99) in &rows {
        println!("{name} burst/idle: p50 {r50:.2}x  p99 {r99:.2}x  (target: within 3x)");
    }
    let timeouts: usize = [&b_idle, &c_idle, &b_burst, &c_burst, &creates]
        .iter()
        .map(|t| t.timeouts())
        .sum();
    println!("408 timeouts: {timeouts} (target: 0)");
    println!("A creates by status: {:?}", creates.statuses);
    let settled_n = settled(&by_status);
    println!(
        "A: {accepted} accepted in {:.1} s; {settled_n} settled in {:.1} s {by_status:?}: {}",
        created_in.as_secs_f64(),
        completed_in.as_secs_f64(),
        if accepted == n && settled_n == n {
            "A's work completed"
        } else {
            "A's work did NOT complete"
        }
    );
}
