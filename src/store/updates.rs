//! Image updates (migration 0014): which digest a container runs, the newer digest of its
//! tag the registry has, the update being rolled out and judged, the last update's outcome,
//! and the registry's digest of every checked reference.
//!
//! Desired state here is `image_pin` (the image by digest the container is to run instead of
//! its tag) and `update_pending` (the update the judge watches); moving the pin bumps the
//! generation, so the reconciler recreates the container with it like after any spec
//! change. A crash anywhere leaves either the old pin or the new one committed, together with
//! what the judge needs to finish (or roll back) the update.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::containers::fetch_one;
use super::error::Error;
use super::{now, Store};
use crate::lifecycle::DesiredState;

/// A container's image by digest and its updates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageState {
    /// `repo@sha256:…` to run instead of the tag; `None`: the tag as it is on the host.
    pub pin: Option<String>,
    /// `sha256:…` of what it runs (its image's registry digest), when known.
    pub digest: Option<String>,
    pub update_available: Option<UpdateAvailable>,
    pub pending: Option<Pending>,
    pub last_update: Option<LastUpdate>,
}

/// A newer digest of the container's tag on its registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateAvailable {
    /// `sha256:…`
    pub digest: String,
    /// RFC 3339 (UTC): when it was first seen.
    pub seen_at: String,
}

/// An update under way: the judge finishes it or rolls it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The pin before (`None`: the tag).
    pub from: Option<String>,
    /// The pin rolled out.
    pub to: String,
    pub started_at: String,
    /// The generation that carries `to`: a later change (a PATCH) ends the judging.
    pub generation: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    Updated,
    RolledBack,
}

/// The outcome of the last update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastUpdate {
    /// `sha256:…` it ran before, or null when that was not known.
    #[schema(required = true)]
    pub from: Option<String>,
    /// `sha256:…` it was updated to.
    pub to: String,
    pub result: UpdateResult,
    /// Why it was rolled back (`null` when updated).
    #[schema(required = true)]
    pub reason: Option<String>,
    /// RFC 3339 (UTC).
    pub at: String,
}

/// The digest of a pin (`repo@sha256:…` → `sha256:…`).
pub fn digest_of(pin: &str) -> Option<&str> {
    pin.split_once('@').map(|(_, d)| d)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    /// Every container not being deleted (the checker and the judge walk them all).
    pub async fn live_containers(&self) -> Result<Vec<super::containers::Container>, sqlx::Error> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .list(&Default::default(), after, 500)
                .await?
                .into_iter()
                .take(500)
                .collect::<Vec<_>>();
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == 500;
            out.extend(page.into_iter().filter(|c| c.deleted_at.is_none()));
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// A fork made from a container that runs a pinned digest runs the same: its pin and
    /// the digest it runs, written before it is first started.
    pub async fn copy_pin(
        &self,
        cuid: &str,
        pin: &str,
        digest: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE containers SET image_pin = ?, image_digest = ? WHERE cuid = ?")
            .bind(pin)
            .bind(digest)
            .bind(cuid)
            .execute(&self.pool)
            .await?;
        self.touched();
        Ok(())
    }

    /// What the checker saw for one container: the digest it runs and a newer one of its
    /// tag. Writes (and signals a change) only when something differs.
    pub async fn record_image_seen(
        &self,
        cuid: &str,
        digest: Option<&str>,
        update: Option<&UpdateAvailable>,
    ) -> Result<bool, sqlx::Error> {
        let update = update.map(json);
        let done = sqlx::query(
            "UPDATE containers SET image_digest = ?1, update_available = ?2, updated_at = ?3
             WHERE cuid = ?4 AND deleted_at IS NULL
               AND (image_digest IS NOT ?1 OR update_available IS NOT ?2)",
        )
        .bind(digest)
        .bind(update)
        .bind(now())
        .bind(cuid)
        .execute(&self.pool)
        .await?;
        Ok(self.touched_if(done))
    }

    /// The registry's digest of `reference`, as just looked up.
    pub async fn record_image_check(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO image_checks (reference, digest, checked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (reference) DO UPDATE SET digest = ?2, checked_at = ?3",
        )
        .bind(reference)
        .bind(digest)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(reference, digest, checked_at)` of every checked reference.
    pub async fn image_checks(&self) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        sqlx::query_as("SELECT reference, digest, checked_at FROM image_checks")
            .fetch_all(&self.pool)
            .await
    }

    /// Starts an update: the container is to run `to` (a pin) from now on; its generation
    /// goes up so the reconciler recreates it. A container meant to run is judged (the
    /// pending update); one that is not only gets the pin for its next start. `expect`: the
    /// generation the decision was made on (a concurrent change wins; `None` then).
    pub async fn begin_update(
        &self,
        cuid: &str,
        to: &str,
        from: Option<&str>,
        expect: i64,
    ) -> Result<Option<super::containers::Container>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(c) = fetch_one(&mut tx, cuid).await? else {
            return Err(Error::NotFound(cuid.to_owned()));
        };
        if c.deleted_at.is_some() {
            return Err(Error::Deleting);
        }
        if c.generation != expect {
            return Ok(None);
        }
        let now = now();
        let pending = (c.desired_state == DesiredState::Running).then(|| {
            json(&Pending {
                from: from.map(str::to_owned),
                to: to.to_owned(),
                started_at: now.clone(),
                generation: c.generation + 1,
            })
        });
        sqlx::query(
            "UPDATE containers SET image_pin = ?1, update_pending = ?2, generation = generation + 1,
                    updated_at = ?3
             WHERE cuid = ?4",
        )
        .bind(to)
        .bind(pending)
        .bind(&now)
        .bind(cuid)
        .execute(&mut *tx)
        .await?;
        let c = fetch_one(&mut tx, cuid)
            .await?
            .ok_or_else(|| Error::NotFound(cuid.to_owned()))?;
        tx.commit().await?;
        self.touched();
        Ok(Some(c))
    }

    /// The judge's verdict "updated" (or an update no longer judged): the pending update
    /// ends with `last`; an `update_available` of the digest now run is cleared.
    pub async fn finish_update(
        &self,
        cuid: &str,
        generation: i64,
        last: &LastUpdate,
        digest: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE containers SET update_pending = NULL, last_update = ?1,
                    image_digest = COALESCE(?2, image_digest),
                    update_available = CASE WHEN json_extract(update_available, '$.digest') = ?2
                                            THEN NULL ELSE update_available END,
                    updated_at = ?3
             WHERE cuid = ?4 AND update_pending IS NOT NULL
               AND json_extract(update_pending, '$.generation') = ?5",
        )
        .bind(json(last))
        .bind(digest)
        .bind(now())
        .bind(cuid)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(self.touched_if(done))
    }

    /// The judge's verdict "rolled back": the pin goes back to `from` (a new generation,
    /// so the reconciler recreates the container with it) and `last` says why, in one
    /// write.
    pub async fn roll_back(
        &self,
        cuid: &str,
        generation: i64,
        from: Option<&str>,
        last: &LastUpdate,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE containers SET image_pin = ?1, update_pending = NULL, last_update = ?2,
                    generation = generation + 1, updated_at = ?3
             WHERE cuid = ?4 AND update_pending IS NOT NULL AND generation = ?5
               AND json_extract(update_pending, '$.generation') = ?5",
        )
        .bind(from)
        .bind(json(last))
        .bind(now())
        .bind(cuid)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(self.touched_if(done))
    }
}
