//! The console's security shell over plain HTTP: redirects, cookies, CSRF, CSP, assets.

use reqwest::{Method, StatusCode};

use serde_json::json;
use worktrain_testkit::Turn;

use crate::harness::{Daemon, complete, git_repo, page, route, set_cookie, slow_shell};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_redirected_to_login() {
    let d = Daemon::start(vec![]).await;
    for path in [
        "/console",
        "/console/sessions",
        "/console/sessions/ses_01hzzzzzzzzzzzzzzzzzzzzzzz",
        "/console/live/sessions",
        "/console/dispatch",
    ] {
        let r = d.http.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(loc.starts_with("/console/login?next="), "{path} → {loc}");
    }
    // A wrong cookie is no better than none.
    let r = d
        .http
        .get(d.url("/console/sessions"))
        .header("cookie", "wt_console=0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The bearer token is for the API, not the pages.
    let r = d
        .http
        .get(d.url("/console/sessions"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The login page itself is open, and says what to paste.
    let r = d.http.get(d.url("/console/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("API token"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_an_httponly_strict_cookie_and_refuses_a_wrong_token() {
    let d = Daemon::start(vec![]).await;
    let page = d.http.get(d.url("/console/login")).send().await.unwrap();
    let pre = set_cookie(&page, "wt_login").unwrap();
    let html = page.text().await.unwrap();
    let csrf = crate::harness::hidden(&html, "csrf").unwrap();
    // Wrong token: 401, no session cookie.
    let r = d
        .http
        .post(d.url("/console/login"))
        .header("cookie", format!("wt_login={pre}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", "not-the-token"),
            ("next", "/console/sessions"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "wt_console").is_none());
    // A login form posted without its double-submit cookie (another site's form) is refused.
    let r = d
        .http
        .post(d.url("/console/login"))
        .form(&[("csrf", csrf.as_str()), ("token", d.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Right token: the cookie is HttpOnly, SameSite=Strict, scoped to the console.
    let r = d
        .http
        .post(d.url("/console/login"))
        .header("cookie", format!("wt_login={pre}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", d.token.as_str()),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/console/sessions",
        "no open redirect"
    );
    let header = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("wt_console="))
        .unwrap();
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Path=/console"), "{header}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_works_once_and_needs_the_bearer_token() {
    let d = Daemon::start(vec![]).await;
    let r = d
        .http
        .post(d.url("/console/login-links"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = d.api(Method::POST, "/console/login-links", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let path = v["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/console/login?ticket="), "{path}");
    let r = d.http.get(d.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&r, "wt_console").unwrap();
    let page = d
        .http
        .get(d.url("/console/sessions"))
        .header("cookie", format!("wt_console={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // Second use: refused.
    let r = d.http.get(d.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "wt_console").is_none());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let d = Daemon::start(vec![route(
        "csrf-gate",
        vec![complete("proposal"), complete("done")],
    )])
    .await;
    let id = d.spawn("gated", "csrf-gate").await;
    d.wait_state(&id, "parked").await;
    let (cookie, csrf) = d.http_login().await;
    let action = d.url(&format!("/console/sessions/{id}/actions/approve"));
    for body in [
        vec![("note", "ok")],
        vec![("note", "ok"), ("csrf", "forged")],
    ] {
        let r = d
            .http
            .post(&action)
            .header("cookie", &cookie)
            .form(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{body:?}");
    }
    let r = d
        .http
        .post(&action)
        .header("cookie", &cookie)
        .header("x-csrf-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Nothing happened.
    assert_eq!(d.session(&id).await["run"]["state"], "parked");
    assert!(
        !d.event_kinds(&id)
            .await
            .contains(&"gate_approved".to_owned())
    );
    // Without the cookie, even the right token sends you to the login page.
    let r = d
        .http
        .post(&action)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        !d.event_kinds(&id)
            .await
            .contains(&"gate_approved".to_owned())
    );
    // With it: approved, recorded as an event.
    let r = d
        .http
        .post(&action)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("note", "looks right")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        d.event_kinds(&id)
            .await
            .contains(&"gate_approved".to_owned())
    );
    d.wait_state(&id, "completed").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_a_strict_csp_no_inline_code_and_cached_gzipped_assets() {
    let d = Daemon::start(vec![route("csp-goal", vec![complete("done *here*")])]).await;
    let id = d.spawn("two", "csp-goal").await;
    let (cookie, _) = d.http_login().await;
    for path in [
        "/console/sessions".to_owned(),
        format!("/console/sessions/{id}"),
        "/console/dispatch".to_owned(),
    ] {
        let r = d
            .http
            .get(d.url(&path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "inline script on {path}");
        assert!(!html.contains(" style=\""), "inline style on {path}");
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "handler on {path}"
        );
        assert!(
            html.len() < 200 * 1024,
            "{path} weighs {} bytes",
            html.len()
        );
    }
    // Assets: hashed names, cached for a year, gzipped on request.
    let r = d
        .http
        .get(d.url("/console/sessions"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    let css = html
        .split('"')
        .find(|s| s.starts_with("/console/assets/console.") && s.ends_with(".css"))
        .unwrap()
        .to_owned();
    let r = d
        .http
        .get(d.url(&css))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let r = d
        .http
        .get(d.url("/console/assets/console.0000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_approvals_show_what_waits() {
    let mut slow = Vec::new();
    for _ in 0..30 {
        slow.push(slow_shell(500));
    }
    let d = Daemon::start(vec![
        route(
            "inbox-gate",
            vec![
                complete("**Proposal**: rename `load` <script>x()</script>"),
                complete("done"),
            ],
        ),
        route("inbox-busy", slow),
    ])
    .await;
    let gated = d.spawn("gated", "inbox-gate").await;
    d.wait_state(&gated, "parked").await;
    let busy = d.spawn("two", "inbox-busy").await;
    d.wait_state(&busy, "running").await;
    let (cookie, csrf) = d.http_login().await;
    let (s, html) = page(&d, &cookie, "/console/approvals").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Approvals (1)"), "{html}");
    assert!(
        html.contains(&gated) && html.contains("<strong>Proposal</strong>"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;") && !html.contains("<script>x()"),
        "{html}"
    );
    assert!(html.contains(&format!("/console/sessions/{gated}/actions/approve")));
    assert!(html.contains(&csrf));
    let (s, html) = page(&d, &cookie, "/console/queue").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Running (1)") && html.contains(&busy),
        "{html}"
    );
    assert!(
        html.contains("Parked at a gate (1)") && html.contains(&gated),
        "{html}"
    );
    assert!(
        html.contains("all sessions") && html.contains("<meter"),
        "{html}"
    );
    // Rejecting from the inbox form needs a note, and is recorded.
    let r = d
        .http
        .post(d.url(&format!("/console/sessions/{gated}/actions/reject")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("note", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = d
        .http
        .post(d.url(&format!("/console/sessions/{gated}/actions/reject")))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("note", "rename it to read_config"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        d.event_kinds(&gated)
            .await
            .contains(&"gate_rejected".to_owned())
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_diff_is_shown_on_request() {
    let repo = git_repo();
    let d = Daemon::start_with(
        vec![route(
            "diff-goal",
            vec![
                Turn::tool(
                    "write_file",
                    json!({"path": "notes.txt", "content": "step one <b>bold</b>\n"}),
                ),
                complete("wrote notes.txt"),
                complete("nothing else"),
            ],
        )],
        true,
    )
    .await;
    let id = d.spawn_in("two", "diff-goal", repo.path().to_str()).await;
    d.wait_state(&id, "completed").await;
    let (cookie, _) = d.http_login().await;
    let (s, html) = page(&d, &cookie, &format!("/console/sessions/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let link = format!("/console/sessions/{id}/steps/1/diff");
    assert!(html.contains(&link), "no diff link: {html}");
    let (s, html) = page(&d, &cookie, &link).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("notes.txt"), "{html}");
    assert!(
        html.contains("<span class=\"add\">+step one &lt;b&gt;bold&lt;/b&gt;</span>"),
        "{html}"
    );
    // The second step changed nothing.
    let (s, html) = page(&d, &cookie, &format!("/console/sessions/{id}/steps/2/diff")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("No file changed in this step."), "{html}");
    let (s, _) = page(&d, &cookie, &format!("/console/sessions/{id}/steps/9/diff")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    d.stop().await;
}

const TRIGGERS: &str = "\
version: 1
triggers:
  - id: nightly
    description: every night
    source:
      schedule: {cron: '30 2 * * *'}
    workflow: two
    goal: 'Nightly <b>run</b> {{ $.scheduled_at }}'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_show_counts_the_decision_log_and_the_load_error() {
    let d = Daemon::start_with_triggers(
        vec![route("Nightly", vec![complete("ok"), complete("ok")])],
        TRIGGERS,
    )
    .await;
    let rt = d.triggers.clone().unwrap();
    let decision = rt.fire("nightly", None, None).await.unwrap();
    let (cookie, _) = d.http_login().await;
    let (s, html) = page(&d, &cookie, "/console/triggers").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("/console/triggers/nightly") && html.contains("every night"),
        "{html}"
    );
    assert!(html.contains("schedule"), "{html}");
    assert!(html.contains(&decision.body.decision), "{html}");
    assert!(!html.contains("triggers.yml is invalid"), "{html}");
    let (s, html) = page(&d, &cookie, "/console/triggers/nightly").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("<strong>{}</strong>", decision.body.decision)),
        "{html}"
    );
    if let Some(session) = &decision.body.session_id {
        assert!(
            html.contains(&format!("/console/sessions/{session}")),
            "{html}"
        );
    }
    // An invalid edit: the page says where and why; the old triggers stay.
    std::fs::write(
        d.home_dir.join("triggers.yml"),
        "version: 1\ntriggers:\n  - id: broken\n    surprise: 1\n",
    )
    .unwrap();
    rt.reload();
    let (s, html) = page(&d, &cookie, "/console/triggers").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("triggers.yml is invalid"), "{html}");
    assert!(
        html.contains("triggers.yml:"),
        "the error names the file and line: {html}"
    );
    assert!(
        html.contains("/console/triggers/nightly"),
        "the running triggers stay: {html}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_list_the_catalog_with_graph_and_lint() {
    let d = Daemon::start(vec![]).await;
    std::fs::write(
        d.home_dir.join("workflows/bad.yaml"),
        "schemaVersion: 1\nid: bad\n",
    )
    .unwrap();
    let (cookie, _) = d.http_login().await;
    let (s, html) = page(&d, &cookie, "/console/workflows").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("/console/workflows/two") && html.contains("/console/workflows/gated"),
        "{html}"
    );
    assert!(
        html.contains("class=\"error\""),
        "the broken file is listed with its problem: {html}"
    );
    let (s, html) = page(&d, &cookie, "/console/workflows/gated").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("Lint") && html.contains("/console/workflows/gated/graph.svg"),
        "{html}"
    );
    let r = d
        .http
        .get(d.url("/console/workflows/gated/graph.svg"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().contains("<svg"));
    let (s, _) = page(&d, &cookie, "/console/workflows/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    d.stop().await;
}

const SKIPPING: &str = "\
schemaVersion: 1
id: skipping
name: Skipping
description: a step skipped by its condition
version: '1'
steps:
  - id: plan
    title: Plan
    prompt: 'Plan {{goal}}'
  - id: deploy
    title: Deploy
    runCondition: {var: ship, equals: yes}
    prompt: 'Deploy {{goal}}'
  - id: report
    title: Report
    prompt: 'Report {{goal}}'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_marks_done_skipped_and_current_steps() {
    let mut slow = vec![complete("planned")];
    for _ in 0..30 {
        slow.push(slow_shell(500));
    }
    let d = Daemon::start(vec![route("graph-goal", slow)]).await;
    std::fs::write(d.home_dir.join("workflows/skipping.yaml"), SKIPPING).unwrap();
    let id = d.spawn("skipping", "graph-goal").await;
    crate::harness::eventually(20, "the session to reach `report`", || async {
        (d.session(&id).await["current"]["step_id"] == "report").then_some(())
    })
    .await;
    let (cookie, _) = d.http_login().await;
    let r = d
        .http
        .get(d.url(&format!("/console/sessions/{id}/graph.svg")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(
        svg.contains("#step_plan rect{fill:#c8e6c9"),
        "plan is done: {svg}"
    );
    assert!(
        svg.contains("#step_deploy rect{fill:#eeeeee"),
        "deploy was skipped: {svg}"
    );
    assert!(
        svg.contains("#step_report rect{fill:#bbdefb"),
        "report is current: {svg}"
    );
    // The step list says the same in words.
    let (_, html) = page(&d, &cookie, &format!("/console/sessions/{id}")).await;
    assert!(
        html.contains("step <strong>deploy</strong> skipped by its condition"),
        "{html}"
    );
    d.sup.cancel(id.parse().unwrap(), None).await.unwrap();
    d.stop().await;
}
