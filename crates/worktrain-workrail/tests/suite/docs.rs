//! The example in docs/workflows.md, "Coming from WorkRail": the WorkRail file shown
//! converts to exactly the YAML shown, and that YAML loads, compiles and lints clean of
//! errors.

use std::path::Path;

use worktrain_core::compile::{NoRoutines, compile_with};
use worktrain_core::load::parse_workflow;
use worktrain_workflow_tools::lint::{Severity, lint};
use worktrain_workrail::{Input, import};

/// The code blocks (language, text) of the section that starts at `heading`.
fn blocks(doc: &str, heading: &str) -> Vec<(String, String)> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/workflows.md has no `{heading}`"));
    let section = &doc[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let nl = after.find('\n').unwrap();
        let lang = after[..nl].trim().to_owned();
        let body = &after[nl + 1..];
        let end = body.find("```").unwrap();
        out.push((lang, body[..end].to_owned()));
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn the_documented_example_converts_to_the_documented_yaml() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/workflows.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let blocks = blocks(&doc, "## Coming from WorkRail");
    let json = blocks
        .iter()
        .find(|(l, _)| l == "json")
        .map(|(_, t)| t.clone())
        .expect("a json example");
    let yaml = blocks
        .iter()
        .find(|(l, _)| l == "yaml")
        .map(|(_, t)| t.clone())
        .expect("a yaml example");
    let out = import(&[Input::new("fix-flaky.json", json)], &[]);
    let converted = &out[0]
        .output
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", out[0].report))
        .yaml;
    assert_eq!(
        converted, &yaml,
        "docs/workflows.md shows another conversion than the importer makes"
    );
    let def = parse_workflow("fix-flaky.yaml", &yaml).unwrap();
    let pinned = compile_with(&def, "fix-flaky.yaml", &NoRoutines).unwrap();
    assert!(
        lint(&pinned.workflow)
            .iter()
            .all(|f| f.severity != Severity::Error)
    );
}
