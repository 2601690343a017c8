//! The one module that knows the MCP SDK (`rmcp`, pinned to one exact version in the
//! workspace manifest). It maps [`ToolServer`] — plain Rust and JSON — onto rmcp's
//! server handler and runs it over a byte stream (stdio in `worktrain mcp`, an in-memory
//! pipe in tests). No rmcp type appears in this module's public signatures, so an SDK
//! upgrade touches this file only; the protocol test in `tests/protocol.rs` pins the wire
//! format it must keep producing.

use std::sync::{Arc, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::server::ToolServer;
use crate::tools::ToolDef;

/// Serving failed as a whole (individual bad requests never end the server).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The client went away or misbehaved before the `initialize` handshake completed.
    #[error("MCP handshake failed: {0}")]
    Handshake(String),
    /// The service task ended abnormally.
    #[error("MCP server stopped abnormally: {0}")]
    Crashed(String),
}

#[derive(Clone)]
struct Adapter {
    core: Arc<ToolServer>,
}

fn to_rmcp(def: &ToolDef) -> Tool {
    Tool::new(
        def.name,
        def.description,
        Arc::new(def.input_schema.clone()),
    )
    .with_title(def.title)
    .with_annotations(
        ToolAnnotations::with_title(def.title)
            .read_only(def.read_only)
            .destructive(def.destructive)
            .idempotent(def.idempotent)
            .open_world(false),
    )
}

/// The wire form of the tools this server's mode serves — never more, never fewer:
/// clients build their tool set from `tools/list` alone. Both sets are built once.
fn tools(core: &ToolServer) -> Vec<Tool> {
    static ALL: OnceLock<Vec<Tool>> = OnceLock::new();
    static BOUND: OnceLock<Vec<Tool>> = OnceLock::new();
    let cell = if core.is_bound() { &BOUND } else { &ALL };
    cell.get_or_init(|| core.list_tools().iter().map(to_rmcp).collect())
        .clone()
}

impl ServerHandler for Adapter {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("worktrain", env!("CARGO_PKG_VERSION"))
                    .with_title("worktrain")
                    .with_description(
                        "Step-by-step workflows for coding agents, with signed step tokens and an append-only session store.",
                    ),
            )
            .with_instructions(self.core.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools(&self.core)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        match self.core.call_tool(&request.name, args).await {
            Ok(r) => {
                let content = vec![ContentBlock::text(r.text)];
                let mut result = if r.is_error {
                    CallToolResult::error(content)
                } else {
                    CallToolResult::success(content)
                };
                result.structured_content = Some(r.structured);
                Ok(result.into())
            }
            Err(unknown) => Err(ErrorData::invalid_params(unknown.to_string(), None)),
        }
    }
}

/// Serve the tools over a byte stream of newline-delimited JSON-RPC until the client
/// closes it. Starts opening the engine in the background so `initialize` is answered
/// at once and the first tool call finds the store open.
pub async fn serve<R, W>(server: Arc<ToolServer>, reader: R, writer: W) -> Result<(), ServeError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let warm = server.clone();
    tokio::spawn(async move { warm.warm_up().await });
    let running = rmcp::serve_server(Adapter { core: server }, (reader, writer))
        .await
        .map_err(|e| ServeError::Handshake(e.to_string()))?;
    info!("MCP client initialized");
    let reason = running
        .waiting()
        .await
        .map_err(|e| ServeError::Crashed(e.to_string()))?;
    debug!(?reason, "MCP connection closed");
    Ok(())
}

/// Serve the tools on this process's stdin/stdout. Nothing else may write to stdout
/// while this runs; logs go to stderr.
pub async fn serve_stdio(server: Arc<ToolServer>) -> Result<(), ServeError> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    serve(server, stdin, stdout).await
}

/// The tools over MCP streamable HTTP (`POST`/`GET`/`DELETE` on one endpoint), for an
/// HTTP server to mount — the daemon's `/mcp`. Sessions live in memory; requests whose
/// `Host` is not in `allowed_hosts` are refused (DNS-rebinding protection; an empty list
/// allows any host); cancelling `stop` ends every session and its event stream.
/// Authentication is the mounting server's job.
#[derive(Clone)]
pub struct HttpTransport {
    service: rmcp::transport::streamable_http_server::StreamableHttpService<
        Adapter,
        rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
    >,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport serving `server`.
    pub fn new(
        server: Arc<ToolServer>,
        allowed_hosts: Vec<String>,
        max_body_bytes: usize,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
        let mut config = StreamableHttpServerConfig::default().with_allowed_hosts(allowed_hosts);
        config.cancellation_token = stop;
        config.max_request_body_bytes = max_body_bytes;
        let service = rmcp::transport::streamable_http_server::StreamableHttpService::new(
            move || {
                Ok(Adapter {
                    core: server.clone(),
                })
            },
            Arc::default(),
            config,
        );
        Self { service }
    }

    /// Answer one HTTP request.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<
        impl http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Send + 'static,
    >
    where
        B: http_body::Body + Send + 'static,
        B::Error: std::fmt::Display,
        B::Data: Send + 'static,
    {
        let mut service = self.service.clone();
        if let Err(never) = std::future::poll_fn(|cx| {
            tower_service::Service::<http::Request<B>>::poll_ready(&mut service, cx)
        })
        .await
        {
            match never {}
        }
        match tower_service::Service::call(&mut service, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
