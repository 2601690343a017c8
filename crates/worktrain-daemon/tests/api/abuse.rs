//! The HTTP abuse suite: slow clients, connection hoarding, auth variants, bodies that
//! are not what a route takes, workspaces that are not workspaces, and a burst of
//! concurrent requests. Every probe is bounded in count and time and talks to loopback.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worktrain_daemon::server::ServerLimits;
use worktrain_testkit::Script;

use crate::harness::*;

fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_owned()
}

/// Read until the peer closes (or `limit` passes); returns what was read and whether
/// the connection was closed by the server.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dripping_its_request_head_is_cut_off() {
    let opts = Options {
        server_limits: ServerLimits {
            header_read_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        },
        ..Options::default()
    };
    let d = Daemon::start_with(Script::default(), opts).await;
    let mut slow = TcpStream::connect(addr(&d)).await.unwrap();
    let started = Instant::now();
    // One byte every 200 ms: the head would take far longer than the timeout.
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // A 408 before closing is fine too.
                closed = true;
                break;
            }
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the slow client still holds its connection"
        );
    }
    assert!(closed, "the whole head was accepted byte by byte");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    // The server still serves everyone else.
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_connection() {
    let opts = Options {
        server_limits: ServerLimits {
            max_connections_per_client: 4,
            ..ServerLimits::default()
        },
        ..Options::default()
    };
    let d = Daemon::start_with(Script::default(), opts).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&d)).await.unwrap());
    }
    // Give the server a moment to account for them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr(&d)).await.unwrap();
    let (text, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed, "the connection over the cap was left open: {text}");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too_many_connections"), "{text}");
    // Releasing one makes room again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr(&d)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a release: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_variants_are_all_refused() {
    let d = Daemon::start(Script::default()).await;
    let good = d.token.clone();
    let variants: Vec<(&str, String)> = vec![
        ("no scheme", good.clone()),
        ("basic", format!("Basic {good}")),
        ("empty bearer", "Bearer ".to_owned()),
        (
            "prefix of the token",
            format!("Bearer {}", &good[..good.len() - 1]),
        ),
        ("token plus a byte", format!("Bearer {good}x")),
        (
            "another token",
            "Bearer wtk_00000000000000000000".to_owned(),
        ),
        ("token as scheme", format!("{good} Bearer")),
        (
            "upper-cased token",
            format!("Bearer {}", good.to_uppercase()),
        ),
    ];
    for (what, header) in &variants {
        for (method, path) in [
            (Method::GET, "/api/v1/sessions"),
            (Method::POST, "/api/v1/sessions"),
            (Method::GET, "/readyz"),
        ] {
            let r = d
                .http
                .request(method.clone(), d.url(path))
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}"
            );
        }
    }
    // Non-text header bytes.
    let mut s = TcpStream::connect(addr(&d)).await.unwrap();
    s.write_all(b"GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 401") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_objects_are_refused_on_every_post_route() {
    let d = Daemon::start_with(
        Script::default(),
        Options {
            run_supervisor: false,
            ..Options::default()
        },
    )
    .await;
    let id = d.spawn("one", "abuse").await;
    let routes = [
        "/api/v1/sessions".to_owned(),
        format!("/api/v1/sessions/{id}/cancel"),
        format!("/api/v1/sessions/{id}/steer"),
        format!("/api/v1/sessions/{id}/approve"),
        format!("/api/v1/sessions/{id}/reject"),
        format!("/api/v1/sessions/{id}/resume"),
        format!("/api/v1/sessions/{id}/retry"),
        "/api/v1/kill-all".to_owned(),
        "/api/v1/await".to_owned(),
    ];
    let mut probes = 0;
    for path in &routes {
        for body in [
            "[]",
            "[1,2]",
            "\"x\"",
            "null",
            "0",
            "true",
            "{\"a\":",
            "\u{feff}{}",
        ] {
            let r = d
                .http
                .post(d.url(path))
                .bearer_auth(&d.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "POST {path} with {body:?}: {status} {v}"
            );
            if status == StatusCode::BAD_REQUEST {
                assert_eq!(v["code"], "invalid_input", "POST {path} {body:?}: {v}");
            }
            probes += 1;
        }
    }
    assert_eq!(probes, routes.len() * 8);
    // Nothing was cancelled by the `[]` bodies.
    assert_eq!(d.run_state(&id).await, "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_that_are_not_git_working_trees_are_refused() {
    let d = Daemon::start_with(
        Script::default(),
        Options {
            run_supervisor: false,
            ..Options::default()
        },
    )
    .await;
    let repo = git_workspace();
    let repo_path = std::fs::canonicalize(repo.path()).unwrap();
    let plain = tempfile::tempdir().unwrap();
    let up_to_etc = format!("{}/../../../../../../../../etc", repo_path.display());
    let cases: Vec<(String, &str)> = vec![
        ("/".into(), "system directory"),
        ("/etc".into(), "system directory"),
        ("/proc/self".into(), "system directory"),
        (up_to_etc, "system directory"),
        (format!("{}/.git", repo_path.display()), ".git"),
        (format!("{}/.git/refs", repo_path.display()), ".git"),
        (plain.path().display().to_string(), "not a git working tree"),
        (d.home.root().display().to_string(), "worktrain's home"),
        ("relative/dir".into(), "absolute"),
        ("/definitely/not/here".into(), "does not exist"),
    ];
    for (ws, says) in &cases {
        let (s, v) = d
            .post(
                "/api/v1/sessions",
                json!({"workflow": "one", "goal": "g", "workspace": ws}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ws}: {v}");
        assert_eq!(v["code"], "invalid_input", "{ws}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(says), "{ws}: {msg}");
        assert!(v["hint"].as_str().unwrap().contains("git"), "{ws}: {v}");
    }
    // A real working tree is accepted, canonicalised.
    let (s, v) = d
        .post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "g", "workspace": format!("{}/./", repo_path.display())}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["session_id"].as_str().unwrap();
    assert_eq!(
        d.session(id).await["workspace"],
        repo_path.display().to_string()
    );
    let (_, list) = d.get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_requests_is_served() {
    let d = Daemon::start_with(
        Script::default(),
        Options {
            run_supervisor: false,
            ..Options::default()
        },
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let http = d.http.clone();
        let url = if i % 2 == 0 {
            d.url("/api/v1/sessions")
        } else {
            d.url("/readyz")
        };
        let token = d.token.clone();
        tasks.spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_of_a_workflow_including_a_fifo_never_hold_a_thread() {
    let d = Daemon::start_with(
        Script::default(),
        Options {
            run_supervisor: false,
            ..Options::default()
        },
    )
    .await;
    let workflows = d.home.path("workflows");
    std::fs::create_dir_all(workflows.join("routines")).unwrap();
    let fifo = workflows.join("routines/pipe.yaml");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        workflows.join("fifo.yaml"),
        "schemaVersion: 2\nid: fifo\nname: F\ndescription: d\nversion: '1'\nsteps:\n  - id: a\n    title: A\n    prompt: a\n  - id: inc\n    include: ./routines/pipe.yaml\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let http = d.http.clone();
        let url = d.url("/api/v1/sessions");
        let token = d.token.clone();
        tasks.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"workflow": "fifo", "goal": format!("g{i}")}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (status, v) = r.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "workflow_invalid", "{v}");
        assert!(v["message"].as_str().unwrap().contains("FIFO"), "{v}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Nothing is stuck: an ordinary dispatch still works at once.
    let (s, v) = tokio::time::timeout(
        Duration::from_secs(5),
        d.post(
            "/api/v1/sessions",
            json!({"workflow": "one", "goal": "after"}),
        ),
    )
    .await
    .expect("dispatch answered");
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
