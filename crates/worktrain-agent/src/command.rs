//! External agents: [`CommandAgent`] runs a configured command (Claude Code in print
//! mode, Codex exec, any script) in the worktree, once per step attempt, with the step
//! prompt and an MCP config pointing back at worktrain. The agent advances through
//! worktrain's MCP tools; the runner judges progress **only** by the [`crate::StepDriver`]'s
//! state, never by the exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

use crate::driver::StepStatus;
use crate::events::{AgentEvent, NudgeReason, OutputStream, RunnerKind};
use crate::prompt;
use crate::redact::Redactor;
use crate::run::{AgentRunner, FailureReason, RunContext, RunOutcome, RunStats};
use crate::sandbox::{Input, SandboxScope};
use crate::tools::shell::GroupKill;

/// How the step prompt reaches the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptDelivery {
    /// Written to standard input, which is then closed.
    Stdin,
    /// As an argument: where an argument contains `{prompt}`, else appended last.
    Arg,
}

/// Configuration of an external agent.
///
/// Arguments may contain placeholders: `{prompt}`, `{mcp_config}` (path of the MCP config
/// file), `{session_id}`, `{worktree}`, `{worktrain_bin}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAgentConfig {
    /// Program to run (looked up on `PATH`).
    pub program: String,
    /// Arguments (with placeholders).
    #[serde(default)]
    pub args: Vec<String>,
    /// How the prompt is passed.
    #[serde(default = "default_delivery")]
    pub prompt: PromptDelivery,
    /// The worktrain binary named in the MCP config (default: this executable).
    #[serde(default)]
    pub worktrain_bin: Option<PathBuf>,
    /// Arguments of the MCP server command.
    #[serde(default = "default_mcp_args")]
    pub mcp_args: Vec<String>,
    /// Environment of the MCP server (besides `WORKTRAIN_SESSION_ID`, always set).
    #[serde(default)]
    pub mcp_env: BTreeMap<String, String>,
    /// Environment variable that receives the MCP config file's path (`None`: not set).
    #[serde(default = "default_mcp_env_var")]
    pub mcp_config_env: Option<String>,
    /// Extra environment of the command (values). Variables of worktrain's own
    /// environment reach it only when named in `sandbox.env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the command runs (default: sandboxed, with the network on so the agent can
    /// reach its model provider).
    #[serde(default = "crate::sandbox::SandboxPolicy::networked")]
    pub sandbox: crate::sandbox::SandboxPolicy,
    /// Preamble of the prompt.
    #[serde(default = "default_preamble")]
    pub preamble: String,
    /// Rules files inlined into the prompt (default none: CLI agents read their own).
    #[serde(default)]
    pub rules_files: Vec<String>,
    /// Re-runs without progress before the run fails (`agent_stopped_early`, or
    /// `agent_process_failed` when the last exit was non-zero).
    #[serde(default = "default_nudges")]
    pub max_nudges: u32,
    /// One invocation's time limit (`None`: the run's wall clock only).
    #[serde(default, with = "crate::duration_serde::option")]
    pub invocation_timeout: Option<Duration>,
    /// Heartbeat interval while the command runs.
    #[serde(default = "default_heartbeat", with = "crate::duration_serde")]
    pub heartbeat_interval: Duration,
    /// Output is recorded in chunks of at most this many bytes...
    #[serde(default = "default_chunk")]
    pub output_chunk_bytes: usize,
    /// ...or at least this often.
    #[serde(default = "default_flush", with = "crate::duration_serde")]
    pub output_flush: Duration,
    /// Output recorded per invocation; the rest is dropped (with a marker).
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// Time between SIGTERM and SIGKILL when stopping the command.
    #[serde(default = "default_grace", with = "crate::duration_serde")]
    pub kill_grace: Duration,
}

fn default_delivery() -> PromptDelivery {
    PromptDelivery::Stdin
}
fn default_mcp_args() -> Vec<String> {
    vec!["mcp".to_owned()]
}
fn default_mcp_env_var() -> Option<String> {
    Some("WORKTRAIN_MCP_CONFIG".to_owned())
}
fn default_preamble() -> String {
    prompt::EXTERNAL_PREAMBLE.to_owned()
}
fn default_nudges() -> u32 {
    1
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(15)
}
fn default_chunk() -> usize {
    4096
}
fn default_flush() -> Duration {
    Duration::from_millis(500)
}
fn default_max_output() -> usize {
    8 * 1024 * 1024
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}

