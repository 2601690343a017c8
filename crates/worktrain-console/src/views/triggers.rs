//! Triggers: each trigger of `triggers.yml` with its decision counts and last decision;
//! the current load error if the file is invalid; and per trigger its decision log
//! (dispatched, filtered with the reason, duplicate, rejected, …), newest first.

use axum::Extension;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use worktrain_store::triggers::DecisionFilter;

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, human_ms, layout};

/// Decisions per page of the log.
const PAGE: u32 = 100;

fn runtime(c: &Console) -> Result<std::sync::Arc<worktrain_triggers::runtime::Runtime>, PageError> {
    c.app.triggers.clone().ok_or_else(|| {
        PageError::not_found(
            "triggers are not running in this daemon (start it with `worktrain daemon`)",
        )
    })
}

/// `GET /console/triggers`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
) -> Result<Markup, PageError> {
    let rt = runtime(&c)?;
    let status = rt.status();
    let index = rt.index();
    let now = worktrain_daemon::now_ms();
    let mut rows = Vec::new();
    for t in index.triggers.values() {
        let counts = rt.store().decision_counts(&t.id).await?;
        let last = rt
            .log(&DecisionFilter {
                trigger_id: Some(t.id.clone()),
                limit: Some(1),
                ..DecisionFilter::default()
            })
            .await
            .map_err(PageError::from)?
            .into_iter()
            .next();
        rows.push((t.clone(), counts, last));
    }
    let body = html! {
        h1 { "Triggers" }
        @if let Some(e) = &status.error {
            div class="blockers" role="alert" {
                h2 { "triggers.yml is invalid" }
                p { "The daemon keeps the triggers it loaded before; fix the file (" code { "worktrain trigger validate" } " checks it)." }
                pre { (e.to_string()) }
            }
        }
        p class="meta" {
            "File " code { (status.file) }
            @if !status.present { " (absent: no triggers)" }
            @else if status.loaded_at_ms > 0 { " · loaded " (human_ms(now - status.loaded_at_ms)) " ago" }
        }
        @if rows.is_empty() { p class="empty" { "No triggers." } }
        @else {
            div class="table-wrap" {
                table {
                    thead { tr {
                        th scope="col" { "Trigger" } th scope="col" { "Provider" } th scope="col" { "Workflow" }
                        th scope="col" { "Decisions" } th scope="col" { "Last decision" }
                    } }
                    tbody {
                        @for (t, counts, last) in &rows {
                            tr {
                                td { a href={(BASE) "/triggers/" (t.id)} { code { (t.id) } } @if !t.enabled { " (disabled)" }
                                    @if let Some(d) = &t.description { br; span class="meta" { (d) } } }
                                td { (t.source.provider()) @if t.source.is_webhook() { br; code { "/webhooks/" (t.id) } } }
                                td { (t.workflow) }
                                td { @for (k, n) in counts { span class="count" { (k) " " strong { (n) } } " " } }
                                td { @if let Some(d) = last {
                                    (human_ms(now - d.created_at_ms)) " ago: " strong { (d.body.decision) } " — " (d.body.reason)
                                } @else { "never" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Triggers", "/triggers", &browser, body))
}

/// Query of the decision log page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Decisions older than this id.
    #[serde(default)]
    pub before: Option<i64>,
    /// Only this kind (`dispatched`, `filtered`, …).
    #[serde(default)]
    pub decision: Option<String>,
}

/// `GET /console/triggers/{id}`: the decision log.
pub async fn log(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Markup, PageError> {
    let rt = runtime(&c)?;
    let decision = q.decision.clone().filter(|d| !d.is_empty());
    let rows = rt
        .log(&DecisionFilter {
            trigger_id: Some(id.clone()),
            decision: decision.clone(),
            before: q.before,
            limit: Some(PAGE),
            ..DecisionFilter::default()
        })
        .await
        .map_err(PageError::from)?;
    let next = (rows.len() == PAGE as usize)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    let now = worktrain_daemon::now_ms();
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href={(BASE) "/triggers"} { "Triggers" } " / " code { (id) } }
        h1 { "Decisions of " code { (id) } }
        p { a href={(BASE) "/sessions?trigger=" (id)} { "Sessions it started" } }
        @if rows.is_empty() { p class="empty" { "No decisions." } }
        @else {
            div class="table-wrap" {
                table class="decisions" {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Decision" } th scope="col" { "Reason" } th scope="col" { "Event" } th scope="col" { "Source" } th scope="col" { "Session" } } }
                    tbody {
                        @for d in &rows {
                            tr {
                                td class="num" { (human_ms(now - d.created_at_ms)) " ago" }
                                td { strong { (d.body.decision) } }
                                td { (d.body.reason) }
                                td { (d.body.event.as_deref().unwrap_or("—")) }
                                td { (d.body.source.as_deref().unwrap_or("—")) }
                                td { @if let Some(s) = &d.body.session_id { a href={(BASE) "/sessions/" (s)} { code { (s) } } } @else { "—" } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(b) = next {
            nav class="pager" aria-label="Pages" { a href={(BASE) "/triggers/" (id) "?before=" (b) @if let Some(k) = &decision { "&decision=" (k) }} rel="next" { "Older →" } }
        }
    };
    Ok(layout::page(
        &format!("Trigger {id}"),
        "/triggers",
        &browser,
        body,
    ))
}
