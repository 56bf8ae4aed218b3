//! download-zip: a directory of `/app` written as a ZIP while it is read, into a bounded
//! channel that the HTTP body drains, so memory stays flat whatever the tree's size.
//!
//! The walk never follows a symlink (every entry is looked at with `O_NOFOLLOW`, directories
//! are opened relative to their parent's descriptor) and never opens a special file.
//! Symlinks are skipped (not stored), as are FIFOs, sockets and devices: every archive this
//! produces is one `upload-zip` accepts back. Entry names are relative to the requested
//! directory; directories get their own entries so empty ones survive a round trip.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustix::fs::{Dir, FileType};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::fs::confine::{self, Found};

/// Size of one body chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the writer thread and the HTTP body.
pub const CHANNEL_CHUNKS: usize = 4;

/// A `Write` that sends fixed-size chunks into a bounded channel, blocking the (blocking-pool)
/// writer thread while the client is slower than the walk. Fails once the body is dropped
/// (the client went away), which stops the walk.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len().min(CHUNK_BYTES);
        let n = data.len().min(room.max(1));
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn zip_err(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn mtime(st: &rustix::fs::Stat) -> zip::DateTime {
    chrono::DateTime::from_timestamp(st.st_mtime, 0)
        .and_then(|t| {
            use chrono::{Datelike, Timelike};
            zip::DateTime::from_date_and_time(
                u16::try_from(t.year()).ok()?,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// A directory still to be written: its parent's descriptor (kept open by the pending
/// children only, so open descriptors stay about the depth of the tree) and its name.
struct Pending {
    parent: Arc<OwnedFd>,
    name: CString,
    /// Entry name prefix, ending with `/`.
    prefix: String,
}

/// What a finished walk wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub files: u64,
    pub dirs: u64,
    pub skipped: u64,
}

/// Writes the tree under `root` (an open directory) as a streamed ZIP into `out`.
pub fn write_tree<W: Write>(root: OwnedFd, out: W) -> io::Result<Written> {
    let mut zip = ZipWriter::new_stream(out);
    let mut stats = Written::default();
    let mut buf = vec![0u8; 128 * 1024];
    // (directory descriptor, entry name prefix) of the directory being listed.
    let mut current: Option<(Arc<OwnedFd>, String)> = Some((Arc::new(root), String::new()));
    let mut stack: Vec<Pending> = Vec::new();
    loop {
        let (dir, prefix) = match current.take() {
            Some(c) => c,
            None => {
                let Some(p) = stack.pop() else { break };
                match confine::open_entry_nofollow(p.parent.as_ref(), &p.name)? {
                    Some(Found::Dir(fd)) => {
                        let st = rustix::fs::fstat(&fd)?;
                        let opts = SimpleFileOptions::default()
                            .unix_permissions(st.st_mode & 0o1777)
                            .last_modified_time(mtime(&st));
                        zip.add_directory(p.prefix.clone(), opts).map_err(zip_err)?;
                        stats.dirs += 1;
                        (Arc::new(fd), p.prefix)
                    }
                    // Replaced or removed meanwhile: skip it.
                    _ => continue,
                }
            }
        };
        let mut names: Vec<CString> = Vec::new();
        for entry in Dir::read_from(dir.as_ref())? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            names.push(name.to_owned());
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let Ok(text) = name.to_str() else {
                tracing::warn!(name = ?name, "download-zip: skipping a name that is not UTF-8");
                stats.skipped += 1;
                continue;
            };
            let entry_name = format!("{prefix}{text}");
            if entry_name.len() > confine::MAX_PATH_BYTES {
                stats.skipped += 1;
                continue;
            }
            let st = match rustix::fs::statat(
                dir.as_ref(),
                name.as_c_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => subdirs.push(Pending {
                    parent: dir.clone(),
                    name,
                    prefix: format!("{entry_name}/"),
                }),
                FileType::RegularFile => {
                    let Some(Found::File(file, size)) =
                        confine::open_entry_nofollow(dir.as_ref(), &name)?
                    else {
                        stats.skipped += 1;
                        continue;
                    };
                    let st = rustix::fs::fstat(&file)?;
                    let opts = SimpleFileOptions::default()
                        .compression_method(CompressionMethod::Deflated)
                        .unix_permissions(st.st_mode & 0o777)
                        .last_modified_time(mtime(&st))
                        .large_file(size >= 0xF000_0000);
                    zip.start_file(entry_name, opts).map_err(zip_err)?;
                    // The size when opened: a file that grows meanwhile is cut there.
                    let mut reader = file.take(size);
                    loop {
                        let n = match reader.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        };
                        zip.write_all(&buf[..n])?;
                    }
                    stats.files += 1;
                }
                // Symlinks, FIFOs, sockets, devices.
                _ => stats.skipped += 1,
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    let mut out = zip.finish().map_err(zip_err)?;
    out.flush()?;
    Ok(stats)
}

/// Runs [`write_tree`] on the blocking pool and returns the receiving end of its chunks; an
/// error mid-way is sent as the last item (the client sees a cut-off body).
pub fn spawn(root: OwnedFd) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter::new(tx.clone());
        match write_tree(root, writer) {
            Ok(w) => tracing::debug!(
                files = w.files,
                dirs = w.dirs,
                skipped = w.skipped,
                "download-zip done"
            ),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!("download-zip: the client went away")
            }
            Err(e) => {
                tracing::error!(error = %e, "download-zip failed mid-way");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}
