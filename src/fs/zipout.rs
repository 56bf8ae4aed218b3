//! download-zip: a directory of `/app` written as a ZIP while it is read, into a bounded
//! channel that the HTTP body drains, so memory stays flat whatever the tree's size.
//!
//! The walk never follows a symlink (every entry is looked at with `O_NOFOLLOW`, directories
//! are opened relative to their parent's descriptor) and never opens a special file.
//! Symlinks are skipped (not stored), as are FIFOs, sockets and devices: every archive this
//! produces is one `upload-zip` accepts back. Entry names are relative to the requested
//! directory; directories get their own entries so empty ones survive a round trip.
//!
//! The walk holds a blocking-pool thread for the whole transfer, so: the handler runs at most
//! [`crate::fs::MAX_PARALLEL_DOWNLOAD_ZIPS`] at once (later ones wait for a permit), and a
//! client that reads nothing for [`SEND_TIMEOUT`] ends its walk. A directory is listed in
//! batches of [`LIST_BATCH`] names (each batch in name order), never all at once; its
//! subdirectories wait on a stack, one small record each.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

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
/// How long a chunk may wait for the client to take it before the walk gives up.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Names of one directory read and sorted at a time.
pub const LIST_BATCH: usize = 4096;

/// A `Write` that sends fixed-size chunks into a bounded channel, blocking the (blocking-pool)
/// writer thread while the client is slower than the walk, for at most `timeout` per chunk
/// (then `TimedOut`). Fails once the body is dropped (the client went away). Either stops the
/// walk.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl ChannelWriter {
    /// For use on a blocking-pool thread (or any thread outside the runtime) of `runtime`.
    pub fn new(
        tx: mpsc::Sender<io::Result<Bytes>>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
            runtime,
            timeout,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        let (tx, timeout) = (&self.tx, self.timeout);
        // The timer is made inside `block_on`, where the runtime's context is entered.
        let sent = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, tx.send(Ok(chunk))).await });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
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
        let mut subdirs = Vec::new();
        let mut listing = Dir::read_from(dir.as_ref())?;
        loop {
            let mut names: Vec<CString> = Vec::new();
            for entry in listing.by_ref() {
                let entry = entry?;
                let name = entry.file_name();
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                names.push(name.to_owned());
                if names.len() == LIST_BATCH {
                    break;
                }
            }
            if names.is_empty() {
                break;
            }
            names.sort();
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
                        let (file, size) = match confine::open_entry_nofollow(dir.as_ref(), &name)?
                        {
                            Some(Found::File(file, size)) => (file, size),
                            Some(Found::Busy) => {
                                tracing::warn!(entry = %entry_name, "download-zip: skipping a file under a lease");
                                stats.skipped += 1;
                                continue;
                            }
                            _ => {
                                stats.skipped += 1;
                                continue;
                            }
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
        }
        // Depth first, in name order (within a batch).
        stack.extend(subdirs.into_iter().rev());
    }
    let mut out = zip.finish().map_err(zip_err)?;
    out.flush()?;
    Ok(stats)
}

/// Runs [`write_tree`] on the blocking pool and returns the receiving end of its chunks; an
/// error mid-way is sent as the last item when there is room (the client sees a cut-off
/// body). `permit` (one of [`crate::fs::MAX_PARALLEL_DOWNLOAD_ZIPS`]) is held until the walk
/// ends. To be called from the runtime.
pub fn spawn(
    root: OwnedFd,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let writer = ChannelWriter::new(tx.clone(), runtime, SEND_TIMEOUT);
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
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                tracing::info!("download-zip: the client stopped reading; walk ended")
            }
            Err(e) => {
                tracing::error!(error = %e, "download-zip failed mid-way");
                let _ = tx.try_send(Err(e));
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that stops reading ends the walk after the send timeout instead of holding
    /// the blocking thread for ever.
    #[test]
    fn a_stalled_reader_times_the_writer_out() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel(1);
        let handle = rt.handle().clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx, handle, Duration::from_millis(200));
            let chunk = vec![7u8; CHUNK_BYTES];
            let result = (0..8).try_for_each(|_| w.write_all(&chunk));
            let _ = done_tx.send(result);
        });
        let result = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer is still blocked");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(rx);
    }
}
