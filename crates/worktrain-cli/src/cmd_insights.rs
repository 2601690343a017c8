//! `worktrain insights …`, `worktrain report`, `worktrain proposals …`: trace analysis on
//! the local store (no daemon needed).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::EventBody;
use worktrain_core::ids::SessionId;
use worktrain_engine::{Catalog, Engine, store_error};
use worktrain_insights::config::InsightsConfig;
use worktrain_insights::delivery;
use worktrain_insights::detect::Finding;
use worktrain_insights::eval;
use worktrain_insights::explain::{self, Explanation};
use worktrain_insights::import::{Format, ImportOptions};
use worktrain_insights::patch;
use worktrain_insights::proposals::ProposalStatus;
use worktrain_insights::service::{ImportReport, Insights, InsightsError, now_ms};
use worktrain_store::InsightsStore;
use worktrain_store::insights::{FindingFilter, ProposalFilter};

use crate::Ctx;
use crate::cli::{
    ApplyArgs, DismissArgs, EvalArgs, ExplainArgs, FindingsArgs, InsightsCommand, InsightsOpts,
    ProposalListArgs, ProposalTarget, ProposalsCommand, ReportArgs, ShowArgs, TraceImportArgs,
};
use crate::output::Exit;

/// The file `insights.yaml` in the home directory.
pub(crate) const CONFIG_FILE: &str = "insights.yaml";

fn insights_error(e: InsightsError) -> ApiError {
    match e {
        InsightsError::Store(s) => store_error(s),
        InsightsError::Import(i) => ApiError::invalid_input(i.to_string(), "check the path"),
        InsightsError::Corrupt(m) => ApiError::new(
            ErrorCode::StoreFailure,
            m,
            Retry::Never,
            "run `worktrain insights analyze` to rebuild the analysis from the traces",
        ),
    }
}

fn load_config(ctx: &Ctx, opts: &InsightsOpts) -> Result<InsightsConfig, ApiError> {
    let (path, required) = match &opts.config {
        Some(p) => (p.clone(), true),
        None => (ctx.home.path(CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(InsightsConfig::default());
        }
        Err(e) => {
            return Err(ApiError::invalid_input(
                format!("{}: {e}", path.display()),
                "pass an existing insights.yaml",
            ));
        }
    };
    InsightsConfig::from_yaml(&text).map_err(|m| {
        ApiError::invalid_input(
            format!("{}: {m}", path.display()),
            "fix insights.yaml; every key is optional, unknown keys are rejected (see docs/insights.md)",
        )
    })
}

fn store_of(engine: &Engine) -> Result<&dyn InsightsStore, ApiError> {
    engine.store().insights().ok_or_else(|| {
        ApiError::new(
            ErrorCode::StoreFailure,
            "this store backend has no trace-analysis storage",
            Retry::Never,
            "use a store backend with trace-analysis storage (SQLite or PostgreSQL) for `worktrain insights`",
        )
    })
}

/// The parsed (JSON form) workflow with this id, from the catalog.
fn workflow_json(catalog: &Catalog, id: &str) -> Option<Value> {
    let (location, text) = workflow_text(catalog, id)?;
    parse_any(&location, &text)
}

fn parse_any(location: &str, text: &str) -> Option<Value> {
    if location.ends_with(".json") {
        serde_json::from_str(text).ok()
    } else {
        serde_norway::from_str::<serde_norway::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
    }
}

/// Where a workflow id resolves to: (location, text). Bundled workflows have a location
/// `bundled:<file>`.
fn workflow_text(catalog: &Catalog, id: &str) -> Option<(String, String)> {
    let entry = catalog
        .list()
        .into_iter()
        .rev()
        .find(|e| e.id == id && e.error.is_none())?;
    match entry.location.strip_prefix("bundled:") {
        Some(name) => worktrain_engine::catalog::BUNDLED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| (entry.location.clone(), (*t).to_owned())),
        None => std::fs::read_to_string(&entry.location)
            .ok()
            .map(|t| (entry.location.clone(), t)),
    }
}

/// A trace id from a session id or trace id.
fn trace_id(target: &str) -> String {
    let t = target.trim();
    if t.starts_with("ses_") {
        format!("worktrain:{t}")
    } else {
        t.to_owned()
    }
}

