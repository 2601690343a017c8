//! The malformed-workflow corpus: files that are too deep, too large, not regular files,
//! not UTF-8, cyclic or explosive. Each must be refused quickly with a precise error —
//! never read without bound, never block, never take seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use worktrain_core::error::ErrorCode;
use worktrain_core::load::{MAX_NESTING, MAX_WORKFLOW_BYTES, Rule, parse_workflow};
use worktrain_engine::Catalog;
use worktrain_engine::catalog::{read_source, read_workflow_file};

const HEAD: &str = "schemaVersion: 2\nid: m\nname: M\ndescription: d\nversion: '1'\n";

/// Every probe must answer within this (generous on a loaded 2-core machine; the
/// failures this guards against took 20 s to forever).
const QUICK: Duration = Duration::from_secs(3);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(t.elapsed() < QUICK, "{what} took {:?}", t.elapsed());
    r
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

fn including(target: &str) -> String {
    format!(
        "{HEAD}steps:\n  - id: a\n    title: A\n    prompt: a\n  - id: inc\n    include: {target}\n"
    )
}

#[test]
fn special_files_are_refused_without_reading_or_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    mkfifo(&fifo);
    let mut probes = 0;
    for (path, says) in [
        ("/dev/zero", "character device"),
        ("/dev/urandom", "character device"),
        ("/dev/null", "character device"),
        (fifo.to_str().unwrap(), "FIFO"),
        (dir.path().to_str().unwrap(), "directory"),
    ] {
        let e = timed(path, || read_workflow_file(path)).unwrap_err();
        assert_eq!(e.code, ErrorCode::WorkflowInvalid, "{path}: {e:?}");
        assert!(e.message.contains(says), "{path}: {}", e.message);
        assert!(e.message.contains("regular file"), "{path}: {}", e.message);
        assert!(e.message.contains(path), "names the file: {}", e.message);
        probes += 1;
        // The same file as an include of a workflow.
        let wf = write(dir.path(), "inc.yaml", &including(path));
        let e = timed(path, || Catalog::default().resolve(wf.to_str().unwrap())).unwrap_err();
        assert_eq!(e.code, ErrorCode::WorkflowInvalid, "{path}: {e:?}");
        assert!(e.message.contains(says), "include of {path}: {}", e.message);
        assert!(e.message.contains("steps[1].include"), "{}", e.message);
        probes += 1;
    }
    let e = read_workflow_file(dir.path().join("missing.yaml").to_str().unwrap()).unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkflowNotFound, "{e:?}");
    assert_eq!(probes, 10);
}

#[test]
fn a_fifo_in_a_workflow_directory_is_listed_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("stuck.yaml"));
    let catalog = Catalog::new(Some(dir.path().to_path_buf()), None);
    let entries = timed("list", || catalog.list());
    let stuck = entries
        .iter()
        .find(|e| e.id == "stuck")
        .expect("the FIFO is listed, not silently dropped");
    let err = stuck.error.as_deref().unwrap();
    assert!(err.contains("FIFO"), "{err}");
    let e = timed("resolve", || catalog.resolve("stuck")).unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkflowInvalid);
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let mut probes = 0;
    for depth in [MAX_NESTING + 1, 10_000, 100_000] {
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let text = format!(
                "{HEAD}steps: {}{}\n",
                open.repeat(depth),
                close.repeat(depth)
            );
            if text.len() > MAX_WORKFLOW_BYTES {
                let e = timed("size", || parse_workflow("deep.yaml", &text)).unwrap_err();
                assert_eq!(e.rule, Rule::Limit, "{e}");
                continue;
            }
            let e = timed("depth", || parse_workflow("deep.yaml", &text)).unwrap_err();
            assert_eq!(e.rule, Rule::Limit, "{depth}: {e}");
            assert!(e.message.contains("nest deeper"), "{e}");
            assert_eq!(e.line, Some(6), "points at the line: {e}");
            probes += 1;
        }
    }
    // JSON too.
    let text = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let e = timed("json depth", || parse_workflow("deep.json", &text)).unwrap_err();
    assert_eq!(e.rule, Rule::Limit);
    // Block-style nesting is bounded by the size cap; a deep but small one is a quick error.
    let mut block = String::from(HEAD);
    block.push_str("steps:\n");
    for i in 0..300 {
        block.push_str(&" ".repeat(2 * i + 2));
        block.push_str("a:\n");
    }
    timed("block nesting", || parse_workflow("block.yaml", &block)).unwrap_err();
    assert!(probes >= 3);
}

#[test]
fn oversized_files_are_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from(HEAD);
    big.push_str("steps:\n  - id: a\n    title: A\n    prompt: '");
    big.push_str(&"x".repeat(MAX_WORKFLOW_BYTES));
    big.push_str("'\n");
    let path = write(dir.path(), "big.yaml", &big);
    let e = timed("big file", || read_workflow_file(path.to_str().unwrap())).unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkflowInvalid);
    assert!(e.message.contains("over the limit"), "{}", e.message);
    assert!(!e.message.contains("artifact"), "{}", e.message);
    let e = timed("big text", || parse_workflow("big.yaml", &big)).unwrap_err();
    assert_eq!(e.rule, Rule::Limit);
}

