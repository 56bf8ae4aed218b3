//! `container-manager backup PATH`: a consistent copy of the state store, taken while the
//! server runs. SQLite's `VACUUM INTO` reads the database inside one read transaction, so
//! the copy is a snapshot of one moment (WAL mode lets the server keep writing meanwhile),
//! and it is written compacted, as one self-contained file (no `-wal` beside it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists: refusing to overwrite it")]
    Exists(String),
    #[error("the state store has no file to back up ({0})")]
    NotAFile(String),
    #[error("the state store {0} does not exist")]
    Missing(String),
    #[error("backup failed: {0}")]
    Sqlite(#[from] sqlx::Error),
}

/// Copies the database of `database_url` to `target`, which must not exist yet.
pub async fn run(database_url: &str, target: &Path) -> Result<(), BackupError> {
    let source = crate::store::file_of(database_url)
        .ok_or_else(|| BackupError::NotAFile(database_url.to_owned()))?;
    if !source.is_file() {
        return Err(BackupError::Missing(source.display().to_string()));
    }
    if target.exists() {
        return Err(BackupError::Exists(target.display().to_string()));
    }
    // Never create the source, never migrate it: the backup only reads. The busy timeout
    // rides out a moment when the server holds a lock (a checkpoint).
    let mut conn = SqliteConnectOptions::from_str(database_url)?
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    sqlx::query("VACUUM INTO ?")
        .bind(target.display().to_string())
        .execute(&mut conn)
        .await?;
    // The copy holds env values, like the original: owner only.
    let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o600));
    Ok(())
}