fn print_import(ctx: &Ctx, r: &ImportReport, proposals: Option<(u64, u64)>) {
    if ctx.out.json {
        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some((c, u)) = proposals {
            v["proposals"] = json!({"created": c, "updated": u});
        }
        ctx.out.json(&v);
        return;
    }
    for f in &r.files {
        say!(
            "{}: {}, {} records, {} trace(s){}",
            f.file,
            f.format.as_str(),
            f.records,
            f.traces.len(),
            if f.malformed_count > 0 {
                format!(", {} malformed", f.malformed_count)
            } else {
                String::new()
            }
        );
        for m in &f.malformed {
            say!("  malformed {m}");
        }
        if f.malformed_count > f.malformed.len() as u64 {
            say!(
                "  … and {} more malformed records",
                f.malformed_count - f.malformed.len() as u64
            );
        }
    }
    for s in &r.skipped {
        say!("skipped {}: {}", s.file, s.reason);
    }
    say!(
        "{} new, {} updated, {} unchanged; {} findings; {} malformed records; {:.1} MB read",
        r.inserted,
        r.updated,
        r.unchanged,
        r.findings,
        r.malformed,
        r.bytes as f64 / 1e6
    );
    if let Some((c, u)) = proposals {
        say!("proposals: {c} new, {u} updated (`worktrain proposals list`)");
    }
}

/// Lines a session changed: the diff between its first and last step snapshot, read
/// from the workspace repository (`None` when the repository or a commit is gone).
fn changed_lines(s: &worktrain_insights::import::worktrain::Snapshots) -> Option<u64> {
    let repo = git2::Repository::open(&s.workspace).ok()?;
    let to = repo.find_commit(git2::Oid::from_str(&s.to).ok()?).ok()?;
    let first = repo.find_commit(git2::Oid::from_str(&s.from).ok()?).ok()?;
    let from = if s.from_is_baseline {
        first
    } else {
        first.parent(0).ok()?
    };
    let diff = repo
        .diff_tree_to_tree(Some(&from.tree().ok()?), Some(&to.tree().ok()?), None)
        .ok()?;
    let st = diff.stats().ok()?;
    Some((st.insertions() + st.deletions()) as u64)
}

/// Sync worktrain sessions, then refresh proposals when anything changed.
async fn sync_and_refresh(
    ctx: &Ctx,
    engine: &Engine,
    ins: &Insights<'_>,
    cfg: &InsightsConfig,
    force: bool,
) -> Result<(ImportReport, Option<(u64, u64)>), ApiError> {
    let r = ins
        .sync_sessions_with(engine.store().as_ref(), cfg.max_turns, &changed_lines)
        .await
        .map_err(insights_error)?;
    let proposals = if force || r.inserted + r.updated > 0 {
        let catalog = ctx.catalog(None);
        let p = ins
            .refresh_proposals(cfg.min_sessions, &|id| workflow_json(&catalog, id))
            .await
            .map_err(insights_error)?;
        Some((p.created, p.updated))
    } else {
        None
    };
    Ok((r, proposals))
}

/// `worktrain insights …`.
pub(crate) async fn run(ctx: &Ctx, cmd: InsightsCommand) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let store = store_of(&engine)?;
    match cmd {
        InsightsCommand::Import(a) => import(ctx, store, a).await,
        InsightsCommand::Sync(o) => {
            let cfg = load_config(ctx, &o)?;
            let ins = Insights::new(store, cfg.thresholds.clone());
            let (r, p) = sync_and_refresh(ctx, &engine, &ins, &cfg, false).await?;
            print_import(ctx, &r, p);
            Ok(Exit::Ok)
        }
        InsightsCommand::Analyze(o) => {
            let cfg = load_config(ctx, &o)?;
            let ins = Insights::new(store, cfg.thresholds.clone());
            let mut r = ins
                .sync_sessions_with(engine.store().as_ref(), cfg.max_turns, &changed_lines)
                .await
                .map_err(insights_error)?;
            let again = ins.reanalyze().await.map_err(insights_error)?;
            r.updated += again.updated;
            r.findings += again.findings;
            let catalog = ctx.catalog(None);
            let p = ins
                .refresh_proposals(cfg.min_sessions, &|id| workflow_json(&catalog, id))
                .await
                .map_err(insights_error)?;
            print_import(ctx, &r, Some((p.created, p.updated)));
            Ok(Exit::Ok)
        }
        InsightsCommand::Eval(a) => eval_cmd(ctx, &engine, store, a).await,
        InsightsCommand::Explain(a) => explain_cmd(ctx, &engine, store, a).await,
        InsightsCommand::Show(a) => show(ctx, &engine, store, a).await,
        InsightsCommand::Findings(a) => findings(ctx, store, a).await,
        InsightsCommand::Thresholds(o) => {
            let cfg = load_config(ctx, &o)?;
            if ctx.out.json {
                ctx.out.json(&cfg);
            } else {
                say!(
                    "{}",
                    serde_norway::to_string(&cfg).unwrap_or_default().trim_end()
                );
            }
            Ok(Exit::Ok)
        }
    }
}

