//! Triggers end to end with the real daemon: a signed GitHub `issues.labeled` delivery
//! (the real payload from the corpus) starts a session in a worktree of a real
//! repository; the same delivery again does nothing; a filtered one is recorded with the
//! failed condition and the value seen; bad signatures, non-JSON, oversized and
//! wrongly typed bodies get precise 4xx answers (and the recordable ones are recorded);
//! an invalid edit of triggers.yml keeps the running triggers and says why; a delivery
//! persisted before a crash is processed after the restart.

use std::time::Duration;

use serde_json::{Value, json};
use worktrain_triggers::verify::sign_hex;

use crate::daemon_rig::{Rig, RigSpec, complete, have_git, route, shell, wait_for};
use crate::support::exit;

pub(crate) const SECRET: &str = "e2e-webhook-secret";

pub(crate) fn corpus(name: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/github-webhooks/"
    );
    std::fs::read(format!("{path}{name}")).expect("corpus payload")
}

pub(crate) fn triggers_yml(rig: &Rig, extra: &str) -> String {
    format!(
        "version: 1
defaults:
  workspace: {{path: {repo}}}
triggers:
  - id: gh-labeled
    source:
      github_webhook:
        secret: {SECRET}
        events: [issues.labeled]
    workflow: e2e-one
    goal: 'Fix #{{{{ $.issue.number }}}}: {{{{ $.issue.title }}}}'
    context:
      issue: $.issue.number
      labels: '$.issue.labels[*].name'
    when: {{path: $.label.name, equals: bug}}
{extra}",
        repo = rig.repo.display()
    )
}

pub(crate) fn deliver(rig: &Rig, event: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let sig = format!("sha256={}", sign_hex(SECRET.as_bytes(), body));
    rig.post_raw(
        "/webhooks/gh-labeled",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", id),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
            ("User-Agent", "GitHub-Hookshot/e2e"),
        ],
        body,
    )
}

