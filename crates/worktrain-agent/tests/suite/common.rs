//! Shared test helpers: fake step drivers, client and agent builders.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use worktrain_agent::llm::HttpLlmClient;
use worktrain_agent::{
    AgentPolicy, ApiKeySource, DriverError, LlmAgent, LlmAgentConfig, LlmClient, LlmConfig,
    Provider, RetryPolicy, Secret, StepBrief, StepDriver, StepResult, StepStatus, Submission,
};
use worktrain_core::event::{Blocker, BlockerCode};

/// The step token the fake driver "holds"; it must never reach the model.
pub(crate) const TOKEN: &str = "wt1.eyJzZXNzaW9uIjoic2VzXzAxIn0.c2VjcmV0LXNpZ25hdHVyZS10YWc";
/// The fake API key.
pub(crate) const API_KEY: &str = "test-key-0123456789";

/// One step of the fake workflow.
#[derive(Debug, Clone)]
pub(crate) struct FakeStep {
    pub title: String,
    pub prompt: String,
    /// The artifact kind the step requires, if any.
    pub artifact: Option<String>,
    /// Park (gate) after this step is accepted.
    pub park: bool,
}

impl FakeStep {
    pub(crate) fn new(title: &str, prompt: &str) -> Self {
        Self {
            title: title.into(),
            prompt: prompt.into(),
            artifact: None,
            park: false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    index: usize,
    attempt: u32,
    blockers: Vec<Blocker>,
    submissions: Vec<Submission>,
    parked: bool,
}

/// A StepDriver over a list of steps: notes are required, artifacts per step.
#[derive(Debug)]
pub(crate) struct FakeDriver {
    steps: Vec<FakeStep>,
    state: Mutex<State>,
}

impl FakeDriver {
    pub(crate) fn new(steps: Vec<FakeStep>) -> Arc<Self> {
        Arc::new(Self {
            steps,
            state: Mutex::new(State {
                attempt: 1,
                ..State::default()
            }),
        })
    }

    pub(crate) fn submissions(&self) -> Vec<Submission> {
        self.state.lock().unwrap().submissions.clone()
    }

    fn brief(&self, st: &State) -> StepBrief {
        let s = &self.steps[st.index];
        let mut b = StepBrief::new(format!("{}#{}", st.index, st.attempt), &s.title, &s.prompt);
        b.index = st.index as u32 + 1;
        b.total = self.steps.len() as u32;
        b.blockers = st.blockers.clone();
        if let Some(kind) = &s.artifact {
            b.contract = Some(worktrain_agent::ContractBrief {
                name: kind.clone(),
                required: true,
                example: serde_json::json!({"kind": kind, "verdict": "clean", "findings": []}),
            });
        }
        b
    }
}

#[async_trait]
impl StepDriver for FakeDriver {
    async fn current(&self) -> Result<StepStatus, DriverError> {
        let st = self.state.lock().unwrap();
        if st.parked {
            return Ok(StepStatus::Parked);
        }
        if st.index >= self.steps.len() {
            return Ok(StepStatus::Complete);
        }
        Ok(StepStatus::Active(Box::new(self.brief(&st))))
    }

    async fn complete_step(&self, output: Submission) -> Result<StepResult, DriverError> {
        let mut st = self.state.lock().unwrap();
        st.submissions.push(output.clone());
        let step = self.steps[st.index].clone();
        let mut blockers = Vec::new();
        if output.notes.as_deref().unwrap_or("").trim().is_empty() {
            blockers.push(Blocker {
                code: BlockerCode::NotesRequired,
                message: "notes are required for this step".into(),
                path: None,
                example: None,
            });
        }
        if let Some(kind) = &step.artifact {
            let found = output
                .artifacts
                .iter()
                .any(|a| a.get("kind").and_then(|k| k.as_str()) == Some(kind.as_str()));
            if !found {
                blockers.push(Blocker {
                    code: BlockerCode::ArtifactMissing,
                    message: format!("the step requires a {kind} artifact"),
                    path: None,
                    example: Some(serde_json::json!({"kind": kind, "verdict": "clean"})),
                });
            }
        }
        if !blockers.is_empty() {
            st.attempt += 1;
            st.blockers = blockers.clone();
            return Ok(StepResult::Blocked(blockers));
        }
        st.blockers.clear();
        st.index += 1;
        st.attempt = 1;
        if step.park {
            st.parked = true;
            return Ok(StepResult::Parked);
        }
        if st.index >= self.steps.len() {
            return Ok(StepResult::Complete);
        }
        Ok(StepResult::Advanced(Box::new(self.brief(&st))))
    }
}

/// A driver whose progress is a file an external script appends to (one line per
/// accepted step): the "stub" an external agent drives.
#[derive(Debug)]
pub(crate) struct FileDriver {
    pub dir: PathBuf,
    pub steps: usize,
}

impl FileDriver {
    pub(crate) fn advances(&self) -> usize {
        std::fs::read_to_string(self.dir.join("advances"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

#[async_trait]
impl StepDriver for FileDriver {
    async fn current(&self) -> Result<StepStatus, DriverError> {
        let n = self.advances();
        if n >= self.steps {
            return Ok(StepStatus::Complete);
        }
        let mut b = StepBrief::new(
            format!("{n}#1"),
            format!("Step {}", n + 1),
            format!("Do part {} of the task.", n + 1),
        );
        b.index = n as u32 + 1;
        b.total = self.steps as u32;
        Ok(StepStatus::Active(Box::new(b)))
    }

    async fn complete_step(&self, _output: Submission) -> Result<StepResult, DriverError> {
        Err(DriverError::Failed(
            "external agents advance through MCP".into(),
        ))
    }
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

pub(crate) fn llm_config(base: &str, provider: Provider, stream: bool) -> LlmConfig {
    let mut c = LlmConfig::new(
        provider,
        "fake-model",
        ApiKeySource::Value(Secret::new(API_KEY)),
    );
    c.base_url = Some(base.to_owned());
    c.stream = stream;
    c.timeout = Duration::from_secs(10);
    c.retry = fast_retry();
    c.max_tokens = 1024;
    c
}

pub(crate) fn client(base: &str, provider: Provider, stream: bool) -> Arc<dyn LlmClient> {
    let c = llm_config(base, provider, stream);
    Arc::new(HttpLlmClient::new(c).unwrap())
}

pub(crate) fn agent_config() -> LlmAgentConfig {
    LlmAgentConfig {
        heartbeat_interval: Duration::from_millis(50),
        policy: AgentPolicy::default(),
        ..LlmAgentConfig::default()
    }
}

pub(crate) fn agent(base: &str, provider: Provider, stream: bool) -> LlmAgent {
    LlmAgent::from_llm_config(&llm_config(base, provider, stream), agent_config()).unwrap()
}

pub(crate) fn worktree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/config"), "[core]\n").unwrap();
    dir
}

pub(crate) fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Whether a process whose command line holds `marker` as one argument (e.g. the
/// `30.11` of `sleep 30.11`) is still alive (not gone, not a zombie) after a grace second:
/// a killed orphan is reaped asynchronously. Sandboxed commands live in their own PID
/// namespace, so a `$!` they print means nothing out here; their arguments do.
pub(crate) fn alive(marker: &str) -> bool {
    let marker = marker.trim();
    let running = || {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.flatten().any(|e| {
            let p = e.path();
            let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
                return false;
            };
            if !cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
                return false;
            }
            std::fs::read_to_string(p.join("stat")).is_ok_and(|stat| {
                // The state follows the parenthesised command name.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            })
        })
    };
    for _ in 0..50 {
        if !running() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// Await a spawned run that must end without waiting out what it was stuck on (a stalled
/// LLM call, a long-sleeping tool). The bound only keeps a broken cancellation from
/// hanging the suite; how fast a run ends is measured by the benchmarks, not here.
pub(crate) async fn finishes<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the run did not end: cancellation did not interrupt it")
        .unwrap()
}
