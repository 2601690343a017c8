//! The HTTP API (axum) over a [`Supervisor`]: `/healthz`, `/readyz`, `/metrics`, the
//! JSON API under `/api/v1` and the MCP tools at `/mcp`.
//!
//! Every route except `/healthz` needs the bearer token (see [`crate::auth`]). Every
//! error — including unknown routes, wrong methods, oversized or malformed bodies and
//! timeouts — is a JSON `{code, message, retry, hint}` (see [`crate::errors`]). Ordinary
//! routes time out after `daemon.request_timeout_secs`; the long-poll and streaming
//! routes ([`Route::long`]) do not.
//!
//! The route table [`routes`] is the single source of the router; a test checks it
//! against `spec/openapi.yaml` in both directions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::ids::{Seq, SessionId, WorkflowId};
use worktrain_core::projection::{SessionStatus, SessionSummary};
use worktrain_core::run::{RunLimits, RunState, Trigger, TriggerKind};
use worktrain_engine::{Catalog, DispatchRequest, StartRequest, store_error};
use worktrain_store::SessionFilter;

use crate::auth::{ApiToken, require_token};
use crate::errors::{ApiResult, HttpCode, HttpError};
use crate::extract::{JsonBody, QueryArgs, SessionPath, parse_session_id};
use crate::metrics::{self, StatsCache};
use crate::supervisor::Supervisor;
use crate::views::{self, AwaitResult, SessionRecord};

/// Largest page of sessions or events.
pub const MAX_PAGE: u32 = 1000;
/// Default page size.
pub const DEFAULT_PAGE: u32 = 50;
/// Longest server-side long-poll of `POST /await`, in seconds.
pub const MAX_AWAIT_SECS: u64 = 600;
/// Rows scanned per request when filtering sessions by a final run state.
const RUN_STATE_SCAN_BUDGET: u32 = 10_000;
/// Await polling interval.
const AWAIT_POLL: Duration = Duration::from_millis(200);

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The supervisor (and through it the engine and store).
    pub sup: Arc<Supervisor>,
    /// The API token.
    pub token: Arc<ApiToken>,
    /// Request body limit (bytes).
    pub body_limit: usize,
    /// Request timeout for ordinary routes.
    pub timeout: Duration,
    stats: Arc<StatsCache>,
}

impl AppState {
    /// State for `sup`, authenticating with `token`; limits from the daemon settings.
    pub fn new(sup: Arc<Supervisor>, token: ApiToken) -> Self {
        let body_limit = sup.settings().body_limit_bytes.max(1024);
        let timeout = Duration::from_secs(sup.settings().request_timeout_secs.max(1));
        Self {
            sup,
            token: Arc::new(token),
            body_limit,
            timeout,
            stats: Arc::new(StatsCache::default()),
        }
    }
}

/// One route of the API.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, in axum syntax (`/api/v1/sessions/{id}`).
    pub path: &'static str,
    /// Needs the bearer token.
    pub auth: bool,
    /// Long-poll or stream: exempt from the request timeout.
    pub long: bool,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        auth: true,
        long: false,
        handler,
    }
}

