//! The delivery pipeline against real git (a bare remote on disk) and the fake
//! GitHub/GitLab servers: requests asserted exactly, crashes between every pair of
//! stages, idempotent pull requests and comments.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use worktrain_core::run::{
    DeliverySettings, DeliveryStage, DeliveryState, DeliveryTarget, ForgeKind, SecretScanPolicy,
};
use worktrain_delivery::{Outcome, RetryPolicy, deliver, plan};
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_testkit::forge::gitlab::FakeGitlab;
use worktrain_testkit::forge::{FakeForgeHandle, Fault};

const ISSUE: &str = "github:acme/widgets#12";

fn pr_settings() -> DeliverySettings {
    DeliverySettings {
        target: DeliveryTarget::PullRequest,
        labels: vec!["worktrain".into()],
        reviewers: vec!["octocat".into()],
        report_back: true,
        commit_status: true,
        ..DeliverySettings::default()
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        tries: 3,
        backoff: Duration::from_millis(10),
        max_wait: Duration::from_secs(2),
    }
}

async fn github_with_issue() -> FakeForgeHandle {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_items(
        "acme/widgets",
        vec![serde_json::json!({"number": 12, "state": "open", "title": "Empty config panics",
                                "labels": [], "assignees": [], "updated_at": "2026-01-01T00:00:00Z"})],
    );
    gh
}

fn template_repo() -> Repo {
    Repo::new(&[(
        ".github/pull_request_template.md",
        "## Summary\n\n## Related issue\n\nCloses #\n\n## Checklist\n- [ ] tests\n",
    )])
}

fn posts(gh: &FakeForgeHandle, path: &str) -> Vec<Value> {
    gh.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn pull_request_target_commits_pushes_opens_reports_and_cleans_up() {
    let repo = template_repo();
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let gh = github_with_issue().await;
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    let Outcome::Delivered(d) = out else {
        panic!("not delivered: {out:?}")
    };
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(
        d.pr_url.as_deref(),
        Some("https://github.com/acme/widgets/pull/13")
    );
    assert_eq!(
        d.done.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        plan(&pr_settings())
    );
    // Commit: the handoff's message; the branch is on the bare remote at that commit.
    let head = git(&repo.ws, &["rev-parse", &repo.branch]);
    assert_eq!(repo.remote_head().as_deref(), Some(head.as_str()));
    assert_eq!(
        git(&repo.ws, &["log", "-1", "--format=%s", &repo.branch]),
        "fix: handle empty config files"
    );
    assert_eq!(
        git(
            &repo.ws,
            &["show", "--name-only", "--format=", &repo.branch]
        ),
        "src/config.rs"
    );
    // The exact pull request request: template filled, footer, draft off.
    let created = posts(&gh, "/repos/acme/widgets/pulls");
    assert_eq!(created.len(), 1);
    let pr = &created[0];
    assert_eq!(pr["title"], "Handle empty config files");
    assert_eq!(pr["head"], repo.branch.as_str());
    assert_eq!(pr["base"], "main");
    assert_eq!(pr["draft"], false);
    let body = pr["body"].as_str().unwrap();
    assert!(
        body.starts_with("## Summary\n\nEmpty files used to panic the loader"),
        "{body}"
    );
    assert!(body.contains("## Related issue\n\nCloses #12\n"), "{body}");
    assert!(body.contains("## Checklist\n- [ ] tests"), "{body}");
    assert!(
        body.contains(&format!("session `{}`", repo.session)),
        "{body}"
    );
    assert!(body.contains("workflow `coding-task`"), "{body}");
    assert!(body.contains("/sessions/"), "{body}");
    assert_eq!(
        posts(&gh, "/repos/acme/widgets/issues/13/labels")[0]["labels"],
        serde_json::json!(["worktrain"])
    );
    assert_eq!(
        posts(&gh, "/repos/acme/widgets/pulls/13/requested_reviewers")[0]["reviewers"],
        serde_json::json!(["octocat"])
    );
    // Report back: one comment on the issue with the PR link; a status on the pushed head.
    let comments = gh.comments_on("acme/widgets", 12);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .1
            .contains("https://github.com/acme/widgets/pull/13")
    );
    assert!(
        comments[0]
            .1
            .contains(&worktrain_delivery::marker(repo.session))
    );
    let statuses = posts(&gh, &format!("/repos/acme/widgets/statuses/{head}"));
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["state"], "success");
    assert_eq!(statuses[0]["context"], "worktrain");
    // Clean up: worktree gone, branch kept.
    assert!(!repo.wt.exists());
    assert_eq!(
        git(&repo.ws, &["branch", "--list", &repo.branch])
            .trim_start_matches("* ")
            .trim(),
        repo.branch
    );
    // Delivered is final: a second run does nothing.
    let before = gh.requests().len();
    deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    assert_eq!(gh.requests().len(), before);
}

