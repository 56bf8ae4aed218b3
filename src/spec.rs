//! The container spec a client may send, and its validation.
//!
//! Bodies are validated field by field from parsed JSON (not by serde derive) so that every
//! mistake has its own stable code and `details.field`, and so that nothing a client sends can
//! reach the compose file except through these typed fields.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::UserIds;
use crate::error::ApiError;

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 64;
const MAX_ENV_VARS: usize = 1024;
const MAX_ENV_VALUE: usize = 128 * 1024;
const MAX_PORTS: usize = 256;
const MAX_COMMAND_ARGS: usize = 1024;

/// The JSON type of a value, for messages ("must be a string, not number").
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `c` + a UUID in its hyphenated lower-case form: anything else in a path is `404`.
pub fn is_cuid(s: &str) -> bool {
    s.len() == 37
        && s.starts_with('c')
        && uuid::Uuid::try_parse(&s[1..]).is_ok_and(|u| u.hyphenated().to_string() == s[1..])
}

pub fn new_cuid() -> String {
    format!("c{}", uuid::Uuid::new_v4().hyphenated())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub host: u16,
    pub container: u16,
    pub protocol: String,
    pub host_ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// As the client gave it (`"4096m"`), echoed back.
    pub memory: Option<String>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
}

/// Everything a client can set about a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: Resources,
    pub ports: Vec<Port>,
    pub command: Option<Vec<String>>,
    pub restart: String,
    pub user: Option<String>,
}

/// Facts about the host that validation needs.
#[derive(Clone, Debug)]
pub struct Limits {
    pub host_cpus: f64,
    pub default_host_ip: IpAddr,
}

impl Limits {
    pub fn from_host(default_host_ip: IpAddr) -> Self {
        Self {
            host_cpus: host_cpus() as f64,
            default_host_ip,
        }
    }
}

/// CPUs Docker counts when it checks `cpus` (`runtime.NumCPU`: the online CPUs).
fn host_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Counts a kernel CPU list such as `0-3,5`.
fn count_cpu_list(s: &str) -> Option<usize> {
    s.split(',').try_fold(0usize, |acc, part| {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
        Some(acc + n)
    })
}

/// What `POST /containers` takes: the spec plus `start`.
pub struct CreateRequest {
    pub spec: Spec,
    pub start: bool,
}

const CREATE_FIELDS: &[&str] = &[
    "image",
    "env",
    "tags",
    "resources",
    "ports",
    "command",
    "restart",
    "user",
    "start",
];
const PATCH_FIELDS: &[&str] = &[
    "image",
    "env",
    "tags",
    "resources",
    "command",
    "restart",
    "user",
];
const RESOURCE_FIELDS: &[&str] = &["cpus", "memory", "pids"];
const PORT_FIELDS: &[&str] = &["host", "container", "protocol", "host_ip"];

fn reject_unknown(
    map: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => {
            let field = format!("{prefix}{k}");
            let hint = if prefix.is_empty() && k == "ports" {
                " (ports are changed with PATCH /containers/{cuid}/ports)"
            } else {
                ""
            };
            Err(ApiError::field(
                "UNKNOWN_FIELD",
                field.clone(),
                Value::String(k.clone()),
                format!("unknown field `{field}`{hint}"),
            ))
        }
    }
}

pub fn parse_create(
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<CreateRequest, ApiError> {
    reject_unknown(&body, CREATE_FIELDS, "")?;
    let image = match body.remove("image") {
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "MISSING_IMAGE",
                "image",
                Value::Null,
                "Image is required",
            ))
        }
        Some(v) => parse_image(v)?,
    };
    let env = match body.remove("env") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => parse_env_map(v, false)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    };
    let tags = match body.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_tags(v)?,
    };
    let mut resources = Resources::default();
    if let Some(v) = body.remove("resources").filter(|v| !v.is_null()) {
        merge_resources(&mut resources, v, limits)?;
    }
    let ports = match body.remove("ports") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_ports(v, limits)?,
    };
    let command = parse_command(body.remove("command").unwrap_or(Value::Null))?;
    let restart = match body.remove("restart") {
        None | Some(Value::Null) => "on-failure".to_owned(),
        Some(v) => parse_restart(v)?,
    };
    let user = parse_user(body.remove("user").unwrap_or(Value::Null))?;
    let start = match body.remove("start") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(v) => {
            return Err(ApiError::field(
                "INVALID_START",
                "start",
                v,
                "`start` must be a boolean",
            ))
        }
    };
    Ok(CreateRequest {
        spec: Spec {
            image,
            env,
            tags,
            resources,
            ports,
            command,
            restart,
            user,
        },
        start,
    })
}

