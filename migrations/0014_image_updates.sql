-- Issue 22, image updates.
-- `auto_update`: the spec field (the server rolls new digests of the tag out by itself).
ALTER TABLE containers ADD COLUMN auto_update INTEGER NOT NULL DEFAULT 0 CHECK (auto_update IN (0, 1));
-- Desired: the image by digest (`repo@sha256:…`) the container is to run instead of its tag,
-- set by an update or a rollback; NULL: the tag as it is on the host.
ALTER TABLE containers ADD COLUMN image_pin TEXT;
-- Observed: the registry digest (`sha256:…`) of the image the container runs, when known.
ALTER TABLE containers ADD COLUMN image_digest TEXT;
-- Observed: `{"digest", "seen_at"}` of a newer digest of the tag on its registry; NULL: none.
ALTER TABLE containers ADD COLUMN update_available TEXT;
-- Desired: an update being rolled out and judged, `{"from", "to", "started_at", "generation"}`
-- (`from`/`to` are pins); the judge rolls it back from here after a crash too.
ALTER TABLE containers ADD COLUMN update_pending TEXT;
-- Observed: `{"from", "to", "result", "reason", "at"}` of the last update.
ALTER TABLE containers ADD COLUMN last_update TEXT;
-- The registry's digest of each checked reference (`GET /images`), kept across restarts.
CREATE TABLE image_checks (
    reference  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
