//! Sessions as a resource: dispatch, listing, detail and the event log.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worktrain_core::error::ApiError;
use worktrain_core::ids::WorkflowId;
use worktrain_core::projection::SessionStatus;
use worktrain_core::run::{RunLimits, RunState, Trigger, TriggerKind};
use worktrain_engine::{Catalog, DispatchRequest, StartRequest, store_error};
use worktrain_store::{RunFilter, SessionFilter};

use super::{AppState, DEFAULT_PAGE, MAX_PAGE, Route, route};
use crate::errors::{ApiResult, HttpError};
use crate::extract::{JsonBody, QueryArgs, SessionPath, parse_session_id};
use crate::views::{self, SessionRecord};

/// Dispatch, listing and detail of sessions.
pub(super) fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/api/v1/sessions", post(dispatch)),
        route(Method::GET, "/api/v1/sessions", get(list_sessions)),
        route(Method::GET, "/api/v1/sessions/{id}", get(session_detail)),
        route(Method::GET, "/api/v1/sessions/{id}/diff", get(session_diff)),
    ]
}

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
    /// Context the session starts with (start inputs); empty when not given.
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
    /// Budget overrides of the run (each one left out uses the daemon's default).
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
    /// The outside item the session works on (`github:owner/repo#123`); delivery
    /// reports back to it.
    #[serde(default)]
    pub source: Option<String>,
    /// What happens to the finished work.
    #[serde(default)]
    pub delivery: Option<worktrain_core::run::DeliverySettings>,
}

/// A dispatch answer: the record plus whether it was created now.
#[derive(Debug, Serialize)]
pub struct DispatchAnswer {
    /// False when the idempotency key matched an existing session.
    pub created: bool,
    /// The session's record, its fields flattened into the answer.
    #[serde(flatten)]
    pub record: SessionRecord,
}

fn check_workspace(ws: &str, home: &Path) -> Result<String, HttpError> {
    worktrain_engine::workspace::check_workspace(ws, Some(home))
        .map(|p| p.display().to_string())
        .map_err(HttpError::from)
}

async fn dispatch(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<DispatchBody>,
) -> ApiResult<Response> {
    let answer = dispatch_session(&st, body, None).await?;
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// Dispatch a session as `POST /api/v1/sessions` does (shared with the console's form):
/// validation, idempotency, workflow resolution, queueing. `origin` names what started
/// it (default: the API, or the parent session when one is given).
pub async fn dispatch_session(
    st: &AppState,
    body: DispatchBody,
    origin: Option<TriggerKind>,
) -> ApiResult<DispatchAnswer> {
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
        if let Some(existing) = st.sup.engine().dispatched_session(key).await? {
            let record = views::load_record(&st.sup, existing).await?;
            return Ok(DispatchAnswer {
                created: false,
                record,
            });
        }
    }
    if body.goal.trim().is_empty() {
        return Err(HttpError::invalid(
            "goal is empty",
            "say what the session should achieve",
        ));
    }
    let workspace = body
        .workspace
        .as_deref()
        .map(|ws| check_workspace(ws, st.sup.home()))
        .transpose()?;
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
    let user_dir = st.sup.home().join(worktrain_config::WORKFLOWS_DIR);
    let spec = body.workflow.clone();
    let ws_for_catalog = workspace.clone().map(PathBuf::from);
    let workflow = tokio::task::spawn_blocking(move || {
        Catalog::new(Some(user_dir), ws_for_catalog.as_deref()).resolve(&spec)
    })
    .await
    .map_err(|e| ApiError::internal(format!("workflow resolution task failed: {e}")))??;
    let kind = match (origin, parent.is_some()) {
        (Some(k), _) => k,
        (None, true) => TriggerKind::Parent,
        (None, false) => TriggerKind::Api,
    };
    let mut trigger = Trigger::new(kind, body.trigger.clone());
    if let Some(src) = &body.source {
        trigger.source = Some(worktrain_core::run::SourceRef::parse(src).map_err(|e| {
            ApiError::invalid_input(
                format!("source: {e}"),
                "e.g. `github:owner/repo#123`, `gitlab:group/project#12` or `gitlab:group/project!7`",
            )
        })?);
    }
    if let Some(d) = &body.delivery {
        worktrain_delivery::check(d).map_err(|e| {
            ApiError::invalid_input(format!("delivery: {e}"), "see docs/delivery.md")
        })?;
    }
    trigger.delivery = body.delivery.clone().map(Box::new);
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
    Ok(DispatchAnswer {
        created: d.created,
        record,
    })
}

