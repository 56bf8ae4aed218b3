//! container-manager: a control plane that keeps Docker containers matching the desired
//! state stored in SQLite, through one `docker compose` v2 project per container.
//!
//! Map of the modules, in layers: each uses only the layers below it and the leaves
//! (`tests/it/layers.rs` checks it).
//!
//! - Life cycle and commands: [`server`] (start the background tasks, serve, drain; [`app()`]
//!   is the router built from a state), [`connections`] (accepting connections: caps,
//!   header, body and write timeouts), [`first_run`] (credentials made, stored and printed on
//!   a first start), [`backup`] (`container-manager backup PATH`).
//! - [`http`]: routes, extractors, schema types, the auth layer and the one HTTP error
//!   mapping; response building, waiting for convergence and pre-start checks have their own
//!   modules there, so `containers` and `actions` depend on them and never on each other.
//! - [`state`]: the shared state handlers and background tasks use, and opening it.
//! - [`expiry`]: the deadline timer of containers' `lifetime`: writes desired state when a
//!   deadline passes and wakes the reconciler.
//! - [`reconcile`]: the controller that makes Docker match the store: a FIFO queue, a worker,
//!   passes that decide and act through the `Backend` and `Observer` traits.
//! - Domain: [`images`] (pull policy, registry credentials, pulls with progress), [`appdir`]
//!   (each container's `/app` on the host), [`terminal`] (the WebSocket terminal session),
//!   [`events`] (the change feed behind `GET /events`), [`audit`] (`actions.jsonl`),
//!   [`credentials`] (the configured credentials and the failed-login throttle),
//!   [`sessions`] (console sign-in sessions, keys and tickets), [`idle`] (what counts as use
//!   of a container, for idle policies), [`webhooks`] (events classified into a durable
//!   outbox, and their signed deliveries).
//! - [`representation`]: what the API answers and `/events` sends about a container.
//! - [`store`]: the SQLite state store (desired and observed state).
//! - [`spec`] (the container spec a client may send, and its validation), [`lifecycle`]
//!   (desired states, observed statuses and the pure rules between them), [`step_error`]
//!   (why one reconcile step failed).
//! - [`error`] (the one error type, rendered as the API's error body), [`config`] (settings
//!   from `.env` and the environment, validated once).
//! - Leaves, used by anyone and using nothing of the crate: [`docker`] (the Engine API client
//!   and a clean environment for `docker` processes), [`metrics`] (the Prometheus
//!   instruments), [`cidr`] (IP networks), [`image_ref`] (image references).

pub mod appdir;
pub mod audit;
pub mod backup;
pub mod cidr;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod docker;
pub mod error;
pub mod events;
pub mod expiry;
pub mod first_run;
pub mod http;
pub mod idle;
pub mod image_ref;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod reconcile;
pub mod representation;
pub mod server;
pub mod sessions;
pub mod spec;
pub mod state;
pub mod step_error;
pub mod store;
pub mod tenancy;
pub mod terminal;
pub mod webhooks;

/// The whole API as a router over `state`: what `main` serves, and what an in-process test
/// can call directly. Building it starts nothing (see [`server::start_background`]).
pub fn app(state: state::AppState) -> axum::Router {
    http::router(state)
}
