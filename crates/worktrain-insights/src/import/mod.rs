//! Importers: files and directories of agent transcripts → [`Trace`]s.
//!
//! Formats are detected from the content (and the file name for trajectories). Files are
//! streamed: JSONL line by line with a cap on the line length, trajectory documents one
//! message at a time, so memory does not grow with the file. A line that cannot be read
//! is counted and reported with its file and line number; it never stops the import.

mod builder;
mod claude;
mod codex;
mod swe;
/// worktrain sessions, from the event store.
pub mod worktrain;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

pub use builder::{CallResult, NewCall, TraceBuilder};

use crate::model::{Source, Trace};

/// The transcript formats that can be imported from files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Claude Code session transcript (JSONL).
    ClaudeCode,
    /// Codex CLI rollout (JSONL).
    Codex,
    /// `codex exec --json` events (JSONL).
    CodexExec,
    /// mini-SWE-agent trajectory (JSON document with `messages`).
    MiniSweAgent,
    /// SWE-agent trajectory (JSON document with `trajectory`).
    SweAgent,
}

impl Format {
    /// The trace source this format produces.
    pub fn source(self) -> Source {
        match self {
            Format::ClaudeCode => Source::ClaudeCode,
            Format::Codex => Source::Codex,
            Format::CodexExec => Source::CodexExec,
            Format::MiniSweAgent => Source::MiniSweAgent,
            Format::SweAgent => Source::SweAgent,
        }
    }

    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        self.source().as_str()
    }

    /// Parse a wire name (`--format`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "claude_code" | "claude-code" | "claude" => Some(Format::ClaudeCode),
            "codex" => Some(Format::Codex),
            "codex_exec" | "codex-exec" => Some(Format::CodexExec),
            "mini_swe_agent" | "mini-swe-agent" => Some(Format::MiniSweAgent),
            "swe_agent" | "swe-agent" => Some(Format::SweAgent),
            _ => None,
        }
    }
}

/// Import settings.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Longer lines are skipped (reported as malformed) without being held in memory.
    pub max_line_bytes: usize,
    /// Turns kept per trace; later turns are counted only.
    pub max_turns: usize,
    /// Malformed lines listed per file (all are counted).
    pub max_reported: usize,
    /// Attribute the imported traces to this workflow.
    pub workflow: Option<String>,
    /// Attribute every turn of the imported traces to this step of that workflow (so
    /// their recurring patterns can become proposals for the step).
    pub step: Option<String>,
    /// Skip detection and read every file as this format.
    pub format: Option<Format>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 * 1024 * 1024,
            max_turns: 20_000,
            max_reported: 50,
            workflow: None,
            step: None,
            format: None,
        }
    }
}

/// A line (or record) that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// File.
    pub file: String,
    /// 1-based line number (for trajectory documents: the line where the bad record starts,
    /// or 1).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// What one file produced.
#[derive(Debug, Clone, Serialize)]
pub struct FileImport {
    /// The file.
    pub file: String,
    /// Its format.
    pub format: Format,
    /// Bytes read.
    pub bytes: u64,
    /// Lines (JSONL) or messages (trajectories) read.
    pub records: u64,
    /// Malformed records, all counted.
    pub malformed_count: u64,
    /// The first malformed records, with file and line.
    pub malformed: Vec<Malformed>,
    /// The traces.
    #[serde(skip)]
    pub traces: Vec<Trace>,
}

/// A file that could not be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The file.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// Import failures that stop one file (never the whole import).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The format could not be recognised.
    #[error(
        "{file}: not a recognised transcript (Claude Code or Codex JSONL, or a SWE-agent / mini-SWE-agent .traj.json); pass --format to force one"
    )]
    UnknownFormat {
        /// File.
        file: String,
    },
    /// The whole document is unreadable (trajectories).
    #[error("{file}:{line}: {reason}")]
    Document {
        /// File.
        file: String,
        /// Line.
        line: u64,
        /// Why.
        reason: String,
    },
}

