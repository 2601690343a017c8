//! Property-based fuzzing of the API body parser (every JSON body goes through it),
//! within a time budget: anything is answered with a body or a precise error, never a
//! panic, and only JSON objects are ever accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use worktrain_daemon::extract::parse_json;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body {
    note: Option<String>,
    workflow: Option<String>,
    limits: Option<serde_json::Map<String, serde_json::Value>>,
}

fn cases() -> u32 {
    std::env::var("WORKTRAIN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\"note\":".to_vec()),
        Just(b"\"workflow\":".to_vec()),
        Just(b"\"limits\":".to_vec()),
        Just(b"null".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"x\"".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

#[test]
fn body_parser_accepts_only_objects_and_never_panics() {
    let started = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&jsonish(), |bytes| {
            let r = parse_json::<Body>(&bytes);
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if r.is_ok() {
                prop_assert!(first.is_none() || first == Some(&b'{'), "{bytes:?}");
            }
            Ok(())
        })
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
