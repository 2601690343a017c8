//! The bundled library, walked on every routing path.
//!
//! For every workflow in `catalog::BUNDLED` (new files are covered automatically), the
//! workflow is resolved through the [`Catalog`] (so its routines resolve exactly as they do
//! for users) and simulated with the real state machine across the context combinations
//! that drive its routing. The combinations are derived from the workflow itself: every
//! context path read by a control-flow condition (`runCondition` of steps, loops and
//! includes, `jumpIf`, `while`, `until`) takes each literal it is compared against plus "unset", and every loop with a
//! decision step runs once with `continue, stop` and once with `stop`. Every path must
//! complete within the compiler's node bound, and every step must be entered on at least
//! one path — so a typo in a condition that makes a step unreachable fails CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use worktrain_core::compile::{CompiledWorkflow, Instr, LoopKind};
use worktrain_core::condition::{CompareOp, Condition};
use worktrain_core::contract::ContractName;
use worktrain_core::cursor::LoopDecision;
use worktrain_core::load::{parse_routine, parse_workflow};
use worktrain_core::workflow::StepEntry;
use worktrain_engine::catalog::{BUNDLED, BUNDLED_ROUTINES, Catalog};
use worktrain_workflow_tools::simulate::{Script, Trace, simulate};

/// Stand-in for "unset" when a step must set the key (contextOutputs): a value no
/// condition compares against.
const OTHER: &str = "simulated-other";
/// Upper bound on the combinations one workflow may need; a workflow that needs more
/// should be split (or this test taught to sample).
const MAX_COMBINATIONS: usize = 5_000;

/// How a context path gets its value during a simulation.
#[derive(Debug, Clone)]
enum Producer {
    /// Steps that must set the key (contextOutputs); when it is also a declared input,
    /// the initial context carries the value too.
    Outputs { steps: Vec<String>, input: bool },
    /// A dimension of assessment artifacts written under their context key.
    Assessment { steps: Vec<String>, dim: String },
    /// The initial context only (declared `inputs`), or nothing at all.
    Input,
}

#[derive(Debug, Clone)]
struct Var {
    path: String,
    producer: Producer,
    /// `None` = unset.
    candidates: Vec<Option<Value>>,
}

fn push_unique(list: &mut Vec<Option<Value>>, v: Option<Value>) {
    if !list.contains(&v) {
        list.push(v);
    }
}

fn literals(c: &Condition, out: &mut BTreeMap<String, Vec<Option<Value>>>) {
    match c {
        Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|c| literals(c, out)),
        Condition::Not(c) => literals(c, out),
        Condition::Compare { var, op, .. } => {
            let list = out.entry(var.to_string()).or_default();
            let num = |n: f64| {
                if n.fract() == 0.0 {
                    json!(n as i64)
                } else {
                    json!(n)
                }
            };
            match op {
                CompareOp::Equals(v) | CompareOp::NotEquals(v) => {
                    push_unique(list, Some(v.clone()))
                }
                CompareOp::In(vs) => vs.iter().for_each(|v| push_unique(list, Some(v.clone()))),
                CompareOp::Contains(v) => push_unique(list, Some(json!([v]))),
                CompareOp::Gt(n) | CompareOp::Gte(n) | CompareOp::Lt(n) | CompareOp::Lte(n) => {
                    for x in [n - 1.0, *n, n + 1.0] {
                        push_unique(list, Some(num(x)));
                    }
                }
                CompareOp::Exists(_) => push_unique(list, Some(json!("present"))),
            }
        }
    }
}

