//! Delivery with the real daemon: a spawn with `--source` and `--delivery pull_request`
//! (or a recorded GitHub webhook delivery to a trigger with `delivery:`), the fake LLM
//! agent edits a file, and the work is committed on the session branch,
//! pushed to the bare remote on disk, opened as a pull request on the fake GitHub with
//! the repository's template filled, reported on the issue; the worktree goes, the
//! branch stays. Killed between every pair of stages, the daemon finishes on restart
//! with exactly one pull request and one comment.

use std::time::Duration;

use serde_json::{Value, json};
use worktrain_testkit::forge::FakeForgeHandle;
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_testkit::{Route, Turn};

use crate::daemon_rig::{
    Rig, RigSpec, git, have_git, of_kind, result_of, route, wait_for, write_file,
};
use crate::support::exit;

const TEMPLATE: &str =
    "## Summary\n\n## Related issue\n\nCloses #\n\n## Checklist\n- [ ] tests pass\n";

fn handoff() -> Value {
    json!([{
        "kind": "handoff", "commitType": "feat", "commitSubject": "greet politely",
        "prTitle": "Greet politely", "prBody": "The greeting now says please.",
        "filesChanged": ["src/greet.txt"], "followUps": []
    }])
}

fn agent(goal: &str) -> Route {
    route(
        goal,
        vec![
            write_file("src/greet.txt", "hello, please\n"),
            Turn::tool(
                "complete_step",
                json!({"notes": "greeting changed", "artifacts": handoff()}),
            ),
        ],
    )
}

/// A rig whose repository has a PR template, a fake GitHub with issue acme/widgets#12,
/// and a triggers.yml identity pointing at it.
fn rig_with_forge(goals: &[&str]) -> (Rig, FakeForgeHandle) {
    rig_with_routes(goals.iter().map(|g| agent(g)).collect())
}

