//! `worktrain workflow list|show|validate|schema|graph|lint|simulate|import`.

use serde_json::json;
use worktrain_core::compile::ConfirmationRule;
use worktrain_core::error::ApiError;

use crate::Ctx;
use crate::cli::WorkflowCommand;
use crate::output::Exit;

pub(crate) fn run(ctx: &Ctx, cmd: WorkflowCommand) -> Result<Exit, ApiError> {
    match cmd {
        WorkflowCommand::List(args) => list(ctx, args.workspace.as_deref()),
        WorkflowCommand::Show(args) => show(ctx, &args.workflow, args.workspace.as_deref()),
        WorkflowCommand::Validate(args) => {
            validate(ctx, &args.workflows, args.workspace.as_deref())
        }
        WorkflowCommand::Schema => {
            let schema = worktrain_core::workflow::json_schema();
            say!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(Exit::Ok)
        }
        WorkflowCommand::Graph(args) => graph(ctx, &args),
        WorkflowCommand::Lint(args) => lint(ctx, &args),
        WorkflowCommand::Simulate(args) => simulate(ctx, &args),
        WorkflowCommand::Import(args) => import(ctx, &args),
    }
}

fn list(ctx: &Ctx, workspace: Option<&std::path::Path>) -> Result<Exit, ApiError> {
    let entries = ctx.catalog(workspace).list();
    if ctx.out.json {
        ctx.out.json(&json!({ "workflows": entries }));
        return Ok(Exit::Ok);
    }
    say!(
        "{:<24} {:<32} {:<10} {:<8} NOTE",
        "ID",
        "NAME",
        "VERSION",
        "SOURCE"
    );
    for e in &entries {
        let note = match (&e.error, &e.shadowed_by) {
            (Some(err), _) => format!("FAILED TO LOAD: {err}"),
            (None, Some(by)) => format!("shadowed by {by}"),
            (None, None) => e.location.clone(),
        };
        say!(
            "{:<24} {:<32} {:<10} {:<8} {}",
            e.id,
            e.name.as_deref().unwrap_or("-"),
            e.version.as_deref().unwrap_or("-"),
            e.source.as_str(),
            note
        );
    }
    let broken = entries.iter().filter(|e| e.error.is_some()).count();
    if broken > 0 {
        eprintln!(
            "{broken} workflow file(s) failed to load; `worktrain workflow validate <file>` shows why."
        );
    }
    Ok(Exit::Ok)
}

fn show(ctx: &Ctx, spec: &str, workspace: Option<&std::path::Path>) -> Result<Exit, ApiError> {
    let resolved = ctx.catalog(workspace).resolve(spec)?;
    let wf = &resolved.pinned.workflow;
    if ctx.out.json {
        ctx.out.json(&json!({
            "hash": resolved.pinned.hash,
            "source": resolved.source,
            "workflow": wf.as_ref(),
        }));
        return Ok(Exit::Ok);
    }
    say!("{} — {} (v{})", wf.id, wf.name, wf.version);
    say!("source: {}", resolved.source);
    say!("hash:   {}", resolved.pinned.hash);
    say!();
    say!("{}", wf.description);
    if !wf.guidance.is_empty() {
        say!();
        say!("Guidance:");
        for g in &wf.guidance {
            say!("  - {g}");
        }
    }
    say!();
    say!("Steps:");
    for (i, s) in wf.steps.iter().enumerate() {
        let mut flags = Vec::new();
        if let Some(c) = &s.run_condition {
            flags.push(format!("runs if {c}"));
        }
        match &s.confirmation {
            Some(ConfirmationRule { kind, when: None }) => {
                flags.push(format!("gate: {}", kind.as_str()))
            }
            Some(ConfirmationRule {
                kind,
                when: Some(c),
            }) => flags.push(format!("gate: {} if {c}", kind.as_str())),
            None => {}
        }
        if let Some(c) = &s.output_contract {
            flags.push(format!(
                "produces {}{}",
                c.contract,
                if c.required { "" } else { " (optional)" }
            ));
        }
        if s.notes_optional {
            flags.push("notes optional".into());
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", flags.join("; "))
        };
        say!("  {:>2}. {:<20} {}{flags}", i + 1, s.id, s.title);
    }
    Ok(Exit::Ok)
}

