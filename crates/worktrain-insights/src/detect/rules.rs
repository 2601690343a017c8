//! The detectors' rules. Each is linear (or n log n) in the number of calls.

use std::collections::{BTreeMap, HashMap};

use super::{DetectorId, Draft, Evidence, Thresholds, lanes};
use crate::model::{Action, CallStatus, HarnessReply, ToolCall, Trace, Turn};
use crate::normalize::{self, bounded};

fn ev(turn: &Turn, call: Option<&ToolCall>, note: impl Into<String>) -> Evidence {
    Evidence {
        turn: turn.index,
        turn_id: turn.id.clone(),
        call_id: call.map(|c| c.id.clone()).filter(|s| !s.is_empty()),
        note: bounded(&note.into(), 160),
    }
}

/// A short, session-independent name of a call: its command shape, or its tool and
/// action.
fn call_shape(c: &ToolCall) -> String {
    match (&c.command, c.action) {
        (Some(cmd), Action::Edit | Action::Test | Action::Run | Action::Search | Action::Read) => {
            normalize::command_shape(cmd)
        }
        (Some(_), Action::List | Action::Submit | Action::Delegate | Action::Other) | (None, _) => {
            format!("{} {}", c.name, c.action.as_str())
        }
    }
}

fn shown(c: &ToolCall) -> String {
    c.command.clone().unwrap_or_else(|| c.name.clone())
}

pub(super) fn run(d: DetectorId, trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    match d {
        DetectorId::RepeatedCall => repeated_call(trace, th, out),
        DetectorId::SameResult => same_result(trace, th, out),
        DetectorId::RepeatedError => repeated_error(trace, th, out),
        DetectorId::PingPong => ping_pong(trace, th, out),
        DetectorId::EmptyTurn => empty_turn(trace, th, out),
        DetectorId::TestFixSpiral => test_fix_spiral(trace, th, out),
        DetectorId::CircularEdit => circular_edit(trace, th, out),
        DetectorId::EditChurn => edit_churn(trace, th, out),
        DetectorId::RedundantRead => redundant_read(trace, th, out),
        DetectorId::EmptySearch => empty_search(trace, th, out),
        DetectorId::NoProgress => no_progress(trace, th, out),
        DetectorId::EnvironmentFailure => environment_failure(trace, th, out),
        DetectorId::ContextThrash => context_thrash(trace, th, out),
        DetectorId::Stall => stall(trace, th, out),
        DetectorId::ContractRetry => contract_retry(trace, th, out),
        DetectorId::RubberStamp => rubber_stamp(trace, th, out),
        DetectorId::TokenWaste => token_waste(trace, th, out),
        DetectorId::UnverifiedFinish => unverified_finish(trace, th, out),
    }
}

/// Calls of one lane, in order.
fn calls<'t, 'l>(
    lane: &'l [&'t Turn],
) -> impl Iterator<Item = (&'t Turn, &'t ToolCall)> + use<'t, 'l> {
    lane.iter()
        .flat_map(|t| t.calls.iter().map(move |c| (*t, c)))
}

fn changes(c: &ToolCall) -> bool {
    c.action.changes_files() && c.status != CallStatus::Error && c.status != CallStatus::Denied
}

fn repeated_call(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        // Occurrences since the last change, per call identity.
        let mut runs: HashMap<(&str, &str), Vec<(&Turn, &ToolCall)>> = HashMap::new();
        let mut done: Vec<Vec<(&Turn, &ToolCall)>> = Vec::new();
        for (t, c) in calls(&lane) {
            if changes(c) {
                done.extend(runs.drain().map(|(_, v)| v));
                continue;
            }
            if matches!(c.action, Action::Read | Action::Submit) {
                continue;
            }
            runs.entry((c.name.as_str(), c.args_hash.as_str()))
                .or_default()
                .push((t, c));
        }
        done.extend(runs.into_values());
        for occ in done {
            let n = occ.len() as u64;
            if n < th.repeated_call_min {
                continue;
            }
            let (_, first) = occ[0];
            out.push(Draft {
                detector: DetectorId::RepeatedCall,
                key: format!("{} {}", first.action.as_str(), call_shape(first)),
                message: format!(
                    "`{}` was run {n} times with nothing changed in between",
                    bounded(&shown(first), 80)
                ),
                count: n,
                threshold: th.repeated_call_min,
                evidence: occ.iter().map(|(t, c)| ev(t, Some(c), shown(c))).collect(),
            });
        }
    }
}

