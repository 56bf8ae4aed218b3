//! Container rows: the types, and the reads. Writes are split by writer: desired state by
//! the API in [`super::desired`], observed state by the reconciler in [`super::observed`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Error, Store};
use crate::lifecycle::{DesiredState, Progress, Status, StatusReason};
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
}

const COLUMNS: &str = "seq, cuid, image, env, tags, cpus, memory, memory_bytes, pids, command, restart, user, \
     read_only, tmp, tmp_bytes, isolation, disk, disk_bytes, desired_state, status, exit_code, oom_killed, generation, observed_generation, restart_requested, restart_done, \
     desired_at, last_error, deleted_at, created_at, updated_at, tenant, \
     egress, egress_allow, status_reason, name";

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

/// The WHERE/ORDER/LIMIT of a listing page; `?1` after-seq, `?2` status JSON list or NULL,
/// `?3` tag or NULL, `?4` limit, `?5` tenant or NULL. The status filtered on is the one shown (`deleting` for a
/// tombstone, as in `Row::into_container`). Filters are checked per row while walking the primary key,
/// so SQLite searches the rowid range in order and never sorts.
pub const PAGE_WHERE: &str = "seq > ?1
    AND (?2 IS NULL OR (CASE WHEN deleted_at IS NULL THEN status ELSE 'deleting' END)
                       IN (SELECT value FROM json_each(?2)))
    AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(containers.tags) AS t WHERE t.value = ?3))
    AND (?5 IS NULL OR tenant = ?5)
    AND (?6 IS NULL OR name LIKE ?6 ESCAPE '\\' OR image LIKE ?6 ESCAPE '\\'
         OR image LIKE '%/' || ?6 ESCAPE '\\'
         OR EXISTS (SELECT 1 FROM json_each(containers.tags) AS t WHERE t.value LIKE ?6 ESCAPE '\\'))
    ORDER BY seq LIMIT ?4";

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
}

/// The fields resync compares with Docker's list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Summary {
    pub cuid: String,
    /// Its tenant: the reconciler queues its passes in that tenant's line.
    pub tenant: Option<String>,
    #[sqlx(flatten)]
    pub progress: Progress,
}

impl Store {
    /// Rows resync looks at: everything but containers that were never started.
    pub async fn summaries(&self) -> Result<Vec<Summary>, sqlx::Error> {
        sqlx::query_as(
            "SELECT cuid, tenant, desired_state, status, generation, observed_generation, restart_requested, restart_done,
                    deleted_at IS NOT NULL AS deleting
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
            "SELECT cuid, image FROM containers
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

    pub async fn all_cuids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar!("SELECT cuid FROM containers")
            .fetch_all(&self.pool)
            .await
    }
}