async fn import(
    ctx: &Ctx,
    store: &dyn InsightsStore,
    a: TraceImportArgs,
) -> Result<Exit, ApiError> {
    let cfg = load_config(ctx, &a.opts)?;
    let format = a
        .format
        .as_deref()
        .map(|f| {
            Format::parse(f).ok_or_else(|| {
                ApiError::invalid_input(
                    format!("unknown format `{f}`"),
                    "use claude_code, codex, codex_exec, mini_swe_agent or swe_agent",
                )
            })
        })
        .transpose()?;
    let opts = ImportOptions {
        workflow: a.workflow.clone(),
        step: a.step.clone(),
        format,
        max_turns: cfg.max_turns,
        ..ImportOptions::default()
    };
    let ins = Insights::new(store, cfg.thresholds.clone());
    let r = ins
        .import_paths(&a.paths, &opts)
        .await
        .map_err(insights_error)?;
    let catalog = ctx.catalog(None);
    let p = ins
        .refresh_proposals(cfg.min_sessions, &|id| workflow_json(&catalog, id))
        .await
        .map_err(insights_error)?;
    print_import(ctx, &r, Some((p.created, p.updated)));
    if r.files.is_empty() && !r.skipped.is_empty() {
        return Ok(Exit::Invalid);
    }
    Ok(Exit::Ok)
}

async fn eval_cmd(
    ctx: &Ctx,
    engine: &Engine,
    store: &dyn InsightsStore,
    a: EvalArgs,
) -> Result<Exit, ApiError> {
    let cfg = load_config(ctx, &a.opts)?;
    let file = a.labels.display().to_string();
    let text = std::fs::read_to_string(&a.labels).map_err(|e| {
        ApiError::invalid_input(format!("{file}: {e}"), "pass a CSV of id,resolved")
    })?;
    let labels = eval::parse_labels(&file, &text)
        .map_err(|e| ApiError::invalid_input(e.to_string(), "fix the labels file"))?;
    let ins = Insights::new(store, cfg.thresholds.clone());
    if !a.paths.is_empty() {
        let r = ins
            .import_paths(
                &a.paths,
                &ImportOptions {
                    max_turns: cfg.max_turns,
                    ..ImportOptions::default()
                },
            )
            .await
            .map_err(insights_error)?;
        if !ctx.out.json {
            say!(
                "imported: {} new, {} updated, {} unchanged, {} malformed records",
                r.inserted,
                r.updated,
                r.unchanged,
                r.malformed
            );
        }
    }
    let _ = ins
        .sync_sessions_with(engine.store().as_ref(), cfg.max_turns, &changed_lines)
        .await
        .map_err(insights_error)?;
    let runs = ins.eval_runs().await.map_err(insights_error)?;
    let report = eval::evaluate(&labels, &runs);
    if ctx.out.json {
        ctx.out.json(&report);
    } else {
        say!("{}", report.to_text().trim_end());
    }
    if report.runs == 0 {
        return Err(ApiError::invalid_input(
            "no labelled run matched an imported trace",
            "import the runs first (`worktrain insights import PATH`), or pass them after --labels",
        ));
    }
    Ok(Exit::Ok)
}

async fn load(
    engine: &Engine,
    ins: &Insights<'_>,
    cfg: &InsightsConfig,
    target: &str,
) -> Result<(worktrain_insights::model::Trace, Vec<Finding>), ApiError> {
    let id = trace_id(target);
    if id.starts_with("worktrain:") {
        ins.sync_sessions_with(engine.store().as_ref(), cfg.max_turns, &changed_lines)
            .await
            .map_err(insights_error)?;
    }
    ins.load(&id).await.map_err(insights_error)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::SessionNotFound,
            format!("no trace `{id}`"),
            Retry::AfterFix,
            "pass a session id (ses_…) or an imported trace id (`worktrain insights findings` lists them)",
        )
    })
}

