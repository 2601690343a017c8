//! The daemon end to end, with real processes: `worktrain daemon` on its own home, its
//! built-in LLM loop talking to a scripted fake LLM over HTTP, sessions working in git
//! worktrees of a real repository that has a bare `origin` on disk. The fake model calls
//! tools (writes and edits files, runs shell commands, commits), hits errors, stalls in a
//! long tool call, stops early and completes steps with `complete_step`; operators act
//! through the CLI (`spawn`, `await`, `session cancel|steer|approve`, `kill-all`).
//!
//! Scenario groups share one daemon where they are independent; every wait is bounded.
//! The rig is in `daemon_rig.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_testkit::Turn;

use crate::daemon_rig::{
    Rig, RigSpec, activities, alive_marked, clk_tck, complete, git, have_git, kinds, of_kind,
    result_of, route, rss_and_cpu, shell, wait_for, write_file,
};
use crate::support::exit;

/// A shell command that records its own pid and its background child's pid in the
/// worktree (atomically, via rename), then waits for the child: the whole process group
/// must die when the run is stopped.
/// A unique `sleep` argument, so the test can find the sleeper from outside the
/// sandbox's PID namespace.
fn marker(secs: u32) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{secs}.{:05}{n:03}", std::process::id() % 100_000)
}

fn sleeper(secs: u32) -> Turn {
    let m = marker(secs);
    shell(&format!(
        "echo {m} > tool.tmp && mv tool.tmp tool.pid; sleep {m} & echo {m} > sleep.tmp && mv sleep.tmp sleep.pid; wait"
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Assert that the processes the fake agent's shell started are gone.
#[track_caller]
fn assert_tool_processes_dead(rig: &Rig, id: &str) {
    let m = rig.marker_file(id, "sleep.pid");
    wait_for(
        &format!("{id}: the tool's `sleep {m}` to be killed"),
        Duration::from_secs(5),
        || (!alive_marked(&m)).then_some(()),
        || rig.log_tail(),
    );
}

// The goals of the lifecycle scenarios (the fake LLM routes on them).
const COMMIT: &str = "goal-commit-A1";
const PLAIN: &str = "goal-plain-A2";
const BLOCKED: &str = "goal-blocked-A3";
const EARLY: &str = "goal-early-A4";
const STALL: &str = "goal-stall-A5";
const TIMEOUT: &str = "goal-timeout-A6";
const CANCEL: &str = "goal-cancel-A7";
const STEER: &str = "goal-steer-A8";
const GATE: &str = "goal-gate-A9";
const STEER_MSG: &str = "STEER-7f3a: prefer the smaller fix";

/// Success (with tool errors along the way), blocked step and retry, early stop, a stall
/// in a long tool call, the wall-clock limit, cancel, steer and gate park → approve — nine
/// sessions at once on one daemon, then the worktree inventory.
#[test]
fn lifecycle_scenarios_on_one_daemon() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let commit_cmd = "git add -A && git -c user.name=agent -c user.email=agent@example.invalid commit -qm 'agent work' && git log --oneline -1";
    let mut rig = Rig::new(RigSpec {
        daemon: &["lease_secs: 3", "max_concurrent_sessions: 10"],
        routes: vec![
            route(
                COMMIT,
                vec![
                    write_file("src/hello.txt", "hello from the agent\n"),
                    // An edit whose text is not there: a tool error the agent recovers from.
                    Turn::tool(
                        "edit_file",
                        json!({"path": "README", "old_string": "no such text", "new_string": "x"}),
                    ),
                    Turn::tool(
                        "edit_file",
                        json!({"path": "README", "old_string": "hello\n", "new_string": "hello, edited\n"}),
                    ),
                    // A failing command is a result, not a tool error.
                    shell("ls no-such-dir"),
                    complete("first step: wrote src/hello.txt, edited README"),
                    shell(commit_cmd),
                    complete("committed"),
                ],
            ),
            route(
                PLAIN,
                vec![
                    shell("mkdir -p gen && printf 'generated\\n' > gen/out.txt"),
                    complete("generated gen/out.txt"),
                ],
            ),
            route(
                BLOCKED,
                vec![
                    Turn::tool("complete_step", json!({})),
                    complete("now with notes"),
                ],
            ),
            route(
                EARLY,
                vec![
                    write_file("partial.txt", "half done\n"),
                    Turn::text("All done!"),
                    Turn::text("Really, I am done."),
                    complete("never reached"),
                ],
            ),
            route(
                STALL,
                vec![
                    shell("touch stall-started && sleep 8 && echo slept-well"),
                    complete("survived the long tool call"),
                ],
            ),
            route(TIMEOUT, vec![sleeper(30), complete("never reached")]),
            route(CANCEL, vec![sleeper(30), complete("never reached")]),
            route(
                STEER,
                vec![shell("touch steer-started && sleep 3"), complete("steered")],
            ),
            route(GATE, vec![complete("proposal"), complete("finished")]),
        ],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let t0 = Instant::now();

    let commit = rig.spawn_in_repo("e2e-two", COMMIT, &[]);
    let plain = rig.spawn_in_repo("e2e-one", PLAIN, &[]);
    let blocked = rig.spawn_in_repo("e2e-one", BLOCKED, &[]);
    let early = rig.spawn_in_repo("e2e-one", EARLY, &[]);
    let stall = rig.spawn_in_repo("e2e-one", STALL, &[]);
    let timeout = rig.spawn_in_repo("e2e-one", TIMEOUT, &["--wall-clock", "3s"]);
    let cancel = rig.spawn_in_repo("e2e-one", CANCEL, &[]);
    let steer = rig.spawn_in_repo("e2e-one", STEER, &[]);
    let gate = rig.spawn_in_repo("e2e-gated", GATE, &[]);

    // While the operator acts on the others, watch the stalled session's lease and
    // heartbeat through its long tool call.
    let samples = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            rig.wait_file(&stall, "stall-started", Duration::from_secs(30));
            let mut samples = Vec::new();
            loop {
                let d = rig.detail(&stall);
                let now = now_ms();
                if d["run"]["state"] != "running" {
                    return samples;
                }
                // A record is the stored summary, then the daemon's liveness: a run that
                // ends between the two reads shows "running" without a heartbeat. Only
                // then is a missing heartbeat not a gap — the run must be over.
                if d["last_heartbeat_ms"].is_null()
                    && rig.detail(&stall)["run"]["state"] != "running"
                {
                    return samples;
                }
                samples.push((now, d["lease"].clone(), d["last_heartbeat_ms"].clone()));
                std::thread::sleep(Duration::from_millis(300));
            }
        });

        // Cancel a running session in the middle of a tool call.
        rig.wait_file(&cancel, "sleep.pid", Duration::from_secs(30));
        let cancelled_at = Instant::now();
        rig.cli(&["session", "cancel", &cancel, "--note", "superseded"])
            .code(exit::OK);
        rig.wait_run_state(&cancel, "cancelled", Duration::from_secs(10));
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(5),
            "cancel took {:?}",
            cancelled_at.elapsed()
        );

        // Steer while the agent runs a command: the message rides on its next request.
        rig.wait_file(&steer, "steer-started", Duration::from_secs(30));
        rig.cli(&["session", "steer", &steer, "-m", STEER_MSG])
            .code(exit::OK);

        // The gate parks the run (worktree kept to continue in it); approve requeues it.
        let parked = rig.wait_run_state(&gate, "parked", Duration::from_secs(30));
        assert_eq!(parked["status"], "parked", "{parked:#}");
        assert!(
            rig.worktree_of(&gate).is_dir(),
            "a parked run keeps its worktree"
        );
        rig.cli(&["session", "approve", &gate, "--note", "looks right"])
            .code(exit::OK);

        sampler.join().expect("sampler thread")
    });

    let all = [
        commit.as_str(),
        plain.as_str(),
        blocked.as_str(),
        early.as_str(),
        stall.as_str(),
        timeout.as_str(),
        cancel.as_str(),
        steer.as_str(),
        gate.as_str(),
    ];
    let (code, results) = rig.await_all(&all, "90s");
    assert_eq!(code, 1, "some sessions failed on purpose: {results:#?}");
    let outcome = |id: &str| {
        let r = result_of(&results, id);
        (
            r["outcome"].as_str().unwrap_or("?").to_owned(),
            r["failure"].as_str().map(str::to_owned),
        )
    };
    let done = |id: &str| outcome(id) == ("completed".to_owned(), None);
    for (name, id) in [
        ("commit", &commit),
        ("plain", &plain),
        ("blocked", &blocked),
        ("stall", &stall),
        ("steer", &steer),
        ("gate", &gate),
    ] {
        assert!(
            done(id),
            "{name}: {:#}\n{}",
            result_of(&results, id),
            rig.log_tail()
        );
        assert_eq!(result_of(&results, id)["succeeded"], true);
        assert_eq!(rig.show(id)["status"], "complete");
    }

    // Each scenario's checks, by name.
    let f = Finished {
        rig: &rig,
        results: &results,
    };
    success_keeps_step_snapshots_and_the_agents_commit(&f, &commit);
    uncommitted_work_becomes_a_commit_on_the_kept_branch(&f, &plain);
    blocked_step_is_retried_with_the_blockers(&f, &blocked);
    early_stop_is_nudged_then_failed(&f, &early);
    long_tool_call_keeps_the_lease_and_heartbeat(&f, &stall, &samples);
    wall_clock_limit_kills_the_tool(&f, &timeout);
    cancel_is_recorded_and_kills_the_tool(&f, &cancel);
    steering_reaches_the_next_request(&f, &steer);
    gate_parks_then_approval_requeues(&f, &gate);

    // No leaks: exactly the failed and cancelled sessions keep (locked, expiring)
    // worktrees; `git worktree list` agrees.
    rig.assert_worktrees_exactly(&[&early, &timeout, &cancel]);
    eprintln!("lifecycle scenarios: {:?}", t0.elapsed());
}

