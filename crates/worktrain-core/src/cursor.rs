//! A session's position in its compiled program, and the pure navigator that moves it.
//!
//! The cursor is derived from events only: [`Cursor::apply`] is called by the projection
//! fold for every event, and the navigator produces events by applying each one to a
//! working copy of the cursor as it goes — so what the navigator decided and what a
//! rebuild derives are the same computation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::{CompiledWorkflow, Instr, LoopIndex, LoopKind, Pc, StepIndex};
use crate::event::{EventBody, LoopExitReason};

/// A loop decision from a `loop_control` artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopDecision {
    /// Run another pass (subject to the loop's condition and bound).
    Continue,
    /// Exit after this pass.
    Stop,
}

/// One active loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The loop, as an index into the compiled workflow's loop table.
    #[serde(rename = "loop")]
    pub loop_: LoopIndex,
    /// Passes started so far (the current pass is `passes - 1`).
    pub passes: u32,
    /// For `for` loops: the count read on entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The decision recorded during the current pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<LoopDecision>,
}

/// Where a session stands in its program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cursor {
    /// Program counter: the position in [`crate::compile::CompiledWorkflow::program`]
    /// execution resumes at.
    pub pc: Pc,
    /// Active loops, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// Jumps taken so far, by step id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jumps: BTreeMap<String, u32>,
}

/// An event that does not fit the cursor (a corrupt or foreign log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(pub String);

impl Cursor {
    /// Fold one event into the cursor. `current_pc` is the program position of the
    /// session's current step (needed by `step_completed`).
    pub fn apply(&mut self, event: &EventBody, current_pc: Option<Pc>) -> Result<(), CursorError> {
        match event {
            EventBody::NodeEntered { pc, .. } => self.pc = *pc,
            EventBody::StepSkipped { pc, .. } => self.pc = pc.next(),
            EventBody::BlockSkipped { pc, .. } => self.pc = *pc,
            EventBody::LoopEntered {
                loop_index, count, ..
            } => self.frames.push(Frame {
                loop_: *loop_index,
                passes: 0,
                count: *count,
                decision: None,
            }),
            EventBody::LoopPassStarted {
                loop_index,
                iteration,
                pc,
                ..
            } => {
                let top = self.top(*loop_index)?;
                top.passes = iteration.saturating_add(1);
                top.decision = None;
                self.pc = *pc;
            }
            EventBody::LoopExited { loop_index, pc, .. } => {
                self.top(*loop_index)?;
                self.frames.pop();
                self.pc = *pc;
            }
            EventBody::JumpTaken {
                step_id, count, pc, ..
            } => {
                self.jumps.insert(step_id.to_string(), *count);
                self.pc = *pc;
            }
            EventBody::StepCompleted { loop_decision, .. } => {
                if let Some(d) = loop_decision {
                    let frame = self
                        .frames
                        .iter_mut()
                        .rev()
                        .find(|f| f.loop_ == d.loop_index)
                        .ok_or_else(|| {
                            CursorError(format!("loop decision for inactive loop `{}`", d.loop_id))
                        })?;
                    frame.decision = Some(d.decision);
                }
                let pc = current_pc
                    .ok_or_else(|| CursorError("step completed without a current step".into()))?;
                self.pc = pc.next();
            }
            EventBody::SessionRewound { cursor, .. } => *self = cursor.clone(),
            EventBody::SessionStarted { .. }
            | EventBody::StepBlocked { .. }
            | EventBody::StepParked { .. }
            | EventBody::GateApproved { .. }
            | EventBody::GateRejected { .. }
            | EventBody::CheckpointRecorded { .. }
            | EventBody::JumpExhausted { .. }
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
            | EventBody::WorktreeRemoved { .. }
            | EventBody::SessionCompleted { .. } => {}
        }
        Ok(())
    }

    fn top(&mut self, index: LoopIndex) -> Result<&mut Frame, CursorError> {
        match self.frames.last_mut() {
            Some(f) if f.loop_ == index => Ok(f),
            _ => Err(CursorError(format!(
                "loop {} is not the innermost active loop",
                index.0
            ))),
        }
    }

    /// The context as prompts and conditions see it: the session context plus the
    /// variables of active loops (`forEach` item/index) and `worktrain.loops.<id>`.
    pub fn scope(&self, wf: &CompiledWorkflow, context: &Map<String, Value>) -> Value {
        Value::Object(scope_of(wf, context, &self.frames))
    }
}

