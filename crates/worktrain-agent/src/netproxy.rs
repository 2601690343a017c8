//! Network allowlists for sandboxed commands (`sandbox: {network: {allow: […]}}`).
//!
//! A sandbox with an allowlist has its own network namespace with nothing but a
//! loopback interface, exactly like `network: off`. Inside it, a small bridge (the
//! worktrain binary run as `worktrain sandbox-net-bridge`, see [`bridge_main`]) listens
//! on `127.0.0.1:3128` and starts the command with `http_proxy`/`https_proxy` pointing
//! there. Every connection the bridge accepts is handed, over a Unix socket in the run's
//! private temp dir, to the [`AllowProxy`] that worktrain runs outside the sandbox: an
//! HTTP proxy (`CONNECT` tunnels and plain `http://` requests) that connects only to
//! hosts on the profile's list and answers anything else with `403` naming the host and
//! the setting. A program that ignores the proxy variables reaches nothing at all: the
//! policy fails closed. `docs/decisions/0018-network-allowlist.md` says why this shape.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tracing::{info, warn};

/// Where the bridge listens inside the sandbox (its own network namespace: nothing else
/// is there).
pub const BRIDGE_LISTEN: &str = "127.0.0.1:3128";

/// The hidden subcommand of the worktrain binary that runs [`bridge_main`].
pub const BRIDGE_SUBCOMMAND: &str = "sandbox-net-bridge";

/// The Unix socket's name in the run's private temp dir.
pub const PROXY_SOCKET: &str = ".worktrain-net.sock";

/// Longest request head the proxy reads before answering `431`.
const MAX_HEAD: usize = 16 * 1024;

static BRIDGE_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Name the program that implements [`BRIDGE_SUBCOMMAND`] (the worktrain binary sets
/// itself at start-up). Without it, allowlisted sandboxes are refused.
pub fn set_bridge_program(path: PathBuf) {
    let _ = BRIDGE_PROGRAM.set(path);
}

/// The program set by [`set_bridge_program`].
pub fn bridge_program() -> Option<&'static Path> {
    BRIDGE_PROGRAM.get().map(PathBuf::as_path)
}

/// One allowlist entry: `host`, `host:port`, `*.domain` or `*.domain:port`. Without a
/// port, 80 and 443 are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host, without the `*.` of a wildcard.
    host: String,
    /// `*.domain`: any subdomain (not the domain itself).
    wildcard: bool,
    /// The one port allowed, when given.
    port: Option<u16>,
}

impl HostPattern {
    /// Parse an entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (wildcard, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let (host, port) = split_host_port(rest);
        let port =
            match port {
                None => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    format!("`{s}`: the port `{p}` is not a number from 1 to 65535")
                })?),
            };
        let host = host
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
            && !host.starts_with('.')
            && !host.ends_with('.');
        if !valid {
            return Err(format!(
                "`{s}` is not a host name, `host:port`, `*.domain` or an IP address"
            ));
        }
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    /// Whether a connection to `host:port` is allowed by this entry.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_matches(|c| c == '[' || c == ']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        host_ok && port_ok
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `host[:port]`, also `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// The proxy outside the sandbox for one run: listens on a Unix socket, connects only
/// to allowed hosts. Stops when dropped.
#[derive(Debug)]
pub struct AllowProxy {
    task: tokio::task::JoinHandle<()>,
    denied: Arc<Mutex<Vec<String>>>,
}

impl AllowProxy {
    /// Listen on `socket` (created; an existing file there is replaced) and serve until
    /// dropped. Needs a tokio runtime.
    pub fn start(
        socket: &Path,
        allow: Vec<HostPattern>,
        session: Option<String>,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let allow = Arc::new(allow);
        let denied = Arc::new(Mutex::new(Vec::new()));
        let d = denied.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    break;
                };
                let (allow, d, session) = (allow.clone(), d.clone(), session.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, &allow, &d, session.as_deref()).await {
                        warn!(session_id = session.as_deref().unwrap_or("-"), error = %e, "sandbox proxy connection failed");
                    }
                });
            }
        });
        Ok(Self { task, denied })
    }

    /// The destinations refused so far (`host:port`), in order.
    pub fn denied(&self) -> Vec<String> {
        self.denied.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl Drop for AllowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request a client sent the proxy.
#[derive(Debug, PartialEq, Eq)]
enum ProxyRequest {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// A plain `http://` request in absolute form: forwarded in origin form.
    Forward {
        host: String,
        port: u16,
        /// The head to send upstream (request line rewritten, `Proxy-*` headers dropped).
        head: Vec<u8>,
    },
}

