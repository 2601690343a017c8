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
