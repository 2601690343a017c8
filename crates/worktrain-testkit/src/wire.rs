//! The two wire formats: response bodies, SSE event streams, error bodies, and the
//! request checks the real APIs perform (so a malformed conversation fails here too).

use serde_json::{Value, json};

use crate::script::{ToolCall, Usage};

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wire {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

/// A reply to render, after the script decided what to say.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub text: Option<String>,
    /// (id, call)
    pub calls: Vec<(String, ToolCall)>,
    pub stop: Stop,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    EndTurn,
    ToolUse,
    MaxTokens,
}

impl Stop {
    fn anthropic(self) -> &'static str {
        match self {
            Stop::EndTurn => "end_turn",
            Stop::ToolUse => "tool_use",
            Stop::MaxTokens => "max_tokens",
        }
    }
    fn openai(self) -> &'static str {
        match self {
            Stop::EndTurn => "stop",
            Stop::ToolUse => "tool_calls",
            Stop::MaxTokens => "length",
        }
    }
}

/// Split a string into small pieces on char boundaries (to exercise delta accumulation).
fn pieces(s: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

fn args_string(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

// ---------------------------------------------------------------- Anthropic

pub(crate) fn anthropic_message(id: &str, model: &str, r: &Reply) -> Value {
    let mut content = Vec::new();
    if let Some(t) = &r.text {
        content.push(json!({"type": "text", "text": t}));
    }
    for (cid, c) in &r.calls {
        content.push(json!({"type": "tool_use", "id": cid, "name": c.name, "input": c.args}));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": r.stop.anthropic(),
        "stop_sequence": null,
        "usage": {
            "input_tokens": r.usage.input_tokens,
            "cache_creation_input_tokens": r.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": r.usage.cache_read_input_tokens,
            "output_tokens": r.usage.output_tokens,
        }
    })
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

pub(crate) fn anthropic_stream(id: &str, model: &str, r: &Reply) -> Vec<String> {
    let mut out = Vec::new();
    out.push(sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": r.usage.input_tokens,
                "cache_creation_input_tokens": r.usage.cache_creation_input_tokens,
                "cache_read_input_tokens": r.usage.cache_read_input_tokens,
                "output_tokens": 1,
            }
        }}),
    ));
    out.push(sse_event("ping", &json!({"type": "ping"})));
    let mut index = 0;
    if let Some(t) = &r.text {
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for p in pieces(t, 7) {
            out.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        out.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (cid, c) in &r.calls {
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": cid, "name": c.name, "input": {}}}),
        ));
        // The real API starts with an empty partial_json delta.
        out.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ));
        for p in pieces(&args_string(&c.args), 9) {
            out.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}),
            ));
        }
        out.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    out.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": r.stop.anthropic(), "stop_sequence": null},
                "usage": {"output_tokens": r.usage.output_tokens}}),
    ));
    out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    out
}

pub(crate) fn anthropic_error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

// ---------------------------------------------------------------- OpenAI

pub(crate) fn openai_completion(id: &str, model: &str, created: u64, r: &Reply) -> Value {
    let mut message = json!({"role": "assistant", "content": r.text, "refusal": null});
    if !r.calls.is_empty() {
        message["tool_calls"] = Value::Array(
            r.calls
                .iter()
                .map(|(cid, c)| {
                    json!({"id": cid, "type": "function",
                           "function": {"name": c.name, "arguments": args_string(&c.args)}})
                })
                .collect(),
        );
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": r.stop.openai()}],
        "usage": openai_usage(&r.usage),
        "system_fingerprint": "fp_fake",
    })
}

fn openai_usage(u: &Usage) -> Value {
    // OpenAI counts cached tokens inside prompt_tokens.
    let prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
    })
}

pub(crate) fn openai_stream(
    id: &str,
    model: &str,
    created: u64,
    r: &Reply,
    include_usage: bool,
) -> Vec<String> {
    let chunk = |choices: Value| -> String {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                       "model": model, "system_fingerprint": "fp_fake", "choices": choices});
        format!("data: {v}\n\n")
    };
    let mut out = vec![chunk(json!([{"index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": null},
        "logprobs": null, "finish_reason": null}]))];
    if let Some(t) = &r.text {
        for p in pieces(t, 7) {
            out.push(chunk(json!([{"index": 0, "delta": {"content": p}, "logprobs": null, "finish_reason": null}])));
        }
    }
    for (i, (cid, c)) in r.calls.iter().enumerate() {
        out.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": i, "id": cid, "type": "function",
            "function": {"name": c.name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}])));
        for p in pieces(&args_string(&c.args), 9) {
            out.push(chunk(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": i,
                "function": {"arguments": p}}]}, "logprobs": null, "finish_reason": null}]),
            ));
        }
    }
    out.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": r.stop.openai()}]),
    ));
    if include_usage {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "system_fingerprint": "fp_fake", "choices": [], "usage": openai_usage(&r.usage)});
        out.push(format!("data: {v}\n\n"));
    }
    out.push("data: [DONE]\n\n".to_owned());
    out
}

pub(crate) fn openai_error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "invalid_api_key",
        429 => "rate_limit_exceeded",
        _ => "server_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

