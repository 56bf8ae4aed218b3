//! Directory listings of a container's `/app` (`GET /containers/{cuid}/files`).
//!
//! The directory is found like a download finds its file ([`confine::lookup`]: `openat2`
//! beneath `/app`), and every entry is looked at with `statat(AT_SYMLINK_NOFOLLOW)`: a
//! symlink is reported as a link with its target text and never followed, so a link to
//! `/etc` shows as a link, not as `/etc`'s contents. Pages are in byte order of the names,
//! the cursor being the last name of the previous page.

use std::collections::BinaryHeap;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Dir, FileType};
use rustix::io::Errno;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::appdir::confine;
use crate::appdir::error::{Error, FilesResult, Reason};

/// The most names one listing reads from a directory (those before the cursor included);
/// past it the listing is refused (`400 DIRECTORY_TOO_LARGE`). Memory does not depend on it
/// (a page keeps at most `limit + 1` names, see [`Smallest`]); it bounds the time one page
/// holds a listing slot and a blocking-pool thread: reading 10 million names takes seconds.
pub const MAX_SCANNED: usize = 10_000_000;

/// One entry of a listing.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    pub size: i64,
    /// Octal, e.g. `0644`.
    pub mode: String,
    /// RFC 3339 (UTC).
    #[schema(required = true)]
    pub mtime: Option<String>,
    /// Only for a symlink: where it points (null when unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub target: Option<Option<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

fn kind(t: FileType) -> FileKind {
    match t {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// The `keep` smallest names offered, in a max-heap: memory is O(`keep`) however many names
/// the directory holds (collecting them all and sorting cost 80 MiB per page at 300,000
/// names, and the allocator kept it).
struct Smallest {
    keep: usize,
    heap: BinaryHeap<CString>,
}

impl Smallest {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            heap: BinaryHeap::with_capacity(keep.min(1024)),
        }
    }

    fn offer(&mut self, name: &CStr) {
        if self.heap.len() < self.keep {
            self.heap.push(name.to_owned());
        } else if let Some(mut largest) = self.heap.peek_mut() {
            if name < largest.as_c_str() {
                *largest = name.to_owned();
            }
        }
    }

    /// Ascending; a name a racing directory read returned twice is kept once. `true` when
    /// the heap was full: names past the last one kept may exist.
    fn into_sorted(self) -> (Vec<CString>, bool) {
        let full = self.heap.len() == self.keep;
        let mut names = self.heap.into_sorted_vec();
        names.dedup();
        (names, full)
    }
}

/// One page of the directory `dir`: names after `cursor`, at most `limit`. The directory is
/// streamed once, keeping only the `limit + 1` smallest names after the cursor (the extra
/// one says whether there is a next page).
pub fn page(
    dir: &OwnedFd,
    cursor: Option<&str>,
    limit: usize,
) -> FilesResult<(Vec<FileEntry>, Option<String>, usize)> {
    let mut smallest = Smallest::new(limit + 1);
    let mut skipped = 0usize;
    let mut scanned = 0usize;
    for entry in Dir::read_from(dir).map_err(std::io::Error::from)? {
        let entry = entry.map_err(std::io::Error::from)?;
        scanned += 1;
        if scanned > MAX_SCANNED {
            return Err(Error::refused(
                Reason::DirectoryTooLarge,
                format!("the directory holds more than {MAX_SCANNED} entries"),
            )
            .with_details(json!({"limit": MAX_SCANNED})));
        }
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
        smallest.offer(name);
    }
    let (mut names, full) = smallest.into_sorted();
    // Full of `limit + 1` names, or of fewer distinct ones (a name read twice): more may follow.
    let more = full || names.len() > limit;
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
        let target = (t == FileType::Symlink).then(|| {
            rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
                .ok()
                .map(|t| t.to_string_lossy().into_owned())
        });
        entries.push(FileEntry {
            name: name.to_str().unwrap_or_default().to_owned(),
            kind: kind(t),
            size: st.st_size.max(0),
            mode: format!("{:04o}", st.st_mode & 0o7777),
            mtime,
            target,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<CString> {
        v.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    #[test]
    fn keeps_the_smallest_names_in_byte_order() {
        let mut s = Smallest::new(3);
        for n in ["m", "b", "zz", "a", "ab", "B", "c"] {
            s.offer(&CString::new(n).unwrap());
        }
        assert_eq!(s.into_sorted(), (names(&["B", "a", "ab"]), true));
        let mut s = Smallest::new(3);
        s.offer(&CString::new("x").unwrap());
        assert_eq!(s.into_sorted(), (names(&["x"]), false));
    }

    #[test]
    fn a_name_read_twice_is_kept_once_and_more_may_follow() {
        let mut s = Smallest::new(2);
        for n in ["a", "a", "b"] {
            s.offer(&CString::new(n).unwrap());
        }
        assert_eq!(s.into_sorted(), (names(&["a"]), true));
    }
}