/// Applies a `PATCH /containers/{cuid}` body to a spec: `env` merges (`null` removes a key),
/// `tags` replace, `resources` merge (`null` clears a limit), the rest replace (`null` on
/// `command`/`user` goes back to the default).
pub fn apply_patch(
    spec: &Spec,
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<Spec, ApiError> {
    reject_unknown(&body, PATCH_FIELDS, "")?;
    let mut next = spec.clone();
    if let Some(v) = body.remove("image") {
        if v.is_null() {
            return Err(ApiError::field(
                "MISSING_IMAGE",
                "image",
                Value::Null,
                "Image is required",
            ));
        }
        next.image = parse_image(v)?;
    }
    if let Some(v) = body.remove("env").filter(|v| !v.is_null()) {
        for (name, value) in parse_env_map(v, true)? {
            match value {
                Some(value) => next.env.insert(name, value),
                None => next.env.remove(&name),
            };
        }
        if next.env.len() > MAX_ENV_VARS {
            return Err(ApiError::field(
                "INVALID_ENV",
                "env",
                json!(next.env.len()),
                format!("at most {MAX_ENV_VARS} variables"),
            ));
        }
    }
    if let Some(v) = body.remove("tags") {
        next.tags = if v.is_null() {
            Vec::new()
        } else {
            parse_tags(v)?
        };
    }
    if let Some(v) = body.remove("resources").filter(|v| !v.is_null()) {
        merge_resources(&mut next.resources, v, limits)?;
    }
    if let Some(v) = body.remove("command") {
        next.command = parse_command(v)?;
    }
    if let Some(v) = body.remove("restart") {
        next.restart = if v.is_null() {
            "on-failure".to_owned()
        } else {
            parse_restart(v)?
        };
    }
    if let Some(v) = body.remove("user") {
        next.user = parse_user(v)?;
    }
    Ok(next)
}

/// `PATCH /containers/{cuid}/ports`: `{"ports": [...]}`, replacing the list.
pub fn parse_ports_body(
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<Vec<Port>, ApiError> {
    reject_unknown(&body, &["ports"], "")?;
    match body.remove("ports") {
        None => Err(ApiError::field(
            "MISSING_PORTS",
            "ports",
            Value::Null,
            "`ports` is required",
        )),
        Some(Value::Null) => Ok(Vec::new()),
        Some(v) => parse_ports(v, limits),
    }
}

fn parse_image(v: Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if is_image_reference(&s) => Ok(s),
        Value::String(s) if s.is_empty() => Err(ApiError::field("MISSING_IMAGE", "image", json!(s), "Image is required")),
        other => Err(ApiError::field(
            "INVALID_IMAGE",
            "image",
            other,
            "image must be an OCI image reference such as `python:3.12-slim` or `registry:5000/team/app@sha256:…`",
        )),
    }
}

/// The OCI / Docker reference grammar: `[domain[:port]/]path[:tag][@digest]`, at most 255
/// characters. Anything that could be read as a flag, a path or YAML is refused by it.
pub fn is_image_reference(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return false;
        };
        let algo_ok = !algo.is_empty()
            && algo.split(['+', '.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let hex_ok = hex.len() >= 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !algo_ok || !hex_ok {
            return false;
        }
    }
    // A tag is after the last ':' that comes after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let mut b = tag.bytes();
        let first_ok = b
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !first_ok
            || tag.len() > 128
            || !b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return false;
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase())
        {
            if !is_domain(first) {
                return false;
            }
            components.remove(0);
        }
    }
    !components.is_empty() && components.iter().all(|c| is_path_component(c))
}

fn is_domain(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

pub fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 256
}

