//! Opening a store from a URL: both backends through the one factory, and precise errors
//! when the location cannot work (unreachable server, TLS refused, bad URL).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use worktrain_store::{StoreError, StoreOptions, StoreUrl, TlsMode, TlsOptions};

#[tokio::test]
async fn the_factory_opens_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = worktrain_store::open_url("sqlite://sub.db", dir.path(), &StoreOptions::default())
        .await
        .expect("sqlite");
    assert_eq!(sqlite.backend(), "sqlite");
    assert!(dir.path().join("sub.db").is_file(), "relative to the base");
    sqlite.close().await;
    if let Some(db) = worktrain_testkit::postgres::fresh_database().await {
        let pg = worktrain_store::open_url(&db.url, Path::new("/"), &StoreOptions::default())
            .await
            .expect("postgres");
        assert_eq!(pg.backend(), "postgres");
        assert_eq!(
            pg.schema_version().await.unwrap(),
            worktrain_store::postgres::SCHEMA_VERSION
        );
        pg.close().await;
    }
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    // Nothing listens on port 1.
    let url = StoreUrl::parse("postgres://wt:s3cret@127.0.0.1:1/worktrain").unwrap();
    let err = worktrain_store::open(
        &url,
        &StoreOptions {
            connect_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        },
    )
    .await
    .err()
    .expect("must fail");
    let shown = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(shown.contains("server running"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[tokio::test]
async fn tls_settings_are_checked_and_honoured() {
    let url = StoreUrl::parse("postgres://wt@127.0.0.1:1/worktrain").unwrap();
    let err = worktrain_store::open(
        &url,
        &StoreOptions {
            tls: TlsOptions {
                mode: Some(TlsMode::VerifyFull),
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsOptions::default()
            },
            ..StoreOptions::default()
        },
    )
    .await
    .err()
    .expect("must fail");
    assert!(
        matches!(&err, StoreError::InvalidUrl { reason, .. } if reason.contains("tls.ca_file")),
        "{err}"
    );
    // The test server speaks no TLS: requiring it fails to connect, saying so.
    if let Some(db) = worktrain_testkit::postgres::fresh_database().await {
        let err = worktrain_store::open(
            &StoreUrl::Postgres(db.url.replace("host=", "sslmode=require&host=")),
            &StoreOptions {
                tls: TlsOptions {
                    mode: Some(TlsMode::Require),
                    ..TlsOptions::default()
                },
                connect_timeout: Duration::from_secs(5),
                ..StoreOptions::default()
            },
        )
        .await
        .err()
        .expect("TLS required by a server without TLS");
        assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
    }
}

/// Closing an embedded store closes every connection it holds — the pool and its writer —
/// so SQLite checkpoints the WAL into the database and removes it, and later calls say the
/// store is closed instead of writing.
#[tokio::test]
async fn closing_an_embedded_store_checkpoints_and_closes_its_writer_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worktrain.db");
    let store = worktrain_store::open(&StoreUrl::Sqlite(path.clone()), &StoreOptions::default())
        .await
        .expect("open");
    let decision = worktrain_store::triggers::NewDecision {
        trigger_id: "t".into(),
        decision: "ignored".into(),
        reason: "a test".into(),
        event: None,
        delivery_id: None,
        source: None,
        session_id: None,
        detail: serde_json::json!({}),
    };
    store
        .record_decision(decision.clone())
        .await
        .expect("a write");
    let wal = dir.path().join("worktrain.db-wal");
    assert!(wal.exists(), "writes went to the WAL");
    store.close().await;
    assert!(
        !wal.exists(),
        "the last connection closed checkpoints and removes the WAL"
    );
    assert!(store.record_decision(decision).await.is_err(), "closed");
}
