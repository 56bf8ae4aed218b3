//! `resources.disk` (issue 18): `/app` in a loop-mounted ext4 image of its own. A writer in
//! the container stops at the cap with `ENOSPC` and the server stays healthy; an upload past
//! the cap is `413 DISK_QUOTA_EXCEEDED` and changes nothing; the image comes back after a
//! restart with it unmounted (as after a reboot); a delete leaves no mount and no image.
//! And the container logs stay under `CONTAINER_LOG_MAX_SIZE` × `CONTAINER_LOG_MAX_FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Runs `sh -c script` in the container as root; (exit status ok, stdout + stderr).
fn sh_in(cuid: &str, script: &str) -> (bool, String) {
    crate::common::sh_in(cuid, "0:0", script)
}

fn volume(s: &Server, cuid: &str) -> PathBuf {
    s.data_dir().join("disks").join(cuid)
}

/// The options of the mount on `dir`, if something is mounted there.
fn mount_options(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&dir.as_ref())).then(|| f[5].to_owned())
    })
}

#[tokio::test]
async fn a_disk_cap_stops_writers_and_uploads_and_goes_with_the_container() {
    // Zeros inflate far past the default ratio limit: this test wants the bytes on disk.
    let s = Server::start_with(Options {
        env: vec![("ZIP_MAX_RATIO".into(), "100000".into())],
        ..Default::default()
    })
    .await;
    for (disk, code) in [
        (json!("lots"), "INVALID_DISK"),
        (json!(true), "INVALID_DISK"),
        (json!("8m"), "DISK_TOO_SMALL"),
    ] {
        let r = s
            .post_json(
                "/containers",
                &json!({"image": BUSYBOX, "resources": {"disk": disk}}),
            )
            .await;
        r.assert_error(400, "validation_error", code);
    }

    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "user": "0:0",
                    "resources": {"disk": "32m"}, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["resources"]["disk"], "32m", "{}", r.text);
    assert_eq!(r.json["resources"]["disk_bytes"], 32 << 20, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let vol = volume(&s, &cuid);
    let opts = mount_options(&vol).expect("the image is mounted");
    assert!(opts.contains("nodev") && opts.contains("nosuid"), "{opts}");

    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["disk_usage"]["cap_bytes"], 32 << 20, "{}", r.text);
    let used_before = r.json["disk_usage"]["used_bytes"].as_u64().unwrap();

    // An upload that fits lands in the container's /app.
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("keep.txt", b"old"), ("d/x", b"x")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (ok, out) = sh_in(&cuid, "cat /app/keep.txt");
    assert!(ok && out == "old", "{out}");

    // A writer stops at the cap.
    let (ok, out) = sh_in(&cuid, "dd if=/dev/zero of=/app/big bs=1048576 count=64");
    assert!(!ok, "writing past the cap must fail: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let (_, out) = sh_in(&cuid, "wc -c < /app/big");
    let written: u64 = out.trim().parse().unwrap();
    assert!(written > 16 << 20 && written <= 32 << 20, "{written}");
    // The usage says so, in the representation and in /stats.
    let r = s.get(&format!("/containers/{cuid}/stats")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["disk"]["cap_bytes"], 32 << 20, "{}", r.text);
    assert!(r.json["disk"]["used_bytes"].as_u64().unwrap() >= used_before + written);
    assert!(r.json["disk"]["available_bytes"].as_u64().unwrap() < 1 << 20);

    // The server is unaffected: healthy, and its database takes writes.
    let r = s.get("/healthz").await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("ok")));
    let other = s.create_sleeper().await;
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["full"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // An upload past the cap: 413, and /app as it was (nothing placed, nothing lost),
    // nothing left in the image's staging area.
    let (ok, out) = sh_in(&cuid, "rm /app/big");
    assert!(ok, "{out}");
    let zeros = vec![0u8; 40 << 20];
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("keep.txt", b"new"), ("d/x", b"y"), ("huge.bin", &zeros)]),
        )
        .await;
    r.assert_error(413, "payload_too_large", "DISK_QUOTA_EXCEEDED");
    let app = vol.join("app");
    assert_eq!(std::fs::read(app.join("keep.txt")).unwrap(), b"old");
    assert_eq!(std::fs::read(app.join("d/x")).unwrap(), b"x");
    assert!(!app.join("huge.bin").exists());
    assert_eq!(std::fs::read_dir(vol.join("staging")).unwrap().count(), 0);

    // The cap may grow (online, the container recreated on it), never shrink or go.
    for disk in [json!("16m"), json!(null)] {
        let r = s
            .patch_json(
                &format!("/containers/{cuid}"),
                &json!({"resources": {"disk": disk}}),
            )
            .await;
        r.assert_error(400, "validation_error", "DISK_CHANGE_REFUSED");
    }
    let r = s
        .patch_json(
            &format!("/containers/{other}"),
            &json!({"resources": {"disk": "1g"}}),
        )
        .await;
    r.assert_error(400, "validation_error", "DISK_CHANGE_REFUSED");
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"resources": {"disk": "64m"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(60),
            |r| {
                r.json["status"] == "running"
                    && r.json["observed_generation"] == r.json["generation"]
            },
        )
        .await;
    assert_eq!(r.json["disk_usage"]["cap_bytes"], 64 << 20, "{}", r.text);
    let (ok, out) = sh_in(
        &cuid,
        "dd if=/dev/zero of=/app/big bs=1048576 count=40 2>/dev/null && cat /app/keep.txt",
    );
    assert!(ok && out.ends_with("old"), "{out}");

    // Deleted: no mount, no image, no mount point.
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(mount_options(&vol), None);
    assert!(!vol.exists());
    assert!(!s
        .data_dir()
        .join("disks")
        .join(format!("{cuid}.img"))
        .exists());
    assert_eq!(s.delete(&format!("/containers/{other}")).await.status, 200);
}

