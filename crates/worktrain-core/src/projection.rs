//! Projections: the read models derived from events. [`apply`] is the one fold used
//! both when appending (incrementally, in the append's transaction) and when rebuilding
//! from the log, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::activity::AgentActivity;
use crate::compile::{Pc, StepIndex};
use crate::context::merge;
use crate::cursor::Cursor;
use crate::event::{Blocker, BlockerCode, EntryCause, EventBody, SessionMode, StoredEvent};
use crate::event::{SecretFinding, StageOutcome};
use crate::run::{
    DeliveryStage, DeliveryState, DeliveryTarget, FailureReason, RequeueReason, RunEnd, RunLimits,
    RunState, Trigger,
};
use crate::workflow::GateKind;

/// The daemon-run side of a session (absent for interactive sessions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Where the run stands.
    pub state: RunState,
    /// Name of the agent profile that drives the run (from the daemon's agent profiles).
    pub agent: String,
    /// What started it.
    pub trigger: Trigger,
    /// Budget overrides of the run (each one left out uses the daemon's default).
    #[serde(default)]
    pub limits: RunLimits,
    /// Queue priority: higher runs first; runs of equal priority run in queue order.
    #[serde(default)]
    pub priority: i32,
    /// Review-style run.
    #[serde(default)]
    pub readonly: bool,
    /// Git ref the worktree starts from; `None` uses the repository's configured base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Run attempts started.
    pub run: u32,
    /// Worker holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Path of the run's git worktree, while it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// The session branch, while it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The last commit of the session's work on `branch` (`work_committed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The session was rewound after its worktree last changed: the files must be put
    /// back to the re-entered step's snapshot before an agent works in it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_pending: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReason>,
    /// Human-readable detail of the failure or end (e.g. the error message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Interruptions so far.
    #[serde(default)]
    pub interruptions: u32,
    /// Why the run was last queued again (absent until it is): the next attempt's agent
    /// is told it was interrupted only after a `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_reason: Option<RequeueReason>,
    /// Cancellation requested and not yet honoured.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Operator messages not yet delivered to the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_steers: Vec<String>,
    /// When it was (last) queued.
    pub queued_at_ms: i64,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// The delivery of the finished work, once it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryInfo>,
}

/// Where the delivery of a session's work stands (folded from the `delivery_*` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// Where the work goes.
    pub target: DeliveryTarget,
    /// Running, delivered or failed.
    pub state: DeliveryState,
    /// Delivery attempts started (1 for the first; `worktrain session retry-delivery` adds one).
    pub attempt: u32,
    /// Stages done (never run again), with their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<(DeliveryStage, StageOutcome)>,
    /// The last failure, while the delivery is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<DeliveryFailure>,
    /// The pull/merge request, once opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// Number of the pull/merge request on its forge, once opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    /// Secret scan findings (file and line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<SecretFinding>,
}

impl DeliveryInfo {
    /// The recorded result of `stage`, when it is done.
    pub fn outcome(&self, stage: DeliveryStage) -> Option<&StageOutcome> {
        self.done.iter().find(|(s, _)| *s == stage).map(|(_, o)| o)
    }
}

/// A failed delivery stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// The delivery stage that failed.
    pub stage: DeliveryStage,
    /// What went wrong.
    pub message: String,
    /// Whether a later retry can succeed as things are.
    pub retryable: bool,
    /// What to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Agent activity counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    /// LLM turns.
    pub turns: u64,
    /// Uncached input tokens, summed over LLM turns (`usage.input_tokens`).
    pub input_tokens: u64,
    /// Output tokens, summed over LLM turns (`usage.output_tokens`).
    pub output_tokens: u64,
    /// Prompt-cache tokens of both directions, summed over LLM turns
    /// (`usage.cache_read_input_tokens + usage.cache_creation_input_tokens`).
    pub cache_tokens: u64,
    /// Cost in USD, summed over the LLM turns whose model has a price (0 when none has).
    pub cost_usd: f64,
    /// Tool calls made by the agent, whatever their result (see `tool_errors`).
    pub tool_calls: u64,
    /// Tool calls that failed or were denied.
    pub tool_errors: u64,
}

