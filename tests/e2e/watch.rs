//! `worktrain watch` against a real daemon (fake LLM, real git workspace): its event
//! loop runs with the real API and event stream, drawing into an off-screen buffer
//! (`--dump`) that a `--script` of waits and keys drives; the frames are read back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use worktrain_testkit::Turn;

use crate::daemon_rig::{Rig, RigSpec, complete, route, shell};
use crate::support::collect;

/// A turn answered only after `ms` (the run stays visibly on its step meanwhile).
fn slow(ms: u64, then: Turn) -> Turn {
    Turn::Delay {
        ms,
        then: Box::new(then),
    }
}

/// `worktrain watch --dump` with `script`, stdout read line by line on a thread.
fn watch(rig: &Rig, extra: &[&str], script: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut args = vec!["watch", "--dump", "--size", "200x40", "--timeout", "90s"];
    args.extend_from_slice(extra);
    for s in script {
        args.push("--script");
        args.push(s);
    }
    let mut child = rig
        .env
        .cmd(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(rig.env.dir().join("watch.stderr")).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn watch");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Read frames until the one whose marker contains `why`; its text.
fn frame(rx: &mpsc::Receiver<String>, why: &str, rig: &Rig) -> String {
    let mut text = String::new();
    let mut inside = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) if line.starts_with("--- frame ") => inside = line.contains(why),
            Ok(line) if line.starts_with("--- end of frame ") && inside => return text,
            Ok(line) if inside => {
                text.push_str(&line);
                text.push('\n');
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) if inside => return text,
            Err(e) => panic!(
                "no frame `{why}` ({e}); so far:\n{text}\nwatch's stderr:\n{}\n{}",
                std::fs::read_to_string(rig.env.dir().join("watch.stderr")).unwrap_or_default(),
                rig.log_tail()
            ),
        }
    }
}

