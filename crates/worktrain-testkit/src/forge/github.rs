//! The fake GitHub REST API (reads for polls, writes for triggers; delivery adds its own).

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{FakeForgeHandle, Fault, ForgeState, Replay, json, page, query_pairs, start};

/// The fake GitHub API.
#[derive(Debug)]
pub struct FakeGithub;

impl FakeGithub {
    /// Start one on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<FakeForgeHandle> {
        start(handle, ForgeState::default()).await
    }
}

impl FakeForgeHandle {
    /// Replay the exchanges of an `@octokit/fixtures` normalized fixture (list of
    /// `{method, path, status, response, headers}`), hosts rewritten to this fake.
    pub fn replay_octokit_fixture(&self, fixture: &Value) {
        let mut st = self.state();
        for x in fixture.as_array().into_iter().flatten() {
            let headers = x["headers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            st.replays.push(Replay {
                method: x["method"].as_str().unwrap_or("get").to_ascii_uppercase(),
                path: x["path"].as_str().unwrap_or("").to_owned(),
                status: x["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(200),
                headers,
                body: x["response"].clone(),
            });
        }
    }
}

/// The recorded primary rate-limit answer (PyGithub replay `rate-limit.primary.403`).
fn primary(base_message: &str) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut r = json(
        StatusCode::FORBIDDEN,
        &json!({"message": base_message, "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
    );
    for (k, v) in [
        ("x-ratelimit-limit", "60".to_owned()),
        ("x-ratelimit-remaining", "0".to_owned()),
        ("x-ratelimit-reset", (now + 120).to_string()),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn fault(f: Fault) -> Response {
    match f {
        Fault::PrimaryRateLimit => primary("API Rate Limit Exceeded for 92.104.200.119"),
        Fault::SecondaryRateLimit { retry_after } => {
            let mut r = json(
                StatusCode::FORBIDDEN,
                &json!({"documentation_url": "https://developer.github.com/v3/#abuse-rate-limits",
                        "message": "You have triggered an abuse detection mechanism. Please wait a few minutes before you try again."}),
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        Fault::TooManyRequests { retry_after } => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"message": "Too Many Requests"}),
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        Fault::ServerError(code) => json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            &json!({"message": "Server Error"}),
        ),
    }
}

fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        &json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn handle(
    st: &mut ForgeState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    if let Some(f) = st.faults.pop_front() {
        return fault(f);
    }
    if headers.get("authorization").is_none() {
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Requires authentication"}),
        );
    }
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["repos", o, r, what @ ("issues" | "pulls")])
            if !query_pairs(uri).contains_key("head") =>
        {
            let repo = format!("{o}/{r}");
            let q = query_pairs(uri);
            let labels: Vec<String> = q
                .get("labels")
                .map(|l| l.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let all = st.items.get(&repo).cloned().unwrap_or_default();
            let items: Vec<Value> = all
                .into_iter()
                .filter(|v| v["state"] == "open")
                .filter(|v| {
                    (*what == "pulls") == v.get("pull_request").is_some() || *what == "issues"
                })
                .filter(|v| {
                    labels.iter().all(|l| {
                        v["labels"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x["name"] == l.as_str()))
                    })
                })
                .filter(|v| {
                    q.get("assignee").is_none_or(|a| {
                        v["assignees"]
                            .as_array()
                            .is_some_and(|x| x.iter().any(|u| u["login"] == a.as_str()))
                    })
                })
                .collect();
            page(st, uri, headers, items, "x-ratelimit-")
        }
        ("GET", ["repos", o, r, "issues", n]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            match st
                .items
                .get(&repo)
                .and_then(|l| l.iter().find(|v| v["number"] == n))
            {
                Some(v) => json(StatusCode::OK, v),
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "pulls"]) if query_pairs(uri).contains_key("head") => {
            let repo = format!("{o}/{r}");
            let q = query_pairs(uri);
            let head = q.get("head").cloned().unwrap_or_default();
            let found: Vec<Value> = st
                .items
                .get(&repo)
                .into_iter()
                .flatten()
                .filter(|v| v.get("pull_request").is_some() && v["state"] == "open")
                .filter(|v| v["head"]["label"] == head.as_str())
                .cloned()
                .collect();
            json(StatusCode::OK, &Value::Array(found))
        }
        ("POST", ["repos", o, r, "pulls"]) => {
            let repo = format!("{o}/{r}");
            let head = body["head"].as_str().unwrap_or_default().to_owned();
            let label = format!("{o}:{head}");
            let list = st.items.entry(repo.clone()).or_default();
            if list.iter().any(|v| {
                v.get("pull_request").is_some()
                    && v["state"] == "open"
                    && v["head"]["label"] == label.as_str()
            }) {
                // GitHub's current form of the answer.
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"message": "Validation Failed",
                            "errors": [{"resource": "PullRequest", "code": "custom",
                                        "message": format!("A pull request already exists for {label}.")}],
                            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                            "status": "422"}),
                );
            }
            let number = list
                .iter()
                .filter_map(|v| v["number"].as_u64())
                .max()
                .unwrap_or(0)
                + 1;
            let html = format!("https://github.com/{repo}/pull/{number}");
            let pr = json!({
                "number": number, "state": "open", "title": body["title"], "body": body["body"],
                "draft": body["draft"].as_bool().unwrap_or(false),
                "html_url": html, "labels": [], "assignees": [], "requested_reviewers": [],
                "head": {"ref": head, "label": label, "sha": body["head_sha"]},
                "base": {"ref": body["base"]},
                "pull_request": {"html_url": html},
                "updated_at": "2026-01-01T00:00:00Z",
                "user": {"login": "worktrain[bot]"}
            });
            list.push(pr.clone());
            json(StatusCode::CREATED, &pr)
        }
        ("POST", ["repos", o, r, "pulls", n, "requested_reviewers"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            match st
                .items
                .get_mut(&repo)
                .and_then(|l| l.iter_mut().find(|v| v["number"] == n))
            {
                Some(v) => {
                    for x in body["reviewers"].as_array().into_iter().flatten() {
                        if let Some(a) = v["requested_reviewers"].as_array_mut() {
                            a.push(json!({"login": x}));
                        }
                    }
                    json(StatusCode::CREATED, v)
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "issues", n, "assignees"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            match st
                .items
                .get_mut(&repo)
                .and_then(|l| l.iter_mut().find(|v| v["number"] == n))
            {
                Some(v) => {
                    for x in body["assignees"].as_array().into_iter().flatten() {
                        if let Some(a) = v["assignees"].as_array_mut() {
                            a.push(json!({"login": x}));
                        }
                    }
                    json(StatusCode::CREATED, v)
                }
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            let list: Vec<Value> = st
                .comments
                .iter()
                .enumerate()
                .filter(|(_, (r, m, _))| *r == repo && *m == n)
                .map(|(i, (_, _, b))| json!({"id": i + 1, "body": b, "user": {"login": "worktrain[bot]"}}))
                .collect();
            page(st, uri, headers, list, "x-ratelimit-")
        }
        ("PATCH", ["repos", o, r, "issues", "comments", id]) => {
            let repo = format!("{o}/{r}");
            let id: usize = id.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            match st.comments.get_mut(id.wrapping_sub(1)) {
                Some(c) if c.0 == repo => {
                    c.2 = text.clone();
                    json(
                        StatusCode::OK,
                        &json!({"id": id, "body": text,
                        "html_url": format!("https://github.com/{repo}/issues/{}#issuecomment-{id}", c.1)}),
                    )
                }
                _ => not_found(),
            }
        }
        ("POST", ["repos", o, r, "statuses", sha]) => {
            st.statuses
                .push((format!("{o}/{r}"), (*sha).to_owned(), body.clone()));
            json(
                StatusCode::CREATED,
                &json!({"id": st.statuses.len(), "state": body["state"], "context": body["context"]}),
            )
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            st.comments.push((format!("{o}/{r}"), n, text.clone()));
            json(
                StatusCode::CREATED,
                &json!({"id": st.comments.len(), "body": text, "user": {"login": "worktrain[bot]"},
                        "html_url": format!("https://github.com/{o}/{r}/issues/{n}#issuecomment-{}", st.comments.len())}),
            )
        }
        ("POST", ["repos", o, r, "issues", n, "labels"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            let add: Vec<String> = body["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = Vec::new();
            if let Some(item) = st
                .items
                .get_mut(&repo)
                .and_then(|l| l.iter_mut().find(|v| v["number"] == n))
            {
                if let Some(labels) = item["labels"].as_array_mut() {
                    for l in add {
                        if !labels.iter().any(|x| x["name"] == l.as_str()) {
                            labels.push(json!({"name": l}));
                        }
                    }
                    out = labels.clone();
                }
            } else {
                return not_found();
            }
            json(StatusCode::OK, &Value::Array(out))
        }
        _ => not_found().into_response(),
    }
}
