//! Trace analysis benchmarks (custom harness: `cargo bench -p worktrain-insights`).
//!
//! - `import`: a Claude Code transcript of `BENCH_IMPORT_MB` MB (default 400), built from
//!   the real transcripts in `../shared/corpora` with fresh message and tool ids, is
//!   imported (parse → trace → detectors), first alone, then into the SQLite store.
//!   Peak memory (VmHWM) is read after a small and after the large file: it must not grow
//!   with the file.
//! - `analyze`: `BENCH_SESSIONS` (default 10,000) sessions, cloned from the 60 real
//!   mini-SWE-agent trajectories and attributed to steps of one workflow, are stored;
//!   then every one is re-analysed from the store with new thresholds (load, detect,
//!   write findings) and the proposals are refreshed.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: a smoke run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use worktrain_insights::detect::{Thresholds, detect};
use worktrain_insights::import::{ImportOptions, expand, import_file};
use worktrain_insights::model::{Outcome, StepVisit, Trace};
use worktrain_insights::service::Insights;
use worktrain_store::sqlite::SqliteOptions;
use worktrain_store::{EventStore, SqliteStore};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpora() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora"
    ))
}

/// Peak resident memory of this process so far, in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Rewrite ids so that a repeated record is a new message / tool call.
fn suffix_ids(v: &mut Value, sfx: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x) {
                    ("id" | "tool_use_id" | "uuid" | "parentUuid", Value::String(s)) => {
                        s.push_str(sfx);
                    }
                    (_, x) => suffix_ids(x, sfx),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| suffix_ids(x, sfx)),
        _ => {}
    }
}

