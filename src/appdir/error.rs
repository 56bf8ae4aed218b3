//! What the files of a container's `/app` can refuse or fail with. `http/` turns each into
//! its answer (status, code, `Retry-After`); here only the facts are kept.

use std::time::Duration;

use serde_json::Value;

/// A refused or failed operation on a container's `/app`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule of the files API, or an upload could not be moved into
    /// place: the message is the client's, `details` names the path or entry.
    #[error("{message}")]
    Refused {
        reason: Reason,
        message: String,
        details: Option<Value>,
    },
    /// Every one of `slots` slots of `pool` stayed busy for `waited`: retry later.
    #[error(
        "all {slots} {} slots stayed busy for {} s; retry later",
        pool.as_str(),
        waited.as_secs()
    )]
    SlotsBusy {
        pool: Pool,
        slots: usize,
        waited: Duration,
    },
    /// The container is not known (its directory is gone).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A file operation of the host failed; the details go to the server log only.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type FilesResult<T> = Result<T, Error>;

/// Why a request was refused (each has its own code on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A path that would leave `/app` or that Linux cannot hold.
    UnsafePath,
    FileNotFound,
    /// An upload's file where `/app` has a directory, or a name that kept changing.
    PathConflict,
    /// Moving an uploaded item into place failed (not the client's doing).
    MoveFailed,
    /// A single-item write (file upload with `If-None-Match: *`, new folder, move) whose
    /// target name is taken.
    AlreadyExists,
    /// A folder on the way of a single-item operation is a file (or the path given as a
    /// folder is one).
    NotADirectory,
    /// A folder deleted without `recursive` still holds something.
    DirectoryNotEmpty,
    /// A folder moved into itself or one of its own folders.
    MoveIntoItself,
    /// A listing of a directory with more than [`super::listing::MAX_SCANNED`] names.
    DirectoryTooLarge,
    InvalidZip,
    UnsafeZipEntry,
    UnsupportedZipEntry,
    DuplicateZipEntry,
    /// The archive is too big in one of four ways (entries, ratio, inflated size, central
    /// directory).
    ZipTooManyEntries,
    ZipRatioExceeded,
    ZipTooLarge,
    ZipDirectoryTooLarge,
    /// The upload ran out of space under the container's `resources.disk` (`ENOSPC` or
    /// `EDQUOT` while it was extracted into the container's image).
    DiskQuotaExceeded,
    /// A snapshot, restore or fork copy of `/app` past `SNAPSHOT_MAX_ENTRIES`,
    /// `SNAPSHOT_MAX_BYTES` or its depth cap.
    SnapshotTooLarge,
}

/// The kinds of slots a files request may wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Upload,
    Listing,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Upload => "upload",
            Pool::Listing => "listing",
        }
    }
}

impl Error {
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Sets the details of a [`Error::Refused`] (the other variants carry their facts).
    pub fn with_details(mut self, value: Value) -> Self {
        if let Self::Refused { details, .. } = &mut self {
            *details = Some(value);
        }
        self
    }
}
