//! Runs: a session driven by an agent under the daemon. A run is queued, claimed by a
//! worker, executed, and finishes completed, failed (with a typed reason) or cancelled —
//! or is interrupted and resumed after a restart. Every transition is an event.

use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for capacity.
    Queued,
    /// Claimed by a worker; the agent is working.
    Running,
    /// The workflow is parked at a gate; the run resumes on approval.
    Parked,
    /// Stopped by a shutdown or an expired lease; will be resumed or failed.
    Interrupted,
    /// The workflow completed.
    Completed,
    /// Ended without completing.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl RunState {
    /// Every state, for filters and metrics.
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Parked,
        RunState::Interrupted,
        RunState::Completed,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Parked => "parked",
            RunState::Interrupted => "interrupted",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the run has ended for good (until a retry).
    pub fn is_final(self) -> bool {
        match self {
            RunState::Completed | RunState::Failed | RunState::Cancelled => true,
            RunState::Queued | RunState::Running | RunState::Parked | RunState::Interrupted => {
                false
            }
        }
    }
}

/// Why a run failed. Agent-side reasons come from the agent runner; the rest from the
/// supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The agent stopped without finishing the workflow, also after a nudge.
    AgentStoppedEarly,
    /// The same tool call failed the same way again after a nudge.
    RepeatedToolFailure,
    /// Most tool calls failed or were denied.
    ToolErrorsDominated,
    /// The agent reported an issue it cannot get past.
    AgentReportedBlocker,
    /// The wall-clock budget ran out.
    WallClockExceeded,
    /// The turn budget ran out.
    TurnLimitExceeded,
    /// The token budget ran out.
    TokenLimitExceeded,
    /// The cost budget ran out.
    CostLimitExceeded,
    /// The LLM could not be reached or refused the request (after retries).
    LlmUnavailable,
    /// The external agent process could not be started or crashed without progress.
    AgentProcessFailed,
    /// The step driver failed (store failure, session gone).
    StepDriverFailed,
    /// Events could not be recorded.
    RecordingFailed,
    /// The run's configuration cannot work.
    ConfigInvalid,
    /// The run's agent profile cannot be used as configured (e.g. its API key variable
    /// is unset); the daemon serves everything else meanwhile.
    AgentUnavailable,
    /// The worktree could not be created or prepared.
    WorktreeFailed,
    /// A `setup` or `before_run` workspace hook failed or timed out.
    HookFailed,
    /// The run was interrupted more often than the recovery policy allows.
    TooManyInterruptions,
    /// The operator's kill switch stopped it.
    Killed,
    /// The workflow completed but a delivery stage failed (see the run's `delivery`).
    DeliveryFailed,
}

impl FailureReason {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::AgentStoppedEarly => "agent_stopped_early",
            FailureReason::RepeatedToolFailure => "repeated_tool_failure",
            FailureReason::ToolErrorsDominated => "tool_errors_dominated",
            FailureReason::AgentReportedBlocker => "agent_reported_blocker",
            FailureReason::WallClockExceeded => "wall_clock_exceeded",
            FailureReason::TurnLimitExceeded => "turn_limit_exceeded",
            FailureReason::TokenLimitExceeded => "token_limit_exceeded",
            FailureReason::CostLimitExceeded => "cost_limit_exceeded",
            FailureReason::LlmUnavailable => "llm_unavailable",
            FailureReason::AgentProcessFailed => "agent_process_failed",
            FailureReason::StepDriverFailed => "step_driver_failed",
            FailureReason::RecordingFailed => "recording_failed",
            FailureReason::ConfigInvalid => "config_invalid",
            FailureReason::AgentUnavailable => "agent_unavailable",
            FailureReason::WorktreeFailed => "worktree_failed",
            FailureReason::HookFailed => "hook_failed",
            FailureReason::TooManyInterruptions => "too_many_interruptions",
            FailureReason::Killed => "killed",
            FailureReason::DeliveryFailed => "delivery_failed",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The workflow completed.
    Completed,
    /// Ended without completing.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
    /// The workflow parked at a gate; the run resumes after approval.
    Parked,
}

