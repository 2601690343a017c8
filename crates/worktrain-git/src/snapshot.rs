//! Step snapshots: the worktree's full state recorded as a commit on a hidden ref,
//! restored for rewinds, and diffed for `worktrain session diff`.
//!
//! A snapshot's tree holds every file git would see — tracked and untracked — minus
//! ignored ones. It is built in a temporary index (a copy of the worktree's index, so
//! unchanged files are not re-hashed) that lives in the worktree's administrative
//! directory; the branch, HEAD and the worktree's own index are never touched. The
//! commit's parent is the worktree's HEAD at that moment (none for an unborn HEAD),
//! and the hidden ref `refs/worktrain/<session>/<node>` keeps it alive.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{
    Commit, Delta, DiffFindOptions, DiffFormat, DiffOptions, Index, IndexAddOption, Oid,
    Repository, Signature, Tree, build::CheckoutBuilder,
};
use worktrain_core::ids::SessionId;

use crate::error::{Error, GitResultExt, IoResultExt, Result};
use crate::names::{PRE_RESTORE_LABEL, snapshot_prefix, snapshot_ref, snapshot_ref_unchecked};
use crate::worktrees::{Identity, Worktrees};

/// A recorded snapshot of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The node label (`n3`), or `_pre-restore` for the automatic one.
    pub label: String,
    /// The snapshot commit.
    pub oid: Oid,
    /// Its hidden ref.
    pub refname: String,
}

/// What [`Worktrees::restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot restored.
    pub snapshot: Oid,
    /// The automatic snapshot of the state just before the restore
    /// (`refs/worktrain/<session>/_pre-restore`), so a rewind can be undone.
    pub backup: Oid,
}

/// How one file changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Path before (for deletions and renames) or the path.
    pub old_path: Option<PathBuf>,
    /// Path after (absent for deletions).
    pub new_path: Option<PathBuf>,
    /// Added, deleted, modified, renamed, typechange, …
    pub status: ChangeKind,
    /// Lines added in this file (0 for a binary file).
    pub insertions: usize,
    /// Lines removed in this file (0 for a binary file).
    pub deletions: usize,
    /// Binary content (no line counts).
    pub binary: bool,
}

/// The kind of a file change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The file is new in the later snapshot.
    Added,
    /// The file is gone from the later snapshot.
    Deleted,
    /// Content or mode changed.
    Modified,
    /// Moved (with or without edits).
    Renamed,
    /// Copied from another file (`old_path`), with or without edits.
    Copied,
    /// Changed between file, symlink and submodule.
    TypeChange,
    /// Anything else libgit2 reports.
    Other,
}

/// Totals of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiffStat {
    /// Number of files that differ between the two snapshots.
    pub files_changed: usize,
    /// Lines added over all files (binary files count none).
    pub insertions: usize,
    /// Lines removed over all files (binary files count none).
    pub deletions: usize,
    /// One entry per changed file (see [`FileStat`]).
    pub files: Vec<FileStat>,
}

/// A diff between two snapshots (or any two commits or trees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// The totals and per-file counts.
    pub stat: DiffStat,
    /// The unified patch (`git diff` format, binary files summarized).
    pub patch: String,
}

