//! The worktrain web console, served by the daemon at `/console`.
//!
//! Server-rendered HTML (compile-time-checked `maud` templates) over the same supervisor
//! and store as the JSON API, with one small static script for live updates over SSE
//! and nothing inline, so the Content-Security-Policy can forbid inline script and style.
//!
//! - [`auth`]: the API token is exchanged for an `HttpOnly; SameSite=Strict` cookie on the
//!   login page (or through a one-time login link from `worktrain console`); every POST
//!   carries a CSRF token; everything else redirects to the login page.
//! - [`markdown`]: untrusted Markdown (agent notes, goals, artifacts) rendered through a
//!   sanitiser.
//! - [`assets`]: the stylesheet and script, embedded, named by content hash and cached
//!   for a year.
//! - [`views`]: one module per page.
//! - [`live`]: the SSE streams the pages listen to.
//!
//! [`extension`] is what the daemon mounts (see `Server::with_extension`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use worktrain_daemon::api::AppState;
use worktrain_daemon::server::Extension;

pub mod assets;
pub mod auth;
pub mod layout;
pub mod live;
pub mod markdown;
pub mod views;

/// Where the console is mounted.
pub const BASE: &str = "/console";

/// How long the header's counts may lag.
pub const STATS_TTL: Duration = Duration::from_secs(1);

/// Largest form body the console accepts (a steer message or a note).
const FORM_LIMIT: usize = 64 * 1024;

/// The Content-Security-Policy of every page: scripts and styles only from our own
/// embedded files, no inline code, no plugins, no framing, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Shared state of the console's handlers.
#[derive(Clone)]
pub struct Console {
    /// The API's state: supervisor, engine, store, token.
    pub app: AppState,
    /// Logged-in browsers, one-time login links, CSRF tokens.
    pub auth: Arc<auth::Sessions>,
    /// Recently computed step diffs.
    pub diffs: Arc<views::diff::DiffCache>,
    /// Counts per run state for the header (a scan of the summaries, cached briefly).
    stats: Arc<tokio::sync::Mutex<Option<(Instant, Counts)>>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console over the API's state.
    pub fn new(app: AppState) -> Self {
        Self {
            app,
            auth: Arc::new(auth::Sessions::new(auth::SESSION_TTL)),
            stats: Arc::default(),
            diffs: Arc::default(),
        }
    }

    /// Sessions per run state (`none`: never ran under the daemon), counted by the
    /// store; cached for [`STATS_TTL`].
    pub async fn counts(&self) -> Result<Counts, worktrain_core::error::ApiError> {
        let mut g = self.stats.lock().await;
        if let Some((at, s)) = g.as_ref()
            && at.elapsed() < STATS_TTL
        {
            return Ok(s.clone());
        }
        let rows = self
            .app
            .sup
            .engine()
            .store()
            .session_counts()
            .await
            .map_err(worktrain_engine::store_error)?;
        let mut counts = Counts::default();
        for (state, n) in rows {
            counts.total += n;
            counts
                .by_state
                .push((state.map(|s| s.as_str()).unwrap_or("none"), n));
        }
        *g = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// Session counts for the header.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// (run state or `none`, sessions).
    pub by_state: Vec<(&'static str, u64)>,
    /// All sessions in the store, whatever their state.
    pub total: u64,
}

/// The daemon extension serving the console.
pub fn extension() -> Extension {
    Arc::new(|app: AppState| router(Console::new(app)))
}

/// Every console route.
pub fn router(console: Console) -> Router {
    let pages = Router::new()
        .route("/console", get(views::sessions::page))
        .route("/console/", get(views::sessions::page))
        .route("/console/sessions", get(views::sessions::page))
        .route("/console/sessions/rows", get(views::sessions::rows))
        .route("/console/sessions/{id}", get(views::session::page))
        .route(
            "/console/sessions/{id}/live",
            get(views::session::live_fragment),
        )
        .route(
            "/console/sessions/{id}/graph.svg",
            get(views::session::graph_svg),
        )
        .route(
            "/console/sessions/{id}/actions/{action}",
            post(views::session::action),
        )
        .route(
            "/console/sessions/{id}/steps/{node}/diff",
            get(views::diff::page),
        )
        .route("/console/queue", get(views::queue::page))
        .route("/console/approvals", get(views::approvals::page))
        .route("/console/triggers", get(views::triggers::page))
        .route("/console/triggers/{id}", get(views::triggers::log))
        .route("/console/workflows", get(views::workflows::page))
        .route("/console/workflows/{id}", get(views::workflows::detail))
        .route(
            "/console/workflows/{id}/graph.svg",
            get(views::workflows::graph_svg),
        )
        .route("/console/insights", get(views::insights::page))
        .route("/console/proposals", get(views::insights::proposals))
        .route("/console/proposals/{id}", get(views::insights::proposal))
        .route(
            "/console/proposals/{id}/dismiss",
            post(views::insights::dismiss),
        )
        .route("/console/dispatch", get(views::dispatch::page))
        .route("/console/dispatch", post(views::dispatch::submit))
        .route("/console/logout", post(auth::logout))
        .route("/console/live/sessions", get(live::sessions))
        .route("/console/live/sessions/{id}", get(live::session))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            auth::require_login,
        ));
    let open = Router::new()
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/assets/{name}", get(assets::serve));
    let api = Router::new()
        .route("/console/login-links", post(auth::create_link))
        .layer(middleware::from_fn_with_state(
            console.app.clone(),
            worktrain_daemon::auth::require_token,
        ));
    Router::new()
        .merge(pages)
        .merge(open)
        .merge(api)
        .layer(middleware::from_fn(security_headers))
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(console)
}

/// Headers on every console response: the CSP (unless the handler set a narrower one),
/// no MIME sniffing, no referrer, no framing, and no caching of pages (assets set their
/// own long-lived caching).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Milliseconds as a short human duration (`850ms`, `12s`, `3m 04s`, `2h 05m`).
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let d = Duration::from_millis(ms.unsigned_abs());
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::human_ms;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(-5), "0ms");
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_000), "12s");
        assert_eq!(human_ms(184_000), "3m 04s");
        assert_eq!(human_ms(7_500_000), "2h 05m");
    }
}
