-- Issue 19: snapshots of a container's /app (their trees are under DATA_DIR/snapshots/<cuid>/<id>).
-- `bytes` count against the container's tenant's max_disk quota.
CREATE TABLE snapshots (
    id         TEXT PRIMARY KEY,
    cuid       TEXT NOT NULL REFERENCES containers(cuid) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    files      INTEGER NOT NULL CHECK (files >= 0),
    UNIQUE (cuid, name)
);
CREATE INDEX snapshots_cuid ON snapshots (cuid, created_at);
