//! Command-line syntax (clap). Behaviour lives in the `cmd_*` modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// worktrain — a control plane for coding agents.
///
/// Workflows feed an agent one step at a time; it advances only by presenting the
/// signed token of that step with its output. Every fact lands in an append-only,
/// hash-chained event store.
#[derive(Debug, Parser)]
#[command(name = "worktrain", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Home directory (config, database, keys). Defaults to $WORKTRAIN_HOME or ~/.worktrain.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more (info; twice for debug). Logs go to stderr. WORKTRAIN_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The daemon to talk to (default: the one running on this home, else `daemon.bind`
    /// from config.yaml).
    #[arg(long, global = true, value_name = "URL", env = "WORKTRAIN_DAEMON")]
    pub daemon: Option<String>,

    /// The event store: `sqlite://PATH` or `postgres://USER@HOST/DATABASE` (default:
    /// `store.url` from config.yaml, else the SQLite file in the home directory).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "WORKTRAIN_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Internal: the network bridge inside an allowlisted agent sandbox (started by
    /// worktrain itself; see docs/agents.md).
    #[command(name = "sandbox-net-bridge", hide = true)]
    SandboxNetBridge(NetBridgeArgs),
    /// Create the home directory: config, database, keyring (0600), API token (0600).
    Init,
    /// Walk a workflow interactively in this terminal (initialises the home on first use).
    Run(RunArgs),
    /// Inspect and validate workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Drive and inspect one session.
    #[command(subcommand)]
    Session(SessionCommand),
    /// List sessions.
    Sessions(SessionsArgs),
    /// Manage token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Maintenance.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Serve the MCP tools on stdin/stdout for an agent (initialises the home on first use).
    Mcp(McpArgs),
    /// Run the daemon: the HTTP API and the supervisor that runs dispatched sessions.
    Daemon(DaemonArgs),
    /// Dispatch a session to the daemon; prints its id (`--json`: the record).
    Spawn(Box<SpawnArgs>),
    /// Wait for sessions to finish; prints one result per session. Exit codes differ
    /// from the other commands: 0 all succeeded, 1 some failed, 2 timeout, 3 usage.
    Await(AwaitArgs),
    /// A briefing from the daemon: running, queued, parked, recent outcomes.
    Status,
    /// The kill switch: stop every running session and cancel everything queued.
    KillAll,
    /// Print a one-time login link to the daemon's web console (valid 5 minutes).
    Console,
    /// The sessions and a session's live trace in a full-screen terminal UI (needs a
    /// terminal; `worktrain status` is the non-interactive briefing).
    Watch(WatchArgs),
    /// Session worktrees (read-only inventory and cleanup; works without the daemon).
    #[command(subcommand)]
    Worktree(WorktreeCommand),
    /// Triggers (triggers.yml): webhooks, polls and schedules that start sessions.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Trace analysis: import agent traces, find failure patterns, evaluate the detectors,
    /// explain a session.
    #[command(subcommand)]
    Insights(InsightsCommand),
    /// A report over recent sessions: completion, failure and cancel rates by workflow and
    /// trigger, cancel latency, top findings, cost.
    Report(ReportArgs),
    /// Workflow improvement proposals made from recurring failure patterns.
    #[command(subcommand)]
    Proposals(ProposalsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// bash: `worktrain completions bash > ~/.local/share/bash-completion/completions/worktrain`;
    /// zsh: `worktrain completions zsh > "${fpath[1]}/_worktrain"`;
    /// fish: `worktrain completions fish > ~/.config/fish/completions/worktrain.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (worktrain.1 and one per subcommand, e.g. worktrain-daemon.1) into a
    /// directory: `worktrain man --dir /usr/local/share/man/man1`.
    Man(ManArgs),
}

