//! Console sign-in sessions: random tokens held in memory, each with its user, its expiry,
//! its **key** and its WebSocket/download **tickets**.
//!
//! Browsers scope cookies by host, not by port: a page served by a container's published app
//! (`http://host:9000`) receives the console's cookie. So the cookie alone never
//! authenticates. Sign-in also returns a key that the console keeps in `localStorage`
//! (scoped by origin, port included, so no other port's page can read it) and sends as the
//! [`KEY_HEADER`] on every request. Where a browser cannot set a header (a WebSocket, a
//! download link) the console first asks for a ticket: single-use, short-lived, bound to the
//! session, passed as `?ticket=` together with the cookie.
//!
//! Kept server-side (not a signed cookie) so that signing out revokes the token at once, and
//! written through to the store (only SHA-256 digests of the token, the key and the API
//! token a session was signed in with) so that a restart signs nobody out. Tickets live 60 s
//! and stay in memory. Tokens, keys and tickets are 256 random bits:
//! guessing one is hopeless, so presenting an unknown one is not counted against the
//! failed-login throttle (a browser after a restart would otherwise lock itself out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::sessions::SessionRow;
use crate::store::Store;

/// The cookie's name.
pub const COOKIE: &str = "cm_session";
/// The header that carries the session's key.
pub const KEY_HEADER: &str = "x-session-key";
/// The query parameter that carries a ticket.
pub const TICKET_PARAM: &str = "ticket";
/// How long a session lives after sign-in (no sliding renewal: short and predictable).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a ticket may wait for its one use.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Memory bounds: past this many live sessions (tickets) the oldest are dropped.
const MAX_SESSIONS: usize = 10_000;
const MAX_TICKETS: usize = 10_000;

struct Session {
    user: String,
    /// Signed in with an API token: the hex SHA-256 of its secret, checked again on every
    /// request, so a revoked or expired token ends the session at once.
    bearer: Option<String>,
    expires: Instant,
    key_digest: [u8; 32],
    /// A password session: HMAC-SHA256 of the operator's credentials under the session's
    /// key. Checked with the key a request presents, so a session outlives a restart only
    /// while `APP_USER`/`APP_PASS` are the ones it was signed in with (and the store holds
    /// nothing an attacker could test guesses of the password against).
    cred_mac: Option<[u8; 32]>,
}

struct Ticket {
    /// The hex digest of the session's token.
    session: String,
    expires: Instant,
}

/// Live sessions by the hex SHA-256 of their token: neither memory nor the store holds a
/// token itself.
#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Where sessions are written through; none in unit tests.
    store: Option<Store>,
    /// The operator's credentials as password sessions are bound to them (`user\0pass`).
    credentials: String,
    /// Counts the sessions ended by [`Sessions::revoke`]: a long request (an event stream, a
    /// terminal) made in a session watches it to end with its session.
    ended: tokio::sync::watch::Sender<u64>,
}

/// Why a cookie did not authenticate.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such live session (expired, revoked, or from before a restart).
    Unknown,
    /// The session is live but neither its key nor one of its tickets came with the cookie:
    /// the cookie may have been replayed by a page on another port of the host.
    KeyRequired,
}

/// What came with the cookie: the key header, or a ticket (GET requests only).
#[derive(Default)]
pub struct Proof<'a> {
    pub key: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

/// A request proven to come from a console session: which one, and its user.
pub struct Authenticated {
    pub token: String,
    pub user: String,
    /// The hex SHA-256 of the API token the session was signed in with, if any.
    pub bearer_sha256: Option<String>,
}

