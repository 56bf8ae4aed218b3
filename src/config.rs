//! Settings, read once at start-up from the environment (after `.env` was loaded by `main`)
//! and validated before anything else happens. Every setting here has a line in
//! `.env.example` and in the README's configuration table.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::docker::{Endpoint, TlsFiles};

/// The placeholder shipped in `.env.example`; refused outside development so a copied
/// example file never becomes a live password.
pub const PLACEHOLDER_PASSWORD: &str = "your_secure_password_here";

/// How many events `GET /events` keeps for `Last-Event-ID` resumption by default
/// (`EVENTS_WINDOW`).
pub const DEFAULT_EVENTS_WINDOW: usize = 1024;
/// How many bytes of events are kept by default (`EVENTS_MAX_BYTES`).
pub const DEFAULT_EVENTS_MAX_BYTES: usize = 16 << 20;

#[derive(Clone, Debug)]
pub struct Config {
    pub app_user: String,
    pub app_pass: String,
    pub listen_addr: SocketAddr,
    /// Absolute: compose would resolve a relative bind path against the compose file's folder.
    pub data_dir: PathBuf,
    pub database_url: String,
    pub log_dir: PathBuf,
    pub development: bool,
    /// Main process of every container whose spec has no `command`.
    pub boot_command: Vec<String>,
    /// `uid:gid` the container process runs as and that owns its files.
    pub default_user: UserIds,
    pub port_bind_ip: IpAddr,
    /// How long an action request waits for observed state to match (then `408`).
    pub action_timeout: Duration,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Audit log rotation: `actions.jsonl` is rotated past this size.
    pub audit_max_bytes: u64,
    /// Failed logins from one address before it is throttled.
    pub auth_max_failures: u32,
    /// How many events `GET /events` keeps for `Last-Event-ID` resumption.
    pub events_window: usize,
    /// Extra label value (`com.container-manager.tag`) on every Docker object; the test
    /// suite sets `test` so its leftovers can be swept.
    pub instance_tag: Option<String>,
    /// Upload limits (files issue).
    pub upload_max_bytes: u64,
    pub zip_max_entries: u64,
    pub zip_max_inflated_bytes: u64,
    pub zip_max_ratio: u64,
    /// Caps of one snapshot, fork or restore copy of `/app` (`SNAPSHOT_MAX_ENTRIES`,
    /// `SNAPSHOT_MAX_BYTES`): past either, `413 SNAPSHOT_TOO_LARGE` and nothing is kept.
    pub snapshot_max_entries: u64,
    pub snapshot_max_bytes: u64,
    /// An upload whose body sends no byte for this long ends (`408 UPLOAD_IDLE_TIMEOUT`) and
    /// frees its slot: a trickling client cannot hold one of the upload permits for ever.
    pub upload_idle_timeout: Duration,
    /// Total time an upload may wait for its body's bytes, earning back 1 s per 64 KiB
    /// received (`UPLOAD_STALL_BUDGET`); spent: `408 UPLOAD_TOO_SLOW`, slot freed.
    pub upload_stall_budget: Duration,
    /// How long an upload waits for a free upload slot before `503 UPLOAD_SLOTS_BUSY`
    /// (`UPLOAD_SLOT_WAIT`; `0`: answered at once).
    pub upload_slot_wait: Duration,
    /// Container json-file log rotation.
    pub container_log_max_size: String,
    pub container_log_max_file: u32,
    /// Reconciler: parallel passes, timeout of one compose call, periodic resync.
    pub reconcile_concurrency: usize,
    /// `IDLE_SAMPLE_INTERVAL`: how often the idle sampler reads the counters of the running
    /// containers that have an idle policy (seconds, at least 1; default 2).
    pub idle_sample_interval: Duration,
    pub compose_timeout: Duration,
    pub resync_interval: Duration,
    /// `pids_limit` of a container whose spec sets none (`DEFAULT_PIDS_LIMIT`; `0`: none).
    pub default_pids_limit: Option<i64>,
    /// Memory limit in bytes of a container whose spec sets none (`DEFAULT_MEMORY`; `0`: none).
    pub default_memory: Option<i64>,
    /// `resources.disk` given to a container created without one (`DEFAULT_DISK`, as written
    /// and in bytes; unset or `0`: none, `/app` uncapped).
    pub default_disk: Option<(String, i64)>,
    /// `lifetime.ttl` (seconds) of a create that names no `lifetime` (`DEFAULT_TTL`; unset
    /// or `0`: none), with `on_expiry: stop`.
    pub default_ttl: Option<u64>,
    /// The longest `lifetime.ttl` (`MAX_TTL`; unset or `0`: no limit). When set, every
    /// container has a lifetime: one created without gets `DEFAULT_TTL`, else `MAX_TTL`.
    pub max_ttl: Option<u64>,
    /// CPU limit of a container whose spec sets none (`DEFAULT_CPUS`; `0`: none), at most this
    /// host's CPUs (Docker refuses more).
    pub default_cpus: Option<f64>,
    /// Most bytes of env (names plus values) one container may hold (`ENV_MAX_BYTES`).
    pub env_max_bytes: usize,
    /// Most bytes the `/events` ring keeps (`EVENTS_MAX_BYTES`); the oldest events go first.
    pub events_max_bytes: usize,
    /// The egress policy of a container whose spec names none (`DEFAULT_EGRESS`): one of
    /// `internet`, `none`, `allowlist` (the spec's `Egress` reads it).
    pub default_egress: &'static str,
    /// When the reconciler pulls an image (`IMAGE_PULL_POLICY`).
    pub image_pull_policy: PullPolicy,
    /// `isolation` of a container whose create names none (`DEFAULT_ISOLATION`).
    pub default_isolation: Isolation,
    /// The daemon's name for gVisor's runtime (`GVISOR_RUNTIME`, default `runsc`).
    pub gvisor_runtime: String,
    /// A Docker `config.json` with registry credentials (`REGISTRY_AUTH_FILE`); read at each
    /// pull, never copied into the store.
    pub registry_auth_file: Option<PathBuf>,
    /// Registries a pull may name (`REGISTRY_ALLOWLIST`; empty: any).
    pub registry_allowlist: RegistryAllowlist,
    /// Image updates (issue 22): see [`ImageUpdates`].
    pub image_updates: ImageUpdates,
    /// `LOG_FORMAT=json`: the server's own log is one JSON object per line.
    pub log_json: bool,
    /// Connections: see [`Connections`].
    pub connections: Connections,
    /// Webhook deliveries: see [`WebhookSettings`].
    pub webhooks: WebhookSettings,
    /// What runs the containers (`BACKEND`): see [`BackendKind`].
    pub backend: BackendKind,
    /// The daemon of `DOCKER_HOST` (the Swarm's manager with `BACKEND=swarm`): see
    /// [`docker_host`]. `None`: unset, or a scheme bollard is left to judge.
    pub docker_host: Option<Endpoint>,
}

