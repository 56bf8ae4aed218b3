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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Pause,
    Unpause,
}

/// What an action does to desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Already there: `200` at once.
    Noop,
    Set {
        desired: &'static str,
        restart: bool,
        /// The container goes from not running to running: check `boot.py` and host ports.
        starting: bool,
    },
}

/// The allowed transitions (API.md §4), from desired state and observed status.
pub fn plan(verb: Verb, desired: &str, status: &str) -> Result<Plan, ApiError> {
    // `error` may be a container still running in Docker (a failed recreate): its own
    // published ports must not count as taken, so it is not probed as "starting".
    let running_now = matches!(status, "running" | "restarting" | "paused" | "error");
    let invalid = || {
        ApiError::state(
            "INVALID_TRANSITION",
            format!(
                "cannot {} a container that is {status}",
                format!("{verb:?}").to_lowercase()
            ),
        )
        .with_details(json!({"status": status, "desired_state": desired}))
    };
    let set = |desired, restart, starting| Plan::Set {
        desired,
        restart,
        starting,
    };
    match verb {
        Verb::Start if status == "paused" || desired == "paused" => Err(invalid()),
        // A finished job is run again, and the answer waits for that new run (also when a
        // `stop` just asked for has not been observed yet).
        Verb::Start if status == "exited" => Ok(set("running", true, true)),
        Verb::Start if desired == "running" && matches!(status, "running" | "restarting") => {
            Ok(Plan::Noop)
        }
        Verb::Start => Ok(set("running", false, !running_now)),
        Verb::Stop
            if matches!(desired, "stopped" | "created")
                && matches!(status, "stopped" | "created") =>
        {
            Ok(Plan::Noop)
        }
        Verb::Stop => Ok(set("stopped", false, false)),
        Verb::Restart => Ok(set("running", true, !running_now)),
        Verb::Pause if desired == "paused" && status == "paused" => Ok(Plan::Noop),
        Verb::Pause if desired == "running" && status == "running" => {
            Ok(set("paused", false, false))
        }
        Verb::Pause => Err(invalid()),
        Verb::Unpause if status == "paused" => Ok(set("running", false, false)),
        Verb::Unpause => Err(invalid()),
    }
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
            match plan(verb, &current.desired_state, &current.status)? {
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
    if matches!(c.desired_state.as_str(), "running" | "paused") {
        return finish(state, c, wait, &since).await;
    }
    Ok(container_response(StatusCode::OK, &c))
}

/// True once observed state matches desired state for the current generation.
fn settled(c: &Container) -> bool {
    let status_ok = match c.desired_state.as_str() {
        // A main process may end on its own right after starting: that is an answer too.
        "running" => matches!(c.status.as_str(), "running" | "exited" | "restarting"),
        other => c.status == other,
    };
    status_ok && c.observed_generation == c.generation && c.restart_done >= c.restart_requested
}

/// A reconcile failure recorded after `since`, as the answer to the waiting request.
fn failure_since(c: &Container, since: &str) -> Option<ApiError> {
    let e = c.last_error.as_ref()?;
    let at = e["at"].as_str()?;
    if at < since || (c.status != "error" && c.deleted_at.is_none()) {
        return None;
    }
    // A pass that started before this request's change may fail after it: its error is
    // about the previous desire, not this one.
    if e["generation"] != json!(c.generation) || e["desired_at"] != json!(c.desired_at) {
        return None;
    }
    let code = e["code"].as_str().unwrap_or("COMPOSE_FAILED").to_owned();
    let kind = match code.as_str() {
        "IMAGE_NOT_FOUND" => Kind::State,
        "PORT_IN_USE" => Kind::Conflict,
        "DOCKER_UNAVAILABLE" => Kind::Unavailable,
        "IO_ERROR" => Kind::Io,
        _ => Kind::Compose,
    };
    let message = e["message"]
        .as_str()
        .unwrap_or("the change could not be applied")
        .to_owned();
    Some(
        ApiError::new(kind, code, message.clone())
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
        if settled(&c) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Plan, ApiError>) -> String {
        match r {
            Ok(p) => format!("{p:?}"),
            Err(e) => e.code.into_owned(),
        }
    }

    #[test]
    fn transitions() {
        use Verb::*;
        let noop = "Noop".to_owned();
        assert_eq!(code(plan(Start, "running", "running")), noop);
        assert_eq!(code(plan(Stop, "stopped", "stopped")), noop);
        assert_eq!(code(plan(Stop, "created", "created")), noop);
        assert_eq!(
            code(plan(Pause, "stopped", "stopped")),
            "INVALID_TRANSITION"
        );
        assert_eq!(
            code(plan(Pause, "created", "created")),
            "INVALID_TRANSITION"
        );
        assert_eq!(
            code(plan(Unpause, "running", "running")),
            "INVALID_TRANSITION"
        );
        assert_eq!(code(plan(Start, "paused", "paused")), "INVALID_TRANSITION");
        assert_eq!(
            plan(Start, "created", "created").unwrap(),
            Plan::Set {
                desired: "running",
                restart: false,
                starting: true
            }
        );
        assert_eq!(
            plan(Start, "running", "exited").unwrap(),
            Plan::Set {
                desired: "running",
                restart: true,
                starting: true
            }
        );
        assert_eq!(
            plan(Pause, "running", "running").unwrap(),
            Plan::Set {
                desired: "paused",
                restart: false,
                starting: false
            }
        );
        assert_eq!(
            plan(Unpause, "paused", "paused").unwrap(),
            Plan::Set {
                desired: "running",
                restart: false,
                starting: false
            }
        );
        // A start right after a stop that is not observed yet still waits for a new run.
        assert_eq!(
            plan(Start, "stopped", "exited").unwrap(),
            Plan::Set {
                desired: "running",
                restart: true,
                starting: true
            }
        );
        // A container in error may still hold its ports in Docker: no port probe.
        assert_eq!(
            plan(Start, "running", "error").unwrap(),
            Plan::Set {
                desired: "running",
                restart: false,
                starting: false
            }
        );
        // A paused container may be stopped or restarted.
        assert_eq!(
            plan(Stop, "paused", "paused").unwrap(),
            Plan::Set {
                desired: "stopped",
                restart: false,
                starting: false
            }
        );
        assert_eq!(
            plan(Restart, "paused", "paused").unwrap(),
            Plan::Set {
                desired: "running",
                restart: true,
                starting: false
            }
        );
    }
}
