//! One session: header (status with its reason, goal, workflow and hash, source, branch),
//! the workflow graph with this session's path, a timeline of steps (notes, artifacts,
//! context changes, blocked attempts with their blockers, gate decisions, steering,
//! snapshots), the agent trace as a waterfall, the delivery stages, the session's
//! trace-analysis findings (evidence links to waterfall rows), and the operator actions —
//! each behind a confirmation and each recorded as an event by the supervisor.
//!
//! The page reads the summary and step-graph projections plus at most [`MAX_EVENTS`] of
//! the latest events (bounded whatever the history). The live part (`#live`) is
//! re-fetched from [`live_fragment`] when the SSE stream says the session changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;
use worktrain_core::activity::AgentActivity;
use worktrain_core::event::{EventBody, StoredEvent};
use worktrain_core::ids::{NodeId, Seq, SessionId, StepId};
use worktrain_core::projection::{NodeRecord, NodeStatus, SessionStatus, SessionSummary};
use worktrain_core::run::{DeliveryStage, DeliveryState, RunState};
use worktrain_engine::{RewindTarget, SessionRef, current_path};

use super::{PageError, elapsed_ms, source_link, status_badge, tokens};
use crate::auth::Browser;
use crate::{BASE, Console, human_ms, layout, markdown};

/// The most events one page reads (the latest ones).
pub const MAX_EVENTS: u32 = 1000;
/// Artifacts larger than this are listed, not shown.
const ARTIFACT_SHOW_LIMIT: u64 = 64 * 1024;

fn parse_id(id: &str) -> Result<SessionId, PageError> {
    id.parse::<SessionId>()
        .map_err(|_| PageError::not_found(format!("`{id}` is not a session id")))
}

/// Everything one render needs.
struct Loaded {
    summary: SessionSummary,
    nodes: Vec<NodeRecord>,
    events: Vec<StoredEvent>,
    /// The page starts after this sequence number (older events are not shown).
    first_seq: u64,
}

async fn load(c: &Console, id: SessionId) -> Result<Loaded, PageError> {
    let engine = c.app.sup.engine();
    let summary = engine
        .store()
        .session(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no session {id}")))?;
    let nodes = engine.store().nodes(id).await?;
    let from = summary.last_seq.0.saturating_sub(u64::from(MAX_EVENTS));
    let events = engine.store().events(id, Seq(from), MAX_EVENTS).await?;
    Ok(Loaded {
        summary,
        nodes,
        events,
        first_seq: from,
    })
}

/// `GET /console/sessions/{id}`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let id = parse_id(&id)?;
    let l = load(&c, id).await?;
    let s = &l.summary;
    let run = s.run.as_ref();
    let source = run
        .and_then(|r| r.trigger.source.as_ref())
        .map(|x| x.as_str().to_owned());
    let branch = run
        .and_then(|r| r.branch.clone())
        .or_else(|| s.branch.clone());
    let findings = super::insights::session_findings(&c, &id.to_string()).await?;
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href={(BASE) "/sessions"} { "Sessions" } " / " code { (id) } }
        header class="session-head" {
            h1 { (status_badge(s)) " " code { (id) } }
            div class="goal markdown" { (markdown::render(&s.goal)) }
            dl class="facts" {
                dt { "Workflow" } dd { (s.workflow_id.as_str()) " v" (s.workflow_version) " " code title="pinned workflow hash" { (short_hash(&s.workflow_hash.to_string())) } }
                @if let Some(src) = &source {
                    dt { "Source" } dd {
                        @if let Some(url) = source_link(src) { a href=(url) rel="noopener noreferrer" { (src) } } @else { (src) }
                    }
                }
                @if let Some(r) = run { dt { "Trigger" } dd { (super::trigger_kind(r.trigger.kind)) @if let Some(t) = &r.trigger.id { " " code { (t) } } } dt { "Agent" } dd { (r.agent) } }
                @if let Some(ws) = &s.workspace { dt { "Workspace" } dd class="path" { (ws) } }
                @if let Some(b) = branch.as_ref().filter(|b| !b.is_empty()) { dt { "Branch" } dd { code { (b) } } }
                @if let Some(w) = run.and_then(|r| r.worktree.as_ref()).filter(|w| !w.is_empty()) { dt { "Worktree" } dd class="path" { (w) } }
                @if let Some(p) = s.parent { dt { "Parent" } dd { a href={(BASE) "/sessions/" (p)} { code { (p) } } } }
                @if let Some(d) = run.and_then(|r| r.delivery.as_ref()) && let Some(url) = d.pr_url.as_deref() {
                    dt { "Pull request" } dd { (web_link(url, &d.pr_number.map_or_else(|| url.to_owned(), |n| format!("#{n}")))) }
                }
            }
        }
        div class="session-body" {
        section class="graph" aria-labelledby="graph-h" {
            h2 id="graph-h" { "Workflow graph" }
            p class="legend" { span class="k-done" { "done" } " · " span class="k-current" { "current" } " · " span class="k-blocked" { "blocked attempts" } " · " span class="k-skipped" { "skipped" } " · " span class="k-done" { "×N" } " loop passes" }
            img class="graph" src={(BASE) "/sessions/" (id) "/graph.svg?seq=" (s.last_seq.0)}
                alt={"Workflow graph of " (s.workflow_id.as_str()) " with this session's path; the step timeline below lists the same steps as text"};
            (super::insights::findings_section(&findings))
        }
        section id="live" data-live={(BASE) "/sessions/" (id) "/live"} data-stream={(BASE) "/live/sessions/" (id)}
            data-mark=(crate::live::mark_text(Some((id, s.last_seq.0)))) aria-live="polite" {
            (live(&l, &browser))
        }
        }
    };
    Ok(layout::page(
        &format!("Session {id}"),
        "/sessions",
        &browser,
        body,
    ))
}

