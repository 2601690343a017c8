//! Finished work is never lost, and the documented setups work as shipped: with the real
//! daemon, real git repositories and real agents (the fake LLM for the built-in loop, and
//! an external agent written with the official Python MCP SDK).

use std::path::Path;
use std::time::Duration;

use crate::daemon_rig::{
    Rig, RigSpec, complete, git, have_git, kinds, of_kind, result_of, route, wait_for, write_file,
};
use crate::support::exit;

/// The external agent script (it fails, not skips, when the `mcp` package is missing:
/// CI installs it from tests/mcp/requirements.txt).
fn external_agent_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/mcp/external_agent.py")
        .canonicalize()
        .expect("tests/mcp/external_agent.py")
        .display()
        .to_string()
}

/// `kind: command` with an agent that discovers its tools only from `tools/list` (as
/// Claude Code and Codex do), reads each step, edits a file and completes every step
/// through worktrain's MCP server in session-bound mode. Each step it completes is
/// snapshotted, `session diff` shows its edits, and the result is a commit on the
/// session branch.
#[test]
fn an_external_mcp_agent_works_every_step_and_its_edit_is_committed() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let agents = format!(
        "  external:\n    kind: command\n    program: python3\n    args: [\"{}\", \"{{mcp_config}}\"]\n    prompt: stdin\n    invocation_timeout: 60s\n",
        external_agent_script()
    );
    let mut rig = Rig::new(RigSpec {
        agents: &agents,
        ..RigSpec::default()
    });
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-two", "goal-external-X1", &["--agent", "external"]);
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    let ev = rig.events(&id);
    let outputs: Vec<String> = ev
        .iter()
        .filter(|e| e["body"]["type"] == "agent_activity")
        .filter_map(|e| e["body"]["activity"]["text"].as_str().map(str::to_owned))
        .collect();
    let joined = outputs.join("");
    assert_eq!(
        code,
        exit::OK,
        "{r:#}\nagent output:\n{joined}\n{}",
        rig.log_tail()
    );
    assert_eq!(r["succeeded"], true, "{r:#}");
    assert!(
        joined.contains("tools/list: ['current_step', 'complete_step']"),
        "the agent saw exactly the bound tools: {joined}"
    );
    let snapshots: Vec<u64> = of_kind(&ev, "step_snapshotted")
        .iter()
        .filter_map(|e| e["body"]["node"].as_u64())
        .collect();
    assert_eq!(
        snapshots,
        [0, 1, 2],
        "every completed step is snapshotted, whoever advanced it: {:?}",
        kinds(&ev)
    );
    let diff = rig.env.ok_json(&["session", "diff", &id]);
    let steps = diff["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{diff:#}");
    assert!(
        steps[1]["patch"]
            .as_str()
            .unwrap_or("")
            .contains("+did step second"),
        "{diff:#}"
    );

    let branch = format!("worktrain/{id}");
    assert_eq!(r["branch"], branch.as_str(), "{r:#}");
    let commit = r["commit"].as_str().expect("commit");
    assert_eq!(git(&rig.repo, &["rev-parse", &branch]).trim(), commit);
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:WORK.md")]),
        "did step first\ndid step second\n"
    );
    assert!(
        !rig.worktree_of(&id).exists(),
        "the worktree of a completed run is removed"
    );
    rig.env.verify_ok(&id);
}

/// Rewinding a completed session (whose worktree was removed after its work was
/// committed) and retrying it: the worktree is made again from the session branch and
/// restored to the state the re-entered step started from (`worktree_restored`) — not
/// started fresh from the base.
#[test]
fn rewinding_a_completed_session_then_retrying_restores_its_files() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const GOAL: &str = "goal-rewind-done-R2";
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            GOAL,
            vec![
                write_file("a.txt", "from the first step\n"),
                complete("first done"),
                write_file("b.txt", "from the second step\n"),
                complete("second done"),
                // After the rewind and the retry: the second step again.
                crate::daemon_rig::shell(
                    "test -f a.txt && test ! -e b.txt && echo restored-as-expected",
                ),
                write_file("c.txt", "second step, take two\n"),
                complete("second done again"),
            ],
        )],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-two", GOAL, &[]);
    let (code, results) = rig.await_all(&[&id], "60s");
    assert_eq!(code, exit::OK, "{results:#?}\n{}", rig.log_tail());
    assert!(!rig.worktree_of(&id).exists());
    let first_commit = result_of(&results, &id)["commit"]
        .as_str()
        .expect("commit")
        .to_owned();

    let rewound = rig.cli(&["session", "rewind", &id, "--to", "second"]);
    assert_eq!(rewound.code, exit::OK, "{rewound:?}");
    assert!(
        rewound
            .stderr
            .contains("restored to the re-entered step when it runs again"),
        "{rewound:?}"
    );
    assert_eq!(rig.show(&id)["run"]["restore_pending"], true);
    let retried = rig.cli(&["session", "retry", &id]);
    assert_eq!(retried.code, exit::OK, "{retried:?}");
    let (code, results) = rig.await_all(&[&id], "60s");
    assert_eq!(code, exit::OK, "{results:#?}\n{}", rig.log_tail());

    let reqs = rig.requests_for(GOAL);
    assert!(
        reqs.iter().any(|r| r.raw.contains("restored-as-expected")),
        "the retried agent found the first step's files and not the second's"
    );
    let ev = rig.events(&id);
    let restored = of_kind(&ev, "worktree_restored");
    assert_eq!(restored.len(), 1, "{:?}", kinds(&ev));
    let first_snapshot = of_kind(&ev, "step_snapshotted")
        .into_iter()
        .find(|e| e["body"]["node"] == 1)
        .expect("snapshot of the first step");
    assert_eq!(
        restored[0]["body"]["commit"],
        first_snapshot["body"]["commit"]
    );

    let branch = format!("worktrain/{id}");
    let r = result_of(&results, &id);
    let commit = r["commit"].as_str().expect("second commit");
    assert_ne!(commit, first_commit);
    assert_eq!(git(&rig.repo, &["rev-parse", &branch]).trim(), commit);
    let files = git(&rig.repo, &["ls-tree", "--name-only", &branch]);
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        ["README", "a.txt", "c.txt"],
        "b.txt was undone by the rewind"
    );
    assert_eq!(
        git(
            &rig.repo,
            &["rev-list", "--count", &format!("main..{branch}")]
        )
        .trim(),
        "2",
        "the first run's commit is kept in the history under the second"
    );
}

