//! The git half of delivery: commit everything in a session's worktree (with trailers
//! naming the session) and push the session branch.

use git2::{Oid, PushOptions, RemoteCallbacks, Repository, Signature};
use worktrain_core::ids::SessionId;

use crate::error::{Error, GitResultExt, Result};
use crate::names::{branch_ref, short_branch};
use crate::worktrees::{Identity, Worktrees, is_dirty};

/// The result of [`Worktrees::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The remote's name.
    pub remote: String,
    /// The remote ref updated (`refs/heads/<branch>`).
    pub refname: String,
    /// The commit now at that ref.
    pub oid: Oid,
}

/// The result of [`Worktrees::commit_declared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCommit {
    /// The commit of the declared files on the session branch (`None`: none changed).
    pub commit: Option<Oid>,
    /// Changed files that were declared (and committed).
    pub committed: Vec<String>,
    /// Changed files that were not declared (kept on [`DeclaredCommit::kept_on`]).
    pub undeclared: Vec<String>,
    /// The branch holding the undeclared changes, when there are any.
    pub kept_on: Option<String>,
}

/// The branch holding a session's undeclared changes: `worktrain-undeclared/<session>`.
pub fn undeclared_branch_name(session: SessionId) -> String {
    format!("worktrain-undeclared/{session}")
}

