//! The watch screen without a terminal: state folded from real event bodies, drawn into
//! ratatui's test backend, and the buffer's text read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::Map;
use worktrain_core::activity::{AgentActivity, LlmTurnRecord, ToolCallRecord, Usage};
use worktrain_core::compile::{Pc, StepIndex};
use worktrain_core::event::{EntryCause, EventBody, SessionMode, StoredEvent};
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, StepId, WorkflowId};
use worktrain_core::projection::{SessionSummary, apply};
use worktrain_core::run::{RunLimits, SourceRef, Trigger, TriggerKind};

use super::state::{Action, App, Effect, Filter, View, press};
use super::{Script, Step, render};

const T0: i64 = 1_800_000_000_000;

fn sid(n: u128) -> SessionId {
    SessionId::from_parts(T0 as u64 + n as u64, n)
}

fn ev(id: SessionId, seq: u64, body: EventBody) -> StoredEvent {
    StoredEvent {
        position: 1000 + seq,
        session_id: id,
        seq: Seq(seq),
        created_at_ms: T0 + seq as i64 * 1000,
        idempotency_key: None,
        prev_hash: Sha256Hash::ZERO,
        hash: Sha256Hash::ZERO,
        body,
    }
}

fn started(goal: &str) -> EventBody {
    EventBody::SessionStarted {
        workflow_id: WorkflowId::new("e2e-two").unwrap(),
        workflow_hash: Sha256Hash::ZERO,
        workflow_version: "1".into(),
        workflow_source: "bundled".into(),
        goal: goal.into(),
        workspace: None,
        branch: None,
        context: Map::new(),
        mode: SessionMode::Autonomous,
        parent: None,
    }
}

fn queued() -> EventBody {
    let mut trigger = Trigger::new(TriggerKind::Webhook, Some("gh".into()));
    trigger.source = Some(SourceRef::parse("github:o/r#12").unwrap());
    EventBody::RunQueued {
        agent: "default".into(),
        trigger,
        limits: RunLimits::default(),
        priority: 0,
        readonly: false,
        base: None,
        dispatch_key: None,
    }
}

fn run_started() -> EventBody {
    EventBody::RunStarted {
        run: 1,
        worker: "w".into(),
        worktree: None,
        branch: None,
    }
}

fn entered(node: u32, step: &str) -> EventBody {
    EventBody::NodeEntered {
        node: NodeId(node),
        step_id: StepId::new(step).unwrap(),
        step: StepIndex(node - 1),
        pc: Pc(node - 1),
        parent: None,
        cause: EntryCause::Start,
        requires_confirmation: false,
    }
}

fn tool(name: &str, args: &str) -> EventBody {
    EventBody::AgentActivity {
        activity: AgentActivity::ToolCall(ToolCallRecord {
            turn: 1,
            name: name.into(),
            args: args.into(),
            duration_ms: 12,
            result_bytes: 34,
            exit_code: Some(0),
            error: None,
            args_digest: None,
            result_digest: None,
            change: None,
            output_tail: None,
        }),
    }
}

fn turn() -> EventBody {
    EventBody::AgentActivity {
        activity: AgentActivity::LlmTurn(LlmTurnRecord {
            turn: 1,
            model: "fake-model".into(),
            usage: Usage {
                input_tokens: 1200,
                output_tokens: 300,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
            },
            stop_reason: "tool_use".into(),
            duration_ms: 40,
            attempts: 1,
            tool_calls: 1,
            cost_usd: None,
        }),
    }
}

/// The events of a running session on its first step, folded like the store does.
fn running_session(n: u128, goal: &str) -> (SessionSummary, Vec<StoredEvent>) {
    let id = sid(n);
    let events = vec![
        ev(id, 1, started(goal)),
        ev(id, 2, queued()),
        ev(id, 3, run_started()),
        ev(id, 4, entered(1, "first")),
        ev(id, 5, turn()),
        ev(id, 6, tool("shell", "{\"command\":\"cargo test\"}")),
    ];
    let mut s = None;
    for e in &events {
        s = Some(apply(s, e).unwrap().0);
    }
    (s.unwrap(), events)
}

