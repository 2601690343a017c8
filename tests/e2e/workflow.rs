//! `worktrain workflow list|show|validate` and workflow files named by path.

use serde_json::Value;

use crate::support::{CONTRACT_WORKFLOW, Env, exit};

/// A workflow file with a typo (`promt`) on line 9, column 5.
const TYPO_WORKFLOW: &str = "\
schemaVersion: 1
id: typo
name: Typo
description: d
version: '1'
steps:
  - id: plan
    title: Plan
    promt: plan it
";

fn entries(env: &Env) -> Vec<Value> {
    env.ok_json(&["workflow", "list"])["workflows"]
        .as_array()
        .cloned()
        .unwrap()
}

#[test]
fn list_shows_the_bundled_quick_task() {
    let env = Env::initialised();
    let list = entries(&env);
    let qt = list
        .iter()
        .find(|e| e["id"] == "quick-task")
        .expect("quick-task listed");
    assert_eq!(qt["source"], "bundled", "{qt}");
    assert!(qt.get("shadowed_by").is_none(), "{qt}");
    assert!(qt.get("error").is_none(), "{qt}");
    let human = env.run(&["workflow", "list"]);
    human.code(exit::OK);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("quick-task") && l.contains("bundled")),
        "{human:?}"
    );
}

#[test]
fn user_workflow_shadows_the_bundled_one() {
    let env = Env::initialised();
    let mine = env.home().join("workflows/my-quick.yaml");
    std::fs::write(
        &mine,
        CONTRACT_WORKFLOW.replace("id: contract-demo", "id: quick-task"),
    )
    .unwrap();
    let list = entries(&env);
    let bundled = list
        .iter()
        .find(|e| e["id"] == "quick-task" && e["source"] == "bundled")
        .unwrap();
    let shadow = bundled["shadowed_by"]
        .as_str()
        .expect("bundled quick-task is marked shadowed");
    assert!(
        shadow.starts_with("user:") && shadow.ends_with("my-quick.yaml"),
        "{bundled}"
    );
    let user = list
        .iter()
        .find(|e| e["id"] == "quick-task" && e["source"] == "user")
        .unwrap();
    assert!(user.get("shadowed_by").is_none(), "{user}");
    // The user's version wins when starting by id.
    let s = env.start("quick-task", "g");
    assert_eq!(s["step"]["id"], "plan", "{s}");
    let show = env.run(&["workflow", "show", "quick-task"]);
    show.code(exit::OK);
    assert!(show.stdout.contains("source: user:"), "{show:?}");
}

#[test]
fn broken_workflow_file_is_listed_with_its_error() {
    let env = Env::initialised();
    std::fs::write(env.home().join("workflows/typo.yaml"), TYPO_WORKFLOW).unwrap();
    std::fs::write(env.home().join("workflows/garbage.json"), "{ not json").unwrap();
    let list = entries(&env);
    for id in ["typo", "garbage"] {
        let e = list
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} dropped from the list: {list:?}"));
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let typo = list.iter().find(|e| e["id"] == "typo").unwrap();
    assert!(typo["error"].as_str().unwrap().contains(":9:5"), "{typo}");
    // quick-task still loads.
    assert!(
        list.iter()
            .any(|e| e["id"] == "quick-task" && e.get("error").is_none())
    );

    let human = env.run(&["workflow", "list"]);
    human.code(exit::OK);
    assert!(human.stdout.contains("FAILED TO LOAD"), "{human:?}");
    assert!(
        human.stderr.contains("2 workflow file(s) failed to load"),
        "{human:?}"
    );

    // Starting the broken one by id says it exists but is broken.
    let r = env.run_json(&["session", "start", "--workflow", "typo", "--goal", "g"]);
    r.code(exit::INVALID);
    assert_eq!(r.error_code(), "workflow_invalid");
}

