//! Library-level tests of the engine use cases: start, advance (replay, conflict, stale,
//! token errors, blockers, limits, context, run conditions), checkpoint, rehydrate,
//! rewind, workflow pinning and concurrent writers — over a real SQLite store.

// Test code: helpers outside #[test] fns may panic on failure like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use worktrain_core::context::Limits;
use worktrain_core::contract::ContractName;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::{BlockerCode, EntryCause, EventBody, SessionMode, StoredEvent};
use worktrain_core::ids::{Attempt, NodeId, Seq, SessionId, StepId};
use worktrain_core::machine::Submission;
use worktrain_core::projection::{AttemptOutcome, NodeStatus, SessionStatus, SessionSummary};
use worktrain_core::response::Outcome;
use worktrain_core::token::Keyring;
use worktrain_engine::{Catalog, Engine, Reply, Resolved, RewindTarget, SessionRef, StartRequest};
use worktrain_store::{EventStore, StoreOptions, StoreUrl};

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn keyring() -> Keyring {
    Keyring::new([1; 32], "2026-01-01T00:00:00Z".into())
}

struct Env {
    dir: tempfile::TempDir,
    db: PathBuf,
    store: Arc<dyn EventStore>,
    engine: Engine,
}

impl Env {
    async fn new() -> Self {
        Self::with(keyring(), Limits::default()).await
    }

    async fn with(keyring: Keyring, limits: Limits) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("worktrain.db");
        let store: Arc<dyn EventStore> =
            worktrain_store::open(&StoreUrl::Sqlite(db.clone()), &StoreOptions::default())
                .await
                .expect("open store");
        let engine = Engine::new(store.clone(), keyring, limits);
        Self {
            dir,
            db,
            store,
            engine,
        }
    }

    /// Another engine over the same database, through its own connection pool (as a
    /// second process would).
    async fn second_engine(&self, keyring: Keyring) -> Engine {
        let store: Arc<dyn EventStore> =
            worktrain_store::open(&StoreUrl::Sqlite(self.db.clone()), &StoreOptions::default())
                .await
                .expect("open second pool");
        Engine::new(store, keyring, Limits::default())
    }

    /// Write a workflow file into the temp dir and resolve it.
    fn workflow(&self, name: &str, yaml: &str) -> Resolved {
        let path = write(self.dir.path(), name, yaml);
        Catalog::default()
            .resolve(path.to_str().expect("utf-8 path"))
            .expect("resolve workflow file")
    }

    async fn start(&self, workflow: &Resolved, context: Value) -> Reply {
        self.engine
            .start(StartRequest {
                workflow: workflow.clone(),
                goal: "rename the widget".into(),
                workspace: None,
                context: obj(context),
                mode: SessionMode::Interactive,
                parent: None,
            })
            .await
            .expect("start")
    }

    async fn summary(&self, id: SessionId) -> SessionSummary {
        self.store
            .session(id)
            .await
            .expect("session")
            .expect("session exists")
    }

    async fn events(&self, id: SessionId) -> Vec<StoredEvent> {
        self.store
            .events(id, Seq(0), 100_000)
            .await
            .expect("events")
    }

    async fn kinds(&self, id: SessionId) -> Vec<&'static str> {
        self.events(id)
            .await
            .iter()
            .map(|e| e.body.kind().as_str())
            .collect()
    }

    /// (last_seq, number of events): what "writes nothing" is checked against.
    async fn mark(&self, id: SessionId) -> (Seq, usize) {
        (self.summary(id).await.last_seq, self.events(id).await.len())
    }
}

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write workflow");
    path
}

fn quick_task() -> Resolved {
    Catalog::default()
        .resolve("quick-task")
        .expect("bundled quick-task")
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => panic!("not an object: {other}"),
    }
}

fn notes(s: &str) -> Submission {
    Submission {
        notes: Some(s.to_owned()),
        ..Submission::default()
    }
}

fn with_context(s: &str, context: Value) -> Submission {
    Submission {
        notes: Some(s.to_owned()),
        artifacts: Vec::new(),
        context: obj(context),
    }
}

fn advance_token(r: &Reply) -> String {
    r.response
        .tokens
        .advance
        .clone()
        .expect("reply has an advance token")
}

fn checkpoint_token(r: &Reply) -> String {
    r.response
        .tokens
        .checkpoint
        .clone()
        .expect("reply has a checkpoint token")
}

fn step_id(r: &Reply) -> String {
    r.response
        .step
        .as_ref()
        .expect("reply has a step")
        .id
        .to_string()
}

fn node(r: &Reply) -> NodeId {
    r.response.step.as_ref().expect("reply has a step").node
}

fn expect_err(r: Result<Reply, ApiError>, code: ErrorCode) -> ApiError {
    match r {
        Err(e) if e.code == code => e,
        Err(e) => panic!("expected {code}, got {e:?}"),
        Ok(r) => panic!("expected {code}, got a reply: {:?}", r.response.outcome),
    }
}

/// Three plain steps.
const ABC: &str = r#"
schemaVersion: 1
id: abc
name: ABC
description: Three steps.
version: "1"
steps:
  - id: a
    title: Step A
    prompt: "Do A for {{goal}}"
  - id: b
    title: Step B
    prompt: Do B.
  - id: c
    title: Step C
    prompt: Do C.
"#;

/// A middle step that only runs for large tasks.
const CONDITIONAL: &str = r#"
schemaVersion: 1
id: conditional
name: Conditional
description: The middle step runs only for large tasks.
version: "1"
steps:
  - id: a
    title: A
    prompt: Do A.
  - id: b
    title: B (large only)
    prompt: Do B.
    runCondition: {var: size, equals: large}
  - id: c
    title: C
    prompt: Do C.
    notesOptional: true
"#;

/// A review step with an output contract.
const REVIEW: &str = r#"
schemaVersion: 1
id: review
name: Review
description: A review with a typed verdict.
version: "1"
steps:
  - id: review
    title: Review
    prompt: Review the change.
    outputContract: {contractRef: review_verdict}
  - id: report
    title: Report
    prompt: Report.
    notesOptional: true
"#;

// ---------------------------------------------------------------------------------------
// 9. start → advance → complete
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn start_advance_complete() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let r = &started.response;
    assert_eq!(r.outcome, Outcome::Started);
    assert!(!started.replayed);
    assert_eq!(r.workflow.id.as_str(), "quick-task");
    let step = r.step.as_ref().expect("first step");
    assert_eq!(step.id.as_str(), "do-it");
    assert_eq!(step.index, 1);
    assert_eq!(step.node, NodeId(1));
    assert_eq!(step.attempt, Attempt(1));
    assert!(
        step.prompt.contains("Goal: rename the widget"),
        "goal is rendered into the prompt: {}",
        step.prompt
    );
    assert!(!step.guidance.is_empty());
    let advance = advance_token(&started);
    assert!(
        advance.len() <= 100,
        "advance token is {} chars",
        advance.len()
    );
    assert!(advance.starts_with("wt1."));
    assert!(r.tokens.checkpoint.is_some());
    assert!(!r.tokens.resume.is_empty());
    assert_eq!(r.progress.total, 2);
    assert_eq!(
        started.bytes,
        r.to_bytes(),
        "bytes are the serialized response"
    );
    let id = r.session_id;
    let summary = env.summary(id).await;
    assert_eq!(summary.status, SessionStatus::InProgress);
    assert_eq!(summary.workflow_hash, r.workflow.hash);
    assert_eq!(summary.goal, "rename the widget");

    let second = env
        .engine
        .advance(&advance, notes("changed src/widget.rs"))
        .await
        .expect("advance");
    assert_eq!(second.response.outcome, Outcome::Advanced);
    assert!(!second.replayed);
    assert_eq!(step_id(&second), "verify");
    assert_eq!(second.response.step.as_ref().expect("step").index, 2);
    assert!(
        second
            .response
            .step
            .as_ref()
            .expect("step")
            .prompt
            .contains("Prove the change works")
    );
    assert_eq!(second.response.progress.completed, 1);
    assert_ne!(advance_token(&second), advance);

    let done = env
        .engine
        .advance(&advance_token(&second), notes("ran the tests: ok"))
        .await
        .expect("last advance");
    assert_eq!(done.response.outcome, Outcome::Complete);
    assert!(done.response.step.is_none());
    assert!(done.response.tokens.advance.is_none());
    assert!(done.response.tokens.checkpoint.is_none());
    assert_eq!(done.response.progress.completed, 2);
    let summary = env.summary(id).await;
    assert_eq!(summary.status, SessionStatus::Complete);
    assert_eq!(summary.current, None);
    assert_eq!(summary.steps_completed, 2);
    assert_eq!(
        env.kinds(id).await,
        [
            "session_started",
            "node_entered",
            "step_completed",
            "node_entered",
            "step_completed",
            "session_completed"
        ]
    );
    assert!(
        env.store
            .verify(id)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );
    // The pinned workflow and every recorded response are in the blob store.
    assert!(
        env.store
            .blob(summary.workflow_hash)
            .await
            .expect("blob")
            .is_some()
    );
}

