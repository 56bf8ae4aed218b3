//! Snapshots of `/app`, restore and fork (docs/API.md §17). The copying is
//! [`crate::appdir::snapshot`]'s; these handlers check the request, hold what must be held
//! (the container's file lock, the tenant's quota lock, the reconciler off a container paused
//! for a copy) and map the outcome.
//!
//! Consistency of a copy of a running container: it is **paused** (`docker pause`, the
//! cgroup freezer) for the copy and unpaused right after, through the Docker client, while
//! the reconciler is held off it ([`crate::reconcile::Reconciler::hold`]), so a pass does not
//! see it "paused outside" and unpause it mid-copy. Desired state is never touched. The unpause
//! happens on every path out: after the copy (also a failed or panicked one, which is a
//! `JoinError` of the blocking task), and from the guard's `Drop` otherwise.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::appdir::{mounts, snapshot, Error as FilesError, Reason};
use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::extract::{JsonObject, Path, Query};
use crate::http::prestart::{check_runtime, check_startable, spec_limits};
use crate::http::response::{container_response, live_container};
use crate::http::schema::{Snapshot, SnapshotList};
use crate::http::wait::{answer_created, finish, Wait};
use crate::http::{quota, tenants};
use crate::lifecycle::{plan, DesiredState, Plan, Status, Verb};
use crate::reconcile::Hold;
use crate::state::AppState;
use crate::store::containers::{Container, Created};
use crate::store::snapshots::{InsertError, SnapshotRow};
use crate::tenancy::quotas::Usage;

/// Longest snapshot name.
pub const MAX_NAME: usize = 64;

fn internal(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "snapshot task failed");
    ApiError::new(
        Kind::Internal,
        ApiCode::InternalError,
        "the server hit an internal error",
    )
}

fn new_id() -> String {
    format!("s{}", uuid::Uuid::new_v4().simple())
}

fn is_id(s: &str) -> bool {
    s.len() == 33
        && s.starts_with('s')
        && s[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        Kind::NotFound,
        ApiCode::SnapshotNotFound,
        format!("the container has no snapshot {id}"),
    )
    .with_details(json!({"snapshot": id}))
}

fn shown(row: SnapshotRow, skipped: Option<u64>) -> Snapshot {
    Snapshot {
        id: row.id,
        name: row.name,
        created_at: row.created_at,
        bytes: row.bytes,
        files: row.files,
        skipped,
    }
}

fn unknown_fields(body: &Map<String, Value>, known: &[&str]) -> ApiResult<()> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiError::field(
            ApiCode::UnknownField,
            k.clone(),
            Value::String(k.clone()),
            format!("unknown field `{k}`"),
        )),
    }
}

/// A snapshot's name: 1-64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_name(body: &Map<String, Value>) -> ApiResult<String> {
    match body.get("name") {
        Some(Value::String(n)) if valid_name(n) => Ok(n.clone()),
        other => Err(ApiError::field(
            ApiCode::InvalidSnapshotName,
            "name",
            other.cloned().unwrap_or(Value::Null),
            format!("name must be 1-{MAX_NAME} of A-Z a-z 0-9 . _ - (not starting with .)"),
        )),
    }
}

