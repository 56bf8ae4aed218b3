//! Accepting connections: how many may be open (in all and per address), how long one may
//! take to send a request's headers or sit idle between requests, and a graceful stop.
//!
//! `axum::serve` has none of these: a client that opens sockets and sends nothing holds each
//! one for ever, and enough of them exhaust the server's descriptors (`accept: Too many open
//! files`) so that nobody else gets in. Here:
//! - every connection is admitted against [`Admission`]: past `MAX_CONNECTIONS` in all, or
//!   `MAX_CONNECTIONS_PER_IP` from one address (trusted proxies exempt), it is closed at once.
//!   The cap in all is also kept below the open-file limit, leaving room for the store, Docker
//!   and files. The admission permit lives inside the connection's IO, so it follows an
//!   upgraded WebSocket until that closes;
//! - HTTP/1.1 only, served by hyper with a timer: `HEADER_READ_TIMEOUT` bounds the time to
//!   the end of a request's headers, counted from the connection's opening and, between
//!   kept-alive requests, from the end of the previous response. A request being answered
//!   (a stream, a WebSocket) is never cut by it;
//! - a write that finds the client taking nothing for `WRITE_TIMEOUT` fails, which ends the
//!   connection: a client that asks for a big answer and never reads it holds nothing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::cidr::Cidr;
use crate::config::Connections;

/// Descriptors kept free of connections for everything else the server opens.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The open-connection counts, in all and per address.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    exempt: Vec<Cidr>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
pub struct Permit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize, exempt: Vec<Cidr>) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            exempt,
            counts: Mutex::default(),
        })
    }

    /// A place for a connection from `ip`, if there is one.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let ip = crate::cidr::canonical(ip);
        let counted = !self.exempt.iter().any(|c| c.contains(ip));
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return None;
        }
        if counted {
            let n = counts.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return None;
            }
            *n += 1;
        }
        counts.total += 1;
        Some(Permit {
            admission: self.clone(),
            ip: counted.then_some(ip),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A socket together with its admission permit, and a limit on how long a write may wait
/// for the client to take data: a client that stops reading (a big answer it never
/// collects) cannot hold the connection, whatever is being sent (a stream or a WebSocket
/// whose client reads is never affected).
struct Admitted {
    stream: TcpStream,
    _permit: Permit,
    write_timeout: Duration,
    /// Running while a write is blocked on a full socket buffer.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Admitted {
    /// What a write that made no progress does: wait, or fail once it has waited
    /// `write_timeout` since it first found the socket full.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing for WRITE_TIMEOUT",
            )));
        }
        Poll::Pending
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_stall = None;
                ready
            }
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// `MAX_CONNECTIONS`, lowered to what the open-file limit (`None`: unlimited) leaves room for.
pub fn effective_max(configured: usize, open_file_limit: Option<u64>) -> usize {
    let Some(limit) = open_file_limit else {
        return configured.max(1);
    };
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(limit / 2);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, asks every
/// connection to finish its current request and returns once they have. (The caller bounds
/// that wait.)
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: &Connections,
    shutdown: CancellationToken,
) {
    let open_file_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let max_total = effective_max(limits.max_connections, open_file_limit);
    let admission = Admission::new(
        max_total,
        limits.max_connections_per_ip,
        limits.trusted_proxies.clone(),
    );
    tracing::info!(
        max_connections = max_total,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        "accepting connections"
    );
    let tracker = TaskTracker::new();
    let mut refused_logged = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let Some(permit) = admission.try_admit(peer.ip()) else {
            // Closed at once: the client sees the connection end without an answer. Logged
            // at most once a minute, a flood must not flood the log.
            if refused_logged.elapsed() >= Duration::from_secs(60) {
                refused_logged = tokio::time::Instant::now();
                tracing::warn!(peer = %peer.ip(), open = admission.open(), "connection refused: too many open connections");
            }
            crate::metrics::get().connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Admitted {
            stream,
            _permit: permit,
            write_timeout: limits.write_timeout,
            write_stall: None,
        });
        tracker.spawn(serve_connection(
            io,
            peer,
            app.clone(),
            limits.header_read_timeout,
            shutdown.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection(
    io: TokioIo<Admitted>,
    peer: SocketAddr,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(axum::body::Body::new)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight, then close; an idle connection closes now.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// Accept errors: a connection that failed before it was accepted is nothing to wait for;
/// anything else (out of descriptors) gets a short pause so the loop does not spin.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_in_all_and_per_address() {
        let trusted = crate::cidr::parse_list("10.0.0.1").unwrap();
        let a = Admission::new(4, 2, trusted);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p1 = a.try_admit(ip("192.0.2.1")).unwrap();
        let _p2 = a.try_admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(a.try_admit(ip("192.0.2.1")).is_none(), "per address");
        drop(p1);
        let _p3 = a.try_admit(ip("192.0.2.1")).unwrap();
        // A trusted proxy is not capped per address, only in all.
        let _p4 = a.try_admit(ip("10.0.0.1")).unwrap();
        let _p5 = a.try_admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.open(), 4);
        assert!(a.try_admit(ip("192.0.2.9")).is_none(), "in all");
    }

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(effective_max(2048, Some(1024)), 768);
        assert_eq!(effective_max(2048, Some(300)), 150);
        assert_eq!(effective_max(100, Some(1 << 20)), 100);
        assert_eq!(effective_max(100, None), 100);
    }
}