/// A row of the run queue projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRow {
    /// The session this belongs to.
    pub session_id: SessionId,
    /// State (queued or running; finished runs leave the queue).
    pub state: RunState,
    /// Priority (higher first).
    pub priority: i32,
    /// Workspace, for per-workspace caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Trigger id, for per-trigger caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Name of the agent profile that drives the run.
    pub agent: String,
    /// Queue order: when it was (re)queued.
    pub queued_at_ms: i64,
    /// Worker holding it, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}
use crate::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, StepId, WorkflowId};

/// Lifecycle state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for the current step's output.
    InProgress,
    /// The last submission for the current step was blocked.
    Blocked,
    /// A gated step's output waits for approval (autonomous sessions).
    Parked,
    /// The workflow reached its end.
    Complete,
}

impl SessionStatus {
    /// Every status, for filters.
    pub const ALL: [SessionStatus; 4] = [
        SessionStatus::InProgress,
        SessionStatus::Blocked,
        SessionStatus::Parked,
        SessionStatus::Complete,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::InProgress => "in_progress",
            SessionStatus::Blocked => "blocked",
            SessionStatus::Parked => "parked",
            SessionStatus::Complete => "complete",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentStep {
    /// The node (one visit of a step in the session's step graph) this is about.
    pub node: NodeId,
    /// Id of the step the node visits.
    pub step_id: StepId,
    /// Step index in the pinned workflow.
    pub step: StepIndex,
    /// Program position of the step's instruction in the pinned workflow.
    pub pc: Pc,
    /// Attempt expected next.
    pub attempt: Attempt,
    /// Whether the step asks for confirmation (decided on entry).
    #[serde(default)]
    pub requires_confirmation: bool,
    /// Why the last submission was blocked or rejected (shown again on rehydrate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// The gate the step is parked at, when parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<GateKind>,
}

/// The session summary projection: everything needed to answer "what is the state of
/// session X" and to decide the next advance, in one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session this belongs to.
    pub session_id: SessionId,
    /// Id of the workflow the session runs (pinned by `workflow_hash`).
    pub workflow_id: WorkflowId,
    /// Pinned workflow hash.
    pub workflow_hash: Sha256Hash,
    /// Workflow version string.
    pub workflow_version: String,
    /// Where the workflow came from.
    pub workflow_source: String,
    /// What the session should achieve, as the dispatcher wrote it.
    pub goal: String,
    /// The directory the session works in (absolute), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Git branch of the workspace at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Interactive or autonomous.
    #[serde(default)]
    pub mode: SessionMode,
    /// The session that spawned this one; `None` for a top-level session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SessionId>,
    /// Where the session or node stands now.
    pub status: SessionStatus,
    /// Position in the pinned program.
    #[serde(default)]
    pub cursor: Cursor,
    /// Current step (none when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentStep>,
    /// Session context: the start context with every accepted step's and checkpoint's
    /// context changes merged in.
    pub context: Map<String, Value>,
    /// Last event's sequence number.
    pub last_seq: Seq,
    /// Last event's chain hash.
    pub last_hash: Sha256Hash,
    /// Nodes created so far.
    pub nodes: u32,
    /// Steps whose output was accepted (each loop pass or rewind counts again).
    pub steps_completed: u32,
    /// Steps skipped by their run condition.
    pub steps_skipped: u32,
    /// Guarded blocks (loops, routine includes) skipped by their run condition.
    #[serde(default)]
    pub blocks_skipped: u32,
    /// Submissions the engine blocked (returned with blockers).
    pub blocked_attempts: u32,
    /// Checkpoints recorded (progress saved without advancing).
    pub checkpoints: u32,
    /// How many times the session was rewound.
    pub rewinds: u32,
    /// Loop passes started.
    #[serde(default)]
    pub loop_passes: u32,
    /// `jumpIf` jumps taken, over all steps.
    #[serde(default)]
    pub jumps: u32,
    /// The daemon run, for sessions dispatched to the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    /// Agent activity counters.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Content hash of the last checkpoint on the current node (a repeat of it is a replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Sha256Hash>,
    /// First event time (ms).
    pub created_at_ms: i64,
    /// Last event time (ms).
    pub updated_at_ms: i64,
}

/// State of a node in the step graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// The current node.
    Active,
    /// Its step's output was accepted; the session moved on.
    Completed,
    /// Left behind by a rewind (a dead branch).
    Abandoned,
}

