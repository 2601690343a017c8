//! Pull/merge request bodies from the repository's own template, filled from the
//! handoff: headings, checklists and HTML comments are kept; the description goes under
//! the section that asks for it (or on top); GitLab quick actions (`/assign me`) move to
//! the end, where GitLab runs them; a footer names the session, the workflow and the
//! console link, with a hidden marker.

use serde_json::Value;

/// Where GitHub looks for a pull request template, in its order of preference.
pub const GITHUB_PATHS: &[&str] = &[
    ".github/pull_request_template.md",
    ".github/PULL_REQUEST_TEMPLATE.md",
    "docs/pull_request_template.md",
    "docs/PULL_REQUEST_TEMPLATE.md",
    "pull_request_template.md",
    "PULL_REQUEST_TEMPLATE.md",
];

/// GitLab's default merge request template.
pub const GITLAB_PATHS: &[&str] = &[".gitlab/merge_request_templates/Default.md"];

/// The directory of several GitHub templates (the first by name is used).
pub const GITHUB_TEMPLATE_DIR: &str = ".github/PULL_REQUEST_TEMPLATE";

/// What goes into the body.
#[derive(Debug, Clone, Default)]
pub struct Fill {
    /// The description (the handoff's `prBody`).
    pub body: String,
    /// Files the work changed, as the handoff lists them (`filesChanged`); empty leaves the
    /// section out.
    pub files: Vec<String>,
    /// Follow-ups.
    pub follow_ups: Vec<String>,
    /// The issue it closes, in the same repository (`#123`).
    pub closes: Option<String>,
    /// The footer (session, workflow, console link and marker).
    pub footer: String,
}

impl Fill {
    /// From a handoff artifact.
    pub fn from_handoff(h: &Value, closes: Option<String>, footer: String) -> Self {
        let list = |k: &str| -> Vec<String> {
            h.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            body: h
                .get("prBody")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            files: list("filesChanged"),
            follow_ups: list("followUps"),
            closes,
            footer,
        }
    }
}

/// A heading line: `#…` markdown or a whole-line bold label (`**What this PR does**:`).
fn heading_text(line: &str) -> Option<String> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix('#') {
        return Some(rest.trim_start_matches('#').trim().to_ascii_lowercase());
    }
    if let Some(rest) = t.strip_prefix("**")
        && let Some(end) = rest.find("**")
    {
        let after = rest[end + 2..].trim();
        if after.is_empty() || after.starts_with(':') || after.starts_with('*') {
            return Some(rest[..end].trim().to_ascii_lowercase());
        }
    }
    None
}

/// A GitLab quick action line (`/assign me`, `/label ~x`).
fn is_quick_action(line: &str) -> bool {
    let t = line.trim_end();
    t.starts_with('/')
        && t.len() > 1
        && t[1..2].chars().all(|c| c.is_ascii_lowercase())
        && !t.starts_with("//")
}

const DESCRIPTION: &[&str] = &[
    "summary",
    "description",
    "what does this",
    "what this pr does",
    "proposed change",
    "after the change",
    "what",
    "changes",
    "motivation",
];

const ISSUE: &[&str] = &["related issue", "which issue", "fixes", "closes", "issue"];

