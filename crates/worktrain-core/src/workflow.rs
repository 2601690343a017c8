//! The workflow source model: what authors write in JSON or YAML. The JSON Schema in
//! `spec/workflow.schema.json` is generated from these types (see [`json_schema`]) so the
//! schema, the loader and the compiler can never disagree.
//!
//! A workflow's `steps` is a list of entries; each entry is a step, a loop block
//! (`loop:` + `steps:`), or an include of a routine (`include:`). A step with
//! `parallel:` delegates to child workflows.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::condition::{Condition, ContextPath};
use crate::contract::ContractName;
use crate::ids::{StepId, WorkflowId};

/// The highest workflow `schemaVersion` this build understands. Older versions are
/// upgraded on load (see [`crate::load`] and docs/workflows.md, "Versions").
pub const CURRENT_SCHEMA_VERSION: u32 = 2;

/// A workflow file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "worktrain workflow",
    description = "A worktrain workflow: steps an agent is fed one at a time, with loops, conditions, gates, contracts, jumps, routines and parallel delegation."
)]
pub struct WorkflowDefinition {
    /// Optional `$schema` reference for editors; ignored by worktrain.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Version of the workflow language this file is written in.
    #[schemars(range(min = 1))]
    pub schema_version: u32,
    /// Stable id used to start sessions (`coding-task`).
    pub id: WorkflowId,
    /// Human name.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// What the workflow is for and when to use it.
    #[schemars(length(min = 1))]
    pub description: String,
    /// Version of this workflow's content (free form, e.g. semver).
    #[schemars(length(min = 1, max = 64))]
    pub version: String,
    /// Free-form tags for listing and filtering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Guidance shown with every step's prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guidance: Vec<String>,
    /// Context keys the session is expected to receive at start (`--context k=v`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// True when the workflow is meant to run without a human: human-approval gates are then lint errors.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unattended: bool,
    /// The entries, in order.
    #[schemars(length(min = 1))]
    pub steps: Vec<StepEntry>,
}

/// One entry of a step list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEntry", untagged)]
pub enum StepEntry {
    /// A step.
    Step(StepDefinition),
    /// A loop block.
    Loop(LoopDefinition),
    /// A routine include.
    Include(IncludeDefinition),
}

impl schemars::JsonSchema for StepEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepEntry".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let step = generator.subschema_for::<StepDefinition>();
        let lp = generator.subschema_for::<LoopDefinition>();
        let inc = generator.subschema_for::<IncludeDefinition>();
        schemars::json_schema!({
            "description": "A step (has `prompt`), a loop block (has `loop` and `steps`) or a routine include (has `include`).",
            "oneOf": [step, lp, inc]
        })
    }
}

impl StepEntry {
    /// The entry's id.
    pub fn id(&self) -> &StepId {
        match self {
            StepEntry::Step(s) => &s.id,
            StepEntry::Loop(l) => &l.id,
            StepEntry::Include(i) => &i.id,
        }
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepDefinition {
    /// Id, unique within the workflow.
    pub id: StepId,
    /// Short title.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// The instructions the agent receives for this step (markdown, with `{{…}}` variables).
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// Extra prompt text included only when its condition holds when the step is entered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_fragments: Vec<PromptFragment>,
    /// Run the step only when this condition holds; otherwise it is recorded as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// Whether the step's output needs confirmation before the workflow goes on.
    #[serde(default, skip_serializing_if = "Confirmation::is_never")]
    pub require_confirmation: Confirmation,
    /// A typed artifact the step must produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<OutputContractSpec>,
    /// When true, the step may be completed without notes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notes_optional: bool,
    /// Context keys the step must set (the submission is blocked until they are set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_outputs: Vec<String>,
    /// A bounded backward jump evaluated when the step completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump_if: Option<JumpIf>,
    /// Child workflows this step delegates to, in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<ParallelSpec>,
}

/// Conditional prompt text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptFragment {
    /// Include `text` when this holds.
    pub when: Condition,
    /// The text (markdown, with `{{…}}` variables).
    #[schemars(length(min = 1))]
    pub text: String,
}

/// A bounded backward jump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JumpIf {
    /// Jump when this holds after the step completes.
    pub condition: Condition,
    /// An earlier step of the same step list.
    pub target: StepId,
    /// How many times the jump may be taken in a session; then execution falls through.
    #[schemars(range(min = 1, max = 100))]
    pub max_jumps: u32,
}

