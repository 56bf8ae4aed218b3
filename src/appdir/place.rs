//! The commit of an upload: the staged tree ([`crate::appdir::unzip::extract`]) moved into the
//! container's `/app` by renames, all or nothing.
//!
//! New files and directories are `renameat2(RENAME_NOREPLACE)`d into place; an existing
//! file, symlink, FIFO or hard link is swapped out with `RENAME_EXCHANGE` (replaced, never
//! written through or followed); an existing directory is merged into; a non-directory where
//! the upload needs a directory is replaced by the staged directory; a directory where the
//! upload puts a file is a conflict. Before the first move the plan and the staged inodes
//! are written durably to a journal ([`crate::appdir::journal`]); on failure (or, after a crash,
//! at the next start) every staged item found in `/app` is put back, so `/app` is left as
//! it was (a placed item the container has meanwhile moved elsewhere in its `/app` is
//! beyond reach by name: it stays there, logged).
//!
//! The container can reach anything once it is in `/app`, even for an instant (a
//! `RENAME_EXCHANGE` it loops on a name puts our staged item in its tree and its item in
//! ours). So:
//! - every operation on either side goes through `O_PATH` handles opened `O_NOFOLLOW`
//!   (renames relative to the parents' handles, lookups with `O_NOFOLLOW`); no path is
//!   resolved again in the merge, so a symlink planted anywhere is moved as a name, never
//!   followed;
//! - nothing under `/app` is ever opened for real: every name is taken as an `O_PATH`
//!   handle and its type and inode checked against the staged item's first (a FIFO or a
//!   device a root container `mknod`s at a name the commit works on is never opened, so
//!   it can neither block the server nor reach a device); the owner and mode are set
//!   through the handle (`fchownat(AT_EMPTY_PATH)`, `chmod` of `/proc/self/fd/N`);
//! - the staged items stay the server's (directories 0700, files 0600) until placed: a
//!   container that catches one mid-exchange cannot enter or change it (a root one can: it
//!   meets the handle checks above). Once an item is in place it is given to the
//!   container's user through a handle taken before the move (for a directory: its
//!   contents first, through handles taken beneath it and checked, then itself);
//! - which items to move and their modes come from the [`Plan`], never from listing the
//!   staging area;
//! - when what an exchange brought back is a directory (the container made the name a
//!   directory meanwhile), the exchange is undone and the upload is `409 PATH_CONFLICT`: a
//!   tree the container has had in its hands is never merged.
//!
//! Descriptors: the merge holds two handles per level of the directory it is in (the staged
//! directory and its `/app` counterpart), giving an item holds one per level beneath it, and
//! nothing is kept for later (the rollback finds items by name): at most about three per
//! path component, [`crate::appdir::unzip::MAX_PATH_COMPONENTS`] of them, whatever the number of
//! directories merged into. The recursion is one level per path component.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::{
    fstat, openat, renameat_with, statat, AtFlags, FileType, Mode, OFlags, RenameFlags,
};
use rustix::io::Errno;
use serde_json::json;

use crate::appdir::confine;
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::journal::{self, Record};
use crate::appdir::plan::{NodeKind, Plan};
use crate::config::UserIds;

/// How many times a move is retried when the container changes the same name meanwhile.
const RACE_RETRIES: usize = 16;

/// Why a step failed.
#[derive(Debug)]
enum Fail {
    /// A name held something else than the staged item (the container changed it): 409.
    Changed,
    Io(Errno),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Io(e)
    }
}

/// What [`Commit::swap`] did.
enum Swap {
    /// Exchanged and finished.
    Done,
    /// Nothing was there any more: retry.
    Gone,
    /// A directory was there: the exchange was undone.
    Directory,
}

/// A hook run after each move, before the moved item is finished: the unit tests play the
/// container at that exact point.
pub(crate) type AfterMove<'a> = &'a dyn Fn(u64);

struct Commit<'a> {
    plan: &'a Plan,
    record: &'a Record,
    owner: UserIds,
    /// Moves done into `/app` so far.
    moves: u64,
    after_move: Option<AfterMove<'a>>,
    /// The stricter rules of a single-item write ([`Single`]).
    single: Option<Single>,
    /// Whether an existing item was swapped out (replaced).
    replaced: bool,
}

