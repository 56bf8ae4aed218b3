-- Issue 19: a container's idle policy. `idle_after` NULL: no policy (the other two are then
-- unused). Not part of what Docker runs: a change of these columns moves no generation.
ALTER TABLE containers ADD COLUMN idle_after INTEGER CHECK (idle_after IS NULL OR idle_after > 0);
ALTER TABLE containers ADD COLUMN idle_action TEXT NOT NULL DEFAULT 'pause'
    CHECK (idle_action IN ('pause', 'stop'));
ALTER TABLE containers ADD COLUMN idle_resume INTEGER NOT NULL DEFAULT 1;
-- The idle sampler's query: only the rows with a policy.
CREATE INDEX containers_idle ON containers (cuid) WHERE idle_after IS NOT NULL;
