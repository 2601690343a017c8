//! Operator actions on a session's run: cancel, steer, approve, reject, resume, retry, kill-all.

use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::projection::SessionSummary;
use worktrain_engine::store_error;

use super::{AppState, Route, route};
use crate::errors::{ApiResult, HttpError};
use crate::extract::{JsonBody, SessionPath};
use crate::metrics;
use crate::views::{self, SessionRecord};

/// The operator actions.
pub(super) fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/api/v1/sessions/{id}/cancel", post(cancel)),
        route(Method::POST, "/api/v1/sessions/{id}/steer", post(steer)),
        route(Method::POST, "/api/v1/sessions/{id}/approve", post(approve)),
        route(Method::POST, "/api/v1/sessions/{id}/reject", post(reject)),
        route(Method::POST, "/api/v1/sessions/{id}/resume", post(resume)),
        route(Method::POST, "/api/v1/sessions/{id}/retry", post(retry)),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/retry-delivery",
            post(retry_delivery),
        ),
        route(Method::POST, "/api/v1/kill-all", post(kill_all)),
    ]
}

/// Body with an optional note.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoteBody {
    /// The operator's note (reason, instructions), recorded with the action; optional.
    #[serde(default)]
    pub note: Option<String>,
}

/// `steer` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SteerBody {
    /// The message for the agent's next turn.
    pub message: String,
}

/// An empty body (`{}` or nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EmptyBody {}

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
pub(super) struct GateAnswer {
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

async fn retry_delivery(
    State(st): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult<axum::Json<SessionRecord>> {
    let s = st.sup.retry_delivery(id).await?;
    record_of(&st, s).await
}

async fn kill_all(
    State(st): State<AppState>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult<axum::Json<Value>> {
    let stopped = st.sup.kill_all().await?;
    Ok(axum::Json(json!({"stopped": stopped})))
}
