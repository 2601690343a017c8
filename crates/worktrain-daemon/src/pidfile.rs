//! `$WORKTRAIN_HOME/daemon.pid`: one daemon per home (and so per SQLite store).
//!
//! The file is held with an exclusive advisory lock (`flock`) for the daemon's lifetime
//! and holds `pid` and the served address, one per line. The lock, not the pid, decides:
//! it is released by the kernel when the process dies however it dies, so a pid file left
//! by a dead daemon is simply taken over, and a recycled pid can never fool the check.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File name inside the home.
pub const PID_FILE: &str = "daemon.pid";

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidLockError {
    /// Another daemon holds it.
    #[error(
        "another worktrain daemon (pid {pid}) is already running on this home ({path}); \
         two daemons must never share one store — stop it first (`kill {pid}`)"
    )]
    Held {
        /// Its pid (as written in the file; `?` when unreadable).
        pid: String,
        /// The pid file.
        path: PathBuf,
    },
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The pid file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the lock and removes the file.
#[derive(Debug)]
pub struct PidLock {
    file: File,
    path: PathBuf,
}

/// What a pid file says about a live daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Process id of the daemon that holds the lock.
    pub pid: u32,
    /// The address it serves, once known.
    pub addr: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PidLockError + '_ {
    move |source| PidLockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl PidLock {
    /// Take the lock in `home`, replacing a stale file.
    pub fn acquire(home: &Path) -> Result<Self, PidLockError> {
        let path = home.join(PID_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text
                    .lines()
                    .next()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .unwrap_or("?")
                    .to_owned();
                return Err(PidLockError::Held { pid, path });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let mut lock = Self { file, path };
        lock.write(None)?;
        Ok(lock)
    }

    /// Record the served address next to the pid.
    pub fn set_addr(&mut self, addr: &str) -> Result<(), PidLockError> {
        self.write(Some(addr))
    }

    fn write(&mut self, addr: Option<&str>) -> Result<(), PidLockError> {
        let text = match addr {
            Some(a) => format!("{}\n{a}\n", std::process::id()),
            None => format!("{}\n", std::process::id()),
        };
        let path = self.path.clone();
        self.file.set_len(0).map_err(io(&path))?;
        self.file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        self.file.write_all(text.as_bytes()).map_err(io(&path))?;
        self.file.sync_all().map_err(io(&path))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The daemon running on `home`, if one holds the lock.
pub fn running_daemon(home: &Path) -> Option<DaemonInfo> {
    let path = home.join(PID_FILE);
    let file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            // Nobody holds it: a stale file.
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => {
            let text = std::fs::read_to_string(&path).ok()?;
            let mut lines = text.lines();
            let pid = lines.next()?.trim().parse().ok()?;
            let addr = lines
                .next()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty());
            Some(DaemonInfo { pid, addr })
        }
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_stale_files_are_taken_over_and_the_address_is_published() {
        let dir = tempfile::tempdir().unwrap();
        // A file left by a dead daemon (nobody holds its lock) is taken over.
        std::fs::write(dir.path().join(PID_FILE), "999999\n127.0.0.1:1\n").unwrap();
        assert_eq!(
            running_daemon(dir.path()),
            None,
            "a stale file is not a daemon"
        );
        let mut lock = PidLock::acquire(dir.path()).unwrap();
        lock.set_addr("127.0.0.1:7878").unwrap();
        let info = running_daemon(dir.path()).unwrap();
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.addr.as_deref(), Some("127.0.0.1:7878"));
        // A second holder is refused, naming the pid.
        match PidLock::acquire(dir.path()) {
            Err(PidLockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert!(!dir.path().join(PID_FILE).exists());
        assert_eq!(running_daemon(dir.path()), None);
        PidLock::acquire(dir.path()).unwrap();
    }
}
