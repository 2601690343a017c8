//! Detectors: failure patterns found in one trace, each with evidence (turn and call ids)
//! and a fingerprint that stays the same across sessions (paths, ids and numbers
//! normalised), so a pattern that recurs at one workflow step can be recognised.
//!
//! Every threshold is configurable ([`Thresholds`]); the defaults and the reason for each
//! are documented on the field and in `docs/insights.md`. Defaults are chosen from what
//! the pattern means, not fitted to a data set: detector quality is measured with
//! `worktrain insights eval` on labelled runs.

mod rules;

use serde::{Deserialize, Serialize};

use crate::model::{Trace, Turn};
use crate::normalize;

/// The detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorId {
    /// The same call (same tool, same arguments) made again with nothing changed between.
    RepeatedCall,
    /// A call repeated after edits returned exactly what it returned before: the edits
    /// had no effect on it.
    SameResult,
    /// The same error (normalised) again and again.
    RepeatedError,
    /// Two calls alternating: A, B, A, B, A, B.
    PingPong,
    /// Turns with nothing in them, or repeating an earlier message word for word.
    EmptyTurn,
    /// The same failing test(s) after edit after edit.
    TestFixSpiral,
    /// An edit that undoes an earlier one.
    CircularEdit,
    /// Many edits to one file without a passing test between them.
    EditChurn,
    /// The same file read again with no change to it in between.
    RedundantRead,
    /// Searches that found nothing, again and again.
    EmptySearch,
    /// Many turns without changing a file or advancing a step.
    NoProgress,
    /// A missing program or module, a permission or network problem.
    EnvironmentFailure,
    /// The context was compacted more than once.
    ContextThrash,
    /// A long silence, or a command that ran out of time.
    Stall,
    /// Submissions refused by the harness (blocked steps, malformed output).
    ContractRetry,
    /// A step completed with almost no work.
    RubberStamp,
    /// Large tool outputs the agent never used.
    TokenWaste,
    /// Finished after changing files without running anything to check the change.
    UnverifiedFinish,
}

impl DetectorId {
    /// Every detector, in report order.
    pub const ALL: [DetectorId; 18] = [
        DetectorId::RepeatedCall,
        DetectorId::SameResult,
        DetectorId::RepeatedError,
        DetectorId::PingPong,
        DetectorId::EmptyTurn,
        DetectorId::TestFixSpiral,
        DetectorId::CircularEdit,
        DetectorId::EditChurn,
        DetectorId::RedundantRead,
        DetectorId::EmptySearch,
        DetectorId::NoProgress,
        DetectorId::EnvironmentFailure,
        DetectorId::ContextThrash,
        DetectorId::Stall,
        DetectorId::ContractRetry,
        DetectorId::RubberStamp,
        DetectorId::TokenWaste,
        DetectorId::UnverifiedFinish,
    ];

    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorId::RepeatedCall => "repeated_call",
            DetectorId::SameResult => "same_result",
            DetectorId::RepeatedError => "repeated_error",
            DetectorId::PingPong => "ping_pong",
            DetectorId::EmptyTurn => "empty_turn",
            DetectorId::TestFixSpiral => "test_fix_spiral",
            DetectorId::CircularEdit => "circular_edit",
            DetectorId::EditChurn => "edit_churn",
            DetectorId::RedundantRead => "redundant_read",
            DetectorId::EmptySearch => "empty_search",
            DetectorId::NoProgress => "no_progress",
            DetectorId::EnvironmentFailure => "environment_failure",
            DetectorId::ContextThrash => "context_thrash",
            DetectorId::Stall => "stall",
            DetectorId::ContractRetry => "contract_retry",
            DetectorId::RubberStamp => "rubber_stamp",
            DetectorId::TokenWaste => "token_waste",
            DetectorId::UnverifiedFinish => "unverified_finish",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// One line on what it finds.
    pub fn describe(self) -> &'static str {
        match self {
            DetectorId::RepeatedCall => "the same call made again with nothing changed in between",
            DetectorId::SameResult => {
                "a call repeated after edits returned exactly the same result"
            }
            DetectorId::RepeatedError => "the same error again and again",
            DetectorId::PingPong => "two calls alternating (A, B, A, B, …)",
            DetectorId::EmptyTurn => "empty turns, or messages repeated word for word",
            DetectorId::TestFixSpiral => "the same failing tests after edit after edit",
            DetectorId::CircularEdit => "an edit undoing an earlier edit",
            DetectorId::EditChurn => "many edits to one file without a passing test",
            DetectorId::RedundantRead => "the same file read again, unchanged",
            DetectorId::EmptySearch => "searches that find nothing, repeatedly",
            DetectorId::NoProgress => "many turns without changing a file or advancing a step",
            DetectorId::EnvironmentFailure => {
                "missing programs or modules, permission or network problems"
            }
            DetectorId::ContextThrash => "the context compacted repeatedly",
            DetectorId::Stall => "long silences or commands that ran out of time",
            DetectorId::ContractRetry => {
                "submissions refused by the harness (blocked steps, malformed output)"
            }
            DetectorId::RubberStamp => "a step completed with almost no work",
            DetectorId::TokenWaste => "large tool outputs never used",
            DetectorId::UnverifiedFinish => {
                "finished after changing files without checking the change"
            }
        }
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// At the detector's threshold.
    Warning,
    /// Twice the threshold or more.
    Error,
}

