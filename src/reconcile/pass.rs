//! One reconciliation pass for one container: observe, decide, act, observe again, until
//! the container is settled or a step fails. Every step is idempotent, so a pass cut short
//! (a crash, a timeout) is simply completed by the next one. The pass only decides and
//! records; what it does to the world goes through [`super::backend::Backend`].

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::decide::{decide, Action, Desired, DesiredState, Observed};
use super::firewall;
use super::Ctx;
use crate::lifecycle::{ErrorCode, Status};
use crate::step_error::StepError;
use crate::store::containers::{Container, Observation};

/// Steps one pass may take (e.g. up, then pause) before it yields.
pub const MAX_STEPS: usize = 4;

pub type PassResult = Result<(), StepError>;

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn desired_of(c: &Container) -> Desired {
    Desired {
        state: c.desired_state,
        generation: c.generation,
        deleting: c.deleted_at.is_some(),
        restart_pending: c.restart_requested > c.restart_done,
        desired_at: parse_time(&c.desired_at).unwrap_or_else(Utc::now),
        restart_unhealthy: c.spec.health.as_ref().is_some_and(|h| h.restarts()),
    }
}

/// Restarts for unhealthiness in a row (never seen healthy between them) after which the
/// container carries `last_error` `NOT_CONVERGING`; the restarts go on at the capped
/// back-off.
pub const MAX_UNHEALTHY_RESTARTS: i64 = 5;

/// How long until the next restart of an unhealthy `c` is due (`None`: now): the back-off
/// of [`super::queue::unhealthy_backoff`] from the last one.
fn unhealthy_hold(c: &Container) -> Option<std::time::Duration> {
    let last = parse_time(c.unhealthy_restart_at.as_deref()?)?;
    let due = last + super::queue::unhealthy_backoff(c.unhealthy_restarts);
    (due - Utc::now()).to_std().ok().filter(|d| !d.is_zero())
}

/// `last_error` of a settled container: `NOT_CONVERGING` while a container restarted for
/// unhealthiness [`MAX_UNHEALTHY_RESTARTS`] times in a row runs and has not been seen healthy
/// since (the note made first is kept, so the row is not rewritten at every pass); else none.
fn unhealthy_note(c: &Container, o: Option<&Observed>, status: Status) -> Option<Value> {
    let restarts = c.spec.health.as_ref().is_some_and(|h| h.restarts());
    let healthy = o.and_then(|o| o.health) == Some(crate::spec::Health::Healthy);
    if !restarts
        || healthy
        || status != Status::Running
        || c.unhealthy_restarts < MAX_UNHEALTHY_RESTARTS
    {
        return None;
    }
    if let Some(e) = c
        .last_error
        .as_ref()
        .filter(|e| e["code"] == json!(ErrorCode::NotConverging))
    {
        return Some(e.clone());
    }
    let probe = o
        .and_then(|o| o.health_log.clone())
        .or_else(|| c.health_log.clone())
        .unwrap_or_default();
    Some(json!({
        "code": ErrorCode::NotConverging,
        "message": format!(
            "unhealthy after {} restarts in a row (on_unhealthy: restart); still restarted, at most once a minute; last probe: {probe}",
            c.unhealthy_restarts
        ),
        "at": crate::store::now(),
        "generation": c.generation,
        "desired_at": c.desired_at,
    }))
}

/// `last_error`: what failed and when, and which desire it failed for (the spec
/// generation and `desired_at`), so a waiting request only takes an error that is about its
/// own change.
fn error_value(c: &Container, f: &StepError) -> Value {
    json!({
        "code": f.code,
        "message": f.message,
        "at": crate::store::now(),
        "generation": c.generation,
        "desired_at": c.desired_at,
    })
}

