//! Forge clients behind one trait, [`Forge`]: GitHub through `octocrab` (personal access
//! tokens, and GitHub App installation tokens — a JWT exchanged for a token that octocrab
//! renews before it expires) and GitLab through its REST v4 API with `reqwest`. Every
//! identity has an API base URL (GitHub Enterprise Server, self-managed GitLab, a local
//! fake in tests).
//!
//! Reads (what triggers need): list issues / pull requests / merge requests by label,
//! assignee or search query — following `Link: rel="next"` to the end, with `If-None-Match`
//! on the first page (a `304` means nothing changed and costs no rate limit) — and fetch
//! one item. Writes used by triggers: a comment and labels on an item (the delivery
//! pipeline adds pull requests, reviews and commit statuses beside them).
//!
//! Errors are classified ([`ForgeError::is_retryable`]): 5xx, network failures and rate
//! limits (primary: `x-ratelimit-remaining: 0` until `x-ratelimit-reset`; secondary:
//! `Retry-After`) can be retried later; 401/403/404/422 are final and carry a hint.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use worktrain_core::run::{ForgeKind, ItemKind};

pub mod github;
pub mod gitlab;
mod http_util;

pub use http_util::{RateLimit, next_link};

/// Credentials of an identity. Debug never shows the secret.
#[derive(Clone)]
pub enum Credentials {
    /// A personal, project or group access token.
    Token(String),
    /// A GitHub App installation.
    GithubApp {
        /// The GitHub App's numeric id (signs the JWT that mints installation tokens).
        app_id: u64,
        /// Id of the App's installation on the account or organisation that owns the repositories.
        installation_id: u64,
        /// The App's private key (PEM).
        private_key_pem: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::GithubApp {
                app_id,
                installation_id,
                ..
            } => write!(f, "GithubApp({app_id}, {installation_id}, key ***)"),
        }
    }
}

/// Open, closed or merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Open: still being worked on.
    Open,
    /// Closed without being merged (issues are always closed, never merged).
    Closed,
    /// Merged (pull and merge requests only).
    Merged,
}

/// An issue, pull request or merge request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Number (GitHub) or iid (GitLab).
    pub number: u64,
    /// Issue, PR (GitHub: `IssueOrPull`) or MR.
    pub kind: ItemKind,
    /// A GitHub pull request.
    pub pull: bool,
    /// The item's title, as on the forge.
    pub title: String,
    /// Whether the item is open, closed or merged.
    pub state: ItemState,
    /// Names of the labels on the item (GitHub label names, GitLab labels).
    pub labels: Vec<String>,
    /// Assignee logins / usernames.
    pub assignees: Vec<String>,
    /// `updated_at` as the forge wrote it.
    pub updated_at: String,
    /// The forge's JSON for it.
    pub raw: Value,
}

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Issues (without GitHub pull requests).
    Issues,
    /// GitHub pull requests.
    PullRequests,
    /// GitLab merge requests.
    MergeRequests,
}

/// A listing query (open items).
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// `owner/repo` or the GitLab project path.
    pub repo: String,
    /// Which kind of item to list.
    pub kind: ListKind,
    /// All of these labels.
    pub labels: Vec<String>,
    /// Only items assigned to this login / username; `None` for any assignee.
    pub assignee: Option<String>,
    /// A search query instead of label/assignee filters (GitHub search syntax, GitLab `search`).
    pub query: Option<String>,
    /// Page size (default 100).
    pub per_page: u32,
}

/// The result of a listing.
#[derive(Debug, Clone)]
pub enum Listing {
    /// `304`: unchanged since the ETag sent.
    NotModified {
        /// Rate-limit headers of the answer.
        rate: RateLimit,
    },
    /// The items, all pages fetched.
    Items {
        /// Items of all pages.
        items: Vec<Item>,
        /// ETag of the first page.
        etag: Option<String>,
        /// Number of pages fetched (the paging stops at the last page).
        pages: u32,
        /// Rate-limit headers of the last answer.
        rate: RateLimit,
    },
}

