//! Concrete changes to a workflow file, applied to its text.
//!
//! A patch is first applied to the parsed document (the meaning of the change); then the
//! same change is made to the text, keeping comments and layout, and the edited text is
//! parsed again and compared with the meaning. When the text edit cannot be made or does
//! not mean the same, the document is re-serialised instead (formatting and comments are
//! then lost, and the result says so).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A change to a workflow file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Patch {
    /// Append a paragraph to a step's prompt.
    AppendToStepPrompt {
        /// Step id.
        step: String,
        /// The paragraph (plain text written by worktrain, never copied from a trace).
        text: String,
    },
    /// Add a line to the workflow's guidance (shown with every step).
    AddGuidance {
        /// The line.
        text: String,
    },
    /// Lower a loop's `maxIterations`.
    LowerLoopBound {
        /// Loop id.
        loop_id: String,
        /// Current bound.
        from: u32,
        /// New bound.
        to: u32,
    },
    /// Make notes required on a step (remove `notesOptional: true`).
    RequireNotes {
        /// Step id.
        step: String,
    },
}

impl Patch {
    /// One line describing it.
    pub fn describe(&self) -> String {
        match self {
            Patch::AppendToStepPrompt { step, .. } => {
                format!("add guidance to the prompt of step `{step}`")
            }
            Patch::AddGuidance { .. } => "add a line to the workflow's guidance".to_owned(),
            Patch::LowerLoopBound { loop_id, from, to } => {
                format!("lower `maxIterations` of loop `{loop_id}` from {from} to {to}")
            }
            Patch::RequireNotes { step } => format!("require notes on step `{step}`"),
        }
    }
}

/// Why a patch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The file does not parse.
    #[error("the workflow file does not parse: {0}")]
    Unreadable(String),
    /// The step or loop is not in the file.
    #[error("`{0}` is not a step or loop of this workflow file (was it renamed?)")]
    NotFound(String),
    /// The change is already there.
    #[error("the change is already in the workflow file")]
    AlreadyApplied,
}

/// The patched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    /// New text.
    pub text: String,
    /// Whether comments and layout were kept (false: the document was re-serialised).
    pub preserved_formatting: bool,
}

fn parse(text: &str, yaml: bool) -> Result<Value, PatchError> {
    if yaml {
        let v: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| PatchError::Unreadable(e.to_string()))?;
        serde_json::to_value(v).map_err(|e| PatchError::Unreadable(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| PatchError::Unreadable(e.to_string()))
    }
}

/// Find the entry (step or loop) with `id`, depth first through loop bodies.
fn find_mut<'v>(steps: &'v mut Value, id: &str) -> Option<&'v mut Value> {
    let arr = steps.as_array_mut()?;
    for e in arr {
        if e.get("id").and_then(Value::as_str) == Some(id) {
            return Some(e);
        }
        if let Some(inner) = e.get_mut("steps")
            && let Some(found) = find_mut(inner, id)
        {
            return Some(found);
        }
    }
    None
}

