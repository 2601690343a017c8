//! What the engine returns to agents and operators after every operation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::ContractName;
use crate::event::Blocker;
use crate::ids::{Attempt, NodeId, SessionId, Sha256Hash, StepId, WorkflowId};
use crate::workflow::{GateKind, Join};

/// What an operation did to the session: the first thing a caller of the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A session was started; `step` is the first step.
    Started,
    /// The output was accepted; `step` is the next step.
    Advanced,
    /// The output was not accepted; fix the blockers and submit again with the new token.
    Blocked,
    /// The workflow is complete.
    Complete,
    /// Progress was recorded; the step is unchanged.
    Checkpointed,
    /// The current state, without changes.
    Rehydrated,
    /// The session was moved back; `step` is the re-entered step.
    Rewound,
    /// The output is valid but the step is gated: the session waits for approval.
    Parked,
    /// A parked step was approved; `step` is the next step.
    Approved,
    /// A parked step was rejected; resubmit with the new token.
    Rejected,
}

/// What the agent should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Do the step, then submit.
    PerformStep,
    /// Do the step, show the user the result and ask them to confirm, then submit.
    AskUserThenSubmit,
    /// Fix the blockers, then submit with the new token.
    FixBlockers,
    /// Nothing to do until an operator approves or rejects.
    WaitForApproval,
    /// The workflow is complete.
    Complete,
}

impl Intent {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::PerformStep => "perform_step",
            Intent::AskUserThenSubmit => "ask_user_then_submit",
            Intent::FixBlockers => "fix_blockers",
            Intent::WaitForApproval => "wait_for_approval",
            Intent::Complete => "complete",
        }
    }
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Advanced => "advanced",
            Outcome::Blocked => "blocked",
            Outcome::Complete => "complete",
            Outcome::Checkpointed => "checkpointed",
            Outcome::Rehydrated => "rehydrated",
            Outcome::Rewound => "rewound",
            Outcome::Parked => "parked",
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
        }
    }
}

/// Which workflow a session runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The workflow's id.
    pub id: WorkflowId,
    /// Author's version.
    pub version: String,
    /// Hash of the compiled workflow the session is pinned to.
    pub hash: Sha256Hash,
}

/// The step the agent must do now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// The node (one visit of a step in the session's step graph) this is about.
    pub node: NodeId,
    /// The attempt the next submission counts as (the advance token is bound to it).
    pub attempt: Attempt,
    /// The step's id, as written in the workflow.
    pub id: StepId,
    /// The step's title, as the workflow names it.
    pub title: String,
    /// The step's prompt, rendered against the goal and the session context (fragments
    /// whose condition holds are included).
    pub prompt: String,
    /// Workflow guidance that applies to every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guidance: Vec<String>,
    /// 1-based position among the workflow's steps.
    pub index: u32,
    /// Whether notes may be omitted.
    pub notes_optional: bool,
    /// The artifact the step must produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<ContractView>,
    /// Context keys the step must set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_outputs: Vec<String>,
    /// Whether the step's output needs confirmation before the workflow goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_confirmation: bool,
    /// Who confirms, when confirmation is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateKind>,
    /// Child workflows to run, for a parallel step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<DelegationView>,
    /// The innermost loop pass this step runs in.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "loop")]
    pub loop_pass: Option<LoopPass>,
}

/// The loop pass a step runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopPass {
    /// The loop's id, as written in the workflow.
    pub id: StepId,
    /// 1-based pass number.
    pub pass: u32,
    /// Most passes the loop may make.
    pub max_iterations: u32,
}

/// Child workflows of a parallel step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationView {
    /// The sessions this step delegated, with their state.
    pub children: Vec<ChildView>,
    /// Whether the step waits for every child or only for the first to finish.
    pub join: Join,
}

/// One child to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildView {
    /// Id of the workflow the child runs.
    pub workflow: WorkflowId,
    /// The child's goal, rendered against the parent's context.
    pub goal: String,
    /// Context the child starts with; empty when none is given.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub context: serde_json::Map<String, Value>,
}

/// A contract, as shown to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractView {
    /// Contract name; the artifact's `kind`.
    pub contract: ContractName,
    /// Whether the artifact is required.
    pub required: bool,
    /// A valid example.
    pub example: Value,
}

/// Tokens for the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Submit this step's output (absent when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<String>,
    /// Record progress without advancing (absent when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Find the session again later (rehydrate, rewind).
    pub resume: String,
}

/// How far the session is, in steps (loop passes and rewinds count again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps whose output was accepted.
    pub completed: u32,
    /// Steps skipped by their run condition.
    pub skipped: u32,
    /// Steps in the workflow.
    pub total: u32,
}

/// One earlier step's notes, for rehydration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecapEntry {
    /// The node (one visit of a step in the session's step graph) this is about.
    pub node: NodeId,
    /// Id of the step that was completed.
    pub step_id: StepId,
    /// The step's title, as the workflow names it.
    pub title: String,
    /// The notes (markdown) accepted with the step's output.
    pub notes: String,
}

/// The engine's answer to start/advance/checkpoint/rehydrate/rewind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResponse {
    /// The session this belongs to.
    pub session_id: SessionId,
    /// What the operation did (started, advanced, blocked, …).
    pub outcome: Outcome,
    /// What to do next.
    pub intent: Intent,
    /// The workflow the session is pinned to (id, version, hash).
    pub workflow: WorkflowRef,
    /// The session's goal (agents that do not read `{{goal}}` in prompts still see it).
    #[serde(default)]
    pub goal: String,
    /// The step to do now (absent when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepView>,
    /// The tokens to present next (advance, checkpoint, resume).
    pub tokens: Tokens,
    /// Why the last submission was blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// How far the session is: steps completed, skipped and left.
    pub progress: Progress,
    /// Earlier notes on the current path (rehydrate only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recap: Vec<RecapEntry>,
    /// What to do next, in one sentence.
    pub next: String,
}

impl StepResponse {
    /// Serialize to the exact bytes that are stored and returned.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