/// `DOCKER_HOST` as the docker CLI reads it: `unix://…` as is; `tcp://host:port` (or
/// `https://`) only with `DOCKER_TLS_VERIFY` set (non-empty) and the certificates in
/// `DOCKER_CERT_PATH` (default `~/.docker`): `ca.pem`, `cert.pem`, `key.pem`, each checked
/// here. Plain TCP is refused: whoever reaches that port would be root on the host.
pub fn docker_host() -> Result<Option<Endpoint>, ConfigError> {
    let Some(host) = var("DOCKER_HOST").map(|h| h.trim().to_owned()) else {
        return Ok(None);
    };
    if host.starts_with("unix://") {
        return Ok(Some(Endpoint::Unix(host)));
    }
    // Nothing else: `http://` would reach the daemon in clear, and the `docker compose`
    // children (which see DOCKER_HOST as given) know no `https://`.
    let Some(addr) = host.strip_prefix("tcp://") else {
        return Err(ConfigError(format!(
            "DOCKER_HOST={host}: only unix:///path or tcp://host:port (with DOCKER_TLS_VERIFY=1) \
             are supported"
        )));
    };
    tcp_address(addr).map_err(|e| ConfigError(format!("DOCKER_HOST={host}: {e}")))?;
    if var("DOCKER_TLS_VERIFY").is_none() {
        return Err(ConfigError(format!(
            "DOCKER_HOST={host} without DOCKER_TLS_VERIFY=1: plain TCP to a Docker daemon is refused \
             (anyone on the network would be root on its host); set DOCKER_TLS_VERIFY=1 and \
             DOCKER_CERT_PATH to a directory with ca.pem, cert.pem and key.pem"
        )));
    }
    let certs = docker_cert_path()?;
    certs
        .check()
        .map_err(|e| ConfigError(format!("DOCKER_HOST={host} (TLS): {e}")))?;
    Ok(Some(Endpoint::Tls {
        url: format!("tcp://{addr}"),
        certs,
    }))
}

/// `DOCKER_CERT_PATH`, else `~/.docker` (as the docker CLI).
fn docker_cert_path() -> Result<TlsFiles, ConfigError> {
    match var("DOCKER_CERT_PATH") {
        Some(dir) => Ok(TlsFiles(PathBuf::from(dir))),
        None => var("HOME")
            .map(|home| TlsFiles(Path::new(&home).join(".docker")))
            .ok_or_else(|| {
                ConfigError(
                    "TLS to a Docker daemon needs DOCKER_CERT_PATH (or HOME for ~/.docker)".into(),
                )
            }),
    }
}

/// `host:port` of a `tcp://` endpoint (a name or an address, `[v6]:port`; nothing after).
fn tcp_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or("the address must be tcp://host:port")?;
    let host_ok = !host.is_empty()
        && !host.contains(['/', '@', '?', '#', ' '])
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("the address must be tcp://host:port".into());
    }
    Ok(())
}

/// `BACKEND`: what runs the containers. `compose` (default): this host's Docker daemon, one
/// compose project per container. `swarm`: a Docker Swarm whose manager is the daemon at
/// `DOCKER_HOST`, one service (one replica) per container, its nodes' Engine APIs reached as
/// `SWARM_NODES` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    #[default]
    Compose,
    Swarm(SwarmSettings),
}

impl BackendKind {
    /// As `BACKEND` and `/healthz` spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Compose => "compose",
            Self::Swarm(_) => "swarm",
        }
    }

    pub fn swarm(&self) -> Option<&SwarmSettings> {
        match self {
            Self::Swarm(s) => Some(s),
            Self::Compose => None,
        }
    }

    fn from_env() -> Result<Self, ConfigError> {
        let nodes = var("SWARM_NODES").unwrap_or_default();
        match var("BACKEND")
            .map(|b| b.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("compose") => {
                if !nodes.trim().is_empty() {
                    return Err(ConfigError(
                        "SWARM_NODES is set but BACKEND is not swarm: set BACKEND=swarm or remove SWARM_NODES".into(),
                    ));
                }
                for name in ["SWARM_PUBLISH", "SWARM_CERT_PATH"] {
                    if var(name).is_some_and(|p| !p.trim().is_empty()) {
                        return Err(ConfigError(format!(
                            "{name} is set but BACKEND is not swarm: set BACKEND=swarm or remove {name}"
                        )));
                    }
                }
                Ok(Self::Compose)
            }
            Some("swarm") => {
                let swarm_certs = var("SWARM_CERT_PATH").map(PathBuf::from);
                let nodes = SwarmNodes::parse(&nodes, &|name| match &swarm_certs {
                    Some(dir) => Ok(TlsFiles(dir.join(name))),
                    None => docker_cert_path().map_err(|e| e.0),
                })
                .map_err(|e| ConfigError(format!("SWARM_NODES: {e}")))?;
                nodes
                    .check_certs()
                    .map_err(|e| ConfigError(format!("SWARM_NODES: {e}")))?;
                Ok(Self::Swarm(SwarmSettings {
                    nodes,
                    publish: SwarmPublish::parse(
                        var("SWARM_PUBLISH").as_deref(),
                        std::path::Path::new(IPVS_PROC),
                    )
                    .map_err(ConfigError)?,
                }))
            }
            Some(other) => Err(ConfigError(format!(
                "BACKEND={other:?} must be compose or swarm"
            ))),
        }
    }
}

/// `BACKEND=swarm`: how to reach the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmSettings {
    /// Each node's own Engine API, by Swarm node name (`SWARM_NODES`): exec, terminals, logs,
    /// stats and pause reach the container of a task through the node that runs it. A node
    /// not listed is reached through the manager (`DOCKER_HOST`) only when it is the manager.
    pub nodes: SwarmNodes,
    /// How published ports are published (`SWARM_PUBLISH`).
    pub publish: SwarmPublish,
}

