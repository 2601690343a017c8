//! The sessions list: status, workflow, goal, source, workspace and branch, current step,
//! elapsed, tokens and cost; filters (state, workflow, trigger, workspace), text search,
//! keyset paging (a page does not shift when sessions are added) and counts per run state.
//! The live part (`#live`) is re-fetched from [`rows`] when the SSE stream says a
//! session changed.

use axum::Extension;
use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use worktrain_core::ids::WorkflowId;
use worktrain_core::projection::SessionSummary;
use worktrain_core::run::RunState;
use worktrain_store::{RunFilter, SessionCursor, SessionFilter};

use super::{PageError, elapsed_ms, source_link, status_badge, tokens};
use crate::auth::Browser;
use crate::{BASE, Console, human_ms, layout};

/// Sessions per page.
pub const PAGE: u32 = 50;

/// Filters of the list (all optional; empty fields are ignored).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Run state (`queued`, `running`, …) or `none`.
    #[serde(default)]
    pub state: Option<String>,
    /// Only sessions of this workflow id; `None` or empty for every workflow.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only sessions whose workspace is this directory or inside it; `None` or empty for
    /// every workspace.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Trigger id: sessions it started.
    #[serde(default)]
    pub trigger: Option<String>,
    /// Text in goal, workflow id or branch.
    #[serde(default)]
    pub q: Option<String>,
    /// The page cursor: the last session of the previous page, as
    /// `<updated_at_ms>.<session id>` (none: the newest page).
    #[serde(default)]
    pub after: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ListQuery {
    fn filter(&self) -> Result<SessionFilter, PageError> {
        let run = non_empty(&self.state)
            .map(|s| match (s, RunState::parse(s)) {
                ("none", _) => Ok(RunFilter::NoRun),
                (_, Some(r)) => Ok(RunFilter::State(r)),
                _ => Err(PageError::bad(format!("unknown state `{s}`"))),
            })
            .transpose()?;
        let workflow = non_empty(&self.workflow)
            .map(|w| WorkflowId::new(w).map_err(|e| PageError::bad(e.to_string())))
            .transpose()?;
        Ok(SessionFilter {
            status: None,
            workflow,
            workspace: non_empty(&self.workspace).map(str::to_owned),
            text: non_empty(&self.q).map(str::to_owned),
            run,
            trigger: non_empty(&self.trigger).map(str::to_owned),
            after: self.cursor()?,
            limit: Some(PAGE + 1),
            offset: None,
        })
    }

    fn cursor(&self) -> Result<Option<SessionCursor>, PageError> {
        let Some(raw) = non_empty(&self.after) else {
            return Ok(None);
        };
        let bad = || {
            PageError::bad(format!(
                "`after={raw}` is not a page cursor (`<updated_at_ms>.<session id>`); start again from the first page"
            ))
        };
        let (ms, id) = raw.split_once('.').ok_or_else(bad)?;
        Ok(Some(SessionCursor {
            updated_at_ms: ms.parse().map_err(|_| bad())?,
            session_id: id.parse().map_err(|_| bad())?,
        }))
    }

    /// The query string of this filter at the page after `after` (none: the first page).
    fn at(&self, after: Option<SessionCursor>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("state", &self.state),
            ("workflow", &self.workflow),
            ("workspace", &self.workspace),
            ("trigger", &self.trigger),
            ("q", &self.q),
        ] {
            if let Some(v) = non_empty(v) {
                s.append_pair(k, v);
            }
        }
        if let Some(c) = after {
            s.append_pair("after", &format!("{}.{}", c.updated_at_ms, c.session_id));
        }
        s.finish()
    }
}

async fn load(c: &Console, q: &ListQuery) -> Result<(Vec<SessionSummary>, bool), PageError> {
    let mut page = c.app.sup.engine().store().sessions(&q.filter()?).await?;
    let more = page.len() > PAGE as usize;
    page.truncate(PAGE as usize);
    Ok((page, more))
}