/// What every lifecycle scenario's checks read once all sessions have finished: the rig
/// and the `worktrain await` results.
#[derive(Clone, Copy)]
struct Finished<'a> {
    rig: &'a Rig,
    results: &'a [Value],
}

impl Finished<'_> {
    /// The outcome and failure reason `await` reported for a session.
    fn outcome(&self, id: &str) -> (String, Option<String>) {
        let r = result_of(self.results, id);
        (
            r["outcome"].as_str().unwrap_or("?").to_owned(),
            r["failure"].as_str().map(str::to_owned),
        )
    }
}

/// Success. Files the agent wrote are in the step snapshots; the worktree is gone;
/// the branch with the agent's own (unpushed) commit is kept.
fn success_keeps_step_snapshots_and_the_agents_commit(f: &Finished<'_>, commit: &str) {
    let Finished { rig, results } = *f;
    let ev = rig.events(commit);
    let all_snaps = of_kind(&ev, "step_snapshotted");
    assert!(
        all_snaps.iter().any(|s| s["body"]["node"] == 0),
        "a snapshot before the first step: {:?}",
        kinds(&ev)
    );
    let snaps: Vec<&Value> = all_snaps
        .into_iter()
        .filter(|s| s["body"]["node"] != 0)
        .collect();
    assert_eq!(snaps.len(), 2, "one snapshot per step: {:?}", kinds(&ev));
    for s in &snaps {
        let r = s["body"]["git_ref"].as_str().unwrap();
        assert!(r.starts_with(&format!("refs/worktrain/{commit}/")), "{s}");
        assert_eq!(
            git(&rig.repo, &["rev-parse", "--verify", r]).trim(),
            s["body"]["commit"].as_str().unwrap(),
            "snapshot ref {r}"
        );
    }
    let calls = activities(&ev, "tool_call");
    let failed_edit = calls
        .iter()
        .find(|c| c["name"] == "edit_file" && !c["error"].is_null())
        .unwrap_or_else(|| panic!("the failing edit is recorded: {calls:#?}"));
    assert_eq!(failed_edit["error"]["kind"], "not_found", "{failed_edit}");
    let ls = calls
        .iter()
        .find(|c| c["name"] == "shell" && c["args"].as_str().unwrap_or("").contains("ls"))
        .unwrap_or_else(|| panic!("the ls call is recorded: {calls:#?}"));
    assert_ne!(ls["exit_code"], 0, "{ls}");
    assert!(
        ls["error"].is_null(),
        "a non-zero exit is not a tool error: {ls}"
    );
    let reqs = rig.requests_for(COMMIT);
    assert!(
        reqs[2].raw.contains("\"is_error\":true"),
        "the model is told its edit failed: {}",
        reqs[2].raw
    );
    assert!(
        reqs.iter().all(|r| !r.raw.contains("wt1.")),
        "a step token reached the model"
    );

    let diff = rig.env.ok_json(&["session", "diff", commit]);
    // The daemon answers with the same diff: one implementation, in the engine.
    assert_eq!(
        rig.get(&format!("/api/v1/sessions/{commit}/diff")),
        diff,
        "GET /api/v1/sessions/{{id}}/diff and `session diff --json` differ"
    );
    let stat = rig.get(&format!(
        "/api/v1/sessions/{commit}/diff?step=first&stat=true"
    ));
    assert_eq!(stat["steps"].as_array().map(Vec::len), Some(1), "{stat:#}");
    assert!(stat["steps"][0]["patch"].is_null(), "{stat:#}");
    assert_eq!(stat["steps"][0]["files"], diff["steps"][0]["files"]);
    let steps = diff["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step_id"], "first", "{diff:#}");
    let mut files: Vec<&str> = steps[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    files.sort_unstable();
    assert_eq!(files, ["README", "src/hello.txt"], "{diff:#}");
    let patch = steps[0]["patch"].as_str().unwrap();
    assert!(
        patch.contains("+hello from the agent") && patch.contains("+hello, edited"),
        "{patch}"
    );

    assert!(
        !rig.worktree_of(commit).exists(),
        "the worktree of a completed run is removed"
    );
    let branch = format!("worktrain/{commit}");
    assert_eq!(
        git(
            &rig.repo,
            &["rev-list", "--count", &format!("main..{branch}")]
        )
        .trim(),
        "1",
        "the branch with the agent's unpushed commit is kept"
    );
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:src/hello.txt")]),
        "hello from the agent\n"
    );
    assert_eq!(
        git(
            &rig.repo,
            &["ls-remote", "origin", &format!("refs/heads/{branch}")]
        )
        .trim(),
        "",
        "nothing was pushed (delivery is not part of a run)"
    );
    // The agent's own commit is the session's work.
    let r = result_of(results, commit);
    assert_eq!(
        r["commit"].as_str(),
        Some(git(&rig.repo, &["rev-parse", &branch]).trim()),
        "{r:#}"
    );
}

