//! Actions (`start`, `stop`, `restart`, `pause`, `unpause`) and waiting for convergence.
//!
//! A request writes desired state, wakes the reconciler and, unless `?wait=false`, waits
//! until observed state matches (or `ACTION_TIMEOUT` passes: `408`, the work goes on).

use std::net::{SocketAddr, TcpListener, UdpSocket};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::config::Config;
use crate::error::{ApiError, ApiResult, Kind};
use crate::http::containers::{container_response, path_cuid};
use crate::http::extract::{Path, Query};
use crate::lifecycle::{plan, ErrorCode, Plan, Status, Verb};
use crate::spec::{Port, Spec};
use crate::store::containers::{Container, Updated};

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Wait {
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

async fn act(state: AppState, cuid: String, wait: Wait, verb: Verb) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?;
    let since = crate::store::now();
    let config = state.config.clone();
    // Planned and checked under the write lock, on the row as it is now: two racing actions
    // cannot both act on a state that one of them already changed.
    let (container, changed) = state
        .store
        .transition(cuid, |current| {
            if current.deleted_at.is_some() {
                return Err(ApiError::state(
                    "CONTAINER_DELETING",
                    "the container is being deleted",
                ));
            }
            match plan(verb, current.desired_state, current.status)? {
                Plan::Noop => Ok(None),
                Plan::Set {
                    desired,
                    restart,
                    starting,
                } => {
                    if starting {
                        check_startable(&config, cuid, &current.spec)?;
                    }
                    Ok(Some((desired, restart)))
                }
            }
        })
        .await?;
    if !changed {
        return Ok(container_response(StatusCode::OK, &container));
    }
    state.reconciler.wake(cuid);
    finish(&state, container, wait, &since).await
}

async fn finish(
    state: &AppState,
    fallback: Container,
    wait: Wait,
    since: &str,
) -> ApiResult<Response> {
    if !wait.wait {
        return Ok(container_response(StatusCode::ACCEPTED, &fallback));
    }
    let c = wait_for(state, &fallback.cuid, since).await?;
    Ok(container_response(StatusCode::OK, &c))
}

pub async fn start(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Start).await
}
pub async fn stop(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Stop).await
}
pub async fn restart(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Restart).await
}
pub async fn pause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Pause).await
}
pub async fn unpause(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(w): Query<Wait>,
) -> ApiResult<Response> {
    act(s, c, w, Verb::Unpause).await
}

/// After a PATCH: a running (or paused) container is recreated by the reconciler and the
/// request waits for it; a created or stopped one only has its file re-rendered.
pub async fn after_spec_change(
    state: &AppState,
    updated: Updated,
    wait: Wait,
) -> ApiResult<Response> {
    let c = updated.container;
    if !updated.changed {
        return Ok(container_response(StatusCode::OK, &c));
    }
    let since = crate::store::now();
    state.reconciler.wake(&c.cuid);
    if c.desired_state.is_up() {
        return finish(state, c, wait, &since).await;
    }
    Ok(container_response(StatusCode::OK, &c))
}

/// A reconcile failure recorded after `since`, as the answer to the waiting request.
fn failure_since(c: &Container, since: &str) -> Option<ApiError> {
    let e = c.last_error.as_ref()?;
    let at = e["at"].as_str()?;
    if at < since || (c.status != Status::Error && c.deleted_at.is_none()) {
        return None;
    }
    // A pass that started before this request's change may fail after it: its error is
    // about the previous desire, not this one.
    if e["generation"] != json!(c.generation) || e["desired_at"] != json!(c.desired_at) {
        return None;
    }
    let code: ErrorCode =
        serde_json::from_value(e["code"].clone()).unwrap_or(ErrorCode::ComposeFailed);
    let message = e["message"]
        .as_str()
        .unwrap_or("the change could not be applied")
        .to_owned();
    Some(
        ApiError::new(code.kind(), code.as_str(), message.clone())
            .with_details(json!({"cuid": c.cuid, "stderr": message, "last_error": e})),
    )
}

fn timeout_error(c: &Container) -> ApiError {
    ApiError::new(
        Kind::Timeout,
        "ACTION_TIMEOUT",
        "the change did not converge in time; it keeps converging",
    )
    .with_details(json!({
        "cuid": c.cuid,
        "desired_state": c.desired_state,
        "status": c.status,
        "generation": c.generation,
        "observed_generation": c.observed_generation,
    }))
}

/// Waits for the container to settle, fail (after `since`) or time out.
async fn wait_for(state: &AppState, cuid: &str, since: &str) -> ApiResult<Container> {
    let mut changes = state.reconciler.subscribe();
    let deadline = tokio::time::Instant::now() + state.config.action_timeout;
    loop {
        changes.borrow_and_update();
        let c = state.store.get_or_404(cuid).await?;
        if let Some(e) = failure_since(&c, since) {
            return Err(e);
        }
        if c.progress().settled() {
            return Ok(c);
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(timeout_error(&c));
        }
    }
}

/// `POST /containers` with `"start": true`.
/// `since` is when the request began: failures recorded after it are its answer.
pub async fn wait_converged(
    state: &AppState,
    cuid: &str,
    wait: Wait,
    since: &str,
) -> ApiResult<Option<Container>> {
    if !wait.wait {
        return Ok(None);
    }
    wait_for(state, cuid, since).await.map(Some)
}

/// Waits until the reconciler has removed the row (Docker objects and files are gone then).
pub async fn wait_deleted(state: &AppState, cuid: &str) -> ApiResult<()> {
    let since = crate::store::now();
    let mut changes = state.reconciler.subscribe();
    let deadline = tokio::time::Instant::now() + state.config.action_timeout;
    loop {
        changes.borrow_and_update();
        let Some(c) = state.store.get(cuid).await? else {
            return Ok(());
        };
        if let Some(e) = failure_since(&c, &since) {
            return Err(e);
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(timeout_error(&c));
        }
    }
}

/// Before a container goes from not running to running: clear answers instead of compose's
/// stderr for a missing `boot.py` and for host ports another program holds.
pub fn check_startable(config: &Config, cuid: &str, spec: &Spec) -> ApiResult<()> {
    let default_boot =
        spec.command.is_none() && config.boot_command.iter().any(|a| a == "/app/boot.py");
    if default_boot {
        let boot = crate::fs::mounts::mount_dir(config, cuid).join("boot.py");
        let present = std::fs::symlink_metadata(&boot)
            .is_ok_and(|m| m.is_file() || m.file_type().is_symlink());
        if !present {
            return Err(ApiError::state(
                "BOOT_SCRIPT_MISSING",
                "the default command runs /app/boot.py, which does not exist: upload it first or set `command`",
            )
            .with_details(json!({"path": "/app/boot.py"})));
        }
    }
    check_ports_free(&spec.ports)
}

/// Tries to bind each host port: one that cannot be bound is held by another program (or
/// this server itself), and compose would fail on it.
pub fn check_ports_free(ports: &[Port]) -> ApiResult<()> {
    for p in ports {
        let ip = p
            .host_ip
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let addr = SocketAddr::new(ip, p.host);
        let free = match p.protocol.as_str() {
            "udp" => UdpSocket::bind(addr).map(drop),
            _ => TcpListener::bind(addr).map(drop),
        };
        if let Err(e) = free {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(ApiError::conflict(
                    "PORT_IN_USE",
                    format!(
                        "host port {}/{} is already in use on this host",
                        p.host, p.protocol
                    ),
                )
                .with_details(
                    json!({"host": p.host, "protocol": p.protocol, "host_ip": p.host_ip}),
                ));
            }
        }
    }
    Ok(())
}
