//! Helpers shared by every end-to-end module: a private home per test, a way to run the
//! real `worktrain` binary and capture what it did, and checks on event logs.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The binary under test, built by cargo for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_worktrain");

/// Exit codes documented in `crates/worktrain-cli/src/output.rs`.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: i32 = 0;
    /// Unclassified failure.
    pub(crate) const FAILURE: i32 = 1;
    /// Session or workflow not found.
    pub(crate) const NOT_FOUND: i32 = 3;
    /// Token rejected.
    pub(crate) const TOKEN: i32 = 4;
    /// Submission recorded but the step is blocked.
    pub(crate) const BLOCKED: i32 = 5;
    /// Invalid input (workflow, config, …).
    pub(crate) const INVALID: i32 = 6;
    /// Transient contention.
    pub(crate) const BUSY: i32 = 8;
}

/// What one invocation of the binary did.
pub(crate) struct Run {
    /// The command line (for failure messages).
    pub argv: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Raw stdout bytes.
    pub raw: Vec<u8>,
    /// Stdout as text.
    pub stdout: String,
    /// Stderr as text.
    pub stderr: String,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.argv, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Assert the exit code; returns self for chaining.
    #[track_caller]
    pub(crate) fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "unexpected exit code: {self:?}");
        self.no_panic();
        self
    }

    /// Assert that nothing panicked.
    #[track_caller]
    pub(crate) fn no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked") && self.code != 101,
            "the binary panicked: {self:?}"
        );
        self
    }

    /// Stdout parsed as one JSON document.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim_end())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Stdout parsed as JSON lines.
    #[track_caller]
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?} ({e}): {self:?}"))
            })
            .collect()
    }

    /// The `error.code` of a `--json` error document.
    #[track_caller]
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in output: {self:?}"))
            .to_owned()
    }
}

/// A private, throw-away worktrain home plus a scratch directory used as the working
/// directory of every invocation (so no test ever sees the repository or `~/.worktrain`).
pub(crate) struct Env {
    tmp: tempfile::TempDir,
    home: PathBuf,
}

impl Env {
    /// A fresh environment whose home does not exist yet.
    pub(crate) fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("wt-e2e-")
            .tempdir()
            .expect("tempdir");
        let home = tmp.path().join("home");
        Self { tmp, home }
    }

    /// A fresh environment with `worktrain init` already run.
    pub(crate) fn initialised() -> Self {
        let env = Self::new();
        env.run(&["init"]).code(exit::OK);
        env
    }

    /// The home directory.
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    /// The scratch directory (also the working directory of every invocation).
    pub(crate) fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A command for the binary with `--home` set and a hermetic environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--home").arg(&self.home).args(args);
        c.current_dir(self.tmp.path())
            .env_remove("WORKTRAIN_HOME")
            .env_remove("WORKTRAIN_LOG")
            .env_remove("WORKTRAIN_LOG_FORMAT")
            .env_remove("WORKTRAIN_DATABASE_URL")
            .env_remove("EDITOR")
            .env_remove("VISUAL")
            .env("HOME", self.tmp.path())
            .env("NO_COLOR", "1");
        c
    }

    /// Run to completion with stdin closed.
    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, None)
    }

    /// Run to completion, feeding `input` on stdin (closed stdin when `None`).
    pub(crate) fn run_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        let mut c = self.cmd(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("spawn worktrain");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait worktrain");
        finish(args, out.status, out.stdout, out.stderr)
    }

    /// Run with `--json`, assert exit 0 and parse the single JSON document.
    #[track_caller]
    pub(crate) fn ok_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        self.run(&full).code(exit::OK).json()
    }

    /// Run with `--json` (any exit code).
    pub(crate) fn run_json(&self, args: &[&str]) -> Run {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// Write a file under the scratch directory (parents created); returns its path.
    pub(crate) fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// `session start --workflow W --goal G`, parsed.
    #[track_caller]
    pub(crate) fn start(&self, workflow: &str, goal: &str) -> Value {
        let v = self.ok_json(&["session", "start", "--workflow", workflow, "--goal", goal]);
        assert_eq!(v["outcome"], "started", "{v}");
        v
    }

    /// `session advance --token T --notes N`, expecting success.
    #[track_caller]
    pub(crate) fn advance(&self, token: &str, notes: &str) -> Value {
        self.ok_json(&["session", "advance", "--token", token, "--notes", notes])
    }

    /// Every event of a session (`session log --json`).
    #[track_caller]
    pub(crate) fn events(&self, session: &str) -> Vec<Value> {
        self.run(&["--json", "session", "log", session])
            .code(exit::OK)
            .json_lines()
    }

    /// `session show --json`.
    #[track_caller]
    pub(crate) fn show(&self, session: &str) -> Value {
        self.ok_json(&["session", "show", session])
    }

    /// Assert `session verify` reports an intact hash chain.
    #[track_caller]
    pub(crate) fn verify_ok(&self, session: &str) {
        let v = self.ok_json(&["session", "verify", session]);
        assert_eq!(
            v["valid"], true,
            "session {session} failed verification: {v}"
        );
    }

    /// All session summaries (`sessions --json`).
    #[track_caller]
    pub(crate) fn sessions(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["sessions", "--limit", "1000"];
        args.extend_from_slice(extra);
        let v = self.ok_json(&args);
        v["sessions"].as_array().cloned().expect("sessions array")
    }

    /// The bytes of a file in the home directory.
    pub(crate) fn home_file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.home.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }
}