/// `worktrain man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Where to write the pages (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// `worktrain trigger …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TriggerCommand {
    /// The active triggers, their decision counts and the last load error (from the
    /// running daemon; without one, from the file).
    List,
    /// Print the JSON Schema of triggers.yml (as committed to spec/triggers.schema.json).
    Schema,
    /// Check triggers.yml exactly as the daemon loads it (variables from the environment).
    Validate {
        /// The file (default: `daemon.triggers_file`, i.e. $WORKTRAIN_HOME/triggers.yml).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the decision a trigger would make for a payload; nothing is dispatched or
    /// recorded (works without the daemon).
    Test {
        /// Trigger id.
        id: String,
        /// The event's JSON payload.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        /// The event name (GitHub `X-GitHub-Event`, e.g. `issues`; GitLab `X-Gitlab-Event`).
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        /// The triggers file (default as for `validate`).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Run a trigger now through the daemon: a schedule fires; other triggers process
    /// `--payload` as if it had been delivered (authenticated by the API token).
    Fire {
        /// Trigger id.
        id: String,
        /// The event's JSON payload (not needed for schedules).
        #[arg(long, value_name = "FILE")]
        payload: Option<PathBuf>,
        /// The event name.
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
    },
    /// The decisions of a trigger, oldest of the page first (dispatched, filtered with the
    /// failed condition, duplicate, signature rejected, …).
    Log {
        /// Trigger id.
        id: String,
        /// How many (newest).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this kind (`filtered`, `dispatched`, …).
        #[arg(long, value_name = "KIND")]
        decision: Option<String>,
    },
}

/// Where the insights settings come from.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct InsightsOpts {
    /// Insights settings (detector thresholds, proposal threshold); default
    /// $WORKTRAIN_HOME/insights.yaml when it exists, else the documented defaults.
    #[arg(long = "insights-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `worktrain insights …`.
#[derive(Debug, Subcommand)]
pub(crate) enum InsightsCommand {
    /// Import transcripts (files or directories): Claude Code and Codex JSONL, SWE-agent /
    /// mini-SWE-agent trajectories. Idempotent; malformed lines are reported, not fatal.
    Import(TraceImportArgs),
    /// Bring worktrain's own sessions into the analysis (only changed sessions are read).
    Sync(InsightsOpts),
    /// Re-run the detectors over every stored trace (after changing thresholds) and
    /// refresh the proposals.
    Analyze(InsightsOpts),
    /// Measure each detector on labelled runs: firing rates, precision, recall, lift.
    Eval(EvalArgs),
    /// Ask an agent profile for a short post-mortem of one session (stored with its
    /// findings; the detectors never depend on it).
    Explain(ExplainArgs),
    /// One trace: outcome, counts, findings with evidence, post-mortems.
    Show(ShowArgs),
    /// Findings across traces.
    Findings(FindingsArgs),
    /// The detector thresholds in effect, with their defaults.
    Thresholds(InsightsOpts),
}

/// `insights import`.
#[derive(Debug, Args)]
pub(crate) struct TraceImportArgs {
    /// Files or directories (walked for *.jsonl, *.traj, *.traj.json).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Attribute the imported sessions to this workflow id.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Attribute them to this step of that workflow (needs --workflow): their recurring
    /// patterns can then become proposals for the step.
    #[arg(long, requires = "workflow")]
    pub step: Option<String>,
    /// Read every file as this format (claude_code, codex, codex_exec, mini_swe_agent,
    /// swe_agent) instead of detecting it.
    #[arg(long)]
    pub format: Option<String>,
    /// Settings.
    #[command(flatten)]
    pub opts: InsightsOpts,
}

/// `insights eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// CSV of `session_or_instance_id,resolved` (header optional).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Import these first (files or directories).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Settings.
    #[command(flatten)]
    pub opts: InsightsOpts,
}

/// `insights explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Session id (ses_…) or trace id (source:id).
    pub target: String,
    /// Agent profile from config.yaml (`kind: llm`); default `daemon.default_agent`.
    #[arg(long)]
    pub agent: Option<String>,
    /// Settings.
    #[command(flatten)]
    pub opts: InsightsOpts,
}

/// `insights show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Session id (ses_…) or trace id (source:id).
    pub target: String,
    /// Also list every turn.
    #[arg(long)]
    pub turns: bool,
    /// Settings.
    #[command(flatten)]
    pub opts: InsightsOpts,
}

/// `insights findings`.
#[derive(Debug, Args)]
pub(crate) struct FindingsArgs {
    /// Only this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only this step.
    #[arg(long)]
    pub step: Option<String>,
    /// Only this detector.
    #[arg(long)]
    pub detector: Option<String>,
    /// Only this trace (ses_… or source:id).
    #[arg(long)]
    pub trace: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `worktrain report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Only sessions that started within this long (e.g. `7d`, `24h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// `md` (default) or `json`.
    #[arg(long, default_value = "md")]
    pub format: String,
    /// Which traces: `worktrain` (default: the daemon's and CLI's own sessions) or `all`
    /// (imported transcripts too).
    #[arg(long, default_value = "worktrain")]
    pub source: String,
}

