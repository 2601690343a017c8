//! The rig behind `daemon_e2e`: a real `worktrain daemon` process on its own home, whose
//! agent profile points the built-in LLM loop at a scripted fake LLM (the testkit's
//! `FakeLlm`, a real HTTP server on a loopback port in a runtime of its own), and a real
//! git repository with a bare `origin` on disk as the session workspace (worktrees on).
//!
//! Every wait is bounded and fails with what was observed plus the daemon's log tail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_testkit::{FakeLlm, FakeLlmHandle, RecordedRequest, Route, Script, Turn};

use crate::support::{Env, Run, exit, wait_timeout};

/// One step; the prompt carries the goal (the fake LLM routes on it).
pub(crate) const WF_ONE: &str = "\
schemaVersion: 1
id: e2e-one
name: One
description: one step
version: '1'
steps:
  - id: work
    title: Work
    prompt: 'Do: {{goal}}'
";

/// Two steps.
pub(crate) const WF_TWO: &str = "\
schemaVersion: 1
id: e2e-two
name: Two
description: two steps
version: '1'
steps:
  - id: first
    title: First
    prompt: 'First: {{goal}}'
  - id: second
    title: Second
    prompt: 'Second: {{goal}}'
";

/// A gated step, then one more.
pub(crate) const WF_GATED: &str = "\
schemaVersion: 1
id: e2e-gated
name: Gated
description: a gated step
version: '1'
steps:
  - id: propose
    title: Propose
    prompt: 'Propose: {{goal}}'
    requireConfirmation: true
  - id: finish
    title: Finish
    prompt: 'Finish: {{goal}}'
";

/// Two working steps, then a gate (to stop the run so it can be rewound).
pub(crate) const WF_REWIND: &str = "\
schemaVersion: 2
id: e2e-rewind
name: Rewind
description: two steps that change files, then a gate
version: '1'
steps:
  - id: first
    title: First
    prompt: 'First: {{goal}}'
  - id: second
    title: Second
    prompt: 'Second: {{goal}}'
  - id: review
    title: Review
    prompt: 'Review: {{goal}}'
    requireConfirmation: true
";

/// The fake model calls `complete_step` with these notes.
pub(crate) fn complete(notes: &str) -> Turn {
    Turn::tool("complete_step", json!({ "notes": notes }))
}

/// The fake model runs a shell command.
pub(crate) fn shell(command: &str) -> Turn {
    Turn::tool("shell", json!({ "command": command }))
}

/// The fake model writes a file.
pub(crate) fn write_file(path: &str, content: &str) -> Turn {
    Turn::tool("write_file", json!({ "path": path, "content": content }))
}

/// Turns for requests whose body contains `goal`.
pub(crate) fn route(goal: &str, turns: Vec<Turn>) -> Route {
    Route {
        contains: goal.to_owned(),
        turns,
    }
}

/// Poll `probe` every 50 ms until it returns `Some`, at most `limit`; on timeout panic
/// with `what` and the last observation `describe` gives.
#[track_caller]
pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run git in `dir` with a fixed identity; returns stdout (panics on failure).
#[track_caller]
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether git is installed (the suite needs it).
pub(crate) fn have_git() -> bool {
    Command::new("git").arg("--version").output().is_ok()
}

/// Whether a process is still alive (a zombie counts as dead).
/// Whether a process with `marker` as one of its arguments is alive (not gone, not a
/// zombie). Agent commands run in their own PID namespace: a `$!` they write down is not
/// a pid out here, so the tests mark their sleepers (`sleep 30.123`) instead.
pub(crate) fn alive_marked(marker: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            return false;
        };
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
            && alive(pid)
    })
}

/// Whether a process is alive (not gone, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // `pid (comm) S …`: the state follows the last `)`.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
    }
}

/// RSS (KiB) and user+system CPU ticks of a process, from /proc.
pub(crate) fn rss_and_cpu(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After `)`: state is field 3 of the whole line → index 0 here; utime/stime are
    // fields 14/15 → indexes 11/12.
    let ticks = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    (rss, ticks)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub(crate) fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// A running `worktrain daemon`: SIGTERM (then SIGKILL) when dropped.
pub(crate) struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr log.
    pub log: PathBuf,
}