/// A fresh sign-in: the cookie's token and the key only the console's origin keeps.
pub struct SignedIn {
    pub token: String,
    pub key: String,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a token is keyed, in memory and in the store.
fn token_id(token: &str) -> String {
    hex(&digest(token))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Drops expired entries, then the one expiring first while the map is full.
fn make_room<V>(map: &mut HashMap<String, V>, max: usize, expires: impl Fn(&V) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| expires(v) > now);
    if map.len() >= max {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
}

impl Sessions {
    /// The sessions the store holds that have not expired (expired ones are deleted), written
    /// through from now on.
    pub async fn load(store: &Store, user: &str, password: &str) -> Result<Self, sqlx::Error> {
        let now = unix_now();
        let sessions = Sessions {
            store: Some(store.clone()),
            credentials: format!("{user}\0{password}"),
            ..Sessions::default()
        };
        let rows = store.console_sessions(now).await?;
        {
            let mut map = sessions.by_token.lock().unwrap_or_else(|p| p.into_inner());
            for row in rows {
                let Ok(key_digest) = <[u8; 32]>::try_from(row.key_sha256.as_slice()) else {
                    continue;
                };
                let cred_mac = row
                    .cred_mac
                    .as_deref()
                    .and_then(|m| <[u8; 32]>::try_from(m).ok());
                // A password session without its binding is not taken back.
                if row.bearer_sha256.is_none() && cred_mac.is_none() {
                    continue;
                }
                let left = Duration::from_secs((row.expires_at - now).max(0) as u64);
                map.insert(
                    row.token_sha256,
                    Session {
                        user: row.user,
                        bearer: row.bearer_sha256,
                        expires: Instant::now() + left,
                        key_digest,
                        cred_mac,
                    },
                );
            }
        }
        Ok(sessions)
    }

    /// A fresh session for `user` (in memory only: unit tests).
    pub fn create(&self, user: &str) -> SignedIn {
        self.create_in_memory(user, None).0
    }

    /// A fresh session for `user`, signed in with the API token whose hex SHA-256 is
    /// `bearer` when given, written to the store before it is answered: a session the
    /// store did not take is not handed out.
    pub async fn create_with(
        &self,
        user: &str,
        bearer: Option<&str>,
    ) -> Result<SignedIn, sqlx::Error> {
        let (signed_in, row) = self.create_in_memory(user, bearer);
        if let Some(store) = &self.store {
            if let Err(e) = store.insert_console_session(&row).await {
                self.forget(&row.token_sha256);
                return Err(e);
            }
        }
        Ok(signed_in)
    }

    fn create_in_memory(&self, user: &str, bearer: Option<&str>) -> (SignedIn, SessionRow) {
        let signed_in = SignedIn {
            token: random_hex(),
            key: random_hex(),
        };
        let row = SessionRow {
            token_sha256: token_id(&signed_in.token),
            user: user.to_owned(),
            bearer_sha256: bearer.map(str::to_owned),
            key_sha256: digest(&signed_in.key).to_vec(),
            expires_at: unix_now() + LIFETIME.as_secs() as i64,
            cred_mac: bearer
                .is_none()
                .then(|| self.credential_mac(&signed_in.key).to_vec()),
        };
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut map, MAX_SESSIONS, |s| s.expires);
        map.insert(
            row.token_sha256.clone(),
            Session {
                user: row.user.clone(),
                bearer: row.bearer_sha256.clone(),
                expires: Instant::now() + LIFETIME,
                key_digest: digest(&signed_in.key),
                cred_mac: bearer
                    .is_none()
                    .then(|| self.credential_mac(&signed_in.key)),
            },
        );
        (signed_in, row)
    }

    /// The operator's credentials under a session's key (see `Session::cred_mac`).
    fn credential_mac(&self, key: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(self.credentials.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The user of the live session `token`, if the request proves it comes from the
    /// console's origin (the key, or an unused ticket of this session, which it uses up).
    pub fn authenticate(&self, token: &str, proof: Proof<'_>) -> Result<String, Refusal> {
        self.authenticate_any(&[token.to_owned()], proof)
            .map(|a| a.user)
    }

    /// As [`Sessions::authenticate`], for every session cookie a request carries: a page on
    /// another port of the host can add cookies of the same name (with longer paths, which
    /// browsers send first), so every value is tried, not only the first.
    pub fn authenticate_any(
        &self,
        tokens: &[String],
        proof: Proof<'_>,
    ) -> Result<Authenticated, Refusal> {
        let mut live = Vec::new();
        {
            let map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for token in tokens {
                let Some(session) = map.get(&token_id(token)).filter(|s| s.expires > now) else {
                    continue;
                };
                let key_ok = proof
                    .key
                    .filter(|k| bool::from(digest(k).ct_eq(&session.key_digest)));
                // Signed in with a password the operator has since changed: no session.
                let stale = key_ok
                    .zip(session.cred_mac)
                    .is_some_and(|(k, m)| !bool::from(self.credential_mac(k).ct_eq(&m)));
                if stale {
                    continue;
                }
                let key_ok = key_ok.is_some();
                if key_ok {
                    return Ok(Authenticated {
                        token: token.clone(),
                        user: session.user.clone(),
                        bearer_sha256: session.bearer.clone(),
                    });
                }
                live.push((token.clone(), session.user.clone(), session.bearer.clone()));
            }
        }
        if live.is_empty() {
            return Err(Refusal::Unknown);
        }
        let ticket = proof.ticket.ok_or(Refusal::KeyRequired)?;
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let used = tickets
            .remove(ticket)
            .filter(|t| t.expires > Instant::now());
        used.and_then(|t| {
            live.into_iter()
                .find(|(token, _, _)| token_id(token) == t.session)
        })
        .map(|(token, user, bearer_sha256)| Authenticated {
            token,
            user,
            bearer_sha256,
        })
        .ok_or(Refusal::KeyRequired)
    }

    /// A single-use ticket for the live session `token`.
    pub fn ticket(&self, token: &str) -> Option<String> {
        let id = token_id(token);
        let live = self
            .by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|s| s.expires > Instant::now());
        if !live {
            return None;
        }
        let ticket = random_hex();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut tickets, MAX_TICKETS, |t| t.expires);
        tickets.insert(
            ticket.clone(),
            Ticket {
                session: id,
                expires: Instant::now() + TICKET_LIFETIME,
            },
        );
        Some(ticket)
    }

    /// Ends the session `token` at once, and in the store (a failure there is logged: the
    /// session is gone from this process, and its row would only outlive a restart).
    pub async fn revoke(&self, token: &str) {
        let id = token_id(token);
        self.forget(&id);
        if let Some(store) = &self.store {
            if let Err(e) = store.delete_console_session(&id).await {
                tracing::error!(error = %e, "cannot delete a revoked session from the store");
            }
        }
    }

    fn forget(&self, id: &str) {
        self.by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.session != id);
        self.ended.send_modify(|n| *n += 1);
    }

