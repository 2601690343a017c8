//! Codex CLI: rollouts (`~/.codex/sessions/**/rollout-*.jsonl`: `session_meta`,
//! `response_item`, `event_msg`, `turn_context`, `compacted`) and `codex exec --json`
//! event streams (`thread.*`, `turn.*`, `item.*`).
//!
//! Neither format marks where one model response ends, so a turn is the run of model
//! items (reasoning, messages, calls) between two results or user messages.

use std::collections::HashMap;

use serde_json::Value;

use super::builder::{CallResult, NewCall, TraceBuilder};
use super::{LineParser, parse_rfc3339_ms};
use crate::model::{Action, EditInfo, Source, Tokens, Trace};
use crate::normalize::{self, bounded, text_digest};

/// A shell command from Codex's argument shapes: `["bash", "-lc", "…"]`, a string, or
/// `{"cmd": "…"}`.
fn command_of(args: &Value) -> Option<String> {
    let c = args
        .get("command")
        .or_else(|| args.get("cmd"))
        .unwrap_or(args);
    match c {
        Value::String(s) => Some(strip_shell_wrapper(s)),
        Value::Array(parts) => {
            let words: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
            match words.as_slice() {
                [sh, flag, script] if sh.ends_with("sh") && flag.starts_with('-') => {
                    Some((*script).to_owned())
                }
                _ => Some(words.join(" ")),
            }
        }
        _ => None,
    }
}

/// `bash -lc 'cat x'` → `cat x`.
fn strip_shell_wrapper(s: &str) -> String {
    for prefix in ["bash -lc ", "bash -c ", "sh -c ", "zsh -lc "] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let r = rest.trim();
            if r.len() >= 2
                && ((r.starts_with('\'') && r.ends_with('\''))
                    || (r.starts_with('"') && r.ends_with('"')))
            {
                return r[1..r.len() - 1].to_owned();
            }
            return r.to_owned();
        }
    }
    s.to_owned()
}

/// Paths named in an `apply_patch` body.
fn patch_paths(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|l| {
            l.strip_prefix("*** Update File: ")
                .or_else(|| l.strip_prefix("*** Add File: "))
                .or_else(|| l.strip_prefix("*** Delete File: "))
        })
        .map(|p| p.trim().to_owned())
        .take(crate::model::MAX_PATHS)
        .collect()
}

fn patch_call(id: &str, name: &str, patch: &str) -> NewCall {
    let mut c = NewCall::tool(id, name, Action::Edit, patch.to_owned());
    c.paths = patch_paths(patch);
    c.edit = c.paths.first().map(|p| EditInfo {
        path: p.clone(),
        before: None,
        after: Some(text_digest(patch)),
    });
    c.command = c.paths.first().map(|p| format!("{name} {p}"));
    c
}

/// A Codex tool call from its name and arguments.
fn call_of(id: &str, name: &str, args: &Value) -> NewCall {
    match name {
        "shell" | "container.exec" | "exec_command" | "shell_command" | "local_shell" => {
            match command_of(args) {
                Some(cmd) => NewCall::shell(id, name, &cmd),
                None => NewCall::tool(id, name, Action::Run, args.to_string()),
            }
        }
        "apply_patch" => {
            let body = args
                .get("input")
                .or_else(|| args.get("patch"))
                .and_then(Value::as_str)
                .or_else(|| args.as_str())
                .unwrap_or("");
            patch_call(id, name, body)
        }
        "view_image" | "read_file" => NewCall::tool(id, name, Action::Read, args.to_string()),
        n if n.ends_with("complete_step") || n.ends_with("continue_workflow") => {
            NewCall::tool(id, name, Action::Submit, args.to_string())
        }
        _ => NewCall::tool(id, name, Action::Other, args.to_string()),
    }
}

