//! Every `code` a client can receive in the docs/API.md §3 body, spelled once. Clients branch
//! on these strings, so a variant's string never changes; a new failure gets a new variant
//! (and a line in docs/API.md, which a test checks).

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// Defines [`ApiCode`] with each variant's wire string written once: serde, the OpenAPI
/// enumeration and [`ApiCode::as_str`] all take it from here. (utoipa's derive does not see a
/// `serde(rename)` a macro writes, so the schema is built from [`ApiCode::ALL`] below.)
macro_rules! api_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal,)*) => {
        /// The stable SCREAMING_SNAKE `code` of an error body (docs/API.md §3).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ApiCode {
            $($(#[doc = $doc])* #[serde(rename = $text)] $variant,)*
        }

        impl ApiCode {
            /// Every code, in the order of the definition.
            pub const ALL: &'static [ApiCode] = &[$(ApiCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $text,)*
                }
            }
        }
    };
}

api_codes! {
    // Every route.
    /// The body is not well-formed JSON.
    InvalidJson = "INVALID_JSON",
    /// The body is JSON but not an object.
    InvalidBody = "INVALID_BODY",
    /// The request's `Content-Type` is not the one the route takes.
    UnsupportedContentType = "UNSUPPORTED_CONTENT_TYPE",
    /// The connection failed while the body was read.
    BodyReadFailed = "BODY_READ_FAILED",
    /// The body did not arrive within `BODY_TIMEOUT`.
    BodyTimeout = "BODY_TIMEOUT",
    /// A field the route does not know.
    UnknownField = "UNKNOWN_FIELD",
    /// A query parameter of the wrong type or out of range.
    InvalidQuery = "INVALID_QUERY",
    /// The body is over `MAX_BODY_BYTES`.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE",
    /// No route serves the path.
    RouteNotFound = "ROUTE_NOT_FOUND",
    /// The route does not take the method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED",
    /// A panic or another fault of the server.
    InternalError = "INTERNAL_ERROR",
    /// A file operation on the host failed.
    IoError = "IO_ERROR",
    /// The state store failed.
    DatabaseError = "DATABASE_ERROR",
    /// The Docker daemon does not answer.
    DockerUnavailable = "DOCKER_UNAVAILABLE",
    /// The Docker daemon refused an image call.
    DockerFailed = "DOCKER_FAILED",

    // Authentication and sessions.
    /// No credentials (no `Authorization`, no session).
    MissingCredentials = "MISSING_CREDENTIALS",
    /// Wrong user name or password.
    InvalidCredentials = "INVALID_CREDENTIALS",
    /// Too many failed sign-ins from this address.
    TooManyAuthFailures = "TOO_MANY_AUTH_FAILURES",
    /// Credentials a browser sent on behalf of another site.
    CrossSiteCredentials = "CROSS_SITE_CREDENTIALS",
    /// The session has ended.
    SessionExpired = "SESSION_EXPIRED",
    /// A session cookie without the session key or a ticket.
    SessionKeyRequired = "SESSION_KEY_REQUIRED",
    /// `GET /session` or sign-out without a session.
    NoSession = "NO_SESSION",
    /// A sign-in body that cannot be read.
    InvalidSignIn = "INVALID_SIGN_IN",
    /// The token's scope does not cover the request (`details.required`).
    ScopeRequired = "SCOPE_REQUIRED",
    /// A route for principals without a tenant (the operator's server-wide figures).
    TenantForbidden = "TENANT_FORBIDDEN",
    /// The tenant is over its `requests_per_second`.
    TenantRateLimited = "TENANT_RATE_LIMITED",
    /// A token's `name` is empty, too long or holds control characters.
    InvalidTokenName = "INVALID_TOKEN_NAME",
    /// A token's `scope` is not one of read, operate, write, admin (or admin for a tenant).
    InvalidScope = "INVALID_SCOPE",
    /// A token's `expires_in` is not a whole number of seconds in range.
    InvalidExpiresIn = "INVALID_EXPIRES_IN",
    /// No live token with this id.
    TokenNotFound = "TOKEN_NOT_FOUND",
    /// A tenant's name is not a valid name.
    InvalidTenant = "INVALID_TENANT",
    /// A quota's value is out of range.
    InvalidQuota = "INVALID_QUOTA",
    /// No tenant of this name.
    TenantNotFound = "TENANT_NOT_FOUND",
    /// The tenant still owns containers.
    TenantNotEmpty = "TENANT_NOT_EMPTY",
    /// A write would take the tenant past a quota (`details: quota, limit, used, requested`).
    QuotaExceeded = "QUOTA_EXCEEDED",
    /// A tenant with a CPU, memory or pids quota must state that limit.
    LimitRequired = "LIMIT_REQUIRED",
    // Webhooks (§14).
    /// A webhook's `url` is not an `http://` URL of the accepted shape (`https` included).
    InvalidWebhookUrl = "INVALID_WEBHOOK_URL",
    /// A webhook's `url` leads to an address the rules refuse (`WEBHOOK_ALLOWLIST`).
    WebhookUrlForbidden = "WEBHOOK_URL_FORBIDDEN",
    /// A webhook's `events` is not a non-empty list of known event kinds.
    InvalidWebhookEvents = "INVALID_WEBHOOK_EVENTS",
    /// A webhook's `tags` is not null or a list of tags.
    InvalidWebhookTags = "INVALID_WEBHOOK_TAGS",
    /// A webhook's `secret` is missing, too short or too long.
    InvalidWebhookSecret = "INVALID_WEBHOOK_SECRET",
    /// No webhook of this id (or another tenant's).
    WebhookNotFound = "WEBHOOK_NOT_FOUND",
    /// The owner already has the most webhooks allowed.
    TooManyWebhooks = "TOO_MANY_WEBHOOKS",
    /// A browser request from an origin that is not allowed.
    OriginNotAllowed = "ORIGIN_NOT_ALLOWED",

    // Containers: the spec.
    /// `image` is missing or empty.
    MissingImage = "MISSING_IMAGE",
    /// `image` is not a valid image reference.
    InvalidImage = "INVALID_IMAGE",
    /// `start` is not a boolean.
    InvalidStart = "INVALID_START",
    /// `env` is not an object of strings, or holds too many variables.
    InvalidEnv = "INVALID_ENV",
    /// An `env` name is not a valid variable name.
    InvalidEnvName = "INVALID_ENV_NAME",
    /// An `env` value is not a string or holds a NUL.
    InvalidEnvValue = "INVALID_ENV_VALUE",
    /// `env` is over `ENV_MAX_BYTES`.
    EnvTooLarge = "ENV_TOO_LARGE",
    /// `ports` is missing.
    MissingPorts = "MISSING_PORTS",
    /// `ports` is not a list.
    InvalidPorts = "INVALID_PORTS",
    /// A port mapping is malformed or out of range.
    InvalidPort = "INVALID_PORT",
    /// A port's `protocol` is neither `tcp` nor `udp`.
    InvalidProtocol = "INVALID_PROTOCOL",
    /// A port's `host_ip` is not an allowed address.
    InvalidHostIp = "INVALID_HOST_IP",
    /// The same host port twice in one spec.
    DuplicatePort = "DUPLICATE_PORT",
    /// `tags` is not a list.
    InvalidTags = "INVALID_TAGS",
    InvalidName = "INVALID_NAME",
    NameTaken = "NAME_TAKEN",
    /// A tag is not a valid tag.
    InvalidTag = "INVALID_TAG",
    /// The same tag twice.
    DuplicateTag = "DUPLICATE_TAG",
    /// `command` is not a list of strings.
    InvalidCommand = "INVALID_COMMAND",
    /// `restart` is not a restart policy.
    InvalidRestart = "INVALID_RESTART",
    /// `user` is not `uid` or `uid:gid` of an unprivileged user.
    InvalidUser = "INVALID_USER",
    /// `resources` is not an object.
    InvalidResources = "INVALID_RESOURCES",
    /// `resources.cpus` is out of range.
    InvalidCpus = "INVALID_CPUS",
    /// `resources.memory` is not a size.
    InvalidMemory = "INVALID_MEMORY",
    /// `resources.memory` is under the minimum.
    MemoryTooLow = "MEMORY_TOO_LOW",
    /// `resources.pids` is out of range.
    InvalidPids = "INVALID_PIDS",
    /// `resources.tmp` is not a size.
    InvalidTmp = "INVALID_TMP",
    /// `resources.tmp` is under 1m.
    TmpTooSmall = "TMP_TOO_SMALL",
    /// `read_only` is not a boolean.
    InvalidReadOnly = "INVALID_READ_ONLY",
    /// `auto_update` is not a boolean.
    InvalidAutoUpdate = "INVALID_AUTO_UPDATE",
    /// `placement` is not `{"constraints": [...]}` of Swarm constraints.
    InvalidPlacement = "INVALID_PLACEMENT",
    /// `placement` with `BACKEND=compose`: one host places nothing.
    PlacementNeedsSwarm = "PLACEMENT_NEEDS_SWARM",
    /// No node of the Swarm satisfies the `placement` constraints now.
    PlacementUnsatisfiable = "PLACEMENT_UNSATISFIABLE",
    /// A spec field Swarm cannot honour with `BACKEND=swarm` (`isolation: gvisor`,
    /// `resources.disk`, `network.egress` other than `internet`); `details.field` names it.
    NotSupportedOnSwarm = "NOT_SUPPORTED_ON_SWARM",
    /// `isolation` is not `runc` or `gvisor`.
    InvalidIsolation = "INVALID_ISOLATION",
    /// The runtime `isolation` needs is not registered with the Docker daemon (see
    /// `/healthz` `runtimes`).
    RuntimeUnavailable = "RUNTIME_UNAVAILABLE",
    /// `network` is not an object.
    InvalidNetwork = "INVALID_NETWORK",
    /// `network.egress` is not internet, none or allowlist.
    InvalidEgress = "INVALID_EGRESS",
    /// A `network.allow` entry is not a `CIDR:port` string, or appears twice.
    InvalidAllowEntry = "INVALID_ALLOW_ENTRY",
    /// The network of a `network.allow` entry is not an IPv4 address or CIDR with its host bits clear.
    InvalidAllowCidr = "INVALID_ALLOW_CIDR",
    /// The port of a `network.allow` entry is not 1 to 65535.
    InvalidAllowPort = "INVALID_ALLOW_PORT",
    /// `network.allow` is given with an egress other than allowlist.
    AllowWithoutAllowlist = "ALLOW_WITHOUT_ALLOWLIST",
    /// `network.allow` has more than 64 entries.
    TooManyAllowEntries = "TOO_MANY_ALLOW_ENTRIES",
    /// `resources.disk` is not a size (or over 16t).
    InvalidDisk = "INVALID_DISK",
    /// `resources.disk` is under `16m`.
    DiskTooSmall = "DISK_TOO_SMALL",
    /// A patch would shrink `resources.disk`, or add or remove the cap.
    DiskChangeRefused = "DISK_CHANGE_REFUSED",
    /// `lifetime` is not an object (or `null`).
    InvalidLifetime = "INVALID_LIFETIME",
    /// `lifetime.ttl` is missing or not a whole number of seconds, 1 to ten years.
    InvalidTtl = "INVALID_TTL",
    /// `lifetime.ttl` is over `MAX_TTL` (or `lifetime: null` under `MAX_TTL`).
    TtlTooLong = "TTL_TOO_LONG",
    /// `lifetime.on_expiry` is not `stop` or `delete`.
    InvalidOnExpiry = "INVALID_ON_EXPIRY",
    /// `idle` is not an object (or null).
    InvalidIdle = "INVALID_IDLE",
    /// `idle.after` is missing or not a whole number of seconds from 5 to 2592000 (30 days).
    InvalidIdleAfter = "INVALID_IDLE_AFTER",
    /// `idle.action` is not pause or stop.
    InvalidIdleAction = "INVALID_IDLE_ACTION",
    /// `idle.resume_on_use` is not a boolean.
    InvalidIdleResume = "INVALID_IDLE_RESUME",
    /// `health` is not an object, or has both or neither of `cmd` and `http`.
    InvalidHealth = "INVALID_HEALTH",
    /// `health.cmd` is not a list of 1-64 strings (at most 4096 characters, no NUL).
    InvalidHealthCmd = "INVALID_HEALTH_CMD",
    /// `health.http` is not an object.
    InvalidHealthHttp = "INVALID_HEALTH_HTTP",
    /// `health.http.port` is missing or not 1 to 65535.
    InvalidHealthPort = "INVALID_HEALTH_PORT",
    /// `health.http.path` does not start with `/` or is not printable ASCII without spaces.
    InvalidHealthPath = "INVALID_HEALTH_PATH",
    /// `health.interval` is not a whole number of seconds from 1 to 3600.
    InvalidHealthInterval = "INVALID_HEALTH_INTERVAL",
    /// `health.timeout` is not a whole number of seconds from 1 to 600.
    InvalidHealthTimeout = "INVALID_HEALTH_TIMEOUT",
    /// `health.retries` is not a whole number from 1 to 100.
    InvalidHealthRetries = "INVALID_HEALTH_RETRIES",
    /// `health.start_period` is not a whole number of seconds from 0 to 3600.
    InvalidHealthStartPeriod = "INVALID_HEALTH_START_PERIOD",
    /// `health.on_unhealthy` is not `restart` or null.
    InvalidOnUnhealthy = "INVALID_ON_UNHEALTHY",

    // Containers: routes and state.
    /// No such container.
    ContainerNotFound = "CONTAINER_NOT_FOUND",
    /// The container is being deleted.
    ContainerDeleting = "CONTAINER_DELETING",
    /// `?wait=healthy` on a container without a health check (`health`).
    NoHealthCheck = "NO_HEALTH_CHECK",
    /// `?health=` names something other than starting, healthy, unhealthy or none.
    InvalidHealthFilter = "INVALID_HEALTH_FILTER",
    /// The container is not running (stats, terminal).
    ContainerNotRunning = "CONTAINER_NOT_RUNNING",
    /// The action is not allowed from the container's status.
    InvalidTransition = "INVALID_TRANSITION",
    /// `If-Match` names another generation, or is malformed.
    StaleGeneration = "STALE_GENERATION",
    /// `POST /containers/{cuid}/update` of a container whose image is a digest, not a tag.
    ImageNotUpdatable = "IMAGE_NOT_UPDATABLE",
    /// A malformed `Idempotency-Key`.
    InvalidIdempotencyKey = "INVALID_IDEMPOTENCY_KEY",
    /// An `Idempotency-Key` reused with another body.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED",
    /// The host port already belongs to another container.
    PortConflict = "PORT_CONFLICT",
    /// A `limit` out of range.
    InvalidLimit = "INVALID_LIMIT",
    /// A `status` filter names no status.
    InvalidStatusFilter = "INVALID_STATUS_FILTER",
    /// A `cursor` that is not one the server gave.
    InvalidCursor = "INVALID_CURSOR",
    /// The default command's `/app/boot.py` does not exist.
    BootScriptMissing = "BOOT_SCRIPT_MISSING",
    /// The change did not converge within the wait limit; it keeps converging.
    ActionTimeout = "ACTION_TIMEOUT",

    // Reconciler steps (`last_error.code`, and the answer to a waiting request).
    /// The image is not on the host, or its registry does not have it.
    ImageNotFound = "IMAGE_NOT_FOUND",
    /// The image's registry cannot be reached.
    RegistryUnavailable = "REGISTRY_UNAVAILABLE",
    /// The image's registry refused the credentials (or wants some).
    RegistryAuthFailed = "REGISTRY_AUTH_FAILED",
    /// The image's registry is not in `REGISTRY_ALLOWLIST`.
    RegistryNotAllowed = "REGISTRY_NOT_ALLOWED",
    /// A host port is held by another program.
    PortInUse = "PORT_IN_USE",
    /// `docker compose` (or an Engine API call) failed.
    ComposeFailed = "COMPOSE_FAILED",
    /// `docker compose` did not finish within `COMPOSE_TIMEOUT`.
    ComposeTimeout = "COMPOSE_TIMEOUT",
    /// A pass took its every step without the container settling.
    NotConverging = "NOT_CONVERGING",
    /// The firewall rules of a container's egress policy could not be applied (iptables).
    FirewallFailed = "FIREWALL_FAILED",

    // Images.
    /// The image is used by containers.
    ImageInUse = "IMAGE_IN_USE",

    // Files.
    /// A route that needs `path` got none.
    MissingPath = "MISSING_PATH",
    /// The path leaves `/app` or is malformed.
    UnsafePath = "UNSAFE_PATH",
    /// No such file or directory.
    FileNotFound = "FILE_NOT_FOUND",
    /// The path is a directory where a file is wanted.
    IsADirectory = "IS_A_DIRECTORY",
    /// The path is a file where a directory is wanted.
    NotADirectory = "NOT_A_DIRECTORY",
    /// The path is a FIFO, socket or device.
    NotARegularFile = "NOT_A_REGULAR_FILE",
    /// A process of the container holds the file under a lease.
    FileBusy = "FILE_BUSY",
    /// The directory holds too many entries to list.
    DirectoryTooLarge = "DIRECTORY_TOO_LARGE",
    /// An upload would put a file where a directory is, or the other way round.
    PathConflict = "PATH_CONFLICT",
    /// The name a single-file write, new folder or move asks for is taken.
    FileExists = "FILE_EXISTS",
    /// A folder deleted without `recursive=true` is not empty.
    DirectoryNotEmpty = "DIRECTORY_NOT_EMPTY",
    /// A folder moved into itself.
    MoveIntoItself = "MOVE_INTO_ITSELF",
    /// Every upload slot stayed busy for `UPLOAD_SLOT_WAIT`.
    UploadSlotsBusy = "UPLOAD_SLOTS_BUSY",
    /// Every listing slot stayed busy.
    ListingSlotsBusy = "LISTING_SLOTS_BUSY",
    /// The upload is over `UPLOAD_MAX_BYTES`.
    UploadTooLarge = "UPLOAD_TOO_LARGE",
    /// No byte of the upload arrived for a while.
    UploadIdleTimeout = "UPLOAD_IDLE_TIMEOUT",
    /// The upload arrived too slowly (`UPLOAD_STALL_BUDGET`).
    UploadTooSlow = "UPLOAD_TOO_SLOW",
    /// The body is not a ZIP archive the server can read.
    InvalidZip = "INVALID_ZIP",
    /// An entry's name leaves `/app` or is malformed.
    UnsafeZipEntry = "UNSAFE_ZIP_ENTRY",
    /// An encrypted entry, or one of a kind the server does not write.
    UnsupportedZipEntry = "UNSUPPORTED_ZIP_ENTRY",
    /// The same name twice in one archive.
    DuplicateZipEntry = "DUPLICATE_ZIP_ENTRY",
    /// More entries than `ZIP_MAX_ENTRIES`.
    ZipTooManyEntries = "ZIP_TOO_MANY_ENTRIES",
    /// The archive inflates past `ZIP_MAX_INFLATED_BYTES`.
    ZipTooLarge = "ZIP_TOO_LARGE",
    /// An entry inflates past `ZIP_MAX_RATIO` times its compressed size.
    ZipRatioExceeded = "ZIP_RATIO_EXCEEDED",
    /// The archive's central directory is over its limit.
    ZipDirectoryTooLarge = "ZIP_DIRECTORY_TOO_LARGE",
    /// The upload does not fit under the container's `resources.disk`.
    DiskQuotaExceeded = "DISK_QUOTA_EXCEEDED",

    // Snapshots, restore, fork.
    /// A snapshot's `name` that is empty, too long or not `[A-Za-z0-9._-]`.
    InvalidSnapshotName = "INVALID_SNAPSHOT_NAME",
    /// The container already has a snapshot of this name.
    SnapshotNameTaken = "SNAPSHOT_NAME_TAKEN",
    /// No snapshot of this id on this container.
    SnapshotNotFound = "SNAPSHOT_NOT_FOUND",
    /// `/app` is over `SNAPSHOT_MAX_ENTRIES`, `SNAPSHOT_MAX_BYTES` or the depth cap.
    SnapshotTooLarge = "SNAPSHOT_TOO_LARGE",
    /// A restore or fork body field of the wrong type (`snapshot`, `spec`, `start`).
    InvalidSnapshotRequest = "INVALID_SNAPSHOT_REQUEST",

    // The terminal (`/ws/{cuid}`).
    /// The route was called without a WebSocket upgrade.
    WebsocketUpgradeRequired = "WEBSOCKET_UPGRADE_REQUIRED",
    /// A frame that is not a JSON object with a string `type`, or lacks its fields.
    InvalidFrame = "INVALID_FRAME",
    /// A frame `type` the server does not know.
    UnknownFrameType = "UNKNOWN_FRAME_TYPE",
    /// `stdin` data that is not base64.
    InvalidBase64 = "INVALID_BASE64",
    /// An `encoding` other than `utf8` or `base64`.
    InvalidEncoding = "INVALID_ENCODING",
    /// A `stdin` frame over its limit.
    FrameTooLarge = "FRAME_TOO_LARGE",
    /// A `resize` with sizes out of range.
    InvalidSize = "INVALID_SIZE",
    /// A `signal` other than INT, TERM or KILL.
    InvalidSignal = "INVALID_SIGNAL",
    /// A `resize` of a session without a TTY.
    NoTty = "NO_TTY",
    /// Attaching to the main process failed.
    AttachFailed = "ATTACH_FAILED",
    /// An exec did not start or attach.
    ExecFailed = "EXEC_FAILED",
    /// The signal could not be delivered.
    SignalFailed = "SIGNAL_FAILED",
    /// The process ended but its exit code could not be read.
    ExitCodeUnknown = "EXIT_CODE_UNKNOWN",
    /// The client did not keep up with the output; lines were skipped.
    OutputLagged = "OUTPUT_LAGGED",
    /// The Swarm node that ran the session's container was lost (its daemon stopped
    /// answering, or the Swarm sees it down); the session is over.
    NodeLost = "NODE_LOST",

    // The console's pages.
    /// No such console file.
    NotFound = "NOT_FOUND",
}

impl utoipa::PartialSchema for ApiCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Stable SCREAMING_SNAKE code a client can branch on (docs/API.md §3)",
            ))
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ApiCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "ApiCode".into()
    }
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests and callers compare a code with the string a client sees.
impl PartialEq<&str> for ApiCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ApiCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::ApiCode;
    use std::collections::BTreeSet;

    #[test]
    fn every_code_is_spelled_once_and_serializes_as_spelled() {
        let mut seen = BTreeSet::new();
        for code in ApiCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is the string of two codes");
            assert_eq!(serde_json::to_value(code).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<ApiCode>(text.into()).unwrap(),
                *code
            );
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{text} is not SCREAMING_SNAKE"
            );
        }
    }

    /// Clients learn the codes from docs/API.md: each must be there.
    #[test]
    fn every_code_is_in_the_api_document() {
        let doc = include_str!("../../docs/API.md");
        let missing: Vec<_> = ApiCode::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .collect();
        assert!(missing.is_empty(), "not in docs/API.md: {missing:?}");
    }
}
