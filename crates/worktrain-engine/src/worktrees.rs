//! Session worktrees as the use cases need them. A daemon run works in
//! `$WORKTRAIN_HOME/worktrees/<session>` on branch `worktrain/<session>`; this module
//! prepares it, snapshots it whenever a step's output is accepted (whoever advanced the
//! session: the built-in loop, an external agent through MCP, the CLI), restores it after
//! a rewind, commits the result when the workflow completes, and records each of these
//! as an event. Every git call blocks, so each runs on a blocking thread.
//!
//! The rule this module keeps: **no worktree is removed before its work is a commit on a
//! kept branch** (the git layer commits uncommitted changes before any removal, and the
//! events say which commit holds the work).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use worktrain_core::ids::SessionId;
use worktrain_git::{
    CleanAction, CleanOptions, CleanReport, CleanupPolicy, Disposition, ListOptions, LockState,
    Oid, SessionOutcome, Worktrees, WorktreesConfig, snapshot_ref,
};

/// Where and how session worktrees are made (`daemon.worktrees` in config.yaml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorktreeSettings {
    /// Run each session in its own git worktree (off: the agent works in the workspace itself).
    pub enabled: bool,
    /// Remote fetched before a worktree is created. A repository without this remote
    /// branches from its local base instead (`""`: never fetch).
    pub remote: String,
    /// Base branch new session branches start from. A repository without it (and
    /// without the remote) branches from its checked-out branch.
    pub base_branch: String,
    /// Keep the worktree of a failed session this long for inspection, in hours.
    pub keep_failed_hours: u64,
    /// Push every step snapshot to `remote` (hidden refs `refs/worktrain/<session>/…`),
    /// so that when a daemon dies, another daemon on another host takes its runs over
    /// from the last snapshot instead of failing them. For several daemons on one store.
    pub share_snapshots: bool,
    /// Author and committer of the sessions' commits (default: the repository's git
    /// configuration, else `worktrain <worktrain@localhost>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<CommitAuthor>,
}

/// A commit identity (`{name, email}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitAuthor {
    /// Author name of the commits worktrain makes.
    pub name: String,
    /// Author e-mail of the commits worktrain makes.
    pub email: String,
}

impl Default for WorktreeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            remote: "origin".into(),
            base_branch: "main".into(),
            keep_failed_hours: 72,
            share_snapshots: false,
            author: None,
        }
    }
}

/// A worktree operation failed; the message says what and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WorktreeError(pub String);

impl From<worktrain_git::Error> for WorktreeError {
    fn from(e: worktrain_git::Error) -> Self {
        WorktreeError(e.to_string())
    }
}

fn blocking_error(e: tokio::task::JoinError) -> WorktreeError {
    WorktreeError(format!("worktree task failed: {e}"))
}

/// A prepared session worktree.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The directory the agent works in.
    pub path: PathBuf,
    /// The session branch (`None` for a read-only, detached worktree).
    pub branch: Option<String>,
    /// The ref it was created from (`refs/remotes/origin/main`, `refs/heads/main`).
    pub base: Option<String>,
    /// How the base was chosen when it differs from the configuration (no such remote,
    /// no such branch), for the log and the operator.
    pub note: Option<String>,
}

/// A commit made of a session's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The branch it is on.
    pub branch: String,
    /// The commit id.
    pub commit: String,
    /// Files it changed relative to its parent.
    pub files: u32,
}

/// What [`SessionWorktrees::commit_declared`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredWork {
    /// The commit of the declared files (`None`: none of them changed).
    pub committed: Option<Committed>,
    /// Changed files the declaration did not cover.
    pub undeclared: Vec<String>,
    /// The branch that keeps them (`worktrain-undeclared/<session>`).
    pub kept_on: Option<String>,
}

/// What ending a worktree did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Removed; the branch is kept when it holds work (`branch`), and `preserved` is the
    /// commit made of changes that were still uncommitted.
    Removed {
        /// The directory removed.
        path: PathBuf,
        /// The session branch, when it still exists.
        branch: Option<String>,
        /// The commit that preserved uncommitted changes.
        preserved: Option<Committed>,
    },
    /// Kept for inspection until the reaper's time.
    Kept,
    /// Nothing to do (no worktree, or locked by someone else).
    Untouched,
}

/// Session worktrees of any workspace, under one home.
#[derive(Debug, Clone)]
pub struct SessionWorktrees {
    settings: WorktreeSettings,
    home: PathBuf,
}

impl SessionWorktrees {
    /// Worktrees under `home` (`<home>/worktrees/<session>`) with `settings`.
    pub fn new(settings: WorktreeSettings, home: impl Into<PathBuf>) -> Self {
        Self {
            settings,
            home: home.into(),
        }
    }

