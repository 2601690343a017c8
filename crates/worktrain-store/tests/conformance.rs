//! The event-store conformance suite.
//!
//! Every check is a backend-neutral `async fn check(db: &dyn TestDb)` that talks to the
//! store only through [`EventStore`], plus a handful of raw hooks ([`TestDb`]) for what the
//! trait deliberately cannot do (attempting forbidden SQL, tampering, faking a newer
//! schema). A backend joins the suite by implementing [`TestDb`] and invoking
//! `all_checks!` with a constructor — see `all_checks!(sqlite, …)` and
//! `all_checks!(postgres, …)` below. PostgreSQL checks run on the server named by
//! `WORKTRAIN_TEST_POSTGRES_URL` (see `worktrain_testkit::postgres`), one fresh database
//! per check.
//!
//! Realistic event sequences are produced by the pure engine state machine from
//! `worktrain-core` (the same code the engine runs), so blocked attempts, checkpoints,
//! rewinds and completions look exactly as they do in production.

// Test code: helpers outside #[test] fns may panic on failure like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use worktrain_core::compile::{Pinned, compile};
use worktrain_core::context::Limits;
use worktrain_core::event::{EntryCause, EventBody, NewEvent, SessionMode, StoredEvent};
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, StepId};
use worktrain_core::load::parse_workflow;
use worktrain_core::machine::{AdvanceDecision, Machine, Plan, StartParams, Submission};
use worktrain_core::projection::{NodeRecord, NodeStatus, SessionStatus, SessionSummary};
use worktrain_core::run::{
    InterruptReason, RequeueReason, RunEnd, RunLimits, RunState, Trigger, TriggerKind,
};
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};
use worktrain_store::sqlite::{SCHEMA_VERSION, SqliteOptions};
use worktrain_store::{
    AppendOutcome, AppendRequest, EventStore, LeaseRenewal, RunFilter, SessionCursor,
    SessionFilter, SqliteStore, StoreError, StoreOptions, StoreUrl,
};

// ---------------------------------------------------------------------------------------
// What a backend provides
// ---------------------------------------------------------------------------------------

/// One empty database of some backend, plus the raw hooks the suite needs.
#[async_trait]
pub trait TestDb: Send + Sync {
    /// Open a store over this database (creating/migrating it on first open).
    /// `blob_limit` overrides the backend's default blob size limit.
    async fn open(&self, blob_limit: Option<usize>) -> Result<Arc<dyn EventStore>, StoreError>;

    /// Run one raw SQL statement; the database's error message on failure.
    async fn execute(&self, sql: &str) -> Result<u64, String>;

    /// Run a query returning one integer.
    async fn scalar(&self, sql: &str) -> i64;

    /// Remove the database-level append-only protection (so a test can tamper).
    async fn disable_append_only(&self);

    /// Record, behind the store's back, that a newer schema version was applied.
    async fn fake_schema_version(&self, version: i64);

    /// The schema version this build of the backend creates.
    fn supported_schema_version(&self) -> i64;

    /// A second, empty database of the same backend (for copies between stores).
    async fn sibling(&self) -> Box<dyn TestDb>;
}

/// Instantiate every conformance check as a `#[tokio::test]` in module `$module`, with
/// `$make` an async expression producing a fresh [`TestDb`] (`None`: the backend is
/// unavailable and explicitly skipped, see `worktrain_testkit::postgres`).
macro_rules! conformance_suite {
    ($module:ident, $make:expr; $($check:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = $make.await else { return };
                    super::$check(&db).await;
                }
            )*
        }
    };
}

/// Every check, for every backend.
macro_rules! all_checks {
    ($module:ident, $make:expr) => {
        conformance_suite!($module, $make;
            append_rejects_stale_writer,
            append_batch_is_atomic,
            idempotency_key_makes_duplicate_a_noop,
            append_only_is_enforced_by_the_database,
            hash_chain_detects_tampering,
            rebuilt_projections_equal_incremental_ones,
            blobs_are_content_addressed_and_limited,
            schema_version_recorded_and_reopen_works,
            newer_schema_is_refused,
            events_and_events_since_page,
            sessions_are_listed_filtered_and_paged,
            session_counts_match_the_summaries,
            session_filters_are_literal_and_unicode,
            queue_is_priority_then_fifo,
            claims_race_exactly_one_winner,
            leases_are_compare_and_set_and_expire,
            claims_respect_caps_across_workers,
            one_leader_at_a_time,
            dispatch_keys_are_unique,
            concurrent_appends_keep_one_chain,
            concurrent_replays_write_once,
            tailing_never_skips_a_committed_event,
            appends_are_announced,
            sessions_copy_between_stores,
            delivery_stages_fold_and_rebuild,
            workflow_samples_come_from_the_projections,
            keyset_pages_ignore_sessions_added_meanwhile,
            append_after_a_read_is_append,
            recent_summary_is_what_this_handle_last_saw,
            an_abandoned_append_leaves_nothing_behind,
            an_abandoned_refused_append_does_not_hold_the_database,
        );
    };
}

// ---------------------------------------------------------------------------------------
// SQLite backend
// ---------------------------------------------------------------------------------------

/// A SQLite database in a temporary directory.
#[derive(Debug)]
pub struct SqliteDb {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The first store opened, kept for raw access through its pool.
    raw: Mutex<Option<SqliteStore>>,
}

impl SqliteDb {
    /// A fresh (not yet created) database file.
    pub async fn new() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worktrain.db");
        Some(Self {
            _dir: dir,
            path,
            raw: Mutex::new(None),
        })
    }

    async fn pool(&self) -> sqlx::SqlitePool {
        let existing = self.raw.lock().expect("lock").clone();
        match existing {
            Some(s) => s.pool().clone(),
            None => {
                let s = SqliteStore::open(&self.path, SqliteOptions::default())
                    .await
                    .expect("open for raw access");
                let pool = s.pool().clone();
                *self.raw.lock().expect("lock") = Some(s);
                pool
            }
        }
    }
}

/// The `make_store()` of the SQLite backend: a store on a fresh tempfile database.
pub async fn make_store() -> (SqliteDb, Arc<dyn EventStore>) {
    let db = SqliteDb::new().await.expect("sqlite");
    let store = db.open(None).await.expect("open store");
    (db, store)
}

#[async_trait]
impl TestDb for SqliteDb {
    async fn open(&self, blob_limit: Option<usize>) -> Result<Arc<dyn EventStore>, StoreError> {
        let mut options = SqliteOptions::default();
        if let Some(limit) = blob_limit {
            options.blob_limit = limit;
        }
        let store = SqliteStore::open(&self.path, options).await?;
        let mut raw = self.raw.lock().expect("lock");
        if raw.is_none() {
            *raw = Some(store.clone());
        }
        Ok(Arc::new(store))
    }

    async fn execute(&self, sql: &str) -> Result<u64, String> {
        let pool = self.pool().await;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let pool = self.pool().await;
        let (v,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .expect("scalar query");
        v
    }

    async fn disable_append_only(&self) {
        self.execute("DROP TRIGGER events_reject_update")
            .await
            .expect("drop update trigger");
        self.execute("DROP TRIGGER events_reject_delete")
            .await
            .expect("drop delete trigger");
    }

    async fn fake_schema_version(&self, version: i64) {
        self.execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ({version}, 'from the future', 1, X'00', 0)"
        ))
        .await
        .expect("insert fake migration row");
    }

    fn supported_schema_version(&self) -> i64 {
        SCHEMA_VERSION
    }

    async fn sibling(&self) -> Box<dyn TestDb> {
        Box::new(SqliteDb::new().await.expect("sqlite"))
    }
}

all_checks!(sqlite, super::SqliteDb::new());

/// SQLite-only: the store runs in WAL mode with `synchronous=FULL`, as the design requires.
#[tokio::test]
async fn sqlite_uses_wal_and_full_sync() {
    let (db, store) = make_store().await;
    let pool = db.pool().await;
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("pragma");
    assert_eq!(mode.to_lowercase(), "wal");
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(&pool)
        .await
        .expect("pragma");
    assert_eq!(sync, 2, "synchronous=FULL");
    let (page,): (i64,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(&pool)
        .await
        .expect("pragma");
    assert_eq!(
        page, 512,
        "a new store uses small pages (bytes written per advance)"
    );
    assert_eq!(
        store.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL backend
// ---------------------------------------------------------------------------------------

/// A fresh database on the test PostgreSQL server.
#[derive(Debug)]
pub struct PgDb {
    db: worktrain_testkit::postgres::TestDatabase,
    raw: tokio::sync::OnceCell<sqlx::PgPool>,
}

impl PgDb {
    /// A fresh database (`None` when PostgreSQL tests are explicitly skipped).
    pub async fn new() -> Option<Self> {
        let db = worktrain_testkit::postgres::fresh_database().await?;
        Some(Self {
            db,
            raw: tokio::sync::OnceCell::new(),
        })
    }

    fn url(&self) -> StoreUrl {
        StoreUrl::Postgres(self.db.url.clone())
    }

    async fn pool(&self) -> &sqlx::PgPool {
        self.raw
            .get_or_init(|| async {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&self.db.url)
                    .await
                    .expect("raw pool")
            })
            .await
    }
}

#[async_trait]
impl TestDb for PgDb {
    async fn open(&self, blob_limit: Option<usize>) -> Result<Arc<dyn EventStore>, StoreError> {
        let mut options = StoreOptions::default();
        if let Some(limit) = blob_limit {
            options.blob_limit = limit;
        }
        Ok(worktrain_store::open(&self.url(), &options).await?)
    }

    async fn execute(&self, sql: &str) -> Result<u64, String> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(self.pool().await)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let (v,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.pool().await)
            .await
            .expect("scalar query");
        v
    }

    async fn disable_append_only(&self) {
        self.execute("DROP TRIGGER events_append_only ON events")
            .await
            .expect("drop append-only trigger");
    }

    async fn fake_schema_version(&self, version: i64) {
        self.execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ({version}, 'from the future', TRUE, '\\x00'::bytea, 0)"
        ))
        .await
        .expect("insert fake migration row");
    }

    fn supported_schema_version(&self) -> i64 {
        worktrain_store::postgres::SCHEMA_VERSION
    }

    async fn sibling(&self) -> Box<dyn TestDb> {
        Box::new(PgDb::new().await.expect("postgres"))
    }
}

all_checks!(postgres, super::PgDb::new());

/// PostgreSQL announces appends across processes: a store handle with its own connection
/// pool (another daemon) hears an append made through a different handle, by
/// `LISTEN/NOTIFY` — which is what wakes `await` and event streams on every daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_are_announced_to_other_daemons() {
    let Some(db) = PgDb::new().await else {
        return;
    };
    let listener = db.open(None).await.expect("open");
    let writer = db.open(None).await.expect("another pool");
    let mut rx = listener.subscribe();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let d = Driver::new();
    let id = d.start(writer.as_ref(), json!({})).await;
    let last = writer.session(id).await.expect("s").expect("e").last_seq;
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let a = rx.recv().await.expect("notification");
            if a.session_id == id {
                return a;
            }
        }
    })
    .await
    .expect("another handle's append is announced within 5 s");
    assert_eq!(got.last_seq, last);
}

// ---------------------------------------------------------------------------------------
// Producing realistic events with the pure state machine
// ---------------------------------------------------------------------------------------

const WORKFLOW: &str = r#"
schemaVersion: 1
id: conformance
name: Conformance
description: Four steps, one of them conditional.
version: "1"
steps:
  - id: plan
    title: Plan
    prompt: "Plan {{goal}}"
  - id: deep-dive
    title: Deep dive
    prompt: Only for large tasks.
    runCondition: {var: size, equals: large}
  - id: build
    title: Build
    prompt: Build it.
  - id: review
    title: Review
    prompt: Review it.
    notesOptional: true
"#;

/// Drives sessions through the pure machine and appends its plans.
struct Driver {
    pinned: Pinned,
    keyring: Keyring,
    limits: Limits,
    next_id: Mutex<u128>,
}

impl Driver {
    fn new() -> Self {
        let def = parse_workflow("conformance.yaml", WORKFLOW).expect("parse");
        Self {
            pinned: compile(&def).expect("compile"),
            keyring: Keyring::new([7; 32], "2026-01-01T00:00:00Z".into()),
            limits: Limits::default(),
            next_id: Mutex::new(1),
        }
    }

