//! A scripted agent, run by the real supervisor, tries to reach what it must not: the
//! daemon's API token and keyring, the daemon's environment through `/proc`, other
//! sessions' worktrees, files outside its worktree through a hard link, and a process
//! that outlives its run. It gets nothing, and secrets never reach the model.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_testkit::ToolCall;

use crate::harness::*;

fn shell(command: &str) -> ToolCall {
    ToolCall::new("shell", json!({"command": command}))
}

/// Whether a process with `marker` as one argument is alive (host view).
fn alive(marker: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
            && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
            })
    })
}

/// The text of every tool result the model was sent (not the model's own tool calls,
/// which echo what it asked for).
fn tool_results(d: &Daemon) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type").and_then(Value::as_str) == Some("tool_result") {
                    out.push(m.get("content").map(|c| c.to_string()).unwrap_or_default());
                } else {
                    m.values().for_each(|x| walk(x, out));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in d.fake.requests() {
        if let Ok(v) = serde_json::from_str::<Value>(&r.raw) {
            walk(&v, &mut out);
        }
    }
    // Tool results are JSON strings: unescape the newlines for readable assertions.
    out.join("\n").replace("\\n", "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agent_reaches_nothing_outside_its_sandbox() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "original").unwrap();
    // Build the daemon first: its home path goes into the script.
    let d = Daemon::start(worktrain_testkit::Script::default()).await;
    let home = d.home.root().display().to_string();
    let token = d.token.clone();
    let keyring = std::fs::read_to_string(d.home.path("keyring.json")).unwrap();
    let key_secret = serde_json::from_str::<Value>(&keyring).unwrap()["current"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another session's worktree-like directory under the home.
    std::fs::create_dir_all(d.home.path("worktrees/ses_other")).unwrap();
    std::fs::write(d.home.path("worktrees/ses_other/secret.txt"), "other").unwrap();

    let probes = vec![
        shell(&format!(
            "cat {home}/api-token; echo; cat {home}/keyring.json; ls -a {home} {home}/worktrees; cat {home}/worktrees/ses_other/secret.txt; echo PROBE1-END"
        )),
        shell(
            r#"tr "\0" "\n" < /proc/$PPID/environ; echo; tr "\0" "\n" < /proc/1/environ; echo; ls /proc | grep -c '^[0-9]'; env | sort; echo PROBE2-END"#,
        ),
        shell(&format!(
            "ln {} hard.txt; echo ln=$?; echo overwritten > {} ; echo write=$?; echo PROBE3-END",
            victim.display(),
            victim.display()
        )),
        shell("setsid nohup sleep 300.77 >/dev/null 2>&1 & echo started; echo PROBE4-END"),
        // The model somehow knows the token: it is redacted from what it gets back.
        shell(&format!("echo the token is {token}; echo PROBE5-END")),
    ];
    let mut turns = Vec::new();
    for p in probes {
        turns.push(worktrain_testkit::Turn::tools(vec![p]));
    }
    turns.push(worktrain_testkit::Turn::tool(
        "write_file",
        json!({"path": "hard.txt", "content": "through the link"}),
    ));
    turns.push(complete("tried everything"));
    d.fake.push(turns);
    let id = d.spawn("one", "goal-hostile").await;
    let s = d.wait_state(&id, "completed").await;
    assert_eq!(s["run"]["state"], "completed", "{s:#}");

    let seen = tool_results(&d);
    for end in [
        "PROBE1-END",
        "PROBE2-END",
        "PROBE3-END",
        "PROBE4-END",
        "PROBE5-END",
    ] {
        assert!(seen.contains(end), "probe {end} did not run: {seen}");
    }
    // Worktrain's secrets never reached the model.
    assert!(!seen.contains(&token), "the API token leaked");
    assert!(!seen.contains(&key_secret), "a signing key leaked");
    assert!(!seen.contains("\"other\""), "another session's file leaked");
    assert!(seen.contains("[redacted]"), "the echoed token was redacted");
    // No daemon environment: cargo sets these for the test process (the daemon here).
    assert!(
        !seen.contains("CARGO_MANIFEST_DIR"),
        "the daemon's environment leaked"
    );
    assert!(!seen.contains("RUST_TEST_THREADS") && !seen.contains("CARGO_PKG_NAME"));
    assert!(seen.contains("WORKTRAIN_SESSION_ID="), "{seen}");
    // The hard link could not be made, and nothing outside changed.
    assert!(
        seen.contains("Invalid cross-device link") || seen.contains("ln=1"),
        "{seen}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    // Nothing outlived the run.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive("300.77") {
        assert!(
            Instant::now() < deadline,
            "a setsid nohup process outlived its command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the events the daemon stored hold no secret either.
    let events = serde_json::to_string(&d.events(&id).await).unwrap();
    assert!(!events.contains(&token), "the API token is in an event");
    assert!(!events.contains(&key_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_sandbox() {
    let d = Daemon::start(worktrain_testkit::Script::default()).await;
    let (_, v) = d.get("/readyz").await;
    assert_eq!(v["sandbox"]["available"], true, "{v}");
    assert!(
        v["sandbox"]["detail"]
            .as_str()
            .unwrap()
            .contains("bubblewrap"),
        "{v}"
    );
}
