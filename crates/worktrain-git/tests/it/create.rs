//! Capability 1: create (fetch first, new branch, locked), idempotent re-attach,
//! read-only detached worktrees.

use std::fs;

use git2::{BranchType, Repository, WorktreeLockStatus};
use worktrain_git::{
    CleanupPolicy, Disposition, Error, ListOptions, LockState, Mode, SessionOutcome, Worktrees,
    WorktreesConfig,
};

use crate::common::{Fixture, commit_files, git, read, session, write};

#[test]
fn create_fetches_the_base_first_and_makes_a_locked_branch_worktree() {
    let fx = Fixture::new();
    // Upstream moves on after the clone: create must see it.
    let upstream = fx.advance_remote_main(&[("NEW.md", Some("fresh\n"))]);
    let s = session();

    let wt = fx.wts.create(s, "main").unwrap();

    assert_eq!(wt.path, fx.wts.root().join(s.to_string()));
    assert_eq!(
        wt.path,
        fx.home
            .canonicalize()
            .unwrap()
            .join("worktrees")
            .join(s.to_string())
    );
    assert_eq!(
        wt.branch.as_deref(),
        Some(format!("worktrain/{s}").as_str())
    );
    assert_eq!(wt.mode, Mode::Branch);
    assert_eq!(wt.head, upstream);
    assert_eq!(wt.base.as_deref(), Some("refs/remotes/origin/main"));
    assert!(!wt.reattached);
    assert_eq!(read(&wt.path.join("NEW.md")), "fresh\n");

    let repo = fx.workspace();
    let branch = repo
        .find_branch(&format!("worktrain/{s}"), BranchType::Local)
        .unwrap();
    assert_eq!(branch.get().target(), Some(upstream));
    let registered = repo.find_worktree(&s.to_string()).unwrap();
    match registered.is_locked().unwrap() {
        WorktreeLockStatus::Locked(Some(reason)) => {
            assert!(reason.contains(&s.to_string()), "{reason}");
        }
        other => panic!("not locked with a reason: {other:?}"),
    }
    // The user's checkout is untouched.
    assert_eq!(repo.head().unwrap().shorthand().unwrap(), "main");

    // Cross-check with the git CLI.
    if let Some(porcelain) = git(&fx.repo, &["worktree", "list", "--porcelain"]) {
        let block = porcelain
            .split("\n\n")
            .find(|b| b.contains(&s.to_string()))
            .expect("git lists the worktree");
        assert!(
            block.contains(&format!("branch refs/heads/worktrain/{s}")),
            "{block}"
        );
        assert!(
            block.contains("locked worktrain: in use by session"),
            "{block}"
        );
        let status = git(&wt.path, &["status", "--porcelain"]).unwrap();
        assert_eq!(status, "", "fresh worktree is clean");
    }
}

#[test]
fn create_is_idempotent_and_reattaches_without_losing_work() {
    let fx = Fixture::new();
    let s = session();
    let first = fx.wts.create(s, "main").unwrap();
    write(&first.path.join("work.txt"), "in progress\n");

    let again = fx.wts.create(s, "main").unwrap();
    assert!(again.reattached);
    assert_eq!(again.path, first.path);
    assert_eq!(again.head, first.head);
    assert_eq!(again.branch, first.branch);
    assert_eq!(read(&again.path.join("work.txt")), "in progress\n");

    // An unlocked worktree is locked again on re-attach.
    let repo = fx.workspace();
    repo.find_worktree(&s.to_string())
        .unwrap()
        .unlock()
        .unwrap();
    fx.wts.create(s, "main").unwrap();
    let info = fx.wts.get(s, ListOptions::default()).unwrap().unwrap();
    assert_eq!(info.lock, LockState::InUse);

    // A worktree kept after a failure is taken back into use by a retry.
    let kept = fx
        .wts
        .remove(s, SessionOutcome::Failed, &CleanupPolicy::default())
        .unwrap();
    assert!(matches!(kept, Disposition::Kept { .. }));
    assert!(fx.wts.create(s, "main").unwrap().reattached);
    let info = fx.wts.get(s, ListOptions::default()).unwrap().unwrap();
    assert_eq!(info.lock, LockState::InUse);
    assert_eq!(read(&again.path.join("work.txt")), "in progress\n");
}

#[test]
fn worktrees_and_errors_can_cross_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn error<T: Send + Sync + std::error::Error + 'static>() {}
    shareable::<Worktrees>();
    error::<Error>();
}

