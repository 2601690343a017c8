//! Property: any valid workflow, driven by any sequence of agent outputs, never makes the
//! engine panic or fail, and completes within the compiler's `node_bound` successful
//! advances (blocked and rejected attempts do not count).
//!
//! Workflows are generated as random trees of steps, loops (all loop kinds, nested, small
//! `maxIterations`) and routine includes, with run conditions over a few context
//! variables (on steps, loops and includes), backward jumps to earlier entries of the same
//! list (guarded loops and includes among them), gates and every output contract. Agent
//! outputs are random too: notes that may be missing or empty, context deltas over the
//! same variables (including deletions), valid, invalid, wrong-kind or missing artifacts,
//! random loop decisions and assessment levels (including blocking ones), and random
//! approve/reject answers at gates. An agent that keeps getting blocked at one node
//! eventually submits a valid output (otherwise nothing could terminate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

use worktrain_core::compile::{CompiledStep, Pinned, RoutineResolver, RoutineSource, compile_with};
use worktrain_core::context::Limits;
use worktrain_core::contract::ContractName;
use worktrain_core::event::{EventBody, NewEvent, SessionMode, StoredEvent};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::load::parse_workflow;
use worktrain_core::machine::{AdvanceDecision, Machine, StartParams, Submission};
use worktrain_core::projection::{SessionStatus, SessionSummary, apply};
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};

// ---------------------------------------------------------------------------------------
// Workflow shapes
// ---------------------------------------------------------------------------------------

/// The context paths conditions read and agents write.
const VARS: [&str; 4] = ["v0", "v1", "v2", "asmt.level"];
const LEVELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
struct Cond {
    var: usize,
    op: u8,
    value: i64,
}

impl Cond {
    fn to_json(&self) -> Value {
        let var = VARS[self.var];
        if var == "asmt.level" {
            let level = LEVELS[self.value.rem_euclid(3) as usize];
            return match self.op {
                0 | 2 => json!({"var": var, "equals": level}),
                1 => json!({"var": var, "not_equals": level}),
                _ => json!({"var": var, "exists": true}),
            };
        }
        match self.op {
            0 => json!({"var": var, "equals": self.value}),
            1 => json!({"not": {"var": var, "equals": self.value}}),
            2 => json!({"or": [{"var": var, "lt": self.value}, {"var": var, "exists": false}]}),
            _ => json!({"var": var, "exists": true}),
        }
    }
}

fn cond() -> impl Strategy<Value = Cond> {
    (0..VARS.len(), 0u8..4, 0i64..3).prop_map(|(var, op, value)| Cond { var, op, value })
}

#[derive(Debug, Clone)]
struct StepShape {
    run_if: Option<Cond>,
    /// 0 none, 1 review_verdict, 2 handoff, 3 assessment, 4 loop_control (when allowed).
    contract: u8,
    optional_contract: bool,
    output: Option<usize>,
    gate: Option<Option<Cond>>,
    notes_optional: bool,
    jump: Option<(Index, Cond, u32)>,
}

#[derive(Debug, Clone)]
struct LoopShape {
    /// 0 while, 1 until, 2 for literal, 3 for var, 4 forEach, 5 decision only.
    kind: u8,
    cond: Cond,
    /// The loop's own `runCondition`.
    guard: Option<Cond>,
    count: u32,
    max: u32,
    body: Vec<Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    Step(StepShape),
    Loop(LoopShape),
    /// A routine (of these entries) included, with an optional `runCondition`.
    Include(Option<Cond>, Vec<Entry>),
}

fn step_shape() -> impl Strategy<Value = StepShape> {
    (
        prop::option::weighted(0.4, cond()),
        prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 2 => Just(3u8), 3 => Just(4u8)],
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0usize..3),
        prop::option::weighted(0.2, prop::option::of(cond())),
        any::<bool>(),
        prop::option::weighted(0.3, (any::<Index>(), cond(), 1u32..3)),
    )
        .prop_map(
            |(run_if, contract, optional_contract, output, gate, notes_optional, jump)| StepShape {
                run_if,
                contract,
                optional_contract,
                output,
                gate,
                notes_optional,
                jump,
            },
        )
}