fn same_result(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        // Per call identity: last output and whether files changed since.
        let mut last: HashMap<(&str, &str), (&str, bool)> = HashMap::new();
        let mut hits: BTreeMap<(&str, &str), Vec<(&Turn, &ToolCall)>> = BTreeMap::new();
        for (t, c) in calls(&lane) {
            if changes(c) {
                for v in last.values_mut() {
                    v.1 = true;
                }
                continue;
            }
            if !matches!(c.action, Action::Test | Action::Run) {
                continue;
            }
            let Some(h) = c.output_hash.as_deref() else {
                continue;
            };
            let key = (c.name.as_str(), c.args_hash.as_str());
            if let Some((prev, changed)) = last.get(&key)
                && *changed
                && *prev == h
            {
                hits.entry(key).or_default().push((t, c));
            }
            last.insert(key, (h, false));
        }
        for (_, occ) in hits {
            let n = occ.len() as u64;
            if n < th.same_result_min {
                continue;
            }
            let (_, first) = occ[0];
            out.push(Draft {
                detector: DetectorId::SameResult,
                key: call_shape(first),
                message: format!(
                    "`{}` returned the identical result {n} times although files were changed in between",
                    bounded(&shown(first), 80)
                ),
                count: n,
                threshold: th.same_result_min,
                evidence: occ.iter().map(|(t, c)| ev(t, Some(c), shown(c))).collect(),
            });
        }
    }
}

fn repeated_error(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let mut by: BTreeMap<String, Vec<(&Turn, &ToolCall)>> = BTreeMap::new();
        for (t, c) in calls(&lane) {
            if !c.status.is_failure() {
                continue;
            }
            // Failing tests have their own detector.
            if c.test.is_some() {
                continue;
            }
            let Some(e) = c.error.as_deref() else {
                continue;
            };
            by.entry(normalize::normalize(e)).or_default().push((t, c));
        }
        for (sig, occ) in by {
            let n = occ.len() as u64;
            if n < th.repeated_error_min {
                continue;
            }
            out.push(Draft {
                detector: DetectorId::RepeatedError,
                key: sig.clone(),
                message: format!("the same error came back {n} times: {}", bounded(&sig, 100)),
                count: n,
                threshold: th.repeated_error_min,
                evidence: occ
                    .iter()
                    .map(|(t, c)| {
                        ev(
                            t,
                            Some(c),
                            format!("{} → {}", shown(c), c.error.as_deref().unwrap_or("")),
                        )
                    })
                    .collect(),
            });
        }
    }
}

fn ping_pong(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    let need = (th.ping_pong_cycles.max(1) * 2) as usize;
    for lane in lanes(trace) {
        let seq: Vec<(&Turn, &ToolCall)> = calls(&lane)
            .filter(|(_, c)| c.action != Action::Submit)
            .collect();
        let mut i = 0;
        while i + 1 < seq.len() {
            let a = &seq[i].1.args_hash;
            let b = &seq[i + 1].1.args_hash;
            if a == b {
                i += 1;
                continue;
            }
            let mut j = i + 2;
            while j < seq.len() && seq[j].1.args_hash == seq[j - 2].1.args_hash {
                j += 1;
            }
            let len = j - i;
            if len >= need {
                let (c1, c2) = (seq[i].1, seq[i + 1].1);
                let mut shapes = [call_shape(c1), call_shape(c2)];
                shapes.sort();
                out.push(Draft {
                    detector: DetectorId::PingPong,
                    key: format!("{} <-> {}", shapes[0], shapes[1]),
                    message: format!(
                        "alternated {} times between `{}` and `{}`",
                        len / 2,
                        bounded(&shown(c1), 50),
                        bounded(&shown(c2), 50)
                    ),
                    count: (len / 2) as u64,
                    threshold: th.ping_pong_cycles,
                    evidence: seq[i..j]
                        .iter()
                        .map(|(t, c)| ev(t, Some(c), shown(c)))
                        .collect(),
                });
                i = j;
            } else {
                i += 1;
            }
        }
    }
}

