//! What an authenticated principal may reach (docs/API.md §13): the scope each route needs,
//! its tenant's request rate, and the rule that another tenant's container does not exist.
//! Runs inside [`super::auth::require_auth`], which put the [`Principal`] in the request.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiCode, ApiError, Kind};
use crate::state::AppState;
use crate::tenancy::{Principal, Scope};

/// The scope a request needs, from its method and path alone (so the answer never depends
/// on whether a container exists).
pub fn required(method: &Method, path: &str) -> Scope {
    let under =
        |root: &str| path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'));
    if under("/tokens") || under("/tenants") {
        return Scope::Admin;
    }
    if under("/session") {
        return Scope::Read;
    }
    // A tenant's `write` token manages its own webhooks; the operator's need `admin`, which
    // the handlers check (the rule here sees no principal).
    if under("/webhooks") {
        return Scope::Write;
    }
    if under("/images") && *method != Method::GET && *method != Method::HEAD {
        return Scope::Admin;
    }
    if under("/ws") {
        return Scope::Operate;
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Scope::Read;
    }
    // Writes on a container: `/containers/{cuid}/{action}` and uploads are operations; the
    // container itself (create, patch, delete, its ports) is a write.
    match path
        .strip_prefix("/containers/")
        .map(|rest| rest.split_once('/'))
    {
        // Snapshots, restore and fork change what a container holds or make one: `write`.
        Some(Some((_, sub)))
            if sub == "snapshots"
                || sub.starts_with("snapshots/")
                || sub == "restore"
                || sub == "fork" =>
        {
            Scope::Write
        }
        // Single-file operations in /app (upload, delete, move, new folder) change what the
        // container holds, item by item: `write` (the ZIP upload stays an operation).
        Some(Some((_, sub))) if sub == "files" || sub.starts_with("files/") => Scope::Write,
        // An update changes the image the container runs: a write.
        Some(Some((_, sub))) if sub != "ports" && sub != "update" => Scope::Operate,
        _ => Scope::Write,
    }
}

/// Routes for the operator only: server-wide figures and images shared by every tenant.
fn operator_only(path: &str) -> bool {
    path == "/metrics"
}

/// The container a path names: `/containers/{cuid}…` or `/ws/{cuid}`, percent-decoded as
/// the handlers' `Path` extractor decodes it (`c%31…` must not slip past as another name).
fn container_of(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/containers/")
        .or_else(|| path.strip_prefix("/ws/"))?;
    let raw = rest.split('/').next()?;
    let cuid = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    (!cuid.is_empty()).then_some(cuid)
}

pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        // A public route: authentication let it through without a principal.
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let needed = required(request.method(), &path);
    if !principal.may(needed) {
        return ApiError::new(
            Kind::Forbidden,
            ApiCode::ScopeRequired,
            format!(
                "this request needs a token with scope `{}`; this one has `{}`",
                needed.as_str(),
                principal.scope.as_str()
            ),
        )
        .with_details(json!({"required": needed.as_str(), "scope": principal.scope.as_str()}))
        .into_response();
    }
    let Some(tenant) = principal.tenant.as_deref() else {
        record_use(&state, &path).await;
        return next.run(request).await;
    };
    if operator_only(&path) {
        return ApiError::new(
            Kind::Forbidden,
            ApiCode::TenantForbidden,
            "server-wide figures are for principals without a tenant",
        )
        .into_response();
    }
    if let Some(rps) = state
        .tenancy
        .quotas(tenant)
        .and_then(|q| q.requests_per_second)
    {
        if let Err(wait) = state.tenancy.rates.take(tenant, rps, Instant::now()) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return ApiError::new(
                Kind::RateLimited,
                ApiCode::TenantRateLimited,
                format!("tenant `{tenant}` is over its {rps} requests per second"),
            )
            .with_details(json!({"retry_after": secs, "requests_per_second": rps}))
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            .into_response();
        }
    }
    if let Some(cuid) = container_of(&path) {
        match state.store.tenant_of(&cuid).await {
            // Another tenant's container (or the operator's) is answered exactly as a
            // container that does not exist.
            Ok(Some(owner)) if !principal.sees(owner.as_deref()) => {
                return ApiError::from(crate::store::containers::not_found(&cuid)).into_response()
            }
            Ok(_) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    record_use(&state, &path).await;
    next.run(request).await
}

/// A request that uses a container (docs/API.md, idle): `/containers/{cuid}/…` but its
/// `status`, and `/ws/{cuid}`. Reading the container's own record (`GET /containers/{cuid}`,
/// `…/status`), changing its spec (`PATCH`) or the list do not count: a dashboard that
/// watches it does not keep it awake.
fn used_container(path: &str) -> Option<String> {
    if path.starts_with("/ws/") {
        return container_of(path);
    }
    let rest = path.strip_prefix("/containers/")?;
    let (_, sub) = rest.split_once('/')?;
    if sub.is_empty() || sub == "status" || sub == "ports" {
        return None;
    }
    container_of(path)
}

/// Starts the idle clock of the container a request uses again (in memory).
async fn record_use(state: &AppState, path: &str) {
    if let Some(cuid) = used_container(path).filter(|c| crate::spec::is_cuid(c)) {
        state.idle.touch(&cuid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_use_of_a_container() {
        let c = "c123e4567-e89b-12d3-a456-426614174000";
        for used in [
            format!("/containers/{c}/start"),
            format!("/containers/{c}/upload-zip"),
            format!("/containers/{c}/files"),
            format!("/containers/{c}/logs"),
            format!("/containers/{c}/stats"),
            format!("/ws/{c}"),
        ] {
            assert_eq!(used_container(&used).as_deref(), Some(c), "{used}");
        }
        for not in [
            format!("/containers/{c}"),
            format!("/containers/{c}/"),
            format!("/containers/{c}/status"),
            format!("/containers/{c}/ports"),
            "/containers".to_owned(),
            "/events".to_owned(),
        ] {
            assert_eq!(used_container(&not), None, "{not}");
        }
    }

    #[test]
    fn each_route_class_needs_its_scope() {
        let cases = [
            (Method::GET, "/containers", Scope::Read),
            (Method::GET, "/containers/c1/logs", Scope::Read),
            (Method::GET, "/containers/c1/download-zip", Scope::Read),
            (Method::GET, "/events", Scope::Read),
            (Method::GET, "/images", Scope::Read),
            (Method::POST, "/containers/c1/stop", Scope::Operate),
            (Method::POST, "/containers/c1/upload-zip", Scope::Operate),
            (Method::GET, "/ws/c1", Scope::Operate),
            (Method::POST, "/containers", Scope::Write),
            (Method::PATCH, "/containers/c1", Scope::Write),
            (Method::PATCH, "/containers/c1/ports", Scope::Write),
            (Method::DELETE, "/containers/c1", Scope::Write),
            (Method::GET, "/containers/c1/snapshots", Scope::Read),
            (Method::POST, "/containers/c1/snapshots", Scope::Write),
            (Method::DELETE, "/containers/c1/snapshots/s1", Scope::Write),
            (Method::POST, "/containers/c1/restore", Scope::Write),
            (Method::POST, "/containers/c1/fork", Scope::Write),
            (Method::GET, "/containers/c1/files", Scope::Read),
            (Method::PUT, "/containers/c1/files", Scope::Write),
            (Method::DELETE, "/containers/c1/files", Scope::Write),
            (Method::POST, "/containers/c1/files/move", Scope::Write),
            (Method::POST, "/containers/c1/files/mkdir", Scope::Write),
            (Method::POST, "/images/pull", Scope::Admin),
            (Method::DELETE, "/images/busybox:1", Scope::Admin),
            (Method::GET, "/tokens", Scope::Admin),
            (Method::DELETE, "/tenants/a", Scope::Admin),
            (Method::POST, "/session/ticket", Scope::Read),
            (Method::DELETE, "/session", Scope::Read),
        ];
        for (method, path, scope) in cases {
            assert_eq!(required(&method, path), scope, "{method} {path}");
        }
        // A path that merely starts like a guarded one is not it.
        assert_eq!(required(&Method::GET, "/tokensx"), Scope::Read);
    }

    #[test]
    fn the_container_of_a_path() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(container_of("/containers/c1"), some("c1"));
        assert_eq!(container_of("/containers/c1/files"), some("c1"));
        assert_eq!(container_of("/ws/c1"), some("c1"));
        assert_eq!(container_of("/containers/%63%31/logs"), some("c1"));
        assert_eq!(container_of("/containers"), None);
        assert_eq!(container_of("/containers/"), None);
    }
}
