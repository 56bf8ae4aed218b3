//! `BACKEND=swarm`: [`SwarmBackend`], the [`Backend`] and [`Observer`] of a Docker Swarm.
//! Each container is one service named by its cuid, with one replica while it should run and
//! none while it should not; its task's container runs on whichever node Swarm chose.
//!
//! The service is made with the Engine API's `POST /services/create` (and `…/update`) from
//! the same [`render::Service`] the compose backend writes, not with `docker stack deploy`
//! of the rendered file: a stack's v3 file has no `pids` limit (the Engine API has
//! `Resources.Limits.Pids` since 1.41), start/stop/restart are replicas and `ForceUpdate` of
//! one service (a CLI process each would cost ~90 ms of CPU, as with compose), and the spec
//! it sends is written to `projects/<cuid>/service.json` for operators to read.
//!
//! What Swarm cannot do is refused at create (see `spec` checks in `http`): gVisor (no
//! runtime in a service spec), disk caps (a loop mount on one host), egress policies other
//! than `internet` (iptables on one host). `no-new-privileges` has no service field before
//! API 1.50: nodes must run with `"no-new-privileges": true` in `daemon.json`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bollard::errors::Error as DockerError;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, Limit, Mount, MountBindOptions, MountTmpfsOptions, MountType, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListServicesOptions, ListTasksOptions,
    UpdateServiceOptions,
};
use futures_util::StreamExt;

use super::backend::{Backend, Events, Listed, Observer, Step};
use super::decide::Observed;
use super::render;
use crate::appdir::mounts;
use crate::config::Config;
use crate::lifecycle::{DockerState, ErrorCode};
use crate::step_error::StepError;
use crate::store::containers::Container;

/// The file in a container's project directory holding the service spec last rendered.
pub const SPEC_FILE: &str = "service.json";

/// How long a start (create, update, restart) waits for the task to run.
const TASK_START_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a step looks at the tasks while it waits.
const TASK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct SwarmBackend {
    config: Arc<Config>,
    instance_id: String,
    manager: crate::docker::Engine,
    nodes: crate::docker::NodeEngines,
    pulls: crate::images::Pulls,
}

/// Where a container's task runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskPlace {
    /// The node's host name.
    pub node: String,
    /// The task's container on that node.
    pub container: String,
    /// The node's address as the Swarm knows it (`Status.Addr`): where host-mode ports
    /// answer.
    pub address: Option<String>,
}

fn unavailable(what: &str, e: &DockerError) -> StepError {
    crate::metrics::engine_error("swarm");
    StepError::new(ErrorCode::DockerUnavailable, format!("{what}: {e}"))
}

