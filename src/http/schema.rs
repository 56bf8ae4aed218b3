//! The bodies at the HTTP boundary (docs/API.md §3–§5), as the handlers send them and as
//! the OpenAPI document describes them: the handlers build these types (or the domain's own
//! types re-exported here: the error body, the representation, a file listing's entries, a
//! pull's progress), and name them in their `#[utoipa::path]` attributes; [`super::openapi`]
//! collects them. Both import this module, so neither imports the other.
//!
//! The request bodies (`CreateBody`, `PatchBody`, `PortsBody`, `PullBody`) only describe
//! what a client may send: the server reads those field by field (`crate::spec`), so that
//! every mistake has its own code and `details.field`.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

pub use crate::appdir::listing::{FileEntry, FileKind};
pub use crate::images::PullProgress;
use crate::lifecycle::{DesiredState, Status};
pub use crate::spec::RestartPolicy;
use crate::tenancy::Scope;

/// The error body is the error type's own (docs/API.md §3).
pub use crate::error::ErrorBody;
/// A container's representation is the one `/events` sends too (docs/API.md §4).
pub use crate::representation::Representation;

/// What a client may send to `POST /containers` (unknown fields are refused).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// An OCI image reference (`crate::spec::is_image_reference`).
    #[schema(
        example = "python:3.12-slim",
        max_length = 255,
        pattern = r"^([a-z0-9]+([.-][a-z0-9]+)*(:[0-9]{1,4})?/)?[a-z0-9]+([_-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?(@sha256:[a-f0-9]{64})?$"
    )]
    pub image: String,
    pub env: Option<BTreeMap<EnvName, EnvValue>>,
    #[schema(max_items = 64)]
    pub tags: Option<std::collections::BTreeSet<Tag>>,
    pub resources: Option<ResourcesIn>,
    pub ports: Option<Vec<PortIn>>,
    /// argv overriding `BOOT_COMMAND` (`[]` is refused: leave it out for the default).
    #[schema(min_items = 1, max_items = 1024)]
    pub command: Option<Vec<Arg>>,
    /// Default `on-failure`.
    pub restart: Option<RestartPolicy>,
    /// `uid:gid`.
    #[schema(pattern = r"^[0-9]{1,9}:[0-9]{1,9}$")]
    pub user: Option<String>,
    /// Read-only root filesystem; `/app` stays writable and `/tmp` is a tmpfs of
    /// `resources.tmp`. Default false.
    pub read_only: Option<bool>,
    /// The runtime: `runc` or `gvisor` (gVisor's `runsc`, a user-space kernel in front of
    /// the host's). Default: the `DEFAULT_ISOLATION` setting. One the Docker daemon does not
    /// offer (see `/healthz` `runtimes`) is `400 RUNTIME_UNAVAILABLE`.
    pub isolation: Option<crate::spec::Isolation>,
    /// What the container may reach; default `{"egress": DEFAULT_EGRESS}`.
    pub network: Option<NetworkIn>,
    /// A name people know it by: a DNS label, unique among the tenant's live containers
    /// (`409 NAME_TAKEN`).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    /// A time limit: at `created_at + ttl` the server stops or deletes the container.
    /// Default: the `DEFAULT_TTL` setting (none unless set); `null`: none (refused
    /// `TTL_TOO_LONG` under `MAX_TTL`).
    pub lifetime: Option<LifetimeBody>,
    /// Pause or stop it when nobody uses it (docs/API.md, idle); default none.
    pub idle: Option<IdleIn>,
    /// A health check Docker runs (`cmd` in the container, or `http` by the server's
    /// probe); default none. Shown back as `health_check`.
    pub health: Option<HealthIn>,
    /// The server rolls newer digests of the image's tag out by itself, in
    /// `IMAGE_UPDATE_WINDOW`, and rolls back one that does not come up. Default false.
    pub auto_update: Option<bool>,
    /// Swarm placement constraints (`BACKEND=swarm` only; `400 PLACEMENT_NEEDS_SWARM`
    /// otherwise), checked against the cluster's nodes.
    pub placement: Option<crate::spec::Placement>,
    /// Start at once (and wait, unless `?wait=false`).
    pub start: Option<bool>,
    /// The tenant it belongs to. A tenant's token may leave it out or name its own; a
    /// principal without a tenant may name any tenant (docs/API.md §13).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub tenant: Option<String>,
}

