//! What a delivery is about: the event and action (from the event header, as the forges
//! route them), the delivery id, the payload, the source item and its state. The same
//! shape comes out of polls ([`Inbound::polled`]), so dedupe, conditions, templates and
//! reconciliation treat a webhook and a poll of the same item alike.

use serde::Serialize;
use serde_json::{Value, json};
use worktrain_core::run::{ForgeItem, ForgeKind, ItemKind, SourceRef};

use crate::verify::Headers;

/// Which kind of sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// A generic webhook.
    Webhook,
    /// GitHub.
    Github,
    /// GitLab.
    Gitlab,
    /// A poll.
    Poll,
    /// A schedule.
    Schedule,
}

/// Open, closed or merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Open (or reopened).
    Open,
    /// Closed without merging.
    Closed,
    /// Merged (pull and merge requests only).
    Merged,
}

/// The state of the issue/PR/MR an event is about (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemState {
    /// Open, closed, merged.
    pub status: ItemStatus,
    /// Names of the labels on the item.
    pub labels: Vec<String>,
    /// Assignee logins/usernames.
    pub assignees: Vec<String>,
}

/// A comment that may carry a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    /// The comment's text (markdown), where a command is looked for.
    pub body: String,
    /// Author login/username.
    pub author: String,
    /// GitHub `author_association` (OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, …).
    pub association: Option<String>,
    /// GitLab user id (access levels are looked up by id).
    pub author_id: Option<u64>,
}

/// One event, normalised.
#[derive(Debug, Clone, Serialize)]
pub struct Inbound {
    /// Which kind of sender the event came from (generic webhook, GitHub, GitLab, poll or
    /// schedule).
    pub provider: Provider,
    /// Event name (`issues`, `pull_request`, `merge_request`, `note`, `push`, …).
    pub event: String,
    /// Action (`labeled`, `opened`, `open`, `update`, …), when the event has one.
    pub action: Option<String>,
    /// Unique id of the delivery (redeliveries repeat it).
    pub delivery_id: String,
    /// The JSON payload.
    pub payload: Value,
    /// The item the event is about.
    pub source: Option<SourceRef>,
    /// Its state, when the payload carries it.
    pub item: Option<ItemState>,
    /// `owner/repo` or the GitLab project path.
    pub repository: Option<String>,
    /// A comment (issue_comment, note).
    pub comment: Option<Comment>,
    /// GitHub's `ping` on webhook creation.
    pub ping: bool,
}

impl Inbound {
    /// `event.action` or `event`.
    pub fn key(&self) -> String {
        match &self.action {
            Some(a) => format!("{}.{a}", self.event),
            None => self.event.clone(),
        }
    }
}

/// Why a body could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// A required header is absent.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// The body is not JSON (or a form with a JSON `payload`).
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("the payload must be a JSON object")]
    NotObject,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

fn names(list: Option<&Value>, key: &str) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get(key).and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parse a body as a JSON object; GitHub's `application/x-www-form-urlencoded` deliveries
/// carry the JSON in a `payload` field.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, InboundError> {
    let form = content_type.is_some_and(|c| {
        c.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let value: Value = if form {
        let payload = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| InboundError::NotJson("form body without a `payload` field".into()))?;
        serde_json::from_str(&payload).map_err(|e| InboundError::NotJson(e.to_string()))?
    } else {
        serde_json::from_slice(body).map_err(|e| InboundError::NotJson(e.to_string()))?
    };
    if !value.is_object() {
        return Err(InboundError::NotObject);
    }
    Ok(value)
}

fn github_item(obj: &Value) -> ItemState {
    let merged = obj.get("merged").and_then(Value::as_bool).unwrap_or(false)
        || obj.get("merged_at").is_some_and(|v| !v.is_null());
    let status = match (obj.get("state").and_then(Value::as_str), merged) {
        (_, true) => ItemStatus::Merged,
        (Some("closed"), false) => ItemStatus::Closed,
        _ => ItemStatus::Open,
    };
    ItemState {
        status,
        labels: names(obj.get("labels"), "name"),
        assignees: names(obj.get("assignees"), "login"),
    }
}

/// A GitHub delivery: `X-GitHub-Event`, `X-GitHub-Delivery`, the JSON body.
pub fn github(headers: &Headers, payload: Value) -> Result<Inbound, InboundError> {
    let event = headers
        .get("X-GitHub-Event")
        .ok_or(InboundError::MissingHeader("X-GitHub-Event"))?
        .trim()
        .to_owned();
    let delivery_id = headers
        .get("X-GitHub-Delivery")
        .ok_or(InboundError::MissingHeader("X-GitHub-Delivery"))?
        .trim()
        .to_owned();
    Ok(github_event(&event, delivery_id, payload))
}