pub(crate) fn decisions(rig: &Rig) -> Vec<Value> {
    rig.get("/api/v1/triggers/gh-labeled/decisions?limit=200")["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn decision_for(rig: &Rig, delivery: i64, kind: &str) -> Option<Value> {
    decisions(rig)
        .into_iter()
        .find(|d| d["delivery_id"] == json!(delivery) && d["decision"] == kind)
}

#[test]
fn github_webhooks_start_sessions_once_and_every_decision_is_recorded() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        daemon: &["webhook_body_limit_bytes: 65536"],
        routes: vec![
            route(
                "Spelling error in the README",
                vec![complete("fixed the typo")],
            ),
            route("Scheduled run of nightly", vec![complete("nightly done")]),
        ],
        ..RigSpec::default()
    });
    std::fs::write(rig.env.home().join("triggers.yml"), triggers_yml(&rig, "")).unwrap();
    rig.start_daemon();

    // A signed issues.labeled delivery (the real payload, its exact bytes) → 202.
    let body = corpus("issues.labeled.json");
    let (status, answer) = deliver(&rig, "issues", "delivery-1", &body);
    assert_eq!(status, 202, "{answer}\n{}", rig.log_tail());
    let delivery = answer["delivery"].as_i64().unwrap();
    let dispatched = wait_for(
        "the delivery to be dispatched",
        Duration::from_secs(20),
        || decision_for(&rig, delivery, "dispatched"),
        || format!("{:#?}\n{}", decisions(&rig), rig.log_tail()),
    );
    assert_eq!(dispatched["source"], "github:Codertocat/Hello-World#1");
    assert_eq!(dispatched["event"], "issues.labeled");
    let id = dispatched["session_id"].as_str().unwrap().to_owned();
    let record = rig.wait_run_state(&id, "completed", Duration::from_secs(60));
    assert_eq!(record["goal"], "Fix #1: Spelling error in the README file");
    assert_eq!(record["context"]["issue"], 1);
    assert_eq!(record["context"]["labels"], json!(["bug"]));
    let run = &record["run"];
    assert_eq!(run["trigger"]["kind"], "webhook");
    assert_eq!(run["trigger"]["id"], "gh-labeled");
    assert_eq!(run["trigger"]["source"], "github:Codertocat/Hello-World#1");
    // It ran in a worktree of the repository on its own branch (the worktree is gone
    // once the completed run's work is committed).
    let started = rig
        .events(&id)
        .into_iter()
        .find(|e| e["body"]["type"] == "run_started")
        .expect("run_started");
    assert_eq!(started["body"]["branch"], format!("worktrain/{id}"));
    let worktree = started["body"]["worktree"].as_str().unwrap().to_owned();
    assert!(
        worktree.starts_with(rig.env.home().join("worktrees").to_str().unwrap()),
        "a worktree of the repository: {worktree}"
    );

    // The same delivery again: 200 duplicate, recorded, nothing dispatched.
    let (status, answer) = deliver(&rig, "issues", "delivery-1", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert!(
        decisions(&rig)
            .iter()
            .any(|d| d["decision"] == "duplicate" && d["delivery_id"] == json!(delivery))
    );

    // A labeled event with another label: filtered, with the condition and the value seen.
    let mut other: Value = serde_json::from_slice(&body).unwrap();
    other["label"]["name"] = json!("question");
    let other = serde_json::to_vec(&other).unwrap();
    let (status, answer) = deliver(&rig, "issues", "delivery-2", &other);
    assert_eq!(status, 202, "{answer}");
    let filtered = wait_for(
        "the filtered decision",
        Duration::from_secs(20),
        || decision_for(&rig, answer["delivery"].as_i64().unwrap(), "filtered"),
        || format!("{:#?}", decisions(&rig)),
    );
    assert_eq!(
        filtered["detail"]["condition"],
        "$.label.name equals \"bug\""
    );
    assert_eq!(filtered["detail"]["seen"], "question");
    // An event the trigger does not subscribe to: filtered, naming the event.
    let opened = corpus("issues.opened.json");
    let (_, answer) = deliver(&rig, "issues", "delivery-3", &opened);
    let ignored = wait_for(
        "the event filter decision",
        Duration::from_secs(20),
        || decision_for(&rig, answer["delivery"].as_i64().unwrap(), "filtered"),
        || format!("{:#?}", decisions(&rig)),
    );
    assert!(
        ignored["reason"]
            .as_str()
            .unwrap()
            .contains("issues.opened"),
        "{ignored}"
    );

    // Wrong secret: 401, recorded as signature_rejected; no delivery stored.
    let bad = format!("sha256={}", sign_hex(b"not the secret", &body));
    let (status, answer) = rig.post_raw(
        "/webhooks/gh-labeled",
        &[
            ("X-GitHub-Event", "issues"),
            ("X-GitHub-Delivery", "forged"),
            ("X-Hub-Signature-256", &bad),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["code"], "signature_rejected");
    // A truncated signature header is malformed, precisely.
    let (status, answer) = rig.post_raw(
        "/webhooks/gh-labeled",
        &[
            ("X-GitHub-Event", "issues"),
            ("X-GitHub-Delivery", "x"),
            ("X-Hub-Signature-256", &bad[..20]),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(status, 401);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("64 hex digits"),
        "{answer}"
    );
    assert!(
        decisions(&rig)
            .iter()
            .filter(|d| d["decision"] == "signature_rejected")
            .count()
            >= 2
    );
    // Signed but not JSON: 400 invalid_payload, recorded.
    let (status, answer) = deliver(&rig, "issues", "delivery-4", b"this is not json");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "invalid_payload");
    assert!(
        decisions(&rig)
            .iter()
            .any(|d| d["decision"] == "invalid_payload")
    );
    // Wrong content type: 415. Oversized: 413. Unknown trigger: 404.
    let (status, answer) = rig.post_raw(
        "/webhooks/gh-labeled",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let big = vec![b' '; 70_000];
    let (status, answer) = deliver(&rig, "issues", "delivery-5", &big);
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, answer) = rig.post_raw(
        "/webhooks/nope",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("trigger_not_found"))
    );
    // Ping is answered.
    let (status, answer) = deliver(&rig, "ping", "delivery-6", &corpus("ping.default.json"));
    assert_eq!((status, &answer["pong"]), (200, &json!(true)));

    // A dry run through the API: the decision, nothing recorded.
    let before = decisions(&rig).len();
    let other_json: Value = serde_json::from_slice(&other).unwrap();
    let dry = rig.post(
        "/api/v1/triggers/gh-labeled/test",
        json!({"event": "issues", "payload": other_json}),
    );
    assert_eq!(dry["decision"], "filtered", "{dry}");
    assert_eq!(dry["detail"]["seen"], "question");
    assert_eq!(decisions(&rig).len(), before, "a dry run records nothing");

    // Only one session was dispatched.
    let dispatched: Vec<_> = decisions(&rig)
        .into_iter()
        .filter(|d| d["decision"] == "dispatched")
        .collect();
    assert_eq!(dispatched.len(), 1, "{dispatched:#?}");

    // The CLI shows the same log and the trigger.
    let log = rig.cli(&["trigger", "log", "gh-labeled"]);
    assert_eq!(log.code, exit::OK, "{log:?}");
    assert!(
        log.stdout.contains("filtered") && log.stdout.contains("saw \"question\""),
        "{}",
        log.stdout
    );
    assert!(log.stdout.contains(&id), "{}", log.stdout);
    let list = rig.cli(&["trigger", "list"]);
    assert!(
        list.stdout.contains("gh-labeled") && list.stdout.contains("github_webhook"),
        "{}",
        list.stdout
    );

    // An invalid edit keeps the running triggers; the error is visible everywhere.
    let broken = triggers_yml(&rig, "").replace(
        "        events: [issues.labeled]",
        "        event: [issues.labeled]",
    );
    std::fs::write(rig.env.home().join("triggers.yml"), broken).unwrap();
    let ready = wait_for(
        "/readyz to show the load error",
        Duration::from_secs(15),
        || {
            let r = rig.get("/readyz");
            r["triggers"]["error"].is_string().then_some(r)
        },
        || rig.log_tail(),
    );
    let error = ready["triggers"]["error"].as_str().unwrap();
    assert!(
        error.contains("triggers.yml:9:") && error.contains("did you mean `events`"),
        "{error}"
    );
    assert_eq!(ready["triggers"]["active"], 1);
    let list = rig.cli(&["trigger", "list"]);
    assert!(
        list.stdout.contains("INVALID") && list.stdout.contains("unknown field `event`"),
        "{}",
        list.stdout
    );
    let (status, _) = deliver(&rig, "issues", "delivery-7", &other);
    assert_eq!(status, 202, "the previous triggers still serve");
    assert!(
        rig.log_tail().contains("triggers file invalid"),
        "{}",
        rig.log_tail()
    );
    // A valid edit is swapped in.
    let extra = "  - id: nightly\n    source: {schedule: {cron: '0 3 * * *', timezone: Europe/Berlin}}\n    workflow: e2e-one\n";
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        triggers_yml(&rig, extra),
    )
    .unwrap();
    wait_for(
        "the new triggers",
        Duration::from_secs(15),
        || {
            let r = rig.get("/api/v1/triggers");
            (r["status"]["error"].is_null()
                && r["triggers"].as_array().is_some_and(|t| t.len() == 2))
            .then_some(())
        },
        || format!("{}", rig.get("/api/v1/triggers")),
    );
    // `worktrain trigger fire` runs the schedule now; scheduled_at and fired_at are recorded.
    let fired = rig.cli(&["--json", "trigger", "fire", "nightly"]);
    assert_eq!(fired.code, exit::OK, "{fired:?}");
    let d: Value = serde_json::from_str(fired.stdout.trim()).unwrap();
    assert_eq!(d["decision"], "dispatched", "{d}");
    assert!(
        d["detail"]["scheduled_at"].is_string() && d["detail"]["fired_at"].is_string(),
        "{d}"
    );
    let sid = d["session_id"].as_str().unwrap();
    let r = rig.wait_run_state(sid, "completed", Duration::from_secs(60));
    assert_eq!(r["run"]["trigger"]["kind"], "cron");
    assert_eq!(r["goal"], "Scheduled run of nightly");
}

