//! container-manager: a control plane that keeps Docker containers matching the desired
//! state stored in SQLite, through one `docker compose` v2 project per container.
//!
//! Map of the modules:
//! - [`config`]: settings from `.env` and the environment, validated once.
//! - [`first_run`]: credentials made, stored and printed on a first start.
//! - [`state`]: the shared state handlers and background tasks use, and opening it.
//! - [`server`]: the server's life cycle (start background tasks, serve, drain); [`app()`] is
//!   the router built from a state.
//! - [`connections`]: accepting connections: caps, header/idle timeouts, graceful stop.
//! - [`cidr`]: IP networks (`TRUSTED_PROXIES`).
//! - [`backup`]: `container-manager backup PATH`, an online copy of the state store.
//! - [`sessions`]: console sign-in sessions (cookie tokens held in memory).
//! - [`events`]: the change feed behind `GET /events`.
//! - [`credentials`]: credentials and the failed-login throttle (the middleware is in `http`).
//! - [`http`]: routes, extractors and the middleware (request id + audit, auth); response
//!   building, waiting for convergence and pre-start checks have their own modules there,
//!   so `containers` and `actions` depend on them and never on each other.
//! - [`error`]: the one error type, rendered as the API's error body everywhere.
//! - [`store`]: the SQLite state store (desired and observed state).
//! - [`spec`]: the container spec a client may send, and its validation.
//! - [`lifecycle`]: desired states, observed statuses and the pure rules between them.
//! - [`audit`]: `actions.jsonl`, one line per request and per reconciler action.
//! - [`reconcile`]: the controller that makes Docker match the store: a FIFO queue, a worker,
//!   passes that decide and act through one `Backend` trait (compose and the Engine API).
//! - [`appdir`]: each container's `/app` directory on the host.
//! - [`images`]: pull policy, registry credentials, pulls with progress.
//! - [`docker`]: the Engine API client and a clean environment for `docker` processes.
//! - [`metrics`]: the Prometheus instruments and `/metrics` rendering.
//! - [`terminal`]: the WebSocket terminal session (console, exec, attach) and main output.

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
pub mod first_run;
pub mod http;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod reconcile;
pub mod server;
pub mod sessions;
pub mod spec;
pub mod state;
pub mod step_error;
pub mod store;
pub mod terminal;

/// The whole API as a router over `state`: what `main` serves, and what an in-process test
/// can call directly. Building it starts nothing (see [`server::start_background`]).
pub fn app(state: state::AppState) -> axum::Router {
    http::router(state)
}
