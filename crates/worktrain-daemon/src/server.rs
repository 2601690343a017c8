//! Binding and serving: loopback unless `daemon.allow_remote: true`, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

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
        /// Why.
        message: String,
    },
    /// A non-loopback address without consent.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and daemon.allow_remote is false \
         (set `daemon: {{allow_remote: true}}` in config.yaml to serve the API beyond this machine; \
         every route except /healthz needs the API token)"
    )]
    RemoteNotAllowed {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
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

/// A bound, not yet serving, HTTP server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
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
        Ok(Self {
            listener,
            state: AppState::new(sup, token),
        })
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
        info!(%addr, "serving the API");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}