/// and when the agent did not commit, worktrain does: the work is a real commit
/// on the kept session branch (trailers name the session and the workflow), and the
/// await result names the branch and the commit. Nothing reported is missing.
fn uncommitted_work_becomes_a_commit_on_the_kept_branch(f: &Finished<'_>, plain: &str) {
    let Finished { rig, results } = *f;
    let diff = rig.env.ok_json(&["session", "diff", plain]);
    let step = &diff["steps"][0];
    assert_eq!(step["files"][0]["path"], "gen/out.txt", "{diff:#}");
    assert!(step["patch"].as_str().unwrap().contains("+generated"));
    assert!(!rig.worktree_of(plain).exists());
    let branch = format!("worktrain/{plain}");
    let r = result_of(results, plain);
    assert_eq!(r["branch"], branch.as_str(), "{r:#}");
    let commit = r["commit"]
        .as_str()
        .expect("the await result names the commit");
    assert!(
        r["worktree"].is_null(),
        "the removed worktree is not reported: {r:#}"
    );
    assert_eq!(
        git(&rig.repo, &["rev-parse", &branch]).trim(),
        commit,
        "the branch holds the reported commit"
    );
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:gen/out.txt")]),
        "generated\n"
    );
    let message = git(&rig.repo, &["log", "-1", "--format=%B", &branch]);
    assert!(
        message.contains(&format!("Worktrain-Session: {plain}"))
            && message.contains("Worktrain-Workflow: e2e-one@"),
        "{message}"
    );
    let ev = rig.events(plain);
    let committed = of_kind(&ev, "work_committed");
    assert_eq!(committed.len(), 1, "{:?}", kinds(&ev));
    assert_eq!(committed[0]["body"]["reason"], "completed");
    assert_eq!(committed[0]["body"]["commit"], commit);
    let removed = of_kind(&ev, "worktree_removed");
    assert_eq!(removed.len(), 1, "{:?}", kinds(&ev));
    assert_eq!(removed[0]["body"]["branch"], branch.as_str());
    let order: Vec<String> = kinds(&ev)
        .into_iter()
        .filter(|k| ["work_committed", "worktree_removed", "run_finished"].contains(&k.as_str()))
        .collect();
    assert_eq!(
        order,
        ["work_committed", "worktree_removed", "run_finished"],
        "the run is reported finished only once its work is committed"
    );
    let shown = rig.detail(plain);
    assert_eq!(shown["run"]["commit"], commit, "{shown:#}");
    assert!(shown["run"].get("worktree").is_none(), "{shown:#}");
}

