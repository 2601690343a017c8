//! The MCP tools at `/mcp`, over MCP streamable HTTP: the same transport-agnostic
//! [`worktrain_mcp::ToolServer`] that `worktrain mcp` serves on stdio, mounted through
//! worktrain-mcp's [`worktrain_mcp::HttpTransport`] (the only place that knows the MCP
//! SDK). The bearer token is required as on every other route. Sessions are kept in
//! memory and end with the daemon. `Host` headers are checked against loopback names
//! (DNS-rebinding protection) unless `daemon.allow_remote` is set.

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, any};
use worktrain_mcp::{HttpTransport, ServerOptions, ToolServer};

use crate::api::AppState;

/// Whether `/mcp` is served (the OpenAPI test expects it in the spec when true).
pub const ENABLED: bool = true;

/// The `/mcp` route.
pub fn service(state: &AppState) -> Option<MethodRouter<AppState>> {
    let sup = &state.sup;
    let tools = ToolServer::new(
        sup.engine().clone(),
        ServerOptions {
            user_workflows: Some(sup.home().join(worktrain_config::WORKFLOWS_DIR)),
            ..ServerOptions::default()
        },
    );
    let hosts = if sup.settings().allow_remote {
        Vec::new()
    } else {
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]
    };
    let transport = HttpTransport::new(
        std::sync::Arc::new(tools),
        hosts,
        state.body_limit,
        sup.stopping().child_token(),
    );
    Some(any(move |req: Request| {
        let transport = transport.clone();
        async move { transport.handle(req).await.into_response() }
    }))
}
