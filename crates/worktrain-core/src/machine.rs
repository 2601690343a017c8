//! The engine state machine, pure: `(pinned workflow, session summary, input) →
//! events + response`. No I/O, no clock, no randomness: the caller supplies ids and
//! persists the plan in one transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::{CompiledStep, Pinned, StepIndex};
use crate::context::{Limits, check_delta_keys, merged};
use crate::contract::ContractName;
use crate::cursor::{Cursor, LoopDecision, Stop, navigate};
use crate::error::{ApiError, ErrorCode, Retry};
use crate::event::{
    ArtifactRef, Blocker, BlockerCode, EntryCause, EventBody, LoopDecisionRecord, NewEvent,
    SessionMode,
};
use crate::ids::{Attempt, NodeId, SessionId, Sha256Hash};
use crate::projection::{
    AttemptRecord, CurrentStep, NodeRecord, NodeStatus, SessionStatus, SessionSummary,
};
use crate::prompt::{PromptVars, render};
use crate::response::{
    ChildView, ContractView, DelegationView, Intent, Outcome, Progress, RecapEntry, StepResponse,
    StepView, Tokens, WorkflowRef,
};
use crate::token::{Keyring, TokenClaims, TokenKind};

/// What an agent submits for a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// Notes (markdown): what was done and found.
    #[serde(default)]
    pub notes: Option<String>,
    /// Typed artifacts (`{kind: …, …}`).
    #[serde(default)]
    pub artifacts: Vec<Value>,
    /// Context changes (`null` deletes a key).
    #[serde(default)]
    pub context: Map<String, Value>,
}

impl Submission {
    /// Hash of the submission's canonical JSON; equal outputs hash equally.
    pub fn output_hash(&self) -> Sha256Hash {
        let canonical = serde_json_canonicalizer::to_vec(&serde_json::json!({
            "notes": self.notes.as_deref().unwrap_or(""),
            "artifacts": self.artifacts,
            "context": self.context,
        }))
        .unwrap_or_default();
        Sha256Hash::of(&canonical)
    }
}

/// Parameters of a new session.
#[derive(Debug, Clone, Default)]
pub struct StartParams {
    /// What the session should achieve; prompts show it as `{{goal}}`.
    pub goal: String,
    /// Directory the session works in (absolute); `None` when it has none.
    pub workspace: Option<String>,
    /// Git branch of the workspace, when known.
    pub branch: Option<String>,
    /// Context the session starts with (start inputs); recorded in `session_started`.
    pub context: Map<String, Value>,
    /// Where the workflow came from.
    pub source: String,
    /// Interactive or autonomous.
    pub mode: SessionMode,
    /// The session that spawned this one; `None` for a top-level session.
    pub parent: Option<SessionId>,
}

/// Everything one operation writes, plus its response. Persisted atomically.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events, in order.
    pub events: Vec<NewEvent>,
    /// Blobs referenced by the events (content-addressed).
    pub blobs: Vec<Vec<u8>>,
    /// The answer returned to the caller once the events are persisted.
    pub response: StepResponse,
    /// The response's exact bytes (also stored as a blob when replayable).
    pub response_bytes: Vec<u8>,
}

/// Result of judging an advance.
#[derive(Debug, Clone)]
pub enum AdvanceDecision {
    /// The same token and output were already processed: return the recorded response.
    Replay {
        /// Blob hash of the recorded response.
        response: Sha256Hash,
    },
    /// New events to persist.
    Apply(Box<Plan>),
}

/// Output accepted for a step, ready to complete it (now, or on approval).
struct Accepted {
    attempt: Attempt,
    output_hash: Sha256Hash,
    notes: String,
    artifacts: Vec<ArtifactRef>,
    context_delta: Map<String, Value>,
    loop_decision: Option<LoopDecisionRecord>,
}

/// The engine state machine for one pinned workflow.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// The pinned workflow.
    pub pinned: &'a Pinned,
    /// Keys for minting tokens.
    pub keyring: &'a Keyring,
    /// Size limits on submissions (notes, artifacts, context); exceeding one blocks the
    /// submission.
    pub limits: &'a Limits,
}

