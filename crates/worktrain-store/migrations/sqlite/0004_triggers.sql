-- v4: triggers. Webhook deliveries are persisted before they are answered; every
-- trigger decision is an append-only row; source items, poll cursors and schedule state
-- make dedupe, retries, polls and schedules survive restarts.
CREATE TABLE webhook_deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_id     TEXT    NOT NULL,
    delivery_key   TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    headers        TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    status         TEXT    NOT NULL,
    decided_at_ms  INTEGER,
    UNIQUE (trigger_id, delivery_key)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, id);

CREATE TABLE trigger_decisions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_id    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    decision      TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    event         TEXT,
    delivery_id   INTEGER,
    source        TEXT,
    session_id    TEXT,
    detail        TEXT    NOT NULL
);

CREATE INDEX trigger_decisions_by_trigger ON trigger_decisions (trigger_id, id);
CREATE INDEX trigger_decisions_by_source ON trigger_decisions (source, id);

CREATE TRIGGER trigger_decisions_no_update BEFORE UPDATE ON trigger_decisions
BEGIN
    SELECT RAISE(ABORT, 'trigger decisions are append-only');
END;

CREATE TRIGGER trigger_decisions_no_delete BEFORE DELETE ON trigger_decisions
BEGIN
    SELECT RAISE(ABORT, 'trigger decisions are append-only');
END;

CREATE TABLE trigger_sources (
    source             TEXT    PRIMARY KEY,
    trigger_id         TEXT    NOT NULL,
    session_id         TEXT,
    state              TEXT    NOT NULL,
    attempts           INTEGER NOT NULL,
    next_attempt_at_ms INTEGER,
    request            TEXT    NOT NULL,
    updated_at_ms      INTEGER NOT NULL
);

CREATE INDEX trigger_sources_state ON trigger_sources (state);

CREATE TABLE poll_cursors (
    trigger_id        TEXT    PRIMARY KEY,
    etag              TEXT,
    baseline_done     INTEGER NOT NULL,
    last_polled_at_ms INTEGER,
    next_poll_at_ms   INTEGER,
    last_error        TEXT
);

CREATE TABLE poll_items (
    trigger_id  TEXT    NOT NULL,
    item_key    TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    seen_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, item_key)
);

CREATE TABLE schedule_state (
    trigger_id           TEXT    PRIMARY KEY,
    cron                 TEXT    NOT NULL,
    last_scheduled_at_ms INTEGER NOT NULL,
    last_fired_at_ms     INTEGER,
    last_session_id      TEXT
);