/// `worktrain proposals …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProposalsCommand {
    /// Proposals, highest confidence first.
    List(ProposalListArgs),
    /// One proposal: evidence, patch (as a diff against the workflow file), confidence.
    Show(ProposalTarget),
    /// Apply a proposal (lint must pass): commit the patched workflow on a branch of the
    /// repository that holds it, push and open a pull request; `--write` patches the
    /// local file instead.
    Apply(ApplyArgs),
    /// Dismiss a proposal (it stays dismissed when the pattern recurs).
    Dismiss(DismissArgs),
}

/// `proposals list`.
#[derive(Debug, Args)]
pub(crate) struct ProposalListArgs {
    /// `open` (default), `applied`, `dismissed` or `all`.
    #[arg(long, default_value = "open")]
    pub status: String,
    /// Only this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Settings.
    #[command(flatten)]
    pub opts: InsightsOpts,
}

/// A proposal id.
#[derive(Debug, Args)]
pub(crate) struct ProposalTarget {
    /// Proposal id (prop_…).
    pub id: String,
}

/// `proposals apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// Proposal id (prop_…).
    pub id: String,
    /// Write the patched workflow to the local file (a bundled workflow is written to
    /// $WORKTRAIN_HOME/workflows/<id>.yaml, where it takes precedence).
    #[arg(long)]
    pub write: bool,
    /// The workflow file to patch (default: the one the catalog resolves for the id).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The identity (under `identities:` in triggers.yml) that opens the pull request
    /// (default: the first of the repository's forge).
    #[arg(long, conflicts_with = "write")]
    pub identity: Option<String>,
    /// The remote the branch is pushed to.
    #[arg(long, default_value = "origin", conflicts_with = "write")]
    pub remote: String,
    /// The forge repository, when the remote's URL does not say it
    /// (`github:owner/repo`, `gitlab:group/project`).
    #[arg(long, value_name = "FORGE:REPO", conflicts_with = "write")]
    pub repo: Option<String>,
    /// The branch the pull request goes into (default: the branch checked out where
    /// the workflow file lives).
    #[arg(long, conflicts_with = "write")]
    pub base: Option<String>,
    /// Open the pull request as a draft.
    #[arg(long, conflicts_with = "write")]
    pub draft: bool,
    /// A label for the pull request (repeatable).
    #[arg(long = "label", value_name = "LABEL", conflicts_with = "write")]
    pub labels: Vec<String>,
}

/// `proposals dismiss`.
#[derive(Debug, Args)]
pub(crate) struct DismissArgs {
    /// Proposal id (prop_…).
    pub id: String,
    /// Why.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `worktrain daemon`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct DaemonArgs {
    /// Address to serve on (default: `daemon.bind` from config.yaml, 127.0.0.1:7878).
    /// Port 0 picks a free port; the address is recorded in $WORKTRAIN_HOME/daemon.pid.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Check everything the daemon needs — config.yaml, agent profiles, triggers.yml, the
    /// store, the API token, the bind address, the sandbox — print each problem, and exit
    /// (0 when the daemon would start and run sessions; 2 otherwise). Starts nothing.
    #[arg(long)]
    pub check_config: bool,
    /// Act on the running daemon instead of starting one.
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
}

/// `worktrain daemon <action>`: talk to the running daemon.
#[derive(Debug, Subcommand)]
pub(crate) enum DaemonAction {
    /// Re-read config.yaml now (agent profiles, caps, worktree settings). The daemon also
    /// picks up changes by itself within a second; an invalid file is refused with its
    /// line and column, and the previous configuration stays in force.
    Reload,
}

