//! download-zip: a directory of `/app` written as a ZIP while it is read, into a bounded
//! channel that the HTTP body drains, so memory stays flat whatever the tree's size.
//!
//! The walk never follows a symlink (directories are opened beneath the requested one with
//! `RESOLVE_NO_SYMLINKS`, entries looked at with `O_NOFOLLOW`) and never opens a special file.
//! Symlinks are skipped (not stored), as are FIFOs, sockets and devices: every archive this
//! produces is one `upload-zip` accepts back. Entry names are relative to the requested
//! directory; directories get their own entries so empty ones survive a round trip.
//!
//! The container may change the tree while it is read, so:
//! - **Bounded.** An archive holds at most `ZIP_MAX_ENTRIES` entries and `ZIP_MAX_INFLATED_BYTES`
//!   bytes of file content (apparent sizes: a sparse 10 GB file counts 10 GB). The zip writer
//!   keeps every entry's name and record until the central directory, so the entry cap is what
//!   bounds the walk's memory. Past a cap the archive ends cleanly (a valid ZIP with what fit),
//!   with the archive comment saying why and the trailer [`TRUNCATED_TRAILER`] (sent to clients
//!   that asked for trailers with `TE: trailers`).
//! - **Names stored once.** The walk keeps the names of the directories from the top to the
//!   one it lists, and one name per directory waiting on the stack (with its depth), never a
//!   full prefix per directory; it holds two descriptors (the top and the directory listed),
//!   reopening each directory by its path beneath the top, so the depth costs no descriptors.
//! - **Hard links.** A file's bytes are stored once per inode: a later name of an inode with
//!   several links already stored is skipped with a log line (upload-zip has no hard links;
//!   storing the bytes again would let a container multiply one file into an archive of any
//!   size). At most [`MAX_LINKED_INODES`] such inodes are remembered; past that, later names
//!   are stored again (still under the byte cap).
//! - **Races.** A name a racing listing returns twice is stored once (a ZIP must not hold a
//!   name twice); entries that vanish are skipped; a directory renamed mid-walk is read where
//!   its path leads when it is opened.
//!
//! The walk holds a blocking-pool thread for the whole transfer, so the handler runs at most
//! [`crate::appdir::MAX_PARALLEL_DOWNLOAD_ZIPS`] at once (later ones wait for a permit), and a
//! client that makes the walk wait on it for more than a total stall budget ([`Stall`]) ends
//! its walk. A directory is listed in batches of [`LIST_BATCH`] names (each batch in name
//! order), never all at once.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustix::fs::{Dir, FileType, OFlags};
use rustix::io::Errno;
use tokio::sync::{mpsc, oneshot};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::appdir::confine::{self, Found};

/// Size of one body chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the writer thread and the HTTP body.
pub const CHANNEL_CHUNKS: usize = 4;
/// Names of one directory read and sorted at a time.
pub const LIST_BATCH: usize = 4096;
/// Inodes with several links remembered per archive (16 bytes each, plus the set's slack).
pub const MAX_LINKED_INODES: usize = 100_000;
/// The trailer naming the cap an archive was cut at: `entries` or `bytes`.
pub const TRUNCATED_TRAILER: &str = "x-archive-truncated";

/// How long the walk may wait on a slow client, in total: `budget` to start with, earning
/// back `credit_per_chunk` for every chunk the client takes (never above `budget`). A client
/// that keeps up at `CHUNK_BYTES / credit_per_chunk` on average never runs out; one that
/// trickles (a chunk every 29 s would pass any per-chunk timeout of 30 s) soon does.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub budget: Duration,
    pub credit_per_chunk: Duration,
}

impl Stall {
    /// 30 s of waiting in total, and 1 s back per 64 KiB taken: a client must average at
    /// least 64 KiB/s once its 30 s of slack are spent.
    pub const DEFAULT: Stall = Stall {
        budget: Duration::from_secs(30),
        credit_per_chunk: Duration::from_secs(1),
    };
}

/// A `Write` that sends fixed-size chunks into a bounded channel, blocking the (blocking-pool)
/// writer thread while the client is slower than the walk, within the [`Stall`] budget (then
/// `TimedOut`). Fails once the body is dropped (the client went away). Either stops the walk.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    runtime: tokio::runtime::Handle,
    stall: Stall,
    /// What is left of the stall budget.
    left: Duration,
    /// A send failed: every later write fails at once (the ZIP writer finishes its archive
    /// when dropped after an error; that must not wait on the client again).
    failed: bool,
}

