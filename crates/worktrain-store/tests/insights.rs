//! Conformance of [`InsightsStore`] backends. Every check talks to the store only through
//! the trait (`suite`); a backend joins by opening an empty store and calling each check
//! (see the `sqlite` module at the end).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use worktrain_store::insights::{
    FindingFilter, FindingRow, FindingsUpdate, GroupFilter, InsightsStore, ProposalFilter,
    ProposalRow, PutOutcome, TraceFilter, TraceRow,
};

fn finding(trace: &str, ordinal: u32, fp: &str, step: &str) -> FindingRow {
    FindingRow {
        trace_id: trace.to_owned(),
        ordinal,
        detector: "repeated_error".to_owned(),
        severity: "warning".to_owned(),
        fingerprint: fp.to_owned(),
        workflow_id: None,
        step_id: Some(step.to_owned()),
        outcome: String::new(),
        body: format!("{{\"n\":{ordinal}}}"),
    }
}

fn trace(
    id: &str,
    started: i64,
    outcome: &str,
    digest: &str,
    findings: Vec<FindingRow>,
) -> TraceRow {
    TraceRow {
        trace_id: id.to_owned(),
        source: "worktrain".to_owned(),
        native_id: id.trim_start_matches("worktrain:").to_owned(),
        workflow_id: Some("fix".to_owned()),
        trigger: Some("api".to_owned()),
        outcome: outcome.to_owned(),
        started_at_ms: Some(started),
        ended_at_ms: Some(started + 10),
        version: 7,
        digest: digest.to_owned(),
        summary: "{}".to_owned(),
        trace: format!("{{\"id\":\"{id}\"}}"),
        steps: vec!["plan".to_owned(), "build".to_owned(), "plan".to_owned()],
        findings,
        imported_at_ms: 1,
    }
}

/// Storing is idempotent by digest; a new version replaces the findings.
pub async fn put_is_idempotent_and_replaces_findings(s: &dyn InsightsStore) {
    let t1 = trace(
        "worktrain:a",
        100,
        "FAILED",
        "d1",
        vec![
            finding("worktrain:a", 0, "fpA", "build"),
            finding("worktrain:a", 1, "fpB", "plan"),
        ],
    );
    assert_eq!(s.put_trace(&t1).await.unwrap(), PutOutcome::Inserted);
    assert_eq!(s.put_trace(&t1).await.unwrap(), PutOutcome::Unchanged);
    let back = s.trace("worktrain:a").await.unwrap().unwrap();
    assert_eq!(back.findings.len(), 2);
    assert_eq!(
        back.findings[0].outcome, "FAILED",
        "outcome copied for grouping"
    );
    assert_eq!(back.findings[0].workflow_id.as_deref(), Some("fix"));
    assert_eq!(back.steps, vec!["build", "plan"]);
    assert_eq!(back.trace, t1.trace);
    assert_eq!(
        s.trace_version("worktrain:a").await.unwrap(),
        Some((7, "d1".to_owned()))
    );
    // A new version replaces the findings: the old ones are gone.
    let mut t2 = trace(
        "worktrain:a",
        100,
        "SUCCESS",
        "d2",
        vec![finding("worktrain:a", 0, "fpC", "build")],
    );
    t2.version = 9;
    assert_eq!(s.put_trace(&t2).await.unwrap(), PutOutcome::Updated);
    let back = s.trace("worktrain:a").await.unwrap().unwrap();
    assert_eq!(back.findings.len(), 1);
    assert_eq!(back.findings[0].fingerprint, "fpC");
    assert_eq!(back.outcome, "SUCCESS");
    assert_eq!(
        s.trace_version("worktrain:a").await.unwrap(),
        Some((9, "d2".to_owned()))
    );
    assert!(s.trace("worktrain:none").await.unwrap().is_none());
}

