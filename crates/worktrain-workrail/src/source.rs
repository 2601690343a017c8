//! The WorkRail workflow format, as read by the importer.
//!
//! The types cover every field of WorkRail's workflow schema (v1 steps, the agentic v2
//! format with `promptBlocks`, loops, parallel steps, template calls, assessments,
//! features, extension points, references). Fields outside the schema are collected in
//! `extra` so the importer can report them instead of dropping them silently.
//!
//! Maps whose order matters to how WorkRail renders prompts (`outputRequired`, a
//! delegation's `contextMapping` and `args`) are read in document order ([`Ordered`]).

use std::collections::BTreeMap;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A JSON object read in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ordered(pub Vec<(String, Value)>);

impl Ordered {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    // Like a JavaScript object: a repeated key keeps its first position.
                    match out.iter_mut().find(|(x, _)| *x == k) {
                        Some(slot) => slot.1 = v,
                        None => out.push((k, v)),
                    }
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A WorkRail workflow (or routine) document.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrWorkflow {
    /// Workflow id (`wr.coding-task`).
    pub id: Option<String>,
    /// Human name.
    pub name: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Semantic version.
    pub version: Option<String>,
    /// Overview for people browsing a catalog.
    pub about: Option<String>,
    /// Example goals.
    #[serde(default)]
    pub examples: Vec<Value>,
    /// Recommended model tier.
    pub model_tier: Option<String>,
    /// Prerequisites before starting.
    #[serde(default)]
    pub preconditions: Vec<Value>,
    /// Questions to ask up front.
    #[serde(default)]
    pub clarification_prompts: Vec<Value>,
    /// Behavioural rules surfaced on start and resume.
    #[serde(default)]
    pub meta_guidance: Vec<String>,
    /// Function definitions (shown by WorkRail when a session is resumed).
    #[serde(default)]
    pub function_definitions: Vec<Value>,
    /// Recommended autonomy and risk policy.
    pub recommended_preferences: Option<Value>,
    /// Compiler features (`wr.features.*`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Assessment definitions referenced by steps.
    #[serde(default)]
    pub assessments: Vec<WrAssessment>,
    /// Extension points (`{{wr.bindings.slot}}`).
    #[serde(default)]
    pub extension_points: Vec<WrExtensionPoint>,
    /// Pointers to external documents.
    #[serde(default)]
    pub references: Vec<WrReference>,
    /// The authoring spec version last validated against.
    pub validated_against_spec_version: Option<Value>,
    /// Metrics footer profile.
    pub metrics_profile: Option<String>,
    /// The steps.
    pub steps: Vec<WrStep>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One entry of `steps` (or of a loop's inline `body`): a standard step, a loop
/// (`type: loop`), a parallel step (`type: parallel`) or a template call.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrStep {
    /// Step id.
    pub id: String,
    /// `loop`, `parallel`, or absent for a standard step.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Raw prompt.
    pub prompt: Option<String>,
    /// Structured prompt blocks.
    pub prompt_blocks: Option<WrPromptBlocks>,
    /// Stance for the agent.
    pub agent_role: Option<String>,
    /// Recommended model tier.
    pub model_tier: Option<String>,
    /// Step guidance bullets.
    pub guidance: Option<Vec<String>>,
    /// v1 hint.
    pub ask_for_files: Option<Value>,
    /// v1 hint.
    pub has_validation: Option<Value>,
    /// Confirmation rule.
    pub require_confirmation: Option<Value>,
    /// Run condition.
    pub run_condition: Option<Value>,
    /// Rules the step's output must satisfy.
    pub validation_criteria: Option<Value>,
    /// Typed artifact contract.
    pub output_contract: Option<WrOutputContract>,
    /// Assessments the step must submit.
    pub assessment_refs: Option<Vec<String>>,
    /// Follow-up required when an assessment level matches.
    pub assessment_consequences: Option<Vec<WrConsequence>>,
    /// Whether notes may be omitted.
    pub notes_optional: Option<bool>,
    /// Step-scoped function definitions.
    pub function_definitions: Option<Value>,
    /// Function calls.
    pub function_calls: Option<Value>,
    /// Function references (`name()`).
    pub function_references: Option<Value>,
    /// A template (routine) call that expands into steps.
    pub template_call: Option<WrTemplateCall>,
    /// Conditional prompt fragments.
    pub prompt_fragments: Option<Vec<WrFragment>>,
    /// A virtual self-audit step.
    pub audit: Option<Value>,
    /// A virtual verification step.
    pub verification: Option<Value>,
    /// Loop configuration (`type: loop`).
    #[serde(rename = "loop")]
    pub loop_: Option<WrLoop>,
    /// Loop body: a step id or inline steps.
    pub body: Option<WrBody>,
    /// Delegations of a parallel step.
    pub parallel_delegations: Option<Vec<WrDelegation>>,
    /// A virtual synthesis step after a parallel step.
    pub synthesis: Option<Value>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A loop's body.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WrBody {
    /// The id of a top-level step that runs as the body.
    Ref(String),
    /// Inline steps.
    Steps(Vec<WrStep>),
}

/// `loop` of a loop step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrLoop {
    /// `while`, `until`, `for` or `forEach`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Condition of while/until loops.
    pub condition: Option<Value>,
    /// Context key of a forEach array.
    pub items: Option<String>,
    /// Count of a for loop: a number or a context key.
    pub count: Option<Value>,
    /// Bound on iterations.
    pub max_iterations: Option<Value>,
    /// Name of the 1-based iteration variable (default `currentIteration`).
    pub iteration_var: Option<String>,
    /// Name of the current item (default `currentItem`).
    pub item_var: Option<String>,
    /// Name of the 0-based index (default `currentIndex`).
    pub index_var: Option<String>,
    /// Explicit condition source.
    pub condition_source: Option<Value>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Structured prompt blocks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrPromptBlocks {
    /// Goal.
    pub goal: Option<PromptValue>,
    /// Constraints (bullets).
    pub constraints: Option<Vec<PromptValue>>,
    /// Procedure (numbered).
    pub procedure: Option<Vec<PromptValue>>,
    /// Required outputs, in document order.
    pub output_required: Option<Ordered>,
    /// Verification bullets.
    pub verify: Option<Vec<PromptValue>>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A prompt value: a string, or parts (text and references to WorkRail snippets).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptValue {
    /// Plain text.
    Text(String),
    /// Parts joined without separator.
    Parts(Vec<PromptPart>),
}

/// One part of a prompt value.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptPart {
    /// `text` or `ref`.
    pub kind: String,
    /// Text of a text part.
    pub text: Option<String>,
    /// Snippet id of a ref part.
    pub ref_id: Option<String>,
}

/// `outputContract`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrOutputContract {
    /// Contract reference (`wr.contracts.loop_control`).
    pub contract_ref: String,
    /// Whether the artifact is required (default true).
    pub required: Option<bool>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A workflow-level assessment definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrAssessment {
    /// Assessment id.
    pub id: String,
    /// What it assesses.
    #[serde(default)]
    pub purpose: String,
    /// Its dimensions.
    #[serde(default)]
    pub dimensions: Vec<WrDimension>,
}

/// One dimension of an assessment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrDimension {
    /// Dimension id.
    pub id: String,
    /// What it measures.
    #[serde(default)]
    pub purpose: String,
    /// Allowed levels.
    #[serde(default)]
    pub levels: Vec<String>,
    /// Whether a level must be given (default true).
    pub required: Option<bool>,
}

/// A step-level assessment consequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrConsequence {
    /// The trigger.
    pub when: WrConsequenceWhen,
    /// The effect.
    pub effect: WrConsequenceEffect,
}

