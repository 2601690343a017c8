//! Engine and store benchmarks (custom harness: `cargo bench -p worktrain-engine`).
//!
//! - advance latency through the engine on SQLite (WAL, synchronous=FULL, file on disk),
//!   measured at session length ~10 and ~1,000;
//! - appends per second, one event per transaction and batched;
//! - claims: dispatch throughput, then claim latency and claim-and-finish cycles per
//!   second with 1, 2 and 3 workers, each on its own connection pool as separate daemons
//!   would be.
//!
//! On PostgreSQL the advance benchmark also reports the WAL bytes per advance (the
//! server's `pg_current_wal_lsn()` before and after each sampled advance).
//!
//! Environment knobs: `BENCH_SESSIONS` (default 20), `BENCH_APPENDS` (default 2000),
//! `BENCH_BATCH_EVENTS` (default 200000), `BENCH_CLAIMS` (runs per worker count, default
//! 600), `BENCH_DIR` (default: a temp dir), `BENCH_DATABASE_URL` (a `postgres://…` store
//! instead of SQLite), `BENCH_KEEP_DIR` (keep the databases; the path is printed).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use worktrain_core::compile::Pc;
use worktrain_core::context::Limits;
use worktrain_core::event::{EntryCause, EventBody, NewEvent};
use worktrain_core::ids::{NodeId, Seq, Sha256Hash, StepId};
use worktrain_core::machine::Submission;
use worktrain_core::token::Keyring;
use worktrain_engine::{Catalog, Engine, StartRequest, new_session_id};
use worktrain_store::{AppendRequest, EventStore, StoreOptions, StoreUrl};

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

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes this process has passed to `write(2)` and friends so far (`wchar` in
/// `/proc/self/io`): around one advance, what SQLite wrote — WAL frames, nothing else in
/// this process writes.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time this process has used (all threads, user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms: only meaningful over many operations).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn percentile_u64(sorted: &[u64], p: f64) -> u64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn long_workflow(steps: usize) -> String {
    let mut s = String::from(
        "schemaVersion: 1\nid: bench\nname: Bench\ndescription: benchmark workflow\nversion: '1'\nsteps:\n",
    );
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: s{i}\n    title: Step {i}\n    prompt: Do step {i} of {{{{goal}}}} and report.\n"
        ));
    }
    s
}

/// The store under test: `BENCH_DATABASE_URL` (e.g. a PostgreSQL database), else a
/// SQLite file `name` in `dir`.
async fn open(dir: &std::path::Path, name: &str) -> Arc<dyn EventStore> {
    let url = match std::env::var("BENCH_DATABASE_URL") {
        Ok(u) if !u.is_empty() => StoreUrl::parse(&u).unwrap(),
        _ => StoreUrl::Sqlite(dir.join(name)),
    };
    println!("store: {}", url.redacted());
    worktrain_store::open(&url, &StoreOptions::default())
        .await
        .unwrap()
}

/// The server's WAL insert position in bytes, when the store under test is PostgreSQL.
struct WalProbe(Option<sqlx::PgPool>);

