//! Use cases over the stores: import files, sync worktrain sessions, (re-)analyse stored
//! traces, refresh proposals, answer `check_insights`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use worktrain_core::ids::Seq;
use worktrain_store::insights::{
    FindingFilter, FindingRow, FindingsUpdate, GroupFilter, InsightsStore, ProposalFilter,
    ProposalRow, PutOutcome, TraceFilter, TraceRow,
};
use worktrain_store::{EventStore, SessionFilter, StoreError};

use crate::detect::{DetectorId, Finding, Thresholds, detect};
use crate::import::{self, FileImport, ImportError, ImportOptions, Malformed, Skipped};
use crate::model::{Outcome, Tokens, Trace};
use crate::proposals::{self, EvidenceSession, Proposal, ProposalStatus, Support, proposal_id};

/// Traces written per transaction.
const BATCH: usize = 200;

/// Per-step cost and work of one trace (for reports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    /// Step id.
    pub step: String,
    /// Turns at the step.
    pub turns: u64,
    /// Tokens at the step.
    pub tokens: Tokens,
    /// Cost at the step, when known.
    pub cost_usd: Option<f64>,
}

/// The small summary stored with each trace (what reports read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceSummary {
    /// The file it was imported from.
    pub origin: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Tokens.
    pub tokens: Tokens,
    /// Cost.
    pub cost_usd: Option<f64>,
    /// Turns.
    pub turns: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Failed tool calls.
    pub tool_errors: u64,
    /// Lines changed, when known.
    pub changed_lines: u64,
    /// How the daemon run ended.
    pub run_end: Option<String>,
    /// Outcome reason.
    pub reason: Option<String>,
    /// Time from cancel request to the run's end.
    pub cancel_latency_ms: Option<i64>,
    /// Per step.
    pub steps: Vec<StepCost>,
}

impl TraceSummary {
    /// Summarise a trace.
    pub fn of(t: &Trace) -> Self {
        let mut steps: Vec<StepCost> = t
            .steps
            .iter()
            .map(|s| StepCost {
                step: s.step.clone(),
                ..StepCost::default()
            })
            .collect();
        for turn in &t.turns {
            if let Some(s) = turn.step.and_then(|i| steps.get_mut(i as usize)) {
                s.turns += 1;
                s.tokens.add(&turn.tokens);
                if let Some(c) = turn.cost_usd {
                    s.cost_usd = Some(s.cost_usd.unwrap_or(0.0) + c);
                }
            }
        }
        // Visits of the same step are one step for costing.
        let mut merged: Vec<StepCost> = Vec::new();
        for s in steps {
            match merged.iter_mut().find(|m| m.step == s.step) {
                Some(m) => {
                    m.turns += s.turns;
                    m.tokens.add(&s.tokens);
                    if let Some(c) = s.cost_usd {
                        m.cost_usd = Some(m.cost_usd.unwrap_or(0.0) + c);
                    }
                }
                None => merged.push(s),
            }
        }
        Self {
            origin: t.origin.clone(),
            model: t.model.clone(),
            tokens: t.tokens,
            cost_usd: t.cost_usd,
            turns: t.counts.turns,
            tool_calls: t.counts.tool_calls,
            tool_errors: t.counts.tool_errors,
            changed_lines: t.counts.changed_lines,
            run_end: t.run_end.clone(),
            reason: t.outcome_reason.clone(),
            cancel_latency_ms: t.cancel_latency_ms,
            steps: merged,
        }
    }
}

/// Failures of the insights use cases.
#[derive(Debug, thiserror::Error)]
pub enum InsightsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A path could not be expanded.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Stored data could not be read back.
    #[error("stored insights data is unreadable: {0}")]
    Corrupt(String),
}

/// What importing one file did.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// File.
    pub file: String,
    /// Format.
    pub format: import::Format,
    /// Bytes read.
    pub bytes: u64,
    /// Records read.
    pub records: u64,
    /// Trace ids.
    pub traces: Vec<String>,
    /// Malformed records (all counted).
    pub malformed_count: u64,
    /// The first malformed records.
    pub malformed: Vec<Malformed>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Files read.
    pub files: Vec<FileReport>,
    /// Files that could not be read at all.
    pub skipped: Vec<Skipped>,
    /// New traces.
    pub inserted: u64,
    /// Traces replaced by a newer version.
    pub updated: u64,
    /// Traces already stored unchanged.
    pub unchanged: u64,
    /// Malformed records across files.
    pub malformed: u64,
    /// Findings in the new and updated traces.
    pub findings: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl ImportReport {
    fn count(&mut self, o: PutOutcome) {
        match o {
            PutOutcome::Inserted => self.inserted += 1,
            PutOutcome::Updated => self.updated += 1,
            PutOutcome::Unchanged => self.unchanged += 1,
        }
    }
}

