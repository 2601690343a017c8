//! `worktrain watch`: the sessions view and a session's live trace in a full-screen
//! terminal UI, for operators on a server without a browser.
//!
//! It reads the daemon's HTTP API with the same client and token as `status` and
//! `session cancel`, and follows the daemon's global event stream (SSE): each event is
//! folded into the sessions it concerns ([`state`]), and drawn ([`render`]). This module
//! is the thin loop between them: terminal keys, the stream, API calls, redraws.
//!
//! A hidden `--dump` mode runs the same loop against an off-screen buffer instead of the
//! terminal, follows a `--script` of waits and keys, and prints the frames: the
//! end-to-end tests drive the real daemon through it.

pub(crate) mod render;
pub(crate) mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use worktrain_agent::llm::sse::SseParser;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::StoredEvent;
use worktrain_core::ids::SessionId;
use worktrain_core::projection::SessionSummary;

use crate::Ctx;
use crate::cli::WatchArgs;
use crate::client::DaemonClient;
use crate::output::Exit;
use state::{Action, App, Effect, Filter, Link};

/// Sessions loaded at start (the newest); later ones arrive over the stream.
const FIRST_PAGE: u32 = 200;

/// Longest silence on the event stream before it is taken for dead and reopened.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// Events of a session loaded when its trace opens (its tail).
const TRACE_PAGE: u64 = 500;

/// What reaches the loop.
#[derive(Debug)]
enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// The terminal changed size (redraw).
    Resize,
    /// An event from the global stream.
    Event(Box<StoredEvent>),
    /// The stream's health changed.
    Link(Link),
    /// A session fetched again.
    Session(Box<SessionSummary>),
    /// A trace's first page.
    Trace(SessionId, Vec<StoredEvent>),
    /// A confirmed action returned.
    Done(Action, Result<(), String>),
    /// An API call failed (shown as the message).
    Failed(String),
    /// The clock (elapsed times).
    Tick,
}

#[derive(Deserialize)]
struct Page {
    sessions: Vec<SessionSummary>,
}

#[derive(Deserialize)]
struct EventsPage {
    events: Vec<StoredEvent>,
}

/// `GET /api/v1/sessions/{id}` as a summary. That answer carries `nodes` twice — the
/// summary's node count and the step graph (the graph comes last, and wins in a JSON
/// map) — so the count is taken back from the graph's length.
async fn fetch_summary(client: &DaemonClient, id: SessionId) -> Result<SessionSummary, ApiError> {
    let mut v: Value = client.get(&format!("/api/v1/sessions/{id}")).await?;
    if let Some(graph) = v.get("nodes").and_then(Value::as_array) {
        let count = graph.len();
        v["nodes"] = json!(count);
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::internal(format!(
            "the daemon's answer about session {id} does not parse: {e}"
        ))
    })
}

/// `worktrain watch`.
pub(crate) async fn run(ctx: &Ctx, a: WatchArgs) -> Result<Exit, ApiError> {
    let filter = match a.status.as_deref() {
        None => Filter::All,
        Some(s) => Filter::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("unknown status `{s}`"),
                Retry::AfterFix,
                "use all, a run state (queued, running, parked, interrupted, completed, failed, \
                 cancelled) or, for sessions without a run, in_progress, blocked, parked, complete",
            )
        })?,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if !a.dump && !tty {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "worktrain watch needs an interactive terminal (stdin and stdout are not both a TTY)",
            Retry::AfterFix,
            "use `worktrain status` for a one-off briefing, or `worktrain sessions --json` \
             and `worktrain session log ID --follow` in scripts",
        ));
    }
    let client = Arc::new(DaemonClient::new(ctx)?);
    let mut app = App::new(client.base(), filter, worktrain_store::now_ms());
    // Where the stream starts: the newest event before the list is read, so nothing
    // falls between the two (events already in the list are skipped by their seq).
    let head = head_position(&client).await?;
    let page: Page = client
        .json(
            reqwest::Method::GET,
            &format!("/api/v1/sessions?limit={FIRST_PAGE}"),
            None,
        )
        .await?;
    app.load(page.sessions);
    if let Some(id) = a.session.as_deref() {
        let id = id.parse::<SessionId>().map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("--session: {e}"),
                Retry::AfterFix,
                "pass a session id as `worktrain sessions` prints it",
            )
        })?;
        let s = fetch_summary(&client, id).await?;
        app.upsert(s);
        app.selected = Some(id);
    }
    let (tx, rx) = mpsc::channel::<Msg>(1024);
    let stream = tokio::spawn(follow(client.clone(), head, tx.clone()));
    let ticker = tokio::spawn(tick(tx.clone()));
    let result = if a.dump {
        let (w, h) = a.size;
        let term = Terminal::new(TestBackend::new(w, h))
            .map_err(|e| ApiError::internal(format!("cannot make the off-screen buffer: {e}")))?;
        let script = Script::parse(&a.script)?;
        dump(term, app, client, tx, rx, script, a.open(), a.timeout).await
    } else {
        interactive(app, client, tx, rx, a.open()).await
    };
    stream.abort();
    ticker.abort();
    result
}

