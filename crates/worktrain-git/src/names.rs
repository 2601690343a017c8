//! Names worktrain gives to things in git: branches, hidden refs, lock reasons, and the
//! small metadata file kept in a worktree's administrative directory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use worktrain_core::ids::SessionId;

use crate::error::{Error, Result};

/// Prefix of every session branch: `worktrain/<session>`.
pub const BRANCH_PREFIX: &str = "worktrain/";
/// Namespace of the hidden snapshot refs: `refs/worktrain/<session>/<node>`.
pub const SNAPSHOT_NAMESPACE: &str = "refs/worktrain/";
/// Namespace of refs that pin what a read-only worktree was fetched at.
pub(crate) const FETCHED_NAMESPACE: &str = "refs/worktrain-fetched/";
/// Label of the automatic snapshot taken just before [`crate::Worktrees::restore`].
/// It starts with `_`, which caller labels may not, so it never collides with a node.
pub const PRE_RESTORE_LABEL: &str = "_pre-restore";
/// Name of the metadata file in a worktree's administrative directory
/// (`<common git dir>/worktrees/<session>/worktrain`).
pub(crate) const META_FILE: &str = "worktrain";

/// Short name of a session's branch: `worktrain/<session>`.
pub fn branch_name(session: SessionId) -> String {
    format!("{BRANCH_PREFIX}{session}")
}

/// Full ref of a session's branch: `refs/heads/worktrain/<session>`.
pub fn branch_ref(session: SessionId) -> String {
    format!("refs/heads/{BRANCH_PREFIX}{session}")
}

/// Temporary branch used while creating a detached worktree (libgit2 can only add a
/// worktree on a branch; it is deleted as soon as the worktree is detached).
pub(crate) fn detach_branch_name(session: SessionId) -> String {
    format!("worktrain-detach/{session}")
}

/// Ref pinning the commit a read-only worktree was created from.
pub(crate) fn fetched_ref(session: SessionId) -> String {
    format!("{FETCHED_NAMESPACE}{session}")
}

/// Prefix of a session's snapshot refs: `refs/worktrain/<session>/`.
pub fn snapshot_prefix(session: SessionId) -> String {
    format!("{SNAPSHOT_NAMESPACE}{session}/")
}

/// Full hidden ref of a step snapshot: `refs/worktrain/<session>/<node_label>`.
/// The label is validated with [`validate_label`].
pub fn snapshot_ref(session: SessionId, node_label: &str) -> Result<String> {
    validate_label(node_label)?;
    Ok(format!("{}{node_label}", snapshot_prefix(session)))
}

pub(crate) fn snapshot_ref_unchecked(session: SessionId, label: &str) -> String {
    format!("{}{label}", snapshot_prefix(session))
}

/// A node label is one ref component: 1–100 characters from `[A-Za-z0-9._-]`, starting
/// with a letter or digit, not ending in `.lock` or `.`, without `..`. (`n3`, `plan.2`.)
pub fn validate_label(label: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::Invalid {
            what: "snapshot label",
            value: label.chars().take(120).collect(),
            reason,
        })
    };
    if label.is_empty() || label.len() > 100 {
        return bad("must be 1 to 100 characters");
    }
    if !label.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("may only contain letters, digits, `.`, `_` and `-`");
    }
    if label.contains("..") || label.ends_with(".lock") || label.ends_with('.') {
        return bad("must not contain `..` or end in `.lock` or `.`");
    }
    Ok(())
}

