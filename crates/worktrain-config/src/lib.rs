//! `$WORKTRAIN_HOME` (default `~/.worktrain`): configuration, the embedded database, the
//! keyring and the API token. Secret files are created with mode 0600 and replaced
//! atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use worktrain_agent::AgentProfile;
use worktrain_core::context::Limits;
use worktrain_core::token::Keyring;
pub use worktrain_engine::worktrees::WorktreeSettings;
use worktrain_store::{Store, StoreError, StoreOptions, StoreUrl, TlsMode, TlsOptions};

/// Environment variable naming the home directory.
pub const HOME_ENV: &str = "WORKTRAIN_HOME";

/// Files inside the home directory.
pub const CONFIG_FILE: &str = "config.yaml";
/// Embedded database file.
pub const DATABASE_FILE: &str = "worktrain.db";
/// Signing keys (0600).
pub const KEYRING_FILE: &str = "keyring.json";
/// Bearer token for the HTTP API (0600).
pub const API_TOKEN_FILE: &str = "api-token";
/// Triggers (webhooks, polls, schedules), hot-reloaded by the daemon.
pub const TRIGGERS_FILE: &str = "triggers.yml";
/// User workflows directory.
pub const WORKFLOWS_DIR: &str = "workflows";

/// Contents of `config.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the event store lives and how it is opened (the `store:` section).
    pub store: StoreConfig,
    /// Size limits on agent submissions.
    pub limits: Limits,
    /// `worktrain daemon` settings.
    pub daemon: DaemonSettings,
    /// Agent profiles by name (`kind: llm` or `kind: command`), validated with the file.
    pub agents: std::collections::BTreeMap<String, AgentProfile>,
}

/// `worktrain daemon` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Address to serve on. Non-loopback addresses need the API token (always present
    /// after `init`) and `allow_remote: true`.
    pub bind: String,
    /// Explicit consent to listen on a non-loopback address.
    pub allow_remote: bool,
    /// Sessions running at once, across everything.
    pub max_concurrent_sessions: usize,
    /// Sessions running at once in one workspace (0 = no cap).
    pub max_per_workspace: usize,
    /// Caps per trigger id.
    pub max_per_trigger: std::collections::BTreeMap<String, usize>,
    /// Agent profile used when a dispatch names none.
    pub default_agent: String,
    /// Worker lease, in seconds; heartbeats renew it at a third of that.
    pub lease_secs: u64,
    /// Interruptions (restarts, lost leases) after which a run fails instead of resuming.
    pub max_interruptions: u32,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// Request timeout for ordinary API calls, in seconds (long-polls have their own).
    pub request_timeout_secs: u64,
    /// How sessions get their git worktrees: remote, base branch, retention, snapshot sharing.
    pub worktrees: WorktreeSettings,
    /// The triggers file, relative to the home directory unless absolute (hot-reloaded).
    pub triggers_file: std::path::PathBuf,
    /// Largest webhook body, in bytes (GitHub sends up to 25 MB).
    pub webhook_body_limit_bytes: usize,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:7878".into(),
            allow_remote: false,
            max_concurrent_sessions: 4,
            max_per_workspace: 0,
            max_per_trigger: std::collections::BTreeMap::new(),
            default_agent: "default".into(),
            lease_secs: 30,
            max_interruptions: 3,
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            worktrees: WorktreeSettings::default(),
            triggers_file: std::path::PathBuf::from(TRIGGERS_FILE),
            webhook_body_limit_bytes: 25 * 1024 * 1024,
        }
    }
}

/// The `store:` section of `config.yaml`: where the event store lives and how it is opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the store lives: `sqlite://PATH` (relative to the home directory unless
    /// absolute) or `postgres://USER@HOST:PORT/DATABASE`. When absent, `sqlite_path`.
    /// `--database-url` and `WORKTRAIN_DATABASE_URL` override it.
    pub url: Option<String>,
    /// SQLite database file when no URL is set, relative to the home directory unless
    /// absolute.
    pub sqlite_path: PathBuf,
    /// Connection pool size (default: 4 for SQLite, 10 for PostgreSQL).
    pub max_connections: Option<u32>,
    /// How long to wait for the database server, in seconds.
    pub connect_timeout_secs: u64,
    /// TLS to a PostgreSQL server.
    pub tls: StoreTlsConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            sqlite_path: PathBuf::from(DATABASE_FILE),
            max_connections: None,
            connect_timeout_secs: 10,
            tls: StoreTlsConfig::default(),
        }
    }
}

/// TLS to a PostgreSQL server (`store.tls`). Paths are relative to the home directory
/// unless absolute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreTlsConfig {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (default: the URL's
    /// `sslmode`, else `prefer`).
    pub mode: Option<TlsMode>,
    /// CA certificate(s) to trust (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub client_key: Option<PathBuf>,
}