// ---------------------------------------------------------------------------------------
// 10. Replay, conflict, stale and token errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn replay_is_byte_identical_and_writes_nothing() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let t1 = advance_token(&started);
    let sub = with_context("first step done", json!({"files": ["a.rs"]}));
    let original = env.engine.advance(&t1, sub.clone()).await.expect("advance");
    assert!(!original.replayed);
    let mark = env.mark(id).await;
    let summary = env.summary(id).await;

    let replay = env.engine.advance(&t1, sub.clone()).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.bytes, original.bytes, "byte-identical replay");
    assert_eq!(replay.response, original.response);
    assert_eq!(env.mark(id).await, mark, "a replay writes no events");
    assert_eq!(env.summary(id).await, summary);

    // Still a replay after the session has moved on and completed.
    let t2 = advance_token(&original);
    let last = env
        .engine
        .advance(&t2, notes("verified"))
        .await
        .expect("advance");
    assert_eq!(last.response.outcome, Outcome::Complete);
    let mark = env.mark(id).await;
    let again = env.engine.advance(&t1, sub).await.expect("late replay");
    assert!(again.replayed);
    assert_eq!(again.bytes, original.bytes);
    let again = env
        .engine
        .advance(&t2, notes("verified"))
        .await
        .expect("replay of completion");
    assert!(again.replayed);
    assert_eq!(again.bytes, last.bytes);
    assert_eq!(again.response.outcome, Outcome::Complete);
    assert_eq!(env.mark(id).await, mark);
    // A replay through another engine instance (fresh pin cache, own pool) is identical too.
    let other = env.second_engine(keyring()).await;
    let again = other
        .advance(&t2, notes("verified"))
        .await
        .expect("replay elsewhere");
    assert!(again.replayed);
    assert_eq!(again.bytes, last.bytes);
}

/// The engine decides an advance on the summary its store handle last wrote, without
/// reading it back. When another process has moved the session on meanwhile, the append
/// built on it is refused and the advance is decided again on what the log says: a replay
/// of what the other process recorded, a conflict, or a normal advance — never a second
/// record of one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advance_on_a_session_another_process_moved_on_is_decided_on_the_log() {
    let env = Env::new().await;
    let other = env.second_engine(keyring()).await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let t1 = advance_token(&started);
    assert!(
        env.store.recent_summary(id).is_some(),
        "this handle holds the summary it wrote"
    );

    // The other process submits step 1 first.
    let theirs = other
        .advance(&t1, notes("done"))
        .await
        .expect("other advance");
    assert!(!theirs.replayed);
    let mark = env.mark(id).await;
    // This engine's summary is behind the log: the same submission is a replay of theirs,
    // a different one is a conflict, and neither writes anything.
    let ours = env
        .engine
        .advance(&t1, notes("done"))
        .await
        .expect("replay");
    assert!(ours.replayed);
    assert_eq!(ours.bytes, theirs.bytes);
    expect_err(
        env.engine.advance(&t1, notes("done, differently")).await,
        ErrorCode::TokenConflict,
    );
    assert_eq!(env.mark(id).await, mark);

    // The other process records a checkpoint on step 2: the attempt is still open, but
    // the log moved on. This engine's advance is recorded once, after the checkpoint.
    let t2 = advance_token(&theirs);
    let ours_seen = env
        .store
        .recent_summary(id)
        .expect("read back by the replay");
    other
        .checkpoint(&checkpoint_token(&theirs), "halfway", Map::new())
        .await
        .expect("checkpoint elsewhere");
    assert!(
        env.store
            .recent_summary(id)
            .is_some_and(|s| s.last_seq == ours_seen.last_seq)
    );
    let done = env
        .engine
        .advance(&t2, notes("verified"))
        .await
        .expect("advance");
    assert!(!done.replayed);
    assert_eq!(done.response.outcome, Outcome::Complete);
    let events = env.events(id).await;
    assert_eq!(step_completed_count(&events), 2, "one record per attempt");
    let kinds = env.kinds(id).await;
    let checkpoint = kinds.iter().position(|k| *k == "checkpoint_recorded");
    let last_step = kinds.iter().rposition(|k| *k == "step_completed");
    assert!(checkpoint < last_step, "{kinds:?}");
    assert!(
        env.store
            .verify(id)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );
    assert_eq!(env.summary(id).await.checkpoints, 1);
}

#[tokio::test]
async fn same_token_different_output_is_a_conflict() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let t1 = advance_token(&started);
    env.engine
        .advance(&t1, notes("done"))
        .await
        .expect("advance");
    let mark = env.mark(id).await;
    for different in [
        notes("done, differently"),
        with_context("done", json!({"k": 1})),
        Submission {
            notes: Some("done".into()),
            artifacts: vec![json!({"kind": "note"})],
            context: Map::new(),
        },
    ] {
        let e = expect_err(
            env.engine.advance(&t1, different).await,
            ErrorCode::TokenConflict,
        );
        assert!(
            e.message.contains("step `verify`"),
            "names the current step: {}",
            e.message
        );
        assert_eq!(e.retry, Retry::AfterRehydrate);
    }
    assert_eq!(env.mark(id).await, mark, "a conflict writes nothing");
}

#[tokio::test]
async fn stale_token_after_rewind_points_to_rehydrate() {
    let env = Env::new().await;
    let wf = env.workflow("abc.yaml", ABC);
    let started = env.start(&wf, json!({})).await;
    let id = started.response.session_id;
    let on_b = env
        .engine
        .advance(&advance_token(&started), notes("a done"))
        .await
        .expect("advance");
    assert_eq!(step_id(&on_b), "b");
    env.engine
        .rewind(
            &SessionRef::Id(id),
            &RewindTarget::Step(StepId::new("a").expect("id")),
            None,
        )
        .await
        .expect("rewind");
    let mark = env.mark(id).await;
    // The (never used) token for node 2 is stale now: node 2 was abandoned.
    let e = expect_err(
        env.engine
            .advance(&advance_token(&on_b), notes("b done"))
            .await,
        ErrorCode::TokenStale,
    );
    assert!(e.hint.contains("rehydrate"), "hint: {}", e.hint);
    assert!(
        e.hint.contains(&id.to_string()),
        "hint names the session: {}",
        e.hint
    );
    assert_eq!(e.retry, Retry::AfterRehydrate);
    assert!(
        e.message.contains("step `a`"),
        "names the current step: {}",
        e.message
    );
    let e = expect_err(
        env.engine
            .checkpoint(&checkpoint_token(&on_b), "progress", Map::new())
            .await,
        ErrorCode::TokenStale,
    );
    assert!(e.hint.contains("rehydrate"));
    assert_eq!(env.mark(id).await, mark, "stale tokens write nothing");
}