impl Worktrees {
    /// Record the session's worktree as a commit on `refs/worktrain/<session>/<node_label>`
    /// (see the module docs) and return it. Recording the same state again under the
    /// same label returns the existing commit.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn snapshot(&self, session: SessionId, node_label: &str) -> Result<Oid> {
        let refname = snapshot_ref(session, node_label)?;
        let wrepo = self.open_session(session)?;
        self.snapshot_to(&wrepo, session, node_label, &refname)
    }

    /// Restore the session's worktree files to a snapshot, for a rewind: tracked and
    /// untracked files get the snapshot's content and mode, files that did not exist then
    /// are deleted (emptied directories too); ignored files are left alone. The state
    /// before is saved first as the `_pre-restore` snapshot. HEAD and the branch stay
    /// where they are; the worktree's index is reset to HEAD's tree, so `git status`
    /// shows the restored state as unstaged changes relative to HEAD.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn restore(&self, session: SessionId, snapshot: Oid) -> Result<Restored> {
        let wrepo = self.open_session(session)?;
        self.ensure_unlocked_index(&wrepo)?;
        let target = wrepo
            .find_object(snapshot, None)
            .and_then(|o| o.peel_to_tree())
            .git(|| format!("reading snapshot {snapshot}"))?;
        let backup_ref = snapshot_ref_unchecked(session, PRE_RESTORE_LABEL);
        let backup = self.snapshot_to(&wrepo, session, PRE_RESTORE_LABEL, &backup_ref)?;

        // Check out through a scratch index so the real one is not rewritten with the
        // snapshot's (partly untracked) files.
        let scratch = ScratchIndex::new(&wrepo)?;
        let target_id = target.id();
        drop(target);
        let checkout_repo = private_handle(&wrepo)?;
        let mut index = scratch.open()?;
        checkout_repo
            .set_index(&mut index)
            .git(|| "using a scratch index".into())?;
        let mut checkout = CheckoutBuilder::new();
        checkout
            .force()
            .remove_untracked(true)
            .remove_ignored(false)
            .recreate_missing(true);
        checkout_repo
            .find_object(target_id, Some(git2::ObjectType::Tree))
            .and_then(|tree| checkout_repo.checkout_tree(&tree, Some(&mut checkout)))
            .git(|| format!("restoring snapshot {snapshot}"))?;
        drop(checkout_repo);

        // The real index: HEAD's tree (nothing staged).
        let mut real = wrepo.index().git(|| "opening the worktree index".into())?;
        match wrepo.head().and_then(|h| h.peel_to_tree()) {
            Ok(tree) => real.read_tree(&tree).git(|| "resetting the index".into())?,
            Err(_) => real.clear().git(|| "clearing the index".into())?,
        }
        real.write().git(|| "writing the worktree index".into())?;
        tracing::info!(%snapshot, %backup, "worktree restored to snapshot");
        Ok(Restored { snapshot, backup })
    }

    /// The diff between two snapshots (or any commits/trees of this repository), as a
    /// stat and a unified patch, with rename detection.
    pub fn diff(&self, from: Oid, to: Oid) -> Result<SnapshotDiff> {
        let repo = self.open_main()?;
        let a = tree_of(&repo, from)?;
        let b = tree_of(&repo, to)?;
        diff_trees(&repo, Some(&a), &b)
    }

    /// The first parent of a commit of this repository (a snapshot's parent is the
    /// worktree's HEAD when it was taken).
    pub fn first_parent(&self, commit: Oid) -> Result<Oid> {
        let repo = self.open_main()?;
        repo.find_commit(commit)
            .and_then(|c| c.parent_id(0))
            .git(|| format!("reading the parent of {commit}"))
    }

    /// The snapshot recorded under a label, if any.
    pub fn snapshot_of(&self, session: SessionId, node_label: &str) -> Result<Option<Oid>> {
        let refname = snapshot_ref(session, node_label)?;
        let repo = self.open_main()?;
        match repo.refname_to_id(&refname) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e).git(|| format!("reading `{refname}`")),
        }
    }

    /// Push the session's snapshot `node_label` to the configured remote under the same
    /// hidden ref, so a daemon on another host can take the session over from it (see
    /// [`Worktrees::fetch_snapshots`] and [`Worktrees::adopt`]). The ref is replaced on
    /// the remote (a snapshot retaken after a rewind is not a fast-forward); only
    /// `refs/worktrain/…` is ever pushed this way. Runs the `git` command line, so the
    /// user's own git setup applies.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn push_snapshot(&self, session: SessionId, node_label: &str) -> Result<()> {
        let refname = snapshot_ref(session, node_label)?;
        let remote = self.remote_for_snapshots()?;
        let spec = format!("+{refname}:{refname}");
        let dir = self.repo_dir();
        let out = crate::cli::run_blocking(&dir, &["push", "--quiet", &remote, &spec], None)
            .io("running `git push` in", &dir)?;
        if !out.ok() {
            return Err(Error::Remote {
                action: "push",
                remote,
                message: out.error_lines(),
                transient: out.transient_failure(),
            });
        }
        tracing::info!(%remote, %refname, "snapshot shared");
        Ok(())
    }

    /// Fetch every snapshot ref of the session from the configured remote (replacing
    /// local ones of the same name).
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn fetch_snapshots(&self, session: SessionId) -> Result<()> {
        let remote = self.remote_for_snapshots()?;
        let prefix = snapshot_prefix(session);
        let repo = self.open_main()?;
        crate::worktrees::fetch(&repo, &remote, &[format!("+{prefix}*:{prefix}*")])
    }

    fn remote_for_snapshots(&self) -> Result<String> {
        self.remote.clone().ok_or(Error::Invalid {
            what: "remote",
            value: String::new(),
            reason: "sharing snapshots needs a configured remote (`daemon.worktrees.remote`)",
        })
    }

    /// All snapshots of a session, ordered by label.
    pub fn snapshots(&self, session: SessionId) -> Result<Vec<Snapshot>> {
        let repo = self.open_main()?;
        let prefix = snapshot_prefix(session);
        let refs = repo
            .references_glob(&format!("{prefix}*"))
            .git(|| format!("listing `{prefix}*`"))?;
        let mut out: Vec<Snapshot> = refs
            .flatten()
            .filter_map(|r| {
                let refname = r.name().ok()?.to_owned();
                let label = refname.strip_prefix(&prefix)?.to_owned();
                Some(Snapshot {
                    label,
                    oid: r.target()?,
                    refname,
                })
            })
            .collect();
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }

    /// Delete all snapshot refs of a session (when its history is archived). Their
    /// objects become unreachable and git's gc collects them eventually.
    pub fn drop_snapshots(&self, session: SessionId) -> Result<usize> {
        let repo = self.open_main()?;
        let snapshots = self.snapshots(session)?;
        for s in &snapshots {
            if let Ok(mut r) = repo.find_reference(&s.refname) {
                r.delete().git(|| format!("deleting `{}`", s.refname))?;
            }
        }
        Ok(snapshots.len())
    }

    fn snapshot_to(
        &self,
        wrepo: &Repository,
        session: SessionId,
        label: &str,
        refname: &str,
    ) -> Result<Oid> {
        let tree_id = capture_tree(wrepo)?;
        let tree = wrepo
            .find_tree(tree_id)
            .git(|| format!("reading tree {tree_id}"))?;
        let head: Option<Commit<'_>> = wrepo.head().and_then(|h| h.peel_to_commit()).ok();
        // Idempotent: same state, same parent, same label → the existing snapshot.
        if let Ok(existing) = wrepo.refname_to_id(refname)
            && let Ok(commit) = wrepo.find_commit(existing)
            && commit.tree_id() == tree_id
            && commit.parent_ids().next() == head.as_ref().map(Commit::id)
        {
            tracing::debug!(%existing, refname, "snapshot unchanged");
            return Ok(existing);
        }
        let me = Identity::worktrain();
        let sig = Signature::now(&me.name, &me.email).git(|| "making a signature".into())?;
        let message = format!(
            "worktrain snapshot {session} {label}\n\nWorktrain-Session: {session}\nWorktrain-Node: {label}\n"
        );
        let parents: Vec<&Commit<'_>> = head.iter().collect();
        let oid = wrepo
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .git(|| "writing the snapshot commit".into())?;
        wrepo
            .reference(refname, oid, true, "worktrain: step snapshot")
            .git(|| format!("updating `{refname}`"))?;
        tracing::info!(%oid, refname, "snapshot recorded");
        Ok(oid)
    }
}

