//! The Docker side that is not `docker compose`: the Engine API client (bollard) and a clean
//! environment for the `docker` CLI processes the server starts. A leaf: it knows nothing of
//! the rest of the server (what a failure means to a request is decided in `http`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::process::Command;

/// The Engine API client, connected per `DOCKER_HOST` (or the default socket) with an API
/// version agreed with the daemon (20.10 here speaks 1.41). A daemon that is not there yet
/// is not fatal: every use tries again, and health says `degraded` meanwhile.
#[derive(Clone, Default)]
pub struct Engine {
    /// Where the daemon is ([`Engine::at`]); `None`: per `DOCKER_HOST` or the default socket.
    endpoint: Option<Arc<Endpoint>>,
    client: Arc<RwLock<Option<Docker>>>,
    /// What [`Engine::userns`] last found out, and when.
    userns: Arc<RwLock<Option<UsernsSeen>>>,
}

/// An answer of [`Engine::userns`] and when it came.
type UsernsSeen = (Option<Userns>, Instant);

/// A daemon running with `userns-remap`: root in a container is `uid:gid` on the host, and a
/// container's uid `U` is `uid + U` there (gids alike). Files a container must write through a
/// bind mount have to be owned by those host ids; host files of unmapped ids (host root's)
/// read as `65534` inside and cannot be written even by the container's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Userns {
    pub uid: u32,
    pub gid: u32,
}

impl Userns {
    /// The host ids of the container's `uid:gid` (`None` past the end of the id space).
    pub fn host_ids(self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        Some((self.uid.checked_add(uid)?, self.gid.checked_add(gid)?))
    }

    /// From the daemon's `GET /info`: remapping is on when `SecurityOptions` holds
    /// `name=userns`; the daemon then keeps its data in `<data-root>/<uid>.<gid>`, which names
    /// the range. Failing that, the first range of `dockremap` (`userns-remap: default`) in
    /// `/etc/subuid` and `/etc/subgid`.
    pub fn from_info(
        security_options: &[String],
        docker_root_dir: Option<&str>,
    ) -> Result<Option<Userns>, String> {
        if !security_options
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=userns"))
        {
            return Ok(None);
        }
        if let Some(found) = docker_root_dir.and_then(Self::from_root_dir) {
            return Ok(Some(found));
        }
        let first = |file: &str| -> Option<u32> {
            let text = std::fs::read_to_string(file).ok()?;
            Self::sub_id_start(&text, "dockremap")
        };
        match (first("/etc/subuid"), first("/etc/subgid")) {
            (Some(uid), Some(gid)) => Ok(Some(Userns { uid, gid })),
            _ => Err(format!(
                "the daemon remaps user namespaces, but neither its data root {docker_root_dir:?} \
                 nor /etc/subuid and /etc/subgid (user dockremap) say to which ids"
            )),
        }
    }

    /// `/var/lib/docker/100000.100000` -> 100000:100000.
    fn from_root_dir(dir: &str) -> Option<Userns> {
        let last = dir.trim_end_matches('/').rsplit('/').next()?;
        let (uid, gid) = last.split_once('.')?;
        Some(Userns {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    }

    /// The start of `user`'s first range in a `/etc/subuid`-style text (`name:start:count`).
    fn sub_id_start(text: &str, user: &str) -> Option<u32> {
        text.lines().find_map(|line| {
            let mut parts = line.trim().split(':');
            (parts.next()? == user).then_some(())?;
            parts.next()?.parse().ok()
        })
    }
}

/// Where a daemon's Engine API is: a unix socket, or `tcp://host:port` with mutual TLS as
/// the docker CLI does it (`--tlsverify`: the daemon's certificate checked against `ca.pem`,
/// this client known to the daemon by `cert.pem` and `key.pem`). Plain TCP is not one of
/// them: whoever reaches such a port is root on that host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path`.
    Unix(String),
    /// `tcp://host:port` and the directory of the certificates.
    Tls { url: String, certs: TlsFiles },
}

impl Endpoint {
    /// As written in the settings (`unix:///…`, `tcp://…`).
    pub fn url(&self) -> &str {
        match self {
            Self::Unix(url) | Self::Tls { url, .. } => url,
        }
    }

