//! The container spec a client may send, and its validation.
//!
//! Bodies are validated field by field from parsed JSON (not by serde derive) so that every
//! mistake has its own stable code and `details.field`, and so that nothing a client sends can
//! reach the compose file except through these typed fields.
//!
//! This module holds the spec's types and the three bodies (create, patch, ports) with the
//! small fields (tags, command, restart, user); the validators with rules of their own have
//! their own files: [`image`] references, [`env`] names and values, [`ports`], and
//! [`resources`] (cpus, memory, pids).

mod env;
mod error;
pub mod health;
pub mod idle;
mod image;
mod lifetime;
pub mod network;
pub mod placement;
mod ports;
mod resources;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use crate::config::Isolation;
use crate::config::UserIds;

pub use env::{env_bytes, is_env_name, DEFAULT_ENV_MAX_BYTES};
use error::Errors;
pub use error::{Invalid, Rule};
pub use health::{Health, HealthCheck, HttpProbe, OnUnhealthy};
pub use idle::{Idle, IdleAction, MIN_IDLE_AFTER};
pub use image::is_image_reference;
pub use lifetime::{Lifetime, LifetimeIn, OnExpiry, TTL_CEILING};
pub use network::{Allow, Egress, Network};
pub use placement::Placement;
pub use resources::{
    host_cpus, parse_disk_value, parse_memory, parse_size, DEFAULT_TMP_BYTES, MIN_DISK_BYTES,
    MIN_MEMORY_BYTES, MIN_TMP_BYTES,
};

use env::{check_env_size, parse_env_map, MAX_ENV_VARS};
use health::parse_health;
use idle::parse_idle;
use image::parse_image;
use network::parse_network;
use ports::parse_ports;
use resources::merge_resources;

const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 64;
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

/// A published port, as the representation shows it (defaults filled in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Port {
    #[schema(minimum = 1, maximum = 65535)]
    pub host: u16,
    #[schema(minimum = 1, maximum = 65535)]
    pub container: u16,
    /// `tcp` (default) or `udp`.
    #[schema(example = "tcp")]
    pub protocol: String,
    /// Default: the `PORT_BIND_IP` setting.
    pub host_ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    #[schema(required = true)]
    pub cpus: Option<f64>,
    /// As the client gave it (`"4096m"`), echoed back.
    #[schema(required = true)]
    pub memory: Option<String>,
    #[schema(required = true)]
    pub memory_bytes: Option<i64>,
    #[schema(required = true)]
    pub pids: Option<i64>,
    /// The size of `/tmp` under `read_only` (as the client gave it, `"64m"`); `None`:
    /// [`DEFAULT_TMP_BYTES`].
    #[serde(default)]
    pub tmp: Option<String>,
    #[serde(default)]
    pub tmp_bytes: Option<i64>,
    /// The hard cap on `/app` (as the client gave it, `"1g"`); `None`: uncapped. The
    /// server's `DEFAULT_DISK` is filled in at create.
    #[serde(default)]
    pub disk: Option<String>,
    #[serde(default)]
    pub disk_bytes: Option<i64>,
}

/// Docker's restart policy of a container (`restart`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    #[default]
    OnFailure,
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    pub const ALL: [RestartPolicy; 4] = [
        RestartPolicy::No,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
        RestartPolicy::UnlessStopped,
    ];

    /// As compose and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
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
    pub restart: RestartPolicy,
    pub user: Option<String>,
    /// A read-only root filesystem, with `/tmp` a tmpfs of `resources.tmp` and `/app`
    /// writable.
    #[serde(default)]
    pub read_only: bool,
    /// The runtime: `runc` or gVisor's `runsc`. Resolved at create (a later change of
    /// `DEFAULT_ISOLATION` moves no existing container).
    #[serde(default)]
    pub isolation: Isolation,
    /// What the container may reach (enforced by the reconciler's firewall rules).
    #[serde(default)]
    pub network: Network,
    /// A name people know it by: a DNS label, unique among its tenant's live containers
    /// (the store's index makes that race-free).
    #[serde(default)]
    pub name: Option<String>,
    /// What the server does when nobody uses it (`None`: nothing). Not part of the
    /// container Docker runs: a change moves no generation (see `store::desired`).
    #[serde(default)]
    pub idle: Option<Idle>,
    /// The health check Docker runs (`None`: none of ours).
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The server rolls newer digests of the image's tag out by itself (in
    /// `IMAGE_UPDATE_WINDOW`), rolling back a new image that does not come up. A change of
    /// it alone recreates nothing.
    #[serde(default)]
    pub auto_update: bool,
    /// Where it may run on a Swarm (`BACKEND=swarm`): Swarm's placement constraints.
    #[serde(default)]
    pub placement: Option<Placement>,
}

/// Facts about the host that validation needs.
#[derive(Clone, Debug)]
pub struct Limits {
    pub host_cpus: f64,
    pub default_host_ip: IpAddr,
    /// `ENV_MAX_BYTES`: names plus values of one container's env.
    pub env_max_bytes: usize,
    /// `DEFAULT_ISOLATION`: the `isolation` of a create that names none (or `null`).
    pub default_isolation: Isolation,
    /// `DEFAULT_EGRESS`: the policy of a container whose spec names none.
    pub default_egress: Egress,
    /// `MAX_TTL`: the longest `lifetime.ttl` (and, when set, every container has one).
    pub max_ttl: Option<u64>,
    /// `DEFAULT_TTL`: the `lifetime` of a create that names none (`on_expiry` `stop`).
    pub default_lifetime: Option<Lifetime>,
}

