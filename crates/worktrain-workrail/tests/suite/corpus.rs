//! WorkRail's own schema, workflows, routines and examples (`../shared/corpora/
//! workrail-workflows`, read in place): each imports with the expected outcome, each
//! converted workflow validates, lints without errors and simulates to completion, and
//! the converted output of each matches its golden file (`tests/golden/`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p worktrain-workrail`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use worktrain_workrail::{Input, NoteKind, Outcome, Status, import, read_inputs};

pub(crate) const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/corpora/workrail-workflows"
);

/// A corpus file by its path inside the corpus.
pub(crate) fn path(rel: &str) -> PathBuf {
    Path::new(CORPUS).join(rel)
}

fn rel(location: &str) -> String {
    let root = std::fs::canonicalize(CORPUS).unwrap();
    let p = std::fs::canonicalize(location).unwrap();
    p.strip_prefix(&root).unwrap().display().to_string()
}

/// Import the whole corpus directory, as `worktrain workflow import <corpus>` does (once
/// per test run: every conversion is also linted, which explores every routing).
pub(crate) fn import_corpus() -> Vec<(String, Outcome)> {
    static ONCE: std::sync::OnceLock<Vec<(String, Outcome)>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let inputs = read_inputs(Path::new(CORPUS)).unwrap();
        import(&inputs, &[])
            .into_iter()
            .map(|o| (rel(&o.report.source), o))
            .collect()
    })
    .clone()
}

/// The expected outcome of every file of the corpus.
const EXPECTED: &[(&str, Status)] = &[
    (
        "coding-task-workflow-agentic.json",
        Status::ConvertedWithNotes,
    ),
    (
        "document-creation-workflow.json",
        Status::ConvertedWithNotes,
    ),
    (
        "examples/dashboard-template-workflow.json",
        Status::ConvertedWithNotes,
    ),
    (
        "examples/loops/simple-batch.json",
        Status::ConvertedWithNotes,
    ),
    (
        "examples/loops/simple-polling.json",
        Status::ConvertedWithNotes,
    ),
    (
        "examples/loops/simple-retry.json",
        Status::ConvertedWithNotes,
    ),
    (
        "examples/loops/simple-search.json",
        Status::ConvertedWithNotes,
    ),
    // Its routine (`tension-driven-design`) is not in the corpus: failed with that reason
    // (`routine_injection_expands_when_the_routine_is_imported_too` imports it with one).
    ("examples/routine-injection-example.json", Status::Failed),
    (
        "mr-review-workflow.agentic.v2.json",
        Status::ConvertedWithNotes,
    ),
    (
        "routines/context-gathering.json",
        Status::ConvertedWithNotes,
    ),
    (
        "routines/final-verification.json",
        Status::ConvertedWithNotes,
    ),
    (
        "spec-examples/adaptive-ticket-creation.json",
        Status::ConvertedWithNotes,
    ),
    (
        "spec-examples/ai-task-prompt-workflow.json",
        Status::ConvertedWithNotes,
    ),
    (
        "spec-examples/conditional-workflow-example.json",
        Status::ConvertedWithNotes,
    ),
    // WorkRail's own example of an invalid workflow.
    ("spec-examples/invalid-workflow.json", Status::Failed),
    ("spec-examples/loop-test.json", Status::ConvertedWithNotes),
    (
        "spec-examples/template-example-workflow.json",
        Status::ConvertedWithNotes,
    ),
    (
        "spec-examples/valid-workflow.json",
        Status::ConvertedWithNotes,
    ),
    (
        "test-artifact-loop-control.json",
        Status::ConvertedWithNotes,
    ),
    ("workflow-for-workflows.json", Status::ConvertedWithNotes),
    ("workflow.schema.json", Status::Skipped),
];

#[test]
fn every_corpus_file_has_its_expected_outcome() {
    let got = import_corpus();
    let summary: Vec<(String, Status)> = got
        .iter()
        .map(|(r, o)| (r.clone(), o.report.status))
        .collect();
    let want: Vec<(String, Status)> = EXPECTED.iter().map(|(f, s)| (f.to_string(), *s)).collect();
    assert_eq!(summary, want);
    for (file, o) in &got {
        let r = &o.report;
        match r.status {
            Status::Converted | Status::ConvertedWithNotes => {
                let c = r.checks.as_ref().unwrap();
                assert!(c.valid, "{file}: {:?}", c.lint_errors);
                assert!(c.lint_errors.is_empty(), "{file}: {:?}", c.lint_errors);
                assert!(c.simulated && c.simulated_steps > 0, "{file}: simulation");
                assert!(o.output.is_some());
                assert!(r.reason.is_none());
            }
            Status::Failed | Status::Skipped => {
                assert!(o.output.is_none(), "{file}");
                assert!(
                    !r.reason.as_deref().unwrap_or_default().is_empty(),
                    "{file}: a reason"
                );
            }
        }
    }
    let reason = |f: &str| {
        got.iter()
            .find(|(r, _)| r == f)
            .and_then(|(_, o)| o.report.reason.clone())
            .unwrap()
    };
    let inj = reason("examples/routine-injection-example.json");
    assert!(
        inj.contains(
            "`wr.templates.routine.tension-driven-design` is not among the imported files"
        ),
        "{inj}"
    );
    assert!(inj.contains("--routines"), "{inj}");
    let invalid = reason("spec-examples/invalid-workflow.json");
    for says in [
        "INVALID_ID_WITH_CAPS",
        "`name` is empty",
        "`steps` is empty",
        "`extraField`",
        "`clarificationPrompts` repeats",
    ] {
        assert!(invalid.contains(says), "should say {says}: {invalid}");
    }
    assert_eq!(
        reason("workflow.schema.json"),
        "a JSON Schema, not a workflow (no `steps`)"
    );
}

