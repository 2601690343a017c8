//! Drawing the [`App`] into a ratatui frame. Pure: the same function draws into the real
//! terminal and into the test backend whose buffer the tests and `--dump` read.
//!
//! Everything is text first (labels, `✓`/`✗` marks, words for states): readable without
//! colour. Colour only repeats what the text says.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState, Wrap};
use serde_json::{Map, Value};
use worktrain_console::human_ms;
use worktrain_console::views::{elapsed_ms, source_link, status_label, tokens, trigger_kind};
use worktrain_core::activity::AgentActivity;
use worktrain_core::event::{EventBody, StoredEvent};
use worktrain_core::projection::SessionSummary;

use super::state::{App, Link, Trace, View};

/// Draw the whole screen.
pub(crate) fn draw(f: &mut Frame<'_>, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header_line(app)), header);
    match &app.view {
        View::List => sessions(f, body, app),
        View::Trace(t) => trace(f, body, app, t),
    }
    let hint = match (&app.confirm, &app.view) {
        (Some(_), _) => "y confirm · any other key: no",
        (None, View::List) => {
            "↑/↓ j/k select · Enter trace · f filter · c cancel · a approve · q quit"
        }
        (None, View::Trace(_)) => {
            "Esc back · ↑/↓ scroll · End live tail · c cancel · a approve · q quit"
        }
    };
    let message = app.message.clone().unwrap_or_default();
    let style = if app.confirm.is_some() {
        Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
    } else {
        Style::default()
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(message, style)),
            Line::from(Span::styled(hint, Style::default().fg(Color::DarkGray))),
        ]),
        footer,
    );
}

fn header_line(app: &App) -> Line<'static> {
    let count = |label: &str| {
        app.sessions
            .iter()
            .filter(|s| status_label(s) == label)
            .count()
    };
    let link = match &app.link {
        Link::Connecting => "connecting…".to_owned(),
        Link::Live => "live".to_owned(),
        Link::Down(why) => format!("stream down ({why}); reconnecting"),
    };
    Line::from(vec![
        Span::styled(
            "worktrain watch",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  {}  ·  {} sessions: {} running, {} queued, {} parked  ·  filter: {}  ·  {link}",
            app.daemon,
            app.sessions.len(),
            count("running"),
            count("queued"),
            count("parked"),
            app.filter.label(),
        )),
    ])
}

fn status_style(label: &str) -> Style {
    let c = match label {
        "running" | "in_progress" => Color::Cyan,
        "queued" => Color::Blue,
        "parked" | "blocked" | "interrupted" => Color::Yellow,
        "completed" | "complete" => Color::Green,
        "failed" | "cancelled" => Color::Red,
        _ => Color::Reset,
    };
    Style::default().fg(c)
}

/// What the source column says: the outside item, else what started the run.
pub(crate) fn source(s: &SessionSummary) -> String {
    match &s.run {
        Some(r) => match &r.trigger.source {
            Some(src) => src.as_str().to_owned(),
            None => trigger_kind(r.trigger.kind).to_owned(),
        },
        None => "interactive".to_owned(),
    }
}

/// The pull request's address, once delivery opened one.
pub(crate) fn pr_url(s: &SessionSummary) -> Option<&str> {
    s.run
        .as_ref()
        .and_then(|r| r.delivery.as_ref())
        .and_then(|d| d.pr_url.as_deref())
}

fn cost(s: &SessionSummary) -> String {
    if s.telemetry.cost_usd > 0.0 {
        format!("${:.2}", s.telemetry.cost_usd)
    } else {
        "—".to_owned()
    }
}

