//! Builds a [`Trace`] incrementally while a source is streamed: turns, calls, results
//! arriving later than their calls, and the "was this large output ever used" check.
//! Memory is bounded by the turn cap, the pending-call cap and the token sample size.

use std::collections::HashMap;

use crate::model::{
    Action, CallStatus, EditInfo, HarnessReply, Source, Tokens, ToolCall, Trace, Turn,
};
use crate::normalize::{self, ShellInfo};

/// Results at least this large are checked for whether the agent's next turn used them.
pub(super) const LARGE_OUTPUT_BYTES: u64 = 4 * 1024;
/// Calls waiting for their result, at most (older ones are given up as missing).
const MAX_PENDING: usize = 4096;
/// Bytes scanned at each end of a large output for the words the agent might use.
const USE_SCAN: usize = 64 * 1024;

/// What a tool returned.
#[derive(Debug, Clone, Default)]
pub struct CallResult<'a> {
    /// The text the agent received.
    pub text: &'a str,
    /// The source marks it as an error.
    pub is_error: bool,
    /// Exit code, when known.
    pub exit_code: Option<i32>,
    /// It timed out.
    pub timed_out: bool,
    /// The harness refused it.
    pub denied: bool,
    /// The harness truncated it.
    pub truncated: bool,
    /// Wall time, when known.
    pub duration_ms: Option<u64>,
    /// The size of the full result when `text` is only part of it.
    pub full_bytes: Option<u64>,
}

/// A call about to be added.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Source id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Action.
    pub action: Action,
    /// Canonical argument bytes (hashed).
    pub args_key: String,
    /// Command or summary.
    pub command: Option<String>,
    /// Paths.
    pub paths: Vec<String>,
    /// Whether the result should be read as a test run.
    pub runs_tests: bool,
    /// Whether the call searches (an empty result matters).
    pub searches: bool,
    /// The change.
    pub edit: Option<EditInfo>,
}

impl NewCall {
    /// A call of a shell command, classified.
    pub fn shell(id: impl Into<String>, name: impl Into<String>, command: &str) -> Self {
        let ShellInfo {
            action,
            runs_tests,
            searches,
            paths,
            edit,
        } = normalize::classify_shell(command);
        Self {
            id: id.into(),
            name: name.into(),
            action,
            args_key: command.trim().to_owned(),
            command: Some(normalize::command_text(command)),
            paths,
            runs_tests,
            searches,
            edit,
        }
    }

    /// A call of a structured tool.
    pub fn tool(
        id: impl Into<String>,
        name: impl Into<String>,
        action: Action,
        args_key: String,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            action,
            args_key,
            command: None,
            paths: Vec::new(),
            runs_tests: false,
            searches: action == Action::Search,
            edit: None,
        }
    }
}

/// Incremental trace construction.
#[derive(Debug)]
pub struct TraceBuilder {
    trace: Trace,
    max_turns: usize,
    pending: HashMap<String, (usize, usize, bool, bool)>,
    pending_order: std::collections::VecDeque<String>,
    /// Outputs waiting for the next turn to tell whether they were used.
    awaiting_use: Vec<(usize, usize, std::collections::HashSet<u64>)>,
    /// Text and call arguments of the turn being built, for the use check (bounded).
    turn_text: String,
    /// Visible text of the turn being built (bounded), for its digest.
    visible: String,
    current_turn_native: Option<String>,
}

impl TraceBuilder {
    /// A builder for a trace of `source` with the given native id.
    pub fn new(source: Source, native_id: impl Into<String>, max_turns: usize) -> Self {
        Self {
            trace: Trace::new(source, native_id),
            max_turns,
            pending: HashMap::new(),
            pending_order: std::collections::VecDeque::new(),
            awaiting_use: Vec::new(),
            turn_text: String::new(),
            visible: String::new(),
            current_turn_native: None,
        }
    }

