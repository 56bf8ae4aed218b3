-- Issue 18: a read-only root filesystem, with `/tmp` a tmpfs of `tmp_bytes` (NULL: the
-- default, 64 MiB). `tmp` is the size as the client wrote it (`64m`), echoed back.
ALTER TABLE containers ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0 CHECK (read_only IN (0, 1));
ALTER TABLE containers ADD COLUMN tmp TEXT;
ALTER TABLE containers ADD COLUMN tmp_bytes INTEGER CHECK (tmp_bytes IS NULL OR tmp_bytes > 0);
