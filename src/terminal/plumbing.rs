//! Session plumbing shared by both kinds of session: the reader (client frames → inputs,
//! with the idle limit), the writer (frames and pings out), the main-output follower, and
//! [`SessionIo`], the queues a session's process side works with.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bollard::Docker;
use chrono::{DateTime, FixedOffset};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::{Error, ErrorFrame, Reason};
use super::frames::{self, Encoder, Input, Source, Stream};
use super::{console, Out, PING_EVERY};

pub(super) struct SessionIo {
    pub(super) input: mpsc::Receiver<Input>,
    pub(super) ctl: mpsc::Sender<String>,
    pub(super) out: mpsc::Sender<Out>,
    pub(super) gone: CancellationToken,
    pub(super) shutdown: CancellationToken,
    /// Renders the session's `error` frames.
    pub(super) error_frame: ErrorFrame,
}

impl SessionIo {
    /// Resolves once the client has left or the server is shutting down.
    pub(super) async fn stopped(&self) {
        tokio::select! {
            () = self.gone.cancelled() => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    pub(super) async fn error(&self, err: Error) {
        // The queue is full while the writer is stuck sending to a peer that reads nothing:
        // waiting here past the session's end would keep it (and its processes) alive.
        tokio::select! {
            _ = self.ctl.send((self.error_frame)(&err)) => {}
            () = self.stopped() => {}
        }
    }

    /// Queues the `exit` frame, behind the output (the same wait as [`Self::error`]).
    pub(super) async fn exit(&self, code: i64) {
        tokio::select! {
            _ = self.out.send(Out::Exit(code)) => {}
            () = self.stopped() => {}
        }
    }
}

/// A resize for a session opened without a TTY.
pub(super) fn no_tty() -> Error {
    Error::new(
        Reason::NoTty,
        "this session has no TTY to resize (open it with cols and rows)",
    )
}

/// Writes input for the process; `false` when the session ended first. A process that
/// reads no input fills the path to it (the terminal, Docker's pipe, the socket), and the
/// write then waits for it: the session must still notice its end meanwhile, or it never
/// ends and its processes are never killed.
pub(super) async fn write_input<W>(
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
pub(super) async fn read_frames<S, E>(
    mut stream: S,
    idle: Duration,
    input: mpsc::Sender<Input>,
    ctl: mpsc::Sender<String>,
    gone: CancellationToken,
    error_frame: ErrorFrame,
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
            Message::Binary(_) => Err(Error::new(
                Reason::FrameTooLarge,
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
                let _ = ctl.send(error_frame(&err)).await;
            }
        }
    }
    gone.cancel();
}

pub(super) async fn write_frames(
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
                Some(Out::Lost(text)) => {
                    let _ = sink.send(Message::Text(text.into())).await;
                    let close = axum::extract::ws::CloseFrame {
                        code: frames::CLOSE_NODE_LOST,
                        reason: "node lost".into(),
                    };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
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
pub(super) async fn follow_main(
    docker: Docker,
    cuid: String,
    run_since: Option<DateTime<FixedOffset>>,
    tx: mpsc::Sender<String>,
    backlog_sent: tokio::sync::oneshot::Sender<()>,
    error_frame: ErrorFrame,
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
                    permit.send(error_frame(&lagged(lost)));
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

fn lagged(lost: u64) -> Error {
    Error::new(
        Reason::OutputLagged,
        format!("the client did not keep up with the main output: {lost} lines were skipped"),
    )
    .with_details(serde_json::json!({"skipped_lines": lost}))
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
        let task = tokio::spawn(read_frames(
            stream,
            IDLE,
            input_tx,
            ctl_tx,
            gone.clone(),
            |e| e.message.clone(),
        ));
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
            error_frame: |e| e.message.clone(),
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
