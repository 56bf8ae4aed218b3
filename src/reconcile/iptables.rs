//! The one place that runs iptables: read the `filter` table, apply a batch atomically.
//! What to read and write is decided in [`super::firewall`].

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::lifecycle::ErrorCode;
use crate::step_error::StepError;

/// The longest one call may take (`-w` waits for the xtables lock within it).
const TIMEOUT: Duration = Duration::from_secs(20);

fn failed(what: &str, detail: impl std::fmt::Display) -> StepError {
    StepError::new(ErrorCode::FirewallFailed, format!("{what}: {detail}"))
}

/// `iptables-save -t filter`.
pub async fn save() -> Result<String, StepError> {
    let mut cmd = Command::new("iptables-save");
    cmd.args(["-t", "filter"]).kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .map_err(|_| failed("iptables-save", "timed out"))?
        .map_err(|e| failed("cannot run iptables-save", e))?;
    if !out.status.success() {
        return Err(failed(
            "iptables-save failed",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore --noflush` of `batch`: all of it or none.
pub async fn restore(batch: &str) -> Result<(), StepError> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "-w", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("cannot run iptables-restore", e))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(batch.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| failed("iptables-restore", "timed out"))?
        .map_err(|e| failed("iptables-restore", e))?;
    if !out.status.success() {
        return Err(failed(
            "iptables-restore failed",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}
