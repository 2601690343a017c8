//! Driving one session: start, advance, context changes, artifacts, blocking, replay,
//! conflicts, token tampering, checkpoints, rehydrate, rewind, logs and listing.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    CONTRACT_WORKFLOW, Env, advance_token, exit, kinds, session_id, wait_timeout,
};

#[test]
fn start_then_advance_reaches_the_next_step() {
    let env = Env::initialised();
    let s = env.start("quick-task", "rename foo to bar");
    assert_eq!(s["step"]["id"], "do-it");
    assert!(
        s["step"]["prompt"]
            .as_str()
            .unwrap()
            .contains("rename foo to bar"),
        "goal is rendered: {s}"
    );
    let t = advance_token(&s);
    assert!(t.starts_with("wt1."), "{t}");
    for kind in ["checkpoint", "resume"] {
        let tok = s["tokens"][kind].as_str().unwrap();
        assert!(tok.len() <= 100, "{kind} token too long: {tok}");
    }

    let notes = env.write("notes.md", "renamed in src/lib.rs\n");
    let next = env.ok_json(&[
        "session",
        "advance",
        "--token",
        &t,
        "--notes-file",
        notes.to_str().unwrap(),
    ]);
    assert_eq!(next["outcome"], "advanced", "{next}");
    assert_eq!(next["step"]["id"], "verify");
    assert_eq!(next["progress"]["completed"], 1);
    assert_ne!(advance_token(&next), t, "every step gets a fresh token");

    let id = session_id(&s);
    let events = env.events(&id);
    let done = events
        .iter()
        .find(|e| e["body"]["type"] == "step_completed")
        .unwrap();
    assert_eq!(done["body"]["notes"], "renamed in src/lib.rs\n");

    // Notes from stdin (`--notes-file -`) complete the session.
    let last = env.run_stdin(
        &[
            "--json",
            "session",
            "advance",
            "--token",
            &advance_token(&next),
            "--notes-file",
            "-",
        ],
        Some(b"verified with cargo test\n"),
    );
    last.code(exit::OK);
    let last = last.json();
    assert_eq!(last["outcome"], "complete", "{last}");
    assert!(
        last["tokens"].get("advance").is_none_or(Value::is_null),
        "no advance token after completion: {last}"
    );
    let show = env.show(&id);
    assert_eq!(show["session"]["status"], "complete");
    assert_eq!(show["session"]["steps_completed"], 2);
    env.verify_ok(&id);

    // A completed session cannot advance any more.
    let again = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&next),
        "--notes",
        "other",
    ]);
    again.code(exit::TOKEN);
}

#[test]
fn set_changes_context_and_null_deletes_it() {
    let env = Env::initialised();
    let s = env.ok_json(&[
        "session",
        "start",
        "--workflow",
        "quick-task",
        "--goal",
        "g",
        "--context",
        "ticket=42",
    ]);
    let id = session_id(&s);
    assert_eq!(env.show(&id)["session"]["context"], json!({"ticket": 42}));

    let next = env.ok_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&s),
        "--notes",
        "n",
        "--set",
        "branch=feature/x",
        "--set",
        r#"files=["a.rs","b.rs"]"#,
        "--set",
        "ticket=null",
    ]);
    let ctx = env.show(&id)["session"]["context"].clone();
    assert_eq!(
        ctx,
        json!({"branch": "feature/x", "files": ["a.rs", "b.rs"]}),
        "ticket deleted, others set"
    );

    env.ok_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&next),
        "--notes",
        "n",
        "--set",
        "branch=null",
    ]);
    let ctx = env.show(&id)["session"]["context"].clone();
    assert_eq!(ctx, json!({"files": ["a.rs", "b.rs"]}));
}

