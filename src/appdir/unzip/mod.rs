//! ZIP upload: check the whole archive, extract it into a private staging tree, then move
//! the staged tree into the container's `/app` by renames, undoing every move if one fails.
//!
//! Order of the work (all of it blocking; the handler runs it on the blocking pool while it
//! holds the container's upload lock):
//! 1. [`end_record`] and [`walk_directory`]: the entry count and the central directory's size
//!    from the end-of-central-directory record, and a walk over the directory's fixed-size
//!    headers (entry count, sizes and name lengths checked, nothing kept), all before the ZIP
//!    library builds its index: a forged count, an oversized directory or huge names must not
//!    cost memory. The handler runs at most [`crate::appdir::MAX_PARALLEL_EXTRACTIONS`] uploads
//!    from here on at once, server-wide.
//! 2. [`plan`]: every central-directory entry is checked (names, types, duplicates,
//!    encryption, method, declared sizes) before a single byte is inflated.
//! 3. [`extract`]: entries are inflated into `DATA_DIR/staging/<id>/tree`, counting the bytes
//!    actually inflated against the limits (the declared sizes may lie). The staged items
//!    stay the server's (directories 0700, files 0600) until placed.
//! 4. [`crate::appdir::place::commit`]: the staged tree is merged into `/app` by renames through `O_PATH`
//!    handles, after a durable journal of the plan ([`crate::appdir::journal`]): undone on failure, and
//!    after a crash at the next start (see [`crate::appdir::place`]); [`crate::appdir::upload::run`] does the four in order.

mod check;
mod extract;
mod guard;

use serde_json::json;

use crate::appdir::error::{Error, Reason};

pub use check::plan;
pub use extract::extract;
pub use guard::{
    end_record, open, walk_directory, Directory, MAX_DIRECTORY_BYTES, MAX_ENTRY_NAME_BYTES,
};

/// The compression ratio limit applies to an entry once this much of it has been inflated:
/// small, very compressible files (a few KiB of zeros, a sparse JSON) are never bombs.
pub const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: u64,
    pub max_inflated_bytes: u64,
    pub max_ratio: u64,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            max_entries: c.zip_max_entries,
            max_inflated_bytes: c.zip_max_inflated_bytes,
            max_ratio: c.zip_max_ratio,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub files: u64,
    pub bytes: u64,
}

/// The most components an entry's path may have (the `?path=` target's included); a deeper
/// one is `400 UNSAFE_ZIP_ENTRY`. It bounds the recursion of the commit (one level per
/// component, two descriptors each) whatever the archive holds.
pub use crate::appdir::confine::MAX_PATH_COMPONENTS;

pub(super) fn invalid_zip(message: impl Into<String>) -> Error {
    Error::refused(Reason::InvalidZip, message)
}

pub(super) fn unsafe_entry(name: &str, reason: &str) -> Error {
    Error::refused(
        Reason::UnsafeZipEntry,
        format!("unsafe entry {name:?}: {reason}"),
    )
    .with_details(json!({"entry": name, "reason": reason}))
}

pub(super) fn too_large(reason: Reason, message: String, details: serde_json::Value) -> Error {
    Error::refused(reason, message).with_details(details)
}

pub(super) fn too_many(count: u64, limit: u64) -> Error {
    too_large(
        Reason::ZipTooManyEntries,
        format!("the archive has {count} entries, over the limit of {limit}"),
        json!({"entries": count, "limit": limit}),
    )
}

#[cfg(test)]
mod tests;