/// Parse a request head (through the blank line).
fn parse_head(buf: &[u8]) -> Result<Option<(ProxyRequest, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP proxy request: {e}")),
    };
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target);
        let port = port
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("CONNECT `{target}` has no port"))?;
        return Ok(Some((
            ProxyRequest::Connect {
                host: host.to_owned(),
                port,
            },
            len,
        )));
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err(format!(
            "`{method} {target}`: only `http://` URLs and CONNECT tunnels go through this proxy"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(authority);
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("`{target}`: bad port"))?,
        None => 80,
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for h in req.headers.iter() {
        if h.name.to_ascii_lowercase().starts_with("proxy-") {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some((
        ProxyRequest::Forward {
            host: host.to_owned(),
            port,
            head,
        },
        len,
    )))
}

async fn answer(conn: &mut UnixStream, status: &str, message: &str) -> std::io::Result<()> {
    let body = format!("{message}\n");
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

async fn serve(
    mut conn: UnixStream,
    allow: &[HostPattern],
    denied: &Mutex<Vec<String>>,
    session: Option<&str>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let (request, used) = loop {
        let mut chunk = [0u8; 2048];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Ok(Some(r)) => break r,
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => {
                return answer(
                    &mut conn,
                    "431 Request Header Fields Too Large",
                    "worktrain sandbox proxy: request head too large",
                )
                .await;
            }
            Err(e) => {
                return answer(
                    &mut conn,
                    "400 Bad Request",
                    &format!("worktrain sandbox proxy: {e}"),
                )
                .await;
            }
        }
    };
    let (host, port) = match &request {
        ProxyRequest::Connect { host, port } | ProxyRequest::Forward { host, port, .. } => {
            (host.clone(), *port)
        }
    };
    let sid = session.unwrap_or("-");
    if !allow.iter().any(|p| p.allows(&host, port)) {
        let dest = format!("{host}:{port}");
        warn!(session_id = sid, destination = %dest, "sandbox network: destination not allowed");
        if let Ok(mut d) = denied.lock() {
            d.push(dest.clone());
        }
        let list: Vec<String> = allow.iter().map(ToString::to_string).collect();
        return answer(
            &mut conn,
            "403 Forbidden",
            &format!(
                "worktrain sandbox: {dest} is not in this agent profile's network allowlist ({}); add it to `sandbox.network.allow` to let commands reach it",
                list.join(", ")
            ),
        )
        .await;
    }
    let mut upstream = match TcpStream::connect((host.as_str(), port)).await {
        Ok(u) => u,
        Err(e) => {
            return answer(
                &mut conn,
                "502 Bad Gateway",
                &format!("worktrain sandbox proxy: connecting to {host}:{port}: {e}"),
            )
            .await;
        }
    };
    info!(session_id = sid, destination = %format!("{host}:{port}"), "sandbox network: connection allowed");
    match request {
        ProxyRequest::Connect { .. } => {
            conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
        }
        ProxyRequest::Forward { head, .. } => {
            upstream.write_all(&head).await?;
        }
    }
    // Bytes the client sent after the head (a TLS hello, a request body).
    upstream.write_all(&buf[used..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

/// The bridge inside the sandbox: listen on `listen`, start `program args…`, hand every
/// accepted connection to the Unix socket `upstream`, and exit with the program's exit
/// code (128 + signal when it was killed). Runs as `worktrain sandbox-net-bridge`.
pub fn bridge_main(listen: &str, upstream: &Path, program: &str, args: &[String]) -> i32 {
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("worktrain sandbox: cannot listen on {listen} for the network proxy: {e}");
            return 125;
        }
    };
    let upstream = upstream.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let Ok(server) = StdUnixStream::connect(&upstream) else {
                    return;
                };
                pipe(client, server);
            });
        }
    });
    match std::process::Command::new(program).args(args).status() {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1)
        }
        Err(e) => {
            eprintln!("worktrain sandbox: cannot run {program}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
    }
}

