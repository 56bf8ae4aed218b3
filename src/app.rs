//! The shared state handlers and background tasks work with, and the server's life cycle:
//! open everything, serve, shut down cleanly.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::Config;
use crate::http::auth::{Credentials, FailureThrottle};
use crate::store::{Identity, Store};

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub identity: Arc<Identity>,
    pub docker: crate::docker::Engine,
    pub audit: Arc<Audit>,
    pub credentials: Arc<Credentials>,
    pub throttle: Arc<FailureThrottle>,
    /// `docker compose version`, read once at start-up.
    pub compose_version: Arc<Option<String>>,
    pub reconciler: crate::reconcile::Reconciler,
    /// Background tasks (the reconciler), awaited at shutdown.
    background: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Cancelled when the server is shutting down; background tasks stop on it.
    pub shutdown: CancellationToken,
    /// File routes: staging area and per-container upload locks.
    pub files: Arc<crate::fs::Files>,
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
}

impl AppState {
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
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StartError::Dir(config.data_dir.display().to_string(), e))?;
        crate::error::set_development(config.development);
        let store = Store::open(&config.database_url).await?;
        if let Some(file) = crate::store::file_of(&config.database_url) {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
        let identity = store.identity().await?;
        let known = store.all_cuids().await?.into_iter().collect();
        crate::fs::mounts::remove_orphans(crate::fs::mounts::orphans(&config, &known));
        let audit =
            Audit::open(&config.log_dir, config.audit_max_bytes).map_err(StartError::Audit)?;
        let docker = crate::docker::Engine::connect().await;
        // Read once here (a fraction of a second), so health never spawns a process.
        let compose_version = Arc::new(crate::docker::compose_version().await);
        let reconciler = crate::reconcile::Reconciler::new();
        let files = crate::fs::Files::open(&config).map_err(|e| {
            StartError::Dir(config.data_dir.join("staging").display().to_string(), e)
        })?;
        let config = Arc::new(config);
        let identity = Arc::new(identity);
        let audit = Arc::new(audit);
        let reconciler_task = reconciler.spawn(
            crate::reconcile::Ctx::new(
                config.clone(),
                store.clone(),
                docker.clone(),
                audit.clone(),
                identity.clone(),
                reconciler.clone(),
            ),
            shutdown.clone(),
        );
        Ok(Self {
            background: Arc::new(std::sync::Mutex::new(vec![reconciler_task])),
            reconciler,
            credentials: Arc::new(Credentials::new(&config.app_user, &config.app_pass)),
            throttle: Arc::new(FailureThrottle::new(config.auth_max_failures)),
            config,
            store,
            identity,
            docker,
            audit,
            compose_version,
            shutdown,
            files: Arc::new(files),
        })
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight requests
/// [`DRAIN_TIMEOUT`] to finish and returns once background tasks have stopped.
pub async fn serve(state: AppState, listener: TcpListener) -> Result<(), StartError> {
    let shutdown = state.shutdown.clone();
    let app = crate::http::router(state.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());

    let drain_limit = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result.map_err(StartError::Serve)?,
        () = drain_limit => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
    }
    // Stop background tasks (they watch `shutdown`) before closing the store they use.
    shutdown.cancel();
    let tasks = std::mem::take(&mut *state.background.lock().unwrap_or_else(|p| p.into_inner()));
    for task in tasks {
        let _ = task.await;
    }
    state.store.pool.close().await;
    Ok(())
}