#[test]
fn concurrent_sessions_do_not_trip_over_each_other() {
    let fx = Fixture::new();
    let sessions: Vec<_> = (0..8).map(|_| session()).collect();
    std::thread::scope(|scope| {
        for &s in &sessions {
            let wts = fx.wts.clone();
            scope.spawn(move || {
                let wt = wts.create(s, "main").unwrap();
                write(&wt.path.join(format!("{s}.txt")), "mine\n");
                let snap = wts.snapshot(s, "n1").unwrap();
                assert_eq!(wts.snapshots(s).unwrap()[0].oid, snap);
                wts.commit_all(s, "work", &[]).unwrap().unwrap();
                wts.push(s, "origin", &format!("worktrain/{s}")).unwrap();
                let d = wts
                    .remove(s, SessionOutcome::Succeeded, &CleanupPolicy::default())
                    .unwrap();
                assert_eq!(
                    d,
                    Disposition::Removed {
                        branch_deleted: true,
                        preserved: None
                    }
                );
            });
        }
    });
    assert!(fx.wts.list(ListOptions::default()).unwrap().is_empty());
    let bare = fx.bare();
    for s in sessions {
        assert!(
            bare.refname_to_id(&format!("refs/heads/worktrain/{s}"))
                .is_ok()
        );
    }
}

#[test]
fn create_recreates_a_vanished_directory_on_the_existing_branch() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("done.txt"), "committed work\n");
    let commit = fx.wts.commit_all(s, "work", &[]).unwrap().unwrap();

    fs::remove_dir_all(&wt.path).unwrap();
    // Upstream moves: the existing branch must win (its commit is not thrown away).
    fx.advance_remote_main(&[("other.txt", Some("x\n"))]);
    let again = fx.wts.create(s, "main").unwrap();
    assert!(!again.reattached);
    assert_eq!(again.head, commit);
    assert_eq!(read(&again.path.join("done.txt")), "committed work\n");
    let info = fx.wts.get(s, ListOptions::default()).unwrap().unwrap();
    assert_eq!(info.lock, LockState::InUse);
}

#[test]
fn create_detached_at_a_pull_request_head_creates_no_branch() {
    let fx = Fixture::new();
    let pr_head = fx.bare().refname_to_id("refs/pull/7/head").unwrap();
    let s = session();

    let wt = fx.wts.create_detached(s, "refs/pull/7/head").unwrap();

    assert_eq!(wt.mode, Mode::Detached);
    assert_eq!(wt.branch, None);
    assert_eq!(wt.head, pr_head);
    assert_eq!(read(&wt.path.join("src/pr.rs")), "// the PR\n");
    let wrepo = Repository::open(&wt.path).unwrap();
    assert!(wrepo.head_detached().unwrap());
    let repo = fx.workspace();
    let branches: Vec<String> = repo
        .branches(Some(BranchType::Local))
        .unwrap()
        .map(|b| b.unwrap().0.name().unwrap().unwrap().to_owned())
        .collect();
    assert_eq!(
        branches,
        vec!["main".to_owned()],
        "no session or temporary branch"
    );
    let info = fx
        .wts
        .get(s, ListOptions { status: true })
        .unwrap()
        .unwrap();
    assert_eq!(info.lock, LockState::InUse);
    assert_eq!(info.mode, Mode::Detached);
    assert_eq!(info.head, Some(pr_head));
    assert_eq!(info.dirty, Some(false));
    // Re-attach works for detached ones too.
    let again = fx.wts.create_detached(s, "refs/pull/7/head").unwrap();
    assert!(again.reattached);
    assert_eq!(again.mode, Mode::Detached);

    if let Some(out) = git(&wt.path, &["rev-parse", "--abbrev-ref", "HEAD"]) {
        assert_eq!(out.trim(), "HEAD");
    }
}

#[test]
fn create_detached_at_a_local_commit_and_unknown_refs_fail_cleanly() {
    let fx = Fixture::new();
    let head = fx.workspace().refname_to_id("refs/heads/main").unwrap();
    let s = session();
    let wt = fx.wts.create_detached(s, &head.to_string()).unwrap();
    assert_eq!(wt.head, head);

    let missing = session();
    let err = fx
        .wts
        .create_detached(missing, "refs/pull/999/head")
        .unwrap_err();
    assert!(
        matches!(err, Error::RevNotFound { fetched: true, .. }),
        "{err}"
    );
    assert!(!fx.wts.path_for(missing).exists());
    let err = fx.wts.create(missing, "no-such-branch").unwrap_err();
    assert!(
        matches!(err, Error::RevNotFound { fetched: true, .. }),
        "{err}"
    );
    assert!(!fx.wts.path_for(missing).exists());
    assert!(matches!(
        fx.wts.create(missing, "bad..name").unwrap_err(),
        Error::Invalid { .. }
    ));
}