/// Why a run was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptReason {
    /// The daemon shut down gracefully.
    Shutdown,
    /// The worker's lease expired (the daemon died).
    LeaseExpired,
}

/// Why a finished or interrupted run was queued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueReason {
    /// Recovery after an interruption: the agent re-enters the current step.
    Resume,
    /// An operator asked to retry a failed or cancelled run.
    Retry,
    /// A parked step was approved or rejected: the agent continues.
    GateDecided,
    /// An operator asked to retry the delivery of a completed session
    /// (`worktrain session retry-delivery`): it continues from the stage that failed.
    Delivery,
}

/// What started a run: the kind of source, the trigger's id, and — for runs started by a
/// configured trigger — the snapshot of that trigger's settings the run keeps even when
/// `triggers.yml` changes later (the source item, delivery settings, workspace hooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Trigger {
    /// Kind of source.
    pub kind: TriggerKind,
    /// The trigger's configured id or the caller's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The outside item the run works on (`github:owner/repo#123`), used for dedupe,
    /// reconciliation and reporting back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// What to do with the finished work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Box<DeliverySettings>>,
    /// Commands run around the agent in the session's worktree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Box<WorkspaceHooks>>,
}

impl Trigger {
    /// A trigger of `kind` with an optional id and nothing else.
    pub fn new(kind: TriggerKind, id: Option<String>) -> Self {
        Self {
            kind,
            id,
            source: None,
            delivery: None,
            hooks: None,
        }
    }
}

/// Identity of an outside item a session works on, as text:
///
/// * `github:owner/repo#123` — a GitHub issue or pull request (one number space);
/// * `gitlab:group/project#12` — a GitLab issue; `gitlab:group/project!7` — a merge request;
/// * `github:owner/repo@<ref>:<sha>` / `gitlab:…@<ref>:<sha>` — a push;
/// * `webhook:<trigger>:<id>` — an item of a generic webhook;
/// * `schedule:<trigger>@<time>` — one scheduled firing.
///
/// Two events about the same item carry the same `SourceRef`, whichever trigger or
/// provider (webhook or poll) saw them: that is what dedupe keys on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceRef(String);

/// A forge that hosts issues and pull/merge requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeKind {
    /// GitHub (github.com or Enterprise Server).
    Github,
    /// GitLab (gitlab.com or self-managed).
    Gitlab,
}

impl ForgeKind {
    /// Wire name (`github`, `gitlab`).
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
        }
    }
}

/// What kind of forge item a [`SourceRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A GitHub issue or pull request (GitHub numbers both in one space).
    IssueOrPull,
    /// A GitLab issue.
    Issue,
    /// A GitLab merge request.
    MergeRequest,
}

/// The parts of a [`SourceRef`] naming an issue, pull request or merge request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForgeItem {
    /// Which forge hosts the item (GitHub or GitLab).
    pub forge: ForgeKind,
    /// `owner/repo` (GitHub) or the project's full path (GitLab).
    pub repo: String,
    /// Issue, PR or MR.
    pub kind: ItemKind,
    /// The number (GitHub) or iid (GitLab).
    pub number: u64,
}

