//! The durable record of an upload's commit, so that a crash (`kill -9`, a power cut) while
//! the staged tree is being moved into `/app` is undone at the next start instead of losing
//! the files the upload replaced (they sit in the staging area after an exchange) or leaving
//! the server's private 0700/0600 items in `/app`.
//!
//! Before the first move, [`Record::write`] puts `journal` in the upload's staging directory
//! (written to a temporary name, synced, renamed, the directory synced): the container's
//! mount directory and, for every node of the plan, its parent, name, kind and the inode of
//! its staged item. Moves themselves are not logged one by one (two syncs per move would
//! make a 20,000-entry upload take minutes): where a staged inode is now tells what was
//! done, since renames keep inodes and only the commit moves staged items. Once every move
//! is done and every placed item given to the container's user, the filesystem is synced
//! and [`mark_committed`] writes `committed`.
//!
//! [`rollback`] puts back every staged item found in `/app` (exchanged back with what it
//! replaced, which waits at the same name in the staging tree, or renamed back), walking
//! the plan from the root and descending only into directories that were merged into. It is
//! idempotent, used both for a failed commit and, at start-up ([`recover`]), for a staging
//! directory with a journal and no `committed`: `/app` then holds the whole old tree. With
//! `committed` the whole new tree is in place and the staging directory is only removed.

use std::ffi::CString;
use std::io::{BufRead, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, openat, renameat_with, statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::appdir::plan::{NodeKind, Plan};

/// The journal's file name in the upload's staging directory.
pub const JOURNAL: &str = "journal";
/// Written once the new tree is wholly in place (and synced).
pub const COMMITTED: &str = "committed";
/// The staged tree's name in the upload's staging directory.
pub const TREE: &str = "tree";
/// Written when a rollback could not put everything back (or a crashed commit could not be
/// read): the staging directory may then hold the only copy of files the upload swapped out
/// of `/app`, so it is never removed; an operator looks at it (the log names it).
pub const KEEP: &str = "KEEP";

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    mount: PathBuf,
    dev: u64,
    nodes: usize,
}

/// One node of the plan as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub parent: usize,
    pub name: String,
    pub dir: bool,
    /// The inode of its staged item (the tree itself for node 0).
    pub ino: u64,
}

