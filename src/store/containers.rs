//! Container rows: desired state written by the API, observed state written by the
//! reconciler. Every write that the API acknowledges is committed (WAL, `synchronous=FULL`)
//! before the answer goes out. Read-modify-write paths use `BEGIN IMMEDIATE`, so concurrent
//! writers queue on SQLite's lock instead of failing on a stale snapshot.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::{Sqlite, Transaction};

use super::{now, Store};
use crate::error::{ApiError, Kind};
use crate::lifecycle::{DesiredState, Progress, Status};
use crate::spec::{Port, Resources, Spec};

/// One container as stored.
#[derive(Clone, Debug)]
pub struct Container {
    pub seq: i64,
    pub cuid: String,
    pub spec: Spec,
    pub desired_state: DesiredState,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub generation: i64,
    pub observed_generation: i64,
    pub restart_requested: i64,
    pub restart_done: i64,
    pub desired_at: String,
    pub last_error: Option<Value>,
    pub deleted_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Container {
    /// Its lifecycle fields, for the rules of [`crate::lifecycle`].
    pub fn progress(&self) -> Progress {
        Progress {
            desired: self.desired_state,
            status: self.status,
            generation: self.generation,
            observed_generation: self.observed_generation,
            restart_requested: self.restart_requested,
            restart_done: self.restart_done,
            deleting: self.deleted_at.is_some(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    cuid: String,
    image: String,
    env: String,
    tags: String,
    cpus: Option<f64>,
    memory: Option<String>,
    memory_bytes: Option<i64>,
    pids: Option<i64>,
    command: Option<String>,
    restart: String,
    user: Option<String>,
    desired_state: DesiredState,
    status: Status,
    exit_code: Option<i64>,
    generation: i64,
    observed_generation: i64,
    restart_requested: i64,
    restart_done: i64,
    desired_at: String,
    last_error: Option<String>,
    deleted_at: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "seq, cuid, image, env, tags, cpus, memory, memory_bytes, pids, command, restart, user, \
     desired_state, status, exit_code, generation, observed_generation, restart_requested, restart_done, \
     desired_at, last_error, deleted_at, created_at, updated_at";

impl Row {
    fn into_container(self, ports: Vec<Port>) -> Container {
        Container {
            seq: self.seq,
            spec: Spec {
                image: self.image,
                env: serde_json::from_str(&self.env).unwrap_or_default(),
                tags: serde_json::from_str(&self.tags).unwrap_or_default(),
                resources: Resources {
                    cpus: self.cpus,
                    memory: self.memory,
                    memory_bytes: self.memory_bytes,
                    pids: self.pids,
                },
                ports,
                command: self.command.and_then(|c| serde_json::from_str(&c).ok()),
                restart: self.restart,
                user: self.user,
            },
            cuid: self.cuid,
            desired_state: self.desired_state,
            status: self.status,
            exit_code: self.exit_code,
            generation: self.generation,
            observed_generation: self.observed_generation,
            restart_requested: self.restart_requested,
            restart_done: self.restart_done,
            desired_at: self.desired_at,
            last_error: self.last_error.and_then(|e| serde_json::from_str(&e).ok()),
            deleted_at: self.deleted_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Which rows a listing wants; part of the pagination cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListFilter {
    pub status: Option<Vec<String>>,
    pub tag: Option<String>,
}

/// The first answer to an `Idempotency-Key`, kept to be replayed.
pub struct StoredResponse {
    pub body_sha256: String,
    pub status: u16,
    pub response: Value,
}

/// What a PATCH changed: the updated container, and whether the spec changed at all.
pub struct Updated {
    pub container: Container,
    pub changed: bool,
}

#[derive(sqlx::FromRow)]
struct PortRow {
    cuid: String,
    host_port: i64,
    container_port: i64,
    protocol: String,
    host_ip: String,
}

impl PortRow {
    fn into_port(self) -> Port {
        Port {
            host: self.host_port as u16,
            container: self.container_port as u16,
            protocol: self.protocol,
            host_ip: self.host_ip,
        }
    }
}

/// `If-Match` check: the caller's generation must be the stored one.
fn check_generation(current: i64, expected: Option<i64>) -> Result<(), ApiError> {
    match expected {
        Some(g) if g != current => Err(ApiError::new(
            Kind::PreconditionFailed,
            "STALE_GENERATION",
            format!("If-Match names generation {g}, the container is at generation {current}"),
        )
        .with_details(json!({"expected": g, "current": current}))),
        _ => Ok(()),
    }
}

pub fn not_found(cuid: &str) -> ApiError {
    ApiError::not_found("CONTAINER_NOT_FOUND", format!("no container {cuid}"))
        .with_details(json!({"cuid": cuid}))
}

impl Store {
    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub async fn get(&self, cuid: &str) -> Result<Option<Container>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        fetch_one(&mut conn, cuid).await
    }

    /// Same as [`get`](Self::get), with a missing container as `404`.
    pub async fn get_or_404(&self, cuid: &str) -> Result<Container, ApiError> {
        match self.get(cuid).await? {
            Some(c) => Ok(c),
            None => Err(not_found(cuid)),
        }
    }

    /// Looks up an idempotency key.
    pub async fn idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<StoredResponse>, sqlx::Error> {
        let row = sqlx::query!(
            "SELECT body_sha256, status, response FROM idempotency_keys WHERE key = ?",
            key
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredResponse {
            body_sha256: r.body_sha256,
            status: r.status as u16,
            response: serde_json::from_str(&r.response).unwrap_or(Value::Null),
        }))
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
    ) -> Result<Created, ApiError> {
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
            spec.restart,
            spec.user,
            desired_state,
            now,
            now
        )
        .execute(&mut *tx)
        .await?;
        write_ports(&mut tx, cuid, &spec.ports).await?;
        let container = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
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
        Ok(Created::New(Box::new(container)))
    }

    /// One page in creation order after `after_seq`: keyset pagination on the primary key.
    /// Returns up to `limit + 1` rows so the caller knows whether another page exists.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Container>, sqlx::Error> {
        let status = filter
            .status
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM containers WHERE {PAGE_WHERE}"
        ))
        .bind(after_seq)
        .bind(status)
        .bind(&filter.tag)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let cuids: Vec<&str> = rows.iter().map(|r| r.cuid.as_str()).collect();
        let cuids = serde_json::to_string(&cuids).unwrap_or_default();
        let port_rows: Vec<PortRow> = sqlx::query_as(
            "SELECT cuid, host_port, container_port, protocol, host_ip FROM ports
             WHERE cuid IN (SELECT value FROM json_each(?)) ORDER BY cuid, position",
        )
        .bind(cuids)
        .fetch_all(&self.pool)
        .await?;
        let mut ports: BTreeMap<String, Vec<Port>> = BTreeMap::new();
        for p in port_rows {
            ports.entry(p.cuid.clone()).or_default().push(p.into_port());
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let p = ports.remove(&r.cuid).unwrap_or_default();
                r.into_container(p)
            })
            .collect())
    }