impl SourceRef {
    /// Parse and check the text form (non-empty, `scheme:rest`, no whitespace).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(format!(
                "source `{text}` has no scheme (expected e.g. `github:owner/repo#123`)"
            ));
        };
        if scheme.is_empty() || rest.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(format!(
                "source `{text}` is malformed (expected e.g. `github:owner/repo#123`, no spaces)"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// `github:owner/repo#123`, `gitlab:group/project#12` or `gitlab:group/project!7`.
    pub fn item(forge: ForgeKind, repo: &str, kind: ItemKind, number: u64) -> Self {
        let sep = match kind {
            ItemKind::IssueOrPull | ItemKind::Issue => '#',
            ItemKind::MergeRequest => '!',
        };
        Self(format!("{}:{repo}{sep}{number}", forge.as_str()))
    }

    /// A source built from a scheme and free text (spaces are replaced by `_`).
    pub fn other(scheme: &str, rest: &str) -> Self {
        let rest: String = rest
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        Self(format!("{scheme}:{rest}"))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The forge item this names, when it names an issue, pull request or merge request.
    pub fn forge_item(&self) -> Option<ForgeItem> {
        let (scheme, rest) = self.0.split_once(':')?;
        let forge = match scheme {
            "github" => ForgeKind::Github,
            "gitlab" => ForgeKind::Gitlab,
            _ => return None,
        };
        let (at, sep) = rest.rfind(['#', '!']).map(|i| (i, &rest[i..=i]))?;
        let (repo, number) = (&rest[..at], rest[at + 1..].parse::<u64>().ok()?);
        if repo.is_empty() || repo.contains('@') {
            return None;
        }
        let kind = match (forge, sep) {
            (ForgeKind::Github, "#") => ItemKind::IssueOrPull,
            (ForgeKind::Gitlab, "#") => ItemKind::Issue,
            (ForgeKind::Gitlab, "!") => ItemKind::MergeRequest,
            _ => return None,
        };
        Some(ForgeItem {
            forge,
            repo: repo.to_owned(),
            kind,
            number,
        })
    }
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SourceRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SourceRef> for String {
    fn from(s: SourceRef) -> String {
        s.0
    }
}

impl schemars::JsonSchema for SourceRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceRef".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z_]+:\\S+$",
            "description": "An outside item, e.g. `github:owner/repo#123` or `gitlab:group/project!7`."
        })
    }
}

/// Where finished work goes. The delivery pipeline reads this from the run's trigger.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryTarget {
    /// Commit, push and open a pull/merge request.
    PullRequest,
    /// Commit (and push when a remote is configured); no pull request.
    #[default]
    CommitOnly,
    /// Post the session's review verdict as a review on the pull/merge request that
    /// triggered it.
    ReviewComment,
    /// POST the result as JSON to a URL, HMAC-signed.
    Webhook,
    /// Nothing is delivered.
    None,
}

/// A stage of the delivery pipeline, in the order they run. Each target runs a subset
/// (see the delivery crate's plan); a stage recorded done is never run again.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStage {
    /// Read and check the final step's `handoff` artifact.
    Handoff,
    /// Commit the work on the session branch.
    Commit,
    /// Scan the committed diff for secrets.
    SecretScan,
    /// Push the session branch to the remote.
    Push,
    /// Open (or find) the pull/merge request.
    PullRequest,
    /// Comment on the source item and set a commit status.
    ReportBack,
    /// POST the result to the delivery webhook.
    Webhook,
    /// Post the `pr_review` artifact as a review on the source pull/merge request.
    Review,
    /// Remove the worktree (the branch stays).
    Cleanup,
}

impl DeliveryStage {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStage::Handoff => "handoff",
            DeliveryStage::Commit => "commit",
            DeliveryStage::SecretScan => "secret_scan",
            DeliveryStage::Push => "push",
            DeliveryStage::PullRequest => "pull_request",
            DeliveryStage::ReportBack => "report_back",
            DeliveryStage::Webhook => "webhook",
            DeliveryStage::Review => "review",
            DeliveryStage::Cleanup => "cleanup",
        }
    }
}

impl std::fmt::Display for DeliveryStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stages are running (or were, when the daemon stopped: it continues on restart).
    Running,
    /// Every stage of the target is done.
    Delivered,
    /// A stage failed; `worktrain session retry-delivery` continues from it.
    Failed,
}

impl DeliveryTarget {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryTarget::PullRequest => "pull_request",
            DeliveryTarget::CommitOnly => "commit_only",
            DeliveryTarget::ReviewComment => "review_comment",
            DeliveryTarget::Webhook => "webhook",
            DeliveryTarget::None => "none",
        }
    }
}

