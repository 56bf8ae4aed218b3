-- Issue 22: health checks. `health_check` is the spec's check as JSON (NULL: none).
-- Observed by the reconciler: `health` (Docker's status, NULL without a health check or
-- while the container is not running), `health_log` (the tail of the last probe's output),
-- `unhealthy_restarts` (restarts made for `on_unhealthy: restart` since it was last seen
-- healthy) and `unhealthy_restart_at` (when the last of them was made).
ALTER TABLE containers ADD COLUMN health_check TEXT;
ALTER TABLE containers ADD COLUMN health TEXT
    CHECK (health IS NULL OR health IN ('starting', 'healthy', 'unhealthy'));
ALTER TABLE containers ADD COLUMN health_log TEXT;
ALTER TABLE containers ADD COLUMN unhealthy_restarts INTEGER NOT NULL DEFAULT 0
    CHECK (unhealthy_restarts >= 0);
ALTER TABLE containers ADD COLUMN unhealthy_restart_at TEXT;
