//! Uploads against a hostile container (it owns its /app, races the server there and may be
//! root) and hostile clients: names that imply millions of directories, a re-upload that
//! merges into thousands of directories under a low open-file limit, a server killed in the
//! middle of a commit, FIFOs raced into the names a commit works on, trickling bodies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// The container's user (DEFAULT_USER_UID's default): owner of everything in /app.
const UID: u32 = 1000;

fn staging_entries(s: &Server) -> usize {
    std::fs::read_dir(s.data_dir().join("staging")).map_or(0, |d| d.count())
}

fn assert_owned_by_the_container(tree: &BTreeMap<String, Node>, what: &str) {
    for (name, n) in tree {
        assert_eq!(
            n.uid, UID,
            "{what}: /app/{name} ({}) is not the container's",
            n.kind
        );
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// ---------------------------------------------------------------- item 4

/// 3 entries of 40 components make 120 directories: with ZIP_MAX_ENTRIES=100 the archive
/// is refused before anything is created, and the error says directories count.
#[tokio::test]
async fn implied_directories_count_against_the_entry_limit() {
    let s = Server::start_with(Options {
        env: vec![("ZIP_MAX_ENTRIES".into(), "100".into())],
        ..Default::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let deep = |i: usize| (format!("top{i}/") + &"d/".repeat(38) + "f", b"x".to_vec());
    let r = s
        .upload_zip(&cuid, "", zip_owned(&[deep(0), deep(1), deep(2)]))
        .await;
    r.assert_error(413, "payload_too_large", "ZIP_TOO_MANY_ENTRIES");
    assert!(r.json["message"].as_str().unwrap().contains("directories"));
    assert_eq!(r.json["details"]["limit"], 100);
    assert!(listing(&s.mount(&cuid)).is_empty());
    assert_eq!(staging_entries(&s), 0);
    // 80 names pass.
    let r = s
        .upload_zip(&cuid, "", zip_owned(&[deep(0), deep(1)]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(listing(&s.mount(&cuid)).len(), 80);
}

// ---------------------------------------------------------------- item 5

/// 3,000 directories uploaded twice (the second upload merges into each of them) under an
/// open-file limit of 4,096, soft and hard: the server keeps answering throughout and holds
/// a small, bounded number of descriptors (it used to keep two per merged directory until
/// the commit ended: 6,000, so the re-upload failed with EMFILE).
#[tokio::test]
async fn a_re_upload_of_3000_directories_holds_few_descriptors() {
    let s = Server::start_with(Options {
        nofile: Some(4096),
        ..Default::default()
    })
    .await;
    let pid = s.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    assert!(
        line.split_whitespace().filter(|w| *w == "4096").count() == 2,
        "{line}"
    );
    let cuid = s.create_sleeper().await;
    let entries: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| (format!("dir{i:04}/file"), format!("{i}").into_bytes()))
        .collect();
    let body = zip_owned(&entries);
    let r = s.upload_zip(&cuid, "", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let baseline = open_fds(pid);

    let s = Arc::new(s);
    let task = {
        let s = s.clone();
        let cuid = cuid.clone();
        tokio::spawn(async move { s.upload_zip(&cuid, "", body).await })
    };
    let mut max_fds = 0;
    let mut answers = 0;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while !task.is_finished() {
        max_fds = max_fds.max(open_fds(pid));
        for path in ["/healthz".to_owned(), format!("/containers/{cuid}")] {
            let r = quick
                .get(format!("{}{path}", s.base))
                .header("authorization", basic_auth(USER, PASS))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} did not answer during the upload: {e}"));
            assert_eq!(r.status(), 200, "{path}");
            answers += 1;
        }
    }
    let r = task.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let after = open_fds(pid);
    eprintln!(
        "descriptors: {baseline} before the re-upload, at most {max_fds} during it, {after} after; {answers} answers meanwhile"
    );
    assert!(answers > 0);
    assert!(
        max_fds <= baseline + 64,
        "the re-upload held {max_fds} descriptors (baseline {baseline})"
    );
    assert!(
        after <= baseline + 8,
        "{after} descriptors after (baseline {baseline})"
    );
    let tree = listing(&s.mount(&cuid));
    assert_eq!(tree.len(), 6000);
    assert_owned_by_the_container(&tree, "after the re-upload");
}

// ---------------------------------------------------------------- item 6

/// The old tree and the upload that replaces it: 150 files exchanged inside 30 merged
/// directories, 30 files moved into them, a file replaced by a directory, 20 new
/// directories and 20 top-level files exchanged: 221 moves, in name order.
/// `(name, content)` entries of a ZIP.
type Entries = Vec<(String, Vec<u8>)>;

fn crash_trees() -> (Entries, Entries) {
    let mut old = Vec::new();
    let mut new = Vec::new();
    for i in 0..30 {
        for j in 0..5 {
            old.push((format!("d{i}/f{j}"), format!("old {i} {j}").into_bytes()));
            new.push((format!("d{i}/f{j}"), format!("new {i} {j}").into_bytes()));
        }
        old.push((format!("d{i}/keep"), b"kept".to_vec()));
        new.push((format!("d{i}/new"), b"new".to_vec()));
    }
    old.push(("fileToDir".into(), b"a file".to_vec()));
    new.push(("fileToDir/inner".into(), b"now a directory".to_vec()));
    for i in 0..20 {
        new.push((format!("new{i}/g"), b"g".to_vec()));
        old.push((format!("top{i}"), b"old top".to_vec()));
        new.push((format!("top{i}"), b"new top".to_vec()));
    }
    (old, new)
}

const CRASH_MOVES: u64 = 221;

/// The server is killed (SIGKILL) at chosen points of a commit (test-only pause
/// `CM_TEST_COMMIT_PAUSE_AFTER`): before any move, after the first, in the middle, right
/// after a new directory landed (still the server's 0700), after the last move, and once
/// the commit is recorded. After the restart /app holds exactly the old tree (or, for the
/// recorded commit, exactly the new one), all of it the container's, and nothing is left
/// in the staging area.
#[tokio::test]
async fn a_crash_at_any_point_of_a_commit_leaves_the_old_or_the_new_tree() {
    let (old, new) = crash_trees();
    let mut s = Server::start().await;
    // The expected trees, from uploads that were not interrupted.
    let reference = s.create_sleeper().await;
    let r = s.upload_zip(&reference, "", zip_owned(&old)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let old_tree = listing(&s.mount(&reference));
    let r = s.upload_zip(&reference, "", zip_owned(&new)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_tree = listing(&s.mount(&reference));
    assert_owned_by_the_container(&old_tree, "old");
    assert_owned_by_the_container(&new_tree, "new");
    assert_ne!(old_tree, new_tree);

    let cuid = s.create_sleeper().await;
    let r = s.upload_zip(&cuid, "", zip_owned(&old)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = zip_owned(&new);
    let mut pauses = 0;
    // d0..d29 (6 moves each: 1-180), fileToDir (181), new0..new19 (182-201), top* (202-221).
    for point in [
        "0",
        "1",
        "100",
        "185",
        &CRASH_MOVES.to_string(),
        "committed",
    ] {
        s.stop();
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", Some(point));
        s.start_again().await;
        let request = s.upload_request(&cuid, "", body.clone()).send();
        let pending = tokio::spawn(request);
        pauses += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.server_log().matches("test pause: commit paused").count() < pauses {
            assert!(
                Instant::now() < deadline,
                "the commit never paused at {point}"
            );
            assert!(
                !pending.is_finished(),
                "the upload ended before pausing at {point}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.kill9();
        let _ = pending.await;
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", None);
        s.start_again().await;
        let tree = listing(&s.mount(&cuid));
        let want = if point == "committed" {
            &new_tree
        } else {
            &old_tree
        };
        assert!(
            tree == *want,
            "after a crash at {point}: /app is neither the whole old nor the whole new tree; \
             differences: {:?}",
            tree.iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .take(5)
                .collect::<Vec<_>>()
        );
        assert_owned_by_the_container(&tree, point);
        assert_eq!(staging_entries(&s), 0, "staging leftovers after {point}");
        assert!(
            s.server_log()
                .contains("rolled back an upload interrupted by a crash")
                || point == "committed"
        );
    }
    // And uploads work as before.
    let r = s.upload_zip(&cuid, "", zip_owned(&new)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(listing(&s.mount(&cuid)), new_tree);
}

// ---------------------------------------------------------------- item 7

/// The container (root, with mknod) races an upload: it keeps linking a FIFO over the names
/// of a new directory of 2,000 files while the server moves that directory in and gives its
/// files away. Every upload ends (200, or 409 when the race hit a name before the server
/// gave it away) without hanging, and the FIFO is never opened.
#[tokio::test]
async fn a_fifo_raced_into_an_upload_is_never_opened() {
    use rustix::fs::inotify;
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let fifo = m.join(".fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    let watcher =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&watcher, &fifo, inotify::WatchFlags::OPEN).unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|i| (format!("d/f{i:04}"), b"data".to_vec()))
        .collect();
    let body = zip_owned(&entries);

    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let racer = {
        let (stop, hits, m, fifo) = (stop.clone(), hits.clone(), m.clone(), fifo.clone());
        std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                k = (k + 7919) % 2000;
                let tmp = m.join("d/.planted");
                if std::fs::hard_link(&fifo, &tmp).is_ok()
                    && std::fs::rename(&tmp, m.join(format!("d/f{k:04}"))).is_ok()
                {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut statuses = Vec::new();
    for round in 0..4 {
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            s.upload_zip(&cuid, "", body.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the upload hung"));
        assert!(
            r.status == 200 || r.status == 409,
            "round {round}: {} {}",
            r.status,
            r.text
        );
        if r.status == 409 {
            assert_eq!(r.json["code"], "PATH_CONFLICT", "{}", r.text);
        }
        statuses.push(r.status);
        // Every file of the upload in /app is the container's.
        let tree = listing(&m);
        for (name, n) in &tree {
            if n.kind != "fifo" {
                assert_eq!(n.uid, UID, "round {round}: /app/{name} ({})", n.kind);
            }
        }
        let _ = std::fs::remove_dir_all(m.join("d"));
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    eprintln!(
        "upload answers {statuses:?}; the racer planted the FIFO {} times",
        hits.load(Ordering::Relaxed)
    );
    let mut buf = [0u8; 1024];
    assert_eq!(
        rustix::io::read(&watcher, &mut buf),
        Err(rustix::io::Errno::AGAIN),
        "the server opened the FIFO"
    );
    let left: Vec<_> = std::fs::read_dir(s.data_dir().join("staging"))
        .unwrap()
        .map(|e| listing(&e.unwrap().path()))
        .collect();
    assert!(left.is_empty(), "staging leftovers: {left:?}");
}

// ---------------------------------------------------------------- item 9 (uploads)

/// Four clients take every upload slot and then send nothing: with UPLOAD_IDLE_TIMEOUT=2
/// each gets `408 UPLOAD_IDLE_TIMEOUT` and frees its slot, so a fifth client's upload goes
/// through within the timeout (it would wait for ever otherwise).
#[tokio::test]
async fn trickling_uploads_time_out_and_free_their_slots() {
    let s = Server::start_with(Options {
        env: vec![("UPLOAD_IDLE_TIMEOUT".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let mut tricklers = Vec::new();
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "POST /containers/{cuid}/upload-zip HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
             Content-Type: application/zip\r\nContent-Length: 100000\r\n\r\nPK\x03\x04",
            s.addr,
            basic_auth(USER, PASS)
        );
        c.write_all(head.as_bytes()).await.unwrap();
        tricklers.push(c);
    }
    // All four hold a slot once each has its staging directory.
    wait_until(
        Duration::from_secs(10),
        "the trickling uploads did not start",
        || staging_entries(&s) >= 4,
    )
    .await;
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        s.upload_zip(&cuid, "", zip_of(&[("after.txt", b"ok")])),
    )
    .await
    .expect("the fifth upload waited for ever behind trickling ones");
    let waited = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(waited < Duration::from_secs(2 + 5), "{waited:?}");
    eprintln!("the fifth upload waited {waited:?}");
    for mut c in tricklers {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("UPLOAD_IDLE_TIMEOUT"), "{answer}");
    }
    assert_eq!(
        std::fs::read(s.mount(&cuid).join("after.txt")).unwrap(),
        b"ok"
    );
    assert_eq!(staging_entries(&s), 0);
}

/// Sends the head of an upload that announces 100,000 bytes, then one byte every 100 ms
/// until the answer starts; returns the answer and how long after the head it began.
async fn trickle(s: &Server, cuid: &str) -> (String, Duration) {
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /containers/{cuid}/upload-zip HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
         Content-Type: application/zip\r\nContent-Length: 100000\r\n\r\n",
        s.addr,
        basic_auth(USER, PASS)
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = c.split();
    let t = Instant::now();
    let mut answer = Vec::new();
    let mut began = None;
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let give_up = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    began.get_or_insert_with(|| t.elapsed());
                    answer.extend_from_slice(&buf[..n]);
                }
                _ => break,
            },
            _ = tick.tick(), if answer.is_empty() => {
                let _ = wr.write_all(b"x").await;
            }
            _ = &mut give_up => break,
        }
    }
    let began = began.unwrap_or_else(|| t.elapsed());
    (String::from_utf8_lossy(&answer).into_owned(), began)
}

/// Four clients take every upload slot and trickle a byte every 100 ms, far inside the
/// per-chunk UPLOAD_IDLE_TIMEOUT (30 s), which alone let them hold the slots for ever. With
/// UPLOAD_STALL_BUDGET=4 each is cut with `408 UPLOAD_TOO_SLOW` about 4 s in; meanwhile a
/// fifth upload, with UPLOAD_SLOT_WAIT=1, gets `503 UPLOAD_SLOTS_BUSY` with `Retry-After`
/// after about a second (instead of waiting behind them), and goes through once they are cut.
#[tokio::test]
async fn trickles_under_the_idle_timeout_are_cut_by_the_stall_budget() {
    let s = Server::start_with(Options {
        env: vec![
            ("UPLOAD_STALL_BUDGET".into(), "4".into()),
            ("UPLOAD_SLOT_WAIT".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let s = Arc::new(s);
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let (s, cuid) = (s.clone(), cuid.clone());
            tokio::spawn(async move { trickle(&s, &cuid).await })
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the trickling uploads did not start",
        || staging_entries(&s) >= 4,
    )
    .await;

    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        s.upload_zip(&cuid, "", zip_of(&[("after.txt", b"ok")])),
    )
    .await
    .expect("the fifth upload waited behind trickling ones");
    let waited = t.elapsed();
    eprintln!(
        "the fifth upload was answered {} after {waited:?}",
        r.status
    );
    r.assert_error(503, "unavailable", "UPLOAD_SLOTS_BUSY");
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(waited < Duration::from_secs(1 + 3), "{waited:?}");

    for t in tricklers {
        let (answer, began) = t.await.unwrap();
        eprintln!("a trickler was answered after {began:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("UPLOAD_TOO_SLOW"), "{answer}");
        assert!(began < Duration::from_secs(4 + 4), "{began:?}");
    }
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("after.txt", b"ok")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        std::fs::read(s.mount(&cuid).join("after.txt")).unwrap(),
        b"ok"
    );
    assert_eq!(staging_entries(&s), 0);
}
