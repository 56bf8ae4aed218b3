//! One upload after its body is on disk: open and check the archive, plan, extract into
//! staging ([`crate::appdir::unzip`]), then commit into `/app` ([`crate::appdir::place`]).

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::appdir::disk;
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::unzip::{self, Limits, Outcome};
use crate::appdir::{journal, place};
use crate::config::UserIds;

/// The whole upload after the body is on disk (`staging/upload.zip`): open, plan, extract
/// into `work/tree`, commit into `root` (the container's `/app`, at `mount` on the host).
/// `work` is `staging` itself, or for a container with a disk cap a directory in its image's
/// own staging area ([`crate::appdir::disk`]): the commit renames within one mount, and the
/// extraction counts against the cap. There, running out of space is `413
/// DISK_QUOTA_EXCEEDED`, before anything of `/app` moved (or rolled back if it had).
pub fn run(
    staging: &Path,
    work: &Path,
    root: OwnedFd,
    mount: &Path,
    prefix: &[String],
    owner: UserIds,
    limits: &Limits,
) -> FilesResult<Outcome> {
    let capped = work != staging;
    run_in(staging, work, root, mount, prefix, owner, limits).map_err(|e| match e {
        Error::Io(e) if capped && disk::is_full(&e) => Error::refused(
            Reason::DiskQuotaExceeded,
            "the upload does not fit under the container's resources.disk; /app is unchanged",
        ),
        e => e,
    })
}

fn run_in(
    staging: &Path,
    work: &Path,
    root: OwnedFd,
    mount: &Path,
    prefix: &[String],
    owner: UserIds,
    limits: &Limits,
) -> FilesResult<Outcome> {
    let zip_path = staging.join("upload.zip");
    let tree = work.join(journal::TREE);
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
    place::commit(&plan, work, tree, root, mount, owner)?;
    Ok(outcome)
}
