//! API tokens: minted with a secret shown once, kept as its SHA-256 only, checked from memory.
//!
//! The live tokens are held in a map keyed by the secret's hash, loaded from the store at
//! start and changed with it (a revoked token is out of the map before the revoke is answered,
//! so the next request with it is `401`). `last_used_at` is noted in memory and written by
//! [`Tokens::flush`] on a timer, not once per request.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Principal, Scope};
use crate::store::tenancy::TokenRow;
use crate::store::Store;

/// What every secret starts with, so a leaked one is easy to recognise (and to scan for).
pub const PREFIX: &str = "cm_";

/// A live token as checked on each request.
#[derive(Clone, Debug)]
struct Live {
    id: String,
    name: String,
    scope: Scope,
    tenant: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// Why a bearer token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Expired,
}

#[derive(Default)]
pub struct Tokens {
    /// Live tokens by the hex SHA-256 of their secret.
    live: Mutex<HashMap<String, Live>>,
    /// `last_used_at` by token id, not yet written to the store.
    used: Mutex<HashMap<String, String>>,
    /// Counts the removals: a long request (an event stream, a terminal) authenticated by a
    /// token watches it to end when its token does.
    removed: tokio::sync::watch::Sender<u64>,
}

/// A fresh secret: `cm_` and 32 random bytes in base64url.
pub fn mint_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Tokens {
    /// The live tokens of the store (revoked ones are left out; expired ones are kept, to be
    /// told apart from unknown ones).
    pub async fn load(store: &Store) -> Result<Self, sqlx::Error> {
        let tokens = Tokens::default();
        for row in store.tokens().await? {
            tokens.add(&row);
        }
        Ok(tokens)
    }

    /// Adds a token that was just stored (or loaded).
    pub fn add(&self, row: &TokenRow) {
        if row.revoked_at.is_some() {
            return;
        }
        let Some(scope) = Scope::parse(&row.scope) else {
            return;
        };
        let live = Live {
            id: row.id.clone(),
            name: row.name.clone(),
            scope,
            tenant: row.tenant.clone(),
            expires_at: row.expires_at.as_deref().and_then(parse_time),
        };
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.secret_sha256.clone(), live);
    }

    /// Takes a token out: it stops authenticating at once.
    pub fn remove(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.id != id);
        self.removed.send_modify(|n| *n += 1);
    }

    /// Takes out every token of a tenant (the tenant was deleted).
    pub fn remove_tenant(&self, tenant: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.tenant.as_deref() != Some(tenant));
        self.removed.send_modify(|n| *n += 1);
    }

    /// Changes each time tokens are taken out (see [`Self::is_live`]).
    pub fn watch_removed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.removed.subscribe()
    }

    /// Whether the token with this hex SHA-256 still authenticates (not revoked, not
    /// expired), without counting as a use of it.
    pub fn is_live(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|t| t.expires_at.is_none_or(|at| at > now))
    }

    /// The principal of a bearer secret, noting its use.
    pub fn authenticate(&self, secret: &str, now: DateTime<Utc>) -> Result<Principal, Refused> {
        if !secret.starts_with(PREFIX) {
            return Err(Refused::Unknown);
        }
        // The map is keyed by a hash of the secret: the look-up's timing tells nothing about
        // how much of a guess was right.
        self.authenticate_hash(&hash(secret), now)
    }

    /// As [`Self::authenticate`], by the hex SHA-256 of the secret: how a console session
    /// signed in with a token checks it again (the session keeps only the digest).
    pub fn authenticate_hash(&self, key: &str, now: DateTime<Utc>) -> Result<Principal, Refused> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .ok_or(Refused::Unknown)?;
        if live.expires_at.is_some_and(|at| at <= now) {
            return Err(Refused::Expired);
        }
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(
            live.id.clone(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        Ok(Principal {
            label: format!("token:{}:{}", live.id, live.name),
            scope: live.scope,
            tenant: live.tenant,
            token_id: Some(live.id),
        })
    }

    /// When each token was last used, as far as this process has seen and not yet written.
    pub fn unflushed_use(&self, id: &str) -> Option<String> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Writes the uses noted since the last flush. On failure they are noted again, so a
    /// busy store delays `last_used_at` but does not lose it.
    pub async fn flush(&self, store: &Store) -> Result<(), sqlx::Error> {
        let used: Vec<(String, String)> = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        if let Err(e) = store.record_token_use(&used).await {
            let mut map = self.used.lock().unwrap_or_else(|p| p.into_inner());
            for (id, at) in used {
                map.entry(id).or_insert(at);
            }
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, secret: &str, expires_at: Option<&str>) -> TokenRow {
        TokenRow {
            id: id.into(),
            name: "ci".into(),
            scope: "write".into(),
            tenant: Some("a".into()),
            secret_sha256: hash(secret),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            expires_at: expires_at.map(Into::into),
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_secret_is_cm_and_43_base64url_characters() {
        let s = mint_secret();
        assert!(s.starts_with("cm_"));
        assert_eq!(s.len(), 3 + 43);
        assert!(s[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(s, mint_secret());
    }

    #[test]
    fn a_token_authenticates_until_it_expires_or_is_removed() {
        let tokens = Tokens::default();
        let secret = mint_secret();
        tokens.add(&row("t1", &secret, Some("2030-01-01T00:00:00Z")));
        let now = Utc::now();
        let p = tokens.authenticate(&secret, now).unwrap();
        assert_eq!(p.scope, Scope::Write);
        assert_eq!(p.tenant.as_deref(), Some("a"));
        assert!(tokens.unflushed_use("t1").is_some());
        let later = parse_time("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(tokens.authenticate(&secret, later), Err(Refused::Expired));
        assert_eq!(
            tokens.authenticate("cm_guess", now).unwrap_err(),
            Refused::Unknown
        );
        tokens.remove("t1");
        assert_eq!(tokens.authenticate(&secret, now), Err(Refused::Unknown));
    }
}
