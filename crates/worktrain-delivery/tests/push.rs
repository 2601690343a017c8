//! The push stage with the user's own git setup, over real transports: smart HTTP to a
//! `git http-backend` that demands an access token as Basic credentials (the token comes
//! from the user's git credential helper), and SSH through the `core.sshCommand` of the
//! user's git configuration. The token never shows in the recorded events, the logs or
//! the remote URL git stores; a push without credentials is a recorded final failure,
//! and git never prompts.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::{Arc, Mutex};

use support::{MemHost, Repo, failure, git, handoff};
use worktrain_core::run::{DeliverySettings, DeliveryStage, DeliveryTarget, ForgeKind};
use worktrain_delivery::{ForgeAccess, Outcome, RetryPolicy, deliver};
use worktrain_testkit::git_http::{GitHttpServer, TestCa};

const TOKEN: &str = "ghs_pushT0kenThatMustNeverBeSeen1234";

fn fast() -> RetryPolicy {
    RetryPolicy {
        tries: 1,
        backoff: std::time::Duration::from_millis(1),
        max_wait: std::time::Duration::from_millis(1),
    }
}

/// A forge identity whose API is never called here (commit_only); its token must not
/// reach a remote that is not the source item's HTTPS URL.
fn identity(push_token: Option<&str>) -> ForgeAccess {
    ForgeAccess {
        client: worktrain_forge::connect(
            ForgeKind::Github,
            Some("http://127.0.0.1:9"),
            worktrain_forge::Credentials::Token(TOKEN.into()),
        )
        .unwrap(),
        push_token: push_token.map(str::to_owned),
    }
}

fn pushed_settings() -> DeliverySettings {
    DeliverySettings {
        target: DeliveryTarget::CommitOnly,
        remote: Some("origin".into()),
        ..DeliverySettings::default()
    }
}

/// Everything tracing prints while `f` runs (this thread's subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The workspace's `origin` is the smart-HTTP server.
fn http_origin(repo: &Repo, server: &GitHttpServer) {
    git(
        &repo.ws,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("{}/remote.git", server.base_url()),
        ],
    );
}

