-- worktrain event store, SQLite schema v1.
-- Events are the source of truth; every other table is a projection that
-- `worktrain admin rebuild-projections` can recreate from the events alone.

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,  -- global order, for tailing
    session_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,                   -- 1-based, contiguous per session
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,                   -- RFC 8785 canonical JSON
    created_at_ms   INTEGER NOT NULL,
    idempotency_key TEXT,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Append-only, enforced by the database itself.
CREATE TRIGGER events_reject_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'worktrain events are append-only: UPDATE rejected');
END;

CREATE TRIGGER events_reject_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'worktrain events are append-only: DELETE rejected');
END;

-- Content-addressed blobs (compiled workflows, artifacts, recorded responses).
CREATE TABLE blobs (
    hash          TEXT    PRIMARY KEY,  -- sha256 of content, hex
    size          INTEGER NOT NULL,
    content       BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TRIGGER blobs_reject_update BEFORE UPDATE ON blobs
BEGIN
    SELECT RAISE(ABORT, 'worktrain blobs are immutable: UPDATE rejected');
END;

-- Projection: one row per session.
CREATE TABLE sessions (
    session_id    TEXT    PRIMARY KEY,
    workflow_id   TEXT    NOT NULL,
    workflow_hash TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    goal          TEXT    NOT NULL,
    workspace     TEXT,
    current_node  INTEGER,
    current_step  TEXT,
    last_seq      INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    summary       TEXT    NOT NULL      -- full SessionSummary as JSON
);

CREATE INDEX sessions_by_status ON sessions (status, updated_at_ms);
CREATE INDEX sessions_by_workflow ON sessions (workflow_id, updated_at_ms);
CREATE INDEX sessions_by_update ON sessions (updated_at_ms);

-- Projection: the step graph.
CREATE TABLE session_nodes (
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
    PRIMARY KEY (session_id, node)
);

-- Projection: every submitted attempt (for replay and conflict detection).
CREATE TABLE session_attempts (
    session_id  TEXT    NOT NULL,
    node        INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    output_hash TEXT    NOT NULL,
    response    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (session_id, node, attempt)
);