/// Expand paths: files as given, directories walked recursively for `*.jsonl`, `*.traj`
/// and `*.traj.json` (sorted, so imports are deterministic). Hidden directories other
/// than the ones agents use (`.claude`, `.codex`) are skipped.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| ImportError::Io {
            file: p.display().to_string(),
            source: e,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let io = |e| ImportError::Io {
        file: dir.display().to_string(),
        source: e,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name.starts_with('.') && name != ".claude" && name != ".codex" {
                continue;
            }
            walk(&p, out)?;
        } else if name.ends_with(".jsonl")
            || name.ends_with(".traj")
            || name.ends_with(".traj.json")
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Detect a file's format from its name and first records.
pub fn detect_format(path: &Path, opts: &ImportOptions) -> Result<Format, ImportError> {
    if let Some(f) = opts.format {
        return Ok(f);
    }
    let file = path.display().to_string();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut head = Vec::with_capacity(64 * 1024);
    File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| ImportError::Io {
            file: file.clone(),
            source: e,
        })?;
    let text = String::from_utf8_lossy(&head);
    let trimmed = text.trim_start();
    if name.ends_with(".traj") || name.ends_with(".traj.json") {
        // The parser settles mini-SWE-agent (`messages`) vs SWE-agent (`trajectory`) by
        // the keys it meets; the head may be all configuration.
        return Ok(
            if trimmed.contains("\"trajectory\"") && !trimmed.contains("\"messages\"") {
                Format::SweAgent
            } else {
                Format::MiniSweAgent
            },
        );
    }
    for line in text.lines().take(50) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "session_meta" | "response_item" | "event_msg" | "turn_context" | "compacted" => {
                return Ok(Format::Codex);
            }
            t if t.starts_with("thread.") || t.starts_with("turn.") || t.starts_with("item.") => {
                return Ok(Format::CodexExec);
            }
            "user"
            | "assistant"
            | "summary"
            | "system"
            | "queue-operation"
            | "file-history-snapshot"
            | "last-prompt" => return Ok(Format::ClaudeCode),
            _ => {}
        }
        if v.get("sessionId").is_some() || v.get("parentUuid").is_some() {
            return Ok(Format::ClaudeCode);
        }
    }
    if trimmed.starts_with('{')
        && (trimmed.contains("\"trajectory\"") || trimmed.contains("\"history\""))
    {
        return Ok(Format::SweAgent);
    }
    Err(ImportError::UnknownFormat { file })
}

/// Where a JSONL parser reports malformed records.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    file: &'a str,
    max: usize,
    pub(crate) count: u64,
    pub(crate) list: Vec<Malformed>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, max: usize) -> Self {
        Self {
            file,
            max,
            count: 0,
            list: Vec::new(),
        }
    }

    pub(crate) fn bad(&mut self, line: u64, reason: impl Into<String>) {
        self.count += 1;
        if self.list.len() < self.max {
            self.list.push(Malformed {
                file: self.file.to_owned(),
                line,
                reason: reason.into(),
            });
        }
    }
}

/// A JSONL format's state machine.
pub(crate) trait LineParser {
    /// One record. An `Err` marks the line malformed (with the reason).
    fn record(&mut self, v: Value, line: u64) -> Result<(), String>;
    /// The traces read.
    fn finish(self: Box<Self>) -> Vec<Trace>;
}

/// Reads lines of at most `max` bytes; longer lines are skipped without being buffered.
struct CappedLines<R> {
    inner: R,
    max: usize,
    bytes: u64,
}

enum Line {
    Ok,
    TooLong(u64),
    Eof,
}

impl<R: BufRead> CappedLines<R> {
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Line> {
        buf.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if len == 0 {
                    return Ok(Line::Eof);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let part = if done { &chunk[..take - 1] } else { chunk };
            len += take as u64;
            if !too_long {
                if buf.len() + part.len() > self.max {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(part);
                }
            }
            self.inner.consume(take);
            self.bytes += take as u64;
            if done {
                break;
            }
        }
        if too_long {
            Ok(Line::TooLong(len))
        } else {
            Ok(Line::Ok)
        }
    }
}