/// Every route (the MCP endpoint is added by [`router`] and listed in [`MCP_PATH`]).
pub fn routes() -> Vec<Route> {
    let mut r = vec![
        Route {
            auth: false,
            ..route(Method::GET, "/healthz", get(healthz))
        },
        route(Method::GET, "/readyz", get(readyz)),
        route(Method::GET, "/metrics", get(metrics_text)),
        route(Method::POST, "/api/v1/sessions", post(dispatch)),
        route(Method::GET, "/api/v1/sessions", get(list_sessions)),
        route(Method::GET, "/api/v1/sessions/{id}", get(session_detail)),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/events",
            get(session_events),
        ),
        Route {
            long: true,
            ..route(
                Method::GET,
                "/api/v1/sessions/{id}/events/stream",
                get(session_stream),
            )
        },
        Route {
            long: true,
            ..route(Method::GET, "/api/v1/events/stream", get(global_stream))
        },
        Route {
            long: true,
            ..route(Method::POST, "/api/v1/await", post(await_sessions))
        },
        route(Method::POST, "/api/v1/sessions/{id}/cancel", post(cancel)),
        route(Method::POST, "/api/v1/sessions/{id}/steer", post(steer)),
        route(Method::POST, "/api/v1/sessions/{id}/approve", post(approve)),
        route(Method::POST, "/api/v1/sessions/{id}/reject", post(reject)),
        route(Method::POST, "/api/v1/sessions/{id}/resume", post(resume)),
        route(Method::POST, "/api/v1/sessions/{id}/retry", post(retry)),
        route(Method::POST, "/api/v1/kill-all", post(kill_all)),
    ];
    r.sort_by(|a, b| a.path.cmp(b.path));
    r
}

/// Where the MCP tools are served (streamable HTTP: POST, GET and DELETE).
pub const MCP_PATH: &str = "/mcp";

/// The router: every route of [`routes`], the MCP endpoint, JSON fallbacks for unknown
/// routes and methods, the body limit, request metrics, and auth/timeouts per route.
pub fn router(state: AppState) -> Router {
    let mut app: Router<AppState> = Router::new();
    for r in routes() {
        let mut handler = r.handler;
        if !r.long {
            handler = handler.layer(middleware::from_fn_with_state(state.clone(), with_timeout));
        }
        if r.auth {
            handler = handler.layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
        app = app.route(r.path, handler);
    }
    if let Some(mcp) = crate::mcp::service(&state) {
        app = app.route(
            MCP_PATH,
            mcp.layer(middleware::from_fn_with_state(state.clone(), require_token)),
        );
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn(metrics::track_requests))
        .with_state(state)
}

async fn not_found(uri: Uri) -> HttpError {
    HttpError::route_not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::method_not_allowed(method.as_str(), uri.path())
}

async fn with_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => HttpError::http(
            StatusCode::SERVICE_UNAVAILABLE,
            HttpCode::RequestTimeout,
            format!("the request took longer than {} s", limit.as_secs()),
            Retry::Same,
            "retry; if it keeps happening, check the daemon's logs (or raise daemon.request_timeout_secs)",
        )
        .into_response(),
    }
}

// ----- probes -----

async fn healthz() -> Response {
    axum::Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Accepting work.
    pub ready: bool,
    /// This daemon's worker id.
    pub worker: String,
    /// Runs waiting in the queue.
    pub queue_depth: usize,
    /// Runs interrupted, waiting for recovery.
    pub interrupted: usize,
    /// Sessions running in this daemon.
    pub running: usize,
    /// Their ids.
    pub running_sessions: Vec<SessionId>,
}

async fn readyz(State(st): State<AppState>) -> ApiResult<Response> {
    let queue = st.sup.engine().store().queue().await.map_err(store_error)?;
    let running = st.sup.running();
    let ready = !st.sup.stopping().is_cancelled();
    let body = Readiness {
        ready,
        worker: st.sup.worker().to_owned(),
        queue_depth: queue.iter().filter(|r| r.state == RunState::Queued).count(),
        interrupted: queue
            .iter()
            .filter(|r| r.state == RunState::Interrupted)
            .count(),
        running: running.len(),
        running_sessions: running.iter().map(|l| l.session_id).collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, axum::Json(body)).into_response())
}

