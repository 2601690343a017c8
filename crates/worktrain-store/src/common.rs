//! What both backends share: preparing an append (hash chain + projection fold), the
//! derived columns of a session row, chain verification and small conversions. Only the
//! SQL differs between backends; every decision is made here, once.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use worktrain_core::event::{EventBody, NewEvent, StoredEvent, chain_hash};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::projection::{ProjectionChange, SessionSummary, apply};

use crate::{BrokenLink, ChainReport, RawEvent, StoreError};

/// The wall clock as the store stamps events and leases: milliseconds since the Unix
/// epoch (0 if the clock is before 1970, `i64::MAX` past the year 292 million). Every crate
/// that compares a time with a stored one reads it here, so both sides use one clock rule.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The snake_case wire name of a serde enum value.
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    match serde_json::to_value(v).map_err(corrupt)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(corrupt(format!("expected a string enum, got {other}"))),
    }
}

pub(crate) fn enum_from<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(corrupt)
}

pub(crate) fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(crate) fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Separates the fields of [`search_text`]; a needle containing it cannot match.
const SEARCH_SEPARATOR: char = '\u{1f}';

/// The lowercase text a [`crate::SessionFilter::text`] is matched against: goal,
/// workflow id and branch. Lowercased here (Unicode, by Rust) rather than by the
/// database, whose `lower()` differs between backends and locales.
pub(crate) fn search_text(summary: &SessionSummary) -> String {
    let mut s = summary.goal.to_lowercase();
    s.push(SEARCH_SEPARATOR);
    s.push_str(&summary.workflow_id.as_str().to_lowercase());
    s.push(SEARCH_SEPARATOR);
    if let Some(b) = &summary.branch {
        s.push_str(&b.to_lowercase());
    }
    s
}

/// The needle for a text filter (`None`: nothing can match).
pub(crate) fn search_needle(text: &str) -> Option<String> {
    (!text.contains(SEARCH_SEPARATOR)).then(|| text.to_lowercase())
}

/// A workspace filter: the directory itself and the prefix of everything inside it.
pub(crate) fn workspace_prefix(ws: &str) -> (String, String) {
    let ws = ws.trim_end_matches('/');
    (ws.to_owned(), format!("{ws}/"))
}

/// The `sessions` row of a summary: its columns and the full summary as JSON.
pub(crate) struct SessionRow {
    pub session_id: String,
    pub workflow_id: String,
    pub workflow_hash: String,
    pub status: &'static str,
    pub goal: String,
    pub workspace: Option<String>,
    pub branch: Option<String>,
    pub run_state: Option<&'static str>,
    pub search_text: String,
    pub current_node: Option<i64>,
    pub current_step: Option<String>,
    pub last_seq: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub summary: String,
}

impl SessionRow {
    pub(crate) fn of(s: &SessionSummary) -> Result<Self, StoreError> {
        Ok(Self {
            session_id: s.session_id.to_string(),
            workflow_id: s.workflow_id.as_str().to_owned(),
            workflow_hash: s.workflow_hash.to_hex(),
            status: s.status.as_str(),
            goal: s.goal.clone(),
            workspace: s.workspace.clone(),
            branch: s.branch.clone(),
            run_state: s.run.as_ref().map(|r| r.state.as_str()),
            search_text: search_text(s),
            current_node: s.current.as_ref().map(|c| i64::from(c.node.0)),
            current_step: s.current.as_ref().map(|c| c.step_id.as_str().to_owned()),
            last_seq: to_i64(s.last_seq.0),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            summary: serde_json::to_string(s).map_err(corrupt)?,
        })
    }
}

/// One event row ready to insert.
pub(crate) struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub payload: String,
    pub created_at_ms: i64,
    pub idempotency_key: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    /// The event (re)queues a run: the queue row takes this event's position as its
    /// place among runs queued in the same millisecond.
    pub sets_queue_order: bool,
}