#[test]
fn artifact_satisfies_an_output_contract_and_missing_one_blocks() {
    let env = Env::initialised();
    let wf = env.write("contract.yaml", CONTRACT_WORKFLOW);
    let s = env.start(wf.to_str().unwrap(), "review it");
    let id = session_id(&s);
    let review = env.advance(&advance_token(&s), "planned");
    assert_eq!(review["step"]["id"], "review");
    assert_eq!(
        review["step"]["output_contract"]["contract"], "review_verdict",
        "{review}"
    );

    // No artifact: blocked, exit 5, with an actionable blocker and a new attempt.
    let blocked = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&review),
        "--notes",
        "looked",
    ]);
    blocked.code(exit::BLOCKED);
    let b = blocked.json();
    assert_eq!(b["outcome"], "blocked");
    assert_eq!(b["blockers"][0]["code"], "artifact_missing", "{b}");
    assert_eq!(b["step"]["attempt"], 2);
    let human = env.run(&["session", "show", &id]);
    assert!(human.stdout.contains("1 blocked"), "{human:?}");

    // An artifact that violates the contract: blocked again, naming the field.
    let wrong = env.write(
        "wrong.json",
        r#"{"kind": "review_verdict", "verdict": "great", "findings": []}"#,
    );
    let blocked2 = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&b),
        "--notes",
        "looked",
        "--artifact",
        wrong.to_str().unwrap(),
    ]);
    blocked2.code(exit::BLOCKED);
    let b2 = blocked2.json();
    assert!(b2["blockers"].to_string().contains("verdict"), "{b2}");

    // A valid artifact advances.
    let art = env.write(
        "verdict.json",
        r#"{"kind": "review_verdict", "verdict": "clean", "findings": []}"#,
    );
    let ok = env.ok_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&b2),
        "--notes",
        "clean",
        "--artifact",
        art.to_str().unwrap(),
    ]);
    assert_eq!(ok["outcome"], "advanced", "{ok}");
    assert_eq!(ok["step"]["id"], "wrap-up");
    let events = env.events(&id);
    let done = events
        .iter()
        .filter(|e| e["body"]["type"] == "step_completed")
        .nth(1)
        .expect("review completed");
    assert_eq!(
        done["body"]["artifacts"].as_array().map(Vec::len),
        Some(1),
        "{done}"
    );
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| **k == "step_blocked")
            .count(),
        2
    );
    let show = env.show(&id);
    assert_eq!(show["session"]["blocked_attempts"], 2);
}

#[test]
fn blocked_advance_exits_5_in_human_mode_too() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let r = env.run(&["session", "advance", "--token", &advance_token(&s)]);
    r.code(exit::BLOCKED);
    assert!(
        r.stdout.contains("BLOCKED") && r.stdout.contains("notes_required"),
        "{r:?}"
    );
}

#[test]
fn replay_prints_identical_bytes_and_writes_nothing() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let t = advance_token(&s);
    let args = [
        "--json",
        "session",
        "advance",
        "--token",
        &t,
        "--notes",
        "same notes",
        "--set",
        "k=1",
    ];
    let first = env.run(&args);
    first.code(exit::OK);
    let count = env.events(&id).len();
    for _ in 0..2 {
        let again = env.run(&args);
        again.code(exit::OK);
        assert_eq!(
            again.raw, first.raw,
            "a replay must print the recorded response byte for byte"
        );
        assert_eq!(
            env.events(&id).len(),
            count,
            "a replay must not append events"
        );
    }
    // The human rendering says it was a replay.
    let human = env.run(&args[1..]);
    human.code(exit::OK);
    assert!(human.stdout.contains("replayed"), "{human:?}");
    // A blocked response replays too (exit 5 both times, same bytes).
    let next = first.json();
    let blocked_args = [
        "--json",
        "session",
        "advance",
        "--token",
        &advance_token(&next),
    ];
    let b1 = env.run(&blocked_args);
    b1.code(exit::BLOCKED);
    let n = env.events(&id).len();
    let b2 = env.run(&blocked_args);
    b2.code(exit::BLOCKED);
    assert_eq!(b1.raw, b2.raw);
    assert_eq!(env.events(&id).len(), n);
}

#[test]
fn conflicting_output_for_a_used_token_is_rejected() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let t = advance_token(&s);
    env.advance(&t, "first");
    let count = env.events(&id).len();
    let r = env.run_json(&["session", "advance", "--token", &t, "--notes", "second"]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_conflict");
    let e = r.json();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("verify"),
        "names the current step: {e}"
    );
    assert_eq!(e["error"]["retry"], "after_rehydrate");
    assert_eq!(env.events(&id).len(), count, "a conflict appends nothing");
    let human = env.run(&["session", "advance", "--token", &t, "--notes", "second"]);
    human.code(exit::TOKEN);
    assert!(
        human.stderr.contains("error[token_conflict]") && human.stderr.contains("hint:"),
        "{human:?}"
    );
}