/// A temporary index file in the worktree's administrative directory, seeded with a
/// copy of the worktree's own index (for its stat cache). Removed on drop.
struct ScratchIndex {
    dir: tempfile::TempDir,
}

impl ScratchIndex {
    fn new(wrepo: &Repository) -> Result<Self> {
        let gitdir = wrepo.path();
        let dir = tempfile::Builder::new()
            .prefix("worktrain-index-")
            .tempdir_in(gitdir)
            .io("creating a scratch index directory in", gitdir)?;
        let real = gitdir.join("index");
        if real.exists() {
            let scratch = dir.path().join("index");
            if let Err(e) = fs::copy(&real, &scratch) {
                // Only a speed-up: an empty index gives the same tree, slower.
                tracing::debug!(error = %e, "could not copy the index; starting empty");
                let _ = fs::remove_file(&scratch);
            }
        }
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("index")
    }

    fn open(&self) -> Result<Index> {
        let path = self.path();
        match Index::open(&path) {
            Ok(index) => Ok(index),
            Err(e) => {
                tracing::debug!(error = %e, "copied index unreadable; starting empty");
                let _ = fs::remove_file(&path);
                Index::open(&path).git(|| format!("opening scratch index `{}`", path.display()))
            }
        }
    }
}

/// Build the tree of everything in the worktree except ignored files, without touching
/// the worktree's index (a scratch index is attached to a private repository handle).
fn capture_tree(wrepo: &Repository) -> Result<Oid> {
    let scratch = ScratchIndex::new(wrepo)?;
    let private = private_handle(wrepo)?;
    let mut index = scratch.open()?;
    private
        .set_index(&mut index)
        .git(|| "using a scratch index".into())?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .git(|| "adding worktree files to the scratch index".into())?;
    index
        .update_all(["*"], None)
        .git(|| "dropping deleted files from the scratch index".into())?;
    index
        .write_tree()
        .git(|| "writing the snapshot tree".into())
}

