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

struct SessionTail {
    sup: Arc<Supervisor>,
    appended: tokio::sync::broadcast::Receiver<worktrain_store::Appended>,
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
    let appended = sup.engine().store().subscribe();
    let state = SessionTail {
        sup,
        appended,
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
            let quiet = st.sup.engine().store().quiet_recheck();
            let id = st.id;
            wait_for_append(
                &mut st.appended,
                |a| a.session_id == id,
                quiet,
                &st.stopping,
                None,
            )
            .await;
        }
    })
}

struct GlobalTail {
    sup: Arc<Supervisor>,
    appended: tokio::sync::broadcast::Receiver<worktrain_store::Appended>,
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
    let appended = sup.engine().store().subscribe();
    let state = GlobalTail {
        sup,
        appended,
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
            let quiet = st.sup.engine().store().quiet_recheck();
            wait_for_append(&mut st.appended, |_| true, quiet, &st.stopping, None).await;
        }
    })
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
