//! Compiling a [`WorkflowDefinition`] into an explicit program: a step table plus a
//! list of control-flow instructions. The compiled form is canonicalised (RFC 8785 JSON)
//! and hashed; sessions pin that hash.
//!
//! The program is an instruction list rather than a plain step list so that loops,
//! jumps and parallel blocks compile to further instruction kinds without changing how
//! sessions store their position (a program counter plus frames).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::Condition;
use crate::context::is_reserved_key;
use crate::contract::ContractName;
use crate::ids::{Sha256Hash, StepId, WorkflowId};
use crate::load::{Rule, WorkflowError};
use crate::workflow::{Confirmation, WorkflowDefinition};

/// Version of the compiled representation. Bumping it changes every workflow hash,
/// which is intended: a session keeps running the program it pinned.
pub const COMPILER_VERSION: u32 = 1;

/// Index into [`CompiledWorkflow::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepIndex(pub u32);

/// Program counter: index into [`CompiledWorkflow::program`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pc(pub u32);

/// One control-flow instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instr {
    /// Enter a step (after checking its run condition).
    Step {
        /// The step entered.
        step: StepIndex,
    },
    /// The workflow is complete.
    End,
}

/// A step as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledStep {
    /// Step id.
    pub id: StepId,
    /// Title.
    pub title: String,
    /// Prompt template.
    pub prompt: String,
    /// Run condition; `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_condition: Option<Condition>,
    /// Confirmation requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_confirmation: Option<ConfirmationRule>,
    /// Contract of the required artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Option<CompiledContract>,
    /// Whether notes may be omitted.
    pub notes_optional: bool,
}

/// Compiled confirmation requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "when", rename_all = "snake_case")]
pub enum ConfirmationRule {
    /// Always requires confirmation.
    Always,
    /// Requires confirmation when the condition holds on entry.
    If {
        /// The condition.
        condition: Condition,
    },
}

/// A step's artifact requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledContract {
    /// The contract.
    pub contract: ContractName,
    /// Whether the artifact must be present.
    pub required: bool,
}

/// The compiled, canonical form of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledWorkflow {
    /// [`COMPILER_VERSION`] at compile time.
    pub compiler: u32,
    /// Workflow id.
    pub id: WorkflowId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Author's version string.
    pub version: String,
    /// Language version of the source.
    pub schema_version: u32,
    /// Tags.
    pub tags: Vec<String>,
    /// Workflow-level guidance shown with each prompt.
    pub guidance: Vec<String>,
    /// Step table.
    pub steps: Vec<CompiledStep>,
    /// Control-flow program.
    pub program: Vec<Instr>,
}

/// A compiled workflow together with its canonical bytes and hash.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// The program.
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

    /// Rebuild from stored canonical bytes, checking the hash.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, String> {
        let workflow: CompiledWorkflow =
            serde_json::from_slice(bytes).map_err(|e| format!("stored workflow unreadable: {e}"))?;
        Ok(Self {
            workflow: Arc::new(workflow),
            canonical: bytes.to_vec(),
            hash: Sha256Hash::of(bytes),
        })
    }
}

/// Compile a definition. Semantic errors carry the document path.
pub fn compile(def: &WorkflowDefinition) -> Result<Pinned, WorkflowError> {
    let mut seen = BTreeSet::new();
    let mut steps = Vec::with_capacity(def.steps.len());
    let mut program = Vec::with_capacity(def.steps.len() + 1);
    non_empty("name", &def.name)?;
    non_empty("description", &def.description)?;
    non_empty("version", &def.version)?;
    if def.steps.is_empty() {
        return Err(WorkflowError::at_path(
            "steps",
            Rule::NonEmpty,
            "a workflow needs at least one step",
        ));
    }
    for (i, s) in def.steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        if !seen.insert(s.id.clone()) {
            return Err(WorkflowError::at_path(
                at("id"),
                Rule::UniqueStepIds,
                format!("step id `{}` is used twice; step ids must be unique", s.id),
            ));
        }
        non_empty(&at("title"), &s.title)?;
        non_empty(&at("prompt"), &s.prompt)?;
        if let Some(c) = &s.run_condition {
            check_condition_vars(&at("runCondition"), c)?;
        }
        let require_confirmation = match &s.require_confirmation {
            Confirmation::Never => None,
            Confirmation::Always => Some(ConfirmationRule::Always),
            Confirmation::When(c) => {
                check_condition_vars(&at("requireConfirmation"), c)?;
                Some(ConfirmationRule::If {
                    condition: c.clone(),
                })
            }
        };
        let index = StepIndex(u32::try_from(steps.len()).map_err(|_| too_many())?);
        steps.push(CompiledStep {
            id: s.id.clone(),
            title: s.title.trim().to_owned(),
            prompt: s.prompt.clone(),
            run_condition: s.run_condition.clone(),
            require_confirmation,
            output_contract: s.output_contract.as_ref().map(|c| CompiledContract {
                contract: c.contract_ref,
                required: c.required,
            }),
            notes_optional: s.notes_optional,
        });
        program.push(Instr::Step { step: index });
    }
    program.push(Instr::End);
    Pinned::new(CompiledWorkflow {
        compiler: COMPILER_VERSION,
        id: def.id.clone(),
        name: def.name.trim().to_owned(),
        description: def.description.trim().to_owned(),
        version: def.version.clone(),
        schema_version: def.schema_version,
        tags: def.tags.clone(),
        guidance: def.guidance.clone(),
        steps,
        program,
    })
}