impl ChannelWriter {
    /// For use on a blocking-pool thread (or any thread outside the runtime) of `runtime`.
    pub fn new(
        tx: mpsc::Sender<io::Result<Bytes>>,
        runtime: tokio::runtime::Handle,
        stall: Stall,
    ) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
            runtime,
            stall,
            left: stall.budget,
            failed: false,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(gone());
        }
        let sent = self.send_buffered();
        self.failed = sent.is_err();
        sent
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        let chunk = match self.tx.try_send(Ok(chunk)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
            Err(mpsc::error::TrySendError::Full(chunk)) => Some(chunk),
        };
        if let Some(chunk) = chunk {
            // The channel is full: the client is the bottleneck. Wait, on the budget.
            let (tx, left) = (&self.tx, self.left);
            let started = Instant::now();
            // The timer is made inside `block_on`, where the runtime's context is entered.
            let sent = self
                .runtime
                .block_on(async { tokio::time::timeout(left, tx.send(chunk)).await });
            self.left = self.left.saturating_sub(started.elapsed());
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(gone()),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))
                }
            }
        }
        self.left = (self.left + self.stall.credit_per_chunk).min(self.stall.budget);
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(gone());
        }
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

/// The caps of one archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            max_entries: c.zip_max_entries,
            max_bytes: c.zip_max_inflated_bytes,
        }
    }
}

/// Which cap ended an archive early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncated {
    Entries,
    Bytes,
}

impl Truncated {
    /// The trailer's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Truncated::Entries => "entries",
            Truncated::Bytes => "bytes",
        }
    }
}

/// What a finished walk wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub skipped: u64,
    /// Later names of an inode already stored.
    pub links: u64,
    pub truncated: Option<Truncated>,
}

/// A directory waiting to be listed: its name, and how many names its parent's path has
/// (the walk's `chain` is cut back to that before the name is added).
struct Pending {
    depth: usize,
    name: Box<str>,
}

/// Outcome of listing one directory.
enum Listed {
    Done,
    Truncated(Truncated),
}

/// The walk's state: what is written so far and what is remembered to keep it bounded.
struct Walk<'a, W: Write> {
    zip: ZipWriter<zip::write::StreamWriter<W>>,
    limits: &'a Limits,
    stats: Written,
    /// Inodes with several links already stored.
    linked: HashSet<(u64, u64)>,
    /// Names looked at, written or not: a container that keeps making names the archive
    /// skips (symlinks, FIFOs) must not keep the walk going for ever.
    examined: u64,
    buf: Vec<u8>,
}