impl CommandAgentConfig {
    /// A config running `program args…` with defaults for the rest.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            program: program.into(),
            args,
            prompt: default_delivery(),
            worktrain_bin: None,
            mcp_args: default_mcp_args(),
            mcp_env: BTreeMap::new(),
            mcp_config_env: default_mcp_env_var(),
            env: BTreeMap::new(),
            sandbox: crate::sandbox::SandboxPolicy::networked(),
            preamble: default_preamble(),
            rules_files: Vec::new(),
            max_nudges: default_nudges(),
            invocation_timeout: None,
            heartbeat_interval: default_heartbeat(),
            output_chunk_bytes: default_chunk(),
            output_flush: default_flush(),
            max_output_bytes: default_max_output(),
            kill_grace: default_grace(),
        }
    }
}

/// Runs an external agent command. See the module docs.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    config: CommandAgentConfig,
    redactor: Redactor,
}

impl CommandAgent {
    /// An agent for `config`. Values it hands the command that are secrets — `env`
    /// entries and `sandbox.env` variables whose names look secret (`*TOKEN*`, `*KEY*`,
    /// …) — are redacted from everything recorded.
    pub fn new(config: CommandAgentConfig) -> Self {
        let passed = config
            .sandbox
            .env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)));
        let redactor = config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(passed)
            .filter(|(k, _)| crate::redact::secret_name(k))
            .fold(Redactor::new(), |r, (_, v)| r.with_literal(v));
        Self { config, redactor }
    }

    /// Also redact this literal secret from recorded output.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.redactor = self.redactor.with_literal(secret);
        self
    }

    /// The MCP config JSON for a session whose relay socket is at `socket` (as the
    /// command sees it): the server is `worktrain mcp --relay <socket>`, which only copies
    /// bytes to worktrain's own MCP server outside the sandbox (see [`serve_relay`]).
    pub fn mcp_config(&self, session_id: &str, socket: &std::path::Path) -> serde_json::Value {
        json!({"mcpServers": {"worktrain": {
            "command": self.worktrain_bin().display().to_string(),
            "args": ["mcp", "--relay", socket.display().to_string()],
            "env": {"WORKTRAIN_SESSION_ID": session_id},
        }}})
    }

    fn worktrain_bin(&self) -> PathBuf {
        self.config
            .worktrain_bin
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("worktrain"))
    }
}

#[async_trait]
impl AgentRunner for CommandAgent {
    fn sandbox_mode(&self) -> crate::sandbox::SandboxMode {
        self.config.sandbox.mode
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let span = info_span!("agent_run", session_id = %ctx.session_id, runner = "command", program = %self.config.program);
        async move {
            let mut run = CmdRun {
                agent: self,
                ctx: &ctx,
                redactor: ctx.redactor(&self.redactor),
                started: Instant::now(),
                deadline: ctx
                    .limits
                    .wall_clock
                    .map(|d| tokio::time::Instant::now() + d),
                stats: RunStats::default(),
                unseen_tmp: Vec::new(),
            };
            let outcome = match run.drive().await {
                Ok(never) => match never {},
                Err(o) => o,
            };
            info!(
                outcome = outcome.as_str(),
                invocations = outcome.stats().turns,
                "external agent run ended"
            );
            outcome
        }
        .instrument(span)
        .await
    }
}

use crate::run::Flow;

/// How one invocation ended.
enum Exit {
    Exited(std::process::ExitStatus),
    TimedOut,
    Cancelled,
    WallClock,
}

struct CmdRun<'a> {
    agent: &'a CommandAgent,
    ctx: &'a RunContext,
    redactor: Redactor,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    stats: RunStats,
    /// Paths of the last command line the sandbox does not show (see
    /// [`SandboxScope::unseen_tmp_paths`]), for the report when it fails.
    unseen_tmp: Vec<PathBuf>,
}

