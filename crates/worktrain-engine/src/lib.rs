//! worktrain use cases on top of the pure core and the event store: start, advance,
//! checkpoint, rehydrate and rewind. This is the one place where "advance a session" is
//! implemented; the CLI, the MCP server and the daemon all call it.
//!
//! Every operation reads the session summary (one row), lets the pure state machine
//! decide, and appends the resulting events, blobs and projections in one transaction.
//! A concurrent writer makes the append fail with a sequence conflict; the operation is
//! then re-judged against the new state, which turns a racing duplicate into a replay
//! or a conflict — never a lock error for the caller and never two advances.
//!
//! A session from start to completion, on an embedded store:
//!
//! ```
//! use std::sync::Arc;
//!
//! use worktrain_core::context::Limits;
//! use worktrain_core::event::SessionMode;
//! use worktrain_core::machine::Submission;
//! use worktrain_core::response::Outcome;
//! use worktrain_core::token::Keyring;
//! use worktrain_engine::{Catalog, Engine, StartRequest};
//! use worktrain_store::{EventStore, StoreOptions, StoreUrl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let workflow = dir.path().join("hello.yaml");
//! std::fs::write(
//!     &workflow,
//!     "schemaVersion: 1\nid: hello\nname: Hello\ndescription: One step.\nversion: \"1\"\n\
//!      steps:\n  - id: greet\n    title: Greet\n    prompt: Write a greeting.\n",
//! )?;
//! let url = StoreUrl::Sqlite(dir.path().join("worktrain.db"));
//! let store: Arc<dyn EventStore> = worktrain_store::open(&url, &StoreOptions::default()).await?;
//! let keyring = Keyring::new([7; 32], "2026-01-01T00:00:00Z".into());
//! let engine = Engine::new(store, keyring, Limits::default());
//!
//! let started = engine
//!     .start(StartRequest {
//!         workflow: Catalog::default().resolve(workflow.to_str().unwrap_or_default())?,
//!         goal: "greet the team".into(),
//!         workspace: None,
//!         context: Default::default(),
//!         mode: SessionMode::Interactive,
//!         parent: None,
//!     })
//!     .await?;
//! let token = started.response.tokens.advance.clone().unwrap_or_default();
//! let output = Submission {
//!     notes: Some("Hello, team!".into()),
//!     ..Submission::default()
//! };
//! let done = engine.advance(&token, output.clone()).await?;
//! assert_eq!(done.response.outcome, Outcome::Complete);
//! // The same token with the same output is a replay: the recorded answer, byte for byte.
//! let again = engine.advance(&token, output).await?;
//! assert!(again.replayed);
//! assert_eq!(again.bytes, done.bytes);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::{debug, info, warn};
use worktrain_core::compile::Pinned;
use worktrain_core::context::Limits;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::SessionMode;
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, Sha256Hash, StepId};
use worktrain_core::machine::{AdvanceDecision, Machine, Plan, StartParams, Submission};
use worktrain_core::projection::AttemptOutcome;
use worktrain_core::projection::{NodeRecord, NodeStatus, SessionStatus, SessionSummary};
use worktrain_core::response::{RecapEntry, StepResponse};
use worktrain_core::token::{Keyring, TokenClaims};
use worktrain_store::{AppendRequest, EventStore, StoreError};

pub mod catalog;
pub mod diff;
pub mod workspace;
pub mod worktrees;

pub use catalog::{Catalog, Resolved};
pub use worktrees::{
    Committed, DeclaredWork, Ended, Prepared, SessionWorktrees, WorktreeError, WorktreeSettings,
};

/// How many times an operation is re-judged after losing a race before giving up.
const MAX_REJUDGE: usize = 16;
/// Pinned workflows kept in memory.
const PIN_CACHE: usize = 256;
/// Budget for the notes recap returned by rehydrate, in bytes.
const RECAP_BUDGET: usize = 32 * 1024;

/// A response, its exact bytes and whether it was replayed from the record.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The engine's answer (outcome, the step to do now, the tokens for it).
    pub response: StepResponse,
    /// Its bytes, exactly as stored (identical on replay).
    pub bytes: Vec<u8>,
    /// True when the same token and output were already processed.
    pub replayed: bool,
}

/// How a caller names a session: by id or by any valid token.
#[derive(Debug, Clone)]
pub enum SessionRef {
    /// A session id (`ses_…`).
    Id(SessionId),
    /// Any token of the session (advance, checkpoint or resume).
    Token(String),
}

impl SessionRef {
    /// Parse user input: a session id if it looks like one, otherwise a token. Nothing
    /// is trimmed: a padded token is refused with an error that says so.
    pub fn parse(s: &str) -> Self {
        match s.parse::<SessionId>() {
            Ok(id) => SessionRef::Id(id),
            Err(_) => SessionRef::Token(s.to_owned()),
        }
    }
}

/// Which earlier step to rewind to.
#[derive(Debug, Clone)]
pub enum RewindTarget {
    /// The latest node of this step on the current path.
    Step(StepId),
    /// A specific node.
    Node(NodeId),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The resolved workflow.
    pub workflow: Resolved,
    /// What the session should achieve, as the dispatcher wrote it.
    pub goal: String,
    /// Directory the session works in (absolute); `None` for a session without one. Its git
    /// branch, when it is a repository, is recorded at start.
    pub workspace: Option<String>,
    /// Context the session starts with (start inputs, trigger data); empty for none.
    pub context: Map<String, Value>,
    /// Interactive (gates are advisory) or autonomous (gated steps park).
    pub mode: SessionMode,
    /// The session that spawned this one.
    pub parent: Option<SessionId>,
}

/// A request to run a session under the daemon.
#[derive(Debug, Clone)]
pub struct DispatchRequest {
    /// What to start.
    pub start: StartRequest,
    /// Name of the agent profile that will drive the run (from the daemon's agent profiles).
    pub agent: String,
    /// What started it.
    pub trigger: worktrain_core::run::Trigger,
    /// Budget overrides of the run (each one left out uses the daemon's default).
    pub limits: worktrain_core::run::RunLimits,
    /// Queue priority (higher first).
    pub priority: i32,
    /// Review-style run (detached worktree).
    pub readonly: bool,
    /// Base ref for the worktree.
    pub base: Option<String>,
    /// Idempotency key: the same key returns the existing session.
    pub idempotency_key: Option<String>,
}

