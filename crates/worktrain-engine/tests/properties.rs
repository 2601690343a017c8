//! Property tests: random sequences of agent and operator operations on two sessions of a
//! five-step workflow (with a conditional step and notes-optional steps) keep the store's
//! invariants — valid hash chains, contiguous sequence numbers, projections equal to a
//! rebuild from events, byte-identical replays, and rehydrate never writing.

// Test code: helpers outside #[test] fns may panic on failure like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use worktrain_core::context::Limits;
use worktrain_core::event::SessionMode;
use worktrain_core::ids::{Seq, SessionId};
use worktrain_core::machine::Submission;
use worktrain_core::projection::{NodeStatus, SessionStatus};
use worktrain_core::response::Outcome;
use worktrain_core::token::Keyring;
use worktrain_engine::{
    Catalog, Engine, Reply, RewindTarget, SessionRef, StartRequest, current_path,
};
use worktrain_store::{EventStore, StoreOptions, StoreUrl};

const WORKFLOW: &str = r#"
schemaVersion: 1
id: props
name: Properties
description: Five steps, one conditional, two with optional notes.
version: "1"
steps:
  - id: s1
    title: One
    prompt: "One: {{goal}}"
  - id: s2
    title: Two
    prompt: Two.
    notesOptional: true
  - id: s3
    title: Three (flagged only)
    prompt: "Three, flag={{context.flag}}"
    runCondition: {var: flag, equals: true}
  - id: s4
    title: Four
    prompt: Four.
  - id: s5
    title: Five
    prompt: Five.
    notesOptional: true
"#;

const SESSIONS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Submit to the current step: notes or none, and maybe set the flag.
    Advance {
        session: usize,
        notes: bool,
        flag: Option<bool>,
    },
    /// Resubmit an earlier advance exactly.
    Replay { pick: usize },
    /// Record progress on the current step.
    Checkpoint { session: usize, n: u8 },
    /// Rewind to a completed step on the current path.
    Rewind { session: usize, pick: usize },
    /// Rehydrate by id or by token.
    Rehydrate { session: usize, by_token: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SESSIONS, any::<bool>(), proptest::option::of(any::<bool>()))
            .prop_map(|(session, notes, flag)| Op::Advance { session, notes, flag }),
        2 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => (0..SESSIONS, 0..3u8).prop_map(|(session, n)| Op::Checkpoint { session, n }),
        2 => (0..SESSIONS, any::<usize>()).prop_map(|(session, pick)| Op::Rewind { session, pick }),
        1 => (0..SESSIONS, any::<bool>())
            .prop_map(|(session, by_token)| Op::Rehydrate { session, by_token }),
    ]
}

/// One advance as first submitted, with the response it got.
struct Recorded {
    session: SessionId,
    token: String,
    submission: Submission,
    bytes: Vec<u8>,
}

struct Session {
    id: SessionId,
    /// The last state-changing reply: its tokens are the current ones.
    current: Reply,
    advances: u32,
    /// Outputs the engine blocked, by the (node, attempt) they were submitted for: the
    /// same output for the next attempt is answered from the record (nothing written).
    blocked: std::collections::HashMap<(u32, u16), (worktrain_core::ids::Sha256Hash, Vec<u8>)>,
}

async fn mark(store: &dyn EventStore, id: SessionId) -> (Seq, usize) {
    let summary = store.session(id).await.expect("session").expect("exists");
    let n = store
        .events(id, Seq(0), 100_000)
        .await
        .expect("events")
        .len();
    (summary.last_seq, n)
}

