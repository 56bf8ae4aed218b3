//! Waiting for convergence: a request that changed desired state waits, unless
//! `?wait=false`, until observed state matches, a reconcile failure recorded after the
//! request is its answer, or `ACTION_TIMEOUT` passes (`408`; the work goes on).

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::error_map::step_kind;
use crate::http::response::container_response;
use crate::lifecycle::{ErrorCode, Status};
use crate::state::AppState;
use crate::store::containers::{Container, Updated};

/// `?wait=`: whether the request waits for convergence (the default) or is answered `202`
/// at once. Any other query parameter is refused (`400 INVALID_QUERY`), as the listing and
/// the logs refuse theirs: a misspelt `?wiat=false` must not silently wait.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

/// Answers an accepted change: at once (`202`) with `?wait=false`, else once it converged.
pub async fn finish(
    state: &AppState,
    fallback: Container,
    wait: Wait,
    since: &str,
) -> ApiResult<Response> {
    if !wait.wait {
        return Ok(container_response(StatusCode::ACCEPTED, &fallback));
    }
    let c = wait_for(state, &fallback.cuid, since).await?;
    Ok(container_response(StatusCode::OK, &c))
}

/// After a PATCH: a running (or paused) container is recreated by the reconciler and the
/// request waits for it; a created or stopped one only has its file re-rendered.
pub async fn after_spec_change(
    state: &AppState,
    updated: Updated,
    wait: Wait,
) -> ApiResult<Response> {
    let c = updated.container;
    if !updated.changed {
        return Ok(container_response(StatusCode::OK, &c));
    }
    let since = crate::store::now();
    state.reconciler.wake(&c);
    if c.desired_state.is_up() {
        return finish(state, c, wait, &since).await;
    }
    Ok(container_response(StatusCode::OK, &c))
}

/// A reconcile failure recorded after `since`, as the answer to the waiting request.
fn failure_since(c: &Container, since: &str) -> Option<ApiError> {
    let e = c.last_error.as_ref()?;
    let at = e["at"].as_str()?;
    if at < since || (c.status != Status::Error && c.deleted_at.is_none()) {
        return None;
    }
    // A pass that started before this request's change may fail after it: its error is
    // about the previous desire, not this one.
    if e["generation"] != json!(c.generation) || e["desired_at"] != json!(c.desired_at) {
        return None;
    }
    let code: ErrorCode =
        serde_json::from_value(e["code"].clone()).unwrap_or(ErrorCode::ComposeFailed);
    let message = e["message"]
        .as_str()
        .unwrap_or("the change could not be applied")
        .to_owned();
    Some(
        ApiError::new(step_kind(code), code.into(), message.clone())
            .with_details(json!({"cuid": c.cuid, "stderr": message, "last_error": e})),
    )
}

/// `408`: the change goes on. `details.pull` shows the pull of the image when one is what
/// takes the time.
fn timeout_error(state: &AppState, c: &Container) -> ApiError {
    ApiError::new(
        Kind::Timeout,
        ApiCode::ActionTimeout,
        "the change did not converge in time; it keeps converging",
    )
    .with_details(json!({
        "cuid": c.cuid,
        "desired_state": c.desired_state,
        "status": c.status,
        "generation": c.generation,
        "observed_generation": c.observed_generation,
        "pull": state.reconciler.pulls.get(&c.spec.image),
    }))
}

/// Waits for the container to settle, fail (after `since`) or time out.
async fn wait_for(state: &AppState, cuid: &str, since: &str) -> ApiResult<Container> {
    let mut changes = state.reconciler.subscribe();
    let deadline = tokio::time::Instant::now() + state.config.action_timeout;
    loop {
        changes.borrow_and_update();
        let c = state.store.get_or_404(cuid).await?;
        if let Some(e) = failure_since(&c, since) {
            return Err(e);
        }
        if c.progress().settled() {
            return Ok(c);
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(timeout_error(state, &c));
        }
    }
}

/// `POST /containers` with `"start": true`: how the new container is answered.
/// `since` is when the request began: failures recorded after it are its answer.
///
/// The container exists from the moment it was stored, so no answer here is an error: an
/// error would tell the client that nothing was made, and its retry would make another.
/// A start that failed is `201` with the container (its `status: "error"` and
/// `last_error` say why); one still converging when `ACTION_TIMEOUT` passes is `202`.
pub async fn answer_created(
    state: &AppState,
    created: Container,
    wait: Wait,
    since: &str,
) -> ApiResult<Response> {
    if !wait.wait {
        return Ok(container_response(StatusCode::ACCEPTED, &created));
    }
    let (status, c) = match wait_for(state, &created.cuid, since).await {
        Ok(c) => (StatusCode::CREATED, c),
        Err(e) => {
            let status = if e.kind == Kind::Timeout {
                StatusCode::ACCEPTED
            } else {
                StatusCode::CREATED
            };
            // Deleted meanwhile by another request: that request's 404 is the truth.
            (status, state.store.get_or_404(&created.cuid).await?)
        }
    };
    Ok(container_response(status, &c))
}

/// Waits until the reconciler has removed the row (Docker objects and files are gone then).
pub async fn wait_deleted(state: &AppState, cuid: &str) -> ApiResult<()> {
    let since = crate::store::now();
    let mut changes = state.reconciler.subscribe();
    let deadline = tokio::time::Instant::now() + state.config.action_timeout;
    loop {
        changes.borrow_and_update();
        let Some(c) = state.store.get(cuid).await? else {
            return Ok(());
        };
        if let Some(e) = failure_since(&c, &since) {
            return Err(e);
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(timeout_error(state, &c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Wait;

    #[test]
    fn wait_refuses_other_parameters() {
        let w: Wait = serde_urlencoded::from_str("wait=false").unwrap();
        assert!(!w.wait);
        assert!(serde_urlencoded::from_str::<Wait>("").unwrap().wait);
        assert!(serde_urlencoded::from_str::<Wait>("wiat=false").is_err());
    }
}
