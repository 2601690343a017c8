//! GitHub through octocrab: its auth (personal tokens; App JWT → installation tokens,
//! renewed before they expire) and transport; pages, ETags and rate limits read from the
//! raw answers.

use std::time::Duration;

use async_trait::async_trait;
use octocrab::Octocrab;
use serde_json::{Value, json};
use worktrain_core::run::{ForgeKind, ItemKind};

use crate::http_util::{RateLimit, next_link};
use crate::{
    CommentRef, CommitStatus, Credentials, DiffSide, Forge, ForgeError, InlineComment, Item,
    ItemState, ListKind, ListQuery, Listing, PullRequest, PullSpec, ReviewRef, ReviewSpec,
    ReviewVerdict, StatusState, commentable_lines, is_pull_exists, review_body,
};

/// github.com's API.
pub const DEFAULT_API: &str = "https://api.github.com";

/// Most pages followed in one listing (a safety bound; 100 items per page).
pub const MAX_PAGES: u32 = 100;

/// A GitHub client.
#[derive(Debug)]
pub struct GithubClient {
    api: String,
    octo: Octocrab,
    /// A GitHub App installation (its pushes use the installation token).
    app: bool,
}

fn net(e: octocrab::Error) -> ForgeError {
    match e {
        // An error answer octocrab read itself (e.g. the App's installation-token
        // exchange): classified like any other answer, not as a network failure.
        octocrab::Error::GitHub { source, .. } => {
            let h = source.headers.clone().unwrap_or_default();
            let body = json!({ "message": source.message }).to_string();
            ForgeError::from_answer(source.status_code.as_u16(), &h, &body)
        }
        other => ForgeError::Network(other.to_string()),
    }
}

