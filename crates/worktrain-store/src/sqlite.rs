//! The embedded SQLite backend: WAL, `synchronous=FULL`, migrations embedded and applied
//! on open.
//!
//! Correctness rests on the schema's unique constraints (`(session_id, seq)`, idempotency
//! keys, dispatch keys), exactly as on PostgreSQL; an append that trips one is re-judged
//! against the committed state. Writers additionally take SQLite's write lock up front
//! (`BEGIN IMMEDIATE`) only so that two processes never deadlock on a read-to-write
//! upgrade.

use std::borrow::Cow;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::broadcast;
use worktrain_core::event::StoredEvent;
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash};
use worktrain_core::projection::{
    AttemptOutcome, AttemptRecord, NodeRecord, NodeStatus, ProjectionChange, QueueRow,
    SessionSummary, apply,
};
use worktrain_core::run::RunState;

use crate::common::{
    ChainCheck, PreparedAppend, RawColumns, RecentSummaries, SessionRow, corrupt, enum_from,
    enum_str, now_ms, parse, prepare_append, prepare_import, raw_to_stored, search_needle, to_i64,
    to_u64, workspace_prefix,
};
use crate::{
    AppendOutcome, AppendRequest, Appended, ChainReport, Claim, EventStore, LeaderLock, Lease,
    LeaseRenewal, ProjectionDump, RawEvent, RebuildReport, Recovery, RunFilter, SessionFilter,
    StoreError, StoreOptions,
};

/// The leadership of an embedded store's only daemon.
struct SoleLeader;

#[async_trait]
impl LeaderLock for SoleLeader {
    async fn still_held(&mut self) -> bool {
        true
    }
}

/// Migrations of the SQLite schema, embedded in the binary. Append only: never edit one
/// that has shipped (its checksum is recorded in the database).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../migrations/sqlite/0001_event_store.sql"),
    ),
    (
        2,
        "loops and gates",
        include_str!("../migrations/sqlite/0002_loops_and_gates.sql"),
    ),
    (
        3,
        "runs",
        include_str!("../migrations/sqlite/0003_runs.sql"),
    ),
    (
        4,
        "triggers",
        include_str!("../migrations/sqlite/0004_triggers.sql"),
    ),
    (
        5,
        "portable columns",
        include_str!("../migrations/sqlite/0005_portable_columns.sql"),
    ),
    (
        6,
        "compact writes",
        include_str!("../migrations/sqlite/0006_compact_writes.sql"),
    ),
    (
        7,
        "insights",
        include_str!("../migrations/sqlite/0007_insights.sql"),
    ),
    (
        8,
        "keys apart from large rows",
        include_str!("../migrations/sqlite/0008_keys_apart_from_large_rows.sql"),
    ),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = 8;

/// Rows per multi-row INSERT (9 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 500;

