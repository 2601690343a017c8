//! Construct by construct: each WorkRail construct converts to worktrain with the same
//! behaviour (checked against the WorkRail model where it runs), or with a note saying
//! how it differs; invalid input fails with a reason that names where and why.

use serde_json::{Value, json};
use worktrain_workrail::{Input, NoteKind, Outcome, Status, Written, import, write};

use crate::harness::compare_text;
use crate::prompts::{ctx, decide, script};

fn doc(steps: Value) -> Value {
    json!({"id": "test", "name": "T", "description": "d", "version": "1.0.0", "steps": steps})
}

fn imp(d: &Value) -> Outcome {
    imp_with(d, &[])
}

fn imp_with(d: &Value, routines: &[(&str, Value)]) -> Outcome {
    let routines: Vec<Input> = routines
        .iter()
        .map(|(n, v)| Input::new(*n, v.to_string()))
        .collect();
    import(&[Input::new("t.json", d.to_string())], &routines).remove(0)
}

fn yaml(o: &Outcome) -> &str {
    &o.output
        .as_ref()
        .unwrap_or_else(|| panic!("not converted: {:?}", o.report))
        .yaml
}

#[track_caller]
fn has_note(o: &Outcome, kind: NoteKind, at: &str, says: &str) {
    assert!(
        o.report
            .notes
            .iter()
            .any(|n| n.kind == kind && n.at == at && n.message.contains(says)),
        "expected a {kind:?} note at {at} saying {says:?}; notes: {:#?}",
        o.report.notes
    );
}

#[track_caller]
fn fails(o: &Outcome, says: &str) {
    assert_eq!(o.report.status, Status::Failed, "{:?}", o.report);
    let r = o.report.reason.as_deref().unwrap_or_default();
    assert!(r.contains(says), "reason should say {says:?}: {r}");
}

fn step(id: &str, prompt: &str) -> Value {
    json!({"id": id, "title": format!("Step {id}"), "prompt": prompt})
}

#[test]
fn lenient_conditions_route_like_workrail() {
    let d = doc(json!([
        step("classify", "Classify."),
        {"id": "fast", "title": "Fast", "prompt": "Fast path.", "runCondition": {"var": "mode", "equals": "Fast"}},
        {"id": "many", "title": "Many", "prompt": "Many.", "runCondition": {"var": "count", "gte": 3}},
        {"id": "tagged", "title": "Tagged", "prompt": "Tagged.", "runCondition": {"var": "tags", "contains": "SEC"}},
        {"id": "truthy", "title": "Truthy", "prompt": "Truthy.", "runCondition": {"var": "flag"}},
        {"id": "neg", "title": "Neg", "prompt": "Neg.", "runCondition": {"not": {"var": "mode", "in": ["slow", "FAST"]}}},
        {"id": "gated", "title": "Gated", "prompt": "Gated.", "requireConfirmation": {"var": "risky", "equals": true}},
    ]));
    for answers in [
        json!({"mode": " fast ", "count": "3", "tags": ["security", "perf"], "flag": 0, "risky": "yes"}),
        json!({"mode": "slow", "count": 4, "tags": "none", "flag": "x", "risky": false}),
    ] {
        let s = script(vec![("classify", vec![ctx(answers)])]);
        compare_text("t.json", &d.to_string(), json!({}), &s);
    }
}

#[test]
fn until_loops_are_checked_before_each_pass() {
    let d = doc(json!([
        step("init", "Init."),
        {"id": "search", "type": "loop", "title": "Search", "loop": {"type": "until", "condition": {"var": "found", "equals": true}, "maxIterations": 5}, "body": "look"},
        step("look", "Look in source {{currentIteration}}."),
        step("done", "Done."),
    ]));
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Mapped,
        "steps[1].loop",
        "it became `while: {not: …}`",
    );
    // Already found: WorkRail runs no pass (the condition is checked before the first).
    compare_text(
        "t.json",
        &d.to_string(),
        json!({}),
        &script(vec![("init", vec![ctx(json!({"found": true}))])]),
    );
    // Found on the third pass.
    let s = script(vec![(
        "look",
        vec![
            ctx(json!({"found": false})),
            ctx(json!({"found": false})),
            ctx(json!({"found": "TRUE"})),
        ],
    )]);
    let steps = compare_text("t.json", &d.to_string(), json!({}), &s);
    assert_eq!(steps.iter().filter(|s| *s == "look").count(), 3);
}

