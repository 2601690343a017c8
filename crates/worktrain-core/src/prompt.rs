//! Prompt rendering: `{{goal}}`, `{{workspace}}`, `{{session.id}}`,
//! `{{context.some.path}}` and loop variables (`{{slice.title}}`, `{{index}}`) are substituted; an unset value is rendered visibly as
//! `⟨unset: context.some.path⟩` so neither the agent nor the author mistakes it for
//! content.

use serde_json::{Map, Value};

use crate::condition::ContextPath;

/// Values available to prompt templates.
pub struct PromptVars<'a> {
    /// Session goal.
    pub goal: &'a str,
    /// Workspace, when set.
    pub workspace: Option<&'a str>,
    /// Session id, rendered.
    pub session_id: &'a str,
    /// Session context.
    pub context: &'a Map<String, Value>,
}

/// Render a template.
pub fn render(template: &str, vars: &PromptVars<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = after[..end].trim();
        out.push_str(&resolve(expr, vars));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
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
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if let Some(p) = after[..end].trim().strip_prefix("context.") {
            out.push(p.to_owned());
        }
        rest = &after[end + 2..];
    }
    out
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
}
