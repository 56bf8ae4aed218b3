//! The commit of an upload: the staged tree ([`crate::fs::unzip::extract`]) moved into the
//! container's `/app` by renames, all or nothing.
//!
//! New files and directories are `renameat2(RENAME_NOREPLACE)`d into place; an existing
//! file, symlink, FIFO or hard link is swapped out with `RENAME_EXCHANGE` (replaced, never
//! written through or followed); an existing directory is merged into; a non-directory where
//! the upload needs a directory is replaced by the staged directory; a directory where the
//! upload puts a file is a conflict. Every move is journaled and undone in reverse order on
//! failure, so `/app` is left as it was.
//!
//! The container can reach anything once it is in `/app`, even for an instant (a
//! `RENAME_EXCHANGE` it loops on a name puts our staged item in its tree and its item in
//! ours). So:
//! - every operation on either side goes through directory descriptors opened
//!   `O_DIRECTORY|O_NOFOLLOW` (renames relative to the parents' descriptors, lookups with
//!   `O_NOFOLLOW`); no path is ever resolved again, in the merge or in the rollback, so a
//!   symlink planted anywhere is moved as a name, never followed;
//! - the staged items stay the server's (directories 0700, files 0600) until placed: a
//!   container that catches one mid-exchange cannot enter or change it. Once an item is in
//!   place it is given to the container's user through a descriptor opened before the move
//!   (for a directory: its contents first, through descriptors opened beneath it, then
//!   itself);
//! - which items to move and their modes come from the [`Plan`], never from listing the
//!   staging area;
//! - when what an exchange brought back is a directory (the container made the name a
//!   directory meanwhile), the exchange is undone and the upload is `409 PATH_CONFLICT`: a
//!   tree the container has had in its hands is never merged.
//!
//! The recursion is one level per path component, bounded by
//! [`crate::fs::unzip::MAX_PATH_COMPONENTS`].

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{openat, renameat_with, statat, AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde_json::json;

use crate::config::UserIds;
use crate::error::{ApiError, ApiResult};
use crate::fs::confine;
use crate::fs::unzip::{NodeKind, Plan};

/// How many times a move is retried when the container changes the same name meanwhile.
const RACE_RETRIES: usize = 16;

/// One move done in `/app`, to undo on failure. Both sides are directory descriptors.
enum Undo {
    /// `src_dir/name` (staging) was renamed to `dst_dir/name`: rename it back.
    MovedIn {
        src_dir: Arc<OwnedFd>,
        dst_dir: Arc<OwnedFd>,
        name: CString,
    },
    /// `src_dir/name` (staging) and `dst_dir/name` were exchanged: exchange them back.
    Exchanged {
        src_dir: Arc<OwnedFd>,
        dst_dir: Arc<OwnedFd>,
        name: CString,
    },
}

/// What [`Commit::swap`] did.
enum Swap {
    /// Exchanged, journaled and finished.
    Done,
    /// Nothing was there any more: retry.
    Gone,
    /// A directory was there: the exchange was undone.
    Directory,
}

struct Commit<'a> {
    plan: &'a Plan,
    owner: UserIds,
    journal: Vec<Undo>,
}

fn conflict(rel: &str) -> ApiError {
    ApiError::conflict(
        "PATH_CONFLICT",
        format!("/app/{rel} is a directory; the upload has a file there"),
    )
    .with_details(json!({"path": rel}))
}

fn changed(rel: &str) -> ApiError {
    ApiError::conflict(
        "PATH_CONFLICT",
        format!("/app/{rel} kept changing while the upload was moved into place"),
    )
    .with_details(json!({"path": rel}))
}

fn errno_error(e: Errno, rel: &str) -> ApiError {
    tracing::error!(error = %e, path = rel, "moving an uploaded file into place failed");
    ApiError::io(format!("moving /app/{rel} into place failed: {e}"))
        .with_details(json!({"path": rel}))
}

fn exchange(src: &OwnedFd, dst: &OwnedFd, name: &CString) -> Result<(), Errno> {
    renameat_with(
        src,
        name.as_c_str(),
        dst,
        name.as_c_str(),
        RenameFlags::EXCHANGE,
    )
}

fn move_in(src: &OwnedFd, dst: &OwnedFd, name: &CString) -> Result<(), Errno> {
    renameat_with(
        src,
        name.as_c_str(),
        dst,
        name.as_c_str(),
        RenameFlags::NOREPLACE,
    )
}