impl Machine<'_> {
    /// Start a session: the first step (or immediate completion if every step is skipped).
    pub fn start(&self, session: SessionId, params: StartParams) -> Result<Plan, ApiError> {
        check_delta_keys(&params.context)?;
        let context = merged(&Map::new(), &params.context, self.limits)?;
        let wf = &self.pinned.workflow;
        let mut events = vec![NewEvent {
            body: EventBody::SessionStarted {
                workflow_id: wf.id.clone(),
                workflow_hash: self.pinned.hash,
                workflow_version: wf.version.clone(),
                workflow_source: params.source.clone(),
                goal: params.goal.clone(),
                workspace: params.workspace.clone(),
                branch: params.branch.clone(),
                context: context.clone(),
                mode: params.mode,
                parent: params.parent,
            },
            idempotency_key: Some(format!("{session}:start")),
        }];
        let view = SessionView {
            session,
            goal: &params.goal,
            workspace: params.workspace.as_deref(),
            context: &context,
            mode: params.mode,
        };
        let mut cursor = Cursor::default();
        let mut counters = Counters::default();
        let entered = self.move_on(
            &view,
            &mut cursor,
            NodeId(1),
            None,
            EntryCause::Start,
            &mut events,
            &mut counters,
        )?;
        let response = self.response(
            &view,
            &cursor,
            Outcome::Started,
            entered.as_ref(),
            Vec::new(),
            counters,
            Vec::new(),
        );
        let response_bytes = response.to_bytes();
        Ok(Plan {
            events,
            blobs: vec![self.pinned.canonical.clone()],
            response,
            response_bytes,
        })
    }

    /// Judge a submission for the node/attempt named by an advance token.
    pub fn advance(
        &self,
        summary: &SessionSummary,
        claims: TokenClaims,
        submission: &Submission,
        prior: Option<&AttemptRecord>,
    ) -> Result<AdvanceDecision, ApiError> {
        if claims.kind != TokenKind::Advance {
            return Err(wrong_kind(claims.kind, "advance"));
        }
        let output_hash = submission.output_hash();
        if let Some(prior) = prior {
            if prior.output_hash == output_hash {
                return Ok(AdvanceDecision::Replay {
                    response: prior.response,
                });
            }
            return Err(conflict(summary, claims));
        }
        if never_issued(summary, claims) {
            return Err(never_issued_error(summary, claims));
        }
        let cur = current(summary)?;
        if cur.node != claims.node || cur.attempt != claims.attempt {
            return Err(stale(summary, claims));
        }
        if summary.status == SessionStatus::Parked {
            return Err(parked(summary));
        }
        let step = self.step(cur.step)?;
        check_sizes(submission, self.limits)?;
        let view = SessionView::of(summary, &summary.context);
        let blockers = self.blockers(step, summary, submission)?;
        let session = summary.session_id;
        let mut counters = Counters::from(summary);
        if !blockers.is_empty() {
            let entered = Entered {
                node: cur.node,
                attempt: Attempt(cur.attempt.0.saturating_add(1)),
                step: cur.step,
                requires_confirmation: cur.requires_confirmation,
            };
            counters.blocked += 1;
            let response = self.response(
                &view,
                &summary.cursor,
                Outcome::Blocked,
                Some(&entered),
                blockers.clone(),
                counters,
                Vec::new(),
            );
            let response_bytes = response.to_bytes();
            return Ok(AdvanceDecision::Apply(Box::new(Plan {
                events: vec![NewEvent {
                    body: EventBody::StepBlocked {
                        node: cur.node,
                        attempt: cur.attempt,
                        output_hash,
                        blockers,
                        response: Sha256Hash::of(&response_bytes),
                    },
                    idempotency_key: Some(submit_key(session, cur)),
                }],
                blobs: vec![response_bytes.clone()],
                response,
                response_bytes,
            })));
        }
        let (accepted, mut blobs) = self.accept(step, summary, cur, submission, output_hash)?;
        if cur.requires_confirmation && summary.mode == SessionMode::Autonomous {
            let gate = step
                .confirmation
                .as_ref()
                .map(|c| c.kind)
                .unwrap_or(crate::workflow::GateKind::HumanApproval);
            let mut parked_cur = cur.clone();
            parked_cur.parked = Some(gate);
            let entered = Entered::from_current(&parked_cur);
            let response = self.response(
                &view,
                &summary.cursor,
                Outcome::Parked,
                Some(&entered),
                Vec::new(),
                counters,
                Vec::new(),
            );
            let response_bytes = response.to_bytes();
            blobs.push(response_bytes.clone());
            return Ok(AdvanceDecision::Apply(Box::new(Plan {
                events: vec![NewEvent {
                    body: EventBody::StepParked {
                        node: cur.node,
                        attempt: cur.attempt,
                        output_hash,
                        notes: accepted.notes,
                        artifacts: accepted.artifacts,
                        context_delta: accepted.context_delta,
                        loop_decision: accepted.loop_decision,
                        gate,
                        response: Sha256Hash::of(&response_bytes),
                    },
                    idempotency_key: Some(submit_key(session, cur)),
                }],
                blobs,
                response,
                response_bytes,
            })));
        }
        let first = Some(submit_key(session, cur));
        let plan = self.complete(
            summary,
            cur,
            accepted,
            Vec::new(),
            first,
            blobs,
            &mut counters,
        )?;
        Ok(AdvanceDecision::Apply(Box::new(plan)))
    }

    /// Approve a parked step: complete it with the parked output.
    pub fn approve(
        &self,
        summary: &SessionSummary,
        parked: &EventBody,
        note: Option<String>,
    ) -> Result<Plan, ApiError> {
        let cur = current(summary)?;
        let EventBody::StepParked {
            node,
            attempt,
            output_hash,
            notes,
            artifacts,
            context_delta,
            loop_decision,
            ..
        } = parked
        else {
            return Err(ApiError::internal("approve needs the step_parked event"));
        };
        if summary.status != SessionStatus::Parked || cur.node != *node || cur.attempt != *attempt {
            return Err(not_parked(summary));
        }
        let accepted = Accepted {
            attempt: *attempt,
            output_hash: *output_hash,
            notes: notes.clone(),
            artifacts: artifacts.clone(),
            context_delta: context_delta.clone(),
            loop_decision: loop_decision.clone(),
        };
        let approved = vec![NewEvent {
            body: EventBody::GateApproved { node: *node, note },
            idempotency_key: Some(format!(
                "{}:{}:{}:approve",
                summary.session_id, node, attempt
            )),
        }];
        let mut counters = Counters::from(summary);
        self.complete(
            summary,
            cur,
            accepted,
            approved,
            None,
            Vec::new(),
            &mut counters,
        )
    }

    /// Reject a parked step: the agent must submit a new attempt.
    pub fn reject(&self, summary: &SessionSummary, note: String) -> Result<Plan, ApiError> {
        let cur = current(summary)?;
        if summary.status != SessionStatus::Parked {
            return Err(not_parked(summary));
        }
        if note.trim().is_empty() {
            return Err(ApiError::invalid_input(
                "a rejection needs a note saying what to change",
                "pass --note \"…\": the agent sees it as a blocker",
            ));
        }
        let view = SessionView::of(summary, &summary.context);
        let blockers = vec![Blocker {
            code: BlockerCode::Rejected,
            message: format!("the reviewer rejected this output: {note}"),
            path: None,
            example: None,
        }];
        let entered = Entered {
            node: cur.node,
            attempt: Attempt(cur.attempt.0.saturating_add(1)),
            step: cur.step,
            requires_confirmation: cur.requires_confirmation,
        };
        let mut counters = Counters::from(summary);
        counters.blocked += 1;
        let response = self.response(
            &view,
            &summary.cursor,
            Outcome::Rejected,
            Some(&entered),
            blockers,
            counters,
            Vec::new(),
        );
        let response_bytes = response.to_bytes();
        Ok(Plan {
            events: vec![NewEvent {
                body: EventBody::GateRejected {
                    node: cur.node,
                    attempt: cur.attempt,
                    note,
                    response: Sha256Hash::of(&response_bytes),
                },
                idempotency_key: Some(format!(
                    "{}:{}:{}:reject",
                    summary.session_id, cur.node, cur.attempt
                )),
            }],
            blobs: vec![response_bytes.clone()],
            response,
            response_bytes,
        })
    }

    /// Record progress on the current node without advancing.
    pub fn checkpoint(
        &self,
        summary: &SessionSummary,
        claims: TokenClaims,
        notes: &str,
        context_delta: &Map<String, Value>,
    ) -> Result<Plan, ApiError> {
        if claims.kind != TokenKind::Checkpoint {
            return Err(wrong_kind(claims.kind, "checkpoint"));
        }
        if never_issued(summary, claims) {
            return Err(never_issued_error(summary, claims));
        }
        let cur = current(summary)?;
        if cur.node != claims.node {
            return Err(stale(summary, claims));
        }
        if notes.len() > self.limits.notes_bytes {
            return Err(notes_too_large(notes.len(), self.limits));
        }
        let new_context = merged(&summary.context, context_delta, self.limits)?;
        let checkpoint_hash = Sha256Hash::of(
            &serde_json_canonicalizer::to_vec(
                &serde_json::json!({"notes": notes, "context": context_delta}),
            )
            .unwrap_or_default(),
        );
        let view = SessionView::of(summary, &new_context);
        let entered = Entered::from_current(cur);
        let mut counters = Counters::from(summary);
        counters.checkpoints += 1;
        let repeat = summary.last_checkpoint == Some(checkpoint_hash);
        let response = self.response(
            &view,
            &summary.cursor,
            Outcome::Checkpointed,
            Some(&entered),
            cur.blockers.clone(),
            counters,
            Vec::new(),
        );
        let response_bytes = response.to_bytes();
        if repeat {
            // The same checkpoint as the last one on this node: a retry. Nothing to write.
            return Ok(Plan {
                events: Vec::new(),
                blobs: Vec::new(),
                response,
                response_bytes,
            });
        }
        Ok(Plan {
            events: vec![NewEvent {
                body: EventBody::CheckpointRecorded {
                    node: cur.node,
                    notes: notes.to_owned(),
                    context_delta: context_delta.clone(),
                    checkpoint_hash,
                },
                // Keyed by position, not content: A → B → A records three checkpoints.
                idempotency_key: Some(format!(
                    "{}:{}:checkpoint:{}",
                    summary.session_id, cur.node, summary.checkpoints
                )),
            }],
            blobs: Vec::new(),
            response,
            response_bytes,
        })
    }

    /// The current state: step, fresh tokens, last blockers and a recap. Writes nothing.
    pub fn rehydrate(&self, summary: &SessionSummary, recap: Vec<RecapEntry>) -> StepResponse {
        let view = SessionView::of(summary, &summary.context);
        let entered = summary.current.as_ref().map(Entered::from_current);
        let outcome = if entered.is_some() {
            Outcome::Rehydrated
        } else {
            Outcome::Complete
        };
        let blockers = summary
            .current
            .as_ref()
            .map(|c| c.blockers.clone())
            .unwrap_or_default();
        self.response(
            &view,
            &summary.cursor,
            outcome,
            entered.as_ref(),
            blockers,
            Counters::from(summary),
            recap,
        )
    }

    /// Move the session back to the step of `target`, an earlier node on the current
    /// path (`path` lists that path, oldest first). Restores the program position the
    /// target had on entry and starts a new branch of the step graph.
    pub fn rewind(
        &self,
        summary: &SessionSummary,
        path: &[NodeRecord],
        target: &NodeRecord,
        reason: Option<String>,
    ) -> Result<Plan, ApiError> {
        let on_path = path.iter().any(|n| n.node == target.node);
        let is_current = summary
            .current
            .as_ref()
            .is_some_and(|c| c.node == target.node);
        if !on_path || is_current || target.status == NodeStatus::Abandoned {
            return Err(ApiError::new(
                ErrorCode::InvalidRewindTarget,
                format!(
                    "node {} (step `{}`) is not an earlier step on the session's current path",
                    target.node, target.step_id
                ),
                Retry::AfterFix,
                "list the path with `worktrain session show <id>` and pick an earlier completed step",
            ));
        }
        let session = summary.session_id;
        let from_node = summary
            .current
            .as_ref()
            .map(|c| c.node)
            .or(path.last().map(|n| n.node));
        let new_node = NodeId(summary.nodes + 1);
        let step = self.step(target.step)?;
        let cursor = target.cursor.clone();
        let requires_confirmation = self.confirmation(step, &cursor, &summary.context);
        let events = vec![
            NewEvent {
                body: EventBody::SessionRewound {
                    from_node,
                    target_node: target.node,
                    reason,
                    cursor: cursor.clone(),
                },
                idempotency_key: Some(format!("{session}:rewind:{}", summary.last_seq)),
            },
            NewEvent {
                body: EventBody::NodeEntered {
                    node: new_node,
                    step_id: step.id.clone(),
                    step: target.step,
                    pc: target.pc,
                    parent: target.parent,
                    cause: EntryCause::Rewind,
                    requires_confirmation,
                },
                idempotency_key: Some(format!("{session}:node:{new_node}")),
            },
        ];
        let view = SessionView::of(summary, &summary.context);
        let entered = Entered {
            node: new_node,
            attempt: Attempt(1),
            step: target.step,
            requires_confirmation,
        };
        let response = self.response(
            &view,
            &cursor,
            Outcome::Rewound,
            Some(&entered),
            Vec::new(),
            Counters::from(summary),
            Vec::new(),
        );
        let response_bytes = response.to_bytes();
        Ok(Plan {
            events,
            blobs: Vec::new(),
            response,
            response_bytes,
        })
    }

    /// Complete the current step with accepted output: `step_completed`, the jump
    /// decision, then navigation to the next step or the end.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        summary: &SessionSummary,
        cur: &CurrentStep,
        accepted: Accepted,
        mut events: Vec<NewEvent>,
        first_key: Option<String>,
        mut blobs: Vec<Vec<u8>>,
        counters: &mut Counters,
    ) -> Result<Plan, ApiError> {
        let session = summary.session_id;
        let step = self.step(cur.step)?;
        let new_context = merged(&summary.context, &accepted.context_delta, self.limits)?;
        let view = SessionView::of(summary, &new_context);
        let mut cursor = summary.cursor.clone();
        counters.completed += 1;
        // The response hash is not known until the response is built; build the events
        // with a placeholder first, then patch it in.
        let completed_index = events.len();
        let completed = EventBody::StepCompleted {
            node: cur.node,
            attempt: accepted.attempt,
            output_hash: accepted.output_hash,
            notes: accepted.notes,
            artifacts: accepted.artifacts,
            context_delta: accepted.context_delta,
            response: Sha256Hash::ZERO,
            loop_decision: accepted.loop_decision,
        };
        cursor
            .apply(&completed, Some(cur.pc))
            .map_err(|e| ApiError::internal(e.0))?;
        events.push(NewEvent {
            body: completed,
            idempotency_key: first_key.or_else(|| {
                Some(format!(
                    "{session}:{}:{}:complete",
                    cur.node, accepted.attempt
                ))
            }),
        });
        if let Some(jump) = &step.jump
            && jump
                .condition
                .evaluate(&cursor.scope(&self.pinned.workflow, &new_context))
        {
            let taken = cursor.jumps.get(step.id.as_str()).copied().unwrap_or(0);
            let body = if taken < jump.max_jumps {
                counters.jumps += 1;
                EventBody::JumpTaken {
                    step_id: step.id.clone(),
                    target: jump.target.clone(),
                    pc: jump.target_pc,
                    count: taken + 1,
                }
            } else {
                EventBody::JumpExhausted {
                    step_id: step.id.clone(),
                    max_jumps: jump.max_jumps,
                }
            };
            cursor
                .apply(&body, None)
                .map_err(|e| ApiError::internal(e.0))?;
            events.push(NewEvent {
                body,
                idempotency_key: None,
            });
        }
        let entered = self.move_on(
            &view,
            &mut cursor,
            NodeId(summary.nodes + 1),
            Some(cur.node),
            EntryCause::Advance,
            &mut events,
            counters,
        )?;
        let outcome = match (&entered, events.first().map(|e| e.body.kind())) {
            (None, _) => Outcome::Complete,
            (Some(_), Some(crate::event::EventKind::GateApproved)) => Outcome::Approved,
            (Some(_), _) => Outcome::Advanced,
        };
        let response = self.response(
            &view,
            &cursor,
            outcome,
            entered.as_ref(),
            Vec::new(),
            *counters,
            Vec::new(),
        );
        let response_bytes = response.to_bytes();
        if let Some(EventBody::StepCompleted { response: r, .. }) =
            events.get_mut(completed_index).map(|e| &mut e.body)
        {
            *r = Sha256Hash::of(&response_bytes);
        }
        blobs.push(response_bytes.clone());
        Ok(Plan {
            events,
            blobs,
            response,
            response_bytes,
        })
    }

    /// Navigate from the cursor and enter the next step (or complete), appending events.
    #[allow(clippy::too_many_arguments)]
    fn move_on(
        &self,
        view: &SessionView<'_>,
        cursor: &mut Cursor,
        next_node: NodeId,
        parent: Option<NodeId>,
        cause: EntryCause,
        events: &mut Vec<NewEvent>,
        counters: &mut Counters,
    ) -> Result<Option<Entered>, ApiError> {
        let session = view.session;
        let (nav_events, stop) = navigate(&self.pinned.workflow, cursor, view.context)
            .map_err(|e| ApiError::internal(e.0))?;
        for body in nav_events {
            // Navigation emits only these two kinds; other events count nowhere.
            if matches!(body, EventBody::StepSkipped { .. }) {
                counters.skipped += 1;
            } else if matches!(body, EventBody::LoopPassStarted { .. }) {
                counters.loop_passes += 1;
            }
            events.push(NewEvent {
                body,
                idempotency_key: None,
            });
        }
        match stop {
            Stop::Enter { pc, step } => {
                let s = self.step(step)?;
                let requires_confirmation = self.confirmation(s, cursor, view.context);
                let body = EventBody::NodeEntered {
                    node: next_node,
                    step_id: s.id.clone(),
                    step,
                    pc,
                    parent,
                    cause,
                    requires_confirmation,
                };
                cursor
                    .apply(&body, None)
                    .map_err(|e| ApiError::internal(e.0))?;
                events.push(NewEvent {
                    body,
                    idempotency_key: Some(format!("{session}:node:{next_node}")),
                });
                Ok(Some(Entered {
                    node: next_node,
                    attempt: Attempt(1),
                    step,
                    requires_confirmation,
                }))
            }
            Stop::Complete => {
                events.push(NewEvent {
                    body: EventBody::SessionCompleted { last_node: parent },
                    idempotency_key: Some(format!("{session}:complete:{}", next_node.0)),
                });
                Ok(None)
            }
        }
    }

    fn step(&self, index: StepIndex) -> Result<&CompiledStep, ApiError> {
        self.pinned
            .workflow
            .step(index)
            .ok_or_else(|| ApiError::internal(format!("pinned workflow has no step {}", index.0)))
    }

    /// Whether a step asks for confirmation, decided when it is entered (the one
    /// evaluation point of a gate's condition).
    fn confirmation(
        &self,
        step: &CompiledStep,
        cursor: &Cursor,
        context: &Map<String, Value>,
    ) -> bool {
        match &step.confirmation {
            None => false,
            Some(rule) => match &rule.when {
                None => true,
                Some(c) => c.evaluate(&cursor.scope(&self.pinned.workflow, context)),
            },
        }
    }

    fn blockers(
        &self,
        step: &CompiledStep,
        summary: &SessionSummary,
        submission: &Submission,
    ) -> Result<Vec<Blocker>, ApiError> {
        let mut blockers = Vec::new();
        let notes_empty = submission
            .notes
            .as_deref()
            .is_none_or(|n| n.trim().is_empty());
        if notes_empty && !step.notes_optional {
            blockers.push(Blocker {
                code: BlockerCode::NotesRequired,
                message: format!(
                    "step `{}` needs notes: summarise what you did, what you found and what is left",
                    step.id
                ),
                path: None,
                example: None,
            });
        }
        if let Some(contract) = &step.output_contract {
            let name = contract.contract;
            let matching: Vec<&Value> = submission
                .artifacts
                .iter()
                .filter(|a| a.get("kind").and_then(Value::as_str) == Some(name.as_str()))
                .collect();
            let example = contract_example(contract);
            match matching.as_slice() {
                [] if contract.required => blockers.push(Blocker {
                    code: BlockerCode::ArtifactMissing,
                    message: format!(
                        "step `{}` needs a `{name}` artifact (an object with \"kind\": \"{name}\")",
                        step.id
                    ),
                    path: None,
                    example: Some(example),
                }),
                [] => {}
                [one] => {
                    let mut violations = name.validate(one);
                    if name == ContractName::Assessment {
                        violations.extend(assessment_violations(contract, one));
                    }
                    for v in &violations {
                        blockers.push(Blocker {
                            code: BlockerCode::ArtifactInvalid,
                            message: format!("`{name}` artifact: {}", v.message),
                            path: Some(v.path.clone()),
                            example: Some(example.clone()),
                        });
                    }
                    if violations.is_empty() && name == ContractName::Assessment {
                        for (dim, spec) in &contract.dimensions {
                            let level = one
                                .pointer(&format!("/dimensions/{dim}"))
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if spec.block_on.iter().any(|b| b == level) {
                                let advice = spec.block_guidance.as_deref().unwrap_or(
                                    "do the work that changes it (investigate, reduce risk, gather evidence), then resubmit the assessment",
                                );
                                blockers.push(Blocker {
                                    code: BlockerCode::AssessmentBlocks,
                                    message: format!(
                                        "assessment `{dim}` is `{level}`, which blocks this step: {advice}"
                                    ),
                                    path: Some(format!("dimensions.{dim}")),
                                    example: None,
                                });
                            }
                        }
                    }
                }
                _ => blockers.push(Blocker {
                    code: BlockerCode::ArtifactInvalid,
                    message: format!(
                        "submit exactly one `{name}` artifact, not {}",
                        matching.len()
                    ),
                    path: None,
                    example: Some(example),
                }),
            }
        }
        if !step.context_outputs.is_empty() {
            let mut after = summary.context.clone();
            crate::context::merge(&mut after, &submission.context);
            for key in &step.context_outputs {
                if after.get(key).is_none_or(Value::is_null) {
                    blockers.push(Blocker {
                        code: BlockerCode::ContextOutputMissing,
                        message: format!("step `{}` must set the context key `{key}` (submit it in the context delta)", step.id),
                        path: Some(key.clone()),
                        example: None,
                    });
                }
            }
        }
        Ok(blockers)
    }

    /// Store artifacts as blobs and derive what the output implies: assessment levels
    /// written to the context, the loop decision.
    fn accept(
        &self,
        step: &CompiledStep,
        summary: &SessionSummary,
        cur: &CurrentStep,
        submission: &Submission,
        output_hash: Sha256Hash,
    ) -> Result<(Accepted, Vec<Vec<u8>>), ApiError> {
        let mut blobs = Vec::new();
        let mut artifacts = Vec::new();
        for a in &submission.artifacts {
            let bytes = serde_json_canonicalizer::to_vec(a).map_err(|e| {
                ApiError::invalid_input(
                    format!("artifact is not serializable: {e}"),
                    "send plain JSON artifacts",
                )
            })?;
            artifacts.push(ArtifactRef {
                kind: a.get("kind").and_then(Value::as_str).map(str::to_owned),
                hash: Sha256Hash::of(&bytes),
                size: bytes.len() as u64,
            });
            blobs.push(bytes);
        }
        let mut context_delta = submission.context.clone();
        let contract_artifact = step.output_contract.as_ref().and_then(|c| {
            submission
                .artifacts
                .iter()
                .find(|a| a.get("kind").and_then(Value::as_str) == Some(c.contract.as_str()))
                .map(|a| (c, a))
        });
        let mut loop_decision = None;
        if let Some((contract, artifact)) = contract_artifact {
            match contract.contract {
                ContractName::Assessment => {
                    let key = contract
                        .context_key
                        .clone()
                        .unwrap_or_else(|| "assessment".into());
                    let mut levels = summary
                        .context
                        .get(&key)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    if let Some(dims) = artifact.get("dimensions").and_then(Value::as_object) {
                        for (k, v) in dims {
                            levels.insert(k.clone(), v.clone());
                        }
                    }
                    context_delta.insert(key, Value::Object(levels));
                }
                ContractName::LoopControl => {
                    if let Some(index) = step.decides {
                        let decision = match artifact.get("decision").and_then(Value::as_str) {
                            Some("stop") => LoopDecision::Stop,
                            _ => LoopDecision::Continue,
                        };
                        let loop_id = self
                            .pinned
                            .workflow
                            .loop_at(index)
                            .map(|l| l.id.clone())
                            .ok_or_else(|| ApiError::internal("decision for an unknown loop"))?;
                        loop_decision = Some(LoopDecisionRecord {
                            loop_id,
                            loop_index: index,
                            decision,
                        });
                    }
                }
                ContractName::ReviewVerdict | ContractName::Handoff | ContractName::PrReview => {}
            }
        }
        // The derived keys must still fit the context limit.
        merged(&summary.context, &context_delta, self.limits)?;
        Ok((
            Accepted {
                attempt: cur.attempt,
                output_hash,
                notes: submission.notes.clone().unwrap_or_default(),
                artifacts,
                context_delta,
                loop_decision,
            },
            blobs,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn response(
        &self,
        view: &SessionView<'_>,
        cursor: &Cursor,
        outcome: Outcome,
        entered: Option<&Entered>,
        blockers: Vec<Blocker>,
        counters: Counters,
        recap: Vec<RecapEntry>,
    ) -> StepResponse {
        let wf = &self.pinned.workflow;
        let resume_node = entered.map(|e| e.node).unwrap_or(NodeId(0));
        let mint = |kind, node, attempt| {
            self.keyring.mint(TokenClaims {
                kind,
                session: view.session,
                node,
                attempt,
            })
        };
        let resume = mint(TokenKind::Resume, resume_node, Attempt(0));
        let session_str = view.session.to_string();
        let scope = cursor.scope(wf, view.context);
        let scope_map = scope.as_object().cloned().unwrap_or_default();
        let vars = PromptVars {
            goal: view.goal,
            workspace: view.workspace,
            session_id: &session_str,
            context: &scope_map,
        };
        let step = entered.and_then(|e| {
            let s = wf.step(e.step)?;
            let mut prompt = render(&s.prompt, &vars);
            for f in &s.fragments {
                if f.when.evaluate(&scope) {
                    prompt.push_str("\n\n");
                    prompt.push_str(&render(&f.text, &vars));
                }
            }
            let delegation = s.delegation.as_ref().map(|d| DelegationView {
                join: d.join,
                children: d
                    .children
                    .iter()
                    .map(|c| ChildView {
                        workflow: c.workflow.clone(),
                        goal: render(&c.goal, &vars),
                        context: c.context.clone(),
                    })
                    .collect(),
            });
            if let Some(d) = &delegation {
                prompt.push_str(&delegation_text(d, view.mode));
            }
            let loop_pass = cursor.frames.last().and_then(|f| {
                let l = wf.loop_at(f.loop_)?;
                Some(crate::response::LoopPass {
                    id: l.id.clone(),
                    pass: f.passes,
                    max_iterations: l.max_iterations,
                })
            });
            Some(StepView {
                node: e.node,
                attempt: e.attempt,
                id: s.id.clone(),
                title: s.title.clone(),
                prompt,
                guidance: wf.guidance.iter().map(|g| render(g, &vars)).collect(),
                index: e.step.0 + 1,
                notes_optional: s.notes_optional,
                output_contract: s.output_contract.as_ref().map(|c| ContractView {
                    contract: c.contract,
                    required: c.required,
                    example: contract_example(c),
                }),
                context_outputs: s.context_outputs.clone(),
                requires_confirmation: e.requires_confirmation,
                gate: if e.requires_confirmation {
                    s.confirmation.as_ref().map(|c| c.kind)
                } else {
                    None
                },
                delegation,
                loop_pass,
            })
        });
        let tokens = match (entered, outcome) {
            (Some(_), Outcome::Parked) => Tokens {
                advance: None,
                checkpoint: None,
                resume,
            },
            (Some(e), _) => Tokens {
                advance: Some(mint(TokenKind::Advance, e.node, e.attempt)),
                checkpoint: Some(mint(TokenKind::Checkpoint, e.node, Attempt(0))),
                resume,
            },
            (None, _) => Tokens {
                advance: None,
                checkpoint: None,
                resume,
            },
        };
        let intent = match (&step, outcome) {
            (None, _) => Intent::Complete,
            (Some(_), Outcome::Parked) => Intent::WaitForApproval,
            (Some(_), _) if !blockers.is_empty() => Intent::FixBlockers,
            (Some(s), _) if s.requires_confirmation && view.mode == SessionMode::Interactive => {
                Intent::AskUserThenSubmit
            }
            (Some(_), _) => Intent::PerformStep,
        };
        let next = match (intent, &step) {
            (Intent::Complete, _) | (_, None) => {
                "The workflow is complete. Report the result to the user.".to_owned()
            }
            (Intent::WaitForApproval, Some(s)) => format!(
                "Step `{}` is parked until it is approved or rejected (`worktrain session approve|reject {}`); wait, then rehydrate.",
                s.id, view.session
            ),
            (Intent::FixBlockers, Some(_)) => {
                "Fix every blocker, then submit again with the new advance token.".to_owned()
            }
            (Intent::AskUserThenSubmit, Some(s)) => format!(
                "Do step `{}`, then show the user your result and ask them to confirm before submitting with the advance token.",
                s.id
            ),
            (Intent::PerformStep, Some(s)) => format!(
                "Do step `{}` now, then submit your notes{} with the advance token.",
                s.id,
                if s.output_contract.is_some() {
                    " and the required artifact"
                } else {
                    ""
                }
            ),
        };
        StepResponse {
            session_id: view.session,
            outcome,
            intent,
            workflow: WorkflowRef {
                id: wf.id.clone(),
                version: wf.version.clone(),
                hash: self.pinned.hash,
            },
            goal: view.goal.to_owned(),
            step,
            tokens,
            blockers,
            progress: Progress {
                completed: counters.completed,
                skipped: counters.skipped,
                total: u32::try_from(wf.step_count()).unwrap_or(u32::MAX),
            },
            recap,
            next,
        }
    }
}

fn delegation_text(d: &DelegationView, mode: SessionMode) -> String {
    let mut out = String::from("\n\n## Delegate\n\n");
    match mode {
        SessionMode::Interactive => out.push_str(&format!(
            "Run these child workflows ({}), each as its own session (`start_workflow` / `worktrain session start`), then summarise their results in your notes:\n",
            match d.join {
                crate::workflow::Join::All => "wait for all of them",
                crate::workflow::Join::Any => "the first result is enough",
            }
        )),
        SessionMode::Autonomous => out.push_str("worktrain runs these child sessions for you; their results are reported back here:\n"),
    }
    for c in &d.children {
        out.push_str(&format!("- `{}` — {}", c.workflow, c.goal));
        if !c.context.is_empty() {
            out.push_str(&format!(" (context: {})", Value::Object(c.context.clone())));
        }
        out.push('\n');
    }
    out
}

fn contract_example(c: &crate::compile::CompiledContract) -> Value {
    if c.contract == ContractName::Assessment && !c.dimensions.is_empty() {
        let dims: Map<String, Value> = c
            .dimensions
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    Value::String(d.levels.first().cloned().unwrap_or_default()),
                )
            })
            .collect();
        return serde_json::json!({"kind": "assessment", "dimensions": dims, "rationale": "why these levels"});
    }
    c.contract.example()
}

