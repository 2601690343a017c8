//! Rendering a compiled workflow as a graph, for `worktrain workflow graph`: an indented
//! text outline, Graphviz DOT, and a standalone SVG laid out by our own code (no
//! Graphviz needed at runtime).
//!
//! All three are derived from the compiled program, so what they show is what the engine
//! runs: steps, loops with their repetition rule and bound, guarded steps, loops and
//! routine includes (`runCondition`) with their skip edges, bounded backward jumps,
//! confirmation gates, parallel delegation and output contracts. Output is deterministic (golden-testable): no hash maps, no
//! floating point in coordinates.
//!
//! The graph model ([`graph`]) has one node per step, one small "guard" node in front of
//! every step, loop or routine include with a run condition (true → the step or the
//! block's first node, false → skip to what follows it), a
//! head node per loop (where a pass starts or the loop exits) and a tail node per loop
//! (end of a pass: back to the head, or exit for `until` loops and `loop_control`
//! decisions), plus start, end and one node per child workflow of a parallel step.

use std::fmt::Write as _;
use std::str::FromStr;

use worktrain_core::compile::{
    CompiledLoop, CompiledStep, CompiledWorkflow, Instr, LoopIndex, LoopKind, Pc, StepIndex,
};
use worktrain_core::workflow::Join;

/// An output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphFormat {
    /// An indented plain-text outline, for terminals.
    Text,
    /// Graphviz DOT.
    Dot,
    /// Standalone SVG.
    Svg,
}

impl GraphFormat {
    /// Every format; parsing a format name (`FromStr`) searches this list.
    pub const ALL: [GraphFormat; 3] = [GraphFormat::Text, GraphFormat::Dot, GraphFormat::Svg];

    /// The name used on the command line (`text`, `dot`, `svg`).
    pub fn as_str(self) -> &'static str {
        match self {
            GraphFormat::Text => "text",
            GraphFormat::Dot => "dot",
            GraphFormat::Svg => "svg",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            GraphFormat::Text => "txt",
            GraphFormat::Dot => "dot",
            GraphFormat::Svg => "svg",
        }
    }
}

impl FromStr for GraphFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        GraphFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown graph format `{s}` (use text, dot or svg)"))
    }
}

/// Render a workflow in a format.
pub fn render(wf: &CompiledWorkflow, format: GraphFormat) -> String {
    match format {
        GraphFormat::Text => to_text(wf),
        GraphFormat::Dot => to_dot(wf),
        GraphFormat::Svg => to_svg(wf),
    }
}

// ---------------------------------------------------------------------------------------
// Shared descriptions

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The repetition rule of a loop (`until tests_pass equals true`).
fn loop_rule(l: &CompiledLoop) -> String {
    match &l.kind {
        LoopKind::While { condition } => format!("while {condition}"),
        LoopKind::Until { condition } => format!("until {condition}"),
        LoopKind::For { count, var } => match (count, var) {
            (Some(n), _) => format!("for {n}"),
            (None, Some(v)) => format!("for {v}"),
            (None, None) => "for 0".to_owned(),
        },
        LoopKind::ForEach { over, item, index } => {
            format!("forEach {over} as {item} (index {index})")
        }
        LoopKind::Decision => "decision".to_owned(),
    }
}

/// Why a loop exits at its head (before a pass).
fn head_exit_label(l: &CompiledLoop) -> String {
    let mut parts = Vec::new();
    match &l.kind {
        LoopKind::While { condition } => parts.push(format!("not ({condition})")),
        LoopKind::For { count, var } => match (count, var) {
            (Some(n), _) => parts.push(format!("{n} passes done")),
            (None, Some(v)) => parts.push(format!("{v} passes done")),
            (None, None) => parts.push("0 passes done".to_owned()),
        },
        LoopKind::ForEach { over, .. } => parts.push(format!("no item of {over} left")),
        LoopKind::Until { .. } | LoopKind::Decision => {}
    }
    parts.push(format!("max {} passes", l.max_iterations));
    format!("exit: {}", parts.join(" or "))
}

/// Why a loop exits at its tail (after a pass); empty when it never does.
fn tail_exit_parts(wf: &CompiledWorkflow, l: &CompiledLoop) -> Vec<String> {
    let mut parts = Vec::new();
    match &l.kind {
        LoopKind::Until { condition } => parts.push(condition.to_string()),
        LoopKind::While { .. }
        | LoopKind::For { .. }
        | LoopKind::ForEach { .. }
        | LoopKind::Decision => {}
    }
    if let Some(d) = l.decision_step.and_then(|i| wf.step(i)) {
        parts.push(format!("{} decides stop", d.id));
    }
    parts
}

/// The continue rule on a loop's back edge.
fn back_label(wf: &CompiledWorkflow, l: &CompiledLoop) -> String {
    let parts = tail_exit_parts(wf, l);
    if parts.is_empty() {
        "next pass".to_owned()
    } else {
        format!("next pass unless {}", parts.join(" or "))
    }
}

fn gate_text(s: &CompiledStep) -> Option<String> {
    s.confirmation.as_ref().map(|c| match &c.when {
        None => c.kind.as_str().to_owned(),
        Some(w) => format!("{} if {w}", c.kind.as_str()),
    })
}

fn join_str(j: Join) -> &'static str {
    match j {
        Join::All => "all",
        Join::Any => "any",
    }
}

/// A short contract description (`assessment → risk`).
fn contract_short(s: &CompiledStep) -> Option<String> {
    s.output_contract.as_ref().map(|c| {
        let mut t = c.contract.as_str().to_owned();
        if let Some(k) = &c.context_key {
            let _ = write!(t, " → {k}");
        }
        if !c.required {
            t.push_str(" (optional)");
        }
        t
    })
}

// ---------------------------------------------------------------------------------------
// Text

/// An indented outline of the program.
pub fn to_text(wf: &CompiledWorkflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} — {} (v{})", wf.id, wf.name, wf.version);
    if !wf.inputs.is_empty() {
        let _ = writeln!(out, "inputs: {}", wf.inputs.join(", "));
    }
    if wf.unattended {
        let _ = writeln!(out, "unattended: true");
    }
    let _ = writeln!(
        out,
        "{} steps, {} loops, at most {} step entries",
        wf.steps.len(),
        wf.loops.len(),
        wf.node_bound
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "start");
    let mut depth = 0usize;
    // Guarded includes being printed: (end position, id).
    let mut blocks: Vec<(Pc, &str)> = Vec::new();
    // The condition of a guarded loop, printed with the loop's header.
    let mut loop_guard = None;
    for (pc, instr) in wf.program.iter().enumerate() {
        let pc = Pc(pc as u32);
        while let Some(&(end, id)) = blocks.last() {
            if end != pc {
                break;
            }
            blocks.pop();
            depth = depth.saturating_sub(1);
            let _ = writeln!(out, "{}end include {id}", "  ".repeat(depth));
        }
        match instr {
            Instr::Guard {
                id,
                condition,
                skip_to,
            } => {
                if guarded_loop(wf, pc, id).is_some() {
                    loop_guard = Some(condition);
                } else {
                    let ind = "  ".repeat(depth);
                    let _ = writeln!(out, "{ind}include {id}");
                    let _ = writeln!(out, "{ind}    if {condition} / else skip");
                    blocks.push((*skip_to, id.as_str()));
                    depth += 1;
                }
            }
            Instr::Step { step } => {
                if let Some(s) = wf.step(*step) {
                    text_step(&mut out, wf, *step, s, depth);
                }
            }
            Instr::LoopHead { loop_, .. } => {
                if let Some(l) = wf.loop_at(*loop_) {
                    let ind = "  ".repeat(depth);
                    let title = if l.title == l.id.as_str() {
                        String::new()
                    } else {
                        format!(" — {}", l.title)
                    };
                    let _ = writeln!(out, "{ind}loop {}{title}", l.id);
                    if let Some(c) = loop_guard.take() {
                        let _ = writeln!(out, "{ind}    if {c} / else skip");
                    }
                    let _ = writeln!(
                        out,
                        "{ind}    repeat: {}, max {} passes",
                        loop_rule(l),
                        l.max_iterations
                    );
                    if let Some(d) = l.decision_step.and_then(|i| wf.step(i)) {
                        let _ = writeln!(
                            out,
                            "{ind}    decision step: {} (loop_control continue|stop)",
                            d.id
                        );
                    }
                    let _ = writeln!(out, "{ind}    {}", head_exit_label(l));
                    let tail = tail_exit_parts(wf, l);
                    if !tail.is_empty() {
                        let _ = writeln!(out, "{ind}    exit after a pass: {}", tail.join(" or "));
                    }
                }
                depth += 1;
            }
            Instr::LoopTail { loop_, .. } => {
                depth = depth.saturating_sub(1);
                if let Some(l) = wf.loop_at(*loop_) {
                    let ind = "  ".repeat(depth);
                    let _ = writeln!(out, "{ind}  ↺ {}", back_label(wf, l));
                    let _ = writeln!(out, "{ind}end loop {}", l.id);
                }
            }
            Instr::End => {
                let _ = writeln!(out, "end");
            }
        }
    }
    out
}

