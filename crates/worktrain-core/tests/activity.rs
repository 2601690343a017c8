//! `agent_activity` events: the payloads written by agent runners fold into the session's
//! telemetry, and the telemetry equals a sum over the raw events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use worktrain_core::event::{EventBody, StoredEvent};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_core::projection::{SessionSummary, apply};

/// Payloads exactly as agent runners wrote them before the vocabulary moved into core
/// (the shape stored in existing databases).
fn old_shape_payloads() -> Vec<Value> {
    vec![
        json!({"type": "session_started", "workflow_id": "fix", "workflow_hash": "ab".repeat(32),
               "workflow_version": "1", "workflow_source": "bundled", "goal": "g", "context": {}}),
        json!({"type": "agent_activity", "activity": {"type": "run_started", "runner": "llm", "detail": "claude-x"}}),
        json!({"type": "agent_activity", "activity": {"type": "llm_turn", "turn": 1, "model": "claude-x",
               "usage": {"input_tokens": 1200, "output_tokens": 80, "cache_creation_input_tokens": 3000,
                         "cache_read_input_tokens": 0},
               "stop_reason": "tool_use", "duration_ms": 900, "attempts": 1, "tool_calls": 1, "cost_usd": 0.0125}}),
        json!({"type": "agent_activity", "activity": {"type": "tool_call", "turn": 1, "name": "shell",
               "args": "cargo test", "duration_ms": 4000, "result_bytes": 5123, "exit_code": 101}}),
        json!({"type": "agent_activity", "activity": {"type": "llm_turn", "turn": 2, "model": "claude-x",
               "usage": {"input_tokens": 310, "output_tokens": 45, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 3000},
               "stop_reason": "tool_use", "duration_ms": 700, "attempts": 2, "tool_calls": 1}}),
        json!({"type": "agent_activity", "activity": {"type": "tool_call", "turn": 2, "name": "read_file",
               "args": "{\"path\":\"src/x.rs\"}", "duration_ms": 1, "result_bytes": 40,
               "error": {"kind": "not_found", "message": "no such file: src/x.rs"}}}),
        json!({"type": "agent_activity", "activity": {"type": "nudged", "reason": "stopped_early", "count": 1}}),
        json!({"type": "agent_activity", "activity": {"type": "steering_delivered", "messages": 1}}),
        json!({"type": "agent_activity", "activity": {"type": "issue_reported", "title": "t", "details": "d", "blocking": false}}),
        json!({"type": "agent_activity", "activity": {"type": "step_submitted", "step": "plan#1", "result": "blocked"}}),
        json!({"type": "agent_activity", "activity": {"type": "process_started", "command": "claude -p", "pid": 42, "invocation": 1}}),
        json!({"type": "agent_activity", "activity": {"type": "output", "stream": "stderr", "text": "warning"}}),
        json!({"type": "agent_activity", "activity": {"type": "process_exited", "code": null, "killed": true, "duration_ms": 12}}),
        json!({"type": "agent_activity", "activity": {"type": "llm_turn", "turn": 3, "model": "gpt-y",
               "usage": {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 11},
               "stop_reason": "end_turn", "duration_ms": 5, "attempts": 1, "tool_calls": 0, "cost_usd": 0.5}}),
    ]
}

fn fold(payloads: &[Value]) -> SessionSummary {
    let session = SessionId::from_parts(1, 7);
    let mut summary = None;
    for (i, p) in payloads.iter().enumerate() {
        let body: EventBody = serde_json::from_value(p.clone())
            .unwrap_or_else(|e| panic!("payload {i} no longer reads: {e}\n{p}"));
        let seq = Seq(i as u64 + 1);
        let stored = StoredEvent {
            position: seq.0,
            session_id: session,
            seq,
            created_at_ms: 1_000 + i as i64,
            idempotency_key: None,
            prev_hash: Sha256Hash::ZERO,
            hash: Sha256Hash::ZERO,
            body,
        };
        summary = Some(apply(summary, &stored).unwrap().0);
    }
    summary.unwrap()
}

fn sum_of(payloads: &[Value], kind: &str, pointer: &str) -> u64 {
    payloads
        .iter()
        .filter(|p| p["activity"]["type"] == kind)
        .map(|p| {
            p["activity"]
                .pointer(pointer)
                .and_then(Value::as_u64)
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn telemetry_equals_the_sum_over_the_raw_llm_turn_events() {
    let payloads = old_shape_payloads();
    let t = fold(&payloads).telemetry;
    let input = sum_of(&payloads, "llm_turn", "/usage/input_tokens");
    let output = sum_of(&payloads, "llm_turn", "/usage/output_tokens");
    let cache = sum_of(&payloads, "llm_turn", "/usage/cache_read_input_tokens")
        + sum_of(&payloads, "llm_turn", "/usage/cache_creation_input_tokens");
    assert_eq!((input, output, cache), (1517, 128, 6011), "the fixture");
    assert_eq!(t.input_tokens, input);
    assert_eq!(t.output_tokens, output);
    assert_eq!(t.cache_tokens, cache);
    let turns = payloads
        .iter()
        .filter(|p| p["activity"]["type"] == "llm_turn")
        .count() as u64;
    assert_eq!(t.turns, turns);
    let calls: Vec<&Value> = payloads
        .iter()
        .filter(|p| p["activity"]["type"] == "tool_call")
        .collect();
    assert_eq!(t.tool_calls, calls.len() as u64);
    assert_eq!(
        t.tool_errors,
        calls
            .iter()
            .filter(|c| !c["activity"]["error"].is_null())
            .count() as u64
    );
}

#[test]
fn old_events_read_back_typed_and_reserialize_byte_identically() {
    // The chain hash covers the stored bytes; a typed read that re-serialized differently
    // would make replays and exports disagree with the log. Every variant is covered.
    let payloads = old_shape_payloads();
    let mut seen = std::collections::BTreeSet::new();
    for p in &payloads {
        let body: EventBody = serde_json::from_value(p.clone()).unwrap();
        if let EventBody::AgentActivity { activity } = &body {
            seen.insert(activity.type_name());
        }
        let old = serde_json_canonicalizer::to_vec(p).unwrap();
        assert_eq!(
            String::from_utf8(body.canonical_bytes().unwrap()).unwrap(),
            String::from_utf8(old).unwrap()
        );
    }
    assert_eq!(
        seen.len(),
        10,
        "every activity type is in the fixture: {seen:?}"
    );
}

#[test]
fn an_unknown_activity_type_is_a_precise_error() {
    let e = serde_json::from_value::<EventBody>(
        json!({"type": "agent_activity", "activity": {"type": "telepathy", "x": 1}}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("telepathy"), "{e}");
}
