//! The built-in LLM agent loop: [`LlmAgent`].
//!
//! One conversation per step: the system prompt carries the product preamble, the
//! workflow guidance, the workspace rules files, the notes of earlier steps and the
//! current step; when the engine accepts a step, the next step starts a fresh
//! conversation (the notes are the memory between steps, which keeps the context bounded
//! on long workflows).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{Instrument, debug, info, info_span, warn};
use worktrain_core::activity::{ChangeDigest, OUTPUT_TAIL_CHARS, digest, tail_chars, text_digest};
use worktrain_core::machine::Submission;

use crate::driver::{DriverError, RecapItem, StepBrief, StepResult, StepStatus};
use crate::events::{
    AgentEvent, LlmTurnRecord, NudgeReason, RunnerKind, SubmitResult, ToolCallRecord,
    ToolErrorKind, ToolErrorRecord, with_heartbeat,
};
use crate::guard::{PathGuard, WorktreeGuard};
use crate::llm::{
    ChatRequest, ChatResponse, Content, LlmClient, LlmConfig, LlmError, Message, Role, StopReason,
};
use crate::prompt::{self, PromptParts};
use crate::redact::Redactor;
use crate::run::{
    AgentRunner, FailureReason, ModelPrice, PriceTable, RunContext, RunOutcome, RunStats,
};
use crate::tools::{self, COMPLETE_STEP, REPORT_ISSUE, ToolConfig, ToolEnv, ToolOutput, Toolbox};

/// How the loop reacts to an agent that misbehaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentPolicy {
    /// Nudges per step for ending a turn without a tool call; one more early stop fails
    /// the run with `agent_stopped_early`.
    pub max_nudges: u32,
    /// The same call (name + arguments) failing the same way this many times is nudged;
    /// once more fails the run with `repeated_tool_failure`.
    pub repeat_threshold: u32,
    /// Share of failed/denied tool calls that fails the run (`tool_errors_dominated`)...
    pub error_ratio: f64,
    /// ...once at least this many tool calls were made.
    pub error_ratio_min_calls: u32,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        Self {
            max_nudges: 1,
            repeat_threshold: 3,
            error_ratio: 0.8,
            error_ratio_min_calls: 8,
        }
    }
}

/// Configuration of the built-in loop (the model itself is the [`LlmClient`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmAgentConfig {
    /// Product preamble (default: [`prompt::PREAMBLE`]).
    pub preamble: String,
    /// Rules files read from the worktree root.
    pub rules_files: Vec<String>,
    /// Bytes kept of each rules file.
    pub rules_max_bytes: usize,
    /// Bytes of earlier steps' notes in the system prompt.
    pub recap_budget: usize,
    /// Prices for the cost limit and cost accounting.
    pub prices: PriceTable,
    /// How misbehaviour is handled: how many nudges an agent that stops early or repeats a
    /// failing tool call gets, and when failed tool calls fail the run.
    pub policy: AgentPolicy,
    /// Heartbeat interval while waiting on the model or a tool.
    #[serde(with = "crate::duration_serde")]
    pub heartbeat_interval: Duration,
    /// Limits of the agent's file and shell tools (bytes and entries returned, the shell used).
    pub tools: ToolConfig,
    /// Where the shell tool's commands run (default: sandboxed, no network).
    pub sandbox: crate::sandbox::SandboxPolicy,
}

impl Default for LlmAgentConfig {
    fn default() -> Self {
        Self {
            preamble: prompt::PREAMBLE.to_owned(),
            rules_files: prompt::DEFAULT_RULES_FILES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            rules_max_bytes: 32 * 1024,
            recap_budget: 32 * 1024,
            prices: PriceTable::default(),
            policy: AgentPolicy::default(),
            heartbeat_interval: Duration::from_secs(15),
            tools: ToolConfig::default(),
            sandbox: crate::sandbox::SandboxPolicy::default(),
        }
    }
}

/// The built-in agent: an LLM with worktrain's tools. See [`AgentRunner`].
pub struct LlmAgent {
    client: Arc<dyn LlmClient>,
    config: LlmAgentConfig,
    toolbox: Toolbox,
    redactor: Redactor,
}

