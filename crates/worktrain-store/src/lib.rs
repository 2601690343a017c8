//! The worktrain event store: an append-only log of session events with optimistic
//! concurrency, idempotency keys, a per-session hash chain, content-addressed blobs and
//! projections maintained in the same transaction as the events they derive from.
//!
//! [`EventStore`] is the contract; [`sqlite::SqliteStore`] is the embedded default.
//! Backends are interchangeable: every backend must pass the conformance tests in
//! `tests/conformance.rs`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use worktrain_core::event::{NewEvent, StoredEvent};
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, WorkflowId};
use worktrain_core::projection::{
    AttemptRecord, NodeRecord, ProjectionError, QueueRow, SessionStatus, SessionSummary,
};

pub mod sqlite;
pub mod triggers;

pub use sqlite::SqliteStore;
pub use triggers::TriggerStore;

/// A batch of events to append to one session, atomically.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The session.
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

/// Filter for listing sessions.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions of this workflow.
    pub workflow: Option<WorkflowId>,
    /// Only sessions whose workspace is this directory or inside it.
    pub workspace: Option<String>,
    /// Only sessions whose goal, workflow id or branch contains this text (case-insensitive).
    pub text: Option<String>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
}

/// The outcome of verifying a session's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Session.
    pub session_id: SessionId,
    /// Events checked.
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
    /// What failed.
    pub reason: String,
}

/// Counts from a projection rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    /// Sessions rebuilt.
    pub sessions: u64,
    /// Events folded.
    pub events: u64,
}

/// A deterministic dump of every projection table, for comparing an incrementally
/// maintained store with a rebuilt one.
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
}

/// A worker's lease on a running session (operational state, renewed by heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Session.
    pub session_id: SessionId,
    /// Worker holding it.
    pub worker: String,
    /// Expiry (ms since the Unix epoch).
    pub expires_at_ms: i64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended first.
    #[error("session {session} moved on: expected last seq {expected}, found {actual}")]
    SeqConflict {
        /// Session.
        session: SessionId,
        /// What the writer expected.
        expected: Seq,
        /// What the log holds.
        actual: Seq,
    },
    /// A blob is over the size limit.
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    BlobTooLarge {
        /// Size.
        size: usize,
        /// Limit.
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
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// Applying migrations failed.
    #[error("migrating the database failed: {0}")]
    Migration(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The event store contract. Every backend implements it; the engine depends only on it.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Append a batch atomically: check the expected sequence number, honour idempotency
    /// keys, extend the hash chain, store blobs and update projections — all in one
    /// transaction.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// The session summary (one row; never a log scan).
    async fn session(&self, id: SessionId) -> Result<Option<SessionSummary>, StoreError>;

    /// List session summaries, most recently updated first.
    async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError>;

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

    /// Events of one session with `seq > after`, at most `limit`.
    async fn events(
        &self,
        id: SessionId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of all sessions with `position > after`, at most `limit` (for tailing).
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

    /// The run queue (queued and running runs), in claim order: priority, then age
    /// (first queued first, also within one millisecond).
    async fn queue(&self) -> Result<Vec<QueueRow>, StoreError>;

    /// Create or extend a worker's lease on a running session.
    async fn renew_lease(
        &self,
        id: SessionId,
        worker: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Drop a lease (the run ended or was handed back).
    async fn release_lease(&self, id: SessionId) -> Result<(), StoreError>;

    /// Every lease.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// The session dispatched with this idempotency key, if any.
    async fn session_by_dispatch_key(&self, key: &str) -> Result<Option<SessionId>, StoreError>;
}
