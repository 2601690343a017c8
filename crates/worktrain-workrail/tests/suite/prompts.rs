//! Step by step, the converted coding-task and MR-review workflows show the agent the same
//! sequence of prompts as WorkRail does for the same scripted answers (see `harness.rs`
//! for what is compared and why).

use serde_json::{Map, Value, json};
use worktrain_core::compile::{NoRoutines, compile_with};
use worktrain_core::load::parse_workflow;
use worktrain_core::machine::Submission;
use worktrain_workrail::source::WrWorkflow;
use worktrain_workrail::{Input, import};

use crate::corpus;
use crate::harness::{Session, compare};
use crate::oracle::{Answer, Script, WorkRail};

pub(crate) fn ctx(v: Value) -> Answer {
    Answer {
        context: v.as_object().cloned().unwrap(),
        ..Answer::default()
    }
}

pub(crate) fn decide(d: &'static str) -> Answer {
    Answer {
        decision: Some(d),
        ..Answer::default()
    }
}

pub(crate) fn script(entries: Vec<(&str, Vec<Answer>)>) -> Script {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[test]
fn coding_task_standard_path_shows_the_same_prompts() {
    let s = script(vec![
        (
            "phase-0a-explore-and-classify",
            vec![ctx(
                json!({"taskComplexity": "Medium", "riskLevel": "high", "rigorMode": "STANDARD",
                            "automationLevel": "High", "prStrategy": "SinglePR"}),
            )],
        ),
        (
            "phase-0-5-upstream-context",
            vec![ctx(
                json!({"upstreamSpecDetected": true, "solutionFixed": false}),
            )],
        ),
        ("phase-0-6-design-constraints", vec![Answer::default()]),
        ("phase-1c-challenge-and-select", vec![Answer::default()]),
        (
            "phase-2d-loop-decision",
            vec![decide("continue"), decide("stop")],
        ),
        (
            "phase-3-plan-and-test-design",
            vec![ctx(
                json!({"slices": [{"name": "parse the config"}, {"name": "wire the CLI"}], "verifyNeeded": true}),
            )],
        ),
        ("phase-4b-loop-decision", vec![decide("stop")]),
        (
            "phase-6a-implement-slice",
            vec![ctx(json!({"verificationFailed": false}))],
        ),
        ("phase-7b-fix-and-summarize", vec![Answer::default()]),
        ("phase-7c-loop-decision", vec![decide("stop")]),
    ]);
    let steps = compare("coding-task-workflow-agentic.json", json!({}), &s);
    // The path really goes through both loops' passes and every slice.
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "phase-2a-pre-assess-design-review")
            .count(),
        2
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "phase-6a-implement-slice")
            .count(),
        2
    );
    assert!(steps.contains(&"phase-8-retrospective".to_owned()));
    assert!(!steps.contains(&"phase-5-small-task-fast-path".to_owned()));
}

#[test]
fn coding_task_small_path_shows_the_same_prompts() {
    let s = script(vec![(
        "phase-0a-explore-and-classify",
        vec![ctx(
            json!({"taskComplexity": "small", "riskLevel": "Low", "rigorMode": "QUICK"}),
        )],
    )]);
    let steps = compare("coding-task-workflow-agentic.json", json!({}), &s);
    assert!(steps.contains(&"phase-5-small-task-fast-path".to_owned()));
    assert!(!steps.contains(&"phase-1a-hypothesis".to_owned()));
}

#[test]
fn coding_task_thorough_path_with_a_fixed_solution() {
    let s = script(vec![
        (
            "phase-0a-explore-and-classify",
            vec![ctx(
                json!({"taskComplexity": "Large", "riskLevel": "Medium", "rigorMode": "THOROUGH",
                            "automationLevel": "Low", "prStrategy": "MultiPR"}),
            )],
        ),
        (
            "phase-0-5-upstream-context",
            vec![ctx(
                json!({"upstreamSpecDetected": true, "solutionFixed": "yes"}),
            )],
        ),
        ("phase-0-6-design-constraints", vec![Answer::default()]),
        ("phase-2d-loop-decision", vec![decide("stop")]),
        (
            "phase-3-plan-and-test-design",
            vec![ctx(
                json!({"slices": [{"name": "one"}], "verifyNeeded": true}),
            )],
        ),
        (
            "phase-4b-loop-decision",
            vec![decide("continue"), decide("stop")],
        ),
        (
            "phase-6a-implement-slice",
            vec![ctx(json!({"verificationFailed": true}))],
        ),
        ("phase-7b-fix-and-summarize", vec![Answer::default()]),
        (
            "phase-7c-loop-decision",
            vec![decide("continue"), decide("stop")],
        ),
    ]);
    let steps = compare("coding-task-workflow-agentic.json", json!({}), &s);
    // `solutionFixed: "yes"` is true for WorkRail's lenient equality: the spec path.
    assert!(steps.contains(&"phase-1d-spec-to-approach".to_owned()));
    assert!(!steps.contains(&"phase-1c-challenge-and-select".to_owned()));
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "phase-7a-final-verification-core")
            .count(),
        2
    );
}

