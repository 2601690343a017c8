//! Fresh PostgreSQL databases for tests, on the server named by
//! `WORKTRAIN_TEST_POSTGRES_URL` (CI and the README start a throwaway cluster with
//! `.ci/postgres start`).
//!
//! Without that variable the tests that need PostgreSQL **fail**, saying how to start
//! one — unless `WORKTRAIN_TEST_POSTGRES=skip` says this machine has no PostgreSQL, in
//! which case they pass without running (and say so on stderr). CI never sets `skip`.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The variable naming the test server (any database on it; tests create their own).
pub const URL_ENV: &str = "WORKTRAIN_TEST_POSTGRES_URL";
/// Set to `skip` to skip PostgreSQL tests on a machine without PostgreSQL.
pub const SKIP_ENV: &str = "WORKTRAIN_TEST_POSTGRES";

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// URL of the new database (same server and credentials as the base URL).
    pub url: String,
    /// Its name.
    pub name: String,
}

/// The base URL of the test server, `None` when PostgreSQL tests are explicitly skipped.
///
/// # Panics
/// When neither the URL nor the skip switch is set: a PostgreSQL test must not pass
/// silently without PostgreSQL.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ if std::env::var(SKIP_ENV).is_ok_and(|v| v == "skip") => {
            eprintln!("{SKIP_ENV}=skip: PostgreSQL test skipped");
            None
        }
        _ => panic!(
            "this test needs PostgreSQL: run `eval \"$(.ci/postgres start)\"` in the repository \
             (needs Debian's `postgresql` package) to start a throwaway server and set {URL_ENV}, \
             or set {URL_ENV} to a server where the user may CREATE DATABASE; \
             {SKIP_ENV}=skip skips these tests on a machine without PostgreSQL"
        ),
    }
}

/// Replace the database name in a `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = url[scheme_end..]
        .find(['/', '?'])
        .map(|i| scheme_end + i)
        .unwrap_or(url.len());
    let query_start = url[path_start..]
        .find('?')
        .map(|i| path_start + i)
        .unwrap_or(url.len());
    format!("{}/{}{}", &url[..path_start], database, &url[query_start..])
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A short tag of this host, so that test processes of several hosts sharing one server
/// never mistake each other's databases for leftovers.
fn host_tag() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = name.trim().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:06x}", h & 0xff_ffff)
}

/// Drop the databases left by test processes of this host that are gone (once per
/// process), so that a long-lived local server does not fill the disk.
async fn sweep_leftovers(admin: &mut sqlx::PgConnection, host: &str) {
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let prefix = format!("wt_test_{host}_");
    let names: Vec<(String,)> =
        match sqlx::query_as("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(&prefix)
            .fetch_all(&mut *admin)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
    for (name,) in names {
        let pid = name[prefix.len()..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

/// Create a fresh, empty database on the test server (`None`: PostgreSQL tests are
/// skipped). Databases are named `wt_test_<host>_<pid>_<n>_<nanos>`; those of test
/// processes that have exited are dropped by the next test process on the same host.
///
/// # Panics
/// When the server cannot be reached or refuses to create the database.
pub async fn fresh_database() -> Option<TestDatabase> {
    let base = server_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let host = host_tag();
    let name = format!(
        "wt_test_{host}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server {URL_ENV}: {e}"));
    sweep_leftovers(&mut admin, &host).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0"
    )))
    .execute(&mut admin)
    .await
    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
    let _ = admin.close().await;
    Some(TestDatabase {
        url: with_database(&base, &name),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u@localhost/postgres?host=/tmp/x", "d1"),
            "postgres://u@localhost/d1?host=/tmp/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/db", "d2"),
            "postgres://u:p@h:5432/d2"
        );
        assert_eq!(with_database("postgres://h", "d3"), "postgres://h/d3");
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "d4"),
            "postgres://h/d4?sslmode=disable"
        );
    }
}
