//! The WebSocket terminal session of docs/API.md §6, independent of HTTP: given an upgraded
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
//!
//! Files: this one starts a session and wires its tasks together; `plumbing.rs` holds the
//! reader, writer and main follower; `exec_session.rs` the exec'd process's side and
//! `attach.rs` the attached one's; [`exec`] the pid marker and the helper processes that
//! signal and kill; [`console`] the main output's log; [`frames`] the wire format.

mod attach;
pub mod console;
pub mod error;
pub mod exec;
mod exec_session;
pub mod frames;
mod plumbing;

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bollard::Docker;
use chrono::{DateTime, FixedOffset};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::REQUEST_ID;
pub use error::{Error, ErrorFrame, Reason};
use plumbing::{follow_main, read_frames, write_frames, SessionIo};

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
    /// The container's name for `docker`: its cuid on this host; with a Swarm, the id of its
    /// task's container on the node `docker` reaches.
    pub container: String,
    /// Where the main process's current run begins in its log (see
    /// [`console::run_since`]); `None`: the whole log is this run's.
    pub run_since: Option<DateTime<FixedOffset>>,
    pub options: Options,
    pub shutdown: CancellationToken,
    /// The upgrade request's id, for the error frames of the session.
    pub request_id: String,
    /// Renders the session's `error` frames (the HTTP error body, made in `http/`).
    pub error_frame: ErrorFrame,
    /// The Swarm node that runs the container (`None` on one host).
    pub node: Option<String>,
    /// Cancelled when the Swarm sees that node down: the session ends with `NODE_LOST`
    /// even while Docker's stream from the node just hangs (a node cut off).
    pub node_lost: CancellationToken,
}

/// How long a session on a Swarm node whose stream ended waits for the node's Engine API
/// to answer before it counts the node as lost.
const NODE_PING: Duration = Duration::from_secs(2);

/// What the writer sends, in order.
enum Out {
    Frame(String),
    Exit(i64),
    /// An `error` frame `NODE_LOST`, then the close code [`frames::CLOSE_NODE_LOST`].
    Lost(String),
}

/// Whether the session's node is lost: the Swarm sees it down, or (a session on a Swarm
/// node whose Docker stream just ended) the node's Engine API does not answer any more.
async fn node_is_lost(ctx: &Ctx) -> bool {
    if ctx.node_lost.is_cancelled() {
        return true;
    }
    if ctx.node.is_none() {
        return false;
    }
    !matches!(
        tokio::time::timeout(NODE_PING, ctx.docker.ping()).await,
        Ok(Ok(_))
    )
}

/// Ends a session whose node was lost: nothing more can be asked of that node (its
/// processes end with the old task, when Swarm shuts it down on the node's return), so the
/// client gets `NODE_LOST` and the close code at once.
async fn end_lost(ctx: &Ctx, io: &plumbing::SessionIo) {
    let node = ctx.node.as_deref().unwrap_or("?");
    tracing::info!(
        cuid = ctx.cuid,
        node,
        "terminal session ended: its node was lost"
    );
    let err = Error::new(
        Reason::NodeLost,
        format!(
            "node {node}, which ran container {}, was lost; the session is over (the Swarm \
             moves the container to another node: open a new terminal)",
            ctx.cuid
        ),
    )
    .with_details(serde_json::json!({"cuid": ctx.cuid, "node": node}));
    tokio::select! {
        _ = io.out.send(Out::Lost((io.error_frame)(&err))) => {}
        () = io.stopped() => {}
    }
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
    let _open = crate::metrics::SessionGuard::open();
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
        ctx.error_frame,
    ));
    let mut writer = spawn(write_frames(sink, ctl_rx, main_rx, exec_rx, gone.clone()));
    let (backlog_tx, backlog_rx) = tokio::sync::oneshot::channel();
    let main = ctx.options.main.then(|| {
        spawn(follow_main(
            ctx.docker.clone(),
            ctx.container.clone(),
            ctx.run_since,
            main_tx,
            backlog_tx,
            ctx.error_frame,
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
        error_frame: ctx.error_frame,
    };
    if ctx.options.attach {
        attach::attach_session(&ctx, io, main.as_ref()).await;
    } else {
        exec_session::exec_session(&ctx, io).await;
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
