//! The seam between applying a proposal and delivering it as a pull request.
//!
//! `worktrain proposals apply --write` patches the local workflow file. Delivering the
//! patched file on a branch as a pull request is the delivery pipeline's job: it
//! implements [`ProposalDelivery`], and `proposals apply` (without `--write`) hands it a
//! [`DeliveryRequest`]. Until a delivery implementation is wired in, `apply` without
//! `--write` explains that and changes nothing.

use std::path::PathBuf;

use serde::Serialize;

use crate::proposals::Proposal;

/// What to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRequest {
    /// Proposal id (also a stable idempotency key: delivering twice opens one PR).
    pub proposal_id: String,
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

/// Where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReceipt {
    /// Branch the change was committed on.
    pub branch: String,
    /// The pull request, when opened.
    pub url: Option<String>,
}

/// Delivers a patched workflow as a change for review.
pub trait ProposalDelivery: Send + Sync {
    /// Commit the patched file on a branch and open a pull request (idempotent per
    /// proposal id).
    fn deliver(&self, request: &DeliveryRequest) -> Result<DeliveryReceipt, String>;
}

/// The request for a proposal.
pub fn request(p: &Proposal, file: PathBuf, patched: String) -> DeliveryRequest {
    DeliveryRequest {
        proposal_id: p.id.clone(),
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