/// Every context path read by a condition that decides which step runs next.
fn control_literals(wf: &CompiledWorkflow) -> BTreeMap<String, Vec<Option<Value>>> {
    let mut out = BTreeMap::new();
    for s in &wf.steps {
        if let Some(c) = &s.run_condition {
            literals(c, &mut out);
        }
        if let Some(j) = &s.jump {
            literals(&j.condition, &mut out);
        }
    }
    for l in &wf.loops {
        match &l.kind {
            LoopKind::While { condition } | LoopKind::Until { condition } => {
                literals(condition, &mut out)
            }
            _ => {}
        }
    }
    // Guards of loops and routine includes with a `runCondition`.
    for instr in &wf.program {
        match instr {
            Instr::Guard { condition, .. } => literals(condition, &mut out),
            Instr::Step { .. } | Instr::LoopHead { .. } | Instr::LoopTail { .. } | Instr::End => {}
        }
    }
    out
}

/// A sample array for `forEach` loops: two elements, so passes and the index show.
fn sample_array() -> Value {
    json!([
        {"title": "first", "goal": "g1", "claim": "c1", "predicts": "p1", "experiment": "e1", "files": ["a.rs"], "done_when": "t1"},
        {"title": "second", "goal": "g2", "claim": "c2", "predicts": "p2", "experiment": "e2", "files": ["b.rs"], "done_when": "t2"}
    ])
}

fn assessment_steps(wf: &CompiledWorkflow, key: &str) -> Vec<String> {
    wf.steps
        .iter()
        .filter(|s| {
            s.output_contract.as_ref().is_some_and(|c| {
                c.contract == ContractName::Assessment && c.context_key.as_deref() == Some(key)
            })
        })
        .map(|s| s.id.to_string())
        .collect()
}

fn output_steps(wf: &CompiledWorkflow, key: &str) -> Vec<String> {
    wf.steps
        .iter()
        .filter(|s| s.context_outputs.iter().any(|k| k == key))
        .map(|s| s.id.to_string())
        .collect()
}

/// The routing variables of a workflow, with their candidate values.
fn routing_vars(wf: &CompiledWorkflow) -> Vec<Var> {
    let mut vars = Vec::new();
    for (path, mut candidates) in control_literals(wf) {
        let segments: Vec<&str> = path.split('.').collect();
        let root = segments[0];
        let assessed = assessment_steps(wf, root);
        let producer = if !assessed.is_empty() {
            assert_eq!(
                segments.len(),
                2,
                "{}: condition reads `{path}`; assessment keys are read as `<contextKey>.<dimension>`",
                wf.id
            );
            let dim = segments[1].to_owned();
            // Every declared level the assessment can be submitted with is a candidate
            // (the domain is finite); literals that are not levels stay, so a typo fails.
            for step in &assessed {
                let spec = wf
                    .steps
                    .iter()
                    .find(|s| s.id.as_str() == step)
                    .and_then(|s| s.output_contract.as_ref())
                    .and_then(|c| c.dimensions.get(&dim))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: `{path}` is not a dimension of `{step}`'s assessment",
                            wf.id
                        )
                    });
                for level in spec.levels.iter().filter(|l| !spec.block_on.contains(l)) {
                    push_unique(&mut candidates, Some(Value::String(level.clone())));
                }
            }
            Producer::Assessment {
                steps: assessed,
                dim,
            }
        } else {
            assert_eq!(
                segments.len(),
                1,
                "{}: condition reads nested path `{path}`; teach tests/library.rs how it is produced",
                wf.id
            );
            let steps = output_steps(wf, root);
            let input = wf.inputs.iter().any(|i| i == root);
            if steps.is_empty() && !input {
                // Nothing sets it (a typo in the key, or a missing `inputs` entry): it
                // stays unset, and whatever needs it set is unreachable.
                candidates = vec![None];
                Producer::Input
            } else if steps.is_empty() {
                candidates.push(None);
                Producer::Input
            } else {
                // The steps that set a routing key must tell the agent every value that
                // routes (as `value` in their prompt) — a typo in a literal fails here.
                for literal in candidates.iter().flatten() {
                    let shown = format!(
                        "`{}`",
                        literal
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| literal.to_string())
                    );
                    let told = steps.iter().any(|id| {
                        wf.steps.iter().any(|s| {
                            s.id.as_str() == id
                                && (s.prompt.contains(&shown)
                                    || s.fragments.iter().any(|f| f.text.contains(&shown)))
                        })
                    });
                    assert!(
                        told,
                        "{}: a condition compares `{path}` with {literal}, but no step that sets `{root}` ({steps:?}) mentions {shown} in its prompt",
                        wf.id
                    );
                }
                candidates.push(if input { None } else { Some(json!(OTHER)) });
                Producer::Outputs { steps, input }
            }
        };
        vars.push(Var {
            path,
            producer,
            candidates,
        });
    }
    vars
}

