//! What a proposal delivered as a pull request says: its branch, title and body.
//!
//! `worktrain proposals apply --write` patches the local workflow file; without
//! `--write` the patched file is committed on [`DeliveryRequest::branch`] of the
//! repository that holds the workflow and proposed through the delivery pipeline
//! (`worktrain_delivery::change`), which this crate does not depend on.

use std::path::PathBuf;

use serde::Serialize;

use crate::proposals::Proposal;

/// What to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRequest {
    /// Proposal id.
    pub proposal_id: String,
    /// The branch the change goes on, derived from the proposal id: delivering again
    /// reuses the branch and its open pull request, never a second one.
    pub branch: String,
    /// Workflow id.
    pub workflow_id: String,
    /// The workflow file, relative to the repository root when it is in one.
    pub file: PathBuf,
    /// The patched file content (lint already passed).
    pub patched: String,
    /// Pull request title.
    pub title: String,
    /// Pull request body (markdown: evidence, patch, expected effect, confidence).
    pub body: String,
}

/// The request for a proposal.
pub fn request(p: &Proposal, file: PathBuf, patched: String) -> DeliveryRequest {
    DeliveryRequest {
        proposal_id: p.id.clone(),
        branch: format!("worktrain/proposal-{}", p.id),
        workflow_id: p.workflow.clone(),
        file,
        patched,
        title: format!("workflow {}: {}", p.workflow, p.patch.describe()),
        body: body(p),
    }
}

/// The pull request description of a proposal. Trace content appears only quoted.
pub fn body(p: &Proposal) -> String {
    let mut s = format!(
        "Proposal `{}` from worktrain insights.\n\n**Pattern** ({}): {} — quoted from traces: `{}`\n\n**Change**: {}\n\n**Expected effect**: {}\n\n**Confidence**: {:.2} ({} sessions with the pattern, {} of {} with a known outcome failed; without it {} of {} failed)\n\n**Evidence sessions**:\n",
        p.id,
        p.detector.as_str(),
        p.detector.describe(),
        p.pattern.replace('`', "'"),
        p.patch.describe(),
        p.expected_effect,
        p.confidence,
        p.support.sessions,
        p.support.failing,
        p.support.known,
        p.support.failing_without,
        p.support.known_without,
    );
    for e in &p.evidence {
        s.push_str(&format!(
            "- `{}` ({}): {}\n",
            e.trace_id,
            e.outcome,
            e.turns.join(", ")
        ));
    }
    s
}
