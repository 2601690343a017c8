//! The trigger runtime inside the daemon: holds the current [`TriggerIndex`] (hot
//! reloaded: a valid file is swapped in atomically, an invalid one keeps the old index
//! and its error is shown), takes webhook deliveries (verify → persist with a `received`
//! decision, batched into shared commits → answer), processes them after the answer
//! (also after a crash: pending deliveries are in the store), fires schedules, settles
//! source items (retries with backoff, budget exhaustion) and records every decision.
//!
//! Side effects on sessions go through [`Host`], which the daemon implements over its
//! supervisor; the runtime never touches the engine directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};
use worktrain_core::run::{
    DeliverySettings, ReconcileAction, RunLimits, RunState, SourceRef, TriggerKind, WorkspaceHooks,
};
use worktrain_store::triggers::{
    Decision, DecisionFilter, Delivery, DeliveryInsert, NewDecision, NewDelivery, ScheduleState,
    SourceItem, SourceState, TriggerStore,
};

use crate::config::{self, ConfigError, Overlap, Source, Trigger, TriggerIndex, Workspace};
use crate::decide::{self, DecisionKind, Plan, Verdict};
use crate::env::EnvSource;
use crate::inbound::{self, Inbound, InboundError, ItemStatus, Provider};
use crate::schedule::{self, CronSchedule, Firing};
use crate::verify::{self, Headers, Rejection};

/// A session the runtime asks the host to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchSpec {
    /// Id of the trigger that asks (recorded as the run's trigger; counts against its cap).
    pub trigger_id: String,
    /// Webhook, poll or cron.
    pub kind: TriggerKind,
    /// The workflow the session runs (id or path), from the trigger.
    pub workflow: String,
    /// The session goal, rendered from the event with the trigger's goal template.
    pub goal: String,
    /// The session's start context, mapped from the event by the trigger's `context`.
    pub context: Map<String, Value>,
    /// Where the session works (a path, or a repository to clone); `None` for no workspace.
    pub workspace: Option<Workspace>,
    /// Base branch the session branch starts from; `None` uses the workspace's default.
    pub base: Option<String>,
    /// Agent profile to run with; `None` uses the daemon's default agent.
    pub agent: Option<String>,
    /// Budget overrides of the run (each one left out uses the daemon's default).
    pub limits: RunLimits,
    /// Queue priority of the run (higher runs first).
    pub priority: i32,
    /// Review-style run: a detached worktree, nothing delivered.
    pub readonly: bool,
    /// The issue/PR/MR the session works on, when the event is about one (for reconciliation
    /// and retries).
    pub source: Option<SourceRef>,
    /// What happens to the finished work; `None` uses the daemon's default delivery.
    pub delivery: Option<DeliverySettings>,
    /// Workspace hooks for the session (the trigger's over the workspace's); `None` for none.
    pub hooks: Option<WorkspaceHooks>,
    /// Deterministic idempotency key (a redelivery or a reprocessing after a crash finds
    /// the same session).
    pub idempotency_key: String,
}

/// A host failure (dispatch refused, store down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// What the runtime needs from the daemon.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Dispatch a session; returns its id and whether it was created (false: the
    /// idempotency key matched an existing one).
    async fn dispatch(&self, spec: &DispatchSpec) -> Result<(String, bool), HostError>;
    /// The run state of a session (`None`: unknown or not a daemon run).
    async fn run_state(&self, session: &str) -> Result<Option<RunState>, HostError>;
    /// Runs of `trigger` waiting in the queue.
    async fn queued(&self, trigger: &str) -> Result<usize, HostError>;
    /// Record that a session's source stopped qualifying, and cancel it when `cancel`.
    async fn source_ineligible(
        &self,
        session: &str,
        source: &SourceRef,
        trigger: &str,
        reason: &str,
        action: ReconcileAction,
    ) -> Result<(), HostError>;
    /// Per-trigger running caps changed (from `concurrency` and schedule overlap).
    fn set_trigger_caps(&self, caps: BTreeMap<String, usize>);
    /// Secret values of a (re)loaded triggers file, to redact from agents' output.
    fn add_secrets(&self, secrets: Vec<String>) {
        let _ = secrets;
    }
}

/// Where the runtime's clock comes from (tests inject one).
pub trait Clock: Send + Sync + 'static {
    /// The current time, in UTC (schedules and retry backoff are computed from it).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The answer to a webhook request.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// Persisted; processing follows (`202`).
    Accepted {
        /// Id of the stored delivery, which is processed after the answer.
        delivery: i64,
    },
    /// Seen before (`200`): recorded as a duplicate, nothing else happens.
    Duplicate {
        /// The earlier delivery.
        delivery: i64,
    },
    /// GitHub's ping (`200`).
    Ping,
    /// No such webhook trigger (`404`).
    NotFound,
    /// The content type is not JSON (or a form, for GitHub) (`415`).
    UnsupportedMediaType(String),
    /// Authentication failed (`401`); recorded.
    Rejected(Rejection),
    /// Authenticated, but not an event (`400`); recorded.
    BadBody(InboundError),
    /// The store failed (`503`): the sender should retry.
    Unavailable(String),
}

/// How the current index was loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStatus {
    /// Path of the `triggers.yml` file the index is loaded from.
    pub file: String,
    /// Whether it exists.
    pub present: bool,
    /// Digest of the active index's file (empty when none).
    pub digest: String,
    /// When the active index was loaded (ms).
    pub loaded_at_ms: i64,
    /// The last load error, when the file on disk is invalid (the previous index stays
    /// active).
    pub error: Option<ConfigError>,
    /// When that error was seen.
    pub error_at_ms: Option<i64>,
}

type Pending = (NewDelivery, oneshot::Sender<Result<DeliveryInsert, String>>);

/// Rejected deliveries recorded per trigger per minute (more are only logged): a flood
/// of forged requests must not fill the store.
const REJECTIONS_PER_MINUTE: u32 = 60;

