//! Image updates on `BACKEND=swarm` (README "Swarm backend"): the lab's nodes pull from the
//! lab registry (scripts/setup-swarm.sh), the open test registry's storage served on
//! 10.231.78.1:5731. A version is pushed from the host as `127.0.0.1:5731/NAME` (the host's
//! daemon trusts only loopback registries) and run on the nodes as `10.231.78.1:5731/NAME`:
//! the same repository, the same digests.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::image_updates::{update_kept, Repo, COMMAND, OPEN, START};
use crate::swarm::{lab, lab_nodes, node_sock, swarm_server_with, task_node, MANAGER};

const LAB_REGISTRY: &str = "10.231.78.1:5731";
const LIMIT: Duration = Duration::from_secs(90);

/// Whether the lab registry answers; prints why not.
async fn lab_registry_ready() -> bool {
    let up = reqwest::Client::new()
        .get(format!("http://{LAB_REGISTRY}/v2/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !up {
        eprintln!(
            "SKIPPED: the lab registry of scripts/setup-swarm.sh does not answer at \
             {LAB_REGISTRY} (it needs scripts/setup-registry.sh's docker-registry)"
        );
    }
    up
}

/// What the container of `cuid` on its node says `/version` is, and its image's digests there.
fn on_node(cuid: &str) -> (String, String) {
    let node = task_node(cuid).expect("a running task");
    let n: u32 = node.trim_start_matches("cm-swarm-").parse().unwrap();
    let sock = node_sock(n);
    let filter = format!("label=com.docker.swarm.service.name={cuid}");
    let ids = docker_on(
        Some(&sock),
        &[
            "ps",
            "-q",
            "--filter",
            &filter,
            "--filter",
            "status=running",
        ],
    );
    let id = ids
        .split_whitespace()
        .next()
        .expect("its container on its node");
    let version = docker_on(Some(&sock), &["exec", id, "cat", "/version"]);
    let image = docker_on(Some(&sock), &["inspect", "--format", "{{.Image}}", id]);
    let digests = docker_on(
        Some(&sock),
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            image.trim(),
        ],
    );
    (version.trim().to_owned(), digests)
}

#[tokio::test]
async fn a_new_digest_is_seen_rolled_out_on_its_node_and_a_broken_one_rolled_back() {
    let Some(_lab) = lab().await else { return };
    if !lab_registry_ready().await {
        return;
    }
    let mut repo = Repo::new();
    let image = repo.tag.replacen(OPEN, LAB_REGISTRY, 1);
    let d1 = repo.publish("v1", START, None);
    let (s, _services) = swarm_server_with(vec![
        lab_nodes(),
        ("IMAGE_PULL_POLICY".into(), "missing".into()),
        ("IMAGE_CHECK_INTERVAL".into(), "1".into()),
        ("IMAGE_UPDATE_TIMEOUT".into(), "15".into()),
    ])
    .await;
    let cuid = s
        .create_running(&json!({"image": image, "command": COMMAND}))
        .await;
    let path = format!("/containers/{cuid}");
    // What the task's container runs on its node, not what the spec names (a tag).
    let r = s
        .wait_for(&path, LIMIT, |r| r.json["image_digest"] == json!(d1))
        .await;
    assert_eq!(r.json["update_available"], Value::Null, "{}", r.text);
    let (version, digests) = on_node(&cuid);
    assert_eq!(version, "v1");
    assert!(digests.contains(&d1), "{digests}");

    // A release under the same tag: seen, nothing recreated.
    let generation = r.json["generation"].as_i64().unwrap();
    let d2 = repo.publish("v2", START, None);
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["update_available"]["digest"] == json!(d2)
        })
        .await;
    assert_eq!(r.json["generation"], generation, "{}", r.text);
    assert_eq!(on_node(&cuid).0, "v1");

    // The update: the pin becomes the service's image, every node pulls it, the task is
    // replaced and the judge keeps it.
    let r = update_kept(&s, &path, generation, &d1, &d2, LIMIT).await;
    assert_eq!(r.json["image"], json!(image), "the spec keeps the tag");
    let spec_image = docker_on(
        Some(MANAGER),
        &[
            "service",
            "inspect",
            &cuid,
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ],
    );
    assert!(
        spec_image.trim().ends_with(&format!("@{d2}")),
        "{spec_image}"
    );
    let (version, digests) = on_node(&cuid);
    assert_eq!(version, "v2");
    assert!(digests.contains(&d2), "{digests}");

    // A release whose command fails at once: rolled out on request, rolled back by the
    // judge, the service back on the digest before it.
    let d3 = repo.publish("v3", "echo broken >&2; exit 3\n", None);
    s.wait_for(&path, LIMIT, |r| {
        r.json["update_available"]["digest"] == json!(d3)
    })
    .await;
    let r = s.post(&format!("{path}/update")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["last_update"]["result"] == "rolled_back"
        })
        .await;
    assert_eq!(r.json["last_update"]["from"], json!(d2), "{}", r.text);
    assert_eq!(r.json["last_update"]["to"], json!(d3), "{}", r.text);
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["status"] == "running"
                && r.json["observed_generation"] == r.json["generation"]
                && r.json["image_digest"] == json!(d2)
        })
        .await;
    assert_eq!(r.json["updating"], false, "{}", r.text);
    assert_eq!(on_node(&cuid).0, "v2");
}
