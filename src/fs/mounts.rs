//! `DATA_DIR/mounts/<cuid>`: the host directory bind-mounted as the container's `/app`.
//! Created empty at container creation (files can be uploaded before the first start),
//! owned by the container's user, removed when the container is deleted.

use std::path::{Path, PathBuf};

use crate::config::{Config, UserIds};
use crate::error::ApiError;

pub fn mount_dir(config: &Config, cuid: &str) -> PathBuf {
    config.data_dir.join("mounts").join(cuid)
}

pub fn project_dir(config: &Config, cuid: &str) -> PathBuf {
    config.data_dir.join("projects").join(cuid)
}

/// The uid:gid a container runs as: its spec's `user`, else `DEFAULT_USER_UID`.
pub fn owner(config: &Config, user: Option<&str>) -> UserIds {
    user.and_then(UserIds::parse).unwrap_or(config.default_user)
}

/// Creates the empty `/app` directory of a new container, owned by its user.
pub fn create(config: &Config, cuid: &str, user: Option<&str>) -> Result<PathBuf, ApiError> {
    let dir = mount_dir(config, cuid);
    std::fs::create_dir(&dir)?;
    if let Err(e) = chown(&dir, owner(config, user)) {
        remove_quietly(&dir);
        return Err(e.into());
    }
    Ok(dir)
}

/// Gives the directory (not its contents) to the container's user, so a process running as
/// that user can write in `/app`.
pub fn chown(dir: &Path, ids: UserIds) -> std::io::Result<()> {
    match std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid)) {
        // Not root: the directory stays ours; the container may then not be able to write.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(dir = %dir.display(), "cannot chown (not running as root)");
            Ok(())
        }
        other => other,
    }
}

/// Best-effort removal used to undo a half-done create (of a directory no container has
/// used yet, so it is small).
pub fn remove_quietly(dir: &Path) {
    if let Err(e) = crate::fs::remove::remove_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove directory");
    }
}