/// The result of a dispatch.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The session created, or the existing one the idempotency key named.
    pub session_id: SessionId,
    /// False when the idempotency key matched an existing session.
    pub created: bool,
    /// The first step (for a new session).
    pub reply: Option<Reply>,
}

/// The use cases of a session — start, advance, checkpoint, rehydrate, rewind, dispatch — over
/// an [`EventStore`]. Cheap to share behind an `Arc`; every operation is one read of the
/// session summary and one atomic append, so several engines (and daemons) may serve the
/// same store. See the crate docs for a session from start to completion.
pub struct Engine {
    store: Arc<dyn EventStore>,
    keyring: Keyring,
    limits: Limits,
    pins: Mutex<HashMap<Sha256Hash, Arc<Pinned>>>,
    worktrees: Option<SessionWorktrees>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Map a store failure to the API error shape.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::BlobTooLarge { size, limit } => ApiError::new(
            ErrorCode::ArtifactTooLarge,
            format!("a payload of {size} bytes exceeds the blob limit of {limit} bytes"),
            Retry::AfterFix,
            "submit smaller artifacts, or raise limits.blob_bytes in config.yaml",
        ),
        StoreError::SeqConflict { .. } => ApiError::new(
            ErrorCode::Contention,
            e.to_string(),
            Retry::Same,
            "another writer is advancing this session; retry",
        ),
        StoreError::DispatchKeyTaken { .. } => ApiError::new(
            ErrorCode::Contention,
            e.to_string(),
            Retry::Never,
            "the dispatch already happened; use the session it names",
        ),
        StoreError::SchemaTooNew { .. } => ApiError::new(
            ErrorCode::StoreFailure,
            e.to_string(),
            Retry::AfterFix,
            "run a worktrain at least as new as the one that last migrated this store",
        ),
        StoreError::InvalidUrl { .. } => ApiError::new(
            ErrorCode::InvalidInput,
            e.to_string(),
            Retry::AfterFix,
            "fix store.url in config.yaml, --database-url or WORKTRAIN_DATABASE_URL (sqlite://PATH or postgres://USER@HOST/DB)",
        ),
        StoreError::Unreachable { .. } => ApiError::new(
            ErrorCode::StoreFailure,
            e.to_string(),
            Retry::Same,
            "start the database server or fix the store URL; see docs/storage.md",
        ),
        StoreError::EmptyAppend
        | StoreError::Projection(_)
        | StoreError::Corrupt(_)
        | StoreError::Migration(_)
        | StoreError::Database(_) => ApiError::new(
            ErrorCode::StoreFailure,
            e.to_string(),
            Retry::Same,
            "check the database and its disk; `worktrain session verify <id>` checks a session's integrity",
        ),
    }
}

fn not_found(id: SessionId) -> ApiError {
    ApiError::new(
        ErrorCode::SessionNotFound,
        format!("no session {id} in this store"),
        Retry::Never,
        "check WORKTRAIN_HOME / the database in use; `worktrain sessions` lists known sessions",
    )
}

impl Engine {
    /// An engine over a store, signing with `keyring`.
    pub fn new(store: Arc<dyn EventStore>, keyring: Keyring, limits: Limits) -> Self {
        Self {
            store,
            keyring,
            limits,
            pins: Mutex::new(HashMap::new()),
            worktrees: None,
        }
    }

    /// Manage session worktrees: snapshot them whenever a step's output is accepted
    /// (however the session was advanced), restore them after rewinds, commit their work.
    pub fn with_worktrees(mut self, worktrees: SessionWorktrees) -> Self {
        self.worktrees = Some(worktrees);
        self
    }

    /// The session worktree manager, when configured.
    pub fn worktrees(&self) -> Option<&SessionWorktrees> {
        self.worktrees.as_ref()
    }

