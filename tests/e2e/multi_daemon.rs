//! Several daemons on one PostgreSQL store: three real `worktrain daemon` processes, each
//! with its own home (same keyring), sharing one database, one fake LLM and one cron
//! schedule. Many sessions are dispatched to all three; the leader is SIGKILLed mid-run.
//! Checked from the event log alone: every session completes, each step is completed once,
//! a run starts again only after its previous run was interrupted, the cluster-wide cap is
//! never exceeded, the dead daemon's runs are resumed by the others after lease expiry, and
//! the schedule keeps firing exactly once per slot under the new leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use worktrain_testkit::Turn;

use crate::daemon_rig::{
    Rig, RigSpec, complete, git, have_git, kinds, result_of, route, shell, wait_for, write_file,
};
use crate::support::postgres_database;

const DAEMONS: usize = 3;
/// Sessions dispatched (spread over the three daemons).
const N: usize = 500;
/// `max_concurrent_sessions` of every daemon: a cap over the whole store.
const CAP: usize = 6;
/// Schedule period (seconds).
const TICK: u64 = 2;
/// Every `SLOW_EVERY`th session is slow (2 s): enough of them that the leader is surely
/// running one when the test looks (with fewer, a fast store finished them all first).
const SLOW_EVERY: usize = 5;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The fake model thinks a little, then completes the step (so runs overlap and a
/// SIGKILL finds some mid-run).
fn slow_complete() -> Turn {
    Turn::Delay {
        ms: 150,
        then: Box::new(complete("done")),
    }
}

/// The worker-id prefix of a daemon's runs (`worker-<tag>-<pid>-`): its pid.
fn worker_pid(worker: &str) -> u32 {
    worker
        .split('-')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected worker id {worker}"))
}

/// Point every rig's daemon at one PostgreSQL store, the first rig's model and the first
/// rig's keyring (tokens minted by one daemon verify on every other one).
fn share_store(rigs: &[Rig], url: &str) {
    let llm_url = rigs[0].llm.base_url().to_owned();
    let keyring = std::fs::read(rigs[0].env.home().join("keyring.json")).unwrap();
    for (i, rig) in rigs.iter().enumerate() {
        let home = rig.env.home();
        let mut config = std::fs::read_to_string(home.join("config.yaml")).unwrap();
        if i > 0 {
            config = config.replace(rig.llm.base_url(), &llm_url);
            std::fs::write(home.join("keyring.json"), &keyring).unwrap();
        }
        config.push_str(&format!("store:\n  url: {url}\n  max_connections: 8\n"));
        std::fs::write(home.join("config.yaml"), config).unwrap();
    }
}

#[test]
fn three_daemons_on_one_postgres_store_run_every_session_once_through_a_sigkill() {
    let Some(db) = postgres_database() else {
        return;
    };
    let daemon_lines: &[&str] = &["max_concurrent_sessions: 6", "lease_secs: 5"];
    let mut rigs: Vec<Rig> = (0..DAEMONS)
        .map(|i| {
            Rig::new(RigSpec {
                daemon: daemon_lines,
                // One model for the whole cluster (the first rig's): a resumed run asks it
                // again, whichever daemon resumes it. Every SLOW_EVERY-th session is slow, so
                // that the SIGKILL surely finds one running on the leader.
                turns: if i == 0 {
                    (0..N + 200).map(|_| slow_complete()).collect()
                } else {
                    Vec::new()
                },
                routes: if i == 0 {
                    (0..N)
                        .filter(|i| i % SLOW_EVERY == 0)
                        .map(|i| {
                            route(
                                &format!("slow #{i:04}"),
                                vec![
                                    Turn::Delay {
                                        ms: 2000,
                                        then: Box::new(complete("done")),
                                    },
                                    complete("done"),
                                ],
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                heartbeat: "1s",
                remote: false,
                ..RigSpec::default()
            })
        })
        .collect();
    share_store(&rigs, &db.url);
    let triggers = "version: 1
triggers:
  - id: tick
    workflow: e2e-one
    goal: 'tick {{ $.scheduled_at }}'
    source:
      schedule: {cron: '*/2 * * * * *', overlap: allow}
";
    for rig in &rigs {
        std::fs::write(rig.env.home().join("triggers.yml"), triggers).unwrap();
    }
    // The first daemon to start leads (schedules run there).
    for rig in &mut rigs {
        rig.start_daemon();
    }
    wait_for(
        "the first daemon to lead",
        Duration::from_secs(20),
        || rigs[0].log_tail().contains("leading").then_some(()),
        || rigs[0].log_tail(),
    );
    let pids: Vec<u32> = rigs
        .iter()
        .map(|r| r.daemon.as_ref().unwrap().pid())
        .collect();

    // Dispatch to all three daemons at once.
    let t0 = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = rigs
            .iter()
            .enumerate()
            .map(|(d, rig)| {
                s.spawn(move || {
                    let bodies: Vec<Value> = (0..N)
                        .filter(|i| i % DAEMONS == d)
                        .map(|i| {
                            let kind = if i % SLOW_EVERY == 0 { "slow " } else { "" };
                            json!({"workflow": "e2e-one", "goal": format!("cluster {kind}#{i:04}")})
                        })
                        .collect();
                    rig.dispatch_many(bodies, 2)
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), N);
    let count_completed = |rig: &Rig| {
        rig.cli(&[
            "--json", "sessions", "--search", "cluster", "--status", "complete", "--limit", "1000",
        ])
        .json()["sessions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // Mid-run: a good part done, and the leader in the middle of a slow run of its own.
    wait_for(
        "a fifth of the sessions to complete",
        Duration::from_secs(300),
        || (count_completed(&rigs[1]) >= N / 5).then_some(()),
        || format!("{}\n{}", rigs[0].log_tail(), rigs[1].log_tail()),
    );
    wait_for(
        "the leader to run a slow session",
        Duration::from_secs(120),
        || {
            let list = rigs[0].get("/api/v1/sessions?run_state=running&q=slow&limit=100");
            list["sessions"]
                .as_array()?
                .iter()
                .any(|s| {
                    s["run"]["worker"]
                        .as_str()
                        .is_some_and(|w| worker_pid(w) == pids[0])
                })
                .then_some(())
        },
        || format!("{}\n{}", rigs[0].log_tail(), rigs[1].log_tail()),
    );
    let killed_at_ms = now_ms();
    rigs[0].sigkill_daemon();

    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (code, results) = rigs[1].await_all(&refs, "600s");
    let elapsed = t0.elapsed();
    assert_eq!(code, 0, "{results:#?}\n{}", rigs[1].log_tail());
    assert_eq!(results.len(), N);
    assert!(
        results.iter().all(|r| r["outcome"] == "completed"),
        "{results:#?}"
    );
    // Let the new leader fire a few more slots.
    std::thread::sleep(Duration::from_secs(3 * TICK));

    // Every session from its own event log; the run marks in the store's global order.
    let mut marks: Vec<(u64, &'static str)> = Vec::new();
    let mut started_by: BTreeMap<u32, usize> = BTreeMap::new();
    let mut resumed = 0usize;
    let mut resumed_from_killed = 0usize;
    for id in &ids {
        let events = rigs[1].api_events(id);
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["body"]["type"].as_str().unwrap_or("?"))
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count("step_completed"), 1, "{id}: {kinds:?}");
        assert_eq!(count("run_finished"), 1, "{id}: {kinds:?}");
        let fin = events
            .iter()
            .find(|e| e["body"]["type"] == "run_finished")
            .unwrap();
        assert_eq!(fin["body"]["end"], "completed", "{id}: {fin}");
        // A run starts again only after the previous one was interrupted and requeued.
        let mut open = false;
        let mut last_worker = None;
        for (e, k) in events.iter().zip(&kinds) {
            let pos = e["position"].as_u64().expect("position");
            match *k {
                "run_started" => {
                    assert!(!open, "{id}: a run started while another ran: {kinds:?}");
                    open = true;
                    let w = e["body"]["worker"].as_str().unwrap();
                    if last_worker.is_some() {
                        resumed += 1;
                        if last_worker == Some(pids[0]) {
                            resumed_from_killed += 1;
                        }
                    }
                    last_worker = Some(worker_pid(w));
                    *started_by.entry(worker_pid(w)).or_default() += 1;
                    marks.push((pos, "start"));
                }
                "run_interrupted" | "run_finished" => {
                    assert!(open, "{id}: {k} without a running run: {kinds:?}");
                    open = false;
                    marks.push((pos, "end"));
                }
                _ => {}
            }
        }
        let interrupted = count("run_interrupted");
        assert_eq!(count("run_started"), 1 + interrupted, "{id}: {kinds:?}");
        assert_eq!(count("run_requeued"), interrupted, "{id}: {kinds:?}");
    }
    // Caps over the whole cluster (scheduled runs are left out: they only lower this).
    marks.sort_unstable();
    let (mut running, mut max_running) = (0usize, 0usize);
    for (_, m) in &marks {
        if *m == "start" {
            running += 1;
            max_running = max_running.max(running);
        } else {
            running -= 1;
        }
    }
    assert!(
        max_running <= CAP,
        "{max_running} runs at once over the cluster (cap {CAP})"
    );
    for pid in &pids {
        assert!(
            started_by.get(pid).copied().unwrap_or(0) > 0,
            "daemon {pid} started no run: {started_by:?}"
        );
    }
    assert!(
        resumed_from_killed > 0,
        "no run of the killed daemon was resumed elsewhere ({resumed} resumed)"
    );

    // The schedule fired once per slot, before and after the leader died.
    let ticks = rigs[1]
        .cli(&["--json", "sessions", "--search", "tick ", "--limit", "1000"])
        .json();
    let mut slots: Vec<i64> = Vec::new();
    for s in ticks["sessions"].as_array().unwrap() {
        let goal = s["goal"].as_str().unwrap();
        let at = goal.strip_prefix("tick ").unwrap();
        let t = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{goal}: {e}"));
        slots.push(i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap());
    }
    slots.sort_unstable();
    let unique: BTreeSet<i64> = slots.iter().copied().collect();
    assert_eq!(unique.len(), slots.len(), "a slot fired twice: {slots:?}");
    let step = i64::try_from(TICK * 1000).unwrap();
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], step, "a slot was lost: {slots:?}");
    }
    assert!(
        slots.first().is_some_and(|t| *t < killed_at_ms),
        "no slot fired before the kill: {slots:?}"
    );
    assert!(
        slots.iter().filter(|t| **t > killed_at_ms + 2000).count() >= 2,
        "the schedule stopped with its leader (killed at {killed_at_ms}): {slots:?}"
    );
    eprintln!(
        "cluster: {N} sessions over {DAEMONS} daemons (cap {CAP}) in {elapsed:?}; runs started per daemon {started_by:?}; {resumed} resumed ({resumed_from_killed} from the killed daemon); max concurrency {max_running}; {} schedule slots, none twice, none lost",
        slots.len()
    );
}

/// Two daemons with 3-second leases on one PostgreSQL store: the first runs `goal`, whose
/// agent runs `command` (which touches `started` first) and then must not be asked
/// again; once `started` exists the second daemon starts. The rigs and the session id.
fn one_run_then_a_second_daemon(db_url: &str, goal: &str, command: &str) -> (Vec<Rig>, String) {
    let lines: &[&str] = &["lease_secs: 3"];
    let mut rigs = vec![
        Rig::new(RigSpec {
            daemon: lines,
            routes: vec![route(goal, vec![shell(command), complete("must not run")])],
            ..RigSpec::default()
        }),
        Rig::new(RigSpec {
            daemon: lines,
            ..RigSpec::default()
        }),
    ];
    share_store(&rigs, db_url);
    rigs[0].start_daemon();
    let id = rigs[0].spawn_in_repo("e2e-one", goal, &[]);
    rigs[0].wait_file(&id, "started", Duration::from_secs(60));
    rigs[1].start_daemon();
    (rigs, id)
}

/// A run whose daemon died is resumed by another daemon; its worktree (with the agent's
/// uncommitted changes) stayed with the dead one. The run fails with a recorded reason
/// instead of silently starting the step over in a fresh worktree, and the agent is not
/// run again.
#[test]
fn a_run_resumed_on_another_daemon_never_silently_starts_over() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let Some(db) = postgres_database() else {
        return;
    };
    const GOAL: &str = "work that lives in one worktree";
    let (mut rigs, id) =
        one_run_then_a_second_daemon(&db.url, GOAL, "touch started && sleep 20.717");
    rigs[0].sigkill_daemon();

    let (code, results) = rigs[1].await_all(&[&id], "90s");
    assert_eq!(code, 1, "{results:#?}");
    let r = result_of(&results, &id);
    assert_eq!(
        (r["outcome"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("worktree_failed")),
        "{r:#}"
    );
    let events = rigs[1].events(&id);
    let k = kinds(&events);
    let i = k
        .iter()
        .position(|k| k == "run_interrupted")
        .expect("interrupted");
    assert_eq!(
        k[i..].iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "run_interrupted",
            "run_requeued",
            "run_started",
            "run_finished"
        ],
        "{k:?}"
    );
    let fin = events.last().unwrap();
    let detail = fin["body"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("not started over silently") && detail.contains("session retry"),
        "{fin}"
    );
    let workers: Vec<&str> = events
        .iter()
        .filter(|e| e["body"]["type"] == "run_started")
        .map(|e| e["body"]["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2);
    assert_ne!(
        worker_pid(workers[0]),
        worker_pid(workers[1]),
        "resumed by the other daemon"
    );
    // The agent never ran again, and no fresh worktree was made for it.
    assert_eq!(rigs[0].requests_for(GOAL).len(), 1);
    assert!(!rigs[1].worktree_of(&id).exists());
}

/// Host A (sharing its snapshots when `a_shares`) runs a two-step session on a
/// PostgreSQL store and dies in the second step; host B (sharing on) gets its own clone
/// of the repository at the same path and starts. The rigs, the session and the repository.
fn killed_mid_step_then_host_b(
    db_url: &str,
    a_shares: bool,
) -> (Vec<Rig>, String, std::path::PathBuf) {
    const GOAL: &str = "work carried to another host";
    let lines: &[&str] = &["lease_secs: 3"];
    let mut rigs = vec![
        Rig::new(RigSpec {
            daemon: lines,
            routes: vec![route(
                GOAL,
                vec![
                    write_file("kept.txt", "written on host A"),
                    complete("first step done"),
                    shell("touch started && sleep 20.713"),
                    shell("cat kept.txt > seen.txt && ls"),
                    complete("second step done"),
                ],
            )],
            ..RigSpec::default()
        }),
        Rig::new(RigSpec {
            daemon: lines,
            ..RigSpec::default()
        }),
    ];
    share_store(&rigs, db_url);
    for (i, rig) in rigs.iter().enumerate() {
        if i == 0 && !a_shares {
            continue;
        }
        let path = rig.env.home().join("config.yaml");
        let config = std::fs::read_to_string(&path).unwrap();
        let shared = config.replace(
            "keep_failed_hours: 1}",
            "keep_failed_hours: 1, share_snapshots: true}",
        );
        assert_ne!(shared, config);
        std::fs::write(&path, shared).unwrap();
    }
    rigs[0].start_daemon();
    let id = rigs[0].spawn_in_repo("e2e-two", GOAL, &[]);
    rigs[0].wait_file(&id, "started", Duration::from_secs(60));
    rigs[0].sigkill_daemon();
    // Host B: its own clone of the same remote at the same path (nothing of host A's
    // refs, branch or worktree), its own home.
    let repo = rigs[0].repo.clone();
    let remote = rigs[0].env.dir().join("remote.git");
    std::fs::remove_dir_all(&repo).unwrap();
    git(
        rigs[0].env.dir(),
        &[
            "clone",
            "-q",
            remote.to_str().unwrap(),
            repo.to_str().unwrap(),
        ],
    );
    let shared = git(
        &repo,
        &["ls-remote", "origin", &format!("refs/worktrain/{id}/*")],
    );
    assert_eq!(
        shared.contains(&format!("refs/worktrain/{id}/n1")),
        a_shares,
        "{shared}"
    );
    rigs[1].start_daemon();

    (rigs, id, repo)
}

/// Host A did not share its snapshots: host B, which would take the run over, finds
/// none and fails it with the reason recorded — it does not start the step over.
#[test]
fn a_takeover_without_the_snapshot_on_the_remote_fails_with_the_reason() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let Some(db) = postgres_database() else {
        return;
    };
    let (rigs, id, repo) = killed_mid_step_then_host_b(&db.url, false);
    let (code, results) = rigs[1].await_all(&[&id], "90s");
    assert_eq!(code, 1, "{results:#?}");
    let r = result_of(&results, &id);
    assert_eq!(
        (r["outcome"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("worktree_failed")),
        "{r:#}"
    );
    let events = rigs[1].events(&id);
    let fin = events.last().unwrap();
    let detail = fin["body"]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("is not on `origin`") && detail.contains("not started over silently"),
        "{fin}"
    );
    assert!(!kinds(&events).contains(&"worktree_restored".to_owned()));
    assert!(!rigs[1].worktree_of(&id).exists());
    assert!(
        git(&repo, &["branch", "--list", &format!("worktrain/{id}")])
            .trim()
            .is_empty(),
        "no session branch was made on host B"
    );
}

/// With `share_snapshots`, every step snapshot is pushed to the workspace's remote. The
/// daemon running a session dies mid-step; another daemon — on another host: its own home
/// and its own clone of the repository — takes the run over from the last snapshot: the
/// work of the accepted step (an uncommitted file) is in its worktree, the interrupted step
/// runs again there, and the session completes with all of it on its branch.
#[test]
fn a_run_taken_over_by_another_host_continues_from_its_shared_snapshot() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let Some(db) = postgres_database() else {
        return;
    };
    let (rigs, id, repo) = killed_mid_step_then_host_b(&db.url, true);
    let (code, results) = rigs[1].await_all(&[&id], "90s");
    assert_eq!(code, 0, "{results:#?}\n{}", rigs[1].log_tail());
    assert_eq!(result_of(&results, &id)["outcome"], "completed");
    let events = rigs[1].events(&id);
    let k = kinds(&events);
    let resumed = k
        .iter()
        .rposition(|k| k == "run_started")
        .expect("run started");
    assert!(
        k[..resumed].contains(&"run_interrupted".to_owned()),
        "{k:?}"
    );
    let restored = events[resumed..]
        .iter()
        .find(|e| e["body"]["type"] == "worktree_restored")
        .unwrap_or_else(|| panic!("no worktree_restored after the takeover: {k:?}"));
    let snapshot_n1 = events
        .iter()
        .find(|e| {
            e["body"]["type"] == "step_snapshotted"
                && e["body"]["git_ref"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/n1"))
        })
        .unwrap_or_else(|| panic!("no snapshot of n1: {k:?}"));
    assert_eq!(restored["body"]["commit"], snapshot_n1["body"]["commit"]);
    let workers: Vec<&str> = events
        .iter()
        .filter(|e| e["body"]["type"] == "run_started")
        .map(|e| e["body"]["worker"].as_str().unwrap())
        .collect();
    assert_ne!(
        worker_pid(workers[0]),
        worker_pid(workers[workers.len() - 1])
    );
    // The accepted step's work came across; the interrupted step ran again over there.
    let branch = format!("worktrain/{id}");
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:kept.txt")]).trim(),
        "written on host A"
    );
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:seen.txt")]).trim(),
        "written on host A"
    );
    // What host A did after the last snapshot (the interrupted step) is not carried.
    assert!(
        !git(&repo, &["ls-tree", "--name-only", &branch]).contains("started"),
        "work after the snapshot came across"
    );
}

/// A daemon that stalls past its lease (SIGSTOP) loses its run to another daemon; when it
/// wakes up, it finds the run taken over (at its next append or lease renewal, whichever
/// comes first) and stops its own copy at once: no further model turn, nothing recorded
/// into the new owner's history, and the agent's command never finishes.
#[test]
fn a_daemon_that_lost_its_lease_stops_its_run() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let Some(db) = postgres_database() else {
        return;
    };
    const GOAL: &str = "work that outlives a stalled daemon";
    let started = Instant::now();
    let (rigs, id) = one_run_then_a_second_daemon(
        &db.url,
        GOAL,
        "touch started && sleep 30 && touch finished-here",
    );
    let stalled = rigs[0].daemon.as_ref().unwrap().pid();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args(["-s", sig, &stalled.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} {stalled}");
    };
    signal("STOP");
    // The other daemon takes the run over once the lease has expired.
    let (code, results) = rigs[1].await_all(&[&id], "90s");
    signal("CONT");
    assert_eq!(code, 1, "{results:#?}");
    let taken_over = rigs[1].events(&id);
    let first_worker = taken_over
        .iter()
        .find(|e| e["body"]["type"] == "run_started")
        .and_then(|e| e["body"]["worker"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(worker_pid(&first_worker), stalled);
    // Awake again, the stalled daemon finds the run taken over and stops its copy.
    wait_for(
        "the stalled daemon to notice its lost lease",
        Duration::from_secs(30),
        || {
            rigs[0]
                .log_tail()
                .contains("stopping it here")
                .then_some(())
        },
        || rigs[0].log_tail(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the takeover took longer than the command; nothing left to observe"
    );
    let deadline = started + Duration::from_secs(34);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    // (The worktree stays on the host that lost the run: its work is never deleted. On one
    // host the new owner also reaps the old run's leftover processes before resuming.)
    assert!(rigs[0].worktree_of(&id).join("started").exists());
    assert!(
        !rigs[0].worktree_of(&id).join("finished-here").exists(),
        "the command kept running on the daemon that lost its lease"
    );
    // Nothing more was recorded, by either daemon, once the new owner had finished.
    let after = rigs[1].events(&id);
    assert_eq!(
        after.len(),
        taken_over.len(),
        "{:#?}",
        &after[taken_over.len()..]
    );
    assert!(
        after
            .iter()
            .skip_while(|e| e["body"]["type"] != "run_interrupted")
            .all(|e| e["body"]["worker"]
                .as_str()
                .is_none_or(|w| w != first_worker)),
        "the stalled daemon recorded after losing its lease: {after:#?}"
    );
    // The model was asked once: the run never started over anywhere.
    assert_eq!(rigs[0].requests_for(GOAL).len(), 1);
}

/// Webhooks on several daemons: any daemon accepts and persists a delivery, the leader
/// processes it, and a redelivery to any daemon is recognised in the database — one
/// session, whichever daemon each copy reached.
#[test]
fn a_webhook_delivered_to_two_daemons_starts_one_session() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let Some(db) = postgres_database() else {
        return;
    };
    let mut rigs = vec![
        Rig::new(RigSpec {
            routes: vec![route(
                "Spelling error in the README",
                vec![complete("fixed the typo")],
            )],
            ..RigSpec::default()
        }),
        Rig::new(RigSpec::default()),
    ];
    share_store(&rigs, &db.url);
    // Same triggers everywhere, working in the first rig's repository.
    let triggers = crate::triggers::triggers_yml(&rigs[0], "");
    for rig in &rigs {
        std::fs::write(rig.env.home().join("triggers.yml"), &triggers).unwrap();
    }
    rigs[0].start_daemon();
    wait_for(
        "the first daemon to lead",
        Duration::from_secs(20),
        || rigs[0].log_tail().contains("leading").then_some(()),
        || rigs[0].log_tail(),
    );
    rigs[1].start_daemon();
    let body = crate::triggers::corpus("issues.labeled.json");
    // The follower accepts and persists it; the leader dispatches it.
    let (status, answer) = crate::triggers::deliver(&rigs[1], "issues", "delivery-x", &body);
    assert_eq!(status, 202, "{answer}\n{}", rigs[1].log_tail());
    let delivery = answer["delivery"].as_i64().unwrap();
    let dispatched = wait_for(
        "the delivery to be dispatched",
        Duration::from_secs(30),
        || {
            crate::triggers::decisions(&rigs[1])
                .into_iter()
                .find(|d| d["delivery_id"] == json!(delivery) && d["decision"] == "dispatched")
        },
        || format!("{}\n{}", rigs[0].log_tail(), rigs[1].log_tail()),
    );
    let id = dispatched["session_id"].as_str().unwrap().to_owned();
    // The same delivery to either daemon: a duplicate, nothing dispatched.
    for rig in &rigs {
        let (status, answer) = crate::triggers::deliver(rig, "issues", "delivery-x", &body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], true, "{answer}");
    }
    rigs[0].wait_run_state(&id, "completed", Duration::from_secs(60));
    let sessions = rigs[1]
        .cli(&[
            "--json",
            "sessions",
            "--search",
            "Spelling error",
            "--limit",
            "100",
        ])
        .json();
    let ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let decisions = crate::triggers::decisions(&rigs[0]);
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d["decision"] == "dispatched")
            .count(),
        1,
        "{decisions:#?}"
    );
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d["decision"] == "duplicate")
            .count(),
        2,
        "{decisions:#?}"
    );
}