/// `worktrain spawn`.
#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    /// The session to start.
    #[command(flatten)]
    pub session: NewSessionArgs,
    /// Agent profile from config.yaml (default: `daemon.default_agent`).
    #[arg(long)]
    pub agent: Option<String>,
    /// Idempotency key: spawning again with the same key returns the same session.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Queue priority (higher runs first).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Review-style run: a detached worktree, nothing delivered.
    #[arg(long)]
    pub readonly: bool,
    /// Base ref of the session's worktree (default: `daemon.worktrees.base_branch`).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// A label for what started it (per-trigger caps apply).
    #[arg(long, value_name = "LABEL")]
    pub trigger: Option<String>,
    /// Wall-clock budget (e.g. `30m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wall_clock: Option<std::time::Duration>,
    /// What happens to the finished work: `pull_request`, `commit_only`,
    /// `review_comment` (a review on the `--source` pull request), `webhook`, `none`
    /// (default: commit on the session branch).
    #[arg(long, value_name = "TARGET", value_parser = parse_delivery_target)]
    pub delivery: Option<worktrain_core::run::DeliveryTarget>,
    /// The outside item the session works on (`github:owner/repo#123`,
    /// `gitlab:group/project!7`): delivery comments on it and links the pull request.
    #[arg(long, value_name = "ITEM")]
    pub source: Option<String>,
    /// Git remote delivery pushes to (default `origin` for `pull_request`).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Forge identity from triggers.yml for the pull request and comments.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Open the pull/merge request as a draft.
    #[arg(long)]
    pub draft: bool,
    /// Label for the pull/merge request (repeatable).
    #[arg(long = "pr-label", value_name = "LABEL")]
    pub pr_labels: Vec<String>,
    /// Reviewer to request (repeatable).
    #[arg(long = "reviewer", value_name = "LOGIN")]
    pub reviewers: Vec<String>,
    /// Let delivery continue when the secret scan finds something (default: block).
    #[arg(long)]
    pub allow_secrets: bool,
    /// Commit every change of the worktree, not only the handoff's `filesChanged`.
    #[arg(long)]
    pub commit_all: bool,
    /// LLM turn budget.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// Token budget: uncached input + output + cache writes + cache reads, summed over
    /// the run's LLM calls.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Cost budget in US dollars.
    #[arg(long, value_name = "USD")]
    pub max_cost_usd: Option<f64>,
}

/// `worktrain await`.
#[derive(Debug, Args)]
pub(crate) struct AwaitArgs {
    /// Session ids.
    #[arg(required = true, value_name = "SESSION")]
    pub sessions: Vec<String>,
    /// Wait until every session finished (the default).
    #[arg(long, conflicts_with = "any")]
    pub all: bool,
    /// Wait until one session finished.
    #[arg(long)]
    pub any: bool,
    /// Give up after this long (e.g. `30m`, `90s`); exit 2. Default: wait indefinitely.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// `worktrain watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Show only sessions in this state: a run state (`queued`, `running`, `parked`,
    /// `interrupted`, `completed`, `failed`, `cancelled`) or, for sessions without a
    /// daemon run, a workflow status (`in_progress`, `blocked`, `parked`, `complete`).
    /// `f` cycles through them.
    #[arg(long, value_name = "STATE")]
    pub status: Option<String>,
    /// Open this session's live trace at start.
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
    /// Draw into an off-screen buffer and print frames instead of using the terminal
    /// (for tests: see `--script`).
    #[arg(long, hide = true)]
    pub dump: bool,
    /// `--dump`: width and height of the buffer.
    #[arg(long, hide = true, value_name = "WxH", default_value = "160x40", value_parser = parse_size)]
    pub size: (u16, u16),
    /// `--dump`: steps in order: `wait=TEXT` (until the screen shows it; the frame is
    /// printed) or `key=NAME` (a character, enter, esc, up, down, end).
    #[arg(long, hide = true, value_name = "STEP")]
    pub script: Vec<String>,
    /// `--dump`: give up (exit 1, last frame printed) after this long.
    #[arg(long, hide = true, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

impl WatchArgs {
    /// Whether to open a trace at start.
    pub(crate) fn open(&self) -> bool {
        self.session.is_some()
    }
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT"))?;
    let n = |v: &str| {
        v.parse::<u16>()
            .ok()
            .filter(|n| (10..=1000).contains(n))
            .ok_or_else(|| format!("`{v}` is not a size from 10 to 1000"))
    };
    Ok((n(w)?, n(h)?))
}

/// `worktrain worktree …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorktreeCommand {
    /// Every session worktree of every workspace that has daemon sessions: path, branch,
    /// session, age, dirty, ahead, merged.
    List,
    /// Remove worktrees nobody owns any more (expired keeps, unlocked clean ones,
    /// leftovers); never a worktree in use.
    Clean(CleanArgs),
}

