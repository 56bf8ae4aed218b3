//! All of the reconciler's I/O with the world that runs containers, behind two small traits:
//! [`Backend`], what a pass asks of the world (look at a container, make it, start, stop,
//! pause, remove it and its files; remove an orphan; clear what an earlier run left), and
//! [`Observer`], what the reconciler learns of all containers at once (the list, the event
//! stream). The pass ([`super::pass`]) and the observation ([`super::observe`]) only decide
//! and record, so they are unit-tested against a recording double, and a second way of
//! running containers (Swarm, say) is one more implementation of both traits.
//!
//! [`DockerBackend`] is the production one. Compose makes, remakes and removes containers
//! (the rendered file stays the truth an operator reads); steps that change no spec (start
//! of a current container, stop, pause, unpause, restart) are one Engine API call each on
//! the container compose made: a `docker compose` process costs a 76 MB Go binary and ~90 ms
//! of CPU to make that same call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::errors::Error as DockerError;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    InspectContainerOptions, InspectNetworkOptions, ListNetworksOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use super::compose;
use super::decide::Observed;
use super::firewall::{self, Chains, Placement, Rule};
use super::{iptables, render, sandbox};
use crate::appdir::mounts;
use crate::config::Config;
use crate::lifecycle::{DockerState, ErrorCode};
use crate::step_error::StepError;
use crate::store::containers::Container;

/// Seconds a stop (or the stop of a restart) waits for the main process before SIGKILL, as
/// `docker compose stop` does.
pub const STOP_TIMEOUT_SECS: i32 = 10;

/// Answers of the Engine API that leave nothing to repair for a stop, pause, unpause or
/// restart: already so (304), no such container (404), not in that state (409).
const SETTLED_ANSWERS: &[u16] = &[304, 404, 409];

pub type Step<'a, T = ()> = BoxFuture<'a, Result<T, StepError>>;

/// What a reconcile pass can do to the world. Every method is idempotent: done twice, or
/// after a crash half-way, it leaves the same result.
pub trait Backend: Send + Sync {
    /// The container named `cuid`, if it exists and belongs to this server.
    fn observe<'a>(&'a self, cuid: &'a str) -> Step<'a, Option<Observed>>;
    /// The image is on the host, pulled first as `IMAGE_PULL_POLICY` says; fails with
    /// `IMAGE_NOT_FOUND`, `REGISTRY_UNAVAILABLE`, `REGISTRY_AUTH_FAILED` or
    /// `REGISTRY_NOT_ALLOWED`.
    fn ensure_image<'a>(&'a self, image: &'a str) -> Step<'a>;
    /// The network every container joins exists, and so do the egress chains, their hooks
    /// and the bridge-wide rules for it (a container without rules of its own reaches
    /// nothing).
    fn ensure_network(&self) -> Step<'_>;
    /// The container's `/app` directory exists and belongs to its user.
    fn prepare_mount<'a>(&'a self, c: &'a Container) -> Step<'a>;
    /// The container's project (its compose file) describes its current spec.
    fn write_project<'a>(&'a self, c: &'a Container) -> Step<'a>;
    /// Creates, recreates (after a spec change) or starts the container from its project.
    fn up<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    /// Makes the container again from its project even if nothing in it changed (what it
    /// refers to, its network say, was removed behind our back).
    fn recreate<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    /// Starts the existing, current container.
    fn start<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    fn stop<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    fn pause<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    fn unpause<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    fn restart<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    /// Removes the container and what its project made (whether or not a project is left).
    fn remove<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    /// Removes the container's project directory and its `/app` (whatever the container left
    /// there: deep trees, links, special files).
    fn remove_files<'a>(&'a self, cuid: &'a str) -> Step<'a>;
    /// Removes a container that carries this server's label but has no row (`id`: the
    /// backend's own id of it) and its project directory. Its `/app`, which may hold
    /// anything, is left to the start-up sweep of directories without a row.
    fn remove_orphan<'a>(&'a self, cuid: &'a str, id: &'a str) -> Step<'a>;
    /// At start-up, before the first pass: ends whatever an earlier run of this server left
    /// working on its containers, so that two never race on one container.
    fn reap_strays(&self) -> Step<'_>;
    /// The container's egress rules are exactly `rules` (none: its rules are removed); with
    /// rules, the server's chains, their hooks and the bridge-wide rules of `bridge` exist.
    fn firewall<'a>(
        &'a self,
        cuid: &'a str,
        bridge: Option<&'a str>,
        rules: &'a [Rule],
    ) -> Step<'a>;
    /// The registry digest (`sha256:…`) of the image the container `cuid` runs, for the
    /// repository of `reference` (its image's `RepoDigests`); `None` when there is no such
    /// container or its image never came from that registry (built on the host).
    fn running_digest<'a>(&'a self, cuid: &'a str, reference: &'a str) -> Step<'a, Option<String>>;
    /// The digest the registry has for the tag `reference` now (a manifest `HEAD`, not a
    /// pull; see [`crate::images::registry_digest`]).
    fn registry_digest<'a>(&'a self, reference: &'a str) -> Step<'a, String>;
}

