//! Compiling a [`WorkflowDefinition`] into an explicit program: a step table, a loop
//! table and a list of control-flow instructions. Routines are expanded here, so the
//! compiled form is self-contained. It is canonicalised (RFC 8785 JSON) and hashed;
//! sessions pin that hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::{Condition, ContextPath};
use crate::context::is_reserved_key;
use crate::contract::ContractName;
use crate::ids::{Sha256Hash, StepId, WorkflowId};
use crate::load::{Rule, WorkflowError, parse_routine};
use crate::workflow::{
    Confirmation, DimensionSpec, ForCount, GateKind, Join, LoopDefinition, StepDefinition,
    StepEntry, WorkflowDefinition,
};

/// Version of the compiled representation. Bumping it changes every workflow hash,
/// which is intended: a session keeps running the program it pinned.
pub const COMPILER_VERSION: u32 = 3;

/// Index into [`CompiledWorkflow::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepIndex(pub u32);

/// Index into [`CompiledWorkflow::loops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LoopIndex(pub u32);

/// Program counter: index into [`CompiledWorkflow::program`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Pc(pub u32);

impl Pc {
    /// The next instruction.
    pub fn next(self) -> Pc {
        Pc(self.0.saturating_add(1))
    }
}

/// One control-flow instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instr {
    /// Enter a step (after checking its run condition).
    Step {
        /// The step entered.
        step: StepIndex,
    },
    /// Start of a loop: decide whether to run a(nother) pass or exit to `exit`.
    LoopHead {
        /// The loop this head starts, as an index into [`CompiledWorkflow::loops`].
        #[serde(rename = "loop")]
        loop_: LoopIndex,
        /// Where execution continues when the loop exits.
        exit: Pc,
    },
    /// End of a loop pass: evaluate the decision, `until` and the bound; then back to `head`.
    LoopTail {
        /// The loop this tail ends, as an index into [`CompiledWorkflow::loops`].
        #[serde(rename = "loop")]
        loop_: LoopIndex,
        /// The loop's head.
        head: Pc,
    },
    /// In front of a guarded block (a loop or a routine include with a `runCondition`):
    /// evaluated once when execution reaches it. True enters the block (the next
    /// instruction) without an event; false records `block_skipped` and continues at
    /// `skip_to`, the first position after the block.
    Guard {
        /// The guarded loop's id, or the include's id.
        id: StepId,
        /// The block's run condition.
        condition: Condition,
        /// Where execution continues when the condition is false.
        skip_to: Pc,
    },
    /// The workflow is complete.
    End,
}

/// A step as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledStep {
    /// Step id (prefixed when it came from a routine).
    pub id: StepId,
    /// The step's title, as the workflow names it.
    pub title: String,
    /// Prompt template shown to the agent; rendered against the session goal and context
    /// (see [`crate::prompt`]) when the step is entered.
    pub prompt: String,
    /// Conditional prompt fragments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<CompiledFragment>,
    /// Run condition; `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// Whether (and when) a human must confirm the step; `None` means the step never asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<ConfirmationRule>,
    /// Contract of the required artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<CompiledContract>,
    /// Whether notes may be omitted.
    pub notes_optional: bool,
    /// Context keys the step must set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_outputs: Vec<String>,
    /// Bounded backward jump evaluated on completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<CompiledJump>,
    /// Child workflows this step delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
    /// The loop whose pass decision this step's `loop_control` artifact makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decides: Option<LoopIndex>,
    /// Position of the step's instruction.
    pub pc: Pc,
}

/// A conditional prompt fragment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledFragment {
    /// When it applies.
    pub when: Condition,
    /// Text appended to the step's prompt when [`Self::when`] holds.
    pub text: String,
}

/// Compiled confirmation requirement, evaluated when the step is entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationRule {
    /// Who confirms: a person, or the coordinating process (script or parent session).
    pub kind: GateKind,
    /// Only when this holds on entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// A step's artifact requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledContract {
    /// Name of the contract the artifact must satisfy (e.g. `loop_control`).
    pub contract: ContractName,
    /// Whether the artifact must be present.
    pub required: bool,
    /// Assessment dimensions the artifact rates, by name; empty when the contract has none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, DimensionSpec>,
    /// Where assessment levels are written in the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_key: Option<String>,
}

/// A compiled `jumpIf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledJump {
    /// Jump when this holds after completion.
    pub condition: Condition,
    /// Target entry id.
    pub target: StepId,
    /// Program position of the target entry (resolved from [`Self::target`] at compile time).
    pub target_pc: Pc,
    /// Most backward jumps taken before the jump is exhausted.
    pub max_jumps: u32,
}

/// A parallel delegation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegation {
    /// Children to run.
    pub children: Vec<CompiledChild>,
    /// Whether the parent step waits for every child or only the first to finish.
    pub join: Join,
}

/// One child of a delegation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledChild {
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// Goal template of the child session, rendered against the parent's context.
    pub goal: String,
    /// Context the child session starts with; empty when none is given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
}

/// How a loop repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoopKind {
    /// Check before each pass.
    While {
        /// Evaluated before each pass against the session context.
        condition: Condition,
    },
    /// Check after each pass.
    Until {
        /// Evaluated before each pass against the session context.
        condition: Condition,
    },
    /// Fixed number of passes.
    For {
        /// Literal number of passes; `None` when `var` gives it instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// Or a context path read on entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<ContextPath>,
    },
    /// One pass per array element.
    ForEach {
        /// Context path of the array iterated, read when the loop is entered.
        over: ContextPath,
        /// Context key that holds the current element during a pass.
        item: String,
        /// Context key that holds the current 0-based index during a pass.
        index: String,
    },
    /// Only the decision step's `loop_control` artifact (and the bound) ends it.
    Decision,
}