/// Copy both ways between a TCP client and the Unix socket until both ends are done.
fn pipe(client: std::net::TcpStream, server: StdUnixStream) {
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut client_w, mut server_r) = (client, server);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
        let _ = server_w.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 16 * 1024];
    loop {
        match server_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_hosts_and_ports() {
        assert!(p("github.com").allows("github.com", 443));
        assert!(p("github.com").allows("GitHub.com.", 80));
        assert!(!p("github.com").allows("github.com", 22));
        assert!(!p("github.com").allows("api.github.com", 443));
        assert!(!p("github.com").allows("evilgithub.com", 443));
        assert!(p("*.github.com").allows("api.github.com", 443));
        assert!(!p("*.github.com").allows("github.com", 443));
        assert!(!p("*.github.com").allows("xgithub.com", 443));
        assert!(p("127.0.0.2:8080").allows("127.0.0.2", 8080));
        assert!(!p("127.0.0.2:8080").allows("127.0.0.2", 443));
        assert!(p("[::1]:9").allows("[::1]", 9));
        assert_eq!(p("*.Example.org:8443").to_string(), "*.example.org:8443");
        for bad in ["", "host:0", "host:x", "a b", "*.", "http://x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(
            HostPattern::parse("host:99999")
                .unwrap_err()
                .contains("1 to 65535")
        );
    }

    #[test]
    fn request_heads_are_parsed_and_rewritten() {
        let head: &[u8] =
            b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\nTLS";
        let (r, n) = parse_head(head).unwrap().unwrap();
        assert_eq!(
            r,
            ProxyRequest::Connect {
                host: "api.github.com".into(),
                port: 443
            }
        );
        assert_eq!(
            &head[n..],
            b"TLS",
            "the bytes after the head are the tunnel's"
        );
        let (r, _) = parse_head(
            b"GET http://example.org:8080/a?b HTTP/1.1\r\nHost: example.org:8080\r\nProxy-Authorization: x\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let ProxyRequest::Forward { host, port, head } = r else {
            panic!("{r:?}");
        };
        assert_eq!((host.as_str(), port), ("example.org", 8080));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: example.org:8080\r\n\r\n"
        );
        assert!(parse_head(b"GET http://x/").unwrap().is_none());
        assert!(parse_head(b"GET /local HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT nohost HTTP/1.1\r\n\r\n").is_err());
    }

    /// Through the proxy over its Unix socket: an allowed plain request and tunnel reach a
    /// real local server; anything else gets 403 naming the destination, and is kept.
    #[tokio::test]
    async fn the_proxy_connects_only_to_allowed_destinations() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = server.accept().await else {
                    break;
                };
                tokio::spawn(async move {
                    let mut b = vec![0u8; 4096];
                    let n = s.read(&mut b).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&b[..n])
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let body = format!("origin saw: {line}");
                    let _ = s
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join(PROXY_SOCKET);
        let proxy = AllowProxy::start(&sock, vec![p(&format!("127.0.0.1:{port}"))], None).unwrap();
        let ask = |req: String| {
            let sock = sock.clone();
            async move {
                let mut c = UnixStream::connect(&sock).await.unwrap();
                c.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let plain = ask(format!(
            "GET http://127.0.0.1:{port}/hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
        .await;
        assert!(plain.contains("origin saw: GET /hello HTTP/1.1"), "{plain}");
        let tunnel = ask(format!(
            "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\nGET /through HTTP/1.1\r\nHost: x\r\n\r\n"
        ))
        .await;
        assert!(
            tunnel.starts_with("HTTP/1.1 200 Connection established"),
            "{tunnel}"
        );
        assert!(tunnel.contains("origin saw: GET /through"), "{tunnel}");
        let other_port = port.wrapping_add(1).max(1);
        let refused = ask(format!("CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n")).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(
            refused.contains(&format!(
                "127.0.0.1:{other_port} is not in this agent profile's network allowlist"
            )),
            "{refused}"
        );
        let refused =
            ask("GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n".into()).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        let junk = ask("hello\r\n\r\n".into()).await;
        assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");
        assert_eq!(
            proxy.denied(),
            vec![
                format!("127.0.0.1:{other_port}"),
                "example.org:80".to_owned()
            ]
        );
    }
}
