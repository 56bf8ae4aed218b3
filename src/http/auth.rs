//! Authentication on every route but `/livez`, the console's static pages (`/`, `/ui/…`,
//! which hold no data) and sign-in itself (`/session`, which checks credentials on its
//! own): the middleware that applies [`crate::credentials::Credentials`],
//! [`crate::credentials::FailureThrottle`] and console sessions ([`crate::sessions`]) to each
//! request. A request is authenticated by Basic credentials or by a live session cookie.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiCode, ApiError, Kind};
use crate::http::lease::Lease;
use crate::state::AppState;
use crate::tenancy::Principal;

/// Who made an authenticated request, put in the response's extensions for the audit log:
/// the principal's label (`admin`, `token:<id>:<name>`) and its tenant.
#[derive(Clone, Debug)]
pub struct AuthedUser(pub String, pub Option<String>);

/// `429 rate_limited` with `Retry-After` (whole seconds, rounded up).
fn blocked(left: Duration) -> Response {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    ApiError::new(
        Kind::RateLimited,
        ApiCode::TooManyAuthFailures,
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

/// The client's address, as the throttle counts it: the peer, or, when the peer is one of
/// `TRUSTED_PROXIES`, the client its `X-Forwarded-For` names.
pub fn client_ip(state: &AppState, request: &Request) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    crate::credentials::client_address(
        peer,
        &forwarded.join(","),
        &state.config.connections.trusted_proxies,
    )
}

/// The `429` answer if the client's address is blocked by the throttle.
pub fn refusal_if_blocked(state: &AppState, ip: IpAddr) -> Option<Response> {
    state.throttle.blocked_for(ip, Instant::now()).map(blocked)
}

/// The ticket a GET request carries in its query, if any.
fn ticket_of(request: &Request) -> Option<String> {
    if request.method() != axum::http::Method::GET {
        return None;
    }
    let query = request.uri().query()?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == crate::sessions::TICKET_PARAM)
        .map(|(_, v)| v.to_owned())
}

/// The request without its `ticket` parameter: handlers, logs and metrics never see it.
fn without_ticket(mut request: Request) -> Request {
    let uri = request.uri();
    let Some(query) = uri.query() else {
        return request;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(crate::sessions::TICKET_PARAM))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = new;
        }
    }
    request
}

/// Whether a browser sent this request for a page of another site (or of another port of
/// this host, which browsers count as the same site but not the same origin).
fn from_another_site(request: &Request) -> bool {
    request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site")
        })
}

/// Runs the request as `principal`: handlers read it from the request's extensions
/// ([`crate::tenancy::Principal`]), the audit log from the response's.
async fn run_as(principal: Principal, lease: Lease, mut request: Request, next: Next) -> Response {
    let user = AuthedUser(principal.label.clone(), principal.tenant.clone());
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(lease);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(user);
    response
}

/// The secret of an `Authorization: Bearer …` header, if that is what the request carries.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

