//! Full `LlmAgent` runs against the fake server and a fake step driver.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use worktrain_agent::{
    AgentEvent, AgentRunner, CancellationToken, CountingHeartbeat, FailureReason, LlmAgent,
    MemorySink, ModelPrice, NudgeReason, PriceTable, Provider, RunBudget, RunContext, RunOutcome,
    SteeringInbox, ToolErrorKind,
};
use worktrain_testkit::{FakeLlm, FakeLlmHandle, ToolCall, Turn, Usage};

use crate::common::{
    FakeDriver, FakeStep, TOKEN, agent, agent_config, alive, llm_config, worktree, write,
};

fn two_steps() -> Vec<FakeStep> {
    vec![
        FakeStep::new(
            "Fix the greeting",
            "Change 'world' to 'worktrain' in src/lib.txt.",
        ),
        FakeStep::new(
            "Record the result",
            "Copy the file to out.txt and write NOTES.md.",
        ),
    ]
}

fn ctx(dir: &tempfile::TempDir, driver: Arc<FakeDriver>, sink: Arc<MemorySink>) -> RunContext {
    RunContext::new("ses_test", dir.path(), driver).with_events(sink)
}

fn no_token_anywhere(fake: &FakeLlmHandle) {
    let reqs = fake.requests();
    assert!(!reqs.is_empty());
    for r in reqs {
        assert!(
            !r.raw.contains(TOKEN),
            "the step token reached the model: {}",
            r.raw
        );
        assert!(
            !r.raw.contains("c2VjcmV0LXNpZ25hdHVyZS10YWc"),
            "part of the token reached the model"
        );
    }
}

fn failed(o: &RunOutcome) -> FailureReason {
    match o {
        RunOutcome::Failed { reason, .. } => *reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn full_run(provider: Provider, stream: bool) {
    let dir = worktree();
    write(dir.path(), "src/lib.txt", "hello world\n");
    write(
        dir.path(),
        "AGENTS.md",
        "Always run the tests. RULES-MARKER-42\n",
    );
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("list_files", json!({"recursive": true})),
        Turn::tool(
            "edit_file",
            json!({"path": "src/lib.txt", "old_string": "world", "new_string": "worktrain"}),
        ),
        Turn::tool(
            "complete_step",
            json!({"notes": "Changed the greeting. NOTES-OF-STEP-ONE"}),
        ),
        Turn::tools(vec![
            ToolCall::new(
                "shell",
                json!({"command": "cat src/lib.txt > out.txt && echo copied"}),
            ),
            ToolCall::new(
                "write_file",
                json!({"path": "NOTES.md", "content": "# Notes\n"}),
            ),
        ]),
        Turn::tool(
            "complete_step",
            json!({"notes": "Copied and noted.", "context": {"copied": true}}),
        ),
    ])
    .await
    .unwrap();
    let driver = FakeDriver::new(two_steps());
    let sink = Arc::new(MemorySink::new());
    let hb = Arc::new(CountingHeartbeat::new());
    let outcome = agent(&base, provider, stream)
        .run(ctx(&dir, driver.clone(), sink.clone()).with_heartbeat(hb.clone()))
        .await;
    let RunOutcome::Completed { stats } = &outcome else {
        panic!("expected Completed, got {outcome:?}");
    };
    assert_eq!(stats.turns, 5);
    assert_eq!(stats.steps_completed, 2);
    assert_eq!(stats.tool_calls, 4);
    assert_eq!(stats.tool_errors, 0);
    assert_eq!(stats.usage.output_tokens, 100);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/lib.txt")).unwrap(),
        "hello worktrain\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "hello worktrain\n"
    );
    assert!(dir.path().join("NOTES.md").exists());
    let subs = driver.submissions();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].context["copied"], json!(true));
    assert!(hb.ticks() > 0);

    // Events: every turn and every tool call.
    assert_eq!(sink.turns().len(), 5);
    let calls = sink.tool_calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[1].name, "edit_file");
    assert!(calls[1].args.contains("src/lib.txt"));
    assert_eq!(calls[3].name, "shell");
    assert_eq!(calls[3].exit_code, Some(0));
    assert!(calls.iter().all(|c| c.error.is_none()));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 5);
    let system = |i: usize| -> String {
        match provider {
            Provider::Anthropic => reqs[i].body["system"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
            Provider::OpenAi => reqs[i].body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    };
    // Step one: rules file and step prompt in the system prompt.
    assert!(system(0).contains("RULES-MARKER-42"));
    assert!(system(0).contains("Change 'world' to 'worktrain'"));
    assert!(system(0).contains("(1 of 2)"));
    // Step two starts a fresh conversation with the recap of step one.
    assert!(system(3).contains("NOTES-OF-STEP-ONE"));
    assert!(system(3).contains("(2 of 2)"));
    let user_msgs = |i: usize| {
        reqs[i].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] != "system")
            .count()
    };
    assert_eq!(user_msgs(3), 1, "step two must start a fresh conversation");
    // Tool results went back: the edit result is in request 2.
    assert!(reqs[2].raw.contains("edited src/lib.txt"));
    no_token_anywhere(&fake);
}

