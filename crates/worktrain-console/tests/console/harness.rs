//! A real daemon in-process (home, SQLite store, engine, supervisor with the LLM agent
//! talking to the testkit's fake LLM, the HTTP server with the console on 127.0.0.1:0),
//! and a real headless Chromium driven over WebDriver (`chromedriver`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worktrain_agent::{
    AgentRunner, ApiKeySource, LlmAgent, LlmAgentConfig, LlmConfig, Provider, RetryPolicy, Secret,
};
use worktrain_config::{API_TOKEN_FILE, DaemonSettings, Home};
use worktrain_daemon::auth::ApiToken;
use worktrain_daemon::server::Server;
use worktrain_daemon::supervisor::Supervisor;
use worktrain_daemon::triggers::SupervisorHost;
use worktrain_engine::Engine;
use worktrain_testkit::{FakeLlm, FakeLlmHandle, Route, Script, ToolCall, Turn};
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::runtime::{Runtime, SystemClock};

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

/// A turn completing the current step with `notes`.
pub(crate) fn complete(notes: &str) -> Turn {
    Turn::tool("complete_step", json!({"notes": notes}))
}

/// A turn that waits `ms`, then runs a harmless shell command (the run stays busy).
pub(crate) fn slow_shell(ms: u64) -> Turn {
    Turn::Delay {
        ms,
        then: Box::new(Turn::tools(vec![ToolCall::new(
            "shell",
            json!({"command": "true"}),
        )])),
    }
}

/// Requests whose prompt contains `goal` play `turns`.
pub(crate) fn route(goal: &str, turns: Vec<Turn>) -> Route {
    Route {
        contains: goal.to_owned(),
        turns,
    }
}

pub(crate) struct Daemon {
    _dir: tempfile::TempDir,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub sup: Arc<Supervisor>,
    /// The trigger runtime, when started with triggers.
    pub triggers: Option<Arc<Runtime>>,
    /// The daemon's home.
    pub home_dir: PathBuf,
    _fake: FakeLlmHandle,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
    sup_task: Option<JoinHandle<()>>,
}

fn agent(base: &str) -> Arc<dyn AgentRunner> {
    let mut c = LlmConfig::new(
        Provider::Anthropic,
        "fake-model",
        ApiKeySource::Value(Secret::new("k-test")),
    );
    c.base_url = Some(base.to_owned());
    c.timeout = Duration::from_secs(20);
    c.retry = RetryPolicy {
        max_retries: 0,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    };
    c.max_tokens = 1024;
    let cfg = LlmAgentConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..LlmAgentConfig::default()
    };
    Arc::new(LlmAgent::from_llm_config(&c, cfg).expect("agent"))
}

impl Daemon {
    /// A daemon whose agent plays `routes`.
    pub(crate) async fn start(routes: Vec<Route>) -> Self {
        Self::start_with(routes, false).await
    }

    /// [`Daemon::start`], with session worktrees (and step snapshots) when `worktrees`.
    pub(crate) async fn start_with(routes: Vec<Route>, worktrees: bool) -> Self {
        Self::boot(routes, worktrees, None, None, true).await
    }

    /// [`Daemon::start`], with the trigger runtime over `triggers_yml` (written to the
    /// home's `triggers.yml`).
    pub(crate) async fn start_with_triggers(routes: Vec<Route>, triggers_yml: &str) -> Self {
        Self::boot(routes, false, Some(triggers_yml), None, true).await
    }

    /// Stop gracefully (running sessions' runs are interrupted), then start again on the
    /// same home with a new agent playing `routes` — its supervisor held: the console and
    /// API serve, but nothing recovers or claims runs (so an interrupted run stays
    /// interrupted) until [`Daemon::release`].
    pub(crate) async fn restart_held(self, routes: Vec<Route>) -> Self {
        let Daemon {
            _dir: dir,
            sup,
            stop,
            server,
            sup_task,
            ..
        } = self;
        sup.shutdown();
        stop.cancel();
        if let Some(t) = sup_task {
            let _ = t.await;
        }
        if let Some(t) = server {
            let _ = t.await;
        }
        Self::boot(routes, false, None, Some(dir), false).await
    }

    /// Start a held supervisor: it recovers runs, then schedules as usual.
    pub(crate) fn release(&mut self) {
        assert!(self.sup_task.is_none(), "the supervisor already runs");
        self.sup_task = Some(tokio::spawn(self.sup.clone().run()));
    }

