//! ZIP upload: check the whole archive, extract it into a private staging tree, then move
//! the staged tree into the container's `/app` by renames, undoing every move if one fails.
//!
//! Order of the work (all of it blocking; the handler runs it on the blocking pool while it
//! holds the container's upload lock):
//! 1. [`end_record`] and [`walk_directory`]: the entry count and the central directory's size
//!    from the end-of-central-directory record, and a walk over the directory's fixed-size
//!    headers (entry count, sizes and name lengths checked, nothing kept), all before the ZIP
//!    library builds its index: a forged count, an oversized directory or huge names must not
//!    cost memory. The handler runs at most [`crate::fs::MAX_PARALLEL_EXTRACTIONS`] uploads
//!    from here on at once, server-wide.
//! 2. [`plan`]: every central-directory entry is checked (names, types, duplicates,
//!    encryption, method, declared sizes) before a single byte is inflated.
//! 3. [`extract`]: entries are inflated into `DATA_DIR/staging/<id>/tree`, counting the bytes
//!    actually inflated against the limits (the declared sizes may lie). The staged items
//!    stay the server's (directories 0700, files 0600) until placed.
//! 4. [`place::commit`]: the staged tree is merged into `/app` by renames through `O_PATH`
//!    handles, after a durable journal of the plan ([`journal`]): undone on failure, and
//!    after a crash at the next start (see [`place`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{mkdirat, openat, Mode, OFlags};
use rustix::io::Errno;
use serde_json::json;
use zip::{CompressionMethod, ZipArchive};

use crate::config::UserIds;
use crate::error::{ApiError, ApiResult, Kind};
use crate::fs::confine::{MAX_NAME_BYTES, MAX_PATH_BYTES};
use crate::fs::{journal, place};

/// The compression ratio limit applies to an entry once this much of it has been inflated:
/// small, very compressible files (a few KiB of zeros, a sparse JSON) are never bombs.
pub const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: u64,
    pub max_inflated_bytes: u64,
    pub max_ratio: u64,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            max_entries: c.zip_max_entries,
            max_inflated_bytes: c.zip_max_inflated_bytes,
            max_ratio: c.zip_max_ratio,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub files: u64,
    pub bytes: u64,
}

/// One file entry of the archive, checked.
#[derive(Debug)]
struct Planned {
    index: usize,
    /// Its node in [`Plan::nodes`].
    node: usize,
    compressed: u64,
}

/// What a name of the planned tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    File,
    Dir,
}

/// One name of the tree the archive makes under `/app`. The tree is kept as a trie (each node
/// holds its own name only, its children by name), so a plan costs memory and time linear in
/// the names' length whatever their depth: keying a map by every ancestor's full path costs
/// the square of the depth per entry.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) parent: usize,
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    /// Permission bits to apply (setuid/setgid dropped), when the archive has them.
    pub(crate) mode: Option<u32>,
    pub(crate) children: HashMap<String, usize>,
}

/// The checked archive: its file entries, and the tree they make. A node's parent always
/// comes before it in `nodes`; `nodes[0]` is `/app` itself.
#[derive(Debug)]
pub struct Plan {
    entries: Vec<Planned>,
    pub(crate) nodes: Vec<Node>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            nodes: vec![Node {
                parent: 0,
                name: String::new(),
                kind: NodeKind::Dir,
                mode: None,
                children: HashMap::new(),
            }],
        }
    }
}

impl Plan {
    /// The path of `node` relative to `/app` (`a/b/c`; empty for the root).
    pub(crate) fn path(&self, mut node: usize) -> String {
        let mut names = Vec::new();
        while node != 0 {
            names.push(self.nodes[node].name.as_str());
            node = self.nodes[node].parent;
        }
        names.reverse();
        names.join("/")
    }

    /// The child `name` of `parent`, made (as a directory without a mode) if it is new.
    fn child(&mut self, parent: usize, name: &str) -> (usize, bool) {
        if let Some(&id) = self.nodes[parent].children.get(name) {
            return (id, false);
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            parent,
            name: name.to_owned(),
            kind: NodeKind::Dir,
            mode: None,
            children: HashMap::new(),
        });
        self.nodes[parent].children.insert(name.to_owned(), id);
        (id, true)
    }

    /// The node at `path` (components relative to `/app`), if planned.
    #[cfg(test)]
    fn find(&self, path: &[&str]) -> Option<usize> {
        let mut node = 0;
        for name in path {
            node = *self.nodes[node].children.get(*name)?;
        }
        Some(node)
    }
}

/// The most components an entry's path may have (the `?path=` target's included); a deeper
/// one is `400 UNSAFE_ZIP_ENTRY`. It bounds the recursion of the commit (one level per
/// component, two descriptors each) whatever the archive holds.
pub use crate::fs::confine::MAX_PATH_COMPONENTS;

fn invalid_zip(message: impl Into<String>) -> ApiError {
    ApiError::validation("INVALID_ZIP", message)
}

fn unsafe_entry(name: &str, reason: &str) -> ApiError {
    ApiError::validation(
        "UNSAFE_ZIP_ENTRY",
        format!("unsafe entry {name:?}: {reason}"),
    )
    .with_details(json!({"entry": name, "reason": reason}))
}

fn too_large(code: &'static str, message: String, details: serde_json::Value) -> ApiError {
    ApiError::new(Kind::PayloadTooLarge, code, message).with_details(details)
}

fn too_many(count: u64, limit: u64) -> ApiError {
    too_large(
        "ZIP_TOO_MANY_ENTRIES",
        format!("the archive has {count} entries, over the limit of {limit}"),
        json!({"entries": count, "limit": limit}),
    )
}

/// The archive's tree has more names than `ZIP_MAX_ENTRIES`, counting the directories its
/// paths only imply: 20,000 entries of 255 components would otherwise make 5 million
/// directories from a few MiB of names.
fn too_many_nodes(nodes: u64, limit: u64) -> ApiError {
    too_large(
        "ZIP_TOO_MANY_ENTRIES",
        format!(
            "the archive makes more than {limit} files and directories (directories its paths \
             imply count too)"
        ),
        json!({"nodes": nodes, "limit": limit, "counts": "files and directories, implied directories included"}),
    )
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().unwrap_or_default(),
    ))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// The most bytes the central directory may take. `ZipArchive::new` copies every entry's
