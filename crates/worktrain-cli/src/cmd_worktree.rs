//! `worktrain worktree list|clean` and `worktrain session diff`: read from the store and
//! git directly (no daemon needed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use worktrain_core::error::ApiError;
use worktrain_core::ids::SessionId;
use worktrain_engine::diff::git_error;
use worktrain_engine::{Engine, SessionRef, SessionWorktrees, store_error};
use worktrain_git::{
    CleanAction, CleanOptions, CleanReason, ListOptions, LockState, Mode, Worktrees,
    WorktreesConfig,
};
use worktrain_store::SessionFilter;

use crate::Ctx;
use crate::cli::{CleanArgs, DiffArgs, WorktreeCommand};
use crate::output::Exit;

/// Workspaces of sessions that ran under the daemon and are git repositories.
async fn workspaces(engine: &Engine) -> Result<BTreeSet<PathBuf>, ApiError> {
    let mut out = BTreeSet::new();
    let mut offset = 0u32;
    loop {
        let page = engine
            .store()
            .sessions(&SessionFilter {
                limit: Some(1000),
                offset: Some(offset),
                ..SessionFilter::default()
            })
            .await
            .map_err(store_error)?;
        let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
        for s in page {
            if s.run.is_some()
                && let Some(ws) = s.workspace
            {
                let p = PathBuf::from(ws);
                if p.join(".git").exists() {
                    out.insert(p);
                }
            }
        }
        if n < 1000 {
            break;
        }
        offset += n;
    }
    Ok(out)
}

fn open(ctx: &Ctx, repo: &Path) -> Result<Worktrees, ApiError> {
    let mut config = WorktreesConfig::new(repo, ctx.home.root());
    config.remote = None;
    Worktrees::new(config).map_err(git_error)
}

pub(crate) async fn run(ctx: &Ctx, cmd: WorktreeCommand) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let repos = workspaces(&engine).await?;
    match cmd {
        WorktreeCommand::List => list(ctx, repos),
        WorktreeCommand::Clean(a) => clean(ctx, &engine, repos, a).await,
    }
}

/// RFC 3339 (UTC, seconds) of a clock reading.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A lock state as plain data: `{"lock": "in_use"|"kept"|"unlocked"|"foreign", …}`.
fn lock_fields(lock: &LockState) -> (Value, Value, Value) {
    match lock {
        LockState::Unlocked => (json!("unlocked"), Value::Null, Value::Null),
        LockState::InUse => (json!("in_use"), Value::Null, Value::Null),
        LockState::Kept { until } => (json!("kept"), json!(rfc3339(*until)), Value::Null),
        LockState::Foreign { reason } => (json!("foreign"), Value::Null, json!(reason)),
    }
}

/// Why a worktree is cleaned, as a plain word (and the keep's expiry when it has one).
fn clean_reason(r: &CleanReason) -> (&'static str, Value) {
    match r {
        CleanReason::DirectoryMissing => ("directory_missing", Value::Null),
        CleanReason::KeepExpired { until } => ("keep_expired", json!(rfc3339(*until))),
        CleanReason::KeptRemovedOnRequest { until } => {
            ("kept_removed_on_request", json!(rfc3339(*until)))
        }
        CleanReason::Unowned => ("unowned", Value::Null),
        CleanReason::Unregistered => ("unregistered", Value::Null),
    }
}

fn dur(d: Option<Duration>) -> String {
    d.map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
        .unwrap_or_else(|| "?".into())
}

