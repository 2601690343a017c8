//! `CommandAgent` with small bash scripts standing in for Claude Code / Codex.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use worktrain_agent::{
    AgentEvent, AgentRunner, CancellationToken, CommandAgent, CommandAgentConfig,
    CountingHeartbeat, FailureReason, MemorySink, OutputStream, PromptDelivery, RunContext,
    RunOutcome,
};

use crate::common::{FileDriver, worktree};

/// Write an executable script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/usr/bin/env bash\nset -eu\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn config(program: &Path, stub: &Path) -> CommandAgentConfig {
    let mut c = CommandAgentConfig::new(program.display().to_string(), vec![]);
    c.worktrain_bin = Some(PathBuf::from("/opt/worktrain/bin/worktrain"));
    c.mcp_env
        .insert("WORKTRAIN_HOME".into(), "/tmp/wt-home".into());
    c.env.insert("STUB_DIR".into(), stub.display().to_string());
    // The stand-in agent keeps its state beside its script.
    c.sandbox.read_write.push(stub.to_path_buf());
    c.heartbeat_interval = Duration::from_millis(100);
    c.output_flush = Duration::from_millis(50);
    c.kill_grace = Duration::from_millis(500);
    c
}

fn outputs(sink: &MemorySink, stream: OutputStream) -> String {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::Output { stream: s, text } if s == stream => Some(text),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn command_agent_drives_the_workflow_to_completion() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    let prog = script(
        stub.path(),
        "agent.sh",
        r#"prompt=$(cat)
test -f "$WORKTRAIN_MCP_CONFIG"
cp "$WORKTRAIN_MCP_CONFIG" "$STUB_DIR/mcp.json"
echo "cwd=$(pwd)"
echo "session=$WORKTRAIN_SESSION_ID"
echo "got a prompt of ${#prompt} bytes"
case "$prompt" in *"Current step"*) ;; *) echo "no step in prompt" >&2; exit 9;; esac
printf '%s' "$prompt" > "$STUB_DIR/prompt-$(wc -l < "$STUB_DIR/advances" 2>/dev/null || echo 0).txt"
echo "a warning" >&2
echo advanced >> "$STUB_DIR/advances""#,
    );
    let driver = Arc::new(FileDriver {
        dir: stub.path().to_path_buf(),
        steps: 2,
    });
    let sink = Arc::new(MemorySink::new());
    let agent = CommandAgent::new(config(&prog, stub.path()));
    let outcome = agent
        .run(RunContext::new("ses_cmd1", dir.path(), driver.clone()).with_events(sink.clone()))
        .await;
    let RunOutcome::Completed { stats } = &outcome else {
        panic!("{outcome:?}\n{}", outputs(&sink, OutputStream::Stderr));
    };
    assert_eq!(stats.turns, 2);
    assert_eq!(stats.steps_completed, 1);
    assert_eq!(driver.advances(), 2);

    let stdout = outputs(&sink, OutputStream::Stdout);
    assert!(stdout.contains("session=ses_cmd1"), "{stdout}");
    assert!(stdout.contains("got a prompt of"), "{stdout}");
    let root = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        stdout.contains(&format!("cwd={}", root.display())),
        "{stdout}"
    );
    assert!(outputs(&sink, OutputStream::Stderr).contains("a warning"));
    let events = sink.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ProcessStarted { .. }))
            .count(),
        2
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                AgentEvent::ProcessExited {
                    code: Some(0),
                    killed: false,
                    ..
                }
            ))
            .count(),
        2
    );

    // The MCP config points back at worktrain, for this session.
    let mcp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stub.path().join("mcp.json")).unwrap())
            .unwrap();
    let server = &mcp["mcpServers"]["worktrain"];
    assert_eq!(server["command"], "/opt/worktrain/bin/worktrain");
    // Through the relay: the agent's side knows neither the home nor the database.
    assert_eq!(
        server["args"],
        serde_json::json!(["mcp", "--relay", "/tmp/worktrain-mcp.sock"])
    );
    assert_eq!(server["env"]["WORKTRAIN_SESSION_ID"], "ses_cmd1");
    assert!(server["env"].get("WORKTRAIN_HOME").is_none(), "{server}");
    // Each invocation got its step.
    let p0 = std::fs::read_to_string(stub.path().join("prompt-0.txt")).unwrap();
    let p1 = std::fs::read_to_string(stub.path().join("prompt-1.txt")).unwrap();
    assert!(p0.contains("Do part 1 of the task.") && p0.contains("(1 of 2)"));
    assert!(p1.contains("Do part 2 of the task.") && p1.contains("(2 of 2)"));
}

