//! The simulator walks loops, decisions and jumps with the real state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use worktrain_core::compile::compile;
use worktrain_core::cursor::LoopDecision;
use worktrain_core::event::LoopExitReason;
use worktrain_core::load::parse_workflow;
use worktrain_workflow_tools::simulate::{Script, TraceItem, simulate};

const WF: &str = r#"
schemaVersion: 2
id: sim
name: Sim
description: d
version: "1"
steps:
  - id: plan
    title: Plan
    prompt: plan
  - id: verify
    loop: {maxIterations: 3}
    steps:
      - id: check
        title: Check
        prompt: check
        outputContract: {contract: loop_control}
  - id: fix
    title: Fix
    prompt: fix
    jumpIf: {condition: {var: again, equals: true}, target: plan, maxJumps: 1}
"#;

#[test]
fn decisions_and_jumps_follow_the_script() {
    let pinned = compile(&parse_workflow("sim.yaml", WF).unwrap()).unwrap();
    let mut script = Script::default();
    script.decisions.insert(
        "verify".into(),
        vec![LoopDecision::Continue, LoopDecision::Stop],
    );
    script.at.insert(
        "fix".into(),
        serde_json::json!({"again": true})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let trace = simulate(&pinned, &script).unwrap();
    assert!(trace.completed);
    // plan, check ×2 (continue, stop), fix, jump → plan, check (continue then the last
    // decision `stop` repeats), fix, jump exhausted.
    assert_eq!(
        trace.steps,
        ["plan", "check", "check", "fix", "plan", "check", "fix"]
    );
    assert!(trace.path.contains(&TraceItem::Jump {
        from: "fix".into(),
        to: "plan".into(),
        count: 1
    }));
    assert!(
        trace
            .path
            .contains(&TraceItem::JumpExhausted { step: "fix".into() })
    );
    assert!(trace.path.contains(&TraceItem::Exit {
        loop_: "verify".into(),
        passes: 2,
        reason: LoopExitReason::Decision
    }));
    assert!(
        trace.steps.len() as u64 <= pinned.workflow.node_bound,
        "bound {}",
        pinned.workflow.node_bound
    );
}

#[test]
fn max_iterations_exits_normally_and_is_recorded() {
    let pinned = compile(&parse_workflow("sim.yaml", WF).unwrap()).unwrap();
    let mut script = Script::default();
    script
        .decisions
        .insert("verify".into(), vec![LoopDecision::Continue]);
    let trace = simulate(&pinned, &script).unwrap();
    assert!(trace.path.contains(&TraceItem::Exit {
        loop_: "verify".into(),
        passes: 3,
        reason: LoopExitReason::MaxIterations
    }));
    assert_eq!(trace.steps, ["plan", "check", "check", "check", "fix"]);
}

struct OneRoutine(&'static str);

impl worktrain_core::compile::RoutineResolver for OneRoutine {
    fn resolve(
        &self,
        _reference: &str,
        _from: &str,
    ) -> Result<worktrain_core::compile::RoutineSource, String> {
        Ok(worktrain_core::compile::RoutineSource {
            location: "routines/poll.yaml".into(),
            text: self.0.into(),
        })
    }
}

#[test]
fn a_routine_reads_its_own_loop_counter_after_inclusion() {
    const ROUTINE: &str = r#"
schemaVersion: 2
routine: poll
description: poll until done
steps:
  - id: poll
    loop: {for: 3, maxIterations: 3}
    steps:
      - id: look
        title: Look
        prompt: look
      - id: escalate
        title: Escalate
        prompt: only on the last pass
        runCondition: {var: worktrain.loops.poll.pass, gte: 3}
"#;
    const WF: &str = r#"
schemaVersion: 2
id: uses-poll
name: Uses poll
description: d
version: "1"
steps:
  - id: check
    include: poll
"#;
    let def = parse_workflow("w.yaml", WF).unwrap();
    let pinned =
        worktrain_core::compile::compile_with(&def, "w.yaml", &OneRoutine(ROUTINE)).unwrap();
    let trace = simulate(&pinned, &Script::default()).unwrap();
    assert_eq!(
        trace.steps,
        ["check.look", "check.look", "check.look", "check.escalate"]
    );
}
