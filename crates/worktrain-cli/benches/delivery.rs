//! worktrain's own overhead around an agent's work, measured with the real daemon process
//! (custom harness: `cargo bench -p worktrain-cli --bench delivery`):
//!
//! - **final step completed → pull request opened**: sessions spawned with
//!   `delivery: pull_request` and a source issue, the fake LLM agent writes a file and
//!   completes its one step with a handoff; the interval runs from the `step_completed`
//!   event to the `delivery_stage_completed` event of the `pull_request` stage (both
//!   stamped by the store), covering the commit, the secret scan, the push to a bare
//!   remote on disk and the pull request on the local fake GitHub — every event fsync'd
//!   in SQLite on the way;
//! - **webhook `202` → the agent's first LLM request**: signed generic-webhook deliveries
//!   to a trigger; from the moment the `202` arrives to the moment the fake LLM has the
//!   session's first request (polled every 0.5 ms in this process).
//!
//! `BENCH_PRS` (default 20) and `BENCH_HOOKS` (default 30) set the sample counts;
//! `WORKTRAIN_BIN` overrides the binary. Under `cargo test --all-targets` (no `--bench`)
//! it only prints "bench smoke mode: skipped".
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_testkit::{FakeLlm, Route, Script, Turn};

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

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{label}: n={} p50 {} · p90 {} · max {}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(*samples.last().unwrap())
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.invalid")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

const WORKFLOW: &str = "schemaVersion: 1\nid: bench-one\nname: One\ndescription: one step\nversion: '1'\nsteps:\n  - id: work\n    title: Work\n    prompt: 'Do: {{goal}}'\n";

struct Daemon {
    child: Child,
    url: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
        || std::env::var_os("BENCH_SMOKE").is_some()
    {
        println!("bench smoke mode: skipped");
        return;
    }
    let prs = env_usize("BENCH_PRS", 20);
    let hooks = env_usize("BENCH_HOOKS", 30);
    let bin = std::env::var_os("WORKTRAIN_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_worktrain")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let home = dir.join("home");
    let run = |a: &[&str]| {
        let out = Command::new(&bin)
            .arg("--home")
            .arg(&home)
            .args(a)
            .output()
            .unwrap();
        assert!(out.status.success(), "{a:?}: {out:?}");
    };
    run(&["init"]);

    // The fake LLM: PR sessions write a file and hand off; hook sessions just complete.
    let handoff = json!([{"kind": "handoff", "commitType": "feat", "commitSubject": "bench",
        "prTitle": "Bench", "prBody": "A benchmark change.", "filesChanged": ["bench.txt"], "followUps": []}]);
    let mut routes: Vec<Route> = (0..prs)
        .map(|i| Route {
            contains: format!("bench-pr-{i}-"),
            turns: vec![
                Turn::tool(
                    "write_file",
                    json!({"path": format!("bench-{i}.txt"), "content": "x\n"}),
                ),
                Turn::tool(
                    "complete_step",
                    json!({"notes": "done", "artifacts": handoff}),
                ),
            ],
        })
        .collect();
    routes.extend((0..hooks).map(|i| Route {
        contains: format!("bench-hook-{i}-"),
        turns: vec![Turn::tool("complete_step", json!({"notes": "done"}))],
    }));
    let (_, llm) = rt
        .block_on(FakeLlm::start(Script {
            routes,
            ..Script::default()
        }))
        .unwrap();
    let gh = rt
        .block_on(worktrain_testkit::forge::github::FakeGithub::start())
        .unwrap();
    gh.set_items(
        "acme/widgets",
        vec![
            json!({"number": 12, "state": "open", "title": "t", "labels": [], "assignees": [],
                    "updated_at": "2026-01-01T00:00:00Z"}),
        ],
    );

