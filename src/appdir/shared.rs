//! `BACKEND=swarm`: every node must see the containers' `/app` directories (`DATA_DIR/mounts`)
//! as this server does, on one shared storage (NFS or similar) mounted at the same path
//! everywhere: a task moved to another node keeps its files only so. Checked at start-up: the
//! server writes a marker holding a random token there, and each node's daemon reads it back
//! through a container it creates (never starts) with that directory bound read-only
//! ([`crate::docker::sees_file`]). A node that does not see it, or whose TLS fails, stops
//! the start; one that does not answer is checked again until it does (RELIABILITY.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::docker::{error_chain, is_tls_failure, Engine, NodeEngines};

/// The marker's name in `DATA_DIR/mounts` (not a cuid: never taken for an orphan).
pub const MARKER: &str = ".cm-storage-check";
/// How long one node's check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// How often nodes that did not answer are tried again.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// The key of the manager in [`NodeEngines::storage`] when `SWARM_NODES` lists no node (a
/// one-node Swarm reached through `DOCKER_HOST`).
pub const MANAGER: &str = "manager";

fn dir(config: &Config) -> PathBuf {
    config.data_dir.join("mounts")
}

/// What one node's daemon said.
enum Found {
    Shared,
    NotShared(String),
    Tls(String),
    Unreachable(String),
}

/// One check of one node. `owner`: this server's instance id, the label of its check
/// containers (an attempt cut by the timeout leaves its removal to a spawned task, and the
/// next attempt removes what is left: [`crate::docker::sees_file`]).
async fn check(engine: &Engine, config: &Config, token: &str, owner: &str) -> Found {
    let run = async {
        let docker = engine.get().await?;
        crate::docker::sees_file(&docker, &dir(config), MARKER, token, owner).await
    };
    match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Err(_) => Found::Unreachable(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        Ok(Ok(Ok(()))) => Found::Shared,
        Ok(Ok(Err(why))) => Found::NotShared(why),
        Ok(Err(e)) if is_tls_failure(&e) => Found::Tls(error_chain(&e)),
        Ok(Err(e)) => Found::Unreachable(error_chain(&e)),
    }
}

/// The daemons to check: each of `SWARM_NODES`, or the manager when none is listed.
fn targets<'a>(nodes: &'a NodeEngines, manager: &'a Engine) -> Vec<(String, &'a Engine)> {
    let listed: Vec<_> = nodes.all().map(|(n, e)| (n.to_owned(), e)).collect();
    if listed.is_empty() {
        vec![(MANAGER.to_owned(), manager)]
    } else {
        listed
    }
}

fn endpoint_of(engine: &Engine) -> String {
    engine
        .endpoint()
        .map(|e| e.url().to_owned())
        .unwrap_or_else(|| "DOCKER_HOST".into())
}

/// Start-up: the marker written with a new token, every node checked at once. `Err`: the
/// refusal, one line naming each node and why.
pub async fn at_start(
    config: &Config,
    nodes: &NodeEngines,
    manager: &Engine,
    owner: &str,
) -> Result<(), String> {
    let dir = dir(config);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let marker = dir.join(MARKER);
    std::fs::write(
        &marker,
        format!("container-manager storage check {token}\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    let targets = targets(nodes, manager);
    let found = futures_util::future::join_all(
        targets.iter().map(|(_, e)| check(e, config, &token, owner)),
    )
    .await;
    let mut refusals = Vec::new();
    for ((name, engine), found) in targets.iter().zip(found) {
        match found {
            Found::Shared => {
                tracing::info!(node = %name, dir = %dir.display(), "the node sees the app storage");
                nodes.storage.set(name, "shared".into());
            }
            Found::NotShared(why) => refusals.push(format!(
                "node {name} does not see this server's app storage {}: {why}",
                dir.display()
            )),
            Found::Tls(why) => refusals.push(format!(
                "node {name} ({}): TLS failed (check its ca.pem, cert.pem, key.pem): {why}",
                endpoint_of(engine)
            )),
            Found::Unreachable(why) => {
                tracing::warn!(node = %name, endpoint = %endpoint_of(engine), error = %why,
                    "the node does not answer: its app storage is checked when it does");
                nodes.storage.set(name, format!("unchecked: {why}"));
            }
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}. BACKEND=swarm needs DATA_DIR/mounts on one shared storage (NFS or similar) \
         mounted at the same path on every node (README \"Swarm backend\")",
        refusals.join("; ")
    ))
}

/// Checks again, every few seconds, the nodes that did not answer at start-up, until none is
/// left. A node found not to share the storage then is logged as an error and shown by
/// `/healthz` (`storage`): the server already serves.
pub async fn recheck(
    config: Arc<Config>,
    nodes: NodeEngines,
    manager: Engine,
    owner: String,
    shutdown: CancellationToken,
) {
    let marker = dir(&config).join(MARKER);
    loop {
        let pending = nodes.storage.unchecked();
        if pending.is_empty() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
        }
        let Some(token) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.split_whitespace().last().map(str::to_owned))
        else {
            tracing::error!(marker = %marker.display(), "the storage marker is gone: nodes not checked");
            return;
        };
        for (name, engine) in targets(&nodes, &manager) {
            if !pending.contains(&name) {
                continue;
            }
            let seen = match check(engine, &config, &token, &owner).await {
                Found::Shared => {
                    tracing::info!(node = %name, "the node answers and sees the app storage");
                    "shared".to_owned()
                }
                Found::NotShared(why) => {
                    tracing::error!(node = %name, error = %why,
                        "the node does not see this server's app storage: containers placed there lose their files");
                    format!("not shared: {why}")
                }
                Found::Tls(why) => {
                    tracing::error!(node = %name, error = %why, "TLS with the node fails");
                    format!("unchecked: TLS failed: {why}")
                }
                Found::Unreachable(why) => format!("unchecked: {why}"),
            };
            nodes.storage.set(&name, seen);
        }
    }
}
