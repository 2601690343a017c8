//! A GitHub App identity of triggers.yml with the real daemon: `private_key_file` names
//! the test-only key, the fake GitHub accepts nothing but the installation tokens it
//! issues for that App's verified JWTs, and a `spawn --delivery pull_request` opens its
//! pull request and reports back with them.

use serde_json::json;
use worktrain_testkit::Turn;
use worktrain_testkit::forge::FakeApp;
use worktrain_testkit::forge::github::FakeGithub;

use crate::daemon_rig::{Rig, RigSpec, have_git, result_of, route, write_file};
use crate::support::exit;

#[test]
fn an_app_identity_of_triggers_yml_delivers_with_its_installation_token() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            "goal-app-A1",
            vec![
                write_file("src/greet.txt", "hello, app\n"),
                Turn::tool(
                    "complete_step",
                    json!({"notes": "done", "artifacts": [{
                        "kind": "handoff", "commitType": "feat", "commitSubject": "greet as an app",
                        "prTitle": "Greet as an app", "prBody": "Opened by a GitHub App.",
                        "filesChanged": ["src/greet.txt"]}]}),
                ),
            ],
        )],
        ..RigSpec::default()
    });
    let gh = rig.block_on(FakeGithub::start()).unwrap();
    gh.set_items(
        "acme/widgets",
        vec![
            json!({"number": 12, "state": "open", "title": "Greet", "labels": [],
                    "assignees": [], "updated_at": "2026-01-01T00:00:00Z"}),
        ],
    );
    gh.require_app(FakeApp::with_test_key(4242, 777, 3600));
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../worktrain-testkit/fixtures/github-app-test-only.private-key.pem"
    );
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        format!(
            "version: 1\nidentities:\n  app:\n    github_app:\n      app_id: 4242\n      installation_id: 777\n      private_key_file: {key}\n      api_url: {}\n",
            gh.base_url()
        ),
    )
    .unwrap();
    rig.start_daemon();
    let id = rig.spawn_in_repo(
        "e2e-one",
        "goal-app-A1",
        &[
            "--delivery",
            "pull_request",
            "--source",
            "github:acme/widgets#12",
        ],
    );
    let (code, results) = rig.await_all(&[&id], "120s");
    let r = result_of(&results, &id);
    assert_eq!(code, exit::OK, "{r:#}\n{}", rig.log_tail());
    assert_eq!(
        r["pr_url"], "https://github.com/acme/widgets/pull/13",
        "{r:#}"
    );
    assert_eq!(gh.app_tokens().len(), 1, "one installation token");
    let token = gh.app_tokens()[0].0.clone();
    let reqs = gh.requests();
    assert_eq!(reqs[0].path, "/app/installations/777/access_tokens");
    let create = reqs
        .iter()
        .find(|q| q.method == "POST" && q.path == "/repos/acme/widgets/pulls")
        .expect("the pull request was opened");
    assert_eq!(
        create.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(gh.comments_on("acme/widgets", 12).len(), 1);
    // The token is in no event.
    let events = serde_json::to_string(&rig.events(&id)).unwrap();
    assert!(!events.contains(&token));
}
