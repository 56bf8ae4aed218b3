//! Inflating the planned entries into the private staging tree, counting the bytes actually
//! inflated against the limits (the declared sizes may lie).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::fs::{mkdirat, openat, Mode, OFlags};
use rustix::io::Errno;
use serde_json::json;
use zip::ZipArchive;

use super::{invalid_zip, too_large, unsafe_entry, Limits, Outcome, RATIO_FLOOR_BYTES};
use crate::appdir::error::{Error, FilesResult, Reason};
use crate::appdir::plan::{NodeKind, Plan};

pub(super) fn ratio_error(name: &str, inflated: u64, compressed: u64, limits: &Limits) -> Error {
    too_large(
        Reason::ZipRatioExceeded,
        format!(
            "entry {name:?} inflates more than {}x its compressed size",
            limits.max_ratio
        ),
        json!({"entry": name, "inflated": inflated, "compressed": compressed, "limit": limits.max_ratio}),
    )
}

pub(super) fn inflated_error(total: u64, limits: &Limits) -> Error {
    too_large(
        Reason::ZipTooLarge,
        format!(
            "the archive inflates to more than the limit of {} bytes",
            limits.max_inflated_bytes
        ),
        json!({"inflated": total, "limit": limits.max_inflated_bytes}),
    )
}

fn staging_error(e: Errno, plan: &Plan, node: usize) -> Error {
    if e == Errno::NAMETOOLONG {
        // Not expected: paths are created relative to the tree's descriptor and checked
        // against MAX_PATH_BYTES.
        return unsafe_entry(&plan.path(node), "the path is too long");
    }
    std::io::Error::from(e).into()
}

/// Inflates the planned entries into the directory `tree` (a fresh directory in the staging
/// area, which only the server can reach), counting the bytes actually inflated. Everything
/// is created relative to `tree`'s descriptor (so the staging area's own path does not count
/// against `PATH_MAX`), owned by the server, directories 0700 and files 0600: nothing is
/// given to the container's user before the commit has placed it in `/app`.
pub fn extract(
    archive: &mut ZipArchive<File>,
    plan: &Plan,
    tree: &OwnedFd,
    limits: &Limits,
) -> FilesResult<Outcome> {
    // Parents come before their children in `nodes`.
    for (id, node) in plan.nodes.iter().enumerate().skip(1) {
        if node.kind == NodeKind::Dir {
            mkdirat(tree, plan.path(id).as_str(), Mode::from_raw_mode(0o700))
                .map_err(|e| staging_error(e, plan, id))?;
        }
    }
    let mut total: u64 = 0;
    let mut files: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in &plan.entries {
        let name = plan.path(entry.node);
        let mut out = File::from(
            openat(
                tree,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| staging_error(e, plan, entry.node))?,
        );
        let mut zf = archive
            .by_index(entry.index)
            .map_err(|e| invalid_zip(format!("entry {name:?} cannot be read: {e}")))?;
        let mtime = zf.last_modified();
        let mut written: u64 = 0;
        loop {
            let n = match zf.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(invalid_zip(format!(
                        "entry {name:?} is corrupt or truncated: {e}"
                    )))
                }
            };
            written += n as u64;
            total += n as u64;
            if total > limits.max_inflated_bytes {
                return Err(inflated_error(total, limits));
            }
            if written > RATIO_FLOOR_BYTES
                && written > limits.max_ratio.saturating_mul(entry.compressed.max(1))
            {
                return Err(ratio_error(&name, written, entry.compressed, limits));
            }
            out.write_all(&buf[..n])?;
        }
        drop(zf);
        if let Some(t) = mtime.and_then(to_system_time) {
            let _ = out.set_modified(t);
        }
        files += 1;
    }
    Ok(Outcome {
        files,
        bytes: total,
    })
}

fn to_system_time(t: zip::DateTime) -> Option<std::time::SystemTime> {
    let date = chrono::NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())?;
    let dt = date.and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())?;
    let secs = u64::try_from(dt.and_utc().timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
