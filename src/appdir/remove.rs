//! Removal of trees a container controls (its `/app`, staging areas, project directories).
//!
//! The container's process may have made the tree as deep as it likes (a 100,000-level chain
//! of `mkdir d; cd d`), planted symlinks leading out, FIFOs, directories it made unreadable
//! (`chmod 000` as root in the container), and may still be changing it. `std::fs::
//! remove_dir_all` recurses once per level (a deep chain overflows the stack and aborts the
//! server), so this is a loop instead:
//!
//! - **Bounded stack, bounded descriptors.** The walk keeps one `(dev, inode)` pair per level
//!   of the directory it is in (16 bytes a level, no names) and at most a handful of open
//!   descriptors whatever the depth: the current directory, a listing of it, the root and its
//!   parent. It goes down by `openat(name, O_DIRECTORY | O_NOFOLLOW)` and back up by
//!   `openat("..")`, checked against the recorded identity of the parent.
//! - **Never through a link.** Entries are removed with `unlinkat` on the directory's
//!   descriptor (a symlink is removed, never followed); directories are entered only with
//!   `O_NOFOLLOW | O_DIRECTORY` (a FIFO or device is never opened); a directory on another
//!   filesystem (a mount point) is an error, never entered.
//! - **A tree that changes under it.** Entries that vanish are fine. A directory emptied and
//!   then found non-empty again is emptied again, a bounded number of times. A directory
//!   moved away while the walk is in it (its `..` is no longer the directory it came from)
//!   makes the walk start again from the top instead of climbing into whatever is there now,
//!   so it never removes anything in a directory it did not reach from the top.
//! - **Permissions.** A directory that cannot be listed, entered or written (a container's
//!   `chmod 000`; only matters when the server is not root) is given `0700` first, through an
//!   `O_PATH` handle checked to be a directory. A file that cannot be removed at all
//!   (`chattr +i`, append-only directory) is an error: the caller keeps what it was removing
//!   and retries later.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Deepest tree removed: 16 bytes of stack a level, so at most 8 MiB (a few removals run at
/// once). Deeper is an error: the container stays `deleting` with `IO_ERROR`.
pub const MAX_DEPTH: usize = 1 << 19;
/// How often the walk may start again from the top because a directory it was in moved.
pub const MAX_RESTARTS: u32 = 64;
/// How often a directory just emptied may be found filled again, in one removal.
pub const MAX_REFILLS: u32 = 1024;
/// How many listings of one directory, in one visit, may each find something new to remove.
pub const MAX_PASSES: u32 = 64;
/// How often, in one removal, a subdirectory may vanish or turn into something else between
/// being listed and being entered: only a process still at work in the tree does that.
pub const MAX_RACES: u32 = 4096;

/// Identity of a directory: the one thing a rename cannot change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id {
    dev: u64,
    ino: u64,
}

fn id_of<Fd: AsFd>(fd: Fd) -> io::Result<Id> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Id {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

fn context(e: Errno, what: &str, name: &CStr) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(
        e.kind(),
        format!("{what} {:?}: {e}", name.to_string_lossy()),
    )
}

fn changing(what: &str) -> io::Error {
    io::Error::other(format!(
        "the tree kept changing while it was removed ({what})"
    ))
}

/// Removes `path` and everything beneath it, never following a symlink. `Ok` when it is
/// already gone; a symlink or file at `path` is removed itself. Blocking: call it on the
/// blocking pool. On error, part of the tree may be gone; calling it again continues.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to remove {}", path.display()),
        ));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = CString::new(name.as_bytes())?;
    // The parent is the server's own directory (DATA_DIR/…): a plain open is fine there.
    let parent = match rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut refills = 0;
    loop {
        let root = match open_dir(&parent, &name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            // A file or a symlink where the tree was: remove that, never what it points to.
            Err(Errno::NOTDIR | Errno::LOOP) => {
                return match rustix::fs::unlinkat(&parent, name.as_c_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(context(e, "cannot remove", &name)),
                };
            }
            Err(e) => return Err(context(e, "cannot open", &name)),
        };
        empty_tree(root)?;
        match rustix::fs::unlinkat(&parent, name.as_c_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::NOTEMPTY | Errno::EXIST) if refills < MAX_REFILLS => refills += 1,
            Err(Errno::NOTEMPTY | Errno::EXIST) => return Err(changing("refilled")),
            Err(e) => return Err(context(e, "cannot remove", &name)),
        }
    }
}