/// Blocked step and retry: notes missing → blocked, the blockers reach the model,
/// the second attempt is accepted.
fn blocked_step_is_retried_with_the_blockers(f: &Finished<'_>, blocked: &str) {
    let Finished { rig, results } = *f;
    let ev = rig.events(blocked);
    assert_eq!(of_kind(&ev, "step_blocked").len(), 1, "{:?}", kinds(&ev));
    let submitted: Vec<&str> = activities(&ev, "step_submitted")
        .iter()
        .map(|a| a["result"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(submitted, ["blocked", "complete"]);
    let reqs = rig.requests_for(BLOCKED);
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].raw.contains("needs notes"), "{}", reqs[1].raw);
    let d = rig.detail(blocked);
    assert_eq!(d["nodes"][0]["attempts"], 2, "{d:#}");
    assert_eq!(result_of(results, blocked)["notes"], "now with notes");
}

/// Early stop: nudged once, then failed agent_stopped_early — never a success; the
/// worktree is kept for inspection with the agent's partial work.
fn early_stop_is_nudged_then_failed(f: &Finished<'_>, early: &str) {
    let rig = f.rig;
    let outcome = |id: &str| f.outcome(id);
    assert_eq!(
        outcome(early),
        ("failed".into(), Some("agent_stopped_early".into()))
    );
    let s = rig.show(early);
    assert_ne!(s["status"], "complete");
    let ev = rig.events(early);
    let nudges = activities(&ev, "nudged");
    assert_eq!(nudges.len(), 1, "{nudges:#?}");
    assert_eq!(nudges[0]["reason"], "stopped_early");
    assert!(of_kind(&ev, "session_completed").is_empty());
    assert!(of_kind(&ev, "step_completed").is_empty());
    let reqs = rig.requests_for(EARLY);
    assert_eq!(reqs.len(), 3, "write, stop, stop after the nudge");
    assert!(
        reqs[2]
            .raw
            .contains("You ended your turn without calling complete_step"),
        "{}",
        reqs[2].raw
    );
    assert_eq!(
        std::fs::read_to_string(rig.worktree_of(early).join("partial.txt")).unwrap(),
        "half done\n"
    );
}

