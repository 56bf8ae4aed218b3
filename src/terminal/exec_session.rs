//! An exec'd session (a shell, or `?cmd=`): create and start the exec, pump its output with
//! backpressure, apply input, resizes and signals, report the exit, and kill what the
//! process left behind at the end. The helpers that signal and kill live in [`super::exec`].

use std::time::Duration;

use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::error::{Error, Reason};
use super::frames::{self, Encoder, Input, Signal, Source, Stream};
use super::plumbing::{no_tty, write_input, SessionIo};
use super::{exec, spawn, Ctx, Out, PID_LATE};

/// An exec'd shell or command: create, start, pump output, apply input, report the exit.
pub(super) async fn exec_session(ctx: &Ctx, mut io: SessionIo) {
    let docker = &ctx.docker;
    let tty = ctx.options.tty;
    let mut env = vec!["CM_SESSION=1".to_owned()];
    if tty.is_some() {
        env.push("TERM=xterm-256color".to_owned());
    }
    let created = docker
        .create_exec(
            &ctx.container,
            CreateExecOptions {
                cmd: Some(exec::session_cmd(ctx.options.cmd.as_deref())),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty.is_some()),
                env: Some(env),
                ..Default::default()
            },
        )
        .await;
    let exec_id = match created {
        Ok(c) => c.id,
        Err(e) => return exec_failed(&io, e).await,
    };
    let started = docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                tty: tty.is_some(),
                output_capacity: Some(frames::MAX_FRAME_DATA),
                ..Default::default()
            }),
        )
        .await;
    let (output, mut stdin) = match started {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            return io
                .error(Error::new(
                    Reason::ExecNotAttached,
                    "the exec did not attach",
                ))
                .await
        }
        Err(e) => return exec_failed(&io, e).await,
    };

    // The pid marker's outcome: the pump sets the pid, then drops the sender once the
    // marker is settled, found or not.
    let (pid_tx, mut pid_rx) = watch::channel(None::<u32>);
    let ended = CancellationToken::new();
    let mut pump = spawn(pump_exec(output, io.out.clone(), pid_tx, ended.clone()));

    // The initial size, once the process runs (the pid marker proves it does).
    let pid = wait_pid(&mut pid_rx, &ended, &io.gone).await;
    if let (Some((cols, rows)), Some(_)) = (tty, pid) {
        resize(docker, &exec_id, cols, rows).await;
    }
    // Read where it is used, not once: a marker later than `wait_pid` still counts.
    let pid = || *pid_rx.borrow();

    let mut closing = false;
    loop {
        let input = tokio::select! {
            () = ended.cancelled() => break,
            () = io.gone.cancelled() => break,
            () = ctx.shutdown.cancelled() => break,
            () = ctx.node_lost.cancelled() => break,
            input = io.input.recv(), if !closing => input,
        };
        let Some(input) = input else { break };
        match input {
            Input::Stdin(bytes) => {
                if !write_input(&mut stdin, &bytes, &io, ended.cancelled()).await {
                    break;
                }
            }
            Input::Resize { cols, rows } => match tty {
                Some(_) => resize(docker, &exec_id, cols, rows).await,
                None => io.error(no_tty()).await,
            },
            Input::Signal(Signal::Int) if tty.is_some() => {
                // ^C on the terminal: the line discipline signals the foreground group. It
                // queues behind unread input like any keystroke, so it can wait as long.
                if !write_input(&mut stdin, &[0x03], &io, ended.cancelled()).await {
                    break;
                }
            }
            Input::Signal(sig) => match pid() {
                Some(pid) => {
                    if let Err(e) = exec::signal(docker, &ctx.container, pid, sig).await {
                        io.error(Error::new(Reason::SignalFailed, e)).await;
                    }
                }
                None => io.error(no_pid()).await,
            },
            Input::Close => {
                if let Some(pid) = pid() {
                    exec::kill_session(docker, &ctx.container, pid).await;
                }
                // It flushes first, so it can wait on a full path like a write.
                tokio::select! {
                    _ = stdin.shutdown() => {}
                    () = ended.cancelled() => {}
                    () = io.stopped() => {}
                }
                closing = true;
            }
        }
    }

    // The node is lost (the Swarm sees it down, or the stream broke and it does not answer):
    // any call to it would hang or fail. The session's processes are out of reach: they end
    // with the old task, which Swarm shuts down when the node comes back.
    // So too when the client has left meanwhile: nobody to tell, and nothing to call.
    let left = io.gone.is_cancelled() || ctx.shutdown.is_cancelled();
    if ctx.node_lost.is_cancelled()
        || (!left && ended.is_cancelled() && super::node_is_lost(ctx).await)
    {
        pump.abort();
        if left {
            return;
        }
        return super::end_lost(ctx, &io).await;
    }
    // Whatever ended the loop, no process of this session outlives it.
    let pid = final_pid(&mut pid_rx, PID_LATE).await;
    // The kill runs even when the leader has exited: what it started in the background
    // (`cmd=sleep 1000 & echo hi`) lives on in its session, and Docker only watches the
    // leader. `kill_session` is idempotent (it kills whatever is left of the session), and
    // the pid cannot name a stranger yet: Linux keeps it reserved while it is the session
    // id of any living process, and hands out pids in order, not freshly freed ones.
    let kill = || async {
        if let Some(pid) = pid {
            exec::kill_session(docker, &ctx.container, pid).await;
        }
    };
    let client_left = io.gone.is_cancelled() || ctx.shutdown.is_cancelled();
    let leader_running = exec::is_running(docker, &exec_id).await;
    if pid.is_none() && leader_running {
        tracing::warn!(
            cuid = ctx.cuid,
            "a terminal session's pid never arrived: its process cannot be ended"
        );
    }
    if client_left || leader_running {
        kill().await;
    }
    drop(stdin);
    if client_left {
        pump.abort();
        return;
    }
    // The output ends when the process and everything holding its output have gone.
    if tokio::time::timeout(Duration::from_secs(5), &mut pump)
        .await
        .is_err()
    {
        // Something still holds the output (a process that left the session): stop
        // reading it rather than leave a task behind.
        pump.abort();
    }
    match exec::exit_code(docker, &exec_id).await {
        Ok(code) => io.exit(code).await,
        Err(e) => io.error(Error::new(Reason::ExitCodeUnknown, e)).await,
    }
    if !leader_running {
        // The leader ended on its own: its exit frame (queued above, with its own code)
        // goes first; then what it left behind.
        kill().await;
    }
}