fn entries(depth: u32) -> BoxedStrategy<Vec<Entry>> {
    let leaf = step_shape().prop_map(Entry::Step);
    if depth == 0 {
        return prop::collection::vec(leaf, 1..4).boxed();
    }
    let looped = (
        0u8..6,
        cond(),
        prop::option::weighted(0.3, cond()),
        0u32..4,
        1u32..4,
        entries(depth - 1),
    )
        .prop_map(|(kind, cond, guard, count, max, body)| {
            Entry::Loop(LoopShape {
                kind,
                cond,
                guard,
                count,
                max,
                body,
            })
        });
    let included = (prop::option::weighted(0.7, cond()), entries(depth - 1))
        .prop_map(|(guard, body)| Entry::Include(guard, body));
    prop::collection::vec(prop_oneof![3 => leaf, 2 => looped, 1 => included], 1..4).boxed()
}

/// Turn a shape into a workflow document with unique ids, and its routine files.
struct Builder {
    next: usize,
    routines: HashMap<String, String>,
}

impl Builder {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// `in_loop`: whether this list is a loop body (a loop_control step may live here).
    /// Returns the entries and whether one of them produces loop_control.
    fn list(&mut self, shapes: &[Entry], in_loop: bool) -> (Vec<Value>, bool) {
        let mut out: Vec<Value> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        let mut has_control = false;
        for shape in shapes {
            let (id, value) = match shape {
                Entry::Step(s) => {
                    let id = self.id("s");
                    let mut v = json!({"id": id, "title": format!("Step {id}"), "prompt": format!("Do {id}: {{{{context.v0}}}}.")});
                    if let Some(c) = &s.run_if {
                        v["runCondition"] = c.to_json();
                    }
                    let contract = match s.contract {
                        4 if in_loop && !has_control => {
                            has_control = true;
                            Some(json!({"contract": "loop_control"}))
                        }
                        1 => Some(json!({"contract": "review_verdict"})),
                        2 => Some(json!({"contract": "handoff"})),
                        3 => Some(json!({"contract": "assessment", "contextKey": "asmt",
                            "dimensions": {"level": {"levels": LEVELS, "blockOn": ["c"]}}})),
                        _ => None,
                    };
                    if let Some(mut c) = contract {
                        if s.optional_contract && c["contract"] != "loop_control" {
                            c["required"] = json!(false);
                        }
                        v["outputContract"] = c;
                    }
                    if let Some(k) = s.output {
                        v["contextOutputs"] = json!([VARS[k]]);
                    }
                    match &s.gate {
                        Some(Some(c)) => v["requireConfirmation"] = c.to_json(),
                        Some(None) => v["requireConfirmation"] = json!(true),
                        None => {}
                    }
                    if s.notes_optional {
                        v["notesOptional"] = json!(true);
                    }
                    if let Some((target, c, max)) = s.jump.as_ref().filter(|_| !ids.is_empty()) {
                        v["jumpIf"] = json!({"condition": c.to_json(), "target": target.get(&ids), "maxJumps": max});
                    }
                    (id, v)
                }
                Entry::Loop(l) => {
                    let id = self.id("l");
                    let (mut body, control) = self.list(&l.body, true);
                    let mut spec = json!({"maxIterations": l.max});
                    match l.kind {
                        0 => spec["while"] = l.cond.to_json(),
                        1 => spec["until"] = l.cond.to_json(),
                        2 => spec["for"] = json!(l.count),
                        3 => spec["for"] = json!({"var": "v1"}),
                        4 => spec["forEach"] = json!({"over": "arr"}),
                        _ => {}
                    }
                    if l.kind == 5 && !control {
                        let ctl = self.id("c");
                        body.push(json!({"id": ctl, "title": "Decide", "prompt": "Decide.", "outputContract": {"contract": "loop_control"}}));
                    }
                    let mut v = json!({"id": id, "loop": spec, "steps": body});
                    if let Some(g) = &l.guard {
                        v["runCondition"] = g.to_json();
                    }
                    (id, v)
                }
                Entry::Include(guard, body) => {
                    let id = self.id("i");
                    let name = self.id("r");
                    // The routine's own entries: no loop_control at its top level (the
                    // enclosing loop's decision is made in the including list).
                    let (steps, _) = self.list(body, false);
                    let text = json!({"schemaVersion": 2, "routine": name, "description": "r", "steps": steps});
                    self.routines.insert(name.clone(), text.to_string());
                    let mut v = json!({"id": id, "include": name});
                    match guard {
                        Some(g) => v["runCondition"] = g.to_json(),
                        // An unguarded include is no entry of its own: not a jump target.
                        None => {
                            out.push(v);
                            continue;
                        }
                    }
                    (id, v)
                }
            };
            ids.push(id);
            out.push(value);
        }
        (out, has_control)
    }
}

