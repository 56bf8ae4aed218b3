//! The idle sampler: one task for every running container with an idle policy. Every
//! `IDLE_SAMPLE_INTERVAL` it reads the candidates from the store (one indexed query), the
//! sent-bytes counter of each from `/proc/<pid>/net/dev` (the pid looked up in Docker only
//! when the container got a new process), and asks [`crate::idle::is_idle`]. An idle one gets
//! its new desired state written by the server (`status_reason: "idle"`) and the reconciler,
//! the one place that acts on Docker, pauses or stops it.
//!
//! gVisor: Docker's pid of a `runsc` container is its sandbox process, which lives in the
//! container's network namespace: the host-side counters of the namespace's veth are read the
//! same way (docs/API.md, idle).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::idle::{is_idle, sent_bytes, Tracker};
use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::spec::IdleAction;
use crate::store::idle::IdleCandidate;
use crate::store::Store;

use super::Reconciler;

/// What the sampler remembers of one candidate.
struct Sample {
    run_key: String,
    pid: Option<u32>,
    /// Its counter is read elsewhere and given with [`Sampler::set_sent`] (Swarm: from the
    /// node's stats), not from `/proc/<pid>`.
    remote: bool,
    /// The last counter read (kept across ticks where it could not be read: a read after
    /// such a gap is compared with it, so traffic during the gap counts as activity).
    sent: Option<u64>,
    /// Whether this tick's counter was read ([`Sampler::set_sent`]); a tick without it is
    /// not judged.
    read_now: bool,
    /// When its counter last moved, or when this run was first seen.
    quiet_since: Instant,
}

impl Sample {
    /// A counter read at `now`: the clock starts again when it differs from the last one
    /// read, however many ticks ago (traffic while it could not be read is activity), and
    /// when it is the first one (quiet is measured from a known counter).
    fn counted(&mut self, sent: u64, now: Instant) {
        if self.sent != Some(sent) {
            self.quiet_since = now;
        }
        self.sent = Some(sent);
    }
}

/// The sampler's memory between ticks (owned by its task; nothing shared).
#[derive(Default)]
pub struct Sampler {
    samples: HashMap<String, Sample>,
    buf: Vec<u8>,
}

impl Sampler {
    /// Forgets what is no longer a candidate (and a run that changed), starts the clock of
    /// new ones, and answers the cuids whose pid must be looked up.
    pub fn plan(&mut self, candidates: &[IdleCandidate], now: Instant) -> Vec<String> {
        let wanted: HashSet<&str> = candidates.iter().map(|c| c.cuid.as_str()).collect();
        self.samples
            .retain(|cuid, _| wanted.contains(cuid.as_str()));
        let mut lookups = Vec::new();
        for c in candidates {
            let s = self
                .samples
                .entry(c.cuid.clone())
                .or_insert_with(|| Sample {
                    run_key: c.run_key.clone(),
                    pid: None,
                    remote: false,
                    sent: None,
                    read_now: false,
                    quiet_since: now,
                });
            if s.run_key != c.run_key {
                *s = Sample {
                    run_key: c.run_key.clone(),
                    pid: None,
                    remote: false,
                    sent: None,
                    read_now: false,
                    quiet_since: now,
                };
            }
            if s.pid.is_none() && !s.remote {
                lookups.push(c.cuid.clone());
            }
        }
        lookups
    }

    /// The container's process, as Docker says (`State.Pid`).
    pub fn set_pid(&mut self, cuid: &str, pid: u32) {
        if let Some(s) = self.samples.get_mut(cuid) {
            s.pid = Some(pid);
        }
    }

    /// A counter read elsewhere (Swarm: the bytes the container sent, from its node's
    /// stats); `None`: it could not be read now, so the container is not judged this time,
    /// and the last counter read is kept to compare the next read with.
    pub fn set_sent(&mut self, cuid: &str, sent: Option<u64>, now: Instant) {
        if let Some(s) = self.samples.get_mut(cuid) {
            s.remote = true;
            s.read_now = sent.is_some();
            if let Some(sent) = sent {
                s.counted(sent, now);
            }
        }
    }

    /// Reads every candidate's counter and answers the idle ones. A counter that cannot be
    /// read (the process is gone) has its pid looked up again next time; meanwhile the
    /// container is not judged.
    pub fn due(
        &mut self,
        candidates: &[IdleCandidate],
        now: Instant,
        tracker: &Tracker,
    ) -> Vec<IdleCandidate> {
        let mut due = Vec::new();
        for c in candidates {
            let Some(s) = self.samples.get_mut(&c.cuid) else {
                continue;
            };
            if s.remote {
                if !s.read_now {
                    continue;
                }
            } else {
                let Some(pid) = s.pid else { continue };
                match sent_bytes(pid, &mut self.buf) {
                    Ok(sent) => s.counted(sent, now),
                    Err(_) => {
                        // The last counter is kept: the new process's, once read, is
                        // compared with it.
                        s.pid = None;
                        continue;
                    }
                }
            }
            let after = Duration::from_secs(c.idle.after);
            if is_idle(now, after, s.quiet_since, tracker.use_of(&c.cuid)) {
                due.push(c.clone());
            }
        }
        due
    }

