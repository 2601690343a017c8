//! The daemon's HTTP client for the coordinator commands (`spawn`, `await`, `status`,
//! `session cancel|steer|…`, `kill-all`).
//!
//! Where the daemon is: `--daemon URL` / `WORKTRAIN_DAEMON`, else the address the
//! running daemon recorded in `$WORKTRAIN_HOME/daemon.pid`, else `daemon.bind` from
//! `config.yaml`. The token is `$WORKTRAIN_HOME/api-token`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use worktrain_config::API_TOKEN_FILE;
use worktrain_core::error::{ApiError, ErrorCode, Retry};

use crate::Ctx;

/// A client of one daemon.
pub(crate) struct DaemonClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    message: String,
    #[serde(default)]
    retry: Option<Retry>,
    #[serde(default)]
    hint: String,
}

fn unreachable(base: &str, e: &reqwest::Error) -> ApiError {
    let why = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused".to_owned()
    } else {
        e.to_string()
    };
    ApiError::new(
        ErrorCode::DaemonUnreachable,
        format!("cannot reach the worktrain daemon at {base}: {why}"),
        Retry::Same,
        "start it with `worktrain daemon`, or point at it with --daemon URL / WORKTRAIN_DAEMON",
    )
}

/// Map an error body from the daemon to the CLI's error shape. HTTP-level codes that
/// the engine does not have are mapped to the closest engine code; the message keeps
/// the daemon's code.
fn from_wire(status: StatusCode, body: &[u8]) -> ApiError {
    let Ok(w) = serde_json::from_slice::<WireError>(body) else {
        return ApiError::new(
            ErrorCode::Internal,
            format!(
                "the daemon answered {status} with a body that is not an error document: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
            Retry::Never,
            "check that --daemon / WORKTRAIN_DAEMON points at a worktrain daemon",
        );
    };
    let retry = w.retry.unwrap_or(Retry::Never);
    match serde_json::from_value::<ErrorCode>(Value::String(w.code.clone())) {
        Ok(code) => ApiError::new(code, w.message, retry, w.hint),
        Err(_) => {
            let code = match w.code.as_str() {
                "unauthorized" | "payload_too_large" | "unsupported_media_type" => {
                    ErrorCode::InvalidInput
                }
                "request_timeout" | "shutting_down" => ErrorCode::Contention,
                _ => ErrorCode::Internal,
            };
            ApiError::new(code, format!("{} ({})", w.message, w.code), retry, w.hint)
        }
    }
}

impl DaemonClient {
    /// A client for the daemon `ctx` points at.
    pub(crate) fn new(ctx: &Ctx) -> Result<Self, ApiError> {
        let base = daemon_url(ctx)?;
        let path = ctx.home.path(API_TOKEN_FILE);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidInput,
                    format!("cannot read the API token {}: {e}", path.display()),
                    Retry::AfterFix,
                    "run `worktrain init` (or use the --home of the daemon you talk to)",
                )
            })?
            .trim()
            .to_owned();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The daemon's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        Ok((status, bytes.to_vec()))
    }

    /// A request whose success body is JSON of type `T`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        self.json_with_timeout(method, path, body, Duration::from_secs(60))
            .await
    }

    /// Like [`Self::json`] with an explicit client-side timeout.
    pub(crate) async fn json_with_timeout<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let (status, bytes) = self.call(method, path, body, timeout).await?;
        if !status.is_success() {
            return Err(from_wire(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::internal(format!("the daemon's answer to {path} does not parse: {e}"))
        })
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.json(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// `GET path` of a server-sent-event stream: the open response, whose body the caller
    /// reads chunk by chunk. No overall timeout (a stream lives as long as the daemon);
    /// the connect timeout still applies.
    pub(crate) async fn stream(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| unreachable(&self.base, &e))?;
            return Err(from_wire(status, &bytes));
        }
        Ok(resp)
    }
}

/// The daemon's base URL (no trailing slash).
pub(crate) fn daemon_url(ctx: &Ctx) -> Result<String, ApiError> {
    if let Some(u) = ctx.daemon.as_deref().filter(|u| !u.trim().is_empty()) {
        return Ok(normalize(u));
    }
    if let Some(info) = worktrain_daemon::pidfile::running_daemon(ctx.home.root())
        && let Some(addr) = info.addr
    {
        return Ok(normalize(&addr));
    }
    let bind = ctx.config()?.daemon.bind;
    Ok(normalize(&bind))
}

fn normalize(u: &str) -> String {
    let u = u.trim().trim_end_matches('/');
    let with_scheme = if u.starts_with("http://") || u.starts_with("https://") {
        u.to_owned()
    } else {
        format!("http://{u}")
    };
    // A daemon bound to every interface is reached on loopback.
    with_scheme
        .replace("://0.0.0.0:", "://127.0.0.1:")
        .replace("://[::]:", "://[::1]:")
}
