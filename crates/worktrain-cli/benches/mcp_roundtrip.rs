//! MCP over stdio, measured with a real client in a separate process (custom harness:
//! `cargo bench -p worktrain-cli --bench mcp_roundtrip`). The client is a hand-rolled
//! newline-delimited JSON-RPC client over the child's stdin/stdout, so the numbers are
//! the server's: spawn, the SDK's framing, the tool layer, the engine and the fsync'd
//! SQLite commit (WAL, synchronous=FULL, file on disk).
//!
//! Sections:
//! - startup: spawn → `initialize` response, on a fresh home and on an initialised one;
//! - `continue_workflow` round-trip latency, `BENCH_SESSIONS` (default 50) sessions of a
//!   20-step workflow (p50 / p90 / p99 / max);
//! - contention: `BENCH_CONTENTION_SESSIONS` (default 1000) sessions, `continue_workflow`
//!   sent the moment `start_workflow` returns, spread over `BENCH_CLIENTS` (default 2)
//!   server processes sharing one home. Any error fails the bench (exit code 1); busy /
//!   locked / contention errors are counted separately.
//!
//! `WORKTRAIN_BIN` overrides the binary under test; `BENCH_DIR` the scratch directory.
//! It measures only when run by `cargo bench` (which passes `--bench`); under `cargo test
//! --all-targets` (no arguments), with `--test`, or with `BENCH_SMOKE` set it only prints
//! "bench smoke mode: skipped".
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const STEPS: usize = 20;

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
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{label}: n={} p50 {} · p90 {} · p99 {} · max {}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    /// Spawn `worktrain mcp` and complete the handshake; returns the time from spawn to
    /// the `initialize` response.
    fn spawn(bin: &Path, home: &Path, workspace: &Path) -> (Server, Duration) {
        let t0 = Instant::now();
        let mut child = Command::new(bin)
            .arg("mcp")
            .env("WORKTRAIN_HOME", home)
            .current_dir(workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = server.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "mcp-bench", "version": "1"}}),
        );
        let startup = t0.elapsed();
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        server.notify("notifications/initialized");
        (server, startup)
    }

    fn send(&mut self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the server closed stdout");
            let msg: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line:?}"));
            if msg.get("id") == Some(&json!(id)) {
                return msg;
            }
        }
    }

    /// One `tools/call`: the result and the round-trip time (write → response line read).
    fn call(&mut self, tool: &str, arguments: Value) -> (Value, Duration) {
        let t0 = Instant::now();
        let msg = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        let elapsed = t0.elapsed();
        let result = msg
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("protocol error: {msg}"));
        (result, elapsed)
    }

    fn close(mut self) {
        drop(self.stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the server did not exit after stdin closed");
    }
}

fn workflow(steps: usize) -> String {
    let mut s = String::from(
        "schemaVersion: 1\nid: bench-20\nname: Bench\ndescription: benchmark workflow\nversion: '1'\nsteps:\n",
    );
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: s{i}\n    title: Step {i}\n    prompt: Do step {i} of {{{{goal}}}} and report.\n"
        ));
    }
    s
}

fn advance_token(result: &Value) -> String {
    assert_eq!(result["isError"], false, "{result}");
    result["structuredContent"]["tokens"]["advance"]
        .as_str()
        .unwrap_or_else(|| panic!("no advance token: {result}"))
        .to_owned()
}

fn startup(bin: &Path, dir: &Path, workspace: &Path) {
    let fresh_home = dir.join("fresh-home");
    let (server, fresh) = Server::spawn(bin, &fresh_home, workspace);
    server.close();
    let home = dir.join("startup-home");
    let (mut server, _) = Server::spawn(bin, &home, workspace);
    // Make the home initialised (this call opens the store).
    let (r, _) = server.call("resume_session", json!({}));
    assert_eq!(r["isError"], false, "{r}");
    server.close();
    let mut warm = Vec::new();
    for _ in 0..20 {
        let (server, t) = Server::spawn(bin, &home, workspace);
        warm.push(t);
        server.close();
    }
    println!(
        "startup, spawn → initialize response, fresh home: {}",
        ms(fresh)
    );
    summary(
        "startup, spawn → initialize response, initialised home",
        warm,
    );
}

