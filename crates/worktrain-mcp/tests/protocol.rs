//! The MCP wire format, pinned: drives the real server (rmcp adapter included) over an
//! in-memory pipe with raw JSON-RPC lines and asserts the exact shapes clients depend on.
//! If an SDK upgrade changes what goes over the wire, this fails loudly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use worktrain_config::Home;
use worktrain_core::context::Limits;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_engine::Engine;
use worktrain_mcp::{EngineOpener, ServerOptions, ToolServer};

/// The tools, in the order `tools/list` must return them.
const EXPECTED_TOOLS: [&str; 8] = [
    "list_workflows",
    "inspect_workflow",
    "start_workflow",
    "continue_workflow",
    "checkpoint_workflow",
    "resume_session",
    "rewind_workflow",
    "check_insights",
];

async fn open_engine(dir: &Path) -> Arc<Engine> {
    let home = Home::locate(Some(dir.join("home"))).unwrap();
    home.init().unwrap();
    let config = home.config().unwrap();
    let store = home.open_store(&config, None).await.unwrap();
    Arc::new(Engine::new(
        store,
        home.keyring().unwrap(),
        Limits::default(),
    ))
}

fn options(dir: &Path) -> ServerOptions {
    ServerOptions {
        user_workflows: Some(dir.join("home").join("workflows")),
        default_workspace: Some(dir.to_path_buf()),
        bound_session: None,
    }
}

struct Client {
    writer: WriteHalf<DuplexStream>,
    reader: BufReader<ReadHalf<DuplexStream>>,
    next_id: u64,
    server: tokio::task::JoinHandle<Result<(), worktrain_mcp::ServeError>>,
    _home: tempfile::TempDir,
}

impl Client {
    async fn start() -> Client {
        let home_dir = tempfile::tempdir().unwrap();
        let engine = open_engine(home_dir.path()).await;
        let server = ToolServer::new(engine, options(home_dir.path()));
        Client::over(server, home_dir)
    }

    fn over(server: ToolServer, home_dir: tempfile::TempDir) -> Client {
        let (client_side, server_side) = tokio::io::duplex(1 << 20);
        let (server_read, server_write) = tokio::io::split(server_side);
        let server = tokio::spawn(worktrain_mcp::serve(
            Arc::new(server),
            server_read,
            server_write,
        ));
        let (read, write) = tokio::io::split(client_side);
        Client {
            writer: write,
            reader: BufReader::new(read),
            next_id: 1,
            server,
            _home: home_dir,
        }
    }

    async fn send_line(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
        self.writer.flush().await.unwrap();
    }