impl CmdRun<'_> {
    /// What a failed invocation's report adds when its command line named files in the
    /// host's `/tmp`, which the sandbox replaces.
    fn unseen_tmp_note(&self) -> String {
        if self.unseen_tmp.is_empty() {
            return String::new();
        }
        let paths: Vec<String> = self
            .unseen_tmp
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        format!(
            " (its command names {}, in the host's /tmp, which the sandbox replaces with the run's own /tmp: move it elsewhere or list its directory under the profile's sandbox.read_only)",
            paths.join(", ")
        )
    }

    fn snapshot(&self) -> RunStats {
        crate::run::stats_now(&self.stats, self.started)
    }

    fn fail(&self, reason: FailureReason, detail: impl Into<String>) -> RunOutcome {
        crate::run::failed(reason, detail.into(), self.snapshot())
    }

    async fn record(&self, event: AgentEvent) -> Flow<()> {
        crate::run::record_or_fail(self.ctx.events.as_ref(), event, || self.snapshot()).await
    }

    async fn current(&self) -> Flow<StepStatus> {
        tokio::select! {
            biased;
            _ = self.ctx.cancel.cancelled() => Err(RunOutcome::Cancelled { stats: self.snapshot() }),
            r = self.ctx.driver.current() => r.map_err(|e| self.fail(FailureReason::StepDriverFailed, e.to_string())),
        }
    }

    async fn drive(&mut self) -> Flow<std::convert::Infallible> {
        let cfg = &self.agent.config;
        self.record(AgentEvent::RunStarted {
            runner: RunnerKind::Command,
            detail: cfg.program.clone(),
        })
        .await?;
        let mut step = match self.current().await? {
            StepStatus::Active(b) => *b,
            StepStatus::Parked => {
                return Err(RunOutcome::Parked {
                    stats: self.snapshot(),
                });
            }
            StepStatus::Complete => {
                return Err(RunOutcome::Completed {
                    stats: self.snapshot(),
                });
            }
        };
        // The relay is this very binary: it must be visible wherever it is installed.
        let mut policy = cfg.sandbox.clone();
        policy.read_only.push(self.agent.worktrain_bin());
        let scope = match self.ctx.sandbox_scope(&policy) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(FailureReason::ConfigInvalid, e.to_string())),
        };
        let _relay = self.start_relay(&scope)?;
        let mcp_file = self.write_mcp_config(&scope)?;
        let rules = prompt::rules_files(&self.ctx.worktree, &cfg.rules_files, 32 * 1024);
        let mut nudges = 0u32;
        let mut nudge: Option<String> = self
            .ctx
            .resume_note
            .as_ref()
            .map(|n| format!("Note from worktrain: {n}"));
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(RunOutcome::Cancelled {
                    stats: self.snapshot(),
                });
            }
            if let Some(max) = self.ctx.limits.max_turns
                && self.stats.turns >= max
            {
                return Err(self.fail(
                    FailureReason::TurnLimitExceeded,
                    format!("{} invocations; the limit is {max}", self.stats.turns),
                ));
            }
            let mut extra: Vec<String> = nudge.take().into_iter().collect();
            let steer = self.ctx.steering.drain();
            if !steer.is_empty() {
                self.record(AgentEvent::SteeringDelivered {
                    messages: steer.len() as u32,
                })
                .await?;
                extra.extend(
                    steer
                        .into_iter()
                        .map(|m| format!("Message from the operator: {m}")),
                );
            }
            let text =
                prompt::external_prompt(&cfg.preamble, &self.ctx.worktree, &rules, &step, &extra);
            let text = self.redactor.redact_for_model(&text).into_owned();
            let exit = self.invoke(&scope, &text, &mcp_file).await?;
            let failed_exit = match exit {
                Exit::Cancelled => {
                    return Err(RunOutcome::Cancelled {
                        stats: self.snapshot(),
                    });
                }
                Exit::WallClock => {
                    return Err(self.fail(
                        FailureReason::WallClockExceeded,
                        "the run's wall-clock limit was reached",
                    ));
                }
                Exit::TimedOut => Some("was killed at the invocation timeout".to_owned()),
                Exit::Exited(st) if st.success() => None,
                Exit::Exited(st) => Some(format!("exited with {st}{}", self.unseen_tmp_note())),
            };
            match self.current().await? {
                StepStatus::Complete => {
                    return Err(RunOutcome::Completed {
                        stats: self.snapshot(),
                    });
                }
                StepStatus::Parked => {
                    return Err(RunOutcome::Parked {
                        stats: self.snapshot(),
                    });
                }
                StepStatus::Active(next) if next.key != step.key => {
                    info!(from = %step.key, to = %next.key, "external agent made progress");
                    self.stats.steps_completed += 1;
                    step = *next;
                    nudges = 0;
                }
                StepStatus::Active(same) => {
                    if nudges >= cfg.max_nudges {
                        let (reason, how) = match &failed_exit {
                            Some(how) => (FailureReason::AgentProcessFailed, how.clone()),
                            None => (FailureReason::AgentStoppedEarly, "exited 0".to_owned()),
                        };
                        return Err(self.fail(
                            reason,
                            format!(
                                "the agent {how} without completing step {:?}, also after {nudges} nudge(s)",
                                same.title
                            ),
                        ));
                    }
                    nudges += 1;
                    self.stats.nudges += 1;
                    self.record(AgentEvent::Nudged {
                        reason: NudgeReason::StoppedEarly,
                        count: nudges,
                    })
                    .await?;
                    nudge = Some(format!(
                        "worktrain: your previous run {} without submitting this step. The workflow is not complete. \
                         Do the step and submit it with the worktrain MCP tools before you finish.",
                        failed_exit.as_deref().unwrap_or("ended")
                    ));
                    step = *same;
                }
            }
        }
    }

    /// Write the MCP config into the run's private temp dir (0600, removed with it);
    /// returns its path as the command sees it.
    fn write_mcp_config(&self, scope: &SandboxScope) -> Flow<PathBuf> {
        let socket = scope.tmp_inside().join(RELAY_SOCKET);
        let body = self.agent.mcp_config(&self.ctx.session_id, &socket);
        let host = scope.tmp_host().join(MCP_CONFIG_FILE);
        let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&host)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| {
                self.fail(
                    FailureReason::ConfigInvalid,
                    format!("cannot write the MCP config file: {e}"),
                )
            })?;
        Ok(scope.tmp_inside().join(MCP_CONFIG_FILE))
    }

    /// Listen on the relay socket in the run's temp dir; every connection is served by
    /// `worktrain mcp` (session-bound) outside the sandbox. Stops when dropped.
    fn start_relay(&self, scope: &SandboxScope) -> Flow<AbortOnDrop> {
        let path = scope.tmp_host().join(RELAY_SOCKET);
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
            self.fail(
                FailureReason::ConfigInvalid,
                format!(
                    "cannot listen on the MCP relay socket {}: {e}",
                    path.display()
                ),
            )
        })?;
        let cfg = &self.agent.config;
        let server = RelayServer {
            program: self.agent.worktrain_bin(),
            args: cfg.mcp_args.clone(),
            env: cfg.mcp_env.clone(),
            session: self.ctx.session_id.clone(),
        };
        Ok(AbortOnDrop(tokio::spawn(serve_relay(listener, server))))
    }

    fn expand(&self, arg: &str, prompt: &str, mcp: &std::path::Path) -> String {
        arg.replace("{mcp_config}", &mcp.display().to_string())
            .replace("{session_id}", &self.ctx.session_id)
            .replace("{worktree}", &self.ctx.worktree.display().to_string())
            .replace(
                "{worktrain_bin}",
                &self.agent.worktrain_bin().display().to_string(),
            )
            .replace("{prompt}", prompt)
    }

    /// One invocation: spawn (in the sandbox), stream output to the sink, tick the
    /// heartbeat, wait.
    async fn invoke(
        &mut self,
        scope: &SandboxScope,
        prompt_text: &str,
        mcp: &std::path::Path,
    ) -> Flow<Exit> {
        let cfg = &self.agent.config;
        self.stats.turns += 1;
        let invocation = self.stats.turns;
        let by_arg = cfg.prompt == PromptDelivery::Arg;
        let mut args: Vec<String> = cfg
            .args
            .iter()
            .map(|a| self.expand(a, if by_arg { prompt_text } else { "" }, mcp))
            .collect();
        if by_arg && !cfg.args.iter().any(|a| a.contains("{prompt}")) {
            args.push(prompt_text.to_owned());
        }
        let shown: Vec<String> =
            std::iter::once(cfg.program.clone())
                .chain(cfg.args.iter().map(|a| {
                    self.expand(a, &format!("<prompt: {} bytes>", prompt_text.len()), mcp)
                }))
                .collect();
        let mut env = cfg.env.clone();
        if let Some(var) = &cfg.mcp_config_env {
            env.insert(var.clone(), mcp.display().to_string());
        }
        let input = if by_arg { Input::Null } else { Input::Piped };
        self.unseen_tmp = scope.unseen_tmp_paths(
            std::iter::once(cfg.program.as_str()).chain(args.iter().map(String::as_str)),
        );
        let mut cmd = scope.command(&cfg.program, &args, &env, &input);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Err(self.fail(
                    FailureReason::AgentProcessFailed,
                    format!("cannot start {}: {e}", cfg.program),
                ));
            }
        };
        let group = GroupKill::new(child.id());
        self.record(AgentEvent::ProcessStarted {
            command: self.redactor.redact(&shown.join(" ")).into_owned(),
            pid: child.id(),
            invocation,
        })
        .await?;
        if let Some(mut stdin) = child.stdin.take() {
            let bytes = prompt_text.as_bytes().to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
                let _ = stdin.shutdown().await;
            });
        }
        let (tx, mut rx) = mpsc::channel::<(OutputStream, Vec<u8>)>(64);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, OutputStream::Stdout, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, OutputStream::Stderr, tx.clone()));
        }
        drop(tx);

        let t0 = Instant::now();
        let mut out = OutputBuffer::new(cfg.output_chunk_bytes, cfg.max_output_bytes);
        let mut ticker = tokio::time::interval(
            cfg.heartbeat_interval
                .min(cfg.output_flush)
                .max(Duration::from_millis(1)),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = Instant::now();
        self.ctx.heartbeat.tick();
        let deadline = self.deadline;
        let inv_deadline = cfg
            .invocation_timeout
            .map(|d| tokio::time::Instant::now() + d);
        let sleep_until = |d: Option<tokio::time::Instant>| async move {
            match d {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        let wall = sleep_until(deadline);
        let inv = sleep_until(inv_deadline);
        tokio::pin!(wall, inv);
        let mut rx_open = true;
        let exit = loop {
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => break Exit::Cancelled,
                _ = &mut wall => break Exit::WallClock,
                _ = &mut inv => break Exit::TimedOut,
                st = child.wait() => match st {
                    Ok(st) => break Exit::Exited(st),
                    Err(e) => {
                        return Err(self.fail(FailureReason::AgentProcessFailed, format!("cannot wait for {}: {e}", cfg.program)));
                    }
                },
                msg = rx.recv(), if rx_open => match msg {
                    Some((stream, bytes)) => {
                        for ev in out.push(stream, &bytes) {
                            self.emit(ev).await?;
                        }
                    }
                    None => rx_open = false,
                },
                _ = ticker.tick() => {
                    if last_beat.elapsed() >= cfg.heartbeat_interval {
                        self.ctx.heartbeat.tick();
                        last_beat = Instant::now();
                    }
                    if out.due(cfg.output_flush) {
                        for ev in out.flush() {
                            self.emit(ev).await?;
                        }
                    }
                }
            }
        };
        let killed = !matches!(exit, Exit::Exited(_));
        if killed {
            group.terminate();
            if tokio::time::timeout(cfg.kill_grace, child.wait())
                .await
                .is_err()
            {
                group.kill();
                let _ = child.wait().await;
            }
        }
        // Leftovers in the group would keep the pipes open.
        group.kill();
        let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
        while rx_open {
            match tokio::time::timeout_at(drain_until, rx.recv()).await {
                Ok(Some((stream, bytes))) => {
                    for ev in out.push(stream, &bytes) {
                        self.emit(ev).await?;
                    }
                }
                Ok(None) | Err(_) => rx_open = false,
            }
        }
        for ev in out.flush() {
            self.emit(ev).await?;
        }
        let code = match &exit {
            Exit::Exited(st) => st.code(),
            Exit::TimedOut | Exit::Cancelled | Exit::WallClock => None,
        };
        self.record(AgentEvent::ProcessExited {
            code,
            killed,
            duration_ms: t0.elapsed().as_millis() as u64,
        })
        .await?;
        self.ctx.heartbeat.tick();
        Ok(exit)
    }

    async fn emit(&self, (stream, text): (OutputStream, String)) -> Flow<()> {
        let text = self.redactor.redact(&text).into_owned();
        self.record(AgentEvent::Output { stream, text }).await
    }
}