#[test]
fn a_delivery_persisted_before_a_crash_is_processed_after_restart() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            "Spelling error in the README",
            vec![complete("fixed")],
        )],
        ..RigSpec::default()
    });
    std::fs::write(rig.env.home().join("triggers.yml"), triggers_yml(&rig, "")).unwrap();
    // The daemon answers 202 but dies before processing (held, then SIGKILL).
    rig.daemon_env = vec![("WORKTRAIN_TEST_HOLD_WEBHOOKS".into(), "1".into())];
    rig.start_daemon();
    let body = corpus("issues.labeled.with-organization.json");
    let (status, answer) = deliver(&rig, "issues", "crash-1", &body);
    assert_eq!(status, 202, "{answer}");
    let delivery = answer["delivery"].as_i64().unwrap();
    let before = decisions(&rig);
    assert_eq!(before.len(), 1, "{before:#?}");
    assert_eq!(before[0]["decision"], "received");
    assert!(
        rig.get("/api/v1/sessions")["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    rig.sigkill_daemon();

    rig.daemon_env.clear();
    rig.start_daemon();
    let dispatched = wait_for(
        "the persisted delivery to be dispatched after the restart",
        Duration::from_secs(30),
        || decision_for(&rig, delivery, "dispatched"),
        || format!("{:#?}\n{}", decisions(&rig), rig.log_tail()),
    );
    let id = dispatched["session_id"].as_str().unwrap();
    rig.wait_run_state(id, "completed", Duration::from_secs(60));
    let sessions = rig.get("/api/v1/sessions")["sessions"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(sessions.len(), 1, "exactly one session");

    // A kill right after the 202, with processing on: still exactly one session.
    let (status, answer) = deliver(&rig, "issues", "crash-2", &corpus("issues.assigned.json"));
    assert_eq!(status, 202, "{answer}");
    rig.sigkill_daemon();
    rig.start_daemon();
    let d2 = answer["delivery"].as_i64().unwrap();
    wait_for(
        "the second delivery to be decided after the restart",
        Duration::from_secs(30),
        || {
            decisions(&rig)
                .into_iter()
                .find(|d| d["delivery_id"] == json!(d2) && d["decision"] != "received")
        },
        || format!("{:#?}", decisions(&rig)),
    );
    let decided: Vec<_> = decisions(&rig)
        .into_iter()
        .filter(|d| d["delivery_id"] == json!(d2) && d["decision"] != "received")
        .collect();
    assert_eq!(decided.len(), 1, "decided exactly once: {decided:#?}");
}

/// Wait until the delivery `answer` names is dispatched; its session id.
#[track_caller]
pub(crate) fn dispatched_session(rig: &Rig, answer: &Value) -> String {
    let delivery = answer["delivery"].as_i64().unwrap();
    let d = wait_for(
        "the delivery to be dispatched",
        Duration::from_secs(20),
        || decision_for(rig, delivery, "dispatched"),
        || format!("{:#?}\n{}", decisions(rig), rig.log_tail()),
    );
    d["session_id"].as_str().unwrap().to_owned()
}

fn deliver_to(rig: &Rig, trigger: &str, event: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let sig = format!("sha256={}", sign_hex(SECRET.as_bytes(), body));
    rig.post_raw(
        &format!("/webhooks/{trigger}"),
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", id),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["body"]["type"] == kind)
        .collect()
}

/// Workspace hooks run in the session's worktree around the agent, each recorded as a
/// `hook_ran` event with its exit code and output; a failing `setup` fails the session
/// with `hook_failed` and the hook's exit code.
#[test]
fn workspace_hooks_run_around_the_agent_and_a_failing_setup_fails_the_session() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            "Spelling error in the README",
            vec![complete("fixed with dependencies installed")],
        )],
        ..RigSpec::default()
    });
    let extra = format!(
        "    hooks:
      setup: 'echo installing-deps; test -d .git || test -f .git; echo ok > .hook-setup'
      before_run: 'test -f .hook-setup && echo before-run-saw-setup'
      after_run: 'echo after-run-done'
  - id: gh-broken
    source:
      github_webhook:
        secret: {SECRET}
        events: [issues.labeled]
    workflow: e2e-one
    goal: 'Broken setup for #{{{{ $.issue.number }}}}'
    workspace: {{path: {repo}}}
    hooks:
      setup: 'echo cannot-install >&2; exit 3'
      timeout_secs: 30
",
        repo = rig.repo.display()
    );
    std::fs::write(
        rig.env.home().join("triggers.yml"),
        triggers_yml(&rig, &extra),
    )
    .unwrap();
    rig.start_daemon();

    let (status, answer) = deliver(&rig, "issues", "hooks-1", &corpus("issues.labeled.json"));
    assert_eq!(status, 202, "{answer}");
    let id = dispatched_session(&rig, &answer);
    rig.wait_run_state(&id, "completed", Duration::from_secs(60));
    let events = rig.events(&id);
    let hooks = events_of(&events, "hook_ran");
    let by = |point: &str| {
        hooks
            .iter()
            .find(|e| e["body"]["hook"] == point)
            .unwrap_or_else(|| panic!("no {point} hook_ran: {hooks:#?}"))
    };
    let setup = by("setup");
    assert_eq!(setup["body"]["exit_code"], 0, "{setup:#}");
    assert!(
        setup["body"]["output"]
            .as_str()
            .unwrap()
            .contains("installing-deps"),
        "{setup:#}"
    );
    // before_run ran after setup, in the same worktree.
    let before = by("before_run");
    assert_eq!(before["body"]["exit_code"], 0, "{before:#}");
    assert!(
        before["body"]["output"]
            .as_str()
            .unwrap()
            .contains("before-run-saw-setup"),
        "{before:#}"
    );
    assert_eq!(by("after_run")["body"]["exit_code"], 0);
    // Order: setup, before_run, (the agent's steps), after_run.
    let pos = |point: &str| {
        events
            .iter()
            .position(|e| e["body"]["type"] == "hook_ran" && e["body"]["hook"] == point)
            .unwrap()
    };
    let first_step = events
        .iter()
        .position(|e| e["body"]["type"] == "step_completed")
        .expect("a completed step");
    assert!(pos("setup") < pos("before_run") && pos("before_run") < first_step);
    assert!(pos("after_run") > first_step);

    // The broken trigger: the session fails with the hook's exit code, and no agent ran.
    let requests_before = rig.llm.requests().len();
    let (status, answer) = deliver_to(
        &rig,
        "gh-broken",
        "issues",
        "hooks-2",
        &corpus("issues.labeled.with-organization.json"),
    );
    assert_eq!(status, 202, "{answer}");
    let delivery = answer["delivery"].as_i64().unwrap();
    let d = wait_for(
        "the broken delivery to be dispatched",
        Duration::from_secs(20),
        || {
            rig.get("/api/v1/triggers/gh-broken/decisions?limit=50")["decisions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|d| d["delivery_id"] == json!(delivery) && d["decision"] == "dispatched")
        },
        || rig.log_tail(),
    );
    let id = d["session_id"].as_str().unwrap().to_owned();
    let record = rig.wait_run_state(&id, "failed", Duration::from_secs(60));
    assert_eq!(record["run"]["failure"], "hook_failed", "{record:#}");
    let events = rig.events(&id);
    let setup = events_of(&events, "hook_ran");
    assert_eq!(setup.len(), 1, "{setup:#?}");
    assert_eq!(setup[0]["body"]["exit_code"], 3);
    assert!(
        setup[0]["body"]["output"]
            .as_str()
            .unwrap()
            .contains("cannot-install"),
        "{setup:#?}"
    );
    assert_eq!(
        rig.llm.requests().len(),
        requests_before,
        "no agent runs after a failed setup"
    );
}

