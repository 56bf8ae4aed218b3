//! `resources.disk`: the hard cap on a container's `/app`, as a filesystem of its own.
//!
//! This kernel has no XFS project quotas, so each capped container gets a sparse ext4 image,
//! `DATA_DIR/disks/<cuid>.img`, loop-mounted `nodev,nosuid,noatime` on its volume directory
//! `DATA_DIR/disks/<cuid>`. The volume holds two directories:
//!
//! - `app/`: the container's `/app` (the bind mount's source, owned by the container's user);
//! - `staging/` (0700, the server's): where uploads to this container are extracted and
//!   journalled, so their commit renames within one filesystem *and one mount* (Linux refuses
//!   a rename across two mounts of the same filesystem with `EXDEV`), and what an upload
//!   inflates counts against the cap, so an upload that does not fit fails before anything of
//!   `/app` moves.
//!
//! The container sees only `app/`: the volume root (and so `staging/` and `lost+found`) is
//! beyond its bind mount. Every rule of the file routes applies unchanged inside `app/`.
//!
//! A mount does not outlive a reboot, and an image can be unmounted behind the server's
//! back: [`ensure`] mounts it again (the reconciler calls it before every start, the file
//! routes before they touch `/app`), rolls back an upload a crash interrupted in its
//! `staging/`, and grows the filesystem to the spec's cap if that was raised. While the
//! image is not mounted, `app/` does not exist, so Docker refuses to start the container
//! (bind source missing) rather than let it write to the host's disk.
//!
//! Blocking (it runs `mkfs.ext4`, `mount`, `umount`, `resize2fs`): call it on the blocking
//! pool.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::config::{Config, UserIds};

/// How long [`grow_offline`] waits for the image's loop device to be released.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Name of the container's `/app` inside its volume.
pub const APP: &str = "app";
/// Name of the upload staging area inside a volume.
pub const STAGING: &str = "staging";

/// Mounts, unmounts and resizes one at a time, server-wide: each takes tens of
/// milliseconds, and two passes must not both find a volume unmounted and mount it twice.
static MOUNTING: Mutex<()> = Mutex::new(());

pub fn disks_dir(config: &Config) -> PathBuf {
    config.data_dir.join("disks")
}

pub fn image_path(config: &Config, cuid: &str) -> PathBuf {
    disks_dir(config).join(format!("{cuid}.img"))
}

/// The mount point of the image.
pub fn volume_dir(config: &Config, cuid: &str) -> PathBuf {
    disks_dir(config).join(cuid)
}

/// The container's `/app` on the host.
pub fn app_dir(config: &Config, cuid: &str) -> PathBuf {
    volume_dir(config, cuid).join(APP)
}

/// Where uploads to the container are extracted.
pub fn staging_dir(config: &Config, cuid: &str) -> PathBuf {
    volume_dir(config, cuid).join(STAGING)
}

/// How full a capped `/app` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The filesystem's size (the image's, less ext4's own metadata).
    pub size_bytes: u64,
    /// Blocks in use (files, directories, and ext4's journal and inode tables).
    pub used_bytes: u64,
    /// What a write can still take.
    pub available_bytes: u64,
}

/// A system tool by name: from `/usr/sbin`, `/sbin`, `/usr/bin` or `/bin` when it is there
/// (a server started with a user's `PATH` may lack the `sbin` directories where Debian
/// keeps `mkfs.ext4`, `resize2fs` and `losetup`), else looked up on `PATH`.
fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    match found {
        Some(path) => Command::new(path),
        None => Command::new(name),
    }
}

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.output().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot run {:?}: {e}", cmd.get_program()))
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Whether the image is mounted on `volume` (a mount point is on another device than its
/// parent).
pub fn is_mounted(volume: &Path) -> bool {
    let (Ok(dir), Some(Ok(parent))) = (
        std::fs::symlink_metadata(volume),
        volume.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    dir.is_dir() && dir.dev() != parent.dev()
}

fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn mount(image: &Path, volume: &Path) -> std::io::Result<()> {
    run(tool("mount")
        .args(["-t", "ext4", "-o", "loop,nodev,nosuid,noatime"])
        .arg(image)
        .arg(volume))
}

/// Makes the image of a new container (sparse, `bytes` long), its filesystem, mounts it,
/// and makes `app/` (given to `owner`) and `staging/`. Undone on failure.
pub fn create(config: &Config, cuid: &str, bytes: i64, owner: UserIds) -> std::io::Result<()> {
    let disks = disks_dir(config);
    mkdir(&disks, 0o700)?;
    let image = image_path(config, cuid);
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&image)?;
        file.set_len(u64::try_from(bytes).unwrap_or(0))?;
        drop(file);
        // No reserved blocks (the cap is the container's alone); lazy init keeps mkfs fast
        // (the kernel zeroes inode tables in the background on first mount).
        run(tool("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
            ])
            .arg(&image))?;
        let volume = volume_dir(config, cuid);
        mkdir(&volume, 0o700)?;
        {
            let _lock = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
            mount(&image, &volume)?;
        }
        std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let app = volume.join(APP);
        mkdir(&app, 0o755)?;
        crate::appdir::mounts::chown(&app, owner)?;
        mkdir(&volume.join(STAGING), 0o700)?;
        Ok(())
    })();
    if let Err(e) = &result {
        tracing::warn!(%cuid, error = %e, "cannot make a container's disk image");
        if let Err(e) = remove(config, cuid) {
            tracing::warn!(%cuid, error = %e, "cannot undo a half-made disk image");
        }
    }
    result
}

