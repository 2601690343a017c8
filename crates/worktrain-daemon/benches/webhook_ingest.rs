//! Webhook ingest on loopback, the real router and store: `cargo bench -p worktrain-daemon
//! --bench webhook_ingest`.
//!
//! 1. Sustained ingest: N signed GitHub deliveries (the corpus `issues.labeled` payload,
//!    distinct delivery ids) from C concurrent clients; throughput and the distribution of
//!    the time to `202`; then every delivery must be stored and decided (zero lost).
//! 2. `202` → "session created" with a free worker slot: one delivery at a time whose
//!    decision dispatches a session; the time until the session exists in the store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use worktrain_config::Home;
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::server::Server;
use worktrain_daemon::supervisor::Supervisor;
use worktrain_daemon::triggers::SupervisorHost;
use worktrain_engine::Engine;
use worktrain_store::triggers::{DecisionFilter, TriggerStore};
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::runtime::{Runtime, SystemClock};
use worktrain_triggers::verify::sign_hex;

const SECRET: &str = "bench-secret";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; only measure
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
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
    let n: usize = std::env::var("BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    let home = Home::locate(Some(dir.path().join("home"))).unwrap();
    home.init().unwrap();
    let repo = dir.path().join("ws");
    std::fs::create_dir_all(&repo).unwrap();
    // Dispatch accepts only git work trees as workspaces.
    let init = std::process::Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(init.success(), "git init");
    std::fs::write(
        home.path("triggers.yml"),
        format!(
            "version: 1
triggers:
  - id: gh
    source: {{github_webhook: {{secret: {SECRET}, events: [issues.labeled]}}}}
    workflow: quick-task
    goal: 'Fix #{{{{ $.issue.number }}}}: {{{{ $.issue.title }}}}'
    workspace: {{path: {}}}
    when: {{path: $.label.name, equals: dispatch-me}}
    concurrency: {{max_queued: 100000}}
",
            repo.display()
        ),
    )
    .unwrap();
    let config = home.config().unwrap();
    let store = home.open_store(&config, None).await.unwrap();
    let engine = Arc::new(Engine::new(
        store.clone(),
        home.keyring().unwrap(),
        config.limits,
    ));
    let sup = Supervisor::new(
        engine,
        config.daemon.clone(),
        home.root().to_path_buf(),
        worktrain_daemon::profiles::AgentPool::from_runners(BTreeMap::new()),
    );
    let triggers = Runtime::new(
        store.clone(),
        SupervisorHost::new(sup.clone()),
        Arc::new(SystemClock),
        Some(home.path("triggers.yml")),
        EnvSource::Process,
    );
    assert!(
        triggers.status().error.is_none(),
        "{:?}",
        triggers.status().error
    );
    let token = std::fs::read_to_string(home.path("api-token")).unwrap();
    let server = Server::bind(
        sup.clone(),
        ApiToken::new(token.trim()).unwrap(),
        "127.0.0.1:0",
    )
    .await
    .unwrap()
    .with_triggers(triggers.clone());
    let url = format!("http://{}/webhooks/gh", server.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move { server.run(async move { s2.cancelled().await }).await });
    // Alone on its store: always the leader.
    let (_leader_tx, leader) = tokio::sync::watch::channel(true);
    tokio::spawn(triggers.clone().run(stop.clone(), leader));

    let body: Arc<Vec<u8>> = Arc::new(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpora/github-webhooks/issues.labeled.json"
        ))
        .unwrap(),
    );
    let sig = Arc::new(format!("sha256={}", sign_hex(SECRET.as_bytes(), &body)));
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();

    // 1. Sustained ingest (these deliveries are filtered: label `bug`, not `dispatch-me`).
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, body, sig, next) = (
            http.clone(),
            url.clone(),
            body.clone(),
            sig.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("X-GitHub-Event", "issues")
                    .header("X-GitHub-Delivery", format!("bench-{i}"))
                    .header("X-Hub-Signature-256", sig.as_str())
                    .header("Content-Type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    println!(
        "ingest: {n} deliveries, {clients} clients, {:.0} deliveries/s; time to 202: p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().unwrap()
    );
    // Zero lost: every delivery stored with its `received` decision and then decided.
    let ts: &dyn TriggerStore = &*store;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if ts.pending_deliveries(1).await.unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still pending after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts: BTreeMap<String, u64> = ts
        .decision_counts("gh")
        .await
        .unwrap()
        .into_iter()
        .collect();
    println!(
        "decisions: {counts:?}; all decided {:?} after the last 202",
        started.elapsed() - elapsed
    );
    assert_eq!(
        counts.get("received"),
        Some(&(n as u64)),
        "every delivery stored"
    );
    assert_eq!(
        counts.get("filtered"),
        Some(&(n as u64)),
        "every delivery decided"
    );

    // 2. 202 → session created, one at a time, free worker slot (nothing else queued).
    let mut body2: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body2["label"]["name"] = serde_json::json!("dispatch-me");
    let mut to_session = Vec::new();
    for i in 0..50 {
        body2["issue"]["number"] = serde_json::json!(10_000 + i);
        let bytes = serde_json::to_vec(&body2).unwrap();
        let sig = format!("sha256={}", sign_hex(SECRET.as_bytes(), &bytes));
        let key = format!("session-{i}");
        let r = http
            .post(&url)
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", &key)
            .header("X-Hub-Signature-256", &sig)
            .header("Content-Type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let t = Instant::now();
        let dispatch_key = format!("delivery:gh:{key}");
        loop {
            if store
                .session_by_dispatch_key(&dispatch_key)
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let recent = ts
                    .decisions(&DecisionFilter {
                        trigger_id: Some("gh".into()),
                        limit: Some(5),
                        ..DecisionFilter::default()
                    })
                    .await
                    .unwrap();
                panic!("no session for {key}: {recent:#?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        to_session.push(t.elapsed());
    }
    to_session.sort();
    println!(
        "202 → session created (50, one at a time): p50 {:?}, p99 {:?}, max {:?}",
        pct(&to_session, 0.5),
        pct(&to_session, 0.99),
        to_session.last().unwrap()
    );
    // The session exists before its `dispatched` decision is written: wait for all 50.
    let waited = Instant::now();
    loop {
        let d = ts
            .decisions(&DecisionFilter {
                trigger_id: Some("gh".into()),
                decision: Some("dispatched".into()),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap();
        if d.len() == 50 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{} of 50 dispatched",
            d.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
}
