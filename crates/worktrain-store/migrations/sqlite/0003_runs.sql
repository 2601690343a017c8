-- v3: the daemon's run queue (a projection of run_* events) and worker leases
-- (operational state renewed by heartbeats; deliberately not events).
CREATE TABLE run_queue (
    session_id   TEXT    PRIMARY KEY,
    state        TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    workspace    TEXT,
    trigger_id   TEXT,
    agent        TEXT    NOT NULL,
    queued_at_ms INTEGER NOT NULL,
    worker       TEXT
);

CREATE INDEX run_queue_order ON run_queue (state, priority DESC, queued_at_ms, session_id);

CREATE TABLE run_leases (
    session_id     TEXT    PRIMARY KEY,
    worker         TEXT    NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

CREATE UNIQUE INDEX events_dispatch_key ON events (json_extract(payload, '$.dispatch_key'))
    WHERE kind = 'run_queued' AND json_extract(payload, '$.dispatch_key') IS NOT NULL;
