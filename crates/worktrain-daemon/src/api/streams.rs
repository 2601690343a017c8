//! Live views: the session and global SSE streams, and the `await` long-poll.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worktrain_core::ids::Seq;
use worktrain_engine::store_error;

use super::{AppState, MAX_AWAIT_SECS, MAX_PAGE, Route, route};
use crate::errors::{ApiResult, HttpError};
use crate::extract::{JsonBody, QueryArgs, SessionPath, parse_session_id};
use crate::views::{self, AwaitResult};

/// The event log, the SSE streams and the await long-poll.
pub(super) fn routes() -> Vec<Route> {
    vec![
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
    ]
}

/// `GET /api/v1/sessions/{id}/events` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
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

/// Query of the server-sent event streams (one session's events, or all sessions').
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
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

/// `POST /api/v1/await` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AwaitBody {
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
pub(super) enum AwaitMode {
    /// Until every session finished.
    #[default]
    All,
    /// Until one session finished.
    Any,
}

/// `POST /api/v1/await` answer.
#[derive(Debug, Serialize)]
pub(super) struct AwaitAnswer {
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
    // Subscribe before the first read: an append between the read and the wait still
    // wakes it.
    let mut appended = st.sup.engine().store().subscribe();
    let quiet = st.sup.engine().store().quiet_recheck();
    let wanted: std::collections::HashSet<_> = ids.iter().copied().collect();
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
        crate::sse::wait_for_append(
            &mut appended,
            |a| wanted.contains(&a.session_id),
            quiet,
            &stopping,
            Some(deadline),
        )
        .await;
    }
}
