//! The worktrain daemon: turns dispatched sessions into agent runs, and serves them.
//!
//! - [`supervisor::Supervisor`]: the durable run queue (claim with a lease, heartbeats,
//!   concurrency caps), one task per running session (worktree → agent → outcome),
//!   operator actions (cancel, steer, approve/reject, resume, retry, kill-all), graceful
//!   shutdown (runs are interrupted, not failed) and reconciliation from the store alone
//!   after a crash.
//! - [`adapters`]: the engine-backed step driver (holds the tokens; the model never sees
//!   them) and event sink (agent activity becomes session events).
//! - [`worktrees`]: session worktrees via `worktrain-git`.
//! - [`profiles`]: agent profiles from `config.yaml`.
//! - [`api`] (with [`auth`], [`errors`], [`extract`], [`sse`], [`metrics`], [`views`],
//!   [`mcp`]) and [`server`]: the HTTP API — see `docs/api.md` and `spec/openapi.yaml`.
//! - [`pidfile`]: one daemon per home.

pub mod adapters;
pub mod api;
pub mod auth;
pub mod delivery;
pub mod errors;
pub mod extract;
pub mod hooks;
pub mod leader;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod orphans;
pub mod pidfile;
pub mod profiles;
pub mod server;
pub mod sse;
pub mod supervisor;
pub mod triggers;
pub mod views;

/// Whether agent commands can run sandboxed here (probed once); see `worktrain_agent::sandbox`.
pub use worktrain_agent::sandbox::probe as sandbox_probe;

/// The store's clock, re-exported for the console and CLI (see [`worktrain_store::now_ms`]).
pub use worktrain_store::now_ms;
