//! `worktrain mcp` end to end, against the real binary:
//!
//! - an independent MCP client — the official Python SDK — drives it over stdio
//!   (`tests/mcp/e2e_client.py`), including a restart of the server process on the same
//!   home. Needs `python3` with the `mcp` package (`python3 -m pip install -r
//!   tests/mcp/requirements.txt`; `.ci/run` does it). Without it this test FAILS, so that
//!   CI cannot go green without the client; set `WORKTRAIN_SKIP_PYTHON=1` to skip it
//!   deliberately;
//! - stdout hygiene and startup: with debug logging on, stdout carries only JSON-RPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str =
    "python3 -m pip install -r tests/mcp/requirements.txt   (i.e. `pip install mcp`)";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn python_sdk_drives_the_stdio_server() {
    if std::env::var("WORKTRAIN_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("skipped: WORKTRAIN_SKIP_PYTHON=1");
        return;
    }
    let probe = Command::new("python3")
        .args(["-c", "import mcp"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install Python 3 and then: {INSTALL} — or set WORKTRAIN_SKIP_PYTHON=1")
        });
    assert!(
        probe.status.success(),
        "the python `mcp` package is not importable; run: {INSTALL} (CI does this in .ci/run), \
         or set WORKTRAIN_SKIP_PYTHON=1 to skip this test.\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let home = tempfile::tempdir().unwrap();
    let script = repo_root().join("tests/mcp/e2e_client.py");
    let stdout_path = home.path().join("stdout.txt");
    let stderr_path = home.path().join("stderr.txt");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_worktrain"))
        .arg(home.path().join("home"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python MCP client did not finish within 180 s\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&stdout_path).unwrap_or_default(),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "tests/mcp/e2e_client.py failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("checks passed"),
        "no summary line\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("{}", stdout.lines().rev().nth(1).unwrap_or_default());
}

/// With debug logging on, stdout must carry nothing but JSON-RPC messages, `initialize`
/// must be answered on a fresh home, and closing stdin must end the server cleanly. How
/// fast it starts is measured by `benches/mcp_roundtrip.rs` (startup section), not here.
#[test]
fn stdio_server_keeps_stdout_clean_and_ends_on_eof() {
    use std::io::{BufRead, BufReader, Write};

    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_worktrain"))
        .arg("mcp")
        .env("WORKTRAIN_HOME", home.path().join("home"))
        .env("WORKTRAIN_LOG", "debug")
        .current_dir(home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut send = |line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let init: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(init["id"], 1, "{line}");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send("not json at all");
    send(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"continue_workflow","arguments":{"token":"wt1.bogus","notes":"x"}}}"#,
    );
    send(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"start_workflow","arguments":{"workflow":"quick-task","goal":"hygiene"}}}"#,
    );
    drop(stdin);
    let mut ids = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let msg: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line:?}"));
        assert_eq!(msg["jsonrpc"], "2.0", "{line}");
        ids.push(msg["id"].clone());
        if msg["id"] == 2 {
            assert_eq!(msg["result"]["isError"], true, "{line}");
            assert_eq!(
                msg["result"]["structuredContent"]["code"],
                "token_malformed"
            );
        }
        if msg["id"] == 3 {
            assert_eq!(msg["result"]["isError"], false, "{line}");
        }
    }
    assert_eq!(ids, [2, 3]);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DEBUG") || stderr.contains("INFO"),
        "logs go to stderr: {stderr}"
    );
}
