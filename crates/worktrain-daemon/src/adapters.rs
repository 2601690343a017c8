//! The seams between an agent run and the engine: the step driver holds the session's
//! tokens (the model never sees them) and the event sink records agent activity as
//! session events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::{debug, warn};
use worktrain_agent::CancellationToken;
use worktrain_agent::{
    AgentEvent, DriverError, EventSink, Heartbeat, SinkError, StepDriver, StepResult, StepStatus,
};
use worktrain_core::error::{ApiError, ErrorCode};
use worktrain_core::event::EventBody;
use worktrain_core::ids::{NodeId, SessionId};
use worktrain_core::machine::Submission;
use worktrain_core::projection::SessionSummary;
use worktrain_core::response::StepResponse;
use worktrain_core::run::RunState;
use worktrain_engine::{Engine, SessionRef};

/// Drives one session through the engine, holding its current advance token. (The
/// engine snapshots the session's worktree whenever a step's output is accepted, so
/// steps advanced here, through MCP or from the CLI are all snapshotted alike.)
pub struct EngineDriver {
    engine: Arc<Engine>,
    session: SessionId,
    owner: RunOwner,
    token: Mutex<Option<(String, NodeId)>>,
}

impl std::fmt::Debug for EngineDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineDriver")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl EngineDriver {
    /// A driver for `session`'s run `owner`.
    pub fn new(engine: Arc<Engine>, session: SessionId, owner: RunOwner) -> Self {
        Self {
            engine,
            session,
            owner,
            token: Mutex::new(None),
        }
    }

    async fn refresh(&self) -> Result<StepResponse, DriverError> {
        let reply = self
            .engine
            .rehydrate(&SessionRef::Id(self.session))
            .await
            .map_err(|e| DriverError::Failed(e.to_string()))?;
        self.remember(&reply.response).await;
        Ok(reply.response)
    }

    async fn remember(&self, r: &StepResponse) {
        let next = match (&r.tokens.advance, &r.step) {
            (Some(t), Some(s)) => Some((t.clone(), s.node)),
            _ => None,
        };
        *self.token.lock().await = next;
    }
}

fn refused(e: &ApiError) -> DriverError {
    DriverError::Refused {
        code: e.code.as_str().to_owned(),
        message: e.message.clone(),
        hint: e.hint.clone(),
    }
}

#[async_trait]
impl StepDriver for EngineDriver {
    async fn current(&self) -> Result<StepStatus, DriverError> {
        let r = self.refresh().await?;
        Ok(StepStatus::from_response(&r))
    }

    async fn complete_step(&self, output: Submission) -> Result<StepResult, DriverError> {
        let held = self.token.lock().await.clone();
        let (token, _node) = match held {
            Some(t) => t,
            None => {
                self.refresh().await?;
                self.token.lock().await.clone().ok_or_else(|| {
                    DriverError::Failed("the session has no step to complete".into())
                })?
            }
        };
        // A run taken over by another worker (this daemon stalled past its lease) must
        // not advance the new owner's session.
        let summary = self
            .engine
            .session(self.session)
            .await
            .map_err(|e| DriverError::Failed(e.to_string()))?;
        if !self.owner.holds(&summary) {
            warn!(session_id = %self.session, "the run is no longer this daemon's (its lease was taken over); stopping it here");
            self.owner.give_up();
            return Err(DriverError::Failed(
                "the run is no longer this daemon's (its lease was taken over)".into(),
            ));
        }
        match crate::metrics::timed_advance(self.engine.advance(&token, output)).await {
            Ok(reply) => {
                self.remember(&reply.response).await;
                Ok(StepResult::from_response(&reply.response))
            }
            Err(e) => match e.code {
                // Someone else moved the session (an operator rewind, a racing writer):
                // pick up the current state and let the agent carry on from there.
                ErrorCode::TokenStale | ErrorCode::TokenConflict | ErrorCode::TokenRetiredKey => {
                    debug!(session_id = %self.session, "token superseded; rehydrating");
                    self.refresh().await?;
                    Err(refused(&e))
                }
                ErrorCode::NotesTooLarge
                | ErrorCode::ContextTooLarge
                | ErrorCode::ArtifactTooLarge
                | ErrorCode::ReservedContextKey
                | ErrorCode::InvalidInput
                | ErrorCode::SessionParked
                | ErrorCode::SessionComplete => Err(refused(&e)),
                ErrorCode::TokenMalformed
                | ErrorCode::TokenBadSignature
                | ErrorCode::TokenUnknownKey
                | ErrorCode::TokenNeverIssued
                | ErrorCode::TokenWrongKind
                | ErrorCode::SessionNotFound
                | ErrorCode::NotParked
                | ErrorCode::WorkflowNotFound
                | ErrorCode::WorkflowInvalid
                | ErrorCode::WorkflowPinMissing
                | ErrorCode::InvalidRewindTarget
                | ErrorCode::Contention
                | ErrorCode::StoreFailure
                | ErrorCode::DaemonUnreachable
                | ErrorCode::IntegrityFailure
                | ErrorCode::Internal => Err(DriverError::Failed(e.to_string())),
            },
        }
    }
}