    async fn read_message(&mut self) -> Value {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line))
            .await
            .expect("the server answered within 20 s")
            .unwrap();
        assert!(n > 0, "the server closed the stream");
        assert!(line.ends_with('\n'), "one message per line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Send a request and return the whole response message (not just the result).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&msg.to_string()).await;
        loop {
            let m = self.read_message().await;
            if m.get("id") == Some(&json!(id)) {
                return m;
            }
            assert!(
                m.get("method").is_some(),
                "unexpected message while waiting for {id}: {m}"
            );
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let m = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        assert_eq!(m["jsonrpc"], "2.0", "{m}");
        assert!(
            m.get("error").is_none(),
            "a tool call is never a protocol error: {m}"
        );
        m["result"].clone()
    }

    async fn initialize(&mut self) -> Value {
        self.initialize_with("2025-06-18").await
    }

    async fn initialize_with(&mut self, version: &str) -> Value {
        let m = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "protocol-test", "version": "1"}
                }),
            )
            .await;
        self.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        m
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// Assert the exact shape of a successful step result and return its structured content.
fn step_result(result: &Value) -> &Value {
    assert_eq!(
        keys(result),
        ["content", "isError", "structuredContent"],
        "{result}"
    );
    assert_eq!(result["isError"], false, "{result}");
    let content = result["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{result}");
    assert_eq!(content[0]["type"], "text");
    assert!(content[0]["text"].is_string());
    let sc = &result["structuredContent"];
    for k in [
        "session_id",
        "outcome",
        "workflow",
        "tokens",
        "progress",
        "next",
    ] {
        assert!(sc.get(k).is_some(), "structuredContent.{k} missing: {sc}");
    }
    assert_eq!(sc["tokens"]["resume"].as_str().unwrap().len(), 61);
    sc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_initialize_list_call() {
    let mut c = Client::start().await;

    // initialize: the negotiated version is echoed; only the tools capability is offered.
    let init = c.initialize().await;
    assert_eq!(keys(&init), ["id", "jsonrpc", "result"], "{init}");
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    let r = &init["result"];
    assert_eq!(
        keys(r),
        [
            "capabilities",
            "instructions",
            "protocolVersion",
            "serverInfo"
        ],
        "{r}"
    );
    assert_eq!(r["protocolVersion"], "2025-06-18");
    assert_eq!(r["capabilities"], json!({"tools": {}}));
    assert_eq!(r["serverInfo"]["name"], "worktrain");
    assert_eq!(r["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        r["instructions"]
            .as_str()
            .unwrap()
            .contains("continue_workflow")
    );

    // tools/list: exactly our tools, each with an object input schema.
    let list = c.request("tools/list", json!({})).await;
    assert_eq!(keys(&list), ["id", "jsonrpc", "result"], "{list}");
    assert_eq!(keys(&list["result"]), ["tools"], "{list}");
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, EXPECTED_TOOLS);
    for t in tools {
        assert_eq!(
            keys(t),
            ["annotations", "description", "inputSchema", "name", "title"],
            "{t}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["inputSchema"]["additionalProperties"], false, "{t}");
        assert!(t["inputSchema"]["properties"].is_object(), "{t}");
        assert!(t["description"].as_str().unwrap().len() > 80, "{t}");
    }
    let cont = &tools[3];
    assert_eq!(cont["inputSchema"]["required"], json!(["token"]));
    assert_eq!(
        cont["inputSchema"]["properties"]["intent"]["enum"],
        json!(["advance", "rehydrate"])
    );
    assert_eq!(cont["annotations"]["readOnlyHint"], false);
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);

    // tools/call start_workflow: text first, the engine's response as structured content.
    let started = c
        .call(
            "start_workflow",
            json!({"workflow": "quick-task", "goal": "Rename the config loader"}),
        )
        .await;
    let sc = step_result(&started).clone();
    assert_eq!(sc["outcome"], "started");
    assert_eq!(sc["step"]["id"], "do-it");
    assert_eq!(sc["workflow"]["id"], "quick-task");
    let advance = sc["tokens"]["advance"].as_str().unwrap().to_owned();
    assert_eq!(advance.len(), 61);
    let text = started["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("**STARTED**"), "{text}");
    assert!(text.contains("Goal: Rename the config loader"), "{text}");
    assert!(
        text.contains(&advance),
        "the text names the token to send next: {text}"
    );

    // continue_workflow: advanced to the second step.
    let next = c
        .call(
            "continue_workflow",
            json!({"token": advance, "notes": "Renamed `load` to `load_config` in src/config.rs."}),
        )
        .await;
    let sc2 = step_result(&next).clone();
    assert_eq!(sc2["outcome"], "advanced");
    assert_ne!(sc2["step"]["id"], sc["step"]["id"]);
    assert_eq!(sc2["session_id"], sc["session_id"]);

    // Replaying the same token and output returns the recorded response.
    let replay = c
        .call(
            "continue_workflow",
            json!({"token": advance, "notes": "Renamed `load` to `load_config` in src/config.rs."}),
        )
        .await;
    assert_eq!(step_result(&replay), &sc2);
    assert!(
        replay["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Replayed")
    );

    // A tool error is a result with isError and the engine's error shape.
    let mut tampered = advance.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let err = c
        .call(
            "continue_workflow",
            json!({"token": String::from_utf8(tampered).unwrap(), "notes": "x"}),
        )
        .await;
    assert_eq!(
        keys(&err),
        ["content", "isError", "structuredContent"],
        "{err}"
    );
    assert_eq!(err["isError"], true);
    assert_eq!(err["content"][0]["type"], "text");
    assert_eq!(
        keys(&err["structuredContent"]),
        ["code", "hint", "message", "retry"]
    );
    assert_eq!(err["structuredContent"]["code"], "token_bad_signature");

    // Unknown arguments are tool errors too (the model can correct them).
    let bad = c.call("continue_workflow", json!({"tokn": "x"})).await;
    assert_eq!(bad["isError"], true);
    assert_eq!(bad["structuredContent"]["code"], "invalid_input");
    assert!(
        bad["structuredContent"]["message"]
            .as_str()
            .unwrap()
            .contains("tokn"),
        "{bad}"
    );

    // An unknown tool is a JSON-RPC error (invalid params).
    let unknown = c
        .request(
            "tools/call",
            json!({"name": "no_such_tool", "arguments": {}}),
        )
        .await;
    assert_eq!(keys(&unknown), ["error", "id", "jsonrpc"], "{unknown}");
    assert_eq!(unknown["error"]["code"], -32602);

    // Garbage on the line is ignored; well-formed JSON that is not a request gets an
    // Invalid Request error; either way the server keeps serving.
    c.send_line("{this is not json").await;
    c.send_line(r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":"nope"}"#)
        .await;
    let invalid = c.read_message().await;
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");
    let after = c.request("tools/list", json!({})).await;
    assert_eq!(
        after["result"]["tools"].as_array().unwrap().len(),
        EXPECTED_TOOLS.len()
    );

    // Drive the rest of the workflow to completion.
    let mut current = sc2.clone();
    for _ in 0..50 {
        if current["outcome"] == "complete" {
            break;
        }
        let r = c
            .call(
                "continue_workflow",
                json!({"token": current["tokens"]["advance"], "notes": "Done; `cargo test` passes."}),
            )
            .await;
        current = step_result(&r).clone();
        assert_ne!(current["outcome"], "blocked", "{current}");
    }
    assert_eq!(current["outcome"], "complete", "{current}");
    assert!(current.get("step").is_none());
    assert!(current["tokens"].get("advance").is_none());

    c.writer.shutdown().await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), c.server)
        .await
        .expect("the server stops when the client closes the stream")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_right_after_start_never_reports_contention() {
    let mut c = Client::start().await;
    c.initialize().await;
    for i in 0..50 {
        let started = c
            .call(
                "start_workflow",
                json!({"workflow": "quick-task", "goal": format!("task {i}")}),
            )
            .await;
        let token = step_result(&started)["tokens"]["advance"].clone();
        let next = c
            .call(
                "continue_workflow",
                json!({"token": token, "notes": "done"}),
            )
            .await;
        assert_eq!(next["isError"], false, "session {i}: {next}");
        assert_eq!(next["structuredContent"]["outcome"], "advanced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tools_answer_with_text_and_structure() {
    let mut c = Client::start().await;
    c.initialize().await;

    let list = c.call("list_workflows", json!({"tag": "chore"})).await;
    assert_eq!(list["isError"], false, "{list}");
    let ids: Vec<&str> = list["structuredContent"]["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"quick-task"), "{ids:?}");
    for w in list["structuredContent"]["workflows"].as_array().unwrap() {
        let tags = w["tags"].as_array().unwrap();
        assert!(tags.iter().any(|t| t == "chore"), "{w}");
    }
    let none = c
        .call("list_workflows", json!({"tag": "no-such-tag"}))
        .await;
    assert_eq!(none["structuredContent"]["workflows"], json!([]));

    let inspect = c
        .call("inspect_workflow", json!({"workflow": "quick-task"}))
        .await;
    assert_eq!(inspect["isError"], false, "{inspect}");
    let steps = inspect["structuredContent"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    assert_eq!(steps[0]["id"], "do-it");
    assert_eq!(steps[0]["position"], 1);
    assert_eq!(
        inspect["structuredContent"]["hash"].as_str().unwrap().len(),
        64
    );
    assert!(
        inspect["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Verify and report")
    );

    let missing = c
        .call("inspect_workflow", json!({"workflow": "nope"}))
        .await;
    assert_eq!(missing["isError"], true);
    assert_eq!(missing["structuredContent"]["code"], "workflow_not_found");

    let started = c
        .call(
            "start_workflow",
            json!({"workflow": "quick-task", "goal": "Find the flaky test", "context": {"size": "small"}}),
        )
        .await;
    let sc = step_result(&started).clone();
    let session = sc["session_id"].as_str().unwrap().to_owned();

    let cp = c
        .call(
            "checkpoint_workflow",
            json!({"token": sc["tokens"]["checkpoint"], "notes": "Half way: read the loader."}),
        )
        .await;
    assert_eq!(step_result(&cp)["outcome"], "checkpointed");

    let found = c.call("resume_session", json!({"query": "flaky"})).await;
    assert_eq!(found["isError"], false, "{found}");
    let sessions = found["structuredContent"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{found}");
    assert_eq!(sessions[0]["session_id"], session.as_str());
    assert_eq!(sessions[0]["current_step"]["id"], "do-it");
    let resume = sessions[0]["resume_token"].as_str().unwrap().to_owned();
    assert_eq!(resume.len(), 61);

    let rehydrated = c
        .call(
            "continue_workflow",
            json!({"token": resume, "intent": "rehydrate"}),
        )
        .await;
    let rh = step_result(&rehydrated).clone();
    assert_eq!(rh["outcome"], "rehydrated");
    assert_eq!(rh["tokens"]["advance"], sc["tokens"]["advance"]);

    let mixed = c
        .call(
            "continue_workflow",
            json!({"token": resume, "intent": "rehydrate", "notes": "x"}),
        )
        .await;
    assert_eq!(mixed["structuredContent"]["code"], "invalid_input");

    let adv = c
        .call(
            "continue_workflow",
            json!({"token": rh["tokens"]["advance"], "notes": "Found it."}),
        )
        .await;
    assert_eq!(step_result(&adv)["outcome"], "advanced");

    let rewound = c
        .call(
            "rewind_workflow",
            json!({"session": session, "to": "do-it", "reason": "missed a file"}),
        )
        .await;
    let rw = step_result(&rewound);
    assert_eq!(rw["outcome"], "rewound");
    assert_eq!(rw["step"]["id"], "do-it");

    let bad_target = c
        .call(
            "rewind_workflow",
            json!({"session": session, "to": "no-such-step"}),
        )
        .await;
    assert_eq!(bad_target["isError"], true);
    assert_eq!(
        bad_target["structuredContent"]["code"],
        "invalid_rewind_target"
    );

    let bad_ws = c
        .call(
            "start_workflow",
            json!({"workflow": "quick-task", "goal": "x", "workspace": "/no/such/dir"}),
        )
        .await;
    assert_eq!(bad_ws["structuredContent"]["code"], "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_workflow_file_is_reported_and_serving_continues() {
    let mut c = Client::start().await;
    let project = c._home.path().join(".worktrain").join("workflows");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("broken.yaml"),
        "schemaVersion: 1\nid: broken\nsteps: [",
    )
    .unwrap();
    c.initialize().await;

    let list = c.call("list_workflows", json!({})).await;
    assert_eq!(list["isError"], false, "{list}");
    assert_eq!(list["structuredContent"]["failed_to_load"], 1, "{list}");
    let broken = list["structuredContent"]["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "broken")
        .cloned()
        .unwrap();
    assert_eq!(broken["source"], "project");
    assert!(broken["error"].is_string(), "{broken}");
    let text = list["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("FAILED TO LOAD"), "{text}");
    // Even filtering by tag keeps a broken file visible (its tags are unknown).
    let tagged = c.call("list_workflows", json!({"tag": "chore"})).await;
    assert_eq!(tagged["structuredContent"]["failed_to_load"], 1, "{tagged}");

    let start = c
        .call("start_workflow", json!({"workflow": "broken", "goal": "x"}))
        .await;
    assert_eq!(start["isError"], true);
    assert_eq!(start["structuredContent"]["code"], "workflow_invalid");

    let ok = c
        .call(
            "start_workflow",
            json!({"workflow": "quick-task", "goal": "still serving"}),
        )
        .await;
    assert_eq!(step_result(&ok)["outcome"], "started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_to_open_is_an_error_result_and_is_retried() {
    let home_dir = tempfile::tempdir().unwrap();
    let engine = open_engine(home_dir.path()).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let open: EngineOpener = Arc::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let engine = engine.clone();
        Box::pin(async move {
            if n == 0 {
                Err(ApiError::new(
                    ErrorCode::StoreFailure,
                    "database is locked",
                    Retry::Same,
                    "retry",
                ))
            } else {
                Ok(engine)
            }
        })
    });
    let server = ToolServer::lazy(open, options(home_dir.path()));
    // The first open (the background warm-up or the first call) fails; a later call
    // opens the store and succeeds.
    let mut c = Client::over(server, home_dir);
    c.initialize().await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let r = c
            .call(
                "start_workflow",
                json!({"workflow": "quick-task", "goal": "retry"}),
            )
            .await;
        outcomes.push(r["isError"] == true);
        if r["isError"] == true {
            assert_eq!(r["structuredContent"]["code"], "store_failure", "{r}");
        } else {
            assert_eq!(step_result(&r)["outcome"], "started");
        }
    }
    assert_eq!(outcomes.last(), Some(&false), "{outcomes:?}");
    assert!(attempts.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handshake_version_gets_the_same_result_shape() {
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut c = Client::start().await;
        let init = c.initialize_with(version).await;
        assert_eq!(init["result"]["protocolVersion"], version, "{init}");
        let list = c.request("tools/list", json!({})).await;
        assert_eq!(keys(&list["result"]), ["tools"], "{version}: {list}");
        let started = c
            .call(
                "start_workflow",
                json!({"workflow": "quick-task", "goal": "shape check"}),
            )
            .await;
        assert_eq!(step_result(&started)["outcome"], "started", "{version}");
        let err = c
            .call("continue_workflow", json!({"token": "garbage"}))
            .await;
        assert_eq!(
            keys(&err),
            ["content", "isError", "structuredContent"],
            "{version}: {err}"
        );
        assert_eq!(err["structuredContent"]["code"], "token_malformed");
    }
}

/// Real clients (Claude Code, Codex) build their tool set from `tools/list` alone: in
/// session-bound mode the wire must list exactly the tools that mode serves, and every
/// listed tool must answer.
#[tokio::test]
async fn bound_mode_lists_on_the_wire_exactly_the_tools_it_serves() {
    let home_dir = tempfile::tempdir().unwrap();
    let engine = open_engine(home_dir.path()).await;
    let started = engine
        .start(worktrain_engine::StartRequest {
            workflow: worktrain_engine::Catalog::default()
                .resolve("quick-task")
                .unwrap(),
            goal: "bound over the wire".into(),
            workspace: None,
            context: serde_json::Map::new(),
            mode: worktrain_core::event::SessionMode::Autonomous,
            parent: None,
        })
        .await
        .unwrap();
    let server = ToolServer::new(
        engine,
        ServerOptions {
            bound_session: Some(started.response.session_id),
            ..options(home_dir.path())
        },
    );
    let mut c = Client::over(server, home_dir);
    c.initialize().await;
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["current_step", "complete_step"], "{list}");
    for name in names.clone() {
        let m = c
            .request("tools/call", json!({"name": name, "arguments": {}}))
            .await;
        assert!(
            m.get("error").is_none(),
            "listed tool `{name}` must be served: {m}"
        );
    }
    let unlisted = c
        .request(
            "tools/call",
            json!({"name": "continue_workflow", "arguments": {}}),
        )
        .await;
    assert!(unlisted.get("error").is_some(), "{unlisted}");
}