    fn machine(&self) -> Machine<'_> {
        Machine {
            pinned: &self.pinned,
            keyring: &self.keyring,
            limits: &self.limits,
        }
    }

    fn session_id(&self) -> SessionId {
        let mut n = self.next_id.lock().expect("lock");
        *n += 1;
        SessionId::from_parts(1_700_000_000_000 + *n as u64, 0xabcd_0000 + *n)
    }

    async fn append(
        store: &dyn EventStore,
        id: SessionId,
        expected: Seq,
        plan: Plan,
    ) -> AppendOutcome {
        store
            .append(AppendRequest {
                session_id: id,
                expected_seq: expected,
                events: plan.events,
                blobs: plan.blobs,
            })
            .await
            .expect("append plan")
    }

    /// Start a session with the given initial context.
    async fn start(&self, store: &dyn EventStore, context: Value) -> SessionId {
        let id = self.session_id();
        let plan = self
            .machine()
            .start(
                id,
                StartParams {
                    goal: format!("goal of {id}"),
                    context: obj(context),
                    source: "test".into(),
                    ..StartParams::default()
                },
            )
            .expect("start plan");
        let out = Self::append(store, id, Seq(0), plan).await;
        assert!(!out.duplicate);
        id
    }

    /// Submit output for the current node/attempt.
    async fn submit(
        &self,
        store: &dyn EventStore,
        id: SessionId,
        notes: &str,
        context: Value,
    ) -> SessionSummary {
        let summary = store.session(id).await.expect("session").expect("exists");
        let cur = summary.current.clone().expect("a current step");
        let claims = TokenClaims {
            kind: TokenKind::Advance,
            session: id,
            node: cur.node,
            attempt: cur.attempt,
        };
        let submission = Submission {
            notes: Some(notes.to_owned()),
            artifacts: Vec::new(),
            context: obj(context),
        };
        let prior = store
            .attempt(id, cur.node, cur.attempt)
            .await
            .expect("attempt");
        match self
            .machine()
            .advance(&summary, claims, &submission, prior.as_ref())
            .expect("advance")
        {
            AdvanceDecision::Apply(plan) => {
                Self::append(store, id, summary.last_seq, *plan)
                    .await
                    .summary
            }
            AdvanceDecision::Replay { .. } => panic!("unexpected replay"),
        }
    }

    async fn checkpoint(&self, store: &dyn EventStore, id: SessionId, notes: &str) {
        let summary = store.session(id).await.expect("session").expect("exists");
        let cur = summary.current.clone().expect("a current step");
        let claims = TokenClaims {
            kind: TokenKind::Checkpoint,
            session: id,
            node: cur.node,
            attempt: cur.attempt,
        };
        let plan = self
            .machine()
            .checkpoint(&summary, claims, notes, &obj(json!({"progress": notes})))
            .expect("checkpoint plan");
        Self::append(store, id, summary.last_seq, plan).await;
    }

    /// Rewind to the latest completed node of `step` on the current path.
    async fn rewind(&self, store: &dyn EventStore, id: SessionId, step: &str) {
        let summary = store.session(id).await.expect("session").expect("exists");
        let nodes = store.nodes(id).await.expect("nodes");
        let path = current_path(&summary, &nodes);
        let step = StepId::new(step).expect("step id");
        let target = path
            .iter()
            .rev()
            .find(|n| n.step_id == step && n.status == NodeStatus::Completed)
            .expect("completed target on path")
            .clone();
        let plan = self
            .machine()
            .rewind(&summary, &path, &target, Some("redo".into()))
            .expect("rewind plan");
        Self::append(store, id, summary.last_seq, plan).await;
    }
}

fn current_path(summary: &SessionSummary, nodes: &[NodeRecord]) -> Vec<NodeRecord> {
    let by_id: HashMap<NodeId, &NodeRecord> = nodes.iter().map(|n| (n.node, n)).collect();
    let tip = summary
        .current
        .as_ref()
        .map(|c| c.node)
        .unwrap_or(NodeId(summary.nodes));
    let mut path = Vec::new();
    let mut cursor = by_id.get(&tip).copied();
    while let Some(n) = cursor {
        path.push(n.clone());
        cursor = n.parent.and_then(|p| by_id.get(&p).copied());
    }
    path.reverse();
    path
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => panic!("not an object: {other}"),
    }
}

async fn all_events(store: &dyn EventStore, id: SessionId) -> Vec<StoredEvent> {
    store.events(id, Seq(0), 100_000).await.expect("events")
}

async fn count_events(db: &dyn TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM events").await
}

async fn count_blobs(db: &dyn TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM blobs").await
}

fn started(workflow_hash: Sha256Hash) -> NewEvent {
    NewEvent {
        body: EventBody::SessionStarted {
            workflow_id: "conformance".parse().expect("workflow id"),
            workflow_hash,
            workflow_version: "1".into(),
            workflow_source: "test".into(),
            goal: "hand-made".into(),
            workspace: None,
            branch: None,
            context: Map::new(),
            mode: SessionMode::Interactive,
            parent: None,
        },
        idempotency_key: None,
    }
}

fn entered(node: u32, parent: Option<u32>, key: Option<String>) -> NewEvent {
    NewEvent {
        body: EventBody::NodeEntered {
            node: NodeId(node),
            step_id: StepId::new("plan").expect("step id"),
            step: worktrain_core::compile::StepIndex(0),
            pc: worktrain_core::compile::Pc(0),
            parent: parent.map(NodeId),
            cause: if parent.is_some() {
                EntryCause::Advance
            } else {
                EntryCause::Start
            },
            requires_confirmation: false,
        },
        idempotency_key: key,
    }
}

fn checkpoint_event(node: u32, n: u32, key: Option<String>) -> NewEvent {
    NewEvent {
        body: EventBody::CheckpointRecorded {
            node: NodeId(node),
            notes: format!("checkpoint {n}"),
            context_delta: Map::new(),
            checkpoint_hash: Sha256Hash::of(format!("checkpoint {n}").as_bytes()),
        },
        idempotency_key: key,
    }
}

// ---------------------------------------------------------------------------------------
// 1. Optimistic concurrency and atomic batches
// ---------------------------------------------------------------------------------------

