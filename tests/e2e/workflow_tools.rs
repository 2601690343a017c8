//! `worktrain workflow graph|lint|simulate`: the tooling that shows, checks and walks a
//! workflow without an agent.

use crate::support::{Env, exit};

/// Every routing construct once: assessment routing, a guarded gated step, a decision
/// loop, a jump, a parallel step.
const TOOLS_WORKFLOW: &str = "\
schemaVersion: 2
id: tools-demo
name: Tools demo
description: every construct once
version: '1'
inputs: [size]
steps:
  - id: classify
    title: Classify
    prompt: classify {{context.size}}
    outputContract:
      contract: assessment
      dimensions:
        risk: {levels: [low, high]}
  - id: careful
    title: Be careful
    prompt: careful
    runCondition: {var: assessment.risk, equals: high}
    requireConfirmation: true
  - id: verify
    title: Verify
    loop: {maxIterations: 3}
    steps:
      - id: check
        title: Check
        prompt: check
        contextOutputs: [green]
      - id: decide
        title: Decide
        prompt: decide
        outputContract: {contract: loop_control}
  - id: fix
    title: Fix
    prompt: fix
    jumpIf: {condition: {var: green, equals: false}, target: verify, maxJumps: 1}
  - id: review
    title: Review
    prompt: review
    parallel:
      children:
        - {workflow: quick-task, goal: 'double-check {{goal}}'}
";

#[test]
fn graph_renders_text_dot_and_svg() {
    let env = Env::new();
    let file = env.write("tools.yaml", TOOLS_WORKFLOW);
    let file = file.to_str().unwrap();

    let text = env.run(&["workflow", "graph", file]);
    text.code(exit::OK);
    for needle in [
        "tools-demo — Tools demo (v1)",
        "[2] careful — Be careful",
        "if assessment.risk equals \"high\" / else skip",
        "gate: human_approval",
        "loop verify — Verify",
        "decision step: decide",
        "jumpIf green equals false → verify (max 1 jumps)",
        "⇉ quick-task: double-check {{goal}}",
    ] {
        assert!(text.stdout.contains(needle), "missing {needle:?}: {text:?}");
    }

    let dot = env.run(&["workflow", "graph", file, "--format", "dot"]);
    dot.code(exit::OK);
    assert!(
        dot.stdout.starts_with("digraph \"tools-demo\" {"),
        "{dot:?}"
    );
    assert!(
        dot.stdout.contains("subgraph \"cluster_verify\""),
        "{dot:?}"
    );
    assert!(
        dot.stdout.contains("\"guard:careful\" -> \"step:careful\""),
        "{dot:?}"
    );
    assert!(
        dot.stdout.contains("\"step:review\" -> \"child:review:1\""),
        "{dot:?}"
    );

    let svg = env.run(&["workflow", "graph", file, "--format", "svg"]);
    svg.code(exit::OK);
    assert!(
        svg.stdout
            .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg:?}"
    );
    assert!(svg.stdout.trim_end().ends_with("</svg>"), "{svg:?}");

    // --output writes exactly what stdout would show.
    let out = env.dir().join("graph.svg");
    env.run(&[
        "workflow",
        "graph",
        file,
        "--format",
        "svg",
        "--output",
        out.to_str().unwrap(),
    ])
    .code(exit::OK);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), svg.stdout);

    // JSON mode wraps the rendering.
    let j = env.ok_json(&["workflow", "graph", "quick-task", "--format", "dot"]);
    assert_eq!(j["workflow"], "quick-task", "{j}");
    assert_eq!(j["format"], "dot", "{j}");
    assert!(
        j["graph"]
            .as_str()
            .unwrap()
            .starts_with("digraph \"quick-task\""),
        "{j}"
    );

    // Bad format is a usage error; an unknown workflow is not found.
    env.run(&["workflow", "graph", "quick-task", "--format", "png"])
        .code(2);
    env.run(&["workflow", "graph", "no-such-workflow"])
        .code(exit::NOT_FOUND);
}

