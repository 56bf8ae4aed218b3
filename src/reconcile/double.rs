//! The recording double of the reconciler's world, for unit tests: it plays Docker for one
//! container and lists, streams and removes what a test sets up, records every call, and
//! fails the calls it is told to. It decides nothing: the tests check what the reconciler
//! decides and asks for. Real Docker is the integration tests' job.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;

use super::backend::{Backend, Events, Listed, Observer, Step};
use super::decide::{DesiredState, Observed};
use super::firewall::{self, Placement, Rule};
use super::{Ctx, Reconciler};
use crate::lifecycle::{DockerState, ErrorCode};
use crate::spec::{Resources, Spec};
use crate::step_error::StepError;
use crate::store::containers::Container;

/// Plays Docker: holds one container's state, records every call, and fails the calls
/// it is told to.
#[derive(Default)]
pub(super) struct Recorder {
    /// Every call so far, in order (a channel, so a test can wait for one).
    calls: watch::Sender<Vec<String>>,
    pub container: Mutex<Option<Observed>>,
    failures: Mutex<HashMap<&'static str, VecDeque<StepError>>>,
    /// Observations to answer instead of the container (e.g. one that never settles).
    pub stuck: Mutex<Option<Observed>>,
    /// The generation the project file was last written with: what `up` makes.
    project_generation: Mutex<i64>,
    /// What `list` answers.
    pub listed: Mutex<Vec<Listed>>,
    /// What the next subscriptions to events get, in order; then a stream that never ends.
    pub event_streams: Mutex<VecDeque<Events>>,
    /// The egress rules in place, by container, and the bridge-wide ones.
    pub rules: Mutex<BTreeMap<String, Vec<Rule>>>,
    pub base: Mutex<Vec<Rule>>,
    /// The hooks from `DOCKER-USER` and `INPUT` are gone (until the next `firewall` call).
    pub unhooked: Mutex<bool>,
    /// What the registry has, by reference (absent: `IMAGE_NOT_FOUND`).
    pub registry: Mutex<HashMap<String, String>>,
    /// The digest the container runs.
    pub running: Mutex<Option<String>>,
}

/// Where the double's container is while it runs.
pub(super) fn placement() -> Placement {
    Placement {
        address: "172.18.0.2".parse().unwrap(),
        bridge: "br-0123456789ab".into(),
    }
}

/// A container in `state` has an address (running, paused) or not.
fn placed(state: DockerState) -> Option<Placement> {
    matches!(
        state,
        DockerState::Running | DockerState::Paused | DockerState::Restarting
    )
    .then(placement)
}

impl Recorder {
    fn with(o: Option<Observed>) -> Self {
        let r = Self::default();
        *r.container.lock().unwrap() = o;
        r
    }

    pub fn fail_next(&self, call: &'static str, code: ErrorCode) {
        self.failures
            .lock()
            .unwrap()
            .entry(call)
            .or_default()
            .push_back(StepError::new(code, format!("{call} failed")));
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Waits (at most 10 s) until the calls so far satisfy `done`.
    pub async fn wait_for_calls(&self, done: impl FnMut(&Vec<String>) -> bool) {
        let mut rx = self.calls.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.wait_for(done))
            .await
            .expect("the calls waited for were not made")
            .expect("the recorder lives as long as the test");
    }

    fn record(&self, call: String) {
        self.calls.send_modify(|c| c.push(call));
    }

    /// Records the call; its planned failure, if any; else applies `effect`.
    fn step(
        &self,
        call: &'static str,
        effect: impl FnOnce(&mut Option<Observed>),
    ) -> Result<(), StepError> {
        self.record(call.to_owned());
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
                o.placement = placed(state);
                if state == DockerState::Running {
                    o.started_at = Some(Utc::now());
                    // A (re)start begins a health check anew, as Docker's does.
                    if o.health.is_some() {
                        o.health = Some(crate::spec::Health::Starting);
                    }
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
                placement: Some(placement()),
                health: None,
                health_log: None,
                node: None,
                node_address: None,
                lost_node: None,
            })
        }))
    }
    fn recreate<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        self.record("recreate".to_owned());
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
            placement: Some(placement()),
            health: None,
            health_log: None,
            node: None,
            node_address: None,
            lost_node: None,
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
    fn remove_orphan<'a>(&'a self, cuid: &'a str, id: &'a str) -> Step<'a> {
        let r = self.step("remove_orphan", |_| {});
        self.record(format!("orphan {cuid} {id}"));
        ready(r)
    }
    fn reap_strays(&self) -> Step<'_> {
        ready(self.step("reap_strays", |_| {}))
    }
    fn firewall<'a>(
        &'a self,
        cuid: &'a str,
        bridge: Option<&'a str>,
        rules: &'a [Rule],
    ) -> Step<'a> {
        let r = self.step("firewall", |_| {});
        if r.is_ok() {
            let mut all = self.rules.lock().unwrap();
            if rules.is_empty() {
                all.remove(cuid);
            } else {
                all.insert(cuid.to_owned(), rules.to_vec());
            }
            if let (Some(bridge), false) = (bridge, rules.is_empty()) {
                *self.base.lock().unwrap() = firewall::base(bridge);
                *self.unhooked.lock().unwrap() = false;
            }
        }
        ready(r)
    }
    fn running_digest<'a>(
        &'a self,
        _cuid: &'a str,
        _reference: &'a str,
    ) -> Step<'a, Option<String>> {
        ready(Ok(self.running.lock().unwrap().clone()))
    }
    fn registry_digest<'a>(&'a self, reference: &'a str) -> Step<'a, String> {
        let known = self.registry.lock().unwrap().get(reference).cloned();
        ready(known.ok_or_else(|| StepError::new(ErrorCode::ImageNotFound, "no such tag")))
    }
}

