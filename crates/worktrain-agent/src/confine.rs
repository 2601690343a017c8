//! Confinement of agent file tools to a worktree.
//!
//! [`Confined::resolve`] turns a path given by an agent (relative to the worktree, or
//! absolute) into the real path to operate on, or refuses it. Rules:
//!
//! - `..` is applied lexically first; going above the worktree root is an escape.
//! - An absolute path must lie inside the worktree.
//! - Every existing component is resolved through symlinks (the longest existing prefix
//!   is canonicalized); a symlink that leads outside the worktree is an escape, and so is
//!   a dangling symlink (writing through it would create its target, wherever it is).
//! - No component may be `.git` (case-insensitively, also `.git` followed by dots or
//!   spaces and the NTFS short name `git~1`), neither in the path as given nor after
//!   symlinks are resolved. In a worktree `.git` is a *file* pointing at the repository's
//!   administrative directory, so a write there could redirect git or reach other
//!   sessions' data; reads are refused as well (the config may hold credentials).
//!
//! The returned path has no `..` and no symlinks in its existing part, so the caller
//! should operate on exactly that path — and open it with [`Confined::open_read`] /
//! [`Confined::open_write`], which have the kernel resolve it again beneath the root
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`): a process racing the agent
//! (its own shell) that swaps a directory for a symlink between the check and the open
//! gets the open refused instead of redirected.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A path the agent may not use, and why.
#[derive(Debug, thiserror::Error)]
pub enum Escape {
    /// `..` leads above the worktree root.
    #[error("`{}` leads outside the worktree through `..`", path.display())]
    DotDot {
        /// The path as given.
        path: PathBuf,
    },
    /// An absolute path outside the worktree.
    #[error("`{}` is outside the worktree", path.display())]
    Outside {
        /// The path as given.
        path: PathBuf,
    },
    /// A symlink resolves to a place outside the worktree.
    #[error("`{}` resolves through a symlink to `{}`, outside the worktree", path.display(), target.display())]
    Symlink {
        /// The path as given.
        path: PathBuf,
        /// Where the symlink leads.
        target: PathBuf,
    },
    /// A symlink whose target does not exist.
    #[error("`{}` goes through the dangling symlink `{}`", path.display(), link.display())]
    DanglingSymlink {
        /// The path as given.
        path: PathBuf,
        /// The dangling link.
        link: PathBuf,
    },
    /// The path is, or is inside, a `.git` entry.
    #[error("`{}` is inside `.git`, which agent tools may not touch", path.display())]
    GitDir {
        /// The path as given.
        path: PathBuf,
    },
    /// The path is not usable at all (empty component tricks, NUL byte).
    #[error("`{}` is not a usable path: {reason}", path.display())]
    Invalid {
        /// The path as given.
        path: PathBuf,
        /// Why the path is not usable.
        reason: &'static str,
    },
    /// The file system could not be inspected.
    #[error("cannot inspect `{}`: {source}", path.display())]
    Io {
        /// The path being inspected.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A worktree root that agent file paths are confined to.
#[derive(Debug, Clone)]
pub struct Confined {
    /// The root with symlinks resolved: every path is checked against it.
    root: PathBuf,
    /// The root as given (made absolute), so absolute paths written that way match too.
    given_root: PathBuf,
    /// The root, opened once: files are opened relative to it with `RESOLVE_BENEATH`.
    dir: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl Confined {
    /// Confine to `worktree_root`, which must exist; it is canonicalized once here.
    pub fn new(worktree_root: impl AsRef<Path>) -> Result<Self, Escape> {
        let given = worktree_root.as_ref();
        let root = fs::canonicalize(given).map_err(|source| Escape::Io {
            path: given.to_path_buf(),
            source,
        })?;
        let given_root = std::path::absolute(given)
            .map(|p| normalize_absolute(&p))
            .unwrap_or_else(|_| root.clone());
        let dir = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Escape::Io {
            path: root.clone(),
            source: e.into(),
        })?;
        Ok(Self {
            root,
            given_root,
            dir: std::sync::Arc::new(dir),
        })
    }

    /// The canonical worktree root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve `path` (relative to the root, or absolute) to the real path to operate
    /// on, or say why it escapes. See the module docs for the rules.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<PathBuf, Escape> {
        let given = path.as_ref();
        if given.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(Escape::Invalid {
                path: given.to_path_buf(),
                reason: "contains a NUL byte",
            });
        }
        if given.components().any(|c| is_git_component(c.as_os_str())) {
            return Err(Escape::GitDir {
                path: given.to_path_buf(),
            });
        }
        let relative = self.lexical_relative(given)?;

        // Walk the components, resolving symlinks of everything that exists.
        let mut current = self.root.clone();
        let mut rest = relative.iter();
        for component in rest.by_ref() {
            let candidate = current.join(component);
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = match fs::canonicalize(&candidate) {
                        Ok(t) => t,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(Escape::DanglingSymlink {
                                path: given.to_path_buf(),
                                link: candidate,
                            });
                        }
                        Err(source) => {
                            return Err(Escape::Io {
                                path: candidate,
                                source,
                            });
                        }
                    };
                    if !target.starts_with(&self.root) {
                        return Err(Escape::Symlink {
                            path: given.to_path_buf(),
                            target,
                        });
                    }
                    current = target;
                }
                Ok(_) => current = candidate,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Nothing below here exists, so nothing below can be a symlink.
                    current = candidate;
                    break;
                }
                Err(source) => {
                    return Err(Escape::Io {
                        path: candidate,
                        source,
                    });
                }
            }
        }
        let resolved = rest.fold(current, |acc, c| acc.join(c));
        // After symlinks: still inside, and not inside `.git` either.
        let inside = resolved
            .strip_prefix(&self.root)
            .map_err(|_| Escape::Symlink {
                path: given.to_path_buf(),
                target: resolved.clone(),
            })?;
        if inside.components().any(|c| is_git_component(c.as_os_str())) {
            return Err(Escape::GitDir {
                path: given.to_path_buf(),
            });
        }
        Ok(resolved)
    }

    /// The path relative to the root with `.` and `..` applied lexically.
    fn lexical_relative(&self, given: &Path) -> Result<PathBuf, Escape> {
        let absolute;
        let relative: &Path = if given.is_absolute() {
            // An absolute path may spell the root canonically or as it was given.
            absolute = normalize_absolute(given);
            absolute
                .strip_prefix(&self.root)
                .or_else(|_| absolute.strip_prefix(&self.given_root))
                .map_err(|_| Escape::Outside {
                    path: given.to_path_buf(),
                })?
        } else {
            given
        };
        let mut parts: Vec<&OsStr> = Vec::new();
        for component in relative.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(Escape::DotDot {
                            path: given.to_path_buf(),
                        });
                    }
                }
                Component::Normal(part) => parts.push(part),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Escape::Outside {
                        path: given.to_path_buf(),
                    });
                }
            }
        }
        Ok(parts.iter().collect())
    }
}

/// Apply `.` and `..` lexically to an absolute path (`..` at the top stays at the top).
fn normalize_absolute(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether a path component names a git directory: `.git` in any case, `.git` followed
/// only by dots or spaces (ignored by Windows file systems), or the NTFS short name
/// `git~1`.
fn is_git_component(component: &OsStr) -> bool {
    let Some(s) = component.to_str() else {
        return false;
    };
    let lower = s.to_ascii_lowercase();
    if lower == "git~1" {
        return true;
    }
    match lower.strip_prefix(".git") {
        Some(tail) => tail.chars().all(|c| c == '.' || c == ' '),
        None => false,
    }
}

/// `openat2` resolution: never above the directory, never through `/proc` magic links.
fn beneath_flags() -> rustix::fs::ResolveFlags {
    rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_MAGICLINKS
}

impl Confined {
    /// The path of `resolved` relative to the root (`.` for the root itself).
    fn relative<'a>(&self, resolved: &'a Path) -> io::Result<&'a Path> {
        let rel = resolved.strip_prefix(&self.root).map_err(|_| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is outside the worktree", resolved.display()),
            )
        })?;
        Ok(if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        })
    }

    fn open_beneath(
        &self,
        resolved: &Path,
        flags: rustix::fs::OFlags,
        mode: rustix::fs::Mode,
    ) -> io::Result<fs::File> {
        let rel = self.relative(resolved)?;
        let flags = flags | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOCTTY;
        match rustix::fs::openat2(&*self.dir, rel, flags, mode, beneath_flags()) {
            Ok(fd) => Ok(fs::File::from(fd)),
            // Kernels before 5.6 have no openat2: the path check above is all there is.
            Err(rustix::io::Errno::NOSYS) => {
                let mut o = fs::OpenOptions::new();
                use std::os::unix::fs::OpenOptionsExt;
                o.custom_flags(
                    (flags & !(rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::WRONLY)).bits()
                        as i32,
                );
                o.mode(mode.bits())
                    .read(!flags.contains(rustix::fs::OFlags::WRONLY))
                    .write(flags.contains(rustix::fs::OFlags::WRONLY));
                o.open(resolved)
            }
            Err(rustix::io::Errno::XDEV) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} resolves outside the worktree (it changed since it was checked)",
                    resolved.display()
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a path returned by [`Confined::resolve`] for reading; the kernel resolves it
    /// beneath the root again, so a symlink swapped in since the check cannot lead out.
    pub fn open_read(&self, resolved: &Path) -> io::Result<fs::File> {
        self.open_beneath(
            resolved,
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
    }

    /// Open (create or truncate) a path returned by [`Confined::resolve`] for writing,
    /// beneath the root like [`Confined::open_read`].
    pub fn open_write(&self, resolved: &Path) -> io::Result<fs::File> {
        self.open_beneath(
            resolved,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::TRUNC,
            rustix::fs::Mode::from_bits_truncate(0o644),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::is_git_component;
    use std::ffi::OsStr;

    #[test]
    fn git_components() {
        for yes in [
            ".git", ".GIT", ".Git", ".git.", ".git ", ".git. .", "git~1", "GIT~1",
        ] {
            assert!(is_git_component(OsStr::new(yes)), "{yes:?}");
        }
        for no in [
            ".gitignore",
            ".github",
            "git",
            ".gitmodules",
            "x.git",
            ".git2",
        ] {
            assert!(!is_git_component(OsStr::new(no)), "{no:?}");
        }
    }
}
