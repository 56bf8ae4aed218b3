//! The WebSocket terminal session of API.md §6, independent of HTTP: given an upgraded
//! socket and a running container, it runs the session's process (an exec'd shell, a
//! `?cmd=` command line, or the main process with `?attach=true`), follows the main
//! process's output, and speaks the frame protocol.
//!
//! Tasks and channels (all bounded, so memory per session is bounded):
//! - the reader turns client frames into [`frames::Input`]s, queued in order; input that
//!   arrives before the process is ready waits in that queue (and, past it, in TCP);
//! - the session applies inputs one at a time, in order;
//! - the exec pump reads the process's output into a small channel the writer drains: a
//!   slow client fills it, the pump stops reading, and Docker stops reading the process's
//!   pipe, so the process slows down instead of the server's memory growing;
//! - the main follower reads Docker's log stream (never the process itself) into a channel
//!   with `try_send`: a viewer that cannot keep up loses lines and is told so;
//! - the writer sends frames and pings every 15 s; the reader ends the session when nothing
//!   (not even a pong) has arrived for 45 s, so a silently vanished peer is noticed too.

pub mod console;
pub mod exec;
pub mod frames;

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use chrono::{DateTime, FixedOffset};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, Kind, REQUEST_ID};
use frames::{Encoder, Input, Signal, Source, Stream};

/// Exec output frames waiting for the client (each at most 32 KiB of data).
const EXEC_QUEUE: usize = 8;
/// Main-output frames waiting for the client before a slow viewer starts losing them.
const MAIN_QUEUE: usize = 64;
/// Client frames queued while the session works on an earlier one.
const INPUT_QUEUE: usize = 64;
const PING_EVERY: Duration = Duration::from_secs(15);
/// A client that has sent nothing, not even a pong, for this long is gone: two unanswered
/// pings plus slack. A peer that vanished without a FIN or a reset is otherwise only
/// noticed when a write fails, which for an idle session may be never.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// How long the end of a session waits for the pid marker that has not arrived yet (a
/// Docker slow to start the process, a client gone before it did). Without the pid the
/// session's processes cannot be killed; the wait ends early once the marker is settled.
const PID_LATE: Duration = Duration::from_secs(30);

/// What a client asked for in the query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `cols`/`rows`: a TTY of that size.
    pub tty: Option<(u16, u16)>,
    /// `cmd`: run this command line through `/bin/sh -c` instead of the shell.
    pub cmd: Option<String>,
    /// `main` (default true): include the main process's output.
    pub main: bool,
    /// `attach`: input and signals go to the main process; `exit` when it ends.
    pub attach: bool,
}

/// Everything a session needs besides the socket.
pub struct Ctx {
    pub docker: Docker,
    pub cuid: String,
    /// Where the main process's current run begins in its log (see
    /// [`console::run_since`]); `None`: the whole log is this run's.
    pub run_since: Option<DateTime<FixedOffset>>,
    pub options: Options,
    pub shutdown: CancellationToken,
    /// The upgrade request's id, for the error frames of the session.
    pub request_id: String,
}

/// What the writer sends, in order.
enum Out {
    Frame(String),
    Exit(i64),
}