fn too_many() -> WorkflowError {
    WorkflowError::at_path("steps", Rule::Value, "too many steps")
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

/// Conditions may read engine-provided values under `worktrain.*`, but no other reserved key.
fn check_condition_vars(path: &str, c: &Condition) -> Result<(), WorkflowError> {
    for var in c.vars() {
        let root = var.root();
        if root != "worktrain" && is_reserved_key(root) {
            return Err(WorkflowError::at_path(
                path,
                Rule::Reference,
                format!("condition reads `{var}`, but `{root}` is a reserved context key"),
            ));
        }
    }
    Ok(())
}

/// What the navigator decided while moving forward from a program position.
#[derive(Debug, Clone, PartialEq)]
pub enum Navigation {
    /// Enter this step at this position.
    Enter {
        /// Position of the step instruction.
        pc: Pc,
        /// The step.
        step: StepIndex,
    },
    /// Reached the end of the program.
    Complete,
}

/// A step passed over because its run condition was false.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// Position of the skipped instruction.
    pub pc: Pc,
    /// The step skipped.
    pub step: StepIndex,
}

impl CompiledWorkflow {
    /// The step at an index.
    pub fn step(&self, index: StepIndex) -> Option<&CompiledStep> {
        self.steps.get(index.0 as usize)
    }

    /// Find a step by id.
    pub fn step_index(&self, id: &StepId) -> Option<StepIndex> {
        self.steps
            .iter()
            .position(|s| &s.id == id)
            .and_then(|i| u32::try_from(i).ok())
            .map(StepIndex)
    }

    /// Walk forward from `from`, evaluating run conditions against `context`, until a
    /// step to enter or the end. Returns the skips passed on the way.
    pub fn navigate(&self, from: Pc, context: &Value) -> (Vec<Skip>, Navigation) {
        let mut skips = Vec::new();
        let mut pc = from.0 as usize;
        while let Some(instr) = self.program.get(pc) {
            let here = Pc(u32::try_from(pc).unwrap_or(u32::MAX));
            match instr {
                Instr::End => return (skips, Navigation::Complete),
                Instr::Step { step } => {
                    let runs = self
                        .step(*step)
                        .and_then(|s| s.run_condition.as_ref())
                        .is_none_or(|c| c.evaluate(context));
                    if runs {
                        return (skips, Navigation::Enter { pc: here, step: *step });
                    }
                    skips.push(Skip { pc: here, step: *step });
                }
            }
            pc += 1;
        }
        (skips, Navigation::Complete)
    }

    /// Number of step instructions (for progress display).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_workflow;
    use serde_json::json;

    fn wf(extra: &str) -> String {
        format!(
            "schemaVersion: 1\nid: demo\nname: Demo\ndescription: d\nversion: '1'\nsteps:\n  - id: a\n    title: A\n    prompt: do a\n  - id: b\n    title: B\n    prompt: do b\n    runCondition: {{var: size, equals: large}}\n  - id: c\n    title: C\n    prompt: do c\n{extra}"
        )
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        let a = compile(&parse_workflow("d.yaml", &wf("")).unwrap()).unwrap();
        let b = compile(&parse_workflow("d.yaml", &wf("")).unwrap()).unwrap();
        assert_eq!(a.hash, b.hash);
        let json = serde_json::to_string(&parse_workflow("d.yaml", &wf("")).unwrap()).unwrap();
        let c = compile(&parse_workflow("d.json", &json).unwrap()).unwrap();
        assert_eq!(a.hash, c.hash, "JSON and YAML of the same workflow pin the same hash");
        let changed = wf("").replace("do c", "do c differently");
        let d = compile(&parse_workflow("d.yaml", &changed).unwrap()).unwrap();
        assert_ne!(a.hash, d.hash);
        let back = Pinned::from_canonical(&a.canonical).unwrap();
        assert_eq!(back.hash, a.hash);
        assert_eq!(*back.workflow, *a.workflow);
    }

    #[test]
    fn navigation_skips_false_conditions() {
        let p = compile(&parse_workflow("d.yaml", &wf("")).unwrap()).unwrap();
        let (skips, nav) = p.workflow.navigate(Pc(1), &json!({"size": "small"}));
        assert_eq!(skips, vec![Skip { pc: Pc(1), step: StepIndex(1) }]);
        assert_eq!(nav, Navigation::Enter { pc: Pc(2), step: StepIndex(2) });
        let (skips, nav) = p.workflow.navigate(Pc(1), &json!({"size": "large"}));
        assert!(skips.is_empty());
        assert_eq!(nav, Navigation::Enter { pc: Pc(1), step: StepIndex(1) });
        assert_eq!(p.workflow.navigate(Pc(3), &json!({})).1, Navigation::Complete);
    }

    #[test]
    fn semantic_errors_name_the_path() {
        let dup = wf("  - id: a\n    title: again\n    prompt: x\n");
        let e = compile(&parse_workflow("d.yaml", &dup).unwrap()).unwrap_err();
        assert_eq!(e.rule, Rule::UniqueStepIds);
        assert_eq!(e.path.as_deref(), Some("steps[3].id"));
        let blank = wf("").replace("prompt: do a", "prompt: '  '");
        let e = compile(&parse_workflow("d.yaml", &blank).unwrap()).unwrap_err();
        assert_eq!(e.rule, Rule::NonEmpty);
    }
}
