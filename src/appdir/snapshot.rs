//! Snapshots of a container's `/app`, their restore and the copy a fork starts from
//! (docs/API.md §17).
//!
//! **The copy** ([`copy_tree`]) walks a tree the container owns with the rules of
//! download-zip ([`crate::appdir::zipout`]):
//! - iterative: a stack of directory names waiting (one name each, with its depth), the
//!   names from the top to the directory being copied, and four descriptors (the two tops,
//!   the source and destination directories being copied) plus one file pair at a time,
//!   whatever the depth. Directories are reopened by their path beneath the top with
//!   `RESOLVE_NO_SYMLINKS`, so a symlink swapped in for a directory is never followed;
//! - symlinks are copied as symlinks (their target text, never followed); FIFOs, sockets and
//!   devices are never opened: they are **skipped** and counted (`skipped` in the answer);
//!   a regular file is opened `O_PATH`, checked, and reopened through `/proc/self/fd`
//!   `O_NONBLOCK` ([`crate::appdir::confine::open_entry_nofollow`]); a file held under a
//!   lease is skipped too;
//! - hard links: an inode with several names is copied once, its later names made hard
//!   links to the copy (at most [`MAX_LINKED_INODES`] remembered; past that, copied again,
//!   still under the byte cap);
//! - caps: `SNAPSHOT_MAX_ENTRIES` names looked at (skipped ones included, so a tree of a
//!   million FIFOs ends the walk too), `SNAPSHOT_MAX_BYTES` bytes of file content (apparent
//!   sizes, hard links once) and [`MAX_DEPTH`] levels: past any, [`Reason::SnapshotTooLarge`]
//!   and the caller removes what was written (nothing half-written is kept);
//! - file data is cloned (`FICLONE`) where the filesystem shares extents (XFS, btrfs),
//!   else copied (`copy_file_range` through `std::io::copy`), per file: `EOPNOTSUPP`,
//!   `EXDEV`, `EINVAL` or `ENOTTY` from the clone fall back to a copy.
//!
//! Owners, modes and modification times are kept (the server runs as root; without that
//! privilege owners stay the server's).
//!
//! **Storage**: `DATA_DIR/snapshots/<cuid>/<id>/` (the directory 0700), written under
//! `.tmp-<id>` and renamed into place once complete and synced; its row is inserted after.
//! At start-up [`sweep`] removes `.tmp-*` leftovers and directories without a row.
//!
//! **Restore** ([`restore`]) replaces `/app` whole, by one `RENAME_EXCHANGE` of the directory
//! with a staged copy of the snapshot, journalled with the upload commit's journal
//! ([`crate::appdir::journal`]): a one-node record naming the `/app` directory in its parent
//! and the staged copy's inode. A crash before `committed` is rolled back at the next start
//! by the same [`journal::recover`] as an upload (the old tree is exchanged back); after it,
//! the staging directory (the old tree) is only removed. `/app` therefore holds the whole
//! old tree or the whole snapshot, never a mix.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    fstat, openat, renameat_with, statat, AtFlags, Dir, FileType, Mode, OFlags, RenameFlags,
    Timespec, Timestamps,
};
use rustix::io::Errno;
use serde_json::json;

use crate::appdir::confine::{self, Found};
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::journal::{self, Entry, Record};
use crate::config::Config;

/// Inodes with several links remembered per copy.
pub const MAX_LINKED_INODES: usize = 100_000;
/// Deepest directory copied (as an upload's deepest path).
pub const MAX_DEPTH: usize = confine::MAX_PATH_COMPONENTS;

/// The caps of one copy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        Self {
            max_entries: c.snapshot_max_entries,
            max_bytes: c.snapshot_max_bytes,
        }
    }
}

/// What a copy made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Regular files (each hard-linked inode once).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Later names of an inode already copied, made hard links.
    pub hard_links: u64,
    /// FIFOs, sockets, devices and leased files: not copied.
    pub skipped: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Files whose data was cloned (`FICLONE`) rather than copied.
    pub cloned: u64,
}

fn too_large(cap: &'static str, limit: u64, setting: &str) -> Error {
    Error::refused(
        Reason::SnapshotTooLarge,
        format!("/app is over the copy's {cap} cap ({limit}, {setting}); nothing was kept"),
    )
    .with_details(json!({"cap": cap, "limit": limit}))
}