#[derive(Debug)]
struct EmbeddedMigrations {
    up_to: i64,
}

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<
        Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 'static>,
    > {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .filter(|(version, _, _)| *version <= self.up_to)
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Options for opening a SQLite store.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Largest blob accepted, in bytes.
    pub blob_limit: usize,
    /// Pool size (readers run concurrently; writers serialize on the database lock).
    pub max_connections: u32,
    /// How long a writer waits for another writer's transaction before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            blob_limit: 8 * 1024 * 1024,
            max_connections: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl From<&StoreOptions> for SqliteOptions {
    fn from(o: &StoreOptions) -> Self {
        let d = Self::default();
        Self {
            blob_limit: o.blob_limit,
            max_connections: o.max_connections.unwrap_or(d.max_connections),
            busy_timeout: d.busy_timeout,
        }
    }
}

/// The SQLite event store.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// `None` once the store is closed.
    writer: std::sync::Arc<tokio::sync::Mutex<Option<Writer>>>,
    recent: std::sync::Arc<RecentSummaries>,
    blob_limit: usize,
    appended: broadcast::Sender<Appended>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and apply pending migrations.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let store = Self::connect(path, options).await?;
        store.migrate(SCHEMA_VERSION).await?;
        Ok(store)
    }

    /// Open the database at `path` migrating it only up to `version` (tests build
    /// databases of older versions with it, to test the migrations that follow).
    #[doc(hidden)]
    pub async fn open_at_version(
        path: &Path,
        options: SqliteOptions,
        version: i64,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(path, options).await?;
        store.migrate(version).await?;
        Ok(store)
    }

    async fn connect(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            // Small pages: an advance touches ~10 b-trees; each touched page is a WAL
            // frame, so the page size sets the bytes written per advance (512: ~12 KB;
            // 4096: ~50 KB; docs/benchmarks.md). Only new databases take it; an existing
            // one keeps its page size until `VACUUM`ed with another.
            .page_size(512)
            // SQLite checkpoints the WAL into the database when it reaches this many
            // pages, inside the commit that crosses it. Its default of 1,000 assumes 4 KiB
            // pages (a 4 MB WAL); with 512-byte pages that is every ~35 advances. 8,000
            // pages keeps the WAL at ~4 MB, checkpoints 8x less often, and a checkpoint
            // copies each page once however often it was rewritten meanwhile.
            .pragma("wal_autocheckpoint", "8000");
        let writer_conn =
            sqlx::ConnectOptions::connect(&connect)
                .await
                .map_err(|e| StoreError::Unreachable {
                    url: format!("sqlite://{}", path.display()),
                    reason: e.to_string(),
                })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(1)
            // A connection to a local file does not go stale the way a socket does; the
            // default ping before every acquire would cost each read and each append one
            // more hop to SQLite's worker thread (docs/benchmarks.md).
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unreachable {
                url: format!("sqlite://{}", path.display()),
                reason: e.to_string(),
            })?;
        Ok(Self {
            pool,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(Some(Writer {
                conn: writer_conn,
                maybe_open: false,
            }))),
            recent: std::sync::Arc::default(),
            blob_limit: options.blob_limit,
            appended: broadcast::channel(1024).0,
        })
    }

    async fn migrate(&self, up_to: i64) -> Result<(), StoreError> {
        let found = self.applied_version().await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let migrator = Migrator::new(EmbeddedMigrations { up_to })
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        // Two processes opening a fresh database at once can both try to apply the same
        // migration (SQLite has no migration lock); the loser fails, then finds the
        // migration applied on its next look.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(StoreError::Migration(e.to_string())),
            }
        }
        if up_to >= 5 {
            self.backfill_session_columns().await?;
        }
        Ok(())
    }

    /// Fill the derived session columns that a migration added empty (v5).
    async fn backfill_session_columns(&self) -> Result<(), StoreError> {
        loop {
            let mut writer = self.writer().await?;
            let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT summary FROM sessions WHERE search_text IS NULL LIMIT 500")
                    .fetch_all(&mut *tx)
                    .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(());
            }
            for (json,) in rows {
                let s: SessionSummary = serde_json::from_str(&json).map_err(corrupt)?;
                let row = SessionRow::of(&s)?;
                sqlx::query(
                    "UPDATE sessions SET branch = ?, run_state = ?, search_text = ? WHERE session_id = ?",
                )
                .bind(&row.branch)
                .bind(row.run_state)
                .bind(&row.search_text)
                .bind(&row.session_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }

    async fn applied_version(&self) -> Result<i64, StoreError> {
        let exists: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            return Ok(0);
        }
        let (v,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(v.unwrap_or(0))
    }

    /// A session's append has committed: hold its summary for the next decision and wake
    /// the readers waiting for it.
    fn committed(&self, summary: &SessionSummary) {
        self.recent.put(summary);
        let _ = self.appended.send(Appended {
            session_id: summary.session_id,
            last_seq: summary.last_seq,
        });
    }

    /// The writer connection, rolled back first if an abandoned batch may have left a
    /// transaction open.
    pub(crate) async fn writer(&self) -> Result<WriterGuard, StoreError> {
        let guard = std::sync::Arc::clone(&self.writer).lock_owned().await;
        let mut writer = tokio::sync::OwnedMutexGuard::try_map(guard, Option::as_mut)
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        if writer.maybe_open {
            writer.roll_back().await;
            writer.maybe_open = false;
        }
        Ok(writer)
    }

    /// The underlying pool (tests use it to attempt forbidden writes).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Write a prepared append — blobs, events, dispatch keys, summary and projection
    /// rows — in one round trip.
    async fn write_prepared(
        conn: &mut SqliteConnection,
        sid: &str,
        prepared: &PreparedAppend,
        blobs: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        Self::batch_prepared(&mut batch, sid, prepared, blobs)?;
        batch.run(conn).await
    }

    /// Add a prepared append's statements to `batch`.
    fn batch_prepared(
        batch: &mut Batch,
        sid: &str,
        prepared: &PreparedAppend,
        blobs: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        for blob in blobs {
            batch.blob(blob, now);
        }
        batch.events(sid, &prepared.rows);
        for key in &prepared.dispatch_keys {
            batch.dispatch_key(key, sid);
        }
        batch.summary(&prepared.summary)?;
        for (i, change) in &prepared.changes {
            let row = &prepared.rows[*i];
            batch.change(
                sid,
                change,
                QueueOrder::OfSeq(row.seq),
                row.sets_queue_order,
            )?;
        }
        if prepared.ends_run() {
            batch
                .next("DELETE FROM run_leases WHERE session_id = ")
                .push_bind(sid);
        }
        Ok(())
    }

    /// Append `request`; with `known` (the session's summary at `expected_seq`, just read
    /// by the writer) the batch is built on it without reading the summary again, and the
    /// unique `(session, seq)` key refuses it if the log has moved on.
    async fn append_with(
        &self,
        known: Option<&SessionSummary>,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let AppendRequest {
            session_id,
            expected_seq,
            events,
            blobs,
        } = request;
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        if let Some(big) = blobs.iter().find(|b| b.len() > self.blob_limit) {
            return Err(StoreError::BlobTooLarge {
                size: big.len(),
                limit: self.blob_limit,
            });
        }
        let first_key = events[0].idempotency_key.clone();
        let batch_len = events.len();
        let sid = session_id.to_string();
        // Round trips: read the summary (unless the writer just read it), then one batch
        // that begins, writes and commits. A duplicate batch is found by its idempotency
        // key's unique index (or, when the writer's seq is stale, by looking the key up
        // before reporting a conflict); a stale read by the unique `(session, seq)` key.
        let mut writer = self.writer().await?;
        let summary = match known {
            Some(known) => Some(known.clone()),
            // A new session: built on nothing. If the session exists after all, its first
            // event's seq is taken and the batch is refused like any stale one.
            None if expected_seq == Seq(0)
                && matches!(
                    events[0].body,
                    worktrain_core::event::EventBody::SessionStarted { .. }
                ) =>
            {
                None
            }
            None => load_summary(&mut writer.conn, session_id).await?,
        };
        let actual = summary.as_ref().map(|s| s.last_seq).unwrap_or(Seq(0));
        if actual != expected_seq {
            // Read just now (a `known` is only passed at the expected seq): the current one.
            if let Some(current) = &summary {
                self.recent.put(current);
            }
            let dup = match first_key.as_deref() {
                Some(key) => duplicate_of(&mut writer.conn, key, batch_len).await?,
                None => None,
            };
            return match dup {
                Some(dup) => Ok(dup),
                None => Err(StoreError::SeqConflict {
                    session: session_id,
                    expected: expected_seq,
                    actual,
                }),
            };
        }
        // A dispatch key already taken is found by its unique index, like a stale seq.
        let prepared = prepare_append(session_id, summary, events, now_ms())?;
        let mut batch = Batch::transaction();
        Self::batch_prepared(&mut batch, &sid, &prepared, &blobs)?;
        let written = Writer::commit(writer, batch).await;
        match written {
            Ok(()) => {}
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                // What this handle held of the session is behind the log.
                self.recent.forget(session_id);
                return self
                    .rejudge(
                        session_id,
                        expected_seq,
                        first_key.as_deref(),
                        batch_len,
                        &prepared.dispatch_keys,
                        e,
                    )
                    .await;
            }
            Err(e) => return Err(e),
        }
        let summary = prepared.summary;
        self.committed(&summary);
        Ok(AppendOutcome {
            first_seq: Seq(actual.0 + 1),
            last_seq: summary.last_seq,
            duplicate: false,
            summary,
        })
    }

    /// After a unique constraint failed: what the committed state says the append was.
    async fn rejudge(
        &self,
        session_id: SessionId,
        expected_seq: Seq,
        first_key: Option<&str>,
        batch_len: usize,
        dispatch_keys: &[String],
        cause: sqlx::Error,
    ) -> Result<AppendOutcome, StoreError> {
        let mut conn = self.pool.acquire().await?;
        if let Some(key) = first_key
            && let Some(dup) = duplicate_of(&mut conn, key, batch_len).await?
        {
            return Ok(dup);
        }
        for key in dispatch_keys {
            if let Some(session) = dispatch_owner(&mut conn, key).await? {
                return Err(StoreError::DispatchKeyTaken {
                    key: key.clone(),
                    session,
                });
            }
        }
        let actual = load_summary(&mut conn, session_id)
            .await?
            .map(|s| s.last_seq)
            .unwrap_or(Seq(0));
        if actual != expected_seq {
            return Err(StoreError::SeqConflict {
                session: session_id,
                expected: expected_seq,
                actual,
            });
        }
        Err(StoreError::Database(cause))
    }
}

/// Append `bodies` to a session whose summary was just read in the open write
/// transaction (claims and recovery: no idempotency keys, no blobs).
async fn append_decided(
    conn: &mut SqliteConnection,
    summary: SessionSummary,
    bodies: Vec<worktrain_core::event::EventBody>,
) -> Result<PreparedAppend, StoreError> {
    let session_id = summary.session_id;
    let events = bodies
        .into_iter()
        .map(|body| worktrain_core::event::NewEvent {
            body,
            idempotency_key: None,
        })
        .collect();
    let prepared = prepare_append(session_id, Some(summary), events, now_ms())?;
    SqliteStore::write_prepared(conn, &session_id.to_string(), &prepared, &[]).await?;
    Ok(prepared)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn load_summary(
    conn: &mut SqliteConnection,
    id: SessionId,
) -> Result<Option<SessionSummary>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT summary FROM sessions WHERE session_id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(json,)| serde_json::from_str(&json).map_err(corrupt))
        .transpose()
}

/// The outcome of a batch whose first idempotency key is already stored.
async fn duplicate_of(
    conn: &mut SqliteConnection,
    key: &str,
    batch_len: usize,
) -> Result<Option<AppendOutcome>, StoreError> {
    let original: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, session_id FROM events WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((first, owner)) = original else {
        return Ok(None);
    };
    let owner: SessionId = parse(&owner, "session id")?;
    let summary = load_summary(conn, owner)
        .await?
        .ok_or_else(|| corrupt("idempotent event without a session projection"))?;
    let first = to_u64(first);
    Ok(Some(AppendOutcome {
        first_seq: Seq(first),
        last_seq: Seq(first + batch_len as u64 - 1),
        duplicate: true,
        summary,
    }))
}

async fn dispatch_owner(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<Option<SessionId>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT session_id FROM dispatch_keys WHERE dispatch_key = ?")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(s,)| parse(&s, "session id")).transpose()
}

/// Statements of one write, sent to SQLite in one round trip: every statement of a
/// batch runs on the connection's worker thread without a hop back to the caller, which
/// is most of what an append costs (see docs/benchmarks.md).
struct Batch {
    qb: QueryBuilder<Sqlite>,
    empty: bool,
}

/// The store's own connection for writes (and the reads a write is decided on).
///
/// One connection, taken in turn by this process's writers: they queue on an async mutex
/// instead of SQLite's busy handler, its page cache stays valid from one write to the
/// next (another connection's commit would discard it), and a write transaction is one
/// round trip to SQLite's worker thread — `BEGIN IMMEDIATE`, the statements and `COMMIT`
/// in one batch — with no pool checkout around it.
pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    /// A transaction batch was sent and did not report back (its caller was cancelled):
    /// it may have stopped inside its transaction, so roll back before the next use.
    maybe_open: bool,
}

