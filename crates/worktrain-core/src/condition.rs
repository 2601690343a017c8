//! The condition language: one typed AST, used by the workflow schema (via its
//! `JsonSchema` impl), by the loader (via `Deserialize`) and by the evaluator.
//!
//! Shapes:
//! - comparison: `{var: "a.b", equals: X}` with exactly one of `equals`, `not_equals`, `gt`,
//!   `gte`, `lt`, `lte`, `in`, `contains`, `exists`; `equals`, `not_equals`, `in` and
//!   `contains` take `lenient: true` for tolerant matching (see [`lenient_equals`]);
//! - `{and: [c, …]}`, `{or: [c, …]}`, `{not: c}`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A dotted path into the session context (`review.findings.0.severity`).
/// Numeric segments index arrays.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContextPath(Vec<String>);

/// Why a string is not a context path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a context path: use dot-separated segments of letters, digits, '_' or '-' (e.g. `review.verdict`)"
)]
pub struct InvalidContextPath {
    /// The rejected input.
    pub input: String,
}

impl ContextPath {
    /// Parse a dotted path.
    pub fn parse(s: &str) -> Result<Self, InvalidContextPath> {
        let segs: Vec<String> = s.split('.').map(str::to_owned).collect();
        let valid = !s.is_empty()
            && s.len() <= 256
            && segs.iter().all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if valid {
            Ok(Self(segs))
        } else {
            Err(InvalidContextPath {
                input: s.chars().take(80).collect(),
            })
        }
    }

    /// The segments of the path.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// A path from segments (each must be a valid segment).
    pub fn from_segments(segments: Vec<String>) -> Result<Self, InvalidContextPath> {
        Self::parse(&segments.join("."))
    }

    /// The first segment (the top-level context key).
    pub fn root(&self) -> &str {
        &self.0[0]
    }

