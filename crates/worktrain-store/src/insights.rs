//! Storage for trace analysis: imported traces, their findings, improvement proposals
//! (with an append-only status history) and notes such as post-mortems.
//!
//! This is derived data, not the event log: a trace is replaced when its source changed
//! (worktrain sessions are re-read from their events; files are re-imported), and its
//! findings are replaced with it in the same transaction. The rows carry the insights
//! crate's model as JSON (`trace`, `body`) plus the columns queries filter and group on.
//!
//! Backends implement [`InsightsStore`] with plain, portable SQL (no JSON functions in
//! queries, no implicit row order) and must pass `tests/insights.rs`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One trace with its findings and the steps it visited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// `<source>:<native id>`.
    pub trace_id: String,
    /// Source (`worktrain`, `claude_code`, …).
    pub source: String,
    /// The source's own id.
    pub native_id: String,
    /// Workflow, when known.
    pub workflow_id: Option<String>,
    /// What started it, when known.
    pub trigger: Option<String>,
    /// `SUCCESS`, `PARTIAL`, `BLOCKED`, `FAILED` or `UNKNOWN`.
    pub outcome: String,
    /// First timestamp (ms).
    pub started_at_ms: Option<i64>,
    /// Last timestamp (ms).
    pub ended_at_ms: Option<i64>,
    /// The source's version of it (worktrain: the session's last event seq; files: 0),
    /// so an unchanged session can be skipped without reading its events.
    pub version: i64,
    /// Digest of the normalised trace: an import with the same digest changes nothing.
    pub digest: String,
    /// Small JSON summary for reports (counts, tokens, cost).
    pub summary: String,
    /// The normalised trace, JSON.
    pub trace: String,
    /// Steps visited (distinct).
    pub steps: Vec<String>,
    /// Findings, in order.
    pub findings: Vec<FindingRow>,
    /// When it was (last) imported.
    pub imported_at_ms: i64,
}

/// A trace's columns without its bodies (listing, reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHead {
    /// The trace id: `<source>:<native id>`.
    pub trace_id: String,
    /// Where the trace came from (worktrain, claude_code, codex, swe_agent, …).
    pub source: String,
    /// The trace's id in its source (session id, file name, …).
    pub native_id: String,
    /// The workflow the trace ran, when known.
    pub workflow_id: Option<String>,
    /// The trigger label that started it, when known.
    pub trigger: Option<String>,
    /// SUCCESS, PARTIAL, BLOCKED, FAILED or UNKNOWN.
    pub outcome: String,
    /// When the trace started (ms since the Unix epoch), when known.
    pub started_at_ms: Option<i64>,
    /// When the trace ended (ms since the Unix epoch), when known.
    pub ended_at_ms: Option<i64>,
    /// Re-import marker: a worktrain session's last event seq; 0 for files.
    pub version: i64,
    /// Summary JSON.
    pub summary: String,
    /// Findings stored for it.
    pub findings: u64,
}

/// One finding of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRow {
    /// The trace this belongs to.
    pub trace_id: String,
    /// Position among the trace's findings.
    pub ordinal: u32,
    /// The detector that found it (e.g. `retry_loop`).
    pub detector: String,
    /// How bad the finding is (info, warning, error).
    pub severity: String,
    /// Stable fingerprint: the same pattern at the same step fingerprints alike across sessions.
    pub fingerprint: String,
    /// Workflow (copied from the trace, for grouping).
    pub workflow_id: Option<String>,
    /// Step where it happened.
    pub step_id: Option<String>,
    /// The trace's outcome (copied, for grouping).
    pub outcome: String,
    /// The finding, JSON.
    pub body: String,
}

/// A stored trace's body, for re-analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBody {
    /// The trace id: `<source>:<native id>`.
    pub trace_id: String,
    /// The source's version of the trace this body was stored from (see [`TraceRow::version`]).
    pub version: i64,
    /// The normalised trace, JSON.
    pub trace: String,
}

/// New findings (and digest) for a stored trace whose content did not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsUpdate {
    /// The trace this belongs to.
    pub trace_id: String,
    /// The new digest (trace and thresholds).
    pub digest: String,
    /// The findings, in order.
    pub findings: Vec<FindingRow>,
}

/// What storing a trace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutOutcome {
    /// It was new.
    Inserted,
    /// It replaced an older version.
    Updated,
    /// The same digest was stored already: nothing was written.
    Unchanged,
}

/// Which traces to list.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this workflow.
    pub workflow_id: Option<String>,
    /// Only traces that started at or after this time (ms); traces without a start time
    /// are excluded when set.
    pub since_ms: Option<i64>,
    /// Page size (default 100, at most 10,000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
}

/// Which findings to list.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    /// Only this trace.
    pub trace_id: Option<String>,
    /// Only this workflow.
    pub workflow_id: Option<String>,
    /// Only this step.
    pub step_id: Option<String>,
    /// Only this detector.
    pub detector: Option<String>,
    /// Only this fingerprint.
    pub fingerprint: Option<String>,
    /// Page size (default 100, at most 10,000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
}

