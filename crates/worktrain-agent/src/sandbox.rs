//! The one way worktrain runs a command for an agent: the built-in `shell` tool, external
//! agent processes, and workspace hooks all go through a [`SandboxScope`], so they all get
//! the same confinement, environment, private temp dir, process-tree kill and output caps.
//!
//! On Linux the sandbox is [bubblewrap](https://github.com/containers/bubblewrap) (`bwrap`):
//!
//! - a new user, mount, PID, IPC, UTS and cgroup namespace (and network namespace unless
//!   the policy allows the network); all capabilities dropped, no new user namespaces;
//! - the file system read-only (`/` bound read-only), with the worktree and a private
//!   temp dir (`/tmp`) writable, and the hidden paths (worktrain's home — keys, tokens,
//!   the database, other sessions' worktrees — plus whatever the policy adds) replaced by
//!   empty directories;
//! - a fresh `/proc` showing only the sandbox's own processes (not the daemon's entries or
//!   environment) and a minimal `/dev`;
//! - an allowlisted environment: nothing is inherited from the daemon except the names in
//!   [`BASE_ENV`] and the policy's `env`;
//! - the process tree dies with the command: bwrap's PID 1 exits when the command does,
//!   which kills everything left in the namespace (a `setsid nohup` daemon included), and
//!   `--die-with-parent` kills it all if worktrain itself dies.
//!
//! When bwrap is missing or cannot create namespaces, [`probe`] says why; commands then
//! fail with [`SandboxError::Unavailable`] unless the policy explicitly opts out
//! (`mode: off`). See `docs/agents.md` and `docs/decisions/` for the choice.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::netproxy::{self, HostPattern};
use crate::tools::shell::{CappedBuf, GroupKill, ShellRun, drain};

/// Environment variable naming the session in every command an agent runs.
pub const SESSION_ENV: &str = "WORKTRAIN_SESSION_ID";

/// Variables passed from worktrain's own environment to every command (when set): what
/// shells, compilers and test runners need to find their tools. Nothing else is inherited.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "JAVA_HOME",
];

/// Whether commands run sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Sandboxed; if the sandbox is unavailable, the command is refused.
    #[default]
    Required,
    /// Explicit opt-out: commands run as plain child processes (still with the
    /// allowlisted environment, a private temp dir and a process-group kill). Agents then
    /// reach everything worktrain's user can.
    Off,
}

/// Network access of sandboxed commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// The host's network (needed by external agents to reach their model provider, and
    /// by builds that download dependencies).
    On,
    /// Only a private loopback interface.
    Off,
    /// A private loopback interface and an HTTP(S) proxy that connects only to these
    /// hosts (`{allow: [github.com, "*.npmjs.org", "pypi.org:443"]}`; see
    /// [`crate::netproxy`]).
    Allow(Vec<HostPattern>),
}

/// A profile's sandbox settings (`sandbox:` in an agent profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxPolicy {
    /// `required` (default) or `off`.
    #[serde(default)]
    pub mode: SandboxMode,
    /// `off` (default for the built-in agent's shell) or `on`.
    #[serde(default = "network_off")]
    pub network: NetworkPolicy,
    /// Further variables passed through from worktrain's environment (by name).
    #[serde(default)]
    pub env: Vec<String>,
    /// Further paths the command may write (besides the worktree and its temp dir).
    #[serde(default)]
    pub read_write: Vec<PathBuf>,
    /// Paths shown read-only even where they would be hidden (e.g. a program under the
    /// host's `/tmp`, which the sandbox replaces).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// Further paths hidden from the command (replaced by empty directories).
    #[serde(default)]
    pub hide: Vec<PathBuf>,
}

fn network_off() -> NetworkPolicy {
    NetworkPolicy::Off
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Required,
            network: NetworkPolicy::Off,
            env: Vec::new(),
            read_write: Vec::new(),
            read_only: Vec::new(),
            hide: Vec::new(),
        }
    }
}

impl SandboxPolicy {
    /// The default with the network on (external agents must reach their provider).
    pub fn networked() -> Self {
        Self {
            network: NetworkPolicy::On,
            ..Self::default()
        }
    }
}

/// What the machine supports, probed once per process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxSupport {
    /// Whether sandboxed commands can run.
    pub available: bool,
    /// The bwrap binary found on `PATH`.
    pub bwrap: Option<PathBuf>,
    /// What was found, or why it is unavailable (and what to do).
    pub detail: String,
}