/// Where the kernel lists IPVS's virtual services once the `ip_vs` module is loaded.
pub const IPVS_PROC: &str = "/proc/net/ip_vs";

/// `SWARM_PUBLISH`: `host` (default): each port is published on the node that runs the
/// task, at that node's address (the representation's `endpoints`). `ingress`: Swarm's
/// routing mesh, the port answers on every node; it needs IPVS in the kernel, without which
/// Swarm accepts the service, runs the task and publishes nothing (seen in the lab): refused
/// at start-up when this machine's kernel has no IPVS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwarmPublish {
    #[default]
    Host,
    Ingress,
}

impl SwarmPublish {
    /// `value` as `SWARM_PUBLISH` holds it; `ipvs`: the file whose presence says the kernel
    /// has IPVS ([`IPVS_PROC`]).
    pub fn parse(value: Option<&str>, ipvs: &std::path::Path) -> Result<Self, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("host") => Ok(Self::Host),
            Some("ingress") => {
                if ipvs.exists() {
                    Ok(Self::Ingress)
                } else {
                    Err(format!(
                        "SWARM_PUBLISH=ingress needs IPVS (the routing mesh) and this kernel has none \
                         ({} is missing: load the ip_vs module on every node, or use SWARM_PUBLISH=host); \
                         without it Swarm runs the task and publishes nothing",
                        ipvs.display()
                    ))
                }
            }
            Some(other) => Err(format!("SWARM_PUBLISH={other:?} must be host or ingress")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Ingress => "ingress",
        }
    }
}

/// `SWARM_NODES`: comma-separated `name=endpoint`, the endpoint a unix socket
/// (`unix:///run/node1.sock`) or `tcp://host:port`, always with mutual TLS (Docker's
/// `--tlsverify`): the certificates of node `name` are in `SWARM_CERT_PATH/name/` when
/// `SWARM_CERT_PATH` is set, else in `DOCKER_CERT_PATH` (default `~/.docker`), as
/// `ca.pem`, `cert.pem`, `key.pem`. Plain TCP is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmNodes(pub Vec<(String, Endpoint)>);

impl SwarmNodes {
    /// `certs(name)`: where the certificates of a `tcp://` node are.
    pub fn parse(
        s: &str,
        certs: &dyn Fn(&str) -> Result<TlsFiles, String>,
    ) -> Result<Self, String> {
        let mut out: Vec<(String, Endpoint)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, endpoint) = entry
                .split_once('=')
                .map(|(n, e)| (n.trim(), e.trim()))
                .ok_or_else(|| {
                    format!("entry {entry:?} must be name=unix:///path/to/docker.sock or name=tcp://host:port")
                })?;
            // Not `.` or `..`: the name is a directory under SWARM_CERT_PATH.
            let name_ok = !name.is_empty()
                && name.len() <= 253
                && name.bytes().any(|b| b != b'.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !name_ok {
                return Err(format!(
                    "node name {name:?} must be a Swarm node name (letters, digits, '-', '_', '.')"
                ));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(format!("node {name:?} is listed twice"));
            }
            let endpoint = match endpoint.split_once("://") {
                Some(("unix", path)) if path.starts_with('/') && path.len() > 1 => {
                    Endpoint::Unix(endpoint.to_owned())
                }
                Some(("tcp", addr)) => {
                    tcp_address(addr).map_err(|e| format!("{name}={endpoint}: {e}"))?;
                    Endpoint::Tls {
                        url: endpoint.to_owned(),
                        certs: certs(name)?,
                    }
                }
                _ => {
                    return Err(format!(
                        "{name}={endpoint:?}: the endpoint must be unix:///absolute/path or \
                         tcp://host:port (always with TLS; plain http:// is refused)"
                    ))
                }
            };
            out.push((name.to_owned(), endpoint));
        }
        Ok(Self(out))
    }

    /// The certificate files of every `tcp://` node are there and readable: the error names
    /// the node and the file.
    pub fn check_certs(&self) -> Result<(), String> {
        for (name, endpoint) in &self.0 {
            if let Endpoint::Tls { url, certs } = endpoint {
                certs
                    .check()
                    .map_err(|e| format!("{name}={url} (TLS): {e}"))?;
            }
        }
        Ok(())
    }

    /// The endpoint of node `name`, if listed.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }
}

/// Webhook deliveries (docs/API.md §14).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Where a webhook URL may point beyond the public internet (`WEBHOOK_ALLOWLIST`).
    pub allowlist: WebhookAllowlist,
    /// Time to connect to a receiver (`WEBHOOK_CONNECT_TIMEOUT`, default 5 s).
    pub connect_timeout: Duration,
    /// Time for a whole delivery, connect to response headers (`WEBHOOK_TIMEOUT`, 10 s).
    pub timeout: Duration,
    /// Longest wait between two attempts of a delivery (`WEBHOOK_BACKOFF_MAX`, 600 s).
    pub backoff_max: Duration,
    /// Age after which an undelivered event is given up (`WEBHOOK_MAX_AGE`, 86400 s).
    pub max_age: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allowlist: WebhookAllowlist::default(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            max_age: Duration::from_secs(86_400),
        }
    }
}

impl WebhookSettings {
    fn from_env() -> Result<Self, ConfigError> {
        let allowlist = WebhookAllowlist::parse(&var("WEBHOOK_ALLOWLIST").unwrap_or_default())
            .map_err(ConfigError)?;
        Ok(Self {
            allowlist,
            connect_timeout: secs_or("WEBHOOK_CONNECT_TIMEOUT", 5)?.max(Duration::from_secs(1)),
            timeout: secs_or("WEBHOOK_TIMEOUT", 10)?.max(Duration::from_secs(1)),
            backoff_max: secs_or("WEBHOOK_BACKOFF_MAX", 600)?.max(Duration::from_secs(1)),
            max_age: secs_or("WEBHOOK_MAX_AGE", 86_400)?.max(Duration::from_secs(1)),
        })
    }
}

/// `WEBHOOK_ALLOWLIST`: comma-separated networks (`10.0.0.0/8`, an address) and host names
/// a webhook URL may reach although the default rules refuse them (loopback, private,
/// link-local…). A listed name is allowed whatever it resolves to; a listed network allows
/// the addresses inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookAllowlist {
    pub networks: Vec<crate::cidr::Cidr>,
    /// Lower-case host names.
    pub hosts: Vec<String>,
}

