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
use crate::http::wait::{finish, Wait};
use crate::lifecycle::{plan, Plan, Verb};
use crate::state::AppState;

async fn act(state: AppState, cuid: String, wait: Wait, verb: Verb) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?;
    let since = crate::store::now();
    let config = state.config.clone();
    // Planned and checked under the write lock, on the row as it is now: two racing actions
    // cannot both act on a state that one of them already changed.
    let (container, changed) = state
        .store
        .transition(cuid, |current| {
            if current.deleted_at.is_some() {
                return Err(ApiError::state(
                    "CONTAINER_DELETING",
                    "the container is being deleted",
                ));
            }
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
                    Ok(Some((desired, restart)))
                }
            }
        })
        .await?;
    if !changed {
        return Ok(container_response(StatusCode::OK, &container));
    }
    state.reconciler.wake(cuid);
    finish(&state, container, wait, &since).await
}

pub async fn start(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Start).await
}
pub async fn stop(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Stop).await
}
pub async fn restart(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Restart).await
}
pub async fn pause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Pause).await
}
pub async fn unpause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Unpause).await
}
