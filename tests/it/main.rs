//! Black-box tests: a real server process, real SQLite, real Docker with compose v2.
//! One test binary (linking is the slow part of a build on two cores).

mod common;
mod containers;
mod files;
mod foundation;
mod hostile;
mod hostile_upload;
mod ops;
mod reconcile;
mod terminal;