async fn metrics_text(State(st): State<AppState>) -> ApiResult<Response> {
    let stats = st.stats.get(&st.sup).await?;
    let queue = st.sup.engine().store().queue().await.map_err(store_error)?;
    let depth = queue.iter().filter(|r| r.state == RunState::Queued).count();
    let interrupted = queue
        .iter()
        .filter(|r| r.state == RunState::Interrupted)
        .count();
    let text = metrics::render(&st.sup, &stats, depth, interrupted);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

// ----- dispatch -----

/// `POST /api/v1/sessions` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchBody {
    /// Workflow id, or an absolute path to a workflow file.
    pub workflow: String,
    /// What the session should achieve.
    pub goal: String,
    /// Absolute path of the workspace (a git repository gets a worktree per session).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Initial context.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// The session that spawned this one.
    #[serde(default)]
    pub parent: Option<String>,
    /// Agent profile (default: `daemon.default_agent`).
    #[serde(default)]
    pub agent: Option<String>,
    /// A label for what started it (per-trigger caps apply to it).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Budgets.
    #[serde(default)]
    pub limits: RunLimits,
    /// Queue priority (higher first).
    #[serde(default)]
    pub priority: i32,
    /// Review-style run: a detached worktree.
    #[serde(default)]
    pub readonly: bool,
    /// Base ref of the worktree (default: `daemon.worktrees.base_branch`).
    #[serde(default)]
    pub base: Option<String>,
    /// Idempotency key: the same key returns the existing session.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A dispatch answer: the record plus whether it was created now.
#[derive(Debug, Serialize)]
pub struct DispatchAnswer {
    /// False when the idempotency key matched an existing session.
    pub created: bool,
    /// The session.
    #[serde(flatten)]
    pub record: SessionRecord,
}

fn check_workspace(ws: &str) -> Result<String, HttpError> {
    let p = Path::new(ws);
    if !p.is_absolute() {
        return Err(HttpError::invalid(
            format!("workspace `{ws}` is not an absolute path"),
            "send the absolute path of the workspace directory",
        ));
    }
    let canon = std::fs::canonicalize(p).map_err(|e| {
        HttpError::invalid(
            format!("workspace `{ws}`: {e}"),
            "the workspace must be an existing directory on the daemon's machine",
        )
    })?;
    if !canon.is_dir() {
        return Err(HttpError::invalid(
            format!("workspace `{ws}` is not a directory"),
            "the workspace must be an existing directory on the daemon's machine",
        ));
    }
    Ok(canon.display().to_string())
}

async fn dispatch(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<DispatchBody>,
) -> ApiResult<Response> {
    if st.sup.stopping().is_cancelled() {
        return Err(HttpError::shutting_down());
    }
    if let Some(key) = &body.idempotency_key {
        if key.trim().is_empty() || key.len() > 256 {
            return Err(HttpError::invalid(
                "idempotency_key must be 1 to 256 characters",
                "derive it from what identifies the work (e.g. `review-pr-42`)",
            ));
        }
        if let Some(existing) = st
            .sup
            .engine()
            .store()
            .session_by_dispatch_key(key)
            .await
            .map_err(store_error)?
        {
            let record = views::load_record(&st.sup, existing).await?;
            return Ok((
                StatusCode::OK,
                axum::Json(DispatchAnswer {
                    created: false,
                    record,
                }),
            )
                .into_response());
        }
    }
    if body.goal.trim().is_empty() {
        return Err(HttpError::invalid(
            "goal is empty",
            "say what the session should achieve",
        ));
    }
    let workspace = body.workspace.as_deref().map(check_workspace).transpose()?;
    if worktrain_engine::catalog::is_workflow_path(&body.workflow)
        && !Path::new(&body.workflow).is_absolute()
    {
        return Err(HttpError::invalid(
            format!("workflow path `{}` is relative", body.workflow),
            "send a workflow id, or an absolute path on the daemon's machine (`worktrain spawn` resolves relative paths for you)",
        ));
    }
    let agent = body
        .agent
        .clone()
        .unwrap_or_else(|| st.sup.settings().default_agent.clone());
    let known = st.sup.agent_names();
    if !known.contains(&agent) {
        return Err(HttpError::invalid(
            format!("no agent profile `{agent}` (known: {})", known.join(", ")),
            "name a profile from `agents:` in the daemon's config.yaml",
        ));
    }
    let parent = match &body.parent {
        Some(p) => {
            let id = parse_session_id(p)?;
            st.sup.engine().session(id).await?;
            Some(id)
        }
        None => None,
    };
    let user_dir = st.sup.home().join(worktrain_engine::home::WORKFLOWS_DIR);
    let spec = body.workflow.clone();
    let ws_for_catalog = workspace.clone().map(PathBuf::from);
    let workflow = tokio::task::spawn_blocking(move || {
        Catalog::new(Some(user_dir), ws_for_catalog.as_deref()).resolve(&spec)
    })
    .await
    .map_err(|e| ApiError::internal(format!("workflow resolution task failed: {e}")))??;
    let trigger = Trigger {
        kind: if parent.is_some() {
            TriggerKind::Parent
        } else {
            TriggerKind::Api
        },
        id: body.trigger.clone(),
    };
    let d = st
        .sup
        .dispatch(DispatchRequest {
            start: StartRequest {
                workflow,
                goal: body.goal,
                workspace,
                context: body.context,
                mode: worktrain_core::event::SessionMode::Autonomous,
                parent,
            },
            agent,
            trigger,
            limits: body.limits,
            priority: body.priority,
            readonly: body.readonly,
            base: body.base,
            idempotency_key: body.idempotency_key,
        })
        .await?;
    let record = views::load_record(&st.sup, d.session_id).await?;
    let status = if d.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(DispatchAnswer {
            created: d.created,
            record,
        }),
    )
        .into_response())
}

