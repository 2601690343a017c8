//! A worktrain session's outcome, from the engine's events (folded into its summary) —
//! never from what the agent said about its own work.
//!
//! | outcome | when |
//! |---|---|
//! | `SUCCESS` | the workflow completed, and the daemon run (if any) ended `completed` |
//! | `BLOCKED` | the session waits at a gate (`parked`), or it ended while its current step's last submission was blocked |
//! | `PARTIAL` | the run ended (failed or cancelled) after at least one step completed |
//! | `FAILED`  | the run ended (failed or cancelled) before any step completed |
//! | `UNKNOWN` | still queued, running or interrupted; or an interactive session still in progress |
//!
//! When delivery records its stages, a completed workflow whose delivery failed will be
//! `PARTIAL`; until then a completed workflow is a success.

use worktrain_core::projection::{SessionStatus, SessionSummary};
use worktrain_core::run::RunState;

use crate::model::Outcome;

/// The outcome of a session and the reason, when there is one.
pub fn derive_outcome(s: &SessionSummary) -> (Outcome, Option<String>) {
    let run = s.run.as_ref();
    let reason = run.and_then(|r| {
        r.failure
            .map(|f| f.as_str().to_owned())
            .or_else(|| r.detail.clone())
    });
    let ended_at_block = s.status == SessionStatus::Blocked;
    match (s.status, run.map(|r| r.state)) {
        (SessionStatus::Complete, None | Some(RunState::Completed)) => (Outcome::Success, None),
        // A complete workflow whose run still has to finish (or was torn down oddly).
        (SessionStatus::Complete, Some(state)) => match state {
            RunState::Failed | RunState::Cancelled => (
                Outcome::Partial,
                Some(reason.unwrap_or_else(|| state.as_str().to_owned())),
            ),
            RunState::Queued
            | RunState::Running
            | RunState::Parked
            | RunState::Interrupted
            | RunState::Completed => (Outcome::Success, None),
        },
        (SessionStatus::Parked, _) | (_, Some(RunState::Parked)) => (
            Outcome::Blocked,
            Some("waiting at a confirmation gate".to_owned()),
        ),
        (_, Some(state @ (RunState::Failed | RunState::Cancelled))) => {
            let why = if state == RunState::Cancelled {
                Some(
                    reason
                        .map(|r| format!("cancelled: {r}"))
                        .unwrap_or_else(|| "cancelled".to_owned()),
                )
            } else {
                reason
            };
            if ended_at_block {
                (Outcome::Blocked, why.or_else(|| Some("blocked".to_owned())))
            } else if s.steps_completed > 0 {
                (Outcome::Partial, why)
            } else {
                (Outcome::Failed, why)
            }
        }
        (
            SessionStatus::InProgress | SessionStatus::Blocked,
            None
            | Some(
                RunState::Queued | RunState::Running | RunState::Interrupted | RunState::Completed,
            ),
        ) => (Outcome::Unknown, None),
    }
}