#[test]
fn mr_review_shows_the_same_prompts() {
    let s = script(vec![
        (
            "phase-0-understand-and-classify",
            vec![ctx(
                json!({"reviewMode": "STANDARD", "riskLevel": "Medium"}),
            )],
        ),
        (
            "phase-2-freeze-fact-packet-and-select-reviewers",
            vec![ctx(
                json!({"needsReviewerBundle": true, "reviewFactPacket": "packet-v1",
                            "selectedReviewerFamilies": ["correctness_invariants", "patterns_architecture"]}),
            )],
        ),
        (
            "phase-4c-loop-decision",
            vec![decide("continue"), decide("stop")],
        ),
        (
            "phase-5-final-validation",
            vec![ctx(
                json!({"recommendation": "minor", "validatorConsensusLevel": "High", "recommendationConfidenceBand": "low"}),
            )],
        ),
    ]);
    let steps = compare("mr-review-workflow.agentic.v2.json", json!({}), &s);
    assert!(steps.contains(&"phase-3-reviewer-family-bundle".to_owned()));
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "phase-4b-canonical-synthesis")
            .count(),
        2
    );
    assert_eq!(
        steps.last().map(String::as_str),
        Some("phase-6-final-handoff")
    );
}

#[test]
fn mr_review_without_a_reviewer_bundle_and_a_clean_verdict() {
    let s = script(vec![
        (
            "phase-0-understand-and-classify",
            vec![ctx(json!({"reviewMode": "THOROUGH", "riskLevel": "Low"}))],
        ),
        (
            "phase-2-freeze-fact-packet-and-select-reviewers",
            vec![ctx(json!({"needsReviewerBundle": false}))],
        ),
        ("phase-4c-loop-decision", vec![decide("stop")]),
        (
            "phase-5-final-validation",
            vec![ctx(json!({"recommendation": "Clean"}))],
        ),
    ]);
    let steps = compare("mr-review-workflow.agentic.v2.json", json!({}), &s);
    assert!(!steps.contains(&"phase-3-reviewer-family-bundle".to_owned()));
}

#[test]
fn a_low_assessment_blocks_with_workrails_followup_guidance() {
    let file = "coding-task-workflow-agentic.json";
    let text = std::fs::read_to_string(corpus::path(file)).unwrap();
    let wf: WrWorkflow = serde_json::from_str(&text).unwrap();
    let oracle = WorkRail::compile(wf);
    let levels: Map<String, Value> = [("design_soundness", "low"), ("design_gaps", "high")]
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let want = oracle.followups("phase-1c-challenge-and-select", &levels);
    assert_eq!(want.len(), 1);

    let out = import(&[Input::new(file, text)], &[]);
    let yaml = &out[0].output.as_ref().unwrap().yaml;
    let pinned = compile_with(
        &parse_workflow("x.yaml", yaml).unwrap(),
        "x.yaml",
        &NoRoutines,
    )
    .unwrap();
    let start =
        json!({"taskComplexity": "Medium", "rigorMode": "STANDARD", "solutionFixed": false});
    let (mut s, mut r) = Session::start(&pinned, start.as_object().cloned().unwrap());
    for _ in 0..50 {
        if r.step.as_ref().map(|s| s.id.as_str()) == Some("phase-1c-challenge-and-select") {
            break;
        }
        let step = r.step.clone().expect("reaches phase-1c");
        let mut artifacts = Vec::new();
        if let Some(c) = &step.output_contract {
            // The example gives every dimension its first level (`low`, which blocks).
            let mut a = c.example.clone();
            if let Some(dims) = a.get_mut("dimensions").and_then(Value::as_object_mut) {
                dims.values_mut().for_each(|v| *v = json!("high"));
            }
            artifacts.push(a);
        }
        r = s.submit(Submission {
            notes: Some("done".into()),
            artifacts,
            context: Map::new(),
        });
    }
    let r = s.submit(Submission {
        notes: Some("done".into()),
        artifacts: vec![json!({"kind": "assessment", "dimensions": levels})],
        context: Map::new(),
    });
    assert_eq!(r.blockers.len(), 1, "{:?}", r.blockers);
    assert!(
        r.blockers[0].message.ends_with(&want[0]),
        "{}",
        r.blockers[0].message
    );
    assert_eq!(
        r.step.map(|s| s.id.to_string()).as_deref(),
        Some("phase-1c-challenge-and-select")
    );
}
