//! The workflow language, construct by construct: every construct is compiled and then
//! driven through the real state machine ([`Machine`] + [`projection::apply`], exactly as
//! the engine and the simulator fold events), and every compile error is provoked and
//! checked for its rule, its document path and a message that says what to do.
//!
//! Workflows are written as JSON values (`json!`) and loaded through the real loader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use worktrain_core::compile::{
    Instr, Pinned, RoutineResolver, RoutineSource, compile, compile_with,
};
use worktrain_core::context::Limits;
use worktrain_core::contract::ContractName;
use worktrain_core::cursor::LoopDecision;
use worktrain_core::error::{ApiError, ErrorCode};
use worktrain_core::event::{
    BlockerCode, EventBody, LoopExitReason, NewEvent, SessionMode, StoredEvent,
};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::load::{Rule, WorkflowError, parse_workflow};
use worktrain_core::machine::{AdvanceDecision, Machine, StartParams, Submission};
use worktrain_core::projection::{SessionStatus, SessionSummary, apply};
use worktrain_core::response::{Intent, Outcome, StepResponse};
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};
use worktrain_core::workflow::{CURRENT_SCHEMA_VERSION, GateKind, Join};

// ---------------------------------------------------------------------------------------
// Building workflows
// ---------------------------------------------------------------------------------------

/// A step with a default title and prompt; `extra`'s fields are added or override.
fn s(id: &str, extra: Value) -> Value {
    let mut base = json!({"id": id, "title": format!("Step {id}"), "prompt": format!("Do {id}.")});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            base[k] = v;
        }
    }
    base
}

/// A loop block.
fn lp(id: &str, spec: Value, steps: Value) -> Value {
    json!({"id": id, "loop": spec, "steps": steps})
}

fn doc(steps: Value) -> Value {
    json!({"schemaVersion": 2, "id": "t", "name": "T", "description": "d", "version": "1", "steps": steps})
}

fn load_and_compile(d: &Value) -> Result<Pinned, WorkflowError> {
    let def = parse_workflow("t.json", &d.to_string())?;
    compile(&def)
}

fn pin_doc(d: Value) -> Pinned {
    load_and_compile(&d).unwrap_or_else(|e| panic!("should compile: {e}"))
}

fn pin(steps: Value) -> Pinned {
    pin_doc(doc(steps))
}

/// The error a workflow is rejected with (at load or at compile time).
fn rejected(steps: Value) -> WorkflowError {
    match load_and_compile(&doc(steps)) {
        Ok(_) => panic!("should be rejected"),
        Err(e) => e,
    }
}

/// Assert an error's rule, path and a fragment of its message.
#[track_caller]
fn assert_err(e: &WorkflowError, rule: Rule, path: &str, says: &str) {
    assert_eq!(e.rule, rule, "rule of: {e}");
    assert_eq!(e.path.as_deref(), Some(path), "path of: {e}");
    assert!(e.message.contains(says), "message should say `{says}`: {e}");
}

// ---------------------------------------------------------------------------------------
// Driving sessions
// ---------------------------------------------------------------------------------------

fn notes() -> Submission {
    Submission {
        notes: Some("done".into()),
        ..Submission::default()
    }
}

fn ctx(delta: Value) -> Submission {
    Submission {
        context: delta.as_object().cloned().expect("object"),
        ..notes()
    }
}

fn art(artifact: Value) -> Submission {
    Submission {
        artifacts: vec![artifact],
        ..notes()
    }
}

fn decide(d: LoopDecision) -> Submission {
    art(
        json!({"kind": "loop_control", "decision": match d { LoopDecision::Continue => "continue", LoopDecision::Stop => "stop" }}),
    )
}

const STOP: LoopDecision = LoopDecision::Stop;
const CONTINUE: LoopDecision = LoopDecision::Continue;

/// One session, folded in memory with the projection the store uses.
struct Run<'p> {
    pinned: &'p Pinned,
    keyring: Keyring,
    limits: Limits,
    session: SessionId,
    summary: Option<SessionSummary>,
    events: Vec<EventBody>,
}

impl<'p> Run<'p> {
    fn start(pinned: &'p Pinned, mode: SessionMode, context: Value) -> (Self, StepResponse) {
        let mut run = Run {
            pinned,
            keyring: Keyring::new([7; 32], "test".into()),
            limits: Limits::default(),
            session: SessionId::from_parts(1, 42),
            summary: None,
            events: Vec::new(),
        };
        let plan = run
            .machine()
            .start(
                run.session,
                StartParams {
                    goal: "the goal".into(),
                    context: context.as_object().cloned().unwrap_or_default(),
                    source: "test".into(),
                    mode,
                    ..StartParams::default()
                },
            )
            .unwrap_or_else(|e| panic!("start: {}", e.message));
        run.fold(&plan.events);
        (run, plan.response)
    }

    fn interactive(pinned: &'p Pinned, context: Value) -> (Self, StepResponse) {
        Self::start(pinned, SessionMode::Interactive, context)
    }

    fn machine(&self) -> Machine<'_> {
        Machine {
            pinned: self.pinned,
            keyring: &self.keyring,
            limits: &self.limits,
        }
    }

    fn fold(&mut self, events: &[NewEvent]) {
        for e in events {
            let seq = Seq(self.summary.as_ref().map_or(0, |s| s.last_seq.0) + 1);
            let stored = StoredEvent {
                position: seq.0,
                session_id: self.session,
                seq,
                created_at_ms: 0,
                idempotency_key: e.idempotency_key.clone(),
                prev_hash: Sha256Hash::ZERO,
                hash: Sha256Hash::ZERO,
                body: e.body.clone(),
            };
            let (next, _) =
                apply(self.summary.take(), &stored).unwrap_or_else(|err| panic!("fold: {err}"));
            self.summary = Some(next);
            self.events.push(e.body.clone());
        }
    }

    fn summary(&self) -> &SessionSummary {
        self.summary.as_ref().expect("started")
    }

    fn try_submit(&mut self, sub: Submission) -> Result<StepResponse, ApiError> {
        let summary = self.summary().clone();
        let cur = summary
            .current
            .clone()
            .expect("a current step to submit to");
        let claims = TokenClaims {
            kind: TokenKind::Advance,
            session: self.session,
            node: cur.node,
            attempt: cur.attempt,
        };
        match self.machine().advance(&summary, claims, &sub, None)? {
            AdvanceDecision::Apply(plan) => {
                self.fold(&plan.events);
                Ok(plan.response)
            }
            AdvanceDecision::Replay { .. } => panic!("unexpected replay"),
        }
    }

    #[track_caller]
    fn submit(&mut self, sub: Submission) -> StepResponse {
        self.try_submit(sub)
            .unwrap_or_else(|e| panic!("advance refused: {}", e.message))
    }

    fn approve(&mut self, note: Option<&str>) -> Result<StepResponse, ApiError> {
        let parked = self
            .events
            .iter()
            .rev()
            .find(|e| matches!(e, EventBody::StepParked { .. }))
            .cloned()
            .unwrap_or(EventBody::SessionCompleted { last_node: None });
        let summary = self.summary().clone();
        let plan = self
            .machine()
            .approve(&summary, &parked, note.map(str::to_owned))?;
        self.fold(&plan.events);
        Ok(plan.response)
    }

    fn reject(&mut self, note: &str) -> Result<StepResponse, ApiError> {
        let summary = self.summary().clone();
        let plan = self.machine().reject(&summary, note.to_owned())?;
        self.fold(&plan.events);
        Ok(plan.response)
    }

    fn current(&self) -> Option<String> {
        self.summary()
            .current
            .as_ref()
            .map(|c| c.step_id.to_string())
    }

    fn context(&self) -> &Map<String, Value> {
        &self.summary().context
    }

    fn complete(&self) -> bool {
        self.summary().status == SessionStatus::Complete
    }

    /// Step ids entered so far, in order.
    fn entered(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                EventBody::NodeEntered { step_id, .. } => Some(step_id.to_string()),
                _ => None,
            })
            .collect()
    }

    fn skipped(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                EventBody::StepSkipped { step_id, .. } => Some(step_id.to_string()),
                _ => None,
            })
            .collect()
    }

    /// `(loop, passes, reason)` of every loop exit, in order.
    fn exits(&self) -> Vec<(String, u32, LoopExitReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                EventBody::LoopExited {
                    loop_id,
                    passes,
                    reason,
                    ..
                } => Some((loop_id.to_string(), *passes, *reason)),
                _ => None,
            })
            .collect()
    }

    /// Submit what `agent` returns for each step until the session completes.
    #[track_caller]
    fn drive(
        &mut self,
        mut agent: impl FnMut(&str, &Map<String, Value>) -> Submission,
    ) -> Vec<String> {
        for _ in 0..500 {
            let Some(step) = self.current() else {
                return self.entered();
            };
            let sub = agent(&step, self.context());
            let r = self.submit(sub);
            assert!(
                r.blockers.is_empty(),
                "step `{step}` blocked: {:?}",
                r.blockers
            );
        }
        panic!("did not complete within 500 submissions");
    }
}

