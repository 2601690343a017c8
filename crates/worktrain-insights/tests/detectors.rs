//! Every detector: a trace that shows the pattern (with its evidence) and a near miss that
//! does not; fingerprints that stay the same across sessions; configurable thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use worktrain_insights::detect::{DetectorId, Finding, Severity, Thresholds, detect};
use worktrain_insights::import::{CallResult, NewCall, TraceBuilder};
use worktrain_insights::model::{Action, EditInfo, HarnessReply, Source, StepVisit, Trace};

/// A small DSL over the importers' trace builder.
struct T {
    b: TraceBuilder,
    n: u32,
    at: Option<i64>,
}

impl T {
    fn new(id: &str) -> Self {
        Self {
            b: TraceBuilder::new(Source::ClaudeCode, id, 10_000),
            n: 0,
            at: None,
        }
    }

    fn turn(&mut self) -> String {
        self.n += 1;
        let id = format!("m{}", self.n);
        self.b.turn(&id, self.at, None);
        id
    }

    fn at(mut self, ms: i64) -> Self {
        self.at = Some(ms);
        self
    }

    fn sh(mut self, cmd: &str, code: i32, out: &str) -> Self {
        let id = self.turn();
        self.b.text(&format!("running {cmd}"));
        self.b.call(NewCall::shell(format!("c{id}"), "Bash", cmd));
        self.b.result(
            &format!("c{id}"),
            CallResult {
                text: out,
                exit_code: Some(code),
                ..CallResult::default()
            },
        );
        self
    }

    fn timeout(mut self, cmd: &str) -> Self {
        let id = self.turn();
        self.b.call(NewCall::shell(format!("c{id}"), "Bash", cmd));
        self.b.result(
            &format!("c{id}"),
            CallResult {
                text: "",
                timed_out: true,
                ..CallResult::default()
            },
        );
        self
    }

    fn edit(mut self, path: &str, before: &str, after: &str) -> Self {
        let id = self.turn();
        let mut c = NewCall::tool(
            format!("c{id}"),
            "Edit",
            Action::Edit,
            format!("{path}|{before}|{after}"),
        );
        c.paths.push(path.to_owned());
        c.command = Some(format!("Edit {path}"));
        c.edit = Some(EditInfo {
            path: path.to_owned(),
            before: Some(worktrain_insights::normalize::text_digest(before)),
            after: Some(worktrain_insights::normalize::text_digest(after)),
        });
        self.b.call(c);
        self.b.result(
            &format!("c{id}"),
            CallResult {
                text: "ok",
                ..CallResult::default()
            },
        );
        self
    }

    fn read(mut self, path: &str, out: &str) -> Self {
        let id = self.turn();
        let mut c = NewCall::tool(
            format!("c{id}"),
            "Read",
            Action::Read,
            format!("{{\"file_path\":\"{path}\"}}"),
        );
        c.paths.push(path.to_owned());
        c.command = Some(format!("Read {path}"));
        self.b.call(c);
        self.b.result(
            &format!("c{id}"),
            CallResult {
                text: out,
                ..CallResult::default()
            },
        );
        self
    }

    fn text(mut self, t: &str) -> Self {
        self.turn();
        self.b.text(t);
        self
    }

    fn empty(mut self) -> Self {
        self.turn();
        self
    }

    fn harness(mut self, h: HarnessReply) -> Self {
        self.turn();
        self.b.text("here is my answer");
        self.b.harness(h);
        self
    }

    fn submit(mut self) -> Self {
        let id = self.turn();
        let mut c = NewCall::shell(
            format!("c{id}"),
            "bash",
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff",
        );
        c.action = Action::Submit;
        self.b.call(c);
        self.b.result(
            &format!("c{id}"),
            CallResult {
                text: "diff",
                exit_code: Some(0),
                ..CallResult::default()
            },
        );
        self
    }

    fn compaction(mut self) -> Self {
        self.b.compaction();
        self
    }

    fn done(self) -> Trace {
        self.b.finish()
    }
}

fn only(t: &Trace, d: DetectorId) -> Vec<Finding> {
    detect(t, &Thresholds::default())
        .into_iter()
        .filter(|f| f.detector == d)
        .collect()
}

fn one(t: &Trace, d: DetectorId) -> Finding {
    let f = only(t, d);
    assert_eq!(f.len(), 1, "{d:?}: {f:#?}");
    f.into_iter().next().unwrap()
}

fn turns(f: &Finding) -> Vec<&str> {
    f.evidence.iter().map(|e| e.turn_id.as_str()).collect()
}

