-- Issue 22, webhooks (docs/API.md §14, RELIABILITY.md "Webhooks").

-- Whether the container's last exit was an OOM kill (Docker's State.OOMKilled), shown as
-- `oom_killed` in the representation and classified as the `oom` webhook event.
ALTER TABLE containers ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0;

-- A webhook. `secret` is write-only (never answered). A tenant's webhook goes with its tenant.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    -- JSON array of event kinds ("*" for all)
    events     TEXT NOT NULL,
    -- JSON array of tags (a container carrying any of them), or NULL for every container
    tags       TEXT,
    secret     TEXT NOT NULL,
    tenant     TEXT REFERENCES tenants(name) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The last representation of each container the classifier has turned into events: the next
-- classification diffs against it, in the same transaction that writes the outbox rows, so a
-- crash between a state change and its classification is made up at start-up.
CREATE TABLE webhook_seen (
    cuid           TEXT PRIMARY KEY,
    representation TEXT NOT NULL
);

-- Deliveries not yet made: one row per (event, webhook). Removed once delivered (2xx) or
-- given up (older than WEBHOOK_MAX_AGE); each attempt is in webhook_attempts.
CREATE TABLE webhook_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    cuid        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TEXT NOT NULL
);
CREATE INDEX webhook_outbox_line ON webhook_outbox (webhook_id, cuid, seq);

-- Recent delivery attempts (the newest WEBHOOK_HISTORY per webhook are kept).
CREATE TABLE webhook_attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    cuid        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    -- delivered | retrying | failed
    outcome     TEXT NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, seq);