/// `cpus` at most the host's CPUs and `memory` (at least 6 MiB) are bounded in
/// [`super::openapi::document`], which knows the host.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesIn {
    #[schema(minimum = 0.01)]
    pub cpus: Option<f64>,
    /// `4096m`, `1g`, `512k` or a number of bytes.
    pub memory: Option<serde_json::Value>,
    #[schema(minimum = 1)]
    pub pids: Option<i64>,
    /// Size of the `/tmp` tmpfs of a `read_only` container: `64m` (default), `1g`, or a
    /// number of bytes; at least `1m`. Without `read_only` it is kept but has no effect.
    pub tmp: Option<serde_json::Value>,
    /// Hard cap on `/app`: `512m`, `10g` or a number of bytes, at least `16m`; default
    /// `DEFAULT_DISK` (none: uncapped). A patch may only raise it.
    pub disk: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortIn {
    #[schema(minimum = 1, maximum = 65535)]
    pub host: u16,
    #[schema(minimum = 1, maximum = 65535)]
    pub container: u16,
    /// Default `tcp`.
    pub protocol: Option<Protocol>,
    /// An IP address (IPv6 too, though the pattern shows IPv4); default `PORT_BIND_IP`.
    #[schema(
        pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
    )]
    pub host_ip: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A tag (`crate::spec::is_tag`).
#[derive(Serialize, ToSchema, PartialEq, Eq, PartialOrd, Ord)]
#[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
pub struct Tag(pub String);

/// An environment variable's name (`crate::spec::env::is_env_name`).
#[derive(Serialize, ToSchema, PartialEq, Eq, PartialOrd, Ord)]
#[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]
pub struct EnvName(pub String);

/// An environment variable's value: any string but NUL (a process environment cannot hold
/// one).
#[derive(Serialize, ToSchema)]
#[schema(pattern = r"^[^\x00]*$")]
pub struct EnvValue(pub String);

/// A value of a patch's `env`: `null` removes the variable.
#[derive(Serialize, ToSchema)]
#[schema(pattern = r"^[^\x00]*$")]
pub struct EnvValueOrNull(pub Option<String>);

/// One argument of `command` (no NUL byte).
#[derive(Serialize, ToSchema)]
#[schema(pattern = r"^[^\x00]*$")]
pub struct Arg(pub String);

/// `PATCH /containers/{cuid}`: `env` merges (`null` removes a key), `tags` replaces,
/// `resources` merges.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// Absent: unchanged (`null` is refused).
    #[schema(
        nullable = false,
        example = "python:3.12-slim",
        max_length = 255,
        pattern = r"^([a-z0-9]+([.-][a-z0-9]+)*(:[0-9]{1,4})?/)?[a-z0-9]+([_-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?(@sha256:[a-f0-9]{64})?$"
    )]
    pub image: Option<String>,
    pub env: Option<BTreeMap<EnvName, EnvValueOrNull>>,
    #[schema(max_items = 64)]
    pub tags: Option<std::collections::BTreeSet<Tag>>,
    pub resources: Option<ResourcesIn>,
    /// argv; `null` goes back to `BOOT_COMMAND`, `[]` is refused.
    #[schema(min_items = 1, max_items = 1024)]
    pub command: Option<Vec<Arg>>,
    pub restart: Option<RestartPolicy>,
    #[schema(pattern = r"^[0-9]{1,9}:[0-9]{1,9}$")]
    pub user: Option<String>,
    /// `null` is `false`; changing it recreates a running container.
    pub read_only: Option<bool>,
    /// `null` is `DEFAULT_ISOLATION`; changing it recreates a running container. One the
    /// daemon does not offer is `400 RUNTIME_UNAVAILABLE`.
    pub isolation: Option<crate::spec::Isolation>,
    /// Replaces the whole policy; `null` is `{"egress": DEFAULT_EGRESS}`. Changing it
    /// recreates a running container.
    pub network: Option<NetworkIn>,
    /// Renames it (`null`: no name); nothing in Docker changes.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    /// Sets the time limit and moves the deadline to now + `ttl` (extend or shorten; the
    /// same `ttl` again restarts the count); `on_expiry` left out keeps the current one.
    /// `null` removes the limit (refused `TTL_TOO_LONG` under `MAX_TTL`). Recreates
    /// nothing and bumps no generation.
    pub lifetime: Option<LifetimeBody>,
    /// Replaces the whole policy; `null` removes it. Recreates nothing (no new generation).
    pub idle: Option<IdleIn>,
    /// Replaces the whole check; `null` removes it. Changing it recreates a running
    /// container.
    pub health: Option<HealthIn>,
    /// `null` is `false`; changing it recreates nothing (the generation stays).
    pub auto_update: Option<bool>,
    /// Replaces the constraints; `null` removes them. Changing them moves a running
    /// container (a new task where they hold).
    pub placement: Option<crate::spec::Placement>,
}

