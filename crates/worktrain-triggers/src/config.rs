//! The `triggers.yml` model: typed provider variants, `deny_unknown_fields` everywhere,
//! `$VAR` secrets from the environment, `defaults:` merged into every trigger. One
//! function, [`load`], parses and validates — the daemon and `worktrain trigger
//! validate` both call it — and returns a [`TriggerIndex`] of resolved triggers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use worktrain_core::run::{
    DeliverySettings, ForgeKind, NotifierKind, NotifyEvent, ReconcileAction, RunLimits,
    WorkspaceHooks,
};

use crate::env::{EnvSource, EnvString, with_env};
use crate::expr::{EventPattern, JsonPathExpr, Template, duration};
use crate::rules::Condition;

/// The only `version:` this build reads.
pub const FILE_VERSION: u32 = 1;

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggersFile {
    /// File format version (`1`).
    pub version: u32,
    /// Settings every trigger inherits unless it sets its own (a trigger's value replaces
    /// the default's whole value).
    #[serde(default)]
    pub defaults: Defaults,
    /// Forge credentials by name; triggers and delivery name them.
    #[serde(default)]
    pub identities: BTreeMap<String, IdentityDef>,
    /// Notifiers by name (Slack, Discord, signed webhooks): told when sessions complete,
    /// fail, wait for approval or fail delivery. Global ones hear of every session;
    /// triggers add others with `notify:`.
    #[serde(default)]
    pub notifications: BTreeMap<String, NotifierDef>,
    /// The triggers.
    #[serde(default)]
    pub triggers: Vec<TriggerDef>,
}

/// One notifier of `notifications:`. Its URL and secret come from the environment
/// (`$SLACK_WEBHOOK_URL`): a Slack or Discord webhook URL is itself a credential.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifierDef {
    /// The message format: `slack`, `discord` or `webhook` (a signed JSON document).
    pub kind: NotifierKind,
    /// Where to POST (`https://hooks.slack.com/services/…`); usually `$VAR`.
    pub url: EnvString,
    /// `webhook` only, and required there: the HMAC-SHA256 key signing the body
    /// (`X-Worktrain-Signature-256: sha256=<hex>`, like the `webhook` delivery target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<EnvString>,
    /// What it is told about (default: all of `completed`, `failed`,
    /// `waiting_for_approval`, `delivery_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
    /// `true` (default): told about every session. `false`: only about the sessions of
    /// triggers that name it in `notify.to`.
    #[serde(default = "yes")]
    pub global: bool,
    /// Messages per minute at most (a token bucket: bursts up to this many, refilled
    /// evenly); beyond it a message is dropped and recorded as `notification_failed:
    /// rate_limited`. Default 30.
    #[serde(default = "thirty")]
    pub max_per_minute: u32,
}

fn thirty() -> u32 {
    30
}

impl NotifierDef {
    /// Whether this notifier is told about `event`.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&event))
    }
}

/// A trigger's notifications: notifiers added for its sessions, whether the global ones
/// hear of them too, and which events count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerNotify {
    /// Notifiers (names under `notifications:`) told about this trigger's sessions, in
    /// addition to the global ones.
    #[serde(default)]
    pub to: Vec<String>,
    /// `false`: the global notifiers are not told about this trigger's sessions.
    #[serde(default = "yes")]
    pub global: bool,
    /// Only these events of this trigger's sessions are notified (each notifier's own
    /// `events` still apply). Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
}

impl Default for TriggerNotify {
    fn default() -> Self {
        Self {
            to: Vec::new(),
            global: true,
            events: None,
        }
    }
}

/// Implements `Deserialize` for an enum written as a map with exactly one key naming the
/// variant (`github_webhook: {…}`). serde_norway reads externally tagged enums only from
/// YAML tags (`!github_webhook`); this keeps the plain form and, because the variant's
/// value is read straight from the document, exact line/column positions in errors.
macro_rules! single_key_enum {
    ($ty:ident { $($variant:ident = $name:literal),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),*];
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a map with one key, one of: {}", NAMES.join(", "))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let Some(key) = map.next_key::<String>()? else {
                            return Err(serde::de::Error::custom(format!(
                                "empty; expected one of: {}", NAMES.join(", ")
                            )));
                        };
                        let value = match key.as_str() {
                            $($name => $ty::$variant(map.next_value()?),)*
                            other => return Err(serde::de::Error::unknown_variant(other, NAMES)),
                        };
                        if let Some(extra) = map.next_key::<String>()? {
                            return Err(serde::de::Error::custom(format!(
                                "`{extra}` beside `{key}`: give exactly one of: {}", NAMES.join(", ")
                            )));
                        }
                        Ok(value)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

/// A forge identity: credentials plus the API base URL (GitHub Enterprise Server and
/// self-managed GitLab need theirs; tests point it at a local fake).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityDef {
    /// A GitHub personal access token (classic or fine-grained).
    Github(GithubToken),
    /// A GitHub App installation: a JWT signed with the app's key is exchanged for an
    /// installation token, refreshed before it expires.
    GithubApp(GithubApp),
    /// A GitLab personal, group or project access token.
    Gitlab(GitlabToken),
}

single_key_enum!(IdentityDef {
    Github = "github",
    GithubApp = "github_app",
    Gitlab = "gitlab",
});

impl IdentityDef {
    /// The forge this identity speaks to.
    pub fn forge_kind(&self) -> ForgeKind {
        match self {
            IdentityDef::Github(_) | IdentityDef::GithubApp(_) => ForgeKind::Github,
            IdentityDef::Gitlab(_) => ForgeKind::Gitlab,
        }
    }

    /// The configured token an HTTPS push uses (`None` for a GitHub App: its client
    /// mints an installation token for the push, see `Forge::push_token`).
    pub fn push_token(&self) -> Option<&str> {
        match self {
            IdentityDef::Github(g) => Some(g.token.value()),
            IdentityDef::Gitlab(g) => Some(g.token.value()),
            IdentityDef::GithubApp(_) => None,
        }
    }
}

