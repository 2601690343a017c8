//! The PostgreSQL backend: one store shared by several daemons.
//!
//! Concurrency (decision 0011 in docs/decisions explains why):
//!
//! * **One writer per session.** An append takes a transaction-scoped advisory lock on
//!   its session (also for a session that does not exist yet), then reads the summary and
//!   checks the expected sequence number. The unique constraints (`(session_id, seq)`,
//!   idempotency keys, dispatch keys) are the guarantee; a violation is re-judged against
//!   the committed state (duplicate, seq conflict or dispatch key taken).
//! * **Global positions in commit order.** Positions come from an identity column, and
//!   the events are inserted under one more transaction-scoped advisory lock, held to the
//!   commit: a transaction never commits a position lower than one already visible, so a
//!   reader tailing by position ([`EventStore::events_since`]) never skips an event. Only
//!   the event insert, queue-order writes and the commit run under it; everything else of
//!   an append runs before. Locks are always taken session first, then global, so
//!   appends cannot deadlock.
//! * **Notifications.** Each append sends `NOTIFY worktrain_appended` in its transaction
//!   (delivered at commit); [`EventStore::subscribe`] listens on one connection.

use std::borrow::Cow;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode,
};
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::broadcast;
use worktrain_core::event::{EventBody, StoredEvent};
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
    StoreError, StoreOptions, StoreUrl, TlsMode,
};

/// Migrations of the PostgreSQL schema, embedded in the binary. Append only.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../migrations/postgres/0001_event_store.sql"),
    ),
    (
        2,
        "insights",
        include_str!("../migrations/postgres/0002_insights.sql"),
    ),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// Advisory lock namespaces (the first key of `pg_advisory_*lock(int, int)`), chosen to
/// stay clear of other applications sharing the database.
pub mod lock_space {
    /// One session's writers (second key: `hashtext(session_id)`).
    pub const SESSION: i32 = 0x5754_0001;
    /// Assigning global event positions (second key: 0).
    pub const POSITIONS: i32 = 0x5754_0002;
    /// Leadership of a daemon role (second key: `hashtext(role)`), see `try_lead`.
    pub const LEADER: i32 = 0x5754_0003;
    /// Claiming runs (second key: 0): claims are serialized so caps hold.
    pub const CLAIMS: i32 = 0x5754_0004;
    /// Writers of one insights trace or proposal (second key: `hashtext(id)`).
    pub const INSIGHTS: i32 = 0x5754_0005;
}

/// The channel appends are announced on.
pub const APPEND_CHANNEL: &str = "worktrain_appended";

/// Rows per multi-row INSERT (8 parameters each; PostgreSQL allows 65,535 parameters).
const INSERT_CHUNK: usize = 1000;

