//! The transport-agnostic tool server: `list_tools()` and `call_tool(name, args)` over the
//! engine, in plain Rust and JSON. The stdio adapter (and later the daemon's `/mcp`
//! endpoint) only translate between this and the wire.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::{debug, warn};
use worktrain_core::condition::Condition;
use worktrain_core::contract::ContractName;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::ids::{NodeId, StepId};
use worktrain_core::projection::SessionStatus;
use worktrain_engine::catalog::{CatalogEntry, SourceKind};
use worktrain_engine::{
    Catalog, Engine, Reply, RewindTarget, SessionRef, StartRequest, store_error,
};
use worktrain_store::SessionFilter;

use crate::render;
use crate::tools::{
    CheckInsightsArgs, CheckpointWorkflowArgs, ContinueWorkflowArgs, InspectWorkflowArgs, Intent,
    ListWorkflowsArgs, ResumeSessionArgs, RewindWorkflowArgs, SourceFilter, StartWorkflowArgs,
    ToolDef, definitions, parse_args,
};

/// The outcome of a tool call, independent of any MCP SDK: readable text first, the same
/// facts as JSON, and whether it is an error (MCP `isError`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// Markdown for the model to read.
    pub text: String,
    /// Structured content: the engine's response, or `{code, message, retry, hint}`.
    pub structured: Value,
    /// True for tool errors (reported as results with `isError: true`, not protocol errors).
    pub is_error: bool,
}

impl ToolResult {
    fn ok(text: String, structured: Value) -> Self {
        Self {
            text,
            structured,
            is_error: false,
        }
    }

    /// A tool error in the engine's error shape.
    pub fn error(e: &ApiError) -> Self {
        Self {
            text: render::error(e),
            structured: serde_json::to_value(e).unwrap_or(Value::Null),
            is_error: true,
        }
    }
}

/// A call named a tool this server does not have (a protocol error, not a tool error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tool `{0}`; tools/list names the available tools")]
pub struct UnknownTool(pub String);

/// A future that opens the engine.
pub type EngineFuture = Pin<Box<dyn Future<Output = Result<Arc<Engine>, ApiError>> + Send>>;

/// Opens the engine on first use (the stdio server starts answering before the store is
/// open). A failure is returned to that call and retried on the next one.
pub type EngineOpener = Arc<dyn Fn() -> EngineFuture + Send + Sync>;

/// Where workflows and default workspaces come from.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `$WORKTRAIN_HOME/workflows`.
    pub user_workflows: Option<PathBuf>,
    /// The workspace used when a call names none (the directory the server was started
    /// in, or `--workspace`). Its project root's `.worktrain/workflows` is searched.
    pub default_workspace: Option<PathBuf>,
    /// Session-bound mode: serve only `current_step` and `complete_step` for this session,
    /// holding its tokens so the agent never sees one (external agents run by the daemon).
    pub bound_session: Option<worktrain_core::ids::SessionId>,
}

enum EngineSlot {
    Ready(Arc<Engine>),
    Lazy {
        open: EngineOpener,
        cell: OnceCell<Arc<Engine>>,
    },
}

/// The MCP tools over one engine.
pub struct ToolServer {
    engine: EngineSlot,
    options: ServerOptions,
}

impl std::fmt::Debug for ToolServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolServer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Default and maximum number of `resume_session` candidates.
const RESUME_DEFAULT: u32 = 10;
const RESUME_MAX: u32 = 50;
/// Rows read from the store per `resume_session` call before filtering in memory.
const RESUME_SCAN: u32 = 500;

impl ToolServer {
    /// A server over an open engine (the daemon, tests).
    pub fn new(engine: Arc<Engine>, options: ServerOptions) -> Self {
        Self {
            engine: EngineSlot::Ready(engine),
            options,
        }
    }

    /// A server that opens the engine on first use.
    pub fn lazy(open: EngineOpener, options: ServerOptions) -> Self {
        Self {
            engine: EngineSlot::Lazy {
                open,
                cell: OnceCell::new(),
            },
            options,
        }
    }

    /// Whether this server is bound to one session (serving `current_step` and
    /// `complete_step` only).
    pub fn is_bound(&self) -> bool {
        self.options.bound_session.is_some()
    }