/// The daemon dies after each stage's action but before its record (the worst moment),
/// and again right after the record: on restart exactly one pull request, one comment
/// and one commit exist.
#[tokio::test]
async fn a_crash_between_every_pair_of_stages_leaves_one_pr_and_one_comment() {
    let stages = plan(&pr_settings()).len();
    // Records: delivery_started, then one per stage, then delivery_finished.
    for crash_at in 1..=stages + 1 {
        let repo = template_repo();
        repo.edit("src/config.rs", "pub fn load() {}\n");
        let gh = github_with_issue().await;
        let host = MemHost::new(
            &repo,
            Some(handoff()),
            Some(access(ForgeKind::Github, gh.base_url())),
        );
        host.state.lock().unwrap().crash_after_records = Some(crash_at);
        let first = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast()).await;
        assert!(
            first.is_err(),
            "crash {crash_at}: the record should have failed"
        );
        host.restart();
        let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
            .await
            .unwrap();
        assert!(
            matches!(out, Outcome::Delivered(_)),
            "crash {crash_at}: {out:?}"
        );
        assert_eq!(gh.pulls("acme/widgets").len(), 1, "crash {crash_at}");
        assert_eq!(
            gh.comments_on("acme/widgets", 12).len(),
            1,
            "crash {crash_at}"
        );
        assert_eq!(host.state.lock().unwrap().commits, 1, "crash {crash_at}");
        assert!(!repo.wt.exists());
        let d = host.delivery_info().unwrap();
        assert_eq!(d.attempt, 2);
        assert_eq!(
            d.pr_url.as_deref(),
            Some("https://github.com/acme/widgets/pull/13")
        );
    }
}

/// GitHub answers 422 "A pull request already exists" (the recorded legacy and current
/// bodies) when the listing did not show the pull request yet: it is found and reused.
#[tokio::test]
async fn already_exists_422_bodies_reuse_the_open_pull_request() {
    let bodies: Vec<Value> =
        serde_json::from_slice(&std::fs::read(corpus("github-api/error-bodies.json")).unwrap())
            .unwrap();
    let exists: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["case"].as_str().unwrap().starts_with("pr-already-exists"))
        .collect();
    assert_eq!(exists.len(), 2);
    for case in exists {
        let repo = template_repo();
        repo.edit("src/config.rs", "x\n");
        let gh = github_with_issue().await;
        // An earlier attempt opened #7 for the branch, but the first listing is stale.
        gh.state().items.get_mut("acme/widgets").unwrap().push(serde_json::json!({
            "number": 7, "state": "open", "title": "earlier", "html_url": "https://github.com/acme/widgets/pull/7",
            "pull_request": {}, "labels": [], "assignees": [], "requested_reviewers": [],
            "head": {"ref": repo.branch, "label": format!("acme:{}", repo.branch)}, "updated_at": "x"
        }));
        gh.answer_once(
            "GET",
            "/repos/acme/widgets/pulls",
            200,
            serde_json::json!([]),
        );
        gh.answer_once(
            "POST",
            "/repos/acme/widgets/pulls",
            422,
            case["body"].clone(),
        );
        let host = MemHost::new(
            &repo,
            Some(handoff()),
            Some(access(ForgeKind::Github, gh.base_url())),
        );
        let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
            .await
            .unwrap();
        let Outcome::Delivered(d) = out else {
            panic!("{}: {out:?}", case["case"])
        };
        assert_eq!(
            d.pr_url.as_deref(),
            Some("https://github.com/acme/widgets/pull/7")
        );
        assert_eq!(gh.pulls("acme/widgets").len(), 1);
        let pr = d.outcome(DeliveryStage::PullRequest).unwrap();
        assert!(
            pr.summary.starts_with("found the open pull request"),
            "{}",
            pr.summary
        );
    }
}

