//! Session worktrees: create (locked), re-attach, remove or keep per policy, reap, and
//! list. See `docs/worktrees.md` for the layout and the rules.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use git2::{
    AutotagOption, FetchOptions, Oid, Repository, RepositoryOpenFlags, StatusOptions, Worktree,
    WorktreeAddOptions, WorktreePruneOptions,
};
use worktrain_core::ids::SessionId;

use crate::error::{Error, GitResultExt, IoResultExt, Result};
use crate::lockfile::{self, DEFAULT_STALE_AFTER};
use crate::names::{
    self, LockState, META_FILE, Meta, Mode, branch_name, branch_ref, detach_branch_name,
    fetched_ref, in_use_reason, kept_reason,
};
use crate::snapshot::Restored;

/// Name and e-mail used for commits made by [`Worktrees::commit_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Author and committer name.
    pub name: String,
    /// Author and committer e-mail.
    pub email: String,
}

impl Identity {
    /// worktrain's own identity, used for snapshots and when nothing else is configured.
    pub fn worktrain() -> Self {
        Self {
            name: "worktrain".into(),
            email: "worktrain@localhost".into(),
        }
    }

    /// The repository's configured `user.name`/`user.email`, else worktrain's own.
    pub(crate) fn of_repo(repo: &git2::Repository) -> Self {
        repo.signature()
            .ok()
            .and_then(|s| {
                Some(Self {
                    name: s.name().ok()?.to_owned(),
                    email: s.email().ok()?.to_owned(),
                })
            })
            .unwrap_or_else(Self::worktrain)
    }
}

/// How to reach the repository and where to put worktrees.
#[derive(Debug, Clone)]
pub struct WorktreesConfig {
    /// The workspace repository (a checkout or a bare repository), opened by exactly this
    /// path: git never searches parent directories or reads `$GIT_DIR`.
    pub repo: PathBuf,
    /// worktrain's home (`$WORKTRAIN_HOME`); worktrees live in `<home>/worktrees/<session>`.
    pub home: PathBuf,
    /// The remote to fetch bases (and read-only refs) from; it must exist.
    /// `None`: use local branches and revisions only.
    pub remote: Option<String>,
    /// An `index.lock` older than this, held by no live process, is removed
    /// (see [`crate::lockfile`]).
    pub stale_lock_after: Duration,
    /// Identity for [`Worktrees::commit_all`]. `None`: the repository's `user.name` /
    /// `user.email`, else [`Identity::worktrain`].
    pub identity: Option<Identity>,
}

impl WorktreesConfig {
    /// Defaults: remote `origin`, stale locks after [`DEFAULT_STALE_AFTER`], identity
    /// from the repository's config.
    pub fn new(repo: impl Into<PathBuf>, home: impl Into<PathBuf>) -> Self {
        Self {
            repo: repo.into(),
            home: home.into(),
            remote: Some("origin".into()),
            stale_lock_after: DEFAULT_STALE_AFTER,
            identity: None,
        }
    }
}

/// The worktrees of one workspace repository.
///
/// Holds only paths and settings (it is `Send + Sync + Clone`); each call opens the
/// repository by its explicit path. All calls block on disk and network I/O: from async
/// code, run them on a blocking thread. Two calls for the *same* session must not run
/// concurrently (the supervisor owns a session); calls for different sessions may.
#[derive(Debug, Clone)]
pub struct Worktrees {
    repo_path: PathBuf,
    commondir: PathBuf,
    root: PathBuf,
    pub(crate) remote: Option<String>,
    pub(crate) stale_lock_after: Duration,
    pub(crate) identity: Option<Identity>,
}

/// A session's worktree as returned by [`Worktrees::create`] and
/// [`Worktrees::create_detached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWorktree {
    /// The owning session.
    pub session: SessionId,
    /// The worktree directory, `<home>/worktrees/<session>`.
    pub path: PathBuf,
    /// On the session branch, or detached (read-only).
    pub mode: Mode,
    /// The branch's short name (`worktrain/<session>`), `None` when detached.
    pub branch: Option<String>,
    /// The commit checked out.
    pub head: Oid,
    /// The ref the session branch was created from (`refs/remotes/origin/main`).
    pub base: Option<String>,
    /// `true` when the worktree already existed and was re-attached.
    pub reattached: bool,
}

/// How a session ended, for [`Worktrees::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Completed (and delivered): the worktree is removed.
    Succeeded,
    /// Failed, cancelled or timed out: the worktree is kept per [`CleanupPolicy`].
    Failed,
}

/// What to do with a worktree when its session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Keep a failed session's worktree this long for inspection (zero: remove at once).
    pub keep_on_failure: Duration,
    /// After removal, delete the branch `worktrain/<session>` — only if no worktree has
    /// it checked out and its tip is contained in the base or in a remote-tracking ref
    /// (so no commit is lost).
    pub delete_branch: bool,
}

impl Default for CleanupPolicy {
    /// Keep failures for 24 hours; delete merged or pushed branches.
    fn default() -> Self {
        Self {
            keep_on_failure: Duration::from_secs(24 * 3600),
            delete_branch: true,
        }
    }
}

/// What [`Worktrees::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Directory removed and registration pruned.
    Removed {
        /// Whether the session branch was deleted too.
        branch_deleted: bool,
        /// The commit that preserved uncommitted changes on the session branch before
        /// the directory went (none when there was nothing to preserve).
        preserved: Option<Oid>,
    },
    /// Kept for inspection; the reaper removes it after `until`.
    Kept {
        /// Expiry of the keep.
        until: SystemTime,
    },
    /// Someone else locked the worktree by hand; it was left as it is.
    LeftLocked {
        /// Their lock reason.
        reason: String,
    },
    /// The session had no worktree.
    NotFound,
}

/// Options of [`Worktrees::list`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions {
    /// Also compute `dirty` (a status scan of each worktree; the expensive part).
    pub status: bool,
}

