//! The reconciler: a level-triggered controller that makes Docker match the desired state in
//! the store, one compose project per container.
//!
//! - [`Reconciler`] is the handle the API uses: `wake(cuid)` after writing desired state,
//!   `subscribe()` to wait for observed state to change.
//! - The worker runs passes ([`pass::run`]) for woken containers: never two at once for one
//!   container, up to `RECONCILE_CONCURRENCY` in parallel, with a capped, jittered back-off per
//!   container after a failure.
//! - Wake-ups come from the API, from Docker events (one stream, filtered by our label), and
//!   from a periodic resync that lists every container of this instance in one Engine API call
//!   and wakes the ones that differ from the store. At idle no compose process runs.

pub mod compose;
pub mod decide;
pub mod pass;
pub mod render;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, RemoveContainerOptions};
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::Config;
use crate::store::{Identity, Store};
use compose::ComposeFailure;

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest a resync may take before the worker gets back to dispatching.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Container events that can mean drift (exec, attach and the like cannot).
const EVENTS: &[&str] = &[
    "create", "start", "restart", "die", "kill", "stop", "oom", "pause", "unpause", "destroy",
];
/// How long in-flight passes get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// What a pass needs.
pub struct Ctx {
    pub config: Arc<Config>,
    pub store: Store,
    pub docker: crate::docker::Engine,
    pub audit: Arc<Audit>,
    pub identity: Arc<Identity>,
    reconciler: Reconciler,
    network_ready: tokio::sync::OnceCell<()>,
}

impl Ctx {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        docker: crate::docker::Engine,
        audit: Arc<Audit>,
        identity: Arc<Identity>,
        reconciler: Reconciler,
    ) -> Self {
        Self {
            config,
            store,
            docker,
            audit,
            identity,
            reconciler,
            network_ready: tokio::sync::OnceCell::new(),
        }
    }

    /// The Engine API client, or `DOCKER_UNAVAILABLE`.
    pub async fn engine(&self) -> Result<bollard::Docker, ComposeFailure> {
        self.docker.get().await.map_err(unavailable)
    }

    /// Tells waiting requests that observed state changed.
    pub fn changed(&self) {
        self.reconciler.changed();
    }

    /// The one bridge network of this server, made on first need (labelled, no traffic
    /// between containers).
    pub async fn ensure_network(&self) -> Result<(), ComposeFailure> {
        self.network_ready
            .get_or_try_init(|| async {
                let name = render::network_name(&self.identity.instance_id);
                let docker = self.engine().await?;
                match docker
                    .inspect_network(
                        &name,
                        None::<bollard::query_parameters::InspectNetworkOptions>,
                    )
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {}
                    Err(e) => return Err(unavailable(e)),
                }
                let mut labels = HashMap::from([(
                    render::LABEL_INSTANCE.to_owned(),
                    self.identity.instance_id.clone(),
                )]);
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
                    Ok(_) => Ok(()),
                    // Created by a concurrent pass a moment ago.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }) => Ok(()),
                    Err(e) => Err(unavailable(e)),
                }
            })
            .await
            .map(|_| ())
    }
}

fn unavailable(e: bollard::errors::Error) -> ComposeFailure {
    ComposeFailure {
        code: "DOCKER_UNAVAILABLE",
        message: e.to_string(),
    }
}

#[derive(Default)]
struct Queue {
    /// Woken and waiting for a worker slot (or for their back-off to pass).
    pending: HashSet<String>,
    /// Passes in flight.
    running: HashSet<String>,
    /// Woken while a pass was in flight: run again after it (`true`: by a request, which
    /// skips the back-off that pass may set).
    again: HashMap<String, bool>,
    backoff: HashMap<String, Backoff>,
}