    /// Read-modify-write of the spec under the write lock. `change` gets the current
    /// container and returns the new spec; the generation is bumped only if it differs.
    pub async fn update_spec(
        &self,
        cuid: &str,
        if_match: Option<i64>,
        change: impl FnOnce(&Container) -> Result<Spec, ApiError>,
    ) -> Result<Updated, ApiError> {
        let mut tx = self.begin_immediate().await?;
        let current = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        if current.deleted_at.is_some() {
            return Err(ApiError::state(
                "CONTAINER_DELETING",
                "the container is being deleted",
            ));
        }
        check_generation(current.generation, if_match)?;
        let next = change(&current)?;
        if next == current.spec {
            return Ok(Updated {
                container: current,
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
            next.restart,
            next.user,
            now,
            cuid
        )
        .execute(&mut *tx)
        .await?;
        if next.ports != current.spec.ports {
            sqlx::query!("DELETE FROM ports WHERE cuid = ?", cuid)
                .execute(&mut *tx)
                .await?;
            write_ports(&mut tx, cuid, &next.ports).await?;
        }
        let container = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        tx.commit().await?;
        Ok(Updated {
            container,
            changed: true,
        })
    }

    /// Marks a container for deletion (the tombstone the reconciler acts on).
    pub async fn tombstone(
        &self,
        cuid: &str,
        if_match: Option<i64>,
    ) -> Result<Container, ApiError> {
        let mut tx = self.begin_immediate().await?;
        let current = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        check_generation(current.generation, if_match)?;
        if current.deleted_at.is_none() {
            let now = now();
            sqlx::query!(
                "UPDATE containers SET deleted_at = ?, status = 'deleting', updated_at = ? WHERE cuid = ?",
                now,
                now,
                cuid
            )
            .execute(&mut *tx)
            .await?;
        }
        let container = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        tx.commit().await?;
        Ok(container)
    }
}

pub enum Created {
    New(Box<Container>),
    /// The idempotency key was stored by a concurrent request between our look-up and insert.
    KeyTaken,
}

/// The WHERE/ORDER/LIMIT of a listing page; `?1` after-seq, `?2` status JSON list or NULL,
/// `?3` tag or NULL, `?4` limit. Filters are checked per row while walking the primary key,
/// so SQLite searches the rowid range in order and never sorts.
pub const PAGE_WHERE: &str = "seq > ?1
    AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))
    AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(containers.tags) AS t WHERE t.value = ?3))
    ORDER BY seq LIMIT ?4";

