//! `/containers`: create, read, list, patch, ports, delete, status. Handlers write desired
//! state to the store and leave Docker to the reconciler; creating, listing and patching a
//! container that was never started costs Docker nothing.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::extract::{JsonObject, Path, Query};
use crate::http::prestart::{check_backend, check_ports_free, check_runtime, check_startable};
use crate::http::response::{
    container_response, live_representation, live_response, path_cuid, representation,
    set_identity_headers,
};
use crate::http::schema::{ContainerList, LiveStatus, PublishedPort, StatusSource};
use crate::http::wait::{after_spec_change, answer_created, wait_deleted, Wait};
use crate::http::{cursor, quota};
use crate::lifecycle::{DesiredState, DockerState, Status};
use crate::representation::{Gone, Shown};
use crate::spec::{self, Limits};
use crate::state::AppState;
use crate::store::containers::{Created, ListFilter};
use crate::tenancy::Principal;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// `If-Match: "<generation>"` (also `W/"n"`, bare `n`, or `*` for any).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<i64>().map(Some).map_err(|_| {
        ApiError::new(
            Kind::PreconditionFailed,
            ApiCode::StaleGeneration,
            "If-Match must name a generation, e.g. \"3\"",
        )
        .with_details(json!({"if_match": text}))
    })
}