/// A tool call longer than the lease: the lease kept being renewed and the heartbeat
/// kept ticking while `sleep 8` ran; the run was not killed and completed.
fn long_tool_call_keeps_the_lease_and_heartbeat(
    f: &Finished<'_>,
    stall: &str,
    samples: &[(i64, Value, Value)],
) {
    let rig = f.rig;
    assert!(
        samples.len() >= 10,
        "too few samples of the stalled run: {samples:?}"
    );
    let mut expiries = Vec::new();
    for (at, lease, beat) in samples {
        let exp = lease["expires_at_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("a running session has a lease: {lease}"));
        assert!(exp > *at, "the lease lapsed at {at}: {lease}");
        let beat = beat.as_i64().unwrap_or(0);
        assert!(
            at - beat < 2500,
            "no heartbeat for {} ms during the tool call",
            at - beat
        );
        expiries.push(exp);
    }
    expiries.dedup();
    assert!(
        expiries.len() >= 4,
        "the lease was not renewed during the tool call: {expiries:?}"
    );
    let ev = rig.events(stall);
    let call = activities(&ev, "tool_call")
        .into_iter()
        .find(|c| c["name"] == "shell")
        .cloned()
        .unwrap();
    assert!(call["duration_ms"].as_u64().unwrap() >= 8000, "{call}");
    assert_eq!(call["exit_code"], 0, "{call}");
    assert!(call["error"].is_null(), "{call}");
    assert!(
        rig.requests_for(STALL)[1].raw.contains("slept-well"),
        "the command's output reached the model"
    );
}

/// The wall-clock limit fires during a long tool call; its process group is killed.
fn wall_clock_limit_kills_the_tool(f: &Finished<'_>, timeout: &str) {
    let rig = f.rig;
    let outcome = |id: &str| f.outcome(id);
    assert_eq!(
        outcome(timeout),
        ("failed".into(), Some("wall_clock_exceeded".into()))
    );
    let ev = rig.events(timeout);
    let started = of_kind(&ev, "run_started")[0]["created_at_ms"]
        .as_i64()
        .unwrap();
    let finished = of_kind(&ev, "run_finished")[0]["created_at_ms"]
        .as_i64()
        .unwrap();
    assert!(
        (2_500..15_000).contains(&(finished - started)),
        "a 3 s wall clock ended the run after {} ms",
        finished - started
    );
    assert_tool_processes_dead(rig, timeout);
}

/// Cancel: recorded, run ends cancelled, the tool's process group is killed.
fn cancel_is_recorded_and_kills_the_tool(f: &Finished<'_>, cancel: &str) {
    let rig = f.rig;
    let outcome = |id: &str| f.outcome(id);
    assert_eq!(outcome(cancel), ("cancelled".into(), None));
    let ev = rig.events(cancel);
    let k = kinds(&ev);
    let req = k.iter().position(|k| k == "cancel_requested").unwrap();
    let fin = k.iter().position(|k| k == "run_finished").unwrap();
    assert!(req < fin, "{k:?}");
    assert_eq!(ev[fin]["body"]["end"], "cancelled");
    assert_tool_processes_dead(rig, cancel);
}

/// Steer: the message is in the model's next request, not in the one before.
fn steering_reaches_the_next_request(f: &Finished<'_>, steer: &str) {
    let rig = f.rig;
    let reqs = rig.requests_for(STEER);
    assert_eq!(reqs.len(), 2);
    assert!(!reqs[0].raw.contains(STEER_MSG));
    assert!(
        reqs[1].raw.contains(&format!(
            "Message from the operator (via worktrain): {STEER_MSG}"
        )),
        "{}",
        reqs[1].raw
    );
    let ev = rig.events(steer);
    assert_eq!(of_kind(&ev, "steered").len(), 1);
    assert_eq!(activities(&ev, "steering_delivered").len(), 1);
}

/// Gate: parked (run 1 ends `parked`), approved, requeued, run 2 completes.
fn gate_parks_then_approval_requeues(f: &Finished<'_>, gate: &str) {
    let rig = f.rig;
    let ev = rig.events(gate);
    let ends: Vec<&Value> = of_kind(&ev, "run_finished")
        .iter()
        .map(|e| &e["body"]["end"])
        .collect();
    assert_eq!(ends, [&json!("parked"), &json!("completed")]);
    let requeued = of_kind(&ev, "run_requeued");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0]["body"]["reason"], "gate_decided");
    assert_eq!(of_kind(&ev, "gate_approved").len(), 1);
    let runs: Vec<&Value> = of_kind(&ev, "run_started")
        .iter()
        .map(|e| &e["body"]["run"])
        .collect();
    assert_eq!(runs, [&json!(1), &json!(2)]);
    let reqs = rig.requests_for(GATE);
    assert_eq!(reqs.len(), 2);
    assert!(
        !reqs[1].raw.contains("daemon restarted") && !reqs[1].raw.contains("interrupted"),
        "after an approval the agent is not told it was interrupted: {}",
        reqs[1].raw
    );
}

/// The kill switch stops the running session (its tool's process group too) and ends
/// the queued ones, all failed with `killed`; the daemon keeps serving afterwards. Before
/// that, a parked session is cancelled: its worktree is kept for inspection, not left
/// locked "in use".
#[test]
fn kill_all_stops_running_and_queued_sessions() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        daemon: &["lease_secs: 3", "max_concurrent_sessions: 1"],
        routes: vec![
            route("goal-parked-K0", vec![complete("proposal")]),
            route(
                "goal-run-K1",
                vec![
                    sleeper(30),
                    // After `session retry`: in the same (kept) worktree.
                    shell("test -f sleep.pid && echo kept-worktree-reused"),
                    complete("retried"),
                ],
            ),
            route("goal-queued-K2", vec![complete("never")]),
            route("goal-queued-K3", vec![complete("never")]),
            route("goal-after-K4", vec![complete("after the kill switch")]),
        ],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let parked = rig.spawn_in_repo("e2e-gated", "goal-parked-K0", &[]);
    rig.wait_run_state(&parked, "parked", Duration::from_secs(30));
    rig.cli(&["session", "cancel", &parked]).code(exit::OK);
    assert_eq!(rig.show(&parked)["run"]["state"], "cancelled");

    let running = rig.spawn_in_repo("e2e-one", "goal-run-K1", &[]);
    let q1 = rig.spawn_in_repo("e2e-one", "goal-queued-K2", &[]);
    let q2 = rig.spawn_in_repo("e2e-one", "goal-queued-K3", &[]);
    rig.wait_file(&running, "sleep.pid", Duration::from_secs(30));
    for q in [&q1, &q2] {
        let d = rig.detail(q);
        assert_eq!(d["run"]["state"], "queued", "the cap is 1: {d:#}");
    }
    let ready = rig.get("/readyz");
    assert_eq!(
        (ready["running"].clone(), ready["queue_depth"].clone()),
        (json!(1), json!(2))
    );

    let r = rig.cli(&["kill-all"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("3 session"), "{r:?}");
    let (code, results) = rig.await_all(&[&running, &q1, &q2], "30s");
    assert_eq!(code, 1);
    for id in [&running, &q1, &q2] {
        let r = result_of(&results, id);
        assert_eq!(
            (r["outcome"].as_str(), r["failure"].as_str()),
            (Some("failed"), Some("killed")),
            "{r:#}"
        );
    }
    assert_tool_processes_dead(&rig, &running);
    for q in [&q1, &q2] {
        let ev = rig.events(q);
        assert!(
            of_kind(&ev, "run_started").is_empty(),
            "a queued run never started: {:?}",
            kinds(&ev)
        );
    }
    assert!(rig.requests_for("goal-queued-K").is_empty());
    let ready = rig.get("/readyz");
    assert_eq!(
        (ready["running"].clone(), ready["queue_depth"].clone()),
        (json!(0), json!(0))
    );

    // The switch is not latched: new work still runs.
    let after = rig.spawn_in_repo("e2e-one", "goal-after-K4", &[]);
    let (code, results) = rig.await_all(&[&after], "30s");
    assert_eq!(code, 0, "{results:#?}\n{}", rig.log_tail());
    rig.assert_worktrees_exactly(&[&parked, &running]);

    // A killed run can be retried: it continues in its kept worktree, the agent is told
    // it is a retry (not an interruption), and on success the worktree is removed.
    rig.cli(&["session", "retry", &running]).code(exit::OK);
    let (code, results) = rig.await_all(&[&running], "30s");
    assert_eq!(code, 0, "{results:#?}\n{}", rig.log_tail());
    let reqs = rig.requests_for("goal-run-K1");
    assert_eq!(
        reqs.len(),
        3,
        "one request before the kill switch, two after the retry"
    );
    assert!(
        reqs[1].raw.contains("An operator retried this session")
            && !reqs[1].raw.contains("You were interrupted"),
        "{}",
        reqs[1].raw
    );
    assert!(
        reqs[2].raw.contains("kept-worktree-reused"),
        "{}",
        reqs[2].raw
    );
    let ev = rig.events(&running);
    let requeued = of_kind(&ev, "run_requeued");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0]["body"]["reason"], "retry");
    rig.assert_worktrees_exactly(&[&parked]);
}

