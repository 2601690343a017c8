//! The workflow source model: what authors write in JSON or YAML. The JSON Schema in
//! `spec/workflow.schema.json` is generated from these types (see [`json_schema`]) so the
//! schema, the loader and the compiler can never disagree.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::condition::Condition;
use crate::contract::ContractName;
use crate::ids::{StepId, WorkflowId};

/// The highest workflow `schemaVersion` this build understands.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// A workflow file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "worktrain workflow", description = "A worktrain workflow: an ordered list of steps an agent is fed one at a time.")]
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
    /// The steps, in order.
    #[schemars(length(min = 1))]
    pub steps: Vec<StepDefinition>,
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
    /// The instructions the agent receives for this step (markdown).
    #[schemars(length(min = 1))]
    pub prompt: String,
    /// Run the step only when this condition holds; otherwise it is recorded as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// Whether the step's output needs a human's confirmation before the workflow goes on.
    #[serde(default, skip_serializing_if = "Confirmation::is_never")]
    pub require_confirmation: Confirmation,
    /// A typed artifact the step must produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<OutputContractRef>,
    /// When true, the step may be completed without notes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notes_optional: bool,
}

/// When a step needs confirmation: always/never, or when a condition holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Confirmation {
    /// Never (the default).
    #[default]
    Never,
    /// Always.
    Always,
    /// When the condition holds at the moment the step is entered.
    When(Condition),
}

impl Confirmation {
    fn is_never(&self) -> bool {
        matches!(self, Confirmation::Never)
    }
}

impl Serialize for Confirmation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Confirmation::Never => s.serialize_bool(false),
            Confirmation::Always => s.serialize_bool(true),
            Confirmation::When(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Confirmation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Confirmation::Always),
            Value::Bool(false) => Ok(Confirmation::Never),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(Confirmation::When)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "requireConfirmation must be true, false or a condition object, got {other}"
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
        schemars::json_schema!({
            "description": "true/false, or a condition evaluated when the step is entered.",
            "oneOf": [{"type": "boolean"}, cond]
        })
    }
}

/// Reference to an output contract from the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputContractRef {
    /// Name of the contract (`review_verdict`, `handoff`, `loop_control`, `assessment`).
    pub contract_ref: ContractName,
    /// When false, the artifact is validated if present but may be omitted.
    #[serde(default = "default_true", skip_serializing_if = "Clone::clone")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// The JSON Schema of workflow files, as committed to `spec/workflow.schema.json`.
pub fn json_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<WorkflowDefinition>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String("https://worktrain.dev/spec/workflow.schema.json".into()),
        );
    }
    value
}