fn empty_turn(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut hits = Vec::new();
        for (i, t) in lane.iter().enumerate() {
            let last = i + 1 == lane.len();
            if t.calls.is_empty() && t.text_chars == 0 && t.harness.is_none() && !last {
                hits.push(ev(t, None, "empty turn"));
                continue;
            }
            if let Some(h) = t.text_hash.as_deref()
                && t.text_chars >= th.repeated_text_min_chars
            {
                if let Some(first) = seen.get(h) {
                    hits.push(ev(t, None, format!("repeats turn {first} word for word")));
                } else {
                    seen.insert(h, t.index);
                }
            }
        }
        let n = hits.len() as u64;
        if n >= th.empty_turn_min {
            out.push(Draft {
                detector: DetectorId::EmptyTurn,
                key: "empty or repeated turns".to_owned(),
                message: format!("{n} turns were empty or repeated an earlier message"),
                count: n,
                threshold: th.empty_turn_min,
                evidence: hits,
            });
        }
    }
}

fn test_fix_spiral(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        // Per failure identity: failing runs separated by edits.
        let mut edited_since: HashMap<String, bool> = HashMap::new();
        let mut runs: BTreeMap<String, Vec<(&Turn, &ToolCall)>> = BTreeMap::new();
        for (t, c) in calls(&lane) {
            if changes(c) {
                for v in edited_since.values_mut() {
                    *v = true;
                }
                continue;
            }
            let Some(test) = &c.test else { continue };
            if test.passed {
                // Green: the spiral (if any) ended; start over.
                edited_since.clear();
                for (k, v) in std::mem::take(&mut runs) {
                    flush_spiral(k, v, th, out);
                }
                continue;
            }
            let key = if test.failing.is_empty() {
                format!(
                    "{} {}",
                    normalize::command_shape(c.command.as_deref().unwrap_or(&c.name)),
                    c.error
                        .as_deref()
                        .map(normalize::normalize)
                        .unwrap_or_default()
                )
            } else {
                test.failing.join(" ")
            };
            let edited = edited_since.get(&key).copied().unwrap_or(true);
            let entry = runs.entry(key.clone()).or_default();
            if entry.is_empty() || edited {
                entry.push((t, c));
            }
            edited_since.insert(key, false);
        }
        for (k, v) in runs {
            flush_spiral(k, v, th, out);
        }
    }
}

fn flush_spiral(key: String, v: Vec<(&Turn, &ToolCall)>, th: &Thresholds, out: &mut Vec<Draft>) {
    let n = v.len() as u64;
    if n < th.spiral_min {
        return;
    }
    let (_, first) = v[0];
    let tests = first.test.as_ref().map(|t| t.failing.len()).unwrap_or(0);
    out.push(Draft {
        detector: DetectorId::TestFixSpiral,
        key: format!(
            "{} failing after edits",
            normalize::command_shape(first.command.as_deref().unwrap_or(&first.name))
        ),
        message: if tests > 0 {
            format!(
                "the same {tests} failing test(s) ({}) failed {n} times with edits in between",
                bounded(&key, 80)
            )
        } else {
            format!("the same test failure came back {n} times with edits in between")
        },
        count: n,
        threshold: th.spiral_min,
        evidence: v.iter().map(|(t, c)| ev(t, Some(c), shown(c))).collect(),
    });
}