async fn run(initial_flags: [bool; SESSIONS], ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("worktrain.db");
    let store: Arc<dyn EventStore> =
        worktrain_store::open(&StoreUrl::Sqlite(path), &StoreOptions::default())
            .await
            .expect("open");
    let engine = Engine::new(
        store.clone(),
        Keyring::new([5; 32], "2026-01-01T00:00:00Z".into()),
        Limits::default(),
    );
    let wf_path = dir.path().join("props.yaml");
    std::fs::write(&wf_path, WORKFLOW).expect("write workflow");
    let wf = Catalog::default()
        .resolve(wf_path.to_str().expect("utf-8"))
        .expect("resolve");
    let s = store.as_ref();

    let mut sessions = Vec::new();
    for flag in initial_flags {
        let mut context = Map::new();
        context.insert("flag".into(), Value::Bool(flag));
        let reply = engine
            .start(StartRequest {
                workflow: wf.clone(),
                goal: "property".into(),
                workspace: None,
                context,
                mode: SessionMode::Interactive,
                parent: None,
            })
            .await
            .expect("start");
        sessions.push(Session {
            id: reply.response.session_id,
            current: reply,
            advances: 0,
            blocked: std::collections::HashMap::new(),
        });
    }
    let mut history: Vec<Recorded> = Vec::new();

    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Advance {
                session,
                notes,
                flag,
            } => {
                let sess = &mut sessions[session];
                let Some(token) = sess.current.response.tokens.advance.clone() else {
                    continue; // complete
                };
                sess.advances += 1;
                let mut context = Map::new();
                if let Some(f) = flag {
                    context.insert("flag".into(), Value::Bool(f));
                }
                let submission = Submission {
                    notes: notes.then(|| format!("notes #{} of op {i}", sess.advances)),
                    artifacts: Vec::new(),
                    context,
                };
                let before = mark(s, sess.id).await;
                let reply = engine
                    .advance(&token, submission.clone())
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: advance failed: {e:?}"));
                let at = sess
                    .current
                    .response
                    .step
                    .as_ref()
                    .map(|st| (st.node.0, st.attempt.0))
                    .expect("a step to submit");
                let repeats_blocked = (at.1 > 1)
                    .then(|| sess.blocked.get(&(at.0, at.1 - 1)))
                    .flatten()
                    .filter(|(hash, _)| *hash == submission.output_hash())
                    .map(|(_, bytes)| bytes.clone());
                if let Some(recorded) = repeats_blocked {
                    // The output just blocked, again: the blocked answer, nothing written.
                    assert!(
                        reply.replayed,
                        "op {i}: a repeated blocked output is replayed"
                    );
                    assert_eq!(reply.bytes, recorded, "op {i}");
                    assert_eq!(mark(s, sess.id).await, before, "op {i}: nothing written");
                    continue;
                }
                assert!(!reply.replayed, "op {i}: a fresh token is not a replay");
                assert!(
                    matches!(
                        reply.response.outcome,
                        Outcome::Advanced | Outcome::Blocked | Outcome::Complete
                    ),
                    "op {i}: {:?}",
                    reply.response.outcome
                );
                assert!(
                    mark(s, sess.id).await.1 > before.1,
                    "op {i}: an advance writes"
                );
                if reply.response.outcome == Outcome::Blocked {
                    sess.blocked
                        .insert(at, (submission.output_hash(), reply.bytes.clone()));
                }
                history.push(Recorded {
                    session: sess.id,
                    token,
                    submission,
                    bytes: reply.bytes.clone(),
                });
                sess.current = reply;
            }
            Op::Replay { pick } => {
                if history.is_empty() {
                    continue;
                }
                let rec = &history[pick % history.len()];
                let before = mark(s, rec.session).await;
                let reply = engine
                    .advance(&rec.token, rec.submission.clone())
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: replay failed: {e:?}"));
                assert!(reply.replayed, "op {i}: not marked as replayed");
                assert_eq!(
                    reply.bytes, rec.bytes,
                    "op {i}: replay is not byte-identical"
                );
                assert_eq!(mark(s, rec.session).await, before, "op {i}: a replay wrote");
            }
            Op::Checkpoint { session, n } => {
                let sess = &mut sessions[session];
                let Some(token) = sess.current.response.tokens.checkpoint.clone() else {
                    continue;
                };
                let before = mark(s, sess.id).await;
                let mut delta = Map::new();
                delta.insert("progress".into(), json!(n));
                let reply = engine
                    .checkpoint(&token, &format!("checkpoint {n}"), delta)
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: checkpoint failed: {e:?}"));
                assert_eq!(reply.response.outcome, Outcome::Checkpointed);
                let after = mark(s, sess.id).await;
                let written = after.1 - before.1;
                assert_eq!(
                    written,
                    usize::from(!reply.replayed),
                    "op {i}: a checkpoint writes one event unless it is a duplicate"
                );
                assert_eq!(
                    reply.response.tokens, sess.current.response.tokens,
                    "op {i}: a checkpoint does not change the tokens"
                );
                sess.current = reply;
            }
            Op::Rewind { session, pick } => {
                let sess = &mut sessions[session];
                let summary = s.session(sess.id).await.expect("session").expect("exists");
                let nodes = s.nodes(sess.id).await.expect("nodes");
                let current = summary.current.as_ref().map(|c| c.node);
                let targets: Vec<_> = current_path(&summary, &nodes)
                    .into_iter()
                    .filter(|n| n.status == NodeStatus::Completed && Some(n.node) != current)
                    .map(|n| (n.node, n.step_id.clone(), n.parent))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let (target, step_id, parent) = targets[pick % targets.len()].clone();
                let reply = engine
                    .rewind(
                        &SessionRef::Id(sess.id),
                        &RewindTarget::Node(target),
                        Some(format!("op {i}")),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: rewind failed: {e:?}"));
                assert_eq!(reply.response.outcome, Outcome::Rewound);
                let step = reply.response.step.as_ref().expect("rewound step");
                assert_eq!(step.id, step_id);
                let new = s
                    .node(sess.id, step.node)
                    .await
                    .expect("node")
                    .expect("new node");
                assert_eq!(
                    new.parent, parent,
                    "op {i}: the branch starts at the target's parent"
                );
                let after = s.session(sess.id).await.expect("session").expect("exists");
                assert_eq!(after.status, SessionStatus::InProgress);
                assert_eq!(after.rewinds, summary.rewinds + 1);
                sess.current = reply;
            }
            Op::Rehydrate { session, by_token } => {
                let sess = &sessions[session];
                let target = if by_token {
                    SessionRef::Token(sess.current.response.tokens.resume.clone())
                } else {
                    SessionRef::Id(sess.id)
                };
                let before = mark(s, sess.id).await;
                let reply = engine
                    .rehydrate(&target)
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: rehydrate failed: {e:?}"));
                assert_eq!(mark(s, sess.id).await, before, "op {i}: rehydrate wrote");
                assert_eq!(
                    reply.response.tokens, sess.current.response.tokens,
                    "op {i}: rehydrate hands out the current tokens"
                );
                let expected = if sess.current.response.step.is_some() {
                    Outcome::Rehydrated
                } else {
                    Outcome::Complete
                };
                assert_eq!(reply.response.outcome, expected);
                assert_eq!(
                    reply
                        .response
                        .step
                        .as_ref()
                        .map(|x| (x.node, x.attempt, &x.id)),
                    sess.current
                        .response
                        .step
                        .as_ref()
                        .map(|x| (x.node, x.attempt, &x.id)),
                );
            }
        }
    }

    // Every replay, at the end, is still byte-identical and writes nothing.
    for (k, rec) in history.iter().enumerate() {
        let before = mark(s, rec.session).await;
        let reply = engine
            .advance(&rec.token, rec.submission.clone())
            .await
            .unwrap_or_else(|e| panic!("final replay {k}: {e:?}"));
        assert!(reply.replayed);
        assert_eq!(reply.bytes, rec.bytes, "final replay {k} differs");
        assert_eq!(mark(s, rec.session).await, before);
    }

    // Store invariants.
    for sess in &sessions {
        let report = s.verify(sess.id).await.expect("verify").expect("exists");
        assert!(report.is_valid(), "{report:?}");
        let events = s.events(sess.id, Seq(0), 100_000).await.expect("events");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "contiguous seqs"
        );
        assert_eq!(report.events, events.len() as u64);
        let summary = s.session(sess.id).await.expect("session").expect("exists");
        assert_eq!(summary.last_seq, Seq(events.len() as u64));
        assert_eq!(summary.last_hash, events.last().expect("events").hash);
    }
    let before = s.dump_projections().await.expect("dump");
    s.rebuild_projections().await.expect("rebuild");
    let after = s.dump_projections().await.expect("dump");
    assert_eq!(before, after, "projections differ from a rebuild");
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 32 keeps the file well under a minute in debug builds; `PROPTEST_CASES=1000`
        // runs a deeper search.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operation_sequences_keep_the_invariants(
        flags in any::<[bool; SESSIONS]>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(flags, ops));
    }
}