#[tokio::test]
async fn superseded_attempt_token_with_new_output_is_refused() {
    // A blocked attempt's token may only replay its recorded response; with a different
    // output it is refused (it was already used), and it never advances the session.
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let t1 = advance_token(&started);
    let blocked = env
        .engine
        .advance(&t1, Submission::default())
        .await
        .expect("blocked");
    assert_eq!(blocked.response.outcome, Outcome::Blocked);
    let mark = env.mark(id).await;
    let e = env
        .engine
        .advance(&t1, notes("now with notes"))
        .await
        .expect_err("refused");
    assert!(
        matches!(e.code, ErrorCode::TokenConflict | ErrorCode::TokenStale),
        "{e:?}"
    );
    assert_eq!(e.retry, Retry::AfterRehydrate);
    assert!(e.hint.contains("rehydrate"), "{}", e.hint);
    assert_eq!(env.mark(id).await, mark);
    assert_eq!(env.summary(id).await.steps_completed, 0);
}

#[tokio::test]
async fn token_verification_errors_are_distinct() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let token = advance_token(&started);
    let mark = env.mark(id).await;

    // Tampered: change one character inside the session-id part of the payload, and one
    // inside the tag.
    for at in [4 + 12, 4 + 34 + 1 + 8] {
        let mut t = token.clone();
        let c = t.as_bytes()[at];
        let replacement = if c == b'A' { "B" } else { "A" };
        t.replace_range(at..=at, replacement);
        assert_ne!(t, token);
        expect_err(
            env.engine.advance(&t, notes("x")).await,
            ErrorCode::TokenBadSignature,
        );
        expect_err(
            env.engine.rehydrate(&SessionRef::Token(t.clone())).await,
            ErrorCode::TokenBadSignature,
        );
    }

    // Minted by another keyring (same key id, different secret).
    let foreign = Env::with(
        Keyring::new([2; 32], "2026-01-01T00:00:00Z".into()),
        Limits::default(),
    )
    .await;
    let foreign_start = foreign.start(&quick_task(), json!({})).await;
    expect_err(
        env.engine
            .advance(&advance_token(&foreign_start), notes("x"))
            .await,
        ErrorCode::TokenBadSignature,
    );

    // Rotated once: still accepted. Rotated twice: retired key.
    let mut once = keyring();
    once.rotate([3; 32], "2026-02-01T00:00:00Z".into());
    let rotated_once = env.second_engine(once.clone()).await;
    let r = rotated_once
        .rehydrate(&SessionRef::Token(token.clone()))
        .await
        .expect("previous key still verifies");
    assert_eq!(r.response.session_id, id);
    let mut twice = once;
    twice.rotate([4; 32], "2026-03-01T00:00:00Z".into());
    let rotated_twice = env.second_engine(twice).await;
    let e = expect_err(
        rotated_twice.advance(&token, notes("x")).await,
        ErrorCode::TokenRetiredKey,
    );
    assert!(e.hint.contains("rehydrate"), "{}", e.hint);

    // Garbage.
    for garbage in [
        "",
        "hello",
        "wt1.abc.def",
        &"x".repeat(61),
        &token[..60],
        &format!("{token}x"),
    ] {
        expect_err(
            env.engine.advance(garbage, notes("x")).await,
            ErrorCode::TokenMalformed,
        );
    }

    // A valid token for a session this store does not have.
    let empty = Env::new().await;
    let e = expect_err(
        empty.engine.advance(&token, notes("x")).await,
        ErrorCode::SessionNotFound,
    );
    assert!(e.message.contains(&id.to_string()), "{}", e.message);
    expect_err(
        empty
            .engine
            .rehydrate(&SessionRef::Token(token.clone()))
            .await,
        ErrorCode::SessionNotFound,
    );
    expect_err(
        empty
            .engine
            .checkpoint(&checkpoint_token(&started), "n", Map::new())
            .await,
        ErrorCode::SessionNotFound,
    );

    // Wrong kind: checkpoint or resume token to advance, advance token to checkpoint.
    let e = expect_err(
        env.engine
            .advance(&checkpoint_token(&started), notes("x"))
            .await,
        ErrorCode::TokenWrongKind,
    );
    assert!(e.hint.contains("tokens.advance"), "{}", e.hint);
    expect_err(
        env.engine
            .advance(&started.response.tokens.resume, notes("x"))
            .await,
        ErrorCode::TokenWrongKind,
    );
    expect_err(
        env.engine.checkpoint(&token, "n", Map::new()).await,
        ErrorCode::TokenWrongKind,
    );

    assert_eq!(env.mark(id).await, mark, "no rejected token wrote anything");
    // And the genuine token still works.
    let ok = env
        .engine
        .advance(&token, notes("done"))
        .await
        .expect("advance");
    assert_eq!(ok.response.outcome, Outcome::Advanced);
}

#[tokio::test]
async fn impossible_tokens_and_keys_are_told_apart_from_stale_and_retired_ones() {
    use worktrain_core::token::{TokenClaims, TokenKind};
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let token = advance_token(&started);
    let mark = env.mark(id).await;
    let claims = keyring().verify(&token).expect("genuine");

    // Signed with the real key, but naming a node the session never entered, or an
    // attempt the current node never had: not issued, not "no longer current".
    for (node, attempt) in [(99, claims.attempt.0), (0, 1), (claims.node.0, 9)] {
        let forged = keyring().mint(TokenClaims {
            kind: TokenKind::Advance,
            session: id,
            node: NodeId(node),
            attempt: Attempt(attempt),
        });
        let e = expect_err(
            env.engine.advance(&forged, notes("x")).await,
            ErrorCode::TokenNeverIssued,
        );
        assert_eq!(e.retry, Retry::Never, "{e:?}");
        assert!(e.message.contains("never reached"), "{}", e.message);
        assert!(!e.message.contains("no longer current"), "{}", e.message);
    }
    let forged_checkpoint = keyring().mint(TokenClaims {
        kind: TokenKind::Checkpoint,
        session: id,
        node: NodeId(42),
        attempt: Attempt(0),
    });
    expect_err(
        env.engine
            .checkpoint(&forged_checkpoint, "n", Map::new())
            .await,
        ErrorCode::TokenNeverIssued,
    );

    // A key id above this keyring's newest was never issued here.
    let mut ahead = keyring();
    ahead.rotate([7; 32], "2026-02-01T00:00:00Z".into());
    ahead.rotate([8; 32], "2026-03-01T00:00:00Z".into());
    let from_the_future = ahead.mint(claims);
    let e = expect_err(
        env.engine.advance(&from_the_future, notes("x")).await,
        ErrorCode::TokenUnknownKey,
    );
    assert!(e.message.contains("never issued"), "{}", e.message);
    assert!(!e.message.contains("no longer holds"), "{}", e.message);
    assert_eq!(e.retry, Retry::Never);

    // Surrounding whitespace is refused, never trimmed, and the error says so.
    for padded in [
        format!(" {token}"),
        format!("{token}\t"),
        format!("{token}\n"),
        format!("{token}\r\n"),
        format!("{token}\u{2028}"),
    ] {
        let e = expect_err(
            env.engine.advance(&padded, notes("x")).await,
            ErrorCode::TokenMalformed,
        );
        assert!(
            e.message.contains("surrounding whitespace"),
            "{}",
            e.message
        );
        expect_err(
            env.engine.rehydrate(&SessionRef::parse(&padded)).await,
            ErrorCode::TokenMalformed,
        );
    }
    assert_eq!(env.mark(id).await, mark, "no rejected token wrote anything");
}

