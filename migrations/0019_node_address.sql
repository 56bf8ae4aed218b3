-- Issue 20: the address of the Swarm node that runs the container (its `Status.Addr`, as last
-- observed with `node`; NULL on one host and while no task runs): where its published ports
-- answer (the representation's `endpoints`).
ALTER TABLE containers ADD COLUMN node_address TEXT;