/// Parallel delegation to child workflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParallelSpec {
    /// The child sessions to run.
    #[schemars(length(min = 1))]
    pub children: Vec<ChildSpec>,
    /// Whether all children must finish (`all`) or the first one suffices (`any`).
    #[serde(default)]
    pub join: Join,
}

/// One child session of a parallel step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildSpec {
    /// Workflow id of the child.
    pub workflow: WorkflowId,
    /// Goal of the child (with `{{…}}` variables).
    #[schemars(length(min = 1))]
    pub goal: String,
    /// Initial context of the child.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
}

/// How a parallel step joins its children.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Wait for every child.
    #[default]
    All,
    /// Continue when the first child finishes.
    Any,
}

/// A loop block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoopDefinition {
    /// Id of the loop (unique among step ids).
    pub id: StepId,
    /// Title, for graphs and listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Run the loop only if this holds when execution reaches it (checked once); otherwise the loop is recorded as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// How the loop repeats.
    #[serde(rename = "loop")]
    pub spec: LoopSpec,
    /// The loop body.
    #[schemars(length(min = 1))]
    pub steps: Vec<StepEntry>,
}

/// How a loop repeats. At most one of `while`, `until`, `for`, `forEach`; with none of
/// them the loop is driven only by its decision step's `loop_control` artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoopSpec {
    /// Run a pass while this holds (checked before each pass).
    #[serde(default, rename = "while", skip_serializing_if = "Option::is_none")]
    pub while_: Option<Condition>,
    /// Run passes until this holds (checked after each pass; the first pass always runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Condition>,
    /// Run a fixed number of passes: a number, or `{var: path}` read when the loop starts.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<ForCount>,
    /// Run one pass per element of a context array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachSpec>,
    /// Upper bound on passes; reaching it exits the loop normally (recorded).
    #[schemars(range(min = 1, max = 1000))]
    pub max_iterations: u32,
    /// The body step whose `loop_control` artifact decides, after each pass, whether to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_step: Option<StepId>,
}

/// A `for` count.
#[derive(Debug, Clone, PartialEq)]
pub enum ForCount {
    /// A literal number of passes.
    Literal(u32),
    /// A context value read when the loop starts.
    Var(ContextPath),
}

impl Serialize for ForCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ForCount::Literal(n) => s.serialize_u32(*n),
            ForCount::Var(p) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("var", p)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ForCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(ForCount::Literal)
                .ok_or_else(|| {
                    serde::de::Error::custom("`for` must be a non-negative integer or {var: path}")
                }),
            Value::Object(m) if m.len() == 1 && m.get("var").is_some_and(Value::is_string) => {
                let path = m.get("var").and_then(Value::as_str).unwrap_or_default();
                ContextPath::parse(path)
                    .map(ForCount::Var)
                    .map_err(serde::de::Error::custom)
            }
            other => Err(serde::de::Error::custom(format!(
                "`for` must be a non-negative integer or {{var: path}}, got {other}"
            ))),
        }
    }
}

impl schemars::JsonSchema for ForCount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ForCount".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "object", "properties": {"var": {"type": "string"}}, "required": ["var"], "additionalProperties": false}
            ]
        })
    }
}

/// A `forEach` loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForEachSpec {
    /// Context path of the array (read at each pass).
    #[schemars(with = "String")]
    pub over: ContextPath,
    /// Name under which the current element is visible to prompts and conditions.
    #[serde(default = "default_item", rename = "as")]
    pub item: String,
    /// Name under which the 0-based index is visible.
    #[serde(default = "default_index")]
    pub index: String,
}

fn default_item() -> String {
    "item".into()
}

fn default_index() -> String {
    "index".into()
}

/// Include a routine: a step list from another file, expanded at compile time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncludeDefinition {
    /// Prefix for the included step ids (`<id>.<step>`).
    pub id: StepId,
    /// The routine: its id, or a path relative to this file.
    #[schemars(length(min = 1))]
    pub include: String,
    /// Run the routine only if this holds when execution reaches it (checked once); otherwise the include is recorded as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// Arguments, visible in the routine as `{{args.name}}`.
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub args: Map<String, Value>,
}

/// A routine file: a reusable step list with parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutineDefinition {
    /// Optional `$schema` reference for editors.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Language version.
    pub schema_version: u32,
    /// Routine id.
    pub routine: StepId,
    /// What it does.
    pub description: String,
    /// Declared parameters; every include must pass exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// The steps.
    #[schemars(length(min = 1))]
    pub steps: Vec<StepEntry>,
}

