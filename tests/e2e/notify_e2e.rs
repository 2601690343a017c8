//! Notifications with the real daemon and the fake LLM agent: Slack, Discord and a
//! signed webhook — fake receivers on loopback — are told once per moment of each
//! session (completed, failed, waiting for approval) with its links; a receiver answering
//! 500 is retried, one that is down is recorded as `notification_failed` while the
//! session still completes, and a notifier over its rate limit drops the message with a
//! recorded reason. No webhook URL or secret ever reaches the daemon's log or the events.

use std::time::Duration;

use serde_json::Value;
use worktrain_delivery::{SIGNATURE_HEADER, sign};
use worktrain_testkit::Turn;
use worktrain_testkit::receiver::{FakeReceiver, Received, Reply};

use crate::daemon_rig::{
    Rig, RigSpec, complete, have_git, of_kind, result_of, route, shell, wait_for,
};
use crate::support::exit;

/// Secret parts of the receivers' URLs and the HMAC key: never in logs or events.
const SLACK_PATH: &str = "/services/T0E2E/B0E2E/xoxSlackPathSecret42";
const DISCORD_PATH: &str = "/api/webhooks/4242/discordTokenSecret42";
const HOOK_SECRET: &str = "e2e-notify-hmac-key-42";

fn triggers_yml(extra: &str) -> String {
    format!(
        "version: 1
notifications:
  team-slack:
    kind: slack
    url: $E2E_SLACK_URL
  team-discord:
    kind: discord
    url: $E2E_DISCORD_URL
  ops:
    kind: webhook
    url: $E2E_OPS_URL
    secret: $E2E_OPS_SECRET
{extra}"
    )
}

/// Wait until `rx` received `n` requests; then a moment more, so that a duplicate
/// would have arrived too.
fn received(rig: &Rig, rx: &FakeReceiver, n: usize) -> Vec<Received> {
    let got = rig.block_on(rx.wait_for(n, Duration::from_secs(60)));
    assert!(got.len() >= n, "{} of {n} requests: {got:#?}", got.len());
    std::thread::sleep(Duration::from_millis(700));
    rx.requests()
}

/// The message text of a request, whatever the notifier's kind.
fn text_of(r: &Received) -> String {
    for k in ["content", "text"] {
        if let Some(t) = r.body[k].as_str() {
            return t.to_owned();
        }
    }
    panic!("no text in {}", r.body)
}

fn about<'a>(reqs: &'a [Received], id: &str) -> Vec<&'a Received> {
    reqs.iter().filter(|r| text_of(r).contains(id)).collect()
}

/// Notification events of a session, waiting until `n` are recorded.
fn notification_events(rig: &Rig, id: &str, n: usize) -> Vec<Value> {
    wait_for(
        &format!("{n} notification events of {id}"),
        Duration::from_secs(60),
        || {
            let ev: Vec<Value> = rig
                .events(id)
                .into_iter()
                .filter(|e| {
                    matches!(
                        e["body"]["type"].as_str(),
                        Some("notification_sent" | "notification_failed")
                    )
                })
                .collect();
            (ev.len() >= n).then_some(ev)
        },
        || format!("{:#?}", rig.events(id).last()),
    )
}