/// Normalise a GitHub event whose name and delivery id are known.
pub fn github_event(event: &str, delivery_id: String, payload: Value) -> Inbound {
    let repo = str_at(&payload, &["repository", "full_name"]).map(str::to_owned);
    let action = str_at(&payload, &["action"]).map(str::to_owned);
    let item_obj = match event {
        "pull_request"
        | "pull_request_review"
        | "pull_request_review_comment"
        | "pull_request_review_thread" => payload.get("pull_request"),
        _ => payload.get("issue"),
    };
    let number = item_obj
        .and_then(|o| o.get("number"))
        .and_then(Value::as_u64);
    let source = match (&repo, number, event) {
        (Some(r), Some(n), _) => Some(SourceRef::item(
            ForgeKind::Github,
            r,
            ItemKind::IssueOrPull,
            n,
        )),
        (Some(r), None, "push") => {
            let git_ref = str_at(&payload, &["ref"]).unwrap_or("?");
            let after = str_at(&payload, &["after"]).unwrap_or("?");
            Some(SourceRef::other(
                "github",
                &format!("{r}@{git_ref}:{after}"),
            ))
        }
        _ => None,
    };
    let comment = match event {
        "issue_comment" | "pull_request_review_comment" => {
            payload.get("comment").map(|c| Comment {
                body: str_at(c, &["body"]).unwrap_or_default().to_owned(),
                author: str_at(c, &["user", "login"]).unwrap_or_default().to_owned(),
                association: str_at(c, &["author_association"]).map(str::to_owned),
                author_id: u64_at(c, &["user", "id"]),
            })
        }
        _ => None,
    };
    Inbound {
        provider: Provider::Github,
        ping: event == "ping",
        event: event.to_owned(),
        action,
        delivery_id,
        item: item_obj.filter(|o| o.is_object()).map(github_item),
        source,
        repository: repo,
        comment,
        payload,
    }
}

/// `Merge Request Hook` → `merge_request`; `Confidential Note Hook` → `note`.
pub fn gitlab_event_name(header: &str) -> String {
    let h = header.trim();
    let h = h.strip_suffix(" Hook").unwrap_or(h);
    let h = h.strip_prefix("Confidential ").unwrap_or(h);
    h.to_ascii_lowercase().replace(' ', "_")
}

/// A GitLab delivery: `X-Gitlab-Event`, `X-Gitlab-Event-UUID` (or `Idempotency-Key`,
/// `webhook-id`), the JSON body.
pub fn gitlab(headers: &Headers, payload: Value) -> Result<Inbound, InboundError> {
    let event = gitlab_event_name(
        headers
            .get("X-Gitlab-Event")
            .ok_or(InboundError::MissingHeader("X-Gitlab-Event"))?,
    );
    let delivery_id = headers
        .get("X-Gitlab-Event-UUID")
        .or_else(|| headers.get("Idempotency-Key"))
        .or_else(|| headers.get("webhook-id"))
        .ok_or(InboundError::MissingHeader("X-Gitlab-Event-UUID"))?
        .trim()
        .to_owned();
    Ok(gitlab_event(&event, delivery_id, payload))
}

fn gitlab_item(attrs: &Value, payload: &Value) -> ItemState {
    let status = match attrs.get("state").and_then(Value::as_str) {
        Some("merged") => ItemStatus::Merged,
        Some("closed" | "locked") => ItemStatus::Closed,
        _ => ItemStatus::Open,
    };
    let mut labels = names(payload.get("labels"), "title");
    if labels.is_empty() {
        labels = names(attrs.get("labels"), "title");
    }
    let mut assignees = names(payload.get("assignees"), "username");
    if assignees.is_empty()
        && let Some(a) = str_at(payload, &["assignee", "username"])
    {
        assignees.push(a.to_owned());
    }
    ItemState {
        status,
        labels,
        assignees,
    }
}

