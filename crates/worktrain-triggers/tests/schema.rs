//! `spec/triggers.schema.json` is generated from the loader's types; the committed file
//! must match, and `triggers.example.yml` (every provider, commented) must both load with
//! the loader and validate against the schema with an independent validator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;
use worktrain_triggers::config::{Source, load};
use worktrain_triggers::env::EnvSource;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn committed() -> Value {
    let text = std::fs::read_to_string(repo().join("spec/triggers.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The variables the example refers to, with made-up values.
pub fn example_env() -> EnvSource {
    EnvSource::Map(
        [
            ("GITHUB_WEBHOOK_SECRET", "gh-secret"),
            ("GITLAB_WEBHOOK_TOKEN", "gl-token"),
            (
                "GITLAB_SIGNING_TOKEN",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("DEPLOY_HOOK_SECRET", "hook-secret"),
            ("GITHUB_TOKEN", "ghp_example"),
            (
                "GITHUB_APP_PRIVATE_KEY",
                "-----BEGIN RSA PRIVATE KEY-----\n…\n-----END RSA PRIVATE KEY-----",
            ),
            ("GITLAB_TOKEN", "glpat-example"),
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T000/B000/XXXX",
            ),
            ("OPS_WEBHOOK_SECRET", "ops-hook-secret"),
            ("HOME", "/home/me"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

#[test]
fn committed_schema_matches_the_types() {
    assert!(
        worktrain_triggers::schema::json_schema() == committed(),
        "spec/triggers.schema.json is stale: regenerate it with `worktrain trigger schema > spec/triggers.schema.json`"
    );
}

#[test]
fn the_example_loads_validates_and_shows_every_provider() {
    let path = repo().join("triggers.example.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let index =
        load("triggers.example.yml", &text, &example_env()).unwrap_or_else(|e| panic!("{e}"));
    let mut providers: Vec<&str> = index
        .triggers
        .values()
        .map(|t| t.source.provider())
        .collect();
    providers.sort();
    providers.dedup();
    assert_eq!(
        providers,
        [
            "github_poll",
            "github_webhook",
            "gitlab_poll",
            "gitlab_webhook",
            "schedule",
            "webhook"
        ]
    );
    assert!(
        index
            .triggers
            .values()
            .any(|t| matches!(t.source, Source::Schedule(_)))
    );
    let doc: Value = serde_norway::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&committed()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn schema_and_loader_agree_on_broken_files() {
    let validator = jsonschema::validator_for(&committed()).unwrap();
    let base = "version: 1\ntriggers:\n  - id: a\n    workflow: w\n    goal: g\n    source:\n      webhook: {secret: s}\n";
    assert!(validator.is_valid(&serde_norway::from_str::<Value>(base).unwrap()));
    load("t.yml", base, &EnvSource::Map(Default::default())).unwrap();
    for bad in [
        base.replace("webhook: {secret: s}", "webhok: {secret: s}"),
        base.replace("{secret: s}", "{secret: s, colour: red}"),
        base.replace("    goal: g\n", "    goal: g\n    colour: red\n"),
        base.replace("version: 1\n", "version: 1\nextra: true\n"),
        base.replace("workflow: w", "workflow: [w]"),
    ] {
        let doc: Value = serde_norway::from_str(&bad).unwrap();
        assert!(!validator.is_valid(&doc), "schema accepted: {bad}");
        assert!(
            load("t.yml", &bad, &EnvSource::Map(Default::default())).is_err(),
            "loader accepted: {bad}"
        );
    }
}

/// Every YAML example in docs/triggers.md is a complete file the loader accepts.
#[test]
fn every_yaml_example_in_the_docs_loads() {
    let text = std::fs::read_to_string(repo().join("docs/triggers.md")).unwrap();
    let mut found = 0;
    for block in text.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap();
        found += 1;
        load("docs/triggers.md", yaml, &example_env()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    assert!(found >= 4, "{found} examples");
}
