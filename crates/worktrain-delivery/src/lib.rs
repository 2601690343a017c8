//! The delivery pipeline: a finished session's work becomes a commit on its branch, a
//! push, a pull/merge request filled from the repository's template, a report on the
//! source item and a commit status — as stages recorded in the session's events.
//!
//! Every stage's result is an event (`delivery_stage_completed`); a failure is
//! `delivery_failed` with the stage, the forge's or git's message and whether a retry
//! can succeed as things are. A stage recorded done never runs again, and every stage is
//! idempotent on its own (the push of an already pushed commit is a no-op; an open pull
//! request for the branch is found and reused, also when creating answers "already
//! exists"; the report-back comment carries a hidden marker and is updated), so a crash
//! between an action and its record, or a retry, never acts twice.
//!
//! The pipeline does not know the daemon or the store: it talks to a [`Host`] (the
//! daemon implements it over the engine) and to the forge through
//! [`worktrain_forge::Forge`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::{info, warn};
use worktrain_core::contract::ContractName;
use worktrain_core::event::{EventBody, StageOutcome};
use worktrain_core::ids::SessionId;
use worktrain_core::projection::DeliveryInfo;
use worktrain_core::run::{
    CommitScope, DeliverySettings, DeliveryStage, DeliveryState, DeliveryTarget, ForgeItem,
    ForgeKind, ItemKind, SecretScanPolicy, SourceRef,
};
use worktrain_forge::{
    CommitStatus, DiffSide, Forge, ForgeError, InlineComment, PullSpec, ReviewSpec, ReviewVerdict,
    StatusState,
};

pub mod change;
/// The `git` command line (see [`worktrain_git::cli`]).
pub use worktrain_git::cli as git;
pub mod notify;
pub mod secrets;
pub mod template;

/// The hidden marker of a session's comments (how an existing one is found again).
pub fn marker(session: SessionId) -> String {
    format!("<!-- worktrain:session={session} -->")
}

/// What the pipeline needs to know about the session.
#[derive(Debug, Clone)]
pub struct Job {
    /// The session whose work is delivered.
    pub session: SessionId,
    /// Its workflow id.
    pub workflow: String,
    /// Its goal (the commit subject when there is no handoff).
    pub goal: String,
    /// Delivery settings (from the trigger or the spawn).
    pub settings: DeliverySettings,
    /// The outside item the session works on.
    pub source: Option<SourceRef>,
    /// The workspace repository (the session branch lives in it).
    pub repo_dir: PathBuf,
    /// The session branch (`worktrain/<session>`); `None` outside git.
    pub branch: Option<String>,
    /// The base branch the work goes into (`main`).
    pub base: String,
    /// A link to the session in the console, when one is served.
    pub console_url: Option<String>,
}

/// A forge client with the token used for HTTPS pushes, for one identity.
#[derive(Clone)]
pub struct ForgeAccess {
    /// The forge API client, acting as this identity.
    pub client: Arc<dyn Forge>,
    /// The configured token for HTTPS pushes (`None` for App identities: the client
    /// mints an installation token, see [`push_token`]).
    pub push_token: Option<String>,
}

impl std::fmt::Debug for ForgeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeAccess")
            .field("kind", &self.client.kind())
            .finish_non_exhaustive()
    }
}

/// What the pipeline asks of whoever runs it (the daemon, over the engine).
#[async_trait]
pub trait Host: Send + Sync {
    /// The delivery as recorded so far.
    async fn delivery(&self) -> Result<Option<DeliveryInfo>, String>;
    /// Record an event on the session.
    async fn record(&self, body: EventBody) -> Result<(), String>;
    /// The session's `handoff` artifact, when a step produced one.
    async fn handoff(&self) -> Result<Option<Value>, String>;
    /// The session's last `pr_review` artifact (what the `review_comment` target posts),
    /// else its last `review_verdict` (the bundled mr-review workflow's; posted through
    /// [`pr_review_from_verdict`]), when a step produced one.
    async fn review(&self) -> Result<Option<Value>, String>;
    /// Commit what the session's worktree holds on its branch — every change, or only
    /// the declared files (see [`CommitFiles`]) — with trailers naming the session and
    /// workflow (recorded as `work_committed`). Never an empty commit: `commit: None`
    /// when nothing (declared) changed, or there is no worktree any more.
    async fn commit(
        &self,
        message: Option<String>,
        files: CommitFiles,
    ) -> Result<HostCommit, String>;
    /// Remove the session's worktree (the branch stays).
    async fn cleanup(&self) -> Result<(), String>;
    /// A forge client for `identity` (by name; `None`: the forge's default identity).
    fn forge(&self, identity: Option<&str>, forge: ForgeKind) -> Result<ForgeAccess, String>;
    /// A secret from the environment (signing secrets are named by their variable).
    fn secret(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

/// Which changes the commit stage asks the host to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitFiles {
    /// Every change of the worktree.
    All,
    /// Only these paths (the handoff's `filesChanged`; a directory covers what is under
    /// it). Other changes are kept off the session branch, on
    /// `worktrain-undeclared/<session>`.
    Declared(Vec<String>),
}

/// What the host committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCommit {
    /// The new commit on the session branch (`None`: nothing to commit).
    pub commit: Option<String>,
    /// Changed files left out because they were not declared.
    pub undeclared: Vec<String>,
    /// The branch keeping them.
    pub kept_on: Option<String>,
}

/// A stage's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again as things are can succeed.
    pub retryable: bool,
    /// Wait at least this long before trying again.
    pub retry_after: Option<Duration>,
    /// What to do.
    pub hint: Option<String>,
}

