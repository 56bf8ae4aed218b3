//! Every entry of the central directory checked (names, types, duplicates, encryption,
//! method, declared sizes, how many names the tree makes) before a single byte is inflated.

use std::fs::File;

use serde_json::json;
use zip::{CompressionMethod, ZipArchive};

use super::extract::{inflated_error, ratio_error};
use super::{invalid_zip, too_large, unsafe_entry, Limits, RATIO_FLOOR_BYTES};
use crate::appdir::confine::{self, MAX_PATH_BYTES, MAX_PATH_COMPONENTS};
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::plan::{NodeKind, Plan, Planned};

/// The archive's tree has more names than `ZIP_MAX_ENTRIES`, counting the directories its
/// paths only imply: 20,000 entries of 255 components would otherwise make 5 million
/// directories from a few MiB of names.
pub(super) fn too_many_nodes(nodes: u64, limit: u64) -> Error {
    too_large(
        Reason::ZipTooManyEntries,
        format!(
            "the archive makes more than {limit} files and directories (directories its paths \
             imply count too)"
        ),
        json!({"nodes": nodes, "limit": limit, "counts": "files and directories, implied directories included"}),
    )
}

/// Checks every entry of the central directory and the declared sizes; nothing is inflated.
/// `prefix` is the target directory (`?path=`), already checked.
pub fn plan(archive: &ZipArchive<File>, prefix: &[String], limits: &Limits) -> FilesResult<Plan> {
    if archive.has_duplicate_names() {
        return Err(Error::refused(
            Reason::DuplicateZipEntry,
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
            match confine::component(part) {
                Ok(None) => {}
                Ok(Some(p)) => components.push(p),
                Err(reason) => return Err(unsafe_entry(name, reason)),
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
            return Err(Error::refused(
                Reason::UnsupportedZipEntry,
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
            return Err(Error::refused(Reason::UnsupportedZipEntry,
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
                return Err(Error::refused(
                    Reason::DuplicateZipEntry,
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
            return Err(Error::refused(
                Reason::DuplicateZipEntry,
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
