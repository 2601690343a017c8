//! Parsing workflow files (JSON or YAML) into [`WorkflowDefinition`], with errors that
//! name the file, the line/column, the path inside the document and the rule broken.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workflow::{CURRENT_SCHEMA_VERSION, RoutineDefinition, WorkflowDefinition};

/// The syntax of a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// JSON.
    Json,
    /// YAML (a superset of JSON).
    Yaml,
}

impl SourceFormat {
    /// Pick the format from a file name, falling back to sniffing the text.
    pub fn detect(file_name: &str, text: &str) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            SourceFormat::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            SourceFormat::Yaml
        } else if text.trim_start().starts_with('{') {
            SourceFormat::Json
        } else {
            SourceFormat::Yaml
        }
    }
}

/// Which rule a workflow file broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Not parseable JSON/YAML.
    Syntax,
    /// A required property is missing.
    Required,
    /// A property the schema does not define.
    AdditionalProperties,
    /// A value of the wrong type.
    Type,
    /// A value outside what the schema allows (pattern, enum, range, condition shape).
    Value,
    /// `schemaVersion` is missing, unsupported or newer than this build.
    SchemaVersion,
    /// Two steps share an id.
    UniqueStepIds,
    /// A string that must not be empty is empty.
    NonEmpty,
    /// A reference (context key, step) is not allowed.
    Reference,
    /// The file is not something to read a workflow from (a FIFO, a device, a directory).
    File,
    /// The bytes are not UTF-8 text.
    Encoding,
    /// The file is too large or nested too deeply.
    Limit,
}

/// Largest workflow or routine file, in bytes (read no further than this).
pub const MAX_WORKFLOW_BYTES: usize = 1024 * 1024;
/// Deepest nesting of `[`/`{` brackets, checked before parsing: a deeply nested flow
/// collection makes the YAML parser slow long before its own recursion limit.
pub const MAX_NESTING: usize = 64;

/// Decode a workflow file's bytes: UTF-8, with a leading byte order mark dropped. Invalid
/// UTF-8 is reported with its byte offset, line and column.
pub fn decode_text(bytes: &[u8]) -> Result<&str, WorkflowError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let before = &bytes[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        // Columns count characters, like the parsers' positions.
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        WorkflowError {
            file: None,
            line: Some(line),
            column: Some(column),
            path: None,
            rule: Rule::Encoding,
            message: format!(
                "invalid UTF-8 at byte offset {at} (byte 0x{:02x}); workflow files must be UTF-8 text",
                bytes.get(at).copied().unwrap_or(0)
            ),
        }
    })
}

/// Refuse text larger than [`MAX_WORKFLOW_BYTES`] or nested deeper than [`MAX_NESTING`],
/// in one linear pass, before any parser sees it. Brackets are counted wherever they
/// are (also inside strings), which can only over-count: a real workflow never comes
/// close to the limit.
fn check_limits(text: &str) -> Result<(), WorkflowError> {
    if text.len() > MAX_WORKFLOW_BYTES {
        return Err(WorkflowError {
            file: None,
            line: None,
            column: None,
            path: None,
            rule: Rule::Limit,
            message: format!(
                "the file is {} bytes, over the limit of {MAX_WORKFLOW_BYTES} bytes for a workflow file",
                text.len()
            ),
        });
    }
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    for c in text.chars() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(WorkflowError {
                        file: None,
                        line: Some(line),
                        column: Some(column),
                        path: None,
                        rule: Rule::Limit,
                        message: format!(
                            "brackets nest deeper than {MAX_NESTING} levels; a workflow never needs that"
                        ),
                    });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A workflow that failed to load or compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct WorkflowError {
    /// The file, when loaded from disk (or a logical name such as `bundled:quick-task`).
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Path inside the document (`steps[2].prompt`), when known.
    pub path: Option<String>,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong.
    pub message: String,
}

impl WorkflowError {
    /// An error at a document path, without position.
    pub fn at_path(path: impl Into<String>, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            path: Some(path.into()),
            rule,
            message: message.into(),
        }
    }

    /// Attach the file name.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(l), Some(c)) => write!(f, "{file}:{l}:{c}: ")?,
            (Some(file), Some(l), None) => write!(f, "{file}:{l}: ")?,
            (Some(file), None, _) => write!(f, "{file}: ")?,
            (None, Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (None, Some(l), None) => write!(f, "line {l}: ")?,
            (None, None, _) => {}
        }
        if let Some(path) = &self.path
            && !path.is_empty()
            && path != "."
        {
            write!(f, "at `{path}`: ")?;
        }
        let rule = serde_json::to_value(self.rule)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{} [rule: {rule}]", self.message)
    }
}

