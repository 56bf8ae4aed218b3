//! What authenticated a request, kept for as long as the request lasts: a long-lived answer
//! (`GET /events`, a terminal's WebSocket) ends when its sign-in does — a sign-out
//! (`DELETE /session`), a session's expiry, a revoked or expired API token, a deleted
//! tenant's tokens — instead of streaming on to someone no longer signed in.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::state::AppState;

/// How often a lease is checked without being told to: what ends by the clock (a session's or
/// a token's expiry) is noticed within this. A revocation is noticed at once.
const RECHECK: Duration = Duration::from_secs(5);

/// The credential a request was authenticated with (a request extension, set by
/// [`crate::http::auth::require_auth`]). Holds a session token: never logged, never `Debug`.
#[derive(Clone)]
pub enum Lease {
    /// The operator's Basic credentials: they stay valid while the server runs.
    Password,
    /// An API token, by the hex SHA-256 of its secret.
    Token(String),
    /// A console session (its cookie's token), and the API token it was signed in with, if
    /// any (by its hex SHA-256).
    Session {
        token: String,
        bearer: Option<String>,
    },
}

impl Lease {
    /// Whether the credential still authenticates.
    pub fn is_live(&self, state: &AppState) -> bool {
        let now = chrono::Utc::now();
        match self {
            Lease::Password => true,
            Lease::Token(digest) => state.tenancy.tokens.is_live(digest, now),
            Lease::Session { token, bearer } => {
                state.sessions.is_live(token)
                    && bearer
                        .as_deref()
                        .is_none_or(|d| state.tenancy.tokens.is_live(d, now))
            }
        }
    }

    /// Resolves once the credential no longer authenticates (never for [`Lease::Password`]).
    pub async fn ended(self, state: AppState) {
        if matches!(self, Lease::Password) {
            return std::future::pending().await;
        }
        let mut sessions = state.sessions.watch_ended();
        let mut tokens = state.tenancy.tokens.watch_removed();
        while self.is_live(&state) {
            tokio::select! {
                r = sessions.changed() => if r.is_err() { tokio::time::sleep(RECHECK).await },
                r = tokens.changed() => if r.is_err() { tokio::time::sleep(RECHECK).await },
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

/// Resolves when the request's sign-in ends ([`Lease::ended`]) or the server shuts down: what
/// a streamed answer is cut at (`take_until`). A request without a lease (none is set only
/// outside the authenticated routes) ends with the server alone.
pub fn stream_end(
    lease: Option<Lease>,
    state: &AppState,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
    let shutdown = state.shutdown.clone().cancelled_owned();
    match lease {
        Some(lease) => {
            let ended = lease.ended(state.clone());
            Box::pin(async move {
                tokio::select! {
                    () = ended => {}
                    () = shutdown => {}
                }
            })
        }
        None => Box::pin(shutdown),
    }
}
