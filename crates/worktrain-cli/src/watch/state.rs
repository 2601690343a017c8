//! What `worktrain watch` shows, and how keys and the daemon's events change it. Pure:
//! no terminal, no network — the event loop feeds it and carries out the [`Effect`]s it
//! returns, and the tests drive it directly.
//!
//! Sessions are kept as the API's summaries and moved forward by folding each streamed
//! event with [`worktrain_core::projection::apply`] — the same fold the store uses for
//! its projection, so a row says what the daemon would say. An event that does not
//! follow a row (a gap, or a session not yet seen mid-way) asks for that session again.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use worktrain_core::event::StoredEvent;
use worktrain_core::ids::SessionId;
use worktrain_core::projection::{SessionStatus, SessionSummary, apply};
use worktrain_core::run::RunState;

/// Sessions kept in memory: the newest ones (older finished sessions are dropped first).
pub(crate) const MAX_SESSIONS: usize = 500;

/// Events kept for the open trace (its tail).
pub(crate) const MAX_TRACE: usize = 2000;

/// Which sessions the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Every session.
    All,
    /// Daemon runs in this state.
    Run(RunState),
    /// Sessions without a daemon run (interactive) with this workflow status.
    Interactive(SessionStatus),
}

impl Filter {
    /// Every filter, in the order `f` cycles through them.
    fn cycle() -> Vec<Filter> {
        let mut v = vec![Filter::All];
        v.extend(RunState::ALL.into_iter().map(Filter::Run));
        v.extend(SessionStatus::ALL.into_iter().map(Filter::Interactive));
        v
    }

    /// Parse `--status`: a run state (`running`, `parked`, …) or a workflow status
    /// (`in_progress`, `complete`, …) of sessions without a run; `all` for none.
    pub(crate) fn parse(s: &str) -> Option<Filter> {
        if s == "all" {
            return Some(Filter::All);
        }
        RunState::parse(s)
            .map(Filter::Run)
            .or_else(|| SessionStatus::parse(s).map(Filter::Interactive))
    }

    /// The label in the header.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Run(r) => r.as_str(),
            Filter::Interactive(s) => s.as_str(),
        }
    }

    /// Whether `s` passes.
    pub(crate) fn accepts(self, s: &SessionSummary) -> bool {
        match (self, &s.run) {
            (Filter::All, _) => true,
            (Filter::Run(want), Some(r)) => r.state == want,
            (Filter::Run(_), None) => false,
            (Filter::Interactive(want), None) => s.status == want,
            (Filter::Interactive(_), Some(_)) => false,
        }
    }

    fn next(self) -> Filter {
        let all = Filter::cycle();
        let i = all.iter().position(|f| *f == self).unwrap_or(0);
        all[(i + 1) % all.len()]
    }
}

/// An operator action waiting for its `y`/`n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Cancel the session's run.
    Cancel(SessionId),
    /// Approve the gate the session is parked at.
    Approve(SessionId),
}

impl Action {
    /// The question asked before doing it.
    pub(crate) fn question(self) -> String {
        match self {
            Action::Cancel(id) => format!("Cancel session {id}? (y/n)"),
            Action::Approve(id) => format!("Approve the gate of session {id}? (y/n)"),
        }
    }

    /// What happened, once the daemon said yes.
    pub(crate) fn done(self) -> String {
        match self {
            Action::Cancel(id) => format!("cancel requested for {id}"),
            Action::Approve(id) => format!("approved {id}"),
        }
    }
}

/// What the event loop must do for the state (network calls, quitting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Fetch this session again (`GET /api/v1/sessions/{id}`) and [`App::upsert`] it.
    Refetch(SessionId),
    /// Load the tail of this session's events and [`App::trace_loaded`] them.
    LoadTrace(SessionId),
    /// Carry out a confirmed action and report with [`App::action_done`].
    Run(Action),
    /// Leave.
    Quit,
}

/// The open trace of one session.
#[derive(Debug)]
pub(crate) struct Trace {
    /// Whose.
    pub id: SessionId,
    /// The tail of its events, in order.
    pub events: VecDeque<StoredEvent>,
    /// Still loading its first page.
    pub loading: bool,
    /// Lines scrolled back from the end (0 follows the live tail).
    pub scroll_back: usize,
}

impl Trace {
    fn last_seq(&self) -> u64 {
        self.events.back().map(|e| e.seq.0).unwrap_or(0)
    }
}

/// Which screen is up.
#[derive(Debug)]
pub(crate) enum View {
    /// The sessions list.
    List,
    /// One session's live trace.
    Trace(Trace),
}

