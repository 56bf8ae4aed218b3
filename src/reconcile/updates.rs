//! Image updates: the registry checks, the judge of updates under way, and automatic
//! updates. One task, on a timer:
//!
//! - **Checks**: each distinct tag that containers run (and that came from a registry: an
//!   image built on the host has no registry digest and is never looked up) is looked up on
//!   its registry once per `IMAGE_CHECK_INTERVAL`, a few at a time; a failure backs that tag
//!   off (2 min, doubling, at most the interval) and is logged once per run of failures,
//!   with a fixed word, never the registry's answer. Each container of a checked tag gets
//!   `image_digest` (what it runs) and `update_available` (the registry's newer digest).
//! - **The judge**: an update under way (`update_pending`, in the store) is finished when
//!   the container made from the new digest has been running for a short while (healthy,
//!   once health checks exist), and rolled back (the pin goes back, a new generation) when
//!   that has not happened within `IMAGE_UPDATE_TIMEOUT` or the reconciler failed to make
//!   it. Both verdicts are single writes, so a crash before or after either is harmless.
//! - **Automatic updates**: in `IMAGE_UPDATE_WINDOW`, one `auto_update` container at a time
//!   (none while any update is being judged) is updated to its `update_available` digest,
//!   unless that digest was already rolled back.
//!
//! The update itself is desired state (`image_pin` and a new generation, see
//! [`crate::store::updates`]): the reconciler recreates the container with it in an
//! ordinary pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::Observed;
use super::Ctx;
use crate::lifecycle::{DesiredState, DockerState, ErrorCode};
use crate::step_error::StepError;
use crate::store::containers::Container;
use crate::store::updates::{digest_of, LastUpdate, Pending, UpdateAvailable, UpdateResult};

/// Registry look-ups at once.
const CHECK_CONCURRENCY: usize = 4;
/// The first back-off of a tag whose look-up failed.
const FIRST_BACKOFF: Duration = Duration::from_secs(120);
/// The longest pause between rounds while nothing is being judged.
const IDLE_TICK: Duration = Duration::from_secs(30);
/// When a tag none of whose containers came from a registry is looked at again.
const UNKNOWN_AGAIN: Duration = Duration::from_secs(60);
/// Between rounds while an update is being judged.
const JUDGE_TICK: Duration = Duration::from_secs(1);

/// When each tag is due to be looked up again, and its run of failures.
#[derive(Default)]
struct Schedule(HashMap<String, (Instant, u32)>);

/// The last failed exit seen of each container whose update is being judged: a container
/// that keeps failing may just be running again (its restart policy) when the limit is up,
/// and the verdict should still say how it ended. (Lost with a restart: the reason is then
/// less precise, the verdict the same.)
type Exits = HashMap<String, i64>;

impl Schedule {
    fn due(&self, reference: &str, now: Instant) -> bool {
        self.0.get(reference).is_none_or(|(at, _)| *at <= now)
    }

    fn succeeded(&mut self, reference: &str, interval: Duration) {
        let failures = self
            .0
            .insert(reference.to_owned(), (Instant::now() + interval, 0))
            .map_or(0, |(_, n)| n);
        if failures > 0 {
            tracing::info!(image = %reference, "image update check works again");
        }
    }

    /// Looks at the tag again after `after`, its run of failures kept.
    fn later(&mut self, reference: &str, after: Duration) {
        let entry = self
            .0
            .entry(reference.to_owned())
            .or_insert((Instant::now(), 0));
        entry.0 = Instant::now() + after;
    }

    /// Backs the tag off; answers whether this failure starts a run (to be logged).
    fn failed(&mut self, reference: &str, interval: Duration) -> bool {
        let entry = self
            .0
            .entry(reference.to_owned())
            .or_insert((Instant::now(), 0));
        let failures = entry.1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << failures.min(16))
            .min(interval.max(FIRST_BACKOFF));
        *entry = (Instant::now() + backoff, failures + 1);
        failures == 0
    }
}