// ---------------------------------------------------------------------------------------
// 11. Blockers: notes and output contracts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_notes_block_with_a_new_attempt_token() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let t1 = advance_token(&started);

    let blocked = env
        .engine
        .advance(&t1, Submission::default())
        .await
        .expect("blocked");
    let r = &blocked.response;
    assert_eq!(r.outcome, Outcome::Blocked);
    assert!(!blocked.replayed);
    assert_eq!(r.blockers.len(), 1);
    assert_eq!(r.blockers[0].code, BlockerCode::NotesRequired);
    let step = r.step.as_ref().expect("same step");
    assert_eq!(step.id.as_str(), "do-it");
    assert_eq!(step.node, NodeId(1));
    assert_eq!(step.attempt, Attempt(2));
    let t2 = advance_token(&blocked);
    assert_ne!(t2, t1, "a new token for attempt 2");
    let summary = env.summary(id).await;
    assert_eq!(summary.status, SessionStatus::Blocked);
    assert_eq!(summary.blocked_attempts, 1);
    assert_eq!(
        summary.current.as_ref().expect("current").attempt,
        Attempt(2)
    );
    let rec = env
        .store
        .attempt(id, NodeId(1), Attempt(1))
        .await
        .expect("attempt")
        .expect("recorded");
    assert_eq!(rec.outcome, AttemptOutcome::Blocked);

    // Whitespace-only notes are not notes either.
    let blocked2 = env
        .engine
        .advance(&t2, notes("   \n"))
        .await
        .expect("blocked again");
    assert_eq!(blocked2.response.outcome, Outcome::Blocked);
    assert_eq!(
        blocked2.response.step.as_ref().expect("step").attempt,
        Attempt(3)
    );
    let t3 = advance_token(&blocked2);

    // The attempt-1 token with the identical empty output replays the blocked response.
    let mark = env.mark(id).await;
    let replay = env
        .engine
        .advance(&t1, Submission::default())
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.bytes, blocked.bytes);
    assert_eq!(replay.response.outcome, Outcome::Blocked);
    // `notes: Some("")` is the same output as no notes.
    let replay = env.engine.advance(&t1, notes("")).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.bytes, blocked.bytes);
    assert_eq!(env.mark(id).await, mark);

    let ok = env
        .engine
        .advance(&t3, notes("did it"))
        .await
        .expect("advance");
    assert_eq!(ok.response.outcome, Outcome::Advanced);
    assert_eq!(step_id(&ok), "verify");
    let node1 = env
        .store
        .node(id, NodeId(1))
        .await
        .expect("node")
        .expect("exists");
    assert_eq!(node1.attempts, 3);
    assert_eq!(node1.status, NodeStatus::Completed);
    assert_eq!(
        env.kinds(id).await,
        [
            "session_started",
            "node_entered",
            "step_blocked",
            "step_blocked",
            "step_completed",
            "node_entered"
        ]
    );
}

/// A client that resubmits what was just blocked — an editor that returns at once, a
/// stuck agent — gets the same blocked response again and the log does not grow: however
/// often it loops, one blocked attempt is recorded.
#[tokio::test]
async fn resubmitting_the_blocked_output_is_answered_without_recording_again() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let blocked = env
        .engine
        .advance(&advance_token(&started), notes(""))
        .await
        .expect("blocked");
    assert!(!blocked.replayed);
    let t2 = advance_token(&blocked);
    let mark = env.mark(id).await;
    for _ in 0..50 {
        let again = env.engine.advance(&t2, notes("")).await.expect("blocked");
        assert!(again.replayed, "answered from the record");
        assert_eq!(again.bytes, blocked.bytes);
        assert_eq!(advance_token(&again), t2, "the same attempt stays current");
    }
    assert_eq!(env.mark(id).await, mark, "nothing was written");
    assert_eq!(env.summary(id).await.blocked_attempts, 1);
    // Different output on the same token is judged as usual.
    let ok = env.engine.advance(&t2, notes("did it")).await.expect("ok");
    assert_eq!(ok.response.outcome, Outcome::Advanced);
}

#[tokio::test]
async fn notes_optional_steps_accept_empty_notes() {
    let env = Env::new().await;
    let wf = env.workflow("review.yaml", REVIEW);
    let started = env.start(&wf, json!({})).await;
    let on_report = env
        .engine
        .advance(
            &advance_token(&started),
            Submission {
                notes: Some("looked".into()),
                artifacts: vec![ContractName::ReviewVerdict.example()],
                context: Map::new(),
            },
        )
        .await
        .expect("advance");
    assert_eq!(step_id(&on_report), "report");
    assert!(
        on_report
            .response
            .step
            .as_ref()
            .expect("step")
            .notes_optional
    );
    let done = env
        .engine
        .advance(&advance_token(&on_report), Submission::default())
        .await
        .expect("notes are optional");
    assert_eq!(done.response.outcome, Outcome::Complete);
}

#[tokio::test]
async fn output_contract_blocks_until_the_artifact_is_valid() {
    let env = Env::new().await;
    let wf = env.workflow("review.yaml", REVIEW);
    let started = env.start(&wf, json!({})).await;
    let id = started.response.session_id;
    let view = started
        .response
        .step
        .as_ref()
        .expect("step")
        .output_contract
        .clone()
        .expect("contract shown to the agent");
    assert_eq!(view.contract, ContractName::ReviewVerdict);
    assert!(view.required);
    assert_eq!(view.example, ContractName::ReviewVerdict.example());

    // Missing artifact: blocked, with the example.
    let missing = env
        .engine
        .advance(&advance_token(&started), notes("reviewed"))
        .await
        .expect("blocked");
    assert_eq!(missing.response.outcome, Outcome::Blocked);
    let b = &missing.response.blockers;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].code, BlockerCode::ArtifactMissing);
    assert!(b[0].message.contains("review_verdict"), "{}", b[0].message);
    assert_eq!(b[0].example, Some(ContractName::ReviewVerdict.example()));

    // Invalid artifact: blocked, with the path of the problem.
    let invalid = env
        .engine
        .advance(
            &advance_token(&missing),
            Submission {
                notes: Some("reviewed".into()),
                artifacts: vec![
                    json!({"kind": "review_verdict", "verdict": "maybe", "findings": []}),
                ],
                context: Map::new(),
            },
        )
        .await
        .expect("blocked");
    assert_eq!(invalid.response.outcome, Outcome::Blocked);
    let b = &invalid.response.blockers;
    assert!(!b.is_empty());
    assert!(
        b.iter().all(|b| b.code == BlockerCode::ArtifactInvalid),
        "{b:?}"
    );
    assert!(
        b.iter().any(|b| b.path.as_deref() == Some("verdict")),
        "the blocker names the path: {b:?}"
    );
    assert!(b.iter().all(|b| b.example.is_some()));

    // Both problems at once: notes missing and artifact missing.
    let both = env
        .engine
        .advance(&advance_token(&invalid), Submission::default())
        .await
        .expect("blocked");
    let codes: Vec<BlockerCode> = both.response.blockers.iter().map(|b| b.code).collect();
    assert_eq!(
        codes,
        [BlockerCode::NotesRequired, BlockerCode::ArtifactMissing]
    );

    // Valid: passes, and the artifact is stored as a blob referenced by the event.
    let verdict =
        json!({"kind": "review_verdict", "verdict": "clean", "summary": "ok", "findings": []});
    let ok = env
        .engine
        .advance(
            &advance_token(&both),
            Submission {
                notes: Some("reviewed".into()),
                artifacts: vec![verdict.clone()],
                context: Map::new(),
            },
        )
        .await
        .expect("advance");
    assert_eq!(
        ok.response.outcome,
        Outcome::Advanced,
        "{:?}",
        ok.response.blockers
    );
    assert_eq!(step_id(&ok), "report");
    let completed = env
        .events(id)
        .await
        .into_iter()
        .find_map(|e| match e.body {
            EventBody::StepCompleted { artifacts, .. } => Some(artifacts),
            _ => None,
        })
        .expect("step_completed");
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].kind.as_deref(), Some("review_verdict"));
    let blob = env
        .store
        .blob(completed[0].hash)
        .await
        .expect("blob")
        .expect("artifact stored");
    assert_eq!(
        serde_json::from_slice::<Value>(&blob).expect("json"),
        verdict
    );
    assert_eq!(env.summary(id).await.blocked_attempts, 3);
}