/// name, extra field and comment into memory (and [`plan`] the names again), so an archive
/// of the maximum upload size made of nothing but central directory would cost on the order
/// of a gigabyte of heap before [`plan`] looks at a single name. 20,000 entries with ordinary
/// names and extra fields take a few MiB; 64 MiB leaves room for long paths and generous
/// extra fields, and bounds the index to about as much (measured: 56-64 MiB of RSS for a
/// 63 MiB directory). A bigger directory, or a bigger declared one, is refused with
/// `413 payload_too_large`, code `ZIP_DIRECTORY_TOO_LARGE`, before the index is built.
pub const MAX_DIRECTORY_BYTES: u64 = 64 * 1024 * 1024;

/// The longest entry name accepted, checked while walking the central directory (before the
/// index is built): no longer name can be a path [`plan`] accepts, short of padding it with
/// `./` or `//`. Over it: `400 UNSAFE_ZIP_ENTRY`.
pub const MAX_ENTRY_NAME_BYTES: usize = MAX_PATH_BYTES;

/// The most bytes of a ZIP64 end record's extensible data sector (which the ZIP library also
/// reads into memory). Writers leave it empty.
const MAX_ZIP64_EXTENSIBLE_BYTES: u64 = 64 * 1024;

const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;
const CENTRAL_HEADER_LEN: u64 = 46;
const SIG_EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
const SIG_ZIP64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
const SIG_ZIP64_EOCD: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
const SIG_CENTRAL: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];

/// The central directory as the end records declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    /// The number of entries.
    pub entries: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Where it starts in the file (where the ZIP library starts reading it).
    pub start: u64,
}

fn directory_too_large(size: u64) -> ApiError {
    too_large(
        "ZIP_DIRECTORY_TOO_LARGE",
        format!("the archive's central directory takes {size} bytes, over the limit of {MAX_DIRECTORY_BYTES}"),
        json!({"directory_bytes": size, "limit": MAX_DIRECTORY_BYTES}),
    )
}

fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> ApiResult<bool> {
    file.seek(SeekFrom::Start(at))?;
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads the end-of-central-directory record (and the ZIP64 one when there is one) without
/// parsing the central directory: how many entries, how big, where. An archive is refused
/// unless the end record is one the ZIP library would pick without falling back to another
/// candidate, and its central directory ends right where that record begins: then the bytes
/// [`walk_directory`] checks are the bytes `ZipArchive::new` reads. A declared size over
/// [`MAX_DIRECTORY_BYTES`] is `413 ZIP_DIRECTORY_TOO_LARGE`.
pub fn end_record(file: &mut File) -> ApiResult<Directory> {
    let len = file.seek(SeekFrom::End(0))?;
    let tail_len = len.min(EOCD_LEN as u64 + 65535);
    let start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    if tail.len() < EOCD_LEN {
        return Err(invalid_zip("the body is not a ZIP archive (too short)"));
    }
    // The last record whose comment fits in the file: the one the ZIP library tries first.
    let Some(i) = (0..=tail.len() - EOCD_LEN).rev().find(|&i| {
        tail[i..i + 4] == SIG_EOCD && i + EOCD_LEN + le16(&tail, i + 20) as usize <= tail.len()
    }) else {
        return Err(invalid_zip(
            "the body is not a ZIP archive (no end of central directory record)",
        ));
    };
    let inconsistent = || invalid_zip("the archive's end records are inconsistent");
    let eocd_at = start + i as u64;
    let disk = le16(&tail, i + 4);
    let disk_with_directory = le16(&tail, i + 6);
    let entries_here = le16(&tail, i + 8);
    let entries = le16(&tail, i + 10);
    let size = le32(&tail, i + 12);
    let offset = le32(&tail, i + 16);

    let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
    let zip64 = (entries == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF)
        && eocd_at >= ZIP64_LOCATOR_LEN
        && read_at(file, eocd_at - ZIP64_LOCATOR_LEN, &mut locator)?
        && locator[..4] == SIG_ZIP64_LOCATOR;
    if zip64 {
        let locator_at = eocd_at - ZIP64_LOCATOR_LEN;
        let record_at = le64(&locator, 8);
        if record_at >= locator_at || le32(&locator, 16) > 1 {
            return Err(inconsistent());
        }
        let record_len = locator_at - record_at;
        if record_len < ZIP64_EOCD_LEN || record_len - ZIP64_EOCD_LEN > MAX_ZIP64_EXTENSIBLE_BYTES {
            return Err(inconsistent());
        }
        let mut rec = [0u8; ZIP64_EOCD_LEN as usize];
        if !read_at(file, record_at, &mut rec)? || rec[..4] != SIG_ZIP64_EOCD {
            return Err(inconsistent());
        }
        let entries = le64(&rec, 32);
        let size = le64(&rec, 40);
        let offset = le64(&rec, 48);
        if size > MAX_DIRECTORY_BYTES {
            return Err(directory_too_large(size));
        }
        let consistent = le64(&rec, 4).checked_add(12) == Some(record_len)
            && le32(&rec, 16) == 0
            && le32(&rec, 20) == 0
            && le32(&locator, 4) == 0
            && le64(&rec, 24) == entries
            && offset.checked_add(size) == Some(record_at)
            && entries
                .checked_mul(CENTRAL_HEADER_LEN)
                .is_some_and(|n| n <= size);
        if !consistent {
            return Err(inconsistent());
        }
        return Ok(Directory {
            entries,
            size,
            start: offset,
        });
    }

    if size > MAX_DIRECTORY_BYTES {
        return Err(directory_too_large(size));
    }
    if disk != 0 || disk_with_directory != 0 || entries_here != entries {
        return Err(invalid_zip("multi-disk archives are not supported"));
    }
    if entries == 0 {
        if offset > eocd_at {
            return Err(inconsistent());
        }
        return Ok(Directory {
            entries,
            size,
            start: eocd_at,
        });
    }
    // The directory must end where the end record begins (data may precede the archive).
    let dir_start = eocd_at.checked_sub(size).filter(|&s| s >= offset);
    let mut sig = [0u8; 4];
    match dir_start {
        Some(s) if offset < eocd_at && read_at(file, s, &mut sig)? && sig == SIG_CENTRAL => {
            Ok(Directory {
                entries,
                size,
                start: s,
            })
        }
        _ => Err(inconsistent()),
    }
}

fn truncated(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        invalid_zip("the archive is truncated")
    } else {
        e.into()
    }
}