/// Which recurring fingerprints to list.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// Distinct traces a fingerprint must appear in.
    pub min_sessions: u64,
    /// Only this workflow.
    pub workflow_id: Option<String>,
    /// Only this step.
    pub step_id: Option<String>,
    /// At most this many groups (default 1,000).
    pub limit: Option<u32>,
}

/// A fingerprint's recurrence at one workflow step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingGroup {
    /// The workflow the trace ran, when known.
    pub workflow_id: String,
    /// The workflow step the pattern recurs at.
    pub step_id: String,
    /// Stable fingerprint: the same pattern at the same step fingerprints alike across sessions.
    pub fingerprint: String,
    /// The detector that found it (e.g. `retry_loop`).
    pub detector: String,
    /// Distinct traces with it.
    pub sessions: u64,
    /// Of which with a failing outcome (`PARTIAL`, `BLOCKED`, `FAILED`).
    pub failing: u64,
    /// Of which with a known outcome (not `UNKNOWN`).
    pub known: u64,
}

/// Outcomes of the traces that visited one workflow step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcomes {
    /// Traces that visited it.
    pub sessions: u64,
    /// Of which failing.
    pub failing: u64,
    /// Of which with a known outcome.
    pub known: u64,
}

/// An improvement proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRow {
    /// Deterministic id (from workflow, step and fingerprint).
    pub proposal_id: String,
    /// The workflow the trace ran, when known.
    pub workflow_id: String,
    /// The workflow step the pattern recurs at.
    pub step_id: String,
    /// Stable fingerprint: the same pattern at the same step fingerprints alike across sessions.
    pub fingerprint: String,
    /// The detector that found it (e.g. `retry_loop`).
    pub detector: String,
    /// `open`, `applied` or `dismissed`.
    pub status: String,
    /// Confidence, 0 to 1.
    pub confidence: f64,
    /// Number of distinct sessions the pattern was seen in (the proposal's evidence).
    pub sessions: u64,
    /// The proposal, JSON.
    pub body: String,
    /// When the proposal was first stored (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When its evidence or status last changed (ms since the Unix epoch).
    pub updated_at_ms: i64,
}

/// Which proposals to list.
#[derive(Debug, Clone, Default)]
pub struct ProposalFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this workflow.
    pub workflow_id: Option<String>,
    /// Only this step.
    pub step_id: Option<String>,
    /// Page size (default 100, at most 10,000).
    pub limit: Option<u32>,
}

/// One change of a proposal's status (append-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalChange {
    /// The proposal this status change belongs to.
    pub proposal_id: String,
    /// Position in its history.
    pub ordinal: u32,
    /// Status after the change (`open`, `applied` or `dismissed`).
    pub status: String,
    /// Why (dismiss reason, where it was applied).
    pub note: Option<String>,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: i64,
}

/// A note on a trace (a post-mortem), append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRow {
    /// The trace this belongs to.
    pub trace_id: String,
    /// Position among the trace's notes (assigned by the store).
    pub ordinal: u32,
    /// Kind (`explanation`).
    pub kind: String,
    /// When it was recorded (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// Content, JSON.
    pub body: String,
}

