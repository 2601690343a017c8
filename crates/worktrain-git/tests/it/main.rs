//! Integration tests of worktrain-git against real repositories and bare remotes in
//! temp dirs. One test binary (libgit2 links once).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cleanup;
mod common;
mod create;
mod delivery;
mod inventory;
mod locks;
mod snapshots;