    /// Look the path up in a JSON value.
    pub fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut cur = root;
        for seg in &self.0 {
            cur = match cur {
                Value::Object(map) => map.get(seg)?,
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for ContextPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl fmt::Debug for ContextPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for ContextPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContextPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContextPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A comparison operator with its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum CompareOp {
    /// Equal (numbers compare by value: `1 == 1.0`).
    Equals(Value),
    /// Not equal; true when the variable is unset.
    NotEquals(Value),
    /// Numerically greater than.
    Gt(f64),
    /// Numerically greater than or equal.
    Gte(f64),
    /// Numerically less than.
    Lt(f64),
    /// Numerically less than or equal.
    Lte(f64),
    /// The value is one of the listed values.
    In(Vec<Value>),
    /// The array contains the operand, or the string contains the operand string.
    Contains(Value),
    /// `true`: the variable is set and not null; `false`: unset or null.
    Exists(bool),
}

impl CompareOp {
    /// The operator's keyword in workflow files.
    pub fn keyword(&self) -> &'static str {
        match self {
            CompareOp::Equals(_) => "equals",
            CompareOp::NotEquals(_) => "not_equals",
            CompareOp::Gt(_) => "gt",
            CompareOp::Gte(_) => "gte",
            CompareOp::Lt(_) => "lt",
            CompareOp::Lte(_) => "lte",
            CompareOp::In(_) => "in",
            CompareOp::Contains(_) => "contains",
            CompareOp::Exists(_) => "exists",
        }
    }
}

/// A condition over the session context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCondition", into = "RawCondition")]
pub enum Condition {
    /// Compare the value at `var` with an operand.
    Compare {
        /// The context path read.
        var: ContextPath,
        /// The operator and operand.
        op: CompareOp,
        /// Tolerant matching for `equals`, `not_equals`, `in` and `contains`: strings
        /// compare trimmed and case-insensitively, numeric and boolean strings match their
        /// values (see [`lenient_equals`]). Always false for the other operators.
        lenient: bool,
    },
    /// All must hold (non-empty).
    And(Vec<Condition>),
    /// At least one must hold (non-empty).
    Or(Vec<Condition>),
    /// Holds when the inner condition does not.
    Not(Box<Condition>),
}

impl Condition {
    /// Evaluate against a context object. Unset variables never raise: they make
    /// `equals`, comparisons, `in`, `contains` and `exists: true` false.
    pub fn evaluate(&self, context: &Value) -> bool {
        match self {
            Condition::And(all) => all.iter().all(|c| c.evaluate(context)),
            Condition::Or(any) => any.iter().any(|c| c.evaluate(context)),
            Condition::Not(inner) => !inner.evaluate(context),
            Condition::Compare {
                var,
                op,
                lenient: true,
            } => {
                let value = var.lookup(context).filter(|v| !v.is_null());
                match op {
                    CompareOp::Equals(x) => lenient_equals(value, x),
                    CompareOp::NotEquals(x) => !lenient_equals(value, x),
                    CompareOp::In(xs) => xs.iter().any(|x| lenient_equals(value, x)),
                    CompareOp::Contains(x) => loose_text(value)
                        .to_lowercase()
                        .contains(&loose_text(Some(x)).to_lowercase()),
                    // Rejected when the condition loads; evaluate them exactly anyway.
                    CompareOp::Gt(_)
                    | CompareOp::Gte(_)
                    | CompareOp::Lt(_)
                    | CompareOp::Lte(_)
                    | CompareOp::Exists(_) => Condition::Compare {
                        var: var.clone(),
                        op: op.clone(),
                        lenient: false,
                    }
                    .evaluate(context),
                }
            }
            Condition::Compare {
                var,
                op,
                lenient: false,
            } => {
                let value = var.lookup(context).filter(|v| !v.is_null());
                match op {
                    CompareOp::Exists(want) => value.is_some() == *want,
                    CompareOp::Equals(x) => value.is_some_and(|v| values_equal(v, x)),
                    CompareOp::NotEquals(x) => !value.is_some_and(|v| values_equal(v, x)),
                    CompareOp::Gt(n) => number(value).is_some_and(|v| v > *n),
                    CompareOp::Gte(n) => number(value).is_some_and(|v| v >= *n),
                    CompareOp::Lt(n) => number(value).is_some_and(|v| v < *n),
                    CompareOp::Lte(n) => number(value).is_some_and(|v| v <= *n),
                    CompareOp::In(xs) => {
                        value.is_some_and(|v| xs.iter().any(|x| values_equal(v, x)))
                    }
                    CompareOp::Contains(x) => match value {
                        Some(Value::Array(items)) => items.iter().any(|i| values_equal(i, x)),
                        Some(Value::String(s)) => {
                            x.as_str().is_some_and(|needle| s.contains(needle))
                        }
                        _ => false,
                    },
                }
            }
        }
    }

    /// Replace every path for which `f` returns a new one (used when a routine is
    /// included: its references to its own loops get the include's prefix).
    pub fn rewrite_vars(&mut self, f: &dyn Fn(&ContextPath) -> Option<ContextPath>) {
        match self {
            Condition::Compare { var, .. } => {
                if let Some(new) = f(var) {
                    *var = new;
                }
            }
            Condition::And(cs) | Condition::Or(cs) => cs.iter_mut().for_each(|c| c.rewrite_vars(f)),
            Condition::Not(c) => c.rewrite_vars(f),
        }
    }

    /// Every context path this condition reads (for linting and docs).
    pub fn vars(&self) -> Vec<&ContextPath> {
        let mut out = Vec::new();
        self.collect_vars(&mut out);
        out
    }

    fn collect_vars<'a>(&'a self, out: &mut Vec<&'a ContextPath>) {
        match self {
            Condition::Compare { var, .. } => out.push(var),
            Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|c| c.collect_vars(out)),
            Condition::Not(c) => c.collect_vars(out),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare { var, op, lenient } => {
                let operand = match op {
                    CompareOp::Equals(v) | CompareOp::NotEquals(v) | CompareOp::Contains(v) => {
                        v.to_string()
                    }
                    CompareOp::Gt(n) | CompareOp::Gte(n) | CompareOp::Lt(n) | CompareOp::Lte(n) => {
                        n.to_string()
                    }
                    CompareOp::In(vs) => Value::Array(vs.clone()).to_string(),
                    CompareOp::Exists(b) => b.to_string(),
                };
                write!(f, "{var} {} {operand}", op.keyword())?;
                if *lenient {
                    f.write_str(" (lenient)")?;
                }
                Ok(())
            }
            Condition::And(cs) => join(f, cs, " and "),
            Condition::Or(cs) => join(f, cs, " or "),
            Condition::Not(c) => write!(f, "not ({c})"),
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, cs: &[Condition], sep: &str) -> fmt::Result {
    for (i, c) in cs.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "({c})")?;
    }
    Ok(())
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| values_equal(x, y)))
        }
        _ => a == b,
    }
}