/// Everything one append writes, decided before touching the database.
pub(crate) struct PreparedAppend {
    /// Event rows, in order.
    pub rows: Vec<EventRow>,
    /// Projection changes, each with the index (in `rows`) of the event it derives from.
    pub changes: Vec<(usize, ProjectionChange)>,
    /// The summary after the last event.
    pub summary: SessionSummary,
    /// Dispatch keys introduced by the batch.
    pub dispatch_keys: Vec<String>,
}

impl PreparedAppend {
    /// Whether the batch ends the session's run (its queue row goes, and the run is over
    /// when the batch is): the run's lease goes in the same transaction, as the claim that
    /// started the run created it.
    pub(crate) fn ends_run(&self) -> bool {
        self.changes
            .iter()
            .any(|(_, c)| matches!(c, ProjectionChange::RemoveQueue))
            && self.summary.run.as_ref().is_none_or(|r| r.state.is_final())
    }
}

fn sets_queue_order(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::RunQueued { .. } | EventBody::RunRequeued { .. }
    )
}

fn dispatch_key(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::RunQueued { dispatch_key, .. } => dispatch_key.as_deref(),
        // Listed so that a new event carrying a dispatch key is a compile error here.
        EventBody::SessionStarted { .. }
        | EventBody::NodeEntered { .. }
        | EventBody::StepSkipped { .. }
        | EventBody::BlockSkipped { .. }
        | EventBody::StepBlocked { .. }
        | EventBody::StepCompleted { .. }
        | EventBody::StepParked { .. }
        | EventBody::GateApproved { .. }
        | EventBody::GateRejected { .. }
        | EventBody::LoopEntered { .. }
        | EventBody::LoopPassStarted { .. }
        | EventBody::LoopExited { .. }
        | EventBody::JumpTaken { .. }
        | EventBody::JumpExhausted { .. }
        | EventBody::CheckpointRecorded { .. }
        | EventBody::SessionRewound { .. }
        | EventBody::RunStarted { .. }
        | EventBody::RunInterrupted { .. }
        | EventBody::RunRequeued { .. }
        | EventBody::RunFinished { .. }
        | EventBody::CancelRequested { .. }
        | EventBody::Steered { .. }
        | EventBody::AgentActivity { .. }
        | EventBody::StepSnapshotted { .. }
        | EventBody::WorktreeRestored { .. }
        | EventBody::HookRan { .. }
        | EventBody::SourceIneligible { .. }
        | EventBody::PostMortemRecorded { .. }
        | EventBody::WorkCommitted { .. }
        | EventBody::WorktreeRemoved { .. }
        | EventBody::DeliveryStarted { .. }
        | EventBody::DeliveryStageCompleted { .. }
        | EventBody::DeliveryFailed { .. }
        | EventBody::NotificationSent { .. }
        | EventBody::NotificationFailed { .. }
        | EventBody::DeliveryFinished { .. }
        | EventBody::SessionCompleted { .. } => None,
    }
}

/// Chain and fold a batch of new events onto a session whose projection is `summary`
/// (`None`: a new session), stamping them `now`.
pub(crate) fn prepare_append(
    session_id: SessionId,
    mut summary: Option<SessionSummary>,
    events: Vec<NewEvent>,
    now: i64,
) -> Result<PreparedAppend, StoreError> {
    let last = summary.as_ref().map(|s| s.last_seq).unwrap_or(Seq(0));
    let mut prev = summary
        .as_ref()
        .map(|s| s.last_hash)
        .unwrap_or(Sha256Hash::ZERO);
    let mut rows = Vec::with_capacity(events.len());
    let mut changes = Vec::new();
    let mut dispatch_keys = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let seq = Seq(last.0 + i as u64 + 1);
        let kind = event.body.kind().as_str();
        let payload = event.body.canonical_bytes().map_err(corrupt)?;
        let hash = chain_hash(&prev, session_id, seq, kind, now, &payload);
        let payload = String::from_utf8(payload).map_err(corrupt)?;
        if let Some(key) = dispatch_key(&event.body) {
            dispatch_keys.push(key.to_owned());
        }
        let order = sets_queue_order(&event.body);
        let stored = StoredEvent {
            position: 0,
            session_id,
            seq,
            created_at_ms: now,
            idempotency_key: event.idempotency_key,
            prev_hash: prev,
            hash,
            body: event.body,
        };
        let (next, change) = apply(summary.take(), &stored)?;
        summary = Some(next);
        changes.extend(change.into_iter().map(|c| (i, c)));
        rows.push(EventRow {
            seq: to_i64(seq.0),
            kind: kind.to_owned(),
            payload,
            created_at_ms: now,
            idempotency_key: stored.idempotency_key,
            prev_hash: prev.to_hex(),
            hash: hash.to_hex(),
            sets_queue_order: order,
        });
        prev = hash;
    }
    let summary = summary.ok_or(StoreError::EmptyAppend)?;
    Ok(PreparedAppend {
        rows,
        changes,
        summary,
        dispatch_keys,
    })
}