#[test]
fn a_context_loop_condition_is_rechecked_before_every_step_of_a_pass() {
    let d = doc(json!([
        {"id": "poll", "type": "loop", "title": "Poll", "loop": {"type": "while", "condition": {"var": "status", "not_equals": "done"}, "maxIterations": 4, "iterationVar": "attempt"},
         "body": [step("check", "Check (attempt {{attempt}})."), {"id": "wait", "title": "Wait", "prompt": "Wait.", "runCondition": {"var": "slow", "equals": true}}, step("log", "Log.")]},
        step("after", "After."),
    ]));
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Mapped,
        "steps[0].loop",
        "the steps after the first carry it in their runCondition",
    );
    has_note(
        &o,
        NoteKind::Mapped,
        "steps[0].loop.iterationVar",
        "`attempt` (1-based) became `worktrain.loops.poll.pass`",
    );
    // `check` finishes the job in the second pass: WorkRail skips `wait` and `log` at once.
    let s = script(vec![(
        "check",
        vec![ctx(json!({"slow": true})), ctx(json!({"status": "DONE"}))],
    )]);
    let steps = compare_text("t.json", &d.to_string(), json!({}), &s);
    assert_eq!(steps, ["check", "wait", "log", "check", "after"]);
}

#[test]
fn artifact_loops_become_decision_loops() {
    let d = doc(json!([
        {"id": "review", "type": "loop", "title": "Review", "loop": {"type": "while", "conditionSource": {"kind": "artifact_contract", "contractRef": "wr.contracts.loop_control", "loopId": "x"}, "maxIterations": 3},
         "body": [step("work", "Work."), {"id": "decide", "title": "Decide", "prompt": "Decide.", "outputContract": {"contractRef": "wr.contracts.loop_control"}}]},
        step("end", "End."),
    ]));
    let y = yaml(&imp(&d)).to_owned();
    assert!(y.contains("decisionStep: decide"), "{y}");
    assert!(y.contains("contract: loop_control"), "{y}");
    assert!(
        y.contains("notesOptional: true"),
        "a contract step's notes are optional, as in WorkRail: {y}"
    );
    let s = script(vec![(
        "decide",
        vec![decide("continue"), decide("continue"), decide("continue")],
    )]);
    let steps = compare_text("t.json", &d.to_string(), json!({}), &s);
    assert_eq!(
        steps.iter().filter(|s| *s == "work").count(),
        3,
        "bounded by maxIterations"
    );
    let s = script(vec![("decide", vec![decide("stop")])]);
    assert_eq!(
        compare_text("t.json", &d.to_string(), json!({}), &s),
        ["work", "decide", "end"]
    );
}

#[test]
fn loop_control_mismatches_are_reported() {
    // A decision step before the end of the body, and one outside any loop.
    let d = doc(json!([
        {"id": "init", "title": "Init", "prompt": "Init.", "outputContract": {"contractRef": "wr.contracts.loop_control"}},
        {"id": "l", "type": "loop", "title": "L", "loop": {"type": "while", "maxIterations": 2},
         "body": [{"id": "decide", "title": "Decide", "prompt": "Decide.", "outputContract": {"contractRef": "wr.contracts.loop_control"}}, step("after-decision", "More.")]},
        {"id": "l2", "type": "loop", "title": "L2", "loop": {"type": "while", "conditionSource": {"kind": "artifact_contract", "contractRef": "wr.contracts.loop_control"}, "maxIterations": 2}, "body": [step("x", "X.")]},
    ]));
    let o = imp(&d);
    assert_eq!(o.report.status, Status::ConvertedWithNotes);
    has_note(
        &o,
        NoteKind::Differs,
        "steps[0].outputContract",
        "`wr.loop_control` outside a loop",
    );
    has_note(
        &o,
        NoteKind::Differs,
        "steps[1].body",
        "after `stop`, WorkRail skips the rest of the pass",
    );
    has_note(
        &o,
        NoteKind::Inconsistent,
        "steps[2].loop",
        "no step of its body produces one: WorkRail runs all 2 passes",
    );
    assert!(yaml(&o).contains("for: 2"));
    // A loop_control step in a loop driven by its count: WorkRail ignores the artifact.
    let d = doc(
        json!([{"id": "n", "type": "loop", "title": "N", "loop": {"type": "for", "count": 2, "maxIterations": 2},
        "body": [{"id": "d", "title": "D", "prompt": "D.", "outputContract": {"contractRef": "wr.contracts.loop_control"}}]}]),
    );
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Inconsistent,
        "steps[0].body[0].outputContract",
        "WorkRail ignores this `wr.loop_control` artifact",
    );
    assert!(!yaml(&o).contains("loop_control"));
    let s = script(vec![("d", vec![decide("stop")])]);
    assert_eq!(
        compare_text("t.json", &d.to_string(), json!({}), &s),
        ["d", "d"]
    );
}