fn validate(
    ctx: &Ctx,
    specs: &[String],
    workspace: Option<&std::path::Path>,
) -> Result<Exit, ApiError> {
    let catalog = ctx.catalog(workspace);
    let mut results = Vec::new();
    let mut failed = 0;
    for spec in specs {
        match catalog.resolve(spec) {
            Ok(r) => results.push(json!({
                "workflow": spec,
                "valid": true,
                "id": r.pinned.workflow.id,
                "steps": r.pinned.workflow.steps.len(),
                "hash": r.pinned.hash,
                "source": r.source,
            })),
            Err(e) => {
                failed += 1;
                results.push(json!({"workflow": spec, "valid": false, "error": e}));
            }
        }
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({ "results": results, "valid": failed == 0 }));
    } else {
        for r in &results {
            if r["valid"] == true {
                say!(
                    "ok    {} ({}, {} steps, sha256 {})",
                    r["workflow"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default(),
                    r["steps"],
                    &r["hash"].as_str().unwrap_or_default()
                        [..12.min(r["hash"].as_str().unwrap_or_default().len())]
                );
            } else {
                say!(
                    "FAIL  {}: {}",
                    r["workflow"].as_str().unwrap_or_default(),
                    r["error"]["message"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(if failed == 0 { Exit::Ok } else { Exit::Invalid })
}

// ---------------------------------------------------------------------------------------
// graph, lint, simulate (docs/cli.md, "Tooling: graph, lint, simulate")

fn graph(ctx: &Ctx, args: &crate::cli::GraphArgs) -> Result<Exit, ApiError> {
    use worktrain_workflow_tools::graph::{GraphFormat, render};
    let format: GraphFormat = args
        .format
        .parse()
        .map_err(|e: String| ApiError::invalid_input(e, "use --format text, dot or svg"))?;
    let resolved = ctx
        .catalog(args.workspace.as_deref())
        .resolve(&args.workflow)?;
    let wf = &resolved.pinned.workflow;
    let rendered = render(wf, format);
    if let Some(path) = &args.output {
        std::fs::write(path, &rendered).map_err(|e| {
            ApiError::new(
                worktrain_core::ErrorCode::StoreFailure,
                format!("cannot write {}: {e}", path.display()),
                worktrain_core::Retry::AfterFix,
                "check that the directory exists and is writable",
            )
        })?;
        if ctx.out.json {
            ctx.out.json(&json!({
                "workflow": wf.id,
                "format": format.as_str(),
                "output": path,
                "bytes": rendered.len(),
            }));
        } else {
            say!(
                "wrote {} ({}, {} bytes)",
                path.display(),
                format.as_str(),
                rendered.len()
            );
        }
        return Ok(Exit::Ok);
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"workflow": wf.id, "format": format.as_str(), "graph": rendered}));
    } else {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(rendered.as_bytes());
    }
    Ok(Exit::Ok)
}

/// The text and location of a workflow argument, for linting (which must see files that
/// fail to load, so it cannot go through `Catalog::resolve`).
fn lint_target(
    catalog: &worktrain_engine::Catalog,
    spec: &str,
) -> Result<(String, String), ApiError> {
    use worktrain_core::ErrorCode;
    use worktrain_core::Retry;
    if worktrain_engine::catalog::is_workflow_path(spec) {
        return worktrain_engine::catalog::read_workflow_file(spec);
    }
    let entries = catalog.list();
    let entry = entries
        .iter()
        .rev()
        .find(|e| e.id == spec && e.error.is_none())
        .or_else(|| entries.iter().rev().find(|e| e.id == spec))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::WorkflowNotFound,
                format!("no workflow with id `{spec}`"),
                Retry::AfterFix,
                "pass a workflow id from `worktrain workflow list`, or a path to a workflow file",
            )
        })?;
    let text = match entry.location.strip_prefix("bundled:") {
        Some(name) => worktrain_engine::catalog::BUNDLED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| (*t).to_owned())
            .ok_or_else(|| ApiError::internal(format!("bundled workflow {name} missing")))?,
        None => worktrain_engine::catalog::read_source(std::path::Path::new(&entry.location))
            .map_err(worktrain_engine::catalog::invalid)?,
    };
    Ok((entry.location.clone(), text))
}