    /// The worktree settings this manager was built with (remote, base branch, retention, …).
    pub fn settings(&self) -> &WorktreeSettings {
        &self.settings
    }

    /// Where a session's worktree lives.
    pub fn path_for(&self, session: SessionId) -> PathBuf {
        self.home.join("worktrees").join(session.to_string())
    }

    /// Whether `workspace` gets a worktree per session: worktrees are enabled and it is
    /// the top of a git working tree.
    pub fn applies_to(&self, workspace: &Path) -> bool {
        self.settings.enabled && worktrain_git::is_work_tree(workspace)
    }

    /// The repository handle for `workspace`, fetching from the configured remote only
    /// when `fetch` and the repository has that remote.
    fn open(&self, workspace: &Path, fetch: bool) -> Result<Worktrees, WorktreeError> {
        let mut config = WorktreesConfig::new(workspace, &self.home);
        if let Some(a) = &self.settings.author {
            config.identity = Some(worktrain_git::Identity {
                name: a.name.clone(),
                email: a.email.clone(),
            });
        }
        config.remote = (fetch
            && !self.settings.remote.is_empty()
            && worktrain_git::remote_exists(workspace, &self.settings.remote))
        .then(|| self.settings.remote.clone());
        Ok(Worktrees::new(config)?)
    }