/// Parse a workflow file's text. `file_name` is used for format detection and error messages.
/// Files written for an older `schemaVersion` are upgraded first (see [`upgrade`]).
///
/// ```
/// use worktrain_core::load::parse_workflow;
///
/// let good = "schemaVersion: 1\nid: hello\nname: Hello\ndescription: One step.\n\
///             version: \"1\"\nsteps:\n  - id: greet\n    title: Greet\n    prompt: Say hello.\n";
/// let def = parse_workflow("hello.yaml", good)?;
/// assert_eq!(def.id.as_str(), "hello");
/// assert_eq!(def.steps.len(), 1);
///
/// // A mistake is reported with the file, the line and what is wrong.
/// let typo = good.replace("title:", "titel:");
/// let err = parse_workflow("hello.yaml", &typo).unwrap_err();
/// assert_eq!(err.file.as_deref(), Some("hello.yaml"));
/// assert_eq!(err.line, Some(8));
/// assert!(err.to_string().starts_with("hello.yaml:8"), "{err}");
/// # Ok::<(), worktrain_core::load::WorkflowError>(())
/// ```
pub fn parse_workflow(file_name: &str, text: &str) -> Result<WorkflowDefinition, WorkflowError> {
    parse_document(
        file_name,
        text,
        "a workflow must be an object with schemaVersion, id, name, description, version and steps",
    )
}

/// Parse a routine file's text (same versioning as workflows).
pub fn parse_routine(file_name: &str, text: &str) -> Result<RoutineDefinition, WorkflowError> {
    parse_document(
        file_name,
        text,
        "a routine must be an object with schemaVersion, routine, description and steps",
    )
}

fn parse_document<T: serde::de::DeserializeOwned>(
    file_name: &str,
    text: &str,
    shape: &str,
) -> Result<T, WorkflowError> {
    let with_file = |e: WorkflowError| e.in_file(file_name);
    // A byte order mark is allowed at the start (some editors write one); the parsers
    // would read it as content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_limits(text).map_err(with_file)?;
    let format = SourceFormat::detect(file_name, text);
    let raw: Value = match format {
        SourceFormat::Json => serde_json::from_str(text).map_err(|e| WorkflowError {
            file: None,
            line: Some(e.line()),
            column: Some(e.column()),
            path: None,
            rule: Rule::Syntax,
            message: format!("invalid JSON: {}", strip_position(&e.to_string())),
        }),
        SourceFormat::Yaml => serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            WorkflowError {
                file: None,
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                path: None,
                rule: Rule::Syntax,
                message: format!("invalid YAML: {}", strip_position(&e.to_string())),
            }
        }),
    }
    .map_err(with_file)?;
    let version = check_schema_version(&raw, shape).map_err(with_file)?;
    if version < CURRENT_SCHEMA_VERSION {
        // Older files are upgraded as JSON values; errors then carry paths but no lines.
        let upgraded = upgrade(raw, version);
        return serde_path_to_error::deserialize::<_, T>(upgraded)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let mut err = schema_error(path, None, &inner.to_string());
                // Recover the position when the file as written fails at the same path.
                if let Err(direct) = parse_typed::<T>(format, text)
                    && direct.path == err.path
                {
                    (err.line, err.column) = (direct.line, direct.column);
                }
                err.message = format!(
                    "{} (after upgrading schemaVersion {version} to {CURRENT_SCHEMA_VERSION})",
                    err.message
                );
                err
            })
            .map_err(with_file);
    }
    parse_typed(format, text).map_err(with_file)
}

/// Deserialize the text as written, reporting errors with line and column.
fn parse_typed<T: serde::de::DeserializeOwned>(
    format: SourceFormat,
    text: &str,
) -> Result<T, WorkflowError> {
    match format {
        SourceFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                schema_error(
                    path,
                    Some((inner.line(), inner.column())),
                    &inner.to_string(),
                )
            })
        }
        SourceFormat::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let pos = inner.location().map(|l| (l.line(), l.column()));
                schema_error(path, pos, &inner.to_string())
            })
        }
    }
}

/// Documented upgrades between language versions, applied in order.
///
/// * 1 → 2: `outputContract.contractRef` is renamed `contract` (version 2 added contract
///   settings beside it: `dimensions`, `contextKey`). Loops, routines, jumps, gates and
///   parallel steps are new in version 2, so nothing else changes.
pub fn upgrade(mut doc: Value, from: u32) -> Value {
    if from < 2
        && let Some(steps) = doc.get_mut("steps").and_then(Value::as_array_mut)
    {
        for step in steps {
            if let Some(contract) = step
                .get_mut("outputContract")
                .and_then(Value::as_object_mut)
                && let Some(name) = contract.remove("contractRef")
            {
                contract.insert("contract".into(), name);
            }
        }
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("schemaVersion".into(), Value::from(CURRENT_SCHEMA_VERSION));
    }
    doc
}