impl WalProbe {
    async fn new() -> Self {
        let Ok(url) = std::env::var("BENCH_DATABASE_URL") else {
            return Self(None);
        };
        if !url.starts_with("postgres") {
            return Self(None);
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        Self(Some(pool))
    }

    async fn lsn(&self) -> Option<i64> {
        let pool = self.0.as_ref()?;
        let (lsn,): (i64,) =
            sqlx::query_as("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(pool)
                .await
                .unwrap();
        Some(lsn)
    }
}

async fn advance_latency(dir: &std::path::Path) {
    let sessions = env_usize("BENCH_SESSIONS", 20);
    let steps = 1010;
    let wf_path = dir.join("bench.yaml");
    std::fs::write(&wf_path, long_workflow(steps)).unwrap();
    let store = open(dir, "advance.db").await;
    let engine = Engine::new(
        store.clone(),
        Keyring::new([7; 32], "bench".into()),
        Limits::default(),
    );
    let resolved = Catalog::default()
        .resolve(wf_path.to_str().unwrap())
        .unwrap();
    let mut near_10 = Vec::new();
    let mut near_1000 = Vec::new();
    let mut bytes_10 = Vec::new();
    let mut bytes_1000 = Vec::new();
    let wal = WalProbe::new().await;
    let mut wal_10 = Vec::new();
    let mut wal_1000 = Vec::new();
    let mut all = Vec::new();
    let started = Instant::now();
    let cpu0 = cpu_time();
    for s in 0..sessions {
        let reply = engine
            .start(StartRequest {
                workflow: resolved.clone(),
                goal: format!("bench {s}"),
                workspace: None,
                context: Map::new(),
                mode: worktrain_core::event::SessionMode::Interactive,
                parent: None,
            })
            .await
            .unwrap();
        let mut token = reply.response.tokens.advance.unwrap();
        for i in 0..steps {
            let sampled = (5..15).contains(&i) || (995..1005).contains(&i);
            let lsn0 = if sampled { wal.lsn().await } else { None };
            let w0 = if sampled { written_bytes() } else { None };
            let t0 = Instant::now();
            let reply = engine
                .advance(
                    &token,
                    Submission {
                        notes: Some(format!(
                            "did step {i}: looked at the code, changed one line, ran the test"
                        )),
                        ..Submission::default()
                    },
                )
                .await
                .unwrap();
            let dt = t0.elapsed();
            let written = if sampled {
                written_bytes().zip(w0).map(|(b, a)| b.saturating_sub(a))
            } else {
                None
            };
            let wal_bytes = if sampled {
                wal.lsn().await.zip(lsn0).map(|(b, a)| b - a)
            } else {
                None
            };
            // Session length = steps completed before this advance.
            if (5..15).contains(&i) {
                near_10.push(dt);
                bytes_10.extend(written);
                wal_10.extend(wal_bytes);
            }
            if (995..1005).contains(&i) {
                near_1000.push(dt);
                bytes_1000.extend(written);
                wal_1000.extend(wal_bytes);
            }
            all.push(dt);
            match reply.response.tokens.advance {
                Some(t) => token = t,
                None => break,
            }
        }
    }
    let total = started.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    near_10.sort();
    near_1000.sort();
    let p50_10 = percentile(&near_10, 0.5);
    let p50_1000 = percentile(&near_1000, 0.5);
    println!("advance latency (engine + store, durable commit per advance)");
    println!(
        "  session length ~10:    p50 {}  p99 {}  ({} samples)",
        fmt(p50_10),
        fmt(percentile(&near_10, 0.99)),
        near_10.len()
    );
    println!(
        "  session length ~1000:  p50 {}  p99 {}  ({} samples)",
        fmt(p50_1000),
        fmt(percentile(&near_1000, 0.99)),
        near_1000.len()
    );
    println!(
        "  ratio p50(1000)/p50(10): {:.2}",
        p50_1000.as_secs_f64() / p50_10.as_secs_f64()
    );
    bytes_10.sort_unstable();
    bytes_1000.sort_unstable();
    // What this process writes is the WAL only for the embedded store.
    let embedded = std::env::var("BENCH_DATABASE_URL").map_or(true, |u| u.is_empty());
    if embedded && !bytes_10.is_empty() && !bytes_1000.is_empty() {
        println!(
            "  bytes written per advance (WAL): ~10: p50 {} max {}   ~1000: p50 {} max {}",
            percentile_u64(&bytes_10, 0.5),
            bytes_10[bytes_10.len() - 1],
            percentile_u64(&bytes_1000, 0.5),
            bytes_1000[bytes_1000.len() - 1]
        );
    }
    wal_10.sort_unstable();
    wal_1000.sort_unstable();
    if !wal_10.is_empty() && !wal_1000.is_empty() {
        let mean = |v: &[i64]| v.iter().sum::<i64>() / i64::try_from(v.len()).unwrap_or(1);
        println!(
            "  PostgreSQL WAL bytes per advance: ~10: p50 {} mean {} max {}   ~1000: p50 {} mean {} max {}",
            wal_10[wal_10.len() / 2],
            mean(&wal_10),
            wal_10[wal_10.len() - 1],
            wal_1000[wal_1000.len() / 2],
            mean(&wal_1000),
            wal_1000[wal_1000.len() - 1]
        );
    }
    if let Some(cpu) = cpu {
        println!(
            "  CPU per advance (all threads, average over the run): {}",
            fmt(cpu / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX))
        );
    }
    all.sort();
    println!(
        "  all {} advances: p50 {}  p99 {}  ({:.0} advances/s)",
        all.len(),
        fmt(percentile(&all, 0.5)),
        fmt(percentile(&all, 0.99)),
        all.len() as f64 / total.as_secs_f64()
    );
}

/// What SQLite costs through sqlx on this machine, with the store's settings (WAL,
/// `synchronous=FULL`, 512-byte pages): one durable commit of one small row, and one
/// read round trip. The floor an advance is measured against (docs/benchmarks.md).
async fn sqlite_floor(dir: &std::path::Path) {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let connect = SqliteConnectOptions::new()
        .filename(dir.join("floor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .page_size(512)
        .pragma("wal_autocheckpoint", "8000");
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect_with(connect)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let n = 2_000;
    let mut commits = Vec::with_capacity(n);
    let mut reads = Vec::with_capacity(n);
    let mut batched = Vec::with_capacity(n);
    let mut held_batched = Vec::with_capacity(n);
    let mut held_reads = Vec::with_capacity(n);
    // The store's writer: one connection held across writes (no pool checkout).
    let mut held = pool.acquire().await.unwrap();
    for i in 0..n {
        let t0 = Instant::now();
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES (?)")
            .bind(format!("row {i}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        commits.push(t0.elapsed());
        let t0 = Instant::now();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (?); COMMIT")
            .bind(format!("row {i} in one statement batch"))
            .execute(&pool)
            .await
            .unwrap();
        batched.push(t0.elapsed());
        let t0 = Instant::now();
        let _: (i64,) = sqlx::query_as("SELECT v IS NOT NULL FROM t WHERE id = ?")
            .bind(i64::try_from(i + 1).unwrap_or(1))
            .fetch_one(&pool)
            .await
            .unwrap();
        reads.push(t0.elapsed());
        let t0 = Instant::now();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (?); COMMIT")
            .bind(format!("row {i} in one batch on the held connection"))
            .execute(&mut *held)
            .await
            .unwrap();
        held_batched.push(t0.elapsed());
        let t0 = Instant::now();
        let _: (i64,) = sqlx::query_as("SELECT v IS NOT NULL FROM t WHERE id = ?")
            .bind(i64::try_from(i + 1).unwrap_or(1))
            .fetch_one(&mut *held)
            .await
            .unwrap();
        held_reads.push(t0.elapsed());
    }
    commits.sort();
    reads.sort();
    batched.sort();
    held_batched.sort();
    held_reads.sort();
    println!("SQLite through sqlx, the store's settings (the floor of an advance)");
    println!(
        "  durable commit of one row (begin, insert, commit): p50 {}  p99 {}",
        fmt(percentile(&commits, 0.5)),
        fmt(percentile(&commits, 0.99))
    );
    println!(
        "  the same as one batch (begin; insert; commit): p50 {}  p99 {}",
        fmt(percentile(&batched, 0.5)),
        fmt(percentile(&batched, 0.99))
    );
    println!(
        "  one read round trip (acquire, select one row): p50 {}  p99 {}",
        fmt(percentile(&reads, 0.5)),
        fmt(percentile(&reads, 0.99))
    );
    println!(
        "  on one held connection (the store's writer): one batch commit p50 {}  p99 {} · one read p50 {}  p99 {}",
        fmt(percentile(&held_batched, 0.5)),
        fmt(percentile(&held_batched, 0.99)),
        fmt(percentile(&held_reads, 0.5)),
        fmt(percentile(&held_reads, 0.99))
    );
}

/// Dispatch throughput, then claims by 1, 2 and 3 workers (each its own store handle and
/// connection pool, like separate daemons): claim latency and claim-and-finish cycles per
/// second. Every claim counts the running runs and takes the cluster-wide claim lock, as
/// the daemon's claims do.
async fn claim_throughput(dir: &std::path::Path) {
    let per_round = env_usize("BENCH_CLAIMS", 600);
    let wf_path = dir.join("claim.yaml");
    std::fs::write(&wf_path, long_workflow(3)).unwrap();
    let store = open(dir, "claim.db").await;
    let engine = Engine::new(
        store.clone(),
        Keyring::new([7; 32], "bench".into()),
        Limits::default(),
    );
    let resolved = Catalog::default()
        .resolve(wf_path.to_str().unwrap())
        .unwrap();
    let caps = Arc::new(worktrain_store::RunCaps {
        total: 8,
        per_workspace: 0,
        per_trigger: Default::default(),
    });
    for workers in 1..=3usize {
        let t0 = Instant::now();
        for i in 0..per_round {
            engine
                .dispatch(worktrain_engine::DispatchRequest {
                    start: StartRequest {
                        workflow: resolved.clone(),
                        goal: format!("claim bench {workers}/{i}"),
                        workspace: None,
                        context: Map::new(),
                        mode: worktrain_core::event::SessionMode::Autonomous,
                        parent: None,
                    },
                    agent: "default".into(),
                    trigger: worktrain_core::run::Trigger::new(
                        worktrain_core::run::TriggerKind::Api,
                        None,
                    ),
                    limits: worktrain_core::run::RunLimits::default(),
                    priority: 0,
                    readonly: false,
                    base: None,
                    idempotency_key: None,
                })
                .await
                .unwrap();
        }
        let dispatch_rate = per_round as f64 / t0.elapsed().as_secs_f64();
        let mut set = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for w in 0..workers {
            let handle = open(dir, "claim.db").await;
            let caps = caps.clone();
            set.spawn(async move {
                let me = format!("bench-worker-{w}");
                let mut latencies = Vec::new();
                let start = |s: &worktrain_core::projection::SessionSummary| {
                    s.run.as_ref().map_or_else(Vec::new, |r| {
                        vec![EventBody::RunStarted {
                            run: r.run + 1,
                            worker: me.clone(),
                            worktree: None,
                            branch: None,
                        }]
                    })
                };
                loop {
                    let c0 = Instant::now();
                    let claimed = handle
                        .claim_run(worktrain_store::Claim {
                            worker: &me,
                            lease_ttl: Duration::from_secs(60),
                            caps: &caps,
                            start: &start,
                        })
                        .await
                        .unwrap();
                    let Some(summary) = claimed else {
                        return latencies;
                    };
                    latencies.push(c0.elapsed());
                    let run = summary.run.as_ref().unwrap().run;
                    handle
                        .append(AppendRequest {
                            session_id: summary.session_id,
                            expected_seq: summary.last_seq,
                            events: vec![NewEvent {
                                body: EventBody::RunFinished {
                                    run,
                                    end: worktrain_core::run::RunEnd::Completed,
                                    reason: None,
                                    detail: None,
                                },
                                idempotency_key: None,
                            }],
                            blobs: vec![],
                        })
                        .await
                        .unwrap();
                    handle.release_lease(summary.session_id, &me).await.unwrap();
                }
            });
        }
        let mut latencies = Vec::new();
        while let Some(r) = set.join_next().await {
            latencies.extend(r.unwrap());
        }
        let elapsed = t0.elapsed();
        assert_eq!(latencies.len(), per_round, "every run claimed once");
        latencies.sort();
        println!(
            "claims, {workers} worker(s): dispatch {dispatch_rate:.0}/s; claim p50 {} p99 {}; claim+finish {:.0} runs/s ({per_round} runs)",
            fmt(percentile(&latencies, 0.5)),
            fmt(percentile(&latencies, 0.99)),
            per_round as f64 / elapsed.as_secs_f64()
        );
    }
}

fn checkpoint_event(i: usize) -> NewEvent {
    NewEvent {
        body: EventBody::CheckpointRecorded {
            node: NodeId(1),
            notes: format!("progress note {i}: tests green"),
            context_delta: Map::new(),
            checkpoint_hash: Sha256Hash::of(&i.to_be_bytes()),
        },
        idempotency_key: None,
    }
}

fn opening_events() -> Vec<NewEvent> {
    vec![
        NewEvent {
            body: EventBody::SessionStarted {
                workflow_id: "bench".parse().unwrap(),
                workflow_hash: Sha256Hash::of(b"bench"),
                workflow_version: "1".into(),
                workflow_source: "bench".into(),
                goal: "append throughput".into(),
                workspace: None,
                branch: None,
                context: Map::new(),
                mode: worktrain_core::event::SessionMode::Interactive,
                parent: None,
            },
            idempotency_key: None,
        },
        NewEvent {
            body: EventBody::NodeEntered {
                node: NodeId(1),
                step_id: StepId::new("s0").unwrap(),
                step: worktrain_core::compile::StepIndex(0),
                pc: Pc(0),
                parent: None,
                cause: EntryCause::Start,
                requires_confirmation: false,
            },
            idempotency_key: None,
        },
    ]
}

async fn append_throughput(dir: &std::path::Path) {
    let store = open(dir, "append.db").await;
    // Single-event appends: one durable transaction per event.
    let n = env_usize("BENCH_APPENDS", 2000);
    let id = new_session_id().unwrap();
    let out = store
        .append(AppendRequest {
            session_id: id,
            expected_seq: Seq(0),
            events: opening_events(),
            blobs: vec![],
        })
        .await
        .unwrap();
    let mut seq = out.last_seq;
    let t0 = Instant::now();
    for i in 0..n {
        let out = store
            .append(AppendRequest {
                session_id: id,
                expected_seq: seq,
                events: vec![checkpoint_event(i)],
                blobs: vec![],
            })
            .await
            .unwrap();
        seq = out.last_seq;
    }
    let single = n as f64 / t0.elapsed().as_secs_f64();
    println!("appends, one event per transaction: {single:.0} events/s ({n} events)");

    // Batched appends: 1,000 events per transaction, spread over sessions.
    let total = env_usize("BENCH_BATCH_EVENTS", 200_000);
    let batch = 1000;
    let mut sessions = Vec::new();
    for _ in 0..(total / batch / 10).max(1) {
        let id = new_session_id().unwrap();
        let out = store
            .append(AppendRequest {
                session_id: id,
                expected_seq: Seq(0),
                events: opening_events(),
                blobs: vec![],
            })
            .await
            .unwrap();
        sessions.push((id, out.last_seq));
    }
    let t0 = Instant::now();
    let mut written = 0;
    let mut k = 0;
    while written < total {
        let (id, seq) = sessions[k % sessions.len()];
        let events: Vec<NewEvent> = (0..batch).map(|i| checkpoint_event(written + i)).collect();
        let out = store
            .append(AppendRequest {
                session_id: id,
                expected_seq: seq,
                events,
                blobs: vec![],
            })
            .await
            .unwrap();
        let slot = k % sessions.len();
        sessions[slot].1 = out.last_seq;
        written += batch;
        k += 1;
    }
    let batched = written as f64 / t0.elapsed().as_secs_f64();
    println!(
        "appends, batched ({batch} events per transaction): {batched:.0} events/s ({written} events)"
    );
}

/// Resolving a workflow by id (what `start_workflow` and a dispatch by id do): the whole
/// catalog is listed and every file compiled, or taken from the compile cache.
fn catalog_resolve(dir: &std::path::Path) {
    let user = dir.join("user-workflows");
    std::fs::create_dir_all(&user).unwrap();
    for i in 0..10 {
        std::fs::write(
            user.join(format!("w{i}.yaml")),
            long_workflow(20).replace("id: bench", &format!("id: w{i}")),
        )
        .unwrap();
    }
    let catalog = Catalog::new(Some(user), None);
    let n = env_usize("BENCH_RESOLVES", 200);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        catalog.resolve("coding-task").unwrap();
        times.push(t.elapsed());
    }
    let first = times[0];
    let mut warm = times[1..].to_vec();
    warm.sort();
    println!(
        "catalog resolve by id (5 bundled + 10 user workflows): first {} · warm p50 {} p99 {}",
        fmt(first),
        fmt(percentile(&warm, 0.50)),
        fmt(percentile(&warm, 0.99)),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it (or with `--test`): only measure when asked to.
    if !std::env::args().any(|a| a == "--bench") || std::env::var("BENCH_SMOKE").is_ok() {
        println!("bench smoke mode: skipped");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = match std::env::var("BENCH_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        Err(_) => tempfile::tempdir().unwrap(),
    };
    runtime.block_on(async {
        let filter: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let wants =
            |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
        if wants("advance") {
            if std::env::var("BENCH_DATABASE_URL").map_or(true, |u| u.is_empty()) {
                sqlite_floor(dir.path()).await;
            }
            advance_latency(dir.path()).await;
        }
        if wants("append") {
            append_throughput(dir.path()).await;
        }
        if wants("claim") {
            claim_throughput(dir.path()).await;
        }
        if wants("catalog") {
            catalog_resolve(dir.path());
        }
    });
    // BENCH_KEEP_DIR=1 leaves the databases behind (path printed), to inspect them.
    if std::env::var_os("BENCH_KEEP_DIR").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}