impl NodeStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "active",
            NodeStatus::Completed => "completed",
            NodeStatus::Abandoned => "abandoned",
        }
    }
}

/// One node of the step graph projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node (one visit of a step in the session's step graph) this is about.
    pub node: NodeId,
    /// Id of the step the node visits.
    pub step_id: StepId,
    /// Index of the step in the pinned workflow's step table.
    pub step: StepIndex,
    /// Program position of the step's instruction.
    pub pc: Pc,
    /// The node this one follows in the step graph; `None` for the first node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<NodeId>,
    /// Why it was entered.
    pub cause: EntryCause,
    /// Where the session or node stands now.
    pub status: NodeStatus,
    /// Attempts submitted (blocked + completed).
    pub attempts: u16,
    /// Accepted notes, when completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Event that created the node.
    pub entered_seq: Seq,
    /// Event that completed or abandoned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_seq: Option<Seq>,
    /// The program position when the node was entered (restored by a rewind to it).
    #[serde(default)]
    pub cursor: Cursor,
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The output was accepted and the step completed.
    Completed,
    /// The output was refused with blockers; the agent retries with a new attempt.
    Blocked,
    /// Parked at a gate.
    Parked,
    /// Parked, then rejected.
    Rejected,
}

impl AttemptOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Blocked => "blocked",
            AttemptOutcome::Parked => "parked",
            AttemptOutcome::Rejected => "rejected",
        }
    }
}

/// The record of one submitted attempt: what replay and conflict detection look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The node (one visit of a step in the session's step graph) this is about.
    pub node: NodeId,
    /// Which attempt at the node (1-based; each blocked submission starts the next).
    pub attempt: Attempt,
    /// What became of the attempt: completed, blocked or parked.
    pub outcome: AttemptOutcome,
    /// Hash of the submitted output.
    pub output_hash: Sha256Hash,
    /// Blob hash of the recorded response.
    pub response: Sha256Hash,
    /// Event that recorded it.
    pub seq: Seq,
}

/// A change to the step-graph projections produced by one event.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectionChange {
    /// A node was created.
    InsertNode(NodeRecord),
    /// A node was completed or abandoned.
    CloseNode {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Status the node closes with ([`NodeStatus::Completed`] or [`NodeStatus::Abandoned`]).
        status: NodeStatus,
        /// Notes, when completed.
        notes: Option<String>,
        /// Sequence number of the event that closed the node.
        closed_seq: Seq,
    },
    /// A node's attempt counter changed.
    SetNodeAttempts {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Attempts so far.
        attempts: u16,
    },
    /// An attempt was recorded, or its outcome changed (parked → completed).
    UpsertAttempt(AttemptRecord),
    /// The session's row in the run queue was added or changed.
    UpsertQueue(QueueRow),
    /// The session left the run queue (its run ended or parked).
    RemoveQueue,
    /// A parked attempt was rejected.
    RejectAttempt {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Which attempt at the node (1-based; each blocked submission starts the next).
        attempt: Attempt,
        /// Blob hash of the rejection response.
        response: Sha256Hash,
    },
}

/// An event that cannot follow the state it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} ({kind}) cannot be applied: {reason}")]
pub struct ProjectionError {
    /// Sequence number of the offending event within its session.
    pub seq: Seq,
    /// Event kind (the `type` tag, e.g. `step_completed`).
    pub kind: &'static str,
    /// Why the event cannot be applied to this state.
    pub reason: String,
}