    // A repository with a bare remote and a pull request template.
    let repo = dir.join("repo");
    let remote = dir.join("remote.git");
    std::fs::create_dir_all(repo.join(".github")).unwrap();
    git(
        dir,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join(".github/pull_request_template.md"),
        "## Summary\n\n## Checklist\n- [ ] tests\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    git(
        &repo,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    git(&repo, &["push", "-q", "-u", "origin", "main"]);

    std::fs::write(
        home.join("config.yaml"),
        format!(
            "daemon:\n  max_concurrent_sessions: 4\n  worktrees: {{enabled: true, remote: origin, base_branch: main}}\nagents:\n  default:\n    kind: llm\n    llm:\n      provider: anthropic\n      base_url: {}\n      model: fake-model\n      api_key: {{value: k-bench}}\n",
            llm.base_url()
        ),
    )
    .unwrap();
    std::fs::write(home.join("workflows/bench-one.yaml"), WORKFLOW).unwrap();
    std::fs::write(
        home.join("triggers.yml"),
        format!(
            "version: 1\nidentities:\n  bot:\n    github: {{token: $BENCH_FORGE_TOKEN, api_url: {}}}\ntriggers:\n  - id: bench-hook\n    workflow: bench-one\n    workspace: {{path: {}}}\n    goal: '{{{{ $.goal }}}}'\n    source:\n      webhook:\n        secret: $BENCH_HOOK_SECRET\n        source_id: $.id\n",
            gh.base_url(),
            repo.display()
        ),
    )
    .unwrap();

    // The daemon.
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = Command::new(&bin)
        .arg("--home")
        .arg(&home)
        .args(["daemon", "--bind", "127.0.0.1:0"])
        .env("BENCH_FORGE_TOKEN", "t0ken")
        .env("BENCH_HOOK_SECRET", "hook-secret")
        .env("WORKTRAIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(t) = std::fs::read_to_string(home.join("daemon.pid"))
            && t.lines().next().map(str::trim) == Some(pid.as_str())
            && let Some(a) = t.lines().nth(1)
        {
            break format!("http://{}", a.trim());
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let daemon = Daemon { child, url };
    let token = std::fs::read_to_string(home.join("api-token"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| -> Value {
        rt.block_on(async {
            http.post(format!("{}{path}", daemon.url))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let get = |path: &str| -> Value {
        rt.block_on(async {
            http.get(format!("{}{path}", daemon.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Ready?
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/readyz")["ready"] != true {
        assert!(Instant::now() < deadline, "the daemon is not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("binary: {}", bin.display());

    // 1. Final step completed → pull request opened.
    let mut pr_samples = Vec::new();
    for i in 0..prs {
        let rec = post(
            "/api/v1/sessions",
            json!({"workflow": "bench-one", "goal": format!("bench-pr-{i}-"),
                   "workspace": repo.display().to_string(),
                   "source": "github:acme/widgets#12",
                   "delivery": {"target": "pull_request", "commit_status": false}}),
        );
        let id = rec["session_id"].as_str().unwrap().to_owned();
        let done = post(
            "/api/v1/await",
            json!({"sessions": [id], "mode": "all", "timeout_secs": 60}),
        );
        assert_eq!(done["results"][0]["succeeded"], true, "{done:#}");
        let events = get(&format!("/api/v1/sessions/{id}/events?after=0&limit=1000"));
        let at = |pred: &dyn Fn(&Value) -> bool| -> i64 {
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| pred(&e["body"]))
                .filter_map(|e| e["created_at_ms"].as_i64())
                .next_back()
                .unwrap()
        };
        let completed = at(&|b| b["type"] == "step_completed");
        let opened =
            at(&|b| b["type"] == "delivery_stage_completed" && b["stage"] == "pull_request");
        pr_samples.push(Duration::from_millis(
            u64::try_from(opened - completed).unwrap(),
        ));
    }
    summary(
        "final step completed → PR opened (target p50 ≤ 1 s)",
        pr_samples,
    );

    // 2. Webhook 202 → first LLM request.
    let mut hook_samples = Vec::new();
    for i in 0..hooks {
        let goal = format!("bench-hook-{i}-");
        let body = serde_json::to_vec(&json!({"id": format!("h{i}"), "goal": goal})).unwrap();
        let sig = worktrain_delivery::sign(b"hook-secret", &body);
        let seen_before = llm.requests().len();
        let status = rt.block_on(async {
            http.post(format!("{}/webhooks/bench-hook", daemon.url))
                .header("X-Signature-256", &sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        let t0 = Instant::now();
        assert_eq!(status, 202);
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if llm
                .requests()
                .iter()
                .skip(seen_before)
                .any(|r| r.raw.contains(&goal))
            {
                break;
            }
            assert!(Instant::now() < deadline, "no LLM request for {goal}");
            std::thread::sleep(Duration::from_micros(500));
        }
        hook_samples.push(t0.elapsed());
        // Let the session finish before the next delivery.
        std::thread::sleep(Duration::from_millis(300));
    }
    summary(
        "webhook 202 → first LLM request (target p50 ≤ 200 ms)",
        hook_samples,
    );
    drop(daemon);
}
