//! Read-only samples for per-workflow and per-step statistics (the console's workflow
//! page): one row per session and one row per step-graph node of a workflow's latest
//! sessions, read from the projections (sessions, nodes, attempts) plus the few events
//! the projections point at — never a whole event log, and at most a bounded number of
//! sessions per query.
//!
//! The SQL is shared by the backends; only the JSON accessor differs (token counts live
//! in the events' and summaries' JSON).

use serde::{Deserialize, Serialize};
use worktrain_core::ids::SessionId;
use worktrain_core::projection::{NodeStatus, SessionStatus};
use worktrain_core::run::RunState;

/// Most sessions one [`crate::EventStore::workflow_samples`] call reads.
pub const MAX_SAMPLED_SESSIONS: u32 = 5_000;

/// One session of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSample {
    /// The sampled session.
    pub session_id: SessionId,
    /// Where the session's workflow stands (in progress, blocked, parked, complete).
    pub status: SessionStatus,
    /// Run state (none: never ran under the daemon).
    pub run_state: Option<RunState>,
    /// Started (ms).
    pub created_at_ms: i64,
    /// Input plus output tokens of the whole session (its telemetry).
    pub tokens: u64,
}

/// One node of the step graph (one pass of one step) of such a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSample {
    /// The session the node belongs to.
    pub session_id: SessionId,
    /// Id of the step the node visits, as written in the workflow.
    pub step_id: String,
    /// Whether the node is still active, completed or abandoned.
    pub status: NodeStatus,
    /// Attempts submitted for the node.
    pub attempts: u64,
    /// Of which blocked by the step's contract.
    pub blocked_attempts: u64,
    /// When the node was entered (ms).
    pub entered_at_ms: i64,
    /// When it completed or was abandoned (ms).
    pub closed_at_ms: Option<i64>,
    /// Input plus output tokens of the LLM turns recorded while the node was open.
    pub tokens: u64,
}

/// The samples of a workflow's latest sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSamples {
    /// Sessions of the workflow, all time.
    pub total_sessions: u64,
    /// The latest sessions (by last update), newest first.
    pub runs: Vec<RunSample>,
    /// Their nodes, by session then node.
    pub steps: Vec<StepSample>,
}

/// Session counts of one workflow, all time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCounts {
    /// Id of the workflow the counts are for.
    pub workflow_id: String,
    /// Sessions started with the workflow, whatever their state.
    pub sessions: u64,
    /// Of which reached the workflow's end.
    pub complete: u64,
    /// Of which did not, and whose run failed or was cancelled.
    pub failed: u64,
}

/// The JSON accessor of a backend: `(column, path)` → an integer expression (0 when the
/// field is missing).
pub(crate) type JsonInt = fn(&str, &[&str]) -> String;

/// SQLite: `json_extract`.
pub(crate) fn sqlite_json_int(column: &str, path: &[&str]) -> String {
    format!(
        "COALESCE(json_extract({column}, '$.{}'), 0)",
        path.join(".")
    )
}

/// PostgreSQL: the text column cast to `jsonb`.
pub(crate) fn pg_json_int(column: &str, path: &[&str]) -> String {
    format!(
        "COALESCE(CAST(CAST({column} AS jsonb) #>> '{{{}}}' AS BIGINT), 0)",
        path.join(",")
    )
}

/// Sessions of one workflow, latest first (`p1`: workflow, `p2`: limit).
pub(crate) fn runs_sql(json: JsonInt, p1: &str, p2: &str) -> String {
    format!(
        "SELECT session_id, status, run_state, created_at_ms, \
         {} + {} AS tokens \
         FROM sessions WHERE workflow_id = {p1} \
         ORDER BY updated_at_ms DESC, session_id DESC LIMIT {p2}",
        json("summary", &["telemetry", "input_tokens"]),
        json("summary", &["telemetry", "output_tokens"]),
    )
}

/// Nodes of the latest sessions of one workflow (`p1`: workflow, `p2`: limit). A node's
/// events run from its entry to its closing event (the session's last event while open);
/// every lookup is by primary key or the events' `(session_id, seq)` key.
pub(crate) fn steps_sql(json: JsonInt, p1: &str, p2: &str) -> String {
    format!(
        "WITH recent AS (\
           SELECT session_id, last_seq FROM sessions WHERE workflow_id = {p1} \
           ORDER BY updated_at_ms DESC, session_id DESC LIMIT {p2}) \
         SELECT n.session_id, n.node, n.step_id, n.status, \
           (SELECT COUNT(*) FROM session_attempts a \
              WHERE a.session_id = n.session_id AND a.node = n.node) AS attempts, \
           (SELECT COUNT(*) FROM session_attempts a \
              WHERE a.session_id = n.session_id AND a.node = n.node AND a.outcome = 'blocked') AS blocked, \
           (SELECT e.created_at_ms FROM events e \
              WHERE e.session_id = n.session_id AND e.seq = n.entered_seq) AS entered_at_ms, \
           (SELECT e.created_at_ms FROM events e \
              WHERE e.session_id = n.session_id AND e.seq = n.closed_seq) AS closed_at_ms, \
           (SELECT CAST(COALESCE(SUM({} + {}), 0) AS BIGINT) FROM events e \
              WHERE e.session_id = n.session_id AND e.kind = 'agent_activity' \
                AND e.seq > n.entered_seq AND e.seq <= COALESCE(n.closed_seq, r.last_seq)) AS tokens \
         FROM session_nodes n JOIN recent r ON r.session_id = n.session_id \
         ORDER BY n.session_id, n.node",
        json("e.payload", &["activity", "usage", "input_tokens"]),
        json("e.payload", &["activity", "usage", "output_tokens"]),
    )
}

