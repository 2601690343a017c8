//! The registry of typed output contracts. A step that declares `outputContract` must
//! submit an artifact `{ "kind": <contract>, … }` that passes the contract's checks;
//! otherwise the step is blocked with precise blockers and the contract's example.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Names of the contracts worktrain knows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ContractName {
    /// `{kind: loop_control, decision: continue|stop, reason?}` — drives a loop.
    LoopControl,
    /// `{kind: review_verdict, verdict: clean|minor|blocking, findings: [...]}`.
    ReviewVerdict,
    /// `{kind: handoff, commitType, commitSubject, prTitle, prBody, filesChanged, followUps}`.
    Handoff,
    /// `{kind: assessment, dimensions: {name: level}}`.
    Assessment,
    /// `{kind: pr_review, verdict: approve|request_changes|comment, body, comments: [{path, line, side?, startLine?, body}]}`
    /// — a review to post on the pull/merge request the session came from (delivery
    /// target `review_comment`).
    PrReview,
}

impl ContractName {
    /// Every contract, for listings.
    pub const ALL: [ContractName; 5] = [
        ContractName::LoopControl,
        ContractName::ReviewVerdict,
        ContractName::Handoff,
        ContractName::Assessment,
        ContractName::PrReview,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractName::LoopControl => "loop_control",
            ContractName::ReviewVerdict => "review_verdict",
            ContractName::Handoff => "handoff",
            ContractName::Assessment => "assessment",
            ContractName::PrReview => "pr_review",
        }
    }

    /// A valid example artifact, returned with blockers so the agent sees the shape.
    pub fn example(self) -> Value {
        match self {
            ContractName::LoopControl => {
                json!({"kind": "loop_control", "decision": "stop", "reason": "all checks pass"})
            }
            ContractName::ReviewVerdict => json!({
                "kind": "review_verdict",
                "verdict": "minor",
                "summary": "One naming nit; logic is sound.",
                "findings": [{"severity": "minor", "file": "src/lib.rs", "line": 42,
                               "message": "`tmp` should say what it holds"}]
            }),
            ContractName::Handoff => json!({
                "kind": "handoff",
                "commitType": "fix",
                "commitSubject": "handle empty config files",
                "prTitle": "Handle empty config files",
                "prBody": "Empty files used to panic the loader; they now produce a clear error.",
                "filesChanged": ["src/config.rs", "tests/config.rs"],
                "followUps": ["document the error in docs/config.md"]
            }),
            ContractName::Assessment => json!({
                "kind": "assessment",
                "dimensions": {"risk": "low", "size": "small"},
                "rationale": "Touches one module with good test coverage."
            }),
            ContractName::PrReview => json!({
                "kind": "pr_review",
                "verdict": "request_changes",
                "body": "The parser is sound; two edge cases are unhandled.",
                "comments": [
                    {"path": "src/config.rs", "line": 42, "body": "An empty file panics here."},
                    {"path": "src/config.rs", "startLine": 50, "line": 55, "side": "RIGHT",
                     "body": "This block duplicates `load_env`."}
                ]
            }),
        }
    }

    /// Check an artifact against this contract. Returns every problem found.
    pub fn validate(self, artifact: &Value) -> Vec<ContractViolation> {
        let mut v = Violations::default();
        let Some(obj) = artifact.as_object() else {
            v.push("", "the artifact must be a JSON object");
            return v.0;
        };
        match self {
            ContractName::LoopControl => {
                v.one_of(obj, "decision", &["continue", "stop"]);
                v.optional_string(obj, "reason");
            }
            ContractName::ReviewVerdict => {
                v.one_of(obj, "verdict", &["clean", "minor", "blocking"]);
                v.optional_string(obj, "summary");
                match obj.get("findings") {
                    None => v.push("findings", "required: a list of findings (may be empty)"),
                    Some(Value::Array(items)) => {
                        for (i, f) in items.iter().enumerate() {
                            let at = format!("findings[{i}]");
                            let Some(f) = f.as_object() else {
                                v.push(&at, "each finding must be an object");
                                continue;
                            };
                            v.nested_one_of(
                                f,
                                &at,
                                "severity",
                                &["blocking", "major", "minor", "nit"],
                            );
                            v.nested_string(f, &at, "message");
                            if let Some(file) = f.get("file")
                                && !file.is_string()
                            {
                                v.push(&format!("{at}.file"), "must be a string path");
                            }
                            if let Some(line) = f.get("line")
                                && line.as_u64().is_none_or(|l| l < 1)
                            {
                                v.push(&format!("{at}.line"), "must be a positive integer");
                            }
                        }
                        if obj.get("verdict").and_then(Value::as_str) == Some("clean")
                            && items.iter().any(|f| {
                                f.get("severity").and_then(Value::as_str) == Some("blocking")
                            })
                        {
                            v.push(
                                "verdict",
                                "a `clean` verdict cannot carry blocking findings",
                            );
                        }
                    }
                    Some(_) => v.push("findings", "must be a list"),
                }
            }
            ContractName::Handoff => {
                v.one_of(
                    obj,
                    "commitType",
                    &[
                        "feat", "fix", "refactor", "docs", "test", "chore", "perf", "build", "ci",
                    ],
                );
                v.string(obj, "commitSubject");
                v.string(obj, "prTitle");
                v.string(obj, "prBody");
                v.string_list(obj, "filesChanged");
                if obj.contains_key("followUps") {
                    v.string_list(obj, "followUps");
                }
            }
            ContractName::Assessment => match obj.get("dimensions") {
                Some(Value::Object(dims)) if !dims.is_empty() => {
                    for (name, level) in dims {
                        if !level.is_string() {
                            v.push(&format!("dimensions.{name}"), "each level must be a string");
                        }
                    }
                }
                Some(_) => v.push("dimensions", "must be a non-empty object of name → level"),
                None => v.push("dimensions", "required: an object of name → level"),
            },
            ContractName::PrReview => {
                v.one_of(obj, "verdict", &["approve", "request_changes", "comment"]);
                v.string(obj, "body");
                match obj.get("comments") {
                    None => {}
                    Some(Value::Array(items)) => {
                        for (i, c) in items.iter().enumerate() {
                            let at = format!("comments[{i}]");
                            let Some(c) = c.as_object() else {
                                v.push(&at, "each comment must be an object {path, line, body}");
                                continue;
                            };
                            for key in c.keys() {
                                if !["path", "line", "side", "startLine", "body"]
                                    .contains(&key.as_str())
                                {
                                    v.push(
                                        &format!("{at}.{key}"),
                                        "unknown field; a comment has path, line, side, startLine and body",
                                    );
                                }
                            }
                            v.nested_string(c, &at, "path");
                            v.nested_string(c, &at, "body");
                            let line = c.get("line").and_then(Value::as_u64).filter(|l| *l >= 1);
                            if line.is_none() {
                                v.push(
                                    &format!("{at}.line"),
                                    "required: a positive integer (the line in the new file)",
                                );
                            }
                            if let Some(side) = c.get("side")
                                && !matches!(side.as_str(), Some("LEFT" | "RIGHT"))
                            {
                                v.push(
                                    &format!("{at}.side"),
                                    "must be `RIGHT` (the new file) or `LEFT` (the old file)",
                                );
                            }
                            if let Some(start) = c.get("startLine") {
                                match (start.as_u64().filter(|s| *s >= 1), line) {
                                    (None, _) => v.push(
                                        &format!("{at}.startLine"),
                                        "must be a positive integer (the first line of the range)",
                                    ),
                                    (Some(s), Some(l)) if s >= l => v.push(
                                        &format!("{at}.startLine"),
                                        "must be less than `line` (a range runs from startLine to line)",
                                    ),
                                    (Some(_), _) => {}
                                }
                            }
                        }
                    }
                    Some(_) => v.push("comments", "must be a list of {path, line, body}"),
                }
            }
        }
        v.0
    }
}