    /// Create (or re-attach) the session's worktree. Without the configured remote the
    /// branch starts from the local base; without a local base branch either, from the
    /// branch checked out in the workspace — a local repository simply works.
    pub async fn prepare(
        &self,
        session: SessionId,
        workspace: &Path,
        readonly: bool,
        base: Option<&str>,
    ) -> Result<Prepared, WorktreeError> {
        let me = self.clone();
        let workspace = workspace.to_path_buf();
        let base = base.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            me.prepare_blocking(session, &workspace, readonly, base)
        })
        .await
        .map_err(blocking_error)?
    }

    fn prepare_blocking(
        &self,
        session: SessionId,
        workspace: &Path,
        readonly: bool,
        base: Option<String>,
    ) -> Result<Prepared, WorktreeError> {
        let wts = self.open(workspace, true)?;
        let fetching = !self.settings.remote.is_empty()
            && worktrain_git::remote_exists(workspace, &self.settings.remote);
        let mut note = None;
        if !self.settings.remote.is_empty() && !fetching {
            note = Some(format!(
                "the repository has no remote `{}`: branching from local refs",
                self.settings.remote
            ));
        }
        let explicit = base.is_some();
        let mut base = base.unwrap_or_else(|| self.settings.base_branch.clone());
        if !readonly
            && !fetching
            && !explicit
            && !worktrain_git::local_branch_exists(workspace, &base)
            && let Some(current) = worktrain_git::current_branch(workspace)
        {
            note = Some(format!(
                "the repository has no remote `{}` and no branch `{base}`: branching from its checked-out branch `{current}`",
                self.settings.remote
            ));
            base = current;
        }
        let created = if readonly {
            wts.create_detached(session, &base)?
        } else {
            wts.create(session, &base)?
        };
        Ok(Prepared {
            path: created.path,
            branch: created.branch,
            base: created.base,
            note,
        })
    }

    /// Record the worktree's state under `label` (`n3`); returns `(ref, commit)`.
    pub async fn snapshot(
        &self,
        workspace: &Path,
        session: SessionId,
        label: String,
    ) -> Result<(String, String), WorktreeError> {
        let share = self.settings.share_snapshots;
        let wts = self.open(workspace, share)?;
        tokio::task::spawn_blocking(move || {
            let oid = wts.snapshot(session, &label)?;
            if share && let Err(e) = wts.push_snapshot(session, &label) {
                // The step goes on; a takeover from this snapshot will then fail with a
                // recorded reason instead of starting over.
                tracing::warn!(session_id = %session, %label, error = %e, "sharing the step snapshot failed");
            }
            Ok((snapshot_ref(session, &label)?, oid.to_string()))
        })
        .await
        .map_err(blocking_error)?
    }

    /// Make the session's worktree here from its snapshot `label` on the remote (see
    /// [`WorktreeSettings::share_snapshots`]): fetch the session's snapshots, check that
    /// `label` is the commit the event log recorded (`expected`), and adopt it. Returns
    /// the worktree and `(restored, backup)` as [`SessionWorktrees::restore`] does.
    pub async fn adopt(
        &self,
        workspace: &Path,
        session: SessionId,
        label: String,
        expected: String,
    ) -> Result<(Prepared, (String, String)), WorktreeError> {
        if !self.settings.share_snapshots {
            return Err(WorktreeError(
                "snapshots are not shared (`daemon.worktrees.share_snapshots: false`)".into(),
            ));
        }
        if self.settings.remote.is_empty()
            || !worktrain_git::remote_exists(workspace, &self.settings.remote)
        {
            return Err(WorktreeError(format!(
                "the repository `{}` has no remote `{}` to take snapshots from",
                workspace.display(),
                self.settings.remote
            )));
        }
        let wts = self.open(workspace, true)?;
        let remote = self.settings.remote.clone();
        tokio::task::spawn_blocking(move || {
            wts.fetch_snapshots(session)?;
            let found = wts.snapshot_of(session, &label)?;
            let oid = match found {
                Some(oid) if oid.to_string() == expected => oid,
                Some(other) => {
                    return Err(WorktreeError(format!(
                        "snapshot {label} on `{remote}` is {other}, but the session recorded {expected} (its push failed or was overwritten)"
                    )));
                }
                None => {
                    return Err(WorktreeError(format!(
                        "snapshot {label} ({expected}) is not on `{remote}` (its push failed, or the remote was pruned)"
                    )));
                }
            };
            let (wt, restored) = wts.adopt(session, oid)?;
            Ok((
                Prepared {
                    path: wt.path,
                    branch: wt.branch,
                    base: wt.base,
                    note: Some(format!("taken over from snapshot {label} ({oid}) on `{remote}`")),
                },
                (restored.snapshot.to_string(), restored.backup.to_string()),
            ))
        })
        .await
        .map_err(blocking_error)?
    }

    /// The snapshot recorded under `label`, if any.
    pub async fn snapshot_of(
        &self,
        workspace: &Path,
        session: SessionId,
        label: String,
    ) -> Result<Option<String>, WorktreeError> {
        let wts = self.open(workspace, false)?;
        tokio::task::spawn_blocking(move || {
            Ok(wts.snapshot_of(session, &label)?.map(|o| o.to_string()))
        })
        .await
        .map_err(blocking_error)?
    }

    /// Put the worktree's files back to `commit`; returns `(restored, backup)` where
    /// `backup` is a snapshot of the state just before (undo).
    pub async fn restore(
        &self,
        workspace: &Path,
        session: SessionId,
        commit: &str,
    ) -> Result<(String, String), WorktreeError> {
        let wts = self.open(workspace, false)?;
        let oid = Oid::from_str(commit)
            .map_err(|e| WorktreeError(format!("`{commit}` is not a commit id: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let restored = wts.restore(session, oid)?;
            Ok((restored.snapshot.to_string(), restored.backup.to_string()))
        })
        .await
        .map_err(blocking_error)?
    }

    /// Commit everything in the worktree on the session branch (`None`: nothing changed
    /// since the last commit).
    pub async fn commit_work(
        &self,
        workspace: &Path,
        session: SessionId,
        message: String,
        trailers: Vec<(String, String)>,
    ) -> Result<Option<Committed>, WorktreeError> {
        let wts = self.open(workspace, false)?;
        tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> = trailers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let Some(oid) = wts.commit_all(session, &message, &pairs)? else {
                // Nothing uncommitted; the branch may still carry commits the agent made
                // itself, and those are the session's work.
                let info = wts.get(session, ListOptions { status: false })?;
                return match info {
                    Some(i) if i.ahead.is_some_and(|a| a > 0) => match i.head {
                        Some(head) => Ok(Some(Committed {
                            branch: worktrain_git::branch_name(session),
                            commit: head.to_string(),
                            files: wts.files_changed(head)?,
                        })),
                        None => Ok(None),
                    },
                    _ => Ok(None),
                };
            };
            Ok(Some(Committed {
                branch: worktrain_git::branch_name(session),
                commit: oid.to_string(),
                files: wts.files_changed(oid)?,
            }))
        })
        .await
        .map_err(blocking_error)?
    }

    /// Commit only the `declared` paths on the session branch; other changes are kept on
    /// their own branch (see [`Worktrees::commit_declared`]). `commit` is `None` when
    /// nothing declared changed — then, like [`SessionWorktrees::commit_work`], commits the
    /// agent made itself on the branch are the session's work.
    pub async fn commit_declared(
        &self,
        workspace: &Path,
        session: SessionId,
        declared: Vec<String>,
        message: String,
        trailers: Vec<(String, String)>,
    ) -> Result<DeclaredWork, WorktreeError> {
        let wts = self.open(workspace, false)?;
        tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> = trailers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let d = wts.commit_declared(session, &declared, &message, &pairs)?;
            let committed = match d.commit {
                Some(oid) => Some(Committed {
                    branch: worktrain_git::branch_name(session),
                    commit: oid.to_string(),
                    files: wts.files_changed(oid)?,
                }),
                None => None,
            };
            Ok(DeclaredWork {
                committed,
                undeclared: d.undeclared,
                kept_on: d.kept_on,
            })
        })
        .await
        .map_err(blocking_error)?
    }

    /// End the worktree when its run ends: removed after success (work committed first),
    /// kept for inspection after a failure.
    pub async fn finish(
        &self,
        workspace: &Path,
        session: SessionId,
        succeeded: bool,
    ) -> Result<Ended, WorktreeError> {
        self.finish_with(workspace, session, succeeded, self.policy())
            .await
    }

    /// A delivered run's worktree goes; its branch stays whatever git thinks of it (a
    /// pushed branch would otherwise count as safe to delete): the pull request needs it
    /// until it is merged or closed.
    pub async fn finish_delivered(
        &self,
        workspace: &Path,
        session: SessionId,
    ) -> Result<Ended, WorktreeError> {
        let policy = CleanupPolicy {
            delete_branch: false,
            ..self.policy()
        };
        self.finish_with(workspace, session, true, policy).await
    }

    async fn finish_with(
        &self,
        workspace: &Path,
        session: SessionId,
        succeeded: bool,
        policy: CleanupPolicy,
    ) -> Result<Ended, WorktreeError> {
        let wts = self.open(workspace, false)?;
        let path = self.path_for(session);
        tokio::task::spawn_blocking(move || {
            let outcome = if succeeded {
                SessionOutcome::Succeeded
            } else {
                SessionOutcome::Failed
            };
            ended(&wts, session, path, wts.remove(session, outcome, &policy)?)
        })
        .await
        .map_err(blocking_error)?
    }

    /// A run that ended without running (cancelled while queued, parked or interrupted,
    /// failed by the recovery policy, killed while waiting) may still own the worktree an
    /// earlier attempt made, locked "in use": keep it for inspection like any failed
    /// run's. Worktrees not locked in use are left alone.
    pub async fn release(
        &self,
        workspace: &Path,
        session: SessionId,
    ) -> Result<Ended, WorktreeError> {
        let wts = self.open(workspace, false)?;
        let path = self.path_for(session);
        let policy = self.policy();
        tokio::task::spawn_blocking(move || {
            match wts.get(session, ListOptions { status: false })? {
                Some(i) if i.lock == LockState::InUse => ended(
                    &wts,
                    session,
                    path,
                    wts.remove(session, SessionOutcome::Failed, &policy)?,
                ),
                _ => Ok(Ended::Untouched),
            }
        })
        .await
        .map_err(blocking_error)?
    }

    /// Clean `workspace`'s session worktrees (see [`Worktrees::clean`]): registrations
    /// without a directory, expired keeps, unowned clean worktrees, leftovers. Removed
    /// worktrees have their uncommitted work committed first; each removal of a session's
    /// worktree is returned so the caller can record it.
    pub async fn clean(
        &self,
        workspace: &Path,
        options: CleanOptions,
    ) -> Result<(CleanReport, Vec<(SessionId, Ended)>), WorktreeError> {
        let wts = self.open(workspace, false)?;
        let workspace = workspace.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let report = wts.clean(options)?;
            let mut removed = Vec::new();
            for e in &report.entries {
                let (Some(session), CleanAction::Removed) = (e.session, &e.action) else {
                    continue;
                };
                let branch = worktrain_git::branch_name(session);
                let preserved = match e.preserved {
                    Some(oid) => Some(Committed {
                        branch: branch.clone(),
                        commit: oid.to_string(),
                        files: wts.files_changed(oid)?,
                    }),
                    None => None,
                };
                let kept = worktrain_git::local_branch_exists(&workspace, &branch);
                removed.push((
                    session,
                    Ended::Removed {
                        path: e.path.clone(),
                        branch: kept.then_some(branch),
                        preserved,
                    },
                ));
            }
            Ok((report, removed))
        })
        .await
        .map_err(blocking_error)?
    }

    fn policy(&self) -> CleanupPolicy {
        CleanupPolicy {
            keep_on_failure: Duration::from_secs(
                self.settings.keep_failed_hours.saturating_mul(3600),
            ),
            delete_branch: true,
        }
    }
}

fn ended(
    wts: &Worktrees,
    session: SessionId,
    path: PathBuf,
    d: Disposition,
) -> Result<Ended, WorktreeError> {
    Ok(match d {
        Disposition::Removed {
            branch_deleted,
            preserved,
        } => {
            let branch = (!branch_deleted).then(|| worktrain_git::branch_name(session));
            let preserved = match preserved {
                Some(oid) => Some(Committed {
                    branch: worktrain_git::branch_name(session),
                    commit: oid.to_string(),
                    files: wts.files_changed(oid)?,
                }),
                None => None,
            };
            Ended::Removed {
                path,
                branch,
                preserved,
            }
        }
        Disposition::Kept { .. } => Ended::Kept,
        Disposition::LeftLocked { .. } | Disposition::NotFound => Ended::Untouched,
    })
}