fn circular_edit(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        // Per path: the (before, after) of earlier edits, and the whole-file states written.
        let mut pairs: HashMap<(&str, &str, &str), (&Turn, &ToolCall)> = HashMap::new();
        let mut states: HashMap<&str, Vec<(&str, &Turn, &ToolCall)>> = HashMap::new();
        let mut hits: Vec<Evidence> = Vec::new();
        let mut paths: Vec<&str> = Vec::new();
        for (t, c) in calls(&lane) {
            if !changes(c) {
                continue;
            }
            let Some(e) = &c.edit else { continue };
            let path = e.path.as_str();
            match (e.before.as_deref(), e.after.as_deref()) {
                (Some(b), Some(a)) if a != b => {
                    if let Some((pt, pc)) = pairs.get(&(path, a, b)) {
                        hits.push(ev(pt, Some(pc), format!("edit of {path}")));
                        hits.push(ev(t, Some(c), format!("undone here: {}", shown(c))));
                        paths.push(path);
                    }
                    pairs.insert((path, b, a), (t, c));
                }
                (None, Some(a)) => {
                    let hist = states.entry(path).or_default();
                    let last = hist.last().map(|(h, _, _)| *h);
                    if last != Some(a)
                        && let Some((_, pt, pc)) =
                            hist.iter().rev().skip(1).find(|(h, _, _)| *h == a)
                    {
                        hits.push(ev(pt, Some(pc), format!("wrote {path}")));
                        hits.push(ev(
                            t,
                            Some(c),
                            format!(
                                "wrote the same content again after a different version: {path}"
                            ),
                        ));
                        paths.push(path);
                    }
                    if last != Some(a) {
                        hist.push((a, t, c));
                    }
                }
                _ => {}
            }
        }
        let n = paths.len() as u64;
        if n >= th.circular_edit_min && n > 0 {
            let ext = paths
                .first()
                .and_then(|p| p.rsplit_once('.'))
                .map(|(_, e)| e)
                .unwrap_or("file");
            out.push(Draft {
                detector: DetectorId::CircularEdit,
                key: format!("edit undone in a .{ext} file"),
                message: format!("{n} edit(s) undid an earlier edit (first in {})", paths[0]),
                count: n,
                threshold: th.circular_edit_min,
                evidence: hits,
            });
        }
    }
}

fn edit_churn(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let mut since_green: HashMap<&str, Vec<(&Turn, &ToolCall)>> = HashMap::new();
        let mut worst: BTreeMap<&str, Vec<(&Turn, &ToolCall)>> = BTreeMap::new();
        for (t, c) in calls(&lane) {
            if c.test.as_ref().is_some_and(|r| r.passed) {
                for (p, v) in since_green.drain() {
                    if v.len() as u64 >= th.churn_edits
                        && worst.get(p).is_none_or(|w| w.len() < v.len())
                    {
                        worst.insert(p, v);
                    }
                }
                continue;
            }
            if !changes(c) {
                continue;
            }
            let Some(e) = &c.edit else { continue };
            since_green.entry(e.path.as_str()).or_default().push((t, c));
        }
        for (p, v) in since_green {
            if v.len() as u64 >= th.churn_edits && worst.get(p).is_none_or(|w| w.len() < v.len()) {
                worst.insert(p, v);
            }
        }
        for (p, v) in worst {
            let n = v.len() as u64;
            let ext = p.rsplit_once('.').map(|(_, e)| e).unwrap_or("file");
            out.push(Draft {
                detector: DetectorId::EditChurn,
                key: format!("edits to one .{ext} file without a passing test"),
                message: format!("{p} was edited {n} times without a passing test in between"),
                count: n,
                threshold: th.churn_edits,
                evidence: v.iter().map(|(t, c)| ev(t, Some(c), shown(c))).collect(),
            });
        }
    }
}