impl Writer {
    /// Run a [`Batch::transaction`] and commit it; on failure nothing of it stays. The
    /// connection never stays inside the transaction, even when the caller stops waiting
    /// (a timeout, a dropped request) after the batch was sent: SQLite's write lock would
    /// stay held, and every other process would wait on it, until this handle wrote
    /// again.
    async fn commit(writer: WriterGuard, mut batch: Batch) -> Result<(), StoreError> {
        batch.qb.push(";\nCOMMIT");
        let mut pending = Unfinished(Some(writer));
        let Some(w) = pending.0.as_mut() else {
            return Err(StoreError::Corrupt("the writer went missing".into()));
        };
        w.maybe_open = true;
        let result = batch.qb.build().execute(&mut w.conn).await;
        if result.is_err() {
            w.roll_back().await;
        }
        w.maybe_open = false;
        pending.0 = None;
        result.map(drop).map_err(StoreError::from)
    }

    /// End whatever transaction a failed or abandoned batch left open ("no transaction
    /// is active" when it had none, which is fine).
    async fn roll_back(&mut self) {
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            tracing::trace!(error = %e, "rollback after a failed write batch");
        }
    }
}

/// The writer, taken (see [`SqliteStore::writer`]).
pub(crate) type WriterGuard = tokio::sync::OwnedMappedMutexGuard<Option<Writer>, Writer>;

/// The writer of a transaction batch whose outcome was not seen yet: dropped with it
/// (the caller stopped waiting), it rolls back in a task of its own — queued on the
/// connection right after the batch, holding the writer until done. Without a runtime to
/// run it, `maybe_open` stays set and the next use of the writer rolls back first.
struct Unfinished(Option<WriterGuard>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(mut writer) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                writer.roll_back().await;
                writer.maybe_open = false;
            });
        }
    }
}

/// Where a queue row's order comes from.
#[derive(Clone, Copy)]
enum QueueOrder {
    /// The position of the event with this seq of the same session (inserted earlier in
    /// the same batch).
    OfSeq(i64),
    /// A known position (rebuilds read it from the event).
    At(i64),
}

impl Batch {
    fn new() -> Self {
        Self {
            qb: QueryBuilder::new(""),
            empty: true,
        }
    }

    /// Start the next statement.
    fn next(&mut self, sql: &str) -> &mut QueryBuilder<Sqlite> {
        if !self.empty {
            self.qb.push(";\n");
        }
        self.empty = false;
        self.qb.push(sql);
        &mut self.qb
    }

    /// A batch that begins a write transaction; [`Writer::commit`] ends it.
    fn transaction() -> Self {
        Self {
            qb: QueryBuilder::new("BEGIN IMMEDIATE"),
            empty: false,
        }
    }

    async fn run(mut self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        if !self.empty {
            self.qb.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    fn blob(&mut self, blob: &[u8], now: i64) {
        self.next("INSERT INTO blobs (hash, size, content, created_at_ms) VALUES (")
            .push_bind(Sha256Hash::of(blob).to_hex())
            .push(", ")
            .push_bind(to_i64(blob.len() as u64))
            .push(", ")
            .push_bind(blob)
            .push(", ")
            .push_bind(now)
            .push(") ON CONFLICT (hash) DO NOTHING");
    }

    fn events(&mut self, sid: &str, rows: &[crate::common::EventRow]) {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let qb = self.next(
                "INSERT INTO events (session_id, seq, kind, payload, created_at_ms, idempotency_key, prev_hash, hash) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(sid)
                    .push_bind(r.seq)
                    .push_bind(r.kind.as_str())
                    .push_bind(r.payload.as_str())
                    .push_bind(r.created_at_ms)
                    .push_bind(r.idempotency_key.as_deref())
                    .push_bind(r.prev_hash.as_str())
                    .push_bind(r.hash.as_str());
            });
        }
    }

    fn dispatch_key(&mut self, key: &str, sid: &str) {
        self.next("INSERT INTO dispatch_keys (dispatch_key, session_id) VALUES (")
            .push_bind(key)
            .push(", ")
            .push_bind(sid)
            .push(")");
    }

    fn summary(&mut self, s: &SessionSummary) -> Result<(), StoreError> {
        let r = SessionRow::of(s)?;
        let qb = self.next(
            "INSERT INTO sessions (session_id, workflow_id, workflow_hash, status, goal, workspace,
                 branch, run_state, search_text, current_node, current_step, last_seq,
                 created_at_ms, updated_at_ms, summary) ",
        );
        qb.push("VALUES (");
        let mut sep = qb.separated(", ");
        sep.push_bind(r.session_id)
            .push_bind(r.workflow_id)
            .push_bind(r.workflow_hash)
            .push_bind(r.status)
            .push_bind(r.goal)
            .push_bind(r.workspace)
            .push_bind(r.branch)
            .push_bind(r.run_state)
            .push_bind(r.search_text)
            .push_bind(r.current_node)
            .push_bind(r.current_step)
            .push_bind(r.last_seq)
            .push_bind(r.created_at_ms)
            .push_bind(r.updated_at_ms)
            .push_bind(r.summary);
        qb.push(
            ") ON CONFLICT (session_id) DO UPDATE SET
                 status = excluded.status, run_state = excluded.run_state,
                 current_node = excluded.current_node, current_step = excluded.current_step,
                 last_seq = excluded.last_seq, updated_at_ms = excluded.updated_at_ms,
                 summary = excluded.summary",
        );
        Ok(())
    }

    /// Apply one projection change. `order` gives the queue order of a queue row;
    /// `sets_order` says whether the event (re)queued the run.
    fn change(
        &mut self,
        sid: &str,
        change: &ProjectionChange,
        order: QueueOrder,
        sets_order: bool,
    ) -> Result<(), StoreError> {
        match change {
            ProjectionChange::InsertNode(n) => {
                let qb = self.next(
                    "INSERT INTO session_nodes (session_id, node, step_id, step_index, pc, parent,
                         cause, status, attempts, notes, entered_seq, closed_seq, cursor) VALUES (",
                );
                let mut sep = qb.separated(", ");
                sep.push_bind(sid)
                    .push_bind(i64::from(n.node.0))
                    .push_bind(n.step_id.as_str().to_owned())
                    .push_bind(i64::from(n.step.0))
                    .push_bind(i64::from(n.pc.0))
                    .push_bind(n.parent.map(|p| i64::from(p.0)))
                    .push_bind(enum_str(&n.cause)?)
                    .push_bind(n.status.as_str())
                    .push_bind(i64::from(n.attempts))
                    .push_bind(n.notes.clone())
                    .push_bind(to_i64(n.entered_seq.0))
                    .push_bind(n.closed_seq.map(|s| to_i64(s.0)))
                    .push_bind(serde_json::to_string(&n.cursor).map_err(corrupt)?);
                qb.push(")");
            }
            ProjectionChange::CloseNode {
                node,
                status,
                notes,
                closed_seq,
            } => {
                self.next("UPDATE session_nodes SET status = ")
                    .push_bind(status.as_str())
                    .push(", notes = COALESCE(")
                    .push_bind(notes.clone())
                    .push(", notes), closed_seq = ")
                    .push_bind(to_i64(closed_seq.0))
                    .push(" WHERE session_id = ")
                    .push_bind(sid)
                    .push(" AND node = ")
                    .push_bind(i64::from(node.0));
            }
            ProjectionChange::SetNodeAttempts { node, attempts } => {
                self.next("UPDATE session_nodes SET attempts = ")
                    .push_bind(i64::from(*attempts))
                    .push(" WHERE session_id = ")
                    .push_bind(sid)
                    .push(" AND node = ")
                    .push_bind(i64::from(node.0));
            }
            ProjectionChange::UpsertQueue(q) => {
                let qb = self.next(
                    "INSERT INTO run_queue (session_id, state, priority, workspace, trigger_id, agent,
                         queued_at_ms, worker, queue_position) VALUES (",
                );
                let mut sep = qb.separated(", ");
                sep.push_bind(sid)
                    .push_bind(q.state.as_str())
                    .push_bind(i64::from(q.priority))
                    .push_bind(q.workspace.clone())
                    .push_bind(q.trigger.clone())
                    .push_bind(q.agent.clone())
                    .push_bind(q.queued_at_ms)
                    .push_bind(q.worker.clone());
                match order {
                    QueueOrder::At(p) => {
                        qb.push(", ").push_bind(p);
                    }
                    QueueOrder::OfSeq(seq) => {
                        qb.push(", (SELECT position FROM events WHERE session_id = ")
                            .push_bind(sid)
                            .push(" AND seq = ")
                            .push_bind(seq)
                            .push(")");
                    }
                }
                qb.push(
                    ") ON CONFLICT (session_id) DO UPDATE SET state = excluded.state,
                         priority = excluded.priority, workspace = excluded.workspace,
                         trigger_id = excluded.trigger_id, agent = excluded.agent,
                         queued_at_ms = excluded.queued_at_ms, worker = excluded.worker,
                         queue_position = CASE WHEN ",
                )
                .push_bind(sets_order)
                .push(" THEN excluded.queue_position ELSE run_queue.queue_position END");
            }
            ProjectionChange::RemoveQueue => {
                self.next("DELETE FROM run_queue WHERE session_id = ")
                    .push_bind(sid);
            }
            ProjectionChange::RejectAttempt {
                node,
                attempt,
                response,
            } => {
                self.next("UPDATE session_attempts SET outcome = 'rejected', response = ")
                    .push_bind(response.to_hex())
                    .push(" WHERE session_id = ")
                    .push_bind(sid)
                    .push(" AND node = ")
                    .push_bind(i64::from(node.0))
                    .push(" AND attempt = ")
                    .push_bind(i64::from(attempt.0));
            }
            ProjectionChange::UpsertAttempt(a) => {
                let qb = self.next(
                    "INSERT INTO session_attempts (session_id, node, attempt, outcome, output_hash, response, seq) VALUES (",
                );
                let mut sep = qb.separated(", ");
                sep.push_bind(sid)
                    .push_bind(i64::from(a.node.0))
                    .push_bind(i64::from(a.attempt.0))
                    .push_bind(a.outcome.as_str())
                    .push_bind(a.output_hash.to_hex())
                    .push_bind(a.response.to_hex())
                    .push_bind(to_i64(a.seq.0));
                qb.push(
                    ") ON CONFLICT (session_id, node, attempt) DO UPDATE SET
                         outcome = excluded.outcome, output_hash = excluded.output_hash,
                         response = excluded.response, seq = excluded.seq",
                );
            }
        }
        Ok(())
    }
}