/// The rules of a single-item write (one file uploaded, one folder made), stricter than a
/// ZIP's: a folder on the way that is not a real folder (a file, or a symlink) is refused
/// instead of being replaced by a directory, and the item itself (`leaf`) refuses to take an
/// existing name unless it is a file allowed to `replace` one.
#[derive(Clone, Copy, Debug)]
pub struct Single {
    pub leaf: usize,
    pub replace: bool,
}

fn exists(rel: &str) -> Error {
    Error::refused(Reason::AlreadyExists, format!("/app/{rel} already exists"))
        .with_details(json!({"path": rel}))
}

/// A folder on the way of a single-item write that is not a real folder.
fn not_a_folder(dir: &OwnedFd, name: &CStr, rel: &str) -> Error {
    let symlink = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
    if symlink {
        Error::refused(
            Reason::UnsafePath,
            format!("unsafe path: /app/{rel} is a symlink; a write follows no symlink"),
        )
        .with_details(json!({"field": "path", "path": rel, "reason": "a symlink in the path"}))
    } else {
        Error::refused(Reason::NotADirectory, format!("/app/{rel} is not a folder"))
            .with_details(json!({"path": rel}))
    }
}

fn conflict(rel: &str) -> Error {
    Error::refused(
        Reason::PathConflict,
        format!("/app/{rel} is a directory; the upload has a file there"),
    )
    .with_details(json!({"path": rel}))
}

fn changed(rel: &str) -> Error {
    Error::refused(
        Reason::PathConflict,
        format!("/app/{rel} kept changing while the upload was moved into place"),
    )
    .with_details(json!({"path": rel}))
}

fn errno_error(e: Errno, rel: &str) -> Error {
    tracing::error!(error = %e, path = rel, "moving an uploaded file into place failed");
    Error::refused(
        Reason::MoveFailed,
        format!("moving /app/{rel} into place failed: {e}"),
    )
    .with_details(json!({"path": rel}))
}

fn fail_error(f: Fail, rel: &str) -> Error {
    match f {
        Fail::Changed => changed(rel),
        Fail::Io(e) => errno_error(e, rel),
    }
}

fn exchange(src: &OwnedFd, dst: &OwnedFd, name: &CStr) -> Result<(), Errno> {
    renameat_with(src, name, dst, name, RenameFlags::EXCHANGE)
}

fn move_in(src: &OwnedFd, dst: &OwnedFd, name: &CStr) -> Result<(), Errno> {
    renameat_with(src, name, dst, name, RenameFlags::NOREPLACE)
}

/// Whether `dir/name` is a directory (not following a symlink there).
fn is_dir_at(dir: &OwnedFd, name: &CStr) -> Result<bool, Errno> {
    let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

fn cname(name: &str) -> FilesResult<CString> {
    // The plan refused NUL bytes.
    CString::new(name).map_err(|_| Error::refused(Reason::MoveFailed, "a name holds a NUL byte"))
}

/// Gives the item behind the `O_PATH` handle `fd` to `owner` with `mode`, without opening
/// it: `fchownat(fd, "", AT_EMPTY_PATH)`, then `chmod` through `/proc/self/fd/N` (which
/// reaches exactly the inode of the handle; `fchmod` refuses `O_PATH` descriptors).
fn give(fd: &OwnedFd, owner: UserIds, mode: u32) -> Result<(), Errno> {
    match rustix::fs::chownat(
        fd,
        c"",
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
        AtFlags::EMPTY_PATH,
    ) {
        // Not root: the item stays ours, like `confine::chown_fd`.
        Ok(()) | Err(Errno::PERM) | Err(Errno::ACCESS) => {}
        Err(e) => return Err(e),
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode))
}

/// The test-only pause (`CM_TEST_COMMIT_PAUSE_AFTER`): `N` stops the commit for good right
/// after its `N`-th move into `/app` (before that item is given to the container's user;
/// `0`: once the journal is written, before any move), `committed` once the commit is
/// recorded, before the staging directory is removed. The crash tests kill the server
/// there. Unset in production.
fn pause_point() -> Option<u64> {
    static POINT: OnceLock<Option<u64>> = OnceLock::new();
    *POINT.get_or_init(|| {
        let v = std::env::var("CM_TEST_COMMIT_PAUSE_AFTER").ok()?;
        match v.trim() {
            "committed" => Some(u64::MAX),
            n => n.parse().ok(),
        }
    })
}