/// The global position of the newest event (0 for an empty store).
async fn head_position(client: &DaemonClient) -> Result<u64, ApiError> {
    let page: Page = client
        .json(reqwest::Method::GET, "/api/v1/sessions?limit=1", None)
        .await?;
    let Some(newest) = page.sessions.first() else {
        return Ok(0);
    };
    let after = newest.last_seq.0.saturating_sub(1);
    let events: EventsPage = client
        .json(
            reqwest::Method::GET,
            &format!(
                "/api/v1/sessions/{}/events?after={after}&limit=1",
                newest.session_id
            ),
            None,
        )
        .await?;
    Ok(events.events.first().map(|e| e.position).unwrap_or(0))
}

/// Follow the global event stream from `after`, reconnecting (with a growing pause, at
/// most 10 s) where the last event left off, until the loop goes away.
async fn follow(client: Arc<DaemonClient>, mut after: u64, tx: mpsc::Sender<Msg>) {
    let mut pause = Duration::from_millis(500);
    loop {
        match client
            .stream(&format!("/api/v1/events/stream?after={after}"))
            .await
        {
            Ok(mut resp) => {
                if tx.send(Msg::Link(Link::Live)).await.is_err() {
                    return;
                }
                pause = Duration::from_millis(500);
                let mut parser = SseParser::default();
                let why = loop {
                    // The daemon sends a keep-alive comment every 15 s: a longer silence
                    // is a dead connection (a half-open TCP connection never errors).
                    let Ok(next) = tokio::time::timeout(STREAM_IDLE, resp.chunk()).await else {
                        break format!("no data for {}s", STREAM_IDLE.as_secs());
                    };
                    match next {
                        Ok(Some(bytes)) => {
                            for ev in parser.push(&bytes) {
                                match ev.event.as_deref() {
                                    Some("shutdown") => {}
                                    _ => match serde_json::from_str::<StoredEvent>(&ev.data) {
                                        Ok(e) => {
                                            after = after.max(e.position);
                                            if tx.send(Msg::Event(Box::new(e))).await.is_err() {
                                                return;
                                            }
                                        }
                                        Err(e) => {
                                            tracing::warn!(error = %e, "watch: an event does not parse");
                                        }
                                    },
                                }
                            }
                        }
                        Ok(None) => break "the daemon closed the stream".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                };
                if tx.send(Msg::Link(Link::Down(why))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Msg::Link(Link::Down(e.message))).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

async fn tick(tx: mpsc::Sender<Msg>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        if tx.send(Msg::Tick).await.is_err() {
            return;
        }
    }
}

/// Apply one message to the state; returns the effects to carry out.
fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(k) => app.key(k),
        Msg::Resize => Vec::new(),
        Msg::Event(e) => app.apply_event(&e),
        Msg::Link(l) => {
            app.link = l;
            Vec::new()
        }
        Msg::Session(s) => {
            app.upsert(*s);
            Vec::new()
        }
        Msg::Trace(id, events) => {
            app.trace_loaded(id, events);
            Vec::new()
        }
        Msg::Done(action, r) => {
            app.action_done(action, r);
            Vec::new()
        }
        Msg::Failed(e) => {
            app.message = Some(format!("error: {e}"));
            Vec::new()
        }
        Msg::Tick => {
            app.now_ms = worktrain_store::now_ms();
            Vec::new()
        }
    }
}

/// Carry out effects (API calls in the background, answering through `tx`); true when
/// one of them is to quit.
fn execute(
    app: &App,
    effects: Vec<Effect>,
    client: &Arc<DaemonClient>,
    tx: &mpsc::Sender<Msg>,
) -> bool {
    let mut quit = false;
    for effect in effects {
        let (client, tx) = (client.clone(), tx.clone());
        match effect {
            Effect::Quit => quit = true,
            Effect::Refetch(id) => {
                tokio::spawn(async move {
                    let r = fetch_summary(&client, id).await;
                    let msg = match r {
                        Ok(s) => Msg::Session(Box::new(s)),
                        Err(e) => Msg::Failed(e.message),
                    };
                    let _ = tx.send(msg).await;
                });
            }
            Effect::LoadTrace(id) => {
                let last = app
                    .sessions
                    .iter()
                    .find(|s| s.session_id == id)
                    .map(|s| s.last_seq.0)
                    .unwrap_or(0);
                let after = last.saturating_sub(TRACE_PAGE);
                tokio::spawn(async move {
                    let r: Result<EventsPage, ApiError> = client
                        .json(
                            reqwest::Method::GET,
                            &format!("/api/v1/sessions/{id}/events?after={after}&limit=1000"),
                            None,
                        )
                        .await;
                    let msg = match r {
                        Ok(p) => Msg::Trace(id, p.events),
                        Err(e) => Msg::Failed(e.message),
                    };
                    let _ = tx.send(msg).await;
                });
            }
            Effect::Run(action) => {
                tokio::spawn(async move {
                    let (id, verb) = match action {
                        Action::Cancel(id) => (id, "cancel"),
                        Action::Approve(id) => (id, "approve"),
                    };
                    let r = client
                        .post(
                            &format!("/api/v1/sessions/{id}/{verb}"),
                            &json!({ "note": "from worktrain watch" }),
                        )
                        .await
                        .map(|_: Value| ())
                        .map_err(|e| e.message);
                    let _ = tx.send(Msg::Done(action, r)).await;
                });
            }
        }
    }
    quit
}

/// The terminal, put back however the loop ends (also on a panic: ratatui's hook).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn interactive(
    mut app: App,
    client: Arc<DaemonClient>,
    tx: mpsc::Sender<Msg>,
    mut rx: mpsc::Receiver<Msg>,
    open: bool,
) -> Result<Exit, ApiError> {
    let mut term = ratatui::try_init()
        .map_err(|e| ApiError::internal(format!("cannot set up the terminal: {e}")))?;
    let _restore = Restore;
    let stop = Arc::new(AtomicBool::new(false));
    let keys = {
        let (stop, tx) = (stop.clone(), tx.clone());
        std::thread::spawn(move || read_keys(&stop, &tx))
    };
    if open {
        let effects = app.key(state::press(KeyCode::Enter));
        execute(&app, effects, &client, &tx);
    }
    let result = loop {
        if let Err(e) = term.draw(|f| render::draw(f, &app)) {
            break Err(ApiError::internal(format!("cannot draw: {e}")));
        }
        let Some(msg) = rx.recv().await else {
            break Ok(Exit::Ok);
        };
        // Everything already waiting goes in before the next draw (one redraw per burst).
        let mut quit = false;
        let mut next = Some(msg);
        while let Some(msg) = next {
            let effects = update(&mut app, msg);
            quit |= execute(&app, effects, &client, &tx);
            next = rx.try_recv().ok();
        }
        if quit {
            break Ok(Exit::Ok);
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = keys.join();
    result
}

/// Terminal events → the loop (a blocking reader on its own thread).
fn read_keys(stop: &AtomicBool, tx: &mpsc::Sender<Msg>) {
    use crossterm::event::{Event, poll, read};
    while !stop.load(Ordering::Relaxed) {
        match poll(Duration::from_millis(200)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let msg = match read() {
            Ok(Event::Key(k)) => Msg::Key(k),
            Ok(Event::Resize(..)) => Msg::Resize,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.blocking_send(msg).is_err() {
            return;
        }
    }
}

/// One step of a `--dump` script.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Wait until the screen shows this text.
    Wait(String),
    /// Press this key.
    Key(KeyCode),
}

/// The `--script` of a `--dump` run.
#[derive(Debug)]
struct Script(std::collections::VecDeque<Step>);

impl Script {
    fn parse(steps: &[String]) -> Result<Self, ApiError> {
        let bad = |s: &str| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("--script step `{s}` is neither wait=TEXT nor key=NAME"),
                Retry::AfterFix,
                "keys: a single character, enter, esc, up, down, end",
            )
        };
        steps
            .iter()
            .map(|s| {
                if let Some(text) = s.strip_prefix("wait=") {
                    return Ok(Step::Wait(text.to_owned()));
                }
                let name = s.strip_prefix("key=").ok_or_else(|| bad(s))?;
                let code = match name {
                    "enter" => KeyCode::Enter,
                    "esc" => KeyCode::Esc,
                    "up" => KeyCode::Up,
                    "down" => KeyCode::Down,
                    "end" => KeyCode::End,
                    one if one.chars().count() == 1 => {
                        KeyCode::Char(one.chars().next().ok_or_else(|| bad(s))?)
                    }
                    _ => return Err(bad(s)),
                };
                Ok(Step::Key(code))
            })
            .collect::<Result<_, _>>()
            .map(Script)
    }
}

#[allow(clippy::too_many_arguments)]
async fn dump<B: Backend>(
    mut term: Terminal<B>,
    mut app: App,
    client: Arc<DaemonClient>,
    tx: mpsc::Sender<Msg>,
    mut rx: mpsc::Receiver<Msg>,
    mut script: Script,
    open: bool,
    timeout: Duration,
) -> Result<Exit, ApiError>
where
    B::Error: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    let mut frames = 0u32;
    let mut print = |text: &str, why: &str| {
        frames += 1;
        say!("--- frame {frames}: {why} ---\n{text}--- end of frame {frames} ---");
    };
    if open {
        let effects = app.key(state::press(KeyCode::Enter));
        execute(&app, effects, &client, &tx);
    }
    loop {
        let text = match term.draw(|f| render::draw(f, &app)) {
            Ok(done) => render::buffer_text(done.buffer),
            Err(e) => return Err(ApiError::internal(format!("cannot draw: {e}"))),
        };
        // Run the script as far as this frame allows.
        let mut pressed = false;
        while let Some(step) = script.0.front().cloned() {
            match step {
                Step::Wait(want) if text.contains(&want) => {
                    print(&text, &format!("saw `{want}`"));
                    script.0.pop_front();
                }
                Step::Wait(_) => break,
                Step::Key(code) => {
                    script.0.pop_front();
                    let effects = app.key(state::press(code));
                    if execute(&app, effects, &client, &tx) {
                        print(&text, "quit");
                        return Ok(Exit::Ok);
                    }
                    pressed = true;
                    break;
                }
            }
        }
        if pressed {
            continue;
        }
        if script.0.is_empty() {
            print(&text, "script done");
            return Ok(Exit::Ok);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                print(&text, "timed out");
                let want = match script.0.front() {
                    Some(Step::Wait(w)) => w.clone(),
                    Some(Step::Key(_)) | None => String::new(),
                };
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("watch --dump: timed out after {timeout:?} waiting for `{want}`"),
                    Retry::Never,
                    "the last frame is printed above",
                ));
            }
        };
        let effects = update(&mut app, msg);
        if execute(&app, effects, &client, &tx) {
            print(&text, "quit");
            return Ok(Exit::Ok);
        }
    }
}

#[cfg(test)]
mod tests;
