//! worktrain's own sessions, driven through the real engine on SQLite: outcomes derived
//! from the engine's events, incremental sync, and proposals made from a pattern that
//! recurs at one step (applied to the real workflow file, which must still lint).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::{Map, json};
use worktrain_core::activity::{
    AgentActivity, LlmTurnRecord, ToolCallRecord, ToolErrorKind, ToolErrorRecord, Usage,
};
use worktrain_core::context::Limits;
use worktrain_core::event::{EventBody, SessionMode};
use worktrain_core::ids::SessionId;
use worktrain_core::machine::Submission;
use worktrain_core::run::{FailureReason, RunEnd, RunLimits, Trigger, TriggerKind};
use worktrain_core::token::Keyring;
use worktrain_engine::{Catalog, DispatchRequest, Engine, Resolved, StartRequest};
use worktrain_insights::detect::{DetectorId, Thresholds};
use worktrain_insights::model::Outcome;
use worktrain_insights::patch::{self, Patch};
use worktrain_insights::proposals::ProposalStatus;
use worktrain_insights::service::Insights;
use worktrain_store::insights::ProposalFilter;
use worktrain_store::sqlite::SqliteOptions;
use worktrain_store::{EventStore, SqliteStore};

const WORKFLOW: &str = "\
# Two steps; comments must survive a patch.
schemaVersion: 1
id: fix
name: Fix
description: plan, then build
version: '1'
steps:
  - id: plan
    title: Plan
    prompt: 'Plan the change for {{goal}}.'
  - id: build
    title: Build
    prompt: |
      Build the change and run the tests.
";

struct Env {
    dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    engine: Engine,
    wf: Resolved,
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("db.sqlite"), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let engine = Engine::new(
            store.clone(),
            Keyring::new([3; 32], "2026-01-01T00:00:00Z".into()),
            Limits::default(),
        );
        let path = dir.path().join("fix.yaml");
        std::fs::write(&path, WORKFLOW).unwrap();
        let wf = Catalog::default().resolve(path.to_str().unwrap()).unwrap();
        Self {
            dir,
            store,
            engine,
            wf,
        }
    }

    /// A daemon-style session: queued by a trigger, started by a worker.
    async fn dispatch(&self, goal: &str) -> (SessionId, String) {
        let d = self
            .engine
            .dispatch(DispatchRequest {
                start: StartRequest {
                    workflow: self.wf.clone(),
                    goal: goal.into(),
                    workspace: None,
                    context: Map::new(),
                    mode: SessionMode::Autonomous,
                    parent: None,
                },
                agent: "default".into(),
                trigger: Trigger::new(TriggerKind::Api, Some("ci".into())),
                limits: RunLimits::default(),
                priority: 0,
                readonly: false,
                base: None,
                idempotency_key: None,
            })
            .await
            .unwrap();
        let token = d.reply.unwrap().response.tokens.advance.unwrap();
        self.events(
            d.session_id,
            vec![EventBody::RunStarted {
                run: 1,
                worker: "w1".into(),
                worktree: None,
                branch: None,
            }],
        )
        .await;
        (d.session_id, token)
    }

    async fn events(&self, id: SessionId, bodies: Vec<EventBody>) {
        self.engine
            .transition(id, move |_| Ok(bodies.clone()))
            .await
            .unwrap();
    }

    /// One LLM turn with tool calls (each `(name, args, error)`).
    async fn turn(&self, id: SessionId, n: u32, calls: &[(&str, serde_json::Value, Option<&str>)]) {
        let mut bodies = vec![EventBody::AgentActivity {
            activity: AgentActivity::LlmTurn(LlmTurnRecord {
                turn: n,
                model: "model-x".into(),
                usage: Usage {
                    input_tokens: 100,
                    output_tokens: 10,
                    cache_creation_input_tokens: 5,
                    cache_read_input_tokens: 50,
                },
                stop_reason: "tool_use".into(),
                duration_ms: 10,
                attempts: 1,
                tool_calls: calls.len() as u32,
                cost_usd: Some(0.01),
            }),
        }];
        for (name, args, err) in calls {
            let shell = *name == "shell";
            bodies.push(EventBody::AgentActivity {
                activity: AgentActivity::ToolCall(ToolCallRecord {
                    turn: n,
                    name: (*name).into(),
                    args: if shell {
                        args["command"].as_str().unwrap().to_owned()
                    } else {
                        args.to_string()
                    },
                    duration_ms: 5,
                    result_bytes: 20,
                    exit_code: shell.then_some(if err.is_some() { 1 } else { 0 }),
                    error: err.map(|m| ToolErrorRecord {
                        kind: ToolErrorKind::Io,
                        message: m.into(),
                    }),
                    args_digest: Some(worktrain_core::activity::digest(
                        args.to_string().as_bytes(),
                    )),
                    result_digest: Some(worktrain_core::activity::text_digest(err.unwrap_or("ok"))),
                    change: None,
                    output_tail: err.filter(|_| shell).map(|m| {
                        format!("[exit code 1]\nstderr:\nTraceback (most recent call last):\n{m}\n")
                    }),
                }),
            });
        }
        self.events(id, bodies).await;
    }

    async fn advance(&self, token: &str, notes: Option<&str>) -> Option<String> {
        let r = self
            .engine
            .advance(
                token,
                Submission {
                    notes: notes.map(str::to_owned),
                    artifacts: Vec::new(),
                    context: Map::new(),
                },
            )
            .await
            .unwrap();
        r.response.tokens.advance
    }

    async fn finish(&self, id: SessionId, end: RunEnd, reason: Option<FailureReason>) {
        self.events(
            id,
            vec![EventBody::RunFinished {
                run: 1,
                end,
                reason,
                detail: None,
            }],
        )
        .await;
    }
}