#[test]
fn create_refuses_an_occupied_path() {
    let fx = Fixture::new();
    let s = session();
    write(&fx.wts.path_for(s).join("somebody.txt"), "else\n");
    let err = fx.wts.create(s, "main").unwrap_err();
    assert!(matches!(err, Error::PathOccupied { .. }), "{err}");
    assert_eq!(read(&fx.wts.path_for(s).join("somebody.txt")), "else\n");
    // An empty directory (an interrupted create) is fine.
    let t = session();
    fs::create_dir_all(fx.wts.path_for(t)).unwrap();
    fx.wts.create(t, "main").unwrap();
}

#[test]
fn works_with_a_local_base_and_a_bare_workspace() {
    let fx = Fixture::new();
    // A bare workspace repository (a worktrain-managed mirror) without remote.
    let mirror = fx.tmp.path().join("mirror.git");
    let bare = Repository::init_bare(&mirror).unwrap();
    let tip = commit_files(&bare, "refs/heads/trunk", &[("a.txt", Some("a\n"))], "init");
    let mut config = WorktreesConfig::new(&mirror, fx.tmp.path().join("home2"));
    config.remote = None;
    let wts = Worktrees::new(config).unwrap();
    let s = session();
    let wt = wts.create(s, "trunk").unwrap();
    assert_eq!(wt.head, tip);
    assert_eq!(wt.base.as_deref(), Some("refs/heads/trunk"));
    assert_eq!(read(&wt.path.join("a.txt")), "a\n");
}

#[test]
fn a_tampered_dot_git_file_is_refused() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    // Point the worktree's `.git` file at another repository.
    let other = fx.tmp.path().join("other");
    Repository::init(&other).unwrap();
    fs::write(
        wt.path.join(".git"),
        format!("gitdir: {}\n", other.join(".git").display()),
    )
    .unwrap();
    let err = fx.wts.snapshot(s, "n1").unwrap_err();
    assert!(matches!(err, Error::Misplaced { .. }), "{err}");
    let err = fx.wts.commit_all(s, "x", &[]).unwrap_err();
    assert!(matches!(err, Error::Misplaced { .. }), "{err}");
    // The inventory still lists it, and says what is wrong.
    let rows = fx.wts.list(ListOptions { status: true }).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].dirty, None);
    assert!(
        rows[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("not where it should be"),
        "{:?}",
        rows[0].problem
    );
}

/// A private repository over HTTP(S) whose credentials come from the user's own git
/// setup (a credential helper, as `gh auth setup-git` or a password manager configure
/// it): the base is fetched with them, as `git fetch` in that checkout would.
#[test]
fn create_fetches_the_base_with_the_users_own_git_credentials() {
    if git(std::path::Path::new("."), &["--version"]).is_none() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let fx = Fixture::new();
    let upstream = fx.advance_remote_main(&[("PRIVATE.md", Some("behind a login\n"))]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let root = fx.tmp.path().to_path_buf();
    let server = rt
        .block_on(worktrain_testkit::git_http::GitHttpServer::start(
            root,
            "s3cret-token",
        ))
        .unwrap();
    let url = format!("{}/remote.git", server.base_url());
    git(&fx.repo, &["remote", "set-url", "origin", &url]).unwrap();
    let store = fx.tmp.path().join("git-credentials");
    let host = server.base_url().trim_start_matches("http://");
    fs::write(
        &store,
        format!("http://x-access-token:s3cret-token@{host}\n"),
    )
    .unwrap();
    git(
        &fx.repo,
        &[
            "config",
            "credential.helper",
            &format!("store --file={}", store.display()),
        ],
    )
    .unwrap();
    let _ = fs::remove_file(fx.repo.join(".git/FETCH_HEAD"));
    let s = session();

    let wt = fx.wts.create(s, "main").unwrap();

    assert_eq!(wt.head, upstream);
    assert_eq!(read(&wt.path.join("PRIVATE.md")), "behind a login\n");
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.authorized && r.user.as_deref() == Some("x-access-token")),
        "{requests:?}"
    );
    // No FETCH_HEAD: concurrent sessions would fight over it.
    assert!(!fx.repo.join(".git/FETCH_HEAD").exists());
}
