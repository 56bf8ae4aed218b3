//! One reconciliation pass for one container: observe, decide, act, observe again, until
//! the container is settled or a step fails. Every step is idempotent, so a pass cut short
//! (a crash, a timeout) is simply completed by the next one.

use std::time::Instant;

use bollard::query_parameters::{InspectContainerOptions, RemoveContainerOptions};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::compose::{self, ComposeFailure};
use super::decide::{decide, Action, Desired, DesiredState, DockerState, Observed};
use super::render;
use super::Ctx;
use crate::fs::mounts;
use crate::store::containers::{Container, Observation};

/// Steps one pass may take (e.g. up, then pause) before it yields.
const MAX_STEPS: usize = 4;

pub type PassResult = Result<(), ComposeFailure>;

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        // Docker says 0001-01-01 for "never".
        .filter(|t| t.timestamp() > 0)
}

fn desired_of(c: &Container) -> Desired {
    Desired {
        state: DesiredState::parse(&c.desired_state),
        generation: c.generation,
        deleting: c.deleted_at.is_some(),
        restart_pending: c.restart_requested > c.restart_done,
        desired_at: parse_time(&c.desired_at).unwrap_or_else(Utc::now),
    }
}

/// Docker's view of the container named `cuid`, if it exists and is ours.
pub async fn observe(ctx: &Ctx, cuid: &str) -> Result<Option<Observed>, ComposeFailure> {
    let inspect = ctx
        .engine()
        .await?
        .inspect_container(cuid, None::<InspectContainerOptions>)
        .await;
    let info = match inspect {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => {
            return Err(ComposeFailure {
                code: "DOCKER_UNAVAILABLE",
                message: format!("cannot inspect the container: {e}"),
            })
        }
    };
    let labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    if labels.get(render::LABEL_INSTANCE) != Some(&ctx.identity.instance_id) {
        return Ok(None);
    }
    let st = info.state.unwrap_or_default();
    Ok(Some(Observed {
        id: info.id.unwrap_or_default(),
        state: DockerState::parse(&st.status.map(|s| s.to_string()).unwrap_or_default()),
        exit_code: st.exit_code,
        oom_killed: st.oom_killed.unwrap_or(false),
        generation: labels
            .get(render::LABEL_GENERATION)
            .and_then(|g| g.parse().ok()),
        started_at: st.started_at.as_deref().and_then(parse_time),
        finished_at: st.finished_at.as_deref().and_then(parse_time),
    }))
}

/// `last_error`: what failed and when, and which desire it failed for (the spec
/// generation and `desired_at`), so a waiting request only takes an error that is about its
/// own change.
fn error_value(c: &Container, f: &ComposeFailure) -> Value {
    json!({
        "code": f.code,
        "message": f.message,
        "at": crate::store::now(),
        "generation": c.generation,
        "desired_at": c.desired_at,
    })
}

/// Runs one pass. An `Err` means the container should be retried after a back-off.
pub async fn run(ctx: &Ctx, cuid: &str) -> PassResult {
    let mut last = None;
    for _ in 0..MAX_STEPS {
        let Some(c) = ctx.store.get(cuid).await.map_err(db_failure)? else {
            return Ok(());
        };
        let desired = desired_of(&c);
        // A container never started has nothing in Docker: no call for it.
        let observed = if desired.state == DesiredState::Created && !desired.deleting {
            None
        } else {
            match observe(ctx, cuid).await {
                Ok(o) => o,
                Err(f) => return fail(ctx, &c, f).await,
            }
        };
        let decision = decide(&desired, observed.as_ref());
        if let Action::Settled(status) = decision.action {
            return match settle(ctx, &c, &desired, observed.as_ref(), status).await {
                Err(f) => fail(ctx, &c, f).await,
                ok => ok,
            };
        }
        let started = Instant::now();
        let result = execute(ctx, &c, decision.action).await;
        ctx.audit.record(crate::fields! {
            "actor" => "reconciler",
            "cuid" => cuid,
            "action" => format!("{:?}", decision.action).to_lowercase(),
            "reason" => decision.reason,
            "generation" => c.generation,
            "duration_ms" => started.elapsed().as_secs_f64() * 1000.0,
            "outcome" => if result.is_ok() { "ok" } else { "error" },
            "code" => result.as_ref().err().map(|f| f.code),
        });
        if let Err(f) = result {
            return fail(ctx, &c, f).await;
        }
        if decision.action == Action::Delete {
            ctx.store.delete_row(cuid).await.map_err(db_failure)?;
            ctx.changed();
            return Ok(());
        }
        last = Some(c);
    }
    let f = ComposeFailure {
        code: "NOT_CONVERGING",
        message: format!("the container did not settle within {MAX_STEPS} steps"),
    };
    match last {
        Some(c) => fail(ctx, &c, f).await,
        None => Err(f),
    }
}

fn db_failure(e: sqlx::Error) -> ComposeFailure {
    ComposeFailure {
        code: "DATABASE_ERROR",
        message: e.to_string(),
    }
}

async fn fail(ctx: &Ctx, c: &Container, f: ComposeFailure) -> PassResult {
    tracing::warn!(cuid = %c.cuid, error = %f, "reconcile step failed");
    ctx.store
        .record_error(&c.cuid, &error_value(c, &f))
        .await
        .map_err(db_failure)?;
    ctx.changed();
    Err(f)
}