/// Lists have a defined order, filters and pages.
pub async fn lists_are_ordered_filtered_and_paged(s: &dyn InsightsStore) {
    for (id, start) in [
        ("worktrain:c", 300),
        ("worktrain:a", 100),
        ("worktrain:b", 100),
    ] {
        s.put_trace(&trace(
            id,
            start,
            "UNKNOWN",
            id,
            vec![finding(id, 0, "fp", "plan")],
        ))
        .await
        .unwrap();
    }
    let mut other = trace("claude_code:x", 200, "UNKNOWN", "x", vec![]);
    other.source = "claude_code".to_owned();
    other.workflow_id = None;
    s.put_trace(&other).await.unwrap();
    let all = s.traces(&TraceFilter::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(
        ids,
        ["worktrain:a", "worktrain:b", "claude_code:x", "worktrain:c"]
    );
    assert_eq!(all[0].findings, 1);
    let rows = s.trace_rows(&TraceFilter::default()).await.unwrap();
    assert_eq!(
        rows.iter().map(|t| t.trace_id.as_str()).collect::<Vec<_>>(),
        ids
    );
    let since = s
        .traces(&TraceFilter {
            since_ms: Some(200),
            ..TraceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
    let src = s
        .traces(&TraceFilter {
            source: Some("claude_code".into()),
            ..TraceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(src.len(), 1);
    let page = s
        .traces(&TraceFilter {
            limit: Some(2),
            offset: Some(1),
            ..TraceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|t| t.trace_id.as_str()).collect::<Vec<_>>(),
        ["worktrain:b", "claude_code:x"]
    );
    let f = s
        .findings(&FindingFilter {
            workflow_id: Some("fix".into()),
            step_id: Some("plan".into()),
            ..FindingFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        f.iter().map(|f| f.trace_id.as_str()).collect::<Vec<_>>(),
        ["worktrain:a", "worktrain:b", "worktrain:c"]
    );
}

/// Recurrence counts distinct traces, failing and known outcomes.
pub async fn groups_count_distinct_sessions_and_failures(s: &dyn InsightsStore) {
    let rows = [
        ("worktrain:1", "FAILED"),
        ("worktrain:2", "PARTIAL"),
        ("worktrain:3", "SUCCESS"),
        ("worktrain:4", "UNKNOWN"),
    ];
    for (id, outcome) in rows {
        // Two findings with the same fingerprint in one trace count once.
        let f = vec![
            finding(id, 0, "fpX", "build"),
            finding(id, 1, "fpX", "build"),
            finding(id, 2, "fpY", "plan"),
        ];
        s.put_trace(&trace(id, 1, outcome, id, f)).await.unwrap();
    }
    s.put_trace(&trace("worktrain:5", 1, "BLOCKED", "5", vec![]))
        .await
        .unwrap();
    let groups = s
        .finding_groups(&GroupFilter {
            min_sessions: 3,
            ..GroupFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(groups.len(), 2);
    let x = groups.iter().find(|g| g.fingerprint == "fpX").unwrap();
    assert_eq!(
        (x.workflow_id.as_str(), x.step_id.as_str()),
        ("fix", "build")
    );
    assert_eq!((x.sessions, x.failing, x.known), (4, 2, 3));
    assert_eq!(x.detector, "repeated_error");
    assert!(
        s.finding_groups(&GroupFilter {
            min_sessions: 5,
            ..GroupFilter::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
    let only = s
        .finding_groups(&GroupFilter {
            min_sessions: 1,
            workflow_id: Some("fix".into()),
            step_id: Some("plan".into()),
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].fingerprint, "fpY");
    let o = s.step_outcomes("fix", "build").await.unwrap();
    assert_eq!((o.sessions, o.failing, o.known), (5, 3, 4));
    let none = s.step_outcomes("fix", "nope").await.unwrap();
    assert_eq!(none.sessions, 0);
}

fn proposal(id: &str, confidence: f64) -> ProposalRow {
    ProposalRow {
        proposal_id: id.to_owned(),
        workflow_id: "fix".to_owned(),
        step_id: "build".to_owned(),
        fingerprint: "fpX".to_owned(),
        detector: "repeated_error".to_owned(),
        status: "open".to_owned(),
        confidence,
        sessions: 3,
        body: "{}".to_owned(),
        created_at_ms: 10,
        updated_at_ms: 10,
    }
}

/// Proposals keep their status across refreshes; changes are appended to a history.
pub async fn proposals_keep_status_and_history(s: &dyn InsightsStore) {
    assert!(s.upsert_proposal(&proposal("prop_b", 0.4)).await.unwrap());
    assert!(s.upsert_proposal(&proposal("prop_a", 0.9)).await.unwrap());
    let list = s.proposals(&ProposalFilter::default()).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|p| p.proposal_id.as_str())
            .collect::<Vec<_>>(),
        ["prop_a", "prop_b"]
    );
    let change = s
        .set_proposal_status("prop_a", "dismissed", Some("not our problem"), 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.ordinal, 2);
    // New evidence updates the proposal but keeps its status and creation time.
    let mut again = proposal("prop_a", 0.95);
    again.sessions = 5;
    again.created_at_ms = 99;
    again.updated_at_ms = 30;
    assert!(!s.upsert_proposal(&again).await.unwrap());
    let p = s.proposal("prop_a").await.unwrap().unwrap();
    assert_eq!(
        (p.status.as_str(), p.sessions, p.created_at_ms),
        ("dismissed", 5, 10)
    );
    assert!((p.confidence - 0.95).abs() < 1e-9);
    let h = s.proposal_history("prop_a").await.unwrap();
    assert_eq!(
        h.iter().map(|c| c.status.as_str()).collect::<Vec<_>>(),
        ["open", "dismissed"]
    );
    assert_eq!(h[1].note.as_deref(), Some("not our problem"));
    assert!(
        s.set_proposal_status("prop_none", "applied", None, 1)
            .await
            .unwrap()
            .is_none()
    );
    let open = s
        .proposals(&ProposalFilter {
            status: Some("open".into()),
            ..ProposalFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
}

/// Notes are appended with increasing ordinals.
pub async fn notes_are_appended_in_order(s: &dyn InsightsStore) {
    let a = s
        .add_note("worktrain:a", "explanation", "{\"text\":\"one\"}", 5)
        .await
        .unwrap();
    let b = s
        .add_note("worktrain:a", "explanation", "{\"text\":\"two\"}", 6)
        .await
        .unwrap();
    assert_eq!((a.ordinal, b.ordinal), (1, 2));
    let notes = s.notes("worktrain:a").await.unwrap();
    assert_eq!(notes, vec![a, b]);
    assert!(s.notes("worktrain:b").await.unwrap().is_empty());
}

/// Re-analysis replaces findings and digest without rewriting the trace.
pub async fn findings_can_be_replaced_without_the_trace(s: &dyn InsightsStore) {
    let t = trace(
        "worktrain:r",
        5,
        "FAILED",
        "d1",
        vec![finding("worktrain:r", 0, "fpA", "build")],
    );
    s.put_trace(&t).await.unwrap();
    let bodies = s.trace_bodies(&TraceFilter::default()).await.unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        (
            bodies[0].trace_id.as_str(),
            bodies[0].version,
            bodies[0].trace.as_str()
        ),
        ("worktrain:r", 7, t.trace.as_str())
    );
    let up = FindingsUpdate {
        trace_id: "worktrain:r".into(),
        digest: "d2".into(),
        findings: vec![
            finding("worktrain:r", 0, "fpB", "plan"),
            finding("worktrain:r", 1, "fpC", "plan"),
        ],
    };
    assert_eq!(
        s.replace_findings(std::slice::from_ref(&up)).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        s.replace_findings(&[up]).await.unwrap(),
        vec![false],
        "same digest"
    );
    let missing = FindingsUpdate {
        trace_id: "worktrain:none".into(),
        digest: "x".into(),
        findings: vec![],
    };
    assert_eq!(s.replace_findings(&[missing]).await.unwrap(), vec![false]);
    let back = s.trace("worktrain:r").await.unwrap().unwrap();
    assert_eq!(back.digest, "d2");
    assert_eq!(back.trace, t.trace);
    let fps: Vec<&str> = back
        .findings
        .iter()
        .map(|f| f.fingerprint.as_str())
        .collect();
    assert_eq!(fps, ["fpB", "fpC"]);
    assert_eq!(back.findings[0].outcome, "FAILED");
    assert_eq!(back.findings[0].workflow_id.as_deref(), Some("fix"));
}

mod sqlite {
    use worktrain_store::sqlite::SqliteOptions;
    use worktrain_store::{EventStore, SqliteStore};

    async fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db.sqlite"), SqliteOptions::default())
            .await
            .unwrap();
        (dir, s)
    }

    macro_rules! check {
        ($name:ident) => {
            #[tokio::test]
            async fn $name() {
                let (_d, s) = open().await;
                let insights = s.insights().expect("sqlite has insights storage");
                super::$name(insights).await;
            }
        };
    }

    check!(put_is_idempotent_and_replaces_findings);
    check!(lists_are_ordered_filtered_and_paged);
    check!(groups_count_distinct_sessions_and_failures);
    check!(proposals_keep_status_and_history);
    check!(notes_are_appended_in_order);
    check!(findings_can_be_replaced_without_the_trace);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_notes_and_status_changes_get_distinct_ordinals() {
        let (_d, s) = open().await;
        super::concurrent_notes_and_status_changes_get_distinct_ordinals(std::sync::Arc::new(s))
            .await;
    }

    #[tokio::test]
    async fn history_and_notes_are_append_only_in_the_database() {
        let (_d, s) = open().await;
        let i = s.insights().unwrap();
        i.upsert_proposal(&super::proposal("prop_a", 0.5))
            .await
            .unwrap();
        i.add_note("t", "explanation", "{}", 1).await.unwrap();
        for sql in [
            "UPDATE insight_proposal_history SET status = 'x'",
            "DELETE FROM insight_proposal_history",
            "UPDATE insight_notes SET body = 'x'",
            "DELETE FROM insight_notes",
        ] {
            let e = sqlx::query(sql)
                .execute(s.pool())
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("append-only"), "{sql}: {e}");
        }
    }
}

/// Concurrent writers of one trace's notes and one proposal's status each get their own
/// ordinal (nothing lost, no collision).
pub async fn concurrent_notes_and_status_changes_get_distinct_ordinals(
    s: std::sync::Arc<dyn worktrain_store::EventStore>,
) {
    s.insights()
        .unwrap()
        .upsert_proposal(&proposal("prop_c", 0.5))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16i64 {
        let s = s.clone();
        tasks.spawn(async move {
            let i_store = s.insights().unwrap();
            let note = i_store
                .add_note("t-conc", "explanation", &format!("{{\"n\":{i}}}"), i)
                .await
                .unwrap();
            let change = i_store
                .set_proposal_status(
                    "prop_c",
                    if i % 2 == 0 { "open" } else { "dismissed" },
                    None,
                    i,
                )
                .await
                .unwrap()
                .unwrap();
            (note.ordinal, change.ordinal)
        });
    }
    let mut notes = Vec::new();
    let mut changes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (n, c) = r.unwrap();
        notes.push(n);
        changes.push(c);
    }
    notes.sort_unstable();
    changes.sort_unstable();
    assert_eq!(notes, (1..=16).collect::<Vec<u32>>());
    // The history starts with the proposal's creation (ordinal 1).
    assert_eq!(changes, (2..=17).collect::<Vec<u32>>());
    let i_store = s.insights().unwrap();
    assert_eq!(i_store.notes("t-conc").await.unwrap().len(), 16);
    assert_eq!(i_store.proposal_history("prop_c").await.unwrap().len(), 17);
}

mod postgres {
    use std::sync::Arc;

    use worktrain_store::postgres::PgStore;
    use worktrain_store::{EventStore, StoreOptions, StoreUrl};
    use worktrain_testkit::postgres::{TestDatabase, fresh_database};

    async fn open() -> Option<(TestDatabase, Arc<PgStore>)> {
        let db = fresh_database().await?;
        let s = PgStore::open(
            &StoreUrl::Postgres(db.url.clone()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        Some((db, Arc::new(s)))
    }

    macro_rules! check {
        ($name:ident) => {
            #[tokio::test]
            async fn $name() {
                let Some((_d, s)) = open().await else {
                    return;
                };
                let insights = s.insights().expect("postgres has insights storage");
                super::$name(insights).await;
            }
        };
    }

    check!(put_is_idempotent_and_replaces_findings);
    check!(lists_are_ordered_filtered_and_paged);
    check!(groups_count_distinct_sessions_and_failures);
    check!(proposals_keep_status_and_history);
    check!(notes_are_appended_in_order);
    check!(findings_can_be_replaced_without_the_trace);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_notes_and_status_changes_get_distinct_ordinals() {
        let Some((_d, s)) = open().await else {
            return;
        };
        super::concurrent_notes_and_status_changes_get_distinct_ordinals(s).await;
    }

    #[tokio::test]
    async fn history_and_notes_are_append_only_in_the_database() {
        let Some((_d, s)) = open().await else {
            return;
        };
        let i = s.insights().unwrap();
        i.upsert_proposal(&super::proposal("prop_a", 0.5))
            .await
            .unwrap();
        i.add_note("t", "explanation", "{}", 1).await.unwrap();
        for sql in [
            "UPDATE insight_proposal_history SET status = 'x'",
            "DELETE FROM insight_proposal_history",
            "TRUNCATE insight_proposal_history",
            "UPDATE insight_notes SET body = 'x'",
            "DELETE FROM insight_notes",
            "TRUNCATE insight_notes",
        ] {
            let e = sqlx::query(sql)
                .execute(s.pool())
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("append-only"), "{sql}: {e}");
        }
    }

    /// Moving a store: everything trace analysis stored in SQLite arrives in PostgreSQL —
    /// traces with findings and steps, proposals with their whole status history (order,
    /// times, notes), post-mortems — and copying again duplicates nothing.
    #[tokio::test]
    async fn copy_from_the_embedded_store_keeps_everything() {
        use worktrain_store::insights::{FindingFilter, ProposalFilter, TraceFilter, copy_all};
        let Some((_d, pg)) = open().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sq = worktrain_store::SqliteStore::open(
            &dir.path().join("db.sqlite"),
            worktrain_store::sqlite::SqliteOptions::default(),
        )
        .await
        .unwrap();
        let from = sq.insights().unwrap();
        let to = pg.insights().unwrap();
        from.put_traces(&[
            super::trace(
                "worktrain:a",
                100,
                "FAILED",
                "d1",
                vec![super::finding("worktrain:a", 0, "fp1", "build")],
            ),
            super::trace("worktrain:b", 200, "SUCCESS", "d2", vec![]),
        ])
        .await
        .unwrap();
        from.upsert_proposal(&super::proposal("prop_m", 0.7))
            .await
            .unwrap();
        from.set_proposal_status("prop_m", "dismissed", Some("not now"), 20)
            .await
            .unwrap();
        from.set_proposal_status("prop_m", "open", None, 30)
            .await
            .unwrap();
        let mut refreshed = super::proposal("prop_m", 0.9);
        refreshed.updated_at_ms = 40;
        from.upsert_proposal(&refreshed).await.unwrap();
        from.add_note("worktrain:a", "explanation", "{\"why\":1}", 50)
            .await
            .unwrap();
        from.add_note("worktrain:a", "explanation", "{\"why\":2}", 60)
            .await
            .unwrap();

        let copied = copy_all(from, to).await.unwrap();
        assert_eq!((copied.traces, copied.proposals, copied.notes), (2, 1, 2));
        let all = TraceFilter::default();
        assert_eq!(
            from.trace_rows(&all).await.unwrap(),
            to.trace_rows(&all).await.unwrap()
        );
        assert_eq!(
            from.findings(&FindingFilter::default()).await.unwrap(),
            to.findings(&FindingFilter::default()).await.unwrap()
        );
        assert_eq!(
            from.proposals(&ProposalFilter::default()).await.unwrap(),
            to.proposals(&ProposalFilter::default()).await.unwrap()
        );
        assert_eq!(
            from.proposal_history("prop_m").await.unwrap(),
            to.proposal_history("prop_m").await.unwrap()
        );
        assert_eq!(to.proposal_history("prop_m").await.unwrap().len(), 3);
        assert_eq!(
            from.notes("worktrain:a").await.unwrap(),
            to.notes("worktrain:a").await.unwrap()
        );
        // Again: nothing new.
        let again = copy_all(from, to).await.unwrap();
        assert_eq!((again.traces, again.proposals, again.notes), (0, 0, 0));
        assert_eq!(to.notes("worktrain:a").await.unwrap().len(), 2);
        assert_eq!(to.proposal_history("prop_m").await.unwrap().len(), 3);
    }

    /// A database made by the previous schema version (the event store only) gains the
    /// insights tables when a newer binary opens it; its sessions stay intact.
    #[tokio::test]
    async fn a_version_1_database_gains_insights_storage() {
        let Some((db, s)) = open().await else {
            return;
        };
        let appended = s
            .append(worktrain_store::AppendRequest {
                session_id: "ses_01J9Z8Y7X6W5V4T3S2R1Q0P9N8".parse().unwrap(),
                expected_seq: worktrain_core::ids::Seq(0),
                events: vec![worktrain_core::event::NewEvent {
                    body: worktrain_core::event::EventBody::SessionStarted {
                        workflow_id: "fix".parse().unwrap(),
                        workflow_hash: worktrain_core::ids::Sha256Hash::of(b"fix"),
                        workflow_version: "1".into(),
                        workflow_source: "test".into(),
                        goal: "before the upgrade".into(),
                        workspace: None,
                        branch: None,
                        context: serde_json::Map::new(),
                        mode: worktrain_core::event::SessionMode::Interactive,
                        parent: None,
                    },
                    idempotency_key: None,
                }],
                blobs: vec![],
            })
            .await
            .unwrap();
        // Back to what version 1 created: no insights tables, one migration recorded.
        for sql in [
            "DROP TABLE insight_traces, insight_trace_steps, insight_findings, insight_proposals,
                 insight_proposal_history, insight_notes",
            "DROP FUNCTION worktrain_proposal_history_append_only, worktrain_insight_notes_append_only",
            "DELETE FROM _sqlx_migrations WHERE version = 2",
        ] {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
        assert_eq!(s.schema_version().await.unwrap(), 1);
        s.close().await;
        let s = PgStore::open(
            &StoreUrl::Postgres(db.url.clone()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            s.schema_version().await.unwrap(),
            worktrain_store::postgres::SCHEMA_VERSION
        );
        let id = appended.summary.session_id;
        let back = s.session(id).await.unwrap().unwrap();
        assert_eq!(back.goal, "before the upgrade");
        assert!(s.verify(id).await.unwrap().unwrap().is_valid());
        let i = s.insights().unwrap();
        i.upsert_proposal(&super::proposal("prop_up", 0.5))
            .await
            .unwrap();
        assert!(i.proposal("prop_up").await.unwrap().is_some());
    }
}