/// A GitHub token identity.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubToken {
    /// The token (`$GITHUB_TOKEN`).
    pub token: EnvString,
    /// API base URL (default `https://api.github.com`).
    #[serde(default)]
    pub api_url: Option<EnvString>,
}

/// A GitHub App installation identity.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubApp {
    /// The App id.
    pub app_id: u64,
    /// The installation id.
    pub installation_id: u64,
    /// The App's private key (PEM text, e.g. `$GITHUB_APP_PRIVATE_KEY`).
    #[serde(default)]
    pub private_key: Option<EnvString>,
    /// Or a file holding it.
    #[serde(default)]
    pub private_key_file: Option<EnvString>,
    /// API base URL (default `https://api.github.com`).
    #[serde(default)]
    pub api_url: Option<EnvString>,
}

/// A GitLab token identity.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitlabToken {
    /// The token (`$GITLAB_TOKEN`).
    pub token: EnvString,
    /// API base URL including `/api/v4` (default `https://gitlab.com/api/v4`).
    #[serde(default)]
    pub api_url: Option<EnvString>,
}

/// Where sessions of a trigger work.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDef {
    /// A local repository (absolute path).
    #[serde(default)]
    pub path: Option<EnvString>,
    /// A clone URL: the daemon clones it under `$WORKTRAIN_HOME/repos/` and fetches it
    /// before each session.
    #[serde(default)]
    pub clone: Option<EnvString>,
    /// Hooks for every trigger using this workspace (a trigger's `hooks:` override them
    /// one by one).
    #[serde(default)]
    pub hooks: Option<WorkspaceHooks>,
}

/// How many sessions of a trigger run and wait at once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// `parallel` (default) or `serial` (one session of this trigger at a time).
    #[serde(default)]
    pub mode: ConcurrencyMode,
    /// Sessions of this trigger running at once (parallel mode; default: only the
    /// daemon's global cap).
    #[serde(default)]
    pub max_running: Option<usize>,
    /// Sessions of this trigger waiting in the queue; beyond it an event is recorded as
    /// `queue_full` and dropped (default 100).
    #[serde(default)]
    pub max_queued: Option<usize>,
}

impl Concurrency {
    /// Default `max_queued`.
    pub const DEFAULT_MAX_QUEUED: usize = 100;

    /// The running cap, if any.
    pub fn cap(&self) -> Option<usize> {
        match self.mode {
            ConcurrencyMode::Serial => Some(1),
            ConcurrencyMode::Parallel => self.max_running,
        }
    }

    /// The queue limit.
    pub fn queue_limit(&self) -> usize {
        self.max_queued.unwrap_or(Self::DEFAULT_MAX_QUEUED)
    }
}

/// Serial or parallel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyMode {
    /// Up to `max_running` at once.
    #[default]
    Parallel,
    /// One at a time.
    Serial,
}

/// Automatic retries of a source item whose session failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Sessions started for one source item before giving up (default 1: no retry).
    #[serde(default = "one")]
    pub max_dispatch_attempts: u32,
    /// Wait before the second attempt; doubled for each further one (default 1m, at most 1h).
    #[serde(default = "minute", with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub backoff: Duration,
    /// When the attempts are used up: labels added to the source item (needs an identity).
    #[serde(default)]
    pub exhausted_labels: Vec<String>,
    /// …and a comment on it (needs an identity).
    #[serde(default = "yes")]
    pub exhausted_comment: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_dispatch_attempts: 1,
            backoff: Duration::from_secs(60),
            exhausted_labels: Vec::new(),
            exhausted_comment: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, …).
    pub fn delay_before(&self, next: u32) -> Duration {
        let doublings = next.saturating_sub(2).min(16);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(Duration::from_secs(3600))
    }
}

fn one() -> u32 {
    1
}

fn minute() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

/// What happens to a running session whose source stops qualifying.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcilePolicy {
    /// `cancel` (default) or `keep`.
    #[serde(default)]
    pub on_ineligible: ReconcileAction,
    /// Labels the item must keep (removing one makes it ineligible). Polls default to
    /// their `labels`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// An assignee the item must keep. Polls default to their `assignee`.
    #[serde(default)]
    pub assignee: Option<String>,
}

/// Comment commands (`/worktrain run <workflow>`, `/worktrain retry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// What a command line starts with (default `/worktrain`); e.g. `@my-bot`.
    #[serde(default = "default_prefixes")]
    pub prefixes: Vec<String>,
    /// GitHub `author_association` values allowed to command (default OWNER, MEMBER,
    /// COLLABORATOR): anyone can comment on a public repository.
    #[serde(default = "default_associations")]
    pub allow: Vec<String>,
    /// GitLab: the least project access level allowed (default 30, Developer). Needs
    /// `identity` to look the commenter up.
    #[serde(default = "developer")]
    pub min_access_level: u32,
    /// Workflows `run <workflow>` may start (default: only the trigger's own).
    #[serde(default)]
    pub workflows: Vec<String>,
}

impl Default for Commands {
    fn default() -> Self {
        Self {
            prefixes: default_prefixes(),
            allow: default_associations(),
            min_access_level: developer(),
            workflows: Vec::new(),
        }
    }
}

fn default_prefixes() -> Vec<String> {
    vec!["/worktrain".into()]
}

fn default_associations() -> Vec<String> {
    ["OWNER", "MEMBER", "COLLABORATOR"]
        .map(String::from)
        .to_vec()
}

fn developer() -> u32 {
    30
}

/// What kind of items a poll lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PollKind {
    /// Issues.
    Issues,
    /// GitHub pull requests.
    PullRequests,
    /// GitLab merge requests.
    MergeRequests,
}

