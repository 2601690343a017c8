//! worktrain's own sessions: the engine's events (steps, blocks, runs) and the agent's
//! typed `agent_activity` events, folded into a [`Trace`] one event at a time (the caller
//! pages through the store, so memory stays bounded by the turn cap).
//!
//! Turn and call ids are `seq:<n>`: the event's sequence number in the session, which the
//! console and `worktrain session log` show, so evidence can be jumped to.

use serde_json::Value;
use worktrain_core::activity::{AgentActivity, ToolCallRecord, ToolErrorKind};
use worktrain_core::event::{EventBody, StoredEvent};
use worktrain_core::projection::SessionSummary;
use worktrain_core::run::{RunEnd, TriggerKind};

use super::builder::{CallResult, NewCall, TraceBuilder};
use crate::model::{Action, EditInfo, HarnessReply, Source, StepVisit, Tokens, Trace};
use crate::normalize::{self, bounded};
use crate::outcome::derive_outcome;

/// The git snapshots bounding what a session changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshots {
    /// The workspace repository.
    pub workspace: String,
    /// The first snapshot commit.
    pub from: String,
    /// `from` is the state before the first step (else its parent is).
    pub from_is_baseline: bool,
    /// The last snapshot commit.
    pub to: String,
}

/// Builds the trace of one worktrain session from its events.
#[derive(Debug)]
pub struct SessionTrace {
    b: TraceBuilder,
    workspace: Option<String>,
    /// The first and the last step snapshot (node, commit).
    first_snapshot: Option<(u32, String)>,
    last_snapshot: Option<String>,
    cancel_requested_at: Option<i64>,
    turn_open: bool,
    process_turns: u32,
}

fn trigger_label(kind: TriggerKind, id: Option<&str>) -> String {
    let k = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "api".to_owned());
    match id {
        Some(i) if !i.is_empty() => format!("{k}:{i}"),
        _ => k,
    }
}

/// The call a recorded tool call stands for.
fn call_of(seq: u64, r: &ToolCallRecord) -> NewCall {
    let id = format!("seq:{seq}");
    let args: Value = serde_json::from_str(&r.args).unwrap_or(Value::Null);
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let key = r.args_digest.clone().unwrap_or_else(|| r.args.clone());
    let mut c = match r.name.as_str() {
        "shell" => {
            let mut c = NewCall::shell(id, &r.name, &r.args);
            c.args_key = key;
            return c;
        }
        "read_file" => NewCall::tool(id, &r.name, Action::Read, key),
        "write_file" | "edit_file" => NewCall::tool(id, &r.name, Action::Edit, key),
        "list_files" => NewCall::tool(id, &r.name, Action::List, key),
        "search_files" => NewCall::tool(id, &r.name, Action::Search, key),
        "complete_step" => NewCall::tool(id, &r.name, Action::Submit, key),
        _ => NewCall::tool(id, &r.name, Action::Other, key),
    };
    if let Some(p) = s("path") {
        c.paths.push(p.clone());
        c.command = Some(normalize::command_text(&format!("{} {p}", r.name)));
    } else if let Some(p) = s("pattern") {
        c.command = Some(normalize::command_text(&format!("{} {p}", r.name)));
    }
    if c.action == Action::Edit {
        c.edit = Some(match &r.change {
            Some(ch) => EditInfo {
                path: ch.path.clone(),
                before: ch.before.clone(),
                after: Some(ch.after.clone()),
            },
            None => EditInfo {
                path: s("path").unwrap_or_default(),
                before: None,
                after: None,
            },
        });
    }
    c
}

impl SessionTrace {
    /// A builder for the session `id`.
    pub fn new(id: &str, max_turns: usize) -> Self {
        let mut b = TraceBuilder::new(Source::Worktrain, id, max_turns);
        b.trace().origin = Some("store".to_owned());
        Self {
            b,
            workspace: None,
            first_snapshot: None,
            last_snapshot: None,
            cancel_requested_at: None,
            turn_open: false,
            process_turns: 0,
        }
    }