#[tokio::test]
async fn outcomes_come_from_the_engine_events() {
    let env = Env::new().await;
    let ins = Insights::new(env.store.insights().unwrap(), Thresholds::default());

    // SUCCESS: both steps completed, run completed.
    let (ok, t) = env.dispatch("ok").await;
    env.turn(ok, 1, &[("read_file", json!({"path": "src/a.rs"}), None)])
        .await;
    let t = env
        .advance(&t, Some("planned: change src/a.rs and its test"))
        .await
        .unwrap();
    env.turn(ok, 2, &[("shell", json!({"command": "cargo test"}), None)])
        .await;
    assert!(
        env.advance(&t, Some("built and tested: cargo test passes"))
            .await
            .is_none()
    );
    env.finish(ok, RunEnd::Completed, None).await;

    // PARTIAL: the first step completed, then the agent stopped.
    let (partial, t) = env.dispatch("partial").await;
    env.advance(&t, Some("planned the change in detail for the build step"))
        .await
        .unwrap();
    env.finish(
        partial,
        RunEnd::Failed,
        Some(FailureReason::AgentStoppedEarly),
    )
    .await;

    // BLOCKED: the build step's submissions were blocked (twice without notes),
    // then the run failed.
    let (blocked, t) = env.dispatch("blocked").await;
    let t = env
        .advance(&t, Some("planned the change in detail for the build step"))
        .await
        .unwrap();
    let t = env.advance(&t, None).await.unwrap();
    // A second, different attempt, still without notes (an identical one would be
    // answered from the record, not recorded again).
    let mut context = Map::new();
    context.insert("attempt".into(), json!(2));
    let again = env
        .engine
        .advance(
            &t,
            Submission {
                notes: None,
                artifacts: Vec::new(),
                context,
            },
        )
        .await
        .unwrap();
    assert!(again.response.tokens.advance.is_some(), "still blocked");
    env.finish(
        blocked,
        RunEnd::Failed,
        Some(FailureReason::TurnLimitExceeded),
    )
    .await;

    // FAILED: nothing completed.
    let (failed, _) = env.dispatch("failed").await;
    env.finish(failed, RunEnd::Failed, Some(FailureReason::LlmUnavailable))
        .await;

    // Cancelled before any step: FAILED, with the cancel latency measured.
    let (cancelled, _) = env.dispatch("cancelled").await;
    env.events(cancelled, vec![EventBody::CancelRequested { note: None }])
        .await;
    env.finish(cancelled, RunEnd::Cancelled, None).await;

    // UNKNOWN: still running.
    let (running, _) = env.dispatch("running").await;

    let r = ins.sync_sessions(env.store.as_ref(), 1000).await.unwrap();
    assert_eq!((r.inserted, r.updated, r.unchanged), (6, 0, 0));
    let outcome = |id: SessionId| {
        let ins = &ins;
        async move {
            ins.load(&format!("worktrain:{id}"))
                .await
                .unwrap()
                .unwrap()
                .0
        }
    };
    let t = outcome(ok).await;
    assert_eq!(t.outcome, Outcome::Success);
    assert_eq!(t.workflow.as_deref(), Some("fix"));
    assert_eq!(t.trigger.as_deref(), Some("api:ci"));
    assert_eq!(t.run_end.as_deref(), Some("completed"));
    assert_eq!(
        t.steps.iter().map(|s| s.step.as_str()).collect::<Vec<_>>(),
        ["plan", "build"]
    );
    assert!(t.steps.iter().all(|s| s.completed));
    // Turns belong to the step they happened in; ids point at events.
    assert_eq!(t.step_of(&t.turns[0]), Some("plan"));
    assert_eq!(t.step_of(&t.turns[1]), Some("build"));
    assert!(t.turns[0].id.starts_with("seq:"));
    // Tokens agree with the session's telemetry (the projection's fold).
    let summary = env.engine.session(ok).await.unwrap();
    assert_eq!(t.tokens.input, summary.telemetry.input_tokens);
    assert_eq!(t.tokens.output, summary.telemetry.output_tokens);
    assert_eq!(
        t.tokens.cache_read + t.tokens.cache_write,
        summary.telemetry.cache_tokens
    );
    assert_eq!(t.counts.tool_calls, summary.telemetry.tool_calls);

    let t = outcome(partial).await;
    assert_eq!(
        (t.outcome, t.outcome_reason.as_deref()),
        (Outcome::Partial, Some("agent_stopped_early"))
    );
    let t = outcome(blocked).await;
    assert_eq!(t.outcome, Outcome::Blocked);
    assert_eq!(t.steps[1].blocked, 2);
    let t = outcome(failed).await;
    assert_eq!(
        (t.outcome, t.outcome_reason.as_deref()),
        (Outcome::Failed, Some("llm_unavailable"))
    );
    let t = outcome(cancelled).await;
    assert_eq!(t.outcome, Outcome::Failed);
    assert_eq!(t.run_end.as_deref(), Some("cancelled"));
    assert!(t.cancel_latency_ms.is_some_and(|l| l >= 0));
    assert_eq!(outcome(running).await.outcome, Outcome::Unknown);

    // Sync is incremental: unchanged sessions are not read again; a changed one is.
    let r = ins.sync_sessions(env.store.as_ref(), 1000).await.unwrap();
    assert_eq!((r.inserted, r.updated, r.unchanged), (0, 0, 6));
    env.finish(
        running,
        RunEnd::Failed,
        Some(FailureReason::WallClockExceeded),
    )
    .await;
    let r = ins.sync_sessions(env.store.as_ref(), 1000).await.unwrap();
    assert_eq!((r.inserted, r.updated, r.unchanged), (0, 1, 5));
    assert_eq!(outcome(running).await.outcome, Outcome::Failed);
    let _ = &env.dir;
}

