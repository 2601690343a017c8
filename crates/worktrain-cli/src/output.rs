//! Human and JSON output, and the documented exit codes (see docs/cli.md).

use std::io::Write;

use serde::Serialize;
use worktrain_core::error::{ApiError, ErrorCode};
use worktrain_core::event::render_blockers;
use worktrain_core::response::{Outcome, StepResponse};

/// Process exit codes. Stable: scripts rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A failure not covered below (store, I/O, internal).
    Failure = 1,
    /// Bad command-line usage (clap).
    Usage = 2,
    /// Session or workflow not found.
    NotFound = 3,
    /// The token was rejected (malformed, bad signature, unknown key, wrong kind, stale, conflict).
    TokenRejected = 4,
    /// The submission was recorded but the step is blocked.
    Blocked = 5,
    /// Invalid input: a workflow, config, limit, reserved key or rewind target.
    Invalid = 6,
    /// Integrity check failed (broken hash chain).
    Integrity = 7,
    /// Transient contention; retry.
    Busy = 8,
}

/// The exit code for an error code.
pub(crate) fn exit_for(code: ErrorCode) -> Exit {
    match code {
        ErrorCode::SessionNotFound | ErrorCode::WorkflowNotFound => Exit::NotFound,
        ErrorCode::TokenMalformed
        | ErrorCode::TokenBadSignature
        | ErrorCode::TokenUnknownKey
        | ErrorCode::TokenRetiredKey
        | ErrorCode::TokenNeverIssued
        | ErrorCode::TokenWrongKind
        | ErrorCode::TokenStale
        | ErrorCode::TokenConflict
        | ErrorCode::SessionComplete
        | ErrorCode::SessionParked => Exit::TokenRejected,
        ErrorCode::NotParked => Exit::Invalid,
        ErrorCode::WorkflowInvalid
        | ErrorCode::NotesTooLarge
        | ErrorCode::ContextTooLarge
        | ErrorCode::ArtifactTooLarge
        | ErrorCode::ReservedContextKey
        | ErrorCode::InvalidInput
        | ErrorCode::InvalidRewindTarget => Exit::Invalid,
        ErrorCode::IntegrityFailure => Exit::Integrity,
        ErrorCode::Contention => Exit::Busy,
        ErrorCode::WorkflowPinMissing
        | ErrorCode::StoreFailure
        | ErrorCode::DaemonUnreachable
        | ErrorCode::Internal => Exit::Failure,
    }
}

/// Where output goes and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON mode.
    pub json: bool,
}

impl Out {
    /// Print a serializable value as one JSON document (JSON mode).
    pub fn json<T: Serialize>(&self, value: &T) {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, value);
        let _ = writeln!(stdout);
    }

    /// Print raw JSON bytes (a recorded response) followed by a newline.
    pub fn raw_json(&self, bytes: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(bytes);
        let _ = writeln!(stdout);
    }

    /// Print an error in the current mode and return its exit code.
    pub fn error(&self, e: &ApiError) -> Exit {
        if self.json {
            self.json(&serde_json::json!({ "error": e }));
        } else {
            eprintln!("error[{}]: {}", e.code, e.message);
            if !e.hint.is_empty() {
                eprintln!("  hint: {}", e.hint);
            }
        }
        exit_for(e.code)
    }
}

/// Render a step response for humans.
/// Who reads a printed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Someone who submits with the tokens (`session start|advance|rehydrate|…`): the
    /// tokens and the engine's `next` are shown.
    TokenHolder,
    /// `worktrain run`, which holds the tokens itself: neither is shown (the run says what
    /// to do next in its own words).
    Run,
}

/// Print a step response for a person.
pub(crate) fn print_response(r: &StepResponse, replayed: bool, audience: Audience) {
    let tag = match r.outcome {
        Outcome::Started => "started",
        Outcome::Advanced => "advanced",
        Outcome::Blocked => "BLOCKED",
        Outcome::Complete => "complete",
        Outcome::Checkpointed => "checkpointed",
        Outcome::Rehydrated => "current state",
        Outcome::Rewound => "rewound",
        Outcome::Parked => "PARKED (waiting for approval)",
        Outcome::Approved => "approved",
        Outcome::Rejected => "REJECTED",
    };
    say!(
        "session {}  ·  {} v{}  ·  {tag}{}",
        r.session_id,
        r.workflow.id,
        r.workflow.version,
        if replayed {
            " (replayed: this output was already recorded)"
        } else {
            ""
        }
    );
    if !r.blockers.is_empty() {
        say!();
        match audience {
            Audience::TokenHolder => {
                say!("Blocked — fix these and submit again with the new advance token:")
            }
            Audience::Run => say!("Blocked — fix these and write the step's notes again:"),
        }
        for line in render_blockers(&r.blockers, "  ").lines() {
            say!("{line}");
        }
    }
    if !r.recap.is_empty() {
        say!();
        say!("Earlier steps:");
        for e in &r.recap {
            say!("  ## {} ({}, {})", e.title, e.step_id, e.node);
            for line in e.notes.lines() {
                say!("  {line}");
            }
        }
    }
    match &r.step {
        Some(step) => {
            say!();
            say!(
                "Step {}/{} · {} ({}, node {}, attempt {})",
                step.index,
                r.progress.total,
                step.title,
                step.id,
                step.node,
                step.attempt
            );
            say!("{}", "─".repeat(72));
            say!("{}", step.prompt.trim_end());
            if !step.guidance.is_empty() {
                say!();
                say!("Guidance:");
                for g in &step.guidance {
                    say!("  - {g}");
                }
            }
            if let Some(c) = &step.output_contract {
                say!();
                say!(
                    "Output contract: a `{}` artifact{}; example:",
                    c.contract,
                    if c.required {
                        " (required)"
                    } else {
                        " (optional)"
                    }
                );
                say!("  {}", c.example);
            }
            if !step.context_outputs.is_empty() {
                say!();
                say!("Must set context: {}", step.context_outputs.join(", "));
            }
            if step.requires_confirmation {
                say!();
                match r.intent {
                    worktrain_core::response::Intent::WaitForApproval => say!(
                        "Parked: `worktrain session approve {id}` completes the step; `worktrain session reject {id} --note …` sends it back.",
                        id = r.session_id
                    ),
                    worktrain_core::response::Intent::PerformStep
                    | worktrain_core::response::Intent::AskUserThenSubmit
                    | worktrain_core::response::Intent::FixBlockers
                    | worktrain_core::response::Intent::Complete => {
                        say!("This step asks for the user's confirmation before it is submitted.")
                    }
                }
            }
            say!("{}", "─".repeat(72));
        }
        None => {
            say!();
            say!(
                "Workflow complete: {} steps completed, {} skipped.",
                r.progress.completed,
                r.progress.skipped
            );
        }
    }
    match audience {
        Audience::TokenHolder => {
            say!();
            if let Some(t) = &r.tokens.advance {
                say!("advance token:    {t}");
            }
            if let Some(t) = &r.tokens.checkpoint {
                say!("checkpoint token: {t}");
            }
            say!("resume token:     {}", r.tokens.resume);
            say!("next: {}", r.next);
        }
        Audience::Run => {}
    }
}

/// Format a millisecond timestamp as RFC 3339.
pub(crate) fn time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
