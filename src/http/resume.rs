//! Resume on use (docs/API.md, idle): a terminal, an upload or a start on a container its
//! idle policy paused or stopped (`status_reason: "idle"`, `resume_on_use: true`) first
//! unpauses or starts it (desired state written, the reconciler woken, convergence waited
//! for as `?wait=true` actions wait), then is answered as if it had been running, with
//! `Server-Timing: resume;dur=<ms>`. A start it needs counts against the tenant's
//! `max_running` as a `start` does.

use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};

use crate::error::{ApiError, ApiResult};
use crate::http::prestart::check_startable;
use crate::http::wait::{wait_converged, Wait};
use crate::http::{quota, tenants};
use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::state::AppState;
use crate::store::containers::Container;
use crate::tenancy::quotas::Usage;

/// The header that says how long the resume took.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Whether `c` sleeps by its idle policy and wakes on use.
pub fn resumable(c: &Container) -> bool {
    c.deleted_at.is_none()
        && c.status_reason == Some(StatusReason::Idle)
        && c.spec.idle.is_some_and(|i| i.resume_on_use)
        && matches!(
            c.desired_state,
            DesiredState::Paused | DesiredState::Stopped
        )
}

/// `resume;dur=12.3` (milliseconds, as Server-Timing writes them).
pub fn server_timing(took: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("resume;dur={:.1}", took.as_secs_f64() * 1000.0))
        .unwrap_or(HeaderValue::from_static("resume"))
}

/// Wakes `c` if its idle policy put it to sleep; answers the container as it is then and how
/// long waking it took (`None`: nothing to wake). With `wait` false the new desired state is
/// written and not waited for.
pub async fn on_use(
    state: &AppState,
    c: Container,
    wait: bool,
) -> ApiResult<(Container, Option<Duration>)> {
    if !resumable(&c) {
        return Ok((c, None));
    }
    let began = Instant::now();
    let since = crate::store::now();
    let cuid = c.cuid.clone();
    let config = state.config.clone();
    // Starting a stopped container takes a `max_running` slot: checked under the tenant's
    // write lock, held until the new desired state is committed (as `actions` does).
    let (guard, running_quota) = match quota::quotas_of(state, c.tenant.as_deref()) {
        Some((tenant, quotas))
            if quotas.max_running.is_some() && c.desired_state == DesiredState::Stopped =>
        {
            let guard = state.tenancy.lock_writes(&tenant).await;
            let used = tenants::usage_of(state, &tenant).await?;
            (Some(guard), Some((tenant, quotas, used)))
        }
        _ => (None, None),
    };
    let (container, changed) = state
        .store
        .transition::<ApiError>(&cuid, |current| {
            // The row as it is now: a client may have acted meanwhile.
            if !resumable(current) {
                return Ok(None);
            }
            let starting = current.desired_state == DesiredState::Stopped
                && !matches!(
                    current.status,
                    Status::Running | Status::Paused | Status::Restarting
                );
            if starting {
                check_startable(&config, &cuid, &current.spec)?;
            }
            if let Some((tenant, quotas, used)) = &running_quota {
                if current.desired_state == DesiredState::Stopped {
                    let one = Usage {
                        running: 1,
                        ..Usage::default()
                    };
                    quota::check_usage(tenant, quotas, used, &one)?;
                }
            }
            Ok(Some((DesiredState::Running, false)))
        })
        .await?;
    drop(guard);
    if changed {
        state.reconciler.wake(&container);
    }
    let container = match wait_converged(
        state,
        &cuid,
        Wait {
            wait,
            healthy: false,
        },
        &since,
    )
    .await?
    {
        Some(c) => c,
        None => container,
    };
    Ok((container, Some(began.elapsed())))
}
