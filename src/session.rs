//! Console sign-in sessions: random tokens held in memory, each with its user and expiry.
//!
//! Kept server-side (not a signed cookie) so that signing out revokes the token at once;
//! the price is that a restart signs everyone out, which a short-lived console session can
//! afford. Tokens are 256 random bits: guessing one is hopeless, so presenting an unknown
//! token is not counted against the failed-login throttle (a browser after a restart would
//! otherwise lock itself out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// The cookie's name.
pub const COOKIE: &str = "cm_session";
/// How long a session lives after sign-in (no sliding renewal: short and predictable).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Memory bound: past this many live sessions the oldest are dropped.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A fresh token for `user`.
    pub fn create(&self, user: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                expires: now + LIFETIME,
            },
        );
        token
    }

    /// The user of a live session.
    pub fn user(&self, token: &str) -> Option<String> {
        let map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.user.clone())
    }

    pub fn revoke(&self, token: &str) {
        self.by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

/// The session token a `Cookie` header carries, if any.
pub fn token_from(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_revoke() {
        let s = Sessions::default();
        let t = s.create("admin");
        assert_eq!(t.len(), 64);
        assert_eq!(s.user(&t).as_deref(), Some("admin"));
        assert_eq!(s.user("nope"), None);
        s.revoke(&t);
        assert_eq!(s.user(&t), None);
    }

    #[test]
    fn cookie_parsing() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=b; cm_session=abc ; c=d".parse().unwrap(),
        );
        assert_eq!(token_from(&h).as_deref(), Some("abc"));
    }
}