/// Check and fold a session's events copied from another store: the chain must verify,
/// so that a copy is never a silent alteration.
pub(crate) fn prepare_import(events: Vec<RawEvent>) -> Result<PreparedAppend, StoreError> {
    let Some(first) = events.first() else {
        return Err(StoreError::EmptyAppend);
    };
    let session_id = first.session_id;
    let mut check = ChainCheck::new(session_id);
    let mut summary: Option<SessionSummary> = None;
    let mut rows = Vec::with_capacity(events.len());
    let mut changes = Vec::new();
    let mut dispatch_keys = Vec::new();
    for (i, raw) in events.into_iter().enumerate() {
        if raw.session_id != session_id {
            return Err(corrupt(format!(
                "an import mixes sessions {session_id} and {}",
                raw.session_id
            )));
        }
        if let Some(report) = check.check(&raw) {
            let reason = report
                .first_broken
                .map(|b| format!("seq {}: {}", b.seq, b.reason))
                .unwrap_or_default();
            return Err(corrupt(format!(
                "session {session_id} does not verify in the source store ({reason}); nothing copied"
            )));
        }
        let stored = raw_to_stored(&raw)?;
        if let Some(key) = dispatch_key(&stored.body) {
            dispatch_keys.push(key.to_owned());
        }
        let order = sets_queue_order(&stored.body);
        let (next, change) = apply(summary.take(), &stored)?;
        summary = Some(next);
        changes.extend(change.into_iter().map(|c| (i, c)));
        rows.push(EventRow {
            seq: to_i64(raw.seq.0),
            kind: raw.kind,
            payload: raw.payload,
            created_at_ms: raw.created_at_ms,
            idempotency_key: raw.idempotency_key,
            prev_hash: raw.prev_hash.to_hex(),
            hash: raw.hash.to_hex(),
            sets_queue_order: order,
        });
    }
    let summary = summary.ok_or(StoreError::EmptyAppend)?;
    Ok(PreparedAppend {
        rows,
        changes,
        summary,
        dispatch_keys,
    })
}

/// Parse a raw event's payload.
pub(crate) fn raw_to_stored(raw: &RawEvent) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        position: raw.position,
        session_id: raw.session_id,
        seq: raw.seq,
        created_at_ms: raw.created_at_ms,
        idempotency_key: raw.idempotency_key.clone(),
        prev_hash: raw.prev_hash,
        hash: raw.hash,
        body: serde_json::from_str(&raw.payload)
            .map_err(|e| corrupt(format!("event payload: {e}")))?,
    })
}