/// Which run of a session this daemon is executing: only while the session's record says
/// that run is still running on this worker may the agent record or advance anything. A
/// daemon that stalled past its lease finds the run taken over by another worker and
/// must not write into the new owner's history.
#[derive(Debug, Clone)]
pub struct RunOwner {
    /// This daemon's worker id.
    pub worker: String,
    /// The run number.
    pub run: u32,
    /// Set when the run turns out to be another worker's (shared with the lease renewer).
    pub lost: Arc<AtomicBool>,
    /// Stops the run.
    pub cancel: CancellationToken,
}

impl RunOwner {
    /// The run is another worker's now: stop it here, at once (the lease renewer would
    /// notice only at its next round, after the agent took another turn).
    fn give_up(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }

    /// Whether `s` still has this run running on this worker.
    pub fn holds(&self, s: &SessionSummary) -> bool {
        s.run.as_ref().is_some_and(|r| {
            r.state == RunState::Running
                && r.run == self.run
                && r.worker.as_deref() == Some(self.worker.as_str())
        })
    }
}

/// Records agent activity as `agent_activity` events of the session, while the run is
/// still this worker's (checked in the same transition as the append).
pub struct EngineSink {
    engine: Arc<Engine>,
    session: SessionId,
    owner: RunOwner,
}

impl std::fmt::Debug for EngineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSink")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl EngineSink {
    /// A sink for `session`'s run `owner`.
    pub fn new(engine: Arc<Engine>, session: SessionId, owner: RunOwner) -> Self {
        Self {
            engine,
            session,
            owner,
        }
    }
}

#[async_trait]
impl EventSink for EngineSink {
    async fn record(&self, event: AgentEvent) -> Result<(), SinkError> {
        let mut dropped = false;
        self.engine
            .transition(self.session, |s| {
                dropped = !self.owner.holds(s);
                if dropped {
                    return Ok(Vec::new());
                }
                Ok(vec![EventBody::AgentActivity {
                    activity: event.clone(),
                }])
            })
            .await
            .map_err(|e| SinkError(e.to_string()))?;
        if dropped {
            warn!(session_id = %self.session, "the run is no longer this daemon's (its lease was taken over); stopping it here");
            self.owner.give_up();
        }
        Ok(())
    }
}

/// Liveness: the time of the agent's last sign of life, read by the lease renewer and
/// shown in the session detail.
#[derive(Debug, Default)]
pub struct LastBeat(pub AtomicI64);

impl LastBeat {
    /// Milliseconds since the Unix epoch of the last tick.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Heartbeat for LastBeat {
    fn tick(&self) {
        self.0.store(crate::now_ms(), Ordering::Relaxed);
    }
}