// ---------------------------------------------------------------------------------------
// 12. Limits, context, run conditions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn size_limits_are_enforced() {
    let limits = Limits {
        notes_bytes: 100,
        context_bytes: 200,
        artifact_bytes: 300,
        ..Limits::default()
    };
    let env = Env::with(keyring(), limits).await;

    // The initial context is limited too.
    let e = env
        .engine
        .start(StartRequest {
            workflow: quick_task(),
            goal: "g".into(),
            workspace: None,
            context: obj(json!({"big": "v".repeat(250)})),
            mode: SessionMode::Interactive,
            parent: None,
        })
        .await
        .expect_err("context too large");
    assert_eq!(e.code, ErrorCode::ContextTooLarge);

    let started = env.start(&quick_task(), json!({"seed": "x"})).await;
    let id = started.response.session_id;
    let t = advance_token(&started);
    let cp = checkpoint_token(&started);
    let mark = env.mark(id).await;

    let e = expect_err(
        env.engine.advance(&t, notes(&"n".repeat(101))).await,
        ErrorCode::NotesTooLarge,
    );
    assert!(
        e.message.contains("101") && e.message.contains("100"),
        "{}",
        e.message
    );
    assert_eq!(e.retry, Retry::AfterFix);
    let e = expect_err(
        env.engine
            .advance(&t, with_context("ok", json!({"big": "v".repeat(250)})))
            .await,
        ErrorCode::ContextTooLarge,
    );
    assert_eq!(e.retry, Retry::AfterFix);
    let big_artifact = json!({"kind": "note", "text": "a".repeat(400)});
    let e = expect_err(
        env.engine
            .advance(
                &t,
                Submission {
                    notes: Some("ok".into()),
                    artifacts: vec![big_artifact],
                    context: Map::new(),
                },
            )
            .await,
        ErrorCode::ArtifactTooLarge,
    );
    assert!(e.message.contains("300"), "{}", e.message);
    expect_err(
        env.engine
            .advance(
                &t,
                Submission {
                    notes: Some("ok".into()),
                    artifacts: vec![json!({"kind": "n"}); 17],
                    context: Map::new(),
                },
            )
            .await,
        ErrorCode::ArtifactTooLarge,
    );
    expect_err(
        env.engine
            .checkpoint(&cp, &"n".repeat(101), Map::new())
            .await,
        ErrorCode::NotesTooLarge,
    );
    expect_err(
        env.engine
            .checkpoint(&cp, "ok", obj(json!({"big": "v".repeat(250)})))
            .await,
        ErrorCode::ContextTooLarge,
    );
    assert_eq!(
        env.mark(id).await,
        mark,
        "rejected submissions write nothing"
    );

    // Exactly at the limits is accepted.
    let ok = env
        .engine
        .advance(
            &t,
            Submission {
                notes: Some("n".repeat(100)),
                artifacts: vec![json!({"kind": "note", "text": "a".repeat(200)})],
                context: obj(json!({"k": "v".repeat(100)})),
            },
        )
        .await
        .expect("within limits");
    assert_eq!(ok.response.outcome, Outcome::Advanced);
}

#[tokio::test]
async fn context_merges_with_null_deleting_and_reserved_keys_rejected() {
    let env = Env::new().await;
    let started = env
        .start(&quick_task(), json!({"a": 1, "b": {"x": 1}, "keep": "k"}))
        .await;
    let id = started.response.session_id;
    assert_eq!(
        Value::Object(env.summary(id).await.context),
        json!({"a": 1, "b": {"x": 1}, "keep": "k"})
    );
    let t = advance_token(&started);
    let mark = env.mark(id).await;

    // Reserved keys are rejected everywhere, before anything is written.
    for bad in [
        json!({"_x": 1}),
        json!({"worktrain": {"a": 1}}),
        json!({"ok": 1, "_": null}),
    ] {
        let e = expect_err(
            env.engine.advance(&t, with_context("n", bad.clone())).await,
            ErrorCode::ReservedContextKey,
        );
        assert!(e.hint.contains("reserved"), "{}", e.hint);
        expect_err(
            env.engine
                .checkpoint(&checkpoint_token(&started), "n", obj(bad.clone()))
                .await,
            ErrorCode::ReservedContextKey,
        );
    }
    let e = env
        .engine
        .start(StartRequest {
            workflow: quick_task(),
            goal: "g".into(),
            workspace: None,
            context: obj(json!({"worktrain": true})),
            mode: SessionMode::Interactive,
            parent: None,
        })
        .await
        .expect_err("reserved key at start");
    assert_eq!(e.code, ErrorCode::ReservedContextKey);
    assert_eq!(env.mark(id).await, mark);

    // Merge: null deletes, a value replaces the key whole, new keys are added.
    let next = env
        .engine
        .advance(
            &t,
            with_context(
                "n",
                json!({"a": null, "b": {"y": 2}, "c": 3, "absent": null}),
            ),
        )
        .await
        .expect("advance");
    assert_eq!(
        Value::Object(env.summary(id).await.context),
        json!({"b": {"y": 2}, "keep": "k", "c": 3})
    );
    // Checkpoints merge their delta as well.
    env.engine
        .checkpoint(
            &checkpoint_token(&next),
            "half",
            obj(json!({"c": null, "d": [1]})),
        )
        .await
        .expect("checkpoint");
    assert_eq!(
        Value::Object(env.summary(id).await.context),
        json!({"b": {"y": 2}, "keep": "k", "d": [1]})
    );
}

#[tokio::test]
async fn false_run_condition_skips_and_records_the_step_for_good() {
    let env = Env::new().await;
    let wf = env.workflow("conditional.yaml", CONDITIONAL);
    let started = env.start(&wf, json!({"size": "small"})).await;
    let id = started.response.session_id;
    assert_eq!(step_id(&started), "a");

    // Completing `a` passes over `b` (size is small) and enters `c`.
    let on_c = env
        .engine
        .advance(&advance_token(&started), notes("a done"))
        .await
        .expect("advance");
    assert_eq!(step_id(&on_c), "c");
    assert_eq!(on_c.response.step.as_ref().expect("step").index, 3);
    assert_eq!(on_c.response.progress.skipped, 1);
    let skipped: Vec<_> = env
        .events(id)
        .await
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::StepSkipped {
                step_id, condition, ..
            } => Some((step_id.to_string(), condition)),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "b");
    assert!(
        skipped[0].1.contains("size"),
        "the condition is recorded: {}",
        skipped[0].1
    );
    assert_eq!(env.summary(id).await.steps_skipped, 1);

    // The context now says large — `b` still never runs.
    let cp = env
        .engine
        .checkpoint(
            &checkpoint_token(&on_c),
            "resized",
            obj(json!({"size": "large"})),
        )
        .await
        .expect("checkpoint");
    assert_eq!(step_id(&cp), "c");
    let done = env
        .engine
        .advance(
            &advance_token(&on_c),
            with_context("", json!({"size": "large"})),
        )
        .await
        .expect("advance");
    assert_eq!(done.response.outcome, Outcome::Complete);
    let nodes = env.store.nodes(id).await.expect("nodes");
    let steps: Vec<&str> = nodes.iter().map(|n| n.step_id.as_str()).collect();
    assert_eq!(steps, ["a", "c"], "b was never entered");
    assert_eq!(
        env.kinds(id).await,
        [
            "session_started",
            "node_entered",
            "step_completed",
            "step_skipped",
            "node_entered",
            "checkpoint_recorded",
            "step_completed",
            "session_completed"
        ]
    );

    // Control: with a large task, `b` runs.
    let large = env.start(&wf, json!({"size": "large"})).await;
    let on_b = env
        .engine
        .advance(&advance_token(&large), notes("a done"))
        .await
        .expect("advance");
    assert_eq!(step_id(&on_b), "b");
    assert_eq!(on_b.response.progress.skipped, 0);

    // A first step can be skipped at start, and a session where every remaining step is
    // skipped completes.
    let all_skip = r#"
schemaVersion: 1
id: all-skip
name: All skip
description: Every step is conditional.
version: "1"
steps:
  - id: x
    title: X
    prompt: X.
    runCondition: {var: go, equals: true}
  - id: y
    title: Y
    prompt: Y.
"#;
    let wf2 = env.workflow("all-skip.yaml", all_skip);
    let s = env.start(&wf2, json!({})).await;
    assert_eq!(step_id(&s), "y");
    assert_eq!(s.response.progress.skipped, 1);
    assert_eq!(
        env.kinds(s.response.session_id).await,
        ["session_started", "step_skipped", "node_entered"]
    );
}

