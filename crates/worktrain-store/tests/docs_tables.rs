//! The table list in `docs/storage.md` is the schema's: every table the migrations create
//! on SQLite and on PostgreSQL is documented, and every documented table exists on both.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use sqlx::Connection;
use worktrain_store::{StoreOptions, StoreUrl};

const STORAGE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/storage.md"
));

/// The tables named in the first column of the `## Tables` table.
fn documented() -> BTreeSet<String> {
    let start = STORAGE
        .find("## Tables")
        .expect("docs/storage.md has a `## Tables` section");
    let section = &STORAGE[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[track_caller]
fn assert_documented(backend: &str, schema: &BTreeSet<String>) {
    let docs = documented();
    let missing: Vec<&String> = schema.difference(&docs).collect();
    let stale: Vec<&String> = docs.difference(schema).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/storage.md `## Tables` vs the {backend} schema: undocumented {missing:?}; \
         documented but absent {stale:?}"
    );
}

#[tokio::test]
async fn storage_md_lists_every_sqlite_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = worktrain_store::open(&StoreUrl::Sqlite(path.clone()), &StoreOptions::default())
        .await
        .unwrap();
    drop(store);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let schema: BTreeSet<String> = names.into_iter().map(|(n,)| n).collect();
    assert!(schema.contains("events"), "{schema:?}");
    assert_documented("SQLite", &schema);
}

#[tokio::test]
async fn storage_md_lists_every_postgres_table() {
    let Some(db) = worktrain_testkit::postgres::fresh_database().await else {
        return;
    };
    let store = worktrain_store::open(
        &StoreUrl::Postgres(db.url.clone()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    drop(store);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let schema: BTreeSet<String> = names.into_iter().map(|(n,)| n).collect();
    assert!(schema.contains("events"), "{schema:?}");
    assert_documented("PostgreSQL", &schema);
}