#[tokio::test]
async fn full_run_anthropic_streaming() {
    full_run(Provider::Anthropic, true).await;
}

#[tokio::test]
async fn full_run_openai() {
    full_run(Provider::OpenAi, false).await;
}

#[tokio::test]
async fn early_stop_is_nudged_once_then_fails() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::text("I think we are done here."),
        Turn::text("Really done."),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()))
        .await;
    assert_eq!(failed(&outcome), FailureReason::AgentStoppedEarly);
    assert_eq!(outcome.stats().nudges, 1);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].raw.contains("without calling complete_step"));
    assert!(sink.events().iter().any(|e| matches!(
        e,
        AgentEvent::Nudged {
            reason: NudgeReason::StoppedEarly,
            count: 1
        }
    )));
}

#[tokio::test]
async fn early_stop_nudge_can_recover() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![
        Turn::text("Done?"),
        Turn::tool("complete_step", json!({"notes": "ok"})),
    ])
    .await
    .unwrap();
    let outcome = agent(&base, Provider::OpenAi, true)
        .run(ctx(
            &dir,
            FakeDriver::new(vec![FakeStep::new("Only", "Do it.")]),
            Arc::new(MemorySink::new()),
        ))
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn blocked_step_shows_blockers_and_retries() {
    let dir = worktree();
    let mut step = FakeStep::new("Review", "Review the change.");
    step.artifact = Some("review_verdict".into());
    let driver = FakeDriver::new(vec![step]);
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("complete_step", json!({"notes": "Looks fine."})),
        Turn::tool(
            "complete_step",
            json!({"notes": "Looks fine.", "artifacts": [{"kind": "review_verdict", "verdict": "clean", "findings": []}]}),
        ),
    ])
    .await
    .unwrap();
    let outcome = agent(&base, Provider::Anthropic, true)
        .run(ctx(&dir, driver.clone(), Arc::new(MemorySink::new())))
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(driver.submissions().len(), 2);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    // The contract example is in the prompt; the blockers come back as the tool result.
    assert!(reqs[0].raw.contains("review_verdict"));
    assert!(reqs[1].raw.contains("BLOCKED"));
    assert!(
        reqs[1]
            .raw
            .contains("the step requires a review_verdict artifact")
    );
}

#[tokio::test]
async fn repeated_identical_failure_is_nudged_then_fails() {
    let dir = worktree();
    let read_missing = || Turn::tool("read_file", json!({"path": "missing.txt"}));
    let (base, fake) = FakeLlm::start(vec![
        read_missing(),
        read_missing(),
        read_missing(),
        read_missing(),
        read_missing(),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::OpenAi, false)
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()))
        .await;
    assert_eq!(failed(&outcome), FailureReason::RepeatedToolFailure);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    assert!(!reqs[2].raw.contains("Repeating it will not help"));
    assert!(reqs[3].raw.contains("Repeating it will not help"));
    let calls = sink.tool_calls();
    assert_eq!(calls.len(), 4);
    assert!(
        calls
            .iter()
            .all(|c| c.error.as_ref().map(|e| e.kind) == Some(ToolErrorKind::NotFound))
    );
    assert!(sink.events().iter().any(|e| matches!(
        e,
        AgentEvent::Nudged {
            reason: NudgeReason::RepeatedToolFailure,
            ..
        }
    )));
}

