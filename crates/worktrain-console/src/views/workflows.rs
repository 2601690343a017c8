//! Workflows: the catalog (bundled, user and project workflows, with load errors, and
//! each one's runs and success rate), and per workflow its numbers and per-step numbers
//! (see [`super::workflow_stats`]), its graph and lint findings.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use worktrain_engine::Catalog;
use worktrain_workflow_tools::lint::{Severity, lint};

use super::PageError;
use super::workflow_stats::{self, Numbers, WINDOW};
use crate::auth::Browser;
use crate::{BASE, Console, human_ms, layout};

fn catalog(c: &Console) -> Catalog {
    Catalog::new(Some(c.app.sup.home().join("workflows")), None)
}

/// `GET /console/workflows`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
) -> Result<Markup, PageError> {
    let cat = catalog(&c);
    let entries = tokio::task::spawn_blocking(move || cat.list())
        .await
        .map_err(|e| PageError::from(format!("catalog task failed: {e}")))?;
    let counts: std::collections::HashMap<String, worktrain_store::stats::WorkflowCounts> = c
        .app
        .sup
        .engine()
        .store()
        .workflow_counts()
        .await?
        .into_iter()
        .map(|w| (w.workflow_id.clone(), w))
        .collect();
    let body = html! {
        h1 { "Workflows" }
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Workflow" } th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "From" } th scope="col" class="num" { "Runs" } th scope="col" class="num" { "Success" } th scope="col" { "Problem" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { @if e.error.is_none() { a href={(BASE) "/workflows/" (e.id)} { code { (e.id) } } } @else { code { (e.id) } } }
                            td { (e.name.as_deref().unwrap_or("—")) }
                            td { (e.version.as_deref().unwrap_or("—")) }
                            td class="path" { (e.label()) }
                            @let w = counts.get(e.id.as_str());
                            td class="num" { (w.map_or(0, |w| w.sessions)) }
                            td class="num" { (pct(w.and_then(|w| {
                                let ended = w.complete + w.failed;
                                (ended > 0).then(|| w.complete as f64 / ended as f64)
                            }))) }
                            td { @if let Some(err) = &e.error { span class="error" { (err) } } @else { "—" } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Workflows", "/workflows", &browser, body))
}

/// `GET /console/workflows/{id}`: graph and lint findings.
pub async fn detail(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let cat = catalog(&c);
    let wanted = id.clone();
    let resolved = tokio::task::spawn_blocking(move || cat.resolve(&wanted))
        .await
        .map_err(|e| PageError::from(format!("catalog task failed: {e}")))?
        .map_err(|e| PageError::not_found(format!("{}: {}", e.message, e.hint)))?;
    let findings = lint(&resolved.pinned.workflow);
    let wf =
        worktrain_core::ids::WorkflowId::new(&id).map_err(|e| PageError::bad(e.to_string()))?;
    let samples = c
        .app
        .sup
        .engine()
        .store()
        .workflow_samples(&wf, WINDOW)
        .await?;
    let order: Vec<String> = resolved
        .pinned
        .workflow
        .steps
        .iter()
        .map(|s| s.id.as_str().to_owned())
        .collect();
    let stats = workflow_stats::compute(&samples, &order);
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href={(BASE) "/workflows"} { "Workflows" } " / " code { (id) } }
        h1 { code { (id) } }
        p class="meta" { "From " (resolved.source) " · hash " code { (resolved.pinned.hash.to_string().get(..12).unwrap_or("")) }
            " · " a href={(BASE) "/sessions?workflow=" (id)} { "its sessions" } }
        h2 { "Runs" }
        p class="meta" { (stats.total_sessions) " sessions in all"
            @if stats.total_sessions > u64::from(WINDOW) { "; the numbers below cover the latest " (WINDOW) }
            ". Success: the workflow reached its end; failure: its run failed or was cancelled first." }
        div class="table-wrap" {
            table class="stats" {
                thead { (stats_head("Scope")) }
                tbody {
                    (stats_row("workflow", "The workflow", &stats.workflow))
                }
            }
        }
        h3 { "Per step" }
        div class="table-wrap" {
            table class="stats steps-stats" {
                caption class="visually-hidden" { "Per step: runs (loop passes and rewinds count again), success rate, duration, tokens, blocked attempts" }
                thead { (stats_head("Step")) }
                tbody {
                    @for (step, n) in &stats.steps { (stats_row(step, step, n)) }
                }
            }
        }
        h2 { "Lint" }
        @if findings.is_empty() { p { "No findings." } }
        @else {
            ul class="lint" {
                @for f in &findings {
                    li {
                        strong class={"sev-" (f.severity.as_str())} { (f.severity.as_str()) }
                        " " code { (f.code) } @if let Some(s) = &f.step { " (step " code { (s) } ")" }
                        ": " (f.message) @if !f.hint.is_empty() { br; span class="hint" { (f.hint) } }
                    }
                }
            }
        }
        p class="meta" { (findings.iter().filter(|f| f.severity == Severity::Error).count()) " errors, "
            (findings.iter().filter(|f| f.severity == Severity::Warning).count()) " warnings" }
        h2 { "Graph" }
        img class="graph" src={(BASE) "/workflows/" (id) "/graph.svg"} alt={"Graph of workflow " (id)};
    };
    Ok(layout::page(
        &format!("Workflow {id}"),
        "/workflows",
        &browser,
        body,
    ))
}

