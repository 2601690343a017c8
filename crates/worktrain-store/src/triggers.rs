//! Trigger state: persisted webhook deliveries, the append-only log of trigger
//! decisions (queryable per trigger and per source item), source items (dedupe and retry
//! budget), poll cursors and seen items, schedule state. [`TriggerStore`] is the
//! contract; every backend implements it with the same semantics.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

/// A webhook delivery to persist (authenticated already).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The trigger it was sent to.
    pub trigger_id: String,
    /// The sender's delivery id (or the body's digest): unique per trigger.
    pub delivery_key: String,
    /// Headers worth keeping (signatures and tokens removed).
    pub headers: Value,
    /// The raw body.
    pub body: Vec<u8>,
    /// The `received` decision recorded with it (kind, reason, event, detail).
    pub decision: NewDecision,
}

/// What persisting a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryInsert {
    /// New: stored as pending, with its `received` decision.
    Stored {
        /// Id of the stored delivery (also its order of arrival).
        id: i64,
    },
    /// The same delivery key was seen before: a `duplicate` decision was recorded instead.
    Duplicate {
        /// The earlier delivery.
        id: i64,
    },
}

/// A stored delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Id (also the order of arrival).
    pub id: i64,
    /// Id of the trigger the delivery arrived for.
    pub trigger_id: String,
    /// The sender's delivery id (e.g. GitHub's `X-GitHub-Delivery`): a redelivery with the
    /// same key is recorded as a duplicate, not run twice.
    pub delivery_key: String,
    /// When it arrived.
    pub received_at_ms: i64,
    /// Request headers kept for inspection, as a JSON object; secret-bearing headers
    /// (signatures, tokens) are dropped before storing.
    pub headers: Value,
    /// The request body exactly as received (not serialised with the delivery).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// `pending` until decided, then `done`.
    pub status: String,
    /// When it was decided.
    pub decided_at_ms: Option<i64>,
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDecision {
    /// Id of the trigger that made the decision.
    pub trigger_id: String,
    /// Kind (`dispatched`, `filtered`, …).
    pub decision: String,
    /// For humans: why.
    pub reason: String,
    /// `event.action`, when there was an event.
    pub event: Option<String>,
    /// The delivery it is about.
    pub delivery_id: Option<i64>,
    /// The source item.
    pub source: Option<String>,
    /// The session dispatched, cancelled or kept.
    pub session_id: Option<String>,
    /// Structured detail (failed condition and value seen, scheduled/fired times, …).
    pub detail: Value,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Position in the log.
    pub id: i64,
    /// When the decision was recorded (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// The decision itself, as it was recorded.
    #[serde(flatten)]
    pub body: NewDecision,
}

/// Filter for reading decisions.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// Only this trigger.
    pub trigger_id: Option<String>,
    /// Only this source item.
    pub source: Option<String>,
    /// Only this kind.
    pub decision: Option<String>,
    /// Only decisions with `id < before` (newest first paging).
    pub before: Option<i64>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// Where a source item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// A session for it is unfinished.
    Active,
    /// Its last session failed; another attempt is due at `next_attempt_at_ms`.
    RetryWait,
    /// Its last session completed or was cancelled.
    Done,
    /// The retry budget is used up; only a `retry` command or a manual fire restarts it.
    Exhausted,
}

