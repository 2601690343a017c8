//! `worktrain admin rebuild-projections`: projections rebuilt from events alone equal
//! the ones maintained incrementally.

use serde_json::Value;

use crate::support::{CONTRACT_WORKFLOW, Env, advance_token, exit, session_id};

/// `session show --json` of every session, keyed by id, as (session, nodes).
pub(crate) fn snapshot(env: &Env) -> Vec<(String, Value, Value)> {
    let mut out: Vec<(String, Value, Value)> = env
        .sessions(&[])
        .iter()
        .map(|s| {
            let id = s["session_id"].as_str().unwrap().to_owned();
            let show = env.show(&id);
            (id, show["session"].clone(), show["nodes"].clone())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Rebuild projections and assert every session reads back identically.
#[track_caller]
pub(crate) fn assert_rebuild_identical(env: &Env) {
    let before = snapshot(env);
    let report = env.ok_json(&["admin", "rebuild-projections"]);
    assert_eq!(
        report["sessions"].as_u64(),
        Some(before.len() as u64),
        "{report}"
    );
    let after = snapshot(env);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        assert_eq!(b.1, a.1, "session summary of {} differs after rebuild", b.0);
        assert_eq!(b.2, a.2, "nodes of {} differ after rebuild", b.0);
    }
}

#[test]
fn rebuild_projections_reproduces_every_session() {
    let env = Env::initialised();
    let wf = env.write("c.yaml", CONTRACT_WORKFLOW);
    // Complete.
    let a = env.start("quick-task", "a");
    let n = env.advance(&advance_token(&a), "1");
    env.advance(&advance_token(&n), "2");
    // Blocked, checkpointed, rewound, with context.
    let b = env.start(wf.to_str().unwrap(), "b");
    env.ok_json(&[
        "session",
        "checkpoint",
        "--token",
        b["tokens"]["checkpoint"].as_str().unwrap(),
        "--notes",
        "cp",
        "--set",
        "x=1",
    ]);
    let r = env.advance(&advance_token(&b), "plan");
    let blocked = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&r),
        "--notes",
        "no artifact",
    ]);
    blocked.code(exit::BLOCKED);
    env.ok_json(&["session", "rewind", &session_id(&b), "--to", "plan"]);
    // Just started.
    env.start("quick-task", "c");

    let before = env.show(&session_id(&b));
    assert_rebuild_identical(&env);
    let after = env.show(&session_id(&b));
    assert_eq!(before["session"], after["session"]);
    assert_eq!(before["nodes"], after["nodes"]);
    assert_eq!(after["session"]["checkpoints"], 1);
    assert_eq!(after["session"]["rewinds"], 1);
    assert_eq!(after["session"]["blocked_attempts"], 1);

    let human = env.run(&["admin", "rebuild-projections"]);
    human.code(exit::OK);
    assert!(human.stdout.contains("3 sessions"), "{human:?}");
    // Sessions continue normally after a rebuild.
    let fresh = env.ok_json(&["session", "rehydrate", &session_id(&b)]);
    let moved = env.advance(&advance_token(&fresh), "plan again");
    assert_eq!(moved["step"]["id"], "review");
}
