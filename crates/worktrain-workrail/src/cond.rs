//! WorkRail conditions → worktrain conditions.
//!
//! WorkRail evaluates a condition object by precedence, not by shape: with `var`, the
//! first present operator of `equals`, `not_equals`, `gt`, `gte`, `lt`, `lte`, `in`,
//! `contains` wins (further operators are ignored), and `var` alone tests truthiness;
//! without `var`, `and`, then `or`, then `not`. `equals`, `not_equals`, `in` and `contains`
//! compare leniently (worktrain's `lenient: true` has the same semantics); numeric
//! comparisons need a number. A missing or empty condition always holds; a malformed one
//! (an unknown shape anywhere inside) makes WorkRail evaluate the whole condition to false.

use serde_json::{Map, Value};
use worktrain_core::condition::{CompareOp, Condition, ContextPath};

use crate::report::{NoteKind, Notes};

/// A converted condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Always holds (absent, `null` or `{}`).
    Always,
    /// Never holds (WorkRail evaluates it to false).
    Never,
    /// A real condition.
    Is(Condition),
}

impl Cond {
    /// The condition, with `Always`/`Never` written as conditions on a path that always
    /// exists in worktrain's scope (`worktrain.loops`).
    pub fn into_condition(self) -> Option<Condition> {
        match self {
            Cond::Always => None,
            Cond::Never => Some(constant(false)),
            Cond::Is(c) => Some(c),
        }
    }

    /// Like [`Cond::into_condition`], but `Always` is written out too (for fragments,
    /// whose `when` is required).
    pub fn into_explicit(self) -> Condition {
        match self {
            Cond::Always => constant(true),
            Cond::Never => constant(false),
            Cond::Is(c) => c,
        }
    }

    /// `self and other`.
    pub fn and(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::Never, _) | (_, Cond::Never) => Cond::Never,
            (Cond::Always, x) | (x, Cond::Always) => x,
            (Cond::Is(a), Cond::Is(b)) => Cond::Is(Condition::And(vec![a, b])),
        }
    }

    /// `not self`.
    pub fn negate(self) -> Cond {
        match self {
            Cond::Always => Cond::Never,
            Cond::Never => Cond::Always,
            Cond::Is(c) => Cond::Is(Condition::Not(Box::new(c))),
        }
    }
}

/// A condition that is constantly `holds`: `worktrain.loops` always exists in a step's scope.
pub fn constant(holds: bool) -> Condition {
    Condition::Compare {
        var: path("worktrain.loops"),
        op: CompareOp::Exists(holds),
        lenient: false,
    }
}

/// A literal path (never input).
#[allow(clippy::expect_used)]
fn path(p: &str) -> ContextPath {
    ContextPath::parse(p).expect("literal context paths are valid")
}

/// Names visible in a loop body that worktrain spells differently.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The enclosing loop's iteration variable and the worktrain path it becomes
    /// (`currentIteration` → `worktrain.loops.<loop>.pass`).
    pub iteration: Option<(String, String)>,
}

impl Scope {
    /// The worktrain path for a WorkRail variable name.
    pub fn rename(&self, var: &str) -> String {
        match &self.iteration {
            Some((name, to)) if name == var => to.clone(),
            _ => var.to_owned(),
        }
    }
}

/// Why a condition cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconvertible(pub String);