/// Run throughput with 1, 2 and 3 daemons on one PostgreSQL store (the numbers in
/// docs/benchmarks.md): the same sessions, spread over the daemons, against a model that
/// answers at once; sessions per second from the first `run_started` to the last
/// `run_finished`. Asserts only that every session completed; prints the measurement.
#[test]
fn run_throughput_with_one_two_and_three_daemons() {
    let Some(_) = postgres_database() else {
        return;
    };
    let n: usize = std::env::var("BENCH_CLUSTER_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let mut rates = Vec::new();
    for daemons in 1..=3usize {
        let db = postgres_database().unwrap();
        let mut rigs: Vec<Rig> = (0..daemons)
            .map(|i| {
                Rig::new(RigSpec {
                    daemon: &["max_concurrent_sessions: 8"],
                    turns: if i == 0 {
                        (0..n).map(|_| complete("done")).collect()
                    } else {
                        Vec::new()
                    },
                    heartbeat: "1s",
                    remote: false,
                    ..RigSpec::default()
                })
            })
            .collect();
        share_store(&rigs, &db.url);
        for rig in &mut rigs {
            rig.start_daemon();
        }
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = rigs
                .iter()
                .enumerate()
                .map(|(d, rig)| {
                    s.spawn(move || {
                        let bodies: Vec<Value> = (0..n)
                            .filter(|i| i % daemons == d)
                            .map(
                                |i| json!({"workflow": "e2e-one", "goal": format!("rate #{i:04}")}),
                            )
                            .collect();
                        rig.dispatch_many(bodies, 2)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (code, results) = rigs[0].await_all(&refs, "300s");
        assert_eq!(code, 0, "{results:#?}");
        let (mut first, mut last) = (i64::MAX, 0i64);
        let mut per_daemon: BTreeMap<u32, usize> = BTreeMap::new();
        for id in &ids {
            for e in rigs[0].api_events(id) {
                let at = e["created_at_ms"].as_i64().unwrap();
                match e["body"]["type"].as_str() {
                    Some("run_started") => {
                        first = first.min(at);
                        *per_daemon
                            .entry(worker_pid(e["body"]["worker"].as_str().unwrap()))
                            .or_default() += 1;
                    }
                    Some("run_finished") => last = last.max(at),
                    _ => {}
                }
            }
        }
        let secs =
            Duration::from_millis(u64::try_from((last - first).max(1)).unwrap()).as_secs_f64();
        let rate = n as f64 / secs;
        eprintln!(
            "cluster throughput: {daemons} daemon(s), {n} sessions: {rate:.1} sessions/s (first start → last finish {secs:.2} s); runs per daemon {:?}",
            per_daemon.values().collect::<Vec<_>>()
        );
        rates.push(rate);
    }
    eprintln!(
        "cluster throughput relative to one daemon: 2 → {:.2}×, 3 → {:.2}×",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );
}
