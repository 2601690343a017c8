//! The normalised trace model: every source (worktrain's own sessions, Claude Code,
//! Codex, SWE-agent trajectories) becomes a [`Trace`] of [`Turn`]s, each with its
//! [`ToolCall`]s. Detectors only ever see this model.
//!
//! Trace content is untrusted input. Nothing here is ever interpreted as an instruction;
//! the few text fields kept (a bounded command line, an error signature, failing test
//! names) are quoted as data wherever they are shown.

use serde::{Deserialize, Serialize};

/// Longest command line kept per call, in characters.
pub const MAX_COMMAND_CHARS: usize = 300;
/// Paths kept per call.
pub const MAX_PATHS: usize = 8;
/// Failing test names kept per test run.
pub const MAX_FAILING_TESTS: usize = 20;

/// Where a trace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A worktrain session (its `agent_activity` and engine events).
    Worktrain,
    /// A Claude Code transcript (`~/.claude/projects/*/<id>.jsonl`).
    ClaudeCode,
    /// A Codex CLI rollout (`~/.codex/sessions/**/rollout-*.jsonl`).
    Codex,
    /// A `codex exec --json` event stream.
    CodexExec,
    /// A mini-SWE-agent trajectory (`*.traj.json`, `messages[]`).
    MiniSweAgent,
    /// A SWE-agent trajectory (`*.traj`, `trajectory[]`).
    SweAgent,
}

impl Source {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Worktrain => "worktrain",
            Source::ClaudeCode => "claude_code",
            Source::Codex => "codex",
            Source::CodexExec => "codex_exec",
            Source::MiniSweAgent => "mini_swe_agent",
            Source::SweAgent => "swe_agent",
        }
    }

    /// Every source.
    pub const ALL: [Source; 6] = [
        Source::Worktrain,
        Source::ClaudeCode,
        Source::Codex,
        Source::CodexExec,
        Source::MiniSweAgent,
        Source::SweAgent,
    ];

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// How a session ended. For worktrain sessions it is derived from the engine's events
/// (never from what the agent claims); for imported traces from labels or the harness's
/// own exit status, else [`Outcome::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The workflow completed (and its run, if any, ended completed).
    Success,
    /// Some steps completed, then the run failed or was cancelled.
    Partial,
    /// The session stopped at a blocked submission or waits at a gate.
    Blocked,
    /// The run failed before completing any step, or the task was not resolved.
    Failed,
    /// Not known: still running, or an imported trace without a label.
    Unknown,
}

impl Outcome {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Partial => "PARTIAL",
            Outcome::Blocked => "BLOCKED",
            Outcome::Failed => "FAILED",
            Outcome::Unknown => "UNKNOWN",
        }
    }

    /// Whether the session counts as a failure when measuring how strongly a pattern
    /// predicts failure (`None`: unknown, left out).
    pub fn is_failure(self) -> Option<bool> {
        match self {
            Outcome::Success => Some(false),
            Outcome::Partial | Outcome::Blocked | Outcome::Failed => Some(true),
            Outcome::Unknown => None,
        }
    }

    /// Parse a wire name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => Some(Outcome::Success),
            "PARTIAL" => Some(Outcome::Partial),
            "BLOCKED" => Some(Outcome::Blocked),
            "FAILED" => Some(Outcome::Failed),
            "UNKNOWN" => Some(Outcome::Unknown),
            _ => None,
        }
    }
}

/// Tokens, by kind (disjoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tokens {
    /// Uncached input.
    pub input: u64,
    /// Output (reasoning included).
    pub output: u64,
    /// Read from the prompt cache.
    pub cache_read: u64,
    /// Written to the prompt cache.
    pub cache_write: u64,
}

impl Tokens {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }

    /// Add another count.
    pub fn add(&mut self, o: &Tokens) {
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
    }

    /// Whether every kind is zero.
    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

/// What a tool call did, whatever the tool was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read a file.
    Read,
    /// Searched (grep, find, glob).
    Search,
    /// Listed a directory.
    List,
    /// Changed a file (write, edit, patch, `sed -i`, a redirect into a file).
    Edit,
    /// Ran tests.
    Test,
    /// Ran some other command.
    Run,
    /// Submitted work to the harness (`complete_step`, a final submission).
    Submit,
    /// Delegated to a sub-agent.
    Delegate,
    /// Anything else (planning tools, web fetches, …).
    Other,
}

impl Action {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::List => "list",
            Action::Edit => "edit",
            Action::Test => "test",
            Action::Run => "run",
            Action::Submit => "submit",
            Action::Delegate => "delegate",
            Action::Other => "other",
        }
    }

    /// Whether the action changes files.
    pub fn changes_files(self) -> bool {
        matches!(self, Action::Edit)
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// It ran and succeeded (exit code 0 for commands).
    Ok,
    /// It ran and failed (non-zero exit, a tool error).
    Error,
    /// It ran out of time and was killed.
    Timeout,
    /// The harness refused it (permission, policy).
    Denied,
    /// No result was recorded (the trace ends, or the result was lost).
    Missing,
}

impl CallStatus {
    /// Whether the call failed in any way.
    pub fn is_failure(self) -> bool {
        match self {
            CallStatus::Error | CallStatus::Timeout | CallStatus::Denied => true,
            CallStatus::Ok | CallStatus::Missing => false,
        }
    }
}

/// A test run's result, read from the command's output and exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRun {
    /// Whether every test passed.
    pub passed: bool,
    /// Names of failing tests (bounded), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
}