fn lost(e: &DockerError) -> StepError {
    StepError::new(ErrorCode::DockerUnavailable, e.to_string())
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// Compose's `$$` back to `$`: the Engine API interpolates nothing.
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

fn secs_ns(text: &str) -> Option<i64> {
    let n: i64 = text.trim_end_matches('s').parse().ok()?;
    Some(n * 1_000_000_000)
}

/// The service spec of container `c` (its rendered compose service, field for field), with
/// `replicas`.
pub fn service_spec(config: &Config, instance_id: &str, c: &Container) -> ServiceSpec {
    let file = render::render(config, instance_id, c);
    let s = file
        .services
        .get(render::SERVICE)
        .expect("render always makes the one service");
    let labels: HashMap<String, String> = s
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut mounts: Vec<Mount> = s
        .volumes
        .iter()
        .map(|v| Mount {
            typ: Some(MountType::BIND),
            source: Some(v.source.clone()),
            target: Some(v.target.to_owned()),
            read_only: Some(v.read_only),
            bind_options: Some(MountBindOptions::default()),
            ..Default::default()
        })
        .collect();
    if s.read_only {
        let bytes = c
            .spec
            .resources
            .tmp_bytes
            .unwrap_or(crate::spec::DEFAULT_TMP_BYTES);
        mounts.push(Mount {
            typ: Some(MountType::TMPFS),
            target: Some("/tmp".into()),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(bytes),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let health_check = s.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.iter().map(|a| unescape(a)).collect()),
        interval: secs_ns(&h.interval),
        timeout: secs_ns(&h.timeout),
        retries: Some(i64::from(h.retries)),
        start_period: secs_ns(&h.start_period),
        ..Default::default()
    });
    let condition = match s.restart.as_str() {
        "no" => TaskSpecRestartPolicyConditionEnum::NONE,
        "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
        _ => TaskSpecRestartPolicyConditionEnum::ANY,
    };
    let ingress = config
        .backend
        .swarm()
        .is_some_and(|sw| sw.publish == crate::config::SwarmPublish::Ingress);
    let ports = s
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: p.protocol.parse().ok(),
            target_port: Some(i64::from(p.target)),
            published_port: p.published.parse().ok(),
            // `SWARM_PUBLISH`: on the task's node (default), or the routing mesh (IPVS).
            publish_mode: Some(if ingress {
                EndpointPortConfigPublishModeEnum::INGRESS
            } else {
                EndpointPortConfigPublishModeEnum::HOST
            }),
            ..Default::default()
        })
        .collect();
    let constraints = c
        .spec
        .placement
        .as_ref()
        .map(|p| p.constraints.clone())
        .filter(|c| !c.is_empty());
    ServiceSpec {
        name: Some(c.cuid.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(s.image.clone()),
                labels: Some(labels),
                args: Some(s.command.iter().map(|a| unescape(a)).collect()),
                env: Some(
                    s.environment
                        .iter()
                        .map(|(k, v)| format!("{k}={}", unescape(v)))
                        .collect(),
                ),
                dir: Some(s.working_dir.to_owned()),
                user: Some(s.user.clone()),
                tty: Some(s.tty),
                open_stdin: Some(s.stdin_open),
                read_only: Some(s.read_only),
                mounts: Some(mounts),
                stop_grace_period: Some(
                    i64::from(super::backend::STOP_TIMEOUT_SECS) * 1_000_000_000,
                ),
                health_check,
                init: Some(s.init),
                capability_drop: Some(s.cap_drop.iter().map(|c| format!("CAP_{c}")).collect()),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: s.cpus.map(|c| (c * 1e9).round() as i64),
                    memory_bytes: s.mem_limit,
                    pids: s.pids_limit,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(condition),
                delay: Some(1_000_000_000),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints,
                ..Default::default()
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some(s.logging.driver.to_owned()),
                options: Some(
                    s.logging
                        .options
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            // No VIP without IPVS; nothing resolves the service by name anyway. The routing
            // mesh needs one (Swarm refuses ingress ports with dnsrr).
            mode: Some(if ingress {
                EndpointSpecModeEnum::VIP
            } else {
                EndpointSpecModeEnum::DNSRR
            }),
            ports: Some(ports),
        }),
        ..Default::default()
    }
}

/// A node's address: its `Status.Addr`, or, where a manager reports `0.0.0.0` there (a
/// known Docker quirk of some set-ups), the host of its `ManagerStatus.Addr`.
fn node_address(
    status: Option<bollard::models::NodeStatus>,
    manager: Option<bollard::models::ManagerStatus>,
) -> Option<String> {
    let addr = status.and_then(|s| s.addr).filter(|a| !a.is_empty());
    if addr.as_deref().is_some_and(|a| a != "0.0.0.0") {
        return addr;
    }
    manager
        .and_then(|m| m.addr)
        .and_then(|a| {
            a.rsplit_once(':')
                .map(|(host, _)| host.trim_matches(['[', ']']).to_owned())
        })
        .filter(|h| !h.is_empty())
}

/// The Swarm node name of the daemon `docker` (the manager's own node).
async fn manager_node_name(docker: &bollard::Docker) -> Option<String> {
    let id = docker
        .info()
        .await
        .ok()?
        .swarm?
        .node_id
        .filter(|i| !i.is_empty())?;
    docker.inspect_node(&id).await.ok()?.description?.hostname
}

/// The replicas a service's spec asks for.
fn replicas_of(spec: &ServiceSpec) -> i64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
}

/// Terminal task states: its container is gone or going.
fn finished(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::COMPLETE
                | TaskState::FAILED
                | TaskState::SHUTDOWN
                | TaskState::REJECTED
                | TaskState::ORPHANED
                | TaskState::REMOVE
        )
    )
}

fn version_of(t: &Task) -> u64 {
    t.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// The task that speaks for the service: the newest one Swarm wants running, else the newest.
fn current_task(tasks: &[Task]) -> Option<&Task> {
    tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .max_by_key(|t| version_of(t))
        .or_else(|| tasks.iter().max_by_key(|t| version_of(t)))
}

/// The node of the newest task that has not ended (or is orphaned) on a node that is down:
/// the node the container was lost with (its task there is never seen to end while the
/// node is away).
/// Whether a node in Swarm state `state` has lost its tasks: `down` or `disconnected`. Not
/// `unknown`: a manager that just became leader marks every node so until it heartbeats
/// again (a second or so), and their tasks run on meanwhile.
fn node_lost(state: &str) -> bool {
    matches!(state, "down" | "disconnected")
}

fn lost_task<'t>(tasks: &'t [Task], down: &HashSet<String>) -> Option<&'t str> {
    tasks
        .iter()
        .filter(|t| {
            let state = t.status.as_ref().and_then(|s| s.state);
            !finished(state) || state == Some(TaskState::ORPHANED)
        })
        .filter(|t| t.node_id.as_ref().is_some_and(|n| down.contains(n)))
        .max_by_key(|t| version_of(t))
        .and_then(|t| t.node_id.as_deref())
}