/// [`rig_with_forge`] with the fake agent's turns given per goal.
fn rig_with_routes(routes: Vec<Route>) -> (Rig, FakeForgeHandle) {
    let rig = Rig::new(RigSpec {
        routes,
        ..RigSpec::default()
    });
    std::fs::create_dir_all(rig.repo.join(".github")).unwrap();
    std::fs::write(rig.repo.join(".github/pull_request_template.md"), TEMPLATE).unwrap();
    git(&rig.repo, &["add", "-A"]);
    git(&rig.repo, &["commit", "-q", "-m", "template"]);
    git(&rig.repo, &["push", "-q", "origin", "main"]);
    let gh = rig.block_on(FakeGithub::start()).unwrap();
    gh.set_items(
        "acme/widgets",
        vec![
            json!({"number": 12, "state": "open", "title": "Greet politely", "labels": [],
                    "assignees": [], "updated_at": "2026-01-01T00:00:00Z"}),
        ],
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

fn spawn_delivering(rig: &Rig, goal: &str) -> String {
    rig.spawn_in_repo(
        "e2e-one",
        goal,
        &[
            "--delivery",
            "pull_request",
            "--source",
            "github:acme/widgets#12",
            "--pr-label",
            "worktrain",
        ],
    )
}

fn remote_head(rig: &Rig, branch: &str) -> String {
    git(
        &rig.env.dir().join("remote.git"),
        &["rev-parse", &format!("refs/heads/{branch}")],
    )
    .trim()
    .to_owned()
}

#[test]
fn spawn_with_source_delivers_a_pull_request_end_to_end() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (mut rig, gh) = rig_with_forge(&["goal-deliver-E1"]);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    // The commit author from config.yaml.
    let config = rig.env.home().join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "keep_failed_hours: 1}",
        "keep_failed_hours: 1, author: {name: Widget Bot, email: bot@widgets.example}}",
    );
    assert!(text.contains("Widget Bot"));
    std::fs::write(&config, text).unwrap();
    rig.start_daemon();
    let id = spawn_delivering(&rig, "goal-deliver-E1");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["succeeded"], true, "{r:#}");
    assert_eq!(
        r["pr_url"], "https://github.com/acme/widgets/pull/13",
        "{r:#}"
    );
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    let branch = format!("worktrain/{id}");
    assert_eq!(r["branch"], branch.as_str(), "{r:#}");

    // The commit: the handoff's message, trailers, the agent's file; on the bare remote.
    let head = git(&rig.repo, &["rev-parse", &branch]).trim().to_owned();
    assert_eq!(
        remote_head(&rig, &branch),
        head,
        "pushed to the bare remote"
    );
    let message = git(&rig.repo, &["log", "-1", "--format=%B", &branch]);
    assert!(message.starts_with("feat: greet politely\n"), "{message}");
    assert!(
        message.contains(&format!("Worktrain-Session: {id}")),
        "{message}"
    );
    assert!(
        message.contains("Worktrain-Workflow: e2e-one@"),
        "{message}"
    );
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:src/greet.txt")]),
        "hello, please\n"
    );

    // The pull request as GitHub received it: the template filled, the footer.
    let creates: Vec<Value> = gh
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path == "/repos/acme/widgets/pulls")
        .map(|q| q.body)
        .collect();
    assert_eq!(creates.len(), 1);
    let pr = &creates[0];
    assert_eq!(pr["title"], "Greet politely");
    assert_eq!(pr["head"], branch.as_str());
    assert_eq!(pr["base"], "main");
    let body = pr["body"].as_str().unwrap();
    assert!(
        body.starts_with("## Summary\n\nThe greeting now says please."),
        "{body}"
    );
    assert!(body.contains("Closes #12"), "{body}");
    assert!(body.contains("- [ ] tests pass"), "{body}");
    assert!(body.contains(&format!("session `{id}`")), "{body}");
    assert!(body.contains("/console/sessions/"), "{body}");
    let auth = gh
        .requests()
        .into_iter()
        .find(|q| q.path == "/repos/acme/widgets/pulls" && q.method == "POST")
        .and_then(|q| q.header("authorization").map(str::to_owned))
        .unwrap_or_default();
    assert!(auth.contains("t0ken-e2e"), "the identity's token: {auth}");

    // Reported on the issue; a commit status on the pushed head.
    let comments = gh.comments_on("acme/widgets", 12);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0]
            .1
            .contains("https://github.com/acme/widgets/pull/13")
    );
    assert_eq!(gh.state().statuses.len(), 1);
    assert_eq!(gh.state().statuses[0].1, head);

    // The worktree is gone, the branch stays; the events tell the stages.
    assert!(
        rig.git_worktrees().is_empty(),
        "worktree removed: {:?}",
        rig.git_worktrees()
    );
    assert_eq!(
        git(&rig.repo, &["branch", "--list", &branch]).trim(),
        branch
    );
    let ev = rig.events(&id);
    let stages: Vec<String> = of_kind(&ev, "delivery_stage_completed")
        .iter()
        .map(|e| e["body"]["stage"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stages,
        [
            "handoff",
            "commit",
            "secret_scan",
            "push",
            "pull_request",
            "report_back",
            "cleanup"
        ]
    );
    assert_eq!(of_kind(&ev, "delivery_finished").len(), 1);
    // The session detail and `session show` say the same.
    let detail = rig.detail(&id);
    assert_eq!(
        detail["run"]["delivery"]["pr_url"], "https://github.com/acme/widgets/pull/13",
        "{detail:#}"
    );
    let show = rig.cli(&["session", "show", &id]);
    assert!(
        show.stdout.contains("delivery  delivered (pull_request"),
        "{show:?}"
    );
}

