-- Issue 19, time limits: a container's `lifetime` ({ttl, on_expiry}) and its deadline.
-- `expires_at` is absolute (RFC 3339 UTC with milliseconds, sortable as text): set at create
-- (created_at + ttl), moved by a PATCH that sets a ttl (now + ttl), cleared when the deadline
-- is acted on or the lifetime removed. The server's deadline timer loads every deadline with
-- one query on the index below at start-up; rows without a deadline are not in the index.
ALTER TABLE containers ADD COLUMN ttl INTEGER CHECK (ttl IS NULL OR ttl > 0);
ALTER TABLE containers ADD COLUMN on_expiry TEXT CHECK (on_expiry IS NULL OR on_expiry IN ('stop', 'delete'));
ALTER TABLE containers ADD COLUMN expires_at TEXT;
CREATE INDEX containers_expires_at ON containers (expires_at) WHERE expires_at IS NOT NULL;