fn limits(state: &AppState) -> Limits {
    crate::http::prestart::spec_limits(state)
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::validation(
            ApiCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}

fn replay(stored: crate::store::containers::StoredResponse, sha: &str) -> ApiResult<Response> {
    if stored.body_sha256 != sha {
        return Err(ApiError::conflict(
            ApiCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different body",
        ));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED);
    let cuid = stored.response["cuid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let generation = stored.response["generation"].as_i64().unwrap_or(1);
    let mut response = (status, Json(stored.response)).into_response();
    set_identity_headers(response.headers_mut(), &cuid, generation);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

#[utoipa::path(post, path = "/containers", tag = "containers", summary = "Create a container (start: true starts it at once)", params(("wait" = Option<String>, Query, pattern = "^(true|false|healthy)$", description = "false: answer 202 at once instead of waiting for convergence; healthy (with start: true and a health check): also wait for the health check to pass"), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "same key and body: the first answer again")), request_body = crate::http::schema::CreateBody, responses((status = 201, description = "Created (with start: true, a start that failed shows in status and last_error)", body = crate::http::schema::Representation), (status = 202, description = "Accepted: start with ?wait=false, or still converging when ACTION_TIMEOUT passed", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(wait): Query<Wait>,
    headers: HeaderMap,
    JsonObject(mut body): JsonObject,
) -> ApiResult<Response> {
    // Keys are per tenant: another tenant's key (and body) must not replay its container.
    let key = idempotency_key(&headers)?.map(|k| match &principal.tenant {
        Some(t) => format!("tenant:{t}:{k}"),
        None => k,
    });
    let sha = hex(&Sha256::digest(
        Value::Object(body.clone()).to_string().as_bytes(),
    ));
    if let Some(key) = &key {
        if let Some(stored) = state.store.idempotent_response(key).await? {
            return replay(stored, &sha);
        }
    }
    let tenant = quota::tenant_of_create(&state, &principal, &mut body)?;
    let mut request = spec::parse_create(body, &limits(&state))?;
    // `wait` matters only with `start` (a create alone waits for nothing).
    if wait.healthy && request.start && request.spec.health.is_none() {
        return Err(ApiError::new(
            crate::error::Kind::State,
            ApiCode::NoHealthCheck,
            "wait=healthy needs a health check: the body has no `health`",
        )
        .with_details(json!({"field": "health", "provided": null})));
    }
    // DEFAULT_DISK, written into the spec: the cap is fixed at create (an image is made),
    // so a later change of the setting leaves existing containers as they are.
    if request.spec.resources.disk_bytes.is_none() {
        if let Some((text, bytes)) = &state.config.default_disk {
            request.spec.resources.disk = Some(text.clone());
            request.spec.resources.disk_bytes = Some(*bytes);
        }
    }
    let quotas = quota::quotas_of(&state, tenant.as_deref());
    if let Some((t, quotas)) = &quotas {
        quota::check_ports(t, quotas, &request.spec)?;
    }
    crate::http::images::check_registry(&state, &request.spec.image).await?;
    check_runtime(&state, request.spec.isolation).await?;
    check_backend(&state, &request.spec).await?;
    // The tenant's quotas, checked under its write lock, held until the row is committed;
    // before anything is made (a disk image), so a refused create costs nothing.
    let quota_guard = match &quotas {
        None => None,
        Some((t, quotas)) => {
            let wants = quota::requested(quotas, &state.config, &request.spec, request.start)?;
            Some(quota::admit(&state, t, &wants).await?)
        }
    };
    let cuid = spec::new_cuid();
    let userns = state.docker.userns_recent().await;
    let made = {
        let (config, cuid, user) = (
            state.config.clone(),
            cuid.clone(),
            request.spec.user.clone(),
        );
        let disk = request.spec.resources.disk_bytes;
        // An image to make and mount (tens of milliseconds): off the async workers.
        tokio::task::spawn_blocking(move || {
            crate::appdir::mounts::create(&config, &cuid, user.as_deref(), disk, userns)
        })
        .await
        .map_err(|e| ApiError::io(format!("cannot make /app: {e}")))?
    };
    made?;
    let discard = || {
        let (config, cuid) = (state.config.clone(), cuid.clone());
        // On the blocking pool (an umount), not waited for: the answer does not depend on it.
        tokio::task::spawn_blocking(move || crate::appdir::mounts::discard(&config, &cuid));
    };
    let desired = if request.start {
        DesiredState::Running
    } else {
        DesiredState::Created
    };
    let since = crate::store::now();
    if request.start {
        check_startable(&state.config, &cuid, &request.spec).inspect_err(|_| {
            discard();
        })?;
    }
    let inserted = state
        .store
        .insert_owned(
            &cuid,
            &request.spec,
            desired,
            tenant.as_deref(),
            request.lifetime.as_ref(),
            key.as_deref().map(|k| (k, sha.as_str())),
            // Kept as sent, for the replay of the same key.
            |c| serde_json::to_value(representation(c)).unwrap_or(Value::Null),
        )
        .await;
    drop(quota_guard);
    let container = match inserted {
        Ok(Created::New(container)) => {
            state
                .deadlines
                .set(&container.cuid, container.expires_at.as_deref());
            *container
        }
        Ok(Created::KeyTaken) => {
            discard();
            let key = key.as_deref().unwrap_or_default();
            let stored = state.store.idempotent_response(key).await?;
            return replay(
                stored.ok_or_else(|| ApiError::io("idempotency record vanished"))?,
                &sha,
            );
        }
        Err(e) => {
            discard();
            return Err(e.into());
        }
    };
    if !request.start {
        return Ok(container_response(StatusCode::CREATED, &container));
    }
    state.reconciler.wake(&container);
    answer_created(&state, container, wait, &since).await
}

/// The longest `?q=` search.
const MAX_SEARCH_LEN: usize = 128;

/// `?q=`: trimmed; empty is no search. Control characters and overlong text are refused.
fn search_text(q: Option<&String>) -> ApiResult<Option<String>> {
    let Some(text) = q.map(|t| t.trim()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_SEARCH_LEN || text.chars().any(char::is_control) {
        return Err(ApiError::field(
            ApiCode::InvalidQuery,
            "q",
            json!(text.chars().take(MAX_SEARCH_LEN).collect::<String>()),
            format!("q is up to {MAX_SEARCH_LEN} printable characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

#[utoipa::path(get, path = "/containers/{cuid}", tag = "containers", summary = "One container", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), responses((status = 200, description = "The container (ETag: generation)", body = crate::http::schema::LiveContainer), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?;
    let c = state.store.get_or_404(cuid).await?;
    Ok(live_response(&state, StatusCode::OK, &c))
}

#[utoipa::path(get, path = "/containers", tag = "containers", summary = "List containers, in creation order, by keyset pages", params(("status" = Option<Vec<crate::lifecycle::Status>>, Query, style = Form, explode = false, description = "comma-separated statuses"), ("tag" = Option<String>, Query, description = "containers with this tag; empty: any"), ("health" = Option<String>, Query, pattern = "^(starting|healthy|unhealthy|none)(,(starting|healthy|unhealthy|none))*$", description = "comma-separated observed healths: starting, healthy, unhealthy, none"), ("total" = Option<bool>, Query, description = "true: the answer carries `total`, how many containers the filters keep on all pages"), ("q" = Option<String>, Query, max_length = 128, description = "search: containers whose name, image (or its last path part) or a tag starts with this text, ignoring ASCII case; empty: any"), ("update_available" = Option<bool>, Query, description = "true: only containers with a newer digest of their tag known; false: only those without"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1-500, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::schema::ContainerList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<ContainerList>> {
    if let Some(k) = q.keys().find(|k| {
        ![
            "status",
            "tag",
            "limit",
            "cursor",
            "tenant",
            "q",
            "total",
            "health",
            "update_available",
        ]
        .contains(&k.as_str())
    }) {
        return Err(ApiError::field(
            ApiCode::UnknownField,
            k.clone(),
            Value::String(k.clone()),
            format!("unknown query parameter `{k}`"),
        ));
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::field(
                    ApiCode::InvalidLimit,
                    "limit",
                    json!(l),
                    format!("limit must be 1-{MAX_LIMIT}"),
                )
            })?,
    };
    // `status=` (empty) names no status: refused like any other that is not one.
    let status = match q.get("status").map(|s| s.trim()) {
        None => None,
        Some(s) => {
            let mut wanted: Vec<String> = s.split(',').map(|p| p.trim().to_owned()).collect();
            if let Some(bad) = wanted.iter().find(|w| Status::parse(w).is_none()) {
                let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                return Err(ApiError::field(
                    ApiCode::InvalidStatusFilter,
                    "status",
                    json!(bad),
                    format!("status must be a comma list of {}", all.join(", ")),
                ));
            }
            wanted.sort();
            wanted.dedup();
            Some(wanted)
        }
    };
    // `health=unhealthy`, or a comma list of starting, healthy, unhealthy and none (no
    // health: no check, or not running).
    let health = match q.get("health").map(|s| s.trim()) {
        None => None,
        Some(s) => {
            let mut wanted: Vec<String> = s.split(',').map(|p| p.trim().to_owned()).collect();
            if let Some(bad) = wanted
                .iter()
                .find(|w| *w != "none" && crate::spec::Health::parse(w).is_none())
            {
                return Err(ApiError::field(
                    ApiCode::InvalidHealthFilter,
                    "health",
                    json!(bad),
                    "health must be a comma list of starting, healthy, unhealthy, none",
                ));
            }
            wanted.sort();
            wanted.dedup();
            Some(wanted)
        }
    };
    let tag = q.get("tag").filter(|t| !t.is_empty()).cloned();
    let search = search_text(q.get("q"))?;
    let want_total = match q.get("total").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::field(
                ApiCode::InvalidQuery,
                "total",
                json!(other),
                "total is true or false",
            ))
        }
    };
    let update_available = match q.get("update_available").map(|s| s.trim()) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(bad) => {
            return Err(ApiError::field(
                ApiCode::InvalidQuery,
                "update_available",
                json!(bad),
                "update_available must be true or false",
            ))
        }
    };
    let asked_tenant = q.get("tenant").filter(|t| !t.is_empty()).cloned();
    // A tenant's principal lists its own containers only: asking for another tenant's is
    // answered as if it had none.
    if let Some(mine) = &principal.tenant {
        if asked_tenant.as_ref().is_some_and(|t| t != mine) {
            return Ok(Json(ContainerList {
                containers: Vec::new(),
                next_cursor: None,
                total: want_total.then_some(0),
            }));
        }
    }
    let tenant = principal.tenant.clone().or(asked_tenant);
    let asked = ListFilter {
        status,
        tag,
        tenant,
        q: search,
        health,
        update_available,
    };

    let key = &state.identity.cursor_key;
    let (after, filter) = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => (0, asked),
        Some(c) => {
            let (after, carried) = cursor::decode(key, c)?;
            // A cursor keeps its filters; restating them is fine, changing them is not.
            let status_ok = asked.status.is_none() || asked.status == carried.status;
            let tag_ok = asked.tag.is_none() || asked.tag == carried.tag;
            let tenant_ok = asked.tenant.is_none() || asked.tenant == carried.tenant;
            let q_ok = asked.q.is_none() || asked.q == carried.q;
            let health_ok = asked.health.is_none() || asked.health == carried.health;
            let update_ok = asked.update_available.is_none()
                || asked.update_available == carried.update_available;
            let own_ok = principal.tenant.is_none() || principal.tenant == carried.tenant;
            if !status_ok || !tag_ok || !tenant_ok || !q_ok || !own_ok || !health_ok || !update_ok {
                return Err(ApiError::field(
                    ApiCode::InvalidCursor,
                    "cursor",
                    Value::Null,
                    "the cursor was made for other filters than this request's",
                ));
            }
            (after, carried)
        }
    };

    let mut rows = state.store.list(&filter, after, limit).await?;
    let total = match want_total {
        true => Some(state.store.count(&filter).await?),
        false => None,
    };
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|c| cursor::encode(key, c.seq, &filter))
    } else {
        None
    };
    Ok(Json(ContainerList {
        containers: rows
            .iter()
            .map(|c| live_representation(&state, c))
            .collect(),
        next_cursor,
        total,
    }))
}