/// A writer that states a stale `expected_seq` gets `SeqConflict`; nothing is overwritten.
async fn append_rejects_stale_writer(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let store = store.as_ref();
    let id = SessionId::from_parts(1_700_000_000_000, 1);
    let first = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![started(Sha256Hash::ZERO), entered(1, None, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("first append");
    assert_eq!((first.first_seq, first.last_seq), (Seq(1), Seq(2)));
    assert!(!first.duplicate);

    // Writer A and writer B both saw seq 2. A wins.
    let a = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: vec![checkpoint_event(1, 1, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("writer A");
    assert_eq!(a.first_seq, Seq(3));
    let before = all_events(store, id).await;

    // B is stale: conflict naming both sequence numbers, and the log is untouched.
    let b = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: vec![checkpoint_event(1, 2, None)],
            blobs: vec![b"writer B's blob".to_vec()],
        })
        .await;
    match b {
        Err(StoreError::SeqConflict {
            session,
            expected,
            actual,
        }) => {
            assert_eq!(session, id);
            assert_eq!(expected, Seq(2));
            assert_eq!(actual, Seq(3));
        }
        other => panic!("expected SeqConflict, got {other:?}"),
    }
    let after = all_events(store, id).await;
    assert_eq!(before, after, "a stale writer must never change the log");
    assert!(
        matches!(&after[2].body, EventBody::CheckpointRecorded { notes, .. } if notes == "checkpoint 1"),
        "writer A's event survives"
    );
    assert_eq!(
        store
            .blob(Sha256Hash::of(b"writer B's blob"))
            .await
            .expect("blob"),
        None
    );

    // A writer that expects a future seq also conflicts, as does creating an existing session.
    for expected in [Seq(0), Seq(4), Seq(99)] {
        let r = store
            .append(AppendRequest {
                session_id: id,
                expected_seq: expected,
                events: vec![checkpoint_event(1, 9, None)],
                blobs: Vec::new(),
            })
            .await;
        assert!(
            matches!(r, Err(StoreError::SeqConflict { actual: Seq(3), .. })),
            "expected {expected}: {r:?}"
        );
    }
    // A writer that re-reads and states the right seq succeeds.
    let retried = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(3),
            events: vec![checkpoint_event(1, 2, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("retry after re-reading");
    assert_eq!(retried.first_seq, Seq(4));
    assert_eq!(retried.summary.checkpoints, 2);
    assert_eq!(
        store
            .session(id)
            .await
            .expect("session")
            .expect("exists")
            .last_seq,
        Seq(4)
    );

    // An empty batch is refused.
    let r = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(4),
            events: Vec::new(),
            blobs: Vec::new(),
        })
        .await;
    assert!(matches!(r, Err(StoreError::EmptyAppend)), "{r:?}");
}

/// What an advance does: read the summary and the attempt together
/// (`session_and_attempt`), decide, then `append_after` that read. Each answer is the one
/// `session`, `attempt` and `append` give: a write on a current read; the same conflict
/// for a stale read, the log untouched; the duplicate for a batch that already landed; and
/// a read of another seq is not trusted.
async fn append_after_a_read_is_append(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let store = store.as_ref();
    let d = Driver::new();
    let id = d.start(store, json!({})).await;
    let (summary, record) = store
        .session_and_attempt(id, NodeId(1), Attempt(1))
        .await
        .expect("read");
    let seen = summary.expect("the session");
    assert_eq!(Some(&seen), store.session(id).await.expect("s").as_ref());
    assert_eq!(record, None, "nothing submitted yet");
    let missing = SessionId::from_parts(1_600_000_000_000, 1);
    assert_eq!(
        store
            .session_and_attempt(missing, NodeId(1), Attempt(1))
            .await
            .expect("read"),
        (None, None)
    );

    // Writer A appends after its read.
    let request = |expected: Seq, n: u32, key: Option<&str>, blob: &[u8]| AppendRequest {
        session_id: id,
        expected_seq: expected,
        events: vec![checkpoint_event(1, n, key.map(str::to_owned))],
        blobs: vec![blob.to_vec()],
    };
    let a = store
        .append_after(
            &seen,
            request(seen.last_seq, 1, Some("writer-a"), b"blob a"),
        )
        .await
        .expect("writer A");
    assert!(!a.duplicate);
    assert_eq!(a.first_seq, Seq(seen.last_seq.0 + 1));
    assert_eq!(
        Some(&a.summary),
        store.session(id).await.expect("s").as_ref()
    );
    assert_eq!(a.summary.checkpoints, 1);
    assert!(
        store
            .blob(Sha256Hash::of(b"blob a"))
            .await
            .expect("b")
            .is_some()
    );
    let before = all_events(store, id).await;

    // Writer B read the same summary: stale. The conflict `append` gives, nothing written.
    let b = store
        .append_after(&seen, request(seen.last_seq, 2, None, b"blob b"))
        .await;
    assert!(
        matches!(b, Err(StoreError::SeqConflict { expected, actual, .. })
            if expected == seen.last_seq && actual == a.last_seq),
        "{b:?}"
    );
    assert_eq!(all_events(store, id).await, before);
    assert_eq!(
        store.blob(Sha256Hash::of(b"blob b")).await.expect("b"),
        None
    );
    assert!(store.verify(id).await.expect("v").expect("e").is_valid());

    // A's batch sent again after the same (now stale) read: the duplicate of what landed.
    let again = store
        .append_after(
            &seen,
            request(seen.last_seq, 1, Some("writer-a"), b"blob a"),
        )
        .await
        .expect("duplicate");
    assert!(again.duplicate);
    assert_eq!((again.first_seq, again.last_seq), (a.first_seq, a.last_seq));
    assert_eq!(all_events(store, id).await, before);

    // A read of another seq is ignored: the batch is built on the stored summary.
    let c = store
        .append_after(&seen, request(a.last_seq, 3, None, b"blob c"))
        .await
        .expect("writer C");
    assert_eq!(c.summary.checkpoints, 2, "built on the stored summary");
    assert_eq!(
        Some(&c.summary),
        store.session(id).await.expect("s").as_ref()
    );
    assert!(store.verify(id).await.expect("v").expect("e").is_valid());

    // After a submission, the attempt record comes back with the summary.
    let after = d.submit(store, id, "planned", json!({})).await;
    let (summary, record) = store
        .session_and_attempt(id, NodeId(1), Attempt(1))
        .await
        .expect("read");
    assert_eq!(summary.as_ref(), Some(&after));
    let record = record.expect("attempt 1 at node 1 is recorded");
    assert_eq!(
        Some(&record),
        store
            .attempt(id, NodeId(1), Attempt(1))
            .await
            .expect("a")
            .as_ref()
    );
    assert_eq!(
        store
            .session_and_attempt(id, NodeId(1), Attempt(2))
            .await
            .expect("read")
            .1,
        None
    );
}

/// A handle answers `recent_summary` with what it last wrote or read; another handle's
/// append makes it stale, and an append built on the stale summary is refused without a
/// trace (the handle then forgets it) — as an append on any stale read.
async fn recent_summary_is_what_this_handle_last_saw(db: &dyn TestDb) {
    let a = db.open(None).await.expect("open A");
    let a = a.as_ref();
    let d = Driver::new();
    let id = d.start(a, json!({})).await;
    let stored = a.session(id).await.expect("s").expect("the session");
    assert_eq!(
        a.recent_summary(id).as_deref(),
        Some(&stored),
        "its own append"
    );
    let missing = SessionId::from_parts(1_600_000_000_000, 2);
    assert_eq!(a.recent_summary(missing), None);

    let request = |expected: Seq, n: u32| AppendRequest {
        session_id: id,
        expected_seq: expected,
        events: vec![checkpoint_event(1, n, None)],
        blobs: Vec::new(),
    };
    let one = a
        .append(request(stored.last_seq, 1))
        .await
        .expect("append by A");
    assert_eq!(a.recent_summary(id).as_deref(), Some(&one.summary));

    // B is another handle on the same database (another process, another daemon).
    let b = db.open(None).await.expect("open B");
    let b = b.as_ref();
    assert_eq!(
        b.recent_summary(id),
        None,
        "B has neither written nor read it"
    );
    let two = b
        .append(request(one.last_seq, 2))
        .await
        .expect("append by B");
    assert_eq!(b.recent_summary(id).as_deref(), Some(&two.summary));

    // A still holds the summary it wrote: a real one, now behind the log.
    let stale = a.recent_summary(id).expect("A's summary");
    assert_eq!(*stale, one.summary);
    let before = all_events(a, id).await;
    let refused = a.append_after(&stale, request(stale.last_seq, 3)).await;
    assert!(
        matches!(refused, Err(StoreError::SeqConflict { expected, actual, .. })
            if expected == one.last_seq && actual == two.last_seq),
        "{refused:?}"
    );
    assert_eq!(all_events(a, id).await, before, "nothing written");
    assert!(a.verify(id).await.expect("v").expect("e").is_valid());
    assert_eq!(
        a.recent_summary(id),
        None,
        "a refused append drops what A held"
    );

    // A read brings it back, current.
    let (read, _) = a
        .session_and_attempt(id, NodeId(1), Attempt(1))
        .await
        .expect("read");
    assert_eq!(read.as_ref(), Some(&two.summary));
    assert_eq!(a.recent_summary(id).as_deref(), Some(&two.summary));

    // Rebuilt projections replace every summary: nothing from before is held.
    a.rebuild_projections().await.expect("rebuild");
    assert_eq!(a.recent_summary(id), None);
}

/// Appends whose callers stop waiting at every point of their write (a timeout, a
/// dropped request) leave no transaction open, and each lands at most once: sent again
/// with its idempotency key, it is either the duplicate of the one that landed or lands
/// now. Every later write, on this handle and on another, goes through; the chain is whole.
async fn an_abandoned_append_leaves_nothing_behind(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let store = store.as_ref();
    let d = Driver::new();
    let id = d.start(store, json!({})).await;
    let mut expected = store.session(id).await.expect("s").expect("e").last_seq;
    let mut duplicates = 0;
    for i in 0..60u32 {
        let request = || AppendRequest {
            session_id: id,
            expected_seq: expected,
            events: vec![checkpoint_event(1, i, Some(format!("abandoned-{i}")))],
            blobs: vec![format!("blob {i}").into_bytes()],
        };
        // From not at all to well past a durable commit, in 10 µs steps.
        let wait = std::time::Duration::from_micros(u64::from(i) * 10);
        let outcome = match tokio::time::timeout(wait, store.append(request())).await {
            Ok(outcome) => outcome.expect("an append that finished in time"),
            Err(_) => {
                let again = store
                    .append(request())
                    .await
                    .expect("the abandoned append, again");
                duplicates += usize::from(again.duplicate);
                again
            }
        };
        assert_eq!(outcome.first_seq, Seq(expected.0 + 1), "append {i}");
        expected = outcome.last_seq;
    }
    assert!(duplicates <= 60);
    // The next writes — this handle, then another — are neither blocked nor refused.
    let next = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: expected,
            events: vec![checkpoint_event(1, 100, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("this handle writes on");
    let other = db.open(None).await.expect("open another");
    other
        .append(AppendRequest {
            session_id: id,
            expected_seq: next.last_seq,
            events: vec![checkpoint_event(1, 101, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("another handle writes on");
    assert!(store.verify(id).await.expect("v").expect("e").is_valid());
    let summary = store.session(id).await.expect("s").expect("e");
    assert_eq!(summary.checkpoints, 62, "every append landed exactly once");
}

/// An append refused inside its transaction (built on a stale read) whose caller stopped
/// waiting at any point does not leave this handle holding the database: another handle
/// (another process) writes at once, even when this one writes nothing more.
async fn an_abandoned_refused_append_does_not_hold_the_database(db: &dyn TestDb) {
    let a = db.open(None).await.expect("open A");
    let a = a.as_ref();
    let b = db.open(None).await.expect("open B");
    let b = b.as_ref();
    let d = Driver::new();
    let id = d.start(a, json!({})).await;
    let stale = a.session(id).await.expect("s").expect("e");
    let mut last = b
        .append(AppendRequest {
            session_id: id,
            expected_seq: stale.last_seq,
            events: vec![checkpoint_event(1, 0, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("B moves the log on")
        .last_seq;
    for i in 0..40u32 {
        let refused = AppendRequest {
            session_id: id,
            expected_seq: stale.last_seq,
            events: vec![checkpoint_event(1, 1000 + i, None)],
            blobs: vec![format!("refused {i}").into_bytes()],
        };
        let wait = std::time::Duration::from_micros(u64::from(i) * 15);
        if let Ok(outcome) = tokio::time::timeout(wait, a.append_after(&stale, refused)).await {
            assert!(
                matches!(outcome, Err(StoreError::SeqConflict { .. })),
                "{outcome:?}"
            );
        }
        // Give an abandoned batch time to reach the database and fail there.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            b.append(AppendRequest {
                session_id: id,
                expected_seq: last,
                events: vec![checkpoint_event(1, 1 + i, None)],
                blobs: Vec::new(),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("round {i}: B waited on the database A left locked"))
        .expect("B appends");
        last = next.last_seq;
    }
    assert!(b.verify(id).await.expect("v").expect("e").is_valid());
    assert_eq!(b.session(id).await.expect("s").expect("e").checkpoints, 41);
}

/// Many events per append commit together or not at all — including blobs and projections.
async fn append_batch_is_atomic(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let store = store.as_ref();

    // A new session whose 2nd event fails projection leaves nothing behind.
    let fresh = SessionId::from_parts(1_700_000_000_000, 2);
    let blob = b"blob of a failed batch".to_vec();
    let r = store
        .append(AppendRequest {
            session_id: fresh,
            expected_seq: Seq(0),
            events: vec![
                started(Sha256Hash::ZERO),
                entered(2, None, Some("atomic:fresh:node".into())),
            ],
            blobs: vec![blob.clone()],
        })
        .await;
    assert!(matches!(r, Err(StoreError::Projection(_))), "{r:?}");
    assert_eq!(store.session(fresh).await.expect("session"), None);
    assert!(all_events(store, fresh).await.is_empty());
    assert_eq!(store.blob(Sha256Hash::of(&blob)).await.expect("blob"), None);
    assert_eq!(count_events(db).await, 0);
    assert_eq!(count_blobs(db).await, 0);
    assert!(store.nodes(fresh).await.expect("nodes").is_empty());

    // An existing session: a valid first event followed by a non-contiguous node.
    let id = SessionId::from_parts(1_700_000_000_000, 3);
    store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![started(Sha256Hash::ZERO), entered(1, None, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("setup");
    let summary_before = store.session(id).await.expect("session").expect("exists");
    let nodes_before = store.nodes(id).await.expect("nodes");
    let events_before = all_events(store, id).await;
    let blobs_before = count_blobs(db).await;
    let r = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: vec![
                checkpoint_event(1, 1, Some("atomic:cp1".into())),
                entered(7, Some(1), Some("atomic:node7".into())),
            ],
            blobs: vec![blob.clone(), b"another".to_vec()],
        })
        .await;
    match r {
        Err(StoreError::Projection(e)) => {
            assert_eq!(
                e.seq,
                Seq(4),
                "the 2nd event of the batch is the one rejected"
            );
            assert_eq!(e.kind, "node_entered");
        }
        other => panic!("expected a projection error, got {other:?}"),
    }
    let summary_after = store.session(id).await.expect("session").expect("exists");
    assert_eq!(
        summary_after, summary_before,
        "same last_seq, same projection"
    );
    assert_eq!(summary_after.last_seq, Seq(2));
    assert_eq!(
        all_events(store, id).await,
        events_before,
        "no events written"
    );
    assert_eq!(store.nodes(id).await.expect("nodes"), nodes_before);
    assert_eq!(count_blobs(db).await, blobs_before, "no blobs written");
    assert_eq!(store.blob(Sha256Hash::of(&blob)).await.expect("blob"), None);
    // The rolled-back idempotency keys are free again: the valid event can be appended.
    let ok = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: vec![checkpoint_event(1, 1, Some("atomic:cp1".into()))],
            blobs: vec![blob.clone()],
        })
        .await
        .expect("valid append after the failed batch");
    assert!(!ok.duplicate);
    assert_eq!(ok.first_seq, Seq(3));
    assert_eq!(
        store.blob(Sha256Hash::of(&blob)).await.expect("blob"),
        Some(blob)
    );

    // Out-of-order events inside one batch (blocked attempt for a node that does not exist).
    let events_before = all_events(store, id).await;
    let r = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(3),
            events: vec![
                checkpoint_event(1, 5, None),
                checkpoint_event(1, 6, None),
                checkpoint_event(9, 7, None),
            ],
            blobs: Vec::new(),
        })
        .await;
    assert!(matches!(r, Err(StoreError::Projection(_))), "{r:?}");
    assert_eq!(all_events(store, id).await, events_before);
    assert_eq!(
        store
            .session(id)
            .await
            .expect("session")
            .expect("exists")
            .checkpoints,
        1
    );
}

// ---------------------------------------------------------------------------------------
// 2. Idempotency keys
// ---------------------------------------------------------------------------------------

async fn idempotency_key_makes_duplicate_a_noop(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let store = store.as_ref();
    let id = SessionId::from_parts(1_700_000_000_000, 4);
    store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![
                NewEvent {
                    idempotency_key: Some(format!("{id}:start")),
                    ..started(Sha256Hash::ZERO)
                },
                entered(1, None, Some(format!("{id}:node:1"))),
            ],
            blobs: Vec::new(),
        })
        .await
        .expect("start");
    let batch = vec![
        checkpoint_event(1, 1, Some(format!("{id}:cp:1"))),
        checkpoint_event(1, 2, Some(format!("{id}:cp:2"))),
    ];
    let original = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: batch.clone(),
            blobs: vec![b"idem".to_vec()],
        })
        .await
        .expect("original");
    assert!(!original.duplicate);
    assert_eq!((original.first_seq, original.last_seq), (Seq(3), Seq(4)));
    let n_events = count_events(db).await;
    let n_blobs = count_blobs(db).await;
    let log = all_events(store, id).await;

    // Retried with the stale expected seq (the writer never saw its own success).
    let again = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(2),
            events: batch.clone(),
            blobs: vec![b"idem".to_vec(), b"new blob of the retry".to_vec()],
        })
        .await
        .expect("duplicate is not an error");
    assert!(again.duplicate);
    assert_eq!((again.first_seq, again.last_seq), (Seq(3), Seq(4)));
    assert_eq!(again.summary.last_seq, Seq(4));
    // And with the current expected seq: still the same no-op.
    let again = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(4),
            events: batch,
            blobs: Vec::new(),
        })
        .await
        .expect("duplicate is not an error");
    assert!(again.duplicate);
    assert_eq!(again.first_seq, Seq(3));
    // Only the first event's key decides: a batch that starts with the same event is the
    // same batch, whatever follows.
    let again = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(4),
            events: vec![checkpoint_event(1, 1, Some(format!("{id}:cp:1")))],
            blobs: Vec::new(),
        })
        .await
        .expect("duplicate is not an error");
    assert!(again.duplicate);
    assert_eq!(again.first_seq, Seq(3));

    assert_eq!(count_events(db).await, n_events, "event count unchanged");
    assert_eq!(
        count_blobs(db).await,
        n_blobs,
        "a duplicate stores no blobs"
    );
    assert_eq!(all_events(store, id).await, log);
    assert_eq!(
        store
            .session(id)
            .await
            .expect("session")
            .expect("exists")
            .checkpoints,
        2
    );

    // The start of a session is idempotent too.
    let dup_start = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![NewEvent {
                idempotency_key: Some(format!("{id}:start")),
                ..started(Sha256Hash::ZERO)
            }],
            blobs: Vec::new(),
        })
        .await
        .expect("duplicate start");
    assert!(dup_start.duplicate);
    assert_eq!(dup_start.first_seq, Seq(1));
    assert_eq!(count_events(db).await, n_events);
}

// ---------------------------------------------------------------------------------------
// 3. Append-only in the database
// ---------------------------------------------------------------------------------------

async fn append_only_is_enforced_by_the_database(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let driver = Driver::new();
    let id = driver.start(store.as_ref(), json!({})).await;
    driver.submit(store.as_ref(), id, "done", json!({})).await;
    let before = all_events(store.as_ref(), id).await;
    assert!(before.len() >= 3);

    for sql in [
        "UPDATE events SET payload = '{}' WHERE seq = 1".to_owned(),
        "UPDATE events SET kind = 'session_completed'".to_owned(),
        format!("DELETE FROM events WHERE session_id = '{id}' AND seq = 2"),
        "DELETE FROM events".to_owned(),
    ] {
        let err = db
            .execute(&sql)
            .await
            .expect_err(&format!("`{sql}` must be rejected"));
        assert!(
            err.contains("worktrain events are append-only"),
            "`{sql}` failed, but not by the append-only trigger: {err}"
        );
        let verb = if sql.starts_with("UPDATE") {
            "UPDATE rejected"
        } else {
            "DELETE rejected"
        };
        assert!(err.contains(verb), "{err}");
    }
    assert_eq!(all_events(store.as_ref(), id).await, before);
    let report = store.verify(id).await.expect("verify").expect("exists");
    assert!(report.is_valid());
}

// ---------------------------------------------------------------------------------------
// 4. Hash chain
// ---------------------------------------------------------------------------------------