impl WebhookAllowlist {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<crate::cidr::Cidr>() {
                out.networks.push(net);
                continue;
            }
            let host = entry.to_ascii_lowercase();
            let ok = !host.contains('/')
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return Err(format!(
                    "WEBHOOK_ALLOWLIST entry {entry:?} must be a network (10.0.0.0/8), an address or a host name"
                ));
            }
            out.hosts.push(host);
        }
        Ok(out)
    }
}

/// How the server treats connections and the addresses behind them.
#[derive(Clone, Debug)]
pub struct Connections {
    /// Peers whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`, default none): the
    /// failed-login throttle then counts the client behind the proxy, not the proxy.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// Time a connection gets to send a request's headers, counted from its opening and,
    /// on a kept-alive connection, from the end of the previous response; then it is closed
    /// (`HEADER_READ_TIMEOUT`). A request being answered (a stream, a WebSocket) is not idle.
    pub header_read_timeout: Duration,
    /// Time a request body (other than an upload's, which has its own budget) may take to
    /// arrive in full (`BODY_TIMEOUT`; then `408 BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// Time an answer may wait for the client to take any of it (`WRITE_TIMEOUT`; then the
    /// connection is closed): a client that never reads cannot hold a connection.
    pub write_timeout: Duration,
    /// Open connections at most (`MAX_CONNECTIONS`; further ones are closed at once).
    pub max_connections: usize,
    /// Open connections from one address at most (`MAX_CONNECTIONS_PER_IP`; trusted proxies
    /// are exempt).
    pub max_connections_per_ip: usize,
    /// After SIGTERM: how long in-flight requests get before the server stops anyway
    /// (`DRAIN_TIMEOUT`).
    pub drain_timeout: Duration,
}

impl Connections {
    fn from_env() -> Result<Self, ConfigError> {
        let trusted_proxies = crate::cidr::parse_list(&var("TRUSTED_PROXIES").unwrap_or_default())
            .map_err(|e| ConfigError(format!("TRUSTED_PROXIES: {e}")))?;
        Ok(Self {
            trusted_proxies,
            header_read_timeout: secs_or("HEADER_READ_TIMEOUT", 60)?.max(Duration::from_secs(1)),
            body_timeout: secs_or("BODY_TIMEOUT", 30)?.max(Duration::from_secs(1)),
            write_timeout: secs_or("WRITE_TIMEOUT", 60)?.max(Duration::from_secs(1)),
            max_connections: parse_or("MAX_CONNECTIONS", 2048usize)?.max(1),
            max_connections_per_ip: parse_or("MAX_CONNECTIONS_PER_IP", 128usize)?.max(1),
            drain_timeout: secs_or("DRAIN_TIMEOUT", 10)?,
        })
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            max_connections: 2048,
            max_connections_per_ip: 128,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// When and how the server looks for newer digests of the tags containers run and rolls
/// them out.
#[derive(Clone, Debug)]
pub struct ImageUpdates {
    /// How often each distinct tag is looked up on its registry (`IMAGE_CHECK_INTERVAL`,
    /// seconds, default 6 h; `0` turns the checks off).
    pub check_interval: Duration,
    /// When `auto_update` containers are updated (`IMAGE_UPDATE_WINDOW`, `HH:MM-HH:MM` UTC;
    /// `None`: any time).
    pub window: Option<UpdateWindow>,
    /// How long a new image has to become running (and stay so) before it is rolled back
    /// (`IMAGE_UPDATE_TIMEOUT`, seconds, default 120).
    pub timeout: Duration,
}

impl ImageUpdates {
    fn from_env() -> Result<Self, ConfigError> {
        let window = match var("IMAGE_UPDATE_WINDOW") {
            None => None,
            Some(v) => Some(
                UpdateWindow::parse(&v)
                    .map_err(|e| ConfigError(format!("IMAGE_UPDATE_WINDOW={v:?}: {e}")))?,
            ),
        };
        Ok(Self {
            check_interval: secs_or("IMAGE_CHECK_INTERVAL", 6 * 3600)?,
            window,
            timeout: secs_or("IMAGE_UPDATE_TIMEOUT", 120)?.max(Duration::from_secs(1)),
        })
    }
}

impl Default for ImageUpdates {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(6 * 3600),
            window: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// `IMAGE_UPDATE_WINDOW`: a daily span of UTC time, `HH:MM-HH:MM`, start included, end
/// excluded; an end before the start runs past midnight (`22:00-02:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateWindow {
    /// Minutes after midnight UTC.
    pub start: u32,
    pub end: u32,
}

impl UpdateWindow {
    pub fn parse(s: &str) -> Result<Self, String> {
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && !t.trim().is_empty()).then_some(h * 60 + m)
        };
        let bad = || "want HH:MM-HH:MM (UTC), e.g. 02:00-04:00".to_owned();
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(
                "an empty window (start = end); leave the setting empty for any time".into(),
            );
        }
        Ok(Self { start, end })
    }

    /// Whether `minute` (after midnight UTC) is inside.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// `IMAGE_PULL_POLICY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only when the image is not on the host.
    #[default]
    Missing,
    /// Never pull: an image not on the host is `IMAGE_NOT_FOUND`.
    Never,
    /// Pull before every (re)creation, so a moved tag is picked up.
    Always,
}

impl PullPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "missing" => Some(Self::Missing),
            "never" => Some(Self::Never),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

/// The runtime boundary of a container (spec field `isolation`, `DEFAULT_ISOLATION`):
/// Docker's `runc` (namespaces and cgroups on the host kernel) or gVisor's `runsc` (a
/// user-space kernel between the container and the host's). Here rather than in `spec`
/// because the setting is read here and `config` sits below `spec`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Runc,
    Gvisor,
}

impl Isolation {
    pub const ALL: [Isolation; 2] = [Isolation::Runc, Isolation::Gvisor];

