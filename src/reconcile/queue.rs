//! The reconciler's work queue: FIFO with de-duplication and per-container back-off, after
//! client-go's workqueue (a dirty set, a processing set, requeue to the back, rate-limited
//! retries), and fair across tenants.
//!
//! - Each tenant has a line of its own (the operator's containers, without a tenant, form
//!   one too). The lines with someone waiting take turns, one container each, so a tenant
//!   with thousands of pending passes delays another tenant's single pass by one round at
//!   most (a round: one container from each waiting line). Inside a line: first woken, first
//!   served.
//! - A woken container joins the back of its line once; woken again while it waits, it keeps
//!   its place. Under load every container gets its turn in the order it was woken.
//! - A container is never handed out while a pass for it runs; woken meanwhile, it goes to
//!   the back of its line when that pass ends.
//! - After a failed pass it waits out its back-off in a timer heap and re-enters its line
//!   when due, in due order. A wake-up by a request (the client waits, and its change may be
//!   the fix) skips the back-off; a wake-up by an event or the resync does not.
//!
//! Every operation is O(1) or O(log n) in the number of queued containers: dispatch never
//! scans what is pending, nor the lines.
//!
//! The queue learns a container's tenant from whoever knows it ([`Queue::set_tenant`]: the
//! API's wake-ups, the resync's listing, each pass's row); a container's tenant never
//! changes. One woken before its tenant is known waits in the operator's line that once.

use std::cmp::Reverse;
use std::collections::{btree_map, BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// Whose line a container waits in: its tenant, `None` for the operator's own containers.
type Lane = Option<Arc<str>>;

#[derive(Default)]
pub struct Queue {
    /// Waiting for a worker slot: one line per tenant with someone waiting (an emptied line
    /// is dropped), each in the order woken, with when each joined.
    lines: HashMap<Lane, VecDeque<(String, Instant)>>,
    /// The lanes in `lines`, each once, in serving order: the front one gives a container
    /// and goes to the back.
    turns: VecDeque<Lane>,
    /// When the waiting containers joined their lines, with how many joined at that
    /// instant: the first key is the longest wait (the age metric, in O(log n)).
    joined: BTreeMap<Instant, usize>,
    /// The containers in `lines`.
    queued: HashSet<String>,
    /// Passes in flight.
    running: HashSet<String>,
    /// Woken while their pass was in flight (`true`: by a request).
    again: HashMap<String, bool>,
    /// Failed containers and when they may run again.
    backoff: HashMap<String, Backoff>,
    /// Back-off deadlines; an entry whose deadline no longer matches `backoff` is stale.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// The tenant of each container the queue was told of.
    tenant_of: HashMap<String, Lane>,
    /// Containers held by a request (a snapshot's pause): never handed out meanwhile.
    held: HashSet<String>,
    /// Passes in flight that asked to run again at a given time without having failed (an
    /// unhealthy container whose next restart is not due yet).
    deferred: HashMap<String, Instant>,
}

impl Queue {
    /// Tells the tenant of `cuid` (`None`: the operator's own). A container's tenant never
    /// changes, so the first word stands and telling again costs one look-up.
    pub fn set_tenant(&mut self, cuid: &str, tenant: Option<&str>) {
        if !self.tenant_of.contains_key(cuid) {
            self.tenant_of
                .insert(cuid.to_owned(), tenant.map(Arc::from));
        }
    }

    /// `cuid` is gone (its row was deleted): its tenant need not be kept.
    pub fn forget(&mut self, cuid: &str) {
        self.tenant_of.remove(cuid);
        self.deferred.remove(cuid);
    }

    /// The pass in flight for `cuid` wants the container back at `until`: when it ends
    /// (without failing), the container waits until then as after a failure, but its
    /// failure count starts over. Events respect the wait; a request does not.
    pub fn defer(&mut self, cuid: &str, until: Instant) {
        self.deferred.insert(cuid.to_owned(), until);
    }

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
        self.push(cuid.to_owned(), now);
    }

    /// Hands out up to `slots` containers, the lines taking turns, after moving those whose
    /// back-off is over into their lines. Also tells when the next back-off ends.
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
                self.push(cuid, now);
            }
        }
        let mut ready = Vec::new();
        while ready.len() < slots {
            let Some(cuid) = self.pop() else {
                break;
            };
            self.queued.remove(&cuid);
            if self.held.contains(&cuid) {
                // Queued before it was held: it runs once released.
                self.again.entry(cuid).or_insert(false);
                continue;
            }
            self.running.insert(cuid.clone());
            ready.push(cuid);
        }
        let next_due = self.timers.peek().map(|Reverse((until, _))| *until);
        (ready, next_due)
    }

    /// A pass for `cuid` ended. A failure starts (or doubles) its back-off; a success clears
    /// it. Woken meanwhile, it goes to the back of its line.
    pub fn done(&mut self, cuid: &str, failed: bool, now: Instant) {
        self.running.remove(cuid);
        if failed {
            let failures = self.backoff.get(cuid).map_or(0, |b| b.failures) + 1;
            let until = now + backoff_delay(failures);
            self.backoff
                .insert(cuid.to_owned(), Backoff { until, failures });
            // Retried when due, even if nothing else wakes it.
            self.timers.push(Reverse((until, cuid.to_owned())));
            self.deferred.remove(cuid);
        } else if let Some(until) = self.deferred.remove(cuid) {
            self.backoff
                .insert(cuid.to_owned(), Backoff { until, failures: 0 });
            self.timers.push(Reverse((until, cuid.to_owned())));
        } else {
            self.backoff.remove(cuid);
        }
        if let Some(urgent) = self.again.remove(cuid) {
            self.add(cuid, urgent, now);
        }
    }

    /// Holds `cuid` so no pass runs for it until [`Queue::release`]: `false` (nothing done)
    /// while a pass for it is in flight or it is held already. Woken meanwhile, it waits as
    /// if a pass were running.
    pub fn try_hold(&mut self, cuid: &str) -> bool {
        if self.running.contains(cuid) || self.held.contains(cuid) {
            return false;
        }
        self.held.insert(cuid.to_owned());
        self.running.insert(cuid.to_owned());
        true
    }

    /// Ends a [`Queue::try_hold`]: the container is woken (a pass checks what the holder
    /// left), keeping any back-off it had.
    pub fn release(&mut self, cuid: &str, now: Instant) {
        if !self.held.remove(cuid) {
            return;
        }
        self.running.remove(cuid);
        let urgent = self.again.remove(cuid).unwrap_or(false);
        self.add(cuid, urgent, now);
    }

    /// How many containers wait in line (not those backing off).
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// How long the container waiting longest has waited (`None`: nobody waits).
    pub fn oldest_age(&self, now: Instant) -> Option<Duration> {
        self.joined
            .first_key_value()
            .map(|(since, _)| now.saturating_duration_since(*since))
    }

    /// Puts `cuid` at the back of its tenant's line; a line that was empty takes its turn
    /// after the lines already waiting.
    fn push(&mut self, cuid: String, now: Instant) {
        let lane = self.tenant_of.get(&cuid).cloned().flatten();
        let line = self.lines.entry(lane.clone()).or_default();
        if line.is_empty() {
            self.turns.push_back(lane);
        }
        line.push_back((cuid, now));
        *self.joined.entry(now).or_insert(0) += 1;
    }

    /// The front container of the line whose turn it is; that line goes to the back of the
    /// turns if others of its containers still wait.
    fn pop(&mut self) -> Option<String> {
        let lane = self.turns.pop_front()?;
        let line = self.lines.get_mut(&lane)?;
        let (cuid, since) = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        if let btree_map::Entry::Occupied(mut e) = self.joined.entry(since) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Some(cuid)
    }
}