#[utoipa::path(patch, path = "/containers/{cuid}", tag = "containers", summary = "Change the spec", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence"), ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#, description = "\"<generation>\": 412 when stale")), request_body = crate::http::schema::PatchBody, responses((status = 200, description = "Changed (and converged)", body = crate::http::schema::Representation), (status = 202, description = "Accepted", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 412, description = "If-Match is stale", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let cuid = path_cuid(&cuid)?;
    let expected = if_match(&headers)?;
    let limits = limits(&state);
    // A new image is checked before the spec changes (the store's update cannot wait on
    // Docker); one that is not a valid reference is refused by the patch itself.
    if let Some(Value::String(image)) = body.get("image") {
        if spec::is_image_reference(image) {
            crate::http::images::check_registry(&state, image).await?;
        }
    }
    // A new isolation's runtime too (a malformed one is the patch's to refuse).
    if let Some(isolation) = spec::patched_isolation(&body, &limits) {
        check_runtime(&state, isolation).await?;
    }
    // What the backend cannot do, on the spec as the patch would make it (the patch itself
    // refuses a malformed one; a race with another patch is the reconciler's to report).
    if let Ok(Some(current)) = state.store.get(cuid).await {
        if let Ok(next) = spec::apply_patch(&current.spec, body.clone(), &limits) {
            check_backend(&state, &next).await?;
        }
    }
    let quota = quota::SpecChange::begin(&state, cuid).await?;
    let updated = state
        .store
        .update::<ApiError>(cuid, expected, |current| {
            // `apply_patch` refuses a bad lifetime too (with every other field's error), so
            // its `?` comes first: one answer names every field that is wrong.
            let lifetime = spec::patched_lifetime(&body, current.lifetime.as_ref(), &limits);
            let next = spec::apply_patch(&current.spec, body, &limits)?;
            let lifetime = lifetime?;
            if let Some(q) = &quota {
                q.check(&state.config, &current.spec, &next)?;
            }
            Ok((next, lifetime))
        })
        .await?;
    drop(quota);
    // A new deadline (or none) for the timer; set again when unchanged, which costs nothing.
    state.deadlines.set(
        &updated.container.cuid,
        updated.container.expires_at.as_deref(),
    );
    after_spec_change(&state, updated, wait).await
}

