-- Issue 18: `resources.disk`, the hard cap on `/app` (a per-container ext4 image). `disk` is
-- the size as the client (or DEFAULT_DISK) wrote it (`1g`), echoed back; NULL: uncapped.
ALTER TABLE containers ADD COLUMN disk TEXT;
ALTER TABLE containers ADD COLUMN disk_bytes INTEGER CHECK (disk_bytes IS NULL OR disk_bytes > 0);