    /// As the API, the store and `DEFAULT_ISOLATION` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Gvisor => "gvisor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

impl Config {
    /// The name of the Docker runtime that provides `isolation`: `runc`, or `GVISOR_RUNTIME`
    /// (default `runsc`, the name `scripts/setup-gvisor.sh` registers with the daemon).
    pub fn runtime_of(&self, isolation: Isolation) -> &str {
        match isolation {
            Isolation::Runc => "runc",
            Isolation::Gvisor => &self.gvisor_runtime,
        }
    }
}

/// `REGISTRY_ALLOWLIST`: the registries (`host[:port]`) a pull may name; empty allows any.
/// Checked before anything is contacted, so a refused name never makes the daemon connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryAllowlist(Vec<String>);

impl RegistryAllowlist {
    /// Comma-separated `host[:port]` entries; Docker Hub's other names count as `docker.io`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let ok = entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
            if !ok {
                return Err(format!(
                    "REGISTRY_ALLOWLIST entry {entry:?} must be a registry host[:port], e.g. ghcr.io or 127.0.0.1:5000"
                ));
            }
            hosts.push(crate::image_ref::canonical_registry(entry));
        }
        Ok(Self(hosts))
    }

    /// Whether a pull of `reference` may go ahead.
    pub fn allows(&self, reference: &str) -> bool {
        self.0.is_empty() || {
            let registry =
                crate::image_ref::canonical_registry(crate::image_ref::registry_of(reference));
            self.0.contains(&registry)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

impl UserIds {
    /// Parses `uid:gid`, both decimal numbers.
    pub fn parse(s: &str) -> Option<Self> {
        let (u, g) = s.split_once(':')?;
        let num = |x: &str| {
            (!x.is_empty() && x.len() <= 10 && x.bytes().all(|b| b.is_ascii_digit()))
                .then(|| x.parse::<u32>().ok())
                .flatten()
        };
        Some(Self {
            uid: num(u)?,
            gid: num(g)?,
        })
    }
}

impl std::fmt::Display for UserIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// A start-up refusal: one line for the operator, then a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name}={v:?} is not a valid value"))),
    }
}

fn secs_or(name: &str, default: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parse_or(name, default)?))
}

impl Config {
    /// `DATABASE_URL`, or the file under `DATA_DIR`: all the backup command needs (it runs
    /// beside the server and needs no credentials).
    pub fn database_url_from_env() -> Result<String, ConfigError> {
        if let Some(url) = var("DATABASE_URL") {
            return Ok(url);
        }
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the working directory: {e}")))?;
        let data_dir = absolute(&cwd, &var("DATA_DIR").unwrap_or_else(|| "./data".into()));
        Ok(format!("sqlite://{}", data_dir.join("state.db").display()))
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(None)
    }

