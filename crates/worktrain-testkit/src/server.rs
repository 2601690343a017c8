//! The axum server behind [`FakeLlm`].

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::script::{Script, Turn, Usage};
use crate::wire::{self, Reply, Stop, Wire};

/// One request the fake server received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Which API.
    pub wire: Wire,
    /// Request path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The raw body text.
    pub raw: String,
    /// The body parsed as JSON (`null` if it was not JSON).
    pub body: Value,
    /// Whether the request asked for a stream.
    pub stream: bool,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Inner {
    default: VecDeque<Turn>,
    routes: Vec<(String, VecDeque<Turn>)>,
    api_key: Option<String>,
    chunk_delay_ms: u64,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

impl Inner {
    fn load(&mut self, s: Script) {
        self.default = s.turns.into();
        self.routes = s
            .routes
            .into_iter()
            .map(|r| (r.contains, r.turns.into()))
            .collect();
        self.api_key = s.api_key;
        self.chunk_delay_ms = s.chunk_delay_ms;
    }

    fn next_turn(&mut self, raw: &str) -> Option<Turn> {
        for (needle, turns) in &mut self.routes {
            if raw.contains(needle.as_str()) {
                return turns.pop_front();
            }
        }
        self.default.pop_front()
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn remaining(&self) -> usize {
        self.default.len() + self.routes.iter().map(|(_, t)| t.len()).sum::<usize>()
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (plain pushes/pops).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake LLM server. See the crate docs.
#[derive(Debug)]
pub struct FakeLlm;

/// A running [`FakeLlm`]; the server stops when the handle is dropped.
pub struct FakeLlmHandle {
    base_url: String,
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeLlmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlmHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl FakeLlm {
    /// Start a server on `127.0.0.1:0` playing `script`. Returns its base URL (no trailing
    /// slash; clients append `/v1/messages` or `/v1/chat/completions`) and the handle.
    pub async fn start(script: impl Into<Script>) -> std::io::Result<(String, FakeLlmHandle)> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            script,
        )
        .await
    }

    /// Start a server on a given address.
    pub async fn start_on(
        addr: SocketAddr,
        script: impl Into<Script>,
    ) -> std::io::Result<(String, FakeLlmHandle)> {
        let shared = Shared::default();
        shared.lock().load(script.into());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai))
            .route("/_fake/requests", get(list_requests))
            .route("/_fake/script", post(replace_script))
            .route("/_fake/health", get(|| async { "ok" }))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake llm server stopped");
            }
        });
        let base_url = format!("http://{addr}");
        Ok((
            base_url.clone(),
            FakeLlmHandle {
                base_url,
                addr,
                shared,
                task,
            },
        ))
    }
}

impl FakeLlmHandle {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many scripted turns have not been played yet.
    pub fn remaining(&self) -> usize {
        self.shared.lock().remaining()
    }

    /// Append turns to the default queue.
    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        self.shared.lock().default.extend(turns);
    }

    /// Stop the server.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for FakeLlmHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn list_requests(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.lock().requests.clone())
}