#[tokio::test]
async fn an_existing_worktrain_comment_is_updated_not_duplicated() {
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    let gh = github_with_issue().await;
    gh.state().comments.push((
        "acme/widgets".into(),
        12,
        format!(
            "worktrain is working on this\n{}",
            worktrain_delivery::marker(repo.session)
        ),
    ));
    gh.state()
        .comments
        .push(("acme/widgets".into(), 12, "a human's comment".into()));
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    let comments = gh.comments_on("acme/widgets", 12);
    assert_eq!(comments.len(), 2);
    assert!(comments[0].1.contains("pull/13"), "{:?}", comments[0]);
    assert_eq!(comments[1].1, "a human's comment");
    assert!(
        gh.requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path == "/repos/acme/widgets/issues/comments/1")
    );
}

#[tokio::test]
async fn a_rejected_push_is_a_recorded_final_failure_and_nothing_is_forced() {
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    // Someone else's commit on the same branch name on the remote.
    let other = repo._tmp.path().join("other");
    git(
        repo._tmp.path(),
        &[
            "clone",
            "-q",
            repo.remote.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    git(&other, &["checkout", "-q", "-b", &repo.branch]);
    std::fs::write(other.join("theirs.txt"), "theirs\n").unwrap();
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "theirs"]);
    git(&other, &["push", "-q", "origin", &repo.branch]);
    let theirs = repo.remote_head().unwrap();
    let gh = github_with_issue().await;
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    let Outcome::Failed(d) = out else {
        panic!("{out:?}")
    };
    let f = d.failure.unwrap();
    assert_eq!(f.stage, DeliveryStage::Push);
    assert!(!f.retryable);
    assert!(f.message.contains("rejected"), "{}", f.message);
    assert!(f.hint.unwrap().contains("never force-pushes"));
    assert_eq!(repo.remote_head().as_deref(), Some(theirs.as_str()));
    assert!(repo.wt.exists(), "the worktree is kept after a failure");
    assert!(gh.pulls("acme/widgets").is_empty());
}