/// The most of a probe's output the representation shows (its end).
pub const HEALTH_LOG_MAX: usize = 1024;

/// The last `max` bytes of `s` (cut at a character boundary), trimmed.
pub fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// Docker's health of a container in `state`: its status and the tail of its last probe's
/// output. Nothing while it is not running or paused (Docker keeps the last word of a
/// stopped container's check, which says nothing about now) or without a check.
pub fn health_of(
    state: DockerState,
    h: Option<&bollard::models::Health>,
) -> (Option<crate::spec::Health>, Option<String>) {
    if !matches!(state, DockerState::Running | DockerState::Paused) {
        return (None, None);
    }
    let Some(h) = h else { return (None, None) };
    let status = h
        .status
        .and_then(|s| crate::spec::Health::parse(s.as_ref()));
    if status.is_none() {
        return (None, None);
    }
    let log = h
        .log
        .as_ref()
        .and_then(|l| l.last())
        .map(|r| tail(r.output.as_deref().unwrap_or_default(), HEALTH_LOG_MAX));
    (status, log)
}

/// The health a listing shows: the `Health` field of newer daemons, else the end of the
/// status text (`Up 5 minutes (healthy)`, `(health: starting)`).
pub fn listed_health(
    state: DockerState,
    field: Option<&str>,
    status_text: Option<&str>,
) -> Option<crate::spec::Health> {
    use crate::spec::Health;
    if !matches!(state, DockerState::Running | DockerState::Paused) {
        return None;
    }
    if let Some(h) = field.and_then(Health::parse) {
        return Some(h);
    }
    let text = status_text?;
    if text.ends_with("(health: starting)") {
        Some(Health::Starting)
    } else if text.ends_with("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if text.ends_with("(healthy)") {
        Some(Health::Healthy)
    } else {
        None
    }
}

/// The image is in the store of the Engine `docker` (`place` names it in a refusal: "this
/// Docker host", "node cm-swarm-2"), pulled first as `IMAGE_PULL_POLICY` says. An inspect
/// that fails other than with 404 is `DOCKER_UNAVAILABLE` (the Engine is not answering: a
/// pull would fail the same way, and say less).
pub(super) async fn ensure_image_on(
    docker: &bollard::Docker,
    image: &str,
    place: &str,
    config: &Config,
    pulls: &crate::images::Pulls,
) -> Result<(), StepError> {
    use crate::images::PullPolicy;
    let policy = config.image_pull_policy;
    if policy != PullPolicy::Always {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                crate::metrics::engine_error("inspect_image");
                return Err(StepError::new(
                    ErrorCode::DockerUnavailable,
                    format!("cannot inspect image {image} on {place}: {e}"),
                ));
            }
        }
    }
    if policy == PullPolicy::Never {
        return Err(StepError::new(
            ErrorCode::ImageNotFound,
            format!("image {image} is not on {place} and IMAGE_PULL_POLICY is never"),
        ));
    }
    crate::images::pull(
        docker,
        image,
        config.registry_auth_file.as_deref(),
        &config.registry_allowlist,
        pulls,
    )
    .await
}