/// The generated routines, by id.
struct Routines(HashMap<String, String>);

impl RoutineResolver for Routines {
    fn resolve(&self, reference: &str, _from: &str) -> Result<RoutineSource, String> {
        self.0
            .get(reference)
            .map(|text| RoutineSource {
                location: format!("gen:{reference}"),
                text: text.clone(),
            })
            .ok_or_else(|| format!("no routine `{reference}`"))
    }
}

fn workflow(shapes: &[Entry]) -> Pinned {
    let mut b = Builder {
        next: 0,
        routines: HashMap::new(),
    };
    let (steps, _) = b.list(shapes, false);
    let doc = json!({"schemaVersion": 2, "id": "gen", "name": "Generated", "description": "d", "version": "1", "steps": steps});
    let def = parse_workflow("gen.json", &doc.to_string())
        .unwrap_or_else(|e| panic!("generated workflow does not load: {e}\n{doc:#}"));
    let routines = Routines(b.routines);
    compile_with(&def, "gen.json", &routines).unwrap_or_else(|e| {
        panic!(
            "generated workflow does not compile: {e}\n{doc:#}\n{:#?}",
            routines.0
        )
    })
}

// ---------------------------------------------------------------------------------------
// Agent behaviour
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Action {
    /// 0 missing, 1 empty, 2 text.
    notes: u8,
    delta: Vec<(usize, Option<i64>)>,
    /// 0 none, 1 valid, 2 invalid, 3 wrong kind, 4 two of them.
    artifact: u8,
    stop: bool,
    level: usize,
    approve: bool,
}

fn action() -> impl Strategy<Value = Action> {
    (
        0u8..3,
        prop::collection::vec((0usize..4, prop::option::weighted(0.8, 0i64..4)), 0..3),
        prop_oneof![1 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)],
        any::<bool>(),
        0usize..3,
        prop::bool::weighted(0.6),
    )
        .prop_map(|(notes, delta, artifact, stop, level, approve)| Action {
            notes,
            delta,
            artifact,
            stop,
            level,
            approve,
        })
}

/// Context keys an action writes (`asmt` is written by the assessment, so `arr` instead).
fn delta_key(i: usize) -> &'static str {
    ["v0", "v1", "v2", "arr"][i]
}

fn valid_artifact(step: &CompiledStep, a: &Action, forced: bool) -> Option<Value> {
    let c = step.output_contract.as_ref()?;
    Some(match c.contract {
        ContractName::LoopControl => {
            json!({"kind": "loop_control", "decision": if a.stop { "stop" } else { "continue" }})
        }
        ContractName::Assessment => {
            // A forced output avoids the blocking level `c`.
            let level = if forced {
                LEVELS[a.level % 2]
            } else {
                LEVELS[a.level]
            };
            json!({"kind": "assessment", "dimensions": {"level": level}})
        }
        other => other.example(),
    })
}

