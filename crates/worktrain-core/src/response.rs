//! What the engine returns to agents and operators after every operation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::ContractName;
use crate::event::Blocker;
use crate::ids::{Attempt, NodeId, SessionId, Sha256Hash, StepId, WorkflowId};

/// What happened.
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
        }
    }
}

/// Which workflow a session runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// Id.
    pub id: WorkflowId,
    /// Author's version.
    pub version: String,
    /// Pinned hash.
    pub hash: Sha256Hash,
}

/// The step the agent must do now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Node.
    pub node: NodeId,
    /// Attempt expected.
    pub attempt: Attempt,
    /// Step id.
    pub id: StepId,
    /// Title.
    pub title: String,
    /// Rendered prompt.
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
    /// Whether the agent should ask the user to confirm before submitting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_confirmation: bool,
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

/// Progress counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps completed.
    pub completed: u32,
    /// Steps skipped by their run condition.
    pub skipped: u32,
    /// Steps in the workflow.
    pub total: u32,
}

/// One earlier step's notes, for rehydration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecapEntry {
    /// Node.
    pub node: NodeId,
    /// Step id.
    pub step_id: StepId,
    /// Step title.
    pub title: String,
    /// Notes submitted.
    pub notes: String,
}

/// The engine's answer to start/advance/checkpoint/rehydrate/rewind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResponse {
    /// Session.
    pub session_id: SessionId,
    /// What happened.
    pub outcome: Outcome,
    /// Pinned workflow.
    pub workflow: WorkflowRef,
    /// The step to do now (absent when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepView>,
    /// Tokens.
    pub tokens: Tokens,
    /// Why the last submission was blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// Progress.
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