/// Text columns of an event row, before parsing.
pub(crate) struct RawColumns {
    pub position: i64,
    pub session_id: String,
    pub seq: i64,
    pub kind: String,
    pub payload: String,
    pub created_at_ms: i64,
    pub idempotency_key: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl RawColumns {
    /// Parse ids and hashes.
    pub(crate) fn into_raw(self) -> Result<RawEvent, StoreError> {
        Ok(RawEvent {
            position: to_u64(self.position),
            session_id: parse(&self.session_id, "session id")?,
            seq: Seq(to_u64(self.seq)),
            kind: self.kind,
            payload: self.payload,
            created_at_ms: self.created_at_ms,
            idempotency_key: self.idempotency_key,
            prev_hash: parse(&self.prev_hash, "prev hash")?,
            hash: parse(&self.hash, "hash")?,
        })
    }
}

/// Incremental verification of one session's chain, fed events in `seq` order.
pub(crate) struct ChainCheck {
    session_id: SessionId,
    prev: Sha256Hash,
    expected_seq: u64,
    checked: u64,
}

impl ChainCheck {
    pub(crate) fn new(session_id: SessionId) -> Self {
        Self {
            session_id,
            prev: Sha256Hash::ZERO,
            expected_seq: 1,
            checked: 0,
        }
    }

    /// Check the next event; `Some(report)` names the first broken link.
    pub(crate) fn check(&mut self, e: &RawEvent) -> Option<ChainReport> {
        self.check_columns(
            e.position,
            e.seq.0,
            &e.kind,
            &e.payload,
            e.created_at_ms,
            &e.prev_hash.to_hex(),
            &e.hash.to_hex(),
        )
    }

    /// Check the next event from its stored text columns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_columns(
        &mut self,
        position: u64,
        seq: u64,
        kind: &str,
        payload: &str,
        created_at_ms: i64,
        stored_prev: &str,
        stored_hash: &str,
    ) -> Option<ChainReport> {
        let broken = |this: &Self, reason: String| ChainReport {
            session_id: this.session_id,
            events: this.checked,
            head: this.prev,
            first_broken: Some(BrokenLink {
                seq: Seq(seq),
                position,
                reason,
            }),
        };
        if seq != self.expected_seq {
            let expected = self.expected_seq;
            return Some(broken(
                self,
                format!("sequence gap: expected seq {expected}, found {seq}"),
            ));
        }
        if stored_prev != self.prev.to_hex() {
            return Some(broken(
                self,
                format!(
                    "prev_hash {} does not match the previous event's hash {}",
                    short(stored_prev),
                    self.prev.short()
                ),
            ));
        }
        let recomputed = chain_hash(
            &self.prev,
            self.session_id,
            Seq(seq),
            kind,
            created_at_ms,
            payload.as_bytes(),
        );
        if stored_hash != recomputed.to_hex() {
            return Some(broken(
                self,
                format!(
                    "content does not match its hash (stored {}, recomputed {})",
                    short(stored_hash),
                    recomputed.short()
                ),
            ));
        }
        match serde_json::from_str::<EventBody>(payload) {
            Ok(body) if body.kind().as_str() == kind => {}
            Ok(body) => {
                return Some(broken(
                    self,
                    format!(
                        "kind column `{kind}` does not match payload type `{}`",
                        body.kind().as_str()
                    ),
                ));
            }
            Err(e) => {
                return Some(broken(self, format!("payload is not a valid event: {e}")));
            }
        }
        self.prev = recomputed;
        self.expected_seq += 1;
        self.checked += 1;
        None
    }

    /// The report once every event was checked, comparing the projection's head with
    /// the log's (`None`: the session has no events).
    pub(crate) fn finish(self, summary: Option<SessionSummary>) -> Option<ChainReport> {
        if self.checked == 0 {
            return None;
        }
        let (prev, checked) = (self.prev, self.checked);
        if let Some(s) = summary
            && (s.last_hash != prev || s.last_seq.0 != checked)
        {
            return Some(ChainReport {
                session_id: self.session_id,
                events: checked,
                head: prev,
                first_broken: Some(BrokenLink {
                    seq: s.last_seq,
                    position: 0,
                    reason: format!(
                        "the session projection points at seq {} / {}, but the log ends at seq {checked} / {}; run `worktrain admin rebuild-projections`",
                        s.last_seq,
                        s.last_hash.short(),
                        prev.short()
                    ),
                }),
            });
        }
        Some(ChainReport {
            session_id: self.session_id,
            events: checked,
            head: prev,
            first_broken: None,
        })
    }
}

