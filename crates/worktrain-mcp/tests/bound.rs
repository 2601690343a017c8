//! Session-bound mode: an external agent run by the daemon sees only `current_step` and
//! `complete_step`; the server holds the session's tokens and none reaches the agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use worktrain_config::Home;
use worktrain_core::context::Limits;
use worktrain_engine::{Catalog, Engine, StartRequest};
use worktrain_mcp::{ServerOptions, ToolServer};

#[tokio::test]
async fn bound_server_drives_one_session_without_exposing_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::locate(Some(dir.path().join("home"))).unwrap();
    home.init().unwrap();
    let config = home.config().unwrap();
    let store = home.open_store(&config, None).await.unwrap();
    let engine = Arc::new(Engine::new(
        store,
        home.keyring().unwrap(),
        Limits::default(),
    ));
    let started = engine
        .start(StartRequest {
            workflow: Catalog::default().resolve("quick-task").unwrap(),
            goal: "bound mode".into(),
            workspace: None,
            context: serde_json::Map::new(),
            mode: worktrain_core::event::SessionMode::Autonomous,
            parent: None,
        })
        .await
        .unwrap();
    let session = started.response.session_id;
    let server = ToolServer::new(
        engine.clone(),
        ServerOptions {
            bound_session: Some(session),
            ..ServerOptions::default()
        },
    );
    let names: Vec<&str> = server.list_tools().iter().map(|t| t.name).collect();
    assert_eq!(names, ["current_step", "complete_step"]);
    assert!(
        server
            .call_tool("continue_workflow", json!({}))
            .await
            .is_err(),
        "unbound tools are not served"
    );

    let no_token = |r: &worktrain_mcp::ToolResult| {
        let all = format!("{} {}", r.text, r.structured);
        assert!(!all.contains("wt1."), "a token leaked: {all}");
    };
    let current = server.call_tool("current_step", json!({})).await.unwrap();
    no_token(&current);
    assert!(!current.is_error);
    assert_eq!(current.structured["step"]["id"], "do-it");

    let blocked = server
        .call_tool("complete_step", json!({"notes": ""}))
        .await
        .unwrap();
    no_token(&blocked);
    assert_eq!(blocked.structured["outcome"], "blocked");

    let next = server
        .call_tool("complete_step", json!({"notes": "renamed it"}))
        .await
        .unwrap();
    no_token(&next);
    assert_eq!(next.structured["step"]["id"], "verify");
    let done = server
        .call_tool("complete_step", json!({"notes": "tests pass"}))
        .await
        .unwrap();
    no_token(&done);
    assert_eq!(done.structured["outcome"], "complete");
    let after = server
        .call_tool("complete_step", json!({"notes": "again"}))
        .await
        .unwrap();
    assert_eq!(
        after.structured["outcome"], "complete",
        "completing a complete session is a no-op"
    );
    let bad = server
        .call_tool("complete_step", json!({"notez": "typo"}))
        .await
        .unwrap();
    assert!(bad.is_error);
}
