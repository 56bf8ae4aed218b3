//! Observation of all of this instance's containers at once, through the
//! [`Observer`](super::backend::Observer): its event stream wakes the containers it names;
//! the periodic resync lists them all in one call and wakes the ones that differ from the
//! store, and has the backend remove containers that carry our label but have no row.
//! Deciding is here; the I/O is the backend's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::backend::Listed;
use super::firewall::{self, Placement};
use super::Ctx;
use crate::lifecycle::DockerState;

/// The longest a resync may take before the worker gets back to dispatching.
pub(super) const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait before subscribing again to a lost event stream (a daemon restarting).
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// One list of this instance's containers; containers whose state there differs from the
/// store are woken; containers with our label and no row are removed. The egress rules in
/// place are checked too: a running container whose rules are missing, altered, or for
/// another address is woken (its pass puts them back), and rules of a container with no row
/// are removed.
pub(super) async fn resync(ctx: &Ctx) -> Result<(), String> {
    let listed = ctx.observer.list().await.map_err(|e| e.to_string())?;
    let rules = match ctx.observer.firewall_rules().await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the egress rules");
            None
        }
    };
    let rows = ctx.store.summaries().await.map_err(|e| e.to_string())?;
    let known: HashSet<String> = ctx
        .store
        .all_cuids()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();

    let mut in_backend: HashMap<String, (DockerState, Option<i64>)> = HashMap::new();
    let mut health: HashMap<String, Option<crate::spec::Health>> = HashMap::new();
    let mut placed: HashMap<String, Placement> = HashMap::new();
    for c in listed {
        if known.contains(&c.cuid) {
            in_backend.insert(c.cuid.clone(), (c.state, c.generation));
            health.insert(c.cuid.clone(), c.health);
            if let Some(p) = c.placement {
                placed.insert(c.cuid, p);
            }
        } else {
            remove_orphan(ctx, &c).await;
        }
    }
    let drifted = match &rules {
        Some(current) => firewall_drift(ctx, current, &known, &placed).await,
        None => HashSet::new(),
    };
    for row in rows {
        // Also learnt here, for the events of containers no pass has read since start-up.
        ctx.reconciler.set_tenant(&row.cuid, row.tenant.as_deref());
        // A health change whose event was missed (the stream was down) is caught here too.
        let health_moved = health
            .get(&row.cuid)
            .is_some_and(|h| h.map(|h| h.as_str()) != row.health.as_deref());
        // An unhealthy container to be restarted is looked at again at every resync (its
        // pass restarts it when its back-off allows): a timer lost with a restart of the
        // server comes back this way.
        let to_restart = row.restarts_unhealthy && row.health.as_deref() == Some("unhealthy");
        if !row.progress.in_sync(in_backend.get(&row.cuid).copied())
            || drifted.contains(&row.cuid)
            || health_moved
            || to_restart
        {
            ctx.reconciler.wake_soft(&row.cuid);
        }
    }
    Ok(())
}

/// The containers whose egress rules are not whole for where they are: rules missing for a
/// container with an address, rules not intact or for another address, rules of a container
/// without an address, and every placed container when the bridge-wide rules or the hooks
/// are not in place. Rules of containers without a row are removed here.
async fn firewall_drift(
    ctx: &Ctx,
    current: &firewall::Current,
    known: &HashSet<String>,
    placed: &HashMap<String, Placement>,
) -> HashSet<String> {
    let mut drifted = HashSet::new();
    for (cuid, p) in placed {
        let intact = current
            .by_cuid
            .get(cuid)
            .is_some_and(|have| firewall::intact(have, p.address));
        if !intact {
            drifted.insert(cuid.clone());
        }
    }
    for cuid in current.by_cuid.keys() {
        if placed.contains_key(cuid) {
            continue;
        }
        if known.contains(cuid) {
            drifted.insert(cuid.clone());
        } else {
            let result = ctx.backend.firewall(cuid, None, &[]).await;
            ctx.audit.record(crate::fields! {
                "actor" => "reconciler",
                "cuid" => cuid,
                "action" => "remove_orphan_rules",
                "reason" => "egress rules of a container that has no row in the store",
                "outcome" => if result.is_ok() { "ok" } else { "error" },
            });
        }
    }
    if let Some(p) = placed.values().next() {
        // The bridge-wide rules gone, or a hook (a flushed `DOCKER-USER` or `INPUT`): any
        // container's pass puts them back; every one is woken, being cheap when in sync.
        let hooked = current.forward_hooked && current.input_hooked;
        if current.base != firewall::base(&p.bridge) || !hooked {
            drifted.extend(placed.keys().cloned());
        }
    }
    if !drifted.is_empty() {
        tracing::info!(
            containers = drifted.len(),
            "egress rules drifted; repairing"
        );
    }
    drifted
}

