//! What the API answers about a container and `/events` sends for it: one type, so the
//! two can never differ. Below both `http` and `events`, above the store whose row it shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::spec::{
    Health, HealthCheck, Idle, Isolation, Lifetime, Network, Port, Resources, RestartPolicy,
};
use crate::store::containers::Container;
use crate::store::updates::{LastUpdate, UpdateAvailable};

/// The representation of a container (docs/API.md §4): the spec plus identity, states and
/// generations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Container)]
pub struct Representation {
    pub cuid: String,
    /// The name people know it by (a DNS label, unique among its tenant's live
    /// containers), or null.
    #[schema(required = true)]
    pub name: Option<String>,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: Resources,
    pub ports: Vec<Port>,
    /// argv, or null for `BOOT_COMMAND`.
    #[schema(required = true)]
    pub command: Option<Vec<String>>,
    pub restart: RestartPolicy,
    /// `uid:gid`, or null for the server's default.
    #[schema(required = true)]
    pub user: Option<String>,
    /// Root filesystem read-only, `/tmp` a tmpfs of `resources.tmp`.
    pub read_only: bool,
    /// The runtime: `runc` or `gvisor` (gVisor's `runsc`).
    pub isolation: Isolation,
    /// What the container may reach (docs/API.md, egress).
    pub network: Network,
    /// Its time limit, or null (docs/API.md, lifetime).
    #[schema(required = true)]
    pub lifetime: Option<Lifetime>,
    /// The deadline (RFC 3339 UTC): at it the server stops or deletes the container as
    /// `lifetime.on_expiry` says. Null when it has no lifetime or the deadline was acted on.
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// What the server does when nobody uses it (docs/API.md, idle); null: nothing.
    #[schema(required = true)]
    pub idle: Option<Idle>,
    /// The spec's `health` (the check), or null: shown under this name because `health`
    /// is the observed status.
    #[schema(required = true)]
    pub health_check: Option<HealthCheck>,
    /// Observed health: `starting`, `healthy`, `unhealthy`, or null (no health check, or
    /// not running).
    #[schema(required = true)]
    pub health: Option<Health>,
    /// The tail (at most 1 KiB) of the last probe's output, as last observed, or null.
    #[schema(required = true)]
    pub health_log: Option<String>,
    /// The Swarm node that runs it (`BACKEND=swarm`), as last observed; null on one host, and
    /// while no task runs.
    #[schema(required = true)]
    pub node: Option<String>,
    /// Where each published port answers now (docs/API.md, endpoints): on Swarm the address
    /// of the node that runs the task; on one host the port's `host_ip` (null for every
    /// address of the server's host). Empty while it neither runs nor is paused.
    pub endpoints: Vec<Endpoint>,
    /// Its last move from one Swarm node to another (`{from, to, at, reason}`), or null:
    /// never moved (docs/API.md, node loss).
    #[schema(required = true)]
    pub last_move: Option<crate::store::containers::NodeMove>,
    pub desired_state: DesiredState,
    pub status: Shown,
    /// Why the server itself set `desired_state`: `expired` (its `lifetime` ran out) or
    /// `idle` (its `idle` policy); null when a client's request did (docs/API.md).
    #[schema(required = true)]
    pub status_reason: Option<StatusReason>,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    /// The last exit (`exited`, `restarting`) was a kill by the kernel's OOM killer: the
    /// container reached its memory limit.
    pub oom_killed: bool,
    pub generation: i64,
    pub observed_generation: i64,
    /// `{code, message, at, …}` of the last failure, or null.
    #[schema(value_type = Option<Object>, required = true)]
    pub last_error: Option<Value>,
    /// RFC 3339 (UTC).
    pub created_at: String,
    pub updated_at: String,
    /// The tenant it belongs to (docs/API.md §13); `null`: the operator's.
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// Newer digests of the image's tag are rolled out by the server (docs/API.md, image
    /// updates).
    pub auto_update: bool,
    /// Swarm placement constraints (`BACKEND=swarm`); null: none.
    #[schema(required = true)]
    pub placement: Option<crate::spec::Placement>,
    /// The registry digest (`sha256:…`) of the image it runs, once known (checked with the
    /// registry, or set by an update); null for an image built on the host.
    #[schema(required = true)]
    pub image_digest: Option<String>,
    /// A newer digest of its tag on the registry, or null.
    #[schema(required = true)]
    pub update_available: Option<UpdateAvailable>,
    /// An update is being rolled out and judged (it ends in `last_update`).
    pub updating: bool,
    /// The outcome of the last update, or null.
    #[schema(required = true)]
    pub last_update: Option<LastUpdate>,
}