/// Flip one base64url character of the token at `index`.
fn flip(token: &str, index: usize) -> String {
    let mut b = token.as_bytes().to_vec();
    b[index] = if b[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[test]
fn tampered_tokens_are_rejected_with_distinct_codes() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let t = advance_token(&s);
    let tag_start = t.rfind('.').unwrap() + 1;
    let payload_start = 4;
    for (what, bad) in [
        ("tag", flip(&t, tag_start)),
        ("payload", flip(&t, payload_start + 8)),
    ] {
        let r = env.run_json(&["session", "advance", "--token", &bad, "--notes", "x"]);
        r.code(exit::TOKEN);
        assert_eq!(
            r.error_code(),
            "token_bad_signature",
            "tampered {what}: {r:?}"
        );
    }
    let r = env.run_json(&[
        "session",
        "advance",
        "--token",
        "wt1.garbage",
        "--notes",
        "x",
    ]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_malformed");
    let r = env.run_json(&[
        "session",
        "advance",
        "--token",
        s["tokens"]["resume"].as_str().unwrap(),
        "--notes",
        "x",
    ]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_wrong_kind");
    // A token from another home (other keys) is not accepted either.
    let other = Env::initialised();
    let foreign = advance_token(&other.start("quick-task", "g"));
    let r = env.run_json(&["session", "advance", "--token", &foreign, "--notes", "x"]);
    r.code(exit::TOKEN);
    assert!(
        ["token_bad_signature", "token_unknown_key"].contains(&r.error_code().as_str()),
        "{r:?}"
    );
    assert_eq!(env.events(&id).len(), 2, "rejected tokens append nothing");
}

#[test]
fn checkpoint_records_progress_without_advancing() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let c = s["tokens"]["checkpoint"].as_str().unwrap().to_owned();
    let r = env.ok_json(&[
        "session",
        "checkpoint",
        "--token",
        &c,
        "--notes",
        "halfway there",
        "--set",
        "progress=50",
    ]);
    assert_eq!(r["outcome"], "checkpointed", "{r}");
    assert_eq!(r["step"]["id"], "do-it", "a checkpoint does not advance");
    let events = env.events(&id);
    assert_eq!(kinds(&events).last(), Some(&"checkpoint_recorded"));
    let show = env.show(&id);
    assert_eq!(show["session"]["checkpoints"], 1);
    assert_eq!(show["session"]["context"]["progress"], 50);
    // The same checkpoint again is recorded once.
    env.ok_json(&[
        "session",
        "checkpoint",
        "--token",
        &c,
        "--notes",
        "halfway there",
        "--set",
        "progress=50",
    ]);
    assert_eq!(env.events(&id).len(), events.len());
    // Artifacts belong to advances.
    let art = env.write("a.json", r#"{"kind": "assessment"}"#);
    let r = env.run_json(&[
        "session",
        "checkpoint",
        "--token",
        &c,
        "--notes",
        "x",
        "--artifact",
        art.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    // The original advance token still works after checkpoints.
    let next = env.advance(&advance_token(&s), "done");
    assert_eq!(next["step"]["id"], "verify");
}

#[test]
fn rehydrate_by_id_or_token_writes_nothing() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let next = env.advance(&advance_token(&s), "notes of step one");
    let before = env.events(&id).len();
    let by_id = env.ok_json(&["session", "rehydrate", &id]);
    assert_eq!(by_id["outcome"], "rehydrated", "{by_id}");
    assert_eq!(by_id["step"]["id"], "verify");
    assert_eq!(
        by_id["recap"][0]["notes"], "notes of step one",
        "recap carries earlier notes: {by_id}"
    );
    for token in [
        next["tokens"]["resume"].as_str().unwrap(),
        next["tokens"]["checkpoint"].as_str().unwrap(),
        s["tokens"]["resume"].as_str().unwrap(),
    ] {
        let by_token = env.ok_json(&["session", "rehydrate", token]);
        assert_eq!(by_token["session_id"], id.as_str());
        assert_eq!(by_token["step"]["id"], "verify");
    }
    let human = env.run(&["session", "rehydrate", &id]);
    human.code(exit::OK);
    assert!(human.stdout.contains("notes of step one"), "{human:?}");
    assert_eq!(
        env.events(&id).len(),
        before,
        "rehydrate must not write events"
    );
    // The rehydrated token advances.
    let done = env.advance(&advance_token(&by_id), "verified");
    assert_eq!(done["outcome"], "complete");
}

#[test]
fn rewind_starts_a_branch_and_abandons_the_current_node() {
    let env = Env::initialised();
    let wf = env.write("c.yaml", CONTRACT_WORKFLOW);
    let s = env.start(wf.to_str().unwrap(), "g");
    let id = session_id(&s);
    let review = env.advance(&advance_token(&s), "plan v1");
    let stale = advance_token(&review);

    let rw = env.ok_json(&[
        "session",
        "rewind",
        &id,
        "--to",
        "plan",
        "--reason",
        "plan was wrong",
    ]);
    assert_eq!(rw["outcome"], "rewound", "{rw}");
    assert_eq!(rw["step"]["id"], "plan");

    let show = env.show(&id);
    let nodes = show["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{show}");
    let abandoned = nodes
        .iter()
        .find(|n| n["status"] == "abandoned")
        .expect("an abandoned node");
    assert_eq!(abandoned["step_id"], "review");
    let branch = nodes.iter().find(|n| n["node"] == 3).unwrap();
    assert_eq!(branch["step_id"], "plan");
    assert_eq!(branch["status"], "active");
    assert_eq!(branch["cause"], "rewind", "{branch}");
    assert_eq!(show["session"]["rewinds"], 1);
    assert_eq!(show["session"]["current"]["node"], 3);
    let events = env.events(&id);
    let rewound = events
        .iter()
        .find(|e| e["body"]["type"] == "session_rewound")
        .unwrap();
    assert_eq!(rewound["body"]["reason"], "plan was wrong");

    // The token of the abandoned node is stale now.
    let r = env.run_json(&["session", "advance", "--token", &stale, "--notes", "late"]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_stale", "{r:?}");

    // The branch advances normally.
    let again = env.advance(&advance_token(&rw), "plan v2");
    assert_eq!(again["step"]["id"], "review");

    // Bad targets are rejected.
    for target in ["wrap-up", "n99", "Not A Step"] {
        let bad = env.run_json(&["session", "rewind", &id, "--to", target]);
        bad.code(exit::INVALID);
    }
    env.verify_ok(&id);
}

#[test]
fn log_prints_events() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    env.advance(&advance_token(&s), "the notes");
    let r = env.run(&["session", "log", &id]);
    r.code(exit::OK);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{r:?}");
    for (line, kind) in lines.iter().zip([
        "session_started",
        "node_entered",
        "step_completed",
        "node_entered",
    ]) {
        assert!(line.contains(kind), "{line} should be {kind}");
    }
    assert!(lines[2].contains("notes=the notes"), "{r:?}");
    let after = env.run(&["--json", "session", "log", &id, "--after", "2"]);
    let after = after.json_lines();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0]["seq"], 3);
    // A token names the session too.
    let by_token = env.events(s["tokens"]["resume"].as_str().unwrap());
    assert_eq!(by_token.len(), 4);
}

#[test]
fn log_follow_exits_once_the_session_completes() {
    let env = Env::initialised();
    let s = env.start("quick-task", "g");
    let id = session_id(&s);
    let mut follower = env
        .cmd(&["--json", "session", "log", "--follow", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "log --follow exited before the session completed"
    );
    let next = env.advance(&advance_token(&s), "one");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "log --follow exited mid-session"
    );
    env.advance(&advance_token(&next), "two");
    let status = wait_timeout(&mut follower, Duration::from_secs(15));
    if status.is_none() {
        let _ = follower.kill();
        panic!("log --follow did not exit after the session completed");
    }
    let run = crate::support::collect(&["session", "log", "--follow"], follower);
    run.code(exit::OK);
    let events = run.json_lines();
    assert_eq!(
        kinds(&events),
        [
            "session_started",
            "node_entered",
            "step_completed",
            "node_entered",
            "step_completed",
            "session_completed"
        ],
        "{run:?}"
    );
}

#[test]
fn sessions_filters_by_status_and_workflow() {
    let env = Env::initialised();
    let wf = env.write("c.yaml", CONTRACT_WORKFLOW);
    let a = env.start("quick-task", "complete me");
    let na = env.advance(&advance_token(&a), "1");
    env.advance(&advance_token(&na), "2");
    let b = env.start("quick-task", "leave me");
    let c = env.start(wf.to_str().unwrap(), "other workflow");
    let d = env.start("quick-task", "block me");
    env.run(&["session", "advance", "--token", &advance_token(&d)])
        .code(exit::BLOCKED);

    let ids = |v: Vec<Value>| -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids(env.sessions(&[])).len(), 4);
    assert_eq!(
        ids(env.sessions(&["--status", "complete"])),
        [session_id(&a)]
    );
    let in_progress = ids(env.sessions(&["--status", "in_progress"]));
    assert!(
        in_progress.contains(&session_id(&b)) && in_progress.contains(&session_id(&c)),
        "{in_progress:?}"
    );
    assert!(!in_progress.contains(&session_id(&a)));
    assert_eq!(
        ids(env.sessions(&["--workflow", "quick-task"])),
        sorted(vec![session_id(&a), session_id(&b), session_id(&d)])
    );
    assert_eq!(
        ids(env.sessions(&["--workflow", "contract-demo"])),
        [session_id(&c)]
    );
    assert_eq!(
        ids(env.sessions(&["--workflow", "contract-demo", "--status", "complete"])).len(),
        0
    );
    // Paging.
    let page: Vec<Value> = env.ok_json(&["sessions", "--limit", "2"])["sessions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(page.len(), 2);
    let rest: Vec<Value> = env.ok_json(&["sessions", "--limit", "10", "--offset", "2"])["sessions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rest.len(), 2);
    // Human output lists the goal.
    let human = env.run(&["sessions", "--status", "complete"]);
    human.code(exit::OK);
    assert!(
        human.stdout.contains("complete me") && !human.stdout.contains("leave me"),
        "{human:?}"
    );
    let bad = env.run_json(&["sessions", "--status", "finished"]);
    bad.code(exit::INVALID);
}