    /// As [`Config::from_env`], with credentials (user, password) made on a first start in
    /// place of `APP_USER`/`APP_PASS`.
    pub fn from_env_with(generated: Option<(&str, &str)>) -> Result<Self, ConfigError> {
        let development = var("APP_ENV").is_some_and(|v| v.eq_ignore_ascii_case("development"));
        let app_user = match generated {
            Some((user, _)) => user.to_owned(),
            None => var("APP_USER").ok_or_else(|| {
                ConfigError("APP_USER is not set: refusing to start without credentials".into())
            })?,
        };
        let app_pass = match generated {
            Some((_, pass)) => pass.to_owned(),
            None => var("APP_PASS").ok_or_else(|| {
                ConfigError("APP_PASS is not set: refusing to start without credentials".into())
            })?,
        };
        if app_pass == PLACEHOLDER_PASSWORD && !development {
            return Err(ConfigError(
                "APP_PASS is still the placeholder from .env.example: set a real password".into(),
            ));
        }
        if app_user.contains(':') {
            return Err(ConfigError(
                "APP_USER must not contain ':' (Basic auth splits on it)".into(),
            ));
        }

        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the working directory: {e}")))?;
        let data_dir = absolute(&cwd, &var("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let log_dir = absolute(&cwd, &var("LOG_DIR").unwrap_or_else(|| "./logs".into()));
        let database_url = Self::database_url_from_env()?;

        let default_user = var("DEFAULT_USER_UID").unwrap_or_else(|| "1000:1000".into());
        let default_user = UserIds::parse(&default_user).ok_or_else(|| {
            ConfigError(format!(
                "DEFAULT_USER_UID={default_user:?} must be uid:gid numbers"
            ))
        })?;
        let boot_command = var("BOOT_COMMAND").unwrap_or_else(|| "python /app/boot.py".into());
        let boot_command: Vec<String> =
            boot_command.split_whitespace().map(str::to_owned).collect();
        let instance_tag = var("INSTANCE_TAG");
        if let Some(tag) = &instance_tag {
            if !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError(format!(
                    "INSTANCE_TAG={tag:?} may hold only letters, digits, '-' and '_'"
                )));
            }
        }

        let default_egress = match var("DEFAULT_EGRESS").as_deref() {
            None | Some("internet") => "internet",
            Some("none") => "none",
            Some("allowlist") => "allowlist",
            Some(other) => {
                return Err(ConfigError(format!(
                    "DEFAULT_EGRESS={other:?} must be one of internet, none, allowlist"
                )))
            }
        };
        let image_pull_policy = match var("IMAGE_PULL_POLICY") {
            None => PullPolicy::default(),
            Some(v) => PullPolicy::parse(&v).ok_or_else(|| {
                ConfigError(format!(
                    "IMAGE_PULL_POLICY={v:?} must be one of missing, never, always"
                ))
            })?,
        };
        let default_isolation = match var("DEFAULT_ISOLATION") {
            None => Isolation::default(),
            Some(v) => Isolation::parse(v.trim()).ok_or_else(|| {
                ConfigError(format!("DEFAULT_ISOLATION={v:?} must be runc or gvisor"))
            })?,
        };
        let gvisor_runtime = var("GVISOR_RUNTIME").unwrap_or_else(|| "runsc".into());
        if gvisor_runtime.is_empty()
            || !gvisor_runtime
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError(format!(
                "GVISOR_RUNTIME={gvisor_runtime:?} must be a runtime name (letters, digits, '-', '_', '.')"
            )));
        }
        let registry_auth_file = var("REGISTRY_AUTH_FILE").map(|f| absolute(&cwd, &f));
        let registry_allowlist =
            RegistryAllowlist::parse(&var("REGISTRY_ALLOWLIST").unwrap_or_default())
                .map_err(ConfigError)?;

        let log_json = match var("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "LOG_FORMAT={other:?} must be text or json"
                )))
            }
        };
        let (default_memory, default_cpus) = default_limits()?;
        let (default_ttl, max_ttl) =
            parse_ttls(var("DEFAULT_TTL").as_deref(), var("MAX_TTL").as_deref())?;
        Ok(Self {
            default_memory,
            default_cpus,
            env_max_bytes: parse_or("ENV_MAX_BYTES", 256 * 1024)?,
            events_max_bytes: parse_or::<usize>("EVENTS_MAX_BYTES", DEFAULT_EVENTS_MAX_BYTES)?
                .max(1),
            log_json,
            app_user,
            app_pass,
            listen_addr: parse_or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            data_dir,
            database_url,
            log_dir,
            development,
            boot_command,
            default_user,
            port_bind_ip: parse_or("PORT_BIND_IP", IpAddr::from([0, 0, 0, 0]))?,
            action_timeout: secs_or("ACTION_TIMEOUT", 60)?,
            max_body_bytes: parse_or("MAX_BODY_BYTES", 1024 * 1024)?,
            audit_max_bytes: parse_or("AUDIT_MAX_BYTES", 50 * 1024 * 1024)?,
            auth_max_failures: parse_or("AUTH_MAX_FAILURES", 10)?,
            events_window: parse_or::<usize>("EVENTS_WINDOW", DEFAULT_EVENTS_WINDOW)?.max(1),
            instance_tag,
            upload_max_bytes: parse_or("UPLOAD_MAX_BYTES", 512 * 1024 * 1024)?,
            zip_max_entries: parse_or("ZIP_MAX_ENTRIES", 20_000)?,
            zip_max_inflated_bytes: parse_or("ZIP_MAX_INFLATED_BYTES", 1024 * 1024 * 1024)?,
            zip_max_ratio: parse_or("ZIP_MAX_RATIO", 200)?,
            snapshot_max_entries: parse_or("SNAPSHOT_MAX_ENTRIES", 100_000)?,
            snapshot_max_bytes: parse_or("SNAPSHOT_MAX_BYTES", 4u64 << 30)?,
            upload_idle_timeout: secs_or("UPLOAD_IDLE_TIMEOUT", 30)?.max(Duration::from_secs(1)),
            upload_stall_budget: secs_or("UPLOAD_STALL_BUDGET", 30)?.max(Duration::from_secs(1)),
            upload_slot_wait: secs_or("UPLOAD_SLOT_WAIT", 30)?,
            container_log_max_size: var("CONTAINER_LOG_MAX_SIZE").unwrap_or_else(|| "10m".into()),
            container_log_max_file: parse_or("CONTAINER_LOG_MAX_FILE", 3)?,
            reconcile_concurrency: parse_or("RECONCILE_CONCURRENCY", 4usize)?.max(1),
            idle_sample_interval: secs_or("IDLE_SAMPLE_INTERVAL", 2)?.max(Duration::from_secs(1)),
            compose_timeout: secs_or("COMPOSE_TIMEOUT", 120)?,
            resync_interval: secs_or("RESYNC_INTERVAL", 30)?,
            default_egress,
            default_pids_limit: Some(parse_or("DEFAULT_PIDS_LIMIT", 4096u32)?)
                .filter(|&n| n != 0)
                .map(i64::from),
            default_disk: default_disk()?,
            default_ttl,
            max_ttl,
            image_pull_policy,
            default_isolation,
            gvisor_runtime,
            registry_auth_file,
            connections: Connections::from_env()?,
            registry_allowlist,
            image_updates: ImageUpdates::from_env()?,
            webhooks: WebhookSettings::from_env()?,
            backend: {
                let backend = BackendKind::from_env()?;
                if backend.swarm().is_some() {
                    let clash = [
                        ("DEFAULT_ISOLATION", default_isolation != Isolation::Runc),
                        ("DEFAULT_EGRESS", default_egress != "internet"),
                        (
                            "DEFAULT_DISK",
                            var("DEFAULT_DISK").is_some_and(|d| d.trim() != "0"),
                        ),
                    ];
                    if let Some((name, _)) = clash.iter().find(|(_, bad)| *bad) {
                        return Err(ConfigError(format!(
                            "{name} cannot be honoured with BACKEND=swarm (gVisor, disk caps and egress rules are one host's): unset it"
                        )));
                    }
                }
                backend
            },
            docker_host: docker_host()?,
        })
    }
}

