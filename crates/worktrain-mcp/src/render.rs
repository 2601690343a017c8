//! Compact markdown renderings of tool results: what a model reads first. The same facts
//! are in the structured content; the text adds what to do next, in words.

use std::fmt::Write as _;

use serde_json::Value;
use worktrain_core::condition::Condition;
use worktrain_core::contract::ContractName;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::render_blockers;
use worktrain_core::response::{Outcome, StepResponse};
use worktrain_engine::catalog::CatalogEntry;

/// `writeln!` into a `String` cannot fail; this keeps the renderers free of `let _ =`.
macro_rules! ln {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($t:tt)*) => {{
        let _ = writeln!($out, $($t)*);
    }};
}

/// A step response: outcome, step, prompt, guidance, contract, blockers, tokens.
pub(crate) fn step(r: &StepResponse, replayed: bool) -> String {
    let mut out = String::new();
    let outcome = r.outcome.as_str();
    ln!(
        out,
        "**{}** · session `{}` · workflow `{}` v{} · {}/{} steps done{}",
        outcome.to_uppercase(),
        r.session_id,
        r.workflow.id,
        r.workflow.version,
        r.progress.completed,
        r.progress.total,
        if r.progress.skipped > 0 {
            format!(", {} skipped", r.progress.skipped)
        } else {
            String::new()
        }
    );
    if replayed {
        ln!(
            out,
            "(Replayed: this exact output was already recorded for this token. Nothing changed; this is the recorded response.)"
        );
    }
    if !r.recap.is_empty() {
        ln!(out);
        ln!(out, "### Earlier steps (your notes)");
        for e in &r.recap {
            ln!(out, "#### {} (`{}`, {})", e.title, e.step_id, e.node);
            ln!(out, "{}", e.notes.trim_end());
        }
    }
    match &r.step {
        Some(s) => {
            ln!(out);
            ln!(
                out,
                "## Step {}/{}: {} (`{}`, node {}, attempt {})",
                s.index,
                r.progress.total,
                s.title,
                s.id,
                s.node,
                s.attempt
            );
            ln!(out);
            ln!(out, "{}", s.prompt.trim_end());
            if !s.guidance.is_empty() {
                ln!(out);
                ln!(out, "**Guidance**");
                for g in &s.guidance {
                    ln!(out, "- {g}");
                }
            }
            if let Some(c) = &s.output_contract {
                ln!(out);
                ln!(
                    out,
                    "**Output contract:** include an artifact of kind `{}` ({}). Example:",
                    c.contract,
                    if c.required { "required" } else { "optional" }
                );
                ln!(out, "```json");
                ln!(out, "{}", c.example);
                ln!(out, "```");
            }
            // Step features read from the wire form, so every field the engine adds to a
            // step view reaches the model even before this renderer knows it by name.
            let view = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Some(lp) = view.get("loop").filter(|v| v.is_object()) {
                ln!(out);
                ln!(
                    out,
                    "Loop `{}`: pass {} of at most {}.",
                    lp.get("id").and_then(Value::as_str).unwrap_or("?"),
                    lp.get("pass").unwrap_or(&Value::Null),
                    lp.get("max_iterations").unwrap_or(&Value::Null)
                );
            }
            if let Some(keys) = view
                .get("context_outputs")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
            {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| format!("`{}`", k.as_str().unwrap_or_default()))
                    .collect();
                ln!(out);
                ln!(
                    out,
                    "**Context to set:** submit `context` with {} (later steps read them).",
                    keys.join(", ")
                );
            }
            if let Some(d) = view.get("delegation").filter(|v| v.is_object()) {
                ln!(out);
                ln!(
                    out,
                    "**Delegation** (join: {}): run these child workflows, each with `start_workflow`, and finish them before submitting this step:",
                    d.get("join").and_then(Value::as_str).unwrap_or("all")
                );
                for c in d
                    .get("children")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let context = c
                        .get("context")
                        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                        .map(|v| format!(", context `{v}`"))
                        .unwrap_or_default();
                    ln!(
                        out,
                        "- workflow `{}`, goal \"{}\"{context}",
                        c.get("workflow").and_then(Value::as_str).unwrap_or("?"),
                        c.get("goal").and_then(Value::as_str).unwrap_or("")
                    );
                }
            }
            if s.notes_optional {
                ln!(out);
                ln!(out, "Notes are optional for this step.");
            }
            if s.requires_confirmation {
                let who = view.get("gate").and_then(Value::as_str);
                ln!(out);
                ln!(
                    out,
                    "**Ask the user first:** show them your result for this step and get their confirmation before you submit it{}.",
                    who.map(|g| format!(" (gate: {g})")).unwrap_or_default()
                );
            }
        }
        None => {
            ln!(out);
            ln!(
                out,
                "## Workflow complete\n\n{} steps completed, {} skipped. Nothing more to submit: report the result to the user.",
                r.progress.completed,
                r.progress.skipped
            );
        }
    }
    if !r.blockers.is_empty() {
        ln!(out);
        ln!(
            out,
            "### Blocked — your submission was recorded but not accepted"
        );
        out.push_str(&render_blockers(&r.blockers, ""));
    }
    ln!(out);
    ln!(out, "---");
    ln!(out, "**Next:** {}", r.next);
    match &r.tokens.advance {
        Some(t) if r.outcome == Outcome::Blocked => ln!(
            out,
            "- resubmit: `continue_workflow` with the NEW token `{t}` (the previous one is used up)"
        ),
        Some(t) => ln!(
            out,
            "- submit: `continue_workflow` with token `{t}`{}",
            match r.step.as_ref().and_then(|s| s.output_contract.as_ref()) {
                Some(c) if c.required => format!(", your notes and the `{}` artifact", c.contract),
                Some(c) => format!(
                    ", your notes and (optionally) the `{}` artifact",
                    c.contract
                ),
                None => " and your notes".to_owned(),
            }
        ),
        None => {}
    }
    if let Some(t) = &r.tokens.checkpoint {
        ln!(
            out,
            "- save progress without finishing: `checkpoint_workflow` with token `{t}`"
        );
    }
    ln!(
        out,
        "- find this session again (rehydrate, rewind): resume token `{}`",
        r.tokens.resume
    );
    out
}