impl GithubClient {
    /// A client for `api_url` with `credentials`.
    pub fn new(api_url: &str, credentials: Credentials) -> Result<Self, ForgeError> {
        let api = api_url.trim_end_matches('/').to_owned();
        let builder = Octocrab::builder()
            .base_uri(format!("{api}/"))
            .map_err(|e| ForgeError::Invalid(format!("API URL `{api}`: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)));
        let app = matches!(credentials, Credentials::GithubApp { .. });
        let octo = match credentials {
            Credentials::Token(t) => builder.personal_token(t).build().map_err(net)?,
            Credentials::GithubApp {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .map_err(|e| {
                        ForgeError::Invalid(format!(
                            "the GitHub App key is not an RSA PEM key: {e}"
                        ))
                    })?;
                let app = builder
                    .app(octocrab::models::AppId(app_id), key)
                    .build()
                    .map_err(net)?;
                app.installation(octocrab::models::InstallationId(installation_id))
                    .map_err(net)?
            }
        };
        Ok(Self { api, octo, app })
    }

    /// A URL of this API as the path octocrab joins to its base. octocrab only sends
    /// an App's installation token with requests that name no host (or name
    /// api.github.com), so an absolute URL of GitHub Enterprise Server (or a local fake)
    /// would go out without credentials; a URL elsewhere stays absolute (and unsigned).
    fn relative(&self, url: &str) -> String {
        match url.strip_prefix(&self.api) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            Some(_) | None => url.to_owned(),
        }
    }

    async fn get(
        &self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<(u16, http::HeaderMap, String), ForgeError> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/vnd.github+json"),
        );
        if let Some(e) = etag
            && let Ok(v) = http::HeaderValue::from_str(e)
        {
            headers.insert(http::header::IF_NONE_MATCH, v);
        }
        let resp = self
            .octo
            ._get_with_headers(self.relative(url), Some(headers))
            .await
            .map_err(net)?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = self.octo.body_to_string(resp).await.map_err(net)?;
        Ok((status, h, body))
    }

    async fn post(&self, url: &str, body: &Value) -> Result<(), ForgeError> {
        let resp = self
            .octo
            ._post(self.relative(url), Some(body))
            .await
            .map_err(net)?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let text = self.octo.body_to_string(resp).await.map_err(net)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ForgeError::from_answer(status, &h, &text))
        }
    }

    /// A write (`POST`/`PATCH`) answering its status, headers and body.
    async fn write(
        &self,
        method: http::Method,
        url: &str,
        body: &Value,
    ) -> Result<(u16, http::HeaderMap, String), ForgeError> {
        let resp = if method == http::Method::PATCH {
            self.octo._patch(self.relative(url), Some(body)).await
        } else {
            self.octo._post(self.relative(url), Some(body)).await
        }
        .map_err(net)?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let text = self.octo.body_to_string(resp).await.map_err(net)?;
        Ok((status, h, text))
    }

    /// A JSON answer of a successful GET, or the classified error.
    async fn get_json(&self, url: &str) -> Result<(Value, http::HeaderMap), ForgeError> {
        let (status, h, body) = self.get(url, None).await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &body));
        }
        let v = serde_json::from_str(&body)
            .map_err(|e| ForgeError::Invalid(format!("GitHub answered non-JSON for {url}: {e}")))?;
        Ok((v, h))
    }

    /// The open pull request whose head is `owner:branch`, if any.
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let owner = repo.split('/').next().unwrap_or_default();
        let head: String =
            url::form_urlencoded::byte_serialize(format!("{owner}:{head}").as_bytes()).collect();
        let url = format!(
            "{}/repos/{repo}/pulls?head={head}&state=open&per_page=100",
            self.api
        );
        let (v, _) = self.get_json(&url).await?;
        Ok(v.as_array()
            .and_then(|a| a.first())
            .and_then(|p| pull_of(p, true)))
    }

    fn list_url(&self, q: &ListQuery) -> String {
        let per = q.per_page.clamp(1, 100);
        if let Some(query) = &q.query {
            let kind = match q.kind {
                ListKind::PullRequests => "is:pr",
                ListKind::Issues | ListKind::MergeRequests => "is:issue",
            };
            let full = format!("{query} repo:{} is:open {kind}", q.repo);
            let enc: String = url::form_urlencoded::byte_serialize(full.as_bytes()).collect();
            return format!("{}/search/issues?q={enc}&per_page={per}", self.api);
        }
        match q.kind {
            ListKind::PullRequests => {
                format!(
                    "{}/repos/{}/pulls?state=open&per_page={per}",
                    self.api, q.repo
                )
            }
            ListKind::Issues | ListKind::MergeRequests => {
                let mut url = format!(
                    "{}/repos/{}/issues?state=open&per_page={per}",
                    self.api, q.repo
                );
                if !q.labels.is_empty() {
                    let labels: String =
                        url::form_urlencoded::byte_serialize(q.labels.join(",").as_bytes())
                            .collect();
                    url.push_str(&format!("&labels={labels}"));
                }
                if let Some(a) = &q.assignee {
                    url.push_str(&format!("&assignee={a}"));
                }
                url
            }
        }
    }
}

/// A pull request from its JSON.
fn pull_of(v: &Value, reused: bool) -> Option<PullRequest> {
    Some(PullRequest {
        number: v.get("number")?.as_u64()?,
        url: v
            .get("html_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        reused,
    })
}

/// Read a GitHub issue or pull request object.
pub fn parse_item(v: &Value) -> Option<Item> {
    let names = |k: &str, f: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get(f).and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let pull = v.get("pull_request").is_some() || v.get("head").is_some();
    let merged = v.get("merged_at").is_some_and(|m| !m.is_null())
        || v.pointer("/pull_request/merged_at")
            .is_some_and(|m| !m.is_null());
    let state = match (v.get("state").and_then(Value::as_str), merged) {
        (_, true) => ItemState::Merged,
        (Some("closed"), false) => ItemState::Closed,
        _ => ItemState::Open,
    };
    Some(Item {
        number: v.get("number")?.as_u64()?,
        kind: ItemKind::IssueOrPull,
        pull,
        title: v
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        state,
        labels: names("labels", "name"),
        assignees: names("assignees", "login"),
        updated_at: v
            .get("updated_at")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        raw: v.clone(),
    })
}

impl GithubClient {
    /// Every page of a JSON list (bounded by [`MAX_PAGES`]).
    async fn all_pages(&self, first: String) -> Result<Vec<Value>, ForgeError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (v, h) = self.get_json(&url).await?;
            out.extend(v.as_array().into_iter().flatten().cloned());
            match next_link(&h) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(out)
    }
}

