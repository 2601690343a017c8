//! Dispatch conditions: `all` / `any` / `not` over tests of JSONPath queries into the
//! payload — `equals`, `in`, `matches` (regex), `exists`. Values are compared by type
//! (`5` is not `"5"`). A query that can select several nodes (`$.issue.labels[*].name`)
//! passes a test when any node does. A failed condition says which test failed and the
//! value it saw, so a filtered event explains itself.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::expr::{JsonPathExpr, Pattern};

/// A test on the nodes a query selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Equal, same type.
    Equals(Value),
    /// Equal to one of these, same type.
    In(Vec<Value>),
    /// A string matching the regular expression.
    Matches(Pattern),
    /// The query selects something (`true`) or nothing (`false`).
    Exists(bool),
}

/// A dispatch condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// A test on a query.
    Test {
        /// The JSONPath query whose matches are tested.
        path: JsonPathExpr,
        /// The test applied to what the query matched.
        test: Test,
    },
}

/// Why a condition did not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    /// The test that failed, rendered (`$.label.name equals "worktrain"`).
    pub condition: String,
    /// What the query selected (`null` when nothing; an array for multi-node queries).
    pub seen: Value,
    /// Whether the query selected nothing.
    pub missing: bool,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.missing {
            write!(
                f,
                "{} failed: the path is absent from the payload",
                self.condition
            )
        } else {
            write!(f, "{} failed: saw {}", self.condition, self.seen)
        }
    }
}

fn render_test(path: &JsonPathExpr, test: &Test) -> String {
    match test {
        Test::Equals(v) => format!("{path} equals {v}"),
        Test::In(vs) => format!("{path} in {}", Value::Array(vs.clone())),
        Test::Matches(p) => format!("{path} matches /{}/", p.as_str()),
        Test::Exists(true) => format!("{path} exists"),
        Test::Exists(false) => format!("{path} does not exist"),
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, cs: &[Condition]| {
            write!(f, "{name}(")?;
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str(")")
        };
        match self {
            Condition::All(cs) => list(f, "all", cs),
            Condition::Any(cs) => list(f, "any", cs),
            Condition::Not(c) => write!(f, "not({c})"),
            Condition::Test { path, test } => f.write_str(&render_test(path, test)),
        }
    }
}

fn test_one(test: &Test, v: &Value) -> bool {
    match test {
        Test::Equals(want) => v == want,
        Test::In(set) => set.contains(v),
        Test::Matches(p) => v.as_str().is_some_and(|s| p.is_match(s)),
        Test::Exists(_) => true,
    }
}

impl Condition {
    /// Evaluate against `payload`; `Err` names the first test that failed.
    pub fn eval(&self, payload: &Value) -> Result<(), Failed> {
        match self {
            Condition::All(cs) => cs.iter().try_for_each(|c| c.eval(payload)),
            Condition::Any(cs) => {
                let mut failures = Vec::new();
                for c in cs {
                    match c.eval(payload) {
                        Ok(()) => return Ok(()),
                        Err(f) => failures.push(f),
                    }
                }
                if failures.len() == 1 {
                    return Err(failures.remove(0));
                }
                Err(Failed {
                    condition: self.to_string(),
                    seen: Value::Array(
                        failures
                            .iter()
                            .map(|f| json!({"condition": f.condition, "seen": f.seen}))
                            .collect(),
                    ),
                    missing: false,
                })
            }
            Condition::Not(c) => match c.eval(payload) {
                Err(_) => Ok(()),
                Ok(()) => Err(Failed {
                    condition: self.to_string(),
                    seen: seen_of(c, payload),
                    missing: false,
                }),
            },
            Condition::Test { path, test } => {
                let nodes = path.query(payload);
                let seen = if path.is_singular() {
                    nodes.first().map(|v| (*v).clone()).unwrap_or(Value::Null)
                } else {
                    Value::Array(nodes.iter().map(|v| (*v).clone()).collect())
                };
                let ok = match test {
                    Test::Exists(want) => nodes.is_empty() != *want,
                    other => nodes.iter().any(|v| test_one(other, v)),
                };
                if ok {
                    Ok(())
                } else {
                    Err(Failed {
                        condition: render_test(path, test),
                        missing: nodes.is_empty(),
                        seen,
                    })
                }
            }
        }
    }
}

fn seen_of(c: &Condition, payload: &Value) -> Value {
    match c {
        Condition::Test { path, .. } => path.extract(payload).unwrap_or(Value::Null),
        Condition::All(_) | Condition::Any(_) | Condition::Not(_) => Value::Null,
    }
}

