//! worktrain's agent runners and agent tools.
//!
//! - [`AgentRunner`]: one trait for everything that drives a session's workflow —
//!   [`LlmAgent`] (the built-in loop over an [`LlmClient`]: Anthropic Messages or
//!   OpenAI-compatible chat completions) and [`CommandAgent`] (an external CLI agent that
//!   advances through worktrain's MCP server).
//! - The seams the daemon implements: [`StepDriver`] (the engine, holding the tokens),
//!   [`EventSink`] (the session's event log), [`Heartbeat`] (liveness), plus a
//!   cancellation token and a [`SteeringInbox`], all carried by [`RunContext`].
//! - [`RunOutcome`]: `Completed` only when the workflow is complete; otherwise
//!   `Cancelled`, `Parked` or `Failed` with a typed [`FailureReason`].
//!
//! See `docs/agents.md` for the operator's view.

pub mod agent;
pub mod command;
pub mod confine;
pub mod driver;
pub mod duration_serde;
pub mod events;
pub mod guard;
pub mod llm;
pub mod netproxy;
pub mod profile;
pub mod prompt;
pub mod redact;
pub mod run;
pub mod sandbox;
mod secret;
pub mod tools;

pub use agent::{AgentPolicy, LlmAgent, LlmAgentConfig};
pub use command::{CommandAgent, CommandAgentConfig, PromptDelivery};
pub use driver::{
    ContractBrief, DriverError, RecapItem, StepBrief, StepDriver, StepResult, StepStatus,
};
pub use events::{
    AgentEvent, CountingHeartbeat, EventSink, Heartbeat, LlmTurnRecord, MemorySink, NudgeReason,
    NullSink, OutputStream, RunnerKind, SinkError, SubmitResult, ToolCallRecord, ToolErrorKind,
    ToolErrorRecord,
};
pub use guard::{DenyReason, PathDenied, PathGuard, WorktreeGuard};
pub use llm::{
    ApiKeySource, ChatRequest, ChatResponse, Content, LlmClient, LlmConfig, LlmError, Message,
    Provider, RetryPolicy, Role, StopReason, ToolSpec, Usage,
};
pub use profile::{AgentProfile, LlmProfile};
pub use run::{
    AgentRunner, FailureReason, ModelPrice, PriceTable, RunBudget, RunContext, RunOutcome,
    RunStats, SteeringInbox,
};
pub use sandbox::{
    Input, NetworkPolicy, Sandbox, SandboxError, SandboxMode, SandboxPolicy, SandboxScope,
    SandboxSupport,
};
pub use secret::Secret;
pub use tokio_util::sync::CancellationToken;
pub use tools::{ToolConfig, ToolOutput};

/// What an agent submits for a step: the engine's own shape, so the agent loop, the
/// `complete_step` tool and every driver agree on one set of fields.
pub use worktrain_core::machine::Submission;