fn screen(app: &App) -> String {
    let mut term = Terminal::new(TestBackend::new(200, 24)).unwrap();
    let frame = term.draw(|f| render::draw(f, app)).unwrap();
    render::buffer_text(frame.buffer)
}

/// The screen line that shows session `id`.
fn row_of(text: &str, id: SessionId) -> String {
    text.lines()
        .find(|l| l.contains(&id.to_string()))
        .unwrap_or_else(|| panic!("no row for {id} in\n{text}"))
        .to_owned()
}

#[test]
fn a_session_row_shows_status_workflow_goal_source_step_and_tokens() {
    let (s, _) = running_session(1, "fix the flaky test");
    let id = s.session_id;
    let mut app = App::new("http://127.0.0.1:7878", Filter::All, T0 + 65_000);
    app.load(vec![s]);
    let text = screen(&app);
    let row = row_of(&text, id);
    for want in [
        "running",
        "e2e-two",
        "fix the flaky test",
        "github:o/r#12",
        "first",
        "1.5k",
    ] {
        assert!(row.contains(want), "`{want}` missing from the row: {row}");
    }
    assert!(text.contains("STATUS") && text.contains("ELAPSED") && text.contains("PR"));
    assert!(
        text.contains("1 sessions: 1 running, 0 queued, 0 parked"),
        "{text}"
    );
}

#[test]
fn a_streamed_event_moves_the_row_and_a_new_session_appears() {
    let id = sid(2);
    let mut app = App::new("d", Filter::All, T0);
    let mut s = None;
    for e in [ev(id, 1, started("g")), ev(id, 2, queued())] {
        s = Some(apply(s, &e).unwrap().0);
    }
    app.load(vec![s.unwrap()]);
    assert!(row_of(&screen(&app), id).contains("queued"));

    // The run starts: the fold moves the row on, no refetch needed.
    assert!(app.apply_event(&ev(id, 3, run_started())).is_empty());
    let row = row_of(&screen(&app), id);
    assert!(row.contains("running") && !row.contains("queued"), "{row}");
    // A replayed event changes nothing.
    assert!(app.apply_event(&ev(id, 2, queued())).is_empty());
    assert!(row_of(&screen(&app), id).contains("running"));
    // A gap asks for the session again.
    assert_eq!(
        app.apply_event(&ev(id, 9, turn())),
        vec![Effect::Refetch(id)]
    );

    // A session started after the list was read appears from its first event.
    let other = sid(3);
    assert!(
        app.apply_event(&ev(other, 1, started("brand new")))
            .is_empty()
    );
    let text = screen(&app);
    assert!(row_of(&text, other).contains("brand new"), "{text}");
    // An unknown session seen mid-way is fetched.
    assert_eq!(
        app.apply_event(&ev(sid(4), 5, turn())),
        vec![Effect::Refetch(sid(4))]
    );
}

