//! Directory listings of a container's `/app` (`GET /containers/{cuid}/files`).
//!
//! The directory is found like a download finds its file ([`confine::lookup`]: `openat2`
//! beneath `/app`), and every entry is looked at with `statat(AT_SYMLINK_NOFOLLOW)`: a
//! symlink is reported as a link with its target text and never followed, so a link to
//! `/etc` shows as a link, not as `/etc`'s contents. Pages are in byte order of the names,
//! the cursor being the last name of the previous page.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Dir, FileType};
use rustix::io::Errno;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::fs::confine;

/// The most names a directory may hold for a listing; past it the listing is refused
/// rather than the server holding an unbounded list in memory.
pub const MAX_ENTRIES: usize = 1_000_000;

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

/// One page of the directory `dir`: names after `cursor`, at most `limit`.
pub fn page(
    dir: &OwnedFd,
    cursor: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<Value>, Option<String>, usize)> {
    let mut names: Vec<CString> = Vec::new();
    let mut skipped = 0usize;
    for entry in Dir::read_from(dir).map_err(std::io::Error::from)? {
        let entry = entry.map_err(std::io::Error::from)?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        // A name that is not UTF-8 cannot be named in an API path: counted, not listed.
        if name.to_str().is_err() {
            skipped += 1;
            continue;
        }
        if cursor.is_some_and(|c| name.to_bytes() <= c.as_bytes()) {
            continue;
        }
        names.push(name.to_owned());
        if names.len() > MAX_ENTRIES {
            return Err(crate::error::ApiError::validation(
                "DIRECTORY_TOO_LARGE",
                format!("the directory holds more than {MAX_ENTRIES} entries"),
            ));
        }
    }
    names.sort();
    let more = names.len() > limit;
    names.truncate(limit);
    let mut entries = Vec::with_capacity(names.len());
    for name in &names {
        let st = match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed since the directory was read.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let t = FileType::from_raw_mode(st.st_mode);
        let mtime = chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let mut entry = json!({
            "name": name.to_str().unwrap_or_default(),
            "type": kind(t),
            "size": st.st_size.max(0),
            "mode": format!("{:04o}", st.st_mode & 0o7777),
            "mtime": mtime,
        });
        if t == FileType::Symlink {
            let target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
                .ok()
                .map(|t| t.to_string_lossy().into_owned());
            entry["target"] = json!(target);
        }
        entries.push(entry);
    }
    let next = more
        .then(|| {
            names
                .last()
                .and_then(|n| n.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    Ok((entries, next, skipped))
}

/// The canonical form of a listed path: `/app` or `/app/a/b`.
pub fn display_path(components: &[String]) -> String {
    if components.is_empty() {
        "/app".into()
    } else {
        format!("/app/{}", confine::rel(components))
    }
}
