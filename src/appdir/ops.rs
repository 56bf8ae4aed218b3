//! Single-item operations on a container's `/app` (docs/API.md §5): one file uploaded, one
//! folder made, one item deleted or moved.
//!
//! They add no path code of their own. Writes that place something (a file, a folder) are a
//! one-item [`Plan`] staged like an extracted ZIP and committed by [`place::commit_single`],
//! so the journal, the rollback, the handle checks and the owner of what is placed are the
//! ZIP upload's; only its rules are stricter ([`place::Single`]). Deletes and moves open the
//! parent folders with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` ([`confine`]'s write
//! resolution) and act on one name of that handle (`unlinkat`, `renameat2(RENAME_NOREPLACE)`),
//! which never follows a symlink; a folder deleted with everything in it is first moved out
//! of the container's reach (into a staging directory on the same filesystem) in one rename,
//! then removed there by [`crate::appdir::remove`].

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{
    mkdirat, openat, renameat, renameat_with, unlinkat, AtFlags, FileType, Mode, OFlags,
    RenameFlags, CWD,
};
use rustix::io::Errno;
use serde_json::json;

use crate::appdir::confine;
use crate::appdir::disk;
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::journal;
use crate::appdir::place::{self, Single};
use crate::appdir::plan::{NodeKind, Plan};
use crate::config::UserIds;

fn unsafe_path(provided: &str, reason: &str) -> Error {
    Error::refused(Reason::UnsafePath, format!("unsafe path: {reason}"))
        .with_details(json!({"field": "path", "provided": provided, "reason": reason}))
}

fn not_found(provided: &str) -> Error {
    Error::refused(
        Reason::FileNotFound,
        format!("no such file or folder: {provided}"),
    )
    .with_details(json!({"path": provided}))
}

fn cname(name: &str) -> FilesResult<CString> {
    // parse_path refused NUL bytes.
    CString::new(name).map_err(|_| unsafe_path(name, "the path contains a NUL byte"))
}

/// Opens the folder `components` beneath `root` for a write: no symlink followed at all,
/// nothing opened but as a handle.
fn open_folder(root: &OwnedFd, components: &[String], provided: &str) -> FilesResult<OwnedFd> {
    let path = confine::rel(components);
    confine::openat2_retry(
        root,
        path.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        confine::write_resolve(),
    )
    .map_err(|e| match e {
        Errno::NOENT => not_found(provided),
        Errno::NOTDIR => Error::refused(
            Reason::NotADirectory,
            format!("a folder in {provided} is not a folder"),
        )
        .with_details(json!({"path": provided})),
        Errno::LOOP => unsafe_path(provided, "the path goes through a symlink"),
        Errno::XDEV => unsafe_path(provided, "the path leads outside /app"),
        Errno::NAMETOOLONG => unsafe_path(provided, "the path is too long"),
        e => std::io::Error::from(e).into(),
    })
}

