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

/// Where the current run's output begins in the container's log. Not `StartedAt`: a process
/// can print before Docker records that (its first lines would be lost). The previous run's
/// end is the boundary instead: Docker finishes copying a run's output before it records
/// `FinishedAt`, and the next run starts after it. No previous run (`FinishedAt` unset or
/// older than the year 2000): the whole log is this run's.
pub fn run_since(
    started_at: Option<DateTime<FixedOffset>>,
    finished_at: Option<DateTime<FixedOffset>>,
) -> Option<DateTime<FixedOffset>> {
    let finished = finished_at.filter(|f| f.timestamp() > 946_684_800)?;
    match started_at {
        Some(started) if finished > started => Some(started),
        _ => Some(finished + chrono::Duration::nanoseconds(1)),
    }
}

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

/// The current run's output so far (from `since`, see [`run_since`]), bounded to the last
/// [`BACKLOG_LINES`] records and [`BACKLOG_BYTES`] bytes, and the timestamp to follow on from.
pub async fn backlog(
    docker: &Docker,
    cuid: &str,
    since: Option<DateTime<FixedOffset>>,
) -> (Vec<Record>, Option<DateTime<FixedOffset>>) {
    let mut kept: VecDeque<Record> = VecDeque::new();
    let mut bytes = 0usize;
    let mut last = None;
    let stream = records(docker, cuid, since, Some(BACKLOG_LINES as u64), false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_starts_after_the_previous_one_ended() {
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap());
        let started = t("2024-01-20T15:30:05Z");
        assert_eq!(run_since(started, t("0001-01-01T00:00:00Z")), None);
        assert_eq!(run_since(started, None), None);
        let since = run_since(started, t("2024-01-20T15:30:01Z")).unwrap();
        assert!(since > t("2024-01-20T15:30:01Z").unwrap());
        assert!(since < t("2024-01-20T15:30:01.000001Z").unwrap());
        // Finished after started: a stale pair; fall back to the start.
        assert_eq!(run_since(started, t("2024-01-20T15:30:09Z")), started);
    }

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
