//! Where a container's Docker side is, for the views that ask Docker about it live (stats,
//! status, logs, terminals, the idle sampler): this host's daemon and the cuid with
//! `BACKEND=compose`; with `swarm`, the Engine API of the node that runs its task
//! (`SWARM_NODES`) and the task's container. `http` asks through the same [`Locator`] the
//! idle sampler holds, so the two never disagree about a container that moved.

use std::sync::Arc;

use crate::config::Config;
use crate::lifecycle::ErrorCode;
use crate::step_error::StepError;

/// A container's engine and its name there.
pub struct Located {
    pub docker: bollard::Docker,
    /// Its name (compose: the cuid) or id (Swarm: the task's container) on that engine.
    pub container: String,
    /// Swarm: the node that runs its task, and that node's address; `None` on one host and
    /// while no task runs.
    pub node: Option<String>,
    pub address: Option<String>,
}

/// Finds containers on this host or across the Swarm (cheap to clone).
#[derive(Clone)]
pub struct Locator {
    config: Arc<Config>,
    instance_id: String,
    manager: crate::docker::Engine,
    nodes: crate::docker::NodeEngines,
}

impl Locator {
    pub fn new(
        config: Arc<Config>,
        instance_id: String,
        manager: crate::docker::Engine,
        nodes: crate::docker::NodeEngines,
    ) -> Self {
        Self {
            config,
            instance_id,
            manager,
            nodes,
        }
    }

    pub fn swarm(&self) -> bool {
        self.config.backend.swarm().is_some()
    }

    fn backend(&self) -> super::swarm::SwarmBackend {
        super::swarm::SwarmBackend::new(
            self.config.clone(),
            self.instance_id.clone(),
            self.manager.clone(),
            self.nodes.clone(),
            crate::images::Pulls::default(),
        )
    }

    /// Where `cuid`'s container is. A Swarm container without a task (stopped, never
    /// started) answers with the manager and the cuid, which Docker does not know: as a
    /// container never started on one host. The manager (or this host's daemon) that cannot
    /// be reached, or a node that runs it but cannot be, is `DOCKER_UNAVAILABLE`, naming
    /// the node.
    pub async fn locate(&self, cuid: &str) -> Result<Located, StepError> {
        let manager = self.manager.get().await.map_err(|e| {
            StepError::new(
                ErrorCode::DockerUnavailable,
                format!("Docker is unreachable: {e}"),
            )
        })?;
        let here = |docker| Located {
            docker,
            container: cuid.to_owned(),
            node: None,
            address: None,
        };
        if !self.swarm() {
            return Ok(here(manager));
        }
        let swarm = self.backend();
        let Some(place) = swarm.place(cuid).await? else {
            return Ok(here(manager));
        };
        match swarm.node_engine(&place.node).await {
            Some(docker) => Ok(Located {
                docker,
                container: place.container,
                node: Some(place.node),
                address: place.address,
            }),
            None => Err(StepError::new(
                ErrorCode::DockerUnavailable,
                format!(
                    "node {} runs container {cuid} but its Docker Engine cannot be reached (SWARM_NODES)",
                    place.node
                ),
            )),
        }
    }
}