async fn show(
    ctx: &Ctx,
    engine: &Engine,
    store: &dyn InsightsStore,
    a: ShowArgs,
) -> Result<Exit, ApiError> {
    let cfg = load_config(ctx, &a.opts)?;
    let ins = Insights::new(store, cfg.thresholds.clone());
    let (t, findings) = load(engine, &ins, &cfg, &a.target).await?;
    let notes = store.notes(&t.id).await.map_err(store_error)?;
    let notes: Vec<Value> = notes
        .iter()
        .map(|n| serde_json::from_str(&n.body).unwrap_or(Value::Null))
        .collect();
    if ctx.out.json {
        let mut v = json!({
            "trace": {
                "id": t.id, "source": t.source, "workflow": t.workflow, "outcome": t.outcome,
                "outcome_reason": t.outcome_reason, "model": t.model, "counts": t.counts,
                "tokens": t.tokens, "cost_usd": t.cost_usd, "truncated": t.truncated,
            },
            "findings": findings,
            "post_mortems": notes,
        });
        if a.turns {
            v["turns"] = serde_json::to_value(&t.turns).unwrap_or(Value::Null);
        }
        ctx.out.json(&v);
        return Ok(Exit::Ok);
    }
    say!(
        "{}  ·  {}{}  ·  {}{}",
        t.id,
        t.source.as_str(),
        t.workflow
            .as_deref()
            .map(|w| format!(" · workflow {w}"))
            .unwrap_or_default(),
        t.outcome.as_str(),
        t.outcome_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    say!(
        "{} turns, {} tool calls ({} failed), {} tokens{}",
        t.counts.turns,
        t.counts.tool_calls,
        t.counts.tool_errors,
        t.tokens.total(),
        t.cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default()
    );
    if findings.is_empty() {
        say!("\nNo findings.");
    }
    for f in &findings {
        say!(
            "\n[{}] {}{}: {}",
            f.severity.as_str(),
            f.detector.as_str(),
            f.step
                .as_deref()
                .map(|s| format!(" at step {s}"))
                .unwrap_or_default(),
            f.message
        );
        say!("  fingerprint {}  pattern `{}`", f.fingerprint, f.pattern);
        for e in &f.evidence {
            say!("  - turn {} ({}): {}", e.turn, e.turn_id, e.note);
        }
        say!("  suggestion: {}", f.suggestion);
    }
    for n in &notes {
        say!(
            "\npost-mortem by {}:\n{}",
            n["model"].as_str().unwrap_or("?"),
            n["text"].as_str().unwrap_or("")
        );
    }
    if a.turns {
        say!("");
        for turn in &t.turns {
            let calls: Vec<String> = turn
                .calls
                .iter()
                .map(|c| {
                    format!(
                        "{} {:?} {}",
                        c.action.as_str(),
                        c.status,
                        c.command.as_deref().unwrap_or(&c.name)
                    )
                })
                .collect();
            say!("turn {} ({}): {}", turn.index, turn.id, calls.join(" | "));
        }
    }
    Ok(Exit::Ok)
}

async fn findings(ctx: &Ctx, store: &dyn InsightsStore, a: FindingsArgs) -> Result<Exit, ApiError> {
    let rows = store
        .findings(&FindingFilter {
            trace_id: a.trace.as_deref().map(trace_id),
            workflow_id: a.workflow,
            step_id: a.step,
            detector: a.detector,
            fingerprint: None,
            limit: Some(a.limit),
            offset: None,
        })
        .await
        .map_err(store_error)?;
    let parsed: Vec<(String, Finding)> = rows
        .iter()
        .filter_map(|r| {
            serde_json::from_str::<Finding>(&r.body)
                .ok()
                .map(|f| (r.trace_id.clone(), f))
        })
        .collect();
    if ctx.out.json {
        let v: Vec<Value> = parsed
            .iter()
            .map(|(t, f)| {
                let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                v["trace_id"] = json!(t);
                v
            })
            .collect();
        ctx.out.json(&json!({ "findings": v }));
        return Ok(Exit::Ok);
    }
    if parsed.is_empty() {
        say!("No findings.");
    }
    for (t, f) in &parsed {
        say!(
            "{t}  {}  {}{}  {}",
            f.severity.as_str(),
            f.detector.as_str(),
            f.step
                .as_deref()
                .map(|s| format!(" @{s}"))
                .unwrap_or_default(),
            f.message
        );
    }
    Ok(Exit::Ok)
}

async fn explain_cmd(
    ctx: &Ctx,
    engine: &Engine,
    store: &dyn InsightsStore,
    a: ExplainArgs,
) -> Result<Exit, ApiError> {
    let cfg = load_config(ctx, &a.opts)?;
    let ins = Insights::new(store, cfg.thresholds.clone());
    let (t, findings) = load(engine, &ins, &cfg, &a.target).await?;
    let config = ctx.config()?;
    let name = a
        .agent
        .clone()
        .unwrap_or_else(|| config.daemon.default_agent.clone());
    let profile = config.agents.get(&name).ok_or_else(|| {
        ApiError::invalid_input(
            format!("no agent profile `{name}` in config.yaml"),
            "add an `agents:` profile of kind llm, or pass --agent NAME",
        )
    })?;
    let llm = match profile {
        worktrain_agent::AgentProfile::Llm(p) => &p.llm,
        worktrain_agent::AgentProfile::Command(_) => {
            return Err(ApiError::invalid_input(
                format!("agent profile `{name}` runs a command; explain needs an LLM profile"),
                "pass --agent with a profile of kind llm",
            ));
        }
    };
    let client = llm
        .build()
        .map_err(|e| ApiError::invalid_input(e.to_string(), "fix the agent profile"))?;
    let input = explain::prompt(&t, &findings);
    let resp = client
        .complete(&worktrain_agent::ChatRequest {
            system: explain::SYSTEM.to_owned(),
            messages: vec![worktrain_agent::Message::user(input.clone())],
            tools: Vec::new(),
        })
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the LLM call failed: {e}"),
                Retry::Same,
                "check the profile's key and base URL; the findings do not depend on this",
            )
        })?;
    let text = worktrain_insights::normalize::bounded(&resp.text(), explain::MAX_ANSWER_CHARS);
    let x = Explanation {
        model: client.model().to_owned(),
        text: text.clone(),
        input_chars: input.chars().count() as u64,
        findings: findings.len() as u32,
    };
    let body = serde_json::to_string(&x).unwrap_or_default();
    store
        .add_note(&t.id, "explanation", &body, now_ms())
        .await
        .map_err(store_error)?;
    if let Some(sid) = t.id.strip_prefix("worktrain:") {
        let sid: SessionId = sid
            .parse()
            .map_err(|e: worktrain_core::ids::InvalidSessionId| {
                ApiError::internal(e.to_string())
            })?;
        let ev = EventBody::PostMortemRecorded {
            model: x.model.clone(),
            text: x.text.clone(),
            findings: x.findings,
        };
        engine
            .transition(sid, move |_| Ok(vec![ev.clone()]))
            .await?;
    }
    if ctx.out.json {
        ctx.out.json(&json!({"trace_id": t.id, "explanation": x}));
    } else {
        say!(
            "{}\n\n(by {}; stored with the findings of {})",
            text,
            x.model,
            t.id
        );
    }
    Ok(Exit::Ok)
}

