//! The `shell` tool and the process plumbing shared by every command (see [`crate::sandbox`]).
//!
//! Every command runs in its own process group. When the command ends, times out or the
//! call is dropped (cancellation), the whole group is killed: background processes never
//! outlive the call and a timed-out test run cannot leave stragglers.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::debug;

use super::{ToolConfig, ToolOutput, parse_args};
use crate::events::ToolErrorKind;
use crate::sandbox::{Input, SandboxScope};

/// Kills a process group when dropped (SIGKILL). Errors (group already gone) are ignored.
#[derive(Debug)]
pub struct GroupKill {
    pgid: Option<rustix::process::Pid>,
}

impl GroupKill {
    /// Guard the group led by `pid` (spawned with `process_group(0)`).
    pub fn new(pid: Option<u32>) -> Self {
        Self {
            pgid: pid
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw),
        }
    }

    /// Kill the group now.
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }

    /// Send SIGTERM to the group (a polite stop before [`GroupKill::kill`]).
    pub fn terminate(&self) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the first and last `cap/2` bytes of a stream, counting what is dropped.
#[derive(Debug)]
pub struct CappedBuf {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

impl CappedBuf {
    /// A buffer keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(2),
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// Append bytes: the first half of the cap is kept, then only the latest bytes (the
    /// middle is dropped).
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len();
        let head_cap = self.cap / 2;
        if self.head.len() < head_cap {
            let n = (head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        let tail_cap = self.cap - head_cap;
        self.tail.extend(data.iter().copied());
        while self.tail.len() > tail_cap {
            self.tail.pop_front();
        }
    }

    /// Bytes pushed in total, including those dropped.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The kept text, with a marker where bytes were dropped.
    pub fn render(&self) -> String {
        let kept = self.head.len() + self.tail.len();
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if kept >= self.total {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        format!(
            "{}\n[... {} bytes truncated ...]\n{}",
            String::from_utf8_lossy(&self.head),
            self.total - kept,
            String::from_utf8_lossy(&tail)
        )
    }
}

/// Read a stream to its end, keeping at most `cap` bytes (head and tail).
pub(crate) async fn drain<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> CappedBuf {
    let mut buf = CappedBuf::new(cap);
    let mut chunk = vec![0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.push(&chunk[..n]),
        }
    }
    buf
}

/// How a shell command ended.
#[derive(Debug, Clone)]
pub struct ShellRun {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Killed by this signal (not by worktrain).
    pub signal: Option<i32>,
    /// worktrain killed it at the timeout.
    pub timed_out: bool,
    /// Captured stdout (capped).
    pub stdout: String,
    /// Captured stderr (capped).
    pub stderr: String,
    /// Wall time of the command, until it exited or was killed.
    pub duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellArgs {
    command: String,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

/// Environment variable naming the session in every command an agent runs.
pub use crate::sandbox::SESSION_ENV;

/// The `shell` tool: the command runs through the run's [`SandboxScope`].
pub(super) async fn tool(
    input: &Value,
    scope: &SandboxScope,
    max_timeout: Duration,
    cfg: &ToolConfig,
) -> ToolOutput {
    let a: ShellArgs = match parse_args("shell", input) {
        Ok(a) => a,
        Err(e) => return e,
    };
    if a.command.trim().is_empty() {
        return ToolOutput::err(ToolErrorKind::InvalidArguments, "shell: command is empty");
    }
    let timeout = a
        .timeout_secs
        .map(Duration::from_secs)
        .map_or(max_timeout, |t| t.min(max_timeout));
    let Some((program, flags)) = cfg.shell.split_first() else {
        return ToolOutput::err(ToolErrorKind::Io, "shell: no shell configured");
    };
    let mut args: Vec<String> = flags.to_vec();
    args.push(a.command.clone());
    let r = match scope
        .run(
            program,
            &args,
            &BTreeMap::new(),
            Input::Null,
            timeout,
            cfg.shell_output_cap,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return ToolOutput::err(
                ToolErrorKind::Io,
                format!("shell: cannot start {}: {e}", cfg.shell.join(" ")),
            );
        }
    };
    debug!(command_len = a.command.len(), code = ?r.exit_code, timed_out = r.timed_out, "shell command finished");
    let mut text = String::new();
    let secs = r.duration.as_secs_f64();
    if r.timed_out {
        text.push_str(&format!(
            "[timed out after {secs:.1} s; the command and its process group were killed]\n"
        ));
    } else if let Some(sig) = r.signal {
        text.push_str(&format!("[killed by signal {sig} after {secs:.1} s]\n"));
    } else {
        text.push_str(&format!(
            "[exit code {} after {secs:.1} s]\n",
            r.exit_code.unwrap_or(-1)
        ));
    }
    if !r.stdout.is_empty() {
        text.push_str("stdout:\n");
        text.push_str(&r.stdout);
        if !r.stdout.ends_with('\n') {
            text.push('\n');
        }
    }
    if !r.stderr.is_empty() {
        text.push_str("stderr:\n");
        text.push_str(&r.stderr);
        if !r.stderr.ends_with('\n') {
            text.push('\n');
        }
    }
    if r.stdout.is_empty() && r.stderr.is_empty() {
        text.push_str("(no output)\n");
    }
    ToolOutput {
        text,
        error: r.timed_out.then_some(ToolErrorKind::Timeout),
        exit_code: r.exit_code.or(r.signal.map(|s| 128 + s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_buffer_keeps_head_and_tail() {
        let mut b = CappedBuf::new(10);
        b.push(b"0123456789abcdefghij");
        assert_eq!(b.total(), 20);
        let r = b.render();
        assert!(
            r.starts_with("01234\n[... 10 bytes truncated ...]\nfghij"),
            "{r}"
        );
        let mut small = CappedBuf::new(10);
        small.push(b"abc");
        small.push(b"def");
        assert_eq!(small.render(), "abcdef");
    }
}