    /// The trace so far.
    pub fn trace(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// Read-only view.
    pub fn peek(&self) -> &Trace {
        &self.trace
    }

    /// Record a timestamp.
    pub fn saw_time(&mut self, ms: Option<i64>) {
        if let Some(ms) = ms {
            let t = &mut self.trace;
            t.started_at_ms = Some(t.started_at_ms.map_or(ms, |s| s.min(ms)));
            t.ended_at_ms = Some(t.ended_at_ms.map_or(ms, |e| e.max(ms)));
        }
    }

    /// Start a turn unless the current one has the same native id (sources that split
    /// one model message over several records). Returns whether a new turn began.
    pub fn turn(&mut self, native_id: &str, at_ms: Option<i64>, agent: Option<&str>) -> bool {
        if self.current_turn_native.as_deref() == Some(native_id) && !native_id.is_empty() {
            return false;
        }
        self.close_turn_text();
        self.saw_time(at_ms);
        self.trace.counts.turns += 1;
        self.current_turn_native = Some(native_id.to_owned());
        if self.trace.turns.len() >= self.max_turns {
            self.trace.truncated = true;
            return true;
        }
        let index = self.trace.turns.len() as u32;
        let step = self.trace.steps.len().checked_sub(1).map(|i| i as u32);
        self.trace.turns.push(Turn {
            index,
            id: if native_id.is_empty() {
                format!("turn:{index}")
            } else {
                native_id.to_owned()
            },
            at_ms,
            step,
            agent: agent.map(str::to_owned),
            text_chars: 0,
            text_hash: None,
            tokens: Tokens::default(),
            cost_usd: None,
            calls: Vec::new(),
            harness: None,
        });
        true
    }

    fn current(&mut self) -> Option<&mut Turn> {
        if self.trace.truncated {
            return None;
        }
        self.trace.turns.last_mut()
    }

    /// Visible text of the current turn (may be called several times per turn).
    pub fn text(&mut self, text: &str) {
        let t = text.trim();
        if t.is_empty() {
            return;
        }
        if self.turn_text.len() < 64 * 1024 {
            self.turn_text.push_str(t);
            self.turn_text.push('\n');
        }
        if self.visible.len() < 64 * 1024 {
            self.visible.push_str(t);
            self.visible.push('\n');
        }
        if let Some(turn) = self.current() {
            turn.text_chars = turn
                .text_chars
                .saturating_add(t.chars().count().min(u32::MAX as usize) as u32);
        }
    }

    /// Tokens of the current turn's LLM call (replaces earlier values for the same turn:
    /// sources that repeat usage on every record of one message report it once).
    pub fn tokens(&mut self, tokens: Tokens, cost_usd: Option<f64>) {
        let mut delta = tokens;
        let mut cost_delta = cost_usd;
        if let Some(turn) = self.current() {
            let old = turn.tokens;
            delta = Tokens {
                input: tokens.input.saturating_sub(old.input),
                output: tokens.output.saturating_sub(old.output),
                cache_read: tokens.cache_read.saturating_sub(old.cache_read),
                cache_write: tokens.cache_write.saturating_sub(old.cache_write),
            };
            turn.tokens = Tokens {
                input: old.input.max(tokens.input),
                output: old.output.max(tokens.output),
                cache_read: old.cache_read.max(tokens.cache_read),
                cache_write: old.cache_write.max(tokens.cache_write),
            };
            if let Some(c) = cost_usd {
                cost_delta = Some(c - turn.cost_usd.unwrap_or(0.0));
                turn.cost_usd = Some(c.max(turn.cost_usd.unwrap_or(0.0)));
            }
        }
        self.trace.tokens.add(&delta);
        if let Some(c) = cost_delta
            && c > 0.0
        {
            self.trace.cost_usd = Some(self.trace.cost_usd.unwrap_or(0.0) + c);
        }
    }

    /// Add tokens to the trace total without a turn (sources reporting usage per task).
    pub fn tokens_total(&mut self, tokens: Tokens, cost_usd: Option<f64>) {
        self.trace.tokens.add(&tokens);
        if let Some(c) = cost_usd {
            self.trace.cost_usd = Some(self.trace.cost_usd.unwrap_or(0.0) + c);
        }
    }

    /// Mark what the harness answered the current turn.
    pub fn harness(&mut self, reply: HarnessReply) {
        if let Some(t) = self.current() {
            t.harness = Some(reply);
        }
    }

    /// Add a call to the current turn.
    pub fn call(&mut self, c: NewCall) {
        self.trace.counts.tool_calls += 1;
        self.turn_text
            .push_str(&c.args_key.chars().take(4096).collect::<String>());
        self.turn_text.push('\n');
        let Some(turn_idx) = self.trace.turns.len().checked_sub(1) else {
            return;
        };
        if self.trace.truncated {
            return;
        }
        let turn = &mut self.trace.turns[turn_idx];
        let call_idx = turn.calls.len();
        turn.calls.push(ToolCall {
            id: c.id.clone(),
            name: c.name,
            action: c.action,
            args_hash: normalize::digest(c.args_key.as_bytes()),
            command: c.command,
            paths: c.paths,
            status: CallStatus::Missing,
            exit_code: None,
            error: None,
            output_bytes: 0,
            output_hash: None,
            output_empty: false,
            output_truncated: false,
            output_used: None,
            test: None,
            edit: c.edit,
            duration_ms: None,
        });
        if !c.id.is_empty() {
            if self.pending.len() >= MAX_PENDING
                && let Some(old) = self.pending_order.pop_front()
            {
                self.pending.remove(&old);
            }
            self.pending
                .insert(c.id.clone(), (turn_idx, call_idx, c.runs_tests, c.searches));
            self.pending_order.push_back(c.id);
        }
    }

    /// Attach a result to the call with this id. Unknown ids (results of calls beyond the
    /// turn cap, or of calls in a part of the file that was not read) are ignored.
    pub fn result(&mut self, call_id: &str, r: CallResult<'_>) {
        let Some((ti, ci, runs_tests, searches)) = self.pending.remove(call_id) else {
            if r.is_error || r.denied || r.timed_out {
                self.trace.counts.tool_errors += 1;
            }
            return;
        };
        self.apply_result(ti, ci, runs_tests, searches, r);
    }

    /// Attach a result to the last call of the current turn (sources without call ids).
    pub fn result_last(&mut self, r: CallResult<'_>) {
        let Some(ti) = self.trace.turns.len().checked_sub(1) else {
            return;
        };
        if self.trace.truncated {
            if r.is_error || r.denied || r.timed_out {
                self.trace.counts.tool_errors += 1;
            }
            return;
        }
        let Some(ci) = self.trace.turns[ti].calls.len().checked_sub(1) else {
            return;
        };
        let id = self.trace.turns[ti].calls[ci].id.clone();
        let (runs_tests, searches) =
            self.pending
                .remove(&id)
                .map(|p| (p.2, p.3))
                .unwrap_or_else(|| {
                    let a = self.trace.turns[ti].calls[ci].action;
                    (a == Action::Test, a == Action::Search)
                });
        self.apply_result(ti, ci, runs_tests, searches, r);
    }

    fn apply_result(
        &mut self,
        ti: usize,
        ci: usize,
        runs_tests: bool,
        searches: bool,
        r: CallResult<'_>,
    ) {
        let text = r.text;
        let status = if r.denied {
            CallStatus::Denied
        } else if r.timed_out {
            CallStatus::Timeout
        } else if r.is_error || r.exit_code.is_some_and(|c| c != 0) {
            CallStatus::Error
        } else {
            CallStatus::Ok
        };
        if status.is_failure() {
            self.trace.counts.tool_errors += 1;
        }
        let bytes = r.full_bytes.unwrap_or(text.len() as u64);
        let trimmed = text.trim();
        let empty = trimmed.is_empty()
            || (searches
                && (trimmed.starts_with("No files found")
                    || trimmed.starts_with("No matches found")
                    || trimmed == "0"));
        let call = &mut self.trace.turns[ti].calls[ci];
        call.status = status;
        call.exit_code = r.exit_code;
        call.output_bytes = bytes;
        call.output_hash = Some(normalize::text_digest(text));
        call.output_empty = empty && (searches || status == CallStatus::Ok);
        call.output_truncated = r.truncated;
        call.duration_ms = r.duration_ms;
        if runs_tests {
            call.test = Some(normalize::test_result(
                text,
                r.exit_code,
                r.is_error || r.timed_out,
            ));
        }
        if status.is_failure() {
            call.error = normalize::error_line(text)
                .or_else(|| r.timed_out.then(|| "timed out".to_owned()))
                .or_else(|| r.denied.then(|| "denied".to_owned()));
        }
        if bytes >= LARGE_OUTPUT_BYTES && call.action != Action::Edit {
            let words = normalize::word_hashes(text, USE_SCAN);
            if !words.is_empty() {
                self.awaiting_use.push((ti, ci, words));
            }
        }
    }

    /// The current turn is over: outputs from earlier turns are checked against its text.
    fn close_turn_text(&mut self) {
        let visible = std::mem::take(&mut self.visible);
        if let Some(turn) = self.trace.turns.last_mut()
            && !self.trace.truncated
            && !visible.is_empty()
        {
            turn.text_hash = Some(normalize::text_digest(&visible));
        }
        if self.turn_text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.turn_text);
        let current = self.trace.turns.len().saturating_sub(1);
        let mut still = Vec::new();
        for (ti, ci, tokens) in std::mem::take(&mut self.awaiting_use) {
            if ti >= current && !self.trace.truncated {
                // The output arrived for this very turn's calls; the next turn decides.
                still.push((ti, ci, tokens));
                continue;
            }
            let used = normalize::mentions_any(&text, &tokens);
            if let Some(c) = self
                .trace
                .turns
                .get_mut(ti)
                .and_then(|t| t.calls.get_mut(ci))
            {
                c.output_used = Some(used);
            }
        }
        self.awaiting_use = still;
    }

    /// Mark a context compaction after the current turn.
    pub fn compaction(&mut self) {
        self.trace.counts.compactions += 1;
        let at = self.trace.turns.len().saturating_sub(1) as u32;
        if self.trace.compactions.len() < 10_000 {
            self.trace.compactions.push(at);
        }
    }

    /// Finish: calls still waiting keep status `missing`.
    pub fn finish(mut self) -> Trace {
        self.close_turn_text();
        // Outputs never followed by another turn were not used either; leave them unknown:
        // the trace ended, which is a different signal.
        self.trace
    }
}
