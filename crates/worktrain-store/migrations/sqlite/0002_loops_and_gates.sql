-- v2: the step graph remembers each node's program position on entry (loop frames,
-- jump counters) so a rewind can restore it. Attempts gain the outcomes `parked` and
-- `rejected` (the column is free text; no change needed).
ALTER TABLE session_nodes ADD COLUMN cursor TEXT NOT NULL DEFAULT '{}';