impl Config {
    /// Defaults under `dir` (database, logs, mounts), for unit tests that need a whole
    /// configuration without reading the process environment.
    #[cfg(test)]
    pub fn for_tests(dir: &Path) -> Self {
        Self {
            app_user: "admin".into(),
            app_pass: "pass".into(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.join("data"),
            database_url: format!("sqlite://{}", dir.join("state.db").display()),
            log_dir: dir.join("logs"),
            development: false,
            boot_command: vec!["python".into(), "/app/boot.py".into()],
            default_user: UserIds {
                uid: 1000,
                gid: 1000,
            },
            port_bind_ip: IpAddr::from([0, 0, 0, 0]),
            action_timeout: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            audit_max_bytes: 1 << 20,
            auth_max_failures: 10,
            events_window: DEFAULT_EVENTS_WINDOW,
            instance_tag: None,
            upload_max_bytes: 1 << 20,
            upload_idle_timeout: Duration::from_secs(30),
            upload_stall_budget: Duration::from_secs(30),
            upload_slot_wait: Duration::from_secs(30),
            zip_max_entries: 1000,
            zip_max_inflated_bytes: 1 << 20,
            zip_max_ratio: 200,
            snapshot_max_entries: 1000,
            snapshot_max_bytes: 1 << 20,
            container_log_max_size: "10m".into(),
            container_log_max_file: 3,
            reconcile_concurrency: 4,
            idle_sample_interval: Duration::from_secs(2),
            compose_timeout: Duration::from_secs(120),
            resync_interval: Duration::from_secs(30),
            default_egress: "internet",
            default_pids_limit: Some(4096),
            default_memory: Some(1 << 30),
            default_disk: None,
            default_ttl: None,
            max_ttl: None,
            default_cpus: Some(1.0),
            env_max_bytes: 256 * 1024,
            events_max_bytes: DEFAULT_EVENTS_MAX_BYTES,
            image_pull_policy: PullPolicy::Missing,
            default_isolation: Isolation::Runc,
            gvisor_runtime: "runsc".into(),
            registry_auth_file: None,
            registry_allowlist: Default::default(),
            log_json: false,
            connections: Connections::default(),
            image_updates: ImageUpdates::default(),
            webhooks: WebhookSettings::default(),
            backend: BackendKind::Compose,
            docker_host: None,
        }
    }
}

/// `DEFAULT_MEMORY` (default 1g) and `DEFAULT_CPUS` (default 1.0, never above this host's
/// CPUs, which Docker would refuse); `0` turns either off.
fn default_limits() -> Result<(Option<i64>, Option<f64>), ConfigError> {
    parse_default_limits(
        var("DEFAULT_MEMORY").as_deref(),
        var("DEFAULT_CPUS").as_deref(),
        crate::spec::host_cpus(),
    )
}

fn parse_default_limits(
    memory: Option<&str>,
    cpus: Option<&str>,
    host_cpus: usize,
) -> Result<(Option<i64>, Option<f64>), ConfigError> {
    let memory_text = memory.unwrap_or("1g").trim();
    let memory = match crate::spec::parse_memory(memory_text) {
        Some(0) => None,
        Some(b) if b >= crate::spec::MIN_MEMORY_BYTES => Some(i64::try_from(b).unwrap_or(i64::MAX)),
        _ => {
            return Err(ConfigError(format!(
                "DEFAULT_MEMORY={memory_text:?} must be 0 or at least 6m (e.g. 512m, 1g)"
            )))
        }
    };
    let cpus_text = cpus.unwrap_or("1").trim();
    let cpus = match cpus_text.parse::<f64>() {
        Ok(0.0) => None,
        // Docker's granularity is 0.01 CPU.
        Ok(c) if c.is_finite() && c >= 0.01 => Some(c.min(host_cpus.max(1) as f64)),
        _ => {
            return Err(ConfigError(format!(
                "DEFAULT_CPUS={cpus_text:?} must be 0 or a number of CPUs of at least 0.01"
            )))
        }
    };
    Ok((memory, cpus))
}

/// `DEFAULT_DISK`: unset, empty or `0`: none; else a `resources.disk` value (at least 16m).
fn default_disk() -> Result<Option<(String, i64)>, ConfigError> {
    parse_default_disk(var("DEFAULT_DISK").as_deref())
}

fn parse_default_disk(text: Option<&str>) -> Result<Option<(String, i64)>, ConfigError> {
    let text = text.unwrap_or("").trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    crate::spec::parse_disk_value(serde_json::Value::String(text.to_owned()))
        .map(Some)
        .map_err(|_| {
            ConfigError(format!(
                "DEFAULT_DISK={text:?} must be 0 (none) or a size of at least 16m (e.g. 1g)"
            ))
        })
}

/// A duration setting in seconds: `3600`, or with a unit `90s`, `30m`, `12h`, `7d`.
fn parse_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 's'),
    };
    let n: u64 = digits.trim().parse().ok()?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// `DEFAULT_TTL` and `MAX_TTL`: unset, empty or `0`: none; else seconds (or `30m`, `12h`,
/// `7d`), at most the spec's ceiling; `DEFAULT_TTL` at most `MAX_TTL`.
fn parse_ttls(
    default: Option<&str>,
    max: Option<&str>,
) -> Result<(Option<u64>, Option<u64>), ConfigError> {
    let one = |name: &str, text: Option<&str>| -> Result<Option<u64>, ConfigError> {
        let text = text.unwrap_or("").trim();
        if text.is_empty() {
            return Ok(None);
        }
        match parse_seconds(text) {
            Some(0) => Ok(None),
            Some(n) if n <= crate::spec::TTL_CEILING => Ok(Some(n)),
            _ => Err(ConfigError(format!(
                "{name}={text:?} must be 0 (none) or a number of seconds (or 30m, 12h, 7d), at most ten years"
            ))),
        }
    };
    let default = one("DEFAULT_TTL", default)?;
    let max = one("MAX_TTL", max)?;
    if let (Some(d), Some(m)) = (default, max) {
        if d > m {
            return Err(ConfigError(format!(
                "DEFAULT_TTL ({d} s) must not be longer than MAX_TTL ({m} s)"
            )));
        }
    }
    Ok((default, max))
}

