//! Coordinator commands that talk to the daemon: `spawn`, `await`, `status`, `kill-all`,
//! and `session cancel|steer|resume|retry` (plus `approve|reject` of daemon sessions).

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use worktrain_core::error::{ApiError, ErrorCode, Retry};

use crate::Ctx;
use crate::cli::{AwaitArgs, SpawnArgs};
use crate::client::DaemonClient;
use crate::output::{Exit, time};

/// Exit codes of `worktrain await` (they differ from the general ones; docs/cli.md).
pub(crate) mod await_exit {
    /// Every session succeeded (its run completed the workflow).
    pub(crate) const ALL_SUCCEEDED: u8 = 0;
    /// Some session failed or was cancelled — or the daemon could not be asked.
    pub(crate) const SOME_FAILED: u8 = 1;
    /// The timeout passed first.
    pub(crate) const TIMEOUT: u8 = 2;
    /// Usage: bad arguments, unknown or malformed session ids.
    pub(crate) const USAGE: u8 = 3;
}

/// `worktrain spawn`.
pub(crate) async fn spawn(ctx: &Ctx, a: SpawnArgs) -> Result<Exit, ApiError> {
    let client = DaemonClient::new(ctx)?;
    let workflow = if worktrain_engine::catalog::is_workflow_path(&a.session.workflow) {
        std::fs::canonicalize(Path::new(&a.session.workflow))
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::WorkflowNotFound,
                    format!("cannot read workflow file {}: {e}", a.session.workflow),
                    Retry::AfterFix,
                    "check the path, or pass a workflow id from `worktrain workflow list`",
                )
            })?
            .display()
            .to_string()
    } else {
        a.session.workflow.clone()
    };
    let mut limits = Map::new();
    if let Some(d) = a.wall_clock {
        limits.insert("wall_clock_secs".into(), json!(d.as_secs().max(1)));
    }
    if let Some(n) = a.max_turns {
        limits.insert("max_turns".into(), json!(n));
    }
    if let Some(n) = a.max_tokens {
        limits.insert("max_tokens".into(), json!(n));
    }
    if let Some(n) = a.max_cost_usd {
        limits.insert("max_cost_usd".into(), json!(n));
    }
    let body = json!({
        "workflow": workflow,
        "goal": a.session.goal,
        "workspace": a.session.setup.workspace()?,
        "context": a.session.setup.context()?,
        "parent": a.session.parent,
        "agent": a.agent,
        "trigger": a.trigger,
        "limits": limits,
        "priority": a.priority,
        "readonly": a.readonly,
        "base": a.base,
        "idempotency_key": a.idempotency_key,
        "source": a.source,
        "delivery": delivery_settings(&a),
    });
    let v = client.post("/api/v1/sessions", &body).await?;
    if ctx.out.json {
        ctx.out.json(&v);
    } else {
        say!("{}", v["session_id"].as_str().unwrap_or_default());
        if v["created"] == false {
            eprintln!("(idempotency key matched an existing session)");
        }
    }
    Ok(Exit::Ok)
}

/// The delivery settings of `spawn`'s flags (`None` without `--delivery`).
fn delivery_settings(a: &SpawnArgs) -> Option<Value> {
    let target = a.delivery?;
    let s = worktrain_core::run::DeliverySettings {
        target,
        draft: a.draft,
        labels: a.pr_labels.clone(),
        reviewers: a.reviewers.clone(),
        remote: a.remote.clone(),
        identity: a.identity.clone(),
        secret_scan: if a.allow_secrets {
            worktrain_core::run::SecretScanPolicy::Warn
        } else {
            worktrain_core::run::SecretScanPolicy::Block
        },
        commit: if a.commit_all {
            worktrain_core::run::CommitScope::All
        } else {
            worktrain_core::run::CommitScope::Declared
        },
        ..worktrain_core::run::DeliverySettings::default()
    };
    serde_json::to_value(s).ok()
}

fn usage(message: String) -> ApiError {
    ApiError::invalid_input(message, "`worktrain await --help`")
}

/// `worktrain await`: returns the process exit code directly (see [`await_exit`]).
pub(crate) async fn await_sessions(ctx: &Ctx, a: AwaitArgs) -> u8 {
    match await_inner(ctx, a).await {
        Ok(code) => code,
        Err((code, e)) => {
            let _ = ctx.out.error(&e);
            code
        }
    }
}