fn decision_loops(wf: &CompiledWorkflow) -> Vec<String> {
    wf.loops
        .iter()
        .filter(|l| l.decision_step.is_some())
        .map(|l| l.id.to_string())
        .collect()
}

/// Build the script for one combination.
fn script_for(
    wf: &CompiledWorkflow,
    vars: &[Var],
    values: &[Option<Value>],
    decisions: &[(String, bool)],
) -> Script {
    let mut script = Script::default();
    let foreach_roots: BTreeSet<String> = wf
        .loops
        .iter()
        .filter_map(|l| match &l.kind {
            LoopKind::ForEach { over, .. } => Some(over.root().to_owned()),
            _ => None,
        })
        .collect();
    let count_roots: BTreeSet<String> = wf
        .loops
        .iter()
        .filter_map(|l| match &l.kind {
            LoopKind::For { var: Some(v), .. } => Some(v.root().to_owned()),
            _ => None,
        })
        .collect();
    // Defaults for keys steps must set that no routing condition reads.
    for s in &wf.steps {
        for key in &s.context_outputs {
            let value = if foreach_roots.contains(key) {
                sample_array()
            } else if count_roots.contains(key) {
                json!(2)
            } else {
                json!("simulated")
            };
            script
                .at
                .entry(s.id.to_string())
                .or_default()
                .insert(key.clone(), value);
        }
    }
    for key in wf.inputs.iter().filter(|k| foreach_roots.contains(*k)) {
        script.context.insert(key.clone(), sample_array());
    }
    let mut assessments: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (var, value) in vars.iter().zip(values) {
        match &var.producer {
            Producer::Input => {
                if let Some(v) = value {
                    script.context.insert(var.path.clone(), v.clone());
                }
            }
            Producer::Outputs { steps, input } => {
                if let Some(v) = value.as_ref().filter(|_| *input) {
                    script.context.insert(var.path.clone(), v.clone());
                }
                let v = value.clone().unwrap_or_else(|| json!(OTHER));
                for step in steps {
                    script
                        .at
                        .entry(step.clone())
                        .or_default()
                        .insert(var.path.clone(), v.clone());
                }
            }
            Producer::Assessment { steps, dim } => {
                for step in steps {
                    if let Some(v) = value {
                        assessments
                            .entry(step.clone())
                            .or_default()
                            .insert(dim.clone(), v.clone());
                    }
                }
            }
        }
    }
    // Assessment artifacts: the chosen levels, the first non-blocking level elsewhere.
    for (step, chosen) in assessments {
        let contract = wf
            .steps
            .iter()
            .find(|s| s.id.as_str() == step)
            .and_then(|s| s.output_contract.as_ref())
            .expect("assessment step");
        let mut dims = Map::new();
        for (dim, spec) in &contract.dimensions {
            let level = chosen.get(dim).cloned().unwrap_or_else(|| {
                let ok = spec
                    .levels
                    .iter()
                    .find(|l| !spec.block_on.contains(l))
                    .or(spec.levels.first());
                Value::String(ok.cloned().unwrap_or_default())
            });
            dims.insert(dim.clone(), level);
        }
        script.artifacts.insert(
            step,
            json!({"kind": "assessment", "dimensions": dims, "rationale": "simulated"}),
        );
    }
    for (loop_id, continue_first) in decisions {
        let seq = if *continue_first {
            vec![LoopDecision::Continue, LoopDecision::Stop]
        } else {
            vec![LoopDecision::Stop]
        };
        script.decisions.insert(loop_id.clone(), seq);
    }
    script
}