/// Run a workflow interactively with plain notes for every step.
fn run_plain(pinned: &Pinned, context: Value) -> Vec<String> {
    let (mut run, _) = Run::interactive(pinned, context);
    run.drive(|_, _| notes())
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// Loops
// ---------------------------------------------------------------------------------------

#[test]
fn while_checks_before_each_pass_and_can_run_zero_passes() {
    let p = pin(json!([
        lp(
            "w",
            json!({"while": {"var": "n", "lt": 3}, "maxIterations": 10}),
            json!([s("inc", json!({}))])
        ),
        s("after", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({"n": 0}));
    let steps = run.drive(|step, c| match step {
        "inc" => ctx(json!({"n": c["n"].as_i64().unwrap() + 1})),
        _ => notes(),
    });
    assert_eq!(steps, ids(&["inc", "inc", "inc", "after"]));
    assert_eq!(
        run.exits(),
        vec![("w".into(), 3, LoopExitReason::Condition)]
    );

    // False on entry: the body never runs.
    assert_eq!(run_plain(&p, json!({"n": 5})), ids(&["after"]));
}

#[test]
fn until_checks_after_each_pass_so_the_first_pass_always_runs() {
    let p = pin(json!([lp(
        "u",
        json!({"until": {"var": "done", "equals": true}, "maxIterations": 10}),
        json!([s("work", json!({}))])
    ),]));
    // Already true on entry: still one pass.
    let (mut run, _) = Run::interactive(&p, json!({"done": true}));
    assert_eq!(run.drive(|_, _| notes()), ids(&["work"]));
    assert_eq!(
        run.exits(),
        vec![("u".into(), 1, LoopExitReason::Condition)]
    );
    // Becomes true during the third pass.
    let (mut run, _) = Run::interactive(&p, json!({}));
    let mut n = 0;
    run.drive(|_, _| {
        n += 1;
        if n == 3 {
            ctx(json!({"done": true}))
        } else {
            notes()
        }
    });
    assert_eq!(
        run.exits(),
        vec![("u".into(), 3, LoopExitReason::Condition)]
    );
}

#[test]
fn for_with_a_literal_count() {
    let p = pin(json!([lp(
        "f",
        json!({"for": 3, "maxIterations": 10}),
        json!([s("x", json!({}))])
    )]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    assert_eq!(run.drive(|_, _| notes()), ids(&["x", "x", "x"]));
    assert_eq!(
        run.exits(),
        vec![("f".into(), 3, LoopExitReason::Completed)]
    );

    let zero = pin(json!([
        lp(
            "f",
            json!({"for": 0, "maxIterations": 10}),
            json!([s("x", json!({}))])
        ),
        s("y", json!({}))
    ]));
    assert_eq!(run_plain(&zero, json!({})), ids(&["y"]));
}

#[test]
fn for_with_a_context_count_reads_it_once_on_entry() {
    let p = pin(json!([lp(
        "f",
        json!({"for": {"var": "n"}, "maxIterations": 10}),
        json!([s("x", json!({}))])
    ),]));
    // Changing `n` inside the loop does not change the count read on entry.
    let (mut run, _) = Run::interactive(&p, json!({"n": 2}));
    assert_eq!(run.drive(|_, _| ctx(json!({"n": 9}))), ids(&["x", "x"]));
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, EventBody::LoopEntered { count: Some(2), .. }))
    );
    // Unset (or not a number): zero passes.
    assert_eq!(run_plain(&p, json!({})), Vec::<String>::new());
    assert_eq!(run_plain(&p, json!({"n": "two"})), Vec::<String>::new());
    // More than maxIterations: the bound wins, and the exit says so.
    let (mut run, _) = Run::interactive(&p, json!({"n": 50}));
    assert_eq!(run.drive(|_, _| notes()).len(), 10);
    assert_eq!(
        run.exits(),
        vec![("f".into(), 10, LoopExitReason::MaxIterations)]
    );
}

#[test]
fn for_each_exposes_item_and_index_to_prompts_and_conditions() {
    let p = pin(json!([lp(
        "each",
        json!({"forEach": {"over": "slices", "as": "slice", "index": "i"}, "maxIterations": 10}),
        json!([
            s(
                "build",
                json!({
                    "prompt": "Build {{slice.title}} (#{{i}}, pass {{worktrain.loops.each.pass}} of {{worktrain.loops.each.maxIterations}}); also {{context.slice.title}}.",
                    "promptFragments": [{"when": {"var": "slice.risky", "equals": true}, "text": "Careful with {{slice.title}}."}]
                })
            ),
            s("later-only", json!({"runCondition": {"var": "i", "gt": 0}})),
        ]),
    ),]));
    let slices = json!({"slices": [{"title": "parse"}, {"title": "eval", "risky": true}, {"title": "print"}]});
    let (mut run, first) = Run::interactive(&p, slices);
    let prompt = first.step.as_ref().unwrap().prompt.clone();
    assert_eq!(prompt, "Build parse (#0, pass 1 of 10); also parse.");
    let mut prompts = vec![prompt];
    loop {
        let r = run.submit(notes());
        match r.step {
            Some(step) if step.id.as_str() == "build" => {
                assert_eq!(step.loop_pass.as_ref().unwrap().id.as_str(), "each");
                prompts.push(step.prompt);
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(
        prompts,
        [
            "Build parse (#0, pass 1 of 10); also parse.",
            "Build eval (#1, pass 2 of 10); also eval.\n\nCareful with eval.",
            "Build print (#2, pass 3 of 10); also print.",
        ]
    );
    // `later-only` is skipped on the first element only.
    assert_eq!(
        run.entered(),
        ids(&["build", "build", "later-only", "build", "later-only"])
    );
    assert_eq!(run.skipped(), ids(&["later-only"]));
    assert_eq!(
        run.exits(),
        vec![("each".into(), 3, LoopExitReason::Completed)]
    );
}

#[test]
fn for_each_defaults_to_item_and_index_and_reads_the_array_on_every_pass() {
    let p = pin(json!([lp(
        "each",
        json!({"forEach": {"over": "todo"}, "maxIterations": 10}),
        json!([s("do", json!({"prompt": "{{index}}: {{item}}"}))])
    ),]));
    // The first pass appends an element; the loop sees it.
    let (mut run, _) = Run::interactive(&p, json!({"todo": ["a"]}));
    let mut prompts = Vec::new();
    run.drive(|_, c| {
        let todo = c["todo"].as_array().unwrap().clone();
        prompts.push(todo.len());
        if todo.len() == 1 {
            ctx(json!({"todo": ["a", "b"]}))
        } else {
            notes()
        }
    });
    assert_eq!(run.entered().len(), 2);
    assert_eq!(
        run.exits(),
        vec![("each".into(), 2, LoopExitReason::Completed)]
    );
    // Shrinking it ends the loop early.
    let (mut run, _) = Run::interactive(&p, json!({"todo": ["a", "b", "c"]}));
    run.drive(|_, _| ctx(json!({"todo": ["a"]})));
    assert_eq!(
        run.exits(),
        vec![("each".into(), 1, LoopExitReason::Completed)]
    );
    // Not an array, or unset: zero passes.
    assert!(run_plain(&p, json!({"todo": "a"})).is_empty());
    assert!(run_plain(&p, json!({})).is_empty());
}

#[test]
fn nested_for_each_can_iterate_over_a_field_of_the_outer_item() {
    let p = pin(json!([lp(
        "outer",
        json!({"forEach": {"over": "slices", "as": "slice"}, "maxIterations": 5}),
        json!([lp(
            "inner",
            json!({"forEach": {"over": "slice.tasks", "as": "task", "index": "t"}, "maxIterations": 5}),
            json!([s("do", json!({"prompt": "{{slice.name}}/{{task}}"})),])
        ),])
    ),]));
    let (mut run, first) = Run::interactive(
        &p,
        json!({"slices": [{"name": "a", "tasks": ["1", "2"]}, {"name": "b", "tasks": ["3"]}]}),
    );
    let mut prompts = vec![first.step.unwrap().prompt];
    while let Some(step) = run.submit(notes()).step {
        prompts.push(step.prompt);
    }
    assert_eq!(prompts, ["a/1", "a/2", "b/3"]);
}

#[test]
fn decision_only_loop_runs_until_its_decision_step_says_stop() {
    let p = pin(json!([
        lp(
            "d",
            json!({"maxIterations": 5}),
            json!([
                s("work", json!({})),
                s(
                    "check",
                    json!({"outputContract": {"contract": "loop_control"}})
                ),
            ])
        ),
        s("after", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let mut decisions = vec![CONTINUE, CONTINUE, STOP].into_iter();
    let steps = run.drive(|step, _| {
        if step == "check" {
            decide(decisions.next().unwrap())
        } else {
            notes()
        }
    });
    assert_eq!(
        steps,
        ids(&["work", "check", "work", "check", "work", "check", "after"])
    );
    assert_eq!(run.exits(), vec![("d".into(), 3, LoopExitReason::Decision)]);
    // The decision is recorded with the step's output, naming its loop.
    let recorded: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            EventBody::StepCompleted {
                loop_decision: Some(d),
                ..
            } => Some((d.loop_id.to_string(), d.decision)),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("d".into(), CONTINUE),
            ("d".into(), CONTINUE),
            ("d".into(), STOP)
        ]
    );
}

#[test]
fn decision_step_can_be_named_and_works_with_a_condition_loop() {
    // `decisionStep` makes the named step produce loop_control (it gets the contract).
    let p = pin(json!([lp(
        "w",
        json!({"while": {"var": "go", "equals": true}, "maxIterations": 5, "decisionStep": "judge"}),
        json!([s("judge", json!({})),])
    ),]));
    let judge = &p.workflow.steps[0];
    assert_eq!(
        judge.output_contract.as_ref().unwrap().contract,
        ContractName::LoopControl
    );
    assert!(judge.decides.is_some());
    // `stop` ends a while loop whose condition still holds.
    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    let r = run.submit(notes());
    assert_eq!(
        r.outcome,
        Outcome::Blocked,
        "the named decision step must submit loop_control"
    );
    assert_eq!(r.blockers[0].code, BlockerCode::ArtifactMissing);
    run.submit(decide(STOP));
    assert!(run.complete());
    assert_eq!(run.exits(), vec![("w".into(), 1, LoopExitReason::Decision)]);
    // `continue` does not override the condition: the while is still checked.
    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    run.submit(Submission {
        context: json!({"go": false}).as_object().cloned().unwrap(),
        ..decide(CONTINUE)
    });
    assert!(run.complete());
    assert_eq!(
        run.exits(),
        vec![("w".into(), 1, LoopExitReason::Condition)]
    );
}

#[test]
fn reaching_max_iterations_exits_normally_and_is_recorded() {
    let p = pin(json!([
        lp(
            "d",
            json!({"maxIterations": 3}),
            json!([s(
                "check",
                json!({"outputContract": {"contract": "loop_control"}})
            )])
        ),
        lp(
            "w",
            json!({"while": {"var": "x", "exists": false}, "maxIterations": 2}),
            json!([s("spin", json!({}))])
        ),
        s("after", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let steps = run.drive(|step, _| {
        if step == "check" {
            decide(CONTINUE)
        } else {
            notes()
        }
    });
    assert_eq!(
        steps,
        ids(&["check", "check", "check", "spin", "spin", "after"])
    );
    assert_eq!(
        run.exits(),
        vec![
            ("d".into(), 3, LoopExitReason::MaxIterations),
            ("w".into(), 2, LoopExitReason::MaxIterations)
        ]
    );
    assert!(run.complete());
}

#[test]
fn nested_loops_multiply_and_see_both_passes() {
    let p = pin(json!([lp(
        "outer",
        json!({"for": 2, "maxIterations": 5}),
        json!([
            lp(
                "inner",
                json!({"for": 3, "maxIterations": 5}),
                json!([s(
                    "x",
                    json!({"prompt": "{{worktrain.loops.outer.pass}}.{{worktrain.loops.inner.pass}}"})
                ),])
            ),
            s(
                "y",
                json!({"prompt": "{{worktrain.loops.outer.iteration}} {{worktrain.loops.inner.pass}}"})
            ),
        ])
    ),]));
    let (mut run, first) = Run::interactive(&p, json!({}));
    let mut prompts = vec![first.step.unwrap().prompt];
    while let Some(step) = run.submit(notes()).step {
        prompts.push(step.prompt);
    }
    // After the inner loop exits, its variables are gone (rendered visibly as unset).
    assert_eq!(
        prompts,
        [
            "1.1",
            "1.2",
            "1.3",
            "0 ⟨unset: worktrain.loops.inner.pass⟩",
            "2.1",
            "2.2",
            "2.3",
            "1 ⟨unset: worktrain.loops.inner.pass⟩"
        ]
    );
    assert_eq!(
        run.exits(),
        vec![
            ("inner".into(), 3, LoopExitReason::Completed),
            ("inner".into(), 3, LoopExitReason::Completed),
            ("outer".into(), 2, LoopExitReason::Completed),
        ]
    );
}

#[test]
fn a_stop_decision_does_not_leak_into_an_adjacent_loop() {
    // The trap: a loop's "stop" also skipped the next loop.
    let p = pin(json!([
        lp(
            "a",
            json!({"maxIterations": 3}),
            json!([s(
                "a-check",
                json!({"outputContract": {"contract": "loop_control"}})
            )])
        ),
        lp(
            "b",
            json!({"maxIterations": 3}),
            json!([s(
                "b-check",
                json!({"outputContract": {"contract": "loop_control"}})
            )])
        ),
        lp(
            "c",
            json!({"for": 2, "maxIterations": 3}),
            json!([s("c-work", json!({}))])
        ),
    ]));
    // a stops at once; b continues once, then stops; c (no decision step) runs its count.
    let (mut run, _) = Run::interactive(&p, json!({}));
    let mut b = vec![CONTINUE, STOP].into_iter();
    let steps = run.drive(|step, _| match step {
        "a-check" => decide(STOP),
        "b-check" => decide(b.next().unwrap()),
        _ => notes(),
    });
    assert_eq!(
        steps,
        ids(&["a-check", "b-check", "b-check", "c-work", "c-work"])
    );
    assert_eq!(
        run.exits(),
        vec![
            ("a".into(), 1, LoopExitReason::Decision),
            ("b".into(), 2, LoopExitReason::Decision),
            ("c".into(), 2, LoopExitReason::Completed),
        ]
    );
    // And the other way round: a continues to its bound, b stops at once.
    let (mut run, _) = Run::interactive(&p, json!({}));
    run.drive(|step, _| match step {
        "a-check" => decide(CONTINUE),
        "b-check" => decide(STOP),
        _ => notes(),
    });
    assert_eq!(
        run.exits(),
        vec![
            ("a".into(), 3, LoopExitReason::MaxIterations),
            ("b".into(), 1, LoopExitReason::Decision),
            ("c".into(), 2, LoopExitReason::Completed),
        ]
    );
}

#[test]
fn an_inner_loop_decision_does_not_stop_the_outer_loop() {
    let p = pin(json!([
        lp(
            "outer",
            json!({"maxIterations": 4, "decisionStep": "outer-check"}),
            json!([
                lp(
                    "inner",
                    json!({"maxIterations": 4}),
                    json!([s(
                        "inner-check",
                        json!({"outputContract": {"contract": "loop_control"}})
                    ),])
                ),
                s("outer-check", json!({})),
            ])
        ),
        s("after", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let mut outer = vec![CONTINUE, CONTINUE, STOP].into_iter();
    let steps = run.drive(|step, _| match step {
        "inner-check" => decide(STOP),
        "outer-check" => decide(outer.next().unwrap()),
        _ => notes(),
    });
    assert_eq!(
        steps,
        ids(&[
            "inner-check",
            "outer-check",
            "inner-check",
            "outer-check",
            "inner-check",
            "outer-check",
            "after"
        ])
    );
    assert_eq!(
        run.exits(),
        vec![
            ("inner".into(), 1, LoopExitReason::Decision),
            ("inner".into(), 1, LoopExitReason::Decision),
            ("inner".into(), 1, LoopExitReason::Decision),
            ("outer".into(), 3, LoopExitReason::Decision),
        ]
    );
    // An inner `continue` on the outer's last pass neither extends nor stops the outer.
    let (mut run, _) = Run::interactive(&p, json!({}));
    let mut inner = vec![CONTINUE, STOP].into_iter().cycle();
    run.drive(|step, _| match step {
        "inner-check" => decide(inner.next().unwrap()),
        "outer-check" => decide(STOP),
        _ => notes(),
    });
    assert_eq!(
        run.exits(),
        vec![
            ("inner".into(), 2, LoopExitReason::Decision),
            ("outer".into(), 1, LoopExitReason::Decision)
        ]
    );
}

#[test]
fn a_decision_skipped_in_a_pass_does_not_carry_over() {
    // Pass 1 decides `continue` and sets a key that skips the decision step from then on:
    // passes 2 and 3 record no decision (pass 1's is not reused), so the loop runs to its
    // bound.
    let p = pin(json!([lp(
        "d",
        json!({"maxIterations": 3, "decisionStep": "check"}),
        json!([
            s("work", json!({})),
            s(
                "check",
                json!({"runCondition": {"var": "skip-check", "not_equals": true}})
            ),
        ])
    ),]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    run.drive(|step, _| match step {
        "check" => Submission {
            context: json!({"skip-check": true}).as_object().cloned().unwrap(),
            ..decide(CONTINUE)
        },
        _ => notes(),
    });
    assert_eq!(run.entered(), ids(&["work", "check", "work", "work"]));
    assert_eq!(
        run.exits(),
        vec![("d".into(), 3, LoopExitReason::MaxIterations)]
    );
}

// ---------------------------------------------------------------------------------------
// jumpIf
// ---------------------------------------------------------------------------------------

fn jumps(run: &Run<'_>) -> Vec<(String, String, u32)> {
    run.events
        .iter()
        .filter_map(|e| match e {
            EventBody::JumpTaken {
                step_id,
                target,
                count,
                ..
            } => Some((step_id.to_string(), target.to_string(), *count)),
            _ => None,
        })
        .collect()
}

fn exhausted(run: &Run<'_>) -> Vec<(String, u32)> {
    run.events
        .iter()
        .filter_map(|e| match e {
            EventBody::JumpExhausted { step_id, max_jumps } => {
                Some((step_id.to_string(), *max_jumps))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn jump_is_taken_while_its_condition_holds_then_falls_through_when_exhausted() {
    let p = pin(json!([
        s("a", json!({})),
        s(
            "b",
            json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": "a", "maxJumps": 2}})
        ),
        s("c", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({"again": true}));
    assert_eq!(
        run.drive(|_, _| notes()),
        ids(&["a", "b", "a", "b", "a", "b", "c"])
    );
    assert_eq!(
        jumps(&run),
        vec![("b".into(), "a".into(), 1), ("b".into(), "a".into(), 2)]
    );
    // The bound is reached: recorded, and execution falls through.
    assert_eq!(exhausted(&run), vec![("b".into(), 2)]);
    assert_eq!(run.summary().jumps, 2);

    // The condition is evaluated after the step completes, with its own output merged.
    let (mut run, _) = Run::interactive(&p, json!({"again": true}));
    let steps = run.drive(|step, _| {
        if step == "b" {
            ctx(json!({"again": false}))
        } else {
            notes()
        }
    });
    assert_eq!(steps, ids(&["a", "b", "c"]));
    assert!(jumps(&run).is_empty() && exhausted(&run).is_empty());
}

#[test]
fn jump_counters_are_per_session_not_per_loop_pass() {
    let p = pin(json!([lp(
        "l",
        json!({"for": 3, "maxIterations": 3}),
        json!([
            s("p", json!({})),
            s(
                "q",
                json!({"jumpIf": {"condition": {"var": "retry", "equals": true}, "target": "p", "maxJumps": 1}})
            ),
        ])
    ),]));
    let (mut run, _) = Run::interactive(&p, json!({"retry": true}));
    let steps = run.drive(|_, _| notes());
    // One jump in the whole session (first pass); later passes fall through, recorded.
    assert_eq!(steps, ids(&["p", "q", "p", "q", "p", "q", "p", "q"]));
    assert_eq!(jumps(&run).len(), 1);
    assert_eq!(
        exhausted(&run),
        vec![("q".into(), 1), ("q".into(), 1), ("q".into(), 1)]
    );
    assert!(run.entered().len() as u64 <= p.workflow.node_bound);
}

#[test]
fn jump_to_an_earlier_loop_re_enters_it_from_the_start() {
    let p = pin(json!([
        lp(
            "l",
            json!({"for": 2, "maxIterations": 2}),
            json!([s("x", json!({}))])
        ),
        s(
            "y",
            json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": "l", "maxJumps": 1}})
        ),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({"again": true}));
    assert_eq!(
        run.drive(|_, _| notes()),
        ids(&["x", "x", "y", "x", "x", "y"])
    );
    assert_eq!(
        run.exits(),
        vec![
            ("l".into(), 2, LoopExitReason::Completed),
            ("l".into(), 2, LoopExitReason::Completed)
        ]
    );
    assert_eq!(run.entered().len() as u64, p.workflow.node_bound);
}

#[test]
fn jump_target_must_be_an_earlier_entry_of_the_same_list() {
    let jump = |target: &str| json!({"jumpIf": {"condition": {"var": "x", "equals": 1}, "target": target, "maxJumps": 1}});
    // Forward.
    let e = rejected(json!([s("a", jump("b")), s("b", json!({}))]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].jumpIf.target",
        "is not an earlier entry of the same step list",
    );
    // Itself.
    let e = rejected(json!([s("a", jump("a"))]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].jumpIf.target",
        "is not an earlier entry",
    );
    // Into a loop body from outside.
    let e = rejected(json!([
        lp(
            "l",
            json!({"for": 1, "maxIterations": 1}),
            json!([s("in", json!({}))])
        ),
        s("out", jump("in"))
    ]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].jumpIf.target",
        "cannot go forward or cross loop boundaries",
    );
    // Out of a loop body.
    let e = rejected(json!([
        s("out", json!({})),
        lp(
            "l",
            json!({"for": 1, "maxIterations": 1}),
            json!([s("in", jump("out"))])
        )
    ]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].steps[0].jumpIf.target",
        "cannot go forward or cross loop boundaries",
    );
    // To the enclosing loop itself.
    let e = rejected(json!([lp(
        "l",
        json!({"for": 1, "maxIterations": 1}),
        json!([s("in", jump("l"))])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].steps[0].jumpIf.target",
        "is not an earlier entry",
    );
    // Nonexistent.
    let e = rejected(json!([s("a", json!({})), s("b", jump("nope"))]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].jumpIf.target",
        "jump target `nope` does not exist",
    );
    // maxJumps 0, and over the documented maximum.
    let e = rejected(json!([
        s("a", json!({})),
        s(
            "b",
            json!({"jumpIf": {"condition": {"var": "x", "equals": 1}, "target": "a", "maxJumps": 0}})
        )
    ]));
    assert_err(&e, Rule::Value, "steps[1].jumpIf.maxJumps", "at least 1");
    let e = rejected(json!([
        s("a", json!({})),
        s(
            "b",
            json!({"jumpIf": {"condition": {"var": "x", "equals": 1}, "target": "a", "maxJumps": 101}})
        )
    ]));
    assert_err(&e, Rule::Value, "steps[1].jumpIf.maxJumps", "at most 100");
    // Inside the same loop body, backwards: fine.
    pin(json!([lp(
        "l",
        json!({"for": 1, "maxIterations": 1}),
        json!([s("a", json!({})), s("b", jump("a"))])
    )]));
}

// ---------------------------------------------------------------------------------------
// runCondition
// ---------------------------------------------------------------------------------------

#[test]
fn skipped_steps_are_recorded_and_never_run_later_when_the_context_changes() {
    let p = pin(json!([
        s(
            "gated",
            json!({"runCondition": {"var": "ready", "equals": true}})
        ),
        s("make-ready", json!({})),
        s(
            "also-gated",
            json!({"runCondition": {"var": "ready", "equals": true}})
        ),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let steps = run.drive(|step, _| {
        if step == "make-ready" {
            ctx(json!({"ready": true}))
        } else {
            notes()
        }
    });
    // `gated` was skipped before `ready` was set; setting it later does not bring it back.
    assert_eq!(steps, ids(&["make-ready", "also-gated"]));
    assert_eq!(run.skipped(), ids(&["gated"]));
    let skip = run.events.iter().find_map(|e| match e {
        EventBody::StepSkipped { condition, .. } => Some(condition.clone()),
        _ => None,
    });
    assert_eq!(skip.as_deref(), Some("ready equals true"));
    assert_eq!(run.summary().steps_skipped, 1);
    assert!(run.complete());
}

#[test]
fn a_session_whose_every_step_is_skipped_completes_at_start() {
    let p = pin(json!([s(
        "a",
        json!({"runCondition": {"var": "x", "exists": true}})
    )]));
    let (run, r) = Run::interactive(&p, json!({}));
    assert_eq!(r.outcome, Outcome::Started);
    assert_eq!(r.intent, Intent::Complete);
    assert!(r.step.is_none() && r.tokens.advance.is_none());
    assert!(run.complete());
    assert_eq!(r.progress.skipped, 1);
}

#[test]
fn conditions_combine_and_read_nested_paths() {
    let p = pin(json!([s(
        "a",
        json!({"runCondition": {"and": [
            {"var": "review.findings.0.severity", "in": ["major", "blocking"]},
            {"not": {"var": "size", "equals": "small"}},
            {"or": [{"var": "n", "gte": 2}, {"var": "tags", "contains": "urgent"}]}
        ]}})
    ),]));
    let base = json!({"review": {"findings": [{"severity": "major"}]}, "size": "large", "n": 2});
    assert_eq!(run_plain(&p, base.clone()), ids(&["a"]));
    let mut small = base.clone();
    small["size"] = json!("small");
    assert!(run_plain(&p, small).is_empty());
    let mut tagged = base.clone();
    tagged["n"] = json!(1);
    tagged["tags"] = json!(["urgent"]);
    assert_eq!(run_plain(&p, tagged), ids(&["a"]));
    let mut low = base;
    low["n"] = json!(1);
    assert!(run_plain(&p, low).is_empty());
}

// ---------------------------------------------------------------------------------------
// Confirmation gates
// ---------------------------------------------------------------------------------------

#[test]
fn interactive_gates_ask_the_user_then_submit() {
    let p = pin(json!([
        s("plan", json!({"requireConfirmation": true})),
        s("do", json!({}))
    ]));
    let (mut run, r) = Run::interactive(&p, json!({}));
    assert_eq!(r.intent, Intent::AskUserThenSubmit);
    let step = r.step.unwrap();
    assert!(step.requires_confirmation);
    assert_eq!(step.gate, Some(GateKind::HumanApproval));
    assert!(r.next.contains("ask them to confirm"), "{}", r.next);
    // Advisory: the submission advances without parking.
    let r = run.submit(notes());
    assert_eq!(r.outcome, Outcome::Advanced);
    assert_eq!(r.intent, Intent::PerformStep);
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, EventBody::StepParked { .. }))
    );
}

#[test]
fn autonomous_gates_park_and_approval_completes_with_the_parked_output() {
    let p = pin(json!([
        s("plan", json!({"requireConfirmation": true})),
        s("do", json!({"prompt": "Do {{context.plan}}."}))
    ]));
    let (mut run, r) = Run::start(&p, SessionMode::Autonomous, json!({}));
    assert_eq!(
        r.intent,
        Intent::PerformStep,
        "autonomous agents just do the step"
    );
    let r = run.submit(ctx(json!({"plan": "the plan"})));
    assert_eq!(r.outcome, Outcome::Parked);
    assert_eq!(r.intent, Intent::WaitForApproval);
    assert!(r.tokens.advance.is_none(), "nothing to submit while parked");
    assert_eq!(run.summary().status, SessionStatus::Parked);
    assert!(
        run.context().get("plan").is_none(),
        "the parked output is not applied yet"
    );
    // Submitting while parked is refused.
    let e = run.try_submit(notes()).unwrap_err();
    assert_eq!(e.code, ErrorCode::SessionParked);
    // Approve: the step completes with the parked output.
    let r = run.approve(Some("looks right")).unwrap();
    assert_eq!(r.outcome, Outcome::Approved);
    assert_eq!(r.step.as_ref().unwrap().prompt, "Do the plan.");
    assert_eq!(run.context()["plan"], "the plan");
    let completed = run.events.iter().find_map(|e| match e {
        EventBody::StepCompleted {
            notes,
            context_delta,
            ..
        } => Some((notes.clone(), context_delta.clone())),
        _ => None,
    });
    assert_eq!(
        completed,
        Some((
            "done".into(),
            json!({"plan": "the plan"}).as_object().cloned().unwrap()
        ))
    );
    assert!(
        run.events.iter().any(
            |e| matches!(e, EventBody::GateApproved { note: Some(n), .. } if n == "looks right")
        )
    );
    // Nothing is parked any more.
    assert_eq!(run.approve(None).unwrap_err().code, ErrorCode::NotParked);
    assert_eq!(run.reject("x").unwrap_err().code, ErrorCode::NotParked);
}

#[test]
fn rejection_needs_a_note_and_starts_a_new_attempt_with_a_rejected_blocker() {
    let p = pin(json!([s(
        "plan",
        json!({"requireConfirmation": {"kind": "coordinator_eval"}})
    )]));
    let (mut run, _) = Run::start(&p, SessionMode::Autonomous, json!({}));
    let r = run.submit(notes());
    assert_eq!(r.outcome, Outcome::Parked);
    assert_eq!(
        r.step.as_ref().unwrap().gate,
        Some(GateKind::CoordinatorEval)
    );
    assert!(run.events.iter().any(|e| matches!(
        e,
        EventBody::StepParked {
            gate: GateKind::CoordinatorEval,
            ..
        }
    )));
    assert_eq!(run.reject("  ").unwrap_err().code, ErrorCode::InvalidInput);
    let r = run.reject("split the plan into smaller slices").unwrap();
    assert_eq!(r.outcome, Outcome::Rejected);
    assert_eq!(r.intent, Intent::FixBlockers);
    assert_eq!(r.blockers.len(), 1);
    assert_eq!(r.blockers[0].code, BlockerCode::Rejected);
    assert!(
        r.blockers[0]
            .message
            .contains("split the plan into smaller slices")
    );
    assert_eq!(r.step.as_ref().unwrap().attempt.0, 2);
    assert!(r.tokens.advance.is_some());
    assert_eq!(run.summary().status, SessionStatus::Blocked);
    // The new attempt parks again; this time it is approved.
    assert_eq!(run.submit(notes()).outcome, Outcome::Parked);
    assert_eq!(run.approve(None).unwrap().outcome, Outcome::Complete);
    assert!(run.complete());
}

#[test]
fn a_gate_condition_is_evaluated_once_when_the_step_is_entered() {
    let p = pin(json!([s(
        "change",
        json!({"requireConfirmation": {"var": "risk", "equals": "high"}})
    )]));
    // Low on entry: the step's own output making it high does not gate it.
    let (mut run, r) = Run::start(&p, SessionMode::Autonomous, json!({"risk": "low"}));
    assert!(!r.step.unwrap().requires_confirmation);
    assert_eq!(
        run.submit(ctx(json!({"risk": "high"}))).outcome,
        Outcome::Complete
    );
    // High on entry: gated even though the output lowers it.
    let (mut run, r) = Run::start(&p, SessionMode::Autonomous, json!({"risk": "high"}));
    assert!(r.step.unwrap().requires_confirmation);
    assert_eq!(
        run.submit(ctx(json!({"risk": "low"}))).outcome,
        Outcome::Parked
    );
    // A gate of a given kind with a condition.
    let p = pin(json!([s(
        "x",
        json!({"requireConfirmation": {"kind": "human_approval", "when": {"var": "risk", "equals": "high"}}})
    )]));
    let (_, r) = Run::interactive(&p, json!({"risk": "high"}));
    assert_eq!(r.intent, Intent::AskUserThenSubmit);
    let (_, r) = Run::interactive(&p, json!({}));
    assert_eq!(r.intent, Intent::PerformStep);
}

#[test]
fn an_approved_decision_step_applies_its_loop_decision() {
    let p = pin(json!([
        lp(
            "l",
            json!({"maxIterations": 3}),
            json!([s(
                "check",
                json!({"requireConfirmation": true, "outputContract": {"contract": "loop_control"}})
            ),])
        ),
        s("after", json!({})),
    ]));
    let (mut run, _) = Run::start(&p, SessionMode::Autonomous, json!({}));
    assert_eq!(run.submit(decide(STOP)).outcome, Outcome::Parked);
    let r = run.approve(None).unwrap();
    assert_eq!(r.step.unwrap().id.as_str(), "after");
    assert_eq!(run.exits(), vec![("l".into(), 1, LoopExitReason::Decision)]);
}

// ---------------------------------------------------------------------------------------
// Output contracts, notes and contextOutputs
// ---------------------------------------------------------------------------------------

#[test]
fn a_missing_artifact_blocks_with_the_contracts_example_and_a_new_attempt() {
    let p = pin(json!([s(
        "review",
        json!({"outputContract": {"contract": "review_verdict"}})
    )]));
    let (mut run, r) = Run::interactive(&p, json!({}));
    let view = r.step.unwrap().output_contract.unwrap();
    assert_eq!(view.contract, ContractName::ReviewVerdict);
    assert!(view.required);
    assert_eq!(view.example, ContractName::ReviewVerdict.example());
    let r = run.submit(notes());
    assert_eq!(r.outcome, Outcome::Blocked);
    assert_eq!(r.intent, Intent::FixBlockers);
    assert_eq!(r.blockers.len(), 1);
    assert_eq!(r.blockers[0].code, BlockerCode::ArtifactMissing);
    assert!(
        r.blockers[0]
            .message
            .contains("\"kind\": \"review_verdict\""),
        "{}",
        r.blockers[0].message
    );
    assert_eq!(
        r.blockers[0].example.as_ref(),
        Some(&ContractName::ReviewVerdict.example())
    );
    assert_eq!(r.step.as_ref().unwrap().attempt.0, 2);
    assert_eq!(run.summary().status, SessionStatus::Blocked);
    assert_eq!(run.summary().blocked_attempts, 1);
    assert_eq!(
        run.summary().current.as_ref().unwrap().blockers,
        r.blockers,
        "kept for rehydration"
    );
    // The example itself is accepted.
    assert_eq!(
        run.submit(art(ContractName::ReviewVerdict.example()))
            .outcome,
        Outcome::Complete
    );
}

#[test]
fn an_invalid_artifact_blocks_with_the_precise_path_of_each_problem() {
    let p = pin(json!([s(
        "review",
        json!({"outputContract": {"contract": "review_verdict"}})
    )]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(art(json!({"kind": "review_verdict", "verdict": "clean",
        "findings": [{"severity": "blocking", "message": "x", "line": 0}, {"severity": "huge", "message": ""}]})));
    let found: Vec<(BlockerCode, Option<&str>)> = r
        .blockers
        .iter()
        .map(|b| (b.code, b.path.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (BlockerCode::ArtifactInvalid, Some("findings[0].line")),
            (BlockerCode::ArtifactInvalid, Some("findings[1].severity")),
            (BlockerCode::ArtifactInvalid, Some("findings[1].message")),
            (BlockerCode::ArtifactInvalid, Some("verdict")),
        ]
    );
    assert!(
        r.blockers
            .iter()
            .all(|b| b.example.as_ref() == Some(&ContractName::ReviewVerdict.example()))
    );
    // Two artifacts of the contract's kind are ambiguous.
    let two = Submission {
        artifacts: vec![
            ContractName::ReviewVerdict.example(),
            ContractName::ReviewVerdict.example(),
        ],
        ..notes()
    };
    let r = run.submit(two);
    assert_eq!(r.blockers[0].code, BlockerCode::ArtifactInvalid);
    assert!(r.blockers[0].message.contains("exactly one"));
    // Other contracts: the loop_control decision, the handoff fields.
    let p = pin(json!([
        lp(
            "l",
            json!({"maxIterations": 2}),
            json!([s(
                "c",
                json!({"outputContract": {"contract": "loop_control"}})
            )])
        ),
        s("h", json!({"outputContract": {"contract": "handoff"}})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(art(json!({"kind": "loop_control", "decision": "maybe"})));
    assert_eq!(r.blockers[0].path.as_deref(), Some("decision"));
    assert!(r.blockers[0].message.contains("continue, stop"));
    run.submit(decide(STOP));
    let r = run.submit(art(json!({"kind": "handoff", "commitType": "feature", "commitSubject": "x", "prTitle": "t", "prBody": "b", "filesChanged": "a.rs"})));
    let paths: Vec<_> = r
        .blockers
        .iter()
        .filter_map(|b| b.path.as_deref())
        .collect();
    assert_eq!(paths, ["commitType", "filesChanged"]);
    assert_eq!(
        run.submit(art(ContractName::Handoff.example())).outcome,
        Outcome::Complete
    );
}

#[test]
fn an_optional_artifact_may_be_omitted_but_not_invalid() {
    let p = pin(json!([s(
        "h",
        json!({"outputContract": {"contract": "handoff", "required": false}})
    )]));
    assert_eq!(run_plain(&p, json!({})), ids(&["h"]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(art(json!({"kind": "handoff"})));
    assert_eq!(r.outcome, Outcome::Blocked);
    assert!(
        r.blockers
            .iter()
            .all(|b| b.code == BlockerCode::ArtifactInvalid)
    );
}

fn assess(dims: Value) -> Submission {
    art(json!({"kind": "assessment", "dimensions": dims, "rationale": "because"}))
}

#[test]
fn assessment_levels_are_checked_and_can_block() {
    let p = pin(json!([s(
        "triage",
        json!({"outputContract": {"contract": "assessment", "contextKey": "triage", "dimensions": {
            "risk": {"levels": ["low", "medium", "high"]},
            "confidence": {"levels": ["low", "high"], "blockOn": ["low"]}
        }}})
    ),]));
    let (mut run, r) = Run::interactive(&p, json!({}));
    // The example names the declared dimensions with their first level.
    let example = r.step.unwrap().output_contract.unwrap().example;
    assert_eq!(
        example["dimensions"],
        json!({"confidence": "low", "risk": "low"})
    );
    // Unknown level, unknown dimension, missing dimension: each blocked at its path.
    let r = run.submit(assess(json!({"risk": "extreme", "mood": "good"})));
    let found: Vec<(BlockerCode, Option<&str>)> = r
        .blockers
        .iter()
        .map(|b| (b.code, b.path.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (BlockerCode::ArtifactInvalid, Some("dimensions.confidence")),
            (BlockerCode::ArtifactInvalid, Some("dimensions.risk")),
            (BlockerCode::ArtifactInvalid, Some("dimensions.mood")),
        ]
    );
    assert!(
        r.blockers[1]
            .message
            .contains("`extreme` is not a level of `risk` (low, medium, high)"),
        "{}",
        r.blockers[1].message
    );
    assert!(r.blockers[2].message.contains("not a declared dimension"));
    assert!(
        r.blockers
            .iter()
            .all(|b| b.example.as_ref() == Some(&example))
    );
    // A blocking level: the step cannot complete with it.
    let r = run.submit(assess(json!({"risk": "low", "confidence": "low"})));
    assert_eq!(r.blockers.len(), 1);
    assert_eq!(r.blockers[0].code, BlockerCode::AssessmentBlocks);
    assert_eq!(r.blockers[0].path.as_deref(), Some("dimensions.confidence"));
    assert!(
        run.context().get("triage").is_none(),
        "a blocked assessment writes nothing"
    );
    assert_eq!(
        run.submit(assess(json!({"risk": "high", "confidence": "high"})))
            .outcome,
        Outcome::Complete
    );
    assert_eq!(
        run.context()["triage"],
        json!({"risk": "high", "confidence": "high"})
    );
}

#[test]
fn assessment_levels_are_written_to_the_context_and_route_the_workflow() {
    let p = pin(json!([
        s(
            "classify",
            json!({"outputContract": {"contract": "assessment", "dimensions": {"size": {"levels": ["small", "large"]}}}})
        ),
        s(
            "big-only",
            json!({"runCondition": {"var": "assessment.size", "equals": "large"}, "prompt": "Size {{context.assessment.size}}."})
        ),
        s(
            "again",
            json!({"outputContract": {"contract": "assessment", "dimensions": {"risk": {"levels": ["low", "high"]}}}})
        ),
    ]));
    // The default context key is `assessment`.
    assert_eq!(
        p.workflow.steps[0]
            .output_contract
            .as_ref()
            .unwrap()
            .context_key
            .as_deref(),
        Some("assessment")
    );
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(assess(json!({"size": "large"})));
    assert_eq!(r.step.unwrap().prompt, "Size large.");
    run.submit(notes());
    run.submit(assess(json!({"risk": "low"})));
    // A later assessment under the same key adds its dimensions to the earlier ones.
    assert_eq!(
        run.context()["assessment"],
        json!({"size": "large", "risk": "low"})
    );
    let (mut run, _) = Run::interactive(&p, json!({}));
    run.submit(assess(json!({"size": "small"})));
    assert_eq!(run.current().as_deref(), Some("again"));
    assert_eq!(run.skipped(), ids(&["big-only"]));
}

#[test]
fn notes_are_required_unless_optional() {
    let p = pin(json!([
        s("a", json!({})),
        s("b", json!({"notesOptional": true}))
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(Submission {
        notes: Some("  \n".into()),
        ..Submission::default()
    });
    assert_eq!(r.blockers[0].code, BlockerCode::NotesRequired);
    run.submit(notes());
    assert_eq!(run.submit(Submission::default()).outcome, Outcome::Complete);
}

#[test]
fn context_outputs_must_be_set_when_the_step_completes() {
    let p = pin(json!([s(
        "plan",
        json!({"contextOutputs": ["slices", "acceptance"]})
    )]));
    let (mut run, r) = Run::interactive(&p, json!({"acceptance": ["exists already"]}));
    assert_eq!(r.step.unwrap().context_outputs, ["slices", "acceptance"]);
    let r = run.submit(notes());
    assert_eq!(
        r.blockers.len(),
        1,
        "an existing value counts as set: {:?}",
        r.blockers
    );
    assert_eq!(r.blockers[0].code, BlockerCode::ContextOutputMissing);
    assert_eq!(r.blockers[0].path.as_deref(), Some("slices"));
    assert!(r.blockers[0].message.contains("`slices`"));
    // Deleting a key with null does not set it.
    let r = run.submit(ctx(json!({"slices": [1], "acceptance": null})));
    assert_eq!(
        r.blockers
            .iter()
            .map(|b| b.path.as_deref())
            .collect::<Vec<_>>(),
        [Some("acceptance")]
    );
    assert!(
        run.context().get("slices").is_none(),
        "a blocked submission changes nothing"
    );
    assert_eq!(
        run.submit(ctx(json!({"slices": [{"title": "one"}]})))
            .outcome,
        Outcome::Complete
    );
    assert_eq!(run.context()["slices"], json!([{"title": "one"}]));
}

#[test]
fn reserved_context_keys_cannot_be_submitted() {
    let p = pin(json!([s("a", json!({}))]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    for key in ["worktrain", "_secret"] {
        let mut delta = Map::new();
        delta.insert(key.into(), json!(1));
        let e = run
            .try_submit(Submission {
                context: delta,
                ..notes()
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ReservedContextKey, "{key}");
    }
}

// ---------------------------------------------------------------------------------------
// Prompt composition
// ---------------------------------------------------------------------------------------

#[test]
fn prompts_substitute_context_mark_unset_values_and_add_fragments_and_guidance() {
    let d = json!({"schemaVersion": 2, "id": "t", "name": "T", "description": "d", "version": "1",
    "guidance": ["Work on {{goal}} carefully.", "Never fake results."],
    "steps": [s("a", json!({
        "prompt": "Goal {{goal}}; lang {{context.lang}}; n {{context.n}}; deep {{context.cfg.level}}; list {{context.tags}}; missing {{context.nope}}; deep missing {{context.cfg.nope}}.",
        "promptFragments": [
            {"when": {"var": "lang", "equals": "rust"}, "text": "Run `cargo clippy` on {{context.lang}} code."},
            {"when": {"var": "lang", "equals": "go"}, "text": "Run `go vet`."}
        ]
    }))]});
    let p = pin_doc(d);
    let (_, r) = Run::interactive(
        &p,
        json!({"lang": "rust", "n": 3, "cfg": {"level": "high"}, "tags": ["a", "b"]}),
    );
    let step = r.step.unwrap();
    assert_eq!(
        step.prompt,
        "Goal the goal; lang rust; n 3; deep high; list [\"a\",\"b\"]; missing ⟨unset: context.nope⟩; deep missing ⟨unset: context.cfg.nope⟩.\n\nRun `cargo clippy` on rust code."
    );
    assert_eq!(
        step.guidance,
        ["Work on the goal carefully.", "Never fake results."]
    );
    // Fragments are chosen by the context, too.
    let (_, r) = Run::interactive(&p, json!({"lang": "go"}));
    assert!(r.step.unwrap().prompt.ends_with("\n\nRun `go vet`."));
}

// ---------------------------------------------------------------------------------------
// Parallel delegation
// ---------------------------------------------------------------------------------------

#[test]
fn parallel_steps_describe_their_children_in_the_prompt() {
    let p = pin(json!([s(
        "fan-out",
        json!({
            "prompt": "Review {{context.mr}}.",
            "parallel": {"join": "any", "children": [
                {"workflow": "review-perspective", "goal": "Correctness of {{context.mr}}", "context": {"perspective": "correctness"}},
                {"workflow": "review-perspective", "goal": "Tests of {{context.mr}}"}
            ]}
        })
    )]));
    let delegation = p.workflow.steps[0].delegation.as_ref().unwrap();
    assert_eq!(delegation.children.len(), 2);
    assert_eq!(delegation.join, Join::Any);
    let (_, r) = Run::interactive(&p, json!({"mr": "!42"}));
    let step = r.step.unwrap();
    let view = step.delegation.as_ref().unwrap();
    assert_eq!(view.children[0].goal, "Correctness of !42");
    assert_eq!(view.children[0].context["perspective"], "correctness");
    assert!(
        step.prompt.starts_with("Review !42.\n\n## Delegate\n"),
        "{}",
        step.prompt
    );
    assert!(
        step.prompt.contains("each as its own session"),
        "{}",
        step.prompt
    );
    assert!(step.prompt.contains("the first result is enough"));
    assert!(step.prompt.contains(
        "- `review-perspective` — Correctness of !42 (context: {\"perspective\":\"correctness\"})"
    ));
    assert!(
        step.prompt
            .contains("- `review-perspective` — Tests of !42\n")
    );
    // Autonomous sessions are told worktrain runs them.
    let (_, r) = Run::start(&p, SessionMode::Autonomous, json!({"mr": "!42"}));
    assert!(
        r.step
            .unwrap()
            .prompt
            .contains("worktrain runs these child sessions for you")
    );
    // A parallel step needs children; join defaults to all.
    let e = rejected(json!([s("x", json!({"parallel": {"children": []}}))]));
    assert_err(
        &e,
        Rule::NonEmpty,
        "steps[0].parallel.children",
        "at least one child",
    );
    let p = pin(json!([s(
        "x",
        json!({"parallel": {"children": [{"workflow": "quick-task", "goal": "g"}]}})
    )]));
    assert_eq!(
        p.workflow.steps[0].delegation.as_ref().unwrap().join,
        Join::All
    );
}

// ---------------------------------------------------------------------------------------
// Routines
// ---------------------------------------------------------------------------------------

/// Routines held in memory, found by id (`mem:<id>`).
struct Routines(HashMap<&'static str, String>);

impl RoutineResolver for Routines {
    fn resolve(&self, reference: &str, _from: &str) -> Result<RoutineSource, String> {
        self.0
            .get(reference)
            .map(|text| RoutineSource {
                location: format!("mem:{reference}"),
                text: text.clone(),
            })
            .ok_or_else(|| format!("no routine `{reference}`"))
    }
}

fn routine(id: &str, params: &[&str], steps: Value) -> String {
    json!({"schemaVersion": 2, "routine": id, "description": "r", "params": params, "steps": steps})
        .to_string()
}

fn with_routines(
    routines: &[(&'static str, String)],
    steps: Value,
) -> Result<Pinned, WorkflowError> {
    let def = parse_workflow("t.json", &doc(steps).to_string())?;
    compile_with(
        &def,
        "mem:workflow",
        &Routines(routines.iter().cloned().collect()),
    )
}

fn verify_routine() -> (&'static str, String) {
    (
        "verify",
        routine(
            "verify",
            &["command", "subject"],
            json!([
                lp(
                    "loop",
                    json!({"maxIterations": 3, "decisionStep": "decide"}),
                    json!([
                        s(
                            "run",
                            json!({
                                "title": "Verify {{args.subject}}",
                                "prompt": "Run `{{args.command}}` for {{args.subject}} in {{context.dir}}.",
                                "promptFragments": [{"when": {"var": "checks", "equals": "fail"}, "text": "Fix {{args.subject}}."}],
                                "jumpIf": {"condition": {"var": "flaky", "equals": true}, "target": "prepare", "maxJumps": 1}
                            })
                        ),
                        s(
                            "decide",
                            json!({"outputContract": {"contract": "loop_control"}})
                        ),
                    ])
                ),
                s(
                    "report",
                    json!({"parallel": {"children": [{"workflow": "w", "goal": "Check {{args.subject}}"}]}})
                )
            ]),
        ),
    )
}

#[test]
fn routines_expand_with_arguments_and_prefixed_ids() {
    let (name, text) = verify_routine();
    // The routine's jump target `prepare` must be an earlier entry of its own list.
    let text = text.replace("\"target\":\"prepare\"", "\"target\":\"run\"");
    let err = with_routines(
        &[(name, text.clone())],
        json!([s("a", json!({})), {"id": "v", "include": "verify", "with": {"command": "make test", "subject": "the parser"}}]),
    );
    let e = err.unwrap_err();
    assert_eq!(e.rule, Rule::Reference, "{e}");
    assert!(e.message.contains("jump target `v.run`"), "{e}");
    // The path says which include and which routine file the entry came from.
    assert_eq!(
        e.path.as_deref(),
        Some("steps[1]<mem:verify>.steps[0].steps[0].jumpIf.target"),
        "{e}"
    );
    // A valid jump: within the loop body, backwards.
    let text = text.replace(
        "\"steps\":[{\"id\":\"run\"",
        "\"steps\":[{\"id\":\"prepare\",\"title\":\"Prepare\",\"prompt\":\"p\"},{\"id\":\"run\"",
    ).replace("\"target\":\"run\"", "\"target\":\"prepare\"");
    let p = with_routines(
        &[(name, text)],
        json!([s("a", json!({})), {"id": "v", "include": "verify", "with": {"command": "make test", "subject": "the parser"}}]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let wf = &p.workflow;
    let step_ids: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        step_ids,
        ["a", "v.prepare", "v.run", "v.decide", "v.report"]
    );
    assert_eq!(wf.loops[0].id.as_str(), "v.loop");
    assert_eq!(
        wf.loops[0]
            .decision_step
            .map(|i| wf.steps[i.0 as usize].id.as_str()),
        Some("v.decide")
    );
    let run = &wf.steps[2];
    assert_eq!(run.title, "Verify the parser");
    assert_eq!(
        run.prompt, "Run `make test` for the parser in {{context.dir}}.",
        "runtime variables are left for the session"
    );
    assert_eq!(run.fragments[0].text, "Fix the parser.");
    assert_eq!(run.jump.as_ref().unwrap().target.as_str(), "v.prepare");
    assert_eq!(
        wf.steps[4].delegation.as_ref().unwrap().children[0].goal,
        "Check the parser"
    );
    // And it runs.
    let (mut session, _) = Run::interactive(&p, json!({"dir": "/src"}));
    session.submit(notes());
    let r = session.submit(notes());
    assert_eq!(
        r.step.as_ref().unwrap().prompt,
        "Run `make test` for the parser in /src."
    );
    session.drive(|step, _| {
        if step == "v.decide" {
            decide(STOP)
        } else {
            notes()
        }
    });
    assert_eq!(
        session.entered(),
        ids(&["a", "v.prepare", "v.run", "v.decide", "v.report"])
    );
}

#[test]
fn routine_arguments_must_match_the_declared_parameters() {
    let (name, text) = verify_routine();
    let routines = [(name, text)];
    let e = with_routines(
        &routines,
        json!([{"id": "v", "include": "verify", "with": {"command": "x"}}]),
    )
    .unwrap_err();
    assert_err(
        &e,
        Rule::Required,
        "steps[0].with",
        "routine `verify` needs the argument `subject`",
    );
    let e = with_routines(&routines, json!([{"id": "v", "include": "verify", "with": {"command": "x", "subject": "y", "colour": "red"}}])).unwrap_err();
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].with.colour",
        "routine `verify` has no parameter `colour` (parameters: command, subject)",
    );
    // A routine that uses an undeclared argument is rejected when included.
    let bad = routine(
        "bad",
        &[],
        json!([s("x", json!({"prompt": "{{args.nope}}"}))]),
    );
    let e = with_routines(&[("bad", bad)], json!([{"id": "b", "include": "bad"}])).unwrap_err();
    assert_eq!(e.rule, Rule::Reference);
    assert!(
        e.message.contains("`{{args.nope}}` is not a parameter"),
        "{e}"
    );
    // Unknown routine.
    let e = with_routines(&routines, json!([{"id": "v", "include": "nope"}])).unwrap_err();
    assert_err(&e, Rule::Reference, "steps[0].include", "no routine `nope`");
    // Routine files are versioned like workflows.
    let newer = routine("newer", &[], json!([s("x", json!({}))]))
        .replace("\"schemaVersion\":2", "\"schemaVersion\":9");
    let e = with_routines(
        &[("newer", newer)],
        json!([{"id": "n", "include": "newer"}]),
    )
    .unwrap_err();
    assert_eq!(e.rule, Rule::SchemaVersion);
    assert_eq!(e.file.as_deref(), Some("mem:newer"));
    // An include takes only `include` and `with`.
    let e = with_routines(
        &routines,
        json!([{"id": "v", "include": "verify", "title": "T"}]),
    )
    .unwrap_err();
    assert_eq!(e.rule, Rule::AdditionalProperties);
    assert!(e.message.contains("`title` not allowed here"), "{e}");
}

#[test]
fn nested_includes_chain_their_prefixes_and_pass_arguments_down() {
    let inner = routine(
        "inner",
        &["what"],
        json!([s("step", json!({"prompt": "Inner {{args.what}}."}))]),
    );
    let outer = routine(
        "outer",
        &["topic"],
        json!([s("first", json!({"prompt": "Outer {{args.topic}}."})), {"id": "in", "include": "inner", "with": {"what": "{{args.topic}} details"}}]),
    );
    let p = with_routines(
        &[("inner", inner), ("outer", outer)],
        json!([
            {"id": "o1", "include": "outer", "with": {"topic": "parsing"}},
            {"id": "o2", "include": "outer", "with": {"topic": "printing"}},
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(&str, &str)> = p
        .workflow
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.prompt.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("o1.first", "Outer parsing."),
            ("o1.in.step", "Inner parsing details."),
            ("o2.first", "Outer printing."),
            ("o2.in.step", "Inner printing details."),
        ]
    );
    // Including it twice under one id collides.
    let inner = routine("inner", &["what"], json!([s("step", json!({}))]));
    let e = with_routines(
        &[("inner", inner)],
        json!([
            {"id": "x", "include": "inner", "with": {"what": "a"}},
            {"id": "x", "include": "inner", "with": {"what": "b"}},
        ]),
    )
    .unwrap_err();
    assert_eq!(e.rule, Rule::UniqueStepIds);
    assert!(e.message.contains("id `x.step` is already used"), "{e}");
}

#[test]
fn include_cycles_are_rejected_with_the_chain() {
    let a = routine(
        "a",
        &[],
        json!([s("x", json!({})), {"id": "to-b", "include": "b"}]),
    );
    let b = routine("b", &[], json!([{"id": "to-a", "include": "a"}]));
    let e = with_routines(
        &[("a", a), ("b", b)],
        json!([{"id": "start", "include": "a"}]),
    )
    .unwrap_err();
    assert_eq!(e.rule, Rule::Reference);
    assert!(
        e.message
            .contains("routine include cycle: mem:workflow → mem:a → mem:b → mem:a"),
        "{e}"
    );
    let selfish = routine("me", &[], json!([{"id": "again", "include": "me"}]));
    let e = with_routines(&[("me", selfish)], json!([{"id": "m", "include": "me"}])).unwrap_err();
    assert!(
        e.message.contains("cycle: mem:workflow → mem:me → mem:me"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------

#[test]
fn version_1_files_load_through_the_documented_upgrade() {
    let v1 = r#"
schemaVersion: 1
id: old
name: Old
description: An old workflow.
version: "1"
steps:
  - id: review
    title: Review
    prompt: Review it.
    outputContract: {contractRef: review_verdict}
    requireConfirmation: {var: risk, equals: high}
"#;
    let def = parse_workflow("old.yaml", v1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.schema_version, CURRENT_SCHEMA_VERSION);
    let p = compile(&def).unwrap();
    assert_eq!(
        p.workflow.steps[0]
            .output_contract
            .as_ref()
            .unwrap()
            .contract,
        ContractName::ReviewVerdict
    );
    let (mut run, r) = Run::interactive(&p, json!({"risk": "high"}));
    assert_eq!(r.intent, Intent::AskUserThenSubmit);
    assert_eq!(
        run.submit(art(ContractName::ReviewVerdict.example()))
            .outcome,
        Outcome::Complete
    );
}

#[test]
fn a_newer_schema_version_fails_with_a_clear_message() {
    let mut d = doc(json!([s("a", json!({}))]));
    d["schemaVersion"] = json!(CURRENT_SCHEMA_VERSION + 1);
    let e = load_and_compile(&d).unwrap_err();
    assert_eq!(e.rule, Rule::SchemaVersion);
    assert_eq!(e.path.as_deref(), Some("schemaVersion"));
    assert!(
        e.message.contains(&format!(
            "declares schemaVersion {}",
            CURRENT_SCHEMA_VERSION + 1
        )),
        "{e}"
    );
    assert!(e.message.contains("upgrade worktrain"), "{e}");
    for bad in [json!(0), json!("2"), json!(-1)] {
        d["schemaVersion"] = bad;
        assert_eq!(load_and_compile(&d).unwrap_err().rule, Rule::SchemaVersion);
    }
    d.as_object_mut().unwrap().remove("schemaVersion");
    assert_eq!(load_and_compile(&d).unwrap_err().rule, Rule::Required);
}

// ---------------------------------------------------------------------------------------
// Compile errors: every rule the compiler enforces, with its path
// ---------------------------------------------------------------------------------------

fn one_pass(steps: Value) -> Value {
    lp("l", json!({"for": 1, "maxIterations": 1}), steps)
}

#[test]
fn duplicate_ids_are_rejected_wherever_they_occur() {
    let e = rejected(json!([s("a", json!({})), s("a", json!({}))]));
    assert_err(
        &e,
        Rule::UniqueStepIds,
        "steps[1].id",
        "id `a` is already used at steps[0]",
    );
    let e = rejected(json!([
        s("l", json!({})),
        one_pass(json!([s("x", json!({}))]))
    ]));
    assert_err(
        &e,
        Rule::UniqueStepIds,
        "steps[1].id",
        "step and loop ids must be unique",
    );
    let e = rejected(json!([
        s("x", json!({})),
        one_pass(json!([s("x", json!({}))]))
    ]));
    assert_err(
        &e,
        Rule::UniqueStepIds,
        "steps[1].steps[0].id",
        "id `x` is already used at steps[0]",
    );
}

#[test]
fn a_loop_takes_one_kind_a_bound_and_a_body() {
    let e = rejected(json!([lp(
        "l",
        json!({"while": {"var": "x", "exists": true}, "for": 2, "maxIterations": 3}),
        json!([s("a", json!({}))])
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].loop",
        "at most one of `while`, `until`, `for`, `forEach`",
    );
    let e = rejected(json!([lp(
        "l",
        json!({"until": {"var": "x", "exists": true}, "forEach": {"over": "xs"}, "maxIterations": 3}),
        json!([s("a", json!({}))])
    )]));
    assert_err(&e, Rule::Value, "steps[0].loop", "at most one of");
    let e = rejected(json!([lp(
        "l",
        json!({"for": 1, "maxIterations": 0}),
        json!([s("a", json!({}))])
    )]));
    assert_err(&e, Rule::Value, "steps[0].loop.maxIterations", "at least 1");
    let e = rejected(json!([lp(
        "l",
        json!({"for": 1, "maxIterations": 1001}),
        json!([s("a", json!({}))])
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].loop.maxIterations",
        "at most 1000",
    );
    // maxIterations is required.
    let e = rejected(json!([lp(
        "l",
        json!({"for": 1}),
        json!([s("a", json!({}))])
    )]));
    assert_eq!(e.rule, Rule::Required, "{e}");
    assert!(e.message.contains("maxIterations"), "{e}");
    // An empty body.
    let e = rejected(json!([lp(
        "l",
        json!({"for": 1, "maxIterations": 1}),
        json!([])
    )]));
    assert_err(&e, Rule::NonEmpty, "steps[0].steps", "at least one entry");
    // A loop without a body, and a body without a loop.
    let e = rejected(json!([{"id": "l", "loop": {"for": 1, "maxIterations": 1}}]));
    assert!(e.message.contains("loop `l` needs `steps`"), "{e}");
    let e =
        rejected(json!([{"id": "l", "title": "L", "prompt": "p", "steps": [s("a", json!({}))]}]));
    assert_eq!(e.rule, Rule::AdditionalProperties);
    assert!(
        e.message.contains("add `loop: {maxIterations: N, …}`"),
        "{e}"
    );
    // Step fields on a loop.
    let e = rejected(
        json!([{"id": "l", "loop": {"for": 1, "maxIterations": 1}, "prompt": "p", "steps": [s("a", json!({}))]}]),
    );
    assert_eq!(e.rule, Rule::AdditionalProperties);
    assert!(
        e.message.contains(
            "`prompt` not allowed here (loop entries take: id, title, runCondition, loop, steps)"
        ),
        "{e}"
    );
    // `for` counts.
    let e = rejected(json!([lp(
        "l",
        json!({"for": -1, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    assert!(
        e.message
            .contains("`for` must be a non-negative integer or {var: path}"),
        "{e}"
    );
    let e = rejected(json!([lp(
        "l",
        json!({"for": {"var": "a b"}, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    assert!(e.message.contains("is not a context path"), "{e}");
}

#[test]
fn decision_steps_belong_to_their_own_loop() {
    let control = json!({"outputContract": {"contract": "loop_control"}});
    // A loop with no condition needs a decision step.
    let e = rejected(json!([lp(
        "l",
        json!({"maxIterations": 3}),
        json!([s("a", json!({}))])
    )]));
    assert_err(&e, Rule::Required, "steps[0].loop", "needs a decision step");
    // decisionStep must name a step of the loop's own body…
    let e = rejected(json!([
        lp(
            "l",
            json!({"maxIterations": 3, "decisionStep": "after"}),
            json!([s("a", json!({}))])
        ),
        s("after", json!({}))
    ]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].loop.decisionStep",
        "`after` is not a step of this loop's body",
    );
    let e = rejected(json!([lp(
        "l",
        json!({"maxIterations": 3, "decisionStep": "ghost"}),
        json!([s("a", json!({}))])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].loop.decisionStep",
        "`ghost` is not a step of this loop's body",
    );
    // …not a step of a nested loop (which decides for its own loop).
    let e = rejected(json!([lp(
        "outer",
        json!({"maxIterations": 3, "decisionStep": "deep"}),
        json!([lp(
            "inner",
            json!({"maxIterations": 3}),
            json!([s("deep", control.clone())])
        ),])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].loop.decisionStep",
        "steps of nested loops decide for their own loop",
    );
    // Two loop_control steps without naming the deciding one.
    let e = rejected(json!([lp(
        "l",
        json!({"maxIterations": 3}),
        json!([s("a", control.clone()), s("b", control.clone())])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].loop.decisionStep",
        "several body steps produce loop_control",
    );
    // A loop_control step that is not the named decision step.
    let e = rejected(json!([lp(
        "l",
        json!({"maxIterations": 3, "decisionStep": "a"}),
        json!([s("a", json!({})), s("b", control.clone())])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].steps",
        "step `b` produces loop_control but is not the decision step of loop `l`",
    );
    // loop_control outside any loop.
    let e = rejected(json!([s("a", control.clone())]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].outputContract",
        "only makes sense inside a loop",
    );
    // A named decision step that already has another contract (one contract per step).
    let e = rejected(json!([lp(
        "l",
        json!({"maxIterations": 3, "decisionStep": "a"}),
        json!([s(
            "a",
            json!({"outputContract": {"contract": "review_verdict"}})
        ),])
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].loop.decisionStep",
        "`a` already produces `review_verdict`",
    );
    // The inner loop's decision step is fine where it is.
    let p = pin(json!([lp(
        "outer",
        json!({"for": 2, "maxIterations": 3}),
        json!([lp(
            "inner",
            json!({"maxIterations": 3}),
            json!([s("deep", control)])
        ),])
    )]));
    assert_eq!(p.workflow.loops[1].decision_step.map(|i| i.0), Some(0));
    assert_eq!(p.workflow.loops[0].decision_step, None);
}

#[test]
fn contract_settings_are_checked() {
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "assessment"}})
    )]));
    assert_err(
        &e,
        Rule::Required,
        "steps[0].outputContract.dimensions",
        "an assessment declares its dimensions",
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "handoff", "dimensions": {"x": {"levels": ["a"]}}}})
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].outputContract",
        "apply to the assessment contract, not `handoff`",
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "handoff", "contextKey": "x"}})
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].outputContract",
        "apply to the assessment contract",
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "assessment", "dimensions": {"risk": {"levels": ["low", "high"], "blockOn": ["medium"]}}}})
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].outputContract.dimensions.risk.blockOn",
        "`medium` is not one of the declared levels (low, high)",
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "assessment", "dimensions": {"risk": {"levels": []}}}})
    )]));
    assert_err(
        &e,
        Rule::NonEmpty,
        "steps[0].outputContract.dimensions.risk.levels",
        "at least one level",
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "poem"}})
    )]));
    assert_eq!(e.rule, Rule::Value, "{e}");
    assert!(e.message.contains("unknown variant `poem`"), "{e}");
}

#[test]
fn reserved_and_malformed_context_keys_are_rejected() {
    let assessment = |dims: Value, key: Option<&str>| {
        let mut c = json!({"contract": "assessment", "dimensions": dims});
        if let Some(k) = key {
            c["contextKey"] = json!(k);
        }
        json!({"outputContract": c})
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([s("a", json!({"contextOutputs": ["_x"]}))]),
            "steps[0].contextOutputs[0]",
        ),
        (
            json!([s("a", json!({"contextOutputs": ["worktrain"]}))]),
            "steps[0].contextOutputs[0]",
        ),
        (
            json!([s("a", json!({"contextOutputs": ["a.b"]}))]),
            "steps[0].contextOutputs[0]",
        ),
        (
            json!([s(
                "a",
                assessment(json!({"r": {"levels": ["x"]}}), Some("worktrain"))
            )]),
            "steps[0].outputContract.contextKey",
        ),
        (
            json!([s("a", assessment(json!({"_r": {"levels": ["x"]}}), None))]),
            "steps[0].outputContract.dimensions._r",
        ),
        (
            json!([lp(
                "l",
                json!({"forEach": {"over": "xs", "as": "worktrain"}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.forEach.as",
        ),
        (
            json!([lp(
                "l",
                json!({"forEach": {"over": "xs", "index": "_i"}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.forEach.index",
        ),
        (
            json!([lp(
                "l",
                json!({"forEach": {"over": "_xs"}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.forEach.over",
        ),
        (
            json!([lp(
                "l",
                json!({"for": {"var": "_n"}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.for",
        ),
    ];
    for (steps, path) in cases {
        let e = rejected(steps);
        assert_eq!(e.rule, Rule::Reference, "{e}");
        assert_eq!(e.path.as_deref(), Some(path), "{e}");
        assert!(
            e.message.contains("reserved") || e.message.contains("not a usable context key"),
            "{e}"
        );
    }
    let e = rejected(json!([lp(
        "l",
        json!({"forEach": {"over": "xs", "as": "x", "index": "x"}, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].loop.forEach",
        "`as` and `index` must differ",
    );
    let mut d = doc(json!([s("a", json!({}))]));
    d["inputs"] = json!(["fine", "_hidden"]);
    assert_err(
        &load_and_compile(&d).unwrap_err(),
        Rule::Reference,
        "inputs[1]",
        "not a usable context key",
    );
}

#[test]
fn conditions_may_not_read_reserved_keys_except_worktrain() {
    let reads = |c: Value| c;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([s(
                "a",
                json!({"runCondition": reads(json!({"var": "_secret", "exists": true}))})
            )]),
            "steps[0].runCondition",
        ),
        (
            json!([s(
                "a",
                json!({"promptFragments": [{"when": {"var": "_x", "equals": 1}, "text": "t"}]})
            )]),
            "steps[0].promptFragments[0].when",
        ),
        (
            json!([s(
                "a",
                json!({"requireConfirmation": {"var": "_x", "equals": 1}})
            )]),
            "steps[0].requireConfirmation",
        ),
        (
            json!([s(
                "a",
                json!({"requireConfirmation": {"kind": "human_approval", "when": {"var": "_x", "equals": 1}}})
            )]),
            "steps[0].requireConfirmation.when",
        ),
        (
            json!([
                s("a", json!({})),
                s(
                    "b",
                    json!({"jumpIf": {"condition": {"var": "_x", "equals": 1}, "target": "a", "maxJumps": 1}})
                )
            ]),
            "steps[1].jumpIf.condition",
        ),
        (
            json!([lp(
                "l",
                json!({"while": {"not": {"var": "_x", "exists": true}}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.while",
        ),
        (
            json!([lp(
                "l",
                json!({"until": {"or": [{"var": "ok", "exists": true}, {"var": "_x", "exists": true}]}, "maxIterations": 1}),
                json!([s("a", json!({}))])
            )]),
            "steps[0].loop.until",
        ),
    ];
    for (steps, path) in cases {
        let e = rejected(steps);
        assert_err(&e, Rule::Reference, path, "is a reserved context key");
    }
    // Engine-provided values under `worktrain.*` are readable.
    pin(json!([lp(
        "l",
        json!({"until": {"var": "worktrain.loops.l.pass", "gte": 2}, "maxIterations": 5}),
        json!([s("a", json!({}))])
    )]));
}

#[test]
fn required_text_must_not_be_empty() {
    let e = rejected(json!([s("a", json!({"title": "  "}))]));
    assert_err(&e, Rule::NonEmpty, "steps[0].title", "must not be empty");
    let e = rejected(json!([s("a", json!({"prompt": ""}))]));
    assert_err(&e, Rule::NonEmpty, "steps[0].prompt", "must not be empty");
    let e = rejected(json!([s(
        "a",
        json!({"promptFragments": [{"when": {"var": "x", "exists": true}, "text": " "}]})
    )]));
    assert_err(
        &e,
        Rule::NonEmpty,
        "steps[0].promptFragments[0].text",
        "must not be empty",
    );
    let e = rejected(json!([]));
    assert_err(&e, Rule::NonEmpty, "steps", "at least one entry");
    for field in ["name", "description", "version"] {
        let mut d = doc(json!([s("a", json!({}))]));
        d[field] = json!(" ");
        assert_err(
            &load_and_compile(&d).unwrap_err(),
            Rule::NonEmpty,
            field,
            "must not be empty",
        );
    }
}

#[test]
fn malformed_entries_say_what_each_kind_accepts() {
    let e = rejected(json!([{"id": "a", "prompt": "p"}]));
    assert_eq!(e.rule, Rule::Required);
    assert!(e.message.contains("step `a` needs a `title`"), "{e}");
    let e = rejected(json!([{"id": "a", "title": "A"}]));
    assert_eq!(e.rule, Rule::Required);
    assert!(
        e.message.contains("needs a `prompt` (or `loop`/`include`"),
        "{e}"
    );
    let e = rejected(json!([s("a", json!({"promt": "typo"}))]));
    assert_eq!(e.rule, Rule::AdditionalProperties);
    assert!(e.message.contains("unknown field `promt`"), "{e}");
    let e = rejected(json!([s("A", json!({}))]));
    assert!(e.message.contains("not a valid step id"), "{e}");
    let e = rejected(json!([s("a", json!({"runCondition": {"var": "x"}}))]));
    assert!(e.message.contains("exactly one operator"), "{e}");
    let e = rejected(json!([s(
        "a",
        json!({"runCondition": {"var": "x", "equals": 1, "gt": 0}})
    )]));
    assert!(e.message.contains("exactly one operator"), "{e}");
    let e = rejected(json!([s("a", json!({"requireConfirmation": "yes"}))]));
    assert!(
        e.message
            .contains("requireConfirmation must be true, false, a condition"),
        "{e}"
    );
    let e = rejected(json!([s(
        "a",
        json!({"requireConfirmation": {"kind": "robot"}})
    )]));
    assert!(e.message.contains("unknown variant `robot`"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------

#[test]
fn the_node_bound_is_exact_for_the_worst_case_path() {
    // Loops that always go on, a jump that is always taken: the bound is reached exactly.
    let forever = json!({"var": "never-set", "exists": false});
    let p = pin(json!([
        s("a", json!({})),
        lp(
            "outer",
            json!({"while": forever.clone(), "maxIterations": 3}),
            json!([
                s("b", json!({})),
                lp(
                    "inner",
                    json!({"while": forever, "maxIterations": 2}),
                    json!([s("c", json!({}))])
                ),
            ])
        ),
        s(
            "d",
            json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": "a", "maxJumps": 2}})
        ),
    ]));
    // One straight pass is 1 + 3 × (1 + 2) + 1 = 11 steps; each of the 2 jumps replays it all.
    assert_eq!(p.workflow.node_bound, 33);
    let (mut run, _) = Run::interactive(&p, json!({"again": true}));
    assert_eq!(run.drive(|_, _| notes()).len(), 33);
    assert!(run.complete());
}

#[test]
fn a_loop_that_runs_out_exactly_at_its_bound_completed_rather_than_hit_it() {
    let p = pin(json!([
        lp(
            "each",
            json!({"forEach": {"over": "xs"}, "maxIterations": 2}),
            json!([s("a", json!({}))])
        ),
        lp(
            "n",
            json!({"for": 2, "maxIterations": 2}),
            json!([s("b", json!({}))])
        ),
        lp(
            "w",
            json!({"while": {"var": "k", "lt": 2}, "maxIterations": 2}),
            json!([s("c", json!({}))])
        ),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({"xs": [1, 2], "k": 0}));
    run.drive(|step, c| {
        if step == "c" {
            ctx(json!({"k": c["k"].as_i64().unwrap() + 1}))
        } else {
            notes()
        }
    });
    assert_eq!(
        run.exits(),
        vec![
            ("each".into(), 2, LoopExitReason::Completed),
            ("n".into(), 2, LoopExitReason::Completed),
            ("w".into(), 2, LoopExitReason::Condition),
        ]
    );
    // One more element than the bound: cut off, and recorded as such.
    let (mut run, _) = Run::interactive(&p, json!({"xs": [1, 2, 3], "k": 5}));
    run.drive(|_, _| notes());
    assert_eq!(
        run.exits()[0],
        ("each".into(), 2, LoopExitReason::MaxIterations)
    );
}

// ---------------------------------------------------------------------------------------
// runCondition on loops and routine includes (guarded blocks)
// ---------------------------------------------------------------------------------------

/// A loop block with a run condition.
fn guarded_lp(id: &str, run_if: Value, spec: Value, steps: Value) -> Value {
    json!({"id": id, "runCondition": run_if, "loop": spec, "steps": steps})
}

fn block_skips(run: &Run<'_>) -> Vec<(String, String, u32)> {
    run.events
        .iter()
        .filter_map(|e| match e {
            EventBody::BlockSkipped { id, condition, pc } => {
                Some((id.to_string(), condition.clone(), pc.0))
            }
            _ => None,
        })
        .collect()
}

fn guards(p: &Pinned) -> Vec<(String, String, u32, u32)> {
    p.workflow
        .program
        .iter()
        .enumerate()
        .filter_map(|(pc, i)| match i {
            Instr::Guard {
                id,
                condition,
                skip_to,
            } => Some((id.to_string(), condition.to_string(), pc as u32, skip_to.0)),
            _ => None,
        })
        .collect()
}

/// Fold the run's events again from nothing: the projection must come out identical.
#[track_caller]
fn assert_rebuild_identical(run: &Run<'_>) {
    let mut rebuilt: Option<SessionSummary> = None;
    for (i, body) in run.events.iter().enumerate() {
        let seq = Seq(i as u64 + 1);
        let stored = StoredEvent {
            position: seq.0,
            session_id: run.session,
            seq,
            created_at_ms: 0,
            idempotency_key: None,
            prev_hash: Sha256Hash::ZERO,
            hash: Sha256Hash::ZERO,
            body: body.clone(),
        };
        rebuilt = Some(apply(rebuilt, &stored).unwrap().0);
    }
    assert_eq!(rebuilt.as_ref(), Some(run.summary()));
}

fn go() -> Value {
    json!({"var": "go", "equals": true})
}

#[test]
fn a_guarded_loop_is_skipped_as_a_whole_or_entered() {
    let p = pin(json!([
        s("a", json!({})),
        guarded_lp(
            "l",
            go(),
            json!({"for": 2, "maxIterations": 2}),
            json!([s("x", json!({}))])
        ),
        s("b", json!({})),
    ]));
    // The guard sits right before the loop head and skips to the loop's exit.
    let wf = &p.workflow;
    assert_eq!(
        guards(&p),
        vec![("l".into(), "go equals true".into(), 1, 5)]
    );
    assert_eq!(wf.loops[0].head.0, 2);
    assert!(matches!(wf.program[2], Instr::LoopHead { exit, .. } if exit.0 == 5));
    assert_eq!(wf.node_bound, 4);

    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    assert_eq!(run.drive(|_, _| notes()), ids(&["a", "x", "x", "b"]));
    assert!(
        block_skips(&run).is_empty(),
        "a passed guard records nothing"
    );
    assert_eq!(run.summary().blocks_skipped, 0);
    assert_rebuild_identical(&run);

    for context in [json!({}), json!({"go": false})] {
        let (mut run, _) = Run::interactive(&p, context);
        assert_eq!(run.drive(|_, _| notes()), ids(&["a", "b"]));
        assert_eq!(
            block_skips(&run),
            vec![("l".into(), "go equals true".into(), 5)]
        );
        // Skipped as a block: the loop is never entered, and no step is skipped one by one.
        assert!(
            !run.events
                .iter()
                .any(|e| matches!(e, EventBody::LoopEntered { .. }))
        );
        assert!(run.skipped().is_empty());
        assert_eq!(run.summary().blocks_skipped, 1);
        assert_eq!(run.summary().steps_skipped, 0);
        assert!(run.complete());
        assert_rebuild_identical(&run);
    }
}

#[test]
fn a_guarded_loop_at_the_start_or_the_end_and_nested_in_a_loop() {
    // Skipped first entry: the session starts at the step after it; skipped last entry:
    // the session completes.
    let p = pin(json!([
        guarded_lp(
            "first",
            go(),
            json!({"for": 1, "maxIterations": 1}),
            json!([s("x", json!({}))])
        ),
        s("mid", json!({})),
        guarded_lp(
            "last",
            go(),
            json!({"for": 1, "maxIterations": 1}),
            json!([s("y", json!({}))])
        ),
    ]));
    let (mut run, r) = Run::interactive(&p, json!({}));
    assert_eq!(r.step.as_ref().unwrap().id.as_str(), "mid");
    assert_eq!(run.drive(|_, _| notes()), ids(&["mid"]));
    assert_eq!(
        block_skips(&run)
            .into_iter()
            .map(|b| b.0)
            .collect::<Vec<_>>(),
        ids(&["first", "last"])
    );
    // Only guarded blocks, all skipped: complete at start.
    let p = pin(json!([guarded_lp(
        "only",
        go(),
        json!({"for": 1, "maxIterations": 1}),
        json!([s("x", json!({}))])
    )]));
    let (run, _) = Run::interactive(&p, json!({}));
    assert!(run.complete());

    // Inside a loop, the guard is evaluated anew on every pass of the enclosing loop.
    let p = pin(json!([lp(
        "outer",
        json!({"for": 3, "maxIterations": 3}),
        json!([
            s("o", json!({})),
            guarded_lp(
                "inner",
                json!({"var": "worktrain.loops.outer.pass", "in": [1, 3]}),
                json!({"for": 1, "maxIterations": 1}),
                json!([s("i", json!({}))])
            ),
        ])
    )]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    assert_eq!(run.drive(|_, _| notes()), ids(&["o", "i", "o", "o", "i"]));
    assert_eq!(block_skips(&run).len(), 1);
    assert_rebuild_identical(&run);
}

fn check_routine() -> (&'static str, String) {
    (
        "check",
        routine(
            "check",
            &["what"],
            json!([
                s(
                    "run",
                    json!({"title": "Run {{args.what}}", "contextOutputs": ["checks"]})
                ),
                s(
                    "repair",
                    json!({"runCondition": {"var": "checks", "equals": "fail"}})
                ),
            ]),
        ),
    )
}

fn guarded_include(id: &str, routine: &str, run_if: Value, with: Value) -> Value {
    json!({"id": id, "include": routine, "runCondition": run_if, "with": with})
}

#[test]
fn a_guarded_include_is_skipped_as_a_whole_or_entered() {
    let p = with_routines(
        &[check_routine()],
        json!([
            s("a", json!({})),
            guarded_include("c", "check", go(), json!({"what": "the tests"})),
            s("b", json!({})),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The guard precedes the routine's first expanded entry and skips past its last.
    assert_eq!(
        guards(&p),
        vec![("c".into(), "go equals true".into(), 1, 4)]
    );
    let step_ids: Vec<&str> = p.workflow.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(step_ids, ["a", "c.run", "c.repair", "b"]);
    assert_eq!(p.workflow.steps[1].title, "Run the tests");

    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    let steps = run.drive(|step, _| {
        if step == "c.run" {
            ctx(json!({"checks": "fail"}))
        } else {
            notes()
        }
    });
    assert_eq!(steps, ids(&["a", "c.run", "c.repair", "b"]));
    assert!(block_skips(&run).is_empty());

    let (mut run, _) = Run::interactive(&p, json!({"go": "no"}));
    assert_eq!(run.drive(|_, _| notes()), ids(&["a", "b"]));
    assert_eq!(
        block_skips(&run),
        vec![("c".into(), "go equals true".into(), 4)]
    );
    assert!(
        run.skipped().is_empty(),
        "the routine's own steps are not skipped one by one"
    );
    assert_eq!(run.summary().blocks_skipped, 1);
    assert_rebuild_identical(&run);

    // A guarded include's id is an entry id of its own: it must be unique.
    let e = with_routines(
        &[check_routine()],
        json!([
            s("c", json!({})),
            guarded_include("c", "check", go(), json!({"what": "x"})),
        ]),
    )
    .unwrap_err();
    assert_eq!(e.rule, Rule::UniqueStepIds, "{e}");
    assert!(e.message.contains("id `c` is already used"), "{e}");
}

#[test]
fn a_skipped_block_is_recorded_and_never_run_later_when_the_context_changes() {
    let p = with_routines(
        &[check_routine()],
        json!([
            guarded_lp(
                "warmup",
                json!({"var": "ready", "equals": true}),
                json!({"for": 1, "maxIterations": 1}),
                json!([s("w", json!({}))])
            ),
            guarded_include(
                "c",
                "check",
                json!({"var": "ready", "equals": true}),
                json!({"what": "x"})
            ),
            s("make-ready", json!({})),
            s(
                "after",
                json!({"runCondition": {"var": "ready", "equals": true}})
            ),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let steps = run.drive(|step, _| {
        if step == "make-ready" {
            ctx(json!({"ready": true}))
        } else {
            notes()
        }
    });
    // Both blocks were skipped before `ready` was set; setting it does not bring them back.
    assert_eq!(steps, ids(&["make-ready", "after"]));
    let kinds: Vec<&str> = run.events.iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(
        kinds[..4],
        [
            "session_started",
            "block_skipped",
            "block_skipped",
            "node_entered"
        ]
    );
    assert_eq!(run.summary().blocks_skipped, 2);
    assert_rebuild_identical(&run);
}

#[test]
fn a_guard_is_evaluated_once_so_its_block_runs_to_the_end() {
    // The loop's guard turns false during the first pass: both passes still run.
    let p = pin(json!([
        guarded_lp(
            "l",
            go(),
            json!({"for": 2, "maxIterations": 2}),
            json!([s("x", json!({}))])
        ),
        s("b", json!({})),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    let steps = run.drive(|step, _| {
        if step == "x" {
            ctx(json!({"go": false}))
        } else {
            notes()
        }
    });
    assert_eq!(steps, ids(&["x", "x", "b"]));
    assert!(block_skips(&run).is_empty());

    // Same for an include: its first step turns the guard false, the rest still runs.
    let p = with_routines(
        &[check_routine()],
        json!([
            guarded_include("c", "check", go(), json!({"what": "x"})),
            s("b", json!({})),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut run, _) = Run::interactive(&p, json!({"go": true}));
    let steps = run.drive(|step, _| {
        if step == "c.run" {
            ctx(json!({"go": false, "checks": "fail"}))
        } else {
            notes()
        }
    });
    assert_eq!(steps, ids(&["c.run", "c.repair", "b"]));
    assert!(block_skips(&run).is_empty());
    assert_rebuild_identical(&run);
}

#[test]
fn a_jump_to_a_guarded_block_re_evaluates_its_guard() {
    let again = json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": "l", "maxJumps": 2}});
    let p = pin(json!([
        guarded_lp(
            "l",
            go(),
            json!({"for": 1, "maxIterations": 1}),
            json!([s("x", json!({}))])
        ),
        s("y", again),
    ]));
    // The jump targets the guard, not the loop head.
    let jump = p.workflow.steps[1].jump.as_ref().unwrap();
    assert_eq!(jump.target_pc.0, 0);
    assert!(matches!(p.workflow.program[0], Instr::Guard { .. }));
    // Guard x3 (first arrival + 2 jumps), body 1 each, plus y each time.
    assert_eq!(p.workflow.node_bound, 6);
    // First arrival: go → enter. The jump back finds go false → skip. The second jump finds it true again.
    let (mut run, _) = Run::interactive(&p, json!({"go": true, "again": true}));
    let mut ys = 0;
    let steps = run.drive(|step, _| {
        if step == "y" {
            ys += 1;
            ctx(json!({"go": ys != 1}))
        } else {
            notes()
        }
    });
    assert_eq!(steps, ids(&["x", "y", "y", "x", "y"]));
    assert_eq!(
        block_skips(&run),
        vec![("l".into(), "go equals true".into(), 4)]
    );
    assert_eq!(jumps(&run).len(), 2);
    assert!(run.entered().len() as u64 <= p.workflow.node_bound);
    assert_rebuild_identical(&run);

    // A guarded include's id is a jump target too (its guard).
    let p = with_routines(
        &[check_routine()],
        json!([
            guarded_include("c", "check", go(), json!({"what": "x"})),
            s(
                "y",
                json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": "c", "maxJumps": 1}})
            ),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut run, _) = Run::interactive(&p, json!({"go": true, "again": true}));
    let steps = run.drive(|step, _| match step {
        "y" => ctx(json!({"go": false})),
        _ => ctx(json!({"checks": "pass"})),
    });
    assert_eq!(steps, ids(&["c.run", "y", "y"]));
    assert_eq!(jumps(&run), vec![("y".into(), "c".into(), 1)]);
    assert_eq!(block_skips(&run).len(), 1);
}

#[test]
fn a_guarded_block_is_a_step_list_of_its_own_for_jumps() {
    let jump = |target: &str| json!({"jumpIf": {"condition": {"var": "again", "equals": true}, "target": target, "maxJumps": 1}});
    // Inside a guarded include, a jump targets the routine's own earlier steps.
    let looping = routine(
        "looping",
        &[],
        json!([s("p", json!({})), s("q", jump("p"))]),
    );
    let p = with_routines(
        &[("looping", looping.clone())],
        json!([
            s("a", json!({})),
            guarded_include("g", "looping", go(), json!({}))
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.workflow.steps[2].jump.as_ref().unwrap().target.as_str(),
        "g.p"
    );
    let (mut run, _) = Run::interactive(&p, json!({"go": true, "again": true}));
    assert_eq!(
        run.drive(|_, _| notes()),
        ids(&["a", "g.p", "g.q", "g.p", "g.q"])
    );
    assert!(run.entered().len() as u64 <= p.workflow.node_bound);

    // A jump from outside cannot enter a guarded include (it could without the guard,
    // where the routine's entries join the including list).
    let entries = |guarded: bool| {
        let mut include = json!({"id": "g", "include": "looping"});
        if guarded {
            include["runCondition"] = go();
        }
        json!([include, s("after", jump("g.p"))])
    };
    with_routines(&[("looping", looping.clone())], entries(false))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = with_routines(&[("looping", looping)], entries(true)).unwrap_err();
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].jumpIf.target",
        "cannot enter a guarded loop or include",
    );

    // Nor a guarded loop's body; the loop itself (its guard) is a target.
    let e = rejected(json!([
        guarded_lp(
            "l",
            go(),
            json!({"for": 1, "maxIterations": 1}),
            json!([s("in", json!({}))])
        ),
        s("out", jump("in")),
    ]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].jumpIf.target",
        "is not an earlier entry",
    );
    // And a jump out of a guarded loop's body is still rejected.
    let e = rejected(json!([
        s("out", json!({})),
        guarded_lp(
            "l",
            go(),
            json!({"for": 1, "maxIterations": 1}),
            json!([s("in", jump("out"))])
        ),
    ]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[1].steps[0].jumpIf.target",
        "is not an earlier entry",
    );
}

#[test]
fn guard_conditions_in_routines_address_the_routines_own_loops() {
    let inner = routine("inner", &[], json!([s("step", json!({}))]));
    let outer = routine(
        "outer",
        &[],
        json!([lp(
            "lp",
            json!({"for": 2, "maxIterations": 2}),
            json!([
                s("each", json!({})),
                guarded_include(
                    "in",
                    "inner",
                    json!({"var": "worktrain.loops.lp.pass", "equals": 2}),
                    json!({})
                ),
                guarded_lp(
                    "once",
                    json!({"var": "worktrain.loops.lp.pass", "equals": 1}),
                    json!({"for": 1, "maxIterations": 1}),
                    json!([s("n", json!({}))])
                ),
            ])
        )]),
    );
    let p = with_routines(
        &[("inner", inner), ("outer", outer)],
        json!([{"id": "o", "include": "outer"}]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = guards(&p);
    assert_eq!(
        g.iter()
            .map(|x| (x.0.as_str(), x.1.as_str()))
            .collect::<Vec<_>>(),
        [
            ("o.in", "worktrain.loops.o.lp.pass equals 2"),
            ("o.once", "worktrain.loops.o.lp.pass equals 1"),
        ]
    );
    let (mut run, _) = Run::interactive(&p, json!({}));
    assert_eq!(
        run.drive(|_, _| notes()),
        ids(&["o.each", "o.n", "o.each", "o.in.step"])
    );
    assert_eq!(
        block_skips(&run)
            .into_iter()
            .map(|b| b.0)
            .collect::<Vec<_>>(),
        ids(&["o.in", "o.once"])
    );
}

#[test]
fn guard_conditions_are_checked_like_other_conditions() {
    let secret = json!({"var": "_secret", "exists": true});
    let e = rejected(json!([guarded_lp(
        "l",
        secret.clone(),
        json!({"for": 1, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].runCondition",
        "is a reserved context key",
    );
    let e = with_routines(
        &[check_routine()],
        json!([guarded_include(
            "c",
            "check",
            secret.clone(),
            json!({"what": "x"})
        )]),
    )
    .unwrap_err();
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].runCondition",
        "is a reserved context key",
    );
    // Inside a routine, the path names the include and the routine file.
    let bad = routine(
        "bad",
        &[],
        json!([guarded_lp(
            "l",
            secret,
            json!({"for": 1, "maxIterations": 1}),
            json!([s("a", json!({}))])
        )]),
    );
    let e = with_routines(&[("bad", bad)], json!([{"id": "b", "include": "bad"}])).unwrap_err();
    assert_err(
        &e,
        Rule::Reference,
        "steps[0]<mem:bad>.steps[0].runCondition",
        "is a reserved context key",
    );
    // `worktrain.*` is readable.
    pin(json!([guarded_lp(
        "l",
        json!({"var": "worktrain.loops", "exists": true}),
        json!({"for": 1, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    // A malformed condition is a load error, as on steps.
    let e = rejected(json!([guarded_lp(
        "l",
        json!({"var": "x"}),
        json!({"for": 1, "maxIterations": 1}),
        json!([s("a", json!({}))])
    )]));
    assert!(e.message.contains("exactly one operator"), "{e}");
    // The fields each kind accepts name runCondition.
    let e = with_routines(
        &[check_routine()],
        json!([{"id": "c", "include": "check", "title": "T", "with": {"what": "x"}}]),
    )
    .unwrap_err();
    assert!(
        e.message.contains(
            "`title` not allowed here (routine include entries take: id, include, runCondition, with)"
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Lenient comparisons, escaped braces, assessment block guidance
// ---------------------------------------------------------------------------------------

#[test]
fn lenient_conditions_route_on_tolerant_matches() {
    let p = pin(json!([
        s("classify", json!({})),
        s(
            "large-only",
            json!({"runCondition": {"var": "size", "equals": "Large", "lenient": true}})
        ),
        s(
            "exact-only",
            json!({"runCondition": {"var": "size", "equals": "Large"}})
        ),
        s(
            "gated",
            json!({"requireConfirmation": {"var": "fixed", "equals": true, "lenient": true}})
        ),
    ]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    run.submit(ctx(json!({"size": " large ", "fixed": "yes"})));
    assert_eq!(run.current().as_deref(), Some("large-only"));
    let r = run.submit(notes());
    // `exact-only` is skipped: " large " is not "Large" without `lenient`.
    assert_eq!(r.step.as_ref().map(|s| s.id.as_str()), Some("gated"));
    assert!(
        r.step.unwrap().requires_confirmation,
        "\"yes\" matches true leniently"
    );
    assert_eq!(run.entered(), ["classify", "large-only", "gated"]);
}

#[test]
fn lenient_is_rejected_where_it_means_nothing() {
    let e = rejected(json!([s(
        "a",
        json!({"runCondition": {"var": "n", "gte": 2, "lenient": true}})
    )]));
    assert_err(
        &e,
        Rule::Value,
        "steps[0].runCondition",
        "`lenient` applies to equals, not_equals, in and contains",
    );
}

#[test]
fn escaped_braces_reach_the_agent_literally_also_through_routines() {
    let r = routine(
        "show",
        &["what"],
        json!([s(
            "say",
            json!({"prompt": "Show {{args.what}} and \\{{args.what}} and \\{{x + 1}}."})
        )]),
    );
    let p = with_routines(
        &[("show", r)],
        json!([
            s("a", json!({"prompt": "Item \\{{index + 1}} of {{n}}."})),
            {"id": "inc", "include": "show", "with": {"what": "{{n}}"}},
        ]),
    )
    .unwrap();
    let (mut run, r) = Run::interactive(&p, json!({"n": 3}));
    assert_eq!(r.step.unwrap().prompt, "Item {{index + 1}} of 3.");
    let r = run.submit(notes());
    assert_eq!(
        r.step.unwrap().prompt,
        "Show 3 and {{args.what}} and {{x + 1}}."
    );
}

#[test]
fn assessment_block_guidance_is_what_the_blocker_says() {
    let p = pin(json!([s(
        "gate",
        json!({"outputContract": {"contract": "assessment", "dimensions": {
            "soundness": {"levels": ["low", "high"], "blockOn": ["low"],
                          "blockGuidance": "Commit to one approach and record why."},
            "gaps": {"levels": ["low", "high"], "blockOn": ["low"]}
        }}})
    )]));
    let (mut run, _) = Run::interactive(&p, json!({}));
    let r = run.submit(assess(json!({"soundness": "low", "gaps": "low"})));
    let messages: Vec<&str> = r.blockers.iter().map(|b| b.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "assessment `gaps` is `low`, which blocks this step: do the work that changes it (investigate, reduce risk, gather evidence), then resubmit the assessment",
            "assessment `soundness` is `low`, which blocks this step: Commit to one approach and record why.",
        ]
    );
    let e = rejected(json!([s(
        "a",
        json!({"outputContract": {"contract": "assessment", "dimensions": {
            "x": {"levels": ["a", "b"], "blockGuidance": "never shown"}}}})
    )]));
    assert_err(
        &e,
        Rule::Reference,
        "steps[0].outputContract.dimensions.x.blockGuidance",
        "declare `blockOn`",
    );
}
