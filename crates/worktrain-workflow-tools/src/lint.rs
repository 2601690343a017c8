//! Lint a workflow: problems that load and compile fine but make a workflow misbehave —
//! steps no routing ever reaches, context keys read but never produced, loops that can
//! only end by their bound, human gates in unattended workflows, and more (see [`codes`]).
//!
//! Reachability is explored with the real state machine ([`crate::simulate`]): every
//! combination of the values that routing conditions compare context keys against (plus
//! "unset"), the declared levels of assessments that conditions read, and `continue` /
//! `stop` for each loop decision, bounded to [`MAX_ROUTINGS`] runs (beyond that, a
//! deterministic sample that still varies every key through all its values).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::simulate::{Script, SimError, TraceItem, simulate};
use worktrain_core::compile::{
    CompiledWorkflow, Instr, LoopIndex, LoopKind, Pc, Pinned, RoutineResolver, StepIndex,
    compile_with,
};
use worktrain_core::condition::{CompareOp, Condition, ContextPath};
use worktrain_core::contract::ContractName;
use worktrain_core::cursor::LoopDecision;
use worktrain_core::load::{Rule, WorkflowError, parse_workflow};
use worktrain_core::workflow::GateKind;

/// The codes of lint findings.
pub mod codes {
    /// The file does not load or compile (the finding carries the broken rule).
    pub const INVALID_WORKFLOW: &str = "invalid-workflow";
    /// No explored routing enters this step (or runs a pass of this loop).
    pub const UNREACHABLE_STEP: &str = "unreachable-step";
    /// A loop with `for: 0` never runs its body.
    pub const LOOP_NEVER_RUNS: &str = "loop-never-runs";
    /// A literal `for` count above `maxIterations` is cut short by the bound.
    pub const FOR_EXCEEDS_MAX: &str = "for-exceeds-max";
    /// A condition, prompt or loop reads a context key nothing produces.
    pub const UNSET_CONTEXT_KEY: &str = "unset-context-key";
    /// A condition or prompt reads an assessment dimension no assessment declares.
    pub const UNKNOWN_DIMENSION: &str = "unknown-dimension";
    /// A condition compares an assessment dimension with a level it does not declare.
    pub const UNKNOWN_LEVEL: &str = "unknown-level";
    /// A `while`/`until` loop whose condition nothing in its body changes, and no decision step.
    pub const LOOP_WITHOUT_DECISION: &str = "loop-without-decision";
    /// A human-approval gate in a workflow marked `unattended`.
    pub const GATE_IN_UNATTENDED: &str = "gate-in-unattended";
    /// Every level of an assessment dimension blocks: the step can never complete.
    pub const ASSESSMENT_ALWAYS_BLOCKS: &str = "assessment-always-blocks";
    /// A loop's decision step has a run condition (or sits in a guarded include inside the
    /// loop): when skipped, the loop cannot be stopped.
    pub const CONDITIONAL_DECISION_STEP: &str = "conditional-decision-step";
    /// Two steps share a title (confusing in recaps and graphs).
    pub const DUPLICATE_TITLE: &str = "duplicate-title";
    /// Some explored routings could not be walked to the end.
    pub const SIMULATION_FAILED: &str = "simulation-failed";
    /// A parallel step delegates to a workflow no source provides (checked by the CLI,
    /// which knows the workflow catalog).
    pub const UNKNOWN_CHILD_WORKFLOW: &str = "unknown-child-workflow";
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The workflow is broken or cannot work as written.
    Error,
    /// Probably a mistake; the workflow still runs.
    Warning,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code (see [`codes`]).
    pub code: &'static str,
    /// The step or loop it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Where: a field of the step (`runCondition`), or a document path for load errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For load/compile errors: the rule broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for LintFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.severity.as_str(), self.code)?;
        // A load error's message already names the file, line and path.
        let path = if self.rule.is_some() {
            &None
        } else {
            &self.path
        };
        match (&self.step, path) {
            (Some(s), Some(p)) => write!(f, " {s} ({p})")?,
            (Some(s), None) => write!(f, " {s}")?,
            (None, Some(p)) => write!(f, " {p}")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Number of errors and warnings.
pub fn counts(findings: &[LintFinding]) -> (usize, usize) {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    (errors, findings.len() - errors)
}

/// Parse, compile and lint a workflow file's text. Load and compile errors are reported
/// as [`codes::INVALID_WORKFLOW`] findings with their rule.
pub fn lint_source(location: &str, text: &str, resolver: &dyn RoutineResolver) -> Vec<LintFinding> {
    match parse_workflow(location, text).and_then(|def| compile_with(&def, location, resolver)) {
        Ok(pinned) => lint(&pinned.workflow),
        Err(e) => {
            let e = if e.file.is_some() {
                e
            } else {
                e.in_file(location)
            };
            vec![invalid(&e)]
        }
    }
}

/// A load/compile error as a finding.
pub fn invalid(e: &WorkflowError) -> LintFinding {
    let about_contract = e
        .path
        .as_deref()
        .is_some_and(|p| p.ends_with("outputContract.contract"))
        || (e.message.contains("unknown variant")
            && e.path
                .as_deref()
                .is_some_and(|p| p.contains("outputContract")));
    let hint = if about_contract {
        format!(
            "use a known contract: {}",
            ContractName::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        "fix the file; the message names the line, the path inside the document and the rule broken"
            .to_owned()
    };
    LintFinding {
        severity: Severity::Error,
        code: codes::INVALID_WORKFLOW,
        step: None,
        path: e.path.clone(),
        rule: Some(e.rule),
        message: e.to_string(),
        hint,
    }
}

/// Lint a compiled workflow.
pub fn lint(wf: &CompiledWorkflow) -> Vec<LintFinding> {
    let facts = Facts::of(wf);
    let mut out = Vec::new();
    static_checks(wf, &facts, &mut out);
    reads_checks(wf, &facts, &mut out);
    explore(wf, &facts, &mut out);
    out
}

fn finding(
    severity: Severity,
    code: &'static str,
    step: impl Into<Option<String>>,
    path: Option<&str>,
    message: String,
    hint: impl Into<String>,
) -> LintFinding {
    LintFinding {
        severity,
        code,
        step: step.into(),
        path: path.map(str::to_owned),
        rule: None,
        message,
        hint: hint.into(),
    }
}

// ---------------------------------------------------------------------------------------
// What the workflow produces

/// Declared levels of each dimension of one assessment context key.
type Dimensions = BTreeMap<String, Vec<String>>;

struct Facts {
    /// Root keys set at start.
    inputs: BTreeSet<String>,
    /// Root keys some step lists in `contextOutputs`, with those steps.
    outputs: BTreeMap<String, Vec<StepIndex>>,
    /// Assessment context keys, with the steps writing them and their dimensions.
    assessments: BTreeMap<String, (Vec<StepIndex>, Dimensions)>,
}

impl Facts {
    fn of(wf: &CompiledWorkflow) -> Self {
        let mut outputs: BTreeMap<String, Vec<StepIndex>> = BTreeMap::new();
        let mut assessments: BTreeMap<String, (Vec<StepIndex>, Dimensions)> = BTreeMap::new();
        for (i, s) in wf.steps.iter().enumerate() {
            let index = StepIndex(i as u32);
            for k in &s.context_outputs {
                outputs.entry(k.clone()).or_default().push(index);
            }
            if let Some(c) = &s.output_contract
                && let (ContractName::Assessment, Some(key)) = (c.contract, &c.context_key)
            {
                let entry = assessments.entry(key.clone()).or_default();
                entry.0.push(index);
                for (dim, d) in &c.dimensions {
                    let levels = entry.1.entry(dim.clone()).or_default();
                    for l in &d.levels {
                        if !levels.contains(l) {
                            levels.push(l.clone());
                        }
                    }
                }
            }
        }
        Self {
            inputs: wf.inputs.iter().cloned().collect(),
            outputs,
            assessments,
        }
    }

    fn produced(&self, root: &str) -> bool {
        root == "worktrain"
            || self.inputs.contains(root)
            || self.outputs.contains_key(root)
            || self.assessments.contains_key(root)
    }

    /// An assessment key that nothing else writes (so its shape is known).
    fn pure_assessment(&self, root: &str) -> Option<&Dimensions> {
        if self.inputs.contains(root) || self.outputs.contains_key(root) {
            return None;
        }
        self.assessments.get(root).map(|(_, d)| d)
    }
}

/// Is `root` a variable of one of the loops in `scope` (innermost wins)? Returns the loop
/// and whether it is the item (true) or the index (false).
fn loop_var(wf: &CompiledWorkflow, scope: &[LoopIndex], root: &str) -> Option<(LoopIndex, bool)> {
    scope
        .iter()
        .rev()
        .find_map(|&l| match wf.loop_at(l).map(|x| &x.kind) {
            Some(LoopKind::ForEach { item, index, .. }) if item == root => Some((l, true)),
            Some(LoopKind::ForEach { item, index, .. }) if index == root && item != root => {
                Some((l, false))
            }
            Some(
                LoopKind::ForEach { .. }
                | LoopKind::While { .. }
                | LoopKind::Until { .. }
                | LoopKind::For { .. }
                | LoopKind::Decision,
            )
            | None => None,
        })
}

/// The loops whose body contains a step (outermost first).
fn step_scope(wf: &CompiledWorkflow, pc: Pc) -> Vec<LoopIndex> {
    wf.loops_enclosing(pc)
}

/// The scope a loop's own `while`/`until` is evaluated in.
fn loop_scope(wf: &CompiledWorkflow, l: LoopIndex) -> Vec<LoopIndex> {
    let mut s = wf
        .loop_at(l)
        .map(|x| wf.loops_enclosing(x.head))
        .unwrap_or_default();
    s.push(l);
    s
}

// ---------------------------------------------------------------------------------------
// Static checks

fn static_checks(wf: &CompiledWorkflow, facts: &Facts, out: &mut Vec<LintFinding>) {
    let mut titles: BTreeMap<&str, &str> = BTreeMap::new();
    for s in &wf.steps {
        if let Some(c) = &s.confirmation {
            match c.kind {
                GateKind::HumanApproval if wf.unattended => out.push(finding(
                    Severity::Error,
                    codes::GATE_IN_UNATTENDED,
                    s.id.to_string(),
                    Some("requireConfirmation"),
                    format!(
                        "step `{}` waits for human approval, but the workflow is marked `unattended: true`: an unattended session would park here until someone approves",
                        s.id
                    ),
                    "use `requireConfirmation: {kind: coordinator_eval}` (the coordinating process decides), drop the gate, or drop `unattended`",
                )),
                GateKind::HumanApproval | GateKind::CoordinatorEval => {}
            }
        }
        if let Some(c) = &s.output_contract {
            for (dim, d) in &c.dimensions {
                if !d.levels.is_empty() && d.levels.iter().all(|l| d.block_on.contains(l)) {
                    out.push(finding(
                        Severity::Error,
                        codes::ASSESSMENT_ALWAYS_BLOCKS,
                        s.id.to_string(),
                        Some(&format!("outputContract.dimensions.{dim}.blockOn")),
                        format!(
                            "every level of `{dim}` blocks step `{}`, so it can never complete",
                            s.id
                        ),
                        "leave at least one level out of `blockOn`",
                    ));
                }
            }
        }
        if let (Some(l), Some(_)) = (s.decides.and_then(|i| wf.loop_at(i)), &s.run_condition) {
            out.push(finding(
                Severity::Warning,
                codes::CONDITIONAL_DECISION_STEP,
                s.id.to_string(),
                Some("runCondition"),
                format!(
                    "step `{}` decides loop `{}` but has a runCondition: in passes where it is skipped nobody decides, and the loop goes on",
                    s.id, l.id
                ),
                "move the condition into the loop's `while`/`until`, or let the decision step always run",
            ));
        }
        if let Some(l) = s.decides.and_then(|i| wf.loop_at(i))
            && let Some(id) = guarded_within(wf, l.head, s.pc)
        {
            out.push(finding(
                Severity::Warning,
                codes::CONDITIONAL_DECISION_STEP,
                s.id.to_string(),
                None,
                format!(
                    "step `{}` decides loop `{}` but is part of include `{id}`, which has a runCondition: in passes where the include is skipped nobody decides, and the loop goes on",
                    s.id, l.id
                ),
                "move the condition into the loop's `while`/`until`, or let the decision step always run",
            ));
        }
        match titles.get(s.title.as_str()) {
            Some(first) => out.push(finding(
                Severity::Warning,
                codes::DUPLICATE_TITLE,
                s.id.to_string(),
                Some("title"),
                format!(
                    "step `{}` has the same title as step `{first}`: \"{}\"",
                    s.id, s.title
                ),
                "give each step a distinct title (in a routine, use `{{args.…}}` in the title)",
            )),
            None => {
                titles.insert(s.title.as_str(), s.id.as_str());
            }
        }
    }
    for (i, l) in wf.loops.iter().enumerate() {
        let index = LoopIndex(i as u32);
        match &l.kind {
            LoopKind::For { count: Some(0), .. } => out.push(finding(
                Severity::Error,
                codes::LOOP_NEVER_RUNS,
                l.id.to_string(),
                Some("loop.for"),
                format!("loop `{}` has `for: 0`: its body never runs", l.id),
                "give `for` a positive count, or remove the loop",
            )),
            LoopKind::For { count: Some(n), .. } if *n > l.max_iterations => out.push(finding(
                Severity::Warning,
                codes::FOR_EXCEEDS_MAX,
                l.id.to_string(),
                Some("loop.for"),
                format!(
                    "loop `{}` has `for: {n}` but `maxIterations: {}`: it stops after {} passes",
                    l.id, l.max_iterations, l.max_iterations
                ),
                "raise maxIterations to the count, or lower the count",
            )),
            LoopKind::While { condition } | LoopKind::Until { condition }
                if l.decision_step.is_none() =>
            {
                let body: BTreeSet<String> = wf
                    .steps
                    .iter()
                    .filter(|s| s.pc > l.head && s.pc < l.tail)
                    .flat_map(|s| {
                        let mut keys = s.context_outputs.clone();
                        if let Some(k) = s
                            .output_contract
                            .as_ref()
                            .and_then(|c| c.context_key.clone())
                        {
                            keys.push(k);
                        }
                        keys
                    })
                    .collect();
                let scope = loop_scope(wf, index);
                let changes = condition.vars().iter().any(|v| {
                    let root = v.root();
                    root == "worktrain"
                        || body.contains(root)
                        || loop_var(wf, &scope, root).is_some_and(|(li, _)| li == index)
                });
                if !changes {
                    let which = match &l.kind {
                        LoopKind::While { .. } => "while",
                        LoopKind::Until { .. }
                        | LoopKind::For { .. }
                        | LoopKind::ForEach { .. }
                        | LoopKind::Decision => "until",
                    };
                    out.push(finding(
                        Severity::Warning,
                        codes::LOOP_WITHOUT_DECISION,
                        l.id.to_string(),
                        Some(&format!("loop.{which}")),
                        format!(
                            "loop `{}` repeats {which} `{condition}`, but no step in its body produces those keys and it has no decision step: it can only end by its bound ({} passes)",
                            l.id, l.max_iterations
                        ),
                        "list the key in the `contextOutputs` of a body step that updates it, or add a decision step (outputContract loop_control)",
                    ));
                }
            }
            LoopKind::For { .. }
            | LoopKind::ForEach { .. }
            | LoopKind::While { .. }
            | LoopKind::Until { .. }
            | LoopKind::Decision => {}
        }
    }
    let _ = facts;
}

/// The innermost guarded block that starts after `after` and contains `pc`, if any.
fn guarded_within(
    wf: &CompiledWorkflow,
    after: Pc,
    pc: Pc,
) -> Option<&worktrain_core::ids::StepId> {
    wf.program
        .iter()
        .enumerate()
        .filter_map(|(g, instr)| match instr {
            Instr::Guard { id, skip_to, .. }
                if Pc(g as u32) > after && Pc(g as u32) < pc && pc < *skip_to =>
            {
                Some(id)
            }
            Instr::Guard { .. }
            | Instr::Step { .. }
            | Instr::LoopHead { .. }
            | Instr::LoopTail { .. }
            | Instr::End => None,
        })
        .next_back()
}

// ---------------------------------------------------------------------------------------
// Context reads

/// One place that reads a context path.
struct Read {
    step: Option<String>,
    /// `step `x``, `loop `y`` or `the workflow's guidance`.
    who: String,
    at: String,
    expr: String,
    path: Option<ContextPath>,
    scope: Vec<LoopIndex>,
    /// Read from the session context only (loop variables are not visible): `forEach.over`.
    raw: bool,
    /// The comparison, for conditions.
    op: Option<CompareOp>,
}

/// The `{{…}}` expressions of a template.
fn template_exprs(template: &str) -> Vec<String> {
    use worktrain_core::prompt::{Piece, pieces};
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Expr(e) => Some(e.trim().to_owned()),
            Piece::Text(_) | Piece::EscapedOpen => None,
        })
        .collect()
}

fn template_reads(
    template: &str,
    step: Option<String>,
    at: &str,
    scope: &[LoopIndex],
    reads: &mut Vec<Read>,
) {
    let who = who_of(step.as_deref(), false);
    let from_context: Vec<String> = worktrain_core::prompt::referenced_context_paths(template);
    for expr in template_exprs(template) {
        if matches!(expr.as_str(), "goal" | "workspace" | "session.id") {
            continue;
        }
        let path_text = match expr.strip_prefix("context.") {
            Some(p) if from_context.iter().any(|c| c == p) => p.to_owned(),
            Some(p) => p.to_owned(),
            None => expr.clone(),
        };
        reads.push(Read {
            step: step.clone(),
            who: who.clone(),
            at: at.to_owned(),
            path: ContextPath::parse(&path_text).ok(),
            expr: path_text,
            scope: scope.to_vec(),
            raw: false,
            op: None,
        });
    }
}

fn condition_reads(
    c: &Condition,
    step: Option<String>,
    at: &str,
    scope: &[LoopIndex],
    reads: &mut Vec<Read>,
) {
    let who = who_of(step.as_deref(), at.starts_with("loop."));
    condition_reads_by(c, step, who, at, scope, reads);
}

/// The guards of guarded loops and routine includes: (id, `loop `x``/`include `x``,
/// condition, loops enclosing the guard).
fn guards(wf: &CompiledWorkflow) -> Vec<(String, String, &Condition, Vec<LoopIndex>)> {
    wf.program
        .iter()
        .enumerate()
        .filter_map(|(pc, instr)| match instr {
            Instr::Guard { id, condition, .. } => {
                let pc = Pc(pc as u32);
                let is_loop = matches!(
                    wf.instr(pc.next()),
                    Some(Instr::LoopHead { loop_, .. }) if wf.loop_at(*loop_).is_some_and(|l| &l.id == id)
                );
                let who = if is_loop {
                    format!("loop `{id}`")
                } else {
                    format!("include `{id}`")
                };
                Some((id.to_string(), who, condition, wf.loops_enclosing(pc)))
            }
            Instr::Step { .. } | Instr::LoopHead { .. } | Instr::LoopTail { .. } | Instr::End => {
                None
            }
        })
        .collect()
}

fn condition_reads_by(
    c: &Condition,
    step: Option<String>,
    who: String,
    at: &str,
    scope: &[LoopIndex],
    reads: &mut Vec<Read>,
) {
    fn walk(c: &Condition, f: &mut dyn FnMut(&ContextPath, &CompareOp)) {
        match c {
            Condition::Compare { var, op, .. } => f(var, op),
            Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|x| walk(x, f)),
            Condition::Not(x) => walk(x, f),
        }
    }
    walk(c, &mut |var, op| {
        reads.push(Read {
            step: step.clone(),
            who: who.clone(),
            at: at.to_owned(),
            expr: var.to_string(),
            path: Some(var.clone()),
            scope: scope.to_vec(),
            raw: false,
            op: Some(op.clone()),
        })
    });
}