impl Daemon {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last few KiB of its log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_owned()
    }

    /// SIGKILL, and reap it.
    pub(crate) fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (at most 40 s).
    pub(crate) fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_timeout(&mut self.child, Duration::from_secs(40))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if self.terminate().is_none() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// How a rig is set up.
pub(crate) struct RigSpec<'a> {
    /// Extra lines under `daemon:` in config.yaml (indented by two spaces each).
    pub daemon: &'a [&'a str],
    /// Routed fake-LLM turns.
    pub routes: Vec<Route>,
    /// Turns for requests no route matches.
    pub turns: Vec<Turn>,
    /// Give the workspace a bare `origin` and fetch from it (else local refs only).
    pub remote: bool,
    /// Agent heartbeat interval.
    pub heartbeat: &'a str,
    /// More agent profiles: YAML appended under `agents:` (indented by two spaces).
    pub agents: &'a str,
    /// `daemon.worktrees.remote` when it should differ from what `remote` implies (a
    /// repository without the configured remote).
    pub remote_setting: Option<&'a str>,
    /// Replaces the whole `default` agent profile's `api_key` (e.g. an unset variable).
    pub api_key: &'a str,
}

impl Default for RigSpec<'_> {
    fn default() -> Self {
        Self {
            daemon: &[],
            routes: Vec::new(),
            turns: Vec::new(),
            remote: true,
            heartbeat: "200ms",
            agents: "",
            remote_setting: None,
            api_key: "{value: k-test}",
        }
    }
}

/// A home, a fake LLM, a git workspace and (when started) a daemon.
pub(crate) struct Rig {
    /// The daemon (when started).
    pub daemon: Option<Daemon>,
    /// The fake LLM.
    pub llm: FakeLlmHandle,
    http: reqwest::Client,
    token: String,
    /// The workspace repository.
    pub repo: PathBuf,
    /// Home and scratch directory (dropped last: the daemon must stop first).
    pub env: Env,
    /// Extra environment variables of the daemon process.
    pub daemon_env: Vec<(String, String)>,
    /// The daemon's `--bind` (default `127.0.0.1:0`).
    bind: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Initialise a home, start the fake LLM, make the repository and write config.yaml
    /// and the workflows. The daemon is not started.
    pub(crate) fn new(spec: RigSpec<'_>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (_, llm) = rt
            .block_on(FakeLlm::start(Script {
                turns: spec.turns,
                routes: spec.routes,
                ..Script::default()
            }))
            .expect("fake llm");
        let env = Env::initialised();
        let repo = env.dir().join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir repo");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "hello\n").expect("README");
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        if spec.remote {
            let remote = env.dir().join("remote.git");
            git(
                env.dir(),
                &[
                    "init",
                    "-q",
                    "--bare",
                    "-b",
                    "main",
                    remote.to_str().unwrap(),
                ],
            );
            git(
                &repo,
                &["remote", "add", "origin", remote.to_str().unwrap()],
            );
            git(&repo, &["push", "-q", "-u", "origin", "main"]);
        }
        let mut daemon = String::new();
        for line in spec.daemon {
            daemon.push_str("  ");
            daemon.push_str(line);
            daemon.push('\n');
        }
        let remote = spec
            .remote_setting
            .unwrap_or(if spec.remote { "origin" } else { "\"\"" });
        let config = format!(
            "daemon:
{daemon}  worktrees: {{enabled: true, remote: {remote}, base_branch: main, keep_failed_hours: 1}}
agents:
  default:
    kind: llm
    llm:
      provider: anthropic
      base_url: {base}
      model: fake-model
      api_key: {api_key}
      timeout: 90s
      retry: {{max_retries: 1, initial_backoff: 10ms, max_backoff: 20ms, max_retry_after: 1s}}
    settings:
      heartbeat_interval: {hb}
{agents}",
            base = llm.base_url(),
            hb = spec.heartbeat,
            agents = spec.agents,
            api_key = spec.api_key,
        );
        std::fs::write(env.home().join("config.yaml"), config).expect("config.yaml");
        for (name, text) in [
            ("e2e-one", WF_ONE),
            ("e2e-two", WF_TWO),
            ("e2e-gated", WF_GATED),
            ("e2e-rewind", WF_REWIND),
        ] {
            std::fs::write(env.home().join(format!("workflows/{name}.yaml")), text)
                .expect("workflow");
        }
        let token = String::from_utf8(env.home_file("api-token"))
            .expect("token")
            .trim()
            .to_owned();
        Self {
            daemon: None,
            llm,
            http: reqwest::Client::new(),
            token,
            repo,
            env,
            daemon_env: Vec::new(),
            bind: None,
            rt,
        }
    }

