//! Running `docker compose`: argv only (no shell), a clean environment (see
//! [`crate::docker::docker_command`]), its own process group, a timeout that kills the whole
//! group, and the stderr tail kept for `last_error`.

use std::path::Path;
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};

use crate::lifecycle::ErrorCode;
use crate::step_error::StepError;

/// How much of compose's stderr is kept for an error message.
const STDERR_TAIL: usize = 2000;

fn tail(s: &str) -> &str {
    let s = s.trim();
    let mut start = s.len().saturating_sub(STDERR_TAIL);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Maps compose's stderr to a stable code a client can branch on.
fn classify(stderr: &str) -> ErrorCode {
    let s = stderr.to_ascii_lowercase();
    if s.contains("no such image")
        || s.contains("pull access denied")
        || s.contains("manifest unknown")
    {
        ErrorCode::ImageNotFound
    } else if s.contains("unknown runtime specified")
        || s.contains("unknown or invalid runtime name")
    {
        // Docker 20.10 says the first, newer daemons the second.
        ErrorCode::RuntimeUnavailable
    } else if s.contains("port is already allocated") || s.contains("address already in use") {
        ErrorCode::PortInUse
    } else {
        ErrorCode::ComposeFailed
    }
}

/// The project's file in its directory.
pub const FILE_NAME: &str = "compose.yaml";

/// `docker compose -p <project> --project-directory <dir> [-f <dir>/compose.yaml] <args…>`,
/// bounded by `timeout`.
///
/// Compose looks for a compose file and an `.env` in its working directory unless told
/// otherwise, so every call names the project's own directory (and its file, when there is
/// one: `down` of a project whose file is gone works by the project name alone) and runs
/// there (or in `DATA_DIR/projects` when the directory is gone): a `compose.yaml` or `.env`
/// in the server's working directory is never read.
pub async fn run(
    project: &str,
    dir: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(), StepError> {
    let started = std::time::Instant::now();
    let result = run_inner(project, dir, args, timeout).await;
    // The subcommand is the first argument that is not an option (`up`, `down`, …).
    let subcommand = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .copied()
        .unwrap_or("none");
    crate::metrics::compose(subcommand, result.is_ok(), started.elapsed());
    result
}

async fn run_inner(
    project: &str,
    dir: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(), StepError> {
    tracing::debug!(project, args = %args.join(" "), "running docker compose");
    let mut cmd = crate::docker::docker_command();
    cmd.args(["compose", "-p", project, "--project-directory"])
        .arg(dir);
    let file = dir.join(FILE_NAME);
    if file.is_file() {
        cmd.arg("-f").arg(&file);
        cmd.current_dir(dir);
    } else if let Some(parent) = dir.parent() {
        cmd.current_dir(parent);
    }
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| {
        StepError::new(
            ErrorCode::ComposeFailed,
            format!("cannot run docker compose: {e}"),
        )
    })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(StepError::new(
                classify(&stderr),
                format!(
                    "docker compose {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    tail(&stderr)
                ),
            ))
        }
        Ok(Err(e)) => Err(StepError::new(
            ErrorCode::ComposeFailed,
            format!("docker compose {}: {e}", args.join(" ")),
        )),
        Err(_) => {
            // The child was dropped (and killed); its group may hold more processes.
            if let Some(pgid) = pid.and_then(|p| Pid::from_raw(p as i32)) {
                let _ = kill_process_group(pgid, Signal::KILL);
            }
            Err(StepError::new(
                ErrorCode::ComposeTimeout,
                format!(
                    "docker compose {} did not finish within {}s",
                    args.join(" "),
                    timeout.as_secs()
                ),
            ))
        }
    }
}

/// At start-up: a server killed with SIGKILL leaves its compose children behind. Any
/// `docker compose` process working on one of our project files is killed with its group
/// before the first pass, so two composes never race on one project.
pub fn kill_strays(projects_dir: &Path) {
    let needle = projects_dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_compose = args
            .iter()
            .any(|a| a == "compose" || a.ends_with("docker-compose"));
        if is_compose && args.iter().any(|a| a.starts_with(&needle)) {
            if let Some(pid) = Pid::from_raw(pid) {
                tracing::warn!(
                    pid = pid.as_raw_nonzero().get(),
                    "killing a docker compose left by an earlier run"
                );
                let group = rustix::process::getpgid(Some(pid)).unwrap_or(pid);
                let _ = kill_process_group(group, Signal::KILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_classified() {
        assert_eq!(
            classify("Error response from daemon: No such image: nope:latest"),
            ErrorCode::ImageNotFound
        );
        assert_eq!(
            classify("Bind for 0.0.0.0:8080 failed: port is already allocated"),
            ErrorCode::PortInUse
        );
        for missing in [
            "Error response from daemon: Unknown runtime specified runsc",
            "Error response from daemon: unknown or invalid runtime name: runsc",
        ] {
            assert_eq!(
                classify(missing),
                ErrorCode::RuntimeUnavailable,
                "{missing}"
            );
        }
        assert_eq!(classify("something else"), ErrorCode::ComposeFailed);
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let s = "é".repeat(STDERR_TAIL);
        let t = tail(&s);
        assert!(t.len() <= STDERR_TAIL);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
