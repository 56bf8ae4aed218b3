-- Issue 20: a container's Swarm placement constraints (`placement`, JSON
-- `{"constraints": [...]}`; NULL: none), and the node that runs it (observed; NULL on one
-- host and while no task runs).
ALTER TABLE containers ADD COLUMN placement TEXT;
ALTER TABLE containers ADD COLUMN node TEXT;
