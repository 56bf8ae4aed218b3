//! A hostile container owns its `/app` (`DATA_DIR/mounts/<cuid>` on the host): the server's
//! removal of that tree and its download-zip walk must survive depth, links, special files,
//! hard links, sparse files, renames and slow clients, without crashing or leaking.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

// ---------------------------------------------------------------- helpers

async fn create(s: &Server, start: bool) -> String {
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": ["sh", "-c", "sleep 3600"], "start": start}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["cuid"].as_str().unwrap().to_owned()
}

fn mount(s: &Server, cuid: &str) -> PathBuf {
    s.data_dir().join("mounts").join(cuid)
}

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
    let cuid = create(&s, true).await;
    let app = mount(&s, &cuid);
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
    let cuid = create(&s, false).await;
    let app = mount(&s, &cuid);
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
