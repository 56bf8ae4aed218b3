//! The host side of a container's `/app`: its directory under `DATA_DIR/mounts`, and the
//! file routes' machinery: confined lookups ([`confine`]), ZIP upload ([`unzip`]) and ZIP
//! download ([`zipout`]).

pub mod confine;
pub mod mounts;
pub mod unzip;
pub mod zipout;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// How many uploads are checked, indexed and extracted at once, server-wide. Indexing a ZIP
/// holds its central directory in memory (up to [`unzip::MAX_DIRECTORY_BYTES`], and the
/// plan its names again) and extraction is disk-bound, so uploads to different containers
/// wait for one another here rather than add up.
pub const MAX_PARALLEL_EXTRACTIONS: usize = 2;

/// Shared state of the file routes: the staging area, the per-container upload locks and
/// the server-wide extraction permits.
pub struct Files {
    staging: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    extractions: Arc<tokio::sync::Semaphore>,
}

impl Files {
    /// `DATA_DIR/staging`: private to the server (mode 0700), on the same filesystem as the
    /// mounts so staged files move into place by rename. Leftovers of a crash are removed.
    pub fn open(config: &Config) -> std::io::Result<Self> {
        let staging = config.data_dir.join("staging");
        match std::fs::DirBuilder::new().mode(0o700).create(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for entry in std::fs::read_dir(&staging)? {
                    let path = entry?.path();
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove staging leftovers");
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            staging,
            locks: Mutex::new(HashMap::new()),
            extractions: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_EXTRACTIONS)),
        })
    }

    pub fn staging_root(&self) -> &Path {
        &self.staging
    }

    /// A fresh staging directory, removed with everything in it when dropped.
    pub fn staging_dir(&self) -> std::io::Result<StagingDir> {
        let path = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(StagingDir { path })
    }

    /// Serializes uploads to one container. The guard is owned so it can travel into the
    /// blocking task that does the work (and outlive a client that hung up).
    pub async fn lock(&self, cuid: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(cuid.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// One of the [`MAX_PARALLEL_EXTRACTIONS`] permits to index and extract an upload, taken
    /// once the body is on disk (and the container's lock held). Owned, like the lock, so it
    /// travels into the blocking task and is held until the work is done.
    pub async fn extraction_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.extractions
            .clone()
            .acquire_owned()
            .await
            .expect("the extraction semaphore is never closed")
    }
}

/// A directory under `DATA_DIR/staging`, removed on drop.
pub struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        // Hardened against symlinks (std's remove_dir_all never follows them).
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a staging directory");
            }
        }
    }
}
