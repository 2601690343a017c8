//! Commit one file's new content on a branch of the repository that holds it, without
//! touching that repository's working tree, index or checked-out branch — how a
//! reviewed change that worktrain writes (an improved workflow) becomes a branch to
//! push and propose, while the operator's checkout stays exactly as it was.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, RepositoryOpenFlags, Signature};

use crate::error::{Error, GitResultExt, Result};
use crate::names::short_branch;
use crate::worktrees::Identity;

/// The repository that holds `file`, and `file`'s path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInRepo {
    /// The top of the working tree.
    pub root: PathBuf,
    /// The file's path relative to `root`, with `/` separators.
    pub path: String,
}

/// Find the working tree that holds `file` (searching upwards from its directory, as
/// `git` itself does, but ignoring `$GIT_DIR` and friends). `None` when the file is not
/// inside a non-bare repository.
pub fn locate(file: &Path) -> Option<FileInRepo> {
    let file = std::fs::canonicalize(file).ok()?;
    let dir = file.parent()?;
    let repo = Repository::open_ext(
        dir,
        RepositoryOpenFlags::empty(),
        std::iter::empty::<&Path>(),
    )
    .ok()?;
    let root = std::fs::canonicalize(repo.workdir()?).ok()?;
    let rel = file.strip_prefix(&root).ok()?;
    let path = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()?
        .join("/");
    Some(FileInRepo { root, path })
}

/// The content of `path` at revision `rev` of the repository at `root` (`None` when the
/// file does not exist there).
pub fn read_file(root: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let repo = Repository::open(root).git(|| format!("opening {}", root.display()))?;
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| Error::RevNotFound {
            rev: rev.to_owned(),
            fetched: false,
        })?;
    let tree = commit.tree().git(|| format!("reading the tree of {rev}"))?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(None);
    };
    let blob = repo
        .find_blob(entry.id())
        .git(|| format!("reading {path} at {rev}"))?;
    Ok(Some(blob.content().to_vec()))
}

/// The result of [`commit_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommit {
    /// The commit at the tip of the branch.
    pub oid: Oid,
    /// True when the branch already carried exactly this content (nothing was written).
    pub reused: bool,
}

