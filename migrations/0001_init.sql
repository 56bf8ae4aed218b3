-- The state store. Written to be read by an operator with the sqlite3 shell: plain column
-- names, timestamps as ISO-8601 text (UTC, RFC 3339), JSON text where a value is a map or list.

-- One row: who this server is. `instance_id` labels every Docker object this server makes;
-- `cursor_key` signs pagination cursors (hex).
CREATE TABLE instance (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL,
    cursor_key  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Desired state (the spec, desired_state, generation) and observed state (status, exit_code,
-- observed_generation, last_error) of every container. `seq` is the creation order and the
-- pagination key.
CREATE TABLE containers (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    cuid                TEXT NOT NULL UNIQUE,
    image               TEXT NOT NULL,
    env                 TEXT NOT NULL DEFAULT '{}' CHECK (json_type(env) = 'object'),
    tags                TEXT NOT NULL DEFAULT '[]' CHECK (json_type(tags) = 'array'),
    cpus                REAL,
    memory              TEXT,
    memory_bytes        INTEGER,
    pids                INTEGER,
    command             TEXT CHECK (command IS NULL OR json_type(command) = 'array'),
    restart             TEXT NOT NULL DEFAULT 'on-failure'
                        CHECK (restart IN ('no', 'on-failure', 'always', 'unless-stopped')),
    user                TEXT,
    desired_state       TEXT NOT NULL DEFAULT 'created'
                        CHECK (desired_state IN ('created', 'running', 'stopped', 'paused')),
    -- restarts asked for / restarts carried out: a durable counter, so a restart happens
    -- exactly once even across a crash.
    restart_requested   INTEGER NOT NULL DEFAULT 0,
    restart_done        INTEGER NOT NULL DEFAULT 0,
    -- when desired_state or a restart was last asked for: an exit before it is not "its own".
    desired_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    generation          INTEGER NOT NULL DEFAULT 1,
    observed_generation INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'created'
                        CHECK (status IN ('created', 'running', 'paused', 'restarting', 'exited',
                                          'stopped', 'error', 'deleting')),
    exit_code           INTEGER,
    last_error          TEXT CHECK (last_error IS NULL OR json_type(last_error) = 'object'),
    -- Tombstone: set by DELETE; the reconciler removes the row once Docker and files are gone.
    deleted_at          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

-- Host ports. UNIQUE(host_port, protocol): two racing claims cannot both win.
CREATE TABLE ports (
    cuid           TEXT NOT NULL REFERENCES containers(cuid) ON DELETE CASCADE,
    host_port      INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
    container_port INTEGER NOT NULL CHECK (container_port BETWEEN 1 AND 65535),
    protocol       TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    host_ip        TEXT NOT NULL,
    position       INTEGER NOT NULL,
    UNIQUE (host_port, protocol)
);
CREATE INDEX ports_by_cuid ON ports (cuid, position);

-- Idempotency-Key on POST /containers: the first answer, replayed for the same key and body.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,
    cuid        TEXT,
    created_at  TEXT NOT NULL
);
