//! Trace analysis in the console: the findings of one session (with evidence that jumps
//! to the turn or call in the session's waterfall), the detector quality table, the
//! recurring patterns, and the improvement proposals (list, one with its patch as a diff,
//! dismiss). Everything is read through the insights store and service as the CLI's
//! `worktrain insights` and `worktrain proposals` do; nothing here analyses traces.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use worktrain_engine::Catalog;
use worktrain_insights::detect::{Finding, Thresholds};
use worktrain_insights::eval::{Label, evaluate};
use worktrain_insights::proposals::ProposalStatus;
use worktrain_insights::service::Insights;
use worktrain_store::InsightsStore;
use worktrain_store::insights::{FindingFilter, GroupFilter, ProposalFilter, TraceFilter};

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout};

/// Findings shown on a session's page.
const SESSION_FINDINGS: u32 = 100;
/// Traces the detector table reads (latest first; bounded).
const EVAL_TRACES: u32 = 10_000;
/// Recurring patterns listed.
const GROUPS: u32 = 50;

fn store(c: &Console) -> Option<&dyn InsightsStore> {
    c.app.sup.engine().store().insights()
}

fn no_insights() -> PageError {
    PageError::not_found("this store keeps no trace analysis")
}

fn insights(c: &Console) -> Result<Insights<'_>, PageError> {
    Ok(Insights::new(
        store(c).ok_or_else(no_insights)?,
        Thresholds::default(),
    ))
}

/// The findings stored for a worktrain session (empty when it was not analysed yet).
pub async fn session_findings(c: &Console, session: &str) -> Result<Vec<Finding>, PageError> {
    let Some(st) = store(c) else {
        return Ok(Vec::new());
    };
    st.findings(&FindingFilter {
        trace_id: Some(format!("worktrain:{session}")),
        limit: Some(SESSION_FINDINGS),
        ..FindingFilter::default()
    })
    .await?
    .iter()
    .map(|r| {
        serde_json::from_str::<Finding>(&r.body)
            .map_err(|e| PageError::from(format!("stored finding of {}: {e}", r.trace_id)))
    })
    .collect()
}

/// The anchor of a waterfall row for an evidence id (`seq:<n>` → `seq-<n>`).
pub fn evidence_anchor(id: &str) -> Option<String> {
    let n: u64 = id.strip_prefix("seq:")?.parse().ok()?;
    Some(format!("seq-{n}"))
}