impl SourceState {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Active => "active",
            SourceState::RetryWait => "retry_wait",
            SourceState::Done => "done",
            SourceState::Exhausted => "exhausted",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            SourceState::Active,
            SourceState::RetryWait,
            SourceState::Done,
            SourceState::Exhausted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A source item (`github:owner/repo#123`) and the sessions started for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceItem {
    /// The item's source reference (`github:owner/repo#123`).
    pub source: String,
    /// The trigger that last dispatched it.
    pub trigger_id: String,
    /// Its latest session.
    pub session_id: Option<String>,
    /// Where the item stands (see [`SourceState`]).
    pub state: SourceState,
    /// Sessions started in the current budget.
    pub attempts: u32,
    /// When the next retry is due.
    pub next_attempt_at_ms: Option<i64>,
    /// The dispatch snapshot retries repeat (workflow, goal, context, …).
    pub request: Value,
    /// When the row last changed (ms since the Unix epoch).
    pub updated_at_ms: i64,
}

/// A poll's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PollCursor {
    /// Id of the poll trigger this cursor belongs to.
    pub trigger_id: String,
    /// ETag of the first page of the last full listing.
    pub etag: Option<String>,
    /// The first poll (which only remembers existing items) is done.
    pub baseline_done: bool,
    /// When it last polled.
    pub last_polled_at_ms: Option<i64>,
    /// Not before (rate limits, `Retry-After`).
    pub next_poll_at_ms: Option<i64>,
    /// The last failure, when the last poll failed.
    pub last_error: Option<String>,
}

/// A schedule's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Id of the schedule trigger this state belongs to.
    pub trigger_id: String,
    /// The cron expression and zone it was computed with.
    pub cron: String,
    /// The last due time handled (fired or recorded missed).
    pub last_scheduled_at_ms: i64,
    /// When it last fired.
    pub last_fired_at_ms: Option<i64>,
    /// The session of the last firing.
    pub last_session_id: Option<String>,
}

/// Trigger state storage. Every backend implements it; conformance tests in
/// `tests/triggers.rs`.
#[async_trait]
pub trait TriggerStore: Send + Sync + 'static {
    /// Persist deliveries with their `received` decisions in one transaction (a batch of
    /// concurrent requests shares one commit). A delivery key seen before for the same
    /// trigger records a `duplicate` decision instead. One result per input, in order.
    async fn insert_deliveries(
        &self,
        batch: Vec<NewDelivery>,
    ) -> Result<Vec<DeliveryInsert>, StoreError>;

    /// Pending deliveries, oldest first.
    async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError>;

    /// The delivery with this id; `None` when there is none.
    async fn delivery(&self, id: i64) -> Result<Option<Delivery>, StoreError>;

    /// Mark a delivery decided and record the decisions, in one transaction.
    async fn finish_delivery(&self, id: i64, decisions: Vec<NewDecision>)
    -> Result<(), StoreError>;

    /// Record a decision; returns its id.
    async fn record_decision(&self, decision: NewDecision) -> Result<i64, StoreError>;

    /// Decisions, newest first.
    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, StoreError>;

    /// Number of decisions of `trigger_id` by kind.
    async fn decision_counts(&self, trigger_id: &str) -> Result<Vec<(String, u64)>, StoreError>;

    /// A source item.
    async fn source_item(&self, source: &str) -> Result<Option<SourceItem>, StoreError>;

    /// Create or replace a source item.
    async fn put_source_item(&self, item: &SourceItem) -> Result<(), StoreError>;

    /// Source items in `state`.
    async fn source_items(&self, state: SourceState) -> Result<Vec<SourceItem>, StoreError>;

    /// A poll cursor.
    async fn poll_cursor(&self, trigger_id: &str) -> Result<Option<PollCursor>, StoreError>;

    /// Save a poll cursor.
    async fn put_poll_cursor(&self, cursor: &PollCursor) -> Result<(), StoreError>;

    /// The `updated_at` last seen for each of `keys` (missing keys are absent).
    async fn poll_seen(
        &self,
        trigger_id: &str,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Remember items as seen at their `updated_at`.
    async fn mark_poll_seen(
        &self,
        trigger_id: &str,
        items: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// A schedule's state.
    async fn schedule_state(&self, trigger_id: &str) -> Result<Option<ScheduleState>, StoreError>;

    /// Save a schedule's state.
    async fn put_schedule_state(&self, state: &ScheduleState) -> Result<(), StoreError>;
}