/// The live stream's health, shown in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not connected yet.
    Connecting,
    /// Receiving.
    Live,
    /// Lost; reconnecting (with why).
    Down(String),
}

/// Everything on screen.
#[derive(Debug)]
pub(crate) struct App {
    /// The daemon's address (header).
    pub daemon: String,
    /// Known sessions, newest first (by creation).
    pub sessions: Vec<SessionSummary>,
    /// The list filter.
    pub filter: Filter,
    /// Selected session (kept across re-sorting and filtering).
    pub selected: Option<SessionId>,
    /// The screen.
    pub view: View,
    /// An action asked for and not yet confirmed.
    pub confirm: Option<Action>,
    /// The last message for the operator (action results, errors).
    pub message: Option<String>,
    /// The live stream.
    pub link: Link,
    /// Now, ms since the epoch (elapsed times; set by the loop's clock tick).
    pub now_ms: i64,
}

impl App {
    /// An empty screen for `daemon`.
    pub(crate) fn new(daemon: impl Into<String>, filter: Filter, now_ms: i64) -> Self {
        Self {
            daemon: daemon.into(),
            sessions: Vec::new(),
            filter,
            selected: None,
            view: View::List,
            confirm: None,
            message: None,
            link: Link::Connecting,
            now_ms,
        }
    }

    /// The sessions the list shows, in order.
    pub(crate) fn visible(&self) -> Vec<&SessionSummary> {
        self.sessions
            .iter()
            .filter(|s| self.filter.accepts(s))
            .collect()
    }

    /// The selected session, when it is visible (else the first visible one).
    pub(crate) fn current(&self) -> Option<&SessionSummary> {
        let visible = self.visible();
        self.selected
            .and_then(|id| visible.iter().find(|s| s.session_id == id).copied())
            .or_else(|| visible.first().copied())
    }

    /// Index of the selected row among the visible ones.
    pub(crate) fn selected_index(&self) -> Option<usize> {
        let id = self.current()?.session_id;
        self.visible().iter().position(|s| s.session_id == id)
    }

    /// Replace or add a session as the API returned it.
    pub(crate) fn upsert(&mut self, s: SessionSummary) {
        match self
            .sessions
            .iter_mut()
            .find(|x| x.session_id == s.session_id)
        {
            Some(x) => {
                // A slower answer must not move a row back in time.
                if s.last_seq >= x.last_seq {
                    *x = s;
                }
            }
            None => self.sessions.push(s),
        }
        self.tidy();
    }

    /// The first page from the API.
    pub(crate) fn load(&mut self, sessions: Vec<SessionSummary>) {
        for s in sessions {
            self.upsert(s);
        }
    }

    /// Newest first; at most [`MAX_SESSIONS`], dropping the oldest finished ones first.
    fn tidy(&mut self) {
        self.sessions.sort_by(|a, b| {
            b.created_at_ms
                .cmp(&a.created_at_ms)
                .then_with(|| b.session_id.to_string().cmp(&a.session_id.to_string()))
        });
        while self.sessions.len() > MAX_SESSIONS {
            let drop = self
                .sessions
                .iter()
                .rposition(|s| !is_live(s))
                .unwrap_or(self.sessions.len() - 1);
            self.sessions.remove(drop);
        }
    }

    /// One event from the daemon's global stream.
    pub(crate) fn apply_event(&mut self, e: &StoredEvent) -> Vec<Effect> {
        let mut effects = Vec::new();
        let id = e.session_id;
        match self.sessions.iter().position(|s| s.session_id == id) {
            Some(i) => {
                let last = self.sessions[i].last_seq.0;
                if e.seq.0 <= last {
                    // Already folded in (the stream starts a little before the list).
                } else if e.seq.0 == last + 1 {
                    match apply(Some(self.sessions[i].clone()), e) {
                        Ok((next, _)) => self.sessions[i] = next,
                        Err(_) => effects.push(Effect::Refetch(id)),
                    }
                } else {
                    effects.push(Effect::Refetch(id));
                }
            }
            None if e.seq.0 == 1 => match apply(None, e) {
                Ok((s, _)) => {
                    self.sessions.push(s);
                    self.tidy();
                }
                Err(_) => effects.push(Effect::Refetch(id)),
            },
            None => effects.push(Effect::Refetch(id)),
        }
        if let View::Trace(t) = &mut self.view
            && t.id == id
            && !t.loading
        {
            let last = t.last_seq();
            if e.seq.0 == last + 1 {
                t.events.push_back(e.clone());
                while t.events.len() > MAX_TRACE {
                    t.events.pop_front();
                }
            } else if e.seq.0 > last + 1 {
                t.loading = true;
                effects.push(Effect::LoadTrace(id));
            }
        }
        effects
    }

