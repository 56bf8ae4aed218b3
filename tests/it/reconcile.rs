//! The reconciler against real Docker and real compose: rendering, transitions, drift
//! repair, recovery after crashes and restarts, deletion, orphans, failures with back-off.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const SLEEPER: &[&str] = &["sh", "-c", "echo started; exec sleep 3600"];

async fn create(s: &Server, mut body: Value) -> String {
    if body.get("image").is_none() {
        body["image"] = json!(BUSYBOX);
    }
    if body.get("command").is_none() {
        body["command"] = json!(SLEEPER);
    }
    s.create(&body).await
}

async fn start(s: &Server, body: Value) -> String {
    let cuid = create(s, body).await;
    s.start_container(&cuid).await;
    cuid
}

fn inspect(cuid: &str) -> Value {
    docker_inspect(cuid).unwrap_or_else(|| panic!("no container {cuid} in Docker"))
}

fn state(cuid: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", cuid])
        .trim()
        .to_owned()
}

/// Waits for Docker's view of the container to satisfy `pred`.
async fn wait_docker(
    cuid: &str,
    limit: Duration,
    pred: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let v = docker_inspect(cuid);
        if pred(v.as_ref()) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "Docker never reached the state; last: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn env_of(v: &Value) -> Vec<String> {
    v["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn start_renders_the_spec_into_docker() {
    let s = Server::start().await;
    let cuid = start(
        &s,
        json!({
            "env": {"LITERAL": "${APP_PASS}$HOME", "HOSTILE": "x\n    privileged: true"},
            "tags": ["web", "blue"],
            "resources": {"cpus": 1.5, "memory": "64m", "pids": 64},
            "ports": [{"host": 18301, "container": 80}, {"host": 18302, "container": 53, "protocol": "udp", "host_ip": "127.0.0.1"}],
        }),
    )
    .await;
    let v = inspect(&cuid);
    let hc = &v["HostConfig"];
    assert_eq!(hc["NanoCpus"], 1_500_000_000i64);
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 64);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["RestartPolicy"]["Name"], "on-failure");
    assert!(
        hc["SecurityOpt"].to_string().contains("no-new-privileges"),
        "{}",
        hc["SecurityOpt"]
    );
    assert!(
        hc["CapDrop"].to_string().contains("NET_RAW"),
        "{}",
        hc["CapDrop"]
    );
    assert_eq!(hc["PortBindings"]["80/tcp"][0]["HostPort"], "18301");
    assert_eq!(hc["PortBindings"]["53/udp"][0]["HostIp"], "127.0.0.1");
    assert_eq!(v["Config"]["User"], "1000:1000");
    assert_eq!(v["Config"]["WorkingDir"], "/app");
    assert_eq!(v["Config"]["OpenStdin"], true);
    let env = env_of(&v);
    assert!(env.contains(&format!("CONTAINER_UID={cuid}")), "{env:?}");
    assert!(env.contains(&"TAGS=web,blue".to_owned()), "{env:?}");
    assert!(
        env.contains(&"LITERAL=${APP_PASS}$HOME".to_owned()),
        "{env:?}"
    );
    assert!(
        env.contains(&"HOSTILE=x\n    privileged: true".to_owned()),
        "{env:?}"
    );
    assert!(env.contains(&"PYTHONUNBUFFERED=1".to_owned()), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("APP_PASS=") || e.contains(PASS)),
        "server secrets leaked: {env:?}"
    );
    let mounts = v["Mounts"].as_array().unwrap();
    let app = mounts
        .iter()
        .find(|m| m["Destination"] == "/app")
        .expect("/app mount");
    assert_eq!(
        app["Source"],
        s.data_dir()
            .join("mounts")
            .join(&cuid)
            .display()
            .to_string()
    );
    let labels = &v["Config"]["Labels"];
    assert_eq!(
        labels["com.container-manager.instance"],
        s.instance_id.as_str()
    );
    assert_eq!(labels["com.container-manager.cuid"], cuid.as_str());
    assert_eq!(labels["com.container-manager.generation"], "1");
    // The process really runs as 1000:1000 and can write its /app.
    let out = docker(&[
        "exec",
        &cuid,
        "sh",
        "-c",
        "id -u; touch /app/w && echo wrote",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "wrote"]
    );
    // The live status route reads Docker.
    let st = s.get(&format!("/containers/{cuid}/status")).await;
    assert_eq!(st.json["source"], "docker", "{}", st.text);
    assert_eq!(st.json["running"], true);
    assert_eq!(st.json["observed_generation"], 1);
    // The reconciler's actions are in the audit log.
    let lines = s.audit_lines();
    let up = lines
        .iter()
        .find(|l| l["actor"] == "reconciler" && l["action"] == "up" && l["cuid"] == cuid.as_str());
    let up = up.expect("audit line for the up");
    assert_eq!(up["outcome"], "ok");
    assert!(up["duration_ms"].as_f64().is_some() && up["reason"].as_str().is_some());
}

