//! Single-item file operations on a container's `/app` (docs/API.md §5): upload one file,
//! delete a file or folder, move (rename), make a folder. The work on the host is
//! [`crate::appdir::ops`]; these handlers check the request, wake an idle container, take
//! the container's file lock (uploads, restores and these are serialized per container) and
//! add the file to the request's audit line.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::appdir::ops::{self, Removed, Work};
use crate::appdir::{confine, listing, mounts, snapshot};
use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::context::AuditFields;
use crate::http::extract::{FilesQuery, JsonObject, Path};
use crate::http::files::{refuse_declared_too_large, stage_body, Staged};
use crate::http::response::live_container;
use crate::http::resume;
use crate::state::AppState;
use crate::store::containers::Container;

/// `?path=&recursive=`; any other parameter is `400 INVALID_QUERY` (like the action routes'
/// `?wait=`: a misspelt `?recursve=true` must not silently do less).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpQuery {
    pub path: Option<String>,
    pub recursive: Option<String>,
}

fn internal(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "file task failed");
    ApiError::new(
        Kind::Internal,
        ApiCode::InternalError,
        "the server hit an internal error",
    )
}

/// The components of `provided` (a `field` of the request), which must name something
/// inside `/app`, not `/app` itself.
fn item_path(provided: Option<&str>, field: &str) -> ApiResult<Vec<String>> {
    let Some(provided) = provided else {
        return Err(ApiError::field(
            ApiCode::MissingPath,
            field,
            Value::Null,
            format!("{field} is required: a file or folder inside /app"),
        ));
    };
    let components = confine::parse_path(provided)?;
    if components.is_empty() {
        return Err(ApiError::field(
            ApiCode::MissingPath,
            field,
            Value::String(provided.to_owned()),
            format!("{field} must name a file or folder inside /app, not /app itself"),
        ));
    }
    Ok(components)
}

/// The audit fields of a file operation, on the answer whatever it is.
fn audited(result: ApiResult<Response>, fields: Map<String, Value>) -> Response {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(AuditFields(fields));
    response
}

/// The container, woken first if its idle policy put it to sleep (like the ZIP upload).
async fn woken(
    state: &AppState,
    cuid: &str,
) -> ApiResult<(Container, Option<std::time::Duration>)> {
    let container = live_container(state, cuid).await?;
    resume::on_use(state, container, true).await
}

fn with_timing(mut response: Response, resumed: Option<std::time::Duration>) -> Response {
    if let Some(took) = resumed {
        response
            .headers_mut()
            .insert(resume::SERVER_TIMING, resume::server_timing(took));
    }
    response
}

/// A staging directory on the filesystem of the container's `/app`: the server's, or for a
/// capped container one in its image.
async fn work_dir(state: &AppState, c: &Container) -> ApiResult<crate::appdir::StagingDir> {
    let capped = c.spec.resources.disk_bytes.is_some();
    Ok(
        match snapshot::capped_staging(&state.config, &c.cuid, capped) {
            Some(dir) => state.files.staging_dir_in(dir).await?,
            None => state.files.staging_dir().await?,
        },
    )
}

