//! The fake GitHub REST API (reads for polls, writes for triggers; delivery adds its own).

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    FakeForgeHandle, Fault, ForgeState, Replay, json, page, patch_lines, query_pairs, start,
};

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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bad_credentials() -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        &json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
    )
}

/// `POST /app/installations/{id}/access_tokens`: the App's JWT (RS256, `iss` = the App
/// id, issued no later than now, at most 10 minutes long) buys an installation token.
fn access_token(st: &mut ForgeState, app: &super::FakeApp, id: &str, auth: &str) -> Response {
    let Some(jwt) = auth.strip_prefix("Bearer ") else {
        return bad_credentials();
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()) else {
        return bad_credentials();
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // `iss` is checked below: GitHub takes the App id as a number, which the library's
    // own (string) issuer check does not.
    v.set_required_spec_claims(&["exp", "iat"]);
    v.leeway = 0;
    let data = match jsonwebtoken::decode::<Value>(jwt, &key, &v) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "fake GitHub: App JWT refused");
            return json(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "A JSON web token could not be decoded", "documentation_url": "https://docs.github.com/rest"}),
            );
        }
    };
    let c = data.claims;
    let now = unix_now();
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    if c["iss"].as_u64() != Some(app.app_id)
        && c["iss"].as_str() != Some(app.app_id.to_string().as_str())
    {
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "'Issuer' claim ('iss') must be an Integer", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    if iat > now + 60 || exp <= iat || exp - iat > 600 {
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "'Expiration time' claim ('exp') is too far in the future", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    if id.parse::<u64>().ok() != Some(app.installation_id) {
        return not_found();
    }
    let token = format!("ghs_fakeInstallationToken{:04}", st.app_tokens.len() + 1);
    let expires = now + app.token_ttl_secs;
    st.app_tokens.push((token.clone(), expires));
    let at =
        chrono::DateTime::<chrono::Utc>::from_timestamp(i64::try_from(expires).unwrap_or(0), 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
    json(
        StatusCode::CREATED,
        &json!({"token": token, "expires_at": at,
                "permissions": {"contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read"},
                "repository_selection": "all"}),
    )
}

/// A pull request (an item that is one).
fn pull(st: &ForgeState, repo: &str, n: u64) -> Option<Value> {
    st.items
        .get(repo)?
        .iter()
        .find(|v| v["number"] == n && v.get("pull_request").is_some())
        .cloned()
}

/// `POST /repos/{o}/{r}/pulls/{n}/reviews`, checked the way GitHub does: the event, and
/// every inline comment on a line of the diff (else `422`, and nothing is posted).
fn create_review(st: &mut ForgeState, repo: &str, n: u64, body: &Value) -> Response {
    let Some(pr) = pull(st, repo, n) else {
        return not_found();
    };
    let unprocessable = |errors: Value| {
        json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"message": "Unprocessable Entity", "errors": errors,
                    "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request",
                    "status": "422"}),
        )
    };
    let state = match body["event"].as_str() {
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some("COMMENT") => "COMMENTED",
        _ => return unprocessable(json!(["Event is not included in the list"])),
    };
    if state != "APPROVED" && body["body"].as_str().is_none_or(str::is_empty) {
        return unprocessable(json!(["Body can't be blank"]));
    }
    let comments: Vec<Value> = body["comments"].as_array().cloned().unwrap_or_default();
    if let Some(files) = st.pull_files.get(&(repo.to_owned(), n)) {
        for c in &comments {
            let lines = files
                .iter()
                .find(|f| f["filename"] == c["path"])
                .and_then(|f| f["patch"].as_str())
                .map(patch_lines)
                .unwrap_or_default();
            let side = c["side"].as_str().unwrap_or("RIGHT");
            let ok = |l: &Value| l.as_u64().is_some_and(|l| lines.contains(&(side, l)));
            if !ok(&c["line"]) || (!c["start_line"].is_null() && !ok(&c["start_line"])) {
                return unprocessable(json!([
                    "Pull request review thread line must be part of the diff and Pull request review thread diff hunk can't be blank"
                ]));
            }
        }
    }
    let id = 80 + st.reviews.len() as u64;
    let review = json!({
        "id": id, "node_id": format!("PRR_kwDOfake{id}"),
        "user": {"login": "worktrain[bot]", "type": "Bot"},
        "body": body["body"], "state": state,
        "html_url": format!("https://github.com/{repo}/pull/{n}#pullrequestreview-{id}"),
        "pull_request_url": format!("https://api.github.com/repos/{repo}/pulls/{n}"),
        "submitted_at": "2026-01-01T00:00:00Z",
        "commit_id": body["commit_id"].as_str().or(pr["head"]["sha"].as_str()),
        "author_association": "NONE"
    });
    st.reviews
        .push((repo.to_owned(), n, review.clone(), comments));
    json(StatusCode::OK, &review)
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
    if let Some(app) = st.app.clone() {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let ("POST", ["app", "installations", id, "access_tokens"]) =
            (method.as_str(), segs.as_slice())
        {
            return access_token(st, &app, id, auth);
        }
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            .unwrap_or_default();
        let now = unix_now();
        if !st
            .app_tokens
            .iter()
            .any(|(t, exp)| t == token && *exp > now)
        {
            return bad_credentials();
        }
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["repos", o, r, "pulls", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match pull(st, &format!("{o}/{r}"), n) {
                Some(v) => json(StatusCode::OK, &v),
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "pulls", n, "files"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let files = st
                .pull_files
                .get(&(format!("{o}/{r}"), n))
                .cloned()
                .unwrap_or_default();
            page(st, uri, headers, files, "x-ratelimit-")
        }
        ("GET", ["repos", o, r, "pulls", n, "reviews"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().unwrap_or(0);
            let list: Vec<Value> = st
                .reviews
                .iter()
                .filter(|(r, m, _, _)| *r == repo && *m == n)
                .map(|(_, _, v, _)| v.clone())
                .collect();
            page(st, uri, headers, list, "x-ratelimit-")
        }
        ("POST", ["repos", o, r, "pulls", n, "reviews"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            create_review(st, &format!("{o}/{r}"), n, body)
        }
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
