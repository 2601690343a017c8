//! The `git` command line, for what libgit2 (built without TLS/SSH here) cannot do:
//! push to a real forge with the user's own setup — credential helpers, the SSH agent,
//! `~/.ssh/config`, `insteadOf` rewrites. Its environment is rebuilt from a short allow
//! list (no `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE` leaking in from a hook, no
//! prompts), and an HTTPS token is handed over as an extra header through
//! `GIT_CONFIG_*` variables: never on the command line, where `ps` shows it.

use std::path::Path;
use std::process::{Command, Stdio};

/// Environment variables passed through to `git` (the user's own git setup).
const PASS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "XDG_CONFIG_HOME",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "TMPDIR",
];

/// What a `git` run printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything `git` wrote to standard output (lossily decoded as UTF-8).
    pub stdout: String,
    /// Everything `git` wrote to standard error (lossily decoded as UTF-8), where its error
    /// messages are.
    pub stderr: String,
}

impl Output {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// `git args…` in `dir` with the sanitised environment; `token`, when given, is sent
/// as HTTP basic auth (`x-access-token:<token>`) to HTTPS remotes.
fn command(dir: &Path, args: &[&str], token: Option<&str>) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in PASS {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // Messages in English (they are recorded), never a prompt for a password.
    cmd.env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never");
    if let Some(t) = token {
        use base64::Engine as _;
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!(
                    "Authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("x-access-token:{t}").as_bytes())
                ),
            );
    }
    cmd
}

fn output(out: std::process::Output) -> Output {
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `git args…` in `dir` with the sanitised environment; `token`, when given, is sent
/// as HTTP basic auth (`x-access-token:<token>`) to HTTPS remotes.
pub async fn run(dir: &Path, args: &[&str], token: Option<&str>) -> std::io::Result<Output> {
    let mut cmd = tokio::process::Command::from(command(dir, args, token));
    cmd.kill_on_drop(true);
    Ok(output(cmd.output().await?))
}

/// [`run`] for callers on a blocking thread (the worktree operations).
pub fn run_blocking(dir: &Path, args: &[&str], token: Option<&str>) -> std::io::Result<Output> {
    Ok(output(command(dir, args, token).output()?))
}

/// Why a push did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailure {
    /// git's message (its `error:`/`!` lines).
    pub message: String,
    /// What kind of failure it is: whether trying again can help.
    pub kind: PushFailureKind,
}

/// The kinds of push failure, by what it takes to get past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailureKind {
    /// The remote refused the update (not a fast-forward, protected branch, hook):
    /// trying again as things are cannot succeed.
    Rejected,
    /// The remote wanted credentials that git did not have or that it refused (no
    /// prompt is ever shown): final until the credentials are fixed.
    Auth,
    /// git does not trust the remote's TLS certificate (a private certificate authority
    /// it was not given): final until git is told to trust it.
    UntrustedCertificate,
    /// Anything else (the network, the server, git itself): may work later.
    Other,
}

impl PushFailureKind {
    /// Whether the same push may succeed later without anyone fixing anything.
    pub fn retryable(self) -> bool {
        match self {
            Self::Rejected | Self::Auth | Self::UntrustedCertificate => false,
            Self::Other => true,
        }
    }
}

/// Push `refs/heads/<branch>` to the same name on `remote`. Never forced: a remote
/// branch that moved elsewhere is a rejection.
pub async fn push(
    dir: &Path,
    remote: &str,
    branch: &str,
    token: Option<&str>,
) -> Result<(), PushFailure> {
    let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let out = run(dir, &["push", "--porcelain", remote, &spec], token)
        .await
        .map_err(|e| PushFailure {
            message: format!("running git: {e}"),
            kind: PushFailureKind::Other,
        })?;
    if out.ok() {
        return Ok(());
    }
    let rejected = out.stdout.lines().any(|l| l.starts_with('!'))
        || out.stderr.contains("[rejected]")
        || out.stderr.contains("[remote rejected]")
        || out.stderr.contains("non-fast-forward")
        || out
            .stderr
            .contains("does not appear to be a git repository");
    let kind = if rejected {
        PushFailureKind::Rejected
    } else if out.auth_failed() {
        PushFailureKind::Auth
    } else if out.certificate_untrusted() {
        PushFailureKind::UntrustedCertificate
    } else {
        PushFailureKind::Other
    };
    Err(PushFailure {
        message: out.error_lines(),
        kind,
    })
}

impl Output {
    /// git's error lines (`!` porcelain lines, `error:`/`fatal:`, rejections), else the
    /// first lines of its standard error.
    pub fn error_lines(&self) -> String {
        let mut lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with('!'))
            .chain(self.stderr.lines().filter(|l| {
                l.starts_with("error:") || l.starts_with("fatal:") || l.contains("rejected")
            }))
            .collect();
        if lines.is_empty() {
            lines = self.stderr.lines().take(5).collect();
        }
        lines.join("; ")
    }

    /// The remote wanted credentials that git did not have or that it refused (no
    /// prompt is ever shown): final until the credentials are fixed.
    pub fn auth_failed(&self) -> bool {
        [
            "could not read Username",
            "could not read Password",
            "terminal prompts disabled",
            "Authentication failed",
            "Permission denied",
            "The requested URL returned error: 401",
            "The requested URL returned error: 403",
        ]
        .iter()
        .any(|m| self.stderr.contains(m))
    }

    /// git refused the remote's TLS certificate (curl's words through git): an authority
    /// git was not told to trust, a name that does not match, an expired certificate.
    pub fn certificate_untrusted(&self) -> bool {
        [
            "server certificate verification failed",
            "SSL certificate problem",
            "no alternative certificate subject name",
        ]
        .iter()
        .any(|m| self.stderr.contains(m))
    }

    /// The network or the server failed (name resolution, connection, timeout, 5xx, a
    /// cut transfer): the same command may work later.
    pub fn transient_failure(&self) -> bool {
        [
            "Could not resolve host",
            "Connection refused",
            "Connection timed out",
            "Operation timed out",
            "Connection reset",
            "The requested URL returned error: 5",
            "RPC failed",
            "early EOF",
            "unexpected disconnect",
            "Could not read from remote repository",
        ]
        .iter()
        .any(|m| self.stderr.contains(m))
            && !self.auth_failed()
    }
}

/// `git rev-parse --verify <rev>^{commit}`.
pub async fn rev_parse(dir: &Path, rev: &str) -> Option<String> {
    let spec = format!("{rev}^{{commit}}");
    let out = run(dir, &["rev-parse", "--verify", "--quiet", &spec], None)
        .await
        .ok()?;
    out.ok().then(|| out.stdout.trim().to_owned())
}

/// The URL of a remote.
pub async fn remote_url(dir: &Path, remote: &str) -> Option<String> {
    let out = run(dir, &["remote", "get-url", remote], None).await.ok()?;
    out.ok().then(|| out.stdout.trim().to_owned())
}

/// A file at `rev` (`None` when it does not exist there).
pub async fn show(dir: &Path, rev: &str, path: &str) -> Option<String> {
    let spec = format!("{rev}:{path}");
    let out = run(dir, &["show", &spec], None).await.ok()?;
    out.ok().then_some(out.stdout)
}

/// Paths under `dir_path` at `rev` (one level).
pub async fn ls_tree(dir: &Path, rev: &str, dir_path: &str) -> Vec<String> {
    let spec = format!("{rev}:{dir_path}");
    match run(dir, &["ls-tree", "--name-only", &spec], None).await {
        Ok(o) if o.ok() => o.stdout.lines().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}
