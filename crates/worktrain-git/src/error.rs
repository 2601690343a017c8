//! Errors of this crate. Every variant names what was being done and on which path,
//! ref or session, so a log line alone is enough to act on it.

use std::path::PathBuf;
use std::time::Duration;

use worktrain_core::ids::SessionId;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a worktree operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libgit2 reported an error.
    #[error("git: {context}: {source}")]
    Git {
        /// What was being done.
        context: String,
        /// The libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// A file-system operation failed.
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The session has no worktree registered in this repository.
    #[error("session {session} has no worktree in this repository")]
    NoWorktree {
        /// The session whose worktree was looked for.
        session: SessionId,
    },
    /// The worktree is registered but its directory is gone.
    #[error("the worktree directory of session {session} (`{}`) is missing", path.display())]
    WorktreeMissing {
        /// The session whose worktree directory is missing.
        session: SessionId,
        /// Where the directory should be.
        path: PathBuf,
    },
    /// The target directory exists but is not this session's worktree.
    #[error("`{}` already exists and is not the worktree of session {session}", path.display())]
    PathOccupied {
        /// The session whose worktree was to be created there.
        session: SessionId,
        /// The occupied path.
        path: PathBuf,
    },
    /// A worktree did not open as the repository and directory it should be (its `.git`
    /// file points elsewhere, or it was moved). Nothing is done to it.
    #[error(
        "worktree of session {session} is not where it should be: expected {expected}, found {found}"
    )]
    Misplaced {
        /// The session whose worktree is misplaced.
        session: SessionId,
        /// What was expected (a path or a repository).
        expected: String,
        /// What was found.
        found: String,
    },
    /// A branch is checked out in a worktree, so it cannot be used or deleted.
    #[error("branch `{branch}` is checked out in `{}`", worktree.display())]
    BranchCheckedOut {
        /// The branch (short name).
        branch: String,
        /// The worktree (or main repository) that has it checked out.
        worktree: PathBuf,
    },
    /// A name given by the caller is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// What kind of name (branch, label, trailer key, …).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why the value is refused (what it must be).
        reason: &'static str,
    },
    /// A revision could not be resolved to a commit.
    #[error("`{rev}` does not name a commit{}", if *.fetched { " (after fetching it)" } else { "" })]
    RevNotFound {
        /// The revision as given.
        rev: String,
        /// Whether a fetch was attempted first.
        fetched: bool,
    },
    /// The worktree is a read-only (detached) one; it has no branch to commit to or push.
    #[error("the worktree of session {session} is read-only (detached HEAD)")]
    ReadOnly {
        /// The session whose worktree is read-only.
        session: SessionId,
    },
    /// The remote refused a pushed reference.
    #[error("push of `{refname}` to `{remote}` was rejected: {message}")]
    PushRejected {
        /// The remote's name.
        remote: String,
        /// The remote reference that was refused.
        refname: String,
        /// The remote's reason.
        message: String,
    },
    /// `git fetch` or `git push` (the command line, with the user's git setup) failed.
    #[error("git {action} with `{remote}` failed: {message}")]
    Remote {
        /// `fetch` or `push`.
        action: &'static str,
        /// The remote's name.
        remote: String,
        /// git's error lines.
        message: String,
        /// The network or the remote failed (not the credentials, not a refusal):
        /// trying again later may work.
        transient: bool,
    },
    /// An `index.lock` is held by a live process or is too young to be judged stale.
    #[error("`{}` is locked ({}); retry once the other git operation has finished", path.display(), describe_lock(*age, holders))]
    IndexLocked {
        /// The lock file.
        path: PathBuf,
        /// Age of the lock file (from its modification time).
        age: Duration,
        /// Processes seen holding it (empty: none seen, but the lock is younger than the
        /// stale threshold).
        holders: Vec<u32>,
    },
}

fn describe_lock(age: Duration, holders: &[u32]) -> String {
    if holders.is_empty() {
        format!("{} s old, younger than the stale threshold", age.as_secs())
    } else {
        format!("held by pid {holders:?}")
    }
}

impl Error {
    /// A stable snake_case code for the `{code, message, retry, hint}` error shape.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Git { .. } => "git_failure",
            Error::Io { .. } => "io_failure",
            Error::NoWorktree { .. } => "worktree_not_found",
            Error::WorktreeMissing { .. } => "worktree_missing",
            Error::PathOccupied { .. } => "worktree_path_occupied",
            Error::Misplaced { .. } => "worktree_misplaced",
            Error::BranchCheckedOut { .. } => "branch_checked_out",
            Error::Invalid { .. } => "invalid_input",
            Error::RevNotFound { .. } => "rev_not_found",
            Error::ReadOnly { .. } => "worktree_read_only",
            Error::PushRejected { .. } => "push_rejected",
            Error::IndexLocked { .. } => "index_locked",
            Error::Remote { .. } => "git_remote_failed",
        }
    }

    /// Whether retrying the same call later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::IndexLocked { .. } => true,
            Error::Remote { transient, .. } => *transient,
            Error::Git { source, .. } => {
                matches!(
                    source.code(),
                    git2::ErrorCode::Locked | git2::ErrorCode::Timeout
                ) || source.class() == git2::ErrorClass::Net
            }
            // Listed, not defaulted: a new kind of error must decide whether it is retryable.
            Error::Io { .. }
            | Error::NoWorktree { .. }
            | Error::WorktreeMissing { .. }
            | Error::PathOccupied { .. }
            | Error::Misplaced { .. }
            | Error::BranchCheckedOut { .. }
            | Error::Invalid { .. }
            | Error::RevNotFound { .. }
            | Error::ReadOnly { .. }
            | Error::PushRejected { .. } => false,
        }
    }
}

/// Attach a context to libgit2 results.
pub(crate) trait GitResultExt<T> {
    /// Wrap the error with what was being done.
    fn git(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> GitResultExt<T> for std::result::Result<T, git2::Error> {
    fn git(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Git {
            context: context(),
            source,
        })
    }
}

/// Attach a context and path to I/O results.
pub(crate) trait IoResultExt<T> {
    /// Wrap the error with what was being done and on which path.
    fn io(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn io(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}
