//! What a store operation can refuse or fail with; `http/` turns each into its answer.

/// A refused or failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this cuid (`404 CONTAINER_NOT_FOUND`).
    #[error("no container {0}")]
    NotFound(String),
    /// `If-Match` named another generation than the stored one (`412 STALE_GENERATION`).
    #[error("If-Match names generation {expected}, the container is at generation {current}")]
    StaleGeneration { expected: i64, current: i64 },
    /// The container is tombstoned: its spec no longer changes (`422 CONTAINER_DELETING`).
    #[error("the container is being deleted")]
    Deleting,
    /// A host port another container holds (`409 PORT_CONFLICT`).
    #[error("host port {host}/{protocol} already belongs to another container")]
    PortConflict {
        host: u16,
        protocol: String,
        holder: Option<String>,
    },
    /// Another live container of the same tenant has this `name` (`409 NAME_TAKEN`).
    #[error("the name {name} is taken by another container")]
    NameTaken {
        name: String,
        holder: Option<String>,
    },
    /// SQLite failed; the details go to the server log only.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