/// Apply the patch's meaning to a parsed document.
fn apply_value(doc: &mut Value, p: &Patch) -> Result<(), PatchError> {
    match p {
        Patch::AppendToStepPrompt { step, text } => {
            let s = doc
                .get_mut("steps")
                .and_then(|st| find_mut(st, step))
                .ok_or_else(|| PatchError::NotFound(step.clone()))?;
            let prompt = s
                .get("prompt")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::NotFound(step.clone()))?;
            if prompt.contains(text.trim()) {
                return Err(PatchError::AlreadyApplied);
            }
            let joined = format!("{}\n\n{}\n", prompt.trim_end(), text.trim());
            s["prompt"] = Value::String(joined);
        }
        Patch::AddGuidance { text } => {
            let obj = doc
                .as_object_mut()
                .ok_or_else(|| PatchError::Unreadable("not a mapping".into()))?;
            let g = obj
                .entry("guidance")
                .or_insert_with(|| Value::Array(Vec::new()));
            let arr = g
                .as_array_mut()
                .ok_or_else(|| PatchError::Unreadable("`guidance` is not a list".into()))?;
            if arr.iter().any(|x| x.as_str() == Some(text.as_str())) {
                return Err(PatchError::AlreadyApplied);
            }
            arr.push(Value::String(text.clone()));
        }
        Patch::LowerLoopBound { loop_id, to, .. } => {
            let l = doc
                .get_mut("steps")
                .and_then(|st| find_mut(st, loop_id))
                .and_then(|l| l.get_mut("loop"))
                .ok_or_else(|| PatchError::NotFound(loop_id.clone()))?;
            if l.get("maxIterations").and_then(Value::as_u64) == Some(u64::from(*to)) {
                return Err(PatchError::AlreadyApplied);
            }
            l["maxIterations"] = Value::from(*to);
        }
        Patch::RequireNotes { step } => {
            let s = doc
                .get_mut("steps")
                .and_then(|st| find_mut(st, step))
                .ok_or_else(|| PatchError::NotFound(step.clone()))?;
            let obj = s
                .as_object_mut()
                .ok_or_else(|| PatchError::NotFound(step.clone()))?;
            if obj.remove("notesOptional").is_none() {
                return Err(PatchError::AlreadyApplied);
            }
        }
    }
    Ok(())
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The line range of the list item whose `id` is `id`: (line of `- `, first line after,
/// indentation of the item's keys).
fn item_range(lines: &[&str], id: &str) -> Option<(usize, usize, usize)> {
    let quoted = [id.to_owned(), format!("'{id}'"), format!("\"{id}\"")];
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("- id:").or_else(|| t.strip_prefix("id:")) else {
            continue;
        };
        let value = rest.split(" #").next().unwrap_or("").trim();
        if !quoted.iter().any(|q| q == value) {
            continue;
        }
        // The item starts at the `- ` line (this one, or the nearest above at lower indent).
        let (start, dash_indent, key_indent) = if t.starts_with("- ") {
            (i, indent_of(l), indent_of(l) + 2)
        } else {
            let key_indent = indent_of(l);
            let start = (0..i).rev().find(|&j| {
                let lj = lines[j];
                lj.trim_start().starts_with("- ") && indent_of(lj) + 2 == key_indent
            })?;
            (start, indent_of(lines[start]), key_indent)
        };
        let mut end = lines.len();
        for (j, lj) in lines.iter().enumerate().skip(i + 1) {
            if lj.trim().is_empty() || lj.trim_start().starts_with('#') {
                continue;
            }
            if indent_of(lj) <= dash_indent {
                end = j;
                break;
            }
        }
        return Some((start, end, key_indent));
    }
    None
}

/// A key's line within an item (at the item's key indentation).
fn key_line(lines: &[&str], from: usize, to: usize, indent: usize, key: &str) -> Option<usize> {
    (from..to).find(|&j| {
        let l = lines[j];
        let t = l.trim_start();
        let t = t.strip_prefix("- ").unwrap_or(t);
        let ind = if l.trim_start().starts_with("- ") {
            indent_of(l) + 2
        } else {
            indent_of(l)
        };
        ind == indent && t.starts_with(&format!("{key}:"))
    })
}

