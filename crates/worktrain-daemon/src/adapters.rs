//! The seams between an agent run and the engine: the step driver holds the session's
//! tokens (the model never sees them) and the event sink records agent activity as
//! session events.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::debug;
use worktrain_agent::{
    AgentEvent, DriverError, EventSink, Heartbeat, SinkError, StepDriver, StepResult, StepStatus,
};
use worktrain_core::error::{ApiError, ErrorCode};
use worktrain_core::event::EventBody;
use worktrain_core::ids::{NodeId, SessionId};
use worktrain_core::machine::Submission;
use worktrain_core::response::StepResponse;
use worktrain_engine::{Engine, SessionRef};

/// Drives one session through the engine, holding its current advance token. (The
/// engine snapshots the session's worktree whenever a step's output is accepted, so
/// steps advanced here, through MCP or from the CLI are all snapshotted alike.)
pub struct EngineDriver {
    engine: Arc<Engine>,
    session: SessionId,
    token: Mutex<Option<(String, NodeId)>>,
}

impl EngineDriver {
    /// A driver for `session`.
    pub fn new(engine: Arc<Engine>, session: SessionId) -> Self {
        Self {
            engine,
            session,
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

/// Records agent activity as `agent_activity` events of the session.
pub struct EngineSink {
    engine: Arc<Engine>,
    session: SessionId,
}

impl EngineSink {
    /// A sink for `session`.
    pub fn new(engine: Arc<Engine>, session: SessionId) -> Self {
        Self { engine, session }
    }
}

#[async_trait]
impl EventSink for EngineSink {
    async fn record(&self, event: AgentEvent) -> Result<(), SinkError> {
        self.engine
            .transition(self.session, |_| {
                Ok(vec![EventBody::AgentActivity {
                    activity: event.clone(),
                }])
            })
            .await
            .map(|_| ())
            .map_err(|e| SinkError(e.to_string()))
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
