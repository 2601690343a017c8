//! The agent tools. worktrain executes them; the model only asks.
//!
//! Worktree tools ([`Toolbox::execute`]): `shell`, `read_file`, `write_file`, `edit_file`,
//! `list_files`, `search_files`. Session tools, handled by the agent loop because they talk
//! to the engine and the event log: `complete_step`, `report_issue`.

mod fs;
pub mod shell;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::ToolErrorKind;
use crate::guard::PathGuard;
use crate::llm::ToolSpec;
use crate::sandbox::SandboxScope;

/// Name of the tool that submits a step.
pub const COMPLETE_STEP: &str = "complete_step";
/// Name of the tool that reports a problem.
pub const REPORT_ISSUE: &str = "report_issue";

/// Tool limits and shell settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolConfig {
    /// Bytes kept of each of a shell command's stdout and stderr (head and tail; the
    /// middle is replaced by a truncation marker).
    pub shell_output_cap: usize,
    /// Bytes returned by one `read_file`.
    pub read_cap: usize,
    /// Entries returned by one `list_files`.
    pub list_cap: usize,
    /// Matching lines returned by one `search_files`.
    pub search_max_results: usize,
    /// Files larger than this are skipped by `search_files`.
    pub search_max_file_bytes: u64,
    /// The shell and its flags; the command is appended as the last argument
    /// (default `["bash", "-c"]`: not a login shell — the user's profile scripts are not
    /// the agent's business, can be slow, and can hang on their own locks; use
    /// `["bash", "-lc"]` to opt in). Its environment is the sandbox's allowlist (see
    /// [`crate::sandbox`]).
    pub shell: Vec<String>,
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self {
            shell_output_cap: 32 * 1024,
            read_cap: 256 * 1024,
            list_cap: 1000,
            search_max_results: 200,
            search_max_file_bytes: 2 * 1024 * 1024,
            shell: vec!["bash".to_owned(), "-c".to_owned()],
        }
    }
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Text for the model.
    pub text: String,
    /// Set when the call failed.
    pub error: Option<ToolErrorKind>,
    /// Exit code of a shell command.
    pub exit_code: Option<i32>,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            error: None,
            exit_code: None,
        }
    }

    /// A failed call.
    pub fn err(kind: ToolErrorKind, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            error: Some(kind),
            exit_code: None,
        }
    }

    /// Failed, or a shell command that exited non-zero (used by repeat detection).
    pub fn is_failure(&self) -> bool {
        self.error.is_some() || self.exit_code.is_some_and(|c| c != 0)
    }
}

/// Parse tool arguments into `T`, or an `invalid_arguments` result for the model.
pub(crate) fn parse_args<T: serde::de::DeserializeOwned>(
    tool: &str,
    input: &Value,
) -> Result<T, ToolOutput> {
    if let Value::String(raw) = input {
        return Err(ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!(
                "{tool}: the arguments were not valid JSON: {}",
                crate::redact::truncate_chars(raw, 200)
            ),
        ));
    }
    serde_json::from_value(input.clone()).map_err(|e| {
        ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!("{tool}: invalid arguments: {e}"),
        )
    })
}

/// Executes the worktree tools.
#[derive(Debug, Clone, Default)]
pub struct Toolbox {
    config: ToolConfig,
}

/// Where and under which limits one call runs.
pub struct ToolEnv {
    /// Confinement of the file tools.
    pub guard: Arc<dyn PathGuard>,
    /// The run's sandbox, for the shell tool.
    pub scope: Arc<SandboxScope>,
    /// Timeout of the call.
    pub timeout: Duration,
}