#[test]
fn repeated_call() {
    let t = T::new("a")
        .sh("grep -rn foo src", 0, "src/a.rs:1:foo")
        .read("src/a.rs", "x")
        .sh("grep -rn foo src", 0, "src/a.rs:1:foo")
        .sh("grep -rn foo src", 0, "src/a.rs:1:foo")
        .done();
    let f = one(&t, DetectorId::RepeatedCall);
    assert_eq!(f.count, 3);
    assert_eq!(turns(&f), ["m1", "m3", "m4"]);
    assert_eq!(f.evidence[0].call_id.as_deref(), Some("cm1"));
    // An edit in between makes the third run a legitimate re-check.
    let near = T::new("b")
        .sh("grep -rn foo src", 0, "x")
        .sh("grep -rn foo src", 0, "x")
        .edit("src/a.rs", "foo", "bar")
        .sh("grep -rn foo src", 0, "x")
        .done();
    assert!(only(&near, DetectorId::RepeatedCall).is_empty());
}

#[test]
fn same_result_after_edits() {
    let out = "Traceback ...\nValueError: bad";
    let t = T::new("a")
        .sh("python repro.py", 1, out)
        .edit("src/a.py", "x = 1", "x = 2")
        .sh("python repro.py", 1, out)
        .edit("src/a.py", "y = 1", "y = 2")
        .sh("python repro.py", 1, out)
        .done();
    let f = one(&t, DetectorId::SameResult);
    assert_eq!(f.count, 2);
    assert_eq!(turns(&f), ["m3", "m5"]);
    let near = T::new("b")
        .sh("python repro.py", 1, out)
        .edit("src/a.py", "x = 1", "x = 2")
        .sh("python repro.py", 1, "Traceback ...\nValueError: other")
        .edit("src/a.py", "y = 1", "y = 2")
        .sh("python repro.py", 0, "ok")
        .done();
    assert!(only(&near, DetectorId::SameResult).is_empty());
}

#[test]
fn repeated_error_is_normalised() {
    let t = T::new("a")
        .sh(
            "python a.py",
            1,
            "KeyError: 'ses_01abcdefghijklmnop' at /tmp/x/1.py:12",
        )
        .sh(
            "python b.py",
            1,
            "KeyError: 'ses_01qqqqqqqqqqqqqqqq' at /tmp/y/2.py:40",
        )
        .sh(
            "python c.py",
            1,
            "KeyError: 'ses_01zzzzzzzzzzzzzzzz' at /var/z.py:7",
        )
        .done();
    let f = one(&t, DetectorId::RepeatedError);
    assert_eq!(f.count, 3);
    assert_eq!(f.pattern, "KeyError: '<id>' at <path>:<n>");
    let near = T::new("b")
        .sh("python a.py", 1, "KeyError: 'a'")
        .sh("python b.py", 1, "KeyError: 'a'")
        .sh("python c.py", 1, "ValueError: b")
        .done();
    assert!(only(&near, DetectorId::RepeatedError).is_empty());
}

#[test]
fn ping_pong() {
    let mut b = T::new("a");
    for _ in 0..3 {
        b = b.sh("cat src/a.rs", 0, "a").sh("cat src/b.rs", 0, "b");
    }
    let f = one(&b.done(), DetectorId::PingPong);
    assert_eq!(f.count, 3);
    assert_eq!(f.evidence.len(), 6);
    let near = T::new("b")
        .sh("cat src/a.rs", 0, "a")
        .sh("cat src/b.rs", 0, "b")
        .sh("cat src/a.rs", 0, "a")
        .sh("cat src/b.rs", 0, "b")
        .sh("cargo build", 0, "ok")
        .done();
    assert!(only(&near, DetectorId::PingPong).is_empty());
}

#[test]
fn empty_and_repeated_turns() {
    let t = T::new("a")
        .text("Let me look at the configuration loader first.")
        .empty()
        .text("Let me look at the configuration   loader first.")
        .sh("ls", 0, "a")
        .done();
    let f = one(&t, DetectorId::EmptyTurn);
    assert_eq!(f.count, 2);
    assert_eq!(turns(&f), ["m2", "m3"]);
    let near = T::new("b")
        .text("Done.")
        .text("Done.")
        .sh("ls", 0, "a")
        .done();
    assert!(
        only(&near, DetectorId::EmptyTurn).is_empty(),
        "short acknowledgements repeat"
    );
}

