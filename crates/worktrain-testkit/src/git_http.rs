//! A git smart-HTTP server on `127.0.0.1:0`: `git http-backend` (git's own CGI program)
//! behind a small HTTP front that demands Basic auth with one token as the password, the
//! way GitHub and GitLab take an access token (`x-access-token:<token>`,
//! `oauth2:<token>`). Pushes and fetches are real git over HTTP, against bare
//! repositories under one directory; every request is recorded (without its
//! credentials), so tests can check what a client sent and that it authenticated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHttpRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The Basic-auth user name sent, when any (never the password).
    pub user: Option<String>,
    /// Whether the credentials were accepted.
    pub authorized: bool,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    token: String,
    requests: Mutex<Vec<GitHttpRequest>>,
}

/// A running git smart-HTTP server; stops when dropped.
#[derive(Debug)]
pub struct GitHttpServer {
    base_url: String,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHttpServer {
    /// Serve the bare repositories under `root` (`<base_url>/<name>.git`); every request
    /// needs Basic auth whose password is `token`.
    pub async fn start(root: PathBuf, token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            root,
            token: token.to_owned(),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            inner,
            task,
        })
    }

    /// The same server behind TLS: `https://localhost:PORT`, presenting the certificate
    /// chain `cert_pem` (leaf first) with its private key `key_pem` — as a forge on a
    /// private certificate authority does (see [`TestCa`]).
    pub async fn start_tls(
        root: PathBuf,
        token: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> std::io::Result<Self> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(format!("key PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            root,
            token: token.to_owned(),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let tls = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(tls, app).await;
        });
        Ok(Self {
            base_url: format!("https://localhost:{}", addr.port()),
            inner,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (or `https://localhost:PORT` from
    /// [`start_tls`](Self::start_tls)).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<GitHttpRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum; a
/// client that fails the handshake (one that does not trust the certificate) is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(Ok(tls)) = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.acceptor.accept(stream),
            )
            .await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A private certificate authority and a server certificate it signed for `localhost`
/// and `127.0.0.1`, made with the `openssl` program in a directory: what a forge on a
/// company's own CA presents, and what a client must be told to trust (`ca_pem`).
#[derive(Debug)]
pub struct TestCa {
    /// The authority's certificate (PEM file): what clients trust.
    pub ca_pem: PathBuf,
    /// The server's certificate chain (PEM, leaf first).
    pub cert_pem: Vec<u8>,
    /// The server's private key (PEM).
    pub key_pem: Vec<u8>,
}

impl TestCa {
    /// Make the authority and the server certificate under `dir`.
    pub fn generate(dir: &std::path::Path) -> std::io::Result<Self> {
        let run = |args: &[&str]| -> std::io::Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=worktrain test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ])?;
        Ok(Self {
            ca_pem: dir.join("ca.pem"),
            cert_pem: std::fs::read(dir.join("server.pem"))?,
            key_pem: std::fs::read(dir.join("server.key"))?,
        })
    }
}

/// `(user, password)` of a Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let creds = basic(&headers);
    let authorized = creds.as_ref().is_some_and(|(_, p)| *p == inner.token);
    if let Ok(mut r) = inner.requests.lock() {
        r.push(GitHttpRequest {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            user: creds.as_ref().map(|(u, _)| u.clone()),
            authorized,
        });
    }
    if !authorized {
        let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    let user = creds.map(|(u, _)| u).unwrap_or_default();
    match cgi(&inner, &method, &uri, &headers, &user, body).await {
        Ok(r) => r,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Run `git http-backend` for one request (CGI/1.1) and turn its output into a response.
async fn cgi(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    user: &str,
    body: Bytes,
) -> Result<Response, String> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &inner.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        // An authenticated user enables receive-pack (pushes).
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("git http-backend: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&body)
            .await
            .map_err(|e| format!("writing to git http-backend: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("git http-backend: {e}"))?;
    let raw = out.stdout;
    // CGI output: header lines, a blank line, the body.
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .ok_or_else(|| {
            format!(
                "git http-backend printed no headers: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split.0]).into_owned();
    let mut response = Response::new(Body::from(raw[split.0 + split.1..].to_vec()));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            *response.status_mut() = code;
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}