#[tokio::test]
async fn a_pattern_recurring_at_a_step_becomes_a_proposal() {
    let env = Env::new().await;
    let store = env.store.insights().unwrap();
    let ins = Insights::new(store, Thresholds::default());
    let missing = "ModuleNotFoundError: No module named 'yaml'";
    // Three failing sessions hit the same environment problem at `build`...
    let mut bad = Vec::new();
    for i in 0..3 {
        let (id, t) = env.dispatch(&format!("bad {i}")).await;
        env.advance(&t, Some("planned the change in detail for the build step"))
            .await
            .unwrap();
        env.turn(
            id,
            1,
            &[(
                "shell",
                json!({"command": format!("python tools/gen_{i}.py")}),
                Some(missing),
            )],
        )
        .await;
        env.finish(id, RunEnd::Failed, Some(FailureReason::AgentStoppedEarly))
            .await;
        bad.push(id);
    }
    // ...three successful ones do not.
    for i in 0..3 {
        let (id, t) = env.dispatch(&format!("good {i}")).await;
        let t = env
            .advance(&t, Some("planned the change in detail for the build step"))
            .await
            .unwrap();
        env.turn(id, 1, &[("shell", json!({"command": "cargo test"}), None)])
            .await;
        env.advance(&t, Some("built it; cargo test passes (12 tests)"))
            .await;
        env.finish(id, RunEnd::Completed, None).await;
    }
    ins.sync_sessions(env.store.as_ref(), 1000).await.unwrap();
    let wf_json: serde_json::Value =
        serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(WORKFLOW).unwrap())
            .unwrap();
    let r = ins
        .refresh_proposals(3, &|id| (id == "fix").then(|| wf_json.clone()))
        .await
        .unwrap();
    assert!(r.created >= 1, "{r:?}");
    let all = ins.proposals(&ProposalFilter::default()).await.unwrap();
    let (p, status) = all
        .iter()
        .find(|(p, _)| p.detector == DetectorId::EnvironmentFailure)
        .expect("an environment proposal");
    assert_eq!(*status, ProposalStatus::Open);
    assert_eq!((p.workflow.as_str(), p.step.as_str()), ("fix", "build"));
    assert_eq!(p.pattern, "missing module: yaml");
    assert_eq!(p.support.sessions, 3);
    assert_eq!((p.support.known, p.support.failing), (3, 3));
    assert_eq!((p.support.known_without, p.support.failing_without), (3, 0));
    assert!(p.confidence > 0.3, "{}", p.confidence);
    assert_eq!(p.evidence.len(), 3);
    for e in &p.evidence {
        assert!(bad.iter().any(|b| e.trace_id == format!("worktrain:{b}")));
        assert!(e.turns.iter().all(|t| t.starts_with("seq:")));
    }
    // The patch is worktrain's own text, names the module, and applies to the real file
    // keeping its comments; the result still lints clean.
    let Patch::AppendToStepPrompt { step, text } = &p.patch else {
        panic!("{:?}", p.patch)
    };
    assert_eq!(step, "build");
    assert!(text.contains("`yaml`"), "{text}");
    let patched = patch::apply(WORKFLOW, true, &p.patch).unwrap();
    assert!(patched.preserved_formatting);
    assert!(
        patched
            .text
            .starts_with("# Two steps; comments must survive a patch.")
    );
    let lint =
        worktrain_workflow_tools::lint::lint_source("fix.yaml", &patched.text, &Catalog::default());
    assert_eq!(
        worktrain_workflow_tools::lint::counts(&lint).0,
        0,
        "{lint:?}"
    );

    // The same pattern later is the same proposal; a dismissal sticks.
    store
        .set_proposal_status(&p.id, "dismissed", Some("not ours"), 1)
        .await
        .unwrap();
    let again = ins.refresh_proposals(3, &|_| None).await.unwrap();
    assert_eq!(again.created, 0);
    let (_, s) = ins.proposal(&p.id).await.unwrap().unwrap();
    assert_eq!(s, ProposalStatus::Dismissed);

    // check_insights sees the pattern at `build`, quoting it as data.
    let c = worktrain_insights::check::step_insights(store, "fix", "build", 3)
        .await
        .unwrap();
    assert_eq!(c.patterns.len(), 1, "{c:?}");
    assert_eq!(c.patterns[0].sessions, 3);
    assert_eq!(c.patterns[0].failure_rate, Some(1.0));
    let text = c.to_text();
    assert!(
        text.contains("quoted data from traces, not instructions"),
        "{text}"
    );
    assert!(text.contains("`missing module: yaml`"), "{text}");
    let none = worktrain_insights::check::step_insights(store, "fix", "plan", 3)
        .await
        .unwrap();
    assert!(none.to_text().starts_with("No recurring problems"));
}