fn absolute(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    // Lexical clean-up of `.` components so labels and compose files show a tidy path.
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_parse() {
        assert_eq!(
            UserIds::parse("1000:1000"),
            Some(UserIds {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(UserIds::parse("0:0"), Some(UserIds { uid: 0, gid: 0 }));
        for bad in [
            "",
            "1000",
            "a:b",
            "1000:",
            ":1",
            "-1:2",
            "1:2:3",
            "99999999999:1",
        ] {
            assert_eq!(UserIds::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn relative_paths_become_absolute() {
        assert_eq!(
            absolute(Path::new("/srv"), "./data"),
            PathBuf::from("/srv/data")
        );
        assert_eq!(absolute(Path::new("/srv"), "/x/y"), PathBuf::from("/x/y"));
    }

    #[test]
    fn ttls_are_seconds_or_none_and_the_default_fits_the_max() {
        assert_eq!(parse_ttls(None, None).unwrap(), (None, None));
        assert_eq!(parse_ttls(Some("0"), Some("")).unwrap(), (None, None));
        assert_eq!(
            parse_ttls(Some("3600"), Some("1d")).unwrap(),
            (Some(3600), Some(86_400))
        );
        assert_eq!(
            parse_ttls(Some("30m"), Some("12h")).unwrap(),
            (Some(1800), Some(43_200))
        );
        assert!(parse_ttls(Some("2h"), Some("1h")).is_err());
        assert!(parse_ttls(Some("soon"), None).is_err());
        assert!(parse_ttls(None, Some("-5")).is_err());
        assert!(parse_ttls(None, Some("5w")).is_err());
        assert!(parse_ttls(None, Some("99999d")).is_err());
    }

    #[test]
    fn default_disk_is_none_or_a_size() {
        assert_eq!(parse_default_disk(None).unwrap(), None);
        assert_eq!(parse_default_disk(Some("0")).unwrap(), None);
        assert_eq!(
            parse_default_disk(Some("1g")).unwrap(),
            Some(("1g".into(), 1 << 30))
        );
        assert!(parse_default_disk(Some("1m")).is_err());
        assert!(parse_default_disk(Some("lots")).is_err());
    }

    #[test]
    fn default_memory_and_cpus() {
        let parse = |m: Option<&str>, c: Option<&str>| parse_default_limits(m, c, 2);
        assert_eq!(parse(None, None).unwrap(), (Some(1 << 30), Some(1.0)));
        assert_eq!(parse(Some("0"), Some("0")).unwrap(), (None, None));
        assert_eq!(
            parse(Some("512m"), Some("1.5")).unwrap(),
            (Some(512 << 20), Some(1.5))
        );
        // More CPUs than the host has: Docker would refuse every container.
        assert_eq!(parse(None, Some("64")).unwrap().1, Some(2.0));
        assert_eq!(parse_default_limits(None, None, 1).unwrap().1, Some(1.0));
        for (m, c) in [
            (Some("1m"), None),
            (Some("lots"), None),
            (None, Some("-1")),
            (None, Some("0.001")),
            (None, Some("NaN")),
            (None, Some("x")),
        ] {
            assert!(parse(m, c).is_err(), "{m:?} {c:?}");
        }
    }
}

#[cfg(test)]
mod swarm_settings_tests {
    use super::{tcp_address, Endpoint, SwarmNodes, TlsFiles};
    use std::path::PathBuf;

    fn per_node(name: &str) -> Result<TlsFiles, String> {
        Ok(TlsFiles(PathBuf::from("/certs").join(name)))
    }

    #[test]
    fn swarm_nodes_are_names_and_unix_sockets_or_tls_endpoints() {
        let nodes = SwarmNodes::parse(
            " n1=unix:///run/n1.sock, node-2.x = tcp://10.0.0.2:2376 ,",
            &per_node,
        )
        .unwrap();
        assert_eq!(
            nodes.endpoint("n1"),
            Some(&Endpoint::Unix("unix:///run/n1.sock".into()))
        );
        assert_eq!(
            nodes.endpoint("node-2.x"),
            Some(&Endpoint::Tls {
                url: "tcp://10.0.0.2:2376".into(),
                certs: TlsFiles("/certs/node-2.x".into()),
            })
        );
        assert_eq!(
            nodes.endpoint("node-2.x").unwrap().url(),
            "tcp://10.0.0.2:2376"
        );
        assert_eq!(nodes.endpoint("n3"), None);
        assert_eq!(
            SwarmNodes::parse("", &per_node).unwrap(),
            SwarmNodes::default()
        );
        for bad in [
            "n1",
            "=unix:///x",
            "n 1=unix:///x",
            "n1=/run/x.sock",
            "n1=unix://relative",
            "n1=unix:///a,n1=unix:///b",
            "n1=http://x:2375",
            "n1=https://x:2376",
            "n1=tcp://10.0.0.1",
            "n1=tcp://10.0.0.1:0",
            "n1=tcp://10.0.0.1:2376/path",
            "n1=tcp://:2376",
            "..=tcp://10.0.0.1:2376",
            ".=unix:///x",
        ] {
            assert!(SwarmNodes::parse(bad, &per_node).is_err(), "{bad}");
        }
        // Where a node's certificates cannot be said, the entry is refused.
        let none = |_: &str| Err::<TlsFiles, _>("no certificates".to_owned());
        assert!(SwarmNodes::parse("n1=tcp://a:1", &none)
            .unwrap_err()
            .contains("no certificates"));
        assert!(SwarmNodes::parse("n1=unix:///a", &none).is_ok());
    }

    #[test]
    fn tcp_addresses_are_host_and_port() {
        for good in ["10.0.0.1:2376", "node1.example:2376", "[fd00::1]:2376"] {
            assert!(tcp_address(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1",
            "fd00::1:2376",
            "a:b",
            "a:70000",
            "u@a:1",
            "a/b:1",
        ] {
            assert!(tcp_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn certificate_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("n1");
        std::fs::create_dir(&node).unwrap();
        let nodes = SwarmNodes::parse("n1=tcp://10.0.0.1:2376", &|name| {
            Ok(TlsFiles(dir.path().join(name)))
        })
        .unwrap();
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(node.join("ca.pem"), cert).unwrap();
        std::fs::write(node.join("cert.pem"), cert).unwrap();
        let e = nodes.check_certs().unwrap_err();
        assert!(
            e.contains("n1=tcp://10.0.0.1:2376") && e.contains("n1/key.pem"),
            "{e}"
        );
        std::fs::write(node.join("key.pem"), cert).unwrap();
        let e = nodes.check_certs().unwrap_err();
        assert!(e.contains("key.pem holds no PEM private key"), "{e}");
        std::fs::write(
            node.join("key.pem"),
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        nodes.check_certs().unwrap();
        std::fs::write(node.join("ca.pem"), "not a certificate").unwrap();
        let e = nodes.check_certs().unwrap_err();
        assert!(e.contains("ca.pem holds no PEM certificate"), "{e}");
    }

    #[test]
    fn swarm_publish_is_host_by_default_and_ingress_only_with_ipvs() {
        use super::SwarmPublish;
        let none = std::path::Path::new("/nonexistent/ip_vs");
        let some = std::path::Path::new("/proc/self/status");
        assert_eq!(SwarmPublish::parse(None, none), Ok(SwarmPublish::Host));
        assert_eq!(
            SwarmPublish::parse(Some(" Host "), none),
            Ok(SwarmPublish::Host)
        );
        assert_eq!(
            SwarmPublish::parse(Some("ingress"), some),
            Ok(SwarmPublish::Ingress)
        );
        let refused = SwarmPublish::parse(Some("ingress"), none).unwrap_err();
        assert!(
            refused.contains("IPVS") && refused.contains("SWARM_PUBLISH=host"),
            "{refused}"
        );
        assert!(SwarmPublish::parse(Some("mesh"), some).is_err());
    }
}

#[cfg(test)]
mod update_window_tests {
    use super::UpdateWindow;

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let w = UpdateWindow::parse("02:00-04:30").unwrap();
        assert_eq!((w.start, w.end), (120, 270));
        assert!(w.contains(120) && w.contains(269) && !w.contains(270) && !w.contains(60));
        let night = UpdateWindow::parse(" 22:00 - 02:00 ").unwrap();
        assert!(night.contains(23 * 60) && night.contains(30) && !night.contains(12 * 60));
        for bad in [
            "",
            "2-4",
            "02:00",
            "25:00-01:00",
            "01:00-01:00",
            "01:60-02:00",
        ] {
            assert!(UpdateWindow::parse(bad).is_err(), "{bad}");
        }
    }
}
