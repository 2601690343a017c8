//! Pure domain of worktrain: ids, events, the workflow model and its compiler, the
//! condition language, step tokens, projections and the engine state machine.
//!
//! Nothing here performs I/O or reads a clock; the store and engine crates do that.

pub mod activity;
pub mod compile;
pub mod condition;
pub mod context;
pub mod contract;
pub mod cursor;
pub mod diagnostics;
pub mod error;
pub mod event;
pub mod ids;
pub mod load;
pub mod machine;
pub mod projection;
pub mod prompt;
pub mod response;
pub mod run;
pub mod token;
pub mod workflow;

pub use error::{ApiError, ErrorCode, Retry};
