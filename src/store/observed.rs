//! Observed-state writes, made by the reconciler (their one writer): what a pass saw, what
//! it failed with, and the row's removal once Docker's side and the files are gone. Single
//! statements, no read-modify-write: the conditions are in the SQL.

use serde_json::Value;

use super::containers::Observation;
use super::{now, Store};

impl Store {
    /// Records observed state (the reconciler is its one writer). A task seen running on a
    /// node other than the last one seen is a move (`last_move`; its `reason` is `node_down`
    /// when the observation names the old node as the down node it was lost with). Writes
    /// only when something changed, so an idle resync writes nothing; leaves a tombstone's row to [`Self::record_deleting`].
    /// Returns whether it wrote.
    pub async fn record_observation(
        &self,
        cuid: &str,
        o: &Observation,
    ) -> Result<bool, sqlx::Error> {
        let last_error = o.last_error.as_ref().map(Value::to_string);
        let status = o.status.as_str();
        let now = now();
        let health = o.health.map(|h| h.as_str());
        // A runtime query (no new entry for the offline data of sqlx's macros). Seen healthy,
        // the count of restarts for unhealthiness starts over.
        let result = sqlx::query(
            "UPDATE containers SET status = ?1, exit_code = ?2, observed_generation = ?3, last_error = ?4,
                    restart_done = MAX(restart_done, ?5), updated_at = ?6, health = ?8, health_log = ?9,
                    unhealthy_restarts = CASE WHEN ?8 = 'healthy' THEN 0 ELSE unhealthy_restarts END,
                    oom_killed = ?10, node = ?11, node_address = ?12, last_node = COALESCE(?11, last_node),
                    last_move = CASE WHEN ?11 IS NOT NULL AND last_node IS NOT NULL AND last_node != ?11
                        THEN json_object('from', last_node, 'to', ?11, 'at', ?6,
                                         'reason', CASE WHEN ?13 = last_node THEN 'node_down' END)
                        ELSE last_move END
             WHERE cuid = ?7 AND deleted_at IS NULL
               AND (status IS NOT ?1 OR exit_code IS NOT ?2 OR observed_generation IS NOT ?3
                    OR last_error IS NOT ?4 OR restart_done < ?5 OR health IS NOT ?8
                    OR health_log IS NOT ?9 OR oom_killed IS NOT ?10 OR node IS NOT ?11
                    OR node_address IS NOT ?12)",
        )
        .bind(status)
        .bind(o.exit_code)
        .bind(o.observed_generation)
        .bind(last_error)
        .bind(o.restart_done)
        .bind(now)
        .bind(cuid)
        .bind(health)
        .bind(&o.health_log)
        .bind(o.oom_killed)
        .bind(&o.node)
        .bind(&o.node_address)
        .bind(&o.lost_node)
        .execute(&self.pool)
        .await?;
        Ok(self.touched_if(result))
    }

    /// The reconciler restarted the container for `on_unhealthy: restart`: one more in the
    /// count the back-off grows with, and when.
    pub async fn record_unhealthy_restart(&self, cuid: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE containers SET unhealthy_restarts = unhealthy_restarts + 1,
                    unhealthy_restart_at = ? WHERE cuid = ?",
        )
        .bind(now())
        .bind(cuid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A failed pass: `status: error` (`deleting` for a tombstone) and `last_error`.
    pub async fn record_error(&self, cuid: &str, error: &Value) -> Result<(), sqlx::Error> {
        let text = error.to_string();
        let now = now();
        // Runtime queries here and below: no new entries for the offline data of sqlx's macros.
        sqlx::query(
            "UPDATE containers SET status = CASE WHEN deleted_at IS NULL THEN 'error' ELSE 'deleting' END,
                    last_error = ?, updated_at = ? WHERE cuid = ?",
        )
        .bind(text)
        .bind(now)
        .bind(cuid)
        .execute(&self.pool)
        .await?;
        self.touched();
        Ok(())
    }

    /// A pass took up a tombstone: observed `status` becomes `deleting`. Clients have read
    /// `deleting` since the DELETE (derived from `deleted_at`), so nothing they see changes:
    /// `updated_at` stays and no change is signalled.
    pub async fn record_deleting(&self, cuid: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE containers SET status = 'deleting'
             WHERE cuid = ? AND deleted_at IS NOT NULL AND status != 'deleting'",
        )
        .bind(cuid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last step of deletion, after Docker objects and files are gone.
    pub async fn delete_row(&self, cuid: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM containers WHERE cuid = ? AND deleted_at IS NOT NULL",
            cuid
        )
        .execute(&self.pool)
        .await?;
        self.touched();
        Ok(())
    }
}