#[tokio::test]
async fn heartbeat_keeps_ticking_during_a_long_tool_call() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![
        Turn::tool("shell", json!({"command": "sleep 2 && echo slept"})),
        Turn::tool("complete_step", json!({"notes": "waited"})),
    ])
    .await
    .unwrap();
    let mut cfg = agent_config();
    cfg.heartbeat_interval = Duration::from_millis(100);
    let agent =
        LlmAgent::from_llm_config(&llm_config(&base, Provider::Anthropic, false), cfg).unwrap();
    let hb = Arc::new(CountingHeartbeat::new());
    let sink = Arc::new(MemorySink::new());
    let limits = RunBudget {
        tool_timeout: Duration::from_secs(20),
        ..RunBudget::default()
    };
    let outcome = agent
        .run(
            ctx(
                &dir,
                FakeDriver::new(vec![FakeStep::new("Wait", "Run the slow test.")]),
                sink.clone(),
            )
            .with_heartbeat(hb.clone())
            .with_limits(limits),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert!(
        hb.ticks() >= 15,
        "only {} heartbeat ticks during a 2 s tool call",
        hb.ticks()
    );
    let call = &sink.tool_calls()[0];
    assert_eq!(call.exit_code, Some(0));
    assert!(call.error.is_none(), "the long call must not be killed");
    assert!(call.duration_ms >= 2000);
}

#[tokio::test]
async fn tool_timeout_kills_the_process_group() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool(
            "shell",
            json!({"command": "sleep 30.11 & echo $! > bg.pid; sleep 30"}),
        ),
        Turn::tool("complete_step", json!({"notes": "timed out, moving on"})),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let limits = RunBudget {
        tool_timeout: Duration::from_millis(1500),
        ..RunBudget::default()
    };
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(
            ctx(
                &dir,
                FakeDriver::new(vec![FakeStep::new("Slow", "Run it.")]),
                sink.clone(),
            )
            .with_limits(limits),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let call = &sink.tool_calls()[0];
    assert_eq!(
        call.error.as_ref().map(|e| e.kind),
        Some(ToolErrorKind::Timeout)
    );
    assert!(fake.requests()[1].raw.contains("timed out"));
    assert!(dir.path().join("bg.pid").exists());
    assert!(
        !alive("30.11"),
        "the background process survived the timeout"
    );
}

#[tokio::test]
async fn turn_limit_fires() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("list_files", json!({})),
        Turn::tool("list_files", json!({})),
        Turn::tool("list_files", json!({})),
    ])
    .await
    .unwrap();
    let limits = RunBudget {
        max_turns: Some(2),
        ..RunBudget::default()
    };
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(
            ctx(
                &dir,
                FakeDriver::new(two_steps()),
                Arc::new(MemorySink::new()),
            )
            .with_limits(limits),
        )
        .await;
    assert_eq!(failed(&outcome), FailureReason::TurnLimitExceeded);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn token_limit_fires() {
    let dir = worktree();
    let u = Usage {
        input_tokens: 100,
        output_tokens: 20,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
    };
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("list_files", json!({})).with_usage(u),
        Turn::tool("list_files", json!({})).with_usage(u),
        Turn::tool("list_files", json!({})).with_usage(u),
        Turn::tool("list_files", json!({})).with_usage(u),
    ])
    .await
    .unwrap();
    let limits = RunBudget {
        max_tokens: Some(250),
        ..RunBudget::default()
    };
    let outcome = agent(&base, Provider::OpenAi, false)
        .run(
            ctx(
                &dir,
                FakeDriver::new(two_steps()),
                Arc::new(MemorySink::new()),
            )
            .with_limits(limits),
        )
        .await;
    assert_eq!(failed(&outcome), FailureReason::TokenLimitExceeded);
    assert_eq!(outcome.stats().usage.total(), 360);
    assert_eq!(fake.requests().len(), 3);
}

