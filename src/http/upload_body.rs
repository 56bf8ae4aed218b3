//! Receiving an upload's body: streamed to a staging file, never more than a chunk in
//! memory, under three bounds a client cannot stretch.
//!
//! - `UPLOAD_IDLE_TIMEOUT`: no byte for that long (the first byte too) ends the upload
//!   (`408 UPLOAD_IDLE_TIMEOUT`).
//! - `UPLOAD_STALL_BUDGET`: a **total** of time spent waiting for the body's bytes, like
//!   download-zip's stall budget ([`crate::appdir::zipout::Stall`]): every wait is spent from it,
//!   every byte received earns back `1 s / MIN_RATE_BYTES_PER_SEC` (never above the budget).
//!   A body averaging 64 KiB/s or more is never cut, however long; one that trickles (a byte
//!   every 29 s passes any per-chunk timeout of 30 s) is cut once the budget is spent
//!   (`408 UPLOAD_TOO_SLOW`), so it cannot hold an upload slot for long.
//! - `UPLOAD_MAX_BYTES`: past it, `413 UPLOAD_TOO_LARGE` (after a bounded drain).

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::error::{ApiCode, ApiError, ApiResult, Kind};

/// The average rate (after the budget's slack) at which a body never runs out of budget.
pub const MIN_RATE_BYTES_PER_SEC: u64 = 64 * 1024;

/// How much of a body is still read (and thrown away) before answering an error, so that
/// the client, still sending, reads the answer instead of a reset connection.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(3);

/// Reads and discards what is left of a body, within bounds.
pub async fn drain(mut stream: axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

pub fn upload_too_large(limit: u64) -> ApiError {
    ApiError::new(
        Kind::PayloadTooLarge,
        ApiCode::UploadTooLarge,
        format!("the upload is over the {limit}-byte limit"),
    )
    .with_details(json!({"limit": limit}))
}

fn idle_timeout(idle: Duration) -> ApiError {
    ApiError::new(
        Kind::Timeout,
        ApiCode::UploadIdleTimeout,
        format!(
            "no byte of the upload arrived for {} s; send the body without pausing",
            idle.as_secs()
        ),
    )
    .with_details(json!({"idle_timeout_secs": idle.as_secs()}))
}

fn too_slow(budget: Duration, received: u64) -> ApiError {
    ApiError::new(
        Kind::Timeout,
        ApiCode::UploadTooSlow,
        format!(
            "the upload body arrived too slowly: it spent its {} s of waiting and averaged under {} KiB/s",
            budget.as_secs(),
            MIN_RATE_BYTES_PER_SEC / 1024
        ),
    )
    .with_details(json!({
        "stall_budget_secs": budget.as_secs(),
        "min_rate_bytes_per_sec": MIN_RATE_BYTES_PER_SEC,
        "received": received,
    }))
}

/// What is left of a body's total stall budget.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    budget: Duration,
    left: Duration,
}

impl Stall {
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            left: budget,
        }
    }

    /// The longest the next wait may last.
    pub fn left(&self) -> Duration {
        self.left
    }

    /// A wait of `waited` that brought `bytes`: spent, then earned back.
    pub fn spend(&mut self, waited: Duration, bytes: usize) {
        let earned = Duration::from_secs_f64(bytes as f64 / MIN_RATE_BYTES_PER_SEC as f64);
        self.left = (self.left.saturating_sub(waited) + earned).min(self.budget);
    }
}

/// Streams the request body into a new file at `path`, under the bounds of this module.
pub async fn receive(
    body: Body,
    path: &Path,
    limit: u64,
    idle: Duration,
    budget: Duration,
) -> ApiResult<u64> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    let mut out = tokio::io::BufWriter::with_capacity(512 * 1024, file);
    let mut stream = body.into_data_stream();
    let mut stall = Stall::new(budget);
    let mut total: u64 = 0;
    loop {
        let left = stall.left();
        let started = Instant::now();
        let Ok(next) = tokio::time::timeout(idle.min(left), stream.next()).await else {
            tracing::info!(
                received = total,
                "an upload body stalled; its slot is freed"
            );
            return Err(if left < idle {
                too_slow(budget, total)
            } else {
                idle_timeout(idle)
            });
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| {
            ApiError::validation(
                ApiCode::BodyReadFailed,
                "the request body could not be read",
            )
        })?;
        stall.spend(started.elapsed(), chunk.len());
        total += chunk.len() as u64;
        crate::metrics::get()
            .upload_bytes
            .inc_by(chunk.len() as u64);
        if total > limit {
            drain(stream).await;
            return Err(upload_too_large(limit));
        }
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    out.into_inner().sync_data().await.ok();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte every 100 ms earns almost nothing back: 2 s of budget last about 20 bytes.
    #[test]
    fn a_trickle_spends_the_budget() {
        let mut s = Stall::new(Duration::from_secs(2));
        let mut bytes = 0;
        // A wait longer than what is left is cut by `receive`'s timeout.
        while s.left() >= Duration::from_millis(100) {
            s.spend(Duration::from_millis(100), 1);
            bytes += 1;
        }
        assert_eq!(bytes, 20);
    }

    /// 64 KiB every second (the minimum rate) never runs out, and the budget never grows
    /// past itself.
    #[test]
    fn the_minimum_rate_keeps_the_budget() {
        let mut s = Stall::new(Duration::from_secs(2));
        for _ in 0..1000 {
            s.spend(Duration::from_millis(999), 64 * 1024);
        }
        assert_eq!(s.left(), Duration::from_secs(2));
        s.spend(Duration::ZERO, 10 * 1024 * 1024);
        assert_eq!(s.left(), Duration::from_secs(2));
    }
}
