//! On-demand benchmark of the file routes (`cargo bench --bench files`): not a timed test.
//!
//! A 200 MB, 2,000-file tree is zipped on the host; then, in one run:
//! - upload-zip (+ extraction into /app) against `unzip` of the same file on the host;
//! - download-zip of the uploaded tree against `zip -r` of the same tree on the host;
//!
//! each as a ratio (server time / CLI time), and the server's resident memory: idle, peak
//! while uploading, peak while downloading (sampled VmRSS), and VmHWM.
//! Needs `zip` and `unzip` on the host (installed with apt-get when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

const FILES: usize = 2000;
const FILE_BYTES: usize = 100_000;

fn ensure_tools() {
    let have = |t: &str| {
        Command::new("which")
            .arg(t)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("zip") || !have("unzip") {
        eprintln!("installing zip and unzip with apt-get");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "zip", "unzip"])
            .status();
    }
    assert!(
        have("zip") && have("unzip"),
        "zip and unzip are needed on the host"
    );
}

/// Half pseudo-random bytes, half repetitive text: compresses about 2:1, like a real tree.
fn content(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(FILE_BYTES);
    while v.len() < FILE_BYTES / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    let line = format!("line of log output number {seed} with some repeated words\n");
    while v.len() < FILE_BYTES {
        v.extend_from_slice(line.as_bytes());
    }
    v.truncate(FILE_BYTES);
    v
}

fn build_tree(root: &Path) {
    for i in 0..FILES {
        let dir = root.join(format!("d{}/s{}", i % 20, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.dat")), content(i as u64)).unwrap();
    }
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
    t.elapsed()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[tokio::main]
async fn main() {
    ensure_tools();
    let work = tempfile::Builder::new()
        .prefix("cm-bench-")
        .tempdir()
        .unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    eprintln!(
        "building a {FILES}-file tree of {} MB…",
        mb((FILES * FILE_BYTES) as u64)
    );
    build_tree(&tree);
    let zip_path: PathBuf = work.path().join("tree.zip");
    timed(
        Command::new("zip")
            .args(["-q", "-r"])
            .arg(&zip_path)
            .arg(".")
            .current_dir(&tree),
    );
    let zip_len = std::fs::metadata(&zip_path).unwrap().len();
    let raw = (FILES * FILE_BYTES) as u64;

    // Host baselines (page cache warm: the file was just written).
    let unzip_dir = work.path().join("unzipped");
    let t_unzip = timed(
        Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&zip_path)
            .arg("-d")
            .arg(&unzip_dir),
    );
    let rezip = work.path().join("rezip.zip");
    let t_zip = timed(
        Command::new("zip")
            .args(["-q", "-r"])
            .arg(&rezip)
            .arg(".")
            .current_dir(&tree),
    );

    let s = Server::start().await;
    let pid = s.pid();
    let cuid = s.create_sleeper().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = status_kb(pid, "VmRSS:");

    // Upload + extract.
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let t = Instant::now();
    let file = tokio::fs::File::open(&zip_path).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let r = s
        .send(
            s.upload_request(&cuid, "", body)
                .header("content-length", zip_len),
        )
        .await;
    let t_upload = t.elapsed();
    let peak_upload = sampler.stop();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["files"], FILES);

    // Download-zip of the same tree.
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let t = Instant::now();
    let resp = s
        .request(
            reqwest::Method::GET,
            &format!("/containers/{cuid}/download-zip"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    let t_download = t.elapsed();
    let peak_download = sampler.stop();
    let hwm = status_kb(pid, "VmHWM:");

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "files benchmark: {FILES} files, {:.0} MB raw, ZIP {:.1} MB",
        mb(raw),
        mb(zip_len)
    );
    println!(
        "upload-zip + extract: {:.2} s ({:.0} MB/s of files) | unzip: {:.2} s | ratio server/unzip = {:.2}",
        secs(t_upload),
        mb(raw) / secs(t_upload),
        secs(t_unzip),
        secs(t_upload) / secs(t_unzip)
    );
    println!(
        "download-zip: {:.2} s ({:.1} MB ZIP, {:.0} MB/s of files) | zip -r: {:.2} s | ratio server/zip = {:.2}",
        secs(t_download),
        mb(got),
        mb(raw) / secs(t_download),
        secs(t_zip),
        secs(t_download) / secs(t_zip)
    );
    println!(
        "server RSS: idle {:.1} MB | peak during upload {:.1} MB (+{:.1}) | peak during download {:.1} MB (+{:.1}) | VmHWM {:.1} MB",
        idle as f64 / 1024.0,
        peak_upload as f64 / 1024.0,
        peak_upload.saturating_sub(idle) as f64 / 1024.0,
        peak_download as f64 / 1024.0,
        peak_download.saturating_sub(idle) as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