/// A snapshot id field: a string naming one of the container's snapshots.
async fn snapshot_of(state: &AppState, cuid: &str, v: &Value) -> ApiResult<SnapshotRow> {
    let Value::String(id) = v else {
        return Err(ApiError::field(
            ApiCode::InvalidSnapshotRequest,
            "snapshot",
            v.clone(),
            "snapshot must be the id of one of the container's snapshots",
        ));
    };
    if !is_id(id) {
        return Err(not_found(id));
    }
    state
        .store
        .snapshot(cuid, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// A running container paused for a copy, the reconciler held off it meanwhile.
struct Frozen {
    docker: Option<bollard::Docker>,
    /// Docker's name for it on that engine: its cuid, or on a Swarm its task's container.
    container: String,
    hold: Option<Hold>,
}

async fn unpause(docker: &bollard::Docker, cuid: &str) {
    for attempt in 0..5u64 {
        match docker.unpause_container(cuid).await {
            Ok(()) => return,
            // Not paused (any more): nothing to undo.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => return,
            Err(e) => {
                tracing::warn!(%cuid, error = %e, attempt, "cannot unpause after a snapshot copy");
                tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    tracing::error!(%cuid, "left paused after a snapshot copy; the reconciler unpauses it");
}

impl Frozen {
    /// Pauses `c` if it is running.
    async fn freeze(state: &AppState, c: &Container) -> ApiResult<Frozen> {
        if c.status != Status::Running {
            return Ok(Frozen {
                docker: None,
                container: c.cuid.clone(),
                hold: None,
            });
        }
        let hold = state.reconciler.hold(&c.cuid).await;
        // The engine that runs it (on a Swarm, its task's node).
        let (docker, container) = crate::http::container_engine(state, &c.cuid).await?;
        match docker.pause_container(&container).await {
            Ok(()) => Ok(Frozen {
                docker: Some(docker),
                container,
                hold: Some(hold),
            }),
            // Stopped or paused meanwhile: copied as it is.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(Frozen {
                docker: None,
                container,
                hold: Some(hold),
            }),
            Err(e) => Err(crate::error::docker_unavailable(&e)),
        }
    }

    async fn thaw(mut self) {
        if let Some(docker) = self.docker.take() {
            unpause(&docker, &self.container).await;
        }
        drop(self.hold.take());
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Only when `thaw` was not reached (the task was cancelled or panicked).
        if let Some(docker) = self.docker.take() {
            let (cuid, hold) = (self.container.clone(), self.hold.take());
            tokio::spawn(async move {
                unpause(&docker, &cuid).await;
                drop(hold);
            });
        }
    }
}

/// Copies `/app` of `c` (paused if running) with `f` on the blocking pool, holding the
/// container's file lock (no upload or restore meanwhile).
async fn with_frozen_app<T: Send + 'static>(
    state: &AppState,
    c: &Container,
    f: impl FnOnce(std::path::PathBuf) -> Result<T, FilesError> + Send + 'static,
) -> ApiResult<T> {
    let _lock = state.files.lock(&c.cuid).await;
    let app = mounts::ready_app_dir(&state.config, &c.cuid, &c.spec).await?;
    let frozen = Frozen::freeze(state, c).await?;
    let result = tokio::task::spawn_blocking(move || f(app)).await;
    frozen.thaw().await;
    result.map_err(internal)?.map_err(ApiError::from)
}

/// The tenant's `max_disk` room left for a copy, and the byte cap of the copy within it.
async fn disk_room(state: &AppState, c: &Container) -> ApiResult<(snapshot::Limits, Option<u64>)> {
    let mut limits = snapshot::Limits::from_config(&state.config);
    let Some((tenant, quotas)) = quota::quotas_of(state, c.tenant.as_deref()) else {
        return Ok((limits, None));
    };
    let Some(max) = quotas.max_disk else {
        return Ok((limits, None));
    };
    let used = tenants::usage_of(state, &tenant).await?;
    let left = u64::try_from(max - used.disk).unwrap_or(0);
    if left < limits.max_bytes {
        limits.max_bytes = left;
        return Ok((limits, Some(left)));
    }
    Ok((limits, None))
}

/// A copy stopped by the tenant's room rather than `SNAPSHOT_MAX_BYTES`: `403
/// QUOTA_EXCEEDED` as every quota.
async fn quota_or(state: &AppState, c: &Container, room: Option<u64>, e: ApiError) -> ApiError {
    let bytes_cap = e.code == ApiCode::SnapshotTooLarge
        && e.details.as_ref().and_then(|d| d.get("cap")) == Some(&json!("bytes"));
    let (Some(left), true) = (room, bytes_cap) else {
        return e;
    };
    let Some((tenant, quotas)) = quota::quotas_of(state, c.tenant.as_deref()) else {
        return e;
    };
    let used = match tenants::usage_of(state, &tenant).await {
        Ok(u) => u,
        Err(e) => return e,
    };
    let over = Usage {
        disk: i64::try_from(left).unwrap_or(i64::MAX).saturating_add(1),
        ..Usage::default()
    };
    quota::check_usage(&tenant, &quotas, &used, &over)
        .err()
        .unwrap_or(e)
}

#[utoipa::path(post, path = "/containers/{cuid}/snapshots", tag = "snapshots", summary = "Snapshot /app (a running container is paused for the copy)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), request_body = crate::http::schema::SnapshotBody, responses((status = 201, description = "Taken", body = crate::http::schema::Snapshot), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or the tenant's max_disk (QUOTA_EXCEEDED)", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "A snapshot of this name exists (SNAPSHOT_NAME_TAKEN)", body = crate::http::schema::ErrorBody), (status = 413, description = "/app is over SNAPSHOT_MAX_ENTRIES or SNAPSHOT_MAX_BYTES (SNAPSHOT_TOO_LARGE)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let c = live_container(&state, &cuid).await?;
    unknown_fields(&body, &["name"])?;
    let name = parse_name(&body)?;
    fn taken(name: &str) -> ApiError {
        ApiError::conflict(
            ApiCode::SnapshotNameTaken,
            format!("the container has a snapshot named {name}"),
        )
        .with_details(json!({"name": name}))
    }
    if state.store.snapshot_name_taken(&c.cuid, &name).await? {
        return Err(taken(&name));
    }
    // The rest runs to its end even if the client hangs up (a paused container is unpaused,
    // a half-made snapshot removed).
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let state = task_state;
        let (limits, room) = disk_room(&state, &c).await?;
        let id = new_id();
        let (config, cuid2, id2) = (state.config.clone(), c.cuid.clone(), id.clone());
        let copied = match with_frozen_app(&state, &c, move |app| {
            snapshot::take(&config, &cuid2, &id2, &app, &limits)
        })
        .await
        {
            Ok(copied) => copied,
            Err(e) => return Err(quota_or(&state, &c, room, e).await),
        };
        let remove = || {
            let (config, cuid, id) = (state.config.clone(), c.cuid.clone(), id.clone());
            tokio::task::spawn_blocking(move || snapshot::remove(&config, &cuid, &id))
        };
        // Its bytes against the tenant's max_disk, under the tenant's lock until inserted.
        let guard = match quota::quotas_of(&state, c.tenant.as_deref()) {
            Some((tenant, _)) => {
                let adds = Usage {
                    disk: i64::try_from(copied.bytes).unwrap_or(i64::MAX),
                    ..Usage::default()
                };
                match quota::admit(&state, &tenant, &adds).await {
                    Ok(g) => Some(g),
                    Err(e) => {
                        let _ = remove().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let row = SnapshotRow {
            id: id.clone(),
            cuid: c.cuid.clone(),
            name: name.clone(),
            created_at: crate::store::now(),
            bytes: i64::try_from(copied.bytes).unwrap_or(i64::MAX),
            files: i64::try_from(copied.files).unwrap_or(i64::MAX),
        };
        let inserted = state.store.insert_snapshot(&row).await;
        drop(guard);
        match inserted {
            Ok(()) => {}
            Err(e) => {
                let _ = remove().await;
                return Err(match e {
                    InsertError::NameTaken => taken(&name),
                    InsertError::NoContainer => crate::store::containers::not_found(&c.cuid).into(),
                    InsertError::Db(e) => e.into(),
                });
            }
        }
        tracing::info!(cuid = %c.cuid, id, files = copied.files, bytes = copied.bytes,
            skipped = copied.skipped, cloned = copied.cloned, "snapshot taken");
        Ok((StatusCode::CREATED, Json(shown(row, Some(copied.skipped)))).into_response())
    });
    task.await.map_err(internal)?
}

#[utoipa::path(get, path = "/containers/{cuid}/snapshots", tag = "snapshots", summary = "The container's snapshots, oldest first", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), responses((status = 200, description = "The snapshots", body = crate::http::schema::SnapshotList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
) -> ApiResult<Json<SnapshotList>> {
    let c = live_container(&state, &cuid).await?;
    let rows = state.store.snapshots_of(&c.cuid).await?;
    Ok(Json(SnapshotList {
        snapshots: rows.into_iter().map(|r| shown(r, None)).collect(),
    }))
}

#[utoipa::path(delete, path = "/containers/{cuid}/snapshots/{id}", tag = "snapshots", summary = "Remove one snapshot", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("id" = String, Path, description = "the snapshot's id")), responses((status = 204, description = "Removed"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container or snapshot", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path((cuid, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let c = live_container(&state, &cuid).await?;
    if !is_id(&id) {
        return Err(not_found(&id));
    }
    // Not while a restore or fork copies from it.
    let _lock = state.files.lock(&c.cuid).await;
    if !state.store.delete_snapshot(&c.cuid, &id).await? {
        return Err(not_found(&id));
    }
    // The row is gone: a crash before the tree is removed leaves it to the start-up sweep.
    let (config, cuid) = (state.config.clone(), c.cuid.clone());
    tokio::task::spawn_blocking(move || snapshot::remove(&config, &cuid, &id))
        .await
        .map_err(internal)?
        .map_err(|e| ApiError::io(format!("cannot remove the snapshot: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/containers/{cuid}/restore", tag = "snapshots", summary = "Replace /app with a snapshot, all or nothing; a running container is restarted", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for the restart")), request_body = crate::http::schema::RestoreBody, responses((status = 200, description = "Restored (and restarted if it was running)", body = crate::http::schema::Representation), (status = 202, description = "Restored, restart accepted (?wait=false)", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container or snapshot", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 413, description = "The snapshot does not fit under resources.disk (DISK_QUOTA_EXCEEDED) or the copy caps (SNAPSHOT_TOO_LARGE)", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let c = live_container(&state, &cuid).await?;
    unknown_fields(&body, &["snapshot"])?;
    let snap = snapshot_of(
        &state,
        &c.cuid,
        body.get("snapshot").unwrap_or(&Value::Null),
    )
    .await?;
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let state = task_state;
        let lock = state.files.lock(&c.cuid).await;
        let c = live_container(&state, &c.cuid).await?;
        // Deleted while this waited for the lock?
        if state.store.snapshot(&c.cuid, &snap.id).await?.is_none() {
            return Err(not_found(&snap.id));
        }
        let capped = c.spec.resources.disk_bytes.is_some();
        let app = mounts::ready_app_dir(&state.config, &c.cuid, &c.spec).await?;
        let staging = match snapshot::capped_staging(&state.config, &c.cuid, capped) {
            Some(dir) => state.files.staging_dir_in(dir).await?,
            None => state.files.staging_dir().await?,
        };
        let (parent, name) = snapshot::split_app(&app)
            .ok_or_else(|| ApiError::io("the container's /app has no parent"))?;
        let from = snapshot::snapshot_dir(&state.config, &c.cuid, &snap.id);
        let limits = snapshot::Limits::from_config(&state.config);
        let restored = tokio::task::spawn_blocking(move || {
            let result = snapshot::restore(&from, staging.path(), &parent, &name, &limits)
                .map_err(|e| match e {
                    FilesError::Io(e) if capped && crate::appdir::disk::is_full(&e) => {
                        FilesError::refused(
                            Reason::DiskQuotaExceeded,
                            "the snapshot does not fit under the container's resources.disk; /app is unchanged",
                        )
                    }
                    e => e,
                });
            // The old tree (or the unused copy): removed before the answer.
            staging.remove();
            result
        })
        .await
        .map_err(internal)?
        .map_err(ApiError::from)?;
        drop(lock);
        tracing::info!(cuid = %c.cuid, snapshot = %snap.id, files = restored.files, "restored a snapshot");
        restart_if_running(&state, &c.cuid, wait).await
    });
    task.await.map_err(internal)?
}

/// After a restore: a running container is restarted (as `POST …/restart`: desired state,
/// then the reconciler), so it runs on the restored `/app`.
async fn restart_if_running(state: &AppState, cuid: &str, wait: Wait) -> ApiResult<Response> {
    let since = crate::store::now();
    let (container, changed) = state
        .store
        .transition::<ApiError>(cuid, |current| {
            if current.deleted_at.is_some() || current.desired_state != DesiredState::Running {
                return Ok(None);
            }
            match plan(Verb::Restart, current.desired_state, current.status)? {
                Plan::Noop => Ok(None),
                Plan::Set {
                    desired, restart, ..
                } => Ok(Some((desired, restart))),
            }
        })
        .await?;
    if !changed {
        return Ok(container_response(StatusCode::OK, &container));
    }
    state.reconciler.wake(&container);
    finish(state, container, wait, &since).await
}

#[utoipa::path(post, path = "/containers/{cuid}/fork", tag = "snapshots", summary = "A new container: this one's spec plus overrides, with a copy of /app (now, or of a snapshot)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for the start")), request_body = crate::http::schema::ForkBody, responses((status = 201, description = "Created (and started if asked; a start that failed shows in status and last_error)", body = crate::http::schema::Representation), (status = 202, description = "Created, start accepted (?wait=false) or still converging when ACTION_TIMEOUT passed", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or a tenant's quota (QUOTA_EXCEEDED)", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container or snapshot", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 413, description = "/app is over the copy caps (SNAPSHOT_TOO_LARGE) or the new resources.disk (DISK_QUOTA_EXCEEDED)", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn fork(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let source = live_container(&state, &cuid).await?;
    unknown_fields(&body, &["spec", "snapshot", "start"])?;
    let overrides = match body.get("spec") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => {
            return Err(ApiError::field(
                ApiCode::InvalidSnapshotRequest,
                "spec",
                other.clone(),
                "spec must be an object of overrides (as a PATCH body)",
            ))
        }
    };
    let snap = match body.get("snapshot") {
        None | Some(Value::Null) => None,
        Some(v) => Some(snapshot_of(&state, &source.cuid, v).await?),
    };
    let start = match body.get("start") {
        None | Some(Value::Null) => source.desired_state == DesiredState::Running,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::field(
                ApiCode::InvalidSnapshotRequest,
                "start",
                other.clone(),
                "start must be a boolean",
            ))
        }
    };
    // Validated exactly as a PATCH of the source would be.
    let limits = spec_limits(&state);
    if let Some(Value::String(image)) = overrides.get("image") {
        if crate::spec::is_image_reference(image) {
            crate::http::images::check_registry(&state, image).await?;
        }
    }
    // A name is unique among the tenant's live containers: the fork has none unless the
    // overrides give it one.
    let mut base = source.spec.clone();
    base.name = None;
    // A host port belongs to one container: the fork publishes none unless the overrides
    // give it its own (`spec.ports`, as `PATCH …/ports` takes them).
    let mut overrides = overrides;
    base.ports = match overrides.remove("ports") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            crate::spec::parse_ports_body(Map::from_iter([("ports".to_owned(), v)]), &limits)?
        }
    };
    // The source's time limit (else the default a create gets), counted from now and within
    // `MAX_TTL`, unless the overrides set another.
    // Read before `apply_patch` takes the overrides; its errors are in `apply_patch`'s too
    // (with every other field's), which is why that `?` comes first.
    let patched = crate::spec::patched_lifetime(&overrides, source.lifetime.as_ref(), &limits);
    // The same image as the source runs: a digest an update pinned, not the tag's local copy.
    let pin = source.image.pin.clone();
    let spec = crate::spec::apply_patch(&base, overrides, &limits)?;
    let lifetime = match patched? {
        Some(set) => set,
        None => source
            .lifetime
            .or(limits.default_lifetime)
            .map(|l| match limits.max_ttl {
                Some(max) if l.ttl > max => crate::spec::Lifetime { ttl: max, ..l },
                _ => l,
            }),
    };
    let pin = pin.filter(|_| spec.image == source.spec.image);
    check_runtime(&state, spec.isolation).await?;
    let tenant = source.tenant.clone();
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let state = task_state;
        let quotas = quota::quotas_of(&state, tenant.as_deref());
        if let Some((t, q)) = &quotas {
            quota::check_ports(t, q, &spec)?;
        }
        // Quotas under the tenant's lock, held until the row is committed.
        let guard = match &quotas {
            None => None,
            Some((t, q)) => {
                let wants = quota::requested(q, &state.config, &spec, start)?;
                Some(quota::admit(&state, t, &wants).await?)
            }
        };
        let cuid = crate::spec::new_cuid();
        let userns = state.docker.userns_recent().await;
        let (config, new, user, disk) = (
            state.config.clone(),
            cuid.clone(),
            spec.user.clone(),
            spec.resources.disk_bytes,
        );
        let app = tokio::task::spawn_blocking(move || {
            mounts::create(&config, &new, user.as_deref(), disk, userns)
        })
        .await
        .map_err(internal)??;
        let discard = || {
            let (config, cuid) = (state.config.clone(), cuid.clone());
            tokio::task::spawn_blocking(move || mounts::discard(&config, &cuid));
        };
        let copy_limits = snapshot::Limits::from_config(&state.config);
        let capped = disk.is_some();
        let map_full = move |e: FilesError| match e {
            FilesError::Io(e) if capped && crate::appdir::disk::is_full(&e) => FilesError::refused(
                Reason::DiskQuotaExceeded,
                "the copy does not fit under the new container's resources.disk",
            ),
            e => e,
        };
        let copied = match &snap {
            Some(snap) => {
                let _lock = state.files.lock(&source.cuid).await;
                let from = snapshot::snapshot_dir(&state.config, &source.cuid, &snap.id);
                let (src_cuid, dst) = (source.cuid.clone(), app.clone());
                tokio::task::spawn_blocking(move || {
                    snapshot::copy_into(&from, &src_cuid, &dst, &copy_limits).map_err(map_full)
                })
                .await
                .map_err(internal)
                .and_then(|r| r.map_err(ApiError::from))
            }
            None => {
                let (src_cuid, dst) = (source.cuid.clone(), app.clone());
                with_frozen_app(&state, &source, move |from| {
                    snapshot::copy_into(&from, &src_cuid, &dst, &copy_limits).map_err(map_full)
                })
                .await
            }
        };
        let copied = match copied {
            Ok(c) => c,
            Err(e) => {
                discard();
                return Err(e);
            }
        };
        let desired = if start {
            DesiredState::Running
        } else {
            DesiredState::Created
        };
        if start {
            if let Err(e) = check_startable(&state.config, &cuid, &spec) {
                discard();
                return Err(e);
            }
        }
        let since = crate::store::now();
        // With a pin to copy, stored as created and started once the pin is written, so no
        // pass can make it from the tag first.
        let first = if pin.is_some() {
            DesiredState::Created
        } else {
            desired
        };
        let inserted = state
            .store
            .insert_owned(
                &cuid,
                &spec,
                first,
                tenant.as_deref(),
                lifetime.as_ref(),
                None,
                |c| {
                    serde_json::to_value(crate::representation::representation(c))
                        .unwrap_or(Value::Null)
                },
            )
            .await;
        drop(guard);
        let container = match inserted {
            Ok(Created::New(c)) => {
                state.deadlines.set(&c.cuid, c.expires_at.as_deref());
                *c
            }
            Ok(Created::KeyTaken) => {
                discard();
                return Err(ApiError::io("fork: unexpected idempotency answer"));
            }
            Err(e) => {
                discard();
                return Err(e.into());
            }
        };
        let container = match &pin {
            None => container,
            Some(pin) => {
                let digest = source.image.digest.as_deref();
                state.store.copy_pin(&cuid, pin, digest).await?;
                let (c, _) = state
                    .store
                    .transition::<ApiError>(&cuid, |_| {
                        Ok((desired != DesiredState::Created).then_some((desired, false)))
                    })
                    .await?;
                c
            }
        };
        tracing::info!(source = %source.cuid, %cuid, files = copied.files, bytes = copied.bytes, "forked");
        if !start {
            return Ok(container_response(StatusCode::CREATED, &container));
        }
        state.reconciler.wake(&container);
        // Stored: the answer is the fork, its failed start in its `last_error` (as a create).
        answer_created(&state, container, wait, &since).await
    });
    task.await.map_err(internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        for ok in ["before-upgrade", "v1.2", "a", "A_b-c.d", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a b", "a/b", "é", &"x".repeat(65), "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(is_id(&new_id()));
        assert!(!is_id("s../../etc"));
        assert!(!is_id(&new_id().to_uppercase()));
    }
}
