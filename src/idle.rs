//! Idle tracking (docs/API.md, idle): what counts as use of a container, kept in memory.
//!
//! - A request that names a container (its actions, files, logs, stats, terminal) is use:
//!   the HTTP layer calls [`Tracker::touch`] when it arrives. No database write per request.
//! - An open terminal is use for as long as it is open ([`Tracker::terminal`]).
//! - Traffic is use: the bytes the container sent, read from its network namespace's
//!   counters (`/proc/<pid>/net/dev`, [`sent_bytes`]) by one sampler for all containers
//!   (`reconcile::idle`). Only what it *sent* counts: every exchange with it makes it send
//!   (a TCP handshake, an answer), while what it merely receives includes the bridge's
//!   broadcasts (its neighbours' ARP), which would keep every container awake.
//!
//! All clocks live in this process: after a restart they start again from the server's start
//! (RELIABILITY.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the tracker knows of one container.
#[derive(Default)]
struct Entry {
    last_use: Option<Instant>,
    terminals: u32,
    /// Held by the sampler from its last look at the clock until its pause or stop is
    /// committed; a request's [`Tracker::touch`] waits for it, so it either is seen before
    /// the decision or reads the row the decision wrote (and resumes the container).
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// Use of each container, by cuid.
#[derive(Default)]
pub struct Tracker {
    entries: Mutex<HashMap<String, Entry>>,
}

/// A container's use as the sampler sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Use {
    pub last_use: Option<Instant>,
    pub terminals: u32,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gate_of(&self, cuid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock().entry(cuid.to_owned()).or_default().gate.clone()
    }

    /// A request named `cuid`: its idle clock starts again. Waits while the sampler is
    /// deciding about it (milliseconds: one row write).
    pub async fn touch(&self, cuid: &str) {
        let gate = self.gate_of(cuid);
        let _held = gate.lock().await;
        self.lock().entry(cuid.to_owned()).or_default().last_use = Some(Instant::now());
    }

    /// A terminal opened on `cuid`: in use until the guard is dropped (and its clock starts
    /// from then).
    pub fn terminal(self: &Arc<Self>, cuid: &str) -> TerminalGuard {
        let mut entries = self.lock();
        let e = entries.entry(cuid.to_owned()).or_default();
        e.terminals += 1;
        e.last_use = Some(Instant::now());
        TerminalGuard {
            tracker: self.clone(),
            cuid: cuid.to_owned(),
        }
    }

    /// The use of `cuid` now.
    pub fn use_of(&self, cuid: &str) -> Use {
        self.lock()
            .get(cuid)
            .map(|e| Use {
                last_use: e.last_use,
                terminals: e.terminals,
            })
            .unwrap_or_default()
    }

    /// The sampler's hold on `cuid` while it decides (see [`Entry::gate`]); `None` while a
    /// request holds it (the container is being used: no decision now).
    pub fn try_gate(&self, cuid: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.gate_of(cuid).try_lock_owned().ok()
    }

    /// Forgets the containers not in `known` (deleted ones), unless a terminal is open.
    pub fn retain(&self, known: &HashSet<String>) {
        self.lock()
            .retain(|cuid, e| known.contains(cuid) || e.terminals > 0);
    }

    /// How many containers it holds (tests, bench).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open terminal (see [`Tracker::terminal`]).
pub struct TerminalGuard {
    tracker: Arc<Tracker>,
    cuid: String,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let mut entries = self.tracker.lock();
        if let Some(e) = entries.get_mut(&self.cuid) {
            e.terminals = e.terminals.saturating_sub(1);
            e.last_use = Some(Instant::now());
        }
    }
}

/// Whether a container is idle: no terminal open, and neither a request nor traffic for
/// `after`. `quiet_since` is when its sent-bytes counter last moved, or when the sampler
/// first saw it running (server start, start, unpause, restart).
pub fn is_idle(now: Instant, after: Duration, quiet_since: Instant, used: Use) -> bool {
    if used.terminals > 0 {
        return false;
    }
    let last = used.last_use.map_or(quiet_since, |u| u.max(quiet_since));
    now.saturating_duration_since(last) >= after
}

