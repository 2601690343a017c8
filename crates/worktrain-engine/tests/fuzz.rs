//! Property-based fuzzing of the token parser and the workflow loader, each within a
//! time budget. `WORKTRAIN_FUZZ_CASES` raises the case count (default 2,000 per
//! property) for longer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use worktrain_core::ids::{Attempt, NodeId, SessionId};
use worktrain_core::load::parse_workflow;
use worktrain_core::token::{Keyring, TokenClaims, TokenKind};

/// Wall-clock budget of one property (generous for a loaded 2-core machine).
const BUDGET: Duration = Duration::from_secs(60);

fn cases() -> u32 {
    std::env::var("WORKTRAIN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn ring() -> Keyring {
    Keyring::new([7; 32], "2026-01-01T00:00:00Z".into())
}

fn genuine() -> String {
    ring().mint(TokenClaims {
        kind: TokenKind::Advance,
        session: SessionId::from_parts(1_700_000_000_000, 42),
        node: NodeId(3),
        attempt: Attempt(1),
    })
}

/// One edit of a token: flip, insert, delete, replace, truncate, pad.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    Truncate(usize),
    Pad(String, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..61, 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (0usize..62, any::<char>()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (0usize..61).prop_map(Edit::Delete),
        (0usize..61, any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (0usize..61).prop_map(Edit::Truncate),
        ("[ \t\r\n\u{2028}\u{feff}]{0,2}", "[ \t\r\n\u{2028}]{0,2}")
            .prop_map(|(a, b)| Edit::Pad(a, b)),
    ]
}

fn apply(token: &str, e: &Edit) -> String {
    // Indices wrap around the current length: earlier edits may have changed it.
    let mut chars: Vec<char> = token.chars().collect();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match e {
        Edit::Flip(i, bit) => {
            let mut b = token.as_bytes().to_vec();
            if !b.is_empty() {
                let k = at(*i, b.len());
                b[k] ^= 1 << bit;
            }
            return String::from_utf8_lossy(&b).into_owned();
        }
        Edit::Insert(i, c) => {
            let k = at(*i, chars.len() + 1);
            chars.insert(k, *c);
        }
        Edit::Delete(i) => {
            if !chars.is_empty() {
                let k = at(*i, chars.len());
                chars.remove(k);
            }
        }
        Edit::Replace(i, c) => {
            if !chars.is_empty() {
                let k = at(*i, chars.len());
                chars[k] = *c;
            }
        }
        Edit::Truncate(n) => chars.truncate(*n),
        Edit::Pad(a, z) => return format!("{a}{token}{z}"),
    }
    chars.into_iter().collect()
}

#[test]
fn token_parser_never_accepts_a_mutation_and_never_panics() {
    let started = Instant::now();
    let token = genuine();
    let keyring = ring();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(edit(), 1..4), |edits| {
            let mutated = edits.iter().fold(token.clone(), |t, e| apply(&t, e));
            let verdict = keyring.verify(&mutated);
            if mutated == token {
                prop_assert!(verdict.is_ok());
            } else {
                prop_assert!(verdict.is_err(), "accepted {mutated:?}");
            }
            Ok(())
        })
        .unwrap();
    // Arbitrary text, including things shaped like tokens.
    runner
        .run(&"(wt1\\.)?[A-Za-z0-9_.\\-=\\s]{0,80}|\\PC{0,80}", |s| {
            let _ = keyring.verify(&s);
            Ok(())
        })
        .unwrap();
    assert!(started.elapsed() < BUDGET, "{:?}", started.elapsed());
}

/// Text that looks a little like workflow YAML: keys, indentation, flow collections,
/// anchors, aliases, tags, quotes and long runs.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("schemaVersion: 2\n".to_owned()),
        Just("id: w\nname: n\ndescription: d\nversion: '1'\n".to_owned()),
        Just("steps:\n".to_owned()),
        Just("  - id: a\n    title: A\n    prompt: p\n".to_owned()),
        Just("    loop: {maxIterations: 3}\n".to_owned()),
        Just("    include: ./r.yaml\n".to_owned()),
        Just("&a [*a, *a]\n".to_owned()),
        Just("!!binary x\n".to_owned()),
        "[\\[\\]{}:,\\- \n'\"&*!|>#%@`]{0,40}",
        "\\PC{0,40}",
        (1usize..200).prop_map(|n| "[".repeat(n)),
        (1usize..50).prop_map(|n| " ".repeat(n * 2) + "k:\n"),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

#[test]
fn workflow_loader_returns_quickly_on_anything() {
    let started = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(yamlish(), prop::bool::ANY), |(text, json)| {
            let name = if json { "w.json" } else { "w.yaml" };
            let t = Instant::now();
            let r = parse_workflow(name, &text);
            prop_assert!(
                t.elapsed() < Duration::from_secs(2),
                "{:?} for {text:?}",
                t.elapsed()
            );
            if let Err(e) = r {
                // Every error names a rule and renders.
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
    assert!(started.elapsed() < BUDGET, "{:?}", started.elapsed());
}