// ----- listing -----

/// `GET /api/v1/sessions` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Workflow status.
    pub status: Option<String>,
    /// Run state, or `none` for sessions without a run.
    pub run_state: Option<String>,
    /// Workflow id.
    pub workflow: Option<String>,
    /// Workspace directory (it and everything inside it).
    pub workspace: Option<String>,
    /// Text in the goal, workflow id or branch.
    pub q: Option<String>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of sessions.
#[derive(Debug, Serialize)]
pub struct SessionPage {
    /// The sessions, most recently updated first (queued/running/interrupted filters:
    /// queue order).
    pub sessions: Vec<SessionRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

enum RunFilter {
    State(RunState),
    NoRun,
}

fn parse_cursor(c: &str) -> Result<u32, HttpError> {
    c.strip_prefix('o')
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            HttpError::invalid(
                format!("invalid cursor `{c}`"),
                "pass `next_cursor` from the previous page unchanged",
            )
        })
}

fn matches_filter(s: &SessionSummary, f: &SessionFilter) -> bool {
    if f.status.is_some_and(|st| st != s.status) {
        return false;
    }
    if f.workflow.as_ref().is_some_and(|w| *w != s.workflow_id) {
        return false;
    }
    if let Some(ws) = &f.workspace {
        let ws = ws.trim_end_matches('/');
        let ok = s
            .workspace
            .as_deref()
            .is_some_and(|w| w == ws || w.starts_with(&format!("{ws}/")));
        if !ok {
            return false;
        }
    }
    if let Some(t) = &f.text {
        let t = t.to_lowercase();
        let hit = s.goal.to_lowercase().contains(&t)
            || s.workflow_id.as_str().to_lowercase().contains(&t)
            || s.branch
                .as_deref()
                .is_some_and(|b| b.to_lowercase().contains(&t));
        if !hit {
            return false;
        }
    }
    true
}

