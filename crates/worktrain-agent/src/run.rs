//! The runner trait and everything one run needs and returns.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::driver::StepDriver;
use crate::events::{EventSink, Heartbeat, NullSink};
use crate::guard::PathGuard;
use crate::llm::Usage;

/// The resolved budgets of one run, as the runners enforce them. `None` means unlimited.
///
/// A session's request carries optional overrides ([`worktrain_core::run::RunLimits`], whole
/// seconds, absent = default); [`RunBudget::with_overrides`] is the one place those are laid
/// over these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunBudget {
    /// Wall-clock time of the whole run.
    #[serde(with = "crate::duration_serde::option")]
    pub wall_clock: Option<Duration>,
    /// LLM calls (LLM runner) or process invocations (command runner).
    pub max_turns: Option<u32>,
    /// Tokens of every kind (input, output, cache writes and reads), summed over calls.
    pub max_tokens: Option<u64>,
    /// Cost in USD per the price table. A run whose model has no price fails at once
    /// when this is set (a limit that cannot be measured is not a limit).
    pub max_cost_usd: Option<f64>,
    /// One tool call (a shell command is killed with its process group when it is over).
    #[serde(with = "crate::duration_serde")]
    pub tool_timeout: Duration,
}

impl Default for RunBudget {
    fn default() -> Self {
        Self {
            wall_clock: Some(Duration::from_secs(2 * 3600)),
            max_turns: Some(500),
            max_tokens: None,
            max_cost_usd: None,
            tool_timeout: Duration::from_secs(600),
        }
    }
}

impl RunBudget {
    /// The default budget with a session's overrides applied: every limit the request sets
    /// replaces the default, every limit it leaves out keeps it. `None` (no overrides) is
    /// the default budget.
    pub fn with_overrides(overrides: Option<&worktrain_core::run::RunLimits>) -> Self {
        let mut out = Self::default();
        let Some(l) = overrides else {
            return out;
        };
        if let Some(s) = l.wall_clock_secs {
            out.wall_clock = Some(Duration::from_secs(s));
        }
        if l.max_turns.is_some() {
            out.max_turns = l.max_turns;
        }
        if l.max_tokens.is_some() {
            out.max_tokens = l.max_tokens;
        }
        if l.max_cost_usd.is_some() {
            out.max_cost_usd = l.max_cost_usd;
        }
        if let Some(s) = l.tool_timeout_secs {
            out.tool_timeout = Duration::from_secs(s);
        }
        out
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens, USD per million.
    pub input: f64,
    /// Output tokens, USD per million.
    pub output: f64,
    /// Cache writes (default: the input price).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Cache reads (default: the input price).
    #[serde(default)]
    pub cache_read: Option<f64>,
}

impl ModelPrice {
    /// Cost of `u` in USD.
    pub fn cost(&self, u: &Usage) -> f64 {
        let m = 1_000_000.0;
        (u.input_tokens as f64 * self.input
            + u.output_tokens as f64 * self.output
            + u.cache_creation_input_tokens as f64 * self.cache_write.unwrap_or(self.input)
            + u.cache_read_input_tokens as f64 * self.cache_read.unwrap_or(self.input))
            / m
    }
}

/// Prices per model name. A name matches exactly, or as the longest prefix
/// (`claude-sonnet-4` prices `claude-sonnet-4-20250514`). Empty by default: prices change,
/// so they are configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, ModelPrice>);

impl PriceTable {
    /// Add or replace a model's price.
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.0.insert(model.into(), price);
        self
    }

    /// The price of `model`.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.0.get(model) {
            return Some(p);
        }
        self.0
            .iter()
            .filter(|(k, _)| model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| p)
    }
}

/// Messages from an operator, delivered to the agent with its next turn. Cloning shares
/// the inbox: the daemon keeps one clone, the run the other.
#[derive(Debug, Clone, Default)]
pub struct SteeringInbox(Arc<Mutex<VecDeque<String>>>);

