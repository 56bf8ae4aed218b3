//! Building answers about one container: its representation (docs/API.md §4), the identity
//! headers (`ETag`, `Location`), and finding the container a path names.

use crate::error::ApiResult;
use crate::http::schema::LiveContainer;
use crate::spec;
use crate::state::AppState;
use crate::store::containers::Container;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use crate::representation::representation;

/// The representation with `pull`: the progress of the pull of its image while the
/// reconciler makes one for it (layers done / total, bytes), `null` otherwise. Kept out of
/// the stored `status` (and so out of the store): a pull lives only as long as the process.
pub fn live_representation(state: &AppState, c: &Container) -> LiveContainer {
    let pull = (c.desired_state.is_up() && c.deleted_at.is_none())
        .then(|| state.reconciler.pulls.get(c.image_ref()))
        .flatten();
    LiveContainer {
        container: representation(c),
        pull,
        disk_usage: crate::http::schema::DiskUsage::of(&state.config, c),
    }
}

/// `200` (or another status) with the representation, `ETag` and `Location`.
pub fn container_response(status: StatusCode, c: &Container) -> Response {
    let mut response = (status, Json(representation(c))).into_response();
    set_identity_headers(response.headers_mut(), &c.cuid, c.generation);
    response
}

/// As [`container_response`], with the pull progress of [`live_representation`].
pub fn live_response(state: &AppState, status: StatusCode, c: &Container) -> Response {
    let mut response = (status, Json(live_representation(state, c))).into_response();
    set_identity_headers(response.headers_mut(), &c.cuid, c.generation);
    response
}

pub fn set_identity_headers(headers: &mut HeaderMap, cuid: &str, generation: i64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{generation}\"")) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/containers/{cuid}")) {
        headers.insert(header::LOCATION, v);
    }
}

/// A cuid from a path: malformed is the same `404` as unknown.
pub fn path_cuid(cuid: &str) -> ApiResult<&str> {
    if spec::is_cuid(cuid) {
        Ok(cuid)
    } else {
        Err(crate::store::containers::not_found(cuid).into())
    }
}

/// The container, unless it is unknown or being deleted: its row lives on until Docker's
/// side is gone, but to clients it already is (`404 CONTAINER_NOT_FOUND` either way).
pub async fn live_container(state: &AppState, cuid: &str) -> ApiResult<Container> {
    let cuid = path_cuid(cuid)?;
    let c = state.store.get_or_404(cuid).await?;
    if c.deleted_at.is_some() {
        return Err(crate::store::containers::not_found(cuid).into());
    }
    Ok(c)
}
