//! `worktrain init`: what it creates, with which permissions, and that it is idempotent.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Env, exit};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_creates_home_with_private_secrets() {
    let env = Env::new();
    assert!(!env.home().exists());
    let v = env.ok_json(&["init"]);
    assert_eq!(v["changed"], true, "{v}");
    let home = env.home();
    for f in ["config.yaml", "worktrain.db", "keyring.json", "api-token"] {
        assert!(home.join(f).is_file(), "{f} missing after init: {v}");
    }
    assert!(home.join("workflows").is_dir(), "workflows/ missing");
    assert_eq!(
        mode(&home.join("keyring.json")),
        0o600,
        "keyring.json must be 0600"
    );
    assert_eq!(
        mode(&home.join("api-token")),
        0o600,
        "api-token must be 0600"
    );
    let created: Vec<&str> = v["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for f in [
        "config.yaml",
        "worktrain.db",
        "keyring.json",
        "api-token",
        "workflows",
    ] {
        assert!(
            created.iter().any(|p| p.ends_with(f)),
            "init --json does not report {f} as created: {v}"
        );
    }
    // The API token is a real secret, not an empty file.
    let token = String::from_utf8(env.home_file("api-token")).unwrap();
    assert!(token.trim().len() >= 32, "api-token too short: {token:?}");
    // The generated config is valid: a command that reads it works.
    env.run(&["sessions"]).code(exit::OK);
}

#[test]
fn second_init_changes_nothing() {
    let env = Env::new();
    env.run(&["init"]).code(exit::OK);
    let keyring = env.home_file("keyring.json");
    let api_token = env.home_file("api-token");
    let config = env.home_file("config.yaml");

    let v = env.ok_json(&["init"]);
    assert_eq!(v["changed"], false, "{v}");
    assert_eq!(v["created"].as_array().map(Vec::len), Some(0), "{v}");

    let human = env.run(&["init"]);
    human.code(exit::OK);
    assert!(human.stdout.contains("nothing changed"), "{human:?}");
    assert!(!human.stdout.contains("created"), "{human:?}");

    assert_eq!(
        env.home_file("keyring.json"),
        keyring,
        "keyring rewritten by a second init"
    );
    assert_eq!(
        env.home_file("api-token"),
        api_token,
        "api-token rewritten by a second init"
    );
    assert_eq!(
        env.home_file("config.yaml"),
        config,
        "config rewritten by a second init"
    );
    assert_eq!(mode(&env.home().join("keyring.json")), 0o600);
}

#[test]
fn init_keeps_existing_sessions() {
    let env = Env::initialised();
    let s = env.start("quick-task", "survive re-init");
    env.run(&["init"]).code(exit::OK);
    let sessions = env.sessions(&[]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], s["session_id"]);
}

#[test]
fn commands_other_than_run_require_init() {
    let env = Env::new();
    let r = env.run_json(&[
        "session",
        "start",
        "--workflow",
        "quick-task",
        "--goal",
        "g",
    ]);
    r.code(exit::INVALID);
    assert_eq!(r.error_code(), "invalid_input");
    assert!(r.stdout.contains("worktrain init"), "{r:?}");
    assert!(
        !env.home().join("keyring.json").exists(),
        "a failed command must not initialise the home"
    );
}
