//! Workspaces given as a clone URL (`workspace: {clone: …}` in triggers.yml): cloned once
//! under `$WORKTRAIN_HOME/repos/<name>`, then reused; the supervisor fetches `origin`
//! before each session's worktree, so the clone is kept current.
//!
//! libgit2 is built without TLS here (see decision 0008): local paths and `file://` URLs
//! clone; `https://`/`ssh://` need the `https`/`ssh` features of `git2`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A directory name for `url`: its last path segment (without `.git`) plus a short hash
/// of the whole URL, so two repositories named `app` do not collide.
pub fn clone_dir_name(url: &str) -> String {
    use std::hash::{Hash, Hasher};
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let last: String = trimmed
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    format!(
        "{}-{:08x}",
        if last.is_empty() { "repo" } else { &last },
        h.finish() as u32
    )
}

/// Clone `url` into `repos_dir/<name>` unless it is there already; returns the path.
pub fn ensure_clone(url: &str, repos_dir: &Path) -> Result<PathBuf> {
    let dest = repos_dir.join(clone_dir_name(url));
    if dest.join(".git").exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(repos_dir).map_err(|source| Error::Io {
        context: "creating the clones directory",
        path: repos_dir.to_path_buf(),
        source,
    })?;
    // Clone next to the destination and rename, so a crash never leaves a half clone
    // that looks complete.
    let tmp = repos_dir.join(format!(".partial-{}", clone_dir_name(url)));
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    git2::build::RepoBuilder::new()
        .clone(url, &tmp)
        .map_err(|source| Error::Git {
            context: format!("cloning {url}"),
            source,
        })?;
    std::fs::rename(&tmp, &dest).map_err(|source| Error::Io {
        context: "moving the finished clone into place",
        path: dest.clone(),
        source,
    })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_distinct() {
        let a = clone_dir_name("https://github.com/octo/app.git");
        let b = clone_dir_name("https://gitlab.com/octo/app");
        assert!(a.starts_with("app-"), "{a}");
        assert!(b.starts_with("app-"), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn clones_a_local_repository_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let repo = git2::Repository::init(&src).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        std::fs::write(src.join("f"), "x").unwrap();
        let mut idx = repo.index().unwrap();
        idx.add_path(Path::new("f")).unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        let repos = dir.path().join("repos");
        let url = src.display().to_string();
        let first = ensure_clone(&url, &repos).unwrap();
        assert!(first.join("f").exists());
        let again = ensure_clone(&url, &repos).unwrap();
        assert_eq!(first, again);
    }
}
