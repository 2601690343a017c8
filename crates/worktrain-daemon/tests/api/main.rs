//! HTTP API tests: the real server on 127.0.0.1:0 in-process, a real supervisor whose
//! agent is the built-in LLM loop talking to the testkit's fake LLM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod harness;
mod openapi;
mod sandbox;

use std::time::Duration;

use futures_util::StreamExt;
use harness::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktrain_testkit::{Script, Turn};

fn script(routes: Vec<worktrain_testkit::Route>) -> Script {
    Script {
        routes,
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_everywhere_but_healthz() {
    let d = Daemon::start(Script::default()).await;
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for (method, path) in [
        (Method::GET, "/readyz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/api/v1/sessions"),
        (Method::POST, "/api/v1/kill-all"),
        (Method::GET, "/api/v1/events/stream"),
    ] {
        let r = d
            .http
            .request(method.clone(), d.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(r.headers().get("www-authenticate").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "unauthorized", "{v}");
        assert!(v["message"].as_str().unwrap().contains("missing"), "{v}");
        assert!(v["hint"].as_str().unwrap().contains("api-token"), "{v}");
        assert_eq!(v["retry"], "after_fix");
        let r = d
            .http
            .request(method.clone(), d.url(path))
            .bearer_auth("wtk_wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["message"].as_str().unwrap().contains("does not match"),
            "{v}"
        );
    }
    let (s, v) = d.get("/readyz").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["queue_depth"], 0);
    assert!(v["worker"].as_str().unwrap().starts_with("worker-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_for_routes_methods_limits_and_bodies() {
    let mut opts = Options::default();
    opts.settings.body_limit_bytes = 2048;
    let d = Daemon::start_with(Script::default(), opts).await;
    // Unknown route.
    let (s, v) = d.get("/api/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "route_not_found", "{v}");
    // Wrong method.
    let (s, v) = d.get("/api/v1/kill-all").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["code"], "method_not_allowed", "{v}");
    // Too large.
    let big = "x".repeat(10_000);
    let (s, v) = d
        .post("/api/v1/sessions", json!({"workflow": "one", "goal": big}))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "payload_too_large");
    assert!(v["message"].as_str().unwrap().contains("2048"), "{v}");
    // Malformed JSON: position named.
    let r = d
        .http
        .post(d.url("/api/v1/sessions"))
        .bearer_auth(&d.token)
        .header("content-type", "application/json")
        .body("{\"workflow\": \"one\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_input");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.starts_with("invalid JSON") && m.contains("line 1 column"),
        "{m}"
    );
    // Wrong type: field named.
    let (s, v) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "g", "priority": "high"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("`priority`") && m.contains("invalid type"),
        "{m}"
    );
    // Unknown field.
    let (s, v) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "g", "golas": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `golas`"),
        "{v}"
    );
    // Missing field.
    let (s, v) = d.post("/api/v1/sessions", json!({"workflow": "one"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("missing field `goal`"),
        "{v}"
    );
    // Not JSON.
    let r = d
        .http
        .post(d.url("/api/v1/sessions"))
        .bearer_auth(&d.token)
        .header("content-type", "text/plain")
        .body("workflow=one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unsupported_media_type");
    // Bad session id, unknown session, bad query.
    let (s, v) = d.get("/api/v1/sessions/not-a-session").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not a session id"),
        "{v}"
    );
    let (s, v) = d
        .get("/api/v1/sessions/ses_01JAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["code"], "session_not_found");
    let (s, v) = d.get("/api/v1/sessions?limit=lots").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("limit"), "{v}");
    let (s, v) = d.get("/api/v1/sessions?run_state=sleeping").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Unknown workflow and agent.
    let (s, v) = d
        .post("/api/v1/sessions", json!({"workflow": "nope", "goal": "g"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["code"], "workflow_not_found");
    let (s, v) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "g", "agent": "ghost"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("ghost"), "{v}");
    let (s, v) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "g", "workspace": "relative/dir"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_non_loopback_without_allow_remote() {
    let d = Daemon::start(Script::default()).await;
    let token = worktrain_daemon::auth::ApiToken::new("t").unwrap();
    let err = worktrain_daemon::server::Server::bind(d.sup.clone(), token, "0.0.0.0:0")
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("allow_remote"), "{msg}");
    assert!(worktrain_daemon::server::check_bind("0.0.0.0:7878".parse().unwrap(), true).is_ok());
    assert!(worktrain_daemon::server::check_bind("[::1]:7878".parse().unwrap(), false).is_ok());
    assert!(
        worktrain_daemon::server::check_bind("192.168.1.2:7878".parse().unwrap(), false).is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_runs_to_completion_and_idempotency_key_returns_the_same_session() {
    let d = Daemon::start(script(vec![route("goal-idem", vec![complete("all done")])])).await;
    let body = json!({"workflow": "one", "goal": "goal-idem", "idempotency_key": "k-1",
                      "context": {"ticket": 42}, "priority": 3, "trigger": "ci"});
    let (s, first) = d.post("/api/v1/sessions", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["created"], true);
    let id = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(first["context"]["ticket"], 42);
    assert_eq!(first["run"]["priority"], 3);
    assert_eq!(first["run"]["trigger"]["id"], "ci");
    let (s, second) = d.post("/api/v1/sessions", body).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["created"], false);
    assert_eq!(second["session_id"], id.as_str());
    let done = d.wait_state(&id, "completed").await;
    assert_eq!(done["status"], "complete");
    assert_eq!(done["telemetry"]["turns"], 1);
    let k = kinds(&d.events(&id).await);
    for expected in [
        "run_queued",
        "run_started",
        "agent_activity",
        "step_completed",
        "session_completed",
        "run_finished",
    ] {
        assert!(
            k.iter().any(|x| x == expected),
            "{expected} missing from {k:?}"
        );
    }
    // Only one session exists.
    let (_, list) = d.get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

/// A JSON object never has a key twice: strict parsers reject it, others keep one of the
/// two silently. The detail's `nodes` is the step graph (the record's node count is its
/// length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_detail_has_each_key_once() {
    let d = Daemon::start(script(vec![route("goal-keys", vec![complete("done")])])).await;
    let (_, first) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "goal-keys"}),
        )
        .await;
    let id = first["session_id"].as_str().unwrap().to_owned();
    d.wait_state(&id, "completed").await;
    let text = d
        .http
        .get(d.url(&format!("/api/v1/sessions/{id}")))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Top-level keys, in order, as the server wrote them.
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, Keys(&mut keys)).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for k in &keys {
        assert!(seen.insert(k.as_str()), "key `{k}` twice in {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(v["session_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_and_metrics_equal_the_sum_over_llm_turn_events() {
    let usage = |i, o, cw, cr| worktrain_testkit::Usage {
        input_tokens: i,
        output_tokens: o,
        cache_creation_input_tokens: cw,
        cache_read_input_tokens: cr,
    };
    let d = Daemon::start(script(vec![
        route(
            "tokens-a",
            vec![
                Turn::tool("shell", json!({"command": "true"}))
                    .with_usage(usage(1200, 80, 3000, 0)),
                complete("done").with_usage(usage(310, 45, 0, 3000)),
            ],
        ),
        route(
            "tokens-b",
            vec![complete("done").with_usage(usage(7, 3, 5, 11))],
        ),
    ]))
    .await;
    let ids = [
        d.spawn("one", "tokens-a").await,
        d.spawn("one", "tokens-b").await,
    ];
    let mut totals = [0u64; 4];
    for id in &ids {
        let done = d.wait_state(id, "completed").await;
        // The expected values come from the raw events, not from the projection.
        let events = d.events(id).await;
        let turns: Vec<&Value> = events
            .iter()
            .filter(|e| e["body"]["type"] == "agent_activity")
            .map(|e| &e["body"]["activity"])
            .filter(|a| a["type"] == "llm_turn")
            .collect();
        let sum = |k: &str| -> u64 { turns.iter().map(|a| a["usage"][k].as_u64().unwrap()).sum() };
        let (input, output) = (sum("input_tokens"), sum("output_tokens"));
        let cache = sum("cache_read_input_tokens") + sum("cache_creation_input_tokens");
        let t = &done["telemetry"];
        assert_eq!(t["turns"], turns.len() as u64, "{t}");
        assert_eq!(t["input_tokens"], input, "{t}");
        assert_eq!(t["output_tokens"], output, "{t}");
        assert_eq!(t["cache_tokens"], cache, "{t}");
        totals[0] += input;
        totals[1] += output;
        totals[2] += cache;
        totals[3] += turns.len() as u64;
    }
    assert_eq!(totals, [1517, 128, 6016, 3], "the script's usage");
    let text = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("worktrain_llm_tokens_total{{kind=\"input\"}} {}", totals[0]),
        format!(
            "worktrain_llm_tokens_total{{kind=\"output\"}} {}",
            totals[1]
        ),
        format!("worktrain_llm_tokens_total{{kind=\"cache\"}} {}", totals[2]),
        format!("worktrain_llm_turns_total {}", totals[3]),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_pages_and_shows_queue_positions() {
    let mut opts = Options::default();
    opts.settings.max_concurrent_sessions = 1;
    // The first session blocks the only slot; the others queue.
    let d = Daemon::start_with(
        script(vec![route(
            "blocker",
            vec![Turn::Delay {
                ms: 30_000,
                then: Box::new(Turn::text("late")),
            }],
        )]),
        opts,
    )
    .await;
    let blocker = d.spawn("one", "blocker").await;
    d.wait_state(&blocker, "running").await;
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(d.spawn("two", &format!("queued {i}")).await);
    }
    let (s, v) = d.get("/api/v1/sessions?run_state=queued").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["session_id"], queued[i].as_str(), "queue order");
        assert_eq!(r["queue_position"], i + 1);
    }
    let (_, v) = d.get("/api/v1/sessions?run_state=running").await;
    assert_eq!(v["sessions"][0]["session_id"], blocker.as_str());
    assert!(v["sessions"][0]["queue_position"].is_null());
    // Paging with the cursor visits every session exactly once.
    let mut seen = Vec::new();
    let mut path = "/api/v1/sessions?limit=2".to_owned();
    loop {
        let (s, v) = d.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for r in v["sessions"].as_array().unwrap() {
            seen.push(r["session_id"].as_str().unwrap().to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/sessions?limit=2&cursor={c}"),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
    // Offset paging, filters.
    let (_, v) = d.get("/api/v1/sessions?limit=2&offset=4").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    assert!(v["next_cursor"].is_null());
    let (_, v) = d.get("/api/v1/sessions?workflow=two").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 4);
    let (_, v) = d.get("/api/v1/sessions?q=QUEUED%202").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    let (_, v) = d.get("/api/v1/sessions?run_state=completed").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);
    let (_, v) = d.get("/api/v1/sessions?run_state=none").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);
    let (_, v) = d
        .get("/api/v1/sessions?status=in_progress&run_state=queued&limit=3")
        .await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(v["next_cursor"], "o3");
    let (s, _) = d.get("/api/v1/sessions?cursor=o1&offset=1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Readiness and metrics see the queue.
    let (_, v) = d.get("/readyz").await;
    assert_eq!(v["queue_depth"], 4);
    assert_eq!(v["running"], 1);
    let r = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("worktrain_queue_depth 4"), "{text}");
    assert!(
        text.contains("worktrain_sessions{run_state=\"queued\"} 4"),
        "{text}"
    );
    assert!(text.contains("worktrain_running_sessions 1"), "{text}");
    assert!(
        text.contains("worktrain_runs_total{event=\"started\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("worktrain_advance_duration_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    assert!(text.contains("worktrain_http_requests_total{route=\"/api/v1/sessions\",method=\"GET\",status=\"200\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_and_sse_resumes_from_last_event_id() {
    let d = Daemon::start(script(vec![route(
        "goal-sse",
        vec![complete("plan done"), complete("build done")],
    )]))
    .await;
    let id = d.spawn("two", "goal-sse").await;
    d.wait_state(&id, "completed").await;
    let all = d.events(&id).await;
    assert!(all.len() > 6, "{all:?}");
    // Paging.
    let (_, p1) = d
        .get(&format!("/api/v1/sessions/{id}/events?limit=3"))
        .await;
    assert_eq!(p1["events"].as_array().unwrap().len(), 3);
    assert_eq!(p1["next_after"], 3);
    assert_eq!(p1["more"], true);
    let (_, p2) = d
        .get(&format!("/api/v1/sessions/{id}/events?after=3&limit=3"))
        .await;
    assert_eq!(p2["events"][0]["seq"], 4);
    // SSE from Last-Event-ID: the events after it, then `end`.
    let resp = d
        .http
        .get(d.url(&format!("/api/v1/sessions/{id}/events/stream")))
        .bearer_auth(&d.token)
        .header("Last-Event-ID", "4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("stream ends")
        .unwrap();
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (5..=all.len() as u64).collect();
    assert_eq!(ids, expected, "{text}");
    assert!(
        text.contains("event: end") || text.contains("event:end"),
        "{text}"
    );
    assert!(
        text.contains("event: run_finished") || text.contains("event:run_finished"),
        "{text}"
    );
    // ?after= works too.
    let resp = d
        .http
        .get(d.url(&format!(
            "/api/v1/sessions/{id}/events/stream?after={}",
            all.len() - 1
        )))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .unwrap()
        .unwrap();
    let n = text.lines().filter(|l| l.starts_with("id:")).count();
    assert_eq!(n, 1, "{text}");
    // The global stream tails by position (and stays open).
    let resp = d
        .http
        .get(d.url("/api/v1/events/stream?after=0"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("event: session_completed") && !got.contains("event:session_completed") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("id: 1") || got.contains("id:1"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sse_tail_follows_a_running_session() {
    let d = Daemon::start(script(vec![route(
        "goal-live",
        vec![slow_shell(300), slow_shell(300), complete("done")],
    )]))
    .await;
    let id = d.spawn("one", "goal-live").await;
    let resp = d
        .http
        .get(d.url(&format!("/api/v1/sessions/{id}/events/stream")))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("ends with the run")
        .unwrap();
    for e in [
        "run_started",
        "agent_activity",
        "session_completed",
        "run_finished",
        "end",
    ] {
        assert!(text.contains(&format!("event: {e}")), "{e} missing: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_all_any_and_timeout() {
    let handoff = json!([{
        "kind": "handoff", "commitType": "fix", "commitSubject": "x", "prTitle": "X",
        "prBody": "body", "filesChanged": ["a.rs"], "followUps": []
    }]);
    let d = Daemon::start(script(vec![
        route("goal-a", vec![complete_with("notes of a", handoff)]),
        route("goal-b", vec![complete("notes of b")]),
        route(
            "goal-slow",
            vec![Turn::Delay {
                ms: 30_000,
                then: Box::new(Turn::text("late")),
            }],
        ),
        route(
            "goal-fail",
            vec![Turn::text("I stop"), Turn::text("still stopping")],
        ),
    ]))
    .await;
    let a = d.spawn("one", "goal-a").await;
    let b = d.spawn("one", "goal-b").await;
    let (s, v) = d
        .post(
            "/api/v1/await",
            json!({"sessions": [a, b], "mode": "all", "timeout_secs": 20}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["done"], true, "{v}");
    assert_eq!(v["timed_out"], false);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["session_id"], a.as_str());
    assert_eq!(r[0]["outcome"], "completed");
    assert_eq!(r[0]["succeeded"], true);
    assert_eq!(r[0]["status"], "complete");
    assert_eq!(r[0]["notes"], "notes of a");
    assert_eq!(r[0]["handoff"]["prTitle"], "X");
    assert_eq!(r[0]["artifacts"]["handoff"]["commitType"], "fix");
    assert!(r[0]["pr_url"].is_null());
    assert_eq!(r[1]["notes"], "notes of b");
    assert!(r[1]["handoff"].is_null());

    let slow = d.spawn("one", "goal-slow").await;
    let fail = d.spawn("one", "goal-fail").await;
    let (s, v) = d
        .post(
            "/api/v1/await",
            json!({"sessions": [slow, fail], "mode": "any", "timeout_secs": 20}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["done"], true, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["finished"], false);
    assert_eq!(r[0]["outcome"], "running");
    assert_eq!(r[1]["finished"], true);
    assert_eq!(r[1]["succeeded"], false);
    assert_eq!(r[1]["outcome"], "failed");
    assert_eq!(r[1]["failure"], "agent_stopped_early");

    let started = std::time::Instant::now();
    let (s, v) = d
        .post(
            "/api/v1/await",
            json!({"sessions": [slow], "timeout_secs": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["done"], false);
    assert_eq!(v["timed_out"], true);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (s, v) = d
        .post(
            "/api/v1/await",
            json!({"sessions": ["ses_01JAAAAAAAAAAAAAAAAAAAAAAA"]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = d
        .post("/api/v1/await", json!({"sessions": [], "mode": "all"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = d
        .post("/api/v1/await", json!({"sessions": [slow], "mode": "some"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("`mode`"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running() {
    let mut opts = Options::default();
    opts.settings.max_concurrent_sessions = 1;
    let d = Daemon::start_with(
        script(vec![route(
            "goal-running",
            vec![Turn::Delay {
                ms: 30_000,
                then: Box::new(Turn::text("late")),
            }],
        )]),
        opts,
    )
    .await;
    let running = d.spawn("one", "goal-running").await;
    d.wait_state(&running, "running").await;
    let queued = d.spawn("one", "goal-queued").await;
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{queued}/cancel"),
            json!({"note": "not needed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["run"]["state"], "cancelled");
    assert_eq!(v["run"]["detail"], "not needed");
    let started = std::time::Instant::now();
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{running}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = d.wait_state(&running, "cancelled").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        started.elapsed()
    );
    assert!(done["run"]["failure"].is_null());
    // Cancelling again changes nothing; cancelling an interactive-free unknown id is 404.
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{running}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["run"]["state"], "cancelled");
    let (s, _) = d
        .post(
            "/api/v1/sessions/ses_01JAAAAAAAAAAAAAAAAAAAAAAA/cancel",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_reaches_the_next_llm_request() {
    let d = Daemon::start(script(vec![route(
        "goal-steer",
        vec![slow_shell(1500), complete("done")],
    )]))
    .await;
    let id = d.spawn("one", "goal-steer").await;
    d.wait_state(&id, "running").await;
    // Wait until the first LLM request is in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.fake.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let msg = "PLEASE-USE-THE-SMALLER-FIX-7731";
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{id}/steer"),
            json!({"message": msg}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    d.wait_state(&id, "completed").await;
    let reqs = d.fake.requests();
    assert!(!reqs[0].raw.contains(msg));
    assert!(
        reqs.iter().skip(1).any(|r| r.raw.contains(msg)),
        "the steering message never reached the model"
    );
    let k = kinds(&d.events(&id).await);
    assert!(k.iter().any(|x| x == "steered"), "{k:?}");
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{id}/steer"),
            json!({"message": "  "}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{id}/steer"),
            json!({"message": "too late"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "finished runs cannot be steered: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_a_parked_gate_requeue_the_run() {
    let d = Daemon::start(script(vec![
        route(
            "goal-approve",
            vec![complete("proposal A"), complete("finished A")],
        ),
        route(
            "goal-reject",
            vec![
                complete("proposal B1"),
                complete("proposal B2"),
                complete("finished B"),
            ],
        ),
    ]))
    .await;
    let a = d.spawn("gated", "goal-approve").await;
    let parked = d.wait_state(&a, "parked").await;
    assert_eq!(parked["status"], "parked");
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{a}/approve"),
            json!({"note": "ship it"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "approved");
    let done = d.wait_state(&a, "completed").await;
    assert_eq!(done["status"], "complete");
    let k = kinds(&d.events(&a).await);
    let i = k.iter().position(|x| x == "gate_approved").unwrap();
    assert!(k[i..].iter().any(|x| x == "run_requeued"), "{k:?}");

    let b = d.spawn("gated", "goal-reject").await;
    d.wait_state(&b, "parked").await;
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{b}/reject"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a rejection needs a note: {v}");
    let (s, v) = d
        .post(
            &format!("/api/v1/sessions/{b}/reject"),
            json!({"note": "NEEDS-TESTS-4412"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "rejected");
    // The agent sees the note, submits again and parks again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = d.session(&b).await;
        if s["run"]["state"] == "parked" && s["current"]["attempt"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        d.fake
            .requests()
            .iter()
            .any(|r| r.raw.contains("NEEDS-TESTS-4412"))
    );
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{b}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    d.wait_state(&b, "completed").await;
    // Approving a session that is not parked is a conflict.
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{b}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "not_parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_a_failed_run() {
    let d = Daemon::start(script(vec![route(
        "goal-retry",
        vec![
            Turn::text("stop"),
            Turn::text("stop again"),
            complete("done on retry"),
        ],
    )]))
    .await;
    let id = d.spawn("one", "goal-retry").await;
    let failed = d.wait_state(&id, "failed").await;
    assert_eq!(failed["run"]["failure"], "agent_stopped_early");
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["run"]["failure"].is_null(), "{v}");
    let done = d.wait_state(&id, "completed").await;
    assert_eq!(done["run"]["run"], 2);
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{id}/retry"), json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a completed run cannot be retried: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_an_interrupted_run() {
    let d = Daemon::start(script(vec![route(
        "goal-resume",
        vec![
            Turn::Delay {
                ms: 30_000,
                then: Box::new(Turn::text("late")),
            },
            complete("done after resume"),
        ],
    )]))
    .await;
    let id = d.spawn("one", "goal-resume").await;
    d.wait_state(&id, "running").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.fake.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never called the LLM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop interrupts the run (not failed).
    let (dir, home, fake) = d.stop().await;
    let base = fake.base_url().to_owned();
    // A daemon whose supervisor does not run (so no automatic recovery): resume by hand.
    let d = Daemon::boot(
        dir,
        home,
        fake,
        &base,
        Options {
            run_supervisor: false,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(d.run_state(&id).await, "interrupted");
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{id}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["run"]["state"], "queued");
    assert_eq!(v["queue_position"], 1);
    let (s, v) = d
        .post(&format!("/api/v1/sessions/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "only interrupted runs resume: {v}"
    );
    // With a running supervisor the run completes, told it was interrupted.
    let (dir, home, fake) = d.stop().await;
    let d = Daemon::boot(dir, home, fake, &base, Options::default()).await;
    let done = d.wait_state(&id, "completed").await;
    assert_eq!(done["run"]["interruptions"], 1);
    assert!(
        d.fake
            .requests()
            .last()
            .unwrap()
            .raw
            .contains("interrupted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_stops_running_and_queued() {
    let mut opts = Options::default();
    opts.settings.max_concurrent_sessions = 1;
    let d = Daemon::start_with(
        script(vec![route(
            "goal-k1",
            vec![Turn::Delay {
                ms: 30_000,
                then: Box::new(Turn::text("late")),
            }],
        )]),
        opts,
    )
    .await;
    let k1 = d.spawn("one", "goal-k1").await;
    d.wait_state(&k1, "running").await;
    let k2 = d.spawn("one", "goal-k2").await;
    let (s, v) = d.post("/api/v1/kill-all", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stopped"], 2);
    for id in [&k1, &k2] {
        let s = d.wait_state(id, "failed").await;
        assert_eq!(s["run"]["failure"], "killed");
    }
    // The run's task leaves the running set just after its final event is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = d.get("/readyz").await;
        assert_eq!(v["queue_depth"], 0);
        if v["running"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_over_streamable_http() {
    let d = Daemon::start(Script::default()).await;
    let post = |body: Value, session: Option<String>| {
        let mut r = d
            .http
            .post(d.url("/mcp"))
            .bearer_auth(&d.token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let r = d
        .http
        .post(d.url("/mcp"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "api-test", "version": "1"}}});
    let r = post(init, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    assert!(
        text.contains("serverInfo") && text.contains("worktrain"),
        "{text}"
    );
    let r = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        session.clone(),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        session.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("start_workflow") && text.contains("continue_workflow"),
        "{text}"
    );
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "list_workflows", "arguments": {}}});
    let r = post(call, session).await.unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("gated") && text.contains("coding-task"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_workspace_and_per_trigger_caps_hold() {
    let ws_a = git_workspace();
    let ws_b = git_workspace();
    let ws_c = git_workspace();
    let goals = ["cap-a1", "cap-a2", "cap-a3", "cap-n1", "cap-n2"];
    let routes = goals
        .iter()
        .map(|g| route(g, vec![slow_shell(400), complete("done")]))
        .collect();
    let mut opts = Options::default();
    opts.settings.max_concurrent_sessions = 10;
    opts.settings.max_per_workspace = 1;
    opts.settings.max_per_trigger.insert("nightly".into(), 1);
    let d = Daemon::start_with(script(routes), opts).await;
    let path = |d: &tempfile::TempDir| {
        std::fs::canonicalize(d.path())
            .unwrap()
            .display()
            .to_string()
    };
    let mut ids = Vec::new();
    for (goal, ws, trigger) in [
        ("cap-a1", path(&ws_a), None),
        ("cap-a2", path(&ws_a), None),
        ("cap-a3", path(&ws_a), None),
        ("cap-n1", path(&ws_b), Some("nightly")),
        ("cap-n2", path(&ws_c), Some("nightly")),
    ] {
        let mut body = json!({"workflow": "one", "goal": goal, "workspace": ws});
        if let Some(t) = trigger {
            body["trigger"] = json!(t);
        }
        let (s, v) = d.post("/api/v1/sessions", body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["session_id"].as_str().unwrap().to_owned());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        while d.run_state(id).await != "completed" {
            assert!(std::time::Instant::now() < deadline, "runs did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The caps, from the event log: replay every run's start and finish in global order
    // (the store's position) and count what was running at each point. Unlike sampling
    // the running list, this cannot miss a short overlap.
    let groups = [
        ("cap-a1", "a"),
        ("cap-a2", "a"),
        ("cap-a3", "a"),
        ("cap-n1", "nightly"),
        ("cap-n2", "nightly"),
    ];
    let mut changes = Vec::new();
    for (id, (_, group)) in ids.iter().zip(groups) {
        let events = d.events(id).await;
        let kinds: Vec<&str> = events
            .iter()
            .filter_map(|e| e["body"]["type"].as_str())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "run_started").count(),
            1,
            "{id}: {kinds:?}"
        );
        for e in &events {
            let delta = match e["body"]["type"].as_str() {
                Some("run_started") => 1,
                Some("run_finished") => -1,
                _ => continue,
            };
            changes.push((e["position"].as_u64().unwrap(), group, delta));
        }
    }
    changes.sort_by_key(|c| c.0);
    let (mut in_a, mut nightly, mut total) = (0i32, 0i32, 0i32);
    let (mut max_a, mut max_nightly, mut max_total) = (0, 0, 0);
    for (_, group, delta) in changes {
        total += delta;
        match group {
            "a" => in_a += delta,
            _ => nightly += delta,
        }
        max_a = max_a.max(in_a);
        max_nightly = max_nightly.max(nightly);
        max_total = max_total.max(total);
    }
    assert_eq!((in_a, nightly), (0, 0), "every started run finished");
    assert_eq!(max_a, 1, "at most one run per workspace");
    assert_eq!(max_nightly, 1, "at most one run of the `nightly` trigger");
    assert!(
        max_total >= 2,
        "different workspaces and triggers still run in parallel (saw {max_total})"
    );
}