async fn remove_orphan(ctx: &Ctx, c: &Listed) {
    let result = ctx.backend.remove_orphan(&c.cuid, &c.id).await;
    ctx.audit.record(crate::fields! {
        "actor" => "reconciler",
        "cuid" => c.cuid,
        "action" => "remove_orphan",
        "reason" => "container carries this instance's label but has no row in the store",
        "outcome" => if result.is_ok() { "ok" } else { "error" },
    });
}

/// Events for our containers wake their passes. When the stream is lost (daemon restart), a
/// resync follows once a new subscription is made, since events were missed.
pub(super) async fn listen_events(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let mut stream = ctx.observer.events();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(cuid)) => ctx.reconciler.wake_soft(&cuid),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "event stream broke");
                        break;
                    }
                    None => break,
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
        }
        // Events may have been missed while the stream was down.
        if let Ok(Err(e)) = tokio::time::timeout(RESYNC_TIMEOUT, resync(&ctx)).await {
            tracing::debug!(error = %e, "resync after event stream loss failed");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Resync and the event listener against the recording double: which containers they
    //! wake, and what they ask the backend to remove.

    use super::*;
    use crate::lifecycle::ErrorCode;
    use crate::reconcile::double::{in_tenant, listed, rules_in_place, settled_running, world};
    use crate::step_error::StepError;

    /// What the worker would run next.
    fn woken(ctx: &Ctx) -> Vec<String> {
        ctx.reconciler.take_ready(100).0
    }

    /// One list call: containers whose listed state differs from the store (or that are
    /// missing, or tombstoned) are woken, the one in sync is not; a container with our
    /// label and no row is removed by the backend, by its id, and audited.
    #[tokio::test]
    async fn resync_wakes_what_differs_and_removes_orphans() {
        let w = world(None).await;
        let in_sync = settled_running(&w).await;
        let exited = settled_running(&w).await;
        let missing = settled_running(&w).await;
        let doomed = settled_running(&w).await;
        w.ctx.store.tombstone(&doomed.cuid, None).await.unwrap();
        let orphan = Listed {
            cuid: crate::spec::new_cuid(),
            id: "orphan-id".into(),
            state: DockerState::Running,
            generation: Some(1),
            placement: None,
            health: None,
        };
        rules_in_place(&w, &in_sync);
        rules_in_place(&w, &doomed);
        *w.backend.listed.lock().unwrap() = vec![
            listed(&in_sync, DockerState::Running),
            listed(&exited, DockerState::Exited),
            orphan.clone(),
            listed(&doomed, DockerState::Running),
        ];

        resync(&w.ctx).await.unwrap();

        assert_eq!(
            w.backend.calls(),
            [
                "list".to_owned(),
                "firewall_rules".to_owned(),
                "remove_orphan".to_owned(),
                format!("orphan {} orphan-id", orphan.cuid),
            ]
        );
        let mut got = woken(&w.ctx);
        got.sort();
        let mut want = vec![exited.cuid, missing.cuid, doomed.cuid];
        want.sort();
        assert_eq!(got, want);
        let audit = std::fs::read_to_string(w.ctx.audit.path()).unwrap();
        let line = audit.lines().find(|l| l.contains("remove_orphan")).unwrap();
        assert!(line.contains(&orphan.cuid), "{line}");
        assert!(line.contains("\"outcome\":\"ok\""), "{line}");

        // The backend cannot list: nothing is woken or removed, and the resync fails.
        w.backend.fail_next("list", ErrorCode::DockerUnavailable);
        assert!(resync(&w.ctx).await.is_err());
        assert!(woken(&w.ctx).is_empty());
        assert_eq!(w.backend.calls().len(), 5);
    }

    /// The tenants read by a resync steer later wake-ups that name only a cuid (events):
    /// B's container, woken behind 30 of A's, is served in the first round. Once its row is
    /// gone, its tenant is forgotten: woken again, it waits in the operator's line.
    #[tokio::test]
    async fn wake_ups_by_cuid_join_the_line_of_the_tenant_the_resync_read() {
        let w = world(None).await;
        let mut a = Vec::new();
        for _ in 0..30 {
            let c = settled_running(&w).await;
            a.push(in_tenant(&w, &c, "a").await);
        }
        let b = settled_running(&w).await;
        let b = in_tenant(&w, &b, "b").await;
        // Every container in sync: the resync wakes none, and learns every tenant.
        let mut everyone = a.clone();
        everyone.push(b.clone());
        for c in &everyone {
            rules_in_place(&w, c);
        }
        *w.backend.listed.lock().unwrap() = everyone
            .iter()
            .map(|c| listed(c, DockerState::Running))
            .collect();
        resync(&w.ctx).await.unwrap();
        assert!(woken(&w.ctx).is_empty());

        for c in &a {
            w.ctx.reconciler.wake_soft(&c.cuid);
        }
        w.ctx.reconciler.wake_soft(&b.cuid);
        let first_round = w.ctx.reconciler.take_ready(2).0;
        assert_eq!(first_round, [a[0].cuid.clone(), b.cuid.clone()]);
        assert_eq!(w.ctx.reconciler.queue_stats().0, 29);

        // A pass that finds the row gone forgets its tenant.
        w.ctx.reconciler.finished(&b.cuid, false);
        w.ctx.store.tombstone(&b.cuid, None).await.unwrap();
        crate::reconcile::pass::run(&w.ctx, &b.cuid).await.unwrap();
        assert!(w.ctx.store.get(&b.cuid).await.unwrap().is_none());
        let op = settled_running(&w).await;
        w.ctx.reconciler.wake_soft(&op.cuid);
        w.ctx.reconciler.wake_soft(&b.cuid);
        let after = w.ctx.reconciler.take_ready(4).0;
        assert_eq!(
            after,
            [&a[1], &op, &a[2], &b].map(|c| c.cuid.clone()),
            "behind the operator's container, in the operator's line"
        );
    }

    /// Events wake the containers they name; when the stream is lost, a resync follows
    /// (events were missed) and then a new subscription.
    #[tokio::test]
    async fn a_lost_event_stream_is_followed_by_a_resync() {
        let w = world(None).await;
        let drifted = settled_running(&w).await;
        *w.backend.listed.lock().unwrap() = vec![listed(&drifted, DockerState::Exited)];
        let named = crate::spec::new_cuid();
        w.backend
            .event_streams
            .lock()
            .unwrap()
            .push_back(Box::pin(futures_util::stream::iter([
                Ok(named.clone()),
                Err(StepError::new(
                    ErrorCode::DockerUnavailable,
                    "daemon restarting",
                )),
            ])));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(listen_events(w.ctx.clone(), shutdown.clone()));

        w.backend.wait_for_calls(|c| c.len() >= 4).await;
        assert_eq!(
            w.backend.calls(),
            ["events", "list", "firewall_rules", "events"]
        );
        assert_eq!(woken(&w.ctx), [named, drifted.cuid]);
        shutdown.cancel();
        task.await.unwrap();
    }

    /// The resync reads the rules in place once: a container with a rule deleted, or with
    /// rules for an address it no longer has, is woken (its pass puts them right); rules of
    /// a container without a row are removed; missing bridge-wide rules wake every placed
    /// container.
    #[tokio::test]
    async fn resync_wakes_containers_whose_rules_drifted_and_removes_rules_without_a_row() {
        use crate::reconcile::double::placement;
        let w = world(None).await;
        let intact = settled_running(&w).await;
        let deleted_rule = settled_running(&w).await;
        let moved = settled_running(&w).await;
        for c in [&intact, &deleted_rule, &moved] {
            rules_in_place(&w, c);
        }
        w.backend
            .rules
            .lock()
            .unwrap()
            .get_mut(&deleted_rule.cuid)
            .unwrap()
            .remove(1);
        let orphan = crate::spec::new_cuid();
        w.backend.rules.lock().unwrap().insert(
            orphan.clone(),
            firewall::rules(&orphan, &Default::default(), &placement()),
        );
        let mut moved_listed = listed(&moved, DockerState::Running);
        moved_listed.placement = Some(Placement {
            address: "172.18.0.9".parse().unwrap(),
            ..placement()
        });
        *w.backend.listed.lock().unwrap() = vec![
            listed(&intact, DockerState::Running),
            listed(&deleted_rule, DockerState::Running),
            moved_listed,
        ];

        resync(&w.ctx).await.unwrap();
        let mut got = woken(&w.ctx);
        got.sort();
        let mut want = vec![deleted_rule.cuid.clone(), moved.cuid.clone()];
        want.sort();
        assert_eq!(got, want);
        assert!(!w.backend.rules.lock().unwrap().contains_key(&orphan));
        assert!(w.backend.calls().contains(&"firewall".to_owned()));
        for c in &want {
            w.ctx.reconciler.finished(c, false);
        }
        // Their passes put the rules right, for where each is now.
        rules_in_place(&w, &deleted_rule);
        rules_in_place(&w, &moved);
        *w.backend.listed.lock().unwrap() = [&intact, &deleted_rule, &moved]
            .map(|c| listed(c, DockerState::Running))
            .to_vec();
        resync(&w.ctx).await.unwrap();
        assert!(woken(&w.ctx).is_empty());

        // The bridge-wide rules gone: every placed container is woken.
        w.backend.base.lock().unwrap().clear();
        resync(&w.ctx).await.unwrap();
        let all = woken(&w.ctx);
        assert_eq!(all.len(), 3);
        for c in &all {
            w.ctx.reconciler.finished(c, false);
        }
        // Put back (as their passes do): nothing to wake.
        *w.backend.base.lock().unwrap() = firewall::base(&placement().bridge);
        resync(&w.ctx).await.unwrap();
        assert!(woken(&w.ctx).is_empty());

        // A hook gone (`DOCKER-USER` flushed): the same.
        *w.backend.unhooked.lock().unwrap() = true;
        resync(&w.ctx).await.unwrap();
        assert_eq!(woken(&w.ctx).len(), 3);
    }
}