/// The remote is HTTPS for real, on a private certificate authority (a forge behind a
/// company's own CA): the daemon is given that authority the way an operator would
/// (`GIT_SSL_CAINFO` in its environment) and the token by the user's git credential
/// helper. The worktree's base is fetched and the branch pushed over TLS, authenticated;
/// the pull request opens as usual.
#[test]
fn a_forge_on_a_private_certificate_authority_gets_the_push_over_https() {
    use worktrain_testkit::git_http::{GitHttpServer, TestCa};
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    const PUSH_TOKEN: &str = "ghp_httpsPushT0kenNeverShown";
    let (mut rig, gh) = rig_with_forge(&["goal-deliver-E1"]);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    let tls_dir = rig.env.dir().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let ca = TestCa::generate(&tls_dir).unwrap();
    let server = rig
        .block_on(GitHttpServer::start_tls(
            rig.env.dir().to_path_buf(),
            PUSH_TOKEN,
            &ca.cert_pem,
            &ca.key_pem,
        ))
        .unwrap();
    let url = format!("{}/remote.git", server.base_url());
    assert!(url.starts_with("https://localhost:"), "{url}");
    git(&rig.repo, &["remote", "set-url", "origin", &url]);
    let store = rig.env.dir().join("git-credentials");
    std::fs::write(
        &store,
        format!(
            "{}\n",
            server
                .base_url()
                .replace("https://", &format!("https://x-access-token:{PUSH_TOKEN}@"))
        ),
    )
    .unwrap();
    git(
        &rig.repo,
        &[
            "config",
            "credential.helper",
            &format!("store --file={}", store.display()),
        ],
    );
    rig.daemon_env.push((
        "GIT_SSL_CAINFO".into(),
        ca.ca_pem.to_str().unwrap().to_owned(),
    ));
    rig.start_daemon();
    let id = spawn_delivering(&rig, "goal-deliver-E1");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    assert_eq!(
        r["pr_url"], "https://github.com/acme/widgets/pull/13",
        "{r:#}"
    );
    let branch = format!("worktrain/{id}");
    let head = git(&rig.repo, &["rev-parse", &branch]).trim().to_owned();
    assert_eq!(remote_head(&rig, &branch), head, "pushed over HTTPS");
    let requests = server.requests();
    let pushes: Vec<_> = requests
        .iter()
        .filter(|q| q.method == "POST" && q.path == "/remote.git/git-receive-pack")
        .collect();
    assert_eq!(pushes.len(), 1, "{requests:#?}");
    assert!(pushes[0].authorized, "{requests:#?}");
    assert!(
        requests
            .iter()
            .any(|q| q.method == "POST" && q.path == "/remote.git/git-upload-pack" && q.authorized),
        "the worktree's base was fetched over HTTPS too: {requests:#?}"
    );
    let opened = gh
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path == "/repos/acme/widgets/pulls")
        .count();
    assert_eq!(opened, 1, "one pull request");
    let ev = format!("{:?}", rig.events(&id));
    assert!(!ev.contains(PUSH_TOKEN), "the token reached the events");
    assert!(
        !rig.log_tail().contains(PUSH_TOKEN),
        "the token reached the log"
    );
}

