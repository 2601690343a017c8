//! Pollers: list a forge's open items (all pages, ETag-conditional, rate-limit aware),
//! dispatch the new ones — and the updated ones with `on_update` — through the same
//! decisions as webhooks, and remember `(item, updated_at)` in the store. The first poll
//! only remembers (unless `replay_existing`). Items with unfinished sessions are fetched
//! one by one to reconcile them (closed, merged, label or assignee removed).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};
use worktrain_core::run::{ForgeItem, ForgeKind, ItemKind};
use worktrain_forge::{Forge, ForgeError, Item, ItemState, ListKind, ListQuery, Listing};
use worktrain_store::triggers::{PollCursor, SourceState};

use crate::config::{PollKind, Source, Trigger};
use crate::decide::DecisionKind;
use crate::inbound::{Inbound, ItemStatus};
use crate::runtime::Runtime;

fn state_of(item: &Item) -> crate::inbound::ItemState {
    crate::inbound::ItemState {
        status: match item.state {
            ItemState::Open => ItemStatus::Open,
            ItemState::Closed => ItemStatus::Closed,
            ItemState::Merged => ItemStatus::Merged,
        },
        labels: item.labels.clone(),
        assignees: item.assignees.clone(),
    }
}

/// The inbound event for a polled item.
pub fn inbound_for(forge: ForgeKind, repo: &str, item: &Item) -> Inbound {
    let kind = match (forge, item.kind) {
        (ForgeKind::Github, _) => ItemKind::IssueOrPull,
        (ForgeKind::Gitlab, k) => k,
    };
    Inbound::polled(
        &ForgeItem {
            forge,
            repo: repo.to_owned(),
            kind,
            number: item.number,
        },
        item.pull,
        item.raw.clone(),
        state_of(item),
        &item.updated_at,
    )
}