#[test]
fn for_and_foreach_loops_keep_their_variables() {
    let d = doc(json!([
        step("plan", "Plan."),
        {"id": "each", "type": "loop", "title": "Each", "loop": {"type": "forEach", "items": "slices", "itemVar": "slice", "indexVar": "i", "maxIterations": 10},
         "body": [step("do", "Do {{slice.name}} ({{i}}) in pass {{currentIteration}}.")]},
        {"id": "retry", "type": "loop", "title": "Retry", "loop": {"type": "for", "count": "tries", "maxIterations": 5}, "body": [step("try", "Try {{currentIteration}} of {{tries}}.")]},
        {"id": "twice", "type": "loop", "title": "Twice", "loop": {"type": "for", "count": 2, "maxIterations": 5}, "body": [step("again", "Again.")]},
    ]));
    let s = script(vec![(
        "plan",
        vec![ctx(
            json!({"slices": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "tries": 2}),
        )],
    )]);
    let steps = compare_text("t.json", &d.to_string(), json!({}), &s);
    assert_eq!(steps.iter().filter(|s| *s == "do").count(), 3);
    assert_eq!(steps.iter().filter(|s| *s == "try").count(), 2);
    assert_eq!(steps.iter().filter(|s| *s == "again").count(), 2);
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Differs,
        "steps[2].loop.count",
        "`tries` is read when the loop starts",
    );
}

#[test]
fn parallel_steps_show_workrails_delegation_prompt() {
    let d = doc(json!([
        step("pick", "Pick."),
        {"id": "fan", "type": "parallel", "title": "Fan out", "parallelDelegations": [
            {"workflowId": "wr.routine-a", "runCondition": {"var": "picked", "contains": "a"}, "contextMapping": {"packet": "factPacket"}, "args": {"familyName": "alpha", "focus": "x"}},
            {"workflowId": "wr.routine-b", "runCondition": {"var": "picked", "contains": "b"}, "goal": "Check b"},
            {"workflowId": "wr.routine-c", "runCondition": {"var": "picked", "contains": "c"}}
        ]},
        step("synth", "Synthesize."),
    ]));
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Differs,
        "steps[1].parallelDelegations",
        "numbered in declaration order",
    );
    has_note(
        &o,
        NoteKind::Differs,
        "steps[1].parallelDelegations[0].contextMapping",
        "shown as ⟨unset⟩",
    );
    // Active delegations that are the first ones in declaration order render exactly.
    for picked in [json!(["a"]), json!(["a", "b"]), json!(["a", "b", "c"])] {
        let s = script(vec![(
            "pick",
            vec![ctx(json!({"picked": picked, "packet": "P1"}))],
        )]);
        compare_text("t.json", &d.to_string(), json!({}), &s);
    }
    // An unconditional parallel step is one prompt, exactly as WorkRail's.
    let d = doc(
        json!([{"id": "fan", "type": "parallel", "title": "Fan", "parallelDelegations": [{"workflowId": "wr.x"}, {"workflowId": "wr.y", "args": {"k": "v"}}]}]),
    );
    compare_text("t.json", &d.to_string(), json!({}), &script(vec![]));
    assert!(!yaml(&imp(&d)).contains("promptFragments"));
}