#[test]
fn validate_bad_file_reports_location_path_and_rule() {
    let env = Env::initialised();
    // Both the oldest and the current language version (older files are upgraded first).
    for version in ["1", "2"] {
        let file = env.write(
            &format!("bad-v{version}.yaml"),
            TYPO_WORKFLOW.replace("schemaVersion: 1", &format!("schemaVersion: {version}")),
        );
        let r = env.run(&["workflow", "validate", file.to_str().unwrap()]);
        r.code(exit::INVALID);
        let loc = format!("{}:9:5", file.display());
        assert!(r.stdout.contains(&loc), "expected {loc}: {r:?}");
        assert!(r.stdout.contains("steps[0].promt"), "{r:?}");
        assert!(r.stdout.contains("[rule: additional_properties]"), "{r:?}");
    }
    let bad = env.dir().join("bad-v1.yaml");

    let j = env.run_json(&["workflow", "validate", bad.to_str().unwrap()]);
    j.code(exit::INVALID);
    let v = j.json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["results"][0]["error"]["code"], "workflow_invalid");

    // Syntax errors too carry a position and a rule.
    let broken = env.write("broken.yaml", "schemaVersion: 1\nid: [unclosed\n");
    let r = env.run(&["workflow", "validate", broken.to_str().unwrap()]);
    r.code(exit::INVALID);
    assert!(
        r.stdout.contains(&format!("{}:", broken.display())) && r.stdout.contains("[rule: "),
        "{r:?}"
    );

    // One bad file among good ones still fails the whole command.
    let good = env.write("good.yaml", CONTRACT_WORKFLOW);
    let r = env.run(&[
        "workflow",
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    r.code(exit::INVALID);
    assert!(
        r.stdout.contains("ok ") && r.stdout.contains("FAIL"),
        "{r:?}"
    );
}

#[test]
fn validate_good_file_and_id_exit_zero() {
    let env = Env::initialised();
    let good = env.write("good.yaml", CONTRACT_WORKFLOW);
    let r = env.run(&["workflow", "validate", good.to_str().unwrap(), "quick-task"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("contract-demo, 3 steps"), "{r:?}");
    let v = env.ok_json(&["workflow", "validate", good.to_str().unwrap()]);
    assert_eq!(v["valid"], true);
    assert_eq!(v["results"][0]["id"], "contract-demo");
    assert_eq!(v["results"][0]["steps"], 3);
}

#[test]
fn show_prints_steps() {
    let env = Env::initialised();
    let r = env.run(&["workflow", "show", "quick-task"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("quick-task"), "{r:?}");
    assert!(r.stdout.contains("Steps:"), "{r:?}");
    let do_it = r
        .stdout
        .lines()
        .position(|l| l.contains("1.") && l.contains("do-it"));
    let verify = r
        .stdout
        .lines()
        .position(|l| l.contains("2.") && l.contains("verify"));
    assert!(
        do_it.is_some() && verify.is_some() && do_it < verify,
        "{r:?}"
    );
    let v = env.ok_json(&["workflow", "show", "quick-task"]);
    assert_eq!(
        v["workflow"]["steps"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    assert_eq!(v["hash"].as_str().map(str::len), Some(64), "{v}");
}

#[test]
fn a_workflow_path_works_wherever_an_id_does() {
    let env = Env::initialised();
    env.write("x.yaml", CONTRACT_WORKFLOW);
    // Relative to the working directory (the scratch dir).
    let s = env.start("./x.yaml", "via path");
    assert_eq!(s["workflow"]["id"], "contract-demo", "{s}");
    assert_eq!(s["step"]["id"], "plan");
    let id = s["session_id"].as_str().unwrap();
    let show = env.show(id);
    let source = show["session"]["workflow_source"].as_str().unwrap();
    assert!(
        source.starts_with("file:") && source.ends_with("x.yaml"),
        "{show}"
    );

    env.run(&["workflow", "show", "./x.yaml"]).code(exit::OK);
    env.run(&["workflow", "validate", "x.yaml"]).code(exit::OK);
    env.write("notes/plan.md", "p");
    env.write("notes/review.md", "r");
    env.write(
        "notes/review.json",
        r#"{"artifacts": [{"kind": "review_verdict", "verdict": "clean", "findings": []}]}"#,
    );
    env.write("notes/wrap-up.md", "w");
    let r = env.run(&["run", "./x.yaml", "--goal", "g", "--notes-from", "notes"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("Workflow complete"), "{r:?}");
    // Sessions are filtered by the workflow id from the file.
    assert_eq!(env.sessions(&["--workflow", "contract-demo"]).len(), 2);

    let missing = env.run_json(&[
        "session",
        "start",
        "--workflow",
        "./nope.yaml",
        "--goal",
        "g",
    ]);
    missing.code(exit::NOT_FOUND);
    assert_eq!(missing.error_code(), "workflow_not_found");
}

#[test]
fn a_session_keeps_its_pinned_workflow_when_the_file_changes() {
    let env = Env::initialised();
    let path = env.write("x.yaml", CONTRACT_WORKFLOW);
    let s = env.start("./x.yaml", "pinned");
    std::fs::write(
        &path,
        CONTRACT_WORKFLOW.replace("title: Review", "title: Changed"),
    )
    .unwrap();
    let next = env.advance(&crate::support::advance_token(&s), "planned");
    assert_eq!(
        next["step"]["title"], "Review",
        "the session must run the version it started with: {next}"
    );
    assert_eq!(next["workflow"]["hash"], s["workflow"]["hash"]);
}