#[utoipa::path(patch, path = "/containers/{cuid}/ports", tag = "containers", summary = "Replace the port list", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence"), ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#, description = "\"<generation>\": 412 when stale")), request_body = crate::http::schema::PortsBody, responses((status = 200, description = "Changed", body = crate::http::schema::Representation), (status = 202, description = "Accepted", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Conflict", body = crate::http::schema::ErrorBody), (status = 412, description = "If-Match is stale", body = crate::http::schema::ErrorBody), (status = 422, description = "Transition not allowed from the current state", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn patch_ports(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let cuid = path_cuid(&cuid)?;
    let expected = if_match(&headers)?;
    let ports = spec::parse_ports_body(body, &limits(&state))?;
    let quota = quota::SpecChange::begin(&state, cuid).await?;
    let updated = state
        .store
        .update_spec::<ApiError>(cuid, expected, |current| {
            // A running container republishes at once: a new host port that another program
            // holds is refused before anything changes.
            if current.desired_state.is_up() {
                let added: Vec<_> = ports
                    .iter()
                    .filter(|p| {
                        !current
                            .spec
                            .ports
                            .iter()
                            .any(|o| o.host == p.host && o.protocol == p.protocol)
                    })
                    .cloned()
                    .collect();
                check_ports_free(&added)?;
            }
            let mut next = current.spec.clone();
            next.ports = ports;
            if let Some(q) = &quota {
                q.check(&state.config, &current.spec, &next)?;
            }
            Ok(next)
        })
        .await?;
    drop(quota);
    after_spec_change(&state, updated, wait).await
}