/// Fill `template` (or no template) from `fill`.
pub fn fill(template: Option<&str>, fill: &Fill) -> String {
    let mut description = fill.body.clone();
    if !fill.files.is_empty() {
        description.push_str("\n\nFiles changed:\n");
        for f in &fill.files {
            description.push_str(&format!("- `{f}`\n"));
        }
        description = description.trim_end().to_owned();
    }
    let Some(template) = template.filter(|t| !t.trim().is_empty()) else {
        let mut out = description;
        if let Some(c) = &fill.closes {
            out.push_str(&format!("\n\nCloses {c}"));
        }
        push_follow_ups(&mut out, &fill.follow_ups);
        out.push_str("\n\n");
        out.push_str(&fill.footer);
        out.push('\n');
        return out;
    };
    let mut lines: Vec<String> = Vec::new();
    let mut actions: Vec<String> = Vec::new();
    let mut in_comment = false;
    let mut in_fence = false;
    for l in template.lines() {
        let t = l.trim_start();
        if !in_comment && t.starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_comment && !in_fence && is_quick_action(l) {
            actions.push(l.trim_end().to_owned());
            continue;
        }
        if !in_fence {
            if in_comment {
                if l.contains("-->") {
                    in_comment = false;
                }
            } else if let Some(i) = l.find("<!--")
                && !l[i..].contains("-->")
            {
                in_comment = true;
            }
        }
        lines.push(l.to_owned());
    }
    // Headings outside comments and code.
    let mut headings: Vec<(usize, String)> = Vec::new();
    {
        let mut in_comment = false;
        let mut in_fence = false;
        for (i, l) in lines.iter().enumerate() {
            if !in_comment && l.trim_start().starts_with("```") {
                in_fence = !in_fence;
                continue;
            }
            if in_fence {
                continue;
            }
            if in_comment {
                if l.contains("-->") {
                    in_comment = false;
                }
                continue;
            }
            if let Some(p) = l.find("<!--")
                && !l[p..].contains("-->")
            {
                in_comment = true;
                continue;
            }
            if let Some(h) = heading_text(l) {
                headings.push((i, h));
            }
        }
    }
    let find = |keys: &[&str]| -> Option<usize> {
        keys.iter().find_map(|k| {
            headings
                .iter()
                .find(|(_, h)| h.contains(k))
                .map(|(i, _)| *i)
        })
    };
    let desc_at = find(DESCRIPTION);
    let issue_at = fill.closes.as_ref().and_then(|_| find(ISSUE));
    // Insertions: (after line index, text); applied from the bottom up.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    if let Some(i) = desc_at {
        inserts.push((after_heading(&lines, i), description.clone()));
    }
    if let (Some(i), Some(c)) = (issue_at, &fill.closes)
        && Some(i) != desc_at
    {
        // A `Closes #` / `fixes #` placeholder in the section gets the number.
        let end = headings
            .iter()
            .map(|(j, _)| *j)
            .find(|j| *j > i)
            .unwrap_or(lines.len());
        let mut filled = false;
        for l in lines.iter_mut().take(end).skip(i) {
            let lower = l.to_ascii_lowercase();
            if lower.trim_end().ends_with("closes #") || lower.trim_end().ends_with("fixes #") {
                *l = format!("{}{}", l.trim_end(), c.trim_start_matches('#'));
                filled = true;
                break;
            }
        }
        if !filled {
            inserts.push((after_heading(&lines, i), format!("Closes {c}")));
        }
    }
    inserts.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (at, text) in inserts {
        let at = at.min(lines.len());
        let mut block = vec![String::new(), text, String::new()];
        // Avoid doubled blank lines around the insertion.
        if at > 0 && lines.get(at - 1).is_some_and(|l| l.trim().is_empty()) {
            block.remove(0);
        }
        if lines.get(at).is_some_and(|l| l.trim().is_empty()) {
            block.pop();
        }
        lines.splice(at..at, block);
    }
    let mut out = String::new();
    if desc_at.is_none() {
        out.push_str(&description);
        if let (Some(c), None) = (&fill.closes, issue_at) {
            out.push_str(&format!("\n\nCloses {c}"));
        }
        out.push_str("\n\n");
    }
    out.push_str(lines.join("\n").trim_end());
    push_follow_ups(&mut out, &fill.follow_ups);
    out.push_str("\n\n");
    out.push_str(&fill.footer);
    if !actions.is_empty() {
        out.push_str("\n\n");
        out.push_str(&actions.join("\n"));
    }
    out.push('\n');
    out
}

/// The line index after a heading and the HTML comment block that may follow it
/// (the comment is kept: it is the template's guidance).
fn after_heading(lines: &[String], heading: usize) -> usize {
    let mut i = heading + 1;
    loop {
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        if i < lines.len() && lines[i].trim_start().starts_with("<!--") {
            while i < lines.len() && !lines[i].contains("-->") {
                i += 1;
            }
            i += 1;
            continue;
        }
        break;
    }
    // Insert right after the heading/comment, before any blank run.
    let mut j = i;
    while j > heading + 1 && lines[j - 1].trim().is_empty() {
        j -= 1;
    }
    j
}

fn push_follow_ups(out: &mut String, follow_ups: &[String]) {
    if follow_ups.is_empty() {
        return;
    }
    out.push_str("\n\nFollow-ups:\n");
    for f in follow_ups {
        out.push_str(&format!("- {f}\n"));
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
}