/// The loop a guard at `pc` guards (a guarded loop's head follows its guard and has its
/// id), or `None` when it guards a routine include.
fn guarded_loop(
    wf: &CompiledWorkflow,
    pc: Pc,
    id: &worktrain_core::ids::StepId,
) -> Option<LoopIndex> {
    match wf.instr(pc.next()) {
        Some(Instr::LoopHead { loop_, .. }) if wf.loop_at(*loop_).is_some_and(|l| &l.id == id) => {
            Some(*loop_)
        }
        Some(
            Instr::LoopHead { .. }
            | Instr::Step { .. }
            | Instr::LoopTail { .. }
            | Instr::Guard { .. }
            | Instr::End,
        )
        | None => None,
    }
}

fn text_step(
    out: &mut String,
    wf: &CompiledWorkflow,
    index: StepIndex,
    s: &CompiledStep,
    depth: usize,
) {
    let ind = "  ".repeat(depth);
    let _ = writeln!(out, "{ind}[{}] {} — {}", index.0 + 1, s.id, s.title);
    let more = format!("{ind}    ");
    if let Some(c) = &s.run_condition {
        let _ = writeln!(out, "{more}if {c} / else skip");
    }
    if let Some(g) = gate_text(s) {
        let _ = writeln!(out, "{more}gate: {g}");
    }
    if let Some(c) = &s.output_contract {
        let mut line = format!("{more}contract: {}", c.contract);
        if !c.required {
            line.push_str(" (optional)");
        }
        if let Some(k) = &c.context_key {
            let _ = write!(line, " → context.{k}");
        }
        let _ = writeln!(out, "{line}");
        for (name, d) in &c.dimensions {
            let blocks = if d.block_on.is_empty() {
                String::new()
            } else {
                format!(" (blocks on {})", d.block_on.join(", "))
            };
            let _ = writeln!(out, "{more}  {name}: {}{blocks}", d.levels.join(" | "));
        }
    }
    if let Some(l) = s.decides.and_then(|i| wf.loop_at(i)) {
        let _ = writeln!(out, "{more}decides loop {}", l.id);
    }
    if !s.context_outputs.is_empty() {
        let _ = writeln!(out, "{more}sets context: {}", s.context_outputs.join(", "));
    }
    if let Some(j) = &s.jump {
        let _ = writeln!(
            out,
            "{more}jumpIf {} → {} (max {} jumps)",
            j.condition, j.target, j.max_jumps
        );
    }
    if s.notes_optional {
        let _ = writeln!(out, "{more}notes optional");
    }
    if let Some(d) = &s.delegation {
        let _ = writeln!(out, "{more}parallel, join {}:", join_str(d.join));
        for c in &d.children {
            let ctx = if c.context.is_empty() {
                String::new()
            } else {
                format!(" with {}", serde_json::Value::Object(c.context.clone()))
            };
            let _ = writeln!(out, "{more}  ⇉ {}: {}{ctx}", c.workflow, collapse(&c.goal));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Graph model

/// What a graph node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Where a session starts.
    Start,
    /// Where it completes.
    End,
    /// A step.
    Step(StepIndex),
    /// The run-condition check in front of a step.
    Guard(StepIndex),
    /// The run-condition check in front of a guarded loop or routine include (the
    /// position of its guard instruction).
    BlockGuard(Pc),
    /// A loop's head: a pass starts, or the loop exits.
    LoopHead(LoopIndex),
    /// A loop's tail: the end of a pass.
    LoopTail(LoopIndex),
    /// A child workflow of a parallel step.
    Child {
        /// The parallel step.
        step: StepIndex,
        /// Position among its children.
        child: usize,
    },
}

/// One node of the laid-out graph: a step, a loop head or tail, a guard, … (see [`NodeKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable identifier (`step:plan`, `loop:verify`, `guard:fix`, …).
    pub key: String,
    /// What it stands for.
    pub kind: NodeKind,
    /// The innermost loop containing it (a loop's head and tail belong to the loop).
    pub scope: Option<LoopIndex>,
    /// Display lines (first is the name).
    pub lines: Vec<String>,
    /// A longer description (tooltips).
    pub tooltip: String,
    /// Whether the step is a confirmation gate.
    pub gate: bool,
}

/// What an edge means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// Sequence: what runs next.
    Next,
    /// A guard whose condition holds enters its step or block.
    Guarded,
    /// A guard whose condition fails skips its step or block.
    Skip,
    /// A loop head starts a pass.
    Pass,
    /// End of a pass, back to the head (labelled with the continue rule).
    Back,
    /// A loop exits.
    Exit,
    /// A bounded backward jump.
    Jump,
    /// A parallel step spawns a child workflow.
    Spawn,
}

/// One edge of the laid-out graph, between two nodes by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Source node index.
    pub from: usize,
    /// Target node index.
    pub to: usize,
    /// What the edge means (sequence, loop pass, skip, jump, …).
    pub kind: EdgeKind,
    /// Label (may be empty).
    pub label: String,
}

/// A workflow as nodes and edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// `id — name (vX)`.
    pub title: String,
    /// Nodes, in program order (children right after their parallel step).
    pub nodes: Vec<Node>,
    /// Edges, in program order.
    pub edges: Vec<Edge>,
}