fn check_schema_version(raw: &Value, shape: &str) -> Result<u32, WorkflowError> {
    let Some(obj) = raw.as_object() else {
        return Err(WorkflowError::at_path(".", Rule::Type, shape));
    };
    match obj.get("schemaVersion") {
        None => Err(WorkflowError::at_path(
            "schemaVersion",
            Rule::Required,
            match workrail_marker(raw) {
                Some(marker) => format!(
                    "missing `schemaVersion`: this is a WorkRail workflow (it has {marker}); convert it with `worktrain workflow import <file>` (docs/workflows.md, \"Coming from WorkRail\")"
                ),
                None => format!(
                    "missing `schemaVersion`; add `schemaVersion: {CURRENT_SCHEMA_VERSION}` at the top of the file (a WorkRail workflow is converted with `worktrain workflow import <file>` instead)"
                ),
            },
        )),
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (1..=CURRENT_SCHEMA_VERSION).contains(&n) => Ok(n),
            Some(n) if n > CURRENT_SCHEMA_VERSION => Err(WorkflowError::at_path(
                "schemaVersion",
                Rule::SchemaVersion,
                format!(
                    "this file declares schemaVersion {n}, but this worktrain build understands schemaVersion up to {CURRENT_SCHEMA_VERSION}; upgrade worktrain to load it"
                ),
            )),
            _ => Err(WorkflowError::at_path(
                "schemaVersion",
                Rule::SchemaVersion,
                format!(
                    "`schemaVersion` must be a positive integer (currently {CURRENT_SCHEMA_VERSION}), got {v}"
                ),
            )),
        },
    }
}

/// Top-level fields only WorkRail workflows have.
const WORKRAIL_FIELDS: &[&str] = &[
    "metaGuidance",
    "preconditions",
    "clarificationPrompts",
    "features",
    "assessments",
    "metricsProfile",
    "about",
    "examples",
    "recommendedPreferences",
    "references",
    "extensionPoints",
    "functionDefinitions",
    "modelTier",
    "validatedAgainstSpecVersion",
];

/// Step fields only WorkRail steps have.
const WORKRAIL_STEP_FIELDS: &[&str] = &[
    "promptBlocks",
    "agentRole",
    "guidance",
    "body",
    "type",
    "templateCall",
    "validationCriteria",
    "askForFiles",
    "hasValidation",
    "assessmentRefs",
    "assessmentConsequences",
    "parallelDelegations",
    "functionReferences",
];

/// Why a document is recognisably a WorkRail workflow (no `schemaVersion`, and a field
/// only WorkRail has), e.g. ``"`metaGuidance`"`` or ``"`promptBlocks` in step `plan`"``;
/// `None` when it is not. Used for the hint on the missing-`schemaVersion` error, and by
/// the importer to recognise its input.
pub fn workrail_marker(doc: &Value) -> Option<String> {
    let obj = doc.as_object()?;
    if obj.contains_key("schemaVersion") || !obj.get("steps").is_some_and(Value::is_array) {
        return None;
    }
    if let Some(f) = WORKRAIL_FIELDS.iter().find(|f| obj.contains_key(**f)) {
        return Some(format!("`{f}`"));
    }
    let steps = obj.get("steps").and_then(Value::as_array)?;
    for step in steps {
        let Some(step) = step.as_object() else {
            continue;
        };
        if let Some(f) = WORKRAIL_STEP_FIELDS.iter().find(|f| step.contains_key(**f)) {
            let id = step.get("id").and_then(Value::as_str).unwrap_or("?");
            return Some(format!("`{f}` in step `{id}`"));
        }
    }
    None
}

fn schema_error(path: String, pos: Option<(usize, usize)>, message: &str) -> WorkflowError {
    let message = strip_position(message);
    let rule = if message.contains("unknown field") || message.contains("not allowed here") {
        Rule::AdditionalProperties
    } else if message.contains("missing field") || message.contains(" needs a `") {
        Rule::Required
    } else if message.contains("invalid type") {
        Rule::Type
    } else {
        Rule::Value
    };
    WorkflowError {
        file: None,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        path: Some(path),
        rule,
        message,
    }
}

