//! What a careless or hostile environment must not change: files the server did not write
//! (a `compose.yaml` and `.env` in its working directory), directories a crash left without
//! a row, a container that forks without end.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

async fn running(s: &Server, extra: serde_json::Value) -> String {
    let mut body = json!({"image": BUSYBOX, "command": SLEEPER});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.create_started(&body).await
}

/// Compose looks for `compose.yaml` and `.env` in its working directory. The server's working
/// directory holds a broken `compose.yaml` and an `.env` naming a missing file: every compose
/// call names the project's own directory, so start, stop and a delete whose compose file is
/// gone (the `down` that has no file to name) all still work.
#[tokio::test]
async fn compose_never_reads_the_servers_working_directory() {
    let s = Server::start().await;
    let cwd = s.dir.path();
    std::fs::write(
        cwd.join("compose.yaml"),
        "services: [this is not a compose file\n",
    )
    .unwrap();
    std::fs::write(cwd.join("docker-compose.yml"), "services: [nor this\n").unwrap();
    std::fs::write(
        cwd.join(".env"),
        "COMPOSE_FILE=/nonexistent/compose.yaml\nCOMPOSE_PROJECT_NAME=hijacked\n",
    )
    .unwrap();

    let cuid = running(&s, json!({})).await;
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.json["status"], "running", "{}", r.text);

    // The rendered file is gone (an operator's mistake, a crash): `down` runs without one.
    let project = s.data_dir().join("projects").join(&cuid);
    std::fs::remove_file(project.join("compose.yaml")).unwrap();
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(docker_inspect(&cuid).is_none(), "the container is gone");
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.compose.project=hijacked"
        ])
        .trim(),
        ""
    );
}

/// A crash between making a container's directories and inserting its row leaves directories
/// without a container. The next start removes them (whatever they hold), and only them:
/// a live container's directories and names that are not container ids stay.
#[tokio::test]
async fn directories_without_a_container_are_removed_at_start_up() {
    let mut s = Server::start().await;
    let live = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER}))
        .await;
    let status = s.stop();
    assert!(status.success());

    let data = s.data_dir();
    let orphan = format!("c{}", uuid::Uuid::new_v4());
    let mount = data.join("mounts").join(&orphan);
    std::fs::create_dir_all(mount.join("deep/er/still")).unwrap();
    std::fs::write(mount.join("deep/er/still/file"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", mount.join("etc-link")).unwrap();
    let project = data.join("projects").join(&orphan);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("compose.yaml"), "services: {}\n").unwrap();
    let stranger = data.join("mounts").join("not-a-container");
    std::fs::create_dir_all(&stranger).unwrap();

    s.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while mount.exists() || project.exists() {
        assert!(Instant::now() < deadline, "orphan directories still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert!(
        stranger.is_dir(),
        "a name that is no container id is left alone"
    );
    assert!(
        data.join("mounts").join(&live).is_dir(),
        "a live container keeps its /app"
    );
    assert_eq!(s.get(&format!("/containers/{live}")).await.status, 200);
}

/// A container without `resources.pids` gets `DEFAULT_PIDS_LIMIT`: a fork bomb runs into the
/// limit instead of using up the host's process ids. A spec's own limit wins; `0` means none.
#[tokio::test]
async fn a_container_without_a_pids_limit_gets_the_default() {
    let s = Server::start_with(Options {
        env: vec![("DEFAULT_PIDS_LIMIT".into(), "40".into())],
        ..Default::default()
    })
    .await;
    // Forks sleepers as fast as it can; busybox's sh gives up at the first fork that fails.
    let bomb = json!({
        "command": ["sh", "-c", "while true; do sleep 3600 & done"],
        "restart": "no",
    });
    let mut body = json!({"image": BUSYBOX, "start": true});
    body.as_object_mut()
        .unwrap()
        .extend(bomb.as_object().unwrap().clone());
    let r = s.post_json("/containers", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // It may already have run into the limit by the time the start is answered.
    assert!(
        r.json["status"] == "running" || r.json["status"] == "exited",
        "{}",
        r.text
    );
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let pids_limit = |id: &str| {
        docker(&["inspect", "-f", "{{.HostConfig.PidsLimit}}", id])
            .trim()
            .to_owned()
    };
    assert_eq!(pids_limit(&cuid), "40");
    // The bomb runs into the limit: fork fails inside the container, and its shell ends.
    let r = s
        .wait_for(
            &format!("/containers/{cuid}"),
            Duration::from_secs(30),
            |r| r.json["status"] == "exited",
        )
        .await;
    assert_ne!(r.json["exit_code"], 0, "{}", r.text);
    let logs = s.get(&format!("/containers/{cuid}/logs?tail=all")).await;
    assert!(logs.text.contains("can't fork"), "{}", logs.text);
    // The server is unharmed.
    assert_eq!(s.get("/healthz").await.status, 200);

    let own = running(&s, json!({"resources": {"pids": 64}})).await;
    assert_eq!(pids_limit(&own), "64");

    let unlimited = Server::start_with(Options {
        env: vec![("DEFAULT_PIDS_LIMIT".into(), "0".into())],
        ..Default::default()
    })
    .await;
    let free = running(&unlimited, json!({})).await;
    let limit = pids_limit(&free);
    assert!(matches!(limit.as_str(), "<nil>" | "0" | "-1"), "{limit}");
}

/// The server's network removed behind its back while a container is stopped: Docker
/// refuses the plain start (its network is gone), and the pass makes the network again and
/// brings the container up with compose.
#[tokio::test]
async fn a_start_after_the_network_was_removed_recreates_it() {
    let s = Server::start().await;
    let cuid = running(&s, json!({})).await;
    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);
    let network = format!("cm-{}", s.instance_id);
    let network_exists = || {
        !docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{network}$"),
        ])
        .trim()
        .is_empty()
    };
    docker(&["network", "rm", &network]);
    assert!(!network_exists(), "the network was not removed");
    s.start_container(&cuid).await;
    assert!(network_exists());
}
