//! Fake GitHub and GitLab REST APIs on `127.0.0.1:0`, for polls and delivery tests.
//!
//! Each fake holds items per repository (GitHub issues/PRs, GitLab issues/MRs) that a
//! test can add and update, and answers the real REST shapes: `Link` pagination with
//! absolute URLs, `ETag` / `If-None-Match` → `304`, `x-ratelimit-*` headers, and — on
//! request — the recorded rate-limit and error answers (primary 403, secondary 403 with
//! `Retry-After`, 429, 5xx). Recorded exchanges (e.g. `@octokit/fixtures`) can be replayed
//! verbatim, with `https://api.github.com` rewritten to the fake's address. Every request
//! is recorded so tests can assert exactly what a client sent. Write endpoints live in
//! [`github`] and [`gitlab`] beside the reads, one module per forge.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

pub mod github;
pub mod gitlab;

/// One request a fake forge received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgeRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Body parsed as JSON (`null` when empty or not JSON).
    pub body: Value,
}

impl ForgeRequest {
    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A canned failure the next request gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `403` with `x-ratelimit-remaining: 0` and the recorded "API rate limit exceeded" body.
    PrimaryRateLimit,
    /// `403` with `Retry-After` and the recorded abuse/secondary body.
    SecondaryRateLimit {
        /// Seconds in `Retry-After`.
        retry_after: u64,
    },
    /// `429 Too Many Requests` with `Retry-After`.
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// A 5xx.
    ServerError(u16),
}

/// A recorded exchange to replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Method (upper case).
    pub method: String,
    /// Path and query, exactly.
    pub path: String,
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Value,
}

/// Shared state of a fake forge.
#[derive(Debug, Default)]
pub struct ForgeState {
    /// The base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    /// Items by repository / project path.
    pub items: BTreeMap<String, Vec<Value>>,
    /// GitLab project members: (project, user id) → access level.
    pub members: BTreeMap<(String, u64), u32>,
    /// Faults for the next requests.
    pub faults: VecDeque<Fault>,
    /// Recorded exchanges answered verbatim.
    pub replays: Vec<Replay>,
    /// Requests received.
    pub requests: Vec<ForgeRequest>,
    /// Requests left in the rate-limit window (decremented; reported in headers).
    pub remaining: u64,
    /// Comments posted: (repo, number, body); a comment's id is its index + 1.
    pub comments: Vec<(String, u64, String)>,
    /// Commit statuses set: (repo, sha, the request body).
    pub statuses: Vec<(String, String, Value)>,
    /// One-shot answers: the first request matching method and path (without query)
    /// gets this status and body, once.
    pub answers: Vec<(String, String, u16, Value)>,
    /// The changed files of a pull/merge request, (repo, number) → `[{filename, patch}]`
    /// (GitHub's `pulls/{n}/files` shape). Inline review comments must sit on a line of
    /// these patches; without an entry every line is accepted.
    pub pull_files: BTreeMap<(String, u64), Vec<Value>>,
    /// GitHub reviews posted: (repo, number, the review as answered, its comments).
    pub reviews: Vec<(String, u64, Value, Vec<Value>)>,
    /// GitLab merge request discussions posted: (project, iid, the request body).
    pub discussions: Vec<(String, u64, Value)>,
    /// GitLab merge requests approved: (project, iid).
    pub approvals: Vec<(String, u64)>,
    /// GitHub: the App whose installation tokens this fake issues (see
    /// [`FakeForgeHandle::require_app`]); then every other request needs one of them.
    pub app: Option<FakeApp>,
    /// Installation tokens issued: (token, expiry in Unix seconds).
    pub app_tokens: Vec<(String, u64)>,
    /// Lost answers: the first request matching method and path (without query) is
    /// carried out, then answered with this status instead (a gateway timing out after
    /// the forge acted), once.
    pub lost_answers: Vec<(String, String, u16)>,
}

/// A GitHub App as the fake GitHub knows it: it verifies the App's JWTs (RS256) with the
/// public key and issues installation tokens that live `token_ttl_secs`.
#[derive(Debug, Clone)]
pub struct FakeApp {
    /// The App id (the JWT's `iss`).
    pub app_id: u64,
    /// The installation id tokens are issued for.
    pub installation_id: u64,
    /// The App's public key (PEM).
    pub public_key_pem: String,
    /// Lifetime of the tokens issued.
    pub token_ttl_secs: u64,
}

/// A GitHub App key pair made for tests only (`fixtures/README.md`): no real App's key.
pub mod test_app_key {
    /// The private key (PKCS#1 PEM, as GitHub hands out App keys).
    pub const PRIVATE_PEM: &str = include_str!("../fixtures/github-app-test-only.private-key.pem");
    /// The public key (SPKI PEM) the fake GitHub verifies JWTs with.
    pub const PUBLIC_PEM: &str = include_str!("../fixtures/github-app-test-only.public-key.pem");
}

