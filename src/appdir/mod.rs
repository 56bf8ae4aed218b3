//! The host side of a container's `/app`: its directory under `DATA_DIR/mounts`, and the
//! file routes' machinery: confined lookups ([`confine`]), ZIP upload ([`unzip`], its commit
//! [`place`] and that commit's crash journal [`journal`]) and ZIP download ([`zipout`]).
//! Directory listings are [`listing`].

pub mod confine;
pub mod disk;
pub mod error;
pub mod journal;
pub mod listing;
pub mod mounts;
pub mod ops;
pub mod place;
pub mod plan;
pub mod remove;
pub mod shared;
pub mod snapshot;
pub mod unzip;
pub mod upload;
pub mod zipout;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
pub use error::{Error, FilesResult, Pool, Reason};

/// How many uploads are checked, indexed and extracted at once, server-wide. Indexing a ZIP
/// holds its central directory in memory (up to [`unzip::MAX_DIRECTORY_BYTES`], and the
/// plan its names again) and extraction is disk-bound, so uploads to different containers
/// wait for one another here rather than add up.
pub const MAX_PARALLEL_EXTRACTIONS: usize = 2;

/// How many uploads are in flight at once, server-wide, from the first byte of the body to
/// the answer: each holds up to `UPLOAD_MAX_BYTES` (and then what it inflates) in the staging
/// area, so later ones wait (before their body is read) rather than fill the disk.
pub const MAX_PARALLEL_UPLOADS: usize = 4;

/// How many download-zips run at once, server-wide: each holds a blocking-pool thread for
/// its whole transfer, so later ones wait for a permit rather than pin every such thread.
pub const MAX_PARALLEL_DOWNLOAD_ZIPS: usize = 8;

/// How many directory listings read at once, server-wide: each holds a blocking-pool thread
/// for a read of up to [`listing::MAX_SCANNED`] names (its memory is bounded by its page).
pub const MAX_PARALLEL_LISTINGS: usize = 4;

/// How long a listing waits for one of the [`MAX_PARALLEL_LISTINGS`] slots before `503
/// LISTING_SLOTS_BUSY` (a listing of a million names takes well under a second).
pub const LISTING_SLOT_WAIT: Duration = Duration::from_secs(10);

/// `Retry-After` of a `503 *_SLOTS_BUSY` (see [`Error::SlotsBusy`]).
pub const SLOTS_BUSY_RETRY_AFTER_SECS: u64 = 5;

/// One permit of `semaphore`, waiting at most `wait` for it.
async fn permit_within(semaphore: &Arc<Semaphore>, wait: Duration) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout(wait, semaphore.clone().acquire_owned())
        .await
        .ok()
        .map(|p| p.expect("the file semaphores are never closed"))
}

/// Shared state of the file routes: the staging area, the per-container upload locks and
/// the server-wide permits.
pub struct Files {
    staging: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    extractions: Arc<tokio::sync::Semaphore>,
    uploads: Arc<tokio::sync::Semaphore>,
    download_zips: Arc<tokio::sync::Semaphore>,
    listings: Arc<tokio::sync::Semaphore>,
}

