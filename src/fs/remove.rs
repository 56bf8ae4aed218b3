//! Removal of trees a container controls (its `/app`, staging areas, project directories).
//!
//! PLACEHOLDER: to be replaced by an iterative, bounded-stack, descriptor-relative removal
//! (issue 9, item 1). The signatures are the contract the rest of the code uses.

use std::path::Path;

/// Removes `path` and everything beneath it, never following a symlink. `Ok` when it is
/// already gone. Blocking: call it on the blocking pool.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
