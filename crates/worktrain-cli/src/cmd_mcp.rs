//! `worktrain mcp`: serve the MCP tools on stdin/stdout. stdout carries only protocol
//! messages; everything else (logs, the first-use notice, errors) goes to stderr. The
//! store is opened after the server starts answering (startup stays well under 100 ms),
//! and the home is initialised on first use, like `worktrain run`.

use std::sync::Arc;

use worktrain_core::error::ApiError;
use worktrain_mcp::{EngineOpener, ServerOptions, ToolServer};

use crate::cli::McpArgs;
use crate::output::Exit;
use crate::{Ctx, home_error};

pub(crate) async fn run(ctx: &Ctx, args: McpArgs) -> Result<Exit, ApiError> {
    if let Some(socket) = &args.relay {
        return relay(socket).await;
    }
    let dir = match args.workspace {
        Some(w) => Some(w),
        None => std::env::current_dir().ok(),
    };
    let default_workspace = dir.map(|d| std::fs::canonicalize(&d).unwrap_or(d));
    let home = ctx.home.clone();
    let out = ctx.out;
    let database_url = ctx.database_url.clone();
    let open: EngineOpener = Arc::new(move || {
        let ctx = Ctx {
            home: home.clone(),
            out,
            daemon: None,
            database_url: database_url.clone(),
        };
        Box::pin(async move {
            if !ctx.home.is_initialised() {
                let report = ctx.home.init().map_err(home_error)?;
                eprintln!(
                    "worktrain mcp: initialised {} (first use).",
                    report.home.display()
                );
            }
            ctx.engine().await.map(Arc::new)
        })
    });
    // An external agent run by the daemon gets `WORKTRAIN_SESSION_ID` (see
    // worktrain-agent's CommandAgent): serve only its session, holding the tokens.
    let bound_session = match std::env::var("WORKTRAIN_SESSION_ID") {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().parse().map_err(
            |e: worktrain_core::ids::InvalidSessionId| {
                ApiError::invalid_input(
                    e.to_string(),
                    "WORKTRAIN_SESSION_ID must be a session id (ses_…)",
                )
            },
        )?),
        _ => None,
    };
    let server = ToolServer::lazy(
        open,
        ServerOptions {
            user_workflows: Some(ctx.home.path(worktrain_config::WORKFLOWS_DIR)),
            default_workspace,
            bound_session,
        },
    );
    match worktrain_mcp::serve_stdio(Arc::new(server)).await {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => {
            eprintln!("worktrain mcp: {e}");
            Ok(Exit::Failure)
        }
    }
}

/// Copy stdin to the socket and the socket to stdout until either side closes. This is
/// all a sandboxed agent's MCP server does: it touches no home, store or key.
async fn relay(socket: &std::path::Path) -> Result<Exit, ApiError> {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        ApiError::invalid_input(
            format!("cannot connect to the MCP relay socket {}: {e}", socket.display()),
            "`worktrain mcp --relay` is started by worktrain's MCP config for external agents; run `worktrain mcp` to serve directly",
        )
    })?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upstream = async {
        let r = tokio::io::copy(&mut tokio::io::stdin(), &mut to_server).await;
        let _ = to_server.shutdown().await;
        r
    };
    let downstream = async {
        let mut out = tokio::io::stdout();
        let r = tokio::io::copy(&mut from_server, &mut out).await;
        let _ = out.flush().await;
        r
    };
    // The server closing its side ends the relay even while stdin stays open. After
    // stdin ends, the server's last answers get a moment to arrive.
    tokio::pin!(downstream);
    let result = tokio::select! {
        r = &mut downstream => r.map(drop),
        r = upstream => match r {
            Ok(_) => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(3), &mut downstream).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    result
        .map(|()| Exit::Ok)
        .map_err(|e| ApiError::internal(format!("MCP relay: {e}")))
}