/// A review comment in GitHub's shape (`line`/`side`, `start_line`/`start_side`).
fn github_comment(c: &InlineComment) -> Value {
    let side = match c.side {
        DiffSide::Left => "LEFT",
        DiffSide::Right => "RIGHT",
    };
    let mut v = json!({"path": c.path, "line": c.line, "side": side, "body": c.body});
    if let Some(s) = c.start_line {
        v["start_line"] = json!(s);
        v["start_side"] = json!(side);
    }
    v
}

/// A review from GitHub's answer.
fn review_of(v: &Value, inline: usize, folded: usize, reused: bool) -> ReviewRef {
    ReviewRef {
        id: v.get("id").and_then(Value::as_u64).unwrap_or(0),
        url: v.get("html_url").and_then(Value::as_str).map(str::to_owned),
        inline,
        folded,
        reused,
    }
}

#[async_trait]
impl Forge for GithubClient {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Github
    }

    async fn list(&self, q: &ListQuery, etag: Option<&str>) -> Result<Listing, ForgeError> {
        let mut url = self.list_url(q);
        let mut items = Vec::new();
        let mut first_etag = None;
        let mut pages = 0;
        let mut rate;
        loop {
            let (status, h, body) = self.get(&url, if pages == 0 { etag } else { None }).await?;
            rate = RateLimit::from_headers(&h);
            if status == 304 && pages == 0 {
                return Ok(Listing::NotModified { rate });
            }
            if !(200..300).contains(&status) {
                return Err(ForgeError::from_answer(status, &h, &body));
            }
            pages += 1;
            if pages == 1 {
                first_etag = h
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            let v: Value = serde_json::from_str(&body).map_err(|e| {
                ForgeError::Invalid(format!("GitHub answered non-JSON for {url}: {e}"))
            })?;
            let list = match &v {
                Value::Array(a) => a.clone(),
                Value::Object(o) => o
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            for x in &list {
                let Some(item) = parse_item(x) else { continue };
                let keep = match q.kind {
                    ListKind::Issues => !item.pull,
                    ListKind::PullRequests | ListKind::MergeRequests => item.pull,
                } && q
                    .labels
                    .iter()
                    .all(|l| item.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
                    && q.assignee
                        .as_ref()
                        .is_none_or(|a| item.assignees.iter().any(|x| x.eq_ignore_ascii_case(a)));
                if keep || q.query.is_some() {
                    items.push(item);
                }
            }
            match next_link(&h) {
                Some(next) if pages < MAX_PAGES => url = next,
                _ => break,
            }
            if rate.exhausted() {
                return Err(ForgeError::RateLimited {
                    kind: "primary",
                    retry_after: rate.reset_in().unwrap_or(Duration::from_secs(60)),
                    message: format!("the rate limit ran out after page {pages}"),
                });
            }
        }
        Ok(Listing::Items {
            items,
            etag: first_etag,
            pages,
            rate,
        })
    }

    async fn item(&self, repo: &str, _kind: ItemKind, number: u64) -> Result<Item, ForgeError> {
        let url = format!("{}/repos/{repo}/issues/{number}", self.api);
        let (status, h, body) = self.get(&url, None).await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &body));
        }
        let v: Value =
            serde_json::from_str(&body).map_err(|e| ForgeError::Invalid(e.to_string()))?;
        parse_item(&v).ok_or_else(|| ForgeError::Invalid(format!("{url}: not an issue")))
    }

    async fn access_level(&self, _repo: &str, _user: u64) -> Result<Option<u32>, ForgeError> {
        Ok(None)
    }

    async fn add_labels(
        &self,
        repo: &str,
        _kind: ItemKind,
        number: u64,
        labels: &[String],
    ) -> Result<(), ForgeError> {
        let url = format!("{}/repos/{repo}/issues/{number}/labels", self.api);
        self.post(&url, &json!({ "labels": labels })).await
    }

    async fn comment(
        &self,
        repo: &str,
        _kind: ItemKind,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let url = format!("{}/repos/{repo}/issues/{number}/comments", self.api);
        self.post(&url, &json!({ "body": body })).await
    }

    async fn open_pull(&self, spec: &PullSpec) -> Result<PullRequest, ForgeError> {
        let repo = &spec.repo;
        let pull = match self.find_pull(repo, &spec.head).await? {
            Some(p) => p,
            None => {
                let url = format!("{}/repos/{repo}/pulls", self.api);
                let body = json!({"title": spec.title, "head": spec.head, "base": spec.base,
                                  "body": spec.body, "draft": spec.draft});
                let (status, h, text) = self.write(http::Method::POST, &url, &body).await?;
                if (200..300).contains(&status) {
                    let v: Value = serde_json::from_str(&text).map_err(|e| {
                        ForgeError::Invalid(format!("creating a pull request: {e}"))
                    })?;
                    pull_of(&v, false).ok_or_else(|| {
                        ForgeError::Invalid("GitHub's pull request has no number".into())
                    })?
                } else {
                    let err = ForgeError::from_answer(status, &h, &text);
                    // Created meanwhile (by an earlier attempt whose answer was lost).
                    if status == 422 && is_pull_exists("", &text) {
                        self.find_pull(repo, &spec.head).await?.ok_or(err)?
                    } else {
                        return Err(err);
                    }
                }
            }
        };
        let n = pull.number;
        if !spec.labels.is_empty() {
            let url = format!("{}/repos/{repo}/issues/{n}/labels", self.api);
            self.post(&url, &json!({"labels": spec.labels})).await?;
        }
        if !spec.reviewers.is_empty() {
            let url = format!("{}/repos/{repo}/pulls/{n}/requested_reviewers", self.api);
            self.post(&url, &json!({"reviewers": spec.reviewers}))
                .await?;
        }
        if !spec.assignees.is_empty() {
            let url = format!("{}/repos/{repo}/issues/{n}/assignees", self.api);
            self.post(&url, &json!({"assignees": spec.assignees}))
                .await?;
        }
        Ok(pull)
    }

    async fn upsert_comment(
        &self,
        repo: &str,
        _kind: ItemKind,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<CommentRef, ForgeError> {
        let mut url = format!(
            "{}/repos/{repo}/issues/{number}/comments?per_page=100",
            self.api
        );
        let mut existing = None;
        for _ in 0..MAX_PAGES {
            let (v, h) = self.get_json(&url).await?;
            existing = v.as_array().into_iter().flatten().find_map(|c| {
                c.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.contains(marker))
                    .then(|| c.get("id").and_then(Value::as_u64))
                    .flatten()
            });
            match (existing, next_link(&h)) {
                (None, Some(next)) => url = next,
                _ => break,
            }
        }
        let (method, url, updated) = match existing {
            Some(id) => (
                http::Method::PATCH,
                format!("{}/repos/{repo}/issues/comments/{id}", self.api),
                true,
            ),
            None => (
                http::Method::POST,
                format!("{}/repos/{repo}/issues/{number}/comments", self.api),
                false,
            ),
        };
        let (status, h, text) = self.write(method, &url, &json!({"body": body})).await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(CommentRef {
            id: v
                .get("id")
                .and_then(Value::as_u64)
                .or(existing)
                .unwrap_or(0),
            url: v.get("html_url").and_then(Value::as_str).map(str::to_owned),
            updated,
        })
    }

    async fn commit_status(&self, st: &CommitStatus) -> Result<(), ForgeError> {
        let url = format!("{}/repos/{}/statuses/{}", self.api, st.repo, st.sha);
        let state = match st.state {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
        };
        self.post(
            &url,
            &json!({"state": state, "target_url": st.target_url,
                    "description": st.description, "context": st.context}),
        )
        .await
    }

    async fn post_review(&self, spec: &ReviewSpec) -> Result<ReviewRef, ForgeError> {
        let (repo, n) = (&spec.repo, spec.number);
        let (pull, _) = self
            .get_json(&format!("{}/repos/{repo}/pulls/{n}", self.api))
            .await?;
        let head = pull
            .pointer("/head/sha")
            .and_then(Value::as_str)
            .ok_or_else(|| ForgeError::Invalid(format!("pull request {repo}#{n} has no head sha")))?
            .to_owned();
        // Posted by an earlier attempt whose record was lost: found by its marker.
        let reviews = self
            .all_pages(format!(
                "{}/repos/{repo}/pulls/{n}/reviews?per_page=100",
                self.api
            ))
            .await?;
        if let Some(r) = reviews.iter().find(|r| {
            r.get("body")
                .and_then(Value::as_str)
                .is_some_and(|b| b.contains(&spec.marker))
        }) {
            return Ok(review_of(r, 0, 0, true));
        }
        // GitHub refuses a whole review (422) when one comment is off the diff, so the
        // comments whose lines the diff does not show go into the summary up front.
        let files = self
            .all_pages(format!(
                "{}/repos/{repo}/pulls/{n}/files?per_page=100",
                self.api
            ))
            .await?;
        let mut lines = std::collections::BTreeMap::new();
        for f in &files {
            if let (Some(name), Some(patch)) = (
                f.get("filename").and_then(Value::as_str),
                f.get("patch").and_then(Value::as_str),
            ) {
                lines.insert(name.to_owned(), commentable_lines(patch));
            }
        }
        let (inline, folded): (Vec<&InlineComment>, Vec<&InlineComment>) =
            spec.comments.iter().partition(|c| {
                lines.get(&c.path).is_some_and(|set| {
                    set.contains(&(c.side, c.line))
                        && c.start_line.is_none_or(|s| set.contains(&(c.side, s)))
                })
            });
        let event = match spec.verdict {
            ReviewVerdict::Approve => "APPROVE",
            ReviewVerdict::RequestChanges => "REQUEST_CHANGES",
            ReviewVerdict::Comment => "COMMENT",
        };
        let url = format!("{}/repos/{repo}/pulls/{n}/reviews", self.api);
        let request = |inline: &[&InlineComment], folded: &[&InlineComment]| {
            json!({
                "commit_id": head,
                "event": event,
                "body": review_body(spec, folded, &spec.marker),
                "comments": inline.iter().map(|c| github_comment(c)).collect::<Vec<_>>(),
            })
        };
        let (status, h, text) = self
            .write(http::Method::POST, &url, &request(&inline, &folded))
            .await?;
        let (status, h, text, inline_n, folded_n) = if status == 422 && !inline.is_empty() {
            // The diff moved (or a line we thought commentable is not): every comment
            // goes into the summary rather than losing the review.
            tracing::warn!(repo = %repo, number = n, answer = %text.chars().take(300).collect::<String>(),
                "GitHub refused the review's inline comments; posting them in the summary");
            let all: Vec<&InlineComment> = spec.comments.iter().collect();
            let (s, h, t) = self
                .write(http::Method::POST, &url, &request(&[], &all))
                .await?;
            (s, h, t, 0, all.len())
        } else {
            (status, h, text, inline.len(), folded.len())
        };
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &text));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ForgeError::Invalid(format!("GitHub's review answer: {e}")))?;
        Ok(review_of(&v, inline_n, folded_n, false))
    }

    async fn push_token(&self) -> Result<Option<String>, ForgeError> {
        if !self.app {
            return Ok(None);
        }
        use secrecy::ExposeSecret as _;
        // octocrab keeps the installation token and asks for a new one when it has less
        // than 30 s left.
        let t = self.octo.installation_token().await.map_err(net)?;
        Ok(Some(t.expose_secret().to_owned()))
    }
}
