-- Issue 18: the runtime of a container: `runc` (Docker's default) or `gvisor` (gVisor's
-- `runsc`). Existing containers keep runc.
ALTER TABLE containers ADD COLUMN isolation TEXT NOT NULL DEFAULT 'runc' CHECK (isolation IN ('runc', 'gvisor'));