impl SteeringInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue a message for the next turn.
    pub fn send(&self, message: impl Into<String>) {
        match self.0.lock() {
            Ok(mut q) => q.push_back(message.into()),
            Err(p) => p.into_inner().push_back(message.into()),
        }
    }

    /// Take every queued message.
    pub fn drain(&self) -> Vec<String> {
        match self.0.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        }
    }

    /// Number of messages waiting to be delivered.
    pub fn len(&self) -> usize {
        self.0.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything one run needs. Build with [`RunContext::new`] and the `with_*` methods.
#[derive(Clone)]
pub struct RunContext {
    /// Session id, for logs and the MCP config.
    pub session_id: String,
    /// The worktree the agent works in.
    pub worktree: PathBuf,
    /// The workflow engine, for this session.
    pub driver: Arc<dyn StepDriver>,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Ticked while the run is alive (also during long tool calls); the daemon renews the lease from it.
    pub heartbeat: Arc<dyn Heartbeat>,
    /// Cancel the run (session cancelled, kill switch, shutdown).
    pub cancel: CancellationToken,
    /// Operator messages to deliver on the agent's next turn.
    pub steering: SteeringInbox,
    /// The budgets this run is held to.
    pub limits: RunBudget,
    /// File-tool confinement; default: [`crate::guard::WorktreeGuard`] on `worktree`.
    pub guard: Option<Arc<dyn PathGuard>>,
    /// Told to the agent first, e.g. that the session was interrupted and resumed.
    pub resume_note: Option<String>,
    /// Paths hidden from every command the agent runs (the daemon passes
    /// `$WORKTRAIN_HOME`), on top of the profile's own sandbox policy.
    pub hidden: Vec<PathBuf>,
    /// Secret values (API token, signing keys, provider keys) redacted from everything
    /// the run sends to the model or records.
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("session_id", &self.session_id)
            .field("worktree", &self.worktree)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// A context with no events, no heartbeat, default limits.
    pub fn new(
        session_id: impl Into<String>,
        worktree: impl Into<PathBuf>,
        driver: Arc<dyn StepDriver>,
    ) -> Self {
        Self {
            session_id: session_id.into(),
            worktree: worktree.into(),
            driver,
            events: Arc::new(NullSink),
            heartbeat: Arc::new(|| {}),
            cancel: CancellationToken::new(),
            steering: SteeringInbox::new(),
            limits: RunBudget::default(),
            guard: None,
            resume_note: None,
            hidden: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Record events here.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Tick this heartbeat.
    pub fn with_heartbeat(mut self, hb: Arc<dyn Heartbeat>) -> Self {
        self.heartbeat = hb;
        self
    }

    /// Use this cancellation token.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Use this steering inbox.
    pub fn with_steering(mut self, inbox: SteeringInbox) -> Self {
        self.steering = inbox;
        self
    }

    /// Use these limits.
    pub fn with_limits(mut self, limits: RunBudget) -> Self {
        self.limits = limits;
        self
    }

    /// Confine file tools with this guard.
    pub fn with_guard(mut self, guard: Arc<dyn PathGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Tell the agent this first.
    pub fn with_resume_note(mut self, note: impl Into<String>) -> Self {
        self.resume_note = Some(note.into());
        self
    }

    /// Hide these paths from every command the agent runs.
    pub fn with_hidden(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.hidden.extend(paths);
        self
    }

    /// Redact these values from everything sent to the model or recorded.
    pub fn with_secrets(mut self, secrets: impl IntoIterator<Item = String>) -> Self {
        self.secrets.extend(secrets);
        self
    }

    /// The run's redactor: `base` plus this context's secrets.
    pub(crate) fn redactor(&self, base: &crate::redact::Redactor) -> crate::redact::Redactor {
        self.secrets
            .iter()
            .fold(base.clone(), |r, s| r.with_literal(s.clone()))
    }

    /// The run's sandbox scope for `policy`: this context's hidden paths on top.
    pub(crate) fn sandbox_scope(
        &self,
        policy: &crate::sandbox::SandboxPolicy,
    ) -> Result<crate::sandbox::SandboxScope, crate::sandbox::SandboxError> {
        crate::sandbox::Sandbox::new(policy.clone())
            .hiding(self.hidden.iter().cloned())
            .scope(&self.worktree, Some(&self.session_id))
    }
}

/// Why a run failed (shared with the supervisor, which adds its own reasons).
pub use worktrain_core::run::FailureReason;

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// LLM calls or process invocations.
    pub turns: u32,
    /// Tokens used, summed over the run's LLM calls.
    pub usage: Usage,
    /// Cost in USD (0 when unpriced).
    pub cost_usd: f64,
    /// Tool calls (complete_step and report_issue excluded).
    pub tool_calls: u32,
    /// Tool calls that failed or were denied.
    pub tool_errors: u32,
    /// Steps the engine accepted during the run.
    pub steps_completed: u32,
    /// Corrective messages sent to the agent during the run.
    pub nudges: u32,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: u64,
}

/// How a run ended. Success is `Completed` only: the workflow is complete.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The workflow is complete.
    Completed {
        /// What the run did: turns, tool calls, tokens, steps, duration.
        stats: RunStats,
    },
    /// The session was cancelled.
    Cancelled {
        /// What the run did: turns, tool calls, tokens, steps, duration.
        stats: RunStats,
    },
    /// The session waits at a gate for an operator; run again after approval.
    Parked {
        /// What the run did: turns, tool calls, tokens, steps, duration.
        stats: RunStats,
    },
    /// The run failed.
    Failed {
        /// Why the run failed.
        reason: FailureReason,
        /// Details for humans.
        detail: String,
        /// What the run did: turns, tool calls, tokens, steps, duration.
        stats: RunStats,
    },
}

impl RunOutcome {
    /// The run's counters.
    pub fn stats(&self) -> &RunStats {
        match self {
            RunOutcome::Completed { stats }
            | RunOutcome::Cancelled { stats }
            | RunOutcome::Parked { stats }
            | RunOutcome::Failed { stats, .. } => stats,
        }
    }

    /// The failure reason, if failed.
    pub fn failure(&self) -> Option<FailureReason> {
        match self {
            RunOutcome::Failed { reason, .. } => Some(*reason),
            RunOutcome::Completed { .. }
            | RunOutcome::Cancelled { .. }
            | RunOutcome::Parked { .. } => None,
        }
    }

    /// A short name: `completed`, `cancelled`, `parked` or the failure reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunOutcome::Completed { .. } => "completed",
            RunOutcome::Cancelled { .. } => "cancelled",
            RunOutcome::Parked { .. } => "parked",
            RunOutcome::Failed { reason, .. } => reason.as_str(),
        }
    }
}