    /// The tail of a session's events arrived (for the open trace).
    pub(crate) fn trace_loaded(&mut self, id: SessionId, events: Vec<StoredEvent>) {
        if let View::Trace(t) = &mut self.view
            && t.id == id
        {
            // Keep whatever the stream added meanwhile after the loaded page.
            let after = events.last().map(|e| e.seq.0).unwrap_or(0);
            let newer: Vec<StoredEvent> = t.events.drain(..).filter(|e| e.seq.0 > after).collect();
            t.events = events.into_iter().chain(newer).collect();
            while t.events.len() > MAX_TRACE {
                t.events.pop_front();
            }
            t.loading = false;
        }
    }

    /// A confirmed action finished: `Ok` with the daemon's answer, or its error.
    pub(crate) fn action_done(&mut self, action: Action, result: Result<(), String>) {
        self.message = Some(match result {
            Ok(()) => action.done(),
            Err(e) => format!("error: {e}"),
        });
    }

    /// A key press.
    pub(crate) fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return vec![Effect::Quit];
        }
        if let Some(action) = self.confirm.take() {
            return match k.code {
                KeyCode::Char('y' | 'Y') => {
                    self.message = Some(format!("{}…", action.done()));
                    vec![Effect::Run(action)]
                }
                _ => {
                    self.message = Some("not done".to_owned());
                    Vec::new()
                }
            };
        }
        match k.code {
            KeyCode::Char('q') => return vec![Effect::Quit],
            KeyCode::Char('c') => self.ask_cancel(),
            KeyCode::Char('a') => self.ask_approve(),
            _ => {}
        }
        if let View::Trace(t) = &mut self.view {
            match k.code {
                KeyCode::Esc | KeyCode::Backspace => self.view = View::List,
                KeyCode::Up | KeyCode::Char('k') => t.scroll_back = t.scroll_back.saturating_add(1),
                KeyCode::PageUp => t.scroll_back = t.scroll_back.saturating_add(10),
                KeyCode::Down | KeyCode::Char('j') => {
                    t.scroll_back = t.scroll_back.saturating_sub(1)
                }
                KeyCode::PageDown => t.scroll_back = t.scroll_back.saturating_sub(10),
                KeyCode::End | KeyCode::Char('G') => t.scroll_back = 0,
                _ => {}
            }
            return Vec::new();
        }
        match k.code {
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Char('f') => {
                self.filter = self.filter.next();
                self.message = None;
            }
            KeyCode::Enter => {
                if let Some(id) = self.current().map(|s| s.session_id) {
                    self.selected = Some(id);
                    self.view = View::Trace(Trace {
                        id,
                        events: VecDeque::new(),
                        loading: true,
                        scroll_back: 0,
                    });
                    return vec![Effect::LoadTrace(id)];
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// The session the actions apply to: the open trace's, else the selected row's.
    fn target(&self) -> Option<&SessionSummary> {
        match &self.view {
            View::Trace(t) => self.sessions.iter().find(|s| s.session_id == t.id),
            View::List => self.current(),
        }
    }

    fn ask_cancel(&mut self) {
        let Some(s) = self.target() else { return };
        let id = s.session_id;
        if is_live(s) && s.run.is_some() {
            self.confirm = Some(Action::Cancel(id));
            self.message = Some(Action::Cancel(id).question());
        } else {
            self.message = Some(format!("{id} has no live run to cancel"));
        }
    }

    fn ask_approve(&mut self) {
        let Some(s) = self.target() else { return };
        let id = s.session_id;
        if s.status == SessionStatus::Parked {
            self.confirm = Some(Action::Approve(id));
            self.message = Some(Action::Approve(id).question());
        } else {
            self.message = Some(format!("{id} is not parked at a gate"));
        }
    }

    fn step(&mut self, by: isize) {
        let visible = self.visible();
        if visible.is_empty() {
            return;
        }
        let i = self.selected_index().unwrap_or(0) as isize;
        let next = (i + by).clamp(0, visible.len() as isize - 1) as usize;
        self.selected = Some(visible[next].session_id);
    }
}

/// Whether a session may still change by itself (its run has not ended).
pub(crate) fn is_live(s: &SessionSummary) -> bool {
    match &s.run {
        Some(r) => !r.state.is_final(),
        None => s.status != SessionStatus::Complete,
    }
}

/// A key as the event loop gets it from the terminal (tests and `--script` use it).
pub(crate) fn press(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}
