//! Anthropic Messages API.

use serde_json::{Map, Value, json};

use super::sse::SseEvent;
use super::{
    ChatRequest, ChatResponse, Content, LlmConfig, LlmError, Role, StopReason, Usage,
    parse_arguments,
};

/// The path of the endpoint below the base URL.
pub(super) const PATH: &str = "/v1/messages";

/// The headers sent on every request: the API version, and the key (marked sensitive).
pub(super) fn headers(config: &LlmConfig) -> Result<Vec<(&'static str, String, bool)>, LlmError> {
    let mut headers = vec![("anthropic-version", config.anthropic_version.clone(), false)];
    if let Some(key) = config.api_key.resolve()? {
        headers.push(("x-api-key", key.expose().to_owned(), true));
    }
    Ok(headers)
}

/// The request body for `req`.
pub(super) fn body(config: &LlmConfig, req: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("max_tokens".into(), json!(config.max_tokens));
    if !req.system.is_empty() {
        let system = if config.prompt_caching {
            json!([{"type": "text", "text": req.system, "cache_control": {"type": "ephemeral"}}])
        } else {
            json!(req.system)
        };
        body.insert("system".into(), system);
    }
    body.insert(
        "messages".into(),
        Value::Array(req.messages.iter().map(message).collect()),
    );
    if !req.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
                    })
                    .collect(),
            ),
        );
    }
    if let Some(t) = config.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if config.stream {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body)
}

fn message(m: &super::Message) -> Value {
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut blocks: Vec<Value> = Vec::new();
    for c in &m.content {
        match c {
            // The API rejects empty text blocks.
            Content::Text(t) if t.is_empty() => {}
            Content::Text(t) => blocks.push(json!({"type": "text", "text": t})),
            Content::ToolUse { id, name, input } => {
                // A non-object input (arguments that were not JSON) cannot be echoed back.
                let input = if input.is_object() {
                    input.clone()
                } else {
                    json!({})
                };
                blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
            Content::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let mut b =
                    json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content});
                if *is_error {
                    b["is_error"] = json!(true);
                }
                blocks.push(b);
            }
        }
    }
    // tool_result blocks must come first in a user message.
    blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    if blocks.is_empty() {
        blocks.push(json!({"type": "text", "text": "(empty)"}));
    }
    json!({"role": role, "content": blocks})
}

fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::Refusal,
        other => StopReason::Other(other.to_owned()),
    }
}

fn usage(v: &Value, into: &mut Usage) {
    let get = |k: &str| v.get(k).and_then(Value::as_u64);
    if let Some(n) = get("input_tokens") {
        into.input_tokens = n;
    }
    if let Some(n) = get("output_tokens") {
        into.output_tokens = n;
    }
    if let Some(n) = get("cache_creation_input_tokens") {
        into.cache_creation_input_tokens = n;
    }
    if let Some(n) = get("cache_read_input_tokens") {
        into.cache_read_input_tokens = n;
    }
}

pub(super) fn parse_message(v: &Value, fallback_model: &str) -> Result<ChatResponse, LlmError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Protocol("message has no content array".into()))?;
    let mut content = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push(Content::Text(
                b.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            )),
            Some("tool_use") => content.push(Content::ToolUse {
                id: str_field(b, "id")?,
                name: str_field(b, "name")?,
                input: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            // thinking, redacted_thinking, server tool blocks: not used by the loop.
            _ => {}
        }
    }
    let mut u = Usage::default();
    if let Some(uv) = v.get("usage") {
        usage(uv, &mut u);
    }
    Ok(ChatResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(fallback_model)
            .to_owned(),
        content,
        stop_reason: stop_reason(
            v.get("stop_reason")
                .and_then(Value::as_str)
                .unwrap_or("end_turn"),
        ),
        usage: u,
        attempts: 1,
    })
}

fn str_field(v: &Value, k: &str) -> Result<String, LlmError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LlmError::Protocol(format!("content block without {k}")))
}

enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
}

/// Assemble a message from `message_start` … `message_stop` events.
pub(super) fn parse_stream(
    events: &[SseEvent],
    fallback_model: &str,
) -> Result<ChatResponse, LlmError> {
    let mut blocks: Vec<(u64, Block)> = Vec::new();
    let mut u = Usage::default();
    let mut model = fallback_model.to_owned();
    let mut stop = None;
    let mut finished = false;
    for ev in events {
        if ev.data.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| LlmError::Protocol(format!("stream event is not JSON: {e}")))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(m) = v.get("message") {
                    if let Some(name) = m.get("model").and_then(Value::as_str) {
                        model = name.to_owned();
                    }
                    if let Some(uv) = m.get("usage") {
                        usage(uv, &mut u);
                    }
                }
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let b = v.get("content_block").cloned().unwrap_or(Value::Null);
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => blocks.push((
                        index,
                        Block::Text(
                            b.get("text")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                        ),
                    )),
                    Some("tool_use") => blocks.push((
                        index,
                        Block::Tool {
                            id: str_field(&b, "id")?,
                            name: str_field(&b, "name")?,
                            json: String::new(),
                        },
                    )),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                let Some((_, block)) = blocks.iter_mut().rev().find(|(i, _)| *i == index) else {
                    continue;
                };
                match (delta.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), Block::Text(t)) => {
                        t.push_str(delta.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    (Some("input_json_delta"), Block::Tool { json, .. }) => {
                        json.push_str(
                            delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    stop = Some(stop_reason(s));
                }
                if let Some(uv) = v.get("usage") {
                    usage(uv, &mut u);
                }
            }
            "message_stop" => finished = true,
            "error" => {
                let etype = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error")
                    .to_owned();
                let status = match etype {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "api_error" => 500,
                    _ => 400,
                };
                return Err(LlmError::Api { status, message });
            }
            // ping, content_block_stop, unknown future events
            _ => {}
        }
    }
    if !finished {
        return Err(LlmError::Connection(
            "the stream ended before message_stop".into(),
        ));
    }
    let content = blocks
        .into_iter()
        .map(|(_, b)| match b {
            Block::Text(t) => Content::Text(t),
            Block::Tool { id, name, json } => Content::ToolUse {
                id,
                name,
                input: parse_arguments(&json),
            },
        })
        .collect();
    Ok(ChatResponse {
        model,
        content,
        stop_reason: stop.unwrap_or(StopReason::EndTurn),
        usage: u,
        attempts: 1,
    })
}