impl std::fmt::Debug for ToolEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEnv")
            .field("scope", &self.scope)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Toolbox {
    /// A toolbox with `config`.
    pub fn new(config: ToolConfig) -> Self {
        Self { config }
    }

    /// The config.
    pub fn config(&self) -> &ToolConfig {
        &self.config
    }

    /// Whether `name` is a worktree tool this toolbox executes.
    pub fn handles(name: &str) -> bool {
        matches!(
            name,
            "shell" | "read_file" | "write_file" | "edit_file" | "list_files" | "search_files"
        )
    }

    /// Run one worktree tool. Never panics on bad input; every failure is a result.
    pub async fn execute(&self, name: &str, input: &Value, env: &ToolEnv) -> ToolOutput {
        match name {
            "shell" => shell::tool(input, &env.scope, env.timeout, &self.config).await,
            "read_file" | "write_file" | "edit_file" | "list_files" | "search_files" => {
                self.fs_tool(name, input, env).await
            }
            other => ToolOutput::err(
                ToolErrorKind::UnknownTool,
                format!(
                    "unknown tool {other:?}; available: shell, read_file, write_file, edit_file, list_files, search_files, complete_step, report_issue"
                ),
            ),
        }
    }

    async fn fs_tool(&self, name: &str, input: &Value, env: &ToolEnv) -> ToolOutput {
        // File tools are synchronous; run them off the async threads, bounded in time.
        let name_owned = name.to_owned();
        let input = input.clone();
        let config = self.config.clone();
        let guard = env.guard.clone();
        let task =
            tokio::task::spawn_blocking(move || fs::run(&name_owned, &input, &*guard, &config));
        match tokio::time::timeout(env.timeout, task).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                ToolOutput::err(ToolErrorKind::Io, format!("{name}: internal error: {e}"))
            }
            Err(_) => ToolOutput::err(
                ToolErrorKind::Timeout,
                format!("{name}: timed out after {:?}", env.timeout),
            ),
        }
    }
}

/// The JSON schemas of every tool, in the order offered to the model.
pub fn specs(contract_hint: Option<&str>) -> Vec<ToolSpec> {
    let mut complete_desc = "Submit your output for the CURRENT workflow step when (and only when) the step's work is done. \
         worktrain checks it: the answer is either the next step, a list of blockers to fix (then call again), \
         or that the workflow is complete. Do not stop working until the workflow is complete."
        .to_owned();
    if let Some(h) = contract_hint {
        complete_desc.push(' ');
        complete_desc.push_str(h);
    }
    vec![
        ToolSpec {
            name: "shell".into(),
            description: "Run a bash command in the worktree (working directory: the worktree root). \
                Returns exit code, stdout and stderr (long output is truncated in the middle). \
                Background processes do not outlive the call. Use for builds, tests, git inspection."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The bash command line."},
                    "timeout_secs": {"type": "integer", "minimum": 1, "description": "Optional timeout in seconds (capped by the session's tool timeout)."}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "read_file".into(),
            description: "Read a text file in the worktree. Optionally a line range.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the worktree root."},
                    "offset": {"type": "integer", "minimum": 1, "description": "First line to return (1-based)."},
                    "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to return."}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "write_file".into(),
            description: "Create or overwrite a file in the worktree with the given content (parent directories are created).".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "edit_file".into(),
            description: "Replace one exact occurrence of old_string with new_string in a file. \
                old_string must match exactly once (include surrounding lines to make it unique)."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "old_string": {"type": "string"},
                    "new_string": {"type": "string"}
                },
                "required": ["path", "old_string", "new_string"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "list_files".into(),
            description: "List a directory of the worktree (directories end with /). .git is hidden.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Directory, default the worktree root."},
                    "recursive": {"type": "boolean", "description": "Walk subdirectories too."}
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "search_files".into(),
            description: "Search text files for a regular expression (Rust regex syntax). \
                Returns path:line: text. Skips .git, node_modules, target, binary and very large files."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string", "description": "Directory or file to search, default the worktree root."},
                    "case_insensitive": {"type": "boolean"},
                    "max_results": {"type": "integer", "minimum": 1}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: COMPLETE_STEP.into(),
            description: complete_desc,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "notes": {"type": "string", "description": "Markdown: what you did and found in this step."},
                    "artifacts": {"type": "array", "items": {"type": "object"}, "description": "Typed artifacts ({\"kind\": ...}) the step's output contract asks for."},
                    "context": {"type": "object", "description": "Session context changes (top-level keys; null deletes)."}
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: REPORT_ISSUE.into(),
            description: "Report a problem to the operators (missing access, broken environment, unclear task). \
                Set blocking=true only if you cannot continue at all; the session then stops as failed."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "details": {"type": "string"},
                    "blocking": {"type": "boolean"}
                },
                "required": ["title", "details"],
                "additionalProperties": false
            }),
        },
    ]
}

/// Display a resolved path relative to the root.
pub(crate) fn rel_display(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => ".".to_owned(),
        Ok(r) => r.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}
