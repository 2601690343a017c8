//! Stale `index.lock` handling.
//!
//! git creates `<gitdir>/index.lock` while it rewrites the index and renames it over
//! `index` when done. A process killed in between leaves the lock behind and every later
//! git operation on that worktree fails ("Unable to create … index.lock: File exists").
//!
//! **Policy.** A lock is removed only when *both* hold:
//! 1. it is at least `stale_after` old (by its mtime), and
//! 2. no live process is seen holding it: on Linux, no process has the lock file open
//!    (`/proc/<pid>/fd/*`) and no process named `git` has its working directory inside
//!    the worktree or its git directory (git closes the lock's descriptor while it runs
//!    hooks, but stays alive). Where `/proc` is not available, only the age is checked.
//!
//! A lock that is young or held is reported as [`IndexLockState::Held`] /
//! [`IndexLockState::Fresh`] and left alone; operations then fail with
//! [`crate::Error::IndexLocked`], which is retryable. Processes in other PID namespaces
//! (an agent's container) are invisible here, which is why the age threshold stays.
//! Just before removal the lock's inode and mtime are checked again, so a lock recreated
//! meanwhile by a new git process is not deleted.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, IoResultExt, Result};

/// Default age after which an unheld `index.lock` counts as stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(120);

/// What was found at a git directory's `index.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLockState {
    /// There is no lock.
    Absent,
    /// There was a stale lock; it has been removed.
    Removed {
        /// How old it was.
        age: Duration,
    },
    /// The lock is younger than the threshold and no holder was seen.
    Fresh {
        /// How old it is.
        age: Duration,
    },
    /// Live processes hold the lock.
    Held {
        /// How old it is.
        age: Duration,
        /// The processes seen holding it.
        pids: Vec<u32>,
    },
}

/// Inspect `<gitdir>/index.lock` and remove it if it is stale (see the module docs).
/// `workdir` is the worktree whose git directory this is, used to find live `git`
/// processes working in it.
pub fn clear_stale_index_lock(
    gitdir: &Path,
    workdir: Option<&Path>,
    stale_after: Duration,
    now: SystemTime,
) -> Result<IndexLockState> {
    let lock = gitdir.join("index.lock");
    let meta = match fs::symlink_metadata(&lock) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexLockState::Absent),
        Err(e) => return Err(e).io("inspecting lock file", &lock),
    };
    let mtime = meta.modified().io("reading mtime of", &lock)?;
    let age = now.duration_since(mtime).unwrap_or(Duration::ZERO);
    let pids = holders(&lock, gitdir, workdir);
    if !pids.is_empty() {
        tracing::debug!(lock = %lock.display(), ?pids, "index.lock is held by live processes");
        return Ok(IndexLockState::Held { age, pids });
    }
    if age < stale_after {
        return Ok(IndexLockState::Fresh { age });
    }
    // Re-check identity right before removing: a new git process may have replaced it.
    match fs::symlink_metadata(&lock) {
        Ok(again) if same_file(&meta, &again) => {}
        Ok(_) => {
            return Ok(IndexLockState::Fresh {
                age: Duration::ZERO,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexLockState::Absent),
        Err(e) => return Err(e).io("inspecting lock file", &lock),
    }
    match fs::remove_file(&lock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexLockState::Absent),
        Err(e) => return Err(e).io("removing stale lock file", &lock),
    }
    tracing::warn!(
        lock = %lock.display(),
        age_secs = age.as_secs(),
        "removed stale index.lock left by a dead process"
    );
    Ok(IndexLockState::Removed { age })
}

/// Like [`clear_stale_index_lock`], but a lock that stays is an [`Error::IndexLocked`].
pub(crate) fn ensure_index_unlocked(
    gitdir: &Path,
    workdir: Option<&Path>,
    stale_after: Duration,
) -> Result<()> {
    match clear_stale_index_lock(gitdir, workdir, stale_after, SystemTime::now())? {
        IndexLockState::Absent | IndexLockState::Removed { .. } => Ok(()),
        IndexLockState::Fresh { age } => Err(Error::IndexLocked {
            path: gitdir.join("index.lock"),
            age,
            holders: Vec::new(),
        }),
        IndexLockState::Held { age, pids } => Err(Error::IndexLocked {
            path: gitdir.join("index.lock"),
            age,
            holders: pids,
        }),
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.ino() == b.ino() && a.dev() == b.dev() && a.mtime() == b.mtime()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.modified().ok() == b.modified().ok() && a.len() == b.len()
}

/// Processes that hold the lock: those with it open, and `git` processes working in the
/// worktree or git directory. Empty when none is seen or `/proc` is unavailable.
fn holders(lock: &Path, gitdir: &Path, workdir: Option<&Path>) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    // The kernel reports canonical paths.
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let lock = canon(lock);
    let gitdir = canon(gitdir);
    let workdir: Option<PathBuf> = workdir.map(canon);
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        if has_open(&proc_dir, &lock) || is_git_in(&proc_dir, &gitdir, workdir.as_deref()) {
            pids.push(pid);
        }
    }
    pids
}

fn has_open(proc_dir: &Path, lock: &Path) -> bool {
    let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == lock))
}

fn is_git_in(proc_dir: &Path, gitdir: &Path, workdir: Option<&Path>) -> bool {
    let is_git = fs::read_to_string(proc_dir.join("comm")).is_ok_and(|c| c.trim() == "git");
    if !is_git {
        return false;
    }
    let Ok(cwd) = fs::read_link(proc_dir.join("cwd")) else {
        return false;
    };
    cwd.starts_with(gitdir) || workdir.is_some_and(|w| cwd.starts_with(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn absent_fresh_stale() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        let now = SystemTime::now();
        assert_eq!(
            clear_stale_index_lock(g, None, DEFAULT_STALE_AFTER, now).unwrap(),
            IndexLockState::Absent
        );
        File::create(g.join("index.lock")).unwrap();
        assert!(matches!(
            clear_stale_index_lock(g, None, DEFAULT_STALE_AFTER, now).unwrap(),
            IndexLockState::Fresh { .. }
        ));
        assert!(g.join("index.lock").exists());
        // Judged from the future: old enough, and nobody holds it.
        let later = now + Duration::from_secs(600);
        assert!(matches!(
            clear_stale_index_lock(g, None, DEFAULT_STALE_AFTER, later).unwrap(),
            IndexLockState::Removed { .. }
        ));
        assert!(!g.join("index.lock").exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_held_open_by_a_live_process_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        let _held = File::create(g.join("index.lock")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(600);
        match clear_stale_index_lock(g, None, DEFAULT_STALE_AFTER, later).unwrap() {
            IndexLockState::Held { pids, .. } => assert!(pids.contains(&std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(g.join("index.lock").exists());
    }
}
