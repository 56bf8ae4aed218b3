//! ZIP upload: check the whole archive, extract it into a private staging tree, then move
//! the staged tree into the container's `/app` by renames, undoing every move if one fails.
//!
//! Order of the work (all of it blocking; the handler runs it on the blocking pool while it
//! holds the container's upload lock):
//! 1. [`declared_entries`]: the entry count from the end-of-central-directory record, checked
//!    before the ZIP library builds its index (a forged count must not cost memory).
//! 2. [`plan`]: every central-directory entry is checked (names, types, duplicates,
//!    encryption, method, declared sizes) before a single byte is inflated.
//! 3. [`extract`]: entries are inflated into `DATA_DIR/staging/<id>/tree`, counting the bytes
//!    actually inflated against the limits (the declared sizes may lie).
//! 4. [`commit`]: the staged tree is merged into `/app`. New files and directories are
//!    `renameat2(RENAME_NOREPLACE)`d into place; an existing file, symlink, FIFO or hard link
//!    is swapped out with `RENAME_EXCHANGE` (replaced, never written through or followed);
//!    an existing directory is merged into; a non-directory where the upload needs a
//!    directory is replaced by the staged directory; a directory where the upload puts a file
//!    is a conflict. Every move is journaled and undone in reverse order on failure, so
//!    `/app` is left as it was. The staging area is not visible to the container.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{renameat_with, statat, AtFlags, FileType, OFlags, RenameFlags, CWD};
use rustix::io::Errno;
use serde_json::json;
use zip::{CompressionMethod, ZipArchive};

use crate::config::UserIds;
use crate::error::{ApiError, ApiResult, Kind};
use crate::fs::confine::{self, MAX_NAME_BYTES, MAX_PATH_BYTES};

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

/// One entry of the archive, checked.
#[derive(Debug)]
struct Planned {
    index: usize,
    /// Path relative to `/app` (the target directory prefix included).
    components: Vec<String>,
    is_dir: bool,
    /// Permission bits to apply (setuid/setgid dropped), when the archive has them.
    mode: Option<u32>,
    compressed: u64,
}

#[derive(Debug, Default)]
pub struct Plan {
    entries: Vec<Planned>,
    /// Every directory the tree will hold (explicit or implied), with its explicit mode.
    dirs: HashMap<Vec<String>, Option<u32>>,
}

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

/// The number of entries the archive declares, read from its end-of-central-directory
/// record (and the ZIP64 one when present), without parsing the central directory.
pub fn declared_entries(file: &mut File) -> ApiResult<u64> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let len = file.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65535);
    let start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    if tail.len() < 22 {
        return Err(invalid_zip("the body is not a ZIP archive (too short)"));
    }
    // The record whose comment runs exactly to the end of the file; else the last one.
    let mut last = None;
    let mut exact = None;
    for i in (0..=tail.len() - 22).rev() {
        if tail[i..i + 4] == EOCD {
            last.get_or_insert(i);
            if i + 22 + le16(&tail, i + 20) as usize == tail.len() {
                exact = Some(i);
                break;
            }
        }
    }
    let Some(i) = exact.or(last) else {
        return Err(invalid_zip(
            "the body is not a ZIP archive (no end of central directory record)",
        ));
    };
    let mut count = le16(&tail, i + 8).max(le16(&tail, i + 10));
    if count == 0xFFFF || le32(&tail, i + 16) == 0xFFFF_FFFF {
        // ZIP64: the locator sits right before the record.
        let eocd_at = start + i as u64;
        if eocd_at >= 20 {
            let mut loc = [0u8; 20];
            file.seek(SeekFrom::Start(eocd_at - 20))?;
            file.read_exact(&mut loc)?;
            if loc[..4] == [0x50, 0x4b, 0x06, 0x07] {
                let at = le64(&loc, 8);
                let mut rec = [0u8; 56];
                if at.checked_add(56).is_some_and(|end| end <= len) {
                    file.seek(SeekFrom::Start(at))?;
                    file.read_exact(&mut rec)?;
                    if rec[..4] == [0x50, 0x4b, 0x06, 0x06] {
                        count = count.max(le64(&rec, 24)).max(le64(&rec, 32));
                    }
                }
            }
        }
    }
    Ok(count)
}