/// Tolerant equality, as used by `lenient: true` comparisons (the semantics of WorkRail's
/// conditions, so imported workflows route the same way):
///
/// - unset and `null` equal each other and nothing else;
/// - two strings are equal when they are equal after trimming and lower-casing;
/// - a string and a number are equal when the string is a number of the same value
///   (an empty string counts as 0);
/// - a string and a boolean are equal when the string is `true`/`1`/`yes` (for `true`) or
///   `false`/`0`/`no` (for `false`), in any case;
/// - otherwise: numbers by value, booleans exactly, and arrays or objects never.
pub fn lenient_equals(value: Option<&Value>, operand: &Value) -> bool {
    let value = value.filter(|v| !v.is_null());
    let operand = Some(operand).filter(|v| !v.is_null());
    let (a, b) = match (value, operand) {
        (None, None) => return true,
        (None, Some(_)) | (Some(_), None) => return false,
        (Some(a), Some(b)) => (a, b),
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().to_lowercase() == y.trim().to_lowercase(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            match (string_number(s), n.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        (Value::String(s), Value::Bool(b)) | (Value::Bool(b), Value::String(s)) => {
            let s = s.trim().to_lowercase();
            if *b {
                matches!(s.as_str(), "true" | "1" | "yes")
            } else {
                matches!(s.as_str(), "false" | "0" | "no")
            }
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// A string read as a number the way JavaScript's `Number()` does for plain decimals:
/// surrounding whitespace is ignored and an empty string is 0.
fn string_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    // `f64::from_str` also accepts "inf" and "nan"; JavaScript does not.
    if t.bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The text a lenient `contains` searches: strings as they are, numbers and booleans as
/// written, arrays as their elements' texts joined by commas, unset/`null` as empty, all
/// trimmed.
fn loose_text(v: Option<&Value>) -> String {
    fn text(v: &Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
            Value::Object(_) => "[object Object]".to_owned(),
        }
    }
    v.map(text).unwrap_or_default().trim().to_owned()
}

/// Deserialize an optional field so that an explicit `null` becomes `Some(Value::Null)`
/// (`equals: null` is a meaningful comparison, not an absent operator).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The wire shape of a condition: every operator as an optional field. Converted into
/// [`Condition`] with precise errors (exactly one operator, `var` where needed).
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    var: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    equals: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    not_equals: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    gt: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    gte: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    lt: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    lte: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    in_: Option<Vec<Value>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    contains: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lenient: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    and: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    or: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not: Option<Box<Condition>>,
}

const OPERATORS: &str =
    "equals, not_equals, gt, gte, lt, lte, in, contains, exists (with var), or and/or/not";

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let mut found: Vec<&'static str> = Vec::new();
        let RawCondition {
            var,
            equals,
            not_equals,
            gt,
            gte,
            lt,
            lte,
            in_,
            contains,
            exists,
            lenient,
            and,
            or,
            not,
        } = raw;
        let numeric = |name: &'static str, v: Value| -> Result<f64, String> {
            v.as_f64()
                .ok_or_else(|| format!("condition operator `{name}` needs a number, got {v}"))
        };
        let mut ops: Vec<CompareOp> = Vec::new();
        if let Some(v) = equals {
            ops.push(CompareOp::Equals(v));
        }
        if let Some(v) = not_equals {
            ops.push(CompareOp::NotEquals(v));
        }
        if let Some(v) = gt {
            ops.push(CompareOp::Gt(numeric("gt", v)?));
        }
        if let Some(v) = gte {
            ops.push(CompareOp::Gte(numeric("gte", v)?));
        }
        if let Some(v) = lt {
            ops.push(CompareOp::Lt(numeric("lt", v)?));
        }
        if let Some(v) = lte {
            ops.push(CompareOp::Lte(numeric("lte", v)?));
        }
        if let Some(v) = in_ {
            ops.push(CompareOp::In(v));
        }
        if let Some(v) = contains {
            ops.push(CompareOp::Contains(v));
        }
        if let Some(v) = exists {
            ops.push(CompareOp::Exists(v));
        }
        found.extend(ops.iter().map(CompareOp::keyword));
        if and.is_some() {
            found.push("and");
        }
        if or.is_some() {
            found.push("or");
        }
        if not.is_some() {
            found.push("not");
        }
        match found.len() {
            0 => {
                return Err(format!(
                    "a condition needs exactly one operator ({OPERATORS}); found none"
                ));
            }
            1 => {}
            _ => {
                return Err(format!(
                    "a condition needs exactly one operator; found {} (split them with `and`/`or`)",
                    found.join(", ")
                ));
            }
        }
        let lenient = lenient.unwrap_or(false);
        if lenient && ops.is_empty() {
            return Err(
                "`lenient` belongs to a comparison (equals, not_equals, in, contains), not to and/or/not".into(),
            );
        }
        if let Some(cs) = and {
            return nonempty("and", cs, &var).map(Condition::And);
        }
        if let Some(cs) = or {
            return nonempty("or", cs, &var).map(Condition::Or);
        }
        if let Some(c) = not {
            if var.is_some() {
                return Err("`var` cannot be combined with `not`; put it inside".into());
            }
            return Ok(Condition::Not(c));
        }
        let op = ops.pop().ok_or("a condition needs an operator")?;
        if lenient
            && !matches!(
                op,
                CompareOp::Equals(_)
                    | CompareOp::NotEquals(_)
                    | CompareOp::In(_)
                    | CompareOp::Contains(_)
            )
        {
            return Err(format!(
                "`lenient` applies to equals, not_equals, in and contains, not to `{}`",
                op.keyword()
            ));
        }
        let var = var.ok_or_else(|| {
            format!(
                "condition operator `{}` needs `var` (the context path to test)",
                op.keyword()
            )
        })?;
        let var = ContextPath::parse(&var).map_err(|e| e.to_string())?;
        Ok(Condition::Compare { var, op, lenient })
    }
}