/// `worktrain report`.
pub(crate) async fn report(ctx: &Ctx, a: ReportArgs) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let store = store_of(&engine)?;
    let cfg = load_config(ctx, &InsightsOpts::default())?;
    let ins = Insights::new(store, cfg.thresholds.clone());
    sync_and_refresh(ctx, &engine, &ins, &cfg, false).await?;
    let source = match a.source.as_str() {
        "worktrain" => Some("worktrain"),
        "all" => None,
        other => {
            return Err(ApiError::invalid_input(
                format!("unknown source `{other}`"),
                "use --source worktrain or --source all",
            ));
        }
    };
    let since = a
        .since
        .map(|d| now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let decisions = trigger_decisions(ctx, since).await?;
    let report = ins
        .report(since, source, Some(decisions))
        .await
        .map_err(insights_error)?;
    match a.format.as_str() {
        "json" => ctx.out.json(&report),
        "md" if ctx.out.json => ctx.out.json(&report),
        "md" => say!("{}", report.to_markdown().trim_end()),
        other => {
            return Err(ApiError::invalid_input(
                format!("unknown format `{other}`"),
                "use --format md or --format json",
            ));
        }
    }
    Ok(Exit::Ok)
}

/// Trigger decisions since `since` (newest first, paged through the triggers' log).
async fn trigger_decisions(
    ctx: &Ctx,
    since: Option<i64>,
) -> Result<
    std::collections::BTreeMap<String, worktrain_insights::report::TriggerDecisions>,
    ApiError,
> {
    use worktrain_store::triggers::DecisionFilter;
    let config = ctx.config()?;
    let store = ctx.open_store(&config).await?;
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .decisions(&DecisionFilter {
                before,
                limit: Some(1000),
                ..DecisionFilter::default()
            })
            .await
            .map_err(store_error)?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let done = since.is_some_and(|s| last.created_at_ms < s) || page.len() < 1000;
        all.extend(page);
        if done {
            break;
        }
    }
    Ok(worktrain_insights::report::trigger_decisions(&all, since))
}