/// Opens the archive, refusing an over-long one before its index is built.
pub fn open(path: &Path, limits: &Limits) -> ApiResult<ZipArchive<File>> {
    let mut file = File::open(path)?;
    let declared = declared_entries(&mut file)?;
    if declared > limits.max_entries {
        return Err(too_many(declared, limits.max_entries));
    }
    file.seek(SeekFrom::Start(0))?;
    let archive =
        ZipArchive::new(file).map_err(|e| invalid_zip(format!("the archive is corrupt: {e}")))?;
    if archive.len() as u64 > limits.max_entries {
        return Err(too_many(archive.len() as u64, limits.max_entries));
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
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        File,
        Dir,
    }
    let mut kinds: HashMap<Vec<String>, Kind> = HashMap::new();
    let mut plan = Plan::default();
    plan.dirs.insert(Vec::new(), None);
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
        let mut components: Vec<String> = prefix.to_vec();
        for part in name.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(unsafe_entry(name, "the name has a '..' component")),
                p if p.len() > MAX_NAME_BYTES => {
                    return Err(unsafe_entry(name, "a name in the path is too long"))
                }
                p => components.push(p.to_owned()),
            }
        }
        if components.iter().map(|c| c.len() + 1).sum::<usize>() > MAX_PATH_BYTES {
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
        if components.len() == prefix.len() {
            if is_dir {
                continue; // "./" or "/": the target directory itself
            }
            return Err(unsafe_entry(name, "the name is empty"));
        }
        // Collisions: a file where another entry needs a directory, or the same file twice.
        for depth in prefix.len().max(1)..components.len() {
            let ancestor = components[..depth].to_vec();
            match kinds.get(&ancestor) {
                Some(Kind::File) => {
                    return Err(ApiError::validation(
                        "DUPLICATE_ZIP_ENTRY",
                        format!(
                            "entry {name:?} collides with the file {:?}",
                            ancestor.join("/")
                        ),
                    )
                    .with_details(json!({"entry": name})))
                }
                Some(Kind::Dir) => {}
                None => {
                    kinds.insert(ancestor.clone(), Kind::Dir);
                    plan.dirs.entry(ancestor).or_insert(None);
                }
            }
        }
        for depth in 1..prefix.len() + 1 {
            plan.dirs
                .entry(components[..depth].to_vec())
                .or_insert(None);
        }
        let mode = unix.map(|m| m & if is_dir { 0o1777 } else { 0o777 });
        match (kinds.get(&components), is_dir) {
            (None, _) | (Some(Kind::Dir), true) => {}
            _ => {
                return Err(ApiError::validation(
                    "DUPLICATE_ZIP_ENTRY",
                    format!("entry {name:?} appears twice or collides with another entry"),
                )
                .with_details(json!({"entry": name})))
            }
        }
        kinds.insert(
            components.clone(),
            if is_dir { Kind::Dir } else { Kind::File },
        );
        if is_dir {
            let slot = plan.dirs.entry(components.clone()).or_insert(None);
            if mode.is_some() {
                *slot = mode;
            }
        } else {
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
        }
        plan.entries.push(Planned {
            index,
            components,
            is_dir,
            mode,
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

fn staged_path(tree: &Path, components: &[String]) -> PathBuf {
    let mut p = tree.to_path_buf();
    p.extend(components);
    p
}

/// Inflates the planned entries into `tree` (a fresh directory in the staging area, which
/// only the server can reach), counting the bytes actually inflated.
pub fn extract(
    archive: &mut ZipArchive<File>,
    plan: &Plan,
    tree: &Path,
    owner: UserIds,
    limits: &Limits,
) -> ApiResult<Outcome> {
    let mut dirs: Vec<&Vec<String>> = plan.dirs.keys().collect();
    dirs.sort_by_key(|d| d.len());
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    for d in &dirs {
        if !d.is_empty() {
            builder.create(staged_path(tree, d))?;
        }
    }
    let mut total: u64 = 0;
    let mut files: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in plan.entries.iter().filter(|e| !e.is_dir) {
        let name = entry.components.join("/");
        let path = staged_path(tree, &entry.components);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
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
        confine::chown_fd(&out, owner)?;
        let mode = entry.mode.unwrap_or(0o644);
        out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(t) = mtime.and_then(to_system_time) {
            let _ = out.set_modified(t);
        }
        files += 1;
    }
    // Directory owners and modes last (a read-only directory must not stop extraction).
    for d in dirs.iter().rev() {
        if d.is_empty() {
            continue;
        }
        let path = staged_path(tree, d);
        let dir = File::open(&path)?;
        confine::chown_fd(&dir, owner)?;
        let mode = plan.dirs.get(*d).copied().flatten().unwrap_or(0o755);
        dir.set_permissions(std::fs::Permissions::from_mode(mode))?;
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

/// One move done in `/app`, to undo on failure.
enum Undo {
    /// `src` (staging) was renamed to `dst_dir/name`: rename it back.
    MovedIn {
        src: PathBuf,
        dst_dir: Arc<OwnedFd>,
        name: CString,
    },
    /// `src` (staging) and `dst_dir/name` were exchanged: exchange them back.
    Exchanged {
        src: PathBuf,
        dst_dir: Arc<OwnedFd>,
        name: CString,
    },
}

fn conflict(rel: &str) -> ApiError {
    ApiError::conflict(
        "PATH_CONFLICT",
        format!("/app/{rel} is a directory; the upload has a file there"),
    )
    .with_details(json!({"path": rel}))
}

fn errno_error(e: Errno, rel: &str) -> ApiError {
    tracing::error!(error = %e, path = rel, "moving an uploaded file into place failed");
    ApiError::io(format!("moving /app/{rel} into place failed: {e}"))
        .with_details(json!({"path": rel}))
}

fn exchange(src: &Path, dst_dir: &OwnedFd, name: &CString) -> Result<(), Errno> {
    renameat_with(CWD, src, dst_dir, name.as_c_str(), RenameFlags::EXCHANGE)
}

fn move_in(src: &Path, dst_dir: &OwnedFd, name: &CString) -> Result<(), Errno> {
    renameat_with(CWD, src, dst_dir, name.as_c_str(), RenameFlags::NOREPLACE)
}

fn is_dir_at(path: &Path) -> Result<bool, Errno> {
    let st = statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

/// How many times a move is retried when the container changes the same name meanwhile.
const RACE_RETRIES: usize = 16;

fn merge(src_dir: &Path, dst: &Arc<OwnedFd>, rel: &str, journal: &mut Vec<Undo>) -> ApiResult<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(src_dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let src = src_dir.join(&name);
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let cname = CString::new(OsStr::as_bytes(&name)).map_err(|_| ApiError::io("bad name"))?;
        let src_is_dir = is_dir_at(&src).map_err(|e| errno_error(e, &child_rel))?;
        let mut done = false;
        for _ in 0..RACE_RETRIES {
            if src_is_dir {
                // An existing real directory (no symlink followed): merge into it.
                match confine::openat2_retry(
                    dst.as_ref(),
                    cname.as_c_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    confine::write_resolve(),
                ) {
                    Ok(fd) => {
                        merge(&src, &Arc::new(fd), &child_rel, journal)?;
                        done = true;
                        break;
                    }
                    Err(Errno::NOENT) => {}
                    Err(Errno::NOTDIR | Errno::LOOP) => {
                        // Something else is there: put the staged directory in its place.
                        match exchange(&src, dst, &cname) {
                            Ok(()) => {
                                if is_dir_at(&src).map_err(|e| errno_error(e, &child_rel))? {
                                    // Became a directory meanwhile: swap back and merge.
                                    exchange(&src, dst, &cname)
                                        .map_err(|e| errno_error(e, &child_rel))?;
                                    continue;
                                }
                                journal.push(Undo::Exchanged {
                                    src: src.clone(),
                                    dst_dir: dst.clone(),
                                    name: cname.clone(),
                                });
                                done = true;
                                break;
                            }
                            Err(Errno::NOENT) => continue,
                            Err(e) => return Err(errno_error(e, &child_rel)),
                        }
                    }
                    Err(e) => return Err(errno_error(e, &child_rel)),
                }
                match move_in(&src, dst, &cname) {
                    Ok(()) => {
                        journal.push(Undo::MovedIn {
                            src: src.clone(),
                            dst_dir: dst.clone(),
                            name: cname.clone(),
                        });
                        done = true;
                        break;
                    }
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(errno_error(e, &child_rel)),
                }
            } else {
                match move_in(&src, dst, &cname) {
                    Ok(()) => {
                        journal.push(Undo::MovedIn {
                            src: src.clone(),
                            dst_dir: dst.clone(),
                            name: cname.clone(),
                        });
                        done = true;
                        break;
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(errno_error(e, &child_rel)),
                }
                // Something is there: swap it out (a file, symlink, FIFO or hard link is
                // replaced as a name; its target is never touched).
                match exchange(&src, dst, &cname) {
                    Ok(()) => {
                        if is_dir_at(&src).map_err(|e| errno_error(e, &child_rel))? {
                            exchange(&src, dst, &cname).map_err(|e| errno_error(e, &child_rel))?;
                            return Err(conflict(&child_rel));
                        }
                        journal.push(Undo::Exchanged {
                            src: src.clone(),
                            dst_dir: dst.clone(),
                            name: cname.clone(),
                        });
                        done = true;
                        break;
                    }
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(errno_error(e, &child_rel)),
                }
            }
        }
        if !done {
            return Err(ApiError::conflict(
                "PATH_CONFLICT",
                format!("/app/{child_rel} kept changing while the upload was moved into place"),
            )
            .with_details(json!({"path": child_rel})));
        }
    }
    Ok(())
}

fn rollback(journal: Vec<Undo>) {
    for undo in journal.into_iter().rev() {
        let result = match &undo {
            Undo::MovedIn { src, dst_dir, name } => renameat_with(
                dst_dir.as_ref(),
                name.as_c_str(),
                CWD,
                src,
                RenameFlags::NOREPLACE,
            ),
            Undo::Exchanged { src, dst_dir, name } => exchange(src, dst_dir, name),
        };
        if let Err(e) = result {
            let (Undo::MovedIn { name, .. } | Undo::Exchanged { name, .. }) = &undo;
            tracing::error!(error = %e, name = ?name, "rolling back an upload move failed");
        }
    }
}

/// Merges the staged `tree` into the directory `root` (the container's `/app`), all or
/// nothing.
pub fn commit(tree: &Path, root: OwnedFd) -> ApiResult<()> {
    let mut journal = Vec::new();
    let root = Arc::new(root);
    match merge(tree, &root, "", &mut journal) {
        Ok(()) => Ok(()),
        Err(e) => {
            rollback(journal);
            Err(e)
        }
    }
}

/// The whole upload after the body is on disk: open, plan, extract, commit.
pub fn run(
    zip_path: &Path,
    tree: &Path,
    root: OwnedFd,
    prefix: &[String],
    owner: UserIds,
    limits: &Limits,
) -> ApiResult<Outcome> {
    let mut archive = open(zip_path, limits)?;
    let plan = plan(&archive, prefix, limits)?;
    std::fs::DirBuilder::new().mode(0o700).create(tree)?;
    let outcome = extract(&mut archive, &plan, tree, owner, limits)?;
    drop(archive);
    let _ = std::fs::remove_file(zip_path);
    commit(tree, root)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn zip_file(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        f
    }

    const ROOMY: Limits = Limits {
        max_entries: 100,
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
        assert_eq!(declared_entries(&mut f.reopen().unwrap()).unwrap(), 3);
        let mut g = tempfile::tempfile().unwrap();
        g.write_all(b"not a zip at all, not at all").unwrap();
        assert_eq!(declared_entries(&mut g).unwrap_err().code, "INVALID_ZIP");
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
    fn the_plan_puts_entries_under_the_prefix_and_finds_collisions() {
        let f = zip_file(&[("a/b.txt", b"1"), ("./c.txt", b"2")]);
        let archive = open(f.path(), &ROOMY).unwrap();
        let plan = plan(&archive, &["t".into()], &ROOMY).unwrap();
        let paths: Vec<String> = plan
            .entries
            .iter()
            .map(|e| e.components.join("/"))
            .collect();
        assert_eq!(paths, ["t/a/b.txt", "t/c.txt"]);
        assert!(plan
            .dirs
            .contains_key(&vec!["t".to_string(), "a".to_string()]));

        // A target path that is a file of the archive's own tree collides.
        let f = zip_file(&[("x", b"1"), ("x/y", b"2")]);
        let archive = open(f.path(), &ROOMY).unwrap();
        let e = super::plan(&archive, &[], &ROOMY).unwrap_err();
        assert_eq!(e.code, "DUPLICATE_ZIP_ENTRY");
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
        let tree = dir.path().join("t1");
        std::fs::create_dir(&tree).unwrap();
        let e = extract(&mut archive, &plan, &tree, me(), &strict).unwrap_err();
        assert_eq!(e.code, "ZIP_TOO_LARGE");
        let ratio = Limits {
            max_ratio: 100,
            ..ROOMY
        };
        let tree = dir.path().join("t2");
        std::fs::create_dir(&tree).unwrap();
        let e = extract(&mut archive, &plan, &tree, me(), &ratio).unwrap_err();
        assert_eq!(e.code, "ZIP_RATIO_EXCEEDED");
        // And under the plan's limits it goes through, byte for byte.
        let tree = dir.path().join("t3");
        std::fs::create_dir(&tree).unwrap();
        let out = extract(&mut archive, &plan, &tree, me(), &ROOMY).unwrap();
        assert_eq!(
            out,
            Outcome {
                files: 2,
                bytes: 3 + (3 << 20)
            }
        );
        assert_eq!(std::fs::read(tree.join("small")).unwrap(), b"abc");
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

        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("keep")).unwrap();
        std::fs::create_dir_all(tree.join("link")).unwrap();
        std::fs::write(tree.join("keep/new"), b"new").unwrap();
        std::fs::write(tree.join("link/in"), b"in").unwrap();
        std::fs::write(tree.join("file"), b"file").unwrap();
        let root = confine::open_root(&app, "c").unwrap();
        commit(&tree, root).unwrap();
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
        let tree = dir.path().join("tree2");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("a-new"), b"x").unwrap();
        std::fs::write(tree.join("file"), b"file2").unwrap();
        std::fs::write(tree.join("keep"), b"not a dir").unwrap();
        let root = confine::open_root(&app, "c").unwrap();
        let e = commit(&tree, root).unwrap_err();
        assert_eq!(e.code, "PATH_CONFLICT");
        assert!(!app.join("a-new").exists());
        assert_eq!(std::fs::read(app.join("file")).unwrap(), b"file");
        assert!(app.join("keep").is_dir());
    }
}
