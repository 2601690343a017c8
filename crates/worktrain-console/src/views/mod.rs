//! The console's pages, one module each, and what they share.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use worktrain_core::projection::SessionSummary;
use worktrain_core::run::{RunState, TriggerKind};

use crate::layout;

pub mod approvals;
pub mod diff;
pub mod dispatch;
pub mod insights;
pub mod queue;
pub mod session;
pub mod sessions;
pub mod triggers;
pub mod workflow_stats;
pub mod workflows;

/// A page-level error: a status and a message for the operator.
#[derive(Debug)]
pub struct PageError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl PageError {
    /// `404` with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// `400` with `message`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for PageError {
    fn from(e: E) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = layout::bare(
            "Error",
            html! {
                main class="login" {
                    h1 { "Error " (self.status.as_u16()) }
                    p role="alert" { (self.message) }
                    p { a href={(crate::BASE) "/sessions"} { "Back to sessions" } }
                }
            },
        );
        (self.status, page).into_response()
    }
}

/// What the status badge says: the run state for daemon runs, else the workflow status.
pub fn status_label(s: &SessionSummary) -> &'static str {
    match &s.run {
        Some(r) => r.state.as_str(),
        None => s.status.as_str(),
    }
}

/// The status badge (text plus a class for colour; readable without colour).
pub fn status_badge(s: &SessionSummary) -> Markup {
    let label = status_label(s);
    html! { span class={"badge s-" (label)} { (label) } }
}

/// How long the session has been going (to now while its run is live).
pub fn elapsed_ms(s: &SessionSummary, now_ms: i64) -> i64 {
    let live = s.run.as_ref().is_some_and(|r| {
        matches!(
            r.state,
            RunState::Queued | RunState::Running | RunState::Parked | RunState::Interrupted
        )
    });
    let end = if live { now_ms } else { s.updated_at_ms };
    end - s.created_at_ms
}

/// A web link for a source reference such as `github:o/r#12` (public hosts).
pub fn source_link(source: &str) -> Option<String> {
    let (scheme, rest) = source.split_once(':')?;
    let (host, issue, mr) = match scheme {
        "github" => ("https://github.com", "issues", "pull"),
        "gitlab" => ("https://gitlab.com", "-/issues", "-/merge_requests"),
        _ => return None,
    };
    let ok = |repo: &str| {
        !repo.is_empty()
            && repo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
    };
    if let Some((repo, n)) = rest.split_once('#')
        && ok(repo)
        && n.parse::<u64>().is_ok()
    {
        return Some(format!("{host}/{repo}/{issue}/{n}"));
    }
    if let Some((repo, n)) = rest.split_once('!')
        && ok(repo)
        && n.parse::<u64>().is_ok()
    {
        return Some(format!("{host}/{repo}/{mr}/{n}"));
    }
    None
}

/// The name of what started a run.
pub fn trigger_kind(k: TriggerKind) -> &'static str {
    match k {
        TriggerKind::Api => "api",
        TriggerKind::Parent => "parent",
        TriggerKind::Webhook => "webhook",
        TriggerKind::Poll => "poll",
        TriggerKind::Cron => "cron",
        TriggerKind::Console => "console",
    }
}

/// Tokens as `12.3k`.
pub fn tokens(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1000..=999_999 => format!("{:.1}k", n as f64 / 1000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_link_to_their_forge() {
        assert_eq!(
            source_link("github:o/r#12").as_deref(),
            Some("https://github.com/o/r/issues/12")
        );
        assert_eq!(
            source_link("gitlab:g/p!7").as_deref(),
            Some("https://gitlab.com/g/p/-/merge_requests/7")
        );
        assert_eq!(source_link("github:o/r\"x#12"), None);
        assert_eq!(source_link("schedule:nightly@2026"), None);
        assert_eq!(tokens(12_345), "12.3k");
    }
}