fn who_of(step: Option<&str>, is_loop: bool) -> String {
    match (step, is_loop) {
        (Some(id), true) => format!("loop `{id}`"),
        (Some(id), false) => format!("step `{id}`"),
        (None, _) => "the workflow's guidance".to_owned(),
    }
}

fn collect_reads(wf: &CompiledWorkflow) -> Vec<Read> {
    let mut reads = Vec::new();
    for (i, g) in wf.guidance.iter().enumerate() {
        template_reads(g, None, &format!("guidance[{i}]"), &[], &mut reads);
    }
    for s in &wf.steps {
        let scope = step_scope(wf, s.pc);
        let id = Some(s.id.to_string());
        if let Some(c) = &s.run_condition {
            condition_reads(c, id.clone(), "runCondition", &scope, &mut reads);
        }
        if let Some(w) = s.confirmation.as_ref().and_then(|c| c.when.as_ref()) {
            condition_reads(
                w,
                id.clone(),
                "requireConfirmation.when",
                &scope,
                &mut reads,
            );
        }
        template_reads(&s.prompt, id.clone(), "prompt", &scope, &mut reads);
        for (k, f) in s.fragments.iter().enumerate() {
            condition_reads(
                &f.when,
                id.clone(),
                &format!("promptFragments[{k}].when"),
                &scope,
                &mut reads,
            );
            template_reads(
                &f.text,
                id.clone(),
                &format!("promptFragments[{k}].text"),
                &scope,
                &mut reads,
            );
        }
        if let Some(j) = &s.jump {
            condition_reads(
                &j.condition,
                id.clone(),
                "jumpIf.condition",
                &scope,
                &mut reads,
            );
        }
        if let Some(d) = &s.delegation {
            for (k, c) in d.children.iter().enumerate() {
                template_reads(
                    &c.goal,
                    id.clone(),
                    &format!("parallel.children[{k}].goal"),
                    &scope,
                    &mut reads,
                );
            }
        }
    }
    for (id, who, condition, scope) in guards(wf) {
        condition_reads_by(condition, Some(id), who, "runCondition", &scope, &mut reads);
    }
    for (i, l) in wf.loops.iter().enumerate() {
        let index = LoopIndex(i as u32);
        let outer = wf.loops_enclosing(l.head);
        let id = Some(l.id.to_string());
        match &l.kind {
            LoopKind::While { condition } => condition_reads(
                condition,
                id,
                "loop.while",
                &loop_scope(wf, index),
                &mut reads,
            ),
            LoopKind::Until { condition } => condition_reads(
                condition,
                id,
                "loop.until",
                &loop_scope(wf, index),
                &mut reads,
            ),
            LoopKind::For { var: Some(v), .. } => reads.push(Read {
                who: who_of(id.as_deref(), true),
                step: id,
                at: "loop.for.var".into(),
                expr: v.to_string(),
                path: Some(v.clone()),
                scope: outer,
                raw: false,
                op: None,
            }),
            LoopKind::ForEach { over, .. } => reads.push(Read {
                who: who_of(id.as_deref(), true),
                step: id,
                at: "loop.forEach.over".into(),
                expr: over.to_string(),
                path: Some(over.clone()),
                scope: outer,
                raw: true,
                op: None,
            }),
            LoopKind::For { var: None, .. } | LoopKind::Decision => {}
        }
    }
    reads
}