/// One container of this server as the backend's list shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub cuid: String,
    /// The backend's own id of it (what an orphan is removed by).
    pub id: String,
    pub state: DockerState,
    /// Where it is on the server's network, while it has an address there.
    pub placement: Option<Placement>,
    /// The spec generation it was made from (our label).
    pub generation: Option<i64>,
    /// Its health as the list shows it (`None`: no health check, or not running).
    pub health: Option<crate::spec::Health>,
}

/// The cuids of containers the backend reports a change of, as they happen. An error or the
/// end of the stream means it was lost: changes may be missed from then on.
pub type Events = BoxStream<'static, Result<String, StepError>>;

/// What the reconciler learns about all of this server's containers at once.
pub trait Observer: Send + Sync {
    /// Every container that carries this server's label, stopped ones included.
    fn list(&self) -> Step<'_, Vec<Listed>>;
    /// A new subscription to changes of this server's containers.
    fn events(&self) -> Events;
    /// The egress rules in place, by container.
    fn firewall_rules(&self) -> Step<'_, firewall::Current>;
}

/// Docker through compose (make, remake, remove) and the Engine API (everything else).
pub struct DockerBackend {
    /// Held while the network is looked up and made (see `ensure_network`).
    network_lock: tokio::sync::Mutex<()>,
    /// Held while the firewall is read and changed: one batch at a time, each made from
    /// what was read just before.
    firewall_lock: tokio::sync::Mutex<()>,
    pub(super) chains: Chains,
    config: Arc<Config>,
    pub(super) instance_id: String,
    pub(super) docker: crate::docker::Engine,
    pulls: crate::images::Pulls,
}

impl DockerBackend {
    pub fn new(
        config: Arc<Config>,
        instance_id: String,
        docker: crate::docker::Engine,
        pulls: crate::images::Pulls,
    ) -> Self {
        Self {
            network_lock: tokio::sync::Mutex::new(()),
            firewall_lock: tokio::sync::Mutex::new(()),
            chains: Chains::of(&instance_id),
            config,
            instance_id,
            docker,
            pulls,
        }
    }

    async fn engine(&self) -> Result<bollard::Docker, StepError> {
        self.docker.get().await.map_err(|e| unavailable(&e))
    }

    /// The label filter that selects this server's containers.
    pub(super) fn instance_label(&self) -> String {
        format!("{}={}", render::LABEL_INSTANCE, self.instance_id)
    }

    fn project_dir(&self, cuid: &str) -> PathBuf {
        render::project_dir(&self.config, cuid)
    }

    async fn compose(&self, cuid: &str, args: &[&str]) -> Result<(), StepError> {
        compose::run(
            cuid,
            &self.project_dir(cuid),
            args,
            self.config.compose_timeout,
        )
        .await
    }

    /// One Engine API call on the container. The answers in `fine` are not failures: the
    /// pass observes again and decides anew.
    async fn engine_step(
        &self,
        what: &str,
        fine: &[u16],
        call: impl std::future::Future<Output = Result<(), DockerError>>,
    ) -> Result<(), StepError> {
        match call.await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code, .. })
                if fine.contains(&status_code) =>
            {
                Ok(())
            }
            Err(e @ DockerError::DockerResponseServerError { .. }) => {
                crate::metrics::engine_error("container_action");
                Err(StepError::new(
                    ErrorCode::ComposeFailed,
                    format!("docker {what} failed: {e}"),
                ))
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// The Docker id of container `name` and whether Docker has processes at work in it
    /// (`false`: created, exited or dead), when it is a gVisor one (the only runtime that
    /// leaves processes behind); `None` otherwise or when it is not there.
    async fn sandbox_of(&self, name: &str) -> Option<(String, bool)> {
        let info = self
            .engine()
            .await
            .ok()?
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let runtime = info.host_config.as_ref().and_then(|h| h.runtime.as_deref());
        if runtime != Some(self.config.runtime_of(crate::spec::Isolation::Gvisor)) {
            return None;
        }
        // Running, paused, restarting (Docker's own restart policy at work) or being
        // removed: its processes are Docker's, never reaped.
        let st = info.state.unwrap_or_default();
        let settled = matches!(
            DockerState::of(&st),
            DockerState::Created | DockerState::Exited | DockerState::Dead
        );
        Some((info.id?, !settled))
    }

    /// Around a start: a gVisor container that is not running may hold the sandbox of a
    /// start that failed (Docker records it as exited with 127), and cannot start again
    /// until it is reaped (`id already in use`).
    async fn reap_failed_start(&self, cuid: &str) {
        if let Some((id, false)) = self.sandbox_of(cuid).await {
            sandbox::reap(&id).await;
        }
    }

    /// `compose up` (plain or `--force-recreate`), then what gVisor left: of the container
    /// it replaced, and of its own start when that failed.
    async fn compose_up(&self, cuid: &str, args: &[&str]) -> Result<(), StepError> {
        let before = self.sandbox_of(cuid).await;
        if let Some((id, false)) = &before {
            sandbox::reap(id).await;
        }
        let result = self.compose(cuid, args).await;
        let after = self.sandbox_of(cuid).await;
        if let Some((old, _)) = &before {
            if after.as_ref().map(|(id, _)| id) != Some(old) {
                sandbox::reap(old).await;
            }
        }
        if result.is_err() {
            if let Some((id, false)) = &after {
                sandbox::reap(id).await;
            }
        }
        result
    }

    /// Removes a container (by name or Docker id) by force; one already gone is removed.
    /// `what` names it in the failure's message.
    async fn force_remove(&self, container: &str, what: &str) -> Result<(), StepError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let removed = self
            .engine()
            .await?
            .remove_container(container, Some(options))
            .await;
        match removed {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(StepError::new(
                ErrorCode::DockerUnavailable,
                format!("cannot remove {what}: {e}"),
            )),
        }
    }
}