/// What [`ensure`] left to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    /// Mounted, at its cap.
    Ready,
    /// Mounted and usable, but the raised cap could not be applied online: the host does
    /// not let the server resize a mounted filesystem (ext4's online resize needs
    /// `CAP_SYS_RESOURCE`). [`grow_offline`] applies it once the container is stopped.
    GrowOffline,
}

/// Makes sure the image is mounted, the filesystem is at least `bytes` big (grown online),
/// and `app/` is `owner`'s. After a fresh mount (a reboot, an unmount behind the server's
/// back) the uploads a crash interrupted in `staging/` are rolled back first. An image that
/// is gone is an error: the container's files are gone with it, and an empty one made in
/// its place would hide that.
pub fn ensure(config: &Config, cuid: &str, bytes: i64, owner: UserIds) -> std::io::Result<Ensured> {
    ensure_with(config, cuid, Some(bytes), owner)
}

/// [`ensure`] without the grow: what the file routes need before they touch `/app` (a
/// raised cap is applied by the reconciler, which may have to stop the container for it).
pub fn ensure_mounted(config: &Config, cuid: &str, owner: UserIds) -> std::io::Result<()> {
    ensure_with(config, cuid, None, owner).map(|_| ())
}

fn ensure_with(
    config: &Config,
    cuid: &str,
    grow_to: Option<i64>,
    owner: UserIds,
) -> std::io::Result<Ensured> {
    let image = image_path(config, cuid);
    let volume = volume_dir(config, cuid);
    let _lock = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    mount_if_needed(cuid, &image, &volume)?;
    let grown = match grow_to {
        Some(bytes) => grow_online(&image, &volume, bytes),
        None => Ok(()),
    };
    let ensured = match grown {
        Ok(()) => Ensured::Ready,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::info!(%cuid, error = %e, "cannot grow the disk image online; it is grown offline at the next start");
            Ensured::GrowOffline
        }
        Err(e) => return Err(e),
    };
    let app = volume.join(APP);
    mkdir(&app, 0o755)?;
    crate::appdir::mounts::chown(&app, owner)?;
    Ok(ensured)
}

fn mount_if_needed(cuid: &str, image: &Path, volume: &Path) -> std::io::Result<()> {
    if is_mounted(volume) {
        return Ok(());
    }
    if !image.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the disk image {} of {cuid} is missing: its /app is lost",
                image.display()
            ),
        ));
    }
    mkdir(volume, 0o700)?;
    mount(image, volume)?;
    tracing::info!(%cuid, "mounted the container's disk image");
    mkdir(&volume.join(STAGING), 0o700)?;
    recover_staging(&volume.join(STAGING));
    Ok(())
}

