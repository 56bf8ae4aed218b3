//! The shared state handlers and background tasks work with, and opening it.
//!
//! Opening the state prepares everything (directories, store, audit log, Docker client) but
//! starts nothing: the reconciler is started by [`crate::server::start_background`], so a caller
//! can build the state (and the router from it) without a controller acting on Docker.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::Config;
use crate::credentials::{Credentials, FailureThrottle};
use crate::store::{Identity, Store};

/// A background task and its name (for the log, should it not stop in time).
pub(crate) type Background = (&'static str, tokio::task::JoinHandle<()>);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub identity: Arc<Identity>,
    pub docker: crate::docker::Engine,
    /// `BACKEND=swarm`: each node's own Engine API (`SWARM_NODES`); empty otherwise.
    pub nodes: crate::docker::NodeEngines,
    pub audit: Arc<Audit>,
    pub credentials: Arc<Credentials>,
    pub throttle: Arc<FailureThrottle>,
    /// `docker compose version`, read once at start-up.
    pub compose_version: Arc<Option<String>>,
    /// The reconciler's queue and change signal. Handlers wake it and wait on it; its worker
    /// runs only once started.
    pub reconciler: crate::reconcile::Reconciler,
    /// Background tasks (the reconciler, the events feed) by name, awaited at shutdown.
    pub(crate) background: Arc<std::sync::Mutex<Vec<Background>>>,
    /// Cancelled when the server is shutting down; background tasks stop on it.
    pub shutdown: CancellationToken,
    /// File routes: staging area and per-container upload locks.
    pub files: Arc<crate::appdir::Files>,
    /// Console sign-in sessions.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// The change feed of `GET /events`.
    pub events: Arc<crate::events::Feed>,
    /// API tokens, tenants' quotas and request rates.
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    /// The containers' deadlines (`lifetime`): every write that changes one reports it
    /// here; the timer task runs once started.
    pub deadlines: crate::expiry::Deadlines,
    /// What counts as use of each container, for idle policies (in memory).
    pub idle: Arc<crate::idle::Tracker>,
    /// Webhook deliveries: the API wakes their worker.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

impl AppState {
    /// Finds a container's engine: this host's daemon, or the Swarm node that runs it.
    pub fn locator(&self) -> crate::reconcile::locate::Locator {
        crate::reconcile::locate::Locator::new(
            self.config.clone(),
            self.identity.instance_id.clone(),
            self.docker.clone(),
            self.nodes.clone(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot open the state store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    /// A Docker daemon refuses this server's TLS certificates, or a Swarm node does not see
    /// its app storage: one line saying which and why.
    #[error("{0}")]
    Docker(String),
}

impl AppState {
    /// Opens everything the server works with. Starts no task: see
    /// [`crate::server::start_background`].
    pub async fn open(config: Config, shutdown: CancellationToken) -> Result<Self, StartError> {
        for dir in [
            config.data_dir.clone(),
            config.data_dir.join("projects"),
            config.data_dir.join("mounts"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StartError::Dir(dir.display().to_string(), e))?;
        }
        // Only the server may look inside: the database holds env values, and a container's
        // /app may hold whatever its (possibly root) process made, setuid files included.
        // Containers reach their /app through the bind mount, not through this path.
        // `mounts` too, on its own: it holds what root containers made (device nodes, setuid
        // binaries), so it stays closed to other host users even if DATA_DIR is opened up
        // or moved; a wider mode found there is put back at every start.
        let mounts = config.data_dir.join("mounts");
        for dir in [&config.data_dir, &mounts] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StartError::Dir(dir.display().to_string(), e))?;
        }
        // The HTTP health probe, where compose files point for `health.http`.
        crate::reconcile::probe::install(&config).map_err(|e| {
            StartError::Dir(
                crate::reconcile::probe::path(&config).display().to_string(),
                e,
            )
        })?;
        crate::error::set_development(config.development);
        let store = Store::open(&config.database_url).await?;
        if let Some(file) = crate::store::file_of(&config.database_url) {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
        let identity = store.identity().await?;
        let known = store.all_cuids().await?.into_iter().collect();
        crate::appdir::mounts::remove_orphans(crate::appdir::mounts::orphans(&config, &known));
        crate::appdir::mounts::settle_disks(&config, &known);
        {
            let ids = store.all_snapshot_ids().await?.into_iter().collect();
            crate::appdir::snapshot::sweep(&config, &known, &ids);
        }
        let audit =
            Audit::open(&config.log_dir, config.audit_max_bytes).map_err(StartError::Audit)?;
        let docker = crate::docker::Engine::connect_to(config.docker_host.clone()).await;
        let nodes = crate::docker::NodeEngines::new(
            config
                .backend
                .swarm()
                .map(|s| s.nodes.0.as_slice())
                .unwrap_or_default(),
        );
        if let Some(crate::docker::Endpoint::Tls { url, .. }) = docker.endpoint() {
            if let Err(e) = docker.get().await {
                let why = crate::docker::error_chain(&e);
                if crate::docker::is_tls_failure(&e) {
                    return Err(StartError::Docker(format!(
                        "DOCKER_HOST={url}: TLS failed (check DOCKER_CERT_PATH's ca.pem, cert.pem, key.pem): {why}"
                    )));
                }
                tracing::warn!(error = %why, "the Docker daemon of DOCKER_HOST does not answer yet");
            }
        }
        if config.backend.swarm().is_some() {
            crate::appdir::shared::at_start(&config, &nodes, &docker, &identity.instance_id)
                .await
                .map_err(StartError::Docker)?;
        }
        // Read once here (a fraction of a second), so health never spawns a process.
        let compose_version = Arc::new(crate::docker::compose_version().await);
        let files = crate::appdir::Files::open(&config).map_err(|e| {
            StartError::Dir(config.data_dir.join("staging").display().to_string(), e)
        })?;
        let tenancy = Arc::new(crate::tenancy::Tenancy::load(&store).await?);
        let sessions = Arc::new(
            crate::sessions::Sessions::load(&store, &config.app_user, &config.app_pass).await?,
        );
        let events = Arc::new(crate::events::Feed::new(
            config.events_window,
            config.events_max_bytes,
        ));
        Ok(Self {
            background: Arc::new(std::sync::Mutex::new(Vec::new())),
            reconciler: crate::reconcile::Reconciler::new(),
            credentials: Arc::new(Credentials::new(&config.app_user, &config.app_pass)),
            throttle: Arc::new(FailureThrottle::new(config.auth_max_failures)),
            config: Arc::new(config),
            store,
            identity: Arc::new(identity),
            docker,
            nodes,
            audit: Arc::new(audit),
            compose_version,
            shutdown,
            files: Arc::new(files),
            sessions,
            events,
            tenancy,
            deadlines: crate::expiry::Deadlines::new(),
            idle: Arc::default(),
            webhooks: Arc::default(),
        })
    }
}