/// A forge failure is `delivery_failed` with the stage and the forge's message in
/// `await`, the API and `worktrain status`; after the fix, `retry-delivery` continues
/// from that stage (nothing is pushed or committed twice).
#[test]
fn a_failed_delivery_is_surfaced_and_retry_delivery_continues_from_the_failed_stage() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (mut rig, gh) = rig_with_forge(&["goal-deliver-F1"]);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    gh.answer_once(
        "GET",
        "/repos/acme/widgets/pulls",
        401,
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
    );
    rig.start_daemon();
    let id = spawn_delivering(&rig, "goal-deliver-F1");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::FAILURE, "{r:#}");
    assert_eq!(r["failure"], "delivery_failed", "{r:#}");
    assert_eq!(r["delivery"]["state"], "failed");
    assert_eq!(r["delivery"]["failure"]["stage"], "pull_request");
    assert_eq!(r["delivery"]["failure"]["retryable"], false);
    let msg = r["delivery"]["failure"]["message"].as_str().unwrap();
    assert!(msg.contains("401: Bad credentials"), "{msg}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("delivery failed at pull_request"),
        "{r:#}"
    );
    let status = rig.cli(&["status"]);
    assert!(
        status.stdout.contains(
            "delivery FAILED at pull_request: opening the pull request: 401: Bad credentials"
        ),
        "{status:?}"
    );
    let plain_await = rig.cli(&["await", &id, "--timeout", "5s"]);
    assert!(
        plain_await
            .stdout
            .contains("delivery: FAILED at pull_request"),
        "{plain_await:?}"
    );
    let branch = format!("worktrain/{id}");
    let pushed = remote_head(&rig, &branch);
    assert!(
        !rig.git_worktrees().is_empty(),
        "the worktree is kept after a failed delivery"
    );

    let retried = rig.cli(&["session", "retry-delivery", &id]);
    assert_eq!(retried.code, exit::OK, "{retried:?}");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["pr_url"], "https://github.com/acme/widgets/pull/13");
    assert_eq!(r["delivery"]["attempt"], 2);
    assert_eq!(remote_head(&rig, &branch), pushed);
    let ev = rig.events(&id);
    let pushes = of_kind(&ev, "delivery_stage_completed")
        .iter()
        .filter(|e| e["body"]["stage"] == "push")
        .count();
    assert_eq!(pushes, 1, "the push is not repeated");
    assert_eq!(of_kind(&ev, "work_committed").len(), 1);
    assert_eq!(gh.pulls("acme/widgets").len(), 1);
    assert_eq!(gh.comments_on("acme/widgets", 12).len(), 1);
    // Delivered: a second retry is refused with a reason.
    let again = rig.cli(&["session", "retry-delivery", &id]);
    assert_ne!(again.code, exit::OK);
    assert!(again.stderr.contains("already delivered"), "{again:?}");
}

/// The daemon is killed (SIGKILL) right after each stage is recorded; restarted, it
/// finishes the delivery: exactly one pull request and one comment every time.
#[test]
fn killed_between_every_pair_of_stages_the_daemon_delivers_once_on_restart() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let stages = [
        "handoff",
        "commit",
        "secret_scan",
        "push",
        "pull_request",
        "report_back",
    ];
    let goals: Vec<String> = (0..stages.len())
        .map(|i| format!("goal-kill-K{i}"))
        .collect();
    let goal_refs: Vec<&str> = goals.iter().map(String::as_str).collect();
    let (mut rig, gh) = rig_with_forge(&goal_refs);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    for (i, stage) in stages.iter().enumerate() {
        // Each session reports on its own issue.
        let issue = 100 + i as u64;
        gh.state()
            .items
            .get_mut("acme/widgets")
            .unwrap()
            .push(json!({
            "number": issue, "state": "open", "title": "t", "labels": [], "assignees": [],
            "updated_at": "2026-01-01T00:00:00Z"}));
        rig.start_daemon_with(&[("WORKTRAIN_TEST_DELIVERY_HANG_AFTER", stage)]);
        let id = rig.spawn_in_repo(
            "e2e-one",
            &goals[i],
            &[
                "--delivery",
                "pull_request",
                "--source",
                &format!("github:acme/widgets#{issue}"),
            ],
        );
        wait_for(
            &format!("{stage} recorded"),
            Duration::from_secs(90),
            || {
                let ev = rig.api_events(&id);
                of_kind(&ev, "delivery_stage_completed")
                    .iter()
                    .any(|e| e["body"]["stage"] == *stage)
                    .then_some(())
            },
            || rig.log_tail(),
        );
        rig.sigkill_daemon();
        rig.start_daemon();
        let (code, results) = rig.await_all(&[&id], "120s");
        let r = result_of(&results, &id);
        assert_eq!(
            code,
            exit::OK,
            "killed after {stage}: {r:#}\n{}",
            rig.log_tail()
        );
        assert_eq!(r["delivery"]["state"], "delivered", "after {stage}: {r:#}");
        let branch = format!("worktrain/{id}");
        let pulls: Vec<Value> = gh
            .pulls("acme/widgets")
            .into_iter()
            .filter(|p| p["head"]["ref"] == branch.as_str())
            .collect();
        assert_eq!(pulls.len(), 1, "killed after {stage}");
        assert_eq!(
            gh.comments_on("acme/widgets", issue).len(),
            1,
            "killed after {stage}"
        );
        let ev = rig.events(&id);
        assert_eq!(
            of_kind(&ev, "work_committed").len(),
            1,
            "killed after {stage}"
        );
        assert_eq!(of_kind(&ev, "delivery_finished").len(), 1);
        rig.sigkill_daemon();
    }
}

