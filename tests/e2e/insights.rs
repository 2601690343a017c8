//! Trace analysis from the command line: importing real transcripts, evaluating the
//! detectors on labelled runs, and — on sessions run by a real daemon with a scripted
//! model — findings, proposals (list, show, apply, dismiss), the report and a post-mortem.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use worktrain_testkit::Turn;
use worktrain_testkit::forge::github::FakeGithub;

use crate::daemon_rig::{Rig, RigSpec, complete, git, have_git, route, shell};
use crate::support::{Env, exit};

fn corpora() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora"
    ))
}

#[test]
fn import_is_idempotent_and_reports_malformed_lines() {
    let env = Env::initialised();
    let sessions = corpora().join("agent-sessions");
    let r = env.run(&["insights", "import", sessions.to_str().unwrap()]);
    r.code(exit::OK);
    assert!(r.stdout.contains("10 new, 0 updated, 0 unchanged"), "{r:?}");
    assert!(
        r.stdout.contains("claude_code, 38 records, 1 trace(s)"),
        "{r:?}"
    );
    // Again: nothing added.
    let again = env.ok_json(&["insights", "import", sessions.to_str().unwrap()]);
    assert_eq!(
        (again["inserted"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(10)),
        "{again}"
    );
    // A transcript with damaged lines: counted and reported with file:line, not fatal.
    let src = std::fs::read_to_string(
        sessions.join("codex/jnarowski__agentcmd.codex-exec-json.stream-output-4.jsonl"),
    )
    .unwrap();
    let mut lines: Vec<&str> = src.lines().collect();
    lines.insert(2, "{\"type\": \"item.completed\", \"item\"");
    let bad = env.write("bad/stream.jsonl", lines.join("\n") + "\n");
    let r = env.run(&["insights", "import", bad.to_str().unwrap()]);
    r.code(exit::OK);
    assert!(
        r.stdout
            .contains(&format!("malformed {}:3: not JSON", bad.display())),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("0 new, 1 updated") || r.stdout.contains("0 new, 0 updated, 1 unchanged"),
        "{r:?}"
    );
    // Not a transcript: said precisely, exit code for invalid input.
    let junk = env.write("junk/x.jsonl", "{\"hello\": 1}\n");
    let r = env.run(&["insights", "import", junk.to_str().unwrap()]);
    r.code(exit::INVALID);
    assert!(r.stdout.contains("not a recognised transcript"), "{r:?}");
}

#[test]
fn eval_measures_each_detector_on_labelled_runs() {
    let env = Env::initialised();
    let dev = corpora().join("agent-trajectories-dev");
    let r = env.run(&[
        "--json",
        "insights",
        "eval",
        "--labels",
        dev.join("labels.csv").to_str().unwrap(),
        dev.join("trajs").to_str().unwrap(),
    ]);
    r.code(exit::OK);
    let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            v["runs"].as_u64(),
            v["passing"].as_u64(),
            v["failing"].as_u64()
        ),
        (Some(60), Some(30), Some(30))
    );
    let rows = v["detectors"].as_array().unwrap();
    assert_eq!(rows.len(), 19, "18 detectors and `any`");
    for d in rows {
        let (fp, ff) = (
            d["fired_pass"].as_u64().unwrap(),
            d["fired_fail"].as_u64().unwrap(),
        );
        assert!(fp <= 30 && ff <= 30);
        if fp + ff > 0 {
            let p = d["precision"].as_f64().unwrap();
            assert!((p - ff as f64 / (fp + ff) as f64).abs() < 0.001, "{d}");
            assert!((d["lift"].as_f64().unwrap() - p / 0.5).abs() < 0.002, "{d}");
        }
    }
    assert!(v["unmatched_labels"].as_array().unwrap().is_empty());
    // Human form; a bad labels file is named with its line.
    let r = env.run(&[
        "insights",
        "eval",
        "--labels",
        dev.join("labels.csv").to_str().unwrap(),
    ]);
    r.code(exit::OK);
    assert!(
        r.stdout.contains("precision") && r.stdout.contains("token_waste"),
        "{r:?}"
    );
    let bad = env.write("labels.csv", "id,resolved\nx,perhaps\n");
    let r = env.run(&["insights", "eval", "--labels", bad.to_str().unwrap()]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("labels.csv:2: `resolved` must be"),
        "{r:?}"
    );
}