/// `worktree clean`.
#[derive(Debug, Args)]
pub(crate) struct CleanArgs {
    /// Only show what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// `worktrain run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Workflow id or path to a workflow file.
    #[arg(required_unless_present = "resume")]
    pub workflow: Option<String>,
    /// What the session should achieve.
    #[arg(long, required_unless_present = "resume")]
    pub goal: Option<String>,
    /// Continue a paused or interrupted session (its id or any of its tokens) at its
    /// current step, instead of starting one.
    #[arg(long, value_name = "SESSION", conflicts_with_all = ["workflow", "goal", "context"])]
    pub resume: Option<String>,
    /// Where the session works and the context it starts with.
    #[command(flatten)]
    pub setup: SessionSetupArgs,
    /// Read each step's notes from DIR/<step-id>.md (and optional DIR/<step-id>.json with
    /// `{"artifacts": [...], "context": {...}}`) instead of asking.
    #[arg(long, value_name = "DIR")]
    pub notes_from: Option<PathBuf>,
}

/// `worktrain workflow …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// List workflows from every source, with shadowing and load errors.
    List(WorkspaceArg),
    /// Show a workflow's metadata, steps and hash.
    Show(WorkflowTarget),
    /// Validate workflow files or ids; errors name file, line, path and rule.
    Validate(ValidateArgs),
    /// Print the JSON Schema of workflow files.
    Schema,
    /// Render the compiled graph: text outline, Graphviz DOT or standalone SVG.
    Graph(GraphArgs),
    /// Lint workflow files or ids: unreachable steps, unset context keys, loops without a
    /// decision, gates in unattended workflows, load errors (exit 6 on errors).
    Lint(LintArgs),
    /// Walk a workflow without an agent, with scripted context, decisions and artifacts,
    /// and print the path it takes (exit 6 when a step blocks, 1 on the node limit).
    Simulate(SimulateArgs),
    /// Convert WorkRail workflows into worktrain workflows, with a report per file:
    /// converted, converted with notes, failed (exit 6) or skipped.
    Import(ImportArgs),
}

/// A `--workspace` option.
#[derive(Debug, Args)]
pub(crate) struct WorkspaceArg {
    /// Project directory whose .worktrain/workflows is searched (default: the current repository).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// One workflow id or file.
#[derive(Debug, Args)]
pub(crate) struct WorkflowTarget {
    /// Workflow id or path to a workflow file.
    pub workflow: String,
    /// Project directory whose .worktrain/workflows is searched.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `workflow validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Workflow files or ids.
    #[arg(required = true)]
    pub workflows: Vec<String>,
    /// Project directory whose .worktrain/workflows is searched.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `workflow graph`.
#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// Workflow id or path to a workflow file.
    pub workflow: String,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "dot", "svg"])]
    pub format: String,
    /// Write the graph to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Project directory whose .worktrain/workflows is searched.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `workflow lint`.
#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// Workflow files or ids.
    #[arg(required = true)]
    pub workflows: Vec<String>,
    /// Exit 6 on warnings too (for CI).
    #[arg(long)]
    pub deny_warnings: bool,
    /// Project directory whose .worktrain/workflows is searched.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `workflow simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Workflow id or path to a workflow file.
    pub workflow: String,
    /// Initial context value (`key=value`; JSON values are parsed; repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Context a step sets when it completes (`STEP:key=value`; repeatable).
    #[arg(long = "at", value_name = "STEP:KEY=VALUE")]
    pub at: Vec<String>,
    /// Decisions of a loop's decision step, in order; the last repeats
    /// (`LOOP=continue,stop`; default: stop after the first pass).
    #[arg(long = "decide", value_name = "LOOP=DECISIONS")]
    pub decide: Vec<String>,
    /// The artifact a step submits (`STEP=FILE` or `STEP={...inline JSON}`); replaces the
    /// default one (the contract's example, or levels that do not block).
    #[arg(long = "artifact", value_name = "STEP=FILE|JSON")]
    pub artifact: Vec<String>,
    /// Stop after this many step entries (default: the compiler's bound).
    #[arg(long, value_name = "N")]
    pub max_nodes: Option<u64>,
    /// Project directory whose .worktrain/workflows is searched.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `workflow import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// WorkRail workflow files, or directories searched recursively for .json files.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// The format the files are written in.
    #[arg(long, default_value = "workrail", value_parser = ["workrail"])]
    pub from: String,
    /// Where to write the converted workflows (default: .worktrain/workflows of the
    /// current repository, where the catalog finds them).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A directory of WorkRail routines that template calls may expand (repeatable).
    #[arg(long = "routines", value_name = "DIR")]
    pub routines: Vec<PathBuf>,
    /// Convert and check everything, but write nothing.
    #[arg(long)]
    pub check: bool,
}

