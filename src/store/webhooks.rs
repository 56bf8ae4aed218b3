//! Webhooks, their durable outbox and their delivery history (docs/API.md §14,
//! RELIABILITY.md "Webhooks"). Runtime queries: no entries for the offline data of sqlx's
//! macros.

use std::collections::HashMap;

use sqlx::Row as _;

use super::{now, Store};

/// A webhook as stored (the secret included: only the delivery worker reads it).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// JSON array of event kinds.
    pub events: String,
    /// JSON array of tags, or None for every container.
    pub tags: Option<String>,
    pub secret: String,
    pub tenant: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One delivery to make: an event for one webhook.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub webhook_id: String,
    pub cuid: String,
    pub kind: String,
    pub body: String,
}

/// One container's classification: its new representation and its events' deliveries.
#[derive(Clone, Debug)]
pub struct Classified {
    pub cuid: String,
    /// The representation classified (JSON); `None`: the row is gone.
    pub representation: Option<String>,
    pub deliveries: Vec<NewDelivery>,
}

/// A delivery whose turn has come (the oldest undelivered one of its webhook and container).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Due {
    pub seq: i64,
    pub delivery_id: String,
    pub webhook_id: String,
    pub cuid: String,
    pub kind: String,
    pub body: String,
    pub created_at: String,
    pub attempts: i64,
    pub url: String,
    pub secret: String,
}

/// What became of one attempt.
pub enum Outcome {
    Delivered,
    /// Tried again at this time (RFC 3339).
    Retry(String),
    /// Given up: too old.
    Failed,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "retrying",
            Outcome::Failed => "failed",
        }
    }
}

/// One attempt as recorded and shown by `GET /webhooks/{id}/deliveries`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub kind: String,
    pub cuid: String,
    pub attempt: i64,
    pub at: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub outcome: String,
}

const WEBHOOK_COLUMNS: &str = "id, url, events, tags, secret, tenant, created_at, updated_at";