pub(super) async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut schedule = Schedule::default();
    let mut exits = Exits::new();
    // Tags checked before a restart are not asked again before their interval is over.
    if let Ok(checks) = ctx.store.image_checks().await {
        let interval = ctx.config.image_updates.check_interval;
        for (reference, _, at) in checks {
            let age = DateTime::parse_from_rfc3339(&at)
                .ok()
                .and_then(|t| (Utc::now() - t.with_timezone(&Utc)).to_std().ok());
            if let Some(left) = age.and_then(|a| interval.checked_sub(a)) {
                schedule.0.insert(reference, (Instant::now() + left, 0));
            }
        }
    }
    loop {
        let judging = match round(&ctx, &mut schedule, &mut exits).await {
            Ok(judging) => judging,
            Err(e) => {
                tracing::warn!(error = %e, "image update round failed");
                false
            }
        };
        let interval = ctx.config.image_updates.check_interval;
        let tick = if judging {
            JUDGE_TICK
        } else if interval.is_zero() {
            IDLE_TICK
        } else {
            interval.min(IDLE_TICK).max(Duration::from_millis(200))
        };
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = ctx.reconciler.updates.notified() => {}
            () = shutdown.cancelled() => break,
        }
    }
}

/// One round: judge, check what is due, maybe start an automatic update. Answers whether
/// an update is being judged (the next round comes sooner).
async fn round(ctx: &Ctx, schedule: &mut Schedule, exits: &mut Exits) -> Result<bool, sqlx::Error> {
    let containers = ctx.store.live_containers().await?;
    let mut judging = false;
    exits.retain(|cuid, _| {
        containers
            .iter()
            .any(|c| &c.cuid == cuid && c.image.pending.is_some())
    });
    for c in &containers {
        if let Some(p) = &c.image.pending {
            judging |= judge(ctx, c, p, exits).await?;
        }
    }
    if !ctx.config.image_updates.check_interval.is_zero() {
        check(ctx, schedule, &containers).await?;
    }
    if !judging {
        judging = auto_update(ctx).await?;
    }
    Ok(judging)
}

