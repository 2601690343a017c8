//! Triggers turn outside events into sessions — and record why every time.
//!
//! - [`config`]: the `triggers.yml` model and its loader (one code path for the daemon
//!   and `worktrain trigger validate`), with [`env`] for `$VAR` secrets and [`expr`] /
//!   [`rules`] for templates, JSONPath and dispatch conditions.
//! - [`verify`]: webhook signatures on the raw body (generic HMAC, GitHub
//!   `X-Hub-Signature-256`, GitLab tokens and Standard Webhooks signing), constant time.
//! - [`inbound`]: what a delivery is about — event, action, source item, its state.
//! - [`decide`]: the decision for one event (dispatch, filtered with the failed condition
//!   and value seen, ignored event, unauthorised commenter, …) without side effects.
//! - [`schedule`]: cron with time zones, overlap and misfire policies on an injected clock.
//! - [`poll`]: pollers over `worktrain-forge` (pagination, ETags, rate limits, cursors).

pub mod config;
pub mod decide;
pub mod env;
pub mod expr;
pub mod identity;
pub mod inbound;
pub mod poll;
pub mod rules;
pub mod runtime;
pub mod schedule;
pub mod schema;
pub mod verify;