fn row_to_raw(row: &SqliteRow) -> Result<RawEvent, StoreError> {
    RawColumns {
        position: row.try_get("position")?,
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        created_at_ms: row.try_get("created_at_ms")?,
        idempotency_key: row.try_get("idempotency_key")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    }
    .into_raw()
}

fn row_to_event(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    raw_to_stored(&row_to_raw(row)?)
}

fn row_to_node(row: &SqliteRow) -> Result<NodeRecord, StoreError> {
    let small = |name: &str| -> Result<u32, StoreError> {
        u32::try_from(row.try_get::<i64, _>(name)?).map_err(corrupt)
    };
    Ok(NodeRecord {
        node: NodeId(small("node")?),
        step_id: parse(&row.try_get::<String, _>("step_id")?, "step id")?,
        step: worktrain_core::compile::StepIndex(small("step_index")?),
        pc: worktrain_core::compile::Pc(small("pc")?),
        parent: row
            .try_get::<Option<i64>, _>("parent")?
            .map(|p| u32::try_from(p).map(NodeId).map_err(corrupt))
            .transpose()?,
        cause: enum_from(&row.try_get::<String, _>("cause")?)?,
        status: enum_from::<NodeStatus>(&row.try_get::<String, _>("status")?)?,
        attempts: u16::try_from(row.try_get::<i64, _>("attempts")?).map_err(corrupt)?,
        notes: row.try_get("notes")?,
        entered_seq: Seq(to_u64(row.try_get("entered_seq")?)),
        closed_seq: row
            .try_get::<Option<i64>, _>("closed_seq")?
            .map(|s| Seq(to_u64(s))),
        cursor: serde_json::from_str(&row.try_get::<String, _>("cursor")?)
            .map_err(|e| corrupt(format!("node cursor: {e}")))?,
    })
}

fn row_to_attempt(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        node: NodeId(u32::try_from(row.try_get::<i64, _>("node")?).map_err(corrupt)?),
        attempt: Attempt(u16::try_from(row.try_get::<i64, _>("attempt")?).map_err(corrupt)?),
        outcome: enum_from::<AttemptOutcome>(&row.try_get::<String, _>("outcome")?)?,
        output_hash: parse(&row.try_get::<String, _>("output_hash")?, "output hash")?,
        response: parse(&row.try_get::<String, _>("response")?, "response hash")?,
        seq: Seq(to_u64(row.try_get("seq")?)),
    })
}

fn row_to_queue(r: &SqliteRow) -> Result<QueueRow, StoreError> {
    Ok(QueueRow {
        session_id: parse(&r.try_get::<String, _>("session_id")?, "session id")?,
        state: RunState::parse(&r.try_get::<String, _>("state")?)
            .ok_or_else(|| corrupt("unknown run state in run_queue"))?,
        priority: i32::try_from(r.try_get::<i64, _>("priority")?).map_err(corrupt)?,
        workspace: r.try_get("workspace")?,
        trigger: r.try_get("trigger_id")?,
        agent: r.try_get("agent")?,
        queued_at_ms: r.try_get("queued_at_ms")?,
        worker: r.try_get("worker")?,
    })
}

const EVENT_COLUMNS: &str =
    "position, session_id, seq, kind, payload, created_at_ms, idempotency_key, prev_hash, hash";

/// Claim order of the run queue.
const QUEUE_ORDER: &str = "priority DESC, queued_at_ms, queue_position, session_id";