/// Overlap policy of a schedule.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip a firing while the previous session of this trigger is unfinished (recorded).
    #[default]
    Skip,
    /// Queue it behind the previous one (serial).
    Queue,
    /// Run it alongside.
    Allow,
}

/// Misfire policy of a schedule (firings missed while the daemon was down).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Record them as missed; fire at the next time.
    #[default]
    Skip,
    /// Fire them now (at most `max_catch_up`).
    CatchUp,
}

/// Where the events of a trigger come from.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Any HTTP client: `POST /webhooks/<id>` signed with HMAC-SHA256 over the raw body.
    Webhook(GenericWebhook),
    /// GitHub webhooks (`X-Hub-Signature-256`).
    GithubWebhook(GithubWebhook),
    /// GitLab webhooks (`X-Gitlab-Token` or signing tokens).
    GitlabWebhook(GitlabWebhook),
    /// A poll of GitHub issues or pull requests.
    GithubPoll(Poll),
    /// A poll of GitLab issues or merge requests.
    GitlabPoll(Poll),
    /// A cron schedule.
    Schedule(Schedule),
}

single_key_enum!(Source {
    Webhook = "webhook",
    GithubWebhook = "github_webhook",
    GitlabWebhook = "gitlab_webhook",
    GithubPoll = "github_poll",
    GitlabPoll = "gitlab_poll",
    Schedule = "schedule",
});

impl Source {
    /// The provider name as written (`github_webhook`, …).
    pub fn provider(&self) -> &'static str {
        match self {
            Source::Webhook(_) => "webhook",
            Source::GithubWebhook(_) => "github_webhook",
            Source::GitlabWebhook(_) => "gitlab_webhook",
            Source::GithubPoll(_) => "github_poll",
            Source::GitlabPoll(_) => "gitlab_poll",
            Source::Schedule(_) => "schedule",
        }
    }

    /// Whether events arrive at `POST /webhooks/<id>`.
    pub fn is_webhook(&self) -> bool {
        match self {
            Source::Webhook(_) | Source::GithubWebhook(_) | Source::GitlabWebhook(_) => true,
            Source::GithubPoll(_) | Source::GitlabPoll(_) | Source::Schedule(_) => false,
        }
    }
}

/// A generic signed webhook.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericWebhook {
    /// HMAC-SHA256 key.
    pub secret: EnvString,
    /// Header carrying the hex digest (`sha256=` prefix tolerated; default `X-Signature-256`).
    #[serde(default = "default_sig_header")]
    pub signature_header: String,
    /// Header carrying a Unix timestamp; when set, the digest covers `<timestamp>.<body>`
    /// and deliveries outside `replay_window` are rejected.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Accepted clock difference for timestamped deliveries (default 5m).
    #[serde(default = "five_minutes", with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub replay_window: Duration,
    /// Header with a unique delivery id (default `X-Delivery-Id`; without one, the body's
    /// SHA-256 identifies the delivery).
    #[serde(default = "default_delivery_header")]
    pub delivery_header: String,
    /// JSONPath of the item the event is about, for dedupe (`webhook:<trigger>:<value>`).
    #[serde(default)]
    pub source_id: Option<JsonPathExpr>,
}

fn default_sig_header() -> String {
    "X-Signature-256".into()
}

fn default_delivery_header() -> String {
    "X-Delivery-Id".into()
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

/// GitHub webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubWebhook {
    /// The webhook secret.
    pub secret: EnvString,
    /// Events that start sessions (`issues.labeled`, `pull_request.opened|synchronize`,
    /// `issue_comment.created`, `push`, …). Other events are still used to reconcile
    /// running sessions (closed, unlabeled, …) and recorded as filtered.
    #[serde(default)]
    pub events: Vec<EventPattern>,
    /// Only these repositories (`owner/repo`; default: any that sends here).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Comment commands (on `issue_comment.created`).
    #[serde(default)]
    pub commands: Option<Commands>,
}

/// GitLab webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitlabWebhook {
    /// The secret token (`X-Gitlab-Token`, compared in constant time).
    #[serde(default)]
    pub token: Option<EnvString>,
    /// A signing token (`whsec_…`): the `webhook-signature` header (Standard Webhooks).
    #[serde(default)]
    pub signing_token: Option<EnvString>,
    /// Accepted clock difference for signed deliveries (default 5m).
    #[serde(default = "five_minutes", with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub replay_window: Duration,
    /// Events that start sessions: `merge_request.open|update`, `issue.open`, `note`,
    /// `push`, … (the `X-Gitlab-Event` header, lower case without ` Hook`, and
    /// `object_attributes.action`).
    #[serde(default)]
    pub events: Vec<EventPattern>,
    /// Only these projects (full path; default any).
    #[serde(default)]
    pub projects: Vec<String>,
    /// Comment commands (on `note`).
    #[serde(default)]
    pub commands: Option<Commands>,
}

/// A poll of a forge's issue queue.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// `owner/repo` (GitHub) or the project's full path (GitLab).
    pub repository: String,
    /// What to list.
    #[serde(default = "issues")]
    pub kind: PollKind,
    /// Items carrying all these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Items assigned to this user.
    #[serde(default)]
    pub assignee: Option<String>,
    /// A search query instead (GitHub search syntax; GitLab `search`).
    #[serde(default)]
    pub query: Option<String>,
    /// Time between polls (default 60s).
    #[serde(default = "minute", with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub interval: Duration,
    /// An item that changed (new `updated_at`) fires again.
    #[serde(default)]
    pub on_update: bool,
    /// On the very first poll, dispatch the items already there (default: only remember
    /// them, so enabling a poll does not replay history).
    #[serde(default)]
    pub replay_existing: bool,
}

fn issues() -> PollKind {
    PollKind::Issues
}