impl StageError {
    fn fatal(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
            hint: Some(hint.into()),
        }
    }

    fn from_push(remote: &str, f: &git::PushFailure) -> Self {
        let hint = match f.kind {
            git::PushFailureKind::Auth => {
                "the remote wants credentials git could not give: an HTTPS remote of the forge repository gets the identity's token; any other remote uses the daemon user's git setup (a credential helper, an SSH key or agent, `core.sshCommand`). Fix them, then retry"
            }
            git::PushFailureKind::Rejected => {
                "the remote refused the branch (worktrain never force-pushes); resolve it on the remote, then retry the delivery"
            }
            git::PushFailureKind::UntrustedCertificate => {
                "git does not trust the remote's TLS certificate: give it the certificate authority (`http.sslCAInfo` in the daemon user's git config, or `GIT_SSL_CAINFO` in the daemon's environment) — never turn verification off — then retry the delivery"
            }
            git::PushFailureKind::Other => "check the network and credentials of the remote",
        };
        Self {
            message: format!("push to `{remote}` failed: {}", f.message),
            retryable: f.kind.retryable(),
            retry_after: None,
            hint: Some(hint.into()),
        }
    }

    fn from_forge(what: &str, e: &ForgeError) -> Self {
        let retry_after = match e {
            ForgeError::RateLimited { retry_after, .. } => Some(*retry_after),
            ForgeError::Http { .. } | ForgeError::Network(_) | ForgeError::Invalid(_) => None,
        };
        let hint = match e {
            ForgeError::Http { hint, .. } => hint.clone(),
            ForgeError::RateLimited { .. } | ForgeError::Network(_) => Some(
                "retried automatically; `worktrain session retry-delivery` tries again later"
                    .into(),
            ),
            ForgeError::Invalid(_) => None,
        };
        Self {
            message: format!("{what}: {e}"),
            retryable: e.is_retryable(),
            retry_after,
            hint,
        }
    }
}

/// How often a retryable stage is tried within one delivery attempt, and the longest
/// wait between tries (longer `Retry-After`s end the attempt: the failure is recorded
/// as retryable).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per stage.
    pub tries: u32,
    /// First backoff (doubled each time).
    pub backoff: Duration,
    /// Longest wait allowed between tries: when the next backoff or the forge's `Retry-After`
    /// would exceed it, the stage fails now instead of waiting.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            tries: 3,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// The stages a target runs, in order.
pub fn plan(settings: &DeliverySettings) -> Vec<DeliveryStage> {
    use DeliveryStage as S;
    let push = settings.remote.is_some();
    match settings.target {
        DeliveryTarget::PullRequest => vec![
            S::Handoff,
            S::Commit,
            S::SecretScan,
            S::Push,
            S::PullRequest,
            S::ReportBack,
            S::Cleanup,
        ],
        DeliveryTarget::CommitOnly => {
            let mut v = vec![S::Handoff, S::Commit];
            if push {
                v.extend([S::SecretScan, S::Push]);
            }
            v.push(S::Cleanup);
            v
        }
        DeliveryTarget::Webhook => {
            let mut v = vec![S::Handoff, S::Commit, S::SecretScan];
            if push {
                v.push(S::Push);
            }
            v.extend([S::Webhook, S::Cleanup]);
            v
        }
        // Not delivered anywhere, but never lost: the work is a commit on the branch.
        DeliveryTarget::None => vec![S::Commit, S::Cleanup],
        // Nothing is pushed or opened: the review goes on the source pull request. What
        // the session changed anyway stays a local commit on its branch (never lost).
        DeliveryTarget::ReviewComment => vec![S::Handoff, S::Commit, S::Review, S::Cleanup],
    }
}