fn sessions(f: &mut Frame<'_>, area: Rect, app: &App) {
    let visible = app.visible();
    let rows: Vec<Row<'_>> = visible
        .iter()
        .map(|s| {
            let label = status_label(s);
            let t = &s.telemetry;
            Row::new(vec![
                Span::styled(label, status_style(label)),
                Span::raw(s.session_id.to_string()),
                Span::raw(s.workflow_id.as_str().to_owned()),
                Span::raw(one_line(&s.goal)),
                Span::raw(source(s)),
                Span::raw(
                    s.current
                        .as_ref()
                        .map(|c| c.step_id.as_str().to_owned())
                        .unwrap_or_else(|| "—".to_owned()),
                ),
                Span::raw(human_ms(elapsed_ms(s, app.now_ms))),
                Span::raw(tokens(t.input_tokens + t.output_tokens)),
                Span::raw(cost(s)),
                Span::raw(pr_url(s).unwrap_or("—").to_owned()),
            ])
        })
        .collect();
    let title = if visible.is_empty() {
        match app.filter.label() {
            "all" => " Sessions — none yet ".to_owned(),
            f => format!(" Sessions — none {f} (f: next filter) "),
        }
    } else {
        format!(" Sessions ({}) ", visible.len())
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(30),
            Constraint::Length(16),
            Constraint::Min(16),
            Constraint::Length(18),
            Constraint::Length(14),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(24),
        ],
    )
    .header(
        Row::new([
            "STATUS", "SESSION", "WORKFLOW", "GOAL", "SOURCE", "STEP", "ELAPSED", "TOKENS", "COST",
            "PR",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::default().borders(Borders::ALL).title(title))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(app.selected_index());
    f.render_stateful_widget(table, area, &mut state);
}

fn trace(f: &mut Frame<'_>, area: Rect, app: &App, t: &Trace) {
    let [head, body] = Layout::vertical([Constraint::Length(5), Constraint::Min(1)]).areas(area);
    let s = app.sessions.iter().find(|s| s.session_id == t.id);
    let head_lines = match s {
        Some(s) => {
            let label = status_label(s);
            let reason = s
                .run
                .as_ref()
                .and_then(|r| r.detail.clone())
                .map(|d| format!(" — {}", one_line(&d)))
                .unwrap_or_default();
            let src = source(s);
            let src = match source_link(&src) {
                Some(url) => format!("{src} <{url}>"),
                None => src,
            };
            vec![
                Line::from(vec![
                    Span::styled(format!("{label}{reason}"), status_style(label)),
                    Span::raw(format!(
                        "  ·  workflow {}  ·  step {}  ·  {} elapsed",
                        s.workflow_id.as_str(),
                        s.current
                            .as_ref()
                            .map(|c| c.step_id.as_str().to_owned())
                            .unwrap_or_else(|| "—".to_owned()),
                        human_ms(elapsed_ms(s, app.now_ms)),
                    )),
                ]),
                Line::from(format!("goal: {}", one_line(&s.goal))),
                Line::from(format!(
                    "source: {src}  ·  tokens {}  ·  cost {}  ·  PR {}",
                    tokens(s.telemetry.input_tokens + s.telemetry.output_tokens),
                    cost(s),
                    pr_url(s).unwrap_or("—"),
                )),
            ]
        }
        None => vec![Line::from("(session not in the list)")],
    };
    f.render_widget(
        Paragraph::new(head_lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Session {} ", t.id)),
        ),
        head,
    );
    let mut lines: Vec<Line<'static>> = Vec::new();
    if t.loading && t.events.is_empty() {
        lines.push(Line::from("loading…"));
    }
    for e in &t.events {
        lines.extend(trace_lines(e));
    }
    // Show the tail: the last lines that fit, `scroll_back` lines up from the end.
    let height = body.height.saturating_sub(2) as usize;
    let end = lines.len().saturating_sub(t.scroll_back);
    let start = end.saturating_sub(height);
    let shown: Vec<Line<'static>> = lines[start..end].to_vec();
    let title = if t.scroll_back == 0 {
        " Trace (live tail) ".to_owned()
    } else {
        format!(" Trace ({} lines up; End: live tail) ", t.scroll_back)
    };
    f.render_widget(
        Paragraph::new(shown)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        body,
    );
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

/// A trace line's fields in `k=v` form (`worktrain session log` style).
fn fields(v: &Value) -> String {
    let mut m: Map<String, Value> = v.as_object().cloned().unwrap_or_default();
    // Hashes and blob references say nothing to a person reading a trace.
    m.retain(|k, _| k != "type" && k != "response" && !k.ends_with("hash"));
    crate::cmd_session::summarize(&m)
}

/// The lines one event contributes to the trace: a headline, and for steps their notes.
pub(crate) fn trace_lines(e: &StoredEvent) -> Vec<Line<'static>> {
    let at = crate::output::time(e.created_at_ms);
    let clock = at.get(11..19).unwrap_or(&at).to_owned();
    let prefix = format!("{:>5} {clock} ", e.seq.0);
    let head = |style: Style, text: String| {
        Line::from(vec![Span::raw(prefix.clone()), Span::styled(text, style)])
    };
    let notes = |text: &str| -> Vec<Line<'static>> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .take(8)
            .map(|l| Line::from(format!("{:>15}│ {}", "", clip(l, 200))))
            .collect()
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    match &e.body {
        EventBody::NodeEntered { step_id, .. } => {
            vec![head(bold, format!("▶ step {}", step_id.as_str()))]
        }
        EventBody::StepCompleted { notes: n, .. } => {
            let mut v = vec![head(
                Style::default().fg(Color::Green),
                "✓ step completed".to_owned(),
            )];
            v.extend(notes(n));
            v
        }
        EventBody::StepParked { notes: n, .. } => {
            let mut v = vec![head(
                Style::default().fg(Color::Yellow),
                "⏸ parked at the gate: waiting for approval (a)".to_owned(),
            )];
            v.extend(notes(n));
            v
        }
        EventBody::StepBlocked { blockers, .. } => {
            let mut v = vec![head(
                Style::default().fg(Color::Red),
                format!("✗ blocked ({} blocker(s))", blockers.len()),
            )];
            v.extend(
                blockers
                    .iter()
                    .map(|b| Line::from(format!("{:>15}│ {}", "", clip(&b.message, 200)))),
            );
            v
        }
        EventBody::AgentActivity { activity } => vec![activity_line(&prefix, activity)],
        other => {
            let v = serde_json::to_value(other).unwrap_or(Value::Null);
            vec![head(
                Style::default(),
                format!("{} {}", other.kind().as_str(), fields(&v)),
            )]
        }
    }
}

fn activity_line(prefix: &str, a: &AgentActivity) -> Line<'static> {
    let dim = Style::default().fg(Color::DarkGray);
    let (style, text) = match a {
        AgentActivity::LlmTurn(t) => (
            dim,
            format!(
                "llm turn {} · {} · {} in / {} out tokens · {} · {}",
                t.turn,
                t.model,
                t.usage.input_tokens,
                t.usage.output_tokens,
                human_ms(i64::try_from(t.duration_ms).unwrap_or(i64::MAX)),
                t.stop_reason
            ),
        ),
        AgentActivity::ToolCall(c) => {
            let outcome = match (&c.error, c.exit_code) {
                (Some(err), _) => format!("✗ {}", clip(&err.message, 80)),
                (None, Some(code)) if code != 0 => format!("✗ exit {code}"),
                (None, _) => format!("✓ {} B", c.result_bytes),
            };
            let style = if c.error.is_some() {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            (
                style,
                format!(
                    "tool {} {} · {} · {outcome}",
                    c.name,
                    clip(&c.args, 60),
                    human_ms(i64::try_from(c.duration_ms).unwrap_or(i64::MAX)),
                ),
            )
        }
        AgentActivity::RunStarted { detail, .. } => (dim, format!("agent started ({detail})")),
        AgentActivity::Nudged { reason, count } => (
            Style::default().fg(Color::Yellow),
            format!(
                "nudged ({}, #{count})",
                serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        ),
        AgentActivity::SteeringDelivered { messages } => {
            (dim, format!("{messages} operator message(s) delivered"))
        }
        AgentActivity::IssueReported {
            title, blocking, ..
        } => (
            Style::default().fg(Color::Yellow),
            format!(
                "issue reported{}: {}",
                if *blocking { " (blocking)" } else { "" },
                clip(title, 120)
            ),
        ),
        AgentActivity::StepSubmitted { step, result } => (
            dim,
            format!(
                "submitted {step}: {}",
                serde_json::to_value(result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        ),
        AgentActivity::ProcessStarted { command, .. } => {
            (dim, format!("process started: {}", clip(command, 120)))
        }
        AgentActivity::Output { text, .. } => (Style::default(), clip(text, 200)),
        AgentActivity::ProcessExited { code, killed, .. } => (
            dim,
            format!(
                "process exited{}{}",
                code.map(|c| format!(" with {c}")).unwrap_or_default(),
                if *killed { " (killed)" } else { "" }
            ),
        ),
    };
    Line::from(vec![
        Span::raw(prefix.to_owned()),
        Span::styled(text, style),
    ])
}

/// A buffer as text: one line per row, trailing spaces trimmed (what `--dump` prints
/// and the tests read).
pub(crate) fn buffer_text(b: &Buffer) -> String {
    let area = b.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(b[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
