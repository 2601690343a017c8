//! What a daemon CLI is expected to ship for running it as a service: shell completions
//! and man pages from the command definitions, `daemon --check-config`, and readiness
//! notifications for systemd `Type=notify` units.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::Value;

use crate::daemon_rig::{Rig, RigSpec};
use crate::support::{Env, exit};

#[test]
fn completions_come_from_the_command_definitions() {
    let env = Env::new();
    let bash = env.run(&["completions", "bash"]);
    bash.code(exit::OK);
    assert!(bash.stdout.contains("_worktrain()"), "{bash:?}");
    // Subcommands at depth and their flags are completed.
    for word in ["retry", "rewind", "--check-config", "reload", "completions"] {
        assert!(bash.stdout.contains(word), "bash completion lacks {word}");
    }
    let zsh = env.run(&["completions", "zsh"]);
    zsh.code(exit::OK);
    assert!(zsh.stdout.starts_with("#compdef worktrain"), "{zsh:?}");
    let fish = env.run(&["completions", "fish"]);
    fish.code(exit::OK);
    assert!(fish.stdout.contains("complete -c worktrain"), "{fish:?}");
    // No home is needed, and none is created.
    assert!(!env.home().exists());
    let bad = env.run(&["completions", "tcsh"]);
    bad.code(2);
    assert!(bad.stderr.contains("possible values"), "{bad:?}");
}

/// `worktrain completions bash | head -1` ends quietly: the scripts are larger than a pipe
/// buffer, so the reader going away must not panic the writer.
#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                "set -o pipefail; \"$0\" completions \"$1\" | head -c 10 >/dev/null",
                crate::support::BIN,
                shell,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{shell}: {stderr}");
        assert!(out.status.success(), "{shell}: {:?} {stderr}", out.status);
    }
}

#[test]
fn man_pages_cover_every_subcommand() {
    let env = Env::new();
    let dir = env.dir().join("man1");
    let out = env.run_json(&["man", "--dir", dir.to_str().unwrap()]);
    out.code(exit::OK);
    let pages = out.json()["pages"].as_array().unwrap().len();
    assert!(pages >= 40, "{pages} pages");
    for page in [
        "worktrain.1",
        "worktrain-daemon.1",
        "worktrain-daemon-reload.1",
        "worktrain-session-rewind.1",
        "worktrain-trigger-test.1",
        "worktrain-completions.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let daemon = std::fs::read_to_string(dir.join("worktrain-daemon.1")).unwrap();
    assert!(daemon.contains("check\\-config"), "{daemon}");
    // No page for clap's implicit `help`.
    assert!(!dir.join("worktrain-help.1").exists());
    let unwritable = env.run(&["man", "--dir", "/proc/worktrain-man"]);
    unwritable.code(exit::INVALID);
    assert!(
        unwritable.stderr.contains("/proc/worktrain-man"),
        "{unwritable:?}"
    );
}

/// `daemon --check-config --json`, with the default profile's API key variable set.
fn check(env: &Env, extra: &[&str]) -> (i32, Value) {
    check_with_key(env, extra, Some("k-test"))
}

fn check_with_key(env: &Env, extra: &[&str], key: Option<&str>) -> (i32, Value) {
    let mut cmd = env.cmd(&["--json", "daemon", "--check-config"]);
    cmd.args(extra);
    match key {
        Some(k) => cmd.env("ANTHROPIC_API_KEY", k),
        None => cmd.env_remove("ANTHROPIC_API_KEY"),
    };
    let out = cmd.output().unwrap();
    let run = crate::support::finish(
        &["daemon", "--check-config"],
        out.status,
        out.stdout,
        out.stderr,
    );
    run.no_panic();
    (run.code, run.json())
}

fn problems(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "problem")
        .map(|c| c["check"].as_str().unwrap().to_owned())
        .collect()
}

fn detail<'a>(report: &'a Value, check: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_else(|| panic!("no {check} check: {report:#}"))
}

