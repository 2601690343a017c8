//! The worktree tools and their confinement.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_agent::tools::{ToolEnv, Toolbox};
use worktrain_agent::{
    DenyReason, Input, PathGuard, Sandbox, SandboxPolicy, SandboxScope, ToolConfig, ToolErrorKind,
    ToolOutput, WorktreeGuard,
};

use crate::common::{worktree, write};

pub(crate) fn scope(root: &Path) -> Arc<SandboxScope> {
    Arc::new(
        Sandbox::new(SandboxPolicy::default())
            .scope(root, Some("ses_tools"))
            .expect("the sandbox is available (bubblewrap installed)"),
    )
}

fn env(root: &Path) -> ToolEnv {
    ToolEnv {
        guard: Arc::new(WorktreeGuard::new(root).unwrap()),
        scope: scope(root),
        timeout: Duration::from_secs(10),
    }
}

async fn call(root: &Path, name: &str, args: Value) -> ToolOutput {
    Toolbox::new(ToolConfig::default())
        .execute(name, &args, &env(root))
        .await
}

#[test]
fn confinement_rejects_escapes() {
    let dir = worktree();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "s3cret");
    write(dir.path(), "src/a.txt", "a");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        dir.path().join("link-out"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dir-out")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("src/a.txt"), dir.path().join("link-in")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("does-not-exist"),
        dir.path().join("dangling"),
    )
    .unwrap();
    let g = WorktreeGuard::new(dir.path()).unwrap();
    let deny = |r: Result<std::path::PathBuf, worktrain_agent::PathDenied>| r.unwrap_err().reason;

    assert_eq!(
        deny(g.resolve_read(Path::new("../x"))),
        DenyReason::ParentComponent
    );
    assert_eq!(
        deny(g.resolve_read(Path::new("src/../../x"))),
        DenyReason::ParentComponent
    );
    assert_eq!(
        deny(g.resolve_read(Path::new("/etc/passwd"))),
        DenyReason::OutsideWorktree
    );
    assert_eq!(
        deny(g.resolve_write(Path::new("/tmp/x"))),
        DenyReason::OutsideWorktree
    );
    assert_eq!(
        deny(g.resolve_read(Path::new("link-out"))),
        DenyReason::SymlinkEscape
    );
    assert_eq!(
        deny(g.resolve_write(Path::new("link-out"))),
        DenyReason::SymlinkEscape
    );
    assert_eq!(
        deny(g.resolve_write(Path::new("dir-out/new.txt"))),
        DenyReason::SymlinkEscape
    );
    assert_eq!(
        deny(g.resolve_write(Path::new("dangling"))),
        DenyReason::SymlinkEscape
    );
    assert_eq!(
        deny(g.resolve_write(Path::new(".git/config"))),
        DenyReason::GitDir
    );
    assert_eq!(
        deny(g.resolve_write(Path::new("./.git/hooks/pre-commit"))),
        DenyReason::GitDir
    );
    assert_eq!(
        deny(g.resolve_write(Path::new(".GIT/config"))),
        DenyReason::GitDir
    );
    assert_eq!(deny(g.resolve_write(Path::new(""))), DenyReason::Invalid);

    // Reads inside .git are refused too (its config may hold credentials).
    assert_eq!(
        deny(g.resolve_read(Path::new(".git/config"))),
        DenyReason::GitDir
    );

    // Allowed: paths inside (also through a `..` that stays inside), absolute paths
    // inside, symlinks inside, new files.
    let root = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        g.resolve_read(Path::new("src/../src/a.txt")).unwrap(),
        root.join("src/a.txt")
    );
    assert_eq!(
        g.resolve_read(&dir.path().join("src/a.txt")).unwrap(),
        root.join("src/a.txt")
    );
    assert_eq!(
        g.resolve_read(Path::new("link-in")).unwrap(),
        root.join("src/a.txt")
    );
    assert_eq!(
        g.resolve_write(Path::new("new/dir/f.txt")).unwrap(),
        root.join("new/dir/f.txt")
    );
    assert_eq!(
        g.resolve_write(Path::new("./src/a.txt")).unwrap(),
        root.join("src/a.txt")
    );
}

