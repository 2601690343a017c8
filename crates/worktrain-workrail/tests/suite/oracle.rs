//! A model of how WorkRail runs a workflow and composes its prompts, written from
//! WorkRail's sources independently of the importer: its compiler (features, promptBlocks
//! rendering, loop bodies by reference, loop condition sources), its interpreter (the
//! top-level scan, the loop kernel that checks a loop's condition before every body
//! step) and its v2 prompt renderer (context tokens, system sections, fragments, parallel
//! steps). The comparison tests drive this model and a converted workflow on the real
//! worktrain state machine with the same scripted answers.
//!
//! Only the importer's parser (the document types) and WorkRail's closed-set data
//! (feature and snippet text) are shared with the importer.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use worktrain_workrail::registry;
use worktrain_workrail::source::{PromptValue, WrBody, WrStep, WrWorkflow};

// ---------------------------------------------------------------------------------------
// JavaScript semantics used by WorkRail
// ---------------------------------------------------------------------------------------

/// `String(value)`.
pub(crate) fn js_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            (None, Some(f)) => f.to_string(),
            (None, None) => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                if i.is_null() {
                    String::new()
                } else {
                    js_string(i)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    t.parse::<f64>().ok().filter(|f| {
        f.is_finite() && !t.contains(|c: char| c.is_alphabetic() && c != 'e' && c != 'E')
    })
}