/// Build the graph model of a compiled workflow.
pub fn graph(wf: &CompiledWorkflow) -> Graph {
    let mut nodes = vec![Node {
        key: "start".into(),
        kind: NodeKind::Start,
        scope: None,
        lines: vec!["start".into()],
        tooltip: "the session starts".into(),
        gate: false,
    }];
    // The node reached when execution arrives at each program position.
    let mut arrive: Vec<Option<usize>> = Vec::with_capacity(wf.program.len());
    // Per step instruction, in program order: (step node, guard node).
    let mut step_nodes: Vec<(usize, Option<usize>)> = Vec::new();
    let mut heads: Vec<(LoopIndex, usize)> = Vec::new();
    for (pc, instr) in wf.program.iter().enumerate() {
        let scope = wf.loops_enclosing(Pc(pc as u32)).last().copied();
        match instr {
            Instr::Guard { id, condition, .. } => {
                let what = if guarded_loop(wf, Pc(pc as u32), id).is_some() {
                    "loop"
                } else {
                    "include"
                };
                nodes.push(Node {
                    key: format!("guard:{id}"),
                    kind: NodeKind::BlockGuard(Pc(pc as u32)),
                    scope,
                    lines: vec!["?".into()],
                    tooltip: format!("{what} {id} runs if {condition}; else it is skipped"),
                    gate: false,
                });
                arrive.push(Some(nodes.len() - 1));
            }
            Instr::Step { step } => {
                let Some(s) = wf.step(*step) else {
                    arrive.push(None);
                    continue;
                };
                let guard = s.run_condition.as_ref().map(|c| {
                    nodes.push(Node {
                        key: format!("guard:{}", s.id),
                        kind: NodeKind::Guard(*step),
                        scope,
                        lines: vec!["?".into()],
                        tooltip: format!("{} runs if {c}; else it is skipped", s.id),
                        gate: false,
                    });
                    nodes.len() - 1
                });
                nodes.push(step_node(wf, *step, s, scope));
                let node = nodes.len() - 1;
                arrive.push(Some(guard.unwrap_or(node)));
                step_nodes.push((node, guard));
                if let Some(d) = &s.delegation {
                    for (i, c) in d.children.iter().enumerate() {
                        nodes.push(Node {
                            key: format!("child:{}:{}", s.id, i + 1),
                            kind: NodeKind::Child {
                                step: *step,
                                child: i,
                            },
                            scope,
                            lines: vec![format!("⇉ {}", c.workflow), clip(&collapse(&c.goal), 48)],
                            tooltip: format!(
                                "child workflow {}: {}",
                                c.workflow,
                                collapse(&c.goal)
                            ),
                            gate: false,
                        });
                    }
                }
            }
            Instr::LoopHead { loop_, .. } => {
                let Some(l) = wf.loop_at(*loop_) else {
                    arrive.push(None);
                    continue;
                };
                let mut lines = vec![format!("loop {}", l.id)];
                if l.title != l.id.as_str() {
                    lines.push(l.title.clone());
                }
                lines.push(loop_rule(l));
                lines.push(format!("max {} passes", l.max_iterations));
                if let Some(d) = l.decision_step.and_then(|i| wf.step(i)) {
                    lines.push(format!("decided by {}", d.id));
                }
                nodes.push(Node {
                    key: format!("loop:{}", l.id),
                    kind: NodeKind::LoopHead(*loop_),
                    scope: Some(*loop_),
                    tooltip: format!(
                        "loop {}: {}, max {} passes",
                        l.id,
                        loop_rule(l),
                        l.max_iterations
                    ),
                    lines,
                    gate: false,
                });
                arrive.push(Some(nodes.len() - 1));
                heads.push((*loop_, nodes.len() - 1));
            }
            Instr::LoopTail { loop_, .. } => {
                let id = wf
                    .loop_at(*loop_)
                    .map(|l| l.id.to_string())
                    .unwrap_or_default();
                nodes.push(Node {
                    key: format!("tail:{id}"),
                    kind: NodeKind::LoopTail(*loop_),
                    scope: Some(*loop_),
                    lines: vec!["↺".into()],
                    tooltip: format!("end of a pass of loop {id}"),
                    gate: false,
                });
                arrive.push(Some(nodes.len() - 1));
            }
            Instr::End => {
                nodes.push(Node {
                    key: "end".into(),
                    kind: NodeKind::End,
                    scope: None,
                    lines: vec!["end".into()],
                    tooltip: "the workflow is complete".into(),
                    gate: false,
                });
                arrive.push(Some(nodes.len() - 1));
            }
        }
    }
    let at = |pc: usize| arrive.get(pc).copied().flatten();
    let mut edges = Vec::new();
    let mut edge = |from: usize, to: Option<usize>, kind: EdgeKind, label: String| {
        if let Some(to) = to {
            edges.push(Edge {
                from,
                to,
                kind,
                label,
            });
        }
    };
    edge(0, at(0), EdgeKind::Next, String::new());
    let mut step_iter = step_nodes.iter();
    for (pc, instr) in wf.program.iter().enumerate() {
        match instr {
            Instr::Guard {
                condition, skip_to, ..
            } => {
                let Some(g) = at(pc) else { continue };
                edge(g, at(pc + 1), EdgeKind::Guarded, format!("if {condition}"));
                edge(
                    g,
                    at(skip_to.0 as usize),
                    EdgeKind::Skip,
                    "else skip".into(),
                );
            }
            Instr::Step { step } => {
                let Some(s) = wf.step(*step) else { continue };
                let Some(&(node, guard)) = step_iter.next() else {
                    continue;
                };
                if let (Some(g), Some(c)) = (guard, &s.run_condition) {
                    edge(g, Some(node), EdgeKind::Guarded, format!("if {c}"));
                    edge(g, at(pc + 1), EdgeKind::Skip, "else skip".into());
                }
                edge(node, at(pc + 1), EdgeKind::Next, String::new());
                if let Some(j) = &s.jump {
                    edge(
                        node,
                        at(j.target_pc.0 as usize),
                        EdgeKind::Jump,
                        format!("jumpIf {} ≤{}", j.condition, j.max_jumps),
                    );
                }
                if let Some(d) = &s.delegation {
                    for i in 0..d.children.len() {
                        edge(
                            node,
                            Some(node + 1 + i),
                            EdgeKind::Spawn,
                            format!("spawn (join {})", join_str(d.join)),
                        );
                    }
                }
            }
            Instr::LoopHead { loop_, exit } => {
                let (Some(l), Some(head)) = (wf.loop_at(*loop_), at(pc)) else {
                    continue;
                };
                edge(head, at(pc + 1), EdgeKind::Pass, "pass".into());
                edge(
                    head,
                    at(exit.0 as usize),
                    EdgeKind::Exit,
                    head_exit_label(l),
                );
            }
            Instr::LoopTail { loop_, .. } => {
                let (Some(l), Some(tail)) = (wf.loop_at(*loop_), at(pc)) else {
                    continue;
                };
                let head = heads.iter().find(|(i, _)| i == loop_).map(|(_, n)| *n);
                edge(tail, head, EdgeKind::Back, back_label(wf, l));
                let parts = tail_exit_parts(wf, l);
                if !parts.is_empty() {
                    edge(
                        tail,
                        at(pc + 1),
                        EdgeKind::Exit,
                        format!("exit: {}", parts.join(" or ")),
                    );
                }
            }
            Instr::End => {}
        }
    }
    Graph {
        title: format!("{} — {} (v{})", wf.id, wf.name, wf.version),
        nodes,
        edges,
    }
}

