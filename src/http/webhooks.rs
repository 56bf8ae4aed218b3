//! `POST /webhooks`, `GET /webhooks`, `GET|PATCH|DELETE /webhooks/{id}`,
//! `GET /webhooks/{id}/deliveries` (docs/API.md §14). The operator's webhooks need `admin`
//! and get every container's events; a tenant's `write` token manages its tenant's webhooks,
//! which get only that tenant's containers' events. Another tenant's webhook does not exist.
//! The secret is write-only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::extract::JsonObject;
use crate::state::AppState;
use crate::store::webhooks::{AttemptRow, WebhookRow};
use crate::tenancy::{Principal, Scope};
use crate::webhooks::address::{self, UrlError};

/// Webhooks one owner (a tenant, or the operator) may have.
pub const MAX_WEBHOOKS: usize = 50;
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;
/// Time a create or patch spends resolving a URL's host name.
const RESOLVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// A webhook as shown: never its secret.
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    /// `wh_` + 32 hex digits.
    pub id: String,
    pub url: String,
    /// Event kinds, or `["*"]`.
    pub events: Vec<String>,
    /// Only containers carrying one of these tags; `null`: every container.
    #[schema(required = true)]
    pub tags: Option<Vec<String>>,
    /// The tenant it belongs to; `null`: the operator's (every container's events).
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// Events waiting to be delivered.
    pub pending: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// What `POST /webhooks` takes (`PATCH` takes any of it).
#[derive(Serialize, ToSchema)]
pub struct WebhookBody {
    #[schema(example = "http://hooks.example.com/cm")]
    pub url: String,
    #[schema(example = json!(["died", "oom"]))]
    pub events: Vec<String>,
    pub tags: Option<Vec<String>>,
    /// The HMAC key of `X-CM-Signature`: 16-256 printable characters. Never answered.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: String,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// The `X-CM-Delivery` id (the same across the attempts of one delivery).
    pub delivery: String,
    pub event: String,
    pub cuid: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at: String,
    /// The receiver's HTTP status; `null` when none came (see `error`).
    #[schema(required = true)]
    pub status_code: Option<i64>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub latency_ms: i64,
    /// `delivered`, `retrying` (another attempt is due) or `failed` (given up).
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    pub deliveries: Vec<Attempt>,
}

/// The tenant whose webhooks the caller manages (`None`: the operator's, which needs
/// `admin`; a tenant's need `write`, which the scope layer checked).
fn owner(p: &Principal) -> ApiResult<Option<String>> {
    if p.tenant.is_none() && p.scope < Scope::Admin {
        return Err(ApiError::new(
            Kind::Forbidden,
            ApiCode::ScopeRequired,
            format!(
                "the operator's webhooks need a token with scope `admin`; this one has `{}`",
                p.scope.as_str()
            ),
        )
        .with_details(json!({"required": "admin", "scope": p.scope.as_str()})));
    }
    Ok(p.tenant.clone())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(ApiCode::WebhookNotFound, format!("no webhook {id}"))
        .with_details(json!({"id": id}))
}

/// The webhook, if the caller may see it: its own tenant's, or any for the operator.
async fn visible(state: &AppState, p: &Principal, id: &str) -> ApiResult<WebhookRow> {
    let tenant = owner(p)?;
    match state.store.webhook(id).await? {
        Some(row) if tenant.is_none() || row.tenant == tenant => Ok(row),
        _ => Err(not_found(id)),
    }
}