/// Env as sent: values are strings, or (in a patch) `null` to remove the key.
fn parse_env_map(v: Value, allow_null: bool) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let Value::Object(map) = v else {
        // Only the type is echoed: a list like ["DB_PASSWORD=…"] holds secrets.
        let t = type_name(&v);
        return Err(ApiError::field(
            "INVALID_ENV",
            "env",
            json!(t),
            format!("env must be an object of strings, not {t}"),
        ));
    };
    if map.len() > MAX_ENV_VARS {
        return Err(ApiError::field(
            "INVALID_ENV",
            "env",
            json!(map.len()),
            format!("at most {MAX_ENV_VARS} variables"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let field = format!("env.{name}");
        if !is_env_name(&name) {
            return Err(ApiError::field(
                "INVALID_ENV_NAME",
                field,
                Value::String(name),
                "env names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                return Err(ApiError::field(
                    "INVALID_ENV_VALUE",
                    field,
                    Value::Null,
                    "env values cannot hold NUL (a process environment cannot)",
                ))
            }
            Value::String(s) if s.len() > MAX_ENV_VALUE => {
                return Err(ApiError::field(
                    "INVALID_ENV_VALUE",
                    field,
                    json!(s.len()),
                    format!("env values are at most {MAX_ENV_VALUE} bytes"),
                ))
            }
            Value::String(s) => out.push((name, Some(s))),
            Value::Null if allow_null => out.push((name, None)),
            other => {
                // The value itself is not echoed: env values may be secrets.
                let t = type_name(&other);
                return Err(ApiError::field(
                    "INVALID_ENV_VALUE",
                    field,
                    json!(t),
                    format!("env values must be strings, not {t}"),
                ));
            }
        }
    }
    Ok(out)
}

fn is_tag(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= MAX_TAG_LEN
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn parse_tags(v: Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::field(
            "INVALID_TAGS",
            "tags",
            v,
            "tags must be a list of strings",
        ));
    };
    if items.len() > MAX_TAGS {
        return Err(ApiError::field(
            "INVALID_TAGS",
            "tags",
            json!(items.len()),
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("tags[{i}]");
        match item {
            Value::String(s) if is_tag(&s) => {
                if tags.contains(&s) {
                    return Err(ApiError::field("DUPLICATE_TAG", field, Value::String(s), "a tag may appear once"));
                }
                tags.push(s);
            }
            other => {
                return Err(ApiError::field(
                    "INVALID_TAG",
                    field,
                    other,
                    format!("tags are short tokens: a letter or digit, then letters, digits, '.', '_' or '-', at most {MAX_TAG_LEN} characters"),
                ))
            }
        }
    }
    Ok(tags)
}

/// Merges `resources` into `into`; a key set to `null` clears that limit.
fn merge_resources(into: &mut Resources, v: Value, limits: &Limits) -> Result<(), ApiError> {
    let Value::Object(map) = v else {
        return Err(ApiError::field(
            "INVALID_RESOURCES",
            "resources",
            v,
            "resources must be an object",
        ));
    };
    reject_unknown(&map, RESOURCE_FIELDS, "resources.")?;
    for (key, value) in map {
        match (key.as_str(), value) {
            ("cpus", Value::Null) => into.cpus = None,
            ("cpus", v) => into.cpus = Some(parse_cpus(v, limits)?),
            ("memory", Value::Null) => (into.memory, into.memory_bytes) = (None, None),
            ("memory", v) => {
                let (text, bytes) = parse_memory_value(v)?;
                into.memory = Some(text);
                into.memory_bytes = Some(bytes);
            }
            ("pids", Value::Null) => into.pids = None,
            ("pids", v) => match v.as_i64() {
                Some(n) if n >= 1 => into.pids = Some(n),
                _ => {
                    return Err(ApiError::field(
                        "INVALID_PIDS",
                        "resources.pids",
                        v,
                        "pids must be a whole number >= 1",
                    ))
                }
            },
            _ => unreachable!("rejected as unknown above"),
        }
    }
    Ok(())
}

fn parse_cpus(v: Value, limits: &Limits) -> Result<f64, ApiError> {
    let cpus = v.as_f64().filter(|c| c.is_finite() && *c > 0.0);
    match cpus {
        // Docker's granularity is 0.01 CPU.
        Some(c) if c > limits.host_cpus => Err(ApiError::field(
            "INVALID_CPUS",
            "resources.cpus",
            v,
            format!("cpus is above this host's {} CPUs", limits.host_cpus),
        )),
        Some(c) if c < 0.01 => Err(ApiError::field(
            "INVALID_CPUS",
            "resources.cpus",
            v,
            "cpus must be at least 0.01",
        )),
        Some(c) => Ok(c),
        None => Err(ApiError::field(
            "INVALID_CPUS",
            "resources.cpus",
            v,
            "cpus must be a number > 0",
        )),
    }
}

fn parse_memory_value(v: Value) -> Result<(String, i64), ApiError> {
    let text = match &v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        _ => {
            return Err(ApiError::field(
                "INVALID_MEMORY",
                "resources.memory",
                v,
                "memory must look like 4096m, 1g, 512k or a number of bytes",
            ))
        }
    };
    match parse_memory(&text) {
        None => Err(ApiError::field(
            "INVALID_MEMORY",
            "resources.memory",
            v,
            "memory must look like 4096m, 1g, 512k or a number of bytes",
        )),
        Some(bytes) if bytes < MIN_MEMORY_BYTES => Err(ApiError::field(
            "MEMORY_TOO_LOW",
            "resources.memory",
            v,
            "memory must be at least 6m (Docker's minimum)",
        )),
        Some(bytes) => Ok((text, i64::try_from(bytes).unwrap_or(i64::MAX))),
    }
}

/// `4096m`, `1g`, `512k`, `1024b`, `1048576` (case-insensitive; `mb`/`gb`/`kb` too).
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b <= i64::MAX as u64)
}