    /// The tools this server serves, in `tools/list` order.
    pub fn list_tools(&self) -> &'static [ToolDef] {
        match self.options.bound_session {
            Some(_) => crate::tools::bound_definitions(),
            None => definitions(),
        }
    }

    /// Instructions for clients (sent with the `initialize` result).
    pub fn instructions(&self) -> &'static str {
        match self.options.bound_session {
            Some(_) => crate::tools::BOUND_INSTRUCTIONS,
            None => crate::tools::INSTRUCTIONS,
        }
    }

    /// Open the engine now, so the first tool call does not pay for it. Errors are logged
    /// and left for the first call to report.
    pub async fn warm_up(&self) {
        if let Err(e) = self.engine().await {
            warn!(code = %e.code, "opening the store failed; tool calls will retry: {}", e.message);
        }
    }

    async fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        match &self.engine {
            EngineSlot::Ready(e) => Ok(e.clone()),
            EngineSlot::Lazy { open, cell } => cell.get_or_try_init(|| open()).await.cloned(),
        }
    }

    /// Call a tool with JSON arguments (`null` means none). Every failure of the call
    /// itself is a [`ToolResult`] with `is_error`; only an unknown tool name is an `Err`.
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<ToolResult, UnknownTool> {
        let started = std::time::Instant::now();
        if let Some(session) = self.options.bound_session {
            let result = match name {
                "current_step" => self.current_step(session, args).await,
                "complete_step" => self.complete_step(session, args).await,
                other => return Err(UnknownTool(other.to_owned())),
            };
            return Ok(result.unwrap_or_else(|e| ToolResult::error(&e)));
        }
        let result = match name {
            "list_workflows" => self.list_workflows(args).await,
            "inspect_workflow" => self.inspect_workflow(args).await,
            "start_workflow" => self.start_workflow(args).await,
            "continue_workflow" => self.continue_workflow(args).await,
            "checkpoint_workflow" => self.checkpoint_workflow(args).await,
            "resume_session" => self.resume_session(args).await,
            "rewind_workflow" => self.rewind_workflow(args).await,
            "check_insights" => self.check_insights(args).await,
            other => return Err(UnknownTool(other.to_owned())),
        };
        let result = result.unwrap_or_else(|e| {
            debug!(tool = name, code = %e.code, "tool error: {}", e.message);
            ToolResult::error(&e)
        });
        debug!(
            tool = name,
            micros = started.elapsed().as_micros() as u64,
            is_error = result.is_error,
            "tool call"
        );
        Ok(result)
    }

    /// The workspace a call means: the given path (made absolute and checked), or the
    /// server's default.
    fn workspace(&self, given: Option<&str>) -> Result<Option<PathBuf>, ApiError> {
        let Some(given) = given.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(self.options.default_workspace.clone());
        };
        let path = PathBuf::from(given);
        let path = match (&self.options.default_workspace, path.is_absolute()) {
            (Some(base), false) => base.join(path),
            _ => path,
        };
        let canonical = std::fs::canonicalize(&path).map_err(|e| {
            ApiError::invalid_input(
                format!("workspace `{given}` cannot be used: {e}"),
                "pass the absolute path of an existing directory (the repository you are working in)",
            )
        })?;
        if !canonical.is_dir() {
            return Err(ApiError::invalid_input(
                format!("workspace `{given}` is not a directory"),
                "pass the absolute path of the directory you are working in",
            ));
        }
        Ok(Some(canonical))
    }

    fn catalog(&self, workspace: Option<&Path>) -> Catalog {
        let project = workspace.map(worktrain_engine::catalog::project_root);
        Catalog::new(self.options.user_workflows.clone(), project.as_deref())
    }

    /// A workflow file path given relative to the workspace is resolved against it.
    fn workflow_spec(spec: &str, workspace: Option<&Path>) -> String {
        let spec = spec.trim();
        let looks_like_path = worktrain_engine::catalog::is_workflow_path(spec);
        match workspace {
            Some(ws) if looks_like_path && Path::new(spec).is_relative() => {
                ws.join(spec).display().to_string()
            }
            _ => spec.to_owned(),
        }
    }

    async fn check_insights(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: CheckInsightsArgs = parse_args("check_insights", args)?;
        let engine = self.engine().await?;
        let store = engine.store().insights().ok_or_else(|| {
            ApiError::new(
                ErrorCode::StoreFailure,
                "this store backend has no trace-analysis storage",
                Retry::Never,
                "use the embedded SQLite store for insights",
            )
        })?;
        let found = worktrain_insights::check::step_insights(
            store,
            args.workflow.trim(),
            args.step.trim(),
            worktrain_insights::proposals::DEFAULT_MIN_SESSIONS,
        )
        .await
        .map_err(|e| match e {
            worktrain_insights::service::InsightsError::Store(s) => store_error(s),
            other => ApiError::internal(other.to_string()),
        })?;
        Ok(ToolResult::ok(
            found.to_text(),
            serde_json::to_value(&found).unwrap_or(Value::Null),
        ))
    }

    async fn list_workflows(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: ListWorkflowsArgs = parse_args("list_workflows", args)?;
        let ws = self.workspace(args.workspace.as_deref())?;
        let catalog = self.catalog(ws.as_deref());
        let entries = tokio::task::spawn_blocking(move || catalog.list())
            .await
            .map_err(|e| ApiError::internal(format!("listing workflows failed: {e}")))?;
        let tag = args.tag.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let chosen: Vec<&CatalogEntry> = entries
            .iter()
            .filter(|e| match args.source {
                SourceFilter::Any => true,
                SourceFilter::Bundled => e.source == SourceKind::Bundled,
                SourceFilter::User => e.source == SourceKind::User,
                SourceFilter::Project => e.source == SourceKind::Project,
            })
            // A file that failed to load has unknown tags: keep it visible, never drop it.
            .filter(|e| {
                e.error.is_some()
                    || tag.is_none_or(|t| e.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
            })
            .collect();
        let failed = chosen.iter().filter(|e| e.error.is_some()).count();
        Ok(ToolResult::ok(
            render::workflows(&chosen),
            json!({ "workflows": chosen, "failed_to_load": failed }),
        ))
    }

    async fn inspect_workflow(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: InspectWorkflowArgs = parse_args("inspect_workflow", args)?;
        let ws = self.workspace(args.workspace.as_deref())?;
        let catalog = self.catalog(ws.as_deref());
        let spec = Self::workflow_spec(&args.workflow, ws.as_deref());
        let resolved = tokio::task::spawn_blocking(move || catalog.resolve(&spec))
            .await
            .map_err(|e| ApiError::internal(format!("resolving the workflow failed: {e}")))??;
        let hash = resolved.pinned.hash.to_hex();
        let compiled = serde_json::to_value(resolved.pinned.workflow.as_ref())
            .map_err(|e| ApiError::internal(format!("compiled workflow not serializable: {e}")))?;
        // Per step: its position and, when it has a contract, an example artifact.
        let mut outline = compiled.clone();
        if let Some(steps) = outline.get_mut("steps").and_then(Value::as_array_mut) {
            for (i, step) in steps.iter_mut().enumerate() {
                let example = step
                    .get("outputContract")
                    .and_then(|c| c.get("contract"))
                    .and_then(|c| serde_json::from_value::<ContractName>(c.clone()).ok())
                    .map(ContractName::example);
                let condition = step
                    .get("runCondition")
                    .and_then(|c| serde_json::from_value::<Condition>(c.clone()).ok())
                    .map(|c| c.to_string());
                if let Value::Object(m) = step {
                    m.insert("position".into(), json!(i + 1));
                    if let Some(ex) = example {
                        m.insert("contractExample".into(), ex);
                    }
                    if let Some(c) = condition {
                        m.insert("runConditionText".into(), Value::String(c));
                    }
                }
            }
        }
        if let Value::Object(m) = &mut outline {
            m.insert("source".into(), Value::String(resolved.source.clone()));
            m.insert("hash".into(), Value::String(hash.clone()));
        }
        Ok(ToolResult::ok(
            render::inspect(&compiled, &resolved.source, &hash),
            outline,
        ))
    }

    async fn start_workflow(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: StartWorkflowArgs = parse_args("start_workflow", args)?;
        let goal = args.goal.trim().to_owned();
        if goal.is_empty() {
            return Err(ApiError::invalid_input(
                "`goal` must not be empty",
                "say in a sentence what the session must achieve",
            ));
        }
        let ws = self.workspace(args.workspace.as_deref())?;
        let catalog = self.catalog(ws.as_deref());
        let spec = Self::workflow_spec(&args.workflow, ws.as_deref());
        let workflow = tokio::task::spawn_blocking(move || catalog.resolve(&spec))
            .await
            .map_err(|e| ApiError::internal(format!("resolving the workflow failed: {e}")))??;
        let engine = self.engine().await?;
        let reply = engine
            .start(StartRequest {
                workflow,
                goal,
                workspace: ws.map(|w| w.display().to_string()),
                context: args.context.unwrap_or_default(),
                mode: worktrain_core::event::SessionMode::Interactive,
                parent: None,
            })
            .await?;
        Ok(step_result(&reply))
    }

    async fn continue_workflow(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: ContinueWorkflowArgs = parse_args("continue_workflow", args)?;
        let engine = self.engine().await?;
        let token = args.token.as_str();
        let reply = match args.intent {
            Intent::Advance => {
                let token = args.token.clone();
                engine.advance(&token, args.submission()).await?
            }
            Intent::Rehydrate => {
                if args.notes.is_some() || args.artifacts.is_some() || args.context.is_some() {
                    return Err(ApiError::invalid_input(
                        "intent \"rehydrate\" submits nothing, but notes, artifacts or context were given",
                        "rehydrate first (only `token`), then submit the output with intent \"advance\" and the fresh advance token",
                    ));
                }
                engine.rehydrate(&SessionRef::parse(token)).await?
            }
        };
        Ok(step_result(&reply))
    }

    async fn checkpoint_workflow(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: CheckpointWorkflowArgs = parse_args("checkpoint_workflow", args)?;
        let engine = self.engine().await?;
        let reply = engine
            .checkpoint(&args.token, &args.notes, args.context.unwrap_or_default())
            .await?;
        Ok(step_result(&reply))
    }

    async fn resume_session(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: ResumeSessionArgs = parse_args("resume_session", args)?;
        let engine = self.engine().await?;
        let limit = args.limit.unwrap_or(RESUME_DEFAULT).clamp(1, RESUME_MAX) as usize;
        // A workspace that no longer exists can still have sessions: then match its text.
        let workspace = args
            .workspace
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|w| {
                self.workspace(Some(w))
                    .ok()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| w.trim_end_matches('/').to_owned())
            });
        let branch = args
            .branch
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let query = args
            .query
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let rows = engine
            .store()
            .sessions(&SessionFilter {
                workspace: workspace.clone(),
                text: query.map(str::to_owned),
                limit: Some(RESUME_SCAN),
                ..SessionFilter::default()
            })
            .await
            .map_err(store_error)?;
        let chosen: Vec<_> = rows
            .into_iter()
            .filter(|s| args.include_complete || s.status != SessionStatus::Complete)
            .filter(|s| branch.is_none_or(|b| s.branch.as_deref() == Some(b)))
            .take(limit)
            .collect();
        let mut replies = Vec::with_capacity(chosen.len());
        for s in &chosen {
            replies.push(engine.rehydrate(&SessionRef::Id(s.session_id)).await?);
        }
        let mut structured = Vec::with_capacity(chosen.len());
        let mut candidates = Vec::with_capacity(chosen.len());
        for (s, reply) in chosen.iter().zip(&replies) {
            let r = &reply.response;
            let step = r
                .step
                .as_ref()
                .map(|st| (st.id.to_string(), st.title.clone()));
            let updated = time(s.updated_at_ms);
            structured.push(json!({
                "session_id": s.session_id,
                "workflow": {"id": s.workflow_id, "version": s.workflow_version},
                "goal": s.goal,
                "status": s.status.as_str(),
                "current_step": r.step.as_ref().map(|st| json!({
                    "id": st.id, "title": st.title, "node": st.node, "attempt": st.attempt,
                })),
                "progress": r.progress,
                "workspace": s.workspace,
                "branch": s.branch,
                "created_at": time(s.created_at_ms),
                "updated_at": updated,
                "resume_token": r.tokens.resume,
            }));
            candidates.push(render::Candidate {
                session_id: s.session_id.to_string(),
                workflow: s.workflow_id.as_str(),
                goal: &s.goal,
                status: s.status.as_str(),
                step,
                updated,
                branch: s.branch.as_deref(),
                workspace: s.workspace.as_deref(),
                resume_token: &r.tokens.resume,
            });
        }
        let mut described = Vec::new();
        if let Some(w) = &workspace {
            described.push(format!("workspace {w}"));
        }
        if let Some(b) = branch {
            described.push(format!("branch {b}"));
        }
        if let Some(q) = query {
            described.push(format!("text \"{q}\""));
        }
        let filter = if described.is_empty() {
            String::new()
        } else {
            format!(" ({})", described.join(", "))
        };
        Ok(ToolResult::ok(
            render::sessions(&candidates, &filter),
            json!({ "sessions": structured }),
        ))
    }

    async fn rewind_workflow(&self, args: Value) -> Result<ToolResult, ApiError> {
        let args: RewindWorkflowArgs = parse_args("rewind_workflow", args)?;
        let engine = self.engine().await?;
        let to = parse_rewind_target(args.to.trim())?;
        let reason = args.reason.filter(|r| !r.trim().is_empty());
        let reply = engine
            .rewind(&SessionRef::parse(&args.session), &to, reason)
            .await?;
        Ok(step_result(&reply))
    }
}

