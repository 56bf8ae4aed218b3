//! `isolation: "gvisor"` (issue 18): one container under gVisor's `runsc` through everything
//! the server does with a container (files both ways, the exec and console terminals with
//! resize, signals and exit codes, logs, stats, actions, drift repair, delete), and a failed
//! `runsc` start that leaves no sandbox behind. Needs `runsc` registered with the daemon
//! (scripts/setup-gvisor.sh, run by scripts/test.sh).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const LONG: Duration = Duration::from_secs(30);

/// The processes whose command line names Docker container `id` (runsc's sandbox and gofer,
/// the containerd shim), as `pid: cmdline`.
fn runsc_processes(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(id) {
            out.push(format!("{name}: {}", &cmdline[..cmdline.len().min(120)]));
        }
    }
    out
}

/// `/healthz` must offer gVisor: without it these tests would prove nothing.
async fn assert_gvisor_offered(s: &Server) {
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let runtimes: Vec<&str> = r.json["runtimes"]
        .as_array()
        .unwrap_or_else(|| panic!("no runtimes: {}", r.text))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        runtimes.contains(&"runc") && runtimes.contains(&"runsc"),
        "the daemon does not offer runsc: run scripts/setup-gvisor.sh; {}",
        r.text
    );
    assert_eq!(
        r.json["isolations"],
        json!(["runc", "gvisor"]),
        "{}",
        r.text
    );
}

/// Runs `cmd` in the container through the exec terminal (no TTY); (exit code, stdout).
async fn exec(s: &Server, cuid: &str, cmd: &str) -> (i64, String) {
    let mut t = Term::open(s, &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd))).await;
    let code = t.until_exit(LONG).await;
    assert!(t.errors.is_empty(), "{cmd}: {:?}", t.errors);
    (code, t.out())
}

fn docker_started_at(cuid: &str) -> Option<Value> {
    docker_inspect(cuid)
        .and_then(|v| (v["State"]["Status"] == "running").then(|| v["State"]["StartedAt"].clone()))
}