fn assessment_violations(
    c: &crate::compile::CompiledContract,
    artifact: &Value,
) -> Vec<crate::contract::ContractViolation> {
    let mut out = Vec::new();
    let given = artifact.get("dimensions").and_then(Value::as_object);
    for (dim, spec) in &c.dimensions {
        match given.and_then(|g| g.get(dim)).and_then(Value::as_str) {
            Some(level) if spec.levels.iter().any(|l| l == level) => {}
            Some(level) => out.push(crate::contract::ContractViolation {
                path: format!("dimensions.{dim}"),
                message: format!(
                    "`{level}` is not a level of `{dim}` ({})",
                    spec.levels.join(", ")
                ),
            }),
            None => out.push(crate::contract::ContractViolation {
                path: format!("dimensions.{dim}"),
                message: format!("required: one of {}", spec.levels.join(", ")),
            }),
        }
    }
    if let Some(g) = given {
        for k in g.keys() {
            if !c.dimensions.contains_key(k) {
                out.push(crate::contract::ContractViolation {
                    path: format!("dimensions.{k}"),
                    message: format!(
                        "`{k}` is not a declared dimension ({})",
                        c.dimensions.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
    }
    out
}

/// The session-level values a response is rendered from.
struct SessionView<'a> {
    session: SessionId,
    goal: &'a str,
    workspace: Option<&'a str>,
    context: &'a Map<String, Value>,
    mode: SessionMode,
}

impl<'a> SessionView<'a> {
    fn of(summary: &'a SessionSummary, context: &'a Map<String, Value>) -> Self {
        Self {
            session: summary.session_id,
            goal: &summary.goal,
            workspace: summary.workspace.as_deref(),
            context,
            mode: summary.mode,
        }
    }
}

/// A node the response points at.
struct Entered {
    node: NodeId,
    attempt: Attempt,
    step: StepIndex,
    requires_confirmation: bool,
}

impl Entered {
    fn from_current(cur: &CurrentStep) -> Self {
        Self {
            node: cur.node,
            attempt: cur.attempt,
            step: cur.step,
            requires_confirmation: cur.requires_confirmation,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Counters {
    completed: u32,
    skipped: u32,
    blocked: u32,
    checkpoints: u32,
    loop_passes: u32,
    jumps: u32,
}

impl From<&SessionSummary> for Counters {
    fn from(s: &SessionSummary) -> Self {
        Self {
            completed: s.steps_completed,
            skipped: s.steps_skipped,
            blocked: s.blocked_attempts,
            checkpoints: s.checkpoints,
            loop_passes: s.loop_passes,
            jumps: s.jumps,
        }
    }
}

fn submit_key(session: SessionId, cur: &CurrentStep) -> String {
    format!("{session}:{}:{}:submit", cur.node, cur.attempt)
}

fn current(summary: &SessionSummary) -> Result<&CurrentStep, ApiError> {
    match (&summary.current, summary.status) {
        (Some(cur), _) => Ok(cur),
        (None, SessionStatus::Complete) => Err(ApiError::new(
            ErrorCode::SessionComplete,
            format!("session {} is already complete", summary.session_id),
            Retry::Never,
            "nothing left to submit; start a new session, or rewind this one to redo a step",
        )),
        (None, _) => Err(ApiError::internal("session has no current step")),
    }
}

fn check_sizes(sub: &Submission, limits: &Limits) -> Result<(), ApiError> {
    if let Some(notes) = &sub.notes
        && notes.len() > limits.notes_bytes
    {
        return Err(notes_too_large(notes.len(), limits));
    }
    if sub.artifacts.len() > limits.artifacts_per_submission {
        return Err(ApiError::new(
            ErrorCode::ArtifactTooLarge,
            format!(
                "{} artifacts submitted; at most {} are allowed per submission",
                sub.artifacts.len(),
                limits.artifacts_per_submission
            ),
            Retry::AfterFix,
            "merge related artifacts, or keep bulky material in files in the workspace",
        ));
    }
    for (i, a) in sub.artifacts.iter().enumerate() {
        if !a.is_object() {
            return Err(ApiError::invalid_input(
                format!("artifact {i} is not a JSON object"),
                "each artifact is an object with a `kind` field, e.g. {\"kind\": \"review_verdict\", …}",
            ));
        }
        let size = serde_json::to_vec(a).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > limits.artifact_bytes {
            return Err(ApiError::new(
                ErrorCode::ArtifactTooLarge,
                format!(
                    "artifact {i} is {size} bytes, over the limit of {} bytes",
                    limits.artifact_bytes
                ),
                Retry::AfterFix,
                "summarise the artifact, or leave large content in workspace files and reference their paths",
            ));
        }
    }
    check_delta_keys(&sub.context)
}

fn notes_too_large(len: usize, limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorCode::NotesTooLarge,
        format!(
            "notes are {len} bytes, over the limit of {} bytes",
            limits.notes_bytes
        ),
        Retry::AfterFix,
        "shorten the notes to what the next step needs; put long logs or diffs in workspace files and reference them",
    )
}

fn wrong_kind(kind: TokenKind, wanted: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TokenWrongKind,
        format!("this is a {kind:?} token; this operation needs the {wanted} token"),
        Retry::AfterFix,
        format!("use `tokens.{wanted}` from the last response"),
    )
}

fn describe_current(summary: &SessionSummary) -> String {
    summary
        .current
        .as_ref()
        .map(|c| {
            format!(
                "step `{}` (node {}, attempt {})",
                c.step_id, c.node, c.attempt
            )
        })
        .unwrap_or_else(|| "none: the session is complete".into())
}

fn conflict(summary: &SessionSummary, claims: TokenClaims) -> ApiError {
    ApiError::new(
        ErrorCode::TokenConflict,
        format!(
            "this token (node {}, attempt {}) was already used with a different output; the session's current step is {}",
            claims.node,
            claims.attempt,
            describe_current(summary)
        ),
        Retry::AfterRehydrate,
        format!(
            "a token is single-use: resubmitting the identical output returns the recorded response; to continue, rehydrate (`worktrain session rehydrate {}`) and use the current token",
            summary.session_id
        ),
    )
}

/// Whether no token for `claims`' node and attempt can ever have been minted for this
/// session: nodes are numbered from 1 as they are entered, so a node above the count (or
/// 0) was never entered, and the current node has had no attempt above its current one.
/// Such a token was altered or forged with the key — it is not merely out of date.
fn never_issued(summary: &SessionSummary, claims: TokenClaims) -> bool {
    claims.node.0 == 0
        || claims.node.0 > summary.nodes
        || summary
            .current
            .as_ref()
            .is_some_and(|c| c.node == claims.node && claims.attempt > c.attempt)
}

fn never_issued_error(summary: &SessionSummary, claims: TokenClaims) -> ApiError {
    ApiError::new(
        ErrorCode::TokenNeverIssued,
        format!(
            "this token names node {} attempt {}, which session {} never reached (it has entered {} node(s); current: {}): the token was not issued by this session",
            claims.node,
            claims.attempt,
            summary.session_id,
            summary.nodes,
            describe_current(summary)
        ),
        Retry::Never,
        format!(
            "use a token worktrain returned for this session; `worktrain session rehydrate {}` gives the current one",
            summary.session_id
        ),
    )
}

fn stale(summary: &SessionSummary, claims: TokenClaims) -> ApiError {
    ApiError::new(
        ErrorCode::TokenStale,
        format!(
            "this token is for node {} attempt {}, which is no longer current; the session is at {}",
            claims.node,
            claims.attempt,
            describe_current(summary)
        ),
        Retry::AfterRehydrate,
        format!(
            "rehydrate to get the current step and fresh tokens: `worktrain session rehydrate {}` (or continue_workflow with intent=rehydrate)",
            summary.session_id
        ),
    )
}

fn parked(summary: &SessionSummary) -> ApiError {
    ApiError::new(
        ErrorCode::SessionParked,
        format!(
            "session {} is parked at {} waiting for approval",
            summary.session_id,
            describe_current(summary)
        ),
        Retry::AfterRehydrate,
        format!(
            "wait until an operator runs `worktrain session approve {id}` or `reject {id} --note …`, then rehydrate",
            id = summary.session_id
        ),
    )
}

/// The error for approving or rejecting a session that is not parked at a gate. One
/// definition for the state machine and the engine's look-up of the parked output, so the
/// CLI, HTTP and MCP all report it alike.
pub fn not_parked(summary: &SessionSummary) -> ApiError {
    ApiError::new(
        ErrorCode::NotParked,
        format!(
            "session {} is not waiting for approval (status {})",
            summary.session_id,
            summary.status.as_str()
        ),
        Retry::Never,
        "only a parked session (an autonomous session at a gated step) can be approved or rejected",
    )
}
