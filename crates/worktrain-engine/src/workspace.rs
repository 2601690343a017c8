//! What may be a session's workspace: an existing git work tree (the directory holding
//! `.git`, never the `.git` directory itself or anything inside one), named by an absolute
//! path, canonicalised, and not a system directory or worktrain's own home. Every
//! dispatch path (HTTP API, engine dispatch for triggers and coordinators) checks through
//! [`check_workspace`], so an agent is never started in `/`, `/etc` or `/proc/self`.

use std::path::{Component, Path, PathBuf};

use worktrain_core::error::{ApiError, ErrorCode, Retry};

/// Directories that are never a workspace, nor is anything below them.
const SYSTEM_TREES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/run",
    "/var/run",
    "/var/lib/dpkg",
    "/var/cache",
    "/var/log",
    "/var/spool",
];

/// Directories that are never a workspace themselves (a repository below them is fine).
const SYSTEM_ROOTS: &[&str] = &[
    "/", "/home", "/root", "/tmp", "/var", "/var/tmp", "/opt", "/srv", "/mnt", "/media",
];

fn refused(ws: &str, why: impl std::fmt::Display, hint: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        format!("workspace `{ws}` {why}"),
        Retry::AfterFix,
        hint,
    )
}

const GIT_HINT: &str = "pass the absolute path of a git working tree: the directory that contains `.git` (run `git init` there first if it is not a repository yet)";

/// Validate a workspace and return its canonical path. `home` (`$WORKTRAIN_HOME`), when
/// given, may not contain the workspace: that is where keys, tokens and other sessions'
/// worktrees live.
pub fn check_workspace(ws: &str, home: Option<&Path>) -> Result<PathBuf, ApiError> {
    let given = Path::new(ws);
    if ws.is_empty() || !given.is_absolute() {
        return Err(refused(
            ws,
            "is not an absolute path",
            "send the absolute path of the workspace: a git working tree on the daemon's machine",
        ));
    }
    if given.components().any(|c| is_git_dir_name(c)) {
        return Err(refused(
            ws,
            "is a `.git` directory or inside one, not a working tree",
            GIT_HINT,
        ));
    }
    let canon = std::fs::canonicalize(given).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be resolved: {e}"),
        };
        refused(
            ws,
            why,
            "the workspace must be an existing git working tree on the daemon's machine",
        )
    })?;
    let shown = canon.display().to_string();
    let resolved_note = if shown == ws {
        String::new()
    } else {
        format!(" (resolved to `{shown}`)")
    };
    if SYSTEM_ROOTS.iter().any(|r| canon == Path::new(r))
        || SYSTEM_TREES.iter().any(|t| canon.starts_with(t))
    {
        return Err(refused(
            ws,
            format!("is a system directory{resolved_note}; agents never run there"),
            GIT_HINT,
        ));
    }
    if canon.components().any(|c| is_git_dir_name(c)) {
        return Err(refused(
            ws,
            format!("is inside a `.git` directory{resolved_note}, not a working tree"),
            GIT_HINT,
        ));
    }
    if let Some(home) = home {
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        if canon.starts_with(&home) {
            return Err(refused(
                ws,
                format!(
                    "is inside worktrain's home `{}`{resolved_note}, which holds keys, tokens and other sessions' worktrees",
                    home.display()
                ),
                GIT_HINT,
            ));
        }
    }
    if !canon.is_dir() {
        return Err(refused(
            ws,
            format!("is not a directory{resolved_note}"),
            GIT_HINT,
        ));
    }
    if looks_like_git_dir(&canon) {
        return Err(refused(
            ws,
            format!(
                "is a git directory (bare repository or `.git`){resolved_note}, not a working tree"
            ),
            GIT_HINT,
        ));
    }
    if std::fs::symlink_metadata(canon.join(".git")).is_err() {
        return Err(refused(
            ws,
            format!("is not a git working tree (it has no `.git`){resolved_note}"),
            GIT_HINT,
        ));
    }
    Ok(canon)
}

fn is_git_dir_name(c: Component<'_>) -> bool {
    matches!(c, Component::Normal(n) if n.eq_ignore_ascii_case(".git"))
}

/// A git directory (bare repository, or a `.git` reached some other way) has `HEAD`,
/// `objects` and `refs` at its top.
fn looks_like_git_dir(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_message(ws: &str, home: Option<&Path>) -> String {
        match check_workspace(ws, home) {
            Ok(p) => panic!("{ws} accepted as {}", p.display()),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidInput);
                e.message
            }
        }
    }

    #[test]
    fn system_directories_and_git_dirs_are_refused() {
        for ws in [
            "/",
            "/etc",
            "/proc/self",
            "/usr/lib",
            "/dev",
            "/tmp",
            "/root",
        ] {
            let m = code_and_message(ws, None);
            assert!(
                m.contains("system directory") || m.contains("does not exist"),
                "{ws}: {m}"
            );
        }
        assert!(code_and_message("relative/dir", None).contains("absolute"));
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git/objects")).unwrap();
        std::fs::create_dir_all(repo.join(".git/refs")).unwrap();
        std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        let repo_s = repo.display().to_string();
        // The repository itself is fine; its .git, anything inside, `..` tricks are not.
        assert_eq!(
            check_workspace(&repo_s, None).unwrap(),
            std::fs::canonicalize(&repo).unwrap()
        );
        assert!(code_and_message(&format!("{repo_s}/.git"), None).contains(".git"));
        assert!(code_and_message(&format!("{repo_s}/.git/objects"), None).contains(".git"));
        let m = code_and_message(&format!("{repo_s}/../../../../../../../../etc"), None);
        assert!(m.contains("system directory"), "{m}");
        // A symlink to .git is resolved first.
        std::os::unix::fs::symlink(repo.join(".git"), dir.path().join("sneaky")).unwrap();
        let m = code_and_message(&dir.path().join("sneaky").display().to_string(), None);
        assert!(m.contains(".git"), "{m}");
        // A bare repository.
        let bare = dir.path().join("bare");
        std::fs::create_dir_all(bare.join("objects")).unwrap();
        std::fs::create_dir_all(bare.join("refs")).unwrap();
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let m = code_and_message(&bare.display().to_string(), None);
        assert!(m.contains("git directory"), "{m}");
        // Not a repository at all.
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let m = code_and_message(&plain.display().to_string(), None);
        assert!(m.contains("not a git working tree"), "{m}");
        // Missing.
        let m = code_and_message(&dir.path().join("nope").display().to_string(), None);
        assert!(m.contains("does not exist"), "{m}");
        // worktrain's home and anything inside it.
        let m = code_and_message(&repo_s, Some(dir.path()));
        assert!(m.contains("worktrain's home"), "{m}");
    }
}
