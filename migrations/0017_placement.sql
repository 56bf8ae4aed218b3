-- Issue 20: a container's Swarm placement constraints (`placement`, JSON
-- `{"constraints": [...]}`; NULL: none).
ALTER TABLE containers ADD COLUMN placement TEXT;