/// A session started from an issue is cancelled when a webhook shows the issue closed;
/// the decision is recorded on the trigger (`reconciled`) and the session
/// (`source_ineligible`).
#[test]
fn a_closed_issue_cancels_its_running_session() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let stall: worktrain_testkit::Turn =
        serde_json::from_value(json!({"type": "stall", "ms": 60_000})).unwrap();
    let mut rig = Rig::new(RigSpec {
        routes: vec![route("Spelling error in the README", vec![stall])],
        ..RigSpec::default()
    });
    let yml = triggers_yml(&rig, "").replace(
        "events: [issues.labeled]",
        "events: [issues.labeled, issues.closed]",
    );
    std::fs::write(rig.env.home().join("triggers.yml"), yml).unwrap();
    rig.start_daemon();
    let labeled = corpus("issues.labeled.json");
    let (status, answer) = deliver(&rig, "issues", "rec-1", &labeled);
    assert_eq!(status, 202, "{answer}");
    let id = dispatched_session(&rig, &answer);
    rig.wait_run_state(&id, "running", Duration::from_secs(30));

    // The same issue, closed (the recorded payload with the state a close carries).
    let mut closed: Value = serde_json::from_slice(&labeled).unwrap();
    closed["action"] = json!("closed");
    closed["issue"]["state"] = json!("closed");
    closed["issue"]["closed_at"] = json!("2019-05-15T15:25:00Z");
    let closed = serde_json::to_vec(&closed).unwrap();
    let (status, answer) = deliver(&rig, "issues", "rec-2", &closed);
    assert_eq!(status, 202, "{answer}");
    let d2 = answer["delivery"].as_i64().unwrap();
    let reconciled = wait_for(
        "the close to be reconciled",
        Duration::from_secs(20),
        || decision_for(&rig, d2, "reconciled"),
        || format!("{:#?}\n{}", decisions(&rig), rig.log_tail()),
    );
    assert_eq!(reconciled["session_id"], id.as_str());
    assert!(
        reconciled["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("closed"),
        "{reconciled:#}"
    );
    rig.wait_run_state(&id, "cancelled", Duration::from_secs(30));
    let events = rig.events(&id);
    let inel = events_of(&events, "source_ineligible");
    assert_eq!(inel.len(), 1, "{events:#?}");
    assert_eq!(inel[0]["body"]["source"], "github:Codertocat/Hello-World#1");
    assert_eq!(inel[0]["body"]["trigger"], "gh-labeled");
}