/// Lint one workflow argument; children of parallel steps must resolve in the catalog.
fn lint_one(
    catalog: &worktrain_engine::Catalog,
    spec: &str,
) -> (
    Option<String>,
    Vec<worktrain_workflow_tools::lint::LintFinding>,
) {
    use worktrain_core::compile::compile_with;
    use worktrain_core::load::parse_workflow;
    use worktrain_workflow_tools::lint::{LintFinding, Severity, codes, invalid, lint};
    let (location, text) = match lint_target(catalog, spec) {
        Ok(t) => t,
        Err(e) => {
            return (
                None,
                vec![LintFinding {
                    severity: Severity::Error,
                    code: codes::INVALID_WORKFLOW,
                    step: None,
                    path: None,
                    rule: None,
                    message: e.message,
                    hint: e.hint,
                }],
            );
        }
    };
    let compiled = parse_workflow(&location, &text)
        .and_then(|def| compile_with(&def, &location, catalog))
        .map_err(|e| {
            if e.file.is_some() {
                e
            } else {
                e.in_file(location.clone())
            }
        });
    let pinned = match compiled {
        Ok(p) => p,
        Err(e) => return (Some(location), vec![invalid(&e)]),
    };
    let mut findings = lint(&pinned.workflow);
    let known: Vec<String> = catalog
        .list()
        .into_iter()
        .filter(|e| e.error.is_none())
        .map(|e| e.id)
        .collect();
    for s in &pinned.workflow.steps {
        for c in s.delegation.iter().flat_map(|d| &d.children) {
            if !known.iter().any(|k| k == c.workflow.as_str()) && c.workflow != pinned.workflow.id {
                findings.push(LintFinding {
                    severity: Severity::Warning,
                    code: codes::UNKNOWN_CHILD_WORKFLOW,
                    step: Some(s.id.to_string()),
                    path: Some("parallel.children".into()),
                    rule: None,
                    message: format!(
                        "step `{}` delegates to workflow `{}`, which no workflow source here provides",
                        s.id, c.workflow
                    ),
                    hint: format!("known workflows: {}", known.join(", ")),
                });
            }
        }
    }
    (Some(location), findings)
}

fn lint(ctx: &Ctx, args: &crate::cli::LintArgs) -> Result<Exit, ApiError> {
    use worktrain_workflow_tools::lint::counts;
    let catalog = ctx.catalog(args.workspace.as_deref());
    let mut results = Vec::new();
    let (mut errors, mut warnings) = (0, 0);
    for spec in &args.workflows {
        let (location, findings) = lint_one(&catalog, spec);
        let (e, w) = counts(&findings);
        errors += e;
        warnings += w;
        results.push((spec, location, findings, e, w));
    }
    if ctx.out.json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .map(|(spec, location, findings, e, w)| {
                json!({"workflow": spec, "location": location, "findings": findings, "errors": e, "warnings": w})
            })
            .collect();
        ctx.out.json(&json!({
            "results": list,
            "errors": errors,
            "warnings": warnings,
            "clean": errors == 0 && warnings == 0,
        }));
    } else {
        for (spec, _, findings, e, w) in &results {
            if findings.is_empty() {
                say!("ok    {spec}");
                continue;
            }
            say!("{spec}: {e} error(s), {w} warning(s)");
            for f in findings {
                say!("  {f}");
                if !f.hint.is_empty() {
                    say!("      hint: {}", f.hint);
                }
            }
        }
        if results.len() > 1 || errors + warnings > 0 {
            say!(
                "{errors} error(s), {warnings} warning(s) in {} workflow(s)",
                results.len()
            );
        }
    }
    Ok(if errors > 0 || (args.deny_warnings && warnings > 0) {
        Exit::Invalid
    } else {
        Exit::Ok
    })
}

