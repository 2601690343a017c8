//! Capability 2: removal per policy, keep-on-failure with TTL, the startup reaper,
//! `clean --dry-run`, and never deleting a branch that is checked out elsewhere.

use std::fs;
use std::time::{Duration, SystemTime};

use git2::{BranchType, WorktreeAddOptions, WorktreePruneOptions};
use worktrain_git::{
    CleanAction, CleanOptions, CleanReason, CleanupPolicy, Disposition, Error, ListOptions,
    LockState, SessionOutcome,
};

use crate::common::{Fixture, git, session, write};

fn policy(keep: Duration) -> CleanupPolicy {
    CleanupPolicy {
        keep_on_failure: keep,
        delete_branch: true,
    }
}

fn branch_exists(fx: &Fixture, s: worktrain_core::ids::SessionId) -> bool {
    fx.workspace()
        .find_branch(&format!("worktrain/{s}"), BranchType::Local)
        .is_ok()
}

fn registered(fx: &Fixture) -> Vec<String> {
    fx.workspace()
        .worktrees()
        .unwrap()
        .iter()
        .map(|n| n.unwrap().unwrap().to_owned())
        .collect()
}

#[test]
fn success_removes_directory_registration_and_merged_branch() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    let d = fx
        .wts
        .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    assert_eq!(
        d,
        Disposition::Removed {
            branch_deleted: true,
            preserved: None
        }
    );
    assert!(!wt.path.exists());
    assert!(registered(&fx).is_empty());
    assert!(
        !branch_exists(&fx, s),
        "a branch with no own commits is deleted"
    );
    if let Some(list) = git(&fx.repo, &["worktree", "list", "--porcelain"]) {
        assert!(!list.contains(&s.to_string()), "{list}");
    }
    // Removing again is a no-op.
    assert_eq!(
        fx.wts
            .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
            .unwrap(),
        Disposition::NotFound
    );
}

/// No worktree is removed before its work is a commit on a kept branch: uncommitted
/// changes (new, modified and deleted files) are committed on the session branch first.
#[test]
fn uncommitted_work_is_committed_on_the_branch_before_removal() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("scratch.txt"), "x\n");
    fs::remove_file(wt.path.join("README.md")).unwrap();
    let d = fx
        .wts
        .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    let Disposition::Removed {
        branch_deleted: false,
        preserved: Some(oid),
    } = d
    else {
        panic!("the work must be preserved and the branch kept: {d:?}");
    };
    assert!(!wt.path.exists());
    assert!(branch_exists(&fx, s));
    let repo = fx.workspace();
    let commit = repo.find_commit(oid).unwrap();
    assert_eq!(
        repo.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        oid
    );
    let tree = commit.tree().unwrap();
    assert!(tree.get_name("scratch.txt").is_some());
    assert!(
        tree.get_name("README.md").is_none(),
        "the deletion is committed"
    );
    let message = commit.message().unwrap();
    assert!(
        message.contains(&format!("Worktrain-Session: {s}")),
        "{message}"
    );
}

/// The reaper removes an expired kept worktree of a failed session the same way.
#[test]
fn the_reaper_preserves_the_work_of_an_expired_keep() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("half-done.txt"), "partial\n");
    let policy = CleanupPolicy {
        keep_on_failure: std::time::Duration::from_secs(1),
        ..CleanupPolicy::default()
    };
    assert!(matches!(
        fx.wts.remove(s, SessionOutcome::Failed, &policy).unwrap(),
        Disposition::Kept { .. }
    ));
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let report = fx.wts.prune_stale(later).unwrap();
    let entry = report
        .entries
        .iter()
        .find(|e| e.session == Some(s))
        .expect("the expired keep is cleaned");
    assert_eq!(entry.action, CleanAction::Removed);
    let oid = entry.preserved.expect("the partial work was committed");
    assert!(!wt.path.exists());
    let repo = fx.workspace();
    let tree = repo.find_commit(oid).unwrap().tree().unwrap();
    assert!(tree.get_name("half-done.txt").is_some());
}

#[test]
fn a_branch_with_unpushed_commits_is_kept_and_a_pushed_one_deleted() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("feature.txt"), "feature\n");
    fx.wts.commit_all(s, "feature", &[]).unwrap().unwrap();
    let d = fx
        .wts
        .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    assert_eq!(
        d,
        Disposition::Removed {
            branch_deleted: false,
            preserved: None
        }
    );
    assert!(branch_exists(&fx, s), "unpushed work survives");

    let t = session();
    let wt = fx.wts.create(t, "main").unwrap();
    write(&wt.path.join("feature.txt"), "other feature\n");
    fx.wts.commit_all(t, "feature", &[]).unwrap().unwrap();
    fx.wts.push(t, "origin", &format!("feature/{t}")).unwrap();
    let d = fx
        .wts
        .remove(t, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    assert_eq!(
        d,
        Disposition::Removed {
            branch_deleted: true,
            preserved: None
        }
    );
}

