//! Tenants' quotas at the API's writes (docs/API.md §13): what a create, a start or a patch
//! asks for, checked against the tenant's usage under its write lock, so the check and the
//! write it allows are one step (two racing creates cannot both take the last slot).

use serde_json::{json, Map, Value};
use tokio::sync::OwnedMutexGuard;

use crate::config::Config;
use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::spec::Spec;
use crate::state::AppState;
use crate::tenancy::quotas::{Breach, Quotas, Usage};
use crate::tenancy::Principal;

/// The tenant a new container belongs to: the principal's own, or for a principal without a
/// tenant, the body's `tenant` field (taken out of the body before the spec is read).
pub fn tenant_of_create(
    state: &AppState,
    principal: &Principal,
    body: &mut Map<String, Value>,
) -> ApiResult<Option<String>> {
    let asked = match body.remove("tenant") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t),
        Some(other) => {
            return Err(invalid_tenant(
                other,
                "tenant must be a tenant's name or null",
            ))
        }
    };
    let tenant = match (&principal.tenant, asked) {
        (Some(mine), Some(asked)) if *mine != asked => {
            return Err(invalid_tenant(
                json!(asked),
                "a tenant's token creates containers in its own tenant only",
            ))
        }
        (Some(mine), _) => Some(mine.clone()),
        (None, asked) => asked,
    };
    if let Some(t) = &tenant {
        if state.tenancy.quotas(t).is_none() {
            return Err(invalid_tenant(json!(t), "no tenant of this name"));
        }
    }
    Ok(tenant)
}

fn invalid_tenant(provided: Value, message: &str) -> ApiError {
    ApiError::field(ApiCode::InvalidTenant, "tenant", provided, message)
}

/// What one container of `spec` takes from its tenant's quotas; `running` if it is started.
/// A tenant with a CPU, memory or pids quota must have that limit on each container (the
/// server's default counts), or the quota would mean nothing.
pub fn requested(quotas: &Quotas, config: &Config, spec: &Spec, running: bool) -> ApiResult<Usage> {
    let cpus = spec.resources.cpus.or(config.default_cpus);
    let memory = spec.resources.memory_bytes.or(config.default_memory);
    let pids = spec.resources.pids;
    // `DEFAULT_DISK` is written into the spec at create: the spec's cap is the effective one.
    let disk = spec.resources.disk_bytes;
    for (quota, set, field) in [
        (
            "max_cpus",
            quotas.max_cpus.is_some() && cpus.is_none(),
            "resources.cpus",
        ),
        (
            "max_memory",
            quotas.max_memory.is_some() && memory.is_none(),
            "resources.memory",
        ),
        (
            "max_pids",
            quotas.max_pids.is_some() && pids.is_none(),
            "resources.pids",
        ),
        (
            "max_disk",
            quotas.max_disk.is_some() && disk.is_none(),
            "resources.disk",
        ),
    ] {
        if set {
            return Err(ApiError::field(
                ApiCode::LimitRequired,
                field,
                Value::Null,
                format!("the tenant has a {quota} quota: set {field}"),
            ));
        }
    }
    Ok(Usage {
        containers: 1,
        running: i64::from(running),
        cpus: cpus.unwrap_or(0.0),
        memory: memory.unwrap_or(0),
        pids: pids.unwrap_or(0),
        disk: disk.unwrap_or(0),
    })
}

/// `403 QUOTA_EXCEEDED` for the host ports of `spec` outside the tenant's range.
pub fn check_ports(tenant: &str, quotas: &Quotas, spec: &Spec) -> ApiResult<()> {
    match quotas.port_outside(spec.ports.iter().map(|p| p.host)) {
        None => Ok(()),
        Some(port) => Err(exceeded(
            tenant,
            Breach {
                quota: "ports",
                limit: json!(quotas.ports.map(|r| r.to_string())),
                used: Value::Null,
                requested: json!(port),
            },
        )),
    }
}