    /// The event store the engine reads and appends to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The keyring step tokens are minted with and verified against.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Size limits applied to submissions (notes, artifacts, context).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn machine<'a>(&'a self, pinned: &'a Pinned) -> Machine<'a> {
        Machine {
            pinned,
            keyring: &self.keyring,
            limits: &self.limits,
        }
    }

    /// The pinned workflow of a session, from cache or the blob store.
    pub async fn pinned(&self, hash: Sha256Hash) -> Result<Arc<Pinned>, ApiError> {
        if let Some(p) = self.pins.lock().ok().and_then(|m| m.get(&hash).cloned()) {
            return Ok(p);
        }
        let bytes = self
            .store
            .blob(hash)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::WorkflowPinMissing,
                    format!("the pinned workflow {hash} is missing from the store"),
                    Retry::Never,
                    "the database is incomplete; restore it from backup",
                )
            })?;
        let pinned = Arc::new(Pinned::from_canonical(&bytes).map_err(ApiError::internal)?);
        if let Ok(mut m) = self.pins.lock() {
            if m.len() >= PIN_CACHE {
                m.clear();
            }
            m.insert(hash, pinned.clone());
        }
        Ok(pinned)
    }

    fn remember(&self, pinned: &Pinned) {
        if let Ok(mut m) = self.pins.lock() {
            if m.len() >= PIN_CACHE {
                m.clear();
            }
            m.entry(pinned.hash)
                .or_insert_with(|| Arc::new(pinned.clone()));
        }
    }

    /// The summary to decide an advance on without reading the store, when the store's
    /// handle holds one in which the token's attempt is still the open one (current, not
    /// parked): then no record of that attempt exists yet — an attempt's record is
    /// written by the append that blocks it (and moves on to the next attempt), parks it,
    /// or completes it (and enters the next node or completes the session). Only on the
    /// first round: if the summary is behind the log, the append built on it is refused
    /// (its seq, or the attempt's idempotency key, is taken) and the next round reads.
    fn open_attempt(&self, round: usize, claims: TokenClaims) -> Option<Arc<SessionSummary>> {
        if round != 0 {
            return None;
        }
        let recent = self.store.recent_summary(claims.session)?;
        let open = recent.current.as_ref().is_some_and(|c| {
            c.node == claims.node && c.attempt == claims.attempt && c.parked.is_none()
        }) && recent.status != SessionStatus::Parked;
        open.then_some(recent)
    }

    async fn summary(&self, id: SessionId) -> Result<SessionSummary, ApiError> {
        self.store
            .session(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))
    }

    /// Append `plan` after `known`, the summary the plan was decided on (`None` for a new
    /// session).
    async fn persist(
        &self,
        known: Option<&SessionSummary>,
        id: SessionId,
        plan: &Plan,
    ) -> Result<Persisted, ApiError> {
        let expected = known.map_or(Seq(0), |s| s.last_seq);
        let request = AppendRequest {
            session_id: id,
            expected_seq: expected,
            events: plan.events.clone(),
            blobs: plan.blobs.clone(),
        };
        let outcome = match known {
            Some(known) => self.store.append_after(known, request).await,
            None => self.store.append(request).await,
        };
        match outcome {
            Ok(o) if !o.duplicate => Ok(Persisted::Written),
            Ok(_) => Ok(Persisted::Duplicate),
            Err(StoreError::SeqConflict { .. }) => Ok(Persisted::LostRace),
            // The first event of a session stores the compiled workflow as a blob; when
            // that is what is too large, say so instead of blaming "artifacts".
            Err(StoreError::BlobTooLarge { size, limit })
                if expected == Seq(0) && plan.blobs.first().is_some_and(|b| b.len() == size) =>
            {
                Err(ApiError::new(
                    ErrorCode::WorkflowInvalid,
                    format!(
                        "the compiled workflow is {size} bytes, over the blob limit of {limit} bytes"
                    ),
                    Retry::AfterFix,
                    "split the workflow (routines, shorter prompts), or raise limits.blob_bytes in config.yaml",
                ))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Start a session.
    pub async fn start(&self, req: StartRequest) -> Result<Reply, ApiError> {
        let id = new_session_id()?;
        let pinned = &req.workflow.pinned;
        let plan = self.machine(pinned).start(
            id,
            StartParams {
                goal: req.goal,
                branch: req
                    .workspace
                    .as_deref()
                    .and_then(|w| worktrain_git::current_branch(std::path::Path::new(w))),
                workspace: req.workspace,
                context: req.context,
                mode: req.mode,
                parent: req.parent,
                source: req.workflow.source.clone(),
            },
        )?;
        if self.persist(None, id, &plan).await? != Persisted::Written {
            return Err(ApiError::internal(
                "a fresh session id collided with an existing session",
            ));
        }
        self.remember(pinned);
        info!(session_id = %id, workflow = %pinned.workflow.id, hash = %pinned.hash.short(), "session started");
        Ok(Reply {
            response: plan.response,
            bytes: plan.response_bytes,
            replayed: false,
        })
    }

    /// Submit a step's output with its advance token.
    pub async fn advance(&self, token: &str, submission: Submission) -> Result<Reply, ApiError> {
        let claims = self.keyring.verify(token)?;
        for round in 0..MAX_REJUDGE {
            let (summary, mut prior) = match self.open_attempt(round, claims) {
                Some(recent) => (recent, None),
                None => {
                    let (summary, prior) = self
                        .store
                        .session_and_attempt(claims.session, claims.node, claims.attempt)
                        .await
                        .map_err(store_error)?;
                    let summary = summary.ok_or_else(|| not_found(claims.session))?;
                    (Arc::new(summary), prior)
                }
            };
            let pinned = self.pinned(summary.workflow_hash).await?;
            // The same output as the attempt just blocked would be blocked the same way:
            // answer with that recorded response and write nothing, so a client that
            // resubmits in a loop (an editor that returns at once, a stuck agent) cannot
            // grow the log.
            if prior.is_none()
                && claims.attempt.0 > 1
                && let Some(before) = self
                    .store
                    .attempt(claims.session, claims.node, Attempt(claims.attempt.0 - 1))
                    .await
                    .map_err(store_error)?
                && before.outcome == AttemptOutcome::Blocked
                && before.output_hash == submission.output_hash()
                && summary
                    .current
                    .as_ref()
                    .is_some_and(|c| c.node == claims.node && c.attempt == claims.attempt)
            {
                prior = Some(before);
            }
            match self
                .machine(&pinned)
                .advance(&summary, claims, &submission, prior.as_ref())?
            {
                AdvanceDecision::Replay { response } => {
                    let bytes = self
                        .store
                        .blob(response)
                        .await
                        .map_err(store_error)?
                        .ok_or_else(|| {
                            ApiError::internal(format!("recorded response {response} is missing"))
                        })?;
                    let parsed: StepResponse = serde_json::from_slice(&bytes).map_err(|e| {
                        ApiError::internal(format!("recorded response unreadable: {e}"))
                    })?;
                    debug!(session_id = %claims.session, node = %claims.node, "advance replayed");
                    return Ok(Reply {
                        response: parsed,
                        bytes,
                        replayed: true,
                    });
                }
                AdvanceDecision::Apply(mut plan) => {
                    if step_accepted(plan.response.outcome)
                        && let Some(event) = self.snapshot_event(&summary, claims.node).await
                    {
                        plan.events.push(event);
                    }
                    if self.persist(Some(&summary), claims.session, &plan).await?
                        == Persisted::Written
                    {
                        info!(
                            session_id = %claims.session,
                            node = %claims.node,
                            attempt = %claims.attempt,
                            outcome = plan.response.outcome.as_str(),
                            "advance recorded"
                        );
                        return Ok(Reply {
                            response: plan.response,
                            bytes: plan.response_bytes,
                            replayed: false,
                        });
                    }
                    debug!(session_id = %claims.session, round, "lost a race; re-judging");
                }
            }
        }
        warn!(session_id = %claims.session, "advance gave up after repeated contention");
        Err(contention(claims.session))
    }

    /// Record progress without advancing.
    pub async fn checkpoint(
        &self,
        token: &str,
        notes: &str,
        context: Map<String, Value>,
    ) -> Result<Reply, ApiError> {
        let claims = self.keyring.verify(token)?;
        for _ in 0..MAX_REJUDGE {
            let summary = self.summary(claims.session).await?;
            let pinned = self.pinned(summary.workflow_hash).await?;
            let plan = self
                .machine(&pinned)
                .checkpoint(&summary, claims, notes, &context)?;
            if plan.events.is_empty() {
                return Ok(Reply {
                    response: plan.response,
                    bytes: plan.response_bytes,
                    replayed: true,
                });
            }
            match self.persist(Some(&summary), claims.session, &plan).await? {
                Persisted::Written => {
                    info!(session_id = %claims.session, node = %claims.node, "checkpoint recorded");
                    return Ok(Reply {
                        response: plan.response,
                        bytes: plan.response_bytes,
                        replayed: false,
                    });
                }
                // The same checkpoint content was already recorded on this node.
                Persisted::Duplicate => {
                    return Ok(Reply {
                        response: plan.response,
                        bytes: plan.response_bytes,
                        replayed: true,
                    });
                }
                Persisted::LostRace => continue,
            }
        }
        Err(contention(claims.session))
    }

    /// The current step, fresh tokens and a recap of earlier notes. Writes nothing.
    ///
    /// With [`Engine::checkpoint`], progress is saved without advancing; rehydrating finds
    /// the session again by its id (or any of its tokens), e.g. from another process:
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use worktrain_core::context::Limits;
    /// # use worktrain_core::event::SessionMode;
    /// # use worktrain_core::token::Keyring;
    /// # use worktrain_engine::{Catalog, Engine, StartRequest};
    /// # use worktrain_store::{EventStore, StoreOptions, StoreUrl};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let workflow = dir.path().join("draft.yaml");
    /// # std::fs::write(
    /// #     &workflow,
    /// #     "schemaVersion: 1\nid: draft\nname: Draft\ndescription: Two steps.\nversion: \"1\"\n\
    /// #      steps:\n  - id: outline\n    title: Outline\n    prompt: Outline it.\n  - id: write\n    title: Write\n    prompt: Write it.\n",
    /// # )?;
    /// # let url = StoreUrl::Sqlite(dir.path().join("worktrain.db"));
    /// # let store: Arc<dyn EventStore> = worktrain_store::open(&url, &StoreOptions::default()).await?;
    /// # let keyring = Keyring::new([7; 32], "2026-01-01T00:00:00Z".into());
    /// # let engine = Engine::new(store, keyring, Limits::default());
    /// # let started = engine
    /// #     .start(StartRequest {
    /// #         workflow: Catalog::default().resolve(workflow.to_str().unwrap_or_default())?,
    /// #         goal: "the release notes".into(),
    /// #         workspace: None,
    /// #         context: Default::default(),
    /// #         mode: SessionMode::Interactive,
    /// #         parent: None,
    /// #     })
    /// #     .await?;
    /// use worktrain_core::response::Outcome;
    /// use worktrain_engine::SessionRef;
    ///
    /// // `started` is the reply of `Engine::start` (first step: `outline`).
    /// let token = started.response.tokens.checkpoint.clone().unwrap_or_default();
    /// let mut context = serde_json::Map::new();
    /// context.insert("sections".into(), 3.into());
    /// let saved = engine.checkpoint(&token, "Three sections so far.", context).await?;
    /// assert_eq!(saved.response.outcome, Outcome::Checkpointed);
    ///
    /// let id = started.response.session_id.to_string();
    /// let found = engine.rehydrate(&SessionRef::parse(&id)).await?;
    /// assert_eq!(found.response.outcome, Outcome::Rehydrated);
    /// let step = found.response.step.as_ref().map(|s| s.id.as_str());
    /// assert_eq!(step, Some("outline"));
    /// // Fresh tokens: the agent can go on from here.
    /// assert!(found.response.tokens.advance.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rehydrate(&self, target: &SessionRef) -> Result<Reply, ApiError> {
        let id = self.session_id(target)?;
        let summary = self.summary(id).await?;
        let pinned = self.pinned(summary.workflow_hash).await?;
        let nodes = self.store.nodes(id).await.map_err(store_error)?;
        let recap = recap(&summary, &nodes, &pinned);
        let response = self.machine(&pinned).rehydrate(&summary, recap);
        let bytes = response.to_bytes();
        Ok(Reply {
            response,
            bytes,
            replayed: false,
        })
    }

    /// Move a session back to an earlier step; records the rewind and starts a branch.
    /// The step is named by id (its latest completed visit on the current path) or by
    /// node; the earlier visits stay in the step graph.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use worktrain_core::context::Limits;
    /// # use worktrain_core::event::SessionMode;
    /// # use worktrain_core::token::Keyring;
    /// # use worktrain_engine::{Catalog, Engine, StartRequest};
    /// # use worktrain_store::{EventStore, StoreOptions, StoreUrl};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let workflow = dir.path().join("draft.yaml");
    /// # std::fs::write(
    /// #     &workflow,
    /// #     "schemaVersion: 1\nid: draft\nname: Draft\ndescription: Two steps.\nversion: \"1\"\n\
    /// #      steps:\n  - id: outline\n    title: Outline\n    prompt: Outline it.\n  - id: write\n    title: Write\n    prompt: Write it.\n",
    /// # )?;
    /// # let url = StoreUrl::Sqlite(dir.path().join("worktrain.db"));
    /// # let store: Arc<dyn EventStore> = worktrain_store::open(&url, &StoreOptions::default()).await?;
    /// # let keyring = Keyring::new([7; 32], "2026-01-01T00:00:00Z".into());
    /// # let engine = Engine::new(store, keyring, Limits::default());
    /// # let started = engine
    /// #     .start(StartRequest {
    /// #         workflow: Catalog::default().resolve(workflow.to_str().unwrap_or_default())?,
    /// #         goal: "the release notes".into(),
    /// #         workspace: None,
    /// #         context: Default::default(),
    /// #         mode: SessionMode::Interactive,
    /// #         parent: None,
    /// #     })
    /// #     .await?;
    /// use worktrain_core::ids::StepId;
    /// use worktrain_core::machine::Submission;
    /// use worktrain_core::response::Outcome;
    /// use worktrain_engine::{RewindTarget, SessionRef};
    ///
    /// // `started` is the reply of `Engine::start`; complete the first step.
    /// let token = started.response.tokens.advance.clone().unwrap_or_default();
    /// let output = Submission { notes: Some("Outlined.".into()), ..Submission::default() };
    /// let next = engine.advance(&token, output).await?;
    /// assert_eq!(next.response.step.as_ref().map(|s| s.id.as_str()), Some("write"));
    ///
    /// // The outline was wrong: go back to it.
    /// let session = SessionRef::Id(started.response.session_id);
    /// let to = RewindTarget::Step(StepId::new("outline")?);
    /// let back = engine.rewind(&session, &to, Some("wrong audience".into())).await?;
    /// assert_eq!(back.response.outcome, Outcome::Rewound);
    /// assert_eq!(back.response.step.as_ref().map(|s| s.id.as_str()), Some("outline"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rewind(
        &self,
        target: &SessionRef,
        to: &RewindTarget,
        reason: Option<String>,
    ) -> Result<Reply, ApiError> {
        let id = self.session_id(target)?;
        for _ in 0..MAX_REJUDGE {
            let summary = self.summary(id).await?;
            let pinned = self.pinned(summary.workflow_hash).await?;
            let nodes = self.store.nodes(id).await.map_err(store_error)?;
            let path = current_path(&summary, &nodes);
            let chosen = match to {
                RewindTarget::Node(n) => nodes.iter().find(|r| r.node == *n),
                RewindTarget::Step(s) => path
                    .iter()
                    .rev()
                    .find(|r| &r.step_id == s && r.status == NodeStatus::Completed)
                    .copied(),
            };
            let Some(chosen) = chosen else {
                return Err(ApiError::new(
                    ErrorCode::InvalidRewindTarget,
                    match to {
                        RewindTarget::Node(n) => format!("session {id} has no node {n}"),
                        RewindTarget::Step(s) => {
                            format!("step `{s}` was not completed on session {id}'s current path")
                        }
                    },
                    Retry::AfterFix,
                    "`worktrain session show <id>` lists the step graph; rewind to a completed step",
                ));
            };
            let path_owned: Vec<NodeRecord> = path.into_iter().cloned().collect();
            let plan =
                self.machine(&pinned)
                    .rewind(&summary, &path_owned, chosen, reason.clone())?;
            if self.persist(Some(&summary), id, &plan).await? == Persisted::Written {
                info!(session_id = %id, target = %chosen.node, "session rewound");
                // The files go back with the steps — unless an agent is working in the
                // worktree right now; then the restore waits for the run's next start.
                let running = summary
                    .run
                    .as_ref()
                    .is_some_and(|r| r.state == worktrain_core::run::RunState::Running);
                if !running && let Err(e) = self.restore_if_pending(id).await {
                    warn!(session_id = %id, error = %e, "restoring the worktree after the rewind failed; it is retried when the session runs again");
                }
                return Ok(Reply {
                    response: plan.response,
                    bytes: plan.response_bytes,
                    replayed: false,
                });
            }
        }
        Err(contention(id))
    }

    /// The session an earlier dispatch with idempotency key `key` created, if any: the one
    /// look-up behind every "same key, same session" answer (HTTP API and engine alike).
    pub async fn dispatched_session(&self, key: &str) -> Result<Option<SessionId>, ApiError> {
        self.store
            .session_by_dispatch_key(key)
            .await
            .map_err(store_error)
    }

    /// Create a session and queue its run, in one transaction. With an idempotency key
    /// that was seen before, returns the existing session instead.
    pub async fn dispatch(&self, mut req: DispatchRequest) -> Result<Dispatched, ApiError> {
        if let Some(ws) = &req.start.workspace {
            req.start.workspace = Some(workspace::check_workspace(ws, None)?.display().to_string());
        }
        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.dispatched_session(key).await?
        {
            return Ok(Dispatched {
                session_id: existing,
                created: false,
                reply: None,
            });
        }
        let id = new_session_id()?;
        let start = req.start;
        let pinned = &start.workflow.pinned;
        let mut plan = self.machine(pinned).start(
            id,
            StartParams {
                goal: start.goal,
                branch: start
                    .workspace
                    .as_deref()
                    .and_then(|w| worktrain_git::current_branch(std::path::Path::new(w))),
                workspace: start.workspace,
                context: start.context,
                source: start.workflow.source.clone(),
                mode: SessionMode::Autonomous,
                parent: start.parent,
            },
        )?;
        plan.events.push(worktrain_core::event::NewEvent {
            body: worktrain_core::event::EventBody::RunQueued {
                agent: req.agent,
                trigger: req.trigger,
                limits: req.limits,
                priority: req.priority,
                readonly: req.readonly,
                base: req.base,
                dispatch_key: req.idempotency_key.clone(),
            },
            idempotency_key: Some(format!("{id}:run-queued")),
        });
        let outcome = self
            .store
            .append(AppendRequest {
                session_id: id,
                expected_seq: Seq(0),
                events: plan.events.clone(),
                blobs: plan.blobs.clone(),
            })
            .await;
        match outcome {
            Ok(o) if !o.duplicate => {}
            Ok(_) | Err(StoreError::SeqConflict { .. }) => {
                return Err(ApiError::internal(
                    "a fresh session id collided with an existing session",
                ));
            }
            // A concurrent dispatch with the same key won: that session is the answer.
            Err(StoreError::DispatchKeyTaken { session, .. }) => {
                return Ok(Dispatched {
                    session_id: session,
                    created: false,
                    reply: None,
                });
            }
            Err(e) => return Err(store_error(e)),
        }
        self.remember(pinned);
        info!(session_id = %id, workflow = %pinned.workflow.id, "session dispatched");
        Ok(Dispatched {
            session_id: id,
            created: true,
            reply: Some(Reply {
                response: plan.response,
                bytes: plan.response_bytes,
                replayed: false,
            }),
        })
    }

    /// Append events decided against the session's current state, re-deciding after a
    /// lost race. `decide` returns the events to append (none: nothing to do).
    pub async fn transition<F>(
        &self,
        id: SessionId,
        mut decide: F,
    ) -> Result<SessionSummary, ApiError>
    where
        F: FnMut(&SessionSummary) -> Result<Vec<worktrain_core::event::EventBody>, ApiError>,
    {
        for _ in 0..MAX_REJUDGE {
            let summary = self.summary(id).await?;
            let bodies = decide(&summary)?;
            if bodies.is_empty() {
                return Ok(summary);
            }
            let events = bodies
                .into_iter()
                .map(|body| worktrain_core::event::NewEvent {
                    body,
                    idempotency_key: None,
                })
                .collect();
            match self
                .store
                .append_after(
                    &summary,
                    AppendRequest {
                        session_id: id,
                        expected_seq: summary.last_seq,
                        events,
                        blobs: Vec::new(),
                    },
                )
                .await
            {
                Ok(outcome) => return Ok(outcome.summary),
                Err(StoreError::SeqConflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(contention(id))
    }

    /// The session summary (one row).
    pub async fn session(&self, id: SessionId) -> Result<SessionSummary, ApiError> {
        self.summary(id).await
    }

    /// Approve a parked step: it completes with the output that was parked.
    pub async fn approve(
        &self,
        target: &SessionRef,
        note: Option<String>,
    ) -> Result<Reply, ApiError> {
        self.decide_gate(target, GateDecision::Approve(note)).await
    }

    /// Reject a parked step with a note; the agent must submit a new attempt.
    pub async fn reject(&self, target: &SessionRef, note: String) -> Result<Reply, ApiError> {
        self.decide_gate(target, GateDecision::Reject(note)).await
    }

    async fn decide_gate(
        &self,
        target: &SessionRef,
        decision: GateDecision,
    ) -> Result<Reply, ApiError> {
        let id = self.session_id(target)?;
        for _ in 0..MAX_REJUDGE {
            let summary = self.summary(id).await?;
            let pinned = self.pinned(summary.workflow_hash).await?;
            let machine = self.machine(&pinned);
            let plan = match &decision {
                GateDecision::Approve(note) => {
                    let parked = self.parked_event(&summary).await?;
                    machine.approve(&summary, &parked, note.clone())?
                }
                GateDecision::Reject(note) => machine.reject(&summary, note.clone())?,
            };
            match self.persist(Some(&summary), id, &plan).await? {
                Persisted::Written => {
                    info!(session_id = %id, decision = decision.as_str(), "gate decided");
                    return Ok(Reply {
                        response: plan.response,
                        bytes: plan.response_bytes,
                        replayed: false,
                    });
                }
                Persisted::Duplicate | Persisted::LostRace => continue,
            }
        }
        Err(contention(id))
    }

    /// The `step_parked` event of a parked session (found through its attempt record).
    async fn parked_event(
        &self,
        summary: &SessionSummary,
    ) -> Result<worktrain_core::event::EventBody, ApiError> {
        let not_parked = || worktrain_core::machine::not_parked(summary);
        let cur = summary.current.as_ref().ok_or_else(not_parked)?;
        let record = self
            .store
            .attempt(summary.session_id, cur.node, cur.attempt)
            .await
            .map_err(store_error)?
            .filter(|a| a.outcome == AttemptOutcome::Parked)
            .ok_or_else(not_parked)?;
        let events = self
            .store
            .events(summary.session_id, Seq(record.seq.0.saturating_sub(1)), 1)
            .await
            .map_err(store_error)?;
        events
            .into_iter()
            .next()
            .map(|e| e.body)
            .filter(|b| matches!(b, worktrain_core::event::EventBody::StepParked { .. }))
            .ok_or_else(|| ApiError::internal("the parked output is missing from the log"))
    }

    /// The session a reference names (verifying tokens).
    pub fn session_id(&self, target: &SessionRef) -> Result<SessionId, ApiError> {
        match target {
            SessionRef::Id(id) => Ok(*id),
            // `ses_…` that failed to parse is a mistyped session id, not a token: say so.
            SessionRef::Token(t) if t.starts_with(worktrain_core::ids::SESSION_ID_PREFIX) => {
                t.parse::<SessionId>().map_err(|e| {
                    ApiError::invalid_input(
                        e.to_string(),
                        "copy the session id from `worktrain sessions`",
                    )
                })
            }
            SessionRef::Token(t) => Ok(self.keyring.verify(t)?.session),
        }
    }
}

/// An operator's decision on a parked gate.
enum GateDecision {
    Approve(Option<String>),
    Reject(String),
}

impl GateDecision {
    fn as_str(&self) -> &'static str {
        match self {
            GateDecision::Approve(_) => "approved",
            GateDecision::Reject(_) => "rejected",
        }
    }
}

/// Whether an advance accepted the step's output (the worktree state it was produced in
/// is then snapshotted).
fn step_accepted(outcome: worktrain_core::response::Outcome) -> bool {
    use worktrain_core::response::Outcome;
    match outcome {
        Outcome::Advanced | Outcome::Complete | Outcome::Parked | Outcome::Approved => true,
        Outcome::Started
        | Outcome::Blocked
        | Outcome::Checkpointed
        | Outcome::Rehydrated
        | Outcome::Rewound
        | Outcome::Rejected => false,
    }
}

/// What happened to a plan handed to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persisted {
    /// The events were appended by this call.
    Written,
    /// Its idempotency key was already recorded: nothing written.
    Duplicate,
    /// Another writer appended first: re-judge.
    LostRace,
}

fn contention(id: SessionId) -> ApiError {
    ApiError::new(
        ErrorCode::Contention,
        format!("session {id} kept changing while this operation was retried"),
        Retry::Same,
        "another process is writing to this session continuously; retry in a moment",
    )
}

/// The nodes from the root to the session's current (or last) node, oldest first.
pub fn current_path<'a>(summary: &SessionSummary, nodes: &'a [NodeRecord]) -> Vec<&'a NodeRecord> {
    let by_id: HashMap<NodeId, &NodeRecord> = nodes.iter().map(|n| (n.node, n)).collect();
    let tip = summary
        .current
        .as_ref()
        .map(|c| c.node)
        .unwrap_or(NodeId(summary.nodes));
    let mut path = Vec::new();
    let mut cursor = by_id.get(&tip).copied();
    while let Some(n) = cursor {
        path.push(n);
        if path.len() > nodes.len() {
            break; // defensive: a cycle would be a projection bug
        }
        cursor = n.parent.and_then(|p| by_id.get(&p).copied());
    }
    path.reverse();
    path
}

