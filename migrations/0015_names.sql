-- Issue 23: a name people know a container by. Unique among one tenant's live containers
-- (the operator's containers, tenant NULL, are one namespace): a deleted container's name is
-- free again as soon as it is tombstoned.
ALTER TABLE containers ADD COLUMN name TEXT;
CREATE UNIQUE INDEX containers_live_name ON containers (COALESCE(tenant, ''), name)
    WHERE name IS NOT NULL AND deleted_at IS NULL;