/// One row of `worktrain worktree list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeInfo {
    /// The owning session.
    pub session: SessionId,
    /// The worktree directory.
    pub path: PathBuf,
    /// Whether the directory exists.
    pub exists: bool,
    /// Branch or detached.
    pub mode: Mode,
    /// The checked-out branch's short name, `None` when detached.
    pub branch: Option<String>,
    /// The checked-out commit.
    pub head: Option<Oid>,
    /// The base ref the branch is compared with.
    pub base: Option<String>,
    /// When the worktree was created.
    pub created: Option<SystemTime>,
    /// How long ago that was.
    pub age: Option<Duration>,
    /// Who holds it.
    pub lock: LockState,
    /// Uncommitted changes (tracked or untracked, not ignored); only with
    /// [`ListOptions::status`].
    pub dirty: Option<bool>,
    /// Commits on the branch that the base does not have.
    pub ahead: Option<usize>,
    /// The branch tip is contained in the base (no commits of its own left).
    pub merged: Option<bool>,
    /// Why the worktree could not be inspected fully (e.g. its `.git` file points
    /// elsewhere); `None` when all is well.
    pub problem: Option<String>,
}

/// Options of [`Worktrees::clean`].
#[derive(Debug, Clone, Copy)]
pub struct CleanOptions {
    /// The clock reading to judge expiry against.
    pub now: SystemTime,
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Also remove kept worktrees whose keep has not expired yet.
    pub include_kept: bool,
}

/// Why a worktree is a candidate for cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanReason {
    /// Registered, but its directory is gone: the registration is pruned.
    DirectoryMissing,
    /// Kept after a failure and the keep has expired.
    KeepExpired {
        /// When it expired.
        until: SystemTime,
    },
    /// Kept, not expired, removed because [`CleanOptions::include_kept`] was set.
    KeptRemovedOnRequest {
        /// When it would have expired.
        until: SystemTime,
    },
    /// Registered and present but not locked: no session owns it.
    Unowned,
    /// A directory under `<home>/worktrees` that belongs to this repository but is no
    /// longer registered with it.
    Unregistered,
}

/// What was (or would be) done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanAction {
    /// The worktree directory was removed (its branch stays).
    Removed,
    /// Dry run: would be removed.
    WouldRemove,
    /// Left alone, and why.
    Skipped(String),
}

/// One worktree considered by [`Worktrees::clean`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanEntry {
    /// The session, when the name is a session id.
    pub session: Option<SessionId>,
    /// The worktree directory.
    pub path: PathBuf,
    /// Why it is a candidate.
    pub reason: CleanReason,
    /// What was done to it (removed, would be removed in a dry run, or skipped and why).
    pub action: CleanAction,
    /// The commit that preserved the worktree's uncommitted changes on its branch
    /// before removal, when there were any.
    pub preserved: Option<Oid>,
}

/// The result of [`Worktrees::clean`] / [`Worktrees::prune_stale`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Every candidate, with what was done to it.
    pub entries: Vec<CleanEntry>,
}

impl CleanReport {
    /// Paths removed (or, in a dry run, that would be).
    pub fn removed(&self) -> Vec<&Path> {
        self.entries
            .iter()
            .filter(|e| matches!(e.action, CleanAction::Removed | CleanAction::WouldRemove))
            .map(|e| e.path.as_path())
            .collect()
    }
}

impl Worktrees {
    /// Open the repository once to check it, and create `<home>/worktrees`.
    pub fn new(config: WorktreesConfig) -> Result<Self> {
        let repo_path = fs::canonicalize(&config.repo).io("resolving repository", &config.repo)?;
        let repo = open_repo(&repo_path)?;
        let commondir = canonical(repo.commondir());
        let root = config.home.join("worktrees");
        fs::create_dir_all(&root).io("creating worktree root", &root)?;
        let root = fs::canonicalize(&root).io("resolving worktree root", &root)?;
        if let Some(remote) = &config.remote {
            repo.find_remote(remote)
                .git(|| format!("looking up remote `{remote}`"))?;
        }
        Ok(Self {
            repo_path,
            commondir,
            root,
            remote: config.remote,
            stale_lock_after: config.stale_lock_after,
            identity: config.identity,
        })
    }

    /// The directory that holds all session worktrees (`<home>/worktrees`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The repository's common git directory (where refs and objects live).
    pub fn common_dir(&self) -> &Path {
        &self.commondir
    }

    /// Where a session's worktree lives: `<home>/worktrees/<session>`.
    pub fn path_for(&self, session: SessionId) -> PathBuf {
        self.root.join(session.to_string())
    }

    /// Create the session's worktree on a new branch `worktrain/<session>` from `base`
    /// (a branch name, fetched from the remote first), and lock it. Idempotent: when the
    /// worktree exists it is re-attached (locked again if needed) and returned as is; when
    /// only the branch exists (its directory vanished), a worktree is made on that branch
    /// so no commit is lost.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn create(&self, session: SessionId, base: &str) -> Result<SessionWorktree> {
        let base = names::short_branch(base)?;
        let repo = self.open_main()?;
        if let Some(existing) = self.reattach(&repo, session)? {
            return Ok(existing);
        }
        let path = self.prepare_path(session)?;
        let (base_ref, base_oid) = self.resolve_base(&repo, session, base)?;
        let branch_refname = branch_ref(session);
        let branch = match repo.find_reference(&branch_refname) {
            Ok(existing) => {
                tracing::info!(branch = %branch_refname, "re-using the existing session branch");
                existing
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => repo
                .reference(
                    &branch_refname,
                    base_oid,
                    false,
                    &format!("worktrain: branch for session {session} from {base_ref}"),
                )
                .git(|| format!("creating branch `{branch_refname}`"))?,
            Err(e) => {
                return Err(e).git(|| format!("looking up `{branch_refname}`"));
            }
        };
        if let Some(holder) = checked_out_in(&repo, &branch_refname)? {
            return Err(Error::BranchCheckedOut {
                branch: branch_name(session),
                worktree: holder,
            });
        }
        let head = branch
            .peel_to_commit()
            .git(|| format!("resolving `{branch_refname}`"))?
            .id();
        let wt = self.add_worktree(&repo, session, &path, &branch)?;
        let meta = Meta {
            base: Some(base_ref.clone()),
            created: Some(SystemTime::now()),
            mode: Mode::Branch,
        };
        self.write_meta(session, &meta)?;
        wt.lock(Some(&in_use_reason(session)))
            .git(|| format!("locking the worktree of {session}"))?;
        tracing::info!(path = %path.display(), base = %base_ref, head = %head, "worktree created and locked");
        Ok(SessionWorktree {
            session,
            path,
            mode: Mode::Branch,
            branch: Some(branch_name(session)),
            head,
            base: Some(base_ref),
            reattached: false,
        })
    }

