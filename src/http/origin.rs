//! Cross-origin requests from browsers: a page on another site must not drive this server
//! with the credentials the browser holds for it (cross-site request forgery, cross-site
//! WebSocket hijacking). Browsers send `Origin` on every WebSocket upgrade and on every
//! POST/PATCH/PUT/DELETE; programs usually send none and are unaffected. Reads stay open to
//! any origin (a browser never lets another site read the answer without CORS, which this
//! server does not grant).

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiCode, ApiError, ApiResult, Kind};

/// Middleware: a state-changing request whose `Origin` names another origin is `403
/// ORIGIN_NOT_ALLOWED`, before its handler runs (so nothing changes).
pub async fn refuse_cross_origin_writes(request: Request, next: Next) -> Response {
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if writes {
        if let Err(e) = check_origin(request.headers()) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// A browser always sends `Origin` on a WebSocket upgrade and on a write; one that names
/// another site is refused. No `Origin` is a non-browser client, allowed.
/// The refusal is `403 forbidden` `ORIGIN_NOT_ALLOWED`.
pub fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if same_origin(origin, host) {
        Ok(())
    } else {
        let err = ApiError::new(
            Kind::Forbidden,
            ApiCode::OriginNotAllowed,
            "a browser request from another origin is not allowed",
        )
        .with_details(json!({"origin": origin, "host": host}));
        Err(err)
    }
}

fn split_host_port(authority: &str) -> (String, Option<u16>) {
    // [v6]:port, host:port, host
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_ascii_lowercase(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_ascii_lowercase(), p.parse().ok()),
        _ => (authority.to_ascii_lowercase(), None),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the server the `Host` header names.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false; // includes "null"
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return false,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || host.is_empty() || authority.contains('@') {
        return false;
    }
    let (oh, op) = split_host_port(authority);
    let (hh, hp) = split_host_port(host);
    if oh != hh {
        return false;
    }
    match hp {
        Some(hp) => op.unwrap_or(default_port) == hp,
        // Behind a proxy on a default port: the Host header has no port.
        None => op.is_none_or(|p| p == default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(same_origin("http://localhost:8080", "localhost:8080"));
        assert!(same_origin("http://LOCALHOST:8080", "localhost:8080"));
        assert!(same_origin("https://example.com", "example.com"));
        assert!(same_origin("http://example.com", "example.com:80"));
        assert!(same_origin("http://[::1]:9000", "[::1]:9000"));
        assert!(!same_origin("http://evil.com:8080", "localhost:8080"));
        assert!(!same_origin("http://localhost:9090", "localhost:8080"));
        assert!(!same_origin("http://localhost", "localhost:8080"));
        assert!(!same_origin("null", "localhost:8080"));
        assert!(!same_origin("file://", "localhost:8080"));
        assert!(!same_origin(
            "http://localhost:8080@evil.com",
            "localhost:8080"
        ));
        assert!(!same_origin("http://localhost:8080", ""));
    }
}