/// `GET /api/v1/sessions` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only sessions whose workflow status is this (`in_progress`, `blocked`, `parked`,
    /// `complete`).
    pub status: Option<String>,
    /// Run state, or `none` for sessions without a run.
    pub run_state: Option<String>,
    /// Only sessions of this workflow id.
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
pub(super) struct SessionPage {
    /// The sessions, most recently updated first (queued/running/interrupted filters:
    /// queue order).
    pub sessions: Vec<SessionRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
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
    // All filtering happens in the store: one definition of what matches.
    let store = st.sup.engine().store();
    let mut page = store
        .sessions(&SessionFilter {
            status,
            workflow,
            workspace: q.workspace.clone(),
            text: q.q.clone().filter(|t| !t.is_empty()),
            run: run_filter,
            limit: Some(limit + 1),
            offset: Some(start),
            ..SessionFilter::default()
        })
        .await
        .map_err(store_error)?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = more.then(|| format!("o{}", start + limit));
    let queue = store.queue().await.map_err(store_error)?;
    let positions = views::queue_positions(&queue);
    let summaries = page;
    let sessions = summaries
        .into_iter()
        .map(|s| views::record(&st.sup, s, &positions))
        .collect();
    Ok(axum::Json(SessionPage {
        sessions,
        next_cursor: next,
    }))
}

/// `GET /api/v1/sessions/{id}` body: the record's fields, then `nodes` (the step graph)
/// and `lease`. The record's own `nodes` (a count) is left out — one key, one meaning;
/// the graph's length is that count.
#[derive(Debug)]
pub(super) struct SessionDetail {
    /// The session's record, written first.
    pub record: SessionRecord,
    /// Its step graph.
    pub nodes: Vec<worktrain_core::projection::NodeRecord>,
    /// The worker's lease on it, when running.
    pub lease: Option<worktrain_store::Lease>,
}

impl Serialize for SessionDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap as _};
        let record = serde_json::to_value(&self.record).map_err(S::Error::custom)?;
        let serde_json::Value::Object(fields) = record else {
            return Err(S::Error::custom("a session record is a JSON object"));
        };
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in fields.iter().filter(|(k, _)| *k != "nodes") {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("nodes", &self.nodes)?;
        map.serialize_entry("lease", &self.lease)?;
        map.end()
    }
}

/// `GET /api/v1/sessions/{id}/diff` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQueryArgs {
    /// Only this step (its id, or its node as `n3`).
    pub step: Option<String>,
    /// The stat only, without the patches.
    #[serde(default)]
    pub stat: bool,
}

/// The session's changes step by step, from its worktree snapshots (the same answer as
/// `worktrain session diff --json`).
async fn session_diff(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    QueryArgs(q): QueryArgs<DiffQueryArgs>,
) -> ApiResult<axum::Json<Value>> {
    let query = worktrain_engine::diff::DiffQuery {
        step: q.step,
        patch: !q.stat,
    };
    let steps = st
        .sup
        .engine()
        .session_diff(id, st.sup.home(), &query)
        .await?;
    Ok(axum::Json(serde_json::json!({
        "session_id": id,
        "steps": steps,
    })))
}

async fn session_detail(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
) -> ApiResult<axum::Json<SessionDetail>> {
    let store = st.sup.engine().store();
    // The lease before the record, and shown only with a running run: a run that ends
    // between the two reads is then shown ended (its lease dropped), never "running
    // without a lease", which the opposite order answered under load.
    let lease = store
        .leases()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|l| l.session_id == id);
    let record = views::load_record(&st.sup, id).await?;
    let running = record
        .summary
        .run
        .as_ref()
        .is_some_and(|r| r.state == worktrain_core::run::RunState::Running);
    let lease = lease.filter(|_| running);
    let nodes = store.nodes(id).await.map_err(store_error)?;
    Ok(axum::Json(SessionDetail {
        record,
        nodes,
        lease,
    }))
}
