//! Container rows: the types, and the reads. Writes are split by writer: desired state by
//! the API in [`super::desired`], observed state by the reconciler in [`super::observed`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Error, Store};
use crate::lifecycle::{DesiredState, Progress, Status, StatusReason};
use crate::spec::{Health, Lifetime, OnExpiry, Port, Resources, Spec};

/// One container as stored.
#[derive(Clone, Debug)]
pub struct Container {
    pub seq: i64,
    pub cuid: String,
    pub spec: Spec,
    pub desired_state: DesiredState,
    pub status: Status,
    pub exit_code: Option<i64>,
    /// The last exit was an OOM kill (Docker's `State.OOMKilled`).
    pub oom_killed: bool,
    pub generation: i64,
    pub observed_generation: i64,
    pub restart_requested: i64,
    pub restart_done: i64,
    pub desired_at: String,
    pub last_error: Option<Value>,
    pub deleted_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The tenant it belongs to (`None`: the operator's).
    pub tenant: Option<String>,
    /// Why the server set the current desired state (`None`: a client did).
    pub status_reason: Option<StatusReason>,
    /// Its time limit (kept beside the spec: changing it recreates nothing).
    pub lifetime: Option<Lifetime>,
    /// The deadline (RFC 3339 UTC), until the server acted on it.
    pub expires_at: Option<String>,
    /// Observed health (Docker's), while it runs with a health check.
    pub health: Option<Health>,
    /// The tail of the last probe's output, as last observed.
    pub health_log: Option<String>,
    /// The Swarm node that runs it, as last observed (`BACKEND=swarm`); `None` otherwise.
    pub node: Option<String>,
    /// That node's address (its `Status.Addr`), as last observed with `node`.
    pub node_address: Option<String>,
    /// Its last move from one Swarm node to another (migration 0018).
    pub last_move: Option<NodeMove>,
    /// Restarts made for `on_unhealthy: restart` since it was last seen healthy.
    pub unhealthy_restarts: i64,
    /// When the last of them was made (RFC 3339).
    pub unhealthy_restart_at: Option<String>,
    /// Which image by digest it runs and its updates (migration 0014).
    pub image: super::updates::ImageState,
}

impl Container {
    /// The image reference it is made from: the pinned digest of an update (or rollback),
    /// else its spec's `image`.
    pub fn image_ref(&self) -> &str {
        self.image.pin.as_deref().unwrap_or(&self.spec.image)
    }

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
    read_only: bool,
    tmp: Option<String>,
    tmp_bytes: Option<i64>,
    isolation: String,
    disk: Option<String>,
    disk_bytes: Option<i64>,
    desired_state: DesiredState,
    status: Status,
    exit_code: Option<i64>,
    oom_killed: bool,
    generation: i64,
    observed_generation: i64,
    restart_requested: i64,
    restart_done: i64,
    desired_at: String,
    last_error: Option<String>,
    deleted_at: Option<String>,
    created_at: String,
    updated_at: String,
    tenant: Option<String>,
    egress: String,
    egress_allow: String,
    status_reason: Option<StatusReason>,
    name: Option<String>,
    ttl: Option<i64>,
    on_expiry: Option<String>,
    expires_at: Option<String>,
    idle_after: Option<i64>,
    idle_action: String,
    idle_resume: bool,
    health_check: Option<String>,
    health: Option<String>,
    health_log: Option<String>,
    unhealthy_restarts: i64,
    unhealthy_restart_at: Option<String>,
    auto_update: bool,
    image_pin: Option<String>,
    image_digest: Option<String>,
    update_available: Option<String>,
    update_pending: Option<String>,
    last_update: Option<String>,
    placement: Option<String>,
    node: Option<String>,
    node_address: Option<String>,
    last_move: Option<String>,
}

const COLUMNS: &str = "seq, cuid, image, env, tags, cpus, memory, memory_bytes, pids, command, restart, user, \
     read_only, tmp, tmp_bytes, isolation, disk, disk_bytes, desired_state, status, exit_code, oom_killed, generation, observed_generation, restart_requested, restart_done, \
     desired_at, last_error, deleted_at, created_at, updated_at, tenant, \
     egress, egress_allow, status_reason, name, ttl, on_expiry, expires_at, idle_after, idle_action, idle_resume, health_check, health, health_log, unhealthy_restarts, unhealthy_restart_at, \
     auto_update, image_pin, image_digest, update_available, update_pending, last_update, placement, node, node_address, last_move";

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
                    tmp: self.tmp,
                    tmp_bytes: self.tmp_bytes,
                    disk: self.disk,
                    disk_bytes: self.disk_bytes,
                },
                ports,
                command: self.command.and_then(|c| serde_json::from_str(&c).ok()),
                // Only the spec's own values are ever written.
                restart: crate::spec::RestartPolicy::parse(&self.restart).unwrap_or_default(),
                user: self.user,
                read_only: self.read_only,
                // The CHECK constraint admits only the names `parse` knows.
                isolation: crate::spec::Isolation::parse(&self.isolation).unwrap_or_default(),
                network: crate::spec::Network {
                    // Only the spec's own values are ever written (and a CHECK holds them).
                    egress: crate::spec::Egress::parse(&self.egress).unwrap_or_default(),
                    allow: serde_json::from_str(&self.egress_allow).unwrap_or_default(),
                },
                name: self.name,
                idle: self.idle_after.map(|after| crate::spec::Idle {
                    after: u64::try_from(after).unwrap_or(1),
                    // A CHECK holds the names `parse` knows.
                    action: crate::spec::IdleAction::parse(&self.idle_action).unwrap_or_default(),
                    resume_on_use: self.idle_resume,
                }),
                health: self
                    .health_check
                    .and_then(|h| serde_json::from_str(&h).ok()),
                auto_update: self.auto_update,
                placement: self.placement.and_then(|p| serde_json::from_str(&p).ok()),
            },
            image: super::updates::ImageState {
                pin: self.image_pin,
                digest: self.image_digest,
                update_available: self
                    .update_available
                    .and_then(|v| serde_json::from_str(&v).ok()),
                pending: self
                    .update_pending
                    .and_then(|v| serde_json::from_str(&v).ok()),
                last_update: self.last_update.and_then(|v| serde_json::from_str(&v).ok()),
            },
            cuid: self.cuid,
            desired_state: self.desired_state,
            // Deletion is desired state (`deleted_at`); a client sees `deleting` from the
            // DELETE on, whether or not a pass has recorded it as observed yet.
            status: if self.deleted_at.is_some() {
                Status::Deleting
            } else {
                self.status
            },
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            generation: self.generation,
            observed_generation: self.observed_generation,
            restart_requested: self.restart_requested,
            restart_done: self.restart_done,
            desired_at: self.desired_at,
            last_error: self.last_error.and_then(|e| serde_json::from_str(&e).ok()),
            deleted_at: self.deleted_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            tenant: self.tenant,
            status_reason: self.status_reason,
            lifetime: self.ttl.map(|ttl| Lifetime {
                ttl: ttl.max(1) as u64,
                // Only the spec's own values are ever written (and a CHECK holds them).
                on_expiry: self
                    .on_expiry
                    .as_deref()
                    .and_then(OnExpiry::parse)
                    .unwrap_or_default(),
            }),
            expires_at: self.expires_at,
            health: self.health.as_deref().and_then(Health::parse),
            health_log: self.health_log,
            node: self.node,
            node_address: self.node_address,
            last_move: self.last_move.and_then(|m| serde_json::from_str(&m).ok()),
            unhealthy_restarts: self.unhealthy_restarts,
            unhealthy_restart_at: self.unhealthy_restart_at,
        }
    }
}

