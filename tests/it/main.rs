//! Black-box tests: a real server process, real SQLite, real Docker with compose v2.
//! One test binary (linking is the slow part of a build on two cores).

mod browser;
mod common;
mod console;
mod console_sandbox;
mod console_snapshots;
mod console_tenancy;
mod containers;
mod contract;
mod disk;
mod egress;
mod files;
mod first_run;
mod foundation;
mod gvisor;
mod hardening;
mod health;
mod hostile;
mod hostile_download;
mod hostile_upload;
mod idle;
mod image_updates;
mod images;
mod layers;
mod lifetime;
mod names;
mod ops;
mod read_only;
mod reconcile;
mod security;
mod snapshots;
mod swarm;
mod tenancy;
mod terminal;
mod userns;
mod webhooks;