/// Looks up the tags that are due and records what each of their containers runs and
/// whether a newer digest exists.
async fn check(
    ctx: &Ctx,
    schedule: &mut Schedule,
    containers: &[Container],
) -> Result<(), sqlx::Error> {
    let now = Instant::now();
    let interval = ctx.config.image_updates.check_interval;
    let mut by_tag: BTreeMap<String, Vec<&Container>> = BTreeMap::new();
    for c in containers {
        if crate::images::is_tag(&c.spec.image) {
            let reference = crate::images::normalize(&c.spec.image);
            if schedule.due(&reference, now) {
                by_tag.entry(reference).or_default().push(c);
            }
        }
    }
    // What each container runs, from Docker (local calls): a tag none of whose containers
    // came from a registry is not looked up there.
    let mut running: HashMap<String, Option<String>> = HashMap::new();
    let mut wanted = Vec::new();
    for (reference, users) in &by_tag {
        let mut any = false;
        for c in users {
            let digest = match ctx.backend.running_digest(&c.cuid, reference).await {
                Ok(d) => d,
                Err(_) => continue,
            };
            // Not made yet (or stopped and removed): what its pin names, if any.
            let digest = digest.or_else(|| {
                c.image
                    .pin
                    .as_deref()
                    .and_then(digest_of)
                    .map(str::to_owned)
            });
            any |= digest.is_some();
            running.insert(c.cuid.clone(), digest);
        }
        if any {
            wanted.push(reference.clone());
        } else {
            // Nothing from a registry yet (built on the host, or not made yet: a first
            // start may be pulling it): looked at again soon, with local calls only.
            schedule.later(reference, interval.min(UNKNOWN_AGAIN));
        }
    }
    let backend = ctx.backend.clone();
    let found: Vec<(String, Result<String, StepError>)> = stream::iter(wanted)
        .map(|reference| {
            let backend = backend.clone();
            async move {
                let digest = backend.registry_digest(&reference).await;
                (reference, digest)
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    for (reference, result) in found {
        let digest = match result {
            Ok(d) => {
                schedule.succeeded(&reference, interval);
                ctx.store.record_image_check(&reference, &d).await?;
                d
            }
            Err(f) => {
                if schedule.failed(&reference, interval) {
                    // `f` names the code and a fixed sentence (no registry answer, no host
                    // detail beyond the registry the reference itself names).
                    tracing::warn!(image = %reference, code = %f.code, "image update check failed; backing off");
                } else {
                    tracing::debug!(image = %reference, code = %f.code, "image update check failed again");
                }
                continue;
            }
        };
        for c in by_tag.get(&reference).into_iter().flatten() {
            let Some(run) = running.get(&c.cuid).cloned().flatten() else {
                continue;
            };
            let update = (run != digest).then(|| UpdateAvailable {
                digest: digest.clone(),
                seen_at: c
                    .image
                    .update_available
                    .as_ref()
                    .filter(|u| u.digest == digest)
                    .map_or_else(crate::store::now, |u| u.seen_at.clone()),
            });
            if ctx
                .store
                .record_image_seen(&c.cuid, Some(&run), update.as_ref())
                .await?
            {
                ctx.changed();
            }
        }
    }
    Ok(())
}

/// Starts an update of `c` to `digest` of its tag (a pin and a new generation; the
/// reconciler does the rest). `None`: the container changed meanwhile (the caller may ask
/// again).
pub async fn start(
    ctx_store: &crate::store::Store,
    reconciler: &super::Reconciler,
    c: &Container,
    digest: &str,
) -> Result<Option<Container>, crate::store::Error> {
    let repository = crate::images::repository_of(&c.spec.image);
    let to = format!("{repository}@{digest}");
    let from = c
        .image
        .pin
        .clone()
        .or_else(|| c.image.digest.as_ref().map(|d| format!("{repository}@{d}")));
    let started = ctx_store
        .begin_update(&c.cuid, &to, from.as_deref(), c.generation)
        .await?;
    if let Some(c) = &started {
        tracing::info!(cuid = %c.cuid, to = %to, "image update started");
        reconciler.wake(c);
        reconciler.updates.notify_one();
    }
    Ok(started)
}

/// In the window, with nothing being judged: updates the first `auto_update` container
/// that has a newer digest not already rolled back. Answers whether it started one.
async fn auto_update(ctx: &Ctx) -> Result<bool, sqlx::Error> {
    if let Some(window) = ctx.config.image_updates.window {
        let now = Utc::now();
        if !window.contains(now.hour() * 60 + now.minute()) {
            return Ok(false);
        }
    }
    // Read again: the judge may just have rolled one back.
    let containers = ctx.store.live_containers().await?;
    if containers.iter().any(|c| c.image.pending.is_some()) {
        return Ok(true);
    }
    for c in &containers {
        let Some(u) = &c.image.update_available else {
            continue;
        };
        let refused = c
            .image
            .last_update
            .as_ref()
            .is_some_and(|l| l.result == UpdateResult::RolledBack && l.to == u.digest);
        if !c.spec.auto_update || refused || c.desired_state != DesiredState::Running {
            continue;
        }
        match start(&ctx.store, &ctx.reconciler, c, &u.digest).await {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => {}
            Err(crate::store::Error::Database(e)) => return Err(e),
            Err(e) => tracing::debug!(cuid = %c.cuid, error = %e, "automatic update not started"),
        }
    }
    Ok(false)
}

/// How long the new container has to have been running to count as up: a third of the
/// limit, at most 10 s (a command that fails at once has been restarted by then).
fn settle_time(timeout: Duration) -> Duration {
    (timeout / 3).min(Duration::from_secs(10))
}

/// With a health check (the spec's `health`), an update counts only once Docker says the
/// new container is `healthy`; without one, running steadily is enough.
fn healthy_enough(c: &Container, o: &Observed) -> bool {
    c.spec.health.is_none() || o.health == Some(crate::spec::Health::Healthy)
}

/// Judges one update under way. Answers whether it is still being judged.
async fn judge(
    ctx: &Ctx,
    c: &Container,
    p: &Pending,
    exits: &mut Exits,
) -> Result<bool, sqlx::Error> {
    let from = p.from.as_deref().and_then(digest_of).map(str::to_owned);
    let to = digest_of(&p.to).unwrap_or(&p.to).to_owned();
    let verdict = |result, reason: Option<String>| LastUpdate {
        from: from.clone(),
        to: to.clone(),
        result,
        reason,
        at: crate::store::now(),
    };
    // Changed since (a PATCH, a stop): nothing left to judge; it stays on the new digest.
    let superseded = if c.generation != p.generation {
        Some("the container was changed before the update could be judged")
    } else if c.desired_state != DesiredState::Running {
        Some("the container was stopped before the update could be judged")
    } else {
        None
    };
    if let Some(why) = superseded {
        let last = verdict(UpdateResult::Updated, Some(why.to_owned()));
        ctx.store
            .finish_update(&c.cuid, p.generation, &last, None)
            .await?;
        return Ok(false);
    }
    let timeout = ctx.config.image_updates.timeout;
    let started = DateTime::parse_from_rfc3339(&p.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
    // The reconciler could not make it (the digest cannot be pulled, say): no use waiting.
    let failed = c
        .last_error
        .as_ref()
        .filter(|e| e["generation"] == serde_json::json!(p.generation))
        .map(|e| {
            let code: ErrorCode =
                serde_json::from_value(e["code"].clone()).unwrap_or(ErrorCode::ComposeFailed);
            format!("the new image could not be run ({code})")
        });
    let observed = match failed {
        Some(_) => None,
        None => match ctx.backend.observe(&c.cuid).await {
            Ok(o) => o.filter(|o| o.generation == Some(p.generation)),
            // Docker unreachable: judge later (the limit still counts).
            Err(_) if elapsed < timeout => return Ok(true),
            Err(_) => None,
        },
    };
    if let Some(o) = &observed {
        if let (false, Some(code @ 1..)) = (o.state == DockerState::Running, o.exit_code) {
            exits.insert(c.cuid.clone(), code);
        }
    }
    if let Some(o) = &observed {
        let settle = settle_time(timeout);
        let up_since = o
            .started_at
            .and_then(|s| (Utc::now() - s).to_std().ok())
            .unwrap_or_default();
        if o.state == DockerState::Running && up_since >= settle && healthy_enough(c, o) {
            let last = verdict(UpdateResult::Updated, None);
            if ctx
                .store
                .finish_update(&c.cuid, p.generation, &last, Some(&to))
                .await?
            {
                tracing::info!(cuid = %c.cuid, to = %to, "image update done");
                ctx.changed();
            }
            return Ok(false);
        }
    }
    if failed.is_none() && elapsed < timeout {
        return Ok(true);
    }
    let code = observed
        .as_ref()
        .filter(|o| o.state != DockerState::Running)
        .and_then(|o| o.exit_code)
        .filter(|&c| c != 0)
        .or_else(|| exits.get(&c.cuid).copied());
    let reason = failed.unwrap_or_else(|| {
        let secs = timeout.as_secs();
        match (&observed, code) {
            (_, Some(code)) => format!(
                "the new image's container did not stay running within {secs} s: its command exited with code {code}"
            ),
            (Some(o), None) if o.state == DockerState::Running => format!(
                "the new image's container did not stay running (or become healthy) within {secs} s"
            ),
            _ => format!("the new image's container was not running within {secs} s"),
        }
    });
    let last = verdict(UpdateResult::RolledBack, Some(reason.clone()));
    if ctx
        .store
        .roll_back(&c.cuid, p.generation, p.from.as_deref(), &last)
        .await?
    {
        tracing::warn!(cuid = %c.cuid, to = %to, reason = %reason, "image update rolled back");
        ctx.audit.record(crate::fields! {
            "actor" => "reconciler",
            "cuid" => c.cuid.as_str(),
            "action" => "rollback",
            "reason" => reason.as_str(),
            "generation" => p.generation,
        });
        if let Some(c) = ctx.store.get(&c.cuid).await? {
            ctx.reconciler.wake(&c);
        }
        ctx.changed();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_log_once_per_run() {
        let mut s = Schedule::default();
        let interval = Duration::from_secs(3600);
        assert!(s.due("a", Instant::now()));
        assert!(s.failed("a", interval));
        assert!(!s.failed("a", interval));
        assert!(!s.due("a", Instant::now()));
        let (at, n) = s.0["a"];
        assert_eq!(n, 2);
        assert!(at <= Instant::now() + FIRST_BACKOFF * 2 + Duration::from_secs(1));
        s.succeeded("a", interval);
        assert_eq!(s.0["a"].1, 0);
        // Never longer than the interval.
        for _ in 0..40 {
            s.failed("b", interval);
        }
        assert!(s.0["b"].0 <= Instant::now() + interval);
    }

    use crate::reconcile::double::{act, insert, row, world};

    /// With a health check an update counts once the new container is healthy; without one,
    /// running is enough.
    #[tokio::test]
    async fn an_update_with_a_health_check_waits_for_healthy() {
        let w = world(None).await;
        let mut c = insert(&w, crate::lifecycle::DesiredState::Created).await;
        let mut o = crate::reconcile::double::observed(DockerState::Running, c.generation);
        assert!(healthy_enough(&c, &o));
        c.spec.health = Some(crate::spec::HealthCheck {
            cmd: Some(vec!["true".into()]),
            http: None,
            interval: 1,
            timeout: 1,
            retries: 1,
            start_period: 0,
            on_unhealthy: None,
        });
        for (health, counts) in [
            (None, false),
            (Some(crate::spec::Health::Starting), false),
            (Some(crate::spec::Health::Unhealthy), false),
            (Some(crate::spec::Health::Healthy), true),
        ] {
            o.health = health;
            assert_eq!(healthy_enough(&c, &o), counts, "{health:?}");
        }
    }
    use crate::reconcile::pass;

    /// Sets the container's pending update as started long ago (past any limit).
    async fn long_ago(w: &crate::reconcile::double::World, cuid: &str) {
        sqlx::query(
            "UPDATE containers SET update_pending =
                json_set(update_pending, '$.started_at', '2000-01-01T00:00:00.000Z') WHERE cuid = ?",
        )
        .bind(cuid)
        .execute(&w.ctx.store.pool)
        .await
        .unwrap();
    }

    async fn judge_all(w: &crate::reconcile::double::World, exits: &mut Exits) -> bool {
        let mut judging = false;
        for c in w.ctx.store.live_containers().await.unwrap() {
            if let Some(p) = &c.image.pending {
                judging |= judge(&w.ctx, &c, p, exits).await.unwrap();
            }
        }
        judging
    }

    /// An update is a pin and a new generation the pass acts on; the judge keeps one that
    /// runs steadily, rolls back one that keeps failing (pin back, a new generation, the
    /// reason), and automatic updates skip a digest that was rolled back.
    #[tokio::test]
    async fn updates_are_kept_or_rolled_back_and_a_rollback_is_not_retried() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        act(&w, &c.cuid, DesiredState::Running, false).await;
        pass::run(&w.ctx, &c.cuid).await.unwrap();
        let c = row(&w, &c.cuid).await;
        let mut exits = Exits::new();

        let started = start(&w.ctx.store, &w.ctx.reconciler, &c, "sha256:good")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(started.generation, c.generation + 1);
        assert_eq!(started.image_ref(), "img@sha256:good");
        assert!(started.image.pending.is_some());
        pass::run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(w.backend.calls().iter().filter(|c| *c == "up").count(), 2);
        // Just started: not judged yet.
        assert!(judge_all(&w, &mut exits).await);
        // Running for long enough: kept.
        w.backend
            .container
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .started_at = Some(Utc::now() - chrono::Duration::hours(1));
        assert!(!judge_all(&w, &mut exits).await);
        let r = row(&w, &c.cuid).await;
        let last = r.image.last_update.clone().unwrap();
        assert_eq!(last.result, UpdateResult::Updated);
        assert_eq!((last.from, last.to.as_str()), (None, "sha256:good"));
        assert_eq!(r.image.digest.as_deref(), Some("sha256:good"));
        assert!(r.image.pending.is_none());

        // A broken one: keeps exiting with 3.
        let broken = start(&w.ctx.store, &w.ctx.reconciler, &r, "sha256:bad")
            .await
            .unwrap()
            .unwrap();
        pass::run(&w.ctx, &c.cuid).await.unwrap();
        {
            let mut o = w.backend.container.lock().unwrap();
            let o = o.as_mut().unwrap();
            o.state = DockerState::Exited;
            o.exit_code = Some(3);
        }
        assert!(judge_all(&w, &mut exits).await);
        long_ago(&w, &c.cuid).await;
        assert!(!judge_all(&w, &mut exits).await);
        let r = row(&w, &c.cuid).await;
        let last = r.image.last_update.clone().unwrap();
        assert_eq!(last.result, UpdateResult::RolledBack);
        assert_eq!(last.from.as_deref(), Some("sha256:good"));
        assert!(
            last.reason
                .as_deref()
                .unwrap()
                .contains("exited with code 3"),
            "{last:?}"
        );
        assert_eq!(r.image.pin.as_deref(), Some("img@sha256:good"));
        assert_eq!(r.generation, broken.generation + 1);
        assert!(r.image.pending.is_none());

        // The rolled-back digest is on offer, but not rolled out again by itself.
        sqlx::query("UPDATE containers SET auto_update = 1 WHERE cuid = ?")
            .bind(&c.cuid)
            .execute(&w.ctx.store.pool)
            .await
            .unwrap();
        let offer = |d: &str| UpdateAvailable {
            digest: d.into(),
            seen_at: crate::store::now(),
        };
        w.ctx
            .store
            .record_image_seen(&c.cuid, Some("sha256:good"), Some(&offer("sha256:bad")))
            .await
            .unwrap();
        assert!(!auto_update(&w.ctx).await.unwrap());
        assert!(row(&w, &c.cuid).await.image.pending.is_none());
        // A newer one is.
        w.ctx
            .store
            .record_image_seen(&c.cuid, Some("sha256:good"), Some(&offer("sha256:next")))
            .await
            .unwrap();
        assert!(auto_update(&w.ctx).await.unwrap());
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.image.pending.unwrap().to, "img@sha256:next");
    }

    /// A failure to make the new image (its pull, say) rolls back at once.
    #[tokio::test]
    async fn an_update_the_reconciler_cannot_make_is_rolled_back_at_once() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        act(&w, &c.cuid, DesiredState::Running, false).await;
        pass::run(&w.ctx, &c.cuid).await.unwrap();
        let c = row(&w, &c.cuid).await;
        start(&w.ctx.store, &w.ctx.reconciler, &c, "sha256:gone")
            .await
            .unwrap()
            .unwrap();
        w.backend
            .fail_next("ensure_image", ErrorCode::ImageNotFound);
        assert!(pass::run(&w.ctx, &c.cuid).await.is_err());
        assert!(!judge_all(&w, &mut Exits::new()).await);
        let r = row(&w, &c.cuid).await;
        let last = r.image.last_update.unwrap();
        assert_eq!(last.result, UpdateResult::RolledBack);
        assert!(last.reason.unwrap().contains("IMAGE_NOT_FOUND"));
        assert_eq!(r.image.pin, None);
        pass::run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            row(&w, &c.cuid).await.status,
            crate::lifecycle::Status::Running
        );
    }

    #[test]
    fn the_settle_time_is_short() {
        assert_eq!(
            settle_time(Duration::from_secs(120)),
            Duration::from_secs(10)
        );
        assert_eq!(settle_time(Duration::from_secs(9)), Duration::from_secs(3));
    }
}