    /// Run `f` on the rig's runtime (where its fake servers live).
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Start the daemon (`--bind 127.0.0.1:0`) and wait until it serves `/readyz`.
    pub(crate) fn start_daemon(&mut self) -> &Daemon {
        self.start(&[], true)
    }

    /// [`Rig::start_daemon`] with extra environment variables; waits until `/readyz`
    /// answers (ready or not) instead of until it is ready.
    pub(crate) fn start_daemon_with(&mut self, env: &[(&str, &str)]) -> &Daemon {
        self.start(env, false)
    }

    /// [`Rig::start_daemon`] on a fixed address (a restart keeps its clients' URL).
    pub(crate) fn start_daemon_at(&mut self, bind: &str) -> &Daemon {
        self.bind = Some(bind.to_owned());
        self.start(&[], true)
    }

    fn start(&mut self, env: &[(&str, &str)], wait_ready: bool) -> &Daemon {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let _ = std::fs::remove_file(self.env.home().join("daemon.pid"));
        let n = std::fs::read_dir(self.env.dir())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.env.dir().join(format!("daemon-{n}.log"));
        let bind = self.bind.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let mut c = self.env.cmd(&["daemon", "--bind", &bind]);
        c.envs(env.iter().copied());
        for (k, v) in &self.daemon_env {
            c.env(k, v);
        }
        // The log goes to a file: it must be plain text without anyone asking.
        c.env_remove("NO_COLOR");
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
        let mut child = c.spawn().expect("spawn daemon");
        let pidfile = self.env.home().join("daemon.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && text.lines().next().map(str::trim) == Some(&child.id().to_string())
                && let Some(addr) = text.lines().nth(1)
            {
                break format!("http://{}", addr.trim());
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "the daemon exited early ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never wrote its address: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.daemon = Some(Daemon { child, url, log });
        wait_for(
            "/readyz",
            Duration::from_secs(20),
            || {
                self.get_any("/readyz")
                    .ok()
                    .filter(|(_, v)| !wait_ready || v["ready"] == true)
            },
            || self.log_tail(),
        );
        self.daemon.as_ref().expect("daemon")
    }

    /// SIGKILL the daemon.
    pub(crate) fn sigkill_daemon(&mut self) {
        self.daemon.take().expect("no daemon to kill").sigkill();
    }

    /// The daemon's log tail (for failure messages).
    pub(crate) fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| format!("--- daemon log (tail) ---\n{}", d.log_tail()))
            .unwrap_or_else(|| "(no daemon running)".into())
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.daemon.as_ref().expect("daemon not started").url
        )
    }

    /// GET an API path: status and JSON body, whatever the status.
    pub(crate) fn get_any(&self, path: &str) -> Result<(u16, Value), String> {
        let url = self.url(path);
        self.rt.block_on(async {
            let r = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            Ok((status, body))
        })
    }

    fn try_get(&self, path: &str) -> Result<Value, String> {
        let url = self.url(path);
        self.rt.block_on(async {
            let r = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("GET {path}: {status}: {body}"))
            }
        })
    }

    /// POST raw bytes with these headers (no bearer token): (status, JSON body or null).
    pub(crate) fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let url = self.url(path);
        let mut req = self.http.post(&url).timeout(Duration::from_secs(30));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.to_vec();
        self.rt.block_on(async move {
            let r = req.body(body).send().await.expect("POST");
            let status = r.status().as_u16();
            let v = r.json::<Value>().await.unwrap_or(Value::Null);
            (status, v)
        })
    }

    /// POST JSON to an API path with the bearer token; panics unless 2xx.
    #[track_caller]
    pub(crate) fn post(&self, path: &str, body: Value) -> Value {
        let url = self.url(path);
        let token = self.token.clone();
        let r = self.rt.block_on(async {
            let r = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(v)
            } else {
                Err(format!("POST {path}: {status}: {v}"))
            }
        });
        r.unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// GET an API path; panics unless 2xx.
    #[track_caller]
    pub(crate) fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// Dispatch many sessions at once over HTTP from `parallel` concurrent clients;
    /// returns the ids in the order the daemon answered.
    pub(crate) fn dispatch_many(&self, bodies: Vec<Value>, parallel: usize) -> Vec<String> {
        let url = self.url("/api/v1/sessions");
        let token = self.token.clone();
        let http = self.http.clone();
        self.rt.block_on(async move {
            let queue = std::sync::Arc::new(tokio::sync::Mutex::new(bodies.into_iter()));
            let order = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..parallel.max(1) {
                let (queue, order, http, url, token) = (
                    queue.clone(),
                    order.clone(),
                    http.clone(),
                    url.clone(),
                    token.clone(),
                );
                set.spawn(async move {
                    loop {
                        let Some(body) = queue.lock().await.next() else {
                            return;
                        };
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&body)
                            .timeout(Duration::from_secs(60))
                            .send()
                            .await
                            .expect("dispatch");
                        let status = r.status();
                        let v: Value = r.json().await.expect("dispatch answer");
                        assert_eq!(status.as_u16(), 201, "dispatch {body}: {v}");
                        let id = v["session_id"].as_str().expect("session_id").to_owned();
                        order.lock().await.push(id);
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.expect("dispatch task");
            }
            order.lock().await.clone()
        })
    }

    /// Every event of a session through the API (pages of 1000).
    pub(crate) fn api_events(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let page = self.get(&format!(
                "/api/v1/sessions/{id}/events?after={after}&limit=1000"
            ));
            let events = page["events"].as_array().cloned().unwrap_or_default();
            out.extend(events);
            if page["more"] != true {
                return out;
            }
            after = page["next_after"].as_u64().expect("next_after");
        }
    }

    /// `worktrain spawn` (through the CLI); returns the session id.
    #[track_caller]
    pub(crate) fn spawn(&self, workflow: &str, goal: &str, extra: &[&str]) -> String {
        let mut args = vec!["spawn", "--workflow", workflow, "--goal", goal];
        args.extend_from_slice(extra);
        let r = self.env.run(&args);
        if r.code != exit::OK {
            panic!("{r:?}\n{}", self.log_tail());
        }
        let id = r.stdout.trim().to_owned();
        assert!(id.starts_with("ses_"), "{r:?}");
        id
    }

    /// [`Self::spawn`] of `e2e-one`/… in the rig's repository.
    #[track_caller]
    pub(crate) fn spawn_in_repo(&self, workflow: &str, goal: &str, extra: &[&str]) -> String {
        let repo = self.repo.to_str().expect("utf-8 path").to_owned();
        let mut args = vec!["--workspace", repo.as_str()];
        args.extend_from_slice(extra);
        self.spawn(workflow, goal, &args)
    }

    /// `worktrain --json await IDS --all --timeout T`: (exit code, results by session).
    pub(crate) fn await_all(&self, ids: &[&str], timeout: &str) -> (i32, Vec<Value>) {
        let mut args = vec!["--json", "await"];
        args.extend_from_slice(ids);
        args.extend_from_slice(&["--all", "--timeout", timeout]);
        let r = self.env.run(&args);
        r.no_panic();
        let v: Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("await printed no JSON ({e}): {r:?}\n{}", self.log_tail()));
        assert_eq!(
            v["timed_out"],
            false,
            "await timed out: {r:?}\n{}",
            self.log_tail()
        );
        let results = v["results"].as_array().cloned().unwrap_or_default();
        (r.code, results)
    }

    /// Run the CLI (any exit code).
    pub(crate) fn cli(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }

    /// `session show --json` → the session record (from the store; no daemon needed).
    #[track_caller]
    pub(crate) fn show(&self, id: &str) -> Value {
        self.env.ok_json(&["session", "show", id])["session"].clone()
    }

    /// `session log --json` (from the store).
    #[track_caller]
    pub(crate) fn events(&self, id: &str) -> Vec<Value> {
        self.env.events(id)
    }

    /// `GET /api/v1/sessions/{id}`: the record, step graph and lease.
    #[track_caller]
    pub(crate) fn detail(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/sessions/{id}"))
    }

    /// Wait until the session's run is in `state` (asks the daemon).
    #[track_caller]
    pub(crate) fn wait_run_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        wait_for(
            &format!("{id} to be {state}"),
            limit,
            || Some(self.detail(id)).filter(|s| s["run"]["state"] == state),
            || format!("now: {:#}\n{}", self.detail(id), self.log_tail()),
        )
    }

    /// Wait until the fake agent created `name` in the session's worktree.
    #[track_caller]
    pub(crate) fn wait_file(&self, id: &str, name: &str, limit: Duration) {
        let path = self.worktree_of(id).join(name);
        wait_for(
            &format!("{} to appear", path.display()),
            limit,
            || path.exists().then_some(()),
            || format!("session: {:#}\n{}", self.detail(id), self.log_tail()),
        );
    }

    /// Requests the fake LLM received whose body contains `needle`, in order.
    pub(crate) fn requests_for(&self, needle: &str) -> Vec<RecordedRequest> {
        self.llm
            .requests()
            .into_iter()
            .filter(|r| r.raw.contains(needle))
            .collect()
    }

    /// `worktrain worktree list --json` rows.
    #[track_caller]
    pub(crate) fn worktrees(&self) -> Vec<Value> {
        self.env.ok_json(&["worktree", "list"])["worktrees"]
            .as_array()
            .cloned()
            .expect("worktrees array")
    }

    /// Paths of `git worktree list --porcelain` in the repository, the main one excluded.
    pub(crate) fn git_worktrees(&self) -> Vec<PathBuf> {
        let main = std::fs::canonicalize(&self.repo).expect("canonical repo");
        git(&self.repo, &["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p)))
            .filter(|p| *p != main)
            .collect()
    }

    /// No worktree leaked: `worktree list` shows exactly the sessions in `kept`, each kept
    /// for inspection (not "in use") with its directory present; `git worktree list`
    /// agrees; and no stray directory is left under `$WORKTRAIN_HOME/worktrees`.
    #[track_caller]
    pub(crate) fn assert_worktrees_exactly(&self, kept: &[&str]) {
        let rows = self.worktrees();
        let mut listed: Vec<String> = rows
            .iter()
            .map(|r| r["session"].as_str().unwrap_or("?").to_owned())
            .collect();
        listed.sort();
        let mut want: Vec<String> = kept.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(listed, want, "worktree list: {rows:#?}");
        for r in &rows {
            assert_eq!(
                r["exists"], true,
                "a kept worktree lost its directory: {r:#}"
            );
            let lock = r["lock"].as_str().unwrap_or("");
            let until = r["kept_until"].as_str().unwrap_or("");
            assert!(
                humantime::parse_rfc3339(until).is_ok(),
                "kept_until must be an RFC 3339 time, not debug text: {r:#}"
            );
            assert!(
                lock == "kept",
                "the worktree of finished session {} is locked `{lock}`, not kept for inspection (it would never be reaped): {r:#}",
                r["session"]
            );
        }
        let mut git_paths = self.git_worktrees();
        git_paths.sort();
        let mut listed_paths: Vec<PathBuf> = rows
            .iter()
            .map(|r| {
                let p = PathBuf::from(r["path"].as_str().expect("path"));
                std::fs::canonicalize(&p).unwrap_or(p)
            })
            .collect();
        listed_paths.sort();
        assert_eq!(
            git_paths, listed_paths,
            "`git worktree list` disagrees with `worktrain worktree list`"
        );
        let root = self.env.home().join("worktrees");
        let mut dirs: Vec<String> = std::fs::read_dir(&root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("ses_"))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        assert_eq!(dirs, want, "directories under {}", root.display());
    }

    /// The path of a session's worktree.
    pub(crate) fn worktree_of(&self, id: &str) -> PathBuf {
        self.env.home().join("worktrees").join(id)
    }

    /// Read a pid the fake agent wrote into its worktree.
    #[track_caller]
    /// The text of a file the agent wrote in its worktree (trimmed).
    pub(crate) fn marker_file(&self, id: &str, name: &str) -> String {
        let path = self.worktree_of(id).join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }
}

/// The `body.type` of every event.
pub(crate) fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The events of one `body.type`.
pub(crate) fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["body"]["type"] == kind)
        .collect()
}

/// The `agent_activity` payloads of one activity type.
pub(crate) fn activities<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["body"]["type"] == "agent_activity")
        .map(|e| &e["body"]["activity"])
        .filter(|a| a["type"] == kind)
        .collect()
}

/// The await result of one session.
#[track_caller]
pub(crate) fn result_of<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["session_id"] == id)
        .unwrap_or_else(|| panic!("no await result for {id}: {results:#?}"))
}
