//! The worktrain event store: an append-only log of session events with optimistic
//! concurrency, idempotency keys, a per-session hash chain, content-addressed blobs and
//! projections maintained in the same transaction as the events they derive from.
//!
//! [`EventStore`] is the contract (with [`TriggerStore`] for trigger state; [`Store`] is
//! both). Two backends implement it: [`sqlite::SqliteStore`], the
//! embedded default, and [`postgres::PgStore`], the scale-out backend shared by several
//! daemons. [`open`] picks one from a [`StoreUrl`] (`sqlite://…` or `postgres://…`); code
//! above the store never names a backend. Every backend passes the conformance tests in
//! `tests/conformance.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use worktrain_core::event::{EventBody, NewEvent, StoredEvent};
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, WorkflowId};
use worktrain_core::projection::{
    AttemptRecord, NodeRecord, ProjectionError, QueueRow, SessionStatus, SessionSummary,
};
use worktrain_core::run::RunState;

mod common;
pub mod insights;
pub mod postgres;
mod postgres_insights;
pub mod sqlite;
mod sqlite_insights;
pub mod stats;
pub mod triggers;
mod url;

pub use common::now_ms;
pub use insights::InsightsStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use triggers::TriggerStore;
pub use url::StoreUrl;

/// A batch of events to append to one session, atomically.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The session the events are appended to (created by its first `session_started`).
    pub session_id: SessionId,
    /// The sequence number of the last event the writer saw (0 for a new session).
    /// If the log has moved on, the append fails with [`StoreError::SeqConflict`].
    pub expected_seq: Seq,
    /// Events, in order (at least one).
    pub events: Vec<NewEvent>,
    /// Blobs the events reference, stored in the same transaction.
    pub blobs: Vec<Vec<u8>>,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    /// Sequence number of the first event of the batch.
    pub first_seq: Seq,
    /// Sequence number of the last event of the batch.
    pub last_seq: Seq,
    /// True when the batch's idempotency key was already present: nothing was written;
    /// `first_seq` is the original batch's first event and `last_seq` assumes the retried
    /// batch has the same length as the original.
    pub duplicate: bool,
    /// The session summary after the append.
    pub summary: SessionSummary,
}

/// Which daemon runs a session listing keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFilter {
    /// Sessions never dispatched to a daemon (interactive sessions).
    NoRun,
    /// Sessions whose run is in this state.
    State(RunState),
}

/// Filter for listing sessions. All filtering happens in the store (one definition of
/// what matches, whatever the backend).
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions of this workflow.
    pub workflow: Option<WorkflowId>,
    /// Only sessions whose workspace is this directory or inside it (a trailing `/` is
    /// ignored; `/srv/app` matches `/srv/app/sub` but not `/srv/application`).
    pub workspace: Option<String>,
    /// Only sessions whose goal, workflow id or branch contains this text, ignoring case
    /// (Unicode lowercase). The text is matched literally: `%` and `_` are not wildcards.
    pub text: Option<String>,
    /// Only sessions whose daemon run is in this state (or that have none). Queued,
    /// running and interrupted runs are listed in claim order (priority, then queue
    /// order); everything else most recently updated first.
    pub run: Option<RunFilter>,
    /// Only sessions a trigger started (those of its `dispatched` decisions).
    pub trigger: Option<String>,
    /// Keyset paging in the most-recently-updated order: only sessions listed after this
    /// one. Unlike `offset`, a page stays the same when sessions are added meanwhile.
    /// Not used for the claim order.
    pub after: Option<SessionCursor>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
}

/// A position in the sessions list (most recently updated first): the last row seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCursor {
    /// Its last update (ms).
    pub updated_at_ms: i64,
    /// Its id (orders sessions updated in the same millisecond).
    pub session_id: SessionId,
}

impl SessionCursor {
    /// The cursor after `s`.
    pub fn of(s: &SessionSummary) -> Self {
        Self {
            updated_at_ms: s.updated_at_ms,
            session_id: s.session_id,
        }
    }
}

/// The outcome of verifying a session's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The session this belongs to.
    pub session_id: SessionId,
    /// Number of events whose hashes were checked.
    pub events: u64,
    /// Hash of the last valid event.
    pub head: Sha256Hash,
    /// The first broken link, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether the whole chain is valid.
    pub fn is_valid(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Where and why a hash chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// Sequence number of the first event that fails.
    pub seq: Seq,
    /// Global position of that event.
    pub position: u64,
    /// What failed (which hash did not match, in words).
    pub reason: String,
}

