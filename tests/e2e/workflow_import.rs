//! `worktrain workflow import`: WorkRail's own workflows (the corpus, read in place)
//! converted by the real binary, written where the catalog finds them, then validated,
//! linted and simulated by the same binary as any other workflow.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::{Env, Run, collect, exit};

/// Run the binary with `dir` as the working directory.
fn run_in(env: &Env, dir: &Path, args: &[&str]) -> Run {
    let mut c = env.cmd(args);
    c.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    collect(args, c.spawn().expect("spawn worktrain"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/workrail-workflows")
}

#[test]
fn import_converts_the_workrail_corpus_with_a_report_and_the_results_run() {
    let env = Env::initialised();
    let corpus = corpus();
    let out = env.dir().join("converted");
    let run = env.run_json(&[
        "workflow",
        "import",
        corpus.to_str().unwrap(),
        "--from",
        "workrail",
        "--out",
        out.to_str().unwrap(),
    ]);
    // Two files fail (WorkRail's own invalid example; an injection whose routine the
    // corpus lacks): exit 6, everything else is written.
    run.code(exit::INVALID);
    let report = run.json();
    assert_eq!(report["failed"], 2, "{report:#}");
    assert_eq!(report["skipped"], 1, "{report:#}");
    assert_eq!(report["converted_with_notes"], 18, "{report:#}");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 21);
    for f in files {
        match f["status"].as_str().unwrap() {
            "converted_with_notes" => {
                let written = f["output"].as_str().unwrap();
                assert!(Path::new(written).is_file(), "{written}");
                assert!(f["notes"].as_array().is_some_and(|n| !n.is_empty()));
                assert_eq!(f["checks"]["valid"], true);
                assert_eq!(f["checks"]["simulated"], true);
            }
            "failed" | "skipped" => {
                assert!(f["reason"].as_str().is_some_and(|r| !r.is_empty()), "{f:#}");
                assert!(f.get("output").is_none());
            }
            other => panic!("unexpected status {other}: {f:#}"),
        }
    }
    let coding = files
        .iter()
        .find(|f| f["workflow"] == "wr.coding-task")
        .unwrap();
    assert!(
        coding["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| { n["kind"] == "differs" && n["at"] == "steps[20].outputContract" })
    );

    // The written files are ordinary workflows to the same binary.
    let written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert_eq!(written.len(), 18);
    let mut args = vec!["workflow", "validate"];
    args.extend(written.iter().map(String::as_str));
    env.run(&args).code(exit::OK);
    let mut args = vec!["workflow", "lint"];
    args.extend(written.iter().map(String::as_str));
    env.run(&args).code(exit::OK);
    for file in &written {
        let sim = env.run(&["workflow", "simulate", file]);
        sim.code(exit::OK);
        assert!(sim.stdout.contains("complete:"), "{sim:?}");
    }
    let coding = out.join("wr.coding-task.yaml");
    let sim = env.run_json(&[
        "workflow",
        "simulate",
        coding.to_str().unwrap(),
        "--context",
        "taskComplexity=Large",
        "--context",
        "rigorMode=THOROUGH",
        "--decide",
        "phase-2-design-review=continue,stop",
    ]);
    sim.code(exit::OK);
    let steps = sim.json()["steps"].clone();
    let steps: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        steps
            .iter()
            .filter(|s| **s == "phase-2a-pre-assess-design-review")
            .count(),
        2
    );
    assert!(!steps.contains(&"phase-5-small-task-fast-path"));
}

#[test]
fn import_writes_into_the_project_catalog_and_refuses_foreign_files() {
    let env = Env::initialised();
    let project = env.dir().join("proj");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    let src = corpus().join("mr-review-workflow.agentic.v2.json");
    // `--check` writes nothing.
    let check = run_in(
        &env,
        &project,
        &["workflow", "import", src.to_str().unwrap(), "--check"],
    );
    check.code(exit::OK);
    assert!(check.stdout.contains("converted with notes"), "{check:?}");
    assert!(check.stdout.contains("would write"), "{check:?}");
    assert!(!project.join(".worktrain").exists());
    // Without --out: the project's .worktrain/workflows, where `workflow list` finds it.
    let run = run_in(
        &env,
        &project,
        &["workflow", "import", src.to_str().unwrap()],
    );
    run.code(exit::OK);
    assert!(
        run.stdout.contains("[differs] steps[8].outputContract"),
        "{run:?}"
    );
    let target = project.join(".worktrain/workflows/wr.mr-review.yaml");
    assert!(target.is_file());
    let list = run_in(&env, &project, &["--json", "workflow", "list"]);
    list.code(exit::OK);
    let entries = list.json()["workflows"].clone();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "wr.mr-review" && e["source"] == "project" && e["error"].is_null()),
        "{entries:#}"
    );
    // A hand-written file of the same name is not overwritten.
    std::fs::write(&target, "# mine\n").unwrap();
    let again = run_in(
        &env,
        &project,
        &["workflow", "import", src.to_str().unwrap()],
    );
    again.code(exit::INVALID);
    assert!(
        again
            .stdout
            .contains("was not written by `worktrain workflow import`"),
        "{again:?}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# mine\n");
}

#[test]
fn a_workrail_file_in_the_catalog_is_listed_with_how_to_import_it() {
    let env = Env::initialised();
    let project = env.dir().join("proj");
    let dir = project.join(".worktrain/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        corpus().join("examples/loops/simple-search.json"),
        dir.join("simple-search.json"),
    )
    .unwrap();
    let list = run_in(&env, &project, &["--json", "workflow", "list"]);
    list.code(exit::OK);
    let entries = list.json()["workflows"].clone();
    let e = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["location"]
                .as_str()
                .is_some_and(|l| l.ends_with("simple-search.json"))
        })
        .unwrap_or_else(|| panic!("listed: {entries:#}"));
    let err = e["error"].as_str().unwrap();
    assert!(err.contains("this is a WorkRail workflow"), "{err}");
    assert!(err.contains("worktrain workflow import"), "{err}");
}

#[test]
fn import_fails_precisely_on_unreadable_and_broken_input() {
    let env = Env::new();
    let missing = env.run(&["workflow", "import", "no/such/dir"]);
    missing.code(exit::NOT_FOUND);
    assert!(missing.stderr.contains("no/such/dir"), "{missing:?}");
    let broken = env.write("broken.json", "{\"id\": \"x\",\n  \"steps\": [1,}");
    let run = env.run_json(&["workflow", "import", broken.to_str().unwrap(), "--check"]);
    run.code(exit::INVALID);
    let f = &run.json()["files"][0];
    assert_eq!(f["status"], "failed");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON at line 2"),
        "{f:#}"
    );
}
