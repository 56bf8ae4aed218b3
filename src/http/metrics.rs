//! `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "meta", summary = "Prometheus metrics (OpenMetrics text)", responses((status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody), (status = 500, description = "The state store failed", body = crate::http::schema::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let (depth, oldest) = state.reconciler.queue_stats();
    crate::metrics::get()
        .deadlines
        .set(i64::try_from(state.deadlines.len()).unwrap_or(i64::MAX));
    let containers = state.store.count_by_states().await?;
    let mut tenants = Vec::new();
    for row in state.store.tenants().await? {
        let u = super::tenants::usage_of(&state, &row.name).await?;
        let q = crate::tenancy::quotas::Quotas::from_row(&row);
        tenants.push(crate::metrics::TenantFigures {
            usage: vec![
                ("containers", u.containers as f64),
                ("running", u.running as f64),
                ("cpus", u.cpus),
                ("memory_bytes", u.memory as f64),
                ("pids", u.pids as f64),
                ("disk_bytes", u.disk as f64),
            ],
            quota: vec![
                ("containers", q.max_containers.map(|v| v as f64)),
                ("running", q.max_running.map(|v| v as f64)),
                ("cpus", q.max_cpus),
                ("memory_bytes", q.max_memory.map(|v| v as f64)),
                ("pids", q.max_pids.map(|v| v as f64)),
                ("disk_bytes", q.max_disk.map(|v| v as f64)),
            ],
            tenant: row.name,
        });
    }
    let text = crate::metrics::scrape(depth, oldest, containers, tenants);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}