async fn hash_chain_detects_tampering(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let driver = Driver::new();
    let id = driver.start(s, json!({"size": "small"})).await;
    driver.submit(s, id, "planned", json!({})).await;
    driver.checkpoint(s, id, "half way").await;
    driver.submit(s, id, "built", json!({})).await;
    let other = driver.start(s, json!({})).await;

    let events = all_events(s, id).await;
    let n = events.len() as u64;
    assert!(n >= 6, "{n} events");
    // Chain links: prev_hash of each event is the hash of the previous one.
    assert_eq!(events[0].prev_hash, Sha256Hash::ZERO);
    for w in events.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    let good = s.verify(id).await.expect("verify").expect("exists");
    assert!(good.is_valid(), "{good:?}");
    assert_eq!(good.events, n);
    assert_eq!(good.head, events.last().expect("last").hash);
    assert_eq!(
        good.head,
        s.session(id).await.expect("s").expect("e").last_hash
    );
    assert_eq!(
        s.verify(SessionId::from_parts(1, 1)).await.expect("verify"),
        None,
        "unknown session"
    );

    // Tamper with the payload of one event in the middle (notes of the step_completed).
    let victim = events
        .iter()
        .find(|e| matches!(e.body, EventBody::CheckpointRecorded { .. }))
        .expect("a checkpoint event")
        .seq;
    db.disable_append_only().await;
    let changed = db
        .execute(&format!(
            "UPDATE events SET payload = replace(payload, 'half way', 'all done') \
             WHERE session_id = '{id}' AND seq = {victim}"
        ))
        .await
        .expect("tamper");
    assert_eq!(changed, 1);
    let tampered = all_events(s, id).await;
    assert!(matches!(
        &tampered[(victim.0 - 1) as usize].body,
        EventBody::CheckpointRecorded { notes, .. } if notes == "all done"
    ));

    let bad = s.verify(id).await.expect("verify").expect("exists");
    let broken = bad.first_broken.clone().expect("tampering is detected");
    assert_eq!(
        broken.seq, victim,
        "first broken link is exactly the tampered event: {bad:?}"
    );
    assert_eq!(bad.events, victim.0 - 1, "events before it are fine");
    assert_eq!(bad.head, events[(victim.0 - 2) as usize].hash);
    assert!(!bad.is_valid());
    // Other sessions are unaffected.
    assert!(
        s.verify(other)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );

    // Tampering with the very first event is reported at seq 1.
    db.execute(&format!(
        "UPDATE events SET payload = replace(payload, 'goal of', 'GOAL OF') \
         WHERE session_id = '{other}' AND seq = 1"
    ))
    .await
    .expect("tamper");
    let bad = s.verify(other).await.expect("verify").expect("exists");
    assert_eq!(bad.first_broken.expect("broken").seq, Seq(1));
}

// ---------------------------------------------------------------------------------------
// 5. Projections rebuild identically
// ---------------------------------------------------------------------------------------

async fn rebuilt_projections_equal_incremental_ones(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();

    // 1: completes, with a blocked attempt, a skip and a checkpoint.
    let a = d.start(s, json!({"size": "small"})).await;
    let blocked = d.submit(s, a, "", json!({})).await;
    assert_eq!(blocked.status, SessionStatus::Blocked);
    assert_eq!(blocked.blocked_attempts, 1);
    d.submit(s, a, "planned", json!({"x": 1})).await;
    d.checkpoint(s, a, "building").await;
    d.submit(s, a, "built", json!({"x": null})).await;
    let done = d.submit(s, a, "", json!({})).await;
    assert_eq!(done.status, SessionStatus::Complete);
    assert_eq!(done.steps_skipped, 1);

    // 2: rewound mid-way (abandoning the blocked current node), then completed.
    let b = d.start(s, json!({"size": "large"})).await;
    d.submit(s, b, "planned", json!({})).await;
    d.submit(s, b, "dove", json!({})).await;
    d.submit(s, b, "", json!({})).await; // blocked on build
    d.rewind(s, b, "deep-dive").await;
    d.submit(s, b, "dove again", json!({"size": "small"})).await;
    d.submit(s, b, "built", json!({})).await;
    d.submit(s, b, "reviewed", json!({})).await;

    // 3: completed, then rewound (reopened), left in progress.
    let c = d.start(s, json!({})).await;
    d.submit(s, c, "p", json!({})).await;
    d.submit(s, c, "b", json!({})).await;
    d.submit(s, c, "r", json!({})).await;
    d.rewind(s, c, "build").await;
    d.checkpoint(s, c, "again").await;

    // 4: only started.
    let _ = d.start(s, json!({"size": "large"})).await;

    let nodes_b = s.nodes(b).await.expect("nodes");
    assert!(
        nodes_b.iter().any(|n| n.status == NodeStatus::Abandoned),
        "{nodes_b:?}"
    );
    let summary_c = s.session(c).await.expect("s").expect("e");
    assert_eq!(summary_c.status, SessionStatus::InProgress);
    assert_eq!(summary_c.rewinds, 1);

    let before = s.dump_projections().await.expect("dump");
    assert_eq!(before.sessions.len(), 4);
    assert!(!before.nodes.is_empty() && !before.attempts.is_empty());
    let report = s.rebuild_projections().await.expect("rebuild");
    assert_eq!(report.sessions, 4);
    assert_eq!(report.events, count_events(db).await as u64);
    let after = s.dump_projections().await.expect("dump");
    assert_eq!(
        before, after,
        "rebuilt projections differ from the incremental ones"
    );

    // Rebuilding really recomputes: wipe projections behind the store's back, rebuild.
    db.execute("DELETE FROM session_attempts")
        .await
        .expect("wipe");
    db.execute("DELETE FROM session_nodes").await.expect("wipe");
    db.execute("UPDATE sessions SET status = 'bogus', last_seq = 0")
        .await
        .expect("scramble");
    assert_ne!(s.dump_projections().await.expect("dump"), before);
    s.rebuild_projections().await.expect("rebuild");
    assert_eq!(s.dump_projections().await.expect("dump"), before);
    for id in [a, b, c] {
        assert!(
            s.verify(id)
                .await
                .expect("verify")
                .expect("exists")
                .is_valid()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. Blobs
// ---------------------------------------------------------------------------------------

async fn blobs_are_content_addressed_and_limited(db: &dyn TestDb) {
    let store = db.open(Some(1024)).await.expect("open");
    let s = store.as_ref();
    let bytes = b"some artifact".to_vec();
    let h1 = s.put_blob(&bytes).await.expect("put");
    let h2 = s.put_blob(&bytes).await.expect("put again");
    assert_eq!(h1, h2);
    assert_eq!(
        h1,
        Sha256Hash::of(&bytes),
        "the address is the sha256 of the content"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM blobs WHERE hash = '{}'",
            h1.to_hex()
        ))
        .await,
        1,
        "stored once"
    );
    assert_eq!(count_blobs(db).await, 1);
    assert_eq!(s.blob(h1).await.expect("get"), Some(bytes.clone()));
    let other = s.put_blob(b"other").await.expect("put");
    assert_ne!(other, h1);
    assert_eq!(s.blob(Sha256Hash::of(b"absent")).await.expect("get"), None);
    // Empty blob and a blob exactly at the limit are fine.
    s.put_blob(b"").await.expect("empty blob");
    let at_limit = vec![b'x'; 1024];
    s.put_blob(&at_limit).await.expect("at the limit");
    let n = count_blobs(db).await;

    // One byte over the limit is rejected, through put_blob and through append.
    let over = vec![b'y'; 1025];
    match s.put_blob(&over).await {
        Err(StoreError::BlobTooLarge { size, limit }) => assert_eq!((size, limit), (1025, 1024)),
        other => panic!("expected BlobTooLarge, got {other:?}"),
    }
    let id = SessionId::from_parts(1_700_000_000_000, 6);
    let r = s
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![started(Sha256Hash::ZERO)],
            blobs: vec![b"small".to_vec(), over.clone()],
        })
        .await;
    assert!(
        matches!(
            r,
            Err(StoreError::BlobTooLarge {
                size: 1025,
                limit: 1024
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        s.session(id).await.expect("session"),
        None,
        "nothing appended"
    );
    assert_eq!(count_blobs(db).await, n);
    assert_eq!(s.blob(Sha256Hash::of(&over)).await.expect("get"), None);

    // Blobs in an append are deduplicated with put_blob ones.
    s.append(AppendRequest {
        session_id: id,
        expected_seq: Seq(0),
        events: vec![started(Sha256Hash::ZERO)],
        blobs: vec![bytes.clone(), bytes.clone(), b"fresh".to_vec()],
    })
    .await
    .expect("append with blobs");
    assert_eq!(count_blobs(db).await, n + 1);
    assert_eq!(
        s.blob(Sha256Hash::of(b"fresh")).await.expect("get"),
        Some(b"fresh".to_vec())
    );
}

// ---------------------------------------------------------------------------------------
// 7. Schema version
// ---------------------------------------------------------------------------------------

async fn schema_version_recorded_and_reopen_works(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let version = db.supported_schema_version();
    assert!(version >= 1);
    assert_eq!(
        store.schema_version().await.expect("version"),
        version,
        "a fresh database is migrated to the version this build supports"
    );
    let d = Driver::new();
    let id = d.start(store.as_ref(), json!({})).await;
    d.submit(store.as_ref(), id, "n", json!({})).await;
    let dump = store.dump_projections().await.expect("dump");
    let events = all_events(store.as_ref(), id).await;
    drop(store);

    // Reopen: migrations are not re-applied, data is intact, writes continue.
    let again = db.open(None).await.expect("reopen");
    assert_eq!(again.schema_version().await.expect("version"), version);
    assert_eq!(again.dump_projections().await.expect("dump"), dump);
    assert_eq!(all_events(again.as_ref(), id).await, events);
    d.submit(again.as_ref(), id, "more", json!({})).await;
    assert!(
        again
            .verify(id)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );
    let third = db.open(None).await.expect("open a third time");
    assert_eq!(third.schema_version().await.expect("version"), version);
}

async fn newer_schema_is_refused(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let d = Driver::new();
    d.start(store.as_ref(), json!({})).await;
    drop(store);
    db.fake_schema_version(99).await;
    match db.open(None).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, db.supported_schema_version());
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("a newer schema must not open"),
    }
    let msg = StoreError::SchemaTooNew {
        found: 99,
        supported: 1,
    }
    .to_string();
    assert!(msg.contains("upgrade worktrain"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// 8. Paging
// ---------------------------------------------------------------------------------------

async fn events_and_events_since_page(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let a = d.start(s, json!({"size": "large"})).await;
    let b = d.start(s, json!({})).await;
    // Interleave the two sessions so global positions alternate.
    for i in 0..3 {
        d.checkpoint(s, a, &format!("a{i}")).await;
        d.checkpoint(s, b, &format!("b{i}")).await;
    }
    d.submit(s, a, "planned", json!({})).await;
    d.submit(s, b, "", json!({})).await;

    let full_a = all_events(s, a).await;
    let full_b = all_events(s, b).await;
    for (id, full) in [(a, &full_a), (b, &full_b)] {
        let seqs: Vec<u64> = full.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs, (1..=full.len() as u64).collect::<Vec<_>>());
        assert!(full.iter().all(|e| e.session_id == id));
        for limit in [1u32, 2, 3, 1000] {
            let mut after = Seq(0);
            let mut paged = Vec::new();
            loop {
                let page = s.events(id, after, limit).await.expect("page");
                assert!(page.len() <= limit as usize);
                let Some(last) = page.last() else { break };
                after = last.seq;
                paged.extend(page);
            }
            assert_eq!(&paged, full, "paging by {limit}");
        }
        let tail = s.events(id, Seq(2), 2).await.expect("page");
        assert_eq!(tail.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![3, 4]);
        assert!(
            s.events(id, Seq(full.len() as u64), 10)
                .await
                .expect("page")
                .is_empty()
        );
    }
    assert!(
        s.events(SessionId::from_parts(5, 5), Seq(0), 10)
            .await
            .expect("unknown")
            .is_empty()
    );

    // Global tailing.
    let total = full_a.len() + full_b.len();
    let everything = s.events_since(0, 10_000).await.expect("all");
    assert_eq!(everything.len(), total);
    assert!(
        everything.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions"
    );
    let mut mixed = HashMap::<SessionId, usize>::new();
    for e in &everything {
        *mixed.entry(e.session_id).or_default() += 1;
    }
    assert_eq!(mixed.get(&a), Some(&full_a.len()));
    assert_eq!(mixed.get(&b), Some(&full_b.len()));
    for limit in [1u32, 4, 5] {
        let mut after = 0;
        let mut paged = Vec::new();
        loop {
            let page = s.events_since(after, limit).await.expect("page");
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(page);
        }
        assert_eq!(paged, everything, "tailing by {limit}");
    }
    let per_session: Vec<StoredEvent> = everything
        .iter()
        .filter(|e| e.session_id == a)
        .cloned()
        .collect();
    assert_eq!(per_session, full_a, "events() and events_since() agree");
    let last = everything.last().expect("last").position;
    assert!(s.events_since(last, 10).await.expect("tail").is_empty());

    // A new append shows up after the last position seen.
    d.checkpoint(s, b, "late").await;
    let new = s.events_since(last, 10).await.expect("tail");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].session_id, b);
    assert!(new[0].position > last);
}