/// Put `content` at `path` in a commit on `refs/heads/<branch>` of the repository at
/// `root`: on top of the branch when it exists (so a push stays a fast-forward), else
/// on top of `base`. Idempotent: when the branch's tip already holds this content at
/// `path`, nothing is written. The working tree, the index and HEAD are not touched.
/// The author is the repository's configured `user.name`/`user.email`, else worktrain.
pub fn commit_file(
    root: &Path,
    base: &str,
    branch: &str,
    path: &str,
    content: &[u8],
    message: &str,
) -> Result<FileCommit> {
    let branch = short_branch(branch)?;
    let repo = Repository::open(root).git(|| format!("opening {}", root.display()))?;
    let refname = format!("refs/heads/{branch}");
    let blob = repo
        .blob(content)
        .git(|| format!("writing the new content of {path}"))?;
    let parent = match repo.refname_to_id(&refname) {
        Ok(tip) => repo.find_commit(tip).git(|| format!("reading {refname}"))?,
        Err(e) if e.code() == git2::ErrorCode::NotFound => repo
            .revparse_single(base)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| Error::RevNotFound {
                rev: base.to_owned(),
                fetched: false,
            })?,
        Err(e) => return Err(e).git(|| format!("reading {refname}")),
    };
    let parent_tree = parent.tree().git(|| "reading the parent tree".into())?;
    if parent_tree
        .get_path(Path::new(path))
        .is_ok_and(|entry| entry.id() == blob)
        && repo.refname_to_id(&refname).is_ok()
    {
        return Ok(FileCommit {
            oid: parent.id(),
            reused: true,
        });
    }
    // An in-memory index seeded from the parent tree: the repository's own index file
    // (the operator's staging area) is never read or written.
    let mut index = git2::Index::new().git(|| "making an index".into())?;
    index
        .read_tree(&parent_tree)
        .git(|| "reading the parent tree".into())?;
    let mode = parent_tree
        .get_path(Path::new(path))
        .map(|e| e.filemode() as u32)
        .unwrap_or(0o100644);
    let entry = git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
        id: blob,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    };
    index
        .add(&entry)
        .git(|| format!("staging {path} in memory"))?;
    let tree_id = index
        .write_tree_to(&repo)
        .git(|| "writing the tree".into())?;
    let tree = repo.find_tree(tree_id).git(|| "reading the tree".into())?;
    let me = Identity::of_repo(&repo);
    let sig = Signature::now(&me.name, &me.email).git(|| "making the signature".into())?;
    let oid = repo
        .commit(None, &sig, &sig, message, &tree, &[&parent])
        .git(|| "committing".into())?;
    repo.reference(&refname, oid, true, "worktrain: proposed change")
        .git(|| format!("updating {refname}"))?;
    tracing::info!(%oid, branch, path, "change committed");
    Ok(FileCommit { oid, reused: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        git(d, &["config", "user.name", "Dev"]);
        git(d, &["config", "user.email", "dev@example.com"]);
        std::fs::create_dir_all(d.join("flows")).unwrap();
        std::fs::write(d.join("flows/a.yaml"), "id: a\n").unwrap();
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "init"]);
        dir
    }

    #[test]
    fn the_branch_gets_the_content_and_the_checkout_is_untouched() {
        let dir = repo();
        let d = dir.path();
        // Uncommitted work of the operator, staged and unstaged.
        std::fs::write(d.join("flows/a.yaml"), "id: a\n# local edit\n").unwrap();
        std::fs::write(d.join("staged.txt"), "s\n").unwrap();
        git(d, &["add", "staged.txt"]);
        let status_before = git(d, &["status", "--porcelain"]);
        let loc = locate(&d.join("flows/a.yaml")).unwrap();
        assert_eq!(loc.path, "flows/a.yaml");
        let c = commit_file(
            &loc.root,
            "main",
            "worktrain/proposal-x",
            &loc.path,
            b"id: a\nnew: 1\n",
            "improve a",
        )
        .unwrap();
        assert!(!c.reused);
        assert_eq!(
            git(d, &["show", "worktrain/proposal-x:flows/a.yaml"]),
            "id: a\nnew: 1\n"
        );
        assert_eq!(
            read_file(d, "worktrain/proposal-x", "flows/a.yaml").unwrap(),
            Some(b"id: a\nnew: 1\n".to_vec())
        );
        assert_eq!(
            read_file(d, "main", "flows/a.yaml").unwrap(),
            Some(b"id: a\n".to_vec())
        );
        assert_eq!(read_file(d, "main", "flows/none.yaml").unwrap(), None);
        assert_eq!(
            git(d, &["log", "-1", "--format=%an %s", "worktrain/proposal-x"]).trim(),
            "Dev improve a"
        );
        assert_eq!(git(d, &["status", "--porcelain"]), status_before);
        assert_eq!(
            git(d, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
            "main"
        );
        // Again: nothing new.
        let again = commit_file(
            &loc.root,
            "main",
            "worktrain/proposal-x",
            &loc.path,
            b"id: a\nnew: 1\n",
            "improve a",
        )
        .unwrap();
        assert_eq!(
            again,
            FileCommit {
                oid: c.oid,
                reused: true
            }
        );
        // New content goes on top of the branch (a fast-forward for the remote).
        let next = commit_file(
            &loc.root,
            "main",
            "worktrain/proposal-x",
            &loc.path,
            b"id: a\nnew: 2\n",
            "improve a",
        )
        .unwrap();
        assert_eq!(
            git(d, &["rev-parse", &format!("{}^", next.oid)]).trim(),
            c.oid.to_string()
        );
    }

    #[test]
    fn a_file_outside_a_repository_or_a_bad_base_is_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        assert_eq!(locate(&dir.path().join("a.yaml")), None);
        let r = repo();
        let e = commit_file(r.path(), "nope", "b", "flows/a.yaml", b"x", "m").unwrap_err();
        assert!(
            e.to_string().contains("`nope` does not name a commit"),
            "{e}"
        );
    }
}