/// A cron schedule.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// 5 fields (`m h dom mon dow`) or 6 with seconds first.
    pub cron: String,
    /// IANA time zone (default `UTC`), e.g. `Europe/Berlin`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// While the previous session is unfinished.
    #[serde(default)]
    pub overlap: Overlap,
    /// Firings missed while the daemon was down.
    #[serde(default)]
    pub misfire: Misfire,
    /// With `catch_up`: at most this many missed firings run (default 1).
    #[serde(default = "one")]
    pub max_catch_up: u32,
}

fn utc() -> String {
    "UTC".into()
}

/// A context entry: a JSONPath query (text starting with `$`), a template (text with
/// `{{ }}`), or a literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextValue {
    /// A query: the node (singular), or the array of nodes.
    Path(JsonPathExpr),
    /// A template.
    Template(Template),
    /// A fixed value.
    Literal(Value),
}

impl<'de> Deserialize<'de> for ContextValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) if s.starts_with('$') => JsonPathExpr::parse(&s)
                .map(ContextValue::Path)
                .map_err(serde::de::Error::custom),
            Value::String(s) if s.contains("{{") => Template::parse(&s)
                .map(ContextValue::Template)
                .map_err(serde::de::Error::custom),
            other => Ok(ContextValue::Literal(other)),
        }
    }
}

impl Serialize for ContextValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ContextValue::Path(p) => p.serialize(s),
            ContextValue::Template(t) => t.serialize(s),
            ContextValue::Literal(v) => v.serialize(s),
        }
    }
}

impl schemars::JsonSchema for ContextValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ContextValue".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A JSONPath query (`$.issue.number`), a template (`#{{ $.issue.number }}`) or a literal value."
        })
    }
}

/// Settings shared through `defaults:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Workflow id (or absolute path).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Goal template.
    #[serde(default)]
    pub goal: Option<Template>,
    /// Where sessions of this trigger work (a path, or a repository to clone).
    #[serde(default)]
    pub workspace: Option<WorkspaceDef>,
    /// Base branch of session worktrees.
    #[serde(default)]
    pub base_branch: Option<String>,
    /// Agent profile.
    #[serde(default)]
    pub agent: Option<String>,
    /// Budget overrides for the runs this trigger starts.
    #[serde(default)]
    pub limits: Option<RunLimits>,
    /// Queue priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// How many runs of this trigger may run at once, and what happens to more.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// What happens to the finished work (pull request, commit only, webhook, none).
    #[serde(default)]
    pub delivery: Option<DeliverySettings>,
    /// Workspace hooks.
    #[serde(default)]
    pub hooks: Option<WorkspaceHooks>,
    /// Forge identity (polls, reconciliation, GitLab commenter checks, labels).
    #[serde(default)]
    pub identity: Option<String>,
    /// How a failed dispatch is retried.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// What happens to a running session whose source item no longer qualifies.
    #[serde(default)]
    pub reconcile: Option<ReconcilePolicy>,
}

/// One trigger as written.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    /// Unique id (letters, digits, `-`, `_`); the webhook URL is `/webhooks/<id>`.
    pub id: String,
    /// `false` keeps the trigger but records its events as `trigger_disabled`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// For humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Where events come from.
    pub source: Source,
    /// Workflow id (or absolute path).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Goal template (`Fix #{{ $.issue.number }}: {{ $.issue.title }}`).
    #[serde(default)]
    pub goal: Option<Template>,
    /// Context of the session: key → query, template or literal.
    #[serde(default)]
    pub context: BTreeMap<String, ContextValue>,
    /// Dispatch condition.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Where sessions of this trigger work (a path, or a repository to clone).
    #[serde(default)]
    pub workspace: Option<WorkspaceDef>,
    /// Base branch.
    #[serde(default)]
    pub base_branch: Option<String>,
    /// Agent profile.
    #[serde(default)]
    pub agent: Option<String>,
    /// Budget overrides for the runs this trigger starts.
    #[serde(default)]
    pub limits: Option<RunLimits>,
    /// Queue priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Review-style sessions (detached worktree).
    #[serde(default)]
    pub readonly: bool,
    /// How many runs of this trigger may run at once, and what happens to more.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// What happens to the finished work (pull request, commit only, webhook, none).
    #[serde(default)]
    pub delivery: Option<DeliverySettings>,
    /// Workspace hooks.
    #[serde(default)]
    pub hooks: Option<WorkspaceHooks>,
    /// Forge identity.
    #[serde(default)]
    pub identity: Option<String>,
    /// How a failed dispatch is retried.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// What happens to a running session whose source item no longer qualifies.
    #[serde(default)]
    pub reconcile: Option<ReconcilePolicy>,
    /// Notifications about this trigger's sessions (besides the global notifiers).
    #[serde(default)]
    pub notify: Option<TriggerNotify>,
}

/// Where sessions work, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workspace {
    /// A local directory.
    Path(String),
    /// A clone URL.
    Clone(String),
}

/// A trigger with its defaults applied and its references checked.
#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    /// The trigger's id (unique in triggers.yml; names it in decisions and caps).
    pub id: String,
    /// Off: events are received and recorded as ignored, nothing is dispatched.
    pub enabled: bool,
    /// What the trigger is for, for the operator.
    pub description: Option<String>,
    /// Where its events come from (webhook, poll or schedule) and that source's settings.
    pub source: Source,
    /// The workflow its sessions run (id or path).
    pub workflow: String,
    /// The session goal, rendered from the event.
    pub goal: Template,
    /// How the session's start context is built from the event: for each context key, a
    /// JSONPath query, a template or a literal value.
    pub context: BTreeMap<String, ContextValue>,
    /// Dispatch only events for which this condition holds.
    pub when: Option<Condition>,
    /// Where sessions of this trigger work (a path, or a repository to clone).
    pub workspace: Option<Workspace>,
    /// Base branch the session branch starts from; `None` uses the workspace's default.
    pub base_branch: Option<String>,
    /// Agent profile from config.yaml (default: `daemon.default_agent`).
    pub agent: Option<String>,
    /// Budget overrides for the runs it starts.
    pub limits: RunLimits,
    /// Queue priority of its runs (higher runs first).
    pub priority: i32,
    /// Review-style runs: a detached worktree, nothing delivered.
    pub readonly: bool,
    /// How many runs of this trigger may run at once, and what happens to more.
    pub concurrency: Concurrency,
    /// What happens to the finished work (pull request, commit only, webhook, none).
    pub delivery: Option<DeliverySettings>,
    /// Hooks (trigger's over workspace's).
    pub hooks: Option<WorkspaceHooks>,
    /// Name of the forge identity from config.yaml, used for polls, reconciliation, commenter
    /// checks and labels; `None` when the trigger names none.
    pub identity: Option<String>,
    /// Automatic retries of a source item whose session failed.
    pub retry: RetryPolicy,
    /// What happens to a running session whose source item stops qualifying.
    pub reconcile: ReconcilePolicy,
    /// Notifications about its sessions.
    pub notify: TriggerNotify,
}