/// Counts from a projection rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    /// Number of sessions whose projections were rebuilt from their events.
    pub sessions: u64,
    /// Number of events folded, over all sessions.
    pub events: u64,
}

/// A deterministic dump of every projection table, for comparing an incrementally
/// maintained store with a rebuilt one (or one backend with another).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionDump {
    /// Session summaries, by id.
    pub sessions: Vec<serde_json::Value>,
    /// Step graph rows, by (session, node).
    pub nodes: Vec<serde_json::Value>,
    /// Attempt rows, by (session, node, attempt).
    pub attempts: Vec<serde_json::Value>,
    /// Run queue rows, in queue order.
    #[serde(default)]
    pub queue: Vec<serde_json::Value>,
    /// Dispatch keys and their sessions, by key.
    #[serde(default)]
    pub dispatch_keys: Vec<serde_json::Value>,
}

/// A worker's lease on a running session (operational state, renewed by heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The session this belongs to.
    pub session_id: SessionId,
    /// Worker holding it.
    pub worker: String,
    /// Expiry (ms since the Unix epoch, on the store's clock).
    pub expires_at_ms: i64,
}

/// Caps on the runs running at once, counted over the whole store — every daemon sharing
/// it — at the moment of a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCaps {
    /// Runs at once (0: none may start).
    pub total: usize,
    /// Runs at once in one workspace (0: no cap).
    pub per_workspace: usize,
    /// Runs at once per trigger id (absent: no cap).
    pub per_trigger: BTreeMap<String, usize>,
}

/// Decides, from a session's summary read inside a store transaction, which events to
/// append to it (none: leave it alone).
pub type Decide<'a> = &'a (dyn Fn(&SessionSummary) -> Vec<EventBody> + Send + Sync);

/// A worker asking for the next queued run (see [`EventStore::claim_run`]).
pub struct Claim<'a> {
    /// The claiming worker.
    pub worker: &'a str,
    /// The lease it takes on a run it starts.
    pub lease_ttl: Duration,
    /// Caps the claim must respect.
    pub caps: &'a RunCaps,
    /// The events that start (or settle) a queued run: normally `run_started` naming
    /// `worker`; `run_finished` for a run cancelled while queued.
    pub start: Decide<'a>,
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("worker", &self.worker)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

/// Recovery of runs whose worker is gone (see [`EventStore::recover_runs`]).
pub struct Recovery<'a> {
    /// Leases held by workers whose id starts with this are treated as expired: the
    /// caller knows those workers are dead (earlier incarnations of itself).
    pub dead_workers: Option<&'a str>,
    /// What to append to each such run: interrupted, then requeued or failed.
    pub decide: Decide<'a>,
}

impl std::fmt::Debug for Recovery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("dead_workers", &self.dead_workers)
            .finish_non_exhaustive()
    }
}

/// A held leadership of a role (see [`EventStore::try_lead`]). Dropping it gives the
/// role up.
#[async_trait]
pub trait LeaderLock: Send + Sync {
    /// Whether the role is still held (PostgreSQL: the lock's connection is alive). A
    /// lock that answers `false` never holds the role again; ask for a new one.
    async fn still_held(&mut self) -> bool;
}

/// The result of [`EventStore::renew_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// The worker holds the lease until `expires_at_ms`.
    Held {
        /// New expiry (ms since the Unix epoch, on the store's clock).
        expires_at_ms: i64,
    },
    /// The worker does not hold the lease any more (another worker recovered the run):
    /// it must stop working on the session without recording anything.
    Lost {
        /// The worker holding it now (none: the run was recovered and not claimed
        /// again yet).
        holder: Option<String>,
    },
}

/// One append that a backend wrote, as seen by listeners (see [`EventStore::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Session appended to.
    pub session_id: SessionId,
    /// Its last sequence number after the append.
    pub last_seq: Seq,
}

/// An event exactly as stored: the payload is the canonical JSON text the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Global position in the store it was read from.
    pub position: u64,
    /// The session this belongs to.
    pub session_id: SessionId,
    /// Sequence number within the session.
    pub seq: Seq,
    /// Event kind (the payload's `type`).
    pub kind: String,
    /// Canonical JSON payload.
    pub payload: String,
    /// Timestamp (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// Key the writer supplied so that a retried append is recognised instead of stored
    /// twice; `None` when the event was appended without one.
    pub idempotency_key: Option<String>,
    /// Hash of the previous event of the session.
    pub prev_hash: Sha256Hash,
    /// This event's hash.
    pub hash: Sha256Hash,
}

