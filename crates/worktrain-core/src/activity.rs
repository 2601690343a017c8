//! What an agent did while driving a session: the payload of `agent_activity` events.
//!
//! Agent runners produce these; the projection folds them into [`crate::projection::Telemetry`];
//! trace analysis reads them back as turns and tool calls. The vocabulary lives here, in
//! core, so that producers and readers share one typed definition without depending on
//! each other. The JSON shape (tagged by `type`) is the one stored since the first
//! release of the daemon; any change must keep old events readable.

use serde::{Deserialize, Serialize};

/// Token counts of one LLM call, by kind.
///
/// The four kinds are disjoint: a prompt token is exactly one of uncached input,
/// cache write or cache read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to the cache.
    pub input_tokens: u64,
    /// Tokens the model generated.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// All tokens processed: uncached input + output + cache writes + cache reads.
    /// This is what a run's `max_tokens` budget is compared with.
    pub fn total(&self) -> u64 {
        self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
    }

    /// Cache tokens of both directions (writes + reads).
    pub fn cache(&self) -> u64 {
        self.cache_creation_input_tokens + self.cache_read_input_tokens
    }

    /// Add another call's usage.
    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_creation_input_tokens += o.cache_creation_input_tokens;
        self.cache_read_input_tokens += o.cache_read_input_tokens;
    }
}

/// One LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmTurnRecord {
    /// 1-based turn number within the run.
    pub turn: u32,
    /// Model that answered.
    pub model: String,
    /// Tokens, by kind.
    pub usage: Usage,
    /// Why the model stopped (`end_turn`, `tool_use`, `max_tokens`, …). Kept as text:
    /// providers add reasons, and an unknown one must not make an event unreadable.
    pub stop_reason: String,
    /// Wall time of the call, retries included.
    pub duration_ms: u64,
    /// HTTP attempts (1 without retries).
    pub attempts: u32,
    /// Tool calls the model asked for.
    pub tool_calls: u32,
    /// Cost of this call in USD, when the model is in the price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// Why a tool call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolErrorKind {
    /// Refused by policy (path outside the worktree, write into `.git`).
    Denied,
    /// Arguments missing, of the wrong type, or not JSON.
    InvalidArguments,
    /// No such tool.
    UnknownTool,
    /// A file or match that does not exist.
    NotFound,
    /// An edit's text matched more than once.
    Ambiguous,
    /// The call ran out of time and was killed.
    Timeout,
    /// An I/O error.
    Io,
    /// The engine refused a `complete_step` submission outright (not a block).
    Refused,
}

impl ToolErrorKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolErrorKind::Denied => "denied",
            ToolErrorKind::InvalidArguments => "invalid_arguments",
            ToolErrorKind::UnknownTool => "unknown_tool",
            ToolErrorKind::NotFound => "not_found",
            ToolErrorKind::Ambiguous => "ambiguous",
            ToolErrorKind::Timeout => "timeout",
            ToolErrorKind::Io => "io",
            ToolErrorKind::Refused => "refused",
        }
    }
}

/// A tool call's error, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolErrorRecord {
    /// What kind of failure (not found, denied, timeout, …).
    pub kind: ToolErrorKind,
    /// Message (redacted, bounded).
    pub message: String,
}

/// One tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// Turn that asked for it.
    pub turn: u32,
    /// Name of the tool the model called (e.g. `read_file`).
    pub name: String,
    /// Argument summary, secrets redacted, bounded.
    pub args: String,
    /// Wall time of the call, in milliseconds.
    pub duration_ms: u64,
    /// Size of the result returned to the model.
    pub result_bytes: u64,
    /// Exit code, for `shell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Error, if the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolErrorRecord>,
    /// [`digest`] of the call's complete arguments (secrets redacted, canonical JSON):
    /// identical calls compare equal even when `args` is cut. Absent in events recorded
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_digest: Option<String>,
    /// [`text_digest`] of the result returned to the model (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    /// For calls that change a file: digests of the text replaced and the new text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeDigest>,
    /// For commands that exited non-zero: the end of their output (redacted, at most
    /// [`OUTPUT_TAIL_CHARS`] characters), where the error usually is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

/// Most characters of a failed command's output kept in [`ToolCallRecord::output_tail`].
pub const OUTPUT_TAIL_CHARS: usize = 500;

/// The last `max` characters of `s`.
pub fn tail_chars(s: &str, max: usize) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(max)).collect()
}

/// What a file-changing call replaced, as digests (the text itself is never recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDigest {
    /// The file, relative to the worktree.
    pub path: String,
    /// [`text_digest`] of the text replaced (absent for whole-file writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// [`text_digest`] of the new text.
    pub after: String,
}

/// A short stable digest: the first 64 bits of SHA-256, as hex. Shared by the agent
/// runners that record calls and the trace analysis that compares them.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// [`digest`] of text with runs of whitespace collapsed to one space (reflowed output
/// compares equal).
pub fn text_digest(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut first = true;
    for w in s.split_whitespace() {
        if !first {
            h.update(b" ");
        }
        h.update(w.as_bytes());
        first = false;
    }
    hex::encode(&h.finalize()[..8])
}

/// Why worktrain nudged the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NudgeReason {
    /// It stopped without completing the step.
    StoppedEarly,
    /// It repeated the same failing tool call.
    RepeatedToolFailure,
}

/// Which output stream of an external agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// Which kind of runner drove a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerKind {
    /// The built-in LLM loop.
    Llm,
    /// An external agent command.
    Command,
}