/// `lifetime` of a create or patch body.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifetimeBody {
    /// Seconds until the deadline: 1 to 315360000 (ten years), at most `MAX_TTL` when set.
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl: u64,
    /// Default `stop` (on a patch: the current one).
    pub on_expiry: Option<crate::spec::OnExpiry>,
}

/// `idle` of a create or patch body.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdleIn {
    /// Seconds without use (no request naming it, no open terminal, no traffic sent by it).
    #[schema(minimum = 5, maximum = 2592000)]
    pub after: u64,
    /// Default `pause`.
    pub action: Option<crate::spec::IdleAction>,
    /// Default true: a terminal, an upload or a start wakes a container the policy paused
    /// or stopped, and answers as if it had been running (`Server-Timing: resume;dur=ms`).
    pub resume_on_use: Option<bool>,
}

/// `health` of a create or patch body: exactly one of `cmd` and `http` (the exact shape is
/// written in [`super::openapi::document`]).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthIn {
    /// argv run in the container, no shell (`["test", "-f", "/tmp/ok"]`).
    #[schema(min_items = 1, max_items = 64)]
    pub cmd: Option<Vec<HealthArg>>,
    /// `GET http://127.0.0.1:<port><path>` from inside the container; healthy on 2xx/3xx.
    pub http: Option<HttpProbeIn>,
    /// Seconds between probes, 1-3600, default 10.
    #[schema(minimum = 1, maximum = 3600)]
    pub interval: Option<u32>,
    /// Seconds a probe may take, 1-600, default 5.
    #[schema(minimum = 1, maximum = 600)]
    pub timeout: Option<u32>,
    /// Failures in a row that make it unhealthy, 1-100, default 3.
    #[schema(minimum = 1, maximum = 100)]
    pub retries: Option<u32>,
    /// Seconds after a start when failures do not count, 0-3600, default 0.
    #[schema(minimum = 0, maximum = 3600)]
    pub start_period: Option<u32>,
    /// `restart`: the reconciler restarts it when unhealthy (with back-off).
    pub on_unhealthy: Option<crate::spec::OnUnhealthy>,
}

/// One argument of `health.cmd`: no NUL, at most 4096 characters.
#[derive(Serialize, ToSchema)]
#[schema(pattern = r"^[^\x00]{0,4096}$")]
pub struct HealthArg(pub String);

/// `health.http`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeIn {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Starts with `/`, printable ASCII without spaces; default `/`.
    #[schema(pattern = "^/[!-~]{0,1023}$")]
    pub path: Option<String>,
}

/// `network` of a create or patch body (the exact shape, `allow` only with `allowlist`,
/// is written in [`super::openapi::document`]).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkIn {
    /// Default `DEFAULT_EGRESS` (`internet` unless the operator set it).
    pub egress: Option<crate::spec::Egress>,
    /// `CIDR:port` entries, only with `allowlist`: TCP and UDP to that network and port.
    #[schema(max_items = 64)]
    pub allow: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortsBody {
    /// `null` is `[]`.
    #[schema(required = true)]
    pub ports: Option<Vec<PortIn>>,
}

/// A container as `GET /containers/{cuid}` and the listing show it: the representation
/// and `pull`.
#[derive(Serialize, ToSchema)]
pub struct LiveContainer {
    #[serde(flatten)]
    pub container: Representation,
    /// The progress of the pull of its image while the reconciler makes one for it, else
    /// null. Kept out of the stored `status`: a pull lives only as long as the process.
    #[schema(required = true)]
    pub pull: Option<PullProgress>,
    /// How full a capped `/app` is (`resources.disk`), read when answering; null when the
    /// container has no cap or its image is not mounted (after a reboot, until the
    /// reconciler or a file route mounts it).
    #[schema(required = true)]
    pub disk_usage: Option<DiskUsage>,
}

