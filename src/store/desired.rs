//! Desired-state writes, made by the API: insert, spec updates, actions' transitions and
//! tombstones. Each runs under `BEGIN IMMEDIATE`, so concurrent writers queue on SQLite's
//! lock instead of failing on a stale snapshot, and each decides on the row as it is under
//! that lock. Every write the API acknowledges is committed (WAL, `synchronous=FULL`) before
//! the answer goes out.

use serde_json::Value;
use sqlx::{Sqlite, Transaction};

use super::containers::{fetch_one, Container, Created, Updated};
use super::error::Error;
use super::{now, Store};
use crate::lifecycle::{DesiredState, StatusReason};
use crate::spec::{Port, Spec};

/// One container row under the write lock: the transaction and the row as it was when the
/// lock was taken. Dropping it without [`commit`](Self::commit) rolls everything back.
struct LockedRow {
    tx: Transaction<'static, Sqlite>,
    cuid: String,
    current: Container,
}

impl LockedRow {
    /// Reads the row back inside the transaction (the answer is exactly what is committed),
    /// then commits.
    async fn commit(mut self) -> Result<Container, Error> {
        let container = read_back(&mut self.tx, &self.cuid).await?;
        self.tx.commit().await?;
        Ok(container)
    }
}

/// The row as it is inside `conn`'s transaction; gone is `404`.
async fn read_back(conn: &mut sqlx::SqliteConnection, cuid: &str) -> Result<Container, Error> {
    fetch_one(conn, cuid)
        .await?
        .ok_or_else(|| Error::NotFound(cuid.to_owned()))
}

/// `If-Match` check: the caller's generation must be the stored one.
fn check_generation(current: i64, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(g) if g != current => Err(Error::StaleGeneration {
            expected: g,
            current,
        }),
        _ => Ok(()),
    }
}

impl Store {
    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// `BEGIN IMMEDIATE`, then the container's row; an unknown container is `404`.
    async fn lock_row(&self, cuid: &str) -> Result<LockedRow, Error> {
        let mut tx = self.begin_immediate().await?;
        let current = read_back(&mut tx, cuid).await?;
        Ok(LockedRow {
            tx,
            cuid: cuid.to_owned(),
            current,
        })
    }

    /// Inserts a new container with its ports and, when given, its idempotency record, in one
    /// transaction. `render` turns the stored container into the answer that is kept for the
    /// key. A host port held by another container is `409 PORT_CONFLICT`; a key stored by a
    /// concurrent twin request is [`Created::KeyTaken`].
    pub async fn insert(
        &self,
        cuid: &str,
        spec: &Spec,
        desired_state: DesiredState,
        idempotency: Option<(&str, &str)>,
        render: impl FnOnce(&Container) -> Value,
    ) -> Result<Created, Error> {
        self.insert_owned(cuid, spec, desired_state, None, idempotency, render)
            .await
    }