/// With the default `worktrees.remote: origin`, a local repository without any remote
/// simply works: the session branch starts from the local base.
#[test]
fn a_repository_without_the_configured_remote_simply_works() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const GOAL: &str = "goal-local-L1";
    let mut rig = Rig::new(RigSpec {
        remote: false,
        remote_setting: Some("origin"),
        routes: vec![route(
            GOAL,
            vec![write_file("local.txt", "local\n"), complete("done")],
        )],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-one", GOAL, &[]);
    let (code, results) = rig.await_all(&[&id], "60s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    let branch = format!("worktrain/{id}");
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:local.txt")]),
        "local\n"
    );
    assert_eq!(
        git(&rig.repo, &["merge-base", "main", &branch]).trim(),
        git(&rig.repo, &["rev-parse", "main"]).trim(),
        "branched from the local main"
    );
}

/// The default agent profile's API key variable is unset: the daemon starts anyway,
/// serves the API, reports the unusable profile in `/readyz`, `worktrain status` and its
/// log, and fails only sessions that need the profile, with that reason. Fixing
/// config.yaml is picked up without a restart, and a retried session runs with it.
#[test]
fn an_unusable_agent_profile_fails_only_its_sessions_until_config_is_fixed() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const GOAL: &str = "goal-nokey-K1";
    const VAR: &str = "WORKTRAIN_E2E_SURELY_UNSET_KEY";
    let mut rig = Rig::new(RigSpec {
        api_key: &format!("{{env: {VAR}}}"),
        routes: vec![route(GOAL, vec![complete("done after the fix")])],
        ..RigSpec::default()
    });
    rig.start_daemon();
    let ready = rig.get("/readyz");
    assert_eq!(ready["ready"], true, "{ready:#}");
    let problems = ready["problems"].to_string();
    assert!(
        problems.contains("agents.default") && problems.contains(VAR),
        "{ready:#}"
    );
    let status = rig.cli(&["status"]);
    assert_eq!(status.code, exit::OK, "{status:?}");
    assert!(
        status.stdout.contains("PROBLEM") && status.stdout.contains(VAR),
        "{status:?}"
    );
    assert!(rig.log_tail().contains(VAR), "{}", rig.log_tail());
    assert!(
        !rig.log_tail().contains('\u{1b}'),
        "a log written to a file has no colour codes: {}",
        rig.log_tail()
    );

    let id = rig.spawn_in_repo("e2e-one", GOAL, &[]);
    let (code, results) = rig.await_all(&[&id], "60s");
    assert_eq!(code, 1);
    let r = result_of(&results, &id);
    assert_eq!(r["failure"], "agent_unavailable", "{r:#}");
    assert!(
        r["detail"].as_str().unwrap_or("").contains(VAR),
        "the reason names what to fix: {r:#}"
    );
    // `session log --follow` ends for a failed run, as the event stream does.
    let mut follower = rig
        .env
        .cmd(&["session", "log", "--follow", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("session log --follow");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follower.try_wait().expect("try_wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "`session log --follow` did not exit for a failed run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Fix config.yaml in place; the daemon notices by itself.
    let config_path = rig.env.home().join("config.yaml");
    let config = std::fs::read_to_string(&config_path).expect("config.yaml");
    std::fs::write(
        &config_path,
        config.replace(&format!("{{env: {VAR}}}"), "{value: k-fixed}"),
    )
    .expect("write config.yaml");
    wait_for(
        "the fixed profile to be ready",
        Duration::from_secs(15),
        || {
            let ready = rig.get("/readyz");
            ready["problems"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(ready)
        },
        || format!("{:#}\n{}", rig.get("/readyz"), rig.log_tail()),
    );
    let retried = rig.cli(&["session", "retry", &id]);
    assert_eq!(retried.code, exit::OK, "{retried:?}");
    let (code, results) = rig.await_all(&[&id], "60s");
    assert_eq!(code, exit::OK, "{results:#?}\n{}", rig.log_tail());

    // An invalid edit is refused with its position; the working configuration stays.
    std::fs::write(&config_path, "daemon:\n  max_concurent_sessions: 2\n").expect("write");
    let reload = rig.cli(&["daemon", "reload"]);
    assert_ne!(reload.code, exit::OK, "{reload:?}");
    assert!(
        reload.stderr.contains("config.yaml:2:")
            && reload.stderr.contains("max_concurent_sessions"),
        "{reload:?}"
    );
    let ready = rig.get("/readyz");
    assert!(
        ready["config_error"]
            .as_str()
            .unwrap_or("")
            .contains("max_concurent_sessions"),
        "{ready:#}"
    );
    assert_eq!(
        ready["agents"][0]["ready"], true,
        "the previous profiles stay: {ready:#}"
    );
}
