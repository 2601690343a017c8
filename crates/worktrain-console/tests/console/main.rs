//! The console end to end: a real daemon on loopback with the console mounted, real
//! HTTP, and real headless Chromium over WebDriver for the pages (one test binary).

// Test code: helpers outside #[test] fns may panic on failure like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod browser;
mod detail;
mod harness;
mod http;
mod insights;
mod paging;
mod stats;
