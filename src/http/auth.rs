//! Basic auth on every route but `/livez`: the middleware that applies
//! [`crate::auth::Credentials`] and [`crate::auth::FailureThrottle`] to each request.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Kind};
use crate::state::AppState;

/// The user name of an authenticated request, put in the response's extensions for the
/// audit log.
#[derive(Clone, Debug)]
pub struct AuthedUser(pub String);

/// `429 rate_limited` with `Retry-After` (whole seconds, rounded up).
fn blocked(left: Duration) -> Response {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    ApiError::new(
        Kind::RateLimited,
        "TOO_MANY_AUTH_FAILURES",
        "too many failed logins from this address; try again later",
    )
    .with_details(serde_json::json!({"retry_after": secs}))
    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    .into_response()
}

pub async fn require_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/livez" {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));

    // A blocked address learns nothing: its credentials are not even looked at.
    let now = Instant::now();
    if let Some(left) = state.throttle.blocked_for(ip, now) {
        return blocked(left);
    }

    let user = state
        .credentials
        .check(request.headers().get(header::AUTHORIZATION))
        .map(str::to_owned);
    if let Some(user) = user {
        state.throttle.record_success(ip);
        let mut response = next.run(request).await;
        response.extensions_mut().insert(AuthedUser(user));
        return response;
    }

    state.throttle.record_failure(ip, now);
    let code = if request.headers().contains_key(header::AUTHORIZATION) {
        "INVALID_CREDENTIALS"
    } else {
        "MISSING_CREDENTIALS"
    };
    ApiError::new(Kind::Auth, code, "valid Basic credentials are required")
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"container-manager\""),
        )
        .into_response()
}