/// Validate a short branch name (e.g. `main`, `feature/x`); a leading `refs/heads/` is
/// stripped. Returns the short name.
pub(crate) fn short_branch(name: &str) -> Result<&str> {
    let short = name.strip_prefix("refs/heads/").unwrap_or(name);
    let valid = !short.is_empty()
        && !short.starts_with('-')
        && git2::Reference::is_valid_name(&format!("refs/heads/{short}"));
    if valid {
        Ok(short)
    } else {
        Err(Error::Invalid {
            what: "branch name",
            value: name.chars().take(200).collect(),
            reason: "not a valid git branch name",
        })
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The lock reason of a worktree in use: `worktrain: in use by session <id>`.
pub(crate) fn in_use_reason(session: SessionId) -> String {
    format!("worktrain: in use by session {session}")
}

/// The lock reason of a worktree kept for inspection; the expiry is machine-readable
/// (`expires <unix seconds>`) and human-readable (RFC 3339).
pub(crate) fn kept_reason(session: SessionId, until: SystemTime) -> String {
    format!(
        "worktrain: kept for inspection after session {session} failed; expires {} ({})",
        unix_secs(until),
        humantime::format_rfc3339_seconds(until)
    )
}

/// Who holds a worktree, as read from its git lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Not locked: no session owns it (e.g. a crash between unlock and removal, or
    /// someone ran `git worktree unlock`).
    Unlocked,
    /// Locked by worktrain for a running session.
    InUse,
    /// Locked by worktrain, kept for inspection after a failure until the given time.
    Kept {
        /// When the keep expires and the reaper may remove it.
        until: SystemTime,
    },
    /// Locked by someone else (a human's `git worktree lock`); never touched.
    Foreign {
        /// The lock reason, possibly empty.
        reason: String,
    },
}

impl LockState {
    pub(crate) fn from_status(status: &git2::WorktreeLockStatus) -> Self {
        match status {
            git2::WorktreeLockStatus::Unlocked => LockState::Unlocked,
            git2::WorktreeLockStatus::Locked(reason) => {
                Self::from_reason(reason.as_deref().unwrap_or(""))
            }
        }
    }

    pub(crate) fn from_reason(reason: &str) -> Self {
        let reason = reason.trim();
        if reason.starts_with("worktrain: in use") {
            return LockState::InUse;
        }
        if reason.starts_with("worktrain: kept") {
            let until = reason
                .split_once("expires ")
                .map(|(_, rest)| rest)
                .and_then(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u64>().ok()
                });
            if let Some(secs) = until {
                return LockState::Kept {
                    until: from_unix_secs(secs),
                };
            }
        }
        LockState::Foreign {
            reason: reason.to_owned(),
        }
    }
}

/// How a worktree was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the session branch `worktrain/<session>`.
    Branch,
    /// Detached at a commit (read-only sessions such as reviews).
    Detached,
}

/// The metadata worktrain keeps beside git's own files in the administrative directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub base: Option<String>,
    pub created: Option<SystemTime>,
    pub mode: Mode,
}

impl Meta {
    pub(crate) fn render(&self, session: SessionId) -> String {
        let mut s = format!("session={session}\n");
        if let Some(base) = &self.base {
            s.push_str(&format!("base={base}\n"));
        }
        if let Some(created) = self.created {
            s.push_str(&format!("created={}\n", unix_secs(created)));
        }
        let mode = match self.mode {
            Mode::Branch => "branch",
            Mode::Detached => "detached",
        };
        s.push_str(&format!("mode={mode}\n"));
        s
    }

    pub(crate) fn parse(text: &str) -> Self {
        let mut meta = Meta {
            base: None,
            created: None,
            mode: Mode::Branch,
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("base", v)) if !v.is_empty() => meta.base = Some(v.to_owned()),
                Some(("created", v)) => meta.created = v.parse().ok().map(from_unix_secs),
                Some(("mode", "detached")) => meta.mode = Mode::Detached,
                _ => {}
            }
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> SessionId {
        SessionId::from_parts(1_700_000_000_000, 7)
    }

    #[test]
    fn labels() {
        for ok in ["n1", "n12", "plan.2", "A-b_c", "7"] {
            assert!(validate_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_pre-restore",
            ".x",
            "a/b",
            "a..b",
            "x.lock",
            "x.",
            "a b",
            "ü",
            "-a",
        ] {
            assert!(validate_label(bad).is_err(), "{bad}");
        }
        assert!(validate_label(&"a".repeat(101)).is_err());
    }

    #[test]
    fn lock_reasons_round_trip() {
        assert_eq!(
            LockState::from_reason(&in_use_reason(sid())),
            LockState::InUse
        );
        let until = from_unix_secs(1_800_000_000);
        assert_eq!(
            LockState::from_reason(&kept_reason(sid(), until)),
            LockState::Kept { until }
        );
        assert_eq!(
            LockState::from_reason("mine"),
            LockState::Foreign {
                reason: "mine".into()
            }
        );
        assert!(matches!(
            LockState::from_reason("worktrain: kept but garbled"),
            LockState::Foreign { .. }
        ));
    }

    #[test]
    fn meta_round_trip() {
        let meta = Meta {
            base: Some("refs/remotes/origin/main".into()),
            created: Some(from_unix_secs(1_700_000_000)),
            mode: Mode::Detached,
        };
        assert_eq!(Meta::parse(&meta.render(sid())), meta);
    }

    #[test]
    fn branch_names() {
        assert_eq!(short_branch("main").ok(), Some("main"));
        assert_eq!(short_branch("refs/heads/feat/x").ok(), Some("feat/x"));
        assert!(short_branch("bad..name").is_err());
        assert!(short_branch("-x").is_err());
        assert!(short_branch("").is_err());
        assert_eq!(branch_ref(sid()), format!("refs/heads/worktrain/{}", sid()));
    }
}
