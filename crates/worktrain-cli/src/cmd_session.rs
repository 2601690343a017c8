//! `worktrain session …` and `worktrain sessions`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};
use worktrain_core::event::SessionMode;
use worktrain_core::ids::{NodeId, Seq, SessionId, StepId, WorkflowId};
use worktrain_core::machine::Submission;
use worktrain_core::projection::{NodeRecord, SessionStatus};
use worktrain_core::response::Outcome;
use worktrain_engine::{
    Engine, Reply, RewindTarget, SessionRef, StartRequest, current_path, store_error,
};
use worktrain_store::SessionFilter;

use crate::cli::{OutputArgs, SessionCommand, SessionsArgs};
use crate::output::{Audience, Exit, print_response, time};
use crate::{Ctx, context_from, workspace_string};

pub(crate) async fn run(ctx: &Ctx, cmd: SessionCommand) -> Result<Exit, ApiError> {
    // Commands served by the daemon (the run's owner) never open the store here.
    let cmd = match cmd {
        SessionCommand::Cancel(a) => {
            return crate::cmd_coord::action(ctx, &a.session, "cancel", json!({"note": a.note}))
                .await;
        }
        SessionCommand::Steer(a) => {
            return crate::cmd_coord::action(
                ctx,
                &a.session,
                "steer",
                json!({"message": a.message}),
            )
            .await;
        }
        SessionCommand::Resume(a) => {
            return crate::cmd_coord::action(ctx, &a.session, "resume", json!({})).await;
        }
        SessionCommand::Retry(a) => {
            return crate::cmd_coord::action(ctx, &a.session, "retry", json!({})).await;
        }
        SessionCommand::RetryDelivery(a) => {
            return crate::cmd_coord::action(ctx, &a.session, "retry-delivery", json!({})).await;
        }
        SessionCommand::Diff(a) => return crate::cmd_worktree::diff(ctx, a).await,
        other => other,
    };
    let engine = ctx.engine().await?;
    match cmd {
        SessionCommand::Start(a) => {
            let s = a.session;
            let workflow = ctx
                .catalog(s.setup.workspace.as_deref())
                .resolve(&s.workflow)?;
            let reply = engine
                .start(StartRequest {
                    workflow,
                    goal: s.goal,
                    workspace: s.setup.workspace()?,
                    context: s.setup.context()?,
                    mode: if a.autonomous {
                        SessionMode::Autonomous
                    } else {
                        SessionMode::Interactive
                    },
                    parent: s.parent.as_deref().map(parse_session_id).transpose()?,
                })
                .await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Advance(a) => {
            let submission = read_output(&a.output)?;
            let reply = engine.advance(&a.token, submission).await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Checkpoint(a) => {
            let s = read_output(&a.output)?;
            if !s.artifacts.is_empty() {
                return Err(ApiError::invalid_input(
                    "a checkpoint records notes and context only",
                    "submit artifacts with `worktrain session advance`",
                ));
            }
            let reply = engine
                .checkpoint(&a.token, s.notes.as_deref().unwrap_or(""), s.context)
                .await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Rehydrate(a) => {
            let reply = engine.rehydrate(&SessionRef::parse(&a.session)).await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Rewind(a) => {
            let to = parse_rewind_target(&a.to)?;
            let target = SessionRef::parse(&a.session);
            let id = engine.session_id(&target)?;
            let before = engine.session(id).await?;
            if before
                .run
                .as_ref()
                .is_some_and(|r| r.state == worktrain_core::run::RunState::Running)
            {
                return Err(ApiError::invalid_input(
                    format!(
                        "session {id} is running under the daemon; its agent holds the worktree"
                    ),
                    "cancel it (`worktrain session cancel`) or wait until it parks or ends, then rewind and `retry`",
                ));
            }
            let reply = engine.rewind(&target, &to, a.reason).await?;
            let after = engine.session(id).await?;
            if after.run.as_ref().is_some_and(|r| r.restore_pending) && !ctx.out.json {
                eprintln!(
                    "note: the session's worktree does not exist now; its files are restored to the re-entered step when it runs again (`worktrain session retry {id}`)"
                );
            }
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Approve(a) => {
            // A daemon session goes through the daemon, which requeues its run.
            if let Some(id) = daemon_session(&engine, &a.session).await? {
                return crate::cmd_coord::action(
                    ctx,
                    &id.to_string(),
                    "approve",
                    json!({"note": a.note}),
                )
                .await;
            }
            let reply = engine
                .approve(&SessionRef::parse(&a.session), a.note)
                .await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Reject(a) => {
            if let Some(id) = daemon_session(&engine, &a.session).await? {
                return crate::cmd_coord::action(
                    ctx,
                    &id.to_string(),
                    "reject",
                    json!({"note": a.note}),
                )
                .await;
            }
            let reply = engine
                .reject(&SessionRef::parse(&a.session), a.note)
                .await?;
            Ok(emit(ctx, &reply))
        }
        SessionCommand::Show(a) => show(ctx, &engine, &a.session).await,
        SessionCommand::Log(a) => log(ctx, &engine, &a.session, a.after, a.follow).await,
        SessionCommand::Verify(a) => verify(ctx, &engine, &a.session).await,
        SessionCommand::Cancel(_)
        | SessionCommand::Steer(_)
        | SessionCommand::Resume(_)
        | SessionCommand::Retry(_)
        | SessionCommand::RetryDelivery(_)
        | SessionCommand::Diff(_) => {
            Err(ApiError::internal("daemon commands are dispatched above"))
        }
    }
}

/// The session's id when it was dispatched to the daemon (it has a run).
async fn daemon_session(engine: &Engine, session: &str) -> Result<Option<SessionId>, ApiError> {
    let id = resolve_id(engine, session)?;
    let summary = engine.store().session(id).await.map_err(store_error)?;
    Ok(summary.filter(|s| s.run.is_some()).map(|_| id))
}

/// Print a reply; blocked submissions exit with [`Exit::Blocked`].
pub(crate) fn emit(ctx: &Ctx, reply: &Reply) -> Exit {
    if ctx.out.json {
        ctx.out.raw_json(&reply.bytes);
    } else {
        print_response(&reply.response, reply.replayed, Audience::TokenHolder);
    }
    if reply.response.outcome == Outcome::Blocked {
        Exit::Blocked
    } else {
        Exit::Ok
    }
}

fn parse_session_id(s: &str) -> Result<SessionId, ApiError> {
    s.parse::<SessionId>().map_err(|e| {
        ApiError::invalid_input(e.to_string(), "pass a session id from `worktrain sessions`")
    })
}

fn parse_rewind_target(s: &str) -> Result<RewindTarget, ApiError> {
    if let Some(n) = s.strip_prefix('n').and_then(|n| n.parse::<u32>().ok()) {
        return Ok(RewindTarget::Node(NodeId(n)));
    }
    StepId::new(s).map(RewindTarget::Step).map_err(|e| {
        ApiError::invalid_input(
            e.to_string(),
            "pass a step id (e.g. `plan`) or a node (e.g. `n3`)",
        )
    })
}

/// Read notes, artifacts and context changes from the command line.
pub(crate) fn read_output(a: &OutputArgs) -> Result<Submission, ApiError> {
    let notes = match (&a.notes, &a.notes_file) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| {
                ApiError::invalid_input(
                    format!("cannot read notes from stdin: {e}"),
                    "pipe the notes in, or use --notes-file FILE",
                )
            })?;
            Some(s)
        }
        (None, Some(path)) => Some(read_text(path, "notes")?),
        (None, None) => None,
    };
    let mut artifacts = Vec::new();
    for path in &a.artifacts {
        artifacts.extend(read_artifacts(path)?);
    }
    Ok(Submission {
        notes,
        artifacts,
        context: context_from(&a.set)?,
    })
}

fn read_text(path: &Path, what: &str) -> Result<String, ApiError> {
    std::fs::read_to_string(path).map_err(|e| {
        ApiError::invalid_input(
            format!("cannot read {what} file {}: {e}", path.display()),
            "check the path",
        )
    })
}

/// Read one artifact object or an array of them from a JSON file.
pub(crate) fn read_artifacts(path: &Path) -> Result<Vec<Value>, ApiError> {
    let text = read_text(path, "artifact")?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        ApiError::invalid_input(
            format!(
                "{}:{}:{}: invalid JSON: {e}",
                path.display(),
                e.line(),
                e.column()
            ),
            "an artifact file holds one JSON object ({\"kind\": …}) or an array of them",
        )
    })?;
    match value {
        Value::Array(items) => Ok(items),
        obj @ Value::Object(_) => Ok(vec![obj]),
        other => Err(ApiError::invalid_input(
            format!(
                "{}: an artifact must be a JSON object, got {other}",
                path.display()
            ),
            "write {\"kind\": \"<contract>\", …}",
        )),
    }
}

fn resolve_id(engine: &Engine, s: &str) -> Result<SessionId, ApiError> {
    engine.session_id(&SessionRef::parse(s))
}

async fn show(ctx: &Ctx, engine: &Engine, session: &str) -> Result<Exit, ApiError> {
    let id = resolve_id(engine, session)?;
    let summary = engine
        .store()
        .session(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    let nodes = engine.store().nodes(id).await.map_err(store_error)?;
    if ctx.out.json {
        ctx.out.json(&json!({"session": summary, "nodes": nodes}));
        return Ok(Exit::Ok);
    }
    say!("session   {}", summary.session_id);
    say!(
        "workflow  {} v{} (sha256 {})",
        summary.workflow_id,
        summary.workflow_version,
        summary.workflow_hash.short()
    );
    say!("source    {}", summary.workflow_source);
    say!("goal      {}", summary.goal);
    if let Some(ws) = &summary.workspace {
        say!("workspace {ws}");
    }
    say!("status    {}", summary.status.as_str());
    match &summary.current {
        Some(c) => say!(
            "current   {} ({}, attempt {})",
            c.step_id,
            c.node,
            c.attempt
        ),
        None => say!("current   —"),
    }
    say!(
        "counts    {} completed · {} skipped · {} blocked · {} checkpoints · {} rewinds · {} events",
        summary.steps_completed,
        summary.steps_skipped,
        summary.blocked_attempts,
        summary.checkpoints,
        summary.rewinds,
        summary.last_seq
    );
    say!("created   {}", time(summary.created_at_ms));
    say!("updated   {}", time(summary.updated_at_ms));
    if !summary.context.is_empty() {
        say!("context   {}", Value::Object(summary.context.clone()));
    }
    if let Some(run) = &summary.run {
        say!(
            "run       {}{}",
            run.state.as_str(),
            run.failure.map(|f| format!(" ({f})")).unwrap_or_default()
        );
        if let (Some(b), Some(c)) = (&run.branch, &run.commit) {
            say!("work      commit {c} on branch {b}");
        }
        if let Some(d) = &run.delivery {
            let v = serde_json::to_value(d).unwrap_or(Value::Null);
            if let Some(line) = crate::cmd_coord::delivery_line(&v) {
                say!("delivery  {line}");
            }
            for (stage, o) in &d.done {
                say!("  done    {stage}: {}", o.summary);
            }
            if let Some(pr) = &d.pr_url {
                say!("  pr      {pr}");
            }
        }
    }
    say!();
    say!("Step graph (* = current path):");
    let on_path: Vec<NodeId> = current_path(&summary, &nodes)
        .iter()
        .map(|n| n.node)
        .collect();
    print_tree(&nodes, &on_path);
    Ok(Exit::Ok)
}

fn print_tree(nodes: &[NodeRecord], on_path: &[NodeId]) {
    let mut children: HashMap<Option<NodeId>, Vec<&NodeRecord>> = HashMap::new();
    for n in nodes {
        children.entry(n.parent).or_default().push(n);
    }
    fn walk(
        parent: Option<NodeId>,
        depth: usize,
        children: &HashMap<Option<NodeId>, Vec<&NodeRecord>>,
        on_path: &[NodeId],
    ) {
        let Some(kids) = children.get(&parent) else {
            return;
        };
        for n in kids {
            let mark = if on_path.contains(&n.node) { '*' } else { ' ' };
            say!(
                "  {mark} {}{:<5} {:<20} {:<10} attempts {}",
                "  ".repeat(depth),
                n.node.to_string(),
                n.step_id.as_str(),
                n.status.as_str(),
                n.attempts
            );
            walk(Some(n.node), depth + 1, children, on_path);
        }
    }
    walk(None, 0, &children, on_path);
}

fn not_found(id: SessionId) -> ApiError {
    ApiError::new(
        ErrorCode::SessionNotFound,
        format!("no session {id} in this store"),
        Retry::Never,
        "`worktrain sessions` lists known sessions",
    )
}

async fn log(
    ctx: &Ctx,
    engine: &Engine,
    session: &str,
    after: u64,
    follow: bool,
) -> Result<Exit, ApiError> {
    let id = resolve_id(engine, session)?;
    if engine
        .store()
        .session(id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(not_found(id));
    }
    let mut cursor = Seq(after);
    // Subscribed before the first read, so an append in between still wakes the wait:
    // PostgreSQL announces every process's appends; on SQLite, appends by other
    // processes are unannounced and found by re-reading at most every 200 ms.
    let mut appended = engine.store().subscribe();
    let recheck = engine
        .store()
        .quiet_recheck()
        .min(Duration::from_millis(200));
    let never = tokio_util::sync::CancellationToken::new();
    loop {
        let events = engine
            .store()
            .events(id, cursor, 500)
            .await
            .map_err(store_error)?;
        for e in &events {
            if ctx.out.json {
                ctx.out.json(e);
            } else {
                let body = serde_json::to_value(&e.body).unwrap_or(Value::Null);
                let mut fields: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
                fields.remove("type");
                say!(
                    "{:>5}  {}  {:<20} {}",
                    e.seq,
                    time(e.created_at_ms),
                    e.body.kind().as_str(),
                    summarize(&fields)
                );
            }
            cursor = e.seq;
        }
        if !follow {
            break;
        }
        if events.is_empty() {
            let done = engine
                .store()
                .session(id)
                .await
                .map_err(store_error)?
                // Finished the way the event stream and `await` say it: a run that ended
                // (completed, failed, cancelled), or a completed interactive session.
                .is_some_and(|s| worktrain_daemon::views::is_finished(&s) && s.last_seq == cursor);
            if done {
                break;
            }
            worktrain_daemon::sse::wait_for_append(
                &mut appended,
                |a| a.session_id == id,
                recheck,
                &never,
                None,
            )
            .await;
        }
    }
    Ok(Exit::Ok)
}

/// Event fields as `k=v` pairs, long strings cut (one log line).
pub(crate) fn summarize(fields: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (k, v) in fields {
        let text = match v {
            Value::String(s) => {
                let one_line = s.replace('\n', " ");
                if one_line.chars().count() > 60 {
                    format!("{}…", one_line.chars().take(60).collect::<String>())
                } else {
                    one_line
                }
            }
            other => {
                let s = other.to_string();
                if s.len() > 60 {
                    format!(
                        "{}…",
                        &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())]
                    )
                } else {
                    s
                }
            }
        };
        parts.push(format!("{k}={text}"));
    }
    parts.join("  ")
}

