//! Pure domain of worktrain: ids, events, the workflow model and its compiler, the
//! condition language, step tokens, projections and the engine state machine.
//!
//! Nothing here performs I/O or reads a clock; the store and engine crates do that.
//!
//! A workflow file is parsed ([`load::parse_workflow`]), compiled and pinned
//! ([`compile::compile`]); a [`machine::Machine`] over the pinned workflow turns a session's
//! state and an input into the events to append and the response to give:
//!
//! ```
//! use worktrain_core::compile::compile;
//! use worktrain_core::context::Limits;
//! use worktrain_core::ids::SessionId;
//! use worktrain_core::load::parse_workflow;
//! use worktrain_core::machine::{Machine, StartParams};
//! use worktrain_core::response::Outcome;
//! use worktrain_core::token::Keyring;
//!
//! let def = parse_workflow(
//!     "hello.yaml",
//!     r#"
//! schemaVersion: 1
//! id: hello
//! name: Hello
//! description: One step.
//! version: "1"
//! steps:
//!   - id: greet
//!     title: Greet
//!     prompt: "Write a greeting for {{goal}}"
//! "#,
//! )?;
//! let pinned = compile(&def)?;
//! let keyring = Keyring::new([7; 32], "2026-01-01T00:00:00Z".into());
//! let limits = Limits::default();
//! let machine = Machine { pinned: &pinned, keyring: &keyring, limits: &limits };
//! let plan = machine.start(
//!     SessionId::from_parts(1_767_225_600_000, 42),
//!     StartParams { goal: "the release notes".into(), ..StartParams::default() },
//! )?;
//! // What to append (the store's job) ...
//! assert_eq!(plan.events[0].body.kind().as_str(), "session_started");
//! // ... and what the agent sees: the first step, with the token that advances it.
//! assert_eq!(plan.response.outcome, Outcome::Started);
//! let step = plan.response.step.as_ref().expect("a first step");
//! assert_eq!(step.prompt, "Write a greeting for the release notes");
//! assert!(plan.response.tokens.advance.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
