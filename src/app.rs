//! The server's life cycle: start the background tasks, serve, shut down cleanly. The state
//! it works with is opened by [`crate::state`]; the routes come from [`crate::app()`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::AppState;
pub use crate::state::StartError;

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the reconciler (its worker, event listener and resync timer) and the change
/// feed of `GET /events`. Call it once per
/// state; the tasks stop when `state.shutdown` is cancelled and [`serve`] awaits them.
pub fn start_background(state: &AppState) {
    let task = state.reconciler.spawn(
        crate::reconcile::Ctx::new(
            state.config.clone(),
            state.store.clone(),
            state.docker.clone(),
            state.audit.clone(),
            state.identity.clone(),
            state.reconciler.clone(),
        ),
        state.shutdown.clone(),
    );
    let feed = tokio::spawn(crate::events::run(
        state.events.clone(),
        state.store.clone(),
        state.store.subscribe_changes(),
        state.shutdown.clone(),
    ));
    state
        .background
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend([task, feed]);
}

/// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight requests
/// [`DRAIN_TIMEOUT`] to finish and returns once background tasks have stopped. Starts no
/// background task itself: without [`start_background`] nothing converges.
pub async fn serve(state: AppState, listener: TcpListener) -> Result<(), StartError> {
    let shutdown = state.shutdown.clone();
    let app = crate::app(state.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());

    let drain_limit = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result.map_err(StartError::Serve)?,
        () = drain_limit => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
    }
    // Stop background tasks (they watch `shutdown`) before closing the store they use.
    shutdown.cancel();
    let tasks = std::mem::take(&mut *state.background.lock().unwrap_or_else(|p| p.into_inner()));
    for task in tasks {
        let _ = task.await;
    }
    state.store.pool.close().await;
    Ok(())
}
