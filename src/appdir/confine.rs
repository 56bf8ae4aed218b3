//! Confined access to a container's `/app` on the host.
//!
//! The container's process owns that directory and may plant symlinks, FIFOs, devices and
//! hard links in it, and change them while we work. Nothing here resolves a path the
//! container controls with a plain `open`: every lookup is an `openat2` relative to a
//! directory descriptor with `RESOLVE_BENEATH` (the kernel refuses any resolution that leaves
//! the directory, through `..` or a symlink), and files are first opened `O_PATH` (which opens
//! nothing), checked to be regular files, and only then reopened for reading through
//! `/proc/self/fd`, so a FIFO or device is never opened, and the inode checked is the inode read.
//! That reopen is `O_NONBLOCK`: a file the container holds a write lease on (`F_SETLEASE`)
//! would otherwise make the open wait for the lease break (45 s by default); it fails at once
//! instead ([`Found::Busy`]). Reads of a regular file ignore `O_NONBLOCK`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde_json::json;

use crate::appdir::error::{Error, FilesResult, Reason};

/// Longest path (relative to `/app`) accepted, as Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single name, as Linux's `NAME_MAX`.
pub const MAX_NAME_BYTES: usize = 255;
/// The most components a path may have (an upload's entry: the `?path=` target's included).
/// It bounds the work per name and the depth of every recursion over a planned tree.
pub const MAX_PATH_COMPONENTS: usize = 256;

/// Resolution for reads: symlinks are followed while they stay inside the directory.
pub fn read_resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// Resolution for writes: no symlink is followed at all.
pub fn write_resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn unsafe_path(provided: &str, reason: &str) -> Error {
    Error::refused(Reason::UnsafePath, format!("unsafe path: {reason}"))
        .with_details(json!({"field": "path", "provided": provided, "reason": reason}))
}

/// Parses an API path (§5) into its components relative to `/app`: `data/x`, `/data/x` and
/// `/app/data/x` are the same file; `/`, `/app` and the empty string are the root (no
/// components). `.` and empty components are dropped; a backslash, a NUL, a `..` component or
/// an over-long name is refused.
pub fn parse_path(input: &str) -> FilesResult<Vec<String>> {
    if input.contains('\0') {
        return Err(unsafe_path(input, "the path contains a NUL byte"));
    }
    if input.contains('\\') {
        return Err(unsafe_path(input, "the path contains a backslash"));
    }
    if input.len() > MAX_PATH_BYTES {
        return Err(unsafe_path(input, "the path is too long"));
    }
    let rest = if input == "/app" {
        ""
    } else if let Some(rest) = input.strip_prefix("/app/") {
        rest
    } else {
        input
    };
    let mut out = Vec::new();
    for part in rest.split('/') {
        match component(part) {
            Ok(None) => {}
            Ok(Some(name)) => out.push(name.to_owned()),
            Err(reason) => return Err(unsafe_path(input, reason)),
        }
        if out.len() > MAX_PATH_COMPONENTS {
            return Err(unsafe_path(input, "the path is too deep"));
        }
    }
    Ok(out)
}

/// The one rule for a component of a path under `/app`, whether an API `?path=` or an
/// archive entry's name: empty and `.` components are nothing (`None`); `..` and a name over
/// `NAME_MAX` are refused, with the reason.
pub fn component(part: &str) -> Result<Option<&str>, &'static str> {
    match part {
        "" | "." => Ok(None),
        ".." => Err("the path contains a '..' component"),
        name if name.len() > MAX_NAME_BYTES => Err("a name in the path is too long"),
        name => Ok(Some(name)),
    }
}

/// `a/b/c`, or `.` for the root: the form `openat2` takes.
pub fn rel(components: &[String]) -> String {
    if components.is_empty() {
        ".".into()
    } else {
        components.join("/")
    }
}

