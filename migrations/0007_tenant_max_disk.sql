-- Issue 17 + 18: a tenant's quota on the sum of its containers' `resources.disk` caps
-- (bytes; NULL: no limit).
ALTER TABLE tenants ADD COLUMN max_disk_bytes INTEGER CHECK (max_disk_bytes IS NULL OR max_disk_bytes >= 0);