/// When a consequence fires.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrConsequenceWhen {
    /// Fires when any dimension has this level.
    pub any_equals_level: String,
    /// Only dimensions of this assessment.
    pub for_assessment: Option<String>,
}

/// What a consequence does.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrConsequenceEffect {
    /// `require_followup`.
    pub kind: String,
    /// What the agent must do before retrying.
    pub guidance: String,
}

/// An extension point.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrExtensionPoint {
    /// Slot id used in `{{wr.bindings.<slotId>}}`.
    pub slot_id: String,
    /// What the slot does.
    #[serde(default)]
    pub purpose: String,
    /// Default routine or workflow id.
    pub default: String,
}

/// A workflow reference to an external document.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrReference {
    /// Reference id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Path.
    pub source: String,
    /// Why it matters.
    #[serde(default)]
    pub purpose: String,
    /// Whether it must be followed strictly.
    #[serde(default)]
    pub authoritative: bool,
    /// `workspace` or `package`.
    pub resolve_from: Option<String>,
}

/// A template call.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrTemplateCall {
    /// Template id (`wr.templates.routine.<name>`).
    pub template_id: String,
    /// Arguments.
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

/// A conditional prompt fragment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrFragment {
    /// Fragment id.
    pub id: Option<String>,
    /// Condition; absent means always.
    pub when: Option<Value>,
    /// Text appended.
    pub text: String,
}

/// One delegation of a parallel step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrDelegation {
    /// Workflow or routine to run.
    pub workflow_id: String,
    /// Goal for the child.
    pub goal: Option<String>,
    /// Run only when this holds.
    pub run_condition: Option<Value>,
    /// Parent context key → child input key, in document order.
    pub context_mapping: Option<Ordered>,
    /// Static child inputs, in document order.
    pub args: Option<Ordered>,
    /// Recommended model tier.
    pub model_tier: Option<String>,
    /// Tools hinted to the child.
    pub allowed_tools: Option<Vec<String>>,
    /// Fields outside WorkRail's schema.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}