/// How a secret scan finding is treated during delivery.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SecretScanPolicy {
    /// A finding stops the delivery.
    #[default]
    Block,
    /// A finding is recorded; delivery continues.
    Warn,
}

/// Which changes of the session's worktree the delivery commits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CommitScope {
    /// Exactly the files the handoff declares in `filesChanged`; any other change is kept
    /// on the branch `worktrain-undeclared/<session>`, out of the delivered commit.
    /// Without a handoff (targets `commit_only` and `none`), everything.
    #[default]
    Declared,
    /// Every change in the worktree, declared or not.
    All,
}

/// A URL the result is POSTed to (target `webhook`). The signing secret is named by its
/// environment variable, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryWebhook {
    /// Where to POST.
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// Delivery settings of a trigger (or a spawn), carried into every session it dispatches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// What happens to the finished work.
    #[serde(default)]
    pub target: DeliveryTarget,
    /// Open the pull/merge request as a draft.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
    /// Labels for the pull/merge request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Reviewers to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// Logins to assign the pull/merge request to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignees: Vec<String>,
    /// The git remote pushed to (default: the workspace's `origin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The forge identity (from `identities:` in triggers.yml) used to open the
    /// pull request and comment; by name, never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Comment on the source issue/PR/MR with the result.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub report_back: bool,
    /// Set a commit status linking to the session on the pull request's head commit.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub commit_status: bool,
    /// Secret scan policy.
    #[serde(default)]
    pub secret_scan: SecretScanPolicy,
    /// Which changes are committed: the handoff's `filesChanged` (default) or all.
    #[serde(default, skip_serializing_if = "is_declared")]
    pub commit: CommitScope,
    /// Target `webhook`: where to POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<DeliveryWebhook>,
}

impl Default for DeliverySettings {
    /// `commit_only`, reporting back and setting commit statuses (as an empty
    /// `delivery: {}` in YAML).
    fn default() -> Self {
        Self {
            target: DeliveryTarget::default(),
            draft: false,
            labels: Vec::new(),
            reviewers: Vec::new(),
            assignees: Vec::new(),
            remote: None,
            identity: None,
            report_back: true,
            commit_status: true,
            secret_scan: SecretScanPolicy::default(),
            commit: CommitScope::default(),
            webhook: None,
        }
    }
}

fn is_declared(c: &CommitScope) -> bool {
    *c == CommitScope::Declared
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The points around a run where a workspace hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// After the worktree is created (first run only), e.g. to install dependencies. A
    /// failure fails the session.
    Setup,
    /// Before every run attempt of the agent. A failure fails the session.
    BeforeRun,
    /// After every run attempt of the agent (whatever its outcome). A failure is recorded.
    AfterRun,
    /// Before the worktree is removed. A failure is recorded.
    BeforeRemove,
}

impl HookPoint {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::Setup => "setup",
            HookPoint::BeforeRun => "before_run",
            HookPoint::AfterRun => "after_run",
            HookPoint::BeforeRemove => "before_remove",
        }
    }
}

/// Shell commands run in the session's worktree around the agent, with the agent's
/// command runner (same shell, process-group kill, environment scrubbing), time-limited.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceHooks {
    /// After the worktree is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Before each run of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_run: Option<String>,
    /// After each run of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_run: Option<String>,
    /// Before the worktree is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_remove: Option<String>,
    /// Time limit of each hook, in seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl WorkspaceHooks {
    /// Default time limit of a hook.
    pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

    /// The command for `point`, if any.
    pub fn command(&self, point: HookPoint) -> Option<&str> {
        match point {
            HookPoint::Setup => self.setup.as_deref(),
            HookPoint::BeforeRun => self.before_run.as_deref(),
            HookPoint::AfterRun => self.after_run.as_deref(),
            HookPoint::BeforeRemove => self.before_remove.as_deref(),
        }
        .filter(|c| !c.trim().is_empty())
    }

    /// The time limit of each hook.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.unwrap_or(Self::DEFAULT_TIMEOUT_SECS))
    }

    /// `self`'s hooks, each falling back to `base`'s.
    pub fn or(self, base: &WorkspaceHooks) -> WorkspaceHooks {
        WorkspaceHooks {
            setup: self.setup.or_else(|| base.setup.clone()),
            before_run: self.before_run.or_else(|| base.before_run.clone()),
            after_run: self.after_run.or_else(|| base.after_run.clone()),
            before_remove: self.before_remove.or_else(|| base.before_remove.clone()),
            timeout_secs: self.timeout_secs.or(base.timeout_secs),
        }
    }
}

