//! The engine state machine, pure: `(pinned workflow, session summary, input) →
//! events + response`. No I/O, no clock, no randomness: the caller supplies ids and
//! persists the plan in one transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::{ConfirmationRule, Navigation, Pc, Pinned, StepIndex};
use crate::context::{Limits, check_delta_keys, merged};
use crate::event::{ArtifactRef, Blocker, BlockerCode, EntryCause, EventBody, NewEvent};
use crate::error::{ApiError, ErrorCode, Retry};
use crate::ids::{Attempt, NodeId, SessionId, Sha256Hash};
use crate::projection::{AttemptRecord, NodeRecord, NodeStatus, SessionStatus, SessionSummary};
use crate::prompt::{PromptVars, render};
use crate::response::{
    ContractView, Outcome, Progress, RecapEntry, StepResponse, StepView, Tokens, WorkflowRef,
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
#[derive(Debug, Clone)]
pub struct StartParams {
    /// Goal.
    pub goal: String,
    /// Workspace directory.
    pub workspace: Option<String>,
    /// Git branch of the workspace, when known.
    pub branch: Option<String>,
    /// Initial context.
    pub context: Map<String, Value>,
    /// Where the workflow came from.
    pub source: String,
}

/// Everything one operation writes, plus its response. Persisted atomically.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events, in order.
    pub events: Vec<NewEvent>,
    /// Blobs referenced by the events (content-addressed).
    pub blobs: Vec<Vec<u8>>,
    /// The response.
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
    Apply(Plan),
}