// ---------------------------------------------------------------------------------------
// 13. Checkpoint
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn checkpoint_records_progress_without_advancing() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let cp = checkpoint_token(&started);
    let before = env.summary(id).await;

    let first = env
        .engine
        .checkpoint(&cp, "half way", obj(json!({"progress": 50})))
        .await
        .expect("checkpoint");
    assert_eq!(first.response.outcome, Outcome::Checkpointed);
    assert!(!first.replayed);
    assert_eq!(step_id(&first), "do-it");
    assert_eq!(node(&first), NodeId(1));
    assert_eq!(
        first.response.step.as_ref().expect("step").attempt,
        Attempt(1)
    );
    assert_eq!(
        first.response.tokens.advance, started.response.tokens.advance,
        "the advance token is unchanged"
    );
    let after = env.summary(id).await;
    assert_eq!(after.checkpoints, before.checkpoints + 1);
    assert_eq!(after.current, before.current, "node unchanged");
    assert_eq!(after.steps_completed, 0);
    assert_eq!(after.context.get("progress"), Some(&json!(50)));
    let n_events = env.events(id).await.len();

    // The same checkpoint again is a replay: one event.
    let again = env
        .engine
        .checkpoint(&cp, "half way", obj(json!({"progress": 50})))
        .await
        .expect("checkpoint again");
    assert!(again.replayed);
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(env.events(id).await.len(), n_events);
    assert_eq!(env.summary(id).await.checkpoints, 1);
    assert_eq!(
        env.kinds(id)
            .await
            .iter()
            .filter(|k| **k == "checkpoint_recorded")
            .count(),
        1
    );

    // Different progress is a new checkpoint.
    let second = env
        .engine
        .checkpoint(&cp, "three quarters", obj(json!({"progress": 75})))
        .await
        .expect("checkpoint");
    assert!(!second.replayed);
    assert_eq!(env.summary(id).await.checkpoints, 2);

    // The session still advances with the original token.
    let next = env
        .engine
        .advance(&advance_token(&started), notes("done"))
        .await
        .expect("advance");
    assert_eq!(step_id(&next), "verify");
    let done = env
        .engine
        .advance(&advance_token(&next), notes("verified"))
        .await
        .expect("complete");
    assert_eq!(done.response.outcome, Outcome::Complete);
    expect_err(
        env.engine
            .checkpoint(&checkpoint_token(&next), "late", Map::new())
            .await,
        ErrorCode::SessionComplete,
    );
}

/// Checkpoints A, B, A record three checkpoints: only a repeat of the *last* checkpoint
/// on a node is a retry (replayed, nothing written).
#[tokio::test]
async fn checkpoint_repeating_an_earlier_one_is_recorded() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let cp = checkpoint_token(&started);
    for progress in [1, 2, 1] {
        let r = env
            .engine
            .checkpoint(&cp, "progress", obj(json!({"progress": progress})))
            .await
            .expect("checkpoint");
        assert!(!r.replayed, "progress {progress} was not recorded");
        assert_eq!(
            env.summary(id).await.context.get("progress"),
            Some(&json!(progress))
        );
    }
    assert_eq!(env.summary(id).await.checkpoints, 3);
}

// ---------------------------------------------------------------------------------------
// 14. Rehydrate
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rehydrate_returns_current_step_and_recap_and_writes_nothing() {
    let env = Env::new().await;
    let wf = env.workflow("abc.yaml", ABC);
    let started = env.start(&wf, json!({})).await;
    let id = started.response.session_id;
    let on_b = env
        .engine
        .advance(&advance_token(&started), notes("notes about A"))
        .await
        .expect("advance");
    let on_c = env
        .engine
        .advance(&advance_token(&on_b), notes("notes about B"))
        .await
        .expect("advance");
    env.engine
        .checkpoint(&checkpoint_token(&on_c), "progress on C", Map::new())
        .await
        .expect("checkpoint");
    let mark = env.mark(id).await;
    let summary = env.summary(id).await;

    let by_id = env
        .engine
        .rehydrate(&SessionRef::Id(id))
        .await
        .expect("rehydrate");
    let r = &by_id.response;
    assert_eq!(r.outcome, Outcome::Rehydrated);
    assert!(!by_id.replayed);
    let step = r.step.as_ref().expect("current step");
    assert_eq!(step.id.as_str(), "c");
    assert_eq!(step.node, NodeId(3));
    assert_eq!(step.prompt, "Do C.");
    assert_eq!(
        r.tokens.advance, on_c.response.tokens.advance,
        "the current advance token"
    );
    let recap: Vec<(&str, &str, &str)> = r
        .recap
        .iter()
        .map(|e| (e.step_id.as_str(), e.title.as_str(), e.notes.as_str()))
        .collect();
    assert_eq!(
        recap,
        [
            ("a", "Step A", "notes about A"),
            ("b", "Step B", "notes about B")
        ]
    );
    assert_eq!(r.progress.completed, 2);

    // From any token of the session — old or current, of any kind — and from the id text.
    for t in [
        started.response.tokens.resume.clone(),
        advance_token(&started),
        checkpoint_token(&started),
        advance_token(&on_b),
        advance_token(&on_c),
        checkpoint_token(&on_c),
        on_c.response.tokens.resume.clone(),
    ] {
        let r = env
            .engine
            .rehydrate(&SessionRef::Token(t))
            .await
            .expect("rehydrate by token");
        assert_eq!(r.bytes, by_id.bytes);
    }
    let parsed = env
        .engine
        .rehydrate(&SessionRef::parse(&id.to_string()))
        .await
        .expect("rehydrate by id text");
    assert_eq!(parsed.bytes, by_id.bytes);
    assert_eq!(env.mark(id).await, mark, "rehydrate writes nothing");
    assert_eq!(env.summary(id).await, summary);

    // Its advance token is usable.
    let done = env
        .engine
        .advance(&advance_token(&by_id), notes("notes about C"))
        .await
        .expect("advance with a rehydrated token");
    assert_eq!(done.response.outcome, Outcome::Complete);
    let mark = env.mark(id).await;
    let complete = env
        .engine
        .rehydrate(&SessionRef::Id(id))
        .await
        .expect("rehydrate");
    assert_eq!(complete.response.outcome, Outcome::Complete);
    assert!(complete.response.step.is_none());
    assert_eq!(complete.response.recap.len(), 3);
    assert_eq!(env.mark(id).await, mark);
    expect_err(
        env.engine
            .rehydrate(&SessionRef::Id(SessionId::from_parts(1, 1)))
            .await,
        ErrorCode::SessionNotFound,
    );
}

