-- Issue 23: console sign-in sessions survive a restart. Digests only: the SHA-256 of the
-- cookie's token (hex), of the key the console keeps (32 bytes), and of the API token a
-- session was signed in with (hex, as `tokens.secret_sha256`); for a password session,
-- `cred_mac`: HMAC-SHA256 of the operator's credentials under the session's key (checked
-- with the key a request brings, so a new APP_PASS ends every password session, and the
-- file holds nothing to test password guesses against). Deleted on sign-out; expired rows
-- are deleted when the server starts.
CREATE TABLE console_sessions (
    token_sha256  TEXT PRIMARY KEY NOT NULL,
    user          TEXT NOT NULL,
    bearer_sha256 TEXT,
    key_sha256    BLOB NOT NULL,
    expires_at    INTEGER NOT NULL, -- Unix seconds
    cred_mac      BLOB
);
