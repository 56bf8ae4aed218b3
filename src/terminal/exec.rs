//! Exec'd processes: the session's own process (a shell or `?cmd=`), and the helper
//! processes that signal or end it. Docker has no call to signal an exec'd process, so the
//! session runs under a tiny `/bin/sh` wrapper that prints its pid (framed by two control
//! characters the session strips from the output) and then `exec`s the real program, keeping
//! that pid. A signal is a second exec running `kill` on the session's foreground process
//! group: the terminal's foreground group (`tpgid` in `/proc/<pid>/stat`) with a TTY, the
//! session's own group without one (runc makes every exec a session and group leader). With
//! a TTY, `INT` is the `^C` byte written to the terminal, as a keyboard would.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;

use super::frames::Signal;

/// Starts the pid marker (ASCII RS) …
pub const MARK_START: u8 = 0x1e;
/// … and ends it (ASCII US).
pub const MARK_END: u8 = 0x1f;

/// The wrapper: prints `RS <pid> US`, then becomes the interactive shell or the command.
pub fn session_cmd(cmd: Option<&str>) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    match cmd {
        None => argv.push("printf '\\036%s\\037' \"$$\"; exec /bin/sh".to_owned()),
        Some(cmd) => {
            argv.push("printf '\\036%s\\037' \"$$\"; exec /bin/sh -c \"$1\"".to_owned());
            argv.push("cm-session".to_owned());
            argv.push(cmd.to_owned());
        }
    }
    argv
}

/// Sends `$1` to the foreground process group of the session led by pid `$2`.
const SIGNAL_SCRIPT: &str = r#"p=$2; s=$(cat /proc/$p/stat 2>/dev/null) || exit 3
s=${s##*) }; set -- "$1" "$p" $s
if [ "${8:-0}" -gt 0 ] 2>/dev/null; then g=$8; else g=$5; fi
kill -$1 -$g 2>/dev/null || kill -$1 $p"#;

/// Kills every process of the session led by pid `$1` (the session's process and all it
/// started, background jobs included), then the leader itself.
const KILL_SESSION_SCRIPT: &str = r#"P=$1
for d in /proc/[0-9]*; do
  s=$(cat $d/stat 2>/dev/null) || continue
  s=${s##*) }; set -- $s
  [ "$4" = "$P" ] && kill -KILL ${d#/proc/} 2>/dev/null
done
kill -KILL $P 2>/dev/null; true"#;

/// Finds the pid marker at the very start of a session's output.
#[derive(Debug, Default)]
pub struct PidMarker {
    buf: Vec<u8>,
    done: bool,
}

pub enum Marker {
    /// Need more bytes.
    Pending,
    /// Found (or given up on, with `None`): the rest of the output follows.
    Done(Option<u32>, Vec<u8>),
}

impl PidMarker {
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn push(&mut self, bytes: &[u8]) -> Marker {
        self.buf.extend_from_slice(bytes);
        if self.buf.first().is_some_and(|b| *b != MARK_START) {
            // Not our wrapper's output (e.g. the exec failed): pass everything through.
            self.done = true;
            return Marker::Done(None, std::mem::take(&mut self.buf));
        }
        if let Some(end) = self.buf.iter().position(|b| *b == MARK_END) {
            self.done = true;
            let pid = std::str::from_utf8(&self.buf[1..end])
                .ok()
                .and_then(|s| s.parse().ok());
            let rest = self.buf[end + 1..].to_vec();
            if pid.is_none() {
                return Marker::Done(None, std::mem::take(&mut self.buf));
            }
            self.buf.clear();
            return Marker::Done(pid, rest);
        }
        if self.buf.len() > 24 {
            self.done = true;
            return Marker::Done(None, std::mem::take(&mut self.buf));
        }
        Marker::Pending
    }
}

/// Runs a short helper process in the container and waits (bounded) for it to finish.
async fn run_helper(docker: &Docker, cuid: &str, argv: Vec<String>) -> Result<i64, String> {
    let work = async {
        let created = docker
            .create_exec(
                cuid,
                CreateExecOptions {
                    cmd: Some(argv),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, None::<StartExecOptions>)
            .await
            .map_err(|e| e.to_string())?
        {
            while let Some(item) = output.next().await {
                if item.is_err() {
                    break;
                }
            }
        }
        exit_code(docker, &created.id).await
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "the helper process did not finish in time".to_owned())?
}

/// The exit code of a finished exec (waits briefly for Docker to record it).
pub async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| e.to_string())?;
        if info.running != Some(true) {
            if let Some(code) = info.exit_code {
                return Ok(code);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the process did not report an exit code".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether an exec is still running (an error counts as not running).
pub async fn is_running(docker: &Docker, exec_id: &str) -> bool {
    docker
        .inspect_exec(exec_id)
        .await
        .is_ok_and(|i| i.running == Some(true))
}

/// Delivers `signal` to the foreground process group of the session led by `pid`.
pub async fn signal(docker: &Docker, cuid: &str, pid: u32, signal: Signal) -> Result<(), String> {
    let argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        SIGNAL_SCRIPT.into(),
        "cm-signal".into(),
        signal.name().into(),
        pid.to_string(),
    ];
    match run_helper(docker, cuid, argv).await? {
        0 => Ok(()),
        3 => Err("the session's process has already ended".into()),
        code => Err(format!("kill exited with {code}")),
    }
}

/// Kills the session led by `pid` and everything it started.
pub async fn kill_session(docker: &Docker, cuid: &str, pid: u32) {
    let argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        KILL_SESSION_SCRIPT.into(),
        "cm-kill".into(),
        pid.to_string(),
    ];
    if let Err(e) = run_helper(docker, cuid, argv).await {
        tracing::warn!(cuid, pid, error = %e, "could not end a terminal session's processes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_across_reads() {
        let mut m = PidMarker::default();
        assert!(matches!(m.push(&[MARK_START, b'4']), Marker::Pending));
        match m.push(&[b'2', MARK_END, b'$', b' ']) {
            Marker::Done(Some(42), rest) => assert_eq!(rest, b"$ "),
            _ => panic!("marker not found"),
        }
        assert!(m.is_done());
    }

    #[test]
    fn other_output_passes_through() {
        let mut m = PidMarker::default();
        match m.push(b"OCI runtime exec failed") {
            Marker::Done(None, rest) => assert_eq!(rest, b"OCI runtime exec failed"),
            _ => panic!("should pass through"),
        }
    }

    #[test]
    fn the_wrapper_passes_the_command_as_an_argument() {
        let argv = session_cmd(Some("echo '$HOME' \"x\""));
        assert_eq!(argv.len(), 5);
        assert_eq!(argv[4], "echo '$HOME' \"x\"");
        assert!(session_cmd(None)[2].ends_with("exec /bin/sh"));
    }
}