impl FakeApp {
    /// An App with the test key pair ([`test_app_key`]) whose tokens live `ttl_secs`.
    pub fn with_test_key(app_id: u64, installation_id: u64, ttl_secs: u64) -> Self {
        Self {
            app_id,
            installation_id,
            public_key_pem: test_app_key::PUBLIC_PEM.to_owned(),
            token_ttl_secs: ttl_secs,
        }
    }
}

/// The (side, line) pairs of a unified diff patch a review comment can be on: `"RIGHT"`
/// for added and context lines (new numbering), `"LEFT"` for removed and context lines.
pub fn patch_lines(patch: &str) -> std::collections::BTreeSet<(&'static str, u64)> {
    let mut out = std::collections::BTreeSet::new();
    let (mut old, mut new, mut hunk) = (0u64, 0u64, false);
    for l in patch.lines() {
        if let Some(h) = l.strip_prefix("@@ -") {
            let num = |s: &str| {
                s.split([',', ' '])
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
            };
            let plus = h.split_once(" +").map(|(_, r)| r).unwrap_or("");
            if let (Some(o), Some(n)) = (num(h), num(plus)) {
                (old, new, hunk) = (o, n, true);
            }
            continue;
        }
        if !hunk {
            continue;
        }
        if l.starts_with('+') {
            out.insert(("RIGHT", new));
            new += 1;
        } else if l.starts_with('-') {
            out.insert(("LEFT", old));
            old += 1;
        } else if !l.starts_with('\\') {
            out.insert(("RIGHT", new));
            out.insert(("LEFT", old));
            old += 1;
            new += 1;
        }
    }
    out
}

/// A running fake forge; stops when dropped.
pub struct FakeForgeHandle {
    base_url: String,
    state: Arc<Mutex<ForgeState>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeForgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeForgeHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeForgeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeForgeHandle {
    /// The API base URL to configure (`api_url`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The state (items, faults, requests).
    pub fn state(&self) -> MutexGuard<'_, ForgeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<ForgeRequest> {
        self.state().requests.clone()
    }

    /// Queue a fault for the next request.
    pub fn fail_next(&self, f: Fault) {
        self.state().faults.push_back(f);
    }

    /// Answer the next `method` request for `path` (no query) with `status` and `body`,
    /// once (e.g. a recorded `422` for a create).
    pub fn answer_once(&self, method: &str, path: &str, status: u16, body: Value) {
        self.state()
            .answers
            .push((method.to_owned(), path.to_owned(), status, body));
    }

    /// Carry out the next `method` request for `path` (no query), then answer `status`
    /// (e.g. `502`) as if the answer was lost on the way back, once.
    pub fn lose_answer_once(&self, method: &str, path: &str, status: u16) {
        self.state()
            .lost_answers
            .push((method.to_owned(), path.to_owned(), status));
    }