async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    stream: OutputStream,
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Batches output into chunks, cut at line ends where possible, bounded in total.
struct OutputBuffer {
    chunk: usize,
    max: usize,
    recorded: usize,
    truncated: bool,
    pending: Vec<(OutputStream, Vec<u8>)>,
    since: Option<Instant>,
}

impl OutputBuffer {
    fn new(chunk: usize, max: usize) -> Self {
        Self {
            chunk: chunk.max(64),
            max,
            recorded: 0,
            truncated: false,
            pending: Vec::new(),
            since: None,
        }
    }

    fn push(&mut self, stream: OutputStream, bytes: &[u8]) -> Vec<(OutputStream, String)> {
        if self.truncated {
            return Vec::new();
        }
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        match self.pending.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, buf)) => buf.extend_from_slice(bytes),
            None => self.pending.push((stream, bytes.to_vec())),
        }
        let mut out = Vec::new();
        for (s, buf) in &mut self.pending {
            while buf.len() >= self.chunk {
                // Cut after the last newline within the chunk, else at the chunk size.
                let cut = buf[..self.chunk]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(self.chunk, |i| i + 1);
                let piece: Vec<u8> = buf.drain(..cut).collect();
                out.push((*s, String::from_utf8_lossy(&piece).into_owned()));
            }
        }
        self.limit(out)
    }

    fn due(&self, every: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= every)
    }

    fn flush(&mut self) -> Vec<(OutputStream, String)> {
        self.since = None;
        let out: Vec<(OutputStream, String)> = self
            .pending
            .iter_mut()
            .filter(|(_, b)| !b.is_empty())
            .map(|(s, b)| (*s, String::from_utf8_lossy(&std::mem::take(b)).into_owned()))
            .collect();
        self.limit(out)
    }

    fn limit(&mut self, evs: Vec<(OutputStream, String)>) -> Vec<(OutputStream, String)> {
        let mut out = Vec::new();
        for (s, t) in evs {
            if self.truncated {
                break;
            }
            if self.recorded + t.len() > self.max {
                self.truncated = true;
                out.push((
                    s,
                    format!("[... output truncated after {} bytes ...]", self.recorded),
                ));
                self.pending.clear();
                break;
            }
            self.recorded += t.len();
            out.push((s, t));
        }
        out
    }
}

