//! `worktrain daemon --check-config`: everything the daemon checks at start-up (and what
//! would make its sessions fail later), checked without starting anything — for a
//! service manager's `ExecStartPre=`, a deploy script or an operator after an edit.
//!
//! Each check prints one line; every failing one says what to do. Exit 0 when the daemon
//! would start and could run sessions, [`Exit::Invalid`] otherwise.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use worktrain_config::API_TOKEN_FILE;
use worktrain_core::error::ApiError;
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::pidfile::running_daemon;
use worktrain_daemon::server::{check_bind, parse_bind};
use worktrain_daemon::supervisor::Supervisor;
use worktrain_engine::Engine;
use worktrain_triggers::env::EnvSource;

use crate::Ctx;
use crate::output::Exit;

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// Fine.
    Ok,
    /// The daemon would refuse to start, or sessions would fail.
    Problem,
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Check {
    /// What was checked (`config`, `store`, `agent:NAME`, …).
    check: String,
    verdict: Verdict,
    /// What was found.
    detail: String,
    /// What to do, for a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            verdict: Verdict::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    fn problem(
        check: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            verdict: Verdict::Problem,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn from_error(check: impl Into<String>, e: &ApiError) -> Self {
        Self::problem(check, e.message.clone(), e.hint.clone())
    }
}

/// Run every check and print the report. `bind` is the `--bind` given with the flag.
pub(crate) async fn check_config(ctx: &Ctx, bind: Option<String>) -> Result<Exit, ApiError> {
    let checks = collect(ctx, bind).await;
    let ok = checks.iter().all(|c| c.verdict == Verdict::Ok);
    if ctx.out.json {
        ctx.out.json(&serde_json::json!({
            "ok": ok,
            "home": ctx.home.root(),
            "checks": checks,
        }));
    } else {
        for c in &checks {
            match c.verdict {
                Verdict::Ok => say!("ok       {:<16} {}", c.check, c.detail),
                Verdict::Problem => {
                    say!("PROBLEM  {:<16} {}", c.check, c.detail);
                    if let Some(hint) = &c.hint {
                        say!("         {:<16} → {hint}", "");
                    }
                }
            }
        }
        let problems = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Problem)
            .count();
        if ok {
            say!("the daemon can start ({} checks)", checks.len());
        } else {
            say!("{problems} problem(s): the daemon would not start or its sessions would fail");
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Invalid })
}

async fn collect(ctx: &Ctx, bind: Option<String>) -> Vec<Check> {
    let mut checks = Vec::new();
    let home = ctx.home.root();
    if !ctx.home.is_initialised() {
        checks.push(Check::problem(
            "home",
            format!("{} is not initialised", home.display()),
            "run `worktrain init` (with the same --home / WORKTRAIN_HOME)",
        ));
        return checks;
    }
    checks.push(Check::ok("home", home.display().to_string()));

    // config.yaml: nothing else can be checked without it.
    let config = match ctx.config() {
        Ok(c) => {
            checks.push(Check::ok(
                "config",
                format!("{} is valid", home.join("config.yaml").display()),
            ));
            c
        }
        Err(e) => {
            checks.push(Check::from_error("config", &e));
            return checks;
        }
    };

    match ApiToken::load(&ctx.home.path(API_TOKEN_FILE)) {
        Ok(_) => checks.push(Check::ok("api-token", "present")),
        Err(e) => checks.push(Check::problem(
            "api-token",
            e.to_string(),
            "run `worktrain init` to create it",
        )),
    }

    let bind = bind.unwrap_or_else(|| config.daemon.bind.clone());
    match parse_bind(&bind).and_then(|addr| check_bind(addr, config.daemon.allow_remote)) {
        Ok(()) => checks.push(Check::ok("bind", bind.clone())),
        Err(e) => checks.push(Check::problem(
            "bind",
            e.to_string(),
            "fix daemon.bind in config.yaml (or --bind)",
        )),
    }

    if let Some(other) = running_daemon(home) {
        checks.push(Check::problem(
            "daemon",
            format!(
                "another worktrain daemon (pid {}) is already running on this home",
                other.pid
            ),
            "one daemon per home: use the running one, or stop it first",
        ));
    } else {
        checks.push(Check::ok("daemon", "none running on this home"));
    }

    let triggers_file = crate::cmd_trigger::triggers_path(ctx, &config);
    checks.push(check_triggers(&triggers_file));

    // The store, and the agent profiles as the daemon builds them (a supervisor is built
    // but never started: nothing is claimed or run).
    let keyring = match ctx.home.keyring() {
        Ok(k) => k,
        Err(e) => {
            checks.push(Check::problem(
                "keyring",
                e.to_string(),
                "run `worktrain init`, or restore keyring.json from a backup",
            ));
            return checks;
        }
    };
    let store = match ctx.open_store(&config).await {
        Ok(store) => store,
        Err(e) => {
            checks.push(Check::from_error("store", &e));
            return checks;
        }
    };
    match store.schema_version().await {
        Ok(v) => checks.push(Check::ok("store", format!("reachable, schema v{v}"))),
        Err(e) => checks.push(Check::problem(
            "store",
            e.to_string(),
            "check store.url / WORKTRAIN_DATABASE_URL and that the database is up",
        )),
    }
    let engine = Arc::new(Engine::new(store.clone(), keyring, config.limits));
    let supervisor =
        Supervisor::from_config(engine, ctx.home.clone(), &config, ctx.database_url.clone());
    let (agents, _) = supervisor.config_status();
    if agents.is_empty() {
        checks.push(Check::ok(
            "agents",
            "no agent profiles: sessions run with the built-in default",
        ));
    }
    for a in agents {
        let name = format!("agent:{}", a.name);
        match a.problem {
            None => checks.push(Check::ok(name, format!("{} profile ready", a.kind))),
            Some(p) => checks.push(Check::problem(
                name,
                p,
                "fix the profile in config.yaml (docs/agents.md); sessions using it fail until then",
            )),
        }
    }
    let sandbox = worktrain_agent::sandbox::probe();
    if sandbox.available {
        checks.push(Check::ok("sandbox", sandbox.detail.clone()));
    } else if supervisor.sandbox_blocks_runs() {
        checks.push(Check::problem(
            "sandbox",
            sandbox.detail.clone(),
            "install bubblewrap (apt-get install bubblewrap), or set `sandbox: {mode: off}` on the profiles that require it",
        ));
    } else {
        checks.push(Check::ok(
            "sandbox",
            format!(
                "unavailable, not required by any profile ({})",
                sandbox.detail
            ),
        ));
    }
    store.close().await;
    checks
}

fn check_triggers(path: &Path) -> Check {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(
                "triggers",
                format!("{} absent: no triggers", path.display()),
            );
        }
        Err(e) => {
            return Check::problem(
                "triggers",
                format!("{}: {e}", path.display()),
                "make the file readable by the daemon's user",
            );
        }
    };
    match worktrain_triggers::config::load(&path.display().to_string(), &text, &EnvSource::Process)
    {
        Ok(index) => Check::ok(
            "triggers",
            format!("{}: {} trigger(s)", path.display(), index.triggers.len()),
        ),
        Err(e) => Check::problem(
            "triggers",
            e.to_string(),
            "fix triggers.yml; docs/triggers.md describes every key",
        ),
    }
}