pub(crate) fn maybe_pause(at: u64) {
    if pause_point() == Some(at) {
        tracing::warn!(
            step = at,
            "test pause: commit paused (CM_TEST_COMMIT_PAUSE_AFTER)"
        );
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Commit<'_> {
    /// An `O_PATH` handle on `dir/name` (opens nothing, follows no symlink), checked to be
    /// the staged item of `node`: its type and inode. Anything else there is the
    /// container's doing: [`Fail::Changed`].
    fn handle(&self, dir: &OwnedFd, name: &CStr, node: usize) -> Result<OwnedFd, Fail> {
        let fd = match openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(Fail::Changed),
            Err(e) => return Err(Fail::Io(e)),
        };
        let st = fstat(&fd)?;
        let want = if self.plan.nodes[node].kind == NodeKind::Dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        };
        let staged = &self.record.nodes[node];
        if FileType::from_raw_mode(st.st_mode) != want
            || st.st_ino != staged.ino
            || st.st_dev != self.record.dev
        {
            return Err(Fail::Changed);
        }
        Ok(fd)
    }

    /// Gives the placed item `fd` (node `node` of the plan) to the container's user with its
    /// mode; a directory's contents first, while the directory itself is still the server's
    /// 0700 and so out of an unprivileged container's reach (a root one is met by the
    /// checks of [`Commit::handle`]).
    fn finish(&self, node: usize, fd: &OwnedFd) -> Result<(), Fail> {
        let n = &self.plan.nodes[node];
        if n.kind == NodeKind::Dir {
            for (name, &child) in &n.children {
                let name = CString::new(name.as_str()).map_err(|_| Errno::INVAL)?;
                let child_fd = self.handle(fd, &name, child)?;
                self.finish(child, &child_fd)?;
            }
        }
        let default = if n.kind == NodeKind::Dir {
            0o755
        } else {
            0o644
        };
        Ok(give(fd, self.owner, n.mode.unwrap_or(default))?)
    }

    /// Moves the children of the staged directory `src` (node `node`) into `dst`.
    fn merge(&mut self, node: usize, src: &OwnedFd, dst: &OwnedFd, rel: &str) -> FilesResult<()> {
        let mut children: Vec<(&str, usize)> = self.plan.nodes[node]
            .children
            .iter()
            .map(|(n, &id)| (n.as_str(), id))
            .collect();
        children.sort_unstable();
        for (name, child) in children {
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            self.place(child, src, dst, &cname(name)?, &child_rel)?;
        }
        Ok(())
    }

    /// Places the staged `src/name` (node `node`) at `dst/name`.
    fn place(
        &mut self,
        node: usize,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &CStr,
        rel: &str,
    ) -> FilesResult<()> {
        let is_dir = self.plan.nodes[node].kind == NodeKind::Dir;
        let err = |e| errno_error(e, rel);
        // Taken before it moves: whatever name it has by then, this is what gets finished.
        let staged = self
            .handle(src, name, node)
            .map_err(|f| fail_error(f, rel))?;
        for _ in 0..RACE_RETRIES {
            if is_dir {
                // An existing real directory (no symlink followed): merge into it.
                match confine::openat2_retry(
                    dst,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    confine::write_resolve(),
                ) {
                    Ok(_) if self.is_leaf(node) => return Err(exists(rel)),
                    Ok(fd) => return self.merge(node, &staged, &fd, rel),
                    Err(Errno::NOENT) => {}
                    Err(Errno::NOTDIR | Errno::LOOP) if self.is_leaf(node) => {
                        return Err(exists(rel))
                    }
                    Err(Errno::NOTDIR | Errno::LOOP) if self.single.is_some() => {
                        return Err(not_a_folder(dst, name, rel))
                    }
                    // Something else is there: put the staged directory in its place.
                    Err(Errno::NOTDIR | Errno::LOOP) => {
                        match self.swap(node, src, dst, name, &staged, rel)? {
                            Swap::Done => return Ok(()),
                            Swap::Gone => continue,
                            // It became a directory meanwhile: not merged (see the module).
                            Swap::Directory => return Err(changed(rel)),
                        }
                    }
                    Err(e) => return Err(err(e)),
                }
                match move_in(src, dst, name) {
                    Ok(()) => return self.placed(node, &staged, rel),
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(err(e)),
                }
            } else {
                match move_in(src, dst, name) {
                    Ok(()) => return self.placed(node, &staged, rel),
                    Err(Errno::EXIST) if self.is_leaf(node) && !self.may_replace() => {
                        return Err(exists(rel))
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(err(e)),
                }
                // Something is there: swap it out (a file, symlink, FIFO or hard link is
                // replaced as a name; its target is never touched).
                match self.swap(node, src, dst, name, &staged, rel)? {
                    Swap::Done => return Ok(()),
                    Swap::Gone => continue,
                    Swap::Directory => return Err(conflict(rel)),
                }
            }
        }
        Err(changed(rel))
    }

    /// Whether `node` is the item of a single-item write.
    fn is_leaf(&self, node: usize) -> bool {
        self.single.is_some_and(|s| s.leaf == node)
    }

    fn may_replace(&self) -> bool {
        self.single.is_some_and(|s| s.replace)
    }

    /// The staged item `staged` (node `node`) is in `/app` now: give it away.
    fn placed(&mut self, node: usize, staged: &OwnedFd, rel: &str) -> FilesResult<()> {
        self.moves += 1;
        if let Some(hook) = self.after_move {
            hook(self.moves);
        }
        maybe_pause(self.moves);
        self.finish(node, staged).map_err(|f| fail_error(f, rel))
    }

    /// Exchanges the staged item with what `dst/name` holds.
    fn swap(
        &mut self,
        node: usize,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &CStr,
        staged: &OwnedFd,
        rel: &str,
    ) -> FilesResult<Swap> {
        let err = |e| errno_error(e, rel);
        match exchange(src, dst, name) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(Swap::Gone),
            Err(e) => return Err(err(e)),
        }
        if is_dir_at(src, name).map_err(err)? {
            // /app had (or the container made) a directory there. Undo at once; the staged
            // item was the server's 0700/0600 meanwhile, and the directory is not merged.
            exchange(src, dst, name).map_err(err)?;
            return Ok(Swap::Directory);
        }
        self.placed(node, staged, rel)?;
        self.replaced = true;
        Ok(Swap::Done)
    }
}

