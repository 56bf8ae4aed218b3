//! Per-tenant request rates: a token bucket for each tenant with a `requests_per_second`
//! quota, holding up to one second's worth of requests (at least one), so a steady client at
//! the limit is never refused and a burst is cut at one second's worth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes one request from `tenant`'s bucket, refilled at `per_second`; when it is empty,
    /// how long until one request is allowed again.
    pub fn take(&self, tenant: &str, per_second: f64, now: Instant) -> Result<(), Duration> {
        let capacity = per_second.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Forgets a tenant (deleted, or its quota changed).
    pub fn forget(&self, tenant: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_one_seconds_worth_and_refills() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(r.take("a", 5.0, t0).is_ok());
        }
        let wait = r.take("a", 5.0, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(200) && wait > Duration::ZERO);
        // Another tenant is not affected.
        assert!(r.take("b", 5.0, t0).is_ok());
        assert!(r.take("a", 5.0, t0 + Duration::from_millis(200)).is_ok());
    }

    #[test]
    fn a_slow_rate_still_allows_one_request() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.take("a", 0.5, t0).is_ok());
        let wait = r.take("a", 0.5, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
    }
}