/// When a step needs confirmation.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Confirmation {
    /// Never (the default).
    #[default]
    Never,
    /// Always, by a human.
    Always,
    /// By a human, when the condition holds at the moment the step is entered.
    When(Condition),
    /// A gate of a given kind, optionally conditional.
    Gate {
        /// Who confirms: a person, or the coordinating process.
        kind: GateKind,
        /// Only when this holds on entry.
        when: Option<Condition>,
    },
}

/// Who confirms a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// A person approves or rejects.
    HumanApproval,
    /// The coordinating process (a script or parent session) evaluates and approves or rejects.
    CoordinatorEval,
}

impl GateKind {
    /// Name used on the wire and in workflow files (`human_approval`, `coordinator_eval`).
    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::HumanApproval => "human_approval",
            GateKind::CoordinatorEval => "coordinator_eval",
        }
    }
}

impl Confirmation {
    fn is_never(&self) -> bool {
        matches!(self, Confirmation::Never)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GateSpec {
    kind: GateKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    when: Option<Condition>,
}

impl Serialize for Confirmation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Confirmation::Never => s.serialize_bool(false),
            Confirmation::Always => s.serialize_bool(true),
            Confirmation::When(c) => c.serialize(s),
            Confirmation::Gate { kind, when } => GateSpec {
                kind: *kind,
                when: when.clone(),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Confirmation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Confirmation::Always),
            Value::Bool(false) => Ok(Confirmation::Never),
            Value::Object(m) if m.contains_key("kind") => {
                serde_json::from_value::<GateSpec>(Value::Object(m))
                    .map(|g| Confirmation::Gate {
                        kind: g.kind,
                        when: g.when,
                    })
                    .map_err(serde::de::Error::custom)
            }
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(Confirmation::When)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "requireConfirmation must be true, false, a condition, or {{kind: human_approval|coordinator_eval, when?: condition}}; got {other}"
            ))),
        }
    }
}

impl schemars::JsonSchema for Confirmation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Confirmation".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let cond = generator.subschema_for::<Condition>();
        let kind = generator.subschema_for::<GateKind>();
        schemars::json_schema!({
            "description": "true/false, a condition evaluated when the step is entered, or a gate {kind, when?}.",
            "oneOf": [
                {"type": "boolean"},
                cond,
                {"type": "object", "properties": {"kind": kind, "when": cond}, "required": ["kind"], "additionalProperties": false}
            ]
        })
    }
}

/// A step's output contract, with contract-specific settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputContractSpec {
    /// The contract (`loop_control`, `review_verdict`, `handoff`, `assessment`, `pr_review`).
    pub contract: ContractName,
    /// When false, the artifact is validated if present but may be omitted.
    #[serde(default = "default_true", skip_serializing_if = "Clone::clone")]
    pub required: bool,
    /// For `assessment`: the dimensions and their declared levels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, DimensionSpec>,
    /// For `assessment`: the context key the levels are written to (default `assessment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_key: Option<String>,
}

/// One assessment dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DimensionSpec {
    /// The allowed levels, in order.
    #[schemars(length(min = 1))]
    pub levels: Vec<String>,
    /// Levels that block the step (the agent must do more work and resubmit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_on: Vec<String>,
    /// What the agent must do when a `blockOn` level blocks the step; shown in the blocker
    /// instead of the generic advice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub block_guidance: Option<String>,
}

fn default_true() -> bool {
    true
}

/// The wire shape of an entry: the union of every kind's fields. Converted into
/// [`StepEntry`] with errors that say which fields a kind accepts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEntry {
    id: StepId,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    prompt_fragments: Vec<PromptFragment>,
    #[serde(default)]
    run_condition: Option<Condition>,
    #[serde(default)]
    require_confirmation: Option<Confirmation>,
    #[serde(default)]
    output_contract: Option<OutputContractSpec>,
    #[serde(default)]
    notes_optional: Option<bool>,
    #[serde(default)]
    context_outputs: Vec<String>,
    #[serde(default)]
    jump_if: Option<JumpIf>,
    #[serde(default)]
    parallel: Option<ParallelSpec>,
    #[serde(default, rename = "loop")]
    loop_: Option<LoopSpec>,
    #[serde(default)]
    steps: Option<Vec<StepEntry>>,
    #[serde(default)]
    include: Option<String>,
    #[serde(default, rename = "with")]
    args: Option<Map<String, Value>>,
}

