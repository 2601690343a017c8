//! Runs: a session driven by an agent under the daemon. A run is queued, claimed by a
//! worker, executed, and finishes completed, failed (with a typed reason) or cancelled —
//! or is interrupted and resumed after a restart. Every transition is an event.

use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for capacity.
    Queued,
    /// Claimed by a worker; the agent is working.
    Running,
    /// The workflow is parked at a gate; the run resumes on approval.
    Parked,
    /// Stopped by a shutdown or an expired lease; will be resumed or failed.
    Interrupted,
    /// The workflow completed.
    Completed,
    /// Ended without completing.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl RunState {
    /// Every state, for filters and metrics.
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Parked,
        RunState::Interrupted,
        RunState::Completed,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Parked => "parked",
            RunState::Interrupted => "interrupted",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the run has ended for good (until a retry).
    pub fn is_final(self) -> bool {
        match self {
            RunState::Completed | RunState::Failed | RunState::Cancelled => true,
            RunState::Queued | RunState::Running | RunState::Parked | RunState::Interrupted => {
                false
            }
        }
    }
}

/// Why a run failed. Agent-side reasons come from the agent runner; the rest from the
/// supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The agent stopped without finishing the workflow, also after a nudge.
    AgentStoppedEarly,
    /// The same tool call failed the same way again after a nudge.
    RepeatedToolFailure,
    /// Most tool calls failed or were denied.
    ToolErrorsDominated,
    /// The agent reported an issue it cannot get past.
    AgentReportedBlocker,
    /// The wall-clock budget ran out.
    WallClockExceeded,
    /// The turn budget ran out.
    TurnLimitExceeded,
    /// The token budget ran out.
    TokenLimitExceeded,
    /// The cost budget ran out.
    CostLimitExceeded,
    /// The LLM could not be reached or refused the request (after retries).
    LlmUnavailable,
    /// The external agent process could not be started or crashed without progress.
    AgentProcessFailed,
    /// The step driver failed (store failure, session gone).
    StepDriverFailed,
    /// Events could not be recorded.
    RecordingFailed,
    /// The run's configuration cannot work.
    ConfigInvalid,
    /// The worktree could not be created or prepared.
    WorktreeFailed,
    /// The run was interrupted more often than the recovery policy allows.
    TooManyInterruptions,
    /// The operator's kill switch stopped it.
    Killed,
}

impl FailureReason {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::AgentStoppedEarly => "agent_stopped_early",
            FailureReason::RepeatedToolFailure => "repeated_tool_failure",
            FailureReason::ToolErrorsDominated => "tool_errors_dominated",
            FailureReason::AgentReportedBlocker => "agent_reported_blocker",
            FailureReason::WallClockExceeded => "wall_clock_exceeded",
            FailureReason::TurnLimitExceeded => "turn_limit_exceeded",
            FailureReason::TokenLimitExceeded => "token_limit_exceeded",
            FailureReason::CostLimitExceeded => "cost_limit_exceeded",
            FailureReason::LlmUnavailable => "llm_unavailable",
            FailureReason::AgentProcessFailed => "agent_process_failed",
            FailureReason::StepDriverFailed => "step_driver_failed",
            FailureReason::RecordingFailed => "recording_failed",
            FailureReason::ConfigInvalid => "config_invalid",
            FailureReason::WorktreeFailed => "worktree_failed",
            FailureReason::TooManyInterruptions => "too_many_interruptions",
            FailureReason::Killed => "killed",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The workflow completed.
    Completed,
    /// Ended without completing.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
    /// The workflow parked at a gate; the run resumes after approval.
    Parked,
}

/// Why a run was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptReason {
    /// The daemon shut down gracefully.
    Shutdown,
    /// The worker's lease expired (the daemon died).
    LeaseExpired,
}

/// Why a finished or interrupted run was queued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueReason {
    /// Recovery after an interruption: the agent re-enters the current step.
    Resume,
    /// An operator asked to retry a failed or cancelled run.
    Retry,
    /// A parked step was approved or rejected: the agent continues.
    GateDecided,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Trigger {
    /// Kind of source.
    pub kind: TriggerKind,
    /// The trigger's configured id or the caller's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Kinds of run sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `worktrain spawn` or the HTTP API.
    Api,
    /// A parent session delegating work.
    Parent,
    /// A webhook.
    Webhook,
    /// An issue-queue poll.
    Poll,
    /// A cron schedule.
    Cron,
    /// The console.
    Console,
}

/// Budgets for one run (absent = the daemon's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct RunLimits {
    /// Wall-clock budget in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_clock_secs: Option<u64>,
    /// LLM turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Token budget of one run attempt: the sum of **all four** kinds of tokens its LLM
    /// calls reported — uncached input + output + cache writes + cache reads
    /// ([`crate::activity::Usage::total`]), added up over every call of the run. Cache reads
    /// count at full weight although providers bill them at a discount, so a long,
    /// well-cached conversation reaches this budget sooner than its cost suggests; use
    /// `max_cost_usd` to bound spend. The count starts at zero for each run attempt (a
    /// resume or retry gets a fresh budget) and is checked before each LLM call, so the
    /// last call may overshoot by its own usage. Enforced by the built-in LLM loop only:
    /// an external command agent reports no token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Per tool call, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_timeout_secs: Option<u64>,
}