fn shown(row: WebhookRow, pending: i64) -> Webhook {
    Webhook {
        events: serde_json::from_str(&row.events).unwrap_or_default(),
        tags: row
            .tags
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok()),
        id: row.id,
        url: row.url,
        tenant: row.tenant,
        pending,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

async fn url_of(state: &AppState, v: Option<&Value>) -> ApiResult<String> {
    let Some(Value::String(url)) = v else {
        return Err(ApiError::field(
            ApiCode::InvalidWebhookUrl,
            "url",
            v.cloned().unwrap_or(Value::Null),
            "url must be a string: http://host[:port]/path",
        ));
    };
    let config = &state.config;
    match address::check_url(
        url,
        &config.webhooks.allowlist,
        config.listen_addr.ip(),
        RESOLVE_WITHIN,
    )
    .await
    {
        Ok(_) => Ok(url.clone()),
        Err(UrlError::Invalid(why)) => Err(ApiError::field(
            ApiCode::InvalidWebhookUrl,
            "url",
            json!(url),
            why,
        )),
        Err(UrlError::Forbidden(why)) => Err(ApiError::field(
            ApiCode::WebhookUrlForbidden,
            "url",
            json!(url),
            why,
        )),
    }
}

fn events_of(v: Option<&Value>) -> ApiResult<String> {
    let bad = |provided: Value, why: String| {
        ApiError::field(ApiCode::InvalidWebhookEvents, "events", provided, why)
    };
    let known = || {
        let mut k: Vec<&str> = crate::webhooks::KINDS.to_vec();
        k.push("*");
        k.join(", ")
    };
    let Some(Value::Array(items)) = v else {
        return Err(bad(
            v.cloned().unwrap_or(Value::Null),
            format!("events must be a non-empty list of: {}", known()),
        ));
    };
    if items.is_empty() {
        return Err(bad(
            json!([]),
            format!("events must name at least one of: {}", known()),
        ));
    }
    let mut events: Vec<String> = Vec::new();
    for item in items {
        match item.as_str() {
            Some(e) if e == "*" || crate::webhooks::KINDS.contains(&e) => {
                if !events.iter().any(|x| x == e) {
                    events.push(e.to_owned());
                }
            }
            _ => {
                return Err(bad(
                    item.clone(),
                    format!("unknown event kind; the kinds are: {}", known()),
                ))
            }
        }
    }
    Ok(Value::from(events).to_string())
}

fn tags_of(v: Option<&Value>) -> ApiResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items))
            if !items.is_empty()
                && items.len() <= 64
                && items
                    .iter()
                    .all(|t| t.as_str().is_some_and(crate::spec::is_tag)) =>
        {
            Ok(Some(Value::Array(items.clone()).to_string()))
        }
        Some(other) => Err(ApiError::field(
            ApiCode::InvalidWebhookTags,
            "tags",
            other.clone(),
            "tags must be null (every container) or a list of 1-64 tags (a container carrying any of them)",
        )),
    }
}

fn secret_of(v: Option<&Value>) -> ApiResult<String> {
    match v {
        Some(Value::String(s))
            if (MIN_SECRET..=MAX_SECRET).contains(&s.len())
                && s.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(s.clone())
        }
        // The value is not echoed: it is a secret.
        _ => Err(ApiError::field(
            ApiCode::InvalidWebhookSecret,
            "secret",
            Value::Null,
            format!(
                "secret must be a string of {MIN_SECRET}-{MAX_SECRET} printable ASCII characters"
            ),
        )),
    }
}

fn unknown_fields(body: &Map<String, Value>) -> ApiResult<()> {
    const FIELDS: [&str; 4] = ["url", "events", "tags", "secret"];
    match body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        Some(k) => Err(ApiError::field(
            ApiCode::UnknownField,
            k.clone(),
            json!(k),
            format!("unknown field `{k}`; a webhook has {}", FIELDS.join(", ")),
        )),
        None => Ok(()),
    }
}

fn stamp() -> String {
    crate::store::now()
}

#[utoipa::path(post, path = "/webhooks", operation_id = "create_webhook", tag = "webhooks", summary = "Create a webhook (admin; a tenant's write token: for its containers)", request_body = WebhookBody, responses((status = 201, description = "The webhook (without its secret)", body = Webhook), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "Too many webhooks", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let tenant = owner(&principal)?;
    unknown_fields(&body)?;
    let url = url_of(&state, body.get("url")).await?;
    let events = events_of(body.get("events"))?;
    let tags = tags_of(body.get("tags"))?;
    let secret = secret_of(body.get("secret"))?;
    let existing = state.store.webhooks(tenant.as_deref()).await?;
    let mine = existing.iter().filter(|w| w.tenant == tenant).count();
    if mine >= MAX_WEBHOOKS {
        return Err(ApiError::conflict(
            ApiCode::TooManyWebhooks,
            format!("at most {MAX_WEBHOOKS} webhooks per tenant (and for the operator)"),
        )
        .with_details(json!({"limit": MAX_WEBHOOKS})));
    }
    let now = stamp();
    let row = WebhookRow {
        id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        url,
        events,
        tags,
        secret,
        tenant,
        created_at: now.clone(),
        updated_at: now,
    };
    state.store.insert_webhook(&row).await?;
    Ok((StatusCode::CREATED, Json(shown(row, 0))).into_response())
}