/// The real `issues.labeled` delivery of the corpus, signed and POSTed to the daemon,
/// dispatches a session whose trigger delivers a pull request: the fake LLM agent fixes
/// the README, the work is committed on the branch, pushed to the bare remote, opened on
/// the fake GitHub with the repository's own (real, kubernetes) template filled, reported
/// on the source issue with a commit status; the worktree goes, the branch stays. The
/// forge receives exactly these requests, in this order, and no others.
#[test]
fn a_webhook_delivery_becomes_a_pull_request_on_the_issue_it_came_from() {
    use crate::triggers::{corpus, deliver, dispatched_session, triggers_yml};
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let goal = "Spelling error in the README";
    let handoff = json!([{
        "kind": "handoff", "commitType": "docs", "commitSubject": "fix the README's spelling",
        "prTitle": "Fix the spelling error in the README",
        "prBody": "The README said `helo`; it now says `hello`.",
        "filesChanged": ["README"], "followUps": ["spell-check the docs in CI"]
    }]);
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            goal,
            vec![
                write_file("README", "hello, world\n"),
                Turn::tool(
                    "complete_step",
                    json!({"notes": "spelling fixed", "artifacts": handoff}),
                ),
            ],
        )],
        ..RigSpec::default()
    });
    // The repository carries a real pull request template.
    let template_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/pr-templates/github/kubernetes__kubernetes.PULL_REQUEST_TEMPLATE.md"
    ))
    .unwrap();
    std::fs::create_dir_all(rig.repo.join(".github")).unwrap();
    std::fs::write(
        rig.repo.join(".github/PULL_REQUEST_TEMPLATE.md"),
        &template_text,
    )
    .unwrap();
    git(&rig.repo, &["add", "-A"]);
    git(&rig.repo, &["commit", "-q", "-m", "template"]);
    git(&rig.repo, &["push", "-q", "origin", "main"]);
    // The fake GitHub holds the issue the recorded payload is about.
    let gh = rig.block_on(FakeGithub::start()).unwrap();
    gh.set_items(
        "Codertocat/Hello-World",
        vec![
            json!({"number": 1, "state": "open", "title": "Spelling error in the README file",
                    "labels": [{"name": "bug"}], "assignees": [],
                    "updated_at": "2019-05-15T15:20:18Z"}),
        ],
    );
    let extra = format!(
        "    delivery:
      target: pull_request
      identity: bot
      labels: [worktrain]
identities:
  bot:
    github: {{token: $E2E_FORGE_TOKEN, api_url: {}}}
",
        gh.base_url()
    );
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        triggers_yml(&rig, &extra),
    )
    .unwrap();
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-webhook-e2e".into()));
    rig.start_daemon();

    let (status, answer) = deliver(
        &rig,
        "issues",
        "delivery-pr-1",
        &corpus("issues.labeled.json"),
    );
    assert_eq!(status, 202, "{answer}\n{}", rig.log_tail());
    let id = dispatched_session(&rig, &answer);
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    let pr_url = "https://github.com/Codertocat/Hello-World/pull/2";
    assert_eq!(r["pr_url"], pr_url, "{r:#}");
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    let detail = rig.detail(&id);
    assert_eq!(detail["run"]["trigger"]["kind"], "webhook", "{detail:#}");
    assert_eq!(
        detail["run"]["trigger"]["source"],
        "github:Codertocat/Hello-World#1"
    );

    // The commit on the branch, on the bare remote, with exactly the agent's file.
    let branch = format!("worktrain/{id}");
    let head = git(&rig.repo, &["rev-parse", &branch]).trim().to_owned();
    assert_eq!(
        remote_head(&rig, &branch),
        head,
        "pushed to the bare remote"
    );
    assert_eq!(
        git(&rig.repo, &["log", "-1", "--format=%s", &branch]).trim(),
        "docs: fix the README's spelling"
    );
    assert_eq!(
        git(&rig.repo, &["diff", "--name-only", "main", &branch]).trim(),
        "README"
    );
    assert_eq!(
        git(&rig.repo, &["show", &format!("{branch}:README")]),
        "hello, world\n"
    );

    // Exactly the requests GitHub received, in order.
    let requests = gh.requests();
    let seen: Vec<String> = requests
        .iter()
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    let repo = "/repos/Codertocat/Hello-World";
    let head_q = format!("Codertocat%3Aworktrain%2F{id}");
    assert_eq!(
        seen,
        [
            format!("GET {repo}/pulls?head={head_q}&state=open&per_page=100"),
            format!("POST {repo}/pulls"),
            format!("POST {repo}/issues/2/labels"),
            format!("GET {repo}/issues/1/comments?per_page=100"),
            format!("POST {repo}/issues/1/comments"),
            format!("POST {repo}/statuses/{head}"),
        ],
        "{requests:#?}"
    );
    for q in &requests {
        assert_eq!(
            q.header("authorization"),
            Some("Bearer t0ken-webhook-e2e"),
            "{q:#?}"
        );
    }
    let console = format!("{}/console/sessions/{id}", rig.daemon.as_ref().unwrap().url);
    let marker = worktrain_delivery::marker(id.parse().unwrap());
    let footer = format!(
        "---\n<sub>Delivered by worktrain · session `{id}` · workflow `e2e-one` · [console]({console})</sub>\n{marker}"
    );
    let body = worktrain_delivery::template::fill(
        Some(&template_text),
        &worktrain_delivery::template::Fill::from_handoff(&handoff[0], Some("#1".into()), footer),
    );
    assert!(
        body.contains("The README said `helo`; it now says `hello`.")
            && body.contains("**What this PR does / why we need it**:")
            && body.contains("fixes #1")
            && body.contains("- spell-check the docs in CI"),
        "{body}"
    );
    assert_eq!(
        requests[1].body,
        json!({"title": "Fix the spelling error in the README", "head": branch,
               "base": "main", "body": body, "draft": false})
    );
    assert_eq!(requests[2].body, json!({"labels": ["worktrain"]}));
    assert_eq!(
        requests[4].body,
        json!({"body": format!(
            "worktrain opened {pr_url} for this: Fix the spelling error in the README\n\n<sub>session `{id}` · workflow `e2e-one` · [session]({console})</sub>\n{marker}"
        )})
    );
    assert_eq!(
        requests[5].body,
        json!({"state": "success", "target_url": console,
               "description": format!("worktrain session {id}"), "context": "worktrain"})
    );

    // The worktree is gone, the branch stays.
    assert!(
        rig.git_worktrees().is_empty(),
        "worktree removed: {:?}",
        rig.git_worktrees()
    );
    assert_eq!(
        git(&rig.repo, &["branch", "--list", &branch]).trim(),
        branch
    );
    // The token is in no event.
    let log = serde_json::to_string(&rig.events(&id)).unwrap();
    assert!(!log.contains("t0ken-webhook-e2e"));
}

