//! `worktrain daemon`: the supervisor plus the HTTP API, until SIGTERM/SIGINT.
//!
//! Start-up fails fast — before anything runs — on an uninitialised home, an invalid
//! config.yaml (agent profiles are typed and checked with it), another daemon holding `$WORKTRAIN_HOME/daemon.pid`, a
//! non-loopback bind without `daemon.allow_remote`, or an address in use. On a signal the
//! server stops accepting connections, the supervisor interrupts running sessions (they
//! are resumed on the next start, not failed) and the process waits for both.

use std::sync::Arc;

use tracing::{error, info};
use worktrain_config::API_TOKEN_FILE;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::pidfile::PidLock;
use worktrain_daemon::server::Server;
use worktrain_daemon::supervisor::Supervisor;
use worktrain_daemon::triggers::SupervisorHost;
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::runtime::{Runtime, SystemClock};

use crate::Ctx;
use crate::cli::DaemonArgs;
use crate::output::Exit;

fn invalid(message: String, hint: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, message, Retry::AfterFix, hint)
}

/// Tell a service manager (systemd's `NOTIFY_SOCKET`) about a state change; nothing
/// without one. A failure is logged, never fatal: the daemon serves either way.
fn notify_service_manager(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
                }
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `worktrain daemon reload`: the running daemon re-reads config.yaml.
pub(crate) async fn reload(ctx: &Ctx) -> Result<Exit, ApiError> {
    let client = crate::client::DaemonClient::new(ctx)?;
    let report = client
        .post("/api/v1/reload", &serde_json::json!({}))
        .await?;
    if ctx.out.json {
        ctx.out.json(&report);
        return Ok(Exit::Ok);
    }
    eprintln!("config.yaml reloaded");
    for a in report["agents"].as_array().into_iter().flatten() {
        match a["problem"].as_str() {
            None => eprintln!("  agent {:<16} ready", a["name"].as_str().unwrap_or("?")),
            Some(p) => eprintln!(
                "  agent {:<16} UNUSABLE: {p}",
                a["name"].as_str().unwrap_or("?")
            ),
        }
    }
    for s in report["needs_restart"].as_array().into_iter().flatten() {
        eprintln!(
            "  note: `{}` changed; it takes effect after a restart",
            s.as_str().unwrap_or("?")
        );
    }
    Ok(Exit::Ok)
}

pub(crate) async fn run(ctx: &Ctx, args: DaemonArgs) -> Result<Exit, ApiError> {
    let config = ctx.config()?;
    let (engine, store) = ctx.engine_with_store().await?;
    let engine = Arc::new(engine);
    let token = ApiToken::load(&ctx.home.path(API_TOKEN_FILE))
        .map_err(|e| invalid(e.to_string(), "run `worktrain init`"))?;
    let mut lock = PidLock::acquire(ctx.home.root()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            e.to_string(),
            Retry::AfterFix,
            "one daemon per home: use the running one, or stop it first",
        )
    })?;
    let bind = args.bind.unwrap_or_else(|| config.daemon.bind.clone());
    // Unusable agent profiles (an unset key variable, say) are reported, not fatal: the
    // daemon serves everything else and fails only the sessions that need them.
    let supervisor =
        Supervisor::from_config(engine, ctx.home.clone(), &config, ctx.database_url.clone());
    let sandbox = worktrain_daemon::sandbox_probe();
    if sandbox.available {
        info!(detail = %sandbox.detail, "agent sandbox available");
    } else if supervisor.sandbox_blocks_runs() {
        tracing::error!(detail = %sandbox.detail, "agent sandbox UNAVAILABLE: runs of profiles that require it will fail (see /readyz)");
    } else {
        tracing::warn!(detail = %sandbox.detail, "agent sandbox unavailable; every profile opted out (sandbox: {{mode: off}})");
    }
    // Triggers: an invalid file at start-up is fatal (there is no previous index to keep);
    // later edits are hot-reloaded, and an invalid edit keeps the running triggers.
    let triggers_file = crate::cmd_trigger::triggers_path(ctx, &config);
    let triggers = Runtime::new(
        store,
        SupervisorHost::new(supervisor.clone()),
        Arc::new(SystemClock),
        Some(triggers_file),
        EnvSource::Process,
    );
    // Delivery opens pull requests and comments with the identities of triggers.yml.
    supervisor.set_forges(triggers.clone());
    // Run ends are notified to the `notifications:` of triggers.yml (read at each end).
    supervisor.set_notifiers(triggers.clone());
    if let Some(e) = triggers.status().error {
        return Err(invalid(
            e.to_string(),
            "fix triggers.yml (`worktrain trigger validate` checks it), or move it away",
        ));
    }
    let server = Server::bind(supervisor.clone(), token, &bind)
        .await
        .map_err(|e| {
            invalid(
                e.to_string(),
                "choose another --bind address (or daemon.bind in config.yaml)",
            )
        })?
        .with_triggers(triggers.clone())
        .with_extension(worktrain_console::extension());
    let addr = server
        .local_addr()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    lock.set_addr(&addr.to_string())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    info!(%addr, worker = supervisor.worker(), home = %ctx.home.root().display(), "worktrain daemon started");
    if !ctx.out.json {
        eprintln!(
            "worktrain daemon listening on http://{addr} (pid {}, home {})",
            std::process::id(),
            ctx.home.root().display()
        );
    } else {
        ctx.out.json(&serde_json::json!({
            "listening": format!("http://{addr}"),
            "pid": std::process::id(),
            "home": ctx.home.root(),
        }));
    }

    // Under systemd (`Type=notify`), ready means serving: the unit's dependants start now.
    notify_service_manager(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving http://{addr}")),
    ]);
    let sup_task = tokio::spawn(supervisor.clone().run());
    // Schedules, pollers and delivery processing run on one daemon per store.
    let leader = worktrain_daemon::leader::spawn(
        supervisor.engine().store().clone(),
        worktrain_daemon::leader::TRIGGERS_ROLE,
        std::time::Duration::from_secs((config.daemon.lease_secs / 3).max(1)),
        supervisor.stopping(),
    );
    let triggers_task = tokio::spawn(triggers.clone().run(supervisor.stopping(), leader));
    let stopping = supervisor.stopping();
    let sup_for_signal = supervisor.clone();
    let shutdown = async move {
        tokio::select! {
            () = signalled() => sup_for_signal.shutdown(),
            () = stopping.cancelled() => {}
        }
    };
    let served = server.run(shutdown).await;
    notify_service_manager(&[sd_notify::NotifyState::Stopping]);
    // Whatever ended the server, the supervisor stops too (and interrupts its runs).
    supervisor.shutdown();
    if let Err(e) = sup_task.await {
        error!(error = %e, "the supervisor task failed");
    }
    if let Err(e) = triggers_task.await {
        error!(error = %e, "the triggers task failed");
    }
    drop(lock);
    match served {
        Ok(()) => {
            info!("worktrain daemon stopped");
            Ok(Exit::Ok)
        }
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            e.to_string(),
            Retry::Same,
            "see the daemon's log",
        )),
    }
}