/// The database clock, in ms since the Unix epoch (leases use it, so that daemons on
/// hosts with skewed clocks agree on expiry).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<
        Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 'static>,
    > {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
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

/// The PostgreSQL event store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    blob_limit: usize,
    url: String,
    appended: broadcast::Sender<Appended>,
    listening: Arc<Mutex<bool>>,
    recent: Arc<RecentSummaries>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn ssl_mode(m: TlsMode) -> PgSslMode {
    match m {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

impl PgStore {
    /// Connect to the server at `url` and apply pending migrations.
    pub async fn open(url: &StoreUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        let StoreUrl::Postgres(text) = url else {
            return Err(StoreError::InvalidUrl {
                url: url.redacted(),
                reason: "not a postgres:// URL".into(),
            });
        };
        let redacted = url.redacted();
        let mut connect = PgConnectOptions::from_str(text).map_err(|e| StoreError::InvalidUrl {
            url: redacted.clone(),
            reason: e.to_string(),
        })?;
        connect = connect.application_name("worktrain");
        let tls = &options.tls;
        if let Some(mode) = tls.mode {
            connect = connect.ssl_mode(ssl_mode(mode));
        }
        for (what, path) in [
            ("tls.ca_file", &tls.ca_file),
            ("tls.client_cert", &tls.client_cert),
            ("tls.client_key", &tls.client_key),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(StoreError::InvalidUrl {
                    url: redacted.clone(),
                    reason: format!("{what}: {} is not a readable file", p.display()),
                });
            }
        }
        if let Some(ca) = &tls.ca_file {
            connect = connect.ssl_root_cert(ca);
        }
        if let Some(cert) = &tls.client_cert {
            connect = connect.ssl_client_cert(cert);
        }
        if let Some(key) = &tls.client_key {
            connect = connect.ssl_client_key(key);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(10).max(2))
            .min_connections(0)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unreachable {
                url: redacted.clone(),
                reason: unreachable_reason(&e),
            })?;
        let store = Self {
            pool,
            blob_limit: options.blob_limit,
            url: redacted,
            appended: broadcast::channel(1024).0,
            listening: Arc::new(Mutex::new(false)),
            recent: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let found = self.applied_version().await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // sqlx's PostgreSQL migrator holds an advisory lock while it runs: daemons starting
        // together apply each migration once.
        let migrator = Migrator::new(EmbeddedMigrations)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn applied_version(&self) -> Result<i64, StoreError> {
        let (exists,): (bool,) =
            sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Ok(0);
        }
        let (v,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(v.unwrap_or(0))
    }

    /// The underlying pool (tests use it to attempt forbidden writes).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Write a prepared batch. The caller holds the session lock; this takes the
    /// position lock for the event insert and what needs positions.
    async fn write_prepared(
        conn: &mut PgConnection,
        session_id: SessionId,
        prepared: &PreparedAppend,
    ) -> Result<(), StoreError> {
        let sid = session_id.to_string();
        for key in &prepared.dispatch_keys {
            sqlx::query("INSERT INTO dispatch_keys (dispatch_key, session_id) VALUES ($1, $2)")
                .bind(key)
                .bind(&sid)
                .execute(&mut *conn)
                .await?;
        }
        upsert_summary(conn, &prepared.summary).await?;
        if prepared.ends_run() {
            sqlx::query("DELETE FROM run_leases WHERE session_id = $1")
                .bind(&sid)
                .execute(&mut *conn)
                .await?;
        }
        // Projection changes that need no position go first, outside the position lock.
        for (_, change) in &prepared.changes {
            if !matches!(change, ProjectionChange::UpsertQueue(_)) {
                write_change(conn, &sid, change, 0, false).await?;
            }
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(lock_space::POSITIONS)
            .execute(&mut *conn)
            .await?;
        let mut positions: Vec<(i64, i64)> = Vec::with_capacity(prepared.rows.len());
        for chunk in prepared.rows.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO events (session_id, seq, kind, payload, created_at_ms, idempotency_key, prev_hash, hash) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&sid)
                    .push_bind(r.seq)
                    .push_bind(&r.kind)
                    .push_bind(&r.payload)
                    .push_bind(r.created_at_ms)
                    .push_bind(r.idempotency_key.as_deref())
                    .push_bind(&r.prev_hash)
                    .push_bind(&r.hash);
            });
            qb.push(" RETURNING seq, position");
            let returned: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
            positions.extend(returned);
        }
        positions.sort_unstable();
        for (i, change) in &prepared.changes {
            if let ProjectionChange::UpsertQueue(_) = change {
                let seq = prepared.rows[*i].seq;
                let position = positions
                    .binary_search_by_key(&seq, |(s, _)| *s)
                    .map(|k| positions[k].1)
                    .map_err(|_| corrupt(format!("no position returned for seq {seq}")))?;
                write_change(
                    conn,
                    &sid,
                    change,
                    position,
                    prepared.rows[*i].sets_queue_order,
                )
                .await?;
            }
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(APPEND_CHANNEL)
            .bind(format!("{sid} {}", prepared.summary.last_seq.0))
            .execute(&mut *conn)
            .await?;
        Ok(())
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

    /// Start the notification listener on first use (needs a Tokio runtime).
    fn ensure_listener(&self) {
        let mut listening = match self.listening.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if *listening {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("subscribe() outside a Tokio runtime: no append notifications");
            return;
        };
        *listening = true;
        let pool = self.pool.clone();
        let sender = self.appended.clone();
        let flag = self.listening.clone();
        runtime.spawn(async move {
            if let Err(e) = listen(pool, sender).await {
                tracing::debug!(error = %e, "append listener stopped");
            }
            if let Ok(mut g) = flag.lock() {
                *g = false;
            }
        });
    }

    /// Try to become (or stay) the leader for `role`: a session-level advisory lock held
    /// by the returned connection for as long as it lives. `None`: another process leads.
    pub async fn try_lead(&self, role: &str) -> Result<Option<Leadership>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(lock_space::LEADER)
            .bind(role)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Leadership { conn }))
        } else {
            use sqlx::Connection;
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// A held leadership lock (see [`PgStore::try_lead`]); dropping it (or losing the
/// connection) gives leadership up.
#[derive(Debug)]
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// Give leadership up now.
    pub async fn release(self) {
        use sqlx::Connection;
        let _ = self.conn.close().await;
    }
}

