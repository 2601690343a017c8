//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! What is measured (also in docs/daemon.md):
//!
//! - `worktrain_sessions{run_state}` and `worktrain_sessions_by_status{status}` — counted
//!   from the session projections (a paged scan, cached for [`STATS_TTL`], at most
//!   [`STATS_SCAN_CAP`] sessions); `run_state="none"` counts sessions that never ran
//!   under the daemon.
//! - `worktrain_llm_tokens_total{kind}`, `worktrain_llm_turns_total`,
//!   `worktrain_tool_calls_total`, `worktrain_tool_errors_total` — sums of every scanned
//!   session's telemetry (the `agent_activity` events folded into its summary).
//! - `worktrain_queue_depth` (queued runs), `worktrain_running_sessions` (in this daemon),
//!   `worktrain_running_sessions_peak` (the most at once since start),
//!   `worktrain_interrupted_sessions` — from the run queue and the supervisor.
//! - `worktrain_runs_total{event}` — this process's supervisor counters (started,
//!   completed, failed, cancelled, parked, interrupted); they restart at zero with the
//!   daemon, as Prometheus counters may.
//! - `worktrain_advance_duration_seconds` — a histogram of engine advance calls made in
//!   this process (the agents' `complete_step`, and approve/reject through the API),
//!   measured around the engine call, i.e. including the store transaction.
//! - `worktrain_http_requests_total{route,method,status}` and
//!   `worktrain_http_request_duration_seconds_sum/_count{route}` — every API request by
//!   matched route (unknown routes are counted as `route="unmatched"`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use worktrain_core::error::ApiError;
use worktrain_core::projection::SessionStatus;
use worktrain_core::run::RunState;
use worktrain_engine::store_error;
use worktrain_store::SessionFilter;

use crate::supervisor::Supervisor;

/// How long computed session statistics are reused.
pub const STATS_TTL: Duration = Duration::from_secs(5);
/// At most this many sessions are scanned for the session statistics.
pub const STATS_SCAN_CAP: u32 = 100_000;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket latency histogram with lock-free updates.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency of engine advances made in this process.
pub static ADVANCE_LATENCY: Histogram = Histogram::new();

/// Time an engine call and record it in [`ADVANCE_LATENCY`].
pub async fn timed_advance<F: std::future::Future>(f: F) -> F::Output {
    let started = Instant::now();
    let out = f.await;
    ADVANCE_LATENCY.observe(started.elapsed());
    out
}

#[derive(Debug, Default)]
struct RouteStats {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → (count, total micros).
    durations: BTreeMap<String, (u64, u64)>,
}

static HTTP: Mutex<Option<RouteStats>> = Mutex::new(None);

fn with_http<R>(f: impl FnOnce(&mut RouteStats) -> R) -> R {
    let mut g = HTTP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(g.get_or_insert_with(RouteStats::default))
}

/// Middleware: count requests by matched route, method and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = resp.status().as_u16();
    with_http(|s| {
        *s.requests
            .entry((route.clone(), method, status))
            .or_default() += 1;
        let d = s.durations.entry(route).or_default();
        d.0 += 1;
        d.1 = d.1.saturating_add(micros);
    });
    resp
}

/// Session statistics computed from the store.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Sessions by run state (`none` for sessions without a run).
    pub by_run_state: BTreeMap<&'static str, u64>,
    /// Sessions by workflow status.
    pub by_status: BTreeMap<&'static str, u64>,
    /// Uncached input tokens, summed over the scanned sessions.
    pub input_tokens: u64,
    /// Output tokens, summed over the scanned sessions.
    pub output_tokens: u64,
    /// Prompt-cache tokens (read and written), summed over the scanned sessions.
    pub cache_tokens: u64,
    /// LLM turns.
    pub turns: u64,
    /// Tool calls, summed over the scanned sessions.
    pub tool_calls: u64,
    /// Failed or denied tool calls.
    pub tool_errors: u64,
    /// Sessions read to compute these numbers (at most [`STATS_SCAN_CAP`]).
    pub scanned: u64,
    /// The scan stopped at [`STATS_SCAN_CAP`].
    pub truncated: bool,
}

/// Scan the session projections.
pub async fn session_stats(sup: &Supervisor) -> Result<SessionStats, ApiError> {
    let mut stats = SessionStats::default();
    for s in RunState::ALL {
        stats.by_run_state.insert(s.as_str(), 0);
    }
    stats.by_run_state.insert("none", 0);
    for s in SessionStatus::ALL {
        stats.by_status.insert(s.as_str(), 0);
    }
    const PAGE: u32 = 1000;
    let mut offset = 0u32;
    loop {
        let page = sup
            .engine()
            .store()
            .sessions(&SessionFilter {
                limit: Some(PAGE),
                offset: Some(offset),
                ..SessionFilter::default()
            })
            .await
            .map_err(store_error)?;
        let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
        for s in &page {
            let rs = s.run.as_ref().map(|r| r.state.as_str()).unwrap_or("none");
            *stats.by_run_state.entry(rs).or_default() += 1;
            *stats.by_status.entry(s.status.as_str()).or_default() += 1;
            stats.input_tokens += s.telemetry.input_tokens;
            stats.output_tokens += s.telemetry.output_tokens;
            stats.cache_tokens += s.telemetry.cache_tokens;
            stats.turns += s.telemetry.turns;
            stats.tool_calls += s.telemetry.tool_calls;
            stats.tool_errors += s.telemetry.tool_errors;
        }
        stats.scanned += u64::from(n);
        offset = offset.saturating_add(n);
        if n < PAGE {
            break;
        }
        if offset >= STATS_SCAN_CAP {
            stats.truncated = true;
            break;
        }
    }
    Ok(stats)
}