impl Store {
    pub async fn insert_webhook(&self, w: &WebhookRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, tags, secret, tenant, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&w.id)
        .bind(&w.url)
        .bind(&w.events)
        .bind(&w.tags)
        .bind(&w.secret)
        .bind(&w.tenant)
        .bind(&w.created_at)
        .bind(&w.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every webhook, oldest first; `Some(tenant)`: only that tenant's.
    pub async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<WebhookRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE (?1 IS NULL OR tenant = ?1)
             ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Replaces url, events, tags and secret (as given in `w`); returns whether it existed.
    pub async fn update_webhook(&self, w: &WebhookRow) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE webhooks SET url = ?, events = ?, tags = ?, secret = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&w.url)
        .bind(&w.events)
        .bind(&w.tags)
        .bind(&w.secret)
        .bind(&w.updated_at)
        .bind(&w.id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes the webhook, its undelivered events and its history.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Undelivered events per webhook.
    pub async fn webhook_pending(&self) -> Result<HashMap<String, i64>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT webhook_id, COUNT(*) AS n FROM webhook_outbox GROUP BY webhook_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>("webhook_id"), r.get::<i64, _>("n")))
            .collect())
    }

    /// The representation each container was last classified at.
    pub async fn webhook_seen(&self) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows = sqlx::query("SELECT cuid, representation FROM webhook_seen")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>("cuid"),
                    r.get::<String, _>("representation"),
                )
            })
            .collect())
    }

    /// Classifications, atomically: each container's new classified representation
    /// (`None`: its row is gone) and the deliveries of the events it produced. A crash
    /// before the commit leaves the old ones, so the same diffs are made again at start-up.
    /// One transaction for a whole diff: one sync to disk however many containers changed.
    pub async fn commit_classified(&self, changes: &[Classified]) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now();
        let mut tx = self.pool.begin().await?;
        for c in changes {
            for d in &c.deliveries {
                sqlx::query(
                    "INSERT INTO webhook_outbox (delivery_id, webhook_id, cuid, kind, body, created_at, next_at)
                     SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)",
                )
                .bind(&d.delivery_id)
                .bind(&d.webhook_id)
                .bind(&d.cuid)
                .bind(&d.kind)
                .bind(&d.body)
                .bind(&now)
                .bind(&now)
                .bind(&d.webhook_id)
                .execute(&mut *tx)
                .await?;
            }
            match &c.representation {
                Some(text) => {
                    sqlx::query(
                        "INSERT INTO webhook_seen (cuid, representation) VALUES (?, ?)
                         ON CONFLICT (cuid) DO UPDATE SET representation = excluded.representation",
                    )
                    .bind(&c.cuid)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM webhook_seen WHERE cuid = ?")
                        .bind(&c.cuid)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await
    }

    /// Deliveries whose time has come, each the oldest undelivered one of its (webhook,
    /// container) line: a later event for a container waits for the earlier.
    pub async fn webhook_due(&self, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
        sqlx::query_as(
            "SELECT o.seq, o.delivery_id, o.webhook_id, o.cuid, o.kind, o.body, o.created_at,
                    o.attempts, w.url, w.secret
             FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id
             WHERE o.next_at <= ?1
               AND o.seq = (SELECT MIN(p.seq) FROM webhook_outbox p
                            WHERE p.webhook_id = o.webhook_id AND p.cuid = o.cuid)
             ORDER BY o.seq LIMIT ?2",
        )
        .bind(now())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// When the next delivery falls due, if any is waiting.
    pub async fn webhook_next_due(&self) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT MIN(next_at) FROM webhook_outbox")
            .fetch_one(&self.pool)
            .await
    }

    /// Records an attempt and its outcome (the delivery leaves the outbox when delivered or
    /// given up); keeps the newest `history` attempts of the webhook.
    pub async fn record_attempt(
        &self,
        due: &Due,
        attempt: &AttemptRow,
        outcome: &Outcome,
        history: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        match outcome {
            Outcome::Delivered | Outcome::Failed => {
                sqlx::query("DELETE FROM webhook_outbox WHERE seq = ?")
                    .bind(due.seq)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::Retry(next_at) => {
                sqlx::query(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, next_at = ? WHERE seq = ?",
                )
                .bind(next_at)
                .bind(due.seq)
                .execute(&mut *tx)
                .await?;
            }
        }
        // Only while the webhook exists (deleted mid-attempt: nothing to keep).
        sqlx::query(
            "INSERT INTO webhook_attempts (webhook_id, delivery_id, kind, cuid, attempt, at, status_code, error, latency_ms, outcome)
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)",
        )
        .bind(&due.webhook_id)
        .bind(&attempt.delivery_id)
        .bind(&attempt.kind)
        .bind(&attempt.cuid)
        .bind(attempt.attempt)
        .bind(&attempt.at)
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(attempt.latency_ms)
        .bind(outcome.as_str())
        .bind(&due.webhook_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE webhook_id = ?1 AND seq <=
               (SELECT seq FROM webhook_attempts WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(&due.webhook_id)
        .bind(history)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The webhook's recent attempts, newest first.
    pub async fn webhook_attempts(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<AttemptRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT delivery_id, kind, cuid, attempt, at, status_code, error, latency_ms, outcome
             FROM webhook_attempts WHERE webhook_id = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    fn hook(id: &str) -> WebhookRow {
        WebhookRow {
            id: id.into(),
            url: "http://93.184.216.34/".into(),
            events: r#"["*"]"#.into(),
            tags: None,
            secret: "s".repeat(16),
            tenant: None,
            created_at: now(),
            updated_at: now(),
        }
    }

    fn delivery(n: u32, hook: &str, cuid: &str) -> NewDelivery {
        NewDelivery {
            delivery_id: format!("dl_{n}"),
            webhook_id: hook.into(),
            cuid: cuid.into(),
            kind: "died".into(),
            body: "{}".into(),
        }
    }

    fn attempt(d: &Due) -> AttemptRow {
        AttemptRow {
            delivery_id: d.delivery_id.clone(),
            kind: d.kind.clone(),
            cuid: d.cuid.clone(),
            attempt: d.attempts + 1,
            at: now(),
            status_code: None,
            error: Some("refused".into()),
            latency_ms: 1,
            outcome: String::new(),
        }
    }

    /// Only the head of each (webhook, container) line is due; the next becomes due once
    /// the head is delivered; a retry waits for its time; history is bounded; a webhook's
    /// deletion takes its outbox with it.
    #[tokio::test]
    async fn lines_history_and_deletion() {
        let (store, _dir) = fresh().await;
        store.insert_webhook(&hook("wh_a")).await.unwrap();
        store.insert_webhook(&hook("wh_b")).await.unwrap();
        let batch = Classified {
            cuid: "c1".into(),
            representation: Some("{}".into()),
            deliveries: vec![
                delivery(1, "wh_a", "c1"),
                delivery(2, "wh_a", "c1"),
                delivery(3, "wh_b", "c1"),
                // A webhook deleted meanwhile: its row is not written.
                delivery(4, "wh_gone", "c1"),
            ],
        };
        store.commit_classified(&[batch]).await.unwrap();
        assert_eq!(store.webhook_seen().await.unwrap()["c1"], "{}");
        let ids = |due: &[Due]| {
            due.iter()
                .map(|d| d.delivery_id.clone())
                .collect::<Vec<_>>()
        };
        let due = store.webhook_due(10).await.unwrap();
        assert_eq!(ids(&due), ["dl_1", "dl_3"]);

        // dl_1 retried later: dl_2 still waits behind it.
        let later = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        store
            .record_attempt(&due[0], &attempt(&due[0]), &Outcome::Retry(later), 3)
            .await
            .unwrap();
        assert_eq!(ids(&store.webhook_due(10).await.unwrap()), ["dl_3"]);
        store
            .record_attempt(&due[0], &attempt(&due[0]), &Outcome::Delivered, 3)
            .await
            .unwrap();
        assert_eq!(ids(&store.webhook_due(10).await.unwrap()), ["dl_2", "dl_3"]);
        assert_eq!(store.webhook_pending().await.unwrap()["wh_a"], 1);

        // History: the newest 3 kept.
        for _ in 0..5 {
            store
                .record_attempt(&due[1], &attempt(&due[1]), &Outcome::Failed, 3)
                .await
                .unwrap();
        }
        assert_eq!(store.webhook_attempts("wh_b", 100).await.unwrap().len(), 3);
        assert_eq!(store.webhook_attempts("wh_a", 100).await.unwrap().len(), 2);

        // The row gone: `webhook_seen` forgets it.
        store
            .commit_classified(&[Classified {
                cuid: "c1".into(),
                representation: None,
                deliveries: vec![],
            }])
            .await
            .unwrap();
        assert!(store.webhook_seen().await.unwrap().is_empty());

        assert!(store.delete_webhook("wh_a").await.unwrap());
        assert!(store.webhook_due(10).await.unwrap().is_empty());
        assert!(store
            .webhook_attempts("wh_a", 100)
            .await
            .unwrap()
            .is_empty());
        assert!(!store.delete_webhook("wh_a").await.unwrap());
    }
}
