//! `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "meta", summary = "Prometheus metrics (OpenMetrics text)", responses((status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody), (status = 500, description = "The state store failed", body = crate::http::schema::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let (depth, oldest) = state.reconciler.queue_stats();
    let containers = state.store.count_by_states().await?;
    let text = crate::metrics::scrape(depth, oldest, containers);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}
