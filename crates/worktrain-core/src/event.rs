//! Session events: the only source of truth. Every state change is one of these.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::activity::AgentActivity;
use crate::compile::{LoopIndex, Pc, StepIndex};
use crate::cursor::{Cursor, LoopDecision};
use crate::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, StepId, WorkflowId};
use crate::run::{
    DeliveryStage, DeliveryTarget, FailureReason, HookPoint, InterruptReason, NotificationFailure,
    NotifyEvent, ReconcileAction, RequeueReason, RunEnd, RunLimits, SourceRef, Trigger,
};
use crate::workflow::GateKind;

/// How a session is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// An agent works with a person present (CLI, MCP): gates are advisory — the agent is
    /// told to ask the user before submitting.
    #[default]
    Interactive,
    /// Nobody is watching (the daemon): a gated step parks until approved or rejected.
    Autonomous,
}

impl SessionMode {
    /// Name used on the wire and in storage (`interactive`, `autonomous`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::Interactive => "interactive",
            SessionMode::Autonomous => "autonomous",
        }
    }
}

/// Why a loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopExitReason {
    /// `while` became false or `until` became true.
    Condition,
    /// The decision step submitted `stop`.
    Decision,
    /// `for` count or `forEach` elements exhausted.
    Completed,
    /// `maxIterations` passes ran.
    MaxIterations,
}

/// A loop decision recorded with a step's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopDecisionRecord {
    /// The loop it applies to (only that loop).
    pub loop_id: StepId,
    /// Index of that loop in [`crate::compile::CompiledWorkflow::loops`].
    pub loop_index: LoopIndex,
    /// Whether another pass runs or the loop stops.
    pub decision: LoopDecision,
}

