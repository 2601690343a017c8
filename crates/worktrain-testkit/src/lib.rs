//! Test helpers for worktrain.
//!
//! [`FakeLlm`] is an HTTP server on `127.0.0.1:0` that speaks both LLM wire formats
//! worktrain uses — the Anthropic Messages API (`POST /v1/messages`) and OpenAI-compatible
//! chat completions (`POST /v1/chat/completions`), streaming (SSE) and not — and answers
//! from a [`Script`] of [`Turn`]s, one per request. It checks requests the way the real
//! APIs do (tool results must answer every tool call, auth headers present, …) and records
//! every request so tests can assert on what an agent sent.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use worktrain_testkit::{FakeLlm, Turn};
//! let (base_url, fake) = FakeLlm::start(vec![
//!     Turn::tool("shell", serde_json::json!({"command": "ls"})),
//!     Turn::text("done"),
//! ])
//! .await?;
//! // … point a client at base_url …
//! assert_eq!(fake.requests().len(), 0);
//! # Ok(()) }
//! ```
//!
//! Other processes (daemon end-to-end tests) use the `fake-llm` binary: it takes a JSON
//! script file, prints its base URL on stdout and serves `GET /_fake/requests`.
//!
//! [`git_http::GitHttpServer`] serves bare repositories over git's smart HTTP protocol
//! (`git http-backend`) behind Basic auth with a token, for push tests.
//!
//! [`receiver::FakeReceiver`] stands in for Slack and Discord incoming webhooks and any
//! signed-webhook endpoint: it records requests and answers from scripted replies.
//!
//! [`postgres::fresh_database`] gives each test its own database on the test PostgreSQL
//! server (`WORKTRAIN_TEST_POSTGRES_URL`).

pub mod forge;
pub mod git_http;
pub mod postgres;
pub mod receiver;
mod script;
mod server;
mod wire;

pub use script::{Route, Script, ScriptError, ToolCall, Turn, Usage};
pub use server::{FakeLlm, FakeLlmHandle, RecordedRequest};
pub use wire::Wire;
