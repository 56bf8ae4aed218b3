//! Who is asking, and what they may see and do: scoped API tokens, tenants, their quotas and
//! request rates (docs/API.md §13). No HTTP here: `http::auth` turns a request's credentials
//! into a [`Principal`], `http::scope` checks it against the route, and the handlers ask
//! [`Principal::sees`] before they show a container.
//!
//! Rules:
//! - Scopes nest: `read` ⊂ `operate` ⊂ `write` ⊂ `admin`.
//! - Basic credentials (`APP_USER`/`APP_PASS`) and a console session signed in with them are an
//!   `admin` without a tenant: every client written before tokens existed runs unchanged.
//! - A principal with a tenant sees only that tenant's containers; one without a tenant sees
//!   all of them (an operator's read-only token, for one). A tenant's token is never `admin`.

pub mod quotas;
pub mod rate;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::tenancy::TenantRow;
use crate::store::Store;

/// What a credential may do. Ordered: each scope includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every GET: containers, logs, files and downloads, stats, events, images.
    Read,
    /// `read` + actions, uploads, terminals.
    Operate,
    /// `operate` + create, patch, delete.
    Write,
    /// `write` + tokens, tenants, image pulls and removals.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Operate, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// For the audit log and the server log: `admin` (or the Basic user name) for the
    /// password, `token:<id>:<name>` for a token.
    pub label: String,
    pub scope: Scope,
    /// The tenant whose containers this caller works with, if any.
    pub tenant: Option<String>,
    /// The token this request authenticated with, if any.
    pub token_id: Option<String>,
}

impl Principal {
    /// The operator: Basic credentials or a console session signed in with them.
    pub fn operator(user: &str) -> Self {
        Principal {
            label: user.to_owned(),
            scope: Scope::Admin,
            tenant: None,
            token_id: None,
        }
    }

    /// Whether this caller may see a container that belongs to `tenant`.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(mine) => tenant == Some(mine.as_str()),
        }
    }

    pub fn may(&self, needed: Scope) -> bool {
        self.scope >= needed
    }
}

/// The tenancy state of a running server: live tokens, each tenant's quotas (read on every
/// request of that tenant, so kept in memory and changed with the store), request rates, and
/// the per-tenant lock under which a quota is checked together with the write it allows.
#[derive(Default)]
pub struct Tenancy {
    pub tokens: tokens::Tokens,
    pub rates: rate::RateLimiter,
    quotas: Mutex<HashMap<String, quotas::Quotas>>,
    write_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Tenancy {
    pub async fn load(store: &Store) -> Result<Self, sqlx::Error> {
        let tenancy = Tenancy {
            tokens: tokens::Tokens::load(store).await?,
            ..Default::default()
        };
        for row in store.tenants().await? {
            tenancy.set_quotas(&row);
        }
        Ok(tenancy)
    }

    /// Notes a tenant's quotas as stored (after a `PUT /tenants/{name}`).
    pub fn set_quotas(&self, row: &TenantRow) {
        self.rates.forget(&row.name);
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.name.clone(), quotas::Quotas::from_row(row));
    }

    /// Forgets a deleted tenant, its tokens included.
    pub fn forget(&self, tenant: &str) {
        self.rates.forget(tenant);
        self.tokens.remove_tenant(tenant);
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }

    /// A tenant's quotas; `None` when there is no such tenant.
    pub fn quotas(&self, tenant: &str) -> Option<quotas::Quotas> {
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Held while a write that grows a tenant's usage checks its quotas and commits: two
    /// racing creates cannot both take the last slot. (One server writes the store, so a
    /// lock in this process is enough; SQLite's own lock orders the writes themselves.)
    pub async fn lock_writes(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .write_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// A tenant's name: a DNS-label-like string (lower-case letters, digits and `-`, 1–63
/// characters, starting with a letter), so it is safe in URLs, labels and file names.
pub fn is_tenant_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest() {
        let reader = Principal {
            label: "t".into(),
            scope: Scope::Read,
            tenant: None,
            token_id: None,
        };
        assert!(reader.may(Scope::Read));
        assert!(!reader.may(Scope::Operate));
        assert!(Principal::operator("admin").may(Scope::Admin));
        assert!(Scope::Operate < Scope::Write);
        assert_eq!(Scope::parse("write"), Some(Scope::Write));
        assert_eq!(Scope::parse("root"), None);
    }

    #[test]
    fn a_tenant_sees_only_its_own() {
        let a = Principal {
            label: "t".into(),
            scope: Scope::Write,
            tenant: Some("a".into()),
            token_id: None,
        };
        assert!(a.sees(Some("a")));
        assert!(!a.sees(Some("b")));
        assert!(!a.sees(None));
        assert!(Principal::operator("admin").sees(Some("b")));
        assert!(Principal::operator("admin").sees(None));
    }

    #[test]
    fn tenant_names() {
        assert!(is_tenant_name("team-a"));
        assert!(is_tenant_name("a1"));
        for bad in ["", "A", "1a", "a_b", "a-", "a/b", &"a".repeat(64)] {
            assert!(!is_tenant_name(bad), "{bad}");
        }
    }
}
