//! Property-based fuzzing of webhook verification, within a time budget: no input
//! panics, a wrong or missing signature is never accepted, the right one always is.
//! `WORKTRAIN_FUZZ_CASES` raises the case count (default 2,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use worktrain_triggers::verify::{Headers, github, sign_hex};

fn cases() -> u32 {
    std::env::var("WORKTRAIN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn github_signatures_hold_under_fuzzing() {
    let started = Instant::now();
    let secret = "s3cret-for-fuzzing";
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..512),
                "\\PC{0,80}",
                prop::bool::ANY,
            ),
            |(body, header, use_real)| {
                let real = format!("sha256={}", sign_hex(secret.as_bytes(), &body));
                let presented = if use_real { real.clone() } else { header };
                let headers = Headers::new([("X-Hub-Signature-256", presented.as_str())]);
                let verdict = github(secret, &headers, &body);
                if presented == real {
                    prop_assert!(verdict.is_ok(), "{verdict:?}");
                } else {
                    prop_assert!(verdict.is_err(), "accepted {presented:?}");
                }
                // The right signature over other bytes is refused.
                if !body.is_empty() {
                    let mut other = body.clone();
                    other[0] ^= 1;
                    let headers = Headers::new([("X-Hub-Signature-256", real.as_str())]);
                    prop_assert!(github(secret, &headers, &other).is_err());
                }
                // No header at all.
                prop_assert!(github(secret, &Headers::default(), &body).is_err());
                Ok(())
            },
        )
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
