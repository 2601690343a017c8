//! Both providers against the fake server over loopback HTTP: wire shapes, tool calls,
//! usage, streaming, retries, timeouts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use worktrain_agent::llm::HttpLlmClient;
use worktrain_agent::{
    ApiKeySource, ChatRequest, Content, LlmClient, LlmConfig, LlmError, Message, Provider,
    RetryPolicy, Role, StopReason, ToolSpec,
};
use worktrain_testkit::{FakeLlm, Script, ToolCall, Turn, Usage};

use crate::common::{API_KEY, client, llm_config};

fn request() -> ChatRequest {
    ChatRequest {
        system: "You are a test.".into(),
        messages: vec![Message::user("list the files")],
        tools: vec![ToolSpec {
            name: "shell".into(),
            description: "run a command".into(),
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        }],
    }
}

/// Call with tools, get a tool call; answer it; get text. Checks both directions.
async fn roundtrip(provider: Provider, stream: bool) {
    let usage = Usage {
        input_tokens: 120,
        output_tokens: 30,
        cache_creation_input_tokens: 50,
        cache_read_input_tokens: 70,
    };
    let (base, fake) = FakeLlm::start(vec![
        Turn::ToolCalls {
            text: Some("Let me look at the files first.".into()),
            calls: vec![
                ToolCall::new(
                    "shell",
                    json!({"command": "ls -la", "nested": {"a": [1, 2, "x\"y"]}}),
                ),
                ToolCall::new("shell", json!({"command": "pwd"})),
            ],
            usage: Some(usage),
        },
        Turn::text("All done."),
    ])
    .await
    .unwrap();
    let c = client(&base, provider, stream);
    let mut req = request();
    let r1 = c.complete(&req).await.unwrap();
    assert_eq!(r1.stop_reason, StopReason::ToolUse);
    assert_eq!(r1.text(), "Let me look at the files first.");
    let calls = r1.tool_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1, "shell");
    assert_eq!(
        calls[0].2,
        &json!({"command": "ls -la", "nested": {"a": [1, 2, "x\"y"]}})
    );
    assert_eq!(calls[1].2, &json!({"command": "pwd"}));
    assert_eq!(r1.attempts, 1);
    match provider {
        Provider::Anthropic => {
            assert_eq!(r1.usage.input_tokens, 120);
            assert_eq!(r1.usage.cache_creation_input_tokens, 50);
            assert_eq!(r1.usage.cache_read_input_tokens, 70);
        }
        Provider::OpenAi => {
            // OpenAI reports cached tokens inside prompt_tokens and has no cache writes.
            assert_eq!(r1.usage.input_tokens, 170);
            assert_eq!(r1.usage.cache_read_input_tokens, 70);
        }
    }
    assert_eq!(r1.usage.output_tokens, 30);
    assert_eq!(r1.usage.total(), 270);

    // Answer both calls.
    let ids: Vec<String> = calls.iter().map(|c| c.0.to_owned()).collect();
    req.messages.push(Message {
        role: Role::Assistant,
        content: r1.content.clone(),
    });
    req.messages.push(Message {
        role: Role::User,
        content: vec![
            Content::ToolResult {
                tool_use_id: ids[0].clone(),
                content: "a.txt\nb.txt".into(),
                is_error: false,
            },
            Content::ToolResult {
                tool_use_id: ids[1].clone(),
                content: "no such dir".into(),
                is_error: true,
            },
        ],
    });
    let r2 = c.complete(&req).await.unwrap();
    assert_eq!(r2.stop_reason, StopReason::EndTurn);
    assert_eq!(r2.text(), "All done.");
    assert!(r2.tool_calls().is_empty());

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.stream, stream);
        assert_eq!(r.body["model"], "fake-model");
    }
    let (r0, r1) = (&reqs[0], &reqs[1]);
    match provider {
        Provider::Anthropic => {
            assert_eq!(r0.path, "/v1/messages");
            assert_eq!(r0.header("x-api-key"), Some(API_KEY));
            assert_eq!(r0.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(r0.body["max_tokens"], 1024);
            assert_eq!(r0.body["system"][0]["cache_control"]["type"], "ephemeral");
            assert_eq!(r0.body["tools"][0]["name"], "shell");
            assert_eq!(r0.body["tools"][0]["input_schema"]["type"], "object");
            let msgs = r1.body["messages"].as_array().unwrap();
            assert_eq!(msgs.len(), 3);
            assert_eq!(msgs[1]["role"], "assistant");
            assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
            assert_eq!(msgs[1]["content"][1]["id"], ids[0].as_str());
            let results = msgs[2]["content"].as_array().unwrap();
            assert_eq!(results[0]["type"], "tool_result");
            assert_eq!(results[0]["tool_use_id"], ids[0].as_str());
            assert_eq!(results[0]["content"], "a.txt\nb.txt");
            assert!(results[0].get("is_error").is_none());
            assert_eq!(results[1]["is_error"], true);
        }
        Provider::OpenAi => {
            assert_eq!(r0.path, "/v1/chat/completions");
            assert_eq!(
                r0.header("authorization"),
                Some(format!("Bearer {API_KEY}").as_str())
            );
            assert_eq!(r0.body["messages"][0]["role"], "system");
            assert_eq!(r0.body["tools"][0]["type"], "function");
            assert_eq!(r0.body["tools"][0]["function"]["name"], "shell");
            assert_eq!(
                r0.body["tools"][0]["function"]["parameters"]["type"],
                "object"
            );
            if stream {
                assert_eq!(r0.body["stream_options"]["include_usage"], true);
            }
            let msgs = r1.body["messages"].as_array().unwrap();
            // system, user, assistant(tool_calls), tool, tool
            assert_eq!(msgs.len(), 5);
            assert_eq!(msgs[2]["role"], "assistant");
            let tc = &msgs[2]["tool_calls"][0];
            assert_eq!(tc["id"], ids[0].as_str());
            assert_eq!(tc["type"], "function");
            let args: Value =
                serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args["command"], "ls -la");
            assert_eq!(msgs[3]["role"], "tool");
            assert_eq!(msgs[3]["tool_call_id"], ids[0].as_str());
            assert_eq!(msgs[4]["tool_call_id"], ids[1].as_str());
            assert!(msgs[4]["content"].as_str().unwrap().starts_with("ERROR"));
        }
    }
    for r in &reqs {
        assert!(
            !r.raw.contains(API_KEY),
            "the key must travel in a header only"
        );
    }
}

