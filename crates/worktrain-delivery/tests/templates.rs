//! Every real pull/merge request template of the corpus, filled from one handoff, against
//! its golden file (`UPDATE_GOLDEN=1` rewrites them after a deliberate change), plus the
//! rules every filling keeps: headings, checklists and HTML comments stay, in order;
//! GitLab quick actions move to the end; the footer and its marker are there.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::PathBuf;

use support::{corpus, handoff};
use worktrain_delivery::template::{Fill, fill};

fn footer() -> String {
    "---\n<sub>Delivered by worktrain · session `ses_01hq0000000000000000000000` · workflow `coding-task` · [console](http://127.0.0.1:7777/sessions/ses_01hq0000000000000000000000)</sub>\n<!-- worktrain:session=ses_01hq0000000000000000000000 -->".to_owned()
}

fn templates() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in ["pr-templates/github", "pr-templates/gitlab"] {
        for e in std::fs::read_dir(corpus(dir)).unwrap() {
            all.push(e.unwrap().path());
        }
    }
    all.sort();
    all
}

fn is_quick_action(l: &str) -> bool {
    let t = l.trim_end();
    t.starts_with('/') && t.chars().nth(1).is_some_and(|c| c.is_ascii_lowercase())
}

#[test]
fn every_corpus_template_fills_to_its_golden_file() {
    let all = templates();
    assert_eq!(all.len(), 12, "9 GitHub and 3 GitLab templates");
    let golden_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for path in all {
        let tpl = std::fs::read_to_string(&path).unwrap();
        let out = fill(
            Some(&tpl),
            &Fill::from_handoff(&handoff(), Some("#12".into()), footer()),
        );
        let name = format!(
            "{}.{}",
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            path.file_name().unwrap().to_str().unwrap()
        );
        let golden = golden_dir.join(&name);
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&golden, &out).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(out.as_str()) {
            mismatched.push(name.clone());
        }

        // The rules, whatever the golden file says.
        assert!(
            out.contains("Empty files used to panic the loader"),
            "{name}"
        );
        assert!(out.contains("- `src/config.rs`"), "{name}");
        assert!(
            out.contains("- document the error in docs/config.md"),
            "{name}"
        );
        assert!(out.contains("<!-- worktrain:session=ses_01hq"), "{name}");
        let kept: Vec<&str> = tpl
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                (t.starts_with('#')
                    || t.starts_with("- [")
                    || t.starts_with("* [")
                    || t.starts_with("<!--"))
                    && !is_quick_action(l)
            })
            .collect();
        let mut at = 0;
        for k in &kept {
            let found = out[at..]
                .find(k.trim_end())
                .unwrap_or_else(|| panic!("{name}: `{k}` lost or out of order"));
            at += found + k.trim_end().len();
        }
        let actions: Vec<&str> = tpl.lines().filter(|l| is_quick_action(l)).collect();
        if !actions.is_empty() {
            let tail: Vec<&str> = out.trim_end().lines().rev().take(actions.len()).collect();
            let mut tail = tail;
            tail.reverse();
            assert_eq!(
                tail,
                actions.iter().map(|a| a.trim_end()).collect::<Vec<_>>(),
                "{name}: quick actions at the end"
            );
        }
    }
    assert!(
        mismatched.is_empty(),
        "filled bodies differ from the golden files {mismatched:?} (UPDATE_GOLDEN=1 to rewrite after checking)"
    );
}

#[test]
fn without_a_template_the_body_is_the_description_then_the_footer() {
    let out = fill(
        None,
        &Fill::from_handoff(&handoff(), Some("#12".into()), footer()),
    );
    assert!(out.starts_with("Empty files used to panic the loader; they now produce a clear error.\n\nFiles changed:\n- `src/config.rs`\n\nCloses #12\n\nFollow-ups:\n- document the error in docs/config.md\n\n---\n"), "{out}");
}
