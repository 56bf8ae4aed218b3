//! What the API answers about a container and `/events` sends for it: one function, so the
//! two can never differ. Below both `http` and `events`, above the store whose row it shows.

use serde_json::{json, Value};

use crate::store::containers::Container;

/// The representation of docs/API.md §4: the spec plus identity, states and generations.
pub fn representation(c: &Container) -> Value {
    let s = &c.spec;
    json!({
        "cuid": c.cuid,
        "image": s.image,
        "env": s.env,
        "tags": s.tags,
        "resources": {
            "cpus": s.resources.cpus,
            "memory": s.resources.memory,
            "memory_bytes": s.resources.memory_bytes,
            "pids": s.resources.pids,
            "tmp": s.resources.tmp,
            "tmp_bytes": s.resources.tmp_bytes,
        },
        "ports": s.ports,
        "command": s.command,
        "restart": s.restart,
        "user": s.user,
        "read_only": s.read_only,
        "desired_state": c.desired_state,
        "status": c.status,
        "exit_code": c.exit_code,
        "generation": c.generation,
        "observed_generation": c.observed_generation,
        "last_error": c.last_error,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}
