//! The supervisor: claims queued runs within the concurrency caps, runs each in its
//! own task (worktree → agent → outcome), renews leases while they run, applies operator
//! actions, and reconciles from the store alone on start.
//!
//! Recovery policy (documented in docs/daemon.md): a run that was running when the
//! daemon stopped — gracefully (`run_interrupted: shutdown`) or not (its lease expired)
//! — is resumed: queued again, and the agent re-enters the current step with a recap
//! and a note that it was interrupted. After `max_interruptions` interruptions the run
//! fails with `too_many_interruptions` instead. Nothing is forgotten: every decision is
//! an event.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use worktrain_agent::{RunContext, RunOutcome, SteeringInbox};
use worktrain_config::{CONFIG_FILE, Config, DaemonSettings, Home};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::EventBody;
use worktrain_core::ids::{Seq, SessionId};
use worktrain_core::projection::SessionSummary;
use worktrain_core::run::{
    FailureReason, HookPoint, InterruptReason, RequeueReason, RunEnd, RunState,
};
use worktrain_engine::{
    DispatchRequest, Dispatched, Engine, Reply, SessionRef, SessionWorktrees, WorktreeEnd,
    store_error,
};
use worktrain_store::LeaseRenewal;

use crate::adapters::{EngineDriver, EngineSink, LastBeat, RunOwner};
use crate::now_ms;
use crate::profiles::{AgentPool, ProfileStatus};

/// Counters for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Runs this daemon claimed from the queue since it started (resumes and retries count again).
    pub runs_started: AtomicU64,
    /// Runs that ended completed.
    pub runs_completed: AtomicU64,
    /// Runs that ended failed.
    pub runs_failed: AtomicU64,
    /// Runs that ended cancelled.
    pub runs_cancelled: AtomicU64,
    /// Runs that parked at a gate.
    pub runs_parked: AtomicU64,
    /// Runs interrupted by shutdown.
    pub runs_interrupted: AtomicU64,
    /// The most runs this daemon held at once since it started (a run holds its slot
    /// until its worktree is dealt with): whether the daemon used all its slots.
    pub running_peak: AtomicU64,
}

struct Running {
    cancel: CancellationToken,
    steering: SteeringInbox,
    /// Set before cancelling for a shutdown: the run is interrupted, not cancelled.
    interrupt: Arc<AtomicBool>,
    /// Set before cancelling for the kill switch.
    killed: Arc<AtomicBool>,
    /// Set before cancelling when another worker took the lease over.
    lost: Arc<AtomicBool>,
    beat: Arc<LastBeat>,
}

/// What the API shows about a running session beyond the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Liveness {
    /// The running session this is about.
    pub session_id: SessionId,
    /// Last agent heartbeat (ms since the epoch; 0 before the first).
    pub last_heartbeat_ms: i64,
}

/// What a running daemon takes from `config.yaml` and picks up again when the file
/// changes: the settings and the agent profiles. Each run reads one snapshot when it
/// starts and keeps it; a reload never changes a run in flight.
#[derive(Debug, Clone)]
pub struct Live {
    /// The `daemon:` settings.
    pub settings: DaemonSettings,
    /// The agent profiles.
    pub agents: AgentPool,
}

/// Settings read once at start; changing them in `config.yaml` needs a restart.
const RESTART_ONLY: &str = "bind, allow_remote, lease_secs, body_limit_bytes, request_timeout_secs";

/// Where the configuration is reloaded from, and what the last attempt found.
struct ConfigSource {
    home: Home,
    /// The store URL given on the command line or in the environment, if any.
    database_url: Option<String>,
    /// `(modified, length)` of config.yaml when it was last read.
    stamp: Mutex<Option<(std::time::SystemTime, u64)>>,
    /// Why the last reload was refused (the previous configuration stays in force).
    error: Mutex<Option<String>>,
}

/// The result of a configuration reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Whether the new configuration is now in force.
    pub applied: bool,
    /// Why it was refused (the previous configuration stays in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Changed settings that take effect only after a restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
    /// The agent profiles as now configured.
    pub agents: Vec<ProfileStatus>,
}

/// Runs queued sessions: claims them from the store's queue within the configured caps,
/// holds their leases, drives each with its agent profile, recovers interrupted runs and
/// applies operator actions (cancel, steer, kill switch). One per daemon process.
pub struct Supervisor {
    engine: Arc<Engine>,
    live: std::sync::RwLock<Arc<Live>>,
    source: Option<ConfigSource>,
    /// Settings fixed at start (see [`RESTART_ONLY`]).
    fixed: DaemonSettings,
    home: PathBuf,
    worker: String,
    runs: Mutex<HashMap<SessionId, Running>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    wake: Notify,
    stopping: CancellationToken,
    /// Set while the kill switch runs: no run may be claimed.
    killing: AtomicBool,
    /// Bumped by each kill switch; a claim that raced one stops its own run.
    kill_epoch: AtomicU64,
    /// Running caps of configured triggers (from triggers.yml; `max_per_trigger` in
    /// config.yaml wins).
    trigger_caps: std::sync::RwLock<BTreeMap<String, usize>>,
    /// Counters of this daemon's runs, for `/metrics` and `/readyz`.
    pub metrics: Metrics,
    /// Secret values redacted from everything agents see or record: the API token, the
    /// signing keys and the configured provider keys.
    secrets: Mutex<Vec<String>>,
    /// Forge clients for delivery (the identities of triggers.yml), once known.
    forges: std::sync::RwLock<Option<Arc<dyn crate::delivery::ForgeSource>>>,
    /// The address the API is actually served on (the configured one may say port 0).
    served_at: std::sync::OnceLock<std::net::SocketAddr>,
    /// The notifiers of triggers.yml, once known.
    notifiers: std::sync::RwLock<Option<Arc<dyn crate::notify::NotifierSource>>>,
    /// Rate limits of the notifiers (token buckets by notifier name).
    notify_limiter: Arc<worktrain_delivery::notify::RateLimiter>,
}

// By hand: the live settings hold secrets, and the run table is large.
impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("home", &self.home)
            .field("worker", &self.worker)
            .field("stopping", &self.stopping.is_cancelled())
            .finish_non_exhaustive()
    }
}

fn lock<'a, T>(m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
    // A poisoned lock only means another task panicked while holding it; the map
    // itself is still consistent (every update is a single insert/remove).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_run(id: SessionId, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        format!("session {id} {what}"),
        Retry::Never,
        "`worktrain session show <id>` shows the run's state",
    )
}

impl Supervisor {
    /// A supervisor for `engine`, serving runs with `agents`.
    pub fn new(
        engine: Arc<Engine>,
        settings: DaemonSettings,
        home: PathBuf,
        agents: AgentPool,
    ) -> Arc<Self> {
        Self::build(engine, settings, home, agents, None)
    }

    /// A supervisor configured from `home`'s `config.yaml` (already loaded as `config`),
    /// which it reloads when the file changes: agent profiles and the settings not in
    /// [`RESTART_ONLY`] apply to runs started afterwards.
    pub fn from_config(
        engine: Arc<Engine>,
        home: Home,
        config: &Config,
        database_url: Option<String>,
    ) -> Arc<Self> {
        let agents = AgentPool::build(&config.agents, home.root(), database_url.as_deref());
        let stamp = file_stamp(&home.path(CONFIG_FILE));
        let root = home.root().to_path_buf();
        Self::build(
            engine,
            config.daemon.clone(),
            root,
            agents,
            Some(ConfigSource {
                home,
                database_url,
                stamp: Mutex::new(stamp),
                error: Mutex::new(None),
            }),
        )
    }

