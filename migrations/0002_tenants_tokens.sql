-- Tenants, their quotas, and scoped API tokens (issue 17). Read with the sqlite3 shell like the
-- rest: a quota column that is NULL means "no limit".

CREATE TABLE tenants (
    name                TEXT PRIMARY KEY,
    max_containers      INTEGER CHECK (max_containers IS NULL OR max_containers >= 0),
    max_running         INTEGER CHECK (max_running IS NULL OR max_running >= 0),
    max_cpus            REAL    CHECK (max_cpus IS NULL OR max_cpus >= 0),
    max_memory_bytes    INTEGER CHECK (max_memory_bytes IS NULL OR max_memory_bytes >= 0),
    max_pids            INTEGER CHECK (max_pids IS NULL OR max_pids >= 0),
    -- inclusive host-port range a tenant may publish in, e.g. 20000-20999
    port_min            INTEGER CHECK (port_min IS NULL OR port_min BETWEEN 1 AND 65535),
    port_max            INTEGER CHECK (port_max IS NULL OR port_max BETWEEN 1 AND 65535),
    requests_per_second REAL    CHECK (requests_per_second IS NULL OR requests_per_second > 0),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

-- API tokens. Only the SHA-256 of the secret is kept: the secret itself is shown once.
-- `revoked_at` keeps a revoked token's row for the operator to read; it never authenticates.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'operate', 'write', 'admin')),
    tenant       TEXT REFERENCES tenants(name),
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT,
    CHECK (tenant IS NULL OR scope <> 'admin')
);

-- The tenant a container belongs to (NULL: the operator's own, seen only by admins without
-- a tenant).
ALTER TABLE containers ADD COLUMN tenant TEXT REFERENCES tenants(name);
CREATE INDEX containers_by_tenant ON containers (tenant, seq);
