//! The host side of a container's `/app`: its directory under `DATA_DIR/mounts`.

pub mod mounts;
