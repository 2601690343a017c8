//! Git worktrees for worktrain sessions, on libgit2 (`git2`).
//!
//! Every session runs in its own worktree at `$WORKTRAIN_HOME/worktrees/<session>` on the
//! branch `worktrain/<session>` (or detached, for read-only sessions), locked with a git
//! worktree lock while in use. This crate is what the supervisor calls to:
//!
//! - create and re-attach worktrees ([`Worktrees::create`], [`Worktrees::create_detached`]),
//! - end them per policy and reap leftovers ([`Worktrees::remove`],
//!   [`Worktrees::prune_stale`], [`Worktrees::clean`]),
//! - list them ([`Worktrees::list`]),
//! - record, restore and diff step snapshots ([`Worktrees::snapshot`],
//!   [`Worktrees::restore`], [`Worktrees::diff`]),
//! - commit and push for delivery ([`Worktrees::commit_all`], [`Worktrees::push`]),
//! - run the `git` command line with a sanitised environment where libgit2 cannot
//!   reach a remote ([`cli`]),
//! - commit one file's new content on a branch without touching the checkout
//!   ([`change::commit_file`]).
//!
//! Repositories are always opened by explicit path (never from `$GIT_DIR`, and never by
//! searching upwards except in [`change::locate`], whose job is to find the repository
//! holding a given file), and a worktree is only used after checking it belongs to this repository
//! and lives where it should. Stale `index.lock` files are handled per
//! [`lockfile`]'s policy. All calls are blocking. `docs/worktrees.md` describes the
//! layout and rules; `docs/decisions/0007-worktrees.md` the choices behind them.

pub mod change;
pub mod cli;
mod clone;
mod deliver;
mod error;
pub mod inspect;
pub mod lockfile;
mod names;
mod snapshot;
mod worktrees;

pub use clone::{clone_dir_name, ensure_clone};
pub use deliver::{DeclaredCommit, Pushed, compose_message, is_declared, undeclared_branch_name};
pub use error::{Error, Result};
pub use git2::Oid;
pub use inspect::{current_branch, is_work_tree, local_branch_exists, remote_exists};
pub use lockfile::{IndexLockState, clear_stale_index_lock};
pub use names::{
    BRANCH_PREFIX, LockState, Mode, PRE_RESTORE_LABEL, SNAPSHOT_NAMESPACE, branch_name, branch_ref,
    snapshot_prefix, snapshot_ref, validate_label,
};
pub use snapshot::{ChangeKind, DiffStat, FileStat, Restored, Snapshot, SnapshotDiff};
pub use worktrees::{
    CleanAction, CleanEntry, CleanOptions, CleanReason, CleanReport, CleanupPolicy, Disposition,
    Identity, ListOptions, SessionOutcome, SessionWorktree, WorktreeInfo, Worktrees,
    WorktreesConfig,
};
