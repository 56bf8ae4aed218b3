//! Checks before a container goes from not running to running, so the client gets a clear
//! answer instead of compose's stderr.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use serde_json::json;

use crate::config::Config;
use crate::error::{ApiCode, ApiError, ApiResult};
use crate::spec::{Port, Spec};

/// Before a container goes from not running to running: clear answers instead of compose's
/// stderr for a missing `boot.py` and for host ports another program holds.
pub fn check_startable(config: &Config, cuid: &str, spec: &Spec) -> ApiResult<()> {
    let capped = spec.resources.disk_bytes.is_some();
    // A capped `/app` not mounted yet (after a reboot) cannot be looked into here; the
    // reconciler mounts it before the start.
    let unmounted =
        capped && !crate::appdir::disk::is_mounted(&crate::appdir::disk::volume_dir(config, cuid));
    let default_boot = !unmounted
        && spec.command.is_none()
        && config.boot_command.iter().any(|a| a == "/app/boot.py");
    if default_boot {
        let boot = crate::appdir::mounts::app_dir(config, cuid, capped).join("boot.py");
        let present = std::fs::symlink_metadata(&boot)
            .is_ok_and(|m| m.is_file() || m.file_type().is_symlink());
        if !present {
            return Err(ApiError::state(
                ApiCode::BootScriptMissing,
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
                    ApiCode::PortInUse,
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

/// The runtimes the Docker daemon offers (`docker info`'s `Runtimes`), sorted.
pub async fn daemon_runtimes(
    docker: &bollard::Docker,
) -> Result<Vec<String>, bollard::errors::Error> {
    let info = docker.info().await?;
    let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    names.sort();
    Ok(names)
}

/// `isolation` needs its runtime registered with the daemon: asked on create and on a patch
/// that names it, so a client hears `400 RUNTIME_UNAVAILABLE` at once rather than a
/// container that never starts. `runc` is Docker's own and always there: no call.
pub async fn check_runtime(
    state: &crate::state::AppState,
    isolation: crate::spec::Isolation,
) -> ApiResult<()> {
    if isolation == crate::spec::Isolation::Runc {
        return Ok(());
    }
    let docker = state
        .docker
        .get()
        .await
        .map_err(|e| crate::error::docker_unavailable(&e))?;
    let runtimes = daemon_runtimes(&docker)
        .await
        .map_err(|e| crate::error::docker_unavailable(&e))?;
    let runtime = state.config.runtime_of(isolation);
    if runtimes.iter().any(|r| r == runtime) {
        return Ok(());
    }
    Err(ApiError::field(
        ApiCode::RuntimeUnavailable,
        "isolation",
        json!(isolation.as_str()),
        format!(
            "isolation `{}` needs the Docker runtime `{runtime}`, which the daemon does not offer (scripts/setup-gvisor.sh registers `runsc`)",
            isolation.as_str()
        ),
    )
    .with_details(json!({"field": "isolation", "provided": isolation.as_str(), "runtime": runtime, "runtimes": runtimes})))
}

/// The limits a spec is validated against (create, PATCH, fork): the server's settings.
pub fn spec_limits(state: &crate::state::AppState) -> crate::spec::Limits {
    crate::spec::Limits {
        env_max_bytes: state.config.env_max_bytes,
        default_isolation: state.config.default_isolation,
        default_egress: crate::spec::Egress::parse(state.config.default_egress).unwrap_or_default(),
        max_ttl: state.config.max_ttl,
        // Under MAX_TTL a create without a lifetime gets DEFAULT_TTL, else MAX_TTL.
        default_lifetime: state
            .config
            .default_ttl
            .or(state.config.max_ttl)
            .map(|ttl| crate::spec::Lifetime {
                ttl,
                on_expiry: crate::spec::OnExpiry::Stop,
            }),
        ..crate::spec::Limits::from_host(state.config.port_bind_ip)
    }
}

/// What the backend (`BACKEND`) cannot do with a spec, refused before anything is stored:
/// `placement` needs a Swarm, and must fit one of its ready nodes now; a Swarm cannot run
/// gVisor (a service spec names no runtime), cap `/app` (a loop mount lives on one host) or
/// enforce an egress policy (iptables rules of one host).
pub async fn check_backend(state: &crate::state::AppState, spec: &Spec) -> ApiResult<()> {
    if state.config.backend.swarm().is_none() {
        if let Some(p) = &spec.placement {
            return Err(ApiError::field(
                ApiCode::PlacementNeedsSwarm,
                "placement",
                json!(p),
                "`placement` needs BACKEND=swarm: this server runs every container on one host",
            ));
        }
        return Ok(());
    }
    let refuse = |field: &str, value: serde_json::Value, why: &str| {
        Err(ApiError::field(
            ApiCode::NotSupportedOnSwarm,
            field,
            value,
            format!("`{field}` cannot be honoured with BACKEND=swarm: {why}"),
        ))
    };
    if spec.isolation != crate::spec::Isolation::Runc {
        return refuse(
            "isolation",
            json!(spec.isolation.as_str()),
            "a Swarm service names no runtime",
        );
    }
    if let Some(disk) = &spec.resources.disk {
        return refuse(
            "resources.disk",
            json!(disk),
            "a disk cap is a loop mount on one host",
        );
    }
    if spec.network.egress != crate::spec::Egress::Internet {
        return refuse(
            "network.egress",
            json!(spec.network.egress.as_str()),
            "egress rules are iptables rules of one host",
        );
    }
    let Some(placement) = &spec.placement else {
        return Ok(());
    };
    let docker = state
        .docker
        .get()
        .await
        .map_err(|e| crate::error::docker_unavailable(&e))?;
    let nodes = crate::docker::swarm_nodes(&docker)
        .await
        .map_err(|e| crate::error::docker_unavailable(&e))?;
    let fits = |n: &crate::docker::SwarmNode| {
        placement.constraints.iter().all(|c| {
            let Some((attr, eq, value)) = crate::spec::placement::split(c) else {
                return false;
            };
            let have = match attr {
                "node.hostname" => Some(n.name.as_str()),
                "node.role" => Some(n.role.as_str()),
                "node.id" => Some(n.id.as_str()),
                _ => match attr.strip_prefix("node.labels.") {
                    Some(key) => n.labels.get(key).map(String::as_str),
                    // Platform and engine labels: Swarm decides.
                    None => return true,
                },
            };
            (have == Some(value)) == eq
        })
    };
    if nodes
        .iter()
        .any(|n| n.state == "ready" && n.availability == "active" && fits(n))
    {
        return Ok(());
    }
    let seen: Vec<_> = nodes
        .iter()
        .map(|n| json!({"name": n.name, "state": n.state, "labels": n.labels}))
        .collect();
    Err(ApiError::field(
        ApiCode::PlacementUnsatisfiable,
        "placement",
        json!(placement),
        "no ready node of the Swarm satisfies these constraints",
    )
    .with_details(
        json!({"field": "placement", "constraints": placement.constraints, "nodes": seen}),
    ))
}