impl Limits {
    pub fn from_host(default_host_ip: IpAddr) -> Self {
        Self {
            host_cpus: resources::host_cpus() as f64,
            default_host_ip,
            env_max_bytes: DEFAULT_ENV_MAX_BYTES,
            default_isolation: Isolation::Runc,
            default_egress: Egress::Internet,
            max_ttl: None,
            default_lifetime: None,
        }
    }
}

/// What `POST /containers` takes: the spec plus `start`.
pub struct CreateRequest {
    pub spec: Spec,
    pub start: bool,
    /// Its time limit (`DEFAULT_TTL` filled in), kept beside the spec: a new deadline
    /// recreates nothing.
    pub lifetime: Option<Lifetime>,
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
    "read_only",
    "isolation",
    "network",
    "name",
    "lifetime",
    "idle",
    "health",
    "auto_update",
    "placement",
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
    "read_only",
    "isolation",
    "network",
    "name",
    "lifetime",
    "idle",
    "health",
    "auto_update",
    "placement",
];
fn reject_unknown(map: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), Invalid> {
    match unknown_fields(map, allowed, prefix).into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// One error for each key of `map` not in `allowed`.
fn unknown_fields(map: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Vec<Invalid> {
    map.keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            let field = format!("{prefix}{k}");
            let hint = if prefix.is_empty() && k == "ports" {
                " (ports are changed with PATCH /containers/{cuid}/ports)"
            } else {
                ""
            };
            Invalid::field(
                Rule::UnknownField,
                field.clone(),
                Value::String(k.clone()),
                format!("unknown field `{field}`{hint}"),
            )
        })
        .collect()
}

/// Reads a create body. Every field is read even after one is refused: the error is the
/// first field refused (as when only one was reported) with the others in its `more`.
pub fn parse_create(
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<CreateRequest, Invalid> {
    let mut errors = Errors::default();
    for e in unknown_fields(&body, CREATE_FIELDS, "") {
        errors.push(e);
    }
    let image = match body.remove("image") {
        None | Some(Value::Null) => {
            errors.push(Invalid::field(
                Rule::MissingImage,
                "image",
                Value::Null,
                "Image is required",
            ));
            None
        }
        Some(v) => errors.check(parse_image(v)),
    };
    let env = match body.remove("env") {
        None | Some(Value::Null) => Some(BTreeMap::new()),
        Some(v) => errors.check(parse_env_map(v, false)).map(|env| {
            env.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        }),
    };
    if let Some(env) = &env {
        errors.check(check_env_size(env, limits.env_max_bytes, 0));
    }
    let tags = match body.remove("tags") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(v) => errors.check(parse_tags(v)),
    };
    let mut resources = Resources::default();
    if let Some(v) = body.remove("resources").filter(|v| !v.is_null()) {
        errors.check(merge_resources(&mut resources, v, limits));
    }
    let ports = match body.remove("ports") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(v) => errors.check(parse_ports(v, limits)),
    };
    let command = errors.check(parse_command(body.remove("command").unwrap_or(Value::Null)));
    let restart = match body.remove("restart") {
        None | Some(Value::Null) => Some(RestartPolicy::OnFailure),
        Some(v) => errors.check(parse_restart(v)),
    };
    let user = errors.check(parse_user(body.remove("user").unwrap_or(Value::Null)));
    let read_only = match body.remove("read_only") {
        None | Some(Value::Null) => Some(false),
        Some(v) => errors.check(parse_read_only(v)),
    };
    let isolation = match body.remove("isolation") {
        None | Some(Value::Null) => Some(limits.default_isolation),
        Some(v) => errors.check(parse_isolation(v)),
    };
    let network = errors.check(parse_network(
        body.remove("network").unwrap_or(Value::Null),
        limits.default_egress,
    ));
    let name = errors.check(parse_name(body.remove("name").unwrap_or(Value::Null)));
    let lifetime = match body.remove("lifetime") {
        None => Some(limits.default_lifetime),
        Some(Value::Null) => errors
            .check(lifetime::check_required(limits.max_ttl))
            .map(|()| None),
        Some(v) => errors
            .check(lifetime::parse_lifetime(v, limits.max_ttl))
            .map(|l| Some(l.resolve(None))),
    };
    let idle = errors.check(parse_idle(body.remove("idle").unwrap_or(Value::Null)));
    let health = errors.check(parse_health(body.remove("health").unwrap_or(Value::Null)));
    let auto_update = match body.remove("auto_update") {
        None | Some(Value::Null) => Some(false),
        Some(v) => errors.check(parse_auto_update(v)),
    };
    let placement = placement::parse_placement(body.remove("placement").unwrap_or(Value::Null))?;
    let start = match body.remove("start") {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(b),
        Some(v) => {
            errors.push(Invalid::field(
                Rule::InvalidStart,
                "start",
                v,
                "`start` must be a boolean",
            ));
            None
        }
    };
    errors.finish()?;
    // With no error recorded, every field above holds its value.
    let (
        Some(image),
        Some(env),
        Some(tags),
        Some(ports),
        Some(command),
        Some(restart),
        Some(user),
        Some(read_only),
        Some(isolation),
        Some(network),
        Some(name),
        Some(lifetime),
        Some(idle),
        Some(health),
        Some(auto_update),
        Some(start),
    ) = (
        image,
        env,
        tags,
        ports,
        command,
        restart,
        user,
        read_only,
        isolation,
        network,
        name,
        lifetime,
        idle,
        health,
        auto_update,
        start,
    )
    else {
        unreachable!("a field without a value recorded an error")
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
            read_only,
            isolation,
            network,
            name,
            idle,
            health,
            auto_update,
            placement,
        },
        start,
        lifetime,
    })
}