#[tokio::test]
async fn a_secret_in_the_diff_blocks_the_push_and_is_reported_by_file_and_line() {
    let token = format!("ghp_{}", "Zx9Yw8Vu7T".repeat(4));
    let repo = template_repo();
    repo.edit(
        "src/config.rs",
        &format!("// ok\nconst T: &str = \"{token}\";\n"),
    );
    let gh = github_with_issue().await;
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    let Outcome::Failed(d) = out else {
        panic!("{out:?}")
    };
    let f = d.failure.clone().unwrap();
    assert_eq!(f.stage, DeliveryStage::SecretScan);
    assert!(
        f.message.contains("src/config.rs:2 (github_token)"),
        "{}",
        f.message
    );
    assert_eq!(d.findings.len(), 1);
    let recorded = serde_json::to_string(&host.state.lock().unwrap().events).unwrap();
    assert!(
        !recorded.contains(&token),
        "the secret must never be recorded"
    );
    assert_eq!(repo.remote_head(), None, "nothing pushed");
    // Overridden per trigger: a warning, and the delivery goes on.
    let repo2 = template_repo();
    repo2.edit("src/config.rs", &format!("const T: &str = \"{token}\";\n"));
    let host2 = MemHost::new(
        &repo2,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let warn = DeliverySettings {
        secret_scan: SecretScanPolicy::Warn,
        ..pr_settings()
    };
    let out = deliver(&repo2.job(warn, Some(ISSUE)), host2.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    assert!(repo2.remote_head().is_some());
}

#[tokio::test]
async fn a_missing_or_invalid_handoff_fails_at_handoff_and_keeps_the_work() {
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    let host = MemHost::new(&repo, None, None);
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    let Outcome::Failed(d) = out else {
        panic!("{out:?}")
    };
    let f = d.failure.unwrap();
    assert_eq!(f.stage, DeliveryStage::Handoff);
    assert!(f.message.contains("no `handoff` artifact"), "{}", f.message);
    assert!(repo.wt.exists());
    let mut bad = handoff();
    bad["commitType"] = "yolo".into();
    bad.as_object_mut().unwrap().remove("prTitle");
    let host = MemHost::new(&repo, Some(bad), None);
    let Outcome::Failed(d) = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap()
    else {
        panic!()
    };
    let m = d.failure.unwrap().message;
    assert!(m.contains("commitType") && m.contains("prTitle"), "{m}");
}

#[tokio::test]
async fn retryable_forge_errors_are_retried_and_final_ones_recorded_with_the_forge_message() {
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    let gh = github_with_issue().await;
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    // Push needs no forge; the first forge call is the pull request lookup.
    gh.fail_next(Fault::ServerError(502));
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    assert_eq!(gh.pulls("acme/widgets").len(), 1);

    // A rate limit longer than the attempt may wait: recorded as retryable, with the
    // forge's message; retry-delivery later continues from that stage.
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    let gh = github_with_issue().await;
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    gh.fail_next(Fault::SecondaryRateLimit { retry_after: 3600 });
    let Outcome::Failed(d) = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap()
    else {
        panic!()
    };
    let f = d.failure.unwrap();
    assert_eq!(f.stage, DeliveryStage::PullRequest);
    assert!(f.retryable);
    assert!(
        f.message.contains("abuse detection mechanism"),
        "{}",
        f.message
    );
    let out = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let kinds = host.kinds();
    assert_eq!(
        kinds.iter().filter(|k| **k == "delivery_started").count(),
        2
    );
    // The push was not done again on the retry.
    let stages_done: Vec<_> = host
        .state
        .lock()
        .unwrap()
        .events
        .iter()
        .filter_map(|e| match e {
            worktrain_core::event::EventBody::DeliveryStageCompleted { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages_done
            .iter()
            .filter(|s| **s == DeliveryStage::Push)
            .count(),
        1
    );

    // 401: final, with the hint.
    let repo = template_repo();
    repo.edit("src/config.rs", "x\n");
    let gh = github_with_issue().await;
    gh.answer_once(
        "GET",
        "/repos/acme/widgets/pulls",
        401,
        serde_json::json!({"message": "Bad credentials"}),
    );
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let Outcome::Failed(d) = deliver(&repo.job(pr_settings(), Some(ISSUE)), host.as_ref(), fast())
        .await
        .unwrap()
    else {
        panic!()
    };
    let f = d.failure.unwrap();
    assert!(!f.retryable);
    assert!(f.message.contains("401: Bad credentials"), "{}", f.message);
    assert!(f.hint.unwrap().contains("expired or revoked"));
}

#[tokio::test]
async fn gitlab_merge_request_note_and_status() {
    let repo = Repo::new(&[(
        ".gitlab/merge_request_templates/Default.md",
        "## What does this MR do and why?\n\n_Describe._\n\n/assign me\n\n## Checklist\n\n* [ ] done\n",
    )]);
    repo.edit("src/config.rs", "x\n");
    let gl = FakeGitlab::start().await.unwrap();
    let host = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Gitlab, gl.base_url())),
    );
    let settings = DeliverySettings {
        draft: true,
        ..pr_settings()
    };
    let job = repo.job(settings.clone(), Some("gitlab:group/proj#5"));
    let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
    let Outcome::Delivered(d) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        d.pr_url.as_deref(),
        Some("https://gitlab.com/group/proj/-/merge_requests/1")
    );
    let reqs = gl.requests();
    let create = reqs
        .iter()
        .find(|r| r.method == "POST" && r.path == "/api/v4/projects/group%2Fproj/merge_requests")
        .unwrap();
    assert_eq!(create.body["title"], "Draft: Handle empty config files");
    assert_eq!(create.body["source_branch"], repo.branch.as_str());
    assert_eq!(create.body["target_branch"], "main");
    assert_eq!(create.body["labels"], "worktrain");
    let desc = create.body["description"].as_str().unwrap();
    assert!(
        desc.starts_with("## What does this MR do and why?\n\nEmpty files"),
        "{desc}"
    );
    assert!(desc.trim_end().ends_with("/assign me"), "{desc}");
    assert!(reqs.iter().any(|r| r.method == "POST"
        && r.path == "/api/v4/projects/group%2Fproj/issues/5/notes"));
    assert!(reqs.iter().any(|r| {
        r.method == "POST"
            && r.path
                .starts_with("/api/v4/projects/group%2Fproj/statuses/")
            && r.body["state"] == "success"
    }));
    // Again from scratch (records lost): the MR is found (409 avoided by the lookup), the
    // note updated.
    let host2 = MemHost::new(
        &repo,
        Some(handoff()),
        Some(access(ForgeKind::Gitlab, gl.base_url())),
    );
    deliver(&job, host2.as_ref(), fast()).await.unwrap();
    assert_eq!(gl.pulls("group/proj:merge_requests").len(), 1);
    assert_eq!(gl.comments_on("group/proj:issues", 5).len(), 1);
}