fn list(ctx: &Ctx, repos: BTreeSet<PathBuf>) -> Result<Exit, ApiError> {
    let mut rows = Vec::new();
    for repo in &repos {
        let wts = open(ctx, repo)?;
        for i in wts.list(ListOptions { status: true }).map_err(git_error)? {
            let (lock, kept_until, lock_reason) = lock_fields(&i.lock);
            rows.push(json!({
                "repository": repo,
                "path": i.path,
                "exists": i.exists,
                "session": i.session,
                "branch": i.branch,
                "detached": i.mode == Mode::Detached,
                "head": i.head.map(|h| h.to_string()),
                "base": i.base,
                "created_at": i.created.map(rfc3339),
                "age_secs": i.age.map(|a| a.as_secs()),
                "lock": lock,
                "kept_until": kept_until,
                "lock_reason": lock_reason,
                "dirty": i.dirty,
                "ahead": i.ahead,
                "merged": i.merged,
                "problem": i.problem,
            }));
        }
    }
    if ctx.out.json {
        ctx.out.json(&json!({"worktrees": rows}));
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        say!("No session worktrees.");
        return Ok(Exit::Ok);
    }
    say!(
        "{:<30} {:<40} {:<8} {:<6} {:<6} {:<7} PATH",
        "SESSION",
        "BRANCH",
        "AGE",
        "DIRTY",
        "AHEAD",
        "MERGED"
    );
    let yn = |v: &Value| match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    };
    for r in &rows {
        say!(
            "{:<30} {:<40} {:<8} {:<6} {:<6} {:<7} {}{}",
            r["session"].as_str().unwrap_or("?"),
            r["branch"].as_str().unwrap_or("(detached)"),
            dur(r["age_secs"].as_u64().map(Duration::from_secs)),
            yn(&r["dirty"]),
            r["ahead"]
                .as_u64()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "?".into()),
            yn(&r["merged"]),
            r["path"].as_str().unwrap_or("?"),
            r["problem"]
                .as_str()
                .map(|p| format!("  ({p})"))
                .unwrap_or_default()
        );
    }
    Ok(Exit::Ok)
}

async fn clean(
    ctx: &Ctx,
    engine: &Engine,
    repos: BTreeSet<PathBuf>,
    a: CleanArgs,
) -> Result<Exit, ApiError> {
    let config = ctx.config()?;
    let worktrees = SessionWorktrees::new(config.daemon.worktrees, ctx.home.root());
    let mut entries = Vec::new();
    for repo in &repos {
        let options = CleanOptions {
            now: SystemTime::now(),
            dry_run: a.dry_run,
            include_kept: false,
        };
        // Removals are recorded on their sessions, and uncommitted work is committed on
        // the session branch before a directory goes.
        let report = engine.clean_worktrees(&worktrees, repo, options).await?;
        for e in report.entries {
            let (reason, kept_until) = clean_reason(&e.reason);
            let action = match &e.action {
                CleanAction::Removed => "removed".to_owned(),
                CleanAction::WouldRemove => "would remove".to_owned(),
                CleanAction::Skipped(why) => format!("skipped: {why}"),
            };
            entries.push(json!({
                "repository": repo,
                "session": e.session,
                "path": e.path,
                "reason": reason,
                "kept_until": kept_until,
                "action": action,
                "preserved_commit": e.preserved.map(|o| o.to_string()),
            }));
        }
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"dry_run": a.dry_run, "entries": entries}));
    } else if entries.is_empty() {
        say!("Nothing to clean.");
    } else {
        for e in &entries {
            say!(
                "{:<14} {}  ({})",
                e["action"].as_str().unwrap_or("?"),
                e["path"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(Exit::Ok)
}

/// `worktrain session diff <id> [--step S]`.
pub(crate) async fn diff(ctx: &Ctx, a: DiffArgs) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let id: SessionId = engine.session_id(&SessionRef::parse(&a.session))?;
    let query = worktrain_engine::diff::DiffQuery {
        step: a.step.clone(),
        patch: !a.stat,
    };
    let steps = engine.session_diff(id, ctx.home.root(), &query).await?;
    let out: Vec<Value> = steps
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    if ctx.out.json {
        ctx.out.json(&json!({"session_id": id, "steps": out}));
        return Ok(Exit::Ok);
    }
    for s in &out {
        say!(
            "── {} ({}) · {} file(s), +{} −{}",
            s["step_id"].as_str().unwrap_or("?"),
            s["node"],
            s["files_changed"],
            s["insertions"],
            s["deletions"]
        );
        for f in s["files"].as_array().into_iter().flatten() {
            say!(
                "   {:<9} {}  +{} −{}",
                f["status"].as_str().unwrap_or("?"),
                f["path"].as_str().unwrap_or("?"),
                f["insertions"],
                f["deletions"]
            );
        }
        if let Some(p) = s["patch"].as_str() {
            say!();
            say!("{}", p.trim_end());
            say!();
        }
    }
    Ok(Exit::Ok)
}
