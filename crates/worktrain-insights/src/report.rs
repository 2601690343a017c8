//! `worktrain report`: completion, failure and cancel rates by workflow and trigger,
//! cancel latency, trigger decisions, top findings and a cost breakdown over a period.
//!
//! Deterministic: every grouping is sorted, numbers are rounded the same way, and a
//! missing field (a trace without a workflow, cost, or end time) is counted under a
//! visible placeholder instead of failing the report.

use std::collections::BTreeMap;

use serde::Serialize;
use worktrain_store::insights::TraceHead;

use crate::service::TraceSummary;

/// Placeholder for a missing key.
pub const NONE: &str = "(none)";

/// Rates of one group (a workflow or a trigger).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Sessions.
    pub sessions: u64,
    /// Workflow completed.
    pub completed: u64,
    /// Failed (outcome PARTIAL, BLOCKED or FAILED, not cancelled).
    pub failed: u64,
    /// Cancelled by an operator.
    pub cancelled: u64,
    /// Still running, or unknown.
    pub unknown: u64,
    /// completed / sessions.
    pub completion_rate: f64,
    /// failed / sessions.
    pub failure_rate: f64,
    /// cancelled / sessions.
    pub cancel_rate: f64,
    /// Cost, when known.
    pub cost_usd: f64,
    /// Tokens (all kinds).
    pub tokens: u64,
}

/// Cost of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Sessions (or visits, for steps).
    pub sessions: u64,
    /// Tokens.
    pub tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// How a trigger's decisions went (supplied by the caller from the triggers' records).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TriggerDecisions {
    /// Events that matched and dispatched a session.
    pub matched: u64,
    /// Events skipped (filtered, duplicate, …).
    pub skipped: u64,
    /// Skip reasons with counts.
    pub skip_reasons: BTreeMap<String, u64>,
}

/// Decision kinds that mean an event matched and started work.
const MATCHED: &[&str] = &["dispatched"];
/// Decision kinds that mean an event was looked at and not acted on.
const SKIPPED: &[&str] = &[
    "filtered",
    "duplicate",
    "unauthorized_commenter",
    "queue_full",
    "trigger_disabled",
    "invalid_payload",
    "dispatch_failed",
    "overlap_skipped",
    "signature_rejected",
];

/// Trigger decisions per trigger from the triggers' decision log (`dispatched` counts as
/// matched; filtered, duplicate, refused and failed decisions as skipped, by kind and
/// reason). Decisions before `since_ms` are left out.
pub fn trigger_decisions(
    decisions: &[worktrain_store::triggers::Decision],
    since_ms: Option<i64>,
) -> BTreeMap<String, TriggerDecisions> {
    let mut out: BTreeMap<String, TriggerDecisions> = BTreeMap::new();
    for d in decisions {
        if since_ms.is_some_and(|s| d.created_at_ms < s) {
            continue;
        }
        let kind = d.body.decision.as_str();
        if MATCHED.contains(&kind) {
            out.entry(d.body.trigger_id.clone()).or_default().matched += 1;
        } else if SKIPPED.contains(&kind) {
            let t = out.entry(d.body.trigger_id.clone()).or_default();
            t.skipped += 1;
            let reason = crate::normalize::normalize(&d.body.reason);
            let key = if reason.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {}", crate::normalize::bounded(&reason, 80))
            };
            *t.skip_reasons.entry(key).or_default() += 1;
        }
    }
    out
}