/// Cache of the last [`SessionStats`].
#[derive(Debug, Default)]
pub struct StatsCache(tokio::sync::Mutex<Option<(Instant, SessionStats)>>);

impl StatsCache {
    /// Fresh statistics, or the cached ones if younger than [`STATS_TTL`].
    pub async fn get(&self, sup: &Supervisor) -> Result<SessionStats, ApiError> {
        let mut g = self.0.lock().await;
        if let Some((at, s)) = g.as_ref()
            && at.elapsed() < STATS_TTL
        {
            return Ok(s.clone());
        }
        let s = session_stats(sup).await?;
        *g = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

fn counter(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render every metric.
pub fn render(
    sup: &Supervisor,
    stats: &SessionStats,
    queue_depth: usize,
    interrupted: usize,
) -> String {
    let mut out = String::with_capacity(4096);
    counter(
        &mut out,
        "worktrain_sessions",
        "gauge",
        "Sessions by run state (none: never dispatched to the daemon).",
    );
    for (k, v) in &stats.by_run_state {
        let _ = writeln!(out, "worktrain_sessions{{run_state=\"{k}\"}} {v}");
    }
    counter(
        &mut out,
        "worktrain_sessions_by_status",
        "gauge",
        "Sessions by workflow status.",
    );
    for (k, v) in &stats.by_status {
        let _ = writeln!(out, "worktrain_sessions_by_status{{status=\"{k}\"}} {v}");
    }
    counter(
        &mut out,
        "worktrain_sessions_scan_truncated",
        "gauge",
        "1 when the session scan stopped at its cap.",
    );
    let _ = writeln!(
        out,
        "worktrain_sessions_scan_truncated {}",
        u8::from(stats.truncated)
    );
    counter(
        &mut out,
        "worktrain_queue_depth",
        "gauge",
        "Runs waiting in the queue.",
    );
    let _ = writeln!(out, "worktrain_queue_depth {queue_depth}");
    counter(
        &mut out,
        "worktrain_running_sessions",
        "gauge",
        "Sessions running in this daemon.",
    );
    let _ = writeln!(out, "worktrain_running_sessions {}", sup.running().len());
    counter(
        &mut out,
        "worktrain_running_sessions_peak",
        "gauge",
        "The most runs this daemon held at once since it started.",
    );
    let _ = writeln!(
        out,
        "worktrain_running_sessions_peak {}",
        sup.metrics.running_peak.load(Ordering::Relaxed)
    );
    counter(
        &mut out,
        "worktrain_interrupted_sessions",
        "gauge",
        "Runs interrupted and awaiting recovery.",
    );
    let _ = writeln!(out, "worktrain_interrupted_sessions {interrupted}");
    counter(
        &mut out,
        "worktrain_runs_total",
        "counter",
        "Run lifecycle events in this daemon process.",
    );
    let m = &sup.metrics;
    for (k, v) in [
        ("started", &m.runs_started),
        ("completed", &m.runs_completed),
        ("failed", &m.runs_failed),
        ("cancelled", &m.runs_cancelled),
        ("parked", &m.runs_parked),
        ("interrupted", &m.runs_interrupted),
    ] {
        let _ = writeln!(
            out,
            "worktrain_runs_total{{event=\"{k}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    counter(
        &mut out,
        "worktrain_llm_tokens_total",
        "counter",
        "LLM tokens recorded across sessions.",
    );
    let _ = writeln!(
        out,
        "worktrain_llm_tokens_total{{kind=\"input\"}} {}",
        stats.input_tokens
    );
    let _ = writeln!(
        out,
        "worktrain_llm_tokens_total{{kind=\"output\"}} {}",
        stats.output_tokens
    );
    let _ = writeln!(
        out,
        "worktrain_llm_tokens_total{{kind=\"cache\"}} {}",
        stats.cache_tokens
    );
    counter(
        &mut out,
        "worktrain_llm_turns_total",
        "counter",
        "LLM turns recorded across sessions.",
    );
    let _ = writeln!(out, "worktrain_llm_turns_total {}", stats.turns);
    counter(
        &mut out,
        "worktrain_tool_calls_total",
        "counter",
        "Agent tool calls recorded across sessions.",
    );
    let _ = writeln!(out, "worktrain_tool_calls_total {}", stats.tool_calls);
    counter(
        &mut out,
        "worktrain_tool_errors_total",
        "counter",
        "Agent tool calls that failed or were denied.",
    );
    let _ = writeln!(out, "worktrain_tool_errors_total {}", stats.tool_errors);
    ADVANCE_LATENCY.render(
        "worktrain_advance_duration_seconds",
        "Engine advance calls in this process (store transaction included).",
        &mut out,
    );
    with_http(|s| {
        counter(
            &mut out,
            "worktrain_http_requests_total",
            "counter",
            "API requests by matched route, method and status.",
        );
        for ((route, method, status), n) in &s.requests {
            let _ = writeln!(
                out,
                "worktrain_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        counter(
            &mut out,
            "worktrain_http_request_duration_seconds",
            "summary",
            "API request durations by matched route.",
        );
        for (route, (count, micros)) in &s.durations {
            let r = escape(route);
            let _ = writeln!(
                out,
                "worktrain_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                *micros as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "worktrain_http_request_duration_seconds_count{{route=\"{r}\"}} {count}"
            );
        }
    });
    out
}