/// The text, exit code and duration of a `function_call_output`.
fn output_of(v: &Value) -> (String, Option<i32>, Option<u64>) {
    let raw = match v {
        Value::String(s) => s.clone(),
        Value::Object(_) => v
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    };
    if raw.starts_with('{')
        && let Ok(j) = serde_json::from_str::<Value>(&raw)
        && let Some(out) = j.get("output").and_then(Value::as_str)
    {
        let meta = j.get("metadata");
        let code = meta
            .and_then(|m| m.get("exit_code"))
            .and_then(Value::as_i64)
            .map(|c| c as i32);
        let dur = meta
            .and_then(|m| m.get("duration_seconds"))
            .and_then(Value::as_f64)
            .map(|s| (s * 1000.0) as u64);
        return (out.to_owned(), code, dur);
    }
    let mut code = None;
    for l in raw.lines().take(8) {
        let l = l.trim();
        if let Some(n) = l
            .strip_prefix("Exit code:")
            .or_else(|| l.strip_prefix("Process exited with code"))
        {
            code = n.trim().parse().ok();
        }
    }
    (raw, code, None)
}

/// Codex reports input including cached tokens.
fn tokens_of(u: &Value) -> Tokens {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cached_input_tokens");
    Tokens {
        input: n("input_tokens").saturating_sub(cached),
        output: n("output_tokens"),
        cache_read: cached,
        cache_write: 0,
    }
}

/// A rollout file.
pub(crate) struct Rollout {
    b: TraceBuilder,
    id_set: bool,
    in_turn: bool,
    turn_no: u32,
    exit_codes: HashMap<String, i32>,
    last_total: Option<Tokens>,
}

impl Rollout {
    pub(crate) fn new(fallback: String, max_turns: usize) -> Self {
        Self {
            b: TraceBuilder::new(Source::Codex, fallback, max_turns),
            id_set: false,
            in_turn: false,
            turn_no: 0,
            exit_codes: HashMap::new(),
            last_total: None,
        }
    }

    fn model_item(&mut self, at: Option<i64>) {
        if !self.in_turn {
            self.turn_no += 1;
            let id = format!("turn:{}", self.turn_no);
            self.b.turn(&id, at, None);
            self.in_turn = true;
        }
    }
}