/// A finding's frequency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopFinding {
    /// Detector.
    pub detector: String,
    /// Pattern (quoted from traces).
    pub pattern: String,
    /// Sessions with it.
    pub sessions: u64,
    /// Of which failing.
    pub failing: u64,
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub samples: u64,
    /// Median (ms).
    pub p50_ms: i64,
    /// 95th percentile (ms).
    pub p95_ms: i64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Start of the period (ms), when limited.
    pub since_ms: Option<i64>,
    /// Sessions in the period.
    pub sessions: u64,
    /// Outcome counts.
    pub outcomes: BTreeMap<String, u64>,
    /// Rates by workflow.
    pub by_workflow: BTreeMap<String, Rates>,
    /// Rates by trigger.
    pub by_trigger: BTreeMap<String, Rates>,
    /// From cancel request to the run's end.
    pub cancel_latency: Option<Latency>,
    /// Trigger decisions by trigger (`null`: none recorded).
    pub trigger_decisions: Option<BTreeMap<String, TriggerDecisions>>,
    /// Most frequent findings.
    pub top_findings: Vec<TopFinding>,
    /// Cost, all sessions.
    pub cost: Cost,
    /// Cost by workflow step (`workflow/step`).
    pub cost_by_step: BTreeMap<String, Cost>,
    /// Cost per changed line, when lines changed are known.
    pub cost_per_changed_line: Option<f64>,
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn r4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Build the report from trace heads, finding counts `(detector, pattern, trace outcome)`
/// per trace, and trigger decisions when the caller has them.
pub fn build(
    since_ms: Option<i64>,
    heads: &[TraceHead],
    findings: &[(String, String, String, String)],
    trigger_decisions: Option<BTreeMap<String, TriggerDecisions>>,
) -> Report {
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_workflow: BTreeMap<String, Rates> = BTreeMap::new();
    let mut by_trigger: BTreeMap<String, Rates> = BTreeMap::new();
    let mut cancel = Vec::new();
    let mut cost = Cost::default();
    let mut cost_by_step: BTreeMap<String, Cost> = BTreeMap::new();
    let mut changed_lines = 0u64;
    let mut cost_known_for_changed = 0.0;
    for h in heads {
        let s: TraceSummary = serde_json::from_str(&h.summary).unwrap_or_default();
        *outcomes.entry(h.outcome.clone()).or_default() += 1;
        let cancelled = s.run_end.as_deref() == Some("cancelled");
        let completed = h.outcome == "SUCCESS";
        let failed = !cancelled && matches!(h.outcome.as_str(), "PARTIAL" | "BLOCKED" | "FAILED");
        let tokens = s.tokens.total();
        let c = s.cost_usd.unwrap_or(0.0);
        for (map, key) in [
            (
                &mut by_workflow,
                h.workflow_id.clone().unwrap_or_else(|| NONE.to_owned()),
            ),
            (
                &mut by_trigger,
                h.trigger.clone().unwrap_or_else(|| NONE.to_owned()),
            ),
        ] {
            let r = map.entry(key).or_default();
            r.sessions += 1;
            r.completed += u64::from(completed);
            r.failed += u64::from(failed);
            r.cancelled += u64::from(cancelled);
            r.unknown += u64::from(!completed && !failed && !cancelled);
            r.cost_usd += c;
            r.tokens += tokens;
        }
        if let Some(l) = s.cancel_latency_ms {
            cancel.push(l);
        }
        cost.sessions += 1;
        cost.tokens += tokens;
        cost.cost_usd += c;
        if s.changed_lines > 0 {
            changed_lines += s.changed_lines;
            cost_known_for_changed += c;
        }
        let wf = h.workflow_id.as_deref().unwrap_or(NONE);
        for st in &s.steps {
            let e = cost_by_step.entry(format!("{wf}/{}", st.step)).or_default();
            e.sessions += 1;
            e.tokens += st.tokens.total();
            e.cost_usd += st.cost_usd.unwrap_or(0.0);
        }
    }
    for r in by_workflow.values_mut().chain(by_trigger.values_mut()) {
        let n = r.sessions.max(1) as f64;
        r.completion_rate = r3(r.completed as f64 / n);
        r.failure_rate = r3(r.failed as f64 / n);
        r.cancel_rate = r3(r.cancelled as f64 / n);
        r.cost_usd = r4(r.cost_usd);
    }
    cost.cost_usd = r4(cost.cost_usd);
    for c in cost_by_step.values_mut() {
        c.cost_usd = r4(c.cost_usd);
    }
    cancel.sort_unstable();
    let cancel_latency = (!cancel.is_empty()).then(|| Latency {
        samples: cancel.len() as u64,
        p50_ms: percentile(&cancel, 0.5),
        p95_ms: percentile(&cancel, 0.95),
    });
    // Top findings: sessions per (detector, pattern).
    let mut tops: BTreeMap<(String, String), (std::collections::BTreeSet<String>, u64)> =
        BTreeMap::new();
    for (trace, detector, pattern, outcome) in findings {
        let e = tops.entry((detector.clone(), pattern.clone())).or_default();
        if e.0.insert(trace.clone()) && matches!(outcome.as_str(), "PARTIAL" | "BLOCKED" | "FAILED")
        {
            e.1 += 1;
        }
    }
    let mut top_findings: Vec<TopFinding> = tops
        .into_iter()
        .map(|((detector, pattern), (set, failing))| TopFinding {
            detector,
            pattern,
            sessions: set.len() as u64,
            failing,
        })
        .collect();
    top_findings.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then_with(|| a.detector.cmp(&b.detector))
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    top_findings.truncate(10);
    Report {
        since_ms,
        sessions: heads.len() as u64,
        outcomes,
        by_workflow,
        by_trigger,
        cancel_latency,
        trigger_decisions,
        top_findings,
        cost,
        cost_by_step,
        cost_per_changed_line: (changed_lines > 0 && cost_known_for_changed > 0.0)
            .then(|| r4(cost_known_for_changed / changed_lines as f64)),
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl Report {
    /// Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# worktrain report\n\n");
        s.push_str(&format!(
            "{} sessions{}.\n\n",
            self.sessions,
            self.since_ms
                .map(|m| format!(" since {} (ms since the epoch)", m))
                .unwrap_or_default()
        ));
        s.push_str("## Outcomes\n\n| outcome | sessions |\n|---|---:|\n");
        for (k, v) in &self.outcomes {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        for (title, map) in [
            ("workflow", &self.by_workflow),
            ("trigger", &self.by_trigger),
        ] {
            s.push_str(&format!(
                "\n## By {title}\n\n| {title} | sessions | completed | failed | cancelled | cost (USD) |\n|---|---:|---:|---:|---:|---:|\n"
            ));
            for (k, r) in map {
                s.push_str(&format!(
                    "| {k} | {} | {} | {} | {} | {:.4} |\n",
                    r.sessions,
                    pct(r.completion_rate),
                    pct(r.failure_rate),
                    pct(r.cancel_rate),
                    r.cost_usd
                ));
            }
        }
        s.push_str("\n## Cancel latency\n\n");
        match &self.cancel_latency {
            Some(l) => s.push_str(&format!(
                "p50 {} ms, p95 {} ms over {} cancelled runs.\n",
                l.p50_ms, l.p95_ms, l.samples
            )),
            None => s.push_str("No cancelled runs in the period.\n"),
        }
        s.push_str("\n## Trigger decisions\n\n");
        match &self.trigger_decisions {
            Some(d) if !d.is_empty() => {
                s.push_str("| trigger | matched | skipped | match rate | top skip reasons |\n|---|---:|---:|---:|---|\n");
                for (k, t) in d {
                    let total = (t.matched + t.skipped).max(1) as f64;
                    let mut reasons: Vec<(&String, &u64)> = t.skip_reasons.iter().collect();
                    reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                    let top: Vec<String> = reasons
                        .iter()
                        .take(3)
                        .map(|(r, n)| format!("{r} ({n})"))
                        .collect();
                    s.push_str(&format!(
                        "| {k} | {} | {} | {} | {} |\n",
                        t.matched,
                        t.skipped,
                        pct(t.matched as f64 / total),
                        top.join(", ")
                    ));
                }
            }
            _ => s.push_str("No trigger decisions recorded.\n"),
        }
        s.push_str("\n## Top findings\n\n");
        if self.top_findings.is_empty() {
            s.push_str("No findings.\n");
        } else {
            s.push_str("| detector | pattern (quoted from traces) | sessions | failing |\n|---|---|---:|---:|\n");
            for f in &self.top_findings {
                s.push_str(&format!(
                    "| {} | `{}` | {} | {} |\n",
                    f.detector,
                    f.pattern.replace('|', "\\|").replace('`', "'"),
                    f.sessions,
                    f.failing
                ));
            }
        }
        s.push_str(&format!(
            "\n## Cost\n\n{} tokens, ${:.4} over {} sessions",
            self.cost.tokens, self.cost.cost_usd, self.cost.sessions
        ));
        match self.cost_per_changed_line {
            Some(c) => s.push_str(&format!("; ${c:.4} per changed line.\n")),
            None => s.push_str("; changed lines unknown.\n"),
        }
        if !self.cost_by_step.is_empty() {
            s.push_str(
                "\n| workflow/step | visits | tokens | cost (USD) |\n|---|---:|---:|---:|\n",
            );
            for (k, c) in &self.cost_by_step {
                s.push_str(&format!(
                    "| {k} | {} | {} | {:.4} |\n",
                    c.sessions, c.tokens, c.cost_usd
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(id: &str, wf: Option<&str>, outcome: &str, summary: &str) -> TraceHead {
        TraceHead {
            trace_id: id.into(),
            source: "worktrain".into(),
            native_id: id.into(),
            workflow_id: wf.map(str::to_owned),
            trigger: None,
            outcome: outcome.into(),
            started_at_ms: None,
            ended_at_ms: None,
            version: 1,
            summary: summary.into(),
            findings: 0,
        }
    }

    #[test]
    fn trigger_decisions_count_matches_and_skip_reasons() {
        use worktrain_store::triggers::{Decision, NewDecision};
        let d = |id: i64, at: i64, kind: &str, reason: &str| Decision {
            id,
            created_at_ms: at,
            body: NewDecision {
                trigger_id: "gh".into(),
                decision: kind.into(),
                reason: reason.into(),
                event: None,
                delivery_id: None,
                source: None,
                session_id: None,
                detail: serde_json::Value::Null,
            },
        };
        let all = vec![
            d(1, 100, "received", ""),
            d(2, 100, "dispatched", "ok"),
            d(3, 100, "filtered", "label `bug` missing on issue 12"),
            d(4, 100, "filtered", "label `bug` missing on issue 13"),
            d(5, 100, "duplicate", "delivery seen"),
            d(6, 10, "dispatched", "old"),
        ];
        let m = trigger_decisions(&all, Some(50));
        let t = &m["gh"];
        assert_eq!((t.matched, t.skipped), (1, 3));
        assert_eq!(
            t.skip_reasons["filtered: label `bug` missing on issue <n>"],
            2
        );
        let r = build(None, &[], &[], Some(m));
        assert!(r.to_markdown().contains("| gh | 1 | 3 | 25.0% | filtered: label `bug` missing on issue <n> (2), duplicate: delivery seen (1) |"), "{}", r.to_markdown());
    }

    #[test]
    fn missing_fields_are_safe_and_output_is_deterministic() {
        let heads = vec![
            head("b", None, "FAILED", "not json"),
            head(
                "a",
                Some("fix"),
                "SUCCESS",
                r#"{"cost_usd": 0.5, "tokens": {"input": 10}, "changed_lines": 5}"#,
            ),
            head(
                "c",
                Some("fix"),
                "UNKNOWN",
                r#"{"run_end": "cancelled", "cancel_latency_ms": 300}"#,
            ),
        ];
        let findings = vec![
            (
                "b".into(),
                "stall".into(),
                "long silences".into(),
                "FAILED".into(),
            ),
            (
                "b".into(),
                "stall".into(),
                "long silences".into(),
                "FAILED".into(),
            ),
            (
                "a".into(),
                "stall".into(),
                "long silences".into(),
                "SUCCESS".into(),
            ),
        ];
        let r1 = build(None, &heads, &findings, None);
        let mut reversed = heads.clone();
        reversed.reverse();
        let r2 = build(None, &reversed, &findings, None);
        assert_eq!(r1, r2);
        assert_eq!(r1.to_markdown(), r2.to_markdown());
        assert_eq!(r1.by_workflow[NONE].failed, 1);
        assert_eq!(r1.by_workflow["fix"].cancelled, 1);
        assert_eq!(r1.cancel_latency.unwrap().p50_ms, 300);
        assert_eq!(r1.top_findings[0].sessions, 2);
        assert_eq!(r1.top_findings[0].failing, 1);
        assert_eq!(r1.cost_per_changed_line, Some(0.1));
        assert!(r1.to_markdown().contains("No trigger decisions recorded."));
    }
}
