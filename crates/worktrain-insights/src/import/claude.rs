//! Claude Code transcripts (`~/.claude/projects/<project>/<session>.jsonl`, and sub-agent
//! transcripts in `<session>/subagents/agent-<id>.jsonl`).
//!
//! One API message is often split over several records (one per content block), each
//! repeating the message's usage: records with the same `message.id` form one turn and
//! its usage is counted once. Tool results arrive in later `user` records and are matched
//! by `tool_use_id`. Sidechain records (sub-agents) become turns tagged with their agent.
//! `compact_boundary` records and compaction summaries mark context compactions.

use serde_json::Value;

use super::builder::{CallResult, NewCall, TraceBuilder};
use super::{LineParser, parse_rfc3339_ms};
use crate::model::{Action, EditInfo, HarnessReply, Source, Tokens, Trace};
use crate::normalize::{self, bounded, text_digest};

pub(crate) struct Parser {
    fallback_id: String,
    max_turns: usize,
    builder: Option<TraceBuilder>,
    cwd: Option<String>,
    model_seen: bool,
}

impl Parser {
    pub(crate) fn new(fallback_id: String, max_turns: usize) -> Self {
        Self {
            fallback_id,
            max_turns,
            builder: None,
            cwd: None,
            model_seen: false,
        }
    }

    fn builder(&mut self, v: &Value) -> &mut TraceBuilder {
        if self.builder.is_none() {
            let session = v
                .get("sessionId")
                .and_then(Value::as_str)
                .unwrap_or(&self.fallback_id)
                .to_owned();
            // A sub-agent transcript: every record is a sidechain of the parent session.
            let native = match (
                v.get("isSidechain").and_then(Value::as_bool),
                v.get("agentId").and_then(Value::as_str),
            ) {
                (Some(true), Some(agent)) => format!("{session}/agent-{agent}"),
                _ => session,
            };
            self.builder = Some(TraceBuilder::new(
                Source::ClaudeCode,
                native,
                self.max_turns,
            ));
        }
        self.builder.as_mut().unwrap_or_else(|| unreachable!())
    }

    fn rel(&self, p: &str) -> String {
        match &self.cwd {
            Some(c) if p.starts_with(c.as_str()) => p[c.len()..].trim_start_matches('/').to_owned(),
            _ => p.to_owned(),
        }
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut out = String::new();
            for i in items {
                if let Some(t) = i.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                    out.push('\n');
                }
            }
            out
        }
        _ => String::new(),
    }
}

fn tokens_of(u: &Value) -> Tokens {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("input_tokens"),
        output: n("output_tokens"),
        cache_read: n("cache_read_input_tokens"),
        cache_write: n("cache_creation_input_tokens"),
    }
}

impl Parser {
    fn tool_use(&self, b: &Value) -> Result<NewCall, String> {
        let id = b.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let name = b
            .get("name")
            .and_then(Value::as_str)
            .ok_or("tool_use block without `name`")?
            .to_owned();
        let input = b.get("input").cloned().unwrap_or(Value::Null);
        let s = |k: &str| input.get(k).and_then(Value::as_str);
        let key = serde_json::to_string(&input).unwrap_or_default();
        let path = s("file_path")
            .or_else(|| s("notebook_path"))
            .or_else(|| s("path"));
        let mut call = match name.as_str() {
            "Bash" => return Ok(NewCall::shell(id, name, s("command").unwrap_or(""))),
            "Read" => NewCall::tool(id, name, Action::Read, key),
            "Write" => {
                let mut c = NewCall::tool(id, name, Action::Edit, key);
                c.edit = path.map(|p| EditInfo {
                    path: self.rel(p),
                    before: None,
                    after: s("content").map(text_digest),
                });
                c
            }
            "Edit" => {
                let mut c = NewCall::tool(id, name, Action::Edit, key);
                c.edit = path.map(|p| EditInfo {
                    path: self.rel(p),
                    before: s("old_string").map(text_digest),
                    after: s("new_string").map(text_digest),
                });
                c
            }
            "MultiEdit" => {
                let mut c = NewCall::tool(id, name, Action::Edit, key);
                let edits = input.get("edits").and_then(Value::as_array);
                let join = |k: &str| {
                    edits.map(|es| {
                        let all: Vec<&str> = es
                            .iter()
                            .filter_map(|e| e.get(k).and_then(Value::as_str))
                            .collect();
                        text_digest(&all.join("\n\u{1f}\n"))
                    })
                };
                c.edit = path.map(|p| EditInfo {
                    path: self.rel(p),
                    before: join("old_string"),
                    after: join("new_string"),
                });
                c
            }
            "NotebookEdit" => NewCall::tool(id, name, Action::Edit, key),
            "Glob" | "Grep" => NewCall::tool(id, name, Action::Search, key),
            "LS" => NewCall::tool(id, name, Action::List, key),
            "Task" | "Agent" => NewCall::tool(id, name, Action::Delegate, key),
            n if n.ends_with("complete_step") || n.ends_with("continue_workflow") => {
                NewCall::tool(id, name, Action::Submit, key)
            }
            _ => NewCall::tool(id, name, Action::Other, key),
        };
        if let Some(p) = path {
            call.paths.push(self.rel(p));
        }
        let summary = match call.action {
            Action::Search => s("pattern").map(|p| format!("{} {p}", call.name)),
            Action::Read
            | Action::List
            | Action::Edit
            | Action::Test
            | Action::Run
            | Action::Submit
            | Action::Delegate
            | Action::Other => path.map(|p| format!("{} {}", call.name, self.rel(p))),
        };
        call.command = summary.map(|c| normalize::command_text(&c));
        Ok(call)
    }
}

