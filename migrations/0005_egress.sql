-- Issue 18: what a container may reach. `egress` is internet, none or allowlist; `egress_allow`
-- the JSON list of `CIDR:port` entries of an allowlist, as the client wrote them. Containers
-- made before this migration had unrestricted egress: they keep `internet`.
ALTER TABLE containers ADD COLUMN egress TEXT NOT NULL DEFAULT 'internet'
    CHECK (egress IN ('internet', 'none', 'allowlist'));
ALTER TABLE containers ADD COLUMN egress_allow TEXT NOT NULL DEFAULT '[]';
