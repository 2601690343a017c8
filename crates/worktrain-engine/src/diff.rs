//! A session's changes step by step, from the worktree snapshots recorded when each
//! step's output was accepted: each step's diff is the change from the snapshot before it
//! (the previous step's, or for the first step the worktree's HEAD when the first
//! snapshot was taken) to its own. The one implementation behind `worktrain session diff`
//! and `GET /api/v1/sessions/{id}/diff`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::EventBody;
use worktrain_core::ids::{NodeId, Seq, SessionId};
use worktrain_git::{Oid, Worktrees, WorktreesConfig};

use crate::{Engine, store_error};

/// Which steps' diffs to compute, and whether with their patches.
#[derive(Debug, Clone, Default)]
pub struct DiffQuery {
    /// Only this step (its step id, or its node as `n3`); `None`: every step.
    pub step: Option<String>,
    /// Include each step's unified patch (off: the stat only).
    pub patch: bool,
}

/// One step's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDiff {
    /// The node (one pass of the step).
    pub node: NodeId,
    /// The step's id.
    pub step_id: String,
    /// The snapshot (commit) before the step.
    pub from: String,
    /// The step's own snapshot.
    pub to: String,
    /// Files changed.
    pub files_changed: usize,
    /// Lines added.
    pub insertions: usize,
    /// Lines removed.
    pub deletions: usize,
    /// Per file.
    pub files: Vec<FileDiff>,
    /// The unified patch, when asked for (`null` otherwise).
    pub patch: Option<String>,
}

/// One file of a step's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileDiff {
    /// The path after the change (before it, for a deletion).
    pub path: Option<PathBuf>,
    /// `added`, `deleted`, `modified`, `renamed`, `copied`, `typechange` or `other`.
    pub status: String,
    /// Lines added.
    pub insertions: usize,
    /// Lines removed.
    pub deletions: usize,
    /// Binary content (no line counts).
    pub binary: bool,
}

/// Map a git failure (reading or writing the workspace repository) to the API error shape.
pub fn git_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::StoreFailure,
        format!("git: {e}"),
        Retry::AfterFix,
        "check the workspace repository",
    )
}

impl Engine {
    /// The changes of session `id`, step by step, read from its worktree snapshots in the
    /// workspace repository (`home` is the worktrain home the session's worktrees live
    /// under). Errors say why there is nothing to show: no snapshots (not a daemon run in
    /// a git workspace), no workspace, or no snapshot of the asked step.
    pub async fn session_diff(
        &self,
        id: SessionId,
        home: &Path,
        query: &DiffQuery,
    ) -> Result<Vec<StepDiff>, ApiError> {
        let summary = self.session(id).await?;
        let nodes = self.store.nodes(id).await.map_err(store_error)?;
        // Snapshots, in the order they were recorded.
        let mut snaps: Vec<(NodeId, String, String)> = Vec::new();
        let mut after = Seq(0);
        loop {
            let events = self
                .store
                .events(id, after, 500)
                .await
                .map_err(store_error)?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            for e in events {
                if let EventBody::StepSnapshotted { node, commit, .. } = e.body {
                    let step = nodes
                        .iter()
                        .find(|r| r.node == node)
                        .map(|r| r.step_id.to_string())
                        .unwrap_or_default();
                    snaps.push((node, step, commit));
                }
            }
        }
        if snaps.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!("session {id} has no step snapshots"),
                Retry::Never,
                "snapshots are recorded when a daemon session in a git workspace completes a step",
            ));
        }
        let repo = summary.workspace.clone().ok_or_else(|| {
            ApiError::invalid_input(
                format!("session {id} has no workspace"),
                "snapshots live in the workspace repository",
            )
        })?;
        let home = home.to_path_buf();
        let q = query.clone();
        let out = tokio::task::spawn_blocking(move || diffs(&repo, &home, &snaps, &q))
            .await
            .map_err(|e| ApiError::internal(format!("the diff task failed: {e}")))??;
        if out.is_empty() {
            return Err(ApiError::invalid_input(
                format!(
                    "no snapshot of step `{}` in session {id}",
                    query.step.as_deref().unwrap_or("")
                ),
                "`worktrain session show <id>` lists the steps (and nodes) of the session",
            ));
        }
        Ok(out)
    }
}

/// The git part (blocking): each selected step's diff against the snapshot before it.
fn diffs(
    repo: &str,
    home: &Path,
    snaps: &[(NodeId, String, String)],
    query: &DiffQuery,
) -> Result<Vec<StepDiff>, ApiError> {
    let mut config = WorktreesConfig::new(Path::new(repo), home);
    config.remote = None;
    let wts = Worktrees::new(config).map_err(git_error)?;
    let mut out = Vec::new();
    let mut prev: Option<Oid> = None;
    for (node, step, commit) in snaps {
        let to = Oid::from_str(commit).map_err(git_error)?;
        let from = match prev {
            Some(p) => p,
            // The first snapshot's parent is the worktree's HEAD when it was taken.
            None => wts.first_parent(to).map_err(git_error)?,
        };
        prev = Some(to);
        // `n0` is the state before the first step: the baseline, not a step's change.
        if *node == NodeId(0) {
            continue;
        }
        let selected = match query.step.as_deref() {
            None => true,
            Some(w) => w == step || w == node.to_string(),
        };
        if !selected {
            continue;
        }
        let d = wts.diff(from, to).map_err(git_error)?;
        out.push(StepDiff {
            node: *node,
            step_id: step.clone(),
            from: from.to_string(),
            to: commit.clone(),
            files_changed: d.stat.files_changed,
            insertions: d.stat.insertions,
            deletions: d.stat.deletions,
            files: d
                .stat
                .files
                .iter()
                .map(|f| FileDiff {
                    path: f.new_path.clone().or_else(|| f.old_path.clone()),
                    status: format!("{:?}", f.status).to_lowercase(),
                    insertions: f.insertions,
                    deletions: f.deletions,
                    binary: f.binary,
                })
                .collect(),
            patch: query.patch.then_some(d.patch),
        });
    }
    Ok(out)
}