const DEFAULT_CONFIG: &str = "\
# worktrain configuration. Every key is optional; the values shown are the defaults.
store:
  # SQLite database, relative to this directory unless absolute. To share one store
  # between several daemons, use PostgreSQL instead (docs/storage.md):
  #   url: postgres://worktrain@db.internal/worktrain
  sqlite_path: worktrain.db
limits:
  notes_bytes: 65536            # largest notes per submission
  context_bytes: 262144         # largest session context (serialized JSON)
  artifact_bytes: 1048576       # largest single artifact
  artifacts_per_submission: 16
  blob_bytes: 8388608           # largest stored blob
daemon:
  bind: 127.0.0.1:7878          # loopback only unless allow_remote: true
  max_concurrent_sessions: 4
  max_per_workspace: 0          # 0 = no per-workspace cap
  lease_secs: 30
  max_interruptions: 3          # then a run fails instead of resuming
  worktrees:
    enabled: true
    remote: origin
    base_branch: main
    keep_failed_hours: 72
# Agent profiles: `worktrain spawn --agent NAME` (default: `default`).
agents:
  default:
    kind: llm
    llm:
      provider: anthropic       # or openai (any OpenAI-compatible server via base_url)
      model: claude-sonnet-4-5
      api_key: {env: ANTHROPIC_API_KEY}
";