/// Writes the tree under `root` (an open directory) as a streamed ZIP into `out`, within
/// `limits`.
pub fn write_tree<W: Write>(root: OwnedFd, out: W, limits: &Limits) -> io::Result<Written> {
    let mut walk = Walk {
        zip: ZipWriter::new_stream(out),
        limits,
        stats: Written::default(),
        linked: HashSet::new(),
        examined: 0,
        buf: vec![0u8; 128 * 1024],
    };
    // Names from the top to the directory being listed.
    let mut chain: Vec<Box<str>> = Vec::new();
    let mut stack: Vec<Pending> = Vec::new();
    let mut current = Some(confine::openat2_retry(
        &root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        confine::write_resolve(),
    )?);
    let truncated = loop {
        let dir = match current.take() {
            Some(dir) => dir,
            None => {
                let Some(p) = stack.pop() else { break None };
                chain.truncate(p.depth);
                chain.push(p.name);
                let path = chain.join("/");
                match confine::openat2_retry(
                    &root,
                    path.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    confine::write_resolve(),
                ) {
                    Ok(fd) => {
                        let st = rustix::fs::fstat(&fd)?;
                        let opts = SimpleFileOptions::default()
                            .unix_permissions(st.st_mode & 0o1777)
                            .last_modified_time(mtime(&st));
                        walk.zip
                            .add_directory(format!("{path}/"), opts)
                            .map_err(zip_err)?;
                        walk.stats.dirs += 1;
                        fd
                    }
                    // Removed, replaced by a file or a symlink, or moved meanwhile: skipped.
                    Err(
                        Errno::NOENT
                        | Errno::NOTDIR
                        | Errno::LOOP
                        | Errno::XDEV
                        | Errno::NAMETOOLONG
                        | Errno::AGAIN,
                    ) => {
                        walk.stats.skipped += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut prefix = chain.join("/");
        if !prefix.is_empty() {
            prefix.push('/');
        }
        if let Listed::Truncated(t) = walk.list(&dir, &prefix, chain.len(), &mut stack)? {
            break Some(t);
        }
    };
    walk.stats.truncated = truncated;
    if let Some(t) = truncated {
        let why = match t {
            Truncated::Entries => format!(
                "truncated: the directory has more than {} entries (ZIP_MAX_ENTRIES)",
                limits.max_entries
            ),
            Truncated::Bytes => format!(
                "truncated: the files add up to more than {} bytes (ZIP_MAX_INFLATED_BYTES)",
                limits.max_bytes
            ),
        };
        walk.zip.set_comment(why).map_err(zip_err)?;
    }
    let stats = walk.stats;
    let mut out = walk.zip.finish().map_err(zip_err)?;
    out.flush()?;
    Ok(stats)
}

impl<W: Write> Walk<'_, W> {
    /// Whether one more entry fits, counting the directories waiting on the stack (each will
    /// be an entry).
    fn room_for_entry(&self, waiting: usize) -> bool {
        self.stats.files + self.stats.dirs + (waiting as u64) < self.limits.max_entries
    }

    /// Lists `dir` (whose entry names start with `prefix`, `depth` names deep): files are
    /// written, subdirectories pushed on `stack`.
    fn list(
        &mut self,
        dir: &OwnedFd,
        prefix: &str,
        depth: usize,
        stack: &mut Vec<Pending>,
    ) -> io::Result<Listed> {
        let mut subdirs: Vec<Pending> = Vec::new();
        // Names of this directory already handled: a racing listing may return one twice.
        let mut seen: HashSet<Box<str>> = HashSet::new();
        let mut listing = Dir::read_from(dir)?;
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
                self.examined += 1;
                if self.examined > self.limits.max_entries.saturating_mul(4) + LIST_BATCH as u64 {
                    return Ok(Listed::Truncated(Truncated::Entries));
                }
                let Ok(text) = name.to_str() else {
                    tracing::warn!(name = ?name, "download-zip: skipping a name that is not UTF-8");
                    self.stats.skipped += 1;
                    continue;
                };
                if prefix.len() + text.len() > confine::MAX_PATH_BYTES {
                    self.stats.skipped += 1;
                    continue;
                }
                if seen.contains(text) {
                    tracing::debug!(entry = %format!("{prefix}{text}"), "download-zip: a name listed twice is stored once");
                    continue;
                }
                let st = match rustix::fs::statat(
                    dir,
                    name.as_c_str(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        if !self.room_for_entry(stack.len() + subdirs.len()) {
                            return Ok(Listed::Truncated(Truncated::Entries));
                        }
                        seen.insert(text.into());
                        subdirs.push(Pending {
                            depth,
                            name: text.into(),
                        });
                    }
                    FileType::RegularFile => {
                        if !self.room_for_entry(stack.len() + subdirs.len()) {
                            return Ok(Listed::Truncated(Truncated::Entries));
                        }
                        seen.insert(text.into());
                        if let Some(t) = self.file(dir, &name, prefix, text)? {
                            return Ok(Listed::Truncated(t));
                        }
                    }
                    // Symlinks, FIFOs, sockets, devices.
                    _ => self.stats.skipped += 1,
                }
            }
        }
        // Depth first, in name order (within a batch).
        stack.extend(subdirs.into_iter().rev());
        Ok(Listed::Done)
    }

    /// Writes the regular file `name` of `dir`, unless it is a later link of an inode already
    /// stored; `Some` when it does not fit under the byte cap (nothing of it is written).
    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &CString,
        prefix: &str,
        text: &str,
    ) -> io::Result<Option<Truncated>> {
        let (file, size) = match confine::open_entry_nofollow(dir, name)? {
            Some(Found::File(file, size)) => (file, size),
            Some(Found::Busy) => {
                tracing::warn!(entry = %format!("{prefix}{text}"), "download-zip: skipping a file under a lease");
                self.stats.skipped += 1;
                return Ok(None);
            }
            _ => {
                self.stats.skipped += 1;
                return Ok(None);
            }
        };
        let st = rustix::fs::fstat(&file)?;
        let inode = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 && self.linked.contains(&inode) {
            tracing::info!(entry = %format!("{prefix}{text}"), "download-zip: skipping another link to a file already stored");
            self.stats.links += 1;
            return Ok(None);
        }
        // Apparent size: a sparse file counts all of it.
        if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
            return Ok(Some(Truncated::Bytes));
        }
        if st.st_nlink > 1 && self.linked.len() < MAX_LINKED_INODES {
            self.linked.insert(inode);
        }
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(st.st_mode & 0o777)
            .last_modified_time(mtime(&st))
            .large_file(size >= 0xF000_0000);
        self.zip
            .start_file(format!("{prefix}{text}"), opts)
            .map_err(zip_err)?;
        // The size when opened: a file that grows meanwhile is cut there.
        let mut reader = file.take(size);
        loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.zip.write_all(&self.buf[..n])?;
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(None)
    }
}