impl fmt::Display for ContractName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractViolation {
    /// Where in the artifact (`findings[2].severity`); empty for the whole artifact.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

#[derive(Default)]
struct Violations(Vec<ContractViolation>);

impl Violations {
    fn push(&mut self, path: &str, message: &str) {
        self.0.push(ContractViolation {
            path: path.to_owned(),
            message: message.to_owned(),
        });
    }

    fn one_of(&mut self, obj: &Map<String, Value>, key: &str, allowed: &[&str]) {
        self.nested_one_of(obj, "", key, allowed)
    }

    fn nested_one_of(&mut self, obj: &Map<String, Value>, at: &str, key: &str, allowed: &[&str]) {
        let path = join_path(at, key);
        match obj.get(key).and_then(Value::as_str) {
            Some(s) if allowed.contains(&s) => {}
            Some(s) => self.push(
                &path,
                &format!("`{s}` is not one of: {}", allowed.join(", ")),
            ),
            None => self.push(&path, &format!("required: one of {}", allowed.join(", "))),
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str) {
        self.nested_string(obj, "", key)
    }

    fn nested_string(&mut self, obj: &Map<String, Value>, at: &str, key: &str) {
        match obj.get(key).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => {}
            _ => self.push(&join_path(at, key), "required: a non-empty string"),
        }
    }