impl Severity {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Warning at the threshold, error at twice it.
    pub fn for_count(count: u64, threshold: u64) -> Self {
        if threshold > 0 && count >= threshold.saturating_mul(2) {
            Severity::Error
        } else {
            Severity::Warning
        }
    }
}

/// Where a finding shows: a turn (and call) of the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// 0-based turn position.
    pub turn: u32,
    /// The turn's source id (`seq:<n>` for worktrain sessions: the event to jump to).
    pub turn_id: String,
    /// The call's source id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// What happened there (bounded, quoted trace content).
    pub note: String,
}

/// Evidence items kept per finding.
pub const MAX_EVIDENCE: usize = 12;

/// One detected pattern in one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Detector.
    pub detector: DetectorId,
    /// Severity.
    pub severity: Severity,
    /// What was found, in one sentence.
    pub message: String,
    /// Stable digest of `detector` and `pattern`: equal across sessions for the same
    /// pattern.
    pub fingerprint: String,
    /// The pattern with session specifics stripped (what the fingerprint is a digest of).
    pub pattern: String,
    /// The workflow step where it happened (worktrain sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// How many times it happened.
    pub count: u64,
    /// Where (bounded).
    pub evidence: Vec<Evidence>,
    /// What would help.
    pub suggestion: String,
}

