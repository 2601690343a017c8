//! What the API returns about sessions: records (the summary plus queue position and
//! liveness) and await results (outcome, final notes, artifacts, handoff).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use worktrain_core::error::ApiError;
use worktrain_core::event::EventBody;
use worktrain_core::ids::{Seq, SessionId};
use worktrain_core::projection::{NodeRecord, NodeStatus, QueueRow, SessionStatus, SessionSummary};
use worktrain_core::run::{FailureReason, RunState};
use worktrain_engine::{current_path, store_error};

use crate::supervisor::Supervisor;

/// Artifacts larger than this are left out of await results (the session log has them).
pub const ARTIFACT_INLINE_LIMIT: usize = 256 * 1024;

/// A session as the API shows it: the summary's fields, plus where it waits and how
/// recently its agent showed signs of life.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The session summary projection.
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// 1-based position among queued runs (claim order), when queued.
    pub queue_position: Option<usize>,
    /// The agent's last heartbeat (ms since the epoch), when running in this daemon.
    pub last_heartbeat_ms: Option<i64>,
}

/// Positions of queued runs, 1-based, in claim order.
pub fn queue_positions(queue: &[QueueRow]) -> HashMap<SessionId, usize> {
    queue
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .enumerate()
        .map(|(i, r)| (r.session_id, i + 1))
        .collect()
}

/// Build a record.
pub fn record(
    sup: &Supervisor,
    summary: SessionSummary,
    positions: &HashMap<SessionId, usize>,
) -> SessionRecord {
    let id = summary.session_id;
    let queued = summary
        .run
        .as_ref()
        .is_some_and(|r| r.state == RunState::Queued);
    let last_heartbeat_ms = sup
        .running()
        .into_iter()
        .find(|l| l.session_id == id)
        .map(|l| l.last_heartbeat_ms);
    SessionRecord {
        queue_position: if queued {
            positions.get(&id).copied()
        } else {
            None
        },
        last_heartbeat_ms,
        summary,
    }
}

/// Load one session's record.
pub async fn load_record(sup: &Supervisor, id: SessionId) -> Result<SessionRecord, ApiError> {
    let summary = sup.engine().session(id).await?;
    let queue = sup.engine().store().queue().await.map_err(store_error)?;
    Ok(record(sup, summary, &queue_positions(&queue)))
}

/// Whether a session has reached an outcome an awaiting coordinator can act on: its run
/// ended (completed, failed, cancelled), or — for a session never dispatched to the
/// daemon — its workflow completed. Parked and interrupted runs are not finished.
pub fn is_finished(s: &SessionSummary) -> bool {
    match &s.run {
        Some(r) => r.state.is_final(),
        None => s.status == SessionStatus::Complete,
    }
}

/// One session's result for `POST /await` and `worktrain await`.
#[derive(Debug, Clone, Serialize)]
pub struct AwaitResult {
    /// The session this record describes.
    pub session_id: SessionId,
    /// Whether the session finished (see [`is_finished`]).
    pub finished: bool,
    /// True when the run completed the workflow.
    pub succeeded: bool,
    /// Run state (`queued`, `running`, `parked`, …, `completed`, `failed`, `cancelled`);
    /// `null` for a session that never ran under the daemon.
    pub outcome: Option<RunState>,
    /// Where the session's workflow stands (in progress, blocked, parked, complete).
    pub status: SessionStatus,
    /// Id of the workflow the session runs.
    pub workflow_id: String,
    /// What the session should achieve.
    pub goal: String,
    /// Steps whose output was accepted (loop passes and rewinds count again).
    pub steps_completed: u32,
    /// The current step, when not complete.
    pub current_step: Option<String>,
    /// Why the run failed.
    pub failure: Option<FailureReason>,
    /// Details of the failure or cancellation.
    pub detail: Option<String>,
    /// Notes of the last completed step on the current path.
    pub notes: Option<String>,
    /// The latest artifact of each kind from completed steps on the current path
    /// (artifacts over [`ARTIFACT_INLINE_LIMIT`] are left out).
    pub artifacts: BTreeMap<String, Value>,
    /// The `handoff` artifact, when a step produced one.
    pub handoff: Option<Value>,
    /// The session branch that holds the work (`worktrain/<session>`), while it exists.
    pub branch: Option<String>,
    /// The commit on `branch` with the session's work (`null`: the session changed
    /// nothing, or its run has not completed).
    pub commit: Option<String>,
    /// The session's worktree directory, while it exists.
    pub worktree: Option<String>,
    /// The pull/merge request URL once delivery opened one.
    pub pr_url: Option<String>,
    /// Where the delivery stands (stages done, the failed stage and the forge's message),
    /// once it began.
    pub delivery: Option<worktrain_core::projection::DeliveryInfo>,
    /// The session context.
    pub context: serde_json::Map<String, Value>,
}

/// Build a session's await result; notes and artifacts are read only for finished
/// sessions (the step graph plus one event per completed step on the current path).
pub async fn await_result(
    sup: &Supervisor,
    summary: SessionSummary,
) -> Result<AwaitResult, ApiError> {
    let finished = is_finished(&summary);
    let mut notes = None;
    let mut artifacts = BTreeMap::new();
    if finished {
        let nodes = sup
            .engine()
            .store()
            .nodes(summary.session_id)
            .await
            .map_err(store_error)?;
        let path: Vec<&NodeRecord> = current_path(&summary, &nodes)
            .into_iter()
            .filter(|n| n.status == NodeStatus::Completed)
            .collect();
        notes = path.last().and_then(|n| n.notes.clone());
        for n in path {
            let Some(closed) = n.closed_seq else { continue };
            let events = sup
                .engine()
                .store()
                .events(summary.session_id, Seq(closed.0.saturating_sub(1)), 1)
                .await
                .map_err(store_error)?;
            let Some(EventBody::StepCompleted {
                artifacts: refs, ..
            }) = events.into_iter().next().map(|e| e.body)
            else {
                continue;
            };
            for a in refs {
                if usize::try_from(a.size).unwrap_or(usize::MAX) > ARTIFACT_INLINE_LIMIT {
                    continue;
                }
                let Some(bytes) = sup
                    .engine()
                    .store()
                    .blob(a.hash)
                    .await
                    .map_err(store_error)?
                else {
                    continue;
                };
                let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                let kind = a
                    .kind
                    .clone()
                    .or_else(|| value.get("kind").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "artifact".to_owned());
                artifacts.insert(kind, value);
            }
        }
    }
    let run = summary.run.as_ref();
    Ok(AwaitResult {
        session_id: summary.session_id,
        finished,
        succeeded: match run {
            Some(r) => r.state == RunState::Completed,
            None => summary.status == SessionStatus::Complete,
        },
        outcome: run.map(|r| r.state),
        status: summary.status,
        workflow_id: summary.workflow_id.to_string(),
        goal: summary.goal.clone(),
        steps_completed: summary.steps_completed,
        current_step: summary.current.as_ref().map(|c| c.step_id.to_string()),
        failure: run.and_then(|r| r.failure),
        detail: run.and_then(|r| r.detail.clone()),
        notes,
        handoff: artifacts.get("handoff").cloned(),
        artifacts,
        branch: run.and_then(|r| r.branch.clone()),
        commit: run.and_then(|r| r.commit.clone()),
        worktree: run.and_then(|r| r.worktree.clone()),
        pr_url: run
            .and_then(|r| r.delivery.as_ref())
            .and_then(|d| d.pr_url.clone()),
        delivery: run.and_then(|r| r.delivery.clone()),
        context: summary.context.clone(),
    })
}