/// Runs [`write_tree`] on the blocking pool and returns the receiving end of its chunks,
/// and of the cap that cut it short, if any (sent once the archive is complete). An error
/// mid-way is sent as the last item when there is room (the client sees a cut-off body).
/// `permit` (one of [`crate::appdir::MAX_PARALLEL_DOWNLOAD_ZIPS`]) is held until the walk ends.
/// To be called from the runtime.
pub fn spawn(
    root: OwnedFd,
    permit: tokio::sync::OwnedSemaphorePermit,
    limits: Limits,
) -> (
    mpsc::Receiver<io::Result<Bytes>>,
    oneshot::Receiver<Truncated>,
) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (cut_tx, cut_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let writer = ChannelWriter::new(tx.clone(), runtime.clone(), Stall::DEFAULT);
        match write_tree(root, writer, &limits) {
            Ok(w) => {
                tracing::debug!(
                    files = w.files,
                    dirs = w.dirs,
                    bytes = w.bytes,
                    skipped = w.skipped,
                    links = w.links,
                    truncated = w.truncated.map(Truncated::as_str),
                    "download-zip done"
                );
                if let Some(t) = w.truncated {
                    tracing::info!(cap = t.as_str(), "download-zip: archive cut at a cap");
                    let _ = cut_tx.send(t);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!("download-zip: the client went away")
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    tracing::info!(
                        "download-zip: the client kept the walk waiting too long; walk ended"
                    )
                } else {
                    tracing::error!(error = %e, "download-zip failed mid-way");
                }
                // The error as the body's last item, so the response is cut off (the client
                // sees a broken transfer, not a clean end); a client that reads nothing
                // more is not waited for long.
                let _ = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), tx.send(Err(e))).await
                });
            }
        }
    });
    (rx, cut_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap()
    }

    /// Writes `chunks` chunks through a writer with `stall` on another thread; returns the
    /// result and the receiving end.
    fn write_chunks(
        rt: &tokio::runtime::Runtime,
        stall: Stall,
        chunks: usize,
    ) -> (
        std::sync::mpsc::Receiver<io::Result<()>>,
        mpsc::Receiver<io::Result<Bytes>>,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let handle = rt.handle().clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx, handle, stall);
            let chunk = vec![7u8; CHUNK_BYTES];
            let result = (0..chunks).try_for_each(|_| w.write_all(&chunk));
            let _ = done_tx.send(result);
        });
        (done_rx, rx)
    }

    /// A client that stops reading ends the walk once the stall budget is spent instead of
    /// holding the blocking thread for ever.
    #[test]
    fn a_stalled_reader_times_the_writer_out() {
        let rt = runtime();
        let stall = Stall {
            budget: Duration::from_millis(200),
            credit_per_chunk: Duration::ZERO,
        };
        let (done, rx) = write_chunks(&rt, stall, 8);
        let result = done
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer is still blocked");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(rx);
    }

    /// A client that takes a chunk every 150 ms never makes one wait reach the 600 ms budget
    /// (a per-chunk timeout would let it trickle for ever), but the waits add up: the walk
    /// ends after a handful of chunks.
    #[test]
    fn a_trickling_reader_spends_the_total_budget() {
        let rt = runtime();
        let stall = Stall {
            budget: Duration::from_millis(600),
            credit_per_chunk: Duration::ZERO,
        };
        let (done, mut rx) = write_chunks(&rt, stall, 100);
        let mut taken = 0;
        let result = loop {
            if let Ok(result) = done.try_recv() {
                break result;
            }
            assert!(taken < 100, "the writer never timed out");
            std::thread::sleep(Duration::from_millis(150));
            if rx.try_recv().is_ok() {
                taken += 1;
            }
        };
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(taken < 20, "{taken} chunks taken before the budget ran out");
    }

    /// A client that keeps up with the credit rate is never cut, however long it takes.
    #[test]
    fn a_steady_reader_earns_its_budget_back() {
        let rt = runtime();
        let stall = Stall {
            budget: Duration::from_millis(300),
            credit_per_chunk: Duration::from_millis(300),
        };
        let (done, mut rx) = write_chunks(&rt, stall, 20);
        let mut taken = 0;
        // 20 chunks at one per 100 ms: 2 s of waiting in total, far over the 300 ms budget.
        while taken < 20 {
            std::thread::sleep(Duration::from_millis(100));
            if rx.try_recv().is_ok() {
                taken += 1;
            }
        }
        done.recv_timeout(Duration::from_secs(10))
            .expect("the writer is still blocked")
            .unwrap();
    }

    fn zip_of_dir(dir: &std::path::Path, limits: Limits) -> (Written, Vec<u8>) {
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut out = Vec::new();
        let w = write_tree(root, &mut out, &limits).unwrap();
        (w, out)
    }

    const ROOMY: Limits = Limits {
        max_entries: 20_000,
        max_bytes: 1 << 30,
    };

    /// A 1 MB file with 50 names is read and stored once.
    #[test]
    fn hard_links_are_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(tmp.path().join("big"), &data).unwrap();
        std::fs::create_dir(tmp.path().join("l")).unwrap();
        for i in 0..50 {
            std::fs::hard_link(tmp.path().join("big"), tmp.path().join(format!("l/{i}"))).unwrap();
        }
        let (w, out) = zip_of_dir(tmp.path(), ROOMY);
        assert_eq!((w.files, w.links, w.bytes), (1, 50, 1_000_000));
        let mut a = zip::ZipArchive::new(io::Cursor::new(out)).unwrap();
        assert_eq!(a.len(), 2, "the directory and one file");
        let mut f = a.by_name("big").unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    /// Past the entry cap the archive ends cleanly, says so in its comment, and holds no
    /// more than the cap.
    #[test]
    fn the_entry_cap_ends_the_archive_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        for d in 0..5 {
            std::fs::create_dir(tmp.path().join(format!("d{d}"))).unwrap();
            for f in 0..20 {
                std::fs::write(tmp.path().join(format!("d{d}/f{f}")), b"x").unwrap();
            }
        }
        let limits = Limits {
            max_entries: 30,
            max_bytes: 1 << 30,
        };
        let (w, out) = zip_of_dir(tmp.path(), limits);
        assert_eq!(w.truncated, Some(Truncated::Entries));
        let a = zip::ZipArchive::new(io::Cursor::new(out)).unwrap();
        assert!(a.len() <= 30 && a.len() >= 20, "{}", a.len());
        let comment = String::from_utf8_lossy(a.comment()).into_owned();
        assert!(comment.contains("ZIP_MAX_ENTRIES"), "{comment}");
    }

    /// A 10 GB sparse file counts 10 GB against the byte cap: it is not read, and the archive
    /// ends cleanly with what came before it.
    #[test]
    fn a_sparse_file_counts_its_apparent_size() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a-small"), b"small").unwrap();
        let sparse = std::fs::File::create(tmp.path().join("b-sparse")).unwrap();
        sparse.set_len(10 << 30).unwrap();
        let limits = Limits {
            max_entries: 100,
            max_bytes: 1 << 20,
        };
        let (w, out) = zip_of_dir(tmp.path(), limits);
        assert_eq!(w.truncated, Some(Truncated::Bytes));
        let mut a = zip::ZipArchive::new(io::Cursor::new(out)).unwrap();
        assert_eq!(a.len(), 1);
        assert!(a.by_name("a-small").is_ok());
        let comment = String::from_utf8_lossy(a.comment()).into_owned();
        assert!(comment.contains("ZIP_MAX_INFLATED_BYTES"), "{comment}");
    }
}