fn redundant_read(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let mut reads: HashMap<(&str, &str), Vec<(&Turn, &ToolCall)>> = HashMap::new();
        let mut done: Vec<Vec<(&Turn, &ToolCall)>> = Vec::new();
        for (t, c) in calls(&lane) {
            if changes(c) {
                let touched: Vec<&str> = c
                    .paths
                    .iter()
                    .map(String::as_str)
                    .chain(c.edit.as_ref().map(|e| e.path.as_str()))
                    .collect();
                let keys: Vec<(&str, &str)> = reads
                    .keys()
                    .filter(|(p, _)| touched.contains(p))
                    .copied()
                    .collect();
                for k in keys {
                    if let Some(v) = reads.remove(&k) {
                        done.push(v);
                    }
                }
                continue;
            }
            if c.action != Action::Read || c.status != CallStatus::Ok {
                continue;
            }
            let Some(p) = c.paths.first() else { continue };
            reads
                .entry((p.as_str(), c.args_hash.as_str()))
                .or_default()
                .push((t, c));
        }
        done.extend(reads.into_values());
        let mut hits: Vec<Vec<(&Turn, &ToolCall)>> = done
            .into_iter()
            .filter(|v| v.len() as u64 >= th.redundant_read_min)
            .collect();
        if hits.is_empty() {
            continue;
        }
        hits.sort_by_key(|v| v[0].0.index);
        let n: u64 = hits.iter().map(|v| v.len() as u64 - 1).sum();
        let files = hits.len();
        out.push(Draft {
            detector: DetectorId::RedundantRead,
            key: "unchanged file read again".to_owned(),
            message: format!(
                "{files} unchanged file(s) were read again ({n} extra reads), e.g. {}",
                hits[0][0]
                    .1
                    .paths
                    .first()
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            count: hits.iter().map(|v| v.len() as u64).max().unwrap_or(0),
            threshold: th.redundant_read_min,
            evidence: hits
                .iter()
                .flatten()
                .map(|(t, c)| ev(t, Some(c), shown(c)))
                .collect(),
        });
    }
}

fn empty_search(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let hits: Vec<(&Turn, &ToolCall)> = calls(&lane)
            .filter(|(_, c)| {
                c.action == Action::Search && c.output_empty && c.status != CallStatus::Missing
            })
            .collect();
        let n = hits.len() as u64;
        if n >= th.empty_search_min {
            out.push(Draft {
                detector: DetectorId::EmptySearch,
                key: "searches found nothing".to_owned(),
                message: format!("{n} searches found nothing"),
                count: n,
                threshold: th.empty_search_min,
                evidence: hits.iter().map(|(t, c)| ev(t, Some(c), shown(c))).collect(),
            });
        }
    }
}

fn no_progress(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for lane in lanes(trace) {
        let mut best: Option<(usize, usize)> = None;
        let mut start = 0usize;
        let mut prev_step = lane.first().and_then(|t| t.step);
        for (i, t) in lane.iter().enumerate() {
            let progressed = t.calls.iter().any(changes) || t.step != prev_step;
            prev_step = t.step;
            if progressed {
                start = i + 1;
                continue;
            }
            let len = i + 1 - start;
            if best.is_none_or(|(s, e)| e - s < len) {
                best = Some((start, i + 1));
            }
        }
        let Some((s, e)) = best else { continue };
        let n = (e - s) as u64;
        if n < th.no_progress_turns {
            continue;
        }
        let mut evidence = vec![ev(lane[s], None, "first turn without progress")];
        evidence.push(ev(lane[e - 1], None, "last turn without progress"));
        out.push(Draft {
            detector: DetectorId::NoProgress,
            key: "turns without a change".to_owned(),
            message: format!("{n} turns in a row without changing a file or advancing a step"),
            count: n,
            threshold: th.no_progress_turns,
            evidence,
        });
    }
}

fn environment_failure(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    let mut by: BTreeMap<String, Vec<(&Turn, &ToolCall)>> = BTreeMap::new();
    for (t, c) in trace.calls() {
        if !c.status.is_failure() {
            continue;
        }
        let problem = c
            .error
            .as_deref()
            .and_then(normalize::env_problem)
            .or_else(|| {
                (c.status == CallStatus::Denied).then_some(normalize::EnvProblem::PermissionDenied)
            });
        if let Some(p) = problem {
            by.entry(p.label()).or_default().push((t, c));
        }
    }
    for (label, occ) in by {
        let n = occ.len() as u64;
        if n < th.env_failure_min {
            continue;
        }
        out.push(Draft {
            detector: DetectorId::EnvironmentFailure,
            key: label.clone(),
            message: format!("{label} ({n}×)"),
            count: n,
            threshold: th.env_failure_min.max(1),
            evidence: occ
                .iter()
                .map(|(t, c)| {
                    ev(
                        t,
                        Some(c),
                        format!("{} → {}", shown(c), c.error.as_deref().unwrap_or("")),
                    )
                })
                .collect(),
        });
    }
}

