//! The reconciler: a level-triggered controller that makes Docker match the desired state in
//! the store. Rooms:
//! - [`Reconciler`] (here) is the handle the API uses: `wake(&container)` after writing
//!   desired state, `subscribe()` to wait for observed state to change.
//! - [`queue`]: one FIFO line per tenant, served in turn, with de-duplication and
//!   per-container back-off.
//! - `worker`: runs passes for what the queue hands out, up to `RECONCILE_CONCURRENCY` at
//!   once, never two for one container.
//! - [`pass`]: one pass for one container: observe, [`decide`], act through the
//!   [`backend::Backend`], record.
//! - `observe`: events and the periodic resync (one [`backend::Observer`] call lists every
//!   container of this instance) wake the containers that differ from the store, and remove
//!   containers that carry our label but have no row.
//! - [`updates`]: registry checks of the tags containers run, automatic updates, and the
//!   judge that finishes an update or rolls it back.
//! - [`render`] and [`compose`]: the compose project of a container and the CLI that runs it.
//!
//! At idle no compose process runs.

pub mod backend;
pub mod compose;
pub mod decide;
mod docker_observer;
#[cfg(test)]
mod double;
pub mod firewall;
pub mod idle;
mod iptables;
pub mod locate;
mod observe;
pub mod pass;
pub mod probe;
pub mod queue;
pub mod render;
pub mod sandbox;
pub mod swarm;
pub mod updates;
mod worker;

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::Config;
use crate::store::containers::Container;
use crate::store::{Identity, Store};
use backend::{Backend, Observer};

/// What a pass needs. It reaches the world only through `backend` and `observer`, never a
/// Docker handle of its own.
pub struct Ctx {
    pub config: Arc<Config>,
    pub store: Store,
    pub audit: Arc<Audit>,
    pub identity: Arc<Identity>,
    /// Every side effect of a pass.
    pub backend: Arc<dyn Backend>,
    /// The observation of all containers at once (resync, events).
    pub observer: Arc<dyn Observer>,
    reconciler: Reconciler,
}

impl Ctx {
    /// `world` runs the containers: [`backend::DockerBackend`] in production, a recording
    /// double in tests.
    pub fn new<W: Backend + Observer + 'static>(
        config: Arc<Config>,
        store: Store,
        audit: Arc<Audit>,
        identity: Arc<Identity>,
        reconciler: Reconciler,
        world: Arc<W>,
    ) -> Self {
        Self {
            config,
            store,
            audit,
            identity,
            backend: world.clone(),
            observer: world,
            reconciler,
        }
    }

    /// Tells waiting requests that observed state changed.
    pub fn changed(&self) {
        self.reconciler.changed();
    }
}

/// The API's handle on the reconciler. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    queue: Arc<Mutex<queue::Queue>>,
    notify: Arc<Notify>,
    changes: Arc<watch::Sender<u64>>,
    /// Notified when a pass ends (a [`Reconciler::hold`] waits for one in flight).
    passes_done: Arc<Notify>,
    /// Pulls under way and their progress (shown in the representation while a container
    /// waits for its image).
    pub pulls: crate::images::Pulls,
    /// Wakes the image-update task (an update was started: judge it soon).
    updates: Arc<Notify>,
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
            passes_done: Arc::new(Notify::new()),
            pulls: crate::images::Pulls::default(),
            updates: Arc::new(Notify::new()),
        }
    }

    /// A request changed desired state of `c` (the row as written): run a pass now, past
    /// any back-off (the client is waiting, and the change may be the fix). The pass waits
    /// in the line of the container's tenant.
    pub fn wake(&self, c: &Container) {
        self.set_tenant(&c.cuid, c.tenant.as_deref());
        self.enqueue(&c.cuid, true);
    }

    /// An event or resync noticed something: run a pass, respecting back-off.
    fn wake_soft(&self, cuid: &str) {
        self.enqueue(cuid, false);
    }

    fn enqueue(&self, cuid: &str, urgent: bool) {
        self.lock().add(cuid, urgent, Instant::now());
        self.notify.notify_one();
    }

    /// The tenant of `cuid`, learnt from its row (see [`queue::Queue::set_tenant`]).
    fn set_tenant(&self, cuid: &str, tenant: Option<&str>) {
        self.lock().set_tenant(cuid, tenant);
    }

    /// `cuid`'s row is gone.
    fn forget(&self, cuid: &str) {
        self.lock().forget(cuid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, queue::Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that sees a new value whenever observed state changed somewhere.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The containers that may run now (at most `slots`, the tenants taking turns, first
    /// woken first inside one), and when the earliest backed-off one becomes due.
    fn take_ready(&self, slots: usize) -> (Vec<String>, Option<Instant>) {
        self.lock().take(slots, Instant::now())
    }

    /// Containers waiting in line and how long the first of them has waited (metrics).
    pub fn queue_stats(&self) -> (usize, Option<std::time::Duration>) {
        let q = self.lock();
        (q.len(), q.oldest_age(Instant::now()))
    }

    /// The pass in flight for `cuid` wants it back after `delay` (see [`queue::Queue::defer`]).
    fn defer(&self, cuid: &str, delay: std::time::Duration) {
        self.lock().defer(cuid, Instant::now() + delay);
    }

    fn finished(&self, cuid: &str, failed: bool) {
        self.lock().done(cuid, failed, Instant::now());
        self.passes_done.notify_waiters();
    }

    /// Keeps the reconciler off `cuid` until the [`Hold`] is dropped, after the pass in
    /// flight for it (if any) ends: a request that pauses a running container for a moment
    /// (a snapshot's copy) is not undone by a pass that sees it "paused outside". The hold
    /// changes no desired state; when it ends, a pass checks the container.
    pub async fn hold(&self, cuid: &str) -> Hold {
        loop {
            let done = self.passes_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.lock().try_hold(cuid) {
                return Hold {
                    reconciler: self.clone(),
                    cuid: cuid.to_owned(),
                };
            }
            // Bounded, in case another holder releases without a pass ending.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), done).await;
        }
    }
}

impl Reconciler {
    /// Starts the worker, the event listener and the resync timer; they stop on `shutdown`.
    pub fn spawn(&self, ctx: Ctx, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let ctx = Arc::new(ctx);
        tokio::spawn(worker::run(ctx, shutdown))
    }
}

/// See [`Reconciler::hold`].
pub struct Hold {
    reconciler: Reconciler,
    cuid: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.reconciler.lock().release(&self.cuid, Instant::now());
        self.reconciler.notify.notify_one();
        self.reconciler.passes_done.notify_waiters();
    }
}