/// Payload of one event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventBody {
    /// A session began, pinned to a compiled workflow.
    SessionStarted {
        /// Id of the workflow the session runs.
        workflow_id: WorkflowId,
        /// Hash of the pinned compiled workflow (also its blob hash).
        workflow_hash: Sha256Hash,
        /// Author's version string.
        workflow_version: String,
        /// Where the workflow came from (`bundled`, `user:<path>`, `file:<path>`, …).
        workflow_source: String,
        /// What the session is for.
        goal: String,
        /// Workspace directory, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace: Option<String>,
        /// Git branch checked out in the workspace when the session started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        /// Context the session starts with (start inputs, trigger data); empty when none.
        context: Map<String, Value>,
        /// Interactive or autonomous.
        #[serde(default, skip_serializing_if = "is_interactive")]
        mode: SessionMode,
        /// The parent session, for sessions spawned by another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<SessionId>,
    },
    /// The session entered a step: a new node of the step graph.
    NodeEntered {
        /// The new node.
        node: NodeId,
        /// Id of the step entered.
        step_id: StepId,
        /// Index of the step in the compiled workflow's step table.
        step: StepIndex,
        /// Program position of the step's instruction.
        pc: Pc,
        /// Node this one follows in the step graph.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<NodeId>,
        /// Why the node was entered.
        cause: EntryCause,
        /// Whether the step asks for confirmation (evaluated on entry).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        requires_confirmation: bool,
    },
    /// A step was passed over because its run condition was false. It will not run
    /// later when the context changes.
    StepSkipped {
        /// Id of the step skipped.
        step_id: StepId,
        /// Program position of the skipped step's instruction.
        pc: Pc,
        /// The condition that was false, rendered.
        condition: String,
    },
    /// A guarded block (a loop or routine include with a `runCondition`) was passed over
    /// because its condition was false when execution reached it. Like a skipped step, it
    /// does not run later when the context changes.
    BlockSkipped {
        /// The loop's or include's id.
        id: StepId,
        /// The condition that was false, rendered.
        condition: String,
        /// Where execution continues: the first position after the block.
        pc: Pc,
    },
    /// A submission did not satisfy the step; the next attempt gets a new token.
    StepBlocked {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Attempt that was blocked.
        attempt: Attempt,
        /// Hash of the submitted output.
        output_hash: Sha256Hash,
        /// What was wrong with the submission, each blocker saying how to fix it.
        blockers: Vec<Blocker>,
        /// Blob hash of the recorded response (returned again on replay).
        response: Sha256Hash,
    },
    /// A step's output was accepted.
    StepCompleted {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// The attempt whose output was accepted.
        attempt: Attempt,
        /// Hash of the submitted output.
        output_hash: Sha256Hash,
        /// Notes (markdown).
        notes: String,
        /// Artifacts, stored as blobs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<ArtifactRef>,
        /// Context changes (`null` deletes).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        context_delta: Map<String, Value>,
        /// Blob hash of the recorded response.
        response: Sha256Hash,
        /// The loop decision carried by a `loop_control` artifact.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loop_decision: Option<LoopDecisionRecord>,
    },
    /// An autonomous session's gated step produced valid output; the session waits for
    /// `approve` (which completes the step with this output) or `reject`.
    StepParked {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Which attempt at the node (1-based; each blocked submission starts the next).
        attempt: Attempt,
        /// Hash of the submitted output.
        output_hash: Sha256Hash,
        /// The notes (markdown) of the accepted output.
        notes: String,
        /// The submitted artifacts, stored as blobs and referenced here by hash.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<ArtifactRef>,
        /// Context changes to apply on approval.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        context_delta: Map<String, Value>,
        /// Loop decision to apply on approval.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loop_decision: Option<LoopDecisionRecord>,
        /// Who must confirm.
        gate: GateKind,
        /// Blob hash of the recorded response.
        response: Sha256Hash,
    },
    /// A parked step was approved; a `step_completed` with the parked output follows.
    GateApproved {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Note from the approver.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A parked step was rejected; the agent must submit a new attempt.
    GateRejected {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// The rejected attempt.
        attempt: Attempt,
        /// The operator's reason, as they wrote it.
        note: String,
        /// Blob hash of the recorded response.
        response: Sha256Hash,
    },
    /// A loop was entered (a frame is pushed).
    LoopEntered {
        /// Id of the loop, as written in the workflow.
        loop_id: StepId,
        /// Index of the loop in the compiled workflow's loop table.
        loop_index: LoopIndex,
        /// For `for` loops, the count read on entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    /// A loop pass began.
    LoopPassStarted {
        /// Id of the loop, as written in the workflow.
        loop_id: StepId,
        /// Index of the loop in the compiled workflow's loop table.
        loop_index: LoopIndex,
        /// 0-based pass number.
        iteration: u32,
        /// First position of the body.
        pc: Pc,
    },
    /// A loop ended.
    LoopExited {
        /// Id of the loop, as written in the workflow.
        loop_id: StepId,
        /// Index of the loop in the compiled workflow's loop table.
        loop_index: LoopIndex,
        /// Number of passes that ran (0 when the loop was exited before its first pass).
        passes: u32,
        /// Why it ended.
        reason: LoopExitReason,
        /// Where execution continues.
        pc: Pc,
    },
    /// A `jumpIf` was taken.
    JumpTaken {
        /// The step carrying the jump.
        step_id: StepId,
        /// The target entry.
        target: StepId,
        /// Program position of the target entry, where execution continues.
        pc: Pc,
        /// Jumps taken by this step so far, including this one.
        count: u32,
    },
    /// A `jumpIf` held but its bound was reached: execution falls through.
    JumpExhausted {
        /// The step carrying the jump.
        step_id: StepId,
        /// The step's `maxJumps` bound, reached by earlier jumps.
        max_jumps: u32,
    },
    /// Progress recorded on the current node without advancing.
    CheckpointRecorded {
        /// The node (one visit of a step in the session's step graph) this is about.
        node: NodeId,
        /// Progress notes (markdown) written by the agent.
        notes: String,
        /// Context changes merged into the session context (`null` deletes a key); empty when
        /// the checkpoint only records notes.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        context_delta: Map<String, Value>,
        /// Hash identifying this checkpoint's content (for idempotency).
        checkpoint_hash: Sha256Hash,
    },
    /// The session was moved back to an earlier step; a `node_entered` with cause
    /// `rewind` follows, starting a new branch of the step graph.
    SessionRewound {
        /// The node that was current (if any).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_node: Option<NodeId>,
        /// The earlier node whose step is re-entered.
        target_node: NodeId,
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The program position restored (the target node's entry cursor).
        cursor: Cursor,
    },
    /// The session was queued to run under the daemon.
    RunQueued {
        /// Agent profile that will drive it.
        agent: String,
        /// What started it.
        trigger: Trigger,
        /// Budget overrides of the run (each one left out uses the daemon's default).
        #[serde(default)]
        limits: RunLimits,
        /// Higher runs first.
        #[serde(default)]
        priority: i32,
        /// Review-style run: a detached worktree, nothing delivered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        readonly: bool,
        /// Base ref the worktree starts from (default: the repository's configured base).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<String>,
        /// The dispatch idempotency key, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dispatch_key: Option<String>,
    },
    /// A worker claimed the run.
    RunStarted {
        /// Run attempt (1 for the first start; +1 per resume or retry).
        run: u32,
        /// The worker (daemon instance).
        worker: String,
        /// Worktree directory the run works in; `None` when the run has no worktree.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worktree: Option<String>,
        /// Branch checked out in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// The run stopped without ending (shutdown, lost lease).
    RunInterrupted {
        /// Run attempt that was interrupted (as in [`EventBody::RunStarted`]).
        run: u32,
        /// What interrupted the run (daemon restart, lease lost, …).
        reason: InterruptReason,
    },
    /// The run was queued again.
    RunRequeued {
        /// Why the run went back to the queue.
        reason: RequeueReason,
    },
    /// The run ended.
    RunFinished {
        /// Run attempt that ended (as in [`EventBody::RunStarted`]).
        run: u32,
        /// How the run ended (completed, failed, cancelled, parked, …).
        end: RunEnd,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<FailureReason>,
        /// Details for humans.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// An operator asked to cancel the run.
    CancelRequested {
        /// The operator's reason, as they wrote it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An operator message for the agent's next turn.
    Steered {
        /// The operator's message, delivered verbatim to the agent on its next turn.
        message: String,
    },
    /// Something the agent did: an LLM turn, a tool call, a nudge, output of an external
    /// agent (tagged by `type`; see [`AgentActivity`]).
    AgentActivity {
        /// What the agent did (an LLM turn, a tool call, process output, …).
        activity: AgentActivity,
    },
    /// The worktree state when a step completed, as a commit on a hidden ref.
    StepSnapshotted {
        /// Node whose completion it records.
        node: NodeId,
        /// The ref (`refs/worktrain/<session>/<node>`).
        git_ref: String,
        /// Id of the snapshot commit `git_ref` points to.
        commit: String,
    },
    /// After a rewind, the session's worktree was restored to the state it had when the
    /// re-entered step was first entered.
    WorktreeRestored {
        /// The node the rewind created.
        node: NodeId,
        /// The snapshot commit restored.
        commit: String,
        /// A snapshot of the state just before the restore (undo).
        backup: String,
    },
    /// A workspace hook ran in the session's worktree.
    HookRan {
        /// Which point of the session's life the hook runs at.
        hook: HookPoint,
        /// The shell command, as configured.
        command: String,
        /// Exit code, when it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Killed at its time limit.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// Combined output (capped; the middle is cut when long).
        output: String,
    },
    /// The session's source item stopped qualifying (closed, merged, label or assignee
    /// removed), as seen by a webhook or a poll; the trigger's policy decided what
    /// happens. The same decision is in the trigger's log.
    SourceIneligible {
        /// The source item.
        source: SourceRef,
        /// The trigger that saw it.
        trigger: String,
        /// Why it no longer qualifies.
        reason: String,
        /// What was done.
        action: ReconcileAction,
    },
    /// An LLM post-mortem of the session, from its trace (`worktrain insights explain`).
    /// Advisory: neither the engine nor the trace detectors depend on it.
    PostMortemRecorded {
        /// The model that wrote it.
        model: String,
        /// The analysis (bounded).
        text: String,
        /// Detector findings the model was shown.
        findings: u32,
    },
    /// The session's work became a commit on its branch: after the workflow completed
    /// (the work of the run), or before its worktree was removed with changes still
    /// uncommitted (preserved, never lost).
    WorkCommitted {
        /// The branch the commit is on (`worktrain/<session>`).
        branch: String,
        /// The commit id.
        commit: String,
        /// Files changed by the commit.
        files: u32,
        /// Why it was made.
        reason: CommitReason,
    },
    /// The session's worktree directory was removed; its work is on `branch` when kept.
    WorktreeRemoved {
        /// The directory that was removed.
        path: String,
        /// The session branch, when it still exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// Delivery of the finished work began (again: `attempt` counts); stages recorded
    /// done earlier are not run again.
    DeliveryStarted {
        /// Where the work goes.
        target: DeliveryTarget,
        /// Attempt (1 for the first).
        attempt: u32,
    },
    /// A delivery stage finished with this result.
    DeliveryStageCompleted {
        /// The delivery stage that finished.
        stage: DeliveryStage,
        /// What it did.
        outcome: StageOutcome,
    },
    /// A delivery stage failed; the work stays on the branch (and the worktree is kept).
    DeliveryFailed {
        /// The delivery stage that failed; later stages did not run.
        stage: DeliveryStage,
        /// What went wrong (the forge's or git's message; never a secret).
        message: String,
        /// Whether trying again later can succeed without a change (network, 5xx, rate limit).
        retryable: bool,
        /// What to do.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// Every stage of the delivery is done.
    DeliveryFinished {
        /// Where the work went.
        target: DeliveryTarget,
    },
    /// A notifier (Slack, Discord, a signed webhook) received the message about this
    /// session's `event`. Names the notifier, never its URL or secret.
    NotificationSent {
        /// The notifier's name in `triggers.yml`.
        notifier: String,
        /// What it was told about.
        event: NotifyEvent,
        /// The receiver's HTTP status.
        status: u16,
        /// Requests made (more than one after a 5xx or 429).
        attempts: u32,
    },
    /// A notification was not delivered: rate limited, rejected or unreachable. Never
    /// fatal: the session is unaffected. Names the notifier, never its URL or secret.
    NotificationFailed {
        /// The notifier's name in `triggers.yml`.
        notifier: String,
        /// What it was to be told about.
        event: NotifyEvent,
        /// Why it was not delivered.
        reason: NotificationFailure,
        /// The receiver's last HTTP status, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Requests made (0 when rate limited).
        attempts: u32,
        /// What went wrong, for humans (never the URL).
        message: String,
    },
    /// The workflow reached its end.
    SessionCompleted {
        /// The last node completed, if any step ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_node: Option<NodeId>,
    },
}

/// The result of one delivery stage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOutcome {
    /// One line for humans.
    pub summary: String,
    /// The commit concerned (committed, scanned or pushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A link: the pull/merge request, the comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The pull/merge request's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// Secret scan findings (file and line, never the value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<SecretFinding>,
    /// Commit stage: changed files the handoff did not declare, left out of the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undeclared: Vec<String>,
    /// Commit stage: the branch keeping the undeclared changes
    /// (`worktrain-undeclared/<session>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_on: Option<String>,
}

/// A likely secret in the delivered diff: where, and which rule — never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFinding {
    /// Path in the repository.
    pub file: String,
    /// 1-based line in the new file.
    pub line: u32,
    /// The rule that matched (`github_token`, `private_key`, `high_entropy`, …).
    pub rule: String,
}

/// Why a [`EventBody::WorkCommitted`] commit was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitReason {
    /// The workflow completed: the run's result, ready for delivery or review.
    Completed,
    /// The worktree was about to be removed with uncommitted changes (a failed or
    /// cancelled run whose keep expired, say): they were committed so nothing is lost.
    Preserved,
}

/// Why a node was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryCause {
    /// First step of the session.
    Start,
    /// The previous step completed.
    Advance,
    /// An operator or agent rewound the session.
    Rewind,
}

/// A reference to an artifact stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The artifact's `kind` field, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Blob hash of the artifact's canonical JSON.
    pub hash: Sha256Hash,
    /// Size in bytes.
    pub size: u64,
}

fn is_interactive(m: &SessionMode) -> bool {
    *m == SessionMode::Interactive
}

/// Why a submission was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerCode {
    /// Notes are required and were empty.
    NotesRequired,
    /// The step's contract artifact is missing.
    ArtifactMissing,
    /// The contract artifact is invalid.
    ArtifactInvalid,
    /// A required context key was not set.
    ContextOutputMissing,
    /// An assessment level blocks the step.
    AssessmentBlocks,
    /// A reviewer rejected the parked output.
    Rejected,
}

/// One actionable reason a submission was blocked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocker {
    /// Which rule blocked the submission (stable, for programs to match on).
    pub code: BlockerCode,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Where in the artifact, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A valid example, when a contract is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

/// Blockers as a Markdown list, each line starting with `indent`: `- [code] at `path` what is
/// wrong`, then the valid example, if any, on the next line. The one rendering the agent's
/// prompt, the CLI and MCP tool results all show, so a blocker reads the same everywhere.
///
/// ```
/// use worktrain_core::event::{Blocker, BlockerCode, render_blockers};
///
/// let b = Blocker {
///     code: BlockerCode::NotesRequired,
///     message: "write what you did".into(),
///     path: None,
///     example: None,
/// };
/// assert_eq!(render_blockers(&[b], "  "), "  - [notes_required] write what you did\n");
/// ```
pub fn render_blockers(blockers: &[Blocker], indent: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for b in blockers {
        let code = serde_json::to_value(b.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let at = b
            .path
            .as_deref()
            .map(|p| format!(" at `{p}`"))
            .unwrap_or_default();
        let _ = writeln!(s, "{indent}- [{code}]{at} {}", b.message);
        if let Some(ex) = &b.example {
            let _ = writeln!(s, "{indent}  example: `{ex}`");
        }
    }
    s
}

/// Stable names of event kinds (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// See [`EventBody::SessionStarted`].
    SessionStarted,
    /// See [`EventBody::NodeEntered`].
    NodeEntered,
    /// See [`EventBody::StepSkipped`].
    StepSkipped,
    /// See [`EventBody::BlockSkipped`].
    BlockSkipped,
    /// See [`EventBody::StepBlocked`].
    StepBlocked,
    /// See [`EventBody::StepCompleted`].
    StepCompleted,
    /// See [`EventBody::StepParked`].
    StepParked,
    /// See [`EventBody::GateApproved`].
    GateApproved,
    /// See [`EventBody::GateRejected`].
    GateRejected,
    /// See [`EventBody::LoopEntered`].
    LoopEntered,
    /// See [`EventBody::LoopPassStarted`].
    LoopPassStarted,
    /// See [`EventBody::LoopExited`].
    LoopExited,
    /// See [`EventBody::JumpTaken`].
    JumpTaken,
    /// See [`EventBody::JumpExhausted`].
    JumpExhausted,
    /// See [`EventBody::CheckpointRecorded`].
    CheckpointRecorded,
    /// See [`EventBody::RunQueued`].
    RunQueued,
    /// See [`EventBody::RunStarted`].
    RunStarted,
    /// See [`EventBody::RunInterrupted`].
    RunInterrupted,
    /// See [`EventBody::RunRequeued`].
    RunRequeued,
    /// See [`EventBody::RunFinished`].
    RunFinished,
    /// See [`EventBody::CancelRequested`].
    CancelRequested,
    /// See [`EventBody::Steered`].
    Steered,
    /// See [`EventBody::AgentActivity`].
    AgentActivity,
    /// See [`EventBody::StepSnapshotted`].
    StepSnapshotted,
    /// See [`EventBody::WorktreeRestored`].
    WorktreeRestored,
    /// See [`EventBody::WorkCommitted`].
    WorkCommitted,
    /// See [`EventBody::WorktreeRemoved`].
    WorktreeRemoved,
    /// See [`EventBody::SessionRewound`].
    SessionRewound,
    /// See [`EventBody::HookRan`].
    HookRan,
    /// See [`EventBody::SourceIneligible`].
    SourceIneligible,
    /// See [`EventBody::DeliveryStarted`].
    DeliveryStarted,
    /// See [`EventBody::DeliveryStageCompleted`].
    DeliveryStageCompleted,
    /// See [`EventBody::DeliveryFailed`].
    DeliveryFailed,
    /// See [`EventBody::DeliveryFinished`].
    DeliveryFinished,
    /// See [`EventBody::NotificationSent`].
    NotificationSent,
    /// See [`EventBody::NotificationFailed`].
    NotificationFailed,
    /// See [`EventBody::SessionCompleted`].
    SessionCompleted,
    /// See [`EventBody::PostMortemRecorded`].
    PostMortemRecorded,
}

impl EventKind {
    /// Every kind of event, in declaration order: what the docs' event list and the
    /// store's `kind` column are checked against.
    pub const ALL: [EventKind; 38] = [
        EventKind::SessionStarted,
        EventKind::NodeEntered,
        EventKind::StepSkipped,
        EventKind::BlockSkipped,
        EventKind::StepBlocked,
        EventKind::StepCompleted,
        EventKind::StepParked,
        EventKind::GateApproved,
        EventKind::GateRejected,
        EventKind::LoopEntered,
        EventKind::LoopPassStarted,
        EventKind::LoopExited,
        EventKind::JumpTaken,
        EventKind::JumpExhausted,
        EventKind::CheckpointRecorded,
        EventKind::RunQueued,
        EventKind::RunStarted,
        EventKind::RunInterrupted,
        EventKind::RunRequeued,
        EventKind::RunFinished,
        EventKind::CancelRequested,
        EventKind::Steered,
        EventKind::AgentActivity,
        EventKind::StepSnapshotted,
        EventKind::WorktreeRestored,
        EventKind::WorkCommitted,
        EventKind::WorktreeRemoved,
        EventKind::SessionRewound,
        EventKind::HookRan,
        EventKind::SourceIneligible,
        EventKind::DeliveryStarted,
        EventKind::DeliveryStageCompleted,
        EventKind::DeliveryFailed,
        EventKind::DeliveryFinished,
        EventKind::NotificationSent,
        EventKind::NotificationFailed,
        EventKind::SessionCompleted,
        EventKind::PostMortemRecorded,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStarted => "session_started",
            EventKind::NodeEntered => "node_entered",
            EventKind::StepSkipped => "step_skipped",
            EventKind::BlockSkipped => "block_skipped",
            EventKind::StepBlocked => "step_blocked",
            EventKind::StepCompleted => "step_completed",
            EventKind::StepParked => "step_parked",
            EventKind::GateApproved => "gate_approved",
            EventKind::GateRejected => "gate_rejected",
            EventKind::LoopEntered => "loop_entered",
            EventKind::LoopPassStarted => "loop_pass_started",
            EventKind::LoopExited => "loop_exited",
            EventKind::JumpTaken => "jump_taken",
            EventKind::JumpExhausted => "jump_exhausted",
            EventKind::CheckpointRecorded => "checkpoint_recorded",
            EventKind::RunQueued => "run_queued",
            EventKind::RunStarted => "run_started",
            EventKind::RunInterrupted => "run_interrupted",
            EventKind::RunRequeued => "run_requeued",
            EventKind::RunFinished => "run_finished",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::Steered => "steered",
            EventKind::AgentActivity => "agent_activity",
            EventKind::StepSnapshotted => "step_snapshotted",
            EventKind::WorktreeRestored => "worktree_restored",
            EventKind::WorkCommitted => "work_committed",
            EventKind::WorktreeRemoved => "worktree_removed",
            EventKind::SessionRewound => "session_rewound",
            EventKind::HookRan => "hook_ran",
            EventKind::SourceIneligible => "source_ineligible",
            EventKind::DeliveryStarted => "delivery_started",
            EventKind::DeliveryStageCompleted => "delivery_stage_completed",
            EventKind::DeliveryFailed => "delivery_failed",
            EventKind::DeliveryFinished => "delivery_finished",
            EventKind::NotificationSent => "notification_sent",
            EventKind::NotificationFailed => "notification_failed",
            EventKind::SessionCompleted => "session_completed",
            EventKind::PostMortemRecorded => "post_mortem_recorded",
        }
    }
}

