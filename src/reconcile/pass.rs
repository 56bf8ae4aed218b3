//! One reconciliation pass for one container: observe, decide, act, observe again, until
//! the container is settled or a step fails. Every step is idempotent, so a pass cut short
//! (a crash, a timeout) is simply completed by the next one. The pass only decides and
//! records; what it does to the world goes through [`super::backend::Backend`].

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::decide::{decide, Action, Desired, DesiredState, Observed};
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
    }
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
            return Ok(());
        };
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
        if let Action::Settled(status) = decision.action {
            return match settle(ctx, &c, &desired, observed.as_ref(), status).await {
                Err(f) => fail(ctx, &c, f).await,
                ok => ok,
            };
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
        if decision.action == Action::Delete {
            ctx.store.delete_row(cuid).await?;
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
    }
    // A pending restart that the container's start time shows already happened (e.g.
    // before a crash) is done: restarts happen exactly once.
    let restart_done = match o.and_then(|o| o.started_at) {
        Some(started) if started >= desired.desired_at => c.restart_requested,
        _ => c.restart_done,
    };
    let exit_code = match status {
        Status::Exited | Status::Stopped => o.and_then(|o| o.exit_code),
        _ => None,
    };
    let observation = Observation {
        status,
        exit_code,
        observed_generation: c.generation,
        last_error: None,
        restart_done,
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
            b.ensure_image(&c.spec.image).await?;
            b.ensure_network().await?;
            b.prepare_mount(c).await?;
            b.write_project(c).await?;
            b.up(cuid).await
        }
        Action::Start => {
            b.prepare_mount(c).await?;
            b.write_project(c).await?;
            match b.start(cuid).await {
                // Docker could not start what compose made (its network or image removed
                // behind our back, say): compose makes it again, from scratch (a plain `up`
                // sees an unchanged config and only tries the same start).
                Err(f) if f.code != ErrorCode::DockerUnavailable => {
                    tracing::info!(%cuid, error = %f, "start failed; recreating with compose");
                    b.ensure_image(&c.spec.image).await?;
                    b.ensure_network().await?;
                    b.recreate(cuid).await
                }
                other => other,
            }
        }
        Action::Stop => b.stop(cuid).await,
        Action::Pause => b.pause(cuid).await,
        Action::Unpause => b.unpause(cuid).await,
        Action::Restart => b.restart(cuid).await,
        Action::Delete => {
            b.remove(cuid).await?;
            b.remove_files(cuid).await
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pass against a recording double: which calls it makes in which order, what it
    //! records after each outcome. Real Docker is the integration tests' job.

    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::lifecycle::DockerState;
    use crate::reconcile::backend::{Backend, Step};
    use crate::reconcile::Reconciler;
    use crate::spec::{Resources, Spec};

    /// Plays Docker: holds one container's state, records every call, and fails the calls
    /// it is told to.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        container: Mutex<Option<Observed>>,
        failures: Mutex<HashMap<&'static str, VecDeque<StepError>>>,
        /// Observations to answer instead of the container (e.g. one that never settles).
        stuck: Mutex<Option<Observed>>,
        /// The generation the project file was last written with: what `up` makes.
        project_generation: Mutex<i64>,
    }

    impl Recorder {
        fn with(o: Option<Observed>) -> Self {
            let r = Self::default();
            *r.container.lock().unwrap() = o;
            r
        }

        fn fail_next(&self, call: &'static str, code: ErrorCode) {
            self.failures
                .lock()
                .unwrap()
                .entry(call)
                .or_default()
                .push_back(StepError::new(code, format!("{call} failed")));
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        /// Records the call; its planned failure, if any; else applies `effect`.
        fn step(
            &self,
            call: &'static str,
            effect: impl FnOnce(&mut Option<Observed>),
        ) -> Result<(), StepError> {
            self.calls.lock().unwrap().push(call.to_owned());
            if let Some(f) = self
                .failures
                .lock()
                .unwrap()
                .get_mut(call)
                .and_then(VecDeque::pop_front)
            {
                return Err(f);
            }
            effect(&mut self.container.lock().unwrap());
            Ok(())
        }

        fn set_state(&self, state: DockerState) -> impl FnOnce(&mut Option<Observed>) {
            move |o| {
                if let Some(o) = o {
                    o.state = state;
                    if state == DockerState::Running {
                        o.started_at = Some(Utc::now());
                    }
                }
            }
        }
    }

    fn ready<'a, T: Send + 'a>(v: Result<T, StepError>) -> Step<'a, T> {
        Box::pin(async move { v })
    }

    impl Backend for Recorder {
        fn observe<'a>(&'a self, _cuid: &'a str) -> Step<'a, Option<Observed>> {
            let r = self.step("observe", |_| {});
            let o = self
                .stuck
                .lock()
                .unwrap()
                .clone()
                .or_else(|| self.container.lock().unwrap().clone());
            ready(r.map(|()| o))
        }
        fn ensure_image<'a>(&'a self, _image: &'a str) -> Step<'a> {
            ready(self.step("ensure_image", |_| {}))
        }
        fn ensure_network(&self) -> Step<'_> {
            ready(self.step("ensure_network", |_| {}))
        }
        fn prepare_mount<'a>(&'a self, _c: &'a Container) -> Step<'a> {
            ready(self.step("prepare_mount", |_| {}))
        }
        fn write_project<'a>(&'a self, c: &'a Container) -> Step<'a> {
            let r = self.step("write_project", |_| {});
            if r.is_ok() {
                *self.project_generation.lock().unwrap() = c.generation;
            }
            ready(r)
        }
        fn up<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            let generation = *self.project_generation.lock().unwrap();
            ready(self.step("up", |o| {
                *o = Some(Observed {
                    id: "id".into(),
                    state: DockerState::Running,
                    exit_code: None,
                    oom_killed: false,
                    generation: Some(generation),
                    started_at: Some(Utc::now()),
                    finished_at: None,
                })
            }))
        }
        fn recreate<'a>(&'a self, cuid: &'a str) -> Step<'a> {
            self.calls.lock().unwrap().push("recreate".to_owned());
            // Then as `up` does (its own call is not recorded twice).
            let generation = *self.project_generation.lock().unwrap();
            *self.container.lock().unwrap() = Some(Observed {
                id: cuid.into(),
                state: DockerState::Running,
                exit_code: None,
                oom_killed: false,
                generation: Some(generation),
                started_at: Some(Utc::now()),
                finished_at: None,
            });
            ready(Ok(()))
        }
        fn start<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("start", self.set_state(DockerState::Running)))
        }
        fn stop<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("stop", self.set_state(DockerState::Exited)))
        }
        fn pause<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("pause", self.set_state(DockerState::Paused)))
        }
        fn unpause<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("unpause", self.set_state(DockerState::Running)))
        }
        fn restart<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("restart", self.set_state(DockerState::Running)))
        }
        fn remove<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("remove", |o| *o = None))
        }
        fn remove_files<'a>(&'a self, _cuid: &'a str) -> Step<'a> {
            ready(self.step("remove_files", |_| {}))
        }
    }

    struct World {
        ctx: Ctx,
        backend: Arc<Recorder>,
        _dir: tempfile::TempDir,
    }

    async fn world(observed: Option<Observed>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(crate::config::Config::for_tests(dir.path()));
        let store = crate::store::Store::open(&config.database_url)
            .await
            .unwrap();
        let identity = Arc::new(store.identity().await.unwrap());
        let audit = Arc::new(crate::audit::Audit::open(&config.log_dir, 1 << 20).unwrap());
        let backend = Arc::new(Recorder::with(observed));
        let ctx = Ctx::new(
            config,
            store,
            crate::docker::Engine::default(),
            audit,
            identity,
            Reconciler::new(),
        )
        .with_backend(backend.clone());
        World {
            ctx,
            backend,
            _dir: dir,
        }
    }

    fn spec() -> Spec {
        Spec {
            image: "img".into(),
            env: Default::default(),
            tags: vec![],
            resources: Resources::default(),
            ports: vec![],
            command: Some(vec!["sleep".into()]),
            restart: "on-failure".into(),
            user: None,
        }
    }

    async fn insert(w: &World, desired: DesiredState) -> Container {
        let cuid = crate::spec::new_cuid();
        match w
            .ctx
            .store
            .insert(&cuid, &spec(), desired, None, |_| json!({}))
            .await
            .unwrap()
        {
            crate::store::containers::Created::New(c) => *c,
            _ => unreachable!(),
        }
    }

    async fn act(w: &World, cuid: &str, desired: DesiredState, restart: bool) {
        w.ctx
            .store
            .transition(cuid, |_| Ok(Some((desired, restart))))
            .await
            .unwrap();
    }

    async fn row(w: &World, cuid: &str) -> Container {
        w.ctx.store.get(cuid).await.unwrap().unwrap()
    }

    fn observed(state: DockerState, generation: i64) -> Observed {
        Observed {
            id: "id".into(),
            state,
            exit_code: None,
            oom_killed: false,
            generation: Some(generation),
            started_at: Some(Utc::now() - chrono::Duration::hours(1)),
            finished_at: None,
        }
    }

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
                    "prepare_mount",
                    "write_project",
                    "start",
                    "observe",
                    "write_project",
                ],
                Status::Running,
            ),
            (
                D::Stopped,
                false,
                Some(K::Running),
                &["observe", "stop", "observe", "write_project"],
                Status::Stopped,
            ),
            (
                D::Paused,
                false,
                Some(K::Running),
                &["observe", "pause", "observe", "write_project"],
                Status::Paused,
            ),
            (
                D::Running,
                false,
                Some(K::Paused),
                &["observe", "unpause", "observe", "write_project"],
                Status::Running,
            ),
            (
                D::Running,
                true,
                Some(K::Running),
                &["observe", "restart", "observe", "write_project"],
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
            calls[..7],
            [
                "observe",
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
        assert_eq!(w.backend.calls(), ["observe", "remove", "remove_files"]);
        let r = row(&w, &c.cuid).await;
        assert_eq!(r.status, Status::Deleting);
        assert_eq!(r.last_error.unwrap()["code"], "IO_ERROR");

        run(&w.ctx, &c.cuid).await.unwrap();
        assert_eq!(
            w.backend.calls()[3..],
            ["observe", "remove", "remove_files"]
        );
        assert!(w.ctx.store.get(&c.cuid).await.unwrap().is_none());
    }
}