    /// Fold one event.
    pub fn event(&mut self, e: &StoredEvent) {
        let seq = e.seq.0;
        let at = Some(e.created_at_ms);
        self.b.saw_time(at);
        match &e.body {
            EventBody::SessionStarted {
                workflow_id,
                goal,
                workspace,
                ..
            } => {
                self.workspace.clone_from(workspace);
                let t = self.b.trace();
                t.workflow = Some(workflow_id.as_str().to_owned());
                t.task = Some(bounded(goal, 200));
            }
            EventBody::NodeEntered { node, step_id, .. } => {
                let t = self.b.trace();
                if t.steps.len() < 10_000 {
                    t.steps.push(StepVisit {
                        step: step_id.as_str().to_owned(),
                        node: node.0,
                        entered_seq: seq,
                        blocked: 0,
                        completed: false,
                        notes_chars: 0,
                        artifacts: 0,
                    });
                }
                self.turn_open = false;
            }
            EventBody::StepBlocked { node, .. } => {
                let t = self.b.trace();
                if let Some(v) = t.steps.iter_mut().rev().find(|v| v.node == node.0) {
                    v.blocked += 1;
                }
                self.b.harness(HarnessReply::Blocked);
            }
            EventBody::StepCompleted {
                node,
                notes,
                artifacts,
                ..
            } => {
                let t = self.b.trace();
                if let Some(v) = t.steps.iter_mut().rev().find(|v| v.node == node.0) {
                    v.completed = true;
                    v.notes_chars = notes.trim().chars().count().min(u32::MAX as usize) as u32;
                    v.artifacts = artifacts.len() as u32;
                }
            }
            EventBody::RunQueued { trigger, .. } => {
                self.b.trace().trigger = Some(trigger_label(trigger.kind, trigger.id.as_deref()));
            }
            EventBody::CancelRequested { .. } => {
                self.cancel_requested_at.get_or_insert(e.created_at_ms);
            }
            EventBody::RunFinished { end, .. } => {
                if *end == RunEnd::Cancelled
                    && let Some(c) = self.cancel_requested_at.take()
                {
                    self.b.trace().cancel_latency_ms = Some(e.created_at_ms - c);
                }
            }
            EventBody::AgentActivity { activity } => self.activity(seq, at, activity),
            EventBody::StepSnapshotted { node, commit, .. } => {
                if self.first_snapshot.is_none() {
                    self.first_snapshot = Some((node.0, commit.clone()));
                }
                self.last_snapshot = Some(commit.clone());
            }
            EventBody::StepSkipped { .. }
            | EventBody::BlockSkipped { .. }
            | EventBody::StepParked { .. }
            | EventBody::GateApproved { .. }
            | EventBody::GateRejected { .. }
            | EventBody::LoopEntered { .. }
            | EventBody::LoopPassStarted { .. }
            | EventBody::LoopExited { .. }
            | EventBody::JumpTaken { .. }
            | EventBody::JumpExhausted { .. }
            | EventBody::CheckpointRecorded { .. }
            | EventBody::SessionRewound { .. }
            | EventBody::RunStarted { .. }
            | EventBody::RunInterrupted { .. }
            | EventBody::RunRequeued { .. }
            | EventBody::Steered { .. }
            | EventBody::WorktreeRestored { .. }
            | EventBody::PostMortemRecorded { .. }
            | EventBody::DeliveryStarted { .. }
            | EventBody::DeliveryStageCompleted { .. }
            | EventBody::DeliveryFailed { .. }
            | EventBody::NotificationSent { .. }
            | EventBody::NotificationFailed { .. }
            | EventBody::DeliveryFinished { .. }
            | EventBody::HookRan { .. }
            | EventBody::SourceIneligible { .. }
            | EventBody::WorkCommitted { .. }
            | EventBody::WorktreeRemoved { .. }
            | EventBody::SessionCompleted { .. } => {}
        }
    }

    fn activity(&mut self, seq: u64, at: Option<i64>, a: &AgentActivity) {
        match a {
            AgentActivity::LlmTurn(t) => {
                self.b.turn(&format!("seq:{seq}"), at, None);
                self.turn_open = true;
                if self.b.peek().model.is_none() {
                    self.b.trace().model = Some(t.model.clone());
                }
                self.b.tokens(
                    Tokens {
                        input: t.usage.input_tokens,
                        output: t.usage.output_tokens,
                        cache_read: t.usage.cache_read_input_tokens,
                        cache_write: t.usage.cache_creation_input_tokens,
                    },
                    t.cost_usd,
                );
            }
            AgentActivity::ToolCall(r) => {
                if !self.turn_open {
                    // A call recorded without its turn (a command agent's tool, or a log
                    // cut before the turn): give it one.
                    self.b.turn(&format!("seq:{seq}"), at, None);
                    self.turn_open = true;
                }
                let call = call_of(seq, r);
                let id = call.id.clone();
                self.b.call(call);
                let msg = r
                    .error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .or(r.output_tail.as_deref())
                    .unwrap_or("");
                let kind = r.error.as_ref().map(|e| e.kind);
                self.b.result(
                    &id,
                    CallResult {
                        text: msg,
                        is_error: r.error.is_some(),
                        exit_code: r.exit_code,
                        timed_out: kind == Some(ToolErrorKind::Timeout),
                        denied: kind == Some(ToolErrorKind::Denied),
                        truncated: false,
                        duration_ms: Some(r.duration_ms),
                        full_bytes: Some(r.result_bytes),
                    },
                );
                if let Some(d) = &r.result_digest
                    && let Some(c) = self
                        .b
                        .trace()
                        .turns
                        .last_mut()
                        .and_then(|t| t.calls.last_mut())
                {
                    c.output_hash = Some(d.clone());
                    c.output_empty = r.result_bytes == 0;
                }
            }
            AgentActivity::Nudged { .. } => self.b.harness(HarnessReply::Nudge),
            AgentActivity::ProcessStarted { invocation, .. } => {
                self.process_turns += 1;
                self.b.turn(&format!("seq:{seq}"), at, None);
                self.b
                    .text(&format!("external agent invocation {invocation}"));
                self.turn_open = false;
            }
            AgentActivity::RunStarted { .. }
            | AgentActivity::SteeringDelivered { .. }
            | AgentActivity::IssueReported { .. }
            | AgentActivity::StepSubmitted { .. }
            | AgentActivity::Output { .. }
            | AgentActivity::ProcessExited { .. } => {}
        }
    }

    /// What the session changed, as git snapshots in its workspace (when it has them).
    pub fn snapshots(&self) -> Option<Snapshots> {
        let (node, first) = self.first_snapshot.clone()?;
        Some(Snapshots {
            workspace: self.workspace.clone()?,
            from: first,
            // `n0` is the state before the first step; otherwise the first snapshot's
            // parent is.
            from_is_baseline: node == 0,
            to: self.last_snapshot.clone()?,
        })
    }

    /// Finish with the session's summary (the outcome comes from it).
    pub fn finish(self, summary: &SessionSummary) -> Trace {
        let mut t = self.b.finish();
        let (outcome, reason) = derive_outcome(summary);
        t.outcome = outcome;
        t.outcome_reason = reason;
        t.run_end = summary.run.as_ref().map(|r| r.state.as_str().to_owned());
        if t.workflow.is_none() {
            t.workflow = Some(summary.workflow_id.as_str().to_owned());
        }
        t
    }
}
