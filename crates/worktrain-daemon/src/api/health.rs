//! Probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::Method;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use worktrain_core::ids::SessionId;
use worktrain_core::run::RunState;
use worktrain_engine::store_error;

use super::{AppState, Route, route};
use crate::errors::ApiResult;
use crate::metrics;
use crate::profiles::ProfileStatus;

/// The probe and metrics routes.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            auth: false,
            ..route(Method::GET, "/healthz", get(healthz))
        },
        route(Method::GET, "/readyz", get(readyz)),
        route(Method::GET, "/metrics", get(metrics_text)),
        route(Method::POST, "/api/v1/reload", post(reload)),
    ]
}

async fn healthz() -> Response {
    axum::Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// `/readyz` body.
#[derive(Debug, Serialize)]
pub(super) struct Readiness {
    /// Whether this daemon accepts work now: it is not stopping, and no profile requires a sandbox that is unavailable.
    pub ready: bool,
    /// This daemon's worker id.
    pub worker: String,
    /// Runs waiting in the queue.
    pub queue_depth: usize,
    /// Runs interrupted, waiting for recovery.
    pub interrupted: usize,
    /// Sessions running in this daemon.
    pub running: usize,
    /// Ids of the sessions counted in `running`.
    pub running_sessions: Vec<SessionId>,
    /// The most runs this daemon held at once since it started.
    pub running_peak: u64,
    /// Whether agent commands can run sandboxed, and why not. Not ready while a profile
    /// requires the sandbox and it is unavailable (those runs would fail at once).
    pub sandbox: worktrain_agent::SandboxSupport,
    /// The triggers file: how many triggers are active, and the last load error (an
    /// invalid file keeps the previous triggers active).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<serde_json::Value>,
    /// Agent profiles and whether each can run sessions (an unusable one fails only the
    /// sessions that need it).
    pub agents: Vec<ProfileStatus>,
    /// Why the last `config.yaml` reload was refused; the previous configuration is in
    /// force meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Problems an operator should look at (unusable profiles, a refused reload); the
    /// daemon serves and runs everything else.
    pub problems: Vec<String>,
}

async fn readyz(State(st): State<AppState>) -> ApiResult<Response> {
    let queue = st.sup.engine().store().queue().await.map_err(store_error)?;
    let running = st.sup.running();
    let ready = !st.sup.stopping().is_cancelled() && !st.sup.sandbox_blocks_runs();
    let (agents, config_error) = st.sup.config_status();
    let mut problems: Vec<String> = agents.iter().filter_map(|a| a.problem.clone()).collect();
    if let Some(e) = &config_error {
        problems.push(format!("config.yaml was not reloaded: {e}"));
    }
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
        running_peak: st
            .sup
            .metrics
            .running_peak
            .load(std::sync::atomic::Ordering::Relaxed),
        sandbox: worktrain_agent::sandbox::probe().clone(),
        triggers: st.triggers.as_ref().map(|rt| {
            let status = rt.status();
            json!({
                "file": status.file,
                "active": rt.index().triggers.len(),
                "error": status.error.map(|e| e.to_string()),
            })
        }),
        agents,
        config_error,
        problems,
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

/// Re-read `config.yaml` now (it is also picked up by itself when it changes).
/// A refused reload is an `invalid_input` error naming the file, line and column.
async fn reload(State(st): State<AppState>) -> ApiResult<Response> {
    let report = st.sup.reload_config();
    match &report.error {
        None => Ok(axum::Json(report).into_response()),
        Some(e) => Err(worktrain_core::error::ApiError::invalid_input(
            format!("config.yaml was not reloaded: {e}"),
            "fix config.yaml and reload again; the previous configuration stays in force meanwhile",
        )
        .into()),
    }
}