    /// Pull/merge requests of a repository (items that are pull requests).
    pub fn pulls(&self, repo: &str) -> Vec<Value> {
        self.state()
            .items
            .get(repo)
            .map(|l| {
                l.iter()
                    .filter(|v| v.get("pull_request").is_some() || v.get("source_branch").is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Comments on one item: (id, body).
    pub fn comments_on(&self, repo: &str, number: u64) -> Vec<(u64, String)> {
        self.state()
            .comments
            .iter()
            .enumerate()
            .filter(|(_, (r, n, _))| r == repo && *n == number)
            .map(|(i, (_, _, b))| (i as u64 + 1, b.clone()))
            .collect()
    }

    /// Set the changed files of a pull/merge request (`[{filename, patch}]`).
    pub fn set_pull_files(&self, repo: &str, number: u64, files: Vec<Value>) {
        self.state()
            .pull_files
            .insert((repo.to_owned(), number), files);
    }

    /// GitHub reviews on one pull request: (the review, its inline comments).
    pub fn reviews_on(&self, repo: &str, number: u64) -> Vec<(Value, Vec<Value>)> {
        self.state()
            .reviews
            .iter()
            .filter(|(r, n, _, _)| r == repo && *n == number)
            .map(|(_, _, v, c)| (v.clone(), c.clone()))
            .collect()
    }

    /// From now on, act as GitHub does for an App: issue installation tokens to
    /// `POST /app/installations/{id}/access_tokens` with a valid JWT of `app`, and
    /// refuse (`401 Bad credentials`) any other request without a live token.
    pub fn require_app(&self, app: FakeApp) {
        self.state().app = Some(app);
    }

    /// Installation tokens issued so far: (token, expiry in Unix seconds).
    pub fn app_tokens(&self) -> Vec<(String, u64)> {
        self.state().app_tokens.clone()
    }

    /// Replace a repository's items.
    pub fn set_items(&self, repo: &str, items: Vec<Value>) {
        self.state().items.insert(repo.to_owned(), items);
    }

    /// Change one item (by `number` on GitHub, `iid` on GitLab) with `f`.
    pub fn update_item(&self, repo: &str, number: u64, f: impl FnOnce(&mut Value)) {
        let mut st = self.state();
        if let Some(list) = st.items.get_mut(repo)
            && let Some(item) = list.iter_mut().find(|v| {
                v.get("number")
                    .or_else(|| v.get("iid"))
                    .and_then(Value::as_u64)
                    == Some(number)
            })
        {
            f(item);
        }
    }
}

type Handler = fn(&mut ForgeState, &Method, &Uri, &HeaderMap, &Value) -> Response;

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ForgeState>>,
    handler: Handler,
}

async fn serve(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    st.requests.push(ForgeRequest {
        method: method.as_str().to_owned(),
        path: path.clone(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: parsed.clone(),
    });
    // A recorded exchange answers a request for its path whose query carries every
    // recorded parameter (a client may add defaults such as `state=open`).
    let matches = |r: &Replay| {
        let (rp, rq) = r.path.split_once('?').unwrap_or((r.path.as_str(), ""));
        let (p, q) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let have: Vec<&str> = q.split('&').collect();
        r.method == method.as_str()
            && rp == p
            && rq
                .split('&')
                .filter(|x| !x.is_empty())
                .all(|x| have.contains(&x))
    };
    if let Some(i) = st
        .answers
        .iter()
        .position(|(m, p, _, _)| m == method.as_str() && p == uri.path())
    {
        let (_, _, status, body) = st.answers.remove(i);
        return json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &body,
        );
    }
    if let Some(r) = st.replays.iter().find(|r| matches(r)).cloned() {
        let base = st.base.clone();
        let mut resp = (
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
            r.body.to_string().replace("https://api.github.com", &base),
        )
            .into_response();
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                axum::http::HeaderValue::from_str(&v.replace("https://api.github.com", &base)),
            ) {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    let resp = (s.handler)(&mut st, &method, &uri, &headers, &parsed);
    if let Some(i) = st
        .lost_answers
        .iter()
        .position(|(m, p, _)| m == method.as_str() && p == uri.path())
    {
        let (_, _, status, ..) = st.lost_answers.remove(i);
        return json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            &serde_json::json!({"message": "Server Error"}),
        );
    }
    resp
}

async fn start(handler: Handler, state: ForgeState) -> std::io::Result<FakeForgeHandle> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let state = Arc::new(Mutex::new(ForgeState {
        base: base.clone(),
        remaining: 5000,
        ..state
    }));
    let app = Router::new().fallback(serve).with_state(Shared {
        state: state.clone(),
        handler,
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(FakeForgeHandle {
        base_url: base,
        state,
        task,
    })
}

pub(crate) fn json(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub(crate) fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A page of `items` with Link and ETag headers; `If-None-Match` on the first page of an
/// unchanged listing answers `304`.
pub(crate) fn page(
    st: &mut ForgeState,
    uri: &Uri,
    headers: &HeaderMap,
    items: Vec<Value>,
    rate_prefix: &str,
) -> Response {
    let q = query_pairs(uri);
    let per: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let pageno: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per).max(1);
    let chunk: Vec<Value> = items
        .iter()
        .skip((pageno - 1) * per)
        .take(per)
        .cloned()
        .collect();
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        Value::Array(chunk.clone()).to_string().hash(&mut h);
        pageno.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
    };
    st.remaining = st.remaining.saturating_sub(1);
    let rate = |r: &mut Response, remaining: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for (k, v) in [
            ("limit", "5000".to_owned()),
            ("remaining", remaining.to_string()),
            ("reset", (now + 3600).to_string()),
        ] {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v)
                && let Ok(k) =
                    axum::http::HeaderName::from_bytes(format!("{rate_prefix}{k}").as_bytes())
            {
                r.headers_mut().insert(k, v);
            }
        }
    };
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(
            "etag",
            axum::http::HeaderValue::from_str(&etag)
                .unwrap_or(axum::http::HeaderValue::from_static("\"x\"")),
        );
        rate(&mut r, st.remaining);
        return r;
    }
    let mut r = json(StatusCode::OK, &Value::Array(chunk));
    let path = uri.path();
    let mut others: Vec<String> = q
        .iter()
        .filter(|(k, _)| k.as_str() != "page")
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect();
    others.sort();
    let url = |n: usize| {
        let mut parts = others.clone();
        parts.push(format!("page={n}"));
        format!("{}{path}?{}", st.base, parts.join("&"))
    };
    let mut links = Vec::new();
    if pageno > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(pageno - 1)));
    }
    if pageno < last {
        links.push(format!("<{}>; rel=\"next\"", url(pageno + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if pageno > 1 {
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    if !links.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&links.join(", "))
    {
        r.headers_mut().insert("link", v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&etag) {
        r.headers_mut().insert("etag", v);
    }
    rate(&mut r, st.remaining);
    r
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
