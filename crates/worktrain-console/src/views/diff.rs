//! A step's diff, on request: the change between the worktree snapshot taken when the
//! step completed and the one before it (its parent step's, or the baseline `n0`),
//! computed from the workspace repository with `git2`. Diffs of two commits never change,
//! so the last few are cached; nothing is computed on session writes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::extract::{Path, State};
use maud::{Markup, html};
use worktrain_core::event::EventBody;
use worktrain_core::ids::{NodeId, Seq, SessionId};

use super::PageError;
use crate::auth::Browser;
use crate::{BASE, Console, layout};

/// Diffs kept.
const CACHE: usize = 16;
/// Events searched around a step's completion for its snapshot.
const LOOKAHEAD: u32 = 100;
/// Longest patch shown (bytes); the rest is cut with a note.
const MAX_PATCH: usize = 512 * 1024;

/// A (from, to) commit pair and its patch.
type Entry = ((String, String), Arc<String>);

/// Recently computed patches, keyed by (from, to) commit.
#[derive(Debug, Default)]
pub struct DiffCache(Mutex<VecDeque<Entry>>);

impl DiffCache {
    fn get(&self, key: &(String, String)) -> Option<Arc<String>> {
        let g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn put(&self, key: (String, String), patch: Arc<String>) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() >= CACHE {
            g.pop_front();
        }
        g.push_back((key, patch));
    }
}

/// The snapshot commit recorded for `node` near `around` (the engine records it in the
/// same append as the step's completion, just before it; older daemons just after).
async fn snapshot_of(
    c: &Console,
    id: SessionId,
    node: NodeId,
    around: Seq,
) -> Result<Option<String>, PageError> {
    let from = Seq(around.0.saturating_sub(u64::from(LOOKAHEAD) / 2));
    let events = c
        .app
        .sup
        .engine()
        .store()
        .events(id, from, LOOKAHEAD)
        .await?;
    Ok(events.into_iter().find_map(|e| match e.body {
        EventBody::StepSnapshotted {
            node: n, commit, ..
        } if n == node => Some(commit),
        _ => None,
    }))
}

/// The unified patch between two commits of the repository at `repo`.
fn patch(repo: &str, from: &str, to: &str) -> Result<String, git2::Error> {
    let r = git2::Repository::open(repo)?;
    let a = r.find_commit(git2::Oid::from_str(from)?)?.tree()?;
    let b = r.find_commit(git2::Oid::from_str(to)?)?.tree()?;
    let mut opts = git2::DiffOptions::new();
    opts.include_typechange(true);
    let mut diff = r.diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))?;
    diff.find_similar(Some(git2::DiffFindOptions::new().renames(true)))?;
    let mut out = String::new();
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if out.len() > MAX_PATCH {
            return false;
        }
        if let c @ ('+' | '-' | ' ') = line.origin() {
            out.push(c);
        }
        out.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .or_else(|e| {
        if out.len() > MAX_PATCH {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    if out.len() > MAX_PATCH {
        out.push_str(
            "\n… (cut: the patch is larger than the console shows; use `worktrain session diff`)\n",
        );
    }
    Ok(out)
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
    let summary = store
        .session(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no session {id}")))?;
    let rec = store
        .node(id, NodeId(node))
        .await?
        .ok_or_else(|| PageError::not_found(format!("session {id} has no node {node}")))?;
    let repo = summary
        .workspace
        .clone()
        .ok_or_else(|| PageError::not_found("this session has no workspace, so no snapshots"))?;
    let closed = rec
        .closed_seq
        .ok_or_else(|| PageError::not_found("this step has not completed yet"))?;
    let to = snapshot_of(&c, id, rec.node, closed)
        .await?
        .ok_or_else(|| PageError::not_found("no snapshot was recorded for this step (snapshots need a git workspace with worktrees)"))?;
    let from = match rec.parent.map(|p| (p, store.node(id, p))) {
        Some((p, fut)) => match fut.await?.and_then(|r| r.closed_seq) {
            Some(pc) => snapshot_of(&c, id, p, pc).await?,
            None => None,
        },
        None => None,
    };
    let from = match from {
        Some(f) => f,
        None => snapshot_of(&c, id, NodeId(0), Seq(0))
            .await?
            .ok_or_else(|| PageError::not_found("no baseline snapshot for this session"))?,
    };
    let key = (from.clone(), to.clone());
    let text = match c.diffs.get(&key) {
        Some(t) => t,
        None => {
            let (r, f, t) = (repo.clone(), from.clone(), to.clone());
            let computed = tokio::task::spawn_blocking(move || patch(&r, &f, &t))
                .await
                .map_err(|e| PageError::from(format!("diff task failed: {e}")))?
                .map_err(|e| PageError::from(format!("git: {}", e.message())))?;
            let t = Arc::new(computed);
            c.diffs.put(key, t.clone());
            t
        }
    };
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" {
            a href={(BASE) "/sessions"} { "Sessions" } " / "
            a href={(BASE) "/sessions/" (id) "#node-" (node)} { code { (id) } } " / " (rec.step_id.as_str())
        }
        h1 { "Changes of step " (rec.step_id.as_str()) }
        p class="meta" { code { (from.get(..12).unwrap_or(&from)) } " → " code { (to.get(..12).unwrap_or(&to)) } }
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
