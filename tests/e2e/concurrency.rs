//! Two processes presenting the same token at the same moment: with the same output
//! both get the one recorded response; with different outputs one wins and the other
//! gets `token_conflict`. Never a lock error, never two advances.

use std::process::{Child, Stdio};

use crate::support::{Env, Run, advance_token, collect, exit, session_id};

const ROUNDS: usize = 20;

fn spawn_advance(env: &Env, token: &str, notes: &str) -> Child {
    env.cmd(&[
        "--json", "session", "advance", "--token", token, "--notes", notes,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn advance")
}

/// Start both processes back to back, then collect both.
fn race(env: &Env, token: &str, notes: [&str; 2]) -> [Run; 2] {
    let a = spawn_advance(env, token, notes[0]);
    let b = spawn_advance(env, token, notes[1]);
    [
        collect(&["session", "advance", notes[0]], a),
        collect(&["session", "advance", notes[1]], b),
    ]
}

/// Exactly one advance out of node 1 was recorded.
#[track_caller]
fn assert_one_advance(env: &Env, id: &str) {
    let events = env.events(id);
    let completed = events
        .iter()
        .filter(|e| e["body"]["type"] == "step_completed" && e["body"]["node"] == 1)
        .count();
    let entered = events
        .iter()
        .filter(|e| e["body"]["type"] == "node_entered")
        .count();
    assert_eq!(
        completed, 1,
        "node 1 completed {completed} times: {events:?}"
    );
    assert_eq!(entered, 2, "expected exactly one new node: {events:?}");
    assert_eq!(events.len(), 4, "{events:?}");
}

#[test]
fn racing_identical_advances_both_get_the_recorded_response() {
    let env = Env::initialised();
    for round in 0..ROUNDS {
        let s = env.start("quick-task", &format!("race {round}"));
        let id = session_id(&s);
        let t = advance_token(&s);
        let [a, b] = race(&env, &t, ["same notes", "same notes"]);
        a.code(exit::OK);
        b.code(exit::OK);
        assert_eq!(
            a.raw, b.raw,
            "round {round}: both processes must print the same bytes\n{a:?}\n{b:?}"
        );
        assert_eq!(a.json()["outcome"], "advanced");
        assert_eq!(a.json()["step"]["id"], "verify");
        assert_one_advance(&env, &id);
    }
}

#[test]
fn racing_different_advances_one_wins_one_conflicts() {
    let env = Env::initialised();
    let mut first_won = 0;
    for round in 0..ROUNDS {
        let s = env.start("quick-task", &format!("race {round}"));
        let id = session_id(&s);
        let t = advance_token(&s);
        let runs = race(&env, &t, ["notes from A", "notes from B"]);
        for r in &runs {
            r.no_panic();
            assert!(
                r.code == exit::OK || r.code == exit::TOKEN,
                "round {round}: exit {} is neither success nor token rejection (never {}/{}): {r:?}",
                r.code,
                exit::FAILURE,
                exit::BUSY
            );
        }
        let winners: Vec<usize> = (0..2).filter(|&i| runs[i].code == exit::OK).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one process advances: {runs:?}"
        );
        let (w, l) = (winners[0], 1 - winners[0]);
        assert_eq!(
            runs[l].error_code(),
            "token_conflict",
            "round {round}: {:?}",
            runs[l]
        );
        if w == 0 {
            first_won += 1;
        }
        assert_one_advance(&env, &id);
        // The recorded notes are the winner's.
        let events = env.events(&id);
        let notes = events[2]["body"]["notes"].as_str().unwrap();
        assert_eq!(notes, ["notes from A", "notes from B"][w], "round {round}");
    }
    eprintln!("first process won {first_won}/{ROUNDS} races");
}

#[test]
fn concurrent_sessions_in_one_home_do_not_interfere() {
    let env = Env::initialised();
    let starts: Vec<Child> = (0..6)
        .map(|i| {
            env.cmd(&[
                "--json",
                "session",
                "start",
                "--workflow",
                "quick-task",
                "--goal",
                &format!("parallel {i}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let started: Vec<serde_json::Value> = starts
        .into_iter()
        .map(|c| {
            let r = collect(&["session", "start"], c);
            r.code(exit::OK);
            r.json()
        })
        .collect();
    let advances: Vec<Child> = started
        .iter()
        .map(|s| spawn_advance(&env, &advance_token(s), "n"))
        .collect();
    for c in advances {
        collect(&["session", "advance"], c).code(exit::OK);
    }
    let sessions = env.sessions(&[]);
    assert_eq!(sessions.len(), 6);
    for s in &sessions {
        assert_eq!(s["steps_completed"], 1, "{s}");
        env.verify_ok(s["session_id"].as_str().unwrap());
    }
}
