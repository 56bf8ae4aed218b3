//! Webhooks (docs/API.md §14, RELIABILITY.md "Webhooks"): events classified durably from
//! the store into an outbox, and delivered from it at least once, signed, in order per
//! container, with back-off, each receiver on its own.
//!
//! - [`classify`]: which events a change of a representation is (pure; one line per kind);
//! - `record`: the task that diffs every container against the representation it was last
//!   classified at, kept in the store, and writes the new one with the events' deliveries in
//!   one transaction (so a crash loses no event: the diff is made again at start-up);
//! - `deliver`: the task that sends what the outbox holds;
//! - [`address`]: what a URL may be and where it may lead.

pub mod address;
pub mod classify;
mod deliver;
mod record;

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookSettings;
use crate::store::webhooks::WebhookRow;
use crate::store::Store;

pub use classify::KINDS;

/// Attempts kept per webhook for `GET /webhooks/{id}/deliveries`.
pub const HISTORY: i64 = 200;

/// A stored webhook's subscription, parsed.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: String,
    pub events: Vec<String>,
    pub tags: Option<Vec<String>>,
    pub tenant: Option<String>,
}

impl Subscription {
    pub fn of(row: &WebhookRow) -> Self {
        Self {
            id: row.id.clone(),
            events: serde_json::from_str(&row.events).unwrap_or_default(),
            tags: row
                .tags
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            tenant: row.tenant.clone(),
        }
    }

    /// Whether an event of `kind` about the container shown by `rep` goes to this webhook:
    /// a kind it subscribes to, a container of its tenant (any, for a webhook without a
    /// tenant), carrying one of its tags (when it names tags).
    pub fn takes(&self, kind: &str, rep: &Value) -> bool {
        if !classify::subscribed(&self.events, kind) {
            return false;
        }
        if self.tenant.is_some() && rep["tenant"].as_str() != self.tenant.as_deref() {
            return false;
        }
        match &self.tags {
            None => true,
            Some(tags) => rep["tags"]
                .as_array()
                .is_some_and(|have| have.iter().any(|t| tags.iter().any(|w| t == w.as_str()))),
        }
    }
}

/// The handle the API uses: wakes the delivery worker (a new or changed webhook).
#[derive(Default)]
pub struct Webhooks {
    wake: Arc<Notify>,
}

impl Webhooks {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the classifier and the delivery worker; both stop on `shutdown`.
    pub fn spawn(
        &self,
        store: Store,
        settings: WebhookSettings,
        listen: IpAddr,
        shutdown: CancellationToken,
    ) -> Vec<(&'static str, tokio::task::JoinHandle<()>)> {
        let changes = store.subscribe_changes();
        let classifier = tokio::spawn(record::run(
            store.clone(),
            changes,
            self.wake.clone(),
            shutdown.clone(),
        ));
        let worker = tokio::spawn(deliver::run(
            store,
            settings,
            listen,
            self.wake.clone(),
            shutdown,
        ));
        vec![
            ("webhook classifier", classifier),
            ("webhook deliveries", worker),
        ]
    }
}
