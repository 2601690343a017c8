//! The sessions list: keyset paging that does not shift when sessions are added, and the
//! trigger filter.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Map;
use worktrain_engine::{Catalog, StartRequest};

use crate::harness::{Daemon, complete, page, route};

/// The session ids of a list page, in order.
fn ids(html: &str) -> Vec<String> {
    html.split("data-session=\"")
        .skip(1)
        .map(|t| t[..t.find('"').unwrap()].to_owned())
        .collect()
}

/// The "Older" link of a list page.
fn older(html: &str) -> Option<String> {
    let i = html.find("rel=\"next\"")?;
    let tag = &html[html[..i].rfind("<a ")?..i];
    let h = tag.find("href=\"")? + 6;
    Some(tag[h..h + tag[h..].find('"')?].replace("&amp;", "&"))
}

async fn start_sessions(d: &Daemon, n: usize, label: &str) -> Vec<String> {
    let resolved = Catalog::new(Some(d.home_dir.join("workflows")), None)
        .resolve("two")
        .unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let reply = d
            .sup
            .engine()
            .start(StartRequest {
                workflow: resolved.clone(),
                goal: format!("{label} {i}"),
                workspace: None,
                context: Map::new(),
                mode: worktrain_core::event::SessionMode::Autonomous,
                parent: None,
            })
            .await
            .unwrap();
        out.push(reply.response.session_id.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_do_not_shift_when_sessions_are_added() {
    let d = Daemon::start(vec![]).await;
    let first: BTreeSet<String> = start_sessions(&d, 55, "first").await.into_iter().collect();
    let (cookie, _) = d.http_login().await;
    let (s, html) = page(&d, &cookie, "/console/sessions").await;
    assert_eq!(s, StatusCode::OK);
    let page1 = ids(&html);
    assert_eq!(page1.len(), 50);
    let next = older(&html).expect("an Older link");
    assert!(next.contains("after="), "{next}");

    // Sessions added while the operator reads page 1 go to the top, not into page 2.
    let added: BTreeSet<String> = start_sessions(&d, 7, "added").await.into_iter().collect();
    let (s, html) = page(&d, &cookie, &next).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let page2 = ids(&html);
    assert_eq!(page2.len(), 5, "{page2:?}");
    assert!(older(&html).is_none(), "the last page has no Older link");
    assert!(html.contains("rel=\"first\""), "a way back to the newest");
    let p1: BTreeSet<String> = page1.iter().cloned().collect();
    let p2: BTreeSet<String> = page2.iter().cloned().collect();
    assert!(p1.is_disjoint(&p2), "no session on both pages");
    assert!(p2.is_disjoint(&added), "no new session on page 2");
    assert_eq!(
        p1.union(&p2).cloned().collect::<BTreeSet<_>>(),
        first,
        "every session once"
    );
    // The live part of page 2 re-reads the same page.
    let rows = next.replacen("/console/sessions?", "/console/sessions/rows?", 1);
    let (_, live) = page(&d, &cookie, &rows).await;
    assert_eq!(ids(&live), page2);
    // The first page now starts with the added sessions.
    let (_, html) = page(&d, &cookie, "/console/sessions").await;
    let top: BTreeSet<String> = ids(&html).into_iter().take(7).collect();
    assert_eq!(top, added);
    // A malformed cursor is a precise 400.
    let (s, html) = page(&d, &cookie, "/console/sessions?after=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("not a page cursor"), "{html}");
    d.stop().await;
}

const TRIGGERS: &str = "\
version: 1
triggers:
  - id: nightly
    description: every night
    source:
      schedule: {cron: '30 2 * * *'}
    workflow: two
    goal: 'Nightly run {{ $.scheduled_at }}'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_filter_lists_the_sessions_a_trigger_started() {
    let d = Daemon::start_with_triggers(
        vec![route("Nightly", vec![complete("ok"), complete("ok")])],
        TRIGGERS,
    )
    .await;
    let rt = d.triggers.clone().unwrap();
    let decision = rt.fire("nightly", None, None).await.unwrap();
    let started = decision.body.session_id.clone().expect("dispatched");
    let other = start_sessions(&d, 1, "by hand").await.remove(0);
    let (cookie, _) = d.http_login().await;
    let (s, html) = page(&d, &cookie, "/console/sessions?trigger=nightly").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert_eq!(ids(&html), vec![started.clone()]);
    let (_, html) = page(&d, &cookie, "/console/sessions?trigger=weekly").await;
    assert!(ids(&html).is_empty());
    assert!(html.contains("No sessions match."));
    let (_, html) = page(&d, &cookie, "/console/sessions").await;
    let all = ids(&html);
    assert!(all.contains(&started) && all.contains(&other), "{all:?}");
    // The trigger's page links to them.
    let (_, html) = page(&d, &cookie, "/console/triggers/nightly").await;
    assert!(html.contains("/console/sessions?trigger=nightly"), "{html}");
    d.stop().await;
}