#[tokio::test]
async fn transitions_and_invalid_ones() {
    let s = Server::start().await;
    let cuid = create(&s, json!({})).await;
    let p = |a: &str| format!("/containers/{cuid}/{a}");
    // From created: pause/unpause are invalid, stop is a no-op.
    s.post(&p("pause"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    s.post(&p("unpause"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    assert_eq!(s.post(&p("stop")).await.json["status"], "created");
    assert_eq!(s.post(&p("start")).await.json["status"], "running");
    assert_eq!(state(&cuid), "running");
    assert_eq!(
        s.post(&p("start")).await.status,
        200,
        "start on running is a no-op"
    );
    s.post(&p("unpause"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    assert_eq!(s.post(&p("pause")).await.json["status"], "paused");
    assert_eq!(state(&cuid), "paused");
    s.post(&p("start"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    assert_eq!(s.post(&p("unpause")).await.json["status"], "running");
    assert_eq!(state(&cuid), "running");

    // restart happens once: a new start time, same container.
    let before = inspect(&cuid);
    let r = s.post(&p("restart")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
    let after = inspect(&cuid);
    assert_eq!(before["Id"], after["Id"]);
    assert_ne!(before["State"]["StartedAt"], after["State"]["StartedAt"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        inspect(&cuid)["State"]["StartedAt"],
        after["State"]["StartedAt"],
        "restarted more than once"
    );

    // A paused container may be stopped, restarted or deleted.
    assert_eq!(s.post(&p("pause")).await.json["status"], "paused");
    assert_eq!(s.post(&p("restart")).await.json["status"], "running");
    assert_eq!(s.post(&p("pause")).await.json["status"], "paused");
    let r = s.post(&p("stop")).await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);
    assert_eq!(state(&cuid), "exited");
    assert_eq!(
        s.post(&p("stop")).await.status,
        200,
        "stop on stopped is a no-op"
    );
    s.post(&p("pause"))
        .await
        .assert_error(422, "state_error", "INVALID_TRANSITION");
    assert_eq!(s.post(&p("start")).await.json["status"], "running");

    // ?wait=false answers 202 at once; the work still happens.
    let r = s.post(&format!("{}?wait=false", p("stop"))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(30),
        |r| r.json["status"] == "stopped",
    )
    .await;
}

#[tokio::test]
async fn patching_a_running_container_recreates_it_and_keeps_app_files() {
    let s = Server::start().await;
    let cuid = start(
        &s,
        json!({"resources": {"memory": "64m"}, "ports": [{"host": 18311, "container": 80}]}),
    )
    .await;
    let old_id = inspect(&cuid)["Id"].clone();
    std::fs::write(
        s.data_dir().join("mounts").join(&cuid).join("keep.txt"),
        "kept",
    )
    .unwrap();

    let r = s
        .patch_json(
            &format!("/containers/{cuid}"),
            &json!({"resources": {"memory": "128m", "pids": 50}, "env": {"NEW": "1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    assert_eq!(r.json["generation"], 2);
    assert_eq!(r.json["observed_generation"], 2);
    let v = inspect(&cuid);
    assert_ne!(v["Id"], old_id, "recreated");
    assert_eq!(v["HostConfig"]["Memory"], 128 * 1024 * 1024);
    assert_eq!(v["HostConfig"]["PidsLimit"], 50);
    assert!(env_of(&v).contains(&"NEW=1".to_owned()));
    assert_eq!(docker(&["exec", &cuid, "cat", "/app/keep.txt"]), "kept");

    // A port change republishes.
    let r = s
        .patch_json(
            &format!("/containers/{cuid}/ports"),
            &json!({"ports": [{"host": 18312, "container": 8080}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = inspect(&cuid);
    assert_eq!(
        v["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"],
        "18312"
    );
    assert!(v["HostConfig"]["PortBindings"].get("80/tcp").is_none());
    // A new host port held by another program is refused and nothing changes.
    let holder = std::net::TcpListener::bind("0.0.0.0:18313").unwrap();
    let r = s
        .patch_json(
            &format!("/containers/{cuid}/ports"),
            &json!({"ports": [{"host": 18313, "container": 80}]}),
        )
        .await;
    r.assert_error(409, "conflict", "PORT_IN_USE");
    drop(holder);
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["ports"][0]["host"],
        18312
    );
    // The compose file on disk is the new one.
    let file = std::fs::read_to_string(
        s.data_dir()
            .join("projects")
            .join(&cuid)
            .join("compose.yaml"),
    )
    .unwrap();
    assert!(file.contains("18312") && !file.contains("18311"), "{file}");
}

#[tokio::test]
async fn drift_behind_the_servers_back_is_repaired() {
    let s = Server::start_with(Options {
        env: vec![("RESYNC_INTERVAL".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let cuid = start(&s, json!({})).await;
    let running = |v: Option<&Value>| v.is_some_and(|v| v["State"]["Status"] == "running");

    docker(&["stop", "-t", "1", &cuid]);
    wait_docker(&cuid, Duration::from_secs(20), running).await;

    docker(&["kill", &cuid]);
    wait_docker(&cuid, Duration::from_secs(20), running).await;

    docker(&["pause", &cuid]);
    wait_docker(&cuid, Duration::from_secs(20), running).await;

    let id = inspect(&cuid)["Id"].clone();
    docker(&["rm", "-f", &cuid]);
    let v = wait_docker(&cuid, Duration::from_secs(20), running)
        .await
        .unwrap();
    assert_ne!(v["Id"], id);

    // A deleted compose file is rendered again.
    let file = s
        .data_dir()
        .join("projects")
        .join(&cuid)
        .join("compose.yaml");
    std::fs::remove_file(&file).unwrap();
    docker(&["stop", "-t", "1", &cuid]);
    wait_docker(&cuid, Duration::from_secs(20), running).await;
    assert!(file.exists());

    // Paused on purpose, unpaused outside: paused again.
    assert_eq!(
        s.post(&format!("/containers/{cuid}/pause")).await.json["status"],
        "paused"
    );
    docker(&["unpause", &cuid]);
    wait_docker(&cuid, Duration::from_secs(20), |v| {
        v.is_some_and(|v| v["State"]["Status"] == "paused")
    })
    .await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["desired_state"], "paused");
}

#[tokio::test]
async fn a_finished_job_stays_exited() {
    let s = Server::start_with(Options {
        env: vec![("RESYNC_INTERVAL".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let cuid = create(&s, json!({"command": ["sh", "-c", "echo done; exit 0"]})).await;
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(20),
            |r| r.json["status"] == "exited",
        )
        .await;
    assert_eq!(r.json["exit_code"], 0);
    let started = inspect(&cuid)["State"]["StartedAt"].clone();
    // Several resyncs later it was not re-run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(inspect(&cuid)["State"]["StartedAt"], started);
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["status"],
        "exited"
    );
    // `start` runs it again.
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(inspect(&cuid)["State"]["StartedAt"], started);
}

#[tokio::test]
async fn a_bad_image_errors_with_backoff_and_does_not_delay_others() {
    let s = Server::start().await;
    let bad = create(&s, json!({"image": "cm-test-missing:1"})).await;
    let r = s.post(&format!("/containers/{bad}/start")).await;
    r.assert_error(422, "state_error", "IMAGE_NOT_FOUND");
    let good = start(&s, json!({})).await;
    assert_eq!(state(&good), "running");
    let r = s.get(&format!("/containers/{bad}")).await;
    assert_eq!(r.json["status"], "error");
    assert_eq!(r.json["last_error"]["code"], "IMAGE_NOT_FOUND");
    assert!(r.json["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("cm-test-missing:1"));
    chrono::DateTime::parse_from_rfc3339(r.json["last_error"]["at"].as_str().unwrap()).unwrap();
    // Retries back off: a handful of attempts in a few seconds, not hundreds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = s
        .audit_lines()
        .iter()
        .filter(|l| {
            l["actor"] == "reconciler"
                && l["cuid"] == bad.as_str()
                && l["code"] == "IMAGE_NOT_FOUND"
        })
        .count();
    assert!((2..=8).contains(&attempts), "{attempts} attempts");
    // Fixing the spec fixes the container.
    let r = s
        .patch_json(
            &format!("/containers/{bad}"),
            &json!({"image": BUSYBOX, "command": SLEEPER}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    assert!(r.json["last_error"].is_null());
}

#[tokio::test]
async fn start_checks_boot_script_and_host_ports_first() {
    let s = Server::start().await;
    // Default command without /app/boot.py.
    let r = s.post_json("/containers", &json!({"image": PYTHON})).await;
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    s.post(&format!("/containers/{cuid}/start"))
        .await
        .assert_error(422, "state_error", "BOOT_SCRIPT_MISSING");
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["desired_state"],
        "created"
    );
    assert!(docker_inspect(&cuid).is_none(), "nothing started");
    // With boot.py it runs python as the main process.
    std::fs::write(
        s.data_dir().join("mounts").join(&cuid).join("boot.py"),
        "import time\nprint('booted')\ntime.sleep(3600)\n",
    )
    .unwrap();
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);

    // A host port held by another program.
    let holder = std::net::TcpListener::bind("0.0.0.0:18321").unwrap();
    let cuid = create(&s, json!({"ports": [{"host": 18321, "container": 80}]})).await;
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    r.assert_error(409, "conflict", "PORT_IN_USE");
    assert_eq!(r.json["details"]["host"], 18321);
    drop(holder);
    assert_eq!(
        s.post(&format!("/containers/{cuid}/start")).await.json["status"],
        "running"
    );
    // The server's own listener counts too.
    let own = s.addr.port();
    let cuid = create(
        &s,
        json!({"ports": [{"host": own, "container": 80, "host_ip": "127.0.0.1"}]}),
    )
    .await;
    s.post(&format!("/containers/{cuid}/start"))
        .await
        .assert_error(409, "conflict", "PORT_IN_USE");
}

#[tokio::test]
async fn delete_removes_everything_and_the_cuid_is_gone_at_once() {
    let s = Server::start().await;
    let cuid = start(&s, json!({"ports": [{"host": 18331, "container": 80}]})).await;
    std::fs::write(s.data_dir().join("mounts").join(&cuid).join("f"), "x").unwrap();
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.get(&format!("/containers/{cuid}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );
    s.get(&format!("/containers/{cuid}/status"))
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    assert!(docker_inspect(&cuid).is_none());
    assert!(!s.data_dir().join("mounts").join(&cuid).exists());
    assert!(!s.data_dir().join("projects").join(&cuid).exists());
    let list = s.get("/containers").await;
    assert!(!list.text.contains(&cuid));
    // Deleting a container that never started works too, and its port is free again.
    let never = create(&s, json!({"ports": [{"host": 18331, "container": 80}]})).await;
    assert_eq!(s.delete(&format!("/containers/{never}")).await.status, 200);
    s.get(&format!("/containers/{never}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );
}

#[tokio::test]
async fn a_server_restart_leaves_matching_containers_alone() {
    let mut s = Server::start().await;
    let a = start(&s, json!({})).await;
    let b = start(&s, json!({})).await;
    let before: Vec<(Value, Value)> = [&a, &b]
        .iter()
        .map(|c| {
            let v = inspect(c);
            (v["Id"].clone(), v["State"]["StartedAt"].clone())
        })
        .collect();
    let actions_before = s
        .audit_lines()
        .iter()
        .filter(|l| l["actor"] == "reconciler")
        .count();
    s.restart().await;
    // Let the start-up pass and a resync happen.
    let r = s
        .wait_for(&format!("/containers/{a}"), Duration::from_secs(10), |r| {
            r.json["status"] == "running"
        })
        .await;
    assert_eq!(r.json["observed_generation"], 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<(Value, Value)> = [&a, &b]
        .iter()
        .map(|c| {
            let v = inspect(c);
            (v["Id"].clone(), v["State"]["StartedAt"].clone())
        })
        .collect();
    assert_eq!(before, after);
    let actions_after = s
        .audit_lines()
        .iter()
        .filter(|l| l["actor"] == "reconciler")
        .count();
    assert_eq!(
        actions_before, actions_after,
        "the restart took reconciler actions"
    );
}

#[tokio::test]
async fn sigkill_during_a_start_converges_after_restart() {
    let mut s = Server::start().await;
    let cuid = create(&s, json!({})).await;
    let r = s
        .post(&format!("/containers/{cuid}/start?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // Kill the server while compose is (probably) running.
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.kill9();
    s.start_again().await;
    let r = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(60),
            |r| r.json["status"] == "running",
        )
        .await;
    assert_eq!(r.json["observed_generation"], r.json["generation"]);
    assert_eq!(state(&cuid), "running");
    // No compose process is left working on this server's projects.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let projects = s.data_dir().join("projects").display().to_string();
    assert!(
        !ps.lines()
            .any(|l| l.contains("compose") && l.contains(&projects)),
        "{ps}"
    );
}

/// Two networks of the server's name (a create of a server killed mid-request lands beside
/// the next server's: the daemon's name check is not atomic) make the name ambiguous: the
/// server keeps one and starts the container on it, instead of failing every start.
#[tokio::test]
async fn a_duplicated_network_is_made_unique_again() {
    let s = Server::start().await;
    let name = format!("cm-{}", s.instance_id);
    let label = format!("com.container-manager.instance={}", s.instance_id);
    // Racing creates: the daemon lets several through.
    let made: Vec<_> = (0..6)
        .map(|_| {
            std::process::Command::new("docker")
                .args(["network", "create", "--label", &label, &name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in made {
        child.wait().unwrap();
    }
    let copies = || {
        docker(&["network", "ls", "--filter", &format!("name=^{name}$"), "-q"])
            .lines()
            .count()
    };
    assert!(
        copies() >= 2,
        "the daemon made no duplicate: nothing to test"
    );
    let cuid = start(&s, json!({})).await;
    assert_eq!(state(&cuid), "running");
    assert_eq!(copies(), 1);
}

#[tokio::test]
async fn orphans_are_removed_but_other_instances_are_untouched() {
    let a = Server::start_with(Options {
        env: vec![("RESYNC_INTERVAL".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let b = Server::start().await;
    let bs = start(&b, json!({})).await;
    // A container with a's label and no row.
    let orphan = format!("c{}", uuid::Uuid::new_v4());
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &orphan,
        "--label",
        &format!("com.container-manager.instance={}", a.instance_id),
        "--label",
        &format!("com.container-manager.cuid={orphan}"),
        "--label",
        "com.container-manager.tag=test",
        BUSYBOX,
        "sleep",
        "3600",
    ]);
    assert!(!out.trim().is_empty(), "docker run failed");
    wait_docker(&orphan, Duration::from_secs(20), |v| v.is_none()).await;
    assert!(a
        .audit_lines()
        .iter()
        .any(|l| l["action"] == "remove_orphan" && l["cuid"] == orphan.as_str()));
    assert_eq!(
        state(&bs),
        "running",
        "the other server's container was touched"
    );
}

#[tokio::test]
async fn forty_containers_run_at_once() {
    let s = Server::start_with(Options {
        env: vec![("RECONCILE_CONCURRENCY".into(), "8".into())],
        ..Default::default()
    })
    .await;
    let mut cuids = Vec::new();
    for _ in 0..40 {
        let cuid = create(&s, json!({})).await;
        let r = s
            .post(&format!("/containers/{cuid}/start?wait=false"))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        cuids.push(cuid);
    }
    for cuid in &cuids {
        let r = s
            .wait_for(
                &format!("/containers/{cuid}"),
                Duration::from_secs(180),
                |r| r.json["status"] != "created",
            )
            .await;
        let r = if r.json["status"] == "running" {
            r
        } else {
            s.wait_for(
                &format!("/containers/{cuid}"),
                Duration::from_secs(180),
                |r| r.json["status"] == "running",
            )
            .await
        };
        assert_eq!(r.json["status"], "running", "{}", r.text);
    }
    let running = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.container-manager.instance={}", s.instance_id),
    ]);
    assert_eq!(running.split_whitespace().count(), 40);
}

#[tokio::test]
async fn create_with_start_runs_it_at_once() {
    let s = Server::start().await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["desired_state"], "running");
    let cuid = r.json["cuid"].as_str().unwrap();
    assert_eq!(state(cuid), "running");
    // Without boot.py and with the default command, nothing is stored.
    let r = s
        .post_json("/containers", &json!({"image": PYTHON, "start": true}))
        .await;
    r.assert_error(422, "state_error", "BOOT_SCRIPT_MISSING");
    assert_eq!(s.count_containers().await, 1);
}

#[tokio::test]
async fn sigkill_during_a_delete_converges_after_restart() {
    let mut s = Server::start().await;
    let cuid = start(&s, json!({})).await;
    let r = s.delete(&format!("/containers/{cuid}?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["status"], "deleting");
    s.kill9();
    s.start_again().await;
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(60),
        |r| r.status == 404,
    )
    .await;
    wait_docker(&cuid, Duration::from_secs(20), |v| v.is_none()).await;
    assert!(!s.data_dir().join("mounts").join(&cuid).exists());
}

#[tokio::test]
async fn racing_actions_are_planned_on_the_current_state() {
    let s = Server::start().await;
    let cuid = start(&s, json!({})).await;
    let pause = format!("/containers/{cuid}/pause");
    let stop = format!("/containers/{cuid}/stop");
    let (p, st) = tokio::join!(s.post(&pause), s.post(&stop));
    // Whichever came second saw the first one's desire: a pause after a stop is refused, a
    // stop after a pause wins. Nobody waits into a timeout.
    assert_eq!(st.status, 200, "{}", st.text);
    assert!(matches!(p.status, 200 | 422), "{} {}", p.status, p.text);
    if p.status == 422 {
        assert_eq!(p.json["code"], "INVALID_TRANSITION");
    }
    let r = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(30),
            |r| r.json["status"] == "stopped",
        )
        .await;
    assert_eq!(r.json["desired_state"], "stopped");
    assert_eq!(state(&cuid), "exited");
}

/// A stand-in for the daemon's socket that the test can cut: the server talks to Docker
/// through it, so cutting it looks to the server exactly like a daemon going away (broken
/// event stream, refused calls) without disturbing the tests running beside this one.
struct DockerProxy {
    path: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerProxy {
    fn start(path: &std::path::Path) -> DockerProxy {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut daemon) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
            }
        });
        DockerProxy {
            path: path.to_owned(),
            task: Some(task),
        }
    }

    /// Closes the socket and every connection through it (dropping the JoinSet aborts them).
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn losing_the_daemon_is_survived_and_repaired_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(&sock);
    let s = Server::start_with(Options {
        env: vec![
            ("DOCKER_HOST".into(), format!("unix://{}", sock.display())),
            ("RESYNC_INTERVAL".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    let cuid = start(&s, json!({})).await;

    // The daemon goes away; meanwhile its containers stop (as a daemon shutdown stops them).
    proxy.cut();
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 503, "{}", r.text);
    docker(&["stop", "-t", "1", &cuid]);
    assert_eq!(state(&cuid), "exited");
    // Requests that need Docker say so instead of hanging.
    let r = s.get(&format!("/containers/{cuid}/logs")).await;
    r.assert_error(503, "unavailable", "DOCKER_UNAVAILABLE");

    // It comes back: the server reconnects, notices what it missed and repairs it.
    let _proxy = DockerProxy::start(&sock);
    wait_docker(&cuid, Duration::from_secs(30), |v| {
        v.is_some_and(|v| v["State"]["Status"] == "running")
    })
    .await;
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(30),
        |r| r.json["status"] == "running" && r.json["last_error"].is_null(),
    )
    .await;
    assert_eq!(s.get("/healthz").await.status, 200);
}

fn compose_processes_of(s: &Server) -> Vec<String> {
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let projects = s.data_dir().join("projects").display().to_string();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("compose") && l.contains(&projects))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn at_idle_no_compose_process_runs() {
    let s = Server::start_with(Options {
        env: vec![("RESYNC_INTERVAL".into(), "1".into())],
        ..Default::default()
    })
    .await;
    start(&s, json!({})).await;
    let stopped = create(&s, json!({})).await;
    assert_eq!(
        s.post(&format!("/containers/{stopped}/start")).await.status,
        200
    );
    assert_eq!(
        s.post(&format!("/containers/{stopped}/stop")).await.status,
        200
    );
    // Several resyncs pass; each one only lists containers through the Engine API.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let running = compose_processes_of(&s);
        assert!(running.is_empty(), "compose ran at idle: {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actions = s
        .audit_lines()
        .iter()
        .filter(|l| l["actor"] == "reconciler")
        .count();
    assert_eq!(actions, 3, "two ups and a stop, nothing more");
}

#[tokio::test]
async fn a_restart_asked_for_before_a_crash_happens_once() {
    let mut s = Server::start().await;
    let cuid = start(&s, json!({})).await;
    let before = inspect(&cuid)["State"]["StartedAt"].clone();
    let r = s
        .post(&format!("/containers/{cuid}/restart?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    s.kill9();
    s.start_again().await;
    let restarted = wait_docker(&cuid, Duration::from_secs(30), |v| {
        v.is_some_and(|v| v["State"]["Status"] == "running" && v["State"]["StartedAt"] != before)
    })
    .await
    .unwrap();
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(30),
        |r| r.json["status"] == "running",
    )
    .await;
    // Given time for a second one, none comes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        inspect(&cuid)["State"]["StartedAt"],
        restarted["State"]["StartedAt"]
    );
}
