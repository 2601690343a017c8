//! The fake GitLab REST v4 API.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::{FakeForgeHandle, Fault, ForgeState, json, page, patch_lines, query_pairs, start};

/// The fake GitLab API (base URL ends in `/api/v4`).
#[derive(Debug)]
pub struct FakeGitlab;

impl FakeGitlab {
    /// Start one on `127.0.0.1:0`. Configure clients with `{base_url()}/api/v4`.
    pub async fn start() -> std::io::Result<FakeForgeHandle> {
        start(handle, ForgeState::default()).await
    }
}

fn decode(s: &str) -> String {
    s.replace("%2F", "/").replace("%2f", "/")
}

/// The approvals of a merge request for the calling user (`GET …/approvals`).
fn approvals(iid: u64, approved: bool) -> Value {
    json!({
        "iid": iid, "approved": approved, "approvals_required": 0, "approvals_left": 0,
        "user_has_approved": approved, "user_can_approve": !approved,
        "approved_by": if approved {
            json!([{"user": {"id": 1, "username": "worktrain-bot", "name": "worktrain bot"}}])
        } else {
            json!([])
        }
    })
}

/// `POST …/merge_requests/:iid/discussions` with a `text` position: the SHAs must be the
/// merge request's `diff_refs`, the line one of the diff (the changed files set with
/// `set_pull_files`), else `400` as GitLab answers an invalid line code.
fn discussion(st: &mut ForgeState, project: &str, iid: u64, body: &Value) -> Response {
    let bad = |m: &str| json(StatusCode::BAD_REQUEST, &json!({"message": m}));
    let Some(mr) = st
        .items
        .get(&format!("{project}:merge_requests"))
        .and_then(|l| l.iter().find(|v| v["iid"] == iid))
        .cloned()
    else {
        return json(StatusCode::NOT_FOUND, &json!({"message": "404 Not found"}));
    };
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    if text.is_empty() {
        return bad("400 Bad request - Note {:note=>[\"can't be blank\"]}");
    }
    let pos = &body["position"];
    if !pos.is_null() {
        for k in ["base_sha", "start_sha", "head_sha"] {
            if pos[k] != mr["diff_refs"][k] {
                return bad(
                    "400 Bad request - Note {:line_code=>[\"can't be blank\", \"must be a valid line code\"]}",
                );
            }
        }
        if let Some(files) = st.pull_files.get(&(project.to_owned(), iid)) {
            let (side, line) = match (pos["new_line"].as_u64(), pos["old_line"].as_u64()) {
                (Some(l), _) => ("RIGHT", l),
                (None, Some(l)) => ("LEFT", l),
                (None, None) => ("RIGHT", 0),
            };
            let ok = files
                .iter()
                .find(|f| f["filename"] == pos["new_path"])
                .and_then(|f| f["patch"].as_str())
                .is_some_and(|p| patch_lines(p).contains(&(side, line)));
            if !ok {
                return bad(
                    "400 Bad request - Note {:line_code=>[\"can't be blank\", \"must be a valid line code\"]}",
                );
            }
        }
    }
    st.discussions.push((project.to_owned(), iid, body.clone()));
    st.comments
        .push((format!("{project}:merge_requests"), iid, text.clone()));
    let note_id = st.comments.len();
    json(
        StatusCode::CREATED,
        &json!({
            "id": format!("{:040x}", note_id), "individual_note": false,
            "notes": [{"id": note_id, "type": if pos.is_null() { Value::Null } else { json!("DiffNote") },
                       "body": text, "author": {"id": 1, "username": "worktrain-bot"},
                       "system": false, "noteable_type": "MergeRequest", "noteable_iid": iid,
                       "position": pos, "resolvable": true, "resolved": false}]
        }),
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
        let (status, retry) = match f {
            Fault::PrimaryRateLimit => (429, Some(60)),
            Fault::SecondaryRateLimit { retry_after } | Fault::TooManyRequests { retry_after } => {
                (429, Some(retry_after))
            }
            Fault::ServerError(c) => (c, None),
        };
        let mut r = json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            &json!({"message": "Retry later"}),
        );
        if let Some(s) = retry
            && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert("retry-after", v);
            r.headers_mut().insert(
                "ratelimit-remaining",
                axum::http::HeaderValue::from_static("0"),
            );
        }
        return r;
    }
    if headers.get("private-token").is_none() {
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "401 Unauthorized"}),
        );
    }
    let path = uri.path().strip_prefix("/api/v4/").unwrap_or(uri.path());
    let segs: Vec<&str> = path.split('/').collect();
    let nf = || json(StatusCode::NOT_FOUND, &json!({"message": "404 Not Found"}));
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["projects", p, "merge_requests", n, "discussions"]) => {
            let project = decode(p);
            let n: u64 = n.parse().unwrap_or(0);
            discussion(st, &project, n, body)
        }
        ("GET", ["projects", p, "merge_requests", n, "approvals"]) => {
            let project = decode(p);
            let n: u64 = n.parse().unwrap_or(0);
            let approved = st.approvals.contains(&(project, n));
            json(StatusCode::OK, &approvals(n, approved))
        }
        ("POST", ["projects", p, "merge_requests", n, "approve"]) => {
            let project = decode(p);
            let n: u64 = n.parse().unwrap_or(0);
            if st.approvals.contains(&(project.clone(), n)) {
                // What GitLab answers a second approval by the same user.
                return json(
                    StatusCode::UNAUTHORIZED,
                    &json!({"message": "401 Unauthorized"}),
                );
            }
            st.approvals.push((project, n));
            json(StatusCode::CREATED, &approvals(n, true))
        }
        ("GET", ["projects", p, "merge_requests"])
            if query_pairs(uri).contains_key("source_branch") =>
        {
            let key = format!("{}:merge_requests", decode(p));
            let branch = query_pairs(uri)
                .get("source_branch")
                .cloned()
                .unwrap_or_default();
            let found: Vec<Value> = st
                .items
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|v| v["state"] == "opened" && v["source_branch"] == branch.as_str())
                .cloned()
                .collect();
            json(StatusCode::OK, &Value::Array(found))
        }
        ("POST", ["projects", p, "merge_requests"]) => {
            let project = decode(p);
            let key = format!("{project}:merge_requests");
            let branch = body["source_branch"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let list = st.items.entry(key).or_default();
            if let Some(v) = list
                .iter()
                .find(|v| v["state"] == "opened" && v["source_branch"] == branch.as_str())
            {
                return json(
                    StatusCode::CONFLICT,
                    &json!({"message": [format!("Another open merge request already exists for this source branch: !{}", v["iid"])]}),
                );
            }
            let iid = list
                .iter()
                .filter_map(|v| v["iid"].as_u64())
                .max()
                .unwrap_or(0)
                + 1;
            let labels: Vec<Value> = body["labels"]
                .as_str()
                .map(|l| l.split(',').map(|x| json!(x)).collect())
                .unwrap_or_default();
            let mr = json!({
                "iid": iid, "id": 1000 + iid, "state": "opened", "title": body["title"],
                "description": body["description"], "source_branch": branch,
                "target_branch": body["target_branch"], "labels": labels,
                "assignees": body["assignee_ids"], "reviewers": body["reviewer_ids"],
                "web_url": format!("https://gitlab.com/{project}/-/merge_requests/{iid}"),
                "updated_at": "2026-01-01T00:00:00Z"
            });
            list.push(mr.clone());
            json(StatusCode::CREATED, &mr)
        }
        ("GET", ["projects", p, what, n, "notes"]) => {
            let key = format!("{}:{what}", decode(p));
            let n: u64 = n.parse().unwrap_or(0);
            let list: Vec<Value> = st
                .comments
                .iter()
                .enumerate()
                .filter(|(_, (r, m, _))| *r == key && *m == n)
                .map(|(i, (_, _, b))| json!({"id": i + 1, "body": b, "author": {"username": "worktrain-bot"}}))
                .collect();
            page(st, uri, headers, list, "ratelimit-")
        }
        ("PUT", ["projects", p, what, _n, "notes", id]) => {
            let key = format!("{}:{what}", decode(p));
            let id: usize = id.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            match st.comments.get_mut(id.wrapping_sub(1)) {
                Some(c) if c.0 == key => {
                    c.2 = text.clone();
                    json(StatusCode::OK, &json!({"id": id, "body": text}))
                }
                _ => json(StatusCode::NOT_FOUND, &json!({"message": "404 Not found"})),
            }
        }
        ("POST", ["projects", p, "statuses", sha]) => {
            st.statuses
                .push((decode(p), (*sha).to_owned(), body.clone()));
            json(
                StatusCode::CREATED,
                &json!({"id": st.statuses.len(), "status": body["state"]}),
            )
        }
        ("GET", ["users"]) => {
            let name = query_pairs(uri)
                .get("username")
                .cloned()
                .unwrap_or_default();
            let id = name.bytes().map(u64::from).sum::<u64>();
            json(StatusCode::OK, &json!([{"id": id, "username": name}]))
        }
        ("GET", ["projects", p, what @ ("issues" | "merge_requests")]) => {
            let key = format!("{}:{what}", decode(p));
            let q = query_pairs(uri);
            let labels: Vec<String> = q
                .get("labels")
                .map(|l| l.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let items: Vec<Value> = st
                .items
                .get(&key)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v["state"] == "opened")
                .filter(|v| {
                    labels.iter().all(|l| {
                        v["labels"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == l.as_str()))
                    })
                })
                .filter(|v| {
                    q.get("assignee_username").is_none_or(|a| {
                        v["assignees"]
                            .as_array()
                            .is_some_and(|x| x.iter().any(|u| u["username"] == a.as_str()))
                    })
                })
                .filter(|v| {
                    q.get("search")
                        .is_none_or(|s| v["title"].as_str().is_some_and(|t| t.contains(s.as_str())))
                })
                .collect();
            page(st, uri, headers, items, "ratelimit-")
        }
        ("GET", ["projects", p, what @ ("issues" | "merge_requests"), n]) => {
            let key = format!("{}:{what}", decode(p));
            let n: u64 = n.parse().unwrap_or(0);
            match st
                .items
                .get(&key)
                .and_then(|l| l.iter().find(|v| v["iid"] == n))
            {
                Some(v) => json(StatusCode::OK, v),
                None => nf(),
            }
        }
        ("GET", ["projects", p, "members", "all", uid]) => {
            let uid: u64 = uid.parse().unwrap_or(0);
            match st.members.get(&(decode(p), uid)) {
                Some(level) => json(StatusCode::OK, &json!({"id": uid, "access_level": level})),
                None => nf(),
            }
        }
        ("POST", ["projects", p, what, n, "notes"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            st.comments
                .push((format!("{}:{what}", decode(p)), n, text.clone()));
            json(
                StatusCode::CREATED,
                &json!({"id": st.comments.len(), "body": text}),
            )
        }
        ("PUT", ["projects", p, what, n]) => {
            let key = format!("{}:{what}", decode(p));
            let n: u64 = n.parse().unwrap_or(0);
            let add: Vec<String> = body["add_labels"]
                .as_str()
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            match st
                .items
                .get_mut(&key)
                .and_then(|l| l.iter_mut().find(|v| v["iid"] == n))
            {
                Some(item) => {
                    if let Some(labels) = item["labels"].as_array_mut() {
                        for l in add {
                            if !labels.iter().any(|x| x == l.as_str()) {
                                labels.push(json!(l));
                            }
                        }
                    }
                    json(StatusCode::OK, item)
                }
                None => nf(),
            }
        }
        _ => nf(),
    }
}

impl FakeForgeHandle {
    /// GitLab: set a project's issues or merge requests (`what`: `issues` | `merge_requests`).
    pub fn set_gitlab_items(&self, project: &str, what: &str, items: Vec<Value>) {
        self.state()
            .items
            .insert(format!("{project}:{what}"), items);
    }
}
