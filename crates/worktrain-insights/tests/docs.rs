//! Every example in docs/insights.md loads.

#![allow(clippy::unwrap_used)]

use worktrain_insights::config::InsightsConfig;
use worktrain_insights::detect::{DetectorId, Thresholds};
use worktrain_insights::eval::parse_labels;

fn blocks(lang: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/insights.md"
    ))
    .unwrap();
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = doc.as_str();
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let end = body.find("```").unwrap();
        out.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn yaml_examples_load() {
    let yaml = blocks("yaml");
    assert!(!yaml.is_empty());
    for y in yaml {
        let c = InsightsConfig::from_yaml(&y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        assert_eq!(c.thresholds.repeated_call_min, 4);
        assert_eq!(c.thresholds.disabled, vec![DetectorId::EmptyTurn]);
        assert_eq!(c.min_sessions, 3);
        // The keys not set keep their documented defaults.
        assert_eq!(c.thresholds.spiral_min, Thresholds::default().spiral_min);
    }
}

#[test]
fn csv_examples_load() {
    let csv = blocks("csv");
    assert!(!csv.is_empty());
    for c in csv {
        let labels = parse_labels("docs/insights.md", &c).unwrap();
        assert_eq!(labels.len(), 2);
    }
}
