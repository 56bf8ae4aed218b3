-- Issue 20, node loss: the last node a task of the container ran on (kept while no task
-- runs, so that a move from one node to another is seen across the gap between them), and
-- the last such move (JSON {"from", "to", "at", "reason"}; NULL: it never moved).
ALTER TABLE containers ADD COLUMN last_node TEXT;
ALTER TABLE containers ADD COLUMN last_move TEXT;