/// `GET /console/sessions/{id}/live`: the part of the page that changes.
pub async fn live_fragment(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let id = parse_id(&id)?;
    let l = load(&c, id).await?;
    Ok(live(&l, &browser))
}

fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

fn live(l: &Loaded, browser: &Browser) -> Markup {
    let s = &l.summary;
    let now = worktrain_daemon::now_ms();
    let run = s.run.as_ref();
    let t = &s.telemetry;
    html! {
        div class="status-line" data-state=(super::status_label(s)) data-seq=(s.last_seq.0) {
            (status_badge(s))
            @if let Some(r) = run {
                @if let Some(f) = r.failure { " " strong class="reason" { (f.as_str()) } }
                @if let Some(d) = &r.detail { " — " span class="reason" { (d) } }
            }
            " · " (s.steps_completed) " steps done"
            @if let Some(cur) = &s.current { " · at " strong { (cur.step_id.as_str()) } " (attempt " (cur.attempt) ")" }
            " · " (human_ms(elapsed_ms(s, now)))
            " · " (tokens(t.input_tokens + t.output_tokens)) " tokens"
            @if t.cost_usd > 0.0 { " · $" (format!("{:.2}", t.cost_usd)) }
            " · " (t.turns) " turns, " (t.tool_calls) " tool calls"
            @if t.tool_errors > 0 { " (" (t.tool_errors) " failed)" }
        }
        @if let Some(cur) = &s.current && !cur.blockers.is_empty() {
            div class="blockers" role="status" {
                h2 { "Blocked" }
                ul { @for b in &cur.blockers { li { code { (format!("{:?}", b.code)) } " " (markdown::render(&b.message)) } } }
            }
        }
        (actions(l, browser))
        (delivery_section(s))
        (timeline(l))
        (waterfall(l))
    }
}

/// Which actions apply to the session now.
fn available(s: &SessionSummary) -> Vec<&'static str> {
    let mut out = Vec::new();
    let state = s.run.as_ref().map(|r| r.state);
    match state {
        Some(RunState::Queued | RunState::Running) => out.extend(["steer", "cancel"]),
        Some(RunState::Parked) => out.extend(["approve", "reject", "steer", "cancel"]),
        Some(RunState::Interrupted) => out.extend(["resume", "cancel"]),
        Some(RunState::Failed | RunState::Cancelled) => out.extend(["retry", "rewind"]),
        Some(RunState::Completed) => out.push("rewind"),
        None => {
            if s.status == SessionStatus::Parked {
                out.extend(["approve", "reject"]);
            }
            out.push("rewind");
        }
    }
    if delivery_retryable(s) {
        out.push("retry-delivery");
    }
    out
}