/// The permission bits of the regular file at `components`, if there is one (never
/// following a symlink): what an upload replacing it keeps.
fn existing_mode(root: &OwnedFd, components: &[String]) -> Option<u32> {
    let fd = confine::openat2_retry(
        root,
        confine::rel(components).as_str(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        confine::write_resolve(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then_some(st.st_mode & 0o777)
}

/// A plan of one item at `components` (not empty) with its folders, and the item's node.
fn single_plan(components: &[String], kind: NodeKind, mode: Option<u32>) -> (Plan, usize) {
    let mut plan = Plan::default();
    let mut node = 0;
    for name in components {
        node = plan.child(node, name).0;
    }
    plan.nodes[node].kind = kind;
    plan.nodes[node].mode = mode;
    (plan, node)
}

/// Makes the plan's folders in `tree` (the server's, 0700), parents first.
fn stage_folders(plan: &Plan, tree: &OwnedFd) -> FilesResult<()> {
    for (id, node) in plan.nodes.iter().enumerate().skip(1) {
        if node.kind == NodeKind::Dir {
            mkdirat(tree, plan.path(id).as_str(), Mode::from_raw_mode(0o700))
                .map_err(std::io::Error::from)?;
        }
    }
    Ok(())
}

fn open_tree(work: &Path) -> FilesResult<OwnedFd> {
    let tree = work.join(journal::TREE);
    std::fs::DirBuilder::new().mode(0o700).create(&tree)?;
    let fd = rustix::fs::open(
        &tree,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    Ok(fd)
}

/// Where a single write happens: `work` is the server's staging directory of the request or,
/// for a container with a disk cap, a directory in its image's staging area (the commit
/// renames within one filesystem, and what is placed counts against the cap).
pub struct Work<'a> {
    pub work: &'a Path,
    pub root: OwnedFd,
    pub mount: &'a Path,
    pub owner: UserIds,
    /// The container has a disk cap: `work` is in its image.
    pub capped: bool,
}

impl Work<'_> {
    fn capped(&self) -> bool {
        self.capped
    }

    /// Running out of space in a capped container's image: `413 DISK_QUOTA_EXCEEDED`.
    fn quota(&self, e: Error) -> Error {
        match e {
            Error::Io(e) if self.capped() && disk::is_full(&e) => Error::refused(
                Reason::DiskQuotaExceeded,
                "it does not fit under the container's resources.disk; /app is unchanged",
            ),
            e => e,
        }
    }
}

/// What [`put_file`] did.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    /// An existing file was replaced (else the file is new).
    pub replaced: bool,
}

/// Places the file `body` (in the server's staging area, `bytes` long) at `components` of `/app`: missing
/// folders are made, an existing file (or symlink, FIFO: as a name) is replaced unless
/// `replace` is false, a folder there is `409 PATH_CONFLICT`. A replaced regular file's
/// permission bits are kept; a new file is 0644. All or nothing, like a ZIP upload.
pub fn put_file(
    w: Work<'_>,
    body: &Path,
    bytes: u64,
    components: &[String],
    replace: bool,
) -> FilesResult<Written> {
    let mode = existing_mode(&w.root, components);
    let (plan, leaf) = single_plan(components, NodeKind::File, mode);
    let run = || -> FilesResult<bool> {
        let tree = open_tree(w.work)?;
        stage_folders(&plan, &tree)?;
        // Relative to the tree's handle: `/app`'s longest path under the staging directory's
        // own path would pass the kernel's PATH_MAX.
        let staged = plan.path(leaf);
        if w.capped() {
            // Into the container's own image: the copy counts against its cap.
            let out = openat(
                &tree,
                staged.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(std::io::Error::from)?;
            let mut out = File::from(out);
            std::io::copy(&mut File::open(body)?, &mut out)?;
            out.sync_all()?;
            let _ = std::fs::remove_file(body);
        } else {
            renameat(CWD, body, &tree, staged.as_str()).map_err(std::io::Error::from)?;
        }
        place::commit_single(
            &plan,
            w.work,
            tree,
            w.root.try_clone()?,
            w.mount,
            w.owner,
            Single { leaf, replace },
        )
    };
    let replaced = run().map_err(|e| w.quota(e))?;
    Ok(Written { bytes, replaced })
}

/// Makes the folder `components` (not empty) of `/app`, with any missing folder above it,
/// 0755 and the container's user's. One that exists (as anything) is `409 FILE_EXISTS`.
pub fn make_folder(w: Work<'_>, components: &[String]) -> FilesResult<()> {
    let (plan, leaf) = single_plan(components, NodeKind::Dir, None);
    let run = || -> FilesResult<bool> {
        let tree = open_tree(w.work)?;
        stage_folders(&plan, &tree)?;
        place::commit_single(
            &plan,
            w.work,
            tree,
            w.root.try_clone()?,
            w.mount,
            w.owner,
            Single {
                leaf,
                replace: false,
            },
        )
    };
    run().map_err(|e| w.quota(e))?;
    Ok(())
}

/// What [`remove`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    File,
    Folder,
}

/// How often a name that changes kind between two steps is tried again.
const RACE_RETRIES: usize = 16;

/// Deletes `components` (not empty) of `/app`: a file, symlink (never what it points to) or
/// other non-folder by `unlinkat`; an empty folder by `rmdir`; a folder with something in it
/// only with `recursive`, moved in one rename into `trash` (a fresh staging directory on the
/// same filesystem, the server's) and removed there (by the caller, when `trash` goes).
pub fn remove(
    root: &OwnedFd,
    components: &[String],
    provided: &str,
    recursive: bool,
    trash: &Path,
) -> FilesResult<Removed> {
    let (name, parents) = components
        .split_last()
        .expect("the caller refuses the root");
    let parent = open_folder(root, parents, provided)?;
    let name = cname(name)?;
    for _ in 0..RACE_RETRIES {
        match unlinkat(&parent, name.as_c_str(), AtFlags::empty()) {
            Ok(()) => return Ok(Removed::File),
            Err(Errno::NOENT) => return Err(not_found(provided)),
            Err(Errno::ISDIR) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        match unlinkat(&parent, name.as_c_str(), AtFlags::REMOVEDIR) {
            Ok(()) => return Ok(Removed::Folder),
            Err(Errno::NOENT) => return Err(not_found(provided)),
            // It became a file meanwhile: again.
            Err(Errno::NOTDIR) => continue,
            Err(Errno::NOTEMPTY | Errno::EXIST) if !recursive => {
                return Err(Error::refused(
                    Reason::DirectoryNotEmpty,
                    format!(
                    "{provided} is a folder with something in it; delete it with recursive=true"
                ),
                )
                .with_details(json!({"path": provided})))
            }
            Err(Errno::NOTEMPTY | Errno::EXIST) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        // Out of the container's reach in one step, then removed at leisure.
        let bin = rustix::fs::open(
            trash,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        return match renameat(&parent, name.as_c_str(), &bin, c"removed") {
            Ok(()) => Ok(Removed::Folder),
            Err(Errno::NOENT) => Err(not_found(provided)),
            Err(e) => Err(std::io::Error::from(e).into()),
        };
    }
    Err(Error::refused(
        Reason::PathConflict,
        format!("{provided} kept changing while it was deleted"),
    )
    .with_details(json!({"path": provided})))
}

/// Moves (renames) `from` to `to`, both within `/app` and not the root: the folder of `to`
/// must exist, and `to` must not (`409 FILE_EXISTS`: nothing is replaced); a folder cannot
/// go into itself (`400 MOVE_INTO_ITSELF`). A symlink is moved as a name.
pub fn rename(
    root: &OwnedFd,
    from: &[String],
    from_provided: &str,
    to: &[String],
    to_provided: &str,
) -> FilesResult<()> {
    if to.len() > from.len() && to[..from.len()] == *from {
        return Err(Error::refused(
            Reason::MoveIntoItself,
            format!("{from_provided} cannot be moved into itself ({to_provided})"),
        )
        .with_details(json!({"from": from_provided, "to": to_provided})));
    }
    let (from_name, from_parents) = from.split_last().expect("the caller refuses the root");
    let (to_name, to_parents) = to.split_last().expect("the caller refuses the root");
    let src = open_folder(root, from_parents, from_provided)?;
    let dst = open_folder(root, to_parents, to_provided)?;
    let (from_name, to_name) = (cname(from_name)?, cname(to_name)?);
    match renameat_with(
        &src,
        from_name.as_c_str(),
        &dst,
        to_name.as_c_str(),
        RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) => Err(not_found(from_provided)),
        Err(Errno::EXIST) => Err(Error::refused(
            Reason::AlreadyExists,
            format!("{to_provided} already exists"),
        )
        .with_details(json!({"path": to_provided}))),
        Err(Errno::INVAL) => Err(Error::refused(
            Reason::MoveIntoItself,
            format!("{from_provided} cannot be moved into itself ({to_provided})"),
        )
        .with_details(json!({"from": from_provided, "to": to_provided}))),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::openat;
    use std::os::fd::AsFd;

    fn comps(p: &str) -> Vec<String> {
        confine::parse_path(p).unwrap()
    }

    fn me() -> UserIds {
        UserIds {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    fn exists_at<Fd: AsFd>(dir: Fd, name: &std::ffi::CStr) -> bool {
        openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .is_ok()
    }

    fn code(e: Error) -> &'static str {
        crate::error::ApiError::from(e).code.as_str()
    }

    #[test]
    fn put_mkdir_move_remove_in_a_tree() {
        let base = tempfile::tempdir().unwrap();
        let app = base.path().join("app");
        let staging = base.path().join("staging");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        std::os::unix::fs::symlink("/etc", app.join("out")).unwrap();
        std::fs::write(app.join("plain"), b"x").unwrap();

        let work = |dir: &str| {
            let d = staging.join(dir);
            std::fs::create_dir(&d).unwrap();
            d
        };
        let root = || confine::open_root(&app, "c").unwrap();

        // A file with its folders; again refused without replace; replaced with it.
        let d = work("1");
        std::fs::write(d.join("body"), b"hello").unwrap();
        let w = Work {
            work: &d,
            root: root(),
            mount: &app,
            owner: me(),
            capped: false,
        };
        let written = put_file(w, &d.join("body"), 5, &comps("a/b/c.txt"), true).unwrap();
        assert!(!written.replaced);
        assert_eq!(std::fs::read(app.join("a/b/c.txt")).unwrap(), b"hello");
        let d = work("2");
        std::fs::write(d.join("body"), b"again").unwrap();
        let w = Work {
            work: &d,
            root: root(),
            mount: &app,
            owner: me(),
            capped: false,
        };
        let e = put_file(w, &d.join("body"), 5, &comps("a/b/c.txt"), false).unwrap_err();
        assert_eq!(code(e), "FILE_EXISTS");
        let d = work("3");
        std::fs::write(d.join("body"), b"again").unwrap();
        let w = Work {
            work: &d,
            root: root(),
            mount: &app,
            owner: me(),
            capped: false,
        };
        assert!(
            put_file(w, &d.join("body"), 5, &comps("a/b/c.txt"), true)
                .unwrap()
                .replaced
        );
        assert_eq!(std::fs::read(app.join("a/b/c.txt")).unwrap(), b"again");

        // Through a symlink or a file: refused, nothing written outside.
        for (path, want) in [("out/x", "UNSAFE_PATH"), ("plain/x", "NOT_A_DIRECTORY")] {
            let d = work(&format!("p{}", path.len()));
            std::fs::write(d.join("body"), b"no").unwrap();
            let w = Work {
                work: &d,
                root: root(),
                mount: &app,
                owner: me(),
                capped: false,
            };
            let e = put_file(w, &d.join("body"), 2, &comps(path), true).unwrap_err();
            assert_eq!(code(e), want, "{path}");
        }
        assert!(!Path::new("/etc/x").exists());

        // Folders.
        let d = work("m1");
        let w = Work {
            work: &d,
            root: root(),
            mount: &app,
            owner: me(),
            capped: false,
        };
        make_folder(w, &comps("n/m")).unwrap();
        assert!(app.join("n/m").is_dir());
        let d = work("m2");
        let w = Work {
            work: &d,
            root: root(),
            mount: &app,
            owner: me(),
            capped: false,
        };
        assert_eq!(
            code(make_folder(w, &comps("n/m")).unwrap_err()),
            "FILE_EXISTS"
        );

        // Moves.
        let r = root();
        rename(
            &r,
            &comps("a/b/c.txt"),
            "a/b/c.txt",
            &comps("n/m/d.txt"),
            "n/m/d.txt",
        )
        .unwrap();
        assert!(exists_at(&r, c"n"));
        assert_eq!(std::fs::read(app.join("n/m/d.txt")).unwrap(), b"again");
        let e = rename(&r, &comps("n"), "n", &comps("n/m/x"), "n/m/x").unwrap_err();
        assert_eq!(code(e), "MOVE_INTO_ITSELF");
        let e = rename(&r, &comps("plain"), "plain", &comps("n"), "n").unwrap_err();
        assert_eq!(code(e), "FILE_EXISTS");
        let e = rename(&r, &comps("nope"), "nope", &comps("x"), "x").unwrap_err();
        assert_eq!(code(e), "FILE_NOT_FOUND");
        let e = rename(
            &r,
            &comps("plain"),
            "plain",
            &comps("out/plain"),
            "out/plain",
        )
        .unwrap_err();
        assert_eq!(code(e), "UNSAFE_PATH");

        // Removal: a symlink as a name, a folder only recursively.
        let trash = work("t");
        assert_eq!(
            remove(&r, &comps("out"), "out", false, &trash).unwrap(),
            Removed::File
        );
        assert!(Path::new("/etc/passwd").exists());
        let e = remove(&r, &comps("n"), "n", false, &trash).unwrap_err();
        assert_eq!(code(e), "DIRECTORY_NOT_EMPTY");
        assert_eq!(
            remove(&r, &comps("n"), "n", true, &trash).unwrap(),
            Removed::Folder
        );
        assert!(!app.join("n").exists());
        assert!(trash.join("removed/m/d.txt").exists());
        let e = remove(&r, &comps("n"), "n", true, &trash).unwrap_err();
        assert_eq!(code(e), "FILE_NOT_FOUND");
    }
}
