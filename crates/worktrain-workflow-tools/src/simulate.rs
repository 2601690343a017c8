//! Walk a compiled workflow without an agent: the real state machine and projection
//! fold run in memory, fed with scripted outputs. Used by `worktrain workflow simulate`
//! and by tests that cover every routing path of the bundled workflows.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::{Map, Value, json};

use worktrain_core::compile::Pinned;
use worktrain_core::context::Limits;
use worktrain_core::contract::ContractName;
use worktrain_core::cursor::LoopDecision;
use worktrain_core::error::ApiError;
use worktrain_core::event::{EventBody, LoopExitReason, NewEvent, SessionMode, StoredEvent};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::machine::{AdvanceDecision, Machine, Plan, StartParams, Submission};
use worktrain_core::projection::{SessionSummary, apply};
use worktrain_core::token::{Keyring, TokenClaims};

/// Scripted agent behaviour.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Context the simulated session starts with (the start inputs).
    pub context: Map<String, Value>,
    /// Context delta submitted each time a step completes, by step id.
    pub at: BTreeMap<String, Map<String, Value>>,
    /// Artifact submitted for a step (overrides the default one), by step id.
    pub artifacts: BTreeMap<String, Value>,
    /// Loop decisions, by loop id, consumed in order; the last one repeats. Loops
    /// without an entry decide `stop` after their first pass.
    pub decisions: BTreeMap<String, Vec<LoopDecision>>,
    /// Stop after this many step entries (default: the compiler's bound, capped at
    /// [`DEFAULT_MAX_NODES`]).
    pub max_nodes: Option<u64>,
    /// Stop after this much wall-clock time (default [`DEFAULT_TIME_BUDGET`]).
    pub time_budget: Option<std::time::Duration>,
}

/// Step entries simulated when no `max_nodes` is given: nested loops can have a bound of
/// billions of entries, which no one wants to wait for.
pub const DEFAULT_MAX_NODES: u64 = 10_000;
/// Wall-clock time a simulation may take when no budget is given.
pub const DEFAULT_TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// One thing that happened on the path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceItem {
    /// A step was entered.
    Enter {
        /// Id of the step entered.
        step: String,
        /// Loop passes enclosing it, outermost first (`loop#pass`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        passes: Vec<String>,
        /// Whether it asks for confirmation.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        gate: bool,
    },
    /// A step was skipped.
    Skip {
        /// Id of the step skipped.
        step: String,
        /// The false condition.
        condition: String,
    },
    /// A guarded block (loop or routine include) was skipped.
    BlockSkip {
        /// The loop's or include's id.
        block: String,
        /// The false condition.
        condition: String,
    },
    /// A loop pass began.
    Pass {
        /// Id of the loop whose pass began.
        #[serde(rename = "loop")]
        loop_: String,
        /// 1-based pass.
        pass: u32,
    },
    /// A loop ended.
    Exit {
        /// Id of the loop that ended.
        #[serde(rename = "loop")]
        loop_: String,
        /// Number of passes the loop ran.
        passes: u32,
        /// Why the loop ended (condition, decision, count exhausted, `maxIterations`).
        reason: LoopExitReason,
    },
    /// A jump was taken.
    Jump {
        /// Id of the step carrying the `jumpIf`.
        from: String,
        /// Id of the entry jumped back to.
        to: String,
        /// Count so far.
        count: u32,
    },
    /// A jump's bound was reached.
    JumpExhausted {
        /// Id of the step whose jump bound was reached (execution fell through).
        step: String,
    },
    /// The workflow completed.
    Complete,
}

/// The path a simulation took.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Id of the simulated workflow.
    pub workflow: String,
    /// What happened, in order.
    pub path: Vec<TraceItem>,
    /// Step ids entered, in order.
    pub steps: Vec<String>,
    /// Whether the workflow completed.
    pub completed: bool,
    /// Events the run recorded.
    pub events: usize,
    /// The session context at the end: the start context with every step's delta merged in.
    pub context: Map<String, Value>,
}

/// Why a simulation could not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SimError {
    /// A scripted output was blocked.
    #[error("step `{step}` was blocked: {reasons}")]
    Blocked {
        /// Id of the step whose scripted output was blocked.
        step: String,
        /// The blockers' messages, joined with `; `.
        reasons: String,
    },
    /// The engine refused an operation.
    #[error(transparent)]
    Engine(#[from] ApiError),
    /// The node bound was reached (the compiler's bound is wrong, or the script loops).
    #[error("stopped after {0} step entries without completing")]
    Limit(u64),
    /// The default cap was reached before the compiler's (larger) bound.
    #[error(
        "stopped at the simulation cap of {cap} step entries; the workflow may enter up to {bound} (pass a larger max_nodes to go further, or script the loops to end sooner)"
    )]
    Capped {
        /// The cap that was reached, in step entries ([`DEFAULT_MAX_NODES`]).
        cap: u64,
        /// The compiler's bound.
        bound: u64,
    },
    /// The time budget ran out.
    #[error(
        "stopped after {entered} step entries: the simulation's time budget of {secs} s ran out"
    )]
    TimeBudget {
        /// Step entries simulated.
        entered: u64,
        /// The budget, in seconds.
        secs: u64,
    },
}

