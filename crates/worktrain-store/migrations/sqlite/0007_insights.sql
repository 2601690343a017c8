-- v7: trace analysis. Derived data (traces are replaced when their source changes), kept
-- apart from the event log; only a proposal's status history is append-only.

CREATE TABLE insight_traces (
    trace_id       TEXT    PRIMARY KEY,         -- <source>:<native id>
    source         TEXT    NOT NULL,
    native_id      TEXT    NOT NULL,
    workflow_id    TEXT,
    trigger_label  TEXT,
    outcome        TEXT    NOT NULL,            -- SUCCESS | PARTIAL | BLOCKED | FAILED | UNKNOWN
    started_at_ms  INTEGER,
    ended_at_ms    INTEGER,
    version        INTEGER NOT NULL,            -- worktrain: last event seq; files: 0
    digest         TEXT    NOT NULL,
    summary        TEXT    NOT NULL,            -- small JSON for reports
    trace          TEXT    NOT NULL,            -- normalised trace, JSON
    imported_at_ms INTEGER NOT NULL
);

CREATE INDEX insight_traces_started ON insight_traces (started_at_ms, trace_id);
CREATE INDEX insight_traces_workflow ON insight_traces (workflow_id, started_at_ms, trace_id);

CREATE TABLE insight_trace_steps (
    trace_id TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    workflow_id TEXT,
    PRIMARY KEY (trace_id, step_id)
);

CREATE INDEX insight_trace_steps_step ON insight_trace_steps (workflow_id, step_id);

CREATE TABLE insight_findings (
    trace_id    TEXT    NOT NULL,
    ordinal     INTEGER NOT NULL,
    detector    TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    workflow_id TEXT,
    step_id     TEXT,
    outcome     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (trace_id, ordinal)
);

CREATE INDEX insight_findings_group ON insight_findings (workflow_id, step_id, fingerprint);
CREATE INDEX insight_findings_detector ON insight_findings (detector, trace_id);

CREATE TABLE insight_proposals (
    proposal_id   TEXT    PRIMARY KEY,
    workflow_id   TEXT    NOT NULL,
    step_id       TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    detector      TEXT    NOT NULL,
    status        TEXT    NOT NULL,             -- open | applied | dismissed
    confidence    REAL    NOT NULL,
    sessions      INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE INDEX insight_proposals_status ON insight_proposals (status, confidence, proposal_id);

CREATE TABLE insight_proposal_history (
    proposal_id TEXT    NOT NULL,
    ordinal     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    note        TEXT,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, ordinal)
);

CREATE TRIGGER insight_proposal_history_no_update BEFORE UPDATE ON insight_proposal_history
BEGIN
    SELECT RAISE(ABORT, 'proposal history is append-only: UPDATE rejected');
END;

CREATE TRIGGER insight_proposal_history_no_delete BEFORE DELETE ON insight_proposal_history
BEGIN
    SELECT RAISE(ABORT, 'proposal history is append-only: DELETE rejected');
END;

CREATE TABLE insight_notes (
    trace_id      TEXT    NOT NULL,
    ordinal       INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    PRIMARY KEY (trace_id, ordinal)
);

CREATE TRIGGER insight_notes_no_update BEFORE UPDATE ON insight_notes
BEGIN
    SELECT RAISE(ABORT, 'insight notes are append-only: UPDATE rejected');
END;

CREATE TRIGGER insight_notes_no_delete BEFORE DELETE ON insight_notes
BEGIN
    SELECT RAISE(ABORT, 'insight notes are append-only: DELETE rejected');
END;