const KEYS: &[&str] = &[
    "all", "any", "not", "path", "equals", "in", "matches", "exists",
];

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition: `{all: [...]}`, `{any: [...]}`, `{not: {...}}` or `{path: $.x, equals|in|matches|exists: ...}`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
                let mut combinator: Option<Condition> = None;
                let mut path: Option<JsonPathExpr> = None;
                let mut test: Option<Test> = None;
                let mut keys = 0;
                while let Some(key) = map.next_key::<String>()? {
                    keys += 1;
                    let set_test = |t: &mut Option<Test>, v: Test| {
                        if t.is_some() {
                            return Err(de::Error::custom(
                                "a test has exactly one of `equals`, `in`, `matches`, `exists`",
                            ));
                        }
                        *t = Some(v);
                        Ok(())
                    };
                    match key.as_str() {
                        "all" => combinator = Some(Condition::All(map.next_value()?)),
                        "any" => combinator = Some(Condition::Any(map.next_value()?)),
                        "not" => combinator = Some(Condition::Not(Box::new(map.next_value()?))),
                        "path" => path = Some(map.next_value()?),
                        "equals" => set_test(&mut test, Test::Equals(map.next_value()?))?,
                        "in" => set_test(&mut test, Test::In(map.next_value()?))?,
                        "matches" => set_test(&mut test, Test::Matches(map.next_value()?))?,
                        "exists" => set_test(&mut test, Test::Exists(map.next_value()?))?,
                        other => return Err(de::Error::unknown_field(other, KEYS)),
                    }
                }
                match (combinator, path, test) {
                    (Some(c), None, None) if keys == 1 => Ok(c),
                    (Some(_), _, _) => Err(de::Error::custom(
                        "`all`, `any` and `not` stand alone: put other tests inside them",
                    )),
                    (None, Some(path), Some(test)) => Ok(Condition::Test { path, test }),
                    (None, Some(_), None) => Err(de::Error::custom(
                        "a test on `path` needs one of `equals`, `in`, `matches`, `exists`",
                    )),
                    (None, None, Some(_)) => Err(de::Error::custom(
                        "a test needs `path` (a JSONPath query such as `$.issue.title`)",
                    )),
                    (None, None, None) => Err(de::Error::custom("an empty condition")),
                }
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = match self {
            Condition::All(cs) => json!({ "all": cs }),
            Condition::Any(cs) => json!({ "any": cs }),
            Condition::Not(c) => json!({ "not": c }),
            Condition::Test { path, test } => {
                let (k, v) = match test {
                    Test::Equals(v) => ("equals", v.clone()),
                    Test::In(vs) => ("in", Value::Array(vs.clone())),
                    Test::Matches(p) => ("matches", Value::String(p.as_str().to_owned())),
                    Test::Exists(b) => ("exists", Value::Bool(*b)),
                };
                json!({ "path": path.as_str(), k: v })
            }
        };
        v.serialize(s)
    }
}

impl schemars::JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TriggerCondition".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let me = "#/$defs/TriggerCondition";
        let path = json!({"type": "string", "pattern": "^\\$"});
        let test = |k: &str, v: Value| {
            json!({"type": "object", "additionalProperties": false,
                   "required": ["path", k], "properties": {"path": path, k: v}})
        };
        schemars::Schema::try_from(json!({
            "description": "A dispatch condition over the event payload.",
            "oneOf": [
                {"type": "object", "additionalProperties": false, "required": ["all"],
                 "properties": {"all": {"type": "array", "items": {"$ref": me}}}},
                {"type": "object", "additionalProperties": false, "required": ["any"],
                 "properties": {"any": {"type": "array", "items": {"$ref": me}}}},
                {"type": "object", "additionalProperties": false, "required": ["not"],
                 "properties": {"not": {"$ref": me}}},
                test("equals", json!({})),
                test("in", json!({"type": "array"})),
                test("matches", json!({"type": "string"})),
                test("exists", json!({"type": "boolean"})),
            ]
        }))
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(yaml: &str) -> Condition {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn all_any_not_and_types() {
        let payload = json!({"action": "labeled", "label": {"name": "worktrain"},
            "issue": {"number": 5, "labels": [{"name": "bug"}, {"name": "worktrain"}], "title": "WIP: x"}});
        assert!(
            cond("{path: $.label.name, equals: worktrain}")
                .eval(&payload)
                .is_ok()
        );
        // Compared by type: 5 is not "5".
        let f = cond("{path: $.issue.number, equals: '5'}")
            .eval(&payload)
            .unwrap_err();
        assert_eq!(f.seen, json!(5));
        assert!(
            cond("{path: $.issue.number, in: [4, 5]}")
                .eval(&payload)
                .is_ok()
        );
        assert!(
            cond("{path: '$.issue.labels[*].name', equals: bug}")
                .eval(&payload)
                .is_ok()
        );
        let f = cond("{not: {path: $.issue.title, matches: '^WIP'}}")
            .eval(&payload)
            .unwrap_err();
        assert!(f.condition.starts_with("not("), "{f}");
        assert!(
            cond("{path: $.issue.assignee, exists: false}")
                .eval(&payload)
                .is_ok()
        );
        let f = cond("{path: $.issue.assignee, exists: true}")
            .eval(&payload)
            .unwrap_err();
        assert!(f.missing);
        let c = cond(
            "all: [{path: $.action, equals: labeled}, {any: [{path: $.label.name, equals: a}, {path: $.label.name, equals: b}]}]",
        );
        let f = c.eval(&payload).unwrap_err();
        assert!(f.condition.starts_with("any("), "{f}");
        assert!(f.to_string().contains("worktrain"), "{f}");
        // matches needs a string.
        assert!(
            cond("{path: $.issue.number, matches: '5'}")
                .eval(&payload)
                .is_err()
        );
    }

    #[test]
    fn malformed_conditions_are_rejected() {
        for bad in [
            "{path: $.a}",
            "{equals: 1}",
            "{path: $.a, equals: 1, in: [1]}",
            "{all: [], path: $.a}",
            "{path: $.a, equal: 1}",
            "{path: 'a.b', equals: 1}",
            "{path: $.a, matches: '('}",
            "{}",
        ] {
            assert!(serde_norway::from_str::<Condition>(bad).is_err(), "{bad}");
        }
        let e = serde_norway::from_str::<Condition>("{path: $.a, equal: 1}").unwrap_err();
        assert!(e.to_string().contains("unknown field `equal`"), "{e}");
    }

    #[test]
    fn serialises_back_to_the_same_shape() {
        let c = cond("all: [{path: $.a, in: [1, '1']}, {not: {path: $.b, exists: true}}]");
        let back: Condition = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