/// Applies a `PATCH /containers/{cuid}` body to a spec: `env` merges (`null` removes a key),
/// `tags` replace, `resources` merge (`null` clears a limit), the rest replace (`null` on
/// `command`/`user`/`read_only` goes back to the default; `network` replaces the whole
/// policy, `null` being `DEFAULT_EGRESS`; `health` replaces the whole check, `null`
/// removing it). Like [`parse_create`], every field is read: the error carries them all.
/// `lifetime` is read here too (for its errors), and applied by [`patched_lifetime`].
pub fn apply_patch(
    spec: &Spec,
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<Spec, Invalid> {
    let mut errors = Errors::default();
    for e in unknown_fields(&body, PATCH_FIELDS, "") {
        errors.push(e);
    }
    // Not part of the spec (see [`patched_lifetime`]); its errors are this body's too,
    // reported first as they were when [`patched_lifetime`] was the first to read them.
    match body.remove("lifetime") {
        None => {}
        Some(Value::Null) => {
            errors.check(lifetime::check_required(limits.max_ttl));
        }
        Some(v) => {
            errors.check(lifetime::parse_lifetime(v, limits.max_ttl));
        }
    }
    let mut next = spec.clone();
    if let Some(v) = body.remove("image") {
        if v.is_null() {
            errors.push(Invalid::field(
                Rule::MissingImage,
                "image",
                Value::Null,
                "Image is required",
            ));
        } else if let Some(image) = errors.check(parse_image(v)) {
            next.image = image;
        }
    }
    if let Some(v) = body.remove("env").filter(|v| !v.is_null()) {
        if let Some(map) = errors.check(parse_env_map(v, true)) {
            for (name, value) in map {
                match value {
                    Some(value) => next.env.insert(name, value),
                    None => next.env.remove(&name),
                };
            }
            if next.env.len() > MAX_ENV_VARS {
                errors.push(Invalid::field(
                    Rule::InvalidEnv,
                    "env",
                    json!(next.env.len()),
                    format!("at most {MAX_ENV_VARS} variables"),
                ));
            } else {
                errors.check(check_env_size(
                    &next.env,
                    limits.env_max_bytes,
                    env_bytes(&spec.env),
                ));
            }
        }
    }
    if let Some(v) = body.remove("tags") {
        if v.is_null() {
            next.tags = Vec::new();
        } else if let Some(tags) = errors.check(parse_tags(v)) {
            next.tags = tags;
        }
    }
    if let Some(v) = body.remove("resources").filter(|v| !v.is_null()) {
        if errors
            .check(merge_resources(&mut next.resources, v, limits))
            .is_some()
        {
            errors.check(check_disk_change(&spec.resources, &next.resources));
        }
    }
    if let Some(v) = body.remove("command") {
        if let Some(command) = errors.check(parse_command(v)) {
            next.command = command;
        }
    }
    if let Some(v) = body.remove("restart") {
        if v.is_null() {
            next.restart = RestartPolicy::OnFailure;
        } else if let Some(r) = errors.check(parse_restart(v)) {
            next.restart = r;
        }
    }
    if let Some(v) = body.remove("user") {
        if let Some(user) = errors.check(parse_user(v)) {
            next.user = user;
        }
    }
    if let Some(v) = body.remove("read_only") {
        match v {
            Value::Null => next.read_only = false,
            v => {
                if let Some(b) = errors.check(parse_read_only(v)) {
                    next.read_only = b;
                }
            }
        }
    }
    if let Some(v) = body.remove("isolation") {
        match v {
            Value::Null => next.isolation = limits.default_isolation,
            v => {
                if let Some(i) = errors.check(parse_isolation(v)) {
                    next.isolation = i;
                }
            }
        }
    }
    if let Some(v) = body.remove("network") {
        if let Some(n) = errors.check(parse_network(v, limits.default_egress)) {
            next.network = n;
        }
    }
    if let Some(v) = body.remove("name") {
        if let Some(name) = errors.check(parse_name(v)) {
            next.name = name;
        }
    }
    if let Some(v) = body.remove("idle") {
        if let Some(idle) = errors.check(parse_idle(v)) {
            next.idle = idle;
        }
    }
    if let Some(v) = body.remove("health") {
        if let Some(health) = errors.check(parse_health(v)) {
            next.health = health;
        }
    }
    if let Some(v) = body.remove("placement") {
        next.placement = placement::parse_placement(v)?;
    }
    if let Some(v) = body.remove("auto_update") {
        match v {
            Value::Null => next.auto_update = false,
            v => {
                if let Some(b) = errors.check(parse_auto_update(v)) {
                    next.auto_update = b;
                }
            }
        }
    }
    errors.finish()?;
    Ok(next)
}

/// The `isolation` a patch body asks for, if it names one (`null`: the default), so the
/// caller can check the runtime is there before the spec changes. Malformed values are left
/// to [`apply_patch`] to refuse.
pub fn patched_isolation(body: &Map<String, Value>, limits: &Limits) -> Option<Isolation> {
    match body.get("isolation")? {
        Value::Null => Some(limits.default_isolation),
        Value::String(s) => Isolation::parse(s),
        _ => None,
    }
}

/// What a patch body does to the `lifetime`: `None` leaves it (and its deadline) alone;
/// `Some(None)` removes it (`null`); `Some(Some(l))` sets it and moves the deadline to now +
/// `ttl`, even when `l` is the current lifetime. `on_expiry` left out keeps `current`'s.
pub fn patched_lifetime(
    body: &Map<String, Value>,
    current: Option<&Lifetime>,
    limits: &Limits,
) -> Result<Option<Option<Lifetime>>, Invalid> {
    reject_unknown(body, PATCH_FIELDS, "")?;
    match body.get("lifetime") {
        None => Ok(None),
        Some(Value::Null) => {
            lifetime::check_required(limits.max_ttl)?;
            Ok(Some(None))
        }
        Some(v) => Ok(Some(Some(
            lifetime::parse_lifetime(v.clone(), limits.max_ttl)?.resolve(current),
        ))),
    }
}

/// `resources.disk` of an existing container may only grow (the image is grown in place,
/// online): shrinking it could cut off what `/app` holds, and adding or removing the cap
/// would mean copying `/app` between the host's disk and an image. Both are refused.
fn check_disk_change(current: &Resources, next: &Resources) -> Result<(), Invalid> {
    let refuse = |why: &str| {
        Invalid::field(
            Rule::DiskChangeRefused,
            "resources.disk",
            next.disk.clone().map_or(Value::Null, Value::String),
            why,
        )
    };
    match (current.disk_bytes, next.disk_bytes) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(refuse(
            "a cap cannot be added to a container created without one; create a new container",
        )),
        (Some(_), None) => Err(refuse(
            "the cap of a capped container cannot be removed; it may only grow",
        )),
        (Some(old), Some(new)) if new < old => Err(refuse(
            "resources.disk may only grow; shrinking could cut off what /app holds",
        )),
        (Some(_), Some(_)) => Ok(()),
    }
}