/// The test-only stop of a restore (`CM_TEST_COMMIT_PAUSE_AFTER`, as an upload's commit:
/// `0` once the journal is written, `1` once `/app` is exchanged, `committed` once recorded).
fn maybe_pause(at: u64) {
    crate::appdir::place::maybe_pause(at);
}

struct Pending {
    depth: usize,
    name: OsString,
}

struct Walk<'a> {
    limits: &'a Limits,
    dst_root: &'a OwnedFd,
    stats: Copied,
    examined: u64,
    /// (dev, ino) of an inode with several links -> the path of its copy beneath `dst_root`.
    linked: HashMap<(u64, u64), PathBuf>,
}

fn open_dir<Fd: AsFd>(dir: Fd, path: &Path) -> Result<OwnedFd, Errno> {
    confine::openat2_retry(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        confine::write_resolve(),
    )
}

/// Copies the contents of the directory `src` into the (empty) directory `dst`, within
/// `limits`. On error, what was written is the caller's to remove.
pub fn copy_tree(src: &OwnedFd, dst: &OwnedFd, limits: &Limits) -> FilesResult<Copied> {
    let mut walk = Walk {
        limits,
        dst_root: dst,
        stats: Copied::default(),
        examined: 0,
        linked: HashMap::new(),
    };
    let mut chain: Vec<OsString> = Vec::new();
    let mut stack: Vec<Pending> = Vec::new();
    let io = std::io::Error::from;
    let mut current = Some((
        open_dir(src, Path::new(".")).map_err(io)?,
        open_dir(dst, Path::new(".")).map_err(io)?,
    ));
    loop {
        let (sdir, ddir) = match current.take() {
            Some(pair) => pair,
            None => {
                let Some(p) = stack.pop() else { break };
                chain.truncate(p.depth);
                chain.push(p.name);
                let path: PathBuf = chain.iter().collect();
                let sdir = match open_dir(src, &path) {
                    Ok(fd) => fd,
                    // Removed or replaced meanwhile: skipped.
                    Err(
                        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::AGAIN,
                    ) => {
                        walk.stats.skipped += 1;
                        continue;
                    }
                    Err(Errno::NAMETOOLONG) => {
                        return Err(too_large("depth", MAX_DEPTH as u64, "PATH_MAX"))
                    }
                    Err(e) => return Err(std::io::Error::from(e).into()),
                };
                let ddir = open_dir(dst, &path).map_err(std::io::Error::from)?;
                (sdir, ddir)
            }
        };
        walk.list(&sdir, &ddir, &chain, &mut stack)?;
    }
    Ok(walk.stats)
}

fn set_owner(dir: &OwnedFd, name: &CStr, st: &rustix::fs::Stat) -> Result<(), Errno> {
    match rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) | Err(Errno::PERM) => Ok(()),
        Err(e) => Err(e),
    }
}