fn describe(vars: &[Var], values: &[Option<Value>], decisions: &[(String, bool)]) -> String {
    let mut parts: Vec<String> = vars
        .iter()
        .zip(values)
        .map(|(v, x)| match x {
            Some(x) => format!("{}={x}", v.path),
            None => format!("{}=<unset>", v.path),
        })
        .collect();
    parts.extend(
        decisions
            .iter()
            .map(|(l, c)| format!("{l}:{}", if *c { "continue,stop" } else { "stop" })),
    );
    parts.join(" ")
}

/// One routing combination: a value per routing variable (`None` = unset) and, per decision
/// loop, whether it decides `continue` before `stop`.
type Combination = (Vec<Option<Value>>, Vec<(String, bool)>);

/// Every combination of candidate values and loop decisions.
fn combinations(vars: &[Var], loops: &[String]) -> Vec<Combination> {
    let mut combos: Vec<Combination> = vec![(Vec::new(), Vec::new())];
    for var in vars {
        combos = combos
            .into_iter()
            .flat_map(|(vals, d)| {
                var.candidates.iter().map(move |c| {
                    let mut vals = vals.clone();
                    vals.push(c.clone());
                    (vals, d.clone())
                })
            })
            .collect();
    }
    for l in loops {
        combos = combos
            .into_iter()
            .flat_map(|(vals, d)| {
                [true, false].into_iter().map(move |c| {
                    let mut d = d.clone();
                    d.push((l.clone(), c));
                    (vals.clone(), d)
                })
            })
            .collect();
    }
    combos
}

struct Coverage {
    paths: usize,
    entered: BTreeSet<String>,
    distinct: BTreeSet<Vec<String>>,
}

fn walk(id: &str) -> Coverage {
    let resolved = Catalog::default()
        .resolve(id)
        .unwrap_or_else(|e| panic!("bundled workflow `{id}` does not resolve: {}", e.message));
    let pinned = &resolved.pinned;
    let wf = &pinned.workflow;
    let vars = routing_vars(wf);
    let loops = decision_loops(wf);
    let combos = combinations(&vars, &loops);
    assert!(
        combos.len() <= MAX_COMBINATIONS,
        "{id}: {} routing combinations; split the workflow or sample",
        combos.len()
    );
    let mut coverage = Coverage {
        paths: 0,
        entered: BTreeSet::new(),
        distinct: BTreeSet::new(),
    };
    for (values, decisions) in &combos {
        let script = script_for(wf, &vars, values, decisions);
        let trace: Trace = simulate(pinned, &script).unwrap_or_else(|e| {
            panic!(
                "{id} [{}]: simulation failed: {e}",
                describe(&vars, values, decisions)
            )
        });
        assert!(
            trace.completed,
            "{id} [{}]: did not complete",
            describe(&vars, values, decisions)
        );
        assert!(
            trace.steps.len() as u64 <= wf.node_bound,
            "{id} [{}]: {} steps entered, over the bound {}",
            describe(&vars, values, decisions),
            trace.steps.len(),
            wf.node_bound
        );
        coverage.paths += 1;
        coverage.entered.extend(trace.steps.iter().cloned());
        coverage.distinct.insert(trace.steps);
    }
    let missing: Vec<&str> = wf
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .filter(|s| !coverage.entered.contains(*s))
        .collect();
    assert!(
        missing.is_empty(),
        "{id}: steps never entered on any of {} routing paths: {missing:?} (routing vars: {:?})",
        coverage.paths,
        vars.iter()
            .map(|v| (&v.path, &v.candidates))
            .collect::<Vec<_>>()
    );
    coverage
}