fn step_node(
    wf: &CompiledWorkflow,
    index: StepIndex,
    s: &CompiledStep,
    scope: Option<LoopIndex>,
) -> Node {
    let mut lines = vec![s.id.to_string(), s.title.clone()];
    let mut tip = vec![format!("step {} ({}): {}", index.0 + 1, s.id, s.title)];
    if let Some(g) = gate_text(s) {
        lines.push(format!("⛔ gate: {g}"));
        tip.push(format!("confirmation gate: {g}"));
    }
    if let Some(c) = contract_short(s) {
        lines.push(format!("⇒ {c}"));
        tip.push(format!("output contract: {c}"));
    }
    if let Some(l) = s.decides.and_then(|i| wf.loop_at(i)) {
        lines.push(format!("decides loop {}", l.id));
    }
    if !s.context_outputs.is_empty() {
        lines.push(format!("sets {}", s.context_outputs.join(", ")));
        tip.push(format!("sets context: {}", s.context_outputs.join(", ")));
    }
    if let Some(d) = &s.delegation {
        lines.push(format!("⇉ parallel, join {}", join_str(d.join)));
    }
    Node {
        key: format!("step:{}", s.id),
        kind: NodeKind::Step(index),
        scope,
        lines,
        tooltip: tip.join("; "),
        gate: s.confirmation.is_some(),
    }
}

// ---------------------------------------------------------------------------------------
// DOT

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push(' '),
            other => out.push(other),
        }
    }
    out
}

fn dot_str(s: &str) -> String {
    format!("\"{}\"", dot_escape(s))
}

/// A label of several lines (joined with DOT's centred line break).
fn dot_lines(lines: &[String]) -> String {
    let escaped: Vec<String> = lines.iter().map(|l| dot_escape(l)).collect();
    format!("\"{}\"", escaped.join("\\n"))
}

fn dot_node_attrs(wf: &CompiledWorkflow, n: &Node) -> String {
    let label = dot_lines(&n.lines);
    let tip = dot_str(&n.tooltip);
    match n.kind {
        NodeKind::Start => {
            format!("shape=oval, style=filled, fillcolor=\"#e8f5e9\", label={label}, tooltip={tip}")
        }
        NodeKind::End => {
            format!(
                "shape=oval, peripheries=2, style=filled, fillcolor=\"#e8f5e9\", label={label}, tooltip={tip}"
            )
        }
        NodeKind::Step(i) => {
            let gate = if n.gate {
                ", peripheries=2, color=\"#c62828\""
            } else {
                ""
            };
            let fill = if wf.step(i).is_some_and(|s| s.delegation.is_some()) {
                "#f3e5f5"
            } else {
                "#ffffff"
            };
            format!(
                "shape=box, style=\"rounded,filled\", fillcolor=\"{fill}\"{gate}, label={label}, tooltip={tip}"
            )
        }
        NodeKind::Guard(_) | NodeKind::BlockGuard(_) => format!(
            "shape=diamond, width=0.3, height=0.3, fixedsize=true, fontsize=9, style=filled, fillcolor=\"#fff8e1\", label={label}, tooltip={tip}"
        ),
        NodeKind::LoopHead(_) => {
            format!(
                "shape=hexagon, style=filled, fillcolor=\"#e3f2fd\", color=\"#1565c0\", label={label}, tooltip={tip}"
            )
        }
        NodeKind::LoopTail(_) => format!(
            "shape=circle, width=0.3, height=0.3, fixedsize=true, color=\"#1565c0\", label={label}, tooltip={tip}"
        ),
        NodeKind::Child { .. } => {
            format!(
                "shape=component, style=\"dashed,filled\", fillcolor=\"#f3e5f5\", label={label}, tooltip={tip}"
            )
        }
    }
}

fn dot_edge_attrs(e: &Edge) -> String {
    let mut attrs = Vec::new();
    if !e.label.is_empty() {
        attrs.push(format!("label={}", dot_str(&e.label)));
    }
    let style = match e.kind {
        EdgeKind::Next => "",
        EdgeKind::Guarded => "color=\"#8d6e00\", fontcolor=\"#6d5200\"",
        EdgeKind::Skip => "style=dashed, color=\"#757575\", fontcolor=\"#616161\"",
        EdgeKind::Pass => "color=\"#1565c0\", fontcolor=\"#1565c0\"",
        EdgeKind::Back => "color=\"#1565c0\", fontcolor=\"#1565c0\"",
        EdgeKind::Exit => "color=\"#0d47a1\", fontcolor=\"#0d47a1\", style=bold",
        EdgeKind::Jump => {
            "style=dashed, color=\"#e65100\", fontcolor=\"#bf360c\", constraint=false"
        }
        EdgeKind::Spawn => "style=dotted, color=\"#6a1b9a\", fontcolor=\"#6a1b9a\", arrowhead=vee",
    };
    if !style.is_empty() {
        attrs.push(style.to_owned());
    }
    attrs.join(", ")
}

/// Graphviz DOT: loops are clusters, guards small diamonds, gates double-bordered.
pub fn to_dot(wf: &CompiledWorkflow) -> String {
    let g = graph(wf);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_str(wf.id.as_str()));
    let _ = writeln!(
        out,
        "  graph [label={}, labelloc=t, fontname=\"Helvetica\", rankdir=TB, nodesep=0.4, ranksep=0.35];",
        dot_str(&g.title)
    );
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=11];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    dot_scope(wf, &g, None, 1, &mut out);
    for e in &g.edges {
        let (Some(from), Some(to)) = (g.nodes.get(e.from), g.nodes.get(e.to)) else {
            continue;
        };
        let attrs = dot_edge_attrs(e);
        if attrs.is_empty() {
            let _ = writeln!(out, "  {} -> {};", dot_str(&from.key), dot_str(&to.key));
        } else {
            let _ = writeln!(
                out,
                "  {} -> {} [{attrs}];",
                dot_str(&from.key),
                dot_str(&to.key)
            );
        }
    }
    let _ = writeln!(out, "}}");
    out
}

fn dot_scope(
    wf: &CompiledWorkflow,
    g: &Graph,
    scope: Option<LoopIndex>,
    depth: usize,
    out: &mut String,
) {
    let ind = "  ".repeat(depth);
    for n in g.nodes.iter().filter(|n| n.scope == scope) {
        let _ = writeln!(out, "{ind}{} [{}];", dot_str(&n.key), dot_node_attrs(wf, n));
    }
    for (i, l) in wf.loops.iter().enumerate() {
        if l.parent != scope {
            continue;
        }
        let _ = writeln!(
            out,
            "{ind}subgraph {} {{",
            dot_str(&format!("cluster_{}", l.id))
        );
        let _ = writeln!(
            out,
            "{ind}  label={}; style=\"rounded,dashed\"; color=\"#1565c0\"; fontcolor=\"#1565c0\"; fontsize=10;",
            dot_str(&format!("loop {}", l.id))
        );
        dot_scope(wf, g, Some(LoopIndex(i as u32)), depth + 1, out);
        let _ = writeln!(out, "{ind}}}");
    }
}

// ---------------------------------------------------------------------------------------
// SVG

const FONT: i64 = 12;
const LABEL_FONT: i64 = 11;
const LINE_H: i64 = 16;
const PAD_X: i64 = 10;
const PAD_Y: i64 = 6;
const ROW_GAP: i64 = 34;
const CLUSTER_PAD: i64 = 14;
const LANE_GAP: i64 = 12;
const MARGIN: i64 = 16;
const LINE_CHARS: usize = 56;
const LABEL_CHARS: usize = 72;

/// Approximate width of monospace text, in pixels (integer math: 0.62 em per char).
fn text_w(s: &str, font: i64) -> i64 {
    (s.chars().count() as i64 * font * 62 + 99) / 100
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Shape of a node in the SVG, for sizing and for where edges touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Rect,
    Pill,
    Diamond,
    Hexagon,
    Circle,
}

#[derive(Debug, Clone, Copy)]
struct Boxed {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
    shape: Shape,
}

impl Boxed {
    fn cx(&self) -> i64 {
        self.x + self.w / 2
    }

