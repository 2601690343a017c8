//! The agent sandbox with the real daemon: an external (`kind: command`) agent advancing
//! through the MCP relay (it speaks MCP over `worktrain mcp --relay` exactly as its MCP
//! config says, completes the step, and never sees worktrain's home); and a machine
//! without a usable sandbox, where the daemon says so and refuses to run agents
//! unconfined unless a profile opts out.

use serde_json::Value;

use crate::daemon_rig::{Rig, RigSpec, of_kind};

const AGENT: &str = r#"#!/usr/bin/env bash
set -eu
cat > /dev/null
bin=$(jq -r '.mcpServers.worktrain.command' "$WORKTRAIN_MCP_CONFIG")
sock=$(jq -r '.mcpServers.worktrain.args[2]' "$WORKTRAIN_MCP_CONFIG")
echo "edited by a sandboxed external agent" > from-agent.txt
ls -A "$HOME_UNDER_TEST" > "$OUT_DIR/home-view.txt" 2>&1 || true
{
  printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"relay-e2e","version":"1"}}}'
  sleep 0.5
  printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  printf '%s\n' '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
  sleep 0.5
  printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"complete_step","arguments":{"notes":"done through the relay"}}}'
  sleep 3
} | "$bin" mcp --relay "$sock" > "$OUT_DIR/mcp-out.jsonl"
"#;

#[test]
fn an_external_agent_advances_through_the_relay_inside_the_sandbox() {
    let rig = Rig::new(RigSpec::default());
    let agent_dir = rig.env.dir().join("agentbin");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let script = agent_dir.join("agent.sh");
    std::fs::write(&script, AGENT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = rig.env.home().display().to_string();
    let config_path = rig.env.home().join("config.yaml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "  relay:
    kind: command
    program: {script}
    prompt: stdin
    env: {{HOME_UNDER_TEST: {home}, OUT_DIR: {out}}}
    sandbox: {{network: off, read_write: [{out}]}}
",
        script = script.display(),
        out = agent_dir.display(),
    ));
    std::fs::write(&config_path, config).unwrap();
    let mut rig = rig;
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-one", "relay goal", &["--agent", "relay"]);
    let (code, results) = rig.await_all(&[&id], "60s");
    let out = std::fs::read_to_string(agent_dir.join("mcp-out.jsonl")).unwrap_or_default();
    assert_eq!(code, 0, "{results:#?}\nMCP: {out}\n{}", rig.log_tail());
    // The MCP conversation went through the relay to the session-bound server.
    let answers: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let listed = answers
        .iter()
        .find(|a| a["id"] == 2)
        .unwrap_or_else(|| panic!("no tools/list answer: {out}"));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"complete_step"), "{names:?}");
    let called = answers.iter().find(|a| a["id"] == 3).unwrap();
    assert_ne!(called["result"]["isError"], true, "{called}");
    // The engine recorded the step as completed by this run; the home was an empty
    // directory to the agent.
    let ev = rig.events(&id);
    assert_eq!(of_kind(&ev, "step_completed").len(), 1, "{ev:#?}");
    let home_view = std::fs::read_to_string(agent_dir.join("home-view.txt")).unwrap();
    // Only the path down to its own worktree (mounted back) is there.
    assert!(
        home_view.lines().all(|l| l == "worktrees"),
        "the agent saw worktrain's home: {home_view}"
    );
}

#[test]
fn without_a_sandbox_the_daemon_says_so_and_runs_nothing_unconfined() {
    let mut rig = Rig::new(RigSpec {
        routes: vec![crate::daemon_rig::route(
            "opted-out goal",
            vec![crate::daemon_rig::complete("done unconfined")],
        )],
        ..RigSpec::default()
    });
    // A second profile that explicitly opts out.
    let config_path = rig.env.home().join("config.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let opted_out = config
        .split("agents:\n")
        .nth(1)
        .unwrap()
        .replacen("  default:", "  unconfined:", 1)
        .replace(
            "    settings:\n",
            "    settings:\n      sandbox: {mode: off}\n",
        );
    std::fs::write(&config_path, format!("{config}{opted_out}")).unwrap();
    rig.start_daemon_with(&[("WORKTRAIN_BWRAP", "/nonexistent/bwrap")]);

    let (status, ready) = rig.get_any("/readyz").unwrap();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["sandbox"]["available"], false, "{ready}");
    assert!(
        ready["sandbox"]["detail"]
            .as_str()
            .unwrap()
            .contains("bubblewrap"),
        "{ready}"
    );
    assert!(rig.log_tail().contains("UNAVAILABLE"), "{}", rig.log_tail());

    // The default profile requires the sandbox: its run fails at once, saying why.
    let id = rig.spawn_in_repo("e2e-one", "confined goal", &[]);
    let (_, results) = rig.await_all(&[&id], "30s");
    let r = &results[0];
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert_eq!(r["failure"], "config_invalid", "{r:#}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap_or("")
            .contains("sandbox is unavailable"),
        "{r:#}"
    );
    // The explicit opt-out runs.
    let id = rig.spawn_in_repo("e2e-one", "opted-out goal", &["--agent", "unconfined"]);
    let (code, results) = rig.await_all(&[&id], "30s");
    assert_eq!(code, 0, "{results:#?}\n{}", rig.log_tail());
}

