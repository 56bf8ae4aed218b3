//! Who may use the API: the configured credentials, compared in constant time, and the
//! throttle on repeated *failures* per client address. No HTTP routing here: the middleware
//! that applies these lives in `http::auth`.
//!
//! Throttling rules: after `AUTH_MAX_FAILURES` failures from one address within a minute, that
//! address gets `429` + `Retry-After` on every request that needs authentication, for a
//! penalty that doubles with each repeat (5 s, 10 s, … capped at 5 minutes). While it is
//! blocked the credentials are **not checked**: otherwise a guesser would go on at line rate
//! and recognise the right password by its `200`. Other addresses are never affected, the
//! block expires by itself, and a success clears the address's record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const WINDOW: Duration = Duration::from_secs(60);
const FIRST_PENALTY: Duration = Duration::from_secs(5);
const MAX_PENALTY: Duration = Duration::from_secs(300);
/// Past this many tracked addresses, stale records are pruned (at most once a second).
const PRUNE_AT: usize = 10_000;
/// Memory bound: if pruning cannot get below this (a flood from many addresses), the
/// records are dropped. Throttling then fails open for a moment; the server stays up.
const HARD_CAP: usize = 100_000;

/// The throttled unit: an IPv4 address, or an IPv6 /64 (one host can hold a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// The address a request comes from: `peer`, unless `peer` is a trusted proxy; then the
/// `X-Forwarded-For` list (`forwarded`, comma-separated, oldest first) is read from the right,
/// skipping trusted proxies, and the first address not trusted is the client. Anything a
/// client wrote further left is never believed; an entry that is not an address stops the
/// walk at the last proxy seen.
pub fn client_address(peer: IpAddr, forwarded: &str, trusted: &[crate::cidr::Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = crate::cidr::canonical(peer);
    if !is_trusted(client) {
        return client;
    }
    for entry in forwarded
        .rsplit(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = crate::cidr::canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

pub struct Credentials {
    user: String,
    user_digest: [u8; 32],
    pass_digest: [u8; 32],
}

impl Credentials {
    pub fn new(user: &str, pass: &str) -> Self {
        Self {
            user: user.to_owned(),
            user_digest: Sha256::digest(user.as_bytes()).into(),
            pass_digest: Sha256::digest(pass.as_bytes()).into(),
        }
    }

    /// Checks an `Authorization` header value. Digests make both sides the same length, so
    /// the comparison time says nothing about either secret.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Option<&str> {
        let value = authorization?.to_str().ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        self.matches(user, pass)
    }

    /// Checks a user name and password (console sign-in), in constant time like [`check`].
    ///
    /// [`check`]: Self::check
    pub fn matches(&self, user: &str, pass: &str) -> Option<&str> {
        let user_ok = Sha256::digest(user.as_bytes()).ct_eq(&self.user_digest);
        let pass_ok = Sha256::digest(pass.as_bytes()).ct_eq(&self.pass_digest);
        bool::from(user_ok & pass_ok).then_some(self.user.as_str())
    }
}

#[derive(Debug)]
struct Record {
    failures: u32,
    window_start: Instant,
    strikes: u32,
    blocked_until: Option<Instant>,
}

pub struct FailureThrottle {
    max_failures: u32,
    records: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    by_client: HashMap<IpAddr, Record>,
    last_prune: Option<Instant>,
}

impl FailureThrottle {
    pub fn new(max_failures: u32) -> Self {
        Self {
            max_failures: max_failures.max(1),
            records: Mutex::new(Records::default()),
        }
    }

    /// Time left on this address's penalty, if it has one.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let until = records.by_client.get(&client_key(ip))?.blocked_until?;
        (until > now).then(|| until - now)
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let prune_due = records
            .last_prune
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if records.by_client.len() >= PRUNE_AT && prune_due {
            records.last_prune = Some(now);
            records.by_client.retain(|_, r| {
                now.duration_since(r.window_start) < WINDOW
                    || r.blocked_until.is_some_and(|u| u > now)
            });
        }
        if records.by_client.len() >= HARD_CAP {
            tracing::warn!("too many addresses failing to log in; throttle records dropped");
            records.by_client.clear();
        }
        let r = records.by_client.entry(client_key(ip)).or_insert(Record {
            failures: 0,
            window_start: now,
            strikes: 0,
            blocked_until: None,
        });
        if now.duration_since(r.window_start) > WINDOW {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        if r.failures >= self.max_failures {
            let penalty = FIRST_PENALTY
                .saturating_mul(1u32 << r.strikes.min(16))
                .min(MAX_PENALTY);
            r.blocked_until = Some(now + penalty);
            r.strikes += 1;
            r.failures = 0;
            r.window_start = now;
        }
    }

    pub fn record_success(&self, ip: IpAddr) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_client
            .remove(&client_key(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    #[test]
    fn credentials_match_exactly() {
        let c = Credentials::new("admin", "s3cret:with:colons");
        assert_eq!(
            c.check(Some(&basic("admin", "s3cret:with:colons"))),
            Some("admin")
        );
        assert_eq!(c.check(Some(&basic("admin", "s3cret"))), None);
        assert_eq!(c.check(Some(&basic("Admin", "s3cret:with:colons"))), None);
        assert_eq!(c.check(Some(&HeaderValue::from_static("Bearer x"))), None);
        assert_eq!(c.check(Some(&HeaderValue::from_static("Basic !!!"))), None);
        assert_eq!(c.check(None), None);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = crate::cidr::parse_list("10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.5"), "198.51.100.1", &trusted),
            ip("203.0.113.5")
        );
        // A trusted proxy: the rightmost untrusted entry; forged entries left of it ignored.
        assert_eq!(
            client_address(ip("10.0.0.2"), "1.1.1.1, 198.51.100.1, 10.0.0.9", &trusted),
            ip("198.51.100.1")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(client_address(ip("10.0.0.2"), "", &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_address(ip("10.0.0.2"), "unknown", &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), "1.2.3.4", &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn throttle_blocks_after_failures_then_recovers() {
        let t = FailureThrottle::new(3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let start = Instant::now();
        for _ in 0..2 {
            t.record_failure(ip, start);
        }
        assert_eq!(t.blocked_for(ip, start), None);
        t.record_failure(ip, start);
        assert_eq!(t.blocked_for(ip, start), Some(FIRST_PENALTY));
        // Over by itself.
        assert_eq!(t.blocked_for(ip, start + FIRST_PENALTY), None);
        // A repeat doubles the penalty; other addresses are unaffected.
        for _ in 0..3 {
            t.record_failure(ip, start + FIRST_PENALTY);
        }
        assert_eq!(
            t.blocked_for(ip, start + FIRST_PENALTY),
            Some(FIRST_PENALTY * 2)
        );
        assert_eq!(t.blocked_for(IpAddr::from([10, 0, 0, 2]), start), None);
        // One IPv6 /64 is one client.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            t.record_failure(a, start);
        }
        assert!(t.blocked_for(b, start).is_some());
        // Success clears the record.
        t.record_success(ip);
        assert_eq!(t.blocked_for(ip, start + FIRST_PENALTY), None);
    }
}
