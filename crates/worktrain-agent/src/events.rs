//! What a run reports while it runs: [`AgentEvent`]s into an [`EventSink`], liveness
//! through a [`Heartbeat`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;

pub use worktrain_core::activity::{
    LlmTurnRecord, NudgeReason, OutputStream, RunnerKind, SubmitResult, ToolCallRecord,
    ToolErrorKind, ToolErrorRecord,
};

/// Something a run did, to be recorded as a session event: core's
/// [`worktrain_core::activity::AgentActivity`], the one vocabulary shared by the runners
/// that produce it and the projection and trace analysis that read it.
pub type AgentEvent = worktrain_core::activity::AgentActivity;

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
