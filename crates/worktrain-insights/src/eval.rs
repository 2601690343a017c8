//! `insights eval`: how well each detector predicts failure on labelled runs.
//!
//! For every detector: how often it fires in passing and in failing runs, its precision
//! (of the runs it fires on, the share that failed), recall (of the failing runs, the share
//! it fires on) and lift (precision over the base failure rate; above 1 means the
//! detector's firing is associated with failure, at 1 or below it does not predict it).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::detect::DetectorId;

/// One label: a run id and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Session id, trace id (`source:native`) or benchmark instance id.
    pub id: String,
    /// Whether the run resolved its task.
    pub resolved: bool,
    /// Line in the labels file.
    pub line: u64,
}

/// A problem with the labels file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct LabelError {
    /// File.
    pub file: String,
    /// Line.
    pub line: u64,
    /// What is wrong and what to do.
    pub reason: String,
}

/// Parse `session_or_instance_id,resolved` CSV (a header line is optional; `resolved` is
/// `true`/`false`, `1`/`0` or `yes`/`no`).
pub fn parse_labels(file: &str, text: &str) -> Result<Vec<Label>, LabelError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = l.split(',').map(|c| c.trim().trim_matches('"')).collect();
        let err = |reason: String| LabelError {
            file: file.to_owned(),
            line,
            reason,
        };
        if cols.len() < 2 {
            return Err(err(format!(
                "expected `id,resolved`, found {} column(s): `{}`",
                cols.len(),
                crate::normalize::bounded(l, 60)
            )));
        }
        let resolved = match cols[1].to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other if line == 1 && out.is_empty() => {
                // A header line.
                let _ = other;
                continue;
            }
            other => {
                return Err(err(format!(
                    "`resolved` must be true/false (or 1/0, yes/no), found `{}`",
                    crate::normalize::bounded(other, 30)
                )));
            }
        };
        if cols[0].is_empty() {
            return Err(err("the id column is empty".to_owned()));
        }
        if !seen.insert(cols[0].to_owned()) {
            return Err(err(format!("`{}` is labelled twice", cols[0])));
        }
        out.push(Label {
            id: cols[0].to_owned(),
            resolved,
            line,
        });
    }
    if out.is_empty() {
        return Err(LabelError {
            file: file.to_owned(),
            line: 1,
            reason: "no labels found; expected lines of `id,resolved`".to_owned(),
        });
    }
    Ok(out)
}

/// The result for one detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectorScore {
    /// Detector (or `any` for "at least one finding").
    pub detector: String,
    /// Passing runs it fired on.
    pub fired_pass: u64,
    /// Failing runs it fired on.
    pub fired_fail: u64,
    /// Share of passing runs it fired on.
    pub rate_pass: f64,
    /// Share of failing runs it fired on.
    pub rate_fail: f64,
    /// Of the runs it fired on, the share that failed (`null` when it never fired).
    pub precision: Option<f64>,
    /// Of the failing runs, the share it fired on.
    pub recall: f64,
    /// Precision over the base failure rate (`null` when it never fired).
    pub lift: Option<f64>,
}

/// The evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Labelled runs matched to a trace.
    pub runs: u64,
    /// Of which passing.
    pub passing: u64,
    /// Of which failing.
    pub failing: u64,
    /// Failing share.
    pub base_failure_rate: f64,
    /// Per detector, in detector order; `any` last.
    pub detectors: Vec<DetectorScore>,
    /// Labels with no imported trace.
    pub unmatched_labels: Vec<String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One analysed run: its ids and the detectors that fired on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalRun {
    /// Trace id (`source:native`).
    pub trace_id: String,
    /// The source's id (session or instance id).
    pub native_id: String,
    /// Detectors with at least one finding.
    pub detectors: BTreeSet<DetectorId>,
}

/// Evaluate the detectors on the labelled runs among `runs`.
pub fn evaluate(labels: &[Label], runs: &[EvalRun]) -> EvalReport {
    let mut by_id: BTreeMap<&str, &EvalRun> = BTreeMap::new();
    for r in runs {
        by_id.insert(r.trace_id.as_str(), r);
        by_id.entry(r.native_id.as_str()).or_insert(r);
    }
    let mut matched: Vec<(bool, BTreeSet<DetectorId>)> = Vec::new();
    let mut unmatched = Vec::new();
    for l in labels {
        match by_id.get(l.id.as_str()) {
            Some(r) => matched.push((l.resolved, r.detectors.clone())),
            None => unmatched.push(l.id.clone()),
        }
    }
    let passing = matched.iter().filter(|(r, _)| *r).count() as u64;
    let failing = matched.len() as u64 - passing;
    let base = ratio(failing, passing + failing);
    let score = |name: String, fired: &dyn Fn(&BTreeSet<DetectorId>) -> bool| {
        let fp = matched.iter().filter(|(r, d)| *r && fired(d)).count() as u64;
        let ff = matched.iter().filter(|(r, d)| !*r && fired(d)).count() as u64;
        let precision = (fp + ff > 0).then(|| ratio(ff, fp + ff));
        DetectorScore {
            detector: name,
            fired_pass: fp,
            fired_fail: ff,
            rate_pass: round(ratio(fp, passing)),
            rate_fail: round(ratio(ff, failing)),
            precision: precision.map(round),
            recall: round(ratio(ff, failing)),
            lift: precision.filter(|_| base > 0.0).map(|p| round(p / base)),
        }
    };
    let mut detectors: Vec<DetectorScore> = DetectorId::ALL
        .iter()
        .map(|d| {
            score(d.as_str().to_owned(), &|s: &BTreeSet<DetectorId>| {
                s.contains(d)
            })
        })
        .collect();
    detectors.push(score("any".to_owned(), &|s: &BTreeSet<DetectorId>| {
        !s.is_empty()
    }));
    EvalReport {
        runs: passing + failing,
        passing,
        failing,
        base_failure_rate: round(base),
        detectors,
        unmatched_labels: unmatched,
    }
}

impl EvalReport {
    /// A plain-text table.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} labelled runs: {} passing, {} failing (base failure rate {:.3})\n\n",
            self.runs, self.passing, self.failing, self.base_failure_rate
        );
        s.push_str(&format!(
            "{:<20} {:>9} {:>9} {:>9} {:>7} {:>6}\n",
            "detector", "fires:pass", "fires:fail", "precision", "recall", "lift"
        ));
        let opt = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}"));
        for d in &self.detectors {
            s.push_str(&format!(
                "{:<20} {:>10} {:>10} {:>9} {:>7.3} {:>6}\n",
                d.detector,
                format!("{}/{}", d.fired_pass, self.passing),
                format!("{}/{}", d.fired_fail, self.failing),
                opt(d.precision),
                d.recall,
                opt(d.lift)
            ));
        }
        if !self.unmatched_labels.is_empty() {
            s.push_str(&format!(
                "\n{} label(s) matched no imported trace (import the runs first): {}\n",
                self.unmatched_labels.len(),
                self.unmatched_labels
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_parse_with_precise_errors() {
        let l = parse_labels("l.csv", "instance_id,resolved\na,true\nb,0\n").unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].resolved && !l[1].resolved);
        let e = parse_labels("l.csv", "a,true\nb,maybe\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("l.csv:2: `resolved` must be"),
            "{e}"
        );
        let e = parse_labels("l.csv", "a,true\na,false\n").unwrap_err();
        assert!(e.reason.contains("twice"));
        assert!(parse_labels("l.csv", "\n").is_err());
    }
}
