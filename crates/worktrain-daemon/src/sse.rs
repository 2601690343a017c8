//! Server-sent event streams: one session's events (id = `seq`) and every session's
//! events (id = global `position`). Both read the store — so they see events written by
//! any process — and, while idle, wait for the store to announce an append (PostgreSQL:
//! `LISTEN/NOTIFY`, any daemon's appends; SQLite: this process's appends), re-reading
//! anyway after the store's quiet interval. They end when the daemon shuts down.
//!
//! A session stream ends with an `end` event once the session is finished (its run
//! ended, or its workflow completed for a session without a run) and every event has
//! been sent — unless `follow=true`, which keeps it open (e.g. across a retry).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use worktrain_core::event::StoredEvent;
use worktrain_core::ids::{Seq, SessionId};

use crate::supervisor::Supervisor;
use crate::views::is_finished;

/// Events read per store query.
const BATCH: u32 = 200;

fn event_of(e: &StoredEvent, id: u64) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(id.to_string())
        .event(e.body.kind().as_str())
        .data(data)
}

/// What a tail follows.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// One session's events, after `seq`; with `follow`, past the session's end.
    Session { id: SessionId, follow: bool },
    /// Every session's events, after the global position.
    All,
}

/// One live tail: the scope, where it is, and what it has read but not yet sent.
struct Tail {
    sup: Arc<Supervisor>,
    appended: tokio::sync::broadcast::Receiver<worktrain_store::Appended>,
    scope: Scope,
    /// The last sent event's `seq` (session scope) or global `position` (all).
    cursor: u64,
    buffer: VecDeque<StoredEvent>,
    done: bool,
    stopping: CancellationToken,
}

impl Tail {
    /// The next batch after the cursor.
    async fn read(&self) -> Result<Vec<StoredEvent>, worktrain_store::StoreError> {
        let store = self.sup.engine().store();
        match self.scope {
            Scope::Session { id, .. } => store.events(id, Seq(self.cursor), BATCH).await,
            Scope::All => store.events_since(self.cursor, BATCH).await,
        }
    }

    /// The cursor value of an event in this tail's scope (also its SSE id).
    fn position_of(&self, e: &StoredEvent) -> u64 {
        match self.scope {
            Scope::Session { .. } => e.seq.0,
            Scope::All => e.position,
        }
    }

    /// The closing `end` event, once a session stream (not following) has sent every event
    /// of a finished session.
    async fn end(&self) -> Option<Event> {
        let Scope::Session { id, follow: false } = self.scope else {
            return None;
        };
        let s = self.sup.engine().session(id).await.ok()?;
        if s.last_seq.0 > self.cursor || !is_finished(&s) {
            return None;
        }
        let data = json!({
            "session_id": s.session_id,
            "status": s.status,
            "run_state": s.run.as_ref().map(|r| r.state),
            "last_seq": s.last_seq,
        });
        Some(Event::default().event("end").data(data.to_string()))
    }
}

/// The one tail loop behind both streams: send what is buffered, read the next batch,
/// end (shutdown, or a finished session), else wait for an append in scope.
fn tail(
    sup: Arc<Supervisor>,
    scope: Scope,
    after: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let stopping = sup.stopping();
    let appended = sup.engine().store().subscribe();
    let state = Tail {
        sup,
        appended,
        scope,
        cursor: after,
        buffer: VecDeque::new(),
        done: false,
        stopping,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.buffer.pop_front() {
                st.cursor = st.position_of(&e);
                let ev = event_of(&e, st.cursor);
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if st.stopping.is_cancelled() {
                st.done = true;
                return Some((Ok(Event::default().event("shutdown").data("{}")), st));
            }
            match st.read().await {
                Ok(events) if !events.is_empty() => {
                    st.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => match st.scope {
                    Scope::Session { id, .. } => {
                        warn!(session_id = %id, error = %e, "event stream: store read failed");
                    }
                    Scope::All => warn!(error = %e, "global event stream: store read failed"),
                },
            }
            if let Some(end) = st.end().await {
                st.done = true;
                return Some((Ok(end), st));
            }
            let quiet = st.sup.engine().store().quiet_recheck();
            let scope = st.scope;
            wait_for_append(
                &mut st.appended,
                |a| match scope {
                    Scope::Session { id, .. } => a.session_id == id,
                    Scope::All => true,
                },
                quiet,
                &st.stopping,
                None,
            )
            .await;
        }
    })
}

/// The live tail of one session's events after `after`.
pub fn session_stream(
    sup: Arc<Supervisor>,
    id: SessionId,
    after: Seq,
    follow: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    tail(sup, Scope::Session { id, follow }, after.0)
}

/// The live tail of every session's events after global position `after`.
pub fn global_stream(
    sup: Arc<Supervisor>,
    after: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    tail(sup, Scope::All, after)
}

/// Wait until the store announces an append that `wanted` cares about, the store's quiet
/// re-check interval passes, `stopping` fires, or `deadline` is reached — whichever
/// comes first. Readers re-read the store after it returns (notifications are hints: a
/// lagging receiver or an unannounced append from another process is caught by the
/// re-read).
pub async fn wait_for_append(
    rx: &mut tokio::sync::broadcast::Receiver<worktrain_store::Appended>,
    wanted: impl Fn(&worktrain_store::Appended) -> bool,
    quiet: Duration,
    stopping: &CancellationToken,
    deadline: Option<tokio::time::Instant>,
) {
    let limit = tokio::time::Instant::now() + quiet;
    let until = deadline.map_or(limit, |d| d.min(limit));
    let heard = async {
        loop {
            match rx.recv().await {
                Ok(a) if wanted(&a) => return,
                Ok(_) => {}
                // Missed some: re-read now.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::select! {
        () = heard => {}
        () = tokio::time::sleep_until(until) => {}
        () = stopping.cancelled() => {}
    }
}
