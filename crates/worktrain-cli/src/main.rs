//! The `worktrain` binary.

/// `println!` that never panics: a closed pipe (`worktrain … | head`) ends output quietly.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod cli;
mod client;
mod cmd_admin;
mod cmd_check;
mod cmd_coord;
mod cmd_daemon;
mod cmd_insights;
mod cmd_mcp;
mod cmd_run;
mod cmd_session;
mod cmd_trigger;
mod cmd_workflow;
mod cmd_worktree;
mod output;
mod watch;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde_json::{Map, Value};
use worktrain_config::{Config, Home, HomeError};
use worktrain_core::context::parse_assignment;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_engine::{Catalog, Engine, store_error};

use crate::cli::{AdminCommand, Cli, Command, KeysCommand};
use crate::output::{Exit, Out};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                // `worktrain await` documents its own exit codes: 3 is usage.
                _ if is_await_invocation() => cmd_coord::await_exit::USAGE,
                _ => Exit::Usage as u8,
            });
        }
    };
    // Inside an allowlisted sandbox: bridge to the proxy and run the command, nothing else.
    if let Command::SandboxNetBridge(a) = &cli.command {
        let (program, args) = a.command.split_first().unzip();
        let code = worktrain_agent::netproxy::bridge_main(
            &a.listen,
            &a.upstream,
            program.map(String::as_str).unwrap_or("true"),
            args.unwrap_or_default(),
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Ok(me) = std::env::current_exe() {
        worktrain_agent::netproxy::set_bridge_program(me);
    }
    // The daemon logs at info by default; other commands only warn.
    let daemon = matches!(&cli.command, Command::Daemon(a) if a.action.is_none());
    init_logging(cli.verbose + u8::from(daemon));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    let out = Out { json: cli.json };
    let code = runtime.block_on(async move {
        if let Command::Await(_) = &cli.command {
            return run_await(cli, out).await;
        }
        match dispatch(cli, out).await {
            Ok(exit) => exit as u8,
            Err(e) => out.error(&e) as u8,
        }
    });
    ExitCode::from(code)
}

/// Whether the command line names the `await` subcommand (for its usage exit code).
fn is_await_invocation() -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--home" | "--daemon" | "--database-url" => {
                args.next();
            }
            s if s.starts_with('-') => {}
            s => return s == "await",
        }
    }
    false
}