#[tokio::test]
async fn file_tools_go_through_the_guard() {
    let dir = worktree();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    for (name, args) in [
        (
            "write_file",
            json!({"path": "../escape.txt", "content": "x"}),
        ),
        (
            "write_file",
            json!({"path": "out/escape.txt", "content": "x"}),
        ),
        (
            "write_file",
            json!({"path": ".git/config", "content": "[core]\nhooksPath=/tmp\n"}),
        ),
        (
            "edit_file",
            json!({"path": ".git/config", "old_string": "[core]", "new_string": "x"}),
        ),
        ("read_file", json!({"path": "/etc/hostname"})),
        ("list_files", json!({"path": "out"})),
        ("search_files", json!({"pattern": "x", "path": "/"})),
    ] {
        let out = call(dir.path(), name, args.clone()).await;
        assert_eq!(
            out.error,
            Some(ToolErrorKind::Denied),
            "{name} {args}: {}",
            out.text
        );
        assert!(out.text.contains("access denied"), "{}", out.text);
    }
    assert!(!outside.path().join("escape.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".git/config")).unwrap(),
        "[core]\n"
    );
}

#[tokio::test]
async fn edit_requires_exactly_one_match() {
    let dir = worktree();
    write(dir.path(), "f.rs", "fn a() {}\nfn b() {}\n");
    let none = call(
        dir.path(),
        "edit_file",
        json!({"path": "f.rs", "old_string": "fn c", "new_string": "x"}),
    )
    .await;
    assert_eq!(none.error, Some(ToolErrorKind::NotFound), "{}", none.text);
    let many = call(
        dir.path(),
        "edit_file",
        json!({"path": "f.rs", "old_string": "fn ", "new_string": "pub fn "}),
    )
    .await;
    assert_eq!(many.error, Some(ToolErrorKind::Ambiguous));
    assert!(many.text.contains("2 times"));
    let one = call(
        dir.path(),
        "edit_file",
        json!({"path": "f.rs", "old_string": "fn b() {}", "new_string": "fn b() { 1 }"}),
    )
    .await;
    assert_eq!(one.error, None, "{}", one.text);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f.rs")).unwrap(),
        "fn a() {}\nfn b() { 1 }\n"
    );
    let empty = call(
        dir.path(),
        "edit_file",
        json!({"path": "f.rs", "old_string": "", "new_string": "x"}),
    )
    .await;
    assert_eq!(empty.error, Some(ToolErrorKind::InvalidArguments));
    let missing = call(
        dir.path(),
        "edit_file",
        json!({"path": "nope.rs", "old_string": "a", "new_string": "b"}),
    )
    .await;
    assert_eq!(missing.error, Some(ToolErrorKind::NotFound));
}

#[tokio::test]
async fn read_write_list_search() {
    let dir = worktree();
    let w = call(
        dir.path(),
        "write_file",
        json!({"path": "deep/new/file.txt", "content": "one\ntwo\nthree\n"}),
    )
    .await;
    assert_eq!(w.error, None, "{}", w.text);
    let r = call(
        dir.path(),
        "read_file",
        json!({"path": "deep/new/file.txt", "offset": 2, "limit": 1}),
    )
    .await;
    assert_eq!(r.text, "two\n");
    let r = call(
        dir.path(),
        "read_file",
        json!({"path": "deep/new/file.txt"}),
    )
    .await;
    assert_eq!(r.text, "one\ntwo\nthree\n");
    std::fs::write(dir.path().join("bin.dat"), [0u8, 1, 2, 3]).unwrap();
    let b = call(dir.path(), "read_file", json!({"path": "bin.dat"})).await;
    assert_eq!(b.error, Some(ToolErrorKind::InvalidArguments));
    assert!(b.text.contains("binary"));
    let bad = call(dir.path(), "read_file", json!({"file": "x"})).await;
    assert_eq!(bad.error, Some(ToolErrorKind::InvalidArguments));
    let notjson = call(dir.path(), "read_file", Value::String("{\"path\": ".into())).await;
    assert_eq!(notjson.error, Some(ToolErrorKind::InvalidArguments));

    let l = call(dir.path(), "list_files", json!({"recursive": true})).await;
    assert!(l.text.contains("deep/new/file.txt"), "{}", l.text);
    assert!(l.text.contains("deep/"), "{}", l.text);
    assert!(!l.text.contains(".git"), "{}", l.text);

    write(
        dir.path(),
        "src/main.rs",
        "fn main() {\n    println!(\"Hello\");\n}\n",
    );
    write(dir.path(), "node_modules/x.js", "Hello");
    let s = call(
        dir.path(),
        "search_files",
        json!({"pattern": "hel+o", "case_insensitive": true}),
    )
    .await;
    assert_eq!(
        s.text, "src/main.rs:2:     println!(\"Hello\");",
        "{}",
        s.text
    );
    let s = call(dir.path(), "search_files", json!({"pattern": "(unclosed"})).await;
    assert_eq!(s.error, Some(ToolErrorKind::InvalidArguments));
    for i in 0..30 {
        write(dir.path(), &format!("many/f{i:02}.txt"), "needle\nneedle\n");
    }
    let s = call(
        dir.path(),
        "search_files",
        json!({"pattern": "needle", "path": "many", "max_results": 5}),
    )
    .await;
    assert_eq!(s.text.lines().filter(|l| l.contains("needle")).count(), 5);
    assert!(s.text.contains("stopped after 5 matches"));
    let u = call(dir.path(), "no_such_tool", json!({})).await;
    assert_eq!(u.error, Some(ToolErrorKind::UnknownTool));
}