/// The wait before the next restart of an unhealthy container (`on_unhealthy: restart`)
/// after `restarts` of them in a row: none before the first, then the back-off of failed
/// passes (doubling from [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`]), without jitter so a
/// pass can tell from the row alone whether it is due.
pub fn unhealthy_backoff(restarts: i64) -> Duration {
    if restarts <= 0 {
        return Duration::ZERO;
    }
    let n = restarts.min(17) as u32;
    BACKOFF_BASE
        .saturating_mul(1u32 << (n - 1))
        .min(BACKOFF_MAX)
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
    fn a_held_container_is_never_handed_out() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add("a", true, now);
        assert!(q.try_hold("a"));
        assert!(!q.try_hold("a"));
        q.add("a", true, now);
        assert!(q.take(4, now).0.is_empty());
        q.release("a", now);
        assert_eq!(q.take(4, now).0, ["a"]);
        // Not while its pass runs.
        assert!(!q.try_hold("a"));
        q.done("a", false, now);
        assert!(q.try_hold("a"));
    }

    #[test]
    fn unhealthy_backoff_doubles_from_zero_and_is_capped() {
        assert_eq!(unhealthy_backoff(0), Duration::ZERO);
        assert_eq!(unhealthy_backoff(1), BACKOFF_BASE);
        assert_eq!(unhealthy_backoff(2), BACKOFF_BASE * 2);
        assert_eq!(unhealthy_backoff(40), BACKOFF_MAX);
    }

    /// A deferred pass waits as a failed one would (events respect it, a request does
    /// not), and runs again when due.
    #[test]
    fn a_deferred_container_comes_back_when_due() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add("a", false, now);
        assert_eq!(q.take(1, now).0, ["a"]);
        q.defer("a", now + Duration::from_secs(5));
        q.done("a", false, now);
        q.add("a", false, now);
        assert!(q.take(1, now).0.is_empty(), "events respect the wait");
        let (ready, due) = q.take(1, now + Duration::from_secs(5));
        assert_eq!(ready, ["a"]);
        assert_eq!(due, None);
        // Done without a deferral: nothing holds it any more.
        q.done("a", false, now + Duration::from_secs(5));
        q.add("a", false, now + Duration::from_secs(5));
        assert_eq!(q.take(1, now + Duration::from_secs(5)).0, ["a"]);
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

    /// `n` containers of `tenant`, woken in order.
    fn fill(q: &mut Queue, tenant: Option<&str>, prefix: &str, n: usize, now: Instant) {
        for i in 0..n {
            let c = format!("{prefix}{i}");
            q.set_tenant(&c, tenant);
            q.add(&c, true, now);
        }
    }

    /// Tenant A's 2,000 queued passes do not hold back B's single start, nor the
    /// operator's: each is served within one round (one container per waiting line), and
    /// A's own stay in the order they were woken.
    #[test]
    fn a_full_line_delays_another_tenant_by_one_round_at_most() {
        let now = Instant::now();
        let mut q = Queue::default();
        fill(&mut q, Some("a"), "a", 2000, now);
        q.set_tenant("b0", Some("b"));
        q.add("b0", true, now);
        q.add("op", true, now);
        assert_eq!(q.len(), 2002);
        let (first, _) = q.take(3, now);
        assert_eq!(names(&first), ["a0", "b0", "op"]);

        // One slot at a time, in the middle of A's burst: a newcomer waits one round.
        let mut a_order = vec![first[0].clone()];
        for _ in 0..500 {
            let (ready, _) = q.take(1, now);
            a_order.extend(ready);
        }
        q.set_tenant("b1", Some("b"));
        q.add("b1", true, now);
        let (ready, _) = q.take(1, now);
        let (then, _) = q.take(1, now);
        assert!(
            ready[0] == "b1" || then[0] == "b1",
            "b1 waited past one round: {ready:?} {then:?}"
        );
        let mut rest = ready;
        rest.extend(then);
        loop {
            let (ready, _) = q.take(64, now);
            if ready.is_empty() {
                break;
            }
            rest.extend(ready);
        }
        a_order.extend(rest.into_iter().filter(|c| c != "b1"));
        let want: Vec<String> = (0..2000).map(|i| format!("a{i}")).collect();
        assert_eq!(a_order, want, "FIFO inside A's line");
        assert!(q.is_empty());
        assert_eq!(q.oldest_age(now), None);
    }

    /// A busy system: A wakes its 2,000 containers again after every pass, B and C each
    /// have one container woken again after every pass. Through one slot, the lines take
    /// strict turns: B's and C's containers are served every third pass (the old single line
    /// served them once in 2,000), and A still gets its third.
    #[test]
    fn tenants_take_turns_under_sustained_load() {
        let now = Instant::now();
        let mut q = Queue::default();
        fill(&mut q, Some("a"), "a", 2000, now);
        fill(&mut q, Some("b"), "b", 1, now);
        fill(&mut q, Some("c"), "c", 1, now);
        let mut last: HashMap<String, usize> = HashMap::new();
        let mut a_served = 0;
        for turn in 0..3000 {
            let (ready, _) = q.take(1, now);
            let c = &ready[0];
            if c.starts_with('a') {
                a_served += 1;
            } else if let Some(prev) = last.insert(c.clone(), turn) {
                assert_eq!(turn - prev, 3, "{c}");
            }
            q.add(c, true, now);
            q.done(c, false, now);
        }
        assert_eq!(a_served, 1000);
        assert_eq!(q.len(), 2002);
    }

    /// A container keeps its tenant's line when it comes back: after a pass it was woken
    /// during, and after its back-off. Its tenant is told once, and the first word stands.
    #[test]
    fn a_container_comes_back_to_its_own_line() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.set_tenant("b0", Some("b"));
        q.set_tenant("b0", None);
        q.add("b0", false, now);
        assert_eq!(names(&q.take(1, now).0), ["b0"]);
        fill(&mut q, Some("a"), "a", 100, now);
        // Woken during its pass: behind one of A's, not behind all of them.
        q.add("b0", false, now);
        q.done("b0", false, now);
        assert_eq!(names(&q.take(2, now).0), ["a0", "b0"]);
        // Failed: due again after its back-off, then served within one round.
        q.done("b0", true, now);
        let (ready, due) = q.take(1, now);
        assert_eq!(names(&ready), ["a1"]);
        let due = due.expect("a retry is scheduled");
        assert_eq!(names(&q.take(2, due).0), ["a2", "b0"]);
    }

    /// The age metric reads the longest wait across all lines, in O(log n), and follows the
    /// containers as they leave.
    #[test]
    fn the_oldest_wait_is_across_all_lines() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t0 + Duration::from_secs(2);
        let mut q = Queue::default();
        q.set_tenant("b0", Some("b"));
        q.add("b0", false, t0);
        fill(&mut q, Some("a"), "a", 2, t1);
        q.add("op", false, t2);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.oldest_age(later), Some(Duration::from_secs(10)));
        assert_eq!(names(&q.take(1, later).0), ["b0"]);
        assert_eq!(q.oldest_age(later), Some(Duration::from_secs(9)));
        assert_eq!(names(&q.take(2, later).0), ["a0", "op"]);
        assert_eq!(q.oldest_age(later), Some(Duration::from_secs(9)));
        assert_eq!(names(&q.take(2, later).0), ["a1"]);
        assert_eq!(q.oldest_age(later), None);
        // Forgotten (its row is gone): woken again, it waits in the operator's line.
        q.forget("a0");
        assert!(!q.tenant_of.contains_key("a0"));
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
