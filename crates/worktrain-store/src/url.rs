//! Store locations: `sqlite://PATH` or `postgres://…`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// Where a store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://user:password@host:port/database?…`, also with a
    /// Unix socket directory as `?host=/run/postgresql`).
    Postgres(String),
}

impl StoreUrl {
    /// Parse a store URL.
    ///
    /// * `sqlite://worktrain.db`, `sqlite:worktrain.db`: a file (relative paths are
    ///   resolved by [`StoreUrl::relative_to`]); `sqlite:///var/lib/wt.db`: absolute.
    /// * `postgres://…` or `postgresql://…`: handed to the PostgreSQL driver as is
    ///   (`sslmode`, `host`, `application_name`, … are honoured).
    ///
    /// ```
    /// use std::path::{Path, PathBuf};
    ///
    /// use worktrain_store::StoreUrl;
    ///
    /// // A relative SQLite path lives in the worktrain home.
    /// let url = StoreUrl::parse("sqlite://worktrain.db")?.relative_to(Path::new("/srv/worktrain"));
    /// assert!(url == StoreUrl::Sqlite(PathBuf::from("/srv/worktrain/worktrain.db")));
    /// assert_eq!(url.backend(), "sqlite");
    ///
    /// // A PostgreSQL URL is kept as is; its password never reaches logs.
    /// let pg = StoreUrl::parse("postgres://wt:s3cret@db.internal/worktrain")?;
    /// assert_eq!(pg.backend(), "postgres");
    /// assert!(pg.has_password());
    /// assert!(!pg.redacted().contains("s3cret"));
    ///
    /// // Anything else is refused with what to write instead.
    /// let err = StoreUrl::parse("mysql://localhost/worktrain").unwrap_err();
    /// assert!(err.to_string().contains("sqlite://"), "{err}");
    /// # Ok::<(), worktrain_store::StoreError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: redact(text),
            reason: reason.to_owned(),
        };
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(invalid(
                    "no database file: write sqlite://worktrain.db or sqlite:///absolute/path.db",
                ));
            }
            if path.contains('?') {
                return Err(invalid(
                    "query parameters are not supported on sqlite URLs (the store sets WAL and synchronous=FULL itself)",
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        Err(invalid(
            "expected sqlite://PATH or postgres://USER@HOST/DATABASE",
        ))
    }

    /// Resolve a relative SQLite path against `base` (the worktrain home).
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            Self::Sqlite(p) if p.is_relative() => Self::Sqlite(base.join(p)),
            other => other,
        }
    }

    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Whether the URL itself carries a password (in the user info or a `password`
    /// parameter).
    pub fn has_password(&self) -> bool {
        match self {
            Self::Sqlite(_) => false,
            Self::Postgres(u) => redact(u) != *u,
        }
    }

    /// The URL with any password replaced by `***` (safe to log and show).
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => redact(u),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

/// Replace the password of `scheme://user:password@host…` (and a `password=` query
/// parameter) with `***`.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest_end = out[auth_start..]
            .find(['/', '?'])
            .map(|i| auth_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[auth_start..rest_end].rfind('@') {
            let userinfo = &out[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = auth_start + colon + 1;
                let end = auth_start + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends() {
        assert_eq!(
            StoreUrl::parse("sqlite://worktrain.db").unwrap(),
            StoreUrl::Sqlite("worktrain.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/wt.db").unwrap(),
            StoreUrl::Sqlite("/var/lib/wt.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:data/wt.db")
                .unwrap()
                .relative_to(Path::new("/h")),
            StoreUrl::Sqlite("/h/data/wt.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///abs.db")
                .unwrap()
                .relative_to(Path::new("/h")),
            StoreUrl::Sqlite("/abs.db".into())
        );
        let pg = StoreUrl::parse("postgresql://wt:s3cret@db:5432/wt?sslmode=require").unwrap();
        assert_eq!(pg.backend(), "postgres");
        assert_eq!(
            pg.redacted(),
            "postgresql://wt:***@db:5432/wt?sslmode=require"
        );
        assert!(!format!("{pg:?} {pg}").contains("s3cret"));
        assert!(pg.has_password());
        assert!(
            !StoreUrl::parse("postgres://wt@db/wt")
                .unwrap()
                .has_password()
        );
    }

    #[test]
    fn rejects_what_cannot_work() {
        for bad in [
            "mysql://x",
            "worktrain.db",
            "sqlite://",
            "sqlite://a.db?mode=ro",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(matches!(e, StoreError::InvalidUrl { .. }), "{bad}: {e}");
        }
        let e = StoreUrl::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw@"), "{e}");
        assert!(e.contains("postgres://"), "{e}");
    }

    #[test]
    fn redacts_query_passwords() {
        assert_eq!(
            redact("postgres://h/db?user=a&password=x&sslmode=disable"),
            "postgres://h/db?user=a&password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