#[async_trait]
impl LeaderLock for Leadership {
    async fn still_held(&mut self) -> bool {
        use sqlx::Connection;
        // The lock lives as long as its session: a live connection still holds it.
        tokio::time::timeout(Duration::from_secs(5), self.conn.ping())
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn listen(pool: PgPool, sender: broadcast::Sender<Appended>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(APPEND_CHANNEL).await?;
    loop {
        match listener.try_recv().await? {
            Some(n) => {
                let mut parts = n.payload().split(' ');
                let session = parts.next().and_then(|s| s.parse::<SessionId>().ok());
                let seq = parts.next().and_then(|s| s.parse::<u64>().ok());
                if let (Some(session_id), Some(seq)) = (session, seq) {
                    // No receivers is fine: nobody is waiting right now.
                    let _ = sender.send(Appended {
                        session_id,
                        last_seq: Seq(seq),
                    });
                }
            }
            None => {
                tracing::debug!("append listener lost its connection; reconnecting");
            }
        }
    }
}

/// What to tell an operator about a failed connection attempt.
fn unreachable_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => {
            format!("{io} (is the server running and reachable? check host, port and firewall)")
        }
        sqlx::Error::PoolTimedOut => {
            "no answer within the connect timeout (is the server running and reachable?)".into()
        }
        sqlx::Error::Tls(t) => format!("TLS failed: {t} (check store.tls in config.yaml)"),
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Append `bodies` to a session whose summary was just read under its session lock
/// (claims and recovery: no idempotency keys, no blobs).
async fn append_decided(
    conn: &mut PgConnection,
    summary: SessionSummary,
    bodies: Vec<EventBody>,
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
    PgStore::write_prepared(conn, session_id, &prepared).await?;
    Ok(prepared)
}

async fn lock_session(conn: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(lock_space::SESSION)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn load_summary(
    conn: &mut PgConnection,
    id: SessionId,
) -> Result<Option<SessionSummary>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT summary FROM sessions WHERE session_id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(json,)| serde_json::from_str(&json).map_err(corrupt))
        .transpose()
}

async fn duplicate_of(
    conn: &mut PgConnection,
    key: &str,
    batch_len: usize,
) -> Result<Option<AppendOutcome>, StoreError> {
    let original: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, session_id FROM events WHERE idempotency_key = $1")
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
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<SessionId>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT session_id FROM dispatch_keys WHERE dispatch_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(s,)| parse(&s, "session id")).transpose()
}