fn time_of(d: Option<&bollard::models::BollardDate>) -> Option<chrono::DateTime<chrono::Utc>> {
    let d = d?;
    chrono::DateTime::parse_from_rfc3339(&d.to_string())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| t.timestamp() > 0)
}

/// The Docker state a service's replicas and current task amount to (before a look at the
/// container itself, which tells paused from running).
/// The generation label of the spec task `t` was made from.
fn task_generation(t: &Task) -> Option<&String> {
    t.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(render::LABEL_GENERATION))
}

/// `generation`: the service spec's generation label. One rule for `observe` and `list`, so
/// a resync never disagrees with a pass.
fn state_of(
    replicas: i64,
    task: Option<&Task>,
    down: &HashSet<String>,
    generation: Option<&String>,
) -> DockerState {
    let Some(t) = task else {
        return if replicas > 0 {
            // Swarm is about to make one.
            DockerState::Restarting
        } else {
            DockerState::Exited
        };
    };
    let state = t.status.as_ref().and_then(|s| s.state);
    if state == Some(TaskState::RUNNING) {
        // On a node that is down, it is gone for us: Swarm moves a task of a `restart: any`
        // service by itself, not one of `no` or `on-failure`; the pass starts a new task.
        if t.node_id.as_ref().is_some_and(|n| down.contains(n)) {
            return DockerState::Exited;
        }
        // A task of the spec before the service's last change (a stop-first update keeps
        // the old one running while the new one is made, and a failing new one may leave it
        // the newest): the new container is on its way, not running. An update judged by
        // the old task's uptime would be kept however the new one ends.
        if task_generation(t) != generation {
            return DockerState::Restarting;
        }
        return DockerState::Running;
    }
    if finished(state) {
        return if replicas > 0 && t.desired_state == Some(TaskState::RUNNING) {
            DockerState::Restarting
        } else {
            DockerState::Exited
        };
    }
    // new … starting: on its way.
    if replicas > 0 {
        DockerState::Restarting
    } else {
        DockerState::Exited
    }
}

impl SwarmBackend {
    pub fn new(
        config: Arc<Config>,
        instance_id: String,
        manager: crate::docker::Engine,
        nodes: crate::docker::NodeEngines,
        pulls: crate::images::Pulls,
    ) -> Self {
        Self {
            config,
            instance_id,
            manager,
            nodes,
            pulls,
        }
    }

    async fn manager(&self) -> Result<bollard::Docker, StepError> {
        self.manager
            .get()
            .await
            .map_err(|e| unavailable("the Swarm manager", &e))
    }

    fn instance_label(&self) -> String {
        format!("{}={}", render::LABEL_INSTANCE, self.instance_id)
    }