/// What `retry` means, in words a model can act on.
fn retry_text(r: Retry) -> &'static str {
    match r {
        Retry::Same => "transient — the same call may succeed if you retry it",
        Retry::AfterFix => "change the request as the hint says, then call again",
        Retry::AfterRehydrate => {
            "call `continue_workflow` with intent \"rehydrate\" and any token of this session to get the current step and fresh tokens, then continue with those"
        }
        Retry::Never => "retrying will not help",
    }
}

/// An error: code, message, what retrying means and the hint.
pub(crate) fn error(e: &ApiError) -> String {
    let mut out = String::new();
    ln!(out, "**Error `{}`:** {}", e.code, e.message);
    ln!(out, "Retry: {}.", retry_text(e.retry));
    if !e.hint.is_empty() {
        ln!(out, "Hint: {}", e.hint);
    }
    if matches!(
        e.code,
        ErrorCode::TokenMalformed | ErrorCode::TokenBadSignature
    ) {
        ln!(
            out,
            "Tokens must be copied exactly as returned (61 characters, starting with \"wt1.\"). If you lost the token, `resume_session` finds the session and returns a resume token."
        );
    }
    out
}

/// The workflow list.
pub(crate) fn workflows(entries: &[&CatalogEntry]) -> String {
    let mut out = String::new();
    let failed = entries.iter().filter(|e| e.error.is_some()).count();
    if entries.is_empty() {
        ln!(out, "No workflows match.");
        return out;
    }
    ln!(
        out,
        "{} workflow(s){}:",
        entries.len() - failed,
        if failed > 0 {
            format!(" and {failed} file(s) that failed to load")
        } else {
            String::new()
        }
    );
    for e in entries {
        if let Some(err) = &e.error {
            ln!(
                out,
                "- `{}` ({} {}) — FAILED TO LOAD: {err}",
                e.id,
                e.source.as_str(),
                e.location
            );
            continue;
        }
        let tags = if e.tags.is_empty() {
            String::new()
        } else {
            format!(" · tags: {}", e.tags.join(", "))
        };
        let shadow = e
            .shadowed_by
            .as_deref()
            .map(|s| format!(" · shadowed by {s} (starting `{}` uses that one)", e.id))
            .unwrap_or_default();
        ln!(
            out,
            "- `{}` — {} (v{}, {}){tags}{shadow}",
            e.id,
            e.name.as_deref().unwrap_or("-"),
            e.version.as_deref().unwrap_or("-"),
            e.source.as_str()
        );
        if let Some(d) = &e.description {
            ln!(out, "  {}", d.trim());
        }
    }
    ln!(out);
    ln!(
        out,
        "Start one with `start_workflow` (workflow id, goal, workspace); `inspect_workflow` shows its steps first."
    );
    out
}

