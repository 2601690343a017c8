//! Workspace hooks (`setup`, `before_run`, `after_run`, `before_remove`): shell commands
//! a trigger configures around the agent, run in the session's worktree through the
//! agent's sandbox ([`worktrain_agent::sandbox`]: the profile's sandbox mode, the same
//! confinement, allowlisted environment, hidden worktrain home and process-tree kill —
//! with the network on, so `setup` can install dependencies), time-limited, each recorded
//! as a `hook_ran` event with its (capped) output.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use worktrain_agent::sandbox::{Input, Sandbox, SandboxMode, SandboxPolicy};
use worktrain_core::event::EventBody;
use worktrain_core::ids::SessionId;
use worktrain_core::run::{HookPoint, WorkspaceHooks};
use worktrain_engine::Engine;

/// Bytes of output kept per stream.
const OUTPUT_CAP: usize = 16 * 1024;

/// Run the hook for `point`, if configured; `Err` carries why it failed (exit code,
/// time-out, could not start). Recording failures are logged, not fatal.
pub async fn run(
    engine: &Arc<Engine>,
    id: SessionId,
    hooks: &WorkspaceHooks,
    point: HookPoint,
    dir: &Path,
    sandbox: (SandboxMode, &Path),
) -> Result<(), String> {
    let Some(command) = hooks.command(point) else {
        return Ok(());
    };
    let timeout = hooks.timeout();
    let started = Instant::now();
    let sid = id.to_string();
    let (mode, home) = sandbox;
    let policy = SandboxPolicy {
        mode,
        ..SandboxPolicy::networked()
    };
    let ran = match Sandbox::new(policy)
        .hiding([home.to_path_buf()])
        .scope(dir, Some(&sid))
    {
        Ok(scope) => {
            scope
                .run(
                    "bash",
                    &["-c".to_owned(), command.to_owned()],
                    &std::collections::BTreeMap::new(),
                    Input::Null,
                    timeout,
                    OUTPUT_CAP,
                )
                .await
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    let (exit_code, timed_out, output, result) = match ran {
        Ok(r) => {
            let mut out = r.stdout.clone();
            if !r.stderr.is_empty() {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&r.stderr);
            }
            let result = if r.timed_out {
                Err(format!(
                    "{} hook timed out after {} s",
                    point.as_str(),
                    timeout.as_secs()
                ))
            } else if r.exit_code == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "{} hook `{command}` exited with {}{}",
                    point.as_str(),
                    r.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| format!("signal {}", r.signal.unwrap_or(0))),
                    last_line(&out)
                ))
            };
            (r.exit_code, r.timed_out, out, result)
        }
        Err(e) => (
            None,
            false,
            String::new(),
            Err(format!("{} hook could not start: {e}", point.as_str())),
        ),
    };
    let body = EventBody::HookRan {
        hook: point,
        command: command.to_owned(),
        exit_code,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        output,
    };
    if let Err(e) = engine.transition(id, |_| Ok(vec![body.clone()])).await {
        warn!(session_id = %id, error = %e, "recording a hook run failed");
    }
    match &result {
        Ok(()) => info!(session_id = %id, hook = point.as_str(), "hook ran"),
        Err(why) => warn!(session_id = %id, hook = point.as_str(), error = %why, "hook failed"),
    }
    result
}

fn last_line(out: &str) -> String {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default()
}
