//! `worktrain run`: walking a workflow from a notes directory or from stdin.

use crate::support::{Env, exit, kinds};

fn notes_dir(env: &Env) -> std::path::PathBuf {
    env.write("notes/do-it.md", "changed src/lib.rs\n");
    env.write("notes/verify.md", "cargo test: ok\n");
    env.dir().join("notes")
}

#[test]
fn run_with_notes_from_on_fresh_home_completes() {
    let env = Env::new();
    let notes = notes_dir(&env);
    let r = env.run(&[
        "run",
        "quick-task",
        "--goal",
        "rename foo",
        "--notes-from",
        notes.to_str().unwrap(),
    ]);
    r.code(exit::OK);
    assert!(r.stdout.contains("Workflow complete"), "{r:?}");
    assert!(
        env.home().join("keyring.json").is_file(),
        "run initialises the home on first use"
    );

    let sessions = env.sessions(&[]);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let s = &sessions[0];
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["steps_completed"], 2, "{s}");
    assert_eq!(s["goal"], "rename foo");
    let id = s["session_id"].as_str().unwrap();
    env.verify_ok(id);

    let events = env.events(id);
    assert_eq!(
        kinds(&events),
        [
            "session_started",
            "node_entered",
            "step_completed",
            "node_entered",
            "step_completed",
            "session_completed"
        ]
    );
    assert_eq!(events[2]["body"]["notes"], "changed src/lib.rs\n");
    assert_eq!(events[4]["body"]["notes"], "cargo test: ok\n");
}

#[test]
fn run_with_notes_from_applies_step_extras() {
    let env = Env::initialised();
    let notes = notes_dir(&env);
    env.write(
        "notes/do-it.json",
        r#"{"context": {"touched": ["src/lib.rs"]}}"#,
    );
    let r = env.run(&[
        "--json",
        "run",
        "quick-task",
        "--goal",
        "g",
        "--notes-from",
        notes.to_str().unwrap(),
    ]);
    r.code(exit::OK);
    let docs = r.json_lines();
    assert_eq!(docs.last().unwrap()["outcome"], "complete", "{r:?}");
    let id = docs[0]["session_id"].as_str().unwrap();
    let show = env.show(id);
    assert_eq!(
        show["session"]["context"]["touched"],
        serde_json::json!(["src/lib.rs"]),
        "{show}"
    );
}