#[test]
fn template_calls_expand_routines_inline() {
    let routine = json!({"id": "wr.routine-tension-driven-design", "name": "R", "description": "A routine", "version": "1.0.0",
    "metaGuidance": ["Think in tensions."], "preconditions": ["ignored"],
    "steps": [
        {"id": "step-understand", "title": "Understand {deliverableName}", "prompt": "Understand the problem for {deliverableName} ({{goalContext}}).", "agentRole": "You are a designer."},
        {"id": "step-deliver", "title": "Deliver", "prompt": "Create `{deliverableName}`.", "requireConfirmation": true}
    ]});
    let caller = json!({"id": "routine-injection-example", "name": "X", "description": "d", "version": "1.0.0", "steps": [
        step("phase-0-gather", "Gather."),
        {"id": "phase-1-design", "title": "Phase 1", "templateCall": {"templateId": "wr.templates.routine.tension-driven-design", "args": {"deliverableName": "design-candidates.md"}}},
        step("phase-2-implement", "Implement.")
    ]});
    let o = imp_with(&caller, &[("routine.json", routine.clone())]);
    assert_eq!(
        o.report.status,
        Status::ConvertedWithNotes,
        "{:?}",
        o.report
    );
    let y = yaml(&o);
    for want in [
        "id: phase-1-design.step-understand",
        "title: Understand design-candidates.md",
        "Understand the problem for design-candidates.md ({{goalContext}}).",
        "- Think in tensions.",
        "## Agent Role Instructions",
        "id: phase-1-design.step-deliver",
        "kind: coordinator_eval",
    ] {
        assert!(y.contains(want), "should contain {want:?}:\n{y}");
    }
    has_note(
        &o,
        NoteKind::Inconsistent,
        "steps[1]",
        "ignores the call's title",
    );
    // The same document compared step by step with WorkRail's model, after expansion.
    // A missing argument, and the routine itself missing.
    let bad = json!({"id": "x", "name": "X", "description": "d", "version": "1.0.0", "steps": [
        {"id": "p", "title": "P", "templateCall": {"templateId": "wr.templates.routine.tension-driven-design", "args": {}}}]});
    fails(
        &imp_with(&bad, &[("routine.json", routine)]),
        "uses argument(s) `deliverableName` that the templateCall does not pass",
    );
    fails(&imp(&bad), "is not among the imported files");
}

#[test]
fn routine_injection_expands_when_the_routine_is_imported_too() {
    // The corpus example calls a routine the corpus does not have; given one, it converts.
    let text = std::fs::read_to_string(crate::corpus::path(
        "examples/routine-injection-example.json",
    ))
    .unwrap();
    let routine = json!({"id": "routine-tension-driven-design", "name": "Tension-driven design", "description": "Design from tensions.", "version": "1.0.0",
        "steps": [{"id": "step-discover", "title": "Discover tensions", "prompt": "List the tensions, then write {deliverableName}."}]});
    let out = import(
        &[Input::new("routine-injection-example.json", text)],
        &[Input::new("r.json", routine.to_string())],
    );
    assert_eq!(
        out[0].report.status,
        Status::ConvertedWithNotes,
        "{:?}",
        out[0].report
    );
    let y = &out[0].output.as_ref().unwrap().yaml;
    assert!(y.contains("id: phase-1-design.step-discover"), "{y}");
    assert!(y.contains("write design-candidates.md."), "{y}");
    // A workflow of the corpus calling a routine of the corpus.
    let ctx_routine =
        std::fs::read_to_string(crate::corpus::path("routines/context-gathering.json")).unwrap();
    let caller = json!({"id": "uses-gathering", "name": "U", "description": "d", "version": "1.0.0", "steps": [
        {"id": "gather", "templateCall": {"templateId": "wr.templates.routine.context-gathering", "args": {"deliverableName": "context.md"}}}]});
    let out = import(
        &[Input::new("u.json", caller.to_string())],
        &[Input::new("cg.json", ctx_routine)],
    );
    assert_eq!(
        out[0].report.status,
        Status::ConvertedWithNotes,
        "{:?}",
        out[0].report
    );
    assert!(
        out[0]
            .output
            .as_ref()
            .unwrap()
            .yaml
            .contains("id: gather.step-0-ideate-targets")
    );
}