/// A loop as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledLoop {
    /// The loop's id, as written in the workflow (prefixed when it came from a routine).
    pub id: StepId,
    /// The step's title, as the workflow names it.
    pub title: String,
    /// Repetition rule: what decides whether another pass runs.
    pub kind: LoopKind,
    /// Bound on passes.
    pub max_iterations: u32,
    /// The decision step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_step: Option<StepIndex>,
    /// Position of the loop's [`Instr::LoopHead`] in [`CompiledWorkflow::program`].
    pub head: Pc,
    /// Position of the loop's [`Instr::LoopTail`] in [`CompiledWorkflow::program`].
    pub tail: Pc,
    /// The loop this one is nested in; `None` for a top-level loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<LoopIndex>,
}

/// The compiled, canonical form of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledWorkflow {
    /// [`COMPILER_VERSION`] at compile time.
    pub compiler: u32,
    /// The workflow's id, as written in its source.
    pub id: WorkflowId,
    /// The workflow's human name.
    pub name: String,
    /// What the workflow does, for catalogs and agents.
    pub description: String,
    /// Author's version string.
    pub version: String,
    /// Language version of the source.
    pub schema_version: u32,
    /// Free-form labels for finding the workflow.
    pub tags: Vec<String>,
    /// Workflow-level guidance shown with each prompt.
    pub guidance: Vec<String>,
    /// Declared start inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Meant to run without a human.
    #[serde(default)]
    pub unattended: bool,
    /// Every step, in source order; [`StepIndex`] indexes it.
    pub steps: Vec<CompiledStep>,
    /// Every loop, in source order; [`LoopIndex`] indexes it. Empty without loops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<CompiledLoop>,
    /// Control-flow program.
    pub program: Vec<Instr>,
    /// Upper bound on the step nodes a session can create without rewinds.
    pub node_bound: u64,
}

/// A compiled workflow together with its canonical bytes and hash.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// The compiled workflow, shared (sessions pinned to the same hash share one copy).
    pub workflow: Arc<CompiledWorkflow>,
    /// RFC 8785 canonical JSON of `workflow`.
    pub canonical: Vec<u8>,
    /// sha256 of `canonical`: the id sessions pin.
    pub hash: Sha256Hash,
}

impl Pinned {
    /// Canonicalise and hash a compiled workflow.
    pub fn new(workflow: CompiledWorkflow) -> Result<Self, WorkflowError> {
        let canonical = serde_json_canonicalizer::to_vec(&workflow).map_err(|e| {
            WorkflowError::at_path(".", Rule::Value, format!("cannot canonicalise: {e}"))
        })?;
        let hash = Sha256Hash::of(&canonical);
        Ok(Self {
            workflow: Arc::new(workflow),
            canonical,
            hash,
        })
    }

    /// Rebuild from stored canonical bytes.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, String> {
        let workflow: CompiledWorkflow = serde_json::from_slice(bytes)
            .map_err(|e| format!("stored workflow unreadable: {e}"))?;
        Ok(Self {
            workflow: Arc::new(workflow),
            canonical: bytes.to_vec(),
            hash: Sha256Hash::of(bytes),
        })
    }
}

/// A routine file found by a [`RoutineResolver`].
#[derive(Debug, Clone)]
pub struct RoutineSource {
    /// Where it came from (for errors and cycle detection).
    pub location: String,
    /// The routine file's YAML text, parsed like a workflow source.
    pub text: String,
}

/// Finds routine files for `include:` entries.
pub trait RoutineResolver {
    /// Resolve `reference` (a routine id, or a path relative to the including file at
    /// `from`) to a routine file.
    fn resolve(&self, reference: &str, from: &str) -> Result<RoutineSource, String>;
}

/// A resolver with no routines.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoutines;

impl RoutineResolver for NoRoutines {
    fn resolve(&self, reference: &str, _from: &str) -> Result<RoutineSource, String> {
        Err(format!(
            "routine `{reference}` not found (no routine sources configured)"
        ))
    }
}

/// Compile a definition without routine sources.
pub fn compile(def: &WorkflowDefinition) -> Result<Pinned, WorkflowError> {
    compile_with(def, "<workflow>", &NoRoutines)
}

/// Compile a definition located at `location`, resolving includes with `resolver`.
pub fn compile_with(
    def: &WorkflowDefinition,
    location: &str,
    resolver: &dyn RoutineResolver,
) -> Result<Pinned, WorkflowError> {
    non_empty("name", &def.name)?;
    non_empty("description", &def.description)?;
    non_empty("version", &def.version)?;
    if def.steps.is_empty() {
        return Err(WorkflowError::at_path(
            "steps",
            Rule::NonEmpty,
            "a workflow needs at least one entry",
        ));
    }
    for (i, key) in def.inputs.iter().enumerate() {
        check_key(&format!("inputs[{i}]"), key)?;
    }
    let mut expander = Expander {
        resolver,
        stack: vec![location.to_owned()],
    };
    let expanded = expander.entries(&def.steps, "steps", location, None)?;
    let mut b = Builder::default();
    b.block(&expanded, "steps", None)?;
    b.program.push(Instr::End);
    b.resolve_jumps()?;
    let node_bound = bound_of(&expanded);
    Pinned::new(CompiledWorkflow {
        compiler: COMPILER_VERSION,
        id: def.id.clone(),
        name: def.name.trim().to_owned(),
        description: def.description.trim().to_owned(),
        version: def.version.clone(),
        schema_version: def.schema_version,
        tags: def.tags.clone(),
        guidance: def.guidance.clone(),
        inputs: def.inputs.clone(),
        unattended: def.unattended,
        steps: b.steps,
        loops: b.loops,
        program: b.program,
        node_bound,
    })
}

