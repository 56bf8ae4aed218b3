//! `POST /containers/{cuid}/update`: look the container's tag up on its registry now and,
//! when it names another digest than the one the container runs, roll that digest out (a
//! pin and a new generation; the reconciler pulls it and recreates the container, and the
//! judge keeps or rolls back the new image as for automatic updates). Waits like the other
//! actions (`?wait=false`: `202` at once).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::error_map::step_kind;
use crate::http::extract::{Path, Query};
use crate::http::response::{container_response, path_cuid};
use crate::http::wait::{finish, Wait};
use crate::state::AppState;
use crate::store::updates::{digest_of, UpdateAvailable};

#[utoipa::path(post, path = "/containers/{cuid}/update", tag = "containers", summary = "Update the container to the registry's current digest of its tag (no body)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence")), responses((status = 200, description = "Recreated with the new digest (or already on the registry's digest: nothing changed)", body = crate::http::schema::Representation), (status = 202, description = "Accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or a token without the write scope", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 409, description = "The image is not a tag on a registry (IMAGE_NOT_UPDATABLE)", body = crate::http::schema::ErrorBody), (status = 422, description = "The registry has no such tag, refused the credentials, or is not allowed; or the container is being deleted", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker or the registry unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let cuid = path_cuid(&cuid)?;
    let since = crate::store::now();
    let c = state.store.get_or_404(cuid).await?;
    if c.deleted_at.is_some() {
        return Err(crate::store::Error::Deleting.into());
    }
    if !crate::images::is_tag(&c.spec.image) {
        return Err(ApiError::new(
            Kind::StateConflict,
            ApiCode::ImageNotUpdatable,
            "the container's image is a digest, not a tag: change `image` to update it",
        ));
    }
    let docker = crate::http::docker_client(&state).await?;
    let reference = crate::images::normalize(&c.spec.image);
    let latest = crate::images::registry_digest(
        &docker,
        &reference,
        state.config.registry_auth_file.as_deref(),
        &state.config.registry_allowlist,
    )
    .await
    .map_err(|f| {
        ApiError::new(step_kind(f.code), f.code.into(), f.message.clone())
            .with_details(serde_json::json!({ "message": f.message }))
    })?;
    // What it runs now: Docker's word, else what it is pinned to (not made yet).
    let running = match crate::images::container_digest(&docker, cuid, &reference).await {
        Ok(Some(d)) => Some(d),
        _ => c
            .image
            .pin
            .as_deref()
            .and_then(digest_of)
            .map(str::to_owned),
    };
    if running.as_deref() == Some(latest.as_str()) {
        // Already there: nothing changes (and no update is known any more).
        state
            .store
            .record_image_seen(cuid, running.as_deref(), None::<&UpdateAvailable>)
            .await?;
        let c = state.store.get_or_404(cuid).await?;
        return Ok(container_response(StatusCode::OK, &c));
    }
    let mut current = c;
    for _ in 0..3 {
        match crate::reconcile::updates::start(&state.store, &state.reconciler, &current, &latest)
            .await?
        {
            Some(started) => {
                if started.desired_state.is_up() {
                    return finish(&state, started, wait, &since).await;
                }
                // Not running: the new digest is what its next start makes.
                return Ok(container_response(StatusCode::OK, &started));
            }
            // Changed meanwhile (a PATCH): decide again on the row as it is.
            None => current = state.store.get_or_404(cuid).await?,
        }
    }
    Err(ApiError::new(
        Kind::Conflict,
        ApiCode::StaleGeneration,
        "the container kept changing; try again",
    ))
}