/// The scope seen through `frames` (outermost first). A `forEach` array is looked up in
/// the scope of its enclosing loops, so an inner loop can iterate over a field of an
/// outer loop's item (`over: slice.tasks`), just as `for: {var: …}` can read it.
fn scope_of(
    wf: &CompiledWorkflow,
    context: &Map<String, Value>,
    frames: &[Frame],
) -> Map<String, Value> {
    let mut scope = context.clone();
    let mut loops = Map::new();
    for frame in frames {
        let Some(l) = wf.loop_at(frame.loop_) else {
            continue;
        };
        let iteration = frame.passes.saturating_sub(1);
        // Dotted ids (loops from routines, `verify.loop`) nest, so conditions can
        // address them as `worktrain.loops.verify.loop.pass`.
        let info = serde_json::json!({"iteration": iteration, "pass": frame.passes, "maxIterations": l.max_iterations});
        let segments: Vec<&str> = l.id.as_str().split('.').collect();
        insert_nested(&mut loops, &segments, info);
        if let LoopKind::ForEach { over, item, index } = &l.kind {
            let element = over
                .lookup(&Value::Object(scope.clone()))
                .and_then(|v| v.as_array())
                .and_then(|a| a.get(iteration as usize))
                .cloned()
                .unwrap_or(Value::Null);
            scope.insert(item.clone(), element);
            scope.insert(index.clone(), Value::from(iteration));
        }
    }
    scope.insert("worktrain".into(), serde_json::json!({ "loops": loops }));
    scope
}

/// Where the navigator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Enter this step.
    Enter {
        /// Position of the step's instruction.
        pc: Pc,
        /// The step to enter, as an index into the step table.
        step: StepIndex,
    },
    /// The program ended.
    Complete,
}

/// Transitions allowed before the navigator gives up (a compiler bug would be needed to
/// reach it: every loop is bounded).
const TRANSITION_LIMIT: usize = 1_000_000;