/// A step reply: text first, then the engine's response exactly as recorded.
impl ToolServer {
    async fn current_step(
        &self,
        session: worktrain_core::ids::SessionId,
        args: Value,
    ) -> Result<ToolResult, ApiError> {
        let _: crate::tools::CurrentStepArgs = parse_args("current_step", args)?;
        let engine = self.engine().await?;
        let reply = engine
            .rehydrate(&worktrain_engine::SessionRef::Id(session))
            .await?;
        Ok(bound_result(&reply))
    }

    async fn complete_step(
        &self,
        session: worktrain_core::ids::SessionId,
        args: Value,
    ) -> Result<ToolResult, ApiError> {
        let args: crate::tools::CompleteStepArgs = parse_args("complete_step", args)?;
        let engine = self.engine().await?;
        let current = engine
            .rehydrate(&worktrain_engine::SessionRef::Id(session))
            .await?;
        let Some(token) = current.response.tokens.advance.clone() else {
            return Ok(bound_result(&current));
        };
        let reply = engine.advance(&token, args.submission()).await?;
        Ok(bound_result(&reply))
    }
}

/// A response with every token removed: in session-bound mode the server holds them.
fn bound_result(reply: &Reply) -> ToolResult {
    let mut response = reply.response.clone();
    response.tokens = worktrain_core::response::Tokens {
        advance: None,
        checkpoint: None,
        resume: String::new(),
    };
    response.next = match response.intent {
        worktrain_core::response::Intent::Complete => "The workflow is complete.".into(),
        worktrain_core::response::Intent::WaitForApproval => {
            "The step is parked until an operator approves it; stop here.".into()
        }
        worktrain_core::response::Intent::FixBlockers => {
            "Fix every blocker, then call complete_step again.".into()
        }
        worktrain_core::response::Intent::PerformStep
        | worktrain_core::response::Intent::AskUserThenSubmit => {
            "Do this step, then call complete_step with your notes.".into()
        }
    };
    let mut structured = serde_json::to_value(&response).unwrap_or(Value::Null);
    if let Some(obj) = structured.as_object_mut() {
        obj.remove("tokens");
    }
    ToolResult::ok(render::step(&response, reply.replayed), structured)
}

fn step_result(reply: &Reply) -> ToolResult {
    let structured = serde_json::from_slice::<Value>(&reply.bytes)
        .unwrap_or_else(|_| serde_json::to_value(&reply.response).unwrap_or(Value::Null));
    ToolResult::ok(render::step(&reply.response, reply.replayed), structured)
}

fn parse_rewind_target(s: &str) -> Result<RewindTarget, ApiError> {
    if let Some(n) = s.strip_prefix('n').and_then(|n| n.parse::<u32>().ok()) {
        return Ok(RewindTarget::Node(NodeId(n)));
    }
    StepId::new(s).map(RewindTarget::Step).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRewindTarget,
            e.to_string(),
            Retry::AfterFix,
            "pass a step id (e.g. `do-it`) or a node (e.g. `n2`)",
        )
    })
}

fn time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
