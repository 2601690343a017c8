//! Every YAML example in the documentation loads, so a documented setup can never be
//! one the loader rejects. A block says what it is with an HTML comment right before it
//! (`<!-- example: KIND -->`, invisible when rendered); without one it must be a whole
//! file whose kind shows: a workflow or routine (`schemaVersion:`), a triggers.yml
//! (`triggers:`), or a `config.yaml` (a `# config.yaml` comment first, or only config
//! sections at the top).
//!
//! Kinds: `config`, `workflow`, `routine`, `steps` (a step list), `step-fields` (fields of
//! one step; a block repeating a key lists alternatives, one per line),
//! `command-profile-fields` (fields of a `kind: command` agent profile), `triggers` (a
//! whole triggers.yml; found by its `triggers:` key), `contract-fields`
//! (fields of an assessment output contract), `conditions` (one condition per line),
//! `insights` (an insights.yaml).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use worktrain_core::condition::Condition;

/// One fenced YAML block: where it is, what it claims to be, its text.
struct Example {
    at: String,
    kind: Option<String>,
    text: String,
}

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"));
    out.sort();
    out
}

fn examples(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).expect("doc");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start() == "```yaml" {
            let kind = i
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("<!-- example:"))
                .and_then(|k| k.strip_suffix("-->"))
                .map(|k| k.trim().to_owned());
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].trim_start().starts_with("```") {
                end += 1;
            }
            out.push(Example {
                at: format!("docs/{name}:{}", i + 1),
                kind,
                text: lines[start..end].join("\n") + "\n",
            });
            i = end;
        }
        i += 1;
    }
    out
}

const CONFIG_SECTIONS: [&str; 4] = ["store", "limits", "daemon", "agents"];

fn looks_like_config(text: &str) -> bool {
    if text.trim_start().starts_with("# config.yaml") {
        return true;
    }
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(':').next())
        .collect();
    !top.is_empty() && top.iter().all(|k| CONFIG_SECTIONS.contains(k))
}

/// Compile `doc` as a workflow file through the catalog (bundled routines resolve). A
/// fragment may jump to steps of the workflow it came from: those are stubbed in front.
fn compile_workflow(at: &str, doc: &Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("example.json");
    let mut doc = doc.clone();
    for _ in 0..8 {
        std::fs::write(&file, doc.to_string()).expect("write");
        match worktrain_engine::Catalog::new(None, None).resolve(file.to_str().expect("utf-8")) {
            Ok(_) => return,
            Err(e) => {
                let missing = e
                    .message
                    .split_once("jump target `")
                    .and_then(|(_, rest)| rest.split_once('`'))
                    .map(|(id, _)| id.to_owned());
                match (missing, doc["steps"].as_array_mut()) {
                    (Some(id), Some(steps)) => steps.insert(0, step(json!({"id": id}))),
                    _ => panic!("{at}: the example does not compile: {e}\n{doc:#}"),
                }
            }
        }
    }
    panic!("{at}: the example does not compile\n{doc:#}");
}

fn workflow_with_steps(steps: Value) -> Value {
    json!({"schemaVersion": 2, "id": "doc-example", "name": "Doc example",
           "description": "d", "version": "1", "steps": steps})
}

fn yaml(at: &str, text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{at}: not YAML: {e}\n{text}"))
}

/// Give every plain step of a fragment (not a loop or an include) a title and a prompt
/// when it shows none.
fn fill_step_defaults(steps: &mut Value) {
    for s in steps.as_array_mut().into_iter().flatten() {
        if !s.is_object() {
            continue;
        }
        if let Some(inner) = s.get_mut("steps") {
            fill_step_defaults(inner);
        }
        if s.get("include").is_some() || s.get("loop").is_some() {
            continue;
        }
        if s.get("title").is_none() {
            s["title"] = json!("Example");
        }
        if s.get("prompt").is_none() {
            s["prompt"] = json!("Do it.");
        }
    }
}

fn step(fields: Value) -> Value {
    let mut s = json!({"id": "example", "title": "Example", "prompt": "Do it."});
    for (k, v) in fields.as_object().expect("a map of step fields") {
        s[k] = v.clone();
    }
    s
}