#[test]
fn watch_shows_a_live_session_appear_advance_and_its_trace_and_acts_on_sessions() {
    if !crate::daemon_rig::have_git() {
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![
            route(
                "watch-goal",
                vec![
                    slow(1500, shell("echo watch-tool-ran")),
                    complete("First step **done**."),
                    slow(1500, complete("Second step done.")),
                ],
            ),
            route(
                "gate-goal",
                vec![complete("Proposal: rename it"), complete("finished")],
            ),
            route(
                "cancel-goal",
                (0..60).map(|_| slow(500, shell("echo busy"))).collect(),
            ),
        ],
        ..RigSpec::default()
    });
    rig.start_daemon();

    // Not a terminal: a clear error pointing at `worktrain status`.
    let r = rig.env.run(&["watch"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("interactive terminal") && r.stderr.contains("worktrain status"),
        "{r:?}"
    );

    // The list is open and live before the session exists.
    let (child, rx) = watch(
        &rig,
        &[],
        &[
            "wait=·  live",
            "wait=watch-goal",
            "key=enter",
            "wait=▶ step first",
            "wait=watch-tool-ran",
            "wait=▶ step second",
            "wait=session_completed",
        ],
    );
    let empty = frame(&rx, "saw `·  live`", &rig);
    assert!(empty.contains("0 sessions"), "{empty}");
    let id = rig.spawn_in_repo("e2e-two", "watch-goal", &[]);

    // It appears without a reload, not yet finished, with its workflow and source.
    let list = frame(&rx, "saw `watch-goal`", &rig);
    let row = list
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{list}"));
    // (Between the session's first event and its run being queued, it is a session
    // without a run for a moment.)
    assert!(
        ["in_progress", "queued", "running"]
            .iter()
            .any(|s| row.contains(s)),
        "{row}"
    );
    assert!(row.contains("e2e-two"), "{row}");
    assert!(list.contains("1 sessions"), "{list}");

    // Enter opens its trace, which follows the run step by step.
    let first = frame(&rx, "saw `▶ step first`", &rig);
    assert!(first.contains(&format!("Session {id}")), "{first}");
    assert!(first.contains("goal: watch-goal"), "{first}");
    assert!(first.contains("source: api"), "{first}");
    let tool = frame(&rx, "saw `watch-tool-ran`", &rig);
    assert!(tool.contains("tool shell"), "{tool}");
    let second = frame(&rx, "saw `▶ step second`", &rig);
    assert!(second.contains("✓ step completed"), "{second}");
    assert!(second.contains("│ First step **done**."), "{second}");
    assert!(
        second.contains("step second  ·"),
        "header on step second: {second}"
    );
    let done = frame(&rx, "saw `session_completed`", &rig);
    let _ = frame(&rx, "script done", &rig);
    let r = collect(&["watch"], child);
    assert_eq!(r.code, 0, "{r:?}");
    // The header caught up with the run's end (folded from the same stream).
    let s = rig.get(&format!("/api/v1/sessions/{id}"));
    assert!(done.contains("session_completed"), "{done}");
    assert_eq!(s["status"], "complete", "{s:#}");

    // Approve a parked gate from its trace: `a`, then `y`.
    crate::daemon_rig::wait_for(
        "the first run to end",
        Duration::from_secs(30),
        || {
            (rig.get(&format!("/api/v1/sessions/{id}"))["run"]["state"] == "completed")
                .then_some(())
        },
        || rig.log_tail(),
    );
    let gated = rig.spawn_in_repo("e2e-gated", "gate-goal", &[]);
    crate::daemon_rig::wait_for(
        "the gate",
        Duration::from_secs(30),
        || {
            (rig.get(&format!("/api/v1/sessions/{gated}"))["run"]["state"] == "parked")
                .then_some(())
        },
        || {
            format!(
                "{:#}\n{}",
                rig.get(&format!("/api/v1/sessions/{gated}")),
                rig.log_tail()
            )
        },
    );
    let (child, rx) = watch(
        &rig,
        &["--session", &gated],
        &[
            "wait=⏸ parked at the gate",
            "key=a",
            "wait=(y/n)",
            "key=y",
            "wait=approved",
            "wait=session_completed",
        ],
    );
    let parked = frame(&rx, "saw `⏸ parked at the gate`", &rig);
    assert!(parked.contains("│ Proposal: rename it"), "{parked}");
    let ask = frame(&rx, "saw `(y/n)`", &rig);
    assert!(
        ask.contains(&format!("Approve the gate of session {gated}? (y/n)")),
        "{ask}"
    );
    let _ = frame(&rx, "saw `session_completed`", &rig);
    let _ = frame(&rx, "script done", &rig);
    let r = collect(&["watch"], child);
    assert_eq!(r.code, 0, "{r:?}");
    let kinds: Vec<String> = rig
        .api_events(&gated)
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(kinds.contains(&"gate_approved".to_owned()), "{kinds:?}");
    let approved = rig
        .api_events(&gated)
        .into_iter()
        .find(|e| e["body"]["type"] == "gate_approved")
        .expect("gate_approved");
    assert_eq!(
        approved["body"]["note"],
        json!("from worktrain watch"),
        "{approved}"
    );

    // Cancel a running session from the list: select it, `c`, then `y`.
    let busy = rig.spawn_in_repo("e2e-two", "cancel-goal", &[]);
    crate::daemon_rig::wait_for(
        "the busy run",
        Duration::from_secs(30),
        || {
            (rig.get(&format!("/api/v1/sessions/{busy}"))["run"]["state"] == "running")
                .then_some(())
        },
        || rig.log_tail(),
    );
    let (child, rx) = watch(
        &rig,
        &["--status", "running"],
        &[
            "wait=cancel-goal",
            "key=c",
            "wait=(y/n)",
            "key=y",
            "wait=cancel requested for",
            "wait=none running",
        ],
    );
    let ask = frame(&rx, "saw `(y/n)`", &rig);
    assert!(
        ask.contains(&format!("Cancel session {busy}? (y/n)")),
        "{ask}"
    );
    // Once cancelled, the run leaves the `running` filter by itself.
    let gone = frame(&rx, "saw `none running`", &rig);
    assert!(
        !gone
            .lines()
            .any(|l| l.starts_with('│') && l.contains(&busy)),
        "{gone}"
    );
    let _ = frame(&rx, "script done", &rig);
    let r = collect(&["watch"], child);
    assert_eq!(r.code, 0, "{r:?}");
    let s = rig.get(&format!("/api/v1/sessions/{busy}"));
    assert_eq!(s["run"]["state"], "cancelled", "{s:#}");
    let cancel = rig
        .api_events(&busy)
        .into_iter()
        .find(|e| e["body"]["type"] == "cancel_requested")
        .expect("cancel_requested");
    assert_eq!(
        cancel["body"]["note"],
        json!("from worktrain watch"),
        "{cancel}"
    );
}

/// The daemon dies under an open `worktrain watch` and comes back on the same address:
/// the screen says the stream is down and reconnecting, then live again, and a session
/// dispatched to the restarted daemon appears without restarting watch.
#[test]
fn watch_reconnects_when_the_daemon_restarts() {
    if !crate::daemon_rig::have_git() {
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            "after-restart-goal",
            vec![complete("done"), complete("done")],
        )],
        ..RigSpec::default()
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let bind = format!("127.0.0.1:{port}");
    rig.start_daemon_at(&bind);
    let (child, rx) = watch(
        &rig,
        &["--daemon", &format!("http://{bind}")],
        &[
            "wait=·  live",
            "wait=reconnecting",
            "wait=·  live",
            "wait=after-restart-goal",
        ],
    );
    let _ = frame(&rx, "saw `·  live`", &rig);
    rig.sigkill_daemon();
    let down = frame(&rx, "saw `reconnecting`", &rig);
    assert!(down.contains("stream down"), "{down}");
    rig.start_daemon_at(&bind);
    let _ = frame(&rx, "saw `·  live`", &rig);
    let id = rig.spawn_in_repo("e2e-two", "after-restart-goal", &[]);
    let list = frame(&rx, "saw `after-restart-goal`", &rig);
    assert!(list.contains(&id), "{list}");
    let _ = frame(&rx, "script done", &rig);
    let r = collect(&["watch"], child);
    assert_eq!(r.code, 0, "{r:?}");
}