#[test]
fn features_refs_bindings_and_blocks_compose_like_workrails_compiler() {
    // Raw text: `outputRequired` keeps the document's order (a `json!` value would sort it).
    let text = r#"{"id": "test", "name": "T", "description": "d", "version": "1.0.0",
        "features": ["wr.features.memory_context"],
        "extensionPoints": [{"slotId": "reviewer", "purpose": "who reviews", "default": "wr.routine-code-reviewer"}],
        "steps": [
            {"id": "b", "title": "B", "promptBlocks": {"goal": "Review with {{wr.bindings.reviewer}}.", "constraints": [[{"kind": "text", "text": "Be "}, {"kind": "ref", "refId": "wr.refs.memory_query"}]], "outputRequired": {"zeta": "z", "alpha": "a"}}},
            {"id": "raw", "title": "Raw", "prompt": "Raw prompts get no features."}
        ]}"#;
    let d: Value = serde_json::from_str(text).unwrap();
    let o = import(&[Input::new("t.json", text)], &[]).remove(0);
    let y = yaml(&o);
    assert!(
        y.contains("## Goal\n    Review with wr.routine-code-reviewer."),
        "{y}"
    );
    assert!(
        y.contains("- Be If Memory MCP tools are available (memory_briefing, memory_query):"),
        "{y}"
    );
    assert!(
        y.contains(
            "- If Memory MCP tools are available (memory_briefing, memory_store, memory_query):"
        ),
        "the feature's ref: {y}"
    );
    assert!(
        y.find("**zeta**").unwrap() < y.find("**alpha**").unwrap(),
        "outputRequired keeps document order: {y}"
    );
    has_note(
        &o,
        NoteKind::Mapped,
        "steps[0]",
        "bound to its default `wr.routine-code-reviewer`",
    );
    compare_text("t.json", text, json!({}), &script(vec![]));
    let _ = d;
    let bad = json!({"id": "test", "name": "T", "description": "d", "version": "1.0.0", "features": ["wr.features.telepathy"], "steps": [step("a", "A.")]});
    fails(&imp(&bad), "unknown feature `wr.features.telepathy`");
}

#[test]
fn braces_that_workrail_shows_literally_stay_literal() {
    let d = doc(json!([
        {"id": "a", "title": "A", "prompt": "Item {{i + 1}} of {{ n }}; {{wr.other}}; {{n}}; {{goal}}.", "guidance": ["Total: {{n}}"], "agentRole": "You count {{things}}."},
    ]));
    compare_text(
        "t.json",
        &d.to_string(),
        json!({"n": 3, "goal": "ours"}),
        &script(vec![]),
    );
}

#[test]
fn validation_criteria_are_stated_but_not_enforced() {
    let d = doc(
        json!([{"id": "a", "title": "A", "prompt": "Write it.", "validationCriteria": {"and": [
        {"type": "contains", "value": "DONE", "message": "m"}, {"type": "length", "min": 20, "max": 400, "message": "m"}]}}]),
    );
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Differs,
        "steps[0].validationCriteria",
        "worktrain does not check them",
    );
    assert!(yaml(&o).contains("**OUTPUT REQUIREMENTS:**\n    - Must contain: \"DONE\"\n    - Length: ≥20 chars, ≤400 chars"));
    compare_text("t.json", &d.to_string(), json!({}), &script(vec![]));
}

#[test]
fn gates_keep_their_kind_and_condition() {
    let d = doc(json!([
        {"id": "always", "title": "A", "prompt": "A.", "requireConfirmation": true},
        {"id": "human", "title": "H", "prompt": "H.", "requireConfirmation": {"kind": "human_approval", "condition": {"not": {"var": "verdict", "equals": "clean"}}}},
        {"id": "coord", "title": "C", "prompt": "C.", "requireConfirmation": {"kind": "coordinator_eval"}},
        {"id": "never", "title": "N", "prompt": "N.", "requireConfirmation": false},
    ]));
    let y = yaml(&imp(&d)).to_owned();
    assert!(y.contains("id: always\n  title: A\n  prompt: A.\n  requireConfirmation:\n    kind: coordinator_eval\n"), "{y}");
    assert!(y.contains("kind: human_approval\n    when:\n      not:\n        var: verdict\n        equals: clean\n        lenient: true"), "{y}");
    for verdict in ["Clean", "minor"] {
        compare_text(
            "t.json",
            &d.to_string(),
            json!({"verdict": verdict}),
            &script(vec![]),
        );
    }
}