/// `max_tokens` counts all four kinds: a run whose input + output alone stay far below
/// the budget is stopped by its cache writes and reads.
#[tokio::test]
async fn token_limit_counts_cache_writes_and_reads() {
    let dir = worktree();
    let u = Usage {
        input_tokens: 10,
        output_tokens: 10,
        cache_creation_input_tokens: 100,
        cache_read_input_tokens: 100,
    };
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("list_files", json!({})).with_usage(u),
        Turn::tool("list_files", json!({})).with_usage(u),
        Turn::tool("list_files", json!({})).with_usage(u),
    ])
    .await
    .unwrap();
    let limits = RunBudget {
        max_tokens: Some(300),
        ..RunBudget::default()
    };
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()).with_limits(limits))
        .await;
    assert_eq!(failed(&outcome), FailureReason::TokenLimitExceeded);
    assert_eq!(fake.requests().len(), 2);
    let recorded: u64 = sink.turns().iter().map(|t| t.usage.total()).sum();
    assert_eq!(outcome.stats().usage.total(), 440);
    assert_eq!(recorded, 440);
}

#[tokio::test]
async fn cost_limit_fires_and_needs_a_price() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("list_files", json!({})),
        Turn::tool("list_files", json!({})),
        Turn::tool("list_files", json!({})),
    ])
    .await
    .unwrap();
    let limits = RunBudget {
        max_cost_usd: Some(0.002),
        ..RunBudget::default()
    };
    // Unpriced model + cost limit: refused before any call.
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(
            ctx(
                &dir,
                FakeDriver::new(two_steps()),
                Arc::new(MemorySink::new()),
            )
            .with_limits(limits.clone()),
        )
        .await;
    assert_eq!(failed(&outcome), FailureReason::ConfigInvalid);
    assert_eq!(fake.requests().len(), 0);

    let mut cfg = agent_config();
    // $10 per million tokens: 120 tokens per turn = $0.0012.
    cfg.prices = PriceTable::default().with(
        "fake-",
        ModelPrice {
            input: 10.0,
            output: 10.0,
            cache_write: None,
            cache_read: None,
        },
    );
    let agent =
        LlmAgent::from_llm_config(&llm_config(&base, Provider::Anthropic, false), cfg).unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()).with_limits(limits))
        .await;
    assert_eq!(failed(&outcome), FailureReason::CostLimitExceeded);
    assert_eq!(fake.requests().len(), 2);
    assert!((outcome.stats().cost_usd - 0.0024).abs() < 1e-9);
    assert!(sink.turns().iter().all(|t| t.cost_usd.is_some()));
}

#[tokio::test]
async fn wall_clock_limit_fires_during_a_tool_call() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![Turn::tool("shell", json!({"command": "sleep 10"}))])
        .await
        .unwrap();
    let limits = RunBudget {
        wall_clock: Some(Duration::from_millis(600)),
        ..RunBudget::default()
    };
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(
            ctx(
                &dir,
                FakeDriver::new(two_steps()),
                Arc::new(MemorySink::new()),
            )
            .with_limits(limits),
        )
        .await;
    assert_eq!(failed(&outcome), FailureReason::WallClockExceeded);
}

