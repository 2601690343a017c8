//! The `review_comment` delivery target with the real daemon: `spawn --source
//! github:acme/widgets#7 --delivery review_comment` runs the review workflow of
//! docs/delivery.md, the fake LLM agent submits the documented `pr_review` artifact, and
//! exactly one review with its inline comments lands on the fake GitHub — through a
//! final forge error, `retry-delivery`, and a retried request whose answer was lost.

use serde_json::{Value, json};
use worktrain_testkit::Turn;
use worktrain_testkit::forge::FakeForgeHandle;
use worktrain_testkit::forge::github::FakeGithub;

use crate::daemon_rig::{Rig, RigSpec, git, have_git, of_kind, result_of, route};
use crate::support::exit;

const HEAD: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const REVIEWS: &str = "/repos/acme/widgets/pulls/7/reviews";

/// The fenced block of docs/delivery.md in `lang` that contains `needle`.
fn doc_block(lang: &str, needle: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/delivery.md"
    ))
    .unwrap();
    let fence = format!("```{lang}\n");
    doc.split(&fence)
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains(needle))
        .unwrap_or_else(|| panic!("no ```{lang} block with {needle} in docs/delivery.md"))
        .to_owned()
}

fn rig_with_pull(artifact: Value) -> (Rig, FakeForgeHandle) {
    let rig = Rig::new(RigSpec {
        routes: vec![route(
            "goal-review-V1",
            vec![Turn::tool(
                "complete_step",
                json!({"notes": "reviewed", "artifacts": [artifact]}),
            )],
        )],
        ..RigSpec::default()
    });
    std::fs::write(
        rig.env.home().join("workflows/review-pr.yaml"),
        doc_block("yaml", "id: review-pr"),
    )
    .unwrap();
    let gh = rig.block_on(FakeGithub::start()).unwrap();
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
    // The diff shows new lines 40-43 of src/config.rs: line 42 takes an inline comment,
    // the documented range 50-55 does not.
    gh.set_pull_files(
        "acme/widgets",
        7,
        vec![json!({"filename": "src/config.rs", "status": "modified",
                    "patch": "@@ -40,3 +40,4 @@ fn load() {\n     let raw = read()?;\n+    let cfg = parse(&raw)?;\n     validate(&cfg)?;\n     Ok(cfg)\n"})],
    );
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        format!(
            "version: 1\nidentities:\n  bot:\n    github: {{token: $E2E_FORGE_TOKEN, api_url: {}}}\n",
            gh.base_url()
        ),
    )
    .unwrap();
    (rig, gh)
}

fn review_posts(gh: &FakeForgeHandle) -> Vec<Value> {
    gh.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == REVIEWS)
        .map(|r| r.body)
        .collect()
}

