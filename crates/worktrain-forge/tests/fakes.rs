//! The forge clients against the testkit's fake GitHub and GitLab servers, which answer
//! with the real shapes (recorded `@octokit/fixtures` pages replayed verbatim, rate-limit
//! and error bodies from recorded answers): pagination to the last page, ETags,
//! rate-limit classification, error classification, and the exact requests sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use worktrain_core::run::{ForgeKind, ItemKind};
use worktrain_forge::{Credentials, ForgeError, ListKind, ListQuery, Listing, connect};
use worktrain_testkit::forge::Fault;
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_testkit::forge::gitlab::FakeGitlab;

fn corpus(path: &str) -> Value {
    let p = format!(
        "{}/../../../shared/corpora/github-api/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn issue(n: u64, labels: &[&str], updated: &str) -> Value {
    json!({"number": n, "title": format!("Issue {n}"), "state": "open", "updated_at": updated,
           "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
           "assignees": [{"login": "bot"}], "html_url": format!("https://github.com/o/r/issues/{n}")})
}

fn q(repo: &str, labels: &[&str]) -> ListQuery {
    ListQuery {
        repo: repo.into(),
        kind: ListKind::Issues,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        assignee: None,
        query: None,
        per_page: 100,
    }
}

#[tokio::test]
async fn recorded_link_pagination_is_followed_to_the_last_page() {
    let fake = FakeGithub::start().await.unwrap();
    fake.replay_octokit_fixture(&corpus(
        "octokit-fixtures/paginate-issues.normalized-fixture.json",
    ));
    let gh = connect(
        ForgeKind::Github,
        Some(fake.base_url()),
        Credentials::Token("t0k".into()),
    )
    .unwrap();
    let mut query = q("octokit-fixture-org/paginate-issues", &[]);
    query.per_page = 3;
    let Listing::Items {
        items,
        pages,
        rate,
        etag,
    } = gh.list(&query, None).await.unwrap()
    else {
        panic!("not modified?")
    };
    assert_eq!(pages, 5, "five recorded pages");
    assert_eq!(items.len(), 13);
    assert_eq!(items[0].number, 13);
    assert_eq!(items[12].number, 1);
    assert_eq!(rate.remaining, Some(4999));
    assert_eq!(
        etag.as_deref(),
        Some("\"00000000000000000000000000000000\"")
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 5);
    assert_eq!(
        reqs[0].path,
        "/repos/octokit-fixture-org/paginate-issues/issues?state=open&per_page=3"
    );
    assert_eq!(reqs[1].path, "/repositories/1000/issues?per_page=3&page=2");
    assert_eq!(reqs[4].path, "/repositories/1000/issues?per_page=3&page=5");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer t0k"));
}

#[tokio::test]
async fn etags_rate_limits_and_errors() {
    let fake = FakeGithub::start().await.unwrap();
    let items: Vec<Value> = (1..=250)
        .map(|n| issue(n, &["worktrain"], "2024-01-01T00:00:00Z"))
        .collect();
    fake.set_items("o/r", items);
    let gh = connect(
        ForgeKind::Github,
        Some(fake.base_url()),
        Credentials::Token("t".into()),
    )
    .unwrap();
    let Listing::Items {
        items, pages, etag, ..
    } = gh.list(&q("o/r", &["worktrain"]), None).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((items.len(), pages), (250, 3));
    // Unchanged: the first page answers 304.
    let again = gh
        .list(&q("o/r", &["worktrain"]), etag.as_deref())
        .await
        .unwrap();
    assert!(matches!(again, Listing::NotModified { .. }), "{again:?}");
    assert_eq!(
        fake.requests().last().unwrap().header("if-none-match"),
        etag.as_deref()
    );
    // Changed: a full listing again.
    fake.update_item("o/r", 7, |v| {
        v["updated_at"] = json!("2024-02-01T00:00:00Z")
    });
    assert!(matches!(
        gh.list(&q("o/r", &["worktrain"]), etag.as_deref())
            .await
            .unwrap(),
        Listing::Items { .. }
    ));

    fake.fail_next(Fault::PrimaryRateLimit);
    let e = gh.list(&q("o/r", &[]), None).await.unwrap_err();
    let ForgeError::RateLimited {
        kind, retry_after, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*kind, "primary");
    assert!(
        *retry_after > Duration::from_secs(60) && *retry_after <= Duration::from_secs(121),
        "{retry_after:?}"
    );
    assert!(e.is_retryable());
    fake.fail_next(Fault::SecondaryRateLimit { retry_after: 60 });
    let e = gh.list(&q("o/r", &[]), None).await.unwrap_err();
    assert_eq!(
        e,
        ForgeError::RateLimited {
            kind: "secondary",
            retry_after: Duration::from_secs(60),
            message: "You have triggered an abuse detection mechanism. Please wait a few minutes before you try again.".into()
        }
    );
    fake.fail_next(Fault::TooManyRequests { retry_after: 5 });
    assert!(matches!(
        gh.list(&q("o/r", &[]), None).await.unwrap_err(),
        ForgeError::RateLimited { .. }
    ));
    fake.fail_next(Fault::ServerError(502));
    let e = gh.list(&q("o/r", &[]), None).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let e = gh
        .item("o/r", ItemKind::IssueOrPull, 9999)
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("404") && e.to_string().contains("cannot see it"),
        "{e}"
    );
    // Writes: exact requests.
    gh.comment("o/r", ItemKind::IssueOrPull, 7, "worktrain gave up")
        .await
        .unwrap();
    gh.add_labels("o/r", ItemKind::IssueOrPull, 7, &["needs-human".into()])
        .await
        .unwrap();
    let reqs = fake.requests();
    let c = &reqs[reqs.len() - 2];
    assert_eq!(
        (c.method.as_str(), c.path.as_str()),
        ("POST", "/repos/o/r/issues/7/comments")
    );
    assert_eq!(c.body, json!({"body": "worktrain gave up"}));
    let l = &reqs[reqs.len() - 1];
    assert_eq!(l.body, json!({"labels": ["needs-human"]}));
    let item = gh.item("o/r", ItemKind::IssueOrPull, 7).await.unwrap();
    assert!(item.labels.contains(&"needs-human".to_string()));
}

