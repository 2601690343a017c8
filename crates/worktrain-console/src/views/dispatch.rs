//! Start a session from the browser: workflow, goal, workspace, context. The form goes
//! through the same validation and queueing as `POST /api/v1/sessions`.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Map, Value};
use worktrain_core::run::TriggerKind;
use worktrain_daemon::api::{DispatchBody, dispatch_session};
use worktrain_engine::Catalog;

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout};

fn form(
    c: &Console,
    browser: &Browser,
    error: Option<&str>,
    values: &BTreeMap<String, String>,
) -> Markup {
    let user_dir = c.app.sup.home().join("workflows");
    let entries = Catalog::new(Some(user_dir), None).list();
    let v = |k: &str| values.get(k).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Dispatch a session" }
        @if let Some(e) = error { p class="error" role="alert" { (e) } }
        form method="post" action={(BASE) "/dispatch"} class="dispatch" {
            input type="hidden" name="csrf" value=(browser.csrf);
            label for="d-workflow" { "Workflow" }
            select id="d-workflow" name="workflow" required {
                @for e in &entries {
                    @if v("workflow") == e.id {
                        option value=(e.id) selected { (e.id) @if let Some(n) = &e.name { " — " (n) } }
                    } @else {
                        option value=(e.id) { (e.id) @if let Some(n) = &e.name { " — " (n) } }
                    }
                }
            }
            label for="d-goal" { "Goal" }
            textarea id="d-goal" name="goal" required rows="3" { (v("goal")) }
            label for="d-workspace" { "Workspace (absolute path; empty for none)" }
            input id="d-workspace" name="workspace" type="text" value=(v("workspace"));
            label for="d-context" { "Context (a JSON object; optional)" }
            textarea id="d-context" name="context" rows="3" placeholder="{\"ticket\": \"ABC-1\"}" { (v("context")) }
            button type="submit" { "Dispatch" }
        }
    };
    layout::page("Dispatch", "/dispatch", browser, body)
}

/// `GET /console/dispatch`.
pub async fn page(State(c): State<Console>, Extension(browser): Extension<Browser>) -> Markup {
    form(&c, &browser, None, &BTreeMap::new())
}

/// `POST /console/dispatch` (CSRF checked by the middleware).
pub async fn submit(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    body: String,
) -> Result<Response, PageError> {
    let values: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .filter(|(k, _)| k != "csrf")
        .collect();
    let get = |k: &str| {
        values
            .get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let fail = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            form(&c, &browser, Some(&msg), &values),
        )
            .into_response()
    };
    let context = match get("context") {
        None => Map::new(),
        Some(t) => match serde_json::from_str::<Value>(&t) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Ok(fail(
                    "context must be a JSON object, e.g. {\"ticket\": \"ABC-1\"}".into(),
                ));
            }
            Err(e) => return Ok(fail(format!("context is not valid JSON: {e}"))),
        },
    };
    let body = DispatchBody {
        workflow: get("workflow").unwrap_or_default(),
        goal: get("goal").unwrap_or_default(),
        workspace: get("workspace"),
        context,
        parent: None,
        agent: None,
        trigger: None,
        limits: Default::default(),
        priority: 0,
        readonly: false,
        base: None,
        idempotency_key: None,
        source: None,
        delivery: None,
    };
    match dispatch_session(&c.app, body, Some(TriggerKind::Console)).await {
        Ok(a) => {
            tracing::info!(session_id = %a.record.summary.session_id, "console: session dispatched");
            Ok(
                Redirect::to(&format!("{BASE}/sessions/{}", a.record.summary.session_id))
                    .into_response(),
            )
        }
        Err(e) => Ok(fail(format!("{} — {}", e.body.message, e.body.hint))),
    }
}
