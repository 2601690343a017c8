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

pub async fn run(ctx: &Ctx, args: McpArgs) -> Result<Exit, ApiError> {
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