async fn list_sessions(
    State(st): State<AppState>,
    QueryArgs(q): QueryArgs<ListQuery>,
) -> ApiResult<axum::Json<SessionPage>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(HttpError::invalid(
            format!("limit must be 1..={MAX_PAGE}"),
            "ask for a smaller page",
        ));
    }
    let start = match (&q.cursor, q.offset) {
        (Some(_), Some(_)) => {
            return Err(HttpError::invalid(
                "pass either cursor or offset, not both",
                "use next_cursor to page",
            ));
        }
        (Some(c), None) => parse_cursor(c)?,
        (None, o) => o.unwrap_or(0),
    };
    let status = q
        .status
        .as_deref()
        .map(|s| {
            SessionStatus::parse(s).ok_or_else(|| {
                HttpError::invalid(
                    format!("unknown status `{s}`"),
                    "use in_progress, blocked, parked or complete",
                )
            })
        })
        .transpose()?;
    let run_filter = q
        .run_state
        .as_deref()
        .map(|s| match (s, RunState::parse(s)) {
            ("none", _) => Ok(RunFilter::NoRun),
            (_, Some(r)) => Ok(RunFilter::State(r)),
            _ => Err(HttpError::invalid(
                format!("unknown run_state `{s}`"),
                "use queued, running, parked, interrupted, completed, failed, cancelled or none",
            )),
        })
        .transpose()?;
    let workflow = q
        .workflow
        .as_deref()
        .map(|w| {
            WorkflowId::new(w).map_err(|e| HttpError::invalid(e.to_string(), "pass a workflow id"))
        })
        .transpose()?;
    let filter = SessionFilter {
        status,
        workflow,
        workspace: q.workspace.clone(),
        text: q.q.clone().filter(|t| !t.is_empty()),
        limit: None,
        offset: None,
    };
    let store = st.sup.engine().store();
    let queue = store.queue().await.map_err(store_error)?;
    let positions = views::queue_positions(&queue);
    let (summaries, next) = match run_filter {
        // Active runs are all in the (small) queue table: exact, in claim order.
        Some(RunFilter::State(
            rs @ (RunState::Queued | RunState::Running | RunState::Interrupted),
        )) => {
            let mut all = Vec::new();
            for row in queue.iter().filter(|r| r.state == rs) {
                if let Some(s) = store.session(row.session_id).await.map_err(store_error)?
                    && matches_filter(&s, &filter)
                {
                    all.push(s);
                }
            }
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(all.len());
            let to = from.saturating_add(limit as usize).min(all.len());
            let next = (to < all.len()).then(|| format!("o{to}"));
            (all[from..to].to_vec(), next)
        }
        // Other run states: scan the projection in pages and filter.
        Some(
            rf @ (RunFilter::NoRun
            | RunFilter::State(
                RunState::Parked | RunState::Completed | RunState::Failed | RunState::Cancelled,
            )),
        ) => {
            let want = |s: &SessionSummary| match (&rf, &s.run) {
                (RunFilter::NoRun, None) => true,
                (RunFilter::State(x), Some(r)) => r.state == *x,
                _ => false,
            };
            let mut out = Vec::new();
            let mut offset = start;
            let mut scanned = 0u32;
            let mut exhausted = false;
            while out.len() < limit as usize && scanned < RUN_STATE_SCAN_BUDGET {
                let page = store
                    .sessions(&SessionFilter {
                        limit: Some(500),
                        offset: Some(offset),
                        ..filter.clone()
                    })
                    .await
                    .map_err(store_error)?;
                let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
                for s in page {
                    offset += 1;
                    scanned += 1;
                    if want(&s) {
                        out.push(s);
                        if out.len() == limit as usize {
                            break;
                        }
                    }
                }
                if n < 500 && out.len() < limit as usize {
                    exhausted = true;
                    break;
                }
            }
            let next = (!exhausted).then(|| format!("o{offset}"));
            (out, next)
        }
        None => {
            let mut page = store
                .sessions(&SessionFilter {
                    limit: Some(limit + 1),
                    offset: Some(start),
                    ..filter.clone()
                })
                .await
                .map_err(store_error)?;
            let more = page.len() > limit as usize;
            page.truncate(limit as usize);
            let next = more.then(|| format!("o{}", start + limit));
            (page, next)
        }
    };
    let sessions = summaries
        .into_iter()
        .map(|s| views::record(&st.sup, s, &positions))
        .collect();
    Ok(axum::Json(SessionPage {
        sessions,
        next_cursor: next,
    }))
}