async fn verify(ctx: &Ctx, engine: &Engine, session: &str) -> Result<Exit, ApiError> {
    let id = resolve_id(engine, session)?;
    let report = engine
        .store()
        .verify(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    if ctx.out.json {
        ctx.out
            .json(&json!({"valid": report.is_valid(), "report": report}));
    } else if let Some(b) = &report.first_broken {
        say!(
            "BROKEN  session {id}: {} events verified, then seq {} (position {}): {}",
            report.events,
            b.seq,
            b.position,
            b.reason
        );
    } else {
        say!(
            "ok  session {id}: {} events, hash chain intact (head {})",
            report.events,
            report.head.short()
        );
    }
    Ok(if report.is_valid() {
        Exit::Ok
    } else {
        Exit::Integrity
    })
}

pub(crate) async fn list(ctx: &Ctx, a: SessionsArgs) -> Result<Exit, ApiError> {
    let engine = ctx.engine().await?;
    let status = a
        .status
        .as_deref()
        .map(|s| {
            SessionStatus::parse(s).ok_or_else(|| {
                ApiError::invalid_input(
                    format!("unknown status `{s}`"),
                    "use one of: in_progress, blocked, complete",
                )
            })
        })
        .transpose()?;
    let workflow = a
        .workflow
        .as_deref()
        .map(|w| {
            WorkflowId::new(w)
                .map_err(|e| ApiError::invalid_input(e.to_string(), "pass a workflow id"))
        })
        .transpose()?;
    let sessions = engine
        .store()
        .sessions(&SessionFilter {
            status,
            workflow,
            workspace: a
                .workspace
                .as_deref()
                .and_then(|w| workspace_string(Some(w))),
            text: a.search,
            run: None,
            limit: Some(a.limit),
            offset: Some(a.offset),
            ..SessionFilter::default()
        })
        .await
        .map_err(store_error)?;
    if ctx.out.json {
        ctx.out.json(&json!({"sessions": sessions}));
        return Ok(Exit::Ok);
    }
    if sessions.is_empty() {
        say!("No sessions.");
        return Ok(Exit::Ok);
    }
    say!(
        "{:<30} {:<16} {:<12} {:<16} {:<20} GOAL",
        "SESSION",
        "WORKFLOW",
        "STATUS",
        "STEP",
        "UPDATED"
    );
    for s in &sessions {
        let goal: String = s.goal.chars().take(50).collect();
        say!(
            "{:<30} {:<16} {:<12} {:<16} {:<20} {}",
            s.session_id.to_string(),
            s.workflow_id.as_str(),
            s.status.as_str(),
            s.current
                .as_ref()
                .map(|c| c.step_id.as_str())
                .unwrap_or("—"),
            time(s.updated_at_ms),
            goal
        );
    }
    Ok(Exit::Ok)
}