/// In sync: record what is, and keep the compose file current (a deleted file is rendered
/// again; a spec changed while stopped is in the file for the next start).
async fn settle(
    ctx: &Ctx,
    c: &Container,
    desired: &Desired,
    o: Option<&Observed>,
    status: &str,
) -> PassResult {
    if desired.state != DesiredState::Created {
        write_project(ctx, c)?;
    }
    // A pending restart that the container's start time shows already happened (e.g.
    // before a crash) is done: restarts happen exactly once.
    let restart_done = match o.and_then(|o| o.started_at) {
        Some(started) if started >= desired.desired_at => c.restart_requested,
        _ => c.restart_done,
    };
    let exit_code = match status {
        "exited" | "stopped" => o.and_then(|o| o.exit_code),
        _ => None,
    };
    let observation = Observation {
        status: status.to_owned(),
        exit_code,
        observed_generation: c.generation,
        last_error: None,
        restart_done,
    };
    if ctx
        .store
        .record_observation(&c.cuid, &observation)
        .await
        .map_err(db_failure)?
    {
        ctx.changed();
    }
    Ok(())
}

fn write_project(ctx: &Ctx, c: &Container) -> Result<std::path::PathBuf, ComposeFailure> {
    let file = render::render(&ctx.config, &ctx.identity.instance_id, c);
    let path = mounts::project_dir(&ctx.config, &c.cuid).join("compose.yaml");
    render::write_atomic(&path, &render::to_yaml(&file)).map_err(|e| ComposeFailure {
        code: "IO_ERROR",
        message: format!("cannot write {}: {e}", path.display()),
    })?;
    Ok(path)
}

async fn execute(ctx: &Ctx, c: &Container, action: Action) -> Result<(), ComposeFailure> {
    let timeout = ctx.config.compose_timeout;
    let cuid = c.cuid.as_str();
    match action {
        Action::Settled(_) => Ok(()),
        Action::Up => {
            ensure_image(ctx, &c.spec.image).await?;
            ctx.ensure_network().await?;
            let mount = mounts::mount_dir(&ctx.config, cuid);
            let io = |e: std::io::Error| ComposeFailure {
                code: "IO_ERROR",
                message: format!("cannot prepare {}: {e}", mount.display()),
            };
            std::fs::create_dir_all(&mount).map_err(io)?;
            mounts::chown(&mount, mounts::owner(&ctx.config, c.spec.user.as_deref()))
                .map_err(io)?;
            let file = write_project(ctx, c)?;
            compose::run(
                cuid,
                Some(&file),
                &["up", "-d", "--no-build", "--pull", "never"],
                timeout,
            )
            .await
        }
        Action::Stop | Action::Pause | Action::Unpause | Action::Restart => {
            let file = write_project(ctx, c)?;
            let verb = match action {
                Action::Stop => "stop",
                Action::Pause => "pause",
                Action::Unpause => "unpause",
                _ => "restart",
            };
            compose::run(cuid, Some(&file), &[verb], timeout).await
        }
        Action::Delete => delete(ctx, cuid).await,
    }
}

/// `compose down`, then make sure the container is gone even if compose did not know it,
/// then the directories. Each step copes with what is already gone.
async fn delete(ctx: &Ctx, cuid: &str) -> Result<(), ComposeFailure> {
    let project = mounts::project_dir(&ctx.config, cuid);
    let file = project.join("compose.yaml");
    let file = file.exists().then_some(file);
    compose::run(
        cuid,
        file.as_deref(),
        &["down", "--remove-orphans", "-t", "10"],
        ctx.config.compose_timeout,
    )
    .await?;
    let removed = ctx
        .engine()
        .await?
        .remove_container(
            cuid,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    match removed {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => {
            return Err(ComposeFailure {
                code: "DOCKER_UNAVAILABLE",
                message: format!("cannot remove the container: {e}"),
            })
        }
    }
    for dir in [project, mounts::mount_dir(&ctx.config, cuid)] {
        remove_dir(dir).await?;
    }
    Ok(())
}

/// Removes a directory the container had in hands (its `/app` can be 100,000 levels deep,
/// full of links, or hold a file it made immutable) on the blocking pool. A failure keeps
/// the row `deleting` with `IO_ERROR` in `last_error`, and the pass is retried later.
async fn remove_dir(dir: std::path::PathBuf) -> Result<(), ComposeFailure> {
    let shown = dir.display().to_string();
    let result = tokio::task::spawn_blocking(move || crate::fs::remove::remove_tree(&dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    result.map_err(|e| ComposeFailure {
        code: "IO_ERROR",
        message: format!("cannot remove {shown}: {e}"),
    })
}

/// There is no registry to pull from: a missing image is a clear error at once.
async fn ensure_image(ctx: &Ctx, image: &str) -> Result<(), ComposeFailure> {
    match ctx.engine().await?.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(ComposeFailure {
            code: "IMAGE_NOT_FOUND",
            message: format!(
                "image {image} is not on this Docker host (no registry is reachable to pull it)"
            ),
        }),
        Err(e) => Err(ComposeFailure {
            code: "DOCKER_UNAVAILABLE",
            message: format!("cannot inspect image {image}: {e}"),
        }),
    }
}