/// Fold one event into the summary, returning the step-graph changes.
pub fn apply(
    summary: Option<SessionSummary>,
    event: &StoredEvent,
) -> Result<(SessionSummary, Vec<ProjectionChange>), ProjectionError> {
    let err = |reason: &str| ProjectionError {
        seq: event.seq,
        kind: event.body.kind().as_str(),
        reason: reason.to_owned(),
    };
    let mut changes = Vec::new();
    let mut s = match (&event.body, summary) {
        (
            EventBody::SessionStarted {
                workflow_id,
                workflow_hash,
                workflow_version,
                workflow_source,
                goal,
                workspace,
                branch,
                context,
                mode,
                parent,
            },
            None,
        ) => {
            if event.seq != Seq(1) {
                return Err(err("session_started must be the first event (seq 1)"));
            }
            SessionSummary {
                session_id: event.session_id,
                workflow_id: workflow_id.clone(),
                workflow_hash: *workflow_hash,
                workflow_version: workflow_version.clone(),
                workflow_source: workflow_source.clone(),
                goal: goal.clone(),
                workspace: workspace.clone(),
                branch: branch.clone(),
                mode: *mode,
                parent: *parent,
                status: SessionStatus::InProgress,
                cursor: Cursor::default(),
                current: None,
                context: context.clone(),
                last_seq: Seq(0),
                last_hash: event.hash,
                nodes: 0,
                steps_completed: 0,
                steps_skipped: 0,
                blocks_skipped: 0,
                blocked_attempts: 0,
                checkpoints: 0,
                rewinds: 0,
                loop_passes: 0,
                jumps: 0,
                run: None,
                telemetry: Telemetry::default(),
                last_checkpoint: None,
                created_at_ms: event.created_at_ms,
                updated_at_ms: event.created_at_ms,
            }
        }
        (EventBody::SessionStarted { .. }, Some(_)) => return Err(err("session already started")),
        (_, None) => return Err(err("the first event of a session must be session_started")),
        (_, Some(s)) => s,
    };
    if event.seq.0 != s.last_seq.0 + 1 {
        return Err(err("sequence numbers must be contiguous"));
    }
    let current_pc = s.current.as_ref().map(|c| c.pc);
    s.cursor
        .apply(&event.body, current_pc)
        .map_err(|e| err(&e.0))?;
    match &event.body {
        EventBody::SessionStarted { .. } => {}
        EventBody::NodeEntered {
            node,
            step_id,
            step,
            pc,
            parent,
            cause,
            requires_confirmation,
        } => {
            if node.0 != s.nodes + 1 {
                return Err(err("node numbers must be contiguous"));
            }
            s.nodes = node.0;
            s.status = SessionStatus::InProgress;
            s.last_checkpoint = None;
            s.current = Some(CurrentStep {
                node: *node,
                step_id: step_id.clone(),
                step: *step,
                pc: *pc,
                attempt: Attempt(1),
                requires_confirmation: *requires_confirmation,
                blockers: Vec::new(),
                parked: None,
            });
            changes.push(ProjectionChange::InsertNode(NodeRecord {
                node: *node,
                step_id: step_id.clone(),
                step: *step,
                pc: *pc,
                parent: *parent,
                cause: *cause,
                status: NodeStatus::Active,
                attempts: 0,
                notes: None,
                entered_seq: event.seq,
                closed_seq: None,
                cursor: s.cursor.clone(),
            }));
        }
        EventBody::StepSkipped { .. } => s.steps_skipped += 1,
        EventBody::BlockSkipped { .. } => s.blocks_skipped += 1,
        EventBody::StepBlocked {
            node,
            attempt,
            output_hash,
            response,
            blockers,
        } => {
            let cur = s.current.as_mut().ok_or_else(|| err("no current step"))?;
            if cur.node != *node || cur.attempt != *attempt {
                return Err(err("blocked attempt is not the current one"));
            }
            cur.attempt = Attempt(attempt.0.saturating_add(1));
            cur.blockers = blockers.clone();
            s.status = SessionStatus::Blocked;
            s.blocked_attempts += 1;
            changes.push(attempt_change(
                *node,
                *attempt,
                AttemptOutcome::Blocked,
                *output_hash,
                *response,
                event.seq,
            ));
        }
        EventBody::StepParked {
            node,
            attempt,
            output_hash,
            response,
            gate,
            ..
        } => {
            let cur = s.current.as_mut().ok_or_else(|| err("no current step"))?;
            if cur.node != *node || cur.attempt != *attempt {
                return Err(err("parked attempt is not the current one"));
            }
            cur.parked = Some(*gate);
            cur.blockers = Vec::new();
            s.status = SessionStatus::Parked;
            changes.push(attempt_change(
                *node,
                *attempt,
                AttemptOutcome::Parked,
                *output_hash,
                *response,
                event.seq,
            ));
        }
        EventBody::GateApproved { node, .. } => {
            let cur = s.current.as_ref().ok_or_else(|| err("no current step"))?;
            if cur.node != *node || cur.parked.is_none() {
                return Err(err("approval for a step that is not parked"));
            }
        }
        EventBody::GateRejected {
            node,
            attempt,
            note,
            response,
        } => {
            let cur = s.current.as_mut().ok_or_else(|| err("no current step"))?;
            if cur.node != *node || cur.attempt != *attempt || cur.parked.is_none() {
                return Err(err("rejection for a step that is not parked"));
            }
            cur.parked = None;
            cur.attempt = Attempt(attempt.0.saturating_add(1));
            cur.blockers = vec![Blocker {
                code: BlockerCode::Rejected,
                message: format!("the reviewer rejected this output: {note}"),
                path: None,
                example: None,
            }];
            s.status = SessionStatus::Blocked;
            s.blocked_attempts += 1;
            // The parked attempt keeps its output hash; its outcome becomes rejected.
            changes.push(ProjectionChange::RejectAttempt {
                node: *node,
                attempt: *attempt,
                response: *response,
            });
        }
        EventBody::StepCompleted {
            node,
            attempt,
            output_hash,
            notes,
            context_delta,
            response,
            ..
        } => {
            let cur = s.current.as_ref().ok_or_else(|| err("no current step"))?;
            if cur.node != *node || cur.attempt != *attempt {
                return Err(err("completed attempt is not the current one"));
            }
            merge(&mut s.context, context_delta);
            s.steps_completed += 1;
            s.status = SessionStatus::InProgress;
            if let Some(c) = s.current.as_mut() {
                c.parked = None;
            }
            changes.push(attempt_change(
                *node,
                *attempt,
                AttemptOutcome::Completed,
                *output_hash,
                *response,
                event.seq,
            ));
            changes.push(ProjectionChange::CloseNode {
                node: *node,
                status: NodeStatus::Completed,
                notes: Some(notes.clone()),
                closed_seq: event.seq,
            });
        }
        EventBody::CheckpointRecorded {
            node,
            context_delta,
            checkpoint_hash,
            ..
        } => {
            s.last_checkpoint = Some(*checkpoint_hash);
            if s.current.as_ref().map(|c| c.node) != Some(*node) {
                return Err(err("checkpoint is not for the current node"));
            }
            merge(&mut s.context, context_delta);
            s.checkpoints += 1;
        }
        EventBody::LoopEntered { .. }
        | EventBody::LoopExited { .. }
        | EventBody::JumpExhausted { .. } => {}
        EventBody::LoopPassStarted { .. } => s.loop_passes += 1,
        EventBody::JumpTaken { .. } => s.jumps += 1,
        EventBody::SessionRewound { from_node, .. } => {
            if let Some(from) = from_node {
                // The node left behind is abandoned unless it had completed.
                let open = s.current.as_ref().is_some_and(|c| c.node == *from);
                if open {
                    changes.push(ProjectionChange::CloseNode {
                        node: *from,
                        status: NodeStatus::Abandoned,
                        notes: None,
                        closed_seq: event.seq,
                    });
                }
            }
            s.rewinds += 1;
            s.current = None;
            if let Some(r) = s.run.as_mut().filter(|r| r.branch.is_some()) {
                r.restore_pending = true;
            }
        }
        EventBody::SessionCompleted { .. } => {
            s.status = SessionStatus::Complete;
            s.current = None;
        }
        EventBody::RunQueued {
            agent,
            trigger,
            limits,
            priority,
            readonly,
            base,
            ..
        } => {
            if s.run.is_some() {
                return Err(err("the session already has a run"));
            }
            s.run = Some(RunInfo {
                state: RunState::Queued,
                agent: agent.clone(),
                trigger: trigger.clone(),
                limits: limits.clone(),
                priority: *priority,
                readonly: *readonly,
                base: base.clone(),
                run: 0,
                worker: None,
                worktree: None,
                branch: None,
                commit: None,
                restore_pending: false,
                failure: None,
                detail: None,
                interruptions: 0,
                requeue_reason: None,
                cancel_requested: false,
                pending_steers: Vec::new(),
                queued_at_ms: event.created_at_ms,
                started_at_ms: None,
                finished_at_ms: None,
                delivery: None,
            });
            changes.push(ProjectionChange::UpsertQueue(queue_row(&s)));
        }
        EventBody::RunStarted {
            run,
            worker,
            worktree,
            branch,
        } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            if r.state != RunState::Queued {
                return Err(err("only a queued run can start"));
            }
            r.state = RunState::Running;
            r.run = *run;
            r.worker = Some(worker.clone());
            r.worktree = worktree.clone().or(r.worktree.take());
            r.branch = branch.clone().or(r.branch.take());
            r.started_at_ms = Some(event.created_at_ms);
            r.failure = None;
            r.detail = None;
            changes.push(ProjectionChange::UpsertQueue(queue_row(&s)));
        }
        EventBody::RunInterrupted { .. } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            r.state = RunState::Interrupted;
            r.worker = None;
            r.interruptions += 1;
            // Interrupted runs stay visible in the queue until recovery decides.
            changes.push(ProjectionChange::UpsertQueue(queue_row(&s)));
        }
        EventBody::RunRequeued { reason } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            match reason {
                RequeueReason::Retry => {
                    r.failure = None;
                    r.detail = None;
                    r.cancel_requested = false;
                    r.interruptions = 0;
                }
                RequeueReason::Delivery => {
                    r.failure = None;
                    r.detail = None;
                    r.cancel_requested = false;
                }
                RequeueReason::Resume | RequeueReason::GateDecided => {}
            }
            r.state = RunState::Queued;
            r.requeue_reason = Some(*reason);
            r.worker = None;
            r.finished_at_ms = None;
            r.queued_at_ms = event.created_at_ms;
            changes.push(ProjectionChange::UpsertQueue(queue_row(&s)));
        }
        EventBody::RunFinished {
            end,
            reason,
            detail,
            ..
        } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            r.state = match end {
                RunEnd::Completed => RunState::Completed,
                RunEnd::Failed => RunState::Failed,
                RunEnd::Cancelled => RunState::Cancelled,
                RunEnd::Parked => RunState::Parked,
            };
            r.failure = *reason;
            r.detail = detail.clone();
            r.worker = None;
            r.cancel_requested = false;
            r.finished_at_ms = Some(event.created_at_ms);
            changes.push(ProjectionChange::RemoveQueue);
        }
        EventBody::CancelRequested { .. } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            r.cancel_requested = true;
        }
        EventBody::Steered { message } => {
            if let Some(r) = s.run.as_mut() {
                r.pending_steers.push(message.clone());
            }
        }
        EventBody::AgentActivity { activity } => match activity {
            AgentActivity::LlmTurn(t) => {
                s.telemetry.turns += 1;
                s.telemetry.input_tokens += t.usage.input_tokens;
                s.telemetry.output_tokens += t.usage.output_tokens;
                s.telemetry.cache_tokens += t.usage.cache();
                s.telemetry.cost_usd += t.cost_usd.unwrap_or(0.0);
            }
            AgentActivity::ToolCall(c) => {
                s.telemetry.tool_calls += 1;
                if c.error.is_some() {
                    s.telemetry.tool_errors += 1;
                }
            }
            AgentActivity::SteeringDelivered { .. } => {
                if let Some(r) = s.run.as_mut() {
                    r.pending_steers.clear();
                }
            }
            AgentActivity::RunStarted { .. }
            | AgentActivity::Nudged { .. }
            | AgentActivity::IssueReported { .. }
            | AgentActivity::StepSubmitted { .. }
            | AgentActivity::ProcessStarted { .. }
            | AgentActivity::Output { .. }
            | AgentActivity::ProcessExited { .. } => {}
        },
        EventBody::StepSnapshotted { .. }
        | EventBody::HookRan { .. }
        | EventBody::SourceIneligible { .. }
        // Notifications are a record for the operator; they change no state.
        | EventBody::NotificationSent { .. }
        | EventBody::NotificationFailed { .. }
        | EventBody::PostMortemRecorded { .. } => {}
        EventBody::WorktreeRestored { .. } => {
            if let Some(r) = s.run.as_mut() {
                r.restore_pending = false;
            }
        }
        EventBody::WorkCommitted { branch, commit, .. } => {
            if let Some(r) = s.run.as_mut() {
                r.branch = Some(branch.clone());
                r.commit = Some(commit.clone());
            }
        }
        EventBody::DeliveryStarted { target, attempt } => {
            let r = s.run.as_mut().ok_or_else(|| err("no run"))?;
            let d = r.delivery.get_or_insert_with(|| DeliveryInfo {
                target: *target,
                state: DeliveryState::Running,
                attempt: 0,
                done: Vec::new(),
                failure: None,
                pr_url: None,
                pr_number: None,
                findings: Vec::new(),
            });
            d.target = *target;
            d.state = DeliveryState::Running;
            d.attempt = *attempt;
            d.failure = None;
        }
        EventBody::DeliveryStageCompleted { stage, outcome } => {
            let d = s
                .run
                .as_mut()
                .and_then(|r| r.delivery.as_mut())
                .ok_or_else(|| err("no delivery"))?;
            if *stage == DeliveryStage::PullRequest {
                d.pr_url = outcome.url.clone();
                d.pr_number = outcome.number;
            }
            if !outcome.findings.is_empty() {
                d.findings = outcome.findings.clone();
            }
            d.done.retain(|(s, _)| s != stage);
            d.done.push((*stage, outcome.clone()));
        }
        EventBody::DeliveryFailed {
            stage,
            message,
            retryable,
            hint,
        } => {
            let d = s
                .run
                .as_mut()
                .and_then(|r| r.delivery.as_mut())
                .ok_or_else(|| err("no delivery"))?;
            d.state = DeliveryState::Failed;
            d.failure = Some(DeliveryFailure {
                stage: *stage,
                message: message.clone(),
                retryable: *retryable,
                hint: hint.clone(),
            });
        }
        EventBody::DeliveryFinished { .. } => {
            let d = s
                .run
                .as_mut()
                .and_then(|r| r.delivery.as_mut())
                .ok_or_else(|| err("no delivery"))?;
            d.state = DeliveryState::Delivered;
            d.failure = None;
        }
        EventBody::WorktreeRemoved { branch, .. } => {
            if let Some(r) = s.run.as_mut() {
                r.worktree = None;
                r.branch = branch.clone();
            }
        }
    }
    if let Some(ProjectionChange::UpsertAttempt(a)) = changes
        .iter()
        .find(|c| matches!(c, ProjectionChange::UpsertAttempt(_)))
    {
        changes.push(ProjectionChange::SetNodeAttempts {
            node: a.node,
            attempts: a.attempt.0,
        });
    }
    s.last_seq = event.seq;
    s.last_hash = event.hash;
    s.updated_at_ms = event.created_at_ms;
    Ok((s, changes))
}

fn attempt_change(
    node: NodeId,
    attempt: Attempt,
    outcome: AttemptOutcome,
    output_hash: Sha256Hash,
    response: Sha256Hash,
    seq: Seq,
) -> ProjectionChange {
    ProjectionChange::UpsertAttempt(AttemptRecord {
        node,
        attempt,
        outcome,
        output_hash,
        response,
        seq,
    })
}

fn queue_row(s: &SessionSummary) -> QueueRow {
    let r = s.run.as_ref();
    QueueRow {
        session_id: s.session_id,
        state: r.map(|r| r.state).unwrap_or(RunState::Queued),
        priority: r.map(|r| r.priority).unwrap_or(0),
        workspace: s.workspace.clone(),
        trigger: r.and_then(|r| r.trigger.id.clone()),
        agent: r.map(|r| r.agent.clone()).unwrap_or_default(),
        queued_at_ms: r.map(|r| r.queued_at_ms).unwrap_or(s.created_at_ms),
        worker: r.and_then(|r| r.worker.clone()),
    }
}
