//! The workflows pages' numbers (runs, success rate, p50/p95 duration, tokens,
//! blocked-attempt rate) against a known set of sessions, with an oracle computed from the
//! sessions' raw event logs.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use worktrain_core::activity::AgentActivity;
use worktrain_core::event::EventBody;
use worktrain_core::ids::{Seq, SessionId};
use worktrain_testkit::Turn;

use crate::harness::{Daemon, complete, page, route};

/// The numbers of one row, read from the page's data attributes.
fn row(html: &str, key: &str) -> BTreeMap<String, String> {
    let marker = format!("data-stats=\"{key}\"");
    let i = html.find(&marker).unwrap_or_else(|| panic!("no row {key}"));
    let end = i + html[i..].find('>').expect("tag end");
    let tag = &html[i..end];
    let mut out = BTreeMap::new();
    for part in tag.split(" data-") {
        if let Some((k, v)) = part.split_once("=\"") {
            out.insert(
                k.trim_start_matches("data-").to_owned(),
                v.trim_end_matches('"').to_owned(),
            );
        }
    }
    out
}

fn nearest_rank(v: &mut [i64], p: usize) -> String {
    v.sort_unstable();
    if v.is_empty() {
        return String::new();
    }
    // The smallest value with at least p% of the values at or below it.
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1].to_string()
}

/// What one step should show, from the raw events.
#[derive(Default, Debug)]
struct Expect {
    runs: u64,
    succeeded: u64,
    failed: u64,
    durations: Vec<i64>,
    tokens: u64,
    attempts: u64,
    blocked: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_numbers_match_the_sessions() {
    let d = Daemon::start(vec![
        // Two steps, one attempt each.
        route(
            "goal-alpha",
            vec![complete("planned alpha"), complete("built alpha")],
        ),
        // The plan's first attempt has no notes: blocked, then accepted.
        route(
            "goal-beta",
            vec![
                complete(""),
                complete("planned beta"),
                complete("built beta"),
            ],
        ),
        // The plan passes, then the model fails: the run fails at `build`.
        route(
            "goal-gamma",
            vec![
                complete("planned gamma"),
                Turn::Error {
                    status: 400,
                    retry_after: None,
                    message: Some("model refused".into()),
                },
            ],
        ),
    ])
    .await;
    let alpha = d.spawn("two", "goal-alpha").await;
    let beta = d.spawn("two", "goal-beta").await;
    let gamma = d.spawn("two", "goal-gamma").await;
    d.wait_state(&alpha, "completed").await;
    d.wait_state(&beta, "completed").await;
    d.wait_state(&gamma, "failed").await;
    // A session of another workflow is not counted.
    d.spawn("gated", "goal-other").await;

    // The oracle: replay the raw event logs.
    let store = d.sup.engine().store();
    let mut steps: BTreeMap<String, Expect> = BTreeMap::new();
    let mut wf_durations = Vec::new();
    let mut wf_tokens = 0u64;
    for (id, failed_run) in [(&alpha, false), (&beta, false), (&gamma, true)] {
        let sid: SessionId = id.parse().unwrap();
        let events = store.events(sid, Seq(0), 10_000).await.unwrap();
        let created = events[0].created_at_ms;
        let mut open: Option<(String, i64)> = None;
        let mut last_close = None;
        let mut completed_workflow = false;
        for e in &events {
            match &e.body {
                EventBody::NodeEntered { step_id, .. } => {
                    steps.entry(step_id.as_str().to_owned()).or_default().runs += 1;
                    open = Some((step_id.as_str().to_owned(), e.created_at_ms));
                }
                EventBody::StepBlocked { .. } => {
                    let (step, _) = open.as_ref().unwrap();
                    let x = steps.get_mut(step).unwrap();
                    x.attempts += 1;
                    x.blocked += 1;
                }
                EventBody::StepCompleted { .. } => {
                    let (step, at) = open.take().unwrap();
                    let x = steps.get_mut(&step).unwrap();
                    x.attempts += 1;
                    x.succeeded += 1;
                    x.durations.push(e.created_at_ms - at);
                    last_close = Some(e.created_at_ms);
                }
                EventBody::SessionCompleted { .. } => completed_workflow = true,
                EventBody::AgentActivity {
                    activity: AgentActivity::LlmTurn(t),
                } => {
                    let n = t.usage.input_tokens + t.usage.output_tokens;
                    wf_tokens += n;
                    if let Some((step, _)) = &open {
                        steps.get_mut(step).unwrap().tokens += n;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(completed_workflow, !failed_run, "{id}");
        if failed_run {
            let (step, _) = open.expect("gamma stopped inside a step");
            steps.get_mut(&step).unwrap().failed += 1;
        } else {
            wf_durations.push(last_close.unwrap() - created);
        }
    }
    // The known shape of the set.
    let plan = &steps["plan"];
    assert_eq!(
        (
            plan.runs,
            plan.succeeded,
            plan.failed,
            plan.attempts,
            plan.blocked
        ),
        (3, 3, 0, 4, 1)
    );
    let build = &steps["build"];
    assert_eq!(
        (
            build.runs,
            build.succeeded,
            build.failed,
            build.attempts,
            build.blocked
        ),
        (3, 2, 1, 2, 0)
    );
    assert!(plan.tokens > 0 && build.tokens > 0 && wf_tokens > 0);

    let (cookie, _) = d.http_login().await;
    let (status, html) = page(&d, &cookie, "/console/workflows/two").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("3 sessions in all"), "{html}");

    let wf = row(&html, "workflow");
    assert_eq!(wf["runs"], "3");
    assert_eq!(wf["succeeded"], "2");
    assert_eq!(wf["failed"], "1");
    assert_eq!(wf["success"], "0.6667");
    assert_eq!(wf["p50-ms"], nearest_rank(&mut wf_durations.clone(), 50));
    assert_eq!(wf["p95-ms"], nearest_rank(&mut wf_durations, 95));
    assert_eq!(wf["tokens"], wf_tokens.to_string());
    assert_eq!(
        (wf["attempts"].as_str(), wf["blocked"].as_str()),
        ("6", "1")
    );
    assert_eq!(wf["blocked-rate"], "0.1667");

    for (step, rate, blocked_rate) in [("plan", "1.0000", "0.2500"), ("build", "0.6667", "0.0000")]
    {
        let x = steps.get_mut(step).unwrap();
        let r = row(&html, step);
        assert_eq!(r["runs"], x.runs.to_string(), "{step}");
        assert_eq!(r["succeeded"], x.succeeded.to_string(), "{step}");
        assert_eq!(r["failed"], x.failed.to_string(), "{step}");
        assert_eq!(r["success"], rate, "{step}");
        assert_eq!(r["p50-ms"], nearest_rank(&mut x.durations, 50), "{step}");
        assert_eq!(r["p95-ms"], nearest_rank(&mut x.durations, 95), "{step}");
        assert_eq!(r["tokens"], x.tokens.to_string(), "{step}");
        assert_eq!(r["attempts"], x.attempts.to_string(), "{step}");
        assert_eq!(r["blocked"], x.blocked.to_string(), "{step}");
        assert_eq!(r["blocked-rate"], blocked_rate, "{step}");
    }

    // The catalog: runs and success rate per workflow.
    let (status, html) = page(&d, &cookie, "/console/workflows").await;
    assert_eq!(status, StatusCode::OK);
    let i = html.find("/console/workflows/two\"").expect("two listed");
    let tail = &html[i..i + html[i..].find("</tr>").unwrap()];
    assert!(tail.contains(">3<") && tail.contains("66.7%"), "{tail}");
    d.stop().await;
}