async fn await_inner(ctx: &Ctx, a: AwaitArgs) -> Result<u8, (u8, ApiError)> {
    let fail = |e: ApiError| (await_exit::SOME_FAILED, e);
    for s in &a.sessions {
        if s.trim().parse::<worktrain_core::ids::SessionId>().is_err() {
            return Err((
                await_exit::USAGE,
                usage(format!("`{s}` is not a session id")),
            ));
        }
    }
    let client = DaemonClient::new(ctx).map_err(fail)?;
    let mode = if a.any { "any" } else { "all" };
    let started = Instant::now();
    let deadline = a.timeout.map(|t| started + t);
    let tty = std::io::stderr().is_terminal() && !ctx.out.json;
    let mut transient_errors = 0u32;
    let answer: Value = loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // Long-poll in slices so progress can be shown and the daemon may restart.
        let slice = left.map_or(Duration::from_secs(20), |l| l.min(Duration::from_secs(20)));
        let body = json!({"sessions": a.sessions, "mode": mode, "timeout_secs": slice.as_secs()});
        match client
            .json_with_timeout::<Value>(
                reqwest::Method::POST,
                "/api/v1/await",
                Some(&body),
                slice + Duration::from_secs(30),
            )
            .await
        {
            Ok(v) => {
                transient_errors = 0;
                let expired = deadline.is_some_and(|d| Instant::now() >= d);
                if v["done"] == true || expired {
                    break v;
                }
                if tty {
                    progress(&v, started.elapsed());
                }
            }
            Err(e) if e.code == ErrorCode::SessionNotFound || e.code == ErrorCode::InvalidInput => {
                return Err((await_exit::USAGE, e));
            }
            Err(e) if e.retry == Retry::Same && transient_errors < 30 => {
                // The daemon is restarting or busy: keep waiting.
                transient_errors += 1;
                if tty {
                    eprint!("\r\x1b[2Kdaemon unavailable ({}); retrying…", e.message);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err((await_exit::TIMEOUT, e));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(fail(e)),
        }
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if ctx.out.json {
        ctx.out.json(&answer);
    } else {
        for r in &results {
            print_result(r);
        }
    }
    let finished: Vec<&Value> = results.iter().filter(|r| r["finished"] == true).collect();
    let any_failed = finished.iter().any(|r| r["succeeded"] != true);
    if answer["done"] != true {
        if !ctx.out.json {
            eprintln!(
                "timed out after {} with {} of {} sessions finished",
                humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
                finished.len(),
                results.len()
            );
        }
        return Ok(await_exit::TIMEOUT);
    }
    Ok(if any_failed {
        await_exit::SOME_FAILED
    } else {
        await_exit::ALL_SUCCEEDED
    })
}

fn progress(v: &Value, elapsed: Duration) {
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let done = results.iter().filter(|r| r["finished"] == true).count();
    let states: Vec<String> = results
        .iter()
        .map(|r| {
            let state = r["outcome"].as_str().unwrap_or("interactive");
            match r["current_step"].as_str() {
                Some(step) if r["finished"] != true => format!("{state}@{step}"),
                _ => state.to_owned(),
            }
        })
        .collect();
    eprint!(
        "\r\x1b[2K[{}] {done}/{} finished · {}",
        humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
        results.len(),
        states.join(", ")
    );
}

fn print_result(r: &Value) {
    let id = r["session_id"].as_str().unwrap_or("?");
    let outcome = r["outcome"].as_str().unwrap_or("-");
    let status = r["status"].as_str().unwrap_or("-");
    let mut line = format!(
        "{id}  {outcome}  ({} · workflow {status}",
        r["workflow_id"].as_str().unwrap_or("?")
    );
    if let Some(f) = r["failure"].as_str() {
        line.push_str(&format!(" · {f}"));
    }
    line.push(')');
    say!("{line}");
    if let Some(d) = r["detail"].as_str() {
        say!("  detail: {d}");
    }
    if let Some(step) = r["current_step"].as_str()
        && r["finished"] != true
    {
        say!("  at step: {step}");
    }
    match (r["branch"].as_str(), r["commit"].as_str()) {
        (Some(b), Some(c)) => say!("  work: commit {c} on branch {b}"),
        (Some(b), None) => say!("  branch: {b}"),
        (None, _) if r["succeeded"] == true && r["outcome"].is_string() => {
            say!("  work: no changes")
        }
        (None, _) => {}
    }
    if let Some(w) = r["worktree"].as_str() {
        say!("  worktree: {w}");
    }
    if let Some(notes) = r["notes"].as_str() {
        say!("  notes:");
        for l in notes.lines().take(20) {
            say!("    {l}");
        }
    }
    if let Some(h) = r.get("handoff").filter(|h| !h.is_null()) {
        say!("  handoff: {h}");
    }
    if let Some(arts) = r["artifacts"].as_object() {
        for (k, v) in arts {
            if k != "handoff" {
                say!("  artifact {k}: {v}");
            }
        }
    }
    if let Some(pr) = r["pr_url"].as_str() {
        say!("  pr: {pr}");
    }
    if let Some(line) = delivery_line(&r["delivery"]) {
        say!("  delivery: {line}");
    }
}

/// One line on a delivery (`delivered (pull_request)`, `FAILED at push: … — hint`).
pub(crate) fn delivery_line(d: &Value) -> Option<String> {
    let state = d["state"].as_str()?;
    let target = d["target"].as_str().unwrap_or("?");
    Some(match state {
        "failed" => format!(
            "FAILED at {}: {}{}{}",
            d["failure"]["stage"].as_str().unwrap_or("?"),
            d["failure"]["message"].as_str().unwrap_or("?"),
            d["failure"]["hint"]
                .as_str()
                .map(|h| format!(" — {h}"))
                .unwrap_or_default(),
            if d["failure"]["retryable"] == true {
                " (retryable: `worktrain session retry-delivery`)"
            } else {
                " (after fixing it: `worktrain session retry-delivery`)"
            }
        ),
        other => format!("{other} ({target}, attempt {})", d["attempt"]),
    })
}

fn age(ms: i64) -> String {
    let now = worktrain_daemon::now_ms();
    let secs = u64::try_from((now - ms).max(0) / 1000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `worktrain status`.
pub(crate) async fn status(ctx: &Ctx) -> Result<Exit, ApiError> {
    let client = DaemonClient::new(ctx)?;
    let ready = client.get("/readyz").await?;
    let fetch = |state: &'static str, limit: u32| {
        let client = &client;
        async move {
            client
                .get(&format!("/api/v1/sessions?run_state={state}&limit={limit}"))
                .await
                .map(|v| v["sessions"].as_array().cloned().unwrap_or_default())
        }
    };
    let running = fetch("running", 200).await?;
    let queued = fetch("queued", 200).await?;
    let parked = fetch("parked", 200).await?;
    let interrupted = fetch("interrupted", 200).await?;
    let mut recent = Vec::new();
    for s in ["completed", "failed", "cancelled"] {
        recent.extend(fetch(s, 10).await?);
    }
    recent.sort_by_key(|s| std::cmp::Reverse(s["run"]["finished_at_ms"].as_i64().unwrap_or(0)));
    recent.truncate(10);
    if ctx.out.json {
        ctx.out.json(&json!({
            "daemon": {"url": client.base(), "ready": ready},
            "running": running,
            "queued": queued,
            "parked": parked,
            "interrupted": interrupted,
            "recent": recent,
        }));
        return Ok(Exit::Ok);
    }
    say!(
        "daemon {} · worker {} · {} running · {} queued{}",
        client.base(),
        ready["worker"].as_str().unwrap_or("?"),
        running.len(),
        queued.len(),
        if ready["ready"] == true {
            ""
        } else {
            " · SHUTTING DOWN"
        }
    );
    let goal = |s: &Value| {
        s["goal"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>()
    };
    for p in ready["problems"].as_array().into_iter().flatten() {
        say!("PROBLEM: {}", p.as_str().unwrap_or("?"));
    }
    let step = |s: &Value| s["current"]["step_id"].as_str().unwrap_or("—").to_owned();
    say!();
    say!("Running ({}):", running.len());
    for s in &running {
        let started = s["run"]["started_at_ms"].as_i64().unwrap_or(0);
        let beat = match s["last_heartbeat_ms"].as_i64() {
            Some(b) if b > 0 => format!("{} ago", age(b)),
            _ => "none yet".to_owned(),
        };
        say!(
            "  {}  {:<16} step {:<16} for {:<10} heartbeat {beat}  {}",
            s["session_id"].as_str().unwrap_or("?"),
            s["workflow_id"].as_str().unwrap_or("?"),
            step(s),
            age(started),
            goal(s)
        );
    }
    say!("Queued ({}):", queued.len());
    for s in &queued {
        say!(
            "  #{:<3} {}  {:<16} waiting {:<10} {}",
            s["queue_position"].as_u64().unwrap_or(0),
            s["session_id"].as_str().unwrap_or("?"),
            s["workflow_id"].as_str().unwrap_or("?"),
            age(s["run"]["queued_at_ms"].as_i64().unwrap_or(0)),
            goal(s)
        );
    }
    say!("Parked, awaiting approval ({}):", parked.len());
    for s in &parked {
        let id = s["session_id"].as_str().unwrap_or("?");
        say!(
            "  {id}  {:<16} step {:<16} {}  → `worktrain session approve {id}` / `reject {id} --note …`",
            s["workflow_id"].as_str().unwrap_or("?"),
            step(s),
            goal(s)
        );
    }
    if !interrupted.is_empty() {
        say!("Interrupted, awaiting recovery ({}):", interrupted.len());
        for s in &interrupted {
            say!("  {}  {}", s["session_id"].as_str().unwrap_or("?"), goal(s));
        }
    }
    say!("Recent outcomes:");
    if recent.is_empty() {
        say!("  none");
    }
    for s in &recent {
        let finished = s["run"]["finished_at_ms"].as_i64().unwrap_or(0);
        let why = s["run"]["failure"]
            .as_str()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        say!(
            "  {}  {:<9}{why} {} ago at {}  {:<16} {}",
            s["session_id"].as_str().unwrap_or("?"),
            s["run"]["state"].as_str().unwrap_or("?"),
            age(finished),
            time(finished),
            s["workflow_id"].as_str().unwrap_or("?"),
            goal(s)
        );
        if let Some(line) = delivery_line(&s["run"]["delivery"])
            && s["run"]["delivery"]["state"] == "failed"
        {
            say!("      delivery {line}");
        }
    }
    Ok(Exit::Ok)
}

/// `worktrain kill-all`.
pub(crate) async fn kill_all(ctx: &Ctx) -> Result<Exit, ApiError> {
    let client = DaemonClient::new(ctx)?;
    let v = client.post("/api/v1/kill-all", &json!({})).await?;
    if ctx.out.json {
        ctx.out.json(&v);
    } else {
        say!("kill switch: {} session(s) stopped", v["stopped"]);
    }
    Ok(Exit::Ok)
}

/// `worktrain console`: a one-time login link to the web console.
pub(crate) async fn console(ctx: &Ctx) -> Result<Exit, ApiError> {
    let client = DaemonClient::new(ctx)?;
    let v = client.post("/console/login-links", &json!({})).await?;
    let path = v["path"].as_str().ok_or_else(|| {
        ApiError::internal("the daemon answered without a login link (is it this version?)")
    })?;
    let url = format!("{}{path}", client.base().trim_end_matches('/'));
    if ctx.out.json {
        ctx.out
            .json(&json!({"url": url, "expires_in_secs": v["expires_in_secs"]}));
    } else {
        say!("{url}");
        say!(
            "(one-time link, valid {} s; open it in a browser on this machine)",
            v["expires_in_secs"]
        );
    }
    Ok(Exit::Ok)
}

/// `session cancel|steer|resume|retry|approve|reject` through the daemon.
pub(crate) async fn action(
    ctx: &Ctx,
    session: &str,
    action: &str,
    body: Value,
) -> Result<Exit, ApiError> {
    let id = session
        .trim()
        .parse::<worktrain_core::ids::SessionId>()
        .map_err(|e| {
            ApiError::invalid_input(e.to_string(), "pass a session id from `worktrain sessions`")
        })?;
    let client = DaemonClient::new(ctx)?;
    let v = client
        .post(&format!("/api/v1/sessions/{id}/{action}"), &body)
        .await?;
    if ctx.out.json {
        ctx.out.json(&v);
    } else {
        let rec = if v.get("session").is_some() {
            &v["session"]
        } else {
            &v
        };
        let state = rec["run"]["state"].as_str().unwrap_or("-");
        match action {
            "cancel" => say!("{id}: cancel requested (run {state})"),
            "steer" => say!("{id}: message queued for the agent's next turn (run {state})"),
            "resume" | "retry" => say!("{id}: queued again (run {state})"),
            "retry-delivery" => {
                say!("{id}: delivery queued again from the stage that failed (run {state})")
            }
            "approve" | "reject" => say!(
                "{id}: {} (run {state})",
                v["outcome"].as_str().unwrap_or(action)
            ),
            other => say!("{id}: {other} (run {state})"),
        }
    }
    Ok(Exit::Ok)
}
