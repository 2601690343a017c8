//! End-to-end tests: every test runs the real `worktrain` binary as separate processes
//! against its own temporary home, and checks what a user or an agent would observe —
//! exit codes, `--json` documents, files on disk and the recorded events.
//!
//! One test binary with many modules, so it links once.

// Helpers outside `#[test]` functions fail loudly on purpose: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
mod triggers;

mod admin;
mod app_e2e;
mod concurrency;
mod crash;
mod daemon;
mod daemon_e2e;
mod daemon_rig;
mod delivery_e2e;
mod doc_examples;
mod init;
mod insights;
mod keys;
mod malformed;
mod multi_daemon;
mod never_lost;
mod notify_e2e;
mod review_e2e;
mod run;
mod sandbox_e2e;
mod service;
mod session;
mod store;
mod watch;
mod workflow;
mod workflow_import;
mod workflow_tools;
