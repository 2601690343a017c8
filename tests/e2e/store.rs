//! Choosing the store (`store.url`, `WORKTRAIN_DATABASE_URL`, `--database-url`), errors
//! when it cannot be used, and `admin migrate-store` from the embedded store into
//! PostgreSQL — all through the real binary.

use serde_json::Value;

use crate::admin::snapshot;
use crate::support::{Env, advance_token, exit, postgres_database, session_id};

/// A few sessions in every state the CLI can produce: complete, blocked, rewound.
fn populate(env: &Env) -> Vec<String> {
    let a = env.start("quick-task", "Migrate the ünicode config");
    let n = env.advance(&advance_token(&a), "planned 100%_done");
    env.advance(&advance_token(&n), "verified");
    let b = env.start("quick-task", "left half way");
    let blocked = env.run_json(&[
        "session",
        "advance",
        "--token",
        &advance_token(&b),
        "--notes",
        "",
    ]);
    assert_eq!(blocked.code, exit::BLOCKED, "{blocked:?}");
    let c = env.start("quick-task", "rewound");
    let n = env.advance(&advance_token(&c), "first");
    env.advance(&advance_token(&n), "second");
    env.ok_json(&["session", "rewind", &session_id(&c), "--to", "do-it"]);
    vec![session_id(&a), session_id(&b), session_id(&c)]
}

#[test]
fn migrate_store_copies_an_embedded_store_into_postgres() {
    let Some(db) = postgres_database() else {
        return;
    };
    let env = Env::initialised();
    let ids = populate(&env);
    let before = snapshot(&env);
    let pending = env.start("quick-task", "continued after the move");
    // Trace analysis goes along (real trajectories, their findings).
    let trajs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/agent-trajectories-dev/trajs"
    );
    env.ok_json(&["insights", "import", trajs]);
    let findings_before = env.ok_json(&["insights", "findings", "--limit", "1000"]);

    let report = env.ok_json(&["admin", "migrate-store", "--to", &db.url]);
    assert_eq!(report["insights"]["traces"], 60, "{report}");
    assert_eq!(report["sessions_copied"], 4, "{report}");
    assert_eq!(report["sessions_verified"], 4, "{report}");
    assert_eq!(report["sessions_skipped"], 0, "{report}");
    assert!(report["blobs_copied"].as_u64().unwrap() > 0, "{report}");

    // The same sessions, read from PostgreSQL, look exactly as they did.
    let pg = |args: &[&str]| -> Value {
        let mut full = vec!["--database-url", db.url.as_str()];
        full.extend_from_slice(args);
        env.ok_json(&full)
    };
    for id in &ids {
        let v = pg(&["session", "verify", id]);
        assert_eq!(v["valid"], true, "{v}");
    }
    assert_eq!(
        pg(&["insights", "findings", "--limit", "1000"]),
        findings_before
    );
    std::fs::write(
        env.home().join("config.yaml"),
        format!("store:\n  url: {}\n", db.url),
    )
    .unwrap();
    let mut after = snapshot(&env);
    after.retain(|(id, _, _)| *id != session_id(&pending));
    assert_eq!(before, after, "sessions differ after the copy");
    // Work continues on PostgreSQL with the tokens handed out before the move.
    let next = env.advance(&advance_token(&pending), "done on postgres");
    assert_eq!(next["session_id"], session_id(&pending));
    env.verify_ok(&session_id(&pending));

    // Copying again skips what is there (and still verifies it).
    std::fs::remove_file(env.home().join("config.yaml")).unwrap();
    let again = env.ok_json(&["admin", "migrate-store", "--to", &db.url]);
    assert_eq!(again["sessions_copied"], 0, "{again}");
    assert_eq!(again["sessions_skipped"], 4, "{again}");
    assert_eq!(again["sessions_verified"], 4, "{again}");
    assert_eq!(again["insights"]["traces"], 0, "{again}");
    // Copying a store onto itself is refused.
    let r = env.run_json(&[
        "--database-url",
        &db.url,
        "admin",
        "migrate-store",
        "--to",
        &db.url,
    ]);
    assert_eq!(r.code, exit::INVALID, "{r:?}");
}