pub(crate) fn finish(args: &[&str], status: ExitStatus, raw: Vec<u8>, stderr: Vec<u8>) -> Run {
    Run {
        argv: format!("worktrain {}", args.join(" ")),
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&raw).into_owned(),
        raw,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Collect a finished child's output into a [`Run`].
pub(crate) fn collect(args: &[&str], child: Child) -> Run {
    let out = child.wait_with_output().expect("wait worktrain");
    finish(args, out.status, out.stdout, out.stderr)
}

/// A fresh database on the test PostgreSQL server (`None`: PostgreSQL tests are skipped
/// with `WORKTRAIN_TEST_POSTGRES=skip`; without a server they fail).
pub(crate) fn postgres_database() -> Option<worktrain_testkit::postgres::TestDatabase> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(worktrain_testkit::postgres::fresh_database())
}

/// The advance token of a step response.
#[track_caller]
pub(crate) fn advance_token(resp: &Value) -> String {
    let t = resp["tokens"]["advance"]
        .as_str()
        .unwrap_or_else(|| panic!("no advance token in {resp}"))
        .to_owned();
    assert!(
        t.len() <= 100,
        "advance token is {} characters (> 100): {t}",
        t.len()
    );
    t
}

/// The session id of a step response.
#[track_caller]
pub(crate) fn session_id(resp: &Value) -> String {
    resp["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_id in {resp}"))
        .to_owned()
}

/// The `body.type` of every event.
pub(crate) fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap_or("?"))
        .collect()
}

/// Assert that a session's log holds only whole operations: sequence numbers are
/// contiguous from 1, it starts with `session_started` + `node_entered`, every
/// `step_completed`/`step_skipped`/`session_rewound` is immediately followed by the event
/// that completes the operation, and nothing follows `session_completed`.
#[track_caller]
pub(crate) fn assert_whole_operations(events: &[Value]) {
    let k = kinds(events);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "seq gap at index {i}: {k:?}"
        );
    }
    assert!(
        k.len() >= 2,
        "a session log holds at least start + first node: {k:?}"
    );
    assert_eq!(&k[..2], ["session_started", "node_entered"], "{k:?}");
    for (i, kind) in k.iter().enumerate() {
        let next = k.get(i + 1).copied();
        match *kind {
            "step_completed" | "step_skipped" => assert!(
                matches!(
                    next,
                    Some("node_entered" | "session_completed" | "step_skipped")
                ),
                "partial advance: `{kind}` at seq {} is followed by {next:?}: {k:?}",
                i + 1
            ),
            "session_rewound" => assert_eq!(
                next,
                Some("node_entered"),
                "partial rewind at seq {}: {k:?}",
                i + 1
            ),
            "session_completed" => assert_eq!(next, None, "events after completion: {k:?}"),
            _ => {}
        }
    }
    let last = k.last().copied().unwrap_or_default();
    assert!(
        matches!(
            last,
            "node_entered" | "session_completed" | "step_blocked" | "checkpoint_recorded"
        ),
        "log ends inside an operation (last event `{last}`): {k:?}"
    );
}

/// A small deterministic PRNG (xorshift64*), seeded from the clock; the seed is printed
/// so a failing run can be reproduced with `WT_E2E_SEED`.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seed from `WT_E2E_SEED` or the clock.
    pub(crate) fn seeded(label: &str) -> Self {
        let seed = std::env::var("WT_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    ^ u64::from(std::process::id())
            })
            | 1;
        eprintln!("{label}: WT_E2E_SEED={seed}");
        Self(seed)
    }

    /// A generator with a fixed seed.
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Next value.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Write an `n`-step workflow (`id`) and a notes directory with one file per step.
/// Returns (workflow file, notes dir).
pub(crate) fn long_workflow(env: &Env, id: &str, n: usize) -> (PathBuf, PathBuf) {
    let mut yaml = format!(
        "schemaVersion: 1\nid: {id}\nname: Long\ndescription: many steps\nversion: '1'\nsteps:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: s{i:03}\n    title: Step {i}\n    prompt: do step {i}\n"
        ));
    }
    let wf = env.write(&format!("{id}/{id}.yaml"), yaml);
    let notes = env.dir().join(format!("{id}/notes"));
    std::fs::create_dir_all(&notes).expect("mkdir notes");
    for i in 0..n {
        std::fs::write(
            notes.join(format!("s{i:03}.md")),
            format!("notes for step {i}\n"),
        )
        .expect("notes");
    }
    (wf, notes)
}

/// Wait for a child at most `limit`; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A two-step workflow whose second step requires a `review_verdict` artifact.
pub(crate) const CONTRACT_WORKFLOW: &str = "\
schemaVersion: 1
id: contract-demo
name: Contract demo
description: A step with an output contract.
version: '1'
steps:
  - id: plan
    title: Plan
    prompt: Plan it.
  - id: review
    title: Review
    prompt: Review it.
    outputContract:
      contractRef: review_verdict
  - id: wrap-up
    title: Wrap up
    prompt: Finish.
";