impl std::fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmAgent")
            .field("provider", &self.client.provider())
            .field("model", &self.client.model())
            .finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// An agent over `client`.
    pub fn new(client: Arc<dyn LlmClient>, config: LlmAgentConfig) -> Self {
        let toolbox = Toolbox::new(config.tools.clone());
        Self {
            client,
            config,
            toolbox,
            redactor: Redactor::new(),
        }
    }

    /// An agent for a provider config: builds the client and redacts the key everywhere
    /// (the shell never sees it: its environment is the sandbox's allowlist).
    pub fn from_llm_config(llm: &LlmConfig, config: LlmAgentConfig) -> Result<Self, LlmError> {
        let client = llm.build()?;
        let toolbox = Toolbox::new(config.tools.clone());
        let mut redactor = Redactor::new();
        if let Some(key) = llm.api_key.resolve()? {
            redactor = redactor.with_literal(key.expose());
        }
        Ok(Self {
            client,
            config,
            toolbox,
            redactor,
        })
    }

    /// Also redact this literal secret from everything sent to the model or recorded.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.redactor = self.redactor.with_literal(secret);
        self
    }

    /// The config.
    pub fn config(&self) -> &LlmAgentConfig {
        &self.config
    }
}

#[async_trait]
impl AgentRunner for LlmAgent {
    fn sandbox_mode(&self) -> crate::sandbox::SandboxMode {
        self.config.sandbox.mode
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let span = info_span!("agent_run", session_id = %ctx.session_id, runner = "llm", model = %self.client.model());
        async move {
            let started = Instant::now();
            let mut run = match Run::new(self, &ctx, started) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let outcome = match run.drive().await {
                Ok(never) => match never {},
                Err(o) => o,
            };
            info!(
                outcome = outcome.as_str(),
                turns = outcome.stats().turns,
                tokens = outcome.stats().usage.total(),
                "agent run ended"
            );
            outcome
        }
        .instrument(span)
        .await
    }
}

use crate::run::Flow;

/// Arguments of `report_issue`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueArgs {
    title: String,
    details: String,
    #[serde(default)]
    blocking: bool,
}

/// What a tool call did to the step.
enum StepMove {
    Stay,
    Advanced(Box<StepBrief>),
}

struct Run<'a> {
    agent: &'a LlmAgent,
    ctx: &'a RunContext,
    guard: Arc<dyn PathGuard>,
    scope: Arc<crate::sandbox::SandboxScope>,
    redactor: Redactor,
    rules: Vec<(String, String)>,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    price: Option<ModelPrice>,
    stats: RunStats,
    denials: u32,
    recap: Vec<RecapItem>,
    resume_note: Option<String>,
    // Per step.
    early_nudges: u32,
    failures: HashMap<String, u32>,
    repeat_nudged: HashSet<String>,
}

impl<'a> Run<'a> {
    fn new(agent: &'a LlmAgent, ctx: &'a RunContext, started: Instant) -> Flow<Self> {
        let early = |reason: FailureReason, detail: String| {
            warn!(reason = reason.as_str(), %detail, "agent run cannot start");
            RunOutcome::Failed {
                reason,
                detail,
                stats: RunStats {
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..RunStats::default()
                },
            }
        };
        let guard: Arc<dyn PathGuard> = match &ctx.guard {
            Some(g) => g.clone(),
            None => match WorktreeGuard::new(&ctx.worktree) {
                Ok(g) => Arc::new(g),
                Err(e) => {
                    return Err(early(
                        FailureReason::ConfigInvalid,
                        format!("worktree {} is not usable: {e}", ctx.worktree.display()),
                    ));
                }
            },
        };
        let scope = match ctx.sandbox_scope(&agent.config.sandbox) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(early(FailureReason::ConfigInvalid, e.to_string())),
        };
        let price = agent.config.prices.price(agent.client.model()).copied();
        if ctx.limits.max_cost_usd.is_some() && price.is_none() {
            return Err(early(
                FailureReason::ConfigInvalid,
                format!(
                    "a cost limit is set but model {} has no price in the price table",
                    agent.client.model()
                ),
            ));
        }
        let rules = prompt::rules_files(
            guard.root(),
            &agent.config.rules_files,
            agent.config.rules_max_bytes,
        );
        Ok(Run {
            agent,
            ctx,
            guard,
            scope,
            redactor: ctx.redactor(&agent.redactor),
            rules,
            started,
            deadline: ctx
                .limits
                .wall_clock
                .map(|d| tokio::time::Instant::now() + d),
            price,
            stats: RunStats::default(),
            denials: 0,
            recap: Vec::new(),
            resume_note: ctx.resume_note.clone(),
            early_nudges: 0,
            failures: HashMap::new(),
            repeat_nudged: HashSet::new(),
        })
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

