//! The bodies' schema types of the OpenAPI document (docs/API.md §3–§5). The handlers name
//! them in their `#[utoipa::path]` attributes and [`super::openapi`] collects them: both
//! import this module, so neither imports the other.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiCode;

/// The error body of every failure (docs/API.md §3).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorKind,
    /// Stable SCREAMING_SNAKE code a client can branch on (e.g. `CONTAINER_NOT_FOUND`).
    pub code: ApiCode,
    pub message: String,
    pub status: u16,
    pub request_id: String,
    /// RFC 3339 with an offset.
    pub timestamp: String,
    pub details: BTreeMap<String, serde_json::Value>,
    /// Only with `APP_ENV=development`.
    #[schema(nullable = false)]
    pub stacktrace: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ValidationError,
    AuthError,
    Forbidden,
    NotFound,
    Conflict,
    StateError,
    Timeout,
    ComposeError,
    IoError,
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    MethodNotAllowed,
    InternalError,
}

#[derive(Serialize, ToSchema)]
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

#[derive(Serialize, ToSchema)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// As sent: `4096m`, `1g`, `512k` or bytes.
    pub memory: Option<String>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// Size of `/tmp` under `read_only`, as sent; null: 64m.
    pub tmp: Option<String>,
    pub tmp_bytes: Option<i64>,
}

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
    pub env: Option<BTreeMap<EnvName, String>>,
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
    /// Start at once (and wait, unless `?wait=false`).
    pub start: Option<bool>,
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
    pub env: Option<BTreeMap<EnvName, Option<String>>>,
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
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortsBody {
    /// `null` is `[]`.
    #[schema(required = true)]
    pub ports: Option<Vec<PortIn>>,
}

// The lifecycle enums are the ones the server itself uses (`crate::lifecycle`).
use crate::lifecycle::{DesiredState, Status};

/// The representation of a container (docs/API.md §4).
#[derive(Serialize, ToSchema)]
pub struct Container {
    pub cuid: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: Resources,
    pub ports: Vec<Port>,
    pub command: Option<Vec<String>>,
    pub restart: RestartPolicy,
    pub user: Option<String>,
    pub read_only: bool,
    pub desired_state: DesiredState,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub generation: i64,
    pub observed_generation: i64,
    /// `{code, message, at}` of the last failure, or null.
    pub last_error: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ContainerList {
    pub containers: Vec<Container>,
    pub next_cursor: Option<String>,
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
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: i64,
    pub ports: Vec<serde_json::Value>,
    pub generation: i64,
    pub observed_generation: i64,
    pub last_error: Option<serde_json::Value>,
    /// `docker` or `store`.
    pub source: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub compose_version: Option<String>,
    pub docker_version: Option<String>,
    pub database: String,
    pub instance_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResult {
    pub files: u64,
    pub bytes: u64,
}

/// Docker's restart policy of a container: the values `crate::spec` accepts (`restart`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

/// `POST /session`, as JSON or as a form.
#[derive(Serialize, ToSchema)]
pub struct SignInBody {
    pub user: String,
    pub password: String,
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
    pub user: String,
}

/// `POST /session/ticket`: `?ticket=…` on one WebSocket upgrade or download link.
#[derive(Serialize, ToSchema)]
pub struct SessionTicket {
    pub ticket: String,
    /// Seconds.
    pub expires_in: u64,
}

/// One page of a directory of `/app`.
#[derive(Serialize, ToSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
    pub next_cursor: Option<String>,
    /// Names that are not UTF-8: counted, not listed.
    pub skipped: u64,
}

#[derive(Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    pub size: i64,
    /// Octal, e.g. `0644`.
    pub mode: String,
    /// RFC 3339 (UTC).
    pub mtime: Option<String>,
    /// Only for a symlink: where it points (null when unreadable).
    #[schema(nullable)]
    pub target: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
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
    pub created: Option<String>,
    /// cuids.
    pub used_by: Vec<String>,
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
    pub pull: Option<PullProgress>,
}

#[derive(Serialize, ToSchema)]
pub struct PullProgress {
    pub image: String,
    pub started_at: String,
    pub layers_done: u64,
    pub layers_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// `DELETE /images/{reference}`.
#[derive(Serialize, ToSchema)]
pub struct ImageDeleted {
    pub image: String,
    pub id: String,
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

/// `GET /containers/{cuid}/logs?format=`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Jsonl,
    Ndjson,
}

/// One server-sent event of `GET /events`, as a client's SSE parser hands it over
/// (`http::events`): `container` carries `{cuid, generation, status, container}` or
/// `{cuid, deleted: true}` as JSON in `data`; `reset` says to reload the list.
#[derive(Serialize, ToSchema)]
pub struct EventFrame {
    /// The sequence number, for `Last-Event-ID`.
    pub id: String,
    pub event: EventName,
    /// JSON.
    pub data: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    Container,
    Reset,
}
