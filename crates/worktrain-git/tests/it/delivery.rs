//! commit_all (with trailers) and push to a bare remote on disk.

use git2::Repository;
use worktrain_git::Error;

use crate::common::{Fixture, commit_files, git, session, write};

#[test]
fn commit_all_stages_everything_and_appends_trailers() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("src/lib.rs"), "changed\n");
    write(&wt.path.join("new/file.txt"), "new\n");
    write(&wt.path.join("build.log"), "ignored\n");
    std::fs::remove_file(wt.path.join("README.md")).unwrap();

    let oid = fx
        .wts
        .commit_all(
            s,
            "Fix the thing\n\nLonger body.",
            &[
                ("Worktrain-Session", &s.to_string()),
                ("Worktrain-Workflow", "coding-task"),
            ],
        )
        .unwrap()
        .expect("a commit");

    let repo = fx.workspace();
    assert_eq!(
        repo.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        oid
    );
    let commit = repo.find_commit(oid).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), wt.head);
    assert_eq!(commit.author().name().unwrap(), "Agent");
    let message = commit.message().unwrap();
    assert!(
        message.starts_with("Fix the thing\n\nLonger body.\n\n"),
        "{message}"
    );
    let trailers = git2::message_trailers_strs(message).unwrap();
    let trailers: Vec<(&str, &str)> = trailers.iter().collect();
    assert_eq!(
        trailers,
        vec![
            ("Worktrain-Session", s.to_string().as_str()),
            ("Worktrain-Workflow", "coding-task")
        ]
    );
    let tree = commit.tree().unwrap();
    assert!(tree.get_path(std::path::Path::new("new/file.txt")).is_ok());
    assert!(tree.get_path(std::path::Path::new("README.md")).is_err());
    assert!(tree.get_path(std::path::Path::new("build.log")).is_err());
    assert!(!fx.wts.is_dirty(s).unwrap());
    if let Some(status) = git(&wt.path, &["status", "--porcelain"]) {
        assert_eq!(status, "");
    }

    // Nothing left: no empty commit.
    assert_eq!(fx.wts.commit_all(s, "again", &[]).unwrap(), None);
}

#[test]
fn read_only_worktrees_cannot_commit_or_push() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create_detached(s, "refs/pull/7/head").unwrap();
    write(&wt.path.join("x.txt"), "x\n");
    assert!(matches!(
        fx.wts.commit_all(s, "nope", &[]).unwrap_err(),
        Error::ReadOnly { .. }
    ));
    assert!(matches!(
        fx.wts.push(s, "origin", "nope").unwrap_err(),
        Error::ReadOnly { .. }
    ));
}

#[test]
fn push_updates_the_remote_branch_is_retry_safe_and_rejects_non_fast_forward() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("feature.txt"), "v1\n");
    let c1 = fx.wts.commit_all(s, "v1", &[]).unwrap().unwrap();
    let branch = format!("worktrain/{s}");

    let pushed = fx.wts.push(s, "origin", &branch).unwrap();
    assert_eq!(pushed.oid, c1);
    assert_eq!(pushed.refname, format!("refs/heads/{branch}"));
    let bare = Repository::open_bare(&fx.remote).unwrap();
    assert_eq!(bare.refname_to_id(&pushed.refname).unwrap(), c1);
    // The remote-tracking ref follows (so cleanup knows the branch is pushed).
    assert_eq!(
        fx.workspace()
            .refname_to_id(&format!("refs/remotes/origin/{branch}"))
            .unwrap(),
        c1
    );

    // A retried push of the same commit is fine; a new commit fast-forwards.
    fx.wts.push(s, "origin", &branch).unwrap();
    write(&wt.path.join("feature.txt"), "v2\n");
    let c2 = fx.wts.commit_all(s, "v2", &[]).unwrap().unwrap();
    fx.wts.push(s, "origin", &branch).unwrap();
    assert_eq!(bare.refname_to_id(&pushed.refname).unwrap(), c2);

    // Someone else pushes to the branch: ours is no longer a fast-forward.
    let theirs = commit_files(
        &bare,
        &pushed.refname,
        &[("theirs.txt", Some("t\n"))],
        "theirs",
    );
    write(&wt.path.join("feature.txt"), "v3\n");
    fx.wts.commit_all(s, "v3", &[]).unwrap().unwrap();
    let err = fx.wts.push(s, "origin", &branch).unwrap_err();
    assert!(matches!(err, Error::PushRejected { .. }), "{err}");
    assert_eq!(bare.refname_to_id(&pushed.refname).unwrap(), theirs);

    assert!(matches!(
        fx.wts.push(s, "origin", "bad..branch").unwrap_err(),
        Error::Invalid { .. }
    ));
    assert!(matches!(
        fx.wts.push(s, "no-such-remote", &branch).unwrap_err(),
        Error::Git { .. }
    ));
}