#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// The API's handle on the reconciler. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    queue: Arc<Mutex<Queue>>,
    notify: Arc<Notify>,
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Reconciler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reconciler {
    pub fn new() -> Self {
        Self {
            queue: Arc::default(),
            notify: Arc::new(Notify::new()),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// A request changed desired state: run a pass now, past any back-off (the client is
    /// waiting, and the change may be the fix).
    pub fn wake(&self, cuid: &str) {
        self.enqueue(cuid, true);
    }

    /// An event or resync noticed something: run a pass, respecting back-off.
    fn wake_soft(&self, cuid: &str) {
        self.enqueue(cuid, false);
    }

    fn enqueue(&self, cuid: &str, urgent: bool) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if urgent {
            if let Some(b) = q.backoff.get_mut(cuid) {
                b.until = Instant::now();
            }
        }
        if q.running.contains(cuid) {
            *q.again.entry(cuid.to_owned()).or_insert(false) |= urgent;
        } else {
            q.pending.insert(cuid.to_owned());
        }
        drop(q);
        self.notify.notify_one();
    }

    /// A receiver that sees a new value whenever observed state changed somewhere.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Takes the pending containers that may run now (at most `slots`), and tells when the
    /// earliest backed-off one becomes due.
    fn take_ready(&self, slots: usize) -> (Vec<String>, Option<Instant>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut next_due: Option<Instant> = None;
        let candidates: Vec<String> = q.pending.iter().cloned().collect();
        for cuid in candidates {
            match q.backoff.get(&cuid) {
                Some(b) if b.until > now => {
                    next_due = Some(next_due.map_or(b.until, |d| d.min(b.until)));
                }
                _ if ready.len() < slots => {
                    q.pending.remove(&cuid);
                    q.running.insert(cuid.clone());
                    ready.push(cuid);
                }
                _ => {}
            }
        }
        (ready, next_due)
    }

    fn finished(&self, cuid: &str, failed: bool) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.running.remove(cuid);
        if failed {
            let failures = q.backoff.get(cuid).map_or(0, |b| b.failures) + 1;
            q.backoff.insert(
                cuid.to_owned(),
                Backoff {
                    until: Instant::now() + backoff_delay(failures),
                    failures,
                },
            );
            // Retry after the back-off, even if nothing else wakes it.
            q.pending.insert(cuid.to_owned());
        } else {
            q.backoff.remove(cuid);
        }
        if let Some(urgent) = q.again.remove(cuid) {
            q.pending.insert(cuid.to_owned());
            if let (true, Some(b)) = (urgent, q.backoff.get_mut(cuid)) {
                b.until = Instant::now();
            }
        }
    }

    /// Starts the worker, the event listener and the resync timer; they stop on `shutdown`.
    pub fn spawn(&self, ctx: Ctx, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let ctx = Arc::new(ctx);
        tokio::spawn(worker(ctx, shutdown))
    }
}

/// Doubling from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`], with ±20% jitter so many
/// failing containers do not retry in lockstep.
fn backoff_delay(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let capped = exp.min(BACKOFF_MAX);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    capped.mul_f64(jitter)
}

async fn worker(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let stray_dir = ctx.config.data_dir.join("projects");
    compose::kill_strays(&stray_dir);
    let reconciler = ctx.reconciler.clone();
    let slots = Arc::new(Semaphore::new(ctx.config.reconcile_concurrency));
    let mut passes: JoinSet<(String, bool)> = JoinSet::new();
    let events = tokio::spawn(listen_events(ctx.clone(), shutdown.clone()));
    let mut next_resync = Instant::now();

    loop {
        if Instant::now() >= next_resync {
            // Bounded: a hung daemon must not stall dispatching and shutdown.
            match tokio::time::timeout(RESYNC_TIMEOUT, resync(&ctx)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "resync failed"),
                Err(_) => tracing::warn!("resync timed out"),
            }
            next_resync = Instant::now() + ctx.config.resync_interval;
        }
        let (ready, next_due) = reconciler.take_ready(slots.available_permits());
        for cuid in ready {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let ctx = ctx.clone();
            passes.spawn(async move {
                // A panicking pass counts as a failure, so the container is never left
                // marked as running a pass.
                let outcome = AssertUnwindSafe(pass::run(&ctx, &cuid))
                    .catch_unwind()
                    .await;
                if outcome.is_err() {
                    tracing::error!(%cuid, "reconcile pass panicked");
                }
                drop(permit);
                (cuid, !matches!(outcome, Ok(Ok(()))))
            });
        }
        let wake_at = next_due.map_or(next_resync, |d| d.min(next_resync));
        tokio::select! {
            () = reconciler.notify.notified() => {}
            () = tokio::time::sleep_until(wake_at) => {}
            Some(done) = passes.join_next(), if !passes.is_empty() => {
                match done {
                    Ok((cuid, failed)) => reconciler.finished(&cuid, failed),
                    Err(e) => tracing::error!(error = %e, "reconcile pass panicked"),
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    events.abort();
    // Let passes finish their step (a half-done step is repaired at the next start anyway).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while passes.join_next().await.is_some() {}
    })
    .await;
    passes.abort_all();
}

/// One Engine API call lists this instance's containers; containers whose Docker state
/// differs from the store are woken; containers with our label and no row are removed.
async fn resync(ctx: &Ctx) -> Result<(), String> {
    let label = format!("{}={}", render::LABEL_INSTANCE, ctx.identity.instance_id);
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
        ..Default::default()
    };
    let listed = ctx
        .engine()
        .await
        .map_err(|e| e.to_string())?
        .list_containers(Some(options))
        .await
        .map_err(|e| e.to_string())?;
    let rows = ctx.store.summaries().await.map_err(|e| e.to_string())?;
    let known: HashSet<String> = ctx
        .store
        .all_cuids()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();

    let mut in_docker: HashMap<String, (String, Option<i64>)> = HashMap::new();
    for c in listed {
        let labels = c.labels.unwrap_or_default();
        let Some(cuid) = labels.get(render::LABEL_CUID).cloned() else {
            continue;
        };
        if !known.contains(&cuid) {
            remove_orphan(ctx, &cuid, c.id.as_deref().unwrap_or(&cuid)).await;
            continue;
        }
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        let generation = labels
            .get(render::LABEL_GENERATION)
            .and_then(|g| g.parse().ok());
        in_docker.insert(cuid, (state, generation));
    }
    for row in rows {
        let docker = in_docker.get(&row.cuid);
        let in_sync = !row.deleted
            && row.status != "error"
            && row.observed_generation == row.generation
            && row.restart_done >= row.restart_requested
            && match docker {
                None => {
                    matches!(row.status.as_str(), "created" | "stopped")
                        && row.desired_state != "running"
                        && row.desired_state != "paused"
                }
                Some((state, generation)) => {
                    *generation == Some(row.generation)
                        && match state.as_str() {
                            "exited" | "created" => {
                                matches!(row.status.as_str(), "stopped" | "exited")
                            }
                            other => other == row.status,
                        }
                }
            };
        if !in_sync {
            ctx.reconciler.wake_soft(&row.cuid);
        }
    }
    Ok(())
}