async fn sessions_are_listed_filtered_and_paged(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = d.start(s, json!({})).await;
        if i % 2 == 0 {
            d.submit(s, id, "", json!({})).await; // blocked
        }
        ids.push(id);
        // Distinct update times, so "most recently updated first" is well defined.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let all = s.sessions(&SessionFilter::default()).await.expect("list");
    assert_eq!(all.len(), 5);
    let listed: Vec<SessionId> = all.iter().map(|x| x.session_id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first, "most recently updated first");
    for summary in &all {
        assert_eq!(
            Some(summary),
            s.session(summary.session_id)
                .await
                .expect("session")
                .as_ref()
        );
    }
    let blocked = s
        .sessions(&SessionFilter {
            status: Some(SessionStatus::Blocked),
            ..SessionFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(blocked.len(), 3);
    assert!(blocked.iter().all(|x| x.status == SessionStatus::Blocked));
    let by_workflow = s
        .sessions(&SessionFilter {
            workflow: Some("conformance".parse().expect("id")),
            ..SessionFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(by_workflow.len(), 5);
    let none = s
        .sessions(&SessionFilter {
            workflow: Some("other".parse().expect("id")),
            ..SessionFilter::default()
        })
        .await
        .expect("list");
    assert!(none.is_empty());
    let mut paged = Vec::new();
    for page in 0..3 {
        paged.extend(
            s.sessions(&SessionFilter {
                limit: Some(2),
                offset: Some(page * 2),
                ..SessionFilter::default()
            })
            .await
            .expect("page")
            .into_iter()
            .map(|x| x.session_id),
        );
    }
    assert_eq!(paged, newest_first);
}

// ---------------------------------------------------------------------------------------
// 9. Runs: queue order, claims, leases, dispatch keys
// ---------------------------------------------------------------------------------------

fn run_queued(priority: i32, dispatch_key: Option<&str>) -> NewEvent {
    NewEvent {
        body: EventBody::RunQueued {
            agent: "default".into(),
            trigger: Trigger::new(TriggerKind::Api, Some("t".into())),
            limits: RunLimits::default(),
            priority,
            readonly: false,
            base: None,
            dispatch_key: dispatch_key.map(str::to_owned),
        },
        idempotency_key: None,
    }
}

fn body(b: EventBody) -> NewEvent {
    NewEvent {
        body: b,
        idempotency_key: None,
    }
}

/// Append events decided from the current summary (retrying lost races).
/// Record the end of the session's current run (`run_finished`, no failure reason).
async fn finish_run(store: &dyn EventStore, id: SessionId, end: RunEnd) -> SessionSummary {
    transition(store, id, |x| {
        vec![body(EventBody::RunFinished {
            run: x.run.as_ref().expect("run").run,
            end,
            reason: None,
            detail: None,
        })]
    })
    .await
}

async fn transition(
    store: &dyn EventStore,
    id: SessionId,
    decide: impl Fn(&SessionSummary) -> Vec<NewEvent>,
) -> SessionSummary {
    for _ in 0..50 {
        let s = store.session(id).await.expect("session").expect("exists");
        match store
            .append(AppendRequest {
                session_id: id,
                expected_seq: s.last_seq,
                events: decide(&s),
                blobs: Vec::new(),
            })
            .await
        {
            Ok(o) => return o.summary,
            Err(StoreError::SeqConflict { .. }) => continue,
            Err(e) => panic!("transition: {e}"),
        }
    }
    panic!("transition kept losing races");
}

/// Start a session and queue its run.
async fn dispatch(
    d: &Driver,
    store: &dyn EventStore,
    priority: i32,
    key: Option<&str>,
) -> Result<SessionId, StoreError> {
    let id = d.start(store, json!({})).await;
    let s = store.session(id).await.expect("session").expect("exists");
    store
        .append(AppendRequest {
            session_id: id,
            expected_seq: s.last_seq,
            events: vec![run_queued(priority, key)],
            blobs: Vec::new(),
        })
        .await
        .map(|_| id)
}

fn queue_ids(q: &[worktrain_core::projection::QueueRow]) -> Vec<SessionId> {
    q.iter().map(|r| r.session_id).collect()
}

/// Claim order: higher priority first, then first queued first — also for runs queued in
/// the same millisecond, also after a rebuild; a requeued run goes to the back.
async fn session_counts_match_the_summaries(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    assert!(s.session_counts().await.expect("counts").is_empty());
    let d = Driver::new();
    for _ in 0..3 {
        d.start(s, json!({})).await;
    }
    let running = dispatch(&d, s, 0, None).await.expect("dispatch");
    dispatch(&d, s, 0, None).await.expect("dispatch");
    transition(s, running, |x| {
        vec![body(EventBody::RunStarted {
            run: x.run.as_ref().expect("run").run + 1,
            worker: "w1".into(),
            worktree: None,
            branch: None,
        })]
    })
    .await;
    let mut counts = s.session_counts().await.expect("counts");
    counts.sort_by_key(|(state, _)| state.map(|r| r.as_str()));
    // The same as a fold over the summaries.
    let mut folded: HashMap<Option<RunState>, u64> = HashMap::new();
    for x in s
        .sessions(&SessionFilter {
            limit: Some(1000),
            ..SessionFilter::default()
        })
        .await
        .expect("list")
    {
        *folded.entry(x.run.as_ref().map(|r| r.state)).or_default() += 1;
    }
    let mut expected: Vec<(Option<RunState>, u64)> = folded.into_iter().collect();
    expected.sort_by_key(|(state, _)| state.map(|r| r.as_str()));
    assert_eq!(counts, expected);
    assert_eq!(
        counts,
        vec![
            (None, 3),
            (Some(RunState::Queued), 1),
            (Some(RunState::Running), 1)
        ]
    );
}

async fn queue_is_priority_then_fifo(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let mut normal = Vec::new();
    for _ in 0..12 {
        normal.push(dispatch(&d, s, 0, None).await.expect("dispatch"));
    }
    let urgent = dispatch(&d, s, 5, None).await.expect("dispatch");
    let low = dispatch(&d, s, -1, None).await.expect("dispatch");
    let mut expected = vec![urgent];
    expected.extend(&normal);
    expected.push(low);
    assert_eq!(queue_ids(&s.queue().await.expect("queue")), expected);

    // Starting a run keeps its place; interrupting and requeueing sends it to the back
    // of its priority.
    let first = normal[0];
    transition(s, first, |x| {
        vec![body(EventBody::RunStarted {
            run: x.run.as_ref().expect("run").run + 1,
            worker: "w1".into(),
            worktree: None,
            branch: None,
        })]
    })
    .await;
    assert_eq!(queue_ids(&s.queue().await.expect("queue")), expected);
    let row = s.queue().await.expect("queue")[1].clone();
    assert_eq!(
        (row.state, row.worker.as_deref()),
        (RunState::Running, Some("w1"))
    );
    transition(s, first, |x| {
        vec![
            body(EventBody::RunInterrupted {
                run: x.run.as_ref().expect("run").run,
                reason: InterruptReason::LeaseExpired,
            }),
            body(EventBody::RunRequeued {
                reason: RequeueReason::Resume,
            }),
        ]
    })
    .await;
    let mut requeued = vec![urgent];
    requeued.extend(&normal[1..]);
    requeued.push(first);
    requeued.push(low);
    assert_eq!(queue_ids(&s.queue().await.expect("queue")), requeued);

    // Listing queued sessions uses the same order.
    let listed: Vec<SessionId> = s
        .sessions(&SessionFilter {
            run: Some(RunFilter::State(RunState::Queued)),
            limit: Some(100),
            ..SessionFilter::default()
        })
        .await
        .expect("list")
        .iter()
        .map(|x| x.session_id)
        .collect();
    assert_eq!(listed, requeued);

    // A finished run leaves the queue.
    finish_run(s, low, RunEnd::Cancelled).await;
    requeued.pop();
    assert_eq!(queue_ids(&s.queue().await.expect("queue")), requeued);

    // The order is a projection: a rebuild reproduces it exactly.
    let before = s.dump_projections().await.expect("dump");
    s.rebuild_projections().await.expect("rebuild");
    assert_eq!(s.dump_projections().await.expect("dump"), before);
    assert_eq!(queue_ids(&s.queue().await.expect("queue")), requeued);
}

/// Many workers claim the same queued run at once: exactly one `run_started` is written;
/// every other claim sees a conflict and, re-reading, finds the run taken.
async fn claims_race_exactly_one_winner(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let d = Driver::new();
    for _round in 0..3 {
        let id = dispatch(&d, store.as_ref(), 0, None)
            .await
            .expect("dispatch");
        let seen = store.session(id).await.expect("s").expect("e").last_seq;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .append(AppendRequest {
                        session_id: id,
                        expected_seq: seen,
                        events: vec![body(EventBody::RunStarted {
                            run: 1,
                            worker: format!("w{w}"),
                            worktree: None,
                            branch: None,
                        })],
                        blobs: Vec::new(),
                    })
                    .await
            });
        }
        let mut won = 0;
        let mut lost = 0;
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(o) => {
                    assert!(!o.duplicate);
                    won += 1;
                }
                Err(StoreError::SeqConflict { actual, .. }) => {
                    assert_eq!(actual, Seq(seen.0 + 1));
                    lost += 1;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!((won, lost), (1, 7));
        let started = all_events(store.as_ref(), id)
            .await
            .iter()
            .filter(|e| matches!(e.body, EventBody::RunStarted { .. }))
            .count();
        assert_eq!(started, 1, "exactly one claim in the log");
        assert!(store.verify(id).await.expect("v").expect("e").is_valid());
    }
}

fn started_by(worker: &str) -> impl Fn(&SessionSummary) -> Vec<EventBody> + Send + Sync + '_ {
    move |s: &SessionSummary| match &s.run {
        Some(r) if r.state == RunState::Queued && r.cancel_requested => {
            vec![EventBody::RunFinished {
                run: r.run,
                end: RunEnd::Cancelled,
                reason: None,
                detail: None,
            }]
        }
        Some(r) if r.state == RunState::Queued => vec![EventBody::RunStarted {
            run: r.run + 1,
            worker: worker.to_owned(),
            worktree: None,
            branch: None,
        }],
        _ => Vec::new(),
    }
}

fn requeue(s: &SessionSummary) -> Vec<EventBody> {
    match &s.run {
        Some(r) if r.state == RunState::Running => vec![
            EventBody::RunInterrupted {
                run: r.run,
                reason: InterruptReason::LeaseExpired,
            },
            EventBody::RunRequeued {
                reason: RequeueReason::Resume,
            },
        ],
        Some(r) if r.state == RunState::Interrupted => vec![EventBody::RunRequeued {
            reason: RequeueReason::Resume,
        }],
        _ => Vec::new(),
    }
}

fn caps(total: usize) -> worktrain_store::RunCaps {
    worktrain_store::RunCaps {
        total,
        ..worktrain_store::RunCaps::default()
    }
}

async fn claim(
    store: &dyn EventStore,
    worker: &str,
    ttl: std::time::Duration,
    caps: &worktrain_store::RunCaps,
) -> Option<SessionSummary> {
    let start = started_by(worker);
    store
        .claim_run(worktrain_store::Claim {
            worker,
            lease_ttl: ttl,
            caps,
            start: &start,
        })
        .await
        .expect("claim")
}

/// Leases: created by a claim, renewed only by their holder (compare-and-set), recovered
/// only once expired, released only by the holder.
async fn leases_are_compare_and_set_and_expire(db: &dyn TestDb) {
    use std::time::Duration;
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let id = dispatch(&d, s, 0, None).await.expect("dispatch");
    let long = Duration::from_secs(60);
    // Renewing a lease nobody took creates nothing.
    assert_eq!(
        s.renew_lease(id, "a", long).await.expect("renew"),
        LeaseRenewal::Lost { holder: None }
    );
    assert!(s.leases().await.expect("leases").is_empty());
    let claimed = claim(s, "a", long, &caps(10)).await.expect("a claims");
    assert_eq!(claimed.session_id, id);
    let lease = s.leases().await.expect("leases");
    assert_eq!((lease.len(), lease[0].worker.as_str()), (1, "a"));
    let a1 = lease[0].expires_at_ms;
    // Another worker cannot renew it, and learns who holds it.
    assert_eq!(
        s.renew_lease(id, "b", long).await.expect("renew"),
        LeaseRenewal::Lost {
            holder: Some("a".into())
        }
    );
    assert!(
        !s.release_lease(id, "b").await.expect("release"),
        "not b's lease"
    );
    // The holder renews (its expiry moves forward).
    tokio::time::sleep(Duration::from_millis(5)).await;
    match s.renew_lease(id, "a", long).await.expect("renew") {
        LeaseRenewal::Held { expires_at_ms } => assert!(expires_at_ms > a1),
        other => panic!("{other:?}"),
    }
    // A live lease is not recovered.
    let none = s
        .recover_runs(worktrain_store::Recovery {
            dead_workers: None,
            decide: &requeue,
        })
        .await
        .expect("recover");
    assert!(none.is_empty(), "{none:?}");
    // Expiry: a short lease lapses; recovery requeues the run and drops the lease, and
    // the old holder finds it lost.
    assert!(matches!(
        s.renew_lease(id, "a", Duration::from_millis(150))
            .await
            .expect("renew"),
        LeaseRenewal::Held { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recovered = s
        .recover_runs(worktrain_store::Recovery {
            dead_workers: None,
            decide: &requeue,
        })
        .await
        .expect("recover");
    assert_eq!(recovered.len(), 1);
    assert_eq!(
        recovered[0].run.as_ref().expect("run").state,
        RunState::Queued
    );
    assert_eq!(
        s.renew_lease(id, "a", long).await.expect("renew"),
        LeaseRenewal::Lost { holder: None }
    );
    // b claims it again; a's late release changes nothing.
    let again = claim(s, "b", long, &caps(10)).await.expect("b claims");
    assert_eq!(again.run.as_ref().expect("run").run, 2);
    assert!(!s.release_lease(id, "a").await.expect("release"));
    assert_eq!(s.leases().await.expect("leases")[0].worker, "b");
    // A worker known dead loses its live lease to recovery.
    let by_dead = s
        .recover_runs(worktrain_store::Recovery {
            dead_workers: Some("b"),
            decide: &requeue,
        })
        .await
        .expect("recover");
    assert_eq!(by_dead.len(), 1);
    assert!(s.leases().await.expect("leases").is_empty());
    // An interrupted run (a graceful stop) is recovered whatever its lease.
    let c = claim(s, "c", long, &caps(10)).await.expect("c claims");
    transition(s, c.session_id, |x| {
        vec![body(EventBody::RunInterrupted {
            run: x.run.as_ref().expect("run").run,
            reason: InterruptReason::Shutdown,
        })]
    })
    .await;
    assert!(s.release_lease(id, "c").await.expect("release"));
    let resumed = s
        .recover_runs(worktrain_store::Recovery {
            dead_workers: None,
            decide: &requeue,
        })
        .await
        .expect("recover");
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        resumed[0].run.as_ref().expect("run").state,
        RunState::Queued
    );
    // The append that records a run's end drops its lease with it (an interruption, above,
    // keeps it for its holder to release).
    let d_run = claim(s, "d", long, &caps(10)).await.expect("d claims");
    assert_eq!(s.leases().await.expect("leases")[0].worker, "d");
    finish_run(s, d_run.session_id, RunEnd::Completed).await;
    assert!(s.leases().await.expect("leases").is_empty());
    assert_eq!(
        s.renew_lease(id, "d", long).await.expect("renew"),
        LeaseRenewal::Lost { holder: None }
    );
    assert!(s.verify(id).await.expect("v").expect("e").is_valid());
}

/// Several workers (each its own connection pool, as separate daemons) claiming at once:
/// every queued run starts exactly once, in queue order, and the caps — total, per
/// workspace, per trigger — hold across all of them at every moment.
async fn claims_respect_caps_across_workers(db: &dyn TestDb) {
    use std::time::Duration;
    let store = db.open(None).await.expect("open");
    let d = Driver::new();
    let mut all = Vec::new();
    for _ in 0..24 {
        all.push(
            dispatch(&d, store.as_ref(), 0, None)
                .await
                .expect("dispatch"),
        );
    }
    let caps = Arc::new(worktrain_store::RunCaps {
        total: 5,
        per_workspace: 0,
        per_trigger: [("t".to_owned(), 5)].into_iter().collect(),
    });
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..3 {
        let handle = db.open(None).await.expect("another pool");
        let caps = caps.clone();
        workers.spawn(async move {
            let me = format!("w{w}");
            let mut mine = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                match claim(handle.as_ref(), &me, Duration::from_secs(60), &caps).await {
                    Some(s) => {
                        let running = handle
                            .queue()
                            .await
                            .expect("queue")
                            .iter()
                            .filter(|r| r.state == RunState::Running)
                            .count();
                        assert!(running <= 5, "cap exceeded: {running} running");
                        mine.push(s.session_id);
                        // Finish it a little later, freeing the slot.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        finish_run(handle.as_ref(), s.session_id, RunEnd::Completed).await;
                        // The end took the lease with it.
                        assert!(
                            !handle
                                .release_lease(s.session_id, &me)
                                .await
                                .expect("release")
                        );
                    }
                    None => {
                        if handle.queue().await.expect("queue").is_empty() {
                            return mine;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            panic!("the queue never drained");
        });
    }
    let mut started = Vec::new();
    while let Some(r) = workers.join_next().await {
        started.extend(r.expect("worker"));
    }
    started.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(started, expected, "every run started exactly once");
    for id in &all {
        let starts = all_events(store.as_ref(), *id)
            .await
            .iter()
            .filter(|e| matches!(e.body, EventBody::RunStarted { .. }))
            .count();
        assert_eq!(starts, 1, "{id}");
    }
    // From the log alone: never more than 5 running at once.
    let mut running = 0i32;
    let mut peak = 0;
    for e in store.events_since(0, 100_000).await.expect("all") {
        match e.body {
            EventBody::RunStarted { .. } => running += 1,
            EventBody::RunFinished { .. } => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert!(peak <= 5, "peak {peak}");
    assert!(peak >= 2, "workers ran in parallel (peak {peak})");

    // Per-workspace and per-trigger caps, and a run cancelled while queued settles.
    let ws_caps = worktrain_store::RunCaps {
        total: 10,
        per_workspace: 1,
        per_trigger: [("t".to_owned(), 1)].into_iter().collect(),
    };
    let x = dispatch(&d, store.as_ref(), 0, None)
        .await
        .expect("dispatch");
    let y = dispatch(&d, store.as_ref(), 0, None)
        .await
        .expect("dispatch");
    transition(store.as_ref(), x, |_| {
        vec![body(EventBody::CancelRequested { note: None })]
    })
    .await;
    let settled = claim(store.as_ref(), "w", Duration::from_secs(60), &ws_caps)
        .await
        .expect("the cancelled run settles");
    assert_eq!(settled.session_id, x);
    assert_eq!(
        settled.run.as_ref().expect("run").state,
        RunState::Cancelled
    );
    let first = claim(store.as_ref(), "w", Duration::from_secs(60), &ws_caps)
        .await
        .expect("claims y");
    assert_eq!(first.session_id, y);
    let z = dispatch(&d, store.as_ref(), 0, None)
        .await
        .expect("dispatch");
    assert_eq!(
        claim(store.as_ref(), "w", Duration::from_secs(60), &ws_caps).await,
        None,
        "trigger `t` is at its cap"
    );
    let mut no_trigger_cap = ws_caps.clone();
    no_trigger_cap.per_trigger.clear();
    assert_eq!(
        claim(
            store.as_ref(),
            "w",
            Duration::from_secs(60),
            &no_trigger_cap
        )
        .await
        .map(|s| s.session_id),
        Some(z),
        "sessions without a workspace are not capped per workspace"
    );
}

/// One leader per role: PostgreSQL hands the role to one store handle at a time and to
/// another once the leader lets go; SQLite's single daemon always leads.
async fn one_leader_at_a_time(db: &dyn TestDb) {
    let a = db.open(None).await.expect("open");
    let b = db.open(None).await.expect("open");
    let mut lead_a = a
        .try_lead("scheduler")
        .await
        .expect("lead")
        .expect("a leads");
    assert!(lead_a.still_held().await);
    let b_try = b.try_lead("scheduler").await.expect("lead");
    if a.backend() == "sqlite" {
        assert!(b_try.is_some(), "an embedded store's daemon always leads");
        return;
    }
    assert!(b_try.is_none(), "the role is taken");
    assert!(
        b.try_lead("another-role").await.expect("lead").is_some(),
        "roles are independent"
    );
    drop(lead_a);
    // The lock goes with its connection; it is free as soon as that is closed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut lead_b = loop {
        if let Some(l) = b.try_lead("scheduler").await.expect("lead") {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leadership never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(lead_b.still_held().await);
    assert!(a.try_lead("scheduler").await.expect("lead").is_none());
}

/// A dispatch key belongs to one session: a second dispatch with it writes nothing and
/// names the first; concurrent dispatches with one key create one session.
async fn dispatch_keys_are_unique(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let first = dispatch(&d, s, 0, Some("gh:delivery:42"))
        .await
        .expect("dispatch");
    assert_eq!(
        s.session_by_dispatch_key("gh:delivery:42")
            .await
            .expect("lookup"),
        Some(first)
    );
    assert_eq!(
        s.session_by_dispatch_key("gh:delivery:43")
            .await
            .expect("lookup"),
        None
    );
    let second = d.start(s, json!({})).await;
    let before = all_events(s, second).await;
    let r = s
        .append(AppendRequest {
            session_id: second,
            expected_seq: Seq(before.len() as u64),
            events: vec![run_queued(0, Some("gh:delivery:42"))],
            blobs: vec![b"not stored".to_vec()],
        })
        .await;
    match r {
        Err(StoreError::DispatchKeyTaken { key, session }) => {
            assert_eq!(key, "gh:delivery:42");
            assert_eq!(session, first);
        }
        other => panic!("expected DispatchKeyTaken, got {other:?}"),
    }
    assert_eq!(all_events(s, second).await, before, "nothing written");
    assert!(
        s.session(second)
            .await
            .expect("s")
            .expect("e")
            .run
            .is_none()
    );
    assert_eq!(
        s.blob(Sha256Hash::of(b"not stored")).await.expect("blob"),
        None
    );

    // Concurrent first dispatches with one key: one session gets it.
    let mut candidates = Vec::new();
    for _ in 0..6 {
        candidates.push(d.start(s, json!({})).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in candidates.clone() {
        let store = store.clone();
        tasks.spawn(async move {
            let last = store.session(id).await.expect("s").expect("e").last_seq;
            store
                .append(AppendRequest {
                    session_id: id,
                    expected_seq: last,
                    events: vec![run_queued(0, Some("cron:nightly:2026-03-01"))],
                    blobs: Vec::new(),
                })
                .await
                .map(|_| id)
        });
    }
    let mut winners = Vec::new();
    let mut named = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(id) => winners.push(id),
            Err(StoreError::DispatchKeyTaken { session, .. }) => named.push(session),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(
        named.iter().all(|n| *n == winners[0]),
        "losers name the winner"
    );
    let queue = queue_ids(&s.queue().await.expect("queue"));
    assert_eq!(
        candidates.iter().filter(|id| queue.contains(id)).count(),
        1,
        "one run queued"
    );
    assert_eq!(
        s.session_by_dispatch_key("cron:nightly:2026-03-01")
            .await
            .expect("lookup"),
        Some(winners[0])
    );
    // Keys are rebuilt from the events.
    let dump = s.dump_projections().await.expect("dump");
    assert_eq!(dump.dispatch_keys.len(), 2);
    s.rebuild_projections().await.expect("rebuild");
    assert_eq!(s.dump_projections().await.expect("dump"), dump);
}

// ---------------------------------------------------------------------------------------
// 10. Concurrency: appends, replays, tailing, notifications
// ---------------------------------------------------------------------------------------

/// Writers racing on one session (each re-reading after a conflict) and on many sessions
/// leave contiguous, verifiable chains; racing creators of one new session: one wins.
async fn concurrent_appends_keep_one_chain(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let id = SessionId::from_parts(1_700_000_000_000, 500);
    store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![started(Sha256Hash::ZERO), entered(1, None, None)],
            blobs: Vec::new(),
        })
        .await
        .expect("start");
    let writers = 6u32;
    let each = 10u32;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut conflicts = 0u32;
            for i in 0..each {
                loop {
                    let last = store.session(id).await.expect("s").expect("e").last_seq;
                    match store
                        .append(AppendRequest {
                            session_id: id,
                            expected_seq: last,
                            events: vec![checkpoint_event(1, w * 1000 + i, None)],
                            blobs: Vec::new(),
                        })
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::SeqConflict { .. }) => conflicts += 1,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            conflicts
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("writer");
    }
    let events = all_events(store.as_ref(), id).await;
    assert_eq!(events.len() as u32, 2 + writers * each);
    let summary = store.session(id).await.expect("s").expect("e");
    assert_eq!(summary.checkpoints, writers * each);
    assert!(store.verify(id).await.expect("v").expect("e").is_valid());

    // Many sessions at once: positions stay unique and per-session chains intact.
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..8u128 {
        let store = store.clone();
        tasks.spawn(async move {
            let sid = SessionId::from_parts(1_700_000_000_001, 600 + k);
            store
                .append(AppendRequest {
                    session_id: sid,
                    expected_seq: Seq(0),
                    events: vec![started(Sha256Hash::ZERO), entered(1, None, None)],
                    blobs: vec![b"shared blob".to_vec()],
                })
                .await
                .expect("start");
            for i in 0..5 {
                store
                    .append(AppendRequest {
                        session_id: sid,
                        expected_seq: Seq(2 + i),
                        events: vec![checkpoint_event(1, i as u32, None)],
                        blobs: vec![b"shared blob".to_vec()],
                    })
                    .await
                    .expect("append");
            }
            sid
        });
    }
    let mut sids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sids.push(r.expect("task"));
    }
    for sid in &sids {
        assert!(store.verify(*sid).await.expect("v").expect("e").is_valid());
    }
    let all = store.events_since(0, 100_000).await.expect("all");
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all.len() as u32, 2 + writers * each + 8 * 7);

    // Racing creators of one new session.
    let fresh = SessionId::from_parts(1_700_000_000_002, 700);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(AppendRequest {
                    session_id: fresh,
                    expected_seq: Seq(0),
                    events: vec![started(Sha256Hash::ZERO)],
                    blobs: Vec::new(),
                })
                .await
        });
    }
    let mut created = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(_) => created += 1,
            Err(StoreError::SeqConflict { actual, .. }) => assert_eq!(actual, Seq(1)),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(all_events(store.as_ref(), fresh).await.len(), 1);
}

/// The same batch (same first idempotency key) sent by many retrying writers at once is
/// written exactly once; every writer gets the same answer.
async fn concurrent_replays_write_once(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let d = Driver::new();
    let id = d.start(store.as_ref(), json!({})).await;
    let last = store.session(id).await.expect("s").expect("e").last_seq;
    let n_before = count_events(db).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(AppendRequest {
                    session_id: id,
                    expected_seq: last,
                    events: vec![
                        checkpoint_event(1, 1, Some(format!("{id}:cp:replay"))),
                        checkpoint_event(1, 2, None),
                    ],
                    blobs: vec![b"replayed blob".to_vec()],
                })
                .await
        });
    }
    let mut written = 0;
    let mut firsts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(o) => {
                if !o.duplicate {
                    written += 1;
                }
                firsts.push(o.first_seq);
            }
            // A writer that read the seq before the winner committed and never saw the
            // key: a conflict it would retry as a duplicate.
            Err(StoreError::SeqConflict { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(written, 1);
    assert!(firsts.iter().all(|f| *f == Seq(last.0 + 1)), "{firsts:?}");
    assert_eq!(count_events(db).await, n_before + 2);
    // A retry now is a duplicate, whatever seq it states.
    let again = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: last,
            events: vec![checkpoint_event(1, 1, Some(format!("{id}:cp:replay")))],
            blobs: Vec::new(),
        })
        .await
        .expect("replay");
    assert!(again.duplicate);
    assert_eq!(count_events(db).await, n_before + 2);
}

/// A reader tailing by global position while writers append concurrently sees every event
/// exactly once, in position order: no event ever commits behind a position already read.
async fn tailing_never_skips_a_committed_event(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let writers = 4u128;
    let per = 25u64;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0u64;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.events_since(after, 7).await.expect("tail");
                if let Some(last) = page.last() {
                    after = last.position;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let sid = SessionId::from_parts(1_700_000_000_003, 800 + w);
            store
                .append(AppendRequest {
                    session_id: sid,
                    expected_seq: Seq(0),
                    events: vec![started(Sha256Hash::ZERO), entered(1, None, None)],
                    blobs: Vec::new(),
                })
                .await
                .expect("start");
            for i in 0..per {
                store
                    .append(AppendRequest {
                        session_id: sid,
                        expected_seq: Seq(2 + i),
                        events: vec![checkpoint_event(1, i as u32, None)],
                        blobs: Vec::new(),
                    })
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let all = store.events_since(0, 100_000).await.expect("all");
    assert_eq!(all.len() as u64, writers as u64 * (per + 2));
    assert_eq!(
        seen.iter().map(|e| e.position).collect::<Vec<_>>(),
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        "the tailing reader missed or repeated events"
    );
}

/// Appends are announced to subscribers of the store, with the session's new last seq.
async fn appends_are_announced(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let mut rx = store.subscribe();
    // PostgreSQL's listener connects in the background: give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let d = Driver::new();
    let id = d.start(store.as_ref(), json!({})).await;
    let last = store.session(id).await.expect("s").expect("e").last_seq;
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let a = rx.recv().await.expect("notification");
            if a.session_id == id {
                return a;
            }
        }
    })
    .await
    .expect("an append is announced within 5 s");
    assert_eq!(got.last_seq, last);
}

