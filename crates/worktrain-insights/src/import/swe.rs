//! Benchmark trajectories: mini-SWE-agent (`*.traj.json`, `info` + `messages[]`,
//! format `mini-swe-agent-1`) and SWE-agent (`*.traj`, `trajectory[]` + `info`).
//!
//! A trajectory is one JSON document. It is read as a stream: the message (or step) array
//! is visited one element at a time, so memory is bounded by the largest single message,
//! not by the file. The run's exit status comes from `info.exit_status`; whether the task
//! was resolved is not in the file (use `insights eval --labels`).

use std::fmt;
use std::io::{BufRead, Read};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::builder::{CallResult, NewCall, TraceBuilder};
use super::{FileImport, Format, ImportError, ImportOptions, Sink};
use crate::model::{Action, HarnessReply, Outcome, Source, Tokens};
use crate::normalize::{self, bounded};

/// Counts bytes and newlines delivered to the JSON parser (for line numbers).
struct Counting<R> {
    inner: R,
    bytes: u64,
    lines: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(n)
    }
}

#[derive(Debug, Default, Deserialize)]
struct ModelStats {
    #[serde(default)]
    instance_cost: Option<f64>,
    #[serde(default)]
    tokens_sent: Option<u64>,
    #[serde(default)]
    tokens_received: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Info {
    #[serde(default)]
    exit_status: Option<String>,
    #[serde(default)]
    submission: Option<String>,
    #[serde(default)]
    model_stats: Option<ModelStats>,
}

struct State<'a> {
    b: TraceBuilder,
    format: Format,
    sink: Sink<'a>,
    records: u64,
    info: Option<Info>,
    instance: Option<String>,
    /// Whether the last assistant message had exactly one action.
    pending_action: bool,
    turn_costs: bool,
    seen_task: bool,
}

/// The bash block(s) of a mini-SWE-agent message.
fn bash_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let (lang, body_start) = match after.find('\n') {
            Some(n) => (after[..n].trim(), n + 1),
            None => break,
        };
        let body = &after[body_start..];
        let Some(end) = body.find("```") else { break };
        if lang == "bash" || lang == "sh" {
            out.push(body[..end].trim_end_matches('\n'));
        }
        rest = &body[end + 3..];
    }
    out
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `<tag>…</tag>` in an observation.
fn between<'t>(s: &'t str, open: &str, close: &str) -> Option<&'t str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close).map_or(s.len(), |j| i + j);
    Some(&s[i..j])
}