/// A forge failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// Rate limited: try again after `retry_after`.
    #[error("rate limited ({kind}): {message}; retry in {} s", retry_after.as_secs())]
    RateLimited {
        /// `primary` or `secondary`.
        kind: &'static str,
        /// How long to wait.
        retry_after: Duration,
        /// The forge's message.
        message: String,
    },
    /// An HTTP error answer.
    #[error("{status}: {message}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Http {
        /// The HTTP status code of the answer.
        status: u16,
        /// The forge's message.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The forge could not be reached.
    #[error("network: {0}")]
    Network(String),
    /// The answer did not parse, or a configuration problem.
    #[error("{0}")]
    Invalid(String),
}

impl ForgeError {
    /// Whether trying again later can succeed (5xx, 429/rate limits, network).
    pub fn is_retryable(&self) -> bool {
        match self {
            ForgeError::RateLimited { .. } | ForgeError::Network(_) => true,
            ForgeError::Http { status, .. } => *status >= 500 || *status == 429,
            ForgeError::Invalid(_) => false,
        }
    }

    /// An HTTP error from status and body, classified (rate limits recognised by headers
    /// and GitHub's bodies).
    pub fn from_answer(status: u16, headers: &http::HeaderMap, body: &str) -> ForgeError {
        let rate = RateLimit::from_headers(headers);
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let lower = message.to_ascii_lowercase();
        if status == 429 || status == 403 {
            if let Some(after) = rate.retry_after {
                return ForgeError::RateLimited {
                    kind: "secondary",
                    retry_after: after,
                    message,
                };
            }
            if rate.remaining == Some(0) || lower.contains("rate limit") {
                let wait = rate.reset_in().unwrap_or(Duration::from_secs(60));
                return ForgeError::RateLimited {
                    kind: if lower.contains("secondary") || lower.contains("abuse") {
                        "secondary"
                    } else {
                        "primary"
                    },
                    retry_after: wait,
                    message,
                };
            }
            if lower.contains("abuse") || lower.contains("secondary") {
                return ForgeError::RateLimited {
                    kind: "secondary",
                    retry_after: Duration::from_secs(60),
                    message,
                };
            }
        }
        let hint = match status {
            401 => Some("the token is missing, expired or revoked".to_owned()),
            403 => Some("the token lacks a scope or permission for this".to_owned()),
            404 => {
                Some("no such repository/project or item, or the token cannot see it".to_owned())
            }
            422 => Some("the forge refused the request as invalid".to_owned()),
            _ => None,
        };
        ForgeError::Http {
            status,
            message,
            hint,
        }
    }
}

/// A forge, whichever it is.
#[async_trait]
pub trait Forge: Send + Sync + 'static {
    /// GitHub or GitLab.
    fn kind(&self) -> ForgeKind;

    /// Every open item matching `query` (all pages). With `etag`, a first page that did
    /// not change answers [`Listing::NotModified`].
    async fn list(&self, query: &ListQuery, etag: Option<&str>) -> Result<Listing, ForgeError>;

    /// The issue, pull request or merge request `number` of `repo`; an unknown number is an
    /// error from the forge (404).
    async fn item(&self, repo: &str, kind: ItemKind, number: u64) -> Result<Item, ForgeError>;

    /// GitLab: the project access level of a user (`None`: not a member). GitHub: `None`.
    async fn access_level(&self, repo: &str, user_id: u64) -> Result<Option<u32>, ForgeError>;

    /// Add labels to an item.
    async fn add_labels(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        labels: &[String],
    ) -> Result<(), ForgeError>;

    /// Comment on an item.
    async fn comment(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError>;

    /// Open a pull/merge request for `spec.head`, or find the open one that exists for
    /// it (also when creating answers "already exists"): never a second one. Labels,
    /// reviewers and assignees are added to it.
    async fn open_pull(&self, spec: &PullSpec) -> Result<PullRequest, ForgeError>;

    /// Write a comment on an item that carries `marker` (a hidden HTML comment in
    /// `body`): an existing comment with the marker is updated, never duplicated.
    async fn upsert_comment(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<CommentRef, ForgeError>;

    /// Set a commit status.
    async fn commit_status(&self, status: &CommitStatus) -> Result<(), ForgeError>;

    /// Post a review on a pull/merge request: the verdict, the summary and inline
    /// comments on the diff (GitHub: one review with `commit_id` = the head; GitLab: a
    /// discussion per inline comment, a summary note, an approval for `approve`).
    /// Comments on lines outside the diff are folded into the summary. Idempotent: every
    /// part carries `spec.marker`, and what a forge already holds is never posted again.
    async fn post_review(&self, spec: &ReviewSpec) -> Result<ReviewRef, ForgeError>;

    /// A token for HTTPS git pushes that this identity mints itself — a GitHub App's
    /// installation token, fetched (or renewed when it expires) on demand. `None` for
    /// token identities: their configured token is used.
    async fn push_token(&self) -> Result<Option<String>, ForgeError>;
}

/// The verdict of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    /// Approve the change.
    Approve,
    /// Ask for changes before it can merge.
    RequestChanges,
    /// Comment only, no verdict.
    Comment,
}

