//! `worktrain workflow list|show|validate|schema`.

use serde_json::json;
use worktrain_core::compile::ConfirmationRule;
use worktrain_core::error::ApiError;

use crate::Ctx;
use crate::cli::WorkflowCommand;
use crate::output::Exit;

pub fn run(ctx: &Ctx, cmd: WorkflowCommand) -> Result<Exit, ApiError> {
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
            Some(ConfirmationRule { kind, when: None }) => flags.push(format!("gate: {}", kind.as_str())),
            Some(ConfirmationRule { kind, when: Some(c) }) => flags.push(format!("gate: {} if {c}", kind.as_str())),
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
