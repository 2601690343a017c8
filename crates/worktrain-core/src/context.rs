//! Session context: a JSON object agents and operators write through context deltas.
//! A delta merges top-level keys (a key's value is replaced whole); `null` deletes a key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode, Retry};

/// Configurable size limits on what an agent submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct Limits {
    /// Maximum notes size per submission, in bytes.
    pub notes_bytes: usize,
    /// Maximum size of the whole session context (serialized JSON), in bytes.
    pub context_bytes: usize,
    /// Maximum size of one artifact (serialized JSON), in bytes.
    pub artifact_bytes: usize,
    /// Maximum number of artifacts per submission.
    pub artifacts_per_submission: usize,
    /// Maximum size of one stored blob, in bytes.
    pub blob_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            notes_bytes: 64 * 1024,
            context_bytes: 256 * 1024,
            artifact_bytes: 1024 * 1024,
            artifacts_per_submission: 16,
            blob_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Whether a top-level context key is reserved for worktrain (`worktrain`, or starting with `_`).
pub fn is_reserved_key(key: &str) -> bool {
    key == "worktrain" || key.starts_with('_')
}

/// Check a delta's keys.
pub fn check_delta_keys(delta: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(key) = delta.keys().find(|k| is_reserved_key(k)) {
        return Err(ApiError::new(
            ErrorCode::ReservedContextKey,
            format!("context key `{key}` is reserved for worktrain"),
            Retry::AfterFix,
            "rename the key: `worktrain` and keys starting with `_` are reserved",
        ));
    }
    if let Some(key) = delta.keys().find(|k| k.is_empty() || k.contains('.')) {
        return Err(ApiError::invalid_input(
            format!("context key `{key}` is not allowed"),
            "context keys are non-empty and contain no `.` (dots separate path segments)",
        ));
    }
    Ok(())
}

/// Apply a delta to a context: `null` deletes, anything else replaces the key.
pub fn merge(context: &mut Map<String, Value>, delta: &Map<String, Value>) {
    for (k, v) in delta {
        if v.is_null() {
            context.remove(k);
        } else {
            context.insert(k.clone(), v.clone());
        }
    }
}

/// Apply `delta` to a copy of `context`, enforcing the size limit on the result.
pub fn merged(
    context: &Map<String, Value>,
    delta: &Map<String, Value>,
    limits: &Limits,
) -> Result<Map<String, Value>, ApiError> {
    check_delta_keys(delta)?;
    let mut out = context.clone();
    merge(&mut out, delta);
    let size = serde_json::to_vec(&out)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limits.context_bytes {
        return Err(ApiError::new(
            ErrorCode::ContextTooLarge,
            format!(
                "the session context would be {size} bytes, over the limit of {} bytes",
                limits.context_bytes
            ),
            Retry::AfterFix,
            "keep context to small facts that drive routing; put large content in notes or artifacts, or delete keys with null",
        ));
    }
    Ok(out)
}

/// Parse a `key=value` assignment from the CLI: the value is JSON when it parses as JSON
/// (`n=3`, `ok=true`, `x=null`, `l=[1,2]`), otherwise a string.
pub fn parse_assignment(s: &str) -> Result<(String, Value), ApiError> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        ApiError::invalid_input(
            format!("`{s}` is not a key=value assignment"),
            "write context values as key=value, e.g. --set risk=low or --set attempts=3",
        )
    })?;
    let key = k.trim().to_owned();
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn null_deletes_and_values_replace() {
        let ctx = obj(json!({"a": 1, "b": {"x": 1}, "c": 3}));
        let out = merged(
            &ctx,
            &obj(json!({"a": null, "b": {"y": 2}, "d": "new"})),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"b": {"y": 2}, "c": 3, "d": "new"})
        );
    }

    #[test]
    fn reserved_and_oversized_are_rejected() {
        let e = merged(&Map::new(), &obj(json!({"_secret": 1})), &Limits::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ReservedContextKey);
        let e = merged(
            &Map::new(),
            &obj(json!({"worktrain": 1})),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ReservedContextKey);
        let e = merged(&Map::new(), &obj(json!({"a.b": 1})), &Limits::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        let limits = Limits {
            context_bytes: 10,
            ..Limits::default()
        };
        let e = merged(&Map::new(), &obj(json!({"k": "0123456789"})), &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::ContextTooLarge);
    }

    #[test]
    fn assignments_parse_json_or_string() {
        assert_eq!(parse_assignment("n=3").unwrap(), ("n".into(), json!(3)));
        assert_eq!(
            parse_assignment("s=hello world").unwrap(),
            ("s".into(), json!("hello world"))
        );
        assert_eq!(
            parse_assignment("x=null").unwrap(),
            ("x".into(), Value::Null)
        );
        assert!(parse_assignment("novalue").is_err());
    }
}