#[tokio::test]
async fn shell_captures_and_caps_output() {
    let dir = worktree();
    let cfg = ToolConfig {
        shell_output_cap: 1000,
        // Not a login shell: the machine's profile may print to stderr.
        shell: vec!["bash".into(), "-c".into()],
        ..ToolConfig::default()
    };
    let tb = Toolbox::new(cfg);
    let out = tb
        .execute(
            "shell",
            &json!({"command": "echo start; for i in $(seq 1 2000); do echo line-$i; done; echo oops >&2; exit 3"}),
            &env(dir.path()),
        )
        .await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.error, None);
    assert!(out.text.starts_with("[exit code 3"), "{}", &out.text[..100]);
    assert!(out.text.contains("start\n"));
    assert!(out.text.contains("line-2000"));
    assert!(out.text.contains("bytes truncated"));
    assert!(out.text.contains("stderr:\noops"));
    assert!(out.text.len() < 1400, "{}", out.text.len());

    // The shell runs in the worktree, with an allowlisted environment.
    let out = Toolbox::new(ToolConfig::default())
        .execute(
            "shell",
            &json!({"command": "pwd; echo home=${HOME:-unset} tmp=$TMPDIR session=$WORKTRAIN_SESSION_ID"}),
            &env(dir.path()),
        )
        .await;
    let root = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        out.text.contains(&root.display().to_string()),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("tmp=/tmp session=ses_tools"),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn shell_timeout_kills_the_whole_process_tree() {
    let dir = worktree();
    let sc = scope(dir.path());
    let run = sc
        .run(
            "bash",
            &[
                "-c".into(),
                "(sleep 2; echo leaked > leaked.txt) & (sleep 30; echo never) ; echo never".into(),
            ],
            &Default::default(),
            Input::Null,
            Duration::from_millis(1000),
            1000,
        )
        .await
        .unwrap();
    assert!(run.timed_out);
    assert!(!run.stdout.contains("never"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !dir.path().join("leaked.txt").exists(),
        "a background process outlived the timeout"
    );

    // The model's own timeout is capped by the session's.
    let out = Toolbox::new(ToolConfig::default())
        .execute(
            "shell",
            &json!({"command": "sleep 5", "timeout_secs": 3600}),
            &ToolEnv {
                guard: Arc::new(WorktreeGuard::new(dir.path()).unwrap()),
                scope: sc.clone(),
                timeout: Duration::from_millis(300),
            },
        )
        .await;
    assert_eq!(out.error, Some(ToolErrorKind::Timeout));
    assert!(out.text.contains("process group were killed"));
}

#[tokio::test]
async fn background_processes_do_not_outlive_a_normal_command() {
    let dir = worktree();
    let sc = scope(dir.path());
    let t0 = Instant::now();
    let run = sc
        .run(
            "bash",
            &[
                "-c".into(),
                "(sleep 2; echo leaked > leaked.txt) & setsid nohup bash -c 'sleep 2; echo leaked > detached.txt' >/dev/null 2>&1 & echo done".into(),
            ],
            &Default::default(),
            Input::Null,
            Duration::from_secs(10),
            1000,
        )
        .await
        .unwrap();
    assert_eq!(run.exit_code, Some(0));
    assert!(run.stdout.contains("done"));
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the pipe-holding sleeper blocked the call"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!dir.path().join("leaked.txt").exists());
    assert!(
        !dir.path().join("detached.txt").exists(),
        "a setsid nohup process outlived the command"
    );
}

#[tokio::test]
async fn file_tools_refuse_hard_links_to_outside_files() {
    let dir = worktree();
    // Same file system as the worktree, so the link can be made from outside the sandbox.
    let outside = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "original").unwrap();
    std::fs::hard_link(&victim, dir.path().join("link.txt")).unwrap();
    for (tool, args) in [
        (
            "write_file",
            json!({"path": "link.txt", "content": "changed"}),
        ),
        (
            "edit_file",
            json!({"path": "link.txt", "old_string": "original", "new_string": "changed"}),
        ),
        ("read_file", json!({"path": "link.txt"})),
    ] {
        let out = call(dir.path(), tool, args).await;
        assert_eq!(
            out.error,
            Some(ToolErrorKind::Denied),
            "{tool}: {}",
            out.text
        );
        assert!(out.text.contains("hard link"), "{}", out.text);
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    // The agent's own shell cannot make one: the worktree is its own mount in the sandbox.
    let out = call(
        dir.path(),
        "shell",
        json!({"command": format!("ln {} mine.txt; echo rc=$?", victim.display())}),
    )
    .await;
    assert!(out.text.contains("rc=1"), "{}", out.text);
    assert!(!dir.path().join("mine.txt").exists());
}

/// The agent's own shell makes symlinks (to a file and to a directory outside, and to
/// `.git`); the file tools refuse every way out: `..`, absolute paths, those symlinks,
/// and `.git` for reading and writing.
#[tokio::test]
async fn real_tools_refuse_escapes_the_agents_own_shell_prepares() {
    let dir = worktree();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/config"), "[credential]\n").unwrap();
    let out = call(
        dir.path(),
        "shell",
        json!({"command": "ln -s /etc/hostname file-out && ln -s /etc dir-out && ln -s .git g && ln -s /nowhere dangling && echo made"}),
    )
    .await;
    assert!(out.text.contains("made"), "{}", out.text);
    let denied = [
        ("read_file", json!({"path": "file-out"})),
        ("read_file", json!({"path": "dir-out/hostname"})),
        (
            "write_file",
            json!({"path": "dir-out/planted", "content": "x"}),
        ),
        ("write_file", json!({"path": "file-out", "content": "x"})),
        ("write_file", json!({"path": "dangling", "content": "x"})),
        (
            "edit_file",
            json!({"path": "file-out", "old_string": "a", "new_string": "b"}),
        ),
        ("read_file", json!({"path": "../outside.txt"})),
        (
            "write_file",
            json!({"path": "src/../../outside.txt", "content": "x"}),
        ),
        ("read_file", json!({"path": "/etc/hostname"})),
        (
            "write_file",
            json!({"path": "/tmp/planted.txt", "content": "x"}),
        ),
        ("read_file", json!({"path": ".git/config"})),
        (
            "write_file",
            json!({"path": ".git/hooks/post-checkout", "content": "#!/bin/sh"}),
        ),
        ("read_file", json!({"path": "g/config"})),
        ("write_file", json!({"path": "g/config", "content": "x"})),
        ("list_files", json!({"path": "dir-out"})),
        (
            "search_files",
            json!({"pattern": "root", "path": "dir-out"}),
        ),
    ];
    for (tool, args) in &denied {
        let out = call(dir.path(), tool, args.clone()).await;
        assert_eq!(
            out.error,
            Some(ToolErrorKind::Denied),
            "{tool} {args}: {}",
            out.text
        );
    }
    assert!(!Path::new("/etc/planted").exists());
    assert!(!Path::new("/tmp/planted.txt").exists());
    // Inside is fine, also by its absolute path.
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let out = call(
        dir.path(),
        "write_file",
        json!({"path": root.join("ok.txt").display().to_string(), "content": "fine"}),
    )
    .await;
    assert_eq!(out.error, None, "{}", out.text);
    assert_eq!(
        std::fs::read_to_string(root.join("ok.txt")).unwrap(),
        "fine"
    );
}

/// A directory swapped for a symlink to outside between the check and the open (a race
/// the agent's shell could run) is caught by the kernel: the open resolves beneath the
/// worktree.
#[test]
fn a_symlink_swapped_in_after_the_check_cannot_redirect_the_open() {
    let dir = worktree();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "s3cret").unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/secret.txt"), "mine").unwrap();
    let g = WorktreeGuard::new(dir.path()).unwrap();
    let read_path = g.resolve_read(Path::new("sub/secret.txt")).unwrap();
    let write_path = g.resolve_write(Path::new("sub/new.txt")).unwrap();
    // The swap.
    std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
    let e = g.open_read(&read_path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    let e = g.open_write(&write_path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(!outside.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "s3cret"
    );
}

/// `network: off` leaves the command only its own loopback; `on` shares the host's.
#[tokio::test]
async fn network_policy_off_and_on() {
    use worktrain_agent::NetworkPolicy;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = worktree();
    let probe = format!(
        "(echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached || echo unreachable"
    );
    for (network, expect) in [
        (NetworkPolicy::Off, "unreachable"),
        (NetworkPolicy::On, "reached"),
    ] {
        let scope = Sandbox::new(SandboxPolicy {
            network: network.clone(),
            ..SandboxPolicy::default()
        })
        .scope(dir.path(), None)
        .unwrap();
        let run = scope
            .run(
                "bash",
                &["-c".into(), probe.clone()],
                &Default::default(),
                Input::Null,
                Duration::from_secs(10),
                1000,
            )
            .await
            .unwrap();
        assert_eq!(run.stdout.trim(), expect, "{network:?}: {run:?}");
    }
    drop(listener);
}