/// `lenientEquals` from WorkRail's condition evaluator.
fn lenient_equals(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    let (a, b) = match (a, b) {
        (None, None) => return true,
        (Some(a), Some(b)) => (a, b),
        _ => return false,
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().to_lowercase() == y.trim().to_lowercase(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            matches!((js_number(s), n.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::String(s), Value::Bool(t)) | (Value::Bool(t), Value::String(s)) => {
            let l = s.trim().to_lowercase();
            (*t && ["true", "1", "yes"].contains(&l.as_str()))
                || (!*t && ["false", "0", "no"].contains(&l.as_str()))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// `evaluateCondition`: no condition holds; errors evaluate to false.
pub(crate) fn evaluate(c: Option<&Value>, ctx: &Map<String, Value>) -> bool {
    match c {
        None => true,
        Some(Value::Object(m)) if m.is_empty() => true,
        Some(Value::Object(m)) => eval_unsafe(m, ctx).unwrap_or(false),
        Some(_) => true,
    }
}

fn eval_unsafe(c: &Map<String, Value>, ctx: &Map<String, Value>) -> Option<bool> {
    if let Some(var) = c.get("var") {
        let value = ctx.get(var.as_str()?);
        if c.contains_key("equals") {
            return Some(lenient_equals(value, c.get("equals")));
        }
        if c.contains_key("not_equals") {
            return Some(!lenient_equals(value, c.get("not_equals")));
        }
        let num = |k: &str| c.get(k).and_then(Value::as_f64);
        let v = value.and_then(|v| if v.is_number() { v.as_f64() } else { None });
        if let Some(n) = num("gt") {
            return Some(v.is_some_and(|x| x > n));
        }
        if let Some(n) = num("gte") {
            return Some(v.is_some_and(|x| x >= n));
        }
        if let Some(n) = num("lt") {
            return Some(v.is_some_and(|x| x < n));
        }
        if let Some(n) = num("lte") {
            return Some(v.is_some_and(|x| x <= n));
        }
        if let Some(Value::Array(xs)) = c.get("in") {
            return Some(xs.iter().any(|x| lenient_equals(value, Some(x))));
        }
        if let Some(needle) = c.get("contains").filter(|v| !v.is_null()) {
            let hay = value
                .filter(|v| !v.is_null())
                .map(js_string)
                .unwrap_or_default();
            return Some(
                hay.trim()
                    .to_lowercase()
                    .contains(&js_string(needle).trim().to_lowercase()),
            );
        }
        return Some(match value {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        });
    }
    if let Some(all) = c.get("and") {
        let mut out = true;
        for x in all.as_array()? {
            out &= eval_unsafe(x.as_object()?, ctx)?;
        }
        return Some(out);
    }
    if let Some(any) = c.get("or") {
        let mut out = false;
        for x in any.as_array()? {
            out |= eval_unsafe(x.as_object()?, ctx)?;
        }
        return Some(out);
    }
    if let Some(n) = c.get("not") {
        return Some(!eval_unsafe(n.as_object()?, ctx)?);
    }
    None
}

/// `resolveContextTemplates`: `{{ident.path}}` (not `wr.`) from the context.
pub(crate) fn resolve_templates(text: &str, ctx: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with("{{") && !text[i + 2..].starts_with("wr.") {
            let rest = &text[i + 2..];
            let end = rest.find("}}");
            let ident = end.map(|e| &rest[..e]).filter(|p| {
                !p.is_empty()
                    && p.split('.').all(|seg| {
                        let mut ch = seg.chars();
                        ch.next()
                            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                            && ch.all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
            });
            if let (Some(p), Some(e)) = (ident, end) {
                let mut cur = ctx.get(p.split('.').next().unwrap_or_default());
                for seg in p.split('.').skip(1) {
                    cur = cur.and_then(|v| v.get(seg));
                }
                match cur.filter(|v| !v.is_null()) {
                    Some(v) => out.push_str(&js_string(v)),
                    None => out.push_str(&format!("[unset: {p}]")),
                }
                i += 2 + e + 2;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Compiler
// ---------------------------------------------------------------------------------------

fn part_text(v: &PromptValue) -> String {
    match v {
        PromptValue::Text(t) => t.clone(),
        PromptValue::Parts(ps) => ps
            .iter()
            .map(|p| match p.kind.as_str() {
                "ref" => registry::snippet(p.ref_id.as_deref().unwrap_or_default())
                    .unwrap_or_default()
                    .to_owned(),
                _ => p.text.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

fn feature_part(p: &registry::Part) -> String {
    match p {
        registry::Part::Text(t) => (*t).to_owned(),
        registry::Part::Ref(r) => registry::snippet(r).unwrap_or_default().to_owned(),
    }
}

/// The compiled prompt of a standard step: `prompt`, or the rendered blocks with the
/// workflow's features appended.
fn compiled_prompt(step: &WrStep, features: &[String]) -> String {
    if let Some(p) = &step.prompt {
        return p.clone();
    }
    let Some(b) = &step.prompt_blocks else {
        return String::new();
    };
    let feats: Vec<&registry::Feature> = features
        .iter()
        .filter_map(|f| registry::feature(f))
        .collect();
    let list = |own: &Option<Vec<PromptValue>>,
                pick: fn(&registry::Feature) -> &'static [registry::Part]| {
        let mut v: Vec<String> = own.iter().flatten().map(part_text).collect();
        for f in &feats {
            v.extend(pick(f).iter().map(feature_part));
        }
        v
    };
    let mut sections = Vec::new();
    if let Some(g) = &b.goal {
        sections.push(format!("## Goal\n{}", part_text(g)));
    }
    let c = list(&b.constraints, |f| f.constraints);
    if !c.is_empty() {
        sections.push(format!(
            "## Constraints\n{}",
            c.iter()
                .map(|x| format!("- {x}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let p = list(&b.procedure, |f| f.procedure);
    if !p.is_empty() {
        sections.push(format!(
            "## Procedure\n{}",
            p.iter()
                .enumerate()
                .map(|(i, x)| format!("{}. {x}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if let Some(o) = b.output_required.as_ref().filter(|o| !o.0.is_empty()) {
        sections.push(format!(
            "## Output Required\n{}",
            o.0.iter()
                .map(|(k, v)| format!("- **{k}**: {}", js_string(v)))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let v = list(&b.verify, |f| f.verify);
    if !v.is_empty() {
        sections.push(format!(
            "## Verify\n{}",
            v.iter()
                .map(|x| format!("- {x}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    sections.join("\n\n")
}

struct Loop {
    step: WrStep,
    body: Vec<WrStep>,
    /// `Some(true)` artifact-driven, `Some(false)` context-driven, `None` for/forEach.
    artifact: Option<bool>,
    condition: Option<Value>,
}

/// A WorkRail session on a compiled workflow.
pub(crate) struct WorkRail {
    wf: WrWorkflow,
    top: Vec<WrStep>,
    body_ids: BTreeSet<String>,
    loops: BTreeMap<String, Loop>,
    parent_loop: BTreeMap<String, String>,
    steps: BTreeMap<String, WrStep>,
}

#[derive(Debug, Clone)]
struct Frame {
    loop_id: String,
    iteration: usize,
    body_index: usize,
}

/// What WorkRail shows for one pending step, section by section.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rendered {
    /// Step id.
    pub step: String,
    /// The loop banner before the prompt.
    pub banner: String,
    /// The authored prompt with tokens resolved.
    pub base: String,
    /// `**OUTPUT REQUIREMENTS:**` from validationCriteria.
    pub requirements: String,
    /// The contract reference, if any (the section itself is WorkRail protocol).
    pub contract: Option<(String, bool)>,
    /// The content lines of the assessment section (without the protocol lines).
    pub assessment_lines: Vec<String>,
    /// Matching fragments, joined.
    pub fragments: String,
    /// Whether the step asks for confirmation.
    pub gate: bool,
    /// The gate's kind.
    pub gate_kind: Option<String>,
}

/// Scripted answers, by step id: consumed in order, the last one repeats.
pub(crate) type Script = BTreeMap<String, Vec<Answer>>;

/// One answer: context changes, a loop decision, assessment levels.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    /// Context delta.
    pub context: Map<String, Value>,
    /// `continue` or `stop`.
    pub decision: Option<&'static str>,
    /// Dimension → level.
    pub assessment: Map<String, Value>,
}

impl WorkRail {
    /// Compile a document.
    pub(crate) fn compile(wf: WrWorkflow) -> Self {
        let mut steps = BTreeMap::new();
        for s in &wf.steps {
            steps.insert(s.id.clone(), s.clone());
        }
        let mut loops = BTreeMap::new();
        let mut body_ids = BTreeSet::new();
        let mut parent_loop = BTreeMap::new();
        for s in &wf.steps {
            if s.kind.as_deref() != Some("loop") {
                continue;
            }
            let body: Vec<WrStep> = match &s.body {
                Some(WrBody::Steps(b)) => b.clone(),
                Some(WrBody::Ref(r)) => vec![steps[r].clone()],
                None => Vec::new(),
            };
            for b in &body {
                body_ids.insert(b.id.clone());
                parent_loop.insert(b.id.clone(), s.id.clone());
                steps.insert(b.id.clone(), b.clone());
            }
            let cfg = s.loop_.clone().unwrap_or_else(|| panic!("loop config"));
            let kind = cfg.kind.clone().unwrap_or_default();
            let has_lc = body.iter().any(|b| {
                b.output_contract
                    .as_ref()
                    .is_some_and(|c| c.contract_ref == "wr.contracts.loop_control")
            });
            let (artifact, condition) = match kind.as_str() {
                "while" | "until" => match cfg
                    .condition_source
                    .as_ref()
                    .and_then(|c| c.get("kind"))
                    .and_then(Value::as_str)
                {
                    Some("artifact_contract") => (Some(true), None),
                    Some(_) => (
                        Some(false),
                        cfg.condition_source
                            .as_ref()
                            .and_then(|c| c.get("condition"))
                            .cloned(),
                    ),
                    None if has_lc => (Some(true), None),
                    None => (Some(false), cfg.condition.clone()),
                },
                _ => (None, None),
            };
            loops.insert(
                s.id.clone(),
                Loop {
                    step: s.clone(),
                    body,
                    artifact,
                    condition,
                },
            );
        }
        WorkRail {
            top: wf.steps.clone(),
            wf,
            body_ids,
            loops,
            parent_loop,
            steps,
        }
    }

    fn loop_context(
        &self,
        l: &Loop,
        iteration: usize,
        base: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut out = base.clone();
        let cfg = l
            .step
            .loop_
            .as_ref()
            .unwrap_or_else(|| panic!("loop config"));
        let it = cfg
            .iteration_var
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "currentIteration".into());
        out.insert(it, json!(iteration + 1));
        if cfg.kind.as_deref() == Some("forEach")
            && let Some(Value::Array(items)) = base.get(cfg.items.as_deref().unwrap_or_default())
        {
            let item = cfg
                .item_var
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "currentItem".into());
            let index = cfg
                .index_var
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "currentIndex".into());
            out.insert(item, items.get(iteration).cloned().unwrap_or(Value::Null));
            out.insert(index, json!(iteration));
        }
        out
    }

    fn should_enter(
        &self,
        l: &Loop,
        iteration: usize,
        ctx: &Map<String, Value>,
        artifacts: &[Value],
    ) -> bool {
        let cfg = l
            .step
            .loop_
            .as_ref()
            .unwrap_or_else(|| panic!("loop config"));
        match cfg.kind.as_deref() {
            Some("for") => match &cfg.count {
                Some(Value::Number(n)) => (iteration as f64) < n.as_f64().unwrap_or(0.0),
                Some(Value::String(k)) => {
                    (iteration as f64)
                        < ctx
                            .get(k)
                            .and_then(Value::as_f64)
                            .unwrap_or_else(|| panic!("WorkRail fails: count not a number"))
                }
                _ => panic!("for without count"),
            },
            Some("forEach") => match ctx.get(cfg.items.as_deref().unwrap_or_default()) {
                Some(Value::Array(a)) => iteration < a.len(),
                _ => panic!("WorkRail fails: forEach items is not an array"),
            },
            Some(kind) => {
                if l.artifact == Some(true) {
                    let found = artifacts
                        .iter()
                        .find(|a| a.get("kind").and_then(Value::as_str) == Some("wr.loop_control"));
                    match found
                        .and_then(|a| a.get("decision"))
                        .and_then(Value::as_str)
                    {
                        Some(d) => d == "continue",
                        None => true,
                    }
                } else {
                    let held =
                        evaluate(l.condition.as_ref(), &self.loop_context(l, iteration, ctx));
                    if kind == "until" { !held } else { held }
                }
            }
            None => panic!("loop without type"),
        }
    }

    /// Run the workflow with `script` from `context`; returns what WorkRail shows for each
    /// pending step, in order.
    pub(crate) fn run(&self, mut context: Map<String, Value>, script: &Script) -> Vec<Rendered> {
        let mut completed: Vec<String> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut artifacts: Vec<Value> = Vec::new();
        let mut used: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        'outer: for _ in 0..10_000 {
            // Select the next pending step.
            let mut pending: Option<(String, Vec<(String, usize)>)> = None;
            for _guard in 0..10_000 {
                if let Some(frame) = stack.last().cloned() {
                    let l = &self.loops[&frame.loop_id];
                    let path: Vec<(String, usize)> = stack
                        .iter()
                        .map(|f| (f.loop_id.clone(), f.iteration))
                        .collect();
                    let key = |id: &str| format!("{id}@{path:?}");
                    let max = l
                        .step
                        .loop_
                        .as_ref()
                        .and_then(|c| c.max_iterations.as_ref())
                        .and_then(Value::as_u64)
                        .unwrap_or(100) as usize;
                    if !self.should_enter(l, frame.iteration, &context, &artifacts) {
                        stack.pop();
                        completed.push(frame.loop_id.clone());
                        continue;
                    }
                    let proj = self.loop_context(l, frame.iteration, &context);
                    let eligible = (frame.body_index..l.body.len()).find(|&i| {
                        let b = &l.body[i];
                        !completed.contains(&key(&b.id))
                            && evaluate(b.run_condition.as_ref(), &proj)
                    });
                    if let Some(i) = eligible {
                        if let Some(f) = stack.last_mut() {
                            f.body_index = i;
                        }
                        pending = Some((l.body[i].id.clone(), path));
                        break;
                    }
                    let next = frame.iteration + 1;
                    if next >= max || !self.should_enter(l, next, &context, &artifacts) {
                        stack.pop();
                        completed.push(frame.loop_id.clone());
                        continue;
                    }
                    if let Some(f) = stack.last_mut() {
                        f.iteration = next;
                        f.body_index = 0;
                    }
                    continue;
                }
                let mut entered = false;
                for s in &self.top {
                    if self.body_ids.contains(&s.id) || completed.contains(&s.id) {
                        continue;
                    }
                    if !evaluate(s.run_condition.as_ref(), &context) {
                        continue;
                    }
                    if s.kind.as_deref() == Some("loop") {
                        stack.push(Frame {
                            loop_id: s.id.clone(),
                            iteration: 0,
                            body_index: 0,
                        });
                        entered = true;
                        break;
                    }
                    pending = Some((s.id.clone(), Vec::new()));
                    break;
                }
                if pending.is_some() || !entered {
                    break;
                }
            }
            let Some((id, path)) = pending else {
                break 'outer;
            };
            out.push(self.render(&id, &path, &context));
            // The scripted answer.
            let n = used.entry(id.clone()).or_default();
            let answers = script.get(&id).cloned().unwrap_or_default();
            let ans = answers
                .get(*n)
                .or_else(|| answers.last())
                .cloned()
                .unwrap_or_default();
            *n += 1;
            for (k, v) in ans.context {
                context.insert(k, v);
            }
            artifacts = ans
                .decision
                .map(|d| vec![json!({"kind": "wr.loop_control", "decision": d})])
                .unwrap_or_default();
            let key = if path.is_empty() {
                id.clone()
            } else {
                format!("{id}@{path:?}")
            };
            completed.push(key);
        }
        out
    }

    fn render(&self, id: &str, path: &[(String, usize)], context: &Map<String, Value>) -> Rendered {
        let step = &self.steps[id];
        let lp = self.parent_loop.get(id).map(|l| &self.loops[l]);
        let render_ctx = match (lp, path.last()) {
            (Some(l), Some((_, it))) => self.loop_context(l, *it, context),
            _ => context.clone(),
        };
        let mut r = Rendered {
            step: id.to_owned(),
            ..Rendered::default()
        };
        if step.kind.as_deref() == Some("parallel") {
            let active: Vec<_> = step
                .parallel_delegations
                .iter()
                .flatten()
                .filter(|d| evaluate(d.run_condition.as_ref(), &render_ctx))
                .collect();
            r.base = if active.is_empty() {
                "# Parallel Subagent Spawning Phase (Bypassed)\n\nAll parallel delegations for this step evaluated their conditions to false, meaning no subagents need to be spawned.\n\nPlease immediately call `continue_workflow` to advance to the next step.".into()
            } else {
                let blocks: Vec<String> = active
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let mut inputs: Vec<(String, String)> = Vec::new();
                        for (parent, child) in d.context_mapping.iter().flat_map(|m| &m.0) {
                            if let Some(v) = render_ctx.get(parent).filter(|v| !v.is_null()) {
                                inputs.push((child.as_str().unwrap_or_default().to_owned(), js_string(v)));
                            }
                        }
                        for (k, v) in d.args.iter().flat_map(|m| &m.0) {
                            let v = js_string(v);
                            match inputs.iter_mut().find(|(c, _)| c == k) {
                                Some(slot) => slot.1 = v,
                                None => inputs.push((k.clone(), v)),
                            }
                        }
                        let lines = if inputs.is_empty() {
                            "    *   *(No input parameters)*".to_owned()
                        } else {
                            inputs.iter().map(|(k, v)| format!("    *   `{k}`: `{v}`")).collect::<Vec<_>>().join("\n")
                        };
                        let goal = d.goal.clone().unwrap_or_else(|| match d.args.as_ref().and_then(|a| a.get("familyName")) {
                            Some(f) => format!("Run {} review family for workflow {}", js_string(f), d.workflow_id),
                            None => format!("Run {}", d.workflow_id),
                        });
                        format!(
                            "#### Subagent {}: {}\n*   **Workflow ID to Spawn**: `{}`\n*   **Goal**: {goal}\n*   **Target Input Parameters (Context)**:\n{lines}",
                            i + 1,
                            d.workflow_id,
                            d.workflow_id
                        )
                    })
                    .collect();
                format!(
                    "# Parallel Subagent Spawning Phase\n\nYou are initiating a parallel execution phase. Please spawn the following subagents simultaneously using your native client-side subagent tools (e.g. `spawn_agent` starting a fresh `start_workflow` session for each).\n\n### Active Delegations\n\n{}\n\n---\n\n### Procedure\n1. Spawn the active subagents listed above in parallel.\n2. Wait for all subagents to complete their runs and write their findings to disk.\n3. Once completed, confirm all deliverables exist, then call `continue_workflow` to advance to the synthesis phase.",
                    blocks.join("\n\n")
                )
            };
            return r;
        }
        // requireConfirmation, evaluated against the render context.
        let (gate, kind) = match &step.require_confirmation {
            None | Some(Value::Null) => (false, None),
            Some(Value::Bool(b)) => (*b, b.then(|| "coordinator_eval".to_owned())),
            Some(Value::Object(m))
                if matches!(
                    m.get("kind").and_then(Value::as_str),
                    Some("coordinator_eval" | "human_approval")
                ) =>
            {
                let k = m["kind"].as_str().unwrap_or_default().to_owned();
                let g = if m.contains_key("condition") {
                    evaluate(m.get("condition"), &render_ctx)
                } else {
                    true
                };
                (g, g.then_some(k))
            }
            Some(c) => {
                let g = evaluate(Some(c), &render_ctx);
                (g, g.then(|| "coordinator_eval".to_owned()))
            }
        };
        r.gate = gate;
        r.gate_kind = kind;
        // The v1 prefix (role, guidance), then the compiled prompt with tokens resolved.
        let mut prefix = Vec::new();
        if let Some(role) = &step.agent_role {
            prefix.push(format!("## Agent Role Instructions\n{role}\n"));
        }
        if let Some(g) = step.guidance.as_ref().filter(|g| !g.is_empty()) {
            prefix.push(format!(
                "## Step Guidance\n{}\n",
                g.iter()
                    .map(|x| format!("- {x}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        let mut compiled = compiled_prompt(step, &self.wf.features);
        // Extension points are bound at compile time (to their defaults here).
        for e in &self.wf.extension_points {
            compiled = compiled.replace(&format!("{{{{wr.bindings.{}}}}}", e.slot_id), &e.default);
        }
        let resolved = resolve_templates(&compiled, &render_ctx);
        r.base = if prefix.is_empty() {
            resolved
        } else {
            format!("{}\n{resolved}", prefix.join("\n"))
        };
        let is_exit = step
            .output_contract
            .as_ref()
            .is_some_and(|c| c.contract_ref == "wr.contracts.loop_control");
        if let (Some(l), Some((_, it))) = (lp, path.last())
            && !is_exit
        {
            let max = l
                .step
                .loop_
                .as_ref()
                .and_then(|c| c.max_iterations.as_ref())
                .and_then(Value::as_u64);
            r.banner = if *it == 0 {
                format!(
                    "> This step is part of an iterative loop{}. After your work, a decision step determines whether another pass is needed.\n",
                    max.map(|m| format!(" (up to {m} passes)"))
                        .unwrap_or_default()
                )
            } else {
                format!("---\n**Pass {}**\n---\n", it + 1)
            };
        }
        let reqs = requirements(step.validation_criteria.as_ref());
        if !reqs.is_empty() {
            r.requirements = format!(
                "\n\n**OUTPUT REQUIREMENTS:**\n{}",
                reqs.iter()
                    .map(|x| format!("- {x}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if let Some(c) = &step.output_contract {
            r.contract = Some((c.contract_ref.clone(), c.required.unwrap_or(true)));
        }
        for a in step.assessment_refs.iter().flatten() {
            let def = self
                .wf
                .assessments
                .iter()
                .find(|d| &d.id == a)
                .unwrap_or_else(|| panic!("assessment {a}"));
            r.assessment_lines
                .push(format!("Assessment target: \"{}\"", def.id));
            r.assessment_lines.push(format!("Purpose: {}", def.purpose));
            r.assessment_lines.push("Dimensions:".into());
            for d in &def.dimensions {
                r.assessment_lines.push(format!(
                    "  {} ({}): {}",
                    d.id,
                    d.levels.join(" | "),
                    d.purpose
                ));
            }
        }
        r.fragments = step
            .prompt_fragments
            .iter()
            .flatten()
            .filter(|f| evaluate(f.when.as_ref(), &render_ctx))
            .map(|f| resolve_templates(&f.text, &render_ctx))
            .collect::<Vec<_>>()
            .join("\n\n");
        r
    }

    /// The `require_followup` guidance WorkRail shows when `levels` are submitted for `step`.
    pub(crate) fn followups(&self, step: &str, levels: &Map<String, Value>) -> Vec<String> {
        let s = &self.steps[step];
        let refs = s.assessment_refs.clone().unwrap_or_default();
        let mut out = Vec::new();
        for c in s.assessment_consequences.iter().flatten() {
            let fires = refs
                .iter()
                .filter(|r| c.when.for_assessment.as_ref().is_none_or(|f| f == *r))
                .any(|r| {
                    let def = self
                        .wf
                        .assessments
                        .iter()
                        .find(|d| &d.id == r)
                        .unwrap_or_else(|| panic!("assessment"));
                    def.dimensions.iter().any(|d| {
                        levels.get(&d.id).and_then(Value::as_str)
                            == Some(c.when.any_equals_level.as_str())
                    })
                });
            if fires {
                out.push(c.effect.guidance.clone());
            }
        }
        out
    }
}

/// `extractValidationRequirements`: rules of an object-form criteria (a rule, or `and`
/// of rules, recursively), at most five.
fn requirements(c: Option<&Value>) -> Vec<String> {
    fn walk(c: &Value, out: &mut Vec<String>) {
        let Some(m) = c.as_object() else { return };
        if let Some(t) = m.get("type").and_then(Value::as_str) {
            let s = |k: &str| m.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
            match t {
                "contains" => out.extend(s("value").map(|v| format!("Must contain: \"{v}\""))),
                "regex" => out.extend(s("pattern").map(|p| {
                    format!(
                        "Must match pattern: {p}{}",
                        s("flags")
                            .map(|f| format!(" (flags: {f})"))
                            .unwrap_or_default()
                    )
                })),
                "length" => {
                    let mut parts = Vec::new();
                    if let Some(n) = m.get("min").filter(|v| !v.is_null()) {
                        parts.push(format!("≥{} chars", js_string(n)));
                    }
                    if let Some(n) = m.get("max").filter(|v| !v.is_null()) {
                        parts.push(format!("≤{} chars", js_string(n)));
                    }
                    if !parts.is_empty() {
                        out.push(format!("Length: {}", parts.join(", ")));
                    }
                }
                _ => {}
            }
        } else if let Some(Value::Array(all)) = m.get("and") {
            all.iter().for_each(|x| walk(x, out));
        }
    }
    let mut out = Vec::new();
    if let Some(c) = c {
        walk(c, &mut out);
    }
    out.truncate(5);
    out
}
