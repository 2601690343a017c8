//! Capability 4: step snapshots on hidden refs, restore for rewinds, diffs.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use worktrain_git::{ChangeKind, Error, ListOptions, PRE_RESTORE_LABEL};

use crate::common::{Fixture, git, read, session, write};

/// path → content of every blob in a commit's tree.
fn files_of(repo: &Repository, commit: Oid) -> BTreeMap<String, String> {
    let tree = repo.find_commit(commit).unwrap().tree().unwrap();
    let mut out = BTreeMap::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            let blob = repo.find_blob(entry.id()).unwrap();
            out.insert(
                format!("{dir}{}", entry.name().unwrap()),
                String::from_utf8_lossy(blob.content()).into_owned(),
            );
        }
        TreeWalkResult::Ok
    })
    .unwrap();
    out
}

/// path → content of every file on disk under `root`, skipping `.git` and `target/`.
fn files_on_disk(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(rel, fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn snapshot_records_tracked_and_untracked_files_without_touching_head_branch_or_index() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(
        &wt.path.join("src/lib.rs"),
        "pub fn one() -> u32 {\n    2\n}\n",
    );
    write(&wt.path.join("notes/new.md"), "untracked\n");
    write(&wt.path.join("target/debug/out.bin"), "ignored\n");
    write(&wt.path.join("run.log"), "ignored too\n");
    fs::remove_file(wt.path.join("README.md")).unwrap();
    // Something staged in the real index, to prove the index is left alone.
    let wrepo = Repository::open(&wt.path).unwrap();
    let mut index = wrepo.index().unwrap();
    index.add_path(Path::new("src/lib.rs")).unwrap();
    index.write().unwrap();
    let index_file = fx
        .repo
        .join(".git/worktrees")
        .join(s.to_string())
        .join("index");
    let index_before = fs::read(&index_file).unwrap();
    let head_before = wrepo.head().unwrap().target().unwrap();

    let snap = fx.wts.snapshot(s, "n1").unwrap();

    let repo = fx.workspace();
    assert_eq!(
        repo.refname_to_id(&format!("refs/worktrain/{s}/n1"))
            .unwrap(),
        snap
    );
    let files = files_of(&repo, snap);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, vec![".gitignore", "notes/new.md", "src/lib.rs"]);
    assert_eq!(files["src/lib.rs"], "pub fn one() -> u32 {\n    2\n}\n");
    // Parent is HEAD; HEAD, branch and index are unchanged.
    let commit = repo.find_commit(snap).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), head_before);
    assert!(commit.message().unwrap().contains("Worktrain-Node: n1"));
    let wrepo = Repository::open(&wt.path).unwrap();
    assert_eq!(wrepo.head().unwrap().target().unwrap(), head_before);
    assert_eq!(
        repo.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        head_before
    );
    assert_eq!(
        fs::read(&index_file).unwrap(),
        index_before,
        "index untouched"
    );
    assert!(
        fs::read_dir(fx.repo.join(".git/worktrees").join(s.to_string()))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("worktrain-index-")),
        "scratch index removed"
    );
    if let Some(status) = git(&wt.path, &["status", "--porcelain"]) {
        assert!(
            status.contains("M  src/lib.rs"),
            "staged change still staged: {status}"
        );
        assert!(
            status.contains("?? notes/"),
            "untracked still untracked: {status}"
        );
    }
    // Hidden refs are not branches: `git branch` does not list them.
    if let Some(branches) = git(&fx.repo, &["branch", "--list"]) {
        assert!(!branches.contains("refs/worktrain"), "{branches}");
    }

    // The same state again under the same label: the same snapshot.
    assert_eq!(fx.wts.snapshot(s, "n1").unwrap(), snap);
    assert_eq!(fx.wts.snapshot_of(s, "n1").unwrap(), Some(snap));
    assert_eq!(fx.wts.snapshot_of(s, "n9").unwrap(), None);
    // Labels are validated.
    assert!(matches!(
        fx.wts.snapshot(s, "../x").unwrap_err(),
        Error::Invalid { .. }
    ));
    assert!(matches!(
        fx.wts.snapshot(s, PRE_RESTORE_LABEL).unwrap_err(),
        Error::Invalid { .. }
    ));
}