/// `GET /console/workflows/{id}/graph.svg`.
pub async fn graph_svg(
    State(c): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let cat = catalog(&c);
    let resolved = tokio::task::spawn_blocking(move || cat.resolve(&id))
        .await
        .map_err(|e| PageError::from(format!("catalog task failed: {e}")))?
        .map_err(|e| PageError::not_found(format!("{}: {}", e.message, e.hint)))?;
    let svg = worktrain_workflow_tools::graph::to_svg(&resolved.pinned.workflow);
    let mut resp = svg.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(resp)
}

/// A ratio as a percentage, `—` when undefined.
fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn stats_head(first: &str) -> Markup {
    html! {
        tr {
            th scope="col" { (first) }
            th scope="col" class="num" { "Runs" }
            th scope="col" class="num" { "Success" }
            th scope="col" class="num" { "p50" }
            th scope="col" class="num" { "p95" }
            th scope="col" class="num" { "Tokens" }
            th scope="col" class="num" { "Tokens / run" }
            th scope="col" class="num" { "Blocked attempts" }
        }
    }
}

/// One row of numbers; the raw values ride along as data attributes (for tools and tests).
fn stats_row(key: &str, label: &str, n: &Numbers) -> Markup {
    let p50 = n.percentile(50);
    let p95 = n.percentile(95);
    let rate = |r: Option<f64>| r.map_or_else(String::new, |r| format!("{r:.4}"));
    html! {
        tr data-stats=(key) data-runs=(n.runs) data-succeeded=(n.succeeded) data-failed=(n.failed)
            data-success=(rate(n.success_rate())) data-p50-ms=[p50] data-p95-ms=[p95]
            data-tokens=(n.tokens) data-attempts=(n.attempts) data-blocked=(n.blocked)
            data-blocked-rate=(rate(n.blocked_rate())) {
            th scope="row" { @if key == "workflow" { (label) } @else { code { (label) } } }
            td class="num" { (n.runs) }
            td class="num" { (pct(n.success_rate())) @if n.succeeded + n.failed > 0 { " " span class="meta" { "(" (n.succeeded) "/" (n.succeeded + n.failed) ")" } } }
            td class="num" { (p50.map_or_else(|| "—".to_owned(), human_ms)) }
            td class="num" { (p95.map_or_else(|| "—".to_owned(), human_ms)) }
            td class="num" { (super::tokens(n.tokens)) }
            td class="num" { (n.tokens_per_run().map_or_else(|| "—".to_owned(), super::tokens)) }
            td class="num" { (pct(n.blocked_rate())) @if n.attempts > 0 { " " span class="meta" { "(" (n.blocked) "/" (n.attempts) ")" } } }
        }
    }
}