#[tokio::test]
async fn exit_zero_without_progress_is_nudged_then_fails() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    let prog = script(
        stub.path(),
        "lazy.sh",
        r#"cat >> "$STUB_DIR/prompts.txt"; echo "all done!""#,
    );
    let driver = Arc::new(FileDriver {
        dir: stub.path().to_path_buf(),
        steps: 1,
    });
    let sink = Arc::new(MemorySink::new());
    let outcome = CommandAgent::new(config(&prog, stub.path()))
        .run(RunContext::new("ses_cmd2", dir.path(), driver).with_events(sink.clone()))
        .await;
    match &outcome {
        RunOutcome::Failed { reason, stats, .. } => {
            assert_eq!(*reason, FailureReason::AgentStoppedEarly);
            assert_eq!(stats.turns, 2);
            assert_eq!(stats.nudges, 1);
        }
        other => panic!("{other:?}"),
    }
    let prompts = std::fs::read_to_string(stub.path().join("prompts.txt")).unwrap();
    assert!(
        prompts.contains("without submitting this step"),
        "the nudge must reach the agent"
    );
}

/// An agent script kept in the host's /tmp, which the sandbox replaces with the run's own:
/// the run fails, and its report names the script and how to show it — not only the
/// interpreter's "can't open file". Shown with `sandbox.read_only`, the same script runs.
#[tokio::test]
async fn a_script_in_the_hosts_tmp_that_the_sandbox_does_not_show_is_named_in_the_failure() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    let kept = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let agent = kept.path().join("agent.sh");
    std::fs::write(&agent, "cat > /dev/null; echo ran >> \"$STUB_DIR/ran\"\n").unwrap();
    let run = |shown: bool| {
        let wt = dir.path().to_path_buf();
        let mut c = config(Path::new("/bin/sh"), stub.path());
        c.args = vec![agent.display().to_string()];
        c.max_nudges = 0;
        if shown {
            c.sandbox.read_only.push(kept.path().to_path_buf());
        }
        let driver = Arc::new(FileDriver {
            dir: stub.path().to_path_buf(),
            steps: 1,
        });
        async move {
            CommandAgent::new(c)
                .run(RunContext::new("ses_cmd_tmp", &wt, driver))
                .await
        }
    };
    let hidden = run(false).await;
    let RunOutcome::Failed { reason, detail, .. } = &hidden else {
        panic!("{hidden:?}");
    };
    assert_eq!(*reason, FailureReason::AgentProcessFailed);
    let named = std::fs::canonicalize(&agent).unwrap();
    assert!(
        detail.contains(&format!("`{}`", named.display())) && detail.contains("sandbox.read_only"),
        "{detail}"
    );
    assert!(!stub.path().join("ran").exists());

    // Shown read-only, the script runs (and stops without advancing: no such note).
    let shown = run(true).await;
    assert!(stub.path().join("ran").exists(), "{shown:?}");
    let RunOutcome::Failed { reason, detail, .. } = &shown else {
        panic!("{shown:?}");
    };
    assert_eq!(*reason, FailureReason::AgentStoppedEarly);
    assert!(!detail.contains("sandbox.read_only"), "{detail}");
}