impl ReviewVerdict {
    /// The artifact's spelling (`approve`, `request_changes`, `comment`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Self::Approve),
            "request_changes" => Some(Self::RequestChanges),
            "comment" => Some(Self::Comment),
            _ => None,
        }
    }

    /// The artifact's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::RequestChanges => "request_changes",
            Self::Comment => "comment",
        }
    }
}

/// Which side of the diff an inline comment is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum DiffSide {
    /// The old file (a removed or context line, numbered in the old file).
    Left,
    /// The new file (an added or context line, numbered in the new file).
    Right,
}

/// One inline comment of a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineComment {
    /// Path in the repository.
    pub path: String,
    /// The (last) line commented on, 1-based, in the file of `side`.
    pub line: u64,
    /// The first line of a multi-line range.
    pub start_line: Option<u64>,
    /// Old or new file.
    pub side: DiffSide,
    /// The comment's text (markdown), posted as written.
    pub body: String,
}

/// A review to post (see [`Forge::post_review`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSpec {
    /// `owner/repo` or the GitLab project path.
    pub repo: String,
    /// Pull request number or merge request iid.
    pub number: u64,
    /// Approve, request changes, or comment only.
    pub verdict: ReviewVerdict,
    /// The summary (markdown).
    pub body: String,
    /// Comments on lines of the diff; empty for a summary-only review.
    pub comments: Vec<InlineComment>,
    /// A hidden HTML comment naming the session: finds what an earlier attempt posted.
    pub marker: String,
}

/// A review as posted (or found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewRef {
    /// The review's (GitHub) or summary note's (GitLab) id.
    pub id: u64,
    /// Its web address.
    pub url: Option<String>,
    /// Inline comments posted on the diff.
    pub inline: usize,
    /// Inline comments folded into the summary (their lines are not in the diff).
    pub folded: usize,
    /// True when an earlier attempt had posted it already (nothing was posted now).
    pub reused: bool,
}

/// The summary of a review: the body, the comments that could not go on the diff (with
/// their place), and the marker last.
pub fn review_body(spec: &ReviewSpec, folded: &[&InlineComment], marker: &str) -> String {
    let mut b = spec.body.trim_end().to_owned();
    if !folded.is_empty() {
        b.push_str("\n\n**Comments on lines outside the diff**\n");
        for c in folded {
            let lines = match c.start_line {
                Some(s) => format!("{s}-{}", c.line),
                None => c.line.to_string(),
            };
            let side = match c.side {
                DiffSide::Left => " (old file)",
                DiffSide::Right => "",
            };
            b.push_str(&format!(
                "\n- `{}:{lines}`{side}: {}",
                c.path,
                c.body.trim()
            ));
        }
    }
    b.push_str("\n\n");
    b.push_str(marker);
    b
}