/// Sends one `error` frame and closes: for a container that is not running.
pub async fn refuse(mut socket: WebSocket, error_frame: String) {
    let _ = socket.send(Message::Text(error_frame.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Runs a session to its end.
pub async fn run(socket: WebSocket, ctx: Ctx) {
    let id = ctx.request_id.clone();
    REQUEST_ID.scope(id, session(socket, ctx)).await;
}

/// `tokio::spawn` that keeps the request id (error frames name the upgrade request).
fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    tokio::spawn(REQUEST_ID.scope(id, fut))
}

async fn session(socket: WebSocket, ctx: Ctx) {
    let (sink, stream) = socket.split();
    let gone = CancellationToken::new();
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (ctl_tx, ctl_rx) = mpsc::channel::<String>(16);
    let (exec_tx, exec_rx) = mpsc::channel::<Out>(EXEC_QUEUE);
    let (main_tx, main_rx) = mpsc::channel::<String>(MAIN_QUEUE);

    let reader = spawn(read_frames(
        stream,
        IDLE_LIMIT,
        input_tx,
        ctl_tx.clone(),
        gone.clone(),
    ));
    let mut writer = spawn(write_frames(sink, ctl_rx, main_rx, exec_rx, gone.clone()));
    let (backlog_tx, backlog_rx) = tokio::sync::oneshot::channel();
    let main = ctx.options.main.then(|| {
        spawn(follow_main(
            ctx.docker.clone(),
            ctx.cuid.clone(),
            ctx.run_since,
            main_tx,
            backlog_tx,
        ))
    });
    if main.is_some() {
        // The console's history comes first; input meanwhile waits in its queue.
        let _ = tokio::time::timeout(Duration::from_secs(5), backlog_rx).await;
    }

    let io = SessionIo {
        input: input_rx,
        ctl: ctl_tx,
        out: exec_tx,
        gone: gone.clone(),
        shutdown: ctx.shutdown.clone(),
    };
    if ctx.options.attach {
        attach_session(&ctx, io, main.as_ref()).await;
    } else {
        exec_session(&ctx, io).await;
    }
    // The session is over: the writer finishes what is queued (the exit frame) and closes.
    if let Some(main) = main {
        main.abort();
    }
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        // Blocked in `sink.send` on a peer that reads nothing: do not let it linger.
        writer.abort();
    }
    reader.abort();
    gone.cancel();
}

struct SessionIo {
    input: mpsc::Receiver<Input>,
    ctl: mpsc::Sender<String>,
    out: mpsc::Sender<Out>,
    gone: CancellationToken,
    shutdown: CancellationToken,
}

impl SessionIo {
    /// Resolves once the client has left or the server is shutting down.
    async fn stopped(&self) {
        tokio::select! {
            () = self.gone.cancelled() => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    async fn error(&self, err: ApiError) {
        // The queue is full while the writer is stuck sending to a peer that reads nothing:
        // waiting here past the session's end would keep it (and its processes) alive.
        tokio::select! {
            _ = self.ctl.send(frames::error_frame(&err)) => {}
            () = self.stopped() => {}
        }
    }

    /// Queues the `exit` frame, behind the output (the same wait as [`Self::error`]).
    async fn exit(&self, code: i64) {
        tokio::select! {
            _ = self.out.send(Out::Exit(code)) => {}
            () = self.stopped() => {}
        }
    }
}

/// Writes input for the process; `false` when the session ended first. A process that
/// reads no input fills the path to it (the terminal, Docker's pipe, the socket), and the
/// write then waits for it: the session must still notice its end meanwhile, or it never
/// ends and its processes are never killed.
async fn write_input<W>(
    stdin: &mut W,
    bytes: &[u8],
    io: &SessionIo,
    ended: impl std::future::Future<Output = ()>,
) -> bool
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let write = async {
        stdin.write_all(bytes).await?;
        stdin.flush().await
    };
    tokio::select! {
        r = write => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "stdin write failed");
            }
            true
        }
        () = ended => false,
        () = io.stopped() => false,
    }
}

/// Client frames → inputs. Ends the session (`gone`) when the client closes, the socket
/// fails, or nothing at all has arrived for `idle` (the client is gone).
async fn read_frames<S, E>(
    mut stream: S,
    idle: Duration,
    input: mpsc::Sender<Input>,
    ctl: mpsc::Sender<String>,
    gone: CancellationToken,
) where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    // Timed per read, so the idle time counts only while waiting on the socket: a reader
    // held up by a full input queue (a busy session) is not evidence of a dead peer.
    loop {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => break, // closed or failed
            Err(_) => {
                tracing::debug!(?idle, "the client sent nothing, not even a pong: gone");
                break;
            }
        };
        let parsed = match msg {
            Message::Text(text) => frames::parse_input(text.as_str()),
            // Binary frames are raw stdin (a convenience; the contract's frames are text).
            Message::Binary(bytes) if bytes.len() <= frames::MAX_INPUT_DATA => {
                Ok(Input::Stdin(bytes.to_vec()))
            }
            Message::Binary(_) => Err(ApiError::validation(
                "FRAME_TOO_LARGE",
                "a binary frame carries at most 64 KiB",
            )),
            Message::Close(_) => break,
            // It is alive: the next read's idle time starts now.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match parsed {
            Ok(frame) => {
                if input.send(frame).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                let _ = ctl.send(frames::error_frame(&err)).await;
            }
        }
    }
    gone.cancel();
}

