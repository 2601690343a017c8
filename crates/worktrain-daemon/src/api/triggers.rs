//! Triggers: the loaded index and its last load error, the decision log per trigger,
//! dry runs (`test`) and manual firing (`fire`).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_store::triggers::{Decision, DecisionFilter};
use worktrain_triggers::decide::Verdict;
use worktrain_triggers::runtime::{FireError, LoadStatus, Runtime, dry_run};

use super::{AppState, Route, route};
use crate::errors::{ApiResult, HttpCode, HttpError};
use crate::extract::{JsonBody, QueryArgs};

/// The trigger routes.
pub(super) fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/api/v1/triggers", get(list)),
        route(
            Method::GET,
            "/api/v1/triggers/{id}/decisions",
            get(decisions),
        ),
        route(Method::POST, "/api/v1/triggers/{id}/test", post(test)),
        route(Method::POST, "/api/v1/triggers/{id}/fire", post(fire)),
    ]
}

fn runtime(st: &AppState) -> Result<std::sync::Arc<Runtime>, HttpError> {
    st.triggers.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "triggers are not running in this daemon",
            Retry::Never,
            "start the daemon with `worktrain daemon`",
        )
        .into()
    })
}

fn unknown(id: &str) -> HttpError {
    HttpError::http(
        StatusCode::NOT_FOUND,
        HttpCode::TriggerNotFound,
        format!("no trigger `{id}` in triggers.yml"),
        Retry::AfterFix,
        "`worktrain trigger list` shows the loaded triggers",
    )
}

/// One trigger in the list.
#[derive(Debug, Serialize)]
pub struct TriggerSummary {
    /// The trigger's id, as in `triggers.yml`.
    pub id: String,
    /// Provider (`github_webhook`, `schedule`, …).
    pub provider: &'static str,
    /// Whether the trigger is enabled in `triggers.yml`.
    pub enabled: bool,
    /// Id of the workflow the trigger starts.
    pub workflow: String,
    /// The trigger's description from `triggers.yml`, when it has one.
    pub description: Option<String>,
    /// `/webhooks/<id>` for webhook triggers.
    pub webhook_path: Option<String>,
    /// Decisions by kind.
    pub decisions: serde_json::Map<String, Value>,
}

/// `GET /api/v1/triggers`.
#[derive(Debug, Serialize)]
pub struct TriggerList {
    /// How the active index was loaded, and the last load error.
    pub status: LoadStatus,
    /// The active triggers.
    pub triggers: Vec<TriggerSummary>,
}

async fn list(State(st): State<AppState>) -> ApiResult<Response> {
    let rt = runtime(&st)?;
    let index = rt.index();
    let mut triggers = Vec::new();
    for t in index.triggers.values() {
        let counts = rt.store().decision_counts(&t.id).await.unwrap_or_default();
        triggers.push(TriggerSummary {
            id: t.id.clone(),
            provider: t.source.provider(),
            enabled: t.enabled,
            workflow: t.workflow.clone(),
            description: t.description.clone(),
            webhook_path: t.source.is_webhook().then(|| format!("/webhooks/{}", t.id)),
            decisions: counts.into_iter().map(|(k, n)| (k, json!(n))).collect(),
        });
    }
    Ok(axum::Json(TriggerList {
        status: rt.status(),
        triggers,
    })
    .into_response())
}

/// Query of the decision log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Decisions older than this id.
    pub before: Option<i64>,
    /// Only this kind.
    pub decision: Option<String>,
    /// Only this source item.
    pub source: Option<String>,
}

/// A page of decisions.
#[derive(Debug, Serialize)]
pub struct DecisionPage {
    /// The decisions of this page, newest first.
    pub decisions: Vec<Decision>,
    /// Pass as `before` for the next page.
    pub next_before: Option<i64>,
}

async fn decisions(
    State(st): State<AppState>,
    Path(id): Path<String>,
    QueryArgs(q): QueryArgs<DecisionQuery>,
) -> ApiResult<Response> {
    let rt = runtime(&st)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let decisions = rt
        .log(&DecisionFilter {
            trigger_id: Some(id),
            source: q.source,
            decision: q.decision,
            before: q.before,
            limit: Some(limit),
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreFailure, e, Retry::Same, "retry"))?;
    let next_before = (decisions.len() == limit as usize)
        .then(|| decisions.last().map(|d| d.id))
        .flatten();
    Ok(axum::Json(DecisionPage {
        decisions,
        next_before,
    })
    .into_response())
}

/// Body of `test` and `fire`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The event name (`issues`, `Merge Request Hook`, …).
    pub event: Option<String>,
    /// The event's payload (JSON), as the forge would send it; `test` uses an empty object when it is left out.
    pub payload: Option<Value>,
}

fn fire_error(e: FireError) -> HttpError {
    match e {
        FireError::NotFound => unknown("?"),
        FireError::NeedsPayload | FireError::BadPayload(_) => HttpError::invalid(
            e.to_string(),
            "see docs/triggers.md (worktrain trigger test/fire)",
        ),
        FireError::Store(m) => {
            ApiError::new(ErrorCode::StoreFailure, m, Retry::Same, "retry").into()
        }
    }
}

async fn test(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EventBody>,
) -> ApiResult<Response> {
    let rt = runtime(&st)?;
    let Some(t) = rt.index().get(&id).cloned() else {
        return Err(unknown(&id));
    };
    let payload = body.payload.unwrap_or_else(|| json!({}));
    let (ev, verdict) = dry_run(&t, body.event.as_deref(), payload).map_err(fire_error)?;
    Ok(axum::Json(verdict_json(
        &ev.key(),
        ev.source.as_ref().map(|s| s.to_string()),
        &verdict,
    ))
    .into_response())
}

/// The JSON shape of a dry-run verdict (shared with `worktrain trigger test` offline).
pub fn verdict_json(event: &str, source: Option<String>, v: &Verdict) -> Value {
    match v {
        Verdict::Dispatch(p) => json!({
            "decision": "dispatched", "event": event, "source": source,
            "reason": "would dispatch a session", "plan": p,
        }),
        Verdict::Retry { source, author } => json!({
            "decision": "retry", "event": event, "source": source,
            "reason": format!("`retry` from {author}"),
        }),
        Verdict::Ping => json!({"decision": "ping", "event": event, "reason": "ping answered"}),
        Verdict::Stop {
            kind,
            reason,
            detail,
        } => json!({
            "decision": kind.as_str(), "event": event, "source": source,
            "reason": reason, "detail": detail,
        }),
    }
}

async fn fire(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EventBody>,
) -> ApiResult<Response> {
    let rt = runtime(&st)?;
    match rt.fire(&id, body.event.as_deref(), body.payload).await {
        Ok(d) => Ok(axum::Json(d).into_response()),
        Err(FireError::NotFound) => Err(unknown(&id)),
        Err(e) => Err(fire_error(e)),
    }
}