fn submission(
    step: &CompiledStep,
    a: &Action,
    forced: bool,
    context: &Map<String, Value>,
) -> Submission {
    let notes = match (forced, a.notes) {
        (true, _) | (false, 2) => Some(format!("notes for {}", step.id)),
        (false, 1) => Some(String::new()),
        _ => None,
    };
    let mut delta = Map::new();
    for (k, v) in &a.delta {
        let key = delta_key(*k);
        let value = match (key, v) {
            (_, None) => Value::Null,
            ("arr", Some(n)) => json!((0..*n).collect::<Vec<_>>()),
            (_, Some(n)) => json!(n),
        };
        delta.insert(key.to_owned(), value);
    }
    if forced {
        let mut after = context.clone();
        worktrain_core::context::merge(&mut after, &delta);
        for key in &step.context_outputs {
            if after.get(key).is_none_or(Value::is_null) {
                delta.insert(key.clone(), json!(1));
            }
        }
    }
    let kind = step
        .output_contract
        .as_ref()
        .map(|c| c.contract.as_str())
        .unwrap_or("handoff");
    let artifacts = match (forced, a.artifact) {
        (true, _) | (false, 1) => valid_artifact(step, a, forced).into_iter().collect(),
        (false, 0) => Vec::new(),
        (false, 2) => vec![json!({"kind": kind, "bogus": true})],
        (false, 3) => vec![json!({"kind": "something_else"})],
        _ => {
            let one = valid_artifact(step, a, false).unwrap_or_else(|| json!({"kind": kind}));
            vec![one.clone(), one]
        }
    };
    Submission {
        notes,
        artifacts,
        context: delta,
    }
}

// ---------------------------------------------------------------------------------------
// Driving
// ---------------------------------------------------------------------------------------

struct Session<'p> {
    pinned: &'p Pinned,
    keyring: Keyring,
    limits: Limits,
    id: SessionId,
    summary: Option<SessionSummary>,
    events: Vec<StoredEvent>,
}

impl Session<'_> {
    fn machine(&self) -> Machine<'_> {
        Machine {
            pinned: self.pinned,
            keyring: &self.keyring,
            limits: &self.limits,
        }
    }

    fn fold(&mut self, events: &[NewEvent]) -> Result<(), TestCaseError> {
        for e in events {
            let seq = Seq(self.summary.as_ref().map_or(0, |s| s.last_seq.0) + 1);
            let stored = StoredEvent {
                position: seq.0,
                session_id: self.id,
                seq,
                created_at_ms: 0,
                idempotency_key: e.idempotency_key.clone(),
                prev_hash: Sha256Hash::ZERO,
                hash: Sha256Hash::ZERO,
                body: e.body.clone(),
            };
            let (next, _) = apply(self.summary.take(), &stored)
                .map_err(|err| TestCaseError::fail(format!("fold: {err}")))?;
            self.summary = Some(next);
            self.events.push(stored);
        }
        Ok(())
    }
}