/// Runs one pass. An `Err` means the container should be retried after a back-off.
pub async fn run(ctx: &Ctx, cuid: &str) -> PassResult {
    let mut last = None;
    for _ in 0..MAX_STEPS {
        let Some(c) = ctx.store.get(cuid).await? else {
            ctx.reconciler.forget(cuid);
            return Ok(());
        };
        // Its tenant's line, for the wake-ups of events that name only the cuid.
        ctx.reconciler.set_tenant(cuid, c.tenant.as_deref());
        let desired = desired_of(&c);
        // A container never started has nothing in Docker: no call for it.
        let observed = if desired.state == DesiredState::Created && !desired.deleting {
            None
        } else {
            match ctx.backend.observe(cuid).await {
                Ok(o) => o,
                Err(f) => return fail(ctx, &c, f).await,
            }
        };
        let decision = decide(&desired, observed.as_ref());
        if decision.action == Action::RestartUnhealthy {
            // Not due yet: recorded as it is (running, unhealthy), and back when due.
            if let Some(wait) = unhealthy_hold(&c) {
                ctx.reconciler.defer(cuid, wait);
                return match settle(ctx, &c, &desired, observed.as_ref(), Status::Running).await {
                    Err(f) => fail(ctx, &c, f).await,
                    ok => ok,
                };
            }
            // Due: `unhealthy` is recorded first, so clients and `/events` see what the
            // restart is for (the restart makes it `starting` at once).
            record(ctx, &c, &desired, observed.as_ref(), Status::Running).await?;
        }
        if let Action::Settled(status) = decision.action {
            return match settle(ctx, &c, &desired, observed.as_ref(), status).await {
                Err(f) => fail(ctx, &c, f).await,
                ok => ok,
            };
        }
        if decision.action == Action::Delete {
            // Deletion is desired (`deleted_at`); that it is under way is observed state,
            // recorded here by its one writer.
            ctx.store.record_deleting(cuid).await?;
        }
        let started = Instant::now();
        let result = execute(ctx, &c, decision.action).await;
        ctx.audit.record(crate::fields! {
            "actor" => "reconciler",
            "cuid" => cuid,
            "action" => format!("{:?}", decision.action).to_lowercase(),
            "reason" => decision.reason,
            "generation" => c.generation,
            "duration_ms" => started.elapsed().as_secs_f64() * 1000.0,
            "outcome" => if result.is_ok() { "ok" } else { "error" },
            "code" => result.as_ref().err().map(|f| f.code),
        });
        if let Err(f) = result {
            return fail(ctx, &c, f).await;
        }
        if decision.action == Action::RestartUnhealthy {
            ctx.store.record_unhealthy_restart(cuid).await?;
        }
        if decision.action == Action::Delete {
            ctx.store.delete_row(cuid).await?;
            ctx.reconciler.forget(cuid);
            ctx.changed();
            return Ok(());
        }
        last = Some(c);
    }
    let f = StepError::new(
        ErrorCode::NotConverging,
        format!("the container did not settle within {MAX_STEPS} steps"),
    );
    match last {
        Some(c) => fail(ctx, &c, f).await,
        None => Err(f),
    }
}

/// Records the failure (`status: error`, or still `deleting` for a tombstone, and
/// `last_error`) and hands it to the worker, which backs the container off.
async fn fail(ctx: &Ctx, c: &Container, f: StepError) -> PassResult {
    tracing::warn!(cuid = %c.cuid, error = %f, "reconcile step failed");
    ctx.store.record_error(&c.cuid, &error_value(c, &f)).await?;
    ctx.changed();
    Err(f)
}

/// In sync: record what is, and keep the compose file current (a deleted file is rendered
/// again; a spec changed while stopped is in the file for the next start).
async fn settle(
    ctx: &Ctx,
    c: &Container,
    desired: &Desired,
    o: Option<&Observed>,
    status: Status,
) -> PassResult {
    if desired.state != DesiredState::Created {
        ctx.backend.write_project(c).await?;
        // Its egress rules, for where it is now (none once it has no address: an address
        // it gave up may go to another container).
        let placement = o.and_then(|o| o.placement.as_ref());
        let rules = placement
            .map(|p| firewall::rules(&c.cuid, &c.spec.network, p))
            .unwrap_or_default();
        let bridge = placement.map(|p| p.bridge.as_str());
        ctx.backend.firewall(&c.cuid, bridge, &rules).await?;
    }
    record(ctx, c, desired, o, status).await
}