#[tokio::test]
async fn anthropic_non_streaming() {
    roundtrip(Provider::Anthropic, false).await;
}

#[tokio::test]
async fn anthropic_streaming() {
    roundtrip(Provider::Anthropic, true).await;
}

#[tokio::test]
async fn openai_non_streaming() {
    roundtrip(Provider::OpenAi, false).await;
}

#[tokio::test]
async fn openai_streaming() {
    roundtrip(Provider::OpenAi, true).await;
}

#[tokio::test]
async fn max_tokens_stop_reason_both_wires() {
    for (provider, stream) in [
        (Provider::Anthropic, true),
        (Provider::OpenAi, true),
        (Provider::Anthropic, false),
        (Provider::OpenAi, false),
    ] {
        let (base, _fake) = FakeLlm::start(vec![Turn::MaxTokens { text: "cut".into() }])
            .await
            .unwrap();
        let r = client(&base, provider, stream)
            .complete(&request())
            .await
            .unwrap();
        assert_eq!(
            r.stop_reason,
            StopReason::MaxTokens,
            "{provider} stream={stream}"
        );
    }
}

fn config_with(base: &str, provider: Provider, retry: RetryPolicy, timeout: Duration) -> LlmConfig {
    let mut c = llm_config(base, provider, false);
    c.retry = retry;
    c.timeout = timeout;
    c
}

