//! `POST /tokens`, `GET /tokens`, `DELETE /tokens/{id}` (admin): scoped API tokens
//! (docs/API.md §13). The secret is in the `201` answer only; the store keeps its SHA-256.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiCode, ApiError, ApiResult};
use crate::http::extract::JsonObject;
use crate::state::AppState;
use crate::store::tenancy::TokenRow;
use crate::tenancy::{tokens, Scope};

/// Ten years: longer than any sensible token, short enough to stay a valid timestamp.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub tenant: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Set once revoked; a revoked token never authenticates again.
    pub revoked_at: Option<String>,
}

/// The answer to `POST /tokens`: the token and, this once, its secret.
#[derive(Serialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: Token,
    /// The secret: `cm_` and 43 base64url characters. Shown only here.
    #[serde(rename = "token")]
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

fn token_of(state: &AppState, row: TokenRow) -> Token {
    let last_used_at = state
        .tenancy
        .tokens
        .unflushed_use(&row.id)
        .or(row.last_used_at);
    Token {
        scope: Scope::parse(&row.scope).unwrap_or(Scope::Read),
        id: row.id,
        name: row.name,
        tenant: row.tenant,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at,
        revoked_at: row.revoked_at,
    }
}

fn invalid(code: ApiCode, field: &str, provided: &Value, message: impl Into<String>) -> ApiError {
    ApiError::field(code, field, provided.clone(), message)
}

/// The fields of a `POST /tokens` body, checked.
fn parse(body: &Map<String, Value>) -> ApiResult<(String, Scope, Option<String>, Option<i64>)> {
    if let Some(k) = body
        .keys()
        .find(|k| !["name", "scope", "tenant", "expires_in"].contains(&k.as_str()))
    {
        return Err(invalid(
            ApiCode::UnknownField,
            k,
            &Value::String(k.clone()),
            format!("unknown field `{k}`"),
        ));
    }
    let null = Value::Null;
    let name_v = body.get("name").unwrap_or(&null);
    let name = name_v
        .as_str()
        .filter(|n| (1..=64).contains(&n.chars().count()) && !n.chars().any(char::is_control))
        .ok_or_else(|| {
            invalid(
                ApiCode::InvalidTokenName,
                "name",
                name_v,
                "name must be 1-64 characters without control characters",
            )
        })?;
    let scope_v = body.get("scope").unwrap_or(&null);
    let scope = scope_v.as_str().and_then(Scope::parse).ok_or_else(|| {
        invalid(
            ApiCode::InvalidScope,
            "scope",
            scope_v,
            "scope must be read, operate, write or admin",
        )
    })?;
    let tenant = match body.get("tenant").unwrap_or(&null) {
        Value::Null => None,
        Value::String(t) if crate::tenancy::is_tenant_name(t) => Some(t.clone()),
        other => {
            return Err(invalid(
                ApiCode::InvalidTenant,
                "tenant",
                other,
                "tenant must be a tenant's name or null",
            ))
        }
    };
    if tenant.is_some() && scope == Scope::Admin {
        return Err(invalid(
            ApiCode::InvalidScope,
            "scope",
            scope_v,
            "a tenant's token cannot be admin",
        ));
    }
    let expires_in = match body.get("expires_in").unwrap_or(&null) {
        Value::Null => None,
        v => Some(
            v.as_i64()
                .filter(|s| (1..=MAX_EXPIRES_IN).contains(s))
                .ok_or_else(|| {
                    invalid(
                        ApiCode::InvalidExpiresIn,
                        "expires_in",
                        v,
                        format!("expires_in must be whole seconds, 1-{MAX_EXPIRES_IN}, or null"),
                    )
                })?,
        ),
    };
    Ok((name.to_owned(), scope, tenant, expires_in))
}

#[utoipa::path(post, path = "/tokens", operation_id = "create_token", tag = "tenancy", summary = "Mint an API token (admin); its secret is in this answer only", request_body = crate::http::schema::TokenBody, responses((status = 201, description = "The token, with its secret", body = NewToken), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 404, description = "No such tenant", body = crate::http::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let (name, scope, tenant, expires_in) = parse(&body)?;
    if let Some(t) = &tenant {
        if state.tenancy.quotas(t).is_none() {
            return Err(super::tenants::not_found(t));
        }
    }
    let secret = tokens::mint_secret();
    let now = chrono::Utc::now();
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let row = TokenRow {
        id: format!("tok_{}", uuid::Uuid::new_v4().simple()),
        name,
        scope: scope.as_str().to_owned(),
        tenant,
        secret_sha256: tokens::hash(&secret),
        created_at: stamp(now),
        expires_at: expires_in.map(|s| stamp(now + chrono::Duration::seconds(s))),
        last_used_at: None,
        revoked_at: None,
    };
    state.store.insert_token(&row).await?;
    state.tenancy.tokens.add(&row);
    let token = token_of(&state, row);
    Ok((StatusCode::CREATED, Json(NewToken { token, secret })).into_response())
}

#[utoipa::path(get, path = "/tokens", operation_id = "list_tokens", tag = "tenancy", summary = "Every token, without secrets (admin)", responses((status = 200, description = "Tokens", body = TokenList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    let rows = state.store.tokens().await?;
    Ok(Json(TokenList {
        tokens: rows.into_iter().map(|r| token_of(&state, r)).collect(),
    }))
}

#[utoipa::path(delete, path = "/tokens/{id}", operation_id = "revoke_token", tag = "tenancy", summary = "Revoke a token at once (admin)", params(("id" = String, Path, description = "tok_ + 32 hex digits")), responses((status = 204, description = "Revoked"), (status = 404, description = "No live token of this id", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Scope too small (SCOPE_REQUIRED) or cross-origin write", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    // Out of memory first: from here on the token is refused, whatever the store says.
    state.tenancy.tokens.remove(&id);
    if !state.store.revoke_token(&id).await? {
        return Err(
            ApiError::not_found(ApiCode::TokenNotFound, format!("no live token {id}"))
                .with_details(serde_json::json!({"id": id})),
        );
    }
    Ok(StatusCode::NO_CONTENT)
}