/// How full a capped `/app` is, in bytes: `cap_bytes` is `resources.disk`; ext4 keeps a
/// little of it for its own metadata, so `used_bytes + available_bytes` is a bit under.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct DiskUsage {
    pub cap_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

impl DiskUsage {
    /// Of `c`'s mounted image; `None` without a cap or a mount.
    pub fn of(
        config: &crate::config::Config,
        c: &crate::store::containers::Container,
    ) -> Option<Self> {
        let cap = u64::try_from(c.spec.resources.disk_bytes?).ok()?;
        let u = crate::appdir::disk::usage(config, &c.cuid)?;
        Some(Self {
            cap_bytes: cap,
            used_bytes: u.used_bytes,
            available_bytes: u.available_bytes,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ContainerList {
    pub containers: Vec<LiveContainer>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// With `?total=true`: how many containers the filters keep, on every page together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// `GET /containers/{cuid}/status`: live state from Docker (store values when Docker has
/// nothing yet).
#[derive(Serialize, ToSchema)]
pub struct LiveStatus {
    pub cuid: String,
    pub status: Status,
    pub desired_state: DesiredState,
    pub running: bool,
    pub paused: bool,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    pub restart_count: i64,
    pub ports: Vec<PublishedPort>,
    /// The Swarm node that runs it now (`source: docker`), else as last observed; null on
    /// one host.
    #[schema(required = true)]
    pub node: Option<String>,
    /// Where each published port answers, as in the representation (from the node that runs
    /// it now with `source: docker`).
    pub endpoints: Vec<crate::representation::Endpoint>,
    pub generation: i64,
    pub observed_generation: i64,
    /// As in the representation.
    #[schema(value_type = Option<Object>, required = true)]
    pub last_error: Option<serde_json::Value>,
    pub source: StatusSource,
    /// Health as Docker reports it now (`source: docker`), else as last observed; null
    /// without a health check or when not running.
    #[schema(required = true)]
    pub health: Option<crate::spec::Health>,
    /// The tail of the last probe's output.
    #[schema(required = true)]
    pub health_log: Option<String>,
    /// Docker's own word for the state; only with `source: docker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub docker_status: Option<Option<String>>,
}

/// One binding of a port as Docker reports it.
#[derive(Serialize, ToSchema)]
pub struct PublishedPort {
    /// `80/tcp`.
    pub container: String,
    #[schema(required = true)]
    pub host_ip: Option<String>,
    #[schema(required = true)]
    pub host_port: Option<String>,
}

/// Where a status was read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusSource {
    Docker,
    Store,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    #[schema(required = true)]
    pub compose_version: Option<String>,
    #[schema(required = true)]
    pub docker_version: Option<String>,
    #[schema(required = true)]
    pub docker_api_version: Option<String>,
    /// `ok` or `unreachable: <why>`.
    pub docker: String,
    /// `ok` or `unreachable: <why>`.
    pub database: String,
    pub instance_id: String,
    /// The runtimes the Docker daemon offers (its `Runtimes`, sorted; empty when it does not
    /// answer).
    pub runtimes: Vec<String>,
    /// The `isolation` values a container can have on this daemon now (`gvisor` needs the
    /// runtime `runsc`).
    pub isolations: Vec<crate::spec::Isolation>,
    /// The host ids of a container's root when the daemon runs with `userns-remap`; `null`
    /// when it does not (or cannot be asked).
    #[schema(required = true)]
    pub userns: Option<HealthUserns>,
    /// What runs the containers (`BACKEND`): `compose` or `swarm`.
    pub backend: String,
    /// `BACKEND=swarm`: the Swarm's nodes as its manager sees them, sorted by name; `null`
    /// with `compose` (and empty when the manager does not answer).
    #[schema(required = true)]
    pub nodes: Option<Vec<HealthNode>>,
}

/// One node of the Swarm (`/healthz` with `BACKEND=swarm`).
#[derive(Serialize, ToSchema)]
pub struct HealthNode {
    /// Its host name: what `SWARM_NODES` and placement constraints name.
    pub name: String,
    /// `manager` or `worker`.
    pub role: String,
    /// As the manager sees it: `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    #[schema(required = true)]
    pub address: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's own Engine API, as this server reaches it: `ok`, `unreachable: <why>`, or
    /// `not configured` (not in `SWARM_NODES`: the containers it runs cannot be reached for
    /// exec, terminals, logs, stats or pause).
    pub engine: String,
    /// Where this server reaches that Engine API: its `SWARM_NODES` endpoint
    /// (`unix:///…`, or `tcp://host:port`, always TLS); `null` when not listed.
    #[schema(required = true)]
    pub endpoint: Option<String>,
    /// The start-up check of the app storage on this node: `shared`, `unchecked: <why>` (it
    /// did not answer; checked again every few seconds), `not shared: <why>`; `null`: not
    /// checked (not in `SWARM_NODES`).
    #[schema(required = true)]
    pub storage: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthUserns {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResult {
    pub files: u64,
    pub bytes: u64,
}

/// `POST /session`, as JSON or as a form (other fields are ignored).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SignInBody {
    /// The server's credentials (`APP_USER`/`APP_PASS`).
    Password { user: String, password: String },
    /// An API token (docs/API.md §13): the console then shows what that token may see and do.
    Token { token: String },
}

/// The answer to a sign-in: the session's key goes in `X-Session-Key` (the cookie alone is
/// not enough).
#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    pub user: String,
    /// Seconds.
    pub expires_in: u64,
    pub key: String,
}

/// `GET /session`.
#[derive(Serialize, ToSchema)]
pub struct SessionUser {
    /// The user name, or `token:<id>:<name>` for a session signed in with a token.
    pub user: String,
    pub scope: Scope,
    /// The tenant whose containers this session sees; `null`: all.
    pub tenant: Option<String>,
}

/// `POST /session/ticket`: `?ticket=…` on one WebSocket upgrade or download link.
#[derive(Serialize, ToSchema)]
pub struct SessionTicket {
    pub ticket: String,
    /// Seconds.
    pub expires_in: u64,
}

/// `PUT /containers/{cuid}/files`: the file written.
#[derive(Serialize, ToSchema)]
pub struct FileWritten {
    /// `/app/…`
    pub path: String,
    pub bytes: u64,
    /// An existing file was replaced (`200`); else it is new (`201`).
    pub replaced: bool,
}

/// `DELETE /containers/{cuid}/files`: what was deleted.
#[derive(Serialize, ToSchema)]
pub struct FileDeleted {
    /// `/app/…`
    pub path: String,
    /// `file` (anything but a folder: a symlink is deleted, never what it points to) or `dir`.
    #[serde(rename = "type")]
    pub r#type: String,
}

/// `POST /containers/{cuid}/files/move`: paths relative to `/app` (the answer: `/app/…`).
#[derive(Serialize, ToSchema)]
pub struct MoveBody {
    pub from: String,
    pub to: String,
}

/// `POST /containers/{cuid}/files/mkdir`: the folder's path relative to `/app` (the answer:
/// `/app/…`).
#[derive(Serialize, ToSchema)]
pub struct MkdirBody {
    pub path: String,
}

/// One page of a directory of `/app`.
#[derive(Serialize, ToSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Names that are not UTF-8: counted, not listed.
    pub skipped: u64,
}

/// `GET /images`.
#[derive(Serialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// An image on the host and the live containers using it.
#[derive(Serialize, ToSchema)]
pub struct Image {
    pub id: String,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
    pub size: i64,
    /// RFC 3339.
    #[schema(required = true)]
    pub created: Option<String>,
    /// cuids.
    pub used_by: Vec<String>,
    /// A newer digest the registry has for one of `tags` (`seen_at`: when it was last
    /// looked up), or null.
    #[schema(required = true)]
    pub update_available: Option<crate::store::updates::UpdateAvailable>,
}

/// `POST /images/pull`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    #[schema(
        example = "python:3.12-slim",
        max_length = 255,
        pattern = r"^([a-z0-9]+([.-][a-z0-9]+)*(:[0-9]{1,4})?/)?[a-z0-9]+([_-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?(@sha256:[a-f0-9]{64})?$"
    )]
    pub image: String,
}