/// `GET /api/v1/sessions/{id}` body.
#[derive(Debug, Serialize)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub record: SessionRecord,
    /// Its step graph.
    pub nodes: Vec<worktrain_core::projection::NodeRecord>,
    /// The worker's lease on it, when running.
    pub lease: Option<worktrain_store::Lease>,
}

async fn session_detail(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
) -> ApiResult<axum::Json<SessionDetail>> {
    let record = views::load_record(&st.sup, id).await?;
    let store = st.sup.engine().store();
    let nodes = store.nodes(id).await.map_err(store_error)?;
    let lease = store
        .leases()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|l| l.session_id == id);
    Ok(axum::Json(SessionDetail {
        record,
        nodes,
        lease,
    }))
}

// ----- events -----

/// `GET /api/v1/sessions/{id}/events` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with `seq > after`.
    pub after: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

async fn session_events(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    QueryArgs(q): QueryArgs<EventsQuery>,
) -> ApiResult<axum::Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(HttpError::invalid(
            format!("limit must be 1..={MAX_PAGE}"),
            "ask for a smaller page",
        ));
    }
    let summary = st.sup.engine().session(id).await?;
    let after = q.after.unwrap_or(0);
    let events = st
        .sup
        .engine()
        .store()
        .events(id, Seq(after), limit)
        .await
        .map_err(store_error)?;
    let next_after = events.last().map(|e| e.seq.0).unwrap_or(after);
    Ok(axum::Json(json!({
        "events": events,
        "next_after": next_after,
        "more": next_after < summary.last_seq.0,
        "last_seq": summary.last_seq,
    })))
}

/// Stream query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this `seq` (session stream) or `position` (global stream);
    /// `Last-Event-ID` takes precedence.
    pub after: Option<u64>,
    /// Keep the session stream open after the session finished.
    #[serde(default)]
    pub follow: bool,
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                HttpError::invalid(
                    "Last-Event-ID is not a number",
                    "send the id of the last event received",
                )
            }),
    }
}

async fn session_stream(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    headers: HeaderMap,
    QueryArgs(q): QueryArgs<StreamQuery>,
) -> ApiResult<Response> {
    st.sup.engine().session(id).await?;
    let after = last_event_id(&headers)?.or(q.after).unwrap_or(0);
    let stream = crate::sse::session_stream(st.sup.clone(), id, Seq(after), q.follow);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn global_stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    QueryArgs(q): QueryArgs<StreamQuery>,
) -> ApiResult<Response> {
    let after = last_event_id(&headers)?.or(q.after).unwrap_or(0);
    let stream = crate::sse::global_stream(st.sup.clone(), after);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

// ----- await -----

/// `POST /api/v1/await` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitBody {
    /// Sessions to wait for.
    pub sessions: Vec<String>,
    /// `all` (default) or `any`.
    #[serde(default)]
    pub mode: AwaitMode,
    /// Longest wait, in seconds (default 30, at most 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Wait for every session or for the first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AwaitMode {
    /// Until every session finished.
    #[default]
    All,
    /// Until one session finished.
    Any,
}

/// `POST /api/v1/await` answer.
#[derive(Debug, Serialize)]
pub struct AwaitAnswer {
    /// The condition holds.
    pub done: bool,
    /// The wait ended by its timeout.
    pub timed_out: bool,
    /// One result per session, in request order.
    pub results: Vec<AwaitResult>,
}