    fn cy(&self) -> i64 {
        self.y + self.h / 2
    }

    /// Horizontal distance from the centre to the outline at vertical offset `dy`.
    fn half_at(&self, dy: i64) -> i64 {
        let hw = self.w / 2;
        let hh = (self.h / 2).max(1);
        let dy = dy.abs().min(hh);
        match self.shape {
            Shape::Rect | Shape::Pill => hw,
            Shape::Diamond => hw - dy * hw / hh,
            Shape::Hexagon => hw - dy,
            Shape::Circle => isqrt(hw * hw - dy * dy),
        }
    }
}

/// Integer square root (exact, no floating point).
fn isqrt(v: i64) -> i64 {
    if v <= 0 {
        return 0;
    }
    let mut lo = 0i64;
    let mut hi = v.min(3_037_000_499);
    while lo < hi {
        let mid = (lo + hi + 1) / 2;
        if mid * mid <= v {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn svg_lines(n: &Node) -> Vec<String> {
    n.lines
        .iter()
        .map(|l| clip(&collapse(l), LINE_CHARS))
        .collect()
}

fn node_shape(n: &Node) -> Shape {
    match n.kind {
        NodeKind::Start | NodeKind::End => Shape::Pill,
        NodeKind::Step(_) | NodeKind::Child { .. } => Shape::Rect,
        NodeKind::Guard(_) | NodeKind::BlockGuard(_) => Shape::Diamond,
        NodeKind::LoopHead(_) => Shape::Hexagon,
        NodeKind::LoopTail(_) => Shape::Circle,
    }
}

fn node_size(n: &Node) -> (i64, i64) {
    let lines = svg_lines(n);
    let text = lines.iter().map(|l| text_w(l, FONT)).max().unwrap_or(0);
    let h = lines.len() as i64 * LINE_H + 2 * PAD_Y;
    match node_shape(n) {
        Shape::Rect => ((text + 2 * PAD_X).max(120), h),
        Shape::Pill => ((text + 2 * PAD_X + h / 2).max(64), h),
        Shape::Diamond | Shape::Circle => (22, 22),
        Shape::Hexagon => ((text + 2 * PAD_X + h).max(120), h),
    }
}

/// Bounding box of everything drawn.
struct Bounds {
    x1: i64,
    y1: i64,
    x2: i64,
    y2: i64,
}

impl Bounds {
    fn add(&mut self, x1: i64, y1: i64, x2: i64, y2: i64) {
        self.x1 = self.x1.min(x1);
        self.y1 = self.y1.min(y1);
        self.x2 = self.x2.max(x2);
        self.y2 = self.y2.max(y2);
    }
}

/// An edge label, placed so that labels do not overlap each other.
struct Label {
    x: i64,
    y: i64,
    /// `start` or `end`.
    end_anchored: bool,
    text: String,
    class: &'static str,
}

impl Label {
    fn rect(&self) -> (i64, i64, i64, i64) {
        let w = text_w(&self.text, LABEL_FONT);
        let x1 = if self.end_anchored {
            self.x - w
        } else {
            self.x
        };
        (x1, self.y - LABEL_FONT, x1 + w, self.y + 3)
    }
}

fn overlaps(a: (i64, i64, i64, i64), b: (i64, i64, i64, i64)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Place a label, moving it down until it overlaps no earlier label.
fn place(labels: &mut Vec<Label>, mut label: Label) {
    for _ in 0..40 {
        let r = label.rect();
        if !labels.iter().any(|l| overlaps(l.rect(), r)) {
            break;
        }
        label.y += LABEL_FONT + 2;
    }
    labels.push(label);
}

fn edge_class(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Next => "next",
        EdgeKind::Guarded => "guarded",
        EdgeKind::Skip => "skip",
        EdgeKind::Pass => "pass",
        EdgeKind::Back => "back",
        EdgeKind::Exit => "exit",
        EdgeKind::Jump => "jump",
        EdgeKind::Spawn => "spawn",
    }
}

/// Assign lanes to vertical spans so that overlapping spans get different lanes.
/// Shorter spans get inner lanes. Returns the lane of each input span.
fn lanes(spans: &[(i64, i64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].1 - spans[i].0, spans[i].0, i));
    let mut taken: Vec<Vec<(i64, i64)>> = Vec::new();
    let mut out = vec![0; spans.len()];
    for i in order {
        let (a, b) = spans[i];
        let lane = taken
            .iter()
            .position(|used| used.iter().all(|&(c, d)| b < c || d < a))
            .unwrap_or(taken.len());
        if taken.len() <= lane {
            taken.push(Vec::new());
        }
        taken[lane].push((a, b));
        out[i] = lane;
    }
    out
}

const SVG_STYLE: &str = "
    text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; fill: #212121; }
    text.name { font-weight: bold; }
    text.label { font-size: 11px; paint-order: stroke; stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }
    text.title { font-size: 14px; font-weight: bold; }
    .node { fill: #ffffff; stroke: #424242; stroke-width: 1.2; }
    .node.parallel { fill: #f3e5f5; }
    .gate { stroke: #c62828; }
    .gate-inner { fill: none; stroke: #c62828; stroke-width: 1.2; }
    .terminal { fill: #e8f5e9; stroke: #2e7d32; stroke-width: 1.2; }
    .terminal-inner { fill: none; stroke: #2e7d32; stroke-width: 1.2; }
    .guard { fill: #fff8e1; stroke: #8d6e00; stroke-width: 1.2; }
    .head { fill: #e3f2fd; stroke: #1565c0; stroke-width: 1.2; }
    .tail { fill: #ffffff; stroke: #1565c0; stroke-width: 1.2; }
    .child { fill: #f3e5f5; stroke: #6a1b9a; stroke-width: 1.2; stroke-dasharray: 4 3; }
    .cluster { fill: #1565c0; fill-opacity: 0.05; stroke: #1565c0; stroke-opacity: 0.5; stroke-dasharray: 5 4; }
    path { fill: none; stroke-width: 1.3; }
    path.next { stroke: #424242; }
    path.guarded { stroke: #8d6e00; }
    path.skip { stroke: #757575; stroke-dasharray: 5 4; }
    path.pass, path.back { stroke: #1565c0; }
    path.exit { stroke: #0d47a1; stroke-width: 2; }
    path.jump { stroke: #e65100; stroke-dasharray: 6 3; }
    path.spawn { stroke: #6a1b9a; stroke-dasharray: 2 3; }
    text.l-skip { fill: #616161; }
    text.l-pass, text.l-back, text.l-exit { fill: #0d47a1; }
    text.l-jump { fill: #bf360c; }
    text.l-guarded { fill: #6d5200; }
    text.l-spawn { fill: #6a1b9a; }
  ";

const MARKER_COLORS: [(&str, &str); 8] = [
    ("next", "#424242"),
    ("guarded", "#8d6e00"),
    ("skip", "#757575"),
    ("pass", "#1565c0"),
    ("back", "#1565c0"),
    ("exit", "#0d47a1"),
    ("jump", "#e65100"),
    ("spawn", "#6a1b9a"),
];

/// A standalone SVG: one column top to bottom in program order; loops are shaded
/// boxes; forward edges that skip rows (skips, loop exits) run on the left, backward
/// edges (next pass, jumps) on the right; child workflows of a parallel step sit to the
/// right of everything, level with their step.
pub fn to_svg(wf: &CompiledWorkflow) -> String {
    let g = graph(wf);
    let n = g.nodes.len();
    // Rows: every node except children, in order.
    let mut row_of: Vec<Option<usize>> = vec![None; n];
    let mut rows: Vec<usize> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if !matches!(node.kind, NodeKind::Child { .. }) {
            row_of[i] = Some(rows.len());
            rows.push(i);
        }
    }
    let sizes: Vec<(i64, i64)> = g.nodes.iter().map(node_size).collect();
    let half = rows.iter().map(|&i| sizes[i].0 / 2).max().unwrap_or(60);
    let children_of = |i: usize| -> Vec<usize> {
        g.edges
            .iter()
            .filter(|e| e.from == i && e.kind == EdgeKind::Spawn)
            .map(|e| e.to)
            .collect()
    };
    let mut boxes: Vec<Option<Boxed>> = vec![None; n];
    let mut y = 40;
    for &i in &rows {
        let (w, h) = sizes[i];
        boxes[i] = Some(Boxed {
            x: -w / 2,
            y,
            w,
            h,
            shape: node_shape(&g.nodes[i]),
        });
        let kids: i64 = children_of(i).iter().map(|&c| sizes[c].1 + 8).sum();
        y += h.max(kids - 8) + ROW_GAP;
    }
    let depth_of = |l: LoopIndex| -> i64 {
        let mut d = 0;
        let mut cur = wf.loop_at(l).and_then(|x| x.parent);
        while let Some(p) = cur {
            d += 1;
            cur = wf.loop_at(p).and_then(|x| x.parent);
        }
        d
    };
    let max_depth = (0..wf.loops.len())
        .map(|i| depth_of(LoopIndex(i as u32)) + 1)
        .max()
        .unwrap_or(0);
    let col_left = -half - CLUSTER_PAD * max_depth;
    let col_right = half + CLUSTER_PAD * max_depth;

    let mut bounds = Bounds {
        x1: col_left,
        y1: 0,
        x2: col_right,
        y2: y,
    };
    let mut clusters = String::new();
    let mut shapes = String::new();
    let mut paths = String::new();
    let mut labels: Vec<Label> = Vec::new();

    // Loop boxes, outermost first so inner ones are drawn on top.
    let mut loop_order: Vec<usize> = (0..wf.loops.len()).collect();
    loop_order.sort_by_key(|&i| (depth_of(LoopIndex(i as u32)), i));
    for li in loop_order {
        let index = LoopIndex(li as u32);
        let head = g
            .nodes
            .iter()
            .position(|x| x.kind == NodeKind::LoopHead(index));
        let tail = g
            .nodes
            .iter()
            .position(|x| x.kind == NodeKind::LoopTail(index));
        let (Some(hb), Some(tb)) = (head.and_then(|h| boxes[h]), tail.and_then(|t| boxes[t]))
        else {
            continue;
        };
        let inset = CLUSTER_PAD * (max_depth - depth_of(index));
        let (x1, x2) = (-half - inset, half + inset);
        let (y1, y2) = (hb.y - 8, tb.y + tb.h + 8);
        let id = wf
            .loop_at(index)
            .map(|l| l.id.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            clusters,
            "  <rect class=\"cluster\" x=\"{x1}\" y=\"{y1}\" width=\"{}\" height=\"{}\" rx=\"8\"><title>{}</title></rect>",
            x2 - x1,
            y2 - y1,
            xml(&format!("loop {id}"))
        );
    }

    // Edges: adjacent rows straight down; the rest in lanes.
    let mut left: Vec<(usize, (i64, i64))> = Vec::new();
    let mut right: Vec<(usize, (i64, i64))> = Vec::new();
    for (ei, e) in g.edges.iter().enumerate() {
        let (Some(ra), Some(rb)) = (row_of[e.from], row_of[e.to]) else {
            continue;
        };
        let (Some(a), Some(b)) = (boxes[e.from], boxes[e.to]) else {
            continue;
        };
        if rb == ra + 1 {
            let (y1, y2) = (a.y + a.h, b.y);
            let _ = writeln!(
                paths,
                "  <path class=\"{c}\" d=\"M{x},{y1} V{y2}\" marker-end=\"url(#arrow-{c})\"/>",
                c = edge_class(e.kind),
                x = a.cx()
            );
            if !e.label.is_empty() {
                place(
                    &mut labels,
                    Label {
                        x: a.cx() + 6,
                        y: (y1 + y2) / 2 + 4,
                        end_anchored: false,
                        text: clip(&e.label, LABEL_CHARS),
                        class: edge_class(e.kind),
                    },
                );
            }
        } else if rb > ra {
            left.push((ei, (a.cy(), b.cy())));
        } else {
            right.push((ei, (b.cy(), a.cy())));
        }
    }
    for (side, list) in [(-1i64, &left), (1i64, &right)] {
        let assigned = lanes(&list.iter().map(|(_, s)| *s).collect::<Vec<_>>());
        for ((ei, _), lane) in list.iter().zip(assigned) {
            let e = &g.edges[*ei];
            let (Some(a), Some(b)) = (boxes[e.from], boxes[e.to]) else {
                continue;
            };
            let base = if side < 0 {
                col_left - 16
            } else {
                col_right + 16
            };
            let lx = base + side * lane as i64 * LANE_GAP;
            let (sy, ty) = (a.cy() + 4, b.cy() - 4);
            let sx = a.cx() + side * a.half_at(4);
            let tx = b.cx() + side * b.half_at(-4);
            let _ = writeln!(
                paths,
                "  <path class=\"{c}\" d=\"M{sx},{sy} H{lx} V{ty} H{tx}\" marker-end=\"url(#arrow-{c})\"/>",
                c = edge_class(e.kind)
            );
            bounds.add(lx, sy.min(ty), lx, sy.max(ty));
            if !e.label.is_empty() {
                place(
                    &mut labels,
                    Label {
                        x: lx + side * 4,
                        y: (sy + ty) / 2 + 4,
                        end_anchored: side < 0,
                        text: clip(&e.label, LABEL_CHARS),
                        class: edge_class(e.kind),
                    },
                );
            }
        }
    }
    // Children: right of everything drawn so far, level with their step.
    let mut kids_x = bounds.x2 + 24;
    for l in &labels {
        kids_x = kids_x.max(l.rect().2 + 24);
    }
    for &i in &rows {
        let Some(parent) = boxes[i] else { continue };
        let mut ky = parent.y;
        for c in children_of(i) {
            let (w, h) = sizes[c];
            let b = Boxed {
                x: kids_x,
                y: ky,
                w,
                h,
                shape: Shape::Rect,
            };
            boxes[c] = Some(b);
            ky += h + 8;
            let _ = writeln!(
                paths,
                "  <path class=\"spawn\" d=\"M{},{} L{},{}\" marker-end=\"url(#arrow-spawn)\"/>",
                parent.x + parent.w,
                parent.cy(),
                b.x,
                b.cy()
            );
        }
    }
    // Nodes.
    for (i, node) in g.nodes.iter().enumerate() {
        let Some(b) = boxes[i] else { continue };
        bounds.add(b.x, b.y, b.x + b.w, b.y + b.h);
        svg_node(wf, node, b, &mut shapes);
    }
    let mut label_svg = String::new();
    for l in &labels {
        let (x1, y1, x2, y2) = l.rect();
        bounds.add(x1, y1, x2, y2);
        let _ = writeln!(
            label_svg,
            "  <text class=\"label l-{}\" x=\"{}\" y=\"{}\" text-anchor=\"{}\">{}</text>",
            l.class,
            l.x,
            l.y,
            if l.end_anchored { "end" } else { "start" },
            xml(&l.text)
        );
    }
    let title_x = bounds.x1;
    bounds.add(title_x, 4, title_x + text_w(&g.title, 14), 24);
    let (vx, vy) = (bounds.x1 - MARGIN, bounds.y1 - MARGIN);
    let (vw, vh) = (
        bounds.x2 - bounds.x1 + 2 * MARGIN,
        bounds.y2 - bounds.y1 + 2 * MARGIN,
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{vw}\" height=\"{vh}\" viewBox=\"{vx} {vy} {vw} {vh}\" role=\"img\" aria-label=\"{}\">",
        xml(&g.title)
    );
    let _ = writeln!(out, "  <title>{}</title>", xml(&g.title));
    let _ = writeln!(out, "  <style>{SVG_STYLE}</style>");
    let _ = writeln!(out, "  <defs>");
    for (name, color) in MARKER_COLORS {
        let _ = writeln!(
            out,
            "    <marker id=\"arrow-{name}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" style=\"fill:{color};stroke:none\"/></marker>"
        );
    }
    let _ = writeln!(out, "  </defs>");
    let _ = writeln!(
        out,
        "  <rect x=\"{vx}\" y=\"{vy}\" width=\"{vw}\" height=\"{vh}\" style=\"fill:#ffffff\"/>"
    );
    let _ = writeln!(
        out,
        "  <text class=\"title\" x=\"{title_x}\" y=\"20\">{}</text>",
        xml(&g.title)
    );
    out.push_str(&clusters);
    out.push_str(&paths);
    out.push_str(&shapes);
    out.push_str(&label_svg);
    out.push_str("</svg>\n");
    out
}

/// An XML `id` from a node key (`step:verify.run` → `step_verify.run`).
fn svg_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn svg_node(wf: &CompiledWorkflow, node: &Node, b: Boxed, out: &mut String) {
    let _ = writeln!(out, "  <g id=\"{}\">", xml(&svg_id(&node.key)));
    let _ = writeln!(out, "    <title>{}</title>", xml(&node.tooltip));
    let class = match node.kind {
        NodeKind::Start | NodeKind::End => "terminal",
        NodeKind::Step(s) => {
            if wf.step(s).is_some_and(|s| s.delegation.is_some()) {
                "node parallel"
            } else {
                "node"
            }
        }
        NodeKind::Guard(_) | NodeKind::BlockGuard(_) => "guard",
        NodeKind::LoopHead(_) => "head",
        NodeKind::LoopTail(_) => "tail",
        NodeKind::Child { .. } => "child",
    };
    let class = if node.gate {
        format!("{class} gate")
    } else {
        class.to_owned()
    };
    match b.shape {
        Shape::Rect => {
            let _ = writeln!(
                out,
                "    <rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"5\"/>",
                b.x, b.y, b.w, b.h
            );
            if node.gate {
                let _ = writeln!(
                    out,
                    "    <rect class=\"gate-inner\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\"/>",
                    b.x + 3,
                    b.y + 3,
                    b.w - 6,
                    b.h - 6
                );
            }
        }
        Shape::Pill => {
            let _ = writeln!(
                out,
                "    <rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\"/>",
                b.x,
                b.y,
                b.w,
                b.h,
                b.h / 2
            );
            if node.kind == NodeKind::End {
                let _ = writeln!(
                    out,
                    "    <rect class=\"terminal-inner\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\"/>",
                    b.x + 3,
                    b.y + 3,
                    b.w - 6,
                    b.h - 6,
                    (b.h - 6) / 2
                );
            }
        }
        Shape::Diamond => {
            let (cx, cy, hw, hh) = (b.cx(), b.cy(), b.w / 2, b.h / 2);
            let _ = writeln!(
                out,
                "    <polygon class=\"{class}\" points=\"{cx},{} {},{cy} {cx},{} {},{cy}\"/>",
                cy - hh,
                cx + hw,
                cy + hh,
                cx - hw
            );
        }
        Shape::Hexagon => {
            let (x1, x2, y1, y2, cy, d) = (b.x, b.x + b.w, b.y, b.y + b.h, b.cy(), b.h / 2);
            let _ = writeln!(
                out,
                "    <polygon class=\"{class}\" points=\"{x1},{cy} {},{y1} {},{y1} {x2},{cy} {},{y2} {},{y2}\"/>",
                x1 + d,
                x2 - d,
                x2 - d,
                x1 + d
            );
        }
        Shape::Circle => {
            let _ = writeln!(
                out,
                "    <circle class=\"{class}\" cx=\"{}\" cy=\"{}\" r=\"{}\"/>",
                b.cx(),
                b.cy(),
                b.w / 2
            );
        }
    }
    let small = matches!(b.shape, Shape::Diamond | Shape::Circle);
    let left_aligned = matches!(node.kind, NodeKind::Step(_));
    for (k, line) in svg_lines(node).iter().enumerate() {
        let ty = if small {
            b.cy() + 4
        } else {
            b.y + PAD_Y + LINE_H * k as i64 + 12
        };
        let (tx, anchor) = if left_aligned {
            (b.x + PAD_X, "start")
        } else {
            (b.cx(), "middle")
        };
        let class = if k == 0 && !small {
            " class=\"name\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"{anchor}\"{class}>{}</text>",
            xml(line)
        );
    }
    let _ = writeln!(out, "  </g>");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use worktrain_core::compile::compile;
    use worktrain_core::load::parse_workflow;

    const ALL_CONSTRUCTS: &str = r#"
schemaVersion: 2
id: every-thing
name: Everything
description: every construct once
version: "1"
inputs: [size, plan]
steps:
  - id: classify
    title: Classify
    prompt: classify {{context.size}}
    outputContract:
      contract: assessment
      contextKey: risk
      dimensions:
        level: {levels: [low, high], blockOn: []}
  - id: careful
    title: Be careful
    prompt: careful
    runCondition: {var: risk.level, equals: high}
    requireConfirmation: {kind: human_approval, when: {var: size, equals: big}}
  - id: slices
    loop: {forEach: {over: plan, as: slice}, maxIterations: 10}
    steps:
      - id: implement
        title: Implement a slice
        prompt: "{{slice}}"
      - id: verify
        title: Verify
        loop: {until: {var: green, equals: true}, maxIterations: 3}
        steps:
          - id: check
            title: Check
            prompt: check
            contextOutputs: [green]
  - id: review
    title: Review <&> "all"
    prompt: review
    parallel:
      join: any
      children:
        - {workflow: mr-review, goal: "review {{goal}}"}
        - {workflow: security, goal: look for holes}
  - id: polish
    loop: {maxIterations: 2}
    steps:
      - id: decide
        title: Decide
        prompt: decide
        outputContract: {contract: loop_control}
  - id: fix
    title: Fix
    prompt: fix
    jumpIf: {condition: {var: again, equals: true}, target: review, maxJumps: 2}
"#;

    fn wf() -> CompiledWorkflow {
        let def = parse_workflow("every.yaml", ALL_CONSTRUCTS).unwrap();
        compile(&def).unwrap().workflow.as_ref().clone()
    }

    #[test]
    fn text_outline_shows_every_construct() {
        let t = to_text(&wf());
        for needle in [
            "every-thing — Everything (v1)",
            "inputs: size, plan",
            "[1] classify — Classify",
            "contract: assessment → context.risk",
            "level: low | high",
            "if risk.level equals \"high\" / else skip",
            "gate: human_approval if size equals \"big\"",
            "loop slices",
            "repeat: forEach plan as slice (index index), max 10 passes",
            "  loop verify — Verify",
            "exit after a pass: green equals true",
            "sets context: green",
            "parallel, join any:",
            "⇉ mr-review: review {{goal}}",
            "decision step: decide (loop_control continue|stop)",
            "decides loop polish",
            "jumpIf again equals true → review (max 2 jumps)",
            "↺ next pass unless decide decides stop",
            "end loop polish",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(t.trim_end().ends_with("end"), "{t}");
        // The nested loop's body is indented twice.
        assert!(t.contains("\n    [4] check — Check\n"), "{t}");
    }

    #[test]
    fn graph_model_has_guards_loops_jumps_and_children() {
        let g = graph(&wf());
        let key = |i: usize| g.nodes[i].key.as_str();
        let has = |from: &str, to: &str, kind: EdgeKind| {
            g.edges
                .iter()
                .any(|e| key(e.from) == from && key(e.to) == to && e.kind == kind)
        };
        assert!(has("start", "step:classify", EdgeKind::Next));
        assert!(has("step:classify", "guard:careful", EdgeKind::Next));
        assert!(has("guard:careful", "step:careful", EdgeKind::Guarded));
        assert!(has("guard:careful", "loop:slices", EdgeKind::Skip));
        assert!(has("loop:slices", "step:implement", EdgeKind::Pass));
        assert!(has("loop:slices", "step:review", EdgeKind::Exit));
        assert!(has("tail:verify", "loop:verify", EdgeKind::Back));
        assert!(has("tail:verify", "tail:slices", EdgeKind::Exit));
        assert!(has("tail:slices", "loop:slices", EdgeKind::Back));
        assert!(
            !g.edges
                .iter()
                .any(|e| key(e.from) == "tail:slices" && e.kind == EdgeKind::Exit)
        );
        assert!(has("step:fix", "step:review", EdgeKind::Jump));
        assert!(has("step:review", "child:review:1", EdgeKind::Spawn));
        assert!(has("step:review", "child:review:2", EdgeKind::Spawn));
        assert!(has("step:fix", "end", EdgeKind::Next));
        let careful = g.nodes.iter().find(|n| n.key == "step:careful").unwrap();
        assert!(careful.gate);
        let check = g.nodes.iter().find(|n| n.key == "step:check").unwrap();
        assert_eq!(check.scope, Some(LoopIndex(1)));
        let exit = g
            .edges
            .iter()
            .find(|e| key(e.from) == "loop:verify" && e.kind == EdgeKind::Exit)
            .unwrap();
        assert_eq!(exit.label, "exit: max 3 passes");
    }

    #[test]
    fn dot_has_clusters_styles_and_escapes() {
        let d = to_dot(&wf());
        assert!(d.starts_with("digraph \"every-thing\" {"), "{d}");
        assert!(d.contains("subgraph \"cluster_slices\""), "{d}");
        assert!(d.contains("subgraph \"cluster_verify\""), "{d}");
        assert!(
            d.contains(
                "\"guard:careful\" -> \"step:careful\" [label=\"if risk.level equals \\\"high\\\"\""
            ),
            "{d}"
        );
        assert!(
            d.contains("\"guard:careful\" -> \"loop:slices\" [label=\"else skip\", style=dashed"),
            "{d}"
        );
        assert!(
            d.contains("\"step:fix\" -> \"step:review\" [label=\"jumpIf again equals true ≤2\", style=dashed"),
            "{d}"
        );
        assert!(d.contains("Review <&> \\\"all\\\""), "{d}");
        assert!(d.contains("peripheries=2, color=\"#c62828\""), "{d}");
        assert!(d.trim_end().ends_with('}'));
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let s = to_svg(&wf());
        assert!(
            s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{s}"
        );
        assert!(s.contains("Review &lt;&amp;&gt; &quot;all&quot;"));
        assert!(s.contains("class=\"gate-inner\""));
        assert!(s.contains("marker-end=\"url(#arrow-jump)\""));
        check_xml(&s);
        assert_eq!(s, to_svg(&wf()), "deterministic");
    }

    #[test]
    fn guarded_loops_have_a_guard_node_with_if_and_skip_edges() {
        let def = parse_workflow(
            "g.yaml",
            r#"
schemaVersion: 2
id: guarded
name: Guarded
description: a guarded loop
version: "1"
steps:
  - id: a
    title: A
    prompt: a
  - id: again
    title: Again
    runCondition: {var: go, equals: true}
    loop: {for: 2, maxIterations: 2}
    steps:
      - id: x
        title: X
        prompt: x
  - id: b
    title: B
    prompt: b
"#,
        )
        .unwrap();
        let wf = compile(&def).unwrap().workflow.as_ref().clone();
        let t = to_text(&wf);
        assert!(
            t.contains("loop again — Again\n    if go equals true / else skip\n    repeat: for 2"),
            "{t}"
        );
        let g = graph(&wf);
        let key = |i: usize| g.nodes[i].key.as_str();
        let has = |from: &str, to: &str, kind: EdgeKind, label: &str| {
            g.edges.iter().any(|e| {
                key(e.from) == from && key(e.to) == to && e.kind == kind && e.label == label
            })
        };
        assert!(has("step:a", "guard:again", EdgeKind::Next, ""));
        assert!(has(
            "guard:again",
            "loop:again",
            EdgeKind::Guarded,
            "if go equals true"
        ));
        assert!(has("guard:again", "step:b", EdgeKind::Skip, "else skip"));
        let guard = g.nodes.iter().find(|n| n.key == "guard:again").unwrap();
        assert_eq!(guard.kind, NodeKind::BlockGuard(Pc(1)));
        assert_eq!(guard.scope, None, "the guard is outside the loop it guards");
        let d = to_dot(&wf);
        assert!(
            d.contains("\"guard:again\" -> \"step:b\" [label=\"else skip\", style=dashed"),
            "{d}"
        );
        let s = to_svg(&wf);
        assert!(s.contains("<g id=\"guard_again\">"), "{s}");
        assert!(s.contains("class=\"guard\""), "{s}");
        assert!(s.contains("marker-end=\"url(#arrow-skip)\""), "{s}");
        check_xml(&s);
    }

    #[test]
    fn lanes_separate_overlapping_spans() {
        assert_eq!(
            lanes(&[(0, 10), (2, 4), (5, 8), (11, 12)]),
            vec![1, 0, 0, 0]
        );
        assert_eq!(lanes(&[(0, 5), (5, 9)]), vec![1, 0]);
        assert_eq!(isqrt(120), 10);
        assert_eq!(isqrt(121), 11);
    }

    #[test]
    fn formats_parse() {
        for f in GraphFormat::ALL {
            assert_eq!(f.as_str().parse::<GraphFormat>().unwrap(), f);
        }
        assert!("png".parse::<GraphFormat>().is_err());
    }

    /// A minimal XML well-formedness check: balanced tags, quoted attributes, known entities.
    pub(crate) fn check_xml(s: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt]);
            let Some(gt) = rest[lt..].find('>') else {
                panic!("unclosed tag")
            };
            let tag = &rest[lt + 1..lt + gt];
            rest = &rest[lt + gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            assert!(!name.is_empty(), "empty tag");
            assert_eq!(
                body.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{body}>"
            );
            check_text(&body.replace('"', ""));
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(t: &str) {
        let mut rest = t;
        while let Some(amp) = rest.find('&') {
            let after = &rest[amp..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| after.starts_with(e)),
                "bad entity near {after:.20}"
            );
            rest = &rest[amp + 1..];
        }
        assert!(!t.contains('<'));
    }
}