#[test]
fn a_review_session_posts_one_review_with_inline_comments_and_retries_never_duplicate_it() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let artifact: Value = serde_json::from_str(&doc_block("json", "\"pr_review\"")).unwrap();
    let (mut rig, gh) = rig_with_pull(artifact);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    // First attempt: a final refusal, nothing posted.
    gh.answer_once(
        "POST",
        REVIEWS,
        403,
        json!({"message": "Resource not accessible by integration",
               "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request",
               "status": "403"}),
    );
    rig.start_daemon();
    let id = rig.spawn_in_repo(
        "review-pr",
        "goal-review-V1",
        &[
            "--delivery",
            "review_comment",
            "--source",
            "github:acme/widgets#7",
        ],
    );
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::FAILURE, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["failure"]["stage"], "review", "{r:#}");
    assert_eq!(r["delivery"]["failure"]["retryable"], false);
    let msg = r["delivery"]["failure"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        "posting the review: 403: Resource not accessible by integration (the token lacks a scope or permission for this)"
    );
    assert!(gh.reviews_on("acme/widgets", 7).is_empty());

    // Retried: GitHub acts on the review but the answer is lost (502); the retry of the
    // request finds the review by its marker instead of posting another.
    gh.lose_answer_once("POST", REVIEWS, 502);
    let retried = rig.cli(&["session", "retry-delivery", &id]);
    assert_eq!(retried.code, exit::OK, "{retried:?}");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    assert_eq!(r["delivery"]["attempt"], 2);

    let reviews = gh.reviews_on("acme/widgets", 7);
    assert_eq!(reviews.len(), 1, "{reviews:#?}");
    let (review, comments) = &reviews[0];
    assert_eq!(review["state"], "CHANGES_REQUESTED");
    assert_eq!(review["commit_id"], HEAD);
    assert_eq!(
        comments,
        &vec![json!({"path": "src/config.rs", "line": 42, "side": "RIGHT",
                     "body": "An empty file panics here."})]
    );
    let body = review["body"].as_str().unwrap();
    assert!(
        body.starts_with("The parser is sound; two edge cases are unhandled."),
        "{body}"
    );
    assert!(
        body.contains("- `src/config.rs:50-55`: This block duplicates `load_env`."),
        "{body}"
    );
    assert!(body.contains(&format!("session `{id}`")), "{body}");
    assert!(
        body.ends_with(&format!("<!-- worktrain:session={id} -->")),
        "{body}"
    );
    // Two POSTs: the refused one and the one whose answer was lost; none after it.
    assert_eq!(review_posts(&gh).len(), 2, "{:#?}", review_posts(&gh));
    let auth = gh
        .requests()
        .into_iter()
        .find(|q| q.method == "POST" && q.path == REVIEWS)
        .and_then(|q| q.header("authorization").map(str::to_owned))
        .unwrap_or_default();
    assert!(auth.contains("t0ken-e2e"), "the identity's token: {auth}");

    let ev = rig.events(&id);
    let done: Vec<&Value> = of_kind(&ev, "delivery_stage_completed")
        .into_iter()
        .filter(|e| e["body"]["stage"] == "review")
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0]["body"]["outcome"]["summary"],
        "found the review posted earlier on acme/widgets#7"
    );
    assert_eq!(
        done[0]["body"]["outcome"]["url"],
        "https://github.com/acme/widgets/pull/7#pullrequestreview-80"
    );
    // Nothing pushed, no pull request opened; the worktree is gone.
    let remote_branches = git(
        &rig.env.dir().join("remote.git"),
        &["branch", "--list", &format!("worktrain/{id}")],
    );
    assert!(remote_branches.trim().is_empty(), "{remote_branches}");
    assert!(
        gh.requests()
            .iter()
            .all(|q| q.path != "/repos/acme/widgets/pulls")
    );
    assert!(rig.git_worktrees().is_empty(), "{:?}", rig.git_worktrees());

    // Delivered: another retry is refused, and still one review.
    let again = rig.cli(&["session", "retry-delivery", &id]);
    assert_ne!(again.code, exit::OK);
    assert!(again.stderr.contains("already delivered"), "{again:?}");
    assert_eq!(gh.reviews_on("acme/widgets", 7).len(), 1);
}

