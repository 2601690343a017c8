//! Agent profiles from `config.yaml` (`agents:`), validated when the daemon starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use worktrain_agent::{
    AgentRunner, CommandAgent, CommandAgentConfig, LlmAgent, LlmAgentConfig, LlmConfig,
};

/// One agent profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentProfile {
    /// worktrain's built-in LLM loop.
    Llm {
        /// Provider, model, key.
        llm: LlmConfig,
        /// Loop settings (prompts, prices, policy, tools).
        #[serde(default)]
        settings: Option<LlmAgentConfig>,
    },
    /// An external agent CLI that advances through worktrain's MCP server.
    Command {
        /// The command and how it is run.
        command: CommandAgentConfig,
    },
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config.yaml: agents.{name}: {message}")]
pub struct ProfileError {
    /// Profile name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// Build the runners for every configured profile. External agents' MCP servers get
/// `WORKTRAIN_HOME=home`, so they advance the daemon's own store (in session-bound mode,
/// through `WORKTRAIN_SESSION_ID`, holding the tokens), and `WORKTRAIN_DATABASE_URL` when
/// the daemon's store was chosen on its command line or environment rather than in the
/// home's config.yaml — unless that URL carries a password, which is not handed to agent
/// processes (give PostgreSQL's password through `PGPASSWORD` or `~/.pgpass` instead).
pub fn build(
    raw: &BTreeMap<String, serde_json::Value>,
    home: &std::path::Path,
    database_url: Option<&str>,
) -> Result<BTreeMap<String, Arc<dyn AgentRunner>>, ProfileError> {
    let database_url = database_url.filter(|u| {
        let safe = worktrain_store::StoreUrl::parse(u).is_ok_and(|p| !p.has_password());
        if !safe {
            tracing::warn!(
                "the store URL carries a password: external agents' MCP servers do not get it; they use store.url from config.yaml"
            );
        }
        safe
    });
    let mut out: BTreeMap<String, Arc<dyn AgentRunner>> = BTreeMap::new();
    for (name, value) in raw {
        let err = |message: String| ProfileError {
            name: name.clone(),
            message,
        };
        let profile: AgentProfile =
            serde_json::from_value(value.clone()).map_err(|e| err(e.to_string()))?;
        let runner: Arc<dyn AgentRunner> = match profile {
            AgentProfile::Llm { llm, settings } => Arc::new(
                LlmAgent::from_llm_config(&llm, settings.unwrap_or_default())
                    .map_err(|e| err(e.to_string()))?,
            ),
            AgentProfile::Command { mut command } => {
                command
                    .mcp_env
                    .entry("WORKTRAIN_HOME".into())
                    .or_insert_with(|| home.display().to_string());
                if let Some(url) = database_url {
                    command
                        .mcp_env
                        .entry("WORKTRAIN_DATABASE_URL".into())
                        .or_insert_with(|| url.to_owned());
                }
                Arc::new(CommandAgent::new(command))
            }
        };
        out.insert(name.clone(), runner);
    }
    Ok(out)
}

/// Secret values named by the profiles: `api_key: {value: …}` and `api_key: {env: NAME}`
/// (resolved now), and `env` entries of command profiles whose names look secret.
pub fn secrets(raw: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let secretish = k == "api_key" || worktrain_agent::redact::secret_name(k);
                    match v {
                        serde_json::Value::String(s) if secretish => out.push(s.clone()),
                        serde_json::Value::Object(inner) if secretish => {
                            if let Some(s) = inner.get("value").and_then(|x| x.as_str()) {
                                out.push(s.to_owned());
                            }
                            if let Some(name) = inner.get("env").and_then(|x| x.as_str())
                                && let Ok(s) = std::env::var(name)
                            {
                                out.push(s);
                            }
                        }
                        other => walk(other, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for v in raw.values() {
        walk(v, &mut out);
    }
    out.retain(|s| s.len() >= 8 && s != "none");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_secrets_are_found_for_redaction() {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "default": {"kind": "llm", "llm": {"provider": "anthropic", "model": "m",
                         "api_key": {"value": "sk-inline-secret-1234"}}},
            "local": {"kind": "llm", "llm": {"provider": "openai", "model": "m", "api_key": "none"}},
            "claude": {"kind": "command", "command": {"program": "claude",
                        "env": {"ANTHROPIC_API_KEY": "sk-ant-from-config-5678", "MODE": "fast-and-loose"}}}
        }))
        .unwrap();
        let found = secrets(&raw);
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
