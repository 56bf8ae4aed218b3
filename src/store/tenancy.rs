//! Rows of tenants and API tokens (migration 0002), and a tenant's usage. Runtime queries
//! (not the `query!` macros), so the offline data of sqlx stays as it is.

use sqlx::Row;

use super::{now, Store};

/// A tenant row: its name, its quotas as stored, and when it was made and last changed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TenantRow {
    pub name: String,
    pub max_containers: Option<i64>,
    pub max_running: Option<i64>,
    pub max_cpus: Option<f64>,
    pub max_memory_bytes: Option<i64>,
    pub max_pids: Option<i64>,
    /// Migration 0007.
    pub max_disk_bytes: Option<i64>,
    pub port_min: Option<i64>,
    pub port_max: Option<i64>,
    pub requests_per_second: Option<f64>,
    pub created_at: String,
    pub updated_at: String,
}

/// A token row. `secret_sha256` never leaves the server.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub tenant: Option<String>,
    pub secret_sha256: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A tenant's usage as the quotas count it (see `tenancy::quotas`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageRow {
    pub containers: i64,
    pub running: i64,
    pub cpus: f64,
    pub memory: i64,
    pub pids: i64,
    pub disk: i64,
}

const TENANT_COLUMNS: &str = "name, max_containers, max_running, max_cpus, max_memory_bytes, \
     max_pids, max_disk_bytes, port_min, port_max, requests_per_second, created_at, updated_at";

/// Why a tenant could not be deleted.
#[derive(Debug)]
pub enum TenantDelete {
    Deleted,
    Missing,
    /// It still owns this many containers (tombstoned ones included).
    Owns(i64),
}

impl Store {
    /// Creates or replaces a tenant's quotas. Answers the row and whether it is new.
    pub async fn put_tenant(&self, t: &TenantRow) -> Result<(TenantRow, bool), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existed: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE name = ?")
            .bind(&t.name)
            .fetch_optional(&mut *tx)
            .await?;
        let now = now();
        sqlx::query(
            "INSERT INTO tenants (name, max_containers, max_running, max_cpus, max_memory_bytes,
                                  max_pids, port_min, port_max, requests_per_second, created_at, updated_at,
                                  max_disk_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)
             ON CONFLICT (name) DO UPDATE SET
                max_containers = ?2, max_running = ?3, max_cpus = ?4, max_memory_bytes = ?5,
                max_pids = ?6, port_min = ?7, port_max = ?8, requests_per_second = ?9, updated_at = ?10,
                max_disk_bytes = ?11",
        )
        .bind(&t.name)
        .bind(t.max_containers)
        .bind(t.max_running)
        .bind(t.max_cpus)
        .bind(t.max_memory_bytes)
        .bind(t.max_pids)
        .bind(t.port_min)
        .bind(t.port_max)
        .bind(t.requests_per_second)
        .bind(&now)
        .bind(t.max_disk_bytes)
        .execute(&mut *tx)
        .await?;
        let row: TenantRow = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?"
        ))
        .bind(&t.name)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row, existed.is_none()))
    }

    pub async fn tenant(&self, name: &str) -> Result<Option<TenantRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes a tenant that owns no container, with its tokens, in one transaction.
    pub async fn delete_tenant(&self, name: &str) -> Result<TenantDelete, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let owns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM containers WHERE tenant = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if owns > 0 {
            return Ok(TenantDelete::Owns(owns));
        }
        sqlx::query("DELETE FROM tokens WHERE tenant = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM tenants WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(if gone == 0 {
            TenantDelete::Missing
        } else {
            TenantDelete::Deleted
        })
    }

    /// What `tenant` holds now. CPU and memory are the effective limits: the spec's, or the
    /// given defaults.
    pub async fn usage(
        &self,
        tenant: &str,
        default_cpus: Option<f64>,
        default_memory: Option<i64>,
    ) -> Result<UsageRow, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS containers,
                    COALESCE(SUM(desired_state IN ('running', 'paused') AND deleted_at IS NULL), 0) AS running,
                    COALESCE(SUM(COALESCE(cpus, ?2, 0)), 0.0) AS cpus,
                    COALESCE(SUM(COALESCE(memory_bytes, ?3, 0)), 0) AS memory,
                    COALESCE(SUM(COALESCE(pids, 0)), 0) AS pids,
                    COALESCE(SUM(COALESCE(disk_bytes, 0)), 0)
                      + (SELECT COALESCE(SUM(s.bytes), 0) FROM snapshots s
                         JOIN containers c ON c.cuid = s.cuid WHERE c.tenant = ?1) AS disk
             FROM containers WHERE tenant = ?1",
        )
        .bind(tenant)
        .bind(default_cpus)
        .bind(default_memory)
        .fetch_one(&self.pool)
        .await?;
        Ok(UsageRow {
            containers: row.try_get("containers")?,
            running: row.try_get("running")?,
            cpus: row.try_get("cpus")?,
            memory: row.try_get("memory")?,
            pids: row.try_get("pids")?,
            disk: row.try_get("disk")?,
        })
    }

    /// The tenant a container belongs to: `None` for an unknown container, `Some(None)` for
    /// one without a tenant.
    pub async fn tenant_of(&self, cuid: &str) -> Result<Option<Option<String>>, sqlx::Error> {
        sqlx::query_scalar("SELECT tenant FROM containers WHERE cuid = ?")
            .bind(cuid)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO tokens (id, name, scope, tenant, secret_sha256, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.scope)
        .bind(&t.tenant)
        .bind(&t.secret_sha256)
        .bind(&t.created_at)
        .bind(&t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, name, scope, tenant, secret_sha256, created_at, expires_at, last_used_at,
                    revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Marks a token revoked; `false` if there is no such live token.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(done > 0)
    }

    /// Writes the `last_used_at` times kept in memory since the last flush, in one transaction.
    pub async fn record_token_use(&self, used: &[(String, String)]) -> Result<(), sqlx::Error> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (id, at) in used {
            sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}
