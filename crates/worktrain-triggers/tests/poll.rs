//! Polls against the fake GitHub API: the first poll remembers without dispatching, a new
//! item dispatches once, an unchanged listing is a `304`, updates fire only with
//! `on_update`, the same item seen by another trigger is a duplicate, rate limits are
//! recorded and back the poll off, and a closed item's session is reconciled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Value, json};
use worktrain_core::run::{ReconcileAction, RunState, SourceRef};
use worktrain_store::SqliteStore;
use worktrain_store::sqlite::SqliteOptions;
use worktrain_store::triggers::{DecisionFilter, PollCursor, TriggerStore};
use worktrain_testkit::forge::Fault;
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_triggers::config::load;
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::runtime::{DispatchSpec, Host, HostError, Runtime, SystemClock};

#[derive(Default)]
struct TestHost {
    dispatched: Mutex<Vec<DispatchSpec>>,
    keys: Mutex<HashMap<String, String>>,
    states: Mutex<HashMap<String, RunState>>,
    ineligible: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Host for TestHost {
    async fn dispatch(&self, spec: &DispatchSpec) -> Result<(String, bool), HostError> {
        let mut keys = self.keys.lock().unwrap();
        if let Some(id) = keys.get(&spec.idempotency_key) {
            return Ok((id.clone(), false));
        }
        let mut d = self.dispatched.lock().unwrap();
        d.push(spec.clone());
        let id = format!("ses_{}", d.len());
        keys.insert(spec.idempotency_key.clone(), id.clone());
        self.states
            .lock()
            .unwrap()
            .insert(id.clone(), RunState::Running);
        Ok((id, true))
    }
    async fn run_state(&self, s: &str) -> Result<Option<RunState>, HostError> {
        Ok(self.states.lock().unwrap().get(s).copied())
    }
    async fn queued(&self, _t: &str) -> Result<usize, HostError> {
        Ok(0)
    }
    async fn source_ineligible(
        &self,
        session: &str,
        _s: &SourceRef,
        _t: &str,
        reason: &str,
        _a: ReconcileAction,
    ) -> Result<(), HostError> {
        self.ineligible
            .lock()
            .unwrap()
            .push((session.into(), reason.into()));
        self.states
            .lock()
            .unwrap()
            .insert(session.into(), RunState::Cancelled);
        Ok(())
    }
    fn set_trigger_caps(&self, _caps: BTreeMap<String, usize>) {}
}

fn issue(n: u64, updated: &str) -> Value {
    json!({"number": n, "title": format!("Bug {n}"), "state": "open", "updated_at": updated,
           "labels": [{"name": "worktrain"}], "assignees": []})
}

async fn kinds(store: &SqliteStore, trigger: &str) -> Vec<String> {
    let mut d = store
        .decisions(&DecisionFilter {
            trigger_id: Some(trigger.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    d.reverse();
    d.into_iter().map(|d| d.body.decision).collect()
}

async fn due_now(store: &SqliteStore, trigger: &str) {
    let mut c = store
        .poll_cursor(trigger)
        .await
        .unwrap()
        .unwrap_or(PollCursor {
            trigger_id: trigger.into(),
            ..Default::default()
        });
    c.next_poll_at_ms = None;
    store.put_poll_cursor(&c).await.unwrap();
}

#[tokio::test]
async fn polls_remember_dispatch_dedupe_back_off_and_reconcile() {
    let fake = FakeGithub::start().await.unwrap();
    fake.set_items(
        "o/r",
        vec![
            issue(1, "2024-01-01T00:00:00Z"),
            issue(2, "2024-01-01T00:00:00Z"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let host = Arc::new(TestHost::default());
    let yml = format!(
        "version: 1
identities:
  bot: {{github: {{token: t0k, api_url: '{api}'}}}}
triggers:
  - id: poll
    identity: bot
    workflow: coding-task
    goal: 'Fix #{{{{ $.issue.number }}}}: {{{{ $.issue.title }}}}'
    source: {{github_poll: {{repository: o/r, labels: [worktrain], interval: 1m}}}}
  - id: backup
    enabled: false
    identity: bot
    workflow: coding-task
    goal: '{{{{ $.issue.title }}}}'
    source: {{github_poll: {{repository: o/r, labels: [worktrain], interval: 1m, replay_existing: true}}}}
",
        api = fake.base_url()
    );
    let rt = Runtime::new(
        store.clone(),
        host.clone(),
        Arc::new(SystemClock),
        None,
        EnvSource::default(),
    );
    rt.install(load("t.yml", &yml, &EnvSource::default()).unwrap());

    // First poll: remembered, not dispatched.
    rt.poll_due().await;
    assert_eq!(kinds(&store, "poll").await, ["poll_baseline"]);
    assert!(host.dispatched.lock().unwrap().is_empty());
    // Not due again before the interval.
    let n = fake.requests().len();
    rt.poll_due().await;
    assert_eq!(fake.requests().len(), n);

    // A new issue dispatches once, with the goal from the payload.
    fake.set_items(
        "o/r",
        vec![
            issue(1, "2024-01-01T00:00:00Z"),
            issue(2, "2024-01-01T00:00:00Z"),
            issue(3, "2024-01-02T00:00:00Z"),
        ],
    );
    due_now(&store, "poll").await;
    rt.poll_due().await;
    {
        let d = host.dispatched.lock().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].goal, "Fix #3: Bug 3");
        assert_eq!(d[0].source.as_ref().unwrap().as_str(), "github:o/r#3");
    }
    // Unchanged: a conditional request answered 304; nothing dispatched.
    due_now(&store, "poll").await;
    rt.poll_due().await;
    let last = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.starts_with("/repos/o/r/issues?"))
        .unwrap();
    assert!(last.header("if-none-match").is_some(), "{last:?}");
    assert_eq!(host.dispatched.lock().unwrap().len(), 1);
    // An update does not fire again without on_update.
    fake.update_item("o/r", 3, |v| {
        v["updated_at"] = json!("2024-01-03T00:00:00Z")
    });
    due_now(&store, "poll").await;
    rt.poll_due().await;
    assert_eq!(host.dispatched.lock().unwrap().len(), 1);

    // Another trigger seeing the same item while its session runs: duplicate.
    let yml2 = yml.replace("    enabled: false\n", "");
    rt.install(load("t.yml", &yml2, &EnvSource::default()).unwrap());
    rt.poll_due().await;
    let backup = kinds(&store, "backup").await;
    assert!(backup.contains(&"duplicate".to_string()), "{backup:?}");
    assert_eq!(
        backup.iter().filter(|k| *k == "dispatched").count(),
        2,
        "#1 and #2 are new to it: {backup:?}"
    );

    // A rate limit is recorded and backs the poll off.
    fake.fail_next(Fault::SecondaryRateLimit { retry_after: 120 });
    due_now(&store, "poll").await;
    rt.poll_due().await;
    assert_eq!(
        kinds(&store, "poll").await.last().map(String::as_str),
        Some("poll_failed")
    );
    let c = store.poll_cursor("poll").await.unwrap().unwrap();
    assert!(c.next_poll_at_ms.unwrap() > chrono_now() + 100_000, "{c:?}");
    assert!(c.last_error.unwrap().contains("rate limited"));

    // The issue is closed: its session is reconciled (cancelled), on both sides.
    fake.update_item("o/r", 3, |v| v["state"] = json!("closed"));
    due_now(&store, "poll").await;
    rt.poll_due().await;
    let inel = host.ineligible.lock().unwrap().clone();
    assert_eq!(
        inel,
        vec![("ses_1".to_string(), "it was closed".to_string())]
    );
    assert!(
        kinds(&store, "poll")
            .await
            .contains(&"reconciled".to_string())
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