#[test]
fn assessments_merge_and_consequences_block_with_their_guidance() {
    let d = json!({"id": "test", "name": "T", "description": "d", "version": "1.0.0",
        "assessments": [
            {"id": "gate-a", "purpose": "A", "dimensions": [{"id": "confidence", "purpose": "pa", "levels": ["low", "high"]}]},
            {"id": "gate-b", "purpose": "B", "dimensions": [{"id": "confidence", "purpose": "pb", "levels": ["low", "high"]}, {"id": "extra", "purpose": "pe", "levels": ["no", "yes"], "required": false}]}
        ],
        "steps": [{"id": "s", "title": "S", "prompt": "Assess.", "assessmentRefs": ["gate-a", "gate-b"],
            "assessmentConsequences": [{"when": {"anyEqualsLevel": "low", "forAssessment": "gate-b"}, "effect": {"kind": "require_followup", "guidance": "Fix B."}}]}]});
    let o = imp(&d);
    let y = yaml(&o);
    assert!(
        y.contains("gate-a_confidence:\n        levels:\n        - low\n        - high\n"),
        "{y}"
    );
    assert!(y.contains("gate-b_confidence:\n        levels:\n        - low\n        - high\n        blockOn:\n        - low\n        blockGuidance: Fix B."), "{y}");
    assert!(
        !y.contains("extra:\n        levels:\n        - 'no'\n        - 'yes'\n        blockOn"),
        "{y}"
    );
    has_note(
        &o,
        NoteKind::Mapped,
        "steps[0].assessmentRefs",
        "`gate-a`'s is named `gate-a_confidence`",
    );
    has_note(
        &o,
        NoteKind::Differs,
        "steps[0].assessmentRefs",
        "dimension `extra` is optional in WorkRail",
    );
    let bad = json!({"id": "test", "name": "T", "description": "d", "version": "1.0.0", "steps": [{"id": "s", "title": "S", "prompt": "p", "assessmentRefs": ["nope"]}]});
    fails(
        &imp(&bad),
        "`nope` is not declared in the workflow's `assessments`",
    );
}