fn run(
    pinned: &Pinned,
    mode: SessionMode,
    initial: &[(usize, i64)],
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let mut s = Session {
        pinned,
        keyring: Keyring::new([9; 32], "prop".into()),
        limits: Limits::default(),
        id: SessionId::from_parts(3, 3),
        summary: None,
        events: Vec::new(),
    };
    let mut context = Map::new();
    for (k, v) in initial {
        context.insert(
            delta_key(*k).to_owned(),
            if *k == 3 {
                json!((0..*v).collect::<Vec<_>>())
            } else {
                json!(v)
            },
        );
    }
    let plan = s
        .machine()
        .start(
            s.id,
            StartParams {
                goal: "g".into(),
                context,
                source: "prop".into(),
                mode,
                ..StartParams::default()
            },
        )
        .map_err(|e| TestCaseError::fail(format!("start: {}", e.message)))?;
    s.fold(&plan.events)?;
    let bound = pinned.workflow.node_bound;
    let mut refused_here = 0u32;
    let mut last_node = None;
    // Each node takes at most 3 refusals before a forced valid output, plus one approval.
    let budget = (bound + 1) * 6 + 10;
    for i in 0..budget {
        let summary = s
            .summary
            .clone()
            .ok_or_else(|| TestCaseError::fail("no summary"))?;
        let Some(cur) = summary.current.clone() else {
            break;
        };
        if last_node != Some(cur.node) {
            last_node = Some(cur.node);
            refused_here = 0;
        }
        let a = &actions[i as usize % actions.len()];
        if summary.status == SessionStatus::Parked {
            let plan = if a.approve || refused_here >= 2 {
                let parked = s
                    .events
                    .iter()
                    .rev()
                    .find(|e| matches!(e.body, EventBody::StepParked { .. }))
                    .map(|e| e.body.clone())
                    .ok_or_else(|| TestCaseError::fail("parked without step_parked"))?;
                s.machine().approve(&summary, &parked, None)
            } else {
                refused_here += 1;
                s.machine().reject(&summary, "try again".into())
            }
            .map_err(|e| TestCaseError::fail(format!("approve/reject: {}", e.message)))?;
            s.fold(&plan.events)?;
            continue;
        }
        let step = pinned
            .workflow
            .step(cur.step)
            .ok_or_else(|| TestCaseError::fail("no step"))?;
        let sub = submission(step, a, refused_here >= 3, &summary.context);
        let claims = TokenClaims {
            kind: TokenKind::Advance,
            session: s.id,
            node: cur.node,
            attempt: cur.attempt,
        };
        let plan = match s.machine().advance(&summary, claims, &sub, None) {
            Ok(AdvanceDecision::Apply(plan)) => plan,
            Ok(AdvanceDecision::Replay { .. }) => {
                return Err(TestCaseError::fail("replay without a prior attempt"));
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "advance at `{}` failed: {} ({:?})",
                    step.id, e.message, sub
                )));
            }
        };
        if !plan.response.blockers.is_empty() {
            refused_here += 1;
        }
        s.fold(&plan.events)?;
    }
    let summary = s
        .summary
        .clone()
        .ok_or_else(|| TestCaseError::fail("no summary"))?;
    let completed = s
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::StepCompleted { .. }))
        .count() as u64;
    prop_assert_eq!(
        summary.status,
        SessionStatus::Complete,
        "did not complete within {} operations",
        budget
    );
    prop_assert!(
        completed <= bound,
        "{} successful advances, over the bound {}",
        completed,
        bound
    );
    prop_assert!(
        u64::from(summary.nodes) <= bound,
        "{} nodes, over the bound {}",
        summary.nodes,
        bound
    );
    prop_assert_eq!(completed, u64::from(summary.steps_completed));
    // Rebuilding the projection from the events alone gives the same state.
    let mut rebuilt = None;
    for e in &s.events {
        rebuilt = Some(
            apply(rebuilt, e)
                .map_err(|err| TestCaseError::fail(err.to_string()))?
                .0,
        );
    }
    prop_assert_eq!(rebuilt.as_ref(), Some(&summary));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_workflow_and_any_outputs_terminate_within_the_node_bound(
        shapes in entries(2),
        autonomous in any::<bool>(),
        initial in prop::collection::vec((0usize..4, 0i64..4), 0..3),
        actions in prop::collection::vec(action(), 1..24),
    ) {
        let pinned = workflow(&shapes);
        let mode = if autonomous { SessionMode::Autonomous } else { SessionMode::Interactive };
        run(&pinned, mode, &initial, &actions)?;
    }
}
