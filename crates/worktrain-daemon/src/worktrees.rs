//! Session worktrees as the supervisor uses them: prepared before a run, snapshotted
//! after each completed step, ended per policy when the run ends. git2 calls block, so
//! they run on blocking threads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use worktrain_config::WorktreeSettings;
use worktrain_core::ids::{NodeId, SessionId};
use worktrain_git::{
    CleanupPolicy, Disposition, ListOptions, LockState, SessionOutcome, Worktrees, WorktreesConfig,
    snapshot_ref,
};

/// A session's prepared worktree.
#[derive(Debug, Clone)]
pub struct WorktreeHandle {
    worktrees: Worktrees,
    session: SessionId,
    /// The directory the agent works in.
    pub path: PathBuf,
    /// The session branch (none when detached).
    pub branch: Option<String>,
    keep_failed: Duration,
}

/// Why a worktree could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorktreeError(pub String);

fn blocking_error(e: tokio::task::JoinError) -> WorktreeError {
    WorktreeError(format!("worktree task failed: {e}"))
}

/// Create (or re-attach) the session's worktree in `workspace`'s repository.
pub async fn prepare(
    settings: &WorktreeSettings,
    home: &Path,
    workspace: &Path,
    session: SessionId,
    readonly: bool,
    base: Option<&str>,
) -> Result<WorktreeHandle, WorktreeError> {
    let mut config = WorktreesConfig::new(workspace, home);
    config.remote = if settings.remote.is_empty() {
        None
    } else {
        Some(settings.remote.clone())
    };
    let base = base
        .map(str::to_owned)
        .unwrap_or_else(|| settings.base_branch.clone());
    let keep_failed = Duration::from_secs(settings.keep_failed_hours.saturating_mul(3600));
    tokio::task::spawn_blocking(move || {
        let worktrees = Worktrees::new(config).map_err(|e| WorktreeError(e.to_string()))?;
        let created = if readonly {
            worktrees.create_detached(session, &base)
        } else {
            worktrees.create(session, &base)
        }
        .map_err(|e| WorktreeError(e.to_string()))?;
        Ok(WorktreeHandle {
            worktrees,
            session,
            path: created.path,
            branch: created.branch,
            keep_failed,
        })
    })
    .await
    .map_err(blocking_error)?
}

/// A run that ended without running — cancelled while queued, parked or interrupted,
/// failed by the recovery policy, stopped by the kill switch while waiting — may still own
/// the worktree an earlier attempt made, locked "in use". Keep it for inspection like any
/// failed run's (locked as kept, with the TTL), so the reaper removes it later. Worktrees
/// not locked in use (already kept, or none) are left alone; `None` when nothing was done.
pub async fn release(
    settings: &WorktreeSettings,
    home: &Path,
    workspace: &Path,
    session: SessionId,
) -> Result<Option<Disposition>, WorktreeError> {
    let mut config = WorktreesConfig::new(workspace, home);
    config.remote = None; // nothing is fetched
    let policy = CleanupPolicy {
        keep_on_failure: Duration::from_secs(settings.keep_failed_hours.saturating_mul(3600)),
        delete_branch: true,
    };
    tokio::task::spawn_blocking(move || {
        let worktrees = Worktrees::new(config).map_err(|e| WorktreeError(e.to_string()))?;
        let info = worktrees
            .get(session, ListOptions { status: false })
            .map_err(|e| WorktreeError(e.to_string()))?;
        match info {
            Some(i) if i.lock == LockState::InUse => worktrees
                .remove(session, SessionOutcome::Failed, &policy)
                .map(Some)
                .map_err(|e| WorktreeError(e.to_string())),
            _ => Ok(None),
        }
    })
    .await
    .map_err(blocking_error)?
}

impl WorktreeHandle {
    /// Record the worktree's state after `node` completed; returns (ref, commit).
    pub async fn snapshot(&self, node: NodeId) -> Result<Option<(String, String)>, WorktreeError> {
        let wt = self.worktrees.clone();
        let session = self.session;
        let label = node.to_string();
        tokio::task::spawn_blocking(move || {
            let oid = wt
                .snapshot(session, &label)
                .map_err(|e| WorktreeError(e.to_string()))?;
            let git_ref =
                snapshot_ref(session, &label).map_err(|e| WorktreeError(e.to_string()))?;
            Ok(Some((git_ref, oid.to_string())))
        })
        .await
        .map_err(blocking_error)?
    }

    /// End the worktree: removed on success, kept for inspection on failure.
    pub async fn finish(&self, succeeded: bool) -> Result<Disposition, WorktreeError> {
        let wt = self.worktrees.clone();
        let session = self.session;
        let policy = CleanupPolicy {
            keep_on_failure: self.keep_failed,
            delete_branch: true,
        };
        tokio::task::spawn_blocking(move || {
            let outcome = if succeeded {
                SessionOutcome::Succeeded
            } else {
                SessionOutcome::Failed
            };
            wt.remove(session, outcome, &policy)
                .map_err(|e| WorktreeError(e.to_string()))
        })
        .await
        .map_err(blocking_error)?
    }
}

/// Restore a session's worktree to a snapshot (after a rewind); returns the restored
/// commit and the commit of the automatic backup taken just before.
pub async fn restore(
    settings: &WorktreeSettings,
    home: &Path,
    workspace: &Path,
    session: SessionId,
    commit: &str,
) -> Result<(String, String), WorktreeError> {
    let mut config = WorktreesConfig::new(workspace, home);
    config.remote = if settings.remote.is_empty() {
        None
    } else {
        Some(settings.remote.clone())
    };
    let oid = worktrain_git::Oid::from_str(commit)
        .map_err(|e| WorktreeError(format!("`{commit}` is not a commit id: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let worktrees = Worktrees::new(config).map_err(|e| WorktreeError(e.to_string()))?;
        let restored = worktrees
            .restore(session, oid)
            .map_err(|e| WorktreeError(e.to_string()))?;
        Ok((restored.snapshot.to_string(), restored.backup.to_string()))
    })
    .await
    .map_err(blocking_error)?
}