/// With the default `commit: declared`, the delivered commit holds exactly the handoff's
/// `filesChanged`: a file the agent wrote without declaring it is not committed, not
/// pushed and not in the pull request — and not lost either: it is committed on the
/// local branch `worktrain-undeclared/<session>`, named in the commit stage's record.
#[test]
fn undeclared_changes_are_not_delivered_and_are_kept_on_their_own_branch() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (mut rig, gh) = rig_with_routes(vec![route(
        "goal-undeclared-U1",
        vec![
            write_file("src/greet.txt", "hello, please\n"),
            write_file("notes/scratch.md", "what I tried\n"),
            Turn::tool(
                "complete_step",
                json!({"notes": "greeting changed", "artifacts": handoff()}),
            ),
        ],
    )]);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    rig.start_daemon();
    let id = spawn_delivering(&rig, "goal-undeclared-U1");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    let branch = format!("worktrain/{id}");
    assert_eq!(
        git(&rig.repo, &["diff", "--name-only", "main", &branch]).trim(),
        "src/greet.txt",
        "only the declared file is delivered"
    );
    let remote = rig.env.dir().join("remote.git");
    let pushed = git(&remote, &["ls-tree", "-r", "--name-only", &branch]);
    assert!(!pushed.contains("notes/"), "{pushed}");
    // Kept: on its own local branch, on top of the delivered commit; never pushed.
    let kept = format!("worktrain-undeclared/{id}");
    assert_eq!(
        git(&rig.repo, &["show", &format!("{kept}:notes/scratch.md")]),
        "what I tried\n"
    );
    assert_eq!(
        git(&rig.repo, &["rev-parse", &format!("{kept}~1")]),
        git(&rig.repo, &["rev-parse", &branch])
    );
    assert!(
        git(&remote, &["branch", "--list", &kept]).trim().is_empty(),
        "the kept branch is not pushed"
    );
    // The record says so.
    let ev = rig.events(&id);
    let commit = of_kind(&ev, "delivery_stage_completed")
        .into_iter()
        .find(|e| e["body"]["stage"] == "commit")
        .unwrap()["body"]["outcome"]
        .clone();
    assert_eq!(
        commit["undeclared"],
        json!(["notes/scratch.md"]),
        "{commit:#}"
    );
    assert_eq!(commit["kept_on"], kept.as_str());
    assert!(
        commit["summary"].as_str().unwrap().contains(&format!(
            "1 undeclared file(s) kept on `{kept}`: notes/scratch.md"
        )),
        "{commit:#}"
    );
    // The worktree is gone; the session branch did not pick the leftovers up.
    assert!(rig.git_worktrees().is_empty());
    assert_eq!(of_kind(&ev, "work_committed").len(), 1);
    assert_eq!(gh.pulls("acme/widgets").len(), 1);
}