impl EventBody {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::SessionStarted { .. } => EventKind::SessionStarted,
            EventBody::NodeEntered { .. } => EventKind::NodeEntered,
            EventBody::StepSkipped { .. } => EventKind::StepSkipped,
            EventBody::BlockSkipped { .. } => EventKind::BlockSkipped,
            EventBody::StepBlocked { .. } => EventKind::StepBlocked,
            EventBody::StepCompleted { .. } => EventKind::StepCompleted,
            EventBody::StepParked { .. } => EventKind::StepParked,
            EventBody::GateApproved { .. } => EventKind::GateApproved,
            EventBody::GateRejected { .. } => EventKind::GateRejected,
            EventBody::LoopEntered { .. } => EventKind::LoopEntered,
            EventBody::LoopPassStarted { .. } => EventKind::LoopPassStarted,
            EventBody::LoopExited { .. } => EventKind::LoopExited,
            EventBody::JumpTaken { .. } => EventKind::JumpTaken,
            EventBody::JumpExhausted { .. } => EventKind::JumpExhausted,
            EventBody::CheckpointRecorded { .. } => EventKind::CheckpointRecorded,
            EventBody::RunQueued { .. } => EventKind::RunQueued,
            EventBody::RunStarted { .. } => EventKind::RunStarted,
            EventBody::RunInterrupted { .. } => EventKind::RunInterrupted,
            EventBody::RunRequeued { .. } => EventKind::RunRequeued,
            EventBody::RunFinished { .. } => EventKind::RunFinished,
            EventBody::CancelRequested { .. } => EventKind::CancelRequested,
            EventBody::Steered { .. } => EventKind::Steered,
            EventBody::AgentActivity { .. } => EventKind::AgentActivity,
            EventBody::StepSnapshotted { .. } => EventKind::StepSnapshotted,
            EventBody::WorktreeRestored { .. } => EventKind::WorktreeRestored,
            EventBody::WorkCommitted { .. } => EventKind::WorkCommitted,
            EventBody::WorktreeRemoved { .. } => EventKind::WorktreeRemoved,
            EventBody::SessionRewound { .. } => EventKind::SessionRewound,
            EventBody::HookRan { .. } => EventKind::HookRan,
            EventBody::SourceIneligible { .. } => EventKind::SourceIneligible,
            EventBody::DeliveryStarted { .. } => EventKind::DeliveryStarted,
            EventBody::DeliveryStageCompleted { .. } => EventKind::DeliveryStageCompleted,
            EventBody::DeliveryFailed { .. } => EventKind::DeliveryFailed,
            EventBody::DeliveryFinished { .. } => EventKind::DeliveryFinished,
            EventBody::NotificationSent { .. } => EventKind::NotificationSent,
            EventBody::NotificationFailed { .. } => EventKind::NotificationFailed,
            EventBody::SessionCompleted { .. } => EventKind::SessionCompleted,
            EventBody::PostMortemRecorded { .. } => EventKind::PostMortemRecorded,
        }
    }

    /// Canonical JSON bytes of this payload (RFC 8785): what is stored and hashed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json_canonicalizer::to_vec(self)
    }
}