/// Opens the container's directory itself (`DATA_DIR/mounts/<cuid>`, a path the container
/// cannot change: it only sees what is inside it).
pub fn open_root(mount: &Path, cuid: &str) -> FilesResult<OwnedFd> {
    match rustix::fs::open(
        mount,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(crate::store::containers::not_found(cuid).into()),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

/// `openat2` with a few retries on `EAGAIN` (the kernel's answer to a concurrent rename
/// while resolving with `RESOLVE_BENEATH`).
pub fn openat2_retry<Fd: AsFd, P: rustix::path::Arg + Copy>(
    dir: Fd,
    path: P,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match openat2(dir.as_fd(), path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// What a read lookup found.
pub enum Found {
    /// A regular file, opened for reading, and its size when opened.
    File(File, u64),
    /// A directory, opened for reading its entries.
    Dir(OwnedFd),
    /// A FIFO, socket or device: never opened.
    Special,
    /// A regular file another process holds a lease on: opening it would wait.
    Busy,
}

fn lookup_error(e: Errno, provided: &str) -> Error {
    match e {
        Errno::NOENT | Errno::NOTDIR => Error::refused(
            Reason::FileNotFound,
            format!("no such file or directory: {provided}"),
        )
        .with_details(json!({"path": provided})),
        Errno::XDEV => unsafe_path(provided, "a symlink in the path leads outside /app"),
        Errno::LOOP => unsafe_path(provided, "too many levels of symlinks"),
        Errno::NAMETOOLONG => unsafe_path(provided, "the path is too long"),
        e => std::io::Error::from(e).into(),
    }
}

/// Looks `components` up beneath `root`, following symlinks only while they stay inside,
/// and opens what it finds without ever opening a special file.
pub fn lookup(root: &OwnedFd, components: &[String], provided: &str) -> FilesResult<Found> {
    let path = rel(components);
    let fd = openat2_retry(
        root,
        path.as_str(),
        OFlags::PATH | OFlags::CLOEXEC,
        read_resolve(),
    )
    .map_err(|e| lookup_error(e, provided))?;
    found(fd).map_err(|e| lookup_error(e, provided))
}

/// Opens the entry `name` of `dir` without following a symlink there. `None` when it is a
/// symlink or vanished. Used by the walker of download-zip.
pub fn open_entry_nofollow<Fd: AsFd>(
    dir: Fd,
    name: &std::ffi::CStr,
) -> Result<Option<Found>, Errno> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Ok(None);
    }
    match found(fd) {
        Ok(f) => Ok(Some(f)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// From an `O_PATH` descriptor to an open file or directory, checking the type first.
fn found(fd: OwnedFd) -> Result<Found, Errno> {
    let st = rustix::fs::fstat(&fd)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            // Reopening the O_PATH descriptor through /proc opens exactly the inode checked.
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            {
                Ok(file) => file,
                // A lease (F_SETLEASE) on it: without O_NONBLOCK the open would wait.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Found::Busy),
                Err(e) => return Err(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
            };
            let again = rustix::fs::fstat(&file)?;
            if again.st_ino != st.st_ino
                || again.st_dev != st.st_dev
                || FileType::from_raw_mode(again.st_mode) != FileType::RegularFile
            {
                return Err(Errno::AGAIN);
            }
            Ok(Found::File(file, again.st_size.max(0) as u64))
        }
        FileType::Directory => {
            let dir = rustix::fs::openat(
                &fd,
                ".",
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Found::Dir(dir))
        }
        _ => Ok(Found::Special),
    }
}

/// Gives `fd` to `uid:gid`; without the privilege to do so (not running as root) the file
/// stays ours, like [`crate::appdir::mounts::chown`].
pub fn chown_fd<Fd: AsFd>(fd: Fd, ids: crate::config::UserIds) -> std::io::Result<()> {
    match std::os::unix::fs::fchown(fd, Some(ids.uid), Some(ids.gid)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[test]
    fn api_paths_normalise() {
        let ok = |s: &str| parse_path(s).unwrap();
        assert_eq!(ok("data/x"), ["data", "x"]);
        assert_eq!(ok("/app/data/x"), ["data", "x"]);
        assert_eq!(ok("/data/x"), ["data", "x"]);
        assert_eq!(ok("./data//x/"), ["data", "x"]);
        assert_eq!(ok("app/x"), ["app", "x"]);
        assert_eq!(ok("/application/x"), ["application", "x"]);
        for root in ["", "/", "/app", "/app/", ".", "/./"] {
            assert!(ok(root).is_empty(), "{root:?}");
        }
        assert_eq!(ok("données/ü.txt"), ["données", "ü.txt"]);
        for bad in ["../x", "a/../b", "/app/..", "a\\b", "a\0b", "..", "/.."] {
            let e = ApiError::from(parse_path(bad).unwrap_err());
            assert_eq!(e.code, "UNSAFE_PATH", "{bad:?}");
        }
        assert!(parse_path(&"a".repeat(256)).is_err());
        assert!(parse_path(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn deep_paths_are_refused() {
        assert_eq!(
            parse_path(&"a/".repeat(MAX_PATH_COMPONENTS)).unwrap().len(),
            256
        );
        let e = ApiError::from(parse_path(&"a/".repeat(MAX_PATH_COMPONENTS + 1)).unwrap_err());
        assert_eq!(e.code, "UNSAFE_PATH");
    }

    #[test]
    fn rel_of_root_is_dot() {
        assert_eq!(rel(&[]), ".");
        assert_eq!(rel(&["a".into(), "b".into()]), "a/b");
    }
}
