//! `$VAR` / `${VAR}` references in `triggers.yml`, resolved from the environment while the
//! file is deserialized — so a missing variable is an error at the line and column of the
//! value that names it, never an empty string.
//!
//! Only fields typed [`EnvString`] expand (secrets, tokens, URLs, paths); goal templates
//! and JSONPath expressions, which start with `$` themselves, never do. `$$` is a literal
//! `$`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

type Lookup = Box<dyn Fn(&str) -> Option<String>>;

thread_local! {
    static LOOKUP: RefCell<Option<Lookup>> = const { RefCell::new(None) };
}

/// Where variables come from while a file is parsed.
#[derive(Debug, Clone, Default)]
pub enum EnvSource {
    /// The process environment.
    #[default]
    Process,
    /// A fixed map (tests, `trigger validate --env`).
    Map(BTreeMap<String, String>),
}

impl EnvSource {
    fn lookup(&self) -> Lookup {
        match self {
            EnvSource::Process => Box::new(|k| std::env::var(k).ok()),
            EnvSource::Map(m) => {
                let m = m.clone();
                Box::new(move |k| m.get(k).cloned())
            }
        }
    }
}

/// Run `f` with `source` as the variable source of every [`EnvString`] deserialized on
/// this thread (deserialization is synchronous, so the scope is exact).
pub fn with_env<T>(source: &EnvSource, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Lookup>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            LOOKUP.with(|l| *l.borrow_mut() = prev);
        }
    }
    let prev = LOOKUP.with(|l| l.borrow_mut().replace(source.lookup()));
    let _reset = Reset(prev);
    f()
}

/// Expand `$VAR`, `${VAR}` and `$$` in `raw` with `lookup`. The error names the variable.
pub fn expand(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                return Err(format!(
                    "unterminated `${{` in `{raw}` (write `$$` for a literal `$`)"
                ));
            };
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "`${name}` is not a variable reference (names are letters, digits and `_`; write `$$` for a literal `$`)"
            ));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable `{name}` is not set (referenced as `{}`)",
                    if after.starts_with('{') {
                        format!("${{{name}}}")
                    } else {
                        format!("${name}")
                    }
                ));
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// A string from `triggers.yml` with `$VAR` references resolved. Debug and Serialize
/// show only what was written (`$GITHUB_WEBHOOK_SECRET`), never the resolved value, so
/// printing a configuration cannot leak a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvString {
    raw: String,
    value: String,
}

impl EnvString {
    /// A literal value (no expansion).
    pub fn literal(value: impl Into<String>) -> Self {
        let value = value.into();
        Self {
            raw: value.clone(),
            value,
        }
    }

    /// The resolved value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the file says.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

impl Serialize for EnvString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let value = LOOKUP.with(|l| match &*l.borrow() {
            Some(lookup) => expand(&raw, lookup.as_ref()),
            None => expand(&raw, &|k| std::env::var(k).ok()),
        });
        let value = value.map_err(serde::de::Error::custom)?;
        Ok(Self { raw, value })
    }
}

impl schemars::JsonSchema for EnvString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Text in which `$VAR` and `${VAR}` are replaced from the environment (a missing variable is an error); `$$` is a literal `$`."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "B_2" => Some("beta".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms_and_escapes() {
        assert_eq!(expand("$A", &env).unwrap(), "alpha");
        assert_eq!(expand("x-${B_2}-y", &env).unwrap(), "x-beta-y");
        assert_eq!(expand("$A/$B_2", &env).unwrap(), "alpha/beta");
        assert_eq!(expand("cost $$5", &env).unwrap(), "cost $5");
        assert_eq!(expand("[$EMPTY]", &env).unwrap(), "[]");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn missing_variables_are_named() {
        let e = expand("${NOPE}", &env).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        let e = expand("pre $MISSING_1 post", &env).unwrap_err();
        assert!(e.contains("`MISSING_1`"), "{e}");
        assert!(expand("${A", &env).unwrap_err().contains("unterminated"));
        assert!(
            expand("$ alone", &env)
                .unwrap_err()
                .contains("not a variable")
        );
        assert!(expand("$1x", &env).unwrap_err().contains("not a variable"));
    }

    #[test]
    fn debug_and_serialize_show_the_reference_not_the_secret() {
        let s = with_env(
            &EnvSource::Map([("SECRET".to_string(), "hunter2".to_string())].into()),
            || serde_json::from_str::<EnvString>("\"$SECRET\"").unwrap(),
        );
        assert_eq!(s.value(), "hunter2");
        assert_eq!(format!("{s:?}"), "\"$SECRET\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"$SECRET\"");
    }
}