/// Which rows a listing wants; part of the pagination cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListFilter {
    pub status: Option<Vec<String>>,
    pub tag: Option<String>,
    /// Only this tenant's containers. Absent in cursors made before tenants existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `?q=`: a prefix of the name, the image (or its last path part) or a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Only these observed healths (`none`: no health). Absent in cursors made before
    /// health checks existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<String>>,
    /// `?update_available=true|false`: only containers with (without) a newer digest known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_available: Option<bool>,
}

impl ListFilter {
    /// `health` as the query's JSON list (`?7`).
    fn health_json(&self) -> Option<String> {
        self.health
            .as_ref()
            .map(|h| serde_json::to_string(h).unwrap_or_default())
    }
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

/// The error for an unknown (or malformed) cuid.
pub fn not_found(cuid: &str) -> Error {
    Error::NotFound(cuid.to_owned())
}

impl Store {
    pub async fn get(&self, cuid: &str) -> Result<Option<Container>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        fetch_one(&mut conn, cuid).await
    }

    /// Same as [`get`](Self::get), with a missing container as `404`.
    pub async fn get_or_404(&self, cuid: &str) -> Result<Container, Error> {
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

    /// How many containers `filter` keeps, on every page together.
    pub async fn count(&self, filter: &ListFilter) -> Result<i64, sqlx::Error> {
        let status = filter
            .status
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        sqlx::query_scalar(COUNT_SQL)
            .bind(None::<i64>)
            .bind(status)
            .bind(&filter.tag)
            .bind(None::<i64>)
            .bind(&filter.tenant)
            .bind(filter.q.as_deref().map(like_prefix))
            .bind(filter.health_json())
            .bind(filter.update_available)
            .fetch_one(&self.pool)
            .await
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
        .bind(&filter.tenant)
        .bind(filter.q.as_deref().map(like_prefix))
        .bind(filter.health_json())
        .bind(filter.update_available)
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
}

pub enum Created {
    New(Box<Container>),
    /// The idempotency key was stored by a concurrent request between our look-up and insert.
    KeyTaken,
}

/// Which rows a [`ListFilter`] keeps: `?2` status JSON list or NULL, `?3` tag or NULL, `?5`
/// tenant or NULL, `?6` a `LIKE` prefix (see [`like_prefix`]) or NULL, `?7` health JSON list
/// (`none` for no health) or NULL, `?8` update known (true/false) or NULL. The status filtered on
/// is the one shown (`deleting` for a tombstone, as in `Row::into_container`).
macro_rules! filter_where {
    () => {
        "(?2 IS NULL OR (CASE WHEN deleted_at IS NULL THEN status ELSE 'deleting' END)
                       IN (SELECT value FROM json_each(?2)))
    AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(containers.tags) AS t WHERE t.value = ?3))
    AND (?5 IS NULL OR tenant = ?5)
    AND (?6 IS NULL OR name LIKE ?6 ESCAPE '\\' OR image LIKE ?6 ESCAPE '\\'
         OR image LIKE '%/' || ?6 ESCAPE '\\'
         OR EXISTS (SELECT 1 FROM json_each(containers.tags) AS t WHERE t.value LIKE ?6 ESCAPE '\\'))
    AND (?7 IS NULL OR COALESCE(health, 'none') IN (SELECT value FROM json_each(?7)))
    AND (?8 IS NULL OR (update_available IS NOT NULL) = ?8)"
    };
}

