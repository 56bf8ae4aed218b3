//! Snapshot rows (`snapshots`, migration 0011): the metadata of the trees kept under
//! `DATA_DIR/snapshots/<cuid>/<id>` ([`crate::appdir::snapshot`]). A container's rows go with
//! its row (`ON DELETE CASCADE`).

use sqlx::Row;

use super::Store;

/// One snapshot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: String,
    pub cuid: String,
    pub name: String,
    pub created_at: String,
    pub bytes: i64,
    pub files: i64,
}

/// Why an insert was refused.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The container has a snapshot of this name.
    #[error("name taken")]
    NameTaken,
    /// The container's row is gone (deleted meanwhile).
    #[error("no such container")]
    NoContainer,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn of(row: &sqlx::sqlite::SqliteRow) -> Result<SnapshotRow, sqlx::Error> {
    Ok(SnapshotRow {
        id: row.try_get("id")?,
        cuid: row.try_get("cuid")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        bytes: row.try_get("bytes")?,
        files: row.try_get("files")?,
    })
}

impl Store {
    /// Inserts `s`, unless its container is deleted (or being deleted) or has a snapshot of
    /// the same name.
    pub async fn insert_snapshot(&self, s: &SnapshotRow) -> Result<(), InsertError> {
        let result = sqlx::query(
            "INSERT INTO snapshots (id, cuid, name, created_at, bytes, files)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM containers WHERE cuid = ?2 AND deleted_at IS NULL)",
        )
        .bind(&s.id)
        .bind(&s.cuid)
        .bind(&s.name)
        .bind(&s.created_at)
        .bind(s.bytes)
        .bind(s.files)
        .execute(&self.pool)
        .await;
        match result {
            Ok(r) if r.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(InsertError::NoContainer),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(InsertError::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// The snapshots of `cuid`, oldest first.
    pub async fn snapshots_of(&self, cuid: &str) -> Result<Vec<SnapshotRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, cuid, name, created_at, bytes, files FROM snapshots
             WHERE cuid = ? ORDER BY created_at, id",
        )
        .bind(cuid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(of).collect()
    }

    /// Snapshot `id` of `cuid`.
    pub async fn snapshot(&self, cuid: &str, id: &str) -> Result<Option<SnapshotRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, cuid, name, created_at, bytes, files FROM snapshots
             WHERE cuid = ? AND id = ?",
        )
        .bind(cuid)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(of).transpose()
    }

    /// Whether a snapshot of this name exists on `cuid`.
    pub async fn snapshot_name_taken(&self, cuid: &str, name: &str) -> Result<bool, sqlx::Error> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE cuid = ? AND name = ?")
                .bind(cuid)
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// Deletes snapshot `id` of `cuid`; whether there was one.
    pub async fn delete_snapshot(&self, cuid: &str, id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM snapshots WHERE cuid = ? AND id = ?")
            .bind(cuid)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every snapshot id (the start-up sweep of `DATA_DIR/snapshots`).
    pub async fn all_snapshot_ids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM snapshots")
            .fetch_all(&self.pool)
            .await
    }
}