    /// The service of `cuid`, if it exists and is this server's.
    async fn service(&self, cuid: &str) -> Result<Option<bollard::models::Service>, StepError> {
        let docker = self.manager().await?;
        match docker.inspect_service(cuid, None).await {
            Ok(s) => {
                let ours = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.labels.as_ref())
                    .and_then(|l| l.get(render::LABEL_INSTANCE))
                    == Some(&self.instance_id);
                Ok(ours.then_some(s))
            }
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(unavailable("cannot inspect the service", &e)),
        }
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<Task>, StepError> {
        let docker = self.manager().await?;
        docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([(
                    "service".to_owned(),
                    vec![service_id.to_owned()],
                )])),
            }))
            .await
            .map_err(|e| unavailable("cannot list the service's tasks", &e))
    }

    /// The ids of the nodes that lost their tasks ([`node_lost`]).
    async fn down_nodes(&self) -> Result<HashSet<String>, StepError> {
        let docker = self.manager().await?;
        let nodes = crate::docker::swarm_nodes(&docker)
            .await
            .map_err(|e| unavailable("cannot list the nodes", &e))?;
        // Terminals on a node that is down end (docs/API.md, node loss). By name: a node
        // that left and joined again leaves a stale `down` entry of the same name behind,
        // which must not end the sessions of the live one.
        let ready: HashSet<&str> = nodes
            .iter()
            .filter(|n| n.state == "ready")
            .map(|n| n.name.as_str())
            .collect();
        self.nodes.set_down(
            nodes
                .iter()
                .filter(|n| node_lost(&n.state) && !ready.contains(n.name.as_str()))
                .map(|n| n.name.clone())
                .collect(),
        );
        Ok(nodes
            .into_iter()
            .filter(|n| node_lost(&n.state))
            .map(|n| n.id)
            .collect())
    }

    /// The host name of node `id` and its address.
    async fn node_name(&self, id: &str) -> Option<(String, Option<String>)> {
        let docker = self.manager().await.ok()?;
        let node = docker.inspect_node(id).await.ok()?;
        let name = node.description.and_then(|d| d.hostname)?;
        Some((name, node_address(node.status, node.manager_status)))
    }

    /// The Engine API of node `name`: its `SWARM_NODES` entry or, when no node is listed (a
    /// one-node Swarm), the manager's if `name` is the manager's own node; `None` otherwise
    /// (the manager's daemon knows no container of another node).
    pub async fn node_engine(&self, name: &str) -> Option<bollard::Docker> {
        match self.nodes.of(name) {
            Some(engine) => engine.get().await.ok(),
            None if self.nodes.names().next().is_none() => {
                let docker = self.manager.get().await.ok()?;
                let own = manager_node_name(&docker).await?;
                (own == name).then_some(docker)
            }
            None => None,
        }
    }

    /// Where the container of `cuid` runs now: its running task's node and container.
    pub async fn place(&self, cuid: &str) -> Result<Option<TaskPlace>, StepError> {
        let Some(service) = self.service(cuid).await? else {
            return Ok(None);
        };
        let tasks = self.tasks(service.id.as_deref().unwrap_or(cuid)).await?;
        let Some(task) = current_task(&tasks) else {
            return Ok(None);
        };
        let container = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone());
        let (Some(node_id), Some(container)) = (task.node_id.as_deref(), container) else {
            return Ok(None);
        };
        let Some((node, address)) = self.node_name(node_id).await else {
            return Ok(None);
        };
        Ok(Some(TaskPlace {
            node,
            container,
            address,
        }))
    }

    /// Sends `spec` as the service's new spec (its current version), with `replicas` and,
    /// when `force`, one more `ForceUpdate` (a new task even if nothing changed).
    async fn update(
        &self,
        current: &bollard::models::Service,
        mut spec: ServiceSpec,
        replicas: i64,
        force: bool,
    ) -> Result<(), StepError> {
        let docker = self.manager().await?;
        let old_force = current
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.force_update)
            .unwrap_or(0);
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        });
        if let Some(t) = spec.task_template.as_mut() {
            t.force_update = Some(old_force + u64::from(force));
        }
        let version = current.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let options = UpdateServiceOptions {
            version: i32::try_from(version).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let id = current.id.clone().unwrap_or_default();
        docker
            .update_service(&id, spec, options, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                crate::metrics::engine_error("swarm");
                StepError::new(
                    ErrorCode::ComposeFailed,
                    format!("cannot update the service: {e}"),
                )
            })
    }

    /// Waits, as `compose up -d` and `docker stop` do, until the service's task runs (`run`)
    /// or none does, polling its tasks: Swarm has no call that waits. A task that fails
    /// (no node fits its constraints, its image is missing there) ends the wait with Swarm's
    /// own words.
    async fn settle(&self, cuid: &str, run: bool) -> Result<(), StepError> {
        let limit = if run {
            TASK_START_LIMIT
        } else {
            std::time::Duration::from_secs(super::backend::STOP_TIMEOUT_SECS as u64 + 5)
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut said = String::new();
        loop {
            let Some(service) = self.service(cuid).await? else {
                return Ok(());
            };
            let tasks = self.tasks(service.id.as_deref().unwrap_or(cuid)).await?;
            // Only a task of the service's spec as it is now: right after an update the
            // old one is still running for a moment.
            let template = service.spec.as_ref().and_then(|s| s.task_template.as_ref());
            let force = template.and_then(|t| t.force_update).unwrap_or(0);
            let generation = |t: Option<&TaskSpec>| {
                t.and_then(|t| t.container_spec.as_ref())
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(render::LABEL_GENERATION).cloned())
            };
            let wanted: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.desired_state == Some(TaskState::RUNNING))
                .filter(|t| {
                    let spec = t.spec.as_ref();
                    spec.and_then(|s| s.force_update).unwrap_or(0) == force
                        && generation(spec) == generation(template)
                })
                .collect();
            if run {
                let newest = wanted.iter().max_by_key(|t| version_of(t));
                let status = newest.and_then(|t| t.status.as_ref());
                match status.and_then(|s| s.state) {
                    Some(TaskState::RUNNING) => return Ok(()),
                    Some(state) if finished(Some(state)) => {
                        // Its process ended already: the pass observes what it left.
                        return Ok(());
                    }
                    _ => {}
                }
                if let Some(s) = status {
                    said = [s.message.as_deref(), s.err.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ");
                }
            } else {
                let running = tasks.iter().any(|t| {
                    !finished(t.status.as_ref().and_then(|s| s.state))
                        && t.status.as_ref().and_then(|s| s.state).is_some()
                });
                if !running {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::new(
                    ErrorCode::ComposeFailed,
                    format!(
                        "the service's task did not {} within {} s{}",
                        if run { "start" } else { "stop" },
                        limit.as_secs(),
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" (Swarm: {said})")
                        }
                    ),
                ));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    /// The spec last written by `write_project`.
    fn written_spec(&self, cuid: &str) -> Result<ServiceSpec, StepError> {
        let path = render::project_dir(&self.config, cuid).join(SPEC_FILE);
        let text = std::fs::read(&path).map_err(|e| {
            StepError::new(
                ErrorCode::IoError,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            StepError::new(
                ErrorCode::IoError,
                format!("cannot read {}: {e}", path.display()),
            )
        })
    }

    /// Creates the service from its written spec, or updates it to that spec with one
    /// replica (`force`: a new task even if nothing changed).
    async fn deploy(&self, cuid: &str, force: bool) -> Result<(), StepError> {
        self.deploy_only(cuid, force).await?;
        self.settle(cuid, true).await
    }

    async fn deploy_only(&self, cuid: &str, force: bool) -> Result<(), StepError> {
        let spec = self.written_spec(cuid)?;
        match self.service(cuid).await? {
            Some(current) => self.update(&current, spec, 1, force).await,
            None => {
                let docker = self.manager().await?;
                match docker.create_service(spec, None).await {
                    Ok(_) => Ok(()),
                    // Made by a pass a moment ago: the next pass sees it.
                    Err(e) if is_status(&e, 409) => Ok(()),
                    Err(e) => Err(StepError::new(
                        ErrorCode::ComposeFailed,
                        format!("cannot create the service: {e}"),
                    )),
                }
            }
        }
    }

    /// The service's current spec sent again with `replicas` and, when `force` (given the
    /// replicas it has now) says so, a new task; nothing is sent when neither changes
    /// anything. Then waits for the task to run (or none to). `false`: no such service.
    async fn respec(
        &self,
        cuid: &str,
        replicas: i64,
        force: impl FnOnce(i64) -> bool,
    ) -> Result<bool, StepError> {
        let Some(current) = self.service(cuid).await? else {
            return Ok(false);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let now = replicas_of(&spec);
        let force = force(now);
        if force || now != replicas {
            self.update(&current, spec, replicas, force).await?;
        }
        self.settle(cuid, replicas > 0).await?;
        Ok(true)
    }

    /// Pauses or unpauses the task's container on its node.
    async fn on_node(&self, cuid: &str, pause: bool) -> Result<(), StepError> {
        let Some(place) = self.place(cuid).await? else {
            return Ok(());
        };
        let Some(docker) = self.node_engine(&place.node).await else {
            return Err(StepError::new(
                ErrorCode::DockerUnavailable,
                format!(
                    "node {} runs the container but cannot be reached (SWARM_NODES)",
                    place.node
                ),
            ));
        };
        let done = if pause {
            docker.pause_container(&place.container).await
        } else {
            docker.unpause_container(&place.container).await
        };
        match done {
            Ok(()) => Ok(()),
            Err(e) if [304, 404, 409].iter().any(|c| is_status(&e, *c)) => Ok(()),
            Err(e) => Err(StepError::new(
                ErrorCode::ComposeFailed,
                format!(
                    "docker {} failed: {e}",
                    if pause { "pause" } else { "unpause" }
                ),
            )),
        }
    }
}

impl Backend for SwarmBackend {
    fn observe<'a>(&'a self, cuid: &'a str) -> Step<'a, Option<Observed>> {
        Box::pin(async move {
            let Some(service) = self.service(cuid).await? else {
                return Ok(None);
            };
            let spec = service.spec.clone().unwrap_or_default();
            let replicas = replicas_of(&spec);
            let id = service.id.clone().unwrap_or_else(|| cuid.to_owned());
            let tasks = self.tasks(&id).await?;
            let task = current_task(&tasks);
            let down = self.down_nodes().await?;
            let generation = spec
                .labels
                .as_ref()
                .and_then(|l| l.get(render::LABEL_GENERATION));
            let mut state = state_of(replicas, task, &down, generation);
            let lost_node = match lost_task(&tasks, &down) {
                Some(id) => self.node_name(id).await.map(|(name, _)| name),
                None => None,
            };
            let lost = task.is_some_and(|t| {
                t.node_id.as_ref().is_some_and(|n| down.contains(n))
                    && t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
            });
            let status = task.and_then(|t| t.status.as_ref());
            // Lost with its node: as if killed (137), which the decision repairs.
            let exit_code = if lost {
                Some(137)
            } else {
                status
                    .and_then(|s| s.container_status.as_ref())
                    .and_then(|c| c.exit_code)
            };
            let at = time_of(status.and_then(|s| s.timestamp.as_ref()));
            let (mut started_at, mut finished_at) = match state {
                DockerState::Running => (at, None),
                DockerState::Exited if lost => (None, Some(chrono::Utc::now())),
                DockerState::Exited => (None, at),
                _ => (None, None),
            };
            let (mut health, mut health_log) = (None, None);
            let (mut node, mut node_address) = (None, None);
            if state == DockerState::Running {
                // Paused or not, its health and start: only the node knows.
                if let Ok(Some(place)) = self.place(cuid).await {
                    node = Some(place.node.clone());
                    node_address = place.address.clone();
                    if let Some(docker) = self.node_engine(&place.node).await {
                        if let Ok(info) = docker
                            .inspect_container(&place.container, None::<InspectContainerOptions>)
                            .await
                        {
                            let st = info.state.unwrap_or_default();
                            let seen = DockerState::of(&st);
                            if matches!(seen, DockerState::Running | DockerState::Paused) {
                                state = seen;
                                (health, health_log) =
                                    super::backend::health_of(state, st.health.as_ref());
                                started_at = st
                                    .started_at
                                    .as_deref()
                                    .and_then(|s| time_of(Some(&s.to_owned())))
                                    .or(started_at);
                                finished_at = None;
                            }
                        }
                    }
                }
            }
            Ok(Some(Observed {
                id,
                state,
                exit_code: if state == DockerState::Exited {
                    exit_code
                } else {
                    None
                },
                oom_killed: false,
                generation: spec
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(render::LABEL_GENERATION))
                    .and_then(|g| g.parse().ok()),
                started_at,
                finished_at,
                placement: None,
                health,
                health_log,
                node,
                node_address,
                lost_node,
            }))
        })
    }

    /// Every node that answers has the image (each node runs from its own store; Swarm's own
    /// pull of a tag without a registry would fail).
    fn ensure_image<'a>(&'a self, image: &'a str) -> Step<'a> {
        Box::pin(async move {
            // A node that is not ready takes no task, and the engine of a dead one does not
            // answer: asking it would stop every create until it is back. It gets the image
            // at the next make or update that finds it ready.
            let manager = self.manager().await?;
            let not_ready: HashSet<String> = crate::docker::swarm_nodes(&manager)
                .await
                .map_err(|e| unavailable("cannot list the nodes", &e))?
                .into_iter()
                .filter(|n| n.state != "ready")
                .map(|n| n.name)
                .collect();
            let mut engines = Vec::new();
            for name in self.nodes.names().filter(|n| !not_ready.contains(*n)) {
                if let Some(d) = self.node_engine(name).await {
                    engines.push((format!("node {name}"), d));
                }
            }
            if engines.is_empty() {
                engines.push(("the Swarm manager".to_owned(), manager));
            }
            for (place, docker) in engines {
                super::backend::ensure_image_on(&docker, image, &place, &self.config, &self.pulls)
                    .await?;
            }
            Ok(())
        })
    }

    /// Services join no network of ours: ports are published on the task's node.
    fn ensure_network(&self) -> Step<'_> {
        Box::pin(async { Ok(()) })
    }

    fn prepare_mount<'a>(&'a self, c: &'a Container) -> Step<'a> {
        Box::pin(async move {
            let owner = mounts::host_owner(&self.config, c.spec.user.as_deref(), None);
            let mount = mounts::mount_dir(&self.config, &c.cuid);
            let io = |e: std::io::Error| {
                StepError::new(
                    ErrorCode::IoError,
                    format!("cannot prepare {}: {e}", mount.display()),
                )
            };
            std::fs::create_dir_all(&mount).map_err(io)?;
            mounts::chown(&mount, owner).map_err(io)
        })
    }

    fn write_project<'a>(&'a self, c: &'a Container) -> Step<'a> {
        Box::pin(async move {
            let spec = service_spec(&self.config, &self.instance_id, c);
            let text = serde_json::to_string_pretty(&spec).expect("a spec always serializes");
            let path = render::project_dir(&self.config, &c.cuid).join(SPEC_FILE);
            render::write_atomic(&path, &text).map_err(|e| {
                StepError::new(
                    ErrorCode::IoError,
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            Ok(())
        })
    }

    fn up<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.deploy(cuid, false))
    }

    fn recreate<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.deploy(cuid, true))
    }

    /// One replica; when it has one already (its task ended), a new task.
    fn start<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            if !self.respec(cuid, 1, |now| now > 0).await? {
                return self.deploy(cuid, false).await;
            }
            Ok(())
        })
    }

    fn stop<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move { self.respec(cuid, 0, |_| false).await.map(drop) })
    }

    fn pause<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.on_node(cuid, true))
    }

    fn unpause<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(self.on_node(cuid, false))
    }

    /// A forced update: Swarm stops the task and starts a new one.
    fn restart<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move { self.respec(cuid, 1, |_| true).await.map(drop) })
    }

    fn remove<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        Box::pin(async move {
            if self.service(cuid).await?.is_none() {
                return Ok(());
            }
            let docker = self.manager().await?;
            match docker.delete_service(cuid).await {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(unavailable("cannot remove the service", &e)),
            }
        })
    }

    fn remove_files<'a>(&'a self, cuid: &'a str) -> Step<'a> {
        let dirs = [
            render::project_dir(&self.config, cuid),
            mounts::mount_dir(&self.config, cuid),
        ];
        Box::pin(super::backend::remove_container_files(
            self.config.clone(),
            cuid.to_owned(),
            dirs,
        ))
    }

    fn remove_orphan<'a>(&'a self, cuid: &'a str, id: &'a str) -> Step<'a> {
        Box::pin(async move {
            let docker = self.manager().await?;
            let removed = match docker.delete_service(id).await {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(unavailable("cannot remove the orphan service", &e)),
            };
            let project = render::project_dir(&self.config, cuid);
            let _ =
                tokio::task::spawn_blocking(move || crate::appdir::remove::remove_tree(&project))
                    .await;
            removed
        })
    }

    fn reap_strays(&self) -> Step<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Egress rules are iptables rules of one host: a Swarm service never has an address on
    /// the server's network, so a pass never asks for rules (and `egress` other than
    /// `internet` is refused at create).
    fn firewall<'a>(
        &'a self,
        _cuid: &'a str,
        _bridge: Option<&'a str>,
        _rules: &'a [super::firewall::Rule],
    ) -> Step<'a> {
        Box::pin(async { Ok(()) })
    }

    /// What the task's container runs, asked of its node: the image it was made from and
    /// that image's `RepoDigests` there. Not the service spec's image: the spec made through
    /// the Engine API names the tag (the CLI's digest pinning is the CLI's, and the server
    /// does not ask a registry at create), and even a pinned spec says what should run, not
    /// what a node made the task from (a node whose pull failed runs its own copy of the
    /// tag). `None` while no task has a container; an error when its node does not answer.
    fn running_digest<'a>(&'a self, cuid: &'a str, reference: &'a str) -> Step<'a, Option<String>> {
        Box::pin(async move {
            let Some(place) = self.place(cuid).await? else {
                return Ok(None);
            };
            let Some(docker) = self.node_engine(&place.node).await else {
                return Err(StepError::new(
                    ErrorCode::DockerUnavailable,
                    format!("node {} cannot be reached (SWARM_NODES)", place.node),
                ));
            };
            crate::images::container_digest(&docker, &place.container, reference)
                .await
                .map_err(|e| unavailable("cannot inspect the task's image", &e))
        })
    }

    fn registry_digest<'a>(&'a self, reference: &'a str) -> Step<'a, String> {
        Box::pin(async move {
            let docker = self.manager().await?;
            crate::images::registry_digest(
                &docker,
                reference,
                self.config.registry_auth_file.as_deref(),
                &self.config.registry_allowlist,
            )
            .await
        })
    }
}

