//! container-manager: a control plane that keeps Docker containers matching the desired
//! state stored in SQLite, through one `docker compose` v2 project per container.
//!
//! Map of the modules:
//! - [`config`]: settings from `.env` and the environment, validated once.
//! - [`app`]: the shared state and the server's life cycle (open, serve, drain).
//! - [`http`]: routes, extractors and the middleware (request id + audit, auth).
//! - [`error`]: the one error type, rendered as the API's error body everywhere.
//! - [`store`]: the SQLite state store (desired and observed state).
//! - [`spec`]: the container spec a client may send, and its validation.
//! - [`lifecycle`]: desired states, observed statuses and the pure rules between them.
//! - [`audit`]: `actions.jsonl`, one line per request and per reconciler action.
//! - [`reconcile`]: the controller that makes Docker match the store (render, compose, decide).
//! - [`fs`]: each container's `/app` directory on the host.
//! - [`docker`]: the Engine API client and a clean environment for `docker` processes.
//! - [`terminal`]: the WebSocket terminal session (console, exec, attach) and main output.

pub mod app;
pub mod audit;
pub mod config;
pub mod docker;
pub mod error;
pub mod fs;
pub mod http;
pub mod lifecycle;
pub mod reconcile;
pub mod spec;
pub mod store;
pub mod terminal;