async fn replace_script(State(s): State<Shared>, body: Bytes) -> Response {
    match Script::from_json(&String::from_utf8_lossy(&body)) {
        Ok(script) => {
            s.lock().load(script);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn anthropic(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Wire::Anthropic, "/v1/messages", headers, body).await
}

async fn openai(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Wire::OpenAi, "/v1/chat/completions", headers, body).await
}

fn error_response(wire: Wire, status: u16, message: &str, retry_after: Option<&str>) -> Response {
    let body = match wire {
        Wire::Anthropic => wire::anthropic_error(status, message),
        Wire::OpenAi => wire::openai_error(status, message),
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(body)).into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = HeaderValue::from_str(ra)
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(s: Shared, wire: Wire, path: &str, headers: HeaderMap, body: Bytes) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let (turn, api_key, chunk_delay, id) = {
        let mut g = s.lock();
        g.requests.push(RecordedRequest {
            wire,
            path: path.to_owned(),
            headers: header_map.clone(),
            raw: raw.clone(),
            body: parsed.clone(),
            stream,
        });
        let id = g.id();
        (g.next_turn(&raw), g.api_key.clone(), g.chunk_delay_ms, id)
    };

    // Authentication and protocol checks, as the real APIs do them.
    let presented = match wire {
        Wire::Anthropic => header_map.get("x-api-key").cloned(),
        Wire::OpenAi => header_map
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
    };
    if let Some(expected) = &api_key
        && presented.as_deref() != Some(expected.as_str())
    {
        return error_response(wire, 401, "invalid x-api-key", None);
    }
    if wire == Wire::Anthropic && !header_map.contains_key("anthropic-version") {
        return error_response(wire, 400, "anthropic-version: header is required", None);
    }
    let check = match wire {
        Wire::Anthropic => wire::check_anthropic(&parsed),
        Wire::OpenAi => wire::check_openai(&parsed),
    };
    if let Err(msg) = check {
        return error_response(wire, 400, &msg, None);
    }
    let Some(turn) = turn else {
        return error_response(wire, 400, "fake-llm: script exhausted", None);
    };
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let include_usage = parsed
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    play(wire, turn, id, &model, stream, include_usage, chunk_delay).await
}

async fn play(
    wire: Wire,
    mut turn: Turn,
    id: u64,
    model: &str,
    stream: bool,
    include_usage: bool,
    chunk_delay_ms: u64,
) -> Response {
    loop {
        let reply = match turn {
            Turn::Delay { ms, then } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                turn = *then;
                continue;
            }
            Turn::Stall { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return error_response(wire, 500, "fake-llm: stalled", None);
            }
            Turn::Error {
                status,
                retry_after,
                message,
            } => {
                let msg = message.unwrap_or_else(|| format!("fake-llm: scripted error {status}"));
                return error_response(wire, status, &msg, retry_after.as_deref());
            }
            Turn::Text { text, usage } => Reply {
                text: Some(text),
                calls: Vec::new(),
                stop: Stop::EndTurn,
                usage: usage.unwrap_or_default(),
            },
            Turn::MaxTokens { text } => Reply {
                text: Some(text),
                calls: Vec::new(),
                stop: Stop::MaxTokens,
                usage: Usage::default(),
            },
            Turn::ToolCalls { text, calls, usage } => Reply {
                text,
                calls: calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let cid = c.id.clone().unwrap_or_else(|| match wire {
                            Wire::Anthropic => format!("toolu_fake_{id}_{i}"),
                            Wire::OpenAi => format!("call_fake_{id}_{i}"),
                        });
                        (cid, c)
                    })
                    .collect(),
                stop: Stop::ToolUse,
                usage: usage.unwrap_or_default(),
            },
        };
        return render(
            wire,
            &reply,
            id,
            model,
            stream,
            include_usage,
            chunk_delay_ms,
        );
    }
}

fn render(
    wire: Wire,
    reply: &Reply,
    id: u64,
    model: &str,
    stream: bool,
    include_usage: bool,
    chunk_delay_ms: u64,
) -> Response {
    let created = now_secs();
    if !stream {
        let body = match wire {
            Wire::Anthropic => wire::anthropic_message(&format!("msg_fake_{id}"), model, reply),
            Wire::OpenAi => {
                wire::openai_completion(&format!("chatcmpl-fake{id}"), model, created, reply)
            }
        };
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let events = match wire {
        Wire::Anthropic => wire::anthropic_stream(&format!("msg_fake_{id}"), model, reply),
        Wire::OpenAi => wire::openai_stream(
            &format!("chatcmpl-fake{id}"),
            model,
            created,
            reply,
            include_usage,
        ),
    };
    // Split every event in two so clients must reassemble lines across reads.
    let mut chunks: Vec<Bytes> = Vec::with_capacity(events.len() * 2);
    for e in events {
        let mid = e.len() / 2;
        let mid = (mid..e.len())
            .find(|i| e.is_char_boundary(*i))
            .unwrap_or(e.len());
        let (a, b) = e.split_at(mid);
        chunks.push(Bytes::from(a.to_owned()));
        chunks.push(Bytes::from(b.to_owned()));
    }
    let delay = Duration::from_millis(chunk_delay_ms);
    let body_stream = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
        let next = it.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<Bytes, Infallible>(next), it))
    });
    let mut resp = Response::new(Body::from_stream(body_stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
