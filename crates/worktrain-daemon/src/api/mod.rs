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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use worktrain_core::error::Retry;

use crate::auth::{ApiToken, require_token};
use crate::errors::{HttpCode, HttpError};
use crate::metrics::{self, StatsCache};
use crate::supervisor::Supervisor;

mod actions;
mod health;
mod sessions;
mod streams;
pub mod triggers;
mod webhooks;

pub use sessions::{DispatchAnswer, DispatchBody, dispatch_session};

/// Largest page of sessions or events.
pub const MAX_PAGE: u32 = 1000;
/// Default page size.
pub const DEFAULT_PAGE: u32 = 50;
/// Longest server-side long-poll of `POST /await`, in seconds.
pub const MAX_AWAIT_SECS: u64 = 600;

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
    /// The trigger runtime (absent in daemons built without triggers, e.g. some tests).
    pub triggers: Option<Arc<worktrain_triggers::runtime::Runtime>>,
    stats: Arc<StatsCache>,
}

// By hand: the token is a secret, and the supervisor is large.
impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("body_limit", &self.body_limit)
            .field("timeout", &self.timeout)
            .field("triggers", &self.triggers.is_some())
            .finish_non_exhaustive()
    }
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
            triggers: None,
            stats: Arc::new(StatsCache::default()),
        }
    }

    /// With the trigger runtime (webhooks, `/api/v1/triggers`, trigger status in `/readyz`).
    pub fn with_triggers(mut self, rt: Arc<worktrain_triggers::runtime::Runtime>) -> Self {
        self.triggers = Some(rt);
        self
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
    /// The axum handler serving the route.
    pub handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .field("long", &self.long)
            .finish_non_exhaustive()
    }
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
/// Each resource module contributes its own routes; this is the one list the router
/// and the OpenAPI test read.
pub fn routes() -> Vec<Route> {
    let mut r = Vec::new();
    r.extend(health::routes());
    r.extend(sessions::routes());
    r.extend(streams::routes());
    r.extend(actions::routes());
    r.extend(triggers::routes());
    r.extend(webhooks::routes());
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
