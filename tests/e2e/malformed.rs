//! Malformed input never panics and always gets an error that says what to fix.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{Env, advance_token, exit, long_workflow, session_id};

#[test]
fn bad_config_names_file_line_and_key() {
    let env = Env::initialised();
    let config = env.home().join("config.yaml");
    std::fs::write(
        &config,
        "store:\n  sqlite_path: worktrain.db\nlimits:\n  notes_bites: 3\n",
    )
    .unwrap();
    for args in [
        &["sessions"][..],
        &["init"],
        &[
            "session",
            "start",
            "--workflow",
            "quick-task",
            "--goal",
            "g",
        ],
    ] {
        let r = env.run(args);
        r.code(exit::INVALID);
        assert!(
            r.stderr.contains(&format!("{}:4:", config.display())),
            "names config.yaml:line: {r:?}"
        );
        assert!(r.stderr.contains("notes_bites"), "names the key: {r:?}");
    }
    let j = env.run_json(&["sessions"]);
    j.code(exit::INVALID);
    assert_eq!(j.error_code(), "invalid_input");

    // A wrongly typed value is reported too.
    std::fs::write(&config, "limits:\n  notes_bytes: lots\n").unwrap();
    let r = env.run(&["sessions"]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("config.yaml:2:") && r.stderr.contains("notes_bytes"),
        "{r:?}"
    );
    // YAML syntax errors as well.
    std::fs::write(&config, "limits: [unclosed\n").unwrap();
    let r = env.run(&["sessions"]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("config.yaml:"), "{r:?}");
}

#[test]
fn configured_limits_are_enforced() {
    let env = Env::initialised();
    std::fs::write(
        env.home().join("config.yaml"),
        "limits:\n  notes_bytes: 10\n",
    )
    .unwrap();
    let s = env.start("quick-task", "g");
    let r = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&s),
        "--notes",
        "far more than ten bytes",
    ]);
    r.code(exit::INVALID);
    assert_eq!(r.error_code(), "notes_too_large", "{r:?}");
}

#[test]
fn artifact_with_invalid_json_names_file_line_and_column() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let bad = env.write(
        "bad.json",
        "{\n  \"kind\": \"review_verdict\",\n  \"verdict\": clean\n}\n",
    );
    let r = env.run(&[
        "session",
        "advance",
        "--token",
        &advance_token(&s),
        "--notes",
        "n",
        "--artifact",
        bad.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains(&format!("{}:3:14", bad.display())),
        "{r:?}"
    );
    assert!(r.stderr.contains("invalid JSON"), "{r:?}");
    // Not an object: named as such.
    let scalar = env.write("scalar.json", "42");
    let r = env.run(&[
        "session",
        "advance",
        "--token",
        &advance_token(&s),
        "--notes",
        "n",
        "--artifact",
        scalar.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("scalar.json") && r.stderr.contains("JSON object"),
        "{r:?}"
    );
    // A missing artifact file is named.
    let r = env.run(&[
        "session",
        "advance",
        "--token",
        &advance_token(&s),
        "--notes",
        "n",
        "--artifact",
        "nope.json",
    ]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("nope.json"), "{r:?}");
    assert_eq!(env.events(&id).len(), 2, "rejected input records nothing");
}

#[test]
fn unknown_workflow_id_lists_known_workflows() {
    let env = Env::initialised();
    let r = env.run(&[
        "session",
        "start",
        "--workflow",
        "no-such-flow",
        "--goal",
        "g",
    ]);
    r.code(exit::NOT_FOUND);
    assert!(r.stderr.contains("no-such-flow"), "{r:?}");
    assert!(
        r.stderr.contains("known workflows") && r.stderr.contains("quick-task"),
        "{r:?}"
    );
    let j = env.run_json(&["workflow", "show", "no-such-flow"]);
    j.code(exit::NOT_FOUND);
    assert_eq!(j.error_code(), "workflow_not_found");
    assert!(
        j.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("quick-task")
    );
    let r = env.run(&["run", "no-such-flow", "--goal", "g"]);
    r.code(exit::NOT_FOUND);
    // An id that is not even a valid id.
    let r = env.run_json(&["session", "start", "--workflow", "Bad Id!", "--goal", "g"]);
    r.code(exit::NOT_FOUND);
    assert!(env.sessions(&[]).is_empty());
}

#[test]
fn garbage_session_ids_get_a_clear_error() {
    let env = Env::initialised();
    for garbage in [
        "ses_",
        "ses_garbage",
        "ses_!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "ses_zzzzzzzzzzzzzzzzzzzzzzzzzz",
    ] {
        for cmd in [
            &["session", "show"][..],
            &["session", "log"],
            &["session", "verify"],
            &["session", "rehydrate"],
        ] {
            let mut args = cmd.to_vec();
            args.push(garbage);
            let r = env.run(&args);
            r.no_panic();
            assert_eq!(r.code, exit::INVALID, "{r:?}");
            assert!(
                r.stderr.contains("not a session id") && r.stderr.contains(garbage),
                "the error must say `{garbage}` is not a session id: {r:?}"
            );
        }
    }
    // A well-formed id that does not exist: not found.
    let r = env.run_json(&["session", "show", "ses_01aaaaaaaaaaaaaaaaaaaaaaaa"]);
    r.code(exit::NOT_FOUND);
    assert_eq!(r.error_code(), "session_not_found");
    assert!(r.stdout.contains("ses_01aaaaaaaaaaaaaaaaaaaaaaaa"), "{r:?}");
    // Garbage that is not an id is treated as a token and rejected as such.
    let r = env.run_json(&["session", "show", "hello"]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_malformed");
}

#[test]
fn assorted_garbage_never_panics() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let t = advance_token(&s);
    let id = session_id(&s);
    let long = "x".repeat(100_000);
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (
            vec!["session", "advance", "--token", "", "--notes", "n"],
            exit::TOKEN,
        ),
        (
            vec!["session", "advance", "--token", "wt1..", "--notes", "n"],
            exit::TOKEN,
        ),
        (
            vec![
                "session",
                "advance",
                "--token",
                "wt1.ÿÿÿ.ÿÿÿ",
                "--notes",
                "n",
            ],
            exit::TOKEN,
        ),
        (
            vec!["session", "advance", "--token", &long, "--notes", "n"],
            exit::TOKEN,
        ),
        (
            vec![
                "session", "advance", "--token", &t, "--notes", "n", "--set", "novalue",
            ],
            exit::INVALID,
        ),
        (
            vec![
                "session", "advance", "--token", &t, "--notes", "n", "--set", "=1",
            ],
            exit::INVALID,
        ),
        (
            vec![
                "session",
                "start",
                "--workflow",
                "quick-task",
                "--goal",
                "g",
                "--context",
                "x",
            ],
            exit::INVALID,
        ),
        (vec!["session", "rewind", &id, "--to", "n0"], exit::INVALID),
        (
            vec!["session", "rewind", &id, "--to", "n4294967296"],
            exit::INVALID,
        ),
        (vec!["session", "log", &id, "--after", "-1"], 2),
        (vec!["sessions", "--limit", "nope"], 2),
        (vec!["sessions", "--workflow", "Not/An Id"], exit::INVALID),
        (vec!["session", "frobnicate"], 2),
        (vec!["workflow", "show", ""], exit::NOT_FOUND),
    ];
    for (args, expected) in cases {
        let r = env.run(&args);
        r.no_panic();
        assert_eq!(r.code, expected, "{r:?}");
        if expected != 2 {
            assert!(
                r.stderr.starts_with("error["),
                "errors follow `error[code]: message`: {r:?}"
            );
        }
    }
    let r = env.run(&["workflow", "validate", "/nonexistent/x.yaml"]);
    r.code(exit::INVALID);
    assert!(
        r.stdout.contains("FAIL") && r.stdout.contains("/nonexistent/x.yaml"),
        "{r:?}"
    );
    // A corrupted keyring is an error, not a panic.
    std::fs::write(env.home().join("keyring.json"), "{ broken").unwrap();
    let r = env.run(&["sessions"]);
    r.no_panic();
    assert_eq!(r.code, exit::FAILURE, "{r:?}");
    assert!(r.stderr.contains("keyring.json"), "{r:?}");
}