fn context_thrash(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    let n = trace.counts.compactions;
    if n < th.compaction_min || n == 0 {
        return;
    }
    let evidence = trace
        .compactions
        .iter()
        .filter_map(|i| trace.turns.get(*i as usize))
        .map(|t| ev(t, None, "context compacted after this turn"))
        .collect();
    out.push(Draft {
        detector: DetectorId::ContextThrash,
        key: "context compacted repeatedly".to_owned(),
        message: format!("the context was compacted {n} times"),
        count: n,
        threshold: th.compaction_min,
        evidence,
    });
}

fn stall(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    let gap_ms = (th.stall_gap_secs as i64).saturating_mul(1000);
    let mut hits = Vec::new();
    let mut timeouts = 0u64;
    let mut gaps = 0u64;
    for lane in lanes(trace) {
        let mut prev: Option<i64> = None;
        for t in &lane {
            if let (Some(p), Some(a)) = (prev, t.at_ms)
                && a - p >= gap_ms
            {
                gaps += 1;
                hits.push(ev(
                    t,
                    None,
                    format!("{} s of silence before this turn", (a - p) / 1000),
                ));
            }
            if t.at_ms.is_some() {
                prev = t.at_ms;
            }
            for c in &t.calls {
                if c.status == CallStatus::Timeout {
                    timeouts += 1;
                    hits.push(ev(t, Some(c), format!("timed out: {}", shown(c))));
                }
            }
        }
    }
    let n = gaps + timeouts;
    if n < th.stall_min || n == 0 {
        return;
    }
    let key = match (gaps > 0, timeouts > 0) {
        (true, true) => "silences and timed-out commands",
        (true, false) => "long silences",
        (false, _) => "timed-out commands",
    };
    out.push(Draft {
        detector: DetectorId::Stall,
        key: key.to_owned(),
        message: format!("{gaps} long silence(s) and {timeouts} timed-out command(s)"),
        count: n,
        threshold: th.stall_min.max(1),
        evidence: hits,
    });
}

fn contract_retry(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    // Worktrain sessions: blocked submissions per step visit (the engine's count).
    for (i, v) in trace.steps.iter().enumerate() {
        let n = u64::from(v.blocked);
        if n < th.contract_retry_min || n == 0 {
            continue;
        }
        let evidence = trace
            .turns
            .iter()
            .filter(|t| t.step == Some(i as u32) && t.harness == Some(HarnessReply::Blocked))
            .map(|t| ev(t, None, format!("submission for `{}` blocked", v.step)))
            .collect::<Vec<_>>();
        let evidence = if evidence.is_empty() {
            trace
                .turns
                .iter()
                .filter(|t| t.step == Some(i as u32))
                .take(1)
                .map(|t| ev(t, None, format!("`{}` blocked {n} times", v.step)))
                .collect()
        } else {
            evidence
        };
        out.push(Draft {
            detector: DetectorId::ContractRetry,
            key: format!("blocked submissions at step {}", v.step),
            message: format!(
                "step `{}` was blocked {n} times before it was accepted",
                v.step
            ),
            count: n,
            threshold: th.contract_retry_min,
            evidence,
        });
    }
    if !trace.steps.is_empty() {
        return;
    }
    // Other harnesses: malformed output refused.
    let hits: Vec<Evidence> = trace
        .turns
        .iter()
        .filter(|t| t.harness == Some(HarnessReply::FormatError))
        .map(|t| ev(t, None, "output refused: wrong format"))
        .collect();
    let n = hits.len() as u64;
    if n >= th.contract_retry_min && n > 0 {
        out.push(Draft {
            detector: DetectorId::ContractRetry,
            key: "output refused by the harness format".to_owned(),
            message: format!("the harness refused the agent's output {n} times (wrong format)"),
            count: n,
            threshold: th.contract_retry_min,
            evidence: hits,
        });
    }
}