/// A parsed, validated `triggers.yml`.
#[derive(Debug, Clone, Default)]
pub struct TriggerIndex {
    /// Triggers by id, in file order of ids.
    pub triggers: BTreeMap<String, Arc<Trigger>>,
    /// Identities by name.
    pub identities: BTreeMap<String, IdentityDef>,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, NotifierDef>,
    /// SHA-256 of the file's bytes (hex), to tell reloads apart.
    pub digest: String,
}

impl TriggerIndex {
    /// A trigger by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Trigger>> {
        self.triggers.get(id)
    }

    /// The notifiers told about `event` of a session started by `trigger` (`None`, or an
    /// id no longer configured: a spawned session, which the global notifiers hear of),
    /// by name, each once.
    pub fn notifiers_for(
        &self,
        trigger: Option<&str>,
        event: NotifyEvent,
    ) -> Vec<(&str, &NotifierDef)> {
        let default = TriggerNotify::default();
        let notify = trigger
            .and_then(|t| self.triggers.get(t))
            .map_or(&default, |t| &t.notify);
        if notify.events.as_ref().is_some_and(|e| !e.contains(&event)) {
            return Vec::new();
        }
        self.notifiers
            .iter()
            .filter(|(name, def)| {
                ((def.global && notify.global) || notify.to.iter().any(|n| n == *name))
                    && def.wants(event)
            })
            .map(|(name, def)| (name.as_str(), def))
            .collect()
    }

    /// The identity to act as on `kind`: the one named, else the first (by name) of
    /// that forge. The error says what to add to `triggers.yml`.
    pub fn identity_for(
        &self,
        identity: Option<&str>,
        kind: ForgeKind,
    ) -> Result<(&str, &IdentityDef), String> {
        let (name, def) = match identity {
            Some(n) => self
                .identities
                .get_key_value(n)
                .ok_or_else(|| format!("no identity `{n}` under `identities:` in triggers.yml"))?,
            None => self
                .identities
                .iter()
                .find(|(_, d)| d.forge_kind() == kind)
                .ok_or_else(|| {
                    format!(
                        "no {} identity under `identities:` in triggers.yml",
                        kind.as_str()
                    )
                })?,
        };
        if def.forge_kind() != kind {
            return Err(format!(
                "identity `{name}` is a {} identity, the item is on {}",
                def.forge_kind().as_str(),
                kind.as_str()
            ));
        }
        Ok((name.as_str(), def))
    }

    /// Every secret value the file resolves — forge tokens, GitHub App keys, webhook
    /// secrets and tokens — so the daemon can redact them from what agents and hooks
    /// print (an agent must never see, or echo into a recorded event, a credential it was
    /// not given).
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<&EnvString> = Vec::new();
        for identity in self.identities.values() {
            match identity {
                IdentityDef::Github(g) => out.push(&g.token),
                IdentityDef::GithubApp(a) => out.extend(a.private_key.iter()),
                IdentityDef::Gitlab(g) => out.push(&g.token),
            }
        }
        for n in self.notifiers.values() {
            out.push(&n.url);
            out.extend(n.secret.iter());
        }
        for t in self.triggers.values() {
            match &t.source {
                Source::Webhook(w) => out.push(&w.secret),
                Source::GithubWebhook(w) => out.push(&w.secret),
                Source::GitlabWebhook(w) => {
                    out.extend(w.token.iter());
                    out.extend(w.signing_token.iter());
                }
                Source::GithubPoll(_) | Source::GitlabPoll(_) | Source::Schedule(_) => {}
            }
        }
        let mut values: Vec<String> = out
            .into_iter()
            .map(|s| s.value().to_owned())
            // Short values would redact ordinary words; such secrets are weak anyway.
            .filter(|v| v.len() >= 8)
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// A `triggers.yml` problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// Path of the `triggers.yml` file the problem is in.
    pub file: String,
    /// 1-based line (when known).
    pub line: Option<usize>,
    /// 1-based column (when known).
    pub column: Option<usize>,
    /// Path in the document (`triggers[2].source.github_webhook.secret`).
    pub path: Option<String>,
    /// What is wrong, and what to do.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = self.file.clone();
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
            if let Some(c) = self.column {
                s.push_str(&format!(":{c}"));
            }
        }
        s.push_str(": ");
        if let Some(p) = self.path.as_deref().filter(|p| !p.is_empty() && *p != ".") {
            s.push_str(&format!("at `{p}`: "));
        }
        s.push_str(&self.message);
        s
    }
}

/// Parse and validate `text` (the contents of `file`) with variables from `env`.
pub fn load(file: &str, text: &str, env: &EnvSource) -> Result<TriggerIndex, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    let parsed: Result<TriggersFile, _> = with_env(env, || {
        serde_path_to_error::deserialize::<_, TriggersFile>(de)
    });
    let parsed = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        ConfigError {
            file: file.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            path: Some(path),
            message: with_suggestion(&strip_position(&inner.to_string())),
        }
    })?;
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    resolve(file, text, parsed, digest)
}

