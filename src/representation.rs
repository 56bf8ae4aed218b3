//! What the API answers about a container and `/events` sends for it: one type, so the
//! two can never differ. Below both `http` and `events`, above the store whose row it shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::spec::{Isolation, Network, Port, Resources, RestartPolicy};
use crate::store::containers::Container;

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
    }
}
