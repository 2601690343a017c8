//! The one error shape every surface (CLI, HTTP, MCP) returns: `{code, message, retry, hint}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Renaming one is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The token is not of the `wt1.<payload>.<tag>` form or its payload is not decodable.
    TokenMalformed,
    /// The token's signature does not match: it was altered or forged.
    TokenBadSignature,
    /// The token names a signing key this worktrain never issued (altered or foreign).
    TokenUnknownKey,
    /// The token was signed with a key that has been rotated out.
    TokenRetiredKey,
    /// The token is of another kind than the operation needs (e.g. a resume token given to advance).
    TokenWrongKind,
    /// The token names a step node that is no longer the session's current one.
    TokenStale,
    /// The token names a node or attempt this session never issued a token for.
    TokenNeverIssued,
    /// The token was already used with a different output.
    TokenConflict,
    /// No session with this id exists in the store.
    SessionNotFound,
    /// The session is complete; it cannot advance any more.
    SessionComplete,
    /// The session is parked at a gate, waiting for approval.
    SessionParked,
    /// Approve/reject on a session that is not parked.
    NotParked,
    /// No workflow with this id is known.
    WorkflowNotFound,
    /// A workflow file failed to load, validate or compile.
    WorkflowInvalid,
    /// The pinned workflow of a session is missing from the store.
    WorkflowPinMissing,
    /// Notes are larger than the configured limit.
    NotesTooLarge,
    /// The session context would exceed the configured limit.
    ContextTooLarge,
    /// An artifact is larger than the configured limit.
    ArtifactTooLarge,
    /// A context key is reserved for worktrain.
    ReservedContextKey,
    /// The request is not well-formed (a value of the wrong type, an unknown option, …).
    InvalidInput,
    /// The rewind target is not an earlier step of the session's current path.
    InvalidRewindTarget,
    /// Another writer kept the session busy for longer than the retry budget.
    Contention,
    /// The store failed (I/O, corruption, schema mismatch).
    StoreFailure,
    /// The worktrain daemon could not be reached (not running, wrong address).
    DaemonUnreachable,
    /// The session's hash chain or projections failed verification.
    IntegrityFailure,
    /// An internal invariant was violated. Always a bug.
    Internal,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenBadSignature => "token_bad_signature",
            ErrorCode::TokenUnknownKey => "token_unknown_key",
            ErrorCode::TokenRetiredKey => "token_retired_key",
            ErrorCode::TokenWrongKind => "token_wrong_kind",
            ErrorCode::TokenStale => "token_stale",
            ErrorCode::TokenNeverIssued => "token_never_issued",
            ErrorCode::TokenConflict => "token_conflict",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::SessionComplete => "session_complete",
            ErrorCode::SessionParked => "session_parked",
            ErrorCode::NotParked => "not_parked",
            ErrorCode::WorkflowNotFound => "workflow_not_found",
            ErrorCode::WorkflowInvalid => "workflow_invalid",
            ErrorCode::WorkflowPinMissing => "workflow_pin_missing",
            ErrorCode::NotesTooLarge => "notes_too_large",
            ErrorCode::ContextTooLarge => "context_too_large",
            ErrorCode::ArtifactTooLarge => "artifact_too_large",
            ErrorCode::ReservedContextKey => "reserved_context_key",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidRewindTarget => "invalid_rewind_target",
            ErrorCode::Contention => "contention",
            ErrorCode::StoreFailure => "store_failure",
            ErrorCode::DaemonUnreachable => "daemon_unreachable",
            ErrorCode::IntegrityFailure => "integrity_failure",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether and how a caller may retry after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// The same request may succeed later (transient condition).
    Same,
    /// Retrying makes sense only after changing the request (see the hint).
    AfterFix,
    /// Rehydrate the session first, then continue with the fresh token.
    AfterRehydrate,
    /// Retrying cannot help.
    Never,
}

/// The error shape returned by every worktrain surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for humans and models.
    pub message: String,
    /// Whether the call can be retried, and how.
    pub retry: Retry,
    /// What to do next.
    pub hint: String,
}

impl ApiError {
    /// Build an error.
    pub fn new(
        code: ErrorCode,
        message: impl Into<String>,
        retry: Retry,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            retry,
            hint: hint.into(),
        }
    }

    /// An `invalid_input` error with the given message and hint.
    pub fn invalid_input(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message, Retry::AfterFix, hint)
    }

    /// An `internal` error (a bug).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::Internal,
            message,
            Retry::Never,
            "this is a bug in worktrain; please report it with the session id",
        )
    }
}