#[test]
fn insights_settings_are_validated() {
    let env = Env::initialised();
    let r = env.run(&["insights", "thresholds"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("repeated_call_min: 3"), "{r:?}");
    std::fs::write(
        env.home().join("insights.yaml"),
        "thresholds:\n  repeated_call_minimum: 2\n",
    )
    .unwrap();
    let r = env.run(&["insights", "thresholds"]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("line 2") && r.stderr.contains("repeated_call_minimum"),
        "{r:?}"
    );
}

const BAD: [&str; 3] = ["ins-bad-1", "ins-bad-2", "ins-bad-3"];
const GOOD: [&str; 3] = ["ins-good-1", "ins-good-2", "ins-good-3"];
const POST_MORTEM: &str = "- The program no-such-tool-xyz is not installed in the workspace.";

/// A daemon that ran three failing sessions (a missing tool) and three passing ones of
/// workflow `e2e-one`, and the ids of those sessions (failing first).
fn rig_with_recorded_sessions() -> (Rig, Vec<String>) {
    let mut routes = Vec::new();
    for g in BAD {
        routes.push(route(
            g,
            vec![
                shell("no-such-tool-xyz --version"),
                Turn::text("I am stuck."),
                Turn::text("Still stuck."),
            ],
        ));
    }
    for g in GOOD {
        routes.push(route(
            g,
            vec![
                crate::daemon_rig::write_file("notes/ok.txt", "one\ntwo\nthree\n"),
                shell("true"),
                complete("Wrote notes/ok.txt and checked the workspace with a shell command; everything this step needs is in place."),
            ],
        ));
    }
    // The post-mortem request quotes the trace; it is the only one with this heading.
    routes.push(route("Detector findings:", vec![Turn::text(POST_MORTEM)]));
    let mut rig = Rig::new(RigSpec {
        routes,
        ..RigSpec::default()
    });
    rig.start_daemon();
    let mut ids = Vec::new();
    for g in BAD.iter().chain(GOOD.iter()) {
        ids.push(rig.spawn_in_repo("e2e-one", g, &[]));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (code, _) = rig.await_all(&refs, "120s");
    assert_eq!(code, 1, "three sessions fail");
    (rig, ids)
}

#[test]
fn sessions_become_findings_proposals_reports_and_post_mortems() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (rig, ids) = rig_with_recorded_sessions();
    let env = &rig.env;

    // Sync: the daemon's sessions, with outcomes from the engine's events.
    let s = env.ok_json(&["insights", "sync"]);
    assert_eq!(s["inserted"], 6, "{s}");
    let bad = &ids[0];
    let shown = env.ok_json(&["insights", "show", bad]);
    assert_eq!(shown["trace"]["outcome"], "FAILED", "{shown}");
    let findings = shown["findings"].as_array().unwrap();
    let env_f = findings
        .iter()
        .find(|f| f["detector"] == "environment_failure")
        .unwrap_or_else(|| panic!("{shown:#}"));
    assert_eq!(env_f["pattern"], "command not found: no-such-tool-xyz");
    assert_eq!(env_f["step"], "work");
    // Evidence points at the recorded tool call event.
    let seq: u64 = env_f["evidence"][0]["call_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("seq:")
        .parse()
        .unwrap();
    let events = env.events(bad);
    let ev = events.iter().find(|e| e["seq"] == seq).unwrap();
    assert_eq!(ev["body"]["activity"]["type"], "tool_call", "{ev}");
    assert_eq!(ev["body"]["activity"]["exit_code"], 127);
    let good = env.ok_json(&["insights", "show", &ids[3]]);
    assert_eq!(good["trace"]["outcome"], "SUCCESS");
    // Lines changed come from the session's git snapshots (three lines written).
    assert_eq!(good["trace"]["counts"]["changed_lines"], 3, "{good}");

    // The pattern recurs in three sessions at one step: a proposal.
    let list = env.ok_json(&["proposals", "list"]);
    let props = list["proposals"].as_array().unwrap();
    let p = props
        .iter()
        .find(|p| p["detector"] == "environment_failure")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(
        (p["workflow"].as_str(), p["step"].as_str()),
        (Some("e2e-one"), Some("work"))
    );
    assert_eq!(p["sessions"], 3);
    assert!(p["confidence"].as_f64().unwrap() > 0.2, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let show = env.run(&["proposals", "show", &id]);
    show.code(exit::OK);
    assert!(
        show.stdout.lines().any(|l| l.starts_with('+')
            && l.contains("Lesson from earlier sessions (worktrain insights):")),
        "{show:?}"
    );
    assert!(show.stdout.contains("`no-such-tool-xyz`"), "{show:?}");
    for sid in &ids[..3] {
        assert!(
            show.stdout.contains(&format!("worktrain:{sid} (FAILED)")),
            "{show:?}"
        );
    }

    // Without --write the change is proposed as a pull request, which needs the workflow
    // in a repository: this one is not; said, and nothing changes.
    let wf = env.home().join("workflows/e2e-one.yaml");
    let before = std::fs::read_to_string(&wf).unwrap();
    let r = env.run(&["proposals", "apply", &id]);
    r.code(exit::INVALID);
    assert!(
        r.stderr.contains("is not inside a git repository") && r.stderr.contains("--write"),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&wf).unwrap(), before);
    let r = env.run(&["proposals", "apply", &id, "--write"]);
    r.code(exit::OK);
    assert!(r.stdout.contains("lint passed"), "{r:?}");
    let after = std::fs::read_to_string(&wf).unwrap();
    assert!(
        after.contains("Lesson from earlier sessions") && after.contains("no-such-tool-xyz"),
        "{after}"
    );
    env.run(&["workflow", "validate", wf.to_str().unwrap()])
        .code(exit::OK);
    let applied = env.ok_json(&["proposals", "list", "--status", "applied"]);
    assert_eq!(applied["proposals"][0]["id"], id.as_str());
    env.run(&["proposals", "apply", &id, "--write"])
        .code(exit::INVALID);
    let r = env.run(&["proposals", "dismiss", "prop_000000000000"]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("no proposal"), "{r:?}");

    // The report: deterministic, rates by workflow, top findings.
    let r1 = env.run(&["report", "--format", "json"]);
    r1.code(exit::OK);
    let r2 = env.run(&["report", "--format", "json"]);
    assert_eq!(r1.stdout, r2.stdout, "deterministic");
    let rep: Value = serde_json::from_str(r1.stdout.trim()).unwrap();
    let wf_rates = &rep["by_workflow"]["e2e-one"];
    assert_eq!(
        (
            wf_rates["sessions"].as_u64(),
            wf_rates["completed"].as_u64(),
            wf_rates["failed"].as_u64()
        ),
        (Some(6), Some(3), Some(3)),
        "{rep:#}"
    );
    assert!(
        rep["top_findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["detector"] == "environment_failure"
                && f["sessions"] == 3
                && f["failing"] == 3),
        "{rep:#}"
    );
    assert!(rep["cost"]["tokens"].as_u64().unwrap() > 0);
    let md = env.run(&["report", "--since", "1h"]);
    md.code(exit::OK);
    assert!(
        md.stdout.contains("## By workflow")
            && md.stdout.contains("| e2e-one | 6 | 50.0% | 50.0% |"),
        "{md:?}"
    );
    env.run(&["report", "--format", "xml"]).code(exit::INVALID);

    // A post-mortem from the configured agent profile: stored as an event and shown.
    let r = env.run(&["insights", "explain", bad]);
    r.code(exit::OK);
    assert!(r.stdout.contains(POST_MORTEM), "{r:?}");
    let pm: Vec<Value> = env
        .events(bad)
        .into_iter()
        .filter(|e| e["body"]["type"] == "post_mortem_recorded")
        .collect();
    assert_eq!(pm.len(), 1);
    assert_eq!(pm[0]["body"]["text"], POST_MORTEM);
    let shown = env.ok_json(&["insights", "show", bad]);
    assert_eq!(shown["post_mortems"][0]["text"], POST_MORTEM);
    let req = rig.requests_for("Detector findings:");
    assert_eq!(req.len(), 1);
    assert!(
        req[0].raw.contains("=====TRACE DATA====="),
        "the trace is fenced as data"
    );
    assert!(
        req[0].raw.len() < 40_000,
        "bounded input: {}",
        req[0].raw.len()
    );
    let _ = Duration::from_secs(0);
}

/// The same transcripts imported into the embedded store and into PostgreSQL give the same
/// traces, findings and analysis: trace analysis works on either backend.
#[test]
fn insights_on_postgres_match_the_embedded_store() {
    let Some(db) = crate::support::postgres_database() else {
        return;
    };
    let env = Env::initialised();
    let trajs = corpora().join("agent-trajectories-dev/trajs");
    let dir = trajs.to_str().unwrap();
    let pg = ["--database-url", db.url.as_str()];
    let run = |backend: &[&str], args: &[&str]| -> Value {
        let mut all: Vec<&str> = backend.to_vec();
        all.push("--json");
        all.extend_from_slice(args);
        let r = env.run(&all);
        r.code(exit::OK);
        serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap()
    };
    let sqlite_import = run(&[], &["insights", "import", dir]);
    let pg_import = run(&pg, &["insights", "import", dir]);
    assert_eq!(pg_import["inserted"], 60, "{pg_import}");
    assert_eq!(sqlite_import["findings"], pg_import["findings"]);
    assert!(pg_import["findings"].as_u64() > Some(0), "{pg_import}");
    // Idempotent on PostgreSQL too.
    let again = run(&pg, &["insights", "import", dir]);
    assert_eq!(
        (again["inserted"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(60)),
        "{again}"
    );
    assert_eq!(
        run(&[], &["insights", "analyze"]),
        run(&pg, &["insights", "analyze"])
    );
    let findings = |backend: &[&str]| run(backend, &["insights", "findings", "--limit", "1000"]);
    let (a, b) = (findings(&[]), findings(&pg));
    assert_eq!(a, b);
    assert!(!a["findings"].as_array().unwrap().is_empty(), "{a}");
}

#[test]
fn an_applied_proposal_is_committed_on_its_branch_pushed_and_opened_as_one_pull_request() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let (rig, _ids) = rig_with_recorded_sessions();
    let env = &rig.env;
    env.ok_json(&["insights", "sync"]);
    let list = env.ok_json(&["proposals", "list"]);
    let id = list["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["detector"] == "environment_failure")
        .and_then(|p| p["id"].as_str())
        .unwrap_or_else(|| panic!("{list:#}"))
        .to_owned();

    // The workflow is kept in the project's repository; the operator has local,
    // uncommitted work there, including an experiment in the workflow file itself.
    let repo = &rig.repo;
    std::fs::create_dir_all(repo.join(".worktrain/workflows")).unwrap();
    let wf = repo.join(".worktrain/workflows/e2e-one.yaml");
    std::fs::copy(env.home().join("workflows/e2e-one.yaml"), &wf).unwrap();
    git(repo, &["add", "-A"]);
    git(
        repo,
        &["commit", "-q", "-m", "keep the workflow in the repository"],
    );
    git(repo, &["push", "-q", "origin", "main"]);
    let main_head = git(repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let committed = std::fs::read_to_string(&wf).unwrap();
    std::fs::write(&wf, format!("{committed}# local experiment\n")).unwrap();
    std::fs::write(repo.join("scratch.txt"), "not mine to commit\n").unwrap();
    let status_before = git(repo, &["status", "--porcelain"]);

    let gh = rig.block_on(FakeGithub::start()).unwrap();
    std::fs::write(
        env.home().join("triggers.yml"),
        format!(
            "version: 1\nidentities:\n  bot:\n    github: {{token: t0ken-proposals, api_url: {}}}\n",
            gh.base_url()
        ),
    )
    .unwrap();
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "proposals",
            "apply",
            id.as_str(),
            "--file",
            wf.to_str().unwrap(),
            "--repo",
            "github:acme/widgets",
            "--label",
            "workflow-improvement",
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };

    // GitHub fails opening the pull request: said with the forge's message; the branch
    // is pushed, the proposal stays open.
    gh.answer_once(
        "POST",
        "/repos/acme/widgets/pulls",
        502,
        json!({"message": "Server Error"}),
    );
    let r = apply(&[]);
    assert_ne!(r.code, exit::OK, "{r:?}");
    assert!(r.stderr.contains("opening the pull request"), "{r:?}");
    let open = env.ok_json(&["proposals", "list", "--status", "open"]);
    assert!(
        open["proposals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str()),
        "{open:#}"
    );
    let branch = format!("worktrain/proposal-{id}");
    let remote = env.dir().join("remote.git");
    let pushed = git(&remote, &["rev-parse", &format!("refs/heads/{branch}")])
        .trim()
        .to_owned();

    // Again: the same commit, one pull request.
    let r = apply(&[]);
    r.code(exit::OK);
    assert!(r.stdout.contains("opened http"), "{r:?}");
    assert_eq!(
        git(&remote, &["rev-parse", &format!("refs/heads/{branch}")]).trim(),
        pushed,
        "the branch was not committed twice"
    );
    // The commit: on top of main, the patched file as it is on main plus the lesson, the
    // operator's experiment not in it, trailers naming the proposal.
    assert_eq!(
        git(&remote, &["rev-parse", &format!("{pushed}^")]).trim(),
        main_head
    );
    let shown = git(
        &remote,
        &[
            "show",
            &format!("{pushed}:.worktrain/workflows/e2e-one.yaml"),
        ],
    );
    assert!(
        shown.contains("Lesson from earlier sessions") && shown.contains("no-such-tool-xyz"),
        "{shown}"
    );
    assert!(!shown.contains("# local experiment"), "{shown}");
    let message = git(&remote, &["log", "-1", "--format=%B", &pushed]);
    assert!(
        message.contains(&format!("Worktrain-Proposal: {id}"))
            && message.contains("Worktrain-Workflow: e2e-one"),
        "{message}"
    );
    let changed = git(&remote, &["diff", "--name-only", &main_head, &pushed]);
    assert_eq!(changed.trim(), ".worktrain/workflows/e2e-one.yaml");
    // The checkout is exactly as the operator left it.
    assert_eq!(git(repo, &["status", "--porcelain"]), status_before);
    assert_eq!(git(repo, &["rev-parse", "HEAD"]).trim(), main_head);
    assert!(
        std::fs::read_to_string(&wf)
            .unwrap()
            .ends_with("# local experiment\n")
    );

    // What GitHub received: one pull request (the failed try and the one that worked),
    // from the proposal's branch into main, with the evidence, as the identity.
    let creates: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path == "/repos/acme/widgets/pulls")
        .collect();
    assert_eq!(creates.len(), 2, "one failed, one opened");
    let pr = &creates[1].body;
    assert_eq!(pr["head"], branch.as_str());
    assert_eq!(pr["base"], "main");
    assert!(
        pr["title"]
            .as_str()
            .unwrap()
            .starts_with("workflow e2e-one:"),
        "{pr}"
    );
    let body = pr["body"].as_str().unwrap();
    assert!(body.contains(&format!("Proposal `{id}`")), "{body}");
    assert!(body.contains("**Evidence sessions**"), "{body}");
    assert!(
        creates[1]
            .header("authorization")
            .unwrap_or_default()
            .contains("t0ken-proposals")
    );
    assert_eq!(gh.pulls("acme/widgets").len(), 1);
    let labelled = gh.requests().into_iter().any(|q| {
        q.method == "POST"
            && q.path.ends_with("/labels")
            && q.body.to_string().contains("workflow-improvement")
    });
    assert!(labelled, "{:?}", gh.requests());

    // Applied, with where it went; applying again is refused.
    let applied = env.ok_json(&["proposals", "list", "--status", "applied"]);
    assert_eq!(applied["proposals"][0]["id"], id.as_str(), "{applied:#}");
    let r = apply(&[]);
    r.code(exit::INVALID);
    assert!(r.stderr.contains("already applied"), "{r:?}");
}
