//! The console in real headless Chromium (WebDriver): login, live updates without
//! reload, session details, actions from the page, untrusted Markdown rendered inert.
//! Screenshots go to `target/console-screenshots/`.

use fantoccini::Locator;
use serde_json::{Value, json};
use worktrain_testkit::Turn;

use crate::harness::{Browser, Daemon, complete, eventually, group_members, route, slow_shell};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_form_and_the_cookie_is_out_of_scripts_reach() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![]).await;
    b.goto(&d.url("/console/sessions")).await;
    assert!(
        b.path().await.starts_with("/console/login"),
        "{}",
        b.path().await
    );
    b.screenshot("login").await;
    // A wrong token is refused with a message.
    let field = b.c.find(Locator::Css("#token")).await.unwrap();
    field.send_keys("wrong").await.unwrap();
    b.c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(10, "the refusal", || async {
        b.text(".error")
            .await
            .contains("not this daemon's API token")
            .then_some(())
    })
    .await;
    b.login(&d).await;
    assert_eq!(b.path().await, "/console/sessions");
    assert_eq!(b.text("h1").await, "Sessions");
    // HttpOnly: no script can read the session cookie.
    let cookies = b.js("return document.cookie").await;
    assert!(
        !cookies.as_str().unwrap_or("").contains("wt_console"),
        "{cookies}"
    );
    // Logging out ends the session.
    b.c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(10, "the login page", || async {
        b.path().await.starts_with("/console/login").then_some(())
    })
    .await;
    b.goto(&d.url("/console/sessions")).await;
    assert!(b.path().await.starts_with("/console/login"));
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_page_redirects_to_login_and_back_after_it() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![route("deep-link", vec![complete("done")])]).await;
    let id = d.spawn("two", "deep-link").await;
    b.goto(&d.url(&format!("/console/sessions/{id}"))).await;
    let p = b.path().await;
    assert!(p.starts_with("/console/login?next="), "{p}");
    b.login(&d).await;
    assert_eq!(b.path().await, format!("/console/sessions/{id}"));
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_appears_and_advances_without_reload() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![route(
        "live-goal",
        vec![
            slow_shell(1200),
            complete("planned"),
            slow_shell(1200),
            complete("built"),
        ],
    )])
    .await;
    b.goto(&d.url("/console/sessions")).await;
    b.login(&d).await;
    eventually(10, "the live stream", || async {
        (b.js("return document.body.getAttribute('data-live')").await == json!("on")).then_some(())
    })
    .await;
    // A marker that a reload would erase.
    b.js("window.__noReload = 42; return null").await;
    assert!(b.text("table.sessions").await.is_empty());
    let id = d.spawn("two", "live-goal").await;
    let row = format!("tr[data-session='{id}']");
    eventually(15, "the new session's row", || async {
        b.text(&row).await.contains("live-goal").then_some(())
    })
    .await;
    eventually(20, "the session to reach its second step", || async {
        b.text(&row).await.contains("build").then_some(())
    })
    .await;
    b.screenshot("sessions").await;
    eventually(20, "the session to complete", || async {
        b.text(&format!("{row} .badge"))
            .await
            .contains("completed")
            .then_some(())
    })
    .await;
    assert_eq!(
        b.js("return window.__noReload").await,
        json!(42),
        "the page reloaded"
    );
    // Phone width: nothing sticks out sideways; the table scrolls inside its box.
    b.c.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(
        fits,
        json!(true),
        "the sessions page overflows a phone-width screen"
    );
    b.screenshot("sessions-phone").await;
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_of_a_completed_and_a_failed_session() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![
        route(
            "ok-goal",
            vec![
                Turn::tool("shell", json!({"command": "echo hello"})),
                complete("## Plan\n\n- read the code\n- change it"),
                complete("Built it. See `src/lib.rs`."),
            ],
        ),
        route(
            "bad-goal",
            vec![Turn::Error {
                status: 400,
                retry_after: None,
                message: Some("model refused the request".into()),
            }],
        ),
    ])
    .await;
    let ok = d.spawn("two", "ok-goal").await;
    let bad = d.spawn("two", "bad-goal").await;
    d.wait_state(&ok, "completed").await;
    d.wait_state(&bad, "failed").await;
    b.goto(&d.url(&format!("/console/sessions/{ok}"))).await;
    b.login(&d).await;
    let status = b.text(".status-line").await;
    assert!(
        status.contains("completed") && status.contains("2 steps done"),
        "{status}"
    );
    let steps = b.text("ol.steps").await;
    assert!(steps.contains("plan") && steps.contains("build"), "{steps}");
    // Notes are rendered Markdown.
    assert_eq!(b.text("#node-1 .notes h2").await, "Plan");
    assert_eq!(b.text("#node-2 .notes code").await, "src/lib.rs");
    // The trace waterfall lists the LLM turns and the tool call.
    let trace = b.text("table.trace").await;
    assert!(
        trace.contains("LLM turn") && trace.contains("shell"),
        "{trace}"
    );
    // The graph image loaded (an SVG with this session's path).
    let w = eventually(10, "the graph", || async {
        let v = b.js("const i = document.querySelector('img.graph'); return i && i.complete ? i.naturalWidth : 0").await;
        (v.as_u64().unwrap_or(0) > 0).then_some(v)
    })
    .await;
    assert!(w.as_u64().unwrap() > 50);
    // A completed run offers rewind, not cancel.
    assert!(b.c.find(Locator::Css("details.a-rewind")).await.is_ok());
    assert!(b.c.find(Locator::Css("details.a-cancel")).await.is_err());
    b.screenshot("session-completed").await;
    b.goto(&d.url(&format!("/console/sessions/{bad}"))).await;
    let status = b.text(".status-line").await;
    assert!(status.contains("failed"), "{status}");
    let reason = b.text(".status-line .reason").await;
    assert!(!reason.is_empty(), "no failure reason in: {status}");
    assert!(b.c.find(Locator::Css("details.a-retry")).await.is_ok());
    b.screenshot("session-failed").await;
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_steer_and_cancel_from_the_page_change_the_session() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut slow = Vec::new();
    for _ in 0..40 {
        slow.push(slow_shell(500));
    }
    slow.push(complete("never reached"));
    let d = Daemon::start(vec![
        route(
            "gate-goal",
            vec![complete("**Proposal**: rename it"), complete("finished")],
        ),
        route("steer-goal", slow),
    ])
    .await;
    // Approve a parked gate.
    let gated = d.spawn("gated", "gate-goal").await;
    d.wait_state(&gated, "parked").await;
    b.goto(&d.url(&format!("/console/sessions/{gated}"))).await;
    b.login(&d).await;
    assert!(
        b.text(".parked").await.contains("Proposal"),
        "{}",
        b.text("ol.steps").await
    );
    b.screenshot("session-parked").await;
    // The inbox and the queue list it too.
    b.goto(&d.url("/console/approvals")).await;
    assert!(b.text("article.approval").await.contains("Proposal"));
    b.screenshot("approvals").await;
    b.goto(&d.url("/console/queue")).await;
    assert!(b.text("main").await.contains("Parked at a gate (1)"));
    b.screenshot("queue").await;
    b.goto(&d.url(&format!("/console/sessions/{gated}"))).await;
    b.act("approve", Some("ship it")).await;
    d.wait_state(&gated, "completed").await;
    assert!(
        d.event_kinds(&gated)
            .await
            .contains(&"gate_approved".to_owned())
    );
    // Steer, then cancel, a running session.
    let running = d.spawn("two", "steer-goal").await;
    d.wait_state(&running, "running").await;
    b.goto(&d.url(&format!("/console/sessions/{running}")))
        .await;
    b.act("steer", Some("focus on the tests first")).await;
    eventually(10, "the steer event", || async {
        d.event_kinds(&running)
            .await
            .contains(&"steered".to_owned())
            .then_some(())
    })
    .await;
    eventually(10, "the page after the steer", || async {
        b.path().await.ends_with(&running).then_some(())
    })
    .await;
    b.screenshot("session-running").await;
    b.act("cancel", Some("not needed any more")).await;
    let s: Value = d.wait_state(&running, "cancelled").await;
    assert_eq!(s["run"]["state"], "cancelled");
    eventually(15, "the page to show the cancellation", || async {
        b.text(".status-line")
            .await
            .contains("cancelled")
            .then_some(())
    })
    .await;
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_note_with_script_image_handler_and_javascript_link_is_inert() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let note = "Done.\n\n<script>window.__xss = 1</script>\n\n\
                <img src=x onerror=\"window.__xss = 2\">\n\n\
                [click me](javascript:window.__xss=3) and <a href=\"javascript:window.__xss=4\">raw</a>";
    let d = Daemon::start(vec![route(
        "<b>xss-goal</b>",
        vec![complete(note), complete(note)],
    )])
    .await;
    let id = d
        .spawn("two", "<b>xss-goal</b> <script>window.__xss = 5</script>")
        .await;
    d.wait_state(&id, "completed").await;
    b.goto(&d.url("/console/sessions")).await;
    b.login(&d).await;
    b.goto(&d.url(&format!("/console/sessions/{id}"))).await;
    let notes = b.text("#node-1 .notes").await;
    assert!(
        notes.contains("<script>window.__xss = 1</script>"),
        "shown as text: {notes}"
    );
    assert_eq!(b.js("return document.querySelectorAll('.notes script, .notes img, .goal script, .goal b').length").await, json!(0));
    let hrefs = b.js("return Array.from(document.querySelectorAll('.notes a')).map(a => a.getAttribute('href'))").await;
    for h in hrefs.as_array().unwrap() {
        assert!(
            !h.as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("javascript"),
            "{hrefs}"
        );
    }
    if let Ok(a) = b.c.find(Locator::LinkText("click me")).await {
        a.click().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(b.js("return typeof window.__xss").await, json!("undefined"));
    // The list shows the goal as text too.
    b.goto(&d.url("/console/sessions")).await;
    assert!(b.text("td.goal").await.contains("<b>xss-goal</b>"));
    assert_eq!(b.js("return typeof window.__xss").await, json!("undefined"));
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_from_the_browser_starts_a_session() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![route(
        "from-the-browser",
        vec![complete("done"), complete("done")],
    )])
    .await;
    b.goto(&d.url("/console/dispatch")).await;
    b.login(&d).await;
    assert_eq!(b.path().await, "/console/dispatch");
    let goal = b.c.find(Locator::Css("#d-goal")).await.unwrap();
    goal.send_keys("from-the-browser: tidy the README")
        .await
        .unwrap();
    let wf = b.c.find(Locator::Css("#d-workflow")).await.unwrap();
    wf.select_by_value("two").await.unwrap();
    let ctx = b.c.find(Locator::Css("#d-context")).await.unwrap();
    ctx.send_keys("[1, 2]").await.unwrap();
    b.screenshot("dispatch").await;
    b.c.find(Locator::Css("form.dispatch button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A context that is not an object is refused, the form kept.
    eventually(10, "the refusal", || async {
        b.text(".error").await.contains("JSON object").then_some(())
    })
    .await;
    let ctx = b.c.find(Locator::Css("#d-context")).await.unwrap();
    ctx.clear().await.unwrap();
    ctx.send_keys("{\"ticket\": \"ABC-1\"}").await.unwrap();
    b.c.find(Locator::Css("form.dispatch button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let id = eventually(10, "the new session's page", || async {
        let p = b.path().await;
        p.strip_prefix("/console/sessions/").map(str::to_owned)
    })
    .await;
    let s = d.wait_state(&id, "completed").await;
    assert_eq!(s["run"]["trigger"]["kind"], "console", "{s:#}");
    assert_eq!(s["context"]["ticket"], "ABC-1", "{s:#}");
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_retry_and_rewind_from_the_page_change_the_session() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let d = Daemon::start(vec![
        route(
            "reject-goal",
            vec![
                complete("**Proposal**: rename everything"),
                complete("**Proposal**: rename one function, with tests"),
                complete("finished"),
            ],
        ),
        route(
            "retry-goal",
            vec![
                Turn::Error {
                    status: 400,
                    retry_after: None,
                    message: Some("model refused the request".into()),
                },
                complete("planned after the retry"),
                complete("built after the retry"),
            ],
        ),
    ])
    .await;
    // Reject a parked gate: the agent must submit a new attempt, which parks again.
    let gated = d.spawn("gated", "reject-goal").await;
    d.wait_state(&gated, "parked").await;
    b.goto(&d.url(&format!("/console/sessions/{gated}"))).await;
    b.login(&d).await;
    b.act("reject", Some("too broad: one function, with tests"))
        .await;
    eventually(20, "the second proposal", || async {
        let kinds = d.event_kinds(&gated).await;
        (kinds.contains(&"gate_rejected".to_owned())
            && kinds.iter().filter(|k| *k == "step_parked").count() == 2)
            .then_some(())
    })
    .await;
    eventually(15, "the page to show the new proposal", || async {
        b.text("ol.steps")
            .await
            .contains("with tests")
            .then_some(())
    })
    .await;

    // Retry a failed run: it runs again and completes.
    let failed = d.spawn("two", "retry-goal").await;
    d.wait_state(&failed, "failed").await;
    b.goto(&d.url(&format!("/console/sessions/{failed}"))).await;
    b.act("retry", None).await;
    let s: Value = d.wait_state(&failed, "completed").await;
    assert_eq!(s["status"], "complete", "{s:#}");
    assert!(
        d.event_kinds(&failed)
            .await
            .contains(&"run_requeued".to_owned())
    );
    eventually(15, "the page to show the completed run", || async {
        b.text(".status-line")
            .await
            .contains("completed")
            .then_some(())
    })
    .await;

    // Rewind the completed session to its first step.
    b.act("rewind", None).await;
    eventually(10, "the rewind event", || async {
        d.event_kinds(&failed)
            .await
            .contains(&"session_rewound".to_owned())
            .then_some(())
    })
    .await;
    let s = d.session(&failed).await;
    assert_eq!(s["current"]["step_id"], "plan", "{s:#}");
    eventually(15, "the page to show the rewound session", || async {
        b.text(".status-line")
            .await
            .contains("at plan")
            .then_some(())
    })
    .await;
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_the_page_continues_an_interrupted_run() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut slow = Vec::new();
    for _ in 0..40 {
        slow.push(slow_shell(500));
    }
    let d = Daemon::start(vec![route("resume-goal", slow)]).await;
    let id = d.spawn("two", "resume-goal").await;
    d.wait_state(&id, "running").await;
    // A graceful stop interrupts the run; the next daemon serves the console before its
    // supervisor recovers anything, so the run waits, interrupted, for an operator.
    let mut d = d
        .restart_held(vec![route(
            "resume-goal",
            vec![
                complete("planned after the resume"),
                complete("built after the resume"),
            ],
        )])
        .await;
    let s = d.session(&id).await;
    assert_eq!(s["run"]["state"], "interrupted", "{s:#}");
    b.goto(&d.url(&format!("/console/sessions/{id}"))).await;
    b.login(&d).await;
    assert!(
        b.text(".status-line").await.contains("interrupted"),
        "{}",
        b.text("main").await
    );
    b.screenshot("session-interrupted").await;
    // Resume, with its confirmation: the run is queued again, recorded as an event.
    b.act("resume", None).await;
    let s = d.wait_state(&id, "queued").await;
    assert_eq!(s["run"]["requeue_reason"], "resume", "{s:#}");
    let (_, page) = d
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{id}/events?limit=1000"),
            None,
        )
        .await;
    let requeued: Vec<&Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["body"]["type"] == "run_requeued")
        .collect();
    assert_eq!(requeued.len(), 1, "{page:#}");
    assert_eq!(requeued[0]["body"]["reason"], "resume", "{page:#}");
    eventually(15, "the page to show the queued run", || async {
        b.text(".status-line")
            .await
            .contains("queued")
            .then_some(())
    })
    .await;
    // The session continues where it stood and completes.
    d.release();
    let s = d.wait_state(&id, "completed").await;
    assert_eq!(s["status"], "complete", "{s:#}");
    assert_eq!(
        s["run"]["run"], 2,
        "a second attempt of the same run: {s:#}"
    );
    eventually(15, "the page to show the completed run", || async {
        b.text(".status-line")
            .await
            .contains("completed")
            .then_some(())
    })
    .await;
    b.close().await;
    d.stop().await;
}

/// A browser test that panics drops its browser while unwinding: chromedriver and every
/// Chromium process it started (one process group) are gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_browser_test_leaves_no_chromium_behind() {
    let Some(b) = Browser::start().await else {
        return;
    };
    b.goto("about:blank").await;
    let group = b.group;
    let members = group_members(group);
    assert!(
        members
            .iter()
            .any(|(_, comm)| comm.starts_with("chrom") && !comm.contains("driver")),
        "Chromium runs in chromedriver's process group: {members:?}"
    );
    let failed = tokio::spawn(async move {
        let _b = b;
        panic!("a failing browser test");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    eventually(10, "every process of the group to end", || async {
        group_members(group).is_empty().then_some(())
    })
    .await;
}
