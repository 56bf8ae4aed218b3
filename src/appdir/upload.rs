//! One upload after its body is on disk: open and check the archive, plan, extract into
//! staging ([`crate::appdir::unzip`]), then commit into `/app` ([`crate::appdir::place`]).

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::appdir::error::FilesResult;
use crate::appdir::unzip::{self, Limits, Outcome};
use crate::appdir::{journal, place};
use crate::config::UserIds;

/// The whole upload after the body is on disk (`staging/upload.zip`): open, plan, extract
/// into `staging/tree`, commit into `root` (the container's `/app`, at `mount` on the host).
pub fn run(
    staging: &Path,
    root: OwnedFd,
    mount: &Path,
    prefix: &[String],
    owner: UserIds,
    limits: &Limits,
) -> FilesResult<Outcome> {
    let zip_path = staging.join("upload.zip");
    let tree = staging.join(journal::TREE);
    let mut archive = unzip::open(&zip_path, limits)?;
    let plan = unzip::plan(&archive, prefix, limits)?;
    std::fs::DirBuilder::new().mode(0o700).create(&tree)?;
    let tree = rustix::fs::open(
        &tree,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let outcome = unzip::extract(&mut archive, &plan, &tree, limits)?;
    drop(archive);
    let _ = std::fs::remove_file(&zip_path);
    place::commit(&plan, staging, tree, root, mount, owner)?;
    Ok(outcome)
}
