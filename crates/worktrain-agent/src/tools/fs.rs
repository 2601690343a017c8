//! `read_file`, `write_file`, `edit_file`, `list_files`, `search_files` — synchronous,
//! run on a blocking thread, every path through the [`PathGuard`].

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{ToolConfig, ToolOutput, parse_args, rel_display};
use crate::events::ToolErrorKind;
use crate::guard::PathGuard;

/// Directories never walked by list (recursive) and search.
const SKIP_DIRS: [&str; 3] = [".git", "node_modules", "target"];
/// Upper bound of files visited by one search.
const MAX_FILES_VISITED: usize = 50_000;
/// Characters of a matching line shown.
const MAX_LINE_CHARS: usize = 300;

pub(super) fn run(
    name: &str,
    input: &Value,
    guard: &dyn PathGuard,
    cfg: &ToolConfig,
) -> ToolOutput {
    let r = match name {
        "read_file" => read(input, guard, cfg),
        "write_file" => write(input, guard),
        "edit_file" => edit(input, guard),
        "list_files" => list(input, guard, cfg),
        "search_files" => search(input, guard, cfg),
        other => Err(ToolOutput::err(
            ToolErrorKind::UnknownTool,
            format!("unknown file tool {other}"),
        )),
    };
    r.unwrap_or_else(|e| e)
}

fn denied(e: crate::guard::PathDenied) -> ToolOutput {
    ToolOutput::err(ToolErrorKind::Denied, e.to_string())
}

/// Refuse a regular file with more than one link: a hard link made to a file outside the
/// worktree would let a write (or a read) reach that file, and the path check cannot tell.
fn refuse_hard_link(real: &Path, rel: &str) -> Result<(), ToolOutput> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(real) {
        Ok(m) if m.is_file() && m.nlink() > 1 => Err(ToolOutput::err(
            ToolErrorKind::Denied,
            format!(
                "access denied: {rel} is a hard link ({} links); file tools do not follow hard links, which may lead outside the worktree",
                m.nlink()
            ),
        )),
        Ok(_) | Err(_) => Ok(()),
    }
}

fn io_err(what: &str, rel: &str, e: std::io::Error) -> ToolOutput {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ToolErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ToolErrorKind::Denied,
        _ => ToolErrorKind::Io,
    };
    ToolOutput::err(kind, format!("{what} {rel}: {e}"))
}