#[test]
fn completed_failed_and_gated_sessions_notify_slack_discord_and_a_signed_webhook_once_each() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![
            route("goal-notify-done-N1", vec![complete("all done")]),
            route(
                "goal-notify-early-N2",
                vec![Turn::text("All done!"), Turn::text("Really, I am done.")],
            ),
            route(
                "goal-notify-gate-N3",
                vec![complete("proposal"), complete("finished")],
            ),
        ],
        ..RigSpec::default()
    });
    let slack = rig.block_on(FakeReceiver::start()).unwrap();
    let discord = rig.block_on(FakeReceiver::start()).unwrap();
    let ops = rig.block_on(FakeReceiver::start()).unwrap();
    std::fs::write(rig.env.home().join("triggers.yml"), triggers_yml("")).unwrap();
    rig.daemon_env.extend([
        ("E2E_SLACK_URL".into(), slack.url(SLACK_PATH)),
        ("E2E_DISCORD_URL".into(), discord.url(DISCORD_PATH)),
        ("E2E_OPS_URL".into(), ops.url("/hooks/worktrain")),
        ("E2E_OPS_SECRET".into(), HOOK_SECRET.into()),
    ]);
    rig.start_daemon();

    let done = rig.spawn_in_repo("e2e-one", "goal-notify-done-N1", &[]);
    let early = rig.spawn_in_repo("e2e-one", "goal-notify-early-N2", &[]);
    let gated = rig.spawn_in_repo("e2e-gated", "goal-notify-gate-N3", &[]);
    let (_, results) = rig.await_all(&[&done, &early], "120s");
    assert_eq!(result_of(&results, &done)["outcome"], "completed");
    assert_eq!(
        result_of(&results, &early)["failure"],
        "agent_stopped_early"
    );
    rig.wait_run_state(&gated, "parked", Duration::from_secs(60));

    // Waiting for approval: each notifier hears of it once, naming the step.
    for rx in [&slack, &discord, &ops] {
        let reqs = received(&rig, rx, 3);
        let gate = about(&reqs, &gated);
        assert_eq!(gate.len(), 1, "{gate:#?}");
        assert!(
            text_of(gate[0]).contains("waiting for approval at step propose"),
            "{}",
            text_of(gate[0])
        );
    }
    rig.cli(&["session", "approve", &gated, "--note", "fine"])
        .code(exit::OK);
    let (code, _) = rig.await_all(&[&gated], "120s");
    assert_eq!(code, exit::OK);

    for (rx, name) in [(&slack, "slack"), (&discord, "discord"), (&ops, "webhook")] {
        let reqs = received(&rig, rx, 4);
        assert_eq!(reqs.len(), 4, "{name}: one message per moment: {reqs:#?}");
        for r in &reqs {
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        let d = about(&reqs, &done);
        assert_eq!(d.len(), 1, "{name}: {d:#?}");
        let t = text_of(d[0]);
        assert!(
            t.contains(&format!("session {done} completed")),
            "{name}: {t}"
        );
        assert!(t.contains("e2e-one"), "{name}: {t}");
        assert!(t.contains("goal-notify-done-N1"), "{name}: {t}");
        assert!(
            t.contains(&format!("/console/sessions/{done}")),
            "{name}: {t}"
        );
        let f = about(&reqs, &early);
        assert_eq!(f.len(), 1, "{name}: {f:#?}");
        let t = text_of(f[0]);
        assert!(
            t.contains(&format!("session {early} failed (agent_stopped_early)")),
            "{name}: {t}"
        );
        assert!(
            t.contains(&format!("/console/sessions/{early}")),
            "{name}: {t}"
        );
        let g = about(&reqs, &gated);
        assert_eq!(g.len(), 2, "{name}: waiting, then completed: {g:#?}");
        assert!(text_of(g[1]).contains("completed"), "{name}");
    }
    // The wire shapes of each receiver.
    let s = &slack.requests()[0];
    assert_eq!(s.path, SLACK_PATH);
    assert_eq!(s.body["blocks"][0]["text"]["type"], "mrkdwn");
    assert!(s.header(SIGNATURE_HEADER).is_none());
    let d = &discord.requests()[0];
    assert_eq!(d.path, DISCORD_PATH);
    assert!(d.body["content"].as_str().unwrap().chars().count() <= 2000);
    // The generic webhook: signed over the raw body, a JSON document with the links.
    for r in ops.requests() {
        assert_eq!(
            r.header(SIGNATURE_HEADER),
            Some(sign(HOOK_SECRET.as_bytes(), &r.raw).as_str()),
            "the signature verifies"
        );
    }
    let hooks = ops.requests();
    let failed_doc = &about(&hooks, &early)[0].body;
    assert_eq!(failed_doc["event"], "failed");
    assert_eq!(failed_doc["session_id"], early.as_str());
    assert_eq!(failed_doc["workflow"], "e2e-one");
    assert_eq!(failed_doc["reason"], "agent_stopped_early");
    assert!(
        failed_doc["links"]["console"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/console/sessions/{early}"))
    );
    let gate_docs: Vec<&str> = about(&hooks, &gated)
        .iter()
        .map(|r| r.body["event"].as_str().unwrap())
        .collect();
    assert_eq!(gate_docs, ["waiting_for_approval", "completed"]);

    // Every result is an event on its session, by notifier name.
    for (id, n) in [(&done, 3), (&early, 3), (&gated, 6)] {
        let ev = notification_events(&rig, id, n);
        assert_eq!(ev.len(), n, "{ev:#?}");
        assert!(
            ev.iter().all(|e| e["body"]["type"] == "notification_sent"
                && e["body"]["status"] == 200
                && e["body"]["attempts"] == 1),
            "{ev:#?}"
        );
        let mut names: Vec<&str> = ev
            .iter()
            .map(|e| e["body"]["notifier"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names, ["ops", "team-discord", "team-slack"]);
    }
    let ev = rig.events(&early);
    assert!(
        of_kind(&ev, "notification_sent")
            .iter()
            .all(|e| e["body"]["event"] == "failed")
    );

    // No URL or secret in the daemon's log or the session's events.
    let log = std::fs::read_to_string(&rig.daemon.as_ref().unwrap().log).unwrap();
    assert!(log.contains("notification sent"), "the log tells: {log}");
    for id in [&done, &early, &gated] {
        let events = rig.cli(&["--json", "session", "log", id]).stdout;
        for secret in [
            "xoxSlackPathSecret42",
            "discordTokenSecret42",
            HOOK_SECRET,
            "/hooks/worktrain",
        ] {
            assert!(!log.contains(secret), "{secret} in the daemon log");
            assert!(!events.contains(secret), "{secret} in the events of {id}");
        }
    }
}

#[test]
fn a_500_is_retried_a_dead_receiver_is_recorded_and_the_rate_limit_drops_with_a_reason() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        routes: vec![
            route("goal-notify-first-R1", vec![complete("one")]),
            route("goal-notify-second-R2", vec![complete("two")]),
        ],
        ..RigSpec::default()
    });
    let slack = rig.block_on(FakeReceiver::start()).unwrap();
    slack.reply_with([Reply::status(500)]);
    let ops = rig.block_on(FakeReceiver::start()).unwrap();
    // Nothing listens on the Discord URL.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = triggers_yml("").replace(
        "    secret: $E2E_OPS_SECRET\n",
        "    secret: $E2E_OPS_SECRET\n    max_per_minute: 1\n",
    );
    std::fs::write(rig.env.home().join("triggers.yml"), text).unwrap();
    rig.daemon_env.extend([
        ("E2E_SLACK_URL".into(), slack.url(SLACK_PATH)),
        (
            "E2E_DISCORD_URL".into(),
            format!("http://127.0.0.1:{dead}{DISCORD_PATH}"),
        ),
        ("E2E_OPS_URL".into(), ops.url("/hooks/worktrain")),
        ("E2E_OPS_SECRET".into(), HOOK_SECRET.into()),
    ]);
    rig.start_daemon();

    let first = rig.spawn_in_repo("e2e-one", "goal-notify-first-R1", &[]);
    let (code, _) = rig.await_all(&[&first], "120s");
    assert_eq!(code, exit::OK, "a dead receiver never fails the session");
    let ev = notification_events(&rig, &first, 3);
    let by = |name: &str| -> Value {
        ev.iter()
            .find(|e| e["body"]["notifier"] == name)
            .unwrap_or_else(|| panic!("{name}: {ev:#?}"))["body"]
            .clone()
    };
    // 500, then 200: retried once.
    let s = by("team-slack");
    assert_eq!(
        (
            s["type"].as_str(),
            s["status"].as_u64(),
            s["attempts"].as_u64()
        ),
        (Some("notification_sent"), Some(200), Some(2)),
        "{s:#}"
    );
    let reqs = received(&rig, &slack, 2);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].raw, reqs[1].raw);
    // Down: recorded, bounded, never fatal, no URL.
    let d = by("team-discord");
    assert_eq!(d["type"], "notification_failed", "{d:#}");
    assert_eq!(d["reason"], "unreachable", "{d:#}");
    assert_eq!(d["event"], "completed", "{d:#}");
    assert_eq!(d["attempts"], 3, "{d:#}");
    assert!(d.get("status").is_none(), "{d:#}");
    let m = d["message"].as_str().unwrap();
    assert!(
        !m.contains(&dead.to_string()) && !m.contains("discordToken"),
        "{m}"
    );
    assert_eq!(rig.show(&first)["run"]["state"], "completed");
    assert_eq!(by("ops")["type"], "notification_sent");

    // The second session within the minute: `ops` allows 1 a minute, so it is dropped.
    let second = rig.spawn_in_repo("e2e-one", "goal-notify-second-R2", &[]);
    let (code, _) = rig.await_all(&[&second], "120s");
    assert_eq!(code, exit::OK);
    let ev2 = notification_events(&rig, &second, 3);
    let o = ev2.iter().find(|e| e["body"]["notifier"] == "ops").unwrap()["body"].clone();
    assert_eq!(o["type"], "notification_failed", "{o:#}");
    assert_eq!(o["reason"], "rate_limited", "{o:#}");
    assert_eq!(o["attempts"], 0, "{o:#}");
    assert!(
        o["message"]
            .as_str()
            .unwrap()
            .contains("more than 1 messages a minute to `ops`"),
        "{o:#}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ops.requests().len(), 1, "the dropped message was not sent");
    let log = std::fs::read_to_string(&rig.daemon.as_ref().unwrap().log).unwrap();
    assert!(
        log.contains("notification dropped: rate limit exhausted"),
        "{log}"
    );
    assert!(!log.contains("discordTokenSecret42") && !log.contains(HOOK_SECRET));
}