#[test]
fn closed_stdout_pipe_does_not_panic() {
    let env = Env::initialised();
    let (wf, notes) = long_workflow(&env, "pipe", 120);
    let run = env.run(&[
        "--json",
        "run",
        wf.to_str().unwrap(),
        "--goal",
        "g",
        "--notes-from",
        notes.to_str().unwrap(),
    ]);
    run.code(exit::OK);
    let id = session_id(&run.json_lines()[0]);
    let home = env.home().to_str().unwrap().to_owned();
    let bin = crate::support::BIN;
    let commands = [
        format!("'{bin}' --home '{home}' session log {id}"),
        format!("'{bin}' --home '{home}' --json session log {id}"),
        format!("'{bin}' --home '{home}' workflow schema"),
        format!("'{bin}' --home '{home}' workflow show '{}'", wf.display()),
        format!("'{bin}' --home '{home}' session rehydrate {id}"),
        format!("'{bin}' --home '{home}' sessions"),
        format!(
            "'{bin}' --home '{home}' run '{}' --goal g --notes-from '{}'",
            wf.display(),
            notes.display()
        ),
    ];
    for c in &commands {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{c} | head -1"))
            .current_dir(env.dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "`{c} | head -1` panicked: {stderr}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "{c}"
        );
    }
    // Deterministically: read one line of a large output, then close the pipe.
    let mut child = env
        .cmd(&["session", "log", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("session_started"), "{first}");
    // The reader is dropped here, closing the pipe while the binary is still writing.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn validating_special_files_answers_at_once() {
    let env = Env::initialised();
    let fifo = env.dir().join("pipe.yaml");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    for path in ["/dev/zero", "/dev/urandom", fifo.to_str().unwrap()] {
        let t = std::time::Instant::now();
        let r = env.run_json(&["workflow", "validate", path]);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{path} took {:?}",
            t.elapsed()
        );
        assert_ne!(r.code, 0, "{path}: {r:?}");
        assert!(
            r.stdout.contains("not a regular file") || r.stderr.contains("not a regular file"),
            "{path}: {r:?}"
        );
    }
}
