//! Actions (`start`, `stop`, `restart`, `pause`, `unpause`): a request plans the change
//! under the row's lock, writes desired state, wakes the reconciler and waits as
//! [`crate::http::wait`] says.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Path, Query};
use crate::http::prestart::check_startable;
use crate::http::response::{container_response, path_cuid};
use crate::http::resume;
use crate::http::wait::{check_healthy_wait, finish, wait_healthy, Wait};
use crate::http::{quota, tenants};
use crate::lifecycle::{plan, DesiredState, Plan, Verb};
use crate::state::AppState;
use crate::tenancy::quotas::Usage;

async fn act(state: AppState, cuid: String, wait: Wait, verb: Verb) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?;
    let wait = match verb {
        Verb::Start | Verb::Restart => wait,
        _ => wait.no_health()?,
    };
    let started = tokio::time::Instant::now();
    let since = crate::store::now();
    let config = state.config.clone();
    // A start of a tenant's container counts against its `max_running`: checked under the
    // tenant's write lock, held until the new desired state is committed.
    let owner = state.store.tenant_of(cuid).await?.flatten();
    let (guard, running_quota) = match (verb, quota::quotas_of(&state, owner.as_deref())) {
        (Verb::Start | Verb::Restart, Some((tenant, quotas))) if quotas.max_running.is_some() => {
            let guard = state.tenancy.lock_writes(&tenant).await;
            let used = tenants::usage_of(&state, &tenant).await?;
            (Some(guard), Some((tenant, quotas, used)))
        }
        _ => (None, None),
    };
    // Planned and checked under the write lock, on the row as it is now: two racing actions
    // cannot both act on a state that one of them already changed.
    let (container, changed) = state
        .store
        .transition::<ApiError>(cuid, |current| {
            if current.deleted_at.is_some() {
                return Err(crate::store::Error::Deleting.into());
            }
            check_healthy_wait(wait, current)?;
            match plan(verb, current.desired_state, current.status)? {
                Plan::Noop => Ok(None),
                Plan::Set {
                    desired,
                    restart,
                    starting,
                } => {
                    if starting {
                        check_startable(&config, cuid, &current.spec)?;
                    }
                    let holds_a_slot = matches!(
                        current.desired_state,
                        DesiredState::Running | DesiredState::Paused
                    );
                    if let Some((tenant, quotas, used)) = &running_quota {
                        if desired == DesiredState::Running && !holds_a_slot {
                            let one = Usage {
                                running: 1,
                                ..Usage::default()
                            };
                            quota::check_usage(tenant, quotas, used, &one)?;
                        }
                    }
                    Ok(Some((desired, restart)))
                }
            }
        })
        .await?;
    drop(guard);
    if !changed {
        // Already so (a start of a running container): with `wait=healthy`, still waits
        // for its health check.
        if wait.healthy {
            let c = wait_healthy(&state, cuid, started).await?;
            return Ok(container_response(StatusCode::OK, &c));
        }
        return Ok(container_response(StatusCode::OK, &container));
    }
    state.reconciler.wake(&container);
    finish(&state, container, wait, &since).await
}

#[utoipa::path(post, path = "/containers/{cuid}/start", tag = "containers", summary = "Start the container (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<String>, Query, pattern = "^(true|false|healthy)$", description = "false: answer 202 at once instead of waiting for convergence; healthy: also wait for the health check to pass (422 NO_HEALTH_CHECK without one)")), responses((status = 200, description = "Converged (or a no-op)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn start(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    // A container its idle policy paused or stopped is resumed (an unpause for a paused
    // one, which a plain start refuses), with `Server-Timing` (docs/API.md, idle).
    let found = match path_cuid(&c) {
        Ok(cuid) => s.store.get(cuid).await?,
        Err(_) => None,
    };
    if let Some(container) = found.filter(resume::resumable) {
        check_healthy_wait(w, &container)?;
        let began = tokio::time::Instant::now();
        let (container, took) = resume::on_use(&s, container, w.wait).await?;
        let container = if w.healthy {
            wait_healthy(&s, &container.cuid, began).await?
        } else {
            container
        };
        let status = if w.wait {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let mut response = container_response(status, &container);
        if let Some(took) = took {
            response
                .headers_mut()
                .insert(resume::SERVER_TIMING, resume::server_timing(took));
        }
        return Ok(response);
    }
    act(s, c, w, Verb::Start).await
}
#[utoipa::path(post, path = "/containers/{cuid}/stop", tag = "containers", summary = "Stop the container (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence")), responses((status = 200, description = "Converged (or a no-op)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn stop(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Stop).await
}
#[utoipa::path(post, path = "/containers/{cuid}/restart", tag = "containers", summary = "Restart the container (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<String>, Query, pattern = "^(true|false|healthy)$", description = "false: answer 202 at once instead of waiting for convergence; healthy: also wait for the health check to pass (422 NO_HEALTH_CHECK without one)")), responses((status = 200, description = "Converged (or a no-op)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn restart(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Restart).await
}
#[utoipa::path(post, path = "/containers/{cuid}/pause", tag = "containers", summary = "Pause the container (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence")), responses((status = 200, description = "Converged (or a no-op)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Pause).await
}
#[utoipa::path(post, path = "/containers/{cuid}/unpause", tag = "containers", summary = "Unpause the container (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence")), responses((status = 200, description = "Converged (or a no-op)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn unpause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Unpause).await
}