fn non_empty(path: &str, s: &str) -> Result<(), WorkflowError> {
    if s.trim().is_empty() {
        Err(WorkflowError::at_path(
            path,
            Rule::NonEmpty,
            format!("`{path}` must not be empty"),
        ))
    } else {
        Ok(())
    }
}

fn check_key(path: &str, key: &str) -> Result<(), WorkflowError> {
    if key.is_empty() || key.contains('.') || is_reserved_key(key) {
        return Err(WorkflowError::at_path(
            path,
            Rule::Reference,
            format!(
                "`{key}` is not a usable context key (non-empty, no dots, not `worktrain` or `_…`)"
            ),
        ));
    }
    Ok(())
}

/// Conditions may read engine-provided values under `worktrain.*`, but no other reserved key.
fn check_condition_vars(path: &str, c: &Condition) -> Result<(), WorkflowError> {
    c.vars()
        .into_iter()
        .try_for_each(|var| check_read(path, "condition", var))
}

/// A context path read by a condition or a loop (`for: {var}`, `forEach.over`): the same
/// rule for all of them.
fn check_read(path: &str, what: &str, var: &ContextPath) -> Result<(), WorkflowError> {
    let root = var.root();
    if root != "worktrain" && is_reserved_key(root) {
        return Err(WorkflowError::at_path(
            path,
            Rule::Reference,
            format!("{what} reads `{var}`, but `{root}` is a reserved context key"),
        ));
    }
    Ok(())
}

/// An entry after routine expansion: steps, loops and guarded blocks remain.
#[derive(Debug, Clone)]
enum XEntry {
    Step {
        def: StepDefinition,
        path: String,
    },
    Loop {
        def: LoopDefinition,
        body: Vec<XEntry>,
        path: String,
    },
    /// A loop or routine include with a `runCondition`. For a loop, `body` is that one
    /// loop and `id` its id; for an include, `body` is the routine's expanded entries (a
    /// step list of its own) and `id` the include's id.
    Guarded {
        id: StepId,
        condition: Condition,
        body: Vec<XEntry>,
        /// Document path of the loop or include entry.
        path: String,
        /// Document path of the body's step list (for an include: the routine's `steps`).
        body_path: String,
        /// Whether the block is an include (its id is claimed as an entry id of its own).
        include: bool,
    },
}

impl XEntry {
    fn id(&self) -> &StepId {
        match self {
            XEntry::Step { def, .. } => &def.id,
            XEntry::Loop { def, .. } => &def.id,
            XEntry::Guarded { id, .. } => id,
        }
    }
}

struct Expander<'r> {
    resolver: &'r dyn RoutineResolver,
    /// Locations being expanded (cycle detection).
    stack: Vec<String>,
}

/// Renames and argument values applied to a routine's entries.
struct Rewrite<'a> {
    prefix: &'a str,
    args: &'a Map<String, Value>,
    location: &'a str,
}

