//! Conformance of [`TriggerStore`]: deliveries persisted with their decision in one
//! transaction, redeliveries recorded as duplicates, decisions append-only and queryable
//! per trigger and source, source items, poll cursors, schedule state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use worktrain_store::SqliteStore;
use worktrain_store::sqlite::SqliteOptions;
use worktrain_store::triggers::{
    DecisionFilter, DeliveryInsert, NewDecision, NewDelivery, PollCursor, ScheduleState,
    SourceItem, SourceState, TriggerStore,
};

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
        .await
        .unwrap();
    (dir, store)
}

fn decision(trigger: &str, kind: &str) -> NewDecision {
    NewDecision {
        trigger_id: trigger.into(),
        decision: kind.into(),
        reason: format!("{kind} because"),
        event: Some("issues.labeled".into()),
        delivery_id: None,
        source: Some("github:o/r#1".into()),
        session_id: None,
        detail: json!({"k": 1}),
    }
}

fn delivery(trigger: &str, key: &str) -> NewDelivery {
    NewDelivery {
        trigger_id: trigger.into(),
        delivery_key: key.into(),
        headers: json!({"x-github-event": "issues"}),
        body: format!("{{\"key\": \"{key}\"}}").into_bytes(),
        decision: decision(trigger, "received"),
    }
}

#[tokio::test]
async fn deliveries_dedupe_by_key_per_trigger_and_finish_with_decisions() {
    let (_d, s) = open().await;
    let out = s
        .insert_deliveries(vec![
            delivery("a", "k1"),
            delivery("a", "k2"),
            delivery("a", "k1"),
            delivery("b", "k1"),
        ])
        .await
        .unwrap();
    let DeliveryInsert::Stored { id: first } = out[0] else {
        panic!("{out:?}")
    };
    assert!(matches!(out[1], DeliveryInsert::Stored { .. }));
    assert_eq!(out[2], DeliveryInsert::Duplicate { id: first });
    assert!(
        matches!(out[3], DeliveryInsert::Stored { .. }),
        "keys are per trigger"
    );
    let pending = s.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[0].id, first);
    assert_eq!(pending[0].body, b"{\"key\": \"k1\"}");
    s.finish_delivery(first, vec![decision("a", "dispatched")])
        .await
        .unwrap();
    assert_eq!(s.pending_deliveries(10).await.unwrap().len(), 2);
    assert_eq!(s.delivery(first).await.unwrap().unwrap().status, "done");
    let a = s
        .decisions(&DecisionFilter {
            trigger_id: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<&str> = a.iter().map(|d| d.body.decision.as_str()).collect();
    // Newest first: dispatched, duplicate, received ×2.
    assert_eq!(kinds, ["dispatched", "duplicate", "received", "received"]);
    assert_eq!(a[1].body.delivery_id, Some(first));
    let counts = s.decision_counts("a").await.unwrap();
    assert!(counts.contains(&("received".to_string(), 2)));
    let page = s
        .decisions(&DecisionFilter {
            trigger_id: Some("a".into()),
            before: Some(a[1].id),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, a[2].id);
    let by_kind = s
        .decisions(&DecisionFilter {
            decision: Some("duplicate".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_kind.len(), 1);
}

#[tokio::test]
async fn decisions_are_append_only() {
    let (_d, s) = open().await;
    s.record_decision(decision("a", "filtered")).await.unwrap();
    assert!(
        sqlx::query("UPDATE trigger_decisions SET reason = 'x'")
            .execute(s.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM trigger_decisions")
            .execute(s.pool())
            .await
            .is_err()
    );
    let by_source = s
        .decisions(&DecisionFilter {
            source: Some("github:o/r#1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_source.len(), 1);
}

#[tokio::test]
async fn source_items_polls_and_schedules_round_trip() {
    let (_d, s) = open().await;
    let mut item = SourceItem {
        source: "github:o/r#1".into(),
        trigger_id: "a".into(),
        session_id: Some("ses_x".into()),
        state: SourceState::Active,
        attempts: 1,
        next_attempt_at_ms: None,
        request: json!({"goal": "g"}),
        updated_at_ms: 5,
    };
    s.put_source_item(&item).await.unwrap();
    assert_eq!(
        s.source_item("github:o/r#1").await.unwrap(),
        Some(item.clone())
    );
    item.state = SourceState::RetryWait;
    item.attempts = 2;
    item.next_attempt_at_ms = Some(99);
    s.put_source_item(&item).await.unwrap();
    assert_eq!(
        s.source_items(SourceState::RetryWait).await.unwrap(),
        vec![item]
    );
    assert!(
        s.source_items(SourceState::Active)
            .await
            .unwrap()
            .is_empty()
    );

    let c = PollCursor {
        trigger_id: "p".into(),
        etag: Some("\"abc\"".into()),
        baseline_done: true,
        last_polled_at_ms: Some(1),
        next_poll_at_ms: Some(2),
        last_error: None,
    };
    s.put_poll_cursor(&c).await.unwrap();
    assert_eq!(s.poll_cursor("p").await.unwrap(), Some(c));
    s.mark_poll_seen("p", &[("1".into(), "t1".into()), ("2".into(), "t2".into())])
        .await
        .unwrap();
    s.mark_poll_seen("p", &[("1".into(), "t3".into())])
        .await
        .unwrap();
    let mut seen = s
        .poll_seen("p", &["1".into(), "2".into(), "3".into()])
        .await
        .unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![("1".into(), "t3".into()), ("2".into(), "t2".into())]
    );

    let st = ScheduleState {
        trigger_id: "n".into(),
        cron: "0 3 * * * UTC".into(),
        last_scheduled_at_ms: 10,
        last_fired_at_ms: Some(11),
        last_session_id: Some("ses_y".into()),
    };
    s.put_schedule_state(&st).await.unwrap();
    assert_eq!(s.schedule_state("n").await.unwrap(), Some(st));
}