/// Opens the directory `name` of `dir` without following a symlink and without opening
/// anything that is not a directory; one the server may not search is made searchable first.
fn open_dir<Fd: AsFd>(dir: Fd, name: &CStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir.as_fd(), name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            make_accessible(dir.as_fd(), name)?;
            rustix::fs::openat(dir.as_fd(), name, flags, Mode::empty())
        }
        other => other,
    }
}

/// `chmod 0700` on the directory `name` of `dir`, through an `O_PATH` handle checked to be a
/// directory (`fchmodat` cannot refuse to follow a symlink on older kernels).
fn make_accessible<Fd: AsFd>(dir: Fd, name: &CStr) -> Result<(), Errno> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(Errno::NOTDIR);
    }
    // The magic link names exactly the inode checked.
    rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), Mode::RWXU)
}

/// What listing one directory led to.
enum Step {
    /// Nothing is left in it.
    Empty,
    /// This subdirectory is not empty: go down into it.
    Descend(CString),
}

/// Empties the directory `root` (which stays). Iterative: see the module's notes.
fn empty_tree(root: OwnedFd) -> io::Result<()> {
    let root_id = id_of(&root)?;
    // Identities of the directories from the root down to the current one.
    let mut stack: Vec<Id> = vec![root_id];
    let mut current = reopen(&root)?;
    // The directory just emptied and left: finding it filled again counts as a refill.
    let mut emptied: Option<Id> = None;
    let (mut restarts, mut refills, mut races) = (0u32, 0u32, 0u32);
    loop {
        match empty_one(&current)? {
            Step::Descend(name) => {
                let child = match open_dir(&current, &name) {
                    Ok(fd) => fd,
                    // Gone, or replaced by a file or symlink: the next listing deals with it.
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                        races += 1;
                        if races > MAX_RACES {
                            return Err(changing("replaced while listed"));
                        }
                        continue;
                    }
                    Err(e) => return Err(context(e, "cannot open", &name)),
                };
                let id = id_of(&child)?;
                if id.dev != root_id.dev {
                    return Err(io::Error::other(format!(
                        "{:?} is a mount point inside the tree; not removing what is mounted there",
                        name.to_string_lossy()
                    )));
                }
                if emptied == Some(id) {
                    refills += 1;
                    if refills > MAX_REFILLS {
                        return Err(changing("refilled"));
                    }
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(io::Error::other(format!(
                        "the tree is more than {MAX_DEPTH} levels deep"
                    )));
                }
                stack.push(id);
                current = child;
            }
            Step::Empty => {
                let Some(left) = stack.pop() else {
                    unreachable!("the root is never popped")
                };
                let Some(&parent) = stack.last() else {
                    // The root itself is empty: done.
                    return Ok(());
                };
                emptied = Some(left);
                // Back up by `..`, if it is still the directory we came down from. The
                // directory just emptied is removed by the parent's next listing.
                current = match rustix::fs::openat(
                    &current,
                    c"..",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(up) if id_of(&up)? == parent => up,
                    // Moved away (or removed by someone else) while we were in it.
                    _ => {
                        restarts += 1;
                        if restarts > MAX_RESTARTS {
                            return Err(changing("directories moved"));
                        }
                        stack.truncate(1);
                        emptied = None;
                        reopen(&root)?
                    }
                };
            }
        }
    }
}