async fn run_await(cli: Cli, out: Out) -> u8 {
    let home = match Home::locate(cli.home.clone()) {
        Ok(h) => h,
        Err(e) => {
            let _ = out.error(&home_error(e));
            return cmd_coord::await_exit::USAGE;
        }
    };
    let ctx = Ctx {
        home,
        out,
        daemon: cli.daemon,
        database_url: cli.database_url,
    };
    match cli.command {
        Command::Await(a) => cmd_coord::await_sessions(&ctx, a).await,
        _ => cmd_coord::await_exit::USAGE,
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("WORKTRAIN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("WORKTRAIN_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only for a person at a terminal: logs written to a file, a pipe or a
    // journal must be plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(cli: Cli, out: Out) -> Result<Exit, ApiError> {
    // Generated from the command definitions alone: no home needed.
    match &cli.command {
        Command::Completions { shell } => return Ok(generate_completions(*shell)),
        Command::Man(args) => return write_man_pages(&args.dir, out),
        _ => {}
    }
    let home = Home::locate(cli.home.clone()).map_err(home_error)?;
    let ctx = Ctx {
        home,
        out,
        daemon: cli.daemon,
        database_url: cli.database_url,
    };
    match cli.command {
        Command::Init => ctx.init().await,
        Command::Run(args) => cmd_run::run(&ctx, args).await,
        Command::Workflow(cmd) => cmd_workflow::run(&ctx, cmd),
        Command::Session(cmd) => cmd_session::run(&ctx, cmd).await,
        Command::Sessions(args) => cmd_session::list(&ctx, args).await,
        Command::Keys(cmd) => ctx.keys(cmd),
        Command::Admin(AdminCommand::RebuildProjections) => ctx.rebuild().await,
        Command::Admin(AdminCommand::MigrateStore(args)) => {
            cmd_admin::migrate_store(&ctx, args).await
        }
        Command::Mcp(args) => cmd_mcp::run(&ctx, args).await,
        Command::Daemon(args) => match args.action {
            None if args.check_config => cmd_check::check_config(&ctx, args.bind).await,
            None => cmd_daemon::run(&ctx, args).await,
            Some(cli::DaemonAction::Reload) => cmd_daemon::reload(&ctx).await,
        },
        Command::Spawn(args) => cmd_coord::spawn(&ctx, *args).await,
        Command::Await(_) => Err(ApiError::internal("await is handled before dispatch")),
        Command::Status => cmd_coord::status(&ctx).await,
        Command::KillAll => cmd_coord::kill_all(&ctx).await,
        Command::Console => cmd_coord::console(&ctx).await,
        Command::Watch(args) => watch::run(&ctx, args).await,
        Command::Worktree(cmd) => cmd_worktree::run(&ctx, cmd).await,
        Command::Trigger(cmd) => cmd_trigger::run(&ctx, cmd).await,
        Command::Insights(cmd) => cmd_insights::run(&ctx, cmd).await,
        Command::Report(args) => cmd_insights::report(&ctx, args).await,
        Command::Proposals(cmd) => cmd_insights::proposals(&ctx, cmd).await,
        Command::Completions { .. } | Command::Man(_) | Command::SandboxNetBridge(_) => {
            Err(ApiError::internal("handled before the home is located"))
        }
    }
}

/// `worktrain completions SHELL`: the script on stdout.
fn generate_completions(shell: clap_complete::Shell) -> Exit {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics when its writer fails, and a closed pipe
    // (`worktrain completions bash | head`) must end output quietly, as everywhere else.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "worktrain", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Exit::Ok
}

/// `worktrain man --dir DIR`: `worktrain.1` and one page per subcommand, at every depth
/// (`worktrain-session-rewind.1`), named as `man` looks them up.
fn write_man_pages(dir: &Path, out: Out) -> Result<Exit, ApiError> {
    use clap::CommandFactory;
    let io_error = |path: &Path, e: std::io::Error| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("{}: {e}", path.display()),
            Retry::AfterFix,
            "choose a directory you can write to",
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let mut written = Vec::new();
    let mut pending = vec![(
        Cli::command().version(env!("CARGO_PKG_VERSION")),
        String::from("worktrain"),
    )];
    while let Some((cmd, name)) = pending.pop() {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let sub_name = format!("{name}-{}", sub.get_name());
            pending.push((sub.clone().name(sub_name.clone()), sub_name));
        }
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .render(&mut buf)
            .map_err(|e| io_error(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| io_error(&path, e))?;
        written.push(path);
    }
    written.sort();
    if out.json {
        out.json(&serde_json::json!({"dir": dir, "pages": written}));
    } else {
        say!("wrote {} man pages to {}", written.len(), dir.display());
    }
    Ok(Exit::Ok)
}

/// Everything a command needs: where the home is and how to print.
pub struct Ctx {
    /// The home directory.
    pub home: Home,
    /// Output mode.
    pub out: Out,
    /// `--daemon` / `WORKTRAIN_DAEMON`.
    pub daemon: Option<String>,
    /// `--database-url` / `WORKTRAIN_DATABASE_URL`.
    pub database_url: Option<String>,
}

// By hand: the database URL may carry a password.
impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("home", &self.home.root())
            .field("out", &self.out)
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The configuration (defaults when the file is absent).
    pub fn config(&self) -> Result<Config, ApiError> {
        self.home.config().map_err(home_error)
    }

    /// Open the store and engine; the home must be initialised.
    pub async fn engine(&self) -> Result<Engine, ApiError> {
        let (engine, _) = self.engine_with_store().await?;
        Ok(engine)
    }

    /// The engine and its store (the daemon also keeps trigger state in it).
    pub async fn engine_with_store(
        &self,
    ) -> Result<(Engine, Arc<dyn worktrain_store::Store>), ApiError> {
        if !self.home.is_initialised() {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!("{} is not initialised", self.home.root().display()),
                Retry::AfterFix,
                "run `worktrain init` first (or use `worktrain run`, which initialises on first use)",
            ));
        }
        let config = self.config()?;
        let keyring = self.home.keyring().map_err(home_error)?;
        let store = self.open_store(&config).await?;
        // Steps advanced from here (the CLI, `worktrain mcp` for an external agent) are
        // snapshotted in the session's worktree like steps the daemon's own loop advances.
        let worktrees = worktrain_engine::SessionWorktrees::new(
            config.daemon.worktrees.clone(),
            self.home.root(),
        );
        Ok((
            Engine::new(store.clone(), keyring, config.limits).with_worktrees(worktrees),
            store,
        ))
    }

    /// Open the configured store (see [`Home::store_url`]).
    pub async fn open_store(
        &self,
        config: &Config,
    ) -> Result<Arc<dyn worktrain_store::Store>, ApiError> {
        let url = self
            .home
            .store_url(config, self.database_url.as_deref())
            .map_err(store_error)?;
        worktrain_store::open(&url, &self.home.store_options(config))
            .await
            .map_err(|e| {
                // Say which store failed, unless the error already does.
                let named = matches!(
                    e,
                    worktrain_store::StoreError::Unreachable { .. }
                        | worktrain_store::StoreError::InvalidUrl { .. }
                );
                let mut err = store_error(e);
                if !named {
                    err.message = format!("{url}: {}", err.message);
                }
                err
            })
    }

    /// The workflow catalog for a workspace (default: the current repository).
    pub fn catalog(&self, workspace: Option<&Path>) -> Catalog {
        let project = workspace
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok().map(|d| project_root(&d)));
        Catalog::new(
            Some(self.home.path(worktrain_config::WORKFLOWS_DIR)),
            project.as_deref(),
        )
    }

    async fn init(&self) -> Result<Exit, ApiError> {
        let report = self.home.init().map_err(home_error)?;
        let config = self.config()?;
        let url = self
            .home
            .store_url(&config, self.database_url.as_deref())
            .map_err(store_error)?;
        let db_existed = match &url {
            worktrain_store::StoreUrl::Sqlite(path) => path.exists(),
            worktrain_store::StoreUrl::Postgres(_) => true,
        };
        let store = self.open_store(&config).await?;
        let schema = store.schema_version().await.map_err(store_error)?;
        store.close().await;
        let mut created = report.created.clone();
        let mut unchanged = report.unchanged.clone();
        if let worktrain_store::StoreUrl::Sqlite(db) = &url {
            if db_existed {
                unchanged.push(db.clone());
            } else {
                created.push(db.clone());
            }
        }
        if self.out.json {
            self.out.json(&serde_json::json!({
                "home": report.home,
                "created": created,
                "unchanged": unchanged,
                "changed": !created.is_empty(),
                "schema_version": schema,
            }));
        } else if created.is_empty() {
            say!(
                "{} is already initialised; nothing changed (schema v{schema}).",
                report.home.display()
            );
        } else {
            say!("Initialised {}:", report.home.display());
            for p in &created {
                say!("  created   {}", p.display());
            }
            for p in &unchanged {
                say!("  unchanged {}", p.display());
            }
        }
        Ok(Exit::Ok)
    }

    fn keys(&self, cmd: KeysCommand) -> Result<Exit, ApiError> {
        let ring = match cmd {
            KeysCommand::List => self.home.keyring(),
            KeysCommand::Rotate => self.home.rotate_keys(),
            KeysCommand::DropPrevious => self.home.drop_previous_key(),
        }
        .map_err(home_error)?;
        let describe = |k: &worktrain_core::token::SigningKey| serde_json::json!({"id": k.id.to_string(), "created_at": k.created_at});
        if self.out.json {
            self.out.json(&serde_json::json!({
                "current": describe(&ring.current),
                "previous": ring.previous.as_ref().map(describe),
            }));
        } else {
            say!(
                "current key:  {} (created {})",
                ring.current.id,
                ring.current.created_at
            );
            match &ring.previous {
                Some(p) => say!(
                    "previous key: {} (created {}) — still accepted; `worktrain keys drop-previous` stops that",
                    p.id,
                    p.created_at
                ),
                None => say!("previous key: none"),
            }
        }
        Ok(Exit::Ok)
    }

    async fn rebuild(&self) -> Result<Exit, ApiError> {
        let engine = self.engine().await?;
        let report = engine
            .store()
            .rebuild_projections()
            .await
            .map_err(store_error)?;
        if self.out.json {
            self.out.json(&report);
        } else {
            say!(
                "Rebuilt projections of {} sessions from {} events.",
                report.sessions,
                report.events
            );
        }
        Ok(Exit::Ok)
    }
}

