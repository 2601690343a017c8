//! Agent profiles: the `agents:` section of `config.yaml`, typed. A profile names how a
//! session is driven — worktrain's built-in LLM loop or an external agent CLI — and is
//! validated with the rest of the file when it is loaded (file, line and column on an
//! error). Building the runner is separate: it can fail later for reasons outside the
//! file (an unset API key variable), and that makes only this profile unusable.
//!
//! ```
//! use worktrain_agent::profile::AgentProfile;
//!
//! let yaml = "kind: command\nprogram: my-agent\nargs: [\"--session\", \"{session_id}\"]\n";
//! let profile: AgentProfile = serde_norway::from_str(yaml)?;
//! assert!(matches!(profile, AgentProfile::Command(ref c) if c.program == "my-agent"));
//! # Ok::<(), serde_norway::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::{AgentRunner, CommandAgent, CommandAgentConfig, LlmAgent, LlmAgentConfig, LlmConfig};

/// One agent profile (`agents.<name>` in `config.yaml`), tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentProfile {
    /// worktrain's built-in LLM loop.
    Llm(LlmProfile),
    /// An external agent CLI (Claude Code, Codex, a script) that advances through
    /// worktrain's MCP server; its fields sit beside `kind`.
    Command(CommandAgentConfig),
}

/// `kind: llm`: which model, and how the loop runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmProfile {
    /// Provider, model, key, retries.
    pub llm: LlmConfig,
    /// Loop settings (prompts, prices, policy, tools); defaults when absent.
    #[serde(default)]
    pub settings: Option<LlmAgentConfig>,
}

impl AgentProfile {
    /// Short name of the kind (`llm`, `command`), for status output.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentProfile::Llm(_) => "llm",
            AgentProfile::Command(_) => "command",
        }
    }

    /// Secret values this profile holds or points at — the LLM API key (inline or from
    /// its variable), and `env`/`mcp_env` entries whose names look secret — so they can be
    /// redacted from everything an agent's tools return and every recorded event.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            AgentProfile::Llm(p) => match &p.llm.api_key {
                crate::ApiKeySource::Value(s) => out.push(s.expose().to_owned()),
                crate::ApiKeySource::Env(var) => out.extend(std::env::var(var).ok()),
                crate::ApiKeySource::None => {}
            },
            AgentProfile::Command(c) => {
                for (k, v) in c.env.iter().chain(c.mcp_env.iter()) {
                    if crate::redact::secret_name(k) {
                        out.push(v.clone());
                    }
                }
            }
        }
        // Short values would redact ordinary text; `none` is a placeholder, not a key.
        out.retain(|s| s.len() >= 8 && s != "none");
        out
    }

    /// Build the runner. External agents' MCP servers get `WORKTRAIN_HOME=home` (unless
    /// the profile sets it), so they advance the daemon's own store. Fails when the profile
    /// cannot be used as configured — e.g. its API key variable is unset — with a message
    /// that says what to do.
    pub fn build(&self, home: &Path) -> Result<Arc<dyn AgentRunner>, String> {
        match self {
            AgentProfile::Llm(p) => Ok(Arc::new(
                LlmAgent::from_llm_config(&p.llm, p.settings.clone().unwrap_or_default())
                    .map_err(|e| e.to_string())?,
            )),
            AgentProfile::Command(c) => {
                let mut command = c.clone();
                command
                    .mcp_env
                    .entry("WORKTRAIN_HOME".into())
                    .or_insert_with(|| home.display().to_string());
                Ok(Arc::new(CommandAgent::new(command)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_fields_sit_beside_kind_and_unknown_ones_are_refused() {
        let p: AgentProfile =
            serde_norway::from_str("kind: command\nprogram: claude\nprompt: stdin\n").unwrap();
        assert_eq!(p.kind(), "command");
        let e = serde_norway::from_str::<AgentProfile>("kind: command\nprogram: x\nprogam: y\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `progam`"), "{e}");
        let e = serde_norway::from_str::<AgentProfile>("kind: robot\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `robot`"), "{e}");
    }

    #[test]
    fn an_unset_key_variable_makes_only_building_fail() {
        let p: AgentProfile = serde_norway::from_str(
            "kind: llm\nllm:\n  provider: anthropic\n  model: m\n  api_key: {env: WORKTRAIN_TEST_SURELY_UNSET_KEY}\n",
        )
        .unwrap();
        let err = p.build(Path::new("/h")).err().unwrap();
        assert!(err.contains("WORKTRAIN_TEST_SURELY_UNSET_KEY"), "{err}");
    }
}