    /// Whether `c` is still idle now (checked again under the tracker's gate).
    fn still_idle(&self, c: &IdleCandidate, tracker: &Tracker) -> bool {
        self.samples.get(&c.cuid).is_some_and(|s| {
            is_idle(
                Instant::now(),
                Duration::from_secs(c.idle.after),
                s.quiet_since,
                tracker.use_of(&c.cuid),
            )
        })
    }

    fn forget(&mut self, cuid: &str) {
        self.samples.remove(cuid);
    }

    /// Candidates it holds (tests, bench).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// What the sampler task works with.
pub struct IdleCtx {
    pub store: Store,
    pub reconciler: Reconciler,
    pub tracker: Arc<Tracker>,
    pub docker: crate::docker::Engine,
    /// Finds a Swarm container's node (`BACKEND=swarm`).
    pub locator: super::locate::Locator,
    pub audit: Arc<Audit>,
    pub every: Duration,
}

/// The sampler task; stops on `shutdown`.
pub async fn run(ctx: IdleCtx, shutdown: CancellationToken) {
    let mut sampler = Sampler::default();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.every) => {}
            _ = shutdown.cancelled() => return,
        }
        ticks += 1;
        if let Err(e) = tick(&ctx, &mut sampler).await {
            tracing::warn!(error = %e, "idle sampler: cannot read the candidates");
        }
        // Now and then, forget the use of containers that are gone.
        if ticks % 100 == 0 {
            if let Ok(all) = ctx.store.all_cuids().await {
                ctx.tracker.retain(&all.into_iter().collect());
            }
        }
    }
}

async fn tick(ctx: &IdleCtx, sampler: &mut Sampler) -> Result<(), sqlx::Error> {
    let candidates = ctx.store.idle_candidates().await?;
    let lookups = sampler.plan(&candidates, Instant::now());
    if ctx.locator.swarm() {
        // The process runs on another machine: the bytes it sent, from its node's stats.
        for c in &candidates {
            let sent = swarm_sent(&ctx.locator, &c.cuid).await;
            sampler.set_sent(&c.cuid, sent, Instant::now());
        }
    } else if !lookups.is_empty() {
        if let Ok(docker) = ctx.docker.get().await {
            for cuid in lookups {
                let inspect = docker
                    .inspect_container(
                        &cuid,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await;
                let pid = inspect
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.pid)
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|p| *p > 0);
                if let Some(pid) = pid {
                    sampler.set_pid(&cuid, pid);
                }
            }
        }
    }
    for c in sampler.due(&candidates, Instant::now(), &ctx.tracker) {
        act(ctx, sampler, &c).await;
    }
    Ok(())
}

/// The bytes `cuid`'s container sent on all its networks, from one stats sample of the node
/// that runs it (`None`: no task, or the node does not answer within 5 s).
async fn swarm_sent(locator: &super::locate::Locator, cuid: &str) -> Option<u64> {
    use futures_util::StreamExt;
    let at = locator.locate(cuid).await.ok()?;
    at.node.as_ref()?;
    let options = bollard::query_parameters::StatsOptions {
        stream: false,
        one_shot: true,
    };
    let sample = tokio::time::timeout(
        Duration::from_secs(5),
        at.docker.stats(&at.container, Some(options)).next(),
    )
    .await
    .ok()??
    .ok()?;
    sample
        .networks
        .map(|n| n.values().filter_map(|i| i.tx_bytes).sum())
}

