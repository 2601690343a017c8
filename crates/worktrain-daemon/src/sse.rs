//! Server-sent event streams: one session's events (id = `seq`) and every session's
//! events (id = global `position`). Both read the store — so they see events written by
//! any process — polling every [`POLL`] while idle, and end when the daemon shuts down.
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

/// Idle polling interval.
pub const POLL: Duration = Duration::from_millis(200);
/// Events read per store query.
const BATCH: u32 = 200;

fn event_of(e: &StoredEvent, id: u64) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(id.to_string())
        .event(e.body.kind().as_str())
        .data(data)
}

struct SessionTail {
    sup: Arc<Supervisor>,
    id: SessionId,
    cursor: Seq,
    follow: bool,
    buffer: VecDeque<StoredEvent>,
    done: bool,
    stopping: CancellationToken,
}

/// The live tail of one session's events after `after`.
pub fn session_stream(
    sup: Arc<Supervisor>,
    id: SessionId,
    after: Seq,
    follow: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let stopping = sup.stopping();
    let state = SessionTail {
        sup,
        id,
        cursor: after,
        follow,
        buffer: VecDeque::new(),
        done: false,
        stopping,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.buffer.pop_front() {
                st.cursor = e.seq;
                let ev = event_of(&e, e.seq.0);
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if st.stopping.is_cancelled() {
                st.done = true;
                return Some((Ok(Event::default().event("shutdown").data("{}")), st));
            }
            match st
                .sup
                .engine()
                .store()
                .events(st.id, st.cursor, BATCH)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    st.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(session_id = %st.id, error = %e, "event stream: store read failed");
                }
            }
            if !st.follow
                && let Ok(s) = st.sup.engine().session(st.id).await
                && s.last_seq <= st.cursor
                && is_finished(&s)
            {
                st.done = true;
                let data = json!({
                    "session_id": s.session_id,
                    "status": s.status,
                    "run_state": s.run.as_ref().map(|r| r.state),
                    "last_seq": s.last_seq,
                });
                return Some((Ok(Event::default().event("end").data(data.to_string())), st));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = st.stopping.cancelled() => {}
            }
        }
    })
}

struct GlobalTail {
    sup: Arc<Supervisor>,
    cursor: u64,
    buffer: VecDeque<StoredEvent>,
    done: bool,
    stopping: CancellationToken,
}

/// The live tail of every session's events after global position `after`.
pub fn global_stream(
    sup: Arc<Supervisor>,
    after: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let stopping = sup.stopping();
    let state = GlobalTail {
        sup,
        cursor: after,
        buffer: VecDeque::new(),
        done: false,
        stopping,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.buffer.pop_front() {
                st.cursor = e.position;
                let ev = event_of(&e, e.position);
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if st.stopping.is_cancelled() {
                st.done = true;
                return Some((Ok(Event::default().event("shutdown").data("{}")), st));
            }
            match st.sup.engine().store().events_since(st.cursor, BATCH).await {
                Ok(events) if !events.is_empty() => {
                    st.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "global event stream: store read failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = st.stopping.cancelled() => {}
            }
        }
    })
}