/// What the journal holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// `DATA_DIR/mounts/<cuid>`: where the tree is moved.
    pub mount: PathBuf,
    /// The device of the staging area (and of `/app`: moves are renames).
    pub dev: u64,
    pub nodes: Vec<Entry>,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Record {
    /// Reads the staged inode of every node of `plan` from `tree`.
    pub fn of(plan: &Plan, tree: &OwnedFd, mount: &Path) -> std::io::Result<Self> {
        let st = fstat(tree)?;
        let mut nodes = Vec::with_capacity(plan.nodes.len());
        nodes.push(Entry {
            parent: 0,
            name: String::new(),
            dir: true,
            ino: st.st_ino,
        });
        for (id, node) in plan.nodes.iter().enumerate().skip(1) {
            let staged = statat(tree, plan.path(id).as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            nodes.push(Entry {
                parent: node.parent,
                name: node.name.clone(),
                dir: node.kind == NodeKind::Dir,
                ino: staged.st_ino,
            });
        }
        Ok(Self {
            mount: mount.to_path_buf(),
            dev: st.st_dev,
            nodes,
        })
    }

    /// Writes the journal into `staging` durably: once it is there under its name, it is
    /// whole.
    pub fn write(&self, staging: &Path) -> std::io::Result<()> {
        let tmp = staging.join("journal.tmp");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::new(file);
        let header = Header {
            version: 1,
            mount: self.mount.clone(),
            dev: self.dev,
            nodes: self.nodes.len(),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        for e in &self.nodes {
            serde_json::to_writer(&mut out, &(e.parent, &e.name, e.dir, e.ino))?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, staging.join(JOURNAL))?;
        fsync_dir(staging)?;
        // The staging directory's own entry, for a power cut right after.
        if let Some(parent) = staging.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    /// The journal of `staging`, if it has one.
    pub fn read(staging: &Path) -> std::io::Result<Option<Self>> {
        let file = match std::fs::File::open(staging.join(JOURNAL)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut lines = std::io::BufReader::new(file).lines();
        let header: Header = serde_json::from_str(&lines.next().ok_or_else(|| bad("empty"))??)?;
        if header.version != 1 {
            return Err(bad("unknown journal version"));
        }
        let mut nodes = Vec::with_capacity(header.nodes.min(1 << 20));
        for line in lines {
            let (parent, name, dir, ino): (usize, String, bool, u64) =
                serde_json::from_str(&line?)?;
            if parent >= nodes.len().max(1) {
                return Err(bad("a node before its parent"));
            }
            nodes.push(Entry {
                parent,
                name,
                dir,
                ino,
            });
        }
        if nodes.len() != header.nodes {
            return Err(bad("truncated journal"));
        }
        Ok(Some(Self {
            mount: header.mount,
            dev: header.dev,
            nodes,
        }))
    }
}

/// Marks `staging` as [`KEEP`]: never removed by the server.
pub fn keep(staging: &Path) {
    tracing::error!(
        dir = %staging.display(),
        "an upload could not be wholly undone: its staging directory is kept for an operator"
    );
    if let Err(e) = std::fs::File::create(staging.join(KEEP)).and_then(|f| f.sync_all()) {
        tracing::error!(dir = %staging.display(), error = %e, "cannot mark a staging directory to keep");
    }
}

/// Whether `staging` is marked [`KEEP`].
pub fn is_kept(staging: &Path) -> bool {
    staging.join(KEEP).exists()
}

/// Records that the new tree is wholly in place: from now on a crash keeps it.
pub fn mark_committed(staging: &Path) -> std::io::Result<()> {
    std::fs::File::create(staging.join(COMMITTED))?.sync_all()?;
    fsync_dir(staging)
}

fn exchange(a: &OwnedFd, b: &OwnedFd, name: &CString) -> Result<(), Errno> {
    renameat_with(
        a,
        name.as_c_str(),
        b,
        name.as_c_str(),
        rustix::fs::RenameFlags::EXCHANGE,
    )
}

fn dir_handle(dir: &OwnedFd, name: &CString) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name.as_c_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

struct Undo<'a> {
    record: &'a Record,
    children: Vec<Vec<usize>>,
    put_back: usize,
    lost: usize,
}

impl Undo<'_> {
    /// Puts back the staged children of `node` found in `app` (its directory in `/app`)
    /// into `stage` (its staged directory). Recursion: one level per path component of the
    /// plan (at most [`crate::appdir::confine::MAX_PATH_COMPONENTS`]), two handles each.
    fn node(&mut self, node: usize, app: &OwnedFd, stage: &OwnedFd) {
        for i in 0..self.children[node].len() {
            let child = self.children[node][i];
            let record = self.record;
            let e = &record.nodes[child];
            let Ok(name) = CString::new(e.name.as_str()) else {
                continue;
            };
            let Ok(st) = statat(app, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue; // nothing there: not moved in (or the container removed it)
            };
            if st.st_ino == e.ino && st.st_dev == record.dev {
                // Ours, in /app: back to where it was staged, with what it replaced.
                let result = match statat(stage, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => exchange(stage, app, &name),
                    Err(Errno::NOENT) => renameat_with(
                        app,
                        name.as_c_str(),
                        stage,
                        name.as_c_str(),
                        rustix::fs::RenameFlags::NOREPLACE,
                    ),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => self.put_back += 1,
                    Err(err) => {
                        self.lost += 1;
                        tracing::error!(error = %err, name = e.name, "cannot put back an uploaded item");
                    }
                }
                continue;
            }
            if e.dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                // A directory of /app the upload merged into (or never reached): look inside,
                // provided its staged directory is still ours and still staged.
                let (Ok(app_sub), Ok(stage_sub)) =
                    (dir_handle(app, &name), dir_handle(stage, &name))
                else {
                    continue;
                };
                if fstat(&stage_sub).is_ok_and(|s| s.st_ino == e.ino) {
                    self.node(child, &app_sub, &stage_sub);
                }
            }
        }
    }
}

/// Moves every staged item of `record` found in `/app` (`root`) back into the staged `tree`,
/// exchanging it back with what it replaced. Returns whether every item found was put back:
/// when not, the staging directory holds what some of them replaced and must be kept
/// ([`keep`]). A staged item the container moved elsewhere in its `/app` meanwhile stays
/// there.
pub fn rollback(record: &Record, root: &OwnedFd, tree: &OwnedFd) -> bool {
    let mut children = vec![Vec::new(); record.nodes.len()];
    for (id, e) in record.nodes.iter().enumerate().skip(1) {
        children[e.parent].push(id);
    }
    let mut undo = Undo {
        record,
        children,
        put_back: 0,
        lost: 0,
    };
    undo.node(0, root, tree);
    if undo.lost > 0 {
        tracing::error!(
            lost = undo.lost,
            put_back = undo.put_back,
            "rolling back an upload left items in /app"
        );
    } else {
        tracing::info!(put_back = undo.put_back, "upload rolled back");
    }
    undo.lost == 0
}

/// At start-up, before anything is served: brings `/app` back to its old tree when the
/// upload staged in `staging` crashed during its commit. Returns whether `staging` may be
/// removed now; when not, it is marked [`KEEP`].
pub fn recover(staging: &Path) -> bool {
    if is_kept(staging) {
        return false;
    }
    if staging.join(COMMITTED).exists() {
        return true;
    }
    let record = match Record::read(staging) {
        Ok(Some(r)) => r,
        // No journal: nothing was moved yet.
        Ok(None) => return true,
        Err(e) => {
            tracing::error!(dir = %staging.display(), error = %e, "unreadable upload journal");
            keep(staging);
            return false;
        }
    };
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let (root, tree) = match (open(&record.mount), open(&staging.join(TREE))) {
        (Ok(r), Ok(t)) => (r, t),
        // The container was deleted (its /app is gone), or nothing was staged: nothing of
        // its old tree is left to save.
        (Err(Errno::NOENT), _) | (_, Err(Errno::NOENT)) => {
            tracing::warn!(dir = %staging.display(), "an interrupted upload's directories are gone");
            return true;
        }
        _ => {
            keep(staging);
            return false;
        }
    };
    let complete = rollback(&record, &root, &tree);
    tracing::warn!(
        mount = %record.mount.display(),
        complete,
        "rolled back an upload interrupted by a crash"
    );
    if !complete {
        keep(staging);
    }
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging directory whose journal cannot be read may hold the only copy of what an
    /// upload swapped out of `/app`: it is kept, and stays kept; one without a journal (no
    /// move was made) may go.
    #[test]
    fn an_unreadable_journal_keeps_its_staging_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL), b"not a journal\n").unwrap();
        assert!(!recover(dir.path()));
        assert!(is_kept(dir.path()));
        assert!(!recover(dir.path()));
        let fresh = tempfile::tempdir().unwrap();
        assert!(recover(fresh.path()));
        assert!(!is_kept(fresh.path()));
    }
}