/// Why a store operation failed. [`StoreError::SeqConflict`] is the expected outcome of a
/// concurrent write (re-read and decide again); the others are errors to report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended first.
    #[error("session {session} moved on: expected last seq {expected}, found {actual}")]
    SeqConflict {
        /// The session this is about.
        session: SessionId,
        /// What the writer expected.
        expected: Seq,
        /// What the log holds.
        actual: Seq,
    },
    /// A dispatch key is already taken by another session; nothing was written.
    #[error("dispatch key `{key}` already belongs to session {session}")]
    DispatchKeyTaken {
        /// The dispatch key that was asked for.
        key: String,
        /// The session dispatched with it.
        session: SessionId,
    },
    /// A blob is over the size limit.
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    BlobTooLarge {
        /// The blob's size in bytes.
        size: usize,
        /// The largest size accepted, in bytes (`limits.blob_bytes`).
        limit: usize,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// An event does not follow from the session's state.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database schema is newer than this build.
    #[error(
        "the database schema is at version {found}, newer than this worktrain understands ({supported}); upgrade worktrain"
    )]
    SchemaTooNew {
        /// Schema version recorded in the database.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// Applying migrations failed.
    #[error("migrating the database failed: {0}")]
    Migration(String),
    /// The store URL or options cannot work.
    #[error("invalid store location `{url}`: {reason}")]
    InvalidUrl {
        /// The URL (password removed).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The database server could not be reached (or refused the connection).
    #[error("cannot connect to {url}: {reason}")]
    Unreachable {
        /// The URL (password removed).
        url: String,
        /// Why the event cannot be applied to this state.
        reason: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// TLS for connections to a database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (PostgreSQL's default).
    Prefer,
    /// Always use TLS; do not check the certificate.
    Require,
    /// Always use TLS; the certificate must be signed by a trusted CA.
    VerifyCa,
    /// Always use TLS; the certificate must be trusted and name the host.
    VerifyFull,
}

/// TLS settings (PostgreSQL only; an `sslmode` in the URL is overridden by `mode`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Mode (none: what the URL says, else `prefer`).
    pub mode: Option<TlsMode>,
    /// CA certificate(s) (PEM) to trust instead of the bundled web roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for servers that authenticate clients by certificate.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// How to open a store, whatever the backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest blob accepted, in bytes.
    pub blob_limit: usize,
    /// Connection pool size (none: the backend's default, 4 for SQLite, 10 for PostgreSQL).
    pub max_connections: Option<u32>,
    /// How long to wait for a connection (PostgreSQL: for the server to answer).
    pub connect_timeout: Duration,
    /// TLS (PostgreSQL).
    pub tls: TlsOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            blob_limit: 8 * 1024 * 1024,
            max_connections: None,
            connect_timeout: Duration::from_secs(10),
            tls: TlsOptions::default(),
        }
    }
}

/// Everything one backend provides: the event store and the trigger state. Code above the
/// store holds an `Arc<dyn Store>` and hands it on as `Arc<dyn EventStore>` or
/// `Arc<dyn TriggerStore>` (trait upcasting); a new store module adds its trait here.
pub trait Store: EventStore + TriggerStore {}

impl<T: EventStore + TriggerStore> Store for T {}

/// Open the store at `url` with `options`, creating and migrating its schema as needed.
/// The one place that turns a location into a backend.
///
/// ```
/// use worktrain_core::ids::SessionId;
/// use worktrain_store::{StoreOptions, StoreUrl};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let url = StoreUrl::Sqlite(dir.path().join("worktrain.db"));
/// let store = worktrain_store::open(&url, &StoreOptions::default()).await?;
/// // A new store is empty: no sessions, no events.
/// assert!(store.session(SessionId::from_parts(1, 1)).await?.is_none());
/// assert!(store.events_since(0, 10).await?.is_empty());
/// drop(store);
/// // Opening it again finds the schema in place (migrations run once).
/// let again = worktrain_store::open(&url, &StoreOptions::default()).await?;
/// assert!(again.events_since(0, 10).await?.is_empty());
/// # Ok(())
/// # }
/// ```
pub async fn open(url: &StoreUrl, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => {
            Arc::new(SqliteStore::open(path, sqlite::SqliteOptions::from(options)).await?)
        }
        StoreUrl::Postgres(_) => Arc::new(PgStore::open(url, options).await?),
    })
}

/// Open the store at `url` given as text (see [`StoreUrl::parse`]); a relative SQLite
/// path is taken relative to `base`.
pub async fn open_url(
    url: &str,
    base: &Path,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    open(&StoreUrl::parse(url)?.relative_to(base), options).await
}