/// File name of the MCP config in the run's temp dir.
const MCP_CONFIG_FILE: &str = "worktrain-mcp.json";
/// File name of the relay socket in the run's temp dir.
const RELAY_SOCKET: &str = "worktrain-mcp.sock";
/// How long a relay connection waits for the server's last answers after the agent
/// closed its side.
const RELAY_LINGER: Duration = Duration::from_secs(3);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a relay connection is served: worktrain's own MCP server, outside the sandbox.
#[derive(Debug, Clone)]
struct RelayServer {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    session: String,
}

/// Accept relay connections until aborted; each one gets its own MCP server process,
/// killed when the connection or the relay ends.
async fn serve_relay(listener: tokio::net::UnixListener, server: RelayServer) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            break;
        };
        let server = server.clone();
        connections.spawn(async move {
            if let Err(e) = relay_one(stream, &server).await {
                tracing::warn!(session_id = %server.session, error = %e, "MCP relay connection failed");
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn relay_one(stream: tokio::net::UnixStream, server: &RelayServer) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new(&server.program)
        .args(&server.args)
        .envs(&server.env)
        .env(crate::sandbox::SESSION_ENV, &server.session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut to_server), Some(mut from_server)) = (child.stdin.take(), child.stdout.take())
    else {
        return Err(std::io::Error::other("the MCP server has no stdio"));
    };
    let (mut from_agent, mut to_agent) = stream.into_split();
    let upstream = async {
        let r = tokio::io::copy(&mut from_agent, &mut to_server).await;
        let _ = to_server.shutdown().await;
        r
    };
    let downstream = async {
        let r = tokio::io::copy(&mut from_server, &mut to_agent).await;
        let _ = to_agent.shutdown().await;
        r
    };
    // The server closing its output ends the connection. The agent closing its side
    // ends the server's input; the server's last answers may still be on their way, so
    // they get a moment, then the server is killed (on drop).
    tokio::pin!(upstream, downstream);
    tokio::select! {
        r = &mut downstream => return r.map(drop),
        r = &mut upstream => { r?; }
    }
    let _ = tokio::time::timeout(RELAY_LINGER, &mut downstream).await;
    Ok(())
}