/// Whether the changed `path` is covered by the declared entry `declared` (the same
/// path, or a directory above it; a leading `./` and trailing `/` do not matter).
pub fn is_declared(declared: &str, path: &str) -> bool {
    let d = declared.trim();
    let d = d.strip_prefix("./").unwrap_or(d).trim_end_matches('/');
    if d.is_empty() {
        return false;
    }
    path == d
        || path
            .strip_prefix(d)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Worktrees {
    /// Stage everything in the session's worktree (new, modified and deleted files; not
    /// ignored ones) and commit it on the session branch with `message` followed by the
    /// given trailers (`Key: value` lines, e.g. `("Worktrain-Session", "ses_…")`).
    /// Returns `None` when there is nothing to commit. Read-only worktrees refuse.
    #[tracing::instrument(level = "info", skip(self, message, trailers), fields(session = %session))]
    pub fn commit_all(
        &self,
        session: SessionId,
        message: &str,
        trailers: &[(&str, &str)],
    ) -> Result<Option<Oid>> {
        let full_message = compose_message(message, trailers)?;
        let wrepo = self.open_session(session)?;
        if wrepo.head_detached().git(|| "reading HEAD".into())? {
            return Err(Error::ReadOnly { session });
        }
        self.ensure_unlocked_index(&wrepo)?;
        let mut index = wrepo.index().git(|| "opening the worktree index".into())?;
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .git(|| "staging worktree files".into())?;
        index
            .update_all(["*"], None)
            .git(|| "staging deletions".into())?;
        index.write().git(|| "writing the worktree index".into())?;
        let tree_id = index.write_tree().git(|| "writing the tree".into())?;
        let parent = wrepo.head().and_then(|h| h.peel_to_commit()).ok();
        if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
            tracing::info!("nothing to commit");
            return Ok(None);
        }
        let tree = wrepo
            .find_tree(tree_id)
            .git(|| format!("reading tree {tree_id}"))?;
        let sig = self.signature(&wrepo)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = wrepo
            .commit(Some("HEAD"), &sig, &sig, &full_message, &tree, &parents)
            .git(|| "committing".into())?;
        tracing::info!(%oid, "committed");
        Ok(Some(oid))
    }

    /// The commit identity: the configured one, else the repository's, else worktrain's.
    fn signature(&self, wrepo: &Repository) -> Result<Signature<'static>> {
        let identity = match &self.identity {
            Some(id) => id.clone(),
            None => Identity::of_repo(wrepo),
        };
        Signature::now(&identity.name, &identity.email).git(|| "making the commit signature".into())
    }

    /// Commit only the `declared` paths of the session's worktree (files, or directories
    /// as `dir/` or `dir`) on the session branch, with `message` and the trailers. Every
    /// other change — the files the agent touched but did not declare — is kept, never
    /// lost: committed on top of that commit on the branch
    /// [`undeclared_branch_name`] (`worktrain-undeclared/<session>`, outside the session
    /// branch, so it is neither pushed nor part of a pull request), after which the
    /// worktree is left clean at the declared commit. Nothing declared changed and nothing
    /// else either: no commit at all (never an empty one).
    #[tracing::instrument(level = "info", skip(self, declared, message, trailers), fields(session = %session))]
    pub fn commit_declared(
        &self,
        session: SessionId,
        declared: &[String],
        message: &str,
        trailers: &[(&str, &str)],
    ) -> Result<DeclaredCommit> {
        let full_message = compose_message(message, trailers)?;
        let wrepo = self.open_session(session)?;
        if wrepo.head_detached().git(|| "reading HEAD".into())? {
            return Err(Error::ReadOnly { session });
        }
        self.ensure_unlocked_index(&wrepo)?;
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .renames_head_to_index(false)
            .renames_index_to_workdir(false);
        let statuses = wrepo
            .statuses(Some(&mut opts))
            .git(|| "reading the worktree status".into())?;
        // A path that is not UTF-8 cannot be matched against the declaration; refusing is
        // better than guessing (the worktree is kept as it is).
        let mut changed: Vec<String> = statuses
            .iter()
            .filter(|e| e.status() != git2::Status::CURRENT && !e.status().is_ignored())
            .map(|e| e.path().map(str::to_owned))
            .collect::<std::result::Result<_, _>>()
            .git(|| "reading a changed path (not UTF-8?)".into())?;
        changed.sort();
        changed.dedup();
        drop(statuses);
        let (ours, undeclared): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|p| declared.iter().any(|d| is_declared(d, p)));
        let parent = wrepo.head().and_then(|h| h.peel_to_commit()).ok();
        let mut index = wrepo.index().git(|| "opening the worktree index".into())?;
        // Start from the branch's tree: whatever the agent staged on its own does not
        // decide what is delivered; the declaration does.
        match &parent {
            Some(p) => {
                let tree = p.tree().git(|| "reading HEAD's tree".into())?;
                index
                    .read_tree(&tree)
                    .git(|| "resetting the index to HEAD".into())?;
            }
            None => index.clear().git(|| "clearing the index".into())?,
        }
        let workdir = wrepo
            .workdir()
            .map(std::path::Path::to_path_buf)
            .ok_or(Error::ReadOnly { session })?;
        for p in &ours {
            let path = std::path::Path::new(p);
            if workdir.join(path).symlink_metadata().is_ok() {
                index.add_path(path).git(|| format!("staging `{p}`"))?;
            } else {
                index
                    .remove_path(path)
                    .git(|| format!("staging the deletion of `{p}`"))?;
            }
        }
        index.write().git(|| "writing the worktree index".into())?;
        let tree_id = index.write_tree().git(|| "writing the tree".into())?;
        let sig = self.signature(&wrepo)?;
        let mut commit = None;
        let mut head = parent;
        if head.as_ref().is_none_or(|p| p.tree_id() != tree_id) {
            let tree = wrepo
                .find_tree(tree_id)
                .git(|| format!("reading tree {tree_id}"))?;
            let parents: Vec<&git2::Commit<'_>> = head.iter().collect();
            let oid = wrepo
                .commit(Some("HEAD"), &sig, &sig, &full_message, &tree, &parents)
                .git(|| "committing".into())?;
            tracing::info!(%oid, files = ours.len(), "committed the declared files");
            commit = Some(oid);
            head = Some(
                wrepo
                    .find_commit(oid)
                    .git(|| format!("reading commit {oid}"))?,
            );
        }
        let kept = undeclared_branch_name(session);
        let mut kept_on = None;
        if !undeclared.is_empty() {
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
                .git(|| "staging the undeclared files".into())?;
            index
                .update_all(["*"], None)
                .git(|| "staging undeclared deletions".into())?;
            let all_id = index.write_tree().git(|| "writing the tree".into())?;
            let all = wrepo
                .find_tree(all_id)
                .git(|| format!("reading tree {all_id}"))?;
            let mut listing = String::new();
            for p in &undeclared {
                listing.push_str(&format!("- {p}\n"));
            }
            let keep_message = compose_message(
                &format!(
                    "worktrain: changes not declared by session {session}\n\nThe handoff did not list these files, so they are not part of the\ndelivered commit. They are kept here:\n\n{listing}"
                ),
                trailers,
            )?;
            let parents: Vec<&git2::Commit<'_>> = head.iter().collect();
            let oid = wrepo
                .commit(None, &sig, &sig, &keep_message, &all, &parents)
                .git(|| "committing the undeclared files".into())?;
            let keep_commit = wrepo
                .find_commit(oid)
                .git(|| format!("reading commit {oid}"))?;
            wrepo
                .branch(&kept, &keep_commit, true)
                .git(|| format!("creating the branch `{kept}`"))?;
            tracing::warn!(%oid, branch = %kept, files = undeclared.len(), "undeclared changes kept off the delivered commit");
            kept_on = Some(kept);
            // Back to the declared commit: the worktree is clean, so nothing undeclared
            // is committed onto the session branch when it is removed.
            match &head {
                Some(h) => {
                    let tree = h.tree().git(|| "reading HEAD's tree".into())?;
                    index
                        .read_tree(&tree)
                        .git(|| "resetting the index to HEAD".into())?;
                }
                None => index.clear().git(|| "clearing the index".into())?,
            }
            index.write().git(|| "writing the worktree index".into())?;
            let mut co = git2::build::CheckoutBuilder::new();
            co.force().remove_untracked(true);
            wrepo
                .checkout_head(Some(&mut co))
                .git(|| "restoring the worktree to the delivered commit".into())?;
        } else if wrepo.find_branch(&kept, git2::BranchType::Local).is_ok() {
            // A retry after a crash between keeping them and recording the stage.
            kept_on = Some(kept);
        }
        Ok(DeclaredCommit {
            commit,
            committed: ours,
            undeclared,
            kept_on,
        })
    }

    /// Push the session branch `worktrain/<session>` to `refs/heads/<branch>` on
    /// `remote` (fast-forward only; a rejection is [`Error::PushRejected`]). Pushing the
    /// same commit again is a no-op success, so a retried delivery stage is safe.
    #[tracing::instrument(level = "info", skip(self), fields(session = %session))]
    pub fn push(&self, session: SessionId, remote: &str, branch: &str) -> Result<Pushed> {
        let branch = short_branch(branch)?;
        let repo = self.open_main()?;
        let local = branch_ref(session);
        let oid = match repo.refname_to_id(&local) {
            Ok(oid) => oid,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Err(Error::ReadOnly { session });
            }
            Err(e) => return Err(e).git(|| format!("reading `{local}`")),
        };
        let refname = format!("refs/heads/{branch}");
        let spec = format!("{local}:{refname}");
        let mut remote_handle = repo
            .find_remote(remote)
            .git(|| format!("looking up remote `{remote}`"))?;
        let mut rejected: Option<(String, String)> = None;
        {
            let mut callbacks = RemoteCallbacks::new();
            callbacks.push_update_reference(|name, status| {
                if let Some(message) = status {
                    rejected = Some((name.to_owned(), message.to_owned()));
                }
                Ok(())
            });
            let mut opts = PushOptions::new();
            opts.remote_callbacks(callbacks);
            remote_handle
                .push(&[spec.as_str()], Some(&mut opts))
                .map_err(|e| match e.code() {
                    git2::ErrorCode::NotFastForward => Error::PushRejected {
                        remote: remote.to_owned(),
                        refname: refname.clone(),
                        message: e.message().to_owned(),
                    },
                    _ => Error::Git {
                        context: format!("pushing `{spec}` to `{remote}`"),
                        source: e,
                    },
                })?;
        }
        if let Some((name, message)) = rejected {
            return Err(Error::PushRejected {
                remote: remote.to_owned(),
                refname: name,
                message,
            });
        }
        tracing::info!(remote, %refname, %oid, "pushed");
        Ok(Pushed {
            remote: remote.to_owned(),
            refname,
            oid,
        })
    }

    /// How many files `commit` changed relative to its first parent (all of its files
    /// for a root commit).
    pub fn files_changed(&self, commit: Oid) -> Result<u32> {
        let repo = self.open_main()?;
        let c = repo
            .find_commit(commit)
            .git(|| format!("reading commit {commit}"))?;
        let tree = c.tree().git(|| format!("reading the tree of {commit}"))?;
        let parent = c.parent(0).ok().and_then(|p| p.tree().ok());
        let diff = repo
            .diff_tree_to_tree(parent.as_ref(), Some(&tree), None)
            .git(|| format!("diffing {commit} against its parent"))?;
        Ok(u32::try_from(diff.deltas().len()).unwrap_or(u32::MAX))
    }

    /// Whether the session's worktree has uncommitted changes (tracked or untracked, not
    /// ignored). A status scan: call it explicitly, not on every event.
    pub fn is_dirty(&self, session: SessionId) -> Result<bool> {
        let wrepo = self.open_session(session)?;
        is_dirty(&wrepo)
    }
}

