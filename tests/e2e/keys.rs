//! `worktrain keys`: rotation keeps old tokens working until the previous key is dropped.

use crate::support::{Env, advance_token, exit, session_id};

#[test]
fn rotation_keeps_old_tokens_until_the_previous_key_is_dropped() {
    let env = Env::initialised();
    let a = env.start("quick-task", "a");
    let b = env.start("quick-task", "b");
    let keyring = String::from_utf8(env.home_file("keyring.json")).unwrap();
    let before = env.ok_json(&["keys", "list"]);
    assert!(before["previous"].is_null(), "{before}");

    let rotated = env.ok_json(&["keys", "rotate"]);
    assert_eq!(
        rotated["previous"]["id"], before["current"]["id"],
        "{rotated}"
    );
    assert_ne!(rotated["current"]["id"], before["current"]["id"]);
    // `keys` output never carries secrets.
    let secret_fragment = keyring
        .split('"')
        .find(|s| s.len() >= 40)
        .expect("a secret-looking value in keyring.json");
    assert!(
        !rotated.to_string().contains(secret_fragment),
        "keys rotate printed a secret"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.home().join("keyring.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the rotated keyring stays private");

    // A token minted before the rotation still advances; the response carries new-key tokens.
    let next = env.advance(&advance_token(&a), "after rotation");
    assert_eq!(next["step"]["id"], "verify");

    env.ok_json(&["keys", "drop-previous"]);
    let r = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&b),
        "--notes",
        "x",
    ]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_retired_key", "{r:?}");
    let r = env.run_json(&[
        "session",
        "rehydrate",
        b["tokens"]["resume"].as_str().unwrap(),
    ]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_retired_key", "{r:?}");

    // Tokens minted after the rotation keep working, and the id still rehydrates.
    let done = env.advance(&advance_token(&next), "done");
    assert_eq!(done["outcome"], "complete");
    let fresh = env.ok_json(&["session", "rehydrate", &session_id(&b)]);
    let moved = env.advance(&advance_token(&fresh), "continued");
    assert_eq!(moved["step"]["id"], "verify");
}

#[test]
fn a_second_rotation_retires_the_oldest_key() {
    let env = Env::initialised();
    let a = env.start("quick-task", "a");
    env.ok_json(&["keys", "rotate"]);
    let b = env.start("quick-task", "b");
    env.ok_json(&["keys", "rotate"]);
    let r = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&a),
        "--notes",
        "x",
    ]);
    r.code(exit::TOKEN);
    assert_eq!(r.error_code(), "token_retired_key", "{r:?}");
    // The token from one rotation ago still verifies.
    let next = env.advance(&advance_token(&b), "still fine");
    assert_eq!(next["step"]["id"], "verify");
}