#[async_trait]
impl EventStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.append_with(None, request).await
    }

    async fn append_after(
        &self,
        known: &SessionSummary,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let known = (known.session_id == request.session_id
            && known.last_seq == request.expected_seq)
            .then_some(known);
        self.append_with(known, request).await
    }

    fn recent_summary(&self, id: SessionId) -> Option<std::sync::Arc<SessionSummary>> {
        self.recent.get(id)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionSummary>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_summary(&mut conn, id).await
    }

    async fn session_counts(&self) -> Result<Vec<(Option<RunState>, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_state, COUNT(*) AS n FROM sessions GROUP BY run_state ORDER BY run_state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state = crate::common::run_state_column(r.try_get("run_state")?)?;
                Ok((state, to_u64(r.try_get::<i64, _>("n")?)))
            })
            .collect()
    }

    async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        let queue_order = matches!(
            filter.run,
            Some(RunFilter::State(
                RunState::Queued | RunState::Running | RunState::Interrupted
            ))
        );
        let mut qb: QueryBuilder<Sqlite> = if queue_order {
            QueryBuilder::new(
                "SELECT s.summary FROM sessions s JOIN run_queue q ON q.session_id = s.session_id WHERE 1 = 1",
            )
        } else {
            QueryBuilder::new("SELECT s.summary FROM sessions s WHERE 1 = 1")
        };
        if let Some(status) = filter.status {
            qb.push(" AND s.status = ").push_bind(status.as_str());
        }
        if let Some(wf) = &filter.workflow {
            qb.push(" AND s.workflow_id = ")
                .push_bind(wf.as_str().to_owned());
        }
        if let Some(ws) = &filter.workspace {
            let (exact, prefix) = workspace_prefix(ws);
            qb.push(" AND (s.workspace = ")
                .push_bind(exact)
                .push(" OR substr(s.workspace, 1, length(")
                .push_bind(prefix.clone())
                .push(")) = ")
                .push_bind(prefix)
                .push(")");
        }
        if let Some(text) = &filter.text {
            match search_needle(text) {
                Some(needle) => {
                    qb.push(" AND instr(s.search_text, ")
                        .push_bind(needle)
                        .push(") > 0");
                }
                None => return Ok(Vec::new()),
            }
        }
        if let Some(trigger) = &filter.trigger {
            qb.push(
                " AND s.session_id IN (SELECT d.session_id FROM trigger_decisions d \
                 WHERE d.decision = 'dispatched' AND d.trigger_id = ",
            )
            .push_bind(trigger.clone())
            .push(")");
        }
        if let Some(c) = filter.after.filter(|_| !queue_order) {
            qb.push(" AND (s.updated_at_ms < ")
                .push_bind(c.updated_at_ms)
                .push(" OR (s.updated_at_ms = ")
                .push_bind(c.updated_at_ms)
                .push(" AND s.session_id < ")
                .push_bind(c.session_id.to_string())
                .push("))");
        }
        match filter.run {
            None => {}
            Some(RunFilter::NoRun) => {
                qb.push(" AND s.run_state IS NULL");
            }
            Some(RunFilter::State(state)) if queue_order => {
                qb.push(" AND q.state = ").push_bind(state.as_str());
            }
            Some(RunFilter::State(state)) => {
                qb.push(" AND s.run_state = ").push_bind(state.as_str());
            }
        }
        if queue_order {
            qb.push(
                " ORDER BY q.priority DESC, q.queued_at_ms, q.queue_position, q.session_id LIMIT ",
            );
        } else {
            qb.push(" ORDER BY s.updated_at_ms DESC, s.session_id DESC LIMIT ");
        }
        qb.push_bind(i64::from(filter.limit.unwrap_or(50).clamp(1, 1000)))
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset.unwrap_or(0)));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get(0)?;
                serde_json::from_str(&json).map_err(corrupt)
            })
            .collect()
    }

    async fn node(&self, id: SessionId, node: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        sqlx::query("SELECT * FROM session_nodes WHERE session_id = ? AND node = ?")
            .bind(id.to_string())
            .bind(i64::from(node.0))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(row_to_node)
            .transpose()
    }

    async fn nodes(&self, id: SessionId) -> Result<Vec<NodeRecord>, StoreError> {
        sqlx::query("SELECT * FROM session_nodes WHERE session_id = ? ORDER BY node")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_to_node)
            .collect()
    }

    async fn attempt(
        &self,
        id: SessionId,
        node: NodeId,
        attempt: Attempt,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM session_attempts WHERE session_id = ? AND node = ? AND attempt = ?",
        )
        .bind(id.to_string())
        .bind(i64::from(node.0))
        .bind(i64::from(attempt.0))
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(row_to_attempt)
        .transpose()
    }

    async fn session_and_attempt(
        &self,
        id: SessionId,
        node: NodeId,
        attempt: Attempt,
    ) -> Result<(Option<SessionSummary>, Option<AttemptRecord>), StoreError> {
        // One statement: an advance reads both before it decides.
        let row = sqlx::query(
            "SELECT s.summary, a.node, a.attempt, a.outcome, a.output_hash, a.response, a.seq
             FROM sessions s LEFT JOIN session_attempts a
               ON a.session_id = s.session_id AND a.node = ? AND a.attempt = ?
             WHERE s.session_id = ?",
        )
        .bind(i64::from(node.0))
        .bind(i64::from(attempt.0))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok((None, None));
        };
        let summary: SessionSummary =
            serde_json::from_str(&row.try_get::<String, _>("summary")?).map_err(corrupt)?;
        let record = match row.try_get::<Option<i64>, _>("node")? {
            Some(_) => Some(row_to_attempt(&row)?),
            None => None,
        };
        self.recent.put(&summary);
        Ok((Some(summary), record))
    }

    async fn events(
        &self,
        id: SessionId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(to_i64(after.0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_to_event)
            .collect()
    }

    async fn events_since(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        // One writer at a time (the database lock), and positions grow with each insert:
        // commit order is position order.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_to_event)
            .collect()
    }

    async fn put_blob(&self, bytes: &[u8]) -> Result<Sha256Hash, StoreError> {
        if bytes.len() > self.blob_limit {
            return Err(StoreError::BlobTooLarge {
                size: bytes.len(),
                limit: self.blob_limit,
            });
        }
        let hash = Sha256Hash::of(bytes);
        sqlx::query(
            "INSERT INTO blobs (hash, size, content, created_at_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.to_hex())
        .bind(to_i64(bytes.len() as u64))
        .bind(bytes)
        .bind(now_ms())
        .execute(&mut self.writer().await?.conn)
        .await?;
        Ok(hash)
    }

    async fn blob(&self, hash: Sha256Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT content FROM blobs WHERE hash = ?")
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some((bytes,)) if Sha256Hash::of(&bytes) == hash => Ok(Some(bytes)),
            Some(_) => Err(corrupt(format!("blob {hash} does not match its hash"))),
            None => Ok(None),
        }
    }

    async fn verify(&self, id: SessionId) -> Result<Option<ChainReport>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut check = ChainCheck::new(id);
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT position, seq, kind, payload, created_at_ms, prev_hash, hash
                 FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT 1000",
            )
            .bind(id.to_string())
            .bind(after)
            .fetch_all(&mut *conn)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                after = seq;
                if let Some(report) = check.check_columns(
                    to_u64(row.try_get("position")?),
                    to_u64(seq),
                    &row.try_get::<String, _>("kind")?,
                    &row.try_get::<String, _>("payload")?,
                    row.try_get("created_at_ms")?,
                    &row.try_get::<String, _>("prev_hash")?,
                    &row.try_get::<String, _>("hash")?,
                ) {
                    return Ok(Some(report));
                }
            }
        }
        let summary = load_summary(&mut conn, id).await?;
        Ok(check.finish(summary))
    }

    async fn rebuild_projections(&self) -> Result<RebuildReport, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        for table in [
            "session_attempts",
            "session_nodes",
            "sessions",
            "run_queue",
            "dispatch_keys",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
        }
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT session_id FROM events ORDER BY session_id")
                .fetch_all(&mut *tx)
                .await?;
        let mut report = RebuildReport {
            sessions: 0,
            events: 0,
        };
        for (sid,) in ids {
            let mut summary: Option<SessionSummary> = None;
            let mut after = 0i64;
            loop {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT 1000"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&sid)
                    .bind(after)
                    .fetch_all(&mut *tx)
                    .await?;
                if rows.is_empty() {
                    break;
                }
                for row in &rows {
                    let event = row_to_event(row)?;
                    after = to_i64(event.seq.0);
                    let (next, changes) = apply(summary.take(), &event)?;
                    summary = Some(next);
                    let mut batch = Batch::new();
                    if let worktrain_core::event::EventBody::RunQueued {
                        dispatch_key: Some(key),
                        ..
                    } = &event.body
                    {
                        batch.dispatch_key(key, &sid);
                    }
                    let order = matches!(
                        event.body,
                        worktrain_core::event::EventBody::RunQueued { .. }
                            | worktrain_core::event::EventBody::RunRequeued { .. }
                    );
                    for change in &changes {
                        batch.change(
                            &sid,
                            change,
                            QueueOrder::At(to_i64(event.position)),
                            order,
                        )?;
                    }
                    batch.run(&mut tx).await?;
                    report.events += 1;
                }
            }
            if let Some(s) = summary {
                let mut batch = Batch::new();
                batch.summary(&s)?;
                batch.run(&mut tx).await?;
                report.sessions += 1;
            }
        }
        tx.commit().await?;
        // Summaries held from before were folded by another build, perhaps differently.
        self.recent.clear();
        Ok(report)
    }

    async fn dump_projections(&self) -> Result<ProjectionDump, StoreError> {
        let sessions = sqlx::query(
            "SELECT session_id, workflow_id, workflow_hash, status, goal, workspace, branch,
                    run_state, search_text, current_node, current_step, last_seq,
                    created_at_ms, updated_at_ms, summary
             FROM sessions ORDER BY session_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| -> Result<serde_json::Value, StoreError> {
            let summary: String = r.try_get("summary")?;
            Ok(json!({
                "session_id": r.try_get::<String, _>("session_id")?,
                "workflow_id": r.try_get::<String, _>("workflow_id")?,
                "workflow_hash": r.try_get::<String, _>("workflow_hash")?,
                "status": r.try_get::<String, _>("status")?,
                "goal": r.try_get::<String, _>("goal")?,
                "workspace": r.try_get::<Option<String>, _>("workspace")?,
                "branch": r.try_get::<Option<String>, _>("branch")?,
                "run_state": r.try_get::<Option<String>, _>("run_state")?,
                "search_text": r.try_get::<Option<String>, _>("search_text")?,
                "current_node": r.try_get::<Option<i64>, _>("current_node")?,
                "current_step": r.try_get::<Option<String>, _>("current_step")?,
                "last_seq": r.try_get::<i64, _>("last_seq")?,
                "created_at_ms": r.try_get::<i64, _>("created_at_ms")?,
                "updated_at_ms": r.try_get::<i64, _>("updated_at_ms")?,
                "summary": serde_json::from_str::<serde_json::Value>(&summary).map_err(corrupt)?,
            }))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let nodes = sqlx::query("SELECT * FROM session_nodes ORDER BY session_id, node")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let sid: String = r.try_get("session_id")?;
                let node = row_to_node(r)?;
                Ok(json!({"session_id": sid, "node": serde_json::to_value(node).map_err(corrupt)?}))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let attempts = sqlx::query(
            "SELECT * FROM session_attempts ORDER BY session_id, node, attempt",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let sid: String = r.try_get("session_id")?;
            let a = row_to_attempt(r)?;
            Ok(json!({"session_id": sid, "attempt": serde_json::to_value(a).map_err(corrupt)?}))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let queue = self
            .queue()
            .await?
            .iter()
            .map(|q| serde_json::to_value(q).map_err(corrupt))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let dispatch_keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT dispatch_key, session_id FROM dispatch_keys ORDER BY dispatch_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ProjectionDump {
            sessions,
            nodes,
            attempts,
            queue,
            dispatch_keys: dispatch_keys
                .into_iter()
                .map(|(k, s)| json!({"dispatch_key": k, "session_id": s}))
                .collect(),
        })
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.applied_version().await
    }

    async fn queue(&self) -> Result<Vec<QueueRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT session_id, state, priority, workspace, trigger_id, agent, queued_at_ms, worker
             FROM run_queue ORDER BY {QUEUE_ORDER}"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row_to_queue)
        .collect()
    }

    async fn renew_lease(
        &self,
        id: SessionId,
        worker: &str,
        ttl: Duration,
    ) -> Result<LeaseRenewal, StoreError> {
        let until = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let renewed = sqlx::query(
            "UPDATE run_leases SET expires_at_ms = ? WHERE session_id = ? AND worker = ?",
        )
        .bind(until)
        .bind(id.to_string())
        .bind(worker)
        .execute(&mut self.writer().await?.conn)
        .await?
        .rows_affected();
        if renewed == 1 {
            return Ok(LeaseRenewal::Held {
                expires_at_ms: until,
            });
        }
        let holder: Option<(String,)> =
            sqlx::query_as("SELECT worker FROM run_leases WHERE session_id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(LeaseRenewal::Lost {
            holder: holder.map(|(w,)| w),
        })
    }

    async fn release_lease(&self, id: SessionId, worker: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM run_leases WHERE session_id = ? AND worker = ?")
            .bind(id.to_string())
            .bind(worker)
            .execute(&mut self.writer().await?.conn)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn claim_run(&self, claim: Claim<'_>) -> Result<Option<SessionSummary>, StoreError> {
        // The write lock serializes claims (and everything else): caps counted here hold.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut running: Vec<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT workspace, trigger_id FROM run_queue WHERE state = 'running'")
                .fetch_all(&mut *tx)
                .await?;
        if running.len() >= claim.caps.total {
            tx.rollback().await?;
            return Ok(None);
        }
        let candidates: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT session_id, workspace, trigger_id FROM run_queue WHERE state = 'queued'
                 ORDER BY {QUEUE_ORDER} LIMIT 500"
            )))
            .fetch_all(&mut *tx)
            .await?;
        for (sid, workspace, trigger) in candidates {
            if !crate::common::fits_caps(claim.caps, &running, &workspace, &trigger) {
                continue;
            }
            let id: SessionId = parse(&sid, "session id")?;
            let Some(summary) = load_summary(&mut tx, id).await? else {
                continue;
            };
            let bodies = (claim.start)(&summary);
            if bodies.is_empty() {
                continue;
            }
            let prepared = append_decided(&mut tx, summary, bodies).await?;
            let after = prepared.summary;
            let started = after.run.as_ref().is_some_and(|r| {
                r.state == RunState::Running && r.worker.as_deref() == Some(claim.worker)
            });
            if started {
                let until = now_ms()
                    .saturating_add(i64::try_from(claim.lease_ttl.as_millis()).unwrap_or(i64::MAX));
                sqlx::query(
                    "INSERT INTO run_leases (session_id, worker, expires_at_ms) VALUES (?, ?, ?)
                     ON CONFLICT (session_id) DO UPDATE SET worker = excluded.worker,
                         expires_at_ms = excluded.expires_at_ms",
                )
                .bind(&sid)
                .bind(claim.worker)
                .bind(until)
                .execute(&mut *tx)
                .await?;
                running.push((workspace, trigger));
            }
            tx.commit().await?;
            self.committed(&after);
            return Ok(Some(after));
        }
        tx.rollback().await?;
        Ok(None)
    }

    async fn recover_runs(
        &self,
        recovery: Recovery<'_>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let candidates: Vec<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT q.session_id, q.state, l.worker, l.expires_at_ms
             FROM run_queue q LEFT JOIN run_leases l ON l.session_id = q.session_id
             WHERE q.state IN ('running', 'interrupted') ORDER BY q.session_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let gone = |worker: &Option<String>, expires: Option<i64>, now: i64| match worker {
            None => true,
            Some(w) => {
                expires.is_none_or(|t| t <= now)
                    || recovery.dead_workers.is_some_and(|p| w.starts_with(p))
            }
        };
        let mut out = Vec::new();
        for (sid, state, worker, expires) in candidates {
            if state == "running" && !gone(&worker, expires, now_ms()) {
                continue;
            }
            let id: SessionId = parse(&sid, "session id")?;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            // Re-check under the write lock: the holder may have renewed meanwhile.
            let lease: Option<(String, i64)> =
                sqlx::query_as("SELECT worker, expires_at_ms FROM run_leases WHERE session_id = ?")
                    .bind(&sid)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (w, e) = match lease {
                Some((w, e)) => (Some(w), Some(e)),
                None => (None, None),
            };
            let Some(summary) = load_summary(&mut tx, id).await? else {
                tx.rollback().await?;
                continue;
            };
            let running = summary
                .run
                .as_ref()
                .is_some_and(|r| r.state == RunState::Running);
            if running && !gone(&w, e, now_ms()) {
                tx.rollback().await?;
                continue;
            }
            let bodies = (recovery.decide)(&summary);
            if bodies.is_empty() {
                tx.rollback().await?;
                continue;
            }
            sqlx::query("DELETE FROM run_leases WHERE session_id = ?")
                .bind(&sid)
                .execute(&mut *tx)
                .await?;
            let prepared = append_decided(&mut tx, summary, bodies).await?;
            tx.commit().await?;
            self.committed(&prepared.summary);
            out.push(prepared.summary);
        }
        Ok(out)
    }

    async fn try_lead(&self, _role: &str) -> Result<Option<Box<dyn LeaderLock>>, StoreError> {
        // One daemon owns an embedded store (its home's pid lock): it always leads.
        Ok(Some(Box::new(SoleLeader)))
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        sqlx::query("SELECT session_id, worker, expires_at_ms FROM run_leases ORDER BY session_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Lease {
                    session_id: parse(&r.try_get::<String, _>("session_id")?, "session id")?,
                    worker: r.try_get("worker")?,
                    expires_at_ms: r.try_get("expires_at_ms")?,
                })
            })
            .collect()
    }

    fn insights(&self) -> Option<&dyn crate::InsightsStore> {
        Some(self)
    }

    async fn session_by_dispatch_key(&self, key: &str) -> Result<Option<SessionId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        dispatch_owner(&mut conn, key).await
    }

    async fn session_ids(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT session_id FROM events WHERE session_id > ? ORDER BY session_id LIMIT ?",
        )
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|(s,)| parse(s, "session id")).collect()
    }

    async fn raw_events(
        &self,
        id: SessionId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(to_i64(after.0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_to_raw)
            .collect()
    }

    async fn import_session(&self, events: Vec<RawEvent>) -> Result<(), StoreError> {
        let prepared = prepare_import(events)?;
        let session_id = prepared.summary.session_id;
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        if let Some(existing) = load_summary(&mut tx, session_id).await? {
            tx.rollback().await?;
            return Err(StoreError::SeqConflict {
                session: session_id,
                expected: Seq(0),
                actual: existing.last_seq,
            });
        }
        Self::write_prepared(&mut tx, &session_id.to_string(), &prepared, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blob_hashes(
        &self,
        after: Option<Sha256Hash>,
        limit: u32,
    ) -> Result<Vec<Sha256Hash>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT hash FROM blobs WHERE hash > ? ORDER BY hash LIMIT ?")
                .bind(after.map(|h| h.to_hex()).unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|(h,)| parse(h, "blob hash")).collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Appended> {
        self.appended.subscribe()
    }

    async fn workflow_samples(
        &self,
        workflow: &worktrain_core::ids::WorkflowId,
        latest: u32,
    ) -> Result<crate::stats::WorkflowSamples, StoreError> {
        crate::stats::workflow_samples!(
            &self.pool,
            workflow,
            latest,
            crate::stats::sqlite_json_int,
            "?1",
            "?2"
        )
    }

    async fn workflow_counts(&self) -> Result<Vec<crate::stats::WorkflowCounts>, StoreError> {
        sqlx::query(crate::stats::COUNTS_SQL)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(crate::stats::WorkflowCounts {
                    workflow_id: r.try_get("workflow_id")?,
                    sessions: to_u64(r.try_get("n")?),
                    complete: to_u64(r.try_get("complete")?),
                    failed: to_u64(r.try_get("failed")?),
                })
            })
            .collect()
    }

    fn quiet_recheck(&self) -> Duration {
        // Other processes (the CLI, external agents' MCP servers) append unannounced.
        Duration::from_secs(1)
    }

    async fn close(&self) {
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = sqlx::Connection::close(writer.conn).await;
        }
        self.pool.close().await;
    }
}

