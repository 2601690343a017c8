//! `worktrain trigger list|validate|test|fire|log`.
//!
//! `validate` and `test` work offline with the same loader and rules as the daemon.
//! `list` asks the running daemon (which also knows the last reload error) and falls back
//! to the file; `log` asks the daemon and falls back to the store; `fire` needs the daemon.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use worktrain_config::Config;
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_store::triggers::DecisionFilter;
use worktrain_triggers::config::{ConfigError, TriggerIndex};
use worktrain_triggers::env::EnvSource;
use worktrain_triggers::runtime::dry_run;

use crate::Ctx;
use crate::cli::TriggerCommand;
use crate::client::DaemonClient;
use crate::output::Exit;

/// The triggers file: `--file`, else `daemon.triggers_file` under the home.
pub(crate) fn triggers_path(ctx: &Ctx, config: &Config) -> PathBuf {
    let f = &config.daemon.triggers_file;
    if f.is_absolute() {
        f.clone()
    } else {
        ctx.home.root().join(f)
    }
}

fn config_error(e: &ConfigError) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        e.to_string(),
        Retry::AfterFix,
        "fix triggers.yml; docs/triggers.md describes every key (schema: spec/triggers.schema.json)",
    )
}

pub(crate) fn load(path: &Path) -> Result<TriggerIndex, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("{}: {e}", path.display()),
            Retry::AfterFix,
            "create it (see triggers.example.yml), or pass --file",
        )
    })?;
    worktrain_triggers::config::load(&path.display().to_string(), &text, &EnvSource::Process)
        .map_err(|e| config_error(&e))
}

fn read_json(path: &Path) -> Result<Value, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("{}: {e}", path.display()),
            Retry::AfterFix,
            "pass a file holding the event's JSON payload",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("{}: not JSON: {e}", path.display()),
            Retry::AfterFix,
            "pass the payload exactly as the forge sends it",
        )
    })
}