/// `worktrain proposals …`.
pub(crate) async fn proposals(ctx: &Ctx, cmd: ProposalsCommand) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let store = store_of(&engine)?;
    let cfg = load_config(ctx, &InsightsOpts::default())?;
    let ins = Insights::new(store, cfg.thresholds.clone());
    match cmd {
        ProposalsCommand::List(a) => list(ctx, &engine, &ins, a).await,
        ProposalsCommand::Show(ProposalTarget { id }) => {
            let (p, status) = ins
                .proposal(&id)
                .await
                .map_err(insights_error)?
                .ok_or_else(|| not_found(&id))?;
            let history = store.proposal_history(&id).await.map_err(store_error)?;
            let catalog = ctx.catalog(None);
            let diff = workflow_text(&catalog, &p.workflow).and_then(|(loc, text)| {
                patch::apply(&text, !loc.ends_with(".json"), &p.patch)
                    .ok()
                    .map(|r| (loc, patch::diff(&text, &r.text)))
            });
            if ctx.out.json {
                ctx.out.json(&json!({
                    "proposal": p, "status": status.as_str(), "history": history,
                    "file": diff.as_ref().map(|d| d.0.clone()),
                    "diff": diff.as_ref().map(|d| d.1.clone()),
                }));
                return Ok(Exit::Ok);
            }
            say!(
                "{}  [{}]  confidence {:.2}",
                p.id,
                status.as_str(),
                p.confidence
            );
            say!("{}", p.title);
            say!(
                "workflow {} · step {} · detector {}",
                p.workflow,
                p.step,
                p.detector.as_str()
            );
            say!("pattern (quoted from traces): `{}`", p.pattern);
            say!("expected effect: {}", p.expected_effect);
            say!("change: {}", p.patch.describe());
            say!("evidence:");
            for e in &p.evidence {
                say!("  {} ({}): {}", e.trace_id, e.outcome, e.turns.join(", "));
            }
            match diff {
                Some((loc, d)) => say!("\n--- {loc}\n{}", d.trim_end()),
                None => {
                    say!("\n(the workflow file could not be read or the patch no longer applies)")
                }
            }
            Ok(Exit::Ok)
        }
        ProposalsCommand::Apply(a) => apply(ctx, store, &ins, a).await,
        ProposalsCommand::Dismiss(DismissArgs { id, reason }) => {
            let change = store
                .set_proposal_status(
                    &id,
                    ProposalStatus::Dismissed.as_str(),
                    reason.as_deref(),
                    now_ms(),
                )
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(&id))?;
            if ctx.out.json {
                ctx.out.json(&change);
            } else {
                say!("{id} dismissed; it stays dismissed when the pattern recurs.");
            }
            Ok(Exit::Ok)
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        format!("no proposal `{id}`"),
        Retry::AfterFix,
        "`worktrain proposals list --status all` lists them",
    )
}

async fn list(
    ctx: &Ctx,
    engine: &Engine,
    ins: &Insights<'_>,
    a: ProposalListArgs,
) -> Result<Exit, ApiError> {
    let cfg = load_config(ctx, &a.opts)?;
    sync_and_refresh(ctx, engine, ins, &cfg, false).await?;
    let status = match a.status.as_str() {
        "all" => None,
        s => Some(
            ProposalStatus::parse(s)
                .ok_or_else(|| {
                    ApiError::invalid_input(
                        format!("unknown status `{s}`"),
                        "use open, applied, dismissed or all",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let rows = ins
        .proposals(&ProposalFilter {
            status,
            workflow_id: a.workflow,
            step_id: None,
            limit: Some(1000),
        })
        .await
        .map_err(insights_error)?;
    if ctx.out.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(p, s)| {
                json!({"id": p.id, "status": s.as_str(), "workflow": p.workflow, "step": p.step,
                       "detector": p.detector, "title": p.title, "confidence": p.confidence,
                       "sessions": p.support.sessions, "change": p.patch.describe()})
            })
            .collect();
        ctx.out.json(&json!({ "proposals": v }));
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        say!("No proposals.");
    }
    for (p, s) in &rows {
        say!(
            "{}  {:<9} {:.2}  {}/{}  {}",
            p.id,
            s.as_str(),
            p.confidence,
            p.workflow,
            p.step,
            p.title
        );
    }
    Ok(Exit::Ok)
}

/// The branch a proposal's pull request goes into (`--base`, else the branch checked out
/// where `file` lives) and `file`'s content on it.
fn base_version(file: &Path, base: Option<&str>) -> Result<(String, String), ApiError> {
    let Some(loc) = worktrain_git::change::locate(file) else {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "{} is not inside a git repository, so it cannot be proposed as a pull request",
                file.display()
            ),
            Retry::AfterFix,
            "pass --write to patch the file in place, or --file with the workflow's copy in a repository",
        ));
    };
    let base = match base {
        Some(b) => b.to_owned(),
        None => worktrain_git::current_branch(&loc.root).ok_or_else(|| {
            ApiError::invalid_input(
                format!("{} has no branch checked out", loc.root.display()),
                "name the branch the pull request goes into with --base",
            )
        })?,
    };
    let bytes = worktrain_git::change::read_file(&loc.root, &base, &loc.path)
        .map_err(|e| ApiError::invalid_input(e.to_string(), "name an existing branch with --base"))?
        .ok_or_else(|| {
            ApiError::invalid_input(
                format!("{} is not on branch `{base}`", loc.path),
                "commit the workflow to the base branch first, or pass --write",
            )
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ApiError::invalid_input(
            format!("{} on `{base}` is not UTF-8 text", loc.path),
            "a workflow file is YAML or JSON text",
        )
    })?;
    Ok((base, text))
}

