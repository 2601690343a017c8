-- worktrain event store, PostgreSQL schema v1 (the same tables and columns as the SQLite
-- schema v5; integers are BIGINT, blobs BYTEA, flags BOOLEAN). Events are the source of truth; every
-- other table except run_leases is a projection that `worktrain admin
-- rebuild-projections` can recreate from the events alone.

CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- global order, for tailing
    session_id      TEXT   NOT NULL,
    seq             BIGINT NOT NULL,                  -- 1-based, contiguous per session
    kind            TEXT   NOT NULL,
    payload         TEXT   NOT NULL,                  -- RFC 8785 canonical JSON, byte-exact
    created_at_ms   BIGINT NOT NULL,
    idempotency_key TEXT,
    prev_hash       TEXT   NOT NULL,
    hash            TEXT   NOT NULL,
    CONSTRAINT events_session_seq UNIQUE (session_id, seq)
);

CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Append-only, enforced by the database itself (statement triggers fire even when no
-- row matches, and TRUNCATE is covered too).
CREATE FUNCTION worktrain_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'worktrain events are append-only: % rejected', TG_OP;
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION worktrain_events_append_only();

-- Content-addressed blobs (compiled workflows, artifacts, recorded responses).
CREATE TABLE blobs (
    hash          TEXT   PRIMARY KEY,  -- sha256 of content, hex
    size          BIGINT NOT NULL,
    content       BYTEA  NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE FUNCTION worktrain_blobs_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'worktrain blobs are immutable: % rejected', TG_OP;
END
$$;

CREATE TRIGGER blobs_immutable BEFORE UPDATE ON blobs
    FOR EACH STATEMENT EXECUTE FUNCTION worktrain_blobs_immutable();

-- Projection: one row per session.
CREATE TABLE sessions (
    session_id    TEXT   PRIMARY KEY,
    workflow_id   TEXT   NOT NULL,
    workflow_hash TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    goal          TEXT   NOT NULL,
    workspace     TEXT,
    branch        TEXT,
    run_state     TEXT,
    search_text   TEXT   NOT NULL,    -- goal, workflow id, branch; lowercased by worktrain
    current_node  BIGINT,
    current_step  TEXT,
    last_seq      BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    summary       TEXT   NOT NULL     -- full SessionSummary as JSON
);

CREATE INDEX sessions_by_status ON sessions (status, updated_at_ms);
CREATE INDEX sessions_by_workflow ON sessions (workflow_id, updated_at_ms);
CREATE INDEX sessions_by_update ON sessions (updated_at_ms);

-- Projection: the step graph.
CREATE TABLE session_nodes (
    session_id  TEXT   NOT NULL,
    node        BIGINT NOT NULL,
    step_id     TEXT   NOT NULL,
    step_index  BIGINT NOT NULL,
    pc          BIGINT NOT NULL,
    parent      BIGINT,
    cause       TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    notes       TEXT,
    entered_seq BIGINT NOT NULL,
    closed_seq  BIGINT,
    cursor      TEXT   NOT NULL DEFAULT '{}',
    PRIMARY KEY (session_id, node)
);

-- Projection: every submitted attempt (for replay and conflict detection).
CREATE TABLE session_attempts (
    session_id  TEXT   NOT NULL,
    node        BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    outcome     TEXT   NOT NULL,
    output_hash TEXT   NOT NULL,
    response    TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (session_id, node, attempt)
);

-- Projection: the daemons' run queue. queue_position is the global position of the
-- event that (re)queued the run: FIFO within one millisecond.
CREATE TABLE run_queue (
    session_id     TEXT    PRIMARY KEY,
    state          TEXT    NOT NULL,
    priority       BIGINT  NOT NULL,
    workspace      TEXT,
    trigger_id     TEXT,
    agent          TEXT    NOT NULL,
    queued_at_ms   BIGINT  NOT NULL,
    worker         TEXT,
    queue_position BIGINT  NOT NULL
);

CREATE INDEX run_queue_order ON run_queue (state, priority DESC, queued_at_ms, queue_position);

-- Projection: dispatch idempotency keys.
CREATE TABLE dispatch_keys (
    dispatch_key TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL
);

-- Worker leases: operational state renewed by heartbeats (deliberately not events).
CREATE TABLE run_leases (
    session_id     TEXT   PRIMARY KEY,
    worker         TEXT   NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);

-- Triggers. Webhook deliveries are persisted before they are answered (the unique key
-- deduplicates redeliveries whichever daemon receives them); every trigger decision is
-- an append-only row; source items, poll cursors and schedule state make dedupe,
-- retries, polls and schedules survive restarts and leader changes.
CREATE TABLE webhook_deliveries (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_id     TEXT   NOT NULL,
    delivery_key   TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    headers        TEXT   NOT NULL,
    body           BYTEA  NOT NULL,
    status         TEXT   NOT NULL,
    decided_at_ms  BIGINT,
    UNIQUE (trigger_id, delivery_key)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, id);

CREATE TABLE trigger_decisions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_id    TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    decision      TEXT   NOT NULL,
    reason        TEXT   NOT NULL,
    event         TEXT,
    delivery_id   BIGINT,
    source        TEXT,
    session_id    TEXT,
    detail        TEXT   NOT NULL
);

CREATE INDEX trigger_decisions_by_trigger ON trigger_decisions (trigger_id, id);
CREATE INDEX trigger_decisions_by_source ON trigger_decisions (source, id);

CREATE FUNCTION worktrain_decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trigger decisions are append-only: % rejected', TG_OP;
END
$$;

CREATE TRIGGER trigger_decisions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON trigger_decisions FOR EACH STATEMENT EXECUTE FUNCTION worktrain_decisions_append_only();

CREATE TABLE trigger_sources (
    source             TEXT   PRIMARY KEY,
    trigger_id         TEXT   NOT NULL,
    session_id         TEXT,
    state              TEXT   NOT NULL,
    attempts           BIGINT NOT NULL,
    next_attempt_at_ms BIGINT,
    request            TEXT   NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);

CREATE INDEX trigger_sources_state ON trigger_sources (state);

CREATE TABLE poll_cursors (
    trigger_id        TEXT    PRIMARY KEY,
    etag              TEXT,
    baseline_done     BOOLEAN NOT NULL,
    last_polled_at_ms BIGINT,
    next_poll_at_ms   BIGINT,
    last_error        TEXT
);

CREATE TABLE poll_items (
    trigger_id  TEXT   NOT NULL,
    item_key    TEXT   NOT NULL,
    updated_at  TEXT   NOT NULL,
    seen_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, item_key)
);

CREATE TABLE schedule_state (
    trigger_id           TEXT   PRIMARY KEY,
    cron                 TEXT   NOT NULL,
    last_scheduled_at_ms BIGINT NOT NULL,
    last_fired_at_ms     BIGINT,
    last_session_id      TEXT
);