/// A workflow's metadata and compiled outline, rendered from the compiled program's JSON
/// so that every step feature the compiler knows (conditions, gates, jumps, loops, …)
/// shows up even when this renderer does not know it by name.
pub(crate) fn inspect(wf: &Value, source: &str, hash: &str) -> String {
    let mut out = String::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    ln!(
        out,
        "# {} — {} (v{})",
        s(wf, "id"),
        s(wf, "name"),
        s(wf, "version")
    );
    ln!(out, "source: {source} · sha256 {hash}");
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let tags = strings(wf.get("tags"));
    if !tags.is_empty() {
        ln!(out, "tags: {}", tags.join(", "));
    }
    ln!(out);
    ln!(out, "{}", s(wf, "description").trim());
    let guidance = strings(wf.get("guidance"));
    if !guidance.is_empty() {
        ln!(out);
        ln!(out, "**Guidance (shown with every step)**");
        for g in &guidance {
            ln!(out, "- {g}");
        }
    }
    let steps = wf
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let loops = wf
        .get("loops")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let loop_id = |i: &Value| {
        i.as_u64()
            .and_then(|i| loops.get(i as usize))
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    ln!(out);
    ln!(out, "## Steps");
    for (i, step) in steps.iter().enumerate() {
        ln!(
            out,
            "{}. **{}** (`{}`)",
            i + 1,
            s(step, "title"),
            s(step, "id")
        );
        let Some(fields) = step.as_object() else {
            continue;
        };
        let prompt = s(step, "prompt");
        let first = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        ln!(out, "   - prompt: {}", first.trim());
        for (key, value) in fields {
            match key.as_str() {
                "id" | "title" | "pc" | "prompt" => {}
                "runCondition" => ln!(
                    out,
                    "   - runs only if {} (otherwise skipped, and recorded as skipped)",
                    condition(value)
                ),
                "notesOptional" => {
                    if value == &Value::Bool(true) {
                        ln!(out, "   - notes optional");
                    }
                }
                "outputContract" => {
                    let name = value.get("contract").cloned().unwrap_or(Value::Null);
                    let required = value.get("required") != Some(&Value::Bool(false));
                    let example = serde_json::from_value::<ContractName>(name.clone())
                        .map(|c| format!("; example: `{}`", c.example()))
                        .unwrap_or_default();
                    ln!(
                        out,
                        "   - produces a `{}` artifact ({}){example}",
                        name.as_str().unwrap_or("?"),
                        if required { "required" } else { "optional" }
                    );
                }
                "confirmation" => ln!(
                    out,
                    "   - needs confirmation ({}){} before the workflow goes on",
                    value.get("kind").and_then(Value::as_str).unwrap_or("?"),
                    value
                        .get("when")
                        .map(|w| format!(" if {}", condition(w)))
                        .unwrap_or_default()
                ),
                "contextOutputs" => ln!(out, "   - must set context: {}", names(value)),
                "fragments" => {
                    for f in value.as_array().into_iter().flatten() {
                        let text = f.get("text").and_then(Value::as_str).unwrap_or("");
                        ln!(
                            out,
                            "   - adds to the prompt if {}: {}",
                            f.get("when").map(condition).unwrap_or_default(),
                            clip(text, 160)
                        );
                    }
                }
                "jump" => ln!(
                    out,
                    "   - on completion, jumps back to `{}` if {} (at most {} times)",
                    s(value, "target"),
                    value.get("condition").map(condition).unwrap_or_default(),
                    value.get("maxJumps").unwrap_or(&Value::Null)
                ),
                "decides" => ln!(
                    out,
                    "   - decides whether loop `{}` runs another pass (`loop_control` artifact)",
                    loop_id(value)
                ),
                "delegation" => {
                    let children: Vec<String> = value
                        .get("children")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|c| format!("`{}` (goal: {})", s(c, "workflow"), s(c, "goal").trim()))
                        .collect();
                    ln!(
                        out,
                        "   - delegates to child workflows (join: {}): {}",
                        value.get("join").and_then(Value::as_str).unwrap_or("all"),
                        children.join("; ")
                    );
                }
                other => ln!(out, "   - {other}: `{value}`"),
            }
        }
    }
    if !loops.is_empty() {
        ln!(out);
        ln!(out, "## Loops");
        for (i, l) in loops.iter().enumerate() {
            let pc = |k: &str| l.get(k).and_then(Value::as_u64).unwrap_or(0);
            let (head, tail) = (pc("head"), pc("tail"));
            let inside: Vec<String> = steps
                .iter()
                .filter(|st| {
                    st.get("pc")
                        .and_then(Value::as_u64)
                        .is_some_and(|p| p > head && p < tail)
                })
                .map(|st| format!("`{}`", s(st, "id")))
                .collect();
            let kind = l.get("kind").cloned().unwrap_or(Value::Null);
            let rule = match kind.get("kind").and_then(Value::as_str) {
                Some("while") => format!(
                    "while {}",
                    kind.get("condition").map(condition).unwrap_or_default()
                ),
                Some("until") => format!(
                    "until {}",
                    kind.get("condition").map(condition).unwrap_or_default()
                ),
                Some("for") => match (kind.get("count"), kind.get("var")) {
                    (Some(n), _) => format!("{n} passes"),
                    (None, Some(v)) => format!(
                        "`{}` passes (read from the context)",
                        v.as_str().unwrap_or("?")
                    ),
                    _ => "a fixed number of passes".to_owned(),
                },
                Some("for_each") => {
                    format!("for each `{}` in `{}`", s(&kind, "item"), s(&kind, "over"))
                }
                Some("decision") => "until its decision step says stop".to_owned(),
                _ => format!("`{kind}`"),
            };
            ln!(
                out,
                "{}. `{}` — {}: {rule}, at most {} passes; steps {}",
                i + 1,
                s(l, "id"),
                s(l, "title"),
                l.get("maxIterations").unwrap_or(&Value::Null),
                inside.join(", ")
            );
        }
    }
    ln!(out);
    ln!(
        out,
        "Start it with `start_workflow` (workflow `{}`, a goal, your workspace path).",
        s(wf, "id")
    );
    out
}

