//! Fixtures: real repositories in a temp dir — a bare "remote" seeded with commits
//! written by git2, a clone of it as the workspace, and a worktrain home.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{Oid, Repository, Signature, build::TreeUpdateBuilder};
use tempfile::TempDir;
use worktrain_core::ids::SessionId;
use worktrain_git::{Identity, Worktrees, WorktreesConfig};

pub(crate) struct Fixture {
    pub tmp: TempDir,
    pub remote: PathBuf,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub wts: Worktrees,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh, unique session id.
pub(crate) fn session() -> SessionId {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    SessionId::from_parts(1_700_000_000_000 + n, u128::from(n) * 7919)
}

pub(crate) fn sig() -> Signature<'static> {
    Signature::now("Test", "test@example.com").unwrap()
}

/// Commit `files` (path, content; `None` deletes) on top of `parent` in `repo` and move
/// `refname` there.
pub(crate) fn commit_files(
    repo: &Repository,
    refname: &str,
    files: &[(&str, Option<&str>)],
    message: &str,
) -> Oid {
    let parent = repo
        .refname_to_id(refname)
        .ok()
        .map(|o| repo.find_commit(o).unwrap());
    let base_tree = match &parent {
        Some(p) => p.tree().unwrap(),
        None => {
            let empty = repo.treebuilder(None).unwrap().write().unwrap();
            repo.find_tree(empty).unwrap()
        }
    };
    let mut update = TreeUpdateBuilder::new();
    for (path, content) in files {
        match content {
            Some(c) => {
                let blob = repo.blob(c.as_bytes()).unwrap();
                update.upsert(*path, blob, git2::FileMode::Blob);
            }
            None => {
                update.remove(*path);
            }
        }
    }
    let tree_id = update.create_updated(repo, &base_tree).unwrap();
    let tree = repo.find_tree(tree_id).unwrap();
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some(refname), &sig(), &sig(), message, &tree, &parents)
        .unwrap()
}

impl Fixture {
    /// Remote with `main` (README.md, src/lib.rs, .gitignore) and `refs/pull/7/head`;
    /// the workspace is a clone; remote `origin`.
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let bare = Repository::init_bare(&remote).unwrap();
        bare.set_head("refs/heads/main").unwrap();
        commit_files(
            &bare,
            "refs/heads/main",
            &[
                ("README.md", Some("# demo\n")),
                ("src/lib.rs", Some("pub fn one() -> u32 {\n    1\n}\n")),
                (".gitignore", Some("target/\n*.log\n")),
            ],
            "initial",
        );
        let main = bare.refname_to_id("refs/heads/main").unwrap();
        bare.reference("refs/pull/7/head", main, true, "pr")
            .unwrap();
        commit_files(
            &bare,
            "refs/pull/7/head",
            &[("src/pr.rs", Some("// the PR\n"))],
            "pr change",
        );
        let repo = tmp.path().join("workspace");
        Repository::clone(remote.to_str().unwrap(), &repo).unwrap();
        let home = tmp.path().join("home");
        let wts = Worktrees::new(Self::config(&repo, &home)).unwrap();
        Fixture {
            tmp,
            remote,
            repo,
            home,
            wts,
        }
    }

    pub(crate) fn config(repo: &Path, home: &Path) -> WorktreesConfig {
        let mut config = WorktreesConfig::new(repo, home);
        config.identity = Some(Identity {
            name: "Agent".into(),
            email: "agent@example.com".into(),
        });
        config
    }

    pub(crate) fn bare(&self) -> Repository {
        Repository::open_bare(&self.remote).unwrap()
    }

    pub(crate) fn workspace(&self) -> Repository {
        Repository::open(&self.repo).unwrap()
    }

    /// Add a commit to the remote's `main` (upstream moved on).
    pub(crate) fn advance_remote_main(&self, files: &[(&str, Option<&str>)]) -> Oid {
        commit_files(&self.bare(), "refs/heads/main", files, "upstream change")
    }
}

/// Run the git CLI (for cross-checks only); `None` when git is not installed.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
