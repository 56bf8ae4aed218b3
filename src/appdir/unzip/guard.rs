//! The archive's own structure, checked before the ZIP library indexes it: the end records
//! (entry count, central directory size and place) and a walk over the directory's
//! fixed-size headers. A forged count, an oversized directory or huge names must not cost
//! memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::json;
use zip::ZipArchive;

use super::{invalid_zip, too_large, too_many, unsafe_entry, Limits};
use crate::appdir::confine::MAX_PATH_BYTES;
use crate::appdir::error::{Error, FilesResult, Reason};

pub(super) fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().unwrap_or_default(),
    ))
}

pub(super) fn le64(b: &[u8], at: usize) -> u64 {
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
pub(super) const MAX_ZIP64_EXTENSIBLE_BYTES: u64 = 64 * 1024;

pub(super) const EOCD_LEN: usize = 22;
pub(super) const ZIP64_LOCATOR_LEN: u64 = 20;
pub(super) const ZIP64_EOCD_LEN: u64 = 56;
pub(super) const CENTRAL_HEADER_LEN: u64 = 46;
pub(super) const SIG_EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
pub(super) const SIG_ZIP64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
pub(super) const SIG_ZIP64_EOCD: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
pub(super) const SIG_CENTRAL: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];

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

pub(super) fn directory_too_large(size: u64) -> Error {
    too_large(
        Reason::ZipDirectoryTooLarge,
        format!("the archive's central directory takes {size} bytes, over the limit of {MAX_DIRECTORY_BYTES}"),
        json!({"directory_bytes": size, "limit": MAX_DIRECTORY_BYTES}),
    )
}

pub(super) fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> FilesResult<bool> {
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
pub fn end_record(file: &mut File) -> FilesResult<Directory> {
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

pub(super) fn truncated(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        invalid_zip("the archive is truncated")
    } else {
        e.into()
    }
}

/// Walks the central directory's headers (reading 46 bytes of each, holding nothing), checking
/// that the declared number of entries fits in the declared size and that no name is over
/// [`MAX_ENTRY_NAME_BYTES`].
pub fn walk_directory(file: &mut File, dir: &Directory) -> FilesResult<()> {
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
pub fn open(path: &Path, limits: &Limits) -> FilesResult<ZipArchive<File>> {
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