/// Only the declared files reach the session branch; the undeclared ones are committed on
/// `worktrain-undeclared/<session>` (on top of the declared commit, so nothing is lost)
/// and the worktree is left clean, so removing it adds nothing to the session branch.
#[test]
fn commit_declared_commits_exactly_the_declared_files_and_keeps_the_rest() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("src/lib.rs"), "declared change\n");
    write(
        &wt.path.join("docs/new.md"),
        "declared new file in a directory\n",
    );
    write(&wt.path.join("scratch.txt"), "the agent's notes\n");
    std::fs::remove_file(wt.path.join("README.md")).unwrap();
    write(&wt.path.join("build.log"), "ignored\n");
    // Staged by the agent but undeclared: staging does not make it delivered.
    write(&wt.path.join("staged.txt"), "staged\n");
    git(&wt.path, &["add", "staged.txt"]);

    let d = fx
        .wts
        .commit_declared(
            s,
            &["./src/lib.rs".into(), "docs/".into(), "missing.rs".into()],
            "Declared only",
            &[("Worktrain-Session", &s.to_string())],
        )
        .unwrap();
    let oid = d.commit.expect("a commit of the declared files");
    assert_eq!(d.committed, ["docs/new.md", "src/lib.rs"]);
    assert_eq!(d.undeclared, ["README.md", "scratch.txt", "staged.txt"]);
    let kept = format!("worktrain-undeclared/{s}");
    assert_eq!(d.kept_on.as_deref(), Some(kept.as_str()));

    let repo = fx.workspace();
    assert_eq!(
        repo.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        oid
    );
    let commit = repo.find_commit(oid).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), wt.head);
    let tree = commit.tree().unwrap();
    let has = |t: &git2::Tree<'_>, p: &str| t.get_path(std::path::Path::new(p)).is_ok();
    assert!(has(&tree, "src/lib.rs") && has(&tree, "docs/new.md"));
    assert!(
        has(&tree, "README.md"),
        "an undeclared deletion is not delivered"
    );
    assert!(!has(&tree, "scratch.txt") && !has(&tree, "staged.txt"));

    // The rest is on its own branch, on top of the delivered commit.
    let keep = repo
        .find_commit(repo.refname_to_id(&format!("refs/heads/{kept}")).unwrap())
        .unwrap();
    assert_eq!(keep.parent_id(0).unwrap(), oid);
    let ktree = keep.tree().unwrap();
    assert!(has(&ktree, "scratch.txt") && has(&ktree, "staged.txt"));
    assert!(!has(&ktree, "README.md"));
    assert!(!has(&ktree, "build.log"));
    let message = keep.message().unwrap();
    assert!(message.contains("- scratch.txt\n"), "{message}");

    // The worktree is clean at the delivered commit (ignored files stay).
    assert!(!fx.wts.is_dirty(s).unwrap());
    assert!(!wt.path.join("scratch.txt").exists());
    assert!(wt.path.join("README.md").exists());
    assert!(wt.path.join("build.log").exists());

    // Nothing left: no empty commit, and the kept branch is still reported.
    let again = fx
        .wts
        .commit_declared(s, &["src/lib.rs".into()], "again", &[])
        .unwrap();
    assert_eq!(again.commit, None);
    assert!(again.undeclared.is_empty());
    assert_eq!(again.kept_on.as_deref(), Some(kept.as_str()));
}

#[test]
fn commit_declared_makes_no_commit_when_nothing_declared_changed() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    let d = fx
        .wts
        .commit_declared(s, &["src/lib.rs".into()], "nothing", &[])
        .unwrap();
    assert_eq!(d.commit, None);
    assert!(d.undeclared.is_empty() && d.kept_on.is_none());
    // Only undeclared changes: still no commit on the session branch.
    write(&wt.path.join("notes.txt"), "undeclared\n");
    let d = fx
        .wts
        .commit_declared(s, &["src/lib.rs".into()], "nothing", &[])
        .unwrap();
    assert_eq!(d.commit, None);
    assert_eq!(d.undeclared, ["notes.txt"]);
    let repo = fx.workspace();
    assert_eq!(
        repo.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        wt.head,
        "the session branch did not move"
    );
    assert!(worktrain_git::is_declared("src", "src/a/b.rs"));
    assert!(!worktrain_git::is_declared("src", "srcx/a.rs"));
    assert!(!worktrain_git::is_declared("", "a.rs"));
}
