//! Per-workflow and per-step numbers for the workflows pages: runs, success rate,
//! p50/p95 duration, tokens and blocked-attempt rate, computed from the store's
//! [`WorkflowSamples`] (projections only, a bounded window of the latest sessions).
//!
//! Definitions (also in `docs/console.md`):
//! - a session *succeeded* when its workflow reached the end, *failed* when it did not and
//!   its run failed or was cancelled; sessions still going count in neither, and the
//!   success rate is succeeded / (succeeded + failed);
//! - a session's duration runs from its start to the close of its last step (succeeded
//!   sessions only);
//! - a step *run* is one node of the step graph (a loop pass or a rewind enters the step
//!   again); it succeeded when the node completed, failed when it was abandoned by a
//!   rewind or was still open when its session's run failed or was cancelled;
//! - a step's duration runs from entering the node to completing it (completed nodes);
//! - tokens are input plus output tokens of the LLM turns (per step: those recorded while
//!   the node was open);
//! - the blocked-attempt rate is blocked attempts / submitted attempts;
//! - p50 and p95 are nearest-rank percentiles.

use std::collections::{BTreeMap, HashMap};

use worktrain_core::ids::SessionId;
use worktrain_core::projection::{NodeStatus, SessionStatus};
use worktrain_core::run::RunState;
use worktrain_store::stats::{RunSample, WorkflowSamples};

/// How many of a workflow's latest sessions the numbers cover.
pub const WINDOW: u32 = 1000;

/// Numbers of one workflow or one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Numbers {
    /// Runs (sessions, or nodes of the step).
    pub runs: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which failed.
    pub failed: u64,
    /// Durations of the succeeded ones (ms), sorted.
    pub durations: Vec<i64>,
    /// Tokens, in total.
    pub tokens: u64,
    /// Attempts submitted for the step, over the sampled sessions.
    pub attempts: u64,
    /// Of which blocked.
    pub blocked: u64,
}

impl Numbers {
    /// succeeded / (succeeded + failed), none when nothing ended.
    pub fn success_rate(&self) -> Option<f64> {
        let ended = self.succeeded + self.failed;
        (ended > 0).then(|| self.succeeded as f64 / ended as f64)
    }

    /// blocked / attempts, none without attempts.
    pub fn blocked_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.blocked as f64 / self.attempts as f64)
    }

    /// The nearest-rank `p`-th percentile of the durations (`p` in 0..=100).
    pub fn percentile(&self, p: u32) -> Option<i64> {
        nearest_rank(&self.durations, p)
    }

    /// Tokens per run.
    pub fn tokens_per_run(&self) -> Option<u64> {
        (self.runs > 0).then(|| self.tokens / self.runs)
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p`%
/// of the values at or below it.
pub fn nearest_rank(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p.min(100)) * n).div_ceil(100).max(1);
    sorted
        .get(usize::try_from(rank - 1).unwrap_or(usize::MAX))
        .copied()
}

/// The numbers of a workflow and of each of its steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowStats {
    /// Sessions of the workflow, all time.
    pub total_sessions: u64,
    /// The whole workflow, over the window.
    pub workflow: Numbers,
    /// Per step, in `order` first, then any other step seen, by name.
    pub steps: Vec<(String, Numbers)>,
}

fn ended_badly(r: &RunSample) -> bool {
    r.status != SessionStatus::Complete
        && matches!(r.run_state, Some(RunState::Failed | RunState::Cancelled))
}

/// Compute the numbers; `order` is the workflow's steps in definition order.
pub fn compute(samples: &WorkflowSamples, order: &[String]) -> WorkflowStats {
    let runs: HashMap<SessionId, &RunSample> =
        samples.runs.iter().map(|r| (r.session_id, r)).collect();
    let mut wf = Numbers::default();
    let mut last_close: HashMap<SessionId, i64> = HashMap::new();
    let mut per: BTreeMap<&str, Numbers> = BTreeMap::new();
    for n in &samples.steps {
        let x = per.entry(n.step_id.as_str()).or_default();
        x.runs += 1;
        x.tokens += n.tokens;
        x.attempts += n.attempts;
        x.blocked += n.blocked_attempts;
        wf.attempts += n.attempts;
        wf.blocked += n.blocked_attempts;
        let session_failed = runs.get(&n.session_id).is_some_and(|r| ended_badly(r));
        match n.status {
            NodeStatus::Completed => {
                x.succeeded += 1;
                if let Some(c) = n.closed_at_ms {
                    x.durations.push(c - n.entered_at_ms);
                    let e = last_close.entry(n.session_id).or_insert(c);
                    *e = (*e).max(c);
                }
            }
            NodeStatus::Abandoned => x.failed += 1,
            NodeStatus::Active => {
                if session_failed {
                    x.failed += 1;
                }
            }
        }
    }
    for r in &samples.runs {
        wf.runs += 1;
        wf.tokens += r.tokens;
        if r.status == SessionStatus::Complete {
            wf.succeeded += 1;
            if let Some(end) = last_close.get(&r.session_id) {
                wf.durations.push(end - r.created_at_ms);
            }
        } else if ended_badly(r) {
            wf.failed += 1;
        }
    }
    wf.durations.sort_unstable();
    let mut steps = Vec::new();
    for step in order {
        if let Some(mut x) = per.remove(step.as_str()) {
            x.durations.sort_unstable();
            steps.push((step.clone(), x));
        } else {
            steps.push((step.clone(), Numbers::default()));
        }
    }
    for (step, mut x) in per {
        x.durations.sort_unstable();
        steps.push((step.to_owned(), x));
    }
    WorkflowStats {
        total_sessions: samples.total_sessions,
        workflow: wf,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(nearest_rank(&v, 50), Some(50));
        assert_eq!(nearest_rank(&v, 95), Some(100));
        assert_eq!(nearest_rank(&v, 0), Some(10));
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
    }
}
