//! On-demand benchmark of snapshots and forks (`cargo bench --bench snapshot`): not a timed
//! test.
//!
//! A 200 MB, 2,000-file tree is uploaded into a running container's `/app`; then a snapshot
//! (`POST …/snapshots`, the container paused for the copy) and a fork (`POST …/fork`, not
//! started) are timed against `cp -a` of the same tree on the same filesystem. Twice: with
//! `DATA_DIR` where the harness puts it (the host's filesystem, ext4 here: data copied), and
//! with `DATA_DIR` on a loop-mounted XFS made with reflinks (file data cloned), where
//! `cp --reflink=always` is timed too. The XFS row needs root and `mkfs.xfs`
//! (`scripts/setup-xfs.sh`); without them it is skipped with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const FILES: usize = 2000;
const FILE_BYTES: usize = 100_000;
/// Each figure is the median of this many runs.
const ROUNDS: usize = 3;

fn content(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(FILE_BYTES);
    while v.len() < FILE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn build_zip(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..FILES {
        zip.start_file(format!("d{}/s{}/f{i}.dat", i % 20, i % 7), opts)
            .unwrap();
        std::io::Write::write_all(&mut zip, &content(i as u64)).unwrap();
    }
    zip.finish().unwrap();
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
    t.elapsed()
}

fn sync() {
    let _ = Command::new("sync").status();
}

struct Row {
    snapshot: Duration,
    fork: Duration,
    cp: Duration,
    reflink: Option<Duration>,
    cloned: bool,
}

/// `data_dir`: `DATA_DIR` of the server when it is not the harness's own.
async fn measure(data_dir: Option<PathBuf>, zip_path: &Path, reflink: bool) -> Row {
    let opts = Options {
        env: data_dir
            .iter()
            .map(|d| ("DATA_DIR".to_owned(), d.display().to_string()))
            .collect(),
        ..Options::default()
    };
    let s = Server::start_with(opts).await;
    let data = data_dir.unwrap_or_else(|| s.data_dir());
    let cuid = s.running_sleeper().await;
    let zip_len = std::fs::metadata(zip_path).unwrap().len();
    let file = tokio::fs::File::open(zip_path).await.unwrap();
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
    assert_eq!(r.status, 200, "{}", r.text);
    sync();

    let (mut snaps, mut forks, mut cps, mut reflinks) = (vec![], vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        sync();
        let t = Instant::now();
        let r = s
            .post_json(
                &format!("/containers/{cuid}/snapshots"),
                &json!({"name": format!("bench{i}")}),
            )
            .await;
        snaps.push(t.elapsed());
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["files"], FILES);
        sync();

        let t = Instant::now();
        let r = s
            .post_json(
                &format!("/containers/{cuid}/fork"),
                &json!({"start": false}),
            )
            .await;
        forks.push(t.elapsed());
        assert_eq!(r.status, 201, "{}", r.text);
        sync();

        // `cp` does not sync; a snapshot is durable when answered (it syncs its filesystem):
        // the copy is timed with a `sync -f` of its filesystem too.
        let app = data.join("mounts").join(&cuid);
        let dest = data.join(format!("cp-a-{i}"));
        cps.push(timed(
            Command::new("sh")
                .arg("-c")
                .arg("cp -a \"$0\" \"$1\" && sync -f \"$1\"")
                .arg(&app)
                .arg(&dest),
        ));
        sync();
        if reflink {
            let dest = data.join(format!("cp-reflink-{i}"));
            reflinks.push(timed(
                Command::new("sh")
                    .arg("-c")
                    .arg("cp -a --reflink=always \"$0\" \"$1\" && sync -f \"$1\"")
                    .arg(&app)
                    .arg(&dest),
            ));
        }
    }
    // The log's fields are coloured: strip the escapes before looking for the count.
    let log: String = {
        let raw = s.server_log();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let cloned = log.contains(&format!("cloned={FILES}"));
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (snapshot, fork, cp) = (median(&mut snaps), median(&mut forks), median(&mut cps));
    let reflink = (!reflinks.is_empty()).then(|| median(&mut reflinks));
    Row {
        snapshot,
        fork,
        cp,
        reflink,
        cloned,
    }
}

/// A loop-mounted XFS with reflinks, or why not.
struct Xfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn xfs() -> Result<Xfs, String> {
    let mkfs = ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("mkfs.xfs not found (run scripts/setup-xfs.sh)")?;
    if rustix::process::geteuid().as_raw() != 0 {
        return Err("not root: cannot loop-mount".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("cm-bench-xfs-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let image = dir.path().join("xfs.img");
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(4 << 30))
        .map_err(|e| e.to_string())?;
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !ok(Command::new(mkfs)
        .args(["-q", "-m", "reflink=1"])
        .arg(&image))
    {
        return Err("mkfs.xfs failed".into());
    }
    if !ok(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mount))
    {
        return Err("mount -o loop failed".into());
    }
    Ok(Xfs { mount, _dir: dir })
}

fn print(label: &str, r: &Row) {
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "{label}: snapshot {:.2} s ({}) | fork {:.2} s | cp -a + sync {:.2} s | ratio snapshot/cp = {:.2} | {}",
        s(r.snapshot),
        if r.cloned { "cloned" } else { "copied" },
        s(r.fork),
        s(r.cp),
        s(r.snapshot) / s(r.cp),
        match r.reflink {
            Some(d) => format!(
                "cp -a --reflink=always + sync {:.2} s (ratio snapshot/reflink = {:.2})",
                s(d),
                s(r.snapshot) / s(d)
            ),
            None => "cp --reflink: n/a".into(),
        }
    );
}

#[tokio::main]
async fn main() {
    let work = tempfile::Builder::new()
        .prefix("cm-bench-")
        .tempdir()
        .unwrap();
    let zip_path = work.path().join("tree.zip");
    eprintln!(
        "building a {FILES}-file ZIP of {} MB…",
        FILES * FILE_BYTES / 1_000_000
    );
    build_zip(&zip_path);
    println!(
        "snapshot benchmark: {FILES} files, {} MB, a running container (paused for the copy); medians of {ROUNDS}",
        FILES * FILE_BYTES / 1_000_000
    );
    let host = measure(None, &zip_path, false).await;
    print("DATA_DIR on the host's filesystem", &host);
    match xfs() {
        Ok(x) => {
            let row = measure(Some(x.mount.join("data")), &zip_path, true).await;
            print("DATA_DIR on a loop-mounted XFS (reflink=1)", &row);
        }
        Err(why) => println!("XFS row skipped: {why}"),
    }
}
