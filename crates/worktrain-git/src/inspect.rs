//! Cheap, read-only questions about a workspace repository, asked before a session
//! starts: which branch is checked out, whether a remote or a local branch exists.
//! Every function opens exactly the given path (no parent search, no `$GIT_DIR`) and
//! answers `None`/`false` for a directory that is not a repository.

use std::path::Path;

use crate::worktrees::open_repo;

/// The branch checked out in the working tree at `path` (a main checkout or a linked
/// worktree); `None` when HEAD is detached or `path` is not a repository.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let repo = git2::Repository::init(dir.path())?;
/// repo.set_head("refs/heads/trunk")?;
/// assert_eq!(worktrain_git::current_branch(dir.path()).as_deref(), Some("trunk"));
/// assert_eq!(worktrain_git::current_branch(&dir.path().join("nope")), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn current_branch(path: &Path) -> Option<String> {
    let repo = open_repo(path).ok()?;
    // An unborn branch (a fresh repository) has no commit yet but still names a branch.
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok().flatten()?;
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

/// Whether the repository at `path` has a remote called `name`.
pub fn remote_exists(path: &Path, name: &str) -> bool {
    open_repo(path)
        .ok()
        .is_some_and(|r| r.find_remote(name).is_ok())
}

/// Whether the repository at `path` has a local branch `name` that points at a commit.
pub fn local_branch_exists(path: &Path, name: &str) -> bool {
    open_repo(path).ok().is_some_and(|r| {
        r.refname_to_id(&format!("refs/heads/{name}"))
            .ok()
            .and_then(|oid| r.find_commit(oid).ok())
            .is_some()
    })
}

/// Whether `path` is the top of a git working tree (a main checkout or a linked
/// worktree) — not a bare repository, not a `.git` directory, not a subdirectory.
pub fn is_work_tree(path: &Path) -> bool {
    open_repo(path).ok().is_some_and(|r| {
        !r.is_bare()
            && r.workdir()
                .is_some_and(|w| std::fs::canonicalize(w).ok() == std::fs::canonicalize(path).ok())
    })
}
