//! Observation of all of this instance's containers at once: Docker's event stream (one
//! stream, filtered by our label) wakes the containers it names; the periodic resync lists
//! them all in one Engine API call and wakes the ones that differ from the store, and removes
//! containers that carry our label but have no row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions, RemoveContainerOptions};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{render, Ctx};
use crate::lifecycle::DockerState;

/// The longest a resync may take before the worker gets back to dispatching.
pub(super) const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Container events that can mean drift (exec, attach and the like cannot).
const EVENTS: &[&str] = &[
    "create", "start", "restart", "die", "kill", "stop", "oom", "pause", "unpause", "destroy",
];

/// One Engine API call lists this instance's containers; containers whose Docker state
/// differs from the store are woken; containers with our label and no row are removed.
pub(super) async fn resync(ctx: &Ctx) -> Result<(), String> {
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
        .map_err(|e| {
            crate::metrics::engine_error("list_containers");
            e.to_string()
        })?;
    let rows = ctx.store.summaries().await.map_err(|e| e.to_string())?;
    let known: HashSet<String> = ctx
        .store
        .all_cuids()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();

    let mut in_docker: HashMap<String, (DockerState, Option<i64>)> = HashMap::new();
    for c in listed {
        let labels = c.labels.unwrap_or_default();
        let Some(cuid) = labels.get(render::LABEL_CUID).cloned() else {
            continue;
        };
        if !known.contains(&cuid) {
            remove_orphan(ctx, &cuid, c.id.as_deref().unwrap_or(&cuid)).await;
            continue;
        }
        let state = DockerState::parse(&c.state.map(|s| s.to_string()).unwrap_or_default());
        let generation = labels
            .get(render::LABEL_GENERATION)
            .and_then(|g| g.parse().ok());
        in_docker.insert(cuid, (state, generation));
    }
    for row in rows {
        if !row.progress.in_sync(in_docker.get(&row.cuid).copied()) {
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
    // The project directory holds one small file of ours; the container's /app, which may
    // hold anything, is left to the start-up sweep of directories without a row.
    let project = render::project_dir(&ctx.config, cuid);
    let _ = tokio::task::spawn_blocking(move || crate::appdir::remove::remove_tree(&project)).await;
}

/// Docker events for our containers wake their passes. When the stream breaks (daemon
/// restart), a resync is forced once it is back, since events were missed.
pub(super) async fn listen_events(ctx: Arc<Ctx>, shutdown: CancellationToken) {
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
                        crate::metrics::get().docker_events.inc();
                        if !connected {
                            connected = true;
                        }
                        let cuid = event.actor.and_then(|a| a.attributes).and_then(|a| a.get(render::LABEL_CUID).cloned());
                        if let Some(cuid) = cuid {
                            ctx.reconciler.wake_soft(&cuid);
                        }
                    }
                    Some(Err(e)) => {
                        crate::metrics::engine_error("events");
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