/// Something that drives a session's workflow to its end: the built-in
/// [`crate::LlmAgent`] or an external [`crate::CommandAgent`].
///
/// `run` returns only when the workflow is complete, the session is cancelled or parked,
/// or the run failed (a limit fired, the agent stopped early, …) — never "success" for a
/// workflow that is not complete.
#[async_trait]
pub trait AgentRunner: Send + Sync {
    /// Run until an outcome.
    async fn run(&self, ctx: RunContext) -> RunOutcome;

    /// Whether this runner's commands must run sandboxed (the daemon reports runners
    /// that cannot run because the sandbox is unavailable).
    fn sandbox_mode(&self) -> crate::sandbox::SandboxMode {
        crate::sandbox::SandboxMode::Required
    }
}

/// Early exit of a runner's loop: the outcome that ends the run.
pub(crate) type Flow<T> = Result<T, RunOutcome>;

/// The counters of a run so far, with its duration.
pub(crate) fn stats_now(stats: &RunStats, started: std::time::Instant) -> RunStats {
    let mut s = stats.clone();
    s.duration_ms = started.elapsed().as_millis() as u64;
    s
}

/// A failed outcome, logged once where it is decided.
pub(crate) fn failed(reason: FailureReason, detail: String, stats: RunStats) -> RunOutcome {
    tracing::warn!(reason = reason.as_str(), %detail, "agent run failed");
    RunOutcome::Failed {
        reason,
        detail,
        stats,
    }
}

/// Record an event; a sink failure ends the run with `recording_failed`.
pub(crate) async fn record_or_fail(
    sink: &dyn crate::events::EventSink,
    event: crate::events::AgentEvent,
    stats: impl FnOnce() -> RunStats,
) -> Flow<()> {
    sink.record(event)
        .await
        .map_err(|e| failed(FailureReason::RecordingFailed, e.to_string(), stats()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktrain_core::run::RunLimits;

    #[test]
    fn overrides_replace_only_the_limits_they_set() {
        assert_eq!(RunBudget::with_overrides(None), RunBudget::default());
        let b = RunBudget::with_overrides(Some(&RunLimits {
            wall_clock_secs: Some(60),
            max_tokens: Some(1_000),
            tool_timeout_secs: Some(5),
            ..RunLimits::default()
        }));
        assert_eq!(b.wall_clock, Some(Duration::from_secs(60)));
        assert_eq!(b.max_tokens, Some(1_000));
        assert_eq!(b.tool_timeout, Duration::from_secs(5));
        // Left out: the defaults stay.
        assert_eq!(b.max_turns, RunBudget::default().max_turns);
        assert_eq!(b.max_cost_usd, None);
    }
}
