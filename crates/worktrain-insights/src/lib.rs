//! worktrain's trace analysis.
//!
//! - [`model`]: one normalised trace model (session → turn → tool call) for every source.
//! - [`import`]: streaming importers for worktrain sessions, Claude Code transcripts,
//!   Codex rollouts and `codex exec` streams, and SWE-agent / mini-SWE-agent trajectories.
//!
//! Trace content is untrusted: it is analysed and quoted as data, never followed.

pub mod check;
pub mod config;
pub mod delivery;
pub mod detect;
pub mod eval;
pub mod explain;
pub mod import;
pub mod model;
pub mod normalize;
pub mod outcome;
pub mod patch;
pub mod proposals;
pub mod report;
pub mod service;