impl RawEntry {
    /// Names of the fields that are set, for "not allowed here" messages.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.title.is_some() {
            f.push("title");
        }
        if self.prompt.is_some() {
            f.push("prompt");
        }
        if !self.prompt_fragments.is_empty() {
            f.push("promptFragments");
        }
        if self.run_condition.is_some() {
            f.push("runCondition");
        }
        if self.require_confirmation.is_some() {
            f.push("requireConfirmation");
        }
        if self.output_contract.is_some() {
            f.push("outputContract");
        }
        if self.notes_optional.is_some() {
            f.push("notesOptional");
        }
        if !self.context_outputs.is_empty() {
            f.push("contextOutputs");
        }
        if self.jump_if.is_some() {
            f.push("jumpIf");
        }
        if self.parallel.is_some() {
            f.push("parallel");
        }
        if self.loop_.is_some() {
            f.push("loop");
        }
        if self.steps.is_some() {
            f.push("steps");
        }
        if self.include.is_some() {
            f.push("include");
        }
        if self.args.is_some() {
            f.push("with");
        }
        f
    }
}

impl TryFrom<RawEntry> for StepEntry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Self, String> {
        let fields = raw.set_fields();
        let reject = |kind: &str, allowed: &[&str]| -> Result<(), String> {
            let extra: Vec<&str> = fields
                .iter()
                .copied()
                .filter(|f| !allowed.contains(f))
                .collect();
            if extra.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "entry `{}` is a {kind}; {} not allowed here ({kind} entries take: id, {})",
                    raw.id,
                    extra
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    allowed.join(", ")
                ))
            }
        };
        if raw.loop_.is_some() {
            reject("loop", &["title", "runCondition", "loop", "steps"])?;
            let steps = raw
                .steps
                .ok_or_else(|| format!("loop `{}` needs `steps` (its body)", raw.id))?;
            let spec = raw.loop_.ok_or("loop spec vanished")?;
            return Ok(StepEntry::Loop(LoopDefinition {
                id: raw.id,
                title: raw.title,
                run_condition: raw.run_condition,
                spec,
                steps,
            }));
        }
        if let Some(include) = raw.include.clone() {
            reject("routine include", &["include", "runCondition", "with"])?;
            return Ok(StepEntry::Include(IncludeDefinition {
                id: raw.id,
                include,
                run_condition: raw.run_condition,
                args: raw.args.unwrap_or_default(),
            }));
        }
        reject(
            "step",
            &[
                "title",
                "prompt",
                "promptFragments",
                "runCondition",
                "requireConfirmation",
                "outputContract",
                "notesOptional",
                "contextOutputs",
                "jumpIf",
                "parallel",
            ],
        )
        .map_err(|e| {
            if fields.contains(&"steps") {
                format!("{e}; to repeat steps, add `loop: {{maxIterations: N, …}}` to make this a loop block")
            } else {
                e
            }
        })?;
        let title = raw
            .title
            .ok_or_else(|| format!("step `{}` needs a `title`", raw.id))?;
        let prompt = raw.prompt.ok_or_else(|| {
            format!(
                "step `{}` needs a `prompt` (or `loop`/`include` to be another kind of entry)",
                raw.id
            )
        })?;
        Ok(StepEntry::Step(StepDefinition {
            id: raw.id,
            title,
            prompt,
            prompt_fragments: raw.prompt_fragments,
            run_condition: raw.run_condition,
            require_confirmation: raw.require_confirmation.unwrap_or_default(),
            output_contract: raw.output_contract,
            notes_optional: raw.notes_optional.unwrap_or(false),
            context_outputs: raw.context_outputs,
            jump_if: raw.jump_if,
            parallel: raw.parallel,
        }))
    }
}

fn schema_value<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// The JSON Schema of workflow files, as committed to `spec/workflow.schema.json`.
pub fn json_schema() -> Value {
    let mut value = schema_value::<WorkflowDefinition>();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String("https://worktrain.dev/spec/workflow.schema.json".into()),
        );
    }
    value
}

/// The JSON Schema of routine files, as committed to `spec/routine.schema.json`.
pub fn routine_json_schema() -> Value {
    let mut value = schema_value::<RoutineDefinition>();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String("https://worktrain.dev/spec/routine.schema.json".into()),
        );
    }
    value
}
