//! Typed expressions inside `triggers.yml`, checked while the file is parsed (so a bad
//! one is reported at its line and column): JSONPath queries (RFC 9535, via
//! `serde_json_path`), goal templates (`Fix #{{ $.issue.number }}`), regular
//! expressions, event patterns (`pull_request.opened|synchronize`) and durations.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json_path::JsonPath;

/// Why a query or template could not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// A singular query matched nothing.
    #[error("`{path}` matched nothing in the payload")]
    Missing {
        /// The JSONPath query, as written.
        path: String,
    },
    /// A template slot matched more than one value.
    #[error("`{path}` matched {count} values; a template slot needs exactly one")]
    Ambiguous {
        /// The JSONPath query, as written.
        path: String,
        /// Number of values it matched (more than one).
        count: usize,
    },
}

/// A parsed JSONPath query, remembering its text.
#[derive(Clone)]
pub struct JsonPathExpr {
    text: String,
    path: JsonPath,
    singular: bool,
}

impl JsonPathExpr {
    /// Parse a query (`$.issue.labels[*].name`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let path = JsonPath::parse(text).map_err(|e| {
            format!("invalid JSONPath `{text}`: {e} (RFC 9535; e.g. `$.issue.title`)")
        })?;
        let singular = is_singular(text);
        Ok(Self {
            text: text.to_owned(),
            path,
            singular,
        })
    }

    /// The query's text, as written in `triggers.yml`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the query can match at most one node (no wildcards, slices, filters or
    /// descendant segments).
    pub fn is_singular(&self) -> bool {
        self.singular
    }

    /// Every node the query selects.
    pub fn query<'a>(&self, doc: &'a Value) -> Vec<&'a Value> {
        self.path.query(doc).all()
    }

    /// The value for a context entry: the node of a singular query (missing → error), or
    /// the array of every node of another query (possibly empty).
    pub fn extract(&self, doc: &Value) -> Result<Value, ExprError> {
        let nodes = self.query(doc);
        if self.singular {
            nodes
                .first()
                .map(|v| (*v).clone())
                .ok_or_else(|| ExprError::Missing {
                    path: self.text.clone(),
                })
        } else {
            Ok(Value::Array(nodes.into_iter().cloned().collect()))
        }
    }

    /// Exactly one node (template slots).
    pub fn one<'a>(&self, doc: &'a Value) -> Result<&'a Value, ExprError> {
        let nodes = self.query(doc);
        match nodes.len() {
            0 => Err(ExprError::Missing {
                path: self.text.clone(),
            }),
            1 => Ok(nodes[0]),
            n => Err(ExprError::Ambiguous {
                path: self.text.clone(),
                count: n,
            }),
        }
    }
}

/// Whether a query is singular in the sense of RFC 9535 §2.3.5.1 (names and indexes only).
fn is_singular(text: &str) -> bool {
    let mut in_str: Option<char> = None;
    let mut prev = '\0';
    for c in text.chars() {
        if let Some(q) = in_str {
            if c == q && prev != '\\' {
                in_str = None;
            }
        } else {
            match c {
                '\'' | '"' => in_str = Some(c),
                '*' | '?' | ':' | ',' => return false,
                '.' if prev == '.' => return false,
                _ => {}
            }
        }
        prev = c;
    }
    true
}

impl fmt::Debug for JsonPathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for JsonPathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for JsonPathExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for JsonPathExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for JsonPathExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for JsonPathExpr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonPath".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\$",
            "description": "A JSONPath query (RFC 9535) into the event payload, e.g. `$.issue.title`."
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Slot(JsonPathExpr),
}

/// A text with `{{ <JSONPath> }}` slots filled from the payload. A slot whose query
/// matches nothing (or more than one value) is an error, never an empty string; a
/// `null` value renders as empty text, strings as they are, anything else as JSON.
#[derive(Clone, PartialEq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parse a template.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!("unclosed `{{{{` in template `{text}`"));
            };
            let expr = after[..close].trim();
            if !expr.starts_with('$') {
                return Err(format!(
                    "template slot `{{{{ {expr} }}}}` must be a JSONPath query starting with `$` (e.g. `{{{{ $.issue.title }}}}`)"
                ));
            }
            parts.push(Part::Slot(JsonPathExpr::parse(expr)?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has slots.
    pub fn has_slots(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Slot(_)))
    }

    /// Fill the slots from `doc`.
    pub fn render(&self, doc: &Value) -> Result<String, ExprError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Slot(q) => match q.one(doc)? {
                    Value::Null => {}
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Template {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Text with `{{ $.json.path }}` slots filled from the event payload."
        })
    }
}

