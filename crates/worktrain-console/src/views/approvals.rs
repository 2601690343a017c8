//! The approvals inbox: every gate waiting for a human, with the parked step's output
//! (notes and artifacts) to judge, and approve / reject forms.

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};
use worktrain_core::event::EventBody;
use worktrain_core::ids::Seq;
use worktrain_core::projection::{SessionStatus, SessionSummary};
use worktrain_store::SessionFilter;

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout, markdown};

/// Gates listed at most.
const LIMIT: u32 = 100;
/// Events read after a parked step's entry to find its output.
const LOOKAHEAD: u32 = 200;

/// A parked session and what it submitted.
struct Waiting {
    summary: SessionSummary,
    notes: Option<String>,
    artifacts: Vec<String>,
}

/// `GET /console/approvals`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
) -> Result<Markup, PageError> {
    let store = c.app.sup.engine().store();
    // Parked is a workflow status: it covers daemon runs and interactive sessions alike.
    let parked = store
        .sessions(&SessionFilter {
            status: Some(SessionStatus::Parked),
            limit: Some(LIMIT),
            ..SessionFilter::default()
        })
        .await?;
    let mut waiting = Vec::with_capacity(parked.len());
    for s in parked {
        let mut w = Waiting {
            summary: s,
            notes: None,
            artifacts: Vec::new(),
        };
        if let Some(cur) = &w.summary.current
            && let Some(node) = store.node(w.summary.session_id, cur.node).await?
        {
            let from = Seq(node.entered_seq.0.saturating_sub(1));
            for e in store.events(w.summary.session_id, from, LOOKAHEAD).await? {
                if let EventBody::StepParked {
                    node: n,
                    notes,
                    artifacts,
                    ..
                } = e.body
                    && n == cur.node
                {
                    w.notes = Some(notes);
                    w.artifacts = artifacts
                        .iter()
                        .map(|a| {
                            format!(
                                "{} ({} bytes)",
                                a.kind.as_deref().unwrap_or("artifact"),
                                a.size
                            )
                        })
                        .collect();
                }
            }
        }
        waiting.push(w);
    }
    let body = html! {
        h1 { "Approvals (" (waiting.len()) ")" }
        @if waiting.is_empty() { p class="empty" { "No gate waits for a human." } }
        @for w in &waiting {
            @let s = &w.summary;
            @let id = s.session_id;
            article class="approval" aria-labelledby={"a-" (id)} {
                h2 id={"a-" (id)} {
                    a href={(BASE) "/sessions/" (id)} { code { (id) } } " · " (s.workflow_id.as_str())
                    @if let Some(cur) = &s.current { " · step " strong { (cur.step_id.as_str()) } }
                }
                div class="goal markdown" { (markdown::render(&s.goal)) }
                @if let Some(n) = &w.notes { div class="notes markdown" { (markdown::render(n)) } }
                @else { p class="hint" { "The parked output is older than this page reads; open the session." } }
                @if !w.artifacts.is_empty() { p class="artifacts" { strong { "Artifacts: " } (w.artifacts.join(", ")) } }
                div class="action-list" {
                    details class="action a-approve" {
                        summary { "Approve…" }
                        form method="post" action={(BASE) "/sessions/" (id) "/actions/approve"} {
                            input type="hidden" name="csrf" value=(browser.csrf);
                            label for={"approve-" (id)} { "Note (optional)" }
                            input id={"approve-" (id)} name="note" type="text";
                            button type="submit" class="confirm-approve" { "Confirm approve" }
                        }
                    }
                    details class="action a-reject" {
                        summary { "Reject…" }
                        form method="post" action={(BASE) "/sessions/" (id) "/actions/reject"} {
                            input type="hidden" name="csrf" value=(browser.csrf);
                            label for={"reject-" (id)} { "What should the agent change? (required)" }
                            textarea id={"reject-" (id)} name="note" required rows="3" {}
                            button type="submit" class="confirm-reject" { "Confirm reject" }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Approvals", "/approvals", &browser, body))
}