/// Secrets of triggers.yml (webhook secrets, forge tokens) are redacted from what an
/// agent's tools return and from every recorded event, like the API token and LLM keys.
#[test]
fn trigger_secrets_are_redacted_from_agent_output() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![route(
            "Spelling error in the README",
            vec![
                shell(&format!("echo leaked:{SECRET}")),
                complete("printed what it found"),
            ],
        )],
        ..RigSpec::default()
    });
    std::fs::write(rig.env.home().join("triggers.yml"), triggers_yml(&rig, "")).unwrap();
    rig.start_daemon();
    let (status, answer) = deliver(&rig, "issues", "secret-1", &corpus("issues.labeled.json"));
    assert_eq!(status, 202, "{answer}");
    let id = dispatched_session(&rig, &answer);
    rig.wait_run_state(&id, "completed", Duration::from_secs(60));
    let log = serde_json::to_string(&rig.events(&id)).unwrap();
    assert!(
        !log.contains(SECRET),
        "the webhook secret reached the event log"
    );
    assert!(log.contains("leaked:[redacted]"), "{log}");
    // What the model was sent back holds no secret either — apart from its own tool
    // call, which the conversation repeats to it.
    let sent = format!("{:?}", rig.llm.requests()).replace(&format!("echo leaked:{SECRET}"), "");
    if let Some(at) = sent.find(SECRET) {
        panic!(
            "the webhook secret reached the model: …{}…",
            &sent[at.saturating_sub(200)..(at + 60).min(sent.len())]
        );
    }
    assert!(
        sent.contains("leaked:[redacted]"),
        "the tool result was sent redacted"
    );
}