/// Convert the condition at `at` (a document path, for notes).
pub fn convert(
    v: Option<&Value>,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Cond, Unconvertible> {
    let Some(v) = v else {
        return Ok(Cond::Always);
    };
    match v {
        Value::Null => Ok(Cond::Always),
        Value::Object(m) if m.is_empty() => Ok(Cond::Always),
        Value::Object(m) => match node(m, at, scope, notes)? {
            Some(c) => Ok(c),
            None => {
                notes.add(
                    NoteKind::Inconsistent,
                    at,
                    "this condition has no `var`, `and`, `or` or `not` somewhere inside: WorkRail evaluates it to false, and so does the converted workflow",
                );
                Ok(Cond::Never)
            }
        },
        _ => {
            // evaluateCondition treats a non-object as "no condition".
            notes.add(
                NoteKind::Inconsistent,
                at,
                format!(
                    "a condition must be an object, got {v}; WorkRail treats it as no condition"
                ),
            );
            Ok(Cond::Always)
        }
    }
}

/// Convert one node; `None` when WorkRail's evaluator would throw (an invalid shape).
fn node(
    m: &Map<String, Value>,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Option<Cond>, Unconvertible> {
    if let Some(var) = m.get("var") {
        let Some(var) = var.as_str() else {
            return Ok(None);
        };
        return compare(var, m, at, scope, notes).map(Some);
    }
    if let Some(list) = m.get("and") {
        return combine(list, true, at, scope, notes);
    }
    if let Some(list) = m.get("or") {
        return combine(list, false, at, scope, notes);
    }
    if let Some(inner) = m.get("not") {
        let Some(inner) = inner.as_object() else {
            return Ok(None);
        };
        return Ok(node(inner, &format!("{at}.not"), scope, notes)?.map(Cond::negate));
    }
    Ok(None)
}

fn combine(
    list: &Value,
    all: bool,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Option<Cond>, Unconvertible> {
    let name = if all { "and" } else { "or" };
    let Some(items) = list.as_array() else {
        return Ok(None);
    };
    let mut parts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Ok(None);
        };
        match node(obj, &format!("{at}.{name}[{i}]"), scope, notes)? {
            None => return Ok(None),
            Some(c) => parts.push(c),
        }
    }
    // JavaScript's every/some: an empty `and` holds, an empty `or` does not.
    let mut real = Vec::new();
    for p in parts {
        match (p, all) {
            (Cond::Always, true) | (Cond::Never, false) => {}
            (Cond::Never, true) => return Ok(Some(Cond::Never)),
            (Cond::Always, false) => return Ok(Some(Cond::Always)),
            (Cond::Is(c), _) => real.push(c),
        }
    }
    Ok(Some(match (real.len(), all) {
        (0, true) => Cond::Always,
        (0, false) => Cond::Never,
        (1, _) => Cond::Is(real.remove(0)),
        (_, true) => Cond::Is(Condition::And(real)),
        (_, false) => Cond::Is(Condition::Or(real)),
    }))
}

/// The operators WorkRail checks with `var`, in its order of precedence.
const PRECEDENCE: &[&str] = &[
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
];

fn compare(
    var: &str,
    m: &Map<String, Value>,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Cond, Unconvertible> {
    let renamed = scope.rename(var);
    if renamed == var && var.contains('.') {
        notes.add(
            NoteKind::Differs,
            at,
            format!(
                "`var: {var}` is a dotted path in worktrain (it reads `{}` inside `{}`); WorkRail reads a context key literally named `{var}`",
                var.rsplit_once('.').map(|(_, l)| l).unwrap_or(var),
                var.rsplit_once('.').map(|(r, _)| r).unwrap_or(var)
            ),
        );
    }
    let path = ContextPath::parse(&renamed).map_err(|e| {
        Unconvertible(format!(
            "{at}: {e}; rename the context key in the WorkRail workflow, then import again"
        ))
    })?;
    // `equals`/`not_equals` count when present (even `null`); the others when not null.
    let present = |k: &str| match k {
        "equals" | "not_equals" => m.contains_key(k),
        _ => m.get(k).is_some_and(|v| !v.is_null()),
    };
    let chosen = PRECEDENCE.iter().copied().find(|k| present(k));
    let ignored: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "var" && Some(*k) != chosen)
        .collect();
    if !ignored.is_empty() {
        notes.add(
            NoteKind::Inconsistent,
            at,
            format!(
                "WorkRail ignores {} here ({}); so does the converted condition",
                ignored
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match chosen {
                    Some(op) => format!("`{op}` takes precedence"),
                    None => "with only `var`, the condition tests truthiness".to_owned(),
                }
            ),
        );
    }
    let value = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    let cmp = |op: CompareOp, lenient: bool| {
        Cond::Is(Condition::Compare {
            var: path.clone(),
            op,
            lenient,
        })
    };
    let number = |k: &str| -> Result<f64, Unconvertible> {
        value(k).as_f64().ok_or_else(|| {
            Unconvertible(format!(
                "{at}: `{k}` needs a number, got {}; WorkRail's schema requires one",
                value(k)
            ))
        })
    };
    Ok(match chosen {
        Some("equals") => cmp(CompareOp::Equals(value("equals")), true),
        Some("not_equals") => cmp(CompareOp::NotEquals(value("not_equals")), true),
        Some("gt") => cmp(CompareOp::Gt(number("gt")?), false),
        Some("gte") => cmp(CompareOp::Gte(number("gte")?), false),
        Some("lt") => cmp(CompareOp::Lt(number("lt")?), false),
        Some("lte") => cmp(CompareOp::Lte(number("lte")?), false),
        Some("in") => match value("in") {
            Value::Array(xs) => cmp(CompareOp::In(xs), true),
            other => {
                return Err(Unconvertible(format!(
                    "{at}: `in` needs an array, got {other}"
                )));
            }
        },
        Some("contains") => cmp(CompareOp::Contains(value("contains")), true),
        Some(op) => {
            return Err(Unconvertible(format!(
                "{at}: the operator `{op}` has no worktrain equivalent (and is not in WorkRail's workflow schema); rewrite it with equals/in/contains"
            )));
        }
        // JavaScript truthiness: set, and not false, 0 or "".
        None => Cond::Is(Condition::And(vec![
            Condition::Compare {
                var: path.clone(),
                op: CompareOp::Exists(true),
                lenient: false,
            },
            Condition::Compare {
                var: path.clone(),
                op: CompareOp::NotEquals(Value::Bool(false)),
                lenient: false,
            },
            Condition::Compare {
                var: path.clone(),
                op: CompareOp::NotEquals(Value::from(0)),
                lenient: false,
            },
            Condition::Compare {
                var: path,
                op: CompareOp::NotEquals(Value::String(String::new())),
                lenient: false,
            },
        ])),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn conv(v: Value) -> (Cond, Vec<String>) {
        let mut notes = Notes::default();
        let c = convert(Some(&v), "c", &Scope::default(), &mut notes).unwrap();
        (c, notes.0.iter().map(|n| n.to_string()).collect())
    }

    fn holds(v: Value, ctx: Value) -> bool {
        match conv(v).0 {
            Cond::Always => true,
            Cond::Never => false,
            Cond::Is(c) => c.evaluate(&ctx),
        }
    }

    #[test]
    fn precedence_and_lenience_follow_workrail() {
        assert!(holds(
            json!({"var": "a", "equals": "Large"}),
            json!({"a": "large"})
        ));
        // `equals` wins over `gt`; the ignored operator is reported.
        let (c, notes) = conv(json!({"var": "a", "gt": 5, "equals": 1}));
        assert!(matches!(c, Cond::Is(_)));
        assert!(notes[0].contains("`gt`"), "{notes:?}");
        assert!(holds(
            json!({"var": "a", "gt": 5, "equals": 1}),
            json!({"a": "1"})
        ));
        // Numeric comparisons need a number, as in WorkRail.
        assert!(!holds(json!({"var": "a", "gt": 1}), json!({"a": "5"})));
        // Truthiness.
        for (v, want) in [
            (json!(true), true),
            (json!("x"), true),
            (json!(0), false),
            (json!(""), false),
            (json!(false), false),
            (json!(null), false),
        ] {
            assert_eq!(holds(json!({"var": "a"}), json!({"a": v})), want, "{v}");
        }
        assert!(!holds(json!({"var": "a"}), json!({})));
    }

    #[test]
    fn empty_and_malformed_conditions() {
        assert_eq!(conv(json!({})).0, Cond::Always);
        assert_eq!(conv(json!({"and": []})).0, Cond::Always);
        assert_eq!(conv(json!({"or": []})).0, Cond::Never);
        let (c, notes) = conv(json!({"and": [{"var": "a", "equals": 1}, {"bogus": 1}]}));
        assert_eq!(c, Cond::Never);
        assert!(notes[0].contains("evaluates it to false"), "{notes:?}");
        let mut n = Notes::default();
        let e = convert(
            Some(&json!({"var": "a", "matches": "x.*"})),
            "c",
            &Scope::default(),
            &mut n,
        )
        .unwrap_err();
        assert!(e.0.contains("`matches`"), "{e:?}");
    }

    #[test]
    fn the_iteration_variable_becomes_the_loop_pass() {
        let scope = Scope {
            iteration: Some(("attempt".into(), "worktrain.loops.retry.pass".into())),
        };
        let mut n = Notes::default();
        let c = convert(
            Some(&json!({"var": "attempt", "lt": 3})),
            "c",
            &scope,
            &mut n,
        )
        .unwrap();
        let Cond::Is(c) = c else { panic!() };
        assert_eq!(c.to_string(), "worktrain.loops.retry.pass lt 3");
    }

    #[test]
    fn constants_hold_and_fail_in_any_scope() {
        let scope = json!({"worktrain": {"loops": {}}});
        assert!(constant(true).evaluate(&scope));
        assert!(!constant(false).evaluate(&scope));
    }
}