impl Observer for Recorder {
    fn list(&self) -> Step<'_, Vec<Listed>> {
        let r = self.step("list", |_| {});
        ready(r.map(|()| self.listed.lock().unwrap().clone()))
    }
    fn firewall_rules(&self) -> Step<'_, firewall::Current> {
        let r = self.step("firewall_rules", |_| {});
        let hooked = !*self.unhooked.lock().unwrap();
        ready(r.map(|()| firewall::Current {
            forward_exists: true,
            input_exists: true,
            forward_hooked: hooked,
            input_hooked: hooked,
            by_cuid: self.rules.lock().unwrap().clone(),
            base: self.base.lock().unwrap().clone(),
            foreign: 0,
        }))
    }
    fn events(&self) -> Events {
        self.record("events".to_owned());
        self.event_streams
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Box::pin(futures_util::stream::pending()))
    }
}

pub(super) struct World {
    pub ctx: Arc<Ctx>,
    pub backend: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

/// A context on a fresh store in a temporary directory, acting through a recorder that
/// shows `observed` as the container.
pub(super) async fn world(observed: Option<Observed>) -> World {
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
        audit,
        identity,
        Reconciler::new(),
        backend.clone(),
    );
    World {
        ctx: Arc::new(ctx),
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
        restart: crate::spec::RestartPolicy::OnFailure,
        user: None,
        read_only: false,
        isolation: Default::default(),
        network: Default::default(),
        name: None,
        idle: None,
        health: None,
        auto_update: false,
        placement: None,
    }
}

pub(super) async fn insert(w: &World, desired: DesiredState) -> Container {
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

pub(super) async fn act(w: &World, cuid: &str, desired: DesiredState, restart: bool) {
    w.ctx
        .store
        .transition::<crate::store::Error>(cuid, |_| Ok(Some((desired, restart))))
        .await
        .unwrap();
}

pub(super) async fn row(w: &World, cuid: &str) -> Container {
    w.ctx.store.get(cuid).await.unwrap().unwrap()
}

/// A container that was started and that a pass saw running, as Docker's list shows it.
pub(super) async fn settled_running(w: &World) -> Container {
    let c = insert(w, DesiredState::Created).await;
    act(w, &c.cuid, DesiredState::Running, false).await;
    let seen = crate::store::containers::Observation {
        status: crate::lifecycle::Status::Running,
        exit_code: None,
        oom_killed: false,
        observed_generation: c.generation,
        last_error: None,
        restart_done: 0,
        health: None,
        health_log: None,
        node: None,
        node_address: None,
        lost_node: None,
    };
    assert!(w
        .ctx
        .store
        .record_observation(&c.cuid, &seen)
        .await
        .unwrap());
    row(w, &c.cuid).await
}

/// `c` moved into tenant `name` (made if missing), as the API's create would have put it
/// (`Store::insert_owned`); moving an existing row keeps the tests' world as it was built.
pub(super) async fn in_tenant(w: &World, c: &Container, name: &str) -> Container {
    let pool = &w.ctx.store.pool;
    sqlx::query(
        "INSERT OR IGNORE INTO tenants (name, created_at, updated_at) VALUES (?1, 'now', 'now')",
    )
    .bind(name)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE containers SET tenant = ? WHERE cuid = ?")
        .bind(name)
        .bind(&c.cuid)
        .execute(pool)
        .await
        .unwrap();
    row(w, &c.cuid).await
}

/// `c`'s egress rules in place (with the bridge-wide ones), as a pass would have put them
/// for it running at [`placement`].
pub(super) fn rules_in_place(w: &World, c: &Container) {
    let p = placement();
    w.backend.rules.lock().unwrap().insert(
        c.cuid.clone(),
        firewall::rules(&c.cuid, &c.spec.network, &p),
    );
    *w.backend.base.lock().unwrap() = firewall::base(&p.bridge);
}

/// `c` in the backend's list, in `state`, made from its current spec.
pub(super) fn listed(c: &Container, state: DockerState) -> Listed {
    Listed {
        cuid: c.cuid.clone(),
        id: format!("id-{}", c.cuid),
        state,
        generation: Some(c.generation),
        placement: placed(state),
        health: None,
    }
}

pub(super) fn observed(state: DockerState, generation: i64) -> Observed {
    Observed {
        id: "id".into(),
        state,
        exit_code: None,
        oom_killed: false,
        generation: Some(generation),
        started_at: Some(Utc::now() - chrono::Duration::hours(1)),
        finished_at: None,
        placement: placed(state),
        health: None,
        health_log: None,
        node: None,
        node_address: None,
        lost_node: None,
    }
}
