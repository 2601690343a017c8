//! Agent file paths cannot escape the worktree or touch `.git` (`confine::Confined`).

use std::fs;
use std::path::{Path, PathBuf};

use worktrain_agent::confine::{Confined, Escape};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A worktree root plus an "outside" directory next to it.
struct Jail {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    confined: Confined,
}

fn jail() -> Jail {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("wt");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("src/deep")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    write(&root.join("src/lib.rs"), "lib\n");
    write(&outside.join("secret.txt"), "secret\n");
    write(&root.join(".git"), "gitdir: /somewhere/.git/worktrees/x\n");
    let confined = Confined::new(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let outside = outside.canonicalize().unwrap();
    Jail {
        _tmp: tmp,
        root,
        outside,
        confined,
    }
}

#[test]
fn ordinary_paths_resolve_inside() {
    let j = jail();
    let c = &j.confined;
    assert_eq!(c.resolve("src/lib.rs").unwrap(), j.root.join("src/lib.rs"));
    assert_eq!(
        c.resolve("./src/./lib.rs").unwrap(),
        j.root.join("src/lib.rs")
    );
    assert_eq!(
        c.resolve("new/dir/file.txt").unwrap(),
        j.root.join("new/dir/file.txt")
    );
    assert_eq!(
        c.resolve("src/deep/../lib.rs").unwrap(),
        j.root.join("src/lib.rs")
    );
    assert_eq!(c.resolve("").unwrap(), j.root);
    assert_eq!(c.resolve(".").unwrap(), j.root);
    assert_eq!(
        c.resolve(j.root.join("src/lib.rs")).unwrap(),
        j.root.join("src/lib.rs")
    );
    // Names that merely start with `.git` are fine.
    assert_eq!(c.resolve(".gitignore").unwrap(), j.root.join(".gitignore"));
    assert_eq!(
        c.resolve(".github/workflows/ci.yml").unwrap(),
        j.root.join(".github/workflows/ci.yml")
    );
    assert_eq!(c.root(), j.root);
}

#[test]
fn dot_dot_escapes_are_rejected() {
    let j = jail();
    let c = &j.confined;
    for p in [
        "..",
        "../outside/secret.txt",
        "src/../../outside",
        "src/deep/../../..",
        "a/b/../../../x",
    ] {
        assert!(matches!(c.resolve(p), Err(Escape::DotDot { .. })), "{p}");
    }
}

#[test]
fn absolute_paths_outside_are_rejected() {
    let j = jail();
    let c = &j.confined;
    for p in [
        PathBuf::from("/etc/passwd"),
        j.outside.join("secret.txt"),
        PathBuf::from("/"),
        j.root.parent().unwrap().to_path_buf(),
        // A sibling sharing the root's name as a string prefix.
        PathBuf::from(format!("{}-evil/x", j.root.display())),
        j.root.join("../outside/secret.txt"),
    ] {
        assert!(
            matches!(c.resolve(&p), Err(Escape::Outside { .. })),
            "{}",
            p.display()
        );
    }
    // Going out and back in lexically is inside.
    let back_in = j.root.join("../wt/src/lib.rs");
    assert_eq!(c.resolve(back_in).unwrap(), j.root.join("src/lib.rs"));
}

#[cfg(unix)]
#[test]
fn symlinks_that_lead_outside_are_rejected() {
    use std::os::unix::fs::symlink;
    let j = jail();
    let c = &j.confined;
    symlink(&j.outside, j.root.join("out-dir")).unwrap();
    symlink(j.outside.join("secret.txt"), j.root.join("out-file")).unwrap();
    symlink("../../outside/secret.txt", j.root.join("src/relative-out")).unwrap();
    symlink("/", j.root.join("slash")).unwrap();
    // A chain: inside link → inside link → outside.
    symlink("out-dir", j.root.join("hop1")).unwrap();
    symlink("hop1", j.root.join("hop2")).unwrap();
    // A directory symlink pointing at an ancestor of the root.
    symlink("..", j.root.join("up")).unwrap();
    for p in [
        "out-dir",
        "out-dir/secret.txt",
        "out-dir/new-file.txt",
        "out-file",
        "src/relative-out",
        "slash/etc/passwd",
        "hop2/secret.txt",
        "up/outside/secret.txt",
        "up",
    ] {
        match c.resolve(p) {
            Err(Escape::Symlink { target, .. }) => {
                assert!(!target.starts_with(&j.root), "{p}: {}", target.display())
            }
            other => panic!("{p}: expected Symlink escape, got {other:?}"),
        }
    }
    // Lexical `..` after a symlink does not follow the link's parent.
    assert_eq!(
        c.resolve("out-dir/../src/lib.rs").unwrap(),
        j.root.join("src/lib.rs")
    );
}

#[cfg(unix)]
#[test]
fn symlinks_inside_resolve_to_their_target() {
    use std::os::unix::fs::symlink;
    let j = jail();
    let c = &j.confined;
    symlink("src", j.root.join("code")).unwrap();
    symlink("lib.rs", j.root.join("src/alias.rs")).unwrap();
    symlink(j.root.join("src/deep"), j.root.join("abs-inside")).unwrap();
    assert_eq!(c.resolve("code/lib.rs").unwrap(), j.root.join("src/lib.rs"));
    assert_eq!(
        c.resolve("src/alias.rs").unwrap(),
        j.root.join("src/lib.rs")
    );
    assert_eq!(c.resolve("code/new.rs").unwrap(), j.root.join("src/new.rs"));
    assert_eq!(
        c.resolve("abs-inside/x/y").unwrap(),
        j.root.join("src/deep/x/y")
    );
}

#[cfg(unix)]
#[test]
fn dangling_and_looping_symlinks_are_rejected() {
    use std::os::unix::fs::symlink;
    let j = jail();
    let c = &j.confined;
    // Writing through a dangling link would create its target, wherever that is.
    symlink(j.outside.join("not-yet"), j.root.join("dangling-out")).unwrap();
    symlink("missing-inside", j.root.join("dangling-in")).unwrap();
    symlink("loop-b", j.root.join("loop-a")).unwrap();
    symlink("loop-a", j.root.join("loop-b")).unwrap();
    assert!(matches!(
        c.resolve("dangling-out"),
        Err(Escape::DanglingSymlink { .. })
    ));
    assert!(matches!(
        c.resolve("dangling-in"),
        Err(Escape::DanglingSymlink { .. })
    ));
    assert!(!j.outside.join("not-yet").exists());
    assert!(matches!(
        c.resolve("loop-a/x"),
        Err(Escape::Io { .. } | Escape::DanglingSymlink { .. })
    ));
}

#[test]
fn anything_inside_dot_git_is_rejected() {
    let j = jail();
    let c = &j.confined;
    for p in [
        ".git",
        ".git/config",
        ".git/hooks/pre-commit",
        "sub/.git/config",
        ".GIT/config",
        ".Git",
        ".git./config",
        "git~1/config",
        "src/../.git",
        "./.git",
    ] {
        assert!(matches!(c.resolve(p), Err(Escape::GitDir { .. })), "{p}");
    }
    assert!(matches!(
        c.resolve(j.root.join(".git")),
        Err(Escape::GitDir { .. })
    ));
}

#[cfg(unix)]
#[test]
fn symlinks_into_dot_git_are_rejected() {
    use std::os::unix::fs::symlink;
    let j = jail();
    let c = &j.confined;
    fs::create_dir_all(j.root.join("vendor/.git")).unwrap();
    symlink(".git", j.root.join("innocent")).unwrap();
    symlink("vendor/.git", j.root.join("also-innocent")).unwrap();
    assert!(matches!(c.resolve("innocent"), Err(Escape::GitDir { .. })));
    assert!(matches!(
        c.resolve("also-innocent/config"),
        Err(Escape::GitDir { .. })
    ));
}

#[cfg(unix)]
#[test]
fn nul_bytes_are_rejected() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let j = jail();
    let p = Path::new(OsStr::from_bytes(b"src/lib.rs\0/../../etc"));
    assert!(matches!(j.confined.resolve(p), Err(Escape::Invalid { .. })));
}