#[test]
fn selection_moves_and_enter_opens_the_live_trace_and_esc_goes_back() {
    let (a, _) = running_session(10, "older");
    let (b, events) = running_session(11, "newer");
    let (ida, idb) = (a.session_id, b.session_id);
    let mut app = App::new("d", Filter::All, T0);
    app.load(vec![a, b]);
    // Newest first; the first row is selected.
    assert_eq!(app.current().unwrap().session_id, idb);
    assert!(row_of(&screen(&app), idb).starts_with("│> "));
    app.key(press(KeyCode::Char('j')));
    assert_eq!(app.current().unwrap().session_id, ida);
    assert!(row_of(&screen(&app), ida).starts_with("│> "));
    app.key(press(KeyCode::Up));
    assert_eq!(app.current().unwrap().session_id, idb);

    assert_eq!(app.key(press(KeyCode::Enter)), vec![Effect::LoadTrace(idb)]);
    assert!(screen(&app).contains("loading…"));
    app.trace_loaded(idb, events);
    let text = screen(&app);
    for want in [
        &format!("Session {idb}"),
        "goal: newer",
        "▶ step first",
        "llm turn 1 · fake-model · 1200 in / 300 out tokens",
        "tool shell {\"command\":\"cargo test\"}",
        "Trace (live tail)",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    // The live tail: the next streamed events of this session are appended.
    app.apply_event(&ev(
        idb,
        7,
        EventBody::StepCompleted {
            node: NodeId(1),
            attempt: Attempt(1),
            output_hash: Sha256Hash::ZERO,
            notes: "All green.\nSecond line of notes.".into(),
            artifacts: Vec::new(),
            context_delta: Map::new(),
            response: Sha256Hash::ZERO,
            loop_decision: None,
        },
    ));
    app.apply_event(&ev(idb, 8, entered(2, "second")));
    let text = screen(&app);
    assert!(text.contains("✓ step completed"), "{text}");
    assert!(text.contains("│ All green."), "{text}");
    assert!(text.contains("▶ step second"), "{text}");
    assert!(text.contains("step second  ·"), "header follows: {text}");
    // Another session's events do not reach this trace.
    app.apply_event(&ev(ida, 7, tool("read_file", "elsewhere")));
    assert!(!screen(&app).contains("elsewhere"));

    app.key(press(KeyCode::Esc));
    assert!(matches!(app.view, View::List));
    assert!(screen(&app).contains("Sessions (2)"));
}

#[test]
fn cancel_and_approve_ask_first_and_only_apply_where_they_can() {
    let (s, _) = running_session(20, "g");
    let id = s.session_id;
    let mut app = App::new("d", Filter::All, T0);
    app.load(vec![s]);

    assert!(app.key(press(KeyCode::Char('c'))).is_empty());
    assert_eq!(app.confirm, Some(Action::Cancel(id)));
    assert!(screen(&app).contains(&format!("Cancel session {id}? (y/n)")));
    // Anything but `y` says no.
    assert!(app.key(press(KeyCode::Char('n'))).is_empty());
    assert_eq!(app.confirm, None);
    assert!(screen(&app).contains("not done"));

    app.key(press(KeyCode::Char('c')));
    assert_eq!(
        app.key(press(KeyCode::Char('y'))),
        vec![Effect::Run(Action::Cancel(id))]
    );
    app.action_done(Action::Cancel(id), Ok(()));
    assert!(screen(&app).contains(&format!("cancel requested for {id}")));

    // Approve needs a parked session.
    assert!(app.key(press(KeyCode::Char('a'))).is_empty());
    assert_eq!(app.confirm, None);
    assert!(screen(&app).contains("is not parked at a gate"));

    // An error from the daemon is shown as it came.
    app.action_done(Action::Approve(id), Err("no gate is waiting".into()));
    assert!(screen(&app).contains("error: no gate is waiting"));

    assert_eq!(app.key(press(KeyCode::Char('q'))), vec![Effect::Quit]);
}

#[test]
fn the_filter_hides_other_states_and_cycles() {
    let (running, _) = running_session(30, "busy");
    let id = sid(31);
    let mut s = None;
    for e in [ev(id, 1, started("waiting")), ev(id, 2, queued())] {
        s = Some(apply(s, &e).unwrap().0);
    }
    let mut app = App::new("d", Filter::parse("queued").unwrap(), T0);
    app.load(vec![running, s.unwrap()]);
    let text = screen(&app);
    assert!(text.contains("waiting") && !text.contains("busy"), "{text}");
    assert!(text.contains("filter: queued"));
    app.key(press(KeyCode::Char('f')));
    let text = screen(&app);
    assert!(text.contains("filter: running") && text.contains("busy") && !text.contains("waiting"));
    app.key(press(KeyCode::Char('f')));
    assert!(screen(&app).contains("none parked"));
    assert_eq!(Filter::parse("in_progress").unwrap().label(), "in_progress");
    assert_eq!(Filter::parse("all"), Some(Filter::All));
    assert_eq!(Filter::parse("sleeping"), None);
}

#[test]
fn dump_scripts_parse_waits_and_keys() {
    let s = Script::parse(&["wait=running".into(), "key=enter".into(), "key=y".into()]).unwrap();
    assert_eq!(
        s.0.into_iter().collect::<Vec<_>>(),
        vec![
            Step::Wait("running".into()),
            Step::Key(KeyCode::Enter),
            Step::Key(KeyCode::Char('y')),
        ]
    );
    let e = Script::parse(&["press=x".into()]).unwrap_err();
    assert!(e.message.contains("press=x"), "{}", e.message);
}