/// `PUT /containers/{cuid}/files?path=p`: body = the file's bytes.
#[utoipa::path(put, path = "/containers/{cuid}/files", tag = "files", summary = "Upload one file into /app (replaces one of the same name unless If-None-Match: *)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = String, Query, pattern = r"^[^\x00]*[^/.\x00][^\x00]*$", description = "the file's path relative to /app; missing folders are made"), ("If-None-Match" = Option<String>, Header, description = "`*`: refuse to replace an existing file (409 FILE_EXISTS)")), request_body(content = String, content_type = "application/octet-stream", description = "the file's bytes (any Content-Type)"), responses((status = 201, description = "Created", body = crate::http::schema::FileWritten), (status = 200, description = "Replaced an existing file", body = crate::http::schema::FileWritten), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or the token lacks scope write", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input (MISSING_PATH, UNSAFE_PATH, NOT_A_DIRECTORY)", body = crate::http::schema::ErrorBody), (status = 409, description = "FILE_EXISTS (If-None-Match: *), PATH_CONFLICT (a folder has that name)", body = crate::http::schema::ErrorBody), (status = 408, description = "The body stalled (UPLOAD_IDLE_TIMEOUT, UPLOAD_TOO_SLOW)", body = crate::http::schema::ErrorBody), (status = 413, description = "Past UPLOAD_MAX_BYTES (UPLOAD_TOO_LARGE) or the disk cap (DISK_QUOTA_EXCEEDED)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Every upload slot stayed busy for UPLOAD_SLOT_WAIT (UPLOAD_SLOTS_BUSY; Retry-After)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn put_file(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<OpQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut fields = crate::fields! {"file_op" => "put", "file_path" => query.path.clone()};
    let result = put_inner(&state, &cuid, query, headers, body, &mut fields).await;
    audited(result, fields)
}

async fn put_inner(
    state: &AppState,
    cuid: &str,
    query: OpQuery,
    headers: HeaderMap,
    body: Body,
    fields: &mut Map<String, Value>,
) -> ApiResult<Response> {
    // Bad input (a body declared too large too) is refused before anything is woken or read.
    let components = item_path(query.path.as_deref(), "path")?;
    let body = refuse_declared_too_large(state, &headers, body).await?;
    let (container, resumed) = woken(state, cuid).await?;
    let cuid = container.cuid.clone();
    // `If-None-Match: *`: only if nothing has that name. Files have no entity tags, so any
    // other value matches nothing and the upload goes ahead (RFC 9110 §13.1.2).
    let replace = !headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() == b"*");
    let Staged {
        permit,
        staging,
        bytes,
    } = stage_body(state, &headers, body, "upload.bin").await?;
    let guard = state.files.lock(&cuid).await;
    // Deleted while the body was arriving?
    let container = match live_container(state, &cuid).await {
        Ok(c) => c,
        Err(e) => {
            staging.remove_async().await;
            return Err(e);
        }
    };
    let userns = state.docker.userns_recent().await;
    let owner = mounts::host_owner(&state.config, container.spec.user.as_deref(), userns);
    let mount = mounts::ready_app_dir(&state.config, &cuid, &container.spec).await?;
    let capped = container.spec.resources.disk_bytes.is_some();
    let work = if capped {
        Some(work_dir(state, &container).await?)
    } else {
        None
    };
    let shown = listing::display_path(&components);
    let written = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _guard = guard;
        let body = staging.path().join("upload.bin");
        let work_path = work.as_ref().map_or(staging.path(), |w| w.path());
        let result = confine::open_root(&mount, &cuid).and_then(|root| {
            ops::put_file(
                Work {
                    work: work_path,
                    capped,
                    root,
                    mount: &mount,
                    owner,
                },
                &body,
                bytes,
                &components,
                replace,
            )
        });
        if let Some(work) = work {
            work.remove();
        }
        staging.remove();
        result.map_err(ApiError::from)
    })
    .await
    .map_err(internal)??;
    fields.insert("bytes".into(), written.bytes.into());
    fields.insert("replaced".into(), written.replaced.into());
    let status = if written.replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = crate::http::schema::FileWritten {
        path: shown,
        bytes: written.bytes,
        replaced: written.replaced,
    };
    Ok(with_timing((status, Json(body)).into_response(), resumed))
}