/// Drop serde's " at line X column Y" suffix (the position is reported separately).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Append "did you mean `x`?" to serde's unknown field/variant messages.
fn with_suggestion(message: &str) -> String {
    let unknown = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()));
    let (Some(start), Some(list_at)) = (unknown, message.find("expected one of ")) else {
        return message.to_owned();
    };
    let Some(len) = message[start..].find('`') else {
        return message.to_owned();
    };
    let bad = &message[start..start + len];
    let best = message[list_at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (strsim::jaro_winkler(bad, cand), cand))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, cand)) => format!("{message} — did you mean `{cand}`?"),
        None => message.to_owned(),
    }
}

/// Best-effort line of the `n`th (0-based) occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str, n: usize) -> Option<usize> {
    let mut from = 0;
    let mut seen = 0;
    while let Some(i) = text[from..].find(needle) {
        let at = from + i;
        if seen == n {
            return Some(text[..at].matches('\n').count() + 1);
        }
        seen += 1;
        from = at + needle.len();
    }
    None
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn resolve(
    file: &str,
    text: &str,
    f: TriggersFile,
    digest: String,
) -> Result<TriggerIndex, ConfigError> {
    let err = |path: String, line: Option<usize>, message: String| ConfigError {
        file: file.to_owned(),
        line,
        column: None,
        path: Some(path),
        message,
    };
    if f.version != FILE_VERSION {
        return Err(err(
            "version".into(),
            line_of(text, "version:", 0),
            format!(
                "unsupported version {} (this build reads version {FILE_VERSION})",
                f.version
            ),
        ));
    }
    for (name, id) in &f.identities {
        if let IdentityDef::GithubApp(app) = id
            && app.private_key.is_some() == app.private_key_file.is_some()
        {
            return Err(err(
                format!("identities.{name}.github_app"),
                line_of(text, &format!("{name}:"), 0),
                "give exactly one of `private_key` and `private_key_file`".into(),
            ));
        }
    }
    for (name, n) in &f.notifications {
        let at = format!("notifications.{name}");
        let line = line_of(text, &format!("{name}:"), 0);
        if !valid_id(name) {
            return Err(err(
                at,
                line,
                format!("notifier name `{name}` must be 1–64 letters, digits, `-` or `_`"),
            ));
        }
        let url = n.url.value();
        let scheme_ok = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if scheme_ok.is_none() {
            // Never echo the value: it is usually a secret webhook URL.
            return Err(err(
                format!("{at}.url"),
                line_of(text, n.url.raw(), 0).or(line),
                format!(
                    "`{}` is not an http(s) URL (write the webhook URL, or `$VAR` naming the variable that holds it)",
                    n.url.raw()
                ),
            ));
        }
        match (n.kind, &n.secret) {
            (NotifierKind::Webhook, None) => {
                return Err(err(
                    format!("{at}.secret"),
                    line,
                    "a `webhook` notifier signs what it sends: add `secret: $VAR` naming the variable holding the HMAC key".into(),
                ));
            }
            (NotifierKind::Slack | NotifierKind::Discord, Some(s)) => {
                return Err(err(
                    format!("{at}.secret"),
                    line_of(text, s.raw(), 0).or(line),
                    format!(
                        "only `webhook` notifiers are signed; a {} webhook URL is its own secret: remove `secret`",
                        n.kind.as_str()
                    ),
                ));
            }
            (NotifierKind::Webhook, Some(_))
            | (NotifierKind::Slack | NotifierKind::Discord, None) => {}
        }
        if n.events.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                format!("{at}.events"),
                line,
                "`events: []` would never notify; list some of completed, failed, waiting_for_approval, delivery_failed (or leave it out for all)".into(),
            ));
        }
        if n.max_per_minute == 0 {
            return Err(err(
                format!("{at}.max_per_minute"),
                line_of(text, "max_per_minute:", 0).or(line),
                "max_per_minute must be at least 1".into(),
            ));
        }
    }
    let d = f.defaults;
    let mut triggers = BTreeMap::new();
    let mut seen_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, t) in f.triggers.into_iter().enumerate() {
        let at = format!("triggers[{i}]");
        let line = line_of(text, &format!("id: {}", t.id), 0);
        if !valid_id(&t.id) {
            return Err(err(
                format!("{at}.id"),
                line,
                format!(
                    "trigger id `{}` must be 1–64 letters, digits, `-` or `_` (it is part of the webhook URL)",
                    t.id
                ),
            ));
        }
        let n = seen_ids.entry(t.id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            return Err(err(
                format!("{at}.id"),
                line_of(text, &format!("id: {}", t.id), *n - 1),
                format!("duplicate trigger id `{}`; ids must be unique", t.id),
            ));
        }
        let id = t.id.clone();
        let workflow = t.workflow.or(d.workflow.clone()).ok_or_else(|| {
            err(
                at.clone(),
                line,
                format!("trigger `{id}` has no `workflow` (set it, or `defaults.workflow`)"),
            )
        })?;
        let goal = match t.goal.or(d.goal.clone()) {
            Some(g) => g,
            None => match &t.source {
                Source::Schedule(_) => Template::parse(&format!("Scheduled run of {id}"))
                    .map_err(|m| err(at.clone(), line, m))?,
                Source::Webhook(_)
                | Source::GithubWebhook(_)
                | Source::GitlabWebhook(_)
                | Source::GithubPoll(_)
                | Source::GitlabPoll(_) => {
                    return Err(err(
                        at,
                        line,
                        format!(
                            "trigger `{id}` has no `goal` (e.g. `goal: \"Fix #{{{{ $.issue.number }}}}: {{{{ $.issue.title }}}}\"`)"
                        ),
                    ));
                }
            },
        };
        let identity = t.identity.or(d.identity.clone());
        if let Some(name) = &identity
            && !f.identities.contains_key(name)
        {
            return Err(err(
                format!("{at}.identity"),
                line_of(text, &format!("identity: {name}"), 0),
                format!(
                    "identity `{name}` is not defined under `identities:` (known: {})",
                    f.identities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let want_forge = match &t.source {
            Source::GithubPoll(_) => Some("github"),
            Source::GitlabPoll(_) => Some("gitlab"),
            Source::Webhook(_)
            | Source::GithubWebhook(_)
            | Source::GitlabWebhook(_)
            | Source::Schedule(_) => None,
        };
        if let Some(forge) = want_forge {
            let Some(name) = &identity else {
                return Err(err(
                    format!("{at}.identity"),
                    line,
                    format!(
                        "a {} trigger needs an `identity` to call the API",
                        t.source.provider()
                    ),
                ));
            };
            let kind = match f.identities.get(name) {
                Some(IdentityDef::Github(_) | IdentityDef::GithubApp(_)) => "github",
                Some(IdentityDef::Gitlab(_)) | None => "gitlab",
            };
            if kind != forge {
                return Err(err(
                    format!("{at}.identity"),
                    line_of(text, &format!("identity: {name}"), 0),
                    format!(
                        "identity `{name}` is a {kind} identity; {} needs a {forge} one",
                        t.source.provider()
                    ),
                ));
            }
        }
        match &t.source {
            Source::Schedule(s) => {
                crate::schedule::CronSchedule::parse(&s.cron, &s.timezone).map_err(|m| {
                    err(
                        format!("{at}.source.schedule"),
                        line_of(text, &s.cron, 0),
                        m,
                    )
                })?;
            }
            Source::GitlabWebhook(g) if g.token.is_none() && g.signing_token.is_none() => {
                return Err(err(
                    format!("{at}.source.gitlab_webhook"),
                    line,
                    "a GitLab webhook needs `token` (X-Gitlab-Token) or `signing_token` (webhook-signature), or both".into(),
                ));
            }
            Source::GithubPoll(p) | Source::GitlabPoll(p) => {
                if p.interval < Duration::from_secs(10) {
                    return Err(err(
                        format!("{at}.source.{}.interval", t.source.provider()),
                        line_of(text, "interval:", 0),
                        "a poll interval under 10s would exhaust the API rate limit".into(),
                    ));
                }
                let ok = matches!(
                    (&t.source, p.kind),
                    (
                        Source::GithubPoll(_),
                        PollKind::Issues | PollKind::PullRequests
                    ) | (
                        Source::GitlabPoll(_),
                        PollKind::Issues | PollKind::MergeRequests
                    )
                );
                if !ok {
                    return Err(err(
                        format!("{at}.source.{}.kind", t.source.provider()),
                        line_of(text, "kind:", 0),
                        "GitHub polls list `issues` or `pull_requests`; GitLab polls `issues` or `merge_requests`".into(),
                    ));
                }
            }
            Source::Webhook(_) | Source::GithubWebhook(_) | Source::GitlabWebhook(_) => {}
        }
        let ws_def = t.workspace.or(d.workspace.clone());
        let workspace = match &ws_def {
            None => None,
            Some(w) => match (&w.path, &w.clone) {
                (Some(p), None) => {
                    if !std::path::Path::new(p.value()).is_absolute() {
                        return Err(err(
                            format!("{at}.workspace.path"),
                            line_of(text, p.raw(), 0),
                            format!("workspace path `{}` must be absolute", p.value()),
                        ));
                    }
                    Some(Workspace::Path(p.value().to_owned()))
                }
                (None, Some(c)) => Some(Workspace::Clone(c.value().to_owned())),
                _ => {
                    return Err(err(
                        format!("{at}.workspace"),
                        line,
                        "a workspace has exactly one of `path` and `clone`".into(),
                    ));
                }
            },
        };
        let ws_hooks = ws_def.as_ref().and_then(|w| w.hooks.clone());
        let hooks = match (t.hooks.or(d.hooks.clone()), ws_hooks) {
            (Some(h), Some(w)) => Some(h.or(&w)),
            (h, w) => h.or(w),
        };
        let mut reconcile = t.reconcile.or(d.reconcile.clone()).unwrap_or_default();
        if let Source::GithubPoll(p) | Source::GitlabPoll(p) = &t.source {
            if reconcile.labels.is_empty() {
                reconcile.labels = p.labels.clone();
            }
            if reconcile.assignee.is_none() {
                reconcile.assignee = p.assignee.clone();
            }
        }
        let delivery = t.delivery.or(d.delivery.clone());
        if let Some(name) = delivery.as_ref().and_then(|d| d.identity.as_ref())
            && !f.identities.contains_key(name)
        {
            return Err(err(
                format!("{at}.delivery.identity"),
                line_of(text, &format!("identity: {name}"), 0),
                format!("delivery identity `{name}` is not defined under `identities:`"),
            ));
        }
        let retry = t.retry.or(d.retry.clone()).unwrap_or_default();
        if retry.max_dispatch_attempts == 0 {
            return Err(err(
                format!("{at}.retry.max_dispatch_attempts"),
                line_of(text, "max_dispatch_attempts:", 0),
                "max_dispatch_attempts must be at least 1".into(),
            ));
        }
        let notify = t.notify.unwrap_or_default();
        if let Some(unknown) = notify
            .to
            .iter()
            .find(|n| !f.notifications.contains_key(n.as_str()))
        {
            return Err(err(
                format!("{at}.notify.to"),
                line_of(text, unknown, 0).or(line),
                format!(
                    "notifier `{unknown}` is not defined under `notifications:` (known: {})",
                    f.notifications
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if notify.events.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                format!("{at}.notify.events"),
                line,
                "`events: []` would never notify; leave it out for all events".into(),
            ));
        }
        let trigger = Trigger {
            id: id.clone(),
            enabled: t.enabled,
            description: t.description,
            source: t.source,
            workflow,
            goal,
            context: t.context,
            when: t.when,
            workspace,
            base_branch: t.base_branch.or(d.base_branch.clone()),
            agent: t.agent.or(d.agent.clone()),
            limits: t.limits.or(d.limits.clone()).unwrap_or_default(),
            priority: t.priority.or(d.priority).unwrap_or(0),
            readonly: t.readonly,
            concurrency: t.concurrency.or(d.concurrency).unwrap_or_default(),
            delivery,
            hooks,
            identity,
            retry,
            reconcile,
            notify,
        };
        triggers.insert(id, Arc::new(trigger));
    }
    Ok(TriggerIndex {
        triggers,
        identities: f.identities,
        notifiers: f.notifications,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvSource {
        EnvSource::Map(
            [
                ("GH_SECRET".to_string(), "s3cret".to_string()),
                ("GH_TOKEN".to_string(), "ghp_x".to_string()),
            ]
            .into(),
        )
    }

    const BASE: &str = "\
version: 1
defaults:
  workflow: coding-task
  workspace: {path: /srv/app}
identities:
  bot:
    github: {token: $GH_TOKEN}
triggers:
  - id: labeled
    source:
      github_webhook:
        secret: ${GH_SECRET}
        events: [issues.labeled]
    goal: 'Fix #{{ $.issue.number }}: {{ $.issue.title }}'
    when: {path: $.label.name, equals: worktrain}
  - id: poll
    identity: bot
    workflow: bug-investigation
    goal: '{{ $.issue.title }}'
    source:
      github_poll: {repository: octo/app, labels: [worktrain], interval: 2m}
";

    #[test]
    fn defaults_and_secrets_resolve() {
        let idx = load("triggers.yml", BASE, &env()).unwrap();
        let t = idx.get("labeled").unwrap();
        assert_eq!(t.workflow, "coding-task");
        assert_eq!(t.workspace, Some(Workspace::Path("/srv/app".into())));
        let Source::GithubWebhook(gh) = &t.source else {
            panic!()
        };
        assert_eq!(gh.secret.value(), "s3cret");
        let p = idx.get("poll").unwrap();
        assert_eq!(p.workflow, "bug-investigation");
        assert_eq!(p.reconcile.labels, vec!["worktrain".to_string()]);
        assert!(
            !format!("{idx:?}").contains("s3cret"),
            "secrets never in Debug"
        );
    }

    #[test]
    fn secrets_lists_every_resolved_credential_of_useful_length() {
        let long = EnvSource::Map(
            [
                ("GH_SECRET".to_string(), "a-long-webhook-secret".to_string()),
                ("GH_TOKEN".to_string(), "ghp_0123456789abcdef".to_string()),
            ]
            .into(),
        );
        let idx = load("triggers.yml", BASE, &long).unwrap();
        let secrets = idx.secrets();
        assert_eq!(
            secrets,
            ["a-long-webhook-secret", "ghp_0123456789abcdef"],
            "webhook secret and identity token, once each"
        );
        // A six-character value would redact ordinary words; it is left out.
        let idx = load("triggers.yml", BASE, &env()).unwrap();
        assert!(!idx.secrets().contains(&"s3cret".to_owned()));
    }

    #[test]
    fn unknown_keys_have_position_and_suggestion() {
        let text = BASE.replace(
            "        events: [issues.labeled]",
            "        event: [issues.labeled]",
        );
        let e = load("triggers.yml", &text, &env()).unwrap_err();
        assert_eq!(e.line, Some(13), "{e}");
        assert!(e.column.is_some());
        assert!(e.message.contains("unknown field `event`"), "{e}");
        assert!(e.message.contains("did you mean `events`?"), "{e}");
        assert_eq!(
            e.path.as_deref(),
            Some("triggers[0].source.github_webhook.event")
        );
        assert!(e.to_string().starts_with("triggers.yml:13:"), "{e}");
        let text = BASE.replace("github_webhook:", "github_webhok:");
        let e = load("triggers.yml", &text, &env()).unwrap_err();
        assert!(e.message.contains("did you mean `github_webhook`?"), "{e}");
    }

    #[test]
    fn missing_variable_is_named_with_its_position() {
        let e = load("t.yml", BASE, &EnvSource::Map(BTreeMap::new())).unwrap_err();
        assert!(e.message.contains("`GH_TOKEN` is not set"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn semantic_errors() {
        let dup = BASE.replace("id: poll", "id: labeled");
        let e = load("t.yml", &dup, &env()).unwrap_err();
        assert!(e.message.contains("duplicate trigger id"), "{e}");
        assert_eq!(e.line, Some(16));
        let no_identity = BASE.replace("    identity: bot\n", "");
        let e = load("t.yml", &no_identity, &env()).unwrap_err();
        assert!(e.message.contains("needs an `identity`"), "{e}");
        let bad_ident = BASE.replace("identity: bot", "identity: nobody");
        assert!(
            load("t.yml", &bad_ident, &env())
                .unwrap_err()
                .message
                .contains("not defined")
        );
        let no_goal = BASE.replace("    goal: '{{ $.issue.title }}'\n", "");
        assert!(
            load("t.yml", &no_goal, &env())
                .unwrap_err()
                .message
                .contains("no `goal`")
        );
        let bad_path = BASE.replace("$.label.name", "label.name");
        let e = load("t.yml", &bad_path, &env()).unwrap_err();
        assert!(e.message.contains("invalid JSONPath"), "{e}");
        assert!(e.line.is_some());
        let v2 = BASE.replace("version: 1", "version: 2");
        assert!(
            load("t.yml", &v2, &env())
                .unwrap_err()
                .message
                .contains("unsupported version")
        );
        let bad_id = BASE.replace("id: poll", "id: 'a b'");
        assert!(
            load("t.yml", &bad_id, &env())
                .unwrap_err()
                .message
                .contains("letters, digits")
        );
    }
}