/// Grows the image to `bytes` with its filesystem unmounted: unmount (nothing else may hold
/// it: the caller stopped the container), check (`e2fsck -f -p`, which `resize2fs` wants
/// first), grow, mount again. For hosts where [`ensure`] answered
/// [`Ensured::GrowOffline`].
pub fn grow_offline(config: &Config, cuid: &str, bytes: i64) -> std::io::Result<()> {
    let image = image_path(config, cuid);
    let volume = volume_dir(config, cuid);
    let _lock = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    if is_mounted(&volume) {
        run(tool("umount").arg(&volume))?;
    }
    // Still attached: something else holds the filesystem (a stopped container's mount
    // namespace goes a moment after `docker stop` returns, and the autoclear loop device
    // with it). Resizing under a live mount would corrupt it: wait a little, else give up
    // (the next pass retries).
    let deadline = std::time::Instant::now() + DETACH_WAIT;
    loop {
        let attached = tool("losetup").arg("-j").arg(&image).output()?;
        if attached.stdout.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::other(format!(
                "{} is still in use: {}",
                image.display(),
                String::from_utf8_lossy(&attached.stdout).trim()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let want = u64::try_from(bytes).unwrap_or(0);
    let file = std::fs::OpenOptions::new().write(true).open(&image)?;
    if file.metadata()?.len() < want {
        file.set_len(want)?;
    }
    drop(file);
    // 0: clean; 1: errors corrected. Anything else is for an operator.
    let fsck = tool("e2fsck").args(["-f", "-p"]).arg(&image).output()?;
    if !matches!(fsck.status.code(), Some(0 | 1)) {
        return Err(std::io::Error::other(format!(
            "e2fsck of {} failed ({}): {}",
            image.display(),
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout).trim()
        )));
    }
    run(tool("resize2fs").arg(&image))?;
    mount_if_needed(cuid, &image, &volume)?;
    tracing::info!(%cuid, bytes, "grew a container's disk image offline");
    Ok(())
}

/// Rolls back what a crash left in a volume's `staging/` (see [`crate::appdir::journal`]),
/// and removes it. Before anything uses the volume.
pub fn recover_staging(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !crate::appdir::journal::recover(&path) {
            continue; // kept for an operator (logged)
        }
        if let Err(e) = crate::appdir::remove::remove_tree(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove staging leftovers");
        }
    }
}

/// The loop device the image is mounted from, from `/proc/self/mountinfo`.
fn loop_device(volume: &Path) -> std::io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = volume.to_string_lossy();
    // Field 5 is the mount point; after " - ": type, source, options. Mount points with
    // spaces are octal-escaped; ours never have any (DATA_DIR/disks/<cuid>) unless
    // DATA_DIR does, which the comparison then simply misses.
    info.lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.get(4) == Some(&want.as_ref()))
                .then(|| fields.get(dash + 2).map(PathBuf::from))
                .flatten()
        })
        .ok_or_else(|| std::io::Error::other(format!("{} is not mounted", volume.display())))
}

/// Grows the image and its (mounted) filesystem to `bytes`, online. Never shrinks (the spec
/// refuses a smaller cap). `PermissionDenied` when the kernel refuses the online resize
/// (the image is then put back to its length, so that length stays the filesystem's).
fn grow_online(image: &Path, volume: &Path, bytes: i64) -> std::io::Result<()> {
    let want = u64::try_from(bytes).unwrap_or(0);
    let len = std::fs::metadata(image)?.len();
    if len >= want {
        return Ok(());
    }
    let device = loop_device(volume)?;
    let set_len = |n: u64| -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)?
            .set_len(n)?;
        run(tool("losetup").arg("-c").arg(&device))
    };
    set_len(want)?;
    let out = tool("resize2fs").arg(&device).output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        set_len(len)?;
        let kind = if err.contains("Permission denied") {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        };
        return Err(std::io::Error::new(
            kind,
            format!("resize2fs failed: {err}"),
        ));
    }
    tracing::info!(image = %image.display(), bytes, "grew a container's disk image online");
    Ok(())
}

/// Unmounts the container's image (if mounted) and removes it and its mount point. `Ok` when
/// nothing is left; an image still in use (`umount` refused) is an error, and the deletion is
/// retried by the reconciler.
pub fn remove(config: &Config, cuid: &str) -> std::io::Result<()> {
    let volume = volume_dir(config, cuid);
    // Held to the end: a file request that mounts the image between the unmount and the
    // unlink would leave a mounted, deleted image holding its loop device.
    let _lock = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    if is_mounted(&volume) {
        run(tool("umount").arg(&volume))?;
    }
    match std::fs::remove_dir(&volume) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Something was written in the bare mount point while the image was not mounted:
        // the server's own directory, so its tree is removed (never through a link).
        Err(_) => crate::appdir::remove::remove_tree(&volume)?,
    }
    match std::fs::remove_file(image_path(config, cuid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How full the container's mounted image is; `None` when it is not mounted.
pub fn usage(config: &Config, cuid: &str) -> Option<Usage> {
    let volume = volume_dir(config, cuid);
    if !is_mounted(&volume) {
        return None;
    }
    let st = rustix::fs::statvfs(&volume).ok()?;
    let block = st.f_frsize;
    Some(Usage {
        size_bytes: st.f_blocks * block,
        used_bytes: st.f_blocks.saturating_sub(st.f_bfree) * block,
        available_bytes: st.f_bavail * block,
    })
}

/// Whether an error means the filesystem is full (`ENOSPC`, or `EDQUOT`).
pub fn is_full(e: &std::io::Error) -> bool {
    let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT];
    e.raw_os_error()
        .is_some_and(|n| full.iter().any(|f| f.raw_os_error() == n))
}

/// The cuids with an image under `DATA_DIR/disks` (mounted or not).
pub fn images(config: &Config) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(disks_dir(config)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let cuid = name.strip_suffix(".img")?;
            crate::spec::is_cuid(cuid).then(|| cuid.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_enospc_or_edquot() {
        assert!(is_full(&std::io::Error::from_raw_os_error(28)));
        assert!(is_full(&std::io::Error::from(rustix::io::Errno::DQUOT)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(2)));
        assert!(!is_full(&std::io::Error::other("x")));
    }
}
