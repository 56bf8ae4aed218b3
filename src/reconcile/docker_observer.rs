//! [`Observer`] for Docker: one Engine API call lists this server's containers (by its
//! label), and one event stream, filtered by the same label, names the ones that changed.

use std::collections::HashMap;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;

use super::backend::{DockerBackend, Events, Listed, Observer, Step};
use super::render;
use crate::lifecycle::{DockerState, ErrorCode};
use crate::step_error::StepError;

/// Container events that can mean drift (exec, attach and the like cannot).
const EVENTS: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "stop",
    "oom",
    "pause",
    "unpause",
    "destroy",
    // `health_status: healthy` and the like: Docker matches the prefix for this one.
    "health_status",
];

fn lost(e: &bollard::errors::Error) -> StepError {
    StepError::new(ErrorCode::DockerUnavailable, e.to_string())
}

impl Observer for DockerBackend {
    fn list(&self) -> Step<'_, Vec<Listed>> {
        Box::pin(async move {
            let network = render::network_name(&self.instance_id);
            let options = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![self.instance_label()],
                )])),
                ..Default::default()
            };
            let listed = self
                .docker
                .get()
                .await
                .map_err(|e| lost(&e))?
                .list_containers(Some(options))
                .await
                .map_err(|e| {
                    crate::metrics::engine_error("list_containers");
                    lost(&e)
                })?;
            Ok(listed
                .into_iter()
                .filter_map(|c| {
                    let placement = super::backend::placement(
                        c.network_settings
                            .as_ref()
                            .and_then(|n| n.networks.as_ref()),
                        &network,
                    );
                    let labels = c.labels.unwrap_or_default();
                    let cuid = labels.get(render::LABEL_CUID)?.clone();
                    let state =
                        DockerState::parse(&c.state.map(|s| s.to_string()).unwrap_or_default());
                    let health_field = c
                        .health
                        .as_ref()
                        .and_then(|h| h.status)
                        .map(|s| s.to_string());
                    Some(Listed {
                        id: c.id.unwrap_or_else(|| cuid.clone()),
                        state,
                        health: super::backend::listed_health(
                            state,
                            health_field.as_deref(),
                            c.status.as_deref(),
                        ),
                        generation: labels
                            .get(render::LABEL_GENERATION)
                            .and_then(|g| g.parse().ok()),
                        cuid,
                        placement,
                    })
                })
                .collect())
        })
    }

    fn firewall_rules(&self) -> Step<'_, crate::reconcile::firewall::Current> {
        Box::pin(async move {
            let save = super::iptables::save().await?;
            Ok(crate::reconcile::firewall::parse(&save, &self.chains))
        })
    }

    fn events(&self) -> Events {
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                (
                    "event".to_owned(),
                    EVENTS.iter().map(|e| e.to_string()).collect(),
                ),
                ("label".to_owned(), vec![self.instance_label()]),
            ])),
            ..Default::default()
        };
        let docker = self.docker.clone();
        futures_util::stream::once(async move {
            let docker = match docker.get().await {
                Ok(docker) => docker,
                Err(e) => return futures_util::stream::iter([Err(lost(&e))]).boxed(),
            };
            docker
                .events(Some(options))
                .filter_map(|item| async move {
                    match item {
                        Ok(event) => {
                            crate::metrics::get().docker_events.inc();
                            event
                                .actor
                                .and_then(|a| a.attributes)
                                .and_then(|a| a.get(render::LABEL_CUID).cloned())
                                .map(Ok)
                        }
                        Err(e) => {
                            crate::metrics::engine_error("events");
                            Some(Err(lost(&e)))
                        }
                    }
                })
                .boxed()
        })
        .flatten()
        .boxed()
    }
}