/// The flags of a `tool_result` block (the text is attached by the caller).
fn result_flags<'t>(item: &Value, extra: Option<&Value>, text: &'t str) -> CallResult<'t> {
    let is_error = item
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let lower_head = text
        .chars()
        .take(300)
        .collect::<String>()
        .to_ascii_lowercase();
    let denied = is_error
        && (lower_head.contains("permission to use")
            || lower_head.contains("requested permissions")
            || lower_head.contains("doesn't want to proceed")
            || lower_head.contains("was rejected")
            || lower_head.contains("user denied"));
    let timed_out = lower_head.contains("command timed out")
        || extra
            .and_then(|e| e.get("interrupted"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let exit_code = if is_error {
        text.strip_prefix("Exit code ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    } else {
        None
    };
    CallResult {
        text,
        is_error,
        exit_code,
        timed_out,
        denied,
        truncated: false,
        duration_ms: None,
        full_bytes: None,
    }
}

impl LineParser for Parser {
    fn record(&mut self, v: Value, _line: u64) -> Result<(), String> {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let at = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339_ms);
        if self.cwd.is_none()
            && let Some(c) = v.get("cwd").and_then(Value::as_str)
        {
            self.cwd = Some(c.to_owned());
        }
        match ty {
            "assistant" => {
                let msg = v
                    .get("message")
                    .ok_or("assistant record without `message`")?;
                let content = msg
                    .get("content")
                    .ok_or("assistant message without `content`")?;
                let native = msg
                    .get("id")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("uuid").and_then(Value::as_str))
                    .unwrap_or("")
                    .to_owned();
                let agent = match v.get("isSidechain").and_then(Value::as_bool) {
                    Some(true) => Some(
                        v.get("agentId")
                            .and_then(Value::as_str)
                            .unwrap_or("sidechain")
                            .to_owned(),
                    ),
                    _ => None,
                };
                let mut calls = Vec::new();
                let mut texts = Vec::new();
                match content {
                    Value::Array(blocks) => {
                        for b in blocks {
                            match b.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    if let Some(t) = b.get("text").and_then(Value::as_str) {
                                        texts.push(t.to_owned());
                                    }
                                }
                                Some("tool_use" | "server_tool_use") => {
                                    calls.push(self.tool_use(b)?)
                                }
                                _ => {}
                            }
                        }
                    }
                    Value::String(s) => texts.push(s.clone()),
                    _ => return Err("assistant `content` is neither text nor blocks".into()),
                }
                let model = msg.get("model").and_then(Value::as_str).map(str::to_owned);
                let model_seen = self.model_seen;
                let b = self.builder(&v);
                let sub_file = b.peek().native_id.contains("/agent-");
                // In a sub-agent's own file, its turns are the trace's main lane.
                let agent = if sub_file { None } else { agent };
                b.turn(&native, at, agent.as_deref());
                for t in &texts {
                    b.text(t);
                }
                for c in calls {
                    b.call(c);
                }
                if let Some(u) = msg.get("usage") {
                    b.tokens(tokens_of(u), None);
                }
                if !model_seen && let Some(m) = model.filter(|m| m != "<synthetic>") {
                    b.trace().model = Some(m);
                    self.model_seen = true;
                }
            }
            "user" => {
                let msg = v.get("message").ok_or("user record without `message`")?;
                let content = msg.get("content").ok_or("user message without `content`")?;
                let is_meta = v.get("isMeta").and_then(Value::as_bool).unwrap_or(false);
                let compact = v
                    .get("isCompactSummary")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let extra = v.get("toolUseResult").cloned();
                let b = self.builder(&v);
                b.saw_time(at);
                if compact {
                    // The summary that replaces the compacted history (counted once with
                    // the boundary record when both are present).
                    return Ok(());
                }
                match content {
                    Value::String(s) => {
                        if s.starts_with("Stop hook feedback") || (is_meta && s.contains("hook")) {
                            b.harness(HarnessReply::StopRefused);
                        } else if !is_meta && b.peek().task.is_none() && !s.starts_with('<') {
                            b.trace().task = Some(bounded(s, 200));
                        }
                    }
                    Value::Array(items) => {
                        for item in items {
                            match item.get("type").and_then(Value::as_str) {
                                Some("tool_result") => {
                                    let text = text_of(item.get("content").unwrap_or(&Value::Null));
                                    let id = item
                                        .get("tool_use_id")
                                        .and_then(Value::as_str)
                                        .unwrap_or("");
                                    b.result(id, result_flags(item, extra.as_ref(), &text));
                                }
                                Some("text") => {
                                    let t = item.get("text").and_then(Value::as_str).unwrap_or("");
                                    if !is_meta
                                        && b.peek().task.is_none()
                                        && !t.starts_with('<')
                                        && !t.is_empty()
                                    {
                                        b.trace().task = Some(bounded(t, 200));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => return Err("user `content` is neither text nor blocks".into()),
                }
            }
            "system" => {
                let b = self.builder(&v);
                b.saw_time(at);
                if v.get("subtype").and_then(Value::as_str) == Some("compact_boundary") {
                    b.compaction();
                }
            }
            _ => {
                // queue-operation, summary, file-history-snapshot, last-prompt and record
                // types added by later versions: nothing to learn beyond the time.
                if let Some(b) = self.builder.as_mut() {
                    b.saw_time(at);
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Vec<Trace> {
        self.builder.map(|b| vec![b.finish()]).unwrap_or_default()
    }
}
