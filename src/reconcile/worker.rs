//! The worker: runs passes for the containers the queue hands out (never two at once for
//! one container, up to `RECONCILE_CONCURRENCY` in parallel), resyncs on a timer, and stops
//! on shutdown after giving passes in flight a grace period.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{observe, pass, Ctx};

/// How long in-flight passes get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

pub(super) async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    if let Err(e) = ctx.backend.reap_strays().await {
        tracing::warn!(error = %e, "cannot clear what an earlier run left");
    }
    let reconciler = ctx.reconciler.clone();
    let slots = Arc::new(Semaphore::new(ctx.config.reconcile_concurrency));
    let mut passes: JoinSet<(String, bool)> = JoinSet::new();
    let events = tokio::spawn(observe::listen_events(ctx.clone(), shutdown.clone()));
    let updates = tokio::spawn(super::updates::run(ctx.clone(), shutdown.clone()));
    let mut next_resync = Instant::now();

    loop {
        if Instant::now() >= next_resync {
            // Bounded: a hung daemon must not stall dispatching and shutdown.
            let started = Instant::now();
            let result = tokio::time::timeout(observe::RESYNC_TIMEOUT, observe::resync(&ctx)).await;
            crate::metrics::get()
                .resync_duration
                .observe(started.elapsed().as_secs_f64());
            match result {
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
                let started = Instant::now();
                let outcome = AssertUnwindSafe(pass::run(&ctx, &cuid))
                    .catch_unwind()
                    .await;
                if outcome.is_err() {
                    tracing::error!(%cuid, "reconcile pass panicked");
                }
                let label = match &outcome {
                    Ok(Ok(())) => "ok",
                    Ok(Err(_)) => "failed",
                    Err(_) => "panicked",
                };
                crate::metrics::reconcile_pass(label, started.elapsed());
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
    updates.abort();
    // Let passes finish their step (a half-done step is repaired at the next start anyway).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while passes.join_next().await.is_some() {}
    })
    .await;
    passes.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::double::world;

    /// What an earlier run left behind is cleared before the first resync (and so before
    /// any pass).
    #[tokio::test]
    async fn strays_are_reaped_before_the_first_resync() {
        let w = world(None).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(w.ctx.clone(), shutdown.clone()));
        w.backend
            .wait_for_calls(|c| c.iter().any(|c| c == "list"))
            .await;
        let calls = w.backend.calls();
        let first = |name: &str| calls.iter().position(|c| c == name);
        assert_eq!(first("reap_strays"), Some(0), "{calls:?}");
        assert!(first("list").is_some());
        shutdown.cancel();
        task.await.unwrap();
    }
}