/// Settings that cannot work, said before a session is dispatched with them.
pub fn check(settings: &DeliverySettings) -> Result<(), String> {
    match settings.target {
        DeliveryTarget::Webhook if settings.webhook.is_none() => {
            Err("delivery target `webhook` needs `webhook: {url: …, secret_env: …}`".into())
        }
        DeliveryTarget::ReviewComment => Ok(()),
        DeliveryTarget::PullRequest
        | DeliveryTarget::CommitOnly
        | DeliveryTarget::Webhook
        | DeliveryTarget::None => Ok(()),
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every stage is done.
    Delivered(DeliveryInfo),
    /// A stage failed (recorded as `delivery_failed`).
    Failed(DeliveryInfo),
}

/// A failure of the host (recording, reading): the delivery cannot continue now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery could not be recorded: {0}")]
pub struct HostError(pub String);

/// Run (or continue) the delivery of `job`: every stage of its plan not recorded done,
/// in order, each recorded. Already delivered: nothing happens.
pub async fn deliver(job: &Job, host: &dyn Host, retry: RetryPolicy) -> Result<Outcome, HostError> {
    let prior = host.delivery().await.map_err(HostError)?;
    if let Some(d) = &prior
        && d.state == DeliveryState::Delivered
    {
        return Ok(Outcome::Delivered(d.clone()));
    }
    let attempt = prior.as_ref().map(|d| d.attempt).unwrap_or(0) + 1;
    host.record(EventBody::DeliveryStarted {
        target: job.settings.target,
        attempt,
    })
    .await
    .map_err(HostError)?;
    info!(session_id = %job.session, target = job.settings.target.as_str(), attempt, "delivery started");
    for stage in plan(&job.settings) {
        let state = host
            .delivery()
            .await
            .map_err(HostError)?
            .ok_or_else(|| HostError("the delivery_started event is missing".into()))?;
        if state.outcome(stage).is_some() {
            continue;
        }
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let r = run_stage(stage, job, host, &state).await;
            match r {
                Err(e) if e.retryable && tries < retry.tries => {
                    let wait = e
                        .retry_after
                        .unwrap_or(retry.backoff * 2u32.saturating_pow(tries - 1));
                    if wait > retry.max_wait {
                        break Err(e);
                    }
                    warn!(session_id = %job.session, stage = stage.as_str(), error = %e.message, ?wait, "delivery stage failed; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(outcome) => {
                info!(session_id = %job.session, stage = stage.as_str(), summary = %outcome.summary, "delivery stage done");
                host.record(EventBody::DeliveryStageCompleted { stage, outcome })
                    .await
                    .map_err(HostError)?;
            }
            Err(e) => {
                warn!(session_id = %job.session, stage = stage.as_str(), error = %e.message, retryable = e.retryable, "delivery failed");
                host.record(EventBody::DeliveryFailed {
                    stage,
                    message: e.message,
                    retryable: e.retryable,
                    hint: e.hint,
                })
                .await
                .map_err(HostError)?;
                let d = host.delivery().await.map_err(HostError)?;
                return d
                    .map(Outcome::Failed)
                    .ok_or_else(|| HostError("the delivery record is missing".into()));
            }
        }
    }
    host.record(EventBody::DeliveryFinished {
        target: job.settings.target,
    })
    .await
    .map_err(HostError)?;
    info!(session_id = %job.session, "delivered");
    let d = host.delivery().await.map_err(HostError)?;
    d.map(Outcome::Delivered)
        .ok_or_else(|| HostError("the delivery record is missing".into()))
}

/// What the commit stage commits: the handoff's `filesChanged` under
/// `commit: declared` (the default) when there is a handoff; everything under
/// `commit: all`, without a handoff (nothing was declared) and for target `none`.
pub fn commit_files(settings: &DeliverySettings, handoff: Option<&Value>) -> CommitFiles {
    if settings.target == DeliveryTarget::None {
        // Sent nowhere: the whole work is the session branch's, declared or not.
        return CommitFiles::All;
    }
    match settings.commit {
        CommitScope::All => CommitFiles::All,
        CommitScope::Declared => match handoff
            .and_then(|h| h.get("filesChanged"))
            .and_then(Value::as_array)
        {
            Some(files) => CommitFiles::Declared(
                files
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            None => CommitFiles::All,
        },
    }
}

/// The token an HTTPS push of `access`'s identity sends: its configured token, or the
/// one it mints (a GitHub App's installation token, renewed when it runs out).
pub async fn push_token(access: &ForgeAccess) -> Result<Option<String>, StageError> {
    if let Some(t) = &access.push_token {
        return Ok(Some(t.clone()));
    }
    access
        .client
        .push_token()
        .await
        .map_err(|e| StageError::from_forge("getting the GitHub App installation token", &e))
}

/// The forge item a job reports to, from its source.
fn source_item(job: &Job) -> Option<ForgeItem> {
    job.source.as_ref().and_then(SourceRef::forge_item)
}

/// The forge and repository a pull request goes to: the source item's, else the
/// remote URL's (`github.com/owner/repo`, a host with `gitlab` in its name).
async fn forge_repo(job: &Job) -> Result<(ForgeKind, String), StageError> {
    if let Some(item) = source_item(job) {
        return Ok((item.forge, item.repo));
    }
    let remote = job.settings.remote.as_deref().unwrap_or("origin");
    let url = git::remote_url(&job.repo_dir, remote)
        .await
        .unwrap_or_default();
    parse_remote(&url).ok_or_else(|| {
        StageError::fatal(
            format!("cannot tell which GitHub/GitLab repository `{remote}` ({url}) is"),
            "give the session a source (`worktrain spawn --source github:owner/repo#123`) or push to a github.com / GitLab remote",
        )
    })
}

/// `(forge, owner/repo)` of a remote URL (https, ssh or scp-like).
pub fn parse_remote(url: &str) -> Option<(ForgeKind, String)> {
    let u = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let rest = if let Some(r) = u.split_once("://").map(|(_, r)| r) {
        r.split_once('@').map(|(_, r)| r).unwrap_or(r).to_owned()
    } else if let Some((userhost, path)) = u.split_once(':') {
        let host = userhost.split_once('@').map(|(_, h)| h).unwrap_or(userhost);
        format!("{host}/{path}")
    } else {
        return None;
    };
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let kind = if host == "github.com" || host.contains("github") {
        ForgeKind::Github
    } else if host.contains("gitlab") {
        ForgeKind::Gitlab
    } else {
        return None;
    };
    (path.contains('/')).then(|| (kind, path.to_owned()))
}

/// An artifact checked against its contract: a fatal failure listing every problem, whose
/// hint says to fix the final step's `what` (handoff, review), or nothing.
fn check_artifact(contract: ContractName, a: &Value, what: &str) -> Result<(), StageError> {
    let problems = contract.validate(a);
    if problems.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                if p.path.is_empty() {
                    "(artifact)"
                } else {
                    &p.path
                },
                p.message
            )
        })
        .collect();
    Err(StageError::fatal(
        format!(
            "the `{}` artifact is invalid: {}",
            contract.as_str(),
            all.join("; ")
        ),
        format!("fix the final step's {what} (rewind to it) and retry the delivery"),
    ))
}