#[tokio::test]
async fn an_unmounted_image_is_mounted_again_before_the_start() {
    let mut s = Server::start_with(Options {
        env: vec![("DEFAULT_DISK".into(), "16m".into())],
        ..Default::default()
    })
    .await;
    // DEFAULT_DISK applies to a container created without `resources.disk`.
    let cuid = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER, "user": "0:0"}))
        .await;
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("keep.txt", b"kept")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["resources"]["disk"], "16m", "{}", r.text);

    // As after a reboot: the server down, the image not mounted. And an image without a row
    // (a crash between making it and storing the container), mounted: removed at start-up.
    let vol = volume(&s, &cuid);
    s.kill9();
    run_ok(Command::new("umount").arg(&vol));
    assert_eq!(mount_options(&vol), None);
    let stray = "c00000000-0000-4000-8000-000000000000";
    let stray_image = s.data_dir().join("disks").join(format!("{stray}.img"));
    let stray_vol = volume(&s, stray);
    std::fs::copy(
        s.data_dir().join("disks").join(format!("{cuid}.img")),
        &stray_image,
    )
    .unwrap();
    std::fs::create_dir(&stray_vol).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&stray_image)
            .arg(&stray_vol),
    );
    s.start_again().await;
    assert_eq!(mount_options(&stray_vol), None);
    assert!(!stray_vol.exists() && !stray_image.exists());
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["disk_usage"], json!(null), "{}", r.text);

    s.start_container(&cuid).await;
    assert!(mount_options(&vol).is_some());
    let (ok, out) = sh_in(&cuid, "cat /app/keep.txt");
    assert!(ok && out == "kept", "{out}");

    // As Docker at boot, restarting containers on its own before the server mounted the
    // image: the start fails (the bind source is missing), and nothing is made on the
    // host's disk beneath the mount point. The server then mounts it and starts it.
    s.kill9();
    run_ok(Command::new("docker").args(["stop", "-t", "0", &cuid]));
    run_ok(Command::new("umount").arg(&vol));
    let out = Command::new("docker")
        .args(["start", &cuid])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started on an unmounted image");
    assert!(!vol.join("app").exists());
    s.start_again().await;
    // (The store may still say `running` from before: Docker's word is what counts.)
    wait_until(
        Duration::from_secs(60),
        "the reconciler to start it",
        || docker_inspect(&cuid).is_some_and(|i| i["State"]["Running"] == true),
    )
    .await;
    let (ok, out) = sh_in(&cuid, "cat /app/keep.txt");
    assert!(ok && out == "kept", "{out}");

    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
    assert_eq!(mount_options(&vol), None);
    assert!(!vol.exists());
}

