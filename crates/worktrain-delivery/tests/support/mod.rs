//! A real git setup (a bare remote on disk, a clone, a session branch in a linked
//! worktree) and an in-memory host that folds the recorded events with the same
//! projection the stores use.

#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use worktrain_core::event::{EventBody, StoredEvent};
use worktrain_core::ids::{Seq, SessionId, Sha256Hash, WorkflowId};
use worktrain_core::projection::{DeliveryInfo, SessionSummary, apply};
use worktrain_core::run::{DeliverySettings, ForgeKind, SourceRef, Trigger, TriggerKind};
use worktrain_delivery::{CommitFiles, ForgeAccess, Host, HostCommit, Job};

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote, a clone with `main`, and a session worktree on `worktrain/<id>`.
pub(crate) struct Repo {
    pub _tmp: tempfile::TempDir,
    pub remote: PathBuf,
    pub ws: PathBuf,
    pub wt: PathBuf,
    pub session: SessionId,
    pub branch: String,
}

impl Repo {
    pub(crate) fn new(files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(&ws, &["init", "-q", "-b", "main"]);
        for (p, c) in files {
            let f = ws.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, c).unwrap();
        }
        std::fs::write(ws.join("README.md"), "hello\n").unwrap();
        git(&ws, &["add", "-A"]);
        git(&ws, &["commit", "-q", "-m", "init"]);
        git(&ws, &["remote", "add", "origin", remote.to_str().unwrap()]);
        git(&ws, &["push", "-q", "origin", "main"]);
        let session = SessionId::from_parts(1_700_000_000_000, 42);
        let branch = format!("worktrain/{session}");
        let wt = tmp.path().join("wt");
        git(
            &ws,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                &branch,
                wt.to_str().unwrap(),
                "main",
            ],
        );
        Self {
            _tmp: tmp,
            remote,
            ws,
            wt,
            session,
            branch,
        }
    }

    /// The agent's edit.
    pub(crate) fn edit(&self, path: &str, content: &str) {
        let f = self.wt.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }

    pub(crate) fn job(&self, settings: DeliverySettings, source: Option<&str>) -> Job {
        Job {
            session: self.session,
            workflow: "coding-task".into(),
            goal: "Handle empty config files".into(),
            settings,
            source: source.map(|s| SourceRef::parse(s).unwrap()),
            repo_dir: self.ws.clone(),
            branch: Some(self.branch.clone()),
            base: "main".into(),
            console_url: Some(format!("http://127.0.0.1:7777/sessions/{}", self.session)),
        }
    }

    /// The remote's commit for the session branch.
    pub(crate) fn remote_head(&self) -> Option<String> {
        let out = Command::new("git")
            .current_dir(&self.remote)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{}", self.branch),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

pub(crate) fn handoff() -> Value {
    json!({
        "kind": "handoff",
        "commitType": "fix",
        "commitSubject": "handle empty config files",
        "prTitle": "Handle empty config files",
        "prBody": "Empty files used to panic the loader; they now produce a clear error.",
        "filesChanged": ["src/config.rs"],
        "followUps": ["document the error in docs/config.md"]
    })
}

/// Which record calls fail (to simulate a crash between an action and its record).
#[derive(Default)]
pub(crate) struct HostState {
    pub summary: Option<SessionSummary>,
    pub events: Vec<EventBody>,
    /// Fail the record of this many more events, then refuse all records ("crashed").
    pub crash_after_records: Option<usize>,
    pub commits: u32,
    /// More variables `secret` answers (name, value).
    pub secrets: Vec<(String, String)>,
}

pub(crate) struct MemHost {
    pub state: Mutex<HostState>,
    pub handoff: Option<Value>,
    pub wt: PathBuf,
    pub ws: PathBuf,
    pub forge: Option<ForgeAccess>,
}

impl MemHost {
    pub(crate) fn new(
        repo: &Repo,
        handoff: Option<Value>,
        forge: Option<ForgeAccess>,
    ) -> Arc<Self> {
        let h = Arc::new(Self {
            state: Mutex::new(HostState::default()),
            handoff,
            wt: repo.wt.clone(),
            ws: repo.ws.clone(),
            forge,
        });
        h.push(EventBody::SessionStarted {
            workflow_id: WorkflowId::new("coding-task").unwrap(),
            workflow_hash: Sha256Hash::ZERO,
            workflow_version: "1".into(),
            workflow_source: "bundled".into(),
            goal: "Handle empty config files".into(),
            workspace: Some(repo.ws.display().to_string()),
            branch: None,
            context: Map::new(),
            mode: Default::default(),
            parent: None,
        });
        h.push(EventBody::RunQueued {
            agent: "default".into(),
            trigger: Trigger::new(TriggerKind::Api, None),
            limits: Default::default(),
            priority: 0,
            readonly: false,
            base: None,
            dispatch_key: None,
        });
        h
    }

    fn push(&self, body: EventBody) {
        let mut st = self.state.lock().unwrap();
        let seq = Seq(st.events.len() as u64 + 1);
        let ev = StoredEvent {
            position: seq.0,
            session_id: SessionId::from_parts(1_700_000_000_000, 42),
            seq,
            created_at_ms: 1,
            idempotency_key: None,
            prev_hash: Sha256Hash::ZERO,
            hash: Sha256Hash::ZERO,
            body: body.clone(),
        };
        let (s, _) = apply(st.summary.take(), &ev).unwrap();
        st.summary = Some(s);
        st.events.push(body);
    }

    /// Restart: the recorded events stay, the crash switch goes.
    pub(crate) fn restart(&self) {
        self.state.lock().unwrap().crash_after_records = None;
    }

    pub(crate) fn kinds(&self) -> Vec<&'static str> {
        self.state
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| e.kind().as_str())
            .collect()
    }

    pub(crate) fn delivery_info(&self) -> Option<DeliveryInfo> {
        self.state
            .lock()
            .unwrap()
            .summary
            .as_ref()
            .and_then(|s| s.run.as_ref())
            .and_then(|r| r.delivery.clone())
    }
}

