//! `read_only` (issue 18): a container whose root filesystem Docker mounts read-only, with
//! `/app` writable and `/tmp` a tmpfs capped at `resources.tmp`. Checked from inside the
//! container (`docker exec`), in Docker's own record, and on the server's side: a full
//! `/tmp` leaves the server healthy and its database writable.

use serde_json::{json, Value};

use crate::common::*;

/// The size of `/tmp` in KiB as `df` inside the container sees it.
fn tmp_size_kib(cuid: &str) -> u64 {
    let (ok, out) = sh_in(cuid, "0:0", "df -k /tmp | tail -n 1");
    assert!(ok, "{out}");
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("df: {out}"))
}

#[tokio::test]
async fn a_read_only_container_writes_only_to_app_and_a_capped_tmp() {
    let s = Server::start().await;
    // As root: a refused write is the read-only filesystem's doing, not a permission.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "user": "0:0", "read_only": true,
                    "resources": {"tmp": "4m"}, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["read_only"], true, "{}", r.text);
    assert_eq!(r.json["resources"]["tmp"], "4m", "{}", r.text);
    assert_eq!(r.json["resources"]["tmp_bytes"], 4 << 20, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();

    let info = docker_inspect(&cuid).expect("the container exists");
    assert_eq!(info["HostConfig"]["ReadonlyRootfs"], true, "{info}");
    let tmpfs = info["HostConfig"]["Tmpfs"]["/tmp"].as_str().unwrap_or("");
    for opt in ["nodev", "nosuid", "size=4194304"] {
        assert!(tmpfs.contains(opt), "{opt} missing from {tmpfs:?}");
    }

    for path in ["/etc/x", "/x", "/root/x", "/bin/x"] {
        let (ok, out) = sh_in(&cuid, "0:0", &format!("echo x > {path}"));
        assert!(!ok, "a write to {path} must fail: {out}");
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }
    let (ok, out) = sh_in(
        &cuid,
        "0:0",
        "echo app > /app/written && echo tmp > /tmp/written",
    );
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(s.mount(&cuid).join("written")).unwrap(),
        "app\n"
    );
    // `/tmp` is writable by any uid (sticky, like every /tmp).
    let (ok, out) = sh_in(&cuid, "1000:1000", "echo u > /tmp/mine && cat /tmp/mine");
    assert!(ok && out.trim() == "u", "{out}");

    // The cap: 4 MiB, and a writer of 8 MiB stops at it with ENOSPC.
    assert_eq!(tmp_size_kib(&cuid), 4096);
    let (ok, out) = sh_in(
        &cuid,
        "0:0",
        "dd if=/dev/zero of=/tmp/big bs=1048576 count=8",
    );
    assert!(!ok, "writing past the cap must fail: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let (ok, out) = sh_in(&cuid, "0:0", "wc -c < /tmp/big");
    let written: u64 = out.trim().parse().unwrap_or(u64::MAX);
    assert!(ok && written <= 4 << 20, "{out}");

    // The server is unaffected: healthy, and its database takes writes.
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ok", "{}", r.text);
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["full"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["tags"], json!(["full"]), "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
}

#[tokio::test]
async fn read_only_is_validated_and_a_patch_recreates_the_running_container() {
    let s = Server::start().await;
    for (body, code) in [
        (json!({"read_only": "yes"}), "INVALID_READ_ONLY"),
        (json!({"resources": {"tmp": "lots"}}), "INVALID_TMP"),
        (json!({"resources": {"tmp": 1024}}), "TMP_TOO_SMALL"),
    ] {
        let mut body = body;
        body["image"] = json!(BUSYBOX);
        let r = s.post_json("/containers", &body).await;
        r.assert_error(400, "validation_error", code);
    }
    assert_eq!(s.count_containers().await, 0);

    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER, "user": "0:0"}))
        .await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["read_only"], false, "the default: {}", r.text);
    assert_eq!(r.json["resources"]["tmp"], Value::Null, "{}", r.text);
    let (ok, out) = sh_in(&cuid, "0:0", "echo x > /etc/x");
    assert!(ok, "a writable root by default: {out}");
    let first_id = docker_inspect(&cuid).unwrap()["Id"].clone();

    // A refused patch changes nothing.
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"read_only": 1}))
        .await;
    r.assert_error(400, "validation_error", "INVALID_READ_ONLY");

    // On: recreated (the write to /etc/x went with the old container), /tmp the default 64m.
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"read_only": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(
        r.json["observed_generation"], r.json["generation"],
        "{}",
        r.text
    );
    let info = docker_inspect(&cuid).unwrap();
    assert_ne!(info["Id"], first_id, "recreated");
    assert_eq!(info["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(tmp_size_kib(&cuid), 64 * 1024);
    let (ok, out) = sh_in(&cuid, "0:0", "echo x > /etc/y");
    assert!(!ok && out.contains("Read-only file system"), "{out}");

    // A new `/tmp` size alone is a change too.
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"resources": {"tmp": "2m"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["observed_generation"], r.json["generation"],
        "{}",
        r.text
    );
    assert_eq!(tmp_size_kib(&cuid), 2048);

    // Off again: a writable root, and `/tmp` is the image's own directory.
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"read_only": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["read_only"], false, "{}", r.text);
    assert_eq!(
        r.json["resources"]["tmp"], "2m",
        "kept, without effect: {}",
        r.text
    );
    let info = docker_inspect(&cuid).unwrap();
    assert_eq!(info["HostConfig"]["ReadonlyRootfs"], false);
    assert!(
        info["HostConfig"]["Tmpfs"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{}",
        info["HostConfig"]["Tmpfs"]
    );
    let (ok, out) = sh_in(&cuid, "0:0", "echo x > /etc/z");
    assert!(ok, "{out}");
}