#[test]
fn the_store_is_chosen_by_flag_then_environment_then_config() {
    let Some(db) = postgres_database() else {
        return;
    };
    let env = Env::initialised();
    let local = env.start("quick-task", "in sqlite");
    // config.yaml's store.url moves everything to PostgreSQL (schema created on first use).
    std::fs::write(
        env.home().join("config.yaml"),
        format!("store:\n  url: {}\n  max_connections: 3\n", db.url),
    )
    .unwrap();
    assert!(env.sessions(&[]).is_empty(), "a fresh PostgreSQL store");
    let remote = env.start("quick-task", "in postgres");
    let ids = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(env.sessions(&[])), vec![session_id(&remote)]);
    // WORKTRAIN_DATABASE_URL overrides config.yaml …
    let sqlite_url = format!("sqlite://{}", env.home().join("worktrain.db").display());
    let via_env = env
        .cmd(&["--json", "sessions"])
        .env("WORKTRAIN_DATABASE_URL", &sqlite_url)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&via_env.stdout).unwrap();
    assert_eq!(
        ids(v["sessions"].as_array().cloned().unwrap()),
        vec![session_id(&local)]
    );
    // … and --database-url overrides both.
    let via_flag = env
        .cmd(&["--json", "--database-url", &db.url, "sessions"])
        .env("WORKTRAIN_DATABASE_URL", &sqlite_url)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&via_flag.stdout).unwrap();
    assert_eq!(
        ids(v["sessions"].as_array().cloned().unwrap()),
        vec![session_id(&remote)]
    );
    // `init` against PostgreSQL reports the schema it created.
    let init = env.ok_json(&["--database-url", &db.url, "init"]);
    assert_eq!(init["schema_version"], 2, "{init}");
}

#[test]
fn an_unusable_store_fails_with_a_precise_error() {
    let env = Env::initialised();
    std::fs::write(
        env.home().join("config.yaml"),
        "store:\n  connect_timeout_secs: 1\n",
    )
    .unwrap();
    // Nothing listens on port 1; the password never shows.
    let r = env.run_json(&[
        "--database-url",
        "postgres://wt:hunter2@127.0.0.1:1/worktrain",
        "sessions",
    ]);
    assert_eq!(r.code, exit::FAILURE, "{r:?}");
    r.no_panic();
    let v = r.json();
    assert_eq!(v["error"]["code"], "store_failure", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot connect to postgres://wt:***@127.0.0.1:1/worktrain"),
        "{msg}"
    );
    assert!(msg.contains("server running"), "{msg}");
    assert!(
        !r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"),
        "{r:?}"
    );
    // A URL of an unknown kind names the accepted forms.
    let r = env.run_json(&["--database-url", "mysql://db/x", "sessions"]);
    assert_eq!(r.code, exit::INVALID, "{r:?}");
    assert!(r.stdout.contains("postgres://"), "{r:?}");
    // A bad TLS setting in config.yaml is named by its key.
    std::fs::write(
        env.home().join("config.yaml"),
        "store:\n  url: postgres://wt@127.0.0.1:1/worktrain\n  tls:\n    mode: verify-full\n    ca_file: missing-ca.pem\n",
    )
    .unwrap();
    let r = env.run_json(&["sessions"]);
    assert_eq!(r.code, exit::INVALID, "{r:?}");
    assert!(r.stdout.contains("tls.ca_file"), "{r:?}");
}

#[test]
fn a_postgres_store_newer_than_the_binary_is_refused() {
    let Some(db) = postgres_database() else {
        return;
    };
    let env = Env::initialised();
    env.ok_json(&["--database-url", &db.url, "init"]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (99, 'from the future', TRUE, '\\x00'::bytea, 0)",
            )
            .execute(&mut c)
            .await
            .unwrap();
        });
    let r = env.run_json(&["--database-url", &db.url, "sessions"]);
    assert_eq!(r.code, exit::FAILURE, "{r:?}");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("schema is at version 99"), "{msg}");
    assert!(msg.contains("upgrade worktrain"), "{msg}");
}