fn nonempty(
    name: &str,
    cs: Vec<Condition>,
    var: &Option<String>,
) -> Result<Vec<Condition>, String> {
    if var.is_some() {
        return Err(format!(
            "`var` cannot be combined with `{name}`; put it inside the listed conditions"
        ));
    }
    if cs.is_empty() {
        return Err(format!("`{name}` needs at least one condition"));
    }
    Ok(cs)
}

impl From<Condition> for RawCondition {
    fn from(c: Condition) -> Self {
        let mut raw = RawCondition::default();
        let num = |n: f64| {
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        match c {
            Condition::And(cs) => raw.and = Some(cs),
            Condition::Or(cs) => raw.or = Some(cs),
            Condition::Not(c) => raw.not = Some(c),
            Condition::Compare { var, op, lenient } => {
                raw.var = Some(var.to_string());
                raw.lenient = lenient.then_some(true);
                match op {
                    CompareOp::Equals(v) => raw.equals = Some(v),
                    CompareOp::NotEquals(v) => raw.not_equals = Some(v),
                    CompareOp::Gt(n) => raw.gt = Some(num(n)),
                    CompareOp::Gte(n) => raw.gte = Some(num(n)),
                    CompareOp::Lt(n) => raw.lt = Some(num(n)),
                    CompareOp::Lte(n) => raw.lte = Some(num(n)),
                    CompareOp::In(vs) => raw.in_ = Some(vs),
                    CompareOp::Contains(v) => raw.contains = Some(v),
                    CompareOp::Exists(b) => raw.exists = Some(b),
                }
            }
        }
        raw
    }
}

impl schemars::JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let me = generator.subschema_for::<Condition>();
        let path = schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$",
            "description": "Dotted path into the session context; numeric segments index arrays."
        });
        let compare = |op: &str, operand: serde_json::Value| {
            serde_json::json!({
                "type": "object",
                "properties": { "var": path, op: operand },
                "required": ["var", op],
                "additionalProperties": false
            })
        };
        let lenient = serde_json::json!({
            "type": "boolean",
            "description": "Tolerant matching: strings compare trimmed and case-insensitively; numeric and boolean strings match their values."
        });
        let tolerant = |op: &str, operand: serde_json::Value| {
            serde_json::json!({
                "type": "object",
                "properties": { "var": path, op: operand, "lenient": lenient },
                "required": ["var", op],
                "additionalProperties": false
            })
        };
        let number = serde_json::json!({"type": "number"});
        schemars::json_schema!({
            "description": "A condition over the session context: a comparison `{var, <operator>}` or a combination `{and|or: [...]}` / `{not: ...}`.",
            "oneOf": [
                tolerant("equals", serde_json::json!({})),
                tolerant("not_equals", serde_json::json!({})),
                compare("gt", number.clone()),
                compare("gte", number.clone()),
                compare("lt", number.clone()),
                compare("lte", number),
                tolerant("in", serde_json::json!({"type": "array"})),
                tolerant("contains", serde_json::json!({})),
                compare("exists", serde_json::json!({"type": "boolean"})),
                {"type": "object", "properties": {"and": {"type": "array", "items": me, "minItems": 1}}, "required": ["and"], "additionalProperties": false},
                {"type": "object", "properties": {"or": {"type": "array", "items": me, "minItems": 1}}, "required": ["or"], "additionalProperties": false},
                {"type": "object", "properties": {"not": me}, "required": ["not"], "additionalProperties": false}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(v: Value) -> Result<Condition, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn every_operator_evaluates() {
        let ctx = json!({"size": "small", "n": 3, "tags": ["a", "b"], "text": "hello world",
                         "nested": {"list": [{"x": 1}]}, "nothing": null});
        let t = |v: Value| cond(v).unwrap().evaluate(&ctx);
        assert!(t(json!({"var": "size", "equals": "small"})));
        assert!(!t(json!({"var": "size", "equals": "large"})));
        assert!(t(json!({"var": "size", "not_equals": "large"})));
        assert!(t(json!({"var": "missing", "not_equals": "x"})));
        assert!(t(json!({"var": "n", "equals": 3.0})));
        assert!(t(json!({"var": "n", "gt": 2})));
        assert!(!t(json!({"var": "n", "gt": 3})));
        assert!(t(json!({"var": "n", "gte": 3})));
        assert!(t(json!({"var": "n", "lt": 4})));
        assert!(t(json!({"var": "n", "lte": 3})));
        assert!(!t(json!({"var": "size", "gt": 1})));
        assert!(t(json!({"var": "size", "in": ["tiny", "small"]})));
        assert!(t(json!({"var": "tags", "contains": "b"})));
        assert!(t(json!({"var": "text", "contains": "world"})));
        assert!(!t(json!({"var": "n", "contains": 3})));
        assert!(t(json!({"var": "size", "exists": true})));
        assert!(t(json!({"var": "nothing", "exists": false})));
        assert!(t(json!({"var": "missing", "exists": false})));
        assert!(t(json!({"var": "nested.list.0.x", "equals": 1})));
        assert!(t(
            json!({"and": [{"var": "n", "gt": 1}, {"var": "size", "equals": "small"}]})
        ));
        assert!(!t(
            json!({"and": [{"var": "n", "gt": 1}, {"var": "size", "equals": "big"}]})
        ));
        assert!(t(
            json!({"or": [{"var": "n", "gt": 10}, {"var": "size", "equals": "small"}]})
        ));
        assert!(t(json!({"not": {"var": "size", "equals": "big"}})));
        assert!(!t(json!({"var": "missing", "equals": null})));
    }

    #[test]
    fn malformed_conditions_get_precise_errors() {
        let e = cond(json!({"var": "x"})).unwrap_err();
        assert!(e.contains("exactly one operator"), "{e}");
        let e = cond(json!({"var": "x", "equals": 1, "gt": 2})).unwrap_err();
        assert!(e.contains("equals, gt"), "{e}");
        let e = cond(json!({"equals": 1})).unwrap_err();
        assert!(e.contains("needs `var`"), "{e}");
        let e = cond(json!({"var": "x", "gt": "a"})).unwrap_err();
        assert!(e.contains("needs a number"), "{e}");
        let e = cond(json!({"and": []})).unwrap_err();
        assert!(e.contains("at least one"), "{e}");
        let e = cond(json!({"var": "x", "equal": 1})).unwrap_err();
        assert!(e.contains("unknown field `equal`"), "{e}");
        let e = cond(json!({"var": "a..b", "equals": 1})).unwrap_err();
        assert!(e.contains("not a context path"), "{e}");
        let e = cond(json!({"var": "x", "and": [{"var": "y", "exists": true}]})).unwrap_err();
        assert!(e.contains("cannot be combined"), "{e}");
    }

    #[test]
    fn lenient_comparisons_match_tolerantly() {
        let ctx = json!({"size": " Large ", "n": 10, "flag": "yes", "off": "No", "count": "10",
                         "tags": ["Security", "perf"], "empty": "", "obj": {"a": 1}});
        let t = |v: Value| cond(v).unwrap().evaluate(&ctx);
        assert!(t(
            json!({"var": "size", "equals": "large", "lenient": true})
        ));
        assert!(!t(json!({"var": "size", "equals": "large"})));
        assert!(t(json!({"var": "count", "equals": 10, "lenient": true})));
        assert!(t(json!({"var": "n", "equals": "10.0", "lenient": true})));
        assert!(t(json!({"var": "flag", "equals": true, "lenient": true})));
        assert!(t(json!({"var": "off", "equals": false, "lenient": true})));
        assert!(!t(json!({"var": "flag", "equals": false, "lenient": true})));
        assert!(t(json!({"var": "empty", "equals": 0, "lenient": true})));
        assert!(t(
            json!({"var": "missing", "equals": null, "lenient": true})
        ));
        assert!(!t(json!({"var": "missing", "equals": "", "lenient": true})));
        assert!(t(
            json!({"var": "missing", "not_equals": "x", "lenient": true})
        ));
        assert!(!t(
            json!({"var": "size", "not_equals": "LARGE", "lenient": true})
        ));
        assert!(t(
            json!({"var": "size", "in": ["small", "LARGE"], "lenient": true})
        ));
        assert!(t(
            json!({"var": "tags", "contains": "security", "lenient": true})
        ));
        assert!(t(
            json!({"var": "tags", "contains": "ity,pe", "lenient": true})
        ));
        assert!(!t(json!({"var": "tags", "contains": "security"})));
        assert!(!t(
            json!({"var": "obj", "equals": {"a": 1}, "lenient": true})
        ));
        assert!(t(
            json!({"var": "missing", "contains": "", "lenient": true})
        ));
        let c = cond(json!({"var": "size", "equals": "large", "lenient": true})).unwrap();
        assert_eq!(c.to_string(), "size equals \"large\" (lenient)");
    }

    #[test]
    fn lenient_only_on_tolerant_comparisons() {
        let e = cond(json!({"var": "n", "gt": 1, "lenient": true})).unwrap_err();
        assert!(e.contains("not to `gt`"), "{e}");
        let e = cond(json!({"and": [{"var": "n", "exists": true}], "lenient": true})).unwrap_err();
        assert!(e.contains("belongs to a comparison"), "{e}");
        let c = cond(json!({"var": "n", "equals": 1, "lenient": false})).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"var": "n", "equals": 1})
        );
    }

    #[test]
    fn round_trips_through_serde() {
        for v in [
            json!({"var": "a.b", "equals": null}),
            json!({"var": "a", "in": [1, "x"]}),
            json!({"var": "a", "contains": "x", "lenient": true}),
            json!({"not": {"or": [{"var": "a", "exists": true}, {"var": "b", "lte": 2.5}]}}),
        ] {
            let c = cond(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&c).unwrap(), v);
        }
    }
}