/// The event store contract. Every backend implements it; the engine depends only on it.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Which backend this is (`sqlite` or `postgres`), for diagnostics.
    fn backend(&self) -> &'static str;

    /// Append a batch atomically: check the expected sequence number, honour idempotency
    /// keys and dispatch keys, extend the hash chain, store blobs and update projections —
    /// all in one transaction.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// [`append`](Self::append) by a writer that has just read `known`, the session's
    /// summary at `request.expected_seq`. A backend may build the batch on it instead of
    /// reading the summary again inside the transaction: the unique `(session, seq)` key
    /// still refuses the batch if the log has moved on, and the outcome is then exactly
    /// what `append` would say (a conflict, or the duplicate of an earlier batch). A
    /// `known` at another seq is ignored. The default is `append`.
    async fn append_after(
        &self,
        known: &SessionSummary,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let _ = known;
        self.append(request).await
    }

    /// The session's summary as this handle last wrote or read it, answered without a
    /// read; `None` when it holds none (never written or read here, aged out, or dropped
    /// after a conflict). It is a summary the session really had, but another process or
    /// handle may have appended since: an [`append_after`](Self::append_after) built on it
    /// is then refused exactly as one built on any stale read (a conflict, or the duplicate
    /// of an earlier batch). The engine decides an advance on it and reads only when it is
    /// missing or refused.
    fn recent_summary(&self, id: SessionId) -> Option<Arc<SessionSummary>>;

    /// The session summary (one row; never a log scan).
    async fn session(&self, id: SessionId) -> Result<Option<SessionSummary>, StoreError>;

    /// List session summaries matching `filter` (see [`SessionFilter`] for the order).
    async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError>;

    /// How many sessions are in each run state (`None`: sessions without a daemon run),
    /// counted by the database (no summary is read). States without sessions are absent.
    async fn session_counts(&self) -> Result<Vec<(Option<RunState>, u64)>, StoreError>;

    /// One node of the step graph.
    async fn node(&self, id: SessionId, node: NodeId) -> Result<Option<NodeRecord>, StoreError>;

    /// The whole step graph, by node number.
    async fn nodes(&self, id: SessionId) -> Result<Vec<NodeRecord>, StoreError>;

    /// The record of one attempt.
    async fn attempt(
        &self,
        id: SessionId,
        node: NodeId,
        attempt: Attempt,
    ) -> Result<Option<AttemptRecord>, StoreError>;

    /// The session summary and the record of one of its attempts, read together: what an
    /// advance decides on. A backend answers it in one round trip where it can; the
    /// default reads [`session`](Self::session) then [`attempt`](Self::attempt).
    async fn session_and_attempt(
        &self,
        id: SessionId,
        node: NodeId,
        attempt: Attempt,
    ) -> Result<(Option<SessionSummary>, Option<AttemptRecord>), StoreError> {
        let Some(summary) = self.session(id).await? else {
            return Ok((None, None));
        };
        let record = self.attempt(id, node, attempt).await?;
        Ok((Some(summary), record))
    }

    /// Events of one session with `seq > after`, at most `limit`.
    async fn events(
        &self,
        id: SessionId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of all sessions with `position > after`, at most `limit`, in position order
    /// (for tailing). A position, once returned, is never followed by a smaller one that
    /// commits later: a tailing reader never misses an event.
    async fn events_since(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// Store a blob (idempotent); returns its hash.
    async fn put_blob(&self, bytes: &[u8]) -> Result<Sha256Hash, StoreError>;

    /// Read a blob.
    async fn blob(&self, hash: Sha256Hash) -> Result<Option<Vec<u8>>, StoreError>;

    /// Recompute a session's hash chain and report the first broken link.
    async fn verify(&self, id: SessionId) -> Result<Option<ChainReport>, StoreError>;

    /// Drop and rebuild every projection from the events, in one transaction.
    async fn rebuild_projections(&self) -> Result<RebuildReport, StoreError>;

    /// Dump the projections deterministically.
    async fn dump_projections(&self) -> Result<ProjectionDump, StoreError>;

    /// The schema version recorded in the database.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// The run queue (queued, running and interrupted runs), in claim order: priority,
    /// then age (first queued first, also within one millisecond).
    async fn queue(&self) -> Result<Vec<QueueRow>, StoreError>;

    /// Extend `worker`'s lease on a running session to `ttl` from now (on the store's
    /// clock). Compare-and-set: only the holder extends its lease, also after it expired
    /// if nobody recovered the run meanwhile; a lease is only ever created by
    /// [`EventStore::claim_run`].
    async fn renew_lease(
        &self,
        id: SessionId,
        worker: &str,
        ttl: Duration,
    ) -> Result<LeaseRenewal, StoreError>;

    /// Drop `worker`'s lease (the run ended or was handed back). A lease that another
    /// worker holds is left alone; returns whether a lease was dropped.
    async fn release_lease(&self, id: SessionId, worker: &str) -> Result<bool, StoreError>;

    /// Claim the first queued run, in claim order, that the caps allow: in one
    /// transaction, count the runs running now (over the whole store), append
    /// `claim.start`'s events to the chosen session and, when they start it for
    /// `claim.worker`, create its lease. Claims of all workers are serialized, so caps
    /// hold across daemons; on PostgreSQL, rows that other transactions hold are skipped
    /// (`FOR UPDATE SKIP LOCKED`) rather than waited for. `None`: nothing claimable.
    async fn claim_run(&self, claim: Claim<'_>) -> Result<Option<SessionSummary>, StoreError>;

    /// Recover runs whose worker is gone: every running run whose lease is missing,
    /// expired (on the store's clock) or held by one of `recovery.dead_workers`, and every
    /// interrupted run. Each is handled in its own transaction — the lease re-checked and
    /// dropped, `recovery.decide`'s events appended — so that a worker renewing just in
    /// time keeps its run, and two recovering daemons never both act. Returns the
    /// summaries of the runs acted on.
    async fn recover_runs(&self, recovery: Recovery<'_>)
    -> Result<Vec<SessionSummary>, StoreError>;

    /// Try to become the leader of `role` (one per store: PostgreSQL, a session-level
    /// advisory lock held by a dedicated connection; SQLite, whose store one daemon owns,
    /// always). `None`: another process leads.
    async fn try_lead(&self, role: &str) -> Result<Option<Box<dyn LeaderLock>>, StoreError>;

    /// Every run lease currently held, expired or not (for operators and reclaiming).
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// The session dispatched with this idempotency key, if any.
    async fn session_by_dispatch_key(&self, key: &str) -> Result<Option<SessionId>, StoreError>;

    /// Every session id in the store, in id order, after `after`, at most `limit`
    /// (for copying a store).
    async fn session_ids(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Events of one session exactly as stored (payload bytes untouched), `seq > after`,
    /// at most `limit` (for copying a store).
    async fn raw_events(
        &self,
        id: SessionId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<RawEvent>, StoreError>;

    /// Copy one session's events exactly as stored (sequence numbers, timestamps,
    /// payload bytes, hashes, idempotency keys) into this store and fold its projections,
    /// in one transaction; for migrating between stores. Global positions are this
    /// store's own. Fails if the session already has events here. Blobs are copied
    /// separately ([`EventStore::blob_hashes`], [`EventStore::put_blob`]).
    async fn import_session(&self, events: Vec<RawEvent>) -> Result<(), StoreError>;

    /// Every blob hash, in order, after `after`, at most `limit` (for copying a store).
    async fn blob_hashes(
        &self,
        after: Option<Sha256Hash>,
        limit: u32,
    ) -> Result<Vec<Sha256Hash>, StoreError>;

    /// Listen for appends (by any process sharing this store, where the backend can tell:
    /// PostgreSQL through `LISTEN/NOTIFY`, SQLite for appends made through this handle).
    /// A lagging receiver may miss notifications; it should re-read the store then.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Appended>;

    /// How long a reader waiting on [`EventStore::subscribe`] should go without a
    /// notification before re-reading the store anyway: short where other processes'
    /// appends are not announced (SQLite), long where they are (PostgreSQL, where it only
    /// covers notifications lost while the listener reconnects).
    fn quiet_recheck(&self) -> Duration;

    /// Samples of the latest `latest` sessions of `workflow` (at most
    /// [`stats::MAX_SAMPLED_SESSIONS`]) and their step-graph nodes, for per-workflow and
    /// per-step statistics; read from the projections and the events they point at.
    async fn workflow_samples(
        &self,
        workflow: &WorkflowId,
        latest: u32,
    ) -> Result<stats::WorkflowSamples, StoreError>;

    /// Sessions per workflow (all time), with how many completed and how many failed.
    async fn workflow_counts(&self) -> Result<Vec<stats::WorkflowCounts>, StoreError>;

    /// Close the connections (SQLite checkpoints its WAL).
    async fn close(&self);

    /// The trace-analysis storage of this backend, when it has one (same database).
    fn insights(&self) -> Option<&dyn InsightsStore> {
        None
    }
}