    fn connect(&self) -> Result<Docker, bollard::errors::Error> {
        match self {
            Self::Unix(url) => Docker::connect_with_unix(
                url.trim_start_matches("unix://"),
                120,
                bollard::API_DEFAULT_VERSION,
            ),
            Self::Tls { url, certs } => connect_tls(url, certs),
        }
    }
}

/// A client of the daemon at `url` (`tcp://host:port`) over mutual TLS that trusts only
/// `certs`' `ca.pem`. (bollard's own `connect_with_ssl` also trusts every CA of the
/// system's store: any publicly trusted certificate for a node's name or address would
/// pass for its daemon.)
fn connect_tls(url: &str, certs: &TlsFiles) -> Result<Docker, bollard::errors::Error> {
    use bollard::errors::Error::{CertParseError, CertPathError};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pems = |path: PathBuf| {
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|_| CertPathError { path: path.clone() })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| CertParseError { path: path.clone() })?;
        Ok::<_, bollard::errors::Error>((path, certs))
    };
    let (ca, authorities) = pems(certs.ca())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in authorities {
        roots
            .add(c)
            .map_err(|_| CertParseError { path: ca.clone() })?;
    }
    let (_, chain) = pems(certs.cert())?;
    let key_path = certs.key();
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|_| CertParseError {
        path: key_path.clone(),
    })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| CertParseError {
        path: key_path.clone(),
    })?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|_| CertParseError { path: key_path })?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https);
    Docker::connect_with_custom_transport(
        move |request: bollard::BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(request)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(url.replacen("tcp://", "https://", 1)),
        120,
        bollard::API_DEFAULT_VERSION,
    )
}

/// A directory of Docker's client certificate files: `ca.pem` (the CA that signed the
/// daemon's certificate), `cert.pem` and `key.pem` (this client's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles(pub PathBuf);

impl TlsFiles {
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }

    /// Each file is there, readable and holds what it should (PEM certificates; one private
    /// key): the error names the file. (Whether the daemon accepts them shows at the first
    /// connection: see [`is_tls_failure`].)
    pub fn check(&self) -> Result<(), String> {
        let read = |path: &Path, what: &str, label: &dyn Fn(&str) -> bool| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let blocks: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
                .filter_map(|l| l.strip_suffix("-----"))
                .collect();
            if blocks.iter().any(|b| label(b)) {
                Ok(())
            } else {
                Err(format!("{} holds no PEM {what}", path.display()))
            }
        };
        read(&self.ca(), "certificate", &|b| b == "CERTIFICATE")?;
        read(&self.cert(), "certificate", &|b| b == "CERTIFICATE")?;
        read(&self.key(), "private key", &|b| b.ends_with("PRIVATE KEY"))
    }
}

/// Whether `e` is a TLS failure (a certificate refused by either side, a handshake that
/// failed) rather than a daemon that does not answer: a setting to fix, not a node to wait for.
pub fn is_tls_failure(e: &bollard::errors::Error) -> bool {
    // `IOError` is transparent: its `source` would skip what the io::Error wraps.
    let first: &(dyn std::error::Error + 'static) = match e {
        bollard::errors::Error::IOError { err } => err,
        other => other,
    };
    let mut next = Some(first);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's `source` skips what it wraps.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.is::<rustls::Error>() {
                return true;
            }
        }
        next = err.source();
    }
    // Wrappers that hide the type (a boxed cause behind a transparent error): rustls's own
    // words for a refused or unverifiable certificate.
    let text = error_chain(e);
    [
        "received fatal alert",
        "invalid peer certificate",
        "peer sent no certificates",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// `e` and its causes, `: `-joined (a connection error's useful part is in its sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = err.source();
    }
    out
}

impl Engine {
    pub async fn connect() -> Self {
        Self::connect_to(None).await
    }

    /// The engine of `endpoint` (`None`: per `DOCKER_HOST` or the default socket), with a
    /// first connection tried now.
    pub async fn connect_to(endpoint: Option<Endpoint>) -> Self {
        let engine = Self {
            endpoint: endpoint.map(Arc::new),
            ..Self::default()
        };
        if let Err(e) = engine.get().await {
            tracing::warn!(error = %error_chain(&e), "Docker is not reachable yet; will keep trying");
        }
        engine
    }

    /// An engine for the daemon at `endpoint`, connected at first use.
    pub fn at(endpoint: Endpoint) -> Self {
        Self {
            endpoint: Some(Arc::new(endpoint)),
            ..Self::default()
        }
    }

