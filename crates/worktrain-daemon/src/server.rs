//! Binding and serving: loopback unless `daemon.allow_remote: true`, graceful shutdown,
//! and protection against slow or greedy clients: a request head must arrive within
//! [`ServerLimits::header_read_timeout`], and one client address may hold at most
//! [`ServerLimits::max_connections_per_client`] connections (more are answered `503` and
//! closed), so a few sockets dripping bytes cannot hold the server.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::api::{AppState, router};
use crate::auth::ApiToken;
use crate::supervisor::Supervisor;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address does not parse.
    #[error("invalid bind address `{addr}`: {message}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// Why it does not parse.
        message: String,
    },
    /// A non-loopback address without consent.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and daemon.allow_remote is false \
         (set `daemon: {{allow_remote: true}}` in config.yaml to serve the API beyond this machine; \
         every route except /healthz needs the API token)"
    )]
    RemoteNotAllowed {
        /// The non-loopback address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound (in use, no permission, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address given.
        addr: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error after it started.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Parse a bind address (`host:port`; `localhost` is accepted as 127.0.0.1).
pub fn parse_bind(addr: &str) -> Result<SocketAddr, ServeError> {
    let normalized = match addr.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.to_owned(),
    };
    normalized
        .parse()
        .map_err(|e: std::net::AddrParseError| ServeError::BadAddress {
            addr: addr.to_owned(),
            message: format!("{e} (expected host:port, e.g. 127.0.0.1:7878)"),
        })
}

/// Refuse a non-loopback address unless `allow_remote`.
pub fn check_bind(addr: SocketAddr, allow_remote: bool) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(ServeError::RemoteNotAllowed { addr })
    }
}

/// Limits on clients of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request head (request line and headers) must be complete this long after the
    /// client starts sending it; otherwise the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections one client address may hold at once (every local client shares
    /// 127.0.0.1, so this is generous; it stops one client from taking every socket).
    pub max_connections_per_client: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_client: 256,
        }
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct ConnectionCounts(Mutex<HashMap<IpAddr, usize>>);

impl ConnectionCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after every single update; a panic elsewhere cannot
        // leave it half-written.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count a new connection from `ip`, unless it already holds `max`.
    fn try_add(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            ip,
            counts: self.clone(),
        })
    }
}

/// One counted connection; uncounted when dropped.
struct ConnectionSlot {
    ip: IpAddr,
    counts: Arc<ConnectionCounts>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Builds more routes (the web console) over the API's state; merged into the router.
pub type Extension = Arc<dyn Fn(AppState) -> axum::Router + Send + Sync>;

/// A bound, not yet serving, HTTP server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    extensions: Vec<Extension>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .field("limits", &self.limits)
            .field("extensions", &self.extensions.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Check and bind `addr` for `sup`'s API.
    pub async fn bind(
        sup: Arc<Supervisor>,
        token: ApiToken,
        addr: &str,
    ) -> Result<Self, ServeError> {
        let parsed = parse_bind(addr)?;
        check_bind(parsed, sup.settings().allow_remote)?;
        let listener = TcpListener::bind(parsed)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        if let Ok(bound) = listener.local_addr() {
            sup.set_served_at(bound);
        }
        Ok(Self {
            listener,
            state: AppState::new(sup, token),
            limits: ServerLimits::default(),
            extensions: Vec::new(),
        })
    }

    /// Use other client limits.
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serve the trigger runtime's routes too.
    pub fn with_triggers(mut self, rt: Arc<worktrain_triggers::runtime::Runtime>) -> Self {
        self.state = self.state.with_triggers(rt);
        self
    }

    /// Serve more routes built from the API's state (the console lives in a crate above
    /// this one, so it is passed in rather than named here). Its paths must not overlap
    /// the API's, and it brings no fallback of its own.
    pub fn with_extension(mut self, ext: Extension) -> Self {
        self.extensions.push(ext);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::Serve)
    }

    /// Serve until `shutdown` resolves, then stop accepting and let in-flight requests
    /// finish (streams and long-polls end when the supervisor begins its shutdown).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr()?;
        info!(%addr, header_read_timeout = ?self.limits.header_read_timeout,
              max_connections_per_client = self.limits.max_connections_per_client, "serving the API");
        let mut app = router(self.state.clone());
        for ext in &self.extensions {
            app = ext(self.state.clone()).merge(app);
        }
        let counts = Arc::new(ConnectionCounts::default());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = counts.try_add(peer.ip(), self.limits.max_connections_per_client)
            else {
                warn!(client = %peer.ip(), limit = self.limits.max_connections_per_client,
                      "refusing a connection: too many from this client");
                tokio::spawn(refuse(stream));
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(client = %peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        graceful.shutdown().await;
        Ok(())
    }
}

/// Answer a connection over the per-client cap with a short `503` and close it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"code":"too_many_connections","message":"this client holds too many open connections to the daemon","retry":"same","hint":"close idle connections, or reuse one (keep-alive)"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