#[test]
fn run_with_missing_notes_file_names_the_expected_file() {
    let env = Env::initialised();
    env.write("notes/do-it.md", "did it\n");
    let notes = env.dir().join("notes");
    let r = env.run(&[
        "run",
        "quick-task",
        "--goal",
        "g",
        "--notes-from",
        notes.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    let expected = notes.join("verify.md");
    assert!(
        r.stderr.contains(&expected.display().to_string()),
        "the error must name {}: {r:?}",
        expected.display()
    );
    assert!(r.stderr.contains("error[invalid_input]"), "{r:?}");
    // The first step was recorded; the session waits at `verify`.
    let sessions = env.sessions(&[]);
    assert_eq!(sessions[0]["status"], "in_progress");
    assert_eq!(sessions[0]["current"]["step_id"], "verify");
}

#[test]
fn run_with_invalid_extras_json_names_file_line_and_column() {
    let env = Env::initialised();
    let notes = notes_dir(&env);
    let extras = env.write("notes/do-it.json", "{\n  \"context\": {\"a\": 1},,\n}\n");
    let r = env.run(&[
        "run",
        "quick-task",
        "--goal",
        "g",
        "--notes-from",
        notes.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains(&format!("{}:2:", extras.display())),
        "{r:?}"
    );
}

#[test]
fn run_reads_notes_from_stdin() {
    let env = Env::new();
    let r = env.run_stdin(
        &["run", "quick-task", "--goal", "g"],
        Some(b"notes one\n.\nnotes two\n.\n"),
    );
    r.code(exit::OK);
    assert!(r.stdout.contains("Workflow complete"), "{r:?}");
    let sessions = env.sessions(&["--status", "complete"]);
    assert_eq!(sessions.len(), 1, "{r:?}");
    let id = sessions[0]["session_id"].as_str().unwrap();
    let notes: Vec<String> = env
        .events(id)
        .iter()
        .filter(|e| e["body"]["type"] == "step_completed")
        .map(|e| e["body"]["notes"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notes, ["notes one\n", "notes two\n"]);
    env.verify_ok(id);
}

#[test]
fn run_with_closed_stdin_pauses() {
    let env = Env::new();
    let r = env.run(&["run", "quick-task", "--goal", "g"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("paused"), "{r:?}");
    let sessions = env.sessions(&[]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["status"], "in_progress");
    assert_eq!(sessions[0]["current"]["step_id"], "do-it");
    let id = sessions[0]["session_id"].as_str().unwrap();
    assert!(
        r.stdout.contains(&format!("worktrain run --resume {id}")),
        "{r:?}"
    );
    assert_eq!(kinds(&env.events(id)), ["session_started", "node_entered"]);
}

/// A paused run continues with `run --resume`, and `run` never tells its user to handle
/// step tokens (it holds them).
#[test]
fn a_paused_run_continues_with_resume() {
    let env = Env::new();
    let r = env.run_stdin(
        &["run", "quick-task", "--goal", "g"],
        Some(b"notes one\n.\n"),
    );
    r.code(exit::OK);
    let id = env.sessions(&[])[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        r.stdout.contains(&format!("worktrain run --resume {id}")),
        "{r:?}"
    );
    for shown in [&r.stdout, &r.stderr] {
        assert!(
            !shown.contains("wt1.") && !shown.contains("advance token"),
            "run holds the tokens itself: {r:?}"
        );
    }
    let r = env.run_stdin(&["run", "--resume", &id], Some(b"notes two\n.\n"));
    r.code(exit::OK);
    assert!(r.stdout.contains("Workflow complete"), "{r:?}");
    assert_eq!(env.sessions(&["--status", "complete"]).len(), 1);
    let r = env.run(&["run", "--resume", "ses_nonexistent", "--goal", "x"]);
    assert_ne!(r.code, exit::OK, "{r:?}");
}

/// An editor that returns at once without notes (`EDITOR=true`) must not spin: the run
/// asks, opens it again on Enter, and pauses after three empty rounds — nothing is
/// submitted, nothing is recorded.
#[test]
fn an_editor_that_returns_without_notes_is_asked_about_then_paused() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) is needed to give the run a terminal");
    }
    let env = Env::new();
    // `script` runs the command on a pseudo-terminal, so `run` uses $EDITOR; its stdin
    // answers the two "edit again?" questions.
    let command = format!(
        "{} --home {} run quick-task --goal g",
        crate::support::BIN,
        env.home().display()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qefc", &command, "/dev/null"])
        .current_dir(env.dir())
        .env("EDITOR", "true")
        .env_remove("VISUAL")
        .env_remove("WORKTRAIN_HOME")
        .env("HOME", env.dir())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"\n\n").unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the run kept going");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("No notes were written")
            && stdout.contains("returned 3 times without notes"),
        "{stdout}"
    );
    let id = env.sessions(&[])[0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        kinds(&env.events(&id)),
        ["session_started", "node_entered"],
        "nothing was submitted"
    );
}

/// A relative `--workspace` that does not exist is refused up front with "does not exist"
/// (not sent on, not reported as something else).
#[test]
fn a_missing_relative_workspace_is_said_to_not_exist() {
    let env = Env::new();
    for args in [
        vec![
            "run",
            "quick-task",
            "--goal",
            "g",
            "--workspace",
            "no-such-dir",
        ],
        vec![
            "--daemon",
            "http://127.0.0.1:9",
            "spawn",
            "--workflow",
            "quick-task",
            "--goal",
            "g",
            "--workspace",
            "no-such-dir",
        ],
    ] {
        let r = env.run(&args);
        r.code(exit::INVALID);
        assert!(
            r.stderr
                .contains("--workspace `no-such-dir` does not exist (relative to "),
            "{r:?}"
        );
    }
}