    fn build(
        engine: Arc<Engine>,
        settings: DaemonSettings,
        home: PathBuf,
        agents: AgentPool,
        source: Option<ConfigSource>,
    ) -> Arc<Self> {
        let worker = format!(
            "{}{}-{}",
            worker_prefix(&home),
            std::process::id(),
            now_ms()
        );
        // What agents must never see: the home's API token and signing keys, and the
        // keys the agent profiles hold (more are added when a reload brings new ones).
        let mut secrets = home_secrets(&home);
        secrets.extend(agents.secrets().iter().cloned());
        for p in agents.status(&settings.default_agent) {
            if let Some(problem) = &p.problem {
                warn!(profile = %p.name, %problem, "agent profile unusable: sessions that need it fail until config.yaml is fixed");
            }
        }
        Arc::new(Self {
            engine,
            fixed: settings.clone(),
            live: std::sync::RwLock::new(Arc::new(Live { settings, agents })),
            source,
            home,
            worker,
            runs: Mutex::new(HashMap::new()),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            wake: Notify::new(),
            stopping: CancellationToken::new(),
            killing: AtomicBool::new(false),
            kill_epoch: AtomicU64::new(0),
            trigger_caps: std::sync::RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            secrets: Mutex::new(secrets),
            forges: std::sync::RwLock::new(None),
            served_at: std::sync::OnceLock::new(),
            notifiers: std::sync::RwLock::new(None),
            notify_limiter: Arc::new(worktrain_delivery::notify::RateLimiter::default()),
        })
    }

    /// Record the address the API server bound (links in pull requests, comments and
    /// notifications point there, not at a configured port 0).
    pub fn set_served_at(&self, addr: std::net::SocketAddr) {
        let _ = self.served_at.set(addr);
    }

    /// Where delivery gets its forge clients (the trigger runtime's identities).
    pub fn set_forges(&self, forges: Arc<dyn crate::delivery::ForgeSource>) {
        *self
            .forges
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(forges);
    }

    /// Where run ends are notified (the `notifications:` of triggers.yml).
    pub fn set_notifiers(&self, notifiers: Arc<dyn crate::notify::NotifierSource>) {
        *self
            .notifiers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(notifiers);
    }