/// `worktrain session …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SessionCommand {
    /// Start a session; prints the first step and its tokens.
    Start(StartArgs),
    /// Submit the current step's output with its advance token.
    Advance(AdvanceArgs),
    /// Record progress on the current step without advancing.
    Checkpoint(CheckpointArgs),
    /// Show the current step, fresh tokens and earlier notes (writes nothing).
    Rehydrate(RehydrateArgs),
    /// Move a session back to an earlier step (recorded; starts a new branch).
    Rewind(RewindArgs),
    /// Approve a parked step (autonomous sessions): it completes with the parked output.
    Approve(ApproveArgs),
    /// Reject a parked step: the agent must submit a new attempt, seeing the note.
    Reject(RejectArgs),
    /// Show a session's summary and step graph.
    Show(SessionIdArg),
    /// Print a session's events.
    Log(LogArgs),
    /// Verify a session's hash chain.
    Verify(SessionIdArg),
    /// Cancel a daemon session's run (via the daemon).
    Cancel(NoteArgs),
    /// Give a running agent a message for its next turn (via the daemon).
    Steer(SteerArgs),
    /// Resume an interrupted run (via the daemon).
    Resume(SessionIdArg),
    /// Retry a failed or cancelled run from where the session stands (via the daemon).
    Retry(SessionIdArg),
    /// Continue a completed session's failed delivery from the stage that failed
    /// (via the daemon; stages already done are not repeated).
    RetryDelivery(SessionIdArg),
    /// Show what each step changed in the worktree (from its step snapshots).
    Diff(DiffArgs),
}

/// A session and an optional note.
#[derive(Debug, Args)]
pub(crate) struct NoteArgs {
    /// Session id.
    pub session: String,
    /// Why (recorded).
    #[arg(long)]
    pub note: Option<String>,
}

/// `session steer`.
#[derive(Debug, Args)]
pub(crate) struct SteerArgs {
    /// Session id.
    pub session: String,
    /// The message for the agent.
    #[arg(long, short)]
    pub message: String,
}

/// `session diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// Session id.
    pub session: String,
    /// Only this step (step id, or a node like `n3`).
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Only the per-file counts, no patch.
    #[arg(long)]
    pub stat: bool,
}

/// `session start`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The session to start.
    #[command(flatten)]
    pub session: NewSessionArgs,
    /// Run unattended: gated steps park until `session approve|reject` (default: interactive,
    /// where gates tell the agent to ask the user).
    #[arg(long)]
    pub autonomous: bool,
}

/// A new session's workflow, goal, setup and parent: the start arguments `spawn` and
/// `session start` share (`run` takes the workflow as a positional argument and shares
/// [`SessionSetupArgs`]).
#[derive(Debug, Args)]
pub(crate) struct NewSessionArgs {
    /// Workflow id or path to a workflow file.
    #[arg(long)]
    pub workflow: String,
    /// What the session should achieve.
    #[arg(long)]
    pub goal: String,
    /// Where the session works and the context it starts with.
    #[command(flatten)]
    pub setup: SessionSetupArgs,
    /// The session that spawned this one.
    #[arg(long, value_name = "SESSION")]
    pub parent: Option<String>,
}

/// Where a new session works and the context it starts with (`spawn`, `run`,
/// `session start`).
#[derive(Debug, Args)]
pub(crate) struct SessionSetupArgs {
    /// Workspace directory the session works in (default: the current directory). Sessions
    /// the daemon runs in a git repository get a worktree each.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Initial context values (`key=value`; JSON values are parsed; repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
}