async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut ctl: mpsc::Receiver<String>,
    mut main: mpsc::Receiver<String>,
    mut exec: mpsc::Receiver<Out>,
    gone: CancellationToken,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut main_open = true;
    loop {
        let msg = tokio::select! {
            biased;
            Some(text) = ctl.recv() => Message::Text(text.into()),
            text = main.recv(), if main_open => match text {
                Some(text) => Message::Text(text.into()),
                None => { main_open = false; continue; }
            },
            out = exec.recv() => match out {
                Some(Out::Frame(text)) => Message::Text(text.into()),
                Some(Out::Exit(code)) => {
                    // Whatever main output is already queued goes first.
                    while let Ok(text) = main.try_recv() {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    let _ = sink.send(Message::Text(frames::exit_frame(code).into())).await;
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            _ = ping.tick() => Message::Ping(Default::default()),
            () = gone.cancelled() => break,
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    gone.cancel();
}

/// Follows the main output: the current run's backlog (never dropped, it is bounded), then
/// live lines, dropped for a viewer that cannot keep up, who gets an `error` frame once the
/// queue has room again.
async fn follow_main(
    docker: Docker,
    cuid: String,
    run_since: Option<DateTime<FixedOffset>>,
    tx: mpsc::Sender<String>,
    backlog_sent: tokio::sync::oneshot::Sender<()>,
) {
    let mut stdout = Encoder::new(Stream::Stdout, Source::Main);
    let mut stderr = Encoder::new(Stream::Stderr, Source::Main);
    let (kept, last) = console::backlog(&docker, &cuid, run_since).await;
    for rec in kept {
        let enc = match rec.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        for frame in enc.push(&rec.data) {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    }
    let _ = backlog_sent.send(());
    let live = console::records(&docker, &cuid, last.or(run_since), None, true);
    futures_util::pin_mut!(live);
    let mut lost = 0u64;
    loop {
        let rec = if lost == 0 {
            live.next().await
        } else {
            // Behind: tell the viewer as soon as there is room, even if no line follows.
            tokio::select! {
                rec = live.next() => rec,
                permit = tx.reserve() => {
                    let Ok(permit) = permit else { return };
                    permit.send(frames::error_frame(&lagged(lost)));
                    lost = 0;
                    continue;
                }
            }
        };
        let Some(rec) = rec else { return };
        if let (Some(last), Some(at)) = (&last, &rec.at) {
            if at <= last {
                continue; // already sent with the backlog
            }
        }
        if lost > 0 {
            lost += 1;
            continue;
        }
        let enc = match rec.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        for frame in enc.push(&rec.data) {
            match tx.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    lost += 1;
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

fn lagged(lost: u64) -> ApiError {
    ApiError::new(
        Kind::Timeout,
        "OUTPUT_LAGGED",
        format!("the client did not keep up with the main output: {lost} lines were skipped"),
    )
    .with_details(serde_json::json!({"skipped_lines": lost}))
}

/// An exec'd shell or command: create, start, pump output, apply input, report the exit.
async fn exec_session(ctx: &Ctx, mut io: SessionIo) {
    let docker = &ctx.docker;
    let tty = ctx.options.tty;
    let mut env = vec!["CM_SESSION=1".to_owned()];
    if tty.is_some() {
        env.push("TERM=xterm-256color".to_owned());
    }
    let created = docker
        .create_exec(
            &ctx.cuid,
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
                .error(ApiError::new(
                    Kind::Internal,
                    "EXEC_FAILED",
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
                    if let Err(e) = exec::signal(docker, &ctx.cuid, pid, sig).await {
                        io.error(ApiError::state("SIGNAL_FAILED", e)).await;
                    }
                }
                None => io.error(no_pid()).await,
            },
            Input::Close => {
                if let Some(pid) = pid() {
                    exec::kill_session(docker, &ctx.cuid, pid).await;
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

    // Whatever ended the loop, no process of this session outlives it.
    let pid = final_pid(&mut pid_rx, PID_LATE).await;
    // The kill runs even when the leader has exited: what it started in the background
    // (`cmd=sleep 1000 & echo hi`) lives on in its session, and Docker only watches the
    // leader. `kill_session` is idempotent (it kills whatever is left of the session), and
    // the pid cannot name a stranger yet: Linux keeps it reserved while it is the session
    // id of any living process, and hands out pids in order, not freshly freed ones.
    let kill = || async {
        if let Some(pid) = pid {
            exec::kill_session(docker, &ctx.cuid, pid).await;
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
        Err(e) => {
            io.error(ApiError::new(Kind::Internal, "EXIT_CODE_UNKNOWN", e))
                .await
        }
    }
    if !leader_running {
        // The leader ended on its own: its exit frame (queued above, with its own code)
        // goes first; then what it left behind.
        kill().await;
    }
}

async fn exec_failed(io: &SessionIo, e: bollard::errors::Error) {
    tracing::warn!(error = %e, "exec failed");
    io.error(ApiError::state(
        "EXEC_FAILED",
        "could not start a process in the container",
    ))
    .await;
}

fn no_tty() -> ApiError {
    ApiError::validation(
        "NO_TTY",
        "this session has no TTY to resize (open it with cols and rows)",
    )
}

fn no_pid() -> ApiError {
    ApiError::state(
        "SIGNAL_FAILED",
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

/// `?attach=true`: input goes to the main process's stdin, signals to the main process
/// (Docker's kill API; tini forwards them), `exit` when the main process ends. `close`
/// detaches: the main process belongs to the reconciler, not to a viewer.
async fn attach_session(ctx: &Ctx, mut io: SessionIo, main: Option<&tokio::task::JoinHandle<()>>) {
    let docker = &ctx.docker;
    // Register the wait first so an exit right after attaching is not missed.
    let wait_opts = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut waiter = Box::pin(docker.wait_container(&ctx.cuid, Some(wait_opts)));
    let attach_opts = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(true)
        .build();
    let attached = match docker.attach_container(&ctx.cuid, Some(attach_opts)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "attach failed");
            return io
                .error(ApiError::state(
                    "ATTACH_FAILED",
                    "could not attach to the main process",
                ))
                .await;
        }
    };
    let mut stdin = attached.input;
    let _output = attached.output;
    let exit = loop {
        tokio::select! {
            r = waiter.next() => break match r {
                Some(Ok(resp)) => Some(resp.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
                _ => None,
            },
            () = io.gone.cancelled() => return,
            () = ctx.shutdown.cancelled() => return,
            input = io.input.recv() => match input {
                None | Some(Input::Close) => return,
                Some(Input::Stdin(bytes)) => {
                    // The main process's end closes its stdin, failing the write.
                    if !write_input(&mut stdin, &bytes, &io, std::future::pending()).await {
                        return;
                    }
                }
                Some(Input::Resize { .. }) => io.error(no_tty()).await,
                Some(Input::Signal(sig)) => {
                    let opts = KillContainerOptionsBuilder::new()
                        .signal(&format!("SIG{}", sig.name()))
                        .build();
                    if let Err(e) = docker.kill_container(&ctx.cuid, Some(opts)).await {
                        tracing::debug!(error = %e, "kill failed");
                        io.error(ApiError::state("SIGNAL_FAILED", "the main process could not be signalled")).await;
                    }
                }
            },
        }
    };
    // Let the main output reach its end (the log stream ends with the run), briefly.
    if let Some(main) = main {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !main.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    match exit {
        Some(code) => io.exit(code).await,
        None => {
            io.error(ApiError::new(
                Kind::Internal,
                "EXIT_CODE_UNKNOWN",
                "the main process's exit code could not be read",
            ))
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::time::{sleep, timeout, Instant};

    use super::*;

    const IDLE: Duration = Duration::from_millis(300);

    /// A reader on a socket stand-in fed by the returned sender, and its `gone` token.
    fn reader(
        queue: usize,
    ) -> (
        mpsc::Sender<Message>,
        mpsc::Receiver<Input>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Message>(16);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|m| m.map(Ok::<_, Infallible>))
        });
        let (input_tx, input_rx) = mpsc::channel(queue);
        let (ctl_tx, _ctl_rx) = mpsc::channel(16);
        let gone = CancellationToken::new();
        let task = tokio::spawn(read_frames(stream, IDLE, input_tx, ctl_tx, gone.clone()));
        (tx, input_rx, gone, task)
    }

    /// A session's io with queues of one, and the receiving ends of its output queues.
    fn session_io() -> (SessionIo, (mpsc::Receiver<String>, mpsc::Receiver<Out>)) {
        let (_input_tx, input) = mpsc::channel(1);
        let (ctl, ctl_rx) = mpsc::channel(1);
        let (out, out_rx) = mpsc::channel(1);
        let io = SessionIo {
            input,
            ctl,
            out,
            gone: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        };
        (io, (ctl_rx, out_rx))
    }

    #[tokio::test]
    async fn input_for_a_process_that_reads_none_gives_way_to_the_session_end() {
        // A full path to the process: nobody reads the other end.
        let (mut stdin, _process) = tokio::io::duplex(4);
        stdin.write_all(b"full").await.unwrap();
        for stop in ["gone", "shutdown", "ended"] {
            let (io, _writer) = session_io();
            let ended = CancellationToken::new();
            let token = match stop {
                "gone" => io.gone.clone(),
                "shutdown" => io.shutdown.clone(),
                _ => ended.clone(),
            };
            tokio::spawn(async move {
                sleep(Duration::from_millis(100)).await;
                token.cancel();
            });
            // The ^C of `INT` on a TTY is such a write too.
            let wrote = timeout(
                Duration::from_secs(5),
                write_input(&mut stdin, &[0x03], &io, ended.cancelled()),
            )
            .await
            .unwrap_or_else(|_| panic!("a blocked write ignored {stop}"));
            assert!(!wrote, "{stop}");
        }
    }

    #[tokio::test]
    async fn an_error_frame_does_not_wait_on_a_stuck_writer_past_the_end() {
        let (io, _writer) = session_io();
        io.error(no_tty()).await; // fills the queue; the writer takes nothing
        let gone = io.gone.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(100)).await;
            gone.cancel();
        });
        timeout(Duration::from_secs(5), io.error(no_tty()))
            .await
            .expect("an error frame outwaited the client");
        // The output queue, full too.
        io.out.send(Out::Exit(0)).await.unwrap();
        timeout(Duration::from_secs(5), io.exit(0))
            .await
            .expect("the exit frame outwaited the client");
    }

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

    #[tokio::test]
    async fn a_silent_peer_is_gone_after_the_idle_limit() {
        let (_tx, _input, gone, task) = reader(4);
        let start = Instant::now();
        timeout(IDLE * 10, gone.cancelled())
            .await
            .expect("a silent peer was never given up on");
        assert!(start.elapsed() >= IDLE, "given up on too early");
        timeout(IDLE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn pongs_and_frames_keep_a_peer_alive() {
        let (tx, mut input, gone, _task) = reader(4);
        // Three idle limits' worth of pongs and stdin, each well within the limit.
        let mut got = 0;
        for i in 0..18 {
            let msg = if i % 2 == 0 {
                Message::Pong(Default::default())
            } else {
                Message::Binary(vec![b'x'].into())
            };
            tx.send(msg).await.unwrap();
            sleep(IDLE / 6).await;
            assert!(!gone.is_cancelled(), "an active peer was given up on");
            while let Ok(Input::Stdin(_)) = input.try_recv() {
                got += 1;
            }
        }
        assert_eq!(got, 9);
        // Then silence (the peer is still "connected"): gone.
        timeout(IDLE * 10, gone.cancelled())
            .await
            .expect("a peer gone silent was never given up on");
    }

    #[tokio::test]
    async fn a_busy_session_is_not_mistaken_for_a_silent_peer() {
        // The session does not take input for a while: the reader waits on the queue, not
        // on the socket, and that time does not count against the peer.
        let (tx, mut input, gone, _task) = reader(1);
        for _ in 0..2 {
            tx.send(Message::Binary(vec![b'x'].into())).await.unwrap();
        }
        sleep(IDLE * 3).await;
        assert!(!gone.is_cancelled(), "a blocked reader counted as idle");
        assert!(input.recv().await.is_some());
        assert!(input.recv().await.is_some());
        // Reading again, with a fresh idle limit.
        sleep(IDLE / 3).await;
        assert!(!gone.is_cancelled());
        timeout(IDLE * 10, gone.cancelled()).await.unwrap();
    }
}
