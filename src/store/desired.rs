//! Desired-state writes, made by the API: insert, spec updates, actions' transitions and
//! tombstones (and the server's own at a container's deadline, [`Store::expire`]). Each runs
//! under `BEGIN IMMEDIATE`, so concurrent writers queue on SQLite's lock instead of failing
//! on a stale snapshot, and each decides on the row as it is under that lock. Every write the API acknowledges is committed (WAL, `synchronous=FULL`) before
//! the answer goes out.

use serde_json::Value;
use sqlx::{Sqlite, Transaction};

use super::containers::{fetch_one, Container, Created, Updated};
use super::error::Error;
use super::{deadline_after, now, stamp, Store};
use crate::lifecycle::{plan, DesiredState, Plan, StatusReason, Verb};
use crate::spec::{Lifetime, OnExpiry, Port, Spec};

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
        self.insert_owned(cuid, spec, desired_state, None, None, idempotency, render)
            .await
    }

    /// [`insert`](Self::insert) for a container that belongs to `tenant`, with its
    /// `lifetime` (its deadline is the creation time plus `ttl`).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_owned(
        &self,
        cuid: &str,
        spec: &Spec,
        desired_state: DesiredState,
        tenant: Option<&str>,
        lifetime: Option<&Lifetime>,
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
        let clock = chrono::Utc::now();
        let now = stamp(clock);
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
        write_idle(&mut tx, cuid, spec).await?;
        write_health(&mut tx, cuid, spec).await?;
        write_placement(&mut tx, cuid, spec).await?;
        if let Some(tenant) = tenant {
            sqlx::query("UPDATE containers SET tenant = ? WHERE cuid = ?")
                .bind(tenant)
                .bind(cuid)
                .execute(&mut *tx)
                .await?;
        }
        write_name(&mut tx, cuid, spec).await?;
        write_ports(&mut tx, cuid, &spec.ports).await?;
        if lifetime.is_some() {
            write_lifetime(&mut tx, cuid, lifetime, clock).await?;
        }
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
        self.update(cuid, if_match, |c| Ok((change(c)?, None)))
            .await
    }

    /// [`Self::update_spec`] that may also set the `lifetime`: `change` answers the new spec
    /// and `Some(lifetime)` to set it (`Some(None)` removes it). A lifetime set moves the
    /// deadline to now + `ttl` (even when it equals the current one) and bumps no
    /// generation: it recreates nothing. `Updated::changed` is about the spec.
    pub async fn update<E: From<Error>>(
        &self,
        cuid: &str,
        if_match: Option<i64>,
        change: impl FnOnce(&Container) -> Result<(Spec, Option<Option<Lifetime>>), E>,
    ) -> Result<Updated, E> {
        let row = self.lock_row(cuid).await?;
        let current = &row.current;
        if current.deleted_at.is_some() {
            return Err(Error::Deleting.into());
        }
        check_generation(current.generation, if_match)?;
        let (next, lifetime) = change(current)?;
        Ok(self.write_spec(row, next, lifetime).await?)
    }

    /// The write of [`Self::update`], once `next` is decided.
    async fn write_spec(
        &self,
        mut row: LockedRow,
        next: Spec,
        lifetime: Option<Option<Lifetime>>,
    ) -> Result<Updated, Error> {
        let cuid = row.cuid.clone();
        let cuid = cuid.as_str();
        let current = &row.current;
        let clock = chrono::Utc::now();
        if next == current.spec {
            let Some(lifetime) = lifetime else {
                // Nothing to write: the transaction ends (rolled back) with `row`.
                return Ok(Updated {
                    container: row.current,
                    changed: false,
                });
            };
            write_lifetime(&mut row.tx, cuid, lifetime.as_ref(), clock).await?;
            let container = row.commit().await?;
            self.touched();
            return Ok(Updated {
                container,
                changed: false,
            });
        }
        if let Some(lifetime) = lifetime {
            write_lifetime(&mut row.tx, cuid, lifetime.as_ref(), clock).await?;
        }
        let same_in_docker = Spec {
            idle: current.spec.idle,
            name: current.spec.name.clone(),
            auto_update: current.spec.auto_update,
            ..next.clone()
        } == current.spec;
        if same_in_docker {
            // Only the idle policy, the name or `auto_update` changed: the server's business,
            // not what the container is made from. No new generation (nothing to recreate),
            // but a change all the same.
            write_idle(&mut row.tx, cuid, &next).await?;
            write_name(&mut row.tx, cuid, &next).await?;
            write_hardening(&mut row.tx, cuid, &next).await?;
            sqlx::query("UPDATE containers SET updated_at = ? WHERE cuid = ?")
                .bind(stamp(clock))
                .bind(cuid)
                .execute(&mut *row.tx)
                .await?;
            let container = row.commit().await?;
            self.touched();
            return Ok(Updated {
                container,
                changed: true,
            });
        }
        let now = stamp(clock);
        let env = serde_json::to_string(&next.env).unwrap_or_else(|_| "{}".into());
        let tags = serde_json::to_string(&next.tags).unwrap_or_else(|_| "[]".into());
        let command = next
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let restart = next.restart.as_str();
        // A runtime query (the offline data of sqlx's macros cannot be regenerated here).
        sqlx::query(
            "UPDATE containers SET image = ?, env = ?, tags = ?, cpus = ?, memory = ?, memory_bytes = ?, pids = ?,
                    command = ?, restart = ?, user = ?, generation = generation + 1, updated_at = ?
             WHERE cuid = ?",
        )
        .bind(&next.image)
        .bind(env)
        .bind(tags)
        .bind(next.resources.cpus)
        .bind(&next.resources.memory)
        .bind(next.resources.memory_bytes)
        .bind(next.resources.pids)
        .bind(command)
        .bind(restart)
        .bind(&next.user)
        .bind(&now)
        .bind(cuid)
        .execute(&mut *row.tx)
        .await?;
        if next.image != current.spec.image {
            // Another image: a digest pinned for the old one, its update and what was known
            // about it no longer apply.
            sqlx::query(
                "UPDATE containers SET image_pin = NULL, image_digest = NULL, update_available = NULL,
                        update_pending = NULL WHERE cuid = ?",
            )
            .bind(cuid)
            .execute(&mut *row.tx)
            .await?;
        }
        write_hardening(&mut row.tx, cuid, &next).await?;
        write_network(&mut row.tx, cuid, &next).await?;
        write_name(&mut row.tx, cuid, &next).await?;
        write_idle(&mut row.tx, cuid, &next).await?;
        write_health(&mut row.tx, cuid, &next).await?;
        write_placement(&mut row.tx, cuid, &next).await?;
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
            write_tombstone(&mut row.tx, cuid, None).await?;
        }
        let container = row.commit().await?;
        self.touched();
        Ok(container)
    }

    /// The server's own act at a container's deadline, decided under the row's write lock
    /// on the row as it is then ([`ExpiryPlan::of`]): a `PATCH` that moved or removed the
    /// deadline before this lock was taken wins. When due, the deadline is cleared (it is
    /// acted on once: a client may start the stopped container again) in the same
    /// transaction as the act: `on_expiry: stop` is the `stop` action's transition with
    /// `status_reason: expired`; `delete` is the tombstone of `DELETE`, with
    /// `status_reason: expired` in the same write, so the last event says why.
    pub async fn expire(
        &self,
        cuid: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Expiry, Error> {
        let mut row = match self.lock_row(cuid).await {
            Ok(row) => row,
            Err(Error::NotFound(_)) => return Ok(Expiry::NotDue(None)),
            Err(e) => return Err(e),
        };
        let plan = ExpiryPlan::of(&row.current, &stamp(at));
        if let ExpiryPlan::NotDue(next) = &plan {
            return Ok(Expiry::NotDue(next.clone()));
        }
        sqlx::query("UPDATE containers SET expires_at = NULL WHERE cuid = ?")
            .bind(cuid)
            .execute(&mut *row.tx)
            .await?;
        match plan {
            ExpiryPlan::Delete => {
                write_tombstone(&mut row.tx, cuid, Some(StatusReason::Expired)).await?;
                let container = row.commit().await?;
                self.touched();
                Ok(Expiry::Deleted(container))
            }
            ExpiryPlan::Stop(desired, restart) => {
                let (container, _) = self
                    .write_transition(row, desired, restart, Some(StatusReason::Expired))
                    .await?;
                Ok(Expiry::Stopped(container))
            }
            ExpiryPlan::Settled | ExpiryPlan::NotDue(_) => {
                // Stopped by its idle policy, it would wake on use and run on without a
                // deadline: now it is stopped because its time ran out (no resume on use,
                // and the `expired` event fires).
                if row.current.status_reason == Some(StatusReason::Idle) {
                    sqlx::query("UPDATE containers SET status_reason = ? WHERE cuid = ?")
                        .bind(StatusReason::Expired)
                        .bind(cuid)
                        .execute(&mut *row.tx)
                        .await?;
                }
                let container = row.commit().await?;
                self.touched();
                Ok(Expiry::Settled(container))
            }
        }
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

/// What the server does at a container's deadline, decided on the row as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpiryPlan {
    /// Nothing yet: no deadline (`None`; removed, or the container is being deleted), or a
    /// later one (a `PATCH` moved it), to be waited for.
    NotDue(Option<String>),
    /// `on_expiry: stop`: the stop action's new desired state.
    Stop(DesiredState, bool),
    /// `on_expiry: stop` of a container that is not up (never started, stopped): the
    /// deadline is cleared and nothing else changes.
    Settled,
    /// `on_expiry: delete`.
    Delete,
}

impl ExpiryPlan {
    /// The plan for `c` at `now` (both times as stored, which sort as text).
    pub fn of(c: &Container, now: &str) -> Self {
        if c.deleted_at.is_some() {
            return Self::NotDue(None);
        }
        match &c.expires_at {
            None => return Self::NotDue(None),
            Some(at) if at.as_str() > now => return Self::NotDue(Some(at.clone())),
            Some(_) => {}
        }
        let on_expiry = c.lifetime.map(|l| l.on_expiry).unwrap_or_default();
        match on_expiry {
            OnExpiry::Delete => Self::Delete,
            OnExpiry::Stop => match plan(Verb::Stop, c.desired_state, c.status) {
                Ok(Plan::Set {
                    desired, restart, ..
                }) => Self::Stop(desired, restart),
                _ => Self::Settled,
            },
        }
    }
}

/// What [`Store::expire`] did.
#[derive(Clone, Debug)]
pub enum Expiry {
    /// Nothing: see [`ExpiryPlan::NotDue`] (also: the row is gone).
    NotDue(Option<String>),
    /// Desired state `stopped`, `status_reason: expired`.
    Stopped(Container),
    /// Tombstoned, `status_reason: expired`.
    Deleted(Container),
    /// The deadline was cleared; the container was not up, so nothing else changed.
    Settled(Container),
}

/// `deleted_at` (and `status_reason` when the server deletes by itself): the tombstone.
async fn write_tombstone(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    reason: Option<StatusReason>,
) -> Result<(), Error> {
    let now = now();
    // A runtime query: no new entry for the offline data of sqlx's macros.
    sqlx::query(
        "UPDATE containers SET deleted_at = ?1, updated_at = ?1, status_reason = ?2 WHERE cuid = ?3",
    )
    .bind(&now)
    .bind(reason)
    .bind(cuid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `lifetime` columns (migration 0009): set with a deadline `ttl` after `clock`, or
/// cleared with it.
async fn write_lifetime(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    lifetime: Option<&Lifetime>,
    clock: chrono::DateTime<chrono::Utc>,
) -> Result<(), Error> {
    let ttl = lifetime.map(|l| i64::try_from(l.ttl).unwrap_or(i64::MAX));
    let on_expiry = lifetime.map(|l| l.on_expiry.as_str());
    let expires_at = lifetime.map(|l| deadline_after(clock, l.ttl));
    sqlx::query(
        "UPDATE containers SET ttl = ?, on_expiry = ?, expires_at = ?, updated_at = ? WHERE cuid = ?",
    )
    .bind(ttl)
    .bind(on_expiry)
    .bind(expires_at)
    .bind(stamp(clock))
    .bind(cuid)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
         disk_bytes = ?, auto_update = ? WHERE cuid = ?",
    )
    .bind(spec.read_only)
    .bind(&spec.resources.tmp)
    .bind(spec.resources.tmp_bytes)
    .bind(spec.isolation.as_str())
    .bind(&spec.resources.disk)
    .bind(spec.resources.disk_bytes)
    .bind(spec.auto_update)
    .bind(cuid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The spec's health check (migration 0012) as JSON, like [`write_hardening`].
async fn write_health(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    let check = spec
        .health
        .as_ref()
        .map(|h| serde_json::to_string(h).unwrap_or_default());
    sqlx::query("UPDATE containers SET health_check = ? WHERE cuid = ?")
        .bind(check)
        .bind(cuid)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The spec's placement constraints (migration 0017) as JSON, like [`write_hardening`].
async fn write_placement(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    let placement = spec
        .placement
        .as_ref()
        .map(|p| serde_json::to_string(p).unwrap_or_default());
    sqlx::query("UPDATE containers SET placement = ? WHERE cuid = ?")
        .bind(placement)
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

/// The spec's idle policy (migration 0010), like [`write_hardening`].
async fn write_idle(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    spec: &Spec,
) -> Result<(), Error> {
    let (after, action, resume) = match spec.idle {
        Some(i) => (
            Some(i64::try_from(i.after).unwrap_or(i64::MAX)),
            i.action.as_str(),
            i.resume_on_use,
        ),
        None => (None, "pause", true),
    };
    sqlx::query(
        "UPDATE containers SET idle_after = ?, idle_action = ?, idle_resume = ? WHERE cuid = ?",
    )
    .bind(after)
    .bind(action)
    .bind(resume)
    .bind(cuid)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
