//! The event list in `docs/concepts.md` is the code's: every kind of event is named there,
//! and nothing else is named as an event.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use worktrain_core::event::EventKind;

const CONCEPTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/concepts.md"
));

/// A new kind of event does not compile here until it is handled — and the arm checks
/// that it was added to [`EventKind::ALL`], which the docs check below walks.
fn in_all(k: EventKind) -> bool {
    match k {
        EventKind::SessionStarted
        | EventKind::NodeEntered
        | EventKind::StepSkipped
        | EventKind::BlockSkipped
        | EventKind::StepBlocked
        | EventKind::StepCompleted
        | EventKind::StepParked
        | EventKind::GateApproved
        | EventKind::GateRejected
        | EventKind::LoopEntered
        | EventKind::LoopPassStarted
        | EventKind::LoopExited
        | EventKind::JumpTaken
        | EventKind::JumpExhausted
        | EventKind::CheckpointRecorded
        | EventKind::RunQueued
        | EventKind::RunStarted
        | EventKind::RunInterrupted
        | EventKind::RunRequeued
        | EventKind::RunFinished
        | EventKind::CancelRequested
        | EventKind::Steered
        | EventKind::AgentActivity
        | EventKind::StepSnapshotted
        | EventKind::WorktreeRestored
        | EventKind::WorkCommitted
        | EventKind::WorktreeRemoved
        | EventKind::SessionRewound
        | EventKind::HookRan
        | EventKind::SourceIneligible
        | EventKind::DeliveryStarted
        | EventKind::DeliveryStageCompleted
        | EventKind::DeliveryFailed
        | EventKind::DeliveryFinished
        | EventKind::NotificationSent
        | EventKind::NotificationFailed
        | EventKind::SessionCompleted
        | EventKind::PostMortemRecorded => EventKind::ALL.contains(&k),
    }
}

/// The backticked names in the `**Events.**` paragraph.
fn documented() -> BTreeSet<String> {
    let start = CONCEPTS
        .find("**Events.**")
        .expect("docs/concepts.md has an **Events.** paragraph");
    let para = &CONCEPTS[start..];
    let para = &para[..para.find("\n\n").unwrap_or(para.len())];
    para.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_event_kind_is_in_all() {
    for k in EventKind::ALL {
        assert!(in_all(k));
    }
    let unique: BTreeSet<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(unique.len(), EventKind::ALL.len(), "a kind is listed twice");
}

#[test]
fn concepts_lists_exactly_the_event_kinds() {
    let code: BTreeSet<String> = EventKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    let docs = documented();
    let missing: Vec<&String> = code.difference(&docs).collect();
    let unknown: Vec<&String> = docs.difference(&code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/concepts.md **Events.**: missing {missing:?}; not event kinds {unknown:?}"
    );
}