/// The lines of a unified diff patch (GitHub's `patch` of a pull request file, GitLab's
/// `diff`) a review comment can be placed on: `(side, line)` for every added, removed and
/// context line of its hunks.
pub fn commentable_lines(patch: &str) -> std::collections::BTreeSet<(DiffSide, u64)> {
    let mut out = std::collections::BTreeSet::new();
    let (mut old, mut new) = (0u64, 0u64);
    let mut in_hunk = false;
    for l in patch.lines() {
        if let Some(rest) = l.strip_prefix("@@ ") {
            // `@@ -a,b +c,d @@`
            let mut parts = rest.split_whitespace();
            let o = parts.next().and_then(|p| p.strip_prefix('-'));
            let n = parts.next().and_then(|p| p.strip_prefix('+'));
            let start = |s: Option<&str>| {
                s.and_then(|s| s.split(',').next())
                    .and_then(|x| x.parse::<u64>().ok())
            };
            match (start(o), start(n)) {
                (Some(a), Some(c)) => {
                    old = a;
                    new = c;
                    in_hunk = true;
                }
                _ => in_hunk = false,
            }
            continue;
        }
        if !in_hunk {
            continue;
        }
        match l.as_bytes().first() {
            Some(b'+') => {
                out.insert((DiffSide::Right, new));
                new += 1;
            }
            Some(b'-') => {
                out.insert((DiffSide::Left, old));
                old += 1;
            }
            Some(b'\\') => {}
            Some(_) | None => {
                out.insert((DiffSide::Left, old));
                out.insert((DiffSide::Right, new));
                old += 1;
                new += 1;
            }
        }
    }
    out
}

/// A pull/merge request to open (see [`Forge::open_pull`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullSpec {
    /// `owner/repo` or the GitLab project path.
    pub repo: String,
    /// The branch with the work (same repository).
    pub head: String,
    /// The branch it goes into.
    pub base: String,
    /// Title of the pull/merge request.
    pub title: String,
    /// Body (markdown).
    pub body: String,
    /// Open as a draft.
    pub draft: bool,
    /// Labels to add.
    pub labels: Vec<String>,
    /// Reviewers to request (logins / usernames).
    pub reviewers: Vec<String>,
    /// Assignees (logins / usernames).
    pub assignees: Vec<String>,
}

/// An opened (or found) pull/merge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequest {
    /// Number (GitHub) or iid (GitLab).
    pub number: u64,
    /// Its web page.
    pub url: String,
    /// True when an open one for the branch existed already and was reused.
    pub reused: bool,
}

/// A comment written by [`Forge::upsert_comment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommentRef {
    /// The comment's (note's) id.
    pub id: u64,
    /// Its web address, when the forge gives one.
    pub url: Option<String>,
    /// True when an existing comment carrying the marker was updated.
    pub updated: bool,
}

/// The state of a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    /// Work in progress.
    Pending,
    /// Completed successfully.
    Success,
    /// Did not succeed.
    Failure,
}

/// A commit status (GitHub `statuses`, GitLab `statuses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// `owner/repo` or the GitLab project path.
    pub repo: String,
    /// The full commit id the status is set on.
    pub sha: String,
    /// Pending, success or failure.
    pub state: StatusState,
    /// The link (the session in the console).
    pub target_url: Option<String>,
    /// A one-line description shown next to the status (the forges cut long ones).
    pub description: String,
    /// The status's name (`worktrain`).
    pub context: String,
}

/// Whether a GitHub `422` body says an open pull request for the head exists already
/// (both the legacy and the current form carry it in `errors[].message`).
pub fn is_pull_exists(message: &str, body: &str) -> bool {
    let hay = format!("{message} {body}").to_ascii_lowercase();
    hay.contains("a pull request already exists")
        || hay.contains("another open merge request already exists")
}

/// Build a client for an identity.
pub fn connect(
    kind: ForgeKind,
    api_url: Option<&str>,
    credentials: Credentials,
) -> Result<std::sync::Arc<dyn Forge>, ForgeError> {
    Ok(match kind {
        ForgeKind::Github => std::sync::Arc::new(github::GithubClient::new(
            api_url.unwrap_or(github::DEFAULT_API),
            credentials,
        )?),
        ForgeKind::Gitlab => {
            let Credentials::Token(token) = credentials else {
                return Err(ForgeError::Invalid("GitLab identities use a token".into()));
            };
            std::sync::Arc::new(gitlab::GitlabClient::new(
                api_url.unwrap_or(gitlab::DEFAULT_API),
                token,
            )?)
        }
    })
}