fn rubber_stamp(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    for (i, v) in trace.steps.iter().enumerate() {
        if !v.completed {
            continue;
        }
        let turns: Vec<&Turn> = trace
            .turns
            .iter()
            .filter(|t| t.step == Some(i as u32))
            .collect();
        let work = turns
            .iter()
            .flat_map(|t| t.calls.iter())
            .filter(|c| !matches!(c.action, Action::Submit | Action::Other))
            .count() as u64;
        if work > th.rubber_stamp_max_calls
            || v.notes_chars > th.rubber_stamp_max_notes
            || turns.is_empty()
        {
            continue;
        }
        out.push(Draft {
            detector: DetectorId::RubberStamp,
            key: format!("step {} completed without work", v.step),
            message: format!(
                "step `{}` was completed with {work} work call(s) and {} characters of notes",
                v.step, v.notes_chars
            ),
            count: 1,
            threshold: 1,
            evidence: turns
                .iter()
                .take(3)
                .map(|t| ev(t, None, format!("turn of step `{}`", v.step)))
                .collect(),
        });
    }
}

fn token_waste(trace: &Trace, th: &Thresholds, out: &mut Vec<Draft>) {
    let mut hits = Vec::new();
    let mut bytes = 0u64;
    for (t, c) in trace.calls() {
        let unused = c.output_bytes >= th.waste_output_bytes && c.output_used == Some(false);
        if unused || c.output_truncated {
            bytes += c.output_bytes;
            hits.push(ev(
                t,
                Some(c),
                format!(
                    "{} bytes {}: {}",
                    c.output_bytes,
                    if c.output_truncated {
                        "cut by the harness"
                    } else {
                        "never used"
                    },
                    shown(c)
                ),
            ));
        }
    }
    let n = hits.len() as u64;
    if n < th.waste_min || n == 0 {
        return;
    }
    out.push(Draft {
        detector: DetectorId::TokenWaste,
        key: "large outputs unused".to_owned(),
        message: format!(
            "{n} large tool outputs ({} KB) were cut or never used",
            bytes / 1024
        ),
        count: n,
        threshold: th.waste_min,
        evidence: hits,
    });
}

fn unverified_finish(trace: &Trace, _th: &Thresholds, out: &mut Vec<Draft>) {
    let lane = lanes(trace).into_iter().next().unwrap_or_default();
    let all: Vec<(&Turn, &ToolCall)> = calls(&lane).collect();
    let Some(finish) = all
        .iter()
        .rposition(|(_, c)| c.action == Action::Submit && c.status != CallStatus::Error)
    else {
        return;
    };
    // Deleting scratch files before submitting is tidying, not a change to check.
    let substantive = |c: &ToolCall| {
        changes(c)
            && !c
                .command
                .as_deref()
                .is_some_and(|cmd| normalize::command_shape(cmd).starts_with("rm"))
    };
    let Some(last_edit) = all[..finish].iter().rposition(|(_, c)| substantive(c)) else {
        return;
    };
    let checked = all[last_edit + 1..finish].iter().any(|(_, c)| {
        matches!(c.action, Action::Test | Action::Run) && c.status != CallStatus::Missing
    });
    if checked {
        return;
    }
    let (et, ec) = all[last_edit];
    let (ft, fc) = all[finish];
    out.push(Draft {
        detector: DetectorId::UnverifiedFinish,
        key: "finished without checking the last change".to_owned(),
        message: "the work was submitted without running anything after the last change".to_owned(),
        count: 1,
        threshold: 1,
        evidence: vec![
            ev(et, Some(ec), format!("last change: {}", shown(ec))),
            ev(ft, Some(fc), format!("submitted: {}", shown(fc))),
        ],
    });
}
