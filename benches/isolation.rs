//! On-demand benchmark (`cargo bench --bench isolation`): what `isolation: "gvisor"` costs
//! against `runc`, through the API, side by side. Needs `runsc` registered with the daemon
//! (scripts/setup-gvisor.sh). For each runtime, `ROUNDS` containers (default 5), each:
//!
//! - create+start: `POST /containers` with `start: true`, waited (median);
//! - exec latency: `true` through the exec terminal, socket open to `exit` (median of
//!   `EXECS` per container, default 10);
//! - upload: a 64 MiB ZIP through `upload-zip` (the server writes `/app` on the host: the
//!   runtime is not in the path, so this should not move);
//! - write in /app: 64 MiB written by `dd` inside the container, 1 MiB blocks (under gVisor
//!   every write crosses the gofer), timed through the exec terminal;
//! - small files: 1,000 files of 2 bytes made in `/app` by a shell loop (opens, writes and
//!   closes: where the gofer and the user-space kernel cost most), through the exec terminal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const UPLOAD_BYTES: usize = 64 << 20;

/// Deterministic bytes that do not compress (so the ZIP is as big as the files).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Default)]
struct Figures {
    create_start: Vec<Duration>,
    exec: Vec<Duration>,
    upload: Vec<Duration>,
    write: Vec<Duration>,
    small: Vec<Duration>,
}

async fn exec(s: &Server, cuid: &str, cmd: &str) -> Duration {
    let t = Instant::now();
    let mut term = Term::open(s, &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd))).await;
    let code = term.until_exit(Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{cmd}: {:?}", term.errors);
    t.elapsed()
}

async fn measure(s: &Server, isolation: &str, rounds: usize, execs: usize, zip: &[u8]) -> Figures {
    let mut f = Figures::default();
    for _ in 0..rounds {
        let t = Instant::now();
        let r = s
            .post_json(
                "/containers",
                &json!({"image": BUSYBOX, "command": SLEEPER, "isolation": isolation,
                        "user": "0:0", "start": true}),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["status"], "running", "{}", r.text);
        f.create_start.push(took);
        let cuid = r.json["cuid"].as_str().unwrap().to_owned();

        exec(s, &cuid, "true").await; // warm-up
        for _ in 0..execs {
            f.exec.push(exec(s, &cuid, "true").await);
        }

        let t = Instant::now();
        let r = s.upload_zip(&cuid, "", zip.to_vec()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        f.upload.push(t.elapsed());

        f.write.push(
            exec(
                s,
                &cuid,
                "dd if=/dev/zero of=/app/written bs=1048576 count=64 conv=fsync 2>/dev/null",
            )
            .await,
        );

        f.small.push(
            exec(
                s,
                &cuid,
                "mkdir -p /app/small && cd /app/small && i=0; while [ $i -lt 1000 ]; do echo x > f$i; i=$((i+1)); done",
            )
            .await,
        );

        let r = s.delete(&format!("/containers/{cuid}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    f
}

fn median(v: &mut [Duration]) -> Duration {
    percentile(v, 0.5)
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", 5) as usize;
    let execs = env_or("EXECS", 10) as usize;
    let s = Server::start().await;
    let r = s.get("/healthz").await;
    assert!(
        r.json["isolations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i == "gvisor")),
        "the daemon does not offer gVisor (run scripts/setup-gvisor.sh): {}",
        r.text
    );

    let files: Vec<(String, Vec<u8>)> = (0..16)
        .map(|i| (format!("f{i:02}.bin"), noise(i, UPLOAD_BYTES / 16)))
        .collect();
    let zip = zip_owned(&files);

    let mut runc = measure(&s, "runc", rounds, execs, &zip).await;
    let mut gvisor = measure(&s, "gvisor", rounds, execs, &zip).await;

    println!("isolation benchmark: {rounds} containers per runtime, {execs} execs each, medians");
    println!("{:<28} {:>12} {:>12} {:>8}", "", "runc", "gvisor", "ratio");
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{:<28} {:>9.1} {unit:<2} {:>9.1} {unit:<2} {:>7.2}x",
            name,
            a,
            b,
            b / a
        );
    };
    row(
        "create+start (ms)",
        ms(median(&mut runc.create_start)),
        ms(median(&mut gvisor.create_start)),
        "ms",
    );
    row(
        "exec `true` (ms)",
        ms(median(&mut runc.exec)),
        ms(median(&mut gvisor.exec)),
        "ms",
    );
    let up = |f: &mut Figures| mb_per_s(UPLOAD_BYTES, median(&mut f.upload));
    row(
        "upload-zip 64 MiB (MB/s)",
        up(&mut runc),
        up(&mut gvisor),
        "",
    );
    let wr = |f: &mut Figures| mb_per_s(64 << 20, median(&mut f.write));
    row(
        "dd 64 MiB into /app (MB/s)",
        wr(&mut runc),
        wr(&mut gvisor),
        "",
    );
    row(
        "1,000 small files (ms)",
        ms(median(&mut runc.small)),
        ms(median(&mut gvisor.small)),
        "ms",
    );
}