/// The engine's answer to a step submission, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitResult {
    /// Accepted; the next step follows.
    Advanced,
    /// Not accepted; blockers were returned and the agent must retry.
    Blocked,
    /// Accepted, and the workflow is complete.
    Complete,
    /// Accepted; the session waits at a confirmation gate.
    Parked,
    /// Refused outright (not a block): a stale or conflicting submission.
    Refused,
}

impl SubmitResult {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmitResult::Advanced => "advanced",
            SubmitResult::Blocked => "blocked",
            SubmitResult::Complete => "complete",
            SubmitResult::Parked => "parked",
            SubmitResult::Refused => "refused",
        }
    }
}

/// Something an agent run did: the payload of an `agent_activity` event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentActivity {
    /// The run began.
    RunStarted {
        /// Which runner drives the run: the built-in LLM loop or an external command.
        runner: RunnerKind,
        /// Model (LLM runner) or program (command runner).
        detail: String,
    },
    /// One LLM call.
    LlmTurn(LlmTurnRecord),
    /// One tool call.
    ToolCall(ToolCallRecord),
    /// worktrain sent the agent a corrective message.
    Nudged {
        /// Why the agent was nudged.
        reason: NudgeReason,
        /// Nudges so far for this reason in this step.
        count: u32,
    },
    /// Operator messages were delivered to the agent.
    SteeringDelivered {
        /// Number of operator messages delivered in this turn.
        messages: u32,
    },
    /// The agent reported a problem (`report_issue`).
    IssueReported {
        /// Short title, as the agent wrote it.
        title: String,
        /// Details (redacted).
        details: String,
        /// Whether the agent says it cannot go on.
        blocking: bool,
    },
    /// The agent submitted a step; the engine answered.
    StepSubmitted {
        /// The step attempt submitted (`<node>#<attempt>`).
        step: String,
        /// The engine's answer.
        result: SubmitResult,
    },
    /// An external agent process started.
    ProcessStarted {
        /// The program and arguments (redacted).
        command: String,
        /// OS process id; `None` when the process had already exited when it was asked for.
        pid: Option<u32>,
        /// 1-based invocation within the run.
        invocation: u32,
    },
    /// A chunk of an external agent's output (redacted).
    Output {
        /// Which stream the chunk came from.
        stream: OutputStream,
        /// The chunk, redacted and bounded; not necessarily whole lines.
        text: String,
    },
    /// An external agent process ended.
    ProcessExited {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Whether worktrain killed it (timeout, cancel, limit).
        killed: bool,
        /// Wall time of the process, in milliseconds.
        duration_ms: u64,
    },
}

impl AgentActivity {
    /// The `type` tag on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            AgentActivity::RunStarted { .. } => "run_started",
            AgentActivity::LlmTurn(_) => "llm_turn",
            AgentActivity::ToolCall(_) => "tool_call",
            AgentActivity::Nudged { .. } => "nudged",
            AgentActivity::SteeringDelivered { .. } => "steering_delivered",
            AgentActivity::IssueReported { .. } => "issue_reported",
            AgentActivity::StepSubmitted { .. } => "step_submitted",
            AgentActivity::ProcessStarted { .. } => "process_started",
            AgentActivity::Output { .. } => "output",
            AgentActivity::ProcessExited { .. } => "process_exited",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn type_names_match_the_serde_tags() {
        let all = [
            AgentActivity::RunStarted {
                runner: RunnerKind::Llm,
                detail: "m".into(),
            },
            AgentActivity::LlmTurn(LlmTurnRecord {
                turn: 1,
                model: "m".into(),
                usage: Usage::default(),
                stop_reason: "end_turn".into(),
                duration_ms: 1,
                attempts: 1,
                tool_calls: 0,
                cost_usd: None,
            }),
            AgentActivity::ToolCall(ToolCallRecord {
                turn: 1,
                name: "shell".into(),
                args: "ls".into(),
                duration_ms: 1,
                result_bytes: 1,
                exit_code: Some(0),
                error: None,
                args_digest: None,
                result_digest: None,
                change: None,
                output_tail: None,
            }),
            AgentActivity::Nudged {
                reason: NudgeReason::StoppedEarly,
                count: 1,
            },
            AgentActivity::SteeringDelivered { messages: 1 },
            AgentActivity::IssueReported {
                title: "t".into(),
                details: "d".into(),
                blocking: true,
            },
            AgentActivity::StepSubmitted {
                step: "s".into(),
                result: SubmitResult::Blocked,
            },
            AgentActivity::ProcessStarted {
                command: "c".into(),
                pid: None,
                invocation: 1,
            },
            AgentActivity::Output {
                stream: OutputStream::Stdout,
                text: "x".into(),
            },
            AgentActivity::ProcessExited {
                code: Some(0),
                killed: false,
                duration_ms: 1,
            },
        ];
        for a in all {
            let v = serde_json::to_value(&a).unwrap();
            assert_eq!(v["type"], a.type_name());
            let back: AgentActivity = serde_json::from_value(v).unwrap();
            assert_eq!(back, a);
        }
        for r in [
            SubmitResult::Advanced,
            SubmitResult::Blocked,
            SubmitResult::Complete,
            SubmitResult::Parked,
            SubmitResult::Refused,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn usage_total_counts_all_four_kinds() {
        let u = Usage {
            input_tokens: 1,
            output_tokens: 10,
            cache_creation_input_tokens: 100,
            cache_read_input_tokens: 1000,
        };
        assert_eq!(u.total(), 1111);
        assert_eq!(u.cache(), 1100);
    }
}
