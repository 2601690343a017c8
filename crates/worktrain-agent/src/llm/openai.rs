//! OpenAI-compatible chat completions.

use serde_json::{Map, Value, json};

use super::sse::SseEvent;
use super::{
    ChatRequest, ChatResponse, Content, LlmConfig, LlmError, Role, StopReason, Usage,
    parse_arguments,
};

/// The path of the endpoint below the base URL.
pub(super) const PATH: &str = "/v1/chat/completions";

/// The headers sent on every request: the key as a bearer token (marked sensitive).
pub(super) fn headers(config: &LlmConfig) -> Result<Vec<(&'static str, String, bool)>, LlmError> {
    let mut headers = Vec::new();
    if let Some(key) = config.api_key.resolve()? {
        headers.push(("authorization", format!("Bearer {}", key.expose()), true));
    }
    Ok(headers)
}

/// The request body for `req`.
pub(super) fn body(config: &LlmConfig, req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system}));
    }
    for m in &req.messages {
        push_message(&mut messages, m);
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("max_tokens".into(), json!(config.max_tokens));
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {
                            "name": t.name, "description": t.description, "parameters": t.input_schema}})
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
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

/// Translate one neutral message: tool results become `tool` messages (first, right
/// after the assistant message that asked for them), other text a `user` message.
fn push_message(out: &mut Vec<Value>, m: &super::Message) {
    match m.role {
        Role::Assistant => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for c in &m.content {
                match c {
                    Content::Text(t) => text.push_str(t),
                    Content::ToolUse { id, name, input } => {
                        let arguments = match input {
                            Value::String(raw) => raw.clone(),
                            other => other.to_string(),
                        };
                        // Echoing invalid JSON back makes strict servers reject the
                        // whole conversation; send an empty object instead.
                        let arguments = if serde_json::from_str::<Value>(&arguments).is_ok() {
                            arguments
                        } else {
                            "{}".to_owned()
                        };
                        calls.push(json!({"id": id, "type": "function",
                                          "function": {"name": name, "arguments": arguments}}));
                    }
                    Content::ToolResult { .. } => {}
                }
            }
            let mut msg = json!({"role": "assistant",
                                 "content": if text.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
        Role::User => {
            let mut text = String::new();
            for c in &m.content {
                match c {
                    Content::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } => {
                        let content = if *is_error {
                            format!("ERROR: {content}")
                        } else {
                            content.clone()
                        };
                        out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                    }
                    Content::Text(t) => {
                        if !text.is_empty() {
                            text.push_str("\n\n");
                        }
                        text.push_str(t);
                    }
                    Content::ToolUse { .. } => {}
                }
            }
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
        }
    }
}

fn finish_reason(s: &str) -> StopReason {
    match s {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::Refusal,
        other => StopReason::Other(other.to_owned()),
    }
}

/// OpenAI's `prompt_tokens` include cached tokens; split them out.
fn usage(v: &Value) -> Usage {
    let prompt = v.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = v
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(prompt);
    Usage {
        input_tokens: prompt - cached,
        output_tokens: v
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

pub(super) fn parse_completion(v: &Value, fallback_model: &str) -> Result<ChatResponse, LlmError> {
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| LlmError::Protocol("completion has no choices".into()))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| LlmError::Protocol("choice has no message".into()))?;
    let mut content = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str)
        && !t.is_empty()
    {
        content.push(Content::Text(t.to_owned()));
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            content.push(Content::ToolUse {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| LlmError::Protocol("tool call without id".into()))?
                    .to_owned(),
                name: c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| LlmError::Protocol("tool call without name".into()))?
                    .to_owned(),
                input: parse_arguments(
                    c.pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
            });
        }
    }
    Ok(ChatResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(fallback_model)
            .to_owned(),
        content,
        stop_reason: finish_reason(
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("stop"),
        ),
        usage: v.get("usage").map(usage).unwrap_or_default(),
        attempts: 1,
    })
}

#[derive(Default)]
struct CallAcc {
    id: String,
    name: String,
    arguments: String,
}

pub(super) fn parse_stream(
    events: &[SseEvent],
    fallback_model: &str,
) -> Result<ChatResponse, LlmError> {
    let mut text = String::new();
    let mut calls: Vec<(u64, CallAcc)> = Vec::new();
    let mut finish = None;
    let mut u = Usage::default();
    let mut model = fallback_model.to_owned();
    let mut done = false;
    for ev in events {
        let data = ev.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| LlmError::Protocol(format!("stream chunk is not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error")
                .to_owned();
            return Err(LlmError::Api {
                status: 500,
                message,
            });
        }
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            model = m.to_owned();
        }
        if let Some(uv) = v.get("usage").filter(|u| u.is_object()) {
            u = usage(uv);
        }
        let Some(choice) = v.pointer("/choices/0") else {
            continue;
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(finish_reason(f));
        }
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(tcs) = delta.get("tool_calls").and_then(Value::as_array) {
            for tc in tcs {
                let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
                let pos = match calls.iter().position(|(i, _)| *i == index) {
                    Some(p) => p,
                    None => {
                        calls.push((index, CallAcc::default()));
                        calls.len() - 1
                    }
                };
                let acc = &mut calls[pos].1;
                if let Some(id) = tc.get("id").and_then(Value::as_str) {
                    acc.id = id.to_owned();
                }
                if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str) {
                    acc.name.push_str(n);
                }
                if let Some(a) = tc.pointer("/function/arguments").and_then(Value::as_str) {
                    acc.arguments.push_str(a);
                }
            }
        }
    }
    if !done && finish.is_none() {
        return Err(LlmError::Connection(
            "the stream ended before [DONE]".into(),
        ));
    }
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(Content::Text(text));
    }
    for (i, c) in calls {
        if c.name.is_empty() {
            return Err(LlmError::Protocol(format!(
                "streamed tool call {i} has no name"
            )));
        }
        content.push(Content::ToolUse {
            id: if c.id.is_empty() {
                format!("call_{i}")
            } else {
                c.id
            },
            name: c.name,
            input: parse_arguments(&c.arguments),
        });
    }
    Ok(ChatResponse {
        model,
        content,
        stop_reason: finish.unwrap_or(StopReason::EndTurn),
        usage: u,
        attempts: 1,
    })
}
