//! `worktrain daemon` as a real process, driven by the coordinator commands (`spawn`,
//! `await`, `status`, `session approve`, `kill-all`) as separate processes, with the
//! agent talking to the testkit's fake LLM. Kept quick: the heavy scenarios (crashes,
//! worktrees, load) live in their own suite.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_testkit::{FakeLlm, FakeLlmHandle, Route, Script, Turn};

use crate::support::{BIN, Env, Run, exit, wait_timeout};

/// A one-step workflow whose prompt carries the goal (the fake LLM routes on it).
const ONE: &str = "\
schemaVersion: 1
id: one
name: One
description: one step
version: '1'
steps:
  - id: work
    title: Work
    prompt: 'Do: {{goal}}'
";

const GATED: &str = "\
schemaVersion: 1
id: gated
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

/// The fake LLM in a runtime of its own, alive while this value is.
pub(crate) struct Llm {
    pub handle: FakeLlmHandle,
    _rt: tokio::runtime::Runtime,
}

impl Llm {
    pub(crate) fn start(routes: Vec<Route>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (_, handle) = rt
            .block_on(FakeLlm::start(Script {
                routes,
                ..Script::default()
            }))
            .unwrap();
        Self { handle, _rt: rt }
    }
}

pub(crate) fn complete(notes: &str) -> Turn {
    Turn::tool("complete_step", json!({"notes": notes}))
}

pub(crate) fn stall() -> Turn {
    Turn::Delay {
        ms: 60_000,
        then: Box::new(Turn::text("late")),
    }
}

pub(crate) fn route(goal: &str, turns: Vec<Turn>) -> Route {
    Route {
        contains: goal.to_owned(),
        turns,
    }
}

/// Write config.yaml (agent → the fake LLM, no worktrees) and the test workflows.
pub(crate) fn configure(env: &Env, llm: &Llm) {
    configure_with(env, llm, "{enabled: false}");
    // `spawn` sends the current directory as the workspace: it must be a git working tree.
    if !env.dir().join(".git").exists() {
        git(env.dir(), &["init", "-q"]);
    }
}

/// [`configure`] with a `daemon.worktrees` setting.
pub(crate) fn configure_with(env: &Env, llm: &Llm, worktrees: &str) {
    let config = format!(
        "daemon:
  lease_secs: 5
  worktrees: {worktrees}
agents:
  default:
    kind: llm
    llm:
      provider: anthropic
      base_url: {}
      model: fake-model
      api_key: {{value: k-test}}
      timeout: 90s
      retry: {{max_retries: 1, initial_backoff: 10ms, max_backoff: 20ms, max_retry_after: 1s}}
    settings:
      heartbeat_interval: 200ms
",
        llm.handle.base_url(),
    );
    std::fs::write(env.home().join("config.yaml"), config).unwrap();
    std::fs::write(env.home().join("workflows/one.yaml"), ONE).unwrap();
    std::fs::write(env.home().join("workflows/gated.yaml"), GATED).unwrap();
}

