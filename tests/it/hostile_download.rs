//! A hostile container owns its `/app` (`DATA_DIR/mounts/<cuid>` on the host): the server's
//! removal of that tree and its download-zip walk must survive depth, links, special files,
//! hard links, sparse files, renames and slow clients, without crashing or leaking.

use std::io::{Cursor, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use zip::ZipArchive;

use crate::common::*;

// ---------------------------------------------------------------- helpers

/// What a container's `mkdir d; cd d` loop makes: a chain of `depth` directories under
/// `dir`, built iteratively with descriptors (no path is ever longer than one name).
fn chain(dir: &Path, depth: usize) {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(dir, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = openat(&fd, "d", flags, Mode::empty()).unwrap();
    }
    openat(
        &fd,
        "bottom.txt",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// A directory outside every container's `/app`, which nothing may touch.
fn canary(s: &Server) -> PathBuf {
    let dir = s.dir.path().join("canary");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("keep.txt"), b"keep").unwrap();
    std::fs::write(dir.join("sub/keep2.txt"), b"keep2").unwrap();
    dir
}

fn assert_canary(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(std::fs::read(dir.join("sub/keep2.txt")).unwrap(), b"keep2");
}

/// A client with room for long waits (the harness's has 120 s).
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap()
}

/// Runs `chattr -i` on a path when dropped, so a failed test leaves a removable tree.
struct Mutable(PathBuf);

impl Drop for Mutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

fn chattr(flag: &str, path: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------- deletion

/// The crash loop: a 60,000-level chain in `/app` (plus links out, FIFOs, a `chmod 000`
/// directory) used to abort the server with a stack overflow at every delete attempt. Now the
/// delete completes, nothing outside is touched, and the server keeps answering.
#[tokio::test]
async fn a_sixty_thousand_level_tree_is_deleted_and_the_server_survives() {
    let s = Server::start_with(Options {
        env: vec![("ACTION_TIMEOUT".into(), "600".into())],
        ..Default::default()
    })
    .await;
    let cuid = s.running_sleeper().await;
    let app = s.mount(&cuid);
    let outside = canary(&s);
    let (a, o) = (app.clone(), outside.clone());
    tokio::task::spawn_blocking(move || {
        chain(&a, 60_000);
        std::os::unix::fs::symlink(&o, a.join("out")).unwrap();
        std::os::unix::fs::symlink(o.join("keep.txt"), a.join("d/d/file-out")).unwrap();
        std::os::unix::fs::symlink("/", a.join("d/root")).unwrap();
        mkfifo(&a.join("fifo"));
        mkfifo(&a.join("d/d/d/fifo"));
        std::fs::create_dir_all(a.join("locked/inner")).unwrap();
        std::fs::write(a.join("locked/inner/x"), b"x").unwrap();
        std::fs::set_permissions(
            a.join("locked/inner"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        std::fs::set_permissions(a.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    })
    .await
    .unwrap();

    let r = Resp::from(
        patient_client()
            .delete(format!("{}/containers/{cuid}", s.base))
            .header("authorization", basic_auth(USER, PASS))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "deleted", "{}", r.text);
    s.get(&format!("/containers/{cuid}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );
    assert!(!app.exists());
    assert_canary(&outside);
    assert_eq!(s.get("/healthz").await.status, 200);
    assert!(!s.server_log().contains("overflow"));
}

/// A file the container cannot have removed (made immutable with `chattr +i`, as root could
/// in a container with that capability): the delete fails with `IO_ERROR` in `last_error`,
/// the row stays `deleting`, the server stays up, and once the file is mutable again the
/// retried delete finishes.
#[tokio::test]
async fn an_unremovable_file_keeps_the_row_deleting_with_an_io_error() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    std::fs::create_dir_all(app.join("a/b")).unwrap();
    std::fs::write(app.join("a/b/stuck"), b"stuck").unwrap();
    std::fs::write(app.join("a/other"), b"other").unwrap();
    let stuck = app.join("a/b/stuck");
    assert!(
        chattr("+i", &stuck),
        "chattr +i is needed for this test (root on ext4, xfs, btrfs…)"
    );
    let guard = Mutable(stuck.clone());

    let r = s.delete(&format!("/containers/{cuid}?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let status = format!("/containers/{cuid}/status");
    let r = s
        .wait_for(&status, Duration::from_secs(60), |r| {
            r.json["last_error"]["code"] == "IO_ERROR"
        })
        .await;
    assert_eq!(r.json["status"], "deleting", "{}", r.text);
    let message = r.json["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("stuck"), "{message}");
    assert_eq!(s.get("/healthz").await.status, 200);
    // Still a tombstone, still on disk; its files are no longer served.
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "deleting", "{}", r.text);
    s.get(&format!("/containers/{cuid}/download?path=a/other"))
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    assert!(stuck.exists());

    assert!(chattr("-i", &stuck));
    drop(guard);
    s.wait_for(&status, Duration::from_secs(90), |r| r.status == 404)
        .await;
    assert!(!app.exists());
}

// ---------------------------------------------------------------- download-zip

async fn download_zip(s: &Server, cuid: &str) -> (u16, Vec<u8>) {
    let r = patient_client()
        .get(format!("{}/containers/{cuid}/download-zip", s.base))
        .header("authorization", basic_auth(USER, PASS))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// Every entry of a ZIP, read through (CRCs checked): names, and whether all are unique.
fn entries(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = ZipArchive::new(Cursor::new(data)).expect("a valid ZIP");
    (0..a.len())
        .map(|i| {
            let mut f = a.by_index(i).unwrap();
            let name = f.name().unwrap().into_owned();
            let mut v = Vec::new();
            f.read_to_end(&mut v).expect("entry reads back");
            (name, v)
        })
        .collect()
}

fn comment(data: &[u8]) -> String {
    let a = ZipArchive::new(Cursor::new(data)).expect("a valid ZIP");
    String::from_utf8_lossy(a.comment()).into_owned()
}

/// A raw HTTP/1.1 GET with `TE: trailers`: the decoded chunked body and the trailers.
async fn get_with_trailers(s: &Server, path: &str) -> (String, Vec<u8>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        s.addr,
        basic_auth(USER, PASS)
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = &raw[split + 4..];
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    (head, body, String::from_utf8_lossy(rest).into_owned())
}

/// A 1 MB file with 50 more names (hard links the container made) is read and stored once:
/// the archive cannot be blown up by linking one file many times.
#[tokio::test]
async fn a_hard_linked_file_is_stored_once() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(app.join("a-original"), &data).unwrap();
    std::fs::create_dir(app.join("links")).unwrap();
    for i in 0..50 {
        std::fs::hard_link(app.join("a-original"), app.join(format!("links/{i}"))).unwrap();
    }
    let (status, zip) = download_zip(&s, &cuid).await;
    assert_eq!(status, 200);
    let all = entries(&zip);
    let with_bytes: Vec<&str> = all
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(with_bytes, ["a-original"]);
    assert_eq!(all.len(), 2, "the file and the links/ directory");
    assert_eq!(all[0].1, data);
    assert!(zip.len() < 2_000_000, "{} bytes", zip.len());
}

/// A 10 GB sparse file (a `truncate` in the container) counts its apparent size against
/// `ZIP_MAX_INFLATED_BYTES`: the archive ends cleanly before it, valid, with the cut named in
/// its comment and in the trailer; it is never read.
#[tokio::test]
async fn a_sparse_file_over_the_byte_cap_ends_the_archive_cleanly() {
    let s = Server::start_with(Options {
        env: vec![("ZIP_MAX_INFLATED_BYTES".into(), "1048576".into())],
        ..Default::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    std::fs::write(app.join("a-small.txt"), b"small").unwrap();
    std::fs::File::create(app.join("b-sparse"))
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    std::fs::write(app.join("c-after.txt"), b"after").unwrap();

    let started = std::time::Instant::now();
    let (head, zip, trailers) =
        get_with_trailers(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the sparse file was read"
    );
    assert!(
        trailers
            .to_ascii_lowercase()
            .contains("x-archive-truncated: bytes"),
        "{trailers:?}"
    );
    let names: Vec<String> = entries(&zip).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a-small.txt"]);
    assert!(comment(&zip).contains("ZIP_MAX_INFLATED_BYTES"));

    // Without `TE: trailers` the archive is the same, the comment still says it.
    let (status, plain) = download_zip(&s, &cuid).await;
    assert_eq!(status, 200);
    assert!(comment(&plain).contains("truncated"));
    // A tree under the caps has neither.
    std::fs::remove_file(app.join("b-sparse")).unwrap();
    let (_, zip, trailers) =
        get_with_trailers(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert!(!trailers
        .to_ascii_lowercase()
        .contains("x-archive-truncated"));
    assert_eq!(comment(&zip), "");
    assert_eq!(entries(&zip).len(), 2);
}

/// Directories renamed back and forth by the container while the walk reads them: every
/// answer is a valid ZIP whose entries read back, with no name twice.
#[tokio::test]
async fn directories_renamed_during_the_walk_still_give_valid_zips() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    for d in 0..40 {
        let dir = app.join(format!("moving/sub{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, st) = (app.clone(), stop.clone());
    let renamer = std::thread::spawn(move || {
        let mut renames = 0u64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            for (x, y) in [("moving", "moved"), ("moved", "moving")] {
                if std::fs::rename(a.join(x), a.join(y)).is_ok() {
                    renames += 1;
                }
            }
            for d in 0..40 {
                for base in ["moving", "moved"] {
                    let (x, y) = (
                        a.join(format!("{base}/sub{d:02}")),
                        a.join(format!("{base}/sub{d:02}-renamed")),
                    );
                    if std::fs::rename(&x, &y).is_ok() || std::fs::rename(&y, &x).is_ok() {
                        renames += 1;
                    }
                }
            }
        }
        renames
    });
    for _ in 0..8 {
        let (status, zip) = download_zip(&s, &cuid).await;
        assert_eq!(status, 200);
        let all = entries(&zip);
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "a name twice");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(renamer.join().unwrap() > 0);
    assert_eq!(s.get("/healthz").await.status, 200);
}

/// Empty files under a ~3.7 KB prefix, more than the default `ZIP_MAX_ENTRIES` (20,000):
/// the archive is cut at the cap, and the server's resident memory stays within 100 MB of
/// idle throughout (the zip writer keeps each entry's name until the central directory, so
/// the cap is what bounds it).
#[tokio::test]
async fn a_huge_tree_is_cut_at_the_entry_cap_and_memory_stays_bounded() {
    const FILES: usize = 30_000;
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    let a = app.clone();
    let prefix_len = tokio::task::spawn_blocking(move || {
        // 18 levels of 200-character names: a 3.6 KB prefix, plus the file names.
        let mut dir = a.clone();
        for level in 0..18 {
            dir = dir.join(format!("{level:02}{}", "x".repeat(198)));
        }
        let prefix_len = dir.strip_prefix(&a).unwrap().as_os_str().len();
        for f in 0..FILES {
            let sub = dir.join(format!("{:02}", f % 16));
            if f < 16 {
                std::fs::create_dir_all(&sub).unwrap();
            }
            std::fs::File::create(sub.join(format!("file-{f:06}-{}", "y".repeat(60)))).unwrap();
        }
        prefix_len
    })
    .await
    .unwrap();
    assert!(prefix_len > 3_600, "{prefix_len}");

    let pid = s.pid();
    let idle = status_kb(pid, "VmRSS:");
    let sampler = RssSampler::start(pid, Duration::from_millis(20));
    let (head, zip, trailers) =
        get_with_trailers(&s, &format!("/containers/{cuid}/download-zip")).await;
    let peak = sampler.stop().max(status_kb(pid, "VmRSS:"));
    eprintln!(
        "server RSS: idle {} KB, peak during download {} KB (+{} KB); archive {} bytes",
        idle,
        peak,
        peak.saturating_sub(idle),
        zip.len()
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        trailers
            .to_ascii_lowercase()
            .contains("x-archive-truncated: entries"),
        "{trailers:?}"
    );
    let a = ZipArchive::new(Cursor::new(&zip)).expect("a valid ZIP");
    // At the cap, less the directories that were still waiting to be listed.
    assert!((19_900..=20_000).contains(&a.len()), "{}", a.len());
    assert!(String::from_utf8_lossy(a.comment()).contains("ZIP_MAX_ENTRIES"));
    assert!(
        peak.saturating_sub(idle) < 100 * 1024,
        "RSS grew by {} KB",
        peak - idle
    );
}

// ---------------------------------------------------------------- listings of huge directories

/// The `i`-th name of the huge directory: byte order is `i` order.
fn huge_name(i: usize) -> String {
    format!("{i:06}-{}", "n".repeat(120))
}

/// 300,000 names of 127 bytes in one directory of `/app`, then eight `limit=1` pages at once:
/// a page keeps only the names it may return (the old listing collected and sorted every
/// name, about 50 MB a page, kept by the allocator), so the server's peak resident memory
/// stays within 24 MB of idle. Cursor walks still give every name once, in byte order.
#[tokio::test]
async fn listing_a_huge_directory_keeps_memory_bounded() {
    const NAMES: usize = 300_000;
    // ext4 allows 65,000 links to an inode.
    const LINKS_PER_INODE: usize = 60_000;
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let app = s.mount(&cuid);
    let t = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        use rustix::fs::{linkat, openat, AtFlags, Mode, OFlags};
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        std::fs::create_dir(app.join("big")).unwrap();
        std::fs::create_dir(app.join("seed")).unwrap();
        let big = rustix::fs::open(app.join("big"), dir_flags, Mode::empty()).unwrap();
        let seed = rustix::fs::open(app.join("seed"), dir_flags, Mode::empty()).unwrap();
        // Hard links to a few empty files: making an inode costs about 1.7 ms on the test
        // machine's disk, a link 30 µs. Made in an order unrelated to the names'.
        for k in 0..NAMES.div_ceil(LINKS_PER_INODE) {
            openat(
                &seed,
                format!("{k}"),
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
        }
        for i in 0..NAMES {
            let seed_name = format!("{}", i / LINKS_PER_INODE);
            let name = huge_name(i * 7919 % NAMES);
            linkat(&seed, &seed_name, &big, &name, AtFlags::empty()).unwrap();
        }
    })
    .await
    .unwrap();
    eprintln!("{NAMES} names made in {:?}", t.elapsed());

    // The peak (VmHWM) is reset to the current resident size, then read after the pages.
    let pid = s.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let idle = status_kb(pid, "VmRSS:");
    let t = std::time::Instant::now();
    let page = format!("/containers/{cuid}/files?path=big&limit=1");
    let pages = futures_util::future::join_all((0..8).map(|_| s.get(&page))).await;
    let took = t.elapsed();
    let peak = status_kb(pid, "VmHWM:");
    eprintln!(
        "server RSS: idle {idle} KB, peak during 8 parallel pages {peak} KB (+{} KB); {took:?}",
        peak.saturating_sub(idle)
    );
    for r in &pages {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["entries"].as_array().unwrap().len(), 1, "{}", r.text);
        assert_eq!(r.json["entries"][0]["name"], huge_name(0));
        assert_eq!(r.json["entries"][0]["type"], "file");
        assert_eq!(r.json["next_cursor"], huge_name(0));
    }
    assert!(
        peak.saturating_sub(idle) < 24 * 1024,
        "RSS grew by {} KB",
        peak - idle
    );

    // Cursor walks: from the start, from the middle, at the end.
    for (from, pages) in [(None, 3), (Some(149_999), 2), (Some(NAMES - 1_500), 2)] {
        let mut cursor = from.map(huge_name);
        let mut want = from.map_or(0, |i| i + 1);
        for _ in 0..pages {
            let mut path = format!("/containers/{cuid}/files?path=big&limit=1000");
            if let Some(c) = &cursor {
                path += &format!("&cursor={c}");
            }
            let r = s.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let names: Vec<&str> = r.json["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            let expected: Vec<String> = (want..(want + 1000).min(NAMES)).map(huge_name).collect();
            assert_eq!(names, expected, "page after {cursor:?}");
            want += names.len();
            cursor = r.json["next_cursor"].as_str().map(str::to_owned);
            if want == NAMES {
                assert_eq!(r.json["next_cursor"], json!(null));
            } else {
                assert_eq!(cursor.as_deref(), names.last().copied());
            }
        }
    }
}