    fn optional_string(&mut self, obj: &Map<String, Value>, key: &str) {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            self.push(key, "must be a string");
        }
    }

    fn string_list(&mut self, obj: &Map<String, Value>, key: &str) {
        match obj.get(key) {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            _ => self.push(key, "required: a list of strings"),
        }
    }
}

fn join_path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_satisfy_their_contracts() {
        for c in ContractName::ALL {
            assert_eq!(c.validate(&c.example()), vec![], "{c}");
        }
    }

    #[test]
    fn pr_review_problems_name_the_field() {
        let c = ContractName::PrReview;
        let paths =
            |v: Value| -> Vec<String> { c.validate(&v).into_iter().map(|p| p.path).collect() };
        assert_eq!(
            paths(json!({"kind": "pr_review", "verdict": "lgtm", "body": ""})),
            vec!["verdict", "body"]
        );
        assert_eq!(
            paths(
                json!({"kind": "pr_review", "verdict": "comment", "body": "b",
                         "comments": [{"path": "a.rs", "line": 0, "body": "x"},
                                      {"path": "a.rs", "line": 3, "side": "right", "body": "x"},
                                      {"path": "a.rs", "line": 3, "startLine": 5, "body": "x"},
                                      {"line": 3, "body": "x", "position": 4},
                                      "not an object"]})
            ),
            vec![
                "comments[0].line",
                "comments[1].side",
                "comments[2].startLine",
                "comments[3].position",
                "comments[3].path",
                "comments[4]"
            ]
        );
        assert_eq!(
            paths(json!({"kind": "pr_review", "verdict": "approve", "body": "b", "comments": {}})),
            vec!["comments"]
        );
        // Comments are optional; a range runs upwards.
        assert!(paths(json!({"kind": "pr_review", "verdict": "approve", "body": "ok"})).is_empty());
        assert!(
            paths(json!({"kind": "pr_review", "verdict": "comment", "body": "b",
                         "comments": [{"path": "a.rs", "startLine": 2, "line": 4, "side": "LEFT", "body": "x"}]}))
            .is_empty()
        );
    }

    #[test]
    fn violations_name_the_path() {
        let bad = json!({"kind": "review_verdict", "verdict": "clean",
            "findings": [{"severity": "blocking", "message": "x", "line": 0}]});
        let v = ContractName::ReviewVerdict.validate(&bad);
        let paths: Vec<_> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["findings[0].line", "verdict"]);
        let v = ContractName::LoopControl.validate(&json!({"decision": "maybe"}));
        assert_eq!(v[0].path, "decision");
        assert!(v[0].message.contains("continue, stop"));
        assert_eq!(ContractName::Handoff.validate(&json!([])).len(), 1);
    }
}
