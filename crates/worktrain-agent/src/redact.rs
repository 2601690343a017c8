//! Secret redaction for everything worktrain records or shows: tool-call argument
//! summaries, captured process output, and text sent to the model.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// A worktrain step token (`wt1.<payload>.<tag>`).
static STEP_TOKEN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"wt1\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}").ok());

/// Well-known credential shapes, and `NAME=value` assignments whose name says secret.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"wt1\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}", REDACTED),
        (r"sk-[A-Za-z0-9_-]{16,}", REDACTED),
        (r"gh[pousr]_[A-Za-z0-9]{20,}", REDACTED),
        (r"github_pat_[A-Za-z0-9_]{20,}", REDACTED),
        (r"glpat-[A-Za-z0-9_-]{20,}", REDACTED),
        (r"xox[abprs]-[A-Za-z0-9-]{10,}", REDACTED),
        (r"AKIA[0-9A-Z]{16}", REDACTED),
        (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", "$1 [redacted]"),
        (
            r"(?i)\b([A-Z0-9_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY|ACCESS_KEY)[A-Z0-9_]*)(\s*[=:]\s*)(?:'[^']*'|\x22[^\x22]*\x22|[^\s'\x22]+)",
            "$1$2[redacted]",
        ),
        (
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            REDACTED,
        ),
    ]
    .into_iter()
    .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
    .collect()
});

/// Whether an environment variable's name says it holds a secret.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "CREDENTIAL",
        "_KEY",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// JSON keys whose values are always redacted in summaries.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "authorization",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Redacts secrets: the built-in patterns plus literal values it was given (API keys).
#[derive(Clone, Default)]
pub struct Redactor {
    literals: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("literals", &self.literals.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor with the built-in patterns only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also redact this exact value (ignored when shorter than 8 characters).
    pub fn with_literal(mut self, secret: impl Into<String>) -> Self {
        let s = secret.into();
        if s.len() >= 8 && !self.literals.contains(&s) {
            self.literals.push(s);
        }
        self
    }

    /// Redact every known secret shape and literal.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for lit in &self.literals {
            if out.contains(lit.as_str()) {
                out = Cow::Owned(out.replace(lit.as_str(), REDACTED));
            }
        }
        for (re, rep) in PATTERNS.iter() {
            if re.is_match(&out) {
                out = Cow::Owned(re.replace_all(&out, *rep).into_owned());
            }
        }
        out
    }

    /// Redact only step tokens and literals: for text sent to the model, where the
    /// broader patterns would hide legitimate content (test fixtures, docs).
    pub fn redact_for_model<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for lit in &self.literals {
            if out.contains(lit.as_str()) {
                out = Cow::Owned(out.replace(lit.as_str(), REDACTED));
            }
        }
        if let Some(re) = STEP_TOKEN.as_ref()
            && re.is_match(&out)
        {
            out = Cow::Owned(re.replace_all(&out, REDACTED).into_owned());
        }
        out
    }

    /// A copy of `v` with secret-named keys and secret-shaped strings redacted.
    pub fn redact_json(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if secret_key(k) && !v.is_null() {
                            Value::String(REDACTED.to_owned())
                        } else {
                            self.redact_json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact_json(x)).collect()),
            Value::String(s) => Value::String(self.redact(s).into_owned()),
            other => other.clone(),
        }
    }

    /// A one-line, bounded, redacted summary of a tool call's arguments.
    pub fn summarize_args(&self, tool: &str, args: &Value, max_chars: usize) -> String {
        let s = match (tool, args) {
            ("shell", Value::Object(m)) => match m.get("command").and_then(Value::as_str) {
                Some(c) => self.redact(c).into_owned(),
                None => self.redact_json(args).to_string(),
            },
            (_, Value::Object(m)) => {
                // Long text fields (file contents, notes) are summarised by size.
                let shown: serde_json::Map<String, Value> = m
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) if s.chars().count() > 120 => {
                                Value::String(format!("<{} bytes>", s.len()))
                            }
                            Value::Array(a) if a.len() > 5 => {
                                Value::String(format!("<{} items>", a.len()))
                            }
                            other => other.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                self.redact_json(&Value::Object(shown)).to_string()
            }
            (_, other) => self.redact(&other.to_string()).into_owned(),
        };
        truncate_chars(&s.replace('\n', "\\n"), max_chars)
    }
}

/// At most `max` characters, with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_patterns_compile() {
        assert_eq!(PATTERNS.len(), 10);
        assert!(STEP_TOKEN.is_some());
    }

    #[test]
    fn redacts_shapes_and_assignments() {
        let r = Redactor::new().with_literal("hunter2hunter2");
        let s = r.redact(
            "export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz123; curl -H 'Authorization: Bearer abcdefghijk' x; pw hunter2hunter2; API_KEY=\"a b\"",
        );
        assert!(!s.contains("ghp_"), "{s}");
        assert!(!s.contains("abcdefghijk"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains("a b"), "{s}");
        assert!(s.contains("GITHUB_TOKEN=[redacted]"), "{s}");
    }

    #[test]
    fn tokens_redacted_for_model_but_not_fixtures() {
        let r = Redactor::new();
        let s = r.redact_for_model(
            "use wt1.eyJhYmMiOjF9.c2lnbmF0dXJl now; key sk-abcdefghijklmnopqrstuv",
        );
        assert!(!s.contains("wt1.eyJ"), "{s}");
        assert!(s.contains("sk-abcdefghijklmnopqrstuv"), "{s}");
    }

    #[test]
    fn summaries_are_bounded_and_redacted() {
        let r = Redactor::new();
        let s = r.summarize_args(
            "write_file",
            &json!({"path": "a.txt", "content": "x".repeat(500), "api_key": "zzz"}),
            200,
        );
        assert!(
            s.contains("<500 bytes>") && s.contains("[redacted]") && !s.contains("zzz"),
            "{s}"
        );
        let s = r.summarize_args(
            "shell",
            &json!({"command": "echo PASSWORD=abc123\nls"}),
            200,
        );
        assert_eq!(s, "echo PASSWORD=[redacted]\\nls");
    }
}