impl DockerBackend {
    /// The egress chains, their hooks and the bridge-wide rules of the network `id`, before
    /// a container runs on it: one that starts before its pass has put its own rules in
    /// place reaches nothing. (Docker names the bridge of a network made without a name of
    /// its own `br-` and the first 12 characters of its id.)
    async fn ensure_frame(&self, id: Option<&str>) -> Result<(), StepError> {
        let Some(short) = id.and_then(|id| id.get(..12)) else {
            return Ok(());
        };
        let _one_at_a_time = self.firewall_lock.lock().await;
        let current = firewall::parse(&iptables::save().await?, &self.chains);
        match firewall::frame_batch(&self.chains, &current, &format!("br-{short}")) {
            None => Ok(()),
            Some(batch) => iptables::restore(&batch).await,
        }
    }
}

/// Everything of a removed container on the host's disk: its disk image (if capped), its
/// snapshots (their rows go with its row), its project directory and its /app tree. A
/// tree can be anything (a 100,000-level chain): off the async workers, iteratively. A
/// capped one's is an image: unmounted and removed whole (the container is gone, so
/// nothing holds it). Shared by every backend: the files live where the server runs.
pub(super) async fn remove_container_files(
    config: Arc<Config>,
    cuid: String,
    dirs: [PathBuf; 2],
) -> Result<(), StepError> {
    tokio::task::spawn_blocking(move || {
        crate::appdir::disk::remove(&config, &cuid).map_err(|e| {
            StepError::new(
                ErrorCode::IoError,
                format!("cannot remove the disk image of {cuid}: {e}"),
            )
        })?;
        crate::appdir::snapshot::remove_all(&config, &cuid).map_err(|e| {
            StepError::new(
                ErrorCode::IoError,
                format!("cannot remove the snapshots of {cuid}: {e}"),
            )
        })?;
        for dir in dirs {
            crate::appdir::remove::remove_tree(&dir).map_err(|e| {
                StepError::new(
                    ErrorCode::IoError,
                    format!("cannot remove {}: {e}", dir.display()),
                )
            })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StepError::new(ErrorCode::IoError, format!("removal failed: {e}")))?
}

fn unavailable(e: &DockerError) -> StepError {
    crate::metrics::engine_error("reconciler");
    StepError::new(ErrorCode::DockerUnavailable, e.to_string())
}

/// Of the networks named `name` (this server's), keeps one: the one containers are on, else
/// the oldest; the others, empty, are removed. Returns the id kept.
async fn one_network(docker: &bollard::Docker, name: &str) -> Result<String, StepError> {
    let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let listed = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| unavailable(&e))?;
    // The name filter matches parts of names: only the exact name counts.
    let mut found = Vec::new();
    for n in listed
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
    {
        let Some(id) = n.id else { continue };
        let inspected = docker
            .inspect_network(&id, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| unavailable(&e))?;
        let used = inspected.containers.is_some_and(|c| !c.is_empty());
        found.push((!used, n.created.map(|c| c.to_string()), id));
    }
    // Used first, then the oldest.
    found.sort();
    let Some((_, _, kept)) = found.first().cloned() else {
        return Err(StepError::new(
            ErrorCode::DockerUnavailable,
            format!("the network {name} vanished while it was being made unique"),
        ));
    };
    for (unused, _, id) in found.iter().skip(1) {
        if *unused {
            if let Err(e) = docker.remove_network(id).await {
                tracing::warn!(network = %id, error = %e, "cannot remove a duplicate network");
            }
        }
    }
    tracing::warn!(network = %name, kept = %kept, copies = found.len(), "a duplicate network was removed");
    Ok(kept)
}

/// Where a container is on the server's network (`networks` of its inspect or list), while
/// it has an address there. The bridge is Docker's name for a network made without one of
/// its own: `br-` and the first 12 characters of its id.
pub(super) fn placement(
    networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
    network: &str,
) -> Option<Placement> {
    let ep = networks?.get(network)?;
    let address = ep.ip_address.as_deref()?.parse().ok()?;
    let id = ep.network_id.as_deref()?;
    Some(Placement {
        address,
        bridge: format!("br-{}", id.get(..12)?),
    })
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        // Docker says 0001-01-01 for "never".
        .filter(|t| t.timestamp() > 0)
}

impl Backend for DockerBackend {
    fn observe<'a>(&'a self, cuid: &'a str) -> Step<'a, Option<Observed>> {
        Box::pin(async move {
            let inspect = self
                .engine()
                .await?
                .inspect_container(cuid, None::<InspectContainerOptions>)
                .await;
            let info = match inspect {
                Ok(info) => info,
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(e) => {
                    crate::metrics::engine_error("inspect_container");
                    return Err(StepError::new(
                        ErrorCode::DockerUnavailable,
                        format!("cannot inspect the container: {e}"),
                    ));
                }
            };
            let labels = info
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(render::LABEL_INSTANCE) != Some(&self.instance_id) {
                return Ok(None);
            }
            let placement = placement(
                info.network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref()),
                &render::network_name(&self.instance_id),
            );
            let st = info.state.unwrap_or_default();
            let state = crate::lifecycle::DockerState::of(&st);
            let (health, health_log) = health_of(state, st.health.as_ref());
            Ok(Some(Observed {
                id: info.id.unwrap_or_default(),
                state,
                exit_code: st.exit_code,
                oom_killed: st.oom_killed.unwrap_or(false),
                generation: labels
                    .get(render::LABEL_GENERATION)
                    .and_then(|g| g.parse().ok()),
                started_at: st.started_at.as_deref().and_then(parse_time),
                finished_at: st.finished_at.as_deref().and_then(parse_time),
                placement,
                health,
                health_log,
                node: None,
                node_address: None,
                lost_node: None,
            }))
        })
    }

    fn ensure_image<'a>(&'a self, image: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            ensure_image_on(
                &docker,
                image,
                "this Docker host",
                &self.config,
                &self.pulls,
            )
            .await
        })
    }

    /// The one bridge network of this server, made when missing (labelled, no traffic
    /// between containers). Looked up every time (one Engine API call): someone may have
    /// removed it since, and compose only joins it. One pass at a time: Docker 20.10 makes
    /// two networks of one name when asked at once, and then neither can be used by name.
    fn ensure_network(&self) -> Step<'_> {
        Box::pin(async move {
            let _one_at_a_time = self.network_lock.lock().await;
            let name = render::network_name(&self.instance_id);
            let docker = self.engine().await?;
            match docker
                .inspect_network(&name, None::<InspectNetworkOptions>)
                .await
            {
                Ok(n) => return self.ensure_frame(n.id.as_deref()).await,
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                // Two networks of the name: a create of a server killed mid-request landed
                // beside the next one's (the daemon's name check is not atomic). Left so,
                // every start would fail on the ambiguous name: one is kept.
                Err(DockerError::DockerResponseServerError {
                    status_code: 400,
                    message,
                }) if message.contains("ambiguous") => {
                    let kept = one_network(&docker, &name).await?;
                    return self.ensure_frame(Some(&kept)).await;
                }
                Err(e) => return Err(unavailable(&e)),
            }
            let mut labels =
                HashMap::from([(render::LABEL_INSTANCE.to_owned(), self.instance_id.clone())]);
            if let Some(tag) = &self.config.instance_tag {
                labels.insert(render::LABEL_TAG.to_owned(), tag.clone());
            }
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned(),
                )])),
                labels: Some(labels),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(made) => self.ensure_frame(Some(&made.id)).await,
                // Created by a concurrent pass a moment ago: its frame too.
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {
                    let made = docker
                        .inspect_network(&name, None::<InspectNetworkOptions>)
                        .await
                        .map_err(|e| unavailable(&e))?;
                    self.ensure_frame(made.id.as_deref()).await
                }
                Err(e) => Err(unavailable(&e)),
            }
        })
    }

    fn prepare_mount<'a>(&'a self, c: &'a Container) -> Step<'a> {
        Box::pin(async move {
            // Asked at every make and remake: the daemon may have been restarted with
            // `userns-remap` turned on or off since.
            let userns = self.docker.userns().await.map_err(|e| {
                crate::metrics::engine_error("reconciler");
                StepError::new(ErrorCode::DockerUnavailable, e)
            })?;
            let owner = mounts::host_owner(&self.config, c.spec.user.as_deref(), userns);
            if let Some(bytes) = c.spec.resources.disk_bytes {
                // The image mounted (again, after a reboot or an unmount behind our back)
                // and grown to a raised cap, before anything starts on it.
                use crate::appdir::disk;
                let io = |e: std::io::Error| {
                    StepError::new(
                        ErrorCode::IoError,
                        format!("cannot mount the disk image of {}: {e}", c.cuid),
                    )
                };
                let blocking = |f: Box<dyn FnOnce() -> std::io::Result<disk::Ensured> + Send>| async {
                    tokio::task::spawn_blocking(f)
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)
                        .map_err(io)
                };
                let (config, cuid) = (self.config.clone(), c.cuid.clone());
                let ensured =
                    blocking(Box::new(move || disk::ensure(&config, &cuid, bytes, owner))).await?;
                if ensured == disk::Ensured::GrowOffline {
                    // The kernel refused to resize the mounted filesystem: stop the
                    // container (this pass starts or recreates it next anyway), so
                    // nothing holds the filesystem, and grow it unmounted.
                    self.stop(&c.cuid).await?;
                    let (config, cuid) = (self.config.clone(), c.cuid.clone());
                    blocking(Box::new(move || {
                        disk::grow_offline(&config, &cuid, bytes).map(|()| disk::Ensured::Ready)
                    }))
                    .await?;
                }
                return Ok(());
            }
            let mount = mounts::mount_dir(&self.config, &c.cuid);
            let io = |e: std::io::Error| {
                StepError::new(
                    ErrorCode::IoError,
                    format!("cannot prepare {}: {e}", mount.display()),
                )
            };
            std::fs::create_dir_all(&mount).map_err(io)?;
            mounts::chown(&mount, owner).map_err(io)
        })
    }

    fn write_project<'a>(&'a self, c: &'a Container) -> Step<'a> {
        Box::pin(async move {
            let file = render::render(&self.config, &self.instance_id, c);
            let path = self.project_dir(&c.cuid).join(compose::FILE_NAME);
            render::write_atomic(&path, &render::to_yaml(&file)).map_err(|e| {
                StepError::new(
                    ErrorCode::IoError,
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            Ok(())
        })
    }

    fn up<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.compose_up(cuid, &["up", "-d", "--no-build", "--pull", "never"]))
    }

    fn recreate<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.compose_up(
            cuid,
            &[
                "up",
                "-d",
                "--no-build",
                "--pull",
                "never",
                "--force-recreate",
            ],
        ))
    }

    fn start<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            // Only "already started" is fine: a 404 here may be a network removed behind our
            // back, which the pass repairs with compose (see `pass::execute`).
            // What an earlier failed start left would refuse this one (`id already in use`).
            self.reap_failed_start(cuid).await;
            let started = self
                .engine_step(
                    "start",
                    &[304],
                    docker.start_container(cuid, None::<StartContainerOptions>),
                )
                .await;
            if started.is_err() {
                self.reap_failed_start(cuid).await;
            }
            started
        })
    }

    fn stop<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            let options = StopContainerOptions {
                t: Some(STOP_TIMEOUT_SECS),
                signal: None,
            };
            self.engine_step(
                "stop",
                SETTLED_ANSWERS,
                docker.stop_container(cuid, Some(options)),
            )
            .await
        })
    }

    fn pause<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            self.engine_step("pause", SETTLED_ANSWERS, docker.pause_container(cuid))
                .await
        })
    }

    fn unpause<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            self.engine_step("unpause", SETTLED_ANSWERS, docker.unpause_container(cuid))
                .await
        })
    }

    fn restart<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.engine().await?;
            let options = RestartContainerOptions {
                t: Some(STOP_TIMEOUT_SECS),
                signal: None,
            };
            self.engine_step(
                "restart",
                SETTLED_ANSWERS,
                docker.restart_container(cuid, Some(options)),
            )
            .await
        })
    }

    /// `compose down`, then the container by name in case compose did not know it (its
    /// project file gone, a half-made project).
    fn remove<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            let before = self.sandbox_of(cuid).await;
            self.compose(cuid, &["down", "--remove-orphans", "-t", "10"])
                .await?;
            self.force_remove(cuid, "the container").await?;
            if let Some((id, _)) = before {
                sandbox::reap(&id).await;
            }
            Ok(())
        })
    }

    fn remove_files<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        let dirs = [
            self.project_dir(cuid),
            mounts::mount_dir(&self.config, cuid),
        ];
        Box::pin(remove_container_files(
            self.config.clone(),
            cuid.to_owned(),
            dirs,
        ))
    }

    /// By Docker's id; the project directory goes even when Docker refused (it holds one
    /// small file of ours).
    fn remove_orphan<'a>(&'a self, cuid: &'a str, id: &'a str) -> Step<'a> {
        Box::pin(async move {
            let removed = self.force_remove(id, "the orphan container").await;
            if removed.is_ok() {
                sandbox::reap(id).await;
            }
            let project = self.project_dir(cuid);
            let _ =
                tokio::task::spawn_blocking(move || crate::appdir::remove::remove_tree(&project))
                    .await;
            removed
        })
    }

    fn firewall<'a>(
        &'a self,
        cuid: &'a str,
        bridge: Option<&'a str>,
        rules: &'a [Rule],
    ) -> Step<'a> {
        Box::pin(async move {
            let _one_at_a_time = self.firewall_lock.lock().await;
            let current = firewall::parse(&iptables::save().await?, &self.chains);
            match firewall::batch(&self.chains, &current, cuid, rules, bridge) {
                None => Ok(()),
                Some(batch) => {
                    tracing::info!(%cuid, rules = rules.len(), "applying egress rules");
                    iptables::restore(&batch).await
                }
            }
        })
    }

    fn running_digest<'a>(&'a self, cuid: &'a str, reference: &'a str) -> Step<'a, Option<String>> {
        Box::pin(async move {
            // Only a container of this server (its name is its cuid).
            if self.observe(cuid).await?.is_none() {
                return Ok(None);
            }
            let docker = self.engine().await?;
            crate::images::container_digest(&docker, cuid, reference)
                .await
                .map_err(|e| {
                    crate::metrics::engine_error("inspect_image");
                    unavailable(&e)
                })
        })
    }

    fn registry_digest<'a>(&'a self, reference: &'a str) -> Step<'a, String> {
        Box::pin(async move {
            let docker = self.engine().await?;
            crate::images::registry_digest(
                &docker,
                reference,
                self.config.registry_auth_file.as_deref(),
                &self.config.registry_allowlist,
            )
            .await
        })
    }

    /// A server killed with SIGKILL leaves its `docker compose` children behind.
    fn reap_strays(&self) -> Step<'_> {
        Box::pin(async move {
            compose::kill_strays(&self.config.data_dir.join("projects"));
            Ok(())
        })
    }
}