    /// Where it connects (`None`: per `DOCKER_HOST` or the default socket).
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_deref()
    }

    /// The connected client, connecting first if needed.
    pub async fn get(&self) -> Result<Docker, bollard::errors::Error> {
        if let Some(client) = self
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(client);
        }
        let docker = match self.endpoint.as_deref() {
            Some(endpoint) => endpoint.connect()?,
            None => Docker::connect_with_defaults()?,
        };
        let negotiated = tokio::time::timeout(Duration::from_secs(2), docker.negotiate_version())
            .await
            .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Whether the daemon remaps user namespaces, asked now (one `GET /info`, within 2 s: the
    /// setting changes only with a daemon restart, which the server may not see otherwise).
    pub async fn userns(&self) -> Result<Option<Userns>, String> {
        let ask = async {
            let info = self.get().await?.info().await?;
            Ok::<_, bollard::errors::Error>(info)
        };
        let info = tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .map_err(|_| "Docker did not answer within 2 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let found = Userns::from_info(
            info.security_options.as_deref().unwrap_or_default(),
            info.docker_root_dir.as_deref(),
        )?;
        let mut last = self.userns.write().unwrap_or_else(|p| p.into_inner());
        if last.map(|(seen, _)| seen) != Some(found) {
            tracing::info!(userns = ?found, "Docker's user namespace remapping");
        }
        *last = Some((found, Instant::now()));
        Ok(found)
    }

    /// What [`Engine::userns`] found within [`USERNS_FRESH`], else asked now (a `GET /info`
    /// takes tens of milliseconds: creates and uploads do not pay it each time); when the
    /// daemon does not answer, what it said last (nothing if it never did).
    pub async fn userns_recent(&self) -> Option<Userns> {
        let last = *self.userns.read().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, at)) = last {
            if at.elapsed() < USERNS_FRESH {
                return seen;
            }
        }
        match self.userns().await {
            Ok(found) => found,
            Err(e) => {
                let seen = last.and_then(|(seen, _)| seen);
                tracing::warn!(error = %e, userns = ?seen, "cannot ask Docker about userns-remap; using what it said last");
                seen
            }
        }
    }
}

/// A Swarm's nodes, each reached through its own Engine API (`SWARM_NODES`), connected at
/// first use and kept; and the names of the nodes the manager last said were not ready
/// (what terminals on those nodes end with).
#[derive(Clone, Default)]
pub struct NodeEngines {
    engines: Arc<Vec<(String, Engine)>>,
    down: Arc<tokio::sync::watch::Sender<std::collections::BTreeSet<String>>>,
    /// What the shared-storage check found on each.
    pub storage: StorageSeen,
}

impl NodeEngines {
    /// From `(node name, endpoint)` pairs.
    pub fn new(endpoints: &[(String, Endpoint)]) -> Self {
        Self {
            engines: Arc::new(
                endpoints
                    .iter()
                    .map(|(name, endpoint)| (name.clone(), Engine::at(endpoint.clone())))
                    .collect(),
            ),
            down: Arc::default(),
            storage: StorageSeen::default(),
        }
    }

    /// The names of the nodes that are not ready, as the reconciler last listed them.
    pub fn set_down(&self, names: std::collections::BTreeSet<String>) {
        self.down.send_if_modified(|now| {
            let changed = *now != names;
            *now = names;
            changed
        });
    }

    /// Follows [`Self::set_down`].
    pub fn down(&self) -> tokio::sync::watch::Receiver<std::collections::BTreeSet<String>> {
        self.down.subscribe()
    }

    /// Every node's name and engine.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Engine)> {
        self.engines.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// The engine of node `name`, if it is listed.
    pub fn of(&self, name: &str) -> Option<&Engine> {
        self.engines.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.engines.iter().map(|(n, _)| n.as_str())
    }
}