    /// The notifiers, when configured.
    pub fn notifiers(&self) -> Option<Arc<dyn crate::notify::NotifierSource>> {
        self.notifiers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The notifiers' rate limits.
    pub fn notify_limiter(&self) -> Arc<worktrain_delivery::notify::RateLimiter> {
        self.notify_limiter.clone()
    }

    /// The forge clients for delivery, when configured.
    pub fn forges(&self) -> Option<Arc<dyn crate::delivery::ForgeSource>> {
        self.forges
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The delivery's clean-up stage: the `before_remove` hook, then the worktree goes
    /// (its branch stays), recorded as `worktree_removed`.
    pub(crate) async fn remove_delivered_worktree(&self, id: SessionId) -> Result<(), String> {
        let summary = self.engine.session(id).await.map_err(|e| e.message)?;
        let worktrees = self.session_worktrees();
        if let Some(hooks) = summary.run.as_ref().and_then(|r| r.trigger.hooks.as_ref()) {
            let _ = crate::hooks::run(
                &self.engine,
                id,
                hooks,
                HookPoint::BeforeRemove,
                &worktrees.path_for(id),
                (self.sandbox_mode(&summary), &self.home),
            )
            .await;
        }
        self.engine
            .end_worktree(&worktrees, id, WorktreeEnd::Delivered)
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// A link to the session in the console.
    pub fn console_url(&self, id: SessionId) -> String {
        match self.served_at.get() {
            Some(addr) => format!("http://{addr}/console/sessions/{id}"),
            None => format!("http://{}/console/sessions/{id}", self.live().settings.bind),
        }
    }

    /// Run (or continue) the delivery of a completed session whose run has delivery
    /// settings. `Err`: the detail of the failure, for the run's end.
    async fn deliver(self: &Arc<Self>, id: SessionId) -> Result<(), String> {
        let summary = self.engine.session(id).await.map_err(|e| e.message)?;
        let Some(run) = summary.run.as_ref() else {
            return Ok(());
        };
        let Some(settings) = run.trigger.delivery.as_deref() else {
            return Ok(());
        };
        let Some(workspace) = summary.workspace.clone() else {
            return Err("the session has no workspace to deliver from".into());
        };
        let job = worktrain_delivery::Job {
            session: id,
            workflow: summary.workflow_id.to_string(),
            goal: summary.goal.clone(),
            settings: settings.clone(),
            source: run.trigger.source.clone(),
            repo_dir: PathBuf::from(workspace),
            branch: run.branch.clone(),
            base: run
                .base
                .clone()
                .unwrap_or_else(|| self.live().settings.worktrees.base_branch.clone()),
            console_url: Some(self.console_url(id)),
        };
        let host = crate::delivery::EngineHost::new(self.clone(), id);
        match worktrain_delivery::deliver(&job, &host, worktrain_delivery::RetryPolicy::default())
            .await
        {
            Ok(worktrain_delivery::Outcome::Delivered(d)) => {
                info!(session_id = %id, pr = d.pr_url.as_deref().unwrap_or("-"), "delivered");
                Ok(())
            }
            Ok(worktrain_delivery::Outcome::Failed(d)) => Err(match d.failure {
                Some(f) => format!(
                    "the workflow completed, but delivery failed at {}: {}{}",
                    f.stage,
                    f.message,
                    f.hint.map(|h| format!(" ({h})")).unwrap_or_default()
                ),
                None => "the workflow completed, but delivery failed".into(),
            }),
            Err(e) => Err(format!("the workflow completed, but {e}")),
        }
    }

    /// Also redact these values (e.g. the provider keys of the agent profiles).
    pub fn add_secrets(&self, secrets: impl IntoIterator<Item = String>) {
        lock(&self.secrets).extend(secrets);
    }

    /// Whether some agent profile needs the sandbox while it is unavailable: such runs
    /// fail at once (see `/readyz`).
    pub fn sandbox_blocks_runs(&self) -> bool {
        !worktrain_agent::sandbox::probe().available
            && self
                .live()
                .agents
                .sandbox_modes()
                .any(|m| m == worktrain_agent::SandboxMode::Required)
    }

    /// The engine the supervisor advances sessions with (shared with the API).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// This daemon's worker id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The settings fixed at start (bind address, lease, limits of the HTTP server).
    pub fn settings(&self) -> &DaemonSettings {
        &self.fixed
    }

    /// The configuration in force now (settings and agent profiles).
    pub fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The agent profiles and their state, and the last configuration error (if a
    /// reload was refused), for `/readyz` and `worktrain status`.
    pub fn config_status(&self) -> (Vec<ProfileStatus>, Option<String>) {
        let live = self.live();
        let error = self.source.as_ref().and_then(|s| lock(&s.error).clone());
        (live.agents.status(&live.settings.default_agent), error)
    }

    /// Read `config.yaml` again now. A valid file takes effect for runs started from now
    /// on; an invalid one is refused, the previous configuration stays, and the error is
    /// logged and shown in `/readyz` until a valid file is loaded.
    pub fn reload_config(&self) -> ReloadReport {
        let Some(source) = &self.source else {
            let live = self.live();
            return ReloadReport {
                applied: false,
                error: Some("this daemon was not started from a config.yaml".into()),
                needs_restart: Vec::new(),
                agents: live.agents.status(&live.settings.default_agent),
            };
        };
        *lock(&source.stamp) = file_stamp(&source.home.path(CONFIG_FILE));
        match source.home.config() {
            Ok(config) => {
                let agents = AgentPool::build(
                    &config.agents,
                    source.home.root(),
                    source.database_url.as_deref(),
                );
                let status = agents.status(&config.daemon.default_agent);
                let needs_restart = restart_only_changes(&self.fixed, &config.daemon);
                for p in &status {
                    if let Some(problem) = &p.problem {
                        warn!(profile = %p.name, %problem, "agent profile unusable after reload");
                    }
                }
                if !needs_restart.is_empty() {
                    warn!(settings = %needs_restart.join(", "), "config.yaml changed settings that apply only after a restart ({RESTART_ONLY})");
                }
                self.add_secrets(agents.secrets().iter().cloned());
                *self
                    .live
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Live {
                    settings: config.daemon,
                    agents,
                });
                *lock(&source.error) = None;
                info!("config.yaml reloaded");
                self.wake();
                ReloadReport {
                    applied: true,
                    error: None,
                    needs_restart,
                    agents: status,
                }
            }
            Err(e) => {
                let message = e.to_string();
                warn!(error = %message, "config.yaml is invalid; keeping the previous configuration");
                *lock(&source.error) = Some(message.clone());
                let live = self.live();
                ReloadReport {
                    applied: false,
                    error: Some(message),
                    needs_restart: Vec::new(),
                    agents: live.agents.status(&live.settings.default_agent),
                }
            }
        }
    }

    /// Reload when `config.yaml` changed since it was last read (a stat per call).
    fn reload_if_changed(&self) {
        let Some(source) = &self.source else { return };
        let now = file_stamp(&source.home.path(CONFIG_FILE));
        if *lock(&source.stamp) != now {
            self.reload_config();
        }
    }

    /// The home directory (`$WORKTRAIN_HOME`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Names of the configured agent profiles.
    pub fn agent_names(&self) -> Vec<String> {
        self.live().agents.names()
    }

    /// Sessions running in this daemon.
    pub fn running(&self) -> Vec<Liveness> {
        lock(&self.runs)
            .iter()
            .map(|(id, r)| Liveness {
                session_id: *id,
                last_heartbeat_ms: r.beat.get(),
            })
            .collect()
    }

    /// Set the running caps of configured triggers (on every triggers.yml reload).
    pub fn set_trigger_caps(&self, caps: BTreeMap<String, usize>) {
        *self
            .trigger_caps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = caps;
        self.wake();
    }

    /// Runs of `trigger` waiting in the queue.
    pub async fn queued_for_trigger(&self, trigger: &str) -> Result<usize, ApiError> {
        let queue = self.engine.store().queue().await.map_err(store_error)?;
        Ok(queue
            .iter()
            .filter(|r| r.state == RunState::Queued && r.trigger.as_deref() == Some(trigger))
            .count())
    }

    /// Ask the scheduler to look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Begin a graceful shutdown: running sessions are interrupted (not failed).
    pub fn shutdown(&self) {
        self.stopping.cancel();
        self.wake();
    }

    /// A token cancelled when shutdown begins.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Reconcile, then schedule until shutdown; then interrupt running sessions and wait.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.reconcile().await {
            warn!(error = %e, "reconciliation failed; continuing");
        }
        self.prune_worktrees().await;
        let lease_every = Duration::from_secs((self.fixed.lease_secs / 3).max(1));
        let mut lease_tick = tokio::time::interval(lease_every);
        // Runs of daemons that died elsewhere are recovered once their lease expires.
        let mut recovery_tick = tokio::time::interval(lease_every);
        recovery_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => break,
                () = self.wake.notified() => {}
                _ = lease_tick.tick() => self.renew_leases().await,
                _ = recovery_tick.tick() => {
                    if let Err(e) = self.recover(None).await {
                        warn!(error = %e, "recovering runs of gone workers failed");
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.reload_if_changed();
            if let Err(e) = Arc::clone(&self).schedule().await {
                warn!(error = %e, "scheduling failed");
            }
            self.reap_tasks().await;
        }
        info!("shutting down: interrupting running sessions");
        for r in lock(&self.runs).values() {
            r.interrupt.store(true, Ordering::SeqCst);
            r.cancel.cancel();
        }
        let mut tasks = self.tasks.lock().await;
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                "some sessions did not stop within 30 s; their leases will expire and they resume on restart"
            );
        }
    }

