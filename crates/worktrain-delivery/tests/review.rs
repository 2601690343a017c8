//! The `review_comment` target: a session's `pr_review` artifact becomes a review on the
//! pull/merge request it came from — GitHub: one `POST /pulls/{n}/reviews` with the
//! verdict, the head commit and the inline comments; GitLab: a discussion per inline
//! comment, a summary note and an approval. Requests asserted exactly against the fake
//! forges; comments on lines outside the diff go into the summary; a crash between
//! posting and recording never posts twice; nothing is pushed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use worktrain_core::run::{DeliverySettings, DeliveryStage, DeliveryTarget, ForgeKind};
use worktrain_delivery::{Outcome, RetryPolicy, deliver, marker, plan};
use worktrain_testkit::forge::FakeForgeHandle;
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_testkit::forge::gitlab::FakeGitlab;

const HEAD: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

/// A patch whose new side shows lines 10-14 of `src/config.rs` (12 added).
const PATCH: &str = "@@ -10,4 +10,5 @@ pub fn load() {\n     let a = 1;\n     let b = 2;\n+    let c = 3;\n     let d = 4;\n     a + b\n";

fn settings() -> DeliverySettings {
    DeliverySettings {
        target: DeliveryTarget::ReviewComment,
        ..DeliverySettings::default()
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        tries: 2,
        backoff: Duration::from_millis(10),
        max_wait: Duration::from_secs(1),
    }
}

fn review() -> Value {
    json!({
        "kind": "pr_review",
        "verdict": "request_changes",
        "body": "The loader is sound; one case is unhandled.",
        "comments": [
            {"path": "src/config.rs", "line": 12, "body": "`c` is never read."},
            {"path": "src/config.rs", "startLine": 10, "line": 11, "side": "RIGHT",
             "body": "These two could be one tuple."},
            {"path": "src/config.rs", "line": 90, "body": "An empty file panics here."}
        ]
    })
}

async fn github_with_pull() -> FakeForgeHandle {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_items(
        "acme/widgets",
        vec![
            json!({"number": 7, "state": "open", "title": "Load config lazily",
                    "labels": [], "assignees": [], "updated_at": "2026-01-01T00:00:00Z",
                    "html_url": "https://github.com/acme/widgets/pull/7",
                    "pull_request": {"html_url": "https://github.com/acme/widgets/pull/7"},
                    "head": {"ref": "lazy", "label": "someone:lazy", "sha": HEAD},
                    "base": {"ref": "main"}}),
        ],
    );
    gh.set_pull_files(
        "acme/widgets",
        7,
        vec![
            json!({"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": "src/config.rs",
                    "status": "modified", "additions": 1, "deletions": 0, "changes": 1,
                    "patch": PATCH}),
        ],
    );
    gh
}