#[tokio::test]
async fn completion_is_judged_by_the_driver_not_the_exit_code() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    // Advances, then crashes: still progress.
    let prog = script(
        stub.path(),
        "crashy.sh",
        r#"cat > /dev/null; echo advanced >> "$STUB_DIR/advances"; exit 1"#,
    );
    let driver = Arc::new(FileDriver {
        dir: stub.path().to_path_buf(),
        steps: 1,
    });
    let outcome = CommandAgent::new(config(&prog, stub.path()))
        .run(
            RunContext::new("ses_cmd3", dir.path(), driver)
                .with_events(Arc::new(MemorySink::new())),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );

    // Crashes without progress: failed, with the process reason.
    let stub2 = tempfile::tempdir().unwrap();
    let prog = script(stub2.path(), "broken.sh", "cat > /dev/null; exit 2");
    let driver = Arc::new(FileDriver {
        dir: stub2.path().to_path_buf(),
        steps: 1,
    });
    let outcome = CommandAgent::new(config(&prog, stub2.path()))
        .run(
            RunContext::new("ses_cmd4", dir.path(), driver)
                .with_events(Arc::new(MemorySink::new())),
        )
        .await;
    assert_eq!(
        outcome.failure(),
        Some(FailureReason::AgentProcessFailed),
        "{outcome:?}"
    );

    // A program that does not exist.
    let driver = Arc::new(FileDriver {
        dir: stub2.path().to_path_buf(),
        steps: 1,
    });
    let outcome = CommandAgent::new(config(Path::new("/nonexistent/agent"), stub2.path()))
        .run(RunContext::new("ses_cmd5", dir.path(), driver))
        .await;
    assert_eq!(outcome.failure(), Some(FailureReason::AgentProcessFailed));
}

#[tokio::test]
async fn prompt_as_argument_and_placeholders() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    let prog = script(
        stub.path(),
        "argy.sh",
        r#"printf '%s\n' "$@" > "$STUB_DIR/args.txt"; test -r "$2" && echo readable > "$STUB_DIR/mcp-ok"; echo advanced >> "$STUB_DIR/advances""#,
    );
    let mut cfg = config(&prog, stub.path());
    cfg.prompt = PromptDelivery::Arg;
    cfg.args = vec![
        "--mcp-config".into(),
        "{mcp_config}".into(),
        "--session={session_id}".into(),
        "-p".into(),
        "{prompt}".into(),
    ];
    let driver = Arc::new(FileDriver {
        dir: stub.path().to_path_buf(),
        steps: 1,
    });
    let sink = Arc::new(MemorySink::new());
    let outcome = CommandAgent::new(cfg)
        .run(RunContext::new("ses_cmd6", dir.path(), driver).with_events(sink.clone()))
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let args = std::fs::read_to_string(stub.path().join("args.txt")).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines[0], "--mcp-config");
    // In the run's private temp dir, which the sandbox shows as /tmp.
    assert_eq!(lines[1], "/tmp/worktrain-mcp.json");
    assert!(
        stub.path().join("mcp-ok").exists(),
        "the agent can read its MCP config"
    );
    assert_eq!(lines[2], "--session=ses_cmd6");
    assert_eq!(lines[3], "-p");
    assert!(args.contains("Do part 1 of the task."));
    // The recorded command line shows the prompt's size, not the prompt.
    let started = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            AgentEvent::ProcessStarted { command, .. } => Some(command),
            _ => None,
        })
        .unwrap();
    assert!(
        started.contains("<prompt: ") && !started.contains("Do part 1"),
        "{started}"
    );
}

#[tokio::test]
async fn long_command_keeps_the_heartbeat_and_cancel_kills_it() {
    let dir = worktree();
    let stub = tempfile::tempdir().unwrap();
    let prog = script(
        stub.path(),
        "slow.sh",
        r#"cat > /dev/null; sleep 30.33 & echo $! > "$STUB_DIR/bg.pid"; wait"#,
    );
    let driver = Arc::new(FileDriver {
        dir: stub.path().to_path_buf(),
        steps: 1,
    });
    let hb = Arc::new(CountingHeartbeat::new());
    let cancel = CancellationToken::new();
    let ctx = RunContext::new("ses_cmd7", dir.path(), driver)
        .with_events(Arc::new(MemorySink::new()))
        .with_heartbeat(hb.clone())
        .with_cancel(cancel.clone());
    let agent = CommandAgent::new(config(&prog, stub.path()));
    let task = tokio::spawn(async move { agent.run(ctx).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(hb.ticks() >= 6, "only {} ticks in 1.2 s", hb.ticks());
    cancel.cancel();
    let outcome = crate::common::finishes(task).await;
    assert!(
        matches!(outcome, RunOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
    assert!(stub.path().join("bg.pid").exists());
    assert!(
        !crate::common::alive("30.33"),
        "the agent's process tree survived cancellation"
    );
}