mod trigger_impl {
    //! [`crate::triggers::TriggerStore`] for SQLite.

    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::sqlite::SqliteRow;

    use super::{SqliteStore, corrupt, now_ms};
    use crate::StoreError;
    use crate::triggers::{
        Decision, DecisionFilter, Delivery, DeliveryInsert, NewDecision, NewDelivery, PollCursor,
        ScheduleState, SourceItem, SourceState, TriggerStore,
    };

    async fn insert_decision(
        conn: &mut sqlx::SqliteConnection,
        d: &NewDecision,
        at: i64,
    ) -> Result<i64, StoreError> {
        let detail = serde_json::to_string(&d.detail).map_err(corrupt)?;
        let r = sqlx::query(
            "INSERT INTO trigger_decisions (trigger_id, created_at_ms, decision, reason, event,
                 delivery_id, source, session_id, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&d.trigger_id)
        .bind(at)
        .bind(&d.decision)
        .bind(&d.reason)
        .bind(d.event.as_deref())
        .bind(d.delivery_id)
        .bind(d.source.as_deref())
        .bind(d.session_id.as_deref())
        .bind(detail)
        .fetch_one(&mut *conn)
        .await?;
        Ok(r.try_get::<i64, _>("id")?)
    }

    fn delivery_row(r: &SqliteRow) -> Result<Delivery, StoreError> {
        let headers: String = r.try_get("headers")?;
        Ok(Delivery {
            id: r.try_get("id")?,
            trigger_id: r.try_get("trigger_id")?,
            delivery_key: r.try_get("delivery_key")?,
            received_at_ms: r.try_get("received_at_ms")?,
            headers: serde_json::from_str(&headers).map_err(corrupt)?,
            body: r.try_get("body")?,
            status: r.try_get("status")?,
            decided_at_ms: r.try_get("decided_at_ms")?,
        })
    }

