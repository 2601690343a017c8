//! The agent profiles a daemon can run sessions with, built from the typed `agents:`
//! section of `config.yaml`. A profile that cannot be built (its API key variable is
//! unset, say) does not stop the daemon: it is kept as *unusable* with the reason, shown
//! in `/readyz` and `worktrain status`, and only sessions that need it fail — with that
//! reason — until the configuration is fixed and reloaded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use worktrain_agent::{AgentProfile, AgentRunner};

/// One configured profile, usable or not.
#[derive(Clone)]
pub enum AgentSlot {
    /// Built and ready to run sessions.
    Ready {
        /// `llm` or `command`.
        kind: &'static str,
        /// The runner that drives sessions with this profile.
        runner: Arc<dyn AgentRunner>,
    },
    /// Configured, but it cannot be used as it stands.
    Unusable {
        /// `llm` or `command`.
        kind: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl std::fmt::Debug for AgentSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentSlot::Ready { kind, .. } => f.debug_struct("Ready").field("kind", kind).finish(),
            AgentSlot::Unusable { kind, reason } => f
                .debug_struct("Unusable")
                .field("kind", kind)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// The profiles by name.
#[derive(Debug, Clone, Default)]
pub struct AgentPool {
    slots: BTreeMap<String, AgentSlot>,
    secrets: Vec<String>,
}

/// A profile's state as `/readyz` and `worktrain status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileStatus {
    /// The profile's name, as in the daemon's agent profiles.
    pub name: String,
    /// `llm` or `command`.
    pub kind: String,
    /// Whether sessions can run with it.
    pub ready: bool,
    /// Why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl AgentPool {
    /// Build every profile; failures become unusable slots, never an error. External
    /// agents' MCP servers get `WORKTRAIN_HOME=home`, so they advance the daemon's own
    /// store (in session-bound mode, through `WORKTRAIN_SESSION_ID`, holding the tokens),
    /// and `WORKTRAIN_DATABASE_URL` when the daemon's store was chosen on its command line
    /// or environment rather than in the home's config.yaml — unless that URL carries a
    /// password, which is not handed to agent processes (give PostgreSQL's password
    /// through `PGPASSWORD` or `~/.pgpass` instead).
    pub fn build(
        profiles: &BTreeMap<String, AgentProfile>,
        home: &Path,
        database_url: Option<&str>,
    ) -> Self {
        let database_url = database_url.filter(|u| {
            let safe = worktrain_store::StoreUrl::parse(u).is_ok_and(|p| !p.has_password());
            if !safe {
                tracing::warn!(
                    "the store URL carries a password: external agents' MCP servers do not get it; they use store.url from config.yaml"
                );
            }
            safe
        });
        let secrets = profiles.values().flat_map(AgentProfile::secrets).collect();
        let slots = profiles
            .iter()
            .map(|(name, profile)| {
                let mut profile = profile.clone();
                if let (AgentProfile::Command(c), Some(url)) = (&mut profile, database_url) {
                    c.mcp_env
                        .entry("WORKTRAIN_DATABASE_URL".into())
                        .or_insert_with(|| url.to_owned());
                }
                let slot = match profile.build(home) {
                    Ok(runner) => AgentSlot::Ready {
                        kind: profile.kind(),
                        runner,
                    },
                    Err(reason) => AgentSlot::Unusable {
                        kind: profile.kind(),
                        reason: format!("config.yaml: agents.{name}: {reason}"),
                    },
                };
                (name.clone(), slot)
            })
            .collect();
        Self { slots, secrets }
    }

    /// A pool of ready runners (tests and embedders that build runners themselves).
    pub fn from_runners(runners: BTreeMap<String, Arc<dyn AgentRunner>>) -> Self {
        Self {
            slots: runners
                .into_iter()
                .map(|(name, runner)| {
                    (
                        name,
                        AgentSlot::Ready {
                            kind: "custom",
                            runner,
                        },
                    )
                })
                .collect(),
            secrets: Vec::new(),
        }
    }

    /// The secret values the profiles hold (see [`AgentProfile::secrets`]).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The sandbox mode of every ready profile.
    pub fn sandbox_modes(&self) -> impl Iterator<Item = worktrain_agent::SandboxMode> + '_ {
        self.slots.values().filter_map(|s| match s {
            AgentSlot::Ready { runner, .. } => Some(runner.sandbox_mode()),
            AgentSlot::Unusable { .. } => None,
        })
    }

    /// The sandbox mode of profile `name` (the default when it is not ready).
    pub fn sandbox_mode(&self, name: &str) -> worktrain_agent::SandboxMode {
        match self.slots.get(name) {
            Some(AgentSlot::Ready { runner, .. }) => runner.sandbox_mode(),
            Some(AgentSlot::Unusable { .. }) | None => worktrain_agent::SandboxMode::default(),
        }
    }

    /// The runner of `name`, or why a session cannot run with it.
    pub fn runner(&self, name: &str) -> Result<Arc<dyn AgentRunner>, String> {
        match self.slots.get(name) {
            Some(AgentSlot::Ready { runner, .. }) => Ok(runner.clone()),
            Some(AgentSlot::Unusable { reason, .. }) => Err(format!(
                "agent profile `{name}` is unusable: {reason}; fix config.yaml (it is reloaded when it changes, or run `worktrain daemon reload`), then `worktrain session retry <id>`"
            )),
            None => Err(format!(
                "no agent profile `{name}` in config.yaml (known: {}); add it under `agents:`, then `worktrain session retry <id>`",
                self.names().join(", ")
            )),
        }
    }

    /// Profile names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    /// Every profile with its state; `default_agent` naming no profile is listed as a
    /// problem too.
    pub fn status(&self, default_agent: &str) -> Vec<ProfileStatus> {
        let mut out: Vec<ProfileStatus> = self
            .slots
            .iter()
            .map(|(name, slot)| match slot {
                AgentSlot::Ready { kind, .. } => ProfileStatus {
                    name: name.clone(),
                    kind: (*kind).to_owned(),
                    ready: true,
                    problem: None,
                },
                AgentSlot::Unusable { kind, reason } => ProfileStatus {
                    name: name.clone(),
                    kind: (*kind).to_owned(),
                    ready: false,
                    problem: Some(reason.clone()),
                },
            })
            .collect();
        if !self.slots.contains_key(default_agent) {
            out.push(ProfileStatus {
                name: default_agent.to_owned(),
                kind: "missing".into(),
                ready: false,
                problem: Some(format!(
                    "daemon.default_agent names `{default_agent}`, which is not under `agents:` in config.yaml"
                )),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_secrets_are_found_for_redaction() {
        let profiles: BTreeMap<String, AgentProfile> = serde_norway::from_str(
            "default: {kind: llm, llm: {provider: anthropic, model: m, api_key: {value: sk-inline-secret-1234}}}
local: {kind: llm, llm: {provider: openai, model: m, api_key: none}}
claude: {kind: command, program: claude, env: {ANTHROPIC_API_KEY: sk-ant-from-config-5678, MODE: fast-and-loose}}
",
        )
        .unwrap();
        let pool = AgentPool::build(&profiles, Path::new("/h"), None);
        let found = pool.secrets();
        assert!(
            found.contains(&"sk-inline-secret-1234".to_owned()),
            "{found:?}"
        );
        assert!(
            found.contains(&"sk-ant-from-config-5678".to_owned()),
            "{found:?}"
        );
        assert!(
            !found.iter().any(|s| s == "none" || s == "fast-and-loose"),
            "{found:?}"
        );
    }
}
