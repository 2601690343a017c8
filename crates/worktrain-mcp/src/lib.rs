//! worktrain's MCP server: the tools an agent uses to drive workflows (list, inspect,
//! start, continue, checkpoint, resume, rewind).
//!
//! The crate has two layers:
//!
//! * [`ToolServer`] — transport-agnostic: [`ToolServer::list_tools`] and
//!   [`ToolServer::call_tool`]`(name, json_args) -> `[`ToolResult`], in plain Rust and
//!   JSON over the [`worktrain_engine::Engine`]. The daemon serves the same object at
//!   `/mcp` over streamable HTTP.
//! * `adapter` — the only module that uses the MCP SDK (`rmcp`): it maps the tool server
//!   onto the protocol and runs it over stdio ([`serve_stdio`]) or any byte stream
//!   ([`serve`]).
//!
//! Tool errors are results with `isError: true` whose structured content is the engine's
//! `{code, message, retry, hint}`; only an unknown tool name is a JSON-RPC error.

mod adapter;
mod render;
mod server;
mod tools;

pub use adapter::{HttpTransport, ServeError, serve, serve_stdio};
pub use server::{EngineFuture, EngineOpener, ServerOptions, ToolResult, ToolServer, UnknownTool};
pub use tools::{INSTRUCTIONS, TOOL_NAMES, ToolDef};