/// Delivery never makes an empty commit. A session that changed nothing: with
/// `pull_request`, the delivery fails at `commit` ("nothing to deliver"), nothing is
/// pushed and no pull request is asked for; with `commit_only`, the delivery completes,
/// its commit stage saying "the session changed nothing" — no commit in either case.
#[test]
fn a_session_that_changed_nothing_is_never_an_empty_commit() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let nothing = |goal: &str| {
        route(
            goal,
            vec![Turn::tool(
                "complete_step",
                json!({"notes": "nothing needed changing", "artifacts": handoff()}),
            )],
        )
    };
    let (mut rig, gh) = rig_with_routes(vec![nothing("goal-empty-N1"), nothing("goal-empty-N2")]);
    rig.daemon_env
        .push(("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()));
    rig.start_daemon();
    let main = git(&rig.repo, &["rev-parse", "main"]).trim().to_owned();

    let id = spawn_delivering(&rig, "goal-empty-N1");
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::FAILURE, "{r:#}");
    assert_eq!(r["delivery"]["failure"]["stage"], "commit", "{r:#}");
    let msg = r["delivery"]["failure"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "nothing to deliver: `worktrain/{id}` has no commit beyond `main`"
        )),
        "{msg}"
    );
    let branch = format!("worktrain/{id}");
    assert_eq!(git(&rig.repo, &["rev-parse", &branch]).trim(), main);
    assert!(
        git(
            &rig.env.dir().join("remote.git"),
            &["branch", "--list", &branch]
        )
        .trim()
        .is_empty(),
        "nothing pushed"
    );
    let ev = rig.events(&id);
    assert!(of_kind(&ev, "work_committed").is_empty());
    assert!(
        gh.requests().is_empty(),
        "no forge request: {:#?}",
        gh.requests()
    );

    let id = rig.spawn_in_repo("e2e-one", "goal-empty-N2", &["--delivery", "commit_only"]);
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(r["delivery"]["state"], "delivered", "{r:#}");
    let ev = rig.events(&id);
    assert!(of_kind(&ev, "work_committed").is_empty());
    let commit = of_kind(&ev, "delivery_stage_completed")
        .into_iter()
        .find(|e| e["body"]["stage"] == "commit")
        .unwrap()["body"]["outcome"]
        .clone();
    assert_eq!(
        commit["summary"], "the session changed nothing",
        "{commit:#}"
    );
    assert_eq!(
        git(&rig.repo, &["rev-parse", &format!("worktrain/{id}")]).trim(),
        main,
        "no commit on the branch"
    );
}