/// A running `worktrain daemon`; SIGTERM on drop.
pub(crate) struct DaemonProc {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl DaemonProc {
    pub(crate) fn start(env: &Env) -> Self {
        let log = env.dir().join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let mut c = env.cmd(&["daemon", "--bind", "127.0.0.1:0"]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let child = c.spawn().expect("spawn daemon");
        let mut d = Self {
            child,
            url: String::new(),
            log,
        };
        d.url = d.wait_for_address(env.home());
        d
    }

    fn wait_for_address(&mut self, home: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(home.join("daemon.pid"))
                && let Some(addr) = text.lines().nth(1)
            {
                return format!("http://{}", addr.trim());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon never started: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_timeout(&mut self.child, Duration::from_secs(40))
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_id(env: &Env, workflow: &str, goal: &str, extra: &[&str]) -> String {
    let mut args = vec!["spawn", "--workflow", workflow, "--goal", goal];
    args.extend_from_slice(extra);
    let r = env.run(&args);
    r.code(exit::OK);
    let id = r.stdout.trim().to_owned();
    assert!(id.starts_with("ses_"), "{r:?}");
    id
}

fn show(env: &Env, id: &str) -> Value {
    env.ok_json(&["session", "show", id])["session"].clone()
}

fn wait_run_state(env: &Env, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = show(env, id);
        if s["run"]["state"] == state {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {state}: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spawn_await_status_approve_and_kill_all() {
    let llm = Llm::start(vec![
        route("goal-ok", vec![complete("OK-NOTES-1")]),
        route("goal-slow", vec![stall()]),
        route(
            "goal-gate",
            vec![complete("proposal"), complete("finished")],
        ),
    ]);
    let env = Env::initialised();
    configure(&env, &llm);
    let daemon = DaemonProc::start(&env);

    // spawn prints the id; --json prints the record; the same key returns the same session.
    let ok = spawn_id(&env, "one", "goal-ok", &["--idempotency-key", "job-1"]);
    let again = env.run_json(&[
        "spawn",
        "--workflow",
        "one",
        "--goal",
        "goal-ok",
        "--idempotency-key",
        "job-1",
    ]);
    again.code(exit::OK);
    assert_eq!(again.json()["session_id"], ok.as_str());
    assert_eq!(again.json()["created"], false);

    // await: 0 when all succeeded, with the final notes.
    let r = env.run(&["await", &ok, "--timeout", "30s"]);
    r.code(0);
    assert!(
        r.stdout.contains("completed") && r.stdout.contains("OK-NOTES-1"),
        "{r:?}"
    );
    let r = env.run_json(&["await", &ok]);
    r.code(0);
    assert_eq!(r.json()["results"][0]["notes"], "OK-NOTES-1");

    // A gated session parks; `session approve` goes through the daemon and requeues it.
    let gated = spawn_id(&env, "gated", "goal-gate", &[]);
    wait_run_state(&env, &gated, "parked");
    env.run(&["session", "approve", &gated, "--note", "fine"])
        .code(exit::OK);
    let r = env.run(&["await", &gated, "--timeout", "30s"]);
    r.code(0);

    // A slow session: await times out with 2; status shows it running.
    let slow = spawn_id(&env, "one", "goal-slow", &[]);
    let r = env.run(&["await", &slow, "--timeout", "1s"]);
    r.code(2);
    wait_run_state(&env, &slow, "running");
    let r = env.run(&["status"]);
    r.code(exit::OK);
    assert!(
        r.stdout.contains("Running (1)") && r.stdout.contains(&slow),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("Recent outcomes") && r.stdout.contains(&ok),
        "{r:?}"
    );
    let st = env.ok_json(&["status"]);
    assert_eq!(st["running"][0]["session_id"], slow.as_str());

    // Usage errors of await exit 3.
    env.run(&["await"]).code(3);
    env.run(&["await", "not-a-session"]).code(3);
    env.run(&["await", "ses_01JAAAAAAAAAAAAAAAAAAAAAAA"])
        .code(3);

    // The kill switch: the slow session fails (killed); await exits 1.
    let r = env.run(&["kill-all"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("1 session"), "{r:?}");
    let r = env.run(&["await", &slow, &ok, "--all", "--timeout", "30s"]);
    r.code(1);
    assert!(r.stdout.contains("killed"), "{r:?}");
    drop(daemon);
}

#[test]
fn one_daemon_per_home_and_sigterm_interrupts_running_sessions() {
    let llm = Llm::start(vec![route(
        "goal-long",
        vec![stall(), complete("after restart")],
    )]);
    let env = Env::initialised();
    configure(&env, &llm);
    let mut daemon = DaemonProc::start(&env);
    let pid = daemon.child.id();

    // A second daemon on the same home is refused, naming the first.
    let second = env.run(&["daemon", "--bind", "127.0.0.1:0"]);
    second.code(exit::INVALID);
    assert!(second.stderr.contains(&format!("pid {pid}")), "{second:?}");

    let id = spawn_id(&env, "one", "goal-long", &[]);
    wait_run_state(&env, &id, "running");
    // The stalling LLM call is in flight before the daemon is stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while llm.handle.requests().is_empty() {
        assert!(Instant::now() < deadline, "the agent never called the LLM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = daemon.terminate().expect("the daemon stops on SIGTERM");
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    assert!(
        !env.home().join("daemon.pid").exists(),
        "pid file left behind"
    );
    let s = show(&env, &id);
    assert_eq!(s["run"]["state"], "interrupted", "{s:#}");

    // The next daemon resumes it.
    let daemon = DaemonProc::start(&env);
    let r = env.run(&["await", &id, "--timeout", "30s"]);
    if r.code != 0 {
        let reqs = llm.handle.requests();
        panic!(
            "{r:?}\n--- daemon log ---\n{}\n--- {} LLM requests; last: {}",
            daemon.log_text(),
            reqs.len(),
            reqs.last()
                .map(|r| r.raw.chars().take(3000).collect::<String>())
                .unwrap_or_default()
        );
    }
    assert!(r.stdout.contains("after restart"), "{r:?}");
    drop(daemon);
}

#[test]
fn daemon_fails_fast_on_a_bad_agent_profile() {
    let env = Env::initialised();
    // Agent profiles are typed in the config model: a mistyped key is an error with its
    // file, line and column when config.yaml is loaded (an unset key variable is not: see
    // `never_lost`).
    std::fs::write(
        env.home().join("config.yaml"),
        "agents:\n  default:\n    kind: command\n    program: claude\n    promt: stdin\n",
    )
    .unwrap();
    let r = env.run(&["daemon", "--bind", "127.0.0.1:0"]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("config.yaml:5:") && r.stderr.contains("promt"),
        "{r:?}"
    );
    // Without a daemon, coordinator commands say how to start one.
    let r = env.run(&["--daemon", "http://127.0.0.1:9", "status"]);
    r.code(exit::FAILURE);
    assert!(
        r.stderr.contains("error[daemon_unreachable]")
            && r.stderr.contains("cannot reach the worktrain daemon"),
        "not a store failure: {r:?}"
    );
}

/// `examples/coordinator.sh` against a daemon: a review and a fix in parallel, routed on
/// the review verdict.
#[test]
fn coordinator_example_routes_on_the_verdict() {
    if Command::new("jq").arg("--version").output().is_err() {
        // CI installs jq (.ci/run); a silent skip there would hide a broken example.
        assert!(
            std::env::var_os("WORKTRAIN_SKIP_JQ").is_some(),
            "examples/coordinator.sh needs jq: install it (apt-get install jq) or set WORKTRAIN_SKIP_JQ=1"
        );
        eprintln!("skipped: jq is not installed and WORKTRAIN_SKIP_JQ is set");
        return;
    }
    let verdict = json!([{"kind": "review_verdict", "verdict": "blocking", "summary": "missing test",
                          "findings": [{"severity": "blocking", "file": "src/lib.rs", "line": 1,
                                        "message": "no test for the empty case"}]}]);
    let llm = Llm::start(vec![
        route(
            "Review: the parser",
            vec![Turn::tool(
                "complete_step",
                json!({"notes": "reviewed", "artifacts": verdict}),
            )],
        ),
        route("Fix: the parser", vec![complete("fixed")]),
        route(
            "Address review: the parser",
            vec![complete("addressed the findings")],
        ),
    ]);
    let env = Env::initialised();
    configure(&env, &llm);
    for (id, what) in [("review", "Review"), ("fix", "Fix")] {
        let wf = format!(
            "schemaVersion: 1\nid: demo-{id}\nname: {what}\ndescription: d\nversion: '1'\nsteps:\n  - id: s\n    title: S\n    prompt: '{{{{goal}}}}'\n"
        );
        std::fs::write(env.home().join(format!("workflows/demo-{id}.yaml")), wf).unwrap();
    }
    let _daemon = DaemonProc::start(&env);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coordinator.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("the parser drops empty lines")
        .current_dir(env.dir())
        .env("WORKTRAIN", BIN)
        .env("WORKTRAIN_HOME", env.home())
        .env("REVIEW_WORKFLOW", "demo-review")
        .env("FIX_WORKFLOW", "demo-fix")
        .env("AWAIT_TIMEOUT", "60s")
        .env_remove("WORKTRAIN_DAEMON")
        .output()
        .unwrap();
    let run = Run {
        argv: "examples/coordinator.sh".into(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        raw: out.stdout.clone(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.code(0);
    assert!(run.stdout.contains("verdict: blocking"), "{run:?}");
    assert!(run.stdout.contains("follow-up fix"), "{run:?}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A session in a git workspace: its worktree, step snapshots (`session diff`), the
/// inventory (`worktree list`) and cleanup (`worktree clean`).
#[test]
fn worktree_list_clean_and_session_diff() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let write = |path: &str, content: &str| {
        Turn::tool("write_file", json!({"path": path, "content": content}))
    };
    let llm = Llm::start(vec![route(
        "goal-wt",
        vec![
            write("notes.txt", "step one\n"),
            complete("wrote notes.txt"),
            // Step two: stop early twice, so the run fails and the worktree is kept.
            Turn::text("stopping"),
            Turn::text("still stopping"),
        ],
    )]);
    let env = Env::initialised();
    configure_with(
        &env,
        &llm,
        "{enabled: true, remote: \"\", base_branch: main, keep_failed_hours: 1}",
    );
    let two = "schemaVersion: 1\nid: two\nname: Two\ndescription: d\nversion: '1'\nsteps:\n  - id: first\n    title: First\n    prompt: 'First: {{goal}}'\n  - id: second\n    title: Second\n    prompt: 'Second: {{goal}}'\n";
    std::fs::write(env.home().join("workflows/two.yaml"), two).unwrap();
    let repo = env.dir().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let _daemon = DaemonProc::start(&env);
    let id = spawn_id(
        &env,
        "two",
        "goal-wt",
        &["--workspace", repo.to_str().unwrap()],
    );
    let r = env.run(&["await", &id, "--timeout", "60s"]);
    r.code(1);
    let s = show(&env, &id);
    assert_eq!(s["run"]["failure"], "agent_stopped_early", "{s:#}");
    assert_eq!(s["run"]["branch"], format!("worktrain/{id}"));

    let list = env.ok_json(&["worktree", "list"]);
    let rows = list["worktrees"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list:#}");
    assert_eq!(rows[0]["session"], id.as_str());
    assert_eq!(rows[0]["branch"], format!("worktrain/{id}"));
    assert_eq!(rows[0]["dirty"], true, "notes.txt is uncommitted: {list:#}");
    let human = env.run(&["worktree", "list"]);
    human.code(exit::OK);
    assert!(human.stdout.contains(&id), "{human:?}");

    let diff = env.ok_json(&["session", "diff", &id]);
    let steps = diff["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{diff:#}");
    assert_eq!(steps[0]["step_id"], "first");
    assert_eq!(steps[0]["files"][0]["path"], "notes.txt");
    assert!(
        steps[0]["patch"].as_str().unwrap().contains("+step one"),
        "{diff:#}"
    );
    let human = env.run(&["session", "diff", &id, "--step", "first"]);
    human.code(exit::OK);
    assert!(
        human.stdout.contains("notes.txt") && human.stdout.contains("+step one"),
        "{human:?}"
    );
    env.run(&["session", "diff", &id, "--step", "second"])
        .code(exit::INVALID);

    // A kept worktree is not removed before its keep expires.
    let clean = env.ok_json(&["worktree", "clean", "--dry-run"]);
    assert!(
        clean["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "would remove"),
        "{clean:#}"
    );
    assert!(Path::new(rows[0]["path"].as_str().unwrap()).exists());
}

/// A raw HTTP/1.1 GET (no client library): the status line and headers.
fn http_get_head(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

#[test]
fn console_prints_a_one_time_login_link() {
    let llm = Llm::start(vec![]);
    let env = Env::initialised();
    configure(&env, &llm);
    let daemon = DaemonProc::start(&env);
    let r = env.run(&["console"]);
    r.code(exit::OK);
    let url = r.stdout.lines().next().unwrap().trim().to_owned();
    let path = url
        .strip_prefix(&daemon.url)
        .expect("a link to this daemon");
    assert!(path.starts_with("/console/login?ticket="), "{r:?}");
    // The link logs the browser in (a session cookie) once.
    let head = http_get_head(&daemon.url, path);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let lower = head.to_lowercase();
    assert!(
        lower.contains("set-cookie: wt_console=") && lower.contains("httponly"),
        "{head}"
    );
    let again = http_get_head(&daemon.url, path);
    assert!(again.starts_with("HTTP/1.1 401"), "{again}");
    // Without a cookie the console sends you to its login page.
    let head = http_get_head(&daemon.url, "/console/sessions");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(
        head.to_lowercase().contains("location: /console/login"),
        "{head}"
    );
    let v = env.ok_json(&["console"]);
    assert!(v["url"].as_str().unwrap().starts_with(&daemon.url), "{v}");
    assert_eq!(v["expires_in_secs"], 300);
    drop(daemon);
}