#[async_trait]
impl Host for MemHost {
    async fn delivery(&self) -> Result<Option<DeliveryInfo>, String> {
        Ok(self.delivery_info())
    }

    async fn record(&self, body: EventBody) -> Result<(), String> {
        {
            let mut st = self.state.lock().unwrap();
            if let Some(n) = st.crash_after_records.as_mut() {
                if *n == 0 {
                    return Err("crashed".into());
                }
                *n -= 1;
            }
        }
        self.push(body);
        Ok(())
    }

    async fn handoff(&self) -> Result<Option<Value>, String> {
        // A `review_comment` session's final artifact is its review.
        Ok(self.handoff.clone().filter(|h| !is_review(h)))
    }

    async fn review(&self) -> Result<Option<Value>, String> {
        Ok(self.handoff.clone().filter(is_review))
    }

    async fn commit(
        &self,
        message: Option<String>,
        files: CommitFiles,
    ) -> Result<HostCommit, String> {
        if !self.wt.exists() {
            return Ok(HostCommit::default());
        }
        // Staging only what is declared is enough here: the daemon's host (over
        // worktrain-git) also keeps the rest, which its own tests check.
        match &files {
            CommitFiles::All => {
                git(&self.wt, &["add", "-A"]);
            }
            CommitFiles::Declared(paths) => {
                for p in paths {
                    // A declared path that does not exist (and never did) matches nothing.
                    let _ = Command::new("git")
                        .current_dir(&self.wt)
                        .args(["add", "-A", "--", p])
                        .output();
                }
            }
        }
        if git(&self.wt, &["diff", "--cached", "--name-only"]).is_empty() {
            return Ok(HostCommit::default());
        }
        let msg = message.unwrap_or_else(|| "work".into());
        git(
            &self.wt,
            &[
                "commit",
                "-q",
                "-m",
                &msg,
                "--trailer",
                "Worktrain-Session: test",
            ],
        );
        self.state.lock().unwrap().commits += 1;
        Ok(HostCommit {
            commit: Some(git(&self.wt, &["rev-parse", "HEAD"])),
            ..HostCommit::default()
        })
    }

    async fn cleanup(&self) -> Result<(), String> {
        if self.wt.exists() {
            git(
                &self.ws,
                &["worktree", "remove", "--force", self.wt.to_str().unwrap()],
            );
        }
        Ok(())
    }

    fn secret(&self, var: &str) -> Option<String> {
        if var == "WT_DELIVERY_TEST_HOOK_SECRET" {
            return Some("s3cret".to_owned());
        }
        let st = self.state.lock().unwrap();
        st.secrets
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
    }

    fn forge(&self, _identity: Option<&str>, _forge: ForgeKind) -> Result<ForgeAccess, String> {
        self.forge
            .clone()
            .ok_or_else(|| "no forge identity is configured".to_owned())
    }
}

pub(crate) fn access(kind: ForgeKind, base: &str) -> ForgeAccess {
    let url = match kind {
        ForgeKind::Github => base.to_owned(),
        ForgeKind::Gitlab => format!("{base}/api/v4"),
    };
    ForgeAccess {
        client: worktrain_forge::connect(
            kind,
            Some(&url),
            worktrain_forge::Credentials::Token("t0ken".into()),
        )
        .unwrap(),
        push_token: None,
    }
}

pub(crate) fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/"
    ))
    .join(rel)
}

/// A review artifact (`pr_review`, or the `review_verdict` of the bundled mr-review).
fn is_review(a: &Value) -> bool {
    matches!(
        a.get("kind").and_then(Value::as_str),
        Some("pr_review" | "review_verdict")
    )
}

/// The recorded failure of a delivery that must have failed.
#[allow(dead_code)] // not every test binary that includes this module asks for it
pub(crate) fn failure(
    out: worktrain_delivery::Outcome,
) -> worktrain_core::projection::DeliveryFailure {
    match out {
        worktrain_delivery::Outcome::Failed(d) => {
            d.failure.expect("a failed delivery records its failure")
        }
        other => panic!("expected a failed delivery, got {other:?}"),
    }
}
