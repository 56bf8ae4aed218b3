//! `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiResult;
use crate::state::AppState;

pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let text = crate::metrics::scrape(&state).await?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}
