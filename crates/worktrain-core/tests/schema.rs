//! `spec/workflow.schema.json` is generated from the same types the loader uses. These
//! tests keep the committed file in sync and check that an independent JSON Schema
//! validator agrees with the loader on valid and invalid workflows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;
use worktrain_core::load::parse_workflow;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn committed_schema() -> Value {
    let text = std::fs::read_to_string(repo().join("spec/workflow.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = worktrain_core::workflow::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(repo().join("spec/workflow.schema.json"), text).unwrap();
    }
    assert!(
        generated == committed_schema(),
        "spec/workflow.schema.json is stale: regenerate it with `worktrain workflow schema > spec/workflow.schema.json`"
    );
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn bundled_workflows_validate_against_the_schema_file() {
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let files = yaml_files();
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        parse_workflow(&path.display().to_string(), &text).unwrap();
    }
}

/// A current-version document (the schema describes the current version; older files
/// reach it through the upgrade in `load.rs`, see `version_1_files_load_through_the_upgrade`).
const VALID: &str = r#"{"schemaVersion": 2, "id": "demo", "name": "Demo", "description": "d", "version": "1",
  "steps": [{"id": "a", "title": "A", "prompt": "p",
             "runCondition": {"and": [{"var": "x.y", "gte": 2}, {"not": {"var": "z", "in": [1, 2]}}]},
             "requireConfirmation": {"var": "risk", "equals": "high"},
             "outputContract": {"contract": "review_verdict"}, "notesOptional": true}]}"#;

/// A named change to a valid document that makes it invalid.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