/// The probes of the allowlist test, run by an external agent inside its sandbox: a real
/// HTTP client that honours the proxy variables (allowed host), the proxy asked for a
/// host that is not listed, and a direct connection that ignores the proxy.
const ALLOWLIST_AGENT: &str = r#"#!/usr/bin/env bash
set -u
cat > /dev/null
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.2:$ALLOWED_PORT/hello', timeout=10).read().decode())" > "$OUT_DIR/allowed.txt" 2>&1
proxy=${http_proxy#http://}
exec 3<>"/dev/tcp/${proxy%:*}/${proxy#*:}"
printf 'CONNECT 127.0.0.2:%s HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n' "$DENIED_PORT" >&3
timeout 10 cat <&3 > "$OUT_DIR/denied.txt"
exec 3<&-
if (echo hi > "/dev/tcp/127.0.0.2/$ALLOWED_PORT") 2>/dev/null; then echo reached; else echo unreachable; fi > "$OUT_DIR/direct.txt"
bin=$(jq -r '.mcpServers.worktrain.command' "$WORKTRAIN_MCP_CONFIG")
sock=$(jq -r '.mcpServers.worktrain.args[2]' "$WORKTRAIN_MCP_CONFIG")
{
  printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"allowlist-e2e","version":"1"}}}'
  sleep 0.5
  printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"complete_step","arguments":{"notes":"probed the network allowlist"}}}'
  sleep 3
} | "$bin" mcp --relay "$sock" > "$OUT_DIR/mcp-out.jsonl"
"#;

/// A tiny HTTP server on 127.0.0.2 (the host's loopback, not the sandbox's) that
/// answers every request and remembers its request lines.
fn origin() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            s.lock().unwrap().push(line.trim().to_owned());
            let body = format!("hello from port {port}");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn a_network_allowlist_lets_commands_reach_only_the_listed_hosts() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let (allowed_port, allowed_seen) = origin();
    let (denied_port, denied_seen) = origin();
    let rig = Rig::new(RigSpec::default());
    let agent_dir = rig.env.dir().join("agentbin");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let script = agent_dir.join("agent.sh");
    std::fs::write(&script, ALLOWLIST_AGENT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_path = rig.env.home().join("config.yaml");
    let base = std::fs::read_to_string(&config_path).unwrap();
    let profile = |allow: &str| {
        format!(
            "{base}  probe:
    kind: command
    program: {script}
    prompt: stdin
    env: {{ALLOWED_PORT: '{allowed_port}', DENIED_PORT: '{denied_port}', OUT_DIR: {out}}}
    sandbox: {{network: {{allow: [{allow}]}}, read_write: [{out}]}}
",
            script = script.display(),
            out = agent_dir.display(),
        )
    };
    // A bad entry is refused before anything runs, with the place and the reason.
    std::fs::write(&config_path, profile("'127.0.0.2:99999'")).unwrap();
    let r = rig.env.run(&["daemon", "--check-config"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("1 to 65535") || r.stderr.contains("1 to 65535"),
        "{r:?}"
    );
    std::fs::write(
        &config_path,
        profile(&format!("'127.0.0.2:{allowed_port}', '*.example.org'")),
    )
    .unwrap();
    let mut rig = rig;
    rig.start_daemon();
    let id = rig.spawn_in_repo("e2e-one", "allowlist goal", &["--agent", "probe"]);
    let (code, results) = rig.await_all(&[&id], "60s");
    let read = |f: &str| std::fs::read_to_string(agent_dir.join(f)).unwrap_or_default();
    assert_eq!(
        code,
        0,
        "{results:#?}\nMCP: {}\n{}",
        read("mcp-out.jsonl"),
        rig.log_tail()
    );
    // The listed host answered, through the proxy, to an ordinary HTTP client.
    assert_eq!(
        read("allowed.txt").trim(),
        format!("hello from port {allowed_port}"),
        "{}",
        rig.log_tail()
    );
    assert_eq!(*allowed_seen.lock().unwrap(), vec!["GET /hello HTTP/1.1"]);
    // The unlisted one was refused by the proxy, naming it and the setting; it never
    // saw a connection.
    let denied = read("denied.txt");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        denied.contains(&format!(
            "127.0.0.2:{denied_port} is not in this agent profile's network allowlist"
        )) && denied.contains("sandbox.network.allow"),
        "{denied}"
    );
    assert!(denied_seen.lock().unwrap().is_empty());
    // Ignoring the proxy reaches nothing: the sandbox has no route out.
    assert_eq!(read("direct.txt").trim(), "unreachable");
    assert!(
        rig.log_tail().contains("destination not allowed"),
        "{}",
        rig.log_tail()
    );
}