fn recap(summary: &SessionSummary, nodes: &[NodeRecord], pinned: &Pinned) -> Vec<RecapEntry> {
    let mut out = Vec::new();
    let mut budget = RECAP_BUDGET;
    for n in current_path(summary, nodes).into_iter().rev() {
        let (NodeStatus::Completed, Some(notes)) = (n.status, &n.notes) else {
            continue;
        };
        if notes.len() > budget {
            break;
        }
        budget -= notes.len();
        out.push(RecapEntry {
            node: n.node,
            step_id: n.step_id.clone(),
            title: pinned
                .workflow
                .step(n.step)
                .map(|s| s.title.clone())
                .unwrap_or_default(),
            notes: notes.clone(),
        });
    }
    out.reverse();
    out
}

/// A fresh session id from the clock and the OS random source.
pub fn new_session_id() -> Result<SessionId, ApiError> {
    let ms = u64::try_from(worktrain_store::now_ms()).unwrap_or(0);
    let mut r = [0u8; 16];
    getrandom::fill(&mut r).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(SessionId::from_parts(ms, u128::from_be_bytes(r)))
}

/// Session worktrees: the use cases that touch a run's git worktree, each recorded as an
/// event in the session's log.
impl Engine {
    /// The session's git workspace and worktree manager, when its run works in a
    /// session worktree that exists now.
    fn live_worktree(&self, s: &SessionSummary) -> Option<(&SessionWorktrees, PathBuf)> {
        let w = self.worktrees.as_ref()?;
        let wt = Path::new(s.run.as_ref()?.worktree.as_deref()?);
        // A session worktree is `…/worktrees/<session>` with a `.git` file (a linked
        // worktree); a run in a plain directory has its workspace there instead.
        let is_session_worktree = wt.file_name().and_then(|n| n.to_str())
            == Some(s.session_id.to_string().as_str())
            && wt.join(".git").is_file();
        if !is_session_worktree {
            return None;
        }
        Some((w, PathBuf::from(s.workspace.as_deref()?)))
    }

