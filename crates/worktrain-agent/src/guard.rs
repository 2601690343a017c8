//! File-tool confinement: every path the model names goes through a [`PathGuard`].
//!
//! [`WorktreeGuard`] is the default. The daemon may swap in another implementation (e.g.
//! `worktrain-git`'s confinement) through `RunContext::with_guard`.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The path contains `..`.
    ParentComponent,
    /// An absolute path outside the worktree.
    OutsideWorktree,
    /// A symlink resolves outside the worktree (or dangles).
    SymlinkEscape,
    /// A write inside `.git`.
    GitDir,
    /// Not a usable path (empty for a write, the worktree itself, unreadable root).
    Invalid,
}

impl DenyReason {
    /// What to tell the model.
    pub fn explain(self) -> &'static str {
        match self {
            DenyReason::ParentComponent => "paths may not contain `..`",
            DenyReason::OutsideWorktree => "the path is outside the worktree",
            DenyReason::SymlinkEscape => {
                "the path resolves through a symlink to outside the worktree"
            }
            DenyReason::GitDir => "writing inside .git is not allowed",
            DenyReason::Invalid => "not a usable path",
        }
    }
}

/// A path the guard refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("access denied: {} ({path})", reason.explain())]
pub struct PathDenied {
    /// The path as given.
    pub path: String,
    /// Why.
    pub reason: DenyReason,
}

impl PathDenied {
    fn new(path: &Path, reason: DenyReason) -> Self {
        Self {
            path: path.display().to_string(),
            reason,
        }
    }
}

/// Resolves paths named by the agent to real paths inside the worktree, or refuses them.
pub trait PathGuard: Send + Sync {
    /// The worktree root (canonical).
    fn root(&self) -> &Path;
    /// A path that may be read (or listed/searched).
    fn resolve_read(&self, p: &Path) -> Result<PathBuf, PathDenied>;
    /// A path that may be written (created, replaced, edited).
    fn resolve_write(&self, p: &Path) -> Result<PathBuf, PathDenied>;
}

/// The default guard: relative paths (or absolute ones inside the root), no `..`,
/// symlinks resolved (the longest existing prefix is canonicalised, dangling symlinks
/// refused), no writes inside `.git`.
///
/// A symlink swapped in between the check and the use is not caught (a time-of-check
/// race); the agent's shell tool is not confined by this guard at all — the worktree is
/// a workspace, not a sandbox.
#[derive(Debug, Clone)]
pub struct WorktreeGuard {
    root: PathBuf,
    given: PathBuf,
}

impl WorktreeGuard {
    /// A guard for `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let given = root.into();
        let root = std::fs::canonicalize(&given)?;
        Ok(Self { root, given })
    }

    fn resolve(&self, p: &Path) -> Result<PathBuf, PathDenied> {
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(PathDenied::new(p, DenyReason::ParentComponent));
        }
        let rel: PathBuf = if p.is_absolute() {
            match p
                .strip_prefix(&self.root)
                .or_else(|_| p.strip_prefix(&self.given))
            {
                Ok(r) => r.to_path_buf(),
                Err(_) => return Err(PathDenied::new(p, DenyReason::OutsideWorktree)),
            }
        } else {
            p.to_path_buf()
        };
        let rel: PathBuf = rel
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let real = canonicalize_existing_prefix(&self.root.join(&rel))
            .map_err(|reason| PathDenied::new(p, reason))?;
        if !real.starts_with(&self.root) {
            return Err(PathDenied::new(p, DenyReason::SymlinkEscape));
        }
        Ok(real)
    }
}

/// Canonicalise the longest existing prefix of `path` and append the rest. A prefix
/// that exists as an entry but cannot be canonicalised (a dangling symlink) is refused.
fn canonicalize_existing_prefix(path: &Path) -> Result<PathBuf, DenyReason> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut real) => {
                for part in rest.iter().rev() {
                    real.push(part);
                }
                return Ok(real);
            }
            Err(_) => {
                if std::fs::symlink_metadata(&existing).is_ok() {
                    return Err(DenyReason::SymlinkEscape);
                }
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(DenyReason::Invalid);
                };
                rest.push(name);
                if !existing.pop() {
                    return Err(DenyReason::Invalid);
                }
            }
        }
    }
}

impl PathGuard for WorktreeGuard {
    fn root(&self) -> &Path {
        &self.root
    }

    fn resolve_read(&self, p: &Path) -> Result<PathBuf, PathDenied> {
        self.resolve(p)
    }

    fn resolve_write(&self, p: &Path) -> Result<PathBuf, PathDenied> {
        let real = self.resolve(p)?;
        let rel = real
            .strip_prefix(&self.root)
            .map_err(|_| PathDenied::new(p, DenyReason::OutsideWorktree))?;
        match rel.components().next() {
            None => Err(PathDenied::new(p, DenyReason::Invalid)),
            Some(Component::Normal(first))
                if first.to_string_lossy().eq_ignore_ascii_case(".git") =>
            {
                Err(PathDenied::new(p, DenyReason::GitDir))
            }
            Some(_) => Ok(real),
        }
    }
}
