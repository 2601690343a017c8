//! Prompt text the way WorkRail composes it.
//!
//! Compile time (WorkRail's compiler passes, in order): template calls are expanded,
//! features append to the blocks of `promptBlocks` steps, `wr.refs.*` snippets are
//! resolved, `{{wr.bindings.*}}` tokens become their bound ids, and `promptBlocks` are
//! rendered to text. Render time: `{{var}}` / `{{var.path}}` tokens are substituted from
//! the context (anything else in double braces stays literal), and system sections are
//! appended (output requirements, assessment requirements, fragments). This module
//! produces that text as a worktrain template: WorkRail's tokens become worktrain
//! variables, every other `{{` is escaped (`\{{`) so the agent sees it as WorkRail shows it.

use serde_json::Value;

use crate::cond::Scope;
use crate::registry::{self, Part};
use crate::report::{NoteKind, Notes};
use crate::source::{PromptValue, WrPromptBlocks};

/// Why a prompt cannot be composed (WorkRail's compiler rejects the same).
pub type ComposeError = String;

/// Apply the workflow's features to a step's blocks (features only touch steps that use
/// `promptBlocks`; WorkRail leaves raw `prompt` steps alone).
pub fn apply_features(blocks: &mut WrPromptBlocks, features: &[&'static registry::Feature]) {
    let extend = |list: &mut Option<Vec<PromptValue>>, parts: &[Part]| {
        if parts.is_empty() {
            return;
        }
        let list = list.get_or_insert_with(Vec::new);
        for p in parts {
            list.push(match p {
                Part::Text(t) => PromptValue::Text((*t).to_owned()),
                Part::Ref(r) => PromptValue::Parts(vec![crate::source::PromptPart {
                    kind: "ref".into(),
                    text: None,
                    ref_id: Some((*r).to_owned()),
                }]),
            });
        }
    };
    for f in features {
        extend(&mut blocks.constraints, f.constraints);
        extend(&mut blocks.procedure, f.procedure);
        extend(&mut blocks.verify, f.verify);
    }
}

/// A prompt value as text: parts joined without separator, snippets resolved.
fn value_text(v: &PromptValue, at: &str) -> Result<String, ComposeError> {
    match v {
        PromptValue::Text(t) => Ok(t.clone()),
        PromptValue::Parts(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text, &p.ref_id) {
                    ("text", Some(t), _) => out.push_str(t),
                    ("ref", _, Some(id)) => match registry::snippet(id) {
                        Some(t) => out.push_str(t),
                        None => {
                            return Err(format!(
                                "{at}[{i}]: unknown snippet `{id}` (WorkRail knows: {})",
                                registry::REFS
                                    .iter()
                                    .map(|(k, _)| *k)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    },
                    (kind, _, _) => {
                        return Err(format!(
                            "{at}[{i}]: a prompt part is {{kind: text, text}} or {{kind: ref, refId}}, got kind `{kind}`"
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn values_text(vs: &Option<Vec<PromptValue>>, at: &str) -> Result<Vec<String>, ComposeError> {
    vs.iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| value_text(v, &format!("{at}[{i}]")))
        .collect()
}

/// Render `promptBlocks` as WorkRail does: `## Goal`, `## Constraints` (bullets),
/// `## Procedure` (numbered), `## Output Required` (`- **key**: value`), `## Verify`
/// (bullets), in that order, separated by blank lines; empty sections are left out.
pub fn render_blocks(blocks: &WrPromptBlocks, at: &str) -> Result<String, ComposeError> {
    let mut sections: Vec<String> = Vec::new();
    if let Some(goal) = &blocks.goal {
        sections.push(format!(
            "## Goal\n{}",
            value_text(goal, &format!("{at}.goal"))?
        ));
    }
    let constraints = values_text(&blocks.constraints, &format!("{at}.constraints"))?;
    if !constraints.is_empty() {
        sections.push(format!(
            "## Constraints\n{}",
            constraints
                .iter()
                .map(|c| format!("- {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let procedure = values_text(&blocks.procedure, &format!("{at}.procedure"))?;
    if !procedure.is_empty() {
        sections.push(format!(
            "## Procedure\n{}",
            procedure
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}. {p}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if let Some(out) = &blocks.output_required
        && !out.0.is_empty()
    {
        let mut lines = Vec::new();
        for (k, v) in &out.0 {
            let v = match v {
                Value::String(s) => s.clone(),
                other => {
                    return Err(format!(
                        "{at}.outputRequired.{k}: values are strings, got {other}"
                    ));
                }
            };
            lines.push(format!("- **{k}**: {v}"));
        }
        sections.push(format!("## Output Required\n{}", lines.join("\n")));
    }
    let verify = values_text(&blocks.verify, &format!("{at}.verify"))?;
    if !verify.is_empty() {
        sections.push(format!(
            "## Verify\n{}",
            verify
                .iter()
                .map(|v| format!("- {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if sections.is_empty() {
        return Err(format!(
            "{at}: promptBlocks must contain at least one non-empty section"
        ));
    }
    Ok(sections.join("\n\n"))
}

/// Replace `{{wr.bindings.<slot>}}` with the bound id.
pub fn resolve_bindings(
    text: &str,
    bindings: &[(String, String)],
    at: &str,
    notes: &mut Notes,
) -> Result<String, ComposeError> {
    const OPEN: &str = "{{wr.bindings.";
    if !text.contains(OPEN) {
        return Ok(text.to_owned());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let slot = &after[..end];
        match bindings.iter().find(|(s, _)| s == slot) {
            Some((_, bound)) => {
                out.push_str(bound);
                notes.add(
                    NoteKind::Mapped,
                    at,
                    format!(
                        "`{{{{wr.bindings.{slot}}}}}` is bound to its default `{bound}` (a project's `.workrail/bindings.json` override is not applied: edit the converted file to change it)"
                    ),
                );
            }
            None => {
                return Err(format!(
                    "{at}: `{{{{wr.bindings.{slot}}}}}` names no extension point of this workflow"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Text shown literally: every `{{` escaped.
pub fn literal(text: &str) -> String {
    escape_open(text)
}

fn escape_open(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        out.push_str("\\{{");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// Names worktrain resolves itself in a bare `{{name}}`; a WorkRail variable with one of
/// these roots is addressed through `context.` instead.
const RESERVED_ROOTS: &[&str] = &["goal", "workspace", "session", "context"];

/// A WorkRail render-time template as a worktrain template: `{{ident.path}}` tokens (not
/// in the `wr.` namespace, no spaces) become variables; every other `{{` stays literal.
pub fn template(text: &str, scope: &Scope, at: &str, notes: &mut Notes) -> String {
    enum Piece {
        Lit(String),
        Var(String),
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with("{{")
            && let Some((path, len)) = token(&text[i + 2..])
        {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(path));
            i += 2 + len;
            continue;
        }
        // Advance one character (UTF-8 aware).
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        lit.push_str(&text[i..i + ch_len]);
        i += ch_len;
        let _ = bytes;
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    let mut out = String::with_capacity(text.len());
    for (k, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Lit(l) => out.push_str(&escape_open(l)),
            Piece::Var(path) => {
                let prev_lit = match k.checked_sub(1).map(|j| &pieces[j]) {
                    Some(Piece::Lit(l)) => Some(l.as_str()),
                    _ => None,
                };
                if prev_lit.is_some_and(|l| l.ends_with('{') || l.ends_with('\\')) {
                    notes.add(
                        NoteKind::Differs,
                        at,
                        format!(
                            "`{{{{{path}}}}}` directly after `{}` cannot be written as a worktrain variable; it is shown literally",
                            prev_lit.and_then(|l| l.chars().last()).unwrap_or('{')
                        ),
                    );
                    out.push_str(&format!("\\{{{{{path}}}}}"));
                    continue;
                }
                if path.ends_with(".length") {
                    notes.add(
                        NoteKind::Differs,
                        at,
                        format!("`{{{{{path}}}}}`: WorkRail shows the length of an array or string; worktrain has no length, it shows the value as unset"),
                    );
                }
                let (root, rest) = path.split_once('.').unwrap_or((path.as_str(), ""));
                let renamed = scope.rename(root);
                let full = if rest.is_empty() {
                    renamed.clone()
                } else {
                    format!("{renamed}.{rest}")
                };
                if RESERVED_ROOTS.contains(&root) && renamed == root {
                    out.push_str(&format!("{{{{context.{full}}}}}"));
                } else {
                    out.push_str(&format!("{{{{{full}}}}}"));
                }
            }
        }
    }
    out
}

/// Match WorkRail's context token after `{{`: `[A-Za-z_]\w*(\.[A-Za-z_]\w*)*}}`, not
/// starting with `wr.`. Returns the path and the length consumed (including `}}`).
fn token(s: &str) -> Option<(String, usize)> {
    if s.starts_with("wr.") {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let first = *b.get(i)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        i += 1;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            i += 1;
        }
        match b.get(i) {
            Some(b'.') => i += 1,
            Some(b'}') if b.get(i + 1) == Some(&b'}') => return Some((s[..i].to_owned(), i + 2)),
            _ => return None,
        }
    }
}

/// Whether a text has WorkRail context tokens (titles are rendered by WorkRail but not by
/// worktrain).
pub fn has_tokens(text: &str) -> bool {
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        if token(&rest[i + 2..]).is_some() {
            return true;
        }
        rest = &rest[i + 2..];
    }
    false
}

/// The output requirements WorkRail shows for `validationCriteria` (at most five): only
/// the object form is described (a rule, or an `and` of rules); `or`, `not`, `schema`
/// rules and the array form are not.
pub fn validation_requirements(criteria: &Value) -> Vec<String> {
    fn rule(r: &serde_json::Map<String, Value>) -> Option<String> {
        match r.get("type").and_then(Value::as_str)? {
            "contains" => {
                let v = r
                    .get("value")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())?;
                Some(format!("Must contain: \"{v}\""))
            }
            "regex" => {
                let p = r
                    .get("pattern")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())?;
                let flags = r
                    .get("flags")
                    .and_then(Value::as_str)
                    .filter(|f| !f.is_empty())
                    .map(|f| format!(" (flags: {f})"))
                    .unwrap_or_default();
                Some(format!("Must match pattern: {p}{flags}"))
            }
            "length" => {
                let num = |k: &str| {
                    r.get(k).and_then(Value::as_f64).map(|n| {
                        if n.fract() == 0.0 {
                            format!("{}", n as i64)
                        } else {
                            n.to_string()
                        }
                    })
                };
                let parts: Vec<String> = [
                    num("min").map(|n| format!("≥{n} chars")),
                    num("max").map(|n| format!("≤{n} chars")),
                ]
                .into_iter()
                .flatten()
                .collect();
                (!parts.is_empty()).then(|| format!("Length: {}", parts.join(", ")))
            }
            _ => None,
        }
    }
    fn walk(c: &Value, out: &mut Vec<String>) {
        let Some(m) = c.as_object() else { return };
        if m.contains_key("type") {
            out.extend(rule(m));
        } else if let Some(all) = m.get("and").and_then(Value::as_array) {
            for x in all {
                walk(x, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(criteria, &mut out);
    out.truncate(5);
    out
}

/// A system section: a bold heading and `- ` lines, preceded by a blank line.
pub fn section(heading: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n\n**{heading}**\n{}",
        lines
            .iter()
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The section describing an artifact contract worktrain cannot check, in place of the
/// one WorkRail shows.
pub fn contract_section(contract_ref: &str, required: bool) -> String {
    let kind = registry::contract_kind(contract_ref);
    let mut lines = vec![
        format!("Artifact contract: {contract_ref}"),
        format!(
            "Submit {} artifact with \"kind\": \"{kind}\" with your output.",
            if required { "one" } else { "(optionally) one" }
        ),
    ];
    if let Some(fields) = registry::contract_fields(contract_ref) {
        lines.push("Fields:".into());
        lines.extend(fields.iter().map(|f| format!("  {f}")));
    }
    section("OUTPUT REQUIREMENTS (System):", &lines)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_become_variables_and_the_rest_stays_literal() {
        let mut notes = Notes::default();
        let scope = Scope {
            iteration: Some(("currentIteration".into(), "worktrain.loops.l.pass".into())),
        };
        let out = template(
            "A {{x}} {{ y }} {{a.b_c}} {{wr.bindings.s}} {{i + 1}} {{currentIteration}} {{goal}} {{unclosed",
            &scope,
            "p",
            &mut notes,
        );
        assert_eq!(
            out,
            "A {{x}} \\{{ y }} {{a.b_c}} \\{{wr.bindings.s}} \\{{i + 1}} {{worktrain.loops.l.pass}} {{context.goal}} \\{{unclosed"
        );
        assert!(notes.0.is_empty());
        assert!(has_tokens("x {{a}}"));
        assert!(!has_tokens("x {{ a }}"));
    }

    #[test]
    fn blocks_render_in_workrail_order() {
        let blocks: WrPromptBlocks = serde_json::from_str(
            r#"{"verify": ["v"], "outputRequired": {"z": "last", "a": "first"},
                "procedure": ["one", "two"], "constraints": [[{"kind": "text", "text": "c"}, {"kind": "text", "text": "d"}]],
                "goal": "g"}"#,
        )
        .unwrap();
        assert_eq!(
            render_blocks(&blocks, "b").unwrap(),
            "## Goal\ng\n\n## Constraints\n- cd\n\n## Procedure\n1. one\n2. two\n\n## Output Required\n- **z**: last\n- **a**: first\n\n## Verify\n- v"
        );
        let empty: WrPromptBlocks = serde_json::from_str("{}").unwrap();
        assert!(
            render_blocks(&empty, "b")
                .unwrap_err()
                .contains("at least one")
        );
    }

    #[test]
    fn validation_requirements_like_workrail() {
        let c = serde_json::json!({"and": [
            {"type": "contains", "value": "PASS", "message": "m"},
            {"type": "regex", "pattern": "^x", "flags": "i", "message": "m"},
            {"type": "length", "min": 10, "message": "m"},
            {"type": "schema", "schema": {}, "message": "m"},
            {"or": [{"type": "contains", "value": "no", "message": "m"}]}
        ]});
        assert_eq!(
            validation_requirements(&c),
            [
                "Must contain: \"PASS\"",
                "Must match pattern: ^x (flags: i)",
                "Length: ≥10 chars"
            ]
        );
        assert!(
            validation_requirements(&serde_json::json!([{"type": "contains", "value": "x"}]))
                .is_empty()
        );
    }
}
