//! A step's diff, on request: the change between the worktree snapshot taken when the
//! step completed and the one before it (its parent step's, or the baseline `n0`), from
//! [`worktrain_engine::Engine::session_diff`] — the same answer as `worktrain session
//! diff` and the API. A completed step's diff never changes, so the last few are cached;
//! nothing is computed on session writes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::extract::{Path, State};
use maud::{Markup, html};
use worktrain_core::ids::{NodeId, SessionId};
use worktrain_engine::diff::{DiffQuery, StepDiff};

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout};

/// Step diffs kept in memory; when full, the oldest is dropped first.
const CACHE: usize = 16;
/// Longest patch shown (bytes); the rest is cut with a note.
const MAX_PATCH: usize = 512 * 1024;

/// A (session, node) and its diff.
type Entry = ((SessionId, NodeId), Arc<StepDiff>);

/// Recently computed step diffs, keyed by session and node.
#[derive(Debug, Default)]
pub struct DiffCache(Mutex<VecDeque<Entry>>);

impl DiffCache {
    fn get(&self, key: &(SessionId, NodeId)) -> Option<Arc<StepDiff>> {
        let g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn put(&self, key: (SessionId, NodeId), diff: Arc<StepDiff>) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() >= CACHE {
            g.pop_front();
        }
        g.push_back((key, diff));
    }
}

/// At most [`MAX_PATCH`] bytes of `patch`, cut at a line, with a note when cut.
fn shown(patch: &str) -> std::borrow::Cow<'_, str> {
    if patch.len() <= MAX_PATCH {
        return patch.into();
    }
    let cut = patch[..patch.floor_char_boundary(MAX_PATCH)]
        .rfind('\n')
        .unwrap_or(0);
    format!(
        "{}\n… (cut: the patch is larger than the console shows; use `worktrain session diff`)\n",
        &patch[..cut]
    )
    .into()
}

/// `GET /console/sessions/{id}/steps/{node}/diff`.
pub async fn page(
    State(c): State<Console>,
    Extension(browser): Extension<Browser>,
    Path((id, node)): Path<(String, u32)>,
) -> Result<Markup, PageError> {
    let id: SessionId = id
        .parse()
        .map_err(|_| PageError::not_found(format!("`{id}` is not a session id")))?;
    let store = c.app.sup.engine().store();
    let rec = store
        .node(id, NodeId(node))
        .await?
        .ok_or_else(|| PageError::not_found(format!("session {id} has no node {node}")))?;
    if rec.closed_seq.is_none() {
        return Err(PageError::not_found("this step has not completed yet"));
    }
    let key = (id, rec.node);
    let diff = match c.diffs.get(&key) {
        Some(d) => d,
        None => {
            let query = DiffQuery {
                step: Some(rec.node.to_string()),
                patch: true,
            };
            let computed = c
                .app
                .sup
                .engine()
                .session_diff(id, c.app.sup.home(), &query)
                .await
                .map_err(|e| {
                    // Nothing to show (no workspace, no snapshot of this step) is a 404;
                    // a git or store failure is the server's.
                    if e.code == worktrain_core::error::ErrorCode::InvalidInput {
                        PageError::not_found(e.message)
                    } else {
                        PageError::from(e.message)
                    }
                })?
                .into_iter()
                .next()
                .ok_or_else(|| PageError::not_found("no snapshot was recorded for this step"))?;
            let d = Arc::new(computed);
            c.diffs.put(key, d.clone());
            d
        }
    };
    let (from, to) = (&diff.from, &diff.to);
    let text = shown(diff.patch.as_deref().unwrap_or(""));
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" {
            a href={(BASE) "/sessions"} { "Sessions" } " / "
            a href={(BASE) "/sessions/" (id) "#node-" (node)} { code { (id) } } " / " (rec.step_id.as_str())
        }
        h1 { "Changes of step " (rec.step_id.as_str()) }
        p class="meta" { code { (from.get(..12).unwrap_or(from)) } " → " code { (to.get(..12).unwrap_or(to)) } }
        @if text.is_empty() { p class="empty" { "No file changed in this step." } }
        @else {
            pre class="diff" {
                @for line in text.lines() {
                    @let class = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") { "file" }
                        else if line.starts_with('+') { "add" } else if line.starts_with('-') { "del" }
                        else if line.starts_with("@@") { "hunk" } else { "ctx" };
                    span class=(class) { (line) } "\n"
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Diff {id}"),
        "/sessions",
        &browser,
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_patch_is_cut_at_a_line_with_a_note_and_a_short_one_is_kept() {
        let short = "+one\n-two\n";
        assert_eq!(shown(short), short);
        let line = "+ä line of a large patch\n";
        let long = line.repeat(MAX_PATCH / line.len() + 10);
        let cut = shown(&long);
        assert!(cut.len() < MAX_PATCH + 200);
        let (kept, note) = cut.rsplit_once("\n… (cut:").unwrap();
        assert!(
            kept.lines().all(|l| l == line.trim_end()),
            "cut inside a line"
        );
        assert!(note.contains("worktrain session diff"));
    }
}