/// Read a resolved file through the guard (opened beneath the worktree).
fn read_all(guard: &dyn PathGuard, real: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    guard.open_read(real)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Replace a resolved file's content through the guard (opened beneath the worktree).
fn write_all(guard: &dyn PathGuard, real: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = guard.open_write(real)?;
    f.write_all(bytes)?;
    f.flush()
}

fn is_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8192).any(|b| *b == 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

fn read(input: &Value, guard: &dyn PathGuard, cfg: &ToolConfig) -> Result<ToolOutput, ToolOutput> {
    let a: ReadArgs = parse_args("read_file", input)?;
    let real = guard.resolve_read(Path::new(&a.path)).map_err(denied)?;
    let rel = rel_display(guard.root(), &real);
    if real.is_dir() {
        return Err(ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!("{rel} is a directory; use list_files"),
        ));
    }
    refuse_hard_link(&real, &rel)?;
    let bytes = read_all(guard, &real).map_err(|e| io_err("cannot read", &rel, e))?;
    if is_binary(&bytes) {
        return Err(ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!("{rel} is a binary file ({} bytes)", bytes.len()),
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    let selected: String = if a.offset.is_some() || a.limit.is_some() {
        let start = a.offset.unwrap_or(1).max(1) - 1;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let end = a
            .limit
            .map_or(lines.len(), |l| (start + l).min(lines.len()));
        if start >= lines.len() {
            return Ok(ToolOutput::ok(format!(
                "({rel} has {} lines; nothing at line {})",
                lines.len(),
                start + 1
            )));
        }
        lines[start..end].concat()
    } else {
        text.into_owned()
    };
    if selected.len() > cfg.read_cap {
        let mut cut = cfg.read_cap;
        while !selected.is_char_boundary(cut) {
            cut -= 1;
        }
        return Ok(ToolOutput::ok(format!(
            "{}\n[... truncated: {} of {} bytes shown; read the rest with offset/limit]",
            &selected[..cut],
            cut,
            selected.len()
        )));
    }
    Ok(ToolOutput::ok(selected))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

fn write(input: &Value, guard: &dyn PathGuard) -> Result<ToolOutput, ToolOutput> {
    let a: WriteArgs = parse_args("write_file", input)?;
    let real = guard.resolve_write(Path::new(&a.path)).map_err(denied)?;
    let rel = rel_display(guard.root(), &real);
    if real.is_dir() {
        return Err(ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!("{rel} is a directory"),
        ));
    }
    refuse_hard_link(&real, &rel)?;
    if let Some(parent) = real.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_err("cannot create directory for", &rel, e))?;
    }
    write_all(guard, &real, a.content.as_bytes()).map_err(|e| io_err("cannot write", &rel, e))?;
    Ok(ToolOutput::ok(format!(
        "wrote {} bytes to {rel}",
        a.content.len()
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
}

fn edit(input: &Value, guard: &dyn PathGuard) -> Result<ToolOutput, ToolOutput> {
    let a: EditArgs = parse_args("edit_file", input)?;
    if a.old_string.is_empty() {
        return Err(ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            "edit_file: old_string must not be empty (use write_file to create a file)",
        ));
    }
    let real = guard.resolve_write(Path::new(&a.path)).map_err(denied)?;
    let rel = rel_display(guard.root(), &real);
    refuse_hard_link(&real, &rel)?;
    let bytes = read_all(guard, &real).map_err(|e| io_err("cannot read", &rel, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ToolOutput::err(
            ToolErrorKind::InvalidArguments,
            format!("edit_file: {rel} is not UTF-8 text"),
        )
    })?;
    let n = text.matches(a.old_string.as_str()).count();
    match n {
        0 => Err(ToolOutput::err(
            ToolErrorKind::NotFound,
            format!(
                "edit_file: old_string was not found in {rel} (it must match exactly, including whitespace)"
            ),
        )),
        1 => {
            let new = text.replacen(a.old_string.as_str(), &a.new_string, 1);
            write_all(guard, &real, new.as_bytes()).map_err(|e| io_err("cannot write", &rel, e))?;
            Ok(ToolOutput::ok(format!(
                "edited {rel}: replaced 1 occurrence"
            )))
        }
        n => Err(ToolOutput::err(
            ToolErrorKind::Ambiguous,
            format!(
                "edit_file: old_string matches {n} times in {rel}; include more surrounding text so it matches exactly once"
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    recursive: bool,
}

fn list(input: &Value, guard: &dyn PathGuard, cfg: &ToolConfig) -> Result<ToolOutput, ToolOutput> {
    let a: ListArgs = parse_args("list_files", input)?;
    let start = guard
        .resolve_read(Path::new(a.path.as_deref().unwrap_or("")))
        .map_err(denied)?;
    let rel = rel_display(guard.root(), &start);
    if !start.is_dir() {
        return Err(ToolOutput::err(
            ToolErrorKind::NotFound,
            format!("{rel} is not a directory"),
        ));
    }
    let mut out = Vec::new();
    let mut truncated = false;
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io_err("cannot list", &rel_display(guard.root(), &dir), e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let shown = rel_display(guard.root(), &e.path());
            if out.len() >= cfg.list_cap {
                truncated = true;
                break;
            }
            if ft.is_symlink() {
                out.push(format!("{shown}@"));
            } else if ft.is_dir() {
                out.push(format!("{shown}/"));
                if a.recursive && !SKIP_DIRS.contains(&name.as_str()) {
                    subdirs.push(e.path());
                }
            } else {
                out.push(shown);
            }
        }
        if truncated {
            break;
        }
        // Depth-first in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    if out.is_empty() {
        return Ok(ToolOutput::ok(format!("({rel} is empty)")));
    }
    let mut text = out.join("\n");
    if truncated {
        text.push_str(&format!(
            "\n[... truncated at {} entries; list a subdirectory]",
            cfg.list_cap
        ));
    }
    Ok(ToolOutput::ok(text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default)]
    max_results: Option<usize>,
}

fn search(
    input: &Value,
    guard: &dyn PathGuard,
    cfg: &ToolConfig,
) -> Result<ToolOutput, ToolOutput> {
    let a: SearchArgs = parse_args("search_files", input)?;
    let re = regex::RegexBuilder::new(&a.pattern)
        .case_insensitive(a.case_insensitive)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            ToolOutput::err(
                ToolErrorKind::InvalidArguments,
                format!("search_files: invalid regex: {e}"),
            )
        })?;
    let start = guard
        .resolve_read(Path::new(a.path.as_deref().unwrap_or("")))
        .map_err(denied)?;
    let max = a
        .max_results
        .unwrap_or(cfg.search_max_results)
        .clamp(1, cfg.search_max_results.max(1));
    let mut hits: Vec<String> = Vec::new();
    let mut visited = 0usize;
    let mut truncated = false;
    let mut files: Vec<PathBuf> = Vec::new();
    if start.is_file() {
        files.push(start.clone());
    }
    let mut stack = if start.is_dir() {
        vec![start]
    } else {
        Vec::new()
    };
    'walk: loop {
        while let Some(f) = files.pop() {
            visited += 1;
            if visited > MAX_FILES_VISITED {
                truncated = true;
                break 'walk;
            }
            search_file(&f, &re, guard.root(), cfg, max, &mut hits);
            if hits.len() >= max {
                truncated = true;
                break 'walk;
            }
        }
        let Some(dir) = stack.pop() else { break };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(e.path());
                }
            } else if ft.is_file() {
                files.push(e.path());
            }
            // Symlinks are skipped: they may point outside the worktree.
        }
    }
    if hits.is_empty() {
        return Ok(ToolOutput::ok(format!("no matches for /{}/", a.pattern)));
    }
    let mut text = hits.join("\n");
    if truncated {
        text.push_str(&format!(
            "\n[... stopped after {} matches; narrow the pattern or path]",
            hits.len()
        ));
    }
    Ok(ToolOutput::ok(text))
}

fn search_file(
    path: &Path,
    re: &regex::Regex,
    root: &Path,
    cfg: &ToolConfig,
    max: usize,
    hits: &mut Vec<String>,
) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.len() > cfg.search_max_file_bytes {
        return;
    }
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    let mut head = Vec::with_capacity(1024);
    let mut reader = BufReader::new(f);
    if reader.by_ref().take(8192).read_to_end(&mut head).is_err() || is_binary(&head) {
        return;
    }
    let rel = rel_display(root, path);
    let mut all = head;
    if reader.read_to_end(&mut all).is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&all);
    for (i, line) in text.lines().enumerate() {
        if re.is_match(line) {
            hits.push(format!(
                "{rel}:{}: {}",
                i + 1,
                crate::redact::truncate_chars(line.trim_end(), MAX_LINE_CHARS)
            ));
            if hits.len() >= max {
                return;
            }
        }
    }
}