#[tokio::test]
async fn a_log_flood_stays_under_the_log_cap() {
    let s = Server::start_with(Options {
        env: vec![
            ("CONTAINER_LOG_MAX_SIZE".into(), "100k".into()),
            ("CONTAINER_LOG_MAX_FILE".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    // About 5 MB of lines, then a marker, then quiet.
    let flood = "yes 0123456789012345678901234567890123456789012345678 | head -c 5000000; \
                 echo flood-done; exec sleep 3600";
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": ["sh", "-c", flood]}))
        .await;
    let info = docker_inspect(&cuid).unwrap();
    let log_path = PathBuf::from(info["LogPath"].as_str().unwrap());
    let dir = log_path.parent().unwrap().to_path_buf();
    let logs = || -> Vec<(PathBuf, u64)> {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
            .map(|e| (e.path(), e.metadata().unwrap().len()))
            .collect()
    };
    wait_until(Duration::from_secs(60), "the flood to end", || {
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("flood-done"))
    })
    .await;
    let files = logs();
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    // Each file is rotated once it passes max-size (by at most one line of ~130 bytes).
    assert!(files.len() <= 2, "{files:?}");
    assert!(total <= 2 * (100 << 10) + 1024, "{total} bytes: {files:?}");
    let r = s.get("/healthz").await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("ok")));
    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
}

/// A crash in the middle of a commit into a capped `/app` (its journal lives in the image's
/// own `staging/`): rolled back at the next start while the image stays mounted, and, when
/// the image was unmounted meanwhile (a reboot), right after it is mounted again.
#[tokio::test]
async fn a_crash_during_a_capped_upload_is_rolled_back_inside_the_image() {
    let mut s = Server::start().await;
    let cuid = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER, "resources": {"disk": "16m"}}))
        .await;
    let old = zip_of(&[("a", b"old a"), ("b/x", b"old x")]);
    let new = zip_of(&[("a", b"new a"), ("b/x", b"new x"), ("c", b"new c")]);
    let r = s.upload_zip(&cuid, "", old).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let vol = volume(&s, &cuid);
    let app = vol.join("app");
    let want = listing(&app);

    for (round, unmount) in [(1, false), (2, true)] {
        s.stop();
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", Some("1"));
        s.start_again().await;
        let pending = tokio::spawn(s.upload_request(&cuid, "", new.clone()).send());
        wait_until(Duration::from_secs(30), "the commit to pause", || {
            s.server_log().matches("test pause: commit paused").count() >= round
        })
        .await;
        // One item of the new tree is in place, the journal says what to undo.
        assert_eq!(std::fs::read(app.join("a")).unwrap(), b"new a");
        s.kill9();
        let _ = pending.await;
        if unmount {
            run_ok(Command::new("umount").arg(&vol));
        }
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", None);
        s.start_again().await;
        // A file route mounts it (when needed) and so rolls back before it reads.
        let r = s.get(&format!("/containers/{cuid}/files")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(listing(&app), want, "after crash {round}");
        assert_eq!(std::fs::read_dir(vol.join("staging")).unwrap().count(), 0);
    }
    assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
    assert!(!vol.exists());
}
