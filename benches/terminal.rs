//! The terminal benchmark (run on demand: `cargo bench --bench terminal`; prints figures,
//! asserts nothing about speed).
//!
//! 1. Throughput: 100 MB of output through the WebSocket (`?cmd=…`, no TTY, JSON frames)
//!    against the same command through `docker exec` (the CLI reading a pipe).
//! 2. Keystroke echo round trip: one byte of stdin to its TTY echo, `cat` on a TTY, through
//!    the WebSocket against `docker exec -it` driven through a pseudo-terminal by `script`.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::*;

const BYTES: usize = 100_000_000;
const PRODUCER: &str = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 100000000";
const KEYSTROKES: usize = 300;
const WARMUP: usize = 20;

async fn ws_throughput(s: &Server, cuid: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut ws = s
        .ws(&format!(
            "/ws/{cuid}?main=false&cmd={}",
            url_encode(PRODUCER)
        ))
        .await;
    let mut bytes = 0usize;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match v["type"].as_str() {
            Some("stdout") => {
                let data = v["data"].as_str().unwrap();
                bytes += if v["encoding"] == "base64" {
                    base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap()
                        .len()
                } else {
                    data.len()
                };
            }
            Some("exit") => break,
            _ => {}
        }
    }
    (started.elapsed(), bytes)
}

fn docker_exec_throughput(cuid: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut child = Command::new("docker")
        .args(["exec", cuid, "sh", "-c", PRODUCER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n;
    }
    child.wait().unwrap();
    (started.elapsed(), bytes)
}

async fn ws_echo(s: &Server, cuid: &str) -> Vec<Duration> {
    let mut ws = s
        .ws(&format!("/ws/{cuid}?main=false&cols=80&rows=24&cmd=cat"))
        .await;
    let mut samples = Vec::new();
    for i in 0..WARMUP + KEYSTROKES {
        // No newline: `cat` would answer a whole line, muddling which echo is which
        // (the terminal's line buffer holds all the keys).
        let key = "a";
        let sent = Instant::now();
        ws.send(Message::Text(
            json!({"type": "stdin", "data": key, "encoding": "utf8"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        // Wait for the echo of this key.
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("socket ended")
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            let data = v["data"].as_str().unwrap_or("");
            if v["type"] == "stdout" && data.contains(key) {
                break;
            }
        }
        if i >= WARMUP {
            samples.push(sent.elapsed());
        }
    }
    let _ = ws
        .send(Message::Text(json!({"type": "close"}).to_string().into()))
        .await;
    samples
}

fn docker_exec_it_echo(cuid: &str) -> Vec<Duration> {
    // `script` gives `docker exec -it` the terminal it insists on.
    let mut child = Command::new("script")
        .args(["-qfc", &format!("docker exec -it {cuid} cat"), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // Let the session come up: echo of a probe key.
    std::thread::sleep(Duration::from_millis(500));
    input.write_all(b"z").unwrap();
    input.flush().unwrap();
    loop {
        let chunk = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("docker exec -it echo");
        if chunk.contains(&b'z') {
            break;
        }
    }
    let mut samples = Vec::new();
    for i in 0..WARMUP + KEYSTROKES {
        let key = b'a';
        let sent = Instant::now();
        input.write_all(&[key]).unwrap();
        input.flush().unwrap();
        loop {
            let chunk = rx.recv_timeout(Duration::from_secs(10)).expect("echo");
            if chunk.contains(&key) {
                break;
            }
        }
        if i >= WARMUP {
            samples.push(sent.elapsed());
        }
    }
    input.write_all(&[0x04]).ok(); // ^D ends cat
    drop(input);
    let _ = child.kill();
    let _ = child.wait();
    samples
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    let (p50, p99) = (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    );
    println!(
        "  {name:<24} p50 {:>7.3} ms   p99 {:>7.3} ms   (n={})",
        ms(p50),
        ms(p99),
        samples.len()
    );
    (p50, p99)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` style discovery: nothing to list
    }
    let s = Server::start().await;
    let cuid = s
        .create_running(&json!({"image": BUSYBOX, "command": SLEEPER}))
        .await;

    println!("terminal benchmark (container {cuid})");
    println!("throughput, {} MB of output:", BYTES / 1_000_000);
    // One warm-up run each, then the best of three.
    let mut ws_best = Duration::MAX;
    let mut de_best = Duration::MAX;
    for round in 0..4 {
        let (ws_t, ws_n) = ws_throughput(&s, &cuid).await;
        let (de_t, de_n) = docker_exec_throughput(&cuid);
        assert_eq!(ws_n, BYTES, "WebSocket bytes");
        assert_eq!(de_n, BYTES, "docker exec bytes");
        if round > 0 {
            ws_best = ws_best.min(ws_t);
            de_best = de_best.min(de_t);
        }
    }
    let mbps = |d: Duration| BYTES as f64 / 1e6 / d.as_secs_f64();
    println!(
        "  WebSocket                {:>7.3} s   {:>7.1} MB/s",
        ws_best.as_secs_f64(),
        mbps(ws_best)
    );
    println!(
        "  docker exec              {:>7.3} s   {:>7.1} MB/s",
        de_best.as_secs_f64(),
        mbps(de_best)
    );
    println!(
        "  ratio (WebSocket / docker exec throughput): {:.2}",
        mbps(ws_best) / mbps(de_best)
    );

    println!("keystroke echo round trip (cat on a TTY):");
    let (w50, w99) = summary("WebSocket", ws_echo(&s, &cuid).await);
    let cuid2 = cuid.clone();
    let de = tokio::task::spawn_blocking(move || docker_exec_it_echo(&cuid2))
        .await
        .unwrap();
    let (d50, d99) = summary("docker exec -it", de);
    println!(
        "  ratio (WebSocket / docker exec -it): p50 {:.2}, p99 {:.2}",
        w50.as_secs_f64() / d50.as_secs_f64(),
        w99.as_secs_f64() / d99.as_secs_f64()
    );
}