fn parse_ports(v: Value, limits: &Limits) -> Result<Vec<Port>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::field(
            "INVALID_PORTS",
            "ports",
            v,
            "ports must be a list",
        ));
    };
    if items.len() > MAX_PORTS {
        return Err(ApiError::field(
            "INVALID_PORTS",
            "ports",
            json!(items.len()),
            format!("at most {MAX_PORTS} ports"),
        ));
    }
    let mut ports: Vec<Port> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("ports[{i}]");
        let Value::Object(map) = item else {
            return Err(ApiError::field(
                "INVALID_PORT",
                prefix,
                item,
                "each port is an object {host, container, protocol}",
            ));
        };
        reject_unknown(&map, PORT_FIELDS, &format!("{prefix}."))?;
        let number = |key: &str| -> Result<u16, ApiError> {
            let v = map.get(key).cloned().unwrap_or(Value::Null);
            v.as_u64()
                .filter(|n| (1..=65535).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| {
                    ApiError::field(
                        "INVALID_PORT",
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
                return Err(ApiError::field(
                    "INVALID_PROTOCOL",
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
                return Err(ApiError::field(
                    "INVALID_HOST_IP",
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
            return Err(ApiError::field(
                "DUPLICATE_PORT",
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

fn parse_command(v: Value) -> Result<Option<Vec<String>>, ApiError> {
    let bad = |v: Value| {
        ApiError::field(
            "INVALID_COMMAND",
            "command",
            v,
            "command must be a non-empty list of strings (argv)",
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_COMMAND_ARGS => {
            let args: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().filter(|s| !s.contains('\0')).map(str::to_owned))
                .collect();
            args.map(Some).ok_or_else(|| bad(Value::Array(items)))
        }
        other => Err(bad(other)),
    }
}

fn parse_restart(v: Value) -> Result<String, ApiError> {
    match v.as_str() {
        Some(p @ ("no" | "on-failure" | "always" | "unless-stopped")) => Ok(p.to_owned()),
        _ => Err(ApiError::field(
            "INVALID_RESTART",
            "restart",
            v,
            "restart must be no, on-failure, always or unless-stopped",
        )),
    }
}

fn parse_user(v: Value) -> Result<Option<String>, ApiError> {
    match &v {
        Value::Null => Ok(None),
        Value::String(s) => match UserIds::parse(s) {
            Some(ids) => Ok(Some(ids.to_string())),
            None => Err(ApiError::field(
                "INVALID_USER",
                "user",
                v,
                "user must be uid:gid numbers, e.g. 1000:1000",
            )),
        },
        _ => Err(ApiError::field(
            "INVALID_USER",
            "user",
            v,
            "user must be uid:gid numbers, e.g. 1000:1000",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            host_cpus: 2.0,
            default_host_ip: "0.0.0.0".parse().unwrap(),
        }
    }

    fn create(v: Value) -> Result<CreateRequest, ApiError> {
        parse_create(v.as_object().unwrap().clone(), &limits())
    }

    fn code(v: Value) -> String {
        create(v)
            .err()
            .map(|e| e.code.into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn image_references() {
        for ok in [
            "python:3.12-slim",
            "busybox",
            "cm-test-busybox:latest",
            "library/python",
            "localhost:5000/team/app:v1.2",
            "registry.example.com/a/b/c",
            "my__app",
            "a-b--c",
            "python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_image_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "x\n  privileged: true",
            "--help",
            "../x",
            "/abs",
            "Upper",
            "a:",
            ":tag",
            "a//b",
            "a:b:c",
            "a@sha256:short",
            "-lead",
            "trail-",
            "a..b",
        ] {
            assert!(!is_image_reference(bad), "{bad:?}");
        }
        assert!(!is_image_reference(&"a".repeat(256)));
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("4096m"), Some(4096 << 20));
        assert_eq!(parse_memory("1g"), Some(1 << 30));
        assert_eq!(parse_memory("512k"), Some(512 << 10));
        assert_eq!(parse_memory("1048576"), Some(1048576));
        assert_eq!(parse_memory("2GB"), Some(2 << 30));
        for bad in ["", "m", "1t", "1.5g", "-1m", "99999999999999999999g", "1 g"] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3,5"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn each_field_has_its_code() {
        let cases = [
            (json!({}), "MISSING_IMAGE"),
            (json!({"image": "a b"}), "INVALID_IMAGE"),
            (
                json!({"image": "x", "env": {"1A": "v"}}),
                "INVALID_ENV_NAME",
            ),
            (json!({"image": "x", "env": {"A": 1}}), "INVALID_ENV_VALUE"),
            (json!({"image": "x", "env": []}), "INVALID_ENV"),
            (json!({"image": "x", "tags": ["a,b"]}), "INVALID_TAG"),
            (json!({"image": "x", "tags": "a"}), "INVALID_TAGS"),
            (
                json!({"image": "x", "resources": {"cpus": 0}}),
                "INVALID_CPUS",
            ),
            (
                json!({"image": "x", "resources": {"cpus": 3}}),
                "INVALID_CPUS",
            ),
            (
                json!({"image": "x", "resources": {"memory": "lots"}}),
                "INVALID_MEMORY",
            ),
            (
                json!({"image": "x", "resources": {"memory": "1m"}}),
                "MEMORY_TOO_LOW",
            ),
            (
                json!({"image": "x", "resources": {"pids": 0}}),
                "INVALID_PIDS",
            ),
            (
                json!({"image": "x", "resources": {"gpus": 1}}),
                "UNKNOWN_FIELD",
            ),
            (
                json!({"image": "x", "ports": [{"host": 0, "container": 80}]}),
                "INVALID_PORT",
            ),
            (
                json!({"image": "x", "ports": [{"host": 1, "container": 80, "protocol": "sctp"}]}),
                "INVALID_PROTOCOL",
            ),
            (
                json!({"image": "x", "ports": [{"host": 1, "container": 80, "host_ip": "nope"}]}),
                "INVALID_HOST_IP",
            ),
            (
                json!({"image": "x", "ports": [{"host": 1, "container": 80}, {"host": 1, "container": 81}]}),
                "DUPLICATE_PORT",
            ),
            (
                json!({"image": "x", "ports": [{"host": 1, "container": 80, "privileged": true}]}),
                "UNKNOWN_FIELD",
            ),
            (json!({"image": "x", "user": "root"}), "INVALID_USER"),
            (json!({"image": "x", "command": "sh"}), "INVALID_COMMAND"),
            (
                json!({"image": "x", "restart": "sometimes"}),
                "INVALID_RESTART",
            ),
            (json!({"image": "x", "privileged": true}), "UNKNOWN_FIELD"),
        ];
        for (body, want) in cases {
            assert_eq!(code(body.clone()), want, "{body}");
        }
    }

    #[test]
    fn same_port_on_other_protocol_is_fine() {
        let r = create(
            json!({"image": "x", "ports": [{"host": 53, "container": 53}, {"host": 53, "container": 53, "protocol": "udp"}]}),
        );
        assert_eq!(r.unwrap().spec.ports.len(), 2);
    }

    #[test]
    fn patch_merges_env_and_resources_and_replaces_tags() {
        let base = create(json!({"image": "x", "env": {"A": "1", "B": "2"}, "tags": ["t1"], "resources": {"cpus": 1, "pids": 10}}))
            .unwrap()
            .spec;
        let patch = json!({"env": {"A": null, "C": "3"}, "tags": ["t2", "t3"], "resources": {"pids": 20, "cpus": null}});
        let next = apply_patch(&base, patch.as_object().unwrap().clone(), &limits()).unwrap();
        assert_eq!(
            next.env,
            BTreeMap::from([("B".into(), "2".into()), ("C".into(), "3".into())])
        );
        assert_eq!(next.tags, vec!["t2", "t3"]);
        assert_eq!(next.resources.pids, Some(20));
        assert_eq!(next.resources.cpus, None);
    }
}
