//! A git smart-HTTP server on `127.0.0.1:0`: `git http-backend` (git's own CGI program)
//! behind a small HTTP front that demands Basic auth with one token as the password, the
//! way GitHub and GitLab take an access token (`x-access-token:<token>`,
//! `oauth2:<token>`). Pushes and fetches are real git over HTTP, against bare
//! repositories under one directory; every request is recorded (without its
//! credentials), so tests can check what a client sent and that it authenticated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHttpRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The Basic-auth user name sent, when any (never the password).
    pub user: Option<String>,
    /// Whether the credentials were accepted.
    pub authorized: bool,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    token: String,
    requests: Mutex<Vec<GitHttpRequest>>,
}

/// A running git smart-HTTP server; stops when dropped.
#[derive(Debug)]
pub struct GitHttpServer {
    base_url: String,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHttpServer {
    /// Serve the bare repositories under `root` (`<base_url>/<name>.git`); every request
    /// needs Basic auth whose password is `token`.
    pub async fn start(root: PathBuf, token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            root,
            token: token.to_owned(),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            inner,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<GitHttpRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// `(user, password)` of a Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let creds = basic(&headers);
    let authorized = creds.as_ref().is_some_and(|(_, p)| *p == inner.token);
    if let Ok(mut r) = inner.requests.lock() {
        r.push(GitHttpRequest {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            user: creds.as_ref().map(|(u, _)| u.clone()),
            authorized,
        });
    }
    if !authorized {
        let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    let user = creds.map(|(u, _)| u).unwrap_or_default();
    match cgi(&inner, &method, &uri, &headers, &user, body).await {
        Ok(r) => r,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Run `git http-backend` for one request (CGI/1.1) and turn its output into a response.
async fn cgi(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    user: &str,
    body: Bytes,
) -> Result<Response, String> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &inner.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        // An authenticated user enables receive-pack (pushes).
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("git http-backend: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&body)
            .await
            .map_err(|e| format!("writing to git http-backend: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("git http-backend: {e}"))?;
    let raw = out.stdout;
    // CGI output: header lines, a blank line, the body.
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .ok_or_else(|| {
            format!(
                "git http-backend printed no headers: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split.0]).into_owned();
    let mut response = Response::new(Body::from(raw[split.0 + split.1..].to_vec()));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            *response.status_mut() = code;
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}