/// A session copied event for event into another store (of either backend) verifies
/// there and folds to the same projections.
async fn sessions_copy_between_stores(db: &dyn TestDb) {
    let source = db.open(None).await.expect("open");
    let s = source.as_ref();
    let d = Driver::new();
    let a = d.start(s, json!({"size": "large"})).await;
    d.submit(s, a, "planned", json!({"x": 1})).await;
    d.checkpoint(s, a, "halfway").await;
    d.submit(s, a, "", json!({})).await;
    let b = dispatch(&d, s, 3, Some("copy:key"))
        .await
        .expect("dispatch");
    // Both backends as targets: the sibling (same backend) and, for PostgreSQL, SQLite
    // (and the other way round when PostgreSQL is available).
    let mut targets: Vec<Box<dyn TestDb>> = vec![db.sibling().await];
    targets.push(Box::new(SqliteDb::new().await.expect("sqlite")));
    if let Some(pg) = PgDb::new().await {
        targets.push(Box::new(pg));
    }
    for target in targets {
        let t = target.open(None).await.expect("open target");
        for h in s.blob_hashes(None, 1000).await.expect("blobs") {
            t.put_blob(&s.blob(h).await.expect("blob").expect("exists"))
                .await
                .expect("put");
        }
        let mut ids = s.session_ids(None, 1).await.expect("ids");
        ids.extend(s.session_ids(ids.last().copied(), 100).await.expect("ids"));
        assert_eq!(ids.len(), 2);
        for id in ids {
            let raw = s.raw_events(id, Seq(0), 10_000).await.expect("raw");
            t.import_session(raw.clone()).await.expect("import");
            assert!(t.verify(id).await.expect("v").expect("e").is_valid());
            let copied = t.raw_events(id, Seq(0), 10_000).await.expect("raw");
            let strip = |v: &[worktrain_store::RawEvent]| {
                v.iter()
                    .map(|e| (e.seq, e.payload.clone(), e.hash, e.created_at_ms))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&copied), strip(&raw), "payload bytes and hashes kept");
            // A second import of the same session is refused.
            assert!(t.import_session(raw).await.is_err());
        }
        assert_eq!(
            t.dump_projections().await.expect("dump"),
            s.dump_projections().await.expect("dump"),
            "the same events fold to the same projections"
        );
        assert_eq!(
            t.session_by_dispatch_key("copy:key").await.expect("k"),
            Some(b)
        );
    }
}