async fn remove_orphan(ctx: &Ctx, cuid: &str, id: &str) {
    let Ok(docker) = ctx.engine().await else {
        return;
    };
    let result = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    ctx.audit.record(crate::fields! {
        "actor" => "reconciler",
        "cuid" => cuid,
        "action" => "remove_orphan",
        "reason" => "container carries this instance's label but has no row in the store",
        "outcome" => if result.is_ok() { "ok" } else { "error" },
    });
    let project = crate::fs::mounts::project_dir(&ctx.config, cuid);
    let removed = tokio::task::spawn_blocking(move || crate::fs::remove::remove_tree(&project));
    if let Ok(Err(e)) = removed.await {
        tracing::warn!(cuid, error = %e, "cannot remove the project directory of an orphan");
    }
}

/// Docker events for our containers wake their passes. When the stream breaks (daemon
/// restart), a resync is forced once it is back, since events were missed.
async fn listen_events(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let label = format!("{}={}", render::LABEL_INSTANCE, ctx.identity.instance_id);
    loop {
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                (
                    "event".to_owned(),
                    EVENTS.iter().map(|e| e.to_string()).collect(),
                ),
                ("label".to_owned(), vec![label.clone()]),
            ])),
            ..Default::default()
        };
        let mut stream = match ctx.engine().await {
            Ok(docker) => docker.events(Some(options)).boxed(),
            Err(_) => futures_util::stream::empty().boxed(),
        };
        let mut connected = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        if !connected {
                            connected = true;
                        }
                        let cuid = event.actor.and_then(|a| a.attributes).and_then(|a| a.get(render::LABEL_CUID).cloned());
                        if let Some(cuid) = cuid {
                            ctx.reconciler.wake_soft(&cuid);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "docker event stream broke");
                        break;
                    }
                    None => break,
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Events may have been missed while the stream was down.
        if let Ok(Err(e)) = tokio::time::timeout(RESYNC_TIMEOUT, resync(&ctx)).await {
            tracing::debug!(error = %e, "resync after event stream loss failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        for failures in 1..30 {
            let d = backoff_delay(failures);
            assert!(d <= BACKOFF_MAX.mul_f64(1.2), "{failures}: {d:?}");
            assert!(d >= BACKOFF_BASE.mul_f64(0.8), "{failures}: {d:?}");
        }
        assert!(backoff_delay(1) < Duration::from_secs(1));
        assert!(backoff_delay(20) > Duration::from_secs(40));
    }

    #[tokio::test]
    async fn one_container_is_never_run_twice_at_once() {
        let r = Reconciler::new();
        r.wake("a");
        r.wake("b");
        let (ready, _) = r.take_ready(1);
        assert_eq!(ready.len(), 1);
        let first = ready[0].clone();
        // Woken again while running: queued for after, not handed out.
        r.wake(&first);
        let (ready, _) = r.take_ready(10);
        assert!(!ready.contains(&first));
        r.finished(&first, false);
        let (ready, _) = r.take_ready(10);
        assert!(ready.contains(&first));
    }

    #[tokio::test]
    async fn failures_back_off_unless_woken_by_a_request() {
        let r = Reconciler::new();
        r.wake("a");
        let (ready, _) = r.take_ready(1);
        assert_eq!(ready, vec!["a".to_owned()]);
        r.finished("a", true);
        let (ready, due) = r.take_ready(1);
        assert!(ready.is_empty() && due.is_some(), "backed off");
        r.wake_soft("a");
        assert!(r.take_ready(1).0.is_empty(), "events respect the back-off");
        r.wake("a");
        assert_eq!(
            r.take_ready(1).0,
            vec!["a".to_owned()],
            "a request skips it"
        );
    }
}