/// Thresholds of the detectors. Every field has a default; the reason for each default
/// is on the field. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Detectors to skip.
    pub disabled: Vec<DetectorId>,
    /// `repeated_call`: occurrences of one call with nothing changed in between. 3: one
    /// re-run to confirm a result is reasonable; a third identical call cannot tell the
    /// agent anything new.
    pub repeated_call_min: u64,
    /// `same_result`: repeats (after edits) that returned the identical result. 2: once
    /// can be an edit elsewhere; twice means the agent is not changing what it tests.
    pub same_result_min: u64,
    /// `repeated_error`: occurrences of one normalised error. 3: the agent saw it, tried
    /// once more, and still did not change approach.
    pub repeated_error_min: u64,
    /// `ping_pong`: full A/B cycles in a row. 3: two alternations happen while comparing
    /// two files; three is oscillation.
    pub ping_pong_cycles: u64,
    /// `empty_turn`: empty or word-for-word repeated turns. 2: one can be a glitch of the
    /// model or harness.
    pub empty_turn_min: u64,
    /// `empty_turn`: shortest message (characters) that counts as a repeat. 20: short
    /// acknowledgements ("Done.") repeat legitimately.
    pub repeated_text_min_chars: u32,
    /// `test_fix_spiral`: failing runs of the same tests with edits in between. 3: a first
    /// fix that does not work is normal; the third red run of the same tests is a spiral.
    pub spiral_min: u64,
    /// `circular_edit`: edits that undo an earlier edit. 1: undoing one's own change is
    /// always a sign of a lost plan.
    pub circular_edit_min: u64,
    /// `edit_churn`: edits to one file without a passing test in between. 8: a real
    /// change seldom needs more than a handful of edits to one file before checking it.
    pub churn_edits: u64,
    /// `redundant_read`: reads of one unchanged file with the same range. 3: re-reading
    /// once after a detour is normal.
    pub redundant_read_min: u64,
    /// `empty_search`: searches that found nothing. 3: repeated misses mean the agent is
    /// guessing names instead of listing what exists.
    pub empty_search_min: u64,
    /// `no_progress`: consecutive turns without a file change or step advance. 25: well
    /// past the exploration a typical task needs before its first change.
    pub no_progress_turns: u64,
    /// `environment_failure`: failures from the environment. 1: each one means the
    /// environment or the instructions are missing something the task needs.
    pub env_failure_min: u64,
    /// `context_thrash`: compactions in one session. 2: one compaction is normal on long
    /// tasks; two means the work does not fit the context.
    pub compaction_min: u64,
    /// `stall`: seconds between two turns that count as a silence. 600: longer than a
    /// typical test suite; nothing visible happened for ten minutes.
    pub stall_gap_secs: u64,
    /// `stall`: silences plus timed-out commands needed. 1: each one is minutes lost.
    pub stall_min: u64,
    /// `contract_retry`: refused submissions (blocked steps, malformed output). 2: one
    /// refusal teaches the contract; a second means the step's instructions are unclear.
    pub contract_retry_min: u64,
    /// `rubber_stamp`: most work calls (reads, edits, commands) a completed step may have
    /// to count as rubber-stamped. 0: a step accepted without a single call.
    pub rubber_stamp_max_calls: u64,
    /// `rubber_stamp`: longest notes (characters) of a rubber-stamped step. 80: a sentence
    /// or two is not a report of work.
    pub rubber_stamp_max_notes: u32,
    /// `token_waste`: output size (bytes) that counts as large. 8192: about 2,000 tokens
    /// added to every later request of the conversation.
    pub waste_output_bytes: u64,
    /// `token_waste`: large outputs never used (or cut by the harness). 2: one large
    /// output can be a reasonable look around.
    pub waste_min: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            disabled: Vec::new(),
            repeated_call_min: 3,
            same_result_min: 2,
            repeated_error_min: 3,
            ping_pong_cycles: 3,
            empty_turn_min: 2,
            repeated_text_min_chars: 20,
            spiral_min: 3,
            circular_edit_min: 1,
            churn_edits: 8,
            redundant_read_min: 3,
            empty_search_min: 3,
            no_progress_turns: 25,
            env_failure_min: 1,
            compaction_min: 2,
            stall_gap_secs: 600,
            stall_min: 1,
            contract_retry_min: 2,
            rubber_stamp_max_calls: 0,
            rubber_stamp_max_notes: 80,
            waste_output_bytes: 8192,
            waste_min: 2,
        }
    }
}

/// A finding under construction.
pub(crate) struct Draft {
    pub(crate) detector: DetectorId,
    pub(crate) key: String,
    pub(crate) message: String,
    pub(crate) count: u64,
    pub(crate) threshold: u64,
    pub(crate) evidence: Vec<Evidence>,
}

