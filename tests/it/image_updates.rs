//! Image updates against the real open registry on 127.0.0.1:5731 (scripts/setup-registry.sh):
//! each test pushes versions of its own repository under one tag (tiny images FROM the
//! busybox test image, each with its own `/version` and `/start.sh`), so a new digest appears
//! under the tag exactly as it does when someone publishes a release.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

pub(crate) const OPEN: &str = "127.0.0.1:5731";
const AUTHED: &str = "127.0.0.1:5732";
/// The right credentials for `AUTHED`, written by setup-registry.sh.
const RIGHT_AUTH_FILE: &str = "/var/lib/cm-test-registry/docker-config/config.json";
const DOCKER_CONFIG: &str = "/var/lib/cm-test-registry/docker-config";

fn docker_ok(args: &[&str]) -> String {
    let out = run_ok(
        Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", DOCKER_CONFIG),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository of its own on the open registry, tag `t1`; its images go from the host when
/// dropped.
pub(crate) struct Repo {
    pub(crate) tag: String,
    /// Local image ids built, removed at the end.
    built: Vec<String>,
}

impl Repo {
    pub(crate) fn new() -> Self {
        Self::on(OPEN)
    }

    fn on(registry: &str) -> Self {
        let name = format!(
            "{registry}/cm-it-upd-{}:t1",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self {
            tag: name,
            built: Vec::new(),
        }
    }

    /// Builds a version (`/version` holds `version`; `/start.sh` runs `start`), pushes it
    /// under the tag, and answers its registry digest. The tag on the host is then put back
    /// where it was (`keep`: the image it named before, or none), as on a host that pulled
    /// the tag earlier and has not pulled since.
    pub(crate) fn publish(&mut self, version: &str, start: &str, keep: Option<&str>) -> String {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("version"), version).unwrap();
        std::fs::write(ctx.path().join("start.sh"), start).unwrap();
        // The repository's name inside too: two tests' `v1` are never one image (whose id
        // one test's clean-up could not remove while the other's tag holds it).
        std::fs::write(ctx.path().join("repo"), &self.tag).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {BUSYBOX}\nCOPY version start.sh repo /\n"),
        )
        .unwrap();
        let id = String::from_utf8_lossy(
            &run_ok(
                Command::new("docker")
                    .args(["build", "-q", "-t", &self.tag])
                    .arg(ctx.path())
                    .env("DOCKER_BUILDKIT", "0"),
            )
            .stdout,
        )
        .trim()
        .to_owned();
        self.built.push(id.clone());
        docker_ok(&["push", &self.tag]);
        let digests = docker_ok(&["image", "inspect", "--format", "{{json .RepoDigests}}", &id]);
        let digests: Vec<String> = serde_json::from_str(&digests).unwrap();
        let repo = self.tag.rsplit_once(':').unwrap().0;
        let digest = digests
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")))
            .expect("a pushed image has a digest for its repository")
            .to_owned();
        match keep {
            Some(previous) => {
                docker_ok(&["tag", previous, &self.tag]);
            }
            None => {
                docker(&["rmi", &self.tag]);
            }
        }
        digest
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        docker(&["rmi", &self.tag]);
        for id in &self.built {
            docker(&["rmi", id]);
        }
    }
}

/// The image id a container runs.
fn image_of(cuid: &str) -> String {
    docker(&["inspect", "--format", "{{.Image}}", cuid])
        .trim()
        .to_owned()
}

fn version_in(cuid: &str) -> String {
    docker(&["exec", cuid, "cat", "/version"]).trim().to_owned()
}

/// A server that pulls what it lacks and looks tags up every second.
async fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("IMAGE_PULL_POLICY".to_owned(), "missing".to_owned()),
        ("IMAGE_CHECK_INTERVAL".to_owned(), "1".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Server::start_with(Options {
        env,
        ..Default::default()
    })
    .await
}

/// `POST {path}/update` from digest `from` (at `generation`) to `to`, then waits within
/// `limit` until the judge has kept it: recorded, running on `to`, nothing pending.
pub(crate) async fn update_kept(
    s: &Server,
    path: &str,
    generation: i64,
    from: &str,
    to: &str,
    limit: Duration,
) -> Resp {
    let r = s.post(&format!("{path}/update")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["generation"].as_i64().unwrap() > generation);
    let r = s
        .wait_for(path, limit, |r| {
            r.json["last_update"]["result"] == "updated" && r.json["updating"] == false
        })
        .await;
    assert_eq!(r.json["last_update"]["from"], json!(from), "{}", r.text);
    assert_eq!(r.json["last_update"]["to"], json!(to), "{}", r.text);
    assert_eq!(r.json["image_digest"], json!(to), "{}", r.text);
    assert_eq!(r.json["update_available"], Value::Null, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    r
}

pub(crate) const START: &str = "exec sleep 3600\n";
pub(crate) const COMMAND: &[&str] = &["sh", "/start.sh"];
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_new_digest_is_seen_filtered_listed_and_rolled_out_on_request() {
    let mut repo = Repo::new();
    let d1 = repo.publish("v1", START, None);
    let s = server(&[]).await;
    let cuid = s
        .create_running(&json!({"image": repo.tag, "command": COMMAND}))
        .await;
    assert_eq!(version_in(&cuid), "v1");
    let path = format!("/containers/{cuid}");
    // The checker learns what it runs; nothing newer yet.
    let r = s
        .wait_for(&path, LIMIT, |r| r.json["image_digest"] == json!(d1))
        .await;
    assert_eq!(r.json["update_available"], Value::Null, "{}", r.text);
    assert_eq!(r.json["auto_update"], false);
    assert_eq!(r.json["last_update"], Value::Null);
    let generation = r.json["generation"].as_i64().unwrap();
    let from_event = newest_event_id(&s).await;

    // A release under the same tag; the host keeps the tag on v1 (it does not pull).
    let v1 = image_of(&cuid);
    let d2 = repo.publish("v2", START, Some(&v1));
    assert_ne!(d1, d2);
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["update_available"]["digest"] == json!(d2)
        })
        .await;
    assert!(
        r.json["update_available"]["seen_at"].is_string(),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["generation"], generation,
        "a check recreates nothing"
    );
    assert_eq!(image_of(&cuid), v1);

    // The event feed carried it.
    let events = container_events_since(&s, &cuid, from_event).await;
    assert!(
        events
            .iter()
            .any(|c| c["update_available"]["digest"] == json!(d2)),
        "{events:?}"
    );

    // The filter and the images listing show it.
    let listed = |q: &str| {
        let s = &s;
        let q = q.to_owned();
        async move {
            let r = s.get(&format!("/containers?{q}")).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["cuid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed("update_available=true").await,
        std::slice::from_ref(&cuid)
    );
    assert!(listed("update_available=false").await.is_empty());
    s.get("/containers?update_available=maybe")
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    let images = s.get("/images").await;
    let image = images.json["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(v1))
        .cloned()
        .unwrap_or_else(|| panic!("{}", images.text));
    assert_eq!(image["update_available"]["digest"], json!(d2), "{image}");

    // The update: pulled by digest, recreated with it, judged, recorded.
    let r = update_kept(&s, &path, generation, &d1, &d2, LIMIT).await;
    assert_eq!(r.json["last_update"]["reason"], Value::Null, "{}", r.text);
    assert_eq!(r.json["image"], json!(repo.tag), "the spec keeps the tag");
    assert_eq!(version_in(&cuid), "v2");
    assert_ne!(image_of(&cuid), v1);
    assert!(listed("update_available=true").await.is_empty());

    // Nothing newer: a second update changes nothing.
    let generation = r.json["generation"].clone();
    let again = s.post(&format!("{path}/update")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["generation"], generation);

    // `auto_update` is a spec field whose change recreates nothing.
    let v2 = image_of(&cuid);
    let id = docker(&["inspect", "--format", "{{.Id}}", &cuid]);
    let r = s.patch_json(&path, &json!({"auto_update": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["auto_update"], true);
    assert_eq!(r.json["generation"], generation);
    assert_eq!(docker(&["inspect", "--format", "{{.Id}}", &cuid]), id);
    assert_eq!(image_of(&cuid), v2);
    s.patch_json(&path, &json!({"auto_update": "yes"}))
        .await
        .assert_error(400, "validation_error", "INVALID_AUTO_UPDATE");

    // A digest reference is not updatable.
    let pinned = s
        .create(&json!({"image": format!("{}@{d2}", repo.tag.rsplit_once(':').unwrap().0)}))
        .await;
    s.post(&format!("/containers/{pinned}/update"))
        .await
        .assert_error(409, "state_error", "IMAGE_NOT_UPDATABLE");
    s.post("/containers/c123e4567-e89b-12d3-a456-426614174000/update")
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
}

#[tokio::test]
async fn a_broken_automatic_update_is_rolled_back_and_says_why() {
    let mut repo = Repo::new();
    let d1 = repo.publish("v1", START, None);
    let mut s = server(&[("IMAGE_UPDATE_TIMEOUT", "12")]).await;
    let cuid = s
        .create_running(&json!({"image": repo.tag, "command": COMMAND, "auto_update": true}))
        .await;
    let path = format!("/containers/{cuid}");
    let r = s
        .wait_for(&path, LIMIT, |r| r.json["image_digest"] == json!(d1))
        .await;
    assert_eq!(r.json["auto_update"], true);
    let v1 = image_of(&cuid);
    let from_event = newest_event_id(&s).await;

    // A release whose command fails at once.
    let d2 = repo.publish("v2", "echo broken >&2; exit 3\n", Some(&v1));
    // The server rolls it out by itself...
    let r = s
        .wait_for(&path, LIMIT, |r| r.json["updating"] == true)
        .await;
    assert_eq!(
        r.json["update_available"]["digest"],
        json!(d2),
        "{}",
        r.text
    );
    // ...and back, saying why.
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["last_update"]["result"] == "rolled_back"
        })
        .await;
    let last = &r.json["last_update"];
    assert_eq!(last["from"], json!(d1), "{}", r.text);
    assert_eq!(last["to"], json!(d2), "{}", r.text);
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(!reason.contains("127.0.0.1"), "{reason}");
    // Back on the old image, running.
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["status"] == "running"
                && r.json["observed_generation"] == r.json["generation"]
                && r.json["image_digest"] == json!(d1)
        })
        .await;
    assert_eq!(r.json["updating"], false);
    assert_eq!(image_of(&cuid), v1);
    assert_eq!(version_in(&cuid), "v1");
    // The newer digest is still shown, but not rolled out again.
    assert_eq!(r.json["update_available"]["digest"], json!(d2));
    let generation = r.json["generation"].clone();
    // The feed told the story: the update under way, then the rollback and why.
    let events = container_events_since(&s, &cuid, from_event).await;
    let updating = events.iter().position(|c| c["updating"] == true);
    let rolled = events
        .iter()
        .position(|c| c["last_update"]["result"] == "rolled_back");
    assert!(
        updating.is_some() && rolled.is_some() && updating < rolled,
        "{events:?}"
    );
    assert!(events.iter().any(|c| c["last_update"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("exited with code 3"))));

    // The rollback survives a restart of the server.
    s.kill9();
    s.start_again().await;
    let r = s.get(&path).await;
    assert_eq!(r.json["last_update"]["result"], "rolled_back", "{}", r.text);
    assert_eq!(r.json["generation"], generation);
}

#[tokio::test]
async fn an_update_cut_short_by_kill_9_completes_after_the_restart() {
    let mut repo = Repo::new();
    let d1 = repo.publish("v1", START, None);
    let mut s = server(&[]).await;
    let cuid = s
        .create_running(&json!({"image": repo.tag, "command": COMMAND}))
        .await;
    let path = format!("/containers/{cuid}");
    s.wait_for(&path, LIMIT, |r| r.json["image_digest"] == json!(d1))
        .await;
    let v1 = image_of(&cuid);
    let d2 = repo.publish("v2", START, Some(&v1));
    let r = s.post(&format!("{path}/update?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["updating"], true, "{}", r.text);
    // The server dies before (or while) the reconciler recreates the container.
    s.kill9();
    s.start_again().await;
    let r = s
        .wait_for(&path, LIMIT, |r| {
            r.json["last_update"]["result"] == "updated" && r.json["status"] == "running"
        })
        .await;
    assert_eq!(r.json["image_digest"], json!(d2), "{}", r.text);
    assert_eq!(r.json["observed_generation"], r.json["generation"]);
    assert_eq!(version_in(&cuid), "v2");
}

#[tokio::test]
async fn checks_use_the_registry_credentials_and_keep_to_the_allowlist() {
    let mut repo = Repo::on(AUTHED);
    let d1 = repo.publish("v1", START, None);
    let s = server(&[("REGISTRY_AUTH_FILE", RIGHT_AUTH_FILE)]).await;
    let cuid = s
        .create_running(&json!({"image": repo.tag, "command": COMMAND}))
        .await;
    let path = format!("/containers/{cuid}");
    s.wait_for(&path, LIMIT, |r| r.json["image_digest"] == json!(d1))
        .await;
    let v1 = image_of(&cuid);
    let d2 = repo.publish("v2", START, Some(&v1));
    s.wait_for(&path, LIMIT, |r| {
        r.json["update_available"]["digest"] == json!(d2)
    })
    .await;
    drop(s);

    // Without credentials: the registry refuses, and says nothing of itself.
    let bare = server(&[]).await;
    let other = bare
        .create_running(&json!({"image": repo.tag, "command": COMMAND}))
        .await;
    let r = bare.post(&format!("/containers/{other}/update")).await;
    r.assert_error(422, "state_error", "REGISTRY_AUTH_FAILED");
    drop(bare);

    // A registry the allowlist does not name is not asked.
    let fenced = server(&[
        ("REGISTRY_AUTH_FILE", RIGHT_AUTH_FILE),
        ("REGISTRY_ALLOWLIST", OPEN),
    ])
    .await;
    let third = fenced
        .create_running(&json!({"image": repo.tag, "command": COMMAND}))
        .await;
    let r = fenced.post(&format!("/containers/{third}/update")).await;
    r.assert_error(422, "state_error", "REGISTRY_NOT_ALLOWED");
    let r = fenced.get(&format!("/containers/{third}")).await;
    assert_eq!(r.json["update_available"], Value::Null, "{}", r.text);
    assert_eq!(r.json["generation"], 1, "{}", r.text);
}