/// `PATCH /containers/{cuid}/ports`: `{"ports": [...]}`, replacing the list.
pub fn parse_ports_body(
    mut body: Map<String, Value>,
    limits: &Limits,
) -> Result<Vec<Port>, Invalid> {
    reject_unknown(&body, &["ports"], "")?;
    match body.remove("ports") {
        None => Err(Invalid::field(
            Rule::MissingPorts,
            "ports",
            Value::Null,
            "`ports` is required",
        )),
        Some(Value::Null) => Ok(Vec::new()),
        Some(v) => parse_ports(v, limits),
    }
}

/// The longest `name`: a DNS label's limit.
pub const MAX_NAME_LEN: usize = 63;

/// `name`: a DNS label (RFC 1123: lowercase letters, digits and inner hyphens, at most 63),
/// so it reads the same in a URL, a shell and a hostname. `null` means none.
fn parse_name(v: Value) -> Result<Option<String>, Invalid> {
    let ok = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_NAME_LEN
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) if ok(&s) => Ok(Some(s)),
        other => Err(Invalid::field(
            Rule::InvalidName,
            "name",
            other,
            format!("a name is 1-{MAX_NAME_LEN} lowercase letters, digits and hyphens, starting and ending with a letter or digit (like `team-a-web`)"),
        )),
    }
}

pub fn is_tag(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= MAX_TAG_LEN
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn parse_tags(v: Value) -> Result<Vec<String>, Invalid> {
    let Value::Array(items) = v else {
        return Err(Invalid::field(
            Rule::InvalidTags,
            "tags",
            v,
            "tags must be a list of strings",
        ));
    };
    if items.len() > MAX_TAGS {
        return Err(Invalid::field(
            Rule::InvalidTags,
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
                    return Err(Invalid::field(Rule::DuplicateTag, field, Value::String(s), "a tag may appear once"));
                }
                tags.push(s);
            }
            other => {
                return Err(Invalid::field(
                    Rule::InvalidTag,
                    field,
                    other,
                    format!("tags are short tokens: a letter or digit, then letters, digits, '.', '_' or '-', at most {MAX_TAG_LEN} characters"),
                ))
            }
        }
    }
    Ok(tags)
}