    /// Await `fut` while ticking the heartbeat; stop on cancellation or the wall clock.
    async fn guarded<F: std::future::Future>(&self, fut: F) -> Flow<F::Output> {
        let deadline = self.deadline;
        let wall = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.ctx.cancel.cancelled() => Err(RunOutcome::Cancelled { stats: self.snapshot() }),
            _ = wall => Err(self.fail(FailureReason::WallClockExceeded, "the run's wall-clock limit was reached")),
            out = with_heartbeat(&*self.ctx.heartbeat, self.agent.config.heartbeat_interval, fut) => Ok(out),
        }
    }

    /// Digests of what a file-changing tool replaced (redacted first, so a digest never
    /// stands for a secret).
    fn change_digest(&self, name: &str, input: &Value) -> Option<ChangeDigest> {
        let s = |k: &str| input.get(k).and_then(Value::as_str);
        let r = |t: &str| text_digest(&self.agent.redactor.redact(t));
        let path = s("path")?.to_owned();
        match name {
            "write_file" => Some(ChangeDigest {
                path,
                before: None,
                after: r(s("content")?),
            }),
            "edit_file" => Some(ChangeDigest {
                path,
                before: s("old_string").map(r),
                after: r(s("new_string")?),
            }),
            _ => None,
        }
    }

    fn check_budget(&self) -> Flow<()> {
        let l = &self.ctx.limits;
        if self.ctx.cancel.is_cancelled() {
            return Err(RunOutcome::Cancelled {
                stats: self.snapshot(),
            });
        }
        if let Some(d) = self.deadline
            && tokio::time::Instant::now() >= d
        {
            return Err(self.fail(
                FailureReason::WallClockExceeded,
                "the run's wall-clock limit was reached",
            ));
        }
        if let Some(max) = l.max_tokens
            && self.stats.usage.total() >= max
        {
            return Err(self.fail(
                FailureReason::TokenLimitExceeded,
                format!(
                    "{} tokens used; the limit is {max}",
                    self.stats.usage.total()
                ),
            ));
        }
        if let Some(max) = l.max_cost_usd
            && self.stats.cost_usd >= max
        {
            return Err(self.fail(
                FailureReason::CostLimitExceeded,
                format!("${:.4} spent; the limit is ${max:.4}", self.stats.cost_usd),
            ));
        }
        Ok(())
    }

    fn for_model(&self, text: &str) -> String {
        self.redactor.redact_for_model(text).into_owned()
    }

    fn reset_step(&mut self) {
        self.early_nudges = 0;
        self.failures.clear();
        self.repeat_nudged.clear();
    }

    /// The whole run. Only ever returns through `Err(outcome)`.
    async fn drive(&mut self) -> Flow<std::convert::Infallible> {
        self.record(AgentEvent::RunStarted {
            runner: RunnerKind::Llm,
            detail: self.agent.client.model().to_owned(),
        })
        .await?;
        let status = self
            .guarded(self.ctx.driver.current())
            .await?
            .map_err(|e| self.fail(FailureReason::StepDriverFailed, e.to_string()))?;
        let mut step = match status {
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
        self.recap = step.recap.clone();
        loop {
            step = self.run_step(step).await?;
            self.reset_step();
        }
    }

    /// One step's conversation; returns the next step when the engine accepts this one.
    async fn run_step(&mut self, step: StepBrief) -> Flow<StepBrief> {
        info!(step = %step.step_id, key = %step.key, "step started");
        let system = self.for_model(&prompt::system_prompt(&PromptParts {
            preamble: &self.agent.config.preamble,
            worktree: self.guard.root(),
            rules: &self.rules,
            recap: &self.recap,
            step: &step,
            recap_budget: self.agent.config.recap_budget,
        }));
        let kickoff = prompt::kickoff(&step, self.resume_note.take().as_deref());
        let mut messages = vec![Message::user(self.for_model(&kickoff))];
        let contract_hint = step
            .contract
            .as_ref()
            .map(|c| format!("This step's artifact kind is `{}`.", c.name));
        let tool_specs = tools::specs(contract_hint.as_deref());
        loop {
            self.check_budget()?;
            if let Some(max) = self.ctx.limits.max_turns
                && self.stats.turns >= max
            {
                return Err(self.fail(
                    FailureReason::TurnLimitExceeded,
                    format!("{} turns used; the limit is {max}", self.stats.turns),
                ));
            }
            self.deliver_steering(&mut messages).await?;
            let request = ChatRequest {
                system: system.clone(),
                messages: messages.clone(),
                tools: tool_specs.clone(),
            };
            let t0 = Instant::now();
            let response = self
                .guarded(self.agent.client.complete(&request))
                .await?
                .map_err(|e| self.fail(FailureReason::LlmUnavailable, e.to_string()))?;
            self.account(&response, t0.elapsed()).await?;
            messages.push(Message {
                role: Role::Assistant,
                content: response.content.clone(),
            });
            self.check_budget()?;

            let calls: Vec<(String, String, Value)> = response
                .tool_calls()
                .into_iter()
                .map(|(id, name, input)| (id.to_owned(), name.to_owned(), input.clone()))
                .collect();
            if calls.is_empty() {
                let text = self.nudge_early_stop(&step, &response).await?;
                messages.push(Message::user(text));
                continue;
            }
            let mut results: Vec<Content> = Vec::new();
            let mut notes_after: Vec<String> = Vec::new();
            for (id, name, input) in calls {
                let (out, mv) = self.call_tool(&step, &name, &input).await?;
                if let StepMove::Advanced(next) = mv {
                    return Ok(*next);
                }
                if let Some(n) = self.track_failure(&name, &input, &out).await? {
                    notes_after.push(n);
                }
                results.push(Content::ToolResult {
                    tool_use_id: id,
                    content: self.for_model(&out.text),
                    is_error: out.error.is_some(),
                });
            }
            self.check_error_ratio(false)?;
            for n in notes_after {
                results.push(Content::Text(n));
            }
            messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
    }

    async fn deliver_steering(&self, messages: &mut [Message]) -> Flow<()> {
        let steer = self.ctx.steering.drain();
        if steer.is_empty() {
            return Ok(());
        }
        let n = steer.len() as u32;
        if let Some(last) = messages.last_mut() {
            for m in steer {
                last.content.push(Content::Text(
                    self.for_model(&format!("Message from the operator (via worktrain): {m}")),
                ));
            }
        }
        info!(messages = n, "steering delivered");
        self.record(AgentEvent::SteeringDelivered { messages: n })
            .await
    }

    async fn account(&mut self, r: &ChatResponse, took: Duration) -> Flow<()> {
        self.stats.turns += 1;
        self.stats.usage.add(&r.usage);
        let cost = self.price.map(|p| p.cost(&r.usage));
        if let Some(c) = cost {
            self.stats.cost_usd += c;
        }
        debug!(
            turn = self.stats.turns,
            stop = r.stop_reason.as_str(),
            input = r.usage.input_tokens,
            output = r.usage.output_tokens,
            "llm turn"
        );
        self.record(AgentEvent::LlmTurn(LlmTurnRecord {
            turn: self.stats.turns,
            model: r.model.clone(),
            usage: r.usage,
            stop_reason: r.stop_reason.as_str().to_owned(),
            duration_ms: took.as_millis() as u64,
            attempts: r.attempts,
            tool_calls: r.tool_calls().len() as u32,
            cost_usd: cost,
        }))
        .await
    }

    /// The agent ended its turn without a tool call: nudge, or fail.
    async fn nudge_early_stop(&mut self, step: &StepBrief, r: &ChatResponse) -> Flow<String> {
        if self.early_nudges >= self.agent.config.policy.max_nudges {
            let said = crate::redact::truncate_chars(&r.text(), 300);
            return Err(self.fail(
                FailureReason::AgentStoppedEarly,
                format!(
                    "the agent stopped without completing step {:?} (stop reason {}), also after {} nudge(s); last words: {said:?}",
                    step.title,
                    r.stop_reason.as_str(),
                    self.early_nudges
                ),
            ));
        }
        self.early_nudges += 1;
        self.stats.nudges += 1;
        self.record(AgentEvent::Nudged {
            reason: NudgeReason::StoppedEarly,
            count: self.early_nudges,
        })
        .await?;
        Ok(if r.stop_reason == StopReason::MaxTokens {
            "Your reply was cut off by the output limit. Keep replies short and continue with tool calls; \
             call complete_step when the step is done."
                .to_owned()
        } else {
            format!(
                "You ended your turn without calling complete_step, but the workflow is not complete. \
                 The current step is still \"{}\". Continue working with the tools and call complete_step \
                 when the step is done. If you cannot continue at all, call report_issue with blocking=true.",
                step.title
            )
        })
    }

    /// Run one tool call and record it.
    async fn call_tool(
        &mut self,
        step: &StepBrief,
        name: &str,
        input: &Value,
    ) -> Flow<(ToolOutput, StepMove)> {
        let t0 = Instant::now();
        let mut mv = StepMove::Stay;
        let mut terminal: Option<RunOutcome> = None;
        let out = match name {
            COMPLETE_STEP => {
                let (out, m, t) = self.complete_step(step, input).await?;
                mv = m;
                terminal = t;
                out
            }
            REPORT_ISSUE => self.report_issue(input).await?,
            n if Toolbox::handles(n) => {
                let env = ToolEnv {
                    guard: self.guard.clone(),
                    scope: self.scope.clone(),
                    timeout: self.ctx.limits.tool_timeout,
                };
                self.guarded(self.agent.toolbox.execute(n, input, &env))
                    .await?
            }
            other => ToolOutput::err(
                ToolErrorKind::UnknownTool,
                format!("unknown tool {other:?}; use one of the tools offered"),
            ),
        };
        let counts = name != COMPLETE_STEP && name != REPORT_ISSUE;
        if counts {
            self.stats.tool_calls += 1;
            if out.error.is_some() {
                self.stats.tool_errors += 1;
            }
            if out.error == Some(ToolErrorKind::Denied) {
                self.denials += 1;
            }
        }
        self.record(AgentEvent::ToolCall(ToolCallRecord {
            turn: self.stats.turns,
            name: name.to_owned(),
            args: self.redactor.summarize_args(name, input, 300),
            duration_ms: t0.elapsed().as_millis() as u64,
            result_bytes: out.text.len() as u64,
            exit_code: out.exit_code,
            error: out.error.map(|kind| ToolErrorRecord {
                kind,
                message: crate::redact::truncate_chars(&self.redactor.redact(&out.text), 500),
            }),
            args_digest: Some(digest(
                self.agent
                    .redactor
                    .redact_json(input)
                    .to_string()
                    .as_bytes(),
            )),
            result_digest: Some(text_digest(&self.agent.redactor.redact(&out.text))),
            change: self.change_digest(name, input),
            output_tail: out
                .exit_code
                .is_some_and(|c| c != 0)
                .then(|| tail_chars(&self.agent.redactor.redact(&out.text), OUTPUT_TAIL_CHARS)),
        }))
        .await?;
        if let Some(t) = terminal {
            return Err(t);
        }
        Ok((out, mv))
    }

    async fn complete_step(
        &mut self,
        step: &StepBrief,
        input: &Value,
    ) -> Flow<(ToolOutput, StepMove, Option<RunOutcome>)> {
        // The tool's arguments are the engine's submission shape itself (unknown keys refused).
        let args: Submission = match tools::parse_args(COMPLETE_STEP, input) {
            Ok(a) => a,
            Err(out) => return Ok((out, StepMove::Stay, None)),
        };
        let notes = args.notes.clone();
        let result = self.guarded(self.ctx.driver.complete_step(args)).await?;
        let (label, reply) = match result {
            Ok(StepResult::Advanced(next)) => {
                self.stats.steps_completed += 1;
                self.recap.push(RecapItem {
                    step_id: step.step_id.clone(),
                    title: step.title.clone(),
                    notes: notes.unwrap_or_default(),
                });
                info!(step = %step.step_id, next = %next.step_id, "step accepted");
                (
                    SubmitResult::Advanced,
                    (
                        ToolOutput::ok("Accepted. The next step follows."),
                        StepMove::Advanced(next),
                        None,
                    ),
                )
            }
            Ok(StepResult::Blocked(blockers)) => {
                info!(step = %step.step_id, blockers = blockers.len(), "step blocked");
                (
                    SubmitResult::Blocked,
                    (
                        ToolOutput::ok(format!(
                            "BLOCKED: the submission was not accepted. Fix the following, then call complete_step again:\n{}",
                            worktrain_core::event::render_blockers(&blockers, "")
                        )),
                        StepMove::Stay,
                        None,
                    ),
                )
            }
            Ok(StepResult::Complete) => {
                self.stats.steps_completed += 1;
                info!(step = %step.step_id, "workflow complete");
                let outcome = match self.check_error_ratio(true) {
                    Ok(()) => RunOutcome::Completed {
                        stats: self.snapshot(),
                    },
                    Err(o) => o,
                };
                (
                    SubmitResult::Complete,
                    (
                        ToolOutput::ok("Accepted. The workflow is complete."),
                        StepMove::Stay,
                        Some(outcome),
                    ),
                )
            }
            Ok(StepResult::Parked) => {
                self.stats.steps_completed += 1;
                info!(step = %step.step_id, "session parked at a gate");
                (
                    SubmitResult::Parked,
                    (
                        ToolOutput::ok(
                            "Accepted; the session now waits for an operator's approval.",
                        ),
                        StepMove::Stay,
                        Some(RunOutcome::Parked {
                            stats: self.snapshot(),
                        }),
                    ),
                )
            }
            Err(e @ DriverError::Refused { .. }) => (
                SubmitResult::Refused,
                (
                    ToolOutput::err(
                        ToolErrorKind::Refused,
                        format!("complete_step refused: {e}"),
                    ),
                    StepMove::Stay,
                    None,
                ),
            ),
            Err(DriverError::Failed(m)) => {
                return Err(self.fail(FailureReason::StepDriverFailed, m));
            }
        };
        self.record(AgentEvent::StepSubmitted {
            step: step.key.clone(),
            result: label,
        })
        .await?;
        Ok(reply)
    }

    async fn report_issue(&mut self, input: &Value) -> Flow<ToolOutput> {
        let a: IssueArgs = match tools::parse_args(REPORT_ISSUE, input) {
            Ok(a) => a,
            Err(out) => return Ok(out),
        };
        let details = self.redactor.redact(&a.details).into_owned();
        warn!(title = %a.title, blocking = a.blocking, "agent reported an issue");
        self.record(AgentEvent::IssueReported {
            title: a.title.clone(),
            details: details.clone(),
            blocking: a.blocking,
        })
        .await?;
        if a.blocking {
            return Err(self.fail(
                FailureReason::AgentReportedBlocker,
                format!(
                    "{}: {}",
                    a.title,
                    crate::redact::truncate_chars(&details, 500)
                ),
            ));
        }
        Ok(ToolOutput::ok(
            "Recorded for the operators. Continue with the step.",
        ))
    }

    /// Same call, same failure, again: nudge at the threshold, fail after.
    async fn track_failure(
        &mut self,
        name: &str,
        input: &Value,
        out: &ToolOutput,
    ) -> Flow<Option<String>> {
        if !out.is_failure() {
            return Ok(None);
        }
        // The first line of a shell result carries the duration; leave it out.
        let body = if name == "shell" {
            out.text.split_once('\n').map_or("", |(_, rest)| rest)
        } else {
            out.text.as_str()
        };
        let fp = format!(
            "{name}\u{0}{input}\u{0}{:?}\u{0}{:?}\u{0}{body}",
            out.error, out.exit_code
        );
        let count = {
            let c = self.failures.entry(fp.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let threshold = self.agent.config.policy.repeat_threshold.max(1);
        if count < threshold {
            return Ok(None);
        }
        if self.repeat_nudged.contains(&fp) {
            return Err(self.fail(
                FailureReason::RepeatedToolFailure,
                format!(
                    "{name} failed the same way {count} times with the same arguments ({}), also after a nudge",
                    self.redactor.summarize_args(name, input, 200)
                ),
            ));
        }
        self.repeat_nudged.insert(fp);
        self.stats.nudges += 1;
        self.record(AgentEvent::Nudged {
            reason: NudgeReason::RepeatedToolFailure,
            count,
        })
        .await?;
        Ok(Some(format!(
            "worktrain: you have made the same {name} call {count} times and it failed the same way each time. \
             Repeating it will not help. Read the error, change your approach (different arguments, another tool), \
             or call report_issue if you are stuck. Repeating it once more ends the session as failed."
        )))
    }

    /// Fail when tool errors dominate. `at_end`: the workflow just completed — also fail
    /// when every tool call was denied.
    fn check_error_ratio(&self, at_end: bool) -> Flow<()> {
        let calls = self.stats.tool_calls;
        let errors = self.stats.tool_errors;
        if calls == 0 {
            return Ok(());
        }
        let p = &self.agent.config.policy;
        let ratio = f64::from(errors) / f64::from(calls);
        let min = if at_end {
            3.min(p.error_ratio_min_calls)
        } else {
            p.error_ratio_min_calls
        };
        let all_denied = at_end && self.denials == calls;
        if all_denied || (calls >= min && ratio >= p.error_ratio) {
            return Err(self.fail(
                FailureReason::ToolErrorsDominated,
                format!(
                    "{errors} of {calls} tool calls failed ({} denied){}",
                    self.denials,
                    if at_end {
                        "; the workflow's completion is not trusted"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }
}
