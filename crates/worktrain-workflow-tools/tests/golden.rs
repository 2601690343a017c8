//! Golden tests of `workflow graph` for every bundled workflow in every format, and the
//! bundled library's lint: every file in `workflows/*.yaml` must lint clean (no errors,
//! no warnings), which also walks every explored routing of it through the simulator.
//!
//! The expected graphs live in `tests/golden/graph/<id>.{txt,dot,svg}`. After an
//! intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p worktrain-workflow-tools --test golden` and review the diff.

// Helpers outside `#[test]` functions fail loudly on purpose: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use worktrain_core::compile::{Pinned, RoutineResolver, RoutineSource, compile_with};
use worktrain_core::load::parse_workflow;
use worktrain_workflow_tools::graph::{GraphFormat, render};
use worktrain_workflow_tools::lint::lint;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/graph")
}

/// Resolves includes the way the bundled catalog does: a routine id is
/// `workflows/routines/<id>.yaml`, a path is relative to the including file.
struct Routines {
    root: PathBuf,
}

impl RoutineResolver for Routines {
    fn resolve(&self, reference: &str, from: &str) -> Result<RoutineSource, String> {
        let is_path = reference.contains('/')
            || [".yaml", ".yml", ".json"]
                .iter()
                .any(|e| reference.ends_with(e));
        let path = if is_path {
            Path::new(from)
                .parent()
                .unwrap_or(&self.root)
                .join(reference)
        } else {
            self.root.join("routines").join(format!("{reference}.yaml"))
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read routine {}: {e}", path.display()))?;
        Ok(RoutineSource {
            location: path.display().to_string(),
            text,
        })
    }
}

/// Every bundled workflow, compiled, in file-name order.
fn bundled() -> Vec<(PathBuf, Pinned)> {
    let root = repo().join("workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no bundled workflows in {}",
        root.display()
    );
    let resolver = Routines { root: root.clone() };
    files
        .into_iter()
        .map(|path| {
            let location = path.display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let def = parse_workflow(&location, &text).unwrap_or_else(|e| panic!("{e}"));
            let pinned = compile_with(&def, &location, &resolver)
                .unwrap_or_else(|e| panic!("{location}: {e}"));
            (path, pinned)
        })
        .collect()
}

#[test]
fn graphs_of_bundled_workflows_match_the_golden_files() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = golden_dir();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut problems = Vec::new();
    let mut expected_files = BTreeSet::new();
    for (_, pinned) in bundled() {
        let wf = &pinned.workflow;
        for format in GraphFormat::ALL {
            let name = format!("{}.{}", wf.id, format.extension());
            expected_files.insert(name.clone());
            let path = dir.join(&name);
            let actual = render(wf, format);
            assert_eq!(
                actual,
                render(wf, format),
                "{name}: rendering is not deterministic"
            );
            if format == GraphFormat::Svg {
                check_svg(&name, &actual);
            }
            if update {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => {
                    let line = expected
                        .lines()
                        .zip(actual.lines())
                        .position(|(a, b)| a != b)
                        .map_or_else(
                            || expected.lines().count().min(actual.lines().count()) + 1,
                            |i| i + 1,
                        );
                    problems.push(format!(
                        "{name}: differs from the golden file (first difference at line {line})"
                    ));
                }
                Err(_) => {
                    problems.push(format!("{name}: golden file missing ({})", path.display()))
                }
            }
        }
    }
    if !update && let Ok(read) = std::fs::read_dir(&dir) {
        for e in read.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !expected_files.contains(&name) {
                problems.push(format!(
                    "{name}: stale golden file (no bundled workflow renders it)"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "workflow graph golden files are out of date:\n  {}\nIf the change is intended, regenerate them with\n  UPDATE_GOLDEN=1 cargo test -p worktrain-workflow-tools --test golden\nand review the diff of crates/worktrain-workflow-tools/tests/golden/graph/.",
        problems.join("\n  ")
    );
}

#[test]
fn every_bundled_workflow_lints_clean() {
    let all = bundled();
    let ids: BTreeSet<String> = all.iter().map(|(_, p)| p.workflow.id.to_string()).collect();
    let mut report = Vec::new();
    for (path, pinned) in &all {
        for f in lint(&pinned.workflow) {
            report.push(format!("{}: {f}\n      hint: {}", path.display(), f.hint));
        }
        // Parallel steps delegate to workflows that exist in the bundle.
        for s in &pinned.workflow.steps {
            for c in s.delegation.iter().flat_map(|d| &d.children) {
                if !ids.contains(c.workflow.as_str()) {
                    report.push(format!(
                        "{}: step `{}` delegates to `{}`, which is not a bundled workflow",
                        path.display(),
                        s.id,
                        c.workflow
                    ));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "bundled workflows must lint clean:\n{}",
        report.join("\n")
    );
}

/// The SVG is one well-formed standalone document a browser can render.
fn check_svg(name: &str, svg: &str) {
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{name}: no SVG root with xmlns"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{name}: not closed");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(lt) = rest.find('<') {
        check_text(name, &rest[..lt]);
        let gt = rest[lt..]
            .find('>')
            .unwrap_or_else(|| panic!("{name}: unclosed tag"));
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(closing.trim()),
                "{name}: mismatched </{closing}>"
            );
            continue;
        }
        let body = tag.trim_end_matches('/');
        assert_eq!(
            body.matches('"').count() % 2,
            0,
            "{name}: unbalanced quotes in <{body}>"
        );
        check_text(name, &body.replace('"', ""));
        if !tag.ends_with('/') {
            stack.push(
                body.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    assert!(stack.is_empty(), "{name}: unclosed elements {stack:?}");
}

fn check_text(name: &str, t: &str) {
    let mut rest = t;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| after.starts_with(e)),
            "{name}: bad entity near {after:.20}"
        );
        rest = &rest[amp + 1..];
    }
}
