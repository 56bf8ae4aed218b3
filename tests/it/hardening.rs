//! Limits a client or a container cannot talk its way past: the total size of a container's
//! env, the bytes the `/events` ring keeps, and the defaults every container runs under (memory,
//! CPUs, capabilities, no new privileges, a closed `DATA_DIR/mounts`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::common::*;

/// `n` variables of `len` bytes each (names `V000`…).
fn env_of(n: usize, len: usize) -> Value {
    let map: Map<String, Value> = (0..n)
        .map(|i| (format!("V{i:03}"), json!("x".repeat(len))))
        .collect();
    Value::Object(map)
}

/// The old server took 1,024 variables of 128 KiB each: every copy of the representation
/// (each `/events` entry) carried all of it. The total is capped per container, even when an
/// operator allows bodies far larger than that.
#[tokio::test]
async fn an_env_over_the_cap_is_refused_and_nothing_is_stored() {
    let s = Server::start_with(Options {
        env: vec![("MAX_BODY_BYTES".into(), (16 << 20).to_string())],
        ..Default::default()
    })
    .await;
    // 40 × 128 KiB = 5 MiB, well inside the body limit.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "env": env_of(40, 128 * 1024)}),
        )
        .await;
    r.assert_error(400, "validation_error", "ENV_TOO_LARGE");
    assert_eq!(r.json["details"]["limit"], 262_144, "{}", r.text);
    assert_eq!(
        r.json["details"]["size"],
        40 * (4 + 128 * 1024),
        "{}",
        r.text
    );
    assert!(!r.text.contains("xxxx"), "values are not echoed");
    assert_eq!(s.count_containers().await, 0);
    let mounts: Vec<_> = std::fs::read_dir(s.data_dir().join("mounts"))
        .unwrap()
        .collect();
    assert!(mounts.is_empty(), "no /app directory left: {mounts:?}");

    // Exactly at the cap (names plus values): accepted.
    let at_cap = json!({"A": "x".repeat(131_072), "B": "x".repeat(131_070)});
    let r = s
        .post_json("/containers", &json!({"image": BUSYBOX, "env": at_cap}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();

    // One byte more through a patch: refused, the stored spec unchanged.
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"env": {"C": ""}}))
        .await;
    r.assert_error(400, "validation_error", "ENV_TOO_LARGE");
    assert_eq!(r.json["details"]["size"], 262_145, "{}", r.text);
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["generation"], 1, "{}", r.text);
    assert!(r.json["env"].get("C").is_none());
}

/// Waits until the newest event is the container at `generation`; returns its id. (A reader
/// with an id from the future gets one `reset` naming the newest id; the newest event is
/// always kept.)
async fn wait_for_event(s: &Server, generation: i64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reset = read_events(s, u64::MAX / 2, u64::MAX).await;
        let latest = reset[0].0;
        if latest > 0 {
            let newest = read_events(s, latest - 1, latest).await;
            if newest[0].2["generation"] == generation {
                return latest;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event for generation {generation}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each event holds a whole representation, env included. With `EVENTS_MAX_BYTES` of 1 MiB
/// and a 256 KiB env, a few tag patches push the early events out (a reader that asks for
/// them gets `reset`), while a recent id still resumes. The old ring kept 1,024 events
/// whatever their size.
#[tokio::test]
async fn the_event_ring_keeps_only_its_byte_budget() {
    let s = Server::start_with(Options {
        env: vec![("EVENTS_MAX_BYTES".into(), (1 << 20).to_string())],
        ..Default::default()
    })
    .await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "env": env_of(2, 128 * 1024 - 8)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let first = wait_for_event(&s, 1).await;
    // Four events of ~256 KiB fill the budget; one event per patch.
    let mut latest = first;
    for generation in 2..=6 {
        let r = s
            .patch_json(
                &format!("/containers/{cuid}"),
                &json!({"tags": [format!("t{generation}")]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        latest = wait_for_event(&s, generation).await;
    }
    // The early event is past the byte budget: reset.
    let early = read_events(&s, first - 1, latest).await;
    assert_eq!(early.len(), 1, "{early:?}");
    assert_eq!(early[0].1, "reset", "an early id must be dropped");
    // A recent one resumes with what followed it.
    let recent: Vec<(u64, String)> = read_events(&s, latest - 2, latest)
        .await
        .into_iter()
        .map(|(id, kind, _)| (id, kind))
        .collect();
    assert_eq!(
        recent,
        vec![
            (latest - 1, "container".into()),
            (latest, "container".into())
        ]
    );
}

fn exec_in(cuid: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", cuid])
        .args(cmd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A container running as root used to keep `CAP_MKNOD` and had no memory or CPU limit: it
/// could plant a block device node for the host's disk in `/app` (on the host's filesystem)
/// and take the whole host. Now: the default limits, the capability drops and
/// no-new-privileges are in Docker's own record, `mknod` fails inside, and `DATA_DIR/mounts`
/// is closed to other host users (made so even when it was left wider).
#[tokio::test]
async fn a_root_container_cannot_make_devices_and_runs_under_default_limits() {
    let dir = std::sync::Arc::new(
        tempfile::Builder::new()
            .prefix("cm-test-")
            .tempdir()
            .unwrap(),
    );
    let mounts = dir.path().join("data/mounts");
    std::fs::create_dir_all(&mounts).unwrap();
    std::fs::set_permissions(&mounts, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Server::start_with(Options {
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    let mode = std::fs::metadata(&mounts).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "DATA_DIR/mounts is put back to 0700: {mode:o}");

    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": ["sh", "-c", "exec sleep 3600"], "user": "0:0", "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    // The representation shows the spec as sent: no limits were asked for.
    assert_eq!(r.json["resources"]["memory"], Value::Null, "{}", r.text);
    assert_eq!(r.json["resources"]["cpus"], Value::Null, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();

    let (ok, out) = exec_in(&cuid, &["id", "-u"]);
    assert!(ok && out.trim() == "0", "runs as root: {out}");
    let (ok, out) = exec_in(&cuid, &["mknod", "/app/disk", "b", "8", "0"]);
    assert!(!ok, "mknod must fail: {out}");
    assert!(out.contains("not permitted"), "{out}");
    assert!(!mounts.join(&cuid).join("disk").exists());

    let info = docker_inspect(&cuid).expect("the container exists");
    let host = &info["HostConfig"];
    assert_eq!(host["Memory"], 1i64 << 30, "DEFAULT_MEMORY 1g");
    // DEFAULT_CPUS 1.0 (every host has at least one CPU, so no clamping here).
    assert_eq!(host["NanoCpus"].as_i64(), Some(1_000_000_000));
    let dropped: Vec<&str> = host["CapDrop"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(|c| c.trim_start_matches("CAP_"))
        .collect();
    for cap in [
        "MKNOD",
        "NET_RAW",
        "SETFCAP",
        "AUDIT_WRITE",
        "SYS_CHROOT",
        "FSETID",
    ] {
        assert!(dropped.contains(&cap), "{cap} not dropped: {dropped:?}");
    }
    let security: Vec<&str> = host["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        security.iter().any(|o| o.starts_with("no-new-privileges")),
        "{security:?}"
    );
}
