//! The HTTP transport shared by both providers: one POST with per-attempt timeout,
//! retries with exponential backoff and jitter, `Retry-After`, and SSE collection.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tracing::{debug, warn};

use super::sse::{SseEvent, SseParser};
use super::{LlmError, RetryPolicy};

/// A successful answer body.
pub(crate) enum Payload {
    /// A JSON document.
    Json(Value),
    /// Every event of a completed SSE stream.
    Events(Vec<SseEvent>),
}

struct Failure {
    error: LlmError,
    retry_after: Option<Duration>,
}

impl From<LlmError> for Failure {
    fn from(error: LlmError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// HTTP client with a retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    retry: RetryPolicy,
    timeout: Duration,
    headers: HeaderMap,
}

const MAX_ERROR_BODY: usize = 2000;

impl Transport {
    /// `headers` are sent on every request (auth headers are marked sensitive).
    pub(super) fn new(
        retry: RetryPolicy,
        timeout: Duration,
        headers: Vec<(&'static str, String, bool)>,
    ) -> Result<Self, LlmError> {
        let mut map = HeaderMap::new();
        for (name, value, sensitive) in headers {
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::Config(format!(
                    "header {name} has a value that is not valid in HTTP"
                ))
            })?;
            v.set_sensitive(sensitive);
            map.insert(HeaderName::from_static(name), v);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            retry,
            timeout,
            headers: map,
        })
    }

    /// POST `body` to `url`, retrying transient failures; `parse` turns a payload into
    /// the result and may itself report a retryable error (a cut stream, an `error`
    /// event). Returns the result and the number of attempts.
    pub(super) async fn post<T>(
        &self,
        url: &str,
        body: &Value,
        stream: bool,
        parse: impl Fn(Payload) -> Result<T, LlmError>,
    ) -> Result<(T, u32), LlmError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result =
                match tokio::time::timeout(self.timeout, self.once(url, body, stream)).await {
                    Ok(Ok(payload)) => parse(payload).map_err(Failure::from),
                    Ok(Err(f)) => Err(f),
                    Err(_) => Err(Failure::from(LlmError::Timeout(self.timeout))),
                };
            let failure = match result {
                Ok(v) => return Ok((v, attempt)),
                Err(f) => f,
            };
            if !failure.error.is_retryable() {
                return Err(failure.error);
            }
            if attempt > self.retry.max_retries {
                return Err(if attempt == 1 {
                    failure.error
                } else {
                    LlmError::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(failure.error),
                    }
                });
            }
            let wait = retry_wait(&self.retry, attempt, failure.retry_after);
            warn!(url, attempt, wait_ms = wait.as_millis() as u64, error = %failure.error, "LLM call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(&self, url: &str, body: &Value, stream: bool) -> Result<Payload, Failure> {
        let resp = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::from(LlmError::Connection(describe(&e))))?;
        let status = resp.status();
        debug!(url, status = status.as_u16(), "LLM response");
        if !status.is_success() {
            let retry_after = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            return Err(Failure {
                error: LlmError::Api {
                    status: status.as_u16(),
                    message: error_message(&text),
                },
                retry_after,
            });
        }
        if !stream {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Failure::from(LlmError::Connection(describe(&e))))?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Failure::from(LlmError::Protocol(format!("response is not JSON: {e}")))
            })?;
            return Ok(Payload::Json(v));
        }
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::from(LlmError::Connection(describe(&e))))?;
            events.extend(parser.push(&chunk));
        }
        events.extend(parser.finish());
        Ok(Payload::Events(events))
    }
}

/// An error's description without the request URL's query (none is used) or headers.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The provider's error message from an error body (both providers use
/// `{"error": {"message": …}}`), or the body's start.
fn error_message(text: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(m) = v.pointer("/error/message").and_then(Value::as_str)
    {
        return m.to_owned();
    }
    let mut s: String = text.chars().take(MAX_ERROR_BODY).collect();
    if s.is_empty() {
        s.push_str("(empty body)");
    }
    s
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = num("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    num("retry-after").map(Duration::from_secs_f64)
}

/// How long to wait before retry `attempt`: the server's `Retry-After`, capped at
/// `max_retry_after` (a server asking for an hour does not stall a run for an hour), else
/// the backoff.
fn retry_wait(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(ra) => ra.min(policy.max_retry_after),
        None => backoff(policy, attempt),
    }
}

/// Exponential backoff with jitter: a uniform draw from [d/2, d] where
/// d = initial × 2^(attempt−1), capped at `max_backoff`.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let d = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let r = getrandom::u64().unwrap_or(0) % 1_000_000;
    let half = d / 2;
    half + (d - half).mul_f64(r as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        let b1 = backoff(&p, 1);
        assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
        let b3 = backoff(&p, 3);
        assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
        let b10 = backoff(&p, 10);
        assert!(b10 >= Duration::from_millis(500) && b10 <= Duration::from_millis(1000));
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_millis(300),
        };
        assert_eq!(
            retry_wait(&p, 1, Some(Duration::from_millis(100))),
            Duration::from_millis(100)
        );
        assert_eq!(
            retry_wait(&p, 1, Some(Duration::from_secs(3600))),
            Duration::from_millis(300)
        );
        assert!(retry_wait(&p, 2, None) <= Duration::from_millis(20));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(r#"{"type":"error","error":{"type":"x","message":"slow down"}}"#),
            "slow down"
        );
        assert_eq!(error_message(""), "(empty body)");
    }
}