#[tokio::test]
async fn gitlab_lists_pages_and_looks_up_access_levels() {
    let fake = FakeGitlab::start().await.unwrap();
    let api = format!("{}/api/v4", fake.base_url());
    let items: Vec<Value> = (1..=120)
        .map(|n| json!({"iid": n, "title": format!("MR {n}"), "state": "opened", "updated_at": "2024-01-01T00:00:00Z",
                        "labels": ["worktrain"], "assignees": [{"username": "bot"}]}))
        .collect();
    fake.set_gitlab_items("group/proj", "merge_requests", items);
    fake.state().members.insert(("group/proj".into(), 42), 40);
    let gl = connect(
        ForgeKind::Gitlab,
        Some(&api),
        Credentials::Token("glpat".into()),
    )
    .unwrap();
    let mut query = q("group/proj", &["worktrain"]);
    query.kind = ListKind::MergeRequests;
    let Listing::Items { items, pages, .. } = gl.list(&query, None).await.unwrap() else {
        panic!()
    };
    assert_eq!((items.len(), pages), (120, 2));
    assert_eq!(items[0].kind, ItemKind::MergeRequest);
    let first = &fake.requests()[0];
    assert_eq!(
        first.path,
        "/api/v4/projects/group%2Fproj/merge_requests?state=opened&per_page=100&labels=worktrain"
    );
    assert_eq!(first.header("private-token"), Some("glpat"));
    assert_eq!(gl.access_level("group/proj", 42).await.unwrap(), Some(40));
    assert_eq!(gl.access_level("group/proj", 7).await.unwrap(), None);
    fake.fail_next(Fault::TooManyRequests { retry_after: 30 });
    let e = gl.list(&query, None).await.unwrap_err();
    assert!(
        matches!(e, ForgeError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(30)),
        "{e:?}"
    );
}
