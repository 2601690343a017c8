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
        r.stdout
            .contains(&format!("worktrain session rehydrate {id}")),
        "{r:?}"
    );
    assert_eq!(kinds(&env.events(id)), ["session_started", "node_entered"]);
}