impl Observer for SwarmBackend {
    /// One call for this server's services, one for their tasks.
    fn list(&self) -> Step<'_, Vec<Listed>> {
        Box::pin(async move {
            let docker = self.manager().await?;
            let services = docker
                .list_services(Some(ListServicesOptions {
                    filters: Some(HashMap::from([(
                        "label".to_owned(),
                        vec![self.instance_label()],
                    )])),
                    ..Default::default()
                }))
                .await
                .map_err(|e| unavailable("cannot list the services", &e))?;
            let tasks = docker
                .list_tasks(None::<ListTasksOptions>)
                .await
                .map_err(|e| unavailable("cannot list the tasks", &e))?;
            let down = self.down_nodes().await?;
            let mut by_service: HashMap<&str, Vec<Task>> = HashMap::new();
            for t in &tasks {
                if let Some(s) = t.service_id.as_deref() {
                    by_service.entry(s).or_default().push(t.clone());
                }
            }
            Ok(services
                .iter()
                .filter_map(|s| {
                    let spec = s.spec.as_ref()?;
                    let labels = spec.labels.as_ref()?;
                    let cuid = labels.get(render::LABEL_CUID)?.clone();
                    let id = s.id.clone()?;
                    let replicas = replicas_of(spec);
                    let tasks = by_service
                        .get(id.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    Some(Listed {
                        state: state_of(
                            replicas,
                            current_task(tasks),
                            &down,
                            labels.get(render::LABEL_GENERATION),
                        ),
                        id,
                        placement: None,
                        generation: labels
                            .get(render::LABEL_GENERATION)
                            .and_then(|g| g.parse().ok()),
                        health: None,
                        cuid,
                    })
                })
                .collect())
        })
    }

