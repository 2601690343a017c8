//! Workflows: the catalog (bundled, user and project workflows, with load errors), and
//! per workflow its graph and lint findings.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use worktrain_engine::Catalog;
use worktrain_workflow_tools::lint::{Severity, lint};

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout};

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
    let body = html! {
        h1 { "Workflows" }
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Workflow" } th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "From" } th scope="col" { "Problem" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { @if e.error.is_none() { a href={(BASE) "/workflows/" (e.id)} { code { (e.id) } } } @else { code { (e.id) } } }
                            td { (e.name.as_deref().unwrap_or("—")) }
                            td { (e.version.as_deref().unwrap_or("—")) }
                            td class="path" { (e.label()) }
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
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href={(BASE) "/workflows"} { "Workflows" } " / " code { (id) } }
        h1 { code { (id) } }
        p class="meta" { "From " (resolved.source) " · hash " code { (resolved.pinned.hash.to_string().get(..12).unwrap_or("")) }
            " · " a href={(BASE) "/sessions?workflow=" (id)} { "its sessions" } }
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