/// What an agent submits.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// File with the notes (markdown); `-` reads stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "notes")]
    pub notes_file: Option<PathBuf>,
    /// The notes, inline.
    #[arg(long)]
    pub notes: Option<String>,
    /// JSON file with one artifact object or an array of them (repeatable).
    #[arg(long = "artifact", value_name = "FILE")]
    pub artifacts: Vec<PathBuf>,
    /// Context change (`key=value`; `key=null` deletes; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `session advance`.
#[derive(Debug, Args)]
pub(crate) struct AdvanceArgs {
    /// The advance token from the last response.
    #[arg(long)]
    pub token: String,
    /// The output.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `session checkpoint`.
#[derive(Debug, Args)]
pub(crate) struct CheckpointArgs {
    /// The checkpoint token from the last response.
    #[arg(long)]
    pub token: String,
    /// The progress notes.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `session rehydrate`.
#[derive(Debug, Args)]
pub(crate) struct RehydrateArgs {
    /// Session id or any token of the session.
    pub session: String,
}

/// `session rewind`.
#[derive(Debug, Args)]
pub(crate) struct RewindArgs {
    /// Session id or any token of the session.
    pub session: String,
    /// Step id to go back to (its latest completed node), or a node like `n3`.
    #[arg(long)]
    pub to: String,
    /// Why (recorded in the event).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `session approve`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// Session id or any token of the session.
    pub session: String,
    /// A note recorded with the approval.
    #[arg(long)]
    pub note: Option<String>,
}

/// `session reject`.
#[derive(Debug, Args)]
pub(crate) struct RejectArgs {
    /// Session id or any token of the session.
    pub session: String,
    /// What to change (shown to the agent as a blocker).
    #[arg(long)]
    pub note: String,
}

/// A session id.
#[derive(Debug, Args)]
pub(crate) struct SessionIdArg {
    /// Session id (`ses_…`) or any token of the session.
    pub session: String,
}

/// `session log`.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Session id or any token of the session.
    pub session: String,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Keep printing new events until the session completes (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
}

/// `worktrain sessions`.
#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// Only sessions in this status (in_progress, blocked, parked, complete).
    #[arg(long)]
    pub status: Option<String>,
    /// Only sessions of this workflow id.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only sessions whose workspace is this directory or inside it.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<std::path::PathBuf>,
    /// Only sessions whose goal, workflow or branch contains this text.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Rows to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
}

/// `worktrain mcp`.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// Default workspace for tool calls that name none; its .worktrain/workflows is searched
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Do not serve: relay stdin/stdout to the MCP server listening on this Unix socket
    /// (what a sandboxed external agent runs; the daemon serves the socket).
    #[arg(long, value_name = "SOCKET", conflicts_with = "workspace")]
    pub relay: Option<PathBuf>,
}

/// `worktrain keys …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Show key ids and creation times (never secrets).
    List,
    /// Make a new signing key; the old one keeps verifying until dropped.
    Rotate,
    /// Stop accepting tokens signed with the previous key.
    DropPrevious,
}

/// `worktrain admin …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Rebuild every projection from the events, in one transaction.
    RebuildProjections,
    /// Copy every session and blob of this store (the configured one, or `--database-url`)
    /// into another store, e.g. an embedded store into PostgreSQL; every copied session's
    /// hash chain is verified in the target. Sessions already in the target are skipped.
    MigrateStore(MigrateStoreArgs),
}

/// `worktrain admin migrate-store`.
#[derive(Debug, Args)]
pub(crate) struct MigrateStoreArgs {
    /// The target store: `postgres://USER@HOST/DATABASE` or `sqlite://PATH`.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

fn parse_delivery_target(s: &str) -> Result<worktrain_core::run::DeliveryTarget, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        format!("unknown delivery target `{s}` (pull_request, commit_only, review_comment, webhook, none)")
    })
}

/// `worktrain sandbox-net-bridge` (internal).
#[derive(Debug, Args)]
pub(crate) struct NetBridgeArgs {
    /// Where to listen inside the sandbox.
    #[arg(long)]
    pub(crate) listen: String,
    /// The proxy's Unix socket.
    #[arg(long)]
    pub(crate) upstream: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}
