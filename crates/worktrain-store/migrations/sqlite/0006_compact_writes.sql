-- v6: fewer pages written per advance (see docs/benchmarks.md).
--
-- * events: positions come from INTEGER PRIMARY KEY alone. Events are never deleted, so
--   the next rowid is always max + 1; AUTOINCREMENT only added a sqlite_sequence write
--   to every append.
-- * blobs, session_nodes, session_attempts: WITHOUT ROWID, clustered by their key, so an
--   insert or update touches one b-tree instead of a table and its key index.
-- * sessions: listing filters on real columns and orders by update time; one index on
--   (updated_at_ms) serves it, the per-status and per-workflow indexes only cost writes.

CREATE TABLE events_v6 (
    position        INTEGER PRIMARY KEY,               -- global order, for tailing
    session_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    idempotency_key TEXT,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    UNIQUE (session_id, seq)
);
INSERT INTO events_v6 (position, session_id, seq, kind, payload, created_at_ms,
                       idempotency_key, prev_hash, hash)
    SELECT position, session_id, seq, kind, payload, created_at_ms, idempotency_key,
           prev_hash, hash
    FROM events ORDER BY position;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
DELETE FROM sqlite_sequence WHERE name = 'events';
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TRIGGER events_reject_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'worktrain events are append-only: UPDATE rejected');
END;
CREATE TRIGGER events_reject_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'worktrain events are append-only: DELETE rejected');
END;

CREATE TABLE blobs_v6 (
    hash          TEXT    PRIMARY KEY,
    size          INTEGER NOT NULL,
    content       BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO blobs_v6 SELECT hash, size, content, created_at_ms FROM blobs;
DROP TABLE blobs;
ALTER TABLE blobs_v6 RENAME TO blobs;
CREATE TRIGGER blobs_reject_update BEFORE UPDATE ON blobs
BEGIN
    SELECT RAISE(ABORT, 'worktrain blobs are immutable: UPDATE rejected');
END;

CREATE TABLE session_nodes_v6 (
    session_id  TEXT    NOT NULL,
    node        INTEGER NOT NULL,
    step_id     TEXT    NOT NULL,
    step_index  INTEGER NOT NULL,
    pc          INTEGER NOT NULL,
    parent      INTEGER,
    cause       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    notes       TEXT,
    entered_seq INTEGER NOT NULL,
    closed_seq  INTEGER,
    cursor      TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (session_id, node)
) WITHOUT ROWID;
INSERT INTO session_nodes_v6 (session_id, node, step_id, step_index, pc, parent, cause,
                              status, attempts, notes, entered_seq, closed_seq, cursor)
    SELECT session_id, node, step_id, step_index, pc, parent, cause, status, attempts,
           notes, entered_seq, closed_seq, cursor
    FROM session_nodes;
DROP TABLE session_nodes;
ALTER TABLE session_nodes_v6 RENAME TO session_nodes;

CREATE TABLE session_attempts_v6 (
    session_id  TEXT    NOT NULL,
    node        INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    output_hash TEXT    NOT NULL,
    response    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (session_id, node, attempt)
) WITHOUT ROWID;
INSERT INTO session_attempts_v6
    SELECT session_id, node, attempt, outcome, output_hash, response, seq
    FROM session_attempts;
DROP TABLE session_attempts;
ALTER TABLE session_attempts_v6 RENAME TO session_attempts;

DROP INDEX sessions_by_status;
DROP INDEX sessions_by_workflow;