/// The trigger runtime of one daemon (see the module docs): the current trigger index, the
/// webhook intake, schedules and source-item bookkeeping, with every decision recorded in
/// the [`TriggerStore`].
pub struct Runtime {
    store: Arc<dyn TriggerStore>,
    host: Arc<dyn Host>,
    clock: Arc<dyn Clock>,
    file: Option<PathBuf>,
    env: EnvSource,
    index: RwLock<Arc<TriggerIndex>>,
    status: RwLock<LoadStatus>,
    file_sig: Mutex<Option<(std::time::SystemTime, u64)>>,
    intake: mpsc::Sender<Pending>,
    intake_rx: Mutex<Option<mpsc::Receiver<Pending>>>,
    work: Notify,
    dispatch_lock: tokio::sync::Mutex<()>,
    rejections: Mutex<BTreeMap<String, (i64, u32)>>,
    hold: bool,
    forges: Mutex<BTreeMap<String, Arc<dyn worktrain_forge::Forge>>>,
}

/// Fault injection for crash tests: while set in the daemon's environment, persisted
/// deliveries are not processed (as if the daemon died right after answering `202`).
pub const HOLD_ENV: &str = "WORKTRAIN_TEST_HOLD_WEBHOOKS";

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Headers never stored with a delivery (credentials).
const SECRET_HEADERS: &[&str] = &[
    "x-hub-signature",
    "x-hub-signature-256",
    "x-gitlab-token",
    "webhook-signature",
    "authorization",
    "cookie",
];

/// A decision with only trigger, kind, reason and detail set.
pub fn new_decision(
    trigger: &str,
    kind: DecisionKind,
    reason: impl Into<String>,
    detail: Value,
) -> NewDecision {
    decision(trigger, kind, reason, detail)
}

fn decision(
    trigger: &str,
    kind: DecisionKind,
    reason: impl Into<String>,
    detail: Value,
) -> NewDecision {
    NewDecision {
        trigger_id: trigger.to_owned(),
        decision: kind.as_str().to_owned(),
        reason: reason.into(),
        event: None,
        delivery_id: None,
        source: None,
        session_id: None,
        detail,
    }
}

