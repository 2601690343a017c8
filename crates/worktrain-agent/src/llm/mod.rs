//! LLM providers behind one trait, [`LlmClient`]: the Anthropic Messages API and
//! OpenAI-compatible chat completions, streaming or not, with retries and timeouts.
//!
//! The conversation is kept in a provider-neutral form ([`Message`], [`Content`]); each
//! provider translates it to its wire format on every call.

mod anthropic;
mod client;
mod http;
mod openai;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

pub use client::HttpLlmClient;

use crate::secret::Secret;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Anthropic Messages API (`POST {base}/v1/messages`).
    Anthropic,
    /// OpenAI-compatible chat completions (`POST {base}/v1/chat/completions`); also
    /// local servers (vLLM, llama.cpp, Ollama, …).
    #[serde(alias = "openai_compatible", rename = "openai")]
    OpenAi,
}

impl Provider {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    /// The public API's base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::OpenAi => "https://api.openai.com",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the API key comes from. The key itself is never logged or recorded.
///
/// Config form: `{"env": "ANTHROPIC_API_KEY"}`, `{"value": "sk-…"}` or `"none"` (local
/// servers without authentication).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeySource {
    /// Read from this environment variable when the client is built.
    Env(String),
    /// The key itself, written in the config (kept secret: never logged or shown).
    Value(Secret),
    /// Send no key.
    None,
}

impl ApiKeySource {
    /// Resolve the key. `Ok(None)` for [`ApiKeySource::None`].
    pub fn resolve(&self) -> Result<Option<Secret>, LlmError> {
        match self {
            ApiKeySource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(LlmError::MissingApiKey(var.clone())),
            },
            ApiKeySource::Value(s) => Ok(Some(s.clone())),
            ApiKeySource::None => Ok(None),
        }
    }

    /// The environment variable holding the key, if any (so tools can scrub it).
    pub fn env_var(&self) -> Option<&str> {
        match self {
            ApiKeySource::Env(v) => Some(v),
            ApiKeySource::Value(_) | ApiKeySource::None => None,
        }
    }
}

/// Retries on 429, 5xx, connection errors and timeouts: exponential backoff with jitter,
/// honouring `Retry-After` (bounded by `max_retry_after`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retries).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time.
    #[serde(with = "crate::duration_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the exponential backoff.
    #[serde(with = "crate::duration_serde")]
    pub max_backoff: Duration,
    /// Upper bound of a server's `Retry-After`.
    #[serde(with = "crate::duration_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// How to reach one model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Which wire format the server speaks (Anthropic Messages or OpenAI chat completions).
    pub provider: Provider,
    /// Base URL without the `/v1/…` path (default: the provider's public API).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model name, sent as is.
    pub model: String,
    /// API key source.
    pub api_key: ApiKeySource,
    /// Output token limit per call.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Use server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Timeout of one HTTP attempt (whole response, including a stream).
    #[serde(default = "default_timeout", with = "crate::duration_serde")]
    pub timeout: Duration,
    /// How failed calls are retried (429, 5xx, timeouts, connection errors).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// Mark the system prompt cacheable (Anthropic `cache_control`).
    #[serde(default = "default_true")]
    pub prompt_caching: bool,
    /// Sampling temperature, when set.
    #[serde(default)]
    pub temperature: Option<f32>,
}

fn default_max_tokens() -> u32 {
    8192
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}
fn default_true() -> bool {
    true
}

impl LlmConfig {
    /// A config with defaults for everything but provider, model and key.
    pub fn new(provider: Provider, model: impl Into<String>, api_key: ApiKeySource) -> Self {
        Self {
            provider,
            base_url: None,
            model: model.into(),
            api_key,
            max_tokens: default_max_tokens(),
            stream: false,
            timeout: default_timeout(),
            retry: RetryPolicy::default(),
            anthropic_version: default_anthropic_version(),
            prompt_caching: true,
            temperature: None,
        }
    }

    /// The base URL in use, without a trailing slash.
    pub fn base(&self) -> String {
        self.base_url
            .as_deref()
            .unwrap_or(self.provider.default_base_url())
            .trim_end_matches('/')
            .to_owned()
    }