/// SIGKILL the daemon while its agent is inside a long tool call; the next daemon finds
/// the run left `running`, records the interruption and resumes it in the same worktree
/// (attempt 2, told it was interrupted); a run that was queued then starts normally.
#[test]
fn sigkill_mid_tool_call_then_restart_resumes() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const LONG: &str = "goal-crash-C1";
    const QUEUED: &str = "goal-queued-C2";
    let mut rig = Rig::new(RigSpec {
        daemon: &["lease_secs: 3", "max_concurrent_sessions: 1"],
        routes: vec![
            route(
                LONG,
                vec![
                    // Still sleeping when the daemon dies: the restart must kill it.
                    shell(&format!(
                        "touch started && echo {m} > tool.tmp && mv tool.tmp tool.pid; sleep {m} & echo {m} > sleep.tmp && mv sleep.tmp sleep.pid; wait",
                        m = marker(60)
                    )),
                    // After the restart: the worktree still holds the first run's file.
                    shell("test -f started && echo still-here"),
                    complete("resumed and finished"),
                ],
            ),
            route(QUEUED, vec![complete("queued one done")]),
        ],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let long = rig.spawn_in_repo("e2e-one", LONG, &[]);
    let queued = rig.spawn_in_repo("e2e-one", QUEUED, &[]);
    rig.wait_file(&long, "sleep.pid", Duration::from_secs(30));
    rig.sigkill_daemon();

    // Nothing ran the bookkeeping: the store still says running. The dead run's tool
    // command died with the daemon all the same: its sandbox (a PID namespace whose
    // bwrap dies with its parent) leaves no orphan, even before any restart.
    assert_eq!(rig.show(&long)["run"]["state"], "running");
    assert_eq!(rig.show(&queued)["run"]["state"], "queued");
    assert_tool_processes_dead(&rig, &long);

    rig.start_daemon();
    let (code, results) = rig.await_all(&[&long, &queued], "60s");
    assert_eq!(code, 0, "{results:#?}\n{}", rig.log_tail());
    assert_eq!(result_of(&results, &long)["notes"], "resumed and finished");

    let ev = rig.events(&long);
    let interrupted = of_kind(&ev, "run_interrupted");
    assert_eq!(interrupted.len(), 1, "{:?}", kinds(&ev));
    assert_eq!(interrupted[0]["body"]["reason"], "lease_expired");
    let requeued = of_kind(&ev, "run_requeued");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0]["body"]["reason"], "resume");
    let runs: Vec<&Value> = of_kind(&ev, "run_started")
        .iter()
        .map(|e| &e["body"]["run"])
        .collect();
    assert_eq!(runs, [&json!(1), &json!(2)]);
    assert_eq!(rig.show(&long)["run"]["interruptions"], 1);

    let reqs = rig.requests_for(LONG);
    assert_eq!(reqs.len(), 3, "one request before the crash, two after");
    assert!(
        !reqs[0].raw.contains("You were interrupted"),
        "{}",
        reqs[0].raw
    );
    assert!(
        reqs[1].raw.contains("You were interrupted"),
        "the resumed agent is told it was interrupted: {}",
        reqs[1].raw
    );
    assert!(
        reqs[2].raw.contains("still-here"),
        "the resumed run works in the same worktree: {}",
        reqs[2].raw
    );
    // The queued run started once, after the restart.
    let qev = rig.events(&queued);
    assert_eq!(of_kind(&qev, "run_started").len(), 1);
    rig.env.verify_ok(&long);
    rig.env.verify_ok(&queued);
    rig.assert_worktrees_exactly(&[]);
}

