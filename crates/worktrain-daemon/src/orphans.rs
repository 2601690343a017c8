//! Processes a crashed run left behind — only possible for profiles that opted out of
//! the sandbox (`sandbox: {mode: off}`): sandboxed commands live in a PID namespace whose
//! bwrap dies with worktrain, taking every process with it. Every command an agent runs
//! carries `WORKTRAIN_SESSION_ID` in its environment; before a session is resumed after a
//! crash, unsandboxed leftovers are found by that tag and killed, so the resumed agent
//! never races its own orphaned `cargo test`.

/// Kill every process (other than this one) whose environment names `session`. Returns
/// how many were signalled. Processes of other users are invisible and left alone.
pub fn kill_orphans(session: &str) -> usize {
    let needle = format!("{}={session}", worktrain_agent::tools::shell::SESSION_ENV);
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).is_ok_and(|p| p == me) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid)
            && rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
        {
            tracing::info!(
                session_id = session,
                pid,
                "killed a process left by an interrupted run"
            );
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_tagged_processes_only() {
        let session = format!("ses_test{}", std::process::id());
        let mut tagged = std::process::Command::new("sleep")
            .arg("30")
            .env(worktrain_agent::tools::shell::SESSION_ENV, &session)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(
                worktrain_agent::tools::shell::SESSION_ENV,
                "ses_someone_else",
            )
            .spawn()
            .unwrap();
        // A process being started may not show its environment for a moment.
        let mut killed = 0;
        for _ in 0..50 {
            killed += kill_orphans(&session);
            if killed > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(killed, 1);
        let status = tagged.wait().unwrap();
        assert!(!status.success(), "the tagged process was killed");
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other session's process still runs"
        );
        let _ = other.kill();
        let _ = other.wait();
    }
}
