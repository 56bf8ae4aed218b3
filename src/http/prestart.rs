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
