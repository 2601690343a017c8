//! GitLab through its REST v4 API (`PRIVATE-TOKEN` auth), with reqwest.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use worktrain_core::run::{ForgeKind, ItemKind};

use crate::http_util::{RateLimit, next_link};
use crate::{
    CommentRef, CommitStatus, DiffSide, Forge, ForgeError, InlineComment, Item, ItemState,
    ListKind, ListQuery, Listing, PullRequest, PullSpec, ReviewRef, ReviewSpec, ReviewVerdict,
    StatusState, is_pull_exists, review_body,
};

/// gitlab.com's API.
pub const DEFAULT_API: &str = "https://gitlab.com/api/v4";

/// Most pages followed in one listing.
pub const MAX_PAGES: u32 = 100;

/// A GitLab client.
pub struct GitlabClient {
    api: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for GitlabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitlabClient")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn net(e: reqwest::Error) -> ForgeError {
    ForgeError::Network(e.to_string())
}

/// Read a GitLab issue or merge request object.
pub fn parse_item(v: &Value, kind: ItemKind) -> Option<Item> {
    let state = match v.get("state").and_then(Value::as_str) {
        Some("merged") => ItemState::Merged,
        Some("closed" | "locked") => ItemState::Closed,
        _ => ItemState::Open,
    };
    let labels = v
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.as_str()
                        .or_else(|| x.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let assignees = v
        .get("assignees")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("username").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(Item {
        number: v.get("iid")?.as_u64()?,
        kind,
        pull: kind == ItemKind::MergeRequest,
        title: v
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        state,
        labels,
        assignees,
        updated_at: v
            .get("updated_at")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        raw: v.clone(),
    })
}

impl GitlabClient {
    /// A client for `api_url` (including `/api/v4`).
    pub fn new(api_url: &str, token: String) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(net)?;
        Ok(Self {
            api: api_url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn path(kind: ItemKind) -> &'static str {
        match kind {
            ItemKind::MergeRequest => "merge_requests",
            ItemKind::Issue | ItemKind::IssueOrPull => "issues",
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, http::HeaderMap, String), ForgeError> {
        let resp = req
            .header("PRIVATE-TOKEN", &self.token)
            .send()
            .await
            .map_err(net)?;
        let status = resp.status().as_u16();
        let mut h = http::HeaderMap::new();
        for (k, v) in resp.headers() {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_str().as_bytes()),
                http::HeaderValue::from_bytes(v.as_bytes()),
            ) {
                h.append(k, v);
            }
        }
        let body = resp.text().await.map_err(net)?;
        Ok((status, h, body))
    }
}

impl GitlabClient {
    /// A JSON answer of a successful GET, or the classified error.
    async fn get_json(&self, url: &str) -> Result<(Value, http::HeaderMap), ForgeError> {
        let (status, h, body) = self.send(self.http.get(url)).await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &body));
        }
        let v = serde_json::from_str(&body)
            .map_err(|e| ForgeError::Invalid(format!("GitLab answered non-JSON for {url}: {e}")))?;
        Ok((v, h))
    }

    /// The open merge request from `branch`, if any.
    async fn find_mr(&self, repo: &str, branch: &str) -> Result<Option<PullRequest>, ForgeError> {
        let url = format!(
            "{}/projects/{}/merge_requests?source_branch={}&state=opened",
            self.api,
            enc(repo),
            enc(branch)
        );
        let (v, _) = self.get_json(&url).await?;
        Ok(v.as_array()
            .and_then(|a| a.first())
            .and_then(|m| mr_of(m, true)))
    }

    /// User ids of usernames (unknown names are an error: the MR would silently lack them).
    async fn user_ids(&self, names: &[String]) -> Result<Vec<u64>, ForgeError> {
        let mut ids = Vec::new();
        for n in names {
            let url = format!("{}/users?username={}", self.api, enc(n));
            let (v, _) = self.get_json(&url).await?;
            let id = v
                .as_array()
                .and_then(|a| a.first())
                .and_then(|u| u.get("id"))
                .and_then(Value::as_u64)
                .ok_or_else(|| ForgeError::Http {
                    status: 404,
                    message: format!("no GitLab user `{n}`"),
                    hint: Some("check the reviewers/assignees of the delivery settings".into()),
                })?;
            ids.push(id);
        }
        Ok(ids)
    }
}

