//! Stale `index.lock` handling before operations.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use worktrain_git::{Error, IndexLockState, clear_stale_index_lock, lockfile::DEFAULT_STALE_AFTER};

use crate::common::{Fixture, session, write};

fn index_lock(fx: &Fixture, s: worktrain_core::ids::SessionId) -> PathBuf {
    fx.repo
        .join(".git/worktrees")
        .join(s.to_string())
        .join("index.lock")
}

fn make_lock(path: &PathBuf, age: Duration) -> File {
    let file = File::create(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    file
}

#[test]
fn a_stale_lock_from_a_dead_process_is_removed_before_committing() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("a.txt"), "a\n");
    let lock = index_lock(&fx, s);
    drop(make_lock(&lock, Duration::from_secs(3600)));

    fx.wts.commit_all(s, "after a crash", &[]).unwrap().unwrap();
    assert!(!lock.exists());
}

#[test]
fn a_fresh_lock_is_left_alone_and_reported_as_retryable() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("a.txt"), "a\n");
    let lock = index_lock(&fx, s);
    drop(make_lock(&lock, Duration::from_secs(1)));

    let err = fx.wts.commit_all(s, "x", &[]).unwrap_err();
    assert!(
        matches!(&err, Error::IndexLocked { holders, .. } if holders.is_empty()),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.code(), "index_locked");
    assert!(lock.exists());
    // Re-attaching the session also refuses while the lock is young.
    assert!(matches!(
        fx.wts.create(s, "main").unwrap_err(),
        Error::IndexLocked { .. }
    ));
    // Once it is old, re-attach clears it.
    File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert!(fx.wts.create(s, "main").unwrap().reattached);
    assert!(!lock.exists());
}

#[cfg(target_os = "linux")]
#[test]
fn an_old_lock_held_open_by_a_live_process_is_kept() {
    let fx = Fixture::new();
    let s = session();
    fx.wts.create(s, "main").unwrap();
    let lock = index_lock(&fx, s);
    let _held = make_lock(&lock, Duration::from_secs(3600));
    let err = fx.wts.commit_all(s, "x", &[]).unwrap_err();
    match err {
        Error::IndexLocked { holders, .. } => assert!(holders.contains(&std::process::id())),
        other => panic!("expected IndexLocked, got {other}"),
    }
    assert!(lock.exists());
}

#[cfg(target_os = "linux")]
#[test]
fn an_old_lock_with_a_live_git_process_in_the_worktree_is_kept() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    // A git process working in the worktree (as git does while it runs a hook, with the
    // lock's descriptor already closed): `git hash-object --stdin` waits for input.
    let Ok(mut child) = Command::new("git")
        .args(["hash-object", "--stdin"])
        .current_dir(&wt.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    else {
        return; // no git CLI here
    };
    let lock = index_lock(&fx, s);
    drop(make_lock(&lock, Duration::from_secs(3600)));
    let gitdir = lock.parent().unwrap();
    // The child may need a moment to exec.
    let mut state = IndexLockState::Absent;
    for _ in 0..50 {
        state = clear_stale_index_lock(
            gitdir,
            Some(&wt.path),
            DEFAULT_STALE_AFTER,
            SystemTime::now(),
        )
        .unwrap();
        if matches!(state, IndexLockState::Held { .. }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    drop(child.stdin.take());
    let _ = child.wait();
    match state {
        IndexLockState::Held { pids, .. } => assert!(pids.contains(&pid), "{pids:?} vs {pid}"),
        other => panic!("expected Held, got {other:?}"),
    }
    assert!(lock.exists());
    // With git gone, the old lock is stale.
    assert!(matches!(
        clear_stale_index_lock(
            gitdir,
            Some(&wt.path),
            DEFAULT_STALE_AFTER,
            SystemTime::now()
        )
        .unwrap(),
        IndexLockState::Removed { .. }
    ));
    let _ = fs::metadata(&lock).map(|_| panic!("lock should be gone"));
}
