//! The script a [`crate::FakeLlm`] plays: one [`Turn`] per request it receives.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token usage reported for a scripted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            input_tokens: 100,
            output_tokens: 20,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        }
    }
}

/// One tool call the fake model makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Call id; generated (`toolu_fake_N` / `call_fake_N`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl ToolCall {
    /// A call of `name` with `args`.
    pub fn new(name: impl Into<String>, args: Value) -> Self {
        Self {
            name: name.into(),
            args,
            id: None,
        }
    }
}

/// What the fake model does for one request.
///
/// JSON form: `{"type": "text", "text": "…"}`, `{"type": "tool_calls", "calls": [{"name":
/// "shell", "args": {…}}]}`, `{"type": "error", "status": 429, "retry_after": "1"}`,
/// `{"type": "stall", "ms": 5000}`, `{"type": "delay", "ms": 200, "then": {…}}`,
/// `{"type": "max_tokens", "text": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Turn {
    /// Reply with text and stop (`end_turn` / `stop`) — also how an agent "stops early".
    Text {
        /// The reply.
        text: String,
        /// Usage to report (default: 100 in, 20 out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// Call tools (`tool_use` / `tool_calls`), optionally after some text.
    ToolCalls {
        /// Text before the calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The calls, in order.
        calls: Vec<ToolCall>,
        /// Usage to report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// Reply with text cut off by the output limit (`max_tokens` / `length`).
    MaxTokens {
        /// The partial reply.
        text: String,
    },
    /// Answer with an HTTP error in the provider's error shape.
    Error {
        /// HTTP status (429, 500, 529, 400, …).
        status: u16,
        /// `Retry-After` header value, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
        /// Error message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Hold the request open for `ms` milliseconds, then answer 500. A client whose
    /// per-call timeout is shorter gives up first.
    Stall {
        /// How long to hang.
        ms: u64,
    },
    /// Wait `ms` milliseconds, then play `then`.
    Delay {
        /// How long to wait before answering.
        ms: u64,
        /// What to answer.
        then: Box<Turn>,
    },
}

impl Turn {
    /// A text reply that ends the turn.
    pub fn text(text: impl Into<String>) -> Self {
        Turn::Text {
            text: text.into(),
            usage: None,
        }
    }

    /// One tool call.
    pub fn tool(name: impl Into<String>, args: Value) -> Self {
        Turn::ToolCalls {
            text: None,
            calls: vec![ToolCall::new(name, args)],
            usage: None,
        }
    }

    /// Several tool calls in one reply.
    pub fn tools(calls: Vec<ToolCall>) -> Self {
        Turn::ToolCalls {
            text: None,
            calls,
            usage: None,
        }
    }

    /// An HTTP error.
    pub fn error(status: u16) -> Self {
        Turn::Error {
            status,
            retry_after: None,
            message: None,
        }
    }

    /// A 429 with a `Retry-After` header.
    pub fn rate_limited(retry_after: impl Into<String>) -> Self {
        Turn::Error {
            status: 429,
            retry_after: Some(retry_after.into()),
            message: None,
        }
    }

    /// This turn, reporting `usage`.
    pub fn with_usage(self, u: Usage) -> Self {
        match self {
            Turn::Text { text, .. } => Turn::Text {
                text,
                usage: Some(u),
            },
            Turn::ToolCalls { text, calls, .. } => Turn::ToolCalls {
                text,
                calls,
                usage: Some(u),
            },
            other @ (Turn::MaxTokens { .. }
            | Turn::Error { .. }
            | Turn::Stall { .. }
            | Turn::Delay { .. }) => other,
        }
    }
}

/// Turns for the requests whose body contains `contains` (e.g. a session's goal), so
/// concurrent conversations each follow their own script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Substring of the raw request body that selects this route.
    pub contains: String,
    /// The route's turns, played in order.
    pub turns: Vec<Turn>,
}

/// A whole script.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Turns for requests no route matches, played in order.
    #[serde(default)]
    pub turns: Vec<Turn>,
    /// Routed turns; the first route whose `contains` matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// When set, requests must carry this key (`x-api-key` or `Authorization: Bearer`),
    /// otherwise they get a 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Pause between streamed chunks, in milliseconds (0: none).
    #[serde(default)]
    pub chunk_delay_ms: u64,
}

impl From<Vec<Turn>> for Script {
    fn from(turns: Vec<Turn>) -> Self {
        Script {
            turns,
            ..Script::default()
        }
    }
}

/// A script file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read script {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid script.
    #[error("invalid script {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl Script {
    /// Parse a script from JSON: either a `Script` object or a bare array of turns.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            Ok(Script::from(serde_json::from_str::<Vec<Turn>>(text)?))
        } else {
            serde_json::from_str(text)
        }
    }

    /// Load a script from a JSON file.
    pub fn load(path: &std::path::Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|source| ScriptError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}