/// Sessions per workflow with their ends.
pub(crate) const COUNTS_SQL: &str = "SELECT workflow_id, COUNT(*) AS n, \
     SUM(CASE WHEN status = 'complete' THEN 1 ELSE 0 END) AS complete, \
     SUM(CASE WHEN status <> 'complete' AND run_state IN ('failed', 'cancelled') THEN 1 ELSE 0 END) AS failed \
     FROM sessions GROUP BY workflow_id ORDER BY workflow_id";

/// A [`RunSample`] from its columns.
pub(crate) fn run_sample(
    session_id: &str,
    status: &str,
    run_state: Option<String>,
    created_at_ms: i64,
    tokens: i64,
) -> Result<RunSample, crate::StoreError> {
    Ok(RunSample {
        session_id: crate::common::parse(session_id, "session id")?,
        status: SessionStatus::parse(status)
            .ok_or_else(|| crate::common::corrupt(format!("unknown session status `{status}`")))?,
        run_state: crate::common::run_state_column(run_state)?,
        created_at_ms,
        tokens: crate::common::to_u64(tokens),
    })
}

/// The columns of a [`StepSample`], as read.
pub(crate) struct StepColumns {
    pub session_id: String,
    pub step_id: String,
    pub status: String,
    pub attempts: i64,
    pub blocked: i64,
    pub entered_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    pub tokens: i64,
}

impl StepColumns {
    /// Convert the row into a [`StepSample`]; a status or id that does not parse is
    /// reported as [`crate::StoreError::Corrupt`].
    pub(crate) fn sample(self) -> Result<StepSample, crate::StoreError> {
        use crate::common::{corrupt, enum_from, parse, to_u64};
        Ok(StepSample {
            session_id: parse(&self.session_id, "session id")?,
            status: enum_from::<NodeStatus>(&self.status)?,
            attempts: to_u64(self.attempts),
            blocked_attempts: to_u64(self.blocked),
            // Every node is entered by an event of its session.
            entered_at_ms: self.entered_at_ms.ok_or_else(|| {
                corrupt(format!(
                    "node of step `{}` in session {} has no entry event",
                    self.step_id, self.session_id
                ))
            })?,
            closed_at_ms: self.closed_at_ms,
            tokens: to_u64(self.tokens),
            step_id: self.step_id,
        })
    }
}

/// The body of `EventStore::workflow_samples` on one backend: the same queries and row
/// mapping everywhere, with the backend's pool, JSON accessor and placeholders (`$1` or
/// `?1`). A macro, because the row and pool types differ per backend while the code does not.
macro_rules! workflow_samples {
    ($pool:expr, $workflow:expr, $latest:expr, $json_int:expr, $p1:literal, $p2:literal) => {{
        use $crate::stats::{self, StepColumns};
        let wf = $workflow.as_str().to_owned();
        let limit = i64::from($latest.clamp(1, stats::MAX_SAMPLED_SESSIONS));
        let total: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sessions WHERE workflow_id = ",
            $p1
        ))
        .bind(&wf)
        .fetch_one($pool)
        .await?;
        // Built from constants only (the accessor and placeholders); values are bound.
        let runs = sqlx::query(sqlx::AssertSqlSafe(stats::runs_sql($json_int, $p1, $p2)))
            .bind(&wf)
            .bind(limit)
            .fetch_all($pool)
            .await?
            .iter()
            .map(|r| {
                stats::run_sample(
                    &r.try_get::<String, _>("session_id")?,
                    &r.try_get::<String, _>("status")?,
                    r.try_get("run_state")?,
                    r.try_get("created_at_ms")?,
                    r.try_get("tokens")?,
                )
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Built from constants only (the accessor and placeholders); values are bound.
        let steps = sqlx::query(sqlx::AssertSqlSafe(stats::steps_sql($json_int, $p1, $p2)))
            .bind(&wf)
            .bind(limit)
            .fetch_all($pool)
            .await?
            .iter()
            .map(|r| {
                StepColumns {
                    session_id: r.try_get("session_id")?,
                    step_id: r.try_get("step_id")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    blocked: r.try_get("blocked")?,
                    entered_at_ms: r.try_get("entered_at_ms")?,
                    closed_at_ms: r.try_get("closed_at_ms")?,
                    tokens: r.try_get("tokens")?,
                }
                .sample()
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(stats::WorkflowSamples {
            total_sessions: to_u64(total),
            runs,
            steps,
        })
    }};
}
pub(crate) use workflow_samples;