/// A second handle on the same worktree, opened through its (already verified) git
/// directory rather than the `.git` file in the work tree, so a scratch index can be
/// attached to it without affecting `wrepo`.
fn private_handle(wrepo: &Repository) -> Result<Repository> {
    let handle = crate::worktrees::open_repo(wrepo.path())?;
    let same = |a: Option<&Path>, b: Option<&Path>| {
        a.map(fs::canonicalize).and_then(Result::ok) == b.map(fs::canonicalize).and_then(Result::ok)
    };
    if handle.workdir().is_none() || !same(handle.workdir(), wrepo.workdir()) {
        return Err(Error::Invalid {
            what: "worktree git directory",
            value: wrepo.path().display().to_string(),
            reason: "does not open onto the same working directory",
        });
    }
    Ok(handle)
}

fn tree_of(repo: &Repository, oid: Oid) -> Result<Tree<'_>> {
    repo.find_object(oid, None)
        .and_then(|o| o.peel_to_tree())
        .git(|| format!("reading tree of {oid}"))
}

pub(crate) fn diff_trees(
    repo: &Repository,
    a: Option<&Tree<'_>>,
    b: &Tree<'_>,
) -> Result<SnapshotDiff> {
    let mut opts = DiffOptions::new();
    opts.include_typechange(true);
    let mut diff = repo
        .diff_tree_to_tree(a, Some(b), Some(&mut opts))
        .git(|| "diffing trees".into())?;
    let mut find = DiffFindOptions::new();
    find.renames(true);
    diff.find_similar(Some(&mut find))
        .git(|| "detecting renames".into())?;

    let mut files = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let binary = delta.flags().is_binary();
        let (insertions, deletions) = match git2::Patch::from_diff(&diff, i) {
            Ok(Some(patch)) => patch
                .line_stats()
                .map(|(_, add, del)| (add, del))
                .unwrap_or((0, 0)),
            _ => (0, 0),
        };
        let binary = binary || delta.flags().is_binary();
        files.push(FileStat {
            old_path: (delta.status() != Delta::Added)
                .then(|| delta.old_file().path().map(Path::to_path_buf))
                .flatten(),
            new_path: (delta.status() != Delta::Deleted)
                .then(|| delta.new_file().path().map(Path::to_path_buf))
                .flatten(),
            status: match delta.status() {
                Delta::Added => ChangeKind::Added,
                Delta::Deleted => ChangeKind::Deleted,
                Delta::Modified => ChangeKind::Modified,
                Delta::Renamed => ChangeKind::Renamed,
                Delta::Copied => ChangeKind::Copied,
                Delta::Typechange => ChangeKind::TypeChange,
                _ => ChangeKind::Other,
            },
            insertions,
            deletions,
            binary,
        });
    }
    let stats = diff.stats().git(|| "computing diff stats".into())?;
    let stat = DiffStat {
        files_changed: stats.files_changed(),
        insertions: stats.insertions(),
        deletions: stats.deletions(),
        files,
    };
    let mut patch = String::new();
    diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        match line.origin() {
            '+' | '-' | ' ' => patch.push(line.origin()),
            _ => {}
        }
        patch.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .git(|| "rendering the patch".into())?;
    Ok(SnapshotDiff { stat, patch })
}
