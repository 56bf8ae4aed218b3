//! The delivery worker: sends what the outbox holds. Each (webhook, container) line sends
//! its oldest delivery first and the next only once that one is delivered or given up; a
//! webhook has at most [`PER_WEBHOOK`] attempts in flight and the server [`IN_FLIGHT`], each
//! bounded by `WEBHOOK_CONNECT_TIMEOUT` and `WEBHOOK_TIMEOUT`, so a receiver that hangs or
//! refuses holds only its own lines. A delivery is removed from the outbox only after a
//! 2xx answer (or when given up): a crash mid-attempt means it is sent again (at least
//! once; `X-CM-Delivery` lets a receiver drop a repeat).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::address;
use crate::config::WebhookSettings;
use crate::store::webhooks::{AttemptRow, Due, Outcome};
use crate::store::Store;

/// Attempts in flight per webhook.
pub const PER_WEBHOOK: usize = 4;
/// Attempts in flight in all.
pub const IN_FLIGHT: usize = 64;
/// The longest the worker sleeps without looking at the outbox.
const IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Busy {
    seqs: HashSet<i64>,
    per_webhook: HashMap<String, usize>,
}

pub(super) async fn run(
    store: Store,
    settings: WebhookSettings,
    listen: IpAddr,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let busy = Arc::new(Mutex::new(Busy::default()));
    loop {
        let wait = match store.webhook_due(256).await {
            Ok(due) => {
                let any = !due.is_empty();
                for d in due {
                    {
                        let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
                        let mine = b.per_webhook.get(&d.webhook_id).copied().unwrap_or(0);
                        if b.seqs.contains(&d.seq)
                            || mine >= PER_WEBHOOK
                            || b.seqs.len() >= IN_FLIGHT
                        {
                            continue;
                        }
                        b.seqs.insert(d.seq);
                        *b.per_webhook.entry(d.webhook_id.clone()).or_default() += 1;
                    }
                    let (store, settings, busy, wake) =
                        (store.clone(), settings.clone(), busy.clone(), wake.clone());
                    tokio::spawn(async move {
                        attempt(&store, &settings, listen, &d).await;
                        let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
                        b.seqs.remove(&d.seq);
                        if let Some(n) = b.per_webhook.get_mut(&d.webhook_id) {
                            *n -= 1;
                            if *n == 0 {
                                b.per_webhook.remove(&d.webhook_id);
                            }
                        }
                        wake.notify_one();
                    });
                }
                if any {
                    // Due ones are in flight (or waiting for a slot): their ends wake us.
                    IDLE
                } else {
                    until_next(&store).await
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                IDLE
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Time until the next delivery falls due, at most [`IDLE`].
async fn until_next(store: &Store) -> Duration {
    let Ok(Some(next)) = store.webhook_next_due().await else {
        return IDLE;
    };
    DateTime::parse_from_rfc3339(&next)
        .ok()
        .and_then(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().ok())
        .map_or(Duration::from_millis(10), |d| {
            d.clamp(Duration::from_millis(10), IDLE)
        })
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`: the `X-CM-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The wait before attempt `n + 1` after `n` failed ones: 1 s, 2 s, 4 s… up to `max`, with
/// up to a tenth more at random so that lines that failed together do not retry together.
pub fn backoff(failed: i64, max: Duration) -> Duration {
    let exp = failed.clamp(1, 30) - 1;
    let base = Duration::from_secs(1u64 << exp).min(max);
    base + base.mul_f64(rand::random::<f64>() * 0.1)
}

/// One attempt, and its outcome recorded.
async fn attempt(store: &Store, settings: &WebhookSettings, listen: IpAddr, d: &Due) {
    let started = Instant::now();
    let result = send(settings, listen, d).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (status_code, error, delivered) = match result {
        Ok(code) if (200..300).contains(&code) => (Some(i64::from(code)), None, true),
        Ok(code) => (
            Some(i64::from(code)),
            Some(format!("the receiver answered {code}")),
            false,
        ),
        Err(e) => (None, Some(e), false),
    };
    let now = Utc::now();
    let created = DateTime::parse_from_rfc3339(&d.created_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    let failed = d.attempts + 1;
    let outcome = if delivered {
        Outcome::Delivered
    } else {
        let next = now
            + chrono::Duration::from_std(backoff(failed, settings.backoff_max)).unwrap_or_default();
        let give_up = chrono::Duration::from_std(settings.max_age).unwrap_or_default();
        if next > created + give_up {
            Outcome::Failed
        } else {
            Outcome::Retry(next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
    };
    if let Some(e) = &error {
        tracing::debug!(webhook = %d.webhook_id, delivery = %d.delivery_id, error = %e, "webhook attempt failed");
    }
    if matches!(outcome, Outcome::Failed) {
        tracing::warn!(webhook = %d.webhook_id, delivery = %d.delivery_id, "webhook delivery given up");
    }
    let row = AttemptRow {
        delivery_id: d.delivery_id.clone(),
        kind: d.kind.clone(),
        cuid: d.cuid.clone(),
        attempt: failed,
        at: crate::store::now(),
        status_code,
        error,
        latency_ms,
        outcome: String::new(),
    };
    if let Err(e) = store
        .record_attempt(d, &row, &outcome, super::HISTORY)
        .await
    {
        // Not recorded: the delivery stays due and is attempted again.
        tracing::warn!(error = %e, "webhooks: cannot record an attempt");
    }
}

/// POSTs the delivery's body; the receiver's status code, or why there is none.
async fn send(settings: &WebhookSettings, listen: IpAddr, d: &Due) -> Result<u16, String> {
    let target = address::parse(&d.url).map_err(|e| match e {
        address::UrlError::Invalid(m) | address::UrlError::Forbidden(m) => m,
    })?;
    let addr = address::resolve(
        &target,
        &settings.allowlist,
        listen,
        settings.connect_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let body = Bytes::from(d.body.clone());
    let request = hyper::Request::post(&target.path)
        .header(hyper::header::HOST, &target.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "container-manager-webhooks")
        .header("x-cm-signature", signature(&d.secret, &body))
        .header("x-cm-delivery", &d.delivery_id)
        .header("x-cm-event", &d.kind)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let work = async {
        let stream = tokio::time::timeout(
            settings.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        let conn = tokio::spawn(conn);
        let answer = sender
            .send_request(request)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("request to {addr} failed: {e}"));
        conn.abort();
        answer
    };
    tokio::time::timeout(settings.timeout, work)
        .await
        .map_err(|_| {
            format!(
                "no answer within {} s (WEBHOOK_TIMEOUT)",
                settings.timeout.as_secs()
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(600);
        let b1 = backoff(1, max);
        assert!(b1 >= Duration::from_secs(1) && b1 <= Duration::from_millis(1100));
        let b4 = backoff(4, max);
        assert!(b4 >= Duration::from_secs(8) && b4 <= Duration::from_millis(8800));
        let b30 = backoff(30, max);
        assert!(b30 >= max && b30 <= max.mul_f64(1.1));
    }
}