fn simulate(ctx: &Ctx, args: &crate::cli::SimulateArgs) -> Result<Exit, ApiError> {
    use worktrain_core::context::parse_assignment;
    use worktrain_core::cursor::LoopDecision;
    use worktrain_workflow_tools::simulate::{Script, SimError, TraceItem, simulate};
    let resolved = ctx
        .catalog(args.workspace.as_deref())
        .resolve(&args.workflow)?;
    let wf = &resolved.pinned.workflow;
    let step_ids: Vec<String> = wf.steps.iter().map(|s| s.id.to_string()).collect();
    let known_step = |id: &str, flag: &str| -> Result<String, ApiError> {
        if step_ids.iter().any(|s| s == id) {
            Ok(id.to_owned())
        } else {
            Err(ApiError::invalid_input(
                format!("{flag}: `{id}` is not a step of {}", wf.id),
                format!("steps: {}", step_ids.join(", ")),
            ))
        }
    };
    let mut script = Script {
        context: crate::context_from(&args.context)?,
        max_nodes: args.max_nodes,
        ..Script::default()
    };
    for a in &args.at {
        let (step, assignment) = a.split_once(':').ok_or_else(|| {
            ApiError::invalid_input(
                format!("--at `{a}` is not STEP:KEY=VALUE"),
                "e.g. --at check:tests_pass=true",
            )
        })?;
        let step = known_step(step.trim(), "--at")?;
        let (k, v) = parse_assignment(assignment)?;
        script.at.entry(step).or_default().insert(k, v);
    }
    for d in &args.decide {
        let (lp, list) = d.split_once('=').ok_or_else(|| {
            ApiError::invalid_input(
                format!("--decide `{d}` is not LOOP=continue,stop,…"),
                "e.g. --decide verify=continue,stop",
            )
        })?;
        let lp = lp.trim();
        if !wf.loops.iter().any(|l| l.id.as_str() == lp) {
            let loops: Vec<String> = wf.loops.iter().map(|l| l.id.to_string()).collect();
            return Err(ApiError::invalid_input(
                format!("--decide: `{lp}` is not a loop of {}", wf.id),
                format!(
                    "loops: {}",
                    if loops.is_empty() {
                        "none".to_owned()
                    } else {
                        loops.join(", ")
                    }
                ),
            ));
        }
        let mut seq = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            seq.push(match word {
                "continue" => LoopDecision::Continue,
                "stop" => LoopDecision::Stop,
                other => {
                    return Err(ApiError::invalid_input(
                        format!("--decide {lp}: `{other}` is not a decision"),
                        "decisions are `continue` or `stop`, comma-separated",
                    ));
                }
            });
        }
        script.decisions.insert(lp.to_owned(), seq);
    }
    for a in &args.artifact {
        let (step, value) = a.split_once('=').ok_or_else(|| {
            ApiError::invalid_input(
                format!("--artifact `{a}` is not STEP=FILE or STEP=JSON"),
                "e.g. --artifact review=verdict.json or --artifact review='{\"kind\": \"review_verdict\", …}'",
            )
        })?;
        let step = known_step(step.trim(), "--artifact")?;
        let inline = value.trim_start().starts_with('{');
        let text = if inline {
            value.to_owned()
        } else {
            std::fs::read_to_string(value).map_err(|e| {
                ApiError::invalid_input(
                    format!("--artifact {step}: cannot read {value}: {e}"),
                    "pass a file holding one JSON object, or the object inline",
                )
            })?
        };
        let artifact: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            ApiError::invalid_input(
                format!("--artifact {step}: not JSON: {e}"),
                "an artifact is one JSON object with a \"kind\", e.g. {\"kind\": \"loop_control\", \"decision\": \"stop\"}",
            )
        })?;
        if !artifact.is_object() {
            return Err(ApiError::invalid_input(
                format!("--artifact {step}: the artifact must be one JSON object"),
                "wrap nothing in arrays: one object per --artifact",
            ));
        }
        script.artifacts.insert(step, artifact);
    }
    let trace = match simulate(&resolved.pinned, &script) {
        Ok(t) => t,
        Err(SimError::Blocked { step, reasons }) => {
            let mut fixes = Vec::new();
            if let Some(s) = wf.steps.iter().find(|s| s.id.as_str() == step) {
                for key in &s.context_outputs {
                    fixes.push(format!("--at {step}:{key}=VALUE"));
                }
                if let Some(c) = &s.output_contract {
                    fixes.push(format!("--artifact {step}='{}'", c.contract.example()));
                }
            }
            let hint = if fixes.is_empty() {
                format!(
                    "script the output of `{step}` with --at {step}:KEY=VALUE or --artifact {step}=FILE"
                )
            } else {
                format!("add {}", fixes.join(" and/or "))
            };
            return Err(ApiError::invalid_input(
                format!("the simulation stopped: step `{step}` was blocked: {reasons}"),
                hint,
            ));
        }
        Err(SimError::Limit(n)) => {
            return Err(ApiError::new(
                worktrain_core::ErrorCode::Internal,
                format!("the simulation stopped after {n} step entries without completing"),
                worktrain_core::Retry::AfterFix,
                "raise --max-nodes, or script the loops to end (--decide LOOP=stop, --context/--at values); without --max-nodes the limit is the compiler's bound, so reaching it is a bug worth reporting",
            ));
        }
        Err(e @ (SimError::Capped { .. } | SimError::TimeBudget { .. })) => {
            return Err(ApiError::invalid_input(
                format!("the simulation was cut short: {e}"),
                "script the loops to end (--decide LOOP=stop, --context/--at values), or pass --max-nodes N to simulate further",
            ));
        }
        Err(SimError::Engine(e)) => return Err(e),
    };
    if ctx.out.json {
        ctx.out.json(&trace);
        return Ok(Exit::Ok);
    }
    say!("{} — simulated path", wf.id);
    let mut stack: Vec<String> = Vec::new();
    for item in &trace.path {
        let ind = |depth: usize| "  ".repeat(depth + 1);
        match item {
            TraceItem::Enter { step, gate, .. } => {
                let title = wf
                    .steps
                    .iter()
                    .find(|s| s.id.as_str() == step)
                    .map(|s| s.title.as_str())
                    .unwrap_or_default();
                let gate = if *gate {
                    "  [gate: asks for confirmation]"
                } else {
                    ""
                };
                say!("{}→ {step} — {title}{gate}", ind(stack.len()));
            }
            TraceItem::Skip { step, condition } => {
                say!("{}· skip {step} (not: {condition})", ind(stack.len()));
            }
            TraceItem::BlockSkip { block, condition } => {
                say!(
                    "{}· skip block {block} (not: {condition})",
                    ind(stack.len())
                );
            }
            TraceItem::Pass { loop_, pass } => {
                if stack.last() != Some(loop_) {
                    stack.push(loop_.clone());
                }
                say!("{}↻ loop {loop_}: pass {pass}", ind(stack.len() - 1));
            }
            TraceItem::Exit {
                loop_,
                passes,
                reason,
            } => {
                if let Some(i) = stack.iter().rposition(|l| l == loop_) {
                    stack.truncate(i);
                }
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                say!(
                    "{}⤴ loop {loop_}: exit after {passes} pass(es) ({reason})",
                    ind(stack.len())
                );
            }
            TraceItem::Jump { from, to, count } => {
                say!("{}↩ jump {from} → {to} (#{count})", ind(stack.len()));
            }
            TraceItem::JumpExhausted { step } => {
                say!(
                    "{}· jump from {step} exhausted: falling through",
                    ind(stack.len())
                );
            }
            TraceItem::Complete => {
                say!(
                    "complete: {} step(s) entered, {} event(s)",
                    trace.steps.len(),
                    trace.events
                );
            }
        }
    }
    Ok(if trace.completed {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

// ---------------------------------------------------------------------------------------
// import (docs/workflows.md, "Coming from WorkRail")

fn import(ctx: &Ctx, args: &crate::cli::ImportArgs) -> Result<Exit, ApiError> {
    use worktrain_workrail::{Status, Written, read_inputs, write};
    let read = |p: &std::path::Path| {
        read_inputs(p).map_err(|e| {
            ApiError::new(
                worktrain_core::ErrorCode::WorkflowNotFound,
                e.to_string(),
                worktrain_core::Retry::AfterFix,
                "pass WorkRail workflow files (.json) or directories holding them",
            )
        })
    };
    let mut inputs = Vec::new();
    for p in &args.paths {
        inputs.extend(read(p)?);
    }
    let mut routines = Vec::new();
    for p in &args.routines {
        routines.extend(read(p)?);
    }
    // A single workflow file finds the routines beside it, as WorkRail's own layout keeps them.
    for p in &args.paths {
        if p.is_file()
            && let Some(dir) = p
                .parent()
                .map(|d| d.join("routines"))
                .filter(|d| d.is_dir())
            && let Ok(found) = read_inputs(&dir)
        {
            routines.extend(found);
        }
    }
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let cwd = std::env::current_dir().map_err(|e| {
                ApiError::internal(format!("cannot read the current directory: {e}"))
            })?;
            worktrain_engine::catalog::project_root(&cwd)
                .join(".worktrain")
                .join("workflows")
        }
    };
    let mut outcomes = worktrain_workrail::import(&inputs, &routines);
    let mut write_failed = false;
    for o in &mut outcomes {
        let Some(output) = &o.output else { continue };
        let target = out_dir.join(&output.file_name);
        o.report.output = Some(target.display().to_string());
        if args.check {
            continue;
        }
        match write(&out_dir, output) {
            Ok(Written::Wrote(_)) => {}
            Ok(Written::Refused(path)) => {
                write_failed = true;
                o.report.status = Status::Failed;
                o.report.reason = Some(format!(
                    "{} exists and was not written by `worktrain workflow import`; move it away or pass another --out",
                    path.display()
                ));
                o.report.output = None;
            }
            Err(e) => {
                write_failed = true;
                o.report.status = Status::Failed;
                o.report.reason = Some(format!("cannot write {}: {e}", target.display()));
                o.report.output = None;
            }
        }
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.report.status == s).count();
    let failed = count(Status::Failed);
    if ctx.out.json {
        let reports: Vec<&worktrain_workrail::FileReport> =
            outcomes.iter().map(|o| &o.report).collect();
        ctx.out.json(&json!({
            "from": args.from,
            "check": args.check,
            "out": out_dir,
            "files": reports,
            "converted": count(Status::Converted),
            "converted_with_notes": count(Status::ConvertedWithNotes),
            "failed": failed,
            "skipped": count(Status::Skipped),
        }));
    } else {
        for o in &outcomes {
            let r = &o.report;
            let id = r
                .workflow
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            say!("{:<21} {}{id}", r.status.as_str(), r.source);
            if let Some(reason) = &r.reason {
                say!("    reason: {reason}");
            }
            if let Some(out) = &r.output {
                say!(
                    "    {} {out}",
                    if args.check { "would write" } else { "wrote" }
                );
            }
            if let Some(c) = &r.checks
                && c.valid
            {
                say!(
                    "    checks: valid; lint {} error(s), {} warning(s); simulation {} ({} steps)",
                    c.lint_errors.len(),
                    c.lint_warnings.len(),
                    if c.simulated {
                        "completes"
                    } else {
                        "does not complete"
                    },
                    c.simulated_steps
                );
            }
            for n in &r.notes {
                say!("    - {n}");
            }
        }
        say!(
            "{} converted, {} converted with notes, {failed} failed, {} skipped{}",
            count(Status::Converted),
            count(Status::ConvertedWithNotes),
            count(Status::Skipped),
            if args.check {
                " (--check: nothing written)"
            } else {
                ""
            }
        );
    }
    Ok(if failed > 0 || write_failed {
        Exit::Invalid
    } else {
        Exit::Ok
    })
}