/// A transcript of about `mb` MB in one session.
fn transcript(path: &Path, mb: usize) -> u64 {
    let dir = corpora().join("agent-sessions/claude-code");
    let mut records: Vec<Value> = Vec::new();
    for f in expand(&[dir]).unwrap() {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.insert("sessionId".into(), Value::String("bench-session".into()));
            }
            records.push(v);
        }
    }
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let target = (mb as u64) << 20;
    let mut written = 0u64;
    let mut round = 0u64;
    while written < target {
        let sfx = format!("-{round}");
        for r in &records {
            let mut v = r.clone();
            suffix_ids(&mut v, &sfx);
            let line = serde_json::to_string(&v).unwrap();
            w.write_all(line.as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
            written += line.len() as u64 + 1;
        }
        round += 1;
    }
    w.flush().unwrap();
    written
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

async fn import_bench(dir: &Path, mb: usize) {
    let small = dir.join("small.jsonl");
    let big = dir.join("big.jsonl");
    let small_bytes = transcript(&small, (mb / 8).max(1));
    let big_bytes = transcript(&big, mb);
    let opts = ImportOptions::default();
    // Parse only (file → trace → detectors), small then large.
    let t0 = Instant::now();
    let r = import_file(&small, &opts).unwrap();
    let _ = detect(&r.traces[0], &Thresholds::default());
    let small_time = t0.elapsed();
    drop(r);
    let peak_small = peak_mib();
    let t0 = Instant::now();
    let r = import_file(&big, &opts).unwrap();
    let f = detect(&r.traces[0], &Thresholds::default());
    let big_time = t0.elapsed();
    let t = &r.traces[0];
    let peak_big = peak_mib();
    println!(
        "import (parse + detect): {:.0} MB in {:.2} s = {:.1} MB/s ({} records, {} turns counted, {} kept, {} findings); {:.0} MB in {:.2} s = {:.1} MB/s",
        big_bytes as f64 / 1e6,
        big_time.as_secs_f64(),
        mbps(big_bytes, big_time),
        r.records,
        t.counts.turns,
        t.turns.len(),
        f.len(),
        small_bytes as f64 / 1e6,
        small_time.as_secs_f64(),
        mbps(small_bytes, small_time),
    );
    println!(
        "peak memory (VmHWM): {peak_small:.0} MiB after the {:.0} MB file, {peak_big:.0} MiB after the {:.0} MB file",
        small_bytes as f64 / 1e6,
        big_bytes as f64 / 1e6
    );
    drop(r);
    // Into the store (SQLite, WAL, synchronous=FULL).
    let store = SqliteStore::open(&dir.join("import.sqlite"), SqliteOptions::default())
        .await
        .unwrap();
    let ins = Insights::new(store.insights().unwrap(), Thresholds::default());
    let t0 = Instant::now();
    let rep = ins
        .import_paths(std::slice::from_ref(&big), &opts)
        .await
        .unwrap();
    let d = t0.elapsed();
    println!(
        "import into the store: {:.0} MB in {:.2} s = {:.1} MB/s ({} new); peak memory {:.0} MiB",
        rep.bytes as f64 / 1e6,
        d.as_secs_f64(),
        mbps(rep.bytes, d),
        rep.inserted,
        peak_mib()
    );
    let t0 = Instant::now();
    let again = ins.import_paths(&[big], &opts).await.unwrap();
    println!(
        "re-import of the same file: {:.2} s, {} unchanged, {} written",
        t0.elapsed().as_secs_f64(),
        again.unchanged,
        again.inserted + again.updated
    );
}

async fn analyze_bench(dir: &Path, sessions: usize) {
    let labels =
        std::fs::read_to_string(corpora().join("agent-trajectories-dev/labels.csv")).unwrap();
    let resolved: std::collections::BTreeMap<String, bool> = labels
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, b)| (a.to_owned(), b == "true"))
        .collect();
    let base: Vec<Trace> = expand(&[corpora().join("agent-trajectories-dev/trajs")])
        .unwrap()
        .iter()
        .map(|f| {
            import_file(f, &ImportOptions::default())
                .unwrap()
                .traces
                .remove(0)
        })
        .collect();
    let steps = ["reproduce", "fix", "verify"];
    let mut traces = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut t = base[i % base.len()].clone();
        t.outcome = match resolved.get(&t.native_id) {
            Some(true) => Outcome::Success,
            Some(false) => Outcome::Failed,
            None => Outcome::Unknown,
        };
        t.native_id = format!("{}#{i}", t.native_id);
        t.id = format!("worktrain:{}", t.native_id);
        t.workflow = Some("bench-workflow".into());
        // Thirds of each session belong to three steps.
        let n = t.turns.len().max(1);
        for (k, s) in steps.iter().enumerate() {
            t.steps.push(StepVisit {
                step: (*s).into(),
                node: k as u32 + 1,
                entered_seq: k as u64,
                blocked: 0,
                completed: true,
                notes_chars: 200,
                artifacts: 0,
            });
        }
        for turn in &mut t.turns {
            turn.step = Some((turn.index as usize * 3 / n).min(2) as u32);
        }
        traces.push(t);
    }
    let bytes: usize = traces
        .iter()
        .map(|t| serde_json::to_string(t).unwrap().len())
        .sum();
    let turns: usize = traces.iter().map(|t| t.turns.len()).sum();
    // Detectors alone, in memory.
    let t0 = Instant::now();
    let mut findings = 0usize;
    for t in &traces {
        findings += detect(t, &Thresholds::default()).len();
    }
    let detect_time = t0.elapsed();
    println!(
        "detect in memory: {sessions} sessions ({turns} turns, {:.0} MB of traces) in {:.2} s ({findings} findings)",
        bytes as f64 / 1e6,
        detect_time.as_secs_f64()
    );
    let store = SqliteStore::open(&dir.join("analyze.sqlite"), SqliteOptions::default())
        .await
        .unwrap();
    let ins = Insights::new(store.insights().unwrap(), Thresholds::default());
    let t0 = Instant::now();
    for chunk in traces.chunks(200) {
        let rows: Vec<_> = chunk.iter().map(|t| ins.row(t, 1).0).collect();
        store.insights().unwrap().put_traces(&rows).await.unwrap();
    }
    println!(
        "store {sessions} analysed sessions: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    drop(traces);
    // Re-analysis from the store with other thresholds: every trace loaded, detected and
    // its findings rewritten; then the proposals.
    let other = Thresholds {
        repeated_call_min: 2,
        ..Thresholds::default()
    };
    let ins = Insights::new(store.insights().unwrap(), other);
    let t0 = Instant::now();
    let r = ins.reanalyze().await.unwrap();
    let re = t0.elapsed();
    let t1 = Instant::now();
    let p = ins.refresh_proposals(3, &|_| None).await.unwrap();
    let prop = t1.elapsed();
    println!(
        "analyse {sessions} sessions from the store: {:.2} s ({} rewritten, {} findings) + proposals {:.2} s ({} created) = {:.2} s; peak memory {:.0} MiB",
        re.as_secs_f64(),
        r.updated,
        r.findings,
        prop.as_secs_f64(),
        p.created,
        (re + prop).as_secs_f64(),
        peak_mib()
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench") && std::env::var("BENCH_SMOKE").is_err();
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
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    // Smoke mode (`cargo test --all-targets`): tiny sizes, so the code paths stay tested.
    let (mb, sessions) = if bench {
        (
            env_usize("BENCH_IMPORT_MB", 400),
            env_usize("BENCH_SESSIONS", 10_000),
        )
    } else {
        (1, 60)
    };
    runtime.block_on(async {
        if wants("import") {
            import_bench(dir.path(), mb).await;
        }
        if wants("analyze") {
            analyze_bench(dir.path(), sessions).await;
        }
    });
}
