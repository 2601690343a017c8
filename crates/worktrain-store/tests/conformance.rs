//! The event-store conformance suite.
//!
//! Every check is a backend-neutral `async fn check(db: &dyn TestDb)` that talks to the
//! store only through [`EventStore`], plus a handful of raw hooks ([`TestDb`]) for what the
//! trait deliberately cannot do (attempting forbidden SQL, tampering, faking a newer
//! schema). A backend joins the suite by implementing [`TestDb`] and invoking
//! [`conformance_suite!`] with a constructor — see `conformance_suite!(sqlite, …)` below.
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
use worktrain_core::ids::{NodeId, Seq, SessionId, Sha256Hash, StepId};
use worktrain_core::load::parse_workflow;
use worktrain_core::machine::{AdvanceDecision, Machine, Plan, StartParams, Submission};
use worktrain_core::projection::{NodeRecord, NodeStatus, SessionStatus, SessionSummary};
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};
use worktrain_store::sqlite::{SCHEMA_VERSION, SqliteOptions};
use worktrain_store::{AppendOutcome, AppendRequest, EventStore, SqliteStore, StoreError};

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
}

/// Instantiate every conformance check as a `#[tokio::test]` in module `$module`, with
/// `$make` an async expression producing a fresh [`TestDb`].
macro_rules! conformance_suite {
    ($module:ident, $make:expr; $($check:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = $make.await;
                    super::$check(&db).await;
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------
// SQLite backend
// ---------------------------------------------------------------------------------------

/// A SQLite database in a temporary directory.
pub struct SqliteDb {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The first store opened, kept for raw access through its pool.
    raw: Mutex<Option<SqliteStore>>,
}

impl SqliteDb {
    /// A fresh (not yet created) database file.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worktrain.db");
        Self {
            _dir: dir,
            path,
            raw: Mutex::new(None),
        }
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
    let db = SqliteDb::new().await;
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
}

conformance_suite!(sqlite, super::SqliteDb::new();
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
);

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
    assert_eq!(
        store.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
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
    use worktrain_store::SessionFilter;
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
