//! Crash safety: processes SIGKILLed at random moments never leave a partial operation,
//! a broken hash chain or projections that disagree with the events; every interrupted
//! session can be continued.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::assert_rebuild_identical;
use crate::support::{
    Env, Rng, advance_token, assert_whole_operations, exit, kinds, long_workflow, session_id,
};

/// Check every session after the crashes; continue the in-progress ones.
/// Returns how many sessions were interrupted mid-workflow.
fn check_and_continue(env: &Env, strict_tail: bool) -> usize {
    let sessions = env.sessions(&[]);
    assert!(!sessions.is_empty(), "no session survived at all");
    for s in &sessions {
        let id = s["session_id"].as_str().unwrap();
        env.verify_ok(id);
        let events = env.events(id);
        assert_whole_operations(&events);
        let k = kinds(&events);
        if strict_tail {
            let last = *k.last().unwrap();
            assert!(
                last == "node_entered" || last == "session_completed",
                "{id}: log ends with `{last}`, not at a completed operation: {k:?}"
            );
        }
        assert_eq!(
            s["last_seq"].as_u64(),
            Some(events.len() as u64),
            "projection lags the log of {id}"
        );
    }
    assert_rebuild_identical(env);

    let mut interrupted = 0;
    for s in &sessions {
        if s["status"] != "in_progress" {
            continue;
        }
        interrupted += 1;
        let id = s["session_id"].as_str().unwrap();
        let before = env.events(id);
        let current = before
            .iter()
            .rev()
            .find(|e| e["body"]["type"] == "node_entered")
            .unwrap();
        let fresh = env.ok_json(&["session", "rehydrate", id]);
        assert_eq!(
            fresh["step"]["id"], current["body"]["step_id"],
            "rehydrate shows the step the log is at"
        );
        assert_eq!(env.events(id).len(), before.len(), "rehydrate wrote events");
        let next = env.advance(&advance_token(&fresh), "continued after the crash");
        assert!(
            next["outcome"] == "advanced" || next["outcome"] == "complete",
            "{id} cannot continue: {next}"
        );
        let after = env.events(id);
        assert_whole_operations(&after);
        assert_eq!(
            after[before.len()]["body"]["notes"],
            "continued after the crash"
        );
        env.verify_ok(id);
    }
    interrupted
}

#[test]
fn sigkill_during_run_leaves_whole_operations() {
    let env = Env::initialised();
    let (wf, notes) = long_workflow(&env, "long", 200);
    let mut rng = Rng::seeded("sigkill_during_run");
    let mut killed_running = 0;
    for i in 0..6 {
        let mut child = env
            .cmd(&[
                "run",
                wf.to_str().unwrap(),
                "--goal",
                &format!("crash {i}"),
                "--notes-from",
                notes.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
    }
    assert!(
        killed_running > 0,
        "every run finished before it was killed; the test proved nothing"
    );
    let interrupted = check_and_continue(&env, true);
    eprintln!(
        "killed {killed_running} running processes; {interrupted} sessions interrupted and continued"
    );
    assert!(interrupted > 0, "no session was interrupted mid-workflow");
    // The interrupted sessions had made real progress before the kill.
    let progressed = env
        .sessions(&[])
        .iter()
        .filter(|s| s["steps_completed"].as_u64() > Some(1))
        .count();
    assert!(progressed > 0, "no session advanced before being killed");
}

/// One worker's loop: spawn a command, kill it after a random delay (or let it finish).
fn hammer(
    env: &Env,
    wf: &Path,
    notes: &Path,
    ids: &Mutex<Vec<String>>,
    seed: u64,
    deadline: Instant,
    kills: &AtomicUsize,
) {
    let mut rng = Rng::from_seed(seed);
    let mut k = 0u64;
    while Instant::now() < deadline {
        k += 1;
        let choice = rng.range(0, 10);
        let mut cmd = if choice < 2 {
            env.cmd(&[
                "run",
                wf.to_str().unwrap(),
                "--goal",
                "hammered run",
                "--notes-from",
                notes.to_str().unwrap(),
            ])
        } else {
            let id = {
                let ids = ids.lock().unwrap();
                ids[rng.range(0, ids.len() as u64) as usize].clone()
            };
            let fresh = env.run(&["--json", "session", "rehydrate", &id]);
            fresh.code(exit::OK);
            let fresh = fresh.json();
            if fresh["outcome"] != "rehydrated" || fresh["tokens"]["advance"].is_null() {
                continue; // completed
            }
            if choice < 6 {
                let t = advance_token(&fresh);
                env.cmd(&[
                    "session",
                    "advance",
                    "--token",
                    &t,
                    "--notes",
                    &format!("hammer {seed}/{k}"),
                ])
            } else {
                let t = fresh["tokens"]["checkpoint"].as_str().unwrap().to_owned();
                env.cmd(&[
                    "session",
                    "checkpoint",
                    "--token",
                    &t,
                    "--notes",
                    &format!("cp {seed}/{k}"),
                    "--set",
                    &format!("w{seed}={k}"),
                ])
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if rng.range(0, 4) == 0 {
            // Let this one finish: it must succeed or be rejected cleanly.
            let out = child.wait_with_output().unwrap();
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(
                matches!(code, Some(0 | 4)),
                "an uninterrupted command under contention exited {code:?}: {stderr}"
            );
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(0, 60)));
            if child.try_wait().unwrap().is_none() {
                kills.fetch_add(1, Ordering::Relaxed);
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

#[test]
fn sigkill_while_processes_hammer_sessions() {
    let env = Arc::new(Env::initialised());
    let (wf, notes) = long_workflow(&env, "hammer", 60);
    let ids: Vec<String> = (0..3)
        .map(|i| session_id(&env.start(wf.to_str().unwrap(), &format!("hammered {i}"))))
        .collect();
    let ids = Arc::new(Mutex::new(ids));
    let kills = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut master = Rng::seeded("sigkill_while_hammering");
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (env, ids, kills) = (env.clone(), ids.clone(), kills.clone());
            let (wf, notes) = (wf.clone(), notes.clone());
            let seed = master.next() % 1_000_000;
            std::thread::spawn(move || hammer(&env, &wf, &notes, &ids, seed, deadline, &kills))
        })
        .collect();
    for w in workers {
        w.join().expect("a hammer worker failed");
    }
    let kills = kills.load(Ordering::Relaxed);
    assert!(kills > 0, "no process was killed while running");
    let interrupted = check_and_continue(&env, false);
    eprintln!("killed {kills} running processes; {interrupted} sessions continued afterwards");
}