#[tokio::test]
async fn commit_only_and_none_keep_the_work_on_the_branch_without_a_forge() {
    for target in [DeliveryTarget::CommitOnly, DeliveryTarget::None] {
        let repo = template_repo();
        repo.edit("notes.txt", "done\n");
        let host = MemHost::new(&repo, None, None);
        let settings = DeliverySettings {
            target,
            ..DeliverySettings::default()
        };
        let out = deliver(&repo.job(settings, None), host.as_ref(), fast())
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Delivered(_)), "{target:?}: {out:?}");
        assert_eq!(
            git(
                &repo.ws,
                &["show", "--name-only", "--format=", &repo.branch]
            ),
            "notes.txt"
        );
        assert_eq!(
            repo.remote_head(),
            None,
            "{target:?}: not pushed without a remote setting"
        );
        assert!(!repo.wt.exists());
    }
    // commit_only with a remote: pushed.
    let repo = template_repo();
    repo.edit("notes.txt", "done\n");
    let host = MemHost::new(&repo, None, None);
    let settings = DeliverySettings {
        target: DeliveryTarget::CommitOnly,
        remote: Some("origin".into()),
        ..DeliverySettings::default()
    };
    deliver(&repo.job(settings, None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(repo.remote_head().is_some());
}

#[tokio::test]
async fn webhook_target_posts_the_result_signed() {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    let got: std::sync::Arc<std::sync::Mutex<Vec<(HeaderMap, Bytes)>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, b: Bytes| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((h, b));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let settings = DeliverySettings {
        target: DeliveryTarget::Webhook,
        webhook: Some(worktrain_core::run::DeliveryWebhook {
            url: format!("http://{addr}/hook"),
            secret_env: Some("WT_DELIVERY_TEST_HOOK_SECRET".into()),
        }),
        ..DeliverySettings::default()
    };
    let out = deliver(&repo.job(settings, None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    let (h, b) = &got[0];
    let sig = h["x-worktrain-signature-256"].to_str().unwrap();
    assert_eq!(sig, worktrain_delivery::sign(b"s3cret", b));
    let v: Value = serde_json::from_slice(b).unwrap();
    assert_eq!(v["session_id"], repo.session.to_string());
    assert_eq!(v["handoff"]["prTitle"], "Handle empty config files");
    assert_eq!(v["commit"], git(&repo.ws, &["rev-parse", &repo.branch]));
}

/// A webhook URL often carries its credential (`/hooks/<token>`, `?token=`): it is never
/// written into the session's events — not on success, not in a failure message (where
/// the HTTP client's own error text would name the URL).
#[tokio::test]
async fn a_webhook_url_never_reaches_the_events() {
    let app = axum::Router::new().route(
        "/hooks/{token}",
        axum::routing::post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "down") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    const TOKEN: &str = "T0KEN-in-the-path";
    const QUERY: &str = "qs-s3cret";
    let url = format!("http://{addr}/hooks/{TOKEN}?key={QUERY}");
    let settings = |url: &str| DeliverySettings {
        target: DeliveryTarget::Webhook,
        webhook: Some(worktrain_core::run::DeliveryWebhook {
            url: url.to_owned(),
            secret_env: None,
        }),
        ..DeliverySettings::default()
    };
    let events_of = |host: &MemHost| format!("{:?}", host.state.lock().unwrap().events);

    // The receiver answers 502: a failure message.
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(&repo.job(settings(&url), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    let recorded = events_of(&host);
    assert!(recorded.contains("answered 502"), "{recorded}");
    assert!(
        !recorded.contains(TOKEN) && !recorded.contains(QUERY),
        "{recorded}"
    );

    // The URL kept in the daemon's environment (`$VAR`): the settings hold the name only.
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    host.state
        .lock()
        .unwrap()
        .secrets
        .push(("HOOK_URL".into(), url.clone()));
    let out = deliver(
        &repo.job(settings("${HOOK_URL}"), None),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    let recorded = events_of(&host);
    assert!(
        recorded.contains("answered 502"),
        "reached the receiver: {recorded}"
    );
    assert!(
        !recorded.contains(TOKEN) && !recorded.contains(QUERY),
        "{recorded}"
    );
    // An unset variable is a final failure naming it.
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(
        &repo.job(settings("$NO_SUCH_HOOK_URL"), None),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    assert!(events_of(&host).contains("`NO_SUCH_HOOK_URL` is not set"));

    // Nobody listens: the client's connection error.
    server.abort();
    let _ = server.await;
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(&repo.job(settings(&url), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    let recorded = events_of(&host);
    assert!(
        !recorded.contains(TOKEN) && !recorded.contains(QUERY),
        "{recorded}"
    );
}

/// A receiver that answers 429 or 503 with `Retry-After` is asked again no sooner than it
/// said; one that asks for longer than the policy allows ends the attempt, retryable,
/// without being asked again in it.
#[tokio::test]
async fn a_webhook_receivers_retry_after_is_honoured() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    type Seen = Arc<Mutex<Vec<Instant>>>;
    async fn receiver(answers: Vec<(u16, Option<&'static str>)>) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let answers = Arc::new(answers);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let s = s.clone();
                let answers = answers.clone();
                async move {
                    let n = {
                        let mut s = s.lock().unwrap();
                        s.push(Instant::now());
                        s.len() - 1
                    };
                    let (status, retry_after) = answers.get(n).copied().unwrap_or((200, None));
                    let mut r = axum::response::Response::builder().status(status);
                    if let Some(v) = retry_after {
                        r = r.header("retry-after", v);
                    }
                    r.body(axum::body::Body::from("answer")).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), seen)
    }
    let settings = |url: String| DeliverySettings {
        target: DeliveryTarget::Webhook,
        webhook: Some(worktrain_core::run::DeliveryWebhook {
            url,
            secret_env: None,
        }),
        ..DeliverySettings::default()
    };

    // 429 with Retry-After: 1, then 503 with Retry-After: 1, then 200: delivered on the
    // third POST, each retry at least a second after the answer that asked for it (the
    // policy's own backoff is 10 ms).
    let (url, seen) = receiver(vec![(429, Some("1")), (503, Some("1"))]).await;
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(&repo.job(settings(url), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for pair in seen.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }

    // Retry-After: 3600 is longer than the policy's longest wait (2 s): the attempt ends
    // after one POST, recorded as retryable.
    let (url, seen) = receiver(vec![(429, Some("3600"))]).await;
    let repo = template_repo();
    repo.edit("src/config.rs", "done\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(&repo.job(settings(url), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "not asked again within the attempt"
    );
    let recorded = format!("{:?}", host.state.lock().unwrap().events);
    assert!(recorded.contains("answered 429"), "{recorded}");
    assert!(recorded.contains("retryable: true"), "{recorded}");
}

/// The commit stage ran on one daemon host and that host died before the push; the
/// delivery is retried by a daemon whose repository does not have the commit. The push
/// must not go on (git would say "src refspec … does not match any", taken for a network
/// problem and retried): it fails at once, final, naming the commit and what to do.
#[tokio::test]
async fn a_push_without_the_recorded_commit_in_this_repository_fails_saying_where_it_is() {
    let repo = template_repo();
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let settings = DeliverySettings {
        target: DeliveryTarget::CommitOnly,
        remote: Some("origin".into()),
        ..DeliverySettings::default()
    };
    let host = MemHost::new(&repo, Some(handoff()), None);
    // The first host commits, then cannot reach the remote (moved away for now).
    let moved = repo.remote.with_extension("moved");
    std::fs::rename(&repo.remote, &moved).unwrap();
    let first = deliver(&repo.job(settings.clone(), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Failed(_)), "{first:?}");
    std::fs::rename(&moved, &repo.remote).unwrap();
    let commit = host
        .delivery_info()
        .unwrap()
        .done
        .iter()
        .find(|(s, _)| *s == DeliveryStage::Commit)
        .and_then(|(_, o)| o.commit.clone())
        .unwrap();
    // Another host: its repository has neither the session's worktree nor its branch.
    git(
        &repo.ws,
        &["worktree", "remove", "--force", repo.wt.to_str().unwrap()],
    );
    git(&repo.ws, &["branch", "-D", &repo.branch]);
    git(&repo.ws, &["reflog", "expire", "--expire=now", "--all"]);
    git(&repo.ws, &["gc", "-q", "--prune=now"]);
    let out = deliver(&repo.job(settings, None), host.as_ref(), fast())
        .await
        .unwrap();
    let Outcome::Failed(d) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(d.attempt, 2, "the retry continued from the push");
    let f = failure(out);
    assert_eq!(f.stage, DeliveryStage::Push);
    assert!(!f.retryable, "{f:?}");
    assert!(f.message.contains(&commit[..12]), "{}", f.message);
    let hint = f.hint.unwrap_or_default();
    assert!(hint.contains("host"), "{hint}");
    assert_eq!(repo.remote_head(), None, "nothing pushed");
}
