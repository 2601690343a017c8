//! Guarded blocks (a loop and a routine include with `runCondition`) as the simulator walks
//! them and the graph renderer draws them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use serde_json::{Value, json};
use worktrain_core::compile::{Pinned, RoutineResolver, RoutineSource, compile_with};
use worktrain_core::load::{WorkflowError, parse_workflow};
use worktrain_workflow_tools::graph::{GraphFormat, render};
use worktrain_workflow_tools::simulate::{Script, TraceItem, simulate};

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

fn doc(steps: Value) -> Value {
    json!({"schemaVersion": 2, "id": "t", "name": "T", "description": "d", "version": "1", "steps": steps})
}

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

/// A loop block with a run condition.
fn guarded_lp(id: &str, run_if: Value, spec: Value, steps: Value) -> Value {
    json!({"id": id, "runCondition": run_if, "loop": spec, "steps": steps})
}

fn go() -> Value {
    json!({"var": "go", "equals": true})
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
fn guarded_blocks_are_simulated_and_drawn() {
    let p = with_routines(
        &[check_routine()],
        json!([
            guarded_lp(
                "l",
                go(),
                json!({"for": 1, "maxIterations": 1}),
                json!([s("x", json!({}))])
            ),
            guarded_include("c", "check", go(), json!({"what": "x"})),
            s("b", json!({})),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let trace = simulate(&p, &Script::default()).unwrap();
    assert_eq!(
        trace.path,
        vec![
            TraceItem::BlockSkip {
                block: "l".into(),
                condition: "go equals true".into()
            },
            TraceItem::BlockSkip {
                block: "c".into(),
                condition: "go equals true".into()
            },
            TraceItem::Enter {
                step: "b".into(),
                passes: vec![],
                gate: false
            },
            TraceItem::Complete,
        ]
    );
    let text = render(&p.workflow, GraphFormat::Text);
    for needle in [
        "loop l\n    if go equals true / else skip\n",
        "include c\n    if go equals true / else skip\n  [2] c.run — Run x\n",
        "end include c\n[4] b",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let dot = render(&p.workflow, GraphFormat::Dot);
    for needle in [
        "\"guard:l\" [shape=diamond",
        "\"guard:l\" -> \"loop:l\" [label=\"if go equals true\"",
        "\"guard:l\" -> \"guard:c\" [label=\"else skip\", style=dashed",
        "\"guard:c\" -> \"step:c.run\" [label=\"if go equals true\"",
        "\"guard:c\" -> \"step:b\" [label=\"else skip\", style=dashed",
        "\"loop:l\" -> \"guard:c\"",
    ] {
        assert!(dot.contains(needle), "missing {needle:?} in\n{dot}");
    }
    let svg = render(&p.workflow, GraphFormat::Svg);
    assert!(svg.contains("<g id=\"guard_l\">"), "{svg}");
    assert!(
        svg.contains("loop l runs if go equals true; else it is skipped"),
        "{svg}"
    );
    assert!(
        svg.contains("include c runs if go equals true; else it is skipped"),
        "{svg}"
    );
}
