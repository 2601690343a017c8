-- v8: blobs, session_nodes and session_attempts become rowid tables with a unique key
-- index again (they were WITHOUT ROWID since v6).
--
-- A WITHOUT ROWID table is an index b-tree: every row is a key, and a key that does not
-- fit in its page (on 512-byte pages, more than ~100 bytes: every blob, most node rows
-- with their notes, every attempt row with its two hashes) is read in full, overflow
-- pages and all, each time a search compares against it. An advance searched all three
-- trees, so it read pages it never needed (docs/benchmarks.md). Here the keys live in
-- small index cells and the rows in a table b-tree appended to at its end.

CREATE TABLE blobs_v8 (
    hash          TEXT    NOT NULL UNIQUE,
    size          INTEGER NOT NULL,
    content       BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
INSERT INTO blobs_v8 (hash, size, content, created_at_ms)
    SELECT hash, size, content, created_at_ms FROM blobs ORDER BY created_at_ms, hash;
DROP TABLE blobs;
ALTER TABLE blobs_v8 RENAME TO blobs;
CREATE TRIGGER blobs_reject_update BEFORE UPDATE ON blobs
BEGIN
    SELECT RAISE(ABORT, 'worktrain blobs are immutable: UPDATE rejected');
END;

CREATE TABLE session_nodes_v8 (
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
    UNIQUE (session_id, node)
);
INSERT INTO session_nodes_v8 (session_id, node, step_id, step_index, pc, parent, cause,
                              status, attempts, notes, entered_seq, closed_seq, cursor)
    SELECT session_id, node, step_id, step_index, pc, parent, cause, status, attempts,
           notes, entered_seq, closed_seq, cursor
    FROM session_nodes ORDER BY session_id, node;
DROP TABLE session_nodes;
ALTER TABLE session_nodes_v8 RENAME TO session_nodes;

CREATE TABLE session_attempts_v8 (
    session_id  TEXT    NOT NULL,
    node        INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    output_hash TEXT    NOT NULL,
    response    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    UNIQUE (session_id, node, attempt)
);
INSERT INTO session_attempts_v8 (session_id, node, attempt, outcome, output_hash,
                                 response, seq)
    SELECT session_id, node, attempt, outcome, output_hash, response, seq
    FROM session_attempts ORDER BY session_id, node, attempt;
DROP TABLE session_attempts;
ALTER TABLE session_attempts_v8 RENAME TO session_attempts;
