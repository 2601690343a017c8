//! Tests of the WorkRail importer, in one binary (one link on a 2-core CI machine).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![recursion_limit = "256"]

mod corpus;
mod docs;
mod harness;
mod oracle;
mod prompts;
mod semantics;
