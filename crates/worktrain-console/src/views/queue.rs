//! The queue: running runs, queued runs with their positions, runs parked at gates, and
//! the concurrency caps with how full they are.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};
use worktrain_core::projection::QueueRow;
use worktrain_core::run::RunState;
use worktrain_store::{RunFilter, SessionFilter};

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, human_ms, layout};

/// Parked sessions listed at most.
const PARKED_LIMIT: u32 = 200;

/// `GET /console/queue`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
) -> Result<Markup, PageError> {
    let store = c.app.sup.engine().store();
    let queue = store.queue().await?;
    let parked = store
        .sessions(&SessionFilter {
            run: Some(RunFilter::State(RunState::Parked)),
            limit: Some(PARKED_LIMIT),
            ..SessionFilter::default()
        })
        .await?;
    let settings = c.app.sup.settings();
    let now = worktrain_daemon::now_ms();
    let running: Vec<&QueueRow> = queue
        .iter()
        .filter(|r| r.state == RunState::Running)
        .collect();
    let queued: Vec<&QueueRow> = queue
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .collect();
    let mut per_ws: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_trigger: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &running {
        if let Some(w) = &r.workspace {
            *per_ws.entry(w.as_str()).or_default() += 1;
        }
        if let Some(t) = &r.trigger {
            *per_trigger.entry(t.as_str()).or_default() += 1;
        }
    }
    let body = html! {
        h1 { "Queue" }
        section aria-labelledby="caps-h" {
            h2 id="caps-h" { "Capacity" }
            table class="caps" {
                thead { tr { th scope="col" { "Cap" } th scope="col" class="num" { "Running" } th scope="col" class="num" { "Limit" } th scope="col" { "Use" } } }
                tbody {
                    (cap_row("all sessions", running.len(), settings.max_concurrent_sessions))
                    @for (ws, n) in &per_ws { (cap_row(&format!("workspace {ws}"), *n, settings.max_per_workspace)) }
                    @for (t, limit) in &settings.max_per_trigger { (cap_row(&format!("trigger {t}"), per_trigger.get(t.as_str()).copied().unwrap_or(0), *limit)) }
                }
            }
        }
        section aria-labelledby="running-h" {
            h2 id="running-h" { "Running (" (running.len()) ")" }
            (rows(&running, now, false))
        }
        section aria-labelledby="queued-h" {
            h2 id="queued-h" { "Queued (" (queued.len()) ")" }
            (rows(&queued, now, true))
        }
        section aria-labelledby="parked-h" {
            h2 id="parked-h" { "Parked at a gate (" (parked.len()) ")" }
            @if parked.is_empty() { p class="empty" { "Nothing waits for approval." } }
            @else {
                p { a href={(BASE) "/approvals"} { "Review them in the approvals inbox" } }
                ul {
                    @for s in &parked {
                        li { a href={(BASE) "/sessions/" (s.session_id)} { code { (s.session_id) } } " "
                            (s.workflow_id.as_str()) " · " @if let Some(cur) = &s.current { (cur.step_id.as_str()) } " · " (s.goal) }
                    }
                }
            }
        }
    };
    Ok(layout::page("Queue", "/queue", &browser, body))
}

fn cap_row(name: &str, used: usize, limit: usize) -> Markup {
    html! {
        tr {
            th scope="row" { (name) }
            td class="num" { (used) }
            td class="num" { @if limit == 0 { "none" } @else { (limit) } }
            td { @if limit > 0 { meter min="0" max=(limit) value=(used.min(limit)) aria-label={(name) " use"} { (used) "/" (limit) } } }
        }
    }
}

fn rows(rows: &[&QueueRow], now: i64, positions: bool) -> Markup {
    html! {
        @if rows.is_empty() { p class="empty" { "None." } }
        @else {
            div class="table-wrap" {
                table {
                    thead { tr {
                        @if positions { th scope="col" class="num" { "#" } }
                        th scope="col" { "Session" } th scope="col" class="num" { "Priority" }
                        th scope="col" { "Workspace" } th scope="col" { "Trigger" } th scope="col" { "Agent" }
                        th scope="col" class="num" { "Since" }
                    } }
                    tbody {
                        @for (i, r) in rows.iter().enumerate() {
                            tr {
                                @if positions { td class="num" { (i + 1) } }
                                td { a href={(BASE) "/sessions/" (r.session_id)} { code { (r.session_id) } } }
                                td class="num" { (r.priority) }
                                td class="path" { (r.workspace.as_deref().unwrap_or("—")) }
                                td { (r.trigger.as_deref().unwrap_or("—")) }
                                td { (r.agent) }
                                td class="num" { (human_ms(now - r.queued_at_ms)) }
                            }
                        }
                    }
                }
            }
        }
    }
}