/// `GET /console/sessions`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let (rows, more) = load(&c, &q).await?;
    let stats = c.counts().await?;
    let now = worktrain_daemon::now_ms();
    let mark = crate::live::mark_text(crate::live::newest(&c).await);
    let body = html! {
        h1 { "Sessions" }
        form class="filters" method="get" action={(BASE) "/sessions"} role="search" {
            label { "State "
                select name="state" {
                    option value="" { "any" }
                    @for s in RunState::ALL.iter().map(|s| s.as_str()).chain(["none"]) {
                        @if non_empty(&q.state) == Some(s) {
                            option value=(s) selected { (s) }
                        } @else {
                            option value=(s) { (s) }
                        }
                    }
                }
            }
            label { "Workflow " input name="workflow" value=[q.workflow.as_deref()] size="14"; }
            label { "Trigger " input name="trigger" value=[q.trigger.as_deref()] size="12"; }
            label { "Workspace " input name="workspace" value=[q.workspace.as_deref()] size="18"; }
            label { "Search " input type="search" name="q" value=[q.q.as_deref()] placeholder="goal, workflow, branch"; }
            button type="submit" { "Filter" }
        }
        section id="live" data-live={(BASE) "/sessions/rows?" (q.at(q.cursor()?))}
            data-stream={(BASE) "/live/sessions"} data-mark=(mark) aria-live="polite" {
            (live(&q, &rows, more, &stats, now))
        }
    };
    Ok(layout::page("Sessions", "/sessions", &browser, body))
}

/// `GET /console/sessions/rows`: the live part only.
pub async fn rows(
    State(c): State<Console>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let (rows, more) = load(&c, &q).await?;
    let stats = c.counts().await?;
    Ok(live(&q, &rows, more, &stats, worktrain_daemon::now_ms()))
}

fn live(
    q: &ListQuery,
    rows: &[SessionSummary],
    more: bool,
    stats: &crate::Counts,
    now: i64,
) -> Markup {
    let first_page = non_empty(&q.after).is_none();
    html! {
        ul class="counts" aria-label="Sessions by state" {
            @for (state, n) in &stats.by_state {
                li { a href={(BASE) "/sessions?state=" (state)} { span class={"badge s-" (state)} { (state) } " " strong { (n) } } }
            }
            li { "total " strong { (stats.total) } }
        }
        @if rows.is_empty() {
            p class="empty" { "No sessions match." }
        } @else {
            div class="table-wrap" {
                table class="sessions" {
                    caption class="visually-hidden" { "Sessions, most recently updated first" }
                    thead { tr {
                        th scope="col" { "Status" }
                        th scope="col" { "Session" }
                        th scope="col" { "Workflow" }
                        th scope="col" { "Goal" }
                        th scope="col" { "Source" }
                        th scope="col" { "Workspace / branch" }
                        th scope="col" { "Step" }
                        th scope="col" class="num" { "Elapsed" }
                        th scope="col" class="num" { "Tokens" }
                        th scope="col" class="num" { "Cost" }
                    } }
                    tbody {
                        @for s in rows { (row(s, now)) }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if !first_page {
                a href={(BASE) "/sessions?" (q.at(None))} rel="first" { "← Newest" }
            }
            @if more && let Some(last) = rows.last() {
                a href={(BASE) "/sessions?" (q.at(Some(SessionCursor::of(last))))} rel="next" { "Older →" }
            }
        }
    }
}

fn row(s: &SessionSummary, now: i64) -> Markup {
    let id = s.session_id.to_string();
    let run = s.run.as_ref();
    let source = run
        .and_then(|r| r.trigger.source.as_ref())
        .map(|x| x.as_str().to_owned());
    let branch = run
        .and_then(|r| r.branch.clone())
        .or_else(|| s.branch.clone());
    let t = &s.telemetry;
    html! {
        tr data-session=(id) {
            td { (status_badge(s)) }
            td { a href={(BASE) "/sessions/" (id)} { code { (id) } } }
            td { (s.workflow_id.as_str()) }
            td class="goal" { (s.goal) }
            td {
                @if let Some(src) = &source {
                    @if let Some(url) = source_link(src) {
                        a href=(url) rel="noopener noreferrer" { (src) }
                    } @else { (src) }
                } @else if let Some(r) = run {
                    (super::trigger_kind(r.trigger.kind))
                }
            }
            td class="ws" {
                @if let Some(ws) = &s.workspace { span class="path" { (ws) } }
                @if let Some(b) = &branch { br; code { (b) } }
            }
            td { @if let Some(cur) = &s.current { (cur.step_id.as_str()) } @else { "—" } }
            td class="num" { (human_ms(elapsed_ms(s, now))) }
            td class="num" { (tokens(t.input_tokens + t.output_tokens)) }
            td class="num" { @if t.cost_usd > 0.0 { "$" (format!("{:.2}", t.cost_usd)) } @else { "—" } }
        }
    }
}