/// Probe the sandbox once: find `bwrap` and run `true` in a full sandbox.
pub fn probe() -> &'static SandboxSupport {
    static SUPPORT: OnceLock<SandboxSupport> = OnceLock::new();
    SUPPORT.get_or_init(probe_now)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Environment variable naming the bwrap binary to use instead of the one on `PATH`
/// (operators with bwrap elsewhere; tests simulate a machine without it).
pub const BWRAP_ENV: &str = "WORKTRAIN_BWRAP";

fn probe_now() -> SandboxSupport {
    let found = match std::env::var_os(BWRAP_ENV) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => find_on_path("bwrap"),
    };
    let Some(bwrap) = found else {
        return SandboxSupport {
            available: false,
            bwrap: None,
            detail: "bubblewrap (`bwrap`) is not installed: install it (Debian/Ubuntu: `apt-get install bubblewrap`), or set `sandbox: {mode: off}` in the agent profile to run agents unconfined".into(),
        };
    };
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.args(namespace_args(&NetworkPolicy::Off))
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--",
            "true",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match cmd.output() {
        Ok(out) if out.status.success() => SandboxSupport {
            available: true,
            detail: format!(
                "bubblewrap at {} (user, mount, pid, network, ipc, uts and cgroup namespaces)",
                bwrap.display()
            ),
            bwrap: Some(bwrap),
        },
        Ok(out) => SandboxSupport {
            available: false,
            detail: format!(
                "bubblewrap at {} cannot create namespaces here ({}): allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor userns restriction), or set `sandbox: {{mode: off}}` in the agent profile",
                bwrap.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            bwrap: Some(bwrap),
        },
        Err(e) => SandboxSupport {
            available: false,
            detail: format!("cannot run {}: {e}", bwrap.display()),
            bwrap: Some(bwrap),
        },
    }
}

fn namespace_args(network: &NetworkPolicy) -> Vec<&'static str> {
    let mut a = vec![
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
    ];
    match network {
        NetworkPolicy::Off | NetworkPolicy::Allow(_) => a.push("--unshare-net"),
        NetworkPolicy::On => {}
    }
    if rustix::process::geteuid().is_root() {
        // Only a privileged bwrap keeps capabilities; drop them all.
        a.extend(["--cap-drop", "ALL"]);
    }
    a
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox is required but unavailable.
    #[error("the agent sandbox is unavailable: {0}")]
    Unavailable(String),
    /// The worktree or temp dir could not be prepared.
    #[error("cannot prepare the sandbox: {0}")]
    Prepare(String),
}

/// A policy plus the paths the caller hides (worktrain's home), before a worktree is known.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    policy: SandboxPolicy,
    hidden: Vec<PathBuf>,
    extra_env: BTreeMap<String, String>,
}