/// The converted files, checked by the same code as `worktrain workflow validate`, `lint`
/// and `simulate` (the CLI's own run is in tests/e2e/workflow_import.rs).
#[test]
fn converted_workflows_validate_lint_and_simulate_like_the_cli_does() {
    use worktrain_core::compile::{NoRoutines, compile_with};
    use worktrain_core::load::parse_workflow;
    use worktrain_workflow_tools::lint::{Severity, lint};
    use worktrain_workflow_tools::simulate::{Script, simulate};
    for (file, o) in import_corpus() {
        let Some(out) = &o.output else { continue };
        let def =
            parse_workflow(&out.file_name, &out.yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        let pinned = compile_with(&def, &out.file_name, &NoRoutines)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let errors: Vec<String> = lint(&pinned.workflow)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string())
            .collect();
        assert!(errors.is_empty(), "{file}: {errors:?}");
        let trace = simulate(&pinned, &Script::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(trace.completed, "{file}");
    }
}

/// WorkRail's own JSON Schema (read in place) rejects some corpus files; the report of
/// each of those says it is inconsistent (or fails), so a user learns it from the import.
#[test]
fn files_workrails_schema_rejects_are_reported_as_inconsistent() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path("workflow.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut rejected = Vec::new();
    for (file, o) in import_corpus() {
        if o.report.status == Status::Skipped {
            continue;
        }
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(path(&file)).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            continue;
        }
        rejected.push(file.clone());
        let flagged = o.report.status == Status::Failed
            || o.report
                .notes
                .iter()
                .any(|n| n.kind == NoteKind::Inconsistent);
        assert!(
            flagged,
            "{file}: WorkRail's schema rejects it ({errors:?}) but the report does not say so"
        );
    }
    // The schema does reject some of the corpus (otherwise this test checks nothing).
    assert!(rejected.len() >= 3, "{rejected:?}");
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn converted_output_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    let mut expected_files = Vec::new();
    for (file, o) in import_corpus() {
        let stem = file.trim_end_matches(".json").replace('/', "__");
        let mut report = o.report.clone();
        report.source = file.clone();
        // Lint warnings are counted, not quoted: their wording belongs to the linter.
        let mut report = serde_json::to_value(&report).unwrap();
        if let Some(w) = report.pointer_mut("/checks/lint_warnings") {
            *w = Value::from(w.as_array().map_or(0, Vec::len));
        }
        let mut pairs = vec![(
            format!("{stem}.report.json"),
            serde_json::to_string_pretty(&report).unwrap() + "\n",
        )];
        if let Some(out) = &o.output {
            pairs.push((format!("{stem}.yaml"), out.yaml.clone()));
        }
        for (name, text) in pairs {
            let p = golden_dir().join(&name);
            expected_files.push(name.clone());
            if update {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&p, &text).unwrap();
            } else if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
    }
    // No golden file without a corpus file behind it.
    let mut present: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "golden files without a corpus file (or missing)"
    );
    assert!(
        stale.is_empty(),
        "converted output differs from tests/golden for {stale:?}; review the change, then regenerate with `UPDATE_GOLDEN=1 cargo test -p worktrain-workrail`"
    );
}

#[test]
fn a_corpus_file_converts_the_same_alone_and_in_its_directory() {
    // Routines are found among the other inputs, but a file's conversion does not depend
    // on what else is imported with it.
    let text = std::fs::read_to_string(path("examples/loops/simple-search.json")).unwrap();
    let alone = import(&[Input::new("simple-search.json", text)], &[]);
    let all = import_corpus();
    let (_, in_dir) = all
        .iter()
        .find(|(f, _)| f == "examples/loops/simple-search.json")
        .unwrap();
    assert_eq!(
        alone[0].output.as_ref().unwrap().yaml,
        in_dir.output.as_ref().unwrap().yaml
    );
}