/// Run a `trigger` subcommand.
pub(crate) async fn run(ctx: &Ctx, cmd: TriggerCommand) -> Result<Exit, ApiError> {
    match cmd {
        TriggerCommand::Validate { file } => {
            let path = match file {
                Some(f) => f,
                None => triggers_path(ctx, &ctx.config()?),
            };
            let index = load(&path)?;
            if ctx.out.json {
                // Notifiers by name and kind: never their URL or secret.
                let notifiers: Vec<_> = index
                    .notifiers
                    .iter()
                    .map(|(name, n)| {
                        json!({
                            "name": name,
                            "kind": n.kind,
                            "events": n.events.clone().unwrap_or_else(|| worktrain_core::run::NotifyEvent::ALL.to_vec()),
                            "global": n.global,
                            "max_per_minute": n.max_per_minute,
                        })
                    })
                    .collect();
                ctx.out.json(&json!({
                    "file": path, "valid": true,
                    "triggers": index.triggers.keys().collect::<Vec<_>>(),
                    "notifiers": notifiers,
                }));
            } else {
                say!(
                    "{}: valid, {} trigger(s): {}",
                    path.display(),
                    index.triggers.len(),
                    index
                        .triggers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if !index.notifiers.is_empty() {
                    say!(
                        "  {} notifier(s): {}",
                        index.notifiers.len(),
                        index
                            .notifiers
                            .iter()
                            .map(|(name, n)| format!(
                                "{name} ({}{})",
                                n.kind.as_str(),
                                if n.global { ", global" } else { "" }
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(Exit::Ok)
        }
        TriggerCommand::List => list(ctx).await,
        TriggerCommand::Schema => {
            let schema = worktrain_triggers::schema::json_schema();
            say!(
                "{}",
                serde_json::to_string_pretty(&schema)
                    .map_err(|e| ApiError::internal(e.to_string()))?
            );
            Ok(Exit::Ok)
        }
        TriggerCommand::Test {
            id,
            payload,
            event,
            file,
        } => {
            let path = match file {
                Some(f) => f,
                None => triggers_path(ctx, &ctx.config()?),
            };
            let index = load(&path)?;
            let t = index.get(&id).ok_or_else(|| not_found(&id))?;
            let payload = read_json(&payload)?;
            let (ev, verdict) = dry_run(t, event.as_deref(), payload).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidInput,
                    e.to_string(),
                    Retry::AfterFix,
                    "see docs/triggers.md",
                )
            })?;
            let v = worktrain_daemon::api::triggers::verdict_json(
                &ev.key(),
                ev.source.as_ref().map(|s| s.to_string()),
                &verdict,
            );
            if ctx.out.json {
                ctx.out.json(&v);
            } else {
                say!(
                    "{}: {}",
                    v["decision"].as_str().unwrap_or("?"),
                    v["reason"].as_str().unwrap_or("")
                );
                say!("  event:  {}", ev.key());
                if let Some(s) = &ev.source {
                    say!("  source: {s}");
                }
                if let Some(p) = v.get("plan") {
                    say!("  workflow: {}", p["workflow"].as_str().unwrap_or(""));
                    say!("  goal:     {}", p["goal"].as_str().unwrap_or(""));
                    if p["context"].as_object().is_some_and(|m| !m.is_empty()) {
                        say!("  context:  {}", p["context"]);
                    }
                }
                if let Some(d) = v.get("detail").filter(|d| !d.is_null()) {
                    say!("  detail: {d}");
                }
                say!("(nothing was dispatched or recorded)");
            }
            Ok(Exit::Ok)
        }
        TriggerCommand::Fire { id, payload, event } => {
            let client = DaemonClient::new(ctx)?;
            let mut body = json!({});
            if let Some(p) = payload {
                body["payload"] = read_json(&p)?;
            }
            if let Some(e) = event {
                body["event"] = json!(e);
            }
            let d = client
                .post(&format!("/api/v1/triggers/{id}/fire"), &body)
                .await?;
            if ctx.out.json {
                ctx.out.json(&d);
            } else {
                say!(
                    "{}: {}",
                    d["decision"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("")
                );
                if let Some(s) = d["session_id"].as_str() {
                    say!("session: {s}");
                }
            }
            Ok(Exit::Ok)
        }
        TriggerCommand::Log {
            id,
            limit,
            decision,
        } => log(ctx, &id, limit, decision).await,
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        format!("no trigger `{id}` in triggers.yml"),
        Retry::AfterFix,
        "`worktrain trigger list` shows the triggers",
    )
}

async fn list(ctx: &Ctx) -> Result<Exit, ApiError> {
    let from_daemon = match DaemonClient::new(ctx) {
        Ok(c) => c.get("/api/v1/triggers").await.ok(),
        Err(_) => None,
    };
    let doc = match from_daemon {
        Some(d) => d,
        None => {
            let path = triggers_path(ctx, &ctx.config()?);
            let (triggers, error) = match load(&path) {
                Ok(index) => (
                    index
                        .triggers
                        .values()
                        .map(|t| {
                            json!({"id": t.id, "provider": t.source.provider(), "enabled": t.enabled,
                                   "workflow": t.workflow, "description": t.description,
                                   "webhook_path": t.source.is_webhook().then(|| format!("/webhooks/{}", t.id))})
                        })
                        .collect::<Vec<_>>(),
                    None,
                ),
                Err(e) if path.exists() => (Vec::new(), Some(e.message)),
                Err(_) => (Vec::new(), None),
            };
            json!({"daemon": false, "status": {"file": path, "present": path.exists(), "error": error}, "triggers": triggers})
        }
    };
    if ctx.out.json {
        ctx.out.json(&doc);
        return Ok(Exit::Ok);
    }
    let status = &doc["status"];
    if doc.get("daemon") == Some(&json!(false)) {
        say!(
            "(the daemon is not running: read from {})",
            status["file"].as_str().unwrap_or("?")
        );
    }
    if let Some(e) = status["error"]
        .as_str()
        .or_else(|| status["error"]["message"].as_str())
    {
        let shown = status["error"]["file"]
            .as_str()
            .map(|_| render_error(&status["error"]))
            .unwrap_or_else(|| e.to_owned());
        say!("triggers.yml is INVALID (the daemon keeps the triggers below): {shown}");
    }
    let triggers = doc["triggers"].as_array().cloned().unwrap_or_default();
    if triggers.is_empty() {
        say!("no triggers");
    }
    for t in triggers {
        let counts = t["decisions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        say!(
            "{:<24} {:<15} {:<8} {:<20} {}",
            t["id"].as_str().unwrap_or(""),
            t["provider"].as_str().unwrap_or(""),
            if t["enabled"] == json!(true) {
                "enabled"
            } else {
                "disabled"
            },
            t["workflow"].as_str().unwrap_or(""),
            t["webhook_path"].as_str().unwrap_or("")
        );
        if !counts.is_empty() {
            say!("    decisions: {counts}");
        }
    }
    Ok(Exit::Ok)
}

fn render_error(e: &Value) -> String {
    let mut s = e["file"].as_str().unwrap_or("").to_owned();
    if let Some(l) = e["line"].as_u64() {
        s.push_str(&format!(":{l}"));
        if let Some(c) = e["column"].as_u64() {
            s.push_str(&format!(":{c}"));
        }
    }
    if let Some(p) = e["path"].as_str().filter(|p| !p.is_empty()) {
        s.push_str(&format!(": at `{p}`"));
    }
    format!("{s}: {}", e["message"].as_str().unwrap_or(""))
}

async fn log(ctx: &Ctx, id: &str, limit: u32, decision: Option<String>) -> Result<Exit, ApiError> {
    let mut path = format!("/api/v1/triggers/{id}/decisions?limit={limit}");
    if let Some(d) = &decision {
        path.push_str(&format!("&decision={d}"));
    }
    let from_daemon = match DaemonClient::new(ctx) {
        Ok(c) => c.get(&path).await.ok(),
        Err(_) => None,
    };
    let decisions: Vec<Value> = match from_daemon {
        Some(page) => page["decisions"].as_array().cloned().unwrap_or_default(),
        None => {
            let (_, store) = ctx.engine_with_store().await?;
            let rows = store
                .decisions(&DecisionFilter {
                    trigger_id: Some(id.to_owned()),
                    decision,
                    limit: Some(limit),
                    ..DecisionFilter::default()
                })
                .await
                .map_err(worktrain_engine::store_error)?;
            rows.into_iter()
                .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
                .collect()
        }
    };
    if ctx.out.json {
        ctx.out
            .json(&json!({"trigger": id, "decisions": decisions}));
        return Ok(Exit::Ok);
    }
    if decisions.is_empty() {
        say!("no decisions recorded for `{id}`");
    }
    for d in decisions.iter().rev() {
        let at = d["created_at_ms"]
            .as_i64()
            .and_then(chrono_like)
            .unwrap_or_default();
        let mut line = format!(
            "{at}  #{:<6} {:<22} {}",
            d["id"],
            d["decision"].as_str().unwrap_or(""),
            d["reason"].as_str().unwrap_or("")
        );
        if let Some(s) = d["source"].as_str() {
            line.push_str(&format!("  [{s}]"));
        }
        if let Some(s) = d["session_id"].as_str() {
            line.push_str(&format!("  session {s}"));
        }
        say!("{line}");
    }
    Ok(Exit::Ok)
}

fn chrono_like(ms: i64) -> Option<String> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).ok()?);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}