/// A (checked) `review_verdict` — the bundled mr-review workflow's final artifact — as the
/// `pr_review` to post: `blocking` requests changes; `minor` and `clean` comment (an
/// approval is only ever posted from a `pr_review` that says `approve`). The body opens
/// with the verdict and the summary; a finding with a file and line becomes an inline
/// comment led by its severity, one without a location a line of the body.
pub fn pr_review_from_verdict(verdict: &Value) -> Value {
    let said = verdict
        .get("verdict")
        .and_then(Value::as_str)
        .unwrap_or("minor");
    let event = if said == "blocking" {
        "request_changes"
    } else {
        "comment"
    };
    let mut body = format!("**Verdict: {said}.**");
    if let Some(summary) = verdict
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        body.push(' ');
        body.push_str(summary.trim());
    }
    let mut comments = Vec::new();
    let mut general = Vec::new();
    for f in verdict
        .get("findings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let severity = f.get("severity").and_then(Value::as_str).unwrap_or("minor");
        let message = f.get("message").and_then(Value::as_str).unwrap_or_default();
        let text = format!("**{severity}**: {message}");
        match (
            f.get("file").and_then(Value::as_str),
            f.get("line").and_then(Value::as_u64),
        ) {
            (Some(path), Some(line)) => {
                comments.push(json!({"path": path, "line": line, "body": text}));
            }
            (Some(path), None) => general.push(format!("- `{path}`: {text}")),
            (None, _) => general.push(format!("- {text}")),
        }
    }
    if !general.is_empty() {
        body.push_str("\n\n");
        body.push_str(&general.join("\n"));
    }
    json!({"kind": "pr_review", "verdict": event, "body": body, "comments": comments})
}

