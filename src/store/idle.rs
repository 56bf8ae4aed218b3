//! The idle sampler's read: the running containers that have an idle policy.

use super::Store;
use crate::spec::{Idle, IdleAction};

/// A running container with an idle policy, and what identifies its current run.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleCandidate {
    pub cuid: String,
    pub idle: Idle,
    /// Changes whenever the container may have got a new process (an action, a restart, a
    /// recreate): the sampler looks its pid up again then.
    pub run_key: String,
}

impl Store {
    /// Containers with an idle policy, wanted running and observed running (one indexed
    /// query for all of them).
    pub async fn idle_candidates(&self) -> Result<Vec<IdleCandidate>, sqlx::Error> {
        // A runtime query: no new entry for the offline data of sqlx's macros.
        let rows: Vec<(String, i64, String, bool, String, i64, i64)> = sqlx::query_as(
            "SELECT cuid, idle_after, idle_action, idle_resume, desired_at, restart_done, observed_generation \
             FROM containers INDEXED BY containers_idle \
             WHERE idle_after IS NOT NULL AND deleted_at IS NULL \
               AND desired_state = 'running' AND status = 'running'",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(cuid, after, action, resume, desired_at, restart_done, observed)| IdleCandidate {
                    cuid,
                    idle: Idle {
                        after: u64::try_from(after).unwrap_or(1),
                        action: IdleAction::parse(&action).unwrap_or_default(),
                        resume_on_use: resume,
                    },
                    run_key: format!("{desired_at}/{restart_done}/{observed}"),
                },
            )
            .collect())
    }
}