/// The engine state machine for one pinned workflow.
pub struct Machine<'a> {
    /// The pinned workflow.
    pub pinned: &'a Pinned,
    /// Keys for minting tokens.
    pub keyring: &'a Keyring,
    /// Size limits.
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
                workflow_source: params.source,
                goal: params.goal.clone(),
                workspace: params.workspace.clone(),
                branch: params.branch.clone(),
                context: context.clone(),
            },
            idempotency_key: Some(format!("{session}:start")),
        }];
        let mut counters = Counters::default();
        let sim = Simulated {
            session,
            goal: &params.goal,
            workspace: params.workspace.as_deref(),
            context: &context,
        };
        let (entered, tail) = self.navigate_from(&sim, Pc(0), NodeId(1), None, EntryCause::Start, &mut counters);
        events.extend(tail);
        let response = self.step_response(&sim, Outcome::Started, entered.as_ref(), Vec::new(), counters, Vec::new());
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
            return Err(self.conflict(summary, claims));
        }
        let cur = match (&summary.current, summary.status) {
            (Some(cur), _) => cur,
            (None, SessionStatus::Complete) => {
                return Err(ApiError::new(
                    ErrorCode::SessionComplete,
                    format!("session {} is already complete", summary.session_id),
                    Retry::Never,
                    "nothing left to submit; start a new session, or rewind this one to redo a step",
                ));
            }
            (None, _) => return Err(ApiError::internal("session has no current step")),
        };
        if cur.node != claims.node || cur.attempt != claims.attempt {
            return Err(stale(summary, claims));
        }
        check_sizes(submission, self.limits)?;
        let new_context = merged(&summary.context, &submission.context, self.limits)?;
        let blockers = self.blockers(cur.step, submission)?;
        let session = summary.session_id;
        let mut counters = Counters::from(summary);
        if !blockers.is_empty() {
            let sim = Simulated::of(summary, &summary.context);
            let next_attempt = Attempt(cur.attempt.0.saturating_add(1));
            let entered = Entered {
                node: cur.node,
                attempt: next_attempt,
                step: cur.step,
                requires_confirmation: cur.requires_confirmation,
            };
            counters.blocked += 1;
            let response =
                self.step_response(&sim, Outcome::Blocked, Some(&entered), blockers.clone(), counters, Vec::new());
            let response_bytes = response.to_bytes();
            let response_hash = Sha256Hash::of(&response_bytes);
            return Ok(AdvanceDecision::Apply(Plan {
                events: vec![NewEvent {
                    body: EventBody::StepBlocked {
                        node: cur.node,
                        attempt: cur.attempt,
                        output_hash,
                        blockers,
                        response: response_hash,
                    },
                    idempotency_key: Some(format!("{session}:{}:{}:submit", cur.node, cur.attempt)),
                }],
                blobs: vec![response_bytes.clone()],
                response,
                response_bytes,
            }));
        }
        let mut blobs = Vec::new();
        let mut artifacts = Vec::new();
        for a in &submission.artifacts {
            let bytes = serde_json_canonicalizer::to_vec(a)
                .map_err(|e| ApiError::invalid_input(format!("artifact is not serializable: {e}"), "send plain JSON artifacts"))?;
            artifacts.push(ArtifactRef {
                kind: a.get("kind").and_then(Value::as_str).map(str::to_owned),
                hash: Sha256Hash::of(&bytes),
                size: bytes.len() as u64,
            });
            blobs.push(bytes);
        }
        counters.completed += 1;
        let sim = Simulated::of(summary, &new_context);
        let (entered, tail) = self.navigate_from(
            &sim,
            Pc(cur.pc.0 + 1),
            NodeId(summary.nodes + 1),
            Some(cur.node),
            EntryCause::Advance,
            &mut counters,
        );
        let outcome = if entered.is_some() { Outcome::Advanced } else { Outcome::Complete };
        let response = self.step_response(&sim, outcome, entered.as_ref(), Vec::new(), counters, Vec::new());
        let response_bytes = response.to_bytes();
        let mut events = vec![NewEvent {
            body: EventBody::StepCompleted {
                node: cur.node,
                attempt: cur.attempt,
                output_hash,
                notes: submission.notes.clone().unwrap_or_default(),
                artifacts,
                context_delta: submission.context.clone(),
                response: Sha256Hash::of(&response_bytes),
            },
            idempotency_key: Some(format!("{session}:{}:{}:submit", cur.node, cur.attempt)),
        }];
        events.extend(tail);
        blobs.push(response_bytes.clone());
        Ok(AdvanceDecision::Apply(Plan {
            events,
            blobs,
            response,
            response_bytes,
        }))
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
        let Some(cur) = &summary.current else {
            return Err(ApiError::new(
                ErrorCode::SessionComplete,
                format!("session {} is complete; there is no step to checkpoint", summary.session_id),
                Retry::Never,
                "rewind the session to redo a step, or start a new one",
            ));
        };
        if cur.node != claims.node {
            return Err(stale(summary, claims));
        }
        if notes.len() > self.limits.notes_bytes {
            return Err(notes_too_large(notes.len(), self.limits));
        }
        let new_context = merged(&summary.context, context_delta, self.limits)?;
        let checkpoint_hash = Sha256Hash::of(
            &serde_json_canonicalizer::to_vec(&serde_json::json!({"notes": notes, "context": context_delta}))
                .unwrap_or_default(),
        );
        let sim = Simulated::of(summary, &new_context);
        let entered = Entered::from_current(cur);
        let mut counters = Counters::from(summary);
        counters.checkpoints += 1;
        let response = self.step_response(&sim, Outcome::Checkpointed, Some(&entered), Vec::new(), counters, Vec::new());
        let response_bytes = response.to_bytes();
        Ok(Plan {
            events: vec![NewEvent {
                body: EventBody::CheckpointRecorded {
                    node: cur.node,
                    notes: notes.to_owned(),
                    context_delta: context_delta.clone(),
                    checkpoint_hash,
                },
                idempotency_key: Some(format!("{}:{}:checkpoint:{}", summary.session_id, cur.node, checkpoint_hash)),
            }],
            blobs: Vec::new(),
            response,
            response_bytes,
        })
    }

    /// The current state: step, fresh tokens and a recap. Writes nothing.
    pub fn rehydrate(&self, summary: &SessionSummary, recap: Vec<RecapEntry>) -> StepResponse {
        let sim = Simulated::of(summary, &summary.context);
        let entered = summary.current.as_ref().map(Entered::from_current);
        let outcome = if entered.is_some() { Outcome::Rehydrated } else { Outcome::Complete };
        let blockers = Vec::new();
        self.step_response(&sim, outcome, entered.as_ref(), blockers, Counters::from(summary), recap)
    }

    /// Move the session back to the step of `target`, an earlier node on the current
    /// path (`path` lists that path, oldest first). Creates a new branch.
    pub fn rewind(
        &self,
        summary: &SessionSummary,
        path: &[NodeRecord],
        target: &NodeRecord,
        reason: Option<String>,
    ) -> Result<Plan, ApiError> {
        let on_path = path.iter().any(|n| n.node == target.node);
        let is_current = summary.current.as_ref().is_some_and(|c| c.node == target.node);
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
        let from_node = summary.current.as_ref().map(|c| c.node).or(path.last().map(|n| n.node));
        let new_node = NodeId(summary.nodes + 1);
        let step = self.step(target.step)?;
        let requires_confirmation = self.confirmation(target.step, &summary.context);
        let mut events = vec![NewEvent {
            body: EventBody::SessionRewound {
                from_node,
                target_node: target.node,
                reason,
            },
            idempotency_key: Some(format!("{session}:rewind:{}", summary.last_seq)),
        }];
        events.push(NewEvent {
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
        });
        let sim = Simulated::of(summary, &summary.context);
        let entered = Entered {
            node: new_node,
            attempt: Attempt(1),
            step: target.step,
            requires_confirmation,
        };
        let response =
            self.step_response(&sim, Outcome::Rewound, Some(&entered), Vec::new(), Counters::from(summary), Vec::new());
        let response_bytes = response.to_bytes();
        Ok(Plan {
            events,
            blobs: Vec::new(),
            response,
            response_bytes,
        })
    }

    fn step(&self, index: StepIndex) -> Result<&crate::compile::CompiledStep, ApiError> {
        self.pinned
            .workflow
            .step(index)
            .ok_or_else(|| ApiError::internal(format!("pinned workflow has no step {}", index.0)))
    }

    fn confirmation(&self, index: StepIndex, context: &Map<String, Value>) -> bool {
        match self.pinned.workflow.step(index).and_then(|s| s.require_confirmation.as_ref()) {
            None => false,
            Some(ConfirmationRule::Always) => true,
            Some(ConfirmationRule::If { condition }) => condition.evaluate(&Value::Object(context.clone())),
        }
    }

    /// Walk forward from `from`, producing skip events and the next node (or completion).
    fn navigate_from(
        &self,
        sim: &Simulated<'_>,
        from: Pc,
        next_node: NodeId,
        parent: Option<NodeId>,
        cause: EntryCause,
        counters: &mut Counters,
    ) -> (Option<Entered>, Vec<NewEvent>) {
        let session = sim.session;
        let ctx = Value::Object(sim.context.clone());
        let (skips, nav) = self.pinned.workflow.navigate(from, &ctx);
        let mut events = Vec::new();
        for skip in skips {
            if let Some(step) = self.pinned.workflow.step(skip.step) {
                counters.skipped += 1;
                events.push(NewEvent {
                    body: EventBody::StepSkipped {
                        step_id: step.id.clone(),
                        pc: skip.pc,
                        condition: step
                            .run_condition
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    },
                    idempotency_key: None,
                });
            }
        }
        match nav {
            Navigation::Enter { pc, step } => {
                let requires_confirmation = self.confirmation(step, sim.context);
                let step_id = self
                    .pinned
                    .workflow
                    .step(step)
                    .map(|s| s.id.clone());
                if let Some(step_id) = step_id {
                    events.push(NewEvent {
                        body: EventBody::NodeEntered {
                            node: next_node,
                            step_id,
                            step,
                            pc,
                            parent,
                            cause,
                            requires_confirmation,
                        },
                        idempotency_key: Some(format!("{session}:node:{next_node}")),
                    });
                }
                (
                    Some(Entered {
                        node: next_node,
                        attempt: Attempt(1),
                        step,
                        requires_confirmation,
                    }),
                    events,
                )
            }
            Navigation::Complete => {
                events.push(NewEvent {
                    body: EventBody::SessionCompleted { last_node: parent },
                    idempotency_key: Some(format!("{session}:complete:{}", next_node.0)),
                });
                (None, events)
            }
        }
    }

    fn blockers(&self, index: StepIndex, submission: &Submission) -> Result<Vec<Blocker>, ApiError> {
        let step = self.step(index)?;
        let mut blockers = Vec::new();
        let notes_empty = submission.notes.as_deref().is_none_or(|n| n.trim().is_empty());
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
            match matching.as_slice() {
                [] if contract.required => blockers.push(Blocker {
                    code: BlockerCode::ArtifactMissing,
                    message: format!(
                        "step `{}` needs a `{name}` artifact (an object with \"kind\": \"{name}\")",
                        step.id
                    ),
                    path: None,
                    example: Some(name.example()),
                }),
                [] => {}
                [one] => {
                    for v in name.validate(one) {
                        blockers.push(Blocker {
                            code: BlockerCode::ArtifactInvalid,
                            message: format!("`{name}` artifact: {}", v.message),
                            path: Some(v.path),
                            example: Some(name.example()),
                        });
                    }
                }
                _ => blockers.push(Blocker {
                    code: BlockerCode::ArtifactInvalid,
                    message: format!("submit exactly one `{name}` artifact, not {}", matching.len()),
                    path: None,
                    example: Some(name.example()),
                }),
            }
        }
        Ok(blockers)
    }

    fn conflict(&self, summary: &SessionSummary, claims: TokenClaims) -> ApiError {
        let current = summary
            .current
            .as_ref()
            .map(|c| format!("step `{}` (node {}, attempt {})", c.step_id, c.node, c.attempt))
            .unwrap_or_else(|| "none: the session is complete".into());
        ApiError::new(
            ErrorCode::TokenConflict,
            format!(
                "this token (node {}, attempt {}) was already used with a different output; the session's current step is {current}",
                claims.node, claims.attempt
            ),
            Retry::AfterRehydrate,
            format!(
                "a token is single-use: resubmitting the identical output returns the recorded response; to continue, rehydrate (`worktrain session rehydrate {}`) and use the current token",
                summary.session_id
            ),
        )
    }

    fn step_response(
        &self,
        sim: &Simulated<'_>,
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
                session: sim.session,
                node,
                attempt,
            })
        };
        let resume = mint(TokenKind::Resume, resume_node, Attempt(0));
        let session_str = sim.session.to_string();
        let vars = PromptVars {
            goal: sim.goal,
            workspace: sim.workspace,
            session_id: &session_str,
            context: sim.context,
        };
        let step = entered.and_then(|e| {
            let s = wf.step(e.step)?;
            Some(StepView {
                node: e.node,
                attempt: e.attempt,
                id: s.id.clone(),
                title: s.title.clone(),
                prompt: render(&s.prompt, &vars),
                guidance: wf.guidance.iter().map(|g| render(g, &vars)).collect(),
                index: e.step.0 + 1,
                notes_optional: s.notes_optional,
                output_contract: s.output_contract.as_ref().map(|c| ContractView {
                    contract: c.contract,
                    required: c.required,
                    example: c.contract.example(),
                }),
                requires_confirmation: e.requires_confirmation,
            })
        });
        let tokens = match entered {
            Some(e) => Tokens {
                advance: Some(mint(TokenKind::Advance, e.node, e.attempt)),
                checkpoint: Some(mint(TokenKind::Checkpoint, e.node, Attempt(0))),
                resume,
            },
            None => Tokens {
                advance: None,
                checkpoint: None,
                resume,
            },
        };
        let next = match (outcome, &step) {
            (_, None) => "The workflow is complete. Report the result to the user.".to_owned(),
            (Outcome::Blocked, Some(_)) => {
                "Fix every blocker, then submit again with the new advance token.".to_owned()
            }
            (_, Some(s)) if s.requires_confirmation => format!(
                "Do step `{}`, then show the user your result and ask them to confirm before submitting with the advance token.",
                s.id
            ),
            (_, Some(s)) => format!(
                "Do step `{}` now, then submit your notes{} with the advance token.",
                s.id,
                if s.output_contract.is_some() { " and the required artifact" } else { "" }
            ),
        };
        StepResponse {
            session_id: sim.session,
            outcome,
            workflow: WorkflowRef {
                id: wf.id.clone(),
                version: wf.version.clone(),
                hash: self.pinned.hash,
            },
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

/// The session-level values a response is rendered from.
struct Simulated<'a> {
    session: SessionId,
    goal: &'a str,
    workspace: Option<&'a str>,
    context: &'a Map<String, Value>,
}