/// An event to append, with its deterministic idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened: the event's kind and its fields.
    pub body: EventBody,
    /// Unique key; a second append with the same key is a no-op.
    pub idempotency_key: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Global position (for tailing across sessions).
    pub position: u64,
    /// The session this belongs to.
    pub session_id: SessionId,
    /// Sequence number within the session.
    pub seq: Seq,
    /// When it was appended (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// Key given by the writer so that a retried append is recognised instead of stored twice;
    /// `None` when the append had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hash of the previous event in the session (zero for the first).
    pub prev_hash: Sha256Hash,
    /// This event's chain hash.
    pub hash: Sha256Hash,
    /// What happened: the event's kind and its fields.
    pub body: EventBody,
}

/// The chain hash of an event: sha256 over the previous hash, the event's coordinates
/// and its canonical payload. Any change to a stored event breaks every later link.
pub fn chain_hash(
    prev: &Sha256Hash,
    session: SessionId,
    seq: Seq,
    kind: &str,
    created_at_ms: i64,
    payload: &[u8],
) -> Sha256Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"worktrain-event-v1\0");
    h.update(prev.0);
    h.update(session.to_bytes());
    h.update(seq.0.to_be_bytes());
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(created_at_ms.to_be_bytes());
    h.update(payload);
    Sha256Hash(h.finalize().into())
}
