//! `GET /healthz` (authenticated, docs/API.md §7) and `GET /livez` (open, reveals nothing).

use std::time::Duration;

use crate::http::schema::{Health, HealthNode, HealthStatus, HealthUserns};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use crate::spec::Isolation;
use crate::state::AppState;

/// Each probe gets this long, and they run together: the answer comes within 2 s even when
/// the daemon's socket is dead or the database is locked.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[utoipa::path(get, path = "/livez", tag = "meta", summary = "Liveness (no auth)", security(), responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
pub async fn livez() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/healthz", tag = "meta", summary = "Health of Docker and the database", responses((status = 200, description = "Healthy", body = crate::http::schema::Health), (status = 503, description = "Degraded", body = crate::http::schema::Health), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let docker = async {
        // The version and the runtimes, in one probe (two Engine calls at once).
        let version = async {
            let docker = state.docker.get().await?;
            let (version, runtimes) = tokio::join!(
                docker.version(),
                crate::http::prestart::daemon_runtimes(&docker)
            );
            Ok::<_, bollard::errors::Error>((version?, runtimes?))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, version).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let database = async {
        match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    // `null` when the daemon does not answer.
    let userns = async {
        let ask = tokio::time::timeout(PROBE_TIMEOUT, state.docker.userns()).await;
        ask.ok().and_then(Result::ok).flatten()
    };
    let nodes = async {
        if state.config.backend.swarm().is_none() {
            return Ok(None);
        }
        tokio::time::timeout(PROBE_TIMEOUT, swarm_nodes(&state))
            .await
            .unwrap_or_else(|_| Err("the manager did not answer in time".to_owned()))
            .map(Some)
    };
    let (docker, database, userns, nodes) = tokio::join!(docker, database, userns, nodes);
    let compose_version = state.compose_version.as_ref().clone();

    // Compose runs nothing with `BACKEND=swarm`; the manager must answer as one.
    let backend_ok = match state.config.backend.swarm() {
        None => compose_version.is_some(),
        Some(_) => nodes.is_ok(),
    };
    let healthy = docker.is_ok() && database.is_ok() && backend_ok;
    let body = Health {
        status: if healthy {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        compose_version,
        docker_version: docker.as_ref().ok().and_then(|(v, _)| v.version.clone()),
        docker_api_version: docker
            .as_ref()
            .ok()
            .and_then(|(v, _)| v.api_version.clone()),
        docker: match (&docker, &nodes) {
            (Ok(_), Ok(_)) => "ok".to_owned(),
            (Err(e), _) => format!("unreachable: {e}"),
            (Ok(_), Err(e)) => format!("not a swarm manager: {e}"),
        },
        database: match &database {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("unreachable: {e}"),
        },
        instance_id: state.identity.instance_id.clone(),
        isolations: match &docker {
            Ok((_, runtimes)) => Isolation::ALL
                .into_iter()
                .filter(|i| runtimes.iter().any(|r| r == state.config.runtime_of(*i)))
                .collect(),
            Err(_) => Vec::new(),
        },
        runtimes: docker.map(|(_, r)| r).unwrap_or_default(),
        userns: userns.map(|u| HealthUserns {
            uid: u.uid,
            gid: u.gid,
        }),
        backend: state.config.backend.as_str().to_owned(),
        nodes: match nodes {
            Ok(nodes) => nodes,
            Err(_) => Some(Vec::new()),
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The Swarm's nodes from the manager, each with a ping of its own Engine API (all at once).
async fn swarm_nodes(state: &AppState) -> Result<Vec<HealthNode>, String> {
    let manager = state.docker.get().await.map_err(|e| e.to_string())?;
    let nodes = crate::docker::swarm_nodes(&manager)
        .await
        .map_err(|e| e.to_string())?;
    let pings = nodes.iter().map(|n| async {
        let Some(engine) = state.nodes.of(&n.name) else {
            // The manager itself is reached through DOCKER_HOST.
            return if n.role == "manager" && state.nodes.names().next().is_none() {
                "ok".to_owned()
            } else {
                "not configured".to_owned()
            };
        };
        let ping = async { engine.get().await?.ping().await };
        match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("unreachable: {}", crate::docker::error_chain(&e)),
            Err(_) => "unreachable: timed out".to_owned(),
        }
    });
    let engines = futures_util::future::join_all(pings).await;
    Ok(nodes
        .into_iter()
        .zip(engines)
        .map(|(n, engine)| HealthNode {
            endpoint: state
                .nodes
                .of(&n.name)
                .and_then(|e| e.endpoint())
                .map(|e| e.url().to_owned()),
            storage: state.nodes.storage.get(&n.name).or_else(|| {
                (n.role == "manager" && state.nodes.names().next().is_none())
                    .then(|| state.nodes.storage.get(crate::appdir::shared::MANAGER))
                    .flatten()
            }),
            name: n.name,
            role: n.role,
            state: n.state,
            availability: n.availability,
            address: n.address,
            labels: n.labels,
            engine,
        })
        .collect())
}