fn parse_command(v: Value) -> Result<Option<Vec<String>>, Invalid> {
    let bad = |v: Value| {
        Invalid::field(
            Rule::InvalidCommand,
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

fn parse_restart(v: Value) -> Result<RestartPolicy, Invalid> {
    match v.as_str().and_then(RestartPolicy::parse) {
        Some(p) => Ok(p),
        None => Err(Invalid::field(
            Rule::InvalidRestart,
            "restart",
            v,
            "restart must be no, on-failure, always or unless-stopped",
        )),
    }
}

fn parse_read_only(v: Value) -> Result<bool, Invalid> {
    match v {
        Value::Bool(b) => Ok(b),
        v => Err(Invalid::field(
            Rule::InvalidReadOnly,
            "read_only",
            v,
            "`read_only` must be a boolean",
        )),
    }
}

fn parse_auto_update(v: Value) -> Result<bool, Invalid> {
    match v {
        Value::Bool(b) => Ok(b),
        v => Err(Invalid::field(
            Rule::InvalidAutoUpdate,
            "auto_update",
            v,
            "`auto_update` must be a boolean",
        )),
    }
}

fn parse_isolation(v: Value) -> Result<Isolation, Invalid> {
    match v.as_str().and_then(Isolation::parse) {
        Some(i) => Ok(i),
        None => Err(Invalid::field(
            Rule::InvalidIsolation,
            "isolation",
            v,
            "`isolation` must be \"runc\" or \"gvisor\"",
        )),
    }
}

fn parse_user(v: Value) -> Result<Option<String>, Invalid> {
    match &v {
        Value::Null => Ok(None),
        Value::String(s) => match UserIds::parse(s) {
            Some(ids) => Ok(Some(ids.to_string())),
            None => Err(Invalid::field(
                Rule::InvalidUser,
                "user",
                v,
                "user must be uid:gid numbers, e.g. 1000:1000",
            )),
        },
        _ => Err(Invalid::field(
            Rule::InvalidUser,
            "user",
            v,
            "user must be uid:gid numbers, e.g. 1000:1000",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    fn limits() -> Limits {
        Limits {
            host_cpus: 2.0,
            default_host_ip: "0.0.0.0".parse().unwrap(),
            env_max_bytes: 1000,
            default_isolation: Isolation::Runc,
            default_egress: Egress::Internet,
            max_ttl: None,
            default_lifetime: None,
        }
    }

    /// `lifetime`: its codes, `DEFAULT_TTL` and `MAX_TTL`, and what a patch does to it.
    #[test]
    fn lifetime_on_create_and_patch() {
        assert_eq!(create(json!({"image": "x"})).unwrap().lifetime, None);
        let l = create(json!({"image": "x", "lifetime": {"ttl": 60}}))
            .unwrap()
            .lifetime;
        assert_eq!(
            l,
            Some(Lifetime {
                ttl: 60,
                on_expiry: OnExpiry::Stop
            })
        );
        let d = create(json!({"image": "x", "lifetime": {"ttl": 5, "on_expiry": "delete"}}))
            .unwrap()
            .lifetime
            .unwrap();
        assert_eq!(d.on_expiry, OnExpiry::Delete);
        for (lifetime, want, field) in [
            (json!(60), "INVALID_LIFETIME", "lifetime"),
            (json!({}), "INVALID_TTL", "lifetime.ttl"),
            (json!({"ttl": 0}), "INVALID_TTL", "lifetime.ttl"),
            (json!({"ttl": -5}), "INVALID_TTL", "lifetime.ttl"),
            (json!({"ttl": 1.5}), "INVALID_TTL", "lifetime.ttl"),
            (json!({"ttl": "60"}), "INVALID_TTL", "lifetime.ttl"),
            (
                json!({"ttl": TTL_CEILING + 1}),
                "INVALID_TTL",
                "lifetime.ttl",
            ),
            (
                json!({"ttl": 5, "on_expiry": "pause"}),
                "INVALID_ON_EXPIRY",
                "lifetime.on_expiry",
            ),
            (
                json!({"ttl": 5, "after": 1}),
                "UNKNOWN_FIELD",
                "lifetime.after",
            ),
        ] {
            let err = create(json!({"image": "x", "lifetime": lifetime.clone()}))
                .err()
                .unwrap();
            assert_eq!(err.code, want, "{lifetime}");
            assert_eq!(err.details.unwrap()["field"], field, "{lifetime}");
        }

        let default = Lifetime {
            ttl: 3600,
            on_expiry: OnExpiry::Stop,
        };
        let bounded = Limits {
            max_ttl: Some(7200),
            default_lifetime: Some(default),
            ..limits()
        };
        let make = |body: Value, l: &Limits| {
            parse_create(body.as_object().unwrap().clone(), l).map_err(ApiError::from)
        };
        assert_eq!(
            make(json!({"image": "x"}), &bounded).unwrap().lifetime,
            Some(default)
        );
        let too_long = make(json!({"image": "x", "lifetime": {"ttl": 7201}}), &bounded)
            .err()
            .unwrap();
        assert_eq!(too_long.code, "TTL_TOO_LONG");
        assert_eq!(too_long.details.unwrap()["limit"], 7200);
        assert!(make(json!({"image": "x", "lifetime": {"ttl": 7200}}), &bounded).is_ok());
        // Under MAX_TTL nothing lives for ever; without it `null` opts out of DEFAULT_TTL.
        assert_eq!(
            make(json!({"image": "x", "lifetime": null}), &bounded)
                .err()
                .unwrap()
                .code,
            "TTL_TOO_LONG"
        );
        let defaulted_only = Limits {
            max_ttl: None,
            ..bounded.clone()
        };
        assert_eq!(
            make(json!({"image": "x", "lifetime": null}), &defaulted_only)
                .unwrap()
                .lifetime,
            None
        );

        let patched = |body: Value, current: Option<&Lifetime>, l: &Limits| {
            patched_lifetime(body.as_object().unwrap(), current, l).map_err(ApiError::from)
        };
        assert_eq!(
            patched(json!({"tags": []}), Some(&d), &limits()).unwrap(),
            None
        );
        assert_eq!(
            patched(json!({"lifetime": null}), Some(&d), &limits()).unwrap(),
            Some(None)
        );
        // `on_expiry` left out keeps the current one.
        assert_eq!(
            patched(json!({"lifetime": {"ttl": 90}}), Some(&d), &limits()).unwrap(),
            Some(Some(Lifetime {
                ttl: 90,
                on_expiry: OnExpiry::Delete
            }))
        );
        assert_eq!(
            patched(json!({"lifetime": {"ttl": 9000}}), None, &bounded)
                .unwrap_err()
                .code,
            "TTL_TOO_LONG"
        );
        assert_eq!(
            patched(json!({"lifetime": null}), None, &bounded)
                .unwrap_err()
                .code,
            "TTL_TOO_LONG"
        );
        // The spec itself is untouched by a lifetime patch.
        let base = create(json!({"image": "x"})).unwrap().spec;
        let body = json!({"lifetime": {"ttl": 5}});
        assert_eq!(
            apply_patch(&base, body.as_object().unwrap().clone(), &limits()).unwrap(),
            base
        );
    }

    #[test]
    fn isolation_on_create_and_patch() {
        assert_eq!(
            create(json!({"image": "x"})).unwrap().spec.isolation,
            Isolation::Runc
        );
        // `DEFAULT_ISOLATION` is resolved at create, so a later change moves nothing.
        let gvisor_default = Limits {
            default_isolation: Isolation::Gvisor,
            ..limits()
        };
        let by_default = parse_create(
            json!({"image": "x"}).as_object().unwrap().clone(),
            &gvisor_default,
        )
        .map_err(ApiError::from)
        .unwrap()
        .spec;
        assert_eq!(by_default.isolation, Isolation::Gvisor);
        let g = create(json!({"image": "x", "isolation": "gvisor"}))
            .unwrap()
            .spec;
        assert_eq!(g.isolation, Isolation::Gvisor);
        for bad in [json!("kata"), json!("GVISOR"), json!(1), json!(true)] {
            let err = create(json!({"image": "x", "isolation": bad}))
                .err()
                .unwrap();
            assert_eq!(err.code, "INVALID_ISOLATION", "{bad}");
            assert_eq!(
                without_errors(err.details),
                Some(json!({"field": "isolation", "provided": bad}))
            );
        }

        let patch = |spec: &Spec, body: Value, limits: &Limits| {
            apply_patch(spec, body.as_object().unwrap().clone(), limits).map_err(ApiError::from)
        };
        let back = patch(&g, json!({"isolation": "runc"}), &limits()).unwrap();
        assert_eq!(back.isolation, Isolation::Runc);
        assert_ne!(
            back, g,
            "a change the store sees (and the reconciler recreates)"
        );
        assert_eq!(
            patch(&g, json!({"isolation": null}), &limits())
                .unwrap()
                .isolation,
            Isolation::Runc
        );
        assert_eq!(
            patch(&back, json!({"isolation": null}), &gvisor_default)
                .unwrap()
                .isolation,
            Isolation::Gvisor
        );
        assert_eq!(
            patch(&g, json!({"tags": ["t"]}), &limits())
                .unwrap()
                .isolation,
            Isolation::Gvisor
        );
        assert_eq!(
            patch(&g, json!({"isolation": "vm"}), &limits())
                .unwrap_err()
                .code,
            "INVALID_ISOLATION"
        );

        // What the runtime check looks at before a patch.
        let asked = |body: Value, l: &Limits| patched_isolation(body.as_object().unwrap(), l);
        assert_eq!(asked(json!({"tags": []}), &limits()), None);
        assert_eq!(
            asked(json!({"isolation": "gvisor"}), &limits()),
            Some(Isolation::Gvisor)
        );
        assert_eq!(
            asked(json!({"isolation": null}), &gvisor_default),
            Some(Isolation::Gvisor)
        );
        assert_eq!(asked(json!({"isolation": 7}), &limits()), None);
    }

    /// Refusals as the client sees them (the mapping of `http/`), so the codes are checked.
    fn create(v: Value) -> Result<CreateRequest, ApiError> {
        Ok(parse_create(v.as_object().unwrap().clone(), &limits())?)
    }

    /// Every field refused is reported: the first as the error, all of them (in the
    /// order the fields are read) in `details.errors`.
    #[test]
    fn every_refused_field_is_reported() {
        let e = create(json!({
            "image": "UPPER CASE",
            "env": {"1BAD": "x"},
            "name": "-no-",
            "restart": "sometimes",
            "bogus": 1,
        }))
        .err()
        .unwrap();
        assert_eq!(e.code.as_str(), "UNKNOWN_FIELD");
        let d = e.details.unwrap();
        assert_eq!(d["field"], "bogus");
        let got: Vec<(String, String)> = d["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                assert!(x["message"].as_str().is_some_and(|m| !m.is_empty()));
                (
                    x["field"].as_str().unwrap().to_owned(),
                    x["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want = [
            ("bogus", "UNKNOWN_FIELD"),
            ("image", "INVALID_IMAGE"),
            ("env.1BAD", "INVALID_ENV_NAME"),
            ("restart", "INVALID_RESTART"),
            ("name", "INVALID_NAME"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
        // One error: the same body as before, plus `errors` holding it.
        let e = create(json!({"image": "x", "user": "root"})).err().unwrap();
        let d = e.details.unwrap();
        assert_eq!(d["field"], "user");
        assert_eq!(d["errors"].as_array().unwrap().len(), 1);
        assert_eq!(d["errors"][0]["code"], "INVALID_USER");
        assert_eq!(d["errors"][0]["provided"], "root");
        // A patch too, its lifetime first as before.
        let base = create(json!({"image": "x"})).unwrap().spec;
        let body = json!({"tags": ["a b"], "lifetime": {"ttl": 0}, "command": []});
        let e: ApiError = apply_patch(&base, body.as_object().unwrap().clone(), &limits())
            .err()
            .unwrap()
            .into();
        assert_eq!(e.code.as_str(), "INVALID_TTL");
        let d = e.details.unwrap();
        let fields: Vec<&str> = d["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["lifetime.ttl", "tags[0]", "command"]);
    }

    /// The details of the first error alone (`errors` is checked in
    /// [`every_refused_field_is_reported`]).
    fn without_errors(details: Option<Value>) -> Option<Value> {
        details.map(|mut d| {
            d.as_object_mut().unwrap().remove("errors");
            d
        })
    }

    fn code(v: Value) -> String {
        create(v)
            .err()
            .map(|e| e.code.as_str().to_owned())
            .unwrap_or_default()
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
            (
                json!({"image": "x", "read_only": "yes"}),
                "INVALID_READ_ONLY",
            ),
            (json!({"image": "x", "network": "none"}), "INVALID_NETWORK"),
            (
                json!({"image": "x", "network": {"egress": "lan"}}),
                "INVALID_EGRESS",
            ),
            (
                json!({"image": "x", "network": {"egress": "allowlist", "allow": "1.2.3.4:5"}}),
                "INVALID_ALLOW_ENTRY",
            ),
            (
                json!({"image": "x", "network": {"egress": "allowlist", "allow": ["1.2.3.4/16:5"]}}),
                "INVALID_ALLOW_CIDR",
            ),
            (
                json!({"image": "x", "network": {"egress": "allowlist", "allow": ["1.2.3.4:99999"]}}),
                "INVALID_ALLOW_PORT",
            ),
            (
                json!({"image": "x", "network": {"allow": ["1.2.3.4:5"]}}),
                "ALLOW_WITHOUT_ALLOWLIST",
            ),
            (
                json!({"image": "x", "network": {"egress": "allowlist",
                    "allow": (1..=65).map(|p| format!("1.2.3.4:{p}")).collect::<Vec<_>>()}}),
                "TOO_MANY_ALLOW_ENTRIES",
            ),
            (
                json!({"image": "x", "network": {"egress": "none", "ports": []}}),
                "UNKNOWN_FIELD",
            ),
            (json!({"image": "x", "read_only": 1}), "INVALID_READ_ONLY"),
            (
                json!({"image": "x", "auto_update": "yes"}),
                "INVALID_AUTO_UPDATE",
            ),
            (
                json!({"image": "x", "resources": {"tmp": "lots"}}),
                "INVALID_TMP",
            ),
            (
                json!({"image": "x", "resources": {"tmp": true}}),
                "INVALID_TMP",
            ),
            (
                json!({"image": "x", "resources": {"tmp": "512k"}}),
                "TMP_TOO_SMALL",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(code(body.clone()), want, "{body}");
        }
    }

    #[test]
    fn disk_is_a_size_that_may_only_grow() {
        let plain = create(json!({"image": "x"})).unwrap().spec;
        assert_eq!(plain.resources.disk_bytes, None);
        let capped = create(json!({"image": "x", "resources": {"disk": "1g"}}))
            .unwrap()
            .spec;
        assert_eq!(
            (
                capped.resources.disk.as_deref(),
                capped.resources.disk_bytes
            ),
            (Some("1g"), Some(1 << 30))
        );
        let tera = create(json!({"image": "x", "resources": {"disk": "2t"}}))
            .unwrap()
            .spec;
        assert_eq!(tera.resources.disk_bytes, Some(2 << 40));
        for (disk, want) in [
            (json!("lots"), "INVALID_DISK"),
            (json!(-1), "INVALID_DISK"),
            (json!("17t"), "INVALID_DISK"),
            (json!("15m"), "DISK_TOO_SMALL"),
            (json!(1024), "DISK_TOO_SMALL"),
        ] {
            let body = json!({"image": "x", "resources": {"disk": disk}});
            assert_eq!(code(body.clone()), want, "{body}");
        }

        let patch = |spec: &Spec, body: Value| {
            apply_patch(spec, body.as_object().unwrap().clone(), &limits()).map_err(ApiError::from)
        };
        let grown = patch(&capped, json!({"resources": {"disk": "2g"}})).unwrap();
        assert_eq!(grown.resources.disk_bytes, Some(2 << 30));
        // The same cap written another way is fine; other resources leave it alone.
        let same = patch(&capped, json!({"resources": {"disk": 1073741824}})).unwrap();
        assert_eq!(same.resources.disk_bytes, Some(1 << 30));
        assert_eq!(
            patch(&capped, json!({"resources": {"pids": 10}}))
                .unwrap()
                .resources
                .disk_bytes,
            Some(1 << 30)
        );
        for (spec, body) in [
            (&capped, json!({"resources": {"disk": "512m"}})),
            (&capped, json!({"resources": {"disk": null}})),
            (&plain, json!({"resources": {"disk": "1g"}})),
        ] {
            let err = patch(spec, body.clone()).unwrap_err();
            assert_eq!(err.code, "DISK_CHANGE_REFUSED", "{body}");
        }
        // Uncapped stays uncapped under `null`.
        assert_eq!(
            patch(&plain, json!({"resources": {"disk": null}}))
                .unwrap()
                .resources
                .disk_bytes,
            None
        );
    }

    #[test]
    fn read_only_and_tmp_on_create_and_patch() {
        let base = create(json!({"image": "x"})).unwrap().spec;
        assert!(!base.read_only);
        assert_eq!(
            (base.resources.tmp.as_deref(), base.resources.tmp_bytes),
            (None, None)
        );

        let ro = create(json!({"image": "x", "read_only": true, "resources": {"tmp": "16m"}}))
            .unwrap()
            .spec;
        assert!(ro.read_only);
        assert_eq!(ro.resources.tmp.as_deref(), Some("16m"));
        assert_eq!(ro.resources.tmp_bytes, Some(16 << 20));

        let patch = |spec: &Spec, body: Value| {
            apply_patch(spec, body.as_object().unwrap().clone(), &limits()).map_err(ApiError::from)
        };
        // Turned on and off by a patch; `null` is the default (off); other fields stay.
        let on = patch(&base, json!({"read_only": true})).unwrap();
        assert!(on.read_only && on.resources.tmp.is_none());
        assert!(!patch(&on, json!({"read_only": false})).unwrap().read_only);
        assert!(!patch(&on, json!({"read_only": null})).unwrap().read_only);
        assert!(patch(&on, json!({"tags": ["t"]})).unwrap().read_only);
        // `resources.tmp` merges like the other limits: `null` goes back to the default.
        let sized = patch(&ro, json!({"resources": {"tmp": "1g"}})).unwrap();
        assert_eq!(sized.resources.tmp_bytes, Some(1 << 30));
        let cleared = patch(&ro, json!({"resources": {"tmp": null}})).unwrap();
        assert_eq!(
            (cleared.resources.tmp, cleared.resources.tmp_bytes),
            (None, None)
        );
        let err = patch(&ro, json!({"read_only": "true"})).unwrap_err();
        assert_eq!(err.code, "INVALID_READ_ONLY");
        assert_eq!(
            without_errors(err.details),
            Some(json!({"field": "read_only", "provided": "true"}))
        );
        assert_eq!(
            patch(&ro, json!({"resources": {"tmp": "0"}}))
                .unwrap_err()
                .code,
            "TMP_TOO_SMALL"
        );
    }

    /// `network`: the default is `DEFAULT_EGRESS`; a patch replaces the whole policy and
    /// `null` goes back to the default; other patches leave it alone.
    #[test]
    fn network_on_create_and_patch() {
        let base = create(json!({"image": "x"})).unwrap().spec;
        assert_eq!(base.network, Network::default());
        let strict = Limits {
            default_egress: Egress::None,
            ..limits()
        };
        let none = parse_create(json!({"image": "x"}).as_object().unwrap().clone(), &strict)
            .unwrap()
            .spec;
        assert_eq!(none.network, Network::with_egress(Egress::None));

        let listed = create(json!({"image": "x", "network": {"egress": "allowlist",
            "allow": ["10.1.2.0/24:5432", "192.0.2.7:443"]}}))
        .unwrap()
        .spec;
        assert_eq!(listed.network.allow, ["10.1.2.0/24:5432", "192.0.2.7:443"]);
        let patch = |spec: &Spec, body: Value, limits: &Limits| {
            apply_patch(spec, body.as_object().unwrap().clone(), limits).map_err(ApiError::from)
        };
        assert_eq!(
            patch(&listed, json!({"tags": ["t"]}), &limits())
                .unwrap()
                .network,
            listed.network
        );
        assert_eq!(
            patch(&listed, json!({"network": {"egress": "none"}}), &limits())
                .unwrap()
                .network,
            Network::with_egress(Egress::None)
        );
        assert_eq!(
            patch(&listed, json!({"network": null}), &strict)
                .unwrap()
                .network,
            Network::with_egress(Egress::None)
        );
        let err = patch(
            &listed,
            json!({"network": {"egress": "none", "allow": ["1.2.3.4:1"]}}),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(err.code, "ALLOW_WITHOUT_ALLOWLIST");
        assert_eq!(err.details.unwrap()["field"], "network.allow");
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

    #[test]
    fn env_is_capped_in_total_on_create_and_patch() {
        // limits() caps at 1000 bytes: names plus values.
        let at_cap = json!({"image": "x", "env": {"AB": "v".repeat(998)}});
        assert!(create(at_cap).is_ok());
        let Err(over) = create(json!({"image": "x", "env": {"AB": "v".repeat(999)}})) else {
            panic!("over the cap must be refused")
        };
        assert_eq!(over.code, "ENV_TOO_LARGE");
        assert_eq!(over.kind.status(), 400);
        assert_eq!(
            without_errors(over.details),
            Some(json!({"field": "env", "limit": 1000, "size": 1001}))
        );
        // Many small variables add up the same way.
        let many: Map<String, Value> = (0..250).map(|i| (format!("V{i:03}"), json!("x"))).collect();
        assert_eq!(code(json!({"image": "x", "env": many})), "ENV_TOO_LARGE");

        let base = create(json!({"image": "x", "env": {"A": "v".repeat(900)}}))
            .unwrap()
            .spec;
        let patch = |body: Value| {
            apply_patch(&base, body.as_object().unwrap().clone(), &limits()).map_err(ApiError::from)
        };
        let err = patch(json!({"env": {"B": "v".repeat(99)}})).unwrap_err();
        assert_eq!(err.code, "ENV_TOO_LARGE");
        assert!(patch(json!({"env": {"B": "v".repeat(98)}})).is_ok());
        // A patch without env is not judged on it; one that shrinks an env that is over a
        // lowered limit goes through.
        let tight = Limits {
            env_max_bytes: 10,
            ..limits()
        };
        let tags = json!({"tags": ["t"]});
        assert!(apply_patch(&base, tags.as_object().unwrap().clone(), &tight).is_ok());
        let shrink = json!({"env": {"A": "v".repeat(500)}});
        assert!(apply_patch(&base, shrink.as_object().unwrap().clone(), &tight).is_ok());
        let grow = json!({"env": {"C": "1"}});
        assert!(apply_patch(&base, grow.as_object().unwrap().clone(), &tight).is_err());
    }
}