async fn upsert_summary(conn: &mut PgConnection, s: &SessionSummary) -> Result<(), StoreError> {
    let r = SessionRow::of(s)?;
    sqlx::query(
        "INSERT INTO sessions (session_id, workflow_id, workflow_hash, status, goal, workspace,
             branch, run_state, search_text, current_node, current_step, last_seq,
             created_at_ms, updated_at_ms, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (session_id) DO UPDATE SET
             status = excluded.status, run_state = excluded.run_state,
             current_node = excluded.current_node, current_step = excluded.current_step,
             last_seq = excluded.last_seq, updated_at_ms = excluded.updated_at_ms,
             summary = excluded.summary",
    )
    .bind(&r.session_id)
    .bind(&r.workflow_id)
    .bind(&r.workflow_hash)
    .bind(r.status)
    .bind(&r.goal)
    .bind(&r.workspace)
    .bind(&r.branch)
    .bind(r.run_state)
    .bind(&r.search_text)
    .bind(r.current_node)
    .bind(&r.current_step)
    .bind(r.last_seq)
    .bind(r.created_at_ms)
    .bind(r.updated_at_ms)
    .bind(&r.summary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_change(
    conn: &mut PgConnection,
    sid: &str,
    change: &ProjectionChange,
    position: i64,
    sets_order: bool,
) -> Result<(), StoreError> {
    match change {
        ProjectionChange::InsertNode(n) => {
            sqlx::query(
                "INSERT INTO session_nodes (session_id, node, step_id, step_index, pc, parent,
                     cause, status, attempts, notes, entered_seq, closed_seq, cursor)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(sid)
            .bind(i64::from(n.node.0))
            .bind(n.step_id.as_str())
            .bind(i64::from(n.step.0))
            .bind(i64::from(n.pc.0))
            .bind(n.parent.map(|p| i64::from(p.0)))
            .bind(enum_str(&n.cause)?)
            .bind(n.status.as_str())
            .bind(i64::from(n.attempts))
            .bind(n.notes.as_deref())
            .bind(to_i64(n.entered_seq.0))
            .bind(n.closed_seq.map(|s| to_i64(s.0)))
            .bind(serde_json::to_string(&n.cursor).map_err(corrupt)?)
            .execute(&mut *conn)
            .await?;
        }
        ProjectionChange::CloseNode {
            node,
            status,
            notes,
            closed_seq,
        } => {
            sqlx::query(
                "UPDATE session_nodes SET status = $1, notes = COALESCE($2, notes), closed_seq = $3
                 WHERE session_id = $4 AND node = $5",
            )
            .bind(status.as_str())
            .bind(notes.as_deref())
            .bind(to_i64(closed_seq.0))
            .bind(sid)
            .bind(i64::from(node.0))
            .execute(&mut *conn)
            .await?;
        }
        ProjectionChange::SetNodeAttempts { node, attempts } => {
            sqlx::query(
                "UPDATE session_nodes SET attempts = $1 WHERE session_id = $2 AND node = $3",
            )
            .bind(i64::from(*attempts))
            .bind(sid)
            .bind(i64::from(node.0))
            .execute(&mut *conn)
            .await?;
        }
        ProjectionChange::UpsertQueue(q) => {
            sqlx::query(
                "INSERT INTO run_queue (session_id, state, priority, workspace, trigger_id, agent,
                     queued_at_ms, worker, queue_position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (session_id) DO UPDATE SET state = excluded.state,
                     priority = excluded.priority, workspace = excluded.workspace,
                     trigger_id = excluded.trigger_id, agent = excluded.agent,
                     queued_at_ms = excluded.queued_at_ms, worker = excluded.worker,
                     queue_position = CASE WHEN $10 THEN excluded.queue_position
                                           ELSE run_queue.queue_position END",
            )
            .bind(sid)
            .bind(q.state.as_str())
            .bind(i64::from(q.priority))
            .bind(q.workspace.as_deref())
            .bind(q.trigger.as_deref())
            .bind(&q.agent)
            .bind(q.queued_at_ms)
            .bind(q.worker.as_deref())
            .bind(position)
            .bind(sets_order)
            .execute(&mut *conn)
            .await?;
        }
        ProjectionChange::RemoveQueue => {
            sqlx::query("DELETE FROM run_queue WHERE session_id = $1")
                .bind(sid)
                .execute(&mut *conn)
                .await?;
        }
        ProjectionChange::RejectAttempt {
            node,
            attempt,
            response,
        } => {
            sqlx::query(
                "UPDATE session_attempts SET outcome = 'rejected', response = $1
                 WHERE session_id = $2 AND node = $3 AND attempt = $4",
            )
            .bind(response.to_hex())
            .bind(sid)
            .bind(i64::from(node.0))
            .bind(i64::from(attempt.0))
            .execute(&mut *conn)
            .await?;
        }
        ProjectionChange::UpsertAttempt(a) => {
            sqlx::query(
                "INSERT INTO session_attempts (session_id, node, attempt, outcome, output_hash, response, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (session_id, node, attempt) DO UPDATE SET
                     outcome = excluded.outcome, output_hash = excluded.output_hash,
                     response = excluded.response, seq = excluded.seq",
            )
            .bind(sid)
            .bind(i64::from(a.node.0))
            .bind(i64::from(a.attempt.0))
            .bind(a.outcome.as_str())
            .bind(a.output_hash.to_hex())
            .bind(a.response.to_hex())
            .bind(to_i64(a.seq.0))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

fn row_to_raw(row: &PgRow) -> Result<RawEvent, StoreError> {
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

fn row_to_event(row: &PgRow) -> Result<StoredEvent, StoreError> {
    raw_to_stored(&row_to_raw(row)?)
}

fn row_to_node(row: &PgRow) -> Result<NodeRecord, StoreError> {
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

fn row_to_attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        node: NodeId(u32::try_from(row.try_get::<i64, _>("node")?).map_err(corrupt)?),
        attempt: Attempt(u16::try_from(row.try_get::<i64, _>("attempt")?).map_err(corrupt)?),
        outcome: enum_from::<AttemptOutcome>(&row.try_get::<String, _>("outcome")?)?,
        output_hash: parse(&row.try_get::<String, _>("output_hash")?, "output hash")?,
        response: parse(&row.try_get::<String, _>("response")?, "response hash")?,
        seq: Seq(to_u64(row.try_get("seq")?)),
    })
}

fn row_to_queue(r: &PgRow) -> Result<QueueRow, StoreError> {
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
impl EventStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
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
        let mut tx = self.pool.begin().await?;

        if let Some(key) = first_key.as_deref()
            && let Some(dup) = duplicate_of(&mut tx, key, batch_len).await?
        {
            tx.rollback().await?;
            return Ok(dup);
        }
        lock_session(&mut tx, &sid).await?;
        // Under the session lock, the summary cannot change until this transaction ends.
        let summary = load_summary(&mut tx, session_id).await?;
        let actual = summary.as_ref().map(|s| s.last_seq).unwrap_or(Seq(0));
        if actual != expected_seq {
            tx.rollback().await?;
            self.recent.forget(session_id);
            return Err(StoreError::SeqConflict {
                session: session_id,
                expected: expected_seq,
                actual,
            });
        }
        let prepared = prepare_append(session_id, summary, events, now_ms())?;
        for key in &prepared.dispatch_keys {
            if let Some(owner) = dispatch_owner(&mut tx, key).await? {
                tx.rollback().await?;
                return Err(StoreError::DispatchKeyTaken {
                    key: key.clone(),
                    session: owner,
                });
            }
        }
        if !blobs.is_empty() {
            let now = now_ms();
            let mut qb: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO blobs (hash, size, content, created_at_ms) ");
            qb.push_values(&blobs, |mut b, blob| {
                b.push_bind(Sha256Hash::of(blob).to_hex())
                    .push_bind(to_i64(blob.len() as u64))
                    .push_bind(blob.as_slice())
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (hash) DO NOTHING");
            // Two equal blobs in one batch would make the multi-row insert touch the same
            // key twice; ON CONFLICT DO NOTHING handles that for PostgreSQL too.
            qb.build().execute(&mut *tx).await?;
        }
        let written = match Self::write_prepared(&mut tx, session_id, &prepared).await {
            Ok(()) => tx.commit().await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
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
        self.recent.put(&summary);
        Ok(AppendOutcome {
            first_seq: Seq(actual.0 + 1),
            last_seq: summary.last_seq,
            duplicate: false,
            summary,
        })
    }

    fn recent_summary(&self, id: SessionId) -> Option<Arc<SessionSummary>> {
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
        let mut qb: QueryBuilder<Postgres> = if queue_order {
            QueryBuilder::new(
                "SELECT s.summary FROM sessions s JOIN run_queue q ON q.session_id = s.session_id WHERE TRUE",
            )
        } else {
            QueryBuilder::new("SELECT s.summary FROM sessions s WHERE TRUE")
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
                .push(" OR starts_with(s.workspace, ")
                .push_bind(prefix)
                .push("))");
        }
        if let Some(text) = &filter.text {
            match search_needle(text) {
                Some(needle) => {
                    qb.push(" AND strpos(s.search_text, ")
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
        sqlx::query("SELECT * FROM session_nodes WHERE session_id = $1 AND node = $2")
            .bind(id.to_string())
            .bind(i64::from(node.0))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(row_to_node)
            .transpose()
    }

    async fn nodes(&self, id: SessionId) -> Result<Vec<NodeRecord>, StoreError> {
        sqlx::query("SELECT * FROM session_nodes WHERE session_id = $1 ORDER BY node")
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
            "SELECT * FROM session_attempts WHERE session_id = $1 AND node = $2 AND attempt = $3",
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
        // One statement, one round trip to the server: an advance reads both.
        let row = sqlx::query(
            "SELECT s.summary, a.node, a.attempt, a.outcome, a.output_hash, a.response, a.seq
             FROM sessions s LEFT JOIN session_attempts a
               ON a.session_id = s.session_id AND a.node = $1 AND a.attempt = $2
             WHERE s.session_id = $3",
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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
        // Positions are drawn and committed under the position lock: what is visible is
        // always a prefix of the position order (see the module docs).
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
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
            "INSERT INTO blobs (hash, size, content, created_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.to_hex())
        .bind(to_i64(bytes.len() as u64))
        .bind(bytes)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(hash)
    }

    async fn blob(&self, hash: Sha256Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT content FROM blobs WHERE hash = $1")
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
                 FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
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
        let mut tx = self.pool.begin().await?;
        // Table locks first (appends in flight finish, new ones wait), then the position
        // lock: the same order appends use, so this cannot deadlock with them.
        sqlx::query(
            "LOCK TABLE sessions, session_nodes, session_attempts, run_queue, dispatch_keys
             IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(lock_space::POSITIONS)
            .execute(&mut *tx)
            .await?;
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
                    "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000"
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
                    if let EventBody::RunQueued {
                        dispatch_key: Some(key),
                        ..
                    } = &event.body
                    {
                        sqlx::query(
                            "INSERT INTO dispatch_keys (dispatch_key, session_id) VALUES ($1, $2)",
                        )
                        .bind(key)
                        .bind(&sid)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let order = matches!(
                        event.body,
                        EventBody::RunQueued { .. } | EventBody::RunRequeued { .. }
                    );
                    for change in &changes {
                        write_change(&mut tx, &sid, change, to_i64(event.position), order).await?;
                    }
                    report.events += 1;
                }
            }
            if let Some(s) = summary {
                upsert_summary(&mut tx, &s).await?;
                report.sessions += 1;
            }
        }
        tx.commit().await?;
        // Summaries held from before were folded by another build, perhaps differently.
        self.recent.clear();
        Ok(report)
    }

    async fn dump_projections(&self) -> Result<ProjectionDump, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for the whole dump.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let sessions = sqlx::query(
            "SELECT session_id, workflow_id, workflow_hash, status, goal, workspace, branch,
                    run_state, search_text, current_node, current_step, last_seq,
                    created_at_ms, updated_at_ms, summary
             FROM sessions ORDER BY session_id",
        )
        .fetch_all(&mut *tx)
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
            .fetch_all(&mut *tx)
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
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            let sid: String = r.try_get("session_id")?;
            let a = row_to_attempt(r)?;
            Ok(json!({"session_id": sid, "attempt": serde_json::to_value(a).map_err(corrupt)?}))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let queue = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT session_id, state, priority, workspace, trigger_id, agent, queued_at_ms, worker
             FROM run_queue ORDER BY {QUEUE_ORDER}"
        )))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| serde_json::to_value(row_to_queue(r)?).map_err(corrupt))
        .collect::<Result<Vec<_>, StoreError>>()?;
        let dispatch_keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT dispatch_key, session_id FROM dispatch_keys ORDER BY dispatch_key",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let renewed: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE run_leases SET expires_at_ms = {DB_NOW_MS} + $3
             WHERE session_id = $1 AND worker = $2 RETURNING expires_at_ms"
        )))
        .bind(id.to_string())
        .bind(worker)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((expires_at_ms,)) = renewed {
            return Ok(LeaseRenewal::Held { expires_at_ms });
        }
        let holder: Option<(String,)> =
            sqlx::query_as("SELECT worker FROM run_leases WHERE session_id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(LeaseRenewal::Lost {
            holder: holder.map(|(w,)| w),
        })
    }

    async fn release_lease(&self, id: SessionId, worker: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM run_leases WHERE session_id = $1 AND worker = $2")
            .bind(id.to_string())
            .bind(worker)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn claim_run(&self, claim: Claim<'_>) -> Result<Option<SessionSummary>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Claims are serialized cluster-wide, so the caps counted here hold. A claim
        // never waits for a session or a queue row another transaction holds: it skips
        // it (pg_try_advisory_xact_lock, FOR UPDATE SKIP LOCKED), so claims cannot
        // deadlock with appends.
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(lock_space::CLAIMS)
            .execute(&mut *tx)
            .await?;
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
            let (locked,): (bool,) =
                sqlx::query_as("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
                    .bind(lock_space::SESSION)
                    .bind(&sid)
                    .fetch_one(&mut *tx)
                    .await?;
            if !locked {
                continue;
            }
            let row: Option<(String,)> = sqlx::query_as(
                "SELECT state FROM run_queue WHERE session_id = $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(&sid)
            .fetch_optional(&mut *tx)
            .await?;
            if row.is_none_or(|(state,)| state != "queued") {
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
                let ttl_ms = i64::try_from(claim.lease_ttl.as_millis()).unwrap_or(i64::MAX / 2);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO run_leases (session_id, worker, expires_at_ms)
                     VALUES ($1, $2, {DB_NOW_MS} + $3)
                     ON CONFLICT (session_id) DO UPDATE SET worker = excluded.worker,
                         expires_at_ms = excluded.expires_at_ms"
                )))
                .bind(&sid)
                .bind(claim.worker)
                .bind(ttl_ms)
                .execute(&mut *tx)
                .await?;
                running.push((workspace, trigger));
            }
            tx.commit().await?;
            self.recent.put(&after);
            return Ok(Some(after));
        }
        tx.rollback().await?;
        Ok(None)
    }

    async fn recover_runs(
        &self,
        recovery: Recovery<'_>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let prefix = recovery.dead_workers.unwrap_or("");
        let dead = recovery.dead_workers.is_some();
        // Expiry is judged on the server's clock, in SQL, so hosts with skewed clocks agree.
        let gone = |dead_param: &str, prefix_param: &str| {
            format!(
                "(l.worker IS NULL OR l.expires_at_ms <= {DB_NOW_MS} \
                 OR ({dead_param} AND starts_with(l.worker, {prefix_param})))"
            )
        };
        let candidates: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT q.session_id FROM run_queue q
             LEFT JOIN run_leases l ON l.session_id = q.session_id
             WHERE q.state = 'interrupted' OR (q.state = 'running' AND {})
             ORDER BY q.session_id",
            gone("$1", "$2")
        )))
        .bind(dead)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for (sid,) in candidates {
            let id: SessionId = parse(&sid, "session id")?;
            let mut tx = self.pool.begin().await?;
            lock_session(&mut tx, &sid).await?;
            // Re-check under the locks: the holder may have renewed meanwhile.
            let live: Option<(bool,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT NOT {} FROM run_leases l WHERE l.session_id = $1 FOR UPDATE",
                gone("$2", "$3")
            )))
            .bind(&sid)
            .bind(dead)
            .bind(prefix)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(summary) = load_summary(&mut tx, id).await? else {
                tx.rollback().await?;
                continue;
            };
            let running = summary
                .run
                .as_ref()
                .is_some_and(|r| r.state == RunState::Running);
            if running && live.is_some_and(|(l,)| l) {
                tx.rollback().await?;
                continue;
            }
            let bodies = (recovery.decide)(&summary);
            if bodies.is_empty() {
                tx.rollback().await?;
                continue;
            }
            sqlx::query("DELETE FROM run_leases WHERE session_id = $1")
                .bind(&sid)
                .execute(&mut *tx)
                .await?;
            let prepared = append_decided(&mut tx, summary, bodies).await?;
            tx.commit().await?;
            self.recent.put(&prepared.summary);
            out.push(prepared.summary);
        }
        Ok(out)
    }

    async fn try_lead(&self, role: &str) -> Result<Option<Box<dyn LeaderLock>>, StoreError> {
        Ok(PgStore::try_lead(self, role)
            .await?
            .map(|l| Box::new(l) as Box<dyn LeaderLock>))
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
            "SELECT session_id FROM events WHERE seq = 1 AND session_id > $1 ORDER BY session_id LIMIT $2",
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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
        let mut tx = self.pool.begin().await?;
        lock_session(&mut tx, &session_id.to_string()).await?;
        if let Some(existing) = load_summary(&mut tx, session_id).await? {
            tx.rollback().await?;
            return Err(StoreError::SeqConflict {
                session: session_id,
                expected: Seq(0),
                actual: existing.last_seq,
            });
        }
        Self::write_prepared(&mut tx, session_id, &prepared).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blob_hashes(
        &self,
        after: Option<Sha256Hash>,
        limit: u32,
    ) -> Result<Vec<Sha256Hash>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT hash FROM blobs WHERE hash > $1 ORDER BY hash LIMIT $2")
                .bind(after.map(|h| h.to_hex()).unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|(h,)| parse(h, "blob hash")).collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Appended> {
        let rx = self.appended.subscribe();
        self.ensure_listener();
        rx
    }

    fn insights(&self) -> Option<&dyn crate::InsightsStore> {
        Some(self)
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
            crate::stats::pg_json_int,
            "$1",
            "$2"
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
        // Every process's appends are announced; this only covers a reconnecting listener.
        Duration::from_secs(5)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

mod trigger_impl {
    //! [`crate::triggers::TriggerStore`] for PostgreSQL. Deliveries are deduplicated by the
    //! unique `(trigger_id, delivery_key)`: a redelivery is recognised whichever daemon
    //! receives it, also while the first delivery's transaction is still open.

    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::postgres::PgRow;

    use super::PgStore;
    use crate::StoreError;
    use crate::common::{corrupt, now_ms};
    use crate::triggers::{
        Decision, DecisionFilter, Delivery, DeliveryInsert, NewDecision, NewDelivery, PollCursor,
        ScheduleState, SourceItem, SourceState, TriggerStore,
    };

    async fn insert_decision(
        conn: &mut sqlx::PgConnection,
        d: &NewDecision,
        at: i64,
    ) -> Result<i64, StoreError> {
        let detail = serde_json::to_string(&d.detail).map_err(corrupt)?;
        let r = sqlx::query(
            "INSERT INTO trigger_decisions (trigger_id, created_at_ms, decision, reason, event,
                 delivery_id, source, session_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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

    fn delivery_row(r: &PgRow) -> Result<Delivery, StoreError> {
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

    fn decision_row(r: &PgRow) -> Result<Decision, StoreError> {
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

    fn source_row(r: &PgRow) -> Result<SourceItem, StoreError> {
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
    impl TriggerStore for PgStore {
        async fn insert_deliveries(
            &self,
            batch: Vec<NewDelivery>,
        ) -> Result<Vec<DeliveryInsert>, StoreError> {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.pool.begin().await?;
            let result: Result<Vec<DeliveryInsert>, StoreError> = async {
                let now = now_ms();
                let mut out = Vec::with_capacity(batch.len());
                for d in &batch {
                    let headers = serde_json::to_string(&d.headers).map_err(corrupt)?;
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_deliveries (trigger_id, delivery_key, received_at_ms,
                             headers, body, status)
                         VALUES ($1, $2, $3, $4, $5, 'pending')
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
                        insert_decision(&mut conn, &dec, now).await?;
                        out.push(DeliveryInsert::Stored { id });
                    } else {
                        let (id,): (i64,) = sqlx::query_as(
                            "SELECT id FROM webhook_deliveries WHERE trigger_id = $1 AND delivery_key = $2",
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
                        insert_decision(&mut conn, &dec, now).await?;
                        out.push(DeliveryInsert::Duplicate { id });
                    }
                }
                Ok(out)
            }
            .await;
            match result {
                Ok(out) => {
                    conn.commit().await?;
                    Ok(out)
                }
                Err(e) => {
                    let _ = conn.rollback().await;
                    Err(e)
                }
            }
        }

        async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
            let rows = sqlx::query(
                "SELECT * FROM webhook_deliveries WHERE status = 'pending' ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(delivery_row).collect()
        }

        async fn delivery(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
            let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
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
            let mut tx = self.pool.begin().await?;
            let now = now_ms();
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'done', decided_at_ms = $1 WHERE id = $2",
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
            let mut conn = self.pool.acquire().await?;
            insert_decision(&mut conn, &decision, now_ms()).await
        }

        async fn decisions(&self, f: &DecisionFilter) -> Result<Vec<Decision>, StoreError> {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "SELECT * FROM trigger_decisions WHERE TRUE",
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
                "SELECT decision, COUNT(*) FROM trigger_decisions WHERE trigger_id = $1
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
            let row = sqlx::query("SELECT * FROM trigger_sources WHERE source = $1")
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn source_items(&self, state: SourceState) -> Result<Vec<SourceItem>, StoreError> {
            let rows = sqlx::query(
                "SELECT * FROM trigger_sources WHERE state = $1 ORDER BY updated_at_ms, source",
            )
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(source_row).collect()
        }

        async fn poll_cursor(&self, trigger_id: &str) -> Result<Option<PollCursor>, StoreError> {
            let row = sqlx::query("SELECT * FROM poll_cursors WHERE trigger_id = $1")
                .bind(trigger_id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| {
                let baseline: bool = r.try_get("baseline_done")?;
                Ok(PollCursor {
                    trigger_id: r.try_get("trigger_id")?,
                    etag: r.try_get("etag")?,
                    baseline_done: baseline,
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
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (trigger_id) DO UPDATE SET etag = excluded.etag,
                     baseline_done = excluded.baseline_done,
                     last_polled_at_ms = excluded.last_polled_at_ms,
                     next_poll_at_ms = excluded.next_poll_at_ms, last_error = excluded.last_error",
            )
            .bind(&c.trigger_id)
            .bind(c.etag.as_deref())
            .bind(c.baseline_done)
            .bind(c.last_polled_at_ms)
            .bind(c.next_poll_at_ms)
            .bind(c.last_error.as_deref())
            .execute(&self.pool)
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
                let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
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
            let mut tx = self.pool.begin().await?;
            let now = now_ms();
            for (k, updated) in items {
                sqlx::query(
                    "INSERT INTO poll_items (trigger_id, item_key, updated_at, seen_at_ms)
                     VALUES ($1, $2, $3, $4)
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
            let row = sqlx::query("SELECT * FROM schedule_state WHERE trigger_id = $1")
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
                 VALUES ($1, $2, $3, $4, $5)
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
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    }
}