/// The label of the storage check's containers; its value is the instance id of the server
/// that created them (`GET /healthz` `instance_id`).
pub const LABEL_STORAGE_CHECK: &str = "com.container-manager.storage-check";
/// How long the removal of a check's container may take once its check was abandoned.
const CHECK_CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// Whether the daemon of `docker` sees, at the same path, the file `dir/name` that holds
/// `token`: a container is created (never started) from an image the daemon has, with `dir`
/// bound read-only; the file is read back through the archive API
/// (`GET /containers/{id}/archive`); the container is removed. `Ok(Err(why))`: the daemon
/// answered and does not see it; `Err`: it did not answer (or answered `409`: try again).
///
/// The container has a name of its own per attempt and the label [`LABEL_STORAGE_CHECK`]
/// `= owner` (this server's instance id). Containers of `owner`'s earlier attempts (a check
/// cut by its timeout, a server killed meanwhile) are removed first. A caller that drops this
/// future after the create (its timeout) leaves the removal to a spawned task.
pub async fn sees_file(
    docker: &Docker,
    dir: &Path,
    name: &str,
    token: &str,
    owner: &str,
) -> Result<Result<(), String>, bollard::errors::Error> {
    use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    };
    use futures_util::TryStreamExt;
    const TARGET: &str = "/cm-storage-check";
    let answered = |e: &bollard::errors::Error| match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => Some(message.clone()),
        _ => None,
    };
    remove_storage_checks(docker, owner).await;
    let image = match probe_image(docker).await {
        Ok(image) => image,
        Err(e) => return answered(&e).map(Err).ok_or(e),
    };
    let body = ContainerCreateBody {
        image: Some(image),
        entrypoint: Some(vec!["/never-started".into()]),
        cmd: Some(Vec::new()),
        network_disabled: Some(true),
        labels: Some([(LABEL_STORAGE_CHECK.to_owned(), owner.to_owned())].into()),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                typ: Some(MountType::BIND),
                source: Some(dir.display().to_string()),
                target: Some(TARGET.into()),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // One name per attempt: an earlier attempt's container still there is no conflict.
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    let container_name = format!("cm-storage-check-{}", &attempt[..16]);
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&container_name)
                    .build(),
            ),
            body,
        )
        .await;
    let id = match created {
        Ok(c) => c.id,
        // A name taken all the same: no verdict on the storage, checked again.
        Err(
            e @ bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            },
        ) => return Err(e),
        Err(e) => {
            return answered(&e)
                .map(|m| Err(format!("cannot bind {} there: {m}", dir.display())))
                .ok_or(e)
        }
    };
    let mut created = RemoveOnDrop {
        docker: docker.clone(),
        id: Some(id.clone()),
    };
    let read: Result<Vec<u8>, _> = docker
        .download_from_container(
            &id,
            Some(
                DownloadFromContainerOptionsBuilder::new()
                    .path(&format!("{TARGET}/{name}"))
                    .build(),
            ),
        )
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await;
    created.remove().await;
    let file = dir.join(name);
    match read {
        // A tar of one small file: the token appears as is.
        Ok(tar) if tar.windows(token.len()).any(|w| w == token.as_bytes()) => Ok(Ok(())),
        Ok(_) => Ok(Err(format!(
            "{} there is not the file this server wrote (another storage at the same path)",
            file.display()
        ))),
        Err(e) => answered(&e)
            .map(|m| Err(format!("{} is not there: {m}", file.display())))
            .ok_or(e),
    }
}

/// Removes the storage-check containers `owner` left on the daemon (errors ignored: the
/// check that follows says whether the daemon answers).
async fn remove_storage_checks(docker: &Docker, owner: &str) {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_STORAGE_CHECK}={owner}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(left) = docker.list_containers(Some(options)).await else {
        return;
    };
    for c in left {
        if let Some(id) = c.id {
            tracing::info!(container = %id, "removing a storage-check container an earlier check left");
            remove_check_container(docker, &id).await;
        }
    }
}

async fn remove_check_container(docker: &Docker, id: &str) {
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    let _ = docker
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
}

/// A check's container, removed by [`RemoveOnDrop::remove`], or by a spawned task when the
/// check is dropped before (its timeout) so that the removal does not depend on the check's
/// time.
struct RemoveOnDrop {
    docker: Docker,
    id: Option<String>,
}

impl RemoveOnDrop {
    async fn remove(&mut self) {
        if let Some(id) = &self.id {
            remove_check_container(&self.docker, id).await;
        }
        // Only once done: a removal cut short is spawned again by `drop`.
        self.id = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let docker = self.docker.clone();
        runtime.spawn(async move {
            let removed =
                tokio::time::timeout(CHECK_CLEANUP_LIMIT, remove_check_container(&docker, &id))
                    .await;
            if removed.is_err() {
                tracing::warn!(container = %id,
                    "a storage-check container could not be removed: the next check of the node removes it");
            }
        });
    }
}