fn review_posts(gh: &FakeForgeHandle) -> Vec<Value> {
    gh.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/repos/acme/widgets/pulls/7/reviews")
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn github_review_is_posted_once_with_inline_comments_and_the_head_commit() {
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    let host = MemHost::new(
        &repo,
        Some(review()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let job = repo.job(settings(), Some("github:acme/widgets#7"));
    let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
    let Outcome::Delivered(d) = out else {
        panic!("{out:?}")
    };
    let stage = d.outcome(DeliveryStage::Review).unwrap();
    assert_eq!(
        stage.summary,
        "posted a `request_changes` review on acme/widgets#7: 2 inline comment(s), 1 on lines outside the diff put in the summary"
    );
    assert_eq!(
        stage.url.as_deref(),
        Some("https://github.com/acme/widgets/pull/7#pullrequestreview-80")
    );

    let posts = review_posts(&gh);
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let p = &posts[0];
    assert_eq!(p["commit_id"], HEAD);
    assert_eq!(p["event"], "REQUEST_CHANGES");
    assert_eq!(
        p["comments"],
        json!([
            {"path": "src/config.rs", "line": 12, "side": "RIGHT", "body": "`c` is never read."},
            {"path": "src/config.rs", "line": 11, "side": "RIGHT", "start_line": 10,
             "start_side": "RIGHT", "body": "These two could be one tuple."}
        ])
    );
    let body = p["body"].as_str().unwrap();
    let want = format!(
        "The loader is sound; one case is unhandled.\n\n<sub>Reviewed by worktrain · session `{s}` · workflow `coding-task` · [session](http://127.0.0.1:7777/sessions/{s})</sub>\n\n**Comments on lines outside the diff**\n\n- `src/config.rs:90`: An empty file panics here.\n\n{m}",
        s = repo.session,
        m = marker(repo.session)
    );
    assert_eq!(body, want);
    // The requests in order: the pull (head), earlier reviews, the diff, the review.
    let gets: Vec<String> = gh
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        gets,
        vec![
            "/repos/acme/widgets/pulls/7",
            "/repos/acme/widgets/pulls/7/reviews?per_page=100",
            "/repos/acme/widgets/pulls/7/files?per_page=100"
        ]
    );
    // No push, no pull request; the worktree is cleaned up.
    assert_eq!(repo.remote_head(), None);
    assert!(
        gh.requests()
            .iter()
            .all(|r| r.path != "/repos/acme/widgets/pulls" || r.method != "POST")
    );
    assert!(!repo.wt.exists());
    assert_eq!(gh.reviews_on("acme/widgets", 7).len(), 1);
    assert_eq!(
        gh.reviews_on("acme/widgets", 7)[0].0["state"],
        "CHANGES_REQUESTED"
    );
}

#[tokio::test]
async fn a_crash_between_posting_and_recording_never_posts_a_second_review() {
    let stages = plan(&settings()).len();
    for crash_at in 1..=stages + 1 {
        let repo = Repo::new(&[]);
        let gh = github_with_pull().await;
        let host = MemHost::new(
            &repo,
            Some(review()),
            Some(access(ForgeKind::Github, gh.base_url())),
        );
        host.state.lock().unwrap().crash_after_records = Some(crash_at);
        let job = repo.job(settings(), Some("github:acme/widgets#7"));
        assert!(deliver(&job, host.as_ref(), fast()).await.is_err());
        host.restart();
        let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
        assert!(
            matches!(out, Outcome::Delivered(_)),
            "crash {crash_at}: {out:?}"
        );
        assert_eq!(
            gh.reviews_on("acme/widgets", 7).len(),
            1,
            "crash {crash_at}"
        );
        let d = host.delivery_info().unwrap();
        let s = &d.outcome(DeliveryStage::Review).unwrap().summary;
        // Crash 3 lost the review stage's record after the review was posted.
        if crash_at == 3 {
            assert_eq!(s, "found the review posted earlier on acme/widgets#7");
        }
    }
}

#[tokio::test]
async fn when_github_refuses_the_inline_comments_they_go_into_the_summary() {
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    // The diff moved since it was read: GitHub's answer for a comment off the diff.
    gh.answer_once(
        "POST",
        "/repos/acme/widgets/pulls/7/reviews",
        422,
        json!({"message": "Unprocessable Entity",
               "errors": ["Pull request review thread line must be part of the diff and Pull request review thread diff hunk can't be blank"],
               "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request",
               "status": "422"}),
    );
    let host = MemHost::new(
        &repo,
        Some(review()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let out = deliver(
        &repo.job(settings(), Some("github:acme/widgets#7")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    let Outcome::Delivered(d) = out else {
        panic!("{out:?}")
    };
    let posts = review_posts(&gh);
    assert_eq!(posts.len(), 2, "the refused one, then the folded one");
    assert_eq!(posts[0]["comments"].as_array().unwrap().len(), 2);
    assert_eq!(posts[1]["comments"], json!([]));
    let body = posts[1]["body"].as_str().unwrap();
    for line in [
        "- `src/config.rs:12`: `c` is never read.",
        "- `src/config.rs:10-11`: These two could be one tuple.",
        "- `src/config.rs:90`: An empty file panics here.",
    ] {
        assert!(body.contains(line), "{body}");
    }
    assert_eq!(gh.reviews_on("acme/widgets", 7).len(), 1);
    assert!(
        d.outcome(DeliveryStage::Review)
            .unwrap()
            .summary
            .contains("0 inline comment(s), 3 on lines outside the diff")
    );

    // The fake itself refuses a comment off the diff with that answer.
    let direct = reqwest::Client::new()
        .post(format!("{}/repos/acme/widgets/pulls/7/reviews", gh.base_url()))
        .header("authorization", "token t")
        .json(&json!({"event": "COMMENT", "body": "x", "commit_id": HEAD,
                      "comments": [{"path": "src/config.rs", "line": 90, "side": "RIGHT", "body": "y"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 422);
}

#[tokio::test]
async fn an_invalid_or_missing_review_or_a_source_that_is_no_pull_request_fails_at_handoff() {
    let cases: Vec<(Option<Value>, Option<&str>, &str)> = vec![
        (
            Some(json!({"kind": "pr_review", "verdict": "lgtm", "body": "b",
                        "comments": [{"path": "a.rs", "line": 0, "body": "x"}]})),
            Some("github:acme/widgets#7"),
            "the `pr_review` artifact is invalid: verdict: `lgtm` is not one of: approve, request_changes, comment; comments[0].line: required: a positive integer (the line in the new file)",
        ),
        (
            None,
            Some("github:acme/widgets#7"),
            "no `pr_review` artifact: the workflow's final step did not submit one",
        ),
        (
            Some(review()),
            None,
            "the `review_comment` target needs a pull/merge request source; the session's source is missing",
        ),
        (
            Some(review()),
            Some("gitlab:group/proj#5"),
            "the `review_comment` target needs a pull/merge request source; the session's source is `gitlab:group/proj#5`",
        ),
    ];
    for (artifact, source, want) in cases {
        let repo = Repo::new(&[]);
        let gh = github_with_pull().await;
        let host = MemHost::new(
            &repo,
            artifact,
            Some(access(ForgeKind::Github, gh.base_url())),
        );
        let out = deliver(&repo.job(settings(), source), host.as_ref(), fast())
            .await
            .unwrap();
        let Outcome::Failed(d) = out else {
            panic!("{out:?}")
        };
        let f = d.failure.unwrap();
        assert_eq!(f.stage, DeliveryStage::Handoff);
        assert_eq!(f.message, want);
        assert!(!f.retryable);
        assert!(gh.requests().is_empty(), "no forge call");
        assert!(repo.wt.exists(), "the worktree is kept");
    }
}

#[tokio::test]
async fn a_github_issue_number_is_refused_by_the_forge_with_its_404() {
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    let host = MemHost::new(
        &repo,
        Some(review()),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let out = deliver(
        &repo.job(settings(), Some("github:acme/widgets#99")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    let Outcome::Failed(d) = out else {
        panic!("{out:?}")
    };
    let f = d.failure.unwrap();
    assert_eq!(f.stage, DeliveryStage::Review);
    assert!(f.message.starts_with("posting the review: 404"), "{f:?}");
    assert!(review_posts(&gh).is_empty());
}

#[tokio::test]
async fn gitlab_review_is_discussions_a_summary_note_and_one_approval() {
    let repo = Repo::new(&[]);
    let gl = FakeGitlab::start().await.unwrap();
    let refs = json!({"base_sha": "c380d3acebd181f13629a25d2e2acca46ffe1e00",
                      "head_sha": "2be7ddb704c7b6b83732fdd5b9f09d5a397b5f8f",
                      "start_sha": "c380d3acebd181f13629a25d2e2acca46ffe1e00"});
    gl.set_gitlab_items(
        "group/proj",
        "merge_requests",
        vec![
            json!({"iid": 7, "id": 1007, "state": "opened", "title": "Load config lazily",
                    "source_branch": "lazy", "target_branch": "main", "labels": [],
                    "web_url": "https://gitlab.com/group/proj/-/merge_requests/7",
                    "diff_refs": refs, "updated_at": "2026-01-01T00:00:00Z"}),
        ],
    );
    gl.set_pull_files(
        "group/proj",
        7,
        vec![json!({"filename": "src/config.rs", "patch": PATCH})],
    );
    let mut approve = review();
    approve["verdict"] = json!("approve");
    let host = MemHost::new(
        &repo,
        Some(approve.clone()),
        Some(access(ForgeKind::Gitlab, gl.base_url())),
    );
    let job = repo.job(settings(), Some("gitlab:group/proj!7"));
    host.state.lock().unwrap().crash_after_records = Some(3);
    assert!(deliver(&job, host.as_ref(), fast()).await.is_err());
    host.restart();
    let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
    let Outcome::Delivered(d) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        d.outcome(DeliveryStage::Review).unwrap().summary,
        "found the review posted earlier on group/proj!7"
    );
    let mr = "/api/v4/projects/group%2Fproj/merge_requests/7";
    let reqs = gl.requests();
    let posts: Vec<(String, Value)> = reqs
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.path.clone(), r.body.clone()))
        .collect();
    let m = marker(repo.session);
    // Three discussions tried (line 90 refused: folded), one approval, one summary; the
    // retry after the lost record found the summary and posted nothing.
    assert_eq!(posts.len(), 5, "{posts:#?}");
    assert_eq!(posts[0].0, format!("{mr}/discussions"));
    assert_eq!(
        posts[0].1,
        json!({"body": format!("`c` is never read.\n\n{m}<!-- review-comment:0 -->"),
               "position": {"position_type": "text",
                            "base_sha": refs["base_sha"], "start_sha": refs["start_sha"],
                            "head_sha": refs["head_sha"],
                            "old_path": "src/config.rs", "new_path": "src/config.rs",
                            "new_line": 12}})
    );
    assert_eq!(
        posts[1].1["body"],
        format!("**Lines 10-11:** These two could be one tuple.\n\n{m}<!-- review-comment:1 -->")
    );
    assert_eq!(posts[2].1["position"]["new_line"], 90);
    assert_eq!(posts[3].0, format!("{mr}/approve"));
    assert_eq!(posts[4].0, format!("{mr}/notes"));
    let note = posts[4].1["body"].as_str().unwrap();
    assert!(
        note.starts_with("**Approved**\n\nThe loader is sound"),
        "{note}"
    );
    assert!(
        note.contains("- `src/config.rs:90`: An empty file panics here."),
        "{note}"
    );
    assert!(
        note.ends_with(&format!("{m}<!-- review-summary -->")),
        "{note}"
    );
    assert_eq!(gl.state().approvals.len(), 1);
    assert_eq!(gl.state().discussions.len(), 2);
}

/// The bundled mr-review workflow ends with a `review_verdict`, not a `pr_review`: it is
/// posted all the same — `blocking` as request changes, findings with a file and line as
/// inline comments (severity first), findings without one and those off the diff in the
/// summary, which opens with the verdict. A `clean` verdict is a comment, never an
/// approval: approving is left to a workflow that says `approve` in a `pr_review`.
#[tokio::test]
async fn an_mr_review_verdict_is_posted_as_the_review() {
    let verdict = json!({
        "kind": "review_verdict",
        "verdict": "blocking",
        "summary": "The loader loses the third value.",
        "findings": [
            {"severity": "blocking", "file": "src/config.rs", "line": 12,
             "message": "`c` is computed and never read."},
            {"severity": "nit", "message": "The module could use a doc comment."},
            {"severity": "minor", "file": "src/config.rs", "line": 90,
             "message": "An empty file panics here."}
        ]
    });
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    let host = MemHost::new(
        &repo,
        Some(verdict),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let job = repo.job(settings(), Some("github:acme/widgets#7"));
    let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let posts = review_posts(&gh);
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let p = &posts[0];
    assert_eq!(p["event"], "REQUEST_CHANGES");
    assert_eq!(p["commit_id"], HEAD);
    assert_eq!(
        p["comments"],
        json!([{"path": "src/config.rs", "line": 12, "side": "RIGHT",
                "body": "**blocking**: `c` is computed and never read."}])
    );
    let body = p["body"].as_str().unwrap();
    assert!(
        body.starts_with("**Verdict: blocking.** The loader loses the third value."),
        "{body}"
    );
    assert!(
        body.contains("**nit**: The module could use a doc comment."),
        "{body}"
    );
    assert!(
        body.contains("src/config.rs:90") && body.contains("An empty file panics here."),
        "{body}"
    );

    // Clean: a comment that says so.
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    let host = MemHost::new(
        &repo,
        Some(json!({"kind": "review_verdict", "verdict": "clean",
                    "summary": "Reads well; tests cover the new path.", "findings": []})),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let job = repo.job(settings(), Some("github:acme/widgets#7"));
    let out = deliver(&job, host.as_ref(), fast()).await.unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let posts = review_posts(&gh);
    assert_eq!(posts[0]["event"], "COMMENT");
    assert!(
        posts[0]["body"]
            .as_str()
            .unwrap()
            .starts_with("**Verdict: clean.** Reads well")
    );

    // An invalid verdict fails at handoff naming the field.
    let repo = Repo::new(&[]);
    let gh = github_with_pull().await;
    let host = MemHost::new(
        &repo,
        Some(json!({"kind": "review_verdict", "verdict": "fine", "findings": []})),
        Some(access(ForgeKind::Github, gh.base_url())),
    );
    let job = repo.job(settings(), Some("github:acme/widgets#7"));
    let f = failure(deliver(&job, host.as_ref(), fast()).await.unwrap());
    assert_eq!(f.stage, DeliveryStage::Handoff);
    assert!(
        f.message.contains("review_verdict") && f.message.contains("verdict"),
        "{}",
        f.message
    );
    assert!(review_posts(&gh).is_empty());
}