/// `DELETE /containers/{cuid}/files?path=p[&recursive=true]`.
#[utoipa::path(delete, path = "/containers/{cuid}/files", tag = "files", summary = "Delete a file or folder of /app (a folder with something in it only with recursive=true)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = String, Query, pattern = r"^[^\x00]*[^/.\x00][^\x00]*$", description = "file or folder relative to /app (not /app itself)"), ("recursive" = Option<bool>, Query, description = "true: also a folder with something in it, with everything in it")), responses((status = 200, description = "Deleted", body = crate::http::schema::FileDeleted), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or the token lacks scope write", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container, or FILE_NOT_FOUND", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input (MISSING_PATH, UNSAFE_PATH, NOT_A_DIRECTORY, INVALID_QUERY)", body = crate::http::schema::ErrorBody), (status = 409, description = "DIRECTORY_NOT_EMPTY without recursive=true", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<OpQuery>,
) -> Response {
    let mut fields = crate::fields! {"file_op" => "delete", "file_path" => query.path.clone()};
    let result = delete_inner(&state, &cuid, query, &mut fields).await;
    audited(result, fields)
}

async fn delete_inner(
    state: &AppState,
    cuid: &str,
    query: OpQuery,
    fields: &mut Map<String, Value>,
) -> ApiResult<Response> {
    let recursive = match query.recursive.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::field(
                ApiCode::InvalidQuery,
                "recursive",
                Value::String(other.to_owned()),
                "recursive must be true or false",
            ))
        }
    };
    let provided = query.path.unwrap_or_default();
    let components = item_path(query_path_or_none(&provided), "path")?;
    let (container, resumed) = woken(state, cuid).await?;
    let cuid = container.cuid.clone();
    let guard = state.files.lock(&cuid).await;
    let container = live_container(state, &cuid).await?;
    let mount = mounts::ready_app_dir(&state.config, &cuid, &container.spec).await?;
    let trash = work_dir(state, &container).await?;
    let shown = listing::display_path(&components);
    let removed = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let result = confine::open_root(&mount, &cuid)
            .and_then(|root| ops::remove(&root, &components, &provided, recursive, trash.path()));
        // What a recursive delete moved out is removed before the answer.
        trash.remove();
        result.map_err(ApiError::from)
    })
    .await
    .map_err(internal)??;
    let kind = match removed {
        Removed::File => "file",
        Removed::Folder => "dir",
    };
    fields.insert("recursive".into(), recursive.into());
    let body = crate::http::schema::FileDeleted {
        path: shown,
        r#type: kind.into(),
    };
    Ok(with_timing(Json(body).into_response(), resumed))
}

/// An absent `?path=` reads as empty: both are "not a path" ([`item_path`]'s `MISSING_PATH`).
fn query_path_or_none(provided: &str) -> Option<&str> {
    (!provided.is_empty()).then_some(provided)
}

fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> ApiResult<Option<&'a str>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::field(
            ApiCode::MissingPath,
            name,
            other.clone(),
            format!("{name} must be a string: a path inside /app"),
        )),
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

/// `POST /containers/{cuid}/files/move` `{"from": p, "to": q}`.
#[utoipa::path(post, path = "/containers/{cuid}/files/move", tag = "files", summary = "Move (rename) a file or folder within /app; never replaces", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), request_body = crate::http::schema::MoveBody, responses((status = 200, description = "Moved", body = crate::http::schema::MoveBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or the token lacks scope write", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container, or FILE_NOT_FOUND (from, or the folder of to)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input (MISSING_PATH, UNSAFE_PATH, NOT_A_DIRECTORY, MOVE_INTO_ITSELF)", body = crate::http::schema::ErrorBody), (status = 409, description = "FILE_EXISTS: to is taken", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn move_item(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let fields = crate::fields! {
        "file_op" => "move",
        "file_path" => body.get("from").and_then(Value::as_str),
        "file_to" => body.get("to").and_then(Value::as_str),
    };
    let result = move_inner(&state, &cuid, body).await;
    audited(result, fields)
}

