//! The daemon's side of triggers: [`SupervisorHost`] lets the trigger runtime dispatch
//! sessions (workflow resolved by the catalog, clone workspaces cloned under
//! `$WORKTRAIN_HOME/repos/`), read run states and queue depths, and reconcile sessions
//! whose source stopped qualifying.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use worktrain_core::event::{EventBody, SessionMode};
use worktrain_core::ids::SessionId;
use worktrain_core::run::{ReconcileAction, RunState, SourceRef, Trigger};
use worktrain_engine::{Catalog, DispatchRequest, StartRequest};
use worktrain_triggers::config::Workspace;
use worktrain_triggers::runtime::{DispatchSpec, Host, HostError};

use crate::supervisor::Supervisor;

/// [`Host`] over the supervisor.
pub struct SupervisorHost {
    sup: Arc<Supervisor>,
}

impl std::fmt::Debug for SupervisorHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHost").finish_non_exhaustive()
    }
}

impl SupervisorHost {
    /// A host for `sup`.
    pub fn new(sup: Arc<Supervisor>) -> Arc<Self> {
        Arc::new(Self { sup })
    }
}

fn host_err(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

fn session_id(s: &str) -> Result<SessionId, HostError> {
    s.parse::<SessionId>()
        .map_err(|_| HostError(format!("`{s}` is not a session id")))
}

#[async_trait]
impl Host for SupervisorHost {
    async fn dispatch(&self, spec: &DispatchSpec) -> Result<(String, bool), HostError> {
        let home = self.sup.home().to_path_buf();
        let workspace = match &spec.workspace {
            None => None,
            Some(Workspace::Path(p)) => Some(p.clone()),
            Some(Workspace::Clone(url)) => {
                let url = url.clone();
                let repos = home.join("repos");
                let path =
                    tokio::task::spawn_blocking(move || worktrain_git::ensure_clone(&url, &repos))
                        .await
                        .map_err(host_err)?
                        .map_err(host_err)?;
                Some(path.display().to_string())
            }
        };
        if let Some(ws) = &workspace
            && !std::path::Path::new(ws).is_dir()
        {
            return Err(HostError(format!("workspace `{ws}` is not a directory")));
        }
        let agent = spec
            .agent
            .clone()
            .unwrap_or_else(|| self.sup.settings().default_agent.clone());
        let user_dir = home.join(worktrain_config::WORKFLOWS_DIR);
        let wf = spec.workflow.clone();
        let ws_for_catalog = workspace.clone().map(PathBuf::from);
        let workflow = tokio::task::spawn_blocking(move || {
            Catalog::new(Some(user_dir), ws_for_catalog.as_deref()).resolve(&wf)
        })
        .await
        .map_err(host_err)?
        .map_err(|e| HostError(e.message))?;
        let mut trigger = Trigger::new(spec.kind, Some(spec.trigger_id.clone()));
        trigger.source = spec.source.clone();
        trigger.delivery = spec.delivery.clone().map(Box::new);
        trigger.hooks = spec.hooks.clone().map(Box::new);
        let d = self
            .sup
            .dispatch(DispatchRequest {
                start: StartRequest {
                    workflow,
                    goal: spec.goal.clone(),
                    workspace,
                    context: spec.context.clone(),
                    mode: SessionMode::Autonomous,
                    parent: None,
                },
                agent,
                trigger,
                limits: spec.limits.clone(),
                priority: spec.priority,
                readonly: spec.readonly,
                base: spec.base.clone(),
                idempotency_key: Some(spec.idempotency_key.clone()),
            })
            .await
            .map_err(|e| HostError(e.message))?;
        Ok((d.session_id.to_string(), d.created))
    }

    async fn run_state(&self, session: &str) -> Result<Option<RunState>, HostError> {
        let id = session_id(session)?;
        match self.sup.engine().store().session(id).await {
            Ok(s) => Ok(s.and_then(|s| s.run.map(|r| r.state))),
            Err(e) => Err(host_err(e)),
        }
    }

    async fn queued(&self, trigger: &str) -> Result<usize, HostError> {
        self.sup
            .queued_for_trigger(trigger)
            .await
            .map_err(|e| HostError(e.message))
    }

    async fn source_ineligible(
        &self,
        session: &str,
        source: &SourceRef,
        trigger: &str,
        reason: &str,
        action: ReconcileAction,
    ) -> Result<(), HostError> {
        let id = session_id(session)?;
        let body = EventBody::SourceIneligible {
            source: source.clone(),
            trigger: trigger.to_owned(),
            reason: reason.to_owned(),
            action,
        };
        self.sup
            .engine()
            .transition(id, |_| Ok(vec![body.clone()]))
            .await
            .map_err(|e| HostError(e.message))?;
        match action {
            ReconcileAction::Cancel => {
                self.sup
                    .cancel(id, Some(format!("source {source}: {reason}")))
                    .await
                    .map_err(|e| HostError(e.message))?;
            }
            ReconcileAction::Keep => {}
        }
        Ok(())
    }

    fn set_trigger_caps(&self, caps: BTreeMap<String, usize>) {
        self.sup.set_trigger_caps(caps);
    }

    fn add_secrets(&self, secrets: Vec<String>) {
        self.sup.add_secrets(secrets);
    }
}