/// Normalise a GitLab event whose name and delivery id are known.
pub fn gitlab_event(event: &str, delivery_id: String, payload: Value) -> Inbound {
    let project = str_at(&payload, &["project", "path_with_namespace"]).map(str::to_owned);
    let attrs = payload
        .get("object_attributes")
        .cloned()
        .unwrap_or(Value::Null);
    let action = str_at(&attrs, &["action"]).map(str::to_owned);
    let (kind, iid, item) = match event {
        "merge_request" => (
            Some(ItemKind::MergeRequest),
            u64_at(&attrs, &["iid"]),
            Some(gitlab_item(&attrs, &payload)),
        ),
        "issue" => (
            Some(ItemKind::Issue),
            u64_at(&attrs, &["iid"]),
            Some(gitlab_item(&attrs, &payload)),
        ),
        "note" => match str_at(&attrs, &["noteable_type"]) {
            Some("MergeRequest") => (
                Some(ItemKind::MergeRequest),
                u64_at(&payload, &["merge_request", "iid"]),
                payload.get("merge_request").map(|mr| gitlab_item(mr, mr)),
            ),
            Some("Issue") => (
                Some(ItemKind::Issue),
                u64_at(&payload, &["issue", "iid"]),
                payload.get("issue").map(|i| gitlab_item(i, i)),
            ),
            _ => (None, None, None),
        },
        _ => (None, None, None),
    };
    let source = match (&project, kind, iid) {
        (Some(p), Some(k), Some(n)) => Some(SourceRef::item(ForgeKind::Gitlab, p, k, n)),
        (Some(p), _, _) if event == "push" || event == "tag_push" => {
            let git_ref = str_at(&payload, &["ref"]).unwrap_or("?");
            let after = str_at(&payload, &["after"]).unwrap_or("?");
            Some(SourceRef::other(
                "gitlab",
                &format!("{p}@{git_ref}:{after}"),
            ))
        }
        _ => None,
    };
    let comment = (event == "note").then(|| Comment {
        body: str_at(&attrs, &["note"]).unwrap_or_default().to_owned(),
        author: str_at(&payload, &["user", "username"])
            .unwrap_or_default()
            .to_owned(),
        association: None,
        author_id: u64_at(&attrs, &["author_id"]).or_else(|| u64_at(&payload, &["user", "id"])),
    });
    Inbound {
        provider: Provider::Gitlab,
        ping: false,
        event: event.to_owned(),
        action,
        delivery_id,
        payload,
        source,
        item,
        repository: project,
        comment,
    }
}

impl Inbound {
    /// An item seen by a poll, shaped like the webhook payload of the same forge
    /// (`$.issue` / `$.pull_request` on GitHub, `$.object_attributes` on GitLab), so one
    /// goal template serves a webhook trigger and the poll backing it up.
    pub fn polled(
        at: &ForgeItem,
        pull: bool,
        item: Value,
        state: ItemState,
        updated_at: &str,
    ) -> Inbound {
        let (forge, repo, kind, number) = (at.forge, at.repo.as_str(), at.kind, at.number);
        let (event, payload) = match forge {
            ForgeKind::Github => {
                let key = if pull { "pull_request" } else { "issue" };
                (
                    key.to_owned(),
                    json!({"action": "polled", key: item, "repository": {"full_name": repo}}),
                )
            }
            ForgeKind::Gitlab => {
                let key = match kind {
                    ItemKind::MergeRequest => "merge_request",
                    ItemKind::Issue | ItemKind::IssueOrPull => "issue",
                };
                (
                    key.to_owned(),
                    json!({"object_kind": key, "event_type": "polled", "object_attributes": item,
                           "project": {"path_with_namespace": repo}}),
                )
            }
        };
        Inbound {
            provider: Provider::Poll,
            event,
            action: Some("polled".into()),
            delivery_id: format!(
                "poll:{}:{updated_at}",
                SourceRef::item(forge, repo, kind, number)
            ),
            payload,
            source: Some(SourceRef::item(forge, repo, kind, number)),
            item: Some(state),
            repository: Some(repo.to_owned()),
            comment: None,
            ping: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoded_github_bodies_carry_json_in_payload() {
        let v = parse_body(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7B%22a%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(v, json!({"a": 1}));
        assert!(parse_body(Some("application/json"), b"not json").is_err());
        assert_eq!(parse_body(None, b"[1]"), Err(InboundError::NotObject));
    }

    #[test]
    fn gitlab_event_names() {
        assert_eq!(gitlab_event_name("Merge Request Hook"), "merge_request");
        assert_eq!(gitlab_event_name("Confidential Note Hook"), "note");
        assert_eq!(gitlab_event_name("Tag Push Hook"), "tag_push");
        assert_eq!(
            gitlab_event_name("Resource Access Token Hook"),
            "resource_access_token"
        );
    }
}