// ---------------------------------------------------------------------------------------
// 15. Rewind
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rewind_records_a_branch_in_the_step_graph() {
    let env = Env::new().await;
    let wf = env.workflow("abc.yaml", ABC);
    let started = env.start(&wf, json!({})).await;
    let id = started.response.session_id;
    let on_b = env
        .engine
        .advance(&advance_token(&started), notes("A"))
        .await
        .expect("advance");
    let on_c = env
        .engine
        .advance(&advance_token(&on_b), notes("B"))
        .await
        .expect("advance");
    assert_eq!(node(&on_c), NodeId(3));
    let me = SessionRef::Id(id);
    let mark = env.mark(id).await;

    // Invalid targets: the current node, an unknown node, a step not completed on the path.
    for bad in [
        RewindTarget::Node(NodeId(3)),
        RewindTarget::Node(NodeId(99)),
        RewindTarget::Step(StepId::new("c").expect("id")),
        RewindTarget::Step(StepId::new("nope").expect("id")),
    ] {
        expect_err(
            env.engine.rewind(&me, &bad, None).await,
            ErrorCode::InvalidRewindTarget,
        );
    }
    assert_eq!(env.mark(id).await, mark, "invalid rewinds write nothing");

    // Rewind to b (node 2), addressed by a token.
    let rewound = env
        .engine
        .rewind(
            &SessionRef::Token(on_c.response.tokens.resume.clone()),
            &RewindTarget::Step(StepId::new("b").expect("id")),
            Some("B was wrong".into()),
        )
        .await
        .expect("rewind");
    assert_eq!(rewound.response.outcome, Outcome::Rewound);
    assert_eq!(step_id(&rewound), "b");
    assert_eq!(node(&rewound), NodeId(4));
    assert_eq!(
        rewound.response.step.as_ref().expect("step").attempt,
        Attempt(1)
    );
    let events = env.events(id).await;
    let tail: Vec<&EventBody> = events.iter().rev().take(2).rev().map(|e| &e.body).collect();
    match tail.as_slice() {
        [
            EventBody::SessionRewound {
                from_node,
                target_node,
                reason,
                ..
            },
            EventBody::NodeEntered {
                node,
                step_id,
                parent,
                cause,
                ..
            },
        ] => {
            assert_eq!(*from_node, Some(NodeId(3)));
            assert_eq!(*target_node, NodeId(2));
            assert_eq!(reason.as_deref(), Some("B was wrong"));
            assert_eq!(*node, NodeId(4));
            assert_eq!(step_id.as_str(), "b");
            assert_eq!(
                *parent,
                Some(NodeId(1)),
                "the new node's parent is the target's parent"
            );
            assert_eq!(*cause, EntryCause::Rewind);
        }
        other => panic!("expected session_rewound + node_entered, got {other:?}"),
    }
    let nodes = env.store.nodes(id).await.expect("nodes");
    let graph: Vec<(u32, &str, Option<u32>, NodeStatus)> = nodes
        .iter()
        .map(|n| {
            (
                n.node.0,
                n.step_id.as_str(),
                n.parent.map(|p| p.0),
                n.status,
            )
        })
        .collect();
    assert_eq!(
        graph,
        [
            (1, "a", None, NodeStatus::Completed),
            (2, "b", Some(1), NodeStatus::Completed),
            (3, "c", Some(2), NodeStatus::Abandoned),
            (4, "b", Some(1), NodeStatus::Active),
        ]
    );
    let summary = env.summary(id).await;
    assert_eq!(summary.rewinds, 1);
    assert_eq!(summary.status, SessionStatus::InProgress);
    assert_eq!(summary.current.as_ref().expect("current").node, NodeId(4));

    // Nodes off the current path are no longer valid targets.
    let mark = env.mark(id).await;
    for bad in [
        RewindTarget::Node(NodeId(3)),
        RewindTarget::Node(NodeId(2)),
        RewindTarget::Node(NodeId(4)),
    ] {
        expect_err(
            env.engine.rewind(&me, &bad, None).await,
            ErrorCode::InvalidRewindTarget,
        );
    }
    assert_eq!(env.mark(id).await, mark);

    // The branch continues: c is entered again as node 5, child of node 4.
    let again = env
        .engine
        .advance(&advance_token(&rewound), notes("B, properly"))
        .await
        .expect("advance");
    assert_eq!(step_id(&again), "c");
    assert_eq!(node(&again), NodeId(5));
    let n5 = env
        .store
        .node(id, NodeId(5))
        .await
        .expect("node")
        .expect("exists");
    assert_eq!(n5.parent, Some(NodeId(4)));
    assert_eq!(n5.cause, EntryCause::Advance);
    // Recap follows the current path only.
    let re = env.engine.rehydrate(&me).await.expect("rehydrate");
    let notes_on_path: Vec<&str> = re.response.recap.iter().map(|e| e.notes.as_str()).collect();
    assert_eq!(notes_on_path, ["A", "B, properly"]);

    // Rewind to the first step: its new node has no parent.
    let to_a = env
        .engine
        .rewind(&me, &RewindTarget::Node(NodeId(1)), None)
        .await
        .expect("rewind to a");
    assert_eq!(step_id(&to_a), "a");
    let n6 = env
        .store
        .node(id, node(&to_a))
        .await
        .expect("node")
        .expect("exists");
    assert_eq!(n6.parent, None);
    assert_eq!(n6.cause, EntryCause::Rewind);
    assert!(
        env.store
            .verify(id)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );
}

#[tokio::test]
async fn rewind_reopens_a_completed_session() {
    let env = Env::new().await;
    let started = env.start(&quick_task(), json!({})).await;
    let id = started.response.session_id;
    let next = env
        .engine
        .advance(&advance_token(&started), notes("did"))
        .await
        .expect("advance");
    let done = env
        .engine
        .advance(&advance_token(&next), notes("verified"))
        .await
        .expect("complete");
    assert_eq!(done.response.outcome, Outcome::Complete);
    assert_eq!(env.summary(id).await.status, SessionStatus::Complete);

    let reopened = env
        .engine
        .rewind(
            &SessionRef::Token(done.response.tokens.resume.clone()),
            &RewindTarget::Step(StepId::new("verify").expect("id")),
            Some("verification was incomplete".into()),
        )
        .await
        .expect("rewind a completed session");
    assert_eq!(reopened.response.outcome, Outcome::Rewound);
    assert_eq!(step_id(&reopened), "verify");
    let summary = env.summary(id).await;
    assert_eq!(summary.status, SessionStatus::InProgress);
    assert_eq!(
        summary.current.as_ref().expect("current").step_id.as_str(),
        "verify"
    );
    let n2 = env
        .store
        .node(id, NodeId(2))
        .await
        .expect("node")
        .expect("exists");
    assert_eq!(
        n2.status,
        NodeStatus::Completed,
        "a completed node is not abandoned"
    );
    let n3 = env
        .store
        .node(id, NodeId(3))
        .await
        .expect("node")
        .expect("exists");
    assert_eq!(n3.parent, Some(NodeId(1)));
    assert_eq!(n3.cause, EntryCause::Rewind);

    let again = env
        .engine
        .advance(&advance_token(&reopened), notes("verified properly"))
        .await
        .expect("complete again");
    assert_eq!(again.response.outcome, Outcome::Complete);
    let summary = env.summary(id).await;
    assert_eq!(summary.status, SessionStatus::Complete);
    assert_eq!(summary.steps_completed, 3);
    assert_eq!(
        env.kinds(id)
            .await
            .iter()
            .filter(|k| **k == "session_completed")
            .count(),
        2
    );
    assert!(
        env.store
            .verify(id)
            .await
            .expect("verify")
            .expect("exists")
            .is_valid()
    );
}

// ---------------------------------------------------------------------------------------
// 16. Pinning
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn running_sessions_keep_their_pinned_workflow() {
    let env = Env::new().await;
    let path = write(env.dir.path(), "pinned.yaml", ABC);
    let catalog = Catalog::default();
    let v1 = catalog
        .resolve(path.to_str().expect("utf-8"))
        .expect("resolve v1");
    assert!(v1.source.starts_with("file:"), "{}", v1.source);
    let started = env.start(&v1, json!({})).await;
    let id = started.response.session_id;
    let hash1 = env.summary(id).await.workflow_hash;
    assert_eq!(hash1, v1.pinned.hash);
    assert_eq!(
        started.response.step.as_ref().expect("step").prompt,
        "Do A for rename the widget"
    );

    // Edit the file on disk.
    std::fs::write(
        &path,
        ABC.replace("Do A for", "From now on, do A for")
            .replace("Do B.", "Do B, the new way.")
            .replace("title: Step C", "title: Step C (renamed)"),
    )
    .expect("edit");

    let re = env
        .engine
        .rehydrate(&SessionRef::Id(id))
        .await
        .expect("rehydrate");
    assert_eq!(
        re.response.step.as_ref().expect("step").prompt,
        "Do A for rename the widget"
    );
    // An engine with a cold cache loads the pinned version from the store.
    let cold = env.second_engine(keyring()).await;
    let re = cold
        .rehydrate(&SessionRef::Id(id))
        .await
        .expect("rehydrate");
    assert_eq!(
        re.response.step.as_ref().expect("step").prompt,
        "Do A for rename the widget"
    );
    let on_b = cold
        .advance(&advance_token(&started), notes("A"))
        .await
        .expect("advance");
    assert_eq!(on_b.response.step.as_ref().expect("step").prompt, "Do B.");
    let on_c = env
        .engine
        .advance(&advance_token(&on_b), notes("B"))
        .await
        .expect("advance");
    assert_eq!(on_c.response.step.as_ref().expect("step").title, "Step C");
    assert_eq!(env.summary(id).await.workflow_hash, hash1);
    assert_eq!(on_c.response.workflow.hash, hash1);

    // A new session pins the edited version.
    let v2 = catalog
        .resolve(path.to_str().expect("utf-8"))
        .expect("resolve v2");
    assert_ne!(v2.pinned.hash, hash1);
    let s2 = env.start(&v2, json!({})).await;
    assert_eq!(
        s2.response.step.as_ref().expect("step").prompt,
        "From now on, do A for rename the widget"
    );
    let s2_hash = env.summary(s2.response.session_id).await.workflow_hash;
    assert_eq!(s2_hash, v2.pinned.hash);
    assert_ne!(s2_hash, hash1);
    // And the first session is still on v1.
    assert_eq!(env.summary(id).await.workflow_hash, hash1);
}

