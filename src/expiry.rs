//! The deadline timer: containers whose `lifetime` ran out are stopped or deleted by the
//! server (docs/API.md, lifetime).
//!
//! One task holds every deadline in memory, ordered by time, and sleeps until the earliest:
//! no scan of the store, and 10,000 containers with deadlines cost nothing while none is due
//! (the task wakes for the earliest one, for a new deadline earlier than it, or at most
//! every [`MAX_SLEEP`] to follow the wall clock). The deadlines are loaded from the store
//! at start-up with one indexed query, so one that passed while the server was down acts at
//! once; afterwards the API's writes report each change ([`Deadlines::set`]).
//!
//! The timer only writes desired state ([`Store::expire`], which decides again on the row
//! under its write lock: a `PATCH` that moved the deadline meanwhile wins) and wakes the
//! reconciler, which acts on Docker as for a client's `stop` or `DELETE`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::reconcile::Reconciler;
use crate::store::{Expiry, Store};

/// The longest the task sleeps without looking at the clock again (the wall clock may be
/// set; a deadline is wall-clock time). One look at the earliest deadline: no per-container
/// work.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Deadlines acted on in one go before the task looks at its inbox again.
const BATCH: usize = 64;
/// After a failed write (the store busy), the deadline is tried again this much later.
const RETRY: Duration = Duration::from_secs(5);

/// The deadlines, ordered by time, one per container.
#[derive(Debug, Default)]
pub struct Schedule {
    by_time: BTreeSet<(DateTime<Utc>, String)>,
    by_cuid: HashMap<String, DateTime<Utc>>,
}

/// What the task does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// No deadline: wait for one to be set.
    Idle,
    /// Sleep this long (at most [`MAX_SLEEP`]), then look again.
    Sleep(Duration),
    /// These are due now (earliest first, at most [`BATCH`]); taken out of the schedule.
    Due(Vec<String>),
}

impl Schedule {
    /// Sets (`Some`) or removes (`None`) the deadline of `cuid`. Answers whether the earliest
    /// deadline moved earlier (the sleeping task must look again).
    pub fn set(&mut self, cuid: &str, at: Option<DateTime<Utc>>) -> bool {
        if let Some(old) = self.by_cuid.remove(cuid) {
            self.by_time.remove(&(old, cuid.to_owned()));
        }
        let Some(at) = at else { return false };
        let earlier = self.by_time.first().is_none_or(|(first, _)| at < *first);
        self.by_time.insert((at, cuid.to_owned()));
        self.by_cuid.insert(cuid.to_owned(), at);
        earlier
    }

    pub fn len(&self) -> usize {
        self.by_cuid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cuid.is_empty()
    }

    /// The next step at `now`: only the earliest deadline is looked at unless some are due.
    pub fn next(&mut self, now: DateTime<Utc>) -> Next {
        let Some((first, _)) = self.by_time.first() else {
            return Next::Idle;
        };
        if *first > now {
            let wait = (*first - now).to_std().unwrap_or(Duration::ZERO);
            return Next::Sleep(wait.min(MAX_SLEEP));
        }
        let mut due = Vec::new();
        while due.len() < BATCH {
            match self.by_time.first() {
                Some((at, _)) if *at <= now => {
                    let (_, cuid) = self.by_time.pop_first().unwrap_or_default();
                    self.by_cuid.remove(&cuid);
                    due.push(cuid);
                }
                _ => break,
            }
        }
        Next::Due(due)
    }
}

/// A stored time (RFC 3339) as a deadline; an unreadable one is due at once (the store's
/// re-check decides).
fn parse_at(at: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The API's handle on the timer: cheap to clone; [`Deadlines::set`] after every write
/// that changes a deadline.
#[derive(Clone, Default)]
pub struct Deadlines {
    schedule: Arc<Mutex<Schedule>>,
    notify: Arc<Notify>,
    /// How many times the task woke up (tests: the cost while nothing is due).
    wakeups: Arc<AtomicU64>,
}

impl Deadlines {
    pub fn new() -> Self {
        Self::default()
    }

    /// `cuid`'s deadline is now `at` (RFC 3339 as stored; `None`: it has none).
    pub fn set(&self, cuid: &str, at: Option<&str>) {
        let earlier = self.lock().set(cuid, at.map(parse_at));
        if earlier {
            self.notify.notify_one();
        }
    }

    /// Deadlines held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many times the task has woken up since it started.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the task: it loads the store's deadlines, then acts on each as it comes due
    /// until `shutdown`.
    pub fn spawn(
        &self,
        store: Store,
        reconciler: Reconciler,
        audit: Arc<Audit>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run(store, reconciler, audit, shutdown).await })
    }

    async fn run(
        self,
        store: Store,
        reconciler: Reconciler,
        audit: Arc<Audit>,
        shutdown: CancellationToken,
    ) {
        // One query on the index; a failure (the store busy at start-up) is tried again.
        loop {
            match store.deadlines().await {
                Ok(rows) => {
                    let mut schedule = self.lock();
                    for (cuid, at) in rows {
                        // A deadline the API set meanwhile is the newer one.
                        if !schedule.by_cuid.contains_key(&cuid) {
                            schedule.set(&cuid, Some(parse_at(&at)));
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the containers' deadlines; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
        loop {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            let next = self.lock().next(Utc::now());
            let sleep = match next {
                Next::Due(cuids) => {
                    for cuid in cuids {
                        self.act(&store, &reconciler, &audit, &cuid).await;
                    }
                    continue;
                }
                Next::Idle => None,
                Next::Sleep(d) => Some(d),
            };
            tokio::select! {
                _ = async {
                    match sleep {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = self.notify.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One due deadline: the store decides on the row as it is now and writes; the
    /// reconciler is woken to act; the audit log says why.
    async fn act(&self, store: &Store, reconciler: &Reconciler, audit: &Audit, cuid: &str) {
        let now = Utc::now();
        match store.expire(cuid, now).await {
            Ok(Expiry::NotDue(later)) => {
                // Moved by a PATCH this task has not heard of yet, or removed.
                if let Some(at) = later {
                    self.lock().set(cuid, Some(parse_at(&at)));
                }
            }
            Ok(done) => {
                let (c, outcome) = match &done {
                    Expiry::Stopped(c) => (c, "stopped"),
                    Expiry::Deleted(c) => (c, "deleted"),
                    Expiry::Settled(c) => (c, "not running"),
                    Expiry::NotDue(_) => return,
                };
                audit.record(crate::fields! {
                    "actor" => "server",
                    "cuid" => cuid,
                    "action" => "expire",
                    "reason" => "expired",
                    "on_expiry" => c.lifetime.map(|l| l.on_expiry.as_str()),
                    "ttl" => c.lifetime.map(|l| l.ttl),
                    "outcome" => outcome,
                    "desired_state" => c.desired_state.as_str(),
                });
                tracing::info!(cuid, outcome, "lifetime ran out");
                crate::metrics::get()
                    .lifetimes_expired
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                    .inc();
                if !matches!(done, Expiry::Settled(_)) {
                    reconciler.wake(c);
                }
            }
            Err(e) => {
                tracing::warn!(cuid, error = %e, "cannot act on a deadline; retrying");
                let retry = now + chrono::TimeDelta::from_std(RETRY).unwrap_or_default();
                self.lock().set(cuid, Some(retry));
            }
        }
    }
}

#[cfg(test)]
mod tests;