// ---------------------------------------------------------------- request checks

/// Check an Anthropic Messages request the way the real API does (the parts an agent
/// loop can get wrong). `Err` carries the 400 message.
pub(crate) fn check_anthropic(body: &Value) -> Result<(), String> {
    let obj = body.as_object().ok_or("body must be a JSON object")?;
    obj.get("model")
        .and_then(Value::as_str)
        .ok_or("model: field required")?;
    obj.get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("max_tokens: field required")?;
    if let Some(system) = obj.get("system") {
        match system {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for b in blocks {
                    if b.get("type").and_then(Value::as_str) != Some("text") {
                        return Err("system: blocks must be of type text".into());
                    }
                }
            }
            _ => return Err("system: must be a string or a list of text blocks".into()),
        }
    }
    if let Some(tools) = obj.get("tools") {
        let tools = tools.as_array().ok_or("tools: must be a list")?;
        for t in tools {
            t.get("name")
                .and_then(Value::as_str)
                .ok_or("tools.name: field required")?;
            let schema = t
                .get("input_schema")
                .ok_or("tools.input_schema: field required")?;
            if schema.get("type").and_then(Value::as_str) != Some("object") {
                return Err("tools.input_schema.type: must be 'object'".into());
            }
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    if messages[0].get("role").and_then(Value::as_str) != Some("user") {
        return Err("messages: first message must use the \"user\" role".into());
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or("messages.role: field required")?;
        if role != "user" && role != "assistant" {
            return Err(format!("messages.{i}.role: must be user or assistant"));
        }
        let blocks = match m.get("content") {
            Some(Value::String(_)) => continue,
            Some(Value::Array(b)) => b,
            _ => return Err(format!("messages.{i}.content: field required")),
        };
        let tool_ids: Vec<&str> = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|b| b.get("id").and_then(Value::as_str))
            .collect();
        if role == "assistant" && !tool_ids.is_empty() {
            let next = messages.get(i + 1).ok_or_else(|| {
                format!("messages.{i}: tool_use ids were found without tool_result blocks immediately after")
            })?;
            let next_blocks = next
                .get("content")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for id in &tool_ids {
                let found = next_blocks.iter().any(|b| {
                    b.get("type").and_then(Value::as_str) == Some("tool_result")
                        && b.get("tool_use_id").and_then(Value::as_str) == Some(id)
                });
                if !found {
                    return Err(format!(
                        "messages.{}: tool_use id {id} has no tool_result block in the next message",
                        i + 1
                    ));
                }
            }
            // tool_result blocks must come first in that message.
            let mut seen_other = false;
            for b in &next_blocks {
                let is_result = b.get("type").and_then(Value::as_str) == Some("tool_result");
                if is_result && seen_other {
                    return Err(format!(
                        "messages.{}: tool_result blocks must come before any other content",
                        i + 1
                    ));
                }
                seen_other |= !is_result;
            }
        }
    }
    Ok(())
}

/// Check an OpenAI chat-completions request. `Err` carries the 400 message.
pub(crate) fn check_openai(body: &Value) -> Result<(), String> {
    let obj = body.as_object().ok_or("body must be a JSON object")?;
    obj.get("model")
        .and_then(Value::as_str)
        .ok_or("you must provide a model parameter")?;
    if let Some(tools) = obj.get("tools") {
        let tools = tools.as_array().ok_or("tools: must be an array")?;
        for t in tools {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err("tools[].type: must be 'function'".into());
            }
            let f = t.get("function").ok_or("tools[].function: missing")?;
            f.get("name")
                .and_then(Value::as_str)
                .ok_or("tools[].function.name: missing")?;
            if let Some(p) = f.get("parameters")
                && p.get("type").and_then(Value::as_str) != Some("object")
            {
                return Err("tools[].function.parameters.type: must be 'object'".into());
            }
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: missing required parameter")?;
    if messages.is_empty() {
        return Err("messages: must contain at least one message".into());
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or("messages[].role: missing")?;
        if role == "tool" {
            let id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or(format!("messages[{i}].tool_call_id: missing"))?;
            if !pending.iter().any(|p| p == id) {
                return Err(format!(
                    "messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (id {id})"
                ));
            }
            pending.retain(|p| p != id);
            continue;
        }
        if !pending.is_empty() {
            return Err(format!(
                "an assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                pending.join(", ")
            ));
        }
        match role {
            "system" | "developer" | "user" => {}
            "assistant" => {
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for c in calls {
                        let id = c
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or("tool_calls[].id: missing")?;
                        let args = c
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .ok_or("tool_calls[].function.arguments: must be a string")?;
                        if serde_json::from_str::<Value>(args).is_err() {
                            return Err("tool_calls[].function.arguments: not valid JSON".into());
                        }
                        pending.push(id.to_owned());
                    }
                }
            }
            other => return Err(format!("messages[{i}].role: invalid value '{other}'")),
        }
    }
    if !pending.is_empty() {
        return Err(format!(
            "tool_call_ids did not have response messages: {}",
            pending.join(", ")
        ));
    }
    Ok(())
}