/// Walks the central directory's headers (reading 46 bytes of each, holding nothing), checking
/// that the declared number of entries fits in the declared size and that no name is over
/// [`MAX_ENTRY_NAME_BYTES`].
pub fn walk_directory(file: &mut File, dir: &Directory) -> ApiResult<()> {
    if dir.entries == 0 {
        return Ok(());
    }
    let end = dir.start.saturating_add(dir.size);
    file.seek(SeekFrom::Start(dir.start))?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut at = dir.start;
    let mut header = [0u8; CENTRAL_HEADER_LEN as usize];
    for _ in 0..dir.entries {
        if at + CENTRAL_HEADER_LEN > end {
            return Err(invalid_zip(
                "the archive's central directory is bigger than it declares",
            ));
        }
        reader.read_exact(&mut header).map_err(truncated)?;
        if header[..4] != SIG_CENTRAL {
            return Err(invalid_zip("the archive's central directory is corrupt"));
        }
        let name_len = le16(&header, 28);
        let rest = name_len + le16(&header, 30) + le16(&header, 32);
        at += CENTRAL_HEADER_LEN + rest;
        if at > end {
            return Err(invalid_zip(
                "the archive's central directory is bigger than it declares",
            ));
        }
        if name_len as usize > MAX_ENTRY_NAME_BYTES {
            let mut name = vec![0u8; name_len as usize];
            reader.read_exact(&mut name).map_err(truncated)?;
            let shown: String = String::from_utf8_lossy(&name).chars().take(256).collect();
            return Err(unsafe_entry(&format!("{shown}…"), "the name is too long"));
        }
        reader.seek_relative(rest as i64)?;
    }
    Ok(())
}

/// Opens the archive, refusing an over-long one or one with an oversized central directory
/// before its index is built.
pub fn open(path: &Path, limits: &Limits) -> ApiResult<ZipArchive<File>> {
    let mut file = File::open(path)?;
    let dir = end_record(&mut file)?;
    if dir.entries > limits.max_entries {
        return Err(too_many(dir.entries, limits.max_entries));
    }
    walk_directory(&mut file, &dir)?;
    file.seek(SeekFrom::Start(0))?;
    let archive =
        ZipArchive::new(file).map_err(|e| invalid_zip(format!("the archive is corrupt: {e}")))?;
    if archive.len() as u64 > limits.max_entries {
        return Err(too_many(archive.len() as u64, limits.max_entries));
    }
    if dir.entries > 0 && archive.central_directory_start() != dir.start {
        // The library read another directory than the one checked (not expected to happen).
        return Err(invalid_zip("the archive's end records are inconsistent"));
    }
    Ok(archive)
}

