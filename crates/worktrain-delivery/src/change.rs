//! Deliver one file change for review: commit it on a branch of the repository that
//! holds the file (the operator's checkout untouched), push the branch, open a pull or
//! merge request. This is how an improved workflow reaches review
//! (`worktrain proposals apply`): the same push (the user's git setup, never forced)
//! and the same forge client (an open request for the branch is reused, never
//! duplicated) as a session's delivery, so running it again after any failure is safe.

use std::path::PathBuf;

use worktrain_core::run::ForgeKind;
use worktrain_forge::PullSpec;

use crate::{ForgeAccess, StageError, git, parse_remote};

/// What to deliver.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// The file to change (absolute, or relative to the current directory).
    pub file: PathBuf,
    /// Its new content.
    pub content: String,
    /// The branch to put the commit on (same name on the remote).
    pub branch: String,
    /// The branch the request goes into (and the commit's parent when `branch` does not
    /// exist yet).
    pub base: String,
    /// The remote to push to.
    pub remote: String,
    /// The forge repository (default: from the remote's URL).
    pub repo: Option<(ForgeKind, String)>,
    /// Message of the commit that carries the session's work (subject, blank line, body).
    pub message: String,
    /// Title of the pull/merge request.
    pub title: String,
    /// Request body (markdown).
    pub body: String,
    /// Open as a draft.
    pub draft: bool,
    /// Labels to add.
    pub labels: Vec<String>,
}

/// Where the change went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeReceipt {
    /// The branch, on the repository and the remote.
    pub branch: String,
    /// The commit at its tip.
    pub commit: String,
    /// The pull/merge request's web page.
    pub url: String,
    /// Its number (GitHub) or iid (GitLab).
    pub number: u64,
    /// True when an open request for the branch existed and was reused.
    pub reused: bool,
}

/// The forge kind and repository a change goes to, when the caller did not say: from
/// the URL of `remote` in the repository holding `file`.
pub async fn forge_of(file: &std::path::Path, remote: &str) -> Option<(ForgeKind, String)> {
    let loc = worktrain_git::change::locate(file)?;
    parse_remote(&git::remote_url(&loc.root, remote).await?)
}

/// Commit, push and propose `req` with `access` (its token pushes over HTTPS when the
/// remote is the forge repository's own HTTPS URL; otherwise the user's git setup is
/// used).
pub async fn deliver_change(
    req: &ChangeRequest,
    access: &ForgeAccess,
) -> Result<ChangeReceipt, StageError> {
    let loc = worktrain_git::change::locate(&req.file).ok_or_else(|| {
        StageError::fatal(
            format!("{} is not inside a git repository", req.file.display()),
            "keep the workflow in a repository with a forge remote, or write it locally (--write)",
        )
    })?;
    let Some(url) = git::remote_url(&loc.root, &req.remote).await else {
        return Err(StageError::fatal(
            format!(
                "the repository {} has no remote `{}`",
                loc.root.display(),
                req.remote
            ),
            "add the remote (`git remote add`) or name another one (--remote)",
        ));
    };
    let (kind, repo) = match &req.repo {
        Some(r) => r.clone(),
        None => parse_remote(&url).ok_or_else(|| {
            StageError::fatal(
                format!(
                    "cannot tell which GitHub/GitLab repository `{}` ({url}) is",
                    req.remote
                ),
                "name it: --repo github:owner/repo (or gitlab:group/project)",
            )
        })?,
    };
    if access.client.kind() != kind {
        return Err(StageError::fatal(
            format!(
                "the identity is a {} identity, the repository is on {}",
                access.client.kind().as_str(),
                kind.as_str()
            ),
            "name an identity of that forge (--identity)",
        ));
    }
    let base = req.base.clone();
    let (root, path, content) = (loc.root.clone(), loc.path.clone(), req.content.clone());
    let (branch, message, base_rev) = (req.branch.clone(), req.message.clone(), base.clone());
    let committed = tokio::task::spawn_blocking(move || {
        worktrain_git::change::commit_file(
            &root,
            &base_rev,
            &branch,
            &path,
            content.as_bytes(),
            &message,
        )
    })
    .await
    .map_err(|e| StageError::fatal(format!("committing: {e}"), "try again"))?
    .map_err(|e| {
        StageError::fatal(
            format!("committing {}: {e}", loc.path),
            "check the repository (`git status`, `git fsck`)",
        )
    })?;
    let token = if url.starts_with("https://") && parse_remote(&url) == Some((kind, repo.clone())) {
        crate::push_token(access).await?
    } else {
        None
    };
    git::push(&loc.root, &req.remote, &req.branch, token.as_deref())
        .await
        .map_err(|f| StageError::from_push(&req.remote, &f))?;
    let spec = PullSpec {
        repo,
        head: req.branch.clone(),
        base,
        title: req.title.clone(),
        body: req.body.clone(),
        draft: req.draft,
        labels: req.labels.clone(),
        reviewers: Vec::new(),
        assignees: Vec::new(),
    };
    let pr = access
        .client
        .open_pull(&spec)
        .await
        .map_err(|e| StageError::from_forge("opening the pull request", &e))?;
    tracing::info!(branch = %req.branch, url = %pr.url, reused = pr.reused, "change proposed");
    Ok(ChangeReceipt {
        branch: req.branch.clone(),
        commit: committed.oid.to_string(),
        url: pr.url,
        number: pr.number,
        reused: pr.reused,
    })
}
