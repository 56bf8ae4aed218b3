//! Authentication on every route but `/livez`, the console's static pages (`/`, `/ui/…`,
//! which hold no data) and sign-in itself (`/session`, which checks credentials on its
//! own): the middleware that applies [`crate::auth::Credentials`],
//! [`crate::auth::FailureThrottle`] and console sessions ([`crate::session`]) to each
//! request. A request is authenticated by Basic credentials or by a live session cookie.

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

/// Routes served without authentication.
fn is_public(path: &str) -> bool {
    path == "/livez"
        || path == "/"
        || path == "/ui"
        || path.starts_with("/ui/")
        || path == "/session"
}

/// The client's address, as the throttle counts it.
pub fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The `429` answer if the client's address is blocked by the throttle.
pub fn refusal_if_blocked(state: &AppState, ip: IpAddr) -> Option<Response> {
    state.throttle.blocked_for(ip, Instant::now()).map(blocked)
}

pub async fn require_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let ip = client_ip(&request);

    // A live session cookie is enough. Checked before the throttle: a signed-in console
    // keeps working while someone else at the same address (a shared NAT) guesses.
    let token = crate::session::token_from(request.headers());
    if let Some(user) = token.as_deref().and_then(|t| state.sessions.user(t)) {
        let mut response = next.run(request).await;
        response.extensions_mut().insert(AuthedUser(user));
        return response;
    }

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

    let has_basic = request.headers().contains_key(header::AUTHORIZATION);
    // An unknown or expired session token is not a guess worth counting (256 random
    // bits); a browser coming back after a restart must not lock itself out.
    if has_basic || token.is_none() {
        state.throttle.record_failure(ip, now);
    }
    if token.is_some() && !has_basic {
        // A console whose session ended: no Basic challenge, or the browser would put its
        // own password dialog over the console's sign-in page.
        return ApiError::new(
            Kind::Auth,
            "SESSION_EXPIRED",
            "the session has ended; sign in again",
        )
        .into_response();
    }
    let code = if has_basic {
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