/// Checks every entry of the central directory and the declared sizes; nothing is inflated.
/// `prefix` is the target directory (`?path=`), already checked.
pub fn plan(archive: &ZipArchive<File>, prefix: &[String], limits: &Limits) -> ApiResult<Plan> {
    if archive.has_duplicate_names() {
        return Err(ApiError::validation(
            "DUPLICATE_ZIP_ENTRY",
            "the archive holds the same name more than once",
        ));
    }
    let mut plan = Plan::default();
    // The target directory's node, made with the first entry (an archive of nothing but
    // "./" makes nothing).
    let mut target: Option<usize> = None;
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|e| invalid_zip(format!("entry {index}: {e}")))?;
        let raw = entry.name_raw();
        let shown = String::from_utf8_lossy(raw).into_owned();
        if raw.contains(&0) {
            return Err(unsafe_entry(&shown, "the name contains a NUL byte"));
        }
        let name = entry
            .name()
            .map_err(|_| unsafe_entry(&shown, "the name is not valid text"))?;
        let name: &str = &name;
        if name.contains('\0') {
            return Err(unsafe_entry(name, "the name contains a NUL byte"));
        }
        if name.contains('\\') {
            return Err(unsafe_entry(name, "the name contains a backslash"));
        }
        if name.starts_with('/') {
            return Err(unsafe_entry(name, "the name is an absolute path"));
        }
        let b = name.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(unsafe_entry(name, "the name starts with a drive letter"));
        }
        let mut components: Vec<&str> = Vec::new();
        for part in name.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(unsafe_entry(name, "the name has a '..' component")),
                p if p.len() > MAX_NAME_BYTES => {
                    return Err(unsafe_entry(name, "a name in the path is too long"))
                }
                p => components.push(p),
            }
        }
        if prefix.len() + components.len() > MAX_PATH_COMPONENTS {
            return Err(unsafe_entry(name, "the path is too deep"));
        }
        let bytes = prefix
            .iter()
            .map(String::as_str)
            .chain(components.iter().copied());
        if bytes.map(|c| c.len() + 1).sum::<usize>() > MAX_PATH_BYTES {
            return Err(unsafe_entry(name, "the path is too long"));
        }
        if entry.is_symlink() {
            return Err(unsafe_entry(name, "symlink entries are not accepted"));
        }
        let unix = entry.unix_mode();
        let file_type = unix.map(|m| m & 0o170000).unwrap_or(0);
        let is_dir = entry.is_dir() || file_type == 0o040000;
        if !matches!(file_type, 0 | 0o100000 | 0o040000) {
            return Err(unsafe_entry(name, "special files are not accepted"));
        }
        if entry.encrypted() {
            return Err(ApiError::validation(
                "UNSUPPORTED_ZIP_ENTRY",
                format!("entry {name:?} is encrypted"),
            )
            .with_details(json!({"entry": name, "reason": "encrypted"})));
        }
        if !is_dir
            && !matches!(
                entry.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            )
        {
            return Err(ApiError::validation(
                "UNSUPPORTED_ZIP_ENTRY",
                format!(
                    "entry {name:?} uses the compression method {:?}; only stored and deflate are supported",
                    entry.compression()
                ),
            )
            .with_details(json!({"entry": name, "reason": "compression method"})));
        }
        let Some((last, dirs)) = components.split_last() else {
            if is_dir {
                continue; // "./" or "/": the target directory itself
            }
            return Err(unsafe_entry(name, "the name is empty"));
        };
        let mut node = match target {
            Some(t) => t,
            None => {
                let t = prefix.iter().fold(0, |n, c| plan.child(n, c).0);
                target = Some(t);
                t
            }
        };
        // Collisions: a file where another entry needs a directory, or the same file twice.
        // One lookup per component: linear in the name.
        for dir in dirs {
            node = plan.child(node, dir).0;
            if plan.nodes[node].kind == NodeKind::File {
                return Err(ApiError::validation(
                    "DUPLICATE_ZIP_ENTRY",
                    format!(
                        "entry {name:?} collides with the file {:?}",
                        plan.path(node)
                    ),
                )
                .with_details(json!({"entry": name})));
            }
        }
        let (node, new) = plan.child(node, last);
        // Only a directory entry may name a directory already planned.
        let again_a_dir = is_dir && plan.nodes[node].kind == NodeKind::Dir;
        if !(new || again_a_dir) {
            return Err(ApiError::validation(
                "DUPLICATE_ZIP_ENTRY",
                format!("entry {name:?} appears twice or collides with another entry"),
            )
            .with_details(json!({"entry": name})));
        }
        // Every name the tree makes (files, explicit and implied directories, the target's
        // own) is one to create, move and give away: all count against the entry limit,
        // checked as the plan grows so it never holds more than that many nodes.
        let names = plan.nodes.len() as u64 - 1;
        if names > limits.max_entries {
            return Err(too_many_nodes(names, limits.max_entries));
        }
        let mode = unix.map(|m| m & if is_dir { 0o1777 } else { 0o777 });
        if mode.is_some() {
            plan.nodes[node].mode = mode;
        }
        if is_dir {
            continue;
        }
        plan.nodes[node].kind = NodeKind::File;
        let size = entry.size();
        declared_total = declared_total.saturating_add(size);
        if size > RATIO_FLOOR_BYTES
            && size
                > limits
                    .max_ratio
                    .saturating_mul(entry.compressed_size().max(1))
        {
            return Err(ratio_error(name, size, entry.compressed_size(), limits));
        }
        plan.entries.push(Planned {
            index,
            node,
            compressed: entry.compressed_size(),
        });
    }
    if declared_total > limits.max_inflated_bytes {
        return Err(inflated_error(declared_total, limits));
    }
    Ok(plan)
}

fn ratio_error(name: &str, inflated: u64, compressed: u64, limits: &Limits) -> ApiError {
    too_large(
        "ZIP_RATIO_EXCEEDED",
        format!(
            "entry {name:?} inflates more than {}x its compressed size",
            limits.max_ratio
        ),
        json!({"entry": name, "inflated": inflated, "compressed": compressed, "limit": limits.max_ratio}),
    )
}

fn inflated_error(total: u64, limits: &Limits) -> ApiError {
    too_large(
        "ZIP_TOO_LARGE",
        format!(
            "the archive inflates to more than the limit of {} bytes",
            limits.max_inflated_bytes
        ),
        json!({"inflated": total, "limit": limits.max_inflated_bytes}),
    )
}

fn staging_error(e: Errno, plan: &Plan, node: usize) -> ApiError {
    if e == Errno::NAMETOOLONG {
        // Not expected: paths are created relative to the tree's descriptor and checked
        // against MAX_PATH_BYTES.
        return unsafe_entry(&plan.path(node), "the path is too long");
    }
    std::io::Error::from(e).into()
}

/// Inflates the planned entries into the directory `tree` (a fresh directory in the staging
/// area, which only the server can reach), counting the bytes actually inflated. Everything
/// is created relative to `tree`'s descriptor (so the staging area's own path does not count
/// against `PATH_MAX`), owned by the server, directories 0700 and files 0600: nothing is
/// given to the container's user before the commit has placed it in `/app`.
pub fn extract(
    archive: &mut ZipArchive<File>,
    plan: &Plan,
    tree: &OwnedFd,
    limits: &Limits,
) -> ApiResult<Outcome> {
    // Parents come before their children in `nodes`.
    for (id, node) in plan.nodes.iter().enumerate().skip(1) {
        if node.kind == NodeKind::Dir {
            mkdirat(tree, plan.path(id).as_str(), Mode::from_raw_mode(0o700))
                .map_err(|e| staging_error(e, plan, id))?;
        }
    }
    let mut total: u64 = 0;
    let mut files: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in &plan.entries {
        let name = plan.path(entry.node);
        let mut out = File::from(
            openat(
                tree,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| staging_error(e, plan, entry.node))?,
        );
        let mut zf = archive
            .by_index(entry.index)
            .map_err(|e| invalid_zip(format!("entry {name:?} cannot be read: {e}")))?;
        let mtime = zf.last_modified();
        let mut written: u64 = 0;
        loop {
            let n = match zf.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(invalid_zip(format!(
                        "entry {name:?} is corrupt or truncated: {e}"
                    )))
                }
            };
            written += n as u64;
            total += n as u64;
            if total > limits.max_inflated_bytes {
                return Err(inflated_error(total, limits));
            }
            if written > RATIO_FLOOR_BYTES
                && written > limits.max_ratio.saturating_mul(entry.compressed.max(1))
            {
                return Err(ratio_error(&name, written, entry.compressed, limits));
            }
            out.write_all(&buf[..n])?;
        }
        drop(zf);
        if let Some(t) = mtime.and_then(to_system_time) {
            let _ = out.set_modified(t);
        }
        files += 1;
    }
    Ok(Outcome {
        files,
        bytes: total,
    })
}

