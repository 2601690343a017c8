//! What a run reports while it runs: [`AgentEvent`]s into an [`EventSink`], liveness
//! through a [`Heartbeat`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::llm::Usage;

/// One LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmTurnRecord {
    /// 1-based turn number within the run.
    pub turn: u32,
    /// Model that answered.
    pub model: String,
    /// Tokens.
    pub usage: Usage,
    /// Why the model stopped (`end_turn`, `tool_use`, `max_tokens`, …).
    pub stop_reason: String,
    /// Wall time of the call, retries included.
    pub duration_ms: u64,
    /// HTTP attempts (1 without retries).
    pub attempts: u32,
    /// Tool calls the model asked for.
    pub tool_calls: u32,
    /// Cost of this call in USD, when the model is in the price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// Why a tool call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolErrorKind {
    /// Refused by policy (path outside the worktree, write into `.git`).
    Denied,
    /// Arguments missing, of the wrong type, or not JSON.
    InvalidArguments,
    /// No such tool.
    UnknownTool,
    /// A file or match that does not exist.
    NotFound,
    /// An edit's text matched more than once.
    Ambiguous,
    /// The call ran out of time and was killed.
    Timeout,
    /// An I/O error.
    Io,
    /// The engine refused a `complete_step` submission outright (not a block).
    Refused,
}

impl ToolErrorKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolErrorKind::Denied => "denied",
            ToolErrorKind::InvalidArguments => "invalid_arguments",
            ToolErrorKind::UnknownTool => "unknown_tool",
            ToolErrorKind::NotFound => "not_found",
            ToolErrorKind::Ambiguous => "ambiguous",
            ToolErrorKind::Timeout => "timeout",
            ToolErrorKind::Io => "io",
            ToolErrorKind::Refused => "refused",
        }
    }
}

/// A tool call's error, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolErrorRecord {
    /// Kind.
    pub kind: ToolErrorKind,
    /// Message (redacted, bounded).
    pub message: String,
}

/// One tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// Turn that asked for it.
    pub turn: u32,
    /// Tool name.
    pub name: String,
    /// Argument summary, secrets redacted, bounded.
    pub args: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Size of the result returned to the model.
    pub result_bytes: u64,
    /// Exit code, for `shell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Error, if the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolErrorRecord>,
}

/// Why worktrain nudged the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NudgeReason {
    /// It stopped without completing the step.
    StoppedEarly,
    /// It repeated the same failing tool call.
    RepeatedToolFailure,
}

/// Which output stream of an external agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Something a run did, to be recorded as a session event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The run began.
    RunStarted {
        /// `llm` or `command`.
        runner: String,
        /// Model (LLM runner) or program (command runner).
        detail: String,
    },
    /// One LLM call.
    LlmTurn(LlmTurnRecord),
    /// One tool call.
    ToolCall(ToolCallRecord),
    /// worktrain sent the agent a corrective message.
    Nudged {
        /// Why.
        reason: NudgeReason,
        /// Nudges so far for this reason in this step.
        count: u32,
    },
    /// Operator messages were delivered to the agent.
    SteeringDelivered {
        /// How many.
        messages: u32,
    },
    /// The agent reported a problem (`report_issue`).
    IssueReported {
        /// Short title.
        title: String,
        /// Details (redacted).
        details: String,
        /// Whether the agent says it cannot go on.
        blocking: bool,
    },
    /// The agent submitted a step; the engine answered.
    StepSubmitted {
        /// Step key.
        step: String,
        /// `advanced`, `blocked`, `complete`, `parked`, `refused`.
        result: String,
    },
    /// An external agent process started.
    ProcessStarted {
        /// The program and arguments (redacted).
        command: String,
        /// Process id.
        pid: Option<u32>,
        /// 1-based invocation within the run.
        invocation: u32,
    },
    /// A chunk of an external agent's output (redacted).
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The text.
        text: String,
    },
    /// An external agent process ended.
    ProcessExited {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Whether worktrain killed it (timeout, cancel, limit).
        killed: bool,
        /// Wall time.
        duration_ms: u64,
    },
}

/// The sink could not record an event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot record agent event: {0}")]
pub struct SinkError(pub String);

/// Where a run's events go (the daemon: the session's event store).
///
/// A failure ends the run (`FailureReason::RecordingFailed`): an unrecorded run is not
/// trustworthy. Implementations should retry transient store errors themselves.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Record one event.
    async fn record(&self, event: AgentEvent) -> Result<(), SinkError>;
}

/// Keeps events in memory (tests, previews).
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<AgentEvent>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<AgentEvent> {
        self.events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The tool calls recorded so far.
    pub fn tool_calls(&self) -> Vec<ToolCallRecord> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                AgentEvent::ToolCall(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The LLM turns recorded so far.
    pub fn turns(&self) -> Vec<LlmTurnRecord> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                AgentEvent::LlmTurn(t) => Some(t),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl EventSink for MemorySink {
    async fn record(&self, event: AgentEvent) -> Result<(), SinkError> {
        match self.events.lock() {
            Ok(mut e) => e.push(event),
            Err(p) => p.into_inner().push(event),
        }
        Ok(())
    }
}

/// Drops events (logs them at debug level).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

#[async_trait]
impl EventSink for NullSink {
    async fn record(&self, event: AgentEvent) -> Result<(), SinkError> {
        tracing::debug!(?event, "agent event");
        Ok(())
    }
}

/// Liveness signal. Called at least every heartbeat interval while a run is alive —
/// including during long tool calls and LLM calls. Must not block.
pub trait Heartbeat: Send + Sync {
    /// The run is alive.
    fn tick(&self);
}

impl<F: Fn() + Send + Sync> Heartbeat for F {
    fn tick(&self) {
        self()
    }
}

/// Counts ticks and remembers the last one (tests, stall detectors).
#[derive(Debug)]
pub struct CountingHeartbeat {
    ticks: AtomicU64,
    last: Mutex<Instant>,
}

impl Default for CountingHeartbeat {
    fn default() -> Self {
        Self {
            ticks: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl CountingHeartbeat {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    /// Time since the last tick (or creation).
    pub fn since_last(&self) -> std::time::Duration {
        self.last
            .lock()
            .map(|l| l.elapsed())
            .unwrap_or_else(|p| p.into_inner().elapsed())
    }
}

impl Heartbeat for CountingHeartbeat {
    fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::SeqCst);
        match self.last.lock() {
            Ok(mut l) => *l = Instant::now(),
            Err(p) => *p.into_inner() = Instant::now(),
        }
    }
}

/// Run `fut`, ticking `hb` every `interval` until it finishes.
pub async fn with_heartbeat<F: std::future::Future>(
    hb: &dyn Heartbeat,
    interval: std::time::Duration,
    fut: F,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut ticker = tokio::time::interval(interval.max(std::time::Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = ticker.tick() => hb.tick(),
        }
    }
}
