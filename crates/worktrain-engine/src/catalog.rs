//! Where workflows come from: bundled (compiled into the binary) < user
//! (`$WORKTRAIN_HOME/workflows`) < project (`<repo>/.worktrain/workflows`). A later
//! source shadows an earlier one with the same id; `list` shows both and any file that
//! failed to load, with its reason — a workflow never silently disappears.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use worktrain_core::compile::{Pinned, RoutineResolver, RoutineSource, compile_with};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::ids::{Sha256Hash, WorkflowId};
use worktrain_core::load::{MAX_WORKFLOW_BYTES, Rule, WorkflowError, decode_text, parse_workflow};
use worktrain_core::workflow::WorkflowDefinition;

/// Workflows shipped inside the binary: (file name, contents).
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "bug-investigation.yaml",
        include_str!("../../../workflows/bug-investigation.yaml"),
    ),
    (
        "coding-task.yaml",
        include_str!("../../../workflows/coding-task.yaml"),
    ),
    (
        "mr-review.yaml",
        include_str!("../../../workflows/mr-review.yaml"),
    ),
    (
        "quick-task.yaml",
        include_str!("../../../workflows/quick-task.yaml"),
    ),
    (
        "review-perspective.yaml",
        include_str!("../../../workflows/review-perspective.yaml"),
    ),
    (
        "workflow-improvement.yaml",
        include_str!("../../../workflows/workflow-improvement.yaml"),
    ),
];

/// Routines shipped inside the binary: (path under `workflows/`, contents).
pub const BUNDLED_ROUTINES: &[(&str, &str)] = &[
    (
        "routines/handoff.yaml",
        include_str!("../../../workflows/routines/handoff.yaml"),
    ),
    (
        "routines/verify.yaml",
        include_str!("../../../workflows/routines/verify.yaml"),
    ),
];

/// Directory (inside each workflow source) that holds routine files.
pub const ROUTINES_DIR: &str = "routines";

/// Where a workflow was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Shipped with worktrain.
    Bundled,
    /// `$WORKTRAIN_HOME/workflows`.
    User,
    /// `<repo>/.worktrain/workflows`.
    Project,
    /// A file named explicitly.
    File,
}

impl SourceKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Bundled => "bundled",
            SourceKind::User => "user",
            SourceKind::Project => "project",
            SourceKind::File => "file",
        }
    }
}

/// One workflow file found in a source.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogEntry {
    /// Where the workflow was found (bundled, user, project, path).
    pub source: SourceKind,
    /// File path, or `bundled:<name>`.
    pub location: String,
    /// The workflow id (from the file, or from the file name when it failed to load).
    pub id: String,
    /// The loaded workflow, when valid.
    #[serde(skip)]
    pub definition: Option<WorkflowDefinition>,
    /// The workflow's human name, if it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The workflow's version string, if it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the workflow does, if it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form labels for finding the workflow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Why the file failed to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The source that shadows this entry, if a later source has the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadowed_by: Option<String>,
    /// The compiled workflow, when valid.
    #[serde(skip)]
    pub pinned: Option<Pinned>,
}

/// A workflow resolved and compiled, ready to pin.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The compiled workflow.
    pub pinned: Pinned,
    /// A label for events: `bundled:quick-task.yaml`, `user:/path`, `file:/path`.
    pub source: String,
}

/// The set of workflow sources for one invocation.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// `$WORKTRAIN_HOME/workflows`.
    pub user_dir: Option<PathBuf>,
    /// `<repo>/.worktrain/workflows`.
    pub project_dir: Option<PathBuf>,
}

impl Catalog {
    /// A catalog with a user directory and a project directory derived from `workspace`.
    pub fn new(user_dir: Option<PathBuf>, workspace: Option<&Path>) -> Self {
        Self {
            user_dir,
            project_dir: workspace.map(|w| w.join(".worktrain").join("workflows")),
        }
    }