impl Files {
    /// `DATA_DIR/staging`: private to the server (mode 0700), on the same filesystem as the
    /// mounts so staged files move into place by rename. Leftovers of a crash are removed,
    /// after an upload whose commit the crash interrupted is rolled back
    /// ([`journal::recover`]): this runs before anything is served.
    pub fn open(config: &Config) -> std::io::Result<Self> {
        let staging = config.data_dir.join("staging");
        match std::fs::DirBuilder::new().mode(0o700).create(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for entry in std::fs::read_dir(&staging)? {
                    let path = entry?.path();
                    if !journal::recover(&path) {
                        continue; // kept for an operator (logged)
                    }
                    if let Err(e) = remove::remove_tree(&path) {
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
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_UPLOADS)),
            download_zips: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_DOWNLOAD_ZIPS)),
            listings: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_LISTINGS)),
        })
    }

    pub fn staging_root(&self) -> &Path {
        &self.staging
    }

    /// A fresh staging directory (made on the blocking pool), removed with everything in it
    /// by [`StagingDir::remove`] or when dropped.
    pub async fn staging_dir(&self) -> std::io::Result<StagingDir> {
        let path = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            Ok(StagingDir { path: Some(path) })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// A fresh staging directory in `parent` (a capped container's own staging area,
    /// [`disk::staging_dir`]), like [`Files::staging_dir`].
    pub async fn staging_dir_in(&self, parent: PathBuf) -> std::io::Result<StagingDir> {
        let path = parent.join(uuid::Uuid::new_v4().simple().to_string());
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            Ok(StagingDir { path: Some(path) })
        })
        .await
        .map_err(std::io::Error::other)?
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

    /// One of the [`MAX_PARALLEL_UPLOADS`] permits, taken before the body is read and held
    /// until the upload is done (its staging directory removed). Not free within `wait`
    /// (`UPLOAD_SLOT_WAIT`): `503 UPLOAD_SLOTS_BUSY` with `Retry-After`.
    pub async fn upload_permit(&self, wait: Duration) -> FilesResult<OwnedSemaphorePermit> {
        permit_within(&self.uploads, wait)
            .await
            .ok_or(Error::SlotsBusy {
                pool: Pool::Upload,
                slots: MAX_PARALLEL_UPLOADS,
                waited: wait,
            })
    }

    /// One of the [`MAX_PARALLEL_LISTINGS`] permits, held while the directory is read. Not
    /// free within [`LISTING_SLOT_WAIT`]: `503 LISTING_SLOTS_BUSY` with `Retry-After`.
    pub async fn listing_permit(&self) -> FilesResult<OwnedSemaphorePermit> {
        permit_within(&self.listings, LISTING_SLOT_WAIT)
            .await
            .ok_or(Error::SlotsBusy {
                pool: Pool::Listing,
                slots: MAX_PARALLEL_LISTINGS,
                waited: LISTING_SLOT_WAIT,
            })
    }

    /// One of the [`MAX_PARALLEL_DOWNLOAD_ZIPS`] permits, held by the walk until it ends.
    pub async fn download_zip_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.download_zips
            .clone()
            .acquire_owned()
            .await
            .expect("the download-zip semaphore is never closed")
    }
}

/// A directory under `DATA_DIR/staging`, removed by [`StagingDir::remove`] (blocking) or on
/// drop. Removing it can take long (up to an upload and what it inflated), so a drop on a
/// runtime thread hands the removal to the blocking pool.
pub struct StagingDir {
    /// `None` once removed.
    path: Option<PathBuf>,
}

impl StagingDir {
    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("a staging directory is used only until removed")
    }

    /// Removes it now, on this (blocking) thread.
    pub fn remove(mut self) {
        if let Some(path) = self.path.take() {
            remove_staging(&path);
        }
    }

    /// Removes it on the blocking pool and waits for that.
    pub async fn remove_async(mut self) {
        if let Some(path) = self.path.take() {
            let _ = tokio::task::spawn_blocking(move || remove_staging(&path)).await;
        }
    }
}

fn remove_staging(path: &Path) {
    // What a rollback could not wholly undo may be the only copy of a container's files.
    if journal::is_kept(path) {
        return;
    }
    // It may hold what a container planted in its /app (swapped out by an upload), as deep
    // as the archive allowed: iterative removal.
    if let Err(e) = remove::remove_tree(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a staging directory");
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || remove_staging(&path));
            }
            Err(_) => remove_staging(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot held by someone else: the wait ends after its bound (the `503` with
    /// `Retry-After` it makes is `http::error_map`'s); once the slot is free it is taken at
    /// once.
    #[tokio::test]
    async fn a_busy_slot_is_a_bounded_wait_then_503() {
        let slots = Arc::new(Semaphore::new(1));
        let held = slots.clone().acquire_owned().await.unwrap();
        let wait = Duration::from_millis(50);
        let t = std::time::Instant::now();
        assert!(permit_within(&slots, wait).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(held);
        assert!(permit_within(&slots, Duration::ZERO).await.is_some());
    }
}