#[test]
fn encodings_are_reported_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!("{HEAD}steps:\n  - id: a\n    title: A\n    prompt: a\n");
    // A byte order mark is accepted, not "more than one document".
    let bom = dir.path().join("bom.yaml");
    std::fs::write(&bom, [&b"\xEF\xBB\xBF"[..], good.as_bytes()].concat()).unwrap();
    let (_, text) = read_workflow_file(bom.to_str().unwrap()).unwrap();
    parse_workflow("bom.yaml", &text).unwrap();
    parse_workflow("bom.yaml", &format!("\u{feff}{good}")).unwrap();
    // Invalid UTF-8: byte offset, line and column.
    let bad = dir.path().join("latin1.yaml");
    let mut bytes = good.clone().into_bytes();
    let at = bytes.len() - 2;
    bytes.insert(at, 0xE9);
    std::fs::write(&bad, &bytes).unwrap();
    let e = read_source(&bad).unwrap_err();
    assert_eq!(e.rule, Rule::Encoding);
    assert!(e.message.contains(&format!("byte offset {at}")), "{e}");
    assert!(e.message.contains("0xe9"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");
    assert_eq!(e.column, Some(13), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:9:13:", bad.display())),
        "{e}"
    );
    // UTF-16 with its byte order mark.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(good.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let p = dir.path().join("utf16.yaml");
    std::fs::write(&p, utf16).unwrap();
    let e = read_source(&p).unwrap_err();
    assert_eq!(e.rule, Rule::Encoding, "{e}");
    assert!(e.message.contains("byte offset 0"), "{e}");
}

#[test]
fn include_cycles_and_yaml_bombs_are_quick_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routines")).unwrap();
    write(
        dir.path(),
        "routines/a.yaml",
        "schemaVersion: 2\nroutine: a\ndescription: d\nsteps:\n  - id: x\n    include: ./b.yaml\n",
    );
    write(
        dir.path(),
        "routines/b.yaml",
        "schemaVersion: 2\nroutine: b\ndescription: d\nsteps:\n  - id: y\n    include: ./a.yaml\n",
    );
    let wf = write(dir.path(), "cyc.yaml", &including("./routines/a.yaml"));
    let e = timed("cycle", || Catalog::default().resolve(wf.to_str().unwrap())).unwrap_err();
    assert!(e.message.contains("cycle"), "{}", e.message);

    // Billion laughs: nine levels of nine aliases.
    let mut bomb = String::from(HEAD);
    bomb.push_str("x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("steps:\n  - id: a\n    title: A\n    prompt: a\n");
    let e = timed("bomb", || parse_workflow("bomb.yaml", &bomb)).unwrap_err();
    assert_eq!(e.rule, Rule::Syntax, "{e}");
}

#[test]
fn simulating_a_billion_node_workflow_is_cut_short_and_says_so() {
    use worktrain_workflow_tools::simulate::{DEFAULT_MAX_NODES, Script, SimError, simulate};
    let text = format!(
        "{HEAD}steps:
  - id: outer
    loop: {{for: 1000, maxIterations: 1000}}
    steps:
      - id: middle
        loop: {{for: 1000, maxIterations: 1000}}
        steps:
          - id: inner
            loop: {{for: 1000, maxIterations: 1000}}
            steps:
              - id: work
                title: Work
                prompt: work
"
    );
    let pinned =
        worktrain_core::compile::compile(&parse_workflow("nested.yaml", &text).unwrap()).unwrap();
    assert!(pinned.workflow.node_bound >= 1_000_000_000);
    let t = Instant::now();
    let e = simulate(&pinned, &Script::default()).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    match &e {
        SimError::Capped { cap, bound } => {
            assert_eq!(*cap, DEFAULT_MAX_NODES);
            assert!(*bound >= 1_000_000_000);
        }
        SimError::TimeBudget { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("max_nodes") || e.to_string().contains("time budget"));
    // An explicit small budget is honoured too.
    let script = Script {
        time_budget: Some(Duration::from_millis(200)),
        max_nodes: Some(u64::MAX),
        ..Script::default()
    };
    let t = Instant::now();
    let e = simulate(&pinned, &script).unwrap_err();
    assert!(matches!(e, SimError::TimeBudget { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_compiled_workflow_over_the_blob_limit_is_a_workflow_error_not_an_artifact_error() {
    use std::sync::Arc;
    use worktrain_core::context::Limits;
    use worktrain_core::token::Keyring;
    use worktrain_engine::{Engine, StartRequest};
    use worktrain_store::sqlite::SqliteOptions;
    use worktrain_store::{EventStore, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(
            &dir.path().join("w.db"),
            SqliteOptions {
                blob_limit: 1024,
                ..SqliteOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let engine = Engine::new(
        store,
        Keyring::new([1; 32], "2026-01-01T00:00:00Z".into()),
        Limits::default(),
    );
    let workflow = Catalog::default().resolve("coding-task").unwrap();
    assert!(workflow.pinned.canonical.len() > 1024);
    let e = engine
        .start(StartRequest {
            workflow,
            goal: "g".into(),
            workspace: None,
            context: Default::default(),
            mode: worktrain_core::event::SessionMode::Interactive,
            parent: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkflowInvalid, "{e:?}");
    assert!(e.message.contains("compiled workflow"), "{}", e.message);
    assert!(!e.hint.contains("artifacts"), "{}", e.hint);
}