/// The bytes sent by the network namespace of `pid` on all its interfaces but `lo`, from
/// `/proc/<pid>/net/dev`. `buf` is reused between calls (no allocation per read).
pub fn sent_bytes(pid: u32, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(format!("/proc/{pid}/net/dev"))?.read_to_end(buf)?;
    parse_sent(buf).ok_or_else(|| std::io::Error::other("unexpected /proc/net/dev format"))
}

/// The sum of the transmitted bytes of `/proc/net/dev` (all interfaces but `lo`).
pub fn parse_sent(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let mut total = 0u64;
    let mut lines = 0;
    for line in text.lines().skip(2) {
        let (name, numbers) = line.split_once(':')?;
        lines += 1;
        if name.trim() == "lo" {
            continue;
        }
        // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes …
        let tx = numbers
            .split_ascii_whitespace()
            .nth(8)?
            .parse::<u64>()
            .ok()?;
        total = total.wrapping_add(tx);
    }
    (lines > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0:    9000      50    0    0    0     0          0         7     4200      30    0    0    0     0       0          0
";

    #[test]
    fn sent_bytes_leave_out_loopback() {
        assert_eq!(parse_sent(DEV.as_bytes()), Some(4200));
        assert_eq!(parse_sent(b"garbage"), None);
        assert_eq!(parse_sent(b"a\nb\n"), None);
    }

    #[test]
    fn this_process_has_counters() {
        let mut buf = Vec::new();
        assert!(sent_bytes(std::process::id(), &mut buf).is_ok());
    }

    #[test]
    fn idle_only_after_the_latest_use_or_traffic() {
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let none = Use::default();
        // Quiet since the sampler first saw it.
        assert!(!is_idle(at(9), after, t0, none));
        assert!(is_idle(at(10), after, t0, none));
        // Traffic at 5 s moves the clock.
        assert!(!is_idle(at(14), after, at(5), none));
        assert!(is_idle(at(15), after, at(5), none));
        // A request at 8 s too, whichever is later counts.
        let used = Use {
            last_use: Some(at(8)),
            terminals: 0,
        };
        assert!(!is_idle(at(17), after, at(5), used));
        assert!(is_idle(at(18), after, at(5), used));
        // A use older than the traffic does not pull the clock back.
        let old = Use {
            last_use: Some(t0),
            terminals: 0,
        };
        assert!(!is_idle(at(14), after, at(5), old));
        // An open terminal keeps it awake however long ago anything happened.
        let open = Use {
            last_use: Some(t0),
            terminals: 1,
        };
        assert!(!is_idle(at(1000), after, t0, open));
    }

    #[tokio::test]
    async fn uses_are_remembered_and_terminals_counted() {
        let tracker = Arc::new(Tracker::default());
        assert_eq!(tracker.use_of("c1"), Use::default());
        tracker.touch("c1").await;
        let first = tracker.use_of("c1").last_use.unwrap();
        let guard = tracker.terminal("c1");
        let second = tracker.terminal("c1");
        assert_eq!(tracker.use_of("c1").terminals, 2);
        drop(guard);
        assert_eq!(tracker.use_of("c1").terminals, 1);
        drop(second);
        let after = tracker.use_of("c1");
        assert_eq!(after.terminals, 0);
        assert!(after.last_use.unwrap() >= first);

        // The sampler's gate holds a request's touch back until it is released.
        let gate = tracker.try_gate("c1").unwrap();
        let before = tracker.use_of("c1").last_use;
        let t = tracker.clone();
        let touching = tokio::spawn(async move { t.touch("c1").await });
        tokio::task::yield_now().await;
        assert_eq!(tracker.use_of("c1").last_use, before);
        assert!(tracker.try_gate("c1").is_none());
        drop(gate);
        touching.await.unwrap();
        assert!(tracker.use_of("c1").last_use > before);

        tracker.touch("c2").await;
        let _open = tracker.terminal("c3");
        tracker.retain(&HashSet::from(["c1".to_owned()]));
        assert_eq!(
            tracker.len(),
            2,
            "c2 forgotten, c3 kept while its terminal is open"
        );
    }
}