fn edit_text(text: &str, p: &Patch, doc_before: &Value) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    match p {
        Patch::AppendToStepPrompt { step, text: add } => {
            let (s, e, ind) = item_range(&lines, step)?;
            let k = key_line(&lines, s, e, ind, "prompt")?;
            let after = lines[k].split_once("prompt:")?.1.trim();
            if after.starts_with('|') || after.starts_with('>') {
                // Block scalar: its content is the following lines indented deeper.
                let mut last = k;
                let mut content_indent = None;
                for (j, l) in lines.iter().enumerate().take(e).skip(k + 1) {
                    if l.trim().is_empty() {
                        continue;
                    }
                    if indent_of(l) <= ind {
                        break;
                    }
                    content_indent.get_or_insert(indent_of(l));
                    last = j;
                }
                let ci = content_indent?;
                let pad = " ".repeat(ci);
                let mut ins = vec![String::new()];
                ins.extend(
                    add.trim()
                        .lines()
                        .map(|l| format!("{pad}{l}").trim_end().to_owned()),
                );
                let at = last + 1;
                out.splice(at..at, ins);
                // A `|-`/`>-` strip indicator removes the final newline; keep the
                // meaning equal to "prompt, blank line, text, newline" by using `|`.
                if after.starts_with("|-") || after.starts_with(">-") {
                    out[k] = out[k].replacen(&after[..2], &after[..1], 1);
                }
                if after.starts_with('>') {
                    return None;
                }
            } else {
                // A one-line scalar: rewrite as a block with the parsed value.
                let current = doc_before
                    .get("steps")
                    .and_then(|st| {
                        let mut st = st.clone();
                        find_mut(&mut st, step).map(|v| v.clone())
                    })?
                    .get("prompt")?
                    .as_str()?
                    .to_owned();
                let pad = " ".repeat(ind + 2);
                let head = lines[k].split_once("prompt:")?.0;
                let mut block = vec![format!("{head}prompt: |")];
                for l in current.trim_end().lines() {
                    block.push(format!("{pad}{l}").trim_end().to_owned());
                }
                block.push(String::new());
                for l in add.trim().lines() {
                    block.push(format!("{pad}{l}").trim_end().to_owned());
                }
                out.splice(k..=k, block);
            }
        }
        Patch::AddGuidance { text: add } => {
            let quoted = serde_json::to_string(add).ok()?;
            if let Some(k) = lines.iter().position(|l| l.starts_with("guidance:")) {
                if lines[k].trim_end() != "guidance:" {
                    return None;
                }
                let mut last = k;
                let mut item_indent = 2;
                for (j, l) in lines.iter().enumerate().skip(k + 1) {
                    if l.trim().is_empty() || l.trim_start().starts_with('#') {
                        continue;
                    }
                    if indent_of(l) == 0 {
                        break;
                    }
                    if l.trim_start().starts_with("- ") {
                        item_indent = indent_of(l);
                    }
                    last = j;
                }
                out.insert(last + 1, format!("{}- {quoted}", " ".repeat(item_indent)));
            } else {
                let k = lines.iter().position(|l| l.starts_with("steps:"))?;
                out.splice(k..k, ["guidance:".to_owned(), format!("  - {quoted}")]);
            }
        }
        Patch::LowerLoopBound { loop_id, to, .. } => {
            let (s, e, _) = item_range(&lines, loop_id)?;
            let j = (s..e).find(|&j| lines[j].trim_start().starts_with("maxIterations:"))?;
            let head = lines[j].split_once("maxIterations:")?.0;
            let comment = lines[j]
                .split_once(" #")
                .map(|(_, c)| format!(" #{c}"))
                .unwrap_or_default();
            out[j] = format!("{head}maxIterations: {to}{comment}");
        }
        Patch::RequireNotes { step } => {
            let (s, e, ind) = item_range(&lines, step)?;
            let j = key_line(&lines, s, e, ind, "notesOptional")?;
            if lines[j].trim_start().starts_with("- ") {
                return None;
            }
            out.remove(j);
        }
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    Some(joined)
}

/// Apply a patch to a workflow file's text (`yaml`: YAML, else JSON).
pub fn apply(text: &str, yaml: bool, patch: &Patch) -> Result<Patched, PatchError> {
    let before = parse(text, yaml)?;
    let mut wanted = before.clone();
    apply_value(&mut wanted, patch)?;
    if yaml
        && let Some(edited) = edit_text(text, patch, &before)
        && parse(&edited, true).is_ok_and(|v| v == wanted)
    {
        return Ok(Patched {
            text: edited,
            preserved_formatting: true,
        });
    }
    let text = if yaml {
        serde_norway::to_string(&wanted).map_err(|e| PatchError::Unreadable(e.to_string()))?
    } else {
        let mut s = serde_json::to_string_pretty(&wanted)
            .map_err(|e| PatchError::Unreadable(e.to_string()))?;
        s.push('\n');
        s
    };
    Ok(Patched {
        text,
        preserved_formatting: false,
    })
}