/// Where one published port of a container answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    /// The address to connect to: the Swarm node's address (`Status.Addr`), or on one host
    /// the port's `host_ip`; null when that is every address (`0.0.0.0`, `::`) of the
    /// server's host, or the node's address is not known.
    #[schema(required = true, example = "10.231.78.12")]
    pub address: Option<String>,
    /// The published port at that address.
    pub port: u16,
    /// The container's port.
    pub container: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The Swarm node that publishes it; null on one host.
    #[schema(required = true)]
    pub node: Option<String>,
}

/// The endpoints of published `ports` at `node` (and its `address`) on Swarm, or on this
/// host (`node` `None`).
pub fn endpoints_at(ports: &[Port], node: Option<&str>, address: Option<&str>) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|p| Endpoint {
            address: match node {
                Some(_) => address.map(str::to_owned),
                None => host_address(&p.host_ip),
            },
            port: p.host,
            container: p.container,
            protocol: p.protocol.clone(),
            node: node.map(str::to_owned),
        })
        .collect()
}

/// The endpoints of `c` as last observed (its `node` and that node's address): none unless
/// it runs or is paused.
pub fn endpoints(c: &Container) -> Vec<Endpoint> {
    if !matches!(c.status, Status::Running | Status::Paused) {
        return Vec::new();
    }
    endpoints_at(&c.spec.ports, c.node.as_deref(), c.node_address.as_deref())
}

/// A one-host port's `host_ip` as an address to connect to: none for "every address".
fn host_address(ip: &str) -> Option<String> {
    match ip.parse::<std::net::IpAddr>() {
        Ok(a) if a.is_unspecified() => None,
        _ if ip.is_empty() => None,
        _ => Some(ip.to_owned()),
    }
}

/// `status` of a representation: the observed status, or `deleted` in the answer to a
/// `DELETE` that waited for the container to be gone.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Shown {
    Observed(Status),
    Gone(Gone),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gone {
    Deleted,
}

/// The representation of a stored container.
pub fn representation(c: &Container) -> Representation {
    let s = &c.spec;
    Representation {
        cuid: c.cuid.clone(),
        name: s.name.clone(),
        image: s.image.clone(),
        env: s.env.clone(),
        tags: s.tags.clone(),
        resources: s.resources.clone(),
        ports: s.ports.clone(),
        command: s.command.clone(),
        restart: s.restart,
        user: s.user.clone(),
        read_only: s.read_only,
        isolation: s.isolation,
        network: s.network.clone(),
        lifetime: c.lifetime,
        expires_at: c.expires_at.clone(),
        idle: s.idle,
        health_check: s.health.clone(),
        health: c.health,
        health_log: c.health_log.clone(),
        node: c.node.clone(),
        endpoints: endpoints(c),
        last_move: c.last_move.clone(),
        desired_state: c.desired_state,
        status: Shown::Observed(c.status),
        status_reason: c.status_reason,
        exit_code: c.exit_code,
        oom_killed: c.oom_killed,
        generation: c.generation,
        observed_generation: c.observed_generation,
        last_error: c.last_error.clone(),
        created_at: c.created_at.clone(),
        updated_at: c.updated_at.clone(),
        tenant: c.tenant.clone(),
        auto_update: s.auto_update,
        placement: s.placement.clone(),
        image_digest: c.image.digest.clone(),
        update_available: c.image.update_available.clone(),
        updating: c.image.pending.is_some(),
        last_update: c.image.last_update.clone(),
    }
}