fn latency(bin: &Path, dir: &Path, workspace: &Path, wf: &Path) {
    let sessions = env_usize("BENCH_SESSIONS", 50);
    let home = dir.join("latency-home");
    let (mut server, _) = Server::spawn(bin, &home, workspace);
    let wf = wf.display().to_string();
    let mut starts = Vec::new();
    let mut continues = Vec::new();
    let wall = Instant::now();
    for s in 0..sessions {
        let (r, t) = server.call(
            "start_workflow",
            json!({"workflow": wf, "goal": format!("bench session {s}")}),
        );
        starts.push(t);
        let mut token = advance_token(&r);
        for step in 0..STEPS {
            let (r, t) = server.call(
                "continue_workflow",
                json!({"token": token, "notes": format!("Step {step} done: checked the thing, it holds.")}),
            );
            continues.push(t);
            let outcome = r["structuredContent"]["outcome"]
                .as_str()
                .unwrap_or_default();
            if step + 1 < STEPS {
                assert_eq!(outcome, "advanced", "{r}");
                token = advance_token(&r);
            } else {
                assert_eq!(outcome, "complete", "{r}");
            }
        }
    }
    let wall = wall.elapsed();
    server.close();
    summary("start_workflow round-trip", starts);
    summary(
        &format!(
            "continue_workflow round-trip ({sessions} sessions × {STEPS} steps, {:.0} calls/s)",
            (sessions * (STEPS + 1)) as f64 / wall.as_secs_f64()
        ),
        continues,
    );
}

fn contention(bin: &Path, dir: &Path, workspace: &Path) -> bool {
    let total = env_usize("BENCH_CONTENTION_SESSIONS", 1000);
    let clients = env_usize("BENCH_CLIENTS", 2).max(1);
    let home = dir.join("contention-home");
    // Create the home and database once, so the parallel servers do not race to create
    // them (`resume_session` needs the store open).
    let (mut first, _) = Server::spawn(bin, &home, workspace);
    let (r, _) = first.call("resume_session", json!({}));
    assert_eq!(r["isError"], false, "{r}");
    first.close();
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (bin, home, ws) = (bin.to_path_buf(), home.clone(), workspace.to_path_buf());
            let n = total / clients + usize::from(c < total % clients);
            std::thread::spawn(move || {
                let (mut server, _) = Server::spawn(&bin, &home, &ws);
                let mut errors = Vec::new();
                for s in 0..n {
                    let (r, _) = server.call(
                        "start_workflow",
                        json!({"workflow": "quick-task", "goal": format!("client {c} session {s}")}),
                    );
                    if r["isError"] != false {
                        errors.push(r["structuredContent"].clone());
                        continue;
                    }
                    let token = advance_token(&r);
                    // Immediately: no pause between the start response and the continue.
                    let (r, _) = server.call(
                        "continue_workflow",
                        json!({"token": token, "notes": "done"}),
                    );
                    if r["isError"] != false {
                        errors.push(r["structuredContent"].clone());
                    }
                }
                server.close();
                errors
            })
        })
        .collect();
    let errors: Vec<Value> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let busy = errors
        .iter()
        .filter(|e| {
            let text = e.to_string().to_lowercase();
            text.contains("busy") || text.contains("locked") || text.contains("contention")
        })
        .count();
    println!(
        "contention: {total} sessions, continue_workflow right after start_workflow, {clients} server processes on one home, {:.1} s: {} errors, {busy} busy/locked/contention",
        started.elapsed().as_secs_f64(),
        errors.len()
    );
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    errors.is_empty()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this target with no
    // arguments (and `--test` is the libtest convention): both of those only smoke-test.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
        || std::env::var_os("BENCH_SMOKE").is_some()
    {
        println!("bench smoke mode: skipped");
        return;
    }
    let bin = std::env::var_os("WORKTRAIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_worktrain")));
    let scratch = match std::env::var_os("BENCH_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let dir = scratch.path();
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let wf = workspace.join("bench-20.yaml");
    std::fs::write(&wf, workflow(STEPS)).unwrap();
    println!("binary: {}", bin.display());
    println!("scratch: {} (SQLite WAL, synchronous=FULL)", dir.display());
    startup(&bin, dir, &workspace);
    latency(&bin, dir, &workspace, &wf);
    if !contention(&bin, dir, &workspace) {
        eprintln!("FAILED: errors while continuing right after start");
        std::process::exit(1);
    }
}