    /// Take over a session whose worktree is on another host: make its worktree here
    /// from `snapshot` (a step snapshot fetched with [`Worktrees::fetch_snapshots`]).
    /// The branch `worktrain/<session>` is put at the snapshot's parent — the branch's
    /// commit when the snapshot was taken, with every commit the agent had made — and the
    /// files are restored to the snapshot (uncommitted and untracked changes included),
    /// so the worktree is as it was when that step was accepted. A local branch of the
    /// session that is not an ancestor of that commit is never moved (its commits would
    /// be lost): that is an error.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn adopt(&self, session: SessionId, snapshot: Oid) -> Result<(SessionWorktree, Restored)> {
        let repo = self.open_main()?;
        let commit = repo
            .find_commit(snapshot)
            .git(|| format!("reading snapshot {snapshot}"))?;
        let parent = commit.parent_id(0).map_err(|_| Error::Invalid {
            what: "snapshot",
            value: snapshot.to_string(),
            reason: "has no parent commit (it was taken on an unborn branch)",
        })?;
        drop(commit);
        let branch_refname = branch_ref(session);
        if let Ok(local) = repo.refname_to_id(&branch_refname)
            && local != parent
            && !repo
                .graph_descendant_of(parent, local)
                .git(|| format!("comparing `{branch_refname}` with {parent}"))?
        {
            return Err(Error::Invalid {
                what: "session branch",
                value: branch_name(session),
                reason: "exists here with commits the snapshot does not contain; it is left as it is",
            });
        }
        let wt = match self.reattach(&repo, session)? {
            Some(existing) => existing,
            None => {
                let path = self.prepare_path(session)?;
                let branch = repo
                    .reference(
                        &branch_refname,
                        parent,
                        true,
                        &format!(
                            "worktrain: session {session} taken over from snapshot {snapshot}"
                        ),
                    )
                    .git(|| format!("setting `{branch_refname}`"))?;
                if let Some(holder) = checked_out_in(&repo, &branch_refname)? {
                    return Err(Error::BranchCheckedOut {
                        branch: branch_name(session),
                        worktree: holder,
                    });
                }
                let wt = self.add_worktree(&repo, session, &path, &branch)?;
                self.write_meta(
                    session,
                    &Meta {
                        base: None,
                        created: Some(SystemTime::now()),
                        mode: Mode::Branch,
                    },
                )?;
                wt.lock(Some(&in_use_reason(session)))
                    .git(|| format!("locking the worktree of {session}"))?;
                SessionWorktree {
                    session,
                    path,
                    mode: Mode::Branch,
                    branch: Some(branch_name(session)),
                    head: parent,
                    base: None,
                    reattached: false,
                }
            }
        };
        let restored = self.restore(session, snapshot)?;
        tracing::info!(path = %wt.path.display(), %snapshot, head = %parent, "worktree taken over from a shared snapshot");
        Ok((wt, restored))
    }

    /// The directory `git` runs in for this repository (its checkout, or the bare
    /// repository itself).
    pub(crate) fn repo_dir(&self) -> PathBuf {
        self.repo_path.clone()
    }

    /// Create a read-only worktree for the session, detached at `rev`: a ref on the
    /// remote such as `refs/pull/7/head` (fetched first; needs a configured remote) or
    /// anything `git rev-parse` resolves locally. No branch is created; the commit is
    /// pinned by the hidden ref `refs/worktrain-fetched/<session>` until removal. The
    /// worktree is locked like any other; re-attaches if it already exists.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn create_detached(&self, session: SessionId, rev: &str) -> Result<SessionWorktree> {
        let repo = self.open_main()?;
        if let Some(existing) = self.reattach(&repo, session)? {
            return Ok(existing);
        }
        let path = self.prepare_path(session)?;
        let commit = self.resolve_detached(&repo, session, rev)?;
        // libgit2 adds worktrees on a branch only: add on a temporary branch, then detach.
        let temp = format!("refs/heads/{}", detach_branch_name(session));
        let temp_ref = repo
            .reference(&temp, commit, true, "worktrain: temporary branch")
            .git(|| format!("creating `{temp}`"))?;
        let wt = self.add_worktree(&repo, session, &path, &temp_ref)?;
        drop(temp_ref);
        let wrepo = self.open_worktree_repo(session, &wt)?;
        wrepo
            .set_head_detached(commit)
            .git(|| format!("detaching the worktree of {session}"))?;
        drop(wrepo);
        delete_ref_if_exists(&repo, &temp)?;
        let meta = Meta {
            base: None,
            created: Some(SystemTime::now()),
            mode: Mode::Detached,
        };
        self.write_meta(session, &meta)?;
        wt.lock(Some(&in_use_reason(session)))
            .git(|| format!("locking the worktree of {session}"))?;
        tracing::info!(path = %path.display(), rev, head = %commit, "read-only worktree created and locked");
        Ok(SessionWorktree {
            session,
            path,
            mode: Mode::Detached,
            branch: None,
            head: commit,
            base: None,
            reattached: false,
        })
    }

    /// End of a session: on success remove the worktree (directory, then unlock and
    /// prune the registration; then the branch per policy). On failure keep it locked
    /// for inspection until `now + keep_on_failure` (the reaper, [`Self::prune_stale`],
    /// removes it later). A worktree locked by hand by someone else is left alone.
    #[tracing::instrument(level = "info", skip(self, policy), fields(session = %session))]
    pub fn remove(
        &self,
        session: SessionId,
        outcome: SessionOutcome,
        policy: &CleanupPolicy,
    ) -> Result<Disposition> {
        let repo = self.open_main()?;
        let name = session.to_string();
        if !is_registered(&repo, &name)? {
            tracing::info!("no worktree to remove");
            return Ok(Disposition::NotFound);
        }
        let wt = repo
            .find_worktree(&name)
            .git(|| format!("looking up worktree {name}"))?;
        let lock = lock_state(&wt)?;
        if let LockState::Foreign { reason } = lock {
            tracing::warn!(%reason, "worktree is locked by someone else; leaving it");
            return Ok(Disposition::LeftLocked { reason });
        }
        let present = exists(wt.path());
        if outcome == SessionOutcome::Failed && !policy.keep_on_failure.is_zero() && present {
            let until = SystemTime::now() + policy.keep_on_failure;
            self.set_lock_reason(session, &kept_reason(session, until))?;
            tracing::info!(
                until = %humantime::format_rfc3339_seconds(until),
                "session failed: worktree kept for inspection"
            );
            return Ok(Disposition::Kept { until });
        }
        let removal = self.remove_registered(&repo, session, &wt, policy.delete_branch)?;
        Ok(Disposition::Removed {
            branch_deleted: removal.branch_deleted,
            preserved: removal.preserved,
        })
    }

    /// Startup reaper: prune registrations whose directory is gone, remove kept worktrees
    /// past their keep, remove unlocked (unowned) worktrees without uncommitted changes,
    /// and remove leftover directories of this repository that are no longer registered.
    /// Worktrees in use are never touched. Same as [`Self::clean`] without dry run.
    pub fn prune_stale(&self, now: SystemTime) -> Result<CleanReport> {
        self.clean(CleanOptions {
            now,
            dry_run: false,
            include_kept: false,
        })
    }

    /// `worktrain worktree clean [--dry-run]`: see [`Self::prune_stale`] for what is a
    /// candidate. Branches are deleted only under the same rule as
    /// [`CleanupPolicy::delete_branch`].
    #[tracing::instrument(level = "info", skip(self))]
    pub fn clean(&self, options: CleanOptions) -> Result<CleanReport> {
        let repo = self.open_main()?;
        let mut report = CleanReport::default();
        let mut registered_paths = Vec::new();
        for name in worktree_names(&repo)? {
            let Ok(session) = name.parse::<SessionId>() else {
                continue; // not ours
            };
            let wt = repo
                .find_worktree(&name)
                .git(|| format!("looking up worktree {name}"))?;
            let path = wt.path().to_path_buf();
            registered_paths.push(canonical(&path));
            let present = exists(&path);
            let lock = lock_state(&wt)?;
            let reason = match (&lock, present) {
                (LockState::Foreign { .. }, _) => continue,
                (_, false) => CleanReason::DirectoryMissing,
                (LockState::Kept { until }, true) if *until <= options.now => {
                    CleanReason::KeepExpired { until: *until }
                }
                (LockState::Kept { until }, true) if options.include_kept => {
                    CleanReason::KeptRemovedOnRequest { until: *until }
                }
                (LockState::Unlocked, true) => CleanReason::Unowned,
                // In use, or kept and not yet due: not a candidate.
                (LockState::InUse | LockState::Kept { .. }, true) => continue,
            };
            let mut entry = CleanEntry {
                session: Some(session),
                path,
                reason,
                action: CleanAction::WouldRemove,
                preserved: None,
            };
            if entry.reason == CleanReason::Unowned {
                match self
                    .open_worktree_repo(session, &wt)
                    .and_then(|wrepo| is_dirty(&wrepo))
                {
                    Ok(false) => {}
                    Ok(true) => {
                        entry.action = CleanAction::Skipped(
                            "unlocked worktree has uncommitted changes".into(),
                        );
                    }
                    Err(e) => entry.action = CleanAction::Skipped(e.to_string()),
                }
            }
            if entry.action == CleanAction::WouldRemove && !options.dry_run {
                match self.remove_registered(&repo, session, &wt, true) {
                    Ok(removal) => {
                        entry.action = CleanAction::Removed;
                        entry.preserved = removal.preserved;
                    }
                    Err(e) => {
                        tracing::warn!(session = %session, error = %e, "could not remove worktree");
                        entry.action = CleanAction::Skipped(e.to_string());
                    }
                }
            }
            report.entries.push(entry);
        }
        self.clean_unregistered(&registered_paths, options, &mut report)?;
        for entry in &report.entries {
            tracing::info!(
                session = ?entry.session,
                path = %entry.path.display(),
                reason = ?entry.reason,
                action = ?entry.action,
                "clean"
            );
        }
        Ok(report)
    }

    /// The inventory behind `worktrain worktree list`: every worktree of this repository
    /// whose name is a session id, ordered by session. Cheap unless
    /// [`ListOptions::status`] asks for the dirty scan. Never call this from a hot path
    /// (such as after each session write); it is meant for explicit requests and timers.
    pub fn list(&self, options: ListOptions) -> Result<Vec<WorktreeInfo>> {
        let repo = self.open_main()?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for name in worktree_names(&repo)? {
            let Ok(session) = name.parse::<SessionId>() else {
                continue;
            };
            out.push(self.info(&repo, session, options, now)?);
        }
        out.sort_by_key(|i| i.session);
        Ok(out)
    }

    /// Inventory of one session's worktree, `None` if it has none.
    pub fn get(&self, session: SessionId, options: ListOptions) -> Result<Option<WorktreeInfo>> {
        let repo = self.open_main()?;
        if !is_registered(&repo, &session.to_string())? {
            return Ok(None);
        }
        self.info(&repo, session, options, SystemTime::now())
            .map(Some)
    }

    // ----- internals shared with the other modules -----

    /// Open the workspace repository by its explicit path.
    pub(crate) fn open_main(&self) -> Result<Repository> {
        open_repo(&self.repo_path)
    }

    /// Open the session's worktree as a repository, checking that it is this
    /// repository's worktree at the expected place, and clearing a stale `index.lock`.
    pub(crate) fn open_session(&self, session: SessionId) -> Result<Repository> {
        let repo = self.open_main()?;
        let name = session.to_string();
        if !is_registered(&repo, &name)? {
            return Err(Error::NoWorktree { session });
        }
        let wt = repo
            .find_worktree(&name)
            .git(|| format!("looking up worktree {name}"))?;
        if !exists(wt.path()) {
            return Err(Error::WorktreeMissing {
                session,
                path: wt.path().to_path_buf(),
            });
        }
        self.open_worktree_repo(session, &wt)
    }

    /// Clear a stale `index.lock` of an opened worktree repository, or fail if it is held.
    pub(crate) fn ensure_unlocked_index(&self, wrepo: &Repository) -> Result<()> {
        lockfile::ensure_index_unlocked(wrepo.path(), wrepo.workdir(), self.stale_lock_after)
    }

    fn open_worktree_repo(&self, session: SessionId, wt: &Worktree) -> Result<Repository> {
        let wrepo = Repository::open_from_worktree(wt)
            .git(|| format!("opening the worktree of {session}"))?;
        let found_common = canonical(wrepo.commondir());
        if found_common != self.commondir {
            return Err(Error::Misplaced {
                session,
                expected: format!("repository `{}`", self.commondir.display()),
                found: format!("repository `{}`", found_common.display()),
            });
        }
        let admin = canonical(&self.admin_dir(session));
        let found_gitdir = canonical(wrepo.path());
        if found_gitdir != admin {
            return Err(Error::Misplaced {
                session,
                expected: format!("git dir `{}`", admin.display()),
                found: format!("git dir `{}`", found_gitdir.display()),
            });
        }
        let workdir = wrepo.workdir().map(canonical);
        if workdir.as_deref() != Some(canonical(wt.path()).as_path()) {
            return Err(Error::Misplaced {
                session,
                expected: format!("work dir `{}`", wt.path().display()),
                found: format!("work dir {workdir:?}"),
            });
        }
        Ok(wrepo)
    }

    fn admin_dir(&self, session: SessionId) -> PathBuf {
        self.commondir.join("worktrees").join(session.to_string())
    }

    fn read_meta(&self, session: SessionId) -> Meta {
        let path = self.admin_dir(session).join(META_FILE);
        Meta::parse(&fs::read_to_string(path).unwrap_or_default())
    }

    fn write_meta(&self, session: SessionId, meta: &Meta) -> Result<()> {
        let path = self.admin_dir(session).join(META_FILE);
        fs::write(&path, meta.render(session)).io("writing worktree metadata", path)
    }

    /// Replace the lock reason without a moment of being unlocked (write, then rename
    /// over git's `locked` file).
    fn set_lock_reason(&self, session: SessionId, reason: &str) -> Result<()> {
        let admin = self.admin_dir(session);
        let tmp = admin.join("locked.worktrain-tmp");
        fs::write(&tmp, reason).io("writing lock reason", &tmp)?;
        let locked = admin.join("locked");
        fs::rename(&tmp, &locked).io("replacing lock", locked)
    }

    /// Re-attach an existing worktree (locking it for use again), or prune a registration
    /// whose directory vanished so it can be created anew. `None`: nothing to re-attach.
    fn reattach(&self, repo: &Repository, session: SessionId) -> Result<Option<SessionWorktree>> {
        let name = session.to_string();
        if !is_registered(repo, &name)? {
            return Ok(None);
        }
        let wt = repo
            .find_worktree(&name)
            .git(|| format!("looking up worktree {name}"))?;
        if !exists(wt.path()) {
            tracing::warn!(path = %wt.path().display(), "registered worktree directory is gone; pruning the registration and creating it again");
            prune_registration(&wt)?;
            return Ok(None);
        }
        let wrepo = self.open_worktree_repo(session, &wt)?;
        self.ensure_unlocked_index(&wrepo)?;
        match lock_state(&wt)? {
            LockState::InUse => {}
            LockState::Kept { .. } => self.set_lock_reason(session, &in_use_reason(session))?,
            LockState::Unlocked => wt
                .lock(Some(&in_use_reason(session)))
                .git(|| format!("locking the worktree of {session}"))?,
            LockState::Foreign { reason } => {
                tracing::warn!(%reason, "worktree is locked by someone else; using it without taking the lock");
            }
        }
        let meta = self.read_meta(session);
        let detached = wrepo.head_detached().unwrap_or(false);
        let head = wrepo
            .head()
            .and_then(|h| h.peel_to_commit())
            .git(|| format!("reading HEAD of the worktree of {session}"))?
            .id();
        tracing::info!(path = %wt.path().display(), head = %head, "re-attached existing worktree");
        Ok(Some(SessionWorktree {
            session,
            path: wt.path().to_path_buf(),
            mode: if detached {
                Mode::Detached
            } else {
                Mode::Branch
            },
            branch: (!detached).then(|| branch_name(session)),
            head,
            base: meta.base,
            reattached: true,
        }))
    }

    /// Make sure `<root>/<session>` can be created: it must not exist, except as an
    /// empty directory (left by an interrupted create), which is removed.
    fn prepare_path(&self, session: SessionId) -> Result<PathBuf> {
        fs::create_dir_all(&self.root).io("creating worktree root", &self.root)?;
        let path = self.path_for(session);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(e).io("inspecting", path),
            Ok(meta) if meta.is_dir() => {
                let empty = fs::read_dir(&path).io("listing", &path)?.next().is_none();
                if empty {
                    fs::remove_dir(&path).io("removing empty directory", &path)?;
                    Ok(path)
                } else {
                    Err(Error::PathOccupied { session, path })
                }
            }
            Ok(_) => Err(Error::PathOccupied { session, path }),
        }
    }

    fn add_worktree(
        &self,
        repo: &Repository,
        session: SessionId,
        path: &Path,
        branch: &git2::Reference<'_>,
    ) -> Result<Worktree> {
        let name = session.to_string();
        // libgit2 creates `<common>/worktrees` racily (exists? then mkdir-exclusive), so
        // concurrent first creates could fail: make sure it is there.
        let admin_parent = self.commondir.join("worktrees");
        fs::create_dir_all(&admin_parent).io("creating", &admin_parent)?;
        let mut opts = WorktreeAddOptions::new();
        opts.reference(Some(branch));
        let mut attempt = 0u32;
        let result = loop {
            // libgit2's "is this branch checked out?" scan reports a worktree that is
            // being created at that moment as holding every branch, so adds in this
            // process are serialized, and a spurious refusal (our own scan says the
            // branch is free) is retried briefly for adds from other processes.
            let result = {
                let _serial = ADD_LOCK
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                repo.worktree(&name, path, Some(&opts))
            };
            match result {
                Err(e)
                    if attempt < 5
                        && e.class() == git2::ErrorClass::Worktree
                        && e.message().contains("already checked out")
                        && branch
                            .name()
                            .ok()
                            .is_some_and(|r| matches!(checked_out_in(repo, r), Ok(None))) =>
                {
                    attempt += 1;
                    tracing::debug!(
                        attempt,
                        "spurious 'already checked out' from libgit2; retrying"
                    );
                    std::thread::sleep(Duration::from_millis(20 << attempt));
                }
                other => break other,
            }
        };
        match result {
            Ok(wt) => Ok(wt),
            Err(e) => {
                // Roll back what libgit2 may have left, so a retry starts clean.
                let admin = self.admin_dir(session);
                if admin.exists() {
                    let _ = fs::remove_dir_all(&admin);
                }
                if path.exists() {
                    let _ = fs::remove_dir_all(path);
                }
                Err(e).git(|| format!("adding worktree `{}`", path.display()))
            }
        }
    }

    /// Fetch `base` (when a remote is configured) and return the ref to branch from and
    /// its commit.
    fn resolve_base(
        &self,
        repo: &Repository,
        session: SessionId,
        base: &str,
    ) -> Result<(String, Oid)> {
        let Some(remote) = &self.remote else {
            let local = format!("refs/heads/{base}");
            let oid = repo.refname_to_id(&local).map_err(|_| Error::RevNotFound {
                rev: local.clone(),
                fetched: false,
            })?;
            return Ok((local, oid));
        };
        let tracking = format!("refs/remotes/{remote}/{base}");
        // Fetch into a session-private ref as well: if the remote lacks the branch, that
        // ref stays absent, instead of a stale tracking ref being used silently.
        let probe = fetched_ref(session);
        delete_ref_if_exists(repo, &probe)?;
        let specs = [
            format!("+refs/heads/{base}:{tracking}"),
            format!("+refs/heads/{base}:{probe}"),
        ];
        fetch(repo, remote, &specs)?;
        let oid = repo.refname_to_id(&probe).map_err(|_| Error::RevNotFound {
            rev: format!("{remote}/{base}"),
            fetched: true,
        });
        delete_ref_if_exists(repo, &probe)?;
        Ok((tracking, oid?))
    }

    fn resolve_detached(&self, repo: &Repository, session: SessionId, rev: &str) -> Result<Oid> {
        let pin = fetched_ref(session);
        let oid = match &self.remote {
            Some(remote) if rev.starts_with("refs/") => {
                if !git2::Reference::is_valid_name(rev) {
                    return Err(Error::Invalid {
                        what: "ref",
                        value: rev.chars().take(200).collect(),
                        reason: "not a valid git ref name",
                    });
                }
                delete_ref_if_exists(repo, &pin)?;
                fetch(repo, remote, &[format!("+{rev}:{pin}")])?;
                let oid = repo.refname_to_id(&pin).map_err(|_| Error::RevNotFound {
                    rev: rev.to_owned(),
                    fetched: true,
                })?;
                // The pin might hold a tag: detach at the commit.
                repo.find_object(oid, None)
                    .and_then(|o| o.peel_to_commit())
                    .git(|| format!("resolving `{rev}` to a commit"))?
                    .id()
            }
            _ => repo
                .revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|_| Error::RevNotFound {
                    rev: rev.to_owned(),
                    fetched: false,
                })?
                .id(),
        };
        repo.reference(&pin, oid, true, "worktrain: read-only worktree")
            .git(|| format!("pinning `{pin}`"))?;
        Ok(oid)
    }

    /// Remove a registered worktree: its directory (only at the managed path), then
    /// unlock and prune the registration, drop worktrain's helper refs, and delete the
    /// branch if allowed and safe. Returns whether the branch was deleted.
    /// Remove a registered worktree: its uncommitted changes first become a commit on
    /// the session branch (so no work is lost with the directory), then the directory,
    /// the registration, and — when provably redundant — the branch.
    fn remove_registered(
        &self,
        repo: &Repository,
        session: SessionId,
        wt: &Worktree,
        delete_branch: bool,
    ) -> Result<Removal> {
        let path = wt.path().to_path_buf();
        let expected = self.path_for(session);
        let meta = self.read_meta(session);
        let mut preserved = None;
        if exists(&path) {
            if canonical(&path) != canonical(&expected) {
                return Err(Error::Misplaced {
                    session,
                    expected: format!("work dir `{}`", expected.display()),
                    found: format!("work dir `{}`", path.display()),
                });
            }
            if meta.mode == Mode::Branch {
                let id = session.to_string();
                preserved = self.commit_all(
                    session,
                    &format!("worktrain: preserve uncommitted work of session {session}"),
                    &[
                        ("Worktrain-Session", id.as_str()),
                        (
                            "Worktrain-Preserved",
                            "uncommitted changes of a removed worktree",
                        ),
                    ],
                )?;
                if let Some(oid) = preserved {
                    tracing::info!(%oid, "uncommitted work preserved on the session branch");
                }
            }
            // Directory first, while still locked: a crash here leaves a locked
            // registration without directory, which the reaper prunes.
            fs::remove_dir_all(&path).io("removing worktree directory", &path)?;
        }
        prune_registration(wt)?;
        delete_ref_if_exists(repo, &fetched_ref(session))?;
        delete_ref_if_exists(repo, &format!("refs/heads/{}", detach_branch_name(session)))?;
        let branch_deleted = delete_branch && delete_branch_if_safe(repo, session, &meta)?;
        tracing::info!(path = %path.display(), branch_deleted, "worktree removed");
        Ok(Removal {
            branch_deleted,
            preserved,
        })
    }

    fn info(
        &self,
        repo: &Repository,
        session: SessionId,
        options: ListOptions,
        now: SystemTime,
    ) -> Result<WorktreeInfo> {
        let name = session.to_string();
        let wt = repo
            .find_worktree(&name)
            .git(|| format!("looking up worktree {name}"))?;
        let path = wt.path().to_path_buf();
        let present = exists(&path);
        let admin = self.admin_dir(session);
        let meta = self.read_meta(session);
        let created = meta.created.or_else(|| {
            fs::metadata(admin.join("commondir"))
                .and_then(|m| m.modified())
                .ok()
        });
        let (branch_ref_name, head) = read_admin_head(repo, &admin);
        let branch = branch_ref_name
            .as_deref()
            .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r).to_owned());
        let mode = if branch.is_some() {
            Mode::Branch
        } else {
            Mode::Detached
        };
        let base_oid = meta
            .base
            .as_deref()
            .and_then(|b| repo.refname_to_id(b).ok());
        let (ahead, merged) = match (head, base_oid) {
            (Some(h), Some(b)) if mode == Mode::Branch => {
                let ahead = repo.graph_ahead_behind(h, b).ok().map(|(a, _)| a);
                let merged = Some(h == b || repo.graph_descendant_of(b, h).unwrap_or(false));
                (ahead, merged)
            }
            _ => (None, None),
        };
        let mut problem = None;
        let dirty = if options.status && present {
            match self
                .open_worktree_repo(session, &wt)
                .and_then(|wrepo| is_dirty(&wrepo))
            {
                Ok(dirty) => Some(dirty),
                Err(e) => {
                    tracing::warn!(session = %session, error = %e, "cannot inspect worktree");
                    problem = Some(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        Ok(WorktreeInfo {
            session,
            path,
            exists: present,
            mode,
            branch,
            head,
            base: meta.base,
            created,
            age: created.map(|c| now.duration_since(c).unwrap_or(Duration::ZERO)),
            lock: lock_state(&wt)?,
            dirty,
            ahead,
            merged,
            problem,
        })
    }

    /// Directories under the root named like sessions, not registered here, whose `.git`
    /// file points into this repository's `worktrees/` (their registration was pruned).
    fn clean_unregistered(
        &self,
        registered: &[PathBuf],
        options: CleanOptions,
        report: &mut CleanReport,
    ) -> Result<()> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).io("listing", &self.root),
        };
        let ours = self.commondir.join("worktrees");
        for entry in entries.flatten() {
            let Some(session) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<SessionId>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if registered.contains(&canonical(&path)) {
                continue;
            }
            let Ok(gitfile) = fs::read_to_string(path.join(".git")) else {
                continue;
            };
            let Some(target) = gitfile.trim().strip_prefix("gitdir:") else {
                continue;
            };
            let target = PathBuf::from(target.trim());
            let target_parent = target.parent().map(canonical);
            if target_parent.as_deref() != Some(ours.as_path()) {
                continue; // another repository's worktree
            }
            let mut entry = CleanEntry {
                session: Some(session),
                path: path.clone(),
                reason: CleanReason::Unregistered,
                action: CleanAction::WouldRemove,
                preserved: None,
            };
            if !options.dry_run {
                entry.action = match fs::remove_dir_all(&path) {
                    Ok(()) => CleanAction::Removed,
                    Err(e) => CleanAction::Skipped(format!("cannot remove: {e}")),
                };
            }
            report.entries.push(entry);
        }
        Ok(())
    }
}