fn times(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

impl Walk<'_> {
    fn count(&mut self) -> FilesResult<()> {
        self.examined += 1;
        if self.examined > self.limits.max_entries {
            return Err(too_large(
                "entries",
                self.limits.max_entries,
                "SNAPSHOT_MAX_ENTRIES",
            ));
        }
        Ok(())
    }

    fn list(
        &mut self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        chain: &[OsString],
        stack: &mut Vec<Pending>,
    ) -> FilesResult<()> {
        let depth = chain.len();
        // Names of this directory already handled: a racing listing may return one twice.
        let mut seen: HashSet<OsString> = HashSet::new();
        for entry in Dir::read_from(sdir).map_err(std::io::Error::from)? {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let os = OsStr::from_bytes(name.to_bytes()).to_owned();
            if !seen.insert(os.clone()) {
                continue;
            }
            self.count()?;
            let st = match statat(sdir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => {
                    self.stats.skipped += 1;
                    continue;
                }
                Err(e) => return Err(std::io::Error::from(e).into()),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(too_large("depth", MAX_DEPTH as u64, "levels"));
                    }
                    rustix::fs::mkdirat(ddir, name, Mode::from_raw_mode(0o700))
                        .map_err(std::io::Error::from)?;
                    set_owner(ddir, name, &st).map_err(std::io::Error::from)?;
                    rustix::fs::chmodat(
                        ddir,
                        name,
                        Mode::from_raw_mode(st.st_mode & 0o7777),
                        AtFlags::empty(),
                    )
                    .map_err(std::io::Error::from)?;
                    self.stats.dirs += 1;
                    stack.push(Pending { depth, name: os });
                }
                FileType::RegularFile => self.file(sdir, ddir, name, &st, chain)?,
                FileType::Symlink => {
                    let target = match rustix::fs::readlinkat(sdir, name, Vec::new()) {
                        Ok(t) => t,
                        Err(Errno::NOENT | Errno::INVAL) => {
                            self.stats.skipped += 1;
                            continue;
                        }
                        Err(e) => return Err(std::io::Error::from(e).into()),
                    };
                    rustix::fs::symlinkat(target.as_c_str(), ddir, name)
                        .map_err(std::io::Error::from)?;
                    set_owner(ddir, name, &st).map_err(std::io::Error::from)?;
                    self.stats.symlinks += 1;
                }
                // FIFOs, sockets, devices: never opened, not copied.
                _ => self.stats.skipped += 1,
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        name: &CStr,
        st: &rustix::fs::Stat,
        chain: &[OsString],
    ) -> FilesResult<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.linked.get(&key) {
                rustix::fs::linkat(self.dst_root, first.as_path(), ddir, name, AtFlags::empty())
                    .map_err(std::io::Error::from)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
        }
        let (mut file, size) = match confine::open_entry_nofollow(sdir, name) {
            Ok(Some(Found::File(file, size))) => (file, size),
            Ok(_) | Err(Errno::NOENT | Errno::AGAIN) => {
                self.stats.skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let left = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        let over = || too_large("bytes", self.limits.max_bytes, "SNAPSHOT_MAX_BYTES");
        if size > left {
            return Err(over());
        }
        let out = openat(
            ddir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)?;
        let mut out = std::fs::File::from(out);
        let written = match rustix::fs::ioctl_ficlone(&out, &file) {
            Ok(()) => {
                self.stats.cloned += 1;
                out.metadata()?.len()
            }
            Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::BADF) => {
                copy_data(&mut file, &mut out, left)?
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        if written > left {
            return Err(over());
        }
        self.stats.bytes += written;
        self.stats.files += 1;
        match rustix::fs::fchown(
            &out,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        ) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        // After the owner (a chown clears set-id bits).
        rustix::fs::fchmod(&out, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(std::io::Error::from)?;
        rustix::fs::futimens(&out, &times(st)).map_err(std::io::Error::from)?;
        if st.st_nlink > 1 && self.linked.len() < MAX_LINKED_INODES {
            let mut path: PathBuf = chain.iter().collect();
            path.push(OsStr::from_bytes(name.to_bytes()));
            self.linked.insert(key, path);
        }
        Ok(())
    }
}

/// Copies `src` into `dst` in the kernel (`copy_file_range`), or through a buffer where
/// the kernel cannot (`EXDEV`, `EINVAL`, `EOPNOTSUPP`, `ENOSYS` before any byte), at most
/// `cap + 1` bytes: the file may grow while it is read, and one byte past the cap tells so.
fn copy_data(src: &mut std::fs::File, dst: &mut std::fs::File, cap: u64) -> std::io::Result<u64> {
    let limit = cap.saturating_add(1);
    let mut total = 0u64;
    while total < limit {
        let want = usize::try_from((limit - total).min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(&*src, None, &*dst, None, want) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) if total == 0 => {
                use std::io::Read;
                return std::io::copy(&mut (&*src).take(limit), dst);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// `DATA_DIR/snapshots`.
pub fn snapshots_dir(config: &Config) -> PathBuf {
    config.data_dir.join("snapshots")
}

/// Where the snapshots of `cuid` are kept.
pub fn container_dir(config: &Config, cuid: &str) -> PathBuf {
    snapshots_dir(config).join(cuid)
}

/// Where snapshot `id` of `cuid` is kept.
pub fn snapshot_dir(config: &Config, cuid: &str, id: &str) -> PathBuf {
    container_dir(config, cuid).join(id)
}

fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn open_path_dir(path: &Path) -> std::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
}

/// Gives the copy's top directory `dst` the owner and mode of the source's, `src`.
fn same_top(src: &OwnedFd, dst: &OwnedFd) -> std::io::Result<()> {
    let st = fstat(src)?;
    match rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    ) {
        Ok(()) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(())
}

/// Copies `/app` (`app`, the host directory) into a new snapshot `id` of `cuid`: written
/// under `.tmp-<id>`, synced, renamed to `<id>`. Nothing is left on failure. Blocking.
pub fn take(
    config: &Config,
    cuid: &str,
    id: &str,
    app: &Path,
    limits: &Limits,
) -> FilesResult<Copied> {
    let root = snapshots_dir(config);
    mkdir(&root, 0o700)?;
    let parent = container_dir(config, cuid);
    mkdir(&parent, 0o700)?;
    let tmp = parent.join(format!(".tmp-{id}"));
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    let result = (|| {
        let src = confine::open_root(app, cuid)?;
        let dst = open_path_dir(&tmp)?;
        let copied = copy_tree(&src, &dst, limits)?;
        same_top(&src, &dst)?;
        rustix::fs::syncfs(&dst).map_err(std::io::Error::from)?;
        std::fs::rename(&tmp, parent.join(id))?;
        std::fs::File::open(&parent)?.sync_all()?;
        Ok(copied)
    })();
    if result.is_err() {
        remove_quietly(&tmp);
    }
    result
}

/// Copies snapshot or `/app` `src` into the fresh `/app` `dst` of a fork. Blocking.
pub fn copy_into(src: &Path, src_cuid: &str, dst: &Path, limits: &Limits) -> FilesResult<Copied> {
    let src = confine::open_root(src, src_cuid)?;
    let dst = open_path_dir(dst)?;
    let copied = copy_tree(&src, &dst, limits)?;
    rustix::fs::syncfs(&dst).map_err(std::io::Error::from)?;
    Ok(copied)
}

/// Removes snapshot `id` of `cuid` (its directory, iteratively). Blocking.
pub fn remove(config: &Config, cuid: &str, id: &str) -> std::io::Result<()> {
    match crate::appdir::remove::remove_tree(&snapshot_dir(config, cuid, id)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes every snapshot of `cuid` (the container is deleted). Blocking.
pub fn remove_all(config: &Config, cuid: &str) -> std::io::Result<()> {
    match crate::appdir::remove::remove_tree(&container_dir(config, cuid)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = crate::appdir::remove::remove_tree(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a snapshot's leftovers");
        }
    }
}

/// Start-up, before anything is served: the snapshot directories of containers without a
/// row, unfinished ones (`.tmp-*`) and those without a row (a crash between the rename and
/// the insert, or between a delete's row and its directory) are removed. Blocking.
pub fn sweep(config: &Config, known_cuids: &HashSet<String>, known_ids: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(snapshots_dir(config)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| known_cuids.contains(n)) {
            remove_quietly(&path);
            continue;
        }
        let Ok(inner) = std::fs::read_dir(&path) else {
            continue;
        };
        for snap in inner.flatten() {
            let keep = snap
                .file_name()
                .to_str()
                .is_some_and(|n| known_ids.contains(n));
            if !keep {
                tracing::info!(path = %snap.path().display(), "removed a snapshot without a row");
                remove_quietly(&snap.path());
            }
        }
    }
}

/// Replaces `/app` (the directory `name` in `parent`) with a copy of the snapshot `snapshot`,
/// all or nothing, crash included (see the module). `staging` is a fresh staging directory
/// on the filesystem *and mount* of `parent` (`DATA_DIR/staging/…`, or a capped container's
/// image's `staging/…`); after `Ok` it holds the old tree, for the caller to remove.
/// Blocking.
pub fn restore(
    snapshot: &Path,
    staging: &Path,
    parent: &Path,
    name: &str,
    limits: &Limits,
) -> FilesResult<Copied> {
    let tree_path = staging.join(journal::TREE);
    std::fs::DirBuilder::new().mode(0o700).create(&tree_path)?;
    let new_path = tree_path.join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&new_path)?;
    let src = open_path_dir(snapshot)?;
    let tree = open_path_dir(&tree_path)?;
    let new = open_path_dir(&new_path)?;
    let copied = copy_tree(&src, &new, limits)?;
    same_top(&src, &new)?;
    // The copy on disk before the journal names it.
    rustix::fs::syncfs(&tree).map_err(std::io::Error::from)?;
    let tree_st = fstat(&tree).map_err(std::io::Error::from)?;
    let new_st = fstat(&new).map_err(std::io::Error::from)?;
    drop(new);
    let record = Record {
        mount: parent.to_path_buf(),
        dev: tree_st.st_dev,
        nodes: vec![
            Entry {
                parent: 0,
                name: String::new(),
                dir: true,
                ino: tree_st.st_ino,
            },
            Entry {
                parent: 0,
                name: name.to_owned(),
                dir: true,
                ino: new_st.st_ino,
            },
        ],
    };
    record.write(staging)?;
    maybe_pause(0);
    let dir = open_path_dir(parent)?;
    let cname = std::ffi::CString::new(name)
        .map_err(|_| Error::refused(Reason::MoveFailed, "a name holds a NUL byte"))?;
    renameat_with(
        &tree,
        cname.as_c_str(),
        &dir,
        cname.as_c_str(),
        RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::refused(Reason::MoveFailed, format!("exchanging /app failed: {e}")))?;
    maybe_pause(1);
    let committed = rustix::fs::syncfs(&dir)
        .map_err(std::io::Error::from)
        .and_then(|()| journal::mark_committed(staging));
    if let Err(e) = committed {
        if !journal::rollback(&record, &dir, &tree) {
            journal::keep(staging);
        }
        return Err(e.into());
    }
    maybe_pause(u64::MAX);
    Ok(copied)
}

/// The directory holding a container's `/app` and `/app`'s name in it, as [`restore`] takes
/// them, from `/app`'s host path.
pub fn split_app(app: &Path) -> Option<(PathBuf, String)> {
    let parent = app.parent()?.to_path_buf();
    let name = app.file_name()?.to_str()?.to_owned();
    Some((parent, name))
}

/// A staging directory beside a capped container's `/app`, or `None` for the server's.
pub fn capped_staging(config: &Config, cuid: &str, capped: bool) -> Option<PathBuf> {
    capped.then(|| crate::appdir::disk::staging_dir(config, cuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn limits() -> Limits {
        Limits {
            max_entries: 1000,
            max_bytes: 1 << 20,
        }
    }

    /// Symlinks stay symlinks (never followed), a FIFO is skipped (never opened), hard
    /// links stay hard links, and the caps end the copy with `SNAPSHOT_TOO_LARGE`.
    #[test]
    fn a_copy_keeps_links_and_skips_specials() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join("a/b/f"), b"hello").unwrap();
        std::fs::hard_link(s.join("a/b/f"), s.join("g")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("out")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let copied = copy_tree(
            &open_path_dir(s).unwrap(),
            &open_path_dir(dst.path()).unwrap(),
            &limits(),
        )
        .unwrap();
        let d = dst.path();
        assert_eq!(std::fs::read(d.join("a/b/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(d.join("out")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(!d.join("fifo").exists());
        assert_eq!(
            std::fs::metadata(d.join("g")).unwrap().ino(),
            std::fs::metadata(d.join("a/b/f")).unwrap().ino()
        );
        assert_eq!(
            (
                copied.files,
                copied.dirs,
                copied.symlinks,
                copied.hard_links,
                copied.skipped,
                copied.bytes
            ),
            (1, 2, 1, 1, 1, 5)
        );
        let few = Limits {
            max_entries: 3,
            max_bytes: 1 << 20,
        };
        let dst2 = tempfile::tempdir().unwrap();
        let e = copy_tree(
            &open_path_dir(s).unwrap(),
            &open_path_dir(dst2.path()).unwrap(),
            &few,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::Refused {
                reason: Reason::SnapshotTooLarge,
                ..
            }
        ));
        let small = Limits {
            max_entries: 100,
            max_bytes: 4,
        };
        let dst3 = tempfile::tempdir().unwrap();
        let e = copy_tree(
            &open_path_dir(s).unwrap(),
            &open_path_dir(dst3.path()).unwrap(),
            &small,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::Refused {
                reason: Reason::SnapshotTooLarge,
                ..
            }
        ));
    }

    /// A restore swaps the whole tree; a journal left by a crash before `committed` brings
    /// the old tree back.
    #[test]
    fn a_restore_is_whole_and_an_interrupted_one_rolls_back() {
        let base = tempfile::tempdir().unwrap();
        let parent = base.path().join("mounts");
        std::fs::create_dir(&parent).unwrap();
        let app = parent.join("app");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("old"), b"old").unwrap();
        let snap = base.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(snap.join("new"), b"new").unwrap();
        let staging = base.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        restore(&snap, &staging, &parent, "app", &limits()).unwrap();
        assert!(app.join("new").exists() && !app.join("old").exists());
        // The journal's rollback, as a crash before `committed` would have it.
        std::fs::remove_file(staging.join(journal::COMMITTED)).unwrap();
        assert!(journal::recover(&staging));
        assert!(app.join("old").exists() && !app.join("new").exists());
    }
}
