//! Prompt composition: product preamble, workflow guidance, workspace rules files,
//! recap of earlier steps, the step itself.

use std::fmt::Write as _;
use std::path::Path;

use worktrain_core::response::Intent;

use crate::driver::{RecapItem, StepBrief};

/// The product preamble for the built-in loop.
pub const PREAMBLE: &str = "You are a coding agent run by worktrain, an automated control plane. \
You work autonomously inside a git worktree on a workflow, one step at a time; nobody is \
watching interactively, so do not ask questions — decide, act, and explain in your notes. \
Use the tools to inspect and change files and to run commands. When the current step's \
work is done, call `complete_step` with your notes (and the artifacts/context the step \
asks for). worktrain then gives you the next step, or blockers to fix, or tells you the \
workflow is complete. Keep going until the workflow is complete: stopping without \
`complete_step` counts as a failure. If you truly cannot proceed (missing access, broken \
environment), call `report_issue` with `blocking: true`. Do not commit, push or open pull \
requests: worktrain delivers the work when the workflow is complete.";

/// The preamble for external agents (which advance through worktrain's MCP tools).
pub const EXTERNAL_PREAMBLE: &str = "You are run by worktrain, an automated control plane, \
inside a git worktree, on one step of a workflow. Nobody is watching interactively: do not \
ask questions. Do the step below, then submit it with the worktrain MCP server's tools \
(the session is already started; worktrain supplies the step token). If the answer lists \
blockers, fix them and submit again. Do not commit, push or open pull requests.";

/// Workspace rules files read from the worktree root, in order.
pub const DEFAULT_RULES_FILES: [&str; 3] = ["AGENTS.md", "CLAUDE.md", ".cursorrules"];

/// The rules files present in `root`, each capped at `max_bytes`: (name, text).
pub fn rules_files(root: &Path, names: &[String], max_bytes: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in names {
        let p = root.join(name);
        // Only regular files directly in the root (no symlinks out of the worktree).
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.len() > max_bytes {
            let mut cut = max_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[... truncated]");
        }
        if !text.trim().is_empty() {
            out.push((name.clone(), text));
        }
    }
    out
}

/// Everything the system prompt is made of.
#[derive(Debug, Clone)]
pub struct PromptParts<'a> {
    /// The product preamble, put first in every system prompt.
    pub preamble: &'a str,
    /// Worktree path shown to the agent.
    pub worktree: &'a Path,
    /// Rules files (name, text).
    pub rules: &'a [(String, String)],
    /// Notes of the earlier steps on the current path (bounded by the recap budget).
    pub recap: &'a [RecapItem],
    /// The current step.
    pub step: &'a StepBrief,
    /// Max bytes of recap notes (older entries are shortened first).
    pub recap_budget: usize,
}

/// The system prompt.
pub fn system_prompt(p: &PromptParts<'_>) -> String {
    let mut s = String::new();
    s.push_str("# worktrain\n\n");
    s.push_str(p.preamble);
    let _ = write!(s, "\n\nWorktree: {}\n", p.worktree.display());
    if !p.step.guidance.is_empty() {
        s.push_str("\n# Workflow guidance\n\n");
        for g in &p.step.guidance {
            let _ = writeln!(s, "- {}", g.trim());
        }
    }
    for (name, text) in p.rules {
        let _ = write!(s, "\n# Workspace rules ({name})\n\n{}\n", text.trim_end());
    }
    if !p.recap.is_empty() {
        s.push_str("\n# Earlier steps (your notes)\n");
        let mut budget = p.recap_budget;
        // Newest notes matter most: fill from the end, then print in order.
        let mut shown: Vec<(usize, String)> = Vec::new();
        for (i, r) in p.recap.iter().enumerate().rev() {
            let notes = if r.notes.len() <= budget {
                r.notes.clone()
            } else {
                let mut cut = budget;
                while !r.notes.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}[… shortened]", &r.notes[..cut])
            };
            budget = budget.saturating_sub(notes.len());
            shown.push((i, notes));
        }
        shown.reverse();
        for (i, notes) in shown {
            let r = &p.recap[i];
            let _ = write!(s, "\n## {}. {}\n\n{}\n", i + 1, r.title, notes.trim_end());
        }
    }
    s.push_str(&step_section(p.step));
    s
}

/// The "current step" section: title, prompt, output contract, blockers.
pub fn step_section(step: &StepBrief) -> String {
    let mut s = String::new();
    if !step.goal.trim().is_empty() {
        let _ = write!(s, "\n# Session goal\n\n{}\n", step.goal.trim());
    }
    let _ = write!(
        s,
        "\n# Current step ({} of {}): {}\n\n{}\n",
        step.index,
        step.total,
        step.title,
        step.prompt.trim_end()
    );
    s.push_str("\n## What to submit with complete_step\n\n");
    if step.notes_optional {
        s.push_str("- notes: optional.\n");
    } else {
        s.push_str("- notes: required — what you did and found, in markdown.\n");
    }
    if let Some(c) = &step.contract {
        let example = serde_json::to_string_pretty(&c.example).unwrap_or_default();
        let _ = write!(
            s,
            "- artifacts: {} `{}` artifact, for example:\n\n```json\n{}\n```\n",
            if c.required {
                "a required"
            } else {
                "an optional"
            },
            c.name,
            example
        );
    }
    if !step.context_outputs.is_empty() {
        let _ = writeln!(
            s,
            "- context: set these keys: {}",
            step.context_outputs.join(", ")
        );
    }
    match step.intent {
        Intent::AskUserThenSubmit => s.push_str(
            "- This step asks for confirmation; in this autonomous session, state your decision and reasoning in the notes instead of asking.\n",
        ),
        Intent::PerformStep | Intent::FixBlockers | Intent::WaitForApproval | Intent::Complete => {}
    }
    if !step.blockers.is_empty() {
        s.push_str("\n## Your last submission of this step was blocked\n\n");
        s.push_str(&worktrain_core::event::render_blockers(&step.blockers, ""));
    }
    s
}

/// The first user message of a step's conversation.
pub fn kickoff(step: &StepBrief, resume_note: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(n) = resume_note {
        let _ = write!(s, "Note from worktrain: {}\n\n", n.trim());
    }
    let _ = write!(
        s,
        "Do the current step ({} of {}: {}) described in the system prompt. \
         When it is done, call complete_step.",
        step.index, step.total, step.title
    );
    if !step.blockers.is_empty() {
        s.push_str(" Your previous submission was blocked; fix the blockers listed there first.");
    }
    s
}

/// The prompt for an external agent: preamble, guidance, rules, recap and the step.
pub fn external_prompt(
    preamble: &str,
    worktree: &Path,
    rules: &[(String, String)],
    step: &StepBrief,
    extra: &[String],
) -> String {
    let mut s = system_prompt(&PromptParts {
        preamble,
        worktree,
        rules,
        recap: &step.recap,
        step,
        recap_budget: 16 * 1024,
    });
    for e in extra {
        let _ = write!(s, "\n{}\n", e.trim_end());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goal_reaches_the_step_section() {
        let mut step = StepBrief::new("n1#1", "Plan", "Plan the change.");
        assert!(!step_section(&step).contains("Session goal"));
        step.goal = "Fix the flaky login test".into();
        let text = step_section(&step);
        assert!(
            text.contains("# Session goal\n\nFix the flaky login test"),
            "{text}"
        );
    }
}
