//! `PUT /tenants/{name}`, `GET /tenants`, `GET /tenants/{name}`, `DELETE /tenants/{name}`
//! (admin): tenants, their quotas and their usage (docs/API.md §13).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiCode, ApiError, ApiResult};
use crate::http::extract::JsonObject;
use crate::state::AppState;
use crate::store::tenancy::{TenantDelete, TenantRow};
use crate::tenancy::quotas::{PortRange, Quotas, Usage};

/// A tenant as shown: its quotas (null: no limit) and what it uses now.
#[derive(Serialize, ToSchema)]
pub struct Tenant {
    pub name: String,
    #[schema(value_type = Object)]
    pub quotas: Quotas,
    #[schema(value_type = Object)]
    pub usage: Usage,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::not_found(ApiCode::TenantNotFound, format!("no tenant {name}"))
        .with_details(json!({"tenant": name}))
}

fn checked_name(name: &str) -> ApiResult<&str> {
    if crate::tenancy::is_tenant_name(name) {
        Ok(name)
    } else {
        Err(ApiError::field(
            ApiCode::InvalidTenant,
            "name",
            json!(name),
            "a tenant's name is 1-63 lower-case letters, digits and '-', starting with a letter",
        ))
    }
}

/// The usage of `tenant` as its quotas count it.
pub async fn usage_of(state: &AppState, tenant: &str) -> ApiResult<Usage> {
    let u = state
        .store
        .usage(
            tenant,
            state.config.default_cpus,
            state.config.default_memory,
        )
        .await?;
    Ok(Usage {
        containers: u.containers,
        running: u.running,
        cpus: u.cpus,
        memory: u.memory,
        pids: u.pids,
        disk: u.disk,
    })
}

async fn shown(state: &AppState, row: TenantRow) -> ApiResult<Tenant> {
    Ok(Tenant {
        quotas: Quotas::from_row(&row),
        usage: usage_of(state, &row.name).await?,
        name: row.name,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A quota body: every field optional, `null` or absent is no limit.
fn parse_quotas(name: &str, body: &Map<String, Value>) -> ApiResult<TenantRow> {
    const FIELDS: [&str; 8] = [
        "max_containers",
        "max_running",
        "max_cpus",
        "max_memory",
        "max_pids",
        "max_disk",
        "ports",
        "requests_per_second",
    ];
    if let Some(k) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(
            ApiCode::UnknownField,
            k.clone(),
            json!(k),
            format!("unknown field `{k}`; quotas are {}", FIELDS.join(", ")),
        ));
    }
    let bad = |field: &str, v: &Value, what: &str| {
        ApiError::field(
            ApiCode::InvalidQuota,
            field,
            v.clone(),
            format!("{field} must be {what}, or null for no limit"),
        )
    };
    let count = |field: &str| -> ApiResult<Option<i64>> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (0..=i64::from(u32::MAX)).contains(n))
                .map(Some)
                .ok_or_else(|| bad(field, v, "a whole number >= 0")),
        }
    };
    let max_cpus = match body.get("max_cpus") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|c| c.is_finite() && (0.0..=1e6).contains(c))
                .ok_or_else(|| bad("max_cpus", v, "a number >= 0"))?,
        ),
    };
    // Bytes, or a size as `resources.memory` and `resources.disk` take it (`8g`, `1t`).
    let size = |field: &str| -> ApiResult<Option<i64>> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let bytes = match v {
                    Value::String(s) => crate::spec::parse_size(s),
                    other => other.as_u64(),
                };
                bytes
                    .and_then(|b| i64::try_from(b).ok())
                    .map(Some)
                    .ok_or_else(|| bad(field, v, "bytes or a size such as \"8g\""))
            }
        }
    };
    let max_memory = size("max_memory")?;
    let max_disk = size("max_disk")?;
    let ports = match body.get("ports") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(PortRange::parse)
                .ok_or_else(|| bad("ports", v, "a host-port range \"FIRST-LAST\""))?,
        ),
    };
    let requests_per_second = match body.get("requests_per_second") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e6)
                .ok_or_else(|| bad("requests_per_second", v, "a number > 0"))?,
        ),
    };
    Ok(TenantRow {
        name: name.to_owned(),
        max_containers: count("max_containers")?,
        max_running: count("max_running")?,
        max_cpus,
        max_memory_bytes: max_memory,
        max_pids: count("max_pids")?,
        max_disk_bytes: max_disk,
        port_min: ports.map(|p| i64::from(p.first)),
        port_max: ports.map(|p| i64::from(p.last)),
        requests_per_second,
        created_at: String::new(),
        updated_at: String::new(),
    })
}

#[utoipa::path(put, path = "/tenants/{name}", operation_id = "put_tenant", tag = "tenancy", summary = "Create a tenant or replace its quotas (admin)", params(("name" = String, Path, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", description = "the tenant's name")), request_body = crate::http::schema::QuotasBody, responses((status = 201, description = "Created", body = Tenant), (status = 200, description = "Quotas replaced", body = Tenant), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let name = checked_name(&name)?;
    let wanted = parse_quotas(name, &body)?;
    let (row, created) = state.store.put_tenant(&wanted).await?;
    state.tenancy.set_quotas(&row);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shown(&state, row).await?)).into_response())
}

#[utoipa::path(get, path = "/tenants", operation_id = "list_tenants", tag = "tenancy", summary = "Tenants with their quotas and usage (admin)", responses((status = 200, description = "Tenants", body = TenantList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<TenantList>> {
    let mut tenants = Vec::new();
    for row in state.store.tenants().await? {
        tenants.push(shown(&state, row).await?);
    }
    Ok(Json(TenantList { tenants }))
}

#[utoipa::path(get, path = "/tenants/{name}", operation_id = "get_tenant", tag = "tenancy", summary = "One tenant with its quotas and usage (admin)", params(("name" = String, Path, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", description = "the tenant's name")), responses((status = 200, description = "The tenant", body = Tenant), (status = 404, description = "No such tenant", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Tenant>> {
    let row = state
        .store
        .tenant(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(shown(&state, row).await?))
}

#[utoipa::path(delete, path = "/tenants/{name}", operation_id = "delete_tenant", tag = "tenancy", summary = "Delete a tenant that owns no container, with its tokens (admin)", params(("name" = String, Path, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", description = "the tenant's name")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such tenant", body = crate::http::schema::ErrorBody), (status = 409, description = "It still owns containers (TENANT_NOT_EMPTY)", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    match state.store.delete_tenant(&name).await? {
        TenantDelete::Deleted => {
            state.tenancy.forget(&name);
            Ok(StatusCode::NO_CONTENT)
        }
        TenantDelete::Missing => Err(not_found(&name)),
        TenantDelete::Owns(n) => Err(ApiError::conflict(
            ApiCode::TenantNotEmpty,
            format!("tenant {name} still owns {n} container(s); delete them first"),
        )
        .with_details(json!({"tenant": name, "containers": n}))),
    }
}