#[test]
fn test_fix_spiral() {
    let fail = "FAILED tests/test_a.py::test_one - assert 1 == 2\n1 failed in 0.1s";
    let mut b = T::new("a");
    for i in 0..3 {
        b = b.sh("pytest tests/test_a.py", 1, fail).edit(
            "src/a.py",
            &format!("v{i}"),
            &format!("v{}", i + 1),
        );
    }
    let f = one(&b.done(), DetectorId::TestFixSpiral);
    assert_eq!(f.count, 3);
    assert!(
        f.message.contains("tests/test_a.py::test_one"),
        "{}",
        f.message
    );
    // Passing in between resets; reruns without edits do not count twice.
    let near = T::new("b")
        .sh("pytest tests/test_a.py", 1, fail)
        .sh("pytest tests/test_a.py", 1, fail)
        .edit("src/a.py", "v0", "v1")
        .sh("pytest tests/test_a.py", 1, fail)
        .edit("src/a.py", "v1", "v2")
        .sh("pytest tests/test_a.py", 0, "1 passed")
        .done();
    assert!(only(&near, DetectorId::TestFixSpiral).is_empty());
}

#[test]
fn circular_edit() {
    let t = T::new("a")
        .edit("src/a.py", "return x", "return x + 1")
        .sh("pytest", 1, "1 failed")
        .edit("src/a.py", "return x + 1", "return x")
        .done();
    let f = one(&t, DetectorId::CircularEdit);
    assert_eq!(f.count, 1);
    assert_eq!(turns(&f), ["m1", "m3"]);
    assert_eq!(f.pattern, "edit undone in a .py file");
    let near = T::new("b")
        .edit("src/a.py", "return x", "return x + 1")
        .edit("src/a.py", "return x + 1", "return x + 2")
        .done();
    assert!(only(&near, DetectorId::CircularEdit).is_empty());
}

#[test]
fn edit_churn() {
    let mut b = T::new("a");
    for i in 0..8 {
        b = b.edit("src/big.py", &format!("a{i}"), &format!("b{i}"));
    }
    let f = one(&b.done(), DetectorId::EditChurn);
    assert_eq!(f.count, 8);
    let mut near = T::new("b");
    for i in 0..8 {
        near = near.edit("src/big.py", &format!("a{i}"), &format!("b{i}"));
        if i == 3 {
            near = near.sh("pytest", 0, "5 passed");
        }
    }
    assert!(only(&near.done(), DetectorId::EditChurn).is_empty());
}

#[test]
fn redundant_read() {
    let t = T::new("a")
        .read("src/a.py", "code")
        .sh("ls", 0, "x")
        .read("src/a.py", "code")
        .read("src/a.py", "code")
        .done();
    let f = one(&t, DetectorId::RedundantRead);
    assert_eq!(f.count, 3);
    let near = T::new("b")
        .read("src/a.py", "code")
        .read("src/a.py", "code")
        .edit("src/a.py", "code", "code2")
        .read("src/a.py", "code2")
        .done();
    assert!(only(&near, DetectorId::RedundantRead).is_empty());
}

#[test]
fn empty_search() {
    let t = T::new("a")
        .sh("grep -rn LoaderX src", 1, "")
        .sh("grep -rn load_cfg src", 1, "")
        .sh("find . -name loader.rs", 0, "")
        .done();
    let f = one(&t, DetectorId::EmptySearch);
    assert_eq!(f.count, 3);
    let near = T::new("b")
        .sh("grep -rn LoaderX src", 1, "")
        .sh("grep -rn load src", 0, "src/a.rs:1: load")
        .sh("find . -name loader.rs", 0, "")
        .done();
    assert!(only(&near, DetectorId::EmptySearch).is_empty());
}

#[test]
fn no_progress() {
    let mut b = T::new("a").edit("src/a.py", "a", "b");
    for i in 0..25 {
        b = b.sh(&format!("cat src/f{i}.py"), 0, "x");
    }
    let f = one(&b.done(), DetectorId::NoProgress);
    assert_eq!(f.count, 25);
    assert_eq!(turns(&f), ["m2", "m26"]);
    let mut near = T::new("b");
    for i in 0..24 {
        near = near.sh(&format!("cat src/f{i}.py"), 0, "x");
    }
    assert!(
        only(
            &near.edit("src/a.py", "a", "b").done(),
            DetectorId::NoProgress
        )
        .is_empty()
    );
}

