//! Insights in the console: a session's findings with evidence that jumps to the call in
//! its waterfall, the detector quality table, and proposals (list, show with the patch
//! as a diff, dismiss with CSRF).

use reqwest::StatusCode;
use serde_json::json;
use worktrain_insights::detect::Thresholds;
use worktrain_insights::service::Insights;
use worktrain_testkit::Turn;

use crate::harness::{Daemon, complete, page, route};

fn attr_after<'a>(html: &'a str, from: usize, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let i = from + html[from..].find(&key)? + key.len();
    Some(&html[i..i + html[i..].find('"')?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_detector_quality_and_proposals() {
    let same = || Turn::tool("shell", json!({"command": "ls"}));
    let d = Daemon::start(vec![
        route(
            "repeat-ok",
            vec![
                same(),
                same(),
                same(),
                complete("planned"),
                complete("built"),
            ],
        ),
        route(
            "repeat-bad",
            vec![
                same(),
                same(),
                same(),
                Turn::Error {
                    status: 400,
                    retry_after: None,
                    message: Some("model refused".into()),
                },
            ],
        ),
    ])
    .await;
    let ok = d.spawn("two", "repeat-ok").await;
    let bad = d.spawn("two", "repeat-bad").await;
    d.wait_state(&ok, "completed").await;
    d.wait_state(&bad, "failed").await;
    // Analyse as `worktrain insights sync` and `worktrain proposals` do.
    let events = d.sup.engine().store();
    let ins = Insights::new(events.insights().expect("insights"), Thresholds::default());
    ins.sync_sessions(events.as_ref(), 10_000).await.unwrap();
    ins.refresh_proposals(2, &|_| None).await.unwrap();

    let (cookie, csrf) = d.http_login().await;
    // The session's findings; evidence links to a row of its waterfall.
    let (s, html) = page(&d, &cookie, &format!("/console/sessions/{ok}")).await;
    assert_eq!(s, StatusCode::OK);
    let f = html
        .find("data-detector=\"repeated_call\"")
        .unwrap_or_else(|| panic!("no repeated_call finding: {html}"));
    let target = attr_after(&html, f, "href").expect("evidence link");
    assert!(target.starts_with("#seq-"), "{target}");
    let row = format!("id=\"{}\"", &target[1..]);
    let r = html
        .find(&row)
        .unwrap_or_else(|| panic!("no waterfall row {row}"));
    let tr = &html[html[..r].rfind("<tr").unwrap()..r + html[r..].find("</tr>").unwrap()];
    assert!(tr.contains("shell"), "the evidence is the shell call: {tr}");

    // The detector quality table: the pattern fired in one succeeded and one failed run.
    let (s, html) = page(&d, &cookie, "/console/insights").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let i = html
        .find("<tr data-detector=\"repeated_call\"")
        .expect("detector row");
    assert_eq!(attr_after(&html, i, "data-fired-pass"), Some("1"));
    assert_eq!(attr_after(&html, i, "data-fired-fail"), Some("1"));

    // Proposals: listed, shown with the patch as a diff, dismissed from the page.
    let (s, html) = page(&d, &cookie, "/console/proposals").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let i = html.find("data-proposal=\"").expect("a proposal");
    let id = attr_after(&html, i - 1, "data-proposal")
        .unwrap()
        .to_owned();
    let (s, html) = page(&d, &cookie, &format!("/console/proposals/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("<pre class=\"diff\">"), "{html}");
    assert!(html.contains("\n+"), "the diff adds a line: {html}");
    assert!(
        html.contains(&format!("/console/sessions/{bad}")),
        "evidence links the sessions"
    );
    let url = d.url(&format!("/console/proposals/{id}/dismiss"));
    let r = d
        .http
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("reason", "not this one")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "no CSRF token, no dismiss"
    );
    let r = d
        .http
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("reason", "not this one")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&d, &cookie, &format!("/console/proposals/{id}")).await;
    assert!(html.contains("data-status=\"dismissed\""), "{html}");
    assert!(
        html.contains("not this one"),
        "the reason is in the history"
    );
    let (_, html) = page(&d, &cookie, "/console/proposals").await;
    assert!(!html.contains(&id), "no longer open");
    d.stop().await;
}
