//! `notifications:` and a trigger's `notify:` in triggers.yml: which notifiers hear of
//! which sessions' moments, and precise errors (file, line, field) for what cannot work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use worktrain_core::run::{NotifierKind, NotifyEvent};
use worktrain_triggers::config::{ConfigError, TriggerIndex, load};
use worktrain_triggers::env::EnvSource;

fn env() -> EnvSource {
    EnvSource::Map(
        [
            (
                "SLACK_URL",
                "https://hooks.slack.com/services/T0/B0/s3cretpath",
            ),
            ("DISCORD_URL", "https://discord.com/api/webhooks/1/t0ken"),
            ("OPS_URL", "https://ops.example.com/worktrain"),
            ("OPS_SECRET", "ops-hmac-key-0123"),
            ("HOOK_SECRET", "webhook-secret"),
            ("NOT_A_URL", "example-secret-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
}

const FILE: &str = "\
version: 1
notifications:
  team-slack:
    kind: slack
    url: $SLACK_URL
  release-discord:
    kind: discord
    url: $DISCORD_URL
    events: [completed, delivery_failed]
    global: false
  ops:
    kind: webhook
    url: $OPS_URL
    secret: $OPS_SECRET
    events: [failed, delivery_failed]
    max_per_minute: 5
triggers:
  - id: nightly
    source:
      webhook: {secret: $HOOK_SECRET}
    workflow: coding-task
    goal: nightly
    notify:
      to: [release-discord]
  - id: quiet
    source:
      webhook: {secret: $HOOK_SECRET}
    workflow: coding-task
    goal: quiet
    notify:
      global: false
      to: [ops]
      events: [failed]
";

fn index() -> TriggerIndex {
    load("triggers.yml", FILE, &env()).unwrap_or_else(|e| panic!("{e}"))
}

fn names(index: &TriggerIndex, trigger: Option<&str>, event: NotifyEvent) -> Vec<String> {
    index
        .notifiers_for(trigger, event)
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .collect()
}

#[test]
fn notifiers_load_with_their_secrets_from_the_environment() {
    let idx = index();
    let slack = &idx.notifiers["team-slack"];
    assert_eq!(slack.kind, NotifierKind::Slack);
    assert_eq!(
        slack.url.value(),
        "https://hooks.slack.com/services/T0/B0/s3cretpath"
    );
    assert_eq!(slack.max_per_minute, 30, "the default limit");
    assert!(
        NotifyEvent::ALL.iter().all(|e| slack.wants(*e)),
        "all events by default"
    );
    let ops = &idx.notifiers["ops"];
    assert_eq!(ops.secret.as_ref().unwrap().value(), "ops-hmac-key-0123");
    assert_eq!(ops.max_per_minute, 5);
    // Printing the configuration shows the variables, never the values.
    let shown = format!("{:?}", idx.notifiers);
    assert!(shown.contains("$SLACK_URL"), "{shown}");
    assert!(
        !shown.contains("s3cretpath") && !shown.contains("ops-hmac-key"),
        "{shown}"
    );
}

#[test]
fn global_notifiers_hear_of_every_session_and_triggers_add_or_leave_them_out() {
    let idx = index();
    // A spawned session (no trigger): the global notifiers that want the event.
    assert_eq!(names(&idx, None, NotifyEvent::Completed), ["team-slack"]);
    assert_eq!(
        names(&idx, None, NotifyEvent::Failed),
        ["ops", "team-slack"]
    );
    // `nightly` adds the non-global Discord notifier, which wants only its events.
    assert_eq!(
        names(&idx, Some("nightly"), NotifyEvent::Completed),
        ["release-discord", "team-slack"]
    );
    assert_eq!(
        names(&idx, Some("nightly"), NotifyEvent::WaitingForApproval),
        ["team-slack"]
    );
    // `quiet` leaves the global ones out and notifies only failures, to ops.
    assert_eq!(names(&idx, Some("quiet"), NotifyEvent::Failed), ["ops"]);
    assert!(names(&idx, Some("quiet"), NotifyEvent::Completed).is_empty());
    assert!(names(&idx, Some("quiet"), NotifyEvent::DeliveryFailed).is_empty());
    // A trigger id that is not (or no longer) configured: like a spawn.
    assert_eq!(
        names(&idx, Some("gone"), NotifyEvent::Completed),
        ["team-slack"]
    );
}

#[test]
fn notifier_urls_and_secrets_are_redacted_like_other_credentials() {
    let secrets = index().secrets();
    for s in [
        "https://hooks.slack.com/services/T0/B0/s3cretpath",
        "https://discord.com/api/webhooks/1/t0ken",
        "ops-hmac-key-0123",
    ] {
        assert!(secrets.contains(&s.to_owned()), "{s} in {secrets:?}");
    }
}

fn error(text: &str) -> ConfigError {
    match load("triggers.yml", text, &env()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn an_unknown_field_is_located_with_a_suggestion() {
    let e = error(&FILE.replace("max_per_minute: 5", "max_per_minut: 5"));
    assert_eq!(e.line, Some(16), "{e}");
    assert_eq!(
        e.path.as_deref(),
        Some("notifications.ops.max_per_minut"),
        "{e}"
    );
    assert!(e.message.contains("did you mean `max_per_minute`"), "{e}");
}

#[test]
fn an_unknown_kind_or_event_is_rejected_at_its_line() {
    let e = error(&FILE.replace("kind: discord", "kind: teams"));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("unknown variant `teams`"), "{e}");
    let e = error(&FILE.replace("events: [completed, delivery_failed]", "events: [done]"));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("waiting_for_approval"), "{e}");
}

#[test]
fn a_webhook_notifier_needs_a_secret_and_slack_or_discord_take_none() {
    let e = error(&FILE.replace("    secret: $OPS_SECRET\n", ""));
    assert_eq!(e.path.as_deref(), Some("notifications.ops.secret"), "{e}");
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.message.contains("add `secret: $VAR`"), "{e}");
    let e = error(&FILE.replace(
        "    url: $SLACK_URL\n",
        "    url: $SLACK_URL\n    secret: $OPS_SECRET\n",
    ));
    assert_eq!(
        e.path.as_deref(),
        Some("notifications.team-slack.secret"),
        "{e}"
    );
    assert!(e.message.contains("remove `secret`"), "{e}");
}

#[test]
fn a_url_that_is_not_http_is_named_by_what_was_written_never_its_value() {
    let e = error(&FILE.replace("url: $SLACK_URL", "url: $NOT_A_URL"));
    assert_eq!(
        e.path.as_deref(),
        Some("notifications.team-slack.url"),
        "{e}"
    );
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains("`$NOT_A_URL` is not an http(s) URL"),
        "{e}"
    );
    assert!(!e.to_string().contains("example-secret-value"), "{e}");
    let e = error(&FILE.replace("url: $OPS_URL", "url: ftp://ops.example.com/x"));
    assert_eq!(e.path.as_deref(), Some("notifications.ops.url"), "{e}");
}

#[test]
fn a_missing_variable_is_named_at_its_line() {
    let e = error(&FILE.replace("$DISCORD_URL", "$UNSET_DISCORD_URL"));
    // The notifier's entry (its line) and the field (its path).
    assert_eq!(e.line, Some(7), "{e}");
    assert_eq!(
        e.path.as_deref(),
        Some("notifications.release-discord.url"),
        "{e}"
    );
    assert!(e.message.contains("`UNSET_DISCORD_URL` is not set"), "{e}");
}

#[test]
fn a_trigger_naming_an_undefined_notifier_is_told_the_known_ones() {
    let e = error(&FILE.replace("to: [release-discord]", "to: [release-discrod]"));
    assert_eq!(e.path.as_deref(), Some("triggers[0].notify.to"), "{e}");
    assert_eq!(e.line, Some(24), "{e}");
    assert!(
        e.message
            .contains("notifier `release-discrod` is not defined under `notifications:` (known: ops, release-discord, team-slack)"),
        "{e}"
    );
}

#[test]
fn empty_event_lists_and_a_zero_rate_are_refused() {
    let e = error(&FILE.replace("events: [failed, delivery_failed]", "events: []"));
    assert_eq!(e.path.as_deref(), Some("notifications.ops.events"), "{e}");
    let e = error(&FILE.replace("max_per_minute: 5", "max_per_minute: 0"));
    assert_eq!(
        e.path.as_deref(),
        Some("notifications.ops.max_per_minute"),
        "{e}"
    );
    assert_eq!(e.line, Some(16), "{e}");
    let e = error(&FILE.replace("      events: [failed]\n", "      events: []\n"));
    assert_eq!(e.path.as_deref(), Some("triggers[1].notify.events"), "{e}");
    let e = error(&FILE.replace("  team-slack:", "  'team slack':"));
    assert!(e.message.contains("notifier name `team slack`"), "{e}");
}