/// Whether a candidate run fits the caps, given the runs running now.
pub(crate) fn fits_caps(
    caps: &crate::RunCaps,
    running: &[(Option<String>, Option<String>)],
    workspace: &Option<String>,
    trigger: &Option<String>,
) -> bool {
    if running.len() >= caps.total {
        return false;
    }
    if caps.per_workspace > 0
        && workspace.is_some()
        && running.iter().filter(|(w, _)| w == workspace).count() >= caps.per_workspace
    {
        return false;
    }
    if let Some(t) = trigger
        && let Some(cap) = caps.per_trigger.get(t)
        && running
            .iter()
            .filter(|(_, x)| x.as_deref() == Some(t.as_str()))
            .count()
            >= *cap
    {
        return false;
    }
    true
}

/// A nullable `run_state` column: `None` for sessions never dispatched.
pub(crate) fn run_state_column(
    value: Option<String>,
) -> Result<Option<worktrain_core::run::RunState>, StoreError> {
    value
        .map(|s| {
            worktrain_core::run::RunState::parse(&s)
                .ok_or_else(|| corrupt(format!("unknown run state `{s}`")))
        })
        .transpose()
}

/// How many sessions [`RecentSummaries`] holds per generation: a process advances a few
/// sessions at a time (a daemon, its `max_concurrent_sessions`), and a summary carries its
/// context (up to 256 KiB), so a few dozen bound the memory it takes.
const RECENT_SUMMARIES: usize = 64;

/// The summaries a store handle last wrote or read, per session: what
/// [`EventStore::recent_summary`](crate::EventStore::recent_summary) answers from.
///
/// Bounded by two generations of at most [`RECENT_SUMMARIES`] sessions: when the newer
/// fills, the older is dropped and the newer takes its place, so a session still being
/// advanced stays while idle ones age out. An entry never goes back in time: a summary at
/// a lower `last_seq` than the one held (a read that raced a write) is ignored.
#[derive(Debug, Default)]
pub(crate) struct RecentSummaries {
    generations: std::sync::Mutex<RecentGenerations>,
}

#[derive(Debug, Default)]
struct RecentGenerations {
    newer: std::collections::HashMap<SessionId, std::sync::Arc<SessionSummary>>,
    older: std::collections::HashMap<SessionId, std::sync::Arc<SessionSummary>>,
}

impl RecentSummaries {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecentGenerations> {
        // The maps are consistent after any panic (each operation is one insert or
        // remove), so a poisoned lock is still usable.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The summary held for `id`, if any.
    pub(crate) fn get(&self, id: SessionId) -> Option<std::sync::Arc<SessionSummary>> {
        let g = self.lock();
        g.newer.get(&id).or_else(|| g.older.get(&id)).cloned()
    }

    /// Hold `summary`, unless a later one of the same session is held already.
    pub(crate) fn put(&self, summary: &SessionSummary) {
        let mut g = self.lock();
        let id = summary.session_id;
        let held = g.newer.get(&id).or_else(|| g.older.get(&id));
        if held.is_some_and(|h| h.last_seq > summary.last_seq) {
            return;
        }
        g.older.remove(&id);
        if g.newer.len() >= RECENT_SUMMARIES && !g.newer.contains_key(&id) {
            g.older = std::mem::take(&mut g.newer);
        }
        g.newer.insert(id, std::sync::Arc::new(summary.clone()));
    }

    /// Drop what is held for `id`.
    pub(crate) fn forget(&self, id: SessionId) {
        let mut g = self.lock();
        g.newer.remove(&id);
        g.older.remove(&id);
    }

    /// Drop everything (after projections were rebuilt).
    pub(crate) fn clear(&self) {
        let mut g = self.lock();
        g.newer.clear();
        g.older.clear();
    }
}