#[tokio::test]
async fn a_gvisor_container_passes_the_files_terminal_actions_and_drift_flow() {
    let s = Server::start_with(Options {
        env: vec![("RESYNC_INTERVAL".into(), "2".into())],
        ..Default::default()
    })
    .await;
    assert_gvisor_offered(&s).await;

    // Made under runc (the default), then moved to gVisor by a patch: recreated.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "start": true,
                    "command": ["sh", "-c", "echo gv-main-line; exec sleep 3600"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["isolation"], "runc", "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let runc_id = docker_inspect(&cuid).unwrap()["Id"].clone();
    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"isolation": "gvisor"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["isolation"], "gvisor", "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(
        r.json["observed_generation"], r.json["generation"],
        "{}",
        r.text
    );
    let info = docker_inspect(&cuid).unwrap();
    assert_ne!(info["Id"], runc_id, "recreated");
    assert_eq!(info["HostConfig"]["Runtime"], "runsc", "{info}");
    // The log cap holds under gVisor too: the daemon's json-file driver writes the log.
    assert_eq!(info["HostConfig"]["LogConfig"]["Type"], "json-file");
    assert_eq!(info["HostConfig"]["LogConfig"]["Config"]["max-size"], "10m");
    let docker_id = info["Id"].as_str().unwrap().to_owned();

    // gVisor's kernel answers, not the host's; exit codes come through.
    assert_eq!(exec(&s, &cuid, "uname -r").await, (0, "4.4.0\n".to_owned()));
    assert_eq!(exec(&s, &cuid, "exit 3").await.0, 3);

    // Files: an upload is visible inside the sandbox, a write inside is downloadable.
    let zip = zip_of(&[("a.txt", b"alpha"), ("dir/", b""), ("dir/b.txt", b"beta")]);
    let r = s.upload_zip(&cuid, "", zip).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        exec(&s, &cuid, "cat /app/dir/b.txt").await,
        (0, "beta".to_owned())
    );
    assert_eq!(
        exec(&s, &cuid, "echo from-inside > /app/inside.txt")
            .await
            .0,
        0
    );
    let (status, _, body) =
        get_bytes(&s, &format!("/containers/{cuid}/download?path=inside.txt")).await;
    assert_eq!((status, body.as_slice()), (200, &b"from-inside\n"[..]));
    let (status, _, body) = get_bytes(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert_eq!(status, 200);
    let entries = unzip_all(&body);
    assert_eq!(entries["a.txt"].as_deref(), Some(&b"alpha"[..]));
    assert_eq!(entries["dir/b.txt"].as_deref(), Some(&b"beta"[..]));
    assert_eq!(
        entries["inside.txt"].as_deref(),
        Some(&b"from-inside\n"[..])
    );

    // The console: the main process's output, a TTY shell that resizes, an interrupted
    // foreground job, the shell's exit code.
    let mut t = Term::open(&s, &format!("/ws/{cuid}?cols=80&rows=24")).await;
    t.until(LONG, "main output", |t| t.main().contains("gv-main-line"))
        .await;
    t.stdin("stty size\n").await;
    t.until(LONG, "24 80", |t| t.out().contains("24 80")).await;
    t.send(json!({"type": "resize", "cols": 132, "rows": 43}))
        .await;
    t.stdin("stty size\n").await;
    t.until(LONG, "43 132", |t| t.out().contains("43 132"))
        .await;
    // `back-3` comes only after the sleep: within LONG (30 s) it was interrupted.
    t.stdin("sleep 60\n").await;
    wait_until(LONG, "sleep 60 runs", || {
        docker(&["exec", &cuid, "ps"]).contains("sleep 60")
    })
    .await;
    t.send(json!({"type": "signal", "name": "INT"})).await;
    t.stdin("echo back-$((1+2))\n").await;
    t.until(LONG, "prompt after INT", |t| t.out().contains("back-3"))
        .await;
    t.stdin("exit 7\n").await;
    assert_eq!(t.until_exit(LONG).await, 7);
    assert!(t.errors.is_empty(), "{:?}", t.errors);

    // Signals to an exec'd command: TERM is 143, KILL 137.
    for (sig, code) in [("TERM", 143), ("KILL", 137)] {
        let cmd = format!("sleep 10{code}");
        let mut t = Term::open(
            &s,
            &format!("/ws/{cuid}?main=false&cmd={}", url_encode(&cmd)),
        )
        .await;
        wait_until(LONG, "the sleep runs", || {
            docker(&["exec", &cuid, "ps"]).contains(&cmd)
        })
        .await;
        t.send(json!({"type": "signal", "name": sig})).await;
        assert_eq!(t.until_exit(LONG).await, code, "{sig}");
    }

    // Logs and stats.
    let r = s.get(&format!("/containers/{cuid}/logs")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("gv-main-line"), "{}", r.text);
    let r = s.get(&format!("/containers/{cuid}/stats")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["memory"]["used_bytes"].as_u64().is_some(),
        "{}",
        r.text
    );
    assert!(r.json["pids"]["current"].as_u64().is_some(), "{}", r.text);

    // Actions.
    for (action, status) in [
        ("pause", "paused"),
        ("unpause", "running"),
        ("stop", "stopped"),
        ("start", "running"),
        ("restart", "running"),
    ] {
        let r = s.post(&format!("/containers/{cuid}/{action}")).await;
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        assert_eq!(r.json["status"], status, "{action}: {}", r.text);
    }

    // Drift: killed behind the server's back, it is started again, under gVisor still.
    let before = docker_started_at(&cuid).expect("running");
    docker(&["kill", &cuid]);
    let mut again = None;
    wait_until(LONG, "the killed container runs again", || {
        again = docker_inspect(&cuid)
            .filter(|v| v["State"]["Status"] == "running" && v["State"]["StartedAt"] != before);
        again.is_some()
    })
    .await;
    assert_eq!(again.unwrap()["HostConfig"]["Runtime"], "runsc");
    let docker_id_after = docker_inspect(&cuid).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Delete: nothing of the sandbox stays.
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(docker_inspect(&cuid).is_none());
    for id in [&docker_id, &docker_id_after] {
        assert_eq!(runsc_processes(id), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_failed_gvisor_start_leaves_no_sandbox_and_a_missing_runtime_is_refused() {
    let mut s = Server::start().await;
    assert_gvisor_offered(&s).await;

    // runsc cannot load the command: the start fails, and every retry fails for that reason
    // (not `id already in use`: each failed sandbox is reaped at once).
    let r = s
        .post_json(
            "/containers?wait=false",
            &json!({"image": BUSYBOX, "isolation": "gvisor", "start": true,
                    "restart": "no", "command": ["/nonexistent"]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let r = s
        .wait_for(&format!("/containers/{cuid}"), LONG, |r| {
            r.json["status"] == "exited" || r.json["last_error"].is_object()
        })
        .await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["exit_code"].as_i64()),
        (Some("exited"), Some(127)),
        "{}",
        r.text
    );
    let id = docker_inspect(&cuid).expect("created in Docker")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Started again through the server: the same failure, not `id already in use`.
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .wait_for(&format!("/containers/{cuid}"), LONG, |r| {
            r.json["status"] == "exited" || r.json["last_error"].is_object()
        })
        .await;
    assert_eq!(r.json["exit_code"], 127, "{}", r.text);
    assert!(!r.text.contains("already in use"), "{}", r.text);

    // What the reconciler cleans up is runsc's own behaviour: a failed start leaves the
    // sandbox, the gofer and the shim after Docker removed the container. Made here by hand
    // (the server's own starts reap at once), and reaped the way the server does.
    let name = format!("cm-gvisor-probe-{}", std::process::id());
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--runtime",
            "runsc",
            "--label",
            "com.container-manager.tag=test",
        ])
        .args(["--name", &name, BUSYBOX, "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let probe = docker_inspect(&name).expect("created")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    docker(&["rm", "-f", &name]);
    assert!(
        !runsc_processes(&probe).is_empty(),
        "runsc left nothing after a failed start: the reaper is untested"
    );
    container_manager::reconcile::sandbox::reap(&probe).await;
    // containerd may still be running its own short-lived `shim … delete` for the id
    // (a cleanup of Docker's `rm`), which ends by itself: nothing may be left after it.
    wait_until(Duration::from_secs(15), "gVisor's leftovers gone", || {
        runsc_processes(&probe).is_empty()
    })
    .await;

    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(docker_inspect(&cuid).is_none());
    assert_eq!(runsc_processes(&id), Vec::<String>::new());

    // The runtime goes away (here: the server is told a name the daemon does not have).
    let stored = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER, "isolation": "gvisor"}))
        .await;
    let runc = s.create_sleeper().await;
    s.set_env("GVISOR_RUNTIME", Some("runsc-not-registered"));
    s.restart().await;
    let r = s.get("/healthz").await;
    assert_eq!(r.json["isolations"], json!(["runc"]), "{}", r.text);

    // Refused on create and on patch; nothing changes.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "isolation": "gvisor"}),
        )
        .await;
    r.assert_error(400, "validation_error", "RUNTIME_UNAVAILABLE");
    assert_eq!(r.json["details"]["runtime"], "runsc-not-registered");
    assert_eq!(s.count_containers().await, 2);
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "isolation": "kata"}),
        )
        .await;
    r.assert_error(400, "validation_error", "INVALID_ISOLATION");
    let r = s
        .patch_json(
            &format!("/containers/{runc}"),
            &json!({"isolation": "gvisor"}),
        )
        .await;
    r.assert_error(400, "validation_error", "RUNTIME_UNAVAILABLE");
    let r = s.get(&format!("/containers/{runc}")).await;
    assert_eq!(
        (r.json["isolation"].as_str(), r.json["generation"].as_i64()),
        (Some("runc"), Some(1)),
        "{}",
        r.text
    );

    // A stored gVisor container cannot start: the step fails with that code, the spec stays.
    let r = s.post(&format!("/containers/{stored}/start")).await;
    r.assert_error(400, "validation_error", "RUNTIME_UNAVAILABLE");
    let r = s.get(&format!("/containers/{stored}")).await;
    assert_eq!(
        r.json["last_error"]["code"], "RUNTIME_UNAVAILABLE",
        "{}",
        r.text
    );
    assert_eq!(r.json["isolation"], "gvisor", "{}", r.text);

    // Back: the reconciler's retry starts it, under gVisor.
    s.set_env("GVISOR_RUNTIME", None);
    s.restart().await;
    s.wait_for(&format!("/containers/{stored}"), LONG, |r| {
        r.json["status"] == "running"
    })
    .await;
    assert_eq!(
        docker_inspect(&stored).unwrap()["HostConfig"]["Runtime"],
        "runsc"
    );
}