    fn firewall_rules(&self) -> Step<'_, super::firewall::Current> {
        Box::pin(async { Ok(super::firewall::Current::default()) })
    }

    /// The manager's service and node events, and the container events of every node that
    /// answers. A node event (one went down or came back) ends the stream: the listener then
    /// resyncs and subscribes again, to the nodes that answer then.
    fn events(&self) -> Events {
        let manager = self.manager.clone();
        let nodes: Vec<crate::docker::Engine> = self
            .nodes
            .names()
            .filter_map(|n| self.nodes.of(n).cloned())
            .collect();
        let label = self.instance_label();
        futures_util::stream::once(async move {
            let docker = match manager.get().await {
                Ok(d) => d,
                Err(e) => return futures_util::stream::iter([Err(lost(&e))]).boxed(),
            };
            let swarm = docker
                .events(Some(EventsOptions {
                    filters: Some(HashMap::from([(
                        "type".to_owned(),
                        vec!["service".to_owned(), "node".to_owned()],
                    )])),
                    ..Default::default()
                }))
                .map(|item| match item {
                    Ok(e) => {
                        crate::metrics::get().docker_events.inc();
                        let kind = e.typ.map(|t| t.to_string()).unwrap_or_default();
                        if kind == "node" {
                            return Err(StepError::new(
                                ErrorCode::DockerUnavailable,
                                "a node changed",
                            ));
                        }
                        Ok(e.actor
                            .and_then(|a| a.attributes)
                            .and_then(|a| a.get("name").cloned()))
                    }
                    Err(e) => Err(lost(&e)),
                })
                .boxed();
            let mut streams = vec![swarm];
            for engine in nodes {
                let Ok(d) = engine.get().await else { continue };
                if tokio::time::timeout(std::time::Duration::from_secs(1), d.ping())
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    continue;
                }
                let options = EventsOptions {
                    filters: Some(HashMap::from([
                        ("type".to_owned(), vec!["container".to_owned()]),
                        ("label".to_owned(), vec![label.clone()]),
                    ])),
                    ..Default::default()
                };
                streams.push(
                    d.events(Some(options))
                        .map(|item| match item {
                            Ok(e) => Ok(e
                                .actor
                                .and_then(|a| a.attributes)
                                .and_then(|a| a.get(render::LABEL_CUID).cloned())),
                            Err(e) => Err(lost(&e)),
                        })
                        .boxed(),
                );
            }
            futures_util::stream::select_all(streams)
                .filter_map(|item| async move { item.transpose() })
                .boxed()
        })
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod address_tests {
    use super::node_address;
    use bollard::models::{ManagerStatus, NodeStatus};

    fn status(addr: &str) -> Option<NodeStatus> {
        Some(NodeStatus {
            addr: Some(addr.into()),
            ..Default::default()
        })
    }

    fn manager(addr: &str) -> Option<ManagerStatus> {
        Some(ManagerStatus {
            addr: Some(addr.into()),
            ..Default::default()
        })
    }

    #[test]
    fn a_nodes_address_is_its_status_addr_else_its_managers_host() {
        assert_eq!(
            node_address(status("10.0.0.12"), None).as_deref(),
            Some("10.0.0.12")
        );
        assert_eq!(
            node_address(status("10.0.0.11"), manager("10.9.9.9:2377")).as_deref(),
            Some("10.0.0.11")
        );
        // Some managers report 0.0.0.0 as their Status.Addr.
        assert_eq!(
            node_address(status("0.0.0.0"), manager("10.0.0.11:2377")).as_deref(),
            Some("10.0.0.11")
        );
        assert_eq!(
            node_address(status("0.0.0.0"), manager("[fd00::1]:2377")).as_deref(),
            Some("fd00::1")
        );
        assert_eq!(node_address(None, None), None);
        assert_eq!(node_address(status("0.0.0.0"), None), None);
    }
}