/// Merges the staged `tree` (the directory [`crate::appdir::unzip::extract`] filled as `plan`
/// says, in the upload's staging directory `staging`) into the directory `root` (the
/// container's `/app`, whose host path is `mount`), all or nothing, crash included; what is
/// placed is given to `owner`.
pub fn commit(
    plan: &Plan,
    staging: &Path,
    tree: OwnedFd,
    root: OwnedFd,
    mount: &Path,
    owner: UserIds,
) -> FilesResult<()> {
    commit_with(plan, staging, tree, root, mount, owner, None, None).map(|_| ())
}

/// [`commit`] of a single item (one file, one folder) under the rules of [`Single`];
/// answers whether an existing file was replaced.
pub fn commit_single(
    plan: &Plan,
    staging: &Path,
    tree: OwnedFd,
    root: OwnedFd,
    mount: &Path,
    owner: UserIds,
    single: Single,
) -> FilesResult<bool> {
    commit_with(plan, staging, tree, root, mount, owner, None, Some(single))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn commit_with(
    plan: &Plan,
    staging: &Path,
    tree: OwnedFd,
    root: OwnedFd,
    mount: &Path,
    owner: UserIds,
    after_move: Option<AfterMove<'_>>,
    single: Option<Single>,
) -> FilesResult<bool> {
    let record = Record::of(plan, &tree, mount)?;
    record.write(staging)?;
    maybe_pause(0);
    let mut commit = Commit {
        plan,
        record: &record,
        owner,
        moves: 0,
        after_move,
        single,
        replaced: false,
    };
    let result = commit.merge(0, &tree, &root, "").and_then(|()| {
        // The moves and owners on disk before the journal says they are.
        rustix::fs::syncfs(&root).map_err(std::io::Error::from)?;
        journal::mark_committed(staging)?;
        Ok(())
    });
    match result {
        Ok(()) => {
            maybe_pause(u64::MAX);
            Ok(commit.replaced)
        }
        Err(e) => {
            // Also with no move counted: a failed exchange back may have left one in place.
            if !journal::rollback(&record, &root, &tree) {
                journal::keep(staging);
            }
            Err(e)
        }
    }
}