fn reopen(dir: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes every non-directory and every empty directory in `dir`; stops at the first
/// directory that is not empty. Lists again until a listing finds nothing (entries removed
/// during a listing may make it skip others), a bounded number of times.
fn empty_one(dir: &OwnedFd) -> io::Result<Step> {
    for _ in 0..MAX_PASSES {
        let listing = match Dir::read_from(dir) {
            Ok(l) => l,
            Err(Errno::ACCESS) => {
                rustix::fs::fchmod(dir, Mode::RWXU)?;
                Dir::read_from(dir)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut seen = false;
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            seen = true;
            if !remove_entry(dir, name, entry.file_type() == FileType::Directory)? {
                return Ok(Step::Descend(name.to_owned()));
            }
        }
        if !seen {
            return Ok(Step::Empty);
        }
    }
    Err(changing("entries kept appearing"))
}

/// Removes the entry `name` of `dir` if it is not a non-empty directory; `false` if it is.
/// `is_dir` is the listing's hint (which may be stale or unknown).
fn remove_entry(dir: &OwnedFd, name: &CStr, is_dir: bool) -> io::Result<bool> {
    let mut flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    let mut chmodded = false;
    // At most: wrong kind once, no write permission once.
    for _ in 0..4 {
        match rustix::fs::unlinkat(dir, name, flags) {
            Ok(()) | Err(Errno::NOENT) => return Ok(true),
            Err(Errno::NOTEMPTY | Errno::EXIST) => return Ok(false),
            // The hint was wrong (or the entry was replaced): the other kind of removal.
            Err(Errno::ISDIR) => flags = AtFlags::REMOVEDIR,
            Err(Errno::NOTDIR) => flags = AtFlags::empty(),
            Err(Errno::ACCESS) if !chmodded => {
                rustix::fs::fchmod(dir, Mode::RWXU)?;
                chmodded = true;
            }
            Err(e) => return Err(context(e, "cannot remove", name)),
        }
    }
    Err(changing("an entry kept changing kind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A chain of `depth` directories named `d` under `dir`, made iteratively (as a
    /// container's `mkdir d; cd d` loop would).
    fn chain(dir: &Path, depth: usize) {
        let mut fd =
            rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, c"d", Mode::RWXU).unwrap();
            fd = rustix::fs::openat(&fd, c"d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .unwrap();
        }
        rustix::fs::openat(
            &fd,
            c"leaf.txt",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::RUSR | Mode::WUSR,
        )
        .unwrap();
    }

    /// On tmpfs when there is one: the depth is what is tested, not the disk (100,000
    /// `mkdir`s and `rmdir`s on a busy ext4 take minutes).
    fn scratch() -> tempfile::TempDir {
        match tempfile::tempdir_in("/dev/shm") {
            Ok(dir) => dir,
            Err(_) => tempfile::tempdir().unwrap(),
        }
    }

    /// Descriptors of this process open on something under `dir` (other tests run in
    /// parallel, so a plain count would not do).
    fn fds_under(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    /// 100,000 levels, on a thread with a 64 KiB stack: `remove_dir_all` would overflow it
    /// (and the default 2 MiB one) long before the bottom.
    #[test]
    fn a_hundred_thousand_levels_on_a_small_stack() {
        let tmp = scratch();
        let top = tmp.path().join("tree");
        std::fs::create_dir(&top).unwrap();
        chain(&top, 100_000);
        let t = top.clone();
        let result = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_tree(&t))
            .unwrap()
            .join()
            .expect("the removal thread crashed");
        result.unwrap();
        assert!(!top.exists());
        assert_eq!(fds_under(tmp.path()), 0, "descriptors leaked");
    }

    /// Symlinks (to a directory and a file outside, and dangling) are removed, never
    /// followed; a FIFO is removed without being opened; unreadable directories are handled.
    #[test]
    fn links_fifos_and_locked_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("keep.txt"), b"keep").unwrap();
        let top = tmp.path().join("tree");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&canary, top.join("a/out")).unwrap();
        std::os::unix::fs::symlink(canary.join("keep.txt"), top.join("a/b/file")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", top.join("dangling")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("a/fifo").as_path(),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        std::fs::write(top.join("a/b/x"), b"x").unwrap();
        std::fs::set_permissions(top.join("a/b"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(top.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        assert_eq!(std::fs::read(canary.join("keep.txt")).unwrap(), b"keep");
    }

    /// A symlink or a file at the path itself is removed, not followed; a missing path is Ok.
    #[test]
    fn the_path_itself_may_be_a_link_a_file_or_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"k").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(target.join("keep").exists());
        let file = tmp.path().join("file");
        std::fs::write(&file, b"f").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }

    /// Directories renamed back and forth inside the tree while it is removed: nothing
    /// outside the tree is touched, and the tree goes (at the latest on a second call, once
    /// the renaming stops).
    #[test]
    fn directories_renamed_during_the_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("keep.txt"), b"keep").unwrap();
        let top = tmp.path().join("tree");
        std::fs::create_dir_all(top.join("z")).unwrap();
        chain(&top, 3000);
        for i in 0..200 {
            let d = top.join(format!("w/{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), b"f").unwrap();
            std::os::unix::fs::symlink(&canary, d.join("out")).unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, s) = (top.clone(), stop.clone());
        let renamer = std::thread::spawn(move || {
            let (a, b) = (t.join("d/d/d"), t.join("z/moved"));
            let mut renames = 0u32;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::rename(&a, &b).is_ok() || std::fs::rename(&b, &a).is_ok() {
                    renames += 1;
                }
            }
            renames
        });
        let first = remove_tree(&top);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let renames = renamer.join().unwrap();
        if let Err(e) = first {
            assert!(e.to_string().contains("kept changing"), "{e}");
            remove_tree(&top).unwrap();
        }
        assert!(!top.exists());
        assert!(renames > 0, "the renamer never raced the removal");
        assert_eq!(std::fs::read(canary.join("keep.txt")).unwrap(), b"keep");
    }

    /// A process that keeps making, filling and removing a directory while the tree is
    /// removed (each time a new inode) cannot keep the removal going for ever: it ends,
    /// done or "kept changing", while the writer is still at work.
    #[test]
    fn a_writer_that_never_stops_cannot_hold_the_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("tree");
        std::fs::create_dir(&top).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, s) = (top.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let x = t.join("x");
                let _ = std::fs::create_dir(&x);
                let _ = std::fs::write(x.join("f"), b"f");
                let _ = std::fs::remove_dir_all(&x);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let t = top.clone();
        std::thread::spawn(move || {
            let _ = tx.send(remove_tree(&t));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(120));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        match result.expect("the removal never ended while the writer ran") {
            Ok(()) => {}
            Err(e) => assert!(e.to_string().contains("kept changing"), "{e}"),
        }
    }

    /// An immutable file (`chattr +i`) cannot go: an error, not a crash, and the rest of the
    /// tree that could go is gone; once it is mutable again a second call finishes.
    #[test]
    fn an_immutable_file_is_an_error_and_a_retry_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("tree");
        std::fs::create_dir_all(top.join("a")).unwrap();
        std::fs::write(top.join("a/stuck"), b"s").unwrap();
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .args([flag, top.join("a/stuck").to_str().unwrap()])
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            chattr("+i"),
            "chattr +i is needed for this test (root, ext4 or similar)"
        );
        let err = remove_tree(&top).unwrap_err();
        assert!(err.to_string().contains("stuck"), "{err}");
        assert!(top.join("a/stuck").exists());
        assert!(chattr("-i"));
        remove_tree(&top).unwrap();
        assert!(!top.exists());
    }
}