async fn await_sessions(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<AwaitBody>,
) -> ApiResult<axum::Json<AwaitAnswer>> {
    if body.sessions.is_empty() {
        return Err(HttpError::invalid(
            "sessions is empty",
            "name at least one session id",
        ));
    }
    if body.sessions.len() > 1000 {
        return Err(HttpError::invalid(
            "at most 1000 sessions per await",
            "await them in groups",
        ));
    }
    let ids = body
        .sessions
        .iter()
        .map(|s| parse_session_id(s))
        .collect::<Result<Vec<_>, _>>()?;
    let secs = body.timeout_secs.unwrap_or(30).min(MAX_AWAIT_SECS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let stopping = st.sup.stopping();
    loop {
        let mut summaries = Vec::with_capacity(ids.len());
        for id in &ids {
            summaries.push(st.sup.engine().session(*id).await?);
        }
        let finished = summaries.iter().filter(|s| views::is_finished(s)).count();
        let done = match body.mode {
            AwaitMode::All => finished == summaries.len(),
            AwaitMode::Any => finished > 0,
        };
        let now = tokio::time::Instant::now();
        if done || now >= deadline || stopping.is_cancelled() {
            if !done && stopping.is_cancelled() {
                return Err(HttpError::shutting_down());
            }
            let mut results = Vec::with_capacity(summaries.len());
            for s in summaries {
                results.push(views::await_result(&st.sup, s).await?);
            }
            return Ok(axum::Json(AwaitAnswer {
                done,
                timed_out: !done,
                results,
            }));
        }
        tokio::select! {
            () = tokio::time::sleep(AWAIT_POLL.min(deadline - now)) => {}
            () = stopping.cancelled() => {}
        }
    }
}

// ----- operator actions -----

/// Body with an optional note.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// The note.
    #[serde(default)]
    pub note: Option<String>,
}

/// `steer` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteerBody {
    /// The message for the agent's next turn.
    pub message: String,
}

/// An empty body (`{}` or nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

async fn record_of(st: &AppState, s: SessionSummary) -> ApiResult<axum::Json<SessionRecord>> {
    let queue = st.sup.engine().store().queue().await.map_err(store_error)?;
    Ok(axum::Json(views::record(
        &st.sup,
        s,
        &views::queue_positions(&queue),
    )))
}

async fn cancel(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(b): JsonBody<NoteBody>,
) -> ApiResult<axum::Json<SessionRecord>> {
    let s = st.sup.cancel(id, b.note).await?;
    record_of(&st, s).await
}

async fn steer(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(b): JsonBody<SteerBody>,
) -> ApiResult<axum::Json<SessionRecord>> {
    let s = st.sup.steer(id, b.message).await?;
    record_of(&st, s).await
}

/// Approve/reject answer.
#[derive(Debug, Serialize)]
pub struct GateAnswer {
    /// `approved` or `rejected`.
    pub outcome: worktrain_core::response::Outcome,
    /// The session after the decision (its run requeued when it had one).
    pub session: SessionRecord,
}

async fn approve(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(b): JsonBody<NoteBody>,
) -> ApiResult<axum::Json<GateAnswer>> {
    let reply = metrics::timed_advance(st.sup.approve(id, b.note)).await?;
    let session = views::load_record(&st.sup, id).await?;
    Ok(axum::Json(GateAnswer {
        outcome: reply.response.outcome,
        session,
    }))
}

async fn reject(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(b): JsonBody<NoteBody>,
) -> ApiResult<axum::Json<GateAnswer>> {
    let note = b.note.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        HttpError::from(ApiError::new(
            ErrorCode::InvalidInput,
            "a rejection needs a note",
            Retry::AfterFix,
            "say what the agent should change: {\"note\": \"…\"}",
        ))
    })?;
    let reply = metrics::timed_advance(st.sup.reject(id, note)).await?;
    let session = views::load_record(&st.sup, id).await?;
    Ok(axum::Json(GateAnswer {
        outcome: reply.response.outcome,
        session,
    }))
}

async fn resume(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult<axum::Json<SessionRecord>> {
    let s = st.sup.resume(id).await?;
    record_of(&st, s).await
}

async fn retry(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult<axum::Json<SessionRecord>> {
    let s = st.sup.retry(id).await?;
    record_of(&st, s).await
}

async fn kill_all(
    State(st): State<AppState>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult<axum::Json<Value>> {
    let stopped = st.sup.kill_all().await?;
    Ok(axum::Json(json!({"stopped": stopped})))
}
