//! The outermost middleware: gives every request an id (the client's `X-Request-Id` when it is
//! a sane token, else a fresh UUID), echoes it, makes it visible to error bodies, and writes
//! the request's audit line when the response is ready.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::{ErrorInfo, REQUEST_ID};
use crate::http::auth::AuthedUser;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// More fields for a request's audit line, put in the response's extensions by a handler
/// (e.g. the file a file operation touched: the path alone does not say, it is a query).
#[derive(Clone, Debug, Default)]
pub struct AuditFields(pub serde_json::Map<String, serde_json::Value>);

/// A client-sent id is kept only if it is a short token that cannot forge log structure.
fn sane_request_id(value: Option<&HeaderValue>) -> Option<String> {
    let s = value?.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

/// The cuid a path is about, for the audit line: `/containers/{cuid}/…` and `/ws/{cuid}`.
fn cuid_of(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("containers" | "ws"), Some(id)) if crate::spec::is_cuid(id) => Some(id),
        _ => None,
    }
}

pub async fn request_context(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = sane_request_id(request.headers().get(REQUEST_ID_HEADER))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    // The route template (`/containers/{cuid}`), never the raw path: one series per route.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());

    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = REQUEST_ID
        .scope(
            request_id.clone(),
            next.run(request).instrument(span.clone()),
        )
        .await;
    // At debug level: the audit log has the line for good; this one lets the server's own log
    // be joined with it (and with the request's other lines) by request id.
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            "request served"
        );
    });
    crate::metrics::http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );

    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let mut line = crate::fields! {
        "request_id" => request_id,
        "method" => method,
        "path" => path,
        "status" => response.status().as_u16(),
        "duration_ms" => started.elapsed().as_secs_f64() * 1000.0,
        "user" => response.extensions().get::<AuthedUser>().map(|u| u.0.clone()),
        "tenant" => response.extensions().get::<AuthedUser>().and_then(|u| u.1.clone()),
        "remote" => remote,
    };
    if let Some(cuid) = cuid_of(&path) {
        line.insert("cuid".into(), cuid.into());
    }
    if let Some(extra) = response.extensions().get::<AuditFields>() {
        for (k, v) in &extra.0 {
            line.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(info) = response.extensions().get::<ErrorInfo>() {
        line.insert("error".into(), info.error.into());
        line.insert("code".into(), info.code.as_str().into());
    }
    state.audit.record(line);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitized() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(sane_request_id(Some(&ok)).as_deref(), Some("abc-123_x.y:z"));
        let bad = HeaderValue::from_static("a b");
        assert_eq!(sane_request_id(Some(&bad)), None);
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(sane_request_id(Some(&long)), None);
        assert_eq!(sane_request_id(None), None);
    }

    #[test]
    fn cuid_is_found_in_paths() {
        let c = "c123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(cuid_of(&format!("/containers/{c}/start")), Some(c));
        assert_eq!(cuid_of(&format!("/ws/{c}")), Some(c));
        assert_eq!(cuid_of("/containers/nope"), None);
        assert_eq!(cuid_of("/healthz"), None);
    }
}