impl Expander<'_> {
    fn entries(
        &mut self,
        entries: &[StepEntry],
        path: &str,
        location: &str,
        rewrite: Option<&Rewrite<'_>>,
    ) -> Result<Vec<XEntry>, WorkflowError> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{path}[{i}]");
            match entry {
                StepEntry::Step(s) => {
                    let def = match rewrite {
                        Some(r) => rewrite_step(s, r, &at)?,
                        None => s.clone(),
                    };
                    out.push(XEntry::Step { def, path: at });
                }
                StepEntry::Loop(l) => {
                    let mut def = l.clone();
                    if let Some(r) = rewrite {
                        def.id = prefixed(r.prefix, &l.id, &at)?;
                        if let Some(c) = &mut def.run_condition {
                            prefix_loop_refs(c, r.prefix);
                        }
                        def.title = match &l.title {
                            Some(t) => Some(substitute(t, r, &format!("{at}.title"))?),
                            None => None,
                        };
                        if let Some(c) = &mut def.spec.while_ {
                            prefix_loop_refs(c, r.prefix);
                        }
                        if let Some(c) = &mut def.spec.until {
                            prefix_loop_refs(c, r.prefix);
                        }
                        def.spec.decision_step = match &l.spec.decision_step {
                            Some(d) => Some(prefixed(r.prefix, d, &at)?),
                            None => None,
                        };
                    }
                    let body = self.entries(&l.steps, &format!("{at}.steps"), location, rewrite)?;
                    match def.run_condition.take() {
                        None => out.push(XEntry::Loop {
                            def,
                            body,
                            path: at,
                        }),
                        Some(condition) => out.push(XEntry::Guarded {
                            id: def.id.clone(),
                            condition,
                            body_path: format!("{at}.steps"),
                            body: vec![XEntry::Loop {
                                def,
                                body,
                                path: at.clone(),
                            }],
                            path: at,
                            include: false,
                        }),
                    }
                }
                StepEntry::Include(inc) => {
                    let prefix = match rewrite {
                        Some(r) => prefixed(r.prefix, &inc.id, &at)?.to_string(),
                        None => inc.id.to_string(),
                    };
                    let src = self.resolver.resolve(&inc.include, location).map_err(|e| {
                        WorkflowError::at_path(format!("{at}.include"), Rule::Reference, e)
                    })?;
                    if self.stack.contains(&src.location) {
                        let mut chain = self.stack.clone();
                        chain.push(src.location.clone());
                        return Err(WorkflowError::at_path(
                            format!("{at}.include"),
                            Rule::Reference,
                            format!("routine include cycle: {}", chain.join(" → ")),
                        ));
                    }
                    if self.stack.len() > 16 {
                        return Err(WorkflowError::at_path(
                            format!("{at}.include"),
                            Rule::Reference,
                            "routines are nested more than 16 deep",
                        ));
                    }
                    let routine = parse_routine(&src.location, &src.text)?;
                    let declared: Vec<&String> = routine.params.iter().collect();
                    let mut args = match rewrite {
                        Some(r) => substitute_args(&inc.args, r, &format!("{at}.with"))?,
                        None => inc.args.clone(),
                    };
                    for key in args.keys() {
                        if !declared.contains(&key) {
                            return Err(WorkflowError::at_path(
                                format!("{at}.with.{key}"),
                                Rule::Reference,
                                format!(
                                    "routine `{}` has no parameter `{key}` (parameters: {})",
                                    routine.routine,
                                    routine.params.join(", ")
                                ),
                            ));
                        }
                    }
                    for p in &routine.params {
                        if !args.contains_key(p) {
                            return Err(WorkflowError::at_path(
                                format!("{at}.with"),
                                Rule::Required,
                                format!("routine `{}` needs the argument `{p}`", routine.routine),
                            ));
                        }
                    }
                    args.retain(|_, _| true);
                    self.stack.push(src.location.clone());
                    let inner = Rewrite {
                        prefix: &prefix,
                        args: &args,
                        location: &src.location,
                    };
                    let expanded = self
                        .entries(
                            &routine.steps,
                            &format!("{at}<{}>.steps", src.location),
                            &src.location,
                            Some(&inner),
                        )
                        .map_err(|e| {
                            if e.file.is_none() {
                                e.in_file(src.location.clone())
                            } else {
                                e
                            }
                        })?;
                    self.stack.pop();
                    match &inc.run_condition {
                        // Unguarded: the routine's entries join this list.
                        None => out.extend(expanded),
                        Some(c) => {
                            // The include's condition belongs to the including file: it
                            // gets that file's prefixing, like the file's other conditions.
                            let mut condition = c.clone();
                            if let Some(r) = rewrite {
                                prefix_loop_refs(&mut condition, r.prefix);
                            }
                            out.push(XEntry::Guarded {
                                id: StepId::new(prefix.clone()).map_err(|e| {
                                    WorkflowError::at_path(
                                        &at,
                                        Rule::Value,
                                        format!("include id is too long or invalid: {e}"),
                                    )
                                })?,
                                condition,
                                body: expanded,
                                path: at.clone(),
                                body_path: format!("{at}<{}>.steps", src.location),
                                include: true,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn prefixed(prefix: &str, id: &StepId, at: &str) -> Result<StepId, WorkflowError> {
    StepId::new(format!("{prefix}.{id}")).map_err(|e| {
        WorkflowError::at_path(
            at,
            Rule::Value,
            format!("included step id is too long or invalid: {e}"),
        )
    })
}

/// Replace `{{args.name}}` with the include's argument; unknown names are errors.
/// Other expressions and escaped braces (`\{{`) are kept as written.
fn substitute(text: &str, r: &Rewrite<'_>, at: &str) -> Result<String, WorkflowError> {
    use crate::prompt::{Piece, pieces};
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::EscapedOpen => out.push_str("\\{{"),
            Piece::Expr(raw) => match raw.trim().strip_prefix("args.") {
                Some(name) => match r.args.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(other) => out.push_str(&other.to_string()),
                    None => {
                        return Err(WorkflowError::at_path(
                            at,
                            Rule::Reference,
                            format!(
                                "`{{{{args.{name}}}}}` is not a parameter of the routine in {}",
                                r.location
                            ),
                        ));
                    }
                },
                None => {
                    out.push_str("{{");
                    out.push_str(raw);
                    out.push_str("}}");
                }
            },
        }
    }
    Ok(out)
}

fn substitute_args(
    args: &Map<String, Value>,
    r: &Rewrite<'_>,
    at: &str,
) -> Result<Map<String, Value>, WorkflowError> {
    let mut out = Map::new();
    for (k, v) in args {
        let v = match v {
            Value::String(s) => Value::String(substitute(s, r, &format!("{at}.{k}"))?),
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// Inside a routine, `worktrain.loops.<id>…` names the routine's own loop: prefix it
/// the way the loop's id is prefixed.
fn prefix_loop_refs(c: &mut crate::condition::Condition, prefix: &str) {
    c.rewrite_vars(&|var| {
        let segs = var.segments();
        if segs.len() > 2 && segs[0] == "worktrain" && segs[1] == "loops" {
            let mut out = vec!["worktrain".to_owned(), "loops".to_owned()];
            out.extend(prefix.split('.').map(str::to_owned));
            out.extend(segs[2..].iter().cloned());
            ContextPath::from_segments(out).ok()
        } else {
            None
        }
    });
}

fn rewrite_step(
    s: &StepDefinition,
    r: &Rewrite<'_>,
    at: &str,
) -> Result<StepDefinition, WorkflowError> {
    let mut d = s.clone();
    if let Some(c) = &mut d.run_condition {
        prefix_loop_refs(c, r.prefix);
    }
    for f in &mut d.prompt_fragments {
        prefix_loop_refs(&mut f.when, r.prefix);
    }
    if let Some(j) = &mut d.jump_if {
        prefix_loop_refs(&mut j.condition, r.prefix);
    }
    match &mut d.require_confirmation {
        Confirmation::When(c) | Confirmation::Gate { when: Some(c), .. } => {
            prefix_loop_refs(c, r.prefix)
        }
        Confirmation::Never | Confirmation::Always | Confirmation::Gate { when: None, .. } => {}
    }
    d.id = prefixed(r.prefix, &s.id, at)?;
    d.title = substitute(&s.title, r, &format!("{at}.title"))?;
    d.prompt = substitute(&s.prompt, r, &format!("{at}.prompt"))?;
    for (i, f) in d.prompt_fragments.iter_mut().enumerate() {
        f.text = substitute(&f.text, r, &format!("{at}.promptFragments[{i}].text"))?;
    }
    if let Some(j) = &mut d.jump_if {
        j.target = prefixed(r.prefix, &j.target, at)?;
    }
    if let Some(p) = &mut d.parallel {
        for (i, c) in p.children.iter_mut().enumerate() {
            c.goal = substitute(&c.goal, r, &format!("{at}.parallel.children[{i}].goal"))?;
        }
    }
    Ok(d)
}

/// A jump to resolve once its step list is compiled: the step, its document path, and
/// the earlier entries of the same list with their positions.
type PendingJump = (StepIndex, String, Vec<(StepId, Pc)>);

#[derive(Default)]
struct Builder {
    steps: Vec<CompiledStep>,
    loops: Vec<CompiledLoop>,
    program: Vec<Instr>,
    /// Every entry id → its document path (uniqueness).
    ids: HashMap<StepId, String>,
    /// Jumps to resolve: (step index, path, ids of earlier entries in the same list with their pcs).
    pending_jumps: Vec<PendingJump>,
}

impl Builder {
    fn pc(&self) -> Result<Pc, WorkflowError> {
        u32::try_from(self.program.len())
            .map(Pc)
            .map_err(|_| WorkflowError::at_path("steps", Rule::Value, "workflow too large"))
    }

    fn claim_id(&mut self, id: &StepId, path: &str) -> Result<(), WorkflowError> {
        if let Some(first) = self.ids.get(id) {
            return Err(WorkflowError::at_path(
                format!("{path}.id"),
                Rule::UniqueStepIds,
                format!("id `{id}` is already used at {first}; step and loop ids must be unique"),
            ));
        }
        self.ids.insert(id.clone(), path.to_owned());
        Ok(())
    }

    fn block(
        &mut self,
        entries: &[XEntry],
        path: &str,
        enclosing: Option<LoopIndex>,
    ) -> Result<(), WorkflowError> {
        if entries.is_empty() {
            return Err(WorkflowError::at_path(
                path,
                Rule::NonEmpty,
                "a step list needs at least one entry",
            ));
        }
        let mut earlier: Vec<(StepId, Pc)> = Vec::new();
        for entry in entries {
            let pc = self.pc()?;
            match entry {
                XEntry::Step { def, path } => {
                    self.claim_id(&def.id, path)?;
                    let index = self.step(def, path, pc, enclosing)?;
                    if def.jump_if.is_some() {
                        self.pending_jumps
                            .push((index, path.clone(), earlier.clone()));
                    }
                }
                XEntry::Loop { def, body, path } => {
                    self.claim_id(&def.id, path)?;
                    self.looped(def, body, path, pc, enclosing)?;
                }
                XEntry::Guarded {
                    id,
                    condition,
                    body,
                    path,
                    body_path,
                    include,
                } => {
                    // A guarded loop's id is claimed by the loop itself.
                    if *include {
                        self.claim_id(id, path)?;
                    }
                    self.guarded(id, condition, body, path, body_path, enclosing)?;
                }
            }
            earlier.push((entry.id().clone(), pc));
        }
        Ok(())
    }

    /// A guard in front of a block, the block, and the guard's skip target. The block's
    /// entries are a step list of their own (for jumps): a jump from outside can target
    /// the block (its guard) but not enter it.
    fn guarded(
        &mut self,
        id: &StepId,
        condition: &Condition,
        body: &[XEntry],
        path: &str,
        body_path: &str,
        enclosing: Option<LoopIndex>,
    ) -> Result<(), WorkflowError> {
        check_condition_vars(&format!("{path}.runCondition"), condition)?;
        let guard = self.pc()?;
        self.program.push(Instr::Guard {
            id: id.clone(),
            condition: condition.clone(),
            skip_to: Pc(u32::MAX),
        });
        self.block(body, body_path, enclosing)?;
        let end = self.pc()?;
        if let Some(Instr::Guard { skip_to, .. }) = self.program.get_mut(guard.0 as usize) {
            *skip_to = end;
        }
        Ok(())
    }

    fn step(
        &mut self,
        s: &StepDefinition,
        path: &str,
        pc: Pc,
        enclosing: Option<LoopIndex>,
    ) -> Result<StepIndex, WorkflowError> {
        let at = |field: &str| format!("{path}.{field}");
        non_empty(&at("title"), &s.title)?;
        non_empty(&at("prompt"), &s.prompt)?;
        if let Some(c) = &s.run_condition {
            check_condition_vars(&at("runCondition"), c)?;
        }
        for (i, f) in s.prompt_fragments.iter().enumerate() {
            check_condition_vars(&at(&format!("promptFragments[{i}].when")), &f.when)?;
            non_empty(&at(&format!("promptFragments[{i}].text")), &f.text)?;
        }
        for (i, k) in s.context_outputs.iter().enumerate() {
            check_key(&at(&format!("contextOutputs[{i}]")), k)?;
        }
        let confirmation = match &s.require_confirmation {
            Confirmation::Never => None,
            Confirmation::Always => Some(ConfirmationRule {
                kind: GateKind::HumanApproval,
                when: None,
            }),
            Confirmation::When(c) => {
                check_condition_vars(&at("requireConfirmation"), c)?;
                Some(ConfirmationRule {
                    kind: GateKind::HumanApproval,
                    when: Some(c.clone()),
                })
            }
            Confirmation::Gate { kind, when } => {
                if let Some(c) = when {
                    check_condition_vars(&at("requireConfirmation.when"), c)?;
                }
                Some(ConfirmationRule {
                    kind: *kind,
                    when: when.clone(),
                })
            }
        };
        let output_contract = match &s.output_contract {
            None => None,
            Some(spec) => {
                let is_assessment = spec.contract == ContractName::Assessment;
                if !is_assessment && (!spec.dimensions.is_empty() || spec.context_key.is_some()) {
                    return Err(WorkflowError::at_path(
                        at("outputContract"),
                        Rule::Value,
                        format!(
                            "`dimensions` and `contextKey` apply to the assessment contract, not `{}`",
                            spec.contract
                        ),
                    ));
                }
                if is_assessment && spec.dimensions.is_empty() {
                    return Err(WorkflowError::at_path(
                        at("outputContract.dimensions"),
                        Rule::Required,
                        "an assessment declares its dimensions: {name: {levels: [..], blockOn?: [..]}}",
                    ));
                }
                for (name, d) in &spec.dimensions {
                    check_key(&at(&format!("outputContract.dimensions.{name}")), name)?;
                    if d.levels.is_empty() {
                        return Err(WorkflowError::at_path(
                            at(&format!("outputContract.dimensions.{name}.levels")),
                            Rule::NonEmpty,
                            "declare at least one level",
                        ));
                    }
                    if d.block_guidance.is_some() && d.block_on.is_empty() {
                        return Err(WorkflowError::at_path(
                            at(&format!("outputContract.dimensions.{name}.blockGuidance")),
                            Rule::Reference,
                            "`blockGuidance` is shown when a `blockOn` level blocks the step; declare `blockOn` or remove it",
                        ));
                    }
                    if d.block_guidance
                        .as_deref()
                        .is_some_and(|g| g.trim().is_empty())
                    {
                        return Err(WorkflowError::at_path(
                            at(&format!("outputContract.dimensions.{name}.blockGuidance")),
                            Rule::NonEmpty,
                            "`blockGuidance` must not be empty",
                        ));
                    }
                    if let Some(bad) = d.block_on.iter().find(|l| !d.levels.contains(l)) {
                        return Err(WorkflowError::at_path(
                            at(&format!("outputContract.dimensions.{name}.blockOn")),
                            Rule::Reference,
                            format!(
                                "`{bad}` is not one of the declared levels ({})",
                                d.levels.join(", ")
                            ),
                        ));
                    }
                }
                if let Some(k) = &spec.context_key {
                    check_key(&at("outputContract.contextKey"), k)?;
                }
                if spec.contract == ContractName::LoopControl && enclosing.is_none() {
                    return Err(WorkflowError::at_path(
                        at("outputContract"),
                        Rule::Reference,
                        "a `loop_control` artifact only makes sense inside a loop; move the step into a loop block",
                    ));
                }
                Some(CompiledContract {
                    contract: spec.contract,
                    required: spec.required,
                    dimensions: spec.dimensions.clone(),
                    context_key: if is_assessment {
                        Some(
                            spec.context_key
                                .clone()
                                .unwrap_or_else(|| "assessment".into()),
                        )
                    } else {
                        None
                    },
                })
            }
        };
        let delegation = s.parallel.as_ref().map(|p| Delegation {
            children: p
                .children
                .iter()
                .map(|c| CompiledChild {
                    workflow: c.workflow.clone(),
                    goal: c.goal.clone(),
                    context: c.context.clone(),
                })
                .collect(),
            join: p.join,
        });
        if let Some(p) = &s.parallel
            && p.children.is_empty()
        {
            return Err(WorkflowError::at_path(
                at("parallel.children"),
                Rule::NonEmpty,
                "a parallel step needs at least one child",
            ));
        }
        if let Some(j) = &s.jump_if {
            check_condition_vars(&at("jumpIf.condition"), &j.condition)?;
            if j.max_jumps == 0 {
                return Err(WorkflowError::at_path(
                    at("jumpIf.maxJumps"),
                    Rule::Value,
                    "maxJumps must be at least 1",
                ));
            }
            // The same range as spec/workflow.schema.json: the loader and the schema agree.
            if j.max_jumps > 100 {
                return Err(WorkflowError::at_path(
                    at("jumpIf.maxJumps"),
                    Rule::Value,
                    "maxJumps must be at most 100",
                ));
            }
        }
        let index = StepIndex(
            u32::try_from(self.steps.len())
                .map_err(|_| WorkflowError::at_path(path, Rule::Value, "too many steps"))?,
        );
        self.steps.push(CompiledStep {
            id: s.id.clone(),
            title: s.title.trim().to_owned(),
            prompt: s.prompt.clone(),
            fragments: s
                .prompt_fragments
                .iter()
                .map(|f| CompiledFragment {
                    when: f.when.clone(),
                    text: f.text.clone(),
                })
                .collect(),
            run_condition: s.run_condition.clone(),
            confirmation,
            output_contract,
            notes_optional: s.notes_optional,
            context_outputs: s.context_outputs.clone(),
            jump: s.jump_if.as_ref().map(|j| CompiledJump {
                condition: j.condition.clone(),
                target: j.target.clone(),
                target_pc: Pc(u32::MAX),
                max_jumps: j.max_jumps,
            }),
            delegation,
            decides: None,
            pc,
        });
        self.program.push(Instr::Step { step: index });
        Ok(index)
    }

    fn looped(
        &mut self,
        l: &LoopDefinition,
        body: &[XEntry],
        path: &str,
        head: Pc,
        parent: Option<LoopIndex>,
    ) -> Result<(), WorkflowError> {
        let at = |field: &str| format!("{path}.{field}");
        let spec = &l.spec;
        let mut kinds = Vec::new();
        if let Some(c) = &spec.while_ {
            check_condition_vars(&at("loop.while"), c)?;
            kinds.push(LoopKind::While {
                condition: c.clone(),
            });
        }
        if let Some(c) = &spec.until {
            check_condition_vars(&at("loop.until"), c)?;
            kinds.push(LoopKind::Until {
                condition: c.clone(),
            });
        }
        if let Some(f) = &spec.for_ {
            if let ForCount::Var(p) = f {
                check_read(&at("loop.for"), "`for`", p)?;
            }
            kinds.push(match f {
                ForCount::Literal(n) => LoopKind::For {
                    count: Some(*n),
                    var: None,
                },
                ForCount::Var(p) => LoopKind::For {
                    count: None,
                    var: Some(p.clone()),
                },
            });
        }
        if let Some(fe) = &spec.for_each {
            check_read(&at("loop.forEach.over"), "`forEach`", &fe.over)?;
            for (field, name) in [("as", &fe.item), ("index", &fe.index)] {
                check_key(&at(&format!("loop.forEach.{field}")), name)?;
            }
            if fe.item == fe.index {
                return Err(WorkflowError::at_path(
                    at("loop.forEach"),
                    Rule::Value,
                    "`as` and `index` must differ",
                ));
            }
            kinds.push(LoopKind::ForEach {
                over: fe.over.clone(),
                item: fe.item.clone(),
                index: fe.index.clone(),
            });
        }
        if kinds.len() > 1 {
            return Err(WorkflowError::at_path(
                at("loop"),
                Rule::Value,
                "a loop takes at most one of `while`, `until`, `for`, `forEach`",
            ));
        }
        if spec.max_iterations == 0 {
            return Err(WorkflowError::at_path(
                at("loop.maxIterations"),
                Rule::Value,
                "maxIterations must be at least 1",
            ));
        }
        // The same range as spec/workflow.schema.json: the loader and the schema agree.
        if spec.max_iterations > 1000 {
            return Err(WorkflowError::at_path(
                at("loop.maxIterations"),
                Rule::Value,
                "maxIterations must be at most 1000",
            ));
        }
        let index = LoopIndex(
            u32::try_from(self.loops.len())
                .map_err(|_| WorkflowError::at_path(path, Rule::Value, "too many loops"))?,
        );
        let kind = kinds.pop().unwrap_or(LoopKind::Decision);
        self.loops.push(CompiledLoop {
            id: l.id.clone(),
            title: l.title.clone().unwrap_or_else(|| l.id.to_string()),
            kind,
            max_iterations: spec.max_iterations,
            decision_step: None,
            head,
            tail: head,
            parent,
        });
        self.program.push(Instr::LoopHead {
            loop_: index,
            exit: Pc(u32::MAX),
        });
        let first_step = self.steps.len();
        self.block(body, &at("steps"), Some(index))?;
        let tail = self.pc()?;
        self.program.push(Instr::LoopTail { loop_: index, head });
        let exit = self.pc()?;
        if let Some(Instr::LoopHead { exit: e, .. }) = self.program.get_mut(head.0 as usize) {
            *e = exit;
        }
        // The decision step: declared, or the one body-level step with a loop_control contract.
        let body_level: Vec<usize> = (first_step..self.steps.len())
            .filter(|&i| self.innermost_loop_of(self.steps[i].pc) == Some(index))
            .collect();
        let decision = match &spec.decision_step {
            Some(id) => {
                let found = body_level
                    .iter()
                    .copied()
                    .find(|&i| &self.steps[i].id == id);
                let Some(i) = found else {
                    return Err(WorkflowError::at_path(
                        at("loop.decisionStep"),
                        Rule::Reference,
                        format!(
                            "`{id}` is not a step of this loop's body (steps of nested loops decide for their own loop)"
                        ),
                    ));
                };
                match self.steps[i].output_contract.as_ref().map(|c| c.contract) {
                    Some(ContractName::LoopControl) => {}
                    None => {
                        self.steps[i].output_contract = Some(CompiledContract {
                            contract: ContractName::LoopControl,
                            required: true,
                            dimensions: BTreeMap::new(),
                            context_key: None,
                        });
                    }
                    // A step has one contract: silently replacing it would drop the
                    // artifact (and any assessment routing) the author asked for.
                    Some(other) => {
                        return Err(WorkflowError::at_path(
                            at("loop.decisionStep"),
                            Rule::Value,
                            format!(
                                "`{id}` already produces `{other}`; a decision step produces `loop_control` (one contract per step), so decide in a separate step"
                            ),
                        ));
                    }
                }
                Some(i)
            }
            None => {
                let controls: Vec<usize> = body_level
                    .iter()
                    .copied()
                    .filter(|&i| {
                        self.steps[i].output_contract.as_ref().map(|c| c.contract)
                            == Some(ContractName::LoopControl)
                    })
                    .collect();
                if controls.len() > 1 {
                    return Err(WorkflowError::at_path(
                        at("loop.decisionStep"),
                        Rule::Reference,
                        "several body steps produce loop_control; name the deciding one with `decisionStep`",
                    ));
                }
                controls.first().copied()
            }
        };
        // Every loop_control step in the body must be this loop's decision step.
        for &i in &body_level {
            let is_control = self.steps[i].output_contract.as_ref().map(|c| c.contract)
                == Some(ContractName::LoopControl);
            if is_control && Some(i) != decision {
                return Err(WorkflowError::at_path(
                    at("steps"),
                    Rule::Reference,
                    format!(
                        "step `{}` produces loop_control but is not the decision step of loop `{}`",
                        self.steps[i].id, l.id
                    ),
                ));
            }
        }
        if decision.is_none() && self.loops[index.0 as usize].kind == LoopKind::Decision {
            return Err(WorkflowError::at_path(
                at("loop"),
                Rule::Required,
                "this loop has no `while`, `until`, `for` or `forEach`, so it needs a decision step (`decisionStep`, or a body step with outputContract loop_control)",
            ));
        }
        if let Some(i) = decision {
            self.steps[i].decides = Some(index);
            self.loops[index.0 as usize].decision_step = Some(StepIndex(i as u32));
        }
        self.loops[index.0 as usize].tail = tail;
        let _ = exit;
        Ok(())
    }

    /// The innermost loop whose body contains `pc`.
    fn innermost_loop_of(&self, pc: Pc) -> Option<LoopIndex> {
        let mut best: Option<(LoopIndex, Pc)> = None;
        for (i, l) in self.loops.iter().enumerate() {
            let in_body = pc > l.head && (l.tail == l.head || pc < l.tail);
            // While compiling, a loop's tail is not set yet (== head): treat it as open.
            if in_body && best.is_none_or(|(_, h)| l.head > h) {
                best = Some((LoopIndex(i as u32), l.head));
            }
        }
        best.map(|(i, _)| i)
    }

    fn resolve_jumps(&mut self) -> Result<(), WorkflowError> {
        for (index, path, earlier) in std::mem::take(&mut self.pending_jumps) {
            let step = &mut self.steps[index.0 as usize];
            let Some(jump) = &mut step.jump else { continue };
            match earlier.iter().find(|(id, _)| *id == jump.target) {
                Some((_, pc)) => jump.target_pc = *pc,
                None => {
                    let why = if self.ids.contains_key(&jump.target) {
                        "is not an earlier entry of the same step list (jumps cannot go forward or cross loop boundaries, and cannot enter a guarded loop or include)"
                    } else {
                        "does not exist"
                    };
                    return Err(WorkflowError::at_path(
                        format!("{path}.jumpIf.target"),
                        Rule::Reference,
                        format!("jump target `{}` {why}", jump.target),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Upper bound on step nodes: loops multiply their body; each jump can replay its
/// segment `maxJumps` times over the whole session.
fn bound_of(entries: &[XEntry]) -> u64 {
    let each: Vec<u64> = entries.iter().map(entry_bound).collect();
    let mut total: u64 = each.iter().fold(0u64, |a, b| a.saturating_add(*b));
    for (i, e) in entries.iter().enumerate() {
        if let XEntry::Step { def, .. } = e
            && let Some(j) = &def.jump_if
            && let Some(t) = entries.iter().position(|x| x.id() == &j.target)
            && t <= i
        {
            let segment = each[t..=i].iter().fold(0u64, |a, b| a.saturating_add(*b));
            total = total.saturating_add(segment.saturating_mul(u64::from(j.max_jumps)));
        }
    }
    total
}

fn entry_bound(e: &XEntry) -> u64 {
    match e {
        XEntry::Step { .. } => 1,
        XEntry::Loop { def, body, .. } => {
            bound_of(body).saturating_mul(u64::from(def.spec.max_iterations))
        }
        // At most the body once per arrival (skipped, it enters nothing).
        XEntry::Guarded { body, .. } => bound_of(body),
    }
}

impl CompiledWorkflow {
    /// The step at an index.
    pub fn step(&self, index: StepIndex) -> Option<&CompiledStep> {
        self.steps.get(index.0 as usize)
    }

    /// The loop at an index.
    pub fn loop_at(&self, index: LoopIndex) -> Option<&CompiledLoop> {
        self.loops.get(index.0 as usize)
    }

    /// Find a step by id.
    pub fn step_index(&self, id: &StepId) -> Option<StepIndex> {
        self.steps
            .iter()
            .position(|s| &s.id == id)
            .and_then(|i| u32::try_from(i).ok())
            .map(StepIndex)
    }

    /// The instruction at a position.
    pub fn instr(&self, pc: Pc) -> Option<&Instr> {
        self.program.get(pc.0 as usize)
    }

    /// Number of steps (for progress display).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Loops enclosing a position, outermost first.
    pub fn loops_enclosing(&self, pc: Pc) -> Vec<LoopIndex> {
        let mut v: Vec<(Pc, LoopIndex)> = self
            .loops
            .iter()
            .enumerate()
            .filter(|(_, l)| pc > l.head && pc < l.tail)
            .map(|(i, l)| (l.head, LoopIndex(i as u32)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, i)| i).collect()
    }
}