async fn fetch_one(
    conn: &mut sqlx::SqliteConnection,
    cuid: &str,
) -> Result<Option<Container>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM containers WHERE cuid = ?"))
            .bind(cuid)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let ports: Vec<PortRow> = sqlx::query_as(
        "SELECT cuid, host_port, container_port, protocol, host_ip FROM ports WHERE cuid = ? ORDER BY position",
    )
    .bind(cuid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(row.into_container(
        ports.into_iter().map(PortRow::into_port).collect(),
    )))
}

/// Inserts a container's ports. A port already held by another container is `409
/// PORT_CONFLICT` naming the holder; the UNIQUE constraint is what makes this race-free.
async fn write_ports(
    tx: &mut Transaction<'static, Sqlite>,
    cuid: &str,
    ports: &[Port],
) -> Result<(), ApiError> {
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
                return Err(ApiError::conflict(
                    "PORT_CONFLICT",
                    format!(
                        "host port {}/{} already belongs to another container",
                        p.host, p.protocol
                    ),
                )
                .with_details(json!({"host": p.host, "protocol": p.protocol, "holder": holder})));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What a reconciler pass observed, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub status: Status,
    pub exit_code: Option<i64>,
    pub observed_generation: i64,
    pub last_error: Option<Value>,
    pub restart_done: i64,
}

/// The fields resync compares with Docker's list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Summary {
    pub cuid: String,
    pub desired_state: DesiredState,
    pub status: Status,
    pub generation: i64,
    pub observed_generation: i64,
    pub restart_requested: i64,
    pub restart_done: i64,
    pub deleted: bool,
}

impl Summary {
    pub fn progress(&self) -> Progress {
        Progress {
            desired: self.desired_state,
            status: self.status,
            generation: self.generation,
            observed_generation: self.observed_generation,
            restart_requested: self.restart_requested,
            restart_done: self.restart_done,
            deleting: self.deleted,
        }
    }
}

impl Store {
    /// Records observed state (the reconciler is its one writer). Writes only when something
    /// changed, so an idle resync writes nothing; never overwrites a tombstone's `deleting`.
    /// Returns whether it wrote.
    pub async fn record_observation(
        &self,
        cuid: &str,
        o: &Observation,
    ) -> Result<bool, sqlx::Error> {
        let last_error = o.last_error.as_ref().map(Value::to_string);
        let status = o.status.as_str();
        let now = now();
        let result = sqlx::query!(
            "UPDATE containers SET status = ?1, exit_code = ?2, observed_generation = ?3, last_error = ?4,
                    restart_done = MAX(restart_done, ?5), updated_at = ?6
             WHERE cuid = ?7 AND deleted_at IS NULL
               AND (status IS NOT ?1 OR exit_code IS NOT ?2 OR observed_generation IS NOT ?3
                    OR last_error IS NOT ?4 OR restart_done < ?5)",
            status,
            o.exit_code,
            o.observed_generation,
            last_error,
            o.restart_done,
            now,
            cuid
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// A failed pass: `status: error` (kept `deleting` for a tombstone) and `last_error`.
    pub async fn record_error(&self, cuid: &str, error: &Value) -> Result<(), sqlx::Error> {
        let text = error.to_string();
        let now = now();
        sqlx::query!(
            "UPDATE containers SET status = CASE WHEN deleted_at IS NULL THEN 'error' ELSE status END,
                    last_error = ?, updated_at = ? WHERE cuid = ?",
            text,
            now,
            cuid
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last step of deletion, after Docker objects and files are gone.
    pub async fn delete_row(&self, cuid: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM containers WHERE cuid = ? AND deleted_at IS NOT NULL",
            cuid
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rows resync looks at: everything but containers that were never started.
    pub async fn summaries(&self) -> Result<Vec<Summary>, sqlx::Error> {
        sqlx::query_as(
            "SELECT cuid, desired_state, status, generation, observed_generation, restart_requested, restart_done,
                    deleted_at IS NOT NULL AS deleted
             FROM containers WHERE desired_state != 'created' OR deleted_at IS NOT NULL
                OR observed_generation != generation",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// An action: under the write lock, `plan` sees the row as it is and answers the new
    /// desired state and whether a restart is asked for (`None`: nothing to change). Records
    /// `desired_at`, so an exit before it is not mistaken for the process's own. Returns the
    /// container and whether it changed.
    pub async fn transition(
        &self,
        cuid: &str,
        plan: impl FnOnce(&Container) -> Result<Option<(DesiredState, bool)>, ApiError>,
    ) -> Result<(Container, bool), ApiError> {
        let mut tx = self.begin_immediate().await?;
        let current = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        let Some((desired_state, restart)) = plan(&current)? else {
            return Ok((current, false));
        };
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
        .execute(&mut *tx)
        .await?;
        let container = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| not_found(cuid))?;
        tx.commit().await?;
        Ok((container, true))
    }

    pub async fn all_cuids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar!("SELECT cuid FROM containers")
            .fetch_all(&self.pool)
            .await
    }
}