    /// Every workflow file in every source, in precedence order, with shadowing marked.
    pub fn list(&self) -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = BUNDLED
            .iter()
            .map(|(name, text)| {
                self.entry(SourceKind::Bundled, format!("bundled:{name}"), name, text)
            })
            .collect();
        for (kind, dir) in [
            (SourceKind::User, &self.user_dir),
            (SourceKind::Project, &self.project_dir),
        ] {
            let Some(dir) = dir else { continue };
            for path in workflow_files(dir) {
                let location = path.display().to_string();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                match read_source(&path) {
                    Ok(text) => entries.push(self.entry(kind, location, &name, &text)),
                    Err(e) => entries.push(CatalogEntry {
                        source: kind,
                        id: stem(&name),
                        location,
                        definition: None,
                        name: None,
                        version: None,
                        description: None,
                        tags: Vec::new(),
                        error: Some(e.to_string()),
                        shadowed_by: None,
                        pinned: None,
                    }),
                }
            }
        }
        // Later entries win; mark every earlier entry with the same id as shadowed.
        for i in 0..entries.len() {
            let winner = entries[i + 1..]
                .iter()
                .rev()
                .find(|e| e.id == entries[i].id && e.error.is_none())
                .map(CatalogEntry::label);
            entries[i].shadowed_by = winner;
        }
        entries
    }

    fn entry(
        &self,
        source: SourceKind,
        location: String,
        file_name: &str,
        text: &str,
    ) -> CatalogEntry {
        match self.compiled(&location, file_name, text) {
            Ok((def, pinned)) => CatalogEntry {
                source,
                location,
                id: def.id.to_string(),
                name: Some(def.name.clone()),
                version: Some(def.version.clone()),
                description: Some(def.description.clone()),
                tags: def.tags.clone(),
                definition: Some(def),
                error: None,
                shadowed_by: None,
                pinned: Some(pinned),
            },
            Err(e) => CatalogEntry {
                source,
                id: stem(file_name),
                location,
                definition: None,
                name: None,
                version: None,
                description: None,
                tags: Vec::new(),
                error: Some(e.to_string()),
                shadowed_by: None,
                pinned: None,
            },
        }
    }

    /// Parse and compile a workflow file's text, from the process-wide cache when the
    /// same text at the same location was compiled against the same routine files
    /// before. Listing and resolving by id compile every workflow of every source, so
    /// without the cache each `start_workflow` by id re-parsed the whole catalog.
    fn compiled(
        &self,
        location: &str,
        file_name: &str,
        text: &str,
    ) -> Result<(WorkflowDefinition, Pinned), WorkflowError> {
        let key = CompileKey {
            location: location.to_owned(),
            text: Sha256Hash::of(text.as_bytes()),
            routines: self.routines_fingerprint(),
        };
        let hit = compile_cache()
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned());
        // A hit stands only while every routine it included still resolves to the same
        // text (a routine next to the workflow, included by path, may have changed).
        if let Some(hit) = hit
            && hit.deps.iter().all(|d| {
                self.resolve_routine(&d.reference, &d.from)
                    .is_ok_and(|r| Sha256Hash::of(r.text.as_bytes()) == d.text)
            })
        {
            return hit.result;
        }
        let recorder = Recording {
            catalog: self,
            deps: Mutex::new(Vec::new()),
        };
        let result = parse_workflow(file_name, text)
            .map_err(|e| e.in_file(location))
            .and_then(|def| {
                let pinned =
                    compile_with(&def, location, &recorder).map_err(|e| in_file(e, location))?;
                Ok((def, pinned))
            });
        let deps = recorder.deps.into_inner().unwrap_or_default();
        if let Ok(mut cache) = compile_cache().lock() {
            if cache.len() >= COMPILE_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    result: result.clone(),
                    deps,
                },
            );
        }
        result
    }

    /// What the routine files of this catalog's directories look like now (names, sizes,
    /// modification times): a routine added, changed or removed changes it.
    fn routines_fingerprint(&self) -> Sha256Hash {
        let mut seen = String::new();
        for dir in [&self.project_dir, &self.user_dir].into_iter().flatten() {
            for path in workflow_files(&dir.join(ROUTINES_DIR)) {
                let (len, modified) = std::fs::metadata(&path)
                    .map(|m| {
                        let t = m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_nanos())
                            .unwrap_or(0);
                        (m.len(), t)
                    })
                    .unwrap_or((0, 0));
                seen.push_str(&format!("{}\0{len}\0{modified}\n", path.display()));
            }
        }
        Sha256Hash::of(seen.as_bytes())
    }

    /// Resolve `spec` — a workflow id or a path to a workflow file — and compile it.
    pub fn resolve(&self, spec: &str) -> Result<Resolved, ApiError> {
        if is_workflow_path(spec) {
            let (location, text) = read_workflow_file(spec)?;
            let (_, pinned) = self
                .compiled(&location, &location, &text)
                .map_err(invalid)?;
            return Ok(Resolved {
                pinned,
                source: format!("file:{location}"),
            });
        }
        let id = WorkflowId::new(spec).map_err(|e| {
            ApiError::new(
                ErrorCode::WorkflowNotFound,
                e.to_string(),
                Retry::AfterFix,
                "pass a workflow id from `worktrain workflow list`, or a path to a workflow file",
            )
        })?;
        let entries = self.list();
        let found = entries
            .iter()
            .rev()
            .find(|e| e.id == id.as_str() && e.error.is_none());
        let Some(found) = found else {
            if let Some(broken) = entries.iter().rev().find(|e| e.id == id.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::WorkflowInvalid,
                    format!(
                        "workflow `{id}` exists but failed to load: {}",
                        broken.error.as_deref().unwrap_or("unknown error")
                    ),
                    Retry::AfterFix,
                    format!(
                        "fix the file, then check it with `worktrain workflow validate {}`",
                        broken.location
                    ),
                ));
            }
            let known: Vec<&str> = entries
                .iter()
                .filter(|e| e.error.is_none())
                .map(|e| e.id.as_str())
                .collect();
            return Err(ApiError::new(
                ErrorCode::WorkflowNotFound,
                format!("no workflow with id `{id}`"),
                Retry::AfterFix,
                format!("known workflows: {}", known.join(", ")),
            ));
        };
        let pinned = found
            .pinned
            .clone()
            .ok_or_else(|| ApiError::internal("catalog entry without a compiled workflow"))?;
        Ok(Resolved {
            pinned,
            source: found.label(),
        })
    }
}

