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
    assert!(
        generated == committed_schema(),
        "spec/workflow.schema.json is stale: regenerate it with `worktrain workflow schema > spec/workflow.schema.json`"
    );
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
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
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        parse_workflow(&path.display().to_string(), &text).unwrap();
    }
}

const VALID: &str = r#"{"schemaVersion": 1, "id": "demo", "name": "Demo", "description": "d", "version": "1",
  "steps": [{"id": "a", "title": "A", "prompt": "p",
             "runCondition": {"and": [{"var": "x.y", "gte": 2}, {"not": {"var": "z", "in": [1, 2]}}]},
             "requireConfirmation": {"var": "risk", "equals": "high"},
             "outputContract": {"contractRef": "review_verdict"}, "notesOptional": true}]}"#;

#[test]
fn schema_and_loader_agree() {
    let validator = jsonschema::validator_for(&committed_schema()).unwrap();
    let valid: Value = serde_json::from_str(VALID).unwrap();
    assert!(validator.is_valid(&valid));
    assert!(parse_workflow("v.json", VALID).is_ok());
    let mutations: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        ("unknown top-level key", Box::new(|v: &mut Value| { v["colour"] = "red".into(); })),
        ("missing steps", Box::new(|v: &mut Value| { v.as_object_mut().unwrap().remove("steps"); })),
        ("unknown step key", Box::new(|v: &mut Value| { v["steps"][0]["promt"] = "x".into(); })),
        ("step id with capitals", Box::new(|v: &mut Value| { v["steps"][0]["id"] = "Plan".into(); })),
        ("condition without operator", Box::new(|v: &mut Value| { v["steps"][0]["runCondition"] = serde_json::json!({"var": "x"}); })),
        ("condition with two operators", Box::new(|v: &mut Value| { v["steps"][0]["runCondition"] = serde_json::json!({"var": "x", "equals": 1, "gt": 0}); })),
        ("gt with a string", Box::new(|v: &mut Value| { v["steps"][0]["runCondition"] = serde_json::json!({"var": "x", "gt": "a"}); })),
        ("unknown contract", Box::new(|v: &mut Value| { v["steps"][0]["outputContract"] = serde_json::json!({"contractRef": "poem"}); })),
        ("confirmation as string", Box::new(|v: &mut Value| { v["steps"][0]["requireConfirmation"] = "yes".into(); })),
        ("schemaVersion as string", Box::new(|v: &mut Value| { v["schemaVersion"] = "1".into(); })),
    ];
    for (what, mutate) in mutations {
        let mut doc = valid.clone();
        mutate(&mut doc);
        assert!(!validator.is_valid(&doc), "schema accepted: {what}");
        let text = serde_json::to_string(&doc).unwrap();
        assert!(parse_workflow("m.json", &text).is_err(), "loader accepted: {what}");
    }
}