/// Text filters are literal (no LIKE wildcards) and ignore case the Unicode way;
/// workspace filters take the directory and what is inside it, nothing else.
async fn session_filters_are_literal_and_unicode(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let mk = |id: u128, goal: &str, ws: Option<&str>, branch: Option<&str>| NewEvent {
        body: EventBody::SessionStarted {
            workflow_id: "conformance".parse().expect("workflow id"),
            workflow_hash: Sha256Hash::ZERO,
            workflow_version: "1".into(),
            workflow_source: "test".into(),
            goal: goal.into(),
            workspace: ws.map(str::to_owned),
            branch: branch.map(str::to_owned),
            context: Map::new(),
            mode: SessionMode::Interactive,
            parent: None,
        },
        idempotency_key: Some(format!("filter:{id}")),
    };
    let rows = [
        (1, "Raise coverage to 100% now", Some("/srv/app"), None),
        (
            2,
            "Raise coverage to 100 percent",
            Some("/srv/app/sub"),
            None,
        ),
        (
            3,
            "rename snake_case helpers",
            Some("/srv/application"),
            None,
        ),
        (4, "rename snakeXcase helpers", None, Some("feature/ÜBER")),
        (5, "ÉTÉ release notes", Some("/srv/app/"), None),
    ];
    let mut ids = HashMap::new();
    for (n, goal, ws, branch) in rows {
        let id = SessionId::from_parts(1_700_000_000_100, n);
        s.append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: vec![mk(n, goal, ws, branch)],
            blobs: Vec::new(),
        })
        .await
        .expect("append");
        ids.insert(n, id);
    }
    let find = |f: SessionFilter| async move {
        let mut v: Vec<SessionId> = s
            .sessions(&f)
            .await
            .expect("list")
            .iter()
            .map(|x| x.session_id)
            .collect();
        v.sort();
        v
    };
    let text = |t: &str| SessionFilter {
        text: Some(t.into()),
        ..SessionFilter::default()
    };
    let of = |ns: &[u128]| {
        let mut v: Vec<SessionId> = ns.iter().map(|n| ids[n]).collect();
        v.sort();
        v
    };
    assert_eq!(find(text("100%")).await, of(&[1]), "% is literal");
    assert_eq!(find(text("snake_case")).await, of(&[3]), "_ is literal");
    assert_eq!(find(text("RAISE COVERAGE")).await, of(&[1, 2]));
    assert_eq!(find(text("été")).await, of(&[5]), "Unicode case folding");
    assert_eq!(find(text("über")).await, of(&[4]), "branch is searched");
    assert_eq!(
        find(text("CONFORMANCE")).await,
        of(&[1, 2, 3, 4, 5]),
        "workflow id"
    );
    assert_eq!(find(text("\u{1f}")).await, of(&[]));
    let ws = |w: &str| SessionFilter {
        workspace: Some(w.into()),
        ..SessionFilter::default()
    };
    assert_eq!(find(ws("/srv/app")).await, of(&[1, 2, 5]));
    assert_eq!(find(ws("/srv/app/")).await, of(&[1, 2, 5]));
    assert_eq!(find(ws("/srv/app/sub")).await, of(&[2]));
    assert_eq!(find(ws("/srv")).await, of(&[1, 2, 3, 5]));
    // Run filters.
    let no_run = SessionFilter {
        run: Some(RunFilter::NoRun),
        ..SessionFilter::default()
    };
    assert_eq!(find(no_run.clone()).await, of(&[1, 2, 3, 4, 5]));
    transition(s, ids[&2], |_| vec![run_queued(0, None)]).await;
    transition(s, ids[&3], |_| vec![run_queued(0, None)]).await;
    transition(s, ids[&3], |_| {
        vec![body(EventBody::RunFinished {
            run: 0,
            end: RunEnd::Failed,
            reason: Some(worktrain_core::run::FailureReason::Killed),
            detail: None,
        })]
    })
    .await;
    assert_eq!(find(no_run).await, of(&[1, 4, 5]));
    let state = |st: RunState| SessionFilter {
        run: Some(RunFilter::State(st)),
        ..SessionFilter::default()
    };
    assert_eq!(find(state(RunState::Queued)).await, of(&[2]));
    assert_eq!(find(state(RunState::Failed)).await, of(&[3]));
    assert_eq!(find(state(RunState::Running)).await, of(&[]));
    assert_eq!(
        find(SessionFilter {
            run: Some(RunFilter::State(RunState::Queued)),
            workspace: Some("/srv/app".into()),
            text: Some("PERCENT".into()),
            ..SessionFilter::default()
        })
        .await,
        of(&[2]),
        "filters combine"
    );
}

// ---------------------------------------------------------------------------------------
// 11. Migrations on an old database
// ---------------------------------------------------------------------------------------

/// A database written by worktrain at SQLite schema v3 (`sqlite3 .dump` of a real store:
/// an interactive session advanced twice, four dispatched runs — queued with dispatch
/// keys, one running with a lease, one with a higher priority, one failed) opens with
/// this build: migrated, nothing lost, and it reads the same as a store built today.
#[tokio::test]
async fn sqlite_v3_database_migrates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .expect("create");
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            include_str!("fixtures/sqlite-v3.sql").to_owned(),
        ))
        .execute(&pool)
        .await
        .expect("load the v3 dump");
        pool.close().await;
    }
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open migrates");
    assert_eq!(store.schema_version().await.expect("v"), SCHEMA_VERSION);
    let (page,): (i64,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(page, 4096, "an existing store keeps its page size");
    let id = |s: &str| -> SessionId { s.parse().expect("id") };
    let interactive = id("ses_01m96ke00czbjexbwx939a24v7");
    let queued_key1 = id("ses_01m96ke00vt7ywvs67tdevcm96");
    let running = id("ses_01m96ke011ank5etv40zjgs5a0");
    let urgent = id("ses_01m96ke013jrkj8fbr6p41kts4");
    let failed = id("ses_01m96ke015qp6zh74za5kw7frx");
    // Queue order as v3 had it (priority, then age).
    assert_eq!(
        queue_ids(&store.queue().await.expect("queue")),
        vec![urgent, queued_key1, running]
    );
    // Dispatch keys moved to their own table, finished runs' keys included.
    assert_eq!(
        store
            .session_by_dispatch_key("gh:delivery:1")
            .await
            .expect("k"),
        Some(queued_key1)
    );
    assert_eq!(
        store
            .session_by_dispatch_key("cron:nightly:2026-01-01")
            .await
            .expect("k"),
        Some(failed)
    );
    // Derived columns were backfilled (Unicode lowercase search, run states).
    let found: Vec<SessionId> = store
        .sessions(&SessionFilter {
            text: Some("ünicode config".into()),
            ..SessionFilter::default()
        })
        .await
        .expect("search")
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(found, vec![interactive]);
    let failed_runs: Vec<SessionId> = store
        .sessions(&SessionFilter {
            run: Some(RunFilter::State(RunState::Failed)),
            ..SessionFilter::default()
        })
        .await
        .expect("list")
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(failed_runs, vec![failed]);
    assert_eq!(store.leases().await.expect("leases").len(), 1);
    for s in [interactive, queued_key1, running, urgent, failed] {
        assert!(
            store.verify(s).await.expect("v").expect("e").is_valid(),
            "{s}"
        );
    }
    // What the migration built equals what a fold of the events builds (summaries
    // compared as this build reads them: a field added since v3 has its default).
    let migrated = typed_summaries(store.dump_projections().await.expect("dump"));
    store.rebuild_projections().await.expect("rebuild");
    assert!(typed_summaries(store.dump_projections().await.expect("dump")) == migrated);
    // And the old database keeps working: a dispatch with a taken key is refused.
    let d = Driver::new();
    let r = dispatch(&d, &store, 0, Some("gh:delivery:2")).await;
    assert!(
        matches!(r, Err(StoreError::DispatchKeyTaken { session, .. }) if session == running),
        "{r:?}"
    );
    let now = store.dump_projections().await.expect("dump");
    store.close().await;
    // Reopening does nothing more.
    let again = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("reopen");
    assert!(again.dump_projections().await.expect("dump") == now);
}