impl CatalogEntry {
    /// `bundled:<file>`, `user:<path>` or `project:<path>`.
    pub fn label(&self) -> String {
        match self.source {
            SourceKind::Bundled => self.location.clone(),
            SourceKind::User | SourceKind::Project | SourceKind::File => {
                format!("{}:{}", self.source.as_str(), self.location)
            }
        }
    }
}

fn stem(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file_name)
        .to_owned()
}

fn workflow_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        // Anything but a directory: a FIFO or device named `x.yaml` is listed with the
        // reason it cannot be read, rather than vanishing from the list.
        .filter(|p| {
            !p.is_dir()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    files
}

/// Compiled workflows kept per process (a catalog of a few dozen files fits many times).
const COMPILE_CACHE_ENTRIES: usize = 512;

/// What a compiled workflow depends on: the file's location and text, and the routine
/// files it could include.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CompileKey {
    location: String,
    text: Sha256Hash,
    routines: Sha256Hash,
}

/// A compile result and the routines it included.
#[derive(Debug, Clone)]
struct Cached {
    result: Result<(WorkflowDefinition, Pinned), WorkflowError>,
    deps: Vec<RoutineDep>,
}

/// One routine an include resolved to: the reference, where it was included from, and
/// the hash of the text it resolved to.
#[derive(Debug, Clone)]
struct RoutineDep {
    reference: String,
    from: String,
    text: Sha256Hash,
}

/// A resolver that records what it resolved, for the cache.
struct Recording<'a> {
    catalog: &'a Catalog,
    deps: Mutex<Vec<RoutineDep>>,
}

impl RoutineResolver for Recording<'_> {
    fn resolve(&self, reference: &str, from: &str) -> Result<RoutineSource, String> {
        let source = self.catalog.resolve_routine(reference, from)?;
        if let Ok(mut deps) = self.deps.lock() {
            deps.push(RoutineDep {
                reference: reference.to_owned(),
                from: from.to_owned(),
                text: Sha256Hash::of(source.text.as_bytes()),
            });
        }
        Ok(source)
    }
}

type CompileCache = HashMap<CompileKey, Cached>;

fn compile_cache() -> &'static Mutex<CompileCache> {
    static CACHE: OnceLock<Mutex<CompileCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Map a load/compile error to the API error shape.
pub fn invalid(e: WorkflowError) -> ApiError {
    ApiError::new(
        ErrorCode::WorkflowInvalid,
        e.to_string(),
        Retry::AfterFix,
        "fix the workflow file; `worktrain workflow validate <file>` lists every problem with its line and rule",
    )
}

/// Attach the including file to an error that does not name one yet (errors inside a
/// routine already name the routine's file).
fn in_file(e: WorkflowError, location: &str) -> WorkflowError {
    if e.file.is_some() {
        e
    } else {
        e.in_file(location)
    }
}

impl RoutineResolver for Catalog {
    fn resolve(&self, reference: &str, from: &str) -> Result<RoutineSource, String> {
        self.resolve_routine(reference, from)
    }
}

