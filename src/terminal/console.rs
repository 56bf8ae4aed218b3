//! The container's main-process output, read from Docker's log stream (json-file), so that
//! following it never slows the main process down. Shared by the console session (§6) and
//! `GET /containers/{cuid}/logs` (§4).

use std::collections::VecDeque;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use futures_util::{Stream, StreamExt};

use super::frames::Stream as Kind;

/// The console's backlog: at most this many lines of the current run …
pub const BACKLOG_LINES: usize = 1000;
/// … and at most this many bytes.
pub const BACKLOG_BYTES: usize = 256 * 1024;

/// One log record: which stream, when Docker received it, and the bytes (usually one line
/// with its `\n`; Docker splits lines longer than 16 KiB).
#[derive(Clone, Debug)]
pub struct Record {
    pub stream: Kind,
    pub at: Option<DateTime<FixedOffset>>,
    pub data: Bytes,
}

/// Splits Docker's `timestamps=true` prefix (`2024-01-20T15:30:00.123456789Z `) off a message.
pub fn split_timestamp(message: &Bytes) -> (Option<DateTime<FixedOffset>>, Bytes) {
    let head = &message[..message.len().min(40)];
    if let Some(space) = head.iter().position(|b| *b == b' ') {
        if let Ok(text) = std::str::from_utf8(&head[..space]) {
            if let Ok(at) = DateTime::parse_from_rfc3339(text) {
                return (Some(at), message.slice(space + 1..));
            }
        }
    }
    (None, message.clone())
}

fn record(item: LogOutput) -> Option<Record> {
    let (stream, message) = match item {
        LogOutput::StdOut { message } | LogOutput::Console { message } => (Kind::Stdout, message),
        LogOutput::StdErr { message } => (Kind::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let (at, data) = split_timestamp(&message);
    Some(Record { stream, at, data })
}

/// Docker's `since`/`until` here are whole seconds; callers filter precisely on timestamps.
fn whole_seconds(at: &DateTime<FixedOffset>) -> i32 {
    i32::try_from(at.timestamp()).unwrap_or(i32::MAX).max(1)
}

/// The log records of a container, with timestamps, as a stream that ends on an error or
/// (without `follow`) at the end of the log. `since` is applied precisely here.
pub fn records(
    docker: &Docker,
    cuid: &str,
    since: Option<DateTime<FixedOffset>>,
    tail: Option<u64>,
    follow: bool,
) -> impl Stream<Item = Record> + Send + 'static {
    let mut opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(follow);
    if let Some(since) = &since {
        opts = opts.since(whole_seconds(since));
    }
    opts = opts.tail(&tail.map_or_else(|| "all".to_owned(), |n| n.to_string()));
    docker
        .logs(cuid, Some(opts.build()))
        .take_while(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "log stream ended");
            }
            std::future::ready(r.is_ok())
        })
        .filter_map(move |r| {
            let keep = r
                .ok()
                .and_then(record)
                .filter(|rec| match (&since, &rec.at) {
                    (Some(since), Some(at)) => at >= since,
                    _ => true,
                });
            std::future::ready(keep)
        })
}

/// The current run's output so far, bounded to the last [`BACKLOG_LINES`] records and
/// [`BACKLOG_BYTES`] bytes, and the timestamp to follow on from.
pub async fn backlog(
    docker: &Docker,
    cuid: &str,
    started_at: Option<DateTime<FixedOffset>>,
) -> (Vec<Record>, Option<DateTime<FixedOffset>>) {
    let mut kept: VecDeque<Record> = VecDeque::new();
    let mut bytes = 0usize;
    let mut last = None;
    let stream = records(docker, cuid, started_at, Some(BACKLOG_LINES as u64), false);
    futures_util::pin_mut!(stream);
    while let Some(rec) = stream.next().await {
        if rec.at.is_some() {
            last = rec.at;
        }
        bytes += rec.data.len();
        kept.push_back(rec);
        while bytes > BACKLOG_BYTES || kept.len() > BACKLOG_LINES {
            match kept.pop_front() {
                Some(old) => bytes -= old.data.len(),
                None => break,
            }
        }
    }
    (kept.into(), last)
}

/// The main output of the current run: the bounded backlog, then live records.
pub fn follow_current_run(
    docker: Docker,
    cuid: String,
    started_at: Option<DateTime<FixedOffset>>,
) -> impl Stream<Item = Record> + Send + 'static {
    async_stream(docker, cuid, started_at)
}

fn async_stream(
    docker: Docker,
    cuid: String,
    started_at: Option<DateTime<FixedOffset>>,
) -> impl Stream<Item = Record> + Send + 'static {
    futures_util::stream::once(async move {
        let (kept, last) = backlog(&docker, &cuid, started_at).await;
        let from = last.or(started_at);
        let live = records(&docker, &cuid, from, None, true).filter(move |rec| {
            // Records up to and including the backlog's last one were already sent.
            let fresh = match (&last, &rec.at) {
                (Some(last), Some(at)) => at > last,
                _ => true,
            };
            std::future::ready(fresh)
        });
        futures_util::stream::iter(kept).chain(live)
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_split_off() {
        let msg = Bytes::from_static(b"2024-01-20T15:30:00.123456789Z hello world\n");
        let (at, data) = split_timestamp(&msg);
        assert_eq!(
            at.unwrap(),
            DateTime::parse_from_rfc3339("2024-01-20T15:30:00.123456789Z").unwrap()
        );
        assert_eq!(&data[..], b"hello world\n");
        let msg = Bytes::from_static(b"no timestamp here\n");
        let (at, data) = split_timestamp(&msg);
        assert!(at.is_none());
        assert_eq!(data, msg);
    }
}