fn suggestion(d: DetectorId, pattern: &str) -> String {
    match d {
        DetectorId::RepeatedCall => "Nothing changed between these identical calls; read the result of the first one, or change something before running it again.".to_owned(),
        DetectorId::SameResult => "The edits did not change this result; re-read the failure and check that the edited code is the code this command runs.".to_owned(),
        DetectorId::RepeatedError => format!("This error keeps coming back ({pattern}); stop and fix its cause, or explain why it cannot be fixed here."),
        DetectorId::PingPong => "The agent alternates between two actions; write down the decision it is trying to make, then make it.".to_owned(),
        DetectorId::EmptyTurn => "Turns without content waste a round-trip; the agent should always act or report.".to_owned(),
        DetectorId::TestFixSpiral => "The same tests keep failing after each edit: read the failing assertion and the code under test before editing again, and revert changes that did not help.".to_owned(),
        DetectorId::CircularEdit => "An edit undid an earlier one; plan the change before editing and keep edits that move forward.".to_owned(),
        DetectorId::EditChurn => "Many edits to one file without a passing check: run the relevant tests after each meaningful change.".to_owned(),
        DetectorId::RedundantRead => "The same unchanged file is read again; take notes of what matters the first time.".to_owned(),
        DetectorId::EmptySearch => "Searches keep finding nothing; list the directory or search for a broader term before guessing names.".to_owned(),
        DetectorId::NoProgress => "Many turns without a change or a step advance; state a plan with a concrete next change.".to_owned(),
        DetectorId::EnvironmentFailure => format!("The environment lacks something the task needs ({pattern}); install it, or tell the agent what is available."),
        DetectorId::ContextThrash => "The context keeps being compacted; keep tool outputs small and split the step into smaller ones.".to_owned(),
        DetectorId::Stall => "Long silences or timed-out commands; run long commands with a timeout and in smaller parts.".to_owned(),
        DetectorId::ContractRetry => "Submissions were refused; show the expected output format (with an example) in the step's prompt.".to_owned(),
        DetectorId::RubberStamp => "The step was completed without doing anything visible; ask for evidence of the work in its notes.".to_owned(),
        DetectorId::TokenWaste => "Large outputs were never used; limit output (head, grep -n, line ranges) before reading it.".to_owned(),
        DetectorId::UnverifiedFinish => "The work was finished without running anything after the last change; run the tests (or the reproduction) before finishing.".to_owned(),
    }
}

impl Draft {
    fn into_finding(self, trace: &Trace) -> Finding {
        let pattern = normalize::normalize(&self.key);
        let fingerprint =
            normalize::digest(format!("{}|{pattern}", self.detector.as_str()).as_bytes());
        let step = self
            .evidence
            .first()
            .and_then(|e| trace.turns.get(e.turn as usize))
            .and_then(|t| trace.step_of(t))
            .map(str::to_owned);
        let mut evidence = self.evidence;
        evidence.truncate(MAX_EVIDENCE);
        Finding {
            detector: self.detector,
            severity: Severity::for_count(self.count, self.threshold),
            message: self.message,
            suggestion: suggestion(self.detector, &pattern),
            fingerprint,
            pattern,
            step,
            count: self.count,
            evidence,
        }
    }
}

/// The turns of each agent (the main agent first, then sub-agents by id): sequences are
/// only compared within one agent.
pub fn lanes(trace: &Trace) -> Vec<Vec<&Turn>> {
    let mut main = Vec::new();
    let mut others: std::collections::BTreeMap<&str, Vec<&Turn>> = Default::default();
    for t in &trace.turns {
        match t.agent.as_deref() {
            None => main.push(t),
            Some(a) => others.entry(a).or_default().push(t),
        }
    }
    let mut out = vec![main];
    out.extend(others.into_values());
    out
}

/// Run every enabled detector over a trace. Deterministic: findings come in detector
/// order, then by first evidence.
pub fn detect(trace: &Trace, th: &Thresholds) -> Vec<Finding> {
    let mut drafts = Vec::new();
    for d in DetectorId::ALL {
        if th.disabled.contains(&d) {
            continue;
        }
        let before = drafts.len();
        rules::run(d, trace, th, &mut drafts);
        drafts[before..].sort_by(|a: &Draft, b: &Draft| {
            a.evidence
                .first()
                .map(|e| e.turn)
                .cmp(&b.evidence.first().map(|e| e.turn))
                .then_with(|| a.key.cmp(&b.key))
        });
    }
    drafts.into_iter().map(|d| d.into_finding(trace)).collect()
}