impl State<'_> {
    fn task_from(&mut self, text: &str) {
        let t = between(text, "<pr_description>", "</pr_description>")
            .map(|d| {
                d.trim()
                    .trim_start_matches("Consider the following PR description:")
                    .trim()
            })
            .unwrap_or(text);
        self.b.trace().task = Some(bounded(t, 200));
        self.seen_task = true;
    }

    fn mini_message(&mut self, m: Value, idx: u64, line: u64) {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            self.sink.bad(line, format!("message {idx} has no `role`"));
            return;
        };
        let text = content_text(m.get("content").unwrap_or(&Value::Null));
        match role {
            "system" => {}
            "assistant" => {
                let resp = m.get("extra").and_then(|e| e.get("response"));
                let native = resp
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("msg:{idx}"));
                let at = resp
                    .and_then(|r| r.get("created"))
                    .and_then(Value::as_i64)
                    .map(|s| s * 1000);
                self.b.turn(&native, at, None);
                if let Some(model) = resp.and_then(|r| r.get("model")).and_then(Value::as_str)
                    && self.b.peek().model.is_none()
                {
                    self.b.trace().model = Some(model.to_owned());
                }
                if let Some(u) = resp.and_then(|r| r.get("usage")) {
                    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                    let cached = u
                        .get("prompt_tokens_details")
                        .and_then(|d| d.get("cached_tokens"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let cost = u.get("cost").and_then(Value::as_f64);
                    if cost.is_some() {
                        self.turn_costs = true;
                    }
                    self.b.tokens(
                        Tokens {
                            input: n("prompt_tokens").saturating_sub(cached),
                            output: n("completion_tokens"),
                            cache_read: cached,
                            cache_write: 0,
                        },
                        cost,
                    );
                }
                // The visible text is the THOUGHT part; the command is the call.
                let thought = match text.find("```") {
                    Some(i) => &text[..i],
                    None => &text[..],
                };
                self.b
                    .text(thought.trim().trim_start_matches("THOUGHT:").trim());
                let blocks = bash_blocks(&text);
                self.pending_action = blocks.len() == 1;
                if let [cmd] = blocks.as_slice() {
                    let mut call = NewCall::shell(format!("msg:{idx}"), "bash", cmd);
                    if cmd.contains("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
                        || cmd.contains("MINI_SWE_AGENT_FINAL_OUTPUT")
                    {
                        call.action = Action::Submit;
                    }
                    self.b.call(call);
                }
            }
            "user" | "tool" => {
                if !self.seen_task {
                    self.task_from(&text);
                    return;
                }
                let t = text.trim_start();
                if t.starts_with("Please always provide EXACTLY ONE action")
                    || t.starts_with("Please always provide")
                    || (t.contains("format") && t.contains("<response_example>"))
                {
                    self.b.harness(HarnessReply::FormatError);
                    self.pending_action = false;
                    return;
                }
                if !self.pending_action {
                    return;
                }
                self.pending_action = false;
                if t.starts_with("The last command") && t.contains("timed out") {
                    let out = between(t, "<output>", "</output>").unwrap_or("");
                    self.b.result_last(CallResult {
                        text: out,
                        timed_out: true,
                        ..CallResult::default()
                    });
                    return;
                }
                let code = between(t, "<returncode>", "</returncode>")
                    .and_then(|c| c.trim().parse::<i32>().ok());
                let truncated = t.contains("<output_head>") || t.contains("<elided_chars>");
                let (out, full) = if truncated {
                    let head = between(t, "<output_head>", "</output_head>").unwrap_or("");
                    let tail = between(t, "<output_tail>", "</output_tail>").unwrap_or("");
                    let elided = between(t, "<elided_chars>", "</elided_chars>")
                        .and_then(|e| e.split_whitespace().next()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    let joined = format!("{head}\n{tail}");
                    let full = joined.len() as u64 + elided;
                    (joined, Some(full))
                } else {
                    (
                        between(t, "<output>", "</output>").unwrap_or(t).to_owned(),
                        None,
                    )
                };
                self.b.result_last(CallResult {
                    text: &out,
                    exit_code: code,
                    truncated,
                    full_bytes: full,
                    ..CallResult::default()
                });
            }
            other => self
                .sink
                .bad(line, format!("message {idx} has unknown role `{other}`")),
        }
    }

    /// One step of a SWE-agent `trajectory`.
    fn swe_step(&mut self, s: Value, idx: u64, line: u64) {
        let Some(action) = s.get("action").and_then(Value::as_str) else {
            self.sink
                .bad(line, format!("trajectory step {idx} has no `action`"));
            return;
        };
        let thought = s.get("thought").and_then(Value::as_str).unwrap_or_default();
        let obs = s
            .get("observation")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.b.turn(&format!("step:{idx}"), None, None);
        self.b.text(thought);
        let call = swe_agent_call(idx, action);
        self.b.call(call);
        let lower: String = obs
            .chars()
            .take(300)
            .collect::<String>()
            .to_ascii_lowercase();
        let is_error = lower.contains("usage:")
            || lower.contains("error:")
            || lower.contains("no such file")
            || lower.contains("command not found")
            || lower.starts_with("your proposed edit has introduced new syntax error");
        self.b.result_last(CallResult {
            text: obs,
            is_error,
            timed_out: lower.contains("timed out"),
            duration_ms: s
                .get("execution_time")
                .and_then(Value::as_f64)
                .map(|x| (x * 1000.0) as u64),
            ..CallResult::default()
        });
    }
}

/// A SWE-agent action: its own commands (`open`, `edit`, `search_dir`, `submit`,
/// `str_replace_editor …`) or plain bash.
fn swe_agent_call(idx: u64, action: &str) -> NewCall {
    let id = format!("step:{idx}");
    let first_line = action.lines().next().unwrap_or("").trim();
    let mut words = first_line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next().map(|s| s.trim_matches('"').to_owned());
    let (act, path) = match cmd {
        "open" | "goto" | "scroll_up" | "scroll_down" => (Action::Read, arg),
        "search_dir" | "search_file" | "find_file" => (Action::Search, None),
        "edit" | "insert" | "create" => (Action::Edit, arg.filter(|_| cmd == "create")),
        "submit" => (Action::Submit, None),
        "str_replace_editor" => {
            let sub = arg.unwrap_or_default();
            let p = first_line.split_whitespace().nth(2).map(str::to_owned);
            match sub.as_str() {
                "view" => (Action::Read, p),
                _ => (Action::Edit, p),
            }
        }
        _ => return NewCall::shell(id, "bash", action),
    };
    let mut c = NewCall::tool(id, cmd, act, action.to_owned());
    c.command = Some(normalize::command_text(first_line));
    if let Some(p) = path {
        c.paths.push(p.clone());
        if act == Action::Edit {
            c.edit = Some(crate::model::EditInfo {
                path: p,
                before: None,
                after: Some(normalize::text_digest(action)),
            });
        }
    }
    c
}

struct Doc<'s, 'a> {
    state: &'s mut State<'a>,
    lines: &'s std::cell::Cell<u64>,
}

struct Elements<'s, 'a> {
    state: &'s mut State<'a>,
    lines: &'s std::cell::Cell<u64>,
    mini: bool,
}

impl<'de> DeserializeSeed<'de> for Elements<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i: u64 = 0;
        while let Some(m) = seq.next_element::<Value>()? {
            let line = self.lines.get();
            self.state.records += 1;
            if self.mini {
                self.state.mini_message(m, i, line);
            } else {
                self.state.swe_step(m, i, line);
            }
            i += 1;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Doc<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Doc<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a trajectory object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "messages" => {
                    self.state.format = Format::MiniSweAgent;
                    map.next_value_seed(Elements {
                        state: self.state,
                        lines: self.lines,
                        mini: true,
                    })?
                }
                "trajectory" => {
                    self.state.format = Format::SweAgent;
                    map.next_value_seed(Elements {
                        state: self.state,
                        lines: self.lines,
                        mini: false,
                    })?
                }
                "info" => self.state.info = Some(map.next_value::<Info>()?),
                "instance_id" => self.state.instance = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A reader that publishes its line count through a shared cell.
struct Published<R> {
    inner: Counting<R>,
    cell: std::rc::Rc<std::cell::Cell<u64>>,
    bytes: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: BufRead> Read for Published<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.cell.set(self.inner.lines + 1);
        self.bytes.set(self.inner.bytes);
        Ok(n)
    }
}

pub(crate) fn import<R: BufRead>(
    reader: R,
    file: &str,
    format: Format,
    opts: &ImportOptions,
) -> Result<FileImport, ImportError> {
    let stem = std::path::Path::new(file)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("trajectory")
        .trim_end_matches(".json")
        .trim_end_matches(".traj")
        .to_owned();
    let source = match format {
        Format::SweAgent => Source::SweAgent,
        // Only the two SWE formats are read here; the others have readers of their own.
        Format::MiniSweAgent | Format::ClaudeCode | Format::Codex | Format::CodexExec => {
            Source::MiniSweAgent
        }
    };
    let cell = std::rc::Rc::new(std::cell::Cell::new(1u64));
    let bytes_read = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut state = State {
        b: TraceBuilder::new(source, stem, opts.max_turns),
        format,
        sink: Sink::new(file, opts.max_reported),
        records: 0,
        info: None,
        instance: None,
        pending_action: false,
        turn_costs: false,
        seen_task: false,
    };
    let published = Published {
        inner: Counting {
            inner: reader,
            bytes: 0,
            lines: 0,
        },
        cell: cell.clone(),
        bytes: bytes_read.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(published);
    let result = Doc {
        state: &mut state,
        lines: &cell,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = result {
        if state.records == 0 && state.info.is_none() {
            return Err(ImportError::Document {
                file: file.to_owned(),
                line: e.line() as u64,
                reason: format!("not a readable trajectory: {e}"),
            });
        }
        // A cut-off document still yields what was read before the damage.
        state
            .sink
            .bad(e.line() as u64, format!("trajectory ends unreadably: {e}"));
    }
    drop(de);
    let bytes = bytes_read.get();
    let State {
        mut b,
        sink,
        records,
        info,
        instance,
        turn_costs,
        format,
        ..
    } = state;
    // The document's keys decide the format (`messages` or `trajectory`), whatever the
    // file name suggested.
    let source = format.source();
    {
        let t = b.trace();
        t.source = source;
        t.id = format!("{}:{}", source.as_str(), t.native_id);
    }
    if let Some(id) = instance.filter(|i| !i.is_empty()) {
        let t = b.trace();
        t.id = format!("{}:{id}", source.as_str());
        t.native_id = id;
    }
    if let Some(info) = info {
        let t = b.trace();
        if let Some(stats) = &info.model_stats {
            if !turn_costs && let Some(c) = stats.instance_cost {
                t.cost_usd = Some(c);
            }
            if t.tokens.is_zero() {
                t.tokens.input = stats.tokens_sent.unwrap_or(0);
                t.tokens.output = stats.tokens_received.unwrap_or(0);
            }
        }
        let empty = info
            .submission
            .as_deref()
            .is_none_or(|s| s.trim().is_empty());
        if let Some(diff) = info.submission.as_deref() {
            t.counts.changed_lines = diff
                .lines()
                .filter(|l| {
                    (l.starts_with('+') && !l.starts_with("+++"))
                        || (l.starts_with('-') && !l.starts_with("---"))
                })
                .count() as u64;
        }
        match info.exit_status.as_deref() {
            Some("Submitted" | "submitted") if !empty => {
                t.outcome_reason = Some("submitted".to_owned());
            }
            Some(s) => {
                t.outcome = Outcome::Failed;
                t.outcome_reason = Some(if empty && s.eq_ignore_ascii_case("submitted") {
                    "submitted an empty patch".to_owned()
                } else {
                    format!("exit status: {}", bounded(s, 80))
                });
            }
            None => {}
        }
    }
    Ok(FileImport {
        file: file.to_owned(),
        format,
        bytes,
        records,
        malformed_count: sink.count,
        malformed: sink.list,
        traces: vec![b.finish()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_blocks_are_found() {
        let t = "THOUGHT: x\n\n```bash\nls -la\n```\n";
        assert_eq!(bash_blocks(t), vec!["ls -la"]);
        let t = "```bash\nls\n```\nand\n```bash\npwd\n```";
        assert_eq!(bash_blocks(t).len(), 2);
        assert!(bash_blocks("no code").is_empty());
    }

    #[test]
    fn swe_agent_commands_map_to_actions() {
        assert_eq!(swe_agent_call(0, "open src/x.py").action, Action::Read);
        assert_eq!(
            swe_agent_call(0, "search_dir \"foo\"").action,
            Action::Search
        );
        assert_eq!(
            swe_agent_call(0, "edit 1:2\nx\nend_of_edit").action,
            Action::Edit
        );
        assert_eq!(swe_agent_call(0, "submit").action, Action::Submit);
        assert_eq!(
            swe_agent_call(0, "python -m pytest t.py").action,
            Action::Test
        );
    }
}