#[test]
fn environment_failures_by_kind() {
    let t = T::new("a")
        .sh("rg foo", 127, "bash: line 1: rg: command not found")
        .sh(
            "python -c 'import numpy'",
            1,
            "Traceback (most recent call last):\nModuleNotFoundError: No module named 'numpy'",
        )
        .sh(
            "cat /root/secret",
            1,
            "cat: /root/secret: Permission denied",
        )
        .done();
    let f = only(&t, DetectorId::EnvironmentFailure);
    let patterns: Vec<&str> = f.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(
        patterns,
        [
            "command not found: rg",
            "missing module: numpy",
            "permission denied"
        ]
    );
    let near = T::new("b")
        .sh("python t.py", 1, "AssertionError: 1 != 2")
        .done();
    assert!(only(&near, DetectorId::EnvironmentFailure).is_empty());
}

#[test]
fn context_thrash() {
    let t = T::new("a")
        .text("a long one")
        .compaction()
        .text("again")
        .compaction()
        .done();
    let f = one(&t, DetectorId::ContextThrash);
    assert_eq!(f.count, 2);
    let near = T::new("b")
        .text("a long one")
        .compaction()
        .text("again")
        .done();
    assert!(only(&near, DetectorId::ContextThrash).is_empty());
}

#[test]
fn stall() {
    let t = T::new("a")
        .at(1_000)
        .text("start")
        .at(1_000 + 700_000)
        .text("eleven minutes later")
        .at(1_000 + 701_000)
        .timeout("pytest -x")
        .done();
    let f = one(&t, DetectorId::Stall);
    assert_eq!(f.count, 2);
    assert_eq!(turns(&f), ["m2", "m3"]);
    let near = T::new("b").at(1_000).text("a").at(500_000).text("b").done();
    assert!(only(&near, DetectorId::Stall).is_empty());
}

#[test]
fn contract_retry_from_format_errors() {
    let t = T::new("a")
        .harness(HarnessReply::FormatError)
        .sh("ls", 0, "x")
        .harness(HarnessReply::FormatError)
        .done();
    let f = one(&t, DetectorId::ContractRetry);
    assert_eq!(f.count, 2);
    let near = T::new("b")
        .harness(HarnessReply::FormatError)
        .sh("ls", 0, "x")
        .done();
    assert!(only(&near, DetectorId::ContractRetry).is_empty());
}

/// A worktrain-shaped trace: steps with visits, blocked submissions, notes.
fn with_steps(blocked: u32, work_calls: usize, notes: u32) -> Trace {
    let mut b = T::new("w");
    for _ in 0..work_calls {
        b = b.sh("cargo test", 0, "ok");
    }
    let mut t = b.text("submitting").done();
    t.steps.push(StepVisit {
        step: "implement".into(),
        node: 1,
        entered_seq: 3,
        blocked,
        completed: true,
        notes_chars: notes,
        artifacts: 0,
    });
    for turn in &mut t.turns {
        turn.step = Some(0);
    }
    if blocked > 0 {
        t.turns[0].harness = Some(HarnessReply::Blocked);
    }
    t
}

#[test]
fn contract_retry_and_rubber_stamp_at_workflow_steps() {
    let f = one(&with_steps(3, 2, 400), DetectorId::ContractRetry);
    assert_eq!(f.step.as_deref(), Some("implement"));
    assert_eq!(f.count, 3);
    assert_eq!(f.severity, Severity::Warning);
    assert!(only(&with_steps(1, 2, 400), DetectorId::ContractRetry).is_empty());

    let f = one(&with_steps(0, 0, 20), DetectorId::RubberStamp);
    assert_eq!(f.step.as_deref(), Some("implement"));
    assert!(only(&with_steps(0, 1, 20), DetectorId::RubberStamp).is_empty());
    assert!(only(&with_steps(0, 0, 300), DetectorId::RubberStamp).is_empty());
}

#[test]
fn token_waste() {
    let big = (0..2000)
        .map(|i| format!("Line_{i} value_{i}\n"))
        .collect::<String>();
    let t = T::new("a")
        .sh("cat big.log", 0, &big)
        .text("I will look elsewhere.")
        .sh("cat other.log", 0, &big)
        .text("Nothing useful.")
        .done();
    let f = one(&t, DetectorId::TokenWaste);
    assert_eq!(f.count, 2);
    assert_eq!(turns(&f), ["m1", "m3"]);
    // Used: the next turn names something from the output.
    let near = T::new("b")
        .sh("cat big.log", 0, &big)
        .text("Line_1000 shows the problem.")
        .sh("cat other.log", 0, &big)
        .text("value_12 again.")
        .done();
    assert!(only(&near, DetectorId::TokenWaste).is_empty());
}

