//! Prompt rendering: `{{goal}}`, `{{workspace}}`, `{{session.id}}`,
//! `{{context.some.path}}` and loop variables (`{{slice.title}}`, `{{index}}`) are substituted; an unset value is rendered visibly as
//! `⟨unset: context.some.path⟩` so neither the agent nor the author mistakes it for
//! content. `\{{` shows a literal `{{` (nothing inside is substituted).

use serde_json::{Map, Value};

use crate::condition::ContextPath;

/// Values available to prompt templates.
#[derive(Debug, Clone, Copy)]
pub struct PromptVars<'a> {
    /// What the session should achieve; `{{goal}}` renders it.
    pub goal: &'a str,
    /// Workspace, when set.
    pub workspace: Option<&'a str>,
    /// Session id, rendered.
    pub session_id: &'a str,
    /// Session context; `{{context.<path>}}` reads it.
    pub context: &'a Map<String, Value>,
}

/// One piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text, copied to the output as is.
    Text(&'a str),
    /// `\{{`: a literal `{{` in the rendered text.
    EscapedOpen,
    /// The expression between `{{` and `}}`, untrimmed.
    Expr(&'a str),
}

/// Split a template into literal text, escaped `{{` and `{{…}}` expressions. Every
/// consumer of templates (rendering, linting, routine arguments) uses this one scanner,
/// so they agree on what is a variable.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if rest[..start].ends_with('\\') {
            out.push(Piece::Text(&rest[..start - 1]));
            out.push(Piece::EscapedOpen);
            rest = &rest[start + 2..];
            continue;
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push(Piece::Text(&rest[..start]));
        out.push(Piece::Expr(&after[..end]));
        rest = &after[end + 2..];
    }
    out.push(Piece::Text(rest));
    out.retain(|p| *p != Piece::Text(""));
    out
}

/// Render a template.
pub fn render(template: &str, vars: &PromptVars<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::EscapedOpen => out.push_str("{{"),
            Piece::Expr(e) => out.push_str(&resolve(e.trim(), vars)),
        }
    }
    out
}

fn resolve(expr: &str, vars: &PromptVars<'_>) -> String {
    let unset = || format!("⟨unset: {expr}⟩");
    match expr {
        "goal" => vars.goal.to_owned(),
        "workspace" => vars.workspace.map(str::to_owned).unwrap_or_else(unset),
        "session.id" => vars.session_id.to_owned(),
        _ => {
            // `{{context.x}}` reads the context; a bare `{{x}}` reads the same scope, which
            // also holds loop variables (`forEach` item/index) and `worktrain.loops`.
            let path = expr.strip_prefix("context.").unwrap_or(expr);
            let Ok(path) = ContextPath::parse(path) else {
                return unset();
            };
            let ctx = Value::Object(vars.context.clone());
            match path.lookup(&ctx) {
                None | Some(Value::Null) => unset(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }
        }
    }
}

/// The context paths a template reads (`{{context.x.y}}` → `x.y`), for linting.
pub fn referenced_context_paths(template: &str) -> Vec<String> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Expr(e) => e.trim().strip_prefix("context.").map(str::to_owned),
            Piece::Text(_) | Piece::EscapedOpen => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_and_marks_unset() {
        let ctx = json!({"size": "small", "n": 2, "deep": {"x": [1, 2]}});
        let vars = PromptVars {
            goal: "fix the bug",
            workspace: None,
            session_id: "ses_x",
            context: ctx.as_object().unwrap(),
        };
        let out = render(
            "Goal: {{goal}}; size {{ context.size }}; n={{context.n}}; x={{context.deep.x}}; {{context.nope}}; {{workspace}}; {{weird}} {{unclosed",
            &vars,
        );
        assert_eq!(
            out,
            "Goal: fix the bug; size small; n=2; x=[1,2]; ⟨unset: context.nope⟩; ⟨unset: workspace⟩; ⟨unset: weird⟩ {{unclosed"
        );
        assert_eq!(
            referenced_context_paths("{{context.a}} {{goal}} {{context.b.c}}"),
            vec!["a", "b.c"]
        );
    }

    #[test]
    fn escaped_braces_render_literally() {
        let ctx = json!({"n": 2});
        let vars = PromptVars {
            goal: "g",
            workspace: None,
            session_id: "s",
            context: ctx.as_object().unwrap(),
        };
        assert_eq!(
            render(
                r"Item \{{index + 1}} of {{n}}; \{{context.n}}; \{{ alone",
                &vars
            ),
            "Item {{index + 1}} of 2; {{context.n}}; {{ alone"
        );
        assert!(referenced_context_paths(r"\{{context.n}}").is_empty());
        assert_eq!(
            pieces(r"a\{{b}}{{c}}"),
            vec![
                Piece::Text("a"),
                Piece::EscapedOpen,
                Piece::Text("b}}"),
                Piece::Expr("c")
            ]
        );
    }
}
