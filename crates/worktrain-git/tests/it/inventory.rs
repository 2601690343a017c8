//! Capability 3: the inventory behind `worktrain worktree list`.

use std::time::Duration;

use git2::WorktreeAddOptions;
use worktrain_git::{CleanupPolicy, ListOptions, LockState, Mode, SessionOutcome};

use crate::common::{Fixture, session, write};

#[test]
fn list_reports_path_branch_session_age_dirty_ahead_merged() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();

    let rows = fx.wts.list(ListOptions { status: true }).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.session, s);
    assert_eq!(row.path, wt.path);
    assert!(row.exists);
    assert_eq!(row.mode, Mode::Branch);
    assert_eq!(
        row.branch.as_deref(),
        Some(format!("worktrain/{s}").as_str())
    );
    assert_eq!(row.head, Some(wt.head));
    assert_eq!(row.base.as_deref(), Some("refs/remotes/origin/main"));
    assert!(row.created.is_some());
    assert!(row.age.unwrap() < Duration::from_secs(60));
    assert_eq!(row.lock, LockState::InUse);
    assert_eq!(row.dirty, Some(false));
    assert_eq!(row.ahead, Some(0));
    assert_eq!(row.merged, Some(true));

    // Without the status scan, dirty is not computed.
    let cheap = fx.wts.list(ListOptions::default()).unwrap();
    assert_eq!(cheap[0].dirty, None);

    // Uncommitted work → dirty; an untracked file counts, an ignored one does not.
    write(&wt.path.join("out.log"), "ignored\n");
    assert_eq!(
        fx.wts.list(ListOptions { status: true }).unwrap()[0].dirty,
        Some(false)
    );
    write(&wt.path.join("new.txt"), "new\n");
    assert_eq!(
        fx.wts.list(ListOptions { status: true }).unwrap()[0].dirty,
        Some(true)
    );

    // Two commits → ahead 2, not merged.
    fx.wts.commit_all(s, "one", &[]).unwrap().unwrap();
    write(&wt.path.join("new.txt"), "newer\n");
    let tip = fx.wts.commit_all(s, "two", &[]).unwrap().unwrap();
    let row = fx
        .wts
        .get(s, ListOptions { status: true })
        .unwrap()
        .unwrap();
    assert_eq!(row.dirty, Some(false));
    assert_eq!(row.ahead, Some(2));
    assert_eq!(row.merged, Some(false));
    assert_eq!(row.head, Some(tip));

    // The base catches up (the PR was merged) → merged, ahead 0.
    fx.workspace()
        .reference("refs/remotes/origin/main", tip, true, "merged upstream")
        .unwrap();
    let row = fx.wts.get(s, ListOptions::default()).unwrap().unwrap();
    assert_eq!(row.ahead, Some(0));
    assert_eq!(row.merged, Some(true));
}

#[test]
fn list_shows_kept_missing_and_detached_worktrees_and_ignores_foreign_ones() {
    let fx = Fixture::new();
    let kept = session();
    let missing = session();
    let detached = session();
    fx.wts.create(kept, "main").unwrap();
    let gone = fx.wts.create(missing, "main").unwrap();
    fx.wts
        .create_detached(detached, "refs/pull/7/head")
        .unwrap();
    fx.wts
        .remove(
            kept,
            SessionOutcome::Failed,
            &CleanupPolicy {
                keep_on_failure: Duration::from_secs(600),
                delete_branch: true,
            },
        )
        .unwrap();
    std::fs::remove_dir_all(&gone.path).unwrap();
    // A user's own worktree (not a session) is not listed.
    let repo = fx.workspace();
    let b = repo
        .branch(
            "mine",
            &repo.head().unwrap().peel_to_commit().unwrap(),
            false,
        )
        .unwrap();
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(b.get()));
    repo.worktree("mine", &fx.tmp.path().join("mine"), Some(&opts))
        .unwrap();

    let rows = fx.wts.list(ListOptions { status: true }).unwrap();
    let sessions: Vec<_> = rows.iter().map(|r| r.session).collect();
    assert_eq!(
        sessions,
        vec![kept, missing, detached],
        "ordered by session"
    );
    assert!(matches!(rows[0].lock, LockState::Kept { .. }));
    assert!(!rows[1].exists);
    assert_eq!(rows[1].dirty, None);
    assert_eq!(rows[2].mode, Mode::Detached);
    assert_eq!(rows[2].branch, None);
    assert_eq!(rows[2].ahead, None);
    assert_eq!(rows[2].merged, None);
    assert!(
        fx.wts
            .get(session(), ListOptions::default())
            .unwrap()
            .is_none()
    );
}
