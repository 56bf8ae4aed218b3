//! `GET /ws/{cuid}` (docs/API.md §6): the checks before the upgrade (auth is the middleware's;
//! here: the cuid, the `Origin`, the query), then the session in [`crate::terminal`].

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, RawQuery, State};

use crate::http::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiCode, ApiError, ApiResult, REQUEST_ID};
use crate::http::lease::Lease;
use crate::http::response::{live_container, path_cuid};
use crate::http::{origin, resume};
use crate::state::AppState;
use crate::terminal::{self, Options};

/// The largest client message accepted at the WebSocket layer; a larger one ends the socket
/// without an `error` frame. A valid 64 KiB stdin frame of control characters is 384 KiB
/// of JSON (`\u0001` for each byte), and a frame somewhat over the 64 KiB data limit still
/// reaches the per-frame check, which answers `FRAME_TOO_LARGE` and keeps the session.
const MAX_MESSAGE: usize = 512 * 1024;

#[utoipa::path(get, path = "/ws/{cuid}", tag = "terminal", summary = "WebSocket terminal (docs/API.md §6)", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("cols" = Option<u16>, Query, minimum = 1, maximum = 1000), ("rows" = Option<u16>, Query, minimum = 1, maximum = 1000), ("cmd" = Option<String>, Query), ("main" = Option<bool>, Query), ("attach" = Option<bool>, Query)), responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Origin not allowed", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn ws(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    RawQuery(query): RawQuery,
    lease: Option<Extension<Lease>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(err) = origin::check_origin(&headers) {
        return err.into_response();
    }
    let lease = lease.map(|Extension(l)| l);
    match open(state, cuid, query, lease, upgrade).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn open(
    state: AppState,
    cuid: String,
    query: Option<String>,
    lease: Option<Lease>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?.to_owned();
    let options = parse_options(query.as_deref().unwrap_or(""))?;
    let container = live_container(&state, &cuid).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::validation(
            ApiCode::WebsocketUpgradeRequired,
            format!("this route needs a WebSocket upgrade: {e}"),
        )
    })?;
    // A container its idle policy put to sleep is woken first (docs/API.md, idle); the
    // `101` says how long that took.
    let (_, resumed) = resume::on_use(&state, container, true).await?;
    let crate::reconcile::locate::Located {
        docker,
        container,
        node,
        ..
    } = crate::http::locate(&state, &cuid).await?;

    let inspect = docker
        .inspect_container(
            &container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    let (running, run_since) = match inspect {
        Ok(info) => {
            let st = info.state.unwrap_or_default();
            let running =
                crate::lifecycle::DockerState::of(&st) == crate::lifecycle::DockerState::Running;
            let time =
                |s: Option<&str>| s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            (
                running,
                terminal::console::run_since(
                    time(st.started_at.as_deref()),
                    time(st.finished_at.as_deref()),
                ),
            )
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => (false, None),
        Err(e) => return Err(crate::error::docker_unavailable(&e)),
    };
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    if !running {
        // Built here, inside the request, so the frame carries this request's id.
        let err = ApiError::state(
            ApiCode::ContainerNotRunning,
            format!("container {cuid} is not running"),
        )
        .with_details(json!({"cuid": cuid}));
        let frame = super::error_map::error_frame(&err);
        return Ok(upgrade.on_upgrade(move |socket| terminal::refuse(socket, frame)));
    }
    // In use for as long as the session lasts: the idle policy leaves it alone.
    let in_use = state.idle.terminal(&cuid);
    // The session also ends (as at shutdown: its processes are ended) when the sign-in that
    // opened it does: a sign-out, an expiry, a revoked token.
    let stop = state.shutdown.child_token();
    let stop_guard = stop.clone().drop_guard();
    if let Some(lease) = lease {
        let (stop, state) = (stop.clone(), state.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = lease.ended(state) => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }
    // On a Swarm node: the session ends (`NODE_LOST`) once the Swarm sees that node down.
    let node_lost = tokio_util::sync::CancellationToken::new();
    if let Some(node) = node.clone() {
        let mut down = state.nodes.down();
        let (lost, stop) = (node_lost.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = down.wait_for(|d| d.contains(&node)) => if r.is_ok() { lost.cancel() },
                () = stop.cancelled() => {}
            }
        });
    }
    let ctx = terminal::Ctx {
        docker,
        cuid,
        container,
        run_since,
        options,
        shutdown: stop,
        request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
        error_frame: super::error_map::terminal_error_frame,
        node,
        node_lost,
    };
    let mut response = upgrade.on_upgrade(move |socket| async move {
        let _in_use = in_use;
        let _stop_guard = stop_guard; // the session's end stops its lease watch
        terminal::run(socket, ctx).await
    });
    if let Some(took) = resumed {
        response
            .headers_mut()
            .insert(resume::SERVER_TIMING, resume::server_timing(took));
    }
    Ok(response)
}

