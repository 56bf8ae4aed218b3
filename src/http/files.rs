//! Files of a container's `/app` (docs/API.md §5): ZIP upload, file download, folder download
//! as a streamed ZIP, directory listing. The work on the host is in [`crate::appdir`]; these handlers check the
//! request, stream the bodies and map the outcome.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::appdir::confine::{self, Found};
use crate::appdir::{listing, mounts, unzip, upload, zipout};
use crate::error::{content_type_is, ApiCode, ApiError, ApiResult, Kind};
use crate::http::extract::{FilesQuery, Path};
use crate::http::response::live_container;
use crate::http::resume;
use crate::http::schema::{FileListing, UploadResult};
use crate::http::upload_body::{drain, receive, upload_too_large};
use crate::state::AppState;

/// `?path=`; other query parameters are ignored (cache busters and the like).
#[derive(Debug, Default, Deserialize)]
pub struct PathQuery {
    pub path: Option<String>,
}

fn internal(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "file task failed");
    ApiError::new(
        Kind::Internal,
        ApiCode::InternalError,
        "the server hit an internal error",
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// Counts the bytes of a download as they are handed to the connection.
fn count_download<E>(chunk: &Result<bytes::Bytes, E>) {
    if let Ok(chunk) = chunk {
        crate::metrics::get()
            .download_bytes
            .inc_by(chunk.len() as u64);
    }
}

/// `POST /containers/{cuid}/upload-zip[?path=dir]`: body = the ZIP.
#[utoipa::path(post, path = "/containers/{cuid}/upload-zip", tag = "files", summary = "Extract a ZIP into /app", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = Option<String>, Query, pattern = r"^[^\x00]*$", description = "folder of /app to extract into")), request_body(content = String, content_type = "application/zip", description = "a ZIP archive"), responses((status = 200, description = "Extracted", body = crate::http::schema::UploadResult), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Every upload slot stayed busy for UPLOAD_SLOT_WAIT (UPLOAD_SLOTS_BUSY; Retry-After)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn upload_zip(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let container = live_container(&state, &cuid).await?;
    // A body declared too large wakes nothing.
    let body = refuse_declared_too_large(&state, &headers, body).await?;
    // A container its idle policy put to sleep is woken first (docs/API.md, idle).
    let (container, resumed) = resume::on_use(&state, container, true).await?;
    let cuid = container.cuid.clone();
    if headers.contains_key(header::CONTENT_TYPE)
        && !crate::http::extract::is_zip(&headers)
        && !content_type_is(&headers, "application/x-zip")
    {
        return Err(ApiError::validation(
            ApiCode::UnsupportedContentType,
            "the body must be the raw ZIP archive (Content-Type: application/zip)",
        ));
    }
    let prefix = match &query.path {
        Some(p) => confine::parse_path(p)?,
        None => Vec::new(),
    };
    let Staged {
        permit: upload_permit,
        staging,
        ..
    } = stage_body(&state, &headers, body, "upload.zip").await?;

    let guard = state.files.lock(&cuid).await;
    // Deleted while the body was arriving?
    if let Err(e) = live_container(&state, &cuid).await {
        staging.remove_async().await;
        return Err(e);
    }
    // At most MAX_PARALLEL_EXTRACTIONS uploads are indexed and extracted at once.
    let permit = state.files.extraction_permit().await;
    let userns = state.docker.userns_recent().await;
    let owner = mounts::host_owner(&state.config, container.spec.user.as_deref(), userns);
    let limits = unzip::Limits::from_config(&state.config);
    let mount = match mounts::ready_app_dir(&state.config, &cuid, &container.spec).await {
        Ok(mount) => mount,
        Err(e) => {
            staging.remove_async().await;
            return Err(e.into());
        }
    };
    // A capped container's upload is extracted inside its own image (see appdir::disk).
    let work = if container.spec.resources.disk_bytes.is_some() {
        match state
            .files
            .staging_dir_in(crate::appdir::disk::staging_dir(&state.config, &cuid))
            .await
        {
            Ok(work) => Some(work),
            Err(e) => {
                staging.remove_async().await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let outcome = blocking(move || {
        // Held until the work is done, even if the client hangs up meanwhile.
        let _upload_permit = upload_permit;
        let _guard = guard;
        let _permit = permit;
        let work_path = work.as_ref().map_or(staging.path(), |w| w.path());
        let result = confine::open_root(&mount, &cuid).and_then(|root| {
            upload::run(
                staging.path(),
                work_path,
                root,
                &mount,
                &prefix,
                owner,
                &limits,
            )
        });
        // Removed before the answer (and before the permits go).
        if let Some(work) = work {
            work.remove();
        }
        staging.remove();
        result.map_err(ApiError::from)
    })
    .await?;
    let mut response = Json(UploadResult {
        files: outcome.files,
        bytes: outcome.bytes,
    })
    .into_response();
    if let Some(took) = resumed {
        response
            .headers_mut()
            .insert(resume::SERVER_TIMING, resume::server_timing(took));
    }
    Ok(response)
}

/// An upload body on disk in a fresh staging directory, and the upload slot it holds.
pub(crate) struct Staged {
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub staging: crate::appdir::StagingDir,
    /// How many bytes arrived.
    pub bytes: u64,
}

/// A declared `Content-Length` past `UPLOAD_MAX_BYTES`: `413 UPLOAD_TOO_LARGE` at once, the
/// body drained unless the client waits for `100 Continue`; else the body, untouched. The
/// upload routes ask this before they wake a container.
pub(crate) async fn refuse_declared_too_large(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Body> {
    let limit = state.config.upload_max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        // A client waiting for `100 Continue` has not sent the body: do not ask for it.
        if !headers.contains_key(header::EXPECT) {
            drain(body.into_data_stream()).await;
        }
        return Err(upload_too_large(limit));
    }
    Ok(body)
}

/// Receives an upload body into `staging/<name>` under the bounds every upload has: a
/// declared `Content-Length` past `UPLOAD_MAX_BYTES` is `413` before anything is read (and
/// the body drained unless the client waits for `100 Continue`), then one of the
/// `MAX_PARALLEL_UPLOADS` slots (`503 UPLOAD_SLOTS_BUSY` past `UPLOAD_SLOT_WAIT`), then the
/// body streamed to disk under the limit, the idle timeout and the stall budget.
pub(crate) async fn stage_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    name: &str,
) -> ApiResult<Staged> {
    let limit = state.config.upload_max_bytes;
    let body = refuse_declared_too_large(state, headers, body).await?;

    // At most MAX_PARALLEL_UPLOADS bodies in the staging area at once; held to the end.
    // Nothing the client controls holds it for long: receiving the body is bounded by the
    // idle timeout and the total stall budget, and after that the work is the server's
    // (lock, extraction, commit). A slot not free within UPLOAD_SLOT_WAIT is `503`.
    let permit = match state
        .files
        .upload_permit(state.config.upload_slot_wait)
        .await
    {
        Ok(permit) => permit,
        Err(e) => {
            if !headers.contains_key(header::EXPECT) {
                drain(body.into_data_stream()).await;
            }
            return Err(e.into());
        }
    };
    let staging = state.files.staging_dir().await?;
    let path = staging.path().join(name);
    let (idle, budget) = (
        state.config.upload_idle_timeout,
        state.config.upload_stall_budget,
    );
    match receive(body, &path, limit, idle, budget).await {
        Ok(bytes) => Ok(Staged {
            permit,
            staging,
            bytes,
        }),
        Err(e) => {
            staging.remove_async().await;
            Err(e)
        }
    }
}

fn missing_path() -> ApiError {
    ApiError::field(
        ApiCode::MissingPath,
        "path",
        Value::Null,
        "the query parameter path is required",
    )
}

/// `GET /containers/{cuid}/download?path=p`: one regular file, streamed.
#[utoipa::path(get, path = "/containers/{cuid}/download", tag = "files", summary = "Download one file of /app", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = String, Query, pattern = r"^[^\x00]*[^/.\x00][^\x00]*$", description = "file path relative to /app (no NUL byte)")), responses((status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<PathQuery>,
) -> ApiResult<Response> {
    let container = live_container(&state, &cuid).await?;
    let provided = query.path.ok_or_else(missing_path)?;
    let components = confine::parse_path(&provided)?;
    // The name offered to the client: the last component of the path asked for.
    let name = components.last().cloned().unwrap_or_else(|| "app".into());
    let mount = mounts::ready_app_dir(&state.config, &container.cuid, &container.spec).await?;
    let cuid = container.cuid.clone();
    let (file, size) = blocking(move || {
        let root = confine::open_root(&mount, &cuid)?;
        match confine::lookup(&root, &components, &provided)? {
            Found::File(file, size) => Ok((file, size)),
            Found::Dir(_) => Err(ApiError::validation(
                ApiCode::IsADirectory,
                format!("{provided} is a directory; use download-zip"),
            )
            .with_details(json!({"path": provided}))),
            Found::Special => Err(ApiError::validation(
                ApiCode::NotARegularFile,
                format!("{provided} is not a regular file (FIFO, socket or device)"),
            )
            .with_details(json!({"path": provided}))),
            Found::Busy => Err(ApiError::conflict(
                ApiCode::FileBusy,
                format!(
                    "{provided} is held under a lease by a process of the container; retry later"
                ),
            )
            .with_details(json!({"path": provided}))),
        }
    })
    .await?;
    let reader = tokio::fs::File::from_std(file).take(size);
    let stream =
        tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024).inspect(count_download);
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::CONTENT_DISPOSITION, disposition(&name));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// `GET /containers/{cuid}/download-zip[?path=dir]`: the directory as a streamed ZIP.
#[utoipa::path(get, path = "/containers/{cuid}/download-zip", tag = "files", summary = "Download a folder of /app as a ZIP", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = Option<String>, Query, pattern = r"^[^\x00]*$", description = "folder (default: all of /app)")), responses((status = 200, description = "The ZIP, streamed", body = Vec<u8>, content_type = "application/zip"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn download_zip(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<PathQuery>,
) -> ApiResult<Response> {
    let container = live_container(&state, &cuid).await?;
    let provided = query.path.unwrap_or_default();
    let components = confine::parse_path(&provided)?;
    let name = match components.last() {
        Some(last) => format!("{last}.zip"),
        None => format!("{}.zip", container.cuid),
    };
    let mount = mounts::ready_app_dir(&state.config, &container.cuid, &container.spec).await?;
    let cuid = container.cuid.clone();
    let dir = blocking(move || {
        let root = confine::open_root(&mount, &cuid)?;
        match confine::lookup(&root, &components, &provided)? {
            Found::Dir(dir) => Ok(dir),
            Found::File(..) | Found::Special | Found::Busy => Err(ApiError::validation(
                ApiCode::NotADirectory,
                format!("{provided} is not a directory; use download"),
            )
            .with_details(json!({"path": provided}))),
        }
    })
    .await?;
    // At most MAX_PARALLEL_DOWNLOAD_ZIPS walks at once; this one waits for a permit.
    let permit = state.files.download_zip_permit().await;
    let (rx, cut) = zipout::spawn(dir, permit, zipout::Limits::from_config(&state.config));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .inspect(count_download);
    // An archive cut at a cap says which in a trailer (to clients that send `TE: trailers`;
    // the archive's comment says it to everyone).
    let trailers = async move {
        let cap = cut.await.ok()?;
        let mut map = HeaderMap::new();
        map.insert(
            zipout::TRUNCATED_TRAILER,
            HeaderValue::from_static(cap.as_str()),
        );
        Some(Ok(map))
    };
    let body = http_body_util::BodyExt::with_trailers(Body::from_stream(stream), trailers);
    let mut response = Body::new(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(
        header::TRAILER,
        HeaderValue::from_static(zipout::TRUNCATED_TRAILER),
    );
    h.insert(header::CONTENT_DISPOSITION, disposition(&name));
    Ok(response)
}

/// Page size of a listing when `limit` is not given, and its bound.
const LIST_DEFAULT: usize = 500;
const LIST_MAX: usize = 1000;

/// `?path=&limit=&cursor=` of a listing.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub path: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// `GET /containers/{cuid}/files[?path=dir&limit=n&cursor=name]`: one page of a directory.
#[utoipa::path(get, path = "/containers/{cuid}/files", operation_id = "list_files", tag = "files", summary = "One page of a directory of /app", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("path" = Option<String>, Query, pattern = r"^[^\x00]*$"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 500"), ("cursor" = Option<String>, Query, description = "the last name of the previous page")), responses((status = 200, description = "Entries", body = crate::http::schema::FileListing), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "Not found", body = crate::http::schema::ErrorBody), (status = 503, description = "Every listing slot stayed busy (LISTING_SLOTS_BUSY; Retry-After)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    FilesQuery(query): FilesQuery<ListQuery>,
) -> ApiResult<Json<FileListing>> {
    let container = live_container(&state, &cuid).await?;
    let limit = match query.limit.as_deref() {
        None => LIST_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=LIST_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::field(
                    ApiCode::InvalidLimit,
                    "limit",
                    json!(l),
                    format!("limit must be 1-{LIST_MAX}"),
                )
            })?,
    };
    let provided = query.path.unwrap_or_default();
    let components = confine::parse_path(&provided)?;
    let mount = mounts::ready_app_dir(&state.config, &container.cuid, &container.spec).await?;
    let cuid = container.cuid.clone();
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let shown = listing::display_path(&components);
    // At most MAX_PARALLEL_LISTINGS read a directory at once (each holds a blocking-pool
    // thread for a read of up to MAX_SCANNED names); a slot not free soon is `503`.
    let permit = state.files.listing_permit().await?;
    let (entries, next, skipped) = blocking(move || {
        let _permit = permit;
        let root = confine::open_root(&mount, &cuid)?;
        match confine::lookup(&root, &components, &provided)? {
            Found::Dir(dir) => Ok(listing::page(&dir, cursor.as_deref(), limit)?),
            Found::File(..) | Found::Special | Found::Busy => Err(ApiError::validation(
                ApiCode::NotADirectory,
                format!("{provided} is not a directory; use download"),
            )
            .with_details(json!({"path": provided}))),
        }
    })
    .await?;
    Ok(Json(FileListing {
        path: shown,
        entries,
        next_cursor: next,
        skipped: skipped as u64,
    }))
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback and the
/// exact name percent-encoded.
pub fn disposition(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// A content type from the file name's extension; `application/octet-stream` otherwise.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" | "py" | "sh" | "cfg" | "ini" | "toml" | "yaml" | "yml" | "rs"
        | "go" | "rb" | "ts" | "env" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe_and_exact() {
        assert_eq!(
            disposition("boot.py").to_str().unwrap(),
            "attachment; filename=\"boot.py\"; filename*=UTF-8''boot.py"
        );
        assert_eq!(
            disposition("é \"x\".txt").to_str().unwrap(),
            "attachment; filename=\"_ _x_.txt\"; filename*=UTF-8''%C3%A9%20%22x%22.txt"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.JSON"), "application/json");
        assert_eq!(content_type("boot.py"), "text/plain; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }
}