#[test]
fn lint_passes_the_bundled_library_and_reports_problems_with_exit_codes() {
    let env = Env::new();
    let ids = [
        "quick-task",
        "coding-task",
        "bug-investigation",
        "mr-review",
        "workflow-improvement",
    ];
    let mut args = vec!["workflow", "lint", "--deny-warnings"];
    args.extend(ids);
    let clean = env.run(&args);
    clean.code(exit::OK);
    for id in ids {
        assert!(
            clean.stdout.lines().any(|l| l == format!("ok    {id}")),
            "{clean:?}"
        );
    }

    // A load error is a finding with its rule (unknown contract).
    let broken = env.write(
        "broken.yaml",
        TOOLS_WORKFLOW.replace("contract: loop_control", "contract: loop_kontrol"),
    );
    let r = env.run_json(&["workflow", "lint", broken.to_str().unwrap()]);
    r.code(exit::INVALID);
    let j = r.json();
    let f = &j["results"][0]["findings"][0];
    assert_eq!(f["code"], "invalid-workflow", "{j}");
    assert_eq!(f["severity"], "error", "{j}");
    assert_eq!(f["rule"], "value", "{j}");
    assert!(
        f["message"].as_str().unwrap().contains("loop_kontrol"),
        "{j}"
    );
    assert!(
        f["hint"].as_str().unwrap().contains("review_verdict"),
        "{j}"
    );

    // Warnings only: exit 0, unless --deny-warnings.
    let warn = env.write(
        "warn.yaml",
        TOOLS_WORKFLOW.replace("prompt: fix\n", "prompt: fix {{context.ticket}}\n"),
    );
    let warn = warn.to_str().unwrap();
    let r = env.run(&["workflow", "lint", warn]);
    r.code(exit::OK);
    assert!(
        r.stdout.contains("warning[unset-context-key] fix (prompt)"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("hint: add `ticket` to the workflow's `inputs`"),
        "{r:?}"
    );
    env.run(&["workflow", "lint", "--deny-warnings", warn])
        .code(exit::INVALID);

    // A human gate in an unattended workflow is an error; an unreachable step a warning.
    let unattended = env.write(
        "unattended.yaml",
        TOOLS_WORKFLOW
            .replace("inputs: [size]\n", "inputs: [size]\nunattended: true\n")
            .replace("equals: high}", "equals: higher}"),
    );
    let r = env.run_json(&["workflow", "lint", unattended.to_str().unwrap()]);
    r.code(exit::INVALID);
    let j = r.json();
    let codes: Vec<&str> = j["results"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"gate-in-unattended"), "{j}");
    assert!(codes.contains(&"unknown-level"), "{j}");
    assert!(codes.contains(&"unreachable-step"), "{j}");
    assert_eq!(j["errors"], 1, "{j}");
    assert_eq!(j["clean"], false, "{j}");

    // Unknown child workflows are reported (the CLI knows the catalog).
    let orphan = env.write(
        "orphan.yaml",
        TOOLS_WORKFLOW.replace("workflow: quick-task", "workflow: nowhere"),
    );
    let r = env.run(&["workflow", "lint", orphan.to_str().unwrap()]);
    r.code(exit::OK);
    assert!(
        r.stdout.contains("warning[unknown-child-workflow] review"),
        "{r:?}"
    );
}

#[test]
fn simulate_prints_the_path_and_explains_blocks() {
    let env = Env::new();
    let file = env.write("tools.yaml", TOOLS_WORKFLOW);
    let file = file.to_str().unwrap();

    // `check` must set `green`: without it the walk blocks and says what to add.
    let r = env.run(&["workflow", "simulate", file]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("step `check` was blocked"), "{r:?}");
    assert!(r.stderr.contains("--at check:green=VALUE"), "{r:?}");

    // Low risk skips `careful`; one pass; no jump.
    let r = env.run(&["workflow", "simulate", file, "--at", "check:green=true"]);
    r.code(exit::OK);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let (last, lines) = lines.split_last().unwrap();
    assert!(last.starts_with("complete: 5 step(s) entered, "), "{r:?}");
    assert_eq!(
        lines,
        [
            "tools-demo — simulated path",
            "  → classify — Classify",
            "  · skip careful (not: assessment.risk equals \"high\")",
            "  ↻ loop verify: pass 1",
            "    → check — Check",
            "    → decide — Decide",
            "  ⤴ loop verify: exit after 1 pass(es) (decision)",
            "  → fix — Fix",
            "  → review — Review",
        ],
        "{r:?}"
    );

    // High risk (artifact inline), two passes, a failed check → one jump back.
    let art = env.write(
        "risk.json",
        r#"{"kind": "assessment", "dimensions": {"risk": "high"}}"#,
    );
    let r = env.run_json(&[
        "workflow",
        "simulate",
        file,
        "--artifact",
        &format!("classify={}", art.display()),
        "--decide",
        "verify=continue,stop",
        "--at",
        "check:green=false",
    ]);
    r.code(exit::OK);
    let trace = r.json();
    assert_eq!(trace["completed"], true, "{trace}");
    let steps: Vec<&str> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "classify", "careful", "check", "decide", "check", "decide", "fix", "check", "decide",
            "fix", "review"
        ],
        "{trace}"
    );
    let path = trace["path"].as_array().unwrap();
    assert!(
        path.iter()
            .any(|p| p["event"] == "jump" && p["to"] == "verify"),
        "{trace}"
    );
    assert!(
        path.iter().any(|p| p["event"] == "jump_exhausted"),
        "{trace}"
    );
    assert!(
        path.iter()
            .any(|p| p["event"] == "enter" && p["step"] == "careful" && p["gate"] == true),
        "{trace}"
    );
    assert_eq!(trace["context"]["assessment"]["risk"], "high", "{trace}");

    // Inline artifact, --context, and the node limit (exit 1).
    let r = env.run(&[
        "workflow",
        "simulate",
        file,
        "--context",
        "size=big",
        "--artifact",
        r#"classify={"kind": "assessment", "dimensions": {"risk": "high"}}"#,
        "--at",
        "check:green=true",
        "--max-nodes",
        "2",
    ]);
    r.code(exit::FAILURE);
    assert!(r.stderr.contains("stopped after 2 step entries"), "{r:?}");

    // Mistyped names are refused with the known ones.
    let r = env.run(&["workflow", "simulate", file, "--decide", "verfy=stop"]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("loops: verify"), "{r:?}");
    let r = env.run(&["workflow", "simulate", file, "--at", "chek:green=true"]);
    r.code(exit::INVALID);
    assert!(
        r.stderr
            .contains("steps: classify, careful, check, decide, fix, review"),
        "{r:?}"
    );
    env.run(&["workflow", "simulate", file, "--decide", "verify=maybe"])
        .code(exit::INVALID);

    // Bundled workflows by id.
    let r = env.run(&["workflow", "simulate", "quick-task"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("  → do-it — "), "{r:?}");
}
