//! Running a WorkRail document both ways: on the WorkRail model (`oracle.rs`) and,
//! converted, on worktrain's real state machine (the machine and projection fold the
//! engine uses), with the same scripted answers; and comparing what the agent is shown.
//!
//! What is compared, per step: the step id, the gate, and the prompt. WorkRail's prompt
//! minus the sections that describe WorkRail's own protocol (the loop banner, the notes
//! reminder, the `continue_workflow` artifact formats, the metrics footer — worktrain's
//! step response carries its own: `step.loop`, `notes_optional`, the contract example)
//! must equal worktrain's prompt exactly. For a contract worktrain cannot check, the
//! importer's own description replaces WorkRail's protocol section.

use serde_json::{Map, Value, json};
use worktrain_core::compile::{NoRoutines, Pinned, compile_with};
use worktrain_core::context::Limits;
use worktrain_core::event::{NewEvent, SessionMode, StoredEvent};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::load::parse_workflow;
use worktrain_core::machine::{AdvanceDecision, Machine, StartParams, Submission};
use worktrain_core::projection::{SessionStatus, SessionSummary, apply};
use worktrain_core::response::StepResponse;
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};
use worktrain_workrail::compose::contract_section;
use worktrain_workrail::source::WrWorkflow;
use worktrain_workrail::{Input, import};

use crate::corpus;
use crate::oracle::{Rendered, Script, WorkRail};

/// A worktrain session on the machine, folded in memory.
pub(crate) struct Session<'p> {
    pinned: &'p Pinned,
    keyring: Keyring,
    limits: Limits,
    id: SessionId,
    summary: Option<SessionSummary>,
}

impl<'p> Session<'p> {
    pub(crate) fn start(pinned: &'p Pinned, context: Map<String, Value>) -> (Self, StepResponse) {
        let mut s = Session {
            pinned,
            keyring: Keyring::new([9; 32], "k".into()),
            limits: Limits::default(),
            id: SessionId::from_parts(7, 7),
            summary: None,
        };
        let plan = s
            .machine()
            .start(
                s.id,
                StartParams {
                    goal: "g".into(),
                    context,
                    source: "test".into(),
                    mode: SessionMode::Interactive,
                    ..StartParams::default()
                },
            )
            .unwrap_or_else(|e| panic!("start: {}", e.message));
        s.fold(&plan.events);
        (s, plan.response)
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
                session_id: self.id,
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
        }
    }

    pub(crate) fn submit(&mut self, sub: Submission) -> StepResponse {
        let summary = self.summary.clone().expect("started");
        let cur = summary.current.clone().expect("a current step");
        let claims = TokenClaims {
            kind: TokenKind::Advance,
            session: self.id,
            node: cur.node,
            attempt: cur.attempt,
        };
        match self
            .machine()
            .advance(&summary, claims, &sub, None)
            .unwrap_or_else(|e| panic!("advance: {}", e.message))
        {
            AdvanceDecision::Apply(plan) => {
                self.fold(&plan.events);
                plan.response
            }
            AdvanceDecision::Replay { .. } => panic!("unexpected replay"),
        }
    }

    pub(crate) fn complete(&self) -> bool {
        self.summary
            .as_ref()
            .is_some_and(|s| s.status == SessionStatus::Complete)
    }
}

/// One step as worktrain shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shown {
    pub step: String,
    pub prompt: String,
    pub gate: bool,
}