/// `POST /images/pull?wait=false`: the pull goes on.
#[derive(Serialize, ToSchema)]
pub struct PullAccepted {
    pub image: String,
    /// null once the pull has ended (or before it has begun).
    #[schema(required = true)]
    pub pull: Option<PullProgress>,
}

/// `DELETE /images/{reference}`.
#[derive(Serialize, ToSchema)]
pub struct ImageDeleted {
    pub image: String,
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// `GET /containers/{cuid}/logs?stream=`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    All,
    Both,
}

/// One line of `GET /containers/{cuid}/logs?format=jsonl` (a stream of them, one a line).
#[derive(Serialize, ToSchema)]
pub struct LogLine {
    pub stream: crate::terminal::frames::Stream,
    /// The record's bytes, as text or base64 (see `encoding`).
    pub data: String,
    pub encoding: LogEncoding,
    /// When Docker received it (RFC 3339, UTC), when known.
    #[schema(required = true)]
    pub timestamp: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    Utf8,
    Base64,
}

/// `GET /containers/{cuid}/logs?format=`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Jsonl,
    Ndjson,
}

/// One server-sent event of `GET /events`, as a client's SSE parser hands it over
/// (`http::events`): `data` is JSON, a [`ContainerEvent`] for `event: container`, an
/// [`EventReset`] for `event: reset` (reload the list, then carry on after its `id`).
#[derive(Serialize, ToSchema)]
pub struct EventFrame {
    /// The sequence number, for `Last-Event-ID`.
    pub id: String,
    pub event: EventName,
    /// JSON: `ContainerEvent`, `ContainerMoved` or `EventReset`.
    pub data: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    Container,
    Reset,
    /// A container now runs on another Swarm node (`ContainerMoved`).
    Moved,
}

