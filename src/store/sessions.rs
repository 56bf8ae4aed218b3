//! Console sign-in sessions, as `crate::sessions` writes them through: digests only.

use super::Store;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    /// Hex SHA-256 of the cookie's token.
    pub token_sha256: String,
    pub user: String,
    /// Hex SHA-256 of the API token the session was signed in with.
    pub bearer_sha256: Option<String>,
    /// SHA-256 of the session's key.
    pub key_sha256: Vec<u8>,
    /// Unix seconds.
    pub expires_at: i64,
    /// A password session: HMAC-SHA256 of the operator's credentials under its key.
    pub cred_mac: Option<Vec<u8>>,
}

impl Store {
    pub async fn insert_console_session(&self, row: &SessionRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO console_sessions (token_sha256, user, bearer_sha256, key_sha256, expires_at, cred_mac)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.token_sha256)
        .bind(&row.user)
        .bind(&row.bearer_sha256)
        .bind(&row.key_sha256)
        .bind(row.expires_at)
        .bind(&row.cred_mac)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_console_session(&self, token_sha256: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = ?")
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The sessions still live at `now` (Unix seconds); the expired ones are deleted.
    pub async fn console_sessions(&self, now: i64) -> Result<Vec<SessionRow>, sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query_as(
            "SELECT token_sha256, user, bearer_sha256, key_sha256, expires_at, cred_mac FROM console_sessions",
        )
        .fetch_all(&self.pool)
        .await
    }
}