fn to_system_time(t: zip::DateTime) -> Option<std::time::SystemTime> {
    let date = chrono::NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())?;
    let dt = date.and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())?;
    let secs = u64::try_from(dt.and_utc().timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The whole upload after the body is on disk (`staging/upload.zip`): open, plan, extract
/// into `staging/tree`, commit into `root` (the container's `/app`, at `mount` on the host).
pub fn run(
    staging: &Path,
    root: OwnedFd,
    mount: &Path,
    prefix: &[String],
    owner: UserIds,
    limits: &Limits,
) -> ApiResult<Outcome> {
    let zip_path = staging.join("upload.zip");
    let tree = staging.join(journal::TREE);
    let mut archive = open(&zip_path, limits)?;
    let plan = plan(&archive, prefix, limits)?;
    std::fs::DirBuilder::new().mode(0o700).create(&tree)?;
    let tree = rustix::fs::open(
        &tree,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let outcome = extract(&mut archive, &plan, &tree, limits)?;
    drop(archive);
    let _ = std::fs::remove_file(&zip_path);
    place::commit(&plan, staging, tree, root, mount, owner)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::confine;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn zip_file(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        file_of(&zip_bytes(entries))
    }

    /// The same archive with ZIP64 end records (a ZIP64 record and its locator before an end
    /// record whose fields all say "see ZIP64").
    fn to_zip64(zip: &[u8]) -> Vec<u8> {
        let eocd = zip.len() - EOCD_LEN;
        let (entries, size, offset) = (
            le16(zip, eocd + 10),
            le32(zip, eocd + 12),
            le32(zip, eocd + 16),
        );
        let mut out = zip[..eocd].to_vec();
        let record_at = out.len() as u64;
        out.extend_from_slice(&SIG_ZIP64_EOCD);
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [entries, entries, size, offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&SIG_ZIP64_LOCATOR);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&record_at.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&SIG_EOCD);
        out.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.extend_from_slice(&[0xFF; 8]);
        out.extend_from_slice(&[0, 0]);
        out
    }

    const ROOMY: Limits = Limits {
        max_entries: 1000,
        max_inflated_bytes: 1 << 30,
        max_ratio: 1_000_000,
    };

    fn me() -> UserIds {
        UserIds {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    #[test]
    fn the_declared_entry_count_is_read_from_the_end_record() {
        let f = zip_file(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap().entries, 3);
        let mut g = tempfile::tempfile().unwrap();
        g.write_all(b"not a zip at all, not at all").unwrap();
        assert_eq!(end_record(&mut g).unwrap_err().code, "INVALID_ZIP");
        let limits = Limits {
            max_entries: 2,
            ..ROOMY
        };
        assert_eq!(
            open(f.path(), &limits).unwrap_err().code,
            "ZIP_TOO_MANY_ENTRIES"
        );
    }

    #[test]
    fn the_central_directory_size_is_read_from_the_end_records() {
        let zip = zip_bytes(&[("a", b"1"), ("dir/b", b"2"), ("c", b"3")]);
        let eocd = zip.len() - EOCD_LEN;
        let (size, offset) = (le32(&zip, eocd + 12), le32(&zip, eocd + 16));
        assert_eq!(offset + size, eocd as u64);
        let want = Directory {
            entries: 3,
            size,
            start: offset,
        };
        let f = file_of(&zip);
        assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap(), want);
        assert_eq!(open(f.path(), &ROOMY).unwrap().len(), 3);

        // Data before the archive (a self-extractor's stub) moves the directory, not its size.
        let mut prefixed = vec![b'#'; 100];
        prefixed.extend_from_slice(&zip);
        let f = file_of(&prefixed);
        let dir = end_record(&mut f.reopen().unwrap()).unwrap();
        assert_eq!((dir.size, dir.start), (size, offset + 100));
        let archive = open(f.path(), &ROOMY).unwrap();
        plan(&archive, &[], &ROOMY).unwrap();

        // ZIP64 end records: the size comes from the ZIP64 record, and the ZIP library reads
        // the very directory that was checked.
        let zip64 = to_zip64(&zip);
        let f = file_of(&zip64);
        assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap(), want);
        let archive = open(f.path(), &ROOMY).unwrap();
        assert_eq!(archive.len(), 3);
        plan(&archive, &[], &ROOMY).unwrap();

        // A declared size over the cap is refused before anything else is read.
        for huge in [MAX_DIRECTORY_BYTES + 1, 0xFFFF_FFF0] {
            let mut forged = zip.clone();
            forged[eocd + 12..eocd + 16].copy_from_slice(&(huge as u32).to_le_bytes());
            let e = end_record(&mut file_of(&forged).reopen().unwrap()).unwrap_err();
            assert_eq!(e.kind.status().as_u16(), 413);
            assert_eq!(e.code, "ZIP_DIRECTORY_TOO_LARGE");
            let mut forged = zip64.clone();
            let at = eocd + 40;
            forged[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            let e = end_record(&mut file_of(&forged).reopen().unwrap()).unwrap_err();
            assert_eq!(e.code, "ZIP_DIRECTORY_TOO_LARGE");
        }

        // A size smaller than the directory: the ZIP library would read past it, so refused
        // (whether or not the shortened directory starts on a header).
        let last_record = 46 + 1;
        for small in [size - 1, last_record, 0] {
            let mut forged = zip.clone();
            forged[eocd + 12..eocd + 16].copy_from_slice(&(small as u32).to_le_bytes());
            let f = file_of(&forged);
            let e = open(f.path(), &ROOMY).unwrap_err();
            assert_eq!(e.code, "INVALID_ZIP", "{small}: {}", e.message);
        }
        // More entries declared than the directory holds.
        let mut forged = zip.clone();
        forged[eocd + 8..eocd + 12].copy_from_slice(&[4, 0, 4, 0]);
        let e = open(file_of(&forged).path(), &ROOMY).unwrap_err();
        assert_eq!(e.code, "INVALID_ZIP", "{}", e.message);

        // A name over the cap is refused while walking the directory.
        let long = "d/".repeat(MAX_ENTRY_NAME_BYTES / 2) + "f";
        let f = zip_file(&[("a", b"1"), (&long, b"2")]);
        let mut file = f.reopen().unwrap();
        let dir = end_record(&mut file).unwrap();
        let e = walk_directory(&mut file, &dir).unwrap_err();
        assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");
        assert_eq!(open(f.path(), &ROOMY).unwrap_err().code, "UNSAFE_ZIP_ENTRY");
    }

    #[test]
    fn the_plan_puts_entries_under_the_prefix_and_finds_collisions() {
        let f = zip_file(&[("a/b.txt", b"1"), ("./c.txt", b"2")]);
        let archive = open(f.path(), &ROOMY).unwrap();
        let plan = plan(&archive, &["t".into()], &ROOMY).unwrap();
        let paths: Vec<String> = plan.entries.iter().map(|e| plan.path(e.node)).collect();
        assert_eq!(paths, ["t/a/b.txt", "t/c.txt"]);
        let a = plan.find(&["t", "a"]).unwrap();
        assert_eq!(plan.nodes[a].kind, NodeKind::Dir);

        // A target path that is a file of the archive's own tree collides.
        for entries in [
            &[("x", &b"1"[..]), ("x/y", b"2")][..],
            &[("x/y", b"2"), ("x", b"1")],
            &[("x/y/", b""), ("x/y", b"1")],
        ] {
            let f = zip_file(entries);
            let archive = open(f.path(), &ROOMY).unwrap();
            let e = super::plan(&archive, &[], &ROOMY).unwrap_err();
            assert_eq!(e.code, "DUPLICATE_ZIP_ENTRY");
        }
    }

    /// Deep names: over MAX_PATH_COMPONENTS (the target's components included) is refused;
    /// at the cap, many entries cost time and memory linear in their names (the plan keeps
    /// one node per distinct name, not every ancestor's path per entry).
    #[test]
    fn deep_names_are_capped_and_planned_in_linear_time() {
        let deep = "a/".repeat(MAX_PATH_COMPONENTS) + "f";
        let f = zip_file(&[("ok", b"1"), (&deep, b"2")]);
        let archive = open(f.path(), &ROOMY).unwrap();
        let e = plan(&archive, &[], &ROOMY).unwrap_err();
        assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");
        assert_eq!(
            e.details.as_ref().unwrap()["reason"],
            "the path is too deep"
        );
        // The target directory's components count too.
        let at_cap = "a/".repeat(MAX_PATH_COMPONENTS - 2) + "f";
        let f = zip_file(&[(&at_cap, b"1")]);
        let archive = open(f.path(), &ROOMY).unwrap();
        plan(&archive, &["t".into()], &ROOMY).unwrap();
        let e = plan(&archive, &["t".into(), "u".into()], &ROOMY).unwrap_err();
        assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");

        // 300 entries of 256 components (~3.8 KB each), in distinct top directories.
        let names: Vec<String> = (0..300)
            .map(|i| format!("{i:05}/") + &"abcdefghijklm/".repeat(MAX_PATH_COMPONENTS - 2) + "f")
            .collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let f = zip_file(&entries);
        let limits = Limits {
            max_entries: 300 * MAX_PATH_COMPONENTS as u64,
            ..ROOMY
        };
        let archive = open(f.path(), &limits).unwrap();
        let t = std::time::Instant::now();
        let plan = plan(&archive, &[], &limits).unwrap();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(plan.nodes.len(), 1 + 300 * MAX_PATH_COMPONENTS);
    }

    /// Directories only implied by entry paths count against the entry limit: 3 entries of
    /// 40 components make 120 directories to create.
    #[test]
    fn implied_directories_count_against_the_entry_limit() {
        let names: Vec<String> = (0..3)
            .map(|i| format!("top{i}/") + &"d/".repeat(38) + "f")
            .collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let f = zip_file(&entries);
        let limits = Limits {
            max_entries: 100,
            ..ROOMY
        };
        let archive = open(f.path(), &limits).unwrap();
        let e = plan(&archive, &[], &limits).unwrap_err();
        assert_eq!(e.kind.status().as_u16(), 413);
        assert_eq!(e.code, "ZIP_TOO_MANY_ENTRIES");
        assert!(e.message.contains("directories"), "{}", e.message);
        assert_eq!(e.details.as_ref().unwrap()["limit"], 100);
        // Exactly at the limit (3 × 40 names) it passes; the target's components count too.
        let at_limit = Limits {
            max_entries: 120,
            ..ROOMY
        };
        let plan_ok = plan(&archive, &[], &at_limit).unwrap();
        assert_eq!(plan_ok.nodes.len() - 1, 120);
        let e = plan(&archive, &["t".into()], &at_limit).unwrap_err();
        assert_eq!(e.code, "ZIP_TOO_MANY_ENTRIES");
    }

    #[test]
    fn extraction_counts_bytes_actually_inflated() {
        let zeros = vec![0u8; 3 << 20];
        let f = zip_file(&[("small", b"abc"), ("zeros", &zeros)]);
        let dir = tempfile::tempdir().unwrap();
        let mut archive = open(f.path(), &ROOMY).unwrap();
        // Planned under generous limits, extracted under strict ones: the counting during
        // inflation stops it, whatever the headers said.
        let plan = plan(&archive, &[], &ROOMY).unwrap();
        let strict = Limits {
            max_inflated_bytes: 2 << 20,
            ..ROOMY
        };
        let e = extract(&mut archive, &plan, &tree_in(dir.path(), "t1"), &strict).unwrap_err();
        assert_eq!(e.code, "ZIP_TOO_LARGE");
        let ratio = Limits {
            max_ratio: 100,
            ..ROOMY
        };
        let e = extract(&mut archive, &plan, &tree_in(dir.path(), "t2"), &ratio).unwrap_err();
        assert_eq!(e.code, "ZIP_RATIO_EXCEEDED");
        // And under the plan's limits it goes through, byte for byte.
        let out = extract(&mut archive, &plan, &tree_in(dir.path(), "t3"), &ROOMY).unwrap();
        assert_eq!(
            out,
            Outcome {
                files: 2,
                bytes: 3 + (3 << 20)
            }
        );
        assert_eq!(std::fs::read(dir.path().join("t3/small")).unwrap(), b"abc");
    }

    /// A fresh directory `base/name`, opened.
    fn tree_in(base: &Path, name: &str) -> OwnedFd {
        let path = base.join(name);
        std::fs::create_dir(&path).unwrap();
        rustix::fs::open(&path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap()
    }

    /// Plans and extracts `entries` into `base/name`; returns the plan and the tree.
    fn staged(base: &Path, name: &str, entries: &[(&str, &[u8])]) -> (Plan, OwnedFd) {
        let f = zip_file(entries);
        let mut archive = open(f.path(), &ROOMY).unwrap();
        let plan = plan(&archive, &[], &ROOMY).unwrap();
        let tree = tree_in(base, name);
        extract(&mut archive, &plan, &tree, &ROOMY).unwrap();
        (plan, tree)
    }

    fn owner_of(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(path).unwrap();
        (md.uid(), md.mode() & 0o7777)
    }

    #[test]
    fn commit_replaces_links_merges_directories_and_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(app.join("keep")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(app.join("keep/old"), b"old").unwrap();
        std::os::unix::fs::symlink(&outside, app.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), app.join("file")).unwrap();

        let (plan, tree) = staged(
            dir.path(),
            "tree",
            &[("keep/new", b"new"), ("link/in", b"in"), ("file", b"file")],
        );
        let root = confine::open_root(&app, "c").unwrap();
        place::commit(&plan, dir.path(), tree, root, &app, me()).unwrap();
        assert_eq!(std::fs::read(app.join("keep/old")).unwrap(), b"old");
        assert_eq!(std::fs::read(app.join("keep/new")).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(app.join("link"))
            .unwrap()
            .is_dir());
        assert!(std::fs::symlink_metadata(app.join("file"))
            .unwrap()
            .is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        // A file where a directory is: conflict, and the earlier moves are undone.
        let (plan, tree) = staged(
            dir.path(),
            "tree2",
            &[("a-new", b"x"), ("file", b"file2"), ("keep", b"not a dir")],
        );
        let root = confine::open_root(&app, "c").unwrap();
        let e = place::commit(&plan, dir.path(), tree, root, &app, me()).unwrap_err();
        assert_eq!(e.code, "PATH_CONFLICT");
        assert!(!app.join("a-new").exists());
        assert_eq!(std::fs::read(app.join("file")).unwrap(), b"file");
        assert!(app.join("keep").is_dir());
    }

    /// Staged items stay the server's (0700/0600) until placed; placed ones get the owner and
    /// their modes. The commit works on the staged tree's descriptor: a symlink put where
    /// the staged tree was (or in it) is never followed.
    #[test]
    fn staged_items_stay_private_and_the_commit_never_resolves_staging_paths() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(app.join("d/sub")).unwrap();
        let f = {
            let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
            let o = SimpleFileOptions::default();
            w.add_directory("n/", o.unix_permissions(0o750)).unwrap();
            w.start_file("n/m/f", o.unix_permissions(0o640)).unwrap();
            w.write_all(b"nf").unwrap();
            w.start_file("d/sub/g", o).unwrap();
            w.write_all(b"g").unwrap();
            file_of(&w.finish().unwrap().into_inner())
        };
        let mut archive = open(f.path(), &ROOMY).unwrap();
        let plan = plan(&archive, &[], &ROOMY).unwrap();
        let tree = tree_in(dir.path(), "tree");
        extract(&mut archive, &plan, &tree, &ROOMY).unwrap();
        let server = rustix::process::getuid().as_raw();
        let staged = dir.path().join("tree");
        assert_eq!(owner_of(&staged.join("n")), (server, 0o700));
        assert_eq!(owner_of(&staged.join("n/m")), (server, 0o700));
        assert_eq!(owner_of(&staged.join("n/m/f")), (server, 0o600));

        // The staged tree's path now leads elsewhere, and so does its d/sub: a path-based
        // merge would move `elsewhere`'s files into /app.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("d/sub")).unwrap();
        std::fs::write(elsewhere.join("d/sub/secret"), b"s").unwrap();
        std::fs::write(elsewhere.join("host-file"), b"h").unwrap();
        std::fs::rename(&staged, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &staged).unwrap();

        // Another owner than the server, when the server may give files away (root).
        let owner = if server == 0 {
            UserIds {
                uid: 4242,
                gid: 4242,
            }
        } else {
            me()
        };
        let root = confine::open_root(&app, "c").unwrap();
        place::commit(&plan, dir.path(), tree, root, &app, owner).unwrap();
        assert_eq!(std::fs::read(app.join("n/m/f")).unwrap(), b"nf");
        assert_eq!(std::fs::read(app.join("d/sub/g")).unwrap(), b"g");
        assert!(!app.join("d/sub/secret").exists());
        assert!(!app.join("host-file").exists());
        assert!(elsewhere.join("d/sub/secret").exists());
        assert_eq!(owner_of(&app.join("n")), (owner.uid, 0o750));
        assert_eq!(owner_of(&app.join("n/m")), (owner.uid, 0o755));
        assert_eq!(owner_of(&app.join("n/m/f")), (owner.uid, 0o640));
        assert_eq!(owner_of(&app.join("d/sub/g")), (owner.uid, 0o644));
    }

    /// What a directory holds, recursively, without following anything.
    fn listing(dir: &Path) -> std::collections::BTreeMap<String, String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                let what = if md.is_dir() {
                    stack.push(p.clone());
                    "dir".to_owned()
                } else if md.is_file() {
                    format!("file {:?}", std::fs::read(&p).unwrap())
                } else {
                    "other".to_owned()
                };
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, format!("{what} {}:{:o}", md.uid(), md.mode() & 0o7777));
            }
        }
        out
    }

    /// A root container may enter the server's 0700 directory the commit just moved into
    /// its /app and `mknod` a FIFO at a name the commit is about to give away: the FIFO is
    /// never opened (nor chowned), the upload is a conflict and /app is rolled back.
    #[test]
    fn a_fifo_planted_in_a_placed_directory_is_never_opened() {
        use rustix::fs::inotify;
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("old"), b"old").unwrap();
        let before = listing(&app);
        let (plan, tree) = staged(dir.path(), "tree", &[("d/f", b"x"), ("d/g", b"y")]);
        let watcher =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        let planted = std::cell::Cell::new(0);
        let hook = |moves: u64| {
            if moves == 1 {
                let fifo = app.join("fifo");
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &fifo,
                    rustix::fs::FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
                for name in ["f", "g"] {
                    std::fs::hard_link(&fifo, app.join("d").join(name).with_extension("tmp"))
                        .unwrap();
                    std::fs::rename(
                        app.join("d").join(name).with_extension("tmp"),
                        app.join("d").join(name),
                    )
                    .unwrap();
                }
                // Watched once planted (a new link is itself an attribute change).
                inotify::add_watch(
                    &watcher,
                    &fifo,
                    inotify::WatchFlags::OPEN | inotify::WatchFlags::ATTRIB,
                )
                .unwrap();
                planted.set(planted.get() + 1);
            }
        };
        let root = confine::open_root(&app, "c").unwrap();
        let e =
            place::commit_with(&plan, dir.path(), tree, root, &app, me(), Some(&hook)).unwrap_err();
        assert_eq!(planted.get(), 1);
        assert_eq!(e.code, "PATH_CONFLICT", "{}", e.message);
        assert_eq!(
            listing(&app)
                .into_iter()
                .filter(|(k, _)| k != "fifo")
                .collect::<Vec<_>>(),
            before.into_iter().collect::<Vec<_>>()
        );
        // Not one open (an O_PATH handle is not one) or change of owner or mode.
        let mut buf = [0u8; 1024];
        assert_eq!(rustix::io::read(&watcher, &mut buf), Err(Errno::AGAIN));
    }

    /// A crash after any move of a commit (a panic at that point, no rollback run) is
    /// undone from the journal as the next start does: /app holds its old tree exactly,
    /// owners and modes included; once the commit is recorded, the new tree stays.
    #[test]
    fn a_commit_interrupted_after_any_move_is_rolled_back_from_its_journal() {
        let entries: &[(&str, &[u8])] = &[
            ("a", b"new a"),
            ("b/x", b"new x"),
            ("c/d/e", b"e"),
            ("keep/new", b"new"),
            ("link/in", b"in"),
            ("z", b"z"),
        ];
        let setup = |base: &Path| {
            let app = base.join("app");
            std::fs::create_dir_all(app.join("b")).unwrap();
            std::fs::create_dir_all(app.join("keep")).unwrap();
            std::fs::write(app.join("a"), b"old a").unwrap();
            std::fs::write(app.join("b/x"), b"old x").unwrap();
            std::fs::write(app.join("keep/old"), b"old").unwrap();
            std::os::unix::fs::symlink("/etc", app.join("link")).unwrap();
            app
        };
        let moves = 6;
        for crash_at in 1..=moves {
            let dir = tempfile::tempdir().unwrap();
            let app = setup(dir.path());
            let before = listing(&app);
            let stage = dir.path().join("stage");
            std::fs::create_dir(&stage).unwrap();
            let (plan, tree) = staged(&stage, journal::TREE, entries);
            let hook = |n: u64| {
                if n == crash_at {
                    panic!("simulated crash after move {n}");
                }
            };
            let root = confine::open_root(&app, "c").unwrap();
            let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                place::commit_with(&plan, &stage, tree, root, &app, me(), Some(&hook))
            }));
            assert!(crashed.is_err(), "no crash at {crash_at}");
            assert_ne!(listing(&app), before, "nothing moved before {crash_at}");
            journal::recover(&stage);
            assert_eq!(listing(&app), before, "after a crash at move {crash_at}");
            // Recovering again changes nothing.
            journal::recover(&stage);
            assert_eq!(listing(&app), before);
        }
        // A whole commit: recorded, and the start-up leaves it as it is.
        let dir = tempfile::tempdir().unwrap();
        let app = setup(dir.path());
        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let (plan, tree) = staged(&stage, journal::TREE, entries);
        let root = confine::open_root(&app, "c").unwrap();
        let count = std::cell::Cell::new(0);
        let hook = |n: u64| count.set(n);
        place::commit_with(&plan, &stage, tree, root, &app, me(), Some(&hook)).unwrap();
        assert_eq!(count.get(), moves);
        let after = listing(&app);
        assert_eq!(std::fs::read(app.join("a")).unwrap(), b"new a");
        journal::recover(&stage);
        assert_eq!(listing(&app), after);
    }

    /// A name close to PATH_MAX is created relative to the tree's descriptor: the staging
    /// area's own path does not make it fail (it used to: ENAMETOOLONG, a 500).
    #[test]
    fn names_near_the_path_limit_are_staged_and_placed() {
        let part = "p".repeat(200);
        let mut name = vec![part.as_str(); 20].join("/");
        name.push_str("/fff");
        assert!(name.len() > 4000 && name.len() < MAX_PATH_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let (plan, tree) = staged(dir.path(), "tree", &[(&name, b"deep")]);
        let root = confine::open_root(&app, "c").unwrap();
        place::commit(&plan, dir.path(), tree, root, &app, me()).unwrap();
        let app_fd = confine::open_root(&app, "c").unwrap();
        match confine::lookup(&app_fd, &confine::parse_path(&name).unwrap(), &name).unwrap() {
            confine::Found::File(_, size) => assert_eq!(size, 4),
            _ => panic!("not a file"),
        }
    }
}
