//! Console benchmarks (custom harness: `cargo bench -p worktrain-console --bench console`).
//!
//! A SQLite store with `BENCH_SESSIONS` sessions (default 10,000) and `BENCH_EVENTS`
//! events (default 1,000,000; one session has exactly 500), the daemon's HTTP server with
//! the console on loopback, a logged-in client. Measures:
//!
//! - the sessions page and a 500-event session page: latency p50/p95 over
//!   `BENCH_REQUESTS` requests each (default 200), and their size before compression;
//! - how long an appended event takes to reach an open page's SSE stream;
//! - process RSS before and after opening `BENCH_PAGES` live streams (default 50).
//!
//! `BENCH_KEEP_HOME=1` keeps the filled worktrain home (its path is printed), so that the
//! real daemon can be started on it and measured alone.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use worktrain_config::{DaemonSettings, Home};
use worktrain_core::event::NewEvent;
use worktrain_core::ids::SessionId;
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::server::Server;
use worktrain_daemon::supervisor::Supervisor;
use worktrain_engine::{Catalog, Engine, StartRequest};
use worktrain_store::AppendRequest;

const WORKFLOW: &str = "\
schemaVersion: 1
id: bench
name: Bench
description: two steps
version: '1'
steps:
  - id: plan
    title: Plan
    prompt: 'Plan {{goal}}'
  - id: build
    title: Build
    prompt: 'Build {{goal}}'
";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Agent activity like a real run's: LLM turns and tool calls, alternating.
fn activity(i: usize) -> NewEvent {
    let a = if i.is_multiple_of(2) {
        json!({"type": "llm_turn", "turn": i / 2 + 1, "model": "claude-sonnet",
               "usage": {"input_tokens": 1200, "output_tokens": 180,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 900},
               "stop_reason": "tool_use", "duration_ms": 1800, "attempts": 1, "tool_calls": 1})
    } else {
        json!({"type": "tool_call", "turn": i / 2 + 1, "name": "shell",
               "args": "{\"command\":\"cargo test -p app\"}", "duration_ms": 4200,
               "result_bytes": 2048, "exit_code": 0})
    };
    NewEvent {
        body: serde_json::from_value(json!({"type": "agent_activity", "activity": a})).unwrap(),
        idempotency_key: None,
    }
}

