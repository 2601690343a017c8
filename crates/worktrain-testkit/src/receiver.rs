//! [`FakeReceiver`]: an HTTP endpoint on `127.0.0.1:0` that records every request and
//! answers from a queue of scripted replies (then `200 ok`) — a stand-in for a Slack or
//! Discord incoming webhook, or any service a signed webhook is POSTed to.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// Path (and query).
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The raw body (what a signature covers).
    pub raw: Vec<u8>,
    /// The body parsed as JSON (`null` if it was not JSON).
    pub body: Value,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers (`Retry-After`, …).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// `status` with a short body and no extra headers.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: if status < 300 { "ok" } else { "error" }.into(),
        }
    }

    /// This reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Received>,
    replies: VecDeque<Reply>,
}

/// A running receiver; stops when dropped.
pub struct FakeReceiver {
    base_url: String,
    addr: SocketAddr,
    state: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeReceiver")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeReceiver {
    /// Serve on a free loopback port (on the current tokio runtime).
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            addr,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The base URL with `path` appended (`/services/T000/B000/XXXX`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer the next requests with these replies, in order (then `200 ok` again).
    pub fn reply_with(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner().replies.extend(replies);
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.inner().requests.clone()
    }

    /// Wait until at least `n` requests arrived (or `timeout` passed); what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
    };
    let reply = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(received);
        s.replies.pop_front().unwrap_or_else(|| Reply::status(200))
    };
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}
