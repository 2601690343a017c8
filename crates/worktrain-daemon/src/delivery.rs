//! The daemon's side of delivery: [`EngineHost`] gives the pipeline of
//! `worktrain-delivery` the session's record (events through the engine), its handoff,
//! its commit and its clean-up; [`ForgeSource`] gives it forge clients for the
//! identities of `triggers.yml`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use worktrain_core::event::EventBody;
use worktrain_core::ids::{Seq, SessionId};
use worktrain_core::projection::DeliveryInfo;
use worktrain_core::run::ForgeKind;
use worktrain_delivery::{CommitFiles, ForgeAccess, Host, HostCommit};

use crate::supervisor::Supervisor;

/// Crash tests only: the daemon's delivery stops (hangs) right after recording this
/// stage, so a test can kill the daemon between two stages.
pub const HANG_AFTER_ENV: &str = "WORKTRAIN_TEST_DELIVERY_HANG_AFTER";

/// Forge clients by identity, for delivery.
pub trait ForgeSource: Send + Sync {
    /// The client (and HTTPS push token) of `identity`; without a name, the only (or
    /// first, by name) identity of that forge.
    fn access(&self, identity: Option<&str>, kind: ForgeKind) -> Result<ForgeAccess, String>;
}

impl ForgeSource for worktrain_triggers::runtime::Runtime {
    fn access(&self, identity: Option<&str>, kind: ForgeKind) -> Result<ForgeAccess, String> {
        let index = self.index();
        let (name, def) = index.identity_for(identity, kind)?;
        let client = self.forge(name)?;
        let push_token = def.push_token().map(str::to_owned);
        Ok(ForgeAccess { client, push_token })
    }
}

/// [`Host`] over the engine and the supervisor, for one session.
pub struct EngineHost {
    sup: Arc<Supervisor>,
    id: SessionId,
}

impl std::fmt::Debug for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHost")
            .field("session", &self.id)
            .finish_non_exhaustive()
    }
}

impl EngineHost {
    /// A host for session `id`.
    pub fn new(sup: Arc<Supervisor>, id: SessionId) -> Self {
        Self { sup, id }
    }
}

/// The last `handoff` artifact of a session's accepted steps.
pub async fn handoff_of(sup: &Supervisor, id: SessionId) -> Result<Option<Value>, String> {
    artifact_of(sup, id, "handoff").await
}

/// The last artifact of `kind` among a session's accepted steps.
pub async fn artifact_of(
    sup: &Supervisor,
    id: SessionId,
    kind: &str,
) -> Result<Option<Value>, String> {
    let store = sup.engine().store();
    let mut after = Seq(0);
    let mut found = None;
    loop {
        let events = store
            .events(id, after, 500)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for e in &events {
            if let EventBody::StepCompleted { artifacts, .. } = &e.body
                && let Some(a) = artifacts
                    .iter()
                    .rev()
                    .find(|a| a.kind.as_deref() == Some(kind))
            {
                found = Some(a.hash);
            }
        }
    }
    let Some(hash) = found else { return Ok(None) };
    let bytes = store
        .blob(hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the {kind} artifact's blob {hash} is missing"))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("the {kind} artifact is not JSON: {e}"))
}

#[async_trait]
impl Host for EngineHost {
    async fn delivery(&self) -> Result<Option<DeliveryInfo>, String> {
        let s = self
            .sup
            .engine()
            .session(self.id)
            .await
            .map_err(|e| e.message)?;
        Ok(s.run.and_then(|r| r.delivery))
    }

    async fn record(&self, body: EventBody) -> Result<(), String> {
        self.sup
            .engine()
            .transition(self.id, |_| Ok(vec![body.clone()]))
            .await
            .map_err(|e| e.message)?;
        // Fault injection for the crash tests: stop dead right after a stage is recorded
        // (the test kills the daemon there). Unset in production.
        if let EventBody::DeliveryStageCompleted { stage, .. } = &body
            && std::env::var(HANG_AFTER_ENV).ok().as_deref() == Some(stage.as_str())
        {
            tracing::warn!(session_id = %self.id, stage = stage.as_str(), "{HANG_AFTER_ENV}: delivery halted here");
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn handoff(&self) -> Result<Option<Value>, String> {
        handoff_of(&self.sup, self.id).await
    }

    async fn review(&self) -> Result<Option<Value>, String> {
        match artifact_of(&self.sup, self.id, "pr_review").await? {
            Some(review) => Ok(Some(review)),
            // The bundled mr-review workflow ends with a verdict instead.
            None => artifact_of(&self.sup, self.id, "review_verdict").await,
        }
    }

    async fn commit(
        &self,
        message: Option<String>,
        files: CommitFiles,
    ) -> Result<HostCommit, String> {
        let declared = match files {
            CommitFiles::All => None,
            CommitFiles::Declared(paths) => Some(paths),
        };
        let work = self
            .sup
            .engine()
            .commit_session_files(self.id, message, declared)
            .await
            .map_err(|e| e.message)?;
        Ok(HostCommit {
            commit: work.committed.map(|c| c.commit),
            undeclared: work.undeclared,
            kept_on: work.kept_on,
        })
    }

    async fn cleanup(&self) -> Result<(), String> {
        self.sup.remove_delivered_worktree(self.id).await
    }

    fn forge(&self, identity: Option<&str>, kind: ForgeKind) -> Result<ForgeAccess, String> {
        match self.sup.forges() {
            Some(f) => f.access(identity, kind),
            None => Err("no forge identities are configured (identities: in triggers.yml)".into()),
        }
    }
}