/// The findings section of a session's page.
pub fn findings_section(findings: &[Finding]) -> Markup {
    html! {
        section class="findings" aria-labelledby="findings-h" {
            h2 id="findings-h" { "Findings" }
            @if findings.is_empty() {
                p class="meta" { "No findings stored for this session (`worktrain insights sync` analyses sessions)." }
            } @else {
                ul class="findings" {
                    @for f in findings {
                        li class={"finding sev-" (f.severity.as_str())} data-detector=(f.detector.as_str()) {
                            strong class={"sev-" (f.severity.as_str())} { (f.severity.as_str()) } " "
                            code { (f.detector.as_str()) }
                            @if let Some(s) = &f.step { " at step " code { (s) } }
                            ": " (f.message)
                            @if f.count > 1 { " (" (f.count) "×)" }
                            br; span class="hint" { (f.suggestion) }
                            @if !f.evidence.is_empty() {
                                ul class="evidence" {
                                    @for e in &f.evidence {
                                        @let target = e.call_id.as_deref().and_then(evidence_anchor).or_else(|| evidence_anchor(&e.turn_id));
                                        li {
                                            @if let Some(t) = &target {
                                                a class="evidence" href={"#" (t)} { "turn " (e.turn + 1) @if let Some(c) = &e.call_id { ", call " (c) } }
                                            } @else {
                                                "turn " (e.turn + 1)
                                            }
                                            ": " q { (e.note) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// `GET /console/insights`: detector quality and recurring patterns.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
) -> Result<Markup, PageError> {
    let st = store(&c).ok_or_else(no_insights)?;
    let ins = insights(&c)?;
    // Labels from the engine-derived outcomes of the stored traces (known outcomes only).
    let heads = st
        .traces(&TraceFilter {
            limit: Some(EVAL_TRACES),
            ..TraceFilter::default()
        })
        .await?;
    let labels: Vec<Label> = heads
        .iter()
        .filter_map(|h| {
            let resolved = match h.outcome.as_str() {
                "SUCCESS" => true,
                "PARTIAL" | "BLOCKED" | "FAILED" => false,
                _ => return None,
            };
            Some(Label {
                id: h.trace_id.clone(),
                resolved,
                line: 0,
            })
        })
        .collect();
    let runs = ins.eval_runs().await.map_err(PageError::from)?;
    let report = evaluate(&labels, &runs);
    let groups = st
        .finding_groups(&GroupFilter {
            min_sessions: 2,
            limit: Some(GROUPS),
            ..GroupFilter::default()
        })
        .await?;
    let body = html! {
        h1 { "Insights" }
        p class="meta" { (heads.len()) " traces stored; " (report.runs) " with a known outcome ("
            (report.passing) " succeeded, " (report.failing) " failed; base failure rate " (pct(Some(report.base_failure_rate))) "). "
            a href={(BASE) "/proposals"} { "Improvement proposals" } }
        h2 { "Detector quality" }
        p class="hint" { "Per detector over the traces with a known outcome: how often it fires in succeeded and failed runs, precision (of the runs it fires on, the share that failed), recall (of the failed runs, the share it fires on) and lift (precision over the base failure rate; at 1 or below the detector does not predict failure)." }
        div class="table-wrap" {
            table class="detectors" {
                thead { tr {
                    th scope="col" { "Detector" } th scope="col" class="num" { "Fired (succeeded)" } th scope="col" class="num" { "Fired (failed)" }
                    th scope="col" class="num" { "Rate (succeeded)" } th scope="col" class="num" { "Rate (failed)" }
                    th scope="col" class="num" { "Precision" } th scope="col" class="num" { "Recall" } th scope="col" class="num" { "Lift" }
                } }
                tbody {
                    @for d in &report.detectors {
                        tr data-detector=(d.detector) data-fired-pass=(d.fired_pass) data-fired-fail=(d.fired_fail) {
                            th scope="row" { code { (d.detector) } }
                            td class="num" { (d.fired_pass) } td class="num" { (d.fired_fail) }
                            td class="num" { (pct(Some(d.rate_pass))) } td class="num" { (pct(Some(d.rate_fail))) }
                            td class="num" { (pct(d.precision)) } td class="num" { (pct(Some(d.recall))) }
                            td class="num" { (d.lift.map_or_else(|| "—".to_owned(), |l| format!("{l:.2}"))) }
                        }
                    }
                }
            }
        }
        h2 { "Recurring patterns" }
        @if groups.is_empty() { p { "No pattern recurs in two or more sessions of one workflow step." } }
        @else {
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Workflow" } th scope="col" { "Step" } th scope="col" { "Detector" } th scope="col" class="num" { "Sessions" } th scope="col" class="num" { "Failing" } } }
                    tbody {
                        @for g in &groups {
                            tr {
                                td { a href={(BASE) "/workflows/" (g.workflow_id)} { (g.workflow_id) } }
                                td { code { (g.step_id) } }
                                td { code { (g.detector) } }
                                td class="num" { (g.sessions) }
                                td class="num" { (g.failing) "/" (g.known) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Insights", "/insights", &browser, body))
}

/// Filters of the proposals list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalsQuery {
    /// `open` (default), `applied`, `dismissed` or `all`.
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /console/proposals`.
pub async fn proposals(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Query(q): Query<ProposalsQuery>,
) -> Result<Markup, PageError> {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("open");
    let filter_status = match status {
        "all" => None,
        s => Some(
            ProposalStatus::parse(s)
                .ok_or_else(|| {
                    PageError::bad(format!(
                        "unknown proposal status `{s}` (open, applied, dismissed or all)"
                    ))
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let list = insights(&c)?
        .proposals(&ProposalFilter {
            status: filter_status,
            ..ProposalFilter::default()
        })
        .await
        .map_err(PageError::from)?;
    let body = html! {
        h1 { "Improvement proposals" }
        nav class="tabs" aria-label="Status" {
            @for s in ["open", "applied", "dismissed", "all"] {
                @if s == status { a href={(BASE) "/proposals?status=" (s)} aria-current="page" { (s) } } @else { a href={(BASE) "/proposals?status=" (s)} { (s) } }
                " "
            }
        }
        @if list.is_empty() { p class="empty" { "No proposals." } }
        @else {
            div class="table-wrap" {
                table class="proposals" {
                    thead { tr { th scope="col" { "Proposal" } th scope="col" { "Workflow / step" } th scope="col" { "Detector" } th scope="col" class="num" { "Confidence" } th scope="col" class="num" { "Sessions" } th scope="col" { "Status" } } }
                    tbody {
                        @for (p, s) in &list {
                            tr data-proposal=(p.id) {
                                td { a href={(BASE) "/proposals/" (p.id)} { (p.title) } }
                                td { code { (p.workflow) } " / " code { (p.step) } }
                                td { code { (p.detector.as_str()) } }
                                td class="num" { (format!("{:.2}", p.confidence)) }
                                td class="num" { (p.support.sessions) }
                                td { (s.as_str()) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Proposals", "/insights", &browser, body))
}

/// The workflow file a proposal patches: (location, text).
fn workflow_text(c: &Console, id: &str) -> Option<(String, String)> {
    let cat = Catalog::new(Some(c.app.sup.home().join("workflows")), None);
    let entry = cat
        .list()
        .into_iter()
        .rev()
        .find(|e| e.id == id && e.error.is_none())?;
    match entry.location.strip_prefix("bundled:") {
        Some(name) => worktrain_engine::catalog::BUNDLED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| (entry.location.clone(), (*t).to_owned())),
        None => std::fs::read_to_string(&entry.location)
            .ok()
            .map(|t| (entry.location.clone(), t)),
    }
}

/// `GET /console/proposals/{id}`: the proposal, its evidence, the patch as a diff, its
/// history and the dismiss action.
pub async fn proposal(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let (p, status) = insights(&c)?
        .proposal(&id)
        .await
        .map_err(PageError::from)?
        .ok_or_else(|| PageError::not_found(format!("no proposal `{id}`")))?;
    let history = store(&c)
        .ok_or_else(no_insights)?
        .proposal_history(&id)
        .await?;
    let c2 = c.clone();
    let wf = p.workflow.clone();
    let patch = p.patch.clone();
    let diff = tokio::task::spawn_blocking(move || {
        workflow_text(&c2, &wf).and_then(|(loc, text)| {
            worktrain_insights::patch::apply(&text, !loc.ends_with(".json"), &patch)
                .ok()
                .map(|r| (loc, worktrain_insights::patch::diff(&text, &r.text)))
        })
    })
    .await
    .map_err(|e| PageError::from(format!("reading the workflow failed: {e}")))?;
    let by_trace: BTreeMap<&str, &str> = p
        .evidence
        .iter()
        .map(|e| (e.trace_id.as_str(), e.outcome.as_str()))
        .collect();
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href={(BASE) "/proposals"} { "Proposals" } " / " code { (p.id) } }
        h1 { (p.title) }
        p class="meta" { span class={"badge p-" (status.as_str())} data-status=(status.as_str()) { (status.as_str()) }
            " · workflow " a href={(BASE) "/workflows/" (p.workflow)} { code { (p.workflow) } } " · step " code { (p.step) }
            " · detector " code { (p.detector.as_str()) } " · confidence " (format!("{:.2}", p.confidence)) }
        dl class="facts" {
            dt { "Pattern" } dd { "quoted from traces: " code { (p.pattern) } }
            dt { "Change" } dd { (p.patch.describe()) }
            dt { "Expected effect" } dd { (p.expected_effect) }
            dt { "Support" } dd { (p.support.sessions) " sessions with it (" (p.support.failing) " of " (p.support.known) " known failed); without it " (p.support.failing_without) " of " (p.support.known_without) " failed" }
        }
        h2 { "Patch" }
        @match &diff {
            Some((loc, d)) => { p class="path" { (loc) } pre class="diff" { (d) } }
            None => p { "The workflow file could not be read or the patch no longer applies." },
        }
        h2 { "Evidence" }
        ul class="evidence" {
            @for e in &p.evidence {
                li {
                    @if let Some(ses) = e.trace_id.strip_prefix("worktrain:") {
                        a href={(BASE) "/sessions/" (ses)} { code { (ses) } }
                    } @else { code { (e.trace_id) } }
                    " (" (by_trace.get(e.trace_id.as_str()).copied().unwrap_or("?")) ")"
                    @for t in &e.turns {
                        " "
                        @if let (Some(ses), Some(a)) = (e.trace_id.strip_prefix("worktrain:"), evidence_anchor(t)) {
                            a href={(BASE) "/sessions/" (ses) "#" (a)} { (t) }
                        } @else { code { (t) } }
                    }
                }
            }
        }
        @if !history.is_empty() {
            h2 { "History" }
            ul class="history" { @for h in &history { li { strong { (h.status) } @if let Some(n) = &h.note { ": " (n) } " " span class="meta" { "(at " (h.at_ms) " ms)" } } } }
        }
        @if status == ProposalStatus::Open {
            h2 { "Actions" }
            details class="action a-dismiss" {
                summary { "Dismiss…" }
                form method="post" action={(BASE) "/proposals/" (p.id) "/dismiss"} {
                    input type="hidden" name="csrf" value=(browser.csrf);
                    label for="f-dismiss" { "Reason (optional)" }
                    input id="f-dismiss" name="reason" type="text";
                    p class="confirm" { "The proposal is dismissed; it stays dismissed when the pattern recurs." }
                    button type="submit" class="confirm-dismiss" { "Confirm dismiss" }
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Proposal {id}"),
        "/insights",
        &browser,
        body,
    ))
}

/// `POST /console/proposals/{id}/dismiss` (CSRF checked by the middleware).
pub async fn dismiss(
    State(c): State<Console>,
    Path(id): Path<String>,
    body: String,
) -> Result<Response, PageError> {
    let reason = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let changed = store(&c)
        .ok_or_else(no_insights)?
        .set_proposal_status(
            &id,
            ProposalStatus::Dismissed.as_str(),
            reason.as_deref(),
            worktrain_insights::service::now_ms(),
        )
        .await?;
    if changed.is_none() {
        return Err(PageError::not_found(format!("no proposal `{id}`")));
    }
    tracing::info!(proposal = %id, "console: proposal dismissed");
    Ok(Redirect::to(&format!("{BASE}/proposals/{id}")).into_response())
}
