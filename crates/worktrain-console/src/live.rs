//! The SSE streams the pages listen to. They carry no content — only "this changed" with
//! a sequence number — and the page re-fetches its live part, so nothing an agent wrote
//! ever reaches the page except through the server-side sanitiser.
//!
//! Each event's data is a mark (`<session>:<seq>`); a page renders the mark it shows
//! (`data-mark`) and skips an event with the same mark, so opening a page costs no
//! second fetch.
//!
//! Both poll projections (never the event log): the sessions stream watches the most
//! recently updated session, a session stream watches that session's last sequence
//! number. Each poll is one indexed row.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use worktrain_core::ids::SessionId;
use worktrain_store::SessionFilter;

use crate::Console;
use crate::views::PageError;

/// How often the streams look for changes.
pub const POLL: Duration = Duration::from_millis(150);

/// A fingerprint of what a page shows; a change is worth a re-fetch.
pub type Mark = Option<(SessionId, u64)>;

/// A mark as the page and the stream write it (`ses_…:12`, or `-`).
pub fn mark_text(m: Mark) -> String {
    match m {
        Some((id, seq)) => format!("{id}:{seq}"),
        None => "-".to_owned(),
    }
}

/// The most recently updated session and its last sequence number.
pub async fn newest(c: &Console) -> Mark {
    // The same query as the first page of the list (SQLite plans `LIMIT 1` on this
    // ordering far worse than a page; measured in the console benchmark).
    let filter = SessionFilter {
        limit: Some(crate::views::sessions::PAGE + 1),
        offset: Some(0),
        ..SessionFilter::default()
    };
    match c.app.sup.engine().store().sessions(&filter).await {
        Ok(v) => v.first().map(|s| (s.session_id, s.last_seq.0)),
        Err(e) => {
            tracing::warn!(error = %e, "console stream: store read failed");
            None
        }
    }
}

async fn one(c: &Console, id: SessionId) -> Mark {
    match c.app.sup.engine().store().session(id).await {
        Ok(s) => s.map(|s| (s.session_id, s.last_seq.0)),
        Err(e) => {
            tracing::warn!(session_id = %id, error = %e, "console stream: store read failed");
            None
        }
    }
}

fn changes<F, Fut>(c: Console, probe: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn(Console) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Mark> + Send,
{
    let stopping = c.app.sup.stopping();
    futures_util::stream::unfold((c, None::<Mark>, probe), move |(c, last, probe)| {
        let stopping = stopping.clone();
        async move {
            loop {
                if stopping.is_cancelled() {
                    return None;
                }
                let now = probe(c.clone()).await;
                if last.as_ref() != Some(&now) {
                    let ev = Event::default().event("changed").data(mark_text(now));
                    return Some((Ok(ev), (c, Some(now), probe)));
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = stopping.cancelled() => return None,
                }
            }
        }
    })
}

/// `GET /console/live/sessions`: an event whenever any session changes.
pub async fn sessions(State(c): State<Console>) -> Response {
    Sse::new(changes(c, |c| async move { newest(&c).await }))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /console/live/sessions/{id}`: an event whenever the session changes.
pub async fn session(
    State(c): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: SessionId = id
        .parse()
        .map_err(|_| PageError::not_found(format!("`{id}` is not a session id")))?;
    Ok(
        Sse::new(changes(c, move |c| async move { one(&c, id).await }))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}