/// What [`Worktrees::remove_registered`] did.
struct Removal {
    branch_deleted: bool,
    preserved: Option<Oid>,
}

// ----- free helpers -----

/// Serializes `git worktree add` within this process (see [`Worktrees::add_worktree`]).
static ADD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn open_repo(path: &Path) -> Result<Repository> {
    Repository::open_ext(
        path,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&OsStr>(),
    )
    .git(|| format!("opening repository `{}`", path.display()))
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn worktree_names(repo: &Repository) -> Result<Vec<String>> {
    let names = repo.worktrees().git(|| "listing worktrees".into())?;
    let mut out = Vec::with_capacity(names.len());
    for name in names.iter() {
        if let Some(name) = name.git(|| "reading a worktree name".into())? {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn is_registered(repo: &Repository, name: &str) -> Result<bool> {
    Ok(worktree_names(repo)?.iter().any(|n| n == name))
}

fn lock_state(wt: &Worktree) -> Result<LockState> {
    let status = wt
        .is_locked()
        .git(|| format!("reading the lock of `{}`", wt.path().display()))?;
    Ok(LockState::from_status(&status))
}

/// Unlock and prune a worktree registration whose directory is gone.
fn prune_registration(wt: &Worktree) -> Result<()> {
    if matches!(
        wt.is_locked().git(|| "reading worktree lock".into())?,
        git2::WorktreeLockStatus::Locked(_)
    ) {
        wt.unlock()
            .git(|| format!("unlocking `{}`", wt.path().display()))?;
    }
    let mut opts = WorktreePruneOptions::new();
    // `valid(false)`: refuse if the directory is (still, again) there.
    opts.valid(false).locked(false).working_tree(false);
    wt.prune(Some(&mut opts))
        .git(|| format!("pruning worktree `{}`", wt.path().display()))
}

fn delete_ref_if_exists(repo: &Repository, name: &str) -> Result<()> {
    match repo.find_reference(name) {
        Ok(mut r) => r.delete().git(|| format!("deleting `{name}`")),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e).git(|| format!("looking up `{name}`")),
    }
}

pub(crate) fn fetch(repo: &Repository, remote_name: &str, specs: &[String]) -> Result<()> {
    // The `git` command line, so the user's own setup applies (credential helpers, SSH
    // agent and config, `insteadOf`, HTTPS): libgit2 here has neither TLS nor SSH nor
    // credential helpers. Without a `git` program, libgit2 still reaches local remotes.
    let dir = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
    let mut args = vec![
        "fetch",
        "--quiet",
        "--no-tags",
        // No FETCH_HEAD: concurrent sessions would fight over that one file.
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        remote_name,
    ];
    args.extend(specs.iter().map(String::as_str));
    let mut attempt = 0u32;
    loop {
        let out = match crate::cli::run_blocking(&dir, &args, None) {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return fetch_with_libgit2(repo, remote_name, specs);
            }
            Err(source) => {
                return Err(Error::Io {
                    context: "running `git fetch` in",
                    path: dir,
                    source,
                });
            }
        };
        if out.ok() {
            tracing::debug!(remote = remote_name, ?specs, "fetched");
            return Ok(());
        }
        // A ref the remote does not have fetches nothing (as libgit2 does): the caller
        // finds its target ref absent and says which revision was not found.
        if out.stderr.contains("couldn't find remote ref") {
            tracing::debug!(remote = remote_name, ?specs, "the remote lacks the ref");
            return Ok(());
        }
        // Another session updating the same ref at the same moment: retry briefly.
        if out.stderr.contains("cannot lock ref") && attempt < 5 {
            attempt += 1;
            std::thread::sleep(Duration::from_millis(25 << attempt));
            continue;
        }
        return Err(Error::Remote {
            action: "fetch",
            remote: remote_name.to_owned(),
            message: out.error_lines(),
            transient: out.transient_failure(),
        });
    }
}

fn fetch_with_libgit2(repo: &Repository, remote_name: &str, specs: &[String]) -> Result<()> {
    let mut remote = repo
        .find_remote(remote_name)
        .git(|| format!("looking up remote `{remote_name}`"))?;
    let mut attempt = 0u32;
    loop {
        let mut opts = FetchOptions::new();
        opts.download_tags(AutotagOption::None)
            .update_fetchhead(false);
        match remote.fetch(specs, Some(&mut opts), Some("worktrain: fetch")) {
            Ok(()) => {
                tracing::debug!(remote = remote_name, ?specs, "fetched (libgit2)");
                return Ok(());
            }
            Err(e) if e.code() == git2::ErrorCode::Locked && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(25 << attempt));
            }
            Err(e) => return Err(e).git(|| format!("fetching {specs:?} from `{remote_name}`")),
        }
    }
}

