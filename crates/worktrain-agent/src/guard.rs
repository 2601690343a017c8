//! File-tool confinement: every path the model names goes through a [`PathGuard`].
//!
//! [`WorktreeGuard`] is the one implementation worktrain uses: the rules of
//! [`crate::confine::Confined`] (lexical `..` never above the root, absolute paths only
//! inside it, symlinks resolved and never leading out or dangling, nothing in `.git` — not
//! even reads), and files opened by the kernel *beneath* the worktree (`openat2` with
//! `RESOLVE_BENEATH`), so a symlink swapped in between the check and the open still cannot
//! lead outside.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::confine::{Confined, Escape};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `..` leads above the worktree root.
    ParentComponent,
    /// An absolute path outside the worktree.
    OutsideWorktree,
    /// A symlink resolves outside the worktree (or dangles).
    SymlinkEscape,
    /// The path is, or is inside, `.git`.
    GitDir,
    /// Not a usable path (empty for a write, the worktree itself, a NUL byte, unreadable).
    Invalid,
}

impl DenyReason {
    /// What to tell the model.
    pub fn explain(self) -> &'static str {
        match self {
            DenyReason::ParentComponent => "the path leads above the worktree through `..`",
            DenyReason::OutsideWorktree => "the path is outside the worktree",
            DenyReason::SymlinkEscape => {
                "the path resolves through a symlink to outside the worktree (or a dangling one)"
            }
            DenyReason::GitDir => "paths inside .git are not available to file tools",
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
    /// Why access is denied (outside the worktree, a symlink leading out, inside `.git`, …).
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

impl From<&Escape> for DenyReason {
    fn from(e: &Escape) -> Self {
        match e {
            Escape::DotDot { .. } => DenyReason::ParentComponent,
            Escape::Outside { .. } => DenyReason::OutsideWorktree,
            Escape::Symlink { .. } | Escape::DanglingSymlink { .. } => DenyReason::SymlinkEscape,
            Escape::GitDir { .. } => DenyReason::GitDir,
            Escape::Invalid { .. } | Escape::Io { .. } => DenyReason::Invalid,
        }
    }
}

/// Resolves paths named by the agent to real paths inside the worktree, or refuses them,
/// and opens them.
pub trait PathGuard: Send + Sync {
    /// The worktree root (canonical).
    fn root(&self) -> &Path;
    /// A path that may be read (or listed/searched).
    fn resolve_read(&self, p: &Path) -> Result<PathBuf, PathDenied>;
    /// A path that may be written (created, replaced, edited).
    fn resolve_write(&self, p: &Path) -> Result<PathBuf, PathDenied>;
    /// Open a resolved path for reading.
    fn open_read(&self, resolved: &Path) -> std::io::Result<File> {
        File::open(resolved)
    }
    /// Open (create or truncate) a resolved path for writing.
    fn open_write(&self, resolved: &Path) -> std::io::Result<File> {
        File::create(resolved)
    }
}

/// The guard: [`Confined`]'s rules, and opens resolved by the kernel beneath the root.
#[derive(Debug, Clone)]
pub struct WorktreeGuard {
    confined: Confined,
}

impl WorktreeGuard {
    /// A guard for `root`, which must exist.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let confined = Confined::new(root).map_err(std::io::Error::other)?;
        Ok(Self { confined })
    }
}

impl PathGuard for WorktreeGuard {
    fn root(&self) -> &Path {
        self.confined.root()
    }

    fn resolve_read(&self, p: &Path) -> Result<PathBuf, PathDenied> {
        self.confined
            .resolve(p)
            .map_err(|e| PathDenied::new(p, DenyReason::from(&e)))
    }

    fn resolve_write(&self, p: &Path) -> Result<PathBuf, PathDenied> {
        let real = self.resolve_read(p)?;
        if real == self.confined.root() {
            return Err(PathDenied::new(p, DenyReason::Invalid));
        }
        Ok(real)
    }

    fn open_read(&self, resolved: &Path) -> std::io::Result<File> {
        self.confined.open_read(resolved)
    }

    fn open_write(&self, resolved: &Path) -> std::io::Result<File> {
        self.confined.open_write(resolved)
    }
}