/// A document with every field of WorkRail's workflow schema: each one is converted,
/// or named in a note — none disappears silently.
#[test]
fn every_workrail_field_is_converted_or_reported() {
    let d = json!({
        "id": "everything", "name": "Everything", "description": "All fields.", "version": "1.0.0",
        "about": "About it.", "examples": ["An example goal here"], "modelTier": "heavy",
        "preconditions": ["A precondition"], "clarificationPrompts": ["A question?"], "metaGuidance": ["A rule."],
        "functionDefinitions": [{"name": "f", "definition": "does f"}],
        "recommendedPreferences": {"recommendedAutonomy": "guided"}, "features": ["wr.features.memory_context"],
        "assessments": [{"id": "g", "purpose": "p", "dimensions": [{"id": "d", "purpose": "p", "levels": ["low", "high"]}]}],
        "extensionPoints": [{"slotId": "slot", "purpose": "p", "default": "wr.x"}],
        "references": [{"id": "ref", "title": "Spec", "source": "spec.md", "purpose": "the spec", "authoritative": true, "resolveFrom": "package"}],
        "validatedAgainstSpecVersion": 3, "metricsProfile": "coding",
        "steps": [
            {"id": "s1", "title": "S1", "prompt": "Use {{wr.bindings.slot}}.", "agentRole": "A role here.", "modelTier": "mid", "guidance": ["g"],
             "askForFiles": true, "hasValidation": true, "requireConfirmation": true, "runCondition": {"var": "x", "exists": 1},
             "validationCriteria": [{"type": "contains", "value": "x", "message": "m"}],
             "outputContract": {"contractRef": "wr.contracts.review_verdict", "required": false},
             "notesOptional": true, "functionDefinitions": [], "functionCalls": [], "functionReferences": ["f()"],
             "promptFragments": [{"id": "f1", "text": "Always."}, {"id": "f2", "when": {"var": "x", "equals": 1}, "text": "When x."}],
             "audit": {"prompt": "audit"}, "verification": {"command": "make"}},
            {"id": "s2", "title": "S2", "promptBlocks": {"goal": "Assess."}, "assessmentRefs": ["g"],
             "assessmentConsequences": [{"when": {"anyEqualsLevel": "low"}, "effect": {"kind": "require_followup", "guidance": "Again."}}]},
            {"id": "lp", "type": "loop", "title": "Loop", "loop": {"type": "for", "count": 1, "maxIterations": 1, "iterationVar": "n"},
             "requireConfirmation": true, "runCondition": {"var": "y", "equals": 1}, "notesOptional": true, "functionDefinitions": [],
             "body": [{"id": "par", "type": "parallel", "title": "Par", "requireConfirmation": true, "notesOptional": true,
                       "parallelDelegations": [{"workflowId": "wr.child", "goal": "Go", "runCondition": {"var": "z", "equals": 1},
                                                "contextMapping": {"a": "b"}, "args": {"k": "v"}, "modelTier": "lightweight", "allowedTools": ["read"]}],
                       "synthesis": {"prompt": "s"}}]},
            {"id": "tc", "title": "TC", "templateCall": {"templateId": "wr.templates.routine.helper", "args": {"what": "it"}}}
        ]
    });
    let helper = json!({"id": "routine-helper", "name": "H", "description": "h", "version": "1.0.0", "steps": [step("h1", "Help with {what}.")]});
    let o = imp_with(&d, &[("helper.json", helper)]);
    assert_eq!(
        o.report.status,
        Status::ConvertedWithNotes,
        "{:#?}",
        o.report
    );
    let y = yaml(&o);
    // Converted: these reach the workflow.
    for converted in [
        "- A rule.",
        "Reference `ref` — Spec: spec.md, authoritative (the spec)",
        "Use wr.x.",
        "## Agent Role Instructions",
        "## Step Guidance",
        "kind: coordinator_eval",
        "runCondition:",
        "Artifact contract: wr.contracts.review_verdict",
        "notesOptional: true",
        "text: Always.",
        "text: When x.",
        "contract: assessment",
        "blockGuidance: Again.",
        "If Memory MCP tools",
        "for: 1",
        "Parallel Subagent Spawning Phase",
        "`b`: `{{a}}`",
        "`k`: `v`",
        "id: tc.h1",
        "Help with it.",
        "# About:",
        "#   About it.",
        "#   - An example goal here",
        "#   - A precondition",
        "#   - A question?",
        "# Model tier: heavy",
        "# Recommended preferences:",
        "# Function definitions:",
        "# Validated against WorkRail authoring spec version 3",
    ] {
        assert!(
            y.contains(converted),
            "{converted:?} should be in the converted file:\n{y}"
        );
    }
    // Reported: every field that is not converted one-to-one has a note.
    for at in [
        "about",
        "examples",
        "preconditions",
        "clarificationPrompts",
        "recommendedPreferences",
        "modelTier",
        "functionDefinitions",
        "metricsProfile",
        "metaGuidance",
        "references",
        "features[0]",
        "steps[0].modelTier",
        "steps[0]",
        "steps[0].functionDefinitions",
        "steps[0].functionCalls",
        "steps[0].functionReferences",
        "steps[0].audit",
        "steps[0].verification",
        "steps[0].validationCriteria",
        "steps[0].outputContract",
        "steps[0].requireConfirmation",
        "steps[1].assessmentRefs",
        "steps[1].assessmentConsequences[0]",
        "steps[2].requireConfirmation",
        "steps[2].notesOptional",
        "steps[2].functionDefinitions",
        "steps[2].loop.iterationVar",
        "steps[2].body[0].requireConfirmation",
        "steps[2].body[0].synthesis",
        "steps[2].body[0].parallelDelegations",
        "steps[2].body[0].parallelDelegations[0].modelTier",
        "steps[2].body[0].parallelDelegations[0].allowedTools",
        "steps[2].body[0].parallelDelegations[0].contextMapping",
        "steps[3].templateCall",
    ] {
        assert!(
            o.report.notes.iter().any(|n| n.at == at),
            "no note at {at}: {:#?}",
            o.report.notes
        );
    }
    // The invalid `exists` (not a WorkRail operator) is reported as WorkRail evaluates it.
    has_note(
        &o,
        NoteKind::Inconsistent,
        "steps[0].runCondition",
        "WorkRail ignores `exists` here",
    );
}