impl Sandbox {
    /// A sandbox with `policy`.
    pub fn new(policy: SandboxPolicy) -> Self {
        Self {
            policy,
            hidden: Vec::new(),
            extra_env: BTreeMap::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// Also hide these paths (e.g. `$WORKTRAIN_HOME`).
    pub fn hiding(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.hidden.extend(paths);
        self
    }

    /// Also set these variables in every command.
    pub fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.extra_env.extend(env);
        self
    }

    /// Whether commands will actually be confined (policy `required` and bwrap works).
    pub fn confines(&self) -> bool {
        self.policy.mode == SandboxMode::Required && probe().available
    }

    /// A scope for one run in `worktree`: creates the run's private temp dir (removed when
    /// the scope is dropped). Fails when the sandbox is required but unavailable.
    pub fn scope(
        &self,
        worktree: &Path,
        session: Option<&str>,
    ) -> Result<SandboxScope, SandboxError> {
        let bwrap = match self.policy.mode {
            SandboxMode::Off => None,
            SandboxMode::Required => {
                let support = probe();
                match (&support.bwrap, support.available) {
                    (Some(b), true) => Some(b.clone()),
                    _ => return Err(SandboxError::Unavailable(support.detail.clone())),
                }
            }
        };
        let worktree = std::fs::canonicalize(worktree)
            .map_err(|e| SandboxError::Prepare(format!("worktree {}: {e}", worktree.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix("worktrain-run-")
            .tempdir()
            .map_err(|e| SandboxError::Prepare(format!("private temp dir: {e}")))?;
        // An allowlist is enforced by a proxy outside and a bridge inside the sandbox;
        // without a sandbox (`mode: off`) there is nothing to enforce it with.
        let net = match (&self.policy.network, &bwrap) {
            (NetworkPolicy::Allow(allow), Some(_)) => {
                let bridge = netproxy::bridge_program().ok_or_else(|| {
                    SandboxError::Unavailable(
                        "network allowlists need the worktrain binary as the sandbox's network bridge".into(),
                    )
                })?;
                let proxy = netproxy::AllowProxy::start(
                    &tmp.path().join(netproxy::PROXY_SOCKET),
                    allow.clone(),
                    session.map(str::to_owned),
                )
                .map_err(|e| SandboxError::Prepare(format!("network allowlist proxy: {e}")))?;
                Some(NetBridge {
                    program: bridge.to_path_buf(),
                    proxy,
                })
            }
            (NetworkPolicy::Allow(_) | NetworkPolicy::On | NetworkPolicy::Off, _) => None,
        };
        Ok(SandboxScope {
            net,
            bwrap,
            policy: self.policy.clone(),
            hidden: self.hidden.clone(),
            extra_env: self.extra_env.clone(),
            worktree,
            session: session.map(str::to_owned),
            tmp,
        })
    }
}

/// Where the private temp dir appears inside the sandbox.
const TMP_INSIDE: &str = "/tmp";

/// One run's sandbox: its worktree, its private temp dir, its policy. Build commands with
/// [`SandboxScope::command`], or run one to completion with [`SandboxScope::run`].
#[derive(Debug)]
pub struct SandboxScope {
    /// The allowlist's proxy and bridge, when the policy has one.
    net: Option<NetBridge>,
    bwrap: Option<PathBuf>,
    policy: SandboxPolicy,
    hidden: Vec<PathBuf>,
    extra_env: BTreeMap<String, String>,
    worktree: PathBuf,
    session: Option<String>,
    tmp: tempfile::TempDir,
}

/// A run's network allowlist: the proxy serving it and the program bridging to it.
#[derive(Debug)]
struct NetBridge {
    program: PathBuf,
    proxy: netproxy::AllowProxy,
}

/// How a command gets its standard input.
#[derive(Debug, Clone)]
pub enum Input {
    /// Closed (`/dev/null`).
    Null,
    /// A pipe the caller writes.
    Piped,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
}

impl SandboxScope {
    /// The (canonical) worktree.
    pub fn worktree(&self) -> &Path {
        &self.worktree
    }

    /// The destinations the network allowlist refused during this run (`host:port`).
    pub fn network_denied(&self) -> Vec<String> {
        self.net
            .as_ref()
            .map(|n| n.proxy.denied())
            .unwrap_or_default()
    }

    /// Whether commands are confined (false only for `mode: off`).
    pub fn confined(&self) -> bool {
        self.bwrap.is_some()
    }

    /// Of `words` (a command line as run), the paths that exist on this host under its
    /// `/tmp` but that a confined command cannot see there — its `/tmp` is the run's own —
    /// because neither the worktree nor the policy's `read_only`/`read_write` shows them.
    /// A failed command's report points at them: a program or script kept in the host's
    /// `/tmp` otherwise fails with no more than "can't open file".
    pub fn unseen_tmp_paths<'a>(&self, words: impl IntoIterator<Item = &'a str>) -> Vec<PathBuf> {
        if !self.confined() {
            return Vec::new();
        }
        let shown: Vec<PathBuf> = self
            .policy
            .read_only
            .iter()
            .chain(&self.policy.read_write)
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .chain([self.worktree.clone()])
            .collect();
        words
            .into_iter()
            .map(Path::new)
            .filter(|p| p.is_absolute() && p.starts_with(TMP_INSIDE))
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .filter(|real| real.starts_with(TMP_INSIDE))
            .filter(|real| !shown.iter().any(|s| real.starts_with(s)))
            .collect()
    }

    /// The private temp dir as seen by worktrain (host path).
    pub fn tmp_host(&self) -> &Path {
        self.tmp.path()
    }

    /// The private temp dir as seen by the command.
    pub fn tmp_inside(&self) -> PathBuf {
        if self.confined() {
            PathBuf::from(TMP_INSIDE)
        } else {
            self.tmp.path().to_path_buf()
        }
    }

    /// The environment every command gets: the allowlisted variables present in
    /// worktrain's environment, `TMPDIR`, the session, the scope's extra variables, then
    /// `env`.
    fn environment(&self, env: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
        let mut out: BTreeMap<OsString, OsString> = BTreeMap::new();
        for name in BASE_ENV
            .iter()
            .copied()
            .chain(self.policy.env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(name) {
                out.insert(name.into(), v);
            }
        }
        out.insert("TMPDIR".into(), self.tmp_inside().into_os_string());
        if let Some(s) = &self.session {
            out.insert(SESSION_ENV.into(), s.into());
        }
        if self.net.is_some() {
            let proxy = format!("http://{}", netproxy::BRIDGE_LISTEN);
            for name in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
                out.insert(name.into(), proxy.clone().into());
            }
            for name in ["no_proxy", "NO_PROXY"] {
                out.insert(name.into(), "localhost,127.0.0.1,::1".into());
            }
        }
        for (k, v) in self.extra_env.iter().chain(env) {
            out.insert(k.into(), v.into());
        }
        out.into_iter().collect()
    }

    /// A command running `program args…` in the worktree, in the sandbox: own process
    /// group, killed on drop, environment allowlisted (see [`SandboxScope::environment`]).
    /// Standard output and error are piped.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        input: &Input,
    ) -> tokio::process::Command {
        let mut cmd = match &self.bwrap {
            None => {
                let mut c = tokio::process::Command::new(program);
                c.args(args);
                c
            }
            Some(bwrap) => {
                let mut c = tokio::process::Command::new(bwrap);
                c.args(self.bwrap_args()).arg("--");
                if let Some(net) = &self.net {
                    let socket = Path::new(TMP_INSIDE).join(netproxy::PROXY_SOCKET);
                    c.arg(&net.program)
                        .arg(netproxy::BRIDGE_SUBCOMMAND)
                        .arg("--listen")
                        .arg(netproxy::BRIDGE_LISTEN)
                        .arg("--upstream")
                        .arg(socket)
                        .arg("--");
                }
                c.arg(program).args(args);
                c
            }
        };
        // bwrap itself is PID 1 of the sandbox and its /proc/1/environ is visible inside:
        // it gets the same allowlisted environment as the command, never worktrain's.
        cmd.env_clear()
            .envs(self.environment(env))
            .current_dir(&self.worktree)
            .stdin(match input {
                Input::Null => Stdio::null(),
                Input::Piped | Input::Bytes(_) => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    fn bwrap_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = namespace_args(&self.policy.network)
            .into_iter()
            .map(OsString::from)
            .collect();
        let mut push =
            |parts: &[&std::ffi::OsStr]| a.extend(parts.iter().map(|p| p.to_os_string()));
        push(&["--ro-bind".as_ref(), "/".as_ref(), "/".as_ref()]);
        push(&["--dev".as_ref(), "/dev".as_ref()]);
        push(&["--proc".as_ref(), "/proc".as_ref()]);
        push(&[
            "--bind".as_ref(),
            self.tmp.path().as_os_str(),
            TMP_INSIDE.as_ref(),
        ]);
        // Hidden paths become empty (a file becomes /dev/null).
        for h in self.hidden.iter().chain(&self.policy.hide) {
            let Ok(real) = std::fs::canonicalize(h) else {
                continue;
            };
            if real.is_dir() {
                push(&["--tmpfs".as_ref(), real.as_os_str()]);
            } else {
                push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), real.as_os_str()]);
            }
        }
        // git in the worktree needs the repository (it may lie under a hidden path or the
        // host's /tmp): read-only, except what a commit on the worktree's own branch
        // writes. Hooks, config and other branches stay read-only, so nothing the agent
        // does there runs later outside the sandbox.
        let git = git_dirs(&self.worktree);
        for dir in &git.read_only {
            push(&["--ro-bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        }
        for dir in &git.writable {
            push(&["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        }
        for p in &self.policy.read_only {
            if let Ok(real) = std::fs::canonicalize(p) {
                push(&["--ro-bind".as_ref(), real.as_os_str(), real.as_os_str()]);
            }
        }
        for p in &self.policy.read_write {
            if let Ok(real) = std::fs::canonicalize(p) {
                push(&["--bind".as_ref(), real.as_os_str(), real.as_os_str()]);
            }
        }
        // The bridge program must be visible even under a hidden path or the host's /tmp.
        if let Some(net) = &self.net
            && let Ok(real) = std::fs::canonicalize(&net.program)
        {
            push(&[
                "--ro-bind".as_ref(),
                real.as_os_str(),
                net.program.as_os_str(),
            ]);
        }
        push(&[
            "--bind".as_ref(),
            self.worktree.as_os_str(),
            self.worktree.as_os_str(),
        ]);
        push(&["--chdir".as_ref(), self.worktree.as_os_str()]);
        a
    }

    /// Run `program args…` to completion: output captured up to `cap` bytes per stream
    /// (head and tail), killed (the whole tree) at `timeout`, or when the returned future
    /// is dropped.
    pub async fn run(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        input: Input,
        timeout: Duration,
        cap: usize,
    ) -> std::io::Result<ShellRun> {
        let started = Instant::now();
        let mut child = self.command(program, args, env, &input).spawn()?;
        let group = GroupKill::new(child.id());
        if let (Input::Bytes(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
                let _ = stdin.shutdown().await;
            });
        }
        let out = child.stdout.take().map(|s| tokio::spawn(drain(s, cap)));
        let err = child.stderr.take().map(|s| tokio::spawn(drain(s, cap)));
        let status = tokio::select! {
            s = child.wait() => Some(s?),
            _ = tokio::time::sleep(timeout) => None,
        };
        // Whatever is left (outside a sandbox: in the process group) goes too; it would
        // hold the pipes open.
        group.kill();
        let timed_out = status.is_none();
        let status = match status {
            Some(s) => s,
            None => child.wait().await?,
        };
        let collect = |h: Option<tokio::task::JoinHandle<CappedBuf>>| async move {
            match h {
                Some(h) => match tokio::time::timeout(Duration::from_secs(2), h).await {
                    Ok(Ok(b)) => b.render(),
                    Ok(Err(_)) | Err(_) => String::new(),
                },
                None => String::new(),
            }
        };
        let stdout = collect(out).await;
        let stderr = collect(err).await;
        use std::os::unix::process::ExitStatusExt;
        Ok(ShellRun {
            exit_code: if timed_out { None } else { status.code() },
            signal: if timed_out { None } else { status.signal() },
            timed_out,
            stdout,
            stderr,
            duration: started.elapsed(),
        })
    }
}

/// What of a linked worktree's repository the sandbox shows.
#[derive(Debug, Default)]
struct GitDirs {
    /// The repository's common directory and the worktree's administrative directory.
    read_only: Vec<PathBuf>,
    /// The worktree's administrative directory (HEAD, index, logs), the object store,
    /// and the directories holding the checked-out branch's ref and reflog.
    writable: Vec<PathBuf>,
}

/// The git directories of a linked worktree (from its `.git` file), when they lie
/// outside the worktree.
fn git_dirs(worktree: &Path) -> GitDirs {
    let mut out = GitDirs::default();
    let Ok(text) = std::fs::read_to_string(worktree.join(".git")) else {
        return out;
    };
    let Some(gitdir) = text.lines().find_map(|l| l.strip_prefix("gitdir:")) else {
        return out;
    };
    let Ok(gitdir) = std::fs::canonicalize(worktree.join(gitdir.trim())) else {
        return out;
    };
    let common = std::fs::read_to_string(gitdir.join("commondir"))
        .ok()
        .and_then(|c| std::fs::canonicalize(gitdir.join(c.trim())).ok());
    if let Some(common) = &common {
        out.read_only.push(common.clone());
    }
    out.read_only.push(gitdir.clone());
    out.writable.push(gitdir.clone());
    if let Some(common) = &common {
        out.writable.push(common.join("objects"));
        let branch = std::fs::read_to_string(gitdir.join("HEAD"))
            .ok()
            .and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_owned));
        if let Some(branch) = branch
            && let Some(parent) = Path::new(&branch).parent()
            && branch.starts_with("refs/heads/")
        {
            out.writable.push(common.join(parent));
            // git appends to the branch's reflog on commit; the directory must exist to
            // be mounted writable (an empty directory in the repository, nothing more).
            let logs = common.join("logs").join(parent);
            if common.join(parent).is_dir() {
                let _ = std::fs::create_dir_all(&logs);
            }
            out.writable.push(logs);
        }
    }
    let keep = |d: &PathBuf| !d.starts_with(worktree) && d.is_dir();
    out.read_only.retain(keep);
    out.writable.retain(keep);
    out.writable
        .iter_mut()
        .for_each(|d| *d = std::fs::canonicalize(&*d).unwrap_or_else(|_| d.clone()));
    out
}