/// The insights storage contract.
#[async_trait]
pub trait InsightsStore: Send + Sync {
    /// Store a trace with its findings and steps, replacing an older version, in one
    /// transaction. Returns [`PutOutcome::Unchanged`] (writing nothing) when the stored
    /// digest is equal.
    async fn put_trace(&self, row: &TraceRow) -> Result<PutOutcome, StoreError> {
        let mut out = self.put_traces(std::slice::from_ref(row)).await?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("put_traces returned nothing".into()))
    }

    /// [`InsightsStore::put_trace`] for many traces in one transaction (one commit for a
    /// whole batch: imports and re-analysis write thousands of traces).
    async fn put_traces(&self, rows: &[TraceRow]) -> Result<Vec<PutOutcome>, StoreError>;

    /// The stored version of a trace (see [`TraceRow::version`]) and its digest.
    async fn trace_version(&self, trace_id: &str) -> Result<Option<(i64, String)>, StoreError>;

    /// One trace with its findings.
    async fn trace(&self, trace_id: &str) -> Result<Option<TraceRow>, StoreError>;

    /// Traces without bodies, oldest start first (ties by id).
    async fn traces(&self, filter: &TraceFilter) -> Result<Vec<TraceHead>, StoreError>;

    /// Full traces (with findings), in the same order as [`InsightsStore::traces`].
    async fn trace_rows(&self, filter: &TraceFilter) -> Result<Vec<TraceRow>, StoreError>;

    /// Trace bodies, in the same order as [`InsightsStore::traces`] (re-analysis reads
    /// only these).
    async fn trace_bodies(&self, filter: &TraceFilter) -> Result<Vec<TraceBody>, StoreError>;

    /// Replace the findings and digest of stored traces (the traces themselves unchanged),
    /// in one transaction. Returns, per update, whether anything changed (`false`: same
    /// digest, or no such trace).
    async fn replace_findings(&self, updates: &[FindingsUpdate]) -> Result<Vec<bool>, StoreError>;

    /// Findings, by trace then position.
    async fn findings(&self, filter: &FindingFilter) -> Result<Vec<FindingRow>, StoreError>;

    /// Fingerprints found in at least `min_sessions` distinct traces of one workflow step
    /// (optionally of one workflow and step), most widespread first.
    async fn finding_groups(&self, filter: &GroupFilter) -> Result<Vec<FindingGroup>, StoreError>;

    /// Outcomes of the traces that visited a workflow step.
    async fn step_outcomes(
        &self,
        workflow_id: &str,
        step_id: &str,
    ) -> Result<StepOutcomes, StoreError>;

    /// Insert a proposal, or update its evidence (confidence, sessions, body) keeping its
    /// status and creation time. Returns whether it was new.
    async fn upsert_proposal(&self, row: &ProposalRow) -> Result<bool, StoreError>;

    /// The proposal with this id; `None` when there is none.
    async fn proposal(&self, proposal_id: &str) -> Result<Option<ProposalRow>, StoreError>;

    /// Proposals, highest confidence first (ties by id).
    async fn proposals(&self, filter: &ProposalFilter) -> Result<Vec<ProposalRow>, StoreError>;

    /// Change a proposal's status and append the change to its history, atomically.
    /// `None` when there is no such proposal.
    async fn set_proposal_status(
        &self,
        proposal_id: &str,
        status: &str,
        note: Option<&str>,
        at_ms: i64,
    ) -> Result<Option<ProposalChange>, StoreError>;

    /// A proposal's status history, oldest first.
    async fn proposal_history(&self, proposal_id: &str) -> Result<Vec<ProposalChange>, StoreError>;

    /// Append a note to a trace; returns it with its ordinal.
    async fn add_note(
        &self,
        trace_id: &str,
        kind: &str,
        body: &str,
        at_ms: i64,
    ) -> Result<NoteRow, StoreError>;

    /// A trace's notes, oldest first.
    async fn notes(&self, trace_id: &str) -> Result<Vec<NoteRow>, StoreError>;
}

/// What [`copy_all`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightsCopy {
    /// Traces written to the target (new or changed there).
    pub traces: u64,
    /// Proposals created in the target, with their whole status history.
    pub proposals: u64,
    /// Notes appended in the target.
    pub notes: u64,
}

/// Traces read per page while copying.
const COPY_PAGE: u32 = 1000;

/// Copy everything trace analysis stored from one store into another (moving a store to
/// another backend). Safe to run again: traces are written only when their digest differs,
/// proposals and notes already in the target are left as they are. Proposal decisions and
/// post-mortems — the parts nothing can rebuild — keep their order, times and notes.
pub async fn copy_all(
    from: &dyn InsightsStore,
    to: &dyn InsightsStore,
) -> Result<InsightsCopy, StoreError> {
    let mut report = InsightsCopy::default();
    let mut offset = 0u32;
    loop {
        let rows = from
            .trace_rows(&TraceFilter {
                limit: Some(COPY_PAGE),
                offset: Some(offset),
                ..TraceFilter::default()
            })
            .await?;
        if rows.is_empty() {
            break;
        }
        let outcomes = to.put_traces(&rows).await?;
        report.traces += outcomes
            .iter()
            .filter(|o| !matches!(o, PutOutcome::Unchanged))
            .count() as u64;
        for row in &rows {
            if !to.notes(&row.trace_id).await?.is_empty() {
                continue;
            }
            for note in from.notes(&row.trace_id).await? {
                to.add_note(&row.trace_id, &note.kind, &note.body, note.created_at_ms)
                    .await?;
                report.notes += 1;
            }
        }
        offset = offset.saturating_add(u32::try_from(rows.len()).unwrap_or(u32::MAX));
    }
    const MAX_PROPOSALS: u32 = 10_000;
    let proposals = from
        .proposals(&ProposalFilter {
            limit: Some(MAX_PROPOSALS),
            ..ProposalFilter::default()
        })
        .await?;
    if proposals.len() >= MAX_PROPOSALS as usize {
        return Err(StoreError::Corrupt(format!(
            "more than {MAX_PROPOSALS} proposals: copying them is not supported; dismiss or delete old ones first"
        )));
    }
    for p in proposals {
        if to.proposal(&p.proposal_id).await?.is_some() {
            continue;
        }
        let history = from.proposal_history(&p.proposal_id).await?;
        // Created with its first status at its creation time, then each later change
        // replayed, then its latest evidence.
        let first = history.first();
        let created = ProposalRow {
            status: first.map_or_else(|| p.status.clone(), |h| h.status.clone()),
            updated_at_ms: first.map_or(p.created_at_ms, |h| h.at_ms),
            ..p.clone()
        };
        to.upsert_proposal(&created).await?;
        for change in history.iter().skip(1) {
            to.set_proposal_status(
                &p.proposal_id,
                &change.status,
                change.note.as_deref(),
                change.at_ms,
            )
            .await?;
        }
        to.upsert_proposal(&p).await?;
        report.proposals += 1;
    }
    Ok(report)
}