/// v8 moves blobs, nodes and attempts from WITHOUT ROWID trees (whose large rows were
/// read in full at every key comparison) into table b-trees with a unique key index: a
/// v7 store migrates with every row, key and guard kept.
#[tokio::test]
async fn sqlite_v7_database_migrates_to_keyed_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v7.db");
    let d = Driver::new();
    let old = SqliteStore::open_at_version(&path, SqliteOptions::default(), 7)
        .await
        .expect("v7");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = d.start(&old, json!({"n": n})).await;
        d.submit(&old, id, "planned", json!({})).await;
        d.checkpoint(&old, id, "halfway").await;
        ids.push(id);
    }
    let before = old.dump_projections().await.expect("dump");
    let (blobs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM blobs")
        .fetch_one(old.pool())
        .await
        .expect("count");
    assert!(blobs > 0);
    old.close().await;

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open migrates");
    assert_eq!(store.schema_version().await.expect("v"), SCHEMA_VERSION);
    assert!(store.dump_projections().await.expect("dump") == before);
    let (after,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM blobs")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(after, blobs);
    for table in ["blobs", "session_nodes", "session_attempts"] {
        let (sql,): (String,) = sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = ?")
            .bind(table)
            .fetch_one(store.pool())
            .await
            .expect("table");
        assert!(
            !sql.to_uppercase().contains("WITHOUT ROWID"),
            "{table}: {sql}"
        );
    }
    for id in &ids {
        assert!(store.verify(*id).await.expect("v").expect("e").is_valid());
        let summary = store.session(*id).await.expect("s").expect("e");
        let (s, record) = store
            .session_and_attempt(*id, NodeId(1), Attempt(1))
            .await
            .expect("read");
        assert_eq!(s.as_ref(), Some(&summary));
        assert!(record.is_some(), "the attempt at node 1 survived");
    }
    // Keys and guards hold: a blob is stored once and never updated; an attempt key is
    // unique; the session keeps advancing.
    let hash = Sha256Hash::of(b"after v8");
    assert_eq!(store.put_blob(b"after v8").await.expect("put"), hash);
    assert_eq!(store.put_blob(b"after v8").await.expect("put again"), hash);
    let r = sqlx::query("UPDATE blobs SET size = 0")
        .execute(store.pool())
        .await;
    assert!(
        r.is_err_and(|e| e.to_string().contains("immutable")),
        "blobs stay immutable"
    );
    let r = sqlx::query(
        "INSERT INTO session_attempts SELECT session_id, node, attempt, outcome, output_hash, \
         response, seq FROM session_attempts LIMIT 1",
    )
    .execute(store.pool())
    .await;
    assert!(r.is_err(), "an attempt key is unique");
    d.submit(&store, ids[0], "implemented", json!({})).await;
    assert!(
        store
            .verify(ids[0])
            .await
            .expect("v")
            .expect("e")
            .is_valid()
    );
}

/// A dump with each stored summary read into this build's `SessionSummary` and written
/// back (old rows lack fields added since, which read as their defaults).
fn typed_summaries(mut dump: worktrain_store::ProjectionDump) -> worktrain_store::ProjectionDump {
    for s in &mut dump.sessions {
        let typed: SessionSummary =
            serde_json::from_value(s["summary"].clone()).expect("summary reads");
        s["summary"] = serde_json::to_value(typed).expect("summary writes");
    }
    dump
}

/// Queries are portable: no JSON lookups or rowid order in either backend's queries
/// (migrations may use them once, to move old data into real columns).
#[test]
fn backends_use_no_sqlite_isms_in_queries() {
    for (name, src) in [
        ("sqlite.rs", include_str!("../src/sqlite.rs")),
        ("postgres.rs", include_str!("../src/postgres.rs")),
    ] {
        for ism in ["json_extract", "rowid", "->>"] {
            assert!(!src.contains(ism), "{name} uses `{ism}` in a query");
        }
    }
}

/// The delivery's events are stored and folded into `run.delivery` the same way by every
/// backend, incrementally and when projections are rebuilt (findings carry file and line).
async fn delivery_stages_fold_and_rebuild(db: &dyn TestDb) {
    use worktrain_core::event::{SecretFinding, StageOutcome};
    use worktrain_core::run::{DeliveryStage, DeliveryState, DeliveryTarget};
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let id = dispatch(&d, s, 0, None).await.expect("dispatch");
    let stage = |stage, outcome| body(EventBody::DeliveryStageCompleted { stage, outcome });
    transition(s, id, |_| {
        vec![
            body(EventBody::RunStarted {
                run: 1,
                worker: "w".into(),
                worktree: None,
                branch: Some("worktrain/x".into()),
            }),
            body(EventBody::DeliveryStarted {
                target: DeliveryTarget::PullRequest,
                attempt: 1,
            }),
            stage(
                DeliveryStage::Commit,
                StageOutcome {
                    summary: "committed".into(),
                    commit: Some("abc".into()),
                    ..StageOutcome::default()
                },
            ),
            stage(
                DeliveryStage::SecretScan,
                StageOutcome {
                    summary: "1 possible secret".into(),
                    findings: vec![SecretFinding {
                        file: "config/app.yml".into(),
                        line: 4,
                        rule: "high_entropy".into(),
                    }],
                    ..StageOutcome::default()
                },
            ),
            body(EventBody::DeliveryFailed {
                stage: DeliveryStage::Push,
                message: "push to `origin` failed: rejected".into(),
                retryable: false,
                hint: Some("resolve it".into()),
            }),
            body(EventBody::RunFinished {
                run: 1,
                end: RunEnd::Failed,
                reason: Some(worktrain_core::run::FailureReason::DeliveryFailed),
                detail: None,
            }),
        ]
    })
    .await;
    let failed = s.session(id).await.expect("s").expect("e");
    let run = failed.run.clone().expect("run");
    assert_eq!(run.state, RunState::Failed);
    let del = run.delivery.expect("delivery");
    assert_eq!(del.state, DeliveryState::Failed);
    assert_eq!(del.failure.as_ref().expect("f").stage, DeliveryStage::Push);
    assert_eq!(del.findings.len(), 1);
    assert_eq!(del.done.len(), 2);
    let done = transition(s, id, |_| {
        vec![
            body(EventBody::RunRequeued {
                reason: worktrain_core::run::RequeueReason::Delivery,
            }),
            body(EventBody::RunStarted {
                run: 2,
                worker: "w".into(),
                worktree: None,
                branch: None,
            }),
            body(EventBody::DeliveryStarted {
                target: DeliveryTarget::PullRequest,
                attempt: 2,
            }),
            stage(
                DeliveryStage::PullRequest,
                StageOutcome {
                    summary: "opened".into(),
                    url: Some("https://github.com/o/r/pull/3".into()),
                    number: Some(3),
                    ..StageOutcome::default()
                },
            ),
            body(EventBody::DeliveryFinished {
                target: DeliveryTarget::PullRequest,
            }),
        ]
    })
    .await;
    let del = done
        .run
        .as_ref()
        .and_then(|r| r.delivery.clone())
        .expect("d");
    assert_eq!(del.state, DeliveryState::Delivered);
    assert_eq!(del.attempt, 2);
    assert_eq!(del.pr_number, Some(3));
    assert_eq!(del.failure, None);
    assert_eq!(del.done.len(), 3);
    let before = s.dump_projections().await.expect("dump");
    s.rebuild_projections().await.expect("rebuild");
    assert_eq!(s.dump_projections().await.expect("dump"), before);
    assert_eq!(
        s.session(id).await.expect("s").expect("e").run,
        done.run,
        "the delivery folds the same when rebuilt"
    );
}

/// An LLM turn of the agent, with its token usage.
fn llm_turn(input: u64, output: u64) -> NewEvent {
    body(
        serde_json::from_value(json!({"type": "agent_activity", "activity": {
            "type": "llm_turn", "turn": 1, "model": "m",
            "usage": {"input_tokens": input, "output_tokens": output,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            "stop_reason": "tool_use", "duration_ms": 5, "attempts": 1, "tool_calls": 1}}))
        .expect("activity"),
    )
}

/// Workflow samples: one row per session and per node, with the attempts, the blocked
/// ones, the entry and closing times of the node's events and the tokens of the LLM turns
/// recorded while it was open; counts per workflow.
async fn workflow_samples_come_from_the_projections(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let wf = worktrain_core::ids::WorkflowId::new("conformance").expect("id");
    let empty = s.workflow_samples(&wf, 100).await.expect("samples");
    assert_eq!(empty.total_sessions, 0);
    assert!(empty.runs.is_empty() && empty.steps.is_empty());
    assert!(s.workflow_counts().await.expect("counts").is_empty());

    let d = Driver::new();
    let a = d.start(s, json!({})).await;
    transition(s, a, |_| vec![llm_turn(100, 20)]).await;
    // No notes: blocked; then accepted.
    let blocked = d.submit(s, a, "", json!({})).await;
    assert_eq!(blocked.status, SessionStatus::Blocked, "{blocked:?}");
    d.submit(s, a, "planned", json!({})).await;
    transition(s, a, |_| vec![llm_turn(7, 3)]).await;
    let b = d.start(s, json!({})).await;

    let samples = s.workflow_samples(&wf, 100).await.expect("samples");
    assert_eq!(samples.total_sessions, 2);
    assert_eq!(samples.runs.len(), 2);
    let run_a = samples.runs.iter().find(|r| r.session_id == a).expect("a");
    assert_eq!(run_a.tokens, 130);
    assert_eq!(run_a.status, SessionStatus::InProgress);
    assert_eq!(run_a.run_state, None);
    let events = s.events(a, Seq(0), 100).await.expect("events");
    let at = |seq: Seq| {
        events
            .iter()
            .find(|e| e.seq == seq)
            .map(|e| e.created_at_ms)
            .expect("event")
    };
    let nodes = s.nodes(a).await.expect("nodes");
    let steps_a: Vec<_> = samples.steps.iter().filter(|x| x.session_id == a).collect();
    assert_eq!(steps_a.len(), 2);
    let (plan, build) = (steps_a[0], steps_a[1]);
    assert_eq!(
        (plan.step_id.as_str(), plan.status),
        ("plan", NodeStatus::Completed)
    );
    assert_eq!(
        (plan.attempts, plan.blocked_attempts, plan.tokens),
        (2, 1, 120)
    );
    assert_eq!(plan.entered_at_ms, at(nodes[0].entered_seq));
    assert_eq!(
        plan.closed_at_ms,
        Some(at(nodes[0].closed_seq.expect("closed")))
    );
    assert_eq!(
        (build.step_id.as_str(), build.status),
        ("build", NodeStatus::Active)
    );
    assert_eq!(
        (build.attempts, build.blocked_attempts, build.tokens),
        (0, 0, 10)
    );
    assert_eq!(build.closed_at_ms, None);
    assert_eq!(
        samples.steps.iter().filter(|x| x.session_id == b).count(),
        1
    );
    // The window is the latest sessions.
    let latest = s.workflow_samples(&wf, 1).await.expect("samples");
    assert_eq!(latest.total_sessions, 2);
    assert_eq!(latest.runs.len(), 1);
    assert_eq!(latest.runs[0].session_id, b);
    assert!(latest.steps.iter().all(|x| x.session_id == b));

    let counts = s.workflow_counts().await.expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (
            counts[0].workflow_id.as_str(),
            counts[0].sessions,
            counts[0].complete,
            counts[0].failed
        ),
        ("conformance", 2, 0, 0)
    );
}

/// Keyset paging: each page starts after the last row of the previous one, so sessions
/// added meanwhile (newer) never push rows from one page onto the next.
async fn keyset_pages_ignore_sessions_added_meanwhile(db: &dyn TestDb) {
    let store = db.open(None).await.expect("open");
    let s = store.as_ref();
    let d = Driver::new();
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(d.start(s, json!({})).await);
    }
    let page = |after: Option<SessionCursor>| SessionFilter {
        after,
        limit: Some(2),
        ..SessionFilter::default()
    };
    let p1 = s.sessions(&page(None)).await.expect("page 1");
    assert_eq!(p1.len(), 2);
    for _ in 0..3 {
        d.start(s, json!({})).await;
    }
    let mut seen: Vec<SessionId> = p1.iter().map(|x| x.session_id).collect();
    let mut cursor = p1.last().map(SessionCursor::of);
    loop {
        let p = s.sessions(&page(cursor)).await.expect("page");
        if p.is_empty() {
            break;
        }
        seen.extend(p.iter().map(|x| x.session_id));
        cursor = p.last().map(SessionCursor::of);
    }
    let mut expected = first.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every first session once, none added later");
}