impl Catalog {
    /// Find the routine an include names: a path (relative to the including file, or
    /// inside the bundled library for bundled workflows), or an id looked up in the
    /// project, user and bundled routines, in that order.
    fn resolve_routine(&self, reference: &str, from: &str) -> Result<RoutineSource, String> {
        let is_path = reference.contains('/')
            || [".yaml", ".yml", ".json"]
                .iter()
                .any(|e| reference.ends_with(e));
        if is_path {
            if let Some(bundled) = from.strip_prefix("bundled:") {
                let base = Path::new(bundled).parent().unwrap_or(Path::new(""));
                let wanted = normalize(&base.join(reference));
                return BUNDLED_ROUTINES
                    .iter()
                    .find(|(name, _)| normalize(Path::new(name)) == wanted)
                    .map(|(name, text)| RoutineSource {
                        location: format!("bundled:{name}"),
                        text: (*text).to_owned(),
                    })
                    .ok_or_else(|| format!("no bundled routine at `{}`", wanted.display()));
            }
            let base = Path::new(from).parent().unwrap_or(Path::new("."));
            let path = base.join(reference);
            let text = read_source(&path).map_err(|e| format!("cannot read routine: {e}"))?;
            let location = std::fs::canonicalize(&path)
                .unwrap_or(path)
                .display()
                .to_string();
            return Ok(RoutineSource { location, text });
        }
        for dir in [&self.project_dir, &self.user_dir].into_iter().flatten() {
            for ext in ["yaml", "yml", "json"] {
                let path = dir.join(ROUTINES_DIR).join(format!("{reference}.{ext}"));
                match read_source(&path) {
                    Ok(text) => {
                        return Ok(RoutineSource {
                            location: path.display().to_string(),
                            text,
                        });
                    }
                    Err(e) if e.rule == Rule::File && !path.exists() => {}
                    Err(e) => return Err(format!("cannot read routine: {e}")),
                }
            }
        }
        for (name, text) in BUNDLED_ROUTINES {
            if stem(name) == reference {
                return Ok(RoutineSource {
                    location: format!("bundled:{name}"),
                    text: (*text).to_owned(),
                });
            }
        }
        let mut known: Vec<String> = BUNDLED_ROUTINES.iter().map(|(n, _)| stem(n)).collect();
        for dir in [&self.project_dir, &self.user_dir].into_iter().flatten() {
            known.extend(
                workflow_files(&dir.join(ROUTINES_DIR))
                    .iter()
                    .map(|p| stem(&p.display().to_string())),
            );
        }
        known.sort();
        known.dedup();
        Err(format!(
            "no routine `{reference}` (looked in the project, user and bundled routines; known: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }
}

/// Resolve `.` and `..` lexically (bundled paths are not on disk).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether a workflow argument names a file rather than an id: it contains a path
/// separator or ends in `.yaml`, `.yml` or `.json`. Every surface uses this one rule.
pub fn is_workflow_path(spec: &str) -> bool {
    spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| spec.ends_with(ext))
}

/// Read a workflow file named on a command line or in a request: its canonical location
/// and text (see [`read_source`] for what is refused).
pub fn read_workflow_file(spec: &str) -> Result<(String, String), ApiError> {
    let path = Path::new(spec);
    let text = read_source(path).map_err(|e| {
        if e.rule == Rule::File && !path.exists() {
            ApiError::new(
                ErrorCode::WorkflowNotFound,
                e.to_string(),
                Retry::AfterFix,
                "check the path, or pass a workflow id from `worktrain workflow list`",
            )
        } else {
            invalid(e)
        }
    })?;
    let location = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    Ok((location, text))
}

/// Read a workflow or routine file without ever blocking or reading without bound: it is
/// opened non-blocking (a FIFO cannot hold the thread), must be a regular file by
/// `fstat` of the opened descriptor (no race with a swap), is read up to
/// [`MAX_WORKFLOW_BYTES`] (a file that grows meanwhile is still cut off), and must be
/// UTF-8 (a leading byte order mark is dropped). Errors name the file.
pub fn read_source(path: &Path) -> Result<String, WorkflowError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let fail = |rule: Rule, message: String| WorkflowError {
        file: Some(shown.clone()),
        line: None,
        column: None,
        path: None,
        rule,
        message,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(Rule::File, format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(Rule::File, format!("cannot inspect: {e}")))?;
    if !meta.is_file() {
        let kind = file_kind(&meta);
        return Err(fail(
            Rule::File,
            format!("is {kind}, not a regular file; workflows are read from regular files only"),
        ));
    }
    let cap = MAX_WORKFLOW_BYTES as u64;
    if meta.len() > cap {
        return Err(fail(
            Rule::Limit,
            format!(
                "the file is {} bytes, over the limit of {MAX_WORKFLOW_BYTES} bytes for a workflow file",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(Rule::File, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(fail(
            Rule::Limit,
            format!("the file grew past the limit of {MAX_WORKFLOW_BYTES} bytes while it was read"),
        ));
    }
    decode_text(&bytes)
        .map(str::to_owned)
        .map_err(|e| e.in_file(&shown))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The project a directory belongs to: the nearest ancestor holding `.worktrain` or
/// `.git`, else the directory itself. Its `.worktrain/workflows` is the project source.
pub fn project_root(dir: &Path) -> PathBuf {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.join(".worktrain").is_dir() || d.join(".git").exists() {
            return d.to_path_buf();
        }
        cur = d.parent();
    }
    dir.to_path_buf()
}
