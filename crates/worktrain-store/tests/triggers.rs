//! Conformance of [`TriggerStore`], on both backends: deliveries persisted with their
//! decision in one transaction, redeliveries recorded as duplicates (also when they race,
//! as when two daemons receive them), decisions append-only and queryable per trigger and
//! source, source items, poll cursors, schedule state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use worktrain_store::triggers::{
    DecisionFilter, DeliveryInsert, NewDecision, NewDelivery, PollCursor, ScheduleState,
    SourceItem, SourceState,
};
use worktrain_store::{Store, StoreOptions, StoreUrl};

/// A fresh store of one backend, and a way to run raw SQL on it.
struct Db {
    _dir: Option<tempfile::TempDir>,
    url: StoreUrl,
    store: Arc<dyn Store>,
}

impl Db {
    async fn sqlite() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Sqlite(dir.path().join("t.db"));
        let store = worktrain_store::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        Some(Self {
            _dir: Some(dir),
            url,
            store,
        })
    }

    async fn postgres() -> Option<Self> {
        let db = worktrain_testkit::postgres::fresh_database().await?;
        let url = StoreUrl::Postgres(db.url);
        let store = worktrain_store::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        Some(Self {
            _dir: None,
            url,
            store,
        })
    }

    /// Run one raw statement; whether it succeeded.
    async fn raw_ok(&self, sql: &str) -> bool {
        match &self.url {
            StoreUrl::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new().filename(path),
                )
                .await
                .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .is_ok()
            }
            StoreUrl::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .is_ok()
            }
        }
    }
}

/// Every check, on both backends.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = super::Db::sqlite().await else { return };
                    super::$check(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = super::Db::postgres().await else { return };
                    super::$check(&db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    deliveries_dedupe_by_key_per_trigger_and_finish_with_decisions,
    decisions_are_append_only,
    source_items_polls_and_schedules_round_trip,
    racing_redeliveries_are_stored_once,
);

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

async fn deliveries_dedupe_by_key_per_trigger_and_finish_with_decisions(db: &Db) {
    let s = db.store.as_ref();
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

async fn decisions_are_append_only(db: &Db) {
    let s = db.store.as_ref();
    s.record_decision(decision("a", "filtered")).await.unwrap();
    assert!(!db.raw_ok("UPDATE trigger_decisions SET reason = 'x'").await);
    assert!(!db.raw_ok("DELETE FROM trigger_decisions").await);
    let by_source = s
        .decisions(&DecisionFilter {
            source: Some("github:o/r#1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_source.len(), 1);
}

async fn source_items_polls_and_schedules_round_trip(db: &Db) {
    let s = db.store.as_ref();
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

/// The same delivery arriving at several daemons at once is stored once; every other copy
/// is recorded as a duplicate of it.
async fn racing_redeliveries_are_stored_once(db: &Db) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = db.store.clone();
        tasks.spawn(async move {
            store
                .insert_deliveries(vec![delivery("race", "same-key")])
                .await
                .unwrap()[0]
        });
    }
    let mut stored = Vec::new();
    let mut dups = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            DeliveryInsert::Stored { id } => stored.push(id),
            DeliveryInsert::Duplicate { id } => dups.push(id),
        }
    }
    assert_eq!(stored.len(), 1, "{stored:?} {dups:?}");
    assert!(dups.iter().all(|d| *d == stored[0]));
    let counts = db.store.decision_counts("race").await.unwrap();
    assert!(counts.contains(&("received".to_string(), 1)), "{counts:?}");
    assert!(counts.contains(&("duplicate".to_string(), 5)), "{counts:?}");
}