fn reads_checks(wf: &CompiledWorkflow, facts: &Facts, out: &mut Vec<LintFinding>) {
    let mut seen: BTreeSet<(Option<String>, String, String)> = BTreeSet::new();
    for r in collect_reads(wf) {
        if !seen.insert((r.step.clone(), r.at.clone(), r.expr.clone())) {
            continue;
        }
        let who = &r.who;
        let Some(path) = &r.path else {
            out.push(finding(
                Severity::Warning,
                codes::UNSET_CONTEXT_KEY,
                r.step.clone(),
                Some(&r.at),
                format!("{who} uses `{{{{{}}}}}`, which is not a context path: it always renders as unset", r.expr),
                "use {{goal}}, {{workspace}}, {{session.id}}, {{context.key.path}} or a loop variable",
            ));
            continue;
        };
        let root = path.root();
        let loop_var = loop_var(wf, &r.scope, root);
        if let (true, Some((l, _))) = (r.raw, loop_var) {
            let lid = wf.loop_at(l).map(|x| x.id.to_string()).unwrap_or_default();
            out.push(finding(
                Severity::Warning,
                codes::UNSET_CONTEXT_KEY,
                r.step.clone(),
                Some(&r.at),
                format!(
                    "{who} iterates over `{}`, but `forEach.over` is read from the session context, where `{root}` (a variable of loop `{lid}`) is not visible: the loop never runs a pass",
                    r.expr
                ),
                "have a step copy the array into a context key (contextOutputs) and iterate over that key",
            ));
            continue;
        }
        if loop_var.is_some() {
            continue;
        }
        if root == "worktrain" {
            if let Some(problem) = engine_path_problem(wf, path, &r.scope, r.raw) {
                out.push(finding(
                    Severity::Warning,
                    codes::UNSET_CONTEXT_KEY,
                    r.step.clone(),
                    Some(&r.at),
                    format!("{who} reads `{}`, which is always unset: {problem}", r.expr),
                    "worktrain provides `worktrain.loops.<id>.iteration`, `.pass` and `.maxIterations` for the loops enclosing a step (and for a loop's own while/until)",
                ));
            }
            continue;
        }
        if !facts.produced(root) {
            out.push(finding(
                Severity::Warning,
                codes::UNSET_CONTEXT_KEY,
                r.step.clone(),
                Some(&r.at),
                format!(
                    "{who} reads `{}` (in `{}`), but nothing produces `{root}`: it is not in `inputs`, no step lists it in `contextOutputs`, and no assessment writes it",
                    r.expr, r.at
                ),
                format!(
                    "add `{root}` to the workflow's `inputs` (set at start with --context {root}=…) or to the `contextOutputs` of the step that sets it"
                ),
            ));
            continue;
        }
        let Some(dims) = facts.pure_assessment(root) else {
            continue;
        };
        let Some(dim) = path.segments().get(1) else {
            continue;
        };
        let Some(levels) = dims.get(dim) else {
            out.push(finding(
                Severity::Warning,
                codes::UNKNOWN_DIMENSION,
                r.step.clone(),
                Some(&r.at),
                format!(
                    "{who} reads `{}`, but the assessment writing `{root}` declares no dimension `{dim}` (it declares: {})",
                    r.expr,
                    dims.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                "fix the dimension name, or declare the dimension in the assessment's outputContract",
            ));
            continue;
        };
        if path.segments().len() != 2 {
            continue;
        }
        let compared: Vec<&Value> = match &r.op {
            Some(CompareOp::Equals(v) | CompareOp::NotEquals(v)) => vec![v],
            Some(CompareOp::In(vs)) => vs.iter().collect(),
            Some(
                CompareOp::Gt(_)
                | CompareOp::Gte(_)
                | CompareOp::Lt(_)
                | CompareOp::Lte(_)
                | CompareOp::Contains(_)
                | CompareOp::Exists(_),
            )
            | None => Vec::new(),
        };
        for v in compared {
            let known = v.as_str().is_some_and(|s| levels.iter().any(|l| l == s));
            if !known && !v.is_null() {
                out.push(finding(
                    Severity::Warning,
                    codes::UNKNOWN_LEVEL,
                    r.step.clone(),
                    Some(&r.at),
                    format!(
                        "{who} compares `{}` with {v}, which is not a declared level ({}): that comparison never matches",
                        r.expr,
                        levels.join(", ")
                    ),
                    "use one of the declared levels",
                ));
            }
        }
    }
}

/// Why a `worktrain.*` path read at a site with loops `scope` is never set, if it is not.
fn engine_path_problem(
    wf: &CompiledWorkflow,
    path: &ContextPath,
    scope: &[LoopIndex],
    raw: bool,
) -> Option<String> {
    if raw {
        return Some(
            "`forEach.over` is read from the session context, where `worktrain.*` is not visible"
                .into(),
        );
    }
    let segs = path.segments();
    if segs.len() == 1 {
        return None;
    }
    if segs[1] != "loops" {
        return Some(format!("worktrain provides no `worktrain.{}`", segs[1]));
    }
    let id = segs.get(2)?;
    let enclosing: Vec<&str> = scope
        .iter()
        .filter_map(|&l| wf.loop_at(l).map(|x| x.id.as_str()))
        .collect();
    if !enclosing.contains(&id.as_str()) {
        let rest = segs[2..].join(".");
        if let Some(dotted) = enclosing
            .iter()
            .find(|e| e.contains('.') && rest.starts_with(&format!("{e}.")))
        {
            return Some(format!(
                "loop `{dotted}` has a dot in its id (it comes from a routine), and the path splits there; the engine keys `worktrain.loops` by the whole id, so it cannot be addressed"
            ));
        }
        return Some(format!(
            "no loop `{id}` encloses this place (enclosing: {})",
            if enclosing.is_empty() {
                "none".to_owned()
            } else {
                enclosing.join(", ")
            }
        ));
    }
    match segs.get(3).map(String::as_str) {
        None | Some("iteration" | "pass" | "maxIterations") if segs.len() <= 4 => None,
        _ => Some(format!(
            "`worktrain.loops.{id}` has only `iteration`, `pass` and `maxIterations`"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Reachability

/// Upper bound on simulated routings per workflow.
pub const MAX_ROUTINGS: usize = 1024;

/// Upper bound on step entries per simulated routing.
const MAX_NODES_PER_RUN: u64 = 5_000;

/// Upper bound on step entries over all routings of one workflow (keeps lint fast on
/// workflows with large loop bounds); exploration stops early when it is reached.
const MAX_TOTAL_ENTRIES: usize = 200_000;

/// One alternative value of an exploration dimension.
#[derive(Debug, Clone, PartialEq)]
enum Cand {
    Unset,
    Val(Value),
    /// One-element array for a `forEach` loop (its element built from item paths).
    Items(LoopIndex),
}

/// What an exploration dimension varies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A context path.
    Context(Vec<String>),
    /// A path inside the element of a `forEach` loop.
    Item(LoopIndex, Vec<String>),
    /// A loop's `loop_control` decisions.
    Decision(LoopIndex),
}

fn add_cand(cands: &mut Vec<Cand>, c: Cand) {
    if !cands.contains(&c) {
        cands.push(c);
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn op_cands(op: &CompareOp) -> Vec<Cand> {
    match op {
        CompareOp::Equals(v) | CompareOp::NotEquals(v) => vec![Cand::Val(v.clone())],
        CompareOp::In(vs) => vs.iter().cloned().map(Cand::Val).collect(),
        CompareOp::Contains(x) => vec![Cand::Val(Value::Array(vec![x.clone()]))],
        CompareOp::Gt(n) | CompareOp::Gte(n) | CompareOp::Lt(n) | CompareOp::Lte(n) => {
            vec![
                Cand::Val(number(n - 1.0)),
                Cand::Val(number(*n)),
                Cand::Val(number(n + 1.0)),
            ]
        }
        CompareOp::Exists(_) => vec![Cand::Val(Value::Bool(true))],
    }
    .into_iter()
    .filter(|c| !matches!(c, Cand::Val(Value::Null)))
    .collect()
}

struct Space {
    dims: Vec<(Target, Vec<Cand>)>,
}

fn space(wf: &CompiledWorkflow, facts: &Facts) -> Space {
    let mut dims: BTreeMap<Target, Vec<Cand>> = BTreeMap::new();
    fn add(dims: &mut BTreeMap<Target, Vec<Cand>>, target: Target, cands: Vec<Cand>) {
        let entry = dims.entry(target).or_insert_with(|| vec![Cand::Unset]);
        for c in cands {
            add_cand(entry, c);
        }
    }
    let mut sites: Vec<(&Condition, Vec<LoopIndex>)> = Vec::new();
    for s in &wf.steps {
        let scope = step_scope(wf, s.pc);
        if let Some(c) = &s.run_condition {
            sites.push((c, scope.clone()));
        }
        if let Some(j) = &s.jump {
            sites.push((&j.condition, scope));
        }
    }
    for (_, _, condition, scope) in guards(wf) {
        sites.push((condition, scope));
    }
    for (i, l) in wf.loops.iter().enumerate() {
        let index = LoopIndex(i as u32);
        let outer = wf.loops_enclosing(l.head);
        match &l.kind {
            LoopKind::While { condition } | LoopKind::Until { condition } => {
                sites.push((condition, loop_scope(wf, index)))
            }
            LoopKind::For { var: Some(v), .. } => {
                let cands = vec![Cand::Val(json!(1)), Cand::Val(json!(2))];
                match loop_var(wf, &outer, v.root()) {
                    Some((li, true)) => add(
                        &mut dims,
                        Target::Item(li, v.segments()[1..].to_vec()),
                        cands,
                    ),
                    Some((_, false)) => {}
                    None => add(&mut dims, Target::Context(v.segments().to_vec()), cands),
                }
            }
            LoopKind::ForEach { over, .. } => {
                if loop_var(wf, &outer, over.root()).is_none() {
                    add(
                        &mut dims,
                        Target::Context(over.segments().to_vec()),
                        vec![Cand::Items(index)],
                    );
                }
            }
            LoopKind::For { var: None, .. } | LoopKind::Decision => {}
        }
        if l.decision_step.is_some() {
            dims.insert(
                Target::Decision(index),
                vec![Cand::Val(json!("stop")), Cand::Val(json!("continue"))],
            );
        }
    }
    for (c, scope) in sites {
        fn walk(c: &Condition, f: &mut dyn FnMut(&ContextPath, &CompareOp)) {
            match c {
                Condition::Compare { var, op, .. } => f(var, op),
                Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|x| walk(x, f)),
                Condition::Not(x) => walk(x, f),
            }
        }
        walk(c, &mut |var, op| {
            let root = var.root();
            if root == "worktrain" {
                return;
            }
            match loop_var(wf, &scope, root) {
                Some((li, true)) => add(
                    &mut dims,
                    Target::Item(li, var.segments()[1..].to_vec()),
                    op_cands(op),
                ),
                Some((_, false)) => {}
                None => {
                    let segs = var.segments().to_vec();
                    // Assessment dimensions take their declared, non-blocking levels.
                    if let (Some(declared), Some(dim), 2) =
                        (facts.pure_assessment(root), segs.get(1), segs.len())
                        && let Some(levels) = declared.get(dim)
                    {
                        let open: Vec<Cand> = levels
                            .iter()
                            .filter(|lv| !blocks_everywhere(wf, facts, root, dim, lv))
                            .map(|lv| Cand::Val(Value::String(lv.clone())))
                            .collect();
                        add(&mut dims, Target::Context(segs), open);
                        return;
                    }
                    add(&mut dims, Target::Context(segs), op_cands(op));
                }
            }
        });
    }
    // Assessment dimensions are always set once their step ran: no "unset" alternative.
    for (target, cands) in dims.iter_mut() {
        if let Target::Context(segs) = target
            && segs.len() == 2
            && facts
                .pure_assessment(&segs[0])
                .is_some_and(|d| d.contains_key(&segs[1]))
        {
            cands.retain(|c| *c != Cand::Unset);
            if cands.is_empty() {
                cands.push(Cand::Unset);
            }
        }
    }
    Space {
        dims: dims.into_iter().collect(),
    }
}

/// Whether `level` blocks every step that writes this assessment dimension.
fn blocks_everywhere(
    wf: &CompiledWorkflow,
    facts: &Facts,
    key: &str,
    dim: &str,
    level: &str,
) -> bool {
    let Some((steps, _)) = facts.assessments.get(key) else {
        return false;
    };
    steps.iter().filter_map(|&i| wf.step(i)).all(|s| {
        s.output_contract
            .as_ref()
            .and_then(|c| c.dimensions.get(dim))
            .is_some_and(|d| d.block_on.iter().any(|b| b == level))
    })
}

fn set_path(target: &mut Value, segs: &[String], v: Value) {
    let Some((first, rest)) = segs.split_first() else {
        *target = v;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(m) = target {
        let slot = m.entry(first.clone()).or_insert(Value::Null);
        set_path(slot, rest, v);
    }
}

impl Space {
    fn total(&self) -> u128 {
        self.dims.iter().fold(1u128, |acc, (_, c)| {
            acc.saturating_mul(c.len().max(1) as u128)
        })
    }

    /// The combinations to run: all of them when few enough, else a deterministic sample
    /// that varies each dimension through all its values.
    fn combinations(&self) -> (Vec<Vec<usize>>, bool) {
        let sizes: Vec<usize> = self.dims.iter().map(|(_, c)| c.len().max(1)).collect();
        if self.total() <= MAX_ROUTINGS as u128 {
            let mut all = Vec::new();
            let mut combo = vec![0usize; sizes.len()];
            loop {
                all.push(combo.clone());
                let mut k = 0;
                loop {
                    if k == sizes.len() {
                        return (all, true);
                    }
                    combo[k] += 1;
                    if combo[k] < sizes[k] {
                        break;
                    }
                    combo[k] = 0;
                    k += 1;
                }
            }
        }
        let mut picked: Vec<Vec<usize>> = Vec::new();
        let push = |c: Vec<usize>, picked: &mut Vec<Vec<usize>>| {
            if picked.len() < MAX_ROUTINGS && !picked.contains(&c) {
                picked.push(c);
            }
        };
        let widest = sizes.iter().copied().max().unwrap_or(1);
        for k in 0..widest {
            push(
                sizes
                    .iter()
                    .enumerate()
                    .map(|(j, &n)| (k + j) % n)
                    .collect(),
                &mut picked,
            );
        }
        for base in [0usize, usize::MAX] {
            let baseline: Vec<usize> = sizes
                .iter()
                .map(|&n| if base == 0 { 0 } else { n - 1 })
                .collect();
            for (j, &n) in sizes.iter().enumerate() {
                for v in 0..n {
                    let mut c = baseline.clone();
                    c[j] = v;
                    push(c, &mut picked);
                }
            }
        }
        // Fill up with a fixed pseudo-random sequence (deterministic).
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut tries = 0;
        while picked.len() < MAX_ROUTINGS && tries < MAX_ROUTINGS * 8 {
            tries += 1;
            let c = sizes
                .iter()
                .map(|&n| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 33) % n as u64) as usize
                })
                .collect();
            push(c, &mut picked);
        }
        (picked, false)
    }

    fn describe(&self, wf: &CompiledWorkflow, combo: &[usize]) -> String {
        let mut parts = Vec::new();
        for ((target, cands), &i) in self.dims.iter().zip(combo) {
            let Some(c) = cands.get(i) else { continue };
            let value = match c {
                Cand::Unset => continue,
                Cand::Val(v) => v.to_string(),
                Cand::Items(_) => "[one item]".to_owned(),
            };
            let name = match target {
                Target::Context(segs) => segs.join("."),
                Target::Item(l, segs) => {
                    let id = wf.loop_at(*l).map(|x| x.id.to_string()).unwrap_or_default();
                    format!("{id}[item].{}", segs.join("."))
                }
                Target::Decision(l) => {
                    let id = wf.loop_at(*l).map(|x| x.id.to_string()).unwrap_or_default();
                    format!("decide {id}")
                }
            };
            parts.push(format!("{name}={value}"));
        }
        if parts.is_empty() {
            "nothing set".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The scripted agent for one combination.
    fn script(&self, wf: &CompiledWorkflow, facts: &Facts, combo: &[usize]) -> Script {
        let chosen: Vec<(&Target, &Cand)> = self
            .dims
            .iter()
            .zip(combo)
            .filter_map(|((t, cands), &i)| cands.get(i).map(|c| (t, c)))
            .collect();
        let mut elements: BTreeMap<LoopIndex, Value> = BTreeMap::new();
        for (t, c) in &chosen {
            if let (Target::Item(l, segs), Cand::Val(v)) = (t, c) {
                set_path(elements.entry(*l).or_insert(Value::Null), segs, v.clone());
            }
        }
        let mut roots: BTreeMap<String, Value> = BTreeMap::new();
        let mut set_roots: BTreeSet<String> = BTreeSet::new();
        let mut decisions = BTreeMap::new();
        let mut sorted: Vec<&(&Target, &Cand)> = chosen.iter().collect();
        sorted.sort_by_key(|(t, _)| match t {
            Target::Context(s) => s.len(),
            Target::Item(..) | Target::Decision(_) => 0,
        });
        for (t, c) in sorted {
            match (t, c) {
                (Target::Context(segs), Cand::Val(v)) => {
                    let slot = roots.entry(segs[0].clone()).or_insert(Value::Null);
                    set_path(slot, &segs[1..], v.clone());
                    set_roots.insert(segs[0].clone());
                }
                (Target::Context(segs), Cand::Items(l)) => {
                    let element = match elements.get(l) {
                        Some(e) if !e.is_null() => e.clone(),
                        Some(_) | None => json!("item"),
                    };
                    let slot = roots.entry(segs[0].clone()).or_insert(Value::Null);
                    set_path(slot, &segs[1..], Value::Array(vec![element]));
                    set_roots.insert(segs[0].clone());
                }
                (Target::Decision(l), Cand::Val(v)) => {
                    let id = wf.loop_at(*l).map(|x| x.id.to_string()).unwrap_or_default();
                    let seq = if v == "continue" {
                        vec![LoopDecision::Continue, LoopDecision::Stop]
                    } else {
                        vec![LoopDecision::Stop]
                    };
                    decisions.insert(id, seq);
                }
                (Target::Context(_) | Target::Item(..) | Target::Decision(_), Cand::Unset)
                | (Target::Item(..), Cand::Val(_) | Cand::Items(_))
                | (Target::Decision(_), Cand::Items(_)) => {}
            }
        }
        let mut script = Script {
            decisions,
            max_nodes: Some(wf.node_bound.clamp(1, MAX_NODES_PER_RUN)),
            ..Script::default()
        };
        // Every step that must set a key sets it (to the chosen value, or a placeholder).
        for (key, steps) in &facts.outputs {
            let value = match roots.get(key) {
                Some(v) if set_roots.contains(key) && !v.is_null() => v.clone(),
                Some(_) | None => json!("simulated"),
            };
            for &s in steps {
                if let Some(step) = wf.step(s) {
                    script
                        .at
                        .entry(step.id.to_string())
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
            }
        }
        // Assessment levels go into the artifacts of the steps that write them.
        for (key, (steps, _)) in &facts.assessments {
            if facts.pure_assessment(key).is_none() {
                continue;
            }
            for &s in steps {
                let Some(step) = wf.step(s) else { continue };
                let Some(c) = &step.output_contract else {
                    continue;
                };
                let mut dims = Map::new();
                for (dim, d) in &c.dimensions {
                    let chosen = roots
                        .get(key)
                        .and_then(|v| v.get(dim))
                        .and_then(Value::as_str)
                        .filter(|l| {
                            d.levels.iter().any(|x| x == l) && !d.block_on.iter().any(|b| b == l)
                        })
                        .map(str::to_owned);
                    let default = d
                        .levels
                        .iter()
                        .find(|l| !d.block_on.contains(l))
                        .or(d.levels.first())
                        .cloned();
                    if let Some(level) = chosen.or(default) {
                        dims.insert(dim.clone(), Value::String(level));
                    }
                }
                script.artifacts.insert(
                    step.id.to_string(),
                    json!({"kind": "assessment", "dimensions": dims}),
                );
            }
        }
        // Everything else is there from the start.
        for (key, v) in roots {
            if !set_roots.contains(&key) || v.is_null() {
                continue;
            }
            let by_step = facts.outputs.contains_key(&key) || facts.pure_assessment(&key).is_some();
            if !by_step || facts.inputs.contains(&key) {
                script.context.insert(key, v);
            }
        }
        script
    }
}

/// Passes a loop runs at most while exploring (unless a condition tests a higher pass
/// number): keeps every routing short without changing which steps can be reached.
const EXPLORE_PASSES: u32 = 8;

/// The workflow as explored: loops capped at [`EXPLORE_PASSES`], or two more than the
/// highest pass number a condition compares `worktrain.loops.<id>.*` with.
fn exploration_copy(wf: &CompiledWorkflow) -> CompiledWorkflow {
    let reads = collect_reads(wf);
    let mut copy = wf.clone();
    for l in &mut copy.loops {
        let tested = reads
            .iter()
            .filter(|r| {
                r.path.as_ref().is_some_and(|p| {
                    let s = p.segments();
                    s.len() == 4 && s[0] == "worktrain" && s[1] == "loops" && s[2] == l.id.as_str()
                })
            })
            .filter_map(|r| match &r.op {
                Some(CompareOp::Equals(v) | CompareOp::NotEquals(v)) => v.as_f64(),
                Some(CompareOp::In(vs)) => vs.iter().filter_map(Value::as_f64).reduce(f64::max),
                Some(
                    CompareOp::Gt(n) | CompareOp::Gte(n) | CompareOp::Lt(n) | CompareOp::Lte(n),
                ) => Some(*n),
                Some(CompareOp::Contains(_) | CompareOp::Exists(_)) | None => None,
            })
            .fold(0.0f64, f64::max);
        let cap = EXPLORE_PASSES.max((tested.clamp(0.0, 1000.0) as u32).saturating_add(2));
        l.max_iterations = l.max_iterations.min(cap);
    }
    copy
}

fn explore(wf: &CompiledWorkflow, facts: &Facts, out: &mut Vec<LintFinding>) {
    let pinned = match Pinned::new(exploration_copy(wf)) {
        Ok(p) => p,
        Err(e) => {
            out.push(invalid(&e));
            return;
        }
    };
    let space = space(wf, facts);
    let (combos, exhaustive) = space.combinations();
    let mut entered: BTreeSet<String> = BTreeSet::new();
    let mut passed: BTreeSet<String> = BTreeSet::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut spent = 0usize;
    let mut ran = 0usize;
    let mut truncated = 0usize;
    for combo in &combos {
        if spent >= MAX_TOTAL_ENTRIES {
            break;
        }
        ran += 1;
        let script = space.script(wf, facts, combo);
        match simulate(&pinned, &script) {
            Ok(trace) => {
                spent += trace.steps.len();
                for item in &trace.path {
                    match item {
                        TraceItem::Enter { step, .. } => {
                            entered.insert(step.clone());
                        }
                        TraceItem::Pass { loop_, .. } => {
                            passed.insert(loop_.clone());
                        }
                        TraceItem::Skip { .. }
                        | TraceItem::BlockSkip { .. }
                        | TraceItem::Exit { .. }
                        | TraceItem::Jump { .. }
                        | TraceItem::JumpExhausted { .. }
                        | TraceItem::Complete => {}
                    }
                }
            }
            // Cut by our per-run cap (below the compiler's bound): inconclusive, not a failure.
            Err(SimError::Limit(n)) if n < wf.node_bound => {
                truncated += 1;
                spent = spent.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            }
            Err(SimError::Capped { cap: n, .. } | SimError::TimeBudget { entered: n, .. }) => {
                truncated += 1;
                spent = spent.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            }
            Err(e) => failed.push((space.describe(wf, combo), e.to_string())),
        }
    }
    if let Some((combo, err)) = failed.first() {
        out.push(finding(
            Severity::Warning,
            codes::SIMULATION_FAILED,
            None,
            None,
            format!(
                "{} of {} explored routings could not be walked to the end; the first ({combo}): {err}",
                failed.len(),
                ran
            ),
            "reproduce it with `worktrain workflow simulate` and the values shown; reachability is not reported until every routing completes",
        ));
        return;
    }
    if truncated > 0 {
        // Some routings were cut before completing: what they reached is unknown, so
        // nothing can be called unreachable.
        return;
    }
    let how = if exhaustive && ran == combos.len() {
        format!(
            "{ran} explored routings (every combination of the values its conditions test, plus unset)"
        )
    } else {
        format!(
            "{ran} explored routings (a sample of the {} combinations of the values its conditions test)",
            space.total()
        )
    };

    let hint = "check the runCondition, loop conditions and jumps on the way to it: the values explored are the literals conditions compare against, plus unset; `worktrain workflow simulate` shows a path";
    let dead_loop = |l: LoopIndex| -> bool {
        wf.loop_at(l)
            .is_some_and(|x| !passed.contains(x.id.as_str()))
    };
    let for_zero = |l: LoopIndex| {
        wf.loop_at(l)
            .is_some_and(|x| matches!(x.kind, LoopKind::For { count: Some(0), .. }))
    };
    for (i, l) in wf.loops.iter().enumerate() {
        let index = LoopIndex(i as u32);
        if !dead_loop(index) || for_zero(index) || l.parent.is_some_and(&dead_loop) {
            continue;
        }
        out.push(finding(
            Severity::Warning,
            codes::UNREACHABLE_STEP,
            l.id.to_string(),
            Some("loop"),
            format!("loop `{}` never runs a pass in any of the {how}", l.id),
            hint,
        ));
    }
    for s in &wf.steps {
        if entered.contains(s.id.as_str()) || step_scope(wf, s.pc).into_iter().any(dead_loop) {
            continue;
        }
        out.push(finding(
            Severity::Warning,
            codes::UNREACHABLE_STEP,
            s.id.to_string(),
            None,
            format!("step `{}` is never entered in any of the {how}", s.id),
            hint,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktrain_core::compile::{NoRoutines, compile};

    const HEAD: &str = "schemaVersion: 2\nid: t\nname: T\ndescription: d\nversion: '1'\n";

    fn run(body: &str) -> Vec<LintFinding> {
        let text = format!("{HEAD}{body}");
        lint_source("t.yaml", &text, &NoRoutines)
    }

    fn codes_of(f: &[LintFinding]) -> Vec<&'static str> {
        f.iter().map(|x| x.code).collect()
    }

    #[test]
    fn a_clean_workflow_has_no_findings() {
        let f = run(
            "inputs: [size]\nsteps:\n  - id: a\n    title: A\n    prompt: 'do {{context.size}} for {{goal}}'\n  - id: b\n    title: B\n    prompt: b\n    runCondition: {var: size, equals: big}\n",
        );
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn load_errors_are_findings_with_their_rule() {
        let f = run(
            "steps:\n  - id: a\n    title: A\n    prompt: a\n    outputContract: {contract: verdikt}\n",
        );
        assert_eq!(codes_of(&f), [codes::INVALID_WORKFLOW]);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].rule, Some(Rule::Value));
        assert!(f[0].message.contains("t.yaml"), "{}", f[0]);
        assert!(f[0].hint.contains("review_verdict"), "{}", f[0].hint);
        let f = run(
            "steps:\n  - id: a\n    title: A\n    prompt: a\n    jumpIf: {condition: {var: x, equals: 1}, target: zz, maxJumps: 1}\n",
        );
        assert_eq!(f[0].rule, Some(Rule::Reference), "{f:?}");
        assert!(f[0].message.contains("zz"), "{f:?}");
    }

    #[test]
    fn unreachable_steps_are_found_by_exploring_routing() {
        // `b` needs mode=x and mode=y at once; `c` is inside a `for: 0` loop.
        let f = run(
            "inputs: [mode]\nsteps:\n  - id: a\n    title: A\n    prompt: a\n  - id: b\n    title: B\n    prompt: b\n    runCondition: {and: [{var: mode, equals: x}, {var: mode, equals: y}]}\n  - id: z\n    loop: {for: 0, maxIterations: 2}\n    steps:\n      - id: c\n        title: C\n        prompt: c\n  - id: d\n    title: D\n    prompt: d\n    runCondition: {var: mode, in: [x, y]}\n",
        );
        let unreachable: Vec<&str> = f
            .iter()
            .filter(|x| x.code == codes::UNREACHABLE_STEP)
            .filter_map(|x| x.step.as_deref())
            .collect();
        assert_eq!(unreachable, ["b"], "{f:#?}");
        assert!(
            f.iter()
                .any(|x| x.code == codes::LOOP_NEVER_RUNS && x.severity == Severity::Error),
            "{f:#?}"
        );
        assert!(
            f.iter()
                .find(|x| x.step.as_deref() == Some("b"))
                .unwrap()
                .message
                .contains("every combination")
        );
    }

    #[test]
    fn guards_of_loops_count_as_reads_and_as_routing() {
        // The guard reads `mode`: explored with mode=fix (entered) and unset (skipped).
        let f = run(
            "inputs: [mode]\nsteps:\n  - id: a\n    title: A\n    prompt: a\n  - id: fixing\n    runCondition: {var: mode, equals: fix}\n    loop: {for: 1, maxIterations: 1}\n    steps:\n      - id: b\n        title: B\n        prompt: b\n",
        );
        assert!(f.is_empty(), "{f:#?}");
        // A guard reading a key nothing produces.
        let f = run(
            "steps:\n  - id: a\n    title: A\n    prompt: a\n  - id: fixing\n    runCondition: {var: nope, equals: fix}\n    loop: {for: 1, maxIterations: 1}\n    steps:\n      - id: b\n        title: B\n        prompt: b\n",
        );
        assert_eq!(codes_of(&f), [codes::UNSET_CONTEXT_KEY], "{f:#?}");
        assert_eq!(f[0].step.as_deref(), Some("fixing"));
        assert_eq!(f[0].path.as_deref(), Some("runCondition"));
        assert!(
            f[0].message.starts_with("loop `fixing` reads `nope`"),
            "{}",
            f[0]
        );
        // A guard that never holds: the loop never runs a pass.
        let f = run(
            "inputs: [mode]\nsteps:\n  - id: a\n    title: A\n    prompt: a\n  - id: fixing\n    runCondition: {and: [{var: mode, equals: x}, {var: mode, equals: y}]}\n    loop: {for: 1, maxIterations: 1}\n    steps:\n      - id: b\n        title: B\n        prompt: b\n",
        );
        let unreachable: Vec<&str> = f
            .iter()
            .filter(|x| x.code == codes::UNREACHABLE_STEP)
            .filter_map(|x| x.step.as_deref())
            .collect();
        assert_eq!(unreachable, ["fixing"], "{f:#?}");
    }

    #[test]
    fn a_decision_step_in_a_guarded_include_is_conditional() {
        struct One;
        impl RoutineResolver for One {
            fn resolve(
                &self,
                _: &str,
                _: &str,
            ) -> Result<worktrain_core::compile::RoutineSource, String> {
                Ok(worktrain_core::compile::RoutineSource {
                    location: "mem:decide".into(),
                    text: "schemaVersion: 2\nroutine: decide\ndescription: d\nsteps:\n  - id: decide\n    title: Decide\n    prompt: d\n    outputContract: {contract: loop_control}\n".into(),
                })
            }
        }
        let body = |guard: &str| {
            format!(
                "{HEAD}inputs: [mode]\nsteps:\n  - id: again\n    loop: {{maxIterations: 3}}\n    steps:\n      - id: work\n        title: Work\n        prompt: w\n      - id: d\n        include: decide\n{guard}"
            )
        };
        let f = lint_source("t.yaml", &body(""), &One);
        assert!(f.is_empty(), "{f:#?}");
        let f = lint_source(
            "t.yaml",
            &body("        runCondition: {var: mode, equals: x}\n"),
            &One,
        );
        assert_eq!(codes_of(&f), [codes::CONDITIONAL_DECISION_STEP], "{f:#?}");
        assert_eq!(f[0].step.as_deref(), Some("d.decide"));
        assert!(f[0].message.contains("part of include `d`"), "{}", f[0]);
    }

    #[test]
    fn reachability_uses_assessment_levels_decisions_and_items() {
        let f = run(
            "inputs: [plan]\nsteps:\n  - id: size\n    title: Size\n    prompt: s\n    outputContract: {contract: assessment, dimensions: {risk: {levels: [low, high]}}}\n  - id: careful\n    title: Careful\n    prompt: c\n    runCondition: {var: assessment.risk, equals: high}\n  - id: slices\n    loop: {forEach: {over: plan, as: slice}, maxIterations: 5}\n    steps:\n      - id: big\n        title: Big slice\n        prompt: '{{slice.title}}'\n        runCondition: {var: slice.kind, equals: big}\n  - id: again\n    loop: {maxIterations: 3}\n    steps:\n      - id: decide\n        title: Decide\n        prompt: d\n        outputContract: {contract: loop_control}\n      - id: second\n        title: Second pass\n        prompt: p\n        runCondition: {var: worktrain.loops.again.iteration, gte: 1}\n",
        );
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn unknown_levels_dimensions_and_unset_keys() {
        let f = run(
            "steps:\n  - id: size\n    title: Size\n    prompt: s\n    outputContract: {contract: assessment, dimensions: {risk: {levels: [low, high]}}}\n  - id: careful\n    title: Careful\n    prompt: 'c {{context.assessment.size}} {{context.nope}} {{ weird expr }}'\n    runCondition: {var: assessment.risk, equals: hihg}\n  - id: last\n    title: Last\n    prompt: l\n    runCondition: {var: missing, exists: true}\n",
        );
        let c = codes_of(&f);
        assert!(c.contains(&codes::UNKNOWN_LEVEL), "{f:#?}");
        assert!(c.contains(&codes::UNKNOWN_DIMENSION), "{f:#?}");
        let unset: Vec<&str> = f
            .iter()
            .filter(|x| x.code == codes::UNSET_CONTEXT_KEY)
            .map(|x| x.message.as_str())
            .collect();
        assert_eq!(unset.len(), 3, "{f:#?}");
        assert!(unset.iter().any(|m| m.contains("`nope`")));
        assert!(unset.iter().any(|m| m.contains("weird expr")));
        assert!(unset.iter().any(|m| m.contains("`missing`")));
        // `careful` compares with a level that does not exist: unreachable too.
        assert!(
            f.iter()
                .any(|x| x.code == codes::UNREACHABLE_STEP && x.step.as_deref() == Some("careful")),
            "{f:#?}"
        );
    }

    #[test]
    fn loops_gates_and_titles() {
        let f = run(
            "unattended: true\ninputs: [flag, items]\nsteps:\n  - id: gate\n    title: Same\n    prompt: g\n    requireConfirmation: true\n  - id: coord\n    title: Same\n    prompt: c\n    requireConfirmation: {kind: coordinator_eval}\n  - id: spin\n    loop: {while: {var: flag, equals: true}, maxIterations: 3}\n    steps:\n      - id: s\n        title: Spin\n        prompt: s\n  - id: fine\n    loop: {until: {var: done, equals: true}, maxIterations: 3}\n    steps:\n      - id: t\n        title: Try\n        prompt: t\n        contextOutputs: [done]\n  - id: outer\n    loop: {forEach: {over: items, as: it}, maxIterations: 3}\n    steps:\n      - id: inner\n        loop: {forEach: {over: it.parts, as: part}, maxIterations: 3}\n        steps:\n          - id: p\n            title: Part\n            prompt: p\n",
        );
        let c = codes_of(&f);
        assert_eq!(
            f.iter()
                .filter(|x| x.code == codes::GATE_IN_UNATTENDED)
                .map(|x| x.step.as_deref())
                .collect::<Vec<_>>(),
            [Some("gate")],
            "{f:#?}"
        );
        assert_eq!(
            f.iter()
                .filter(|x| x.code == codes::LOOP_WITHOUT_DECISION)
                .count(),
            1,
            "{f:#?}"
        );
        assert!(
            f.iter().any(
                |x| x.code == codes::LOOP_WITHOUT_DECISION && x.step.as_deref() == Some("spin")
            )
        );
        assert!(c.contains(&codes::DUPLICATE_TITLE), "{f:#?}");
        // Nested forEach over a loop variable never runs (over is read from the context).
        assert!(
            f.iter()
                .any(|x| x.code == codes::UNSET_CONTEXT_KEY && x.step.as_deref() == Some("inner")),
            "{f:#?}"
        );
        assert!(
            f.iter()
                .any(|x| x.code == codes::UNREACHABLE_STEP && x.step.as_deref() == Some("inner")),
            "{f:#?}"
        );
        assert_eq!(counts(&f).0, 1, "{f:#?}");
    }

    #[test]
    fn assessment_blocking_and_conditional_decisions() {
        let f = run(
            "inputs: [x]\nsteps:\n  - id: a\n    title: A\n    prompt: a\n    outputContract: {contract: assessment, dimensions: {risk: {levels: [high], blockOn: [high]}}}\n  - id: l\n    loop: {maxIterations: 2}\n    steps:\n      - id: d\n        title: D\n        prompt: d\n        runCondition: {var: x, equals: 1}\n        outputContract: {contract: loop_control}\n",
        );
        let c = codes_of(&f);
        assert!(c.contains(&codes::ASSESSMENT_ALWAYS_BLOCKS), "{f:#?}");
        assert!(c.contains(&codes::CONDITIONAL_DECISION_STEP), "{f:#?}");
        // The blocked assessment makes every routing fail: reported once, no reachability.
        assert!(c.contains(&codes::SIMULATION_FAILED), "{f:#?}");
        assert!(!c.contains(&codes::UNREACHABLE_STEP), "{f:#?}");
    }

    #[test]
    fn large_spaces_are_sampled_deterministically() {
        let mut steps = String::from("inputs: [k0, k1, k2, k3, k4, k5]\nsteps:\n");
        for i in 0..6 {
            steps.push_str(&format!(
                "  - id: s{i}\n    title: S{i}\n    prompt: p\n    runCondition: {{var: k{i}, in: [a, b, c, d]}}\n"
            ));
        }
        let text = format!("{HEAD}{steps}");
        let wf = compile(&parse_workflow("t.yaml", &text).unwrap()).unwrap();
        let facts = Facts::of(&wf.workflow);
        let space = space(&wf.workflow, &facts);
        assert_eq!(space.total(), 5u128.pow(6));
        let (a, exhaustive) = space.combinations();
        assert!(!exhaustive);
        assert_eq!(a.len(), MAX_ROUTINGS);
        assert_eq!(a, space.combinations().0);
        let f = lint(&wf.workflow);
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn long_loops_are_capped_and_cut_routings_are_not_failures() {
        // A 1000-pass loop whose condition holds throughout is explored with a few passes.
        let f = run(
            "inputs: [more]\nsteps:\n  - id: spin\n    loop: {while: {var: more, equals: true}, maxIterations: 1000}\n    steps:\n      - id: s\n        title: S\n        prompt: p\n        contextOutputs: [more]\n      - id: late\n        title: Late\n        prompt: p\n        runCondition: {var: worktrain.loops.spin.iteration, equals: 20}\n  - id: after\n    title: After\n    prompt: a\n",
        );
        assert!(f.is_empty(), "{f:#?}");
        // Nested loops too big even when capped: cut routings are inconclusive, not failures.
        let mut body = String::new();
        for i in 0..10 {
            body.push_str(&format!(
                "              - id: s{i}\n                title: S{i}\n                prompt: p\n"
            ));
        }
        let f = run(&format!(
            "inputs: [more]\nsteps:\n  - id: a\n    loop: {{while: {{var: more, equals: true}}, maxIterations: 20}}\n    steps:\n      - id: b\n        loop: {{while: {{var: more, equals: true}}, maxIterations: 20}}\n        steps:\n          - id: c\n            loop: {{while: {{var: more, equals: true}}, maxIterations: 20}}\n            steps:\n{body}"
        ));
        let c = codes_of(&f);
        assert!(!c.contains(&codes::SIMULATION_FAILED), "{f:#?}");
        assert!(!c.contains(&codes::UNREACHABLE_STEP), "{f:#?}");
        assert_eq!(
            c.iter()
                .filter(|x| **x == codes::LOOP_WITHOUT_DECISION)
                .count(),
            3,
            "{f:#?}"
        );
    }

    #[test]
    fn engine_provided_paths_are_checked() {
        let f = run(
            "steps:\n  - id: l\n    loop: {maxIterations: 3}\n    steps:\n      - id: d\n        title: D\n        prompt: 'pass {{worktrain.loops.l.pass}} of {{worktrain.loops.l.maxIterations}}, {{worktrain.loops.m.pass}} {{worktrain.loops.l.count}} {{worktrain.nope}}'\n        outputContract: {contract: loop_control}\n  - id: after\n    title: After\n    prompt: '{{worktrain.loops.l.pass}}'\n",
        );
        let msgs: Vec<&str> = f
            .iter()
            .filter(|x| x.code == codes::UNSET_CONTEXT_KEY)
            .map(|x| x.message.as_str())
            .collect();
        assert_eq!(msgs.len(), 4, "{f:#?}");
        assert!(
            msgs.iter().any(|m| m.contains("no loop `m` encloses")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("has only `iteration`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("no `worktrain.nope`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("step `after`") && m.contains("(enclosing: none)")),
            "{msgs:?}"
        );
    }

    #[test]
    fn findings_display() {
        let f = finding(
            Severity::Warning,
            codes::DUPLICATE_TITLE,
            "x".to_owned(),
            Some("title"),
            "m".into(),
            "h",
        );
        assert_eq!(f.to_string(), "warning[duplicate-title] x (title): m");
        assert_eq!(counts(&[f]), (0, 1));
    }
}