#[test]
fn a_branch_checked_out_elsewhere_is_never_deleted() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    // The user's main checkout has the session branch checked out (as
    // `git switch --ignore-other-worktrees` does; libgit2 itself refuses).
    fs::write(
        fx.repo.join(".git/HEAD"),
        format!("ref: refs/heads/worktrain/{s}\n"),
    )
    .unwrap();
    let d = fx
        .wts
        .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    assert_eq!(
        d,
        Disposition::Removed {
            branch_deleted: false,
            preserved: None
        }
    );
    assert!(!wt.path.exists());
    assert!(branch_exists(&fx, s));

    // Same with another linked worktree holding it.
    let t = session();
    fx.wts.create(t, "main").unwrap();
    let other = fx.tmp.path().join("users-worktree");
    let repo = fx.workspace();
    // The user's worktree, then pointed at the session branch the way
    // `git checkout --ignore-other-worktrees` does (libgit2 itself refuses).
    let tmp_branch = repo
        .branch(
            "tmp",
            &repo.head().unwrap().peel_to_commit().unwrap(),
            false,
        )
        .unwrap();
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(tmp_branch.get()));
    repo.worktree("users", &other, Some(&opts)).unwrap();
    fs::write(
        fx.repo.join(".git/worktrees/users/HEAD"),
        format!("ref: refs/heads/worktrain/{t}\n"),
    )
    .unwrap();
    let d = fx
        .wts
        .remove(t, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap();
    assert_eq!(
        d,
        Disposition::Removed {
            branch_deleted: false,
            preserved: None
        }
    );
    assert!(branch_exists(&fx, t));
    assert!(
        other.join("README.md").exists(),
        "the other worktree is intact"
    );
}

#[test]
fn failure_keeps_the_worktree_until_its_ttl_then_the_reaper_removes_it() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("evidence.log"), "what went wrong\n");
    let before = SystemTime::now();
    let d = fx
        .wts
        .remove(
            s,
            SessionOutcome::Failed,
            &policy(Duration::from_secs(3600)),
        )
        .unwrap();
    let Disposition::Kept { until } = d else {
        panic!("expected Kept, got {d:?}");
    };
    assert!(until >= before + Duration::from_secs(3599));
    assert!(wt.path.join("evidence.log").exists());
    let info = fx.wts.get(s, ListOptions::default()).unwrap().unwrap();
    assert!(
        matches!(info.lock, LockState::Kept { .. }),
        "{:?}",
        info.lock
    );
    if let Some(list) = git(&fx.repo, &["worktree", "list", "--porcelain"]) {
        assert!(
            list.contains("locked worktrain: kept for inspection"),
            "{list}"
        );
    }

    // Before the TTL: untouched.
    let report = fx.wts.prune_stale(SystemTime::now()).unwrap();
    assert!(report.entries.is_empty(), "{report:?}");
    assert!(wt.path.exists());

    // After: removed.
    let report = fx
        .wts
        .prune_stale(SystemTime::now() + Duration::from_secs(7200))
        .unwrap();
    assert_eq!(report.entries.len(), 1, "{report:?}");
    assert!(matches!(
        report.entries[0].reason,
        CleanReason::KeepExpired { .. }
    ));
    assert_eq!(report.entries[0].action, CleanAction::Removed);
    assert!(!wt.path.exists());
    assert!(registered(&fx).is_empty());

    // With a zero keep, a failure is removed at once.
    let t = session();
    let wt = fx.wts.create(t, "main").unwrap();
    let d = fx
        .wts
        .remove(t, SessionOutcome::Failed, &policy(Duration::ZERO))
        .unwrap();
    assert!(matches!(d, Disposition::Removed { .. }));
    assert!(!wt.path.exists());
}

#[test]
fn reaper_prunes_registrations_whose_directory_is_gone_and_spares_live_ones() {
    let fx = Fixture::new();
    let gone = session();
    let live = session();
    let gone_wt = fx.wts.create(gone, "main").unwrap();
    let live_wt = fx.wts.create(live, "main").unwrap();
    fs::remove_dir_all(&gone_wt.path).unwrap();

    let report = fx.wts.prune_stale(SystemTime::now()).unwrap();
    assert_eq!(report.entries.len(), 1, "{report:?}");
    assert_eq!(report.entries[0].session, Some(gone));
    assert_eq!(report.entries[0].reason, CleanReason::DirectoryMissing);
    assert_eq!(report.entries[0].action, CleanAction::Removed);
    assert_eq!(registered(&fx), vec![live.to_string()]);
    assert!(live_wt.path.exists());
    assert!(!branch_exists(&fx, gone));
    if let Some(out) = git(&fx.repo, &["worktree", "prune", "--dry-run", "-v"]) {
        assert!(
            out.trim().is_empty(),
            "git has nothing left to prune: {out}"
        );
    }
}