/// The alternatives of a `step-fields` block: the whole block, or — when it repeats a
/// key — each line on its own.
fn field_sets(at: &str, text: &str) -> Vec<Value> {
    match serde_norway::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| yaml(at, l))
            .collect(),
    }
}

fn check(e: &Example) {
    let kind = e.kind.clone().unwrap_or_else(|| {
        let top = |key: &str| e.text.lines().any(|l| l.starts_with(key));
        if top("triggers:") {
            return "triggers".into();
        }
        if top("schemaVersion:") && top("routine:") {
            return "routine".into();
        }
        if top("schemaVersion:") && top("steps:") {
            return "workflow".into();
        }
        assert!(
            looks_like_config(&e.text),
            "{}: a yaml block without `<!-- example: KIND -->` before it must be a whole config.yaml\n{}",
            e.at,
            e.text
        );
        "config".into()
    });
    match kind.as_str() {
        "config" => {
            worktrain_config::parse_config(Path::new(&e.at), &e.text).unwrap_or_else(|err| {
                panic!("{}: config.yaml example rejected: {err}\n{}", e.at, e.text)
            });
        }
        "workflow" => {
            worktrain_core::load::parse_workflow("example.yaml", &e.text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.at));
            compile_workflow(&e.at, &yaml(&e.at, &e.text));
        }
        "routine" => {
            worktrain_core::load::parse_routine("example.yaml", &e.text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.at));
        }
        "steps" => {
            // Fragments show the fields that matter; a title and prompt are filled in.
            let mut steps = yaml(&e.at, &e.text);
            fill_step_defaults(&mut steps);
            compile_workflow(&e.at, &workflow_with_steps(steps));
        }
        "step-fields" => {
            for fields in field_sets(&e.at, &e.text) {
                compile_workflow(&e.at, &workflow_with_steps(json!([step(fields)])));
            }
        }
        "contract-fields" => {
            let mut contract = json!({"contract": "assessment"});
            for (k, v) in yaml(&e.at, &e.text).as_object().expect("a map") {
                contract[k] = v.clone();
            }
            compile_workflow(
                &e.at,
                &workflow_with_steps(json!([step(json!({"outputContract": contract}))])),
            );
        }
        "command-profile-fields" => {
            let mut config =
                String::from("agents:\n  example:\n    kind: command\n    program: example\n");
            for line in e.text.lines() {
                config.push_str("    ");
                config.push_str(line);
                config.push('\n');
            }
            worktrain_config::parse_config(Path::new(&e.at), &config)
                .unwrap_or_else(|err| panic!("{}: profile fields rejected: {err}\n{config}", e.at));
        }
        "triggers" => {
            // `$VAR` secrets resolve from the environment; give every one named a value.
            let mut vars = std::collections::BTreeMap::new();
            for piece in e.text.split('$').skip(1) {
                let name: String = piece
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.ends_with("_URL") {
                    // Webhook URLs of notifiers must be URLs.
                    vars.insert(name, "https://hooks.example.com/T000/B000".to_owned());
                } else if !name.is_empty() {
                    vars.insert(name, "example-secret-value".to_owned());
                }
            }
            worktrain_triggers::config::load(
                &e.at,
                &e.text,
                &worktrain_triggers::env::EnvSource::Map(vars),
            )
            .unwrap_or_else(|err| {
                panic!("{}: triggers.yml example rejected: {err}\n{}", e.at, e.text)
            });
        }
        "insights" => {
            worktrain_insights::config::InsightsConfig::from_yaml(&e.text).unwrap_or_else(|err| {
                panic!(
                    "{}: insights.yaml example rejected: {err}\n{}",
                    e.at, e.text
                )
            });
        }
        "conditions" => {
            for line in e.text.lines().filter(|l| !l.trim().is_empty()) {
                serde_norway::from_str::<Condition>(line)
                    .unwrap_or_else(|err| panic!("{}: not a condition: {line}: {err}", e.at));
            }
        }
        other => panic!("{}: unknown example kind `{other}`", e.at),
    }
}

#[test]
fn every_yaml_example_in_the_docs_loads() {
    let mut checked = 0;
    for doc in docs() {
        for e in examples(&doc) {
            check(&e);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} examples found");
}