#[test]
fn unknown_fields_are_reported_and_invalid_documents_fail_with_reasons() {
    let d = json!({"id": "test", "name": "T", "description": "d", "version": "1.0.0", "tips": ["x"], "tags": ["a"],
        "steps": [{"id": "a", "title": "A", "prompt": "p", "expectedOutput": "y"}]});
    let o = imp(&d);
    has_note(
        &o,
        NoteKind::Inconsistent,
        "tips",
        "not a field of WorkRail's workflow schema",
    );
    has_note(
        &o,
        NoteKind::Inconsistent,
        "steps[0].expectedOutput",
        "not a field of WorkRail's step schema",
    );
    assert!(yaml(&o).contains("tags:\n- a\n"));

    let broken = import(
        &[Input::new("b.json", "{\"id\": \"x\",\n \"steps\": [}")],
        &[],
    )
    .remove(0);
    fails(&broken, "not valid JSON at line 2");
    let wrong = import(&[Input::new("w.json", r#"{"id": "x", "name": "X", "description": "d", "version": "1", "steps": [{"id": "a", "title": 5, "prompt": "p"}]}"#)], &[]).remove(0);
    fails(
        &wrong,
        "at `steps[0].title`: invalid type: integer `5`, expected a string",
    );
    fails(
        &imp(&doc(
            json!([{"id": "a", "title": "A", "prompt": "p", "promptBlocks": {"goal": "g"}}]),
        )),
        "declares both prompt and promptBlocks",
    );
    fails(
        &imp(&doc(json!([{"id": "a", "title": "A"}]))),
        "has neither prompt nor promptBlocks",
    );
    fails(
        &imp(&doc(json!([step("a", "x"), step("a", "y")]))),
        "step id `a` is used twice",
    );
    fails(
        &imp(&doc(
            json!([{"id": "l", "type": "loop", "title": "L", "loop": {"type": "while", "maxIterations": 2}, "body": "missing"}]),
        )),
        "references missing step `missing`",
    );
    fails(
        &imp(&doc(
            json!([{"id": "a", "title": "A", "prompt": "p", "runCondition": {"var": "x", "matches": "^a"}}]),
        )),
        "the operator `matches` has no worktrain equivalent",
    );
    fails(
        &imp(&doc(
            json!([{"id": "l", "type": "loop", "title": "L", "loop": {"type": "while", "maxIterations": 2000}, "body": [step("a", "p")]}]),
        )),
        "is not an integer from 1 to 1000",
    );
    let skipped = import(
        &[Input::new("n.json", r#"{"schemaVersion": 2, "steps": []}"#)],
        &[],
    )
    .remove(0);
    assert_eq!(skipped.report.status, Status::Skipped);
}

#[test]
fn writing_never_overwrites_a_file_the_importer_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let o = imp(&doc(json!([step("a", "p")])));
    let out = o.output.unwrap();
    let file = dir.path().join("test.yaml");
    assert_eq!(
        write(dir.path(), &out).unwrap(),
        Written::Wrote(file.clone())
    );
    // Its own file is replaced on a second import.
    assert_eq!(
        write(dir.path(), &out).unwrap(),
        Written::Wrote(file.clone())
    );
    std::fs::write(&file, "# my own workflow\nschemaVersion: 2\n").unwrap();
    assert_eq!(
        write(dir.path(), &out).unwrap(),
        Written::Refused(file.clone())
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# my own workflow\nschemaVersion: 2\n"
    );
}

#[test]
fn duplicate_workflow_ids_across_files_fail_the_second() {
    let a = doc(json!([step("a", "p")]));
    let out = import(
        &[
            Input::new("one.json", a.to_string()),
            Input::new("two.json", a.to_string()),
        ],
        &[],
    );
    assert_eq!(out[0].report.status, Status::Converted);
    fails(&out[1], "workflow id `test` is also the id of one.json");
}

#[test]
fn workflows_without_notes_are_converted_one_to_one() {
    let o = imp(&doc(json!([step("a", "Do {{thing}}.")])));
    assert_eq!(o.report.status, Status::Converted, "{:?}", o.report.notes);
    assert!(
        yaml(&o).ends_with("steps:\n- id: a\n  title: Step a\n  prompt: Do {{thing}}.\n"),
        "{}",
        yaml(&o)
    );
}
