//! `ports`: host and container ports, protocol and host address, with duplicates refused
//! per protocol.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::error::{Invalid, Rule};
use super::{reject_unknown, Limits, Port};

const MAX_PORTS: usize = 256;
const PORT_FIELDS: &[&str] = &["host", "container", "protocol", "host_ip"];

pub(super) fn parse_ports(v: Value, limits: &Limits) -> Result<Vec<Port>, Invalid> {
    let Value::Array(items) = v else {
        return Err(Invalid::field(
            Rule::InvalidPorts,
            "ports",
            v,
            "ports must be a list",
        ));
    };
    if items.len() > MAX_PORTS {
        return Err(Invalid::field(
            Rule::InvalidPorts,
            "ports",
            json!(items.len()),
            format!("at most {MAX_PORTS} ports"),
        ));
    }
    let mut ports: Vec<Port> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("ports[{i}]");
        let Value::Object(map) = item else {
            return Err(Invalid::field(
                Rule::InvalidPort,
                prefix,
                item,
                "each port is an object {host, container, protocol}",
            ));
        };
        reject_unknown(&map, PORT_FIELDS, &format!("{prefix}."))?;
        let number = |key: &str| -> Result<u16, Invalid> {
            let v = map.get(key).cloned().unwrap_or(Value::Null);
            // `443.0` is the number 443 (JSON has one number type, and JSON Schema's
            // `integer` accepts it).
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .filter(|n| (1..=65535).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| {
                    Invalid::field(
                        Rule::InvalidPort,
                        format!("{prefix}.{key}"),
                        v,
                        format!("{key} must be a port number in 1-65535"),
                    )
                })
        };
        let host = number("host")?;
        let container = number("container")?;
        let protocol = match map.get("protocol") {
            None | Some(Value::Null) => "tcp".to_owned(),
            Some(Value::String(p)) if p == "tcp" || p == "udp" => p.clone(),
            Some(other) => {
                return Err(Invalid::field(
                    Rule::InvalidProtocol,
                    format!("{prefix}.protocol"),
                    other.clone(),
                    "protocol must be tcp or udp",
                ))
            }
        };
        let host_ip = match map.get("host_ip") {
            None | Some(Value::Null) => limits.default_host_ip,
            Some(Value::String(s)) if s.parse::<IpAddr>().is_ok() => {
                s.parse().unwrap_or(limits.default_host_ip)
            }
            Some(other) => {
                return Err(Invalid::field(
                    Rule::InvalidHostIp,
                    format!("{prefix}.host_ip"),
                    other.clone(),
                    "host_ip must be an IP address",
                ))
            }
        };
        if ports
            .iter()
            .any(|p| p.host == host && p.protocol == protocol)
        {
            return Err(Invalid::field(
                Rule::DuplicatePort,
                format!("{prefix}.host"),
                json!(host),
                format!("host port {host}/{protocol} appears twice"),
            ));
        }
        ports.push(Port {
            host,
            container,
            protocol,
            host_ip: host_ip.to_string(),
        });
    }
    Ok(ports)
}
