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
    /// Number of files the step changed.
    pub files_changed: usize,
    /// Lines added over all files (binary files count none).
    pub insertions: usize,
    /// Lines removed over all files (binary files count none).
    pub deletions: usize,
    /// One entry per changed file (see [`FileDiff`]).
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
    /// Lines added in this file (0 for a binary file).
    pub insertions: usize,
    /// Lines removed in this file (0 for a binary file).
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

/// Events searched around a step's completion for its snapshot (the engine records it in
/// the same append as the completion, just before it; older daemons just after).
const LOOKAHEAD: u32 = 100;

/// One step to diff: its node, step id, the snapshot before it (`None`: the parent of
/// its own snapshot, the worktree's HEAD then) and its own snapshot.
type Planned = (NodeId, String, Option<String>, String);

impl Engine {
    /// The changes of session `id`, step by step, read from its worktree snapshots in the
    /// workspace repository (`home` is the worktrain home the session's worktrees live
    /// under). Each completed step's change is from the snapshot of the step before it on
    /// the session's path (its parent node — so loops and rewinds diff against what the
    /// step really started from — or the baseline before the first step) to its own.
    /// Only the snapshots of the steps shown are read, never the whole event log. Errors
    /// say why there is nothing to show: no snapshots (not a daemon run in a git
    /// workspace), no workspace, or no snapshot of the asked step.
    pub async fn session_diff(
        &self,
        id: SessionId,
        home: &Path,
        query: &DiffQuery,
    ) -> Result<Vec<StepDiff>, ApiError> {
        let summary = self.session(id).await?;
        let nodes = self.store.nodes(id).await.map_err(store_error)?;
        let mut plan: Vec<Planned> = Vec::new();
        let mut baseline: Option<Option<String>> = None;
        for rec in &nodes {
            let selected = match query.step.as_deref() {
                None => true,
                Some(w) => w == rec.step_id.as_str() || w == rec.node.to_string(),
            };
            let Some(closed) = rec.closed_seq.filter(|_| selected) else {
                continue;
            };
            let Some(to) = self.snapshot_near(id, rec.node, closed).await? else {
                continue;
            };
            let parent_closed = match rec.parent {
                Some(p) => nodes
                    .iter()
                    .find(|r| r.node == p)
                    .and_then(|r| r.closed_seq.map(|c| (p, c))),
                None => None,
            };
            let from = match parent_closed {
                Some((p, c)) => self.snapshot_near(id, p, c).await?,
                None => None,
            };
            let from = match from {
                Some(f) => Some(f),
                None => match &baseline {
                    Some(b) => b.clone(),
                    None => {
                        let b = self.snapshot_near(id, NodeId(0), Seq(0)).await?;
                        baseline = Some(b.clone());
                        b
                    }
                },
            };
            plan.push((rec.node, rec.step_id.to_string(), from, to));
        }
        if plan.is_empty() {
            return Err(match &query.step {
                None => ApiError::new(
                    ErrorCode::InvalidInput,
                    format!("session {id} has no step snapshots"),
                    Retry::Never,
                    "snapshots are recorded when a daemon session in a git workspace completes a step",
                ),
                Some(step) => ApiError::invalid_input(
                    format!("no snapshot of step `{step}` in session {id}"),
                    "`worktrain session show <id>` lists the steps (and nodes) of the session",
                ),
            });
        }
        let repo = summary.workspace.clone().ok_or_else(|| {
            ApiError::invalid_input(
                format!("session {id} has no workspace"),
                "snapshots live in the workspace repository",
            )
        })?;
        let home = home.to_path_buf();
        let patch = query.patch;
        tokio::task::spawn_blocking(move || diffs(&repo, &home, &plan, patch))
            .await
            .map_err(|e| ApiError::internal(format!("the diff task failed: {e}")))?
    }

    /// The snapshot commit recorded for `node`, looked up in the events around `around`
    /// (the node's completion).
    async fn snapshot_near(
        &self,
        id: SessionId,
        node: NodeId,
        around: Seq,
    ) -> Result<Option<String>, ApiError> {
        let from = Seq(around.0.saturating_sub(u64::from(LOOKAHEAD) / 2));
        let events = self
            .store
            .events(id, from, LOOKAHEAD)
            .await
            .map_err(store_error)?;
        Ok(events.into_iter().find_map(|e| match e.body {
            EventBody::StepSnapshotted {
                node: n, commit, ..
            } if n == node => Some(commit),
            _ => None,
        }))
    }
}

/// The git part (blocking): each planned step's diff.
fn diffs(
    repo: &str,
    home: &Path,
    plan: &[Planned],
    patch: bool,
) -> Result<Vec<StepDiff>, ApiError> {
    let mut config = WorktreesConfig::new(Path::new(repo), home);
    config.remote = None;
    let wts = Worktrees::new(config).map_err(git_error)?;
    let mut out = Vec::new();
    for (node, step, from, commit) in plan {
        let to = Oid::from_str(commit).map_err(git_error)?;
        let from = match from {
            Some(f) => Oid::from_str(f).map_err(git_error)?,
            // Without a snapshot before it, the step started from the worktree's HEAD
            // when its own snapshot was taken.
            None => wts.first_parent(to).map_err(git_error)?,
        };
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
            patch: patch.then_some(d.patch),
        });
    }
    Ok(out)
}