/// What refreshing proposals did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProposalsReport {
    /// New proposals.
    pub created: u64,
    /// Proposals whose evidence was updated.
    pub updated: u64,
    /// Recurring patterns whose workflow or step could not be found (no proposal).
    pub skipped: u64,
}

/// The store's clock, re-exported for the insights commands (see [`worktrain_store::now_ms`]).
pub use worktrain_store::now_ms;

/// Insights over one store.
pub struct Insights<'a> {
    store: &'a dyn InsightsStore,
    thresholds: Thresholds,
}

impl std::fmt::Debug for Insights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insights")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl<'a> Insights<'a> {
    /// Insights over `store` with these detector thresholds.
    pub fn new(store: &'a dyn InsightsStore, thresholds: Thresholds) -> Self {
        Self { store, thresholds }
    }

    /// The thresholds in use.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The digest stored with a trace: its normalised content and the thresholds, so
    /// changed thresholds re-analyse unchanged traces.
    fn digest(&self, trace_json: &str) -> String {
        let th = serde_json::to_string(&self.thresholds).unwrap_or_default();
        crate::normalize::digest(format!("{trace_json}\u{1f}{th}").as_bytes())
    }

    /// The finding rows of a trace.
    fn finding_rows(&self, trace: &Trace, findings: &[Finding]) -> Vec<FindingRow> {
        let outcome = trace.outcome.as_str().to_owned();
        findings
            .iter()
            .enumerate()
            .map(|(i, f)| FindingRow {
                trace_id: trace.id.clone(),
                ordinal: i as u32,
                detector: f.detector.as_str().to_owned(),
                severity: f.severity.as_str().to_owned(),
                fingerprint: f.fingerprint.clone(),
                workflow_id: trace.workflow.clone(),
                step_id: f.step.clone(),
                outcome: outcome.clone(),
                body: serde_json::to_string(f).unwrap_or_default(),
            })
            .collect()
    }

    /// Run the detectors and make the stored row of a trace. The stored JSON leaves out
    /// the file the trace came from (kept in the summary), so the same session imported
    /// from another path is the same content.
    pub fn row(&self, trace: &Trace, version: i64) -> (TraceRow, Vec<Finding>) {
        let findings = detect(trace, &self.thresholds);
        let summary = TraceSummary::of(trace);
        let trace_json = if trace.origin.is_some() {
            let mut t = trace.clone();
            t.origin = None;
            serde_json::to_string(&t).unwrap_or_default()
        } else {
            serde_json::to_string(trace).unwrap_or_default()
        };
        let mut steps: Vec<String> = trace.steps.iter().map(|s| s.step.clone()).collect();
        steps.sort();
        steps.dedup();
        let row = TraceRow {
            trace_id: trace.id.clone(),
            source: trace.source.as_str().to_owned(),
            native_id: trace.native_id.clone(),
            workflow_id: trace.workflow.clone(),
            trigger: trace.trigger.clone(),
            outcome: trace.outcome.as_str().to_owned(),
            started_at_ms: trace.started_at_ms,
            ended_at_ms: trace.ended_at_ms,
            version,
            digest: self.digest(&trace_json),
            summary: serde_json::to_string(&summary).unwrap_or_default(),
            trace: trace_json,
            steps,
            findings: self.finding_rows(trace, &findings),
            imported_at_ms: now_ms(),
        };
        (row, findings)
    }

    async fn flush(
        &self,
        batch: &mut Vec<(TraceRow, u64)>,
        report: &mut ImportReport,
    ) -> Result<(), InsightsError> {
        if batch.is_empty() {
            return Ok(());
        }
        let rows: Vec<TraceRow> = batch.iter().map(|(r, _)| r.clone()).collect();
        let outcomes = self.store.put_traces(&rows).await?;
        for ((_, findings), o) in batch.iter().zip(outcomes) {
            if o != PutOutcome::Unchanged {
                report.findings += findings;
            }
            report.count(o);
        }
        batch.clear();
        Ok(())
    }

    /// Import files and directories. A file that cannot be read is reported in `skipped`
    /// and the import goes on; malformed records are counted and listed.
    pub async fn import_paths(
        &self,
        paths: &[PathBuf],
        opts: &ImportOptions,
    ) -> Result<ImportReport, InsightsError> {
        let files = import::expand(paths)?;
        let mut report = ImportReport::default();
        let mut batch: Vec<(TraceRow, u64)> = Vec::new();
        for f in files {
            match import::import_file(&f, opts) {
                Ok(FileImport {
                    file,
                    format,
                    bytes,
                    records,
                    malformed_count,
                    malformed,
                    traces,
                }) => {
                    report.bytes += bytes;
                    report.malformed += malformed_count;
                    let mut ids = Vec::new();
                    for t in traces {
                        ids.push(t.id.clone());
                        let (row, findings) = self.row(&t, 0);
                        batch.push((row, findings.len() as u64));
                    }
                    report.files.push(FileReport {
                        file,
                        format,
                        bytes,
                        records,
                        traces: ids,
                        malformed_count,
                        malformed,
                    });
                    if batch.len() >= BATCH {
                        self.flush(&mut batch, &mut report).await?;
                    }
                }
                Err(e) => report.skipped.push(Skipped {
                    file: f.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        }
        self.flush(&mut batch, &mut report).await?;
        Ok(report)
    }

    /// Store one already-built trace (tests, importers driven by callers).
    pub async fn store_trace(
        &self,
        trace: &Trace,
        version: i64,
    ) -> Result<PutOutcome, InsightsError> {
        let (row, _) = self.row(trace, version);
        Ok(self.store.put_trace(&row).await?)
    }

    /// Bring worktrain's own sessions up to date: every session whose last event seq
    /// differs from the stored version is read (page by page) and re-analysed.
    pub async fn sync_sessions(
        &self,
        events: &dyn EventStore,
        max_turns: usize,
    ) -> Result<ImportReport, InsightsError> {
        self.sync_sessions_with(events, max_turns, &|_| None).await
    }

    /// [`Insights::sync_sessions`], counting changed lines with `changed_lines` (the
    /// caller reads git; the analysis does not).
    pub async fn sync_sessions_with(
        &self,
        events: &dyn EventStore,
        max_turns: usize,
        changed_lines: &(dyn Fn(&import::worktrain::Snapshots) -> Option<u64> + Sync),
    ) -> Result<ImportReport, InsightsError> {
        let mut report = ImportReport::default();
        let mut batch: Vec<(TraceRow, u64)> = Vec::new();
        let mut offset = 0u32;
        loop {
            let page = events
                .sessions(&SessionFilter {
                    limit: Some(500),
                    offset: Some(offset),
                    ..SessionFilter::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u32;
            for s in page {
                let id = format!("worktrain:{}", s.session_id);
                let version = i64::try_from(s.last_seq.0).unwrap_or(i64::MAX);
                if self
                    .store
                    .trace_version(&id)
                    .await?
                    .is_some_and(|(v, _)| v == version)
                {
                    report.unchanged += 1;
                    continue;
                }
                let mut b =
                    import::worktrain::SessionTrace::new(&s.session_id.to_string(), max_turns);
                let mut after = Seq(0);
                loop {
                    let evs = events.events(s.session_id, after, 1000).await?;
                    let Some(last) = evs.last() else { break };
                    after = last.seq;
                    for e in &evs {
                        b.event(e);
                    }
                    if evs.len() < 1000 {
                        break;
                    }
                }
                let lines = b.snapshots().and_then(|sn| changed_lines(&sn));
                let mut trace = b.finish(&s);
                if let Some(n) = lines {
                    trace.counts.changed_lines = n;
                }
                let (row, findings) = self.row(&trace, version);
                batch.push((row, findings.len() as u64));
                if batch.len() >= BATCH {
                    self.flush(&mut batch, &mut report).await?;
                }
            }
        }
        self.flush(&mut batch, &mut report).await?;
        Ok(report)
    }

    /// Re-run the detectors over every stored trace (after the thresholds changed): the
    /// traces are read, not rewritten; only findings whose digest changed are replaced.
    pub async fn reanalyze(&self) -> Result<ImportReport, InsightsError> {
        let mut report = ImportReport::default();
        let mut offset = 0u32;
        loop {
            let bodies = self
                .store
                .trace_bodies(&TraceFilter {
                    limit: Some(500),
                    offset: Some(offset),
                    ..TraceFilter::default()
                })
                .await?;
            if bodies.is_empty() {
                break;
            }
            offset += bodies.len() as u32;
            let mut updates = Vec::with_capacity(bodies.len());
            let mut counts = Vec::with_capacity(bodies.len());
            for b in bodies {
                let t: Trace = serde_json::from_str(&b.trace)
                    .map_err(|e| InsightsError::Corrupt(format!("trace {}: {e}", b.trace_id)))?;
                let findings = detect(&t, &self.thresholds);
                counts.push(findings.len() as u64);
                updates.push(FindingsUpdate {
                    digest: self.digest(&b.trace),
                    findings: self.finding_rows(&t, &findings),
                    trace_id: b.trace_id,
                });
            }
            for (changed, n) in self
                .store
                .replace_findings(&updates)
                .await?
                .into_iter()
                .zip(counts)
            {
                if changed {
                    report.updated += 1;
                    report.findings += n;
                } else {
                    report.unchanged += 1;
                }
            }
        }
        Ok(report)
    }

    /// A stored trace and its findings.
    pub async fn load(
        &self,
        trace_id: &str,
    ) -> Result<Option<(Trace, Vec<Finding>)>, InsightsError> {
        let Some(r) = self.store.trace(trace_id).await? else {
            return Ok(None);
        };
        let t: Trace = serde_json::from_str(&r.trace)
            .map_err(|e| InsightsError::Corrupt(format!("trace {trace_id}: {e}")))?;
        let f = r
            .findings
            .iter()
            .map(|f| serde_json::from_str::<Finding>(&f.body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InsightsError::Corrupt(format!("finding of {trace_id}: {e}")))?;
        Ok(Some((t, f)))
    }

    /// Turn recurring fingerprints into proposals (creating or refreshing them). `workflow`
    /// returns a workflow file's parsed content (JSON form) by id, to shape structural
    /// patches; `None` falls back to prompt guidance.
    pub async fn refresh_proposals(
        &self,
        min_sessions: u64,
        workflow: &dyn Fn(&str) -> Option<Value>,
    ) -> Result<ProposalsReport, InsightsError> {
        let mut report = ProposalsReport::default();
        let now = now_ms();
        let groups = self
            .store
            .finding_groups(&GroupFilter {
                min_sessions: min_sessions.max(1),
                limit: Some(100_000),
                ..GroupFilter::default()
            })
            .await?;
        for g in groups {
            let Some(detector) = DetectorId::parse(&g.detector) else {
                report.skipped += 1;
                continue;
            };
            let step = self.store.step_outcomes(&g.workflow_id, &g.step_id).await?;
            let support = Support {
                sessions: g.sessions,
                known: g.known,
                failing: g.failing,
                known_without: step.known.saturating_sub(g.known),
                failing_without: step.failing.saturating_sub(g.failing),
            };
            let rows = self
                .store
                .findings(&FindingFilter {
                    workflow_id: Some(g.workflow_id.clone()),
                    step_id: Some(g.step_id.clone()),
                    fingerprint: Some(g.fingerprint.clone()),
                    limit: Some(200),
                    ..FindingFilter::default()
                })
                .await?;
            let mut evidence: Vec<EvidenceSession> = Vec::new();
            let mut pattern = String::new();
            for r in &rows {
                let Ok(f) = serde_json::from_str::<Finding>(&r.body) else {
                    continue;
                };
                if pattern.is_empty() {
                    pattern = f.pattern.clone();
                }
                if evidence.iter().any(|e| e.trace_id == r.trace_id) {
                    continue;
                }
                if evidence.len() < 10 {
                    evidence.push(EvidenceSession {
                        trace_id: r.trace_id.clone(),
                        outcome: r.outcome.clone(),
                        turns: f
                            .evidence
                            .iter()
                            .take(5)
                            .map(|e| e.turn_id.clone())
                            .collect(),
                    });
                }
            }
            // Failing sessions first: they are the ones to read.
            evidence.sort_by_key(|e| {
                (
                    e.outcome == "SUCCESS" || e.outcome == "UNKNOWN",
                    e.trace_id.clone(),
                )
            });
            let wf = workflow(&g.workflow_id);
            let (patch, expected) =
                proposals::patch_for(detector, &pattern, &g.step_id, g.sessions, wf.as_ref());
            let p = Proposal {
                id: proposal_id(&g.workflow_id, &g.step_id, &g.fingerprint),
                workflow: g.workflow_id.clone(),
                step: g.step_id.clone(),
                detector,
                fingerprint: g.fingerprint.clone(),
                pattern,
                title: proposals::title_for(detector, &g.step_id, g.sessions),
                evidence,
                patch,
                expected_effect: format!(
                    "{expected} (failure rate with the pattern {:.0}%, without {:.0}%)",
                    support.rate_with() * 100.0,
                    support.rate_without() * 100.0
                ),
                confidence: support.confidence(),
                support,
            };
            let row = ProposalRow {
                proposal_id: p.id.clone(),
                workflow_id: p.workflow.clone(),
                step_id: p.step.clone(),
                fingerprint: p.fingerprint.clone(),
                detector: detector.as_str().to_owned(),
                status: ProposalStatus::Open.as_str().to_owned(),
                confidence: p.confidence,
                sessions: g.sessions,
                body: serde_json::to_string(&p).unwrap_or_default(),
                created_at_ms: now,
                updated_at_ms: now,
            };
            if self.store.upsert_proposal(&row).await? {
                report.created += 1;
            } else {
                report.updated += 1;
            }
        }
        Ok(report)
    }

    /// Proposals (parsed).
    pub async fn proposals(
        &self,
        filter: &ProposalFilter,
    ) -> Result<Vec<(Proposal, ProposalStatus)>, InsightsError> {
        self.store
            .proposals(filter)
            .await?
            .into_iter()
            .map(|r| parse_proposal(&r))
            .collect()
    }

    /// One proposal.
    pub async fn proposal(
        &self,
        id: &str,
    ) -> Result<Option<(Proposal, ProposalStatus)>, InsightsError> {
        self.store
            .proposal(id)
            .await?
            .map(|r| parse_proposal(&r))
            .transpose()
    }
}

fn parse_proposal(r: &ProposalRow) -> Result<(Proposal, ProposalStatus), InsightsError> {
    let p: Proposal = serde_json::from_str(&r.body)
        .map_err(|e| InsightsError::Corrupt(format!("proposal {}: {e}", r.proposal_id)))?;
    let s = ProposalStatus::parse(&r.status).ok_or_else(|| {
        InsightsError::Corrupt(format!("proposal {} status `{}`", r.proposal_id, r.status))
    })?;
    Ok((p, s))
}

/// Whether an outcome counts as failing.
pub fn failing(o: Outcome) -> bool {
    o.is_failure() == Some(true)
}

impl Insights<'_> {
    /// Every stored trace with the detectors that fired on it (for `eval`).
    pub async fn eval_runs(&self) -> Result<Vec<crate::eval::EvalRun>, InsightsError> {
        let mut out = Vec::new();
        let mut offset = 0u32;
        loop {
            let heads = self
                .store
                .traces(&TraceFilter {
                    limit: Some(10_000),
                    offset: Some(offset),
                    ..TraceFilter::default()
                })
                .await?;
            if heads.is_empty() {
                break;
            }
            offset += heads.len() as u32;
            for h in heads {
                let mut detectors = std::collections::BTreeSet::new();
                if h.findings > 0 {
                    for f in self
                        .store
                        .findings(&FindingFilter {
                            trace_id: Some(h.trace_id.clone()),
                            limit: Some(10_000),
                            ..FindingFilter::default()
                        })
                        .await?
                    {
                        if let Some(d) = DetectorId::parse(&f.detector) {
                            detectors.insert(d);
                        }
                    }
                }
                out.push(crate::eval::EvalRun {
                    trace_id: h.trace_id,
                    native_id: h.native_id,
                    detectors,
                });
            }
        }
        Ok(out)
    }

    /// The report over traces that started at or after `since_ms` (all when `None`), of
    /// one source (all when `None`).
    pub async fn report(
        &self,
        since_ms: Option<i64>,
        source: Option<&str>,
        trigger_decisions: Option<
            std::collections::BTreeMap<String, crate::report::TriggerDecisions>,
        >,
    ) -> Result<crate::report::Report, InsightsError> {
        let mut heads = Vec::new();
        let mut offset = 0u32;
        loop {
            let page = self
                .store
                .traces(&TraceFilter {
                    source: source.map(str::to_owned),
                    since_ms,
                    limit: Some(10_000),
                    offset: Some(offset),
                    ..TraceFilter::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u32;
            heads.extend(page);
        }
        let mut findings = Vec::new();
        for h in heads.iter().filter(|h| h.findings > 0) {
            for f in self
                .store
                .findings(&FindingFilter {
                    trace_id: Some(h.trace_id.clone()),
                    limit: Some(10_000),
                    ..FindingFilter::default()
                })
                .await?
            {
                let pattern = serde_json::from_str::<Finding>(&f.body)
                    .map(|x| x.pattern)
                    .unwrap_or_default();
                findings.push((f.trace_id, f.detector, pattern, f.outcome));
            }
        }
        Ok(crate::report::build(
            since_ms,
            &heads,
            &findings,
            trigger_decisions,
        ))
    }
}