    async fn boot(
        routes: Vec<Route>,
        worktrees: bool,
        triggers_yml: Option<&str>,
        reuse: Option<tempfile::TempDir>,
        supervise: bool,
    ) -> Self {
        let dir = reuse.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let home = Home::locate(Some(dir.path().join("home"))).expect("home");
        home.init().expect("init");
        for (name, text) in [("two.yaml", TWO_STEP), ("gated.yaml", GATED)] {
            std::fs::write(home.path("workflows").join(name), text).expect("workflow");
        }
        let (base_llm, fake) = FakeLlm::start(Script {
            routes,
            ..Script::default()
        })
        .await
        .expect("fake llm");
        let config = home.config().expect("config");
        let store = home.open_store(&config, None).await.expect("store");
        let mut settings = DaemonSettings::default();
        settings.worktrees.enabled = worktrees;
        settings.worktrees.remote = String::new();
        settings.worktrees.base_branch = "main".into();
        settings.lease_secs = 3;
        let engine = Arc::new(
            Engine::new(
                store.clone(),
                home.keyring().expect("keyring"),
                config.limits,
            )
            .with_worktrees(worktrain_engine::SessionWorktrees::new(
                settings.worktrees.clone(),
                home.root(),
            )),
        );
        let mut agents = BTreeMap::new();
        agents.insert("default".to_owned(), agent(&base_llm));
        let sup = Supervisor::new(
            engine,
            settings,
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
        .with_extension(worktrain_console::extension());
        let mut triggers = None;
        let server = match triggers_yml {
            Some(yml) => {
                let file = home.root().join("triggers.yml");
                std::fs::write(&file, yml).expect("triggers.yml");
                let rt = Runtime::new(
                    store,
                    SupervisorHost::new(sup.clone()),
                    Arc::new(SystemClock),
                    Some(file),
                    EnvSource::Process,
                );
                assert!(rt.status().error.is_none(), "{:?}", rt.status().error);
                triggers = Some(rt.clone());
                server.with_triggers(rt)
            }
            None => server,
        };
        let addr = server.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let server_task = tokio::spawn(async move {
            let _ = server.run(async move { s2.cancelled().await }).await;
        });
        let sup_task = supervise.then(|| tokio::spawn(sup.clone().run()));
        Self {
            _dir: dir,
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            sup,
            triggers,
            home_dir: home.root().to_path_buf(),
            _fake: fake,
            stop,
            server: Some(server_task),
            sup_task,
        }
    }

    pub(crate) async fn stop(mut self) {
        self.sup.shutdown();
        self.stop.cancel();
        if let Some(t) = self.sup_task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.server.take() {
            let _ = t.await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An API call with the bearer token.
    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
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
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Dispatch a session through the API; its id.
    pub(crate) async fn spawn(&self, workflow: &str, goal: &str) -> String {
        self.spawn_in(workflow, goal, None).await
    }

    /// Dispatch a session into `workspace`; its id.
    pub(crate) async fn spawn_in(
        &self,
        workflow: &str,
        goal: &str,
        workspace: Option<&str>,
    ) -> String {
        let (s, v) = self
            .api(
                reqwest::Method::POST,
                "/api/v1/sessions",
                Some(json!({"workflow": workflow, "goal": goal, "workspace": workspace})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["session_id"].as_str().expect("id").to_owned()
    }

    pub(crate) async fn session(&self, id: &str) -> Value {
        let (s, v) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Wait until the run reaches `state` (panics after 30 s).
    pub(crate) async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.session(id).await;
            if s["run"]["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {state}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The kinds of a session's events.
    pub(crate) async fn event_kinds(&self, id: &str) -> Vec<String> {
        let (s, v) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}/events?limit=1000"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["body"]["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Log in over plain HTTP (the login form): (session cookie header, CSRF token).
    pub(crate) async fn http_login(&self) -> (String, String) {
        let page = self
            .http
            .get(self.url("/console/login"))
            .send()
            .await
            .expect("login page");
        let pre_cookie = set_cookie(&page, "wt_login").expect("login cookie");
        let html = page.text().await.expect("text");
        let pre = hidden(&html, "csrf").expect("login csrf");
        let resp = self
            .http
            .post(self.url("/console/login"))
            .header("cookie", format!("wt_login={pre_cookie}"))
            .form(&[
                ("csrf", pre.as_str()),
                ("token", self.token.as_str()),
                ("next", "/console/sessions"),
            ])
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = format!(
            "wt_console={}",
            set_cookie(&resp, "wt_console").expect("session cookie")
        );
        let page = self
            .http
            .get(self.url("/console/sessions"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("text");
        let csrf = hidden(&html, "csrf").expect("csrf");
        (cookie, csrf)
    }
}

/// A git repository with one commit on `main`.
pub(crate) fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README"), "hello\n").expect("readme");
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "init"]);
    dir
}

/// An authenticated GET of a console page: (status, body).
pub(crate) async fn page(d: &Daemon, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = d
        .http
        .get(d.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    let status = r.status();
    (status, r.text().await.expect("body"))
}

/// The value of cookie `name` set by `resp`.
pub(crate) fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (k, val) = first.split_once('=')?;
            (k.trim() == name).then(|| val.to_owned())
        })
}

/// The value of the hidden input `name` in `html`.
pub(crate) fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let i = html.find(&marker)? + marker.len();
    let j = html[i..].find('"')?;
    Some(html[i..i + j].to_owned())
}

/// Poll `f` until it returns `Some`, for up to `secs`.
pub(crate) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Browsers run one at a time (two cores).
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where Chromium and chromedriver are: `WORKTRAIN_CHROMIUM` / `WORKTRAIN_CHROMEDRIVER`,
/// else Debian's `/usr/bin/chromium` and `/usr/bin/chromedriver`.
fn browser_paths() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("WORKTRAIN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let driver = std::env::var_os("WORKTRAIN_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    (chromium.exists() && driver.exists()).then_some((chromium, driver))
}

/// `WORKTRAIN_TEST_BROWSER=skip` says this machine has no Chromium; without it, the
/// browser tests fail when Chromium is missing (CI installs it and never skips).
pub(crate) const SKIP_ENV: &str = "WORKTRAIN_TEST_BROWSER";

/// Screenshots go to `target/console-screenshots/` (CI keeps them as artifacts).
pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A headless Chromium session. chromedriver runs in a process group of its own, which
/// the browser processes it starts inherit; dropping this (also while a test panics)
/// kills the whole group, so no Chromium outlives its test.
pub(crate) struct Browser {
    pub c: Client,
    /// chromedriver's pid: also its process group id.
    pub group: u32,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// A fresh browser (empty profile), or `None` when Chromium is absent and
    /// `WORKTRAIN_TEST_BROWSER=skip`.
    pub(crate) async fn start() -> Option<Self> {
        let Some((chromium, driver)) = browser_paths() else {
            if std::env::var(SKIP_ENV).as_deref() == Ok("skip") {
                eprintln!("skipping: no Chromium here and {SKIP_ENV}=skip");
                return None;
            }
            panic!(
                "the console's browser tests need Chromium and chromedriver \
                 (Debian: `apt-get install chromium chromium-driver`; or set WORKTRAIN_CHROMIUM \
                 and WORKTRAIN_CHROMEDRIVER); set {SKIP_ENV}=skip to skip them on this machine"
            );
        };
        let turn = BROWSER_LOCK.lock().await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let group = child.id().expect("chromedriver pid");
        let profile = tempfile::tempdir().expect("profile");
        let caps: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }))
        .expect("caps");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = loop {
            let mut b = ClientBuilder::new(HttpConnector::new());
            b.capabilities(caps.clone());
            match b.connect(&url).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot start Chromium: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Some(Self {
            c,
            group,
            _driver: child,
            _profile: profile,
            _turn: turn,
        })
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.c.goto(url).await.expect("goto");
    }

    pub(crate) async fn path(&self) -> String {
        let u = self.c.current_url().await.expect("url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Text of the first element matching `css` (empty when there is none).
    pub(crate) async fn text(&self, css: &str) -> String {
        match self.c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.expect("execute")
    }

    /// Log in through the login form (we are on it, or get sent to it).
    pub(crate) async fn login(&self, d: &Daemon) {
        if !self.path().await.starts_with("/console/login") {
            self.goto(&d.url("/console/login")).await;
        }
        let field = self
            .c
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("token field");
        field.send_keys(&d.token).await.expect("type");
        self.c
            .find(Locator::Css("form button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        eventually(10, "the login to finish", || async {
            (!self.path().await.starts_with("/console/login")).then_some(())
        })
        .await;
    }

    /// Open the `<details>` of an action, fill its field and confirm. Live updates may
    /// replace the section until the form is open (then they wait), so a stale element
    /// means: start again.
    pub(crate) async fn act(&self, action: &str, field: Option<&str>) {
        for _ in 0..10 {
            match self.try_act(action, field).await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{action}: {e}"),
            }
        }
        panic!("{action}: the page kept changing under the form");
    }

    async fn try_act(
        &self,
        action: &str,
        field: Option<&str>,
    ) -> Result<(), fantoccini::error::CmdError> {
        let details = self
            .c
            .find(Locator::Css(&format!("details.a-{action}")))
            .await?;
        if details.attr("open").await?.is_none() {
            details.find(Locator::Css("summary")).await?.click().await?;
        }
        if let Some(text) = field {
            let input = details.find(Locator::Css(&format!("#f-{action}"))).await?;
            input.clear().await?;
            input.send_keys(text).await?;
        }
        details
            .find(Locator::Css(&format!("button.confirm-{action}")))
            .await?
            .click()
            .await
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write");
    }

    pub(crate) async fn close(self) {
        let _ = self.c.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.group);
    }
}

/// SIGKILL to every process of group `pgid` (chromedriver and the browsers it started).
pub(crate) fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The live processes of group `pgid` (from `/proc`), zombies excluded.
pub(crate) fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may contain spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() > 2 && rest[0] != "Z" && rest[2].parse::<u32>().ok() == Some(pgid) {
            out.push((pid, comm));
        }
    }
    out
}