    /// Startup prune: in every workspace repository that has sessions, remove worktree
    /// registrations whose directory is gone and kept worktrees past their keep; worktrees
    /// of sessions that will resume are locked "in use" and left alone.
    async fn prune_worktrees(&self) {
        let settings = self.live().settings.clone();
        if !settings.worktrees.enabled {
            return;
        }
        let sessions = match self
            .engine
            .store()
            .sessions(&worktrain_store::SessionFilter {
                limit: Some(1000),
                ..worktrain_store::SessionFilter::default()
            })
            .await
        {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "listing sessions for the worktree prune failed");
                return;
            }
        };
        let mut repos: Vec<String> = sessions
            .iter()
            .filter(|s| s.run.as_ref().is_some_and(|r| r.worktree.is_some()))
            .filter_map(|s| s.workspace.clone())
            .filter(|w| worktrain_git::is_work_tree(Path::new(w)))
            .collect();
        repos.sort();
        repos.dedup();
        let worktrees = self.session_worktrees();
        for repo in repos {
            let options = worktrain_git::CleanOptions {
                now: std::time::SystemTime::now(),
                dry_run: false,
                include_kept: false,
            };
            match self
                .engine
                .clean_worktrees(&worktrees, Path::new(&repo), options)
                .await
            {
                Ok(report) if !report.removed().is_empty() => {
                    info!(repo = %repo, removed = report.removed().len(), "pruned stale worktrees")
                }
                Ok(_) => {}
                Err(e) => warn!(repo = %repo, error = %e, "worktree prune failed"),
            }
        }
    }

    async fn reap_tasks(&self) {
        let mut tasks = self.tasks.lock().await;
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                warn!(error = %e, "a session task panicked");
            }
        }
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.fixed.lease_secs.max(1))
    }

    /// Renew the lease of every run of this daemon. A run whose lease another worker took
    /// over (this daemon was presumed dead) is stopped without recording anything: its
    /// new owner records what happens next.
    async fn renew_leases(&self) {
        let ids: Vec<SessionId> = lock(&self.runs).keys().copied().collect();
        for id in ids {
            match self
                .engine
                .store()
                .renew_lease(id, &self.worker, self.lease_ttl())
                .await
            {
                Ok(LeaseRenewal::Held { .. }) => {}
                Ok(LeaseRenewal::Lost { holder, .. }) => {
                    warn!(session_id = %id, holder = holder.as_deref().unwrap_or("none"), "lease lost (the run was recovered by another worker); stopping it here");
                    if let Some(r) = lock(&self.runs).get(&id) {
                        r.lost.store(true, Ordering::SeqCst);
                        r.cancel.cancel();
                    }
                }
                Err(e) => warn!(session_id = %id, error = %e, "lease renewal failed"),
            }
        }
    }

    /// The worker-id prefix of every incarnation of this daemon (this host, this home):
    /// at start, runs leased to one of them belong to a process that died.
    pub fn incarnation_prefix(&self) -> String {
        worker_prefix(&self.home)
    }

    /// On start: runs left running by a dead incarnation of this daemon, and runs
    /// interrupted by a graceful shutdown, are resumed or failed per the recovery policy
    /// (leases of other daemons sharing the store are respected).
    pub async fn reconcile(&self) -> Result<(), ApiError> {
        let prefix = self.incarnation_prefix();
        self.recover(Some(&prefix)).await
    }

    /// Recover runs whose worker is gone — expired leases (a daemon that died anywhere),
    /// interrupted runs, and with `dead_workers` the runs of those workers — in the store,
    /// one transaction each, so that several daemons recovering at once act once.
    async fn recover(&self, dead_workers: Option<&str>) -> Result<(), ApiError> {
        let max = self.live().settings.max_interruptions;
        let decide = move |s: &SessionSummary| -> Vec<EventBody> {
            let Some(run) = &s.run else {
                return Vec::new();
            };
            let mut events = Vec::new();
            let mut interruptions = run.interruptions;
            if run.state == RunState::Running {
                events.push(EventBody::RunInterrupted {
                    run: run.run,
                    reason: InterruptReason::LeaseExpired,
                });
                interruptions += 1;
            } else if run.state != RunState::Interrupted {
                return Vec::new();
            }
            if run.cancel_requested {
                events.push(EventBody::RunFinished {
                    run: run.run,
                    end: RunEnd::Cancelled,
                    reason: None,
                    detail: Some("cancelled while its daemon was down".into()),
                });
            } else if interruptions > max {
                events.push(EventBody::RunFinished {
                    run: run.run,
                    end: RunEnd::Failed,
                    reason: Some(FailureReason::TooManyInterruptions),
                    detail: Some(format!("interrupted {interruptions} times (limit {max})")),
                });
            } else {
                events.push(EventBody::RunRequeued {
                    reason: RequeueReason::Resume,
                });
            }
            events
        };
        let recovered = self
            .engine
            .store()
            .recover_runs(worktrain_store::Recovery {
                dead_workers,
                decide: &decide,
            })
            .await
            .map_err(store_error)?;
        for summary in recovered {
            let id = summary.session_id;
            // Before anything resumes it: whatever the dead run left running on this
            // host goes.
            let sid = id.to_string();
            let killed = tokio::task::spawn_blocking(move || crate::orphans::kill_orphans(&sid))
                .await
                .unwrap_or(0);
            if killed > 0 {
                info!(session_id = %id, killed, "killed processes left by the interrupted run");
            }
            self.release_worktree(&summary).await;
            info!(
                session_id = %id,
                state = summary.run.as_ref().map(|r| r.state.as_str()).unwrap_or("-"),
                "recovered a run whose worker was gone"
            );
            // A run recovery ended (too many interruptions) is a failure to tell about.
            if let Some(run) = summary.run.as_ref().filter(|r| r.state == RunState::Failed)
                && let Some(event) = crate::notify::event_of(RunEnd::Failed, run.failure)
            {
                crate::notify::spawn(self, id, event, run.failure, run.detail.clone());
            }
            self.wake();
        }
        Ok(())
    }

    /// The caps claims must respect, over every daemon sharing the store.
    fn caps(&self) -> worktrain_store::RunCaps {
        let mut per_trigger = self
            .trigger_caps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // config.yaml's max_per_trigger wins over triggers.yml.
        let live = self.live();
        let settings = &live.settings;
        per_trigger.extend(settings.max_per_trigger.clone());
        worktrain_store::RunCaps {
            total: settings.max_concurrent_sessions,
            per_workspace: settings.max_per_workspace,
            per_trigger,
        }
    }

    /// Claim queued runs, in queue order, while the caps allow.
    async fn schedule(self: Arc<Self>) -> Result<(), ApiError> {
        loop {
            if self.stopping.is_cancelled() || self.killing.load(Ordering::SeqCst) {
                return Ok(());
            }
            // The store counts runs over every daemon; locally, a run still finishing
            // (worktree cleanup after its end is recorded) also holds a slot.
            if lock(&self.runs).len() >= self.live().settings.max_concurrent_sessions {
                return Ok(());
            }
            if !self.clone().claim().await? {
                return Ok(());
            }
        }
    }

    /// Claim the next run the caps allow (the store serializes claims of every daemon)
    /// and start it. `false`: nothing to claim.
    async fn claim(self: Arc<Self>) -> Result<bool, ApiError> {
        let epoch = self.kill_epoch.load(Ordering::SeqCst);
        let worker = self.worker.clone();
        let use_worktree = self.live().settings.worktrees.enabled;
        let home = self.home.clone();
        let start = |s: &SessionSummary| -> Vec<EventBody> {
            let Some(run) = &s.run else {
                return Vec::new();
            };
            if run.state != RunState::Queued {
                return Vec::new();
            }
            if run.cancel_requested {
                return vec![EventBody::RunFinished {
                    run: run.run,
                    end: RunEnd::Cancelled,
                    reason: None,
                    detail: Some("cancelled before it started".into()),
                }];
            }
            let id = s.session_id;
            let git = use_worktree
                && s.workspace
                    .as_deref()
                    .is_some_and(|w| worktrain_git::is_work_tree(Path::new(w)));
            vec![EventBody::RunStarted {
                run: run.run + 1,
                worker: worker.clone(),
                worktree: Some(if git {
                    home.join("worktrees")
                        .join(id.to_string())
                        .display()
                        .to_string()
                } else {
                    s.workspace.clone().unwrap_or_default()
                }),
                branch: (git && !run.readonly).then(|| format!("worktrain/{id}")),
            }]
        };
        let caps = self.caps();
        let Some(summary) = self
            .engine
            .store()
            .claim_run(worktrain_store::Claim {
                worker: &self.worker,
                lease_ttl: self.lease_ttl(),
                caps: &caps,
                start: &start,
            })
            .await
            .map_err(store_error)?
        else {
            return Ok(false);
        };
        let id = summary.session_id;
        let Some(run) = summary.run.clone() else {
            return Ok(true);
        };
        if run.state.is_final() {
            // Cancelled before it started; an earlier attempt may have left a worktree.
            self.release_worktree(&summary).await;
            return Ok(true);
        }
        if run.state != RunState::Running || run.worker.as_deref() != Some(self.worker.as_str()) {
            return Ok(true);
        }
        self.metrics.runs_started.fetch_add(1, Ordering::Relaxed);
        let running = Running {
            cancel: CancellationToken::new(),
            steering: SteeringInbox::new(),
            interrupt: Arc::new(AtomicBool::new(false)),
            killed: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicBool::new(false)),
            beat: Arc::new(LastBeat::default()),
        };
        for m in &run.pending_steers {
            running.steering.send(m.clone());
        }
        let task_parts = (
            running.cancel.clone(),
            running.steering.clone(),
            running.interrupt.clone(),
            running.killed.clone(),
            running.beat.clone(),
            running.lost.clone(),
        );
        let held = {
            let mut runs = lock(&self.runs);
            runs.insert(id, running);
            runs.len()
        };
        self.metrics
            .running_peak
            .fetch_max(u64::try_from(held).unwrap_or(u64::MAX), Ordering::Relaxed);
        if self.killing.load(Ordering::SeqCst) || self.kill_epoch.load(Ordering::SeqCst) != epoch {
            // The kill switch ran while this run was being claimed.
            task_parts.3.store(true, Ordering::SeqCst);
            task_parts.0.cancel();
        }
        let me = self.clone();
        self.tasks
            .lock()
            .await
            .spawn(async move { me.run_session(id, summary, task_parts).await });
        info!(session_id = %id, run = run.run, "run started");
        Ok(true)
    }

    #[allow(clippy::type_complexity)]
    async fn run_session(
        self: Arc<Self>,
        id: SessionId,
        summary: SessionSummary,
        parts: (
            CancellationToken,
            SteeringInbox,
            Arc<AtomicBool>,
            Arc<AtomicBool>,
            Arc<LastBeat>,
            Arc<AtomicBool>,
        ),
    ) {
        let (cancel, steering, interrupt, killed, beat, lost) = parts;
        let run = summary.run.clone();
        let run_no = run.as_ref().map(|r| r.run).unwrap_or(1);
        let worktrees = self.session_worktrees();
        // The workflow is already complete: the run was resumed (after a crash) or
        // requeued (`retry-delivery`) only to finish its delivery; no agent runs.
        let delivering_only = summary.status == worktrain_core::projection::SessionStatus::Complete;
        let (end, reason, mut detail, in_worktree) = if delivering_only {
            let has_worktree = run
                .as_ref()
                .and_then(|r| r.worktree.as_deref())
                .is_some_and(|w| {
                    Path::new(w).is_dir()
                        && worktrees
                            .applies_to(Path::new(summary.workspace.as_deref().unwrap_or("")))
                });
            (RunEnd::Completed, None, None, has_worktree)
        } else {
            match self.prepare(&worktrees, id, &summary).await {
                Err(e) => (
                    RunEnd::Failed,
                    Some(FailureReason::WorktreeFailed),
                    Some(e),
                    false,
                ),
                Ok((dir, in_worktree)) => {
                    let hooks = run.as_ref().and_then(|r| r.trigger.hooks.clone());
                    let before = match &hooks {
                        Some(h) => {
                            self.before_hooks(id, h, run_no, &dir, self.sandbox_mode(&summary))
                                .await
                        }
                        None => Ok(()),
                    };
                    let outcome = match before {
                        Err(detail) => RunOutcome::Failed {
                            reason: FailureReason::HookFailed,
                            detail,
                            stats: Default::default(),
                        },
                        Ok(()) => {
                            let outcome = self
                                .execute(
                                    id,
                                    &summary,
                                    dir.clone(),
                                    in_worktree,
                                    (cancel, lost.clone()),
                                    steering,
                                    beat,
                                )
                                .await;
                            if let Some(h) = &hooks {
                                // Recorded; its failure does not change the outcome.
                                let _ = crate::hooks::run(
                                    &self.engine,
                                    id,
                                    h,
                                    HookPoint::AfterRun,
                                    &dir,
                                    (self.sandbox_mode(&summary), &self.home),
                                )
                                .await;
                            }
                            outcome
                        }
                    };
                    let (end, reason, detail) = match outcome {
                        RunOutcome::Completed { .. } => (RunEnd::Completed, None, None),
                        RunOutcome::Parked { .. } => (RunEnd::Parked, None, None),
                        RunOutcome::Cancelled { .. } if killed.load(Ordering::SeqCst) => (
                            RunEnd::Failed,
                            Some(FailureReason::Killed),
                            Some("stopped by the kill switch".into()),
                        ),
                        RunOutcome::Cancelled { .. } => (RunEnd::Cancelled, None, None),
                        RunOutcome::Failed { reason, detail, .. } => {
                            (RunEnd::Failed, Some(reason), Some(detail))
                        }
                    };
                    (end, reason, detail, in_worktree)
                }
            }
        };
        let (mut end, mut reason) = (end, reason);
        let interrupted = interrupt.load(Ordering::SeqCst);
        let worker = self.worker.clone();
        // A completed run's work becomes a commit on its branch, and its worktree goes,
        // before the run is reported finished: whoever awaits it sees the branch and the
        // commit, and never a worktree that is being removed.
        let mut worktree_done = !in_worktree;
        let delivery = run.as_ref().is_some_and(|r| r.trigger.delivery.is_some());
        if delivery && !interrupted && !lost.load(Ordering::SeqCst) && end == RunEnd::Completed {
            match self.deliver(id).await {
                Ok(()) => worktree_done = true,
                Err(d) => {
                    end = RunEnd::Failed;
                    reason = Some(FailureReason::DeliveryFailed);
                    detail = Some(d);
                }
            }
        } else if in_worktree
            && !interrupted
            && !lost.load(Ordering::SeqCst)
            && end == RunEnd::Completed
        {
            match self.engine.commit_session_work(id).await {
                Ok(_) => {
                    if let Some(hooks) = run.as_ref().and_then(|r| r.trigger.hooks.as_ref()) {
                        let _ = crate::hooks::run(
                            &self.engine,
                            id,
                            hooks,
                            HookPoint::BeforeRemove,
                            &worktrees.path_for(id),
                            (self.sandbox_mode(&summary), &self.home),
                        )
                        .await;
                    }
                    self.end_worktree(&worktrees, id, WorktreeEnd::Finished { succeeded: true })
                        .await;
                    worktree_done = true;
                }
                Err(e) => {
                    warn!(session_id = %id, error = %e, "committing the session's work failed; its worktree is kept");
                    detail = Some(format!(
                        "the workflow completed, but its work could not be committed ({}); the worktree is kept for inspection",
                        e.message
                    ));
                }
            }
        }
        // Whether this worker's transition wrote the run's end (the last judgement counts).
        let wrote_end = AtomicBool::new(false);
        let recorded = self
            .engine
            .transition(id, |s| {
                wrote_end.store(false, Ordering::SeqCst);
                let Some(r) = &s.run else {
                    return Ok(Vec::new());
                };
                // Only this run's own worker records its end (another may have taken over).
                if r.state != RunState::Running
                    || r.run != run_no
                    || r.worker.as_deref() != Some(worker.as_str())
                    || lost.load(Ordering::SeqCst)
                {
                    return Ok(Vec::new());
                }
                if interrupted {
                    return Ok(vec![EventBody::RunInterrupted {
                        run: run_no,
                        reason: InterruptReason::Shutdown,
                    }]);
                }
                wrote_end.store(true, Ordering::SeqCst);
                Ok(vec![EventBody::RunFinished {
                    run: run_no,
                    end,
                    reason,
                    detail: detail.clone(),
                }])
            })
            .await;
        let recorded = match recorded {
            // Only the end this worker recorded is notified (an empty transition: another
            // worker owns the run now).
            Ok(_) => {
                if wrote_end.load(Ordering::SeqCst)
                    && let Some(event) = crate::notify::event_of(end, reason)
                {
                    crate::notify::spawn(&self, id, event, reason, detail.clone());
                }
                true
            }
            Err(e) => {
                warn!(session_id = %id, error = %e, "recording the end of a run failed; the lease will expire and recovery decides");
                false
            }
        };
        let counter = if interrupted {
            &self.metrics.runs_interrupted
        } else {
            match end {
                RunEnd::Completed => &self.metrics.runs_completed,
                RunEnd::Failed => &self.metrics.runs_failed,
                RunEnd::Cancelled => &self.metrics.runs_cancelled,
                RunEnd::Parked => &self.metrics.runs_parked,
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Interrupted and parked runs keep their worktree to continue in it; failed and
        // cancelled ones keep it for inspection (its work is committed when it goes). A
        // run whose lease was taken over leaves its worktree alone too.
        if !worktree_done && !interrupted && !lost.load(Ordering::SeqCst) {
            match end {
                RunEnd::Parked => {}
                RunEnd::Completed | RunEnd::Failed | RunEnd::Cancelled => {
                    self.end_worktree(&worktrees, id, WorktreeEnd::Finished { succeeded: false })
                        .await;
                }
            }
        }
        // Once the end (or the interruption) is recorded nobody holds the run; a lease
        // left behind would only delay whoever resumes it. The append that recorded an
        // end dropped the lease with it; an interruption keeps the run queued, so its
        // lease is released here.
        if recorded && (interrupted || !wrote_end.load(Ordering::SeqCst)) {
            let _ = self.engine.store().release_lease(id, &self.worker).await;
        }
        lock(&self.runs).remove(&id);
        info!(session_id = %id, end = ?end, reason = reason.map(|r| r.as_str()), interrupted, "run ended");
        self.wake();
    }

    /// `setup` (first run only) and `before_run`; the first failure fails the run.
    async fn before_hooks(
        &self,
        id: SessionId,
        hooks: &worktrain_core::run::WorkspaceHooks,
        run_no: u32,
        dir: &Path,
        mode: worktrain_agent::sandbox::SandboxMode,
    ) -> Result<(), String> {
        let sb = (mode, self.home.as_path());
        if run_no <= 1 {
            crate::hooks::run(&self.engine, id, hooks, HookPoint::Setup, dir, sb).await?;
        }
        crate::hooks::run(&self.engine, id, hooks, HookPoint::BeforeRun, dir, sb).await
    }

    /// The sandbox mode of the run's agent profile (hooks run like the agent's commands).
    fn sandbox_mode(&self, summary: &SessionSummary) -> worktrain_agent::sandbox::SandboxMode {
        let name = summary
            .run
            .as_ref()
            .map(|r| r.agent.clone())
            .unwrap_or_else(|| self.live().settings.default_agent.clone());
        self.live().agents.sandbox_mode(&name)
    }

    /// The worktree manager with the settings in force now.
    fn session_worktrees(&self) -> SessionWorktrees {
        SessionWorktrees::new(self.live().settings.worktrees.clone(), self.home.clone())
    }

    async fn end_worktree(&self, worktrees: &SessionWorktrees, id: SessionId, how: WorktreeEnd) {
        match self.engine.end_worktree(worktrees, id, how).await {
            Ok(ended) => {
                info!(session_id = %id, ended = ?ended, "worktree ended")
            }
            Err(e) => {
                warn!(session_id = %id, error = %e, "ending the worktree failed; `worktrain worktree clean` retries later")
            }
        }
    }

    /// When this run continues (resumed after an interruption, or after a gate) work whose
    /// worktree lives with another daemon — another host or home, which several daemons
    /// on one PostgreSQL store make possible — where it is: its changes are not here, and
    /// a fresh worktree would silently start the work over. With shared snapshots the
    /// worktree is taken over from the last one; otherwise the run fails, and a retry
    /// (an operator's explicit choice) starts over from the base branch here.
    async fn worktree_elsewhere(&self, id: SessionId, summary: &SessionSummary) -> Option<String> {
        let run = summary.run.as_ref()?;
        if run.run <= 1 {
            return None;
        }
        let mut starts: Vec<(u32, String, bool, Option<String>)> = Vec::new();
        let mut last_requeue = None;
        let mut after = Seq(0);
        loop {
            let page = match self.engine.store().events(id, after, 1000).await {
                Ok(p) => p,
                Err(e) => return Some(format!("cannot read the session's runs: {e}")),
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                match &e.body {
                    EventBody::RunStarted {
                        run,
                        worker,
                        branch,
                        worktree,
                    } => starts.push((*run, worker.clone(), branch.is_some(), worktree.clone())),
                    EventBody::RunRequeued { reason } => last_requeue = Some(*reason),
                    // Only the runs' starts and requeues tell where a run stopped.
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
                    | EventBody::RunQueued { .. }
                    | EventBody::RunInterrupted { .. }
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
                    | EventBody::SessionCompleted { .. } => {}
                }
            }
        }
        // The run before this one (this one is the last start).
        let (prev_run, prev_worker, had_branch, prev_worktree) =
            starts.iter().rev().nth(1)?.clone();
        // The same home on the same disk (a restart under a new host name, as containers
        // get) still has the worktree.
        let here = self.home.join("worktrees").join(id.to_string());
        if prev_worktree.is_some_and(|p| Path::new(&p) == here && here.exists()) {
            return None;
        }
        let continues = match last_requeue {
            Some(RequeueReason::Resume | RequeueReason::GateDecided | RequeueReason::Delivery) => {
                true
            }
            Some(RequeueReason::Retry) | None => false,
        };
        if !continues || !had_branch || prev_worker.starts_with(&self.incarnation_prefix()) {
            return None;
        }
        Some(format!(
            "run {} continues run {prev_run}, whose worktree (branch worktrain/{id}) is with worker {prev_worker} on another host or home",
            run.run
        ))
    }

    /// The directory the run works in, and whether it is a session worktree. A
    /// session worktree rewound since it last changed is restored first.
    async fn prepare(
        &self,
        worktrees: &SessionWorktrees,
        id: SessionId,
        summary: &SessionSummary,
    ) -> Result<(PathBuf, bool), String> {
        let run = summary.run.as_ref();
        match summary.workspace.as_deref().map(Path::new) {
            Some(ws) if worktrees.applies_to(ws) => {
                if let Some(elsewhere) = self.worktree_elsewhere(id, summary).await {
                    if !worktrees.settings().share_snapshots {
                        return Err(format!(
                            "{elsewhere}; worktrees are not carried between daemons (`daemon.worktrees.share_snapshots` is off), so it is not started over silently here. Retry it (`worktrain session retry {id}`) to start over from the base branch on this daemon"
                        ));
                    }
                    return match self.engine.take_over_worktree(id).await {
                        Ok(path) => Ok((path, true)),
                        Err(e) => Err(format!(
                            "{elsewhere}; taking it over from its shared snapshot failed: {e}. It is not started over silently here. Retry it (`worktrain session retry {id}`) to start over from the base branch on this daemon"
                        )),
                    };
                }
                let prepared = worktrees
                    .prepare(
                        id,
                        ws,
                        run.is_some_and(|r| r.readonly),
                        run.and_then(|r| r.base.as_deref()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(note) = &prepared.note {
                    info!(session_id = %id, %note, "worktree base");
                }
                self.engine
                    .restore_if_pending(id)
                    .await
                    .map_err(|e| e.message)?;
                Ok((prepared.path, true))
            }
            Some(ws) => Ok((ws.to_path_buf(), false)),
            None => {
                let dir = self.home.join("scratch").join(id.to_string());
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok((dir, false))
            }
        }
    }

    /// After a run ended outside its task (see [`SessionWorktrees::release`]): keep its
    /// worktree for inspection instead of leaving it locked "in use" forever.
    async fn release_worktree(&self, summary: &SessionSummary) {
        let id = summary.session_id;
        let Some(run) = &summary.run else { return };
        if !run.state.is_final() || run.worktree.is_none() || lock(&self.runs).contains_key(&id) {
            return;
        }
        let worktrees = self.session_worktrees();
        self.end_worktree(&worktrees, id, WorktreeEnd::Released)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        id: SessionId,
        summary: &SessionSummary,
        dir: PathBuf,
        in_worktree: bool,
        (cancel, lost): (CancellationToken, Arc<AtomicBool>),
        steering: SteeringInbox,
        beat: Arc<LastBeat>,
    ) -> RunOutcome {
        let run = summary.run.clone();
        let agent_name = run
            .as_ref()
            .map(|r| r.agent.clone())
            .unwrap_or_else(|| self.live().settings.default_agent.clone());
        let runner = match self.live().agents.runner(&agent_name) {
            Ok(r) => r,
            Err(detail) => {
                return RunOutcome::Failed {
                    reason: FailureReason::AgentUnavailable,
                    detail,
                    stats: Default::default(),
                };
            }
        };
        let first_run = run.as_ref().is_some_and(|r| r.run <= 1);
        let owner = RunOwner {
            worker: self.worker.clone(),
            run: run.as_ref().map(|r| r.run).unwrap_or(1),
            lost,
            cancel: cancel.clone(),
        };
        let driver = Arc::new(EngineDriver::new(self.engine.clone(), id, owner.clone()));
        if first_run
            && in_worktree
            && let Err(e) = self.engine.snapshot_baseline(id).await
        {
            // The state before the first step: what a rewind to the first step restores.
            warn!(session_id = %id, error = %e, "snapshot before the first step failed");
        }
        let sink = Arc::new(EngineSink::new(self.engine.clone(), id, owner));
        let limits = worktrain_agent::RunBudget::with_overrides(run.as_ref().map(|r| &r.limits));
        let mut ctx = RunContext::new(id.to_string(), dir, driver)
            .with_events(sink)
            .with_heartbeat(beat)
            .with_cancel(cancel)
            .with_steering(steering)
            .with_limits(limits)
            // Keys, tokens, the database and other sessions' worktrees live here.
            .with_hidden([self.home.clone()])
            .with_secrets(lock(&self.secrets).clone());
        // Only a resumed run was interrupted; after a gate decision the step brief says
        // what happened (next step, or the rejection as blockers).
        match run.as_ref().and_then(|r| r.requeue_reason) {
            Some(RequeueReason::Resume) => {
                ctx = ctx.with_resume_note(
                    "You were interrupted (the worktrain daemon restarted). Your earlier steps' notes are in the recap; the worktree still holds your changes. Re-check the current state of the files, then continue the current step.",
                );
            }
            Some(RequeueReason::Retry) => {
                ctx = ctx.with_resume_note(
                    "An operator retried this session: an earlier run stopped before the workflow was complete. Your earlier steps' notes are in the recap; the worktree still holds the changes made so far. Re-check the current state of the files, then continue the current step.",
                );
            }
            Some(RequeueReason::GateDecided | RequeueReason::Delivery) | None => {}
        }
        runner.run(ctx).await
    }

    /// Continue the failed (or interrupted) delivery of a completed session from the
    /// stage that failed: its run is queued again; no agent runs, only the delivery.
    pub async fn retry_delivery(&self, id: SessionId) -> Result<SessionSummary, ApiError> {
        let summary = self
            .engine
            .transition(id, |s| {
                let Some(run) = &s.run else {
                    return Err(not_run(id, "was not run by the daemon"));
                };
                if run.trigger.delivery.is_none() {
                    return Err(not_run(id, "has no delivery settings (spawn it with --delivery, or configure the trigger's delivery)"));
                }
                if s.status != worktrain_core::projection::SessionStatus::Complete {
                    return Err(not_run(id, "has not completed its workflow; there is nothing to deliver yet"));
                }
                match (run.state, run.delivery.as_ref().map(|d| d.state)) {
                    (_, Some(worktrain_core::run::DeliveryState::Delivered)) => {
                        Err(not_run(id, "is already delivered"))
                    }
                    (RunState::Failed | RunState::Completed, _) => Ok(vec![EventBody::RunRequeued {
                        reason: RequeueReason::Delivery,
                    }]),
                    (
                        RunState::Queued
                        | RunState::Running
                        | RunState::Interrupted
                        | RunState::Parked
                        | RunState::Cancelled,
                        _,
                    ) => Err(not_run(
                        id,
                        &format!("is {}; only a finished run's delivery can be retried", run.state.as_str()),
                    )),
                }
            })
            .await?;
        self.wake();
        Ok(summary)
    }

    /// Dispatch a session and wake the scheduler.
    pub async fn dispatch(&self, req: DispatchRequest) -> Result<Dispatched, ApiError> {
        let d = self.engine.dispatch(req).await?;
        self.wake();
        Ok(d)
    }

    /// Cancel a session's run: a queued run ends at once; a running one is stopped.
    pub async fn cancel(
        &self,
        id: SessionId,
        note: Option<String>,
    ) -> Result<SessionSummary, ApiError> {
        let summary = self
            .engine
            .transition(id, |s| {
                let Some(run) = &s.run else {
                    return Err(not_run(id, "was not dispatched to the daemon"));
                };
                Ok(match run.state {
                    RunState::Queued | RunState::Interrupted | RunState::Parked => {
                        vec![EventBody::RunFinished {
                            run: run.run,
                            end: RunEnd::Cancelled,
                            reason: None,
                            detail: note.clone(),
                        }]
                    }
                    RunState::Running if !run.cancel_requested => {
                        vec![EventBody::CancelRequested { note: note.clone() }]
                    }
                    RunState::Running
                    | RunState::Completed
                    | RunState::Failed
                    | RunState::Cancelled => Vec::new(),
                })
            })
            .await?;
        if let Some(r) = lock(&self.runs).get(&id) {
            r.cancel.cancel();
        }
        // A queued (after a resume or a gate decision), parked or interrupted run has the
        // worktree of its earlier attempt.
        self.release_worktree(&summary).await;
        Ok(summary)
    }

    /// Give the agent a message for its next turn.
    pub async fn steer(&self, id: SessionId, message: String) -> Result<SessionSummary, ApiError> {
        if message.trim().is_empty() {
            return Err(ApiError::invalid_input(
                "the steering message is empty",
                "say what the agent should do differently",
            ));
        }
        let summary = self
            .engine
            .transition(id, |s| {
                let Some(run) = &s.run else {
                    return Err(not_run(id, "was not dispatched to the daemon"));
                };
                if run.state.is_final() {
                    return Err(not_run(id, "has finished; `retry` it first"));
                }
                Ok(vec![EventBody::Steered {
                    message: message.clone(),
                }])
            })
            .await?;
        if let Some(r) = lock(&self.runs).get(&id) {
            r.steering.send(message);
        }
        Ok(summary)
    }

    /// Approve a parked gate; the run continues.
    pub async fn approve(&self, id: SessionId, note: Option<String>) -> Result<Reply, ApiError> {
        let reply = self.engine.approve(&SessionRef::Id(id), note).await?;
        self.requeue_after_gate(id).await?;
        Ok(reply)
    }

    /// Reject a parked gate; the run continues with the note as a blocker.
    pub async fn reject(&self, id: SessionId, note: String) -> Result<Reply, ApiError> {
        let reply = self.engine.reject(&SessionRef::Id(id), note).await?;
        self.requeue_after_gate(id).await?;
        Ok(reply)
    }

    async fn requeue_after_gate(&self, id: SessionId) -> Result<(), ApiError> {
        self.engine
            .transition(id, |s| {
                Ok(match &s.run {
                    Some(r) if r.state == RunState::Parked => vec![EventBody::RunRequeued {
                        reason: RequeueReason::GateDecided,
                    }],
                    _ => Vec::new(),
                })
            })
            .await?;
        self.wake();
        Ok(())
    }

    /// Resume an interrupted run (normally done automatically on start).
    pub async fn resume(&self, id: SessionId) -> Result<SessionSummary, ApiError> {
        let s = self
            .engine
            .transition(id, |s| match &s.run {
                Some(r) if r.state == RunState::Interrupted => Ok(vec![EventBody::RunRequeued {
                    reason: RequeueReason::Resume,
                }]),
                Some(r) => Err(not_run(
                    id,
                    &format!("is {}, not interrupted", r.state.as_str()),
                )),
                None => Err(not_run(id, "was not dispatched to the daemon")),
            })
            .await?;
        self.wake();
        Ok(s)
    }

    /// Retry a failed or cancelled run from where the session stands.
    pub async fn retry(&self, id: SessionId) -> Result<SessionSummary, ApiError> {
        let s = self
            .engine
            .transition(id, |s| match &s.run {
                // Failed or cancelled runs, and runs whose workflow was rewound after they
                // completed or parked (the workflow has a step to do again).
                Some(r)
                    if matches!(
                        r.state,
                        RunState::Failed
                            | RunState::Cancelled
                            | RunState::Completed
                            | RunState::Parked
                    ) =>
                {
                    use worktrain_core::projection::SessionStatus;
                    match (r.state, s.status) {
                        (_, SessionStatus::Complete) => Err(not_run(
                            id,
                            "has completed its workflow; rewind it first, or start a new session",
                        )),
                        (RunState::Parked, SessionStatus::Parked) => {
                            Err(not_run(id, "is parked at a gate; approve or reject it"))
                        }
                        (_, SessionStatus::InProgress | SessionStatus::Blocked)
                        | (
                            RunState::Queued
                            | RunState::Running
                            | RunState::Interrupted
                            | RunState::Completed
                            | RunState::Failed
                            | RunState::Cancelled,
                            SessionStatus::Parked,
                        ) => Ok(vec![EventBody::RunRequeued {
                            reason: RequeueReason::Retry,
                        }]),
                    }
                }
                Some(r) => Err(not_run(
                    id,
                    &format!(
                        "is {}; only a failed, cancelled or rewound run can be retried",
                        r.state.as_str()
                    ),
                )),
                None => Err(not_run(id, "was not dispatched to the daemon")),
            })
            .await?;
        self.wake();
        Ok(s)
    }

    /// The kill switch: stop every running session and cancel everything queued.
    pub async fn kill_all(&self) -> Result<usize, ApiError> {
        // No claim may start while the switch runs, and a claim already under way stops
        // its own run (see `claim`); queued runs are ended before running ones are
        // stopped, so a slot freed by a stopped run cannot start one of them.
        self.killing.store(true, Ordering::SeqCst);
        self.kill_epoch.fetch_add(1, Ordering::SeqCst);
        let ended = self.end_waiting_runs().await;
        let mut stopped = 0;
        for r in lock(&self.runs).values() {
            r.killed.store(true, Ordering::SeqCst);
            r.cancel.cancel();
            stopped += 1;
        }
        self.killing.store(false, Ordering::SeqCst);
        let stopped = stopped + ended?;
        warn!(stopped, "kill switch");
        Ok(stopped)
    }

    /// Fail every queued or interrupted run with `killed`.
    async fn end_waiting_runs(&self) -> Result<usize, ApiError> {
        let mut ended = 0;
        let queue = self.engine.store().queue().await.map_err(store_error)?;
        for row in queue {
            if row.state == RunState::Queued || row.state == RunState::Interrupted {
                let s = self
                    .engine
                    .transition(row.session_id, |s| {
                        Ok(match &s.run {
                            Some(r)
                                if matches!(r.state, RunState::Queued | RunState::Interrupted) =>
                            {
                                vec![EventBody::RunFinished {
                                    run: r.run,
                                    end: RunEnd::Failed,
                                    reason: Some(FailureReason::Killed),
                                    detail: Some("stopped by the kill switch".into()),
                                }]
                            }
                            _ => Vec::new(),
                        })
                    })
                    .await?;
                if s.run
                    .as_ref()
                    .is_some_and(|r| r.failure == Some(FailureReason::Killed))
                {
                    ended += 1;
                }
                self.release_worktree(&s).await;
            }
        }
        Ok(ended)
    }
}

/// The secrets in `$WORKTRAIN_HOME`: the API token and every signing key as written in
/// the keyring (unreadable files contribute nothing).
fn home_secrets(home: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string(home.join(worktrain_config::API_TOKEN_FILE)) {
        out.push(t.trim().to_owned());
    }
    if let Ok(text) = std::fs::read_to_string(home.join(worktrain_config::KEYRING_FILE))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        for key in ["current", "previous"] {
            if let Some(s) = v[key]["secret"].as_str() {
                out.push(s.to_owned());
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `worker-<tag>-` where the tag names this host and home: every incarnation of one
/// daemon shares it, and no other daemon has it.
fn worker_prefix(home: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let key = format!("{}\0{}", host.trim(), home.display());
    let tag = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("worker-{:08x}-", tag & 0xffff_ffff)
}

/// `(modified, length)` of a file, to notice edits cheaply; `None` when unreadable.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The settings of [`RESTART_ONLY`] that differ between `old` and `new`.
fn restart_only_changes(old: &DaemonSettings, new: &DaemonSettings) -> Vec<String> {
    let mut out = Vec::new();
    if old.bind != new.bind {
        out.push("bind".to_owned());
    }
    if old.allow_remote != new.allow_remote {
        out.push("allow_remote".to_owned());
    }
    if old.lease_secs != new.lease_secs {
        out.push("lease_secs".to_owned());
    }
    if old.body_limit_bytes != new.body_limit_bytes {
        out.push("body_limit_bytes".to_owned());
    }
    if old.request_timeout_secs != new.request_timeout_secs {
        out.push("request_timeout_secs".to_owned());
    }
    out
}