/// Poll `t` once if it is due; returns whether it polled.
pub async fn poll_if_due(rt: &Runtime, t: &Trigger, forge: &dyn Forge, now_ms: i64) -> bool {
    let (Source::GithubPoll(p) | Source::GitlabPoll(p)) = &t.source else {
        return false;
    };
    let store = rt.store();
    let mut cursor = match store.poll_cursor(&t.id).await {
        Ok(c) => c.unwrap_or(PollCursor {
            trigger_id: t.id.clone(),
            ..PollCursor::default()
        }),
        Err(e) => {
            warn!(trigger = %t.id, error = %e, "reading the poll cursor failed");
            return false;
        }
    };
    if cursor.next_poll_at_ms.is_some_and(|n| n > now_ms) {
        return false;
    }
    let query = ListQuery {
        repo: p.repository.clone(),
        kind: match p.kind {
            PollKind::Issues => ListKind::Issues,
            PollKind::PullRequests => ListKind::PullRequests,
            PollKind::MergeRequests => ListKind::MergeRequests,
        },
        labels: p.labels.clone(),
        assignee: p.assignee.clone(),
        query: p.query.clone(),
        per_page: 100,
    };
    let interval = i64::try_from(p.interval.as_millis()).unwrap_or(i64::MAX);
    cursor.last_polled_at_ms = Some(now_ms);
    cursor.next_poll_at_ms = Some(now_ms.saturating_add(interval));
    let listing = forge.list(&query, cursor.etag.as_deref()).await;
    match listing {
        Ok(Listing::NotModified { .. }) => {
            cursor.last_error = None;
        }
        Ok(Listing::Items {
            items, etag, pages, ..
        }) => {
            cursor.last_error = None;
            let keys: Vec<String> = items.iter().map(|i| i.number.to_string()).collect();
            let seen: BTreeMap<String, String> = store
                .poll_seen(&t.id, &keys)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            let mut remember = Vec::new();
            if !cursor.baseline_done && !p.replay_existing {
                for i in &items {
                    remember.push((i.number.to_string(), i.updated_at.clone()));
                }
                let mut d = crate::runtime::new_decision(
                    &t.id,
                    DecisionKind::PollBaseline,
                    format!(
                        "first poll: {} existing item(s) remembered, not dispatched (replay_existing: false)",
                        items.len()
                    ),
                    json!({"items": items.len(), "pages": pages}),
                );
                d.event = Some("poll".into());
                let _ = store.record_decision(d).await;
            } else {
                for item in &items {
                    let key = item.number.to_string();
                    let prev = seen.get(&key);
                    let fire = match prev {
                        None => true,
                        Some(u) if *u != item.updated_at => p.on_update,
                        Some(_) => false,
                    };
                    if !fire {
                        if prev.is_some_and(|u| *u != item.updated_at) {
                            remember.push((key, item.updated_at.clone()));
                        }
                        continue;
                    }
                    let ev = inbound_for(forge.kind(), &p.repository, item);
                    let idem = format!("poll:{}:{}:{}", t.id, item.number, item.updated_at);
                    let decisions = rt.handle(t, &ev, idem).await;
                    let retry_later = decisions.iter().any(|d| {
                        d.decision == DecisionKind::QueueFull.as_str()
                            || d.decision == DecisionKind::DispatchFailed.as_str()
                    });
                    for mut d in decisions {
                        d.event = Some(ev.key());
                        let _ = store.record_decision(d).await;
                    }
                    if !retry_later {
                        remember.push((key, item.updated_at.clone()));
                    }
                }
            }
            if let Err(e) = store.mark_poll_seen(&t.id, &remember).await {
                warn!(trigger = %t.id, error = %e, "remembering polled items failed");
            }
            cursor.baseline_done = true;
            cursor.etag = etag;
            info!(trigger = %t.id, items = items.len(), pages, "polled");
        }
        Err(e) => {
            if let ForgeError::RateLimited { retry_after, .. } = &e {
                let wait = i64::try_from(retry_after.max(&Duration::from_secs(1)).as_millis())
                    .unwrap_or(i64::MAX);
                cursor.next_poll_at_ms = Some(now_ms.saturating_add(wait.max(interval)));
            }
            let message = e.to_string();
            if cursor.last_error.as_deref() != Some(message.as_str()) {
                let mut d = crate::runtime::new_decision(
                    &t.id,
                    DecisionKind::PollFailed,
                    format!("poll of {} failed: {message}", p.repository),
                    json!({"retryable": e.is_retryable(), "next_poll_at_ms": cursor.next_poll_at_ms}),
                );
                d.event = Some("poll".into());
                let _ = store.record_decision(d).await;
            }
            warn!(trigger = %t.id, error = %message, "poll failed");
            cursor.last_error = Some(message);
        }
    }
    if let Err(e) = store.put_poll_cursor(&cursor).await {
        warn!(trigger = %t.id, error = %e, "saving the poll cursor failed");
    }
    reconcile_active(rt, t, forge).await;
    true
}

/// Fetch each item of this trigger that has an unfinished session and reconcile it.
async fn reconcile_active(rt: &Runtime, t: &Trigger, forge: &dyn Forge) {
    let Ok(active) = rt.store().source_items(SourceState::Active).await else {
        return;
    };
    for item in active.into_iter().filter(|i| i.trigger_id == t.id) {
        let Some(at) = worktrain_core::run::SourceRef::parse(&item.source)
            .ok()
            .and_then(|s| s.forge_item())
        else {
            continue;
        };
        match forge.item(&at.repo, at.kind, at.number).await {
            Ok(fresh) => {
                let ev = inbound_for(forge.kind(), &at.repo, &fresh);
                for d in rt.reconcile_event(t, &ev).await {
                    let _ = rt.store().record_decision(d).await;
                }
            }
            Err(e) => {
                warn!(trigger = %t.id, source = %item.source, error = %e, "fetching an item to reconcile failed")
            }
        }
    }
}