/// Drop the "at line X column Y" suffix serde adds; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "schemaVersion: 2\nid: demo\nname: Demo\ndescription: d\nversion: '1'\nsteps:\n  - id: a\n    title: A\n    prompt: do a\n";

    #[test]
    fn yaml_and_json_load() {
        let wf = parse_workflow("demo.yaml", GOOD).unwrap();
        assert_eq!(wf.steps.len(), 1);
        let json = serde_json::to_string(&wf).unwrap();
        assert_eq!(parse_workflow("demo.json", &json).unwrap(), wf);
    }

    #[test]
    fn unknown_field_names_line_path_and_rule() {
        let text = GOOD.replace("    prompt: do a\n", "    prompt: do a\n    promt: typo\n");
        let e = parse_workflow("demo.yaml", &text).unwrap_err();
        assert_eq!(e.rule, Rule::AdditionalProperties);
        assert_eq!(e.path.as_deref(), Some("steps[0].promt"));
        assert_eq!(e.line, Some(10));
        let shown = e.to_string();
        assert!(shown.starts_with("demo.yaml:10:"), "{shown}");
        assert!(shown.contains("unknown field `promt`"), "{shown}");
    }

    #[test]
    fn missing_field_and_bad_condition() {
        let text = GOOD.replace("    prompt: do a\n", "");
        let e = parse_workflow("demo.yaml", &text).unwrap_err();
        assert_eq!(e.rule, Rule::Required);
        assert!(e.message.contains("prompt"), "{e}");
        let text = GOOD.to_string() + "    runCondition: {var: x}\n";
        let e = parse_workflow("demo.yaml", &text).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("steps[0].runCondition"));
        assert!(e.message.contains("exactly one operator"), "{e}");
    }

    #[test]
    fn newer_schema_version_is_a_clear_error() {
        let text = GOOD.replace("schemaVersion: 2", "schemaVersion: 99");
        let e = parse_workflow("demo.yaml", &text).unwrap_err();
        assert_eq!(e.rule, Rule::SchemaVersion);
        assert!(e.message.contains("upgrade worktrain"), "{e}");
        let text = GOOD.replace("schemaVersion: 2\n", "");
        assert_eq!(
            parse_workflow("demo.yaml", &text).unwrap_err().rule,
            Rule::Required
        );
    }

    #[test]
    fn workrail_files_get_a_hint_to_import() {
        let wr = r#"{"id": "wr.x", "name": "X", "description": "d", "version": "1.0.0",
            "metaGuidance": ["be careful"], "steps": [{"id": "a", "title": "A", "prompt": "p"}]}"#;
        let e = parse_workflow("x.json", wr).unwrap_err();
        assert_eq!(e.rule, Rule::Required);
        assert!(
            e.message
                .contains("this is a WorkRail workflow (it has `metaGuidance`)"),
            "{e}"
        );
        assert!(e.message.contains("worktrain workflow import"), "{e}");
        let step = r#"{"id": "x", "name": "X", "description": "d", "version": "1.0.0",
            "steps": [{"id": "a", "title": "A", "promptBlocks": {"goal": "g"}}]}"#;
        let e = parse_workflow("x.json", step).unwrap_err();
        assert!(e.message.contains("`promptBlocks` in step `a`"), "{e}");
        let plain = GOOD.replace("schemaVersion: 2\n", "");
        let e = parse_workflow("demo.yaml", &plain).unwrap_err();
        assert!(e.message.starts_with("missing `schemaVersion`; add"), "{e}");
        assert!(e.message.contains("workflow import"), "{e}");
    }

    #[test]
    fn version_1_files_load_through_the_upgrade() {
        let v1 = "schemaVersion: 1\nid: old\nname: Old\ndescription: d\nversion: '1'\nsteps:\n  - id: a\n    title: A\n    prompt: p\n    outputContract: {contractRef: handoff}\n";
        let wf = parse_workflow("old.yaml", v1).unwrap();
        assert_eq!(wf.schema_version, CURRENT_SCHEMA_VERSION);
        let crate::workflow::StepEntry::Step(step) = &wf.steps[0] else {
            panic!("not a step")
        };
        assert_eq!(
            step.output_contract.as_ref().unwrap().contract,
            crate::contract::ContractName::Handoff
        );
        let bad = v1.replace("prompt: p\n", "prompt: p\n    promt: x\n");
        let e = parse_workflow("old.yaml", &bad).unwrap_err();
        assert!(e.message.contains("after upgrading schemaVersion 1"), "{e}");
        assert!(e.message.contains("promt"), "{e}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_workflow("x.json", "{\"a\": }").unwrap_err();
        assert_eq!(e.rule, Rule::Syntax);
        assert_eq!(e.line, Some(1));
        let e = parse_workflow("x.yaml", "a: [1, 2\nb: c").unwrap_err();
        assert_eq!(e.rule, Rule::Syntax);
        assert!(e.line.is_some());
    }
}
