-- v2: trace analysis. Derived data (traces are replaced when their source changes), kept
-- apart from the event log; only a proposal's status history and notes are append-only.
-- Ids and the other columns lists are ordered by compare bytewise (COLLATE "C"), as in SQLite,
-- whatever the database's default collation.

CREATE TABLE insight_traces (
    trace_id       TEXT COLLATE "C" PRIMARY KEY,         -- <source>:<native id>
    source         TEXT    NOT NULL,
    native_id      TEXT    NOT NULL,
    workflow_id    TEXT COLLATE "C",
    trigger_label  TEXT,
    outcome        TEXT    NOT NULL,            -- SUCCESS | PARTIAL | BLOCKED | FAILED | UNKNOWN
    started_at_ms  BIGINT,
    ended_at_ms    BIGINT,
    version        BIGINT  NOT NULL,            -- worktrain: last event seq; files: 0
    digest         TEXT    NOT NULL,
    summary        TEXT    NOT NULL,            -- small JSON for reports
    trace          TEXT    NOT NULL,            -- normalised trace, JSON
    imported_at_ms BIGINT  NOT NULL
);

CREATE INDEX insight_traces_started ON insight_traces (started_at_ms, trace_id);
CREATE INDEX insight_traces_workflow ON insight_traces (workflow_id, started_at_ms, trace_id);

CREATE TABLE insight_trace_steps (
    trace_id    TEXT COLLATE "C" NOT NULL,
    step_id     TEXT COLLATE "C" NOT NULL,
    outcome     TEXT NOT NULL,
    workflow_id TEXT COLLATE "C",
    PRIMARY KEY (trace_id, step_id)
);

CREATE INDEX insight_trace_steps_step ON insight_trace_steps (workflow_id, step_id);

CREATE TABLE insight_findings (
    trace_id    TEXT COLLATE "C" NOT NULL,
    ordinal     BIGINT NOT NULL,
    detector    TEXT   NOT NULL,
    severity    TEXT   NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    workflow_id TEXT COLLATE "C",
    step_id     TEXT COLLATE "C",
    outcome     TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    PRIMARY KEY (trace_id, ordinal)
);

CREATE INDEX insight_findings_group ON insight_findings (workflow_id, step_id, fingerprint);
CREATE INDEX insight_findings_detector ON insight_findings (detector, trace_id);

CREATE TABLE insight_proposals (
    proposal_id   TEXT COLLATE "C" PRIMARY KEY,
    workflow_id   TEXT COLLATE "C" NOT NULL,
    step_id       TEXT COLLATE "C" NOT NULL,
    fingerprint   TEXT COLLATE "C" NOT NULL,
    detector      TEXT             NOT NULL,
    status        TEXT             NOT NULL,    -- open | applied | dismissed
    confidence    DOUBLE PRECISION NOT NULL,
    sessions      BIGINT           NOT NULL,
    body          TEXT             NOT NULL,
    created_at_ms BIGINT           NOT NULL,
    updated_at_ms BIGINT           NOT NULL
);

CREATE INDEX insight_proposals_status ON insight_proposals (status, confidence, proposal_id);

CREATE TABLE insight_proposal_history (
    proposal_id TEXT COLLATE "C" NOT NULL,
    ordinal     BIGINT NOT NULL,
    status      TEXT   NOT NULL,
    note        TEXT,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (proposal_id, ordinal)
);

CREATE FUNCTION worktrain_proposal_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'proposal history is append-only: % rejected', TG_OP;
END;
$$;

-- Statement triggers fire even when no row matches; TRUNCATE is covered too.
CREATE TRIGGER insight_proposal_history_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON insight_proposal_history
    FOR EACH STATEMENT EXECUTE FUNCTION worktrain_proposal_history_append_only();

CREATE TABLE insight_notes (
    trace_id      TEXT COLLATE "C" NOT NULL,
    ordinal       BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    body          TEXT   NOT NULL,
    PRIMARY KEY (trace_id, ordinal)
);

CREATE FUNCTION worktrain_insight_notes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'insight notes are append-only: % rejected', TG_OP;
END;
$$;

-- Statement triggers fire even when no row matches; TRUNCATE is covered too.
CREATE TRIGGER insight_notes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON insight_notes
    FOR EACH STATEMENT EXECUTE FUNCTION worktrain_insight_notes_append_only();
