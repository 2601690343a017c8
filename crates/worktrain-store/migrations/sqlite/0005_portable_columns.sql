-- v5: real columns where queries used to look into JSON or rely on rowid order, so that
-- every backend runs the same queries.
--
-- sessions: branch, run state and the lowercased search text get their own columns.
-- search_text is NULL here and filled by the store right after migrating (Unicode
-- lowercasing is done in Rust, identically for every backend).
ALTER TABLE sessions ADD COLUMN branch TEXT;
ALTER TABLE sessions ADD COLUMN run_state TEXT;
ALTER TABLE sessions ADD COLUMN search_text TEXT;

-- run_queue: ties within one millisecond go to the run (re)queued first, by the global
-- position of the event that (re)queued it (was: rowid, which a rebuild reorders).
ALTER TABLE run_queue ADD COLUMN queue_position INTEGER NOT NULL DEFAULT 0;
UPDATE run_queue SET queue_position = COALESCE(
    (SELECT MAX(e.position) FROM events e
     WHERE e.session_id = run_queue.session_id AND e.kind IN ('run_queued', 'run_requeued')),
    0);
DROP INDEX run_queue_order;
CREATE INDEX run_queue_order ON run_queue (state, priority DESC, queued_at_ms, queue_position);

-- Dispatch keys: a projection table with a unique key (was: a unique index on a JSON
-- expression over events).
CREATE TABLE dispatch_keys (
    dispatch_key TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL
);
INSERT INTO dispatch_keys (dispatch_key, session_id)
    SELECT json_extract(payload, '$.dispatch_key'), session_id FROM events
    WHERE kind = 'run_queued' AND json_extract(payload, '$.dispatch_key') IS NOT NULL;
DROP INDEX events_dispatch_key;