/// Kinds of run sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `worktrain spawn` or the HTTP API.
    Api,
    /// A parent session delegating work.
    Parent,
    /// A webhook.
    Webhook,
    /// An issue-queue poll.
    Poll,
    /// A cron schedule.
    Cron,
    /// An operator's click in the web console.
    Console,
}

/// Budgets for one run (absent = the daemon's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct RunLimits {
    /// Wall-clock budget in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_clock_secs: Option<u64>,
    /// LLM turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Token budget of one run attempt: the sum of **all four** kinds of tokens its LLM
    /// calls reported — uncached input + output + cache writes + cache reads
    /// ([`crate::activity::Usage::total`]), added up over every call of the run. Cache reads
    /// count at full weight although providers bill them at a discount, so a long,
    /// well-cached conversation reaches this budget sooner than its cost suggests; use
    /// `max_cost_usd` to bound spend. The count starts at zero for each run attempt (a
    /// resume or retry gets a fresh budget) and is checked before each LLM call, so the
    /// last call may overshoot by its own usage. Enforced by the built-in LLM loop only:
    /// an external command agent reports no token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Per tool call, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_timeout_secs: Option<u64>,
}

/// What happens to a running session whose source item no longer qualifies (closed,
/// merged, label or assignee removed).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileAction {
    /// Cancel the session.
    #[default]
    Cancel,
    /// Leave it running (the decision is still recorded).
    Keep,
}

/// What a notifier is told about: the moments of a session an operator wants to hear of.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The run completed (and its delivery, when it has one, succeeded).
    Completed,
    /// The run failed (for any reason but a failed delivery).
    Failed,
    /// The run parked at a confirmation gate until someone approves or rejects it.
    WaitingForApproval,
    /// The workflow completed but a delivery stage failed.
    DeliveryFailed,
}

impl NotifyEvent {
    /// Every event, in declaration order (the default of a notifier's `events`).
    pub const ALL: [NotifyEvent; 4] = [
        NotifyEvent::Completed,
        NotifyEvent::Failed,
        NotifyEvent::WaitingForApproval,
        NotifyEvent::DeliveryFailed,
    ];

    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Completed => "completed",
            NotifyEvent::Failed => "failed",
            NotifyEvent::WaitingForApproval => "waiting_for_approval",
            NotifyEvent::DeliveryFailed => "delivery_failed",
        }
    }
}

/// Where a notifier posts: the message format it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    /// A Slack incoming webhook (`{"text", "blocks"}`).
    Slack,
    /// A Discord webhook (`{"content"}`, at most 2000 characters).
    Discord,
    /// Any HTTP endpoint: a JSON document, HMAC-SHA256-signed like the `webhook`
    /// delivery target.
    Webhook,
}

impl NotifierKind {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Slack => "slack",
            NotifierKind::Discord => "discord",
            NotifierKind::Webhook => "webhook",
        }
    }
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFailure {
    /// The notifier's rate limit was exhausted; the message was dropped.
    RateLimited,
    /// The receiver answered with an error status (after the retries a 5xx or 429 gets).
    Rejected,
    /// The receiver could not be reached (connection refused, timeout, DNS).
    Unreachable,
}

impl NotificationFailure {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationFailure::RateLimited => "rate_limited",
            NotificationFailure::Rejected => "rejected",
            NotificationFailure::Unreachable => "unreachable",
        }
    }
}