/// Deliver a patched workflow as a pull request: commit it on the proposal's branch of
/// the repository holding the file, push, open (or find) the request, as the identity
/// of triggers.yml that speaks to that forge.
async fn propose(
    ctx: &Ctx,
    a: &ApplyArgs,
    base: String,
    req: &delivery::DeliveryRequest,
) -> Result<worktrain_delivery::change::ChangeReceipt, ApiError> {
    use worktrain_core::run::ForgeKind;
    use worktrain_delivery::change::{ChangeRequest, deliver_change, forge_of};

    let repo = match &a.repo {
        Some(r) => {
            let (forge, repo) = r.split_once(':').unwrap_or(("", r));
            let kind = match forge {
                "github" => ForgeKind::Github,
                "gitlab" => ForgeKind::Gitlab,
                _ => {
                    return Err(ApiError::invalid_input(
                        format!("--repo `{r}`: say which forge"),
                        "write github:owner/repo or gitlab:group/project",
                    ));
                }
            };
            if !repo.contains('/') {
                return Err(ApiError::invalid_input(
                    format!("--repo `{r}`: `{repo}` is not owner/repo"),
                    "write github:owner/repo or gitlab:group/project",
                ));
            }
            Some((kind, repo.to_owned()))
        }
        None => None,
    };
    let Some((kind, _)) = repo.clone().or(forge_of(&req.file, &a.remote).await) else {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "cannot tell which forge repository the pull request for {} goes to",
                req.file.display()
            ),
            Retry::AfterFix,
            "keep the workflow in a repository whose remote is on GitHub/GitLab, name it with --repo github:owner/repo, or pass --write to patch the local file",
        ));
    };
    let config = ctx.config()?;
    let index = crate::cmd_trigger::load(&crate::cmd_trigger::triggers_path(ctx, &config))?;
    let (name, def) = index
        .identity_for(a.identity.as_deref(), kind)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidInput,
                e,
                Retry::AfterFix,
                "add an identity for the forge to triggers.yml (docs/triggers.md), or pass --write",
            )
        })?;
    let client = worktrain_triggers::identity::connect(def).map_err(|e| {
        ApiError::invalid_input(
            format!("identity `{name}`: {e}"),
            "fix the identity in triggers.yml",
        )
    })?;
    let access = worktrain_delivery::ForgeAccess {
        client,
        push_token: def.push_token().map(str::to_owned),
    };
    let change = ChangeRequest {
        file: req.file.clone(),
        content: req.patched.clone(),
        branch: req.branch.clone(),
        base,
        remote: a.remote.clone(),
        repo,
        message: format!(
            "{}\n\nWorktrain-Proposal: {}\nWorktrain-Workflow: {}\n",
            req.title, req.proposal_id, req.workflow_id
        ),
        title: req.title.clone(),
        body: req.body.clone(),
        draft: a.draft,
        labels: a.labels.clone(),
    };
    deliver_change(&change, &access).await.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("delivering the proposal failed: {}", e.message),
            if e.retryable {
                Retry::Same
            } else {
                Retry::AfterFix
            },
            e.hint
                .unwrap_or_else(|| "fix the cause, then run the same command again".into()),
        )
    })
}