#[tokio::test]
async fn cancellation_stops_a_tool_call_promptly() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![Turn::tool(
        "shell",
        json!({"command": "sleep 30.22 & echo $! > bg.pid; wait"}),
    )])
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let agent = agent(&base, Provider::Anthropic, false);
    let run_ctx = ctx(
        &dir,
        FakeDriver::new(two_steps()),
        Arc::new(MemorySink::new()),
    )
    .with_cancel(cancel.clone());
    let task = tokio::spawn(async move { agent.run(run_ctx).await });
    // Wait until the background process is running.
    let pid_file = dir.path().join("bg.pid");
    for _ in 0..100 {
        if std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.trim().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    let outcome = crate::common::finishes(task).await;
    assert!(
        matches!(outcome, RunOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !alive("30.22"),
        "the cancelled command's process tree survived"
    );
}

#[tokio::test]
async fn cancellation_stops_a_hanging_llm_call_promptly() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![Turn::Stall { ms: 600_000 }])
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let agent = agent(&base, Provider::OpenAi, true);
    let run_ctx = ctx(
        &dir,
        FakeDriver::new(two_steps()),
        Arc::new(MemorySink::new()),
    )
    .with_cancel(cancel.clone());
    let task = tokio::spawn(async move { agent.run(run_ctx).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let outcome = crate::common::finishes(task).await;
    assert!(
        matches!(outcome, RunOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn steering_message_appears_in_the_next_request() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::Delay {
            ms: 400,
            then: Box::new(Turn::tool("list_files", json!({}))),
        },
        Turn::tool("complete_step", json!({"notes": "done, README too"})),
    ])
    .await
    .unwrap();
    let inbox = SteeringInbox::new();
    let sink = Arc::new(MemorySink::new());
    let agent = agent(&base, Provider::Anthropic, true);
    let run_ctx = ctx(
        &dir,
        FakeDriver::new(vec![FakeStep::new("Only", "Do it.")]),
        sink.clone(),
    )
    .with_steering(inbox.clone());
    let task = tokio::spawn(async move { agent.run(run_ctx).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    inbox.send("Please also update the README (STEER-7).");
    let outcome = task.await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(!reqs[0].raw.contains("STEER-7"));
    assert!(reqs[1].raw.contains("STEER-7"));
    assert!(reqs[1].raw.contains("Message from the operator"));
    assert!(inbox.is_empty());
    assert!(
        sink.events()
            .iter()
            .any(|e| matches!(e, AgentEvent::SteeringDelivered { messages: 1 }))
    );
}

#[tokio::test]
async fn token_never_reaches_the_model_even_when_it_leaks_into_text() {
    let dir = worktree();
    // A file holding a token, and a step prompt that (wrongly) mentions one.
    write(dir.path(), "leak.txt", &format!("token={TOKEN}\n"));
    let steps = vec![FakeStep::new("Leaky", &format!("Do it. (debug: {TOKEN})"))];
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("read_file", json!({"path": "leak.txt"})),
        Turn::tool("shell", json!({"command": "cat leak.txt"})),
        Turn::tool("complete_step", json!({"notes": "done"})),
    ])
    .await
    .unwrap();
    let outcome = agent(&base, Provider::OpenAi, true)
        .run(ctx(
            &dir,
            FakeDriver::new(steps),
            Arc::new(MemorySink::new()),
        ))
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    no_token_anywhere(&fake);
    assert!(fake.requests()[1].raw.contains("[redacted]"));
}

#[tokio::test]
async fn blocking_issue_fails_the_run_with_its_reason() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![
        Turn::tool(
            "report_issue",
            json!({"title": "minor", "details": "the docs are stale"}),
        ),
        Turn::tool(
            "report_issue",
            json!({"title": "no access", "details": "cannot reach the registry", "blocking": true}),
        ),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()))
        .await;
    assert_eq!(failed(&outcome), FailureReason::AgentReportedBlocker);
    let issues: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| matches!(e, AgentEvent::IssueReported { .. }))
        .collect();
    assert_eq!(issues.len(), 2);
}

#[tokio::test]
async fn a_run_whose_tool_calls_were_all_denied_is_never_green() {
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![
        Turn::tool("read_file", json!({"path": "/etc/passwd"})),
        Turn::tool(
            "write_file",
            json!({"path": "../escape.txt", "content": "x"}),
        ),
        Turn::tool("complete_step", json!({"notes": "all good (not really)"})),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(
            &dir,
            FakeDriver::new(vec![FakeStep::new("Only", "Do it.")]),
            sink.clone(),
        ))
        .await;
    assert_eq!(failed(&outcome), FailureReason::ToolErrorsDominated);
    assert_eq!(outcome.stats().tool_errors, 2);
    assert!(
        sink.tool_calls()
            .iter()
            .take(2)
            .all(|c| c.error.as_ref().map(|e| e.kind) == Some(ToolErrorKind::Denied))
    );
    assert!(!dir.path().parent().unwrap().join("escape.txt").exists());
}