/// Import one file.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<FileImport, ImportError> {
    let format = detect_format(path, opts)?;
    let file = path.display().to_string();
    let f = File::open(path).map_err(|e| ImportError::Io {
        file: file.clone(),
        source: e,
    })?;
    let reader = BufReader::with_capacity(256 * 1024, f);
    let mut out = match format {
        Format::MiniSweAgent | Format::SweAgent => swe::import(reader, &file, format, opts)?,
        Format::ClaudeCode | Format::Codex | Format::CodexExec => {
            import_jsonl(reader, &file, format, opts)?
        }
    };
    for t in &mut out.traces {
        t.origin = Some(file.clone());
        if t.workflow.is_none() {
            t.workflow.clone_from(&opts.workflow);
        }
        if let Some(step) = &opts.step
            && t.steps.is_empty()
        {
            t.steps.push(crate::model::StepVisit {
                step: step.clone(),
                node: 0,
                entered_seq: 0,
                blocked: 0,
                completed: false,
                notes_chars: 0,
                artifacts: 0,
            });
            for turn in &mut t.turns {
                turn.step = Some(0);
            }
        }
    }
    Ok(out)
}

fn import_jsonl<R: BufRead>(
    reader: R,
    file: &str,
    format: Format,
    opts: &ImportOptions,
) -> Result<FileImport, ImportError> {
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("trace")
        .to_owned();
    let mut parser: Box<dyn LineParser> = match format {
        Format::ClaudeCode => Box::new(claude::Parser::new(stem, opts.max_turns)),
        Format::Codex => Box::new(codex::Rollout::new(stem, opts.max_turns)),
        Format::CodexExec => Box::new(codex::Exec::new(stem, opts.max_turns)),
        Format::MiniSweAgent | Format::SweAgent => {
            return Err(ImportError::UnknownFormat {
                file: file.to_owned(),
            });
        }
    };
    let mut sink = Sink::new(file, opts.max_reported);
    let mut lines = CappedLines {
        inner: reader,
        max: opts.max_line_bytes,
        bytes: 0,
    };
    let mut buf = Vec::new();
    let mut n: u64 = 0;
    loop {
        let status = lines.next(&mut buf).map_err(|e| ImportError::Io {
            file: file.to_owned(),
            source: e,
        })?;
        n += 1;
        match status {
            Line::Eof => {
                n -= 1;
                break;
            }
            Line::TooLong(len) => sink.bad(
                n,
                format!(
                    "line of {len} bytes exceeds the limit of {} bytes; skipped",
                    opts.max_line_bytes
                ),
            ),
            Line::Ok => {
                let t = trim_ascii(&buf);
                if t.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Value>(t) {
                    Ok(v) => {
                        if let Err(reason) = parser.record(v, n) {
                            sink.bad(n, reason);
                        }
                    }
                    Err(e) => sink.bad(n, format!("not JSON: {e}")),
                }
            }
        }
    }
    Ok(FileImport {
        file: file.to_owned(),
        format,
        bytes: lines.bytes,
        records: n,
        malformed_count: sink.count,
        malformed: sink.list,
        traces: parser.finish(),
    })
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp (`2026-01-21T06:19:38.048Z`,
/// offsets allowed). `None` when it does not parse.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') | None => 0,
        Some(b'+' | b'-') => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            let oh: i64 = s.get(i + 1..i + 3)?.parse().ok()?;
            let om: i64 = s
                .get(i + 4..i + 6)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-01-21T06:19:38.048Z"),
            Some(1_768_976_378_048)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-01-21T07:19:38.048+01:00"),
            Some(1_768_976_378_048)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn long_lines_are_skipped_without_buffering() {
        let data = format!("{{\"a\":1}}\n{}\n{{\"b\":2}}\n", "x".repeat(10_000));
        let mut r = CappedLines {
            inner: std::io::BufReader::with_capacity(64, data.as_bytes()),
            max: 100,
            bytes: 0,
        };
        let mut buf = Vec::new();
        assert!(matches!(r.next(&mut buf).unwrap(), Line::Ok));
        assert_eq!(buf, b"{\"a\":1}");
        assert!(matches!(r.next(&mut buf).unwrap(), Line::TooLong(10_001)));
        assert!(buf.capacity() <= 200, "{}", buf.capacity());
        assert!(matches!(r.next(&mut buf).unwrap(), Line::Ok));
        assert_eq!(buf, b"{\"b\":2}");
        assert!(matches!(r.next(&mut buf).unwrap(), Line::Eof));
        assert_eq!(r.bytes, data.len() as u64);
    }
}