fn exceeded(tenant: &str, breach: Breach) -> ApiError {
    ApiError::new(
        Kind::Forbidden,
        ApiCode::QuotaExceeded,
        format!("tenant {tenant} is at its {} quota", breach.quota),
    )
    .with_details(json!({
        "tenant": tenant,
        "quota": breach.quota,
        "limit": breach.limit,
        "used": breach.used,
        "requested": breach.requested,
    }))
}

/// Takes the tenant's write lock and checks that `requested` fits: hold the guard until the
/// write it allows has committed.
pub async fn admit(
    state: &AppState,
    tenant: &str,
    requested: &Usage,
) -> ApiResult<OwnedMutexGuard<()>> {
    let guard = state.tenancy.lock_writes(tenant).await;
    let quotas = state.tenancy.quotas(tenant).unwrap_or_default();
    let used = super::tenants::usage_of(state, tenant).await?;
    check_usage(tenant, &quotas, &used, requested)?;
    Ok(guard)
}

/// `403 QUOTA_EXCEEDED` if `requested` on top of `used` breaks one of `quotas`.
pub fn check_usage(
    tenant: &str,
    quotas: &Quotas,
    used: &Usage,
    requested: &Usage,
) -> ApiResult<()> {
    match quotas.check(used, requested) {
        None => Ok(()),
        Some(breach) => Err(exceeded(tenant, breach)),
    }
}

/// The tenant's quotas, or `None` when the container has no tenant.
pub fn quotas_of(state: &AppState, tenant: Option<&str>) -> Option<(String, Quotas)> {
    let t = tenant?;
    Some((t.to_owned(), state.tenancy.quotas(t).unwrap_or_default()))
}

/// What a spec change adds: the growth of each limit (shrinking frees nothing for others
/// while the patch is checked, and never breaches).
pub fn growth(quotas: &Quotas, config: &Config, old: &Spec, new: &Spec) -> ApiResult<Usage> {
    let before = requested(&Quotas::default(), config, old, false)?;
    // A cap cannot be added to a container made without one (`DISK_CHANGE_REFUSED`): such a
    // container, made before its tenant had a `max_disk`, must stay patchable.
    let uncapped;
    let quotas = if old.resources.disk_bytes.is_none() {
        uncapped = Quotas {
            max_disk: None,
            ..quotas.clone()
        };
        &uncapped
    } else {
        quotas
    };
    let after = requested(quotas, config, new, false)?;
    Ok(Usage {
        containers: 0,
        running: 0,
        cpus: (after.cpus - before.cpus).max(0.0),
        memory: (after.memory - before.memory).max(0),
        pids: (after.pids - before.pids).max(0),
        disk: (after.disk - before.disk).max(0),
    })
}

/// A tenant's quotas held for one spec change of a container: the lock and the usage read
/// under it. `None` when the container has no tenant.
pub struct SpecChange {
    tenant: String,
    quotas: Quotas,
    used: Usage,
    _guard: OwnedMutexGuard<()>,
}

impl SpecChange {
    pub async fn begin(state: &AppState, cuid: &str) -> ApiResult<Option<SpecChange>> {
        let owner = state.store.tenant_of(cuid).await?.flatten();
        let Some((tenant, quotas)) = quotas_of(state, owner.as_deref()) else {
            return Ok(None);
        };
        let guard = state.tenancy.lock_writes(&tenant).await;
        let used = super::tenants::usage_of(state, &tenant).await?;
        Ok(Some(SpecChange {
            tenant,
            quotas,
            used,
            _guard: guard,
        }))
    }

    /// Checks the change from `old` to `new`: its host ports, and the growth of its limits.
    pub fn check(&self, config: &Config, old: &Spec, new: &Spec) -> ApiResult<()> {
        check_ports(&self.tenant, &self.quotas, new)?;
        let grows = growth(&self.quotas, config, old, new)?;
        check_usage(&self.tenant, &self.quotas, &self.used, &grows)
    }
}