/// Notifications about delivery: a failed delivery is its own moment (`delivery_failed`,
/// with the stage and the forge's message), and a delivered session's message links the
/// pull request it opened.
#[test]
fn delivery_notifies_a_failed_delivery_and_links_the_pull_request_it_opened() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (mut rig, gh) = rig_with_forge(&["goal-deliver-notify-D1", "goal-deliver-notify-D2"]);
    let slack = rig
        .block_on(worktrain_testkit::receiver::FakeReceiver::start())
        .unwrap();
    let file = rig.env.home().join("triggers.yml");
    let text = std::fs::read_to_string(&file).unwrap()
        + "notifications:\n  team-slack:\n    kind: slack\n    url: $E2E_SLACK_URL\n    events: [completed, delivery_failed]\n";
    std::fs::write(&file, text).unwrap();
    rig.daemon_env.extend([
        ("E2E_FORGE_TOKEN".into(), "t0ken-e2e".into()),
        ("E2E_SLACK_URL".into(), slack.url("/services/T0/B0/dlv")),
    ]);
    gh.answer_once(
        "GET",
        "/repos/acme/widgets/pulls",
        401,
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
    );
    rig.start_daemon();
    let failed = spawn_delivering(&rig, "goal-deliver-notify-D1");
    let (code, _) = rig.await_all(&[&failed], "120s");
    assert_eq!(code, exit::FAILURE);
    let got = rig.block_on(slack.wait_for(1, Duration::from_secs(30)));
    assert_eq!(got.len(), 1, "{got:#?}");
    let t = got[0].body["text"].as_str().unwrap().to_owned();
    assert!(
        t.contains(&format!("session {failed}: delivery failed")),
        "{t}"
    );
    assert!(t.contains("delivery failed at pull_request"), "{t}");
    assert!(t.contains("401: Bad credentials"), "{t}");
    assert!(t.contains("Source: github:acme/widgets#12"), "{t}");

    let delivered = spawn_delivering(&rig, "goal-deliver-notify-D2");
    let (code, results) = rig.await_all(&[&delivered], "120s");
    assert_eq!(code, exit::OK, "{:#}", result_of(&results, &delivered));
    let got = rig.block_on(slack.wait_for(2, Duration::from_secs(30)));
    assert_eq!(got.len(), 2, "{got:#?}");
    let md = got[1].body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        md.contains(&format!("session {delivered} completed")),
        "{md}"
    );
    assert!(
        md.contains("<https://github.com/acme/widgets/pull/13|Pull request>"),
        "{md}"
    );
    assert!(md.contains(&format!(
        "/console/sessions/{delivered}|Open in the console>"
    )));
    wait_for(
        "the notification events",
        Duration::from_secs(30),
        || {
            let ev = rig.events(&failed);
            let sent = of_kind(&ev, "notification_sent");
            (sent.len() == 1 && sent[0]["body"]["event"] == "delivery_failed").then_some(())
        },
        || format!("{:#?}", rig.events(&failed).last()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(slack.requests().len(), 2, "one message per session");
}