/// A unified-style diff of two texts (whole-line, for showing a patch).
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Common prefix and suffix; the middle is shown as removed/added.
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!(
        "@@ -{},{} +{},{} @@\n",
        pre + 1,
        a.len() - pre - suf,
        pre + 1,
        b.len() - pre - suf
    );
    for l in a.iter().take(pre).skip(pre.saturating_sub(3)) {
        out.push_str(&format!(" {l}\n"));
    }
    for l in &a[pre..a.len() - suf] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &b[pre..b.len() - suf] {
        out.push_str(&format!("+{l}\n"));
    }
    for l in a.iter().skip(a.len() - suf).take(3) {
        out.push_str(&format!(" {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const WF: &str = "\
# A workflow with comments that must survive.
schemaVersion: 2
id: fix
name: Fix
description: fix things
version: '1'
guidance:
  - Be careful. # keep
steps:
  - id: plan
    title: Plan
    prompt: Plan the fix for {{goal}}.
    notesOptional: true
  - id: work
    title: Work
    loop:
      maxIterations: 10 # generous
    steps:
      - id: build
        title: Build
        prompt: |
          Build it.

          Then test it.
";

    #[test]
    fn block_prompt_keeps_comments() {
        let p = Patch::AppendToStepPrompt {
            step: "build".into(),
            text: "Lessons: run the tests after each edit.".into(),
        };
        let r = apply(WF, true, &p).unwrap();
        assert!(r.preserved_formatting);
        assert!(
            r.text
                .contains("# A workflow with comments that must survive.")
        );
        assert!(
            r.text.contains(
                "          Then test it.\n\n          Lessons: run the tests after each edit.\n"
            ),
            "{}",
            r.text
        );
        assert_eq!(
            apply(&r.text, true, &p).unwrap_err(),
            PatchError::AlreadyApplied
        );
    }

    #[test]
    fn plain_prompt_becomes_a_block() {
        let p = Patch::AppendToStepPrompt {
            step: "plan".into(),
            text: "Say which files you will change.".into(),
        };
        let r = apply(WF, true, &p).unwrap();
        assert!(r.preserved_formatting, "{}", r.text);
        assert!(r.text.contains("    prompt: |\n      Plan the fix for {{goal}}.\n\n      Say which files you will change.\n"), "{}", r.text);
    }

    #[test]
    fn guidance_loop_bound_and_notes() {
        let r = apply(
            WF,
            true,
            &Patch::AddGuidance {
                text: "Keep output small.".into(),
            },
        )
        .unwrap();
        assert!(r.preserved_formatting);
        assert!(
            r.text
                .contains("  - Be careful. # keep\n  - \"Keep output small.\"\n"),
            "{}",
            r.text
        );
        let r = apply(
            WF,
            true,
            &Patch::LowerLoopBound {
                loop_id: "work".into(),
                from: 10,
                to: 4,
            },
        )
        .unwrap();
        assert!(r.preserved_formatting);
        assert!(r.text.contains("maxIterations: 4 # generous"), "{}", r.text);
        let r = apply(
            WF,
            true,
            &Patch::RequireNotes {
                step: "plan".into(),
            },
        )
        .unwrap();
        assert!(r.preserved_formatting);
        assert!(!r.text.contains("notesOptional"));
        assert_eq!(
            apply(
                &r.text,
                true,
                &Patch::RequireNotes {
                    step: "plan".into()
                }
            )
            .unwrap_err(),
            PatchError::AlreadyApplied
        );
        assert!(matches!(
            apply(
                WF,
                true,
                &Patch::RequireNotes {
                    step: "nope".into()
                }
            )
            .unwrap_err(),
            PatchError::NotFound(_)
        ));
    }

    #[test]
    fn json_is_reserialised() {
        let json = r#"{"schemaVersion": 2, "id": "fix", "name": "F", "description": "d", "version": "1",
            "steps": [{"id": "plan", "title": "Plan", "prompt": "Plan."}]}"#;
        let r = apply(
            json,
            false,
            &Patch::AppendToStepPrompt {
                step: "plan".into(),
                text: "More.".into(),
            },
        )
        .unwrap();
        assert!(!r.preserved_formatting);
        let v: Value = serde_json::from_str(&r.text).unwrap();
        assert_eq!(v["steps"][0]["prompt"], "Plan.\n\nMore.\n");
        let d = diff(json, &r.text);
        assert!(d.contains('+'));
    }
}