/// What a client may send to `POST /tokens`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(min_length = 1, max_length = 64, example = "ci")]
    pub name: String,
    pub scope: Scope,
    /// The tenant whose containers the token works with; `null`: all (the operator's).
    pub tenant: Option<String>,
    /// Seconds until it stops working; `null`: never.
    #[schema(minimum = 1, maximum = 315360000)]
    pub expires_in: Option<i64>,
}

/// What a client may send to `PUT /tenants/{name}`: every quota optional, `null` no limit.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotasBody {
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    pub max_containers: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    pub max_running: Option<i64>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_cpus: Option<f64>,
    /// Bytes, or a size such as `8g`.
    #[schema(value_type = Option<String>, example = "8g")]
    pub max_memory: Option<String>,
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    pub max_pids: Option<i64>,
    /// The sum of the containers' `resources.disk` caps: bytes, or a size such as `100g`.
    #[schema(value_type = Option<String>, example = "100g")]
    pub max_disk: Option<String>,
    /// The host ports the tenant may publish, `FIRST-LAST`.
    #[schema(pattern = "^[0-9]{1,5}-[0-9]{1,5}$", example = "20000-20999")]
    pub ports: Option<String>,
    #[schema(exclusive_minimum = 0, maximum = 1000000)]
    pub requests_per_second: Option<f64>,
}

pub use crate::events::{ContainerEvent, ContainerMoved};

/// The `data` of an `event: reset`.
#[derive(Serialize, ToSchema)]
pub struct EventReset {
    pub reason: &'static str,
    /// The newest event's id: resume after it.
    pub id: u64,
}

/// One snapshot of a container's `/app` (docs/API.md §17).
#[derive(Serialize, ToSchema)]
pub struct Snapshot {
    /// `s` + 32 hex digits.
    #[schema(example = "s0f8c2d1e9a7b4c3d2e1f0a9b8c7d6e5f")]
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Bytes of file content (apparent sizes, hard links once): what counts against the
    /// tenant's `max_disk`.
    pub bytes: i64,
    /// Regular files (hard-linked ones once).
    pub files: i64,
    /// FIFOs, sockets and devices not copied (only in the answer of the create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
}

/// `GET /containers/{cuid}/snapshots`: oldest first.
#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

/// `POST /containers/{cuid}/snapshots`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotBody {
    /// 1-64 of `A-Z a-z 0-9 . _ -`, not starting with `.`; unique per container.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
}

/// `POST /containers/{cuid}/restore`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RestoreBody {
    /// The id of one of the container's snapshots.
    pub snapshot: String,
}

/// `POST /containers/{cuid}/fork`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ForkBody {
    /// Overrides of the source's spec, as a `PATCH` body (validated the same way).
    #[schema(value_type = Option<Object>)]
    pub spec: Option<serde_json::Value>,
    /// A snapshot of the source to start from; `null` or absent: the source's `/app` now.
    pub snapshot: Option<String>,
    /// Start the new container; default: whether the source's desired state is `running`.
    pub start: Option<bool>,
}
