//! Console sign-in: `POST /session` trades the server's credentials for a session cookie and
//! the session's key (see [`crate::sessions`] for why the cookie alone is not enough),
//! `GET /session` says who is signed in, `DELETE /session` signs out (revokes the token),
//! `POST /session/ticket` gives a single-use ticket for a WebSocket or a download link.
//! The routes are outside the auth middleware (see [`crate::http::auth`]) but inside the
//! cross-origin check, so another site cannot sign a browser in or out.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::error::{content_type_is, ApiCode, ApiError, Kind};
use crate::http::auth::{client_ip, refusal_if_blocked};
use crate::http::schema::{SessionTicket, SessionUser, SignedIn};
use crate::sessions::{
    key_from, tokens_from, Authenticated, Proof, COOKIE, LIFETIME, TICKET_LIFETIME,
};
use crate::state::AppState;

/// A sign-in: `user` and `password`, or an API `token` (§13).
#[derive(Deserialize)]
struct SignIn {
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// What a sign-in presents, once checked for shape.
enum Presented {
    Password { user: String, password: String },
    Token(String),
}

fn cookie(value: &str, max_age: u64) -> HeaderValue {
    // No `Secure`: the server may be reached over plain HTTP on a private network; behind
    // TLS the browser keeps the cookie to that origin anyway (SameSite=Strict, HttpOnly).
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("cm_session=; Max-Age=0; Path=/"))
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Presented, ApiError> {
    let bad = |msg: &str| ApiError::validation(ApiCode::InvalidSignIn, msg.to_owned());
    let form: SignIn = if content_type_is(headers, "application/x-www-form-urlencoded") {
        // As browsers encode it (WHATWG): `+` and `%XX` decoded, other fields ignored.
        serde_urlencoded::from_bytes(body)
            .map_err(|_| bad("the form needs the fields user and password (or token), once each"))?
    } else {
        serde_json::from_slice(body).map_err(|_| {
            bad("the body must be JSON {\"user\": …, \"password\": …} or {\"token\": …}")
        })?
    };
    match form {
        SignIn {
            user: Some(user),
            password: Some(password),
            token: None,
        } => Ok(Presented::Password { user, password }),
        SignIn {
            user: None,
            password: None,
            token: Some(token),
        } => Ok(Presented::Token(token)),
        _ => Err(bad(
            "sign in with user and password, or with a token, not both",
        )),
    }
}

/// `POST /session`: JSON or form `user` + `password`. Failures count against the same
/// throttle as Basic auth, and a blocked address is refused without a look at them.
#[utoipa::path(post, path = "/session", operation_id = "sign_in", tag = "console", summary = "Sign in: sets the console's session cookie", security(), request_body(description = "user and password, as JSON or a form", content((crate::http::schema::SignInBody = "application/json"), (crate::http::schema::SignInBody = "application/x-www-form-urlencoded"))), responses((status = 200, description = "Signed in (Set-Cookie)", body = crate::http::schema::SignedIn), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let ip = client_ip(&state, &request);
    if let Some(blocked) = refusal_if_blocked(&state, ip) {
        return blocked;
    }
    let (parts, body) = request.into_parts();
    let within = state.config.connections.body_timeout;
    let read = tokio::time::timeout(within, axum::body::to_bytes(body, 64 * 1024));
    let body: Bytes = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => return crate::http::extract::body_timeout(within).into_response(),
        Ok(Err(_)) => {
            return ApiError::validation(ApiCode::InvalidSignIn, "the body could not be read")
                .into_response()
        }
    };
    let form = match parse(&parts.headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let signed = match &form {
        Presented::Password { user, password } => state
            .credentials
            .matches(user, password)
            .map(|u| (u.to_owned(), None)),
        Presented::Token(secret) => state
            .tenancy
            .tokens
            .authenticate(secret, chrono::Utc::now())
            .ok()
            .map(|p| (p.label, Some(crate::tenancy::tokens::hash(secret)))),
    };
    let Some((user, bearer)) = signed else {
        state.throttle.record_failure(ip, std::time::Instant::now());
        return ApiError::new(
            Kind::Auth,
            ApiCode::InvalidCredentials,
            "the user name and password, or the token, are wrong",
        )
        .into_response();
    };
    state.throttle.record_success(ip);
    let signed_in = match state.sessions.create_with(&user, bearer.as_deref()).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // The key is in the body only: the console keeps it in its origin's storage and sends it
    // as `X-Session-Key`; a page on another port of the host gets the cookie but never this.
    let mut response = (
        StatusCode::OK,
        Json(SignedIn {
            user,
            expires_in: LIFETIME.as_secs(),
            key: signed_in.key,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&signed_in.token, LIFETIME.as_secs()),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The live session the cookies and the key header name together.
fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Authenticated> {
    let proof = Proof {
        key: key_from(headers),
        ticket: None,
    };
    state
        .sessions
        .authenticate_any(&tokens_from(headers), proof)
        .ok()
}

/// `GET /session`: `200 {"user"}` with a live session (cookie and key), else `401` (no
/// Basic challenge: the console asks this first, and a challenge would make the browser
/// prompt).
#[utoipa::path(get, path = "/session", operation_id = "who_is_signed_in", tag = "console", summary = "Who is signed in with this cookie", security(), responses((status = 200, description = "The user", body = crate::http::schema::SessionUser), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody)))]
pub async fn who(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session_of(&state, &headers) {
        Some(signed) => {
            // What the console may show: a token's scope and tenant, or the operator's.
            let principal = match &signed.bearer_sha256 {
                None => Some(crate::tenancy::Principal::operator(&signed.user)),
                Some(digest) => state
                    .tenancy
                    .tokens
                    .authenticate_hash(digest, chrono::Utc::now())
                    .ok(),
            };
            match principal {
                Some(p) => Json(SessionUser {
                    user: signed.user,
                    scope: p.scope,
                    tenant: p.tenant,
                })
                .into_response(),
                None => {
                    ApiError::new(Kind::Auth, ApiCode::NoSession, "not signed in").into_response()
                }
            }
        }
        None => ApiError::new(Kind::Auth, ApiCode::NoSession, "not signed in").into_response(),
    }
}

/// `DELETE /session`: revokes the session (when the request holds its key: a replayed cookie
/// alone cannot sign the console out) and clears the cookie. Always `204`.
#[utoipa::path(delete, path = "/session", operation_id = "sign_out", tag = "console", summary = "Sign out: revokes the cookie", security(), responses((status = 204, description = "Signed out"), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody)))]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(signed) = session_of(&state, &headers) {
        state.sessions.revoke(&signed.token).await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    response
}

/// `POST /session/ticket`: a ticket for one GET (a WebSocket upgrade, a download link) that
/// the browser cannot send the key header with: `?ticket=…` beside the cookie. Behind the
/// auth middleware, so only a request with the session's key gets one.
#[utoipa::path(post, path = "/session/ticket", operation_id = "session_ticket", tag = "console", summary = "A single-use ticket for a WebSocket or a download", responses((status = 200, description = "The ticket", body = crate::http::schema::SessionTicket), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn ticket(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let ticket = session_of(&state, &headers).and_then(|s| state.sessions.ticket(&s.token));
    match ticket {
        Some(ticket) => {
            let mut response = Json(SessionTicket {
                ticket,
                expires_in: TICKET_LIFETIME.as_secs(),
            })
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => ApiError::new(
            Kind::Auth,
            ApiCode::NoSession,
            "tickets are for console sessions; sign in with POST /session",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &[u8]) -> Result<Presented, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        parse(&headers, body)
    }

    #[test]
    fn sign_in_forms_decode() {
        let Ok(Presented::Password { user, password }) =
            form(b"user=a+b%3D%26c&password=p%25w&extra=1")
        else {
            panic!("not a password sign-in")
        };
        assert_eq!((user.as_str(), password.as_str()), ("a b=&c", "p%w"));
        assert!(form(b"user=admin").is_err());
        assert!(form(b"user=admin&password=a&password=b").is_err());
        assert!(matches!(form(b"token=cm_x"), Ok(Presented::Token(t)) if t == "cm_x"));
        assert!(form(b"token=cm_x&user=admin&password=p").is_err());
    }
}