#[utoipa::path(delete, path = "/containers/{cuid}", tag = "containers", summary = "Delete the container, its project and files", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("wait" = Option<bool>, Query, description = "false: answer 202 at once instead of waiting for convergence"), ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#, description = "\"<generation>\": 412 when stale")), responses((status = 200, description = "Deleted", body = crate::http::schema::Representation), (status = 202, description = "Accepted", body = crate::http::schema::Representation), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 412, description = "If-Match is stale", body = crate::http::schema::ErrorBody), (status = 408, description = "Did not converge within the wait limit (it keeps converging)", body = crate::http::schema::ErrorBody), (status = 500, description = "compose or file operation failed", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(wait): Query<Wait>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    let cuid = path_cuid(&cuid)?;
    let expected = if_match(&headers)?;
    let container = state.store.tombstone(cuid, expected).await?;
    state.deadlines.set(cuid, None);
    state.reconciler.wake(&container);
    if !wait.wait {
        return Ok(container_response(StatusCode::ACCEPTED, &container));
    }
    wait_deleted(&state, cuid).await?;
    let mut body = representation(&container);
    body.status = Shown::Gone(Gone::Deleted);
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Live state from Docker when the container exists there, from the store otherwise.
#[utoipa::path(get, path = "/containers/{cuid}/status", tag = "containers", summary = "Live state from Docker", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000")), responses((status = 200, description = "Live status", body = crate::http::schema::LiveStatus), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
) -> ApiResult<Json<LiveStatus>> {
    let cuid = path_cuid(&cuid)?;
    let c = state.store.get_or_404(cuid).await?;
    let mut body = LiveStatus {
        cuid: c.cuid.clone(),
        status: c.status,
        desired_state: c.desired_state,
        running: c.status == Status::Running,
        paused: c.status == Status::Paused,
        exit_code: c.exit_code,
        started_at: None,
        finished_at: None,
        restart_count: 0,
        ports: Vec::new(),
        node: c.node.clone(),
        endpoints: crate::representation::endpoints(&c),
        generation: c.generation,
        observed_generation: c.observed_generation,
        last_error: c.last_error.clone(),
        source: StatusSource::Store,
        health: c.health,
        health_log: c.health_log.clone(),
        docker_status: None,
    };
    // A container never started has nothing in Docker: no call for it.
    if c.observed_generation == 0 && c.desired_state == DesiredState::Created {
        return Ok(Json(body));
    }
    // The engine that runs it: this host's, or the Swarm node of its task.
    let inspect = tokio::time::timeout(Duration::from_secs(5), async {
        let Ok(at) = crate::http::locate(&state, cuid).await else {
            return None;
        };
        let info = at
            .docker
            .inspect_container(
                &at.container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()?;
        Some((info, at.node, at.address))
    })
    .await;
    if let Ok(Some((info, node, address))) = inspect {
        let st = info.state.unwrap_or_default();
        let ports: Vec<PublishedPort> = info
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(container_port, bindings)| {
                bindings
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |b| PublishedPort {
                        container: container_port.clone(),
                        host_ip: b.host_ip,
                        host_port: b.host_port,
                    })
            })
            .collect();
        let docker_state = crate::lifecycle::DockerState::of(&st);
        (body.health, body.health_log) =
            crate::reconcile::backend::health_of(docker_state, st.health.as_ref());
        body.running = docker_state == DockerState::Running;
        body.paused = docker_state == DockerState::Paused;
        body.docker_status = Some(st.status.map(|s| s.to_string()));
        body.exit_code = st.exit_code;
        body.started_at = st.started_at;
        body.finished_at = st.finished_at;
        body.restart_count = info.restart_count.unwrap_or(0);
        body.ports = ports;
        // As in the representation: a node only while a task runs there (a stopped one's
        // last container is still read for its exit code and times).
        if body.running || body.paused {
            body.endpoints = crate::representation::endpoints_at(
                &c.spec.ports,
                node.as_deref(),
                address.as_deref(),
            );
            body.node = node;
        } else {
            body.endpoints = Vec::new();
        }
        body.source = StatusSource::Docker;
    }
    Ok(Json(body))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
