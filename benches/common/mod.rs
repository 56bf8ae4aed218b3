//! What every benchmark shares: the integration-test harness (a real server, see
//! `tests/it/common.rs`) and the arithmetic of the figures they print.

#![allow(dead_code)]

use std::time::Duration;

#[path = "../../tests/it/common.rs"]
mod harness;

pub use harness::*;

/// A whole-number setting from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 to 1) of `samples`, nearest rank; sorts them.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
