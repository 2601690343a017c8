//! The session page's delivery, pull request, retry-delivery action and loop marks.

use reqwest::StatusCode;
use serde_json::json;
use worktrain_core::projection::SessionSummary;
use worktrain_testkit::Turn;

use crate::harness::{Daemon, complete, git_repo, page, route};

const LOOPED: &str = "\
schemaVersion: 1
id: looped
name: Looped
description: a step run three times in a loop
version: '1'
steps:
  - id: polish
    title: Polish
    loop:
      for: 3
      maxIterations: 3
    steps:
      - id: pass
        title: Pass
        prompt: 'Polish {{goal}}'
  - id: wrap
    title: Wrap up
    prompt: 'Wrap up {{goal}}'
";

fn git(dir: &std::path::Path, args: &[&str]) {
    let st = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git");
    assert!(st.success(), "git {args:?}");
}

/// A push to a missing remote fails the delivery: the page lists each stage with its
/// result and the failure's message; after the remote is added, "retry delivery" from
/// the page (with the CSRF token) is recorded as an event and the delivery completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_is_shown_and_retried_from_the_page() {
    let repo = git_repo();
    let d = Daemon::start_with(
        vec![route(
            "deliver-goal",
            vec![
                Turn::tool(
                    "write_file",
                    json!({"path": "feature.txt", "content": "new feature\n"}),
                ),
                complete("planned"),
                complete("built"),
            ],
        )],
        true,
    )
    .await;
    let (s, v) = d
        .api(
            reqwest::Method::POST,
            "/api/v1/sessions",
            Some(json!({"workflow": "two", "goal": "deliver-goal",
                        "workspace": repo.path().to_str(),
                        "delivery": {"target": "commit_only", "remote": "backup"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["session_id"].as_str().unwrap().to_owned();
    let failed = d.wait_state(&id, "failed").await;
    assert_eq!(failed["run"]["delivery"]["state"], "failed", "{failed:#}");

    let (cookie, csrf) = d.http_login().await;
    let (st, html) = page(&d, &cookie, &format!("/console/sessions/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("data-delivery=\"failed\""), "{html}");
    for (stage, result) in [
        ("handoff", "done"),
        ("commit", "done"),
        ("secret_scan", "done"),
        ("push", "failed"),
        ("cleanup", "pending"),
    ] {
        assert!(
            html.contains(&format!("data-stage=\"{stage}\" data-result=\"{result}\"")),
            "{stage} {result}: {html}"
        );
    }
    assert!(
        html.contains("the workspace has no remote `backup`"),
        "the failure's message is shown: {html}"
    );
    assert!(html.contains("/actions/retry-delivery"), "{html}");

    // A retry without the CSRF token is refused and changes nothing.
    let before = d.event_kinds(&id).await.len();
    let r = d
        .http
        .post(d.url(&format!("/console/sessions/{id}/actions/retry-delivery")))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(d.event_kinds(&id).await.len(), before);

    // Fix the cause, then retry from the page.
    let bare = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "-q", "--bare"]);
    git(
        repo.path(),
        &["remote", "add", "backup", bare.path().to_str().unwrap()],
    );
    let r = d
        .http
        .post(d.url(&format!("/console/sessions/{id}/actions/retry-delivery")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let done = d.wait_state(&id, "completed").await;
    assert_eq!(done["run"]["delivery"]["state"], "delivered", "{done:#}");
    assert_eq!(done["run"]["delivery"]["attempt"], 2, "{done:#}");
    let kinds = d.event_kinds(&id).await;
    assert!(
        kinds.iter().filter(|k| *k == "run_requeued").count() >= 1,
        "the retry is an event: {kinds:?}"
    );
    let (_, html) = page(&d, &cookie, &format!("/console/sessions/{id}")).await;
    assert!(html.contains("data-delivery=\"delivered\""), "{html}");
    assert!(
        html.contains("data-stage=\"push\" data-result=\"done\""),
        "{html}"
    );
    assert!(
        !html.contains("/actions/retry-delivery"),
        "nothing left to retry"
    );

    // The pull request link: a web address becomes a link; anything else stays text.
    let sid = id.parse().unwrap();
    let mut s: SessionSummary = d.sup.engine().store().session(sid).await.unwrap().unwrap();
    let info = s.run.as_mut().unwrap().delivery.as_mut().unwrap();
    info.pr_url = Some("https://github.com/acme/widgets/pull/13".into());
    info.pr_number = Some(13);
    let html = worktrain_console::views::session::delivery_section(&s).into_string();
    assert!(
        html.contains("<a href=\"https://github.com/acme/widgets/pull/13\" rel=\"noopener noreferrer\">#13</a>"),
        "{html}"
    );
    let info = s.run.as_mut().unwrap().delivery.as_mut().unwrap();
    info.pr_url = Some("javascript:alert(1)".into());
    let html = worktrain_console::views::session::delivery_section(&s).into_string();
    assert!(!html.contains("href=\"javascript:"), "{html}");
    d.stop().await;
}

/// Loop iterations are marked on the session's graph: a step completed three times on the
/// path carries `×3`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_iterations_are_marked_on_the_graph() {
    let d = Daemon::start(vec![route(
        "loop-goal",
        vec![
            complete("pass one"),
            complete("pass two"),
            complete("pass three"),
            complete("wrapped"),
        ],
    )])
    .await;
    std::fs::write(d.home_dir.join("workflows").join("looped.yaml"), LOOPED).unwrap();
    let id = d.spawn("looped", "loop-goal").await;
    d.wait_state(&id, "completed").await;
    let (cookie, _) = d.http_login().await;
    let (st, svg) = page(&d, &cookie, &format!("/console/sessions/{id}/graph.svg")).await;
    assert_eq!(st, StatusCode::OK);
    let g = svg.find("<g id=\"step_pass\">").expect("pass group");
    let end = g + svg[g..].find("</g>").unwrap();
    assert!(
        svg[g..end].contains("class=\"wt-iter\"") && svg[g..end].contains("×3"),
        "{}",
        &svg[g..end]
    );
    let w = svg.find("<g id=\"step_wrap\">").expect("wrap group");
    let wend = w + svg[w..].find("</g>").unwrap();
    assert!(
        !svg[w..wend].contains("wt-iter"),
        "a single pass is not marked"
    );
    d.stop().await;
}
