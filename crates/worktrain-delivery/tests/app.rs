//! A GitHub App identity against the fake GitHub: the client signs an RS256 JWT with the
//! App's key (a test-only key pair), exchanges it at
//! `POST /app/installations/{id}/access_tokens` (the fake verifies signature, issuer and
//! lifetime) and uses the installation token for the API — the pull request, the report
//! back — and for HTTPS pushes (`x-access-token:<token>` to a smart-HTTP git server that
//! accepts only that token). A token about to expire is renewed before it is used.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::*;
use worktrain_core::run::{DeliverySettings, DeliveryTarget, ForgeKind, ItemKind};
use worktrain_delivery::{ForgeAccess, Outcome, RetryPolicy, deliver, git as dgit, push_token};
use worktrain_forge::{Credentials, Forge, ForgeError};
use worktrain_testkit::forge::github::FakeGithub;
use worktrain_testkit::forge::{FakeApp, FakeForgeHandle, test_app_key};
use worktrain_testkit::git_http::GitHttpServer;

const APP: u64 = 4242;
const INSTALLATION: u64 = 777;
const FIRST_TOKEN: &str = "ghs_fakeInstallationToken0001";

fn fast() -> RetryPolicy {
    RetryPolicy {
        tries: 1,
        backoff: Duration::from_millis(1),
        max_wait: Duration::from_millis(1),
    }
}

async fn github_app(ttl_secs: u64) -> FakeForgeHandle {
    let gh = FakeGithub::start().await.unwrap();
    gh.set_items(
        "acme/widgets",
        vec![
            json!({"number": 12, "state": "open", "title": "Empty config panics",
                    "labels": [], "assignees": [], "updated_at": "2026-01-01T00:00:00Z"}),
        ],
    );
    gh.require_app(FakeApp::with_test_key(APP, INSTALLATION, ttl_secs));
    gh
}

fn app_client(gh: &FakeForgeHandle, app_id: u64) -> Arc<dyn Forge> {
    worktrain_forge::connect(
        ForgeKind::Github,
        Some(gh.base_url()),
        Credentials::GithubApp {
            app_id,
            installation_id: INSTALLATION,
            private_key_pem: test_app_key::PRIVATE_PEM.to_owned(),
        },
    )
    .unwrap()
}

fn token_requests(gh: &FakeForgeHandle) -> usize {
    gh.requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path == format!("/app/installations/{INSTALLATION}/access_tokens")
        })
        .count()
}

#[tokio::test]
async fn an_app_identity_opens_the_pull_request_and_reports_back_with_its_installation_token() {
    let repo = Repo::new(&[]);
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let gh = github_app(3600).await;
    let access = ForgeAccess {
        client: app_client(&gh, APP),
        push_token: None,
    };
    let host = MemHost::new(&repo, Some(handoff()), Some(access));
    let settings = DeliverySettings {
        target: DeliveryTarget::PullRequest,
        report_back: true,
        commit_status: true,
        ..DeliverySettings::default()
    };
    let out = deliver(
        &repo.job(settings, Some("github:acme/widgets#12")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    assert_eq!(gh.pulls("acme/widgets").len(), 1);
    assert_eq!(gh.comments_on("acme/widgets", 12).len(), 1);

    let reqs = gh.requests();
    // First the exchange: a JWT the fake verified (RS256, iss = the App id, ≤ 10 min).
    let exchange = &reqs[0];
    assert_eq!(
        exchange.path,
        format!("/app/installations/{INSTALLATION}/access_tokens")
    );
    let jwt = exchange
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], APP);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 600, "{claims}");
    assert_eq!(gh.app_tokens().len(), 1, "one token for the whole delivery");
    // Then every API call with the installation token.
    assert!(reqs.len() > 3);
    for r in &reqs[1..] {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {FIRST_TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.path == "/repos/acme/widgets/pulls")
    );
}

#[tokio::test]
async fn an_app_identity_pushes_over_https_basic_auth_with_its_installation_token() {
    let repo = Repo::new(&[]);
    repo.edit("src/config.rs", "pub fn load() {}\n");
    git(&repo.wt, &["add", "-A"]);
    git(&repo.wt, &["commit", "-q", "-m", "work"]);
    let gh = github_app(3600).await;
    // The git server takes exactly the token the fake GitHub issues first.
    let server = GitHttpServer::start(repo._tmp.path().to_path_buf(), FIRST_TOKEN)
        .await
        .unwrap();
    git(
        &repo.ws,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("{}/remote.git", server.base_url()),
        ],
    );
    let access = ForgeAccess {
        client: app_client(&gh, APP),
        push_token: None,
    };
    // Without credentials the server refuses the push.
    let refused = dgit::push(&repo.ws, "origin", &repo.branch, None).await;
    assert_eq!(
        refused.unwrap_err().kind,
        worktrain_delivery::git::PushFailureKind::Auth
    );
    // The push stage's token for an App identity: the installation token.
    let token = push_token(&access).await.unwrap();
    assert_eq!(token.as_deref(), Some(FIRST_TOKEN));
    dgit::push(&repo.ws, "origin", &repo.branch, token.as_deref())
        .await
        .unwrap();
    let head = git(&repo.ws, &["rev-parse", &repo.branch]);
    assert_eq!(repo.remote_head().as_deref(), Some(head.as_str()));
    let receive: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/remote.git/git-receive-pack")
        .collect();
    assert_eq!(receive.len(), 1);
    assert!(receive[0].authorized);
    assert_eq!(receive[0].user.as_deref(), Some("x-access-token"));
    // A token identity keeps its configured token; no exchange.
    let plain = ForgeAccess {
        client: access.client.clone(),
        push_token: Some("ghp_configured".into()),
    };
    assert_eq!(
        push_token(&plain).await.unwrap().as_deref(),
        Some("ghp_configured")
    );
    assert_eq!(token_requests(&gh), 1);
}

#[tokio::test]
async fn an_installation_token_about_to_expire_is_renewed_before_it_is_used() {
    // Tokens live 31 s; octocrab renews one with less than 30 s left.
    let gh = github_app(31).await;
    let client = app_client(&gh, APP);
    client
        .item("acme/widgets", ItemKind::IssueOrPull, 12)
        .await
        .unwrap();
    client
        .item("acme/widgets", ItemKind::IssueOrPull, 12)
        .await
        .unwrap();
    assert_eq!(token_requests(&gh), 1, "a live token is reused");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    client
        .item("acme/widgets", ItemKind::IssueOrPull, 12)
        .await
        .unwrap();
    assert_eq!(token_requests(&gh), 2, "renewed");
    let last = gh.requests().pop().unwrap();
    assert_eq!(last.path, "/repos/acme/widgets/issues/12");
    assert_eq!(
        last.header("authorization"),
        Some("Bearer ghs_fakeInstallationToken0002")
    );
    let access = ForgeAccess {
        client,
        push_token: None,
    };
    assert_eq!(
        push_token(&access).await.unwrap().as_deref(),
        Some("ghs_fakeInstallationToken0002")
    );
    // The fake refuses tokens it did not issue, as GitHub does.
    let r = reqwest::Client::new()
        .get(format!("{}/repos/acme/widgets/issues/12", gh.base_url()))
        .header("authorization", "Bearer ghs_neverIssued")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_jwt_github_does_not_accept_is_a_final_401_not_a_network_failure() {
    let gh = github_app(3600).await;
    let wrong_app = app_client(&gh, 9999);
    let err = wrong_app
        .item("acme/widgets", ItemKind::IssueOrPull, 12)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ForgeError::Http { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(gh.app_tokens().is_empty());
}