#[test]
fn restore_brings_back_files_and_removes_files_that_did_not_exist() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    // State at step 1: one edit, one untracked file.
    write(&wt.path.join("src/lib.rs"), "step one\n");
    write(&wt.path.join("plan.md"), "the plan\n");
    let expected = files_on_disk(&wt.path);
    let n1 = fx.wts.snapshot(s, "n1").unwrap();

    // Step 2 wrecks things: edits, deletes, new files and dirs, a commit, ignored output.
    write(&wt.path.join("src/lib.rs"), "step two\n");
    fs::remove_file(wt.path.join("plan.md")).unwrap();
    fs::remove_file(wt.path.join("README.md")).unwrap();
    write(&wt.path.join("src/extra.rs"), "extra\n");
    write(&wt.path.join("deep/er/file.txt"), "new dir\n");
    fx.wts.commit_all(s, "step two", &[]).unwrap().unwrap();
    write(&wt.path.join("later.txt"), "uncommitted\n");
    write(&wt.path.join("target/cache.bin"), "ignored build output\n");
    let head_after_step_two = Repository::open(&wt.path)
        .unwrap()
        .head()
        .unwrap()
        .target()
        .unwrap();
    let n2 = fx.wts.snapshot(s, "n2").unwrap();

    let restored = fx.wts.restore(s, n1).unwrap();

    let mut now = files_on_disk(&wt.path);
    assert_eq!(
        now.remove("target/cache.bin").as_deref(),
        Some("ignored build output\n"),
        "ignored files are left alone"
    );
    assert_eq!(now, expected);
    assert!(
        !wt.path.join("deep").exists(),
        "emptied directories are removed"
    );
    // HEAD stays; the backup snapshot holds the state before the restore.
    let wrepo = Repository::open(&wt.path).unwrap();
    assert_eq!(wrepo.head().unwrap().target().unwrap(), head_after_step_two);
    let repo = fx.workspace();
    assert_eq!(
        repo.refname_to_id(&format!("refs/worktrain/{s}/{PRE_RESTORE_LABEL}"))
            .unwrap(),
        restored.backup
    );
    assert_eq!(
        repo.find_commit(restored.backup).unwrap().tree_id(),
        repo.find_commit(n2).unwrap().tree_id()
    );
    // The restored state snapshots to the same tree as n1.
    let again = fx.wts.snapshot(s, "n3").unwrap();
    assert_eq!(
        repo.find_commit(again).unwrap().tree_id(),
        repo.find_commit(n1).unwrap().tree_id()
    );
    // Nothing is staged: the index is HEAD's tree.
    if let Some(status) = git(&wt.path, &["status", "--porcelain"]) {
        assert!(
            status
                .lines()
                .all(|l| l.starts_with(' ') || l.starts_with("??")),
            "{status}"
        );
    }
    // And the rewind can be undone.
    fx.wts.restore(s, restored.backup).unwrap();
    assert_eq!(read(&wt.path.join("later.txt")), "uncommitted\n");
    assert_eq!(read(&wt.path.join("deep/er/file.txt")), "new dir\n");
    assert!(!wt.path.join("plan.md").exists());
    let info = fx
        .wts
        .get(s, ListOptions { status: true })
        .unwrap()
        .unwrap();
    assert_eq!(info.dirty, Some(true));
}