#[tokio::test]
async fn complete_parked_and_llm_failures() {
    let dir = worktree();
    // Already complete: no LLM call at all.
    let (base, fake) = FakeLlm::start(Vec::<Turn>::new()).await.unwrap();
    let done = FakeDriver::new(vec![]);
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(&dir, done, Arc::new(MemorySink::new())))
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(fake.requests().len(), 0);

    // A gated step parks the run.
    let mut gated = FakeStep::new("Plan", "Plan it.");
    gated.park = true;
    let (base, _fake) = FakeLlm::start(vec![Turn::tool("complete_step", json!({"notes": "plan"}))])
        .await
        .unwrap();
    let outcome = agent(&base, Provider::OpenAi, false)
        .run(ctx(
            &dir,
            FakeDriver::new(vec![gated, FakeStep::new("Do", "Do it.")]),
            Arc::new(MemorySink::new()),
        ))
        .await;
    assert!(matches!(outcome, RunOutcome::Parked { .. }), "{outcome:?}");

    // The provider refuses: llm_unavailable, not a hang and not success.
    let (base, _fake) = FakeLlm::start(vec![Turn::error(403)]).await.unwrap();
    let outcome = agent(&base, Provider::Anthropic, false)
        .run(ctx(
            &dir,
            FakeDriver::new(two_steps()),
            Arc::new(MemorySink::new()),
        ))
        .await;
    assert_eq!(failed(&outcome), FailureReason::LlmUnavailable);
}

#[tokio::test]
async fn resume_note_and_invalid_arguments() {
    let dir = worktree();
    let (base, fake) = FakeLlm::start(vec![
        Turn::tool("edit_file", json!({"path": "x"})),
        Turn::tool("complete_step", json!({"notes": "ok", "token": "nope"})),
        Turn::tool("complete_step", json!({"notes": "ok"})),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let outcome = agent(&base, Provider::Anthropic, true)
        .run(
            ctx(
                &dir,
                FakeDriver::new(vec![FakeStep::new("Only", "Do it.")]),
                sink.clone(),
            )
            .with_resume_note(
                "The session was interrupted (daemon restart); continue where you left off.",
            ),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let reqs = fake.requests();
    assert!(reqs[0].raw.contains("interrupted (daemon restart)"));
    assert!(reqs[1].raw.contains("invalid arguments"));
    assert!(reqs[2].raw.contains("unknown field"));
    let calls = sink.tool_calls();
    assert_eq!(
        calls[0].error.as_ref().map(|e| e.kind),
        Some(ToolErrorKind::InvalidArguments)
    );
}

/// Tool calls are recorded with what trace analysis compares: a digest of the full
/// arguments, of the result, of the text an edit replaced and wrote, and the tail of a
/// failed command's output (redacted).
#[tokio::test]
async fn tool_calls_carry_digests_and_failure_output() {
    use worktrain_core::activity::{digest, text_digest};
    let dir = worktree();
    let (base, _fake) = FakeLlm::start(vec![
        Turn::tool(
            "write_file",
            json!({"path": "notes.txt", "content": "alpha\n"}),
        ),
        Turn::tool(
            "edit_file",
            json!({"path": "notes.txt", "old_string": "alpha", "new_string": "beta"}),
        ),
        Turn::tool(
            "shell",
            json!({"command": "echo API_KEY=sk-live-123456 >&2; echo boom >&2; exit 3"}),
        ),
        Turn::text("stop"),
        Turn::text("stop"),
    ])
    .await
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let _ = agent(&base, Provider::Anthropic, false)
        .run(ctx(&dir, FakeDriver::new(two_steps()), sink.clone()))
        .await;
    let calls = sink.tool_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let w = &calls[0];
    assert_eq!(
        w.args_digest.as_deref(),
        Some(
            digest(
                json!({"path": "notes.txt", "content": "alpha\n"})
                    .to_string()
                    .as_bytes()
            )
            .as_str()
        )
    );
    let ch = w.change.as_ref().unwrap();
    assert_eq!(
        (ch.path.as_str(), ch.before.as_deref(), ch.after.as_str()),
        ("notes.txt", None, text_digest("alpha\n").as_str())
    );
    assert!(w.result_digest.is_some() && w.output_tail.is_none());
    let e = calls[1].change.as_ref().unwrap();
    assert_eq!(
        (e.before.as_deref(), e.after.as_str()),
        (
            Some(text_digest("alpha").as_str()),
            text_digest("beta").as_str()
        )
    );
    let sh = &calls[2];
    assert_eq!(sh.exit_code, Some(3));
    let tail = sh.output_tail.as_deref().unwrap();
    assert!(tail.contains("boom"), "{tail}");
    assert!(
        !tail.contains("sk-live-123456"),
        "secrets are redacted: {tail}"
    );
    assert!(tail.chars().count() <= worktrain_core::activity::OUTPUT_TAIL_CHARS);
}