/// Convert `text` and run it on worktrain with `script`.
pub(crate) fn run_worktrain(
    file: &str,
    text: &str,
    context: &Map<String, Value>,
    script: &Script,
) -> (Vec<Shown>, Pinned) {
    let out = import(&[Input::new(file, text)], &[]);
    let yaml = &out[0]
        .output
        .as_ref()
        .unwrap_or_else(|| panic!("{file}: {:?}", out[0].report))
        .yaml;
    let pinned = compile_with(
        &parse_workflow("x.yaml", yaml).unwrap(),
        "x.yaml",
        &NoRoutines,
    )
    .unwrap();
    let mut shown = Vec::new();
    {
        let (mut s, mut r) = Session::start(&pinned, context.clone());
        let mut used: std::collections::BTreeMap<String, usize> = Default::default();
        for _ in 0..500 {
            let Some(step) = r.step.clone() else { break };
            shown.push(Shown {
                step: step.id.to_string(),
                prompt: step.prompt.clone(),
                gate: step.requires_confirmation,
            });
            let id = step.id.to_string();
            let n = used.entry(id.clone()).or_default();
            let answers = script.get(&id).cloned().unwrap_or_default();
            let ans = answers
                .get(*n)
                .or_else(|| answers.last())
                .cloned()
                .unwrap_or_default();
            *n += 1;
            let mut artifacts = Vec::new();
            if let Some(d) = ans.decision {
                artifacts.push(json!({"kind": "loop_control", "decision": d}));
            }
            if let Some(c) = step
                .output_contract
                .as_ref()
                .filter(|c| c.contract == worktrain_core::contract::ContractName::Assessment)
            {
                // Every declared dimension: the scripted level, else `high` (the corpus
                // declares low/high and blocks on low).
                let mut dims = c.example["dimensions"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in dims.iter_mut() {
                    *v = ans
                        .assessment
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| json!("high"));
                }
                artifacts.push(json!({"kind": "assessment", "dimensions": dims}));
            }
            r = s.submit(Submission {
                notes: Some("done".into()),
                artifacts,
                context: ans.context,
            });
            assert!(r.blockers.is_empty(), "step {id} blocked: {:?}", r.blockers);
        }
        assert!(s.complete(), "the converted workflow did not complete");
    }
    (shown, pinned)
}

/// What worktrain should show for a step WorkRail rendered as `w`.
pub(crate) fn expected(w: &Rendered) -> String {
    let mut out = w.base.clone();
    out.push_str(&w.requirements);
    if let Some((c, required)) = &w.contract
        && c != "wr.contracts.loop_control"
    {
        out.push_str(&contract_section(c, *required));
    }
    if !w.assessment_lines.is_empty() {
        out.push_str("\n\n**ASSESSMENT REQUIREMENTS (System):**\n");
        out.push_str(
            &w.assessment_lines
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if !w.fragments.is_empty() {
        out.push_str("\n\n");
        out.push_str(&w.fragments);
    }
    out
}

/// Compare a corpus file on both sides; returns the step ids WorkRail entered.
pub(crate) fn compare(file: &str, context: Value, script: &Script) -> Vec<String> {
    let text = std::fs::read_to_string(corpus::path(file)).unwrap();
    compare_text(file, &text, context, script)
}

/// Compare a WorkRail document on both sides; returns the step ids WorkRail entered.
pub(crate) fn compare_text(file: &str, text: &str, context: Value, script: &Script) -> Vec<String> {
    let wf: WrWorkflow = serde_json::from_str(text).unwrap();
    let context = context.as_object().cloned().unwrap();
    let workrail = WorkRail::compile(wf).run(context.clone(), script);
    let (worktrain, _) = run_worktrain(file, text, &context, script);
    let ids = |v: &[String]| v.join(" → ");
    let w_ids: Vec<String> = workrail.iter().map(|r| r.step.clone()).collect();
    let t_ids: Vec<String> = worktrain.iter().map(|s| s.step.clone()).collect();
    assert_eq!(
        ids(&t_ids),
        ids(&w_ids),
        "{file}: the sequences of steps differ"
    );
    for (w, t) in workrail.iter().zip(&worktrain) {
        let want = expected(w);
        if t.prompt != want {
            let at = t
                .prompt
                .chars()
                .zip(want.chars())
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(t.prompt.len()));
            let from = at.saturating_sub(80);
            panic!(
                "{file}: step `{}` prompt differs at char {at}:\n--- worktrain ---\n{}\n--- WorkRail (expected) ---\n{}",
                t.step,
                t.prompt.chars().skip(from).take(240).collect::<String>(),
                want.chars().skip(from).take(240).collect::<String>()
            );
        }
        assert_eq!(t.gate, w.gate, "{file}: step `{}` gate", t.step);
    }
    w_ids
}