/// One line of at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max).collect();
    format!("{}…", cut.trim_end())
}

/// `["a", "b"]` as "`a`, `b`".
fn names(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|k| format!("`{}`", k.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A condition in its readable form, or its JSON when it is not one this build parses.
fn condition(v: &Value) -> String {
    serde_json::from_value::<Condition>(v.clone())
        .map(|c| c.to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// One resume candidate, as rendered.
pub(crate) struct Candidate<'a> {
    pub session_id: String,
    pub workflow: &'a str,
    pub goal: &'a str,
    pub status: &'a str,
    pub step: Option<(String, String)>,
    pub updated: String,
    pub branch: Option<&'a str>,
    pub workspace: Option<&'a str>,
    pub resume_token: &'a str,
}

/// The resume candidates.
pub(crate) fn sessions(found: &[Candidate<'_>], filter: &str) -> String {
    let mut out = String::new();
    if found.is_empty() {
        ln!(out, "No sessions match{filter}.");
        ln!(
            out,
            "Widen the search (drop a filter, or set include_complete), or start a new session with `start_workflow`."
        );
        return out;
    }
    ln!(
        out,
        "{} session(s){filter}, most recently updated first:",
        found.len()
    );
    for (i, c) in found.iter().enumerate() {
        let step = match &c.step {
            Some((id, title)) => format!(" at step `{id}` ({title})"),
            None => String::new(),
        };
        ln!(
            out,
            "{}. `{}` — `{}` — \"{}\" — {}{step} — updated {}",
            i + 1,
            c.session_id,
            c.workflow,
            c.goal,
            c.status,
            c.updated
        );
        let mut place = Vec::new();
        if let Some(w) = c.workspace {
            place.push(format!("workspace {w}"));
        }
        if let Some(b) = c.branch {
            place.push(format!("branch {b}"));
        }
        if !place.is_empty() {
            ln!(out, "   {}", place.join(" · "));
        }
        ln!(out, "   resume token: `{}`", c.resume_token);
    }
    ln!(out);
    ln!(
        out,
        "To pick one up: `continue_workflow` with intent \"rehydrate\" and its resume token — it returns the current step, your earlier notes and fresh tokens."
    );
    out
}