pub async fn require_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let ip = client_ip(&state, &request);
    let has_authorization = request.headers().contains_key(header::AUTHORIZATION);

    // A live session cookie together with its key (or one of its tickets). Checked before
    // the throttle: a signed-in console keeps working while someone else at the same address
    // (a shared NAT) guesses.
    let mut cookie_refused = None;
    let tokens = crate::sessions::tokens_from(request.headers());
    if !tokens.is_empty() {
        let ticket = ticket_of(&request);
        let proof = crate::sessions::Proof {
            key: crate::sessions::key_from(request.headers()),
            ticket: ticket.as_deref(),
        };
        match state.sessions.authenticate_any(&tokens, proof) {
            Ok(signed) => match &signed.bearer_sha256 {
                None => {
                    let principal = Principal::operator(&signed.user);
                    let lease = Lease::Session {
                        token: signed.token.clone(),
                        bearer: None,
                    };
                    return run_as(principal, lease, without_ticket(request), next).await;
                }
                // Signed in with a token: the token decides, now (revoked or expired, the
                // session ends with it).
                Some(digest) => match state
                    .tenancy
                    .tokens
                    .authenticate_hash(digest, chrono::Utc::now())
                {
                    Ok(principal) => {
                        let lease = Lease::Session {
                            token: signed.token.clone(),
                            bearer: Some(digest.clone()),
                        };
                        return run_as(principal, lease, without_ticket(request), next).await;
                    }
                    Err(_) => {
                        state.sessions.revoke(&signed.token).await;
                        cookie_refused = Some(crate::sessions::Refusal::Unknown);
                    }
                },
            },
            Err(refusal) => cookie_refused = Some(refusal),
        }
    }

    // A browser that navigates here from another site (a link or a script on any page, with
    // `http://user:guess@host/` in the URL) would send Basic credentials the page chose:
    // they are never looked at, never counted against the operator's address, and no Basic
    // challenge invites the browser to try. Browsers set `Sec-Fetch-Site`; a page cannot.
    if from_another_site(&request) {
        return ApiError::new(
            Kind::Auth,
            ApiCode::CrossSiteCredentials,
            "credentials sent by a browser on behalf of another site are not accepted",
        )
        .into_response();
    }

    // A blocked address learns nothing: its credentials are not even looked at.
    let now = Instant::now();
    if let Some(left) = state.throttle.blocked_for(ip, now) {
        return blocked(left);
    }

    // A bearer token, or Basic credentials: either is a login, counted the same way.
    let principal = match bearer(&request) {
        Some(secret) => state
            .tenancy
            .tokens
            .authenticate(secret, chrono::Utc::now())
            .ok(),
        None => state
            .credentials
            .check(request.headers().get(header::AUTHORIZATION))
            .map(Principal::operator),
    };
    if let Some(principal) = principal {
        state.throttle.record_success(ip);
        let lease = match bearer(&request) {
            Some(secret) => Lease::Token(crate::tenancy::tokens::hash(secret)),
            None => Lease::Password,
        };
        return run_as(principal, lease, request, next).await;
    }

    // Only wrong credentials count as a failed login. A request with none (an `<img>` on
    // any web page pointing here, a probe) must not lock the operator's address out; an
    // unknown session token or key is not a guess worth counting (256 random bits).
    if has_authorization {
        state.throttle.record_failure(ip, now);
    } else {
        // A console whose session ended, or a cookie without the key only the console's
        // origin holds: no Basic challenge, or the browser would put its own password
        // dialog over the console's sign-in page. The same for the key without its cookie
        // (a sign-out in another tab cleared the cookie): only the console sends the key,
        // and a challenge there left its requests hanging on the browser's dialog.
        if cookie_refused.is_none() && crate::sessions::key_from(request.headers()).is_some() {
            cookie_refused = Some(crate::sessions::Refusal::Unknown);
        }
        match cookie_refused {
            Some(crate::sessions::Refusal::Unknown) => {
                return ApiError::new(
                    Kind::Auth,
                    ApiCode::SessionExpired,
                    "the session has ended; sign in again",
                )
                .into_response()
            }
            Some(crate::sessions::Refusal::KeyRequired) => {
                return ApiError::new(
                    Kind::Auth,
                    ApiCode::SessionKeyRequired,
                    "the session cookie is only valid with the session key the console holds \
                     (header X-Session-Key) or a ticket from POST /session/ticket",
                )
                .into_response()
            }
            None => {}
        }
    }
    let code = if has_authorization {
        ApiCode::InvalidCredentials
    } else {
        ApiCode::MissingCredentials
    };
    ApiError::new(
        Kind::Auth,
        code,
        "valid Basic credentials or a live bearer token are required",
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"container-manager\""),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_is_taken_out_of_the_query() {
        let req = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let r = req("/ws/c1?cols=80&ticket=abc&rows=24");
        assert_eq!(ticket_of(&r).as_deref(), Some("abc"));
        assert_eq!(
            without_ticket(r).uri().to_string(),
            "/ws/c1?cols=80&rows=24"
        );
        let r = req("/containers/c1/download?ticket=abc");
        assert_eq!(
            without_ticket(r).uri().to_string(),
            "/containers/c1/download"
        );
        assert_eq!(ticket_of(&req("/x?tickets=1")), None);
        let post = Request::builder()
            .method("POST")
            .uri("/x?ticket=abc")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(ticket_of(&post), None);
    }
}