async fn fill(
    engine: &Engine,
    home: &Home,
    sessions: usize,
    events: usize,
) -> (SessionId, SessionId) {
    let resolved = Catalog::new(Some(home.path("workflows")), None)
        .resolve("bench")
        .unwrap();
    let store = engine.store();
    let mut ids = Vec::with_capacity(sessions);
    let t0 = Instant::now();
    for s in 0..sessions {
        let reply = engine
            .start(StartRequest {
                workflow: resolved.clone(),
                goal: format!("bench goal {s}: fix the flaky **login** test in `auth/session.rs`"),
                workspace: None,
                context: Map::new(),
                mode: worktrain_core::event::SessionMode::Autonomous,
                parent: None,
            })
            .await
            .unwrap();
        ids.push(reply.response.session_id);
    }
    let started = store.session(ids[0]).await.unwrap().unwrap().last_seq.0 as usize;
    println!(
        "started {sessions} sessions in {:.1} s ({started} events each)",
        t0.elapsed().as_secs_f64()
    );
    // One session with exactly 500 events; the rest share what is left.
    let big = ids[0];
    let per = events
        .saturating_sub(sessions * started + 500)
        .div_ceil(sessions.saturating_sub(1).max(1));
    let t0 = Instant::now();
    let mut written = sessions * started;
    for (k, id) in ids.iter().enumerate() {
        let n = if k == 0 { 500 - started } else { per };
        let mut seq = store.session(*id).await.unwrap().unwrap().last_seq;
        let mut i = 0;
        while i < n {
            let batch = (n - i).min(1000);
            let out = store
                .append(AppendRequest {
                    session_id: *id,
                    expected_seq: seq,
                    events: (i..i + batch).map(activity).collect(),
                    blobs: vec![],
                })
                .await
                .unwrap();
            seq = out.last_seq;
            i += batch;
        }
        written += n;
    }
    println!(
        "appended to {written} events in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    (big, ids[ids.len() / 2])
}

async fn time_get(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> (Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut size = 0;
    for i in 0..n + 10 {
        let t0 = Instant::now();
        let r = http.get(url).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body = r.bytes().await.unwrap();
        if i >= 10 {
            lat.push(t0.elapsed());
        }
        size = body.len();
    }
    lat.sort();
    (lat, size)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it: only measure when asked to.
    if !std::env::args().any(|a| a == "--bench") || std::env::var("BENCH_SMOKE").is_ok() {
        println!("bench smoke mode: skipped");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let sessions = env_usize("BENCH_SESSIONS", 10_000);
    let events = env_usize("BENCH_EVENTS", 1_000_000);
    let requests = env_usize("BENCH_REQUESTS", 200);
    let pages = env_usize("BENCH_PAGES", 50);
    let mut dir = match std::env::var("BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    // BENCH_KEEP_HOME=1 leaves the filled home behind, to start a real daemon on it
    // (docs/benchmarks.md measures that daemon's own RSS with pages open).
    if std::env::var_os("BENCH_KEEP_HOME").is_some() {
        dir.disable_cleanup(true);
        println!("home kept: {}", dir.path().join("home").display());
    }
    let home = Home::locate(Some(dir.path().join("home"))).unwrap();
    home.init().unwrap();
    std::fs::write(home.path("workflows").join("bench.yaml"), WORKFLOW).unwrap();
    let config = home.config().unwrap();
    let store = home.open_store(&config, None).await.unwrap();
    let engine = Arc::new(Engine::new(store, home.keyring().unwrap(), config.limits));
    let (big, other) = fill(&engine, &home, sessions, events).await;

    let sup = Supervisor::new(
        engine,
        DaemonSettings::default(),
        home.root().to_path_buf(),
        worktrain_daemon::profiles::AgentPool::from_runners(BTreeMap::new()),
    );
    let token = std::fs::read_to_string(home.path(worktrain_config::API_TOKEN_FILE))
        .unwrap()
        .trim()
        .to_owned();
    let server = Server::bind(sup.clone(), ApiToken::new(&token).unwrap(), "127.0.0.1:0")
        .await
        .unwrap()
        .with_extension(worktrain_console::extension());
    let base = format!("http://{}", server.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let s2 = stop.clone();
    let task = tokio::spawn(async move {
        let _ = server.run(async move { s2.cancelled().await }).await;
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let link: Value = http
        .post(format!("{base}/console/login-links"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .get(format!("{base}{}", link["path"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("wt_console="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();

    for path in ["/console/login", "/console/sessions/rows", "/console/queue"] {
        let (lat, _) = time_get(&http, &format!("{base}{path}"), &cookie, 30).await;
        println!(
            "{path}: p50 {}  p95 {}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.95))
        );
    }
    // The store reads behind the sessions page, alone.
    {
        let store = sup.engine().store();
        let filter = worktrain_store::SessionFilter {
            limit: Some(51),
            offset: Some(0),
            ..worktrain_store::SessionFilter::default()
        };
        let mut list = Vec::new();
        let mut counts = Vec::new();
        let mut newest = Vec::new();
        for _ in 0..50 {
            let t0 = Instant::now();
            store.sessions(&filter).await.unwrap();
            list.push(t0.elapsed());
            let t0 = Instant::now();
            store
                .sessions(&worktrain_store::SessionFilter {
                    limit: Some(2),
                    offset: Some(0),
                    ..worktrain_store::SessionFilter::default()
                })
                .await
                .unwrap();
            newest.push(t0.elapsed());
            let t0 = Instant::now();
            store.session_counts().await.unwrap();
            counts.push(t0.elapsed());
        }
        list.sort();
        counts.sort();
        newest.sort();
        println!(
            "store: newest 2 summaries p50 {}",
            ms(percentile(&newest, 0.5))
        );
        println!(
            "store: newest 51 summaries p50 {}  p95 {}; counts per run state p50 {}  p95 {}",
            ms(percentile(&list, 0.5)),
            ms(percentile(&list, 0.95)),
            ms(percentile(&counts, 0.5)),
            ms(percentile(&counts, 0.95))
        );
    }
    let (lat, size) = time_get(
        &http,
        &format!("{base}/console/sessions"),
        &cookie,
        requests,
    )
    .await;
    println!(
        "sessions page ({sessions} sessions, {events} events): p50 {}  p95 {}  max {}  size {} bytes",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.95)),
        ms(*lat.last().unwrap()),
        size
    );
    let (lat, size) = time_get(
        &http,
        &format!("{base}/console/sessions/{big}"),
        &cookie,
        requests,
    )
    .await;
    println!(
        "500-event session page: p50 {}  p95 {}  max {}  size {} bytes",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.95)),
        ms(*lat.last().unwrap()),
        size
    );

    // An event reaching an open page: append, then wait for the stream's mark.
    let resp = http
        .get(format!("{base}/console/live/sessions/{other}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    // The first event repeats the current state.
    while !buf.contains("\n\n") {
        buf.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    let store = sup.engine().store();
    let mut lat = Vec::new();
    for i in 0..20 {
        buf.clear();
        let seq = store.session(other).await.unwrap().unwrap().last_seq;
        let t0 = Instant::now();
        store
            .append(AppendRequest {
                session_id: other,
                expected_seq: seq,
                events: vec![activity(i)],
                blobs: vec![],
            })
            .await
            .unwrap();
        while !buf.contains("changed") {
            buf.push_str(&String::from_utf8_lossy(
                &stream.next().await.unwrap().unwrap(),
            ));
        }
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lat.sort();
    println!(
        "event to open page (SSE mark): p50 {}  p95 {}  max {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.95)),
        ms(*lat.last().unwrap())
    );
    drop(stream);

    // Memory per open page: live streams held open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb();
    let mut open = Vec::new();
    for _ in 0..pages {
        let r = http
            .get(format!("{base}/console/live/sessions"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        open.push(r.bytes_stream());
    }
    for s in &mut open {
        let _ = s.next().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb();
    println!(
        "RSS (whole bench process: store, server, client): {} MB before, {} MB with {pages} open pages ({:.1} KB per page)",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / pages as f64
    );
    drop(open);
    sup.shutdown();
    stop.cancel();
    let _ = task.await;
}