    /// Build the client for this config (resolves the API key now).
    pub fn build(&self) -> Result<Arc<dyn LlmClient>, LlmError> {
        Ok(Arc::new(HttpLlmClient::new(self.clone())?))
    }
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// worktrain (tool results, step prompts, nudges, operator messages).
    User,
    /// The model (its answers and tool calls).
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// The model asks worktrain to run a tool.
    ToolUse {
        /// Call id, echoed in the result.
        id: String,
        /// Name of the tool to run, one of the offered [`ToolSpec`]s.
        name: String,
        /// Arguments. A string when the model sent arguments that are not valid JSON.
        input: Value,
    },
    /// worktrain's answer to a tool call.
    ToolResult {
        /// The call answered.
        tool_use_id: String,
        /// The tool's result (or error message), as text for the model.
        content: String,
        /// Whether the call failed.
        is_error: bool,
    },
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// Pieces, in order.
    pub content: Vec<Content>,
}

impl Message {
    /// A user message with one text piece.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![Content::Text(text.into())],
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The tool's name, as the model calls it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
}

/// One call's input.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The system prompt (instructions, rules, the current step).
    pub system: String,
    /// Conversation so far; starts with a user message.
    pub messages: Vec<Message>,
    /// Tools the model may call in this turn; empty offers none.
    pub tools: Vec<ToolSpec>,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Finished its turn (`end_turn`, `stop`).
    EndTurn,
    /// Wants tool results (`tool_use`, `tool_calls`).
    ToolUse,
    /// Hit the output limit (`max_tokens`, `length`).
    MaxTokens,
    /// Hit a stop sequence.
    StopSequence,
    /// Refused or was filtered (`refusal`, `content_filter`).
    Refusal,
    /// Anything else the provider said, verbatim.
    Other(String),
}

impl StopReason {
    /// A short name for events.
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::ToolUse => "tool_use",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::Refusal => "refusal",
            StopReason::Other(s) => s,
        }
    }
}

/// Token counts of one call (shared with the recorded events).
pub use worktrain_core::activity::Usage;

/// One call's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// Model that answered (as reported, or as requested).
    pub model: String,
    /// Text and tool-use pieces, in order.
    pub content: Vec<Content>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Tokens this call used, by kind (input, output, cache reads and writes).
    pub usage: Usage,
    /// HTTP attempts made (1 without retries).
    pub attempts: u32,
}

impl ChatResponse {
    /// The tool calls, in order: (id, name, input).
    pub fn tool_calls(&self) -> Vec<(&str, &str, &Value)> {
        self.content
            .iter()
            .filter_map(|c| match c {
                Content::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
                Content::Text(_) | Content::ToolResult { .. } => None,
            })
            .collect()
    }

    /// All text, joined.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.content {
            if let Content::Text(t) = c {
                if !s.is_empty() {
                    s.push('\n');
                }
                s.push_str(t);
            }
        }
        s
    }
}

/// Why an LLM call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The configured environment variable holds no key.
    #[error("no API key: environment variable {0} is not set")]
    MissingApiKey(String),
    /// The configuration cannot work.
    #[error("invalid LLM configuration: {0}")]
    Config(String),
    /// The API answered with an error status.
    #[error("the API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
    },
    /// No answer: connection refused or reset, DNS, TLS, a stream cut short.
    #[error("connection to the LLM failed: {0}")]
    Connection(String),
    /// An attempt took longer than the per-call timeout.
    #[error("the LLM call timed out after {0:?}")]
    Timeout(Duration),
    /// The answer could not be understood.
    #[error("malformed LLM response: {0}")]
    Protocol(String),
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// HTTP attempts made, the first included.
        attempts: u32,
        /// The last error.
        last: Box<LlmError>,
    },
}

impl LlmError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Api { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            LlmError::Connection(_) | LlmError::Timeout(_) => true,
            LlmError::MissingApiKey(_)
            | LlmError::Config(_)
            | LlmError::Protocol(_)
            | LlmError::RetriesExhausted { .. } => false,
        }
    }
}

/// A chat model with tool calling.
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// The wire format this client speaks.
    fn provider(&self) -> Provider;
    /// The model the client asks for, as configured.
    fn model(&self) -> &str;
    /// One model turn (retried per the client's policy). Cancel by dropping the future.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}

/// Parse tool-call arguments; keep the raw string when they are not valid JSON, so the
/// tool reports the problem to the model instead of the call failing.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}