/// A change to one file, with content digests where the source records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditInfo {
    /// The file.
    pub path: String,
    /// Digest of the text replaced (an edit), absent for whole-file writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Digest of the new text (the replacement, or the whole file for a write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One tool call (or, for shell-only agents, one command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The source's id for the call (tool-use id, item id, event seq).
    pub id: String,
    /// The tool's name as the agent called it.
    pub name: String,
    /// What it did.
    pub action: Action,
    /// Digest of the canonical arguments: equal digests are identical calls.
    pub args_hash: String,
    /// The command line or an argument summary (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Files the call read or changed (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// How it ended.
    pub status: CallStatus,
    /// Exit code, for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The failure, normalised (paths, numbers and ids replaced), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size of the result the agent received.
    #[serde(default)]
    pub output_bytes: u64,
    /// Digest of the result, when the source records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    /// The result was empty (a search that found nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_empty: bool,
    /// The harness cut the result because it was too long.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// For large results: whether the agent's next turn referred to anything in it
    /// (`Some(false)`: it never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_used: Option<bool>,
    /// Test results, for test commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestRun>,
    /// The change made, for edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditInfo>,
    /// Wall time, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Something the harness said to the agent instead of (or besides) running its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HarnessReply {
    /// The output did not follow the required format (e.g. not exactly one action).
    FormatError,
    /// The harness nudged an agent that stopped early or repeated a failure.
    Nudge,
    /// A step submission was blocked (its output contract or notes were missing).
    Blocked,
    /// A hook or reviewer refused to let the agent stop.
    StopRefused,
}

/// One assistant turn: what the model said and the calls it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// 0-based position in the trace.
    pub index: u32,
    /// The source's id (message id, event seq as `seq:N`), for jumping to it.
    pub id: String,
    /// When it happened (ms since the Unix epoch), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// Index into [`Trace::steps`] of the workflow step it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The sub-agent that made it (Claude Code sidechains), when not the main agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Characters of visible text.
    #[serde(default)]
    pub text_chars: u32,
    /// Digest of the visible text (normalised), when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_hash: Option<String>,
    /// Tokens of the LLM call.
    #[serde(default, skip_serializing_if = "Tokens::is_zero")]
    pub tokens: Tokens,
    /// Cost of the call, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The calls made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
    /// What the harness answered, when it was not a plain result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<HarnessReply>,
}

/// One visit of a workflow step (a node of the step graph), for worktrain sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepVisit {
    /// Step id.
    pub step: String,
    /// Node number.
    pub node: u32,
    /// Event seq of the `node_entered`.
    pub entered_seq: u64,
    /// Blocked submissions.
    #[serde(default)]
    pub blocked: u32,
    /// Whether it completed.
    #[serde(default)]
    pub completed: bool,
    /// Characters of the accepted notes.
    #[serde(default)]
    pub notes_chars: u32,
    /// Artifacts submitted with the accepted output.
    #[serde(default)]
    pub artifacts: u32,
}

/// Whole-trace counters (complete even when the turn list was capped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Assistant turns.
    pub turns: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Failed tool calls.
    pub tool_errors: u64,
    /// Context compactions.
    pub compactions: u64,
    /// Lines changed in files, when known.
    pub changed_lines: u64,
}

/// One session of one agent, from any source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// `<source>:<native id>`: stable across imports of the same session.
    pub id: String,
    /// Where it came from.
    pub source: Source,
    /// The source's own id (session id, instance id).
    pub native_id: String,
    /// The file it was imported from, or `store` for worktrain sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Workflow id (worktrain sessions; imports with `--workflow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// What started it (worktrain: the trigger id or kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The task, bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Model (the first one seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// First timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// Last timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why (failure reason, harness exit status, label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_reason: Option<String>,
    /// How the daemon run ended (`completed`, `failed`, `cancelled`, `parked`), when run
    /// by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_end: Option<String>,
    /// Time from the cancel request to the run's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_latency_ms: Option<i64>,
    /// Tokens, whole trace.
    #[serde(default)]
    pub tokens: Tokens,
    /// Cost, whole trace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Counters.
    #[serde(default)]
    pub counts: Counts,
    /// Turns, in order (capped; see `truncated`).
    #[serde(default)]
    pub turns: Vec<Turn>,
    /// Workflow steps visited, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepVisit>,
    /// Turn indexes after which the context was compacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compactions: Vec<u32>,
    /// The turn list reached its cap; later turns were counted but not kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Trace {
    /// An empty trace.
    pub fn new(source: Source, native_id: impl Into<String>) -> Self {
        let native_id = native_id.into();
        Self {
            id: format!("{}:{native_id}", source.as_str()),
            source,
            native_id,
            origin: None,
            workflow: None,
            trigger: None,
            task: None,
            model: None,
            started_at_ms: None,
            ended_at_ms: None,
            outcome: Outcome::Unknown,
            outcome_reason: None,
            run_end: None,
            cancel_latency_ms: None,
            tokens: Tokens::default(),
            cost_usd: None,
            counts: Counts::default(),
            turns: Vec::new(),
            steps: Vec::new(),
            compactions: Vec::new(),
            truncated: false,
        }
    }

    /// Every call with its turn, in order.
    pub fn calls(&self) -> impl Iterator<Item = (&Turn, &ToolCall)> {
        self.turns
            .iter()
            .flat_map(|t| t.calls.iter().map(move |c| (t, c)))
    }

    /// The step id a turn belongs to.
    pub fn step_of(&self, turn: &Turn) -> Option<&str> {
        turn.step
            .and_then(|i| self.steps.get(i as usize))
            .map(|s| s.step.as_str())
    }

    /// A digest of the trace's content: equal digests mean nothing changed since the last
    /// import.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        crate::normalize::digest(&bytes)
    }
}