/// An image the daemon has, for a container never started: any, else an empty one imported
/// (`container-manager/storage-check:1`, no layer content). The imported image stays: it
/// holds no byte of content, the next check finds it (one import per node, ever), and
/// removing it could pull it from under another server's check of the same node that
/// listed it a moment before (its create would fail, read as "not shared").
async fn probe_image(docker: &Docker) -> Result<String, bollard::errors::Error> {
    use bollard::query_parameters::CreateImageOptionsBuilder;
    use futures_util::TryStreamExt;
    const EMPTY: &str = "container-manager/storage-check:1";
    let images = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await?;
    if let Some(image) = images.into_iter().next() {
        return Ok(image.id);
    }
    // An empty tar: two zero blocks.
    let empty = bytes::Bytes::from(vec![0u8; 1024]);
    docker
        .create_image(
            Some(
                CreateImageOptionsBuilder::new()
                    .from_src("-")
                    .repo("container-manager/storage-check")
                    .tag("1")
                    .build(),
            ),
            Some(bollard::body_full(empty)),
            None,
        )
        .try_collect::<Vec<_>>()
        .await?;
    Ok(EMPTY.to_owned())
}

/// What the start-up check of the shared storage found on each node (README "Swarm
/// backend"), shown by `/healthz`: `shared`, `unchecked: why` (not reachable yet; checked
/// again until it is), `not shared: why`.
#[derive(Clone, Default)]
pub struct StorageSeen(Arc<RwLock<std::collections::BTreeMap<String, String>>>);

impl StorageSeen {
    pub fn get(&self, node: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    pub fn set(&self, node: &str, seen: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), seen);
    }

    /// The nodes still `unchecked`.
    pub fn unchecked(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| s.starts_with("unchecked"))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// One node of a Swarm as its manager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmNode {
    pub id: String,
    /// The node's host name (what `SWARM_NODES` and placement constraints name).
    pub name: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
    pub address: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The Swarm's nodes, from its manager (`GET /nodes`), sorted by name.
pub async fn swarm_nodes(manager: &Docker) -> Result<Vec<SwarmNode>, bollard::errors::Error> {
    let nodes = manager
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await?;
    let mut out: Vec<SwarmNode> = nodes
        .into_iter()
        .map(|n| {
            let spec = n.spec.unwrap_or_default();
            let status = n.status.unwrap_or_default();
            let text = |v: Option<String>| v.unwrap_or_default().to_lowercase();
            SwarmNode {
                id: n.id.unwrap_or_default(),
                name: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                state: text(status.state.map(|s| s.to_string())),
                availability: text(spec.availability.map(|a| a.to_string())),
                role: text(spec.role.map(|r| r.to_string())),
                address: status.addr,
                labels: spec.labels.unwrap_or_default().into_iter().collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// How long an answer of [`Engine::userns`] serves [`Engine::userns_recent`].
pub const USERNS_FRESH: Duration = Duration::from_secs(10);

/// Environment variables a `docker` CLI child may see. Everything else, the server's own
/// secrets (`APP_PASS`, all of `.env`) included, stays out of compose and the containers.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "TMPDIR",
];

/// A `docker …` command with a clean environment, in its own process group (so it can be
/// killed as a whole and is not hit by a terminal's Ctrl-C), killed if its handle is dropped.
pub fn docker_command() -> Command {
    let mut cmd = Command::new("docker");
    cmd.env_clear();
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// `docker compose version --short`, read once at start-up (health never spawns a process).
pub async fn compose_version() -> Option<String> {
    let mut cmd = docker_command();
    cmd.args(["compose", "version", "--short"]);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .ok()?
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .to_owned();
    (out.status.success() && !version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::Userns;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remapping_is_read_from_the_security_options_and_the_data_root() {
        let plain = opts(&["name=seccomp,profile=default"]);
        assert_eq!(Userns::from_info(&plain, Some("/var/lib/docker")), Ok(None));
        let remapped = opts(&["name=seccomp,profile=default", "name=userns"]);
        assert_eq!(
            Userns::from_info(&remapped, Some("/var/lib/docker/100000.100001")),
            Ok(Some(Userns {
                uid: 100000,
                gid: 100001
            }))
        );
        assert_eq!(
            Userns {
                uid: 100000,
                gid: 100000
            }
            .host_ids(1000, 0),
            Some((101000, 100000))
        );
        assert_eq!(
            Userns {
                uid: u32::MAX,
                gid: 0
            }
            .host_ids(1, 0),
            None
        );
    }

    #[test]
    fn sub_id_files_name_the_first_range_of_the_user() {
        let text = "alice:100000:65536\ndockremap:231072:65536\ndockremap:400000:10\n";
        assert_eq!(Userns::sub_id_start(text, "dockremap"), Some(231072));
        assert_eq!(Userns::sub_id_start(text, "bob"), None);
        assert_eq!(Userns::from_root_dir("/var/lib/docker"), None);
    }
}