/// The worktree (or main checkout) that has `refname` checked out, by reading every
/// HEAD file directly (works even for registrations whose directory is gone).
fn checked_out_in(repo: &Repository, refname: &str) -> Result<Option<PathBuf>> {
    let points_at = |head_file: &Path| {
        fs::read_to_string(head_file).is_ok_and(|s| {
            s.trim()
                .strip_prefix("ref:")
                .is_some_and(|r| r.trim() == refname)
        })
    };
    if points_at(&repo.commondir().join("HEAD")) {
        let holder = repo.workdir().unwrap_or(repo.commondir());
        return Ok(Some(holder.to_path_buf()));
    }
    for name in worktree_names(repo)? {
        let admin = repo.commondir().join("worktrees").join(&name);
        if points_at(&admin.join("HEAD")) {
            let holder = repo
                .find_worktree(&name)
                .map(|wt| wt.path().to_path_buf())
                .unwrap_or(admin);
            return Ok(Some(holder));
        }
    }
    Ok(None)
}

/// Delete `worktrain/<session>` if no worktree has it checked out and its tip is
/// contained in the base or a remote-tracking ref. Returns whether it was deleted.
fn delete_branch_if_safe(repo: &Repository, session: SessionId, meta: &Meta) -> Result<bool> {
    let refname = branch_ref(session);
    let mut reference = match repo.find_reference(&refname) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(false),
        Err(e) => return Err(e).git(|| format!("looking up `{refname}`")),
    };
    if let Some(holder) = checked_out_in(repo, &refname)? {
        tracing::info!(branch = %refname, holder = %holder.display(), "branch is checked out elsewhere; not deleting it");
        return Ok(false);
    }
    let Some(tip) = reference.target() else {
        return Ok(false);
    };
    let contains = |oid: Oid| oid == tip || repo.graph_descendant_of(oid, tip).unwrap_or(false);
    let mut safe = meta
        .base
        .as_deref()
        .and_then(|b| repo.refname_to_id(b).ok())
        .is_some_and(contains);
    if !safe {
        let remote_refs = repo
            .references_glob("refs/remotes/*")
            .git(|| "listing remote-tracking refs".into())?;
        safe = remote_refs
            .flatten()
            .filter_map(|r| r.target())
            .take(500)
            .any(contains);
    }
    if !safe {
        tracing::info!(branch = %refname, "branch has commits that are neither merged nor pushed; keeping it");
        return Ok(false);
    }
    reference
        .delete()
        .git(|| format!("deleting branch `{refname}`"))?;
    tracing::info!(branch = %refname, "branch deleted");
    Ok(true)
}

/// Read a worktree's HEAD from its administrative directory: (branch ref, commit).
fn read_admin_head(repo: &Repository, admin: &Path) -> (Option<String>, Option<Oid>) {
    let Ok(text) = fs::read_to_string(admin.join("HEAD")) else {
        return (None, None);
    };
    let text = text.trim();
    match text.strip_prefix("ref:") {
        Some(r) => {
            let r = r.trim().to_owned();
            let oid = repo.refname_to_id(&r).ok();
            (Some(r), oid)
        }
        None => (None, Oid::from_str(text).ok()),
    }
}

/// Uncommitted changes: anything tracked modified/staged/deleted, or untracked files
/// that are not ignored.
pub(crate) fn is_dirty(wrepo: &Repository) -> Result<bool> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = wrepo
        .statuses(Some(&mut opts))
        .git(|| "scanning worktree status".into())?;
    Ok(!statuses.is_empty())
}
