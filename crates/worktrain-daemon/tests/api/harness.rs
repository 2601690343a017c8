//! A real daemon in-process: home, store, engine, supervisor with an LLM agent talking to
//! the testkit's fake LLM, and the HTTP server on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worktrain_agent::{
    AgentRunner, ApiKeySource, LlmAgent, LlmAgentConfig, LlmConfig, Provider, RetryPolicy, Secret,
};
use worktrain_config::{API_TOKEN_FILE, DaemonSettings, Home};
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::server::{Server, ServerLimits};
use worktrain_daemon::supervisor::Supervisor;
use worktrain_engine::Engine;
use worktrain_testkit::{FakeLlm, FakeLlmHandle, Route, Script, ToolCall, Turn};

pub(crate) const ONE_STEP: &str = "\
schemaVersion: 1
id: one
name: One step
description: one step
version: '1'
steps:
  - id: work
    title: Work
    prompt: 'Do the work: {{goal}}'
";

pub(crate) const GATED: &str = "\
schemaVersion: 1
id: gated
name: Gated
description: a gate then a step
version: '1'
steps:
  - id: propose
    title: Propose
    prompt: 'Propose a change for {{goal}}'
    requireConfirmation: true
  - id: finish
    title: Finish
    prompt: 'Finish {{goal}}'
";

pub(crate) const TWO_STEP: &str = "\
schemaVersion: 1
id: two
name: Two steps
description: two steps
version: '1'
steps:
  - id: plan
    title: Plan
    prompt: 'Plan {{goal}}'
  - id: build
    title: Build
    prompt: 'Build {{goal}}'
";

/// A fresh git working tree (`git init`) to dispatch into.
pub(crate) fn git_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir.path())
        .status()
        .expect("git init");
    assert!(st.success());
    dir
}

/// A turn completing the current step.
pub(crate) fn complete(notes: &str) -> Turn {
    Turn::tool("complete_step", json!({"notes": notes}))
}

/// A turn completing the step with artifacts.
pub(crate) fn complete_with(notes: &str, artifacts: Value) -> Turn {
    Turn::tool(
        "complete_step",
        json!({"notes": notes, "artifacts": artifacts}),
    )
}

/// A turn that runs a harmless shell command after `ms` milliseconds.
pub(crate) fn slow_shell(ms: u64) -> Turn {
    Turn::Delay {
        ms,
        then: Box::new(Turn::tools(vec![ToolCall::new(
            "shell",
            json!({"command": "true"}),
        )])),
    }
}

/// A route: requests containing `goal` play `turns`.
pub(crate) fn route(goal: &str, turns: Vec<Turn>) -> Route {
    Route {
        contains: goal.to_owned(),
        turns,
    }
}

pub(crate) struct Daemon {
    pub _dir: tempfile::TempDir,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub sup: Arc<Supervisor>,
    pub fake: FakeLlmHandle,
    pub home: Home,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
    sup_task: Option<JoinHandle<()>>,
}

pub(crate) struct Options {
    pub settings: DaemonSettings,
    /// Client limits of the HTTP server.
    pub server_limits: ServerLimits,
    /// Start the supervisor loop (false: only the server; nothing is scheduled).
    pub run_supervisor: bool,
}

impl Default for Options {
    fn default() -> Self {
        let mut settings = DaemonSettings::default();
        settings.worktrees.enabled = false;
        settings.lease_secs = 3;
        Self {
            settings,
            server_limits: ServerLimits::default(),
            run_supervisor: true,
        }
    }
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    }
}

fn agent(base: &str) -> Arc<dyn AgentRunner> {
    let mut c = LlmConfig::new(
        Provider::Anthropic,
        "fake-model",
        ApiKeySource::Value(Secret::new("k-test")),
    );
    c.base_url = Some(base.to_owned());
    c.timeout = Duration::from_secs(20);
    c.retry = fast_retry();
    c.max_tokens = 1024;
    let cfg = LlmAgentConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..LlmAgentConfig::default()
    };
    Arc::new(LlmAgent::from_llm_config(&c, cfg).expect("agent"))
}

impl Daemon {
    pub(crate) async fn start(script: impl Into<Script>) -> Self {
        Self::start_with(script, Options::default()).await
    }

    pub(crate) async fn start_with(script: impl Into<Script>, opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::locate(Some(dir.path().join("home"))).expect("home");
        home.init().expect("init");
        for (name, text) in [
            ("one.yaml", ONE_STEP),
            ("gated.yaml", GATED),
            ("two.yaml", TWO_STEP),
        ] {
            std::fs::write(home.path("workflows").join(name), text).expect("workflow");
        }
        let (base_llm, fake) = FakeLlm::start(script).await.expect("fake llm");
        Self::boot(dir, home, fake, &base_llm, opts).await
    }

    /// Start a (new) daemon on an existing home and fake LLM.
    pub(crate) async fn boot(
        dir: tempfile::TempDir,
        home: Home,
        fake: FakeLlmHandle,
        base_llm: &str,
        opts: Options,
    ) -> Self {
        let config = home.config().expect("config");
        let store = home.open_store(&config, None).await.expect("store");
        let engine = Arc::new(
            Engine::new(store, home.keyring().expect("keyring"), config.limits).with_worktrees(
                worktrain_engine::SessionWorktrees::new(
                    opts.settings.worktrees.clone(),
                    home.root(),
                ),
            ),
        );
        let mut agents = BTreeMap::new();
        agents.insert("default".to_owned(), agent(base_llm));
        let sup = Supervisor::new(
            engine,
            opts.settings,
            home.root().to_path_buf(),
            worktrain_daemon::profiles::AgentPool::from_runners(agents),
        );
        let token = std::fs::read_to_string(home.path(API_TOKEN_FILE))
            .expect("token")
            .trim()
            .to_owned();
        let server = Server::bind(
            sup.clone(),
            ApiToken::new(&token).expect("token"),
            "127.0.0.1:0",
        )
        .await
        .expect("bind")
        .with_limits(opts.server_limits);
        let addr = server.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let server_task = tokio::spawn(async move {
            let _ = server.run(async move { s2.cancelled().await }).await;
        });
        let sup_task = opts.run_supervisor.then(|| tokio::spawn(sup.clone().run()));
        Self {
            _dir: dir,
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            sup,
            fake,
            home,
            stop,
            server: Some(server_task),
            sup_task,
        }
    }

    /// Graceful stop: supervisor interrupts its runs; the server stops.
    pub(crate) async fn stop(mut self) -> (tempfile::TempDir, Home, FakeLlmHandle) {
        self.sup.shutdown();
        self.stop.cancel();
        if let Some(t) = self.sup_task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.server.take() {
            let _ = t.await;
        }
        (self._dir, self.home, self.fake)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn req(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.req(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(Method::POST, path, Some(body)).await
    }

    /// Dispatch and return the session id.
    pub(crate) async fn spawn(&self, workflow: &str, goal: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/sessions",
                json!({"workflow": workflow, "goal": goal}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["session_id"].as_str().expect("id").to_owned()
    }

    pub(crate) async fn session(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/api/v1/sessions/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub(crate) async fn run_state(&self, id: &str) -> String {
        self.session(id).await["run"]["state"]
            .as_str()
            .unwrap_or("-")
            .to_owned()
    }

    /// Wait until the run reaches `state` (panics after 20 s with the session).
    pub(crate) async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.session(id).await;
            if s["run"]["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} never reached {state}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of a session.
    pub(crate) async fn events(&self, id: &str) -> Vec<Value> {
        let (s, v) = self
            .get(&format!("/api/v1/sessions/{id}/events?limit=1000"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }
}

pub(crate) fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}