/// `message`, a blank line, then one `Key: value` line per trailer. Keys are
/// `[A-Za-z0-9-]+`; values are one line.
pub fn compose_message(message: &str, trailers: &[(&str, &str)]) -> Result<String> {
    let body = message.trim_end();
    if body.trim().is_empty() {
        return Err(Error::Invalid {
            what: "commit message",
            value: String::new(),
            reason: "must not be empty",
        });
    }
    let mut out = format!("{body}\n");
    if !trailers.is_empty() {
        out.push('\n');
        for (key, value) in trailers {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(Error::Invalid {
                    what: "trailer key",
                    value: (*key).to_owned(),
                    reason: "must be letters, digits and `-`",
                });
            }
            if value.contains(['\n', '\r']) {
                return Err(Error::Invalid {
                    what: "trailer value",
                    value: (*value).to_owned(),
                    reason: "must be a single line",
                });
            }
            out.push_str(&format!("{key}: {}\n", value.trim()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::compose_message;

    #[test]
    fn trailers_are_appended_after_a_blank_line() {
        let m = compose_message(
            "Fix it\n\nBody.\n\n",
            &[
                ("Worktrain-Session", "ses_x"),
                ("Co-authored-by", "a <b@c>"),
            ],
        )
        .unwrap();
        assert_eq!(
            m,
            "Fix it\n\nBody.\n\nWorktrain-Session: ses_x\nCo-authored-by: a <b@c>\n"
        );
        assert_eq!(compose_message("x", &[]).unwrap(), "x\n");
        assert!(compose_message("  \n", &[]).is_err());
        assert!(compose_message("x", &[("Bad Key", "v")]).is_err());
        assert!(compose_message("x", &[("K", "a\nb")]).is_err());
    }
}
