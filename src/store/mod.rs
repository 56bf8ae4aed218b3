//! The SQLite state store: opening it durably, the embedded migrations, and this server's
//! identity. Container rows and their reads live in [`containers`]; writes are split by who
//! makes them: desired state by the API (`desired.rs`), observed state by the reconciler
//! (`observed.rs`). The public methods are all on [`Store`].

pub mod containers;
mod desired;
mod error;
pub mod idle;
mod observed;
pub mod sessions;
pub mod snapshots;
pub mod tenancy;
#[cfg(test)]
mod tests;
pub mod updates;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

pub use desired::{Expiry, ExpiryPlan};
pub use error::Error;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Current time as stored: RFC 3339 UTC with milliseconds, sortable as text.
pub fn now() -> String {
    stamp(chrono::Utc::now())
}

/// A time as stored (see [`now`]).
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `ttl` seconds after `t`, as stored: a deadline.
pub fn deadline_after(t: chrono::DateTime<chrono::Utc>, ttl: u64) -> String {
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    let at = t
        .checked_add_signed(chrono::TimeDelta::try_seconds(ttl).unwrap_or(chrono::TimeDelta::MAX))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    stamp(at)
}

/// The database file of a `sqlite://` URL, if it names one.
pub fn file_of(url: &str) -> Option<&std::path::Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| std::path::Path::new(path))
}

#[derive(Clone, Debug)]
pub struct Store {
    pub pool: SqlitePool,
    /// Bumped after every committed write to a container row (desired or observed), so
    /// the change feed of `GET /events` never misses a writer.
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

/// Who this server is, generated on first start and kept in the database.
#[derive(Clone, Debug)]
pub struct Identity {
    pub instance_id: String,
    pub cursor_key: Vec<u8>,
}

impl Store {
    /// Opens (creating if needed) the database with WAL, `synchronous=FULL` (a 2xx answer
    /// survives `kill -9` and power loss), foreign keys and a busy timeout, then migrates.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            changes: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// The identity row, created once. `INSERT OR IGNORE` then read: two servers racing on a
    /// fresh file still agree on one identity.
    pub async fn identity(&self) -> Result<Identity, sqlx::Error> {
        let fresh_id = uuid::Uuid::new_v4().simple().to_string();
        let fresh_key: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let now = now();
        sqlx::query!(
            "INSERT OR IGNORE INTO instance (id, instance_id, cursor_key, created_at) VALUES (1, ?, ?, ?)",
            fresh_id,
            fresh_key,
            now
        )
        .execute(&self.pool)
        .await?;
        let row = sqlx::query!("SELECT instance_id, cursor_key FROM instance WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let cursor_key = (0..row.cursor_key.len() / 2)
            .filter_map(|i| u8::from_str_radix(&row.cursor_key[2 * i..2 * i + 2], 16).ok())
            .collect();
        Ok(Identity {
            instance_id: row.instance_id,
            cursor_key,
        })
    }

    /// A receiver that sees a new value after any container row changed.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Called after a committed write to a container row.
    fn touched(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether a conditional write changed a row; signals the change when it did.
    fn touched_if(&self, done: sqlx::sqlite::SqliteQueryResult) -> bool {
        let wrote = done.rows_affected() > 0;
        if wrote {
            self.touched();
        }
        wrote
    }

    /// Health check: a trivial query, bounded in time by the caller.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar!("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
    }
}