    fn decision_row(r: &SqliteRow) -> Result<Decision, StoreError> {
        let detail: String = r.try_get("detail")?;
        Ok(Decision {
            id: r.try_get("id")?,
            created_at_ms: r.try_get("created_at_ms")?,
            body: NewDecision {
                trigger_id: r.try_get("trigger_id")?,
                decision: r.try_get("decision")?,
                reason: r.try_get("reason")?,
                event: r.try_get("event")?,
                delivery_id: r.try_get("delivery_id")?,
                source: r.try_get("source")?,
                session_id: r.try_get("session_id")?,
                detail: serde_json::from_str(&detail).map_err(corrupt)?,
            },
        })
    }

    fn source_row(r: &SqliteRow) -> Result<SourceItem, StoreError> {
        let state: String = r.try_get("state")?;
        let request: String = r.try_get("request")?;
        let attempts: i64 = r.try_get("attempts")?;
        Ok(SourceItem {
            source: r.try_get("source")?,
            trigger_id: r.try_get("trigger_id")?,
            session_id: r.try_get("session_id")?,
            state: SourceState::parse(&state)
                .ok_or_else(|| corrupt(format!("unknown source state `{state}`")))?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_attempt_at_ms: r.try_get("next_attempt_at_ms")?,
            request: serde_json::from_str(&request).map_err(corrupt)?,
            updated_at_ms: r.try_get("updated_at_ms")?,
        })
    }

    #[async_trait]
    impl TriggerStore for SqliteStore {
        async fn insert_deliveries(
            &self,
            batch: Vec<NewDelivery>,
        ) -> Result<Vec<DeliveryInsert>, StoreError> {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let mut writer = self.writer().await?;
            let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
            let conn = &mut *tx;
            let result: Result<Vec<DeliveryInsert>, StoreError> = async {
                let now = now_ms();
                let mut out = Vec::with_capacity(batch.len());
                for d in &batch {
                    let headers = serde_json::to_string(&d.headers).map_err(corrupt)?;
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_deliveries (trigger_id, delivery_key, received_at_ms,
                             headers, body, status)
                         VALUES (?, ?, ?, ?, ?, 'pending')
                         ON CONFLICT (trigger_id, delivery_key) DO NOTHING RETURNING id",
                    )
                    .bind(&d.trigger_id)
                    .bind(&d.delivery_key)
                    .bind(now)
                    .bind(headers)
                    .bind(&d.body)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some(row) = inserted {
                        let id: i64 = row.try_get("id")?;
                        let mut dec = d.decision.clone();
                        dec.delivery_id = Some(id);
                        insert_decision(&mut *conn, &dec, now).await?;
                        out.push(DeliveryInsert::Stored { id });
                    } else {
                        let (id,): (i64,) = sqlx::query_as(
                            "SELECT id FROM webhook_deliveries WHERE trigger_id = ? AND delivery_key = ?",
                        )
                        .bind(&d.trigger_id)
                        .bind(&d.delivery_key)
                        .fetch_one(&mut *conn)
                        .await?;
                        let mut dec = d.decision.clone();
                        dec.decision = "duplicate".into();
                        dec.reason = format!(
                            "delivery `{}` was received before (delivery {id}); a redelivery changes nothing",
                            d.delivery_key
                        );
                        dec.delivery_id = Some(id);
                        insert_decision(&mut *conn, &dec, now).await?;
                        out.push(DeliveryInsert::Duplicate { id });
                    }
                }
                Ok(out)
            }
            .await;
            match result {
                Ok(out) => {
                    tx.commit().await?;
                    Ok(out)
                }
                Err(e) => {
                    tx.rollback().await?;
                    Err(e)
                }
            }
        }