    /// Changes each time a session is revoked (see [`Sessions::is_live`]).
    pub fn watch_ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Whether the session `token` is still live (neither revoked nor expired).
    pub fn is_live(&self, token: &str) -> bool {
        self.by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token_id(token))
            .is_some_and(|s| s.expires > Instant::now())
    }
}

/// Most session cookies looked at in one request.
const MAX_COOKIES: usize = 16;

/// The session tokens the `Cookie` headers carry, in order (at most [`MAX_COOKIES`]).
pub fn tokens_from(headers: &axum::http::HeaderMap) -> Vec<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .take(MAX_COOKIES)
        .collect()
}

/// The session key header, if any.
pub fn key_from(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Proof<'_> {
        Proof {
            key: Some(k),
            ticket: None,
        }
    }

    fn ticket(t: &str) -> Proof<'_> {
        Proof {
            key: None,
            ticket: Some(t),
        }
    }

    #[tokio::test]
    async fn the_cookie_needs_its_key() {
        let s = Sessions::default();
        let si = s.create("admin");
        assert_eq!(si.token.len(), 64);
        assert_ne!(si.token, si.key);
        assert_eq!(
            s.authenticate(&si.token, key(&si.key)).as_deref(),
            Ok("admin")
        );
        assert_eq!(
            s.authenticate(&si.token, Proof::default()),
            Err(Refusal::KeyRequired)
        );
        assert_eq!(
            s.authenticate(&si.token, key("wrong")),
            Err(Refusal::KeyRequired)
        );
        // Another session's key is no key for this one.
        let other = s.create("admin");
        assert_eq!(
            s.authenticate(&si.token, key(&other.key)),
            Err(Refusal::KeyRequired)
        );
        assert_eq!(s.authenticate("nope", key(&si.key)), Err(Refusal::Unknown));
        s.revoke(&si.token).await;
        assert_eq!(
            s.authenticate(&si.token, key(&si.key)),
            Err(Refusal::Unknown)
        );
    }

    #[tokio::test]
    async fn a_ticket_is_used_once_and_only_by_its_session() {
        let s = Sessions::default();
        let a = s.create("admin");
        let b = s.create("admin");
        let t = s.ticket(&a.token).unwrap();
        assert_eq!(
            s.authenticate(&b.token, ticket(&t)),
            Err(Refusal::KeyRequired)
        );
        // Presented with the wrong session it was still used up.
        assert_eq!(
            s.authenticate(&a.token, ticket(&t)),
            Err(Refusal::KeyRequired)
        );
        let t = s.ticket(&a.token).unwrap();
        assert_eq!(s.authenticate(&a.token, ticket(&t)).as_deref(), Ok("admin"));
        assert_eq!(
            s.authenticate(&a.token, ticket(&t)),
            Err(Refusal::KeyRequired)
        );
        assert_eq!(s.ticket("nope"), None);
        let t = s.ticket(&a.token).unwrap();
        s.revoke(&a.token).await;
        assert_eq!(s.authenticate(&a.token, ticket(&t)), Err(Refusal::Unknown));
    }

    /// Sessions come back from the store after a restart, but a password session only while
    /// the operator's credentials are the ones it was signed in with.
    #[tokio::test]
    async fn a_restart_keeps_sessions_and_a_new_password_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::open(&url).await.unwrap();
        let before = Sessions::load(&store, "admin", "old-secret").await.unwrap();
        let signed = before.create_with("admin", None).await.unwrap();
        let by_token = before
            .create_with("token:t1:ci", Some("ab12"))
            .await
            .unwrap();

        let same = Sessions::load(&store, "admin", "old-secret").await.unwrap();
        assert_eq!(
            same.authenticate(&signed.token, key(&signed.key))
                .as_deref(),
            Ok("admin")
        );
        let renewed = Sessions::load(&store, "admin", "new-secret").await.unwrap();
        assert_eq!(
            renewed.authenticate(&signed.token, key(&signed.key)),
            Err(Refusal::Unknown)
        );
        // A token's session answers to its token (checked by the caller), not the password.
        let a = renewed
            .authenticate_any(std::slice::from_ref(&by_token.token), key(&by_token.key))
            .unwrap();
        assert_eq!(a.bearer_sha256.as_deref(), Some("ab12"));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=b; cm_session=abc ; c=d; cm_session=def".parse().unwrap(),
        );
        assert_eq!(tokens_from(&h), ["abc", "def"]);
    }

    #[test]
    fn a_planted_cookie_of_the_same_name_does_not_hide_the_real_one() {
        let s = Sessions::default();
        let real = s.create("admin");
        let tokens = vec!["junk".to_owned(), real.token.clone()];
        let a = s.authenticate_any(&tokens, key(&real.key)).unwrap();
        assert_eq!(a.token, real.token);
        let t = s.ticket(&real.token).unwrap();
        assert_eq!(
            s.authenticate_any(&tokens, ticket(&t)).unwrap().user,
            "admin"
        );
        assert_eq!(
            s.authenticate_any(&["junk".to_owned()], key(&real.key))
                .err(),
            Some(Refusal::Unknown)
        );
    }
}