#[utoipa::path(get, path = "/webhooks", operation_id = "list_webhooks", tag = "webhooks", summary = "The caller's webhooks (every one for the operator)", responses((status = 200, description = "Webhooks", body = WebhookList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<WebhookList>> {
    let tenant = owner(&principal)?;
    let rows = state.store.webhooks(tenant.as_deref()).await?;
    let pending = state.store.webhook_pending().await?;
    Ok(Json(WebhookList {
        webhooks: rows
            .into_iter()
            .map(|r| {
                let n = pending.get(&r.id).copied().unwrap_or(0);
                shown(r, n)
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks", summary = "One webhook", params(("id" = String, Path, description = "wh_ + 32 hex digits")), responses((status = 200, description = "The webhook", body = Webhook), (status = 404, description = "No such webhook", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    let row = visible(&state, &principal, &id).await?;
    let pending = state.store.webhook_pending().await?;
    let n = pending.get(&row.id).copied().unwrap_or(0);
    Ok(Json(shown(row, n)))
}

#[utoipa::path(patch, path = "/webhooks/{id}", operation_id = "patch_webhook", tag = "webhooks", summary = "Change a webhook's url, events, tags or secret", params(("id" = String, Path, description = "wh_ + 32 hex digits")), request_body = WebhookBody, responses((status = 200, description = "The webhook", body = Webhook), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 404, description = "No such webhook", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Webhook>> {
    let mut row = visible(&state, &principal, &id).await?;
    unknown_fields(&body)?;
    if body.contains_key("url") {
        row.url = url_of(&state, body.get("url")).await?;
    }
    if body.contains_key("events") {
        row.events = events_of(body.get("events"))?;
    }
    if body.contains_key("tags") {
        row.tags = tags_of(body.get("tags"))?;
    }
    if body.contains_key("secret") {
        row.secret = secret_of(body.get("secret"))?;
    }
    row.updated_at = stamp();
    if !state.store.update_webhook(&row).await? {
        return Err(not_found(&id));
    }
    // A new URL may make waiting deliveries worth trying now.
    state.webhooks.wake();
    let pending = state.store.webhook_pending().await?;
    let n = pending.get(&row.id).copied().unwrap_or(0);
    Ok(Json(shown(row, n)))
}

#[utoipa::path(delete, path = "/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks", summary = "Delete a webhook and its undelivered events", params(("id" = String, Path, description = "wh_ + 32 hex digits")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such webhook", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    visible(&state, &principal, &id).await?;
    if !state.store.delete_webhook(&id).await? {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn attempt_of(a: AttemptRow) -> Attempt {
    Attempt {
        delivery: a.delivery_id,
        event: a.kind,
        cuid: a.cuid,
        attempt: a.attempt,
        at: a.at,
        status_code: a.status_code,
        error: a.error,
        latency_ms: a.latency_ms,
        outcome: a.outcome,
    }
}

#[utoipa::path(get, path = "/webhooks/{id}/deliveries", operation_id = "webhook_deliveries", tag = "webhooks", summary = "The webhook's recent delivery attempts, newest first (the last 200)", params(("id" = String, Path, description = "wh_ + 32 hex digits")), responses((status = 200, description = "Attempts", body = AttemptList), (status = 404, description = "No such webhook", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED)", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<AttemptList>> {
    let row = visible(&state, &principal, &id).await?;
    let rows = state
        .store
        .webhook_attempts(&row.id, crate::webhooks::HISTORY)
        .await?;
    Ok(Json(AttemptList {
        deliveries: rows.into_iter().map(attempt_of).collect(),
    }))
}