struct Sim<'a> {
    pinned: &'a Pinned,
    keyring: Keyring,
    limits: Limits,
    summary: Option<SessionSummary>,
    events: usize,
    trace: Vec<TraceItem>,
}

impl Sim<'_> {
    fn machine(&self) -> Machine<'_> {
        Machine {
            pinned: self.pinned,
            keyring: &self.keyring,
            limits: &self.limits,
        }
    }

    fn fold(&mut self, session: SessionId, events: &[NewEvent]) -> Result<(), SimError> {
        for e in events {
            let seq = Seq(self.summary.as_ref().map(|s| s.last_seq.0).unwrap_or(0) + 1);
            let stored = StoredEvent {
                position: 0,
                session_id: session,
                seq,
                created_at_ms: 0,
                idempotency_key: e.idempotency_key.clone(),
                prev_hash: Sha256Hash::ZERO,
                hash: Sha256Hash::ZERO,
                body: e.body.clone(),
            };
            let (next, _) = apply(self.summary.take(), &stored)
                .map_err(|err| ApiError::internal(err.to_string()))?;
            self.summary = Some(next);
            self.events += 1;
            self.trace_event(&e.body);
        }
        Ok(())
    }

    fn trace_event(&mut self, body: &EventBody) {
        let item = match body {
            EventBody::NodeEntered {
                step_id,
                requires_confirmation,
                ..
            } => {
                let passes = self
                    .summary
                    .as_ref()
                    .map(|s| {
                        s.cursor
                            .frames
                            .iter()
                            .filter_map(|f| {
                                self.pinned
                                    .workflow
                                    .loop_at(f.loop_)
                                    .map(|l| format!("{}#{}", l.id, f.passes))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                TraceItem::Enter {
                    step: step_id.to_string(),
                    passes,
                    gate: *requires_confirmation,
                }
            }
            EventBody::StepSkipped {
                step_id, condition, ..
            } => TraceItem::Skip {
                step: step_id.to_string(),
                condition: condition.clone(),
            },
            EventBody::BlockSkipped { id, condition, .. } => TraceItem::BlockSkip {
                block: id.to_string(),
                condition: condition.clone(),
            },
            EventBody::LoopPassStarted {
                loop_id, iteration, ..
            } => TraceItem::Pass {
                loop_: loop_id.to_string(),
                pass: iteration + 1,
            },
            EventBody::LoopExited {
                loop_id,
                passes,
                reason,
                ..
            } => TraceItem::Exit {
                loop_: loop_id.to_string(),
                passes: *passes,
                reason: *reason,
            },
            EventBody::JumpTaken {
                step_id,
                target,
                count,
                ..
            } => TraceItem::Jump {
                from: step_id.to_string(),
                to: target.to_string(),
                count: *count,
            },
            EventBody::JumpExhausted { step_id, .. } => TraceItem::JumpExhausted {
                step: step_id.to_string(),
            },
            EventBody::SessionCompleted { .. } => TraceItem::Complete,
            EventBody::SessionStarted { .. }
            | EventBody::StepBlocked { .. }
            | EventBody::StepCompleted { .. }
            | EventBody::StepParked { .. }
            | EventBody::GateApproved { .. }
            | EventBody::GateRejected { .. }
            | EventBody::LoopEntered { .. }
            | EventBody::CheckpointRecorded { .. }
            | EventBody::SessionRewound { .. }
            | EventBody::RunQueued { .. }
            | EventBody::RunStarted { .. }
            | EventBody::RunInterrupted { .. }
            | EventBody::RunRequeued { .. }
            | EventBody::RunFinished { .. }
            | EventBody::CancelRequested { .. }
            | EventBody::Steered { .. }
            | EventBody::AgentActivity { .. }
            | EventBody::StepSnapshotted { .. }
            | EventBody::WorktreeRestored { .. }
            | EventBody::HookRan { .. }
            | EventBody::SourceIneligible { .. }
            | EventBody::PostMortemRecorded { .. }
            | EventBody::DeliveryStarted { .. }
            | EventBody::DeliveryStageCompleted { .. }
            | EventBody::DeliveryFailed { .. }
            | EventBody::NotificationSent { .. }
            | EventBody::NotificationFailed { .. }
            | EventBody::DeliveryFinished { .. }
            | EventBody::WorkCommitted { .. }
            | EventBody::WorktreeRemoved { .. } => return,
        };
        self.trace.push(item);
    }
}

/// Run the workflow with scripted outputs until it completes.
pub fn simulate(pinned: &Pinned, script: &Script) -> Result<Trace, SimError> {
    let session = SessionId::from_parts(0, 0x5eed);
    let mut sim = Sim {
        pinned,
        keyring: Keyring::new([0x42; 32], "simulation".into()),
        limits: Limits::default(),
        summary: None,
        events: 0,
        trace: Vec::new(),
    };
    let plan = sim.machine().start(
        session,
        StartParams {
            goal: "simulation".into(),
            context: script.context.clone(),
            source: "simulation".into(),
            mode: SessionMode::Interactive,
            ..StartParams::default()
        },
    )?;
    sim.fold(session, &plan.events)?;
    let mut decisions: BTreeMap<String, VecDeque<LoopDecision>> = script
        .decisions
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
        .collect();
    let bound = pinned.workflow.node_bound.max(1);
    let limit = script.max_nodes.unwrap_or(bound.min(DEFAULT_MAX_NODES));
    let budget = script.time_budget.unwrap_or(DEFAULT_TIME_BUDGET);
    let started = std::time::Instant::now();
    let mut entered: u64 = 1;
    loop {
        if entered.is_multiple_of(256) && started.elapsed() > budget {
            return Err(SimError::TimeBudget {
                entered,
                secs: budget.as_secs(),
            });
        }
        let Some(summary) = sim.summary.clone() else {
            return Err(SimError::Engine(ApiError::internal("no session")));
        };
        let Some(cur) = summary.current.clone() else {
            break;
        };
        let step = pinned
            .workflow
            .step(cur.step)
            .ok_or_else(|| ApiError::internal("current step missing"))?;
        let mut artifacts = Vec::new();
        if let Some(a) = script.artifacts.get(step.id.as_str()) {
            artifacts.push(a.clone());
        } else if let Some(c) = &step.output_contract {
            let artifact = match c.contract {
                ContractName::LoopControl => {
                    let loop_id = step
                        .decides
                        .and_then(|i| pinned.workflow.loop_at(i))
                        .map(|l| l.id.to_string())
                        .unwrap_or_default();
                    let d = match decisions.get_mut(&loop_id) {
                        Some(q) if q.len() > 1 => q.pop_front().unwrap_or(LoopDecision::Stop),
                        Some(q) => q.front().copied().unwrap_or(LoopDecision::Stop),
                        None => LoopDecision::Stop,
                    };
                    json!({"kind": "loop_control", "decision": match d { LoopDecision::Continue => "continue", LoopDecision::Stop => "stop" }})
                }
                ContractName::Assessment => {
                    let dims: Map<String, Value> = c
                        .dimensions
                        .iter()
                        .map(|(k, d)| {
                            let ok = d
                                .levels
                                .iter()
                                .find(|l| !d.block_on.contains(l))
                                .or(d.levels.first());
                            (k.clone(), Value::String(ok.cloned().unwrap_or_default()))
                        })
                        .collect();
                    json!({"kind": "assessment", "dimensions": dims})
                }
                ContractName::ReviewVerdict | ContractName::Handoff | ContractName::PrReview => {
                    c.contract.example()
                }
            };
            artifacts.push(artifact);
        }
        let submission = Submission {
            notes: Some(format!("simulated output of `{}`", step.id)),
            artifacts,
            context: script.at.get(step.id.as_str()).cloned().unwrap_or_default(),
        };
        let claims = TokenClaims {
            kind: worktrain_core::token::TokenKind::Advance,
            session,
            node: cur.node,
            attempt: cur.attempt,
        };
        let plan: Plan = match sim.machine().advance(&summary, claims, &submission, None)? {
            AdvanceDecision::Apply(p) => *p,
            AdvanceDecision::Replay { .. } => {
                return Err(SimError::Engine(ApiError::internal("unexpected replay")));
            }
        };
        if !plan.response.blockers.is_empty() {
            return Err(SimError::Blocked {
                step: step.id.to_string(),
                reasons: plan
                    .response
                    .blockers
                    .iter()
                    .map(|b| b.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        sim.fold(session, &plan.events)?;
        if plan.response.step.is_some() {
            entered += 1;
            if entered > limit {
                if script.max_nodes.is_none() && limit < bound {
                    return Err(SimError::Capped { cap: limit, bound });
                }
                return Err(SimError::Limit(limit));
            }
        }
    }
    let steps = sim
        .trace
        .iter()
        .filter_map(|t| match t {
            TraceItem::Enter { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    let context = sim
        .summary
        .as_ref()
        .map(|s| s.context.clone())
        .unwrap_or_default();
    Ok(Trace {
        workflow: pinned.workflow.id.to_string(),
        completed: sim.trace.last() == Some(&TraceItem::Complete),
        path: sim.trace,
        steps,
        events: sim.events,
        context,
    })
}
