//! The server's life cycle: start the background tasks, serve, shut down cleanly. The state
//! it works with is opened by [`crate::state`]; the routes come from [`crate::app()`].

use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::AppState;
pub use crate::state::StartError;

/// After the drain: how long background tasks (and then the store) get to stop before the
/// server stops without them. Whatever they were doing is idempotent and redone at the next
/// start.
const STOP_LIMIT: Duration = Duration::from_secs(3);

/// Starts the reconciler (its worker, event listener and resync timer), the change
/// feed of `GET /events` and the deadline timer of `lifetime`s. Call it once per
/// state; the tasks stop when `state.shutdown` is cancelled and [`serve`] awaits them.
pub fn start_background(state: &AppState) {
    fn ctx<W>(state: &AppState, world: std::sync::Arc<W>) -> crate::reconcile::Ctx
    where
        W: crate::reconcile::backend::Backend + crate::reconcile::backend::Observer + 'static,
    {
        crate::reconcile::Ctx::new(
            state.config.clone(),
            state.store.clone(),
            state.audit.clone(),
            state.identity.clone(),
            state.reconciler.clone(),
            world,
        )
    }
    // `BACKEND`: this host's Docker through compose, or a Swarm.
    let ctx = match state.config.backend.swarm() {
        None => ctx(
            state,
            std::sync::Arc::new(crate::reconcile::backend::DockerBackend::new(
                state.config.clone(),
                state.identity.instance_id.clone(),
                state.docker.clone(),
                state.reconciler.pulls.clone(),
            )),
        ),
        Some(_) => ctx(
            state,
            std::sync::Arc::new(crate::reconcile::swarm::SwarmBackend::new(
                state.config.clone(),
                state.identity.instance_id.clone(),
                state.docker.clone(),
                state.nodes.clone(),
                state.reconciler.pulls.clone(),
            )),
        ),
    };
    let task = state.reconciler.spawn(ctx, state.shutdown.clone());
    // Nodes that did not answer at start-up: their app storage is checked when they do.
    let storage = tokio::spawn(crate::appdir::shared::recheck(
        state.config.clone(),
        state.nodes.clone(),
        state.docker.clone(),
        state.identity.instance_id.clone(),
        state.shutdown.clone(),
    ));
    let feed = tokio::spawn(crate::events::run(
        state.events.clone(),
        state.store.clone(),
        state.store.subscribe_changes(),
        state.shutdown.clone(),
    ));
    let token_use = tokio::spawn(flush_token_use(state.clone()));
    let deadlines = state.deadlines.spawn(
        state.store.clone(),
        state.reconciler.clone(),
        state.audit.clone(),
        state.shutdown.clone(),
    );
    let idle = tokio::spawn(crate::reconcile::idle::run(
        crate::reconcile::idle::IdleCtx {
            store: state.store.clone(),
            reconciler: state.reconciler.clone(),
            tracker: state.idle.clone(),
            docker: state.docker.clone(),
            locator: state.locator(),
            audit: state.audit.clone(),
            every: state.config.idle_sample_interval,
        },
        state.shutdown.clone(),
    ));
    let webhooks = state.webhooks.spawn(
        state.store.clone(),
        state.config.webhooks.clone(),
        state.config.listen_addr.ip(),
        state.shutdown.clone(),
    );
    let mut background = state.background.lock().unwrap_or_else(|p| p.into_inner());
    background.extend([
        ("reconciler", task),
        ("events feed", feed),
        ("token use", token_use),
        ("deadlines", deadlines),
        ("idle sampler", idle),
        ("storage recheck", storage),
    ]);
    background.extend(webhooks);
}

/// Writes tokens' `last_used_at` every few seconds, and once more at shutdown: one small
/// write for all requests in between, instead of one per request.
async fn flush_token_use(state: AppState) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(EVERY) => false,
            _ = state.shutdown.cancelled() => true,
        };
        if let Err(e) = state.tenancy.tokens.flush(&state.store).await {
            tracing::warn!(error = %e, "cannot record token use");
        }
        if stopping {
            return;
        }
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight requests
/// `DRAIN_TIMEOUT` to finish and background tasks [`STOP_LIMIT`] to stop, and returns: a task
/// that does not stop in time is named in the log and left behind. Starts no background task
/// itself: without [`start_background`] nothing converges.
pub async fn serve(state: AppState, listener: TcpListener) -> Result<(), StartError> {
    let shutdown = state.shutdown.clone();
    let limits = state.config.connections.clone();
    let app = crate::app(state.clone());
    let server = crate::connections::serve(listener, app, &limits, shutdown.clone());
    let drain_limit = async {
        shutdown.cancelled().await;
        tokio::time::sleep(limits.drain_timeout).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_limit => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
    }
    // Stop background tasks (they watch `shutdown`) before closing the store they use.
    shutdown.cancel();
    let tasks = std::mem::take(&mut *state.background.lock().unwrap_or_else(|p| p.into_inner()));
    let deadline = tokio::time::Instant::now() + STOP_LIMIT;
    for (name, task) in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!(
                task = name,
                "a background task did not stop in time; stopping without it"
            );
        }
    }
    // Closing waits for every connection to come back to the pool; a request abandoned by
    // the drain limit may still hold one.
    if tokio::time::timeout(STOP_LIMIT, state.store.pool.close())
        .await
        .is_err()
    {
        tracing::warn!("the state store did not close in time; stopping without it");
    }
    Ok(())
}
