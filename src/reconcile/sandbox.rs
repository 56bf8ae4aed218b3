//! What a gVisor container can leave behind. A `runsc` start that fails (a command that does
//! not exist, a sandbox that cannot boot) leaves its `runsc-sandbox` and `runsc-gofer`
//! processes, their state under the runtime's root and the containerd shim running after
//! Docker has removed the container; the container can then never start again (`id already
//! in use`). [`reap`] removes all of it for one Docker container id.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// How long `runsc delete` may take before its leftovers are killed instead.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the signalled processes get to exit before SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// One process that names the container.
struct Holder {
    pid: Pid,
    /// `runsc-sandbox`/`runsc-gofer` (true) or the containerd shim (false).
    runsc: bool,
    /// The runtime's `--root=` (where runsc keeps the container's state).
    root: Option<String>,
}

/// The host's `runsc` binary. A process counts as gVisor's only when its executable is this
/// very file (same device and inode): a process in a container can call itself `runsc` and
/// name any id in its arguments, and must never get the server to run or kill anything.
fn runsc_binary() -> Option<(PathBuf, u64, u64)> {
    [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join("runsc"))
    .find_map(|p| {
        let m = std::fs::metadata(&p).ok()?;
        Some((p, m.dev(), m.ino()))
    })
}

/// Whether process `pid` runs the file `(dev, ino)` (`/proc/<pid>/exe` is followed to the
/// file itself, whatever mount namespace the process sees it in).
fn runs(pid: i32, binary: Option<&(PathBuf, u64, u64)>) -> bool {
    let Some((_, dev, ino)) = binary else {
        return false;
    };
    std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino)
}

fn argv(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The runsc processes and the containerd shim that belong to Docker container `id`.
fn holders(id: &str) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let binary = runsc_binary();
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let (Some(pid), Some(args)) = (Pid::from_raw(raw), argv(raw)) else {
            continue;
        };
        let Some(first) = args.first() else { continue };
        let runsc =
            (first.starts_with("runsc") || first.ends_with("/runsc")) && runs(raw, binary.as_ref());
        // The shim names its container with `-id <id>`.
        let shim = first.contains("containerd-shim")
            && args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
        if !(shim || (runsc && args.iter().any(|a| a.contains(id)))) {
            continue;
        }
        out.push(Holder {
            pid,
            runsc,
            root: args
                .iter()
                .find_map(|a| a.strip_prefix("--root=").map(str::to_owned)),
        });
    }
    out
}

/// True when some `runsc` process still names Docker container `id`.
pub fn has_leftovers(id: &str) -> bool {
    holders(id).iter().any(|h| h.runsc)
}

/// Removes what gVisor left of Docker container `id` after Docker removed (or failed to
/// start) it: `runsc delete --force` (which stops the sandbox and the gofer and removes the
/// runtime's state), then SIGKILL for any runsc process still there, then SIGTERM for the
/// containerd shim, which removes its bundle. Only called for a container that is not
/// running (removed, or its start failed): it never touches a live sandbox. Nothing to do
/// (runc containers, clean gVisor exits) costs one scan of `/proc`.
pub async fn reap(id: &str) {
    if id.is_empty() {
        return;
    }
    let found = holders(id);
    if found.is_empty() {
        return;
    }
    let runsc = found.iter().find(|h| h.runsc).zip(runsc_binary());
    if let Some((h, (binary, _, _))) = runsc {
        let mut cmd = tokio::process::Command::new(binary);
        if let Some(root) = &h.root {
            cmd.arg(format!("--root={root}"));
        }
        cmd.args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(DELETE_TIMEOUT, cmd.status()).await {
            Ok(Ok(status)) if status.success() => {}
            other => tracing::warn!(container = id, result = ?other, "runsc delete failed"),
        }
    }
    let mut killed = 0;
    for h in holders(id) {
        let signal = if h.runsc { Signal::KILL } else { Signal::TERM };
        if kill_process(h.pid, signal).is_ok() {
            killed += 1;
        }
    }
    // The shim removes its bundle on TERM and exits; one that has not after a while is
    // killed, so the caller returns with nothing of the container left.
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    let mut forced = false;
    loop {
        let left = holders(id);
        if left.is_empty() {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline && !forced {
            for h in left {
                let _ = kill_process(h.pid, Signal::KILL);
            }
            forced = true;
        } else if now >= deadline + EXIT_WAIT {
            // SIGKILL cannot be refused: only a machine too loaded to schedule the exit
            // gets here. Logged; the next reap of this id finds what is left.
            tracing::warn!(container = id, "processes outlived SIGKILL");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        container = id,
        processes = found.len(),
        signalled = killed,
        "removed what gVisor left of a container"
    );
}