fn parse_bool(name: &str, value: &str) -> ApiResult<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::field(
            ApiCode::InvalidQuery,
            name,
            json!(value),
            format!("{name} must be true or false"),
        )),
    }
}

fn parse_dim(name: &str, value: &str) -> ApiResult<u16> {
    value
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| {
            ApiError::field(
                ApiCode::InvalidQuery,
                name,
                json!(value),
                format!("{name} must be an integer from 1 to 1000"),
            )
        })
}

/// `cols`, `rows`, `cmd`, `main`, `attach`.
pub fn parse_options(query: &str) -> ApiResult<Options> {
    let pairs: HashMap<String, String> = serde_urlencoded_pairs(query)?;
    for key in pairs.keys() {
        if !["cols", "rows", "cmd", "main", "attach"].contains(&key.as_str()) {
            return Err(ApiError::field(
                ApiCode::InvalidQuery,
                key.clone(),
                json!(pairs[key]),
                format!("unknown query parameter {key:?}"),
            ));
        }
    }
    let cols = pairs
        .get("cols")
        .map(|v| parse_dim("cols", v))
        .transpose()?;
    let rows = pairs
        .get("rows")
        .map(|v| parse_dim("rows", v))
        .transpose()?;
    let tty = match (cols, rows) {
        (None, None) => None,
        (c, r) => Some((c.unwrap_or(80), r.unwrap_or(24))),
    };
    let cmd = pairs.get("cmd").cloned();
    if cmd.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(ApiError::field(
            ApiCode::InvalidQuery,
            "cmd",
            json!(cmd),
            "cmd must not be empty",
        ));
    }
    let main = pairs
        .get("main")
        .map(|v| parse_bool("main", v))
        .transpose()?
        .unwrap_or(true);
    let attach = pairs
        .get("attach")
        .map(|v| parse_bool("attach", v))
        .transpose()?
        .unwrap_or(false);
    if attach && cmd.is_some() {
        return Err(ApiError::validation(
            ApiCode::InvalidQuery,
            "attach=true and cmd cannot be combined",
        ));
    }
    Ok(Options {
        tty: if attach { None } else { tty },
        cmd,
        main,
        attach,
    })
}

fn serde_urlencoded_pairs(query: &str) -> ApiResult<HashMap<String, String>> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{query}").parse().map_err(|_| {
            ApiError::validation(ApiCode::InvalidQuery, "the query string is malformed")
        })?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::validation(ApiCode::InvalidQuery, e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options("").unwrap();
        assert_eq!(
            o,
            Options {
                tty: None,
                cmd: None,
                main: true,
                attach: false
            }
        );
        let o = parse_options("cols=120&rows=40&cmd=sleep%20100&main=false").unwrap();
        assert_eq!(o.tty, Some((120, 40)));
        assert_eq!(o.cmd.as_deref(), Some("sleep 100"));
        assert!(!o.main);
        assert!(parse_options("attach=true").unwrap().attach);
        for bad in [
            "cols=0",
            "rows=abc",
            "main=maybe",
            "attach=true&cmd=ls",
            "cmd=",
            "x=1",
        ] {
            let e = parse_options(bad).unwrap_err();
            assert_eq!(e.code, "INVALID_QUERY", "{bad}");
        }
    }
}