/// The same crash with `max_interruptions: 0`: the next daemon fails the run with
/// `too_many_interruptions` instead of resuming it, and keeps its worktree for
/// inspection (expiring), not locked "in use" forever.
#[test]
fn sigkill_with_no_interruptions_allowed_fails_with_reason() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const GOAL: &str = "goal-crash-D1";
    let mut rig = Rig::new(RigSpec {
        daemon: &["lease_secs: 3", "max_interruptions: 0"],
        routes: vec![route(
            GOAL,
            vec![
                shell("touch started && sleep 3"),
                complete("must not run again"),
            ],
        )],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-one", GOAL, &[]);
    rig.wait_file(&id, "started", Duration::from_secs(30));
    rig.sigkill_daemon();
    rig.start_daemon();
    let (code, results) = rig.await_all(&[&id], "30s");
    assert_eq!(code, 1);
    let r = result_of(&results, &id);
    assert_eq!(
        (r["outcome"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("too_many_interruptions")),
        "{r:#}"
    );
    let ev = rig.events(&id);
    let k = kinds(&ev);
    let i = k.iter().position(|k| k == "run_interrupted").unwrap();
    assert_eq!(k[i + 1], "run_finished", "{k:?}");
    assert_eq!(of_kind(&ev, "run_started").len(), 1, "never resumed: {k:?}");
    assert_eq!(rig.requests_for(GOAL).len(), 1);
    rig.assert_worktrees_exactly(&[&id]);
}

/// Load: 200 sessions dispatched at once (from 8 concurrent clients) with
/// `max_concurrent_sessions: 8`. All complete; the cap is never exceeded (checked on the
/// store's global event order and by sampling `/readyz`); runs start in dispatch order.
#[test]
fn load_200_sessions_with_a_cap_of_8() {
    const N: usize = 200;
    const CAP: usize = 8;
    let mut rig = Rig::new(RigSpec {
        daemon: &["max_concurrent_sessions: 8", "lease_secs: 30"],
        turns: (0..N).map(|_| complete("done")).collect(),
        heartbeat: "1s",
        remote: false,
        ..RigSpec::default()
    });
    rig.start_daemon();
    let pid = rig.daemon.as_ref().unwrap().pid();
    let (_, cpu0) = rss_and_cpu(pid);
    let t0 = Instant::now();
    let bodies: Vec<Value> = (0..N)
        .map(|i| json!({"workflow": "e2e-one", "goal": format!("load #{i:03}")}))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ids, max_ready) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut max_running = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = rig.get("/readyz");
                max_running = max_running.max(r["running"].as_u64().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(25));
            }
            max_running
        });
        let ids = rig.dispatch_many(bodies, 8);
        let dispatched = t0.elapsed();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (code, results) = rig.await_all(&refs, "120s");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let max_ready = sampler.join().expect("sampler");
        assert_eq!(code, 0, "{}", rig.log_tail());
        assert_eq!(results.len(), N);
        assert!(
            results.iter().all(|r| r["outcome"] == "completed"),
            "{results:#?}"
        );
        eprintln!("load: {N} dispatched in {dispatched:?}");
        (ids, max_ready)
    });
    let elapsed = t0.elapsed();
    let (rss, cpu1) = rss_and_cpu(pid);

    // Replay the store's global order: run_queued / run_started / run_finished positions.
    let mut marks: Vec<(u64, &'static str, String)> = Vec::new();
    let mut first_start = i64::MAX;
    let mut last_finish = 0i64;
    for id in &ids {
        for e in rig.api_events(id) {
            let pos = e["position"].as_u64().expect("position");
            let kind = match e["body"]["type"].as_str() {
                Some("run_queued") => "queued",
                Some("run_started") => {
                    first_start = first_start.min(e["created_at_ms"].as_i64().unwrap());
                    "started"
                }
                Some("run_finished") => {
                    last_finish = last_finish.max(e["created_at_ms"].as_i64().unwrap());
                    "finished"
                }
                _ => continue,
            };
            marks.push((pos, kind, id.clone()));
        }
    }
    marks.sort_by_key(|m| m.0);
    let (mut running, mut max_running) = (0usize, 0usize);
    let mut queued_order = Vec::new();
    let mut started_order = Vec::new();
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for (_, kind, id) in &marks {
        match *kind {
            "queued" => queued_order.push(id.as_str()),
            "started" => {
                running += 1;
                max_running = max_running.max(running);
                started_order.push(id.as_str());
                *starts.entry(id.as_str()).or_default() += 1;
            }
            _ => running -= 1,
        }
    }
    assert_eq!(started_order.len(), N, "every run started exactly once");
    assert!(starts.values().all(|n| *n == 1));
    assert!(
        max_running <= CAP,
        "{max_running} runs at once in the event log (cap {CAP})"
    );
    // A run holds its slot from its claim until its worktree is dealt with, a little
    // past its end in the log: the slots the daemon held at once are its own count.
    let peak = rig.get("/readyz")["running_peak"].as_u64();
    assert_eq!(
        peak,
        Some(CAP as u64),
        "the daemon should fill its {CAP} slots under this load"
    );
    assert!(
        max_ready as usize <= CAP,
        "/readyz showed {max_ready} running"
    );
    assert_eq!(
        started_order, queued_order,
        "runs of equal priority start in dispatch (queue) order"
    );
    let busy = Duration::from_millis((last_finish - first_start).max(1) as u64);
    let cpu_s = (cpu1 - cpu0) as f64 / clk_tck() as f64;
    eprintln!(
        "load: {N} sessions (cap {CAP}) in {elapsed:?} end to end; first start → last finish {busy:?} = {:.1} sessions/s; daemon CPU {cpu_s:.1} s; RSS after {} KiB; max concurrency seen {max_running} (events) / {max_ready} (/readyz) / {peak:?} slots held at once",
        N as f64 / busy.as_secs_f64(),
        rss
    );
}