/// Problems with the home directory.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No home directory could be determined.
    #[error("cannot determine the worktrain home: set {HOME_ENV} or HOME")]
    NoHome,
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// `config.yaml` is invalid.
    #[error("{path}:{line}:{column}: {message}")]
    Config {
        /// Path of the `config.yaml` file.
        path: PathBuf,
        /// Line (1-based; 0 when unknown).
        line: usize,
        /// Column (1-based; 0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The keyring is unreadable.
    #[error("{path}: invalid keyring: {message}")]
    Keyring {
        /// Path of the keyring file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The home has not been initialised.
    #[error("{path} is not initialised: run `worktrain init`")]
    NotInitialised {
        /// The home directory that lacks its files.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `init` did to each file.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The home directory.
    pub home: PathBuf,
    /// Files and directories created by this run.
    pub created: Vec<PathBuf>,
    /// Files and directories that already existed and were left unchanged.
    pub unchanged: Vec<PathBuf>,
}

impl InitReport {
    /// True when nothing was created.
    pub fn nothing_changed(&self) -> bool {
        self.created.is_empty()
    }
}

/// A located home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$WORKTRAIN_HOME`, or `~/.worktrain`.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Self, HomeError> {
        if let Some(p) = explicit {
            return Ok(Self { root: p });
        }
        if let Some(p) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self {
                root: PathBuf::from(p),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(HomeError::NoHome)?;
        Ok(Self {
            root: PathBuf::from(home).join(".worktrain"),
        })
    }

    /// The home directory itself (`WORKTRAIN_HOME`, else `~/.worktrain`); the other paths are
    /// inside it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether `init` has run (the keyring exists).
    pub fn is_initialised(&self) -> bool {
        self.path(KEYRING_FILE).is_file()
    }

    /// Create whatever is missing; never touch what exists. The database is created by
    /// the store when first opened (the caller does that after `init`).
    pub fn init(&self) -> Result<InitReport, HomeError> {
        let mut report = InitReport {
            home: self.root.clone(),
            created: Vec::new(),
            unchanged: Vec::new(),
        };
        for dir in [self.root.clone(), self.path(WORKFLOWS_DIR)] {
            if dir.is_dir() {
                report.unchanged.push(dir);
            } else {
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                report.created.push(dir);
            }
        }
        let config = self.path(CONFIG_FILE);
        if config.exists() {
            report.unchanged.push(config);
        } else {
            // 0600: agent profiles may hold inline API keys.
            write_new(&config, DEFAULT_CONFIG.as_bytes(), 0o600)?;
            report.created.push(config);
        }
        let keyring = self.path(KEYRING_FILE);
        if keyring.exists() {
            report.unchanged.push(keyring);
        } else {
            let ring = Keyring::new(random_bytes()?, now_rfc3339());
            let json = serde_json::to_vec_pretty(&ring).map_err(|e| HomeError::Keyring {
                path: keyring.clone(),
                message: e.to_string(),
            })?;
            write_new(&keyring, &json, 0o600)?;
            report.created.push(keyring);
        }
        let token = self.path(API_TOKEN_FILE);
        if token.exists() {
            report.unchanged.push(token);
        } else {
            let secret = random_bytes()?;
            let text = format!("wtk_{}\n", hex::encode(secret));
            write_new(&token, text.as_bytes(), 0o600)?;
            report.created.push(token);
        }
        Ok(report)
    }

    /// Read `config.yaml` (defaults when absent).
    pub fn config(&self) -> Result<Config, HomeError> {
        let path = self.path(CONFIG_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        parse_config(&path, &text)
    }

    /// The SQLite database path from the configuration (`store.sqlite_path`).
    pub fn database_path(&self, config: &Config) -> PathBuf {
        self.resolve(&config.store.sqlite_path)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// Where the store lives: `url_override` (`--database-url` /
    /// `WORKTRAIN_DATABASE_URL`), else `store.url`, else `store.sqlite_path`.
    pub fn store_url(
        &self,
        config: &Config,
        url_override: Option<&str>,
    ) -> Result<StoreUrl, StoreError> {
        let url = match url_override
            .filter(|u| !u.trim().is_empty())
            .or(config.store.url.as_deref())
        {
            Some(u) => StoreUrl::parse(u)?,
            None => StoreUrl::Sqlite(config.store.sqlite_path.clone()),
        };
        Ok(url.relative_to(&self.root))
    }

    /// How to open the store, from the configuration.
    pub fn store_options(&self, config: &Config) -> StoreOptions {
        let tls = &config.store.tls;
        StoreOptions {
            blob_limit: config.limits.blob_bytes,
            max_connections: config.store.max_connections,
            connect_timeout: std::time::Duration::from_secs(
                config.store.connect_timeout_secs.max(1),
            ),
            tls: TlsOptions {
                mode: tls.mode,
                ca_file: tls.ca_file.as_deref().map(|p| self.resolve(p)),
                client_cert: tls.client_cert.as_deref().map(|p| self.resolve(p)),
                client_key: tls.client_key.as_deref().map(|p| self.resolve(p)),
            },
        }
    }

    /// Open the configured store (see [`Home::store_url`]), creating and migrating it as
    /// needed.
    pub async fn open_store(
        &self,
        config: &Config,
        url_override: Option<&str>,
    ) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        let url = self.store_url(config, url_override)?;
        worktrain_store::open(&url, &self.store_options(config)).await
    }

    /// Read the keyring.
    pub fn keyring(&self) -> Result<Keyring, HomeError> {
        let path = self.path(KEYRING_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NotInitialised {
                    path: self.root.clone(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| HomeError::Keyring {
            path,
            message: e.to_string(),
        })
    }

    /// Rotate the signing key; returns the new keyring.
    pub fn rotate_keys(&self) -> Result<Keyring, HomeError> {
        let mut ring = self.keyring()?;
        ring.rotate(random_bytes()?, now_rfc3339());
        self.save_keyring(&ring)?;
        Ok(ring)
    }

    /// Stop accepting the previous key.
    pub fn drop_previous_key(&self) -> Result<Keyring, HomeError> {
        let mut ring = self.keyring()?;
        ring.drop_previous();
        self.save_keyring(&ring)?;
        Ok(ring)
    }

    fn save_keyring(&self, ring: &Keyring) -> Result<(), HomeError> {
        let path = self.path(KEYRING_FILE);
        let json = serde_json::to_vec_pretty(ring).map_err(|e| HomeError::Keyring {
            path: path.clone(),
            message: e.to_string(),
        })?;
        replace_atomically(&path, &json, 0o600)
    }
}

/// Parse configuration text, reporting file, line, column and field.
pub fn parse_config(path: &Path, text: &str) -> Result<Config, HomeError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let mut message = strip_position(&inner.to_string());
        // Inside a tagged enum (agent profiles) the deserializer repeats the top-level
        // key in front of the message; the field path already says where.
        if let Some(top) = field.split('.').next()
            && let Some(rest) = message.strip_prefix(&format!("{top}: "))
        {
            message = rest.to_owned();
        }
        let (line, column, message) = worktrain_core::diagnostics::refine(
            text,
            loc.as_ref().map(|l| l.line()).unwrap_or(0),
            loc.as_ref().map(|l| l.column()).unwrap_or(0),
            &message,
        );
        HomeError::Config {
            path: path.to_path_buf(),
            line,
            column,
            message: if field.is_empty() || field == "." {
                message
            } else {
                format!("at `{field}`: {message}")
            },
        }
    })
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn random_bytes() -> Result<[u8; 32], HomeError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| HomeError::Io {
        path: PathBuf::from("<os random source>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

#[cfg(unix)]
fn open_options(mode: u32) -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true).mode(mode);
    o
}

#[cfg(not(unix))]
fn open_options(_mode: u32) -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    o
}

/// Create a new file with the given mode (fails if it exists), fsynced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HomeError> {
    let mut f = open_options(mode).open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Replace a file atomically: write a sibling temp file with the mode, fsync, rename.
fn replace_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HomeError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_secrets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path().join("h"))).unwrap();
        let first = home.init().unwrap();
        assert!(!first.nothing_changed());
        let ring = home.keyring().unwrap();
        let second = home.init().unwrap();
        assert!(second.nothing_changed(), "{second:?}");
        assert_eq!(
            home.keyring().unwrap(),
            ring,
            "second init keeps the keyring"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [KEYRING_FILE, API_TOKEN_FILE, CONFIG_FILE] {
                let mode = fs::metadata(home.path(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
        }
        let config = home.config().unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.daemon, DaemonSettings::default());
        assert!(
            config.agents.contains_key("default"),
            "the written config documents an agent profile"
        );
    }

    #[test]
    fn rotation_keeps_previous_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path().to_path_buf())).unwrap();
        home.init().unwrap();
        let before = home.keyring().unwrap();
        let after = home.rotate_keys().unwrap();
        assert_eq!(
            after.previous.as_ref().map(|k| k.id),
            Some(before.current.id)
        );
        assert_ne!(after.current.id, before.current.id);
        assert_eq!(home.keyring().unwrap(), after);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.path(KEYRING_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn bad_config_names_file_line_and_field() {
        let err =
            parse_config(Path::new("/h/config.yaml"), "limits:\n  notes_bites: 3\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("/h/config.yaml:2:"), "{shown}");
        assert!(shown.contains("notes_bites"), "{shown}");
        let err = parse_config(Path::new("c.yaml"), "limits:\n  notes_bytes: lots\n").unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    /// Every `yaml` block of docs/storage.md is a `config.yaml` this build accepts, and
    /// the store settings in it mean what the page says.
    #[test]
    fn storage_doc_examples_load() {
        let doc = include_str!("../../../docs/storage.md");
        let blocks: Vec<&str> = doc
            .split("```yaml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "docs/storage.md has config examples");
        for block in blocks {
            let config = parse_config(Path::new("docs/storage.md"), block)
                .unwrap_or_else(|e| panic!("docs/storage.md example rejected: {e}\n{block}"));
            let home = Home::locate(Some(PathBuf::from("/h"))).unwrap();
            let url = home.store_url(&config, None).unwrap();
            assert_eq!(url.backend(), "postgres");
            let options = home.store_options(&config);
            assert_eq!(options.max_connections, Some(10));
            assert_eq!(options.tls.mode, Some(TlsMode::VerifyFull));
            assert_eq!(
                options.tls.ca_file.as_deref(),
                Some(Path::new("/h/db-ca.pem"))
            );
        }
    }

    /// Every `yaml` block of docs/postgres.md is a `config.yaml` this build accepts, on a
    /// PostgreSQL store, with the daemon settings the page describes.
    #[test]
    fn postgres_doc_examples_load() {
        let doc = include_str!("../../../docs/postgres.md");
        let blocks: Vec<&str> = doc
            .split("```yaml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "docs/postgres.md has config examples");
        for block in blocks {
            let config = parse_config(Path::new("docs/postgres.md"), block)
                .unwrap_or_else(|e| panic!("docs/postgres.md example rejected: {e}\n{block}"));
            let home = Home::locate(Some(PathBuf::from("/h"))).unwrap();
            assert_eq!(home.store_url(&config, None).unwrap().backend(), "postgres");
            assert_eq!(home.store_options(&config).max_connections, Some(10));
            assert_eq!(config.daemon.max_concurrent_sessions, 8);
            assert_eq!(config.daemon.lease_secs, 30);
            assert!(config.daemon.allow_remote);
        }
    }

    #[test]
    fn store_url_precedence_and_relative_paths() {
        let home = Home::locate(Some(PathBuf::from("/h"))).unwrap();
        let mut config = Config::default();
        assert_eq!(
            home.store_url(&config, None).unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/h/worktrain.db"))
        );
        config.store.url = Some("sqlite://data/wt.db".into());
        assert_eq!(
            home.store_url(&config, None).unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/h/data/wt.db"))
        );
        assert_eq!(
            home.store_url(&config, Some("postgres://u@db/wt")).unwrap(),
            StoreUrl::Postgres("postgres://u@db/wt".into()),
            "an override wins over store.url"
        );
        assert_eq!(
            home.store_url(&config, Some("  ")).unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/h/data/wt.db")),
            "an empty override is no override"
        );
        config.store.url = Some("oracle://x".into());
        assert!(home.store_url(&config, None).is_err());
        let err = parse_config(Path::new("c.yaml"), "store:\n  tls:\n    mode: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.tls.mode"), "{err}");
    }
}
