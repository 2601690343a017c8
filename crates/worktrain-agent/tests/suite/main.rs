//! worktrain-agent's integration suite (one binary: one link).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod command;
mod common;
mod confinement;
mod providers;
mod runs;
mod tools;
