//! A Docker daemon with `userns-remap` (issue 18): root in a container is an unprivileged uid
//! on the host, so the server gives `/app` and every uploaded file to the container's ids
//! shifted into the daemon's range. Runs against the second daemon of
//! scripts/setup-userns-daemon.sh (its own network namespace, `userns-remap: default`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::*;

/// The socket of scripts/setup-userns-daemon.sh.
const USERNS_DOCKER_HOST: &str = "unix:///run/cm-userns.sock";

/// Host `uid:gid` of a path (not following a symlink).
fn ids_of(path: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(path).unwrap();
    (md.uid(), md.gid())
}

/// Runs `sh -c script` as `user` in the container on the userns daemon; (ok, stdout + stderr).
fn sh_in(cuid: &str, user: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args([
            "-H",
            USERNS_DOCKER_HOST,
            "exec",
            "-u",
            user,
            cuid,
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn on_a_remapping_daemon_app_belongs_to_the_mapped_ids() {
    // The daemon names its range in its data root: `<root>/<uid>.<gid>`.
    let root_dir = docker_on(
        Some(USERNS_DOCKER_HOST),
        &["info", "--format", "{{.DockerRootDir}}"],
    );
    let base: u32 = root_dir
        .trim()
        .rsplit('/')
        .next()
        .and_then(|last| last.split_once('.'))
        .and_then(|(uid, _)| uid.parse().ok())
        .unwrap_or_else(|| {
            panic!("no userns daemon at {USERNS_DOCKER_HOST} ({root_dir:?}): run scripts/setup-userns-daemon.sh")
        });
    assert!(base > 0);
    let user = (base + 1000, base + 1000);
    let root = (base, base);

    let s = Server::start_with(Options {
        docker_host: Some(USERNS_DOCKER_HOST.into()),
        ..Default::default()
    })
    .await;
    let health = s.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(
        health.json["userns"],
        json!({"uid": base, "gid": base}),
        "{}",
        health.text
    );

    // Created before the start, uploaded to before the start: both get the mapped owner.
    let cuid = s.create_sleeper().await;
    let mount = s.mount(&cuid);
    assert_eq!(ids_of(&mount), user);
    let zip = zip_of(&[("up.txt", b"uploaded"), ("d/", b""), ("d/in.txt", b"inner")]);
    let r = s.upload_zip(&cuid, "", zip).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for rel in ["up.txt", "d", "d/in.txt"] {
        assert_eq!(ids_of(&mount.join(rel)), user, "{rel}");
    }
    // The single-file upload and new folder (issue 23) give the same mapped owner.
    assert_eq!(s.put_file(&cuid, "one/file.txt", "one").await.status, 201);
    assert_eq!(s.make_folder(&cuid, "made").await.status, 201);
    for rel in ["one", "one/file.txt", "made"] {
        assert_eq!(ids_of(&mount.join(rel)), user, "{rel}");
    }
    s.start_container(&cuid).await;
    // Compose made it on the same daemon the server asks (and not on the default one).
    assert!(!docker_on(Some(USERNS_DOCKER_HOST), &["inspect", &cuid])
        .trim()
        .is_empty());
    assert!(
        docker_inspect(&cuid).is_none(),
        "the container is on the default daemon"
    );

    // As its default user (1000:1000 inside), the container writes /app.
    let (ok, out) = sh_in(
        &cuid,
        "1000:1000",
        "cat /app/up.txt && echo more >> /app/up.txt && echo u > /app/by-user \
         && mkdir /app/d/sub && echo x > /app/d/sub/f && ls -n /app/up.txt",
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("uploaded"), "{out}");
    assert!(out.contains(" 1000 "), "the user sees its own ids: {out}");
    for rel in ["by-user", "d/sub", "d/sub/f"] {
        assert_eq!(ids_of(&mount.join(rel)), user, "{rel}");
    }

    // A container running as root: its /app is the mapped root's, which it writes.
    let root_cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER, "user": "0:0"}))
        .await;
    let root_mount = s.mount(&root_cuid);
    assert_eq!(ids_of(&root_mount), root);
    let (ok, out) = sh_in(&root_cuid, "0:0", "echo r > /app/by-root && mkdir /app/rd");
    assert!(ok, "{out}");
    for rel in ["by-root", "rd"] {
        assert_eq!(ids_of(&root_mount.join(rel)), root, "{rel}");
    }

    // What the container wrote downloads as any file does.
    let r = s
        .get(&format!("/containers/{cuid}/download?path=by-user"))
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "u\n"));
    let r = s
        .get(&format!("/containers/{cuid}/download?path=up.txt"))
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "uploadedmore\n"));
    let r = s
        .get(&format!("/containers/{root_cuid}/download?path=by-root"))
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "r\n"));

    // A file of the host's root in /app is nobody's inside: the container's root can read a
    // world-readable one but not write it (nor take it over).
    let planted = root_mount.join("host-root");
    std::fs::write(&planted, "host\n").unwrap();
    assert_eq!(ids_of(&planted), (0, 0));
    let (ok, out) = sh_in(
        &root_cuid,
        "0:0",
        "ls -n /app/host-root && cat /app/host-root",
    );
    assert!(ok, "{out}");
    assert!(out.contains(" 65534 "), "{out}");
    for attempt in [
        "echo x >> /app/host-root",
        "chown 0:0 /app/host-root",
        "chmod 666 /app/host-root",
    ] {
        let (ok, out) = sh_in(&root_cuid, "0:0", attempt);
        assert!(!ok, "{attempt}: {out}");
    }
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "host\n");
    assert_eq!(ids_of(&planted), (0, 0));
}