#[cfg(unix)]
#[test]
fn restore_keeps_modes_and_symlinks() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    write(&wt.path.join("run.sh"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(wt.path.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("README.md", wt.path.join("link")).unwrap();
    let n1 = fx.wts.snapshot(s, "n1").unwrap();
    fs::remove_file(wt.path.join("run.sh")).unwrap();
    fs::remove_file(wt.path.join("link")).unwrap();
    fx.wts.restore(s, n1).unwrap();
    let mode = fs::metadata(wt.path.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit restored");
    assert_eq!(
        fs::read_link(wt.path.join("link")).unwrap(),
        Path::new("README.md")
    );
}

#[test]
fn diff_between_snapshots_gives_stats_and_patch() {
    let fx = Fixture::new();
    let s = session();
    let wt = fx.wts.create(s, "main").unwrap();
    let n1 = fx.wts.snapshot(s, "n1").unwrap();
    write(
        &wt.path.join("src/lib.rs"),
        "pub fn one() -> u32 {\n    1\n}\n\npub fn two() -> u32 {\n    2\n}\n",
    );
    write(&wt.path.join("added.txt"), "a\nb\n");
    fs::remove_file(wt.path.join("README.md")).unwrap();
    fs::write(wt.path.join("blob.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
    let n2 = fx.wts.snapshot(s, "n2").unwrap();

    let d = fx.wts.diff(n1, n2).unwrap();

    assert_eq!(d.stat.files_changed, 4);
    assert_eq!(d.stat.insertions, 4 + 2);
    assert_eq!(d.stat.deletions, 1);
    let by_path = |p: &str| {
        d.stat
            .files
            .iter()
            .find(|f| {
                f.new_path.as_deref() == Some(Path::new(p))
                    || f.old_path.as_deref() == Some(Path::new(p))
            })
            .unwrap_or_else(|| panic!("{p} in {:?}", d.stat.files))
            .clone()
    };
    let lib = by_path("src/lib.rs");
    assert_eq!(
        (lib.status, lib.insertions, lib.deletions),
        (ChangeKind::Modified, 4, 0)
    );
    assert_eq!(by_path("added.txt").status, ChangeKind::Added);
    let readme = by_path("README.md");
    assert_eq!(
        (readme.status, readme.new_path),
        (ChangeKind::Deleted, None)
    );
    assert!(by_path("blob.bin").binary);
    assert!(
        d.patch.contains("diff --git a/src/lib.rs b/src/lib.rs"),
        "{}",
        d.patch
    );
    assert!(d.patch.contains("+pub fn two() -> u32 {"), "{}", d.patch);
    assert!(d.patch.contains("-# demo"), "{}", d.patch);
    assert!(d.patch.contains("Binary files"), "{}", d.patch);

    // Same as git's own numbers.
    if let Some(numstat) = git(
        &fx.repo,
        &["diff", "--numstat", &n1.to_string(), &n2.to_string()],
    ) {
        assert!(numstat.contains("4\t0\tsrc/lib.rs"), "{numstat}");
        assert!(numstat.contains("-\t-\tblob.bin"), "{numstat}");
    }
    // An empty diff.
    let same = fx.wts.diff(n2, n2).unwrap();
    assert_eq!(same.stat.files_changed, 0);
    assert!(same.patch.is_empty());

    // Listing and dropping.
    let labels: Vec<String> = fx
        .wts
        .snapshots(s)
        .unwrap()
        .into_iter()
        .map(|s| s.label)
        .collect();
    assert_eq!(labels, vec!["n1", "n2"]);
    assert_eq!(fx.wts.drop_snapshots(s).unwrap(), 2);
    assert!(fx.wts.snapshots(s).unwrap().is_empty());
}

#[test]
fn snapshots_of_different_sessions_do_not_mix() {
    let fx = Fixture::new();
    let a = session();
    let b = session();
    let wa = fx.wts.create(a, "main").unwrap();
    let wb = fx.wts.create(b, "main").unwrap();
    write(&wa.path.join("a.txt"), "a\n");
    write(&wb.path.join("b.txt"), "b\n");
    let sa = fx.wts.snapshot(a, "n1").unwrap();
    let sb = fx.wts.snapshot(b, "n1").unwrap();
    let repo = fx.workspace();
    assert!(files_of(&repo, sa).contains_key("a.txt"));
    assert!(!files_of(&repo, sa).contains_key("b.txt"));
    assert!(files_of(&repo, sb).contains_key("b.txt"));
    assert_eq!(fx.wts.snapshots(a).unwrap().len(), 1);
}

/// Host A runs a session and shares its step snapshot through the remote; host B (its
/// own clone and home) takes the session over: same branch commits, same uncommitted
/// and untracked files, nothing of A's later, unsnapshotted work.
#[test]
fn a_shared_snapshot_recreates_the_worktree_on_another_host() {
    if git(Path::new("."), &["--version"]).is_none() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let fx = Fixture::new();
    let s = session();
    let a = fx.wts.create(s, "main").unwrap();
    write(
        &a.path.join("src/lib.rs"),
        "pub fn one() -> u32 {\n    2\n}\n",
    );
    git(&a.path, &["add", "src/lib.rs"]).unwrap();
    git(
        &a.path,
        &[
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@x",
            "commit",
            "-qm",
            "agent commit",
        ],
    )
    .unwrap();
    let agent_commit = fx
        .workspace()
        .refname_to_id(&format!("refs/heads/worktrain/{s}"))
        .unwrap();
    write(&a.path.join("README.md"), "# demo, edited\n");
    write(&a.path.join("notes/new.txt"), "untracked\n");
    write(&a.path.join("debug.log"), "ignored\n");
    let snap = fx.wts.snapshot(s, "n1").unwrap();
    fx.wts.push_snapshot(s, "n1").unwrap();
    // Work after the snapshot is not carried over.
    write(&a.path.join("later.txt"), "after the step\n");

    let on_remote = fx
        .bare()
        .refname_to_id(&format!("refs/worktrain/{s}/n1"))
        .unwrap();
    assert_eq!(on_remote, snap);

    let host_b = fx.tmp.path().join("host-b");
    let repo_b = host_b.join("workspace");
    Repository::clone(fx.remote.to_str().unwrap(), &repo_b).unwrap();
    let wts_b = worktrain_git::Worktrees::new(crate::common::Fixture::config(
        &repo_b,
        &host_b.join("home"),
    ))
    .unwrap();
    assert_eq!(wts_b.snapshot_of(s, "n1").unwrap(), None);
    wts_b.fetch_snapshots(s).unwrap();
    assert_eq!(wts_b.snapshot_of(s, "n1").unwrap(), Some(snap));

    let (b, restored) = wts_b.adopt(s, snap).unwrap();
    assert_eq!(restored.snapshot, snap);
    assert_eq!(
        b.head, agent_commit,
        "the branch carries the agent's commit"
    );
    assert_eq!(
        Repository::open(&repo_b)
            .unwrap()
            .refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        agent_commit
    );
    assert_eq!(
        read(&b.path.join("src/lib.rs")),
        "pub fn one() -> u32 {\n    2\n}\n"
    );
    assert_eq!(read(&b.path.join("README.md")), "# demo, edited\n");
    assert_eq!(read(&b.path.join("notes/new.txt")), "untracked\n");
    assert!(!b.path.join("later.txt").exists());
    assert!(
        !b.path.join("debug.log").exists(),
        "ignored files are not shared"
    );
    // Locked in use, like any session worktree; a second adopt re-attaches.
    let (again, _) = wts_b.adopt(s, snap).unwrap();
    assert!(again.reattached);
    assert_eq!(read(&again.path.join("README.md")), "# demo, edited\n");
}

/// A local session branch with commits the snapshot lacks is never moved back.
#[test]
fn adopting_never_moves_a_session_branch_that_has_other_commits() {
    if git(Path::new("."), &["--version"]).is_none() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let fx = Fixture::new();
    let s = session();
    let a = fx.wts.create(s, "main").unwrap();
    write(&a.path.join("x.txt"), "x\n");
    let snap = fx.wts.snapshot(s, "n1").unwrap();
    fx.wts.push_snapshot(s, "n1").unwrap();

    let host_b = fx.tmp.path().join("host-b");
    let repo_b = host_b.join("workspace");
    Repository::clone(fx.remote.to_str().unwrap(), &repo_b).unwrap();
    let rb = Repository::open(&repo_b).unwrap();
    let main = rb.refname_to_id("refs/heads/main").unwrap();
    rb.reference(&format!("refs/heads/worktrain/{s}"), main, true, "t")
        .unwrap();
    let own = crate::common::commit_files(
        &rb,
        &format!("refs/heads/worktrain/{s}"),
        &[("mine.txt", Some("only here\n"))],
        "local work",
    );
    let wts_b = worktrain_git::Worktrees::new(crate::common::Fixture::config(
        &repo_b,
        &host_b.join("home"),
    ))
    .unwrap();
    wts_b.fetch_snapshots(s).unwrap();
    let err = wts_b.adopt(s, snap).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                what: "session branch",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        rb.refname_to_id(&format!("refs/heads/worktrain/{s}"))
            .unwrap(),
        own
    );
    assert!(!wts_b.path_for(s).exists());
}