/// `trigger validate` lists the notifiers by name and kind, never their URLs or secrets;
/// a run that recovery fails (too many interruptions) is notified as failed; runs the
/// operator's kill switch stops are not (the operator knows, and a kill switch over many
/// sessions would be a burst of messages).
#[test]
fn validate_lists_notifiers_recovery_failures_notify_and_the_kill_switch_does_not() {
    if !have_git() {
        eprintln!("skipped: git is not installed");
        return;
    }
    let mut rig = Rig::new(RigSpec {
        daemon: &["lease_secs: 3", "max_interruptions: 0"],
        routes: vec![
            route(
                "goal-notify-crash-C1",
                vec![shell("touch started && sleep 3"), complete("never again")],
            ),
            route(
                "goal-notify-kill-C2",
                vec![shell("touch started && sleep 30"), complete("never")],
            ),
        ],
        ..RigSpec::default()
    });
    let ops = rig.block_on(FakeReceiver::start()).unwrap();
    let text = triggers_yml("")
        .replace(
            "  team-slack:\n    kind: slack\n    url: $E2E_SLACK_URL\n",
            "",
        )
        .replace(
            "  team-discord:\n    kind: discord\n    url: $E2E_DISCORD_URL\n",
            "",
        );
    std::fs::write(rig.env.home().join("triggers.yml"), text).unwrap();
    let vars = [
        ("E2E_OPS_URL".to_owned(), ops.url("/hooks/worktrain")),
        ("E2E_OPS_SECRET".to_owned(), HOOK_SECRET.to_owned()),
    ];

    let out = rig
        .env
        .cmd(&["--json", "trigger", "validate"])
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["notifiers"][0]["name"], "ops", "{v:#}");
    assert_eq!(v["notifiers"][0]["kind"], "webhook", "{v:#}");
    assert_eq!(
        v["notifiers"][0]["events"].as_array().unwrap().len(),
        4,
        "{v:#}"
    );
    let human = rig
        .env
        .cmd(&["trigger", "validate"])
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human.contains("1 notifier(s): ops (webhook, global)"),
        "{human}"
    );
    for shown in [&stdout, &human] {
        assert!(
            !shown.contains("/hooks/worktrain") && !shown.contains(HOOK_SECRET),
            "{shown}"
        );
    }

    rig.daemon_env.extend(vars);
    rig.start_daemon();
    let crashed = rig.spawn_in_repo("e2e-one", "goal-notify-crash-C1", &[]);
    rig.wait_file(&crashed, "started", Duration::from_secs(30));
    rig.sigkill_daemon();
    rig.start_daemon();
    let (_, results) = rig.await_all(&[&crashed], "60s");
    assert_eq!(
        result_of(&results, &crashed)["failure"],
        "too_many_interruptions"
    );
    let reqs = received(&rig, &ops, 1);
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].body["event"], "failed");
    assert_eq!(reqs[0].body["session_id"], crashed.as_str());
    assert_eq!(reqs[0].body["reason"], "too_many_interruptions");
    let ev = notification_events(&rig, &crashed, 1);
    assert_eq!(ev[0]["body"]["type"], "notification_sent", "{ev:#?}");

    let killed = rig.spawn_in_repo("e2e-one", "goal-notify-kill-C2", &[]);
    rig.wait_file(&killed, "started", Duration::from_secs(30));
    rig.cli(&["kill-all"]).code(exit::OK);
    let (_, results) = rig.await_all(&[&killed], "60s");
    assert_eq!(result_of(&results, &killed)["failure"], "killed");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ops.requests().len(), 1, "nobody is told about a kill");
    let ev = rig.events(&killed);
    assert!(of_kind(&ev, "notification_sent").is_empty());
    assert!(of_kind(&ev, "notification_failed").is_empty());
}