impl Runtime {
    /// A runtime reading `file` (absent: no triggers until it appears).
    pub fn new(
        store: Arc<dyn TriggerStore>,
        host: Arc<dyn Host>,
        clock: Arc<dyn Clock>,
        file: Option<PathBuf>,
        env: EnvSource,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(4096);
        let rt = Arc::new(Self {
            store,
            host,
            clock,
            file: file.clone(),
            env,
            index: RwLock::new(Arc::new(TriggerIndex::default())),
            status: RwLock::new(LoadStatus {
                file: file.map(|f| f.display().to_string()).unwrap_or_default(),
                present: false,
                digest: String::new(),
                loaded_at_ms: 0,
                error: None,
                error_at_ms: None,
            }),
            file_sig: Mutex::new(None),
            intake: tx,
            intake_rx: Mutex::new(Some(rx)),
            work: Notify::new(),
            dispatch_lock: tokio::sync::Mutex::new(()),
            rejections: Mutex::new(BTreeMap::new()),
            hold: std::env::var_os(HOLD_ENV).is_some_and(|v| v == "1"),
            forges: Mutex::new(BTreeMap::new()),
        });
        rt.reload();
        rt
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The active index.
    pub fn index(&self) -> Arc<TriggerIndex> {
        read(&self.index).clone()
    }

    /// How the active index was loaded, and the last load error.
    pub fn status(&self) -> LoadStatus {
        read(&self.status).clone()
    }

    /// The trigger store deliveries, decisions, cursors and schedules are kept in.
    pub fn store(&self) -> &Arc<dyn TriggerStore> {
        &self.store
    }

    /// Swap in `index` (also used by tests without a file).
    pub fn install(&self, index: TriggerIndex) {
        let mut caps = BTreeMap::new();
        for t in index.triggers.values() {
            let cap = match &t.source {
                Source::Schedule(s) if s.overlap == Overlap::Queue => Some(1),
                Source::Schedule(_)
                | Source::Webhook(_)
                | Source::GithubWebhook(_)
                | Source::GitlabWebhook(_)
                | Source::GithubPoll(_)
                | Source::GitlabPoll(_) => t.concurrency.cap(),
            };
            if let Some(c) = cap {
                caps.insert(t.id.clone(), c);
            }
        }
        self.host.set_trigger_caps(caps);
        self.host.add_secrets(index.secrets());
        let digest = index.digest.clone();
        lock(&self.forges).clear();
        *write(&self.index) = Arc::new(index);
        let mut st = write(&self.status);
        st.digest = digest;
        st.loaded_at_ms = self.now_ms();
        st.error = None;
        st.error_at_ms = None;
    }

    /// Re-read the file if it changed: valid → swapped in; invalid → the old index stays
    /// and the error is kept for `/readyz`, the API and `trigger list`. Returns whether a
    /// new index was installed.
    pub fn reload(&self) -> bool {
        let Some(path) = self.file.clone() else {
            return false;
        };
        let meta = std::fs::metadata(&path).ok();
        let sig = meta
            .as_ref()
            .map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()));
        {
            let mut last = lock(&self.file_sig);
            if *last == sig && read(&self.status).loaded_at_ms != 0 {
                return false;
            }
            *last = sig;
        }
        let name = path.display().to_string();
        let Some(_) = meta else {
            write(&self.status).present = false;
            if !read(&self.index).triggers.is_empty() {
                warn!(file = %name, "triggers file removed; no triggers are active");
            }
            self.install(TriggerIndex::default());
            return true;
        };
        write(&self.status).present = true;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.load_failed(ConfigError {
                    file: name,
                    line: None,
                    column: None,
                    path: None,
                    message: e.to_string(),
                });
                return false;
            }
        };
        let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        if digest == read(&self.status).digest && read(&self.status).error.is_none() {
            return false;
        }
        match config::load(&name, &text, &self.env) {
            Ok(index) => {
                info!(file = %name, triggers = index.triggers.len(), "triggers loaded");
                self.install(index);
                self.work.notify_one();
                true
            }
            Err(e) => {
                self.load_failed(e);
                false
            }
        }
    }

    fn load_failed(&self, e: ConfigError) {
        warn!(error = %e, "triggers file invalid; keeping the previous triggers");
        let mut st = write(&self.status);
        st.error = Some(e);
        st.error_at_ms = Some(self.now_ms());
    }

    /// Run the background tasks until `stop` is cancelled: the intake writer, the
    /// delivery processor, and the 1-second tick (reload, schedules, source items).
    ///
    /// `leader` says whether this daemon leads the store's trigger work: only the
    /// leader fires schedules, settles source items and processes persisted deliveries
    /// (any daemon accepts and persists webhooks). A daemon alone on its store passes a
    /// receiver that is always `true`.
    pub async fn run(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
        mut leader: tokio::sync::watch::Receiver<bool>,
    ) {
        let rx = lock(&self.intake_rx).take();
        let writer = rx.map(|rx| tokio::spawn(self.clone().writer(rx)));
        let poller = tokio::spawn(self.clone().poll_loop(stop.clone(), leader.clone()));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reload = std::time::Instant::now();
        let mut watching = true;
        loop {
            let mut ticked = false;
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.work.notified() => {}
                changed = leader.changed(), if watching => {
                    // The leadership task ended: the last value stands.
                    watching = changed.is_ok();
                }
                _ = tick.tick() => {
                    if last_reload.elapsed() >= Duration::from_secs(2) {
                        last_reload = std::time::Instant::now();
                        self.reload();
                    }
                    ticked = true;
                }
            }
            if !*leader.borrow() {
                continue;
            }
            if ticked {
                self.tick().await;
            }
            self.process_pending().await;
        }
        if let Some(w) = writer {
            w.abort();
        }
        poller.abort();
    }

    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let (rows, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match self.store.insert_deliveries(rows).await {
                Ok(out) => {
                    for (r, o) in replies.into_iter().zip(out) {
                        let _ = r.send(Ok(o));
                    }
                }
                Err(e) => {
                    warn!(error = %e, "persisting webhook deliveries failed");
                    for r in replies {
                        let _ = r.send(Err(e.to_string()));
                    }
                }
            }
            self.work.notify_one();
        }
    }

    fn may_record_rejection(&self, trigger: &str) -> bool {
        let minute = self.now_ms() / 60_000;
        let mut r = lock(&self.rejections);
        let e = r.entry(trigger.to_owned()).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        e.1 += 1;
        e.1 <= REJECTIONS_PER_MINUTE
    }

    /// A webhook request: authenticate on the raw bytes, persist, answer.
    pub async fn ingest(&self, trigger_id: &str, headers: &Headers, body: &[u8]) -> IngestOutcome {
        let Some(trigger) = self.index().get(trigger_id).cloned() else {
            return IngestOutcome::NotFound;
        };
        if !trigger.source.is_webhook() {
            return IngestOutcome::NotFound;
        }
        let ct = headers.get("content-type").map(|c| c.to_ascii_lowercase());
        let json = ct
            .as_deref()
            .is_none_or(|c| c.starts_with("application/json") || c.contains("+json"));
        let form = ct
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        let form_ok = matches!(trigger.source, Source::GithubWebhook(_));
        if !(json || (form && form_ok)) {
            return IngestOutcome::UnsupportedMediaType(ct.unwrap_or_default());
        }
        let now_secs = self.clock.now().timestamp();
        let verified = match &trigger.source {
            Source::GithubWebhook(g) => verify::github(g.secret.value(), headers, body),
            Source::GitlabWebhook(g) => verify::gitlab(g, headers, body, now_secs),
            Source::Webhook(g) => verify::generic(g, headers, body, now_secs),
            Source::GithubPoll(_) | Source::GitlabPoll(_) | Source::Schedule(_) => {
                return IngestOutcome::NotFound;
            }
        };
        if let Err(rej) = verified {
            if self.may_record_rejection(trigger_id) {
                let d = decision(
                    trigger_id,
                    DecisionKind::SignatureRejected,
                    rej.to_string(),
                    json!({"user_agent": headers.get("user-agent"), "bytes": body.len()}),
                );
                if let Err(e) = self.store.record_decision(d).await {
                    warn!(error = %e, "recording a rejected delivery failed");
                }
            } else {
                warn!(trigger = trigger_id, reason = %rej, "rejected delivery (not recorded: rate limit)");
            }
            return IngestOutcome::Rejected(rej);
        }
        let payload = match inbound::parse_body(ct.as_deref(), body) {
            Ok(p) => p,
            Err(e) => {
                let d = decision(
                    trigger_id,
                    DecisionKind::InvalidPayload,
                    e.to_string(),
                    json!({"bytes": body.len()}),
                );
                let _ = self.store.record_decision(d).await;
                return IngestOutcome::BadBody(e);
            }
        };
        let ev = match self.normalise(&trigger, headers, body, payload) {
            Ok(ev) => ev,
            Err(e) => {
                let d = decision(
                    trigger_id,
                    DecisionKind::InvalidPayload,
                    e.to_string(),
                    json!({}),
                );
                let _ = self.store.record_decision(d).await;
                return IngestOutcome::BadBody(e);
            }
        };
        if ev.ping {
            let mut d = decision(
                trigger_id,
                DecisionKind::Ping,
                "ping answered",
                json!({"zen": ev.payload.get("zen")}),
            );
            d.event = Some("ping".into());
            let _ = self.store.record_decision(d).await;
            return IngestOutcome::Ping;
        }
        let kept: Vec<(String, Value)> = headers
            .iter()
            .filter(|(k, _)| {
                !SECRET_HEADERS.contains(k)
                    && match &trigger.source {
                        Source::Webhook(g) => !k.eq_ignore_ascii_case(&g.signature_header),
                        Source::GithubWebhook(_)
                        | Source::GitlabWebhook(_)
                        | Source::GithubPoll(_)
                        | Source::GitlabPoll(_)
                        | Source::Schedule(_) => true,
                    }
            })
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        let mut received = decision(
            trigger_id,
            DecisionKind::Received,
            format!("{} accepted", ev.key()),
            json!({"delivery_key": ev.delivery_id}),
        );
        received.event = Some(ev.key());
        received.source = ev.source.as_ref().map(|s| s.to_string());
        let row = NewDelivery {
            trigger_id: trigger_id.to_owned(),
            delivery_key: ev.delivery_id.clone(),
            headers: Value::Object(kept.into_iter().collect()),
            body: body.to_vec(),
            decision: received,
        };
        let (tx, rx) = oneshot::channel();
        if self.intake.send((row, tx)).await.is_err() {
            return IngestOutcome::Unavailable("the daemon is shutting down".into());
        }
        match rx.await {
            Ok(Ok(DeliveryInsert::Stored { id })) => IngestOutcome::Accepted { delivery: id },
            Ok(Ok(DeliveryInsert::Duplicate { id })) => IngestOutcome::Duplicate { delivery: id },
            Ok(Err(e)) => IngestOutcome::Unavailable(e),
            Err(_) => IngestOutcome::Unavailable("the intake stopped".into()),
        }
    }

    fn normalise(
        &self,
        trigger: &Trigger,
        headers: &Headers,
        body: &[u8],
        payload: Value,
    ) -> Result<Inbound, InboundError> {
        match &trigger.source {
            Source::GithubWebhook(_) => inbound::github(headers, payload),
            Source::GitlabWebhook(_) => inbound::gitlab(headers, payload),
            Source::Webhook(g) => {
                let delivery_id = headers
                    .get(&g.delivery_header)
                    .map(str::to_owned)
                    .unwrap_or_else(|| hex::encode(sha2::Sha256::digest(body)));
                let source = g.source_id.as_ref().and_then(|q| {
                    q.extract(&payload).ok().map(|v| match v {
                        Value::String(s) => {
                            SourceRef::other("webhook", &format!("{}:{s}", trigger.id))
                        }
                        other => SourceRef::other("webhook", &format!("{}:{other}", trigger.id)),
                    })
                });
                Ok(Inbound {
                    provider: Provider::Webhook,
                    event: headers.get("x-event").unwrap_or("webhook").to_owned(),
                    action: None,
                    delivery_id,
                    payload,
                    source,
                    item: None,
                    repository: None,
                    comment: None,
                    ping: false,
                })
            }
            Source::GithubPoll(_) | Source::GitlabPoll(_) | Source::Schedule(_) => {
                Err(InboundError::MissingHeader("a webhook trigger"))
            }
        }
    }

    /// Decide every pending delivery (oldest first).
    pub async fn process_pending(&self) {
        if self.hold {
            return;
        }
        loop {
            let pending = match self.store.pending_deliveries(100).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "reading pending deliveries failed");
                    return;
                }
            };
            if pending.is_empty() {
                return;
            }
            for d in pending {
                let decisions = self.process_delivery(&d).await;
                if let Err(e) = self.store.finish_delivery(d.id, decisions).await {
                    warn!(delivery = d.id, error = %e, "recording a delivery's decision failed; it will be processed again");
                    return;
                }
            }
        }
    }

    async fn process_delivery(&self, d: &Delivery) -> Vec<NewDecision> {
        let tag = |mut x: NewDecision, ev: Option<&Inbound>| {
            x.delivery_id = Some(d.id);
            if let Some(ev) = ev {
                x.event = Some(ev.key());
                x.source = x.source.or(ev.source.as_ref().map(|s| s.to_string()));
            }
            x
        };
        let Some(trigger) = self.index().get(&d.trigger_id).cloned() else {
            return vec![tag(
                decision(
                    &d.trigger_id,
                    DecisionKind::Filtered,
                    format!(
                        "trigger `{}` no longer exists in triggers.yml",
                        d.trigger_id
                    ),
                    json!({}),
                ),
                None,
            )];
        };
        let headers = Headers::new(
            d.headers
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())),
        );
        let ct = headers.get("content-type").map(str::to_owned);
        let ev = match inbound::parse_body(ct.as_deref(), &d.body)
            .and_then(|p| self.normalise(&trigger, &headers, &d.body, p))
        {
            Ok(ev) => ev,
            Err(e) => {
                return vec![tag(
                    decision(
                        &trigger.id,
                        DecisionKind::InvalidPayload,
                        e.to_string(),
                        json!({}),
                    ),
                    None,
                )];
            }
        };
        let key = format!("delivery:{}:{}", trigger.id, d.delivery_key);
        self.handle(&trigger, &ev, key)
            .await
            .into_iter()
            .map(|x| tag(x, Some(&ev)))
            .collect()
    }

    /// Reconcile, then decide and act on one event; returns the decisions to record.
    pub async fn handle(&self, trigger: &Trigger, ev: &Inbound, key: String) -> Vec<NewDecision> {
        let mut out = self.reconcile(trigger, ev).await;
        let access = self.gitlab_access(trigger, ev).await;
        match decide::evaluate(trigger, ev, access) {
            Verdict::Dispatch(plan) => {
                out.push(self.dispatch(trigger, plan, key, kind_of(trigger)).await);
            }
            Verdict::Retry { source, author } => {
                out.push(self.retry_command(trigger, &source, &author, key).await);
            }
            Verdict::Ping => out.push(decision(
                &trigger.id,
                DecisionKind::Ping,
                "ping answered",
                json!({}),
            )),
            Verdict::Stop {
                kind,
                reason,
                detail,
            } => {
                // An event that only reconciled (closed, unlabeled) is not news on its own.
                if out.is_empty() || kind != DecisionKind::Filtered {
                    out.push(decision(&trigger.id, kind, reason, detail));
                }
            }
        }
        out
    }

    /// A GitLab commenter's access level, when the event is a note that may be a command.
    async fn gitlab_access(&self, trigger: &Trigger, ev: &Inbound) -> Option<u32> {
        let (Source::GitlabWebhook(g), Some(c), Some(repo)) =
            (&trigger.source, &ev.comment, &ev.repository)
        else {
            return None;
        };
        g.commands.as_ref()?;
        let (identity, user) = (trigger.identity.as_ref()?, c.author_id?);
        let forge = self.forge(identity).ok()?;
        match forge.access_level(repo, user).await {
            Ok(level) => level,
            Err(e) => {
                warn!(trigger = %trigger.id, error = %e, "looking up a commenter's access level failed");
                None
            }
        }
    }

    /// The retry budget of `item` ran out: label and comment on it for a human.
    async fn notify_exhausted(&self, item: &SourceItem, trigger: &Trigger, reason: &str) {
        let Some(identity) = &trigger.identity else {
            return;
        };
        let Some(at) = SourceRef::parse(&item.source)
            .ok()
            .and_then(|s| s.forge_item())
        else {
            return;
        };
        let Ok(forge) = self.forge(identity) else {
            return;
        };
        if !trigger.retry.exhausted_labels.is_empty()
            && let Err(e) = forge
                .add_labels(
                    &at.repo,
                    at.kind,
                    at.number,
                    &trigger.retry.exhausted_labels,
                )
                .await
        {
            warn!(source = %item.source, error = %e, "labelling an exhausted item failed");
        }
        if trigger.retry.exhausted_comment {
            let body = format!(
                "worktrain tried this {} time(s) and gave up: {reason}. A maintainer can comment `/worktrain retry` to try again.",
                item.attempts
            );
            if let Err(e) = forge.comment(&at.repo, at.kind, at.number, &body).await {
                warn!(source = %item.source, error = %e, "commenting on an exhausted item failed");
            }
        }
    }

    fn spec(&self, trigger: &Trigger, plan: Plan, key: String, kind: TriggerKind) -> DispatchSpec {
        DispatchSpec {
            trigger_id: trigger.id.clone(),
            kind,
            workflow: plan.workflow,
            goal: plan.goal,
            context: plan.context,
            workspace: trigger.workspace.clone(),
            base: trigger.base_branch.clone(),
            agent: trigger.agent.clone(),
            limits: trigger.limits.clone(),
            priority: trigger.priority,
            readonly: trigger.readonly,
            source: plan.source,
            delivery: trigger.delivery.clone(),
            hooks: trigger.hooks.clone(),
            idempotency_key: key,
        }
    }

    /// Dedupe by source item, check the queue, dispatch, remember the source item.
    pub async fn dispatch(
        &self,
        trigger: &Trigger,
        plan: Plan,
        key: String,
        kind: TriggerKind,
    ) -> NewDecision {
        let _guard = self.dispatch_lock.lock().await;
        let source = plan.source.clone();
        let event = plan.event.clone();
        let mut attempts = 1;
        if let Some(src) = &source {
            match self.store.source_item(src.as_str()).await {
                Err(e) => {
                    return decision(
                        &trigger.id,
                        DecisionKind::DispatchFailed,
                        e.to_string(),
                        json!({}),
                    );
                }
                Ok(Some(item))
                    if item.request.get("idempotency_key").and_then(Value::as_str)
                        == Some(key.as_str()) =>
                {
                    // Our own dispatch, processed again after a crash.
                    let mut d = decision(
                        &trigger.id,
                        DecisionKind::Dispatched,
                        format!(
                            "{event} → session {} (recovered)",
                            item.session_id.clone().unwrap_or_default()
                        ),
                        json!({"workflow": plan.workflow, "recovered": true}),
                    );
                    d.session_id = item.session_id;
                    d.source = Some(src.to_string());
                    return d;
                }
                Ok(Some(item)) => {
                    let item = self.settle(item).await;
                    match item.state {
                        SourceState::Active => {
                            let mut d = decision(
                                &trigger.id,
                                DecisionKind::Duplicate,
                                format!(
                                    "{src} already has an unfinished session {}",
                                    item.session_id.clone().unwrap_or_default()
                                ),
                                json!({"existing_session": item.session_id, "by_trigger": item.trigger_id}),
                            );
                            d.session_id = item.session_id;
                            d.source = Some(src.to_string());
                            return d;
                        }
                        SourceState::RetryWait => {
                            let mut d = decision(
                                &trigger.id,
                                DecisionKind::Duplicate,
                                format!("{src} failed and a retry is already scheduled"),
                                json!({"next_attempt_at_ms": item.next_attempt_at_ms, "attempts": item.attempts}),
                            );
                            d.source = Some(src.to_string());
                            return d;
                        }
                        SourceState::Exhausted => {
                            let mut d = decision(
                                &trigger.id,
                                DecisionKind::Filtered,
                                format!(
                                    "{src} used up its retry budget ({} attempts); comment a `retry` command or fire the trigger by hand to start again",
                                    item.attempts
                                ),
                                json!({"filter": "retry_budget", "attempts": item.attempts}),
                            );
                            d.source = Some(src.to_string());
                            return d;
                        }
                        SourceState::Done => attempts = 1,
                    }
                }
                Ok(None) => {}
            }
        }
        match self.host.queued(&trigger.id).await {
            Ok(n) if n >= trigger.concurrency.queue_limit() => {
                let mut d = decision(
                    &trigger.id,
                    DecisionKind::QueueFull,
                    format!(
                        "{n} sessions of this trigger are already queued (concurrency.max_queued: {})",
                        trigger.concurrency.queue_limit()
                    ),
                    json!({"queued": n, "max_queued": trigger.concurrency.queue_limit()}),
                );
                d.source = source.map(|s| s.to_string());
                return d;
            }
            Ok(_) => {}
            Err(e) => return decision(&trigger.id, DecisionKind::DispatchFailed, e.0, json!({})),
        }
        let spec = self.spec(trigger, plan, key, kind);
        self.start(trigger, spec, attempts, &event).await
    }

    async fn start(
        &self,
        trigger: &Trigger,
        spec: DispatchSpec,
        attempts: u32,
        why: &str,
    ) -> NewDecision {
        let source = spec.source.clone();
        match self.host.dispatch(&spec).await {
            Ok((session, created)) => {
                if let Some(src) = &source {
                    let item = SourceItem {
                        source: src.to_string(),
                        trigger_id: trigger.id.clone(),
                        session_id: Some(session.clone()),
                        state: SourceState::Active,
                        attempts,
                        next_attempt_at_ms: None,
                        request: serde_json::to_value(&spec).unwrap_or(Value::Null),
                        updated_at_ms: self.now_ms(),
                    };
                    if let Err(e) = self.store.put_source_item(&item).await {
                        warn!(error = %e, source = %src, "remembering a source item failed");
                    }
                }
                info!(trigger = %trigger.id, session_id = %session, created, "trigger dispatched a session");
                let mut d = decision(
                    &trigger.id,
                    DecisionKind::Dispatched,
                    format!("{why} → session {session}"),
                    json!({"workflow": spec.workflow, "goal": spec.goal, "created": created, "attempt": attempts}),
                );
                d.session_id = Some(session);
                d.source = source.map(|s| s.to_string());
                d
            }
            Err(e) => {
                let mut d = decision(
                    &trigger.id,
                    DecisionKind::DispatchFailed,
                    e.0,
                    json!({"workflow": spec.workflow}),
                );
                d.source = source.map(|s| s.to_string());
                d
            }
        }
    }

    async fn retry_command(
        &self,
        trigger: &Trigger,
        source: &SourceRef,
        author: &str,
        key: String,
    ) -> NewDecision {
        let _guard = self.dispatch_lock.lock().await;
        let item = match self.store.source_item(source.as_str()).await {
            Ok(Some(item)) => self.settle(item).await,
            Ok(None) => {
                return decision(
                    &trigger.id,
                    DecisionKind::Filtered,
                    format!("`retry` from {author}: no earlier session for {source}"),
                    json!({"command": "retry"}),
                );
            }
            Err(e) => {
                return decision(
                    &trigger.id,
                    DecisionKind::DispatchFailed,
                    e.to_string(),
                    json!({}),
                );
            }
        };
        if item.state == SourceState::Active {
            let mut d = decision(
                &trigger.id,
                DecisionKind::Duplicate,
                format!("`retry` from {author}: {source} has an unfinished session"),
                json!({"command": "retry"}),
            );
            d.session_id = item.session_id;
            return d;
        }
        let Ok(mut spec) = serde_json::from_value::<DispatchSpec>(item.request.clone()) else {
            return decision(
                &trigger.id,
                DecisionKind::DispatchFailed,
                "the earlier dispatch of this item cannot be repeated".to_string(),
                json!({}),
            );
        };
        spec.idempotency_key = key;
        self.start(trigger, spec, 1, &format!("`retry` from {author}"))
            .await
    }

    /// Bring a source item up to date with its session: finished → done, failed →
    /// retry scheduled or budget exhausted (each recorded).
    async fn settle(&self, mut item: SourceItem) -> SourceItem {
        if item.state != SourceState::Active {
            return item;
        }
        let Some(session) = item.session_id.clone() else {
            return item;
        };
        let state = match self.host.run_state(&session).await {
            Ok(Some(s)) => s,
            Ok(None) => RunState::Cancelled,
            Err(_) => return item,
        };
        let trigger = self.index().get(&item.trigger_id).cloned();
        let max = trigger
            .as_ref()
            .map_or(1, |t| t.retry.max_dispatch_attempts);
        let now = self.now_ms();
        let d = match state {
            RunState::Queued | RunState::Running | RunState::Parked | RunState::Interrupted => {
                return item;
            }
            RunState::Completed | RunState::Cancelled => {
                item.state = SourceState::Done;
                None
            }
            RunState::Failed if item.attempts < max => {
                let delay = trigger
                    .as_ref()
                    .map(|t| t.retry.delay_before(item.attempts + 1))
                    .unwrap_or_default();
                let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                item.state = SourceState::RetryWait;
                item.next_attempt_at_ms = Some(at);
                Some(decision(
                    &item.trigger_id,
                    DecisionKind::RetryScheduled,
                    format!(
                        "session {session} failed; attempt {} of {max} in {}",
                        item.attempts + 1,
                        humantime::format_duration(delay)
                    ),
                    json!({"attempt": item.attempts + 1, "max_dispatch_attempts": max, "at_ms": at}),
                ))
            }
            RunState::Failed => {
                item.state = SourceState::Exhausted;
                Some(decision(
                    &item.trigger_id,
                    DecisionKind::RetryExhausted,
                    format!("session {session} failed; all {max} attempts used — needs a human"),
                    json!({"attempts": item.attempts, "max_dispatch_attempts": max}),
                ))
            }
        };
        item.updated_at_ms = now;
        if let Err(e) = self.store.put_source_item(&item).await {
            warn!(error = %e, "updating a source item failed");
        }
        if let Some(mut d) = d {
            if item.state == SourceState::Exhausted
                && let Some(t) = &trigger
            {
                self.notify_exhausted(&item, t, &d.reason).await;
            }
            d.source = Some(item.source.clone());
            d.session_id = Some(session);
            let _ = self.store.record_decision(d).await;
        }
        item
    }

    /// Reconciliation: an event about a source item with an unfinished session, showing
    /// the item no longer qualifies (closed, merged, a required label or assignee gone).
    pub async fn reconcile_event(&self, trigger: &Trigger, ev: &Inbound) -> Vec<NewDecision> {
        self.reconcile(trigger, ev).await
    }

    async fn reconcile(&self, trigger: &Trigger, ev: &Inbound) -> Vec<NewDecision> {
        let (Some(src), Some(state)) = (&ev.source, &ev.item) else {
            return Vec::new();
        };
        let Ok(Some(item)) = self.store.source_item(src.as_str()).await else {
            return Vec::new();
        };
        let item = self.settle(item).await;
        if item.state != SourceState::Active {
            return Vec::new();
        }
        let Some(session) = item.session_id.clone() else {
            return Vec::new();
        };
        let owner = self.index().get(&item.trigger_id).cloned();
        let policy = owner.as_ref().map_or(&trigger.reconcile, |t| &t.reconcile);
        let reason = match state.status {
            ItemStatus::Closed => Some("it was closed".to_owned()),
            ItemStatus::Merged => Some("it was merged".to_owned()),
            ItemStatus::Open => policy
                .labels
                .iter()
                .find(|l| !state.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
                .map(|l| format!("label `{l}` was removed"))
                .or_else(|| {
                    policy
                        .assignee
                        .as_ref()
                        .filter(|a| !state.assignees.iter().any(|x| x.eq_ignore_ascii_case(a)))
                        .map(|a| format!("`{a}` is no longer assigned"))
                }),
        };
        let Some(reason) = reason else {
            return Vec::new();
        };
        let action = policy.on_ineligible;
        let result = self
            .host
            .source_ineligible(&session, src, &trigger.id, &reason, action)
            .await;
        let mut d = decision(
            &trigger.id,
            DecisionKind::Reconciled,
            match action {
                ReconcileAction::Cancel => format!("{src}: {reason}; session {session} cancelled"),
                ReconcileAction::Keep => format!(
                    "{src}: {reason}; session {session} left running (reconcile.on_ineligible: keep)"
                ),
            },
            json!({"action": action, "reason": reason, "error": result.err().map(|e| e.0)}),
        );
        d.session_id = Some(session);
        d.source = Some(src.to_string());
        vec![d]
    }

    /// The client of identity `name` (built on first use; rebuilt after a reload).
    pub fn forge(&self, name: &str) -> Result<Arc<dyn worktrain_forge::Forge>, String> {
        if let Some(f) = lock(&self.forges).get(name) {
            return Ok(f.clone());
        }
        let index = self.index();
        let def = index
            .identities
            .get(name)
            .ok_or_else(|| format!("no identity `{name}`"))?;
        let f = crate::identity::connect(def).map_err(|e| e.to_string())?;
        lock(&self.forges).insert(name.to_owned(), f.clone());
        Ok(f)
    }

    /// Install a client for an identity (tests point identities at fakes this way too).
    pub fn set_forge(&self, name: &str, forge: Arc<dyn worktrain_forge::Forge>) {
        lock(&self.forges).insert(name.to_owned(), forge);
    }

    /// Poll every enabled poll trigger that is due.
    pub async fn poll_due(&self) {
        let index = self.index();
        let now = self.now_ms();
        for t in index.triggers.values() {
            if !t.enabled {
                continue;
            }
            let (Source::GithubPoll(_) | Source::GitlabPoll(_)) = &t.source else {
                continue;
            };
            let Some(identity) = &t.identity else {
                continue;
            };
            match self.forge(identity) {
                Ok(f) => {
                    crate::poll::poll_if_due(self, t, f.as_ref(), now).await;
                }
                Err(e) => warn!(trigger = %t.id, error = %e, "no forge client for the poll"),
            }
        }
    }

    /// Poll due sources every second while this daemon leads the store's trigger work
    /// (several daemons polling one source would each see the same items).
    async fn poll_loop(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
        leader: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if *leader.borrow() {
                        self.poll_due().await;
                    }
                }
            }
        }
    }

    /// Periodic work: schedules and source items.
    pub async fn tick(&self) {
        let index = self.index();
        for t in index.triggers.values() {
            if let Source::Schedule(_) = &t.source
                && t.enabled
            {
                self.run_schedule(t).await;
            }
        }
        self.maintain_sources().await;
    }

    async fn maintain_sources(&self) {
        if let Ok(active) = self.store.source_items(SourceState::Active).await {
            for item in active {
                self.settle(item).await;
            }
        }
        let now = self.now_ms();
        let Ok(waiting) = self.store.source_items(SourceState::RetryWait).await else {
            return;
        };
        for item in waiting {
            if item.next_attempt_at_ms.is_some_and(|t| t > now) {
                continue;
            }
            let Some(trigger) = self.index().get(&item.trigger_id).cloned() else {
                continue;
            };
            let Ok(mut spec) = serde_json::from_value::<DispatchSpec>(item.request.clone()) else {
                continue;
            };
            let _guard = self.dispatch_lock.lock().await;
            let attempt = item.attempts + 1;
            spec.idempotency_key = format!("retry:{}:{attempt}", item.source);
            let d = self
                .start(
                    &trigger,
                    spec,
                    attempt,
                    &format!("retry {attempt} of {}", trigger.retry.max_dispatch_attempts),
                )
                .await;
            let _ = self.store.record_decision(d).await;
        }
    }

    async fn run_schedule(&self, t: &Trigger) {
        let Source::Schedule(policy) = &t.source else {
            return;
        };
        let Ok(cron) = CronSchedule::parse(&policy.cron, &policy.timezone) else {
            return;
        };
        let key = format!("{} {}", policy.cron, policy.timezone);
        let now = self.clock.now();
        let state = self.store.schedule_state(&t.id).await.ok().flatten();
        let last = state
            .as_ref()
            .filter(|s| s.cron == key)
            .map(|s| schedule::from_ms(s.last_scheduled_at_ms));
        let (firings, new_last) = schedule::due(&cron, policy, last, now);
        let mut st = state.unwrap_or(ScheduleState {
            trigger_id: t.id.clone(),
            cron: key.clone(),
            last_scheduled_at_ms: now.timestamp_millis(),
            last_fired_at_ms: None,
            last_session_id: None,
        });
        st.cron = key;
        for f in firings {
            match f {
                Firing::Missed { scheduled_at } => {
                    let mut d = decision(
                        &t.id,
                        DecisionKind::ScheduleMissed,
                        format!(
                            "the firing due at {} was missed (the daemon was down or late; misfire: skip)",
                            scheduled_at.to_rfc3339()
                        ),
                        json!({"scheduled_at": scheduled_at.to_rfc3339(), "noticed_at": now.to_rfc3339()}),
                    );
                    d.event = Some("schedule".into());
                    let _ = self.store.record_decision(d).await;
                }
                Firing::Fire { scheduled_at } => {
                    let d = self
                        .fire_schedule(
                            t,
                            policy.overlap,
                            scheduled_at,
                            st.last_session_id.clone(),
                            false,
                        )
                        .await;
                    if d.decision == DecisionKind::Dispatched.as_str() {
                        st.last_fired_at_ms = Some(now.timestamp_millis());
                        st.last_session_id = d.session_id.clone();
                    }
                    let _ = self.store.record_decision(d).await;
                }
            }
        }
        st.last_scheduled_at_ms = new_last.timestamp_millis();
        if let Err(e) = self.store.put_schedule_state(&st).await {
            warn!(trigger = %t.id, error = %e, "saving schedule state failed");
        }
    }

    async fn fire_schedule(
        &self,
        t: &Trigger,
        overlap: Overlap,
        scheduled_at: DateTime<Utc>,
        last_session: Option<String>,
        manual: bool,
    ) -> NewDecision {
        let fired_at = self.clock.now();
        if overlap == Overlap::Skip
            && !manual
            && let Some(prev) = &last_session
            && let Ok(Some(state)) = self.host.run_state(prev).await
            && !state.is_final()
        {
            let mut d = decision(
                &t.id,
                DecisionKind::OverlapSkipped,
                format!(
                    "the previous session {prev} is still {}; overlap: skip",
                    state.as_str()
                ),
                json!({"scheduled_at": scheduled_at.to_rfc3339(), "previous_session": prev}),
            );
            d.event = Some("schedule".into());
            return d;
        }
        let payload = json!({
            "trigger": t.id,
            "scheduled_at": scheduled_at.to_rfc3339(),
            "fired_at": fired_at.to_rfc3339(),
            "manual": manual,
        });
        let ev = Inbound {
            provider: Provider::Schedule,
            event: "schedule".into(),
            action: None,
            delivery_id: String::new(),
            payload,
            source: Some(SourceRef::other(
                "schedule",
                &format!("{}@{}", t.id, scheduled_at.to_rfc3339()),
            )),
            item: None,
            repository: None,
            comment: None,
            ping: false,
        };
        let plan = match decide::evaluate(t, &ev, None) {
            Verdict::Dispatch(p) => p,
            Verdict::Stop {
                kind,
                reason,
                detail,
            } => return decision(&t.id, kind, reason, detail),
            Verdict::Retry { .. } | Verdict::Ping => {
                return decision(
                    &t.id,
                    DecisionKind::Filtered,
                    "not a schedule event",
                    json!({}),
                );
            }
        };
        let key = format!("schedule:{}:{}", t.id, scheduled_at.timestamp_millis());
        let mut d = self.dispatch(t, plan, key, TriggerKind::Cron).await;
        d.event = Some("schedule".into());
        if let Value::Object(m) = &mut d.detail {
            m.insert("scheduled_at".into(), json!(scheduled_at.to_rfc3339()));
            m.insert("fired_at".into(), json!(fired_at.to_rfc3339()));
            m.insert("manual".into(), json!(manual));
        }
        d
    }

    /// `worktrain trigger fire`: a schedule fires now; another trigger processes
    /// `payload` (as event `event`) as if it had arrived, minus the signature check
    /// (the caller holds the API token). Returns the recorded decision.
    pub async fn fire(
        &self,
        id: &str,
        event: Option<&str>,
        payload: Option<Value>,
    ) -> Result<Decision, FireError> {
        let t = self.index().get(id).cloned().ok_or(FireError::NotFound)?;
        let now = self.clock.now();
        let d = match (&t.source, payload) {
            (Source::Schedule(s), _) => {
                let last = self
                    .store
                    .schedule_state(&t.id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.last_session_id);
                self.fire_schedule(&t, s.overlap, now, last, true).await
            }
            (_, None) => {
                return Err(FireError::NeedsPayload);
            }
            (_, Some(payload)) => {
                let ev = test_event(&t, event, payload)?;
                let key = format!("fire:{}:{}", t.id, now.timestamp_millis());
                let mut ds = self.handle(&t, &ev, key).await;
                let mut last = ds.pop().ok_or(FireError::NeedsPayload)?;
                for d in ds {
                    let _ = self.store.record_decision(d).await;
                }
                last.event = Some(ev.key());
                last
            }
        };
        let id = self
            .store
            .record_decision(d.clone())
            .await
            .map_err(|e| FireError::Store(e.to_string()))?;
        Ok(Decision {
            id,
            created_at_ms: now.timestamp_millis(),
            body: d,
        })
    }

    /// Decisions of a trigger, newest first.
    pub async fn log(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, String> {
        self.store
            .decisions(filter)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why a manual fire or test could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FireError {
    /// No such trigger.
    #[error("no trigger with this id in triggers.yml")]
    NotFound,
    /// A non-schedule trigger needs a payload.
    #[error("this trigger reacts to events: give a payload (and the event name for GitHub/GitLab)")]
    NeedsPayload,
    /// The payload could not be read as an event.
    #[error("{0}")]
    BadPayload(String),
    /// The store failed.
    #[error("store failure: {0}")]
    Store(String),
}

fn kind_of(t: &Trigger) -> TriggerKind {
    match &t.source {
        Source::Webhook(_) | Source::GithubWebhook(_) | Source::GitlabWebhook(_) => {
            TriggerKind::Webhook
        }
        Source::GithubPoll(_) | Source::GitlabPoll(_) => TriggerKind::Poll,
        Source::Schedule(_) => TriggerKind::Cron,
    }
}

/// An event for `trigger test` / `fire`: the payload as if delivered with `event`
/// (GitHub: `X-GitHub-Event`; GitLab: the `X-Gitlab-Event` value or its short name).
pub fn test_event(t: &Trigger, event: Option<&str>, payload: Value) -> Result<Inbound, FireError> {
    if !payload.is_object() {
        return Err(FireError::BadPayload(
            "the payload must be a JSON object".into(),
        ));
    }
    let need =
        |what: &str| FireError::BadPayload(format!("give the event name (`--event {what}`)"));
    Ok(match &t.source {
        Source::GithubWebhook(_) | Source::GithubPoll(_) => {
            let e = event.ok_or_else(|| need("issues"))?;
            inbound::github_event(e, "manual".into(), payload)
        }
        Source::GitlabWebhook(_) | Source::GitlabPoll(_) => {
            let e = event.ok_or_else(|| need("\"Issue Hook\""))?;
            inbound::gitlab_event(&inbound::gitlab_event_name(e), "manual".into(), payload)
        }
        Source::Webhook(g) => {
            let source = g
                .source_id
                .as_ref()
                .and_then(|q| q.extract(&payload).ok())
                .map(|v| {
                    let s = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    SourceRef::other("webhook", &format!("{}:{s}", t.id))
                });
            Inbound {
                provider: Provider::Webhook,
                event: event.unwrap_or("webhook").to_owned(),
                action: None,
                delivery_id: "manual".into(),
                payload,
                source,
                item: None,
                repository: None,
                comment: None,
                ping: false,
            }
        }
        Source::Schedule(_) => Inbound {
            provider: Provider::Schedule,
            event: "schedule".into(),
            action: None,
            delivery_id: "manual".into(),
            payload,
            source: None,
            item: None,
            repository: None,
            comment: None,
            ping: false,
        },
    })
}

/// `trigger test`: the decision for `payload`, without dispatching or recording.
pub fn dry_run(
    t: &Trigger,
    event: Option<&str>,
    payload: Value,
) -> Result<(Inbound, Verdict), FireError> {
    let ev = test_event(t, event, payload)?;
    let v = decide::evaluate(t, &ev, None);
    Ok((ev, v))
}