#[test]
fn schema_and_loader_agree() {
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let valid: Value = serde_json::from_str(VALID).unwrap();
    assert!(validator.is_valid(&valid));
    assert!(parse_workflow("v.json", VALID).is_ok());
    let mutations: Vec<Mutation> = vec![
        (
            "unknown top-level key",
            Box::new(|v: &mut Value| {
                v["colour"] = "red".into();
            }),
        ),
        (
            "missing steps",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("steps");
            }),
        ),
        (
            "unknown step key",
            Box::new(|v: &mut Value| {
                v["steps"][0]["promt"] = "x".into();
            }),
        ),
        (
            "step id with capitals",
            Box::new(|v: &mut Value| {
                v["steps"][0]["id"] = "Plan".into();
            }),
        ),
        (
            "condition without operator",
            Box::new(|v: &mut Value| {
                v["steps"][0]["runCondition"] = serde_json::json!({"var": "x"});
            }),
        ),
        (
            "condition with two operators",
            Box::new(|v: &mut Value| {
                v["steps"][0]["runCondition"] =
                    serde_json::json!({"var": "x", "equals": 1, "gt": 0});
            }),
        ),
        (
            "gt with a string",
            Box::new(|v: &mut Value| {
                v["steps"][0]["runCondition"] = serde_json::json!({"var": "x", "gt": "a"});
            }),
        ),
        (
            "unknown contract",
            Box::new(|v: &mut Value| {
                v["steps"][0]["outputContract"] = serde_json::json!({"contract": "poem"});
            }),
        ),
        (
            "confirmation as string",
            Box::new(|v: &mut Value| {
                v["steps"][0]["requireConfirmation"] = "yes".into();
            }),
        ),
        (
            "schemaVersion as string",
            Box::new(|v: &mut Value| {
                v["schemaVersion"] = "2".into();
            }),
        ),
        (
            "version 1 key in a version 2 file",
            Box::new(|v: &mut Value| {
                v["steps"][0]["outputContract"] =
                    serde_json::json!({"contractRef": "review_verdict"});
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut doc = valid.clone();
        mutate(&mut doc);
        assert!(!validator.is_valid(&doc), "schema accepted: {what}");
        let text = serde_json::to_string(&doc).unwrap();
        assert!(
            parse_workflow("m.json", &text).is_err(),
            "loader accepted: {what}"
        );
    }
}

fn committed_routine_schema() -> Value {
    let text = std::fs::read_to_string(repo().join("spec/routine.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn committed_routine_schema_matches_the_types() {
    let generated = worktrain_core::workflow::routine_json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(repo().join("spec/routine.schema.json"), text).unwrap();
    }
    assert!(
        generated == committed_routine_schema(),
        "spec/routine.schema.json is stale: regenerate it with `UPDATE_SCHEMA=1 cargo test -p worktrain-core --test schema`"
    );
}

#[test]
fn bundled_routines_validate_against_the_routine_schema_file() {
    let validator = jsonschema::validator_for(&committed_routine_schema()).unwrap();
    let dir = repo().join("workflows/routines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        worktrain_core::load::parse_routine(&path.display().to_string(), &text).unwrap();
    }
}

const VALID_V2: &str = r#"{"schemaVersion": 2, "id": "demo", "name": "Demo", "description": "d", "version": "1",
  "inputs": ["items"],
  "steps": [
    {"id": "a", "title": "A", "prompt": "p", "requireConfirmation": {"kind": "coordinator_eval", "when": {"var": "risk", "equals": "high"}},
     "outputContract": {"contract": "assessment", "contextKey": "triage", "dimensions": {"risk": {"levels": ["low", "high"], "blockOn": ["high"]}}}},
    {"id": "each", "loop": {"forEach": {"over": "items", "as": "item", "index": "i"}, "maxIterations": 5, "decisionStep": "check"},
     "steps": [{"id": "work", "title": "W", "prompt": "{{item}}", "parallel": {"join": "any", "children": [{"workflow": "quick-task", "goal": "g", "context": {"k": 1}}]}},
               {"id": "check", "title": "C", "prompt": "c", "jumpIf": {"condition": {"var": "again", "equals": true}, "target": "work", "maxJumps": 2}}]},
    {"id": "n", "loop": {"for": {"var": "count"}, "maxIterations": 3}, "steps": [{"id": "x", "title": "X", "prompt": "x", "contextOutputs": ["done"]}]}
  ]}"#;

/// Load and compile (the loader's full check; no routines involved).
fn loads(text: &str) -> bool {
    parse_workflow("v.json", text).is_ok_and(|d| worktrain_core::compile::compile(&d).is_ok())
}

#[test]
fn schema_and_loader_agree_on_version_2_constructs() {
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let valid: Value = serde_json::from_str(VALID_V2).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&valid)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(loads(VALID_V2));
    let mutations: Vec<Mutation> = vec![
        (
            "maxIterations 0",
            Box::new(|v: &mut Value| v["steps"][1]["loop"]["maxIterations"] = 0.into()),
        ),
        (
            "maxIterations over 1000",
            Box::new(|v: &mut Value| v["steps"][1]["loop"]["maxIterations"] = 1001.into()),
        ),
        (
            "maxJumps 0",
            Box::new(|v: &mut Value| v["steps"][1]["steps"][1]["jumpIf"]["maxJumps"] = 0.into()),
        ),
        (
            "maxJumps over 100",
            Box::new(|v: &mut Value| v["steps"][1]["steps"][1]["jumpIf"]["maxJumps"] = 101.into()),
        ),
        (
            "unknown loop key",
            Box::new(|v: &mut Value| v["steps"][1]["loop"]["repeat"] = 2.into()),
        ),
        (
            "negative for",
            Box::new(|v: &mut Value| v["steps"][2]["loop"]["for"] = (-1).into()),
        ),
        (
            "unknown gate kind",
            Box::new(|v: &mut Value| v["steps"][0]["requireConfirmation"]["kind"] = "robot".into()),
        ),
        (
            "unknown join",
            Box::new(|v: &mut Value| v["steps"][1]["steps"][0]["parallel"]["join"] = "some".into()),
        ),
        (
            "no children",
            Box::new(|v: &mut Value| {
                v["steps"][1]["steps"][0]["parallel"]["children"] = serde_json::json!([])
            }),
        ),
        (
            "empty loop body",
            Box::new(|v: &mut Value| v["steps"][2]["steps"] = serde_json::json!([])),
        ),
        (
            "empty levels",
            Box::new(|v: &mut Value| {
                v["steps"][0]["outputContract"]["dimensions"]["risk"]["levels"] =
                    serde_json::json!([])
            }),
        ),
        (
            "include with a prompt",
            Box::new(|v: &mut Value| {
                v["steps"][2] = serde_json::json!({"id": "inc", "include": "verify", "prompt": "p"})
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut doc = valid.clone();
        mutate(&mut doc);
        assert!(!validator.is_valid(&doc), "schema accepted: {what}");
        assert!(
            !loads(&serde_json::to_string(&doc).unwrap()),
            "loader accepted: {what}"
        );
    }
}
