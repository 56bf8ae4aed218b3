//! The reconciler's work queue: FIFO with de-duplication and per-container back-off, after
//! client-go's workqueue (a dirty set, a processing set, requeue to the back, rate-limited
//! retries).
//!
//! - A woken container joins the back of the line once; woken again while it waits, it keeps
//!   its place. Under load every container gets its turn in the order it was woken.
//! - A container is never handed out while a pass for it runs; woken meanwhile, it goes to
//!   the back of the line when that pass ends.
//! - After a failed pass it waits out its back-off in a timer heap and re-enters the line when
//!   due, in due order. A wake-up by a request (the client waits, and its change may be the
//!   fix) skips the back-off; a wake-up by an event or the resync does not.
//!
//! Every operation is O(1) or O(log n) in the number of queued containers: dispatch never
//! scans what is pending.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Backoff {
    until: Instant,
    failures: u32,
}

#[derive(Default)]
pub struct Queue {
    /// Waiting for a worker slot, in the order they were woken, with when each joined the
    /// line (the front is the longest waiting: the age metric reads it in O(1)).
    line: VecDeque<(String, Instant)>,
    /// The containers in `line`.
    queued: HashSet<String>,
    /// Passes in flight.
    running: HashSet<String>,
    /// Woken while their pass was in flight (`true`: by a request).
    again: HashMap<String, bool>,
    /// Failed containers and when they may run again.
    backoff: HashMap<String, Backoff>,
    /// Back-off deadlines; an entry whose deadline no longer matches `backoff` is stale.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Queue {
    /// Wakes `cuid`. `urgent` (a request) skips its back-off.
    pub fn add(&mut self, cuid: &str, urgent: bool, now: Instant) {
        if urgent {
            if let Some(b) = self.backoff.get_mut(cuid) {
                b.until = now;
            }
        }
        if self.running.contains(cuid) {
            *self.again.entry(cuid.to_owned()).or_insert(false) |= urgent;
            return;
        }
        if self.queued.contains(cuid) {
            return;
        }
        if self.backoff.get(cuid).is_some_and(|b| b.until > now) {
            // Its timer puts it in line when due.
            return;
        }
        self.queued.insert(cuid.to_owned());
        self.line.push_back((cuid.to_owned(), now));
    }