impl<'a> Simulated<'a> {
    fn of(summary: &'a SessionSummary, context: &'a Map<String, Value>) -> Self {
        Self {
            session: summary.session_id,
            goal: &summary.goal,
            workspace: summary.workspace.as_deref(),
            context,
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
    fn from_current(cur: &crate::projection::CurrentStep) -> Self {
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
}

impl From<&SessionSummary> for Counters {
    fn from(s: &SessionSummary) -> Self {
        Self {
            completed: s.steps_completed,
            skipped: s.steps_skipped,
            blocked: s.blocked_attempts,
            checkpoints: s.checkpoints,
        }
    }
}

fn check_sizes(sub: &Submission, limits: &Limits) -> Result<(), ApiError> {
    if let Some(notes) = &sub.notes {
        if notes.len() > limits.notes_bytes {
            return Err(notes_too_large(notes.len(), limits));
        }
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
                format!("artifact {i} is {size} bytes, over the limit of {} bytes", limits.artifact_bytes),
                Retry::AfterFix,
                "summarise the artifact, or leave large content in workspace files and reference their paths",
            ));
        }
    }
    Ok(())
}

fn notes_too_large(len: usize, limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorCode::NotesTooLarge,
        format!("notes are {len} bytes, over the limit of {} bytes", limits.notes_bytes),
        Retry::AfterFix,
        "shorten the notes to what the next step needs; put long logs or diffs in workspace files and reference them",
    )
}

fn wrong_kind(kind: TokenKind, wanted: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TokenWrongKind,
        format!("this is a {kind:?} token; this operation needs the {wanted} token", kind = kind),
        Retry::AfterFix,
        format!("use `tokens.{wanted}` from the last response"),
    )
}

fn stale(summary: &SessionSummary, claims: TokenClaims) -> ApiError {
    let current = summary
        .current
        .as_ref()
        .map(|c| format!("step `{}` (node {}, attempt {})", c.step_id, c.node, c.attempt))
        .unwrap_or_else(|| "none: the session is complete".into());
    ApiError::new(
        ErrorCode::TokenStale,
        format!(
            "this token is for node {} attempt {}, which is no longer current; the session is at {current}",
            claims.node, claims.attempt
        ),
        Retry::AfterRehydrate,
        format!(
            "rehydrate to get the current step and fresh tokens: `worktrain session rehydrate {}` (or continue_workflow with intent=rehydrate)",
            summary.session_id
        ),
    )
}
