//! The per-file import report: what was converted, every mapping that is not one-to-one,
//! every field that has no equivalent, every inconsistency of the WorkRail file itself,
//! and the results of validating, linting and simulating the converted workflow.

use std::fmt;

use serde::Serialize;

/// The outcome for one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Converted one-to-one.
    Converted,
    /// Converted; the notes say what was mapped to a closest construct, what has no
    /// equivalent, and where the WorkRail file is itself inconsistent.
    ConvertedWithNotes,
    /// Not converted; `error` says why.
    Failed,
    /// Not a WorkRail workflow (e.g. a JSON Schema beside the workflows); nothing to do.
    Skipped,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Converted => "converted",
            Status::ConvertedWithNotes => "converted with notes",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What kind of note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Mapped to the closest worktrain construct; the message says which.
    Mapped,
    /// Behaves differently in worktrain; the message says how.
    Differs,
    /// Has no worktrain equivalent and is not converted (kept in the header comment where
    /// it is informational).
    NotConverted,
    /// The WorkRail file is itself inconsistent or outside WorkRail's schema.
    Inconsistent,
}

impl NoteKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Mapped => "mapped",
            NoteKind::Differs => "differs",
            NoteKind::NotConverted => "not converted",
            NoteKind::Inconsistent => "inconsistent",
        }
    }
}

/// One note about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// What kind of note.
    pub kind: NoteKind,
    /// Where in the WorkRail document (`steps[3].promptBlocks`, `metaGuidance`).
    pub at: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.kind.as_str(), self.at, self.message)
    }
}

/// The checks run on a converted workflow: the same ones `worktrain workflow validate`,
/// `lint` and `simulate` run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// It loads and compiles.
    pub valid: bool,
    /// Lint errors.
    pub lint_errors: Vec<String>,
    /// Lint warnings.
    pub lint_warnings: Vec<String>,
    /// A simulation with no scripted context walked it to completion.
    pub simulated: bool,
    /// Steps the simulation entered.
    pub simulated_steps: usize,
}

/// The report for one input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The input file.
    pub source: String,
    /// The outcome.
    pub status: Status,
    /// The workflow id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Where the converted workflow was (or would be) written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Notes, in document order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// Results of validating, linting and simulating the converted workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

impl FileReport {
    /// A failure with a reason.
    pub fn failed(source: &str, workflow: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            source: source.to_owned(),
            status: Status::Failed,
            workflow,
            output: None,
            reason: Some(reason.into()),
            notes: Vec::new(),
            checks: None,
        }
    }
}

/// Collects notes while converting one file.
#[derive(Debug, Default)]
pub struct Notes(pub Vec<Note>);

impl Notes {
    /// Add a note.
    pub fn add(&mut self, kind: NoteKind, at: impl Into<String>, message: impl Into<String>) {
        let note = Note {
            kind,
            at: at.into(),
            message: message.into(),
        };
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }
}