/// Whether `dir/name` is a directory (not following a symlink there).
fn is_dir_at(dir: &OwnedFd, name: &CString) -> Result<bool, Errno> {
    let st = statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

/// Opens `dir/name` without following a symlink: a directory to list or a regular file to
/// give away (`O_NONBLOCK`: opening never waits, whatever is there).
fn open_nofollow(dir: &OwnedFd, name: &CString, is_dir: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if is_dir {
        flags |= OFlags::DIRECTORY;
    }
    openat(dir, name.as_c_str(), flags, Mode::empty())
}

fn cname(name: &str) -> ApiResult<CString> {
    // The plan refused NUL bytes.
    CString::new(name).map_err(|_| ApiError::io("a name holds a NUL byte"))
}

impl Commit<'_> {
    /// Gives the placed item `fd` (node `node` of the plan) to the container's user with its
    /// mode; a directory's contents first, while the directory itself is still the server's
    /// 0700 and so out of the container's reach.
    fn finish(&self, node: usize, fd: &OwnedFd) -> Result<(), Errno> {
        let n = &self.plan.nodes[node];
        if n.kind == NodeKind::Dir {
            for (name, &child) in &n.children {
                let is_dir = self.plan.nodes[child].kind == NodeKind::Dir;
                let name = CString::new(name.as_str()).map_err(|_| Errno::INVAL)?;
                let child_fd = open_nofollow(fd, &name, is_dir)?;
                self.finish(child, &child_fd)?;
            }
        }
        let default = if n.kind == NodeKind::Dir {
            0o755
        } else {
            0o644
        };
        confine::chown_fd(fd.as_fd(), self.owner)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(n.mode.unwrap_or(default)))
    }

    /// Moves the children of the staged directory `src` (node `node`) into `dst`.
    fn merge(
        &mut self,
        node: usize,
        src: &Arc<OwnedFd>,
        dst: &Arc<OwnedFd>,
        rel: &str,
    ) -> ApiResult<()> {
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
        src: &Arc<OwnedFd>,
        dst: &Arc<OwnedFd>,
        name: &CString,
        rel: &str,
    ) -> ApiResult<()> {
        let is_dir = self.plan.nodes[node].kind == NodeKind::Dir;
        let err = |e| errno_error(e, rel);
        // Opened before it moves: whatever name it has by then, this is what gets finished.
        let staged = open_nofollow(src, name, is_dir).map_err(err)?;
        for _ in 0..RACE_RETRIES {
            if is_dir {
                // An existing real directory (no symlink followed): merge into it.
                match confine::openat2_retry(
                    dst.as_ref(),
                    name.as_c_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    confine::write_resolve(),
                ) {
                    Ok(fd) => return self.merge(node, &Arc::new(staged), &Arc::new(fd), rel),
                    Err(Errno::NOENT) => {}
                    // Something else is there: put the staged directory in its place.
                    Err(Errno::NOTDIR | Errno::LOOP) => {
                        match self.swap(node, src, dst, name, &staged).map_err(err)? {
                            Swap::Done => return Ok(()),
                            Swap::Gone => continue,
                            // It became a directory meanwhile: not merged (see the module).
                            Swap::Directory => return Err(changed(rel)),
                        }
                    }
                    Err(e) => return Err(err(e)),
                }
                match move_in(src, dst, name) {
                    Ok(()) => return self.moved_in(node, src, dst, name, &staged).map_err(err),
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(err(e)),
                }
            } else {
                match move_in(src, dst, name) {
                    Ok(()) => return self.moved_in(node, src, dst, name, &staged).map_err(err),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(err(e)),
                }
                // Something is there: swap it out (a file, symlink, FIFO or hard link is
                // replaced as a name; its target is never touched).
                match self.swap(node, src, dst, name, &staged).map_err(err)? {
                    Swap::Done => return Ok(()),
                    Swap::Gone => continue,
                    Swap::Directory => return Err(conflict(rel)),
                }
            }
        }
        Err(changed(rel))
    }

    fn moved_in(
        &mut self,
        node: usize,
        src: &Arc<OwnedFd>,
        dst: &Arc<OwnedFd>,
        name: &CString,
        staged: &OwnedFd,
    ) -> Result<(), Errno> {
        self.journal.push(Undo::MovedIn {
            src_dir: src.clone(),
            dst_dir: dst.clone(),
            name: name.clone(),
        });
        self.finish(node, staged)
    }

    /// Exchanges the staged item with what `dst/name` holds.
    fn swap(
        &mut self,
        node: usize,
        src: &Arc<OwnedFd>,
        dst: &Arc<OwnedFd>,
        name: &CString,
        staged: &OwnedFd,
    ) -> Result<Swap, Errno> {
        match exchange(src, dst, name) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(Swap::Gone),
            Err(e) => return Err(e),
        }
        if is_dir_at(src, name)? {
            // /app had (or the container made) a directory there. Undo at once; the staged
            // item was the server's 0700/0600 meanwhile, and the directory is not merged.
            exchange(src, dst, name)?;
            return Ok(Swap::Directory);
        }
        self.journal.push(Undo::Exchanged {
            src_dir: src.clone(),
            dst_dir: dst.clone(),
            name: name.clone(),
        });
        self.finish(node, staged)?;
        Ok(Swap::Done)
    }
}

fn rollback(journal: Vec<Undo>) {
    for undo in journal.into_iter().rev() {
        let (result, name) = match &undo {
            Undo::MovedIn {
                src_dir,
                dst_dir,
                name,
            } => (
                renameat_with(
                    dst_dir.as_ref(),
                    name.as_c_str(),
                    src_dir.as_ref(),
                    name.as_c_str(),
                    RenameFlags::NOREPLACE,
                ),
                name,
            ),
            Undo::Exchanged {
                src_dir,
                dst_dir,
                name,
            } => (exchange(src_dir, dst_dir, name), name),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, name = ?name, "rolling back an upload move failed");
        }
    }
}

/// Merges the staged `tree` (the directory [`crate::fs::unzip::extract`] filled as `plan`
/// says) into the directory `root` (the container's `/app`), all or nothing; what is placed
/// is given to `owner`.
pub fn commit(plan: &Plan, tree: OwnedFd, root: OwnedFd, owner: UserIds) -> ApiResult<()> {
    let mut commit = Commit {
        plan,
        owner,
        journal: Vec::new(),
    };
    match commit.merge(0, &Arc::new(tree), &Arc::new(root), "") {
        Ok(()) => Ok(()),
        Err(e) => {
            rollback(std::mem::take(&mut commit.journal));
            Err(e)
        }
    }
}