/// Records what is observed (the observation of [`settle`]).
async fn record(
    ctx: &Ctx,
    c: &Container,
    desired: &Desired,
    o: Option<&Observed>,
    status: Status,
) -> PassResult {
    // A pending restart that the container's start time shows already happened (e.g.
    // before a crash) is done: restarts happen exactly once.
    let restart_done = match o.and_then(|o| o.started_at) {
        Some(started) if started >= desired.desired_at => c.restart_requested,
        _ => c.restart_done,
    };
    // While Docker's policy restarts it, the exit that made it restart (a crash loop shows
    // its code, not a blank).
    let exit_code = match status {
        Status::Exited | Status::Stopped | Status::Restarting => o.and_then(|o| o.exit_code),
        _ => None,
    };
    // Docker keeps `OOMKilled` of the last exit; it only means something beside that exit.
    let oom_killed =
        matches!(status, Status::Exited | Status::Restarting) && o.is_some_and(|o| o.oom_killed);
    let observation = Observation {
        status,
        exit_code,
        oom_killed,
        observed_generation: c.generation,
        last_error: unhealthy_note(c, o, status),
        restart_done,
        health: o.and_then(|o| o.health),
        health_log: o.and_then(|o| o.health_log.clone()),
        node: o.and_then(|o| o.node.clone()),
        node_address: o.and_then(|o| o.node_address.clone()),
        lost_node: o.and_then(|o| o.lost_node.clone()),
    };
    if ctx.store.record_observation(&c.cuid, &observation).await? {
        ctx.changed();
    }
    Ok(())
}