/// A regular expression (Rust `regex` syntax), checked when the file loads.
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compile `text` as a regular expression; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        regex::Regex::new(text)
            .map(Self)
            .map_err(|e| format!("invalid regular expression: {e}"))
    }

    /// Whether `s` matches (anywhere; anchor with `^…$`).
    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }

    /// The expression's text, as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Pattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Pattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "regex"})
    }
}

/// An event filter: `issues`, `issues.labeled`, `pull_request.opened|synchronize`.
#[derive(Clone, PartialEq, Eq)]
pub struct EventPattern {
    event: String,
    actions: Vec<String>,
}

impl EventPattern {
    /// Parse `event[.action[|action…]]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (event, actions) = match text.split_once('.') {
            Some((e, a)) => (e, a.split('|').map(str::to_owned).collect::<Vec<_>>()),
            None => (text, Vec::new()),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ok(event) || !actions.iter().all(|a| ok(a)) {
            return Err(format!(
                "invalid event `{text}`: expected `event` or `event.action[|action…]` in lower case, e.g. `issues.labeled` or `pull_request.opened|synchronize`"
            ));
        }
        Ok(Self {
            event: event.to_owned(),
            actions,
        })
    }

    /// Whether an event with this name and action matches.
    pub fn matches(&self, event: &str, action: Option<&str>) -> bool {
        self.event == event
            && (self.actions.is_empty()
                || action.is_some_and(|a| self.actions.iter().any(|x| x == a)))
    }

    /// The event name.
    pub fn event(&self) -> &str {
        &self.event
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.event)?;
        if !self.actions.is_empty() {
            write!(f, ".{}", self.actions.join("|"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for EventPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+(\\|[a-z0-9_]+)*)?$",
            "description": "`event` or `event.action[|action…]`, e.g. `issues.labeled`."
        })
    }
}

/// Durations: `"30s"`, `"5m"`, `"1h 30m"` (humantime) or a number of seconds.
pub mod duration {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    /// Read a duration written as a number of seconds (`90`) or as humantime text (`"5m"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {t:?}: {e} (e.g. `30s`, `5m`, `1h`)"
                ))
            }),
        }
    }

    /// Serialize as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Schema of a duration.
    pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {"type": "string", "description": "e.g. `30s`, `5m`, `1h 30m`"},
                {"type": "integer", "minimum": 0, "description": "seconds"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_slots_and_report_missing_paths() {
        let t = Template::parse("Fix #{{ $.issue.number }}: {{$.issue.title}}").unwrap();
        let doc = json!({"issue": {"number": 7, "title": "Crash", "body": null}});
        assert_eq!(t.render(&doc).unwrap(), "Fix #7: Crash");
        let t = Template::parse("{{ $.issue.titel }}").unwrap();
        assert_eq!(
            t.render(&doc).unwrap_err(),
            ExprError::Missing {
                path: "$.issue.titel".into()
            }
        );
        assert_eq!(
            Template::parse("[{{ $.issue.body }}]")
                .unwrap()
                .render(&doc)
                .unwrap(),
            "[]"
        );
        assert!(Template::parse("{{ issue.title }}").is_err());
        assert!(Template::parse("{{ $.a").is_err());
        assert!(Template::parse("{{ $[ }}").is_err());
    }

    #[test]
    fn singular_and_list_queries() {
        let doc = json!({"labels": [{"name": "a"}, {"name": "b"}], "x": {"y": 1}});
        let q = JsonPathExpr::parse("$.labels[*].name").unwrap();
        assert!(!q.is_singular());
        assert_eq!(q.extract(&doc).unwrap(), json!(["a", "b"]));
        let q = JsonPathExpr::parse("$.x.y").unwrap();
        assert!(q.is_singular());
        assert_eq!(q.extract(&doc).unwrap(), json!(1));
        assert!(JsonPathExpr::parse("$.x.z").unwrap().extract(&doc).is_err());
        assert!(JsonPathExpr::parse("$['a.b'][0]").unwrap().is_singular());
        assert!(!JsonPathExpr::parse("$..name").unwrap().is_singular());
        assert!(JsonPathExpr::parse("issue").is_err());
    }

    #[test]
    fn event_patterns() {
        let p = EventPattern::parse("pull_request.opened|synchronize").unwrap();
        assert!(p.matches("pull_request", Some("opened")));
        assert!(p.matches("pull_request", Some("synchronize")));
        assert!(!p.matches("pull_request", Some("closed")));
        assert!(!p.matches("issues", Some("opened")));
        let any = EventPattern::parse("push").unwrap();
        assert!(any.matches("push", None));
        assert!(EventPattern::parse("Issues.Labeled").is_err());
        assert!(EventPattern::parse("issues.").is_err());
    }
}