// ---------------------------------------------------------------------------------------
// 17. Concurrency: two processes, one token
// ---------------------------------------------------------------------------------------

fn step_completed_count(events: &[StoredEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::StepCompleted { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_advances_apply_once() {
    let env = Env::new().await;
    let p1 = Arc::new(env.second_engine(keyring()).await);
    let p2 = Arc::new(env.second_engine(keyring()).await);
    let wf = quick_task();
    for round in 0..50 {
        let started = env.start(&wf, json!({})).await;
        let id = started.response.session_id;
        let token = advance_token(&started);
        let sub = notes(&format!("round {round}"));
        let (t1, s1, e1) = (token.clone(), sub.clone(), p1.clone());
        let (t2, s2, e2) = (token, sub, p2.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { e1.advance(&t1, s1).await }),
            tokio::spawn(async move { e2.advance(&t2, s2).await }),
        );
        let r1 = r1
            .expect("task")
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let r2 = r2
            .expect("task")
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(
            [r1.replayed, r2.replayed].iter().filter(|r| !**r).count(),
            1,
            "round {round}: exactly one writer, the other replays"
        );
        assert_eq!(
            r1.bytes, r2.bytes,
            "round {round}: both see the same response"
        );
        assert_eq!(r1.response.outcome, Outcome::Advanced);
        let events = env.events(id).await;
        assert_eq!(step_completed_count(&events), 1, "round {round}");
        assert_eq!(
            events.len(),
            4,
            "round {round}: start, enter, complete, enter"
        );
        let summary = env.summary(id).await;
        assert_eq!(summary.steps_completed, 1);
        assert_eq!(summary.current.as_ref().expect("current").node, NodeId(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_different_advances_apply_once_and_conflict() {
    let env = Env::new().await;
    let p1 = Arc::new(env.second_engine(keyring()).await);
    let p2 = Arc::new(env.second_engine(keyring()).await);
    let wf = quick_task();
    for round in 0..50 {
        let started = env.start(&wf, json!({})).await;
        let id = started.response.session_id;
        let token = advance_token(&started);
        let (t1, e1) = (token.clone(), p1.clone());
        let (t2, e2) = (token, p2.clone());
        let n1 = format!("writer one, round {round}");
        let n2 = format!("writer two, round {round}");
        let (s1, s2) = (notes(&n1), notes(&n2));
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { e1.advance(&t1, s1).await }),
            tokio::spawn(async move { e2.advance(&t2, s2).await }),
        );
        let results = [r1.expect("task"), r2.expect("task")];
        let mut winner = None;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(reply) if !reply.replayed => {
                    assert!(winner.is_none(), "round {round}: two advances");
                    winner = Some(i);
                }
                Ok(_) => panic!("round {round}: different outputs cannot replay"),
                Err(e) => assert_eq!(
                    e.code,
                    ErrorCode::TokenConflict,
                    "round {round}: the loser gets a conflict, not {e:?}"
                ),
            }
        }
        let winner =
            winner.unwrap_or_else(|| panic!("round {round}: nobody advanced: {results:?}"));
        let events = env.events(id).await;
        assert_eq!(step_completed_count(&events), 1, "round {round}");
        let node1 = env
            .store
            .node(id, NodeId(1))
            .await
            .expect("node")
            .expect("exists");
        assert_eq!(
            node1.notes.as_deref(),
            Some(if winner == 0 {
                n1.as_str()
            } else {
                n2.as_str()
            }),
            "round {round}: the recorded notes are the winner's"
        );
        assert_eq!(env.summary(id).await.steps_completed, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blocked_submissions_and_checkpoints_apply_once() {
    let env = Env::new().await;
    let p1 = Arc::new(env.second_engine(keyring()).await);
    let p2 = Arc::new(env.second_engine(keyring()).await);
    let wf = quick_task();
    for round in 0..20 {
        let started = env.start(&wf, json!({})).await;
        let id = started.response.session_id;
        // Two identical empty submissions: one blocked attempt, one replay.
        let (t1, e1) = (advance_token(&started), p1.clone());
        let (t2, e2) = (advance_token(&started), p2.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { e1.advance(&t1, Submission::default()).await }),
            tokio::spawn(async move { e2.advance(&t2, Submission::default()).await }),
        );
        let (r1, r2) = (
            r1.expect("task").expect("ok"),
            r2.expect("task").expect("ok"),
        );
        assert_eq!(r1.response.outcome, Outcome::Blocked);
        assert_ne!(r1.replayed, r2.replayed, "round {round}");
        assert_eq!(r1.bytes, r2.bytes);
        // Two identical checkpoints: one event.
        let (c1, e1) = (checkpoint_token(&started), p1.clone());
        let (c2, e2) = (checkpoint_token(&started), p2.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { e1.checkpoint(&c1, "same", Map::new()).await }),
            tokio::spawn(async move { e2.checkpoint(&c2, "same", Map::new()).await }),
        );
        let (r1, r2) = (
            r1.expect("task").expect("ok"),
            r2.expect("task").expect("ok"),
        );
        assert_ne!(r1.replayed, r2.replayed, "round {round}");
        let summary = env.summary(id).await;
        assert_eq!(summary.blocked_attempts, 1);
        assert_eq!(summary.checkpoints, 1);
        assert_eq!(env.events(id).await.len(), 4);
    }
}

/// Resolving by id takes compiled workflows from a cache, and a changed workflow file, a
/// changed routine included by path, and a new routine that shadows a bundled one are
/// all seen at once.
#[test]
fn the_compile_cache_follows_workflow_and_routine_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = dir.path().join("workflows");
    std::fs::create_dir_all(user.join("routines")).expect("dirs");
    let wf = |prompt: &str| {
        format!(
            "schemaVersion: 2\nid: cached\nname: C\ndescription: d\nversion: '1'\nsteps:\n  - id: a\n    title: A\n    prompt: {prompt}\n  - id: r\n    include: ./shared.yaml\n  - id: v\n    include: verify\n    with: {{command: make, subject: it}}\n"
        )
    };
    let routine = |prompt: &str| {
        format!(
            "schemaVersion: 2\nroutine: shared\ndescription: d\nsteps:\n  - id: s\n    title: S\n    prompt: {prompt}\n"
        )
    };
    write(&user, "cached.yaml", &wf("first"));
    write(&user, "shared.yaml", &routine("one"));
    let catalog = Catalog::new(Some(user.clone()), None);
    let hash = |c: &Catalog| c.resolve("cached").expect("resolves").pinned.hash;
    let h1 = hash(&catalog);
    assert_eq!(hash(&catalog), h1, "same files, same compiled workflow");

    write(&user, "cached.yaml", &wf("second"));
    let h2 = hash(&catalog);
    assert_ne!(h2, h1, "a changed workflow file is compiled again");

    write(&user, "shared.yaml", &routine("two"));
    let h3 = hash(&catalog);
    assert_ne!(h3, h2, "a changed routine included by path is seen");

    write(
        &user.join("routines"),
        "verify.yaml",
        "schemaVersion: 2\nroutine: verify\ndescription: d\nparams: [command, subject]\nsteps:\n  - id: mine\n    title: Mine\n    prompt: run {{args.command}}\n",
    );
    let resolved = catalog.resolve("cached").expect("resolves");
    assert_ne!(resolved.pinned.hash, h3, "a shadowing user routine is seen");
    assert!(
        resolved
            .pinned
            .workflow
            .steps
            .iter()
            .any(|s| s.id.as_str() == "v.mine"),
        "the user's verify routine is the one included"
    );
}