#[test]
fn clean_dry_run_reports_without_removing() {
    let fx = Fixture::new();
    let kept = session();
    let missing = session();
    let live = session();
    let kept_wt = fx.wts.create(kept, "main").unwrap();
    let missing_wt = fx.wts.create(missing, "main").unwrap();
    fx.wts.create(live, "main").unwrap();
    fx.wts
        .remove(
            kept,
            SessionOutcome::Failed,
            &policy(Duration::from_secs(60)),
        )
        .unwrap();
    fs::remove_dir_all(&missing_wt.path).unwrap();
    let later = SystemTime::now() + Duration::from_secs(120);

    let dry = fx
        .wts
        .clean(CleanOptions {
            now: later,
            dry_run: true,
            include_kept: false,
        })
        .unwrap();
    let mut sessions: Vec<_> = dry.entries.iter().map(|e| e.session.unwrap()).collect();
    sessions.sort();
    assert_eq!(sessions, vec![kept, missing]);
    assert!(
        dry.entries
            .iter()
            .all(|e| e.action == CleanAction::WouldRemove)
    );
    assert_eq!(dry.removed().len(), 2);
    assert!(kept_wt.path.exists());
    assert_eq!(registered(&fx).len(), 3);

    let done = fx
        .wts
        .clean(CleanOptions {
            now: later,
            dry_run: false,
            include_kept: false,
        })
        .unwrap();
    assert!(
        done.entries
            .iter()
            .all(|e| e.action == CleanAction::Removed)
    );
    assert_eq!(registered(&fx), vec![live.to_string()]);
    assert!(!kept_wt.path.exists());
}

#[test]
fn clean_can_remove_unexpired_kept_worktrees_on_request() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    fx.wts
        .remove(
            s,
            SessionOutcome::Failed,
            &policy(Duration::from_secs(3600)),
        )
        .unwrap();
    let report = fx
        .wts
        .clean(CleanOptions {
            now: SystemTime::now(),
            dry_run: false,
            include_kept: true,
        })
        .unwrap();
    assert!(matches!(
        report.entries[0].reason,
        CleanReason::KeptRemovedOnRequest { .. }
    ));
    assert!(!wt.path.exists());
}

#[test]
fn unowned_worktrees_are_removed_only_when_clean_and_foreign_locks_are_respected() {
    let fx = Fixture::new();
    let clean = session();
    let dirty = session();
    let foreign = session();
    let clean_wt = fx.wts.create(clean, "main").unwrap();
    let dirty_wt = fx.wts.create(dirty, "main").unwrap();
    let foreign_wt = fx.wts.create(foreign, "main").unwrap();
    let repo = fx.workspace();
    for s in [clean, dirty, foreign] {
        repo.find_worktree(&s.to_string())
            .unwrap()
            .unlock()
            .unwrap();
    }
    write(&dirty_wt.path.join("unsaved.txt"), "work\n");
    repo.find_worktree(&foreign.to_string())
        .unwrap()
        .lock(Some("mine, hands off"))
        .unwrap();

    let report = fx.wts.prune_stale(SystemTime::now()).unwrap();
    let action = |s| {
        report
            .entries
            .iter()
            .find(|e| e.session == Some(s))
            .map(|e| e.action.clone())
    };
    assert_eq!(action(clean), Some(CleanAction::Removed));
    assert!(matches!(action(dirty), Some(CleanAction::Skipped(_))));
    assert_eq!(action(foreign), None);
    assert!(!clean_wt.path.exists());
    assert!(dirty_wt.path.join("unsaved.txt").exists());

    let d = fx
        .wts
        .remove(
            foreign,
            SessionOutcome::Succeeded,
            &CleanupPolicy::default(),
        )
        .unwrap();
    assert_eq!(
        d,
        Disposition::LeftLocked {
            reason: "mine, hands off".into()
        }
    );
    assert!(foreign_wt.path.exists());
}

#[test]
fn leftover_directories_of_pruned_registrations_are_reaped() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    // Someone pruned the registration but the directory stayed.
    let repo = fx.workspace();
    let registered_wt = repo.find_worktree(&s.to_string()).unwrap();
    let mut opts = WorktreePruneOptions::new();
    opts.valid(true).locked(true);
    registered_wt.prune(Some(&mut opts)).unwrap();
    assert!(wt.path.exists());
    // Another repository's worktree directory in the same root is not ours.
    let stranger = fx.wts.root().join(session().to_string());
    write(
        &stranger.join(".git"),
        "gitdir: /elsewhere/.git/worktrees/x\n",
    );

    let report = fx.wts.prune_stale(SystemTime::now()).unwrap();
    assert_eq!(report.entries.len(), 1, "{report:?}");
    assert_eq!(report.entries[0].reason, CleanReason::Unregistered);
    assert_eq!(report.entries[0].action, CleanAction::Removed);
    assert!(!wt.path.exists());
    assert!(stranger.exists());
}

#[test]
fn a_session_named_worktree_outside_the_root_is_never_deleted() {
    let fx = Fixture::new();
    let s = session();
    let elsewhere = fx.tmp.path().join("elsewhere");
    let repo = fx.workspace();
    let b = repo
        .branch(
            &format!("worktrain/{s}"),
            &repo.head().unwrap().peel_to_commit().unwrap(),
            false,
        )
        .unwrap();
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(b.get()));
    repo.worktree(&s.to_string(), &elsewhere, Some(&opts))
        .unwrap();
    let err = fx
        .wts
        .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
        .unwrap_err();
    assert!(matches!(err, Error::Misplaced { .. }), "{err}");
    assert!(elsewhere.join("README.md").exists());
}
