//! The Docker side that is not `docker compose`: the Engine API client (bollard) and a clean
//! environment for the `docker` CLI processes the server starts. A leaf: it knows nothing of
//! the rest of the server (what a failure means to a request is decided in `http`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::Docker;
use tokio::process::Command;

/// The Engine API client, connected per `DOCKER_HOST` (or the default socket) with an API
/// version agreed with the daemon (20.10 here speaks 1.41). A daemon that is not there yet
/// is not fatal: every use tries again, and health says `degraded` meanwhile.
#[derive(Clone, Default)]
pub struct Engine {
    client: Arc<RwLock<Option<Docker>>>,
}

impl Engine {
    pub async fn connect() -> Self {
        let engine = Self::default();
        if let Err(e) = engine.get().await {
            tracing::warn!(error = %e, "Docker is not reachable yet; will keep trying");
        }
        engine
    }

    /// The connected client, connecting first if needed.
    pub async fn get(&self) -> Result<Docker, bollard::errors::Error> {
        if let Some(client) = self
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(client);
        }
        let docker = Docker::connect_with_defaults()?;
        let negotiated = tokio::time::timeout(Duration::from_secs(2), docker.negotiate_version())
            .await
            .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(negotiated.clone());
        Ok(negotiated)
    }
}

/// Environment variables a `docker` CLI child may see. Everything else, the server's own
/// secrets (`APP_PASS`, all of `.env`) included, stays out of compose and the containers.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "TMPDIR",
];

/// A `docker …` command with a clean environment, in its own process group (so it can be
/// killed as a whole and is not hit by a terminal's Ctrl-C), killed if its handle is dropped.
pub fn docker_command() -> Command {
    let mut cmd = Command::new("docker");
    cmd.env_clear();
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// `docker compose version --short`, read once at start-up (health never spawns a process).
pub async fn compose_version() -> Option<String> {
    let mut cmd = docker_command();
    cmd.args(["compose", "version", "--short"]);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .ok()?
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .to_owned();
    (out.status.success() && !version.is_empty()).then_some(version)
}
