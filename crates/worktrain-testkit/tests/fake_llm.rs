//! The fake server's own contract: script files, routes, the recorded-requests endpoint,
//! and the `fake-llm` binary used by end-to-end tests in other processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use worktrain_testkit::{FakeLlm, RecordedRequest, Script, Turn, Wire};

fn anthropic_body(system: &str) -> Value {
    json!({"model": "m", "max_tokens": 10, "system": system,
           "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn json_scripts_routes_and_checks() {
    let script = Script::from_json(
        r#"{"turns": [{"type": "text", "text": "default"}],
            "routes": [{"contains": "session-B", "turns": [
                {"type": "tool_calls", "calls": [{"name": "shell", "args": {"command": "ls"}}]},
                {"type": "delay", "ms": 10, "then": {"type": "text", "text": "B done"}}]}]}"#,
    )
    .unwrap();
    let (base, fake) = FakeLlm::start(script).await.unwrap();
    let (s, b) = post(&base, &anthropic_body("you are session-B")).await;
    assert_eq!(s, 200);
    assert_eq!(b["stop_reason"], "tool_use");
    assert_eq!(b["content"][0]["input"]["command"], "ls");
    let (_, b) = post(&base, &anthropic_body("you are session-A")).await;
    assert_eq!(b["content"][0]["text"], "default");
    // A conversation that does not answer a tool call is rejected like the real API.
    let bad = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shell", "input": {}}]},
        {"role": "user", "content": "where is my result?"}]});
    let (s, b) = post(&base, &bad).await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["type"], "invalid_request_error");
    let (s, b) = post(&base, &anthropic_body("session-B again")).await;
    assert_eq!((s, b["content"][0]["text"].clone()), (200, json!("B done")));
    // Exhausted: a clear 400.
    let (s, b) = post(&base, &anthropic_body("x")).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exhausted")
    );
    assert_eq!(fake.remaining(), 0);

    // Over HTTP, as other processes see them.
    let recorded: Vec<RecordedRequest> = reqwest::get(format!("{base}/_fake/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded, fake.requests());
    assert_eq!(recorded[0].wire, Wire::Anthropic);
    assert_eq!(recorded[0].header("anthropic-version"), Some("2023-06-01"));

    // Bare arrays work too, and a script can be replaced at run time.
    let r = reqwest::Client::new()
        .post(format!("{base}/_fake/script"))
        .body(r#"[{"type": "error", "status": 529}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, b) = post(&base, &anthropic_body("x")).await;
    assert_eq!(
        (s, b["error"]["type"].clone()),
        (529, json!("overloaded_error"))
    );
}

#[test]
fn turns_round_trip_through_json() {
    let turns = vec![
        Turn::text("a"),
        Turn::tool("shell", json!({"command": "ls"})),
        Turn::rate_limited("2"),
        Turn::Stall { ms: 5 },
        Turn::Delay {
            ms: 1,
            then: Box::new(Turn::error(500)),
        },
        Turn::MaxTokens { text: "cut".into() },
    ];
    let text = serde_json::to_string(&turns).unwrap();
    assert_eq!(Script::from_json(&text).unwrap(), Script::from(turns));
    assert!(Script::from_json(r#"[{"type": "text", "txt": "typo"}]"#).is_err());
}

#[test]
fn the_binary_serves_a_script_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.json");
    std::fs::write(&file, r#"[{"type": "text", "text": "from a file"}]"#).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-llm"))
        .args(["--script", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", "Bearer k")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "from a file");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}