#[test]
fn unverified_finish() {
    let t = T::new("a")
        .sh("pytest", 0, "1 passed")
        .edit("src/a.py", "a", "b")
        .sh("rm reproduce.py", 0, "")
        .submit()
        .done();
    let f = one(&t, DetectorId::UnverifiedFinish);
    assert_eq!(turns(&f), ["m2", "m4"]);
    let near = T::new("b")
        .edit("src/a.py", "a", "b")
        .sh("pytest", 0, "1 passed")
        .submit()
        .done();
    assert!(only(&near, DetectorId::UnverifiedFinish).is_empty());
}

#[test]
fn at_least_twelve_detectors_and_all_documented() {
    assert!(DetectorId::ALL.len() >= 12);
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/insights.md"
    ))
    .unwrap();
    for d in DetectorId::ALL {
        assert_eq!(DetectorId::parse(d.as_str()), Some(d));
        assert!(
            docs.contains(&format!("`{}`", d.as_str())),
            "docs/insights.md does not document {}",
            d.as_str()
        );
    }
    // Every threshold field is documented with its default.
    let th = serde_json::to_value(Thresholds::default()).unwrap();
    for (k, v) in th.as_object().unwrap() {
        if k == "disabled" {
            continue;
        }
        assert!(
            docs.contains(&format!("| `{k}` | {v} |")),
            "docs/insights.md: threshold `{k}` (default {v})"
        );
    }
}

#[test]
fn fingerprints_are_stable_across_sessions() {
    let s1 = T::new("one")
        .sh(
            "python /tmp/tmpabc/run_1.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpabc/data/12.csv'",
        )
        .sh(
            "python /tmp/tmpabc/run_2.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpabc/data/13.csv'",
        )
        .sh(
            "python /tmp/tmpabc/run_3.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpabc/data/14.csv'",
        )
        .done();
    let s2 = T::new("two")
        .sh(
            "python /home/u/w/x.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/home/u/w/in/9.csv'",
        )
        .sh(
            "python /home/u/w/y.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/home/u/w/in/8.csv'",
        )
        .sh(
            "python /home/u/w/z.py",
            1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/home/u/w/in/7.csv'",
        )
        .done();
    let a = one(&s1, DetectorId::RepeatedError);
    let b = one(&s2, DetectorId::RepeatedError);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(
        a.pattern,
        "FileNotFoundError: [Errno <n>] No such file or directory: '<path>'"
    );
    assert!(!a.pattern.contains("tmpabc"));
    let other = T::new("three")
        .sh("a", 1, "PermissionError: x")
        .sh("b", 1, "PermissionError: x")
        .sh("c", 1, "PermissionError: x")
        .done();
    assert_ne!(
        one(&other, DetectorId::RepeatedError).fingerprint,
        a.fingerprint
    );
}

#[test]
fn thresholds_are_configurable() {
    let t = T::new("a")
        .sh("grep x", 0, "y")
        .sh("grep x", 0, "y")
        .sh("grep x", 0, "y")
        .sh("grep x", 0, "y")
        .done();
    assert_eq!(only(&t, DetectorId::RepeatedCall).len(), 1);
    let strict = Thresholds {
        repeated_call_min: 5,
        ..Thresholds::default()
    };
    assert!(
        detect(&t, &strict)
            .iter()
            .all(|f| f.detector != DetectorId::RepeatedCall)
    );
    let lax = Thresholds {
        repeated_call_min: 2,
        ..Thresholds::default()
    };
    let f: Vec<_> = detect(&t, &lax)
        .into_iter()
        .filter(|f| f.detector == DetectorId::RepeatedCall)
        .collect();
    assert_eq!(f[0].severity, Severity::Error, "4 is at least twice 2");
    let off = Thresholds {
        disabled: vec![DetectorId::RepeatedCall],
        ..Thresholds::default()
    };
    assert!(
        detect(&t, &off)
            .iter()
            .all(|f| f.detector != DetectorId::RepeatedCall)
    );
}

#[test]
fn detection_is_deterministic() {
    let f = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/agent-trajectories-dev/trajs/pylint-dev__pylint-7080.traj.json"
    ));
    let t = worktrain_insights::import::import_file(&f, &Default::default())
        .unwrap()
        .traces
        .remove(0);
    let a = detect(&t, &Thresholds::default());
    let b = detect(&t, &Thresholds::default());
    assert_eq!(a, b);
    assert!(!a.is_empty());
    for f in &a {
        assert!(!f.evidence.is_empty(), "{f:?}");
        assert!(
            f.evidence
                .iter()
                .all(|e| t.turns.iter().any(|x| x.id == e.turn_id))
        );
        assert_eq!(f.fingerprint.len(), 16);
        assert!(!f.suggestion.is_empty());
    }
}
