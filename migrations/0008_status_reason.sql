-- Issue 19: why the server itself changed a container's desired state (a lifetime that
-- ran out, an idle policy). NULL: the last change was a client's (or none was made).
-- Cleared by every client action, so it always explains the current desired state.
ALTER TABLE containers ADD COLUMN status_reason TEXT CHECK (status_reason IS NULL OR status_reason IN ('expired', 'idle'));