async fn move_inner(state: &AppState, cuid: &str, body: Map<String, Value>) -> ApiResult<Response> {
    unknown_fields(&body, &["from", "to"])?;
    let from_provided = string_field(&body, "from")?.map(str::to_owned);
    let to_provided = string_field(&body, "to")?.map(str::to_owned);
    let from = item_path(from_provided.as_deref(), "from")?;
    let to = item_path(to_provided.as_deref(), "to")?;
    let (from_provided, to_provided) = (from_provided.unwrap(), to_provided.unwrap());
    let (container, resumed) = woken(state, cuid).await?;
    let cuid = container.cuid.clone();
    let guard = state.files.lock(&cuid).await;
    let container = live_container(state, &cuid).await?;
    let mount = mounts::ready_app_dir(&state.config, &cuid, &container.spec).await?;
    let shown = (listing::display_path(&from), listing::display_path(&to));
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        confine::open_root(&mount, &cuid)
            .and_then(|root| ops::rename(&root, &from, &from_provided, &to, &to_provided))
            .map_err(ApiError::from)
    })
    .await
    .map_err(internal)??;
    let body = crate::http::schema::MoveBody {
        from: shown.0,
        to: shown.1,
    };
    Ok(with_timing(Json(body).into_response(), resumed))
}

/// `POST /containers/{cuid}/files/mkdir` `{"path": p}`.
#[utoipa::path(post, path = "/containers/{cuid}/files/mkdir", tag = "files", summary = "Make a folder in /app (and any missing folder above it)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), request_body = crate::http::schema::MkdirBody, responses((status = 201, description = "Made", body = crate::http::schema::MkdirBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused, or the token lacks scope write", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input (MISSING_PATH, UNSAFE_PATH, NOT_A_DIRECTORY)", body = crate::http::schema::ErrorBody), (status = 409, description = "FILE_EXISTS: something has that name", body = crate::http::schema::ErrorBody), (status = 413, description = "No room under resources.disk (DISK_QUOTA_EXCEEDED)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn mkdir(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let fields = crate::fields! {
        "file_op" => "mkdir",
        "file_path" => body.get("path").and_then(Value::as_str),
    };
    let result = mkdir_inner(&state, &cuid, body).await;
    audited(result, fields)
}

async fn mkdir_inner(
    state: &AppState,
    cuid: &str,
    body: Map<String, Value>,
) -> ApiResult<Response> {
    unknown_fields(&body, &["path"])?;
    let provided = string_field(&body, "path")?.map(str::to_owned);
    let components = item_path(provided.as_deref(), "path")?;
    let (container, resumed) = woken(state, cuid).await?;
    let cuid = container.cuid.clone();
    let guard = state.files.lock(&cuid).await;
    let container = live_container(state, &cuid).await?;
    let userns = state.docker.userns_recent().await;
    let owner = mounts::host_owner(&state.config, container.spec.user.as_deref(), userns);
    let mount = mounts::ready_app_dir(&state.config, &cuid, &container.spec).await?;
    let capped = container.spec.resources.disk_bytes.is_some();
    let work = work_dir(state, &container).await?;
    let shown = listing::display_path(&components);
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let result = confine::open_root(&mount, &cuid).and_then(|root| {
            ops::make_folder(
                Work {
                    work: work.path(),
                    capped,
                    root,
                    mount: &mount,
                    owner,
                },
                &components,
            )
        });
        work.remove();
        result.map_err(ApiError::from)
    })
    .await
    .map_err(internal)??;
    let body = crate::http::schema::MkdirBody { path: shown };
    Ok(with_timing(
        (StatusCode::CREATED, Json(body)).into_response(),
        resumed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_name_something_inside_app() {
        assert_eq!(item_path(Some("/app/a/b"), "path").unwrap(), ["a", "b"]);
        for root in ["", "/", "/app", "."] {
            let e = item_path(Some(root), "path").unwrap_err();
            assert_eq!(e.code, ApiCode::MissingPath, "{root:?}");
        }
        assert_eq!(
            item_path(None, "from").unwrap_err().code,
            ApiCode::MissingPath
        );
        assert_eq!(
            item_path(Some("../x"), "to").unwrap_err().code,
            ApiCode::UnsafePath
        );
    }
}