/// A completed session whose delivery failed (and whose run is not going again).
fn delivery_retryable(s: &SessionSummary) -> bool {
    s.status == SessionStatus::Complete
        && s.run.as_ref().is_some_and(|r| {
            r.trigger.delivery.is_some()
                && matches!(r.state, RunState::Failed | RunState::Completed)
                && r.delivery
                    .as_ref()
                    .is_some_and(|d| d.state == DeliveryState::Failed)
        })
}

/// A link to `url` when it is a plain web address (a forge's answer is untrusted: no
/// `javascript:` or other schemes), else the text alone.
fn web_link(url: &str, text: &str) -> Markup {
    let ok = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    html! {
        @if ok { a href=(url) rel="noopener noreferrer" { (text) } } @else { (text) }
    }
}

/// The delivery pipeline: each stage of the target with its result, the forge's message
/// on failure, the pull request (empty for sessions without delivery).
pub fn delivery_section(s: &SessionSummary) -> Markup {
    let run = s.run.as_ref();
    let settings = run.and_then(|r| r.trigger.delivery.as_deref());
    let info = run.and_then(|r| r.delivery.as_ref());
    if settings.is_none() && info.is_none() {
        return html! {};
    }
    let mut stages: Vec<DeliveryStage> = settings.map(worktrain_delivery::plan).unwrap_or_default();
    if let Some(d) = info {
        for (st, _) in &d.done {
            if !stages.contains(st) {
                stages.push(*st);
            }
        }
        if let Some(f) = &d.failure
            && !stages.contains(&f.stage)
        {
            stages.push(f.stage);
        }
    }
    let state = info.map_or("not started", |d| match d.state {
        DeliveryState::Running => "running",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    });
    html! {
        section class="delivery" aria-labelledby="delivery-h" data-delivery=(state) {
            h2 id="delivery-h" { "Delivery" }
            p class="meta" {
                @if let Some(t) = settings { "Target " code { (t.target.as_str()) } " · " }
                span class={"badge d-" (state.replace(' ', "-"))} { (state) }
                @if let Some(d) = info { " · attempt " (d.attempt) }
                @if let Some(d) = info && let Some(url) = d.pr_url.as_deref() {
                    " · pull request " (web_link(url, &d.pr_number.map_or_else(|| url.to_owned(), |n| format!("#{n}"))))
                }
            }
            ol class="stages" {
                @for st in &stages {
                    @let done = info.and_then(|d| d.outcome(*st));
                    @let failed = info.and_then(|d| d.failure.as_ref()).filter(|f| f.stage == *st);
                    @let result = if done.is_some() { "done" } else if failed.is_some() { "failed" } else { "pending" };
                    li class={"stage r-" (result)} data-stage=(st.as_str()) data-result=(result) {
                        span class={"badge r-" (result)} { (result) } " " strong { (st.as_str()) }
                        @if let Some(o) = done {
                            " — " (o.summary)
                            @if let Some(c) = &o.commit { " " code { (short_hash(c)) } }
                            @if let Some(u) = &o.url { " " (web_link(u, u)) }
                            @if !o.findings.is_empty() { " (" (o.findings.len()) " secret-scan findings)" }
                        }
                        @if let Some(f) = failed {
                            div class="stage-error" role="alert" {
                                strong { "Failed: " } span class="forge-message" { (f.message) }
                                @if let Some(h) = &f.hint { br; span class="hint" { (h) } }
                                @if !f.retryable { br; span class="hint" { "Not retryable as things are: fix the cause first." } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn actions(l: &Loaded, browser: &Browser) -> Markup {
    let s = &l.summary;
    let id = s.session_id;
    let acts = available(s);
    let done_steps: Vec<&NodeRecord> = current_path(s, &l.nodes)
        .into_iter()
        .filter(|n| n.status == NodeStatus::Completed)
        .collect();
    html! {
        section class="actions" aria-labelledby="actions-h" {
            h2 id="actions-h" { "Actions" }
            @if acts.is_empty() { p { "No action applies now." } }
            div class="action-list" {
                @for a in acts {
                    @if a != "rewind" || !done_steps.is_empty() {
                        details class={"action a-" (a)} {
                            summary { (label(a)) "…" }
                            form method="post" action={(BASE) "/sessions/" (id) "/actions/" (a)} {
                                input type="hidden" name="csrf" value=(browser.csrf);
                                @match a {
                                    "steer" => {
                                        label for={"f-" (a)} { "Message for the agent's next turn" }
                                        textarea id={"f-" (a)} name="message" required rows="3" {}
                                    }
                                    "reject" => {
                                        label for={"f-" (a)} { "What should the agent change? (required)" }
                                        textarea id={"f-" (a)} name="note" required rows="3" {}
                                    }
                                    "rewind" => {
                                        label for={"f-" (a)} { "Rewind to step" }
                                        select id={"f-" (a)} name="step" {
                                            @for n in &done_steps { option value=(n.step_id.as_str()) { (n.step_id.as_str()) } }
                                        }
                                    }
                                    "retry" | "resume" | "retry-delivery" => {}
                                    _ => {
                                        label for={"f-" (a)} { "Note (optional)" }
                                        input id={"f-" (a)} name="note" type="text";
                                    }
                                }
                                p class="confirm" { (confirm_text(a)) }
                                button type="submit" class={"confirm-" (a)} { "Confirm " (a) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn label(a: &str) -> &'static str {
    match a {
        "cancel" => "Cancel",
        "steer" => "Steer",
        "approve" => "Approve",
        "reject" => "Reject",
        "resume" => "Resume",
        "retry" => "Retry",
        "retry-delivery" => "Retry delivery",
        "rewind" => "Rewind",
        _ => "Action",
    }
}

fn confirm_text(a: &str) -> &'static str {
    match a {
        "cancel" => "The agent is stopped and the run ends as cancelled.",
        "steer" => "The message is given to the agent at its next turn.",
        "approve" => "The parked step is completed with its output; the run continues.",
        "reject" => "The parked output is rejected; the agent must submit a new attempt.",
        "resume" => "The interrupted run is queued again.",
        "retry" => "The run is queued again from where the session stands.",
        "retry-delivery" => "The delivery continues from the stage that failed; no agent runs.",
        "rewind" => {
            "The session moves back to the chosen step (a new branch of the step graph); retry to run it."
        }
        _ => "",
    }
}

/// A step of the timeline, from the node projection plus its events.
#[derive(Default)]
struct StepEvents<'a> {
    completed: Option<&'a StoredEvent>,
    blocked: Vec<&'a StoredEvent>,
    other: Vec<&'a StoredEvent>,
}

fn node_of(e: &EventBody) -> Option<NodeId> {
    match e {
        EventBody::NodeEntered { node, .. }
        | EventBody::StepBlocked { node, .. }
        | EventBody::StepCompleted { node, .. }
        | EventBody::StepParked { node, .. }
        | EventBody::GateApproved { node, .. }
        | EventBody::GateRejected { node, .. }
        | EventBody::StepSnapshotted { node, .. } => Some(*node),
        _ => None,
    }
}

fn timeline(l: &Loaded) -> Markup {
    let mut per: BTreeMap<NodeId, StepEvents<'_>> = BTreeMap::new();
    let mut loose: Vec<&StoredEvent> = Vec::new();
    let mut time_of: BTreeMap<u64, i64> = BTreeMap::new();
    for e in &l.events {
        time_of.insert(e.seq.0, e.created_at_ms);
        match node_of(&e.body) {
            Some(n) => {
                let entry = per.entry(n).or_default();
                match &e.body {
                    EventBody::StepCompleted { .. } => entry.completed = Some(e),
                    EventBody::StepBlocked { .. } => entry.blocked.push(e),
                    EventBody::NodeEntered { .. } => {}
                    _ => entry.other.push(e),
                }
            }
            None => match &e.body {
                EventBody::StepSkipped { .. }
                | EventBody::Steered { .. }
                | EventBody::SessionRewound { .. }
                | EventBody::CancelRequested { .. }
                | EventBody::RunFinished { .. } => loose.push(e),
                _ => {}
            },
        }
    }
    html! {
        section class="timeline" aria-labelledby="timeline-h" {
            h2 id="timeline-h" { "Steps" }
            @if l.first_seq > 0 { p class="hint" { "Showing the latest " (MAX_EVENTS) " events; earlier steps show their notes only." } }
            ol class="steps" {
                @for n in &l.nodes {
                    @let ev = per.get(&n.node);
                    li class={"step n-" (n.status.as_str())} id={"node-" (n.node.0)} {
                        div class="step-head" {
                            span class={"badge n-" (n.status.as_str())} { (n.status.as_str()) }
                            " " strong { (n.step_id.as_str()) }
                            " " span class="meta" { "node " (n.node) " · " (n.attempts) " attempt" @if n.attempts != 1 { "s" } " · " (format!("{:?}", n.cause).to_lowercase())
                                @if let (Some(a), Some(b)) = (time_of.get(&n.entered_seq.0), n.closed_seq.and_then(|c| time_of.get(&c.0))) { " · " (human_ms(b - a)) }
                            }
                        }
                        @if let Some(ev) = ev {
                            @for b in &ev.blocked {
                                @if let EventBody::StepBlocked { attempt, blockers, .. } = &b.body {
                                    div class="blocked" {
                                        strong { "Attempt " (attempt) " blocked:" }
                                        ul { @for x in blockers { li { code { (format!("{:?}", x.code)) } " " (x.message) @if let Some(p) = &x.path { " (" code { (p) } ")" } } } }
                                    }
                                }
                            }
                        }
                        @if let Some(notes) = &n.notes {
                            div class="notes markdown" { (markdown::render(notes)) }
                        }
                        @if let Some(ev) = ev {
                            @if let Some(EventBody::StepCompleted { artifacts, context_delta, .. }) = ev.completed.map(|e| &e.body) {
                                @if !artifacts.is_empty() {
                                    div class="artifacts" { strong { "Artifacts: " }
                                        @for a in artifacts { span class="artifact" { (a.kind.as_deref().unwrap_or("artifact")) " (" (a.size) " bytes" @if a.size > ARTIFACT_SHOW_LIMIT { ", not shown" } ")" } " " }
                                    }
                                }
                                @if !context_delta.is_empty() {
                                    details class="context" { summary { "Context changes (" (context_delta.len()) ")" }
                                        pre { (serde_json::to_string_pretty(&Value::Object(context_delta.clone())).unwrap_or_default()) }
                                    }
                                }
                            }
                            @for o in &ev.other {
                                @match &o.body {
                                    EventBody::StepParked { notes, .. } => div class="parked" { strong { "Parked at a gate, waiting for approval. Output:" } div class="markdown" { (markdown::render(notes)) } },
                                    EventBody::GateApproved { note, .. } => p class="gate" { "Approved" @if let Some(n) = note { ": " (n) } },
                                    EventBody::GateRejected { note, .. } => p class="gate" { "Rejected: " (note) },
                                    EventBody::StepSnapshotted { commit, .. } => p class="snapshot" {
                                        "Snapshot " code { (short_hash(commit)) } " · "
                                        a href={(BASE) "/sessions/" (l.summary.session_id) "/steps/" (n.node.0) "/diff"} { "Changes of this step" }
                                    },
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
            @if !loose.is_empty() {
                h3 { "Session events" }
                ul class="loose" {
                    @for e in &loose {
                        li { span class="meta" { "#" (e.seq.0) } " "
                            @match &e.body {
                                EventBody::StepSkipped { step_id, condition, .. } => { "step " strong { (step_id.as_str()) } " skipped by its condition " code { (condition) } }
                                EventBody::Steered { message } => { "steered: " q { (message) } }
                                EventBody::SessionRewound { .. } => { "rewound" }
                                EventBody::CancelRequested { .. } => { "cancel requested" }
                                EventBody::RunFinished { .. } => { "run finished" }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One bar of the waterfall.
struct Bar {
    /// The event's sequence number (the row's anchor, `#seq-<n>`).
    seq: u64,
    start: i64,
    dur: u64,
    label: String,
    detail: String,
    error: bool,
}

fn waterfall(l: &Loaded) -> Markup {
    let mut bars = Vec::new();
    for e in &l.events {
        let EventBody::AgentActivity { activity } = &e.body else {
            continue;
        };
        match activity {
            AgentActivity::LlmTurn(t) => bars.push(Bar {
                seq: e.seq.0,
                start: e.created_at_ms - i64::try_from(t.duration_ms).unwrap_or(0),
                dur: t.duration_ms,
                label: format!("LLM turn {}", t.turn),
                detail: format!(
                    "{} · {} in / {} out tokens · {} · {} tool calls",
                    t.model,
                    t.usage.input_tokens,
                    t.usage.output_tokens,
                    t.stop_reason,
                    t.tool_calls
                ),
                error: false,
            }),
            AgentActivity::ToolCall(c) => bars.push(Bar {
                seq: e.seq.0,
                start: e.created_at_ms - i64::try_from(c.duration_ms).unwrap_or(0),
                dur: c.duration_ms,
                label: c.name.clone(),
                detail: {
                    let mut d = format!("{} bytes out", c.result_bytes);
                    if let Some(code) = c.exit_code {
                        let _ = write!(d, " · exit {code}");
                    }
                    if let Some(err) = &c.error {
                        let _ = write!(d, " · error: {}", err.message);
                    }
                    d
                },
                error: c.error.is_some(),
            }),
            _ => {}
        }
    }
    let t0 = bars.iter().map(|b| b.start).min().unwrap_or(0);
    let t1 = bars
        .iter()
        .map(|b| b.start + i64::try_from(b.dur).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let span = (t1 - t0).max(1) as f64;
    html! {
        section class="waterfall" aria-labelledby="trace-h" {
            h2 id="trace-h" { "Agent trace" }
            @if bars.is_empty() { p { "No LLM turns or tool calls yet." } }
            @else {
                table class="trace" {
                    thead { tr { th scope="col" { "Call" } th scope="col" class="num" { "Duration" } th scope="col" { "Detail" } th scope="col" class="bar-col" { "Timeline" } } }
                    tbody {
                        @for b in &bars {
                            @let x = ((b.start - t0) as f64 / span * 1000.0).round();
                            @let w = ((b.dur as f64) / span * 1000.0).round().max(2.0);
                            tr id={"seq-" (b.seq)} class=[b.error.then_some("err")] {
                                td { (b.label) @if b.error { " " strong { "(failed)" } } }
                                td class="num" { (human_ms(i64::try_from(b.dur).unwrap_or(i64::MAX))) }
                                td class="detail" { (b.detail) }
                                td class="bar-col" {
                                    svg class="bar" viewBox="0 0 1000 10" preserveAspectRatio="none" aria-hidden="true" {
                                        rect x=(x) y="0" width=(w) height="10" {}
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

/// `GET /console/sessions/{id}/graph.svg`: the workflow graph with this session's path
/// (done, current, blocked, skipped; a step completed more than once marked `×N`).
pub async fn graph_svg(
    State(c): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_id(&id)?;
    let engine = c.app.sup.engine();
    let s = engine
        .store()
        .session(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no session {id}")))?;
    let pinned = engine.pinned(s.workflow_hash).await?;
    let nodes = engine.store().nodes(id).await?;
    let svg = worktrain_workflow_tools::graph::to_svg(&pinned.workflow);
    let mut done: BTreeMap<&str, u32> = BTreeMap::new();
    let mut blocked: Vec<&str> = Vec::new();
    for n in current_path(&s, &nodes) {
        if n.status == NodeStatus::Completed {
            *done.entry(n.step_id.as_str()).or_default() += 1;
        }
        if n.attempts > 1 || (n.status == NodeStatus::Active && n.attempts > 0) {
            blocked.push(n.step_id.as_str());
        }
    }
    // Skipped steps are not nodes: they are in the (latest) events.
    let from = s.last_seq.0.saturating_sub(u64::from(MAX_EVENTS));
    let mut skipped: Vec<String> = Vec::new();
    for e in engine.store().events(id, Seq(from), MAX_EVENTS).await? {
        if let EventBody::StepSkipped { step_id, .. } = e.body
            && !done.contains_key(step_id.as_str())
        {
            skipped.push(step_id.as_str().to_owned());
        }
    }
    let current: Option<&StepId> = s.current.as_ref().map(|c| &c.step_id);
    let mut style = String::from("<style>");
    let sel = |step: &str| format!("#step_{} rect", svg_id(step));
    for step in done.keys() {
        let _ = write!(
            style,
            "{}{{fill:#c8e6c9;stroke:#2e7d32;stroke-width:2}}",
            sel(step)
        );
    }
    for step in &skipped {
        let _ = write!(
            style,
            "{}{{fill:#eeeeee;stroke:#9e9e9e;stroke-dasharray:2 2}}",
            sel(step)
        );
    }
    for step in &blocked {
        let _ = write!(
            style,
            "{}{{stroke:#c62828;stroke-dasharray:4 2;stroke-width:2.5}}",
            sel(step)
        );
    }
    if let Some(cur) = current {
        let _ = write!(
            style,
            "{}{{fill:#bbdefb;stroke:#0d47a1;stroke-width:3}}",
            sel(cur.as_str())
        );
    }
    style.push_str(".wt-iter{font:bold 11px sans-serif;fill:#1b5e20}</style>");
    // Our own rules go after the renderer's, so they win.
    let svg = match svg.find("</defs>") {
        Some(i) => format!("{}{}{}", &svg[..i], style, &svg[i..]),
        None => svg,
    };
    let svg = mark_passes(svg, &done);
    let mut resp = svg.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    // The SVG carries its own styles; nothing else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(resp)
}

/// Steps completed more than once on the session's path (loop iterations) get a `×N`
/// mark in the corner of their box.
fn mark_passes(mut svg: String, done: &BTreeMap<&str, u32>) -> String {
    for (step, n) in done.iter().filter(|(_, n)| **n > 1) {
        let open = format!("<g id=\"step_{}\">", xml_id(step));
        let Some(start) = svg.find(&open) else {
            continue;
        };
        let Some(end) = svg[start..].find("</g>").map(|e| start + e) else {
            continue;
        };
        let Some((x, y, w)) = first_rect(&svg[start..end]) else {
            continue;
        };
        let mark = format!(
            "<text class=\"wt-iter\" x=\"{}\" y=\"{}\" text-anchor=\"end\">×{n}<title>{n} passes</title></text>",
            x + w - 4.0,
            y + 12.0
        );
        svg.insert_str(end, &mark);
    }
    svg
}

/// `x`, `y` and `width` of the first `<rect>` in `group`.
fn first_rect(group: &str) -> Option<(f64, f64, f64)> {
    let rect = &group[group.find("<rect")?..];
    let rect = &rect[..rect.find('>')?];
    let attr = |name: &str| -> Option<f64> {
        let key = format!(" {name}=\"");
        let i = rect.find(&key)? + key.len();
        rect[i..].split('"').next()?.parse().ok()
    };
    Some((attr("x")?, attr("y")?, attr("width")?))
}

/// The renderer's XML id for a step key (see `worktrain_workflow_tools::graph`).
fn xml_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The renderer's element id for a step (see `worktrain_workflow_tools::graph`).
fn svg_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .replace('.', "\\.")
}

/// `POST /console/sessions/{id}/actions/{action}` (CSRF checked by the middleware).
pub async fn action(
    State(c): State<Console>,
    Path((id, action)): Path<(String, String)>,
    body: String,
) -> Result<Response, PageError> {
    let id = parse_id(&id)?;
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let sup = &c.app.sup;
    let outcome: Result<(), worktrain_core::error::ApiError> = match action.as_str() {
        "cancel" => sup.cancel(id, text("note")).await.map(drop),
        "steer" => match text("message") {
            Some(m) => sup.steer(id, m).await.map(drop),
            None => return Err(PageError::bad("a steer needs a message")),
        },
        "approve" => sup.approve(id, text("note")).await.map(drop),
        "reject" => match text("note") {
            Some(n) => sup.reject(id, n).await.map(drop),
            None => {
                return Err(PageError::bad(
                    "a rejection needs a note saying what to change",
                ));
            }
        },
        "resume" => sup.resume(id).await.map(drop),
        "retry" => sup.retry(id).await.map(drop),
        "retry-delivery" => sup.retry_delivery(id).await.map(drop),
        "rewind" => {
            let step = text("step").ok_or_else(|| PageError::bad("choose a step to rewind to"))?;
            let step = StepId::new(&step).map_err(|e| PageError::bad(e.to_string()))?;
            sup.engine()
                .rewind(
                    &SessionRef::Id(id),
                    &RewindTarget::Step(step),
                    Some("rewound from the console".to_owned()),
                )
                .await
                .map(drop)
        }
        other => return Err(PageError::not_found(format!("no action `{other}`"))),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(session_id = %id, action = %action, "console: operator action");
            Ok(Redirect::to(&format!("{BASE}/sessions/{id}")).into_response())
        }
        Err(e) => Err(PageError {
            status: axum::http::StatusCode::CONFLICT,
            message: format!("{action} failed: {} ({})", e.message, e.hint),
        }),
    }
}