/// Footprint: RSS of an idle daemon, RSS per queued session (nothing may start:
/// `max_concurrent_sessions: 0`) and CPU while idle. Asserts the per-session target in
/// every build and the idle target in release builds (debug binaries are larger); prints
/// the numbers recorded in docs/benchmarks.md.
#[test]
fn footprint_idle_and_per_queued_session() {
    // Debug dispatches are slow (~25 ms each on 2 cores): fewer there, and shorter windows.
    let (n, window) = if cfg!(debug_assertions) {
        (300, Duration::from_secs(2))
    } else {
        (1000, Duration::from_secs(5))
    };
    let mut rig = Rig::new(RigSpec {
        daemon: &["max_concurrent_sessions: 0"],
        remote: false,
        ..RigSpec::default()
    });
    rig.start_daemon();
    let pid = rig.daemon.as_ref().unwrap().pid();
    let tck = clk_tck() as f64;
    // Let start-up settle, then measure idle CPU over the window.
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, c0) = rss_and_cpu(pid);
    std::thread::sleep(window);
    let (_, c1) = rss_and_cpu(pid);
    let pct = |ticks: u64| ticks as f64 / tck / window.as_secs_f64() * 100.0;
    let idle_cpu = pct(c1 - c0);

    let bodies: Vec<Value> = (0..n)
        .map(|i| json!({"workflow": "e2e-one", "goal": format!("queued #{i:04}")}))
        .collect();
    let t = Instant::now();
    let ids = rig.dispatch_many(bodies, 4);
    let dispatch = t.elapsed();
    assert_eq!(ids.len(), n);
    let ready = rig.get("/readyz");
    assert_eq!(ready["queue_depth"], n, "{ready}");
    assert_eq!(ready["running"], 0);
    // Let the scheduler pass over the queue a few times (it reads it every second), then
    // measure.
    std::thread::sleep(Duration::from_millis(1500));
    let (queued_rss, c2) = rss_and_cpu(pid);
    std::thread::sleep(window);
    let (queued_rss2, c3) = rss_and_cpu(pid);
    let queued_cpu = pct(c3 - c2);
    let per_session = (queued_rss.max(queued_rss2) as f64 - idle_rss as f64) / n as f64;
    eprintln!(
        "footprint ({} build): idle RSS {idle_rss} KiB, idle CPU {idle_cpu:.2} %; {n} queued: RSS {queued_rss}/{queued_rss2} KiB → {per_session:.1} KiB per queued session, CPU {queued_cpu:.2} %; {n} dispatches from 4 clients in {dispatch:?} ({:.0}/s)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        n as f64 / dispatch.as_secs_f64()
    );
    assert!(
        per_session <= 1024.0,
        "{per_session:.1} KiB per queued session (target ≤ 1 MiB)"
    );
    if !cfg!(debug_assertions) {
        assert!(
            idle_rss <= 40 * 1024,
            "idle RSS {idle_rss} KiB (target ≤ 40 MiB)"
        );
    }
    // Queued work leaves nothing on disk but rows: no worktrees were made.
    assert!(rig.worktrees().is_empty());
}

/// Rewinding a daemon session restores its worktree to the state the re-entered step
/// started from (the snapshot of the step before it), records it, and `retry` continues
/// the run from there.
#[test]
fn rewind_restores_the_worktree_and_retry_continues() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const GOAL: &str = "goal-rewind-R1";
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            GOAL,
            vec![
                write_file("a.txt", "from the first step\n"),
                complete("first done"),
                write_file("b.txt", "from the second step\n"),
                complete("second done"),
                complete("ready for review"),
                // After the rewind and retry: the second step again.
                shell("test -f a.txt && test ! -e b.txt && echo restored-as-expected"),
                write_file("c.txt", "second step, take two\n"),
                complete("second done again"),
                complete("ready for review again"),
            ],
        )],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-rewind", GOAL, &[]);
    rig.wait_run_state(&id, "parked", Duration::from_secs(30));
    let wt = rig.worktree_of(&id);
    assert!(wt.join("a.txt").is_file() && wt.join("b.txt").is_file());

    // While the run is parked (not running), rewind to the second step.
    let rewound = rig.cli(&["session", "rewind", &id, "--to", "second", "--json"]);
    assert_eq!(rewound.code, 0, "{}", rewound.stderr);
    assert!(wt.join("a.txt").is_file(), "the first step's work stays");
    assert!(
        !wt.join("b.txt").exists(),
        "the second step's work is undone"
    );
    let ev = rig.events(&id);
    let restored = of_kind(&ev, "worktree_restored");
    assert_eq!(restored.len(), 1, "{:?}", kinds(&ev));
    let snapshots = of_kind(&ev, "step_snapshotted");
    let first_node_snapshot = snapshots
        .iter()
        .find(|e| e["body"]["node"] == 1)
        .expect("snapshot of the first step");
    assert_eq!(
        restored[0]["body"]["commit"],
        first_node_snapshot["body"]["commit"]
    );
    assert!(
        snapshots.iter().any(|e| e["body"]["node"] == 0),
        "a snapshot before the first step exists"
    );

    // Retry continues the run from the re-entered step.
    let retried = rig.cli(&["session", "retry", &id]);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    rig.wait_run_state(&id, "parked", Duration::from_secs(30));
    let reqs = rig.requests_for(GOAL);
    assert!(
        reqs.iter().any(|r| r.raw.contains("restored-as-expected")),
        "the retried agent saw the restored worktree"
    );
    assert!(wt.join("c.txt").is_file());
    rig.env.verify_ok(&id);
}