#[test]
fn check_config_reports_every_problem_with_what_to_do() {
    let env = Env::new();
    let (code, report) = check(&env, &[]);
    assert_eq!(code, exit::INVALID, "{report:#}");
    assert_eq!(problems(&report), ["home"], "{report:#}");
    assert!(!env.home().exists(), "checking creates nothing");

    let env = Env::initialised();
    // A fresh home's default profile needs ANTHROPIC_API_KEY.
    let (code, report) = check_with_key(&env, &[], None);
    assert_eq!(code, exit::INVALID, "{report:#}");
    assert_eq!(problems(&report), ["agent:default"], "{report:#}");
    assert!(
        detail(&report, "agent:default").contains("ANTHROPIC_API_KEY"),
        "{report:#}"
    );
    let (code, report) = check(&env, &[]);
    assert_eq!(code, exit::OK, "{report:#}");
    assert_eq!(report["ok"], true);
    for name in [
        "config",
        "api-token",
        "bind",
        "daemon",
        "triggers",
        "store",
        "sandbox",
    ] {
        detail(&report, name);
    }
    assert!(detail(&report, "store").contains("schema v"), "{report:#}");
    // Human output: one line per check, a verdict at the end.
    let human = env
        .cmd(&["daemon", "--check-config"])
        .env("ANTHROPIC_API_KEY", "k")
        .output()
        .unwrap();
    assert!(human.status.success(), "{human:?}");
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(human.contains("ok       store"), "{human}");
    assert!(human.contains("the daemon can start"), "{human}");

    // A non-loopback address without allow_remote.
    let (code, report) = check(&env, &["--bind", "0.0.0.0:7878"]);
    assert_eq!(code, exit::INVALID);
    assert_eq!(problems(&report), ["bind"], "{report:#}");
    assert!(
        detail(&report, "bind").contains("allow_remote"),
        "{report:#}"
    );

    // An invalid triggers.yml: named with its line.
    std::fs::write(
        env.home().join("triggers.yml"),
        "version: 1\ntriggers:\n  - id: t\n    sorce: {}\n",
    )
    .unwrap();
    let (code, report) = check(&env, &[]);
    assert_eq!(code, exit::INVALID);
    assert_eq!(problems(&report), ["triggers"], "{report:#}");
    assert!(
        detail(&report, "triggers").contains("triggers.yml"),
        "{report:#}"
    );
    let human = env.run(&["daemon", "--check-config"]);
    human.code(exit::INVALID);
    assert!(human.stdout.contains("PROBLEM  triggers"), "{human:?}");
    assert!(human.stdout.contains("→ fix triggers.yml"), "{human:?}");
    std::fs::remove_file(env.home().join("triggers.yml")).unwrap();

    // An invalid config.yaml stops the checks that need it, with file, line and column.
    let config = env.home().join("config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\ndeamon: {{}}\n")).unwrap();
    let (code, report) = check(&env, &[]);
    assert_eq!(code, exit::INVALID);
    assert_eq!(problems(&report), ["config"], "{report:#}");
    let d = detail(&report, "config");
    assert!(d.contains("config.yaml:") && d.contains("deamon"), "{d}");
    std::fs::write(&config, good).unwrap();
    assert_eq!(check(&env, &[]).0, exit::OK);
}

#[test]
fn check_config_names_unusable_profiles_and_a_running_daemon() {
    const VAR: &str = "WORKTRAIN_E2E_CHECK_UNSET_KEY";
    let mut rig = Rig::new(RigSpec {
        api_key: &format!("{{env: {VAR}}}"),
        ..RigSpec::default()
    });
    let (code, report) = check(&rig.env, &[]);
    assert_eq!(code, exit::INVALID, "{report:#}");
    let agent = problems(&report);
    assert_eq!(agent.len(), 1, "{report:#}");
    assert!(agent[0].starts_with("agent:"), "{report:#}");
    assert!(detail(&report, &agent[0]).contains(VAR), "{report:#}");

    rig.start_daemon();
    let (_, report) = check(&rig.env, &[]);
    assert!(
        problems(&report).contains(&"daemon".to_owned()),
        "{report:#}"
    );
    assert!(
        detail(&report, "daemon").contains(&format!("pid {}", rig.daemon.as_ref().unwrap().pid())),
        "{report:#}"
    );
}

/// Under systemd `Type=notify`, the daemon says READY=1 once it serves, and STOPPING=1
/// when a SIGTERM begins its shutdown.
#[test]
fn the_daemon_notifies_a_service_manager() {
    let mut rig = Rig::new(RigSpec::default());
    let socket_path = rig.env.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    rig.start_daemon_with(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a readiness notification");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains("STATUS=serving http://127.0.0.1:"),
        "{ready}"
    );
    // It was ready for real: the API answers.
    assert_eq!(rig.get("/readyz")["ready"], true);
    let status = rig.daemon.as_mut().unwrap().terminate();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let n = socket.recv(&mut buf).expect("a stopping notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
}