/// A recorded `pull_request.opened` delivery to a trigger whose delivery target is
/// `review_comment`: the session's source is the pull request the webhook was about, and
/// the review lands there, on the head commit the payload names.
#[test]
fn a_pull_request_webhook_gets_its_review_from_the_session_it_starts() {
    use crate::triggers::{SECRET, corpus, deliver, dispatched_session};
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let payload: Value = serde_json::from_slice(&corpus("pull_request.opened.json")).unwrap();
    let head = payload["pull_request"]["head"]["sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let title = payload["pull_request"]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    let number = payload["number"].as_u64().unwrap();
    let repo_name = payload["repository"]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let artifact: Value = serde_json::from_str(&doc_block("json", "\"pr_review\"")).unwrap();
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            &format!("Review PR #{number}"),
            vec![Turn::tool(
                "complete_step",
                json!({"notes": "reviewed", "artifacts": [artifact]}),
            )],
        )],
        ..RigSpec::default()
    });
    std::fs::write(
        rig.env.home().join("workflows/review-pr.yaml"),
        doc_block("yaml", "id: review-pr"),
    )
    .unwrap();
    let gh = rig.block_on(FakeGithub::start()).unwrap();
    gh.set_items(
        &repo_name,
        vec![json!({"number": number, "state": "open", "title": title,
                    "labels": [], "assignees": [], "updated_at": "2019-05-15T15:20:33Z",
                    "pull_request": {"html_url": format!("https://github.com/{repo_name}/pull/{number}")},
                    "head": {"ref": "changes", "sha": head}, "base": {"ref": "master"}})],
    );
    gh.set_pull_files(
        &repo_name,
        number,
        vec![json!({"filename": "src/config.rs", "status": "modified",
                    "patch": "@@ -40,3 +40,4 @@ fn load() {\n     let raw = read()?;\n+    let cfg = parse(&raw)?;\n     validate(&cfg)?;\n     Ok(cfg)\n"})],
    );
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        format!(
            "version: 1
defaults:
  workspace: {{path: {repo}}}
triggers:
  - id: gh-labeled
    source:
      github_webhook:
        secret: {SECRET}
        events: [pull_request.opened]
    workflow: review-pr
    goal: 'Review PR #{{{{ $.pull_request.number }}}}: {{{{ $.pull_request.title }}}}'
    delivery:
      target: review_comment
      identity: bot
identities:
  bot:
    github: {{token: $E2E_FORGE_TOKEN, api_url: {api}}}
",
            repo = rig.repo.display(),
            api = gh.base_url()
        ),
    )
    .unwrap();
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-pr-webhook".into()));
    rig.start_daemon();

    let (status, answer) = deliver(
        &rig,
        "pull_request",
        "delivery-review-1",
        &corpus("pull_request.opened.json"),
    );
    assert_eq!(status, 202, "{answer}\n{}", rig.log_tail());
    let id = dispatched_session(&rig, &answer);
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    let reviews = gh.reviews_on(&repo_name, number);
    assert_eq!(reviews.len(), 1, "{reviews:#?}");
    let (review, comments) = &reviews[0];
    assert_eq!(review["commit_id"], head.as_str());
    assert_eq!(review["state"], "CHANGES_REQUESTED");
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_eq!(comments[0]["path"], "src/config.rs");
    assert!(
        review["body"]
            .as_str()
            .unwrap()
            .ends_with(&format!("<!-- worktrain:session={id} -->"))
    );
    // A redelivery of the same webhook starts nothing and posts nothing.
    let (status, again) = deliver(
        &rig,
        "pull_request",
        "delivery-review-1",
        &corpus("pull_request.opened.json"),
    );
    assert!(status == 200 || status == 202, "{again}");
    let sessions = rig.cli(&["--json", "sessions"]).json();
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(1),
        "{sessions:#}"
    );
    assert_eq!(gh.reviews_on(&repo_name, number).len(), 1);
}

/// A workflow that ends, as the bundled mr-review does, with a `review_verdict` (not a
/// `pr_review`): the daemon posts it as the review — `blocking` requests changes, the
/// located finding is an inline comment, the summary opens with the verdict.
#[test]
fn a_workflow_ending_with_a_review_verdict_gets_it_posted_as_the_review() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let verdict = json!({
        "kind": "review_verdict",
        "verdict": "blocking",
        "summary": "The parsed config is never validated.",
        "findings": [
            {"severity": "blocking", "file": "src/config.rs", "line": 42,
             "message": "`cfg` is used before `validate` can reject it."},
            {"severity": "nit", "message": "The module lacks a doc comment."}
        ]
    });
    let (mut rig, gh) = rig_with_pull(verdict);
    std::fs::write(
        rig.env.home().join("workflows/verdict-review.yaml"),
        "schemaVersion: 1\nid: verdict-review\nname: Verdict review\ndescription: review ending with a verdict\nversion: '1'\nsteps:\n  - id: verdict\n    title: Give the verdict\n    prompt: Review {{goal}} and submit a review_verdict.\n    outputContract: {contract: review_verdict}\n",
    )
    .unwrap();
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    rig.start_daemon();
    let id = rig.spawn_in_repo(
        "verdict-review",
        "goal-review-V1",
        &[
            "--delivery",
            "review_comment",
            "--source",
            "github:acme/widgets#7",
        ],
    );
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    let posts = review_posts(&gh);
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["event"], "REQUEST_CHANGES");
    assert_eq!(posts[0]["commit_id"], HEAD);
    assert_eq!(
        posts[0]["comments"],
        json!([{"path": "src/config.rs", "line": 42, "side": "RIGHT",
                "body": "**blocking**: `cfg` is used before `validate` can reject it."}])
    );
    let body = posts[0]["body"].as_str().unwrap();
    assert!(
        body.starts_with("**Verdict: blocking.** The parsed config is never validated."),
        "{body}"
    );
    assert!(
        body.contains("- **nit**: The module lacks a doc comment."),
        "{body}"
    );
}