async fn apply(
    ctx: &Ctx,
    store: &dyn InsightsStore,
    ins: &Insights<'_>,
    a: ApplyArgs,
) -> Result<Exit, ApiError> {
    let (p, status) = ins
        .proposal(&a.id)
        .await
        .map_err(insights_error)?
        .ok_or_else(|| not_found(&a.id))?;
    if status == ProposalStatus::Applied {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("{} is already applied", p.id),
            Retry::Never,
            "`worktrain proposals show` says where",
        ));
    }
    let catalog = ctx.catalog(None);
    // The file to patch and where the result goes.
    let (source_location, text, target): (String, String, PathBuf) = match &a.file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                ApiError::invalid_input(format!("{}: {e}", f.display()), "pass the workflow file")
            })?;
            (f.display().to_string(), text, f.clone())
        }
        None => {
            let (loc, text) = workflow_text(&catalog, &p.workflow).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::WorkflowNotFound,
                    format!("workflow `{}` is not in the catalog", p.workflow),
                    Retry::AfterFix,
                    "pass --file with the workflow file to patch",
                )
            })?;
            let target = match loc.strip_prefix("bundled:") {
                Some(name) => ctx
                    .home
                    .path(worktrain_config::WORKFLOWS_DIR)
                    .join(Path::new(name).file_name().unwrap_or_default()),
                None => PathBuf::from(&loc),
            };
            (loc, text, target)
        }
    };
    // A pull request changes the file as it is on the base branch, not the operator's
    // uncommitted copy of it.
    let (text, base) = if a.write {
        (text, None)
    } else {
        let (base, at_base) = base_version(&target, a.base.as_deref())?;
        (at_base, Some(base))
    };
    let yaml = !source_location.ends_with(".json");
    let patched = patch::apply(&text, yaml, &p.patch).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("the proposal cannot be applied to {source_location}: {e}"),
            Retry::Never,
            "the workflow changed since the proposal; dismiss it or edit the file by hand",
        )
    })?;
    let lint = worktrain_workflow_tools::lint::lint_source(
        &target.display().to_string(),
        &patched.text,
        &catalog,
    );
    let (errors, warnings) = worktrain_workflow_tools::lint::counts(&lint);
    if errors > 0 {
        let msgs: Vec<String> = lint.iter().map(|l| l.to_string()).collect();
        return Err(ApiError::new(
            ErrorCode::WorkflowInvalid,
            format!(
                "the patched workflow does not pass lint: {}",
                msgs.join("; ")
            ),
            Retry::Never,
            "nothing was written; edit the workflow by hand",
        ));
    }
    if let Some(base) = base {
        let req = delivery::request(&p, target.clone(), patched.text.clone());
        let receipt = propose(ctx, &a, base, &req).await?;
        let change = store
            .set_proposal_status(
                &p.id,
                ProposalStatus::Applied.as_str(),
                Some(&format!(
                    "pull request {} (branch {})",
                    receipt.url, receipt.branch
                )),
                now_ms(),
            )
            .await
            .map_err(store_error)?;
        if ctx.out.json {
            ctx.out.json(&json!({
                "proposal": p.id, "file": target, "pull_request": receipt,
                "lint_warnings": warnings, "change": change,
            }));
        } else {
            say!(
                "{} applied: {} {} on branch {} ({}); lint passed with {warnings} warning(s).",
                p.id,
                if receipt.reused {
                    "found the open pull request"
                } else {
                    "opened"
                },
                receipt.url,
                receipt.branch,
                &receipt.commit[..receipt.commit.len().min(12)],
            );
        }
        return Ok(Exit::Ok);
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            ApiError::invalid_input(format!("{}: {e}", dir.display()), "check permissions")
        })?;
    }
    // Write next to the target and rename: a crash never leaves half a workflow.
    let tmp = target.with_extension("worktrain-tmp");
    std::fs::write(&tmp, &patched.text)
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| {
            ApiError::invalid_input(format!("{}: {e}", target.display()), "check permissions")
        })?;
    let change = store
        .set_proposal_status(
            &p.id,
            ProposalStatus::Applied.as_str(),
            Some(&format!("written to {}", target.display())),
            now_ms(),
        )
        .await
        .map_err(store_error)?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "proposal": p.id, "file": target, "preserved_formatting": patched.preserved_formatting,
            "lint_warnings": warnings, "change": change,
        }));
    } else {
        say!(
            "{} applied: {} written ({}); lint passed with {warnings} warning(s).",
            p.id,
            target.display(),
            p.patch.describe()
        );
        if !patched.preserved_formatting {
            say!("note: the file was re-serialised; its comments and layout were not kept.");
        }
        if source_location.starts_with("bundled:") {
            say!("note: this user copy now takes precedence over the bundled workflow.");
        }
    }
    Ok(Exit::Ok)
}