/// Pauses or stops an idle container: desired state written for the idle reason, under the
/// tracker's gate (a request arriving meanwhile waits, then sees the new row and resumes it).
async fn act(ctx: &IdleCtx, sampler: &mut Sampler, c: &IdleCandidate) {
    let Some(_gate) = ctx.tracker.try_gate(&c.cuid) else {
        return;
    };
    if !sampler.still_idle(c, &ctx.tracker) {
        return;
    }
    let policy = c.idle;
    let target = match policy.action {
        IdleAction::Pause => DesiredState::Paused,
        IdleAction::Stop => DesiredState::Stopped,
    };
    let result = ctx
        .store
        .transition_for::<crate::store::Error>(&c.cuid, StatusReason::Idle, |current| {
            // The row as it is now: still wanted running, running, with the same policy.
            let unchanged = current.deleted_at.is_none()
                && current.desired_state == DesiredState::Running
                && current.status == Status::Running
                && current.spec.idle == Some(policy);
            Ok(unchanged.then_some((target, false)))
        })
        .await;
    match result {
        Ok((container, true)) => {
            sampler.forget(&c.cuid);
            ctx.reconciler.wake(&container);
            ctx.audit.record(crate::fields! {
                "actor" => "idle",
                "cuid" => c.cuid.as_str(),
                "action" => policy.action.as_str(),
                "reason" => "idle",
                "after" => policy.after,
            });
            tracing::info!(cuid = %c.cuid, action = policy.action.as_str(), after = policy.after, "idle: container paused or stopped");
        }
        Ok((_, false)) => {}
        Err(e) => {
            tracing::warn!(cuid = %c.cuid, error = %e, "idle: cannot write the new desired state")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Idle;

    fn candidate(cuid: &str, key: &str) -> IdleCandidate {
        IdleCandidate {
            cuid: cuid.into(),
            idle: Idle {
                after: 5,
                action: IdleAction::Pause,
                resume_on_use: true,
            },
            run_key: key.into(),
        }
    }

    #[test]
    fn pids_are_looked_up_once_per_run_and_gone_ones_forgotten() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let cands = vec![candidate("c1", "k1"), candidate("c2", "k1")];
        assert_eq!(s.plan(&cands, t0), vec!["c1", "c2"]);
        s.set_pid("c1", std::process::id());
        assert_eq!(s.plan(&cands, t0), vec!["c2"]);
        // A new run (an action, a restart): its pid again, its clock from now.
        let cands = vec![candidate("c1", "k2")];
        assert_eq!(s.plan(&cands, t0), vec!["c1"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_counter_read_on_a_swarm_node_is_judged_without_a_pid() {
        let tracker = Tracker::default();
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let cands = vec![candidate("c1", "k")];
        s.plan(&cands, t0);
        // Unreadable (no task, the node silent): not judged, and no pid looked up.
        s.set_sent("c1", None, t0);
        assert!(s
            .due(&cands, t0 + Duration::from_secs(600), &tracker)
            .is_empty());
        assert!(s.plan(&cands, t0).is_empty());
        // It moved: the clock starts again from then.
        s.set_sent("c1", Some(10), t0);
        s.set_sent("c1", Some(20), t0 + Duration::from_secs(300));
        assert!(s
            .due(&cands, t0 + Duration::from_secs(301), &tracker)
            .is_empty());
        assert_eq!(
            s.due(&cands, t0 + Duration::from_secs(600), &tracker).len(),
            1
        );
    }

    /// A node that did not answer for a while: the read after the gap is compared with the
    /// last one before it, so a container that sent traffic meanwhile is not idle at once.
    #[test]
    fn traffic_while_the_counter_could_not_be_read_is_activity() {
        let tracker = Tracker::default();
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let cands = vec![candidate("c1", "k")];
        s.plan(&cands, t0);
        s.set_sent("c1", Some(100), t0);
        assert!(s.due(&cands, t0, &tracker).is_empty());
        // Unreadable from 1 s to 9 s (after: 5 s): not judged meanwhile.
        for t in 1..10 {
            s.plan(&cands, secs(t));
            s.set_sent("c1", None, secs(t));
            assert!(s.due(&cands, secs(t), &tracker).is_empty(), "at {t} s");
        }
        // Read again at 10 s: it sent 50 bytes during the gap, so its quiet starts now.
        s.plan(&cands, secs(10));
        s.set_sent("c1", Some(150), secs(10));
        assert!(s.due(&cands, secs(10), &tracker).is_empty());
        // Quiet from then on: due 5 s later, not before.
        s.set_sent("c1", Some(150), secs(14));
        assert!(s.due(&cands, secs(14), &tracker).is_empty());
        s.set_sent("c1", Some(150), secs(15));
        assert_eq!(s.due(&cands, secs(15), &tracker).len(), 1);
        // A gap without traffic: the same counter after it, idle as it was.
        s.set_sent("c1", None, secs(16));
        assert!(s.due(&cands, secs(16), &tracker).is_empty());
        s.set_sent("c1", Some(150), secs(17));
        assert_eq!(s.due(&cands, secs(17), &tracker).len(), 1);
    }

    #[test]
    fn a_quiet_container_is_due_after_its_time_and_a_used_one_is_not() {
        let tracker = Tracker::default();
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let cands = vec![candidate("c1", "k")];
        s.plan(&cands, t0);
        // No pid yet: not judged.
        assert!(s
            .due(&cands, t0 + Duration::from_secs(60), &tracker)
            .is_empty());
        // This test's own process stands in for the container (its counters barely move
        // while the test runs, and a move only restarts the clock).
        s.set_pid("c1", std::process::id());
        assert!(s
            .due(&cands, t0 + Duration::from_secs(1), &tracker)
            .is_empty());
        let later = Instant::now() + Duration::from_secs(600);
        assert_eq!(s.due(&cands, later, &tracker).len(), 1);
        // A dead pid: looked up again, not judged.
        s.set_pid("c1", u32::MAX);
        assert!(s.due(&cands, later, &tracker).is_empty());
        assert_eq!(s.plan(&cands, later), vec!["c1"]);
    }
}