#[tokio::test]
async fn pushes_over_smart_http_with_a_token_from_the_users_credential_helper() {
    let repo = Repo::new(&[]);
    let server = GitHttpServer::start(repo._tmp.path().to_path_buf(), TOKEN)
        .await
        .unwrap();
    http_origin(&repo, &server);
    // The user's git setup: a credential helper that knows the token for that host.
    let store = repo._tmp.path().join("git-credentials");
    std::fs::write(
        &store,
        format!(
            "{}\n",
            server
                .base_url()
                .replace("http://", &format!("http://x-access-token:{TOKEN}@"))
        ),
    )
    .unwrap();
    git(
        &repo.ws,
        &[
            "config",
            "credential.helper",
            &format!("store --file={}", store.display()),
        ],
    );
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let host = MemHost::new(&repo, Some(handoff()), Some(identity(None)));
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let out = deliver(
        &repo.job(pushed_settings(), Some("github:acme/widgets#12")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");

    // Pushed over HTTP, authenticated with the token as the Basic password (git asks
    // without credentials first, gets 401, then asks its helper).
    let head = git(&repo.ws, &["rev-parse", &repo.branch]);
    assert_eq!(repo.remote_head().as_deref(), Some(head.as_str()));
    let requests = server.requests();
    let receive: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/remote.git/git-receive-pack")
        .collect();
    assert_eq!(receive.len(), 1, "{requests:#?}");
    assert!(receive[0].authorized);
    assert_eq!(receive[0].user.as_deref(), Some("x-access-token"));

    // The token is nowhere: not in the events, the logs, or the remote URL git keeps.
    let events = format!("{:?}", host.state.lock().unwrap().events);
    assert!(events.contains("pushed"), "{events}");
    assert!(!events.contains(TOKEN));
    let logs = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("delivery stage done"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token reached the logs");
    let config = std::fs::read_to_string(repo.ws.join(".git/config")).unwrap();
    assert!(!config.contains(TOKEN), "{config}");
    assert_eq!(
        git(&repo.ws, &["remote", "get-url", "origin"]),
        format!("{}/remote.git", server.base_url())
    );
}

#[tokio::test]
async fn a_push_the_server_refuses_for_want_of_credentials_is_a_recorded_final_failure() {
    let repo = Repo::new(&[]);
    let server = GitHttpServer::start(repo._tmp.path().to_path_buf(), TOKEN)
        .await
        .unwrap();
    http_origin(&repo, &server);
    repo.edit("src/config.rs", "pub fn load() {}\n");
    // No credential helper, and the remote is not the source item's HTTPS URL (no
    // identity token goes there): git is asked for credentials, has none, must not
    // prompt.
    let host = MemHost::new(&repo, Some(handoff()), Some(identity(Some(TOKEN))));
    let out = deliver(
        &repo.job(pushed_settings(), Some("github:acme/widgets#12")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    let Outcome::Failed(d) = out else {
        panic!("{out:?}")
    };
    let f = d.failure.unwrap();
    assert_eq!(f.stage, DeliveryStage::Push);
    assert!(!f.retryable, "{f:?}");
    assert!(
        f.message.contains("could not read Username"),
        "git's own words: {}",
        f.message
    );
    assert!(
        f.hint.as_deref().unwrap().contains("credentials"),
        "{:?}",
        f.hint
    );
    assert_eq!(repo.remote_head(), None, "nothing pushed");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.authorized && r.user.is_none()),
        "the identity's token went to a remote that is not the item's: {:#?}",
        server.requests()
    );
    // The work is kept: committed on the branch, the worktree still there.
    assert!(repo.wt.exists());
    assert_ne!(
        git(&repo.ws, &["rev-parse", &repo.branch]),
        git(&repo.ws, &["rev-parse", "main"])
    );
}

/// HTTPS for real, to a remote whose certificate comes from a private certificate
/// authority that git was not told to trust (the daemon's own environment decides what
/// git trusts; the positive case, with `GIT_SSL_CAINFO` given to the daemon, is
/// `tests/e2e/delivery_e2e.rs::a_forge_on_a_private_certificate_authority_gets_the_push_over_https`).
/// The push fails on the certificate, final, with a hint that names the settings and never
/// suggests turning verification off; no request reaches the server.
#[tokio::test]
async fn a_push_to_an_untrusted_https_remote_fails_on_its_certificate() {
    let repo = Repo::new(&[]);
    let ca = TestCa::generate(repo._tmp.path()).unwrap();
    let server = GitHttpServer::start_tls(
        repo._tmp.path().to_path_buf(),
        TOKEN,
        &ca.cert_pem,
        &ca.key_pem,
    )
    .await
    .unwrap();
    assert!(server.base_url().starts_with("https://"));
    http_origin(&repo, &server);
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let host = MemHost::new(&repo, Some(handoff()), Some(identity(None)));
    let out = deliver(
        &repo.job(pushed_settings(), Some("github:acme/widgets#12")),
        host.as_ref(),
        fast(),
    )
    .await
    .unwrap();
    let f = failure(out);
    assert_eq!(f.stage, DeliveryStage::Push);
    assert!(
        f.message.contains("certificate"),
        "git's words: {}",
        f.message
    );
    assert!(!f.retryable, "retrying cannot fix trust: {f:?}");
    let hint = f.hint.unwrap_or_default();
    assert!(
        hint.contains("http.sslCAInfo") && hint.contains("GIT_SSL_CAINFO"),
        "{hint}"
    );
    assert!(!hint.contains("sslVerify"), "{hint}");
    assert_eq!(repo.remote_head(), None, "nothing pushed");
    assert!(server.requests().is_empty(), "{:#?}", server.requests());
    // The work is kept on its branch.
    assert_ne!(
        git(&repo.ws, &["rev-parse", &repo.branch]),
        git(&repo.ws, &["rev-parse", "main"])
    );
}

#[tokio::test]
async fn pushes_over_ssh_with_the_users_core_sshcommand() {
    let repo = Repo::new(&[]);
    // The user's SSH setup: `core.sshCommand` in their git configuration. This one
    // logs how it was called and runs the remote command locally, as sshd would.
    let dir = repo._tmp.path();
    let script = dir.join("fake-ssh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/ssh-calls\"\nfor a; do last=$a; done\nexec sh -c \"$last\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(
        &repo.ws,
        &["config", "core.sshCommand", script.to_str().unwrap()],
    );
    let ssh_url = format!("git@forge.invalid:{}", repo.remote.display());
    git(&repo.ws, &["remote", "set-url", "origin", &ssh_url]);
    repo.edit("src/config.rs", "pub fn load() {}\n");
    let host = MemHost::new(&repo, Some(handoff()), None);
    let out = deliver(&repo.job(pushed_settings(), None), host.as_ref(), fast())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
    let head = git(&repo.ws, &["rev-parse", &repo.branch]);
    assert_eq!(repo.remote_head().as_deref(), Some(head.as_str()));
    let calls = std::fs::read_to_string(dir.join("ssh-calls")).unwrap();
    assert!(
        calls.contains("git@forge.invalid")
            && calls.contains(&format!("git-receive-pack '{}'", repo.remote.display())),
        "{calls}"
    );
}