async fn exec_failed(io: &SessionIo, e: bollard::errors::Error) {
    tracing::warn!(error = %e, "exec failed");
    io.error(Error::new(
        Reason::ExecFailed,
        "could not start a process in the container",
    ))
    .await;
}

fn no_pid() -> Error {
    Error::new(
        Reason::SignalFailed,
        "the session's process is not known (it may have ended)",
    )
}

async fn wait_pid(
    rx: &mut watch::Receiver<Option<u32>>,
    ended: &CancellationToken,
    gone: &CancellationToken,
) -> Option<u32> {
    let found = tokio::select! {
        r = rx.wait_for(Option::is_some) => r.ok().and_then(|p| *p),
        () = gone.cancelled() => None,
        () = ended.cancelled() => None,
        () = tokio::time::sleep(Duration::from_secs(15)) => None,
    };
    found.or(*rx.borrow())
}

/// The pid for the kill at the session's end: already known, or arriving within `limit`.
/// The wait ends early when the marker is settled without a pid (the sender is dropped).
async fn final_pid(rx: &mut watch::Receiver<Option<u32>>, limit: Duration) -> Option<u32> {
    let _ = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
    *rx.borrow()
}

async fn resize(docker: &Docker, exec_id: &str, cols: u16, rows: u16) {
    let opts = ResizeExecOptions {
        width: cols,
        height: rows,
    };
    if let Err(e) = docker.resize_exec(exec_id, opts).await {
        tracing::debug!(error = %e, "resize failed");
    }
}

/// Exec output → frames → the bounded exec queue (awaited: this is the backpressure).
async fn pump_exec(
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    out: mpsc::Sender<Out>,
    pid: watch::Sender<Option<u32>>,
    ended: CancellationToken,
) {
    use bollard::container::LogOutput;
    let mut pid = Some(pid);
    let mut marker = exec::PidMarker::default();
    let mut stdout = Encoder::new(Stream::Stdout, Source::Exec);
    let mut stderr = Encoder::new(Stream::Stderr, Source::Exec);
    'read: while let Some(Ok(item)) = output.next().await {
        let (kind, bytes) = match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Stream::Stdout, message.to_vec())
            }
            LogOutput::StdErr { message } => (Stream::Stderr, message.to_vec()),
            LogOutput::StdIn { .. } => continue,
        };
        let bytes = if kind == Stream::Stdout && !marker.is_done() {
            match marker.push(&bytes) {
                exec::Marker::Pending => continue,
                exec::Marker::Done(found, rest) => {
                    // Settled: dropping the sender tells waiters no pid is coming after it.
                    if let Some(tx) = pid.take() {
                        tx.send_replace(found);
                    }
                    rest
                }
            }
        } else {
            bytes
        };
        let enc = match kind {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        for frame in enc.push(&bytes) {
            if out.send(Out::Frame(frame)).await.is_err() {
                break 'read;
            }
        }
    }
    for frame in [stdout.finish(), stderr.finish()].into_iter().flatten() {
        let _ = out.send(Out::Frame(frame)).await;
    }
    ended.cancel();
}

#[cfg(test)]
mod tests {
    use tokio::time::{sleep, Instant};

    use super::*;

    #[tokio::test]
    async fn a_late_pid_marker_is_still_waited_for_at_the_end() {
        let (tx, mut rx) = watch::channel(None::<u32>);
        tokio::spawn(async move {
            // Later than any fixed short wait (it used to be 2 s).
            sleep(Duration::from_millis(2500)).await;
            tx.send_replace(Some(42));
        });
        assert_eq!(final_pid(&mut rx, PID_LATE).await, Some(42));
        // Settled without a pid (the sender dropped): no waiting for the limit.
        let (tx, mut rx) = watch::channel(None::<u32>);
        drop(tx);
        let start = Instant::now();
        assert_eq!(final_pid(&mut rx, PID_LATE).await, None);
        assert!(start.elapsed() < Duration::from_secs(1));
        // Never settled: the limit holds.
        let (_tx, mut rx) = watch::channel(None::<u32>);
        let start = Instant::now();
        assert_eq!(final_pid(&mut rx, Duration::from_millis(200)).await, None);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