    /// A `step_snapshotted` event for `node`, taken now (before the advance that accepts
    /// the node's output is recorded, in the same append). A failed snapshot is logged and
    /// the advance goes on: an agent is never blocked by a git hiccup.
    async fn snapshot_event(
        &self,
        s: &SessionSummary,
        node: NodeId,
    ) -> Option<worktrain_core::event::NewEvent> {
        let (w, workspace) = self.live_worktree(s)?;
        match w.snapshot(&workspace, s.session_id, node.to_string()).await {
            Ok((git_ref, commit)) => Some(worktrain_core::event::NewEvent {
                body: worktrain_core::event::EventBody::StepSnapshotted {
                    node,
                    git_ref,
                    commit,
                },
                idempotency_key: None,
            }),
            Err(e) => {
                warn!(session_id = %s.session_id, %node, error = %e, "step snapshot failed; the advance goes on without it");
                None
            }
        }
    }

    /// Snapshot the worktree before the first step (`n0`: what a rewind to the first step
    /// restores). Does nothing for sessions without a session worktree.
    pub async fn snapshot_baseline(&self, id: SessionId) -> Result<(), ApiError> {
        let s = self.summary(id).await?;
        if let Some(event) = self.snapshot_event(&s, NodeId(0)).await {
            self.transition(id, |_| Ok(vec![event.body.clone()]))
                .await?;
        }
        Ok(())
    }