#[tokio::test]
async fn retry_429_honours_retry_after() {
    let (base, fake) = FakeLlm::start(vec![Turn::rate_limited("1"), Turn::text("ok")])
        .await
        .unwrap();
    let c = HttpLlmClient::new(config_with(
        &base,
        Provider::Anthropic,
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(5),
        },
        Duration::from_secs(5),
    ))
    .unwrap();
    let t0 = Instant::now();
    let r = c.complete(&request()).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.text(), "ok");
    assert!(
        took >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured ({took:?})"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_is_bounded() {
    let (base, _fake) = FakeLlm::start(vec![Turn::rate_limited("3600"), Turn::text("ok")])
        .await
        .unwrap();
    let c = HttpLlmClient::new(config_with(
        &base,
        Provider::OpenAi,
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_millis(300),
        },
        Duration::from_secs(5),
    ))
    .unwrap();
    // Bounded: the retry waits `max_retry_after` (300 ms), not the hour the server asked
    // for — so the call ends at all. The wait itself is unit-tested in `llm::http`.
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(120), c.complete(&request()))
        .await
        .expect("the client waited out the server's Retry-After: 3600")
        .unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.text(), "ok");
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn retry_5xx_with_backoff() {
    let (base, fake) = FakeLlm::start(vec![
        Turn::error(500),
        Turn::error(529),
        Turn::error(503),
        Turn::text("ok"),
    ])
    .await
    .unwrap();
    let c = client(&base, Provider::Anthropic, true);
    let r = c.complete(&request()).await.unwrap();
    assert_eq!(r.attempts, 4);
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (base, fake) = FakeLlm::start(vec![
        Turn::error(500),
        Turn::error(500),
        Turn::error(500),
        Turn::error(500),
        Turn::text("never"),
    ])
    .await
    .unwrap();
    let c = HttpLlmClient::new(config_with(
        &base,
        Provider::OpenAi,
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(1),
        },
        Duration::from_secs(5),
    ))
    .unwrap();
    match c.complete(&request()).await {
        Err(LlmError::RetriesExhausted { attempts, last }) => {
            assert_eq!(attempts, 3);
            assert!(
                matches!(*last, LlmError::Api { status: 500, .. }),
                "{last:?}"
            );
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (base, fake) = FakeLlm::start(vec![
        Turn::Error {
            status: 400,
            retry_after: None,
            message: Some("prompt is too long".into()),
        },
        Turn::text("never"),
    ])
    .await
    .unwrap();
    let err = client(&base, Provider::Anthropic, false)
        .complete(&request())
        .await
        .unwrap_err();
    match err {
        LlmError::Api { status, message } => {
            assert_eq!(status, 400);
            assert_eq!(message, "prompt is too long");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn wrong_key_is_an_auth_error_not_retried() {
    let (base, fake) = FakeLlm::start(Script {
        turns: vec![Turn::text("never")],
        api_key: Some("the-right-key".into()),
        ..Script::default()
    })
    .await
    .unwrap();
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let err = client(&base, provider, false)
            .complete(&request())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Api { status: 401, .. }), "{err:?}");
    }
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn stalled_call_times_out_and_is_retried() {
    let (base, fake) = FakeLlm::start(vec![Turn::Stall { ms: 3000 }, Turn::text("ok")])
        .await
        .unwrap();
    let c = HttpLlmClient::new(config_with(
        &base,
        Provider::Anthropic,
        crate::common::fast_retry(),
        Duration::from_millis(300),
    ))
    .unwrap();
    let r = c.complete(&request()).await.unwrap();
    // The stalled first attempt timed out (300 ms, not its 3 s) and the retry answered.
    assert_eq!(r.attempts, 2);
    assert_eq!(r.text(), "ok");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!("http://127.0.0.1:{port}"), Provider::OpenAi, false);
    match c.complete(&request()).await {
        Err(LlmError::RetriesExhausted { attempts, last }) => {
            assert_eq!(attempts, 4);
            assert!(matches!(*last, LlmError::Connection(_)), "{last:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn api_key_from_env_and_never_printed() {
    let mut c = LlmConfig::new(
        Provider::Anthropic,
        "m",
        ApiKeySource::Env("WORKTRAIN_TEST_SURELY_UNSET_KEY".into()),
    );
    assert!(
        matches!(c.build(), Err(LlmError::MissingApiKey(v)) if v == "WORKTRAIN_TEST_SURELY_UNSET_KEY")
    );
    // PATH is always set: a stand-in for a real key variable.
    c.api_key = ApiKeySource::Env("PATH".into());
    assert!(c.build().is_ok());
    let with_value: LlmConfig = serde_json::from_value(json!({
        "provider": "openai", "model": "m", "api_key": {"value": "sk-very-secret-value-123"},
        "timeout": "30s", "retry": {"max_retries": 2, "initial_backoff": "100ms"}
    }))
    .unwrap();
    assert_eq!(with_value.timeout, Duration::from_secs(30));
    assert_eq!(with_value.retry.initial_backoff, Duration::from_millis(100));
    let printed = format!("{with_value:?}");
    assert!(!printed.contains("sk-very-secret"), "{printed}");
    let printed = format!("{:?}", HttpLlmClient::new(with_value.clone()).unwrap());
    assert!(!printed.contains("sk-very-secret"), "{printed}");
    let printed = format!("{:?}", HttpLlmClient::new(with_value.clone()).unwrap());
    assert!(!printed.contains("sk-very-secret"), "{printed}");
    let client = with_value.build().unwrap();
    assert_eq!(client.model(), "m");
}
