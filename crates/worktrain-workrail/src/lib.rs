//! Import WorkRail workflows into worktrain: `worktrain workflow import`.
//!
//! Every input file gets a [`FileReport`]: converted, converted with notes (what was
//! mapped to a closest construct, what behaves differently, what has no equivalent and
//! where the WorkRail file is itself inconsistent), failed with the reason, or skipped when
//! it is not a WorkRail workflow. A converted workflow is checked the way `worktrain
//! workflow validate`, `lint` and `simulate` check it before anything is written.
//!
//! ```
//! use worktrain_workrail::{Input, import};
//!
//! let text = r#"{"id": "hello", "name": "Hello", "description": "Say hello.", "version": "1.0.0",
//!   "metaGuidance": ["Be brief."], "steps": [{"id": "greet", "title": "Greet", "prompt": "Say hello to {{name}}."}]}"#;
//! let out = import(&[Input::new("hello.json", text)], &[]);
//! let yaml = &out[0].output.as_ref().unwrap().yaml;
//! assert!(yaml.contains("prompt: Say hello to {{name}}."));
//! assert_eq!(out[0].report.status.as_str(), "converted with notes");
//! ```

pub mod compose;
pub mod cond;
pub mod convert;
pub mod registry;
pub mod report;
pub mod source;

use std::path::{Path, PathBuf};

use serde_json::Value;
use worktrain_core::compile::{NoRoutines, compile_with};
use worktrain_core::load::parse_workflow;
use worktrain_workflow_tools::lint::{Severity, lint};
use worktrain_workflow_tools::simulate::{Script, simulate};

pub use report::{Checks, FileReport, Note, NoteKind, Status};

use crate::convert::LibraryDoc;
use crate::report::Notes;
use crate::source::WrWorkflow;

/// The phrase in the first line of every file the importer writes; a file without it is
/// never overwritten.
pub const MARKER: &str = "imported from WorkRail by `worktrain workflow import`";

/// One input file.
#[derive(Debug, Clone)]
pub struct Input {
    /// Where it was read from (shown in reports).
    pub location: String,
    /// Its text.
    pub text: String,
}

impl Input {
    /// An input from text.
    pub fn new(location: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            text: text.into(),
        }
    }
}

/// A converted workflow, ready to be written.
#[derive(Debug, Clone)]
pub struct Output {
    /// Workflow id.
    pub id: String,
    /// File name (`<id>.yaml`).
    pub file_name: String,
    /// The file's text: a header comment, then the workflow in YAML.
    pub yaml: String,
}

/// The result for one input.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: FileReport,
    /// The converted workflow (absent when it failed or was skipped).
    pub output: Option<Output>,
}

/// Why inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A path does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory holds no `.json` file.
    #[error("{0} holds no .json file: WorkRail workflows are JSON files")]
    Empty(String),
}

/// Read the `.json` files of `path` (a file, or a directory searched recursively), in
/// path order.
pub fn read_inputs(path: &Path) -> Result<Vec<Input>, ReadError> {
    let io = |p: &Path, e: std::io::Error| ReadError::Io {
        path: p.display().to_string(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if meta.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        return Ok(vec![Input::new(path.display().to_string(), text)]);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let p = entry.map_err(|e| io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ReadError::Empty(path.display().to_string()));
    }
    files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| Input::new(p.display().to_string(), t))
                .map_err(|e| io(p, e))
        })
        .collect()
}

/// What an input is.
enum Parsed {
    Workflow(Box<WrWorkflow>),
    NotWorkflow(String),
    Broken(String),
}

fn parse(input: &Input) -> Parsed {
    let raw: Value = match serde_json::from_str(&input.text) {
        Ok(v) => v,
        Err(e) => {
            return Parsed::Broken(format!(
                "not valid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                e
            ));
        }
    };
    let Some(obj) = raw.as_object() else {
        return Parsed::NotWorkflow("not a JSON object".into());
    };
    if obj.contains_key("schemaVersion") {
        return Parsed::NotWorkflow(
            "already a worktrain workflow (it declares `schemaVersion`); nothing to convert".into(),
        );
    }
    if !obj.contains_key("steps") {
        return Parsed::NotWorkflow(
            if obj.contains_key("$defs") || obj.contains_key("definitions") {
                "a JSON Schema, not a workflow (no `steps`)".into()
            } else {
                "not a WorkRail workflow (no `steps`)".into()
            },
        );
    }
    let mut de = serde_json::Deserializer::from_str(&input.text);
    match serde_path_to_error::deserialize::<_, WrWorkflow>(&mut de) {
        Ok(w) => Parsed::Workflow(Box::new(w)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_owned(),
                None => msg,
            };
            Parsed::Broken(format!(
                "line {}, column {}, at `{path}`: {msg} (not a WorkRail workflow of any schema generation)",
                inner.line(),
                inner.column()
            ))
        }
    }
}

