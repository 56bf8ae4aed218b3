//! `DATA_DIR/mounts/<cuid>`: the host directory bind-mounted as the container's `/app`.
//! Created empty at container creation (files can be uploaded before the first start),
//! owned by the container's user, removed when the container is deleted. A container with
//! `resources.disk` has its `/app` inside its own filesystem image instead
//! ([`crate::appdir::disk`]). Under Docker's `userns-remap`, "the container's user" on the
//! host is its ids shifted into the daemon's range ([`host_owner`]): the directory and every
//! uploaded file get those.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::appdir::disk;
use crate::appdir::error::Error;
use crate::config::{Config, UserIds};
use crate::docker::Userns;

pub fn mount_dir(config: &Config, cuid: &str) -> PathBuf {
    config.data_dir.join("mounts").join(cuid)
}

/// The host directory of a container's `/app`: [`mount_dir`], or for one with a disk cap
/// (`capped`) the `app/` of its image ([`disk::app_dir`]).
pub fn app_dir(config: &Config, cuid: &str, capped: bool) -> PathBuf {
    if capped {
        disk::app_dir(config, cuid)
    } else {
        mount_dir(config, cuid)
    }
}

/// [`app_dir`] made ready for use: a capped container's image mounted (again, after a
/// reboot) on the blocking pool. The file routes call it before they touch `/app`.
pub async fn ready_app_dir(
    config: &std::sync::Arc<Config>,
    cuid: &str,
    spec: &crate::spec::Spec,
) -> Result<PathBuf, Error> {
    if spec.resources.disk_bytes.is_none() {
        return Ok(mount_dir(config, cuid));
    }
    let owner = owner(config, spec.user.as_deref());
    let (config, cuid) = (config.clone(), cuid.to_owned());
    tokio::task::spawn_blocking(move || {
        // A raised cap is the reconciler's to apply; `/app` is usable meanwhile.
        disk::ensure_mounted(&config, &cuid, owner)?;
        Ok(disk::app_dir(&config, &cuid))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The uid:gid a container runs as: its spec's `user`, else `DEFAULT_USER_UID`.
pub fn owner(config: &Config, user: Option<&str>) -> UserIds {
    user.and_then(UserIds::parse).unwrap_or(config.default_user)
}

/// The host ids that own what the container writes and what is written for it: [`owner`],
/// shifted into the daemon's range when it remaps user namespaces (uid `U` in the container
/// is `base + U` on the host).
pub fn host_owner(config: &Config, user: Option<&str>, userns: Option<Userns>) -> UserIds {
    let ids = owner(config, user);
    match userns.and_then(|map| map.host_ids(ids.uid, ids.gid)) {
        Some((uid, gid)) => UserIds { uid, gid },
        None => ids,
    }
}

/// Creates the empty `/app` directory of a new container, owned by its user (on the host,
/// see [`host_owner`]): with a disk cap of `disk` bytes, inside a new image of that size,
/// mounted. Blocking.
pub fn create(
    config: &Config,
    cuid: &str,
    user: Option<&str>,
    disk: Option<i64>,
    userns: Option<Userns>,
) -> Result<PathBuf, Error> {
    if let Some(bytes) = disk {
        disk::create(config, cuid, bytes, host_owner(config, user, userns))?;
        return Ok(disk::app_dir(config, cuid));
    }
    let dir = mount_dir(config, cuid);
    std::fs::create_dir(&dir)?;
    if let Err(e) = chown(&dir, host_owner(config, user, userns)) {
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

/// Undoes a [`create`] whose container was not stored: its directory, or its image
/// unmounted and removed. Blocking.
pub fn discard(config: &Config, cuid: &str) {
    remove_quietly(&mount_dir(config, cuid));
    if let Err(e) = disk::remove(config, cuid) {
        tracing::warn!(%cuid, error = %e, "could not remove a disk image");
    }
}

/// Best-effort removal used to undo a half-done create (of a directory no container has
/// used yet, so it is small).
pub fn remove_quietly(dir: &Path) {
    if let Err(e) = crate::appdir::remove::remove_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove directory");
    }
}

/// The directories under `DATA_DIR/mounts` and `DATA_DIR/projects` named like a container
/// that has no row: a crash between creating a container's directory and inserting its row
/// leaves one. `DATA_DIR` belongs to this server alone (its database names its instance), so
/// what has no row there is no one's. Names that are not cuids are not ours to judge and are
/// left alone. To be listed before the server serves, so no create can be in flight.
pub fn orphans(config: &Config, known: &HashSet<String>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for parent in [
        config.data_dir.join("mounts"),
        config.data_dir.join("projects"),
    ] {
        // (Disk images are `disk_orphans`': they must be unmounted first.)
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if crate::spec::is_cuid(name) && !known.contains(name) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Start-up, before anything is served: the images of containers without a row are
/// unmounted and removed (a crash between making the image and inserting the row), and the
/// uploads a crash interrupted in the staging area of a mounted image are rolled back (an
/// image not mounted, after a reboot, is recovered when [`disk::ensure`] mounts it).
pub fn settle_disks(config: &Config, known: &HashSet<String>) {
    for cuid in disk::images(config) {
        if !known.contains(&cuid) {
            match disk::remove(config, &cuid) {
                Ok(()) => tracing::info!(%cuid, "removed a disk image without a container"),
                Err(e) => {
                    tracing::warn!(%cuid, error = %e, "cannot remove a disk image without a container")
                }
            }
        } else if disk::is_mounted(&disk::volume_dir(config, &cuid)) {
            disk::recover_staging(&disk::staging_dir(config, &cuid));
        }
    }
}

/// Removes [`orphans`] on the blocking pool, in the background (a container may have left a
/// big tree), with a log line each.
pub fn remove_orphans(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            match crate::appdir::remove::remove_tree(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed a directory without a container")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a directory without a container")
                }
            }
        }
    });
}
