//! Snapshots, restore and fork of `/app` (issue 19, docs/API.md §17): a real server and
//! Docker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The container's user (`DEFAULT_USER_UID`): `/app` is its, and root in a container has no
/// `CAP_DAC_OVERRIDE` there.
const APP_USER: &str = "1000:1000";

fn snapshots_of(s: &Server, cuid: &str) -> PathBuf {
    s.data_dir().join("snapshots").join(cuid)
}

/// Names under `DATA_DIR/snapshots/<cuid>` (finished snapshots and leftovers alike).
fn snapshot_dirs(s: &Server, cuid: &str) -> Vec<String> {
    match std::fs::read_dir(snapshots_of(s, cuid)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn take(s: &Server, cuid: &str, name: &str) -> Resp {
    s.post_json(
        &format!("/containers/{cuid}/snapshots"),
        &json!({"name": name}),
    )
    .await
}

fn docker_paused(cuid: &str) -> bool {
    docker_inspect(cuid).unwrap()["State"]["Paused"] == Value::Bool(true)
}

/// A snapshot, a change, a restore: the old files come back and the running container runs
/// again on them; names are checked, unique per container; a container's deletion removes
/// its snapshots.
#[tokio::test]
async fn a_snapshot_a_change_and_a_restore_bring_the_old_files_back() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("a.txt", b"one"), ("dir/b.txt", b"two")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = listing(&s.mount(&cuid));

    let since = chrono::Utc::now().timestamp() - 1;
    let r = take(&s, &cuid, "before-upgrade").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["name"], "before-upgrade");
    // Paused for the copy, then unpaused: Docker saw exactly that.
    let until = chrono::Utc::now().timestamp() + 1;
    let actions = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={cuid}"),
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = actions
        .lines()
        .filter(|a| *a == "pause" || *a == "unpause")
        .collect();
    assert_eq!(actions, ["pause", "unpause"]);
    assert_eq!(r.json["files"], 2, "{}", r.text);
    assert_eq!(r.json["bytes"], 6, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    // Unpaused after the copy, and the reconciler left it running.
    assert!(!docker_paused(&cuid));
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);

    take(&s, &cuid, "before-upgrade")
        .await
        .assert_error(409, "conflict", "SNAPSHOT_NAME_TAKEN");
    for bad in [
        json!(""),
        json!(".x"),
        json!("a/b"),
        json!(7),
        json!("x".repeat(65)),
    ] {
        let r = s
            .post_json(
                &format!("/containers/{cuid}/snapshots"),
                &json!({"name": bad}),
            )
            .await;
        r.assert_error(400, "validation_error", "INVALID_SNAPSHOT_NAME");
    }
    let r = s.get(&format!("/containers/{cuid}/snapshots")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["snapshots"][0]["id"], id.as_str());

    // A change.
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("a.txt", b"changed"), ("c.txt", b"new")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (ok, out) = sh_in(&cuid, "root", "cat /app/a.txt");
    assert!(ok && out == "changed", "{out}");

    let r = s
        .post_json(
            &format!("/containers/{cuid}/restore"),
            &json!({"snapshot": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(listing(&s.mount(&cuid)), before);
    // The restarted container sees the restored tree.
    let (ok, out) = sh_in(&cuid, "root", "cat /app/a.txt /app/dir/b.txt; ls /app");
    assert!(ok, "{out}");
    assert_eq!(out, "onetwoa.txt\ndir\n");

    s.post_json(
        &format!("/containers/{cuid}/restore"),
        &json!({"snapshot": "s0123456789abcdef0123456789abcdef"}),
    )
    .await
    .assert_error(404, "not_found", "SNAPSHOT_NOT_FOUND");

    // Delete one, then the container with another.
    let r = s
        .delete(&format!("/containers/{cuid}/snapshots/{id}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(snapshot_dirs(&s, &cuid).is_empty());
    let r = s
        .delete(&format!("/containers/{cuid}/snapshots/{id}"))
        .await;
    r.assert_error(404, "not_found", "SNAPSHOT_NOT_FOUND");
    let r = take(&s, &cuid, "second").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(snapshot_dirs(&s, &cuid).len(), 1);
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!snapshots_of(&s, &cuid).exists());
}

/// A fork runs with a copy of the source's `/app` (now, or of a snapshot), its spec the
/// source's plus the overrides; a bad override makes no container.
#[tokio::test]
async fn a_fork_runs_with_the_copied_files() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let r = s.upload_zip(&cuid, "", zip_of(&[("a.txt", b"snap")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = take(&s, &cuid, "v1").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = s.upload_zip(&cuid, "", zip_of(&[("a.txt", b"now")])).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let count = s.count_containers().await;
    let r = s
        .post_json(
            &format!("/containers/{cuid}/fork"),
            &json!({"spec": {"image": 5}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .post_json(
            &format!("/containers/{cuid}/fork"),
            &json!({"snapshot": "nope"}),
        )
        .await;
    r.assert_error(404, "not_found", "SNAPSHOT_NOT_FOUND");
    assert_eq!(s.count_containers().await, count);

    // Now: a copy of the running source, which keeps running.
    let r = s
        .post_json(
            &format!("/containers/{cuid}/fork"),
            &json!({"spec": {"env": {"FORKED": "yes"}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    let now = r.json["cuid"].as_str().unwrap().to_owned();
    assert_ne!(now, cuid);
    let (ok, out) = sh_in(&now, "root", "cat /app/a.txt; echo -n $FORKED");
    assert!(ok && out == "nowyes", "{out}");
    assert!(!docker_paused(&cuid));

    // From the snapshot, not started.
    let r = s
        .post_json(
            &format!("/containers/{cuid}/fork"),
            &json!({"snapshot": id, "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "created", "{}", r.text);
    let from_snap = r.json["cuid"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read(s.mount(&from_snap).join("a.txt")).unwrap(),
        b"snap"
    );
    s.start_container(&from_snap).await;
    let (ok, out) = sh_in(&from_snap, "root", "cat /app/a.txt");
    assert!(ok && out == "snap", "{out}");
}

/// `kill -9` at points of a restore (the upload commit's test pause,
/// `CM_TEST_COMMIT_PAUSE_AFTER`: journal written, `/app` exchanged, commit recorded): after
/// the restart `/app` is the whole old tree or the whole snapshot, and staging is empty.
#[tokio::test]
async fn a_crash_during_a_restore_leaves_the_old_tree_or_the_snapshot() {
    let mut s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let snap_files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("d{}/f{i}", i % 5), format!("snap {i}").into_bytes()))
        .collect();
    let r = s.upload_zip(&cuid, "", zip_owned(&snap_files)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let snap_tree = listing(&s.mount(&cuid));
    let r = take(&s, &cuid, "snap").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let old_files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("o{}/g{i}", i % 3), format!("old {i}").into_bytes()))
        .collect();
    let r = s.upload_zip(&cuid, "", zip_owned(&old_files)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let old_tree = listing(&s.mount(&cuid));
    assert_ne!(old_tree, snap_tree);

    let mut pauses = 0;
    for point in ["0", "1", "committed"] {
        s.stop();
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", Some(point));
        s.start_again().await;
        let request = s
            .request(
                reqwest::Method::POST,
                &format!("/containers/{cuid}/restore"),
            )
            .json(&json!({"snapshot": id}))
            .send();
        let pending = tokio::spawn(request);
        pauses += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.server_log().matches("test pause: commit paused").count() < pauses {
            assert!(
                Instant::now() < deadline,
                "the restore never paused at {point}"
            );
            assert!(!pending.is_finished(), "the restore ended before {point}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.kill9();
        let _ = pending.await;
        s.set_env("CM_TEST_COMMIT_PAUSE_AFTER", None);
        s.start_again().await;
        let tree = listing(&s.mount(&cuid));
        let want = if point == "committed" {
            &snap_tree
        } else {
            &old_tree
        };
        assert!(
            tree == *want,
            "after a crash at {point}: /app is neither the whole old tree nor the snapshot"
        );
        let staging: Vec<_> = std::fs::read_dir(s.data_dir().join("staging"))
            .unwrap()
            .collect();
        assert!(staging.is_empty(), "staging leftovers after {point}");
        if point == "committed" {
            // Back to the old tree for the next round.
            let r = s.upload_zip(&cuid, "", zip_owned(&old_files)).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    // The snapshot itself is intact and restores.
    let r = s
        .post_json(
            &format!("/containers/{cuid}/restore"),
            &json!({"snapshot": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(listing(&s.mount(&cuid)), snap_tree);
}

/// A hostile `/app`: a deep tree, a FIFO, a symlink out, hard links, more names than the
/// entry cap. Each snapshots within the caps (specials skipped, links kept as links) or
/// fails with `413 SNAPSHOT_TOO_LARGE`, leaving nothing, the container unpaused and the
/// server serving.
#[tokio::test]
async fn a_hostile_app_snapshots_within_its_caps_or_fails_cleanly() {
    let s = Server::start_with(Options {
        env: vec![("SNAPSHOT_MAX_ENTRIES".into(), "500".into())],
        ..Options::default()
    })
    .await;
    let cuid = s.running_sleeper().await;
    let (ok, out) = sh_in(
        &cuid,
        APP_USER,
        "cd /app && mkfifo fifo && ln -s /etc/shadow out && ln -s / root && \
         echo data > f && ln f g && mkdir d && ln f d/h",
    );
    assert!(ok, "{out}");
    let r = take(&s, &cuid, "odd").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["files"], 1, "{}", r.text);
    assert_eq!(r.json["bytes"], 5, "{}", r.text);
    assert_eq!(r.json["skipped"], 1, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    let copy = snapshots_of(&s, &cuid).join(id);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::read_link(copy.join("out")).unwrap(),
        PathBuf::from("/etc/shadow")
    );
    assert!(!copy.join("fifo").exists());
    let ino = std::fs::metadata(copy.join("f")).unwrap().ino();
    assert_eq!(std::fs::metadata(copy.join("g")).unwrap().ino(), ino);
    assert_eq!(std::fs::metadata(copy.join("d/h")).unwrap().ino(), ino);

    // Deeper than the depth cap.
    let (ok, out) = sh_in(
        &cuid,
        APP_USER,
        "cd /app && mkdir deep && cd deep && i=0; while [ $i -lt 300 ]; do mkdir a; cd a; i=$((i+1)); done",
    );
    assert!(ok, "{out}");
    let r = take(&s, &cuid, "deep").await;
    r.assert_error(413, "payload_too_large", "SNAPSHOT_TOO_LARGE");
    assert_eq!(
        snapshot_dirs(&s, &cuid).len(),
        1,
        "a half-made snapshot was kept"
    );
    assert!(!docker_paused(&cuid));
    let (ok, out) = sh_in(&cuid, APP_USER, "rm -rf /app/deep");
    assert!(ok, "{out}");

    // More names than SNAPSHOT_MAX_ENTRIES (500).
    let (ok, out) = sh_in(
        &cuid,
        APP_USER,
        "mkdir /app/many && cd /app/many && i=0; while [ $i -lt 600 ]; do : > f$i; i=$((i+1)); done",
    );
    assert!(ok, "{out}");
    let r = take(&s, &cuid, "many").await;
    r.assert_error(413, "payload_too_large", "SNAPSHOT_TOO_LARGE");
    assert_eq!(r.json["details"]["cap"], "entries", "{}", r.text);
    assert_eq!(snapshot_dirs(&s, &cuid).len(), 1);
    assert!(!docker_paused(&cuid));
    // A fork of it fails the same way, and makes no container.
    let count = s.count_containers().await;
    let r = s
        .post_json(&format!("/containers/{cuid}/fork"), &json!({}))
        .await;
    r.assert_error(413, "payload_too_large", "SNAPSHOT_TOO_LARGE");
    assert_eq!(s.count_containers().await, count);
    assert_eq!(s.get("/healthz").await.status, 200);
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
}

/// A tenant's `max_disk` counts its snapshots' bytes: the snapshot that would pass it is
/// `403 QUOTA_EXCEEDED` and leaves nothing. The container is capped (`resources.disk`): its
/// snapshot copies out of its mounted image, and a restore stages inside it.
#[tokio::test]
async fn a_tenants_disk_quota_counts_snapshot_bytes() {
    let s = Server::start().await;
    s.put_tenant("snapper", &json!({"max_disk": "48m"})).await;
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER, "tenant": "snapper",
            "resources": {"disk": "32m"}
        }))
        .await;
    let (ok, out) = sh_in(
        &cuid,
        APP_USER,
        "head -c 10485760 /dev/urandom > /app/big && echo -n v1 > /app/v",
    );
    assert!(ok, "{out}");
    let r = take(&s, &cuid, "one").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let bytes = r.json["bytes"].as_i64().unwrap();
    assert_eq!(bytes, 10485760 + 2);
    let r = s.get("/tenants/snapper").await;
    assert_eq!(r.json["usage"]["disk"], (32 << 20) + bytes, "{}", r.text);

    let r = take(&s, &cuid, "two").await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_disk", "{}", r.text);
    assert_eq!(snapshot_dirs(&s, &cuid), vec![id.clone()]);

    // A restore inside the capped image.
    let (ok, out) = sh_in(&cuid, APP_USER, "echo -n v2 > /app/v");
    assert!(ok, "{out}");
    let r = s
        .post_json(
            &format!("/containers/{cuid}/restore"),
            &json!({"snapshot": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (ok, out) = sh_in(&cuid, "root", "cat /app/v");
    assert!(ok && out == "v1", "{out}");

    // Freed by a delete.
    let r = s
        .delete(&format!("/containers/{cuid}/snapshots/{id}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = take(&s, &cuid, "two").await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Another tenant's container is `404` on every snapshot route; an `operate` token may list
/// but not take, restore, fork or delete (`write`).
#[tokio::test]
async fn snapshots_keep_to_their_tenant_and_need_write() {
    let s = Server::start().await;
    s.put_tenant("ta", &json!({})).await;
    s.put_tenant("tb", &json!({})).await;
    let cuid = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER, "tenant": "ta"}))
        .await;
    let r = take(&s, &cuid, "mine").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let other = s.token("write", Some("tb")).await;
    let snaps = format!("/containers/{cuid}/snapshots");
    other
        .get(&snaps)
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    for (path, body) in [
        (snaps.clone(), json!({"name": "x"})),
        (
            format!("/containers/{cuid}/restore"),
            json!({"snapshot": id}),
        ),
        (format!("/containers/{cuid}/fork"), json!({})),
    ] {
        other
            .post_json(&path, &body)
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    }
    other.delete(&format!("{snaps}/{id}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );

    let operate = s.token("operate", Some("ta")).await;
    let r = operate.get(&snaps).await;
    assert_eq!(r.status, 200, "{}", r.text);
    operate
        .post_json(&snaps, &json!({"name": "y"}))
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    operate
        .delete(&format!("{snaps}/{id}"))
        .await
        .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    // The tenant's own write token may.
    let mine = s.token("write", Some("ta")).await;
    let r = mine
        .post_json(&format!("/containers/{cuid}/fork"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .get(&format!("/containers/{}", r.json["cuid"].as_str().unwrap()))
        .await;
    assert_eq!(r.json["tenant"], "ta", "{}", r.text);
}