impl LineParser for Rollout {
    fn record(&mut self, v: Value, _line: u64) -> Result<(), String> {
        let at = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339_ms);
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let p = v.get("payload").unwrap_or(&Value::Null);
        self.b.saw_time(at);
        match ty {
            "session_meta" => {
                if let Some(id) = p.get("id").and_then(Value::as_str)
                    && !self.id_set
                {
                    let t = self.b.trace();
                    t.native_id = id.to_owned();
                    t.id = format!("{}:{id}", Source::Codex.as_str());
                    self.id_set = true;
                }
            }
            "turn_context" => {
                if let Some(m) = p.get("model").and_then(Value::as_str)
                    && self.b.peek().model.is_none()
                {
                    self.b.trace().model = Some(m.to_owned());
                }
            }
            "compacted" => self.b.compaction(),
            "response_item" => {
                let pt = p.get("type").and_then(Value::as_str).unwrap_or("");
                match pt {
                    "message" => {
                        let role = p.get("role").and_then(Value::as_str).unwrap_or("");
                        let text: String = p
                            .get("content")
                            .and_then(Value::as_array)
                            .map(|c| {
                                c.iter()
                                    .filter_map(|x| x.get("text").and_then(Value::as_str))
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            })
                            .unwrap_or_default();
                        if role == "assistant" {
                            self.model_item(at);
                            self.b.text(&text);
                        } else {
                            self.in_turn = false;
                            if role == "user"
                                && self.b.peek().task.is_none()
                                && !text.trim_start().starts_with('<')
                                && !text.trim().is_empty()
                            {
                                self.b.trace().task = Some(bounded(&text, 200));
                            }
                        }
                    }
                    "reasoning" => self.model_item(at),
                    "function_call" => {
                        self.model_item(at);
                        let name = p
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("function_call without `name`")?;
                        let id = p.get("call_id").and_then(Value::as_str).unwrap_or("");
                        let args = match p.get("arguments") {
                            Some(Value::String(s)) => {
                                serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                            }
                            Some(other) => other.clone(),
                            None => Value::Null,
                        };
                        self.b.call(call_of(id, name, &args));
                    }
                    "custom_tool_call" => {
                        self.model_item(at);
                        let name = p.get("name").and_then(Value::as_str).unwrap_or("custom");
                        let id = p.get("call_id").and_then(Value::as_str).unwrap_or("");
                        let input = p.get("input").and_then(Value::as_str).unwrap_or("");
                        let call = if name == "apply_patch" {
                            patch_call(id, name, input)
                        } else {
                            call_of(id, name, &Value::String(input.to_owned()))
                        };
                        self.b.call(call);
                    }
                    "local_shell_call" => {
                        self.model_item(at);
                        let id = p
                            .get("call_id")
                            .or_else(|| p.get("id"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let args = p.get("action").cloned().unwrap_or(Value::Null);
                        self.b.call(call_of(id, "local_shell", &args));
                    }
                    "web_search_call" => {
                        self.model_item(at);
                        self.b.call(NewCall::tool(
                            "",
                            "web_search",
                            Action::Other,
                            p.to_string(),
                        ));
                    }
                    "function_call_output"
                    | "custom_tool_call_output"
                    | "local_shell_call_output" => {
                        self.in_turn = false;
                        let id = p.get("call_id").and_then(Value::as_str).unwrap_or("");
                        let (text, code, dur) = output_of(p.get("output").unwrap_or(&Value::Null));
                        let code = code.or_else(|| self.exit_codes.remove(id));
                        let lower: String = text
                            .chars()
                            .take(200)
                            .collect::<String>()
                            .to_ascii_lowercase();
                        self.b.result(
                            id,
                            CallResult {
                                text: &text,
                                is_error: lower.starts_with("error")
                                    || lower.contains("failed to apply"),
                                exit_code: code,
                                timed_out: lower.contains("timed out"),
                                denied: lower.contains("rejected by user")
                                    || lower.contains("denied by"),
                                truncated: false,
                                duration_ms: dur,
                                full_bytes: None,
                            },
                        );
                    }
                    _ => {}
                }
            }
            "event_msg" => {
                let pt = p.get("type").and_then(Value::as_str).unwrap_or("");
                match pt {
                    "token_count" => {
                        if let Some(total) = p
                            .get("info")
                            .and_then(|i| i.get("total_token_usage"))
                            .filter(|t| !t.is_null())
                        {
                            let now = tokens_of(total);
                            let prev = self.last_total.unwrap_or_default();
                            if now != prev {
                                let delta = Tokens {
                                    input: now.input.saturating_sub(prev.input),
                                    output: now.output.saturating_sub(prev.output),
                                    cache_read: now.cache_read.saturating_sub(prev.cache_read),
                                    cache_write: 0,
                                };
                                self.b.tokens_total(delta, None);
                                self.last_total = Some(now);
                            }
                        }
                    }
                    "exec_command_end" => {
                        if let (Some(id), Some(code)) = (
                            p.get("call_id").and_then(Value::as_str),
                            p.get("exit_code").and_then(Value::as_i64),
                        ) && self.exit_codes.len() < 4096
                        {
                            self.exit_codes.insert(id.to_owned(), code as i32);
                        }
                    }
                    "context_compacted" => self.b.compaction(),
                    "turn_aborted" => {
                        self.in_turn = false;
                        let reason = p.get("reason").and_then(Value::as_str).unwrap_or("aborted");
                        self.b.trace().outcome_reason = Some(format!("turn aborted: {reason}"));
                    }
                    "user_message" => self.in_turn = false,
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Vec<Trace> {
        vec![self.b.finish()]
    }
}

/// A `codex exec --json` stream.
pub(crate) struct Exec {
    b: TraceBuilder,
    in_turn: bool,
    turn_no: u32,
    started: std::collections::HashSet<String>,
}

impl Exec {
    pub(crate) fn new(fallback: String, max_turns: usize) -> Self {
        Self {
            b: TraceBuilder::new(Source::CodexExec, fallback, max_turns),
            in_turn: false,
            turn_no: 0,
            started: std::collections::HashSet::new(),
        }
    }

    fn model_item(&mut self) {
        if !self.in_turn {
            self.turn_no += 1;
            let id = format!("turn:{}", self.turn_no);
            self.b.turn(&id, None, None);
            self.in_turn = true;
        }
    }

    fn item_call(&mut self, item: &Value) -> Option<String> {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let call = match item.get("type").and_then(Value::as_str)? {
            "command_execution" => {
                let cmd = item.get("command").and_then(Value::as_str).unwrap_or("");
                NewCall::shell(&id, "command_execution", &strip_shell_wrapper(cmd))
            }
            "file_change" => {
                let paths: Vec<String> = item
                    .get("changes")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| c.get("path").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut c = NewCall::tool(
                    &id,
                    "file_change",
                    Action::Edit,
                    item.get("changes")
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                );
                c.edit = paths.first().map(|p| EditInfo {
                    path: p.clone(),
                    before: None,
                    after: None,
                });
                c.command = paths
                    .first()
                    .map(|p| normalize::command_text(&format!("file_change {p}")));
                c.paths = paths;
                c
            }
            "mcp_tool_call" => {
                let tool = item.get("tool").and_then(Value::as_str).unwrap_or("mcp");
                let args = item.get("arguments").cloned().unwrap_or(Value::Null);
                call_of(&id, tool, &args)
            }
            "web_search" => NewCall::tool(
                &id,
                "web_search",
                Action::Other,
                item.get("query").map(|q| q.to_string()).unwrap_or_default(),
            ),
            _ => return None,
        };
        self.model_item();
        self.b.call(call);
        Some(id)
    }
}

impl LineParser for Exec {
    fn record(&mut self, v: Value, _line: u64) -> Result<(), String> {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "thread.started" => {
                if let Some(id) = v.get("thread_id").and_then(Value::as_str) {
                    let t = self.b.trace();
                    t.native_id = id.to_owned();
                    t.id = format!("{}:{id}", Source::CodexExec.as_str());
                }
            }
            "turn.started" => self.in_turn = false,
            "turn.completed" => {
                self.in_turn = false;
                if let Some(u) = v.get("usage") {
                    self.b.tokens_total(tokens_of(u), None);
                }
            }
            "turn.failed" | "error" => {
                let msg = v
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("failed");
                let t = self.b.trace();
                t.outcome = crate::model::Outcome::Failed;
                t.outcome_reason = Some(bounded(msg, 200));
            }
            "item.started" | "item.updated" | "item.completed" => {
                let item = v.get("item").ok_or("item event without `item`")?;
                let it = item.get("type").and_then(Value::as_str).unwrap_or("");
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match it {
                    "reasoning" => self.model_item(),
                    "agent_message" if ty == "item.completed" => {
                        self.model_item();
                        let t = item.get("text").and_then(Value::as_str).unwrap_or("");
                        self.b.text(t);
                    }
                    "command_execution" | "file_change" | "mcp_tool_call" | "web_search" => {
                        if !self.started.contains(&id) {
                            self.item_call(item);
                            self.started.insert(id.clone());
                        }
                        if ty == "item.completed" {
                            self.started.remove(&id);
                            self.in_turn = false;
                            let status = item.get("status").and_then(Value::as_str).unwrap_or("");
                            let text = item
                                .get("aggregated_output")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .or_else(|| item.get("result").map(|r| r.to_string()))
                                .or_else(|| item.get("error").map(|r| r.to_string()))
                                .unwrap_or_default();
                            let code = item
                                .get("exit_code")
                                .and_then(Value::as_i64)
                                .map(|c| c as i32);
                            self.b.result(
                                &id,
                                CallResult {
                                    text: &text,
                                    is_error: status == "failed"
                                        || item.get("error").is_some_and(|e| !e.is_null()),
                                    exit_code: code,
                                    timed_out: false,
                                    denied: status == "declined",
                                    truncated: false,
                                    duration_ms: None,
                                    full_bytes: None,
                                },
                            );
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Vec<Trace> {
        vec![self.b.finish()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_unwrap_the_shell() {
        assert_eq!(
            command_of(&serde_json::json!({"command": ["bash", "-lc", "cat test.js"]})).as_deref(),
            Some("cat test.js")
        );
        assert_eq!(strip_shell_wrapper("bash -lc 'cat test.js'"), "cat test.js");
        assert_eq!(
            patch_paths("*** Begin Patch\n*** Update File: src/a.rs\n@@\n-x\n+y\n*** End Patch"),
            vec!["src/a.rs"]
        );
    }
}