/// The marker of one inline comment of a review (the review's marker, then its index).
fn comment_marker(marker: &str, i: usize) -> String {
    format!("{marker}<!-- review-comment:{i} -->")
}

/// The marker of a review's summary note.
fn summary_marker(marker: &str) -> String {
    format!("{marker}<!-- review-summary -->")
}

/// A merge request discussion on one line of the diff (`position_type: text`).
fn gitlab_discussion(c: &InlineComment, refs: &Value, marker: &str) -> Value {
    let lines = c
        .start_line
        .map(|s| format!("**Lines {s}-{}:** ", c.line))
        .unwrap_or_default();
    let mut position = json!({
        "position_type": "text",
        "base_sha": refs["base_sha"], "start_sha": refs["start_sha"], "head_sha": refs["head_sha"],
        "old_path": c.path, "new_path": c.path,
    });
    match c.side {
        DiffSide::Right => position["new_line"] = json!(c.line),
        DiffSide::Left => position["old_line"] = json!(c.line),
    }
    json!({"body": format!("{lines}{}\n\n{marker}", c.body.trim_end()), "position": position})
}

fn mr_of(v: &Value, reused: bool) -> Option<PullRequest> {
    Some(PullRequest {
        number: v.get("iid")?.as_u64()?,
        url: v
            .get("web_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        reused,
    })
}

#[async_trait]
impl Forge for GitlabClient {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitlab
    }

    async fn list(&self, q: &ListQuery, etag: Option<&str>) -> Result<Listing, ForgeError> {
        let (what, kind) = match q.kind {
            ListKind::MergeRequests | ListKind::PullRequests => {
                ("merge_requests", ItemKind::MergeRequest)
            }
            ListKind::Issues => ("issues", ItemKind::Issue),
        };
        let mut url = format!(
            "{}/projects/{}/{what}?state=opened&per_page={}",
            self.api,
            enc(&q.repo),
            q.per_page.clamp(1, 100)
        );
        if !q.labels.is_empty() {
            url.push_str(&format!("&labels={}", enc(&q.labels.join(","))));
        }
        if let Some(a) = &q.assignee {
            url.push_str(&format!("&assignee_username={}", enc(a)));
        }
        if let Some(s) = &q.query {
            url.push_str(&format!("&search={}", enc(s)));
        }
        let mut items = Vec::new();
        let mut pages = 0;
        let mut first_etag = None;
        let mut rate;
        loop {
            let mut req = self.http.get(&url);
            if pages == 0
                && let Some(e) = etag
            {
                req = req.header("If-None-Match", e);
            }
            let (status, h, body) = self.send(req).await?;
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
            let v: Value = serde_json::from_str(&body)
                .map_err(|e| ForgeError::Invalid(format!("GitLab answered non-JSON: {e}")))?;
            for x in v.as_array().into_iter().flatten() {
                if let Some(item) = parse_item(x, kind) {
                    items.push(item);
                }
            }
            match next_link(&h) {
                Some(next) if pages < MAX_PAGES => url = next,
                _ => break,
            }
        }
        Ok(Listing::Items {
            items,
            etag: first_etag,
            pages,
            rate,
        })
    }

    async fn item(&self, repo: &str, kind: ItemKind, number: u64) -> Result<Item, ForgeError> {
        let url = format!(
            "{}/projects/{}/{}/{number}",
            self.api,
            enc(repo),
            Self::path(kind)
        );
        let (status, h, body) = self.send(self.http.get(&url)).await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &body));
        }
        let v: Value =
            serde_json::from_str(&body).map_err(|e| ForgeError::Invalid(e.to_string()))?;
        parse_item(&v, kind).ok_or_else(|| ForgeError::Invalid(format!("{url}: not an item")))
    }

    async fn access_level(&self, repo: &str, user_id: u64) -> Result<Option<u32>, ForgeError> {
        let url = format!("{}/projects/{}/members/all/{user_id}", self.api, enc(repo));
        let (status, h, body) = self.send(self.http.get(&url)).await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &body));
        }
        let v: Value =
            serde_json::from_str(&body).map_err(|e| ForgeError::Invalid(e.to_string()))?;
        Ok(v.get("access_level")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()))
    }

    async fn add_labels(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        labels: &[String],
    ) -> Result<(), ForgeError> {
        let url = format!(
            "{}/projects/{}/{}/{number}",
            self.api,
            enc(repo),
            Self::path(kind)
        );
        let (status, h, body) = self
            .send(
                self.http
                    .put(&url)
                    .json(&json!({"add_labels": labels.join(",")})),
            )
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ForgeError::from_answer(status, &h, &body))
        }
    }

    async fn comment(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let url = format!(
            "{}/projects/{}/{}/{number}/notes",
            self.api,
            enc(repo),
            Self::path(kind)
        );
        let (status, h, text) = self
            .send(self.http.post(&url).json(&json!({"body": body})))
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ForgeError::from_answer(status, &h, &text))
        }
    }

    async fn open_pull(&self, spec: &PullSpec) -> Result<PullRequest, ForgeError> {
        let assignees = self.user_ids(&spec.assignees).await?;
        let reviewers = self.user_ids(&spec.reviewers).await?;
        let mr = match self.find_mr(&spec.repo, &spec.head).await? {
            Some(m) => m,
            None => {
                let url = format!("{}/projects/{}/merge_requests", self.api, enc(&spec.repo));
                let title = if spec.draft {
                    format!("Draft: {}", spec.title)
                } else {
                    spec.title.clone()
                };
                let mut body = json!({"source_branch": spec.head, "target_branch": spec.base,
                                      "title": title, "description": spec.body});
                if !spec.labels.is_empty() {
                    body["labels"] = json!(spec.labels.join(","));
                }
                if !assignees.is_empty() {
                    body["assignee_ids"] = json!(assignees);
                }
                if !reviewers.is_empty() {
                    body["reviewer_ids"] = json!(reviewers);
                }
                let (status, h, text) = self.send(self.http.post(&url).json(&body)).await?;
                if (200..300).contains(&status) {
                    let v: Value = serde_json::from_str(&text).map_err(|e| {
                        ForgeError::Invalid(format!("creating a merge request: {e}"))
                    })?;
                    mr_of(&v, false).ok_or_else(|| {
                        ForgeError::Invalid("GitLab's merge request has no iid".into())
                    })?
                } else {
                    let err = ForgeError::from_answer(status, &h, &text);
                    if (status == 409 || status == 422) && is_pull_exists("", &text) {
                        self.find_mr(&spec.repo, &spec.head).await?.ok_or(err)?
                    } else {
                        return Err(err);
                    }
                }
            }
        };
        Ok(mr)
    }

    async fn upsert_comment(
        &self,
        repo: &str,
        kind: ItemKind,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<CommentRef, ForgeError> {
        let base = format!(
            "{}/projects/{}/{}/{number}/notes",
            self.api,
            enc(repo),
            Self::path(kind)
        );
        let mut url = format!("{base}?per_page=100");
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
        let req = match existing {
            Some(id) => self.http.put(format!("{base}/{id}")),
            None => self.http.post(&base),
        };
        let (status, h, text) = self.send(req.json(&json!({"body": body}))).await?;
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
            url: None,
            updated: existing.is_some(),
        })
    }

    async fn commit_status(&self, st: &CommitStatus) -> Result<(), ForgeError> {
        let url = format!(
            "{}/projects/{}/statuses/{}",
            self.api,
            enc(&st.repo),
            st.sha
        );
        let state = match st.state {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failed",
        };
        let mut body = json!({"state": state, "name": st.context, "description": st.description});
        if let Some(u) = &st.target_url {
            body["target_url"] = json!(u);
        }
        let (status, h, text) = self.send(self.http.post(&url).json(&body)).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ForgeError::from_answer(status, &h, &text))
        }
    }

    async fn post_review(&self, spec: &ReviewSpec) -> Result<ReviewRef, ForgeError> {
        let mr = format!(
            "{}/projects/{}/merge_requests/{}",
            self.api,
            enc(&spec.repo),
            spec.number
        );
        let (mr_v, _) = self.get_json(&mr).await?;
        let refs = mr_v.get("diff_refs").cloned().unwrap_or(Value::Null);
        if refs.get("head_sha").and_then(Value::as_str).is_none() {
            return Err(ForgeError::Invalid(format!(
                "merge request {}!{} has no diff_refs (is its diff ready?)",
                spec.repo, spec.number
            )));
        }
        // What an earlier attempt posted: every part carries its own marker.
        let mut notes = Vec::new();
        let mut url = format!("{mr}/notes?per_page=100");
        for _ in 0..MAX_PAGES {
            let (v, h) = self.get_json(&url).await?;
            notes.extend(v.as_array().into_iter().flatten().cloned());
            match next_link(&h) {
                Some(next) => url = next,
                None => break,
            }
        }
        let has = |m: &str| {
            notes.iter().find(|n| {
                n.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.contains(m))
            })
        };
        let summary_m = summary_marker(&spec.marker);
        if let Some(n) = has(&summary_m) {
            return Ok(ReviewRef {
                id: n.get("id").and_then(Value::as_u64).unwrap_or(0),
                url: mr_v
                    .get("web_url")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                inline: 0,
                folded: 0,
                reused: true,
            });
        }
        let mut inline = 0;
        let mut folded: Vec<&InlineComment> = Vec::new();
        for (i, c) in spec.comments.iter().enumerate() {
            let m = comment_marker(&spec.marker, i);
            if has(&m).is_some() {
                inline += 1;
                continue;
            }
            let (status, h, text) = self
                .send(
                    self.http
                        .post(format!("{mr}/discussions"))
                        .json(&gitlab_discussion(c, &refs, &m)),
                )
                .await?;
            if (200..300).contains(&status) {
                inline += 1;
            } else if status == 400 {
                // A line outside the diff (GitLab: "line_code … must be a valid line
                // code"): it goes into the summary note.
                tracing::warn!(path = %c.path, line = c.line, answer = %text.chars().take(300).collect::<String>(),
                    "GitLab refused an inline comment; it goes into the summary");
                folded.push(c);
            } else {
                return Err(ForgeError::from_answer(status, &h, &text));
            }
        }
        if spec.verdict == ReviewVerdict::Approve {
            let (approvals, _) = self.get_json(&format!("{mr}/approvals")).await?;
            if approvals.get("user_has_approved").and_then(Value::as_bool) != Some(true) {
                let (status, h, text) = self
                    .send(self.http.post(format!("{mr}/approve")).json(&json!({})))
                    .await?;
                if !(200..300).contains(&status) {
                    return Err(ForgeError::from_answer(status, &h, &text));
                }
            }
        }
        let verdict = match spec.verdict {
            ReviewVerdict::Approve => "**Approved**\n\n",
            ReviewVerdict::RequestChanges => "**Changes requested**\n\n",
            ReviewVerdict::Comment => "",
        };
        let body = format!("{verdict}{}", review_body(spec, &folded, &summary_m));
        let (status, h, text) = self
            .send(
                self.http
                    .post(format!("{mr}/notes"))
                    .json(&json!({ "body": body })),
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(ForgeError::from_answer(status, &h, &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
        Ok(ReviewRef {
            id,
            url: mr_v
                .get("web_url")
                .and_then(Value::as_str)
                .map(|u| format!("{u}#note_{id}")),
            inline,
            folded: folded.len(),
            reused: false,
        })
    }

    async fn push_token(&self) -> Result<Option<String>, ForgeError> {
        Ok(None)
    }
}
