//! Decisions on real payloads: comment commands honoured only from allowed authors,
//! disabled triggers, repository filters, templates whose query matches nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use worktrain_triggers::config::load;
use worktrain_triggers::decide::{DecisionKind, Verdict, evaluate};
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::inbound;

fn payload(name: &str) -> Value {
    let p = format!(
        "{}/../../../shared/corpora/github-webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

const YML: &str = "version: 1
triggers:
  - id: t
    workflow: coding-task
    goal: 'Fix #{{ $.issue.number }}'
    source:
      github_webhook:
        secret: s
        events: [issues.labeled]
        repositories: [Codertocat/Hello-World]
        commands: {workflows: [bug-investigation]}
";

fn kind(v: &Verdict) -> Option<DecisionKind> {
    match v {
        Verdict::Stop { kind, .. } => Some(*kind),
        Verdict::Dispatch(_) | Verdict::Retry { .. } | Verdict::Ping => None,
    }
}

#[test]
fn comment_commands_need_an_allowed_author() {
    let idx = load("t.yml", YML, &EnvSource::default()).unwrap();
    let t = idx.get("t").unwrap();
    let mut p = payload("issue_comment.created.json");
    p["comment"]["body"] = json!("/worktrain run bug-investigation");
    // The recorded comment's author is the repository OWNER: honoured.
    let ev = inbound::github_event("issue_comment", "d1".into(), p.clone());
    let Verdict::Dispatch(plan) = evaluate(t, &ev, None) else {
        panic!("{:?}", evaluate(t, &ev, None))
    };
    assert_eq!(plan.workflow, "bug-investigation");
    assert_eq!(plan.goal, "Fix #1");
    // Anyone else on a public repository: refused, with who and why.
    p["comment"]["author_association"] = json!("NONE");
    let ev = inbound::github_event("issue_comment", "d2".into(), p.clone());
    let v = evaluate(t, &ev, None);
    assert_eq!(kind(&v), Some(DecisionKind::UnauthorizedCommenter));
    let Verdict::Stop { detail, .. } = v else {
        unreachable!()
    };
    assert_eq!(detail["author_association"], "NONE");
    // A workflow not allowed for commands.
    p["comment"]["author_association"] = json!("MEMBER");
    p["comment"]["body"] = json!("/worktrain run something-else");
    let ev = inbound::github_event("issue_comment", "d3".into(), p.clone());
    assert_eq!(kind(&evaluate(t, &ev, None)), Some(DecisionKind::Filtered));
    // retry.
    p["comment"]["body"] = json!("thanks!\n/worktrain retry");
    let ev = inbound::github_event("issue_comment", "d4".into(), p);
    assert!(matches!(evaluate(t, &ev, None), Verdict::Retry { .. }));
}

#[test]
fn disabled_repository_filter_and_missing_template_paths() {
    let idx = load(
        "t.yml",
        &YML.replace("  - id: t\n", "  - id: t\n    enabled: false\n"),
        &EnvSource::default(),
    )
    .unwrap();
    let ev = inbound::github_event("issues", "d".into(), payload("issues.labeled.json"));
    assert_eq!(
        kind(&evaluate(idx.get("t").unwrap(), &ev, None)),
        Some(DecisionKind::TriggerDisabled)
    );
    let idx = load(
        "t.yml",
        &YML.replace("Codertocat/Hello-World", "octo/other"),
        &EnvSource::default(),
    )
    .unwrap();
    assert_eq!(
        kind(&evaluate(idx.get("t").unwrap(), &ev, None)),
        Some(DecisionKind::Filtered)
    );
    let idx = load(
        "t.yml",
        &YML.replace("$.issue.number", "$.issue.numbr"),
        &EnvSource::default(),
    )
    .unwrap();
    let v = evaluate(idx.get("t").unwrap(), &ev, None);
    let Verdict::Stop { kind, reason, .. } = v else {
        panic!()
    };
    assert_eq!(kind, DecisionKind::InvalidPayload);
    assert_eq!(
        reason,
        "goal: `$.issue.numbr` matched nothing in the payload"
    );
}
