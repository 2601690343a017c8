//! The seam between an agent and the workflow engine: [`StepDriver`].
//!
//! The daemon implements it on top of `Engine::advance`/`rehydrate`, holding the session's
//! tokens itself: an agent only ever sees [`StepBrief`]s (no tokens) and submits
//! [`Submission`]s; the driver injects the advance token. `StepBrief::from_response`,
//! [`StepStatus::from_response`] and [`StepResult::from_response`] translate the engine's
//! `StepResponse`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worktrain_core::error::{ApiError, Retry};
use worktrain_core::event::Blocker;
use worktrain_core::machine::Submission;
use worktrain_core::response::{Intent, Outcome, StepResponse};

/// The output contract of a step, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractBrief {
    /// Contract name; the artifact's `kind`.
    pub name: String,
    /// Whether the artifact is required.
    pub required: bool,
    /// A valid example artifact.
    pub example: Value,
}

/// One earlier step's notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecapItem {
    /// Id of the earlier step, as written in the workflow.
    pub step_id: String,
    /// The earlier step's title.
    pub title: String,
    /// The notes (markdown) accepted with that step's output.
    pub notes: String,
}

/// The current step, as the agent sees it. Holds no token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepBrief {
    /// Identity of this step *attempt* (`<node>#<attempt>`): changes whenever the
    /// session moves (advance, new attempt after a block), so runners can detect progress.
    pub key: String,
    /// Id of the step, as written in the workflow (several attempts share it; see `key`).
    pub step_id: String,
    /// The session's goal.
    #[serde(default)]
    pub goal: String,
    /// The step's title, as the workflow names it.
    pub title: String,
    /// The rendered step prompt.
    pub prompt: String,
    /// Workflow guidance that applies to every step.
    #[serde(default)]
    pub guidance: Vec<String>,
    /// 1-based position.
    pub index: u32,
    /// Steps in the workflow.
    pub total: u32,
    /// What the engine wants the agent to do.
    pub intent: Intent,
    /// Whether notes may be omitted.
    #[serde(default)]
    pub notes_optional: bool,
    /// The artifact the step must produce.
    #[serde(default)]
    pub contract: Option<ContractBrief>,
    /// Context keys the step must set.
    #[serde(default)]
    pub context_outputs: Vec<String>,
    /// Why the last submission of this step was blocked.
    #[serde(default)]
    pub blockers: Vec<Blocker>,
    /// Earlier steps' notes on the current path.
    #[serde(default)]
    pub recap: Vec<RecapItem>,
}

impl StepBrief {
    /// A minimal brief (tests, simple drivers).
    pub fn new(
        key: impl Into<String>,
        title: impl Into<String>,
        prompt: impl Into<String>,
    ) -> Self {
        let title = title.into();
        Self {
            key: key.into(),
            step_id: title.to_lowercase().replace(' ', "-"),
            goal: String::new(),
            title,
            prompt: prompt.into(),
            guidance: Vec::new(),
            index: 1,
            total: 1,
            intent: Intent::PerformStep,
            notes_optional: false,
            contract: None,
            context_outputs: Vec::new(),
            blockers: Vec::new(),
            recap: Vec::new(),
        }
    }

    /// The brief of an engine response's current step (`None` when it has no step).
    /// Tokens are deliberately dropped.
    pub fn from_response(r: &StepResponse) -> Option<Self> {
        let s = r.step.as_ref()?;
        Some(Self {
            key: format!("{}#{}", s.node, s.attempt),
            step_id: s.id.to_string(),
            goal: r.goal.clone(),
            title: s.title.clone(),
            prompt: s.prompt.clone(),
            guidance: s.guidance.clone(),
            index: s.index,
            total: r.progress.total,
            intent: r.intent,
            notes_optional: s.notes_optional,
            contract: s.output_contract.as_ref().map(|c| ContractBrief {
                name: c.contract.as_str().to_owned(),
                required: c.required,
                example: c.example.clone(),
            }),
            context_outputs: s.context_outputs.clone(),
            blockers: r.blockers.clone(),
            recap: r
                .recap
                .iter()
                .map(|e| RecapItem {
                    step_id: e.step_id.to_string(),
                    title: e.title.clone(),
                    notes: e.notes.clone(),
                })
                .collect(),
        })
    }
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StepStatus {
    /// A step to do.
    Active(Box<StepBrief>),
    /// Waiting at a gate for an operator.
    Parked,
    /// The workflow is complete.
    Complete,
}

impl StepStatus {
    /// From an engine response (e.g. `rehydrate`).
    pub fn from_response(r: &StepResponse) -> Self {
        match r.intent {
            Intent::Complete => StepStatus::Complete,
            Intent::WaitForApproval => StepStatus::Parked,
            Intent::PerformStep | Intent::AskUserThenSubmit | Intent::FixBlockers => {
                match StepBrief::from_response(r) {
                    Some(b) => StepStatus::Active(Box::new(b)),
                    None => StepStatus::Complete,
                }
            }
        }
    }
}

/// What submitting a step's output did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// Accepted; this is the next step.
    Advanced(Box<StepBrief>),
    /// Not accepted; fix these and submit again (the driver holds the new token).
    Blocked(Vec<Blocker>),
    /// Accepted, and the workflow is complete.
    Complete,
    /// Accepted, but the step is gated: the session waits for an operator.
    Parked,
}

impl StepResult {
    /// From the engine's answer to `advance`.
    pub fn from_response(r: &StepResponse) -> Self {
        match r.outcome {
            Outcome::Blocked | Outcome::Rejected => StepResult::Blocked(r.blockers.clone()),
            Outcome::Complete => StepResult::Complete,
            Outcome::Parked => StepResult::Parked,
            Outcome::Started
            | Outcome::Advanced
            | Outcome::Checkpointed
            | Outcome::Rehydrated
            | Outcome::Rewound
            | Outcome::Approved => match StepStatus::from_response(r) {
                StepStatus::Active(b) => StepResult::Advanced(b),
                StepStatus::Parked => StepResult::Parked,
                StepStatus::Complete => StepResult::Complete,
            },
        }
    }
}

/// Why a driver call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The submission was refused in a way the agent can fix (too large, invalid
    /// input, …). Shown to the model.
    #[error("{code}: {message} ({hint})")]
    Refused {
        /// Stable error code.
        code: String,
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The driver cannot go on (store failure, session gone). The run fails.
    #[error("step driver failed: {0}")]
    Failed(String),
}

impl From<ApiError> for DriverError {
    fn from(e: ApiError) -> Self {
        match e.retry {
            Retry::AfterFix => DriverError::Refused {
                code: e.code.to_string(),
                message: e.message,
                hint: e.hint,
            },
            Retry::Same | Retry::AfterRehydrate | Retry::Never => {
                DriverError::Failed(format!("{}: {}", e.code, e.message))
            }
        }
    }
}

/// The agent's view of the workflow engine, for one session.
///
/// Implementations hold the session's tokens, so the model never sees one; they should
/// rehydrate on a stale token themselves and retry contention internally.
#[async_trait]
pub trait StepDriver: Send + Sync {
    /// Where the session stands now.
    async fn current(&self) -> Result<StepStatus, DriverError>;
    /// Submit the current step's output.
    async fn complete_step(&self, output: Submission) -> Result<StepResult, DriverError>;
}