fn bundled_ids() -> Vec<String> {
    BUNDLED
        .iter()
        .map(|(name, text)| {
            parse_workflow(name, text)
                .unwrap_or_else(|e| panic!("bundled {name} does not load: {e}"))
                .id
                .to_string()
        })
        .collect()
}

#[test]
fn every_bundled_workflow_completes_on_every_routing_path_and_reaches_every_step() {
    let ids = bundled_ids();
    assert!(ids.len() >= 6, "the library lost workflows: {ids:?}");
    for id in &ids {
        let started = std::time::Instant::now();
        let c = walk(id);
        // A workflow with routing must take more than one path; otherwise its conditions
        // are dead (the same on every combination).
        assert!(
            c.paths == 1 || c.distinct.len() > 1,
            "{id}: routing conditions exist but every combination takes the same path"
        );
        eprintln!(
            "{id}: {} routing combinations, {} distinct paths, {} steps covered ({:?})",
            c.paths,
            c.distinct.len(),
            c.entered.len(),
            started.elapsed()
        );
    }
}

#[test]
fn bundled_files_are_registered_and_documented() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let on_disk = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let registered: BTreeSet<String> = BUNDLED.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        on_disk(&root),
        registered,
        "every file in workflows/ must be listed in catalog::BUNDLED"
    );
    let routines: BTreeSet<String> = BUNDLED_ROUTINES
        .iter()
        .map(|(n, _)| {
            n.strip_prefix("routines/")
                .expect("routines live under routines/")
                .to_owned()
        })
        .collect();
    assert_eq!(
        on_disk(&root.join("routines")),
        routines,
        "every file in workflows/routines/ must be listed in catalog::BUNDLED_ROUTINES"
    );
    for (name, text) in BUNDLED {
        let id = parse_workflow(name, text).unwrap().id;
        assert!(
            text.starts_with(&format!("# {id} — ")),
            "{name}: start with a `# {id} — when to use it` header"
        );
        assert!(
            text.contains("Use "),
            "{name}: the header says when to use something else"
        );
        let on_disk = std::fs::read_to_string(root.join(name)).unwrap();
        assert_eq!(on_disk, *text);
    }
    for (name, text) in BUNDLED_ROUTINES {
        let r = parse_routine(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.starts_with(&format!("# {} — ", r.routine)),
            "{name}: start with a header comment"
        );
        assert_eq!(
            format!("routines/{}.yaml", r.routine),
            *name,
            "{name}: a routine's file is named after its id, so `include: <id>` finds it"
        );
    }
}

fn includes(entries: &[StepEntry], out: &mut BTreeSet<String>) {
    for e in entries {
        match e {
            StepEntry::Include(i) => {
                out.insert(i.include.clone());
            }
            StepEntry::Loop(l) => includes(&l.steps, out),
            StepEntry::Step(_) => {}
        }
    }
}

#[test]
fn children_and_routines_resolve_within_the_library() {
    let ids: BTreeSet<String> = bundled_ids().into_iter().collect();
    let mut used = BTreeSet::new();
    for (name, text) in BUNDLED {
        let def = parse_workflow(name, text).unwrap();
        includes(&def.steps, &mut used);
        let pinned = Catalog::default().resolve(def.id.as_str()).unwrap().pinned;
        for s in &pinned.workflow.steps {
            for child in s.delegation.iter().flat_map(|d| &d.children) {
                assert!(
                    ids.contains(child.workflow.as_str()),
                    "{name}: step `{}` delegates to `{}`, which is not bundled",
                    s.id,
                    child.workflow
                );
            }
        }
    }
    for (name, _) in BUNDLED_ROUTINES {
        let stem = name
            .trim_start_matches("routines/")
            .trim_end_matches(".yaml");
        assert!(
            used.contains(stem),
            "bundled routine {name} is not used by any bundled workflow"
        );
    }
}