        async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
            let rows = sqlx::query(
                "SELECT * FROM webhook_deliveries WHERE status = 'pending' ORDER BY id LIMIT ?",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(delivery_row).collect()
        }

        async fn delivery(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
            let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(delivery_row).transpose()
        }

        async fn finish_delivery(
            &self,
            id: i64,
            decisions: Vec<NewDecision>,
        ) -> Result<(), StoreError> {
            let mut writer = self.writer().await?;
            let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
            let now = now_ms();
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'done', decided_at_ms = ? WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            for d in &decisions {
                insert_decision(&mut tx, d, now).await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn record_decision(&self, decision: NewDecision) -> Result<i64, StoreError> {
            let mut writer = self.writer().await?;
            insert_decision(&mut writer.conn, &decision, now_ms()).await
        }

        async fn decisions(&self, f: &DecisionFilter) -> Result<Vec<Decision>, StoreError> {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT * FROM trigger_decisions WHERE 1 = 1",
            );
            if let Some(t) = &f.trigger_id {
                q.push(" AND trigger_id = ").push_bind(t.clone());
            }
            if let Some(s) = &f.source {
                q.push(" AND source = ").push_bind(s.clone());
            }
            if let Some(d) = &f.decision {
                q.push(" AND decision = ").push_bind(d.clone());
            }
            if let Some(b) = f.before {
                q.push(" AND id < ").push_bind(b);
            }
            let limit = f.limit.unwrap_or(50).clamp(1, 1000);
            q.push(" ORDER BY id DESC LIMIT ")
                .push_bind(i64::from(limit));
            let rows = q.build().fetch_all(&self.pool).await?;
            rows.iter().map(decision_row).collect()
        }

        async fn decision_counts(
            &self,
            trigger_id: &str,
        ) -> Result<Vec<(String, u64)>, StoreError> {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT decision, COUNT(*) FROM trigger_decisions WHERE trigger_id = ?
                 GROUP BY decision ORDER BY decision",
            )
            .bind(trigger_id)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
                .collect())
        }

        async fn source_item(&self, source: &str) -> Result<Option<SourceItem>, StoreError> {
            let row = sqlx::query("SELECT * FROM trigger_sources WHERE source = ?")
                .bind(source)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(source_row).transpose()
        }

        async fn put_source_item(&self, item: &SourceItem) -> Result<(), StoreError> {
            let request = serde_json::to_string(&item.request).map_err(corrupt)?;
            sqlx::query(
                "INSERT INTO trigger_sources (source, trigger_id, session_id, state, attempts,
                     next_attempt_at_ms, request, updated_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (source) DO UPDATE SET trigger_id = excluded.trigger_id,
                     session_id = excluded.session_id, state = excluded.state,
                     attempts = excluded.attempts, next_attempt_at_ms = excluded.next_attempt_at_ms,
                     request = excluded.request, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&item.source)
            .bind(&item.trigger_id)
            .bind(item.session_id.as_deref())
            .bind(item.state.as_str())
            .bind(i64::from(item.attempts))
            .bind(item.next_attempt_at_ms)
            .bind(request)
            .bind(item.updated_at_ms)
            .execute(&mut self.writer().await?.conn)
            .await?;
            Ok(())
        }

        async fn source_items(&self, state: SourceState) -> Result<Vec<SourceItem>, StoreError> {
            let rows = sqlx::query(
                "SELECT * FROM trigger_sources WHERE state = ? ORDER BY updated_at_ms, source",
            )
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(source_row).collect()
        }

        async fn poll_cursor(&self, trigger_id: &str) -> Result<Option<PollCursor>, StoreError> {
            let row = sqlx::query("SELECT * FROM poll_cursors WHERE trigger_id = ?")
                .bind(trigger_id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| {
                let baseline: i64 = r.try_get("baseline_done")?;
                Ok(PollCursor {
                    trigger_id: r.try_get("trigger_id")?,
                    etag: r.try_get("etag")?,
                    baseline_done: baseline != 0,
                    last_polled_at_ms: r.try_get("last_polled_at_ms")?,
                    next_poll_at_ms: r.try_get("next_poll_at_ms")?,
                    last_error: r.try_get("last_error")?,
                })
            })
            .transpose()
        }

        async fn put_poll_cursor(&self, c: &PollCursor) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO poll_cursors (trigger_id, etag, baseline_done, last_polled_at_ms,
                     next_poll_at_ms, last_error)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (trigger_id) DO UPDATE SET etag = excluded.etag,
                     baseline_done = excluded.baseline_done,
                     last_polled_at_ms = excluded.last_polled_at_ms,
                     next_poll_at_ms = excluded.next_poll_at_ms, last_error = excluded.last_error",
            )
            .bind(&c.trigger_id)
            .bind(c.etag.as_deref())
            .bind(i64::from(c.baseline_done))
            .bind(c.last_polled_at_ms)
            .bind(c.next_poll_at_ms)
            .bind(c.last_error.as_deref())
            .execute(&mut self.writer().await?.conn)
            .await?;
            Ok(())
        }

        async fn poll_seen(
            &self,
            trigger_id: &str,
            keys: &[String],
        ) -> Result<Vec<(String, String)>, StoreError> {
            let mut out = Vec::new();
            for chunk in keys.chunks(400) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "SELECT item_key, updated_at FROM poll_items WHERE trigger_id = ",
                );
                q.push_bind(trigger_id.to_owned())
                    .push(" AND item_key IN (");
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(k.clone());
                }
                q.push(")");
                let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&self.pool).await?;
                out.extend(rows);
            }
            Ok(out)
        }

        async fn mark_poll_seen(
            &self,
            trigger_id: &str,
            items: &[(String, String)],
        ) -> Result<(), StoreError> {
            let mut writer = self.writer().await?;
            let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
            let now = now_ms();
            for (k, updated) in items {
                sqlx::query(
                    "INSERT INTO poll_items (trigger_id, item_key, updated_at, seen_at_ms)
                     VALUES (?, ?, ?, ?)
                     ON CONFLICT (trigger_id, item_key) DO UPDATE SET
                         updated_at = excluded.updated_at, seen_at_ms = excluded.seen_at_ms",
                )
                .bind(trigger_id)
                .bind(k)
                .bind(updated)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn schedule_state(
            &self,
            trigger_id: &str,
        ) -> Result<Option<ScheduleState>, StoreError> {
            let row = sqlx::query("SELECT * FROM schedule_state WHERE trigger_id = ?")
                .bind(trigger_id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| {
                Ok(ScheduleState {
                    trigger_id: r.try_get("trigger_id")?,
                    cron: r.try_get("cron")?,
                    last_scheduled_at_ms: r.try_get("last_scheduled_at_ms")?,
                    last_fired_at_ms: r.try_get("last_fired_at_ms")?,
                    last_session_id: r.try_get("last_session_id")?,
                })
            })
            .transpose()
        }

        async fn put_schedule_state(&self, s: &ScheduleState) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO schedule_state (trigger_id, cron, last_scheduled_at_ms,
                     last_fired_at_ms, last_session_id)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (trigger_id) DO UPDATE SET cron = excluded.cron,
                     last_scheduled_at_ms = excluded.last_scheduled_at_ms,
                     last_fired_at_ms = excluded.last_fired_at_ms,
                     last_session_id = excluded.last_session_id",
            )
            .bind(&s.trigger_id)
            .bind(&s.cron)
            .bind(s.last_scheduled_at_ms)
            .bind(s.last_fired_at_ms)
            .bind(s.last_session_id.as_deref())
            .execute(&mut self.writer().await?.conn)
            .await?;
            Ok(())
        }
    }
}