pub use worktrain_engine::catalog::project_root;

/// Map a home-directory problem to the API error shape.
pub fn home_error(e: HomeError) -> ApiError {
    let hint = match &e {
        HomeError::NoHome => "set WORKTRAIN_HOME to a writable directory",
        HomeError::Io { .. } => "check that the path exists and is writable",
        HomeError::Config { .. } => {
            "fix config.yaml; every key is optional, unknown keys are rejected"
        }
        HomeError::Keyring { .. } => {
            "restore keyring.json from backup, or move it away and run `worktrain init` (old tokens stop working)"
        }
        HomeError::NotInitialised { .. } => "run `worktrain init`",
    };
    let code = match &e {
        HomeError::Config { .. } | HomeError::NotInitialised { .. } => ErrorCode::InvalidInput,
        HomeError::NoHome | HomeError::Io { .. } | HomeError::Keyring { .. } => {
            ErrorCode::StoreFailure
        }
    };
    ApiError::new(code, e.to_string(), Retry::AfterFix, hint)
}

impl cli::SessionSetupArgs {
    /// The workspace as the engine and daemon take it: canonical, and checked to exist.
    pub(crate) fn workspace(&self) -> Result<Option<String>, ApiError> {
        existing_workspace(self.workspace.as_deref())
    }