/// The checked `pr_review` artifact of a `review_comment` delivery, as the review to post
/// on the source pull/merge request.
async fn review_of(job: &Job, host: &dyn Host) -> Result<ReviewSpec, StageError> {
    let retry_host = |e: String| StageError {
        message: e,
        retryable: true,
        retry_after: None,
        hint: None,
    };
    let Some(item) = source_item(job).filter(|i| i.kind != ItemKind::Issue) else {
        return Err(StageError::fatal(
            format!(
                "the `review_comment` target needs a pull/merge request source; the session's source is {}",
                job.source
                    .as_ref()
                    .map(|s| format!("`{s}`"))
                    .unwrap_or_else(|| "missing".into())
            ),
            "dispatch it from a pull_request / merge_request event, or `worktrain spawn --source github:owner/repo#12` (GitLab: `gitlab:group/project!7`)",
        ));
    };
    let Some(mut a) = host.review().await.map_err(retry_host)? else {
        return Err(StageError::fatal(
            "no `pr_review` artifact: the workflow's final step did not submit one",
            "the final step must submit `{kind: pr_review, verdict: approve|request_changes|comment, body, comments: [{path, line, side?, startLine?, body}]}` (outputContract: {contract: pr_review}), or a `review_verdict` as the bundled mr-review workflow does; rewind to it and retry the delivery",
        ));
    };
    if a.get("kind").and_then(Value::as_str) == Some(ContractName::ReviewVerdict.as_str()) {
        check_artifact(ContractName::ReviewVerdict, &a, "review")?;
        a = pr_review_from_verdict(&a);
    }
    check_artifact(ContractName::PrReview, &a, "review")?;
    // Validated above: the fields are there and well-typed.
    let verdict = a
        .get("verdict")
        .and_then(Value::as_str)
        .and_then(ReviewVerdict::parse)
        .unwrap_or(ReviewVerdict::Comment);
    let comments = a
        .get("comments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| InlineComment {
            path: c
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            line: c.get("line").and_then(Value::as_u64).unwrap_or(1),
            start_line: c.get("startLine").and_then(Value::as_u64),
            side: match c.get("side").and_then(Value::as_str) {
                Some("LEFT") => DiffSide::Left,
                Some(_) | None => DiffSide::Right,
            },
            body: c
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
        .collect();
    let console = job
        .console_url
        .as_deref()
        .map(|u| format!(" · [session]({u})"))
        .unwrap_or_default();
    let body = format!(
        "{}\n\n<sub>Reviewed by worktrain · session `{}` · workflow `{}`{console}</sub>",
        a.get("body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end(),
        job.session,
        job.workflow
    );
    Ok(ReviewSpec {
        repo: item.repo,
        number: item.number,
        verdict,
        body,
        comments,
        marker: marker(job.session),
    })
}

fn handoff_message(h: &Value) -> Option<String> {
    let t = h.get("commitType")?.as_str()?;
    let subject = h.get("commitSubject")?.as_str()?;
    let mut m = format!("{t}: {subject}");
    if let Some(body) = h.get("prBody").and_then(Value::as_str)
        && !body.trim().is_empty()
    {
        m.push_str("\n\n");
        m.push_str(body.trim());
    }
    Some(m)
}

fn branch(job: &Job) -> Result<&str, StageError> {
    job.branch.as_deref().ok_or_else(|| {
        StageError::fatal(
            "the session has no branch (its workspace is not a git repository)",
            "deliver from a git workspace, or use `delivery: {target: none}`",
        )
    })
}

fn base_branch(job: &Job) -> String {
    job.base
        .strip_prefix("origin/")
        .or_else(|| job.base.strip_prefix("refs/heads/"))
        .unwrap_or(&job.base)
        .to_owned()
}

fn footer(job: &Job) -> String {
    let console = job
        .console_url
        .as_deref()
        .map(|u| format!(" · [console]({u})"))
        .unwrap_or_default();
    format!(
        "---\n<sub>Delivered by worktrain · session `{}` · workflow `{}`{console}</sub>\n{}",
        job.session,
        job.workflow,
        marker(job.session)
    )
}

async fn run_stage(
    stage: DeliveryStage,
    job: &Job,
    host: &dyn Host,
    state: &DeliveryInfo,
) -> Result<StageOutcome, StageError> {
    let host_err = |e: String| StageError {
        message: e,
        retryable: true,
        retry_after: None,
        hint: None,
    };
    match stage {
        DeliveryStage::Handoff => {
            if job.settings.target == DeliveryTarget::ReviewComment {
                let review = review_of(job, host).await?;
                return Ok(StageOutcome {
                    summary: format!(
                        "a `{}` review with {} inline comment(s) for {}",
                        review.verdict.as_str(),
                        review.comments.len(),
                        job.source
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                    ..StageOutcome::default()
                });
            }
            let required = matches!(
                job.settings.target,
                DeliveryTarget::PullRequest | DeliveryTarget::Webhook
            );
            match host.handoff().await.map_err(host_err)? {
                None if required => Err(StageError::fatal(
                    "no `handoff` artifact: the workflow's final step did not submit one",
                    "the final step must submit `{kind: handoff, commitType, commitSubject, prTitle, prBody, filesChanged}`; the work is on the session branch and the worktree is kept",
                )),
                None => Ok(StageOutcome {
                    summary: "no handoff artifact; the commit message is the goal".into(),
                    ..StageOutcome::default()
                }),
                Some(h) => {
                    check_artifact(ContractName::Handoff, &h, "handoff")?;
                    Ok(StageOutcome {
                        summary: handoff_message(&h)
                            .and_then(|m| m.lines().next().map(str::to_owned))
                            .unwrap_or_default(),
                        ..StageOutcome::default()
                    })
                }
            }
        }
        DeliveryStage::Commit => {
            let handoff = host.handoff().await.map_err(host_err)?;
            let message = handoff.as_ref().and_then(handoff_message);
            let files = commit_files(&job.settings, handoff.as_ref());
            let committed = host.commit(message, files).await.map_err(|e| StageError {
                message: format!("committing failed: {e}"),
                retryable: false,
                retry_after: None,
                hint: Some("inspect the kept worktree (`worktrain worktree list`)".into()),
            })?;
            let Some(branch) = job.branch.as_deref() else {
                return Ok(StageOutcome {
                    summary: "not a git workspace: nothing to commit".into(),
                    ..StageOutcome::default()
                });
            };
            let HostCommit {
                commit: committed,
                undeclared,
                kept_on,
            } = committed;
            let head = match committed {
                Some(c) => Some(c),
                None => git::rev_parse(&job.repo_dir, &format!("refs/heads/{branch}")).await,
            };
            let base = git::rev_parse(&job.repo_dir, &job.base).await;
            let has_work = head.is_some() && head != base;
            let needs_work = matches!(
                job.settings.target,
                DeliveryTarget::PullRequest | DeliveryTarget::Webhook
            );
            let kept = match &kept_on {
                Some(b) if !undeclared.is_empty() => format!(
                    "; {} undeclared file(s) kept on `{b}`: {}",
                    undeclared.len(),
                    undeclared.join(", ")
                ),
                Some(b) => format!("; undeclared changes are kept on `{b}`"),
                None => String::new(),
            };
            if !has_work && needs_work {
                return Err(StageError::fatal(
                    format!(
                        "nothing to deliver: `{branch}` has no commit beyond `{}`{kept}",
                        job.base
                    ),
                    if kept_on.is_some() {
                        "none of the handoff's `filesChanged` changed; declare the files the work is in (or set `delivery.commit: all`) and redo the final step"
                    } else {
                        "the session changed no files; there is no pull request to open"
                    },
                ));
            }
            Ok(StageOutcome {
                summary: if has_work {
                    format!("work committed on `{branch}`{kept}")
                } else {
                    format!("the session changed nothing{kept}")
                },
                commit: head,
                undeclared,
                kept_on,
                ..StageOutcome::default()
            })
        }
        DeliveryStage::SecretScan => {
            let branch = branch(job)?;
            let range = format!("{}...refs/heads/{branch}", job.base);
            let out = git::run(
                &job.repo_dir,
                &["diff", "--no-color", "--no-ext-diff", "-U0", &range],
                None,
            )
            .await
            .map_err(|e| host_err(format!("running git diff: {e}")))?;
            if !out.ok() {
                return Err(StageError::fatal(
                    format!("git diff {range} failed: {}", out.stderr.trim()),
                    "check the base branch of the session",
                ));
            }
            let findings = secrets::scan_diff(&out.stdout);
            let listed: Vec<String> = findings
                .iter()
                .map(|f| format!("{}:{} ({})", f.file, f.line, f.rule))
                .collect();
            if !findings.is_empty() && job.settings.secret_scan == SecretScanPolicy::Block {
                // The findings are recorded with the failure (file, line, rule only).
                host.record(EventBody::DeliveryStageCompleted {
                    stage: DeliveryStage::SecretScan,
                    outcome: StageOutcome {
                        summary: format!("{} possible secret(s)", findings.len()),
                        findings: findings.clone(),
                        ..StageOutcome::default()
                    },
                })
                .await
                .map_err(host_err)?;
                return Err(StageError::fatal(
                    format!("possible secrets in the diff: {}", listed.join(", ")),
                    "remove them from the branch (rewind and redo, or amend the commit), or set `secret_scan: warn` on the trigger if they are not secrets",
                ));
            }
            let commit = git::rev_parse(&job.repo_dir, &format!("refs/heads/{branch}")).await;
            Ok(StageOutcome {
                summary: if findings.is_empty() {
                    "no secrets found".into()
                } else {
                    format!(
                        "{} possible secret(s), allowed by `secret_scan: warn`: {}",
                        findings.len(),
                        listed.join(", ")
                    )
                },
                commit,
                findings,
                ..StageOutcome::default()
            })
        }
        DeliveryStage::Push => {
            let branch = branch(job)?;
            let remote = job.settings.remote.as_deref().unwrap_or("origin");
            let Some(url) = git::remote_url(&job.repo_dir, remote).await else {
                return Err(StageError::fatal(
                    format!("the workspace has no remote `{remote}`"),
                    "add the remote (`git remote add`) or set `delivery.remote`",
                ));
            };
            // The identity's token goes only to an HTTPS remote of the item's own
            // repository; anything else uses the user's git setup.
            let token = match source_item(job) {
                Some(item)
                    if url.starts_with("https://")
                        && parse_remote(&url) == Some((item.forge, item.repo.clone())) =>
                {
                    match host.forge(job.settings.identity.as_deref(), item.forge) {
                        Ok(access) => push_token(&access).await?,
                        Err(_) => None,
                    }
                }
                Some(_) | None => None,
            };
            // The commit stage may have run on another daemon host (one that died before
            // the push): without its commit here, git would only say the refspec matches
            // nothing, which reads like a network problem.
            if let Some(commit) = state
                .outcome(DeliveryStage::Commit)
                .and_then(|o| o.commit.as_deref())
                && (git::rev_parse(&job.repo_dir, commit).await.is_none()
                    || git::rev_parse(&job.repo_dir, &format!("refs/heads/{branch}"))
                        .await
                        .is_none())
            {
                return Err(StageError::fatal(
                    format!(
                        "the delivery's commit {} (branch `{branch}`) is not in this repository at {}",
                        &commit[..commit.len().min(12)],
                        job.repo_dir.display()
                    ),
                    "the commit stage ran on another daemon host: retry the delivery there (its repository has the commit), or push the branch from there",
                ));
            }
            git::push(&job.repo_dir, remote, branch, token.as_deref())
                .await
                .map_err(|f| StageError::from_push(remote, &f))?;
            let commit = git::rev_parse(&job.repo_dir, &format!("refs/heads/{branch}")).await;
            Ok(StageOutcome {
                summary: format!("pushed `{branch}` to `{remote}`"),
                commit,
                ..StageOutcome::default()
            })
        }
        DeliveryStage::PullRequest => {
            let branch = branch(job)?;
            let (forge_kind, repo) = forge_repo(job).await?;
            let access = host
                .forge(job.settings.identity.as_deref(), forge_kind)
                .map_err(|e| {
                    StageError::fatal(
                        e,
                        "configure an identity in triggers.yml and name it in `delivery.identity`",
                    )
                })?;
            let handoff = host
                .handoff()
                .await
                .map_err(host_err)?
                .unwrap_or(Value::Null);
            let closes = source_item(job).and_then(|i| {
                (i.repo == repo && i.kind != ItemKind::MergeRequest)
                    .then(|| format!("#{}", i.number))
            });
            let tpl = find_template(job, branch, forge_kind).await;
            let body = template::fill(
                tpl.as_deref(),
                &template::Fill::from_handoff(&handoff, closes, footer(job)),
            );
            let title = handoff
                .get("prTitle")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| job.goal.lines().next().unwrap_or_default().to_owned());
            let spec = PullSpec {
                repo: repo.clone(),
                head: branch.to_owned(),
                base: base_branch(job),
                title,
                body,
                draft: job.settings.draft,
                labels: job.settings.labels.clone(),
                reviewers: job.settings.reviewers.clone(),
                assignees: job.settings.assignees.clone(),
            };
            let pr = access
                .client
                .open_pull(&spec)
                .await
                .map_err(|e| StageError::from_forge("opening the pull request", &e))?;
            Ok(StageOutcome {
                summary: if pr.reused {
                    format!("found the open pull request {}", pr.url)
                } else {
                    format!("opened {}", pr.url)
                },
                url: Some(pr.url),
                number: Some(pr.number),
                ..StageOutcome::default()
            })
        }
        DeliveryStage::ReportBack => {
            let pr = state
                .outcome(DeliveryStage::PullRequest)
                .cloned()
                .unwrap_or_default();
            let pushed = state
                .outcome(DeliveryStage::Push)
                .and_then(|o| o.commit.clone());
            let (forge_kind, repo) = forge_repo(job).await?;
            let access = host
                .forge(job.settings.identity.as_deref(), forge_kind)
                .map_err(|e| StageError::fatal(e, "configure an identity in triggers.yml"))?;
            let mut done = Vec::new();
            let mut url = None;
            if job.settings.report_back
                && let Some(item) = source_item(job)
            {
                let handoff = host
                    .handoff()
                    .await
                    .map_err(host_err)?
                    .unwrap_or(Value::Null);
                let summary = handoff
                    .get("prTitle")
                    .and_then(Value::as_str)
                    .unwrap_or(&job.goal);
                let console = job
                    .console_url
                    .as_deref()
                    .map(|u| format!(" · [session]({u})"))
                    .unwrap_or_default();
                let body = format!(
                    "worktrain opened {} for this: {summary}\n\n<sub>session `{}` · workflow `{}`{console}</sub>\n{}",
                    pr.url.as_deref().unwrap_or("a pull request"),
                    job.session,
                    job.workflow,
                    marker(job.session)
                );
                let c = access
                    .client
                    .upsert_comment(
                        &item.repo,
                        item.kind,
                        item.number,
                        &marker(job.session),
                        &body,
                    )
                    .await
                    .map_err(|e| StageError::from_forge("commenting on the source", &e))?;
                url = c.url;
                done.push(if c.updated {
                    "comment updated"
                } else {
                    "comment posted"
                });
            }
            if job.settings.commit_status
                && let Some(sha) = &pushed
            {
                access
                    .client
                    .commit_status(&CommitStatus {
                        repo: repo.clone(),
                        sha: sha.clone(),
                        state: StatusState::Success,
                        target_url: job.console_url.clone(),
                        description: format!("worktrain session {}", job.session),
                        context: "worktrain".into(),
                    })
                    .await
                    .map_err(|e| StageError::from_forge("setting the commit status", &e))?;
                done.push("commit status set");
            }
            Ok(StageOutcome {
                summary: if done.is_empty() {
                    "nothing to report to".into()
                } else {
                    done.join(", ")
                },
                url,
                ..StageOutcome::default()
            })
        }
        DeliveryStage::Review => {
            let spec = review_of(job, host).await?;
            let forge_kind = source_item(job)
                .map(|i| i.forge)
                .unwrap_or(ForgeKind::Github);
            let access = host
                .forge(job.settings.identity.as_deref(), forge_kind)
                .map_err(|e| {
                    StageError::fatal(
                        e,
                        "configure an identity in triggers.yml and name it in `delivery.identity`",
                    )
                })?;
            let r = access
                .client
                .post_review(&spec)
                .await
                .map_err(|e| StageError::from_forge("posting the review", &e))?;
            let place = match forge_kind {
                ForgeKind::Github => format!("{}#{}", spec.repo, spec.number),
                ForgeKind::Gitlab => format!("{}!{}", spec.repo, spec.number),
            };
            Ok(StageOutcome {
                summary: if r.reused {
                    format!("found the review posted earlier on {place}")
                } else if r.folded > 0 {
                    format!(
                        "posted a `{}` review on {place}: {} inline comment(s), {} on lines outside the diff put in the summary",
                        spec.verdict.as_str(),
                        r.inline,
                        r.folded
                    )
                } else {
                    format!(
                        "posted a `{}` review on {place} with {} inline comment(s)",
                        spec.verdict.as_str(),
                        r.inline
                    )
                },
                url: r.url,
                number: Some(spec.number),
                ..StageOutcome::default()
            })
        }
        DeliveryStage::Webhook => {
            let Some(hook) = &job.settings.webhook else {
                return Err(StageError::fatal(
                    "target `webhook` without `webhook: {url}`",
                    "set `delivery.webhook.url` (and `secret_env`)",
                ));
            };
            let handoff = host.handoff().await.map_err(host_err)?;
            let commit = state
                .outcome(DeliveryStage::Commit)
                .and_then(|o| o.commit.clone());
            let payload = json!({
                "session_id": job.session.to_string(),
                "workflow": job.workflow,
                "goal": job.goal,
                "branch": job.branch,
                "commit": commit,
                "pushed": state.outcome(DeliveryStage::Push).is_some(),
                "source": job.source.as_ref().map(ToString::to_string),
                "handoff": handoff,
                "console_url": job.console_url,
            });
            let secret = match hook.secret_env.as_deref() {
                None => None,
                Some(var) => Some(host.secret(var).ok_or_else(|| {
                    StageError::fatal(
                        format!("the signing secret variable `{var}` is not set"),
                        "set it in the daemon's environment",
                    )
                })?),
            };
            let url = match env_reference(&hook.url) {
                None => hook.url.clone(),
                Some(var) => host.secret(var).ok_or_else(|| {
                    StageError::fatal(
                        format!("the webhook URL variable `{var}` is not set"),
                        "set it in the daemon's environment",
                    )
                })?,
            };
            post_signed(&url, secret.as_deref(), &payload).await?;
            Ok(StageOutcome {
                summary: format!("posted to {}", redact_url(&url)),
                ..StageOutcome::default()
            })
        }
        DeliveryStage::Cleanup => {
            host.cleanup().await.map_err(host_err)?;
            Ok(StageOutcome {
                summary: "worktree removed; the branch is kept".into(),
                ..StageOutcome::default()
            })
        }
    }
}

/// The repository's pull/merge request template at the session branch, when one exists.
async fn find_template(job: &Job, branch: &str, forge: ForgeKind) -> Option<String> {
    let rev = format!("refs/heads/{branch}");
    let paths = match forge {
        ForgeKind::Github => template::GITHUB_PATHS,
        ForgeKind::Gitlab => template::GITLAB_PATHS,
    };
    for p in paths {
        if let Some(t) = git::show(&job.repo_dir, &rev, p).await {
            return Some(t);
        }
    }
    if forge == ForgeKind::Github {
        let mut names = git::ls_tree(&job.repo_dir, &rev, template::GITHUB_TEMPLATE_DIR).await;
        names.sort();
        for n in names
            .iter()
            .filter(|n| n.to_ascii_lowercase().ends_with(".md"))
        {
            if let Some(t) = git::show(
                &job.repo_dir,
                &rev,
                &format!("{}/{n}", template::GITHUB_TEMPLATE_DIR),
            )
            .await
            {
                return Some(t);
            }
        }
    }
    None
}

/// The signature header of a signed POST: `sha256=<hex hmac of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Worktrain-Signature-256";

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POST `payload` as JSON, signed (header [`SIGNATURE_HEADER`]) with `secret` when given.
pub async fn post_signed(
    url: &str,
    secret: Option<&str>,
    payload: &Value,
) -> Result<(), StageError> {
    let body = serde_json::to_vec(payload).map_err(|e| StageError::fatal(e.to_string(), ""))?;
    let client =
        http_client(Duration::from_secs(30)).map_err(|e| StageError::fatal(e.to_string(), ""))?;
    // The URL may carry its credential: messages name its origin only, and the HTTP
    // client's error text (which names the whole URL) is taken without it.
    let shown = redact_url(url);
    let answer = post_json(&client, url, secret, body)
        .await
        .map_err(|e| StageError {
            message: format!("POST {shown}: {}", e.without_url()),
            retryable: true,
            retry_after: None,
            hint: None,
        })?;
    let status = answer.status;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        let retryable = status >= 500 || status == 429;
        Err(StageError {
            message: format!("POST {shown} answered {status}"),
            retryable,
            // The receiver's own pacing comes first; the policy's backoff otherwise.
            retry_after: answer.retry_after.filter(|_| retryable),
            hint: Some("check the receiving endpoint".into()),
        })
    }
}

/// `NAME` when `value` is a whole `$NAME` or `${NAME}` reference (a URL kept in the
/// daemon's environment, so that it is never stored with the session's settings).
pub fn env_reference(value: &str) -> Option<&str> {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'))?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// A URL as it may be shown in events and logs: its scheme, host and port, with any
/// path, query or user info (where webhook URLs carry their tokens) replaced by `…`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() && u.username().is_empty() {
                "/"
            } else {
                "/…"
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "(an invalid URL)".into(),
    }
}