    /// Hands out up to `slots` containers, oldest first, after moving those whose back-off
    /// is over into the line. Also tells when the next back-off ends.
    pub fn take(&mut self, slots: usize, now: Instant) -> (Vec<String>, Option<Instant>) {
        while let Some(Reverse((until, _))) = self.timers.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, cuid))) = self.timers.pop() else {
                break;
            };
            let current = self.backoff.get(&cuid).is_some_and(|b| b.until == until);
            if current && !self.running.contains(&cuid) && self.queued.insert(cuid.clone()) {
                self.line.push_back((cuid, now));
            }
        }
        let mut ready = Vec::new();
        while ready.len() < slots {
            let Some((cuid, _)) = self.line.pop_front() else {
                break;
            };
            self.queued.remove(&cuid);
            self.running.insert(cuid.clone());
            ready.push(cuid);
        }
        let next_due = self.timers.peek().map(|Reverse((until, _))| *until);
        (ready, next_due)
    }

    /// A pass for `cuid` ended. A failure starts (or doubles) its back-off; a success clears
    /// it. Woken meanwhile, it goes to the back of the line.
    pub fn done(&mut self, cuid: &str, failed: bool, now: Instant) {
        self.running.remove(cuid);
        if failed {
            let failures = self.backoff.get(cuid).map_or(0, |b| b.failures) + 1;
            let until = now + backoff_delay(failures);
            self.backoff
                .insert(cuid.to_owned(), Backoff { until, failures });
            // Retried when due, even if nothing else wakes it.
            self.timers.push(Reverse((until, cuid.to_owned())));
        } else {
            self.backoff.remove(cuid);
        }
        if let Some(urgent) = self.again.remove(cuid) {
            self.add(cuid, urgent, now);
        }
    }

    /// How many containers wait in line (not those backing off).
    pub fn len(&self) -> usize {
        self.line.len()
    }

    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    /// How long the container at the front of the line has waited (`None`: empty line).
    pub fn oldest_age(&self, now: Instant) -> Option<Duration> {
        self.line
            .front()
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

/// Doubling from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`], with ±20% jitter so many
/// failing containers do not retry in lockstep.
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let capped = exp.min(BACKOFF_MAX);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        for failures in 1..30 {
            let d = backoff_delay(failures);
            assert!(d <= BACKOFF_MAX.mul_f64(1.2), "{failures}: {d:?}");
            assert!(d >= BACKOFF_BASE.mul_f64(0.8), "{failures}: {d:?}");
        }
        assert!(backoff_delay(1) < Duration::from_secs(1));
        assert!(backoff_delay(20) > Duration::from_secs(40));
    }

    #[test]
    fn first_woken_first_served_and_a_rewake_keeps_its_place() {
        let now = Instant::now();
        let mut q = Queue::default();
        for c in ["a", "b", "c", "d"] {
            q.add(c, false, now);
        }
        q.add("a", true, now);
        q.add("c", false, now);
        assert_eq!(q.len(), 4);
        let later = now + Duration::from_secs(3);
        assert_eq!(q.oldest_age(later), Some(Duration::from_secs(3)));
        let (ready, _) = q.take(2, now);
        assert_eq!(names(&ready), ["a", "b"]);
        // A finished pass that was woken meanwhile goes to the back.
        q.add("a", false, now);
        q.done("a", false, now);
        q.done("b", false, now);
        q.add("e", false, now);
        let (ready, _) = q.take(10, now);
        assert_eq!(names(&ready), ["c", "d", "a", "e"]);
    }

    /// Many containers woken over and over while few slots turn: none waits more than one
    /// round (the old set handed out the same early-hashing names again and again).
    #[test]
    fn no_container_starves_under_load() {
        let now = Instant::now();
        let mut q = Queue::default();
        let all: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        for c in &all {
            q.add(c, true, now);
        }
        let mut last_run: HashMap<String, usize> = HashMap::new();
        for round in 0..400 {
            let (ready, _) = q.take(4, now);
            assert_eq!(ready.len(), 4);
            for c in &ready {
                if let Some(prev) = last_run.insert(c.clone(), round) {
                    // 200 containers through 4 slots: 50 rounds apart, exactly.
                    assert_eq!(round - prev, 50, "{c}");
                }
                // Everyone is woken again right away (a busy system).
                q.add(c, true, now);
                q.done(c, false, now);
            }
        }
        assert_eq!(last_run.len(), 200);
    }

    #[test]
    fn one_container_is_never_run_twice_at_once() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add("a", true, now);
        let (ready, _) = q.take(1, now);
        assert_eq!(names(&ready), ["a"]);
        q.add("a", true, now);
        assert!(q.take(10, now).0.is_empty());
        q.done("a", false, now);
        assert_eq!(names(&q.take(10, now).0), ["a"]);
    }

    #[test]
    fn failures_back_off_unless_woken_by_a_request() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add("a", false, now);
        q.take(1, now);
        q.done("a", true, now);
        let (ready, due) = q.take(1, now);
        assert!(ready.is_empty());
        let due = due.expect("a retry is scheduled");
        assert!(due > now);
        q.add("a", false, now);
        assert!(q.take(1, now).0.is_empty(), "events respect the back-off");
        // Due: back in line by itself.
        assert_eq!(names(&q.take(1, due).0), ["a"]);
        q.done("a", true, due);
        q.add("a", true, due);
        assert_eq!(names(&q.take(1, due).0), ["a"], "a request skips it");
        // The stale timer of the skipped back-off does not run it a second time.
        q.done("a", false, due);
        let later = due + BACKOFF_MAX * 2;
        assert!(q.take(1, later).0.is_empty());
    }

    #[test]
    fn backed_off_containers_come_back_in_due_order() {
        let now = Instant::now();
        let mut q = Queue::default();
        for c in ["a", "b", "c", "d"] {
            q.add(c, false, now);
        }
        q.take(4, now);
        for c in ["a", "b", "c", "d"] {
            q.done(c, true, now);
        }
        let mut order = Vec::new();
        let mut t = now;
        while order.len() < 4 {
            let (ready, next) = q.take(10, t);
            order.extend(ready);
            t = next.unwrap_or(t);
        }
        let mut by_due: Vec<(Instant, &str)> = ["a", "b", "c", "d"]
            .iter()
            .map(|c| (q.backoff[*c].until, *c))
            .collect();
        by_due.sort();
        let want: Vec<&str> = by_due.iter().map(|(_, c)| *c).collect();
        assert_eq!(names(&order), want);
    }
}