    /// The initial context from the `--context key=value` pairs.
    pub(crate) fn context(&self) -> Result<Map<String, Value>, ApiError> {
        context_from(&self.context)
    }
}

/// Parse `key=value` pairs into a context object.
pub fn context_from(pairs: &[String]) -> Result<Map<String, Value>, ApiError> {
    let mut map = Map::new();
    for p in pairs {
        let (k, v) = parse_assignment(p)?;
        map.insert(k, v);
    }
    Ok(map)
}

/// The workspace a session will work in: `--workspace` (relative to the current
/// directory) or the current directory, as an absolute path. A directory that does not
/// exist is an error that says so, before anything is sent or started.
pub fn existing_workspace(ws: Option<&Path>) -> Result<Option<String>, ApiError> {
    let dir = match ws {
        Some(p) => p.to_path_buf(),
        None => return Ok(workspace_string(None)),
    };
    match std::fs::canonicalize(&dir) {
        Ok(p) => Ok(Some(p.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cwd = std::env::current_dir()
                .map(|d| format!(" (relative to {})", d.display()))
                .unwrap_or_default();
            Err(ApiError::invalid_input(
                format!(
                    "--workspace `{}` does not exist{}",
                    dir.display(),
                    if dir.is_relative() {
                        cwd
                    } else {
                        String::new()
                    }
                ),
                "pass the path of an existing git working tree",
            ))
        }
        Err(e) => Err(ApiError::invalid_input(
            format!("--workspace `{}`: {e}", dir.display()),
            "pass the path of an existing git working tree",
        )),
    }
}

/// Resolve a workspace option to an absolute path string (default: the current directory).
pub fn workspace_string(ws: Option<&Path>) -> Option<String> {
    let dir = match ws {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir().ok()?,
    };
    Some(
        std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .display()
            .to_string(),
    )
}