    /// [`insert`](Self::insert) for a container that belongs to `tenant`.
    pub async fn insert_owned(
        &self,
        cuid: &str,
        spec: &Spec,
        desired_state: DesiredState,
        tenant: Option<&str>,
        idempotency: Option<(&str, &str)>,
        render: impl FnOnce(&Container) -> Value,
    ) -> Result<Created, Error> {
        let mut tx = self.begin_immediate().await?;
        if let Some((key, _)) = idempotency {
            let exists = sqlx::query_scalar!("SELECT key FROM idempotency_keys WHERE key = ?", key)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                return Ok(Created::KeyTaken);
            }
        }
        let now = now();
        let desired_state = desired_state.as_str();
        let env = serde_json::to_string(&spec.env).unwrap_or_else(|_| "{}".into());
        let tags = serde_json::to_string(&spec.tags).unwrap_or_else(|_| "[]".into());
        let command = spec
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let restart = spec.restart.as_str();
        sqlx::query!(
            "INSERT INTO containers (cuid, image, env, tags, cpus, memory, memory_bytes, pids, command, restart, user,
                                     desired_state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            cuid,
            spec.image,
            env,
            tags,
            spec.resources.cpus,
            spec.resources.memory,
            spec.resources.memory_bytes,
            spec.resources.pids,
            command,
            restart,
            spec.user,
            desired_state,
            now,
            now
        )
        .execute(&mut *tx)
        .await?;
        write_hardening(&mut tx, cuid, spec).await?;
        write_network(&mut tx, cuid, spec).await?;
        if let Some(tenant) = tenant {
            sqlx::query("UPDATE containers SET tenant = ? WHERE cuid = ?")
                .bind(tenant)
                .bind(cuid)
                .execute(&mut *tx)
                .await?;
        }
        write_name(&mut tx, cuid, spec).await?;
        write_ports(&mut tx, cuid, &spec.ports).await?;
        let container = read_back(&mut tx, cuid).await?;
        if let Some((key, sha)) = idempotency {
            let text = render(&container).to_string();
            sqlx::query!(
                "INSERT INTO idempotency_keys (key, body_sha256, status, response, cuid, created_at) VALUES (?, ?, 201, ?, ?, ?)",
                key,
                sha,
                text,
                cuid,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.touched();
        Ok(Created::New(Box::new(container)))
    }

    /// Read-modify-write of the spec under the write lock. `change` gets the current
    /// container and returns the new spec; the generation is bumped only if it differs.
    ///
    /// `change` refuses with its own error type `E` (a spec validation error, say), which
    /// the store's own errors convert into.
    pub async fn update_spec<E: From<Error>>(
        &self,
        cuid: &str,
        if_match: Option<i64>,
        change: impl FnOnce(&Container) -> Result<Spec, E>,
    ) -> Result<Updated, E> {
        let row = self.lock_row(cuid).await?;
        let current = &row.current;
        if current.deleted_at.is_some() {
            return Err(Error::Deleting.into());
        }
        check_generation(current.generation, if_match)?;
        let next = change(current)?;
        Ok(self.write_spec(row, next).await?)
    }

    /// The write of [`Self::update_spec`], once `next` is decided.
    async fn write_spec(&self, mut row: LockedRow, next: Spec) -> Result<Updated, Error> {
        let cuid = row.cuid.clone();
        let cuid = cuid.as_str();
        let current = &row.current;
        if next == current.spec {
            // Nothing to write: the transaction ends (rolled back) with `row`.
            return Ok(Updated {
                container: row.current,
                changed: false,
            });
        }
        let now = now();
        let env = serde_json::to_string(&next.env).unwrap_or_else(|_| "{}".into());
        let tags = serde_json::to_string(&next.tags).unwrap_or_else(|_| "[]".into());
        let command = next
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let restart = next.restart.as_str();
        sqlx::query!(
            "UPDATE containers SET image = ?, env = ?, tags = ?, cpus = ?, memory = ?, memory_bytes = ?, pids = ?,
                    command = ?, restart = ?, user = ?, generation = generation + 1, updated_at = ?
             WHERE cuid = ?",
            next.image,
            env,
            tags,
            next.resources.cpus,
            next.resources.memory,
            next.resources.memory_bytes,
            next.resources.pids,
            command,
            restart,
            next.user,
            now,
            cuid
        )
        .execute(&mut *row.tx)
        .await?;
        write_hardening(&mut row.tx, cuid, &next).await?;
        write_network(&mut row.tx, cuid, &next).await?;
        write_name(&mut row.tx, cuid, &next).await?;
        if next.ports != current.spec.ports {
            sqlx::query!("DELETE FROM ports WHERE cuid = ?", cuid)
                .execute(&mut *row.tx)
                .await?;
            write_ports(&mut row.tx, cuid, &next.ports).await?;
        }
        let container = row.commit().await?;
        self.touched();
        Ok(Updated {
            container,
            changed: true,
        })
    }

    /// Marks a container for deletion: `deleted_at`, desired state only (the tombstone the
    /// reconciler acts on). Observed `status` is the reconciler's to write; until it has, the
    /// row reads as `deleting` (see `containers::Row::into_container`).
    pub async fn tombstone(&self, cuid: &str, if_match: Option<i64>) -> Result<Container, Error> {
        let mut row = self.lock_row(cuid).await?;
        let current = &row.current;
        check_generation(current.generation, if_match)?;
        if current.deleted_at.is_none() {
            let now = now();
            // A runtime query: no new entry for the offline data of sqlx's macros.
            sqlx::query("UPDATE containers SET deleted_at = ?1, updated_at = ?1 WHERE cuid = ?2")
                .bind(&now)
                .bind(cuid)
                .execute(&mut *row.tx)
                .await?;
        }
        let container = row.commit().await?;
        self.touched();
        Ok(container)
    }

    /// An action: under the write lock, `plan` sees the row as it is and answers the new
    /// desired state and whether a restart is asked for (`None`: nothing to change). Records
    /// `desired_at`, so an exit before it is not mistaken for the process's own. Returns the
    /// container and whether it changed.
    /// `plan` refuses with its own error type `E`, which the store's errors convert into.
    pub async fn transition<E: From<Error>>(
        &self,
        cuid: &str,
        plan: impl FnOnce(&Container) -> Result<Option<(DesiredState, bool)>, E>,
    ) -> Result<(Container, bool), E> {
        let row = self.lock_row(cuid).await?;
        let Some((desired_state, restart)) = plan(&row.current)? else {
            return Ok((row.current, false));
        };
        Ok(self
            .write_transition(row, desired_state, restart, None)
            .await?)
    }

    /// A transition the server makes by itself, for `reason` (a lifetime that ran out, an
    /// idle policy): as [`Self::transition`], and the row keeps `reason` as its
    /// `status_reason` until a client's action replaces the desired state.
    pub async fn transition_for<E: From<Error>>(
        &self,
        cuid: &str,
        reason: StatusReason,
        plan: impl FnOnce(&Container) -> Result<Option<(DesiredState, bool)>, E>,
    ) -> Result<(Container, bool), E> {
        let row = self.lock_row(cuid).await?;
        let Some((desired_state, restart)) = plan(&row.current)? else {
            return Ok((row.current, false));
        };
        Ok(self
            .write_transition(row, desired_state, restart, Some(reason))
            .await?)
    }

    /// The write of [`Self::transition`], once the plan is made.
    async fn write_transition(
        &self,
        mut row: LockedRow,
        desired_state: DesiredState,
        restart: bool,
        reason: Option<StatusReason>,
    ) -> Result<(Container, bool), Error> {
        let cuid = row.cuid.clone();
        let cuid = cuid.as_str();
        let bump = i64::from(restart);
        let desired_state = desired_state.as_str();
        let now = now();
        sqlx::query!(
            "UPDATE containers SET desired_state = ?, restart_requested = restart_requested + ?, desired_at = ?, updated_at = ?
             WHERE cuid = ?",
            desired_state,
            bump,
            now,
            now,
            cuid
        )
        .execute(&mut *row.tx)
        .await?;
        // A runtime query: the statement above keeps its offline data.
        sqlx::query("UPDATE containers SET status_reason = ? WHERE cuid = ?")
            .bind(reason)
            .bind(cuid)
            .execute(&mut *row.tx)
            .await?;
        let container = row.commit().await?;
        self.touched();
        Ok((container, true))
    }
}

/// The spec's hardening columns (migrations 0003, 0004 and 0006), written beside the main
/// insert or update in the same transaction. A runtime query: no new entry for the offline data of sqlx's
/// macros, and the older statements keep theirs.
async fn write_hardening(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE containers SET read_only = ?, tmp = ?, tmp_bytes = ?, isolation = ?, disk = ?, \
         disk_bytes = ? WHERE cuid = ?",
    )
    .bind(spec.read_only)
    .bind(&spec.resources.tmp)
    .bind(spec.resources.tmp_bytes)
    .bind(spec.isolation.as_str())
    .bind(&spec.resources.disk)
    .bind(spec.resources.disk_bytes)
    .bind(cuid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The spec's egress policy (migration 0005), like [`write_hardening`].
async fn write_network(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    let allow = serde_json::to_string(&spec.network.allow).unwrap_or_else(|_| "[]".into());
    sqlx::query("UPDATE containers SET egress = ?, egress_allow = ? WHERE cuid = ?")
        .bind(spec.network.egress.as_str())
        .bind(allow)
        .bind(cuid)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The spec's `name` (migration 0015). Unique among a tenant's live containers by the
/// index `containers_live_name`, which is what makes two racing requests for one name
/// race-free: the loser is `409 NAME_TAKEN` naming the holder. Written after the tenant.
async fn write_name(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    let written = sqlx::query("UPDATE containers SET name = ? WHERE cuid = ?")
        .bind(&spec.name)
        .bind(cuid)
        .execute(&mut **tx)
        .await;
    match written {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT cuid FROM containers WHERE name = ?1 AND cuid <> ?2 AND deleted_at IS NULL
                   AND COALESCE(tenant, '') = (SELECT COALESCE(tenant, '') FROM containers WHERE cuid = ?2)",
            )
            .bind(&spec.name)
            .bind(cuid)
            .fetch_optional(&mut **tx)
            .await?;
            Err(Error::NameTaken {
                name: spec.name.clone().unwrap_or_default(),
                holder,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Inserts a container's ports. A port already held by another container is `409
/// PORT_CONFLICT` naming the holder; the UNIQUE constraint is what makes this race-free.
async fn write_ports(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    ports: &[Port],
) -> Result<(), Error> {
    for (position, p) in ports.iter().enumerate() {
        let position = position as i64;
        let result = sqlx::query!(
            "INSERT INTO ports (cuid, host_port, container_port, protocol, host_ip, position) VALUES (?, ?, ?, ?, ?, ?)",
            cuid,
            p.host,
            p.container,
            p.protocol,
            p.host_ip,
            position
        )
        .execute(&mut **tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let holder = sqlx::query_scalar!(
                    "SELECT cuid FROM ports WHERE host_port = ? AND protocol = ?",
                    p.host,
                    p.protocol
                )
                .fetch_optional(&mut **tx)
                .await?;
                return Err(Error::PortConflict {
                    host: p.host,
                    protocol: p.protocol.clone(),
                    holder,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