/// An HTTP client for signed POSTs, with a whole-request timeout.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).build()
}

/// What a receiver answered to a signed POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Its `Retry-After`, in seconds, when it sent one.
    pub retry_after: Option<Duration>,
}

/// POST the JSON `body` to `url`, signed with `secret` when given: the one signing POST of
/// the `webhook` delivery target and of the notifiers.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Result<Answer> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "worktrain");
    if let Some(secret) = secret {
        req = req.header(SIGNATURE_HEADER, sign(secret.as_bytes(), &body));
    }
    let resp = req.body(body).send().await?;
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Answer {
        status: resp.status().as_u16(),
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_name_their_forge_and_repository() {
        for (url, want) in [
            (
                "https://github.com/acme/widgets.git",
                Some((ForgeKind::Github, "acme/widgets")),
            ),
            (
                "git@github.com:acme/widgets.git",
                Some((ForgeKind::Github, "acme/widgets")),
            ),
            (
                "ssh://git@github.com/acme/widgets",
                Some((ForgeKind::Github, "acme/widgets")),
            ),
            (
                "https://x-access-token:t@github.com/acme/widgets",
                Some((ForgeKind::Github, "acme/widgets")),
            ),
            (
                "https://gitlab.example.com/group/sub/proj.git",
                Some((ForgeKind::Gitlab, "group/sub/proj")),
            ),
            ("/srv/git/remote.git", None),
            ("https://example.com/acme/widgets.git", None),
        ] {
            assert_eq!(
                parse_remote(url),
                want.map(|(k, r)| (k, r.to_owned())),
                "{url}"
            );
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_commit_stage_commits_what_the_handoff_declares_unless_told_otherwise() {
        let handoff = json!({"filesChanged": ["src/a.rs", "docs/"]});
        let pr = DeliverySettings {
            target: DeliveryTarget::PullRequest,
            ..DeliverySettings::default()
        };
        assert_eq!(
            commit_files(&pr, Some(&handoff)),
            CommitFiles::Declared(vec!["src/a.rs".into(), "docs/".into()])
        );
        // Nothing declared (no handoff): everything.
        assert_eq!(commit_files(&pr, None), CommitFiles::All);
        let all = DeliverySettings {
            commit: CommitScope::All,
            ..pr.clone()
        };
        assert_eq!(commit_files(&all, Some(&handoff)), CommitFiles::All);
        let none = DeliverySettings {
            target: DeliveryTarget::None,
            ..pr
        };
        assert_eq!(commit_files(&none, Some(&handoff)), CommitFiles::All);
        // The YAML of the setting.
        let s: DeliverySettings = serde_json::from_value(json!({"commit": "all"})).unwrap();
        assert_eq!(s.commit, CommitScope::All);
        assert!(serde_json::from_value::<DeliverySettings>(json!({"commit": "some"})).is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_dispatch() {
        let hook = DeliverySettings {
            target: DeliveryTarget::Webhook,
            ..DeliverySettings::default()
        };
        assert!(check(&hook).unwrap_err().contains("webhook: {url"));
        let review = DeliverySettings {
            target: DeliveryTarget::ReviewComment,
            ..DeliverySettings::default()
        };
        assert_eq!(check(&review), Ok(()));
        assert_eq!(
            plan(&review),
            vec![
                DeliveryStage::Handoff,
                DeliveryStage::Commit,
                DeliveryStage::Review,
                DeliveryStage::Cleanup
            ],
            "no push, no pull request"
        );
        assert_eq!(check(&DeliverySettings::default()), Ok(()));
    }
}