async fn execute(ctx: &Ctx, c: &Container, action: Action) -> Result<(), StepError> {
    let b = ctx.backend.as_ref();
    let cuid = c.cuid.as_str();
    match action {
        Action::Settled(_) => Ok(()),
        Action::Up => {
            b.ensure_image(c.image_ref()).await?;
            b.ensure_network().await?;
            b.prepare_mount(c).await?;
            b.write_project(c).await?;
            b.up(cuid).await
        }
        // Every way into running first makes sure the egress frame (chains, hooks, the
        // bridge-wide drop) is there: after a reboot or a flushed table, a container that
        // starts before its pass puts its own rules in place must reach nothing.
        Action::Start => {
            b.ensure_network().await?;
            b.prepare_mount(c).await?;
            b.write_project(c).await?;
            match b.start(cuid).await {
                // Docker could not start what compose made (its network or image removed
                // behind our back, say): compose makes it again, from scratch (a plain `up`
                // sees an unchanged config and only tries the same start).
                Err(f) if f.code != ErrorCode::DockerUnavailable => {
                    tracing::info!(%cuid, error = %f, "start failed; recreating with compose");
                    b.ensure_image(c.image_ref()).await?;
                    b.ensure_network().await?;
                    b.recreate(cuid).await
                }
                other => other,
            }
        }
        Action::Stop => b.stop(cuid).await,
        Action::Pause => b.pause(cuid).await,
        Action::Unpause => {
            b.ensure_network().await?;
            b.unpause(cuid).await
        }
        Action::Restart | Action::RestartUnhealthy => {
            b.ensure_network().await?;
            b.restart(cuid).await
        }
        Action::Delete => {
            b.remove(cuid).await?;
            b.firewall(cuid, None, &[]).await?;
            b.remove_files(cuid).await
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pass against the recording double: which calls it makes in which order, what it
    //! records after each outcome.

    use super::*;
    use crate::lifecycle::DockerState;
    use crate::reconcile::double::{act, insert, observed, row, settled_running, world};

    /// Which calls a pass makes from each starting point, and the status it records. Stop,
    /// pause, unpause, restart and the start of a current container are single Engine API
    /// calls: no `up` (compose) among them.
    #[tokio::test]
    async fn each_transition_takes_the_expected_calls() {
        use DesiredState as D;
        use DockerState as K;
        // (desired, restart asked, Docker's state, calls, status recorded)
        type Case<'a> = (D, bool, Option<K>, &'a [&'a str], Status);
        let cases: Vec<Case> = vec![
            // never started → compose makes it
            (
                D::Running,
                false,
                None,
                &[
                    "observe",
                    "ensure_image",
                    "ensure_network",
                    "prepare_mount",
                    "write_project",
                    "up",
                    "observe",
                    "write_project",
                    "firewall",
                ],
                Status::Running,
            ),
            // stopped, current → one start call
            (
                D::Running,
                false,
                Some(K::Exited),
                &[
                    "observe",
                    "ensure_network",
                    "prepare_mount",
                    "write_project",
                    "start",
                    "observe",
                    "write_project",
                    "firewall",
                ],
                Status::Running,
            ),
            (
                D::Stopped,
                false,
                Some(K::Running),
                &["observe", "stop", "observe", "write_project", "firewall"],
                Status::Stopped,
            ),
            (
                D::Paused,
                false,
                Some(K::Running),
                &["observe", "pause", "observe", "write_project", "firewall"],
                Status::Paused,
            ),
            (
                D::Running,
                false,
                Some(K::Paused),
                &[
                    "observe",
                    "ensure_network",
                    "unpause",
                    "observe",
                    "write_project",
                    "firewall",
                ],
                Status::Running,
            ),
            (
                D::Running,
                true,
                Some(K::Running),
                &[
                    "observe",
                    "ensure_network",
                    "restart",
                    "observe",
                    "write_project",
                    "firewall",
                ],
                Status::Running,
            ),
        ];
        for (desired, restart, docker, want_calls, want_status) in cases {
            let w = world(None).await;
            let c = insert(&w, D::Created).await;
            *w.backend.container.lock().unwrap() = docker.map(|k| observed(k, c.generation));
            act(&w, &c.cuid, desired, restart).await;
            run(&w.ctx, &c.cuid).await.unwrap();
            let label = format!("{desired:?} restart={restart} from {docker:?}");
            assert_eq!(w.backend.calls(), want_calls, "{label}");
            let r = row(&w, &c.cuid).await;
            assert_eq!(r.status, want_status, "{label}");
            assert_eq!(r.observed_generation, r.generation, "{label}");
            assert!(r.last_error.is_none(), "{label}");
            assert!(r.progress().settled(), "{label}");
        }
    }

    /// A restart is carried out once: after it, the row counts it done, and a second pass
    /// does nothing more.
    #[tokio::test]
    async fn a_restart_happens_exactly_once() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        *w.backend.container.lock().unwrap() = Some(observed(DockerState::Running, 1));
        act(&w, &c.cuid, DesiredState::Running, true).await;
        run(&w.ctx, &c.cuid).await.unwrap();
        let r = row(&w, &c.cuid).await;
        assert_eq!((r.restart_requested, r.restart_done), (1, 1));
        run(&w.ctx, &c.cuid).await.unwrap();
        let restarts = w.backend.calls().iter().filter(|c| *c == "restart").count();
        assert_eq!(restarts, 1);

        // A restart that already happened before a crash (started after it was asked for)
        // is counted done without restarting again.
        act(&w, &c.cuid, DesiredState::Running, true).await;
        *w.backend.container.lock().unwrap() = Some(Observed {
            started_at: Some(Utc::now() + chrono::Duration::seconds(5)),
            ..observed(DockerState::Running, 1)
        });
        run(&w.ctx, &c.cuid).await.unwrap();
        let restarts = w.backend.calls().iter().filter(|c| *c == "restart").count();
        assert_eq!(restarts, 1);
        let r = row(&w, &c.cuid).await;
        assert_eq!((r.restart_requested, r.restart_done), (2, 2));
    }

    /// A failed step: the pass stops there, records `error` with the code, the generation and
    /// `desired_at` it failed for, and the next pass (after back-off) starts over.
    #[tokio::test]
    async fn a_failure_is_recorded_with_the_desire_it_failed_for() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        act(&w, &c.cuid, DesiredState::Running, false).await;
        w.backend
            .fail_next("ensure_image", ErrorCode::ImageNotFound);
        let e = run(&w.ctx, &c.cuid).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ImageNotFound);
        assert_eq!(w.backend.calls(), ["observe", "ensure_image"]);
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Error);
        let last = r.last_error.unwrap();
        assert_eq!(last["code"], "IMAGE_NOT_FOUND");
        assert_eq!(last["generation"], r.generation);
        assert_eq!(last["desired_at"], json!(r.desired_at));
        // Fixed: the next pass converges and clears the error.
        run(&w.ctx, &c.cuid).await.unwrap();
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Running);
        assert!(r.last_error.is_none());
    }

    /// A container Docker's policy is restarting shows the exit that made it restart.
    #[tokio::test]
    async fn a_restarting_container_shows_its_last_exit_code() {
        let w = world(None).await;
        let c = settled_running(&w).await;
        let mut crashed = observed(DockerState::Restarting, c.generation);
        crashed.exit_code = Some(3);
        *w.backend.container.lock().unwrap() = Some(crashed);
        run(&w.ctx, &c.cuid).await.unwrap();
        let r = row(&w, &c.cuid).await;
        assert_eq!((r.status, r.exit_code), (Status::Restarting, Some(3)));
    }

    /// A start Docker refuses (not a daemon outage) is retried as a compose `up`; a daemon
    /// outage is not.
    #[tokio::test]
    async fn a_refused_start_falls_back_to_compose() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        *w.backend.container.lock().unwrap() = Some(observed(DockerState::Exited, 1));
        act(&w, &c.cuid, DesiredState::Running, false).await;
        w.backend.fail_next("start", ErrorCode::ComposeFailed);
        run(&w.ctx, &c.cuid).await.unwrap();
        let calls = w.backend.calls();
        assert_eq!(
            calls[..8],
            [
                "observe",
                "ensure_network",
                "prepare_mount",
                "write_project",
                "start",
                "ensure_image",
                "ensure_network",
                "recreate"
            ]
        );
        assert_eq!(row(&w, &c.cuid).await.status, Status::Running);

        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        *w.backend.container.lock().unwrap() = Some(observed(DockerState::Exited, 1));
        act(&w, &c.cuid, DesiredState::Running, false).await;
        w.backend.fail_next("start", ErrorCode::DockerUnavailable);
        let e = run(&w.ctx, &c.cuid).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::DockerUnavailable);
        assert!(!w.backend.calls().contains(&"recreate".to_owned()));
    }

    /// A container that never settles (Docker keeps showing it stopped after every start)
    /// ends the pass after MAX_STEPS steps with NOT_CONVERGING, instead of looping.
    #[tokio::test]
    async fn a_pass_that_never_settles_gives_up_with_not_converging() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        *w.backend.stuck.lock().unwrap() = Some(observed(DockerState::Exited, 1));
        *w.backend.container.lock().unwrap() = Some(observed(DockerState::Exited, 1));
        act(&w, &c.cuid, DesiredState::Running, false).await;
        let e = run(&w.ctx, &c.cuid).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotConverging);
        let starts = w.backend.calls().iter().filter(|c| *c == "start").count();
        assert_eq!(starts, MAX_STEPS);
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.last_error.unwrap()["code"], "NOT_CONVERGING");
    }

    /// Deletion: the container first, then the files, then the row; a failure of a step
    /// keeps the row (tombstoned, `deleting`, with `last_error`) for the next pass.
    #[tokio::test]
    async fn deletion_removes_container_then_files_then_the_row() {
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        *w.backend.container.lock().unwrap() = Some(observed(DockerState::Running, 1));
        w.ctx.store.tombstone(&c.cuid, None).await.unwrap();
        w.backend.fail_next("remove_files", ErrorCode::IoError);
        let e = run(&w.ctx, &c.cuid).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IoError);
        assert_eq!(
            w.backend.calls(),
            ["observe", "remove", "firewall", "remove_files"]
        );
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Deleting);
        assert_eq!(r.last_error.unwrap()["code"], "IO_ERROR");
        // The pass, not the API, recorded `deleting` as observed.
        let stored: String = sqlx::query_scalar("SELECT status FROM containers WHERE cuid = ?")
            .bind(&c.cuid)
            .fetch_one(&w.ctx.store.pool)
            .await
            .unwrap();
        assert_eq!(stored, "deleting");

        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            w.backend.calls()[4..],
            ["observe", "remove", "firewall", "remove_files"]
        );
        assert!(w.ctx.store.get(&c.cuid).await.unwrap().is_none());
    }

    /// The egress rules are decided from the stored policy and where Docker put the
    /// container: in place once it runs, those of a patched policy after the recreate,
    /// none once it is stopped (its address may go to another) or deleted. A backend that
    /// cannot apply them fails the pass with FIREWALL_FAILED.
    #[tokio::test]
    async fn the_rules_follow_the_policy_and_the_container() {
        use crate::reconcile::double::placement;
        use crate::spec::{Egress, Network};
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        let rules = || w.backend.rules.lock().unwrap().get(&c.cuid).cloned();
        act(&w, &c.cuid, DesiredState::Running, false).await;
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            rules(),
            Some(firewall::rules(&c.cuid, &Network::default(), &placement()))
        );
        assert_eq!(
            *w.backend.base.lock().unwrap(),
            firewall::base(&placement().bridge)
        );

        let none = Network::with_egress(Egress::None);
        w.ctx
            .store
            .update_spec::<crate::store::Error>(&c.cuid, None, |cur| {
                let mut next = cur.spec.clone();
                next.network = none.clone();
                Ok(next)
            })
            .await
            .unwrap();
        run(&w.ctx, &c.cuid).await.unwrap();
        assert!(w.backend.calls().iter().filter(|c| *c == "up").count() == 2);
        assert_eq!(rules(), Some(firewall::rules(&c.cuid, &none, &placement())));

        act(&w, &c.cuid, DesiredState::Stopped, false).await;
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(rules(), None);

        act(&w, &c.cuid, DesiredState::Running, false).await;
        w.backend.fail_next("firewall", ErrorCode::FirewallFailed);
        let e = run(&w.ctx, &c.cuid).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::FirewallFailed);
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.last_error.unwrap()["code"], "FIREWALL_FAILED");
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(rules(), Some(firewall::rules(&c.cuid, &none, &placement())));

        w.ctx.store.tombstone(&c.cuid, None).await.unwrap();
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(rules(), None);
    }

    /// `on_unhealthy: restart`: an unhealthy container is restarted (one Engine API call),
    /// then not again before its back-off from the last restart has passed (the pass
    /// records it as it is and asks to come back when due); after
    /// [`MAX_UNHEALTHY_RESTARTS`] in a row it carries `NOT_CONVERGING` while still running;
    /// seen healthy, the count and the note go. Without `on_unhealthy`, nothing is done.
    #[tokio::test]
    async fn an_unhealthy_container_is_restarted_with_back_off() {
        use crate::spec::{Health, HealthCheck, OnUnhealthy};
        let w = world(None).await;
        let c = insert(&w, DesiredState::Created).await;
        let check = HealthCheck {
            cmd: Some(vec!["true".into()]),
            http: None,
            interval: 1,
            timeout: 1,
            retries: 1,
            start_period: 0,
            on_unhealthy: Some(OnUnhealthy::Restart),
        };
        w.ctx
            .store
            .update_spec::<crate::store::Error>(&c.cuid, None, |cur| {
                let mut next = cur.spec.clone();
                next.health = Some(check.clone());
                Ok(next)
            })
            .await
            .unwrap();
        act(&w, &c.cuid, DesiredState::Running, false).await;
        run(&w.ctx, &c.cuid).await.unwrap();
        let set_health = |h: Health, log: &str| {
            let mut guard = w.backend.container.lock().unwrap();
            let o = guard.as_mut().unwrap();
            o.health = Some(h);
            o.health_log = Some(log.to_owned());
        };
        let calls_from = |n: usize| w.backend.calls()[n..].to_vec();

        set_health(Health::Unhealthy, "no /tmp/ok");
        let before = w.backend.calls().len();
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            calls_from(before),
            [
                "observe",
                "ensure_network",
                "restart",
                "observe",
                "write_project",
                "firewall"
            ]
        );
        let r = row(&w, &c.cuid).await;
        assert_eq!(
            (r.status, r.health),
            (Status::Running, Some(Health::Starting))
        );
        assert_eq!(r.unhealthy_restarts, 1);

        // Unhealthy again soon after a third restart in a row (2 s of back-off): not due,
        // recorded as it is.
        sqlx::query(
            "UPDATE containers SET unhealthy_restarts = 3, unhealthy_restart_at = ? WHERE cuid = ?",
        )
        .bind(crate::store::now())
        .bind(&c.cuid)
        .execute(&w.ctx.store.pool)
        .await
        .unwrap();
        set_health(Health::Unhealthy, "no /tmp/ok");
        let before = w.backend.calls().len();
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(calls_from(before), ["observe", "write_project", "firewall"]);
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.health, Some(Health::Unhealthy));
        assert_eq!(r.health_log.as_deref(), Some("no /tmp/ok"));
        assert!(r.last_error.is_none());

        // Many restarts in a row, the last one long ago: due, restarted, and then flagged.
        sqlx::query(
            "UPDATE containers SET unhealthy_restarts = ?, unhealthy_restart_at = ? WHERE cuid = ?",
        )
        .bind(MAX_UNHEALTHY_RESTARTS - 1)
        .bind("2000-01-01T00:00:00.000Z")
        .bind(&c.cuid)
        .execute(&w.ctx.store.pool)
        .await
        .unwrap();
        run(&w.ctx, &c.cuid).await.unwrap();
        let restarts = w.backend.calls().iter().filter(|c| *c == "restart").count();
        assert_eq!(restarts, 2);
        set_health(Health::Unhealthy, "still no /tmp/ok");
        run(&w.ctx, &c.cuid).await.unwrap();
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.unhealthy_restarts, MAX_UNHEALTHY_RESTARTS);
        assert_eq!(r.status, Status::Running);
        let note = r.last_error.clone().unwrap();
        assert_eq!(note["code"], "NOT_CONVERGING");
        assert!(note["message"]
            .as_str()
            .unwrap()
            .contains("after 5 restarts"));
        // Kept as it is by the next passes (no rewrite, no new event).
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(row(&w, &c.cuid).await.last_error, Some(note));

        // Healthy: the count and the note go.
        set_health(Health::Healthy, "ok");
        run(&w.ctx, &c.cuid).await.unwrap();
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.health, Some(Health::Healthy));
        assert_eq!(r.unhealthy_restarts, 0);
        assert!(r.last_error.is_none());

        // Without on_unhealthy: recorded, never restarted.
        w.ctx
            .store
            .update_spec::<crate::store::Error>(&c.cuid, None, |cur| {
                let mut next = cur.spec.clone();
                next.health = Some(HealthCheck {
                    on_unhealthy: None,
                    ..check.clone()
                });
                Ok(next)
            })
            .await
            .unwrap();
        run(&w.ctx, &c.cuid).await.unwrap();
        set_health(Health::Unhealthy, "down");
        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            w.backend.calls().iter().filter(|c| *c == "restart").count(),
            2
        );
        assert_eq!(row(&w, &c.cuid).await.health, Some(Health::Unhealthy));
    }
}