/// Walk forward from `cursor.pc`: evaluate run conditions, block guards and loop rules
/// against the context, producing the events that record each decision, until a step to
/// enter or the end. `cursor` is advanced by applying each produced event.
///
/// A guard is evaluated once, when execution reaches it: a block entered stays entered
/// until it ends, whatever its steps do to the context (a passed guard records nothing;
/// every later position is recorded by the events of the block's own steps and loops).
pub fn navigate(
    wf: &CompiledWorkflow,
    cursor: &mut Cursor,
    context: &Map<String, Value>,
) -> Result<(Vec<EventBody>, Stop), CursorError> {
    let mut events = Vec::new();
    let mut pc = cursor.pc;
    for _ in 0..TRANSITION_LIMIT {
        let Some(instr) = wf.instr(pc) else {
            return Ok((events, Stop::Complete));
        };
        let event = match instr {
            Instr::End => return Ok((events, Stop::Complete)),
            Instr::Step { step } => {
                let s = wf
                    .step(*step)
                    .ok_or_else(|| CursorError(format!("no step {}", step.0)))?;
                let runs = match &s.run_condition {
                    None => true,
                    Some(c) => c.evaluate(&cursor.scope(wf, context)),
                };
                if runs {
                    cursor.pc = pc;
                    return Ok((events, Stop::Enter { pc, step: *step }));
                }
                EventBody::StepSkipped {
                    step_id: s.id.clone(),
                    pc,
                    condition: s
                        .run_condition
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                }
            }
            Instr::Guard {
                id,
                condition,
                skip_to,
            } => {
                if condition.evaluate(&cursor.scope(wf, context)) {
                    pc = pc.next();
                    continue;
                }
                EventBody::BlockSkipped {
                    id: id.clone(),
                    condition: condition.to_string(),
                    pc: *skip_to,
                }
            }
            Instr::LoopHead { loop_, exit } => {
                let l = wf
                    .loop_at(*loop_)
                    .ok_or_else(|| CursorError(format!("no loop {}", loop_.0)))?;
                let fresh = cursor.frames.last().map(|f| f.loop_) != Some(*loop_);
                if fresh {
                    let count = match &l.kind {
                        LoopKind::For { count: Some(n), .. } => Some(*n),
                        LoopKind::For { var: Some(v), .. } => Some(
                            v.lookup(&cursor.scope(wf, context))
                                .and_then(Value::as_u64)
                                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                                .unwrap_or(0),
                        ),
                        LoopKind::For {
                            count: None,
                            var: None,
                        }
                        | LoopKind::While { .. }
                        | LoopKind::Until { .. }
                        | LoopKind::ForEach { .. }
                        | LoopKind::Decision => None,
                    };
                    let e = EventBody::LoopEntered {
                        loop_id: l.id.clone(),
                        loop_index: *loop_,
                        count,
                    };
                    cursor.apply(&e, None)?;
                    events.push(e);
                }
                let frame = cursor
                    .frames
                    .last()
                    .cloned()
                    .ok_or_else(|| CursorError("loop frame missing".into()))?;
                let next = frame.passes;
                let scope = {
                    // Evaluate the head with the scope of the pass about to start.
                    let mut probe = cursor.clone();
                    if let Some(f) = probe.frames.last_mut() {
                        f.passes = next.saturating_add(1);
                    }
                    probe.scope(wf, context)
                };
                // The loop's own rule first: a `for`/`forEach` that runs out exactly at the
                // bound has completed (not been cut off), a `while` that turned false exited
                // on its condition. Only a loop that would go on exits on `maxIterations`.
                let natural = match &l.kind {
                    LoopKind::While { condition } if !condition.evaluate(&scope) => {
                        Some(LoopExitReason::Condition)
                    }
                    LoopKind::For { .. } if next >= frame.count.unwrap_or(0) => {
                        Some(LoopExitReason::Completed)
                    }
                    LoopKind::ForEach { over, .. } => {
                        // Read in the scope of the enclosing loops (this loop's frame is last).
                        let enclosing = &cursor.frames[..cursor.frames.len().saturating_sub(1)];
                        let len = over
                            .lookup(&Value::Object(scope_of(wf, context, enclosing)))
                            .and_then(Value::as_array)
                            .map(Vec::len)
                            .unwrap_or(0);
                        (next as usize >= len).then_some(LoopExitReason::Completed)
                    }
                    LoopKind::While { .. }
                    | LoopKind::For { .. }
                    | LoopKind::Until { .. }
                    | LoopKind::Decision => None,
                };
                let exit_reason = natural.or_else(|| {
                    (next >= l.max_iterations).then_some(LoopExitReason::MaxIterations)
                });
                match exit_reason {
                    Some(reason) => EventBody::LoopExited {
                        loop_id: l.id.clone(),
                        loop_index: *loop_,
                        passes: frame.passes,
                        reason,
                        pc: *exit,
                    },
                    None => EventBody::LoopPassStarted {
                        loop_id: l.id.clone(),
                        loop_index: *loop_,
                        iteration: next,
                        pc: pc.next(),
                    },
                }
            }
            Instr::LoopTail { loop_, head } => {
                let l = wf
                    .loop_at(*loop_)
                    .ok_or_else(|| CursorError(format!("no loop {}", loop_.0)))?;
                let frame = cursor
                    .frames
                    .last()
                    .cloned()
                    .filter(|f| f.loop_ == *loop_)
                    .ok_or_else(|| {
                        CursorError(format!("loop `{}` tail reached outside the loop", l.id))
                    })?;
                let reason = if frame.decision == Some(LoopDecision::Stop) {
                    Some(LoopExitReason::Decision)
                } else {
                    match &l.kind {
                        LoopKind::Until { condition }
                            if condition.evaluate(&cursor.scope(wf, context)) =>
                        {
                            Some(LoopExitReason::Condition)
                        }
                        LoopKind::Until { .. }
                        | LoopKind::While { .. }
                        | LoopKind::For { .. }
                        | LoopKind::ForEach { .. }
                        | LoopKind::Decision => None,
                    }
                };
                match reason {
                    Some(reason) => EventBody::LoopExited {
                        loop_id: l.id.clone(),
                        loop_index: *loop_,
                        passes: frame.passes,
                        reason,
                        pc: pc.next(),
                    },
                    None => {
                        // Back to the head, which decides whether another pass runs.
                        pc = *head;
                        continue;
                    }
                }
            }
        };
        cursor.apply(&event, None)?;
        pc = cursor.pc;
        events.push(event);
    }
    Err(CursorError(
        "navigation did not settle; the workflow program is inconsistent".into(),
    ))
}

/// Insert `value` at a nested path, merging into objects already there.
fn insert_nested(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => match (map.get_mut(*last), value) {
            (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
            (_, value) => {
                map.insert((*last).to_owned(), value);
            }
        },
        [first, rest @ ..] => {
            let entry = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}