#[cfg(unix)]
#[test]
fn a_root_reached_through_a_symlink_still_confines() {
    use std::os::unix::fs::symlink;
    let j = jail();
    let alias = j.root.parent().unwrap().join("alias");
    symlink(&j.root, &alias).unwrap();
    let c = Confined::new(&alias).unwrap();
    assert_eq!(c.root(), j.root);
    assert_eq!(c.resolve("src/lib.rs").unwrap(), j.root.join("src/lib.rs"));
    // Absolute paths may be written through the alias or canonically.
    assert_eq!(
        c.resolve(alias.join("src/lib.rs")).unwrap(),
        j.root.join("src/lib.rs")
    );
    assert_eq!(
        c.resolve(j.root.join("src/lib.rs")).unwrap(),
        j.root.join("src/lib.rs")
    );
    assert!(matches!(
        c.resolve("../outside"),
        Err(Escape::DotDot { .. })
    ));
}

#[test]
fn confines_a_real_session_worktree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo.join("README.md"), "hi\n");
    git(&repo, &["add", "."]);
    git(
        &repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    let wt = tmp.path().join("wt");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "worktrain/s",
            wt.to_str().unwrap(),
        ],
    );
    let c = Confined::new(&wt).unwrap();
    assert!(c.resolve("README.md").unwrap().exists());
    // The worktree's `.git` is a file pointing into the main repository.
    assert!(wt.join(".git").is_file());
    assert!(matches!(c.resolve(".git"), Err(Escape::GitDir { .. })));
    assert!(matches!(c.resolve("../"), Err(Escape::DotDot { .. })));
    assert!(matches!(
        c.resolve(repo.join("README.md")),
        Err(Escape::Outside { .. })
    ));
}