/// The WHERE/ORDER/LIMIT of a listing page: `?1` after-seq, `?4` limit, and the filter.
/// Filters are checked per row while walking the primary key, so SQLite searches the rowid
/// range in order and never sorts.
pub const PAGE_WHERE: &str = concat!("seq > ?1 AND ", filter_where!(), " ORDER BY seq LIMIT ?4");

/// How many rows the filter keeps, all pages together (`?1` and `?4` unused).
const COUNT_SQL: &str = concat!("SELECT COUNT(*) FROM containers WHERE ", filter_where!());

/// A `LIKE` pattern for "starts with `text`": its own `%`, `_` and `\` are escaped, so a
/// search for `a_b` does not match `axb`. (`LIKE` ignores ASCII case.)
fn like_prefix(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

pub(super) async fn fetch_one(
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

/// What a reconciler pass observed, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub status: Status,
    pub exit_code: Option<i64>,
    /// The exit it shows was an OOM kill.
    pub oom_killed: bool,
    pub observed_generation: i64,
    pub last_error: Option<Value>,
    pub restart_done: i64,
    /// Docker's health status (null: no health check, or not running).
    pub health: Option<Health>,
    /// The tail of the last probe's output.
    pub health_log: Option<String>,
    /// The Swarm node that runs it (`BACKEND=swarm`).
    pub node: Option<String>,
    /// That node's address.
    pub node_address: Option<String>,
    /// A node that is down and still shows a task of it (the node it was lost with).
    pub lost_node: Option<String>,
}

/// A container's move from one Swarm node to another, as the reconciler saw it: a task ran
/// on `from`, and then one runs on `to`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeMove {
    pub from: String,
    pub to: String,
    /// When the task on `to` was first seen running (RFC 3339 UTC).
    pub at: String,
    /// `node_down`: `from` was down (its task was lost with it); null: another cause (Swarm
    /// rescheduled it, e.g. at a restart or an update), or the old node was not down any more
    /// when the move was seen.
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// The fields resync compares with Docker's list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Summary {
    pub cuid: String,
    /// Its tenant: the reconciler queues its passes in that tenant's line.
    pub tenant: Option<String>,
    #[sqlx(flatten)]
    pub progress: Progress,
    /// Observed health as last recorded (`starting`, `healthy`, `unhealthy` or null).
    pub health: Option<String>,
    /// Its health check restarts it when unhealthy.
    pub restarts_unhealthy: bool,
}

impl Store {
    /// Rows resync looks at: everything but containers that were never started.
    pub async fn summaries(&self) -> Result<Vec<Summary>, sqlx::Error> {
        sqlx::query_as(
            "SELECT cuid, tenant, desired_state, status, generation, observed_generation, restart_requested, restart_done,
                    deleted_at IS NOT NULL AS deleting, health,
                    COALESCE(json_extract(health_check, '$.on_unhealthy') = 'restart', 0) AS restarts_unhealthy
             FROM containers WHERE desired_state != 'created' OR deleted_at IS NOT NULL
                OR observed_generation != generation",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// `(cuid, image)` of every container not being deleted, in creation order: who uses
    /// which image (`GET /images`, `DELETE /images/{ref}`).
    pub async fn images_in_use(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        self.images_in_use_by(None).await
    }

    /// [`images_in_use`](Self::images_in_use), of one tenant's containers when given.
    pub async fn images_in_use_by(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT cuid, COALESCE(image_pin, image) FROM containers
             WHERE deleted_at IS NULL AND (?1 IS NULL OR tenant = ?1) ORDER BY seq",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
    }

    /// Live containers (not being deleted) counted by desired state and observed status,
    /// for the metrics scrape.
    pub async fn count_by_states(&self) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT desired_state, status, COUNT(*) FROM containers
             WHERE deleted_at IS NULL GROUP BY desired_state, status",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Every deadline not yet acted on, of containers not being deleted: what the deadline
    /// timer loads at start-up (one query, on the partial index of `expires_at`).
    pub async fn deadlines(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT cuid, expires_at FROM containers
             WHERE expires_at IS NOT NULL AND deleted_at IS NULL ORDER BY expires_at",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn all_cuids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar!("SELECT cuid FROM containers")
            .fetch_all(&self.pool)
            .await
    }
}