    /// After a rewind, put the session's worktree back to the state the re-entered step
    /// started from (the snapshot taken when the step before it was accepted, or the one
    /// taken before the first step) and record `worktree_restored`. When the worktree does
    /// not exist right now (a completed run's was removed), the restore stays pending and
    /// happens when the run's worktree is made again. `None`: nothing was restored.
    pub async fn restore_if_pending(
        &self,
        id: SessionId,
    ) -> Result<Option<worktrain_core::event::EventBody>, ApiError> {
        let s = self.summary(id).await?;
        if !s.run.as_ref().is_some_and(|r| r.restore_pending) {
            return Ok(None);
        }
        let Some((w, workspace)) = self.live_worktree(&s) else {
            return Ok(None);
        };
        let Some(step) = &s.current else {
            return Ok(None);
        };
        let node = self
            .store
            .node(id, step.node)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::internal("the re-entered node is missing"))?;
        let wanted = node.parent.unwrap_or(NodeId(0));
        let worktree_failed = |e: WorktreeError| {
            ApiError::new(
                ErrorCode::StoreFailure,
                format!("restoring the worktree of {id} after its rewind failed: {e}"),
                Retry::AfterFix,
                "inspect the worktree (`worktrain worktree list`); the rewind itself is recorded",
            )
        };
        let Some(commit) = w
            .snapshot_of(&workspace, id, wanted.to_string())
            .await
            .map_err(worktree_failed)?
        else {
            warn!(session_id = %id, %wanted, "no snapshot of the step before the re-entered one; the worktree is left as it is");
            return Ok(None);
        };
        let (restored, backup) = w
            .restore(&workspace, id, &commit)
            .await
            .map_err(worktree_failed)?;
        let body = worktrain_core::event::EventBody::WorktreeRestored {
            node: step.node,
            commit: restored,
            backup,
        };
        self.transition(id, |_| Ok(vec![body.clone()])).await?;
        info!(session_id = %id, %wanted, "worktree restored after a rewind");
        Ok(Some(body))
    }

    /// The run continues one whose worktree is on another host (its daemon died): make
    /// the worktree here from the shared snapshot of the step the run resumes at (the one
    /// taken when the step before it was accepted, or before the first step) and record
    /// `worktree_restored`. The error says why it could not be done; the caller fails the
    /// run with it rather than starting the step over in a fresh worktree.
    pub async fn take_over_worktree(&self, id: SessionId) -> Result<PathBuf, String> {
        let w = self
            .worktrees
            .as_ref()
            .ok_or("session worktrees are disabled on this daemon")?;
        let s = self.summary(id).await.map_err(|e| e.message)?;
        let workspace = PathBuf::from(
            s.workspace
                .as_deref()
                .ok_or("the session has no workspace")?,
        );
        let step = s
            .current
            .as_ref()
            .ok_or("the session has no current step to resume")?;
        let node = self
            .store
            .node(id, step.node)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the current node is missing")?;
        let wanted = node.parent.unwrap_or(NodeId(0));
        let mut expected = None;
        let mut after = worktrain_core::ids::Seq(0);
        loop {
            let page = self
                .store
                .events(id, after, 1000)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                if let worktrain_core::event::EventBody::StepSnapshotted { node, commit, .. } =
                    &e.body
                    && *node == wanted
                {
                    expected = Some(commit.clone());
                }
            }
        }
        let expected = expected.ok_or_else(|| {
            format!("no snapshot of step {wanted} was recorded, so there is nothing to resume from")
        })?;
        let (prepared, (restored, backup)) = w
            .adopt(&workspace, id, wanted.to_string(), expected)
            .await
            .map_err(|e| e.0)?;
        let body = worktrain_core::event::EventBody::WorktreeRestored {
            node: step.node,
            commit: restored,
            backup,
        };
        self.transition(id, |_| Ok(vec![body.clone()]))
            .await
            .map_err(|e| e.message)?;
        info!(session_id = %id, %wanted, path = %prepared.path.display(), "worktree taken over from a shared snapshot");
        Ok(prepared.path)
    }

    /// The workflow completed: commit everything in the session's worktree on its branch
    /// (trailers name the session and the workflow) and record `work_committed`. When the
    /// agent committed its work itself, that commit is recorded. `None`: the session
    /// changed nothing.
    pub async fn commit_session_work(&self, id: SessionId) -> Result<Option<Committed>, ApiError> {
        self.commit_session_work_as(id, None).await
    }

    /// [`Engine::commit_session_work`] with the commit message given (the delivery's
    /// handoff: `type: subject` and the description); the trailers are added all the same.
    pub async fn commit_session_work_as(
        &self,
        id: SessionId,
        message: Option<String>,
    ) -> Result<Option<Committed>, ApiError> {
        self.commit_session_files(id, message, None)
            .await
            .map(|d| d.committed)
    }

    /// [`Engine::commit_session_work_as`], committing only the `declared` paths when
    /// given (the handoff's `filesChanged`); the other changes are kept on the branch
    /// `worktrain-undeclared/<session>` and left out of the session branch.
    pub async fn commit_session_files(
        &self,
        id: SessionId,
        message: Option<String>,
        declared: Option<Vec<String>>,
    ) -> Result<DeclaredWork, ApiError> {
        let nothing = DeclaredWork {
            committed: None,
            undeclared: Vec::new(),
            kept_on: None,
        };
        let s = self.summary(id).await?;
        let Some((w, workspace)) = self.live_worktree(&s) else {
            return Ok(nothing);
        };
        if s.run.as_ref().is_some_and(|r| r.readonly) {
            return Ok(nothing);
        }
        let pinned = self.pinned(s.workflow_hash).await?;
        let subject: String = s
            .goal
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(72)
            .collect();
        let message = message.unwrap_or_else(|| {
            format!(
                "{}\n\nThe work of worktrain session {id} (workflow `{}`).",
                if subject.trim().is_empty() {
                    format!("worktrain: session {id}")
                } else {
                    subject
                },
                pinned.workflow.id
            )
        });
        let trailers = vec![
            ("Worktrain-Session".to_owned(), id.to_string()),
            (
                "Worktrain-Workflow".to_owned(),
                format!("{}@{}", pinned.workflow.id, pinned.hash.short()),
            ),
        ];
        let failed = |e: WorktreeError| {
            ApiError::new(
                ErrorCode::StoreFailure,
                format!("committing the work of {id} failed: {e}"),
                Retry::AfterFix,
                "the worktree is kept as it is; inspect it with `worktrain worktree list`",
            )
        };
        let work = match declared {
            None => DeclaredWork {
                committed: w
                    .commit_work(&workspace, id, message, trailers)
                    .await
                    .map_err(failed)?,
                undeclared: Vec::new(),
                kept_on: None,
            },
            Some(paths) => w
                .commit_declared(&workspace, id, paths, message, trailers)
                .await
                .map_err(failed)?,
        };
        let committed = &work.committed;
        if let Some(c) = &committed {
            let body = worktrain_core::event::EventBody::WorkCommitted {
                branch: c.branch.clone(),
                commit: c.commit.clone(),
                files: c.files,
                reason: worktrain_core::event::CommitReason::Completed,
            };
            self.transition(id, |_| Ok(vec![body.clone()])).await?;
            info!(session_id = %id, branch = %c.branch, commit = %c.commit, files = c.files, "session work committed");
        }
        Ok(work)
    }

    /// End the session's worktree when its run ended (`finish`) or ended without running
    /// (`release`, see [`SessionWorktrees::release`]), with the policy of `w` (the
    /// daemon's settings in force now), recording what happened: `work_committed`
    /// (preserved) for changes that were still uncommitted, then `worktree_removed` naming
    /// the branch that holds the work.
    pub async fn end_worktree(
        &self,
        w: &SessionWorktrees,
        id: SessionId,
        how: WorktreeEnd,
    ) -> Result<Ended, ApiError> {
        let s = self.summary(id).await?;
        let Some(workspace) = s.workspace.as_deref().map(PathBuf::from) else {
            return Ok(Ended::Untouched);
        };
        if s.run.as_ref().and_then(|r| r.worktree.as_deref()).is_none() || !w.applies_to(&workspace)
        {
            return Ok(Ended::Untouched);
        }
        let ended = match how {
            WorktreeEnd::Finished { succeeded } => w.finish(&workspace, id, succeeded).await,
            WorktreeEnd::Delivered => w.finish_delivered(&workspace, id).await,
            WorktreeEnd::Released => w.release(&workspace, id).await,
        }
        .map_err(|e| {
            ApiError::new(
                ErrorCode::StoreFailure,
                format!("ending the worktree of {id} failed: {e}"),
                Retry::Same,
                "the worktree is left as it is; `worktrain worktree clean` retries later",
            )
        })?;
        self.record_removal(id, &ended).await?;
        Ok(ended)
    }

    /// Clean `workspace`'s session worktrees with `w`'s policy (see
    /// [`SessionWorktrees::clean`]) and record each removal on its session.
    pub async fn clean_worktrees(
        &self,
        w: &SessionWorktrees,
        workspace: &Path,
        options: worktrain_git::CleanOptions,
    ) -> Result<worktrain_git::CleanReport, ApiError> {
        let (report, removed) = w.clean(workspace, options).await.map_err(|e| {
            ApiError::new(
                ErrorCode::StoreFailure,
                format!("cleaning the worktrees of {}: {e}", workspace.display()),
                Retry::AfterFix,
                "check the workspace repository",
            )
        })?;
        for (id, ended) in removed {
            // A worktree of a session this store does not know is removed all the same.
            if let Err(e) = self.record_removal(id, &ended).await
                && e.code != ErrorCode::SessionNotFound
            {
                warn!(session_id = %id, error = %e, "recording a worktree removal failed");
            }
        }
        Ok(report)
    }

    /// Record what removing a session's worktree did (also for removals by the reaper).
    pub async fn record_removal(&self, id: SessionId, ended: &Ended) -> Result<(), ApiError> {
        let Ended::Removed {
            path,
            branch,
            preserved,
        } = ended
        else {
            return Ok(());
        };
        let mut bodies = Vec::new();
        if let Some(c) = preserved {
            bodies.push(worktrain_core::event::EventBody::WorkCommitted {
                branch: c.branch.clone(),
                commit: c.commit.clone(),
                files: c.files,
                reason: worktrain_core::event::CommitReason::Preserved,
            });
        }
        bodies.push(worktrain_core::event::EventBody::WorktreeRemoved {
            path: path.display().to_string(),
            branch: branch.clone(),
        });
        self.transition(id, |_| Ok(bodies.clone())).await?;
        Ok(())
    }
}

/// How a run's worktree ends, for [`Engine::end_worktree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorktreeEnd {
    /// The run ended in its task: removed after success, kept after failure.
    Finished {
        /// Whether the workflow completed.
        succeeded: bool,
    },
    /// The run's work was delivered: the worktree goes, the branch stays (the pull
    /// request needs it).
    Delivered,
    /// The run ended without running; a worktree still locked in use is kept.
    Released,
}
