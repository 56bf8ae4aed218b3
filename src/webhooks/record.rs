//! The classifier task: after every committed change to a container row (and once at
//! start-up), each container's representation is compared with the one it was last
//! classified at (`webhook_seen`); a difference is classified, and the new representation
//! and the deliveries of its events are written in one transaction. A crash before that
//! commit leaves the old representation stored, so the same difference is classified after
//! the restart: no event is lost between a state change and its classification.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{classify, Subscription};
use crate::representation::representation;
use crate::store::containers::ListFilter;
use crate::store::webhooks::{Classified, NewDelivery};
use crate::store::Store;

/// The wait before trying again after the store failed.
const RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    store: Store,
    mut changes: watch::Receiver<u64>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        changes.borrow_and_update();
        let failed = match pass(&store).await {
            Ok(n) => {
                if n > 0 {
                    wake.notify_one();
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot classify the changes");
                true
            }
        };
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            () = retry => {}
        }
    }
}

/// Every container's representation, as JSON.
async fn current(store: &Store) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list(&ListFilter::default(), after, 1000).await?;
        let more = page.len() > 1000;
        for c in page.iter().take(1000) {
            after = c.seq;
            out.push((
                c.cuid.clone(),
                serde_json::to_value(representation(c)).unwrap_or_default(),
            ));
        }
        if !more {
            return Ok(out);
        }
    }
}

/// One diff of every container; returns how many deliveries it wrote.
pub(super) async fn pass(store: &Store) -> Result<usize, sqlx::Error> {
    let now = current(store).await?;
    let mut seen = store.webhook_seen().await?;
    let hooks: Vec<Subscription> = store
        .webhooks(None)
        .await?
        .iter()
        .map(Subscription::of)
        .collect();
    let mut changes = Vec::new();
    for (cuid, rep) in &now {
        let text = rep.to_string();
        let old = seen.remove(cuid);
        if old.as_deref() == Some(text.as_str()) {
            continue;
        }
        let old: Option<Value> = old.and_then(|t| serde_json::from_str(&t).ok());
        let kinds = classify::classify(old.as_ref(), Some(rep));
        changes.push(Classified {
            cuid: cuid.clone(),
            deliveries: deliveries(&hooks, cuid, &kinds, rep),
            representation: Some(text),
        });
    }
    // What is left was seen and has no row now: deleted.
    let mut gone: Vec<(String, String)> = seen.into_iter().collect();
    gone.sort();
    for (cuid, text) in gone {
        let old: Value = serde_json::from_str(&text).unwrap_or_default();
        let kinds = classify::classify(Some(&old), None);
        changes.push(Classified {
            deliveries: deliveries(&hooks, &cuid, &kinds, &old),
            cuid,
            representation: None,
        });
    }
    store.commit_classified(&changes).await?;
    Ok(changes.iter().map(|c| c.deliveries.len()).sum())
}

/// The deliveries of `kinds` about the container shown by `rep`: one per event and webhook
/// that takes it, each body naming its own delivery id.
fn deliveries(hooks: &[Subscription], cuid: &str, kinds: &[&str], rep: &Value) -> Vec<NewDelivery> {
    let at = crate::store::now();
    let mut out = Vec::new();
    for kind in kinds {
        for hook in hooks.iter().filter(|h| h.takes(kind, rep)) {
            let delivery_id = format!("dl_{}", uuid::Uuid::new_v4().simple());
            let body = json!({
                "delivery": delivery_id,
                "webhook": hook.id,
                "event": kind,
                "cuid": cuid,
                "at": at,
                "container": rep,
            });
            out.push(NewDelivery {
                delivery_id,
                webhook_id: hook.id.clone(),
                cuid: cuid.to_owned(),
                kind: (*kind).to_owned(),
                body: body.to_string(),
            });
        }
    }
    out
}