/// Convert `inputs`. Template calls may expand routines found among the inputs or in
/// `routines` (documents read only to be injected).
pub fn import(inputs: &[Input], routines: &[Input]) -> Vec<Outcome> {
    let parsed: Vec<(&Input, Parsed)> = inputs.iter().map(|i| (i, parse(i))).collect();
    let mut library: Vec<LibraryDoc> = Vec::new();
    for (i, p) in &parsed {
        if let Parsed::Workflow(w) = p {
            library.push(LibraryDoc {
                location: i.location.clone(),
                workflow: (**w).clone(),
            });
        }
    }
    for r in routines {
        if let Parsed::Workflow(w) = parse(r) {
            library.push(LibraryDoc {
                location: r.location.clone(),
                workflow: *w,
            });
        }
    }
    let mut seen_ids: Vec<(String, String)> = Vec::new();
    parsed
        .into_iter()
        .map(|(input, p)| {
            let outcome = convert_one(input, p, &library);
            if let Some(o) = &outcome.output {
                if let Some((_, first)) = seen_ids.iter().find(|(id, _)| *id == o.id) {
                    return Outcome {
                        report: FileReport::failed(
                            &input.location,
                            Some(o.id.clone()),
                            format!("workflow id `{}` is also the id of {first}; ids must be unique across a catalog", o.id),
                        ),
                        output: None,
                    };
                }
                seen_ids.push((o.id.clone(), input.location.clone()));
            }
            outcome
        })
        .collect()
}

fn convert_one(input: &Input, parsed: Parsed, library: &[LibraryDoc]) -> Outcome {
    let source = &input.location;
    let doc = match parsed {
        Parsed::Workflow(w) => w,
        Parsed::NotWorkflow(reason) => {
            return Outcome {
                report: FileReport {
                    source: source.clone(),
                    status: Status::Skipped,
                    workflow: None,
                    output: None,
                    reason: Some(reason),
                    notes: Vec::new(),
                    checks: None,
                },
                output: None,
            };
        }
        Parsed::Broken(reason) => {
            return Outcome {
                report: FileReport::failed(source, None, reason),
                output: None,
            };
        }
    };
    let mut notes = Notes::default();
    let converted = match convert::convert(&doc, library, &mut notes) {
        Ok(c) => c,
        Err(e) => {
            let mut report = FileReport::failed(source, doc.id.clone(), e.0);
            report.notes = notes.0;
            return Outcome {
                report,
                output: None,
            };
        }
    };
    let id = converted.definition.id.to_string();
    let yaml = match emit(&converted, source) {
        Ok(y) => y,
        Err(e) => {
            return Outcome {
                report: FileReport::failed(
                    source,
                    Some(id),
                    format!("cannot write the converted workflow: {e}"),
                ),
                output: None,
            };
        }
    };
    let file_name = format!("{id}.yaml");
    let checks = check(&file_name, &yaml);
    let failure = if !checks.valid {
        Some(format!(
            "the converted workflow does not validate: {}",
            checks.lint_errors.join("; ")
        ))
    } else if !checks.lint_errors.is_empty() {
        Some(format!(
            "the converted workflow has lint errors: {}",
            checks.lint_errors.join("; ")
        ))
    } else if !checks.simulated {
        Some("a simulation of the converted workflow does not complete".to_owned())
    } else {
        None
    };
    let status = match (&failure, notes.0.is_empty()) {
        (Some(_), _) => Status::Failed,
        (None, true) => Status::Converted,
        (None, false) => Status::ConvertedWithNotes,
    };
    Outcome {
        report: FileReport {
            source: source.clone(),
            status,
            workflow: Some(id.clone()),
            output: None,
            reason: failure.clone(),
            notes: notes.0,
            checks: Some(checks),
        },
        output: failure.is_none().then_some(Output {
            id,
            file_name,
            yaml,
        }),
    }
}

/// The file text: a header comment (what the workflow is for, where it came from, and the
/// informational WorkRail fields), then the workflow.
fn emit(c: &convert::Converted, source: &str) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(&c.definition)?;
    let file = Path::new(source)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_owned());
    let mut out = format!("# {} — {MARKER} (from {file}).\n", c.definition.id);
    for line in wrap(&c.definition.description, 88) {
        out.push_str(&format!("# {line}\n"));
    }
    if !c.header.is_empty() {
        out.push_str("#\n");
        for line in &c.header {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
    }
    out.push_str(&body);
    Ok(out)
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// Check a converted workflow as `worktrain workflow validate`, `lint` and `simulate` do.
pub fn check(location: &str, yaml: &str) -> Checks {
    let compiled =
        parse_workflow(location, yaml).and_then(|def| compile_with(&def, location, &NoRoutines));
    let pinned = match compiled {
        Ok(p) => p,
        Err(e) => {
            return Checks {
                valid: false,
                lint_errors: vec![e.to_string()],
                ..Checks::default()
            };
        }
    };
    let mut checks = Checks {
        valid: true,
        ..Checks::default()
    };
    for f in lint(&pinned.workflow) {
        match f.severity {
            Severity::Error => checks.lint_errors.push(f.to_string()),
            Severity::Warning => checks.lint_warnings.push(f.to_string()),
        }
    }
    if let Ok(trace) = simulate(&pinned, &Script::default()) {
        checks.simulated = trace.completed;
        checks.simulated_steps = trace.steps.len();
    }
    checks
}

/// What happened to one output when writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written to this path.
    Wrote(PathBuf),
    /// Not written: the path holds a file the importer did not write.
    Refused(PathBuf),
}

/// Write `output` into `dir` (created if needed). A file already there is replaced only
/// when the importer wrote it (its first line carries [`MARKER`]), so hand-written or
/// hand-converted workflows are never overwritten.
pub fn write(dir: &Path, output: &Output) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&output.file_name);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.lines().next().is_some_and(|l| l.contains(MARKER))
    {
        return Ok(Written::Refused(path));
    }
    std::fs::write(&path, &output.yaml)?;
    Ok(Written::Wrote(path))
}
